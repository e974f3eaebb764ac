//! **Staged puts**: a blob file of its own that costs a write no fsync.
//!
//! The zero-setup default keeps its blobs in a redb file of their own (`udm-blobs.redb`), a
//! second copy beside the metadata file from which a lost metadata file can be rebuilt. A
//! snapshot must be durable before the commit that names it; synced in its own file, it
//! cost every write a second fsync. A bucket opened with
//! [`EmbeddedStore::blobs_staged_in`] instead **stages** a create-only put made before a
//! metadata commit ([`PutSync::WithNextCommit`](udm_core::ports::PutSync::WithNextCommit):
//! snapshots and content) in the *metadata* file: one unsynced redb commit there, which the
//! version's synced metadata commit that follows makes durable, in order (redb persists
//! every earlier commit with a synced one). A write costs one fsync.
//!
//! Staged rows move to the blob file in **drains**: every other put to the blob file (the
//! shadow flusher's log and index segments, which follow every commit within the flush
//! delay) first copies every staged row into the blob file in one synced commit, then
//! removes them from the metadata file. So the blob file never holds a log segment naming a
//! snapshot it lacks: the log names committed versions, their snapshots were staged before
//! their commits, and the log's put drains them first. A bucket also drains when
//! [`STAGE_LIMIT`] rows wait, and before a listing. Rows a crash left staged drain with the
//! next put to the blob file (the repair pass at start logs what the crash left unlogged).
//!
//! Reads look in the staged rows first, then in the blob file, whose row wins: a drain
//! commits the blob file before it removes the staged rows, so a row being moved is always
//! found in one of them. Staged rows keep the blob file's row format, with the generation's top bit set
//! ([`STAGED_BIT`]), so ETags of staged rows never equal ETags the blob file hands out,
//! and a drain copies rows byte for byte (a row keeps its ETag).
//!
//! Locking, per pair of files: **a lock per key** — a stager holds its key's while it
//! stages, every other put from before its drain until its commit, a delete while it
//! removes both copies — so "the key exists in neither file" (create-only) and an ETag
//! match are checked and acted on atomically, and a put to the blob file never has a row of
//! its key staged behind it; and **one drain at a time**, deletes included, so a drain that
//! read a row never copies it back after a delete. The work under a key's lock runs in a task
//! that owns the lock, so a caller that stops waiting (its deadline passed) does not free the
//! key while its commit is still queued or running. Nothing else waits: a staged put does not
//! wait for the flusher's puts and their fsyncs (under one shared lock it did — the slowest
//! tenth of the baseline bench's writes took 4–6 ms), and it needs no exclusion from a
//! drain. A stager checks the blob file inside its own metadata commit, and a drain
//! removes a staged row only after the blob file's commit holds it, so a key being moved is
//! always seen in one of the two files; a row staged after a drain read the staged rows
//! stays for the next drain, and it belongs to a version committed after the flusher read
//! the log it is putting.
//!
//! Crash analysis (either file's writes are atomic per commit):
//! - after a staged put, before its metadata commit: the row is lost, or kept as an orphan
//!   (when a later synced metadata commit persisted it), drained and collected like any
//!   orphan snapshot;
//! - after the metadata commit: the row is durable with the record naming it;
//! - during a drain, after the blob file's commit, before the staged rows are removed: the
//!   next drain finds them in the blob file and drops the staged copies (the blob file's row
//!   wins; for a moved row it is the same bytes);
//! - a lost metadata file loses the staged rows with the records naming them; a rebuild
//!   from the blob file restores everything its log holds, as before (the log never lags
//!   its snapshots).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use udm_core::{Error, ErrorKind, Result};

use udm_core::ports::PutMode;

use crate::blobs::{BLOB_GENERATION, BLOBS, encode_row};
use crate::wal::Redo;
use crate::{EmbeddedStore, db_err};

/// Staged rows in the metadata file: `<bucket>:<key>` → the blob file's row format.
pub(crate) const STAGED: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("staged_blobs");

/// Set in the generation of a staged row (and so in its ETag).
pub(crate) const STAGED_BIT: u64 = 1 << 63;

/// A bucket drains once this many rows wait, even with no other put.
pub const STAGE_LIMIT: u64 = 1_024;

fn exists(k: &str) -> Error {
    let shown = k.split_once(':').map_or(k, |(_, key)| key);
    Error::new(ErrorKind::AlreadyExists, format!("{shown} already exists"))
}

