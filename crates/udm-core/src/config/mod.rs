//! The full, typed UDM configuration.
//!
//! Loaded from TOML ([`Config::from_toml`]) or JSON ([`Config::from_json`]), optionally
//! overridden by environment pairs ([`Config::from_sources`]), then checked by
//! [`Config::validate`], which returns **every** problem with its field path. Unknown keys
//! are errors everywhere. Secrets ([`Secret`], [`MongoUri`]) never print.
//!
//! ```
//! use udm_core::config::Config;
//! let cfg = Config::from_toml(r#"
//!     [[backends]]
//!     name = "pair-a"
//!     meta = { kind = "mongo", uri = "mongodb://app:pw@127.0.0.1:27017", database = "udm" }
//!     blobs = { kind = "s3", region = "us-east-1", json_bucket = "udm-json",
//!               content_bucket = "udm-content" }
//! "#).unwrap();
//! cfg.validate().unwrap();
//! assert!(!format!("{cfg:?}").contains("pw"));
//! ```

mod env;
mod secret;
mod validate;

use serde::{Deserialize, Serialize};

pub use env::apply_env;
pub use secret::{MongoUri, REDACTED, Secret};

use crate::counters::CounterRuleConfig;
use crate::error::{Error, ErrorKind, Problem, Result};
use crate::metamap::{Base64Prop, IndexedProp, MetadataMap};
use crate::retention::RetentionPolicy;
use crate::retry::RetryPolicy;
use crate::validate::Limits;

/// Most backend pairs a deployment may have.
pub const MAX_BACKENDS: usize = 10;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// 1–10 backend pairs (metadata store + blob store each).
    pub backends: Vec<BackendPair>,
    /// Where counters live.
    #[serde(default)]
    pub counters: CountersConfig,
    /// How objects are spread over pairs.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Version retention.
    #[serde(default)]
    pub retention: RetentionPolicy,
    /// Per-collection metadata maps and counter rules.
    #[serde(default)]
    pub collections: Vec<CollectionConfig>,
    /// Dev shadows (full copies kept with heads).
    #[serde(default)]
    pub dev_shadow: DevShadowConfig,
    /// Hard delete switch.
    #[serde(default)]
    pub hard_delete: HardDeleteConfig,
    /// The persistent retry queue.
    #[serde(default)]
    pub fallback_queue: FallbackQueueConfig,
    /// Batching and debouncing of writes.
    #[serde(default)]
    pub write_optimization: WriteOptimizationConfig,
    /// Key prefix and inline-body threshold.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Document and id limits.
    #[serde(default)]
    pub limits: Limits,
    /// Deadlines of backend calls and time budgets of retry loops.
    #[serde(default)]
    pub deadlines: DeadlineConfig,
}

/// One backend pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendPair {
    /// Stable name (an identifier). Routing hashes it, so renaming a pair moves its keys.
    pub name: String,
    /// The metadata store.
    pub meta: MetaBackend,
    /// The blob store.
    pub blobs: BlobBackend,
}

/// Which metadata store a pair uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetaBackend {
    /// MongoDB (or a wire-compatible server).
    Mongo {
        /// Connection string (printed redacted).
        uri: MongoUri,
        /// Database holding UDM's collections.
        database: String,
        /// Connection pool size.
        #[serde(default)]
        max_pool_size: Option<u32>,
        /// Connect timeout, ms.
        #[serde(default)]
        connect_timeout_ms: Option<u64>,
        /// Server selection timeout, ms.
        #[serde(default)]
        server_selection_timeout_ms: Option<u64>,
    },
    /// The embedded file-backed store (zero setup).
    Embedded {
        /// Database file.
        path: String,
    },
    /// In memory (tests, examples): lost when the process ends.
    Memory,
    /// A kind provided by another crate (e.g. a PostgreSQL adapter), built by the factory
    /// registered for its `kind` with the facade — adding a backend kind changes nothing here.
    #[serde(untagged)]
    Custom(CustomBackend),
}

