//! # udm-mongo — UDM's metadata, queue and counter stores on MongoDB
//!
//! [`MongoStore`] implements [`MetaStore`](udm_core::ports::MetaStore),
//! [`QueueStore`](udm_core::ports::QueueStore) and
//! [`CounterStore`](udm_core::ports::CounterStore) on the official `mongodb` driver. A version
//! commit — of one version or of a group ([`MetaStore::commit_many`](udm_core::ports::MetaStore::commit_many)) —
//! is **one multi-document transaction**: the collection document's `$inc` (CV and counters
//! in one statement), the version records' insert (which also records the request ids: a
//! unique `req` index), the heads' insert or compare-and-set replace; a lone update is four
//! round trips including the commit (see the `commit` module for the fast and careful
//! modes). It is retried as the
//! driver documents on `TransientTransactionError` (including write conflicts between racing
//! writers) and `UnknownTransactionCommitResult`. Transactions need a replica set (a
//! single-node one is enough).
//!
//! Collections (in the configured database), created with their base indexes on connect:
//! `udm_heads`, `udm_versions` (also the request records: unique `req`), `udm_collections`
//! (one document per collection: its CV and its counters), `udm_jobs`, `udm_queue`. Record ids come from [`udm_core::layout`].
//! The indexes that serve list queries by an indexed prop are created by
//! [`MongoStore::ensure_indexes`] with the props of the configured collections.
//!
//! **No call can hang**: the connect and server-selection timeouts bound reaching a server
//! (default 5 s each), every port method runs under a whole-call deadline
//! ([`MongoConfig::call_timeout`], default 30 s), health pings under a short one
//! ([`MongoConfig::ping_timeout`], default 2 s), and the retries of a commit transaction under a
//! time budget ([`MongoConfig::commit_retry_budget`], default 30 s). Each expiry is a retryable
//! `Unavailable`.
//!
//! ```no_run
//! # async fn demo() -> udm_core::Result<()> {
//! use udm_mongo::{MongoConfig, MongoStore};
//! let store = MongoStore::connect(&MongoConfig::new("mongodb://127.0.0.1:27017/?directConnection=true", "udm")).await?;
//! store.ping_latency().await?;
//! # Ok(()) }
//! ```

mod asof;
mod commit;
mod docs;
mod error;
mod import;
mod list;
mod lookup;
mod meta;
mod queue;
mod runtime;
mod shadow;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bson::{Document, doc};
use mongodb::options::{
    Acknowledgment, ClientOptions, DatabaseOptions, IndexOptions, ReadConcern, TransactionOptions, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use udm_core::config::{MetaBackend, MongoUri};
use udm_core::{Error, Result};

use crate::error::classify;
use crate::runtime::{Stopwatch, within};

/// Default [`MongoConfig::connect_timeout`] and [`MongoConfig::server_selection_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`MongoConfig::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`MongoConfig::ping_timeout`].
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`MongoConfig::commit_retry_budget`] (the driver specification's convenient
/// transaction API uses 120 s; UDM callers retry themselves, so ours is shorter).
pub const DEFAULT_COMMIT_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Connection settings of one MongoDB metadata store.
#[derive(Clone, Debug)]
pub struct MongoConfig {
    /// Connection string (printed redacted).
    pub uri: MongoUri,
    /// Database holding UDM's collections.
    pub database: String,
    /// Connection pool size.
    pub max_pool_size: Option<u32>,
    /// Connect timeout (TCP + TLS + handshake of one connection). `None`: the URI's
    /// `connectTimeoutMS`, else [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Option<Duration>,
    /// Server selection timeout (how long an operation waits for a reachable server). `None`:
    /// the URI's `serverSelectionTimeoutMS`, else [`DEFAULT_CONNECT_TIMEOUT`].
    pub server_selection_timeout: Option<Duration>,
    /// Whole-call deadline of every store method, and of [`MongoStore::connect`] itself
    /// (default [`DEFAULT_CALL_TIMEOUT`]). Commits get this on top of their retry budget.
    pub call_timeout: Duration,
    /// Deadline of a health ping (default [`DEFAULT_PING_TIMEOUT`]).
    pub ping_timeout: Duration,
    /// How long a transaction (commit, hard delete, counter add) may keep retrying transient
    /// failures, write conflicts and unknown commit results (default
    /// [`DEFAULT_COMMIT_RETRY_BUDGET`]).
    pub commit_retry_budget: Duration,
}

impl MongoConfig {
    /// Settings with default pool and timeouts.
    pub fn new(uri: &str, database: &str) -> Self {
        Self {
            uri: MongoUri::new(uri),
            database: database.to_owned(),
            max_pool_size: None,
            connect_timeout: None,
            server_selection_timeout: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            commit_retry_budget: DEFAULT_COMMIT_RETRY_BUDGET,
        }
    }

    /// Sets [`MongoConfig::connect_timeout`].
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Sets [`MongoConfig::server_selection_timeout`].
    #[must_use]
    pub fn with_server_selection_timeout(mut self, timeout: Duration) -> Self {
        self.server_selection_timeout = Some(timeout);
        self
    }

    /// Sets [`MongoConfig::call_timeout`].
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sets [`MongoConfig::ping_timeout`].
    #[must_use]
    pub fn with_ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`MongoConfig::commit_retry_budget`].
    #[must_use]
    pub fn with_commit_retry_budget(mut self, budget: Duration) -> Self {
        self.commit_retry_budget = budget;
        self
    }

    /// The settings of a `mongo` metadata backend from the UDM configuration.
    pub fn from_backend(meta: &MetaBackend) -> Result<Self> {
        match meta {
            MetaBackend::Mongo { uri, database, max_pool_size, connect_timeout_ms, server_selection_timeout_ms } => {
                let mut cfg = Self::new(uri.expose(), database);
                cfg.uri = uri.clone();
                cfg.max_pool_size = *max_pool_size;
                cfg.connect_timeout = connect_timeout_ms.map(Duration::from_millis);
                cfg.server_selection_timeout = server_selection_timeout_ms.map(Duration::from_millis);
                Ok(cfg)
            }
            other => Err(Error::new(udm_core::ErrorKind::Config, format!("not a mongo backend: {other:?}"))),
        }
    }
}

