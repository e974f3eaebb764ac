//! The blob store port: one bucket (or directory) of immutable, checksummed objects.

use std::fmt;

use async_trait::async_trait;

use crate::canonical::Checksum;
use crate::error::{Error, ErrorKind, Result};

/// An opaque version token of one stored blob (S3's ETag): what [`BlobStore::head`],
/// [`BlobStore::get_with_etag`] and [`BlobStore::put_with_etag`] report, and what
/// [`PutMode::IfMatch`] compares. Compare tokens only with tokens of the same store.
///
/// A token changes whenever the stored bytes change. Whether rewriting *identical* bytes
/// changes it depends on the adapter (S3's MD5 ETags and content-hash ETags do not; a
/// generation counter does), which is harmless for a read-modify-write: its outcome depends
/// only on the bytes it read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// A token as the store reported it (S3 ETags keep their quotes).
    pub fn new(tag: impl Into<String>) -> Self {
        Self(tag.into())
    }

    /// The token as the store reported it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a put may replace an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`ErrorKind::AlreadyExists`] if the key exists (snapshots, content).
    Create,
    /// Replace whatever is there (index segments, job records, backups).
    Overwrite,
    /// Compare-and-swap: replace the object only if its current [`ETag`] is this one. Fails
    /// with [`ErrorKind::Conflict`] — and changes nothing — when the object's ETag differs or
    /// the object is absent (re-read it and retry). Of several concurrent puts naming the
    /// same ETag, at most one succeeds. Needs [`BlobCapabilities::conditional_put`]; stores
    /// without it fail with [`ErrorKind::Unsupported`].
    IfMatch(ETag),
}

/// When a put must be durable ([`PutOptions::sync`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PutSync {
    /// Durable when the put returns (the default).
    #[default]
    Now,
    /// The caller commits to the metadata store of the same pair after this put (a snapshot
    /// or content before its version's commit, a log or index segment before the shadow
    /// watermark moves) and needs the blob durable only once that commit is. A blob store
    /// whose writes share the metadata store's commits (blobs kept in the embedded metadata
    /// file, or staged there until they move to a blob file of their own) then skips its own
    /// sync: the durable metadata commit that follows makes both durable, in order.
    /// Every other store syncs as for [`PutSync::Now`]. A put whose commit never comes may be
    /// lost in a crash: it was never referenced.
    WithNextCommit,
}

/// Options of one put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOptions {
    /// Create-only, overwrite or compare-and-swap.
    pub mode: PutMode,
    /// Content type to record.
    pub content_type: Option<String>,
    /// When the put must be durable.
    pub sync: PutSync,
}

impl PutOptions {
    /// Create-only JSON (snapshot envelopes).
    pub fn create_json() -> Self {
        Self::new(PutMode::Create, "application/json")
    }

    /// Create-only with a content type.
    pub fn create(content_type: &str) -> Self {
        Self::new(PutMode::Create, content_type)
    }

    /// Overwrite with a content type.
    pub fn overwrite(content_type: &str) -> Self {
        Self::new(PutMode::Overwrite, content_type)
    }

    /// Compare-and-swap ([`PutMode::IfMatch`]) with a content type.
    pub fn if_match(etag: ETag, content_type: &str) -> Self {
        Self::new(PutMode::IfMatch(etag), content_type)
    }

    /// A put in `mode` with a content type, durable when it returns.
    pub fn new(mode: PutMode, content_type: &str) -> Self {
        Self { mode, content_type: Some(content_type.into()), sync: PutSync::Now }
    }

    /// The same put, durable with the metadata commit that follows it ([`PutSync::WithNextCommit`]).
    ///
    /// ```
    /// use udm_core::ports::{PutOptions, PutSync};
    /// let o = PutOptions::create_json().before_commit();
    /// assert_eq!(o.sync, PutSync::WithNextCommit);
    /// ```
    #[must_use]
    pub fn before_commit(mut self) -> Self {
        self.sync = PutSync::WithNextCommit;
        self
    }
}

/// What a put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// SHA-256 of the bytes as stored.
    pub checksum: Checksum,
    /// The new object's version token; `Some` when [`BlobCapabilities::etags`].
    pub etag: Option<ETag>,
}

/// An object's bytes and the version token of exactly those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobBody {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Their version token; `Some` when [`BlobCapabilities::etags`].
    pub etag: Option<ETag>,
}

/// What a store knows about one object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Size in bytes.
    pub size: u64,
    /// Content type, if recorded.
    pub content_type: Option<String>,
    /// The current version token; `Some` when [`BlobCapabilities::etags`].
    pub etag: Option<ETag>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobPage {
    /// Keys in lexicographic order.
    pub keys: Vec<String>,
    /// Pass as `after` to get the next page; `None` when this was the last.
    pub next: Option<String>,
}

