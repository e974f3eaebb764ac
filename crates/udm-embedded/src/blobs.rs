//! [`EmbeddedBlobs`]: a [`BlobStore`] inside the embedded store's redb file, so the
//! zero-setup default keeps its snapshots packed in one file (no file per snapshot, no
//! filesystem block per small object) and reads a snapshot with one table lookup.
//!
//! Every blob is one row `<bucket>:<key>` → `[generation: u64 BE][codec: u8][content type
//! length: u16 BE][content type][size: u64 BE][body]` (row format 2). The codec is `0` (the
//! body is the blob's bytes) or `2` (the body is one Zstandard frame of them, level 1, made
//! with a built-in dictionary of UDM's snapshot envelope and log / index segments, see the
//! `pack` module): a blob of at least 128 bytes is stored compressed when that saves at least
//! an eighth — on the baseline bench a JSON snapshot takes about 2.7× less room and log
//! segments about 4.5× — and a read of a compressed row still returns exactly the bytes put
//! (their checksums are checked above this layer; the frame's stated size must equal the
//! row's before anything is allocated). Codec `1` (an LZ4 block, row format 1) is refused
//! with an error that says so: nothing was deployed with it. `size` is
//! the blob's own length, so `head` and listings never decompress. A put is one write
//! transaction (durable when redb commits: fsync), so create-only and compare-and-swap puts
//! are atomic; the ETag is the store-wide generation of the put that wrote the row
//! (`"e<n>"`), so every put gets a fresh one. Puts that arrive while another commits share
//! the next transaction (group commit: one fsync for the lot, each put answered on its own).
//! A bucket opened with [`EmbeddedStore::blobs_sharing_commits`] — the pair's metadata store
//! is this same file — leaves the sync of a put made before a metadata commit to that commit;
//! one opened with [`EmbeddedStore::blobs_staged_in`] — a blob file of its own beside the
//! metadata file — stages such create-only puts: held in memory until the metadata file's
//! next commit carries them into its staged table, and moved into this file by its next
//! other put (the `stage` module).
//!
//! ```
//! # async fn demo() -> udm_core::Result<()> {
//! use udm_core::ports::{BlobStore, PutOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let store = udm_embedded::EmbeddedStore::open(&dir.path().join("udm.redb"))?;
//! let json = store.blobs("json")?;
//! json.put("t/db/c/x.json", b"{}".to_vec(), &PutOptions::create_json()).await?;
//! assert_eq!(json.get("t/db/c/x.json").await?, b"{}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use udm_core::ports::{
    BlobBody, BlobCapabilities, BlobMeta, BlobPage, BlobStore, ETag, MAX_LIST_PAGE, PutMode, PutOptions, PutResult,
    PutSync, check_key, check_prefix, etag_mismatch,
};
use udm_core::{Checksum, Error, ErrorKind, Result};

use crate::pack::{self, Dict};
use crate::stage::{KeyGuard, STAGE_LIMIT, Stage};
use crate::wal::Redo;
use crate::{EmbeddedStore, blocking, db_err};

/// Blob rows: `<bucket>:<key>` → header + bytes.
pub(crate) const BLOBS: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("blobs");
/// The store-wide put generation (one row, `g`).
pub(crate) const BLOB_GENERATION: TableDefinition<'static, &'static str, u64> = TableDefinition::new("blob_generation");

/// Runs `work` in a task of its own that holds `turn` until it is done: a caller that stops
/// waiting (a deadline, a dropped future) does not free the key while its commit is still
/// queued or running.
async fn finish_holding<T: Send + 'static>(
    turn: KeyGuard,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(async move {
        let out = work.await;
        drop(turn);
        out
    })
    .await
    .map_err(|e| Error::internal(format!("embedded blobs: put task: {e}")))?
}

/// Drains `stage` into `store` (settling pending rows first with `settle`) in a task of its
/// own that holds the drain lock until it is done: a caller that stops waiting does not let
/// a delete run while the drain's copy into the blob file is still to come (it would put the
/// deleted row back).
async fn drain_owned(stage: &Arc<Stage>, store: &EmbeddedStore, settle: bool) -> Result<u64> {
    let (stage, store) = (stage.clone(), store.clone());
    tokio::spawn(async move {
        let _one = stage.drains.lock().await;
        stage.drain(&store, settle).await
    })
    .await
    .map_err(|e| Error::internal(format!("embedded blobs: drain task: {e}")))?
}