/// MongoDB-backed metadata, queue and counter store. Cheap to clone (shares one client).
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    database: String,
    uri: String,
    call_timeout: Duration,
    ping_timeout: Duration,
    commit_retry_budget: Duration,
    /// Round trips made by version lookups ([`MongoStore::round_trips`]), shared by clones.
    round_trips: Arc<AtomicU64>,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore").field("uri", &self.uri).field("database", &self.database).finish()
    }
}

impl MongoStore {
    /// Connects, then creates UDM's base indexes (idempotent). Bounded by
    /// [`MongoConfig::call_timeout`] as a whole (an unreachable or silent server is a retryable
    /// `Unavailable`, never a hang).
    pub async fn connect(cfg: &MongoConfig) -> Result<Self> {
        cfg.uri.check()?;
        udm_core::config::check_mongo_database(&cfg.database)?;
        within("connect", cfg.call_timeout, async {
            let mut opts = ClientOptions::parse(cfg.uri.expose()).await.map_err(|e| classify("parsing the uri", e))?;
            opts.app_name = Some("udm".into());
            opts.max_pool_size = cfg.max_pool_size.or(opts.max_pool_size);
            opts.connect_timeout = cfg.connect_timeout.or(opts.connect_timeout).or(Some(DEFAULT_CONNECT_TIMEOUT));
            opts.server_selection_timeout =
                cfg.server_selection_timeout.or(opts.server_selection_timeout).or(Some(DEFAULT_CONNECT_TIMEOUT));
            let client = Client::with_options(opts).map_err(|e| classify("creating the client", e))?;
            let db = client.database_with_options(&cfg.database, database_options());
            let store = Self {
                client,
                db,
                database: cfg.database.clone(),
                uri: cfg.uri.redacted(),
                call_timeout: cfg.call_timeout,
                ping_timeout: cfg.ping_timeout,
                commit_retry_budget: cfg.commit_retry_budget,
                round_trips: Arc::default(),
            };
            store.create_indexes(&[]).await?;
            Ok(store)
        })
        .await
    }

    /// Runs one port call under the whole-call deadline.
    pub(crate) async fn bounded<T>(&self, op: &str, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        within(op, self.call_timeout, call).await
    }

    /// Runs one transactional port call: its retry budget plus one call deadline.
    pub(crate) async fn bounded_txn<T>(
        &self,
        op: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        within(op, self.commit_retry_budget.saturating_add(self.call_timeout), call).await
    }

