//! # udm-mongo — UDM's metadata, queue and counter stores on MongoDB
//!
//! [`MongoStore`] implements [`MetaStore`](udm_core::ports::MetaStore),
//! [`QueueStore`](udm_core::ports::QueueStore) and
//! [`CounterStore`](udm_core::ports::CounterStore) on the official `mongodb` driver. A version
//! commit is **one multi-document transaction** (request-id check, head compare-and-set, CV
//! increment, version insert — which also records the request —, head replace, one counter
//! `$inc` per collection), retried as the
//! driver documents on `TransientTransactionError` (including write conflicts between racing
//! writers) and `UnknownTransactionCommitResult`. Transactions need a replica set (a
//! single-node one is enough).
//!
//! Collections (in the configured database), created with their indexes on connect:
//! `udm_heads`, `udm_versions` (also the request records: unique `req`), `udm_cvs`,
//! `udm_counters` (one document per collection), `udm_jobs`, `udm_queue`. Record ids come from [`udm_core::layout`].
//!
//! ```no_run
//! # async fn demo() -> udm_core::Result<()> {
//! use udm_mongo::{MongoConfig, MongoStore};
//! let store = MongoStore::connect(&MongoConfig::new("mongodb://127.0.0.1:27017/?directConnection=true", "udm")).await?;
//! store.ping_latency().await?;
//! # Ok(()) }
//! ```

mod docs;
mod error;
mod meta;
mod queue;

use std::fmt;
use std::time::{Duration, Instant};

use bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use udm_core::config::{MetaBackend, MongoUri};
use udm_core::{Error, Result};

use crate::error::classify;

/// Connection settings of one MongoDB metadata store.
#[derive(Clone, Debug)]
pub struct MongoConfig {
    /// Connection string (printed redacted).
    pub uri: MongoUri,
    /// Database holding UDM's collections.
    pub database: String,
    /// Connection pool size.
    pub max_pool_size: Option<u32>,
    /// Connect timeout.
    pub connect_timeout: Option<Duration>,
    /// Server selection timeout (how long an operation waits for a reachable server).
    pub server_selection_timeout: Option<Duration>,
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
        }
    }

    /// The settings of a `mongo` metadata backend from the UDM configuration.
    pub fn from_backend(meta: &MetaBackend) -> Result<Self> {
        match meta {
            MetaBackend::Mongo { uri, database, max_pool_size, connect_timeout_ms, server_selection_timeout_ms } => {
                Ok(Self {
                    uri: uri.clone(),
                    database: database.clone(),
                    max_pool_size: *max_pool_size,
                    connect_timeout: connect_timeout_ms.map(Duration::from_millis),
                    server_selection_timeout: server_selection_timeout_ms.map(Duration::from_millis),
                })
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
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore").field("uri", &self.uri).field("database", &self.database).finish()
    }
}

impl MongoStore {
    /// Connects, then creates UDM's collections' indexes (idempotent).
    pub async fn connect(cfg: &MongoConfig) -> Result<Self> {
        cfg.uri.check()?;
        udm_core::config::check_mongo_database(&cfg.database)?;
        let mut opts = ClientOptions::parse(cfg.uri.expose()).await.map_err(|e| classify("parsing the uri", e))?;
        opts.app_name = Some("udm".into());
        opts.max_pool_size = cfg.max_pool_size.or(opts.max_pool_size);
        opts.connect_timeout = cfg.connect_timeout.or(opts.connect_timeout);
        opts.server_selection_timeout = cfg.server_selection_timeout.or(opts.server_selection_timeout);
        let client = Client::with_options(opts).map_err(|e| classify("creating the client", e))?;
        let db = client.database(&cfg.database);
        let store = Self { client, db, database: cfg.database.clone(), uri: cfg.uri.redacted() };
        store.ensure_indexes().await?;
        Ok(store)
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

    pub(crate) fn cvs(&self) -> Collection<Document> {
        self.coll("udm_cvs")
    }

    pub(crate) fn counters(&self) -> Collection<Document> {
        self.coll("udm_counters")
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

    /// Creates every index UDM queries rely on (idempotent; run by [`MongoStore::connect`]).
    pub async fn ensure_indexes(&self) -> Result<()> {
        let ix = |keys: Document, unique: bool| {
            IndexModel::builder().keys(keys).options(IndexOptions::builder().unique(unique).build()).build()
        };
        let plan: [(Collection<Document>, Vec<IndexModel>); 3] = [
            (
                self.heads(),
                vec![ix(doc! {"ctx": 1, "oid": 1}, false), ix(doc! {"ctx": 1, "deleted": 1, "oid": 1}, false)],
            ),
            (
                self.versions(),
                vec![
                    ix(doc! {"obj": 1, "ov": 1}, true),
                    ix(doc! {"req": 1}, true),
                    ix(doc! {"obj": 1, "at": 1, "ov": 1}, false),
                    ix(doc! {"obj": 1, "cv": 1}, false),
                ],
            ),
            (self.queue(), vec![ix(doc! {"state": 1, "next_at": 1, "_id": 1}, false)]),
        ];
        for (coll, models) in plan {
            coll.create_indexes(models).await.map_err(|e| classify("creating indexes", e))?;
        }
        Ok(())
    }

    /// Creates one index per indexed prop of a collection's metadata map (`{ctx, idx.<path>}`),
    /// so list filters and sorts on those props are index-backed. Idempotent.
    pub async fn ensure_collection_indexes(&self, map: &udm_core::metamap::MetadataMap) -> Result<()> {
        let models: Vec<IndexModel> = map
            .indexed_props
            .iter()
            .map(|p| IndexModel::builder().keys(doc! {"ctx": 1, format!("idx.{}", p.path): 1}).build())
            .collect();
        if models.is_empty() {
            return Ok(());
        }
        self.heads().create_indexes(models).await.map_err(|e| classify("creating collection indexes", e))?;
        Ok(())
    }

    /// Names of the indexes on the heads collection (diagnostics and tests).
    pub async fn head_index_names(&self) -> Result<Vec<String>> {
        self.heads().list_index_names().await.map_err(|e| classify("listing indexes", e))
    }

    /// Pings the server and returns the round-trip time (health).
    pub async fn ping_latency(&self) -> Result<Duration> {
        let start = Instant::now();
        self.db.run_command(doc! {"ping": 1}).await.map_err(|e| classify("ping", e))?;
        Ok(start.elapsed())
    }

    /// Drops every UDM collection of this database (tests and dev resets only).
    pub async fn drop_all(&self) -> Result<()> {
        for name in ["udm_heads", "udm_versions", "udm_cvs", "udm_counters", "udm_jobs", "udm_queue"] {
            self.coll(name).drop().await.map_err(|e| classify("drop", e))?;
        }
        Ok(())
    }
}