/// The settings of a backend kind UDM's core does not know: its `kind` and every other
/// field as given. The adapter that registers the kind parses and validates them.
///
/// `Debug` and serialization show the keys only, never the values (they may hold secrets).
#[derive(Clone, PartialEq, Deserialize)]
pub struct CustomBackend {
    /// The kind's name (an identifier; not one of the built-in kinds).
    pub kind: String,
    /// Every other field of the table.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// The kinds UDM's core knows: a table naming one of them that did not parse is an error,
/// not a custom kind.
pub const BUILTIN_KINDS: &[&str] = &["mongo", "embedded", "memory", "s3", "fs"];

/// Deserializes a backend table: a built-in `kind` strictly (unknown fields are errors, with
/// their names), any other kind as a [`CustomBackend`].
fn backend_table<'de, D, T>(
    d: D,
    builtin: impl FnOnce(serde_json::Value) -> std::result::Result<T, serde_json::Error>,
    custom: impl FnOnce(CustomBackend) -> T,
) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let v = serde_json::Value::deserialize(d)?;
    let kind = v.get("kind").and_then(serde_json::Value::as_str).map(str::to_owned);
    match kind {
        Some(k) if BUILTIN_KINDS.contains(&k.as_str()) => builtin(v).map_err(D::Error::custom),
        Some(_) => serde_json::from_value(v).map(custom).map_err(D::Error::custom),
        None => Err(D::Error::custom("missing field `kind`")),
    }
}

#[derive(Deserialize)]
#[serde(remote = "MetaBackend", tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code, reason = "a serde remote definition: only its Deserialize impl is used")]
enum MetaBackendDef {
    Mongo {
        uri: MongoUri,
        database: String,
        #[serde(default)]
        max_pool_size: Option<u32>,
        #[serde(default)]
        connect_timeout_ms: Option<u64>,
        #[serde(default)]
        server_selection_timeout_ms: Option<u64>,
    },
    Embedded {
        path: String,
    },
    Memory,
}

#[derive(Deserialize)]
#[serde(remote = "BlobBackend", tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code, reason = "a serde remote definition: only its Deserialize impl is used")]
enum BlobBackendDef {
    S3 {
        #[serde(default)]
        endpoint: Option<String>,
        region: String,
        #[serde(default)]
        access_key_id: Option<Secret>,
        #[serde(default)]
        secret_access_key: Option<Secret>,
        json_bucket: String,
        content_bucket: String,
        #[serde(default)]
        backups_bucket: Option<String>,
        #[serde(default)]
        path_style: bool,
        #[serde(default)]
        client: S3Client,
    },
    Fs {
        root: String,
    },
    Memory,
    Embedded {
        #[serde(default)]
        path: Option<String>,
    },
}

impl<'de> Deserialize<'de> for MetaBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        backend_table(d, MetaBackendDef::deserialize, MetaBackend::Custom)
    }
}

impl<'de> Deserialize<'de> for BlobBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        backend_table(d, BlobBackendDef::deserialize, BlobBackend::Custom)
    }
}

impl std::fmt::Debug for CustomBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomBackend")
            .field("kind", &self.kind)
            .field(
                "settings",
                &self.settings.keys().map(|k| (k, REDACTED)).collect::<std::collections::BTreeMap<_, _>>(),
            )
            .finish()
    }
}

impl Serialize for CustomBackend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.settings.len() + 1))?;
        m.serialize_entry("kind", &self.kind)?;
        for k in self.settings.keys() {
            m.serialize_entry(k, REDACTED)?;
        }
        m.end()
    }
}

/// Which S3 client implementation drives an `s3` blob backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum S3Client {
    /// The `object_store` crate.
    #[default]
    ObjectStore,
    /// The AWS SDK (presigning, bucket health, checksums).
    AwsSdk,
}