    /// Database round trips made so far by this store's (and its clones') version lookups:
    /// `version`, `version_at`, `version_at_cv` and `history` (see the `lookup` module: each
    /// find is one round trip). For tests and diagnostics that check those lookups stay
    /// O(log n) point lookups.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    pub(crate) fn count_round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn commit_retry_budget(&self) -> Duration {
        self.commit_retry_budget
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    pub(crate) fn heads(&self) -> Collection<Document> {
        self.coll("udm_heads")
    }

    pub(crate) fn versions(&self) -> Collection<Document> {
        self.coll("udm_versions")
    }

    /// One document per collection (`_id` = its record prefix): its CV (`cv`) and its
    /// counters (`c.<name>`), so a commit moves both with one statement.
    pub(crate) fn cvs(&self) -> Collection<Document> {
        self.coll("udm_collections")
    }

    /// The same documents as [`MongoStore::cvs`].
    pub(crate) fn counters(&self) -> Collection<Document> {
        self.cvs()
    }

    /// The as-of index: one document per object (see the `asof` module).
    pub(crate) fn asof(&self) -> Collection<Document> {
        self.coll("udm_asof")
    }

    pub(crate) fn jobs(&self) -> Collection<Document> {
        self.coll("udm_jobs")
    }

    pub(crate) fn queue(&self) -> Collection<Document> {
        self.coll("udm_queue")
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the indexes UDM's queries rely on: the base indexes (heads by `{ctx, oid}` and
    /// `{ctx, deleted, oid}`, versions by `{obj, ov}` (unique), `{obj, at, ov}`, `{obj, cv}`,
    /// request ids `{req}` (unique), the queue's `{state, next_at, _id}`; `obj` is the object's
    /// record id, i.e. ctx + oid) and, for each of `indexed_props` (the indexed prop paths of the
    /// configured collections, any number of collections at once), `{ctx, deleted,
    /// sk.<prop>, oid}` on the heads: exactly the shape of a list that sorts by the prop (its
    /// sort key `sk.<prop>`, then `oid`), and of a list that filters the prop by equality and
    /// sorts by id. Idempotent (existing indexes are left alone); [`MongoStore::connect`] runs
    /// it with no props. Bounded by the call deadline.
    ///
    /// MongoDB allows 64 indexes per collection: with the two base head indexes that is 62
    /// distinct indexed prop paths over all collections of one database.
    pub async fn ensure_indexes(&self, indexed_props: &[String]) -> Result<()> {
        self.bounded("creating indexes", self.create_indexes(indexed_props)).await
    }

    async fn create_indexes(&self, indexed_props: &[String]) -> Result<()> {
        let ix = |keys: Document, unique: bool| {
            IndexModel::builder().keys(keys).options(IndexOptions::builder().unique(unique).build()).build()
        };
        let mut head_models =
            vec![ix(doc! {"ctx": 1, "oid": 1}, false), ix(doc! {"ctx": 1, "deleted": 1, "oid": 1}, false)];
        for p in indexed_props {
            let field = docs::sort_key_field(p)
                .ok_or_else(|| Error::validation("indexed_props", format!("{p:?} is not a valid prop path")))?;
            head_models.push(ix(doc! {"ctx": 1, "deleted": 1, field: 1, "oid": 1}, false));
        }
        let plan: [(Collection<Document>, Vec<IndexModel>); 3] = [
            (self.heads(), head_models),
            (
                self.versions(),
                vec![
                    ix(doc! {"obj": 1, "ov": 1}, true),
                    ix(doc! {"req": 1}, true),
                    // The shadow log's flusher reads a collection's versions by CV range.
                    ix(doc! {"ctx": 1, "cv": 1}, false),
                ],
            ),
            (self.queue(), vec![ix(doc! {"state": 1, "next_at": 1, "_id": 1}, false)]),
        ];
        for (coll, models) in plan {
            coll.create_indexes(models).await.map_err(|e| classify("creating indexes", e))?;
        }
        Ok(())
    }

    /// [`MongoStore::ensure_indexes`] for the indexed props of one collection's metadata map.
    pub async fn ensure_collection_indexes(&self, map: &udm_core::metamap::MetadataMap) -> Result<()> {
        let props: Vec<String> = map.indexed_props.iter().map(|p| p.path.clone()).collect();
        self.ensure_indexes(&props).await
    }

    /// Names of the indexes on the heads collection (diagnostics and tests).
    pub async fn head_index_names(&self) -> Result<Vec<String>> {
        self.bounded("listing indexes", async {
            self.heads().list_index_names().await.map_err(|e| classify("listing indexes", e))
        })
        .await
    }

    /// Pings the server and returns the round-trip time (health), within
    /// [`MongoConfig::ping_timeout`].
    pub async fn ping_latency(&self) -> Result<Duration> {
        within("ping", self.ping_timeout, async {
            let watch = Stopwatch::start();
            self.db.run_command(doc! {"ping": 1}).await.map_err(|e| classify("ping", e))?;
            Ok(watch.elapsed())
        })
        .await
    }

    /// Drops every UDM collection of this database (tests and dev resets only).
    pub async fn drop_all(&self) -> Result<()> {
        self.bounded("drop", async {
            for name in ["udm_heads", "udm_versions", "udm_asof", "udm_collections", "udm_jobs", "udm_queue"] {
                self.coll(name).drop().await.map_err(|e| classify("drop", e))?;
            }
            Ok(())
        })
        .await
    }
}

/// The write concern of every write and of the commit transaction: acknowledged by a majority
/// of the replica set and journaled (`w: "majority", j: true`), so an acknowledged commit
/// survives a primary failover and a crash on a real MongoDB replica set.
///
/// SecantusDB (the test server, a single-node replica set) accepts these options and
/// acknowledges after its own commit; `majority` of one node is that node. It does **not**
/// make them a durability guarantee: after `kill -9` it has forgotten acknowledged
/// transactions even with `w: majority, j: true` (see `BACKENDS.md`), so crash-durability
/// is not tested against it.
pub(crate) fn write_concern() -> WriteConcern {
    WriteConcern::builder().w(Acknowledgment::Majority).journal(true).build()
}

/// The read concern of reads outside transactions: `majority` (only data a majority has
/// acknowledged, so a read never sees a write that a failover could roll back). SecantusDB
/// accepts it; with one node it reads its latest committed state.
pub(crate) fn read_concern() -> ReadConcern {
    ReadConcern::majority()
}

/// The options of every UDM transaction (commit, hard delete, counter add): `snapshot` reads
/// (all reads of the transaction see one consistent point in time) and the majority +
/// journal [`write_concern`] on commit. SecantusDB runs transactions on WiredTiger snapshots
/// and accepts both; see [`write_concern`] for what it does not guarantee.
pub(crate) fn transaction_options() -> TransactionOptions {
    TransactionOptions::builder().read_concern(ReadConcern::snapshot()).write_concern(write_concern()).build()
}

/// Database-wide defaults: [`read_concern`] and [`write_concern`] for every operation outside
/// a transaction (the driver drops them inside one, where [`transaction_options`] apply).
fn database_options() -> DatabaseOptions {
    DatabaseOptions::builder().read_concern(read_concern()).write_concern(write_concern()).build()
}

#[cfg(test)]
mod tests {
    use mongodb::options::ReadConcernLevel;