/// Stages row `k` in the metadata file (create-only among the staged rows; the caller checked
/// the blob file); its generation. Also what a logged staged put does again on replay.
pub(crate) fn stage_in(tx: &redb::WriteTransaction, k: &str, content_type: Option<&str>, bytes: &[u8]) -> Result<u64> {
    let mut t = tx.open_table(STAGED).map_err(db_err)?;
    if t.get(k).map_err(db_err)?.is_some() {
        return Err(exists(k));
    }
    let mut g = tx.open_table(BLOB_GENERATION).map_err(db_err)?;
    let n = g.get("g").map_err(db_err)?.map_or(0, |v| v.value()) + 1;
    g.insert("g", n).map_err(db_err)?;
    let generation = n | STAGED_BIT;
    t.insert(k, encode_row(generation, content_type, bytes)?.as_slice()).map_err(db_err)?;
    Ok(generation)
}

/// The staging of one blob file's buckets in one metadata file; shared by the buckets.
pub(crate) struct Stage {
    /// The metadata store whose file holds the staged rows.
    pub(crate) meta: EmbeddedStore,
    /// One drain (or delete) at a time (see the module docs).
    pub(crate) drains: tokio::sync::Mutex<()>,
    /// A lock per row key (see the module docs).
    pub(crate) keys: KeyLocks,
    /// Rows staged since the last drain (approximate; drives [`STAGE_LIMIT`]).
    pub(crate) waiting: AtomicU64,
}

/// A fair async lock per key; an entry lives while someone holds or waits for it.
#[derive(Default)]
pub(crate) struct KeyLocks(Arc<std::sync::Mutex<KeyMap>>);

type KeyMap = HashMap<String, Arc<tokio::sync::Mutex<()>>>;

/// Holds one key of [`KeyLocks`] (owned: it can move into a task that must finish before
/// the key is free); dropping it, or the future waiting for it, lets go.
pub(crate) struct KeyGuard {
    map: Arc<std::sync::Mutex<KeyMap>>,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    /// Waits for `key`'s turn.
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(key.to_owned()).or_default().clone()
        };
        // Built before the wait, so a waiter that gives up still cleans up.
        let mut guard = KeyGuard { map: self.0.clone(), key: key.to_owned(), lock, held: None };
        guard.held = Some(guard.lock.clone().lock_owned().await);
        guard
    }

    /// Keys held or waited for now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's and this guard's: nobody else holds or waits for the key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

impl Stage {
    pub(crate) fn new(meta: EmbeddedStore) -> Arc<Self> {
        Arc::new(Self {
            meta,
            drains: tokio::sync::Mutex::new(()),
            keys: KeyLocks::default(),
            waiting: AtomicU64::new(0),
        })
    }

    /// Stages row `k` (create-only: an error if it exists in either file); its generation.
    /// Call with `k`'s key lock held.
    pub(crate) async fn stage(
        &self,
        blobs: &EmbeddedStore,
        k: String,
        content_type: Option<String>,
        bytes: Vec<u8>,
    ) -> Result<u64> {
        // Logged, not synced: the version's commit record that follows syncs the log. The
        // blob file is checked in the same blocking call, before the commit (not on replay:
        // the check passed the first time).
        let file = blobs.db();
        let redo = Redo::Blob { staged: true, key: k, mode: PutMode::Create, content_type, bytes };
        let generation = self
            .meta
            .write_logged(redo, false, move |tx, r| match r {
                Redo::Blob { key, content_type, bytes, .. } => {
                    let read = file.begin_read().map_err(db_err)?;
                    if read.open_table(BLOBS).map_err(db_err)?.get(key.as_str()).map_err(db_err)?.is_some() {
                        return Err(exists(key));
                    }
                    stage_in(tx, key, content_type.as_deref(), bytes)
                }
                Redo::Commit(_) => Err(Error::internal("embedded blobs: not a staged put")),
            })
            .await?;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Ok(generation)
    }

    /// Moves every staged row into `blobs` (synced), then removes them from the metadata
    /// file; rows the blob file already holds are dropped. Call with `drains` held.
    /// The number of rows moved.
    pub(crate) async fn drain(&self, blobs: &EmbeddedStore) -> Result<u64> {
        let rows = self
            .meta
            .read(|tx| {
                let t = tx.open_table(STAGED).map_err(db_err)?;
                let mut rows = Vec::new();
                for item in t.iter().map_err(db_err)? {
                    let (k, v) = item.map_err(db_err)?;
                    rows.push((k.value().to_owned(), v.value().to_vec()));
                }
                Ok(rows)
            })
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = rows.iter().map(|(k, _)| k.clone()).collect();
        let n = rows.len() as u64;
        // One commit for all of them: the rows are in key order, not in the order they were
        // staged, so a log segment must never reach the blob file without the snapshots
        // staged before it.
        blobs
            .write(move |tx| {
                let mut t = tx.open_table(BLOBS).map_err(db_err)?;
                for (k, v) in rows {
                    // The blob file's row wins: it is this row, moved by a drain whose staged
                    // copies a crash kept (or a later put's).
                    if t.get(k.as_str()).map_err(db_err)?.is_none() {
                        t.insert(k.as_str(), v.as_slice()).map_err(db_err)?;
                    }
                }
                Ok(())
            })
            .await?;
        // Unsynced: if a crash loses the removal, the next drain drops the copies.
        self.meta
            .write_unsynced(move |tx| {
                let mut t = tx.open_table(STAGED).map_err(db_err)?;
                for k in keys {
                    t.remove(k.as_str()).map_err(db_err)?;
                }
                Ok(())
            })
            .await?;
        self.waiting.store(0, Ordering::Relaxed);
        Ok(n)
    }

