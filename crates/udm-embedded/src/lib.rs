//! # udm-embedded — UDM's metadata, queue and counter stores on redb
//!
//! [`EmbeddedStore`] implements [`MetaStore`](udm_core::ports::MetaStore),
//! [`QueueStore`](udm_core::ports::QueueStore) and
//! [`CounterStore`](udm_core::ports::CounterStore) on [redb](https://docs.rs/redb), an
//! embedded, file-backed, ACID key-value store in pure Rust. Write transactions are
//! serialized, so each commit is atomic and commits are serializable; reads run on snapshots
//! concurrently. With a local-directory blob store this is UDM's zero-setup default: one
//! process, no servers.
//!
//! Keys are the record ids of [`udm_core::layout`] (zero-padded, so key order is OV order);
//! the JSON records — version records, request records and heads — are stored packed with a
//! built-in Zstandard dictionary (about 2.4× smaller; the `pack` module), jobs and queue
//! entries as JSON text. As of an instant or a CV takes two lookups in an index written with
//! each version, whatever the history's length (the `asof` module). Point reads (a head, a
//! version, a request, an as-of) run on the calling thread; longer work runs on tokio's
//! blocking pool.
//!
//! ```
//! # async fn demo() -> udm_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = udm_embedded::EmbeddedStore::open(&dir.path().join("meta.redb"))?;
//! # let _ = store; Ok(()) }
//! ```

mod asof;
mod blobs;
mod group;
mod meta;
mod pack;
mod queue;
mod shadow;
mod stage;
mod wal;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use udm_core::{Error, ErrorKind, Result};

pub use blobs::EmbeddedBlobs;
pub use stage::STAGE_LIMIT;
pub use wal::CHECKPOINT_BYTES;

/// Heads by object record id: packed rows (the `pack` module).
pub(crate) const HEADS: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("heads");
/// Version records by version record id: packed rows.
pub(crate) const VERSIONS: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("versions");
pub(crate) const CVS: TableDefinition<'static, &'static str, u64> = TableDefinition::new("cvs");
/// Request records by request key: packed rows.
pub(crate) const REQUESTS: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("requests");
/// `<object record id>/<request id>` → "": which requests belong to an object (hard delete).
pub(crate) const REQUESTS_BY_OBJECT: TableDefinition<'static, &'static str, &'static str> =
    TableDefinition::new("requests_by_object");
/// Version record ids by CV: `<collection prefix><cv:020>` → version record id.
pub(crate) const BY_CV: TableDefinition<'static, &'static str, &'static str> = TableDefinition::new("by_cv");
/// The shadow log's watermark per collection prefix.
pub(crate) const LOGGED: TableDefinition<'static, &'static str, u64> = TableDefinition::new("logged");
pub(crate) const COUNTERS: TableDefinition<'static, &'static str, i64> = TableDefinition::new("counters");
pub(crate) const JOBS: TableDefinition<'static, &'static str, &'static str> = TableDefinition::new("jobs");
pub(crate) const QUEUE: TableDefinition<'static, &'static str, &'static str> = TableDefinition::new("queue");

/// Metadata, queue and counters in one redb file. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    /// The file and its write-ahead log; closed (log checkpointed, file compacted) when the
    /// last handle goes.
    db: Arc<Db>,
    path: PathBuf,
    /// Table lookups made by version lookups ([`EmbeddedStore::reads`]), shared by clones.
    reads: Arc<AtomicU64>,
    /// Grouped writes waiting for the next shared commit ([`EmbeddedStore::grouped_commits`]).
    group: Arc<group::Group>,
    /// Commits synced to disk ([`EmbeddedStore::synced_commits`]), shared by clones.
    syncs: Arc<AtomicU64>,
    /// Where this blob file's buckets stage their puts, once one is opened with
    /// [`EmbeddedStore::blobs_staged_in`] (see the `stage` module).
    stage: Arc<std::sync::Mutex<Option<Arc<stage::Stage>>>>,
}