/// Which blob store a pair uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlobBackend {
    /// S3 or an S3-compatible server.
    S3 {
        /// Endpoint URL for S3-compatible servers (`None` = AWS).
        #[serde(default)]
        endpoint: Option<String>,
        /// Region.
        region: String,
        /// Access key id (printed redacted).
        #[serde(default)]
        access_key_id: Option<Secret>,
        /// Secret access key (printed redacted).
        #[serde(default)]
        secret_access_key: Option<Secret>,
        /// Bucket for snapshots and shadow indexes.
        json_bucket: String,
        /// Bucket for externalized content.
        content_bucket: String,
        /// Bucket for backups. Nothing writes backups yet: setting it is refused as
        /// [`ErrorKind::Unsupported`] by [`Config::validate`].
        #[serde(default)]
        backups_bucket: Option<String>,
        /// Path-style addressing (most S3-compatible servers need it).
        #[serde(default)]
        path_style: bool,
        /// Client implementation.
        #[serde(default)]
        client: S3Client,
    },
    /// A local directory.
    Fs {
        /// Root directory.
        root: String,
    },
    /// In memory (tests, examples).
    Memory,
    /// Packed in an embedded redb file, one row each: its own file with `path` (any metadata
    /// store; the zero-setup default keeps them in `dir/udm-blobs.redb`, so the metadata file
    /// can be lost and rebuilt from it), or without it the pair's embedded metadata file
    /// (needs `meta.kind = "embedded"`; a write then takes one fsync, not two: a snapshot's
    /// sync is left to its version's commit in the same file, see [`PutSync`](crate::ports::PutSync)).
    Embedded {
        /// The blob file; `None` = the pair's embedded metadata file.
        path: Option<String>,
    },
    /// A kind provided by another crate, built by the factory registered for its `kind`.
    #[serde(untagged)]
    Custom(CustomBackend),
}

/// Where counters live.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersConfig {
    /// A separate MongoDB for counters; `None` keeps them in each pair's metadata store,
    /// updated inside the version commit.
    #[serde(default)]
    pub mongo_uri: Option<MongoUri>,
    /// Database for a separate counters store.
    #[serde(default)]
    pub database: Option<String>,
}

/// Routing algorithm (only rendezvous hashing today).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingAlgorithm {
    /// Highest-random-weight (rendezvous) hashing.
    #[default]
    Rendezvous,
}

/// How objects are spread over pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Algorithm.
    pub algorithm: RoutingAlgorithm,
    /// Routing key template; placeholders `{tenant}`, `{db}`, `{collection}`, `{id}`.
    pub key_template: String,
}

/// The default routing key template.
pub const DEFAULT_KEY_TEMPLATE: &str = "{tenant}|{db}|{collection}:{id}";

impl Default for RoutingConfig {
    fn default() -> Self {
        Self { algorithm: RoutingAlgorithm::Rendezvous, key_template: DEFAULT_KEY_TEMPLATE.to_owned() }
    }
}

/// Metadata map and counter rules of one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Tenant it applies to (`None` = every tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Database name.
    pub db: String,
    /// Collection name.
    pub collection: String,
    /// Props copied into heads for queries.
    #[serde(default)]
    pub indexed_props: Vec<IndexedProp>,
    /// Props externalized as content objects.
    #[serde(default)]
    pub base64_props: Vec<Base64Prop>,
    /// Conditional totals.
    #[serde(default)]
    pub counter_rules: Vec<CounterRuleConfig>,
}

impl CollectionConfig {
    /// The collection's metadata map.
    pub fn metadata_map(&self) -> MetadataMap {
        MetadataMap { indexed_props: self.indexed_props.clone(), base64_props: self.base64_props.clone() }
    }
}

/// Dev shadows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevShadowConfig {
    /// Keep a full copy of each document with its head.
    pub enabled: bool,
    /// Shadows older than this are removed by shrink, seconds.
    pub ttl_secs: u64,
    /// Documents larger than this get no shadow, bytes.
    pub max_bytes: u64,
}

