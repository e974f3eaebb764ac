//! **Staged puts**: a blob file of its own that costs a write no fsync — and no write at
//! all until the version's commit.
//!
//! The zero-setup default keeps its blobs in a redb file of their own (`udm-blobs.redb`), a
//! second copy beside the metadata file from which a lost metadata file can be rebuilt. A
//! snapshot must be durable before the commit that names it; synced in its own file, it
//! cost every write a second fsync. A bucket opened with
//! [`EmbeddedStore::blobs_staged_in`] instead **stages** a create-only put made before a
//! metadata commit ([`PutSync::WithNextCommit`](udm_core::ports::PutSync::WithNextCommit):
//! snapshots and content): the row waits in memory (*pending*, one map per metadata file)
//! and the metadata file's next logged commit **carries** it — writes it into the file's
//! staged table inside its own transaction and names it in its write-ahead log record (the
//! `wal` module), so the snapshot becomes durable with, and never after, the version that
//! names it. A staged put costs two point reads (the create-only check) and no transaction,
//! no log record and no fsync; a write costs one transaction and one fsync.
//!
//! Staged rows move to the blob file in **drains**: every other put to the blob file (the
//! shadow flusher's log and index segments, which follow every commit within the flush
//! delay) first copies every row of the staged table into the blob file in one synced
//! commit, then removes them from the metadata file. So the blob file never holds a log
//! segment naming a snapshot it lacks: the log names committed versions, their snapshots
//! were carried by their commits at the latest, and the log's put drains them first. Pending
//! rows belong to versions not committed yet, so the flusher's drains leave them; a drain
//! first *settles* them (a synced logged commit of its own carries them) before a listing,
//! before a put of a key that is pending (it must see the row), when [`STAGE_LIMIT`] rows
//! wait, and when asked ([`EmbeddedBlobs::drain`](crate::EmbeddedBlobs::drain)). A drain runs
//! in a task of its own holding the drain lock, so a caller that stops waiting does not let
//! a delete run before the drain's copy is done. Rows a crash left staged drain with the
//! next put to the blob file (the repair pass at start logs what the crash left unlogged).
//!
//! Rows move pending → staged table → blob file, and each step writes the next place
//! before it forgets the last (a commit writes the staged table before it forgets the
//! pending row; a drain commits the blob file before it removes the staged row). So reads
//! and the create-only check look in that order, and a row being moved is always found.
//! The blob file's row wins over a staged copy. Staged rows keep the blob file's row format,
//! with the generation's top bit set ([`STAGED_BIT`]), so ETags of staged rows never equal
//! ETags the blob file hands out, and a drain copies rows byte for byte (a row keeps its
//! ETag); pending rows take generations after the metadata file's, which every carrying
//! commit raises to theirs.
//!
//! Locking, per pair of files: **a lock per key** — a stager holds its key's while it
//! checks and adds the row, every other put from before its drain until its commit, a
//! delete while it removes every copy — so "the key exists nowhere" (create-only) and an
//! ETag match are checked and acted on atomically, and a put to the blob file never has a
//! row of its key staged behind it; and **one drain at a time**, deletes included, so a
//! drain that read a row never copies it back after a delete. A delete forgets the pending
//! row inside its write transaction of the metadata file: a commit (also a write
//! transaction, and redb has one writer) carried it before — and the delete removes it from
//! the staged table — or comes after and no longer finds it; if that transaction fails, the
//! row is put back (the delete still holds the key). The work of a plain put or a
//! delete under a key's lock runs in a task that owns the lock, so a caller that stops
//! waiting (its deadline passed) does not free the key while its commit is still queued or
//! running; a stager writes nothing, so one that stops waiting stages nothing.
//!
//! Crash analysis (either file's writes are atomic per commit):
//! - after a staged put, before any commit carried it: the row is lost with the memory; no
//!   version names it (its version's commit carries it, or an earlier commit did);
//! - after the commit that carried it (the version's own, an earlier one or a settle — then
//!   the row is an orphan until its version commits, or for good if it never does, and is
//!   collected like any orphan snapshot): the row is durable once that record is synced (the
//!   version's own record, later in the same log, syncs it at the latest; a settle syncs its
//!   own), and the log's replay writes it again;
//! - during a drain, after the blob file's commit, before the staged rows are removed: the
//!   next drain finds them in the blob file and drops the staged copies (the blob file's row
//!   wins; for a moved row it is the same bytes);
//! - a lost metadata file loses the staged rows with the records naming them; a rebuild
//!   from the blob file restores everything its log holds, as before (the log never lags
//!   its snapshots).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use udm_core::{Error, ErrorKind, Result};

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