/// A bucket of blobs in an [`EmbeddedStore`]'s file ([`EmbeddedStore::blobs`]).
#[derive(Clone)]
pub struct EmbeddedBlobs {
    store: EmbeddedStore,
    bucket: String,
    /// Whether this store is also the pair's metadata store, so a put made before a metadata
    /// commit may leave its sync to that commit ([`EmbeddedStore::blobs_sharing_commits`]).
    shares_commits: bool,
    /// Where create-only puts made before a metadata commit are staged, if anywhere
    /// ([`EmbeddedStore::blobs_staged_in`]).
    stage: Option<Arc<Stage>>,
}

impl fmt::Debug for EmbeddedBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBlobs").field("path", &self.store.path()).field("bucket", &self.bucket).finish()
    }
}

impl EmbeddedStore {
    /// The blob bucket `bucket` (letters, digits, `_`, `-`) in this store's file. Every put
    /// is durable when it returns.
    pub fn blobs(&self, bucket: &str) -> Result<EmbeddedBlobs> {
        self.bucket(bucket, false)
    }

    /// The blob bucket `bucket` of a pair whose **metadata store is this same store**: a put
    /// marked [`PutSync::WithNextCommit`] (a snapshot before its version's commit, a log
    /// segment before the shadow watermark moves) is an unsynced commit recorded in the
    /// file's write-ahead log, and the metadata commit that follows it makes it durable (its
    /// log record comes later in the same log), so the snapshot is never less durable than
    /// the record naming it, and a write costs one fsync, not two. Other puts sync as
    /// usual. With another metadata store, use [`EmbeddedStore::blobs`].
    ///
    /// ```
    /// # async fn demo() -> udm_core::Result<()> {
    /// use udm_core::ports::{BlobStore, PutOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = udm_embedded::EmbeddedStore::open(&dir.path().join("udm.redb"))?;
    /// let json = store.blobs_sharing_commits("json")?;
    /// let before = store.synced_commits();
    /// json.put("t/db/c/x.json", b"{}".to_vec(), &PutOptions::create_json().before_commit()).await?;
    /// assert_eq!(store.synced_commits(), before, "left to the metadata commit that follows");
    /// # Ok(()) }
    /// ```
    pub fn blobs_sharing_commits(&self, bucket: &str) -> Result<EmbeddedBlobs> {
        self.bucket(bucket, true)
    }

    /// The blob bucket `bucket` of this **blob file**, for a pair whose metadata store is
    /// `meta` (another file): a create-only put marked [`PutSync::WithNextCommit`] (a
    /// snapshot or content before its version's commit) is *staged*: checked absent and held
    /// in memory, with no write of its own, until `meta`'s next commit carries it into
    /// `meta`'s file (durable with that commit), then moved into this file by the next other
    /// put (the shadow flusher's, within its delay) — so
    /// this file stays a complete copy that a lost metadata file can be rebuilt from, and a
    /// write costs one fsync, not two. See the `stage` module for the crash analysis. All
    /// buckets of this file stage in the same `meta`.
    ///
    /// ```
    /// # async fn demo() -> udm_core::Result<()> {
    /// use udm_core::ports::{BlobStore, PutOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let meta = udm_embedded::EmbeddedStore::open(&dir.path().join("udm.redb"))?;
    /// let file = udm_embedded::EmbeddedStore::open(&dir.path().join("udm-blobs.redb"))?;
    /// let json = file.blobs_staged_in("json", &meta)?;
    /// let before = file.synced_commits();
    /// json.put("t/db/c/x.json", b"{}".to_vec(), &PutOptions::create_json().before_commit()).await?;
    /// assert_eq!(file.synced_commits(), before, "staged, not synced here");
    /// assert_eq!(json.get("t/db/c/x.json").await?, b"{}");
    /// // `meta`'s next commit carries the row into its file, and the flusher's next put to
    /// // this file moves it here; a drain (what a listing does first) moves it at once.
    /// json.drain().await?;
    /// assert_eq!(json.staged().await?, 0);
    /// assert_eq!(file.blobs("json")?.get("t/db/c/x.json").await?, b"{}");
    /// # Ok(()) }
    /// ```
    pub fn blobs_staged_in(&self, bucket: &str, meta: &EmbeddedStore) -> Result<EmbeddedBlobs> {
        if meta.path() == self.path() {
            return Err(Error::new(
                ErrorKind::Config,
                "blobs staged in their own file: use EmbeddedStore::blobs_sharing_commits",
            ));
        }
        let stage = {
            let mut slot = self.stage.lock().map_err(|_| Error::internal("embedded store: stage lock poisoned"))?;
            match &*slot {
                Some(s) if s.meta.path() == meta.path() => s.clone(),
                Some(s) => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("{} already stages its blobs in {}", self.path().display(), s.meta.path().display()),
                    ));
                }
                None => slot.insert(Stage::new(meta.clone())).clone(),
            }
        };
        let mut b = self.bucket(bucket, false)?;
        b.stage = Some(stage);
        Ok(b)
    }

    fn bucket(&self, bucket: &str, shares_commits: bool) -> Result<EmbeddedBlobs> {
        let ok = !bucket.is_empty()
            && bucket.len() <= 63
            && bucket.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(Error::validation("bucket", "1–63 ASCII letters, digits, `_` or `-`"));
        }
        Ok(EmbeddedBlobs { store: self.clone(), bucket: bucket.to_owned(), shares_commits, stage: None })
    }
}