impl BlobPage {
    /// The page of `keys` (in order, up to `limit + 1` of them: one more than the page
    /// holds tells that another page follows), with `next` set to its last key then.
    pub fn from_overfetch(mut keys: Vec<String>, limit: usize) -> Self {
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = if more { keys.last().cloned() } else { None };
        BlobPage { keys, next }
    }
}

/// One page of a listing with the delimiter `/` ([`BlobStore::list_with_delimiter`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobListing {
    /// Keys right under the prefix (no `/` after it), in lexicographic order.
    pub keys: Vec<String>,
    /// Common prefixes: the prefix, then one segment, then `/` (`t/d/c/objects/x/`), for
    /// every such segment that has at least one key under it, in lexicographic order.
    pub prefixes: Vec<String>,
    /// The last entry (key or common prefix) of this page, to pass as `start_after` for the
    /// next page; `None` when this was the last.
    pub next: Option<String>,
}

impl BlobListing {
    /// Number of entries (keys and common prefixes).
    pub fn len(&self) -> usize {
        self.keys.len() + self.prefixes.len()
    }

    /// Whether the page has no entry.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.prefixes.is_empty()
    }
}

/// What an implementation supports beyond the core contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobCapabilities {
    /// [`BlobStore::presign_get`] returns usable URLs.
    pub presign: bool,
    /// Data survives a process restart.
    pub durable: bool,
    /// [`BlobStore::head`] reports the content type given at put.
    pub content_types: bool,
    /// Puts, [`BlobStore::head`] and [`BlobStore::get_with_etag`] report [`ETag`]s, and an
    /// object's ETag changes whenever its bytes do.
    pub etags: bool,
    /// [`PutMode::IfMatch`] is honoured atomically: of concurrent compare-and-swaps naming
    /// one ETag, at most one succeeds.
    pub conditional_put: bool,
}

/// Largest page a listing returns, whatever `limit` asks.
pub const MAX_LIST_PAGE: usize = 1000;

/// One bucket of immutable blobs. Keys are built by [`crate::layout`]; [`check_key`] states
/// what a valid key is and every implementation rejects other keys with
/// [`ErrorKind::Validation`] before doing any IO.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Stores `bytes` at `key` and reports the new object's [`ETag`] (with
    /// [`BlobCapabilities::etags`]). With [`PutMode::Create`], an existing key fails with
    /// [`ErrorKind::AlreadyExists`] and is left untouched, including under a race: of
    /// several concurrent create-only puts of one key, exactly one succeeds. With
    /// [`PutMode::IfMatch`], see its contract (compare-and-swap, [`ErrorKind::Conflict`]).
    /// Returns the SHA-256 of the bytes as stored (adapters that can, have the server verify
    /// it).
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult>;

    /// [`BlobStore::put_with_etag`], answering only the checksum.
    async fn put(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<Checksum> {
        Ok(self.put_with_etag(key, bytes, options).await?.checksum)
    }

    /// The bytes at `key`, or [`ErrorKind::NotFound`].
    async fn get(&self, key: &str) -> Result<Vec<u8>>;

    /// The bytes at `key` and the [`ETag`] of exactly those bytes (read together, so a
    /// compare-and-swap based on them cannot miss a write in between), or
    /// [`ErrorKind::NotFound`]. Stores without [`BlobCapabilities::etags`] answer no ETag.
    async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
        Ok(BlobBody { bytes: self.get(key).await?, etag: None })
    }

    /// Size, type and ETag of `key`, or `None`.
    async fn head(&self, key: &str) -> Result<Option<BlobMeta>>;

    /// Removes `key`; removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Keys starting with `prefix`, in lexicographic order, strictly after `after`, at most
    /// `limit` (capped at [`MAX_LIST_PAGE`]).
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage>;

    /// One level of the key space under `prefix`, with `/` as the delimiter (S3's
    /// `ListObjectsV2` with `delimiter=/`): the keys starting with `prefix` that have no `/`
    /// after it, and the common prefixes of the others (see [`BlobListing`]), merged in
    /// lexicographic order, strictly after `start_after`, at most `limit` entries in all
    /// (capped at [`MAX_LIST_PAGE`]). A `start_after` ending with `/` is a common prefix:
    /// the page starts after everything under it. Pass the previous page's
    /// [`BlobListing::next`] to page through.
    ///
    /// The default walks [`BlobStore::list`] and skips each common prefix's keys with one
    /// further listing after it; stores with a native delimiter listing override it.
    async fn list_with_delimiter(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<BlobListing> {
        check_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let mut after = start_after.filter(|a| *a >= prefix).map(skip_past);
        let mut entries: Vec<(String, bool)> = Vec::new();
        'pages: loop {
            let want = limit + 1 - entries.len();
            let page = self.list(prefix, after.as_deref(), want).await?;
            let last_page = page.next.is_none() || page.keys.is_empty();
            for key in page.keys {
                if after.as_deref().is_some_and(|a| key.as_str() <= a) {
                    continue; // under the common prefix just taken
                }
                let slash = key.strip_prefix(prefix).and_then(|rest| rest.find('/'));
                let (entry, is_prefix) = match slash.and_then(|i| key.get(..prefix.len() + i + 1)) {
                    Some(common) => (common.to_owned(), true),
                    None => (key, false),
                };
                after = Some(skip_past(&entry));
                entries.push((entry, is_prefix));
                if entries.len() > limit {
                    break 'pages;
                }
            }
            if last_page {
                break;
            }
        }
        Ok(listing_of(entries, limit))
    }

    /// A time-limited URL that GETs `key` without credentials. `ttl_secs` must be 1..=604800
    /// (7 days). Unsupported by default.
    async fn presign_get(&self, key: &str, ttl_secs: u64) -> Result<String> {
        check_key(key)?;
        check_presign_ttl(ttl_secs)?;
        Err(Error::new(ErrorKind::Unsupported, "this blob store cannot presign URLs"))
    }

    /// Checks the bucket is reachable (health).
    async fn health(&self) -> Result<()>;

    /// What this implementation supports.
    fn capabilities(&self) -> BlobCapabilities;
}