impl Default for DevShadowConfig {
    fn default() -> Self {
        Self { enabled: false, ttl_secs: 7 * 24 * 3600, max_bytes: 256 * 1024 }
    }
}

/// Hard delete switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HardDeleteConfig {
    /// Allow irreversible deletes (each call must still confirm).
    pub enabled: bool,
}

/// The fallback queue: writes that fail on a transient error are made durable in a local
/// spool before the call returns (the call then fails with `ErrorKind::Queued`), and a worker
/// replays them with backoff until they commit or go to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackQueueConfig {
    /// Queue writes that fail on transient errors (off by default).
    pub enabled: bool,
    /// The spool: a file (an embedded redb database, fsync'd on every change) on the writing
    /// process's own disk, so it survives an outage of the stores being written. Required
    /// when enabled (unless the application injects a queue store); one process at a time
    /// may open it.
    pub spool: Option<String>,
    /// Backoff and attempts.
    pub retry: RetryPolicy,
    /// How often the worker polls, ms.
    pub poll_interval_ms: u64,
    /// How long a claimed entry stays leased to one worker, ms.
    pub lease_ms: u64,
}

impl Default for FallbackQueueConfig {
    fn default() -> Self {
        Self { enabled: false, spool: None, retry: RetryPolicy::default(), poll_interval_ms: 1000, lease_ms: 30_000 }
    }
}

/// The write optimizer. Concurrent writes to one (pair, collection) always share metadata
/// transactions (group commit); with `enabled`, each group waits up to `batch_window_ms` to
/// fill to `max_batch` commits, and at most `max_concurrency` snapshot puts run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteOptimizationConfig {
    /// Turns on the batch window and the put limit (off by default).
    pub enabled: bool,
    /// How long a group commit waits to fill, ms.
    pub batch_window_ms: u64,
    /// Most commits in one group (at most 256).
    pub max_batch: usize,
    /// Most snapshot puts in flight.
    pub max_concurrency: usize,
    /// Counter debounce, ms: 0 = counters move in each commit; otherwise a commit carries no
    /// counter statements and its deltas are added in bulk every this many ms (and on
    /// shutdown). A crash loses the deltas not yet added; `Admin::recount` re-derives exact
    /// totals from the versions.
    pub counter_debounce_ms: u64,
    /// Skip dev shadows for documents over this many bytes (0 = never skip).
    pub skip_dev_shadow_over_bytes: u64,
}

impl Default for WriteOptimizationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            batch_window_ms: 5,
            max_batch: 64,
            max_concurrency: 16,
            counter_debounce_ms: 0,
            skip_dev_shadow_over_bytes: 0,
        }
    }
}

/// Key prefix and inline bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Prefix of every key in the buckets (an identifier), or none.
    pub key_prefix: Option<String>,
    /// Documents up to this size (canonical bytes) are also kept in the head, so reads of
    /// the latest version take one round trip. 0 disables.
    pub inline_max_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { key_prefix: None, inline_max_bytes: 16 * 1024 }
    }
}

/// Deadlines: no backend call and no retry loop may run unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlineConfig {
    /// Connecting to a backend (TCP + TLS + handshake), ms (default 5,000).
    pub connect_ms: u64,
    /// One backend call, whole (request, response, body), ms (default 30,000).
    pub call_ms: u64,
    /// One facade write including every retry of a lost optimistic race or a transient
    /// failure, ms (default 60,000). When it runs out the error says so and is retryable.
    pub write_budget_ms: u64,
    /// One health ping per pair, ms (default 5,000).
    pub health_ms: u64,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self { connect_ms: 5_000, call_ms: 30_000, write_budget_ms: 60_000, health_ms: 5_000 }
    }
}

impl Config {
    /// A one-pair configuration with in-memory stores (tests, examples).
    pub fn in_memory() -> Self {
        Self::single(BackendPair { name: "memory".into(), meta: MetaBackend::Memory, blobs: BlobBackend::Memory })
    }