/// The generation stored in a row of the blob file's format (its first 8 bytes).
fn row_generation(row: &[u8]) -> Result<u64> {
    row.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::internal("embedded blobs: a staged row does not decode"))
}

/// Writes `rows` (staged rows a commit carries) into the metadata file's staged table, and
/// keeps the file's generation at least their highest. Also what a logged commit's rows do
/// again on replay. A row already there is replaced: it can only be a copy of the same row
/// (one a drain moved and a crash kept), and the carried row is the one its put answered.
pub(crate) fn stage_rows_in(tx: &redb::WriteTransaction, rows: &[(String, Vec<u8>)]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut t = tx.open_table(STAGED).map_err(db_err)?;
    let mut top = 0;
    for (k, row) in rows {
        top = top.max(row_generation(row)? & !STAGED_BIT);
        t.insert(k.as_str(), row.as_slice()).map_err(db_err)?;
    }
    let mut g = tx.open_table(BLOB_GENERATION).map_err(db_err)?;
    if g.get("g").map_err(db_err)?.map_or(0, |v| v.value()) < top {
        g.insert("g", top).map_err(db_err)?;
    }
    Ok(())
}

/// Staged rows not yet written to the file: held in memory until the next logged commit of
/// the metadata file carries them (see the module docs). One per metadata file.
#[derive(Debug, Default)]
pub(crate) struct Pending(std::sync::Mutex<PendingRows>);

#[derive(Debug, Default)]
struct PendingRows {
    /// `<bucket>:<key>` → the row, in the blob file's format.
    rows: BTreeMap<String, Vec<u8>>,
    /// The last generation handed out (without [`STAGED_BIT`]).
    generation: u64,
}