/// The smallest string after `entry` and, for a common prefix (ending with `/`), after every
/// key under it: keys are printable ASCII, all below DEL (0x7F).
pub fn skip_past(entry: &str) -> String {
    if entry.ends_with('/') { format!("{entry}\u{7f}") } else { entry.to_owned() }
}

/// A delimiter listing page from up to `limit + 1` ordered entries `(entry, is_prefix)`:
/// the first `limit`, and `next` when there were more.
fn listing_of(mut entries: Vec<(String, bool)>, limit: usize) -> BlobListing {
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next = if more { entries.last().map(|(e, _)| e.clone()) } else { None };
    let mut out = BlobListing { next, ..BlobListing::default() };
    for (entry, is_prefix) in entries {
        if is_prefix { out.prefixes.push(entry) } else { out.keys.push(entry) }
    }
    out
}

/// The error of a failed compare-and-swap ([`PutMode::IfMatch`]): [`ErrorKind::Conflict`],
/// not retryable as is (re-read the blob first). `current` is the blob's ETag when the store
/// knows it: `Some(None)` = the blob is absent, `None` = not reported (S3's 412).
pub fn etag_mismatch(key: &str, expected: &ETag, current: Option<Option<&ETag>>) -> Error {
    let now = match current {
        Some(Some(c)) => format!("; it is now {c}"),
        Some(None) => "; the blob is absent".to_owned(),
        None => String::new(),
    };
    Error::new(ErrorKind::Conflict, format!("blob {key}: compare-and-swap on ETag {expected} failed{now}"))
}

/// Longest blob key, bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// A valid blob key: 1..=1024 bytes of printable ASCII other than `\`, not starting or ending
/// with `/`, without empty, `.` or `..` segments.
pub fn check_key(key: &str) -> Result<()> {
    let bad = |m: &str| Err(Error::validation("key", format!("{key:?}: {m}")));
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return bad("must be 1 to 1024 bytes");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return bad("only printable ASCII without '\\' is allowed");
    }
    if key.starts_with('/') || key.ends_with('/') || key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return bad("must not have empty, '.' or '..' segments");
    }
    Ok(())
}

/// A valid listing prefix: empty, or a valid key optionally followed by `/`.
pub fn check_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(p) => check_key(p),
        None => check_key(prefix),
    }
}

/// Presigned URL lifetimes: 1 second to 7 days.
pub fn check_presign_ttl(ttl_secs: u64) -> Result<()> {
    if (1..=604_800).contains(&ttl_secs) {
        Ok(())
    } else {
        Err(Error::validation("ttl_secs", "presigned URLs live 1 second to 7 days"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("t/d/c/objects/x/versions/00000000000000000001.json").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a b", "a\\b", "é"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("t/d/").is_ok());
        assert!(check_prefix("../").is_err());
    }
}