    /// A one-pair configuration with every other section at its default.
    pub fn single(pair: BackendPair) -> Self {
        Self {
            backends: vec![pair],
            counters: CountersConfig::default(),
            routing: RoutingConfig::default(),
            retention: RetentionPolicy::default(),
            collections: Vec::new(),
            dev_shadow: DevShadowConfig::default(),
            hard_delete: HardDeleteConfig::default(),
            fallback_queue: FallbackQueueConfig::default(),
            write_optimization: WriteOptimizationConfig::default(),
            storage: StorageConfig::default(),
            limits: Limits::default(),
            deadlines: DeadlineConfig::default(),
        }
    }

    /// Parses TOML. Syntax errors, wrong types and unknown keys are [`ErrorKind::Config`].
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| config_error(e.message(), e.span().map(|s| line_of(text, s.start))))
    }

    /// Parses JSON. Syntax errors, wrong types and unknown keys are [`ErrorKind::Config`].
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| config_error(&e.to_string(), None))
    }

    /// Builds a configuration from an optional TOML document overridden by environment
    /// pairs (see [`apply_env`]), then validates it.
    pub fn from_sources(toml_text: Option<&str>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let base = match toml_text {
            Some(t) => {
                let v: toml::Value =
                    toml::from_str(t).map_err(|e| config_error(e.message(), e.span().map(|s| line_of(t, s.start))))?;
                serde_json::to_value(v).map_err(|e| config_error(&e.to_string(), None))?
            }
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        let merged = apply_env(base, "UDM", env)?;
        let cfg: Config = serde_json::from_value(merged).map_err(|e| config_error(&e.to_string(), None))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every problem in the configuration, with field paths; `Ok` if there are none.
    ///
    /// Malformed values are [`ErrorKind::Config`]. Well-formed values that would do nothing
    /// because the feature behind them does not exist yet (a separate counters store,
    /// retention, backups, the fallback queue, write batching) are
    /// [`ErrorKind::Unsupported`], so a configuration never silently promises more than it does.
    pub fn validate(&self) -> Result<()> {
        let problems = validate::problems(self);
        if !problems.is_empty() {
            return Err(Error::invalid(ErrorKind::Config, problems));
        }
        let unsupported = validate::unsupported(self);
        if unsupported.is_empty() { Ok(()) } else { Err(Error::invalid(ErrorKind::Unsupported, unsupported)) }
    }

    /// The collection config that applies to (`tenant`, `db`, `collection`): an entry naming
    /// the tenant wins over one that applies to every tenant.
    pub fn collection(&self, tenant: &str, db: &str, collection: &str) -> Option<&CollectionConfig> {
        self.collection_index(tenant, db, collection).map(|i| &self.collections[i])
    }

    /// The index in `collections` of the entry [`Config::collection`] returns.
    pub fn collection_index(&self, tenant: &str, db: &str, collection: &str) -> Option<usize> {
        let matching = |c: &CollectionConfig| c.db == db && c.collection == collection;
        let entries = || self.collections.iter().enumerate().filter(|(_, c)| matching(c));
        entries()
            .find(|(_, c)| c.tenant.as_deref() == Some(tenant))
            .or_else(|| entries().find(|(_, c)| c.tenant.is_none()))
            .map(|(i, _)| i)
    }
}

/// Checks a MongoDB database name (1–63 of letters, digits, `_`, `-`).
pub fn check_mongo_database(name: &str) -> Result<()> {
    match validate::mongo_db_problem(name) {
        Some(m) => Err(Error::invalid(ErrorKind::Config, vec![Problem::new("database", m)])),
        None => Ok(()),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn config_error(message: &str, line: Option<usize>) -> Error {
    let path = line.map(|l| format!("line {l}")).unwrap_or_default();
    Error::invalid(ErrorKind::Config, vec![Problem::new(path, message.trim())])
}