impl Pending {
    /// Starts handing out generations after `stored`, the file's (at open).
    pub(crate) fn after(stored: u64) -> Self {
        Self(std::sync::Mutex::new(PendingRows { rows: BTreeMap::new(), generation: stored }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingRows> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds row `k` (the caller checked it exists nowhere, under its key lock), encoded
    /// (compressed) beforehand with any generation: it gets the next one here. Its generation.
    fn insert(&self, k: String, mut row: Vec<u8>) -> Result<u64> {
        let slot = row.get_mut(..8).ok_or_else(|| Error::internal("embedded blobs: a staged row does not decode"))?;
        let mut p = self.lock();
        let generation = (p.generation + 1) | STAGED_BIT;
        slot.copy_from_slice(&generation.to_be_bytes());
        p.generation += 1;
        p.rows.insert(k, row);
        Ok(generation)
    }

    /// Takes row `k` out (a delete, inside its write transaction of the metadata file; put
    /// back with [`Pending::restore`] if that transaction fails).
    pub(crate) fn take(&self, k: &str) -> Option<Vec<u8>> {
        self.lock().rows.remove(k)
    }

    /// Puts back a row [`Pending::take`] took (its delete failed; the key lock kept every
    /// other put of the key out meanwhile).
    pub(crate) fn restore(&self, k: String, row: Vec<u8>) {
        self.lock().rows.insert(k, row);
    }

    /// Row `k`, if pending.
    pub(crate) fn get(&self, k: &str) -> Option<Vec<u8>> {
        self.lock().rows.get(k).cloned()
    }

    /// Rows pending now.
    pub(crate) fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// Whether row `k` is pending.
    pub(crate) fn has(&self, k: &str) -> bool {
        self.lock().rows.contains_key(k)
    }

    /// The keys pending now.
    fn keys(&self) -> Vec<String> {
        self.lock().rows.keys().cloned().collect()
    }

    /// Writes every pending row into the staged table in `tx` (a logged commit, which the
    /// rows' record joins: [`Redo::Commit`]); the rows, for the record and for
    /// [`Pending::carried`] once `tx` committed. Taken inside the write transaction, so a
    /// delete (a write transaction too) either forgot a row before or removes it after.
    pub(crate) fn carry(&self, tx: &redb::WriteTransaction) -> Result<Vec<(String, Vec<u8>)>> {
        let rows: Vec<(String, Vec<u8>)> = {
            let p = self.lock();
            if p.rows.is_empty() {
                return Ok(Vec::new());
            }
            p.rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        stage_rows_in(tx, &rows)?;
        Ok(rows)
    }

    /// Forgets `rows` once a commit carried them into the file (a row staged again since,
    /// with another generation, stays).
    pub(crate) fn carried(&self, rows: &[(String, Vec<u8>)]) {
        if rows.is_empty() {
            return;
        }
        let mut p = self.lock();
        for (k, row) in rows {
            if p.rows.get(k) == Some(row) {
                p.rows.remove(k);
            }
        }
    }
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

    /// Stages row `k` (create-only: an error if it exists anywhere); its generation. Call
    /// with `k`'s key lock held. Nothing is written: the row waits in memory for the next
    /// logged commit of the metadata file. Cancelled, it stages nothing.
    pub(crate) async fn stage(
        &self,
        blobs: &EmbeddedStore,
        k: String,
        content_type: Option<String>,
        bytes: Vec<u8>,
    ) -> Result<u64> {
        // Checked in the order rows move — pending, then staged, then the blob file — so a
        // row that moves on meanwhile is seen where it went: a commit writes the staged
        // table before it forgets the pending row, and a drain writes the blob file before
        // it removes the staged one.
        let pending = &self.meta.db().pending;
        if pending.has(&k) {
            return Err(exists(&k));
        }
        // The row is encoded (compressed) on the blocking thread that checks, not under the
        // pending rows' lock, which commits take.
        let (meta, file, key) = (self.meta.db(), blobs.db(), k.clone());
        let row = crate::blocking(move || {
            let staged = meta.begin_read().map_err(db_err)?;
            if staged.open_table(STAGED).map_err(db_err)?.get(key.as_str()).map_err(db_err)?.is_some() {
                return Ok(None);
            }
            let read = file.begin_read().map_err(db_err)?;
            if read.open_table(BLOBS).map_err(db_err)?.get(key.as_str()).map_err(db_err)?.is_some() {
                return Ok(None);
            }
            encode_row(STAGED_BIT, content_type.as_deref(), &bytes).map(Some)
        })
        .await?;
        let Some(row) = row else { return Err(exists(&k)) };
        let generation = pending.insert(k, row)?;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Ok(generation)
    }

    /// Writes the pending rows into the staged table now, so a drain moves them (a logged
    /// commit, synced before the drain's synced copy into the blob file, so a power loss
    /// cannot keep the copies and forget the rows' generations, which a later staged put of
    /// the same key — possible only after a delete — could then be handed again; a drain
    /// can still copy rows a commit carried before that commit's record is synced).
    async fn settle(&self) -> Result<()> {
        let db = self.meta.db();
        if db.pending.len() == 0 {
            return Ok(());
        }
        let redo = Redo::Commit { staged: Vec::new(), commits: Vec::new() };
        self.meta
            .write_logged(redo, true, move |tx, r| match r {
                Redo::Commit { staged, .. } => {
                    *staged = db.pending.carry(tx)?;
                    Ok(())
                }
                Redo::Blob { .. } => Err(Error::internal("embedded blobs: not a settle")),
            })
            .await
    }

    /// Moves every staged row into `blobs` (synced), then removes them from the metadata
    /// file; rows the blob file already holds are dropped. Call with `drains` held.
    /// The number of rows moved.
    /// With `settle`, the pending rows are settled first; without, they stay pending (they
    /// belong to versions not committed yet, which no log segment names).
    pub(crate) async fn drain(&self, blobs: &EmbeddedStore, settle: bool) -> Result<u64> {
        if settle {
            self.settle().await?;
        }
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
            self.waiting.store(self.meta.db().pending.len() as u64, Ordering::Relaxed);
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
        self.waiting.store(self.meta.db().pending.len() as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// The staged row `k`, if any.
    pub(crate) fn staged_row(&self, tx: &redb::ReadTransaction, k: &str) -> Result<Option<Vec<u8>>> {
        let t = tx.open_table(STAGED).map_err(db_err)?;
        Ok(t.get(k).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Rows waiting now, pending or in the metadata file (each once; of every bucket that
    /// stages here).
    pub(crate) async fn count(&self) -> Result<u64> {
        let pending = self.meta.db().pending.keys();
        self.meta
            .read(move |tx| {
                let t = tx.open_table(STAGED).map_err(db_err)?;
                let mut n = t.len().map_err(db_err)?;
                for k in &pending {
                    if t.get(k.as_str()).map_err(db_err)?.is_none() {
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use udm_core::ports::{BlobStore, PutOptions};

    use super::*;

    /// A metadata file, a blob file and its `json` bucket staging in the metadata file.
    fn staged_files() -> (tempfile::TempDir, EmbeddedStore, EmbeddedStore, crate::EmbeddedBlobs) {
        let dir = tempfile::tempdir().unwrap();
        let meta = EmbeddedStore::open(&dir.path().join("udm.redb")).unwrap();
        let file = EmbeddedStore::open(&dir.path().join("udm-blobs.redb")).unwrap();
        let json = file.blobs_staged_in("json", &meta).unwrap();
        (dir, meta, file, json)
    }

    /// A key's lock excludes only that key: a staged put of another key goes ahead while it
    /// is held (a put to the blob file holds its key through its synced commit), one of the
    /// same key waits for it, and no entry is left behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_lock_holds_back_only_its_own_key() {
        let (_dir, _meta, file, json) = staged_files();
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

    /// A staged put writes nothing: the row waits in memory and reads back at once, and the
    /// metadata file's next logged commit carries it (one record); a delete before that
    /// forgets it.
    #[tokio::test]
    async fn a_staged_row_travels_with_the_next_commit() {
        let (_dir, meta, _file, json) = staged_files();
        let snapshot = PutOptions::create_json().before_commit();
        let before = meta.db().wal.last_seq();
        let a = json.put_with_etag("a", b"1".to_vec(), &snapshot).await.unwrap();
        json.put("b", b"2".to_vec(), &snapshot).await.unwrap();
        assert_eq!(meta.db().wal.last_seq(), before, "staging wrote no record");
        assert_eq!(json.get("a").await.unwrap(), b"1");
        assert_eq!(json.staged().await.unwrap(), 2);
        json.delete("b").await.unwrap();
        assert_eq!(json.get("b").await.unwrap_err().kind(), ErrorKind::NotFound);

        let ctx = udm_core::RouteContext::new("t", "d", "c").unwrap();
        let k = udm_testkit::fixtures::key(&ctx, "o");
        let v = serde_json::json!({"n": 1});
        let c = udm_testkit::fixtures::commit(&k, None, udm_core::Op::Create, udm_testkit::fixtures::ts(1), "r", &v);
        udm_core::ports::MetaStore::commit(&meta, c).await.unwrap();
        assert_eq!(meta.db().wal.last_seq(), before + 1, "one record: the commit and the row it carried");
        assert_eq!(meta.db().pending.len(), 0);
        let in_file = |k: &'static str| {
            meta.read(move |tx| Ok(tx.open_table(STAGED).map_err(db_err)?.get(k).map_err(db_err)?.is_some()))
        };
        assert!(in_file("json:a").await.unwrap(), "carried into the staged table");
        assert!(!in_file("json:b").await.unwrap(), "the deleted row was not carried");
        let again = json.put("a", b"3".to_vec(), &snapshot).await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::AlreadyExists, "create-only sees the carried row: {again}");
        let read = json.get_with_etag("a").await.unwrap();
        assert_eq!((read.bytes, read.etag), (b"1".to_vec(), a.etag), "the row keeps its ETag");
    }

    /// A crash between a drain's blob-file commit and the removal of the staged rows leaves
    /// copies of moved rows: reads and the next drain keep the blob file's row.
    #[tokio::test]
    async fn copies_a_crash_kept_after_a_drain_lose_to_the_blob_file() {
        let (_dir, meta, file, json) = staged_files();
        let first = json.put_with_etag("k", b"one".to_vec(), &PutOptions::create_json().before_commit()).await.unwrap();
        let raw = meta.db().pending.get("json:k").expect("a pending row until a commit carries it");
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
