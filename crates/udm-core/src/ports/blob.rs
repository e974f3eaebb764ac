//! The blob store port: one bucket (or directory) of immutable, checksummed objects.

use std::fmt;

use async_trait::async_trait;

use crate::canonical::Checksum;
use crate::error::{Error, ErrorKind, Result};

/// Whether a put may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`ErrorKind::AlreadyExists`] if the key exists (snapshots, content).
    Create,
    /// Replace whatever is there (index segments, job records, backups).
    Overwrite,
}

/// Options of one put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOptions {
    /// Create-only or overwrite.
    pub mode: PutMode,
    /// Content type to record.
    pub content_type: Option<String>,
}

impl PutOptions {
    /// Create-only JSON (snapshot envelopes).
    pub fn create_json() -> Self {
        Self { mode: PutMode::Create, content_type: Some("application/json".into()) }
    }

    /// Create-only with a content type.
    pub fn create(content_type: &str) -> Self {
        Self { mode: PutMode::Create, content_type: Some(content_type.into()) }
    }

    /// Overwrite with a content type.
    pub fn overwrite(content_type: &str) -> Self {
        Self { mode: PutMode::Overwrite, content_type: Some(content_type.into()) }
    }
}

/// What a store knows about one object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Size in bytes.
    pub size: u64,
    /// Content type, if recorded.
    pub content_type: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobPage {
    /// Keys in lexicographic order.
    pub keys: Vec<String>,
    /// Pass as `after` to get the next page; `None` when this was the last.
    pub next: Option<String>,
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
}

/// Largest page a listing returns, whatever `limit` asks.
pub const MAX_LIST_PAGE: usize = 1000;

/// One bucket of immutable blobs. Keys are built by [`crate::layout`]; [`check_key`] states
/// what a valid key is and every implementation rejects other keys with
/// [`ErrorKind::Validation`] before doing any IO.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Stores `bytes` at `key`. With [`PutMode::Create`], an existing key fails with
    /// [`ErrorKind::AlreadyExists`] and is left untouched, including under a race: of
    /// several concurrent create-only puts of one key, exactly one succeeds. Returns the
    /// SHA-256 of the bytes as stored (adapters that can, have the server verify it).
    async fn put(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<Checksum>;

    /// The bytes at `key`, or [`ErrorKind::NotFound`].
    async fn get(&self, key: &str) -> Result<Vec<u8>>;

    /// Size and type of `key`, or `None`.
    async fn head(&self, key: &str) -> Result<Option<BlobMeta>>;

    /// Removes `key`; removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Keys starting with `prefix`, in lexicographic order, strictly after `after`, at most
    /// `limit` (capped at [`MAX_LIST_PAGE`]).
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage>;

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