/// A store's redb database. When the last handle goes — every clone of the store and every
/// blocking call still using the file — it closes the file: a synced checkpoint and an empty
/// write-ahead log, then a **compaction** (redb's `compact`: live pages move down into free
/// ones and the file is cut after the last live page). redb grows a file by doubling it and
/// only trims free pages at its end, so a busy file is often half free space; closed, it is
/// the size of what it holds. The compaction reads and rewrites the file's live pages (about
/// 40 ms for a 64 MiB file half free, 3–5 ms when there is nothing to move) in durable
/// commits, so a crash during it loses nothing (redb repairs the file on the next open).
pub(crate) struct Db {
    db: Database,
    /// The write-ahead log of the hot-path commits (the `wal` module).
    pub(crate) wal: Arc<wal::Wal>,
    /// Staged blob rows waiting for the next logged commit to carry them (the `stage`
    /// module): only a metadata file that blob files stage in holds any.
    pub(crate) pending: stage::Pending,
}

impl std::ops::Deref for Db {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.wal.close(&self.db);
        if let Err(e) = self.db.compact() {
            tracing::warn!(error = %e, "embedded store: compacting the file on close failed (it stays as large)");
        }
    }
}

/// Does a logged commit again (write-ahead log replay): the same functions as the first time.
fn redo(tx: &WriteTransaction, redo: wal::Redo) -> Result<()> {
    match redo {
        wal::Redo::Commit { staged, commits } => {
            stage::stage_rows_in(tx, &staged)?;
            meta::commit_many_in(tx, &commits).map(|_| ())
        }
        wal::Redo::Blob { key, mode, content_type, bytes } => {
            blobs::put_row_in(tx, &key, &mode, content_type.as_deref(), &bytes).map(|_| ())
        }
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish()
    }
}