    use super::*;

    #[test]
    fn durability_options() {
        let wc = write_concern();
        assert_eq!(wc.w, Some(Acknowledgment::Majority));
        assert_eq!(wc.journal, Some(true));
        let t = transaction_options();
        assert_eq!(t.read_concern.map(|r| r.level), Some(ReadConcernLevel::Snapshot));
        assert_eq!(t.write_concern, Some(write_concern()));
        let d = database_options();
        assert_eq!(d.read_concern.map(|r| r.level), Some(ReadConcernLevel::Majority));
        assert_eq!(d.write_concern, Some(write_concern()));
    }

    #[test]
    fn config_defaults_and_setters() {
        let c = MongoConfig::new("mongodb://127.0.0.1", "udm");
        assert_eq!((c.connect_timeout, c.server_selection_timeout), (None, None));
        assert_eq!(c.call_timeout, DEFAULT_CALL_TIMEOUT);
        assert_eq!(c.ping_timeout, DEFAULT_PING_TIMEOUT);
        assert_eq!(c.commit_retry_budget, Duration::from_secs(30));
        let ms = Duration::from_millis;
        let c = c
            .with_connect_timeout(ms(1))
            .with_server_selection_timeout(ms(2))
            .with_call_timeout(ms(3))
            .with_ping_timeout(ms(4))
            .with_commit_retry_budget(ms(5));
        assert_eq!(
            (c.connect_timeout, c.server_selection_timeout, c.call_timeout, c.ping_timeout, c.commit_retry_budget),
            (Some(ms(1)), Some(ms(2)), ms(3), ms(4), ms(5))
        );
    }
}