    /// The staged row `k`, if any.
    pub(crate) fn staged_row(&self, tx: &redb::ReadTransaction, k: &str) -> Result<Option<Vec<u8>>> {
        let t = tx.open_table(STAGED).map_err(db_err)?;
        Ok(t.get(k).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Rows waiting in the metadata file now.
    pub(crate) async fn count(&self) -> Result<u64> {
        self.meta.read(|tx| tx.open_table(STAGED).map_err(db_err)?.len().map_err(db_err)).await
    }
}

#[cfg(test)]
mod tests {
    use udm_core::ports::{BlobStore, PutOptions};

    use super::*;

    /// A key's lock excludes only that key: a staged put of another key goes ahead while it
    /// is held (a put to the blob file holds its key through its synced commit), one of the
    /// same key waits for it, and no entry is left behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_lock_holds_back_only_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let meta = EmbeddedStore::open(&dir.path().join("udm.redb")).unwrap();
        let file = EmbeddedStore::open(&dir.path().join("udm-blobs.redb")).unwrap();
        let json = file.blobs_staged_in("json", &meta).unwrap();
        let stage = file.stage.lock().unwrap().clone().expect("staging");
        let snapshot = PutOptions::create_json().before_commit();

        let held = stage.keys.lock("json:a").await;
        let mut same = Box::pin(json.put("a", b"1".to_vec(), &snapshot));
        let other = tokio::time::timeout(std::time::Duration::from_secs(30), json.put("b", b"2".to_vec(), &snapshot));
        other.await.expect("another key is not held back").unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut same).await;
        assert!(waited.is_err(), "the same key waits for its lock");
        assert_eq!(stage.keys.len(), 1);
        drop(held);
        same.await.unwrap();
        assert_eq!(json.get("a").await.unwrap(), b"1");
        assert_eq!(stage.keys.len(), 0, "no entry left behind");

        // A waiter that gives up leaves nothing behind either.
        let held = stage.keys.lock("json:c").await;
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(10), stage.keys.lock("json:c")).await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(stage.keys.len(), 0);
    }

    /// A crash between a drain's blob-file commit and the removal of the staged rows leaves
    /// copies of moved rows: reads and the next drain keep the blob file's row.
    #[tokio::test]
    async fn copies_a_crash_kept_after_a_drain_lose_to_the_blob_file() {
        let dir = tempfile::tempdir().unwrap();
        let meta = EmbeddedStore::open(&dir.path().join("udm.redb")).unwrap();
        let file = EmbeddedStore::open(&dir.path().join("udm-blobs.redb")).unwrap();
        let json = file.blobs_staged_in("json", &meta).unwrap();
        let first = json.put_with_etag("k", b"one".to_vec(), &PutOptions::create_json().before_commit()).await.unwrap();
        let raw = meta
            .read(|tx| {
                Ok(tx.open_table(STAGED).map_err(db_err)?.get("json:k").map_err(db_err)?.map(|v| v.value().to_vec()))
            })
            .await
            .unwrap()
            .expect("staged row");
        assert_eq!(json.drain().await.unwrap(), 1);
        // Overwritten in the blob file since, then the removal "lost": the old copy is back.
        let etag = first.etag.unwrap();
        json.put("k", b"two".to_vec(), &PutOptions::if_match(etag, "application/json")).await.unwrap();
        meta.write(move |tx| {
            tx.open_table(STAGED).map_err(db_err)?.insert("json:k", raw.as_slice()).map_err(db_err)?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(json.get("k").await.unwrap(), b"two", "the blob file's row wins over a stale copy");
        json.drain().await.unwrap();
        assert_eq!(json.staged().await.unwrap(), 0);
        assert_eq!(file.blobs("json").unwrap().get("k").await.unwrap(), b"two", "the drain kept it");
    }
}