/// Maps a redb error: storage trouble is not the caller's fault and not transient.
pub(crate) fn db_err(e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    Error::new(ErrorKind::Internal, format!("embedded store: {e}")).with_source(e)
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(format!("embedded store: encoding: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::internal(format!("embedded store: stored {what} does not decode: {e}")))
}

impl EmbeddedStore {
    /// Opens (or creates) the store file, creating its parent directory and tables.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::new(ErrorKind::Config, format!("embedded store directory {}: {e}", dir.display()))
            })?;
        }
        let db = Database::create(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("opening embedded store {}: {e}", path.display())).with_source(e)
        })?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            // A file whose records are JSON text (before packed rows) says so.
            let earlier = |e: redb::TableError| match e {
                redb::TableError::TableTypeMismatch { table, .. } => Error::new(
                    ErrorKind::Config,
                    format!(
                        "embedded store {}: table {table} was written by an earlier build (JSON text rows); \
                         this build reads packed rows (packed-row format 1)",
                        path.display()
                    ),
                ),
                e => db_err(e),
            };
            tx.open_table(HEADS).map_err(earlier)?;
            tx.open_table(VERSIONS).map_err(earlier)?;
            tx.open_table(CVS).map_err(db_err)?;
            tx.open_table(REQUESTS).map_err(earlier)?;
            tx.open_table(REQUESTS_BY_OBJECT).map_err(db_err)?;
            tx.open_table(COUNTERS).map_err(db_err)?;
            tx.open_table(BY_CV).map_err(db_err)?;
            tx.open_table(asof::AS_OF_AT).map_err(db_err)?;
            tx.open_table(asof::AS_OF_CV).map_err(db_err)?;
            tx.open_table(LOGGED).map_err(db_err)?;
            tx.open_table(JOBS).map_err(db_err)?;
            tx.open_table(QUEUE).map_err(db_err)?;
            tx.open_table(blobs::BLOBS).map_err(db_err)?;
            tx.open_table(blobs::BLOB_GENERATION).map_err(db_err)?;
            tx.open_table(stage::STAGED).map_err(db_err)?;
            tx.open_table(wal::WAL_SEQ).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        let wal = Arc::new(wal::Wal::open(&db, path, redo)?);
        // Pending staged rows take generations after the file's (its log applied).
        let generation = {
            let tx = db.begin_read().map_err(db_err)?;
            let g = tx.open_table(blobs::BLOB_GENERATION).map_err(db_err)?;
            redb::ReadableTable::get(&g, "g").map_err(db_err)?.map_or(0, |v| v.value())
        };
        Ok(Self {
            db: Arc::new(Db { db, wal, pending: stage::Pending::after(generation) }),
            path: path.to_owned(),
            reads: Arc::default(),
            group: Arc::default(),
            syncs: Arc::default(),
            stage: Arc::default(),
        })
    }

    /// Records the write-ahead log applied again when this store was opened: the logged
    /// commits a crash had kept out of the file. For tests and diagnostics.
    pub fn replayed(&self) -> u64 {
        self.db.wal.replayed
    }

    /// Table lookups (a point `get` or one range seek) made so far by this store's (and its
    /// clones') version lookups: `version`, `version_at`, `version_at_cv` and `history`. For
    /// tests and diagnostics that check those lookups stay O(log n).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The shared lookup counter behind [`EmbeddedStore::reads`].
    pub(crate) fn read_counter(&self) -> Arc<AtomicU64> {
        self.reads.clone()
    }

    /// Write transactions committed with an fsync so far (every metadata, queue and counter
    /// write, and the blob puts that need their own sync — see
    /// [`EmbeddedStore::blobs_sharing_commits`]). For tests and diagnostics.
    pub fn synced_commits(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The file it lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a write transaction on a blocking thread; commits if `f` succeeds, aborts
    /// (changing nothing) if it fails.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (db, syncs) = (self.db.clone(), self.syncs.clone());
        blocking(move || {
            let tx = db.begin_write().map_err(db_err)?;
            match f(&tx) {
                Ok(v) => {
                    tx.commit().map_err(db_err)?;
                    syncs.fetch_add(1, Ordering::Relaxed);
                    Ok(v)
                }
                Err(e) => {
                    tx.abort().map_err(db_err)?;
                    Err(e)
                }
            }
        })
        .await
    }

    /// Runs `f` in an unsynced write transaction whose input `redo` goes to the write-ahead
    /// log (the `wal` module); with `sync`, returns once the log record is durable (counted
    /// by [`EmbeddedStore::synced_commits`]), else once it is written (the next synced record
    /// or commit makes it durable, in order). `f` must be what replaying `redo` does, as `f`
    /// leaves it (a commit adds the staged rows it carries).
    pub(crate) async fn write_logged<T: Send + 'static>(
        &self,
        mut redo: wal::Redo,
        sync: bool,
        f: impl FnOnce(&WriteTransaction, &mut wal::Redo) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (db, syncs) = (self.db.clone(), self.syncs.clone());
        blocking(move || {
            // Rows a commit carried are in the file once it commits: no longer pending (forgotten
            // before the record's sync, so concurrent commits do not carry them again).
            let carried = |r: &wal::Redo| {
                if let wal::Redo::Commit { staged, .. } = r {
                    db.pending.carried(staged);
                }
            };
            let out = db.wal.commit(&db, &mut redo, sync, f, carried)?;
            if sync {
                syncs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(out)
        })
        .await
    }

    /// [`EmbeddedStore::write`] without the fsync (redb's `Durability::None`): durable with
    /// the next synced commit of the file, or lost in a crash before it.
    pub(crate) async fn write_unsynced<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        blocking(move || {
            let tx = wal::unsynced(&db)?;
            match f(&tx) {
                Ok(v) => {
                    tx.commit().map_err(db_err)?;
                    Ok(v)
                }
                Err(e) => {
                    tx.abort().map_err(db_err)?;
                    Err(e)
                }
            }
        })
        .await
    }

    /// The database handle (reads that span this file and another).
    pub(crate) fn db(&self) -> Arc<Db> {
        self.db.clone()
    }

    /// Runs `f` on a read snapshot on the calling thread: for point reads (one or two B-tree
    /// lookups in redb's page cache, a few µs), where a blocking-pool round trip would cost
    /// more than the read.
    pub(crate) fn read_here<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        f(&self.db.begin_read().map_err(db_err)?)
    }

    /// Runs `f` on a read snapshot on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        blocking(move || f(&db.begin_read().map_err(db_err)?)).await
    }
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("embedded store worker: {e}")))?
}