/// One stored row, decoded.
#[derive(Debug)]
struct Row {
    generation: u64,
    content_type: Option<String>,
    /// Empty unless asked for.
    bytes: Vec<u8>,
    size: u64,
}

/// Blobs shorter than this are stored as they are (too small to gain from compression).
const COMPRESS_MIN: usize = 128;
/// Codec byte: the body is the blob's bytes.
const RAW: u8 = 0;
/// Codec byte of row format 1 (an LZ4 block), no longer written or read.
const LZ4: u8 = 1;
/// Codec byte: the body is one Zstandard frame of the blob's bytes, made with the built-in
/// blob dictionary (`pack::BLOB_DICTIONARY`).
const ZSTD: u8 = 2;

pub(crate) fn encode_row(generation: u64, content_type: Option<&str>, bytes: &[u8]) -> Result<Vec<u8>> {
    let ct = content_type.unwrap_or_default().as_bytes();
    let ct_len = u16::try_from(ct.len()).map_err(|_| Error::validation("content_type", "at most 65535 bytes"))?;
    // A failed compression (it needs memory, nothing else) stores the bytes as they are.
    let packed = (bytes.len() >= COMPRESS_MIN).then(|| pack::compress(Dict::Blobs, bytes)).flatten();
    let (codec, body) = match &packed {
        Some(p) if p.len() <= bytes.len() - bytes.len() / 8 => (ZSTD, p.as_slice()),
        _ => (RAW, bytes),
    };
    let mut out = Vec::with_capacity(19 + ct.len() + body.len());
    out.extend_from_slice(&generation.to_be_bytes());
    out.push(codec);
    out.extend_from_slice(&ct_len.to_be_bytes());
    out.extend_from_slice(ct);
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

fn decode_row(raw: &[u8], with_bytes: bool) -> Result<Row> {
    let bad = || Error::internal("embedded blobs: a stored row does not decode");
    let be8 = |at: usize| raw.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(bad);
    let generation = be8(0)?;
    let codec = *raw.get(8).ok_or_else(bad)?;
    let ct_len = usize::from(u16::from_be_bytes(raw.get(9..11).ok_or_else(bad)?.try_into().map_err(|_| bad())?));
    let ct = raw.get(11..11 + ct_len).ok_or_else(bad)?;
    let content_type = (!ct.is_empty()).then(|| String::from_utf8_lossy(ct).into_owned());
    let size = be8(11 + ct_len)?;
    let body = raw.get(19 + ct_len..).ok_or_else(bad)?;
    let bytes = match (with_bytes, codec) {
        (false, RAW | ZSTD) => Vec::new(),
        (true, RAW) => body.to_vec(),
        (true, ZSTD) => {
            // The frame states its content size: it must equal the row's before anything is
            // allocated, so one damaged field never sizes an allocation (and a huge size both
            // agree on is an allocation error, not an abort).
            pack::decompress(Dict::Blobs, body, Some(size), u64::MAX).map_err(|_| bad())?
        }
        (_, LZ4) => {
            return Err(Error::internal(
                "embedded blobs: a row of format 1 (LZ4) was written by an earlier build; this one reads format 2",
            ));
        }
        _ => return Err(Error::internal(format!("embedded blobs: unknown row codec {codec}"))),
    };
    if with_bytes && bytes.len() as u64 != size {
        return Err(bad());
    }
    Ok(Row { generation, content_type, bytes, size })
}

/// Puts row `k` in this file's blob table (`mode` checked first: changes nothing when it
/// fails); the row's generation. Also what a logged put does again on replay.
pub(crate) fn put_row_in(
    tx: &redb::WriteTransaction,
    k: &str,
    mode: &PutMode,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<u64> {
    let shown = k.split_once(':').map_or(k, |(_, key)| key);
    let mut t = tx.open_table(BLOBS).map_err(db_err)?;
    let current = t.get(k).map_err(db_err)?.map(|v| decode_row(v.value(), false)).transpose()?;
    let current = current.map(|r| etag_of(r.generation));
    match mode {
        PutMode::Create if current.is_some() => {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{shown} already exists")));
        }
        PutMode::IfMatch(want) if current.as_ref() != Some(want) => {
            return Err(etag_mismatch(shown, want, Some(current.as_ref())));
        }
        _ => {}
    }
    let mut g = tx.open_table(BLOB_GENERATION).map_err(db_err)?;
    let generation = g.get("g").map_err(db_err)?.map_or(0, |v| v.value()) + 1;
    g.insert("g", generation).map_err(db_err)?;
    t.insert(k, encode_row(generation, content_type, bytes)?.as_slice()).map_err(db_err)?;
    Ok(generation)
}

fn etag_of(generation: u64) -> ETag {
    ETag::new(format!("\"e{generation}\""))
}

impl EmbeddedBlobs {
    fn row_key(&self, key: &str) -> String {
        format!("{}:{key}", self.bucket)
    }

    async fn row(&self, key: &str, with_bytes: bool) -> Result<Option<Row>> {
        let k = self.row_key(key);
        let (file, stage) = (self.store.db(), self.stage.clone());
        blocking(move || {
            // Where rows move from first — pending, then staged: a commit writes the staged
            // table before it forgets the pending row, and a drain commits the blob file
            // before it removes the staged one. The blob file's row still wins (a staged copy
            // a crash kept after its drain).
            let staged = match &stage {
                Some(stage) => {
                    let meta = stage.meta.db();
                    let pending = meta.pending.get(&k);
                    stage.staged_row(&meta.begin_read().map_err(db_err)?, &k)?.or(pending)
                }
                None => None,
            };
            let tx = file.begin_read().map_err(db_err)?;
            let t = tx.open_table(BLOBS).map_err(db_err)?;
            match (t.get(k.as_str()).map_err(db_err)?, staged) {
                (Some(v), _) => decode_row(v.value(), with_bytes).map(Some),
                (None, Some(raw)) => decode_row(&raw, with_bytes).map(Some),
                (None, None) => Ok(None),
            }
        })
        .await
    }

    /// Rows staged and not yet moved into this file — held in memory or carried into the
    /// metadata file, of every bucket staging in that file (0 when this bucket does not
    /// stage). For tests and diagnostics.
    pub async fn staged(&self) -> Result<u64> {
        match &self.stage {
            Some(stage) => stage.count().await,
            None => Ok(0),
        }
    }

    /// Moves every staged row into this file now, those held in memory too (what a listing
    /// does first); how many moved.
    pub async fn drain(&self) -> Result<u64> {
        match &self.stage {
            Some(stage) => drain_owned(stage, &self.store, true).await,
            None => Ok(0),
        }
    }

    /// For a put to this file (of row `k`), a listing (no key): holds `k`'s key lock, so no
    /// row of it is staged until the guard goes, then moves the staged rows in. `None` when
    /// nothing stages.
    async fn drained(&self, k: Option<&str>) -> Result<Option<KeyGuard>> {
        match &self.stage {
            Some(stage) => {
                let turn = match k {
                    Some(k) => Some(stage.keys.lock(k).await),
                    None => None,
                };
                // Pending rows are settled for a listing, and for a put of a pending key (which
                // must see it); the flusher's puts leave them to their commits.
                let settle = k.is_none_or(|k| stage.meta.db().pending.has(k));
                drain_owned(stage, &self.store, settle).await?;
                Ok(turn)
            }
            None => Ok(None),
        }
    }

    /// Stages a create-only put made before a metadata commit (see the `stage` module).
    async fn put_staged(
        &self,
        stage: &Arc<Stage>,
        key: &str,
        bytes: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<u64> {
        let k = self.row_key(key);
        // No task of its own: staging writes nothing, and a caller that stops waiting
        // stages nothing.
        let turn = stage.keys.lock(&k).await;
        let generation = stage.stage(&self.store, k, content_type, bytes).await?;
        drop(turn);
        if stage.waiting.load(Ordering::Relaxed) >= STAGE_LIMIT {
            drain_owned(stage, &self.store, true).await?;
        }
        Ok(generation)
    }
}

#[async_trait]
impl BlobStore for EmbeddedBlobs {
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
        check_key(key)?;
        let checksum = Checksum::of_bytes(&bytes);
        let k = self.row_key(key);
        let (mode, content_type) = (options.mode.clone(), options.content_type.clone());
        // Checked before the grouped write, which must change nothing when it fails.
        if content_type.as_ref().is_some_and(|ct| ct.len() > usize::from(u16::MAX)) {
            return Err(Error::validation("content_type", "at most 65535 bytes"));
        }
        if let Some(stage) = &self.stage
            && options.sync == PutSync::WithNextCommit
            && options.mode == PutMode::Create
        {
            let generation = self.put_staged(stage, key, bytes, content_type).await?;
            return Ok(PutResult { checksum, etag: Some(etag_of(generation)) });
        }
        // Any other put moves the staged rows first, and holds its key until its commit, so
        // no row of its key is staged meanwhile.
        let turn = self.drained(Some(&k)).await?;
        let generation = if self.shares_commits && options.sync == PutSync::WithNextCommit {
            // In the metadata file, before its commit: logged, not synced (the commit's
            // record syncs the log up to it).
            let redo = Redo::Blob { key: k, mode, content_type, bytes };
            self.store
                .write_logged(redo, false, |tx, r| match r {
                    Redo::Blob { key, mode, content_type, bytes, .. } => {
                        put_row_in(tx, key, mode, content_type.as_deref(), bytes)
                    }
                    Redo::Commit { .. } => Err(Error::internal("embedded blobs: not a blob put")),
                })
                .await?
        } else {
            let store = self.store.clone();
            let put = async move {
                store.write_grouped(move |tx| put_row_in(tx, &k, &mode, content_type.as_deref(), &bytes)).await
            };
            match turn {
                Some(turn) => finish_holding(turn, put).await?,
                None => put.await?,
            }
        };
        Ok(PutResult { checksum, etag: Some(etag_of(generation)) })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get_with_etag(key).await?.bytes)
    }

    async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
        check_key(key)?;
        match self.row(key, true).await? {
            Some(r) => Ok(BlobBody { bytes: r.bytes, etag: Some(etag_of(r.generation)) }),
            None => Err(Error::not_found(format!("blob {key}"))),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        check_key(key)?;
        Ok(self.row(key, false).await?.map(|r| BlobMeta {
            size: r.size,
            content_type: r.content_type,
            etag: Some(etag_of(r.generation)),
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let k = self.row_key(key);
        let remove = {
            let (store, k) = (self.store.clone(), k.clone());
            async move {
                store
                    .write(move |tx| {
                        tx.open_table(BLOBS).map_err(db_err)?.remove(k.as_str()).map_err(db_err)?;
                        Ok(())
                    })
                    .await
            }
        };
        let Some(stage) = &self.stage else { return remove.await };
        // Both copies go under the key's lock and with no drain running, in a task of its
        // own: a caller that stops waiting does not leave the staged copy gone and the
        // other there with the locks free.
        let turn = stage.keys.lock(&k).await;
        let stage = stage.clone();
        finish_holding(turn, async move {
            let _one = stage.drains.lock().await;
            let meta = stage.meta.db();
            let taken = Arc::new(std::sync::Mutex::new(None));
            let (kept, key) = (taken.clone(), k.clone());
            let removed = stage
                .meta
                .write(move |tx| {
                    // Taken inside the write transaction: a commit carrying the pending row
                    // either carried it before (removed from the staged table here) or comes
                    // after and no longer finds it.
                    *kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = meta.pending.take(&key);
                    tx.open_table(crate::stage::STAGED).map_err(db_err)?.remove(key.as_str()).map_err(db_err)?;
                    Ok(())
                })
                .await;
            if let Err(e) = removed {
                // Nothing changed: the pending row comes back (this task holds the key).
                if let Some(row) = taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                    stage.meta.db().pending.restore(k, row);
                }
                return Err(e);
            }
            remove.await
        })
        .await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
        check_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        // Staged rows are listed from this file, once moved.
        self.drained(None).await?;
        let head = format!("{}:", self.bucket);
        let full_prefix = format!("{head}{prefix}");
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(format!("{head}{a}")),
            _ => Bound::Included(full_prefix.clone()),
        };
        let keys = self
            .store
            .read(move |tx| {
                let t = tx.open_table(BLOBS).map_err(db_err)?;
                let range = match &start {
                    Bound::Excluded(s) => t.range::<&str>((Bound::Excluded(s.as_str()), Bound::Unbounded)),
                    Bound::Included(s) => t.range::<&str>((Bound::Included(s.as_str()), Bound::Unbounded)),
                    Bound::Unbounded => t.range::<&str>(..),
                }
                .map_err(db_err)?;
                let mut keys = Vec::new();
                for item in range {
                    let (k, _) = item.map_err(db_err)?;
                    let Some(rest) = k.value().strip_prefix(head.as_str()) else { break };
                    if !k.value().starts_with(full_prefix.as_str()) {
                        break;
                    }
                    keys.push(rest.to_owned());
                    if keys.len() > limit {
                        break;
                    }
                }
                Ok(keys)
            })
            .await?;
        Ok(BlobPage::from_overfetch(keys, limit))
    }

    async fn health(&self) -> Result<()> {
        self.store.read(|tx| tx.open_table(BLOBS).map(|_| ()).map_err(db_err)).await
    }

    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities { presign: false, durable: true, content_types: true, etags: true, conditional_put: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_like(n: usize) -> Vec<u8> {
        let item = r#"{"ctx":{"collection":"customers","db":"db","tenant":"bench"},"op":"UPDATE","ov":7},"#;
        item.repeat(n / item.len() + 1).into_bytes()[..n].to_vec()
    }

    #[test]
    fn compressible_blobs_are_stored_smaller_and_read_back_exactly() {
        let bytes = json_like(4096);
        let row = encode_row(9, Some("application/json"), &bytes).unwrap();
        assert!(row.len() < bytes.len() / 4, "row of {} bytes for {} bytes", row.len(), bytes.len());
        assert_eq!(row[8], ZSTD);
        let back = decode_row(&row, true).unwrap();
        assert_eq!((back.generation, back.size, back.content_type.as_deref()), (9, 4096, Some("application/json")));
        assert_eq!(back.bytes, bytes);
        let head = decode_row(&row, false).unwrap();
        assert_eq!((head.size, head.bytes.len()), (4096, 0));
    }

    #[test]
    fn small_or_incompressible_blobs_are_stored_as_they_are() {
        let small = json_like(COMPRESS_MIN - 1);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        for bytes in [small, noise, Vec::new()] {
            let row = encode_row(1, None, &bytes).unwrap();
            assert_eq!(row[8], RAW);
            assert_eq!(row.len(), 19 + bytes.len());
            assert_eq!(decode_row(&row, true).unwrap().bytes, bytes);
        }
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let bytes = json_like(2048);
        let row = encode_row(3, Some("application/json"), &bytes).unwrap();
        for cut in [0, 5, 9, 12, 30, row.len() - 1] {
            assert!(decode_row(&row[..cut], true).is_err(), "cut at {cut}");
        }
        let mut unknown = row.clone();
        unknown[8] = 7;
        assert_eq!(decode_row(&unknown, true).unwrap_err().kind(), ErrorKind::Internal);
        // A row of format 1 (LZ4) says what it is.
        let mut lz4 = row.clone();
        lz4[8] = LZ4;
        assert!(decode_row(&lz4, true).unwrap_err().to_string().contains("format 1"));
        // A damaged size never sizes an allocation: it must be the frame's own.
        let ct = usize::from(u16::from_be_bytes([row[9], row[10]]));
        for size in [2047u64, 2049, u64::MAX] {
            let mut resized = row.clone();
            resized[11 + ct..19 + ct].copy_from_slice(&size.to_be_bytes());
            assert_eq!(decode_row(&resized, true).unwrap_err().kind(), ErrorKind::Internal, "size {size}");
        }
        let mut flipped = row;
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        // A flipped byte in a compressed body either fails to decode or changes the bytes
        // (which the checksums above this layer catch); it never panics.
        if let Ok(r) = decode_row(&flipped, true) {
            assert_ne!(r.bytes, bytes);
        }
    }
}
