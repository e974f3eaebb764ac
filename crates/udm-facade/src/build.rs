//! Building pairs from configuration (adapters chosen by cargo features).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use udm_core::config::{BlobBackend, Config, CustomBackend, DeadlineConfig, MetaBackend, S3Client};
use udm_core::ports::{BlobStore, CounterStore, MetaStore};
use udm_core::{Error, ErrorKind, Result};
use udm_memory::{MemoryBlobs, MemoryMeta};

use crate::{Pair, Udm};

/// The error for a configured backend whose cargo feature is off.
#[allow(dead_code, reason = "unused when every backend feature is on")]
fn missing_feature(what: &str, feature: &str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("{what} needs udm-facade's `{feature}` feature"))
}

/// A pair with in-memory stores.
pub(crate) fn in_memory_pair(name: &str) -> Result<Pair> {
    let meta = Arc::new(MemoryMeta::new());
    Ok(Pair {
        name: name.to_owned(),
        meta: meta.clone(),
        counters: meta,
        json: Arc::new(MemoryBlobs::new()),
        content: Arc::new(MemoryBlobs::new()),
        describe: "memory".into(),
    })
}

type MetaPorts = (Arc<dyn MetaStore>, Arc<dyn CounterStore>, String);

/// What a backend factory returns: a boxed future, so factories of any adapter crate fit.
pub type BackendFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// Builds a pair's metadata store and counter store from a custom backend table.
pub type MetaFactory =
    Arc<dyn Fn(&CustomBackend) -> BackendFuture<(Arc<dyn MetaStore>, Arc<dyn CounterStore>)> + Send + Sync>;

/// Builds a pair's snapshot and content blob stores from a custom backend table.
pub type BlobFactory =
    Arc<dyn Fn(&CustomBackend) -> BackendFuture<(Arc<dyn BlobStore>, Arc<dyn BlobStore>)> + Send + Sync>;

/// Backend kinds provided by other crates, by `kind` name: how a new adapter (e.g.
/// PostgreSQL) plugs in without a change to `udm-core` or this crate.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use udm_core::config::Config;
/// use udm_facade::{Backends, Udm};
///
/// let backends = Backends::new().meta("my-kv", |table| {
///     let shards = table.settings.get("shards").and_then(|v| v.as_u64()).unwrap_or(1);
///     Box::pin(async move {
///         assert_eq!(shards, 4);
///         let store = Arc::new(udm_memory::MemoryMeta::new()); // a real adapter connects here
///         Ok((store.clone() as _, store as _))
///     })
/// });
/// let cfg = Config::from_toml(r#"
///     [[backends]]
///     name = "a"
///     meta = { kind = "my-kv", shards = 4 }
///     blobs = { kind = "memory" }
/// "#)?;
/// let udm = Udm::from_config_with(cfg, &backends).await?;
/// assert!(udm.admin().backends()[0].describe.contains("my-kv"));
/// # Ok::<(), udm_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct Backends {
    meta: BTreeMap<String, MetaFactory>,
    blobs: BTreeMap<String, BlobFactory>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("meta", &self.meta.keys().collect::<Vec<_>>())
            .field("blobs", &self.blobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Backends {
    /// No custom kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the metadata store kind `kind`.
    pub fn meta(
        mut self,
        kind: &str,
        factory: impl Fn(&CustomBackend) -> BackendFuture<(Arc<dyn MetaStore>, Arc<dyn CounterStore>)>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.meta.insert(kind.to_owned(), Arc::new(factory));
        self
    }

    /// Registers the blob store kind `kind` (the factory returns the snapshot store and the
    /// content store).
    pub fn blobs(
        mut self,
        kind: &str,
        factory: impl Fn(&CustomBackend) -> BackendFuture<(Arc<dyn BlobStore>, Arc<dyn BlobStore>)> + Send + Sync + 'static,
    ) -> Self {
        self.blobs.insert(kind.to_owned(), Arc::new(factory));
        self
    }
}

fn unregistered(what: &str, kind: &str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("no {what} kind {kind:?} is registered (Backends::{what})"))
}

/// The embedded store a pair's metadata opened, for blobs kept in the same file.
#[cfg(feature = "embedded")]
type EmbeddedHandle = Option<udm_embedded::EmbeddedStore>;
#[cfg(not(feature = "embedded"))]
type EmbeddedHandle = Option<std::convert::Infallible>;

async fn meta_store(m: &MetaBackend, config: &Config, custom: &Backends) -> Result<(MetaPorts, EmbeddedHandle)> {
    #[cfg(feature = "embedded")]
    if let MetaBackend::Embedded { path } = m {
        let s = udm_embedded::EmbeddedStore::open(std::path::Path::new(path))?;
        let shared = Arc::new(s.clone());
        return Ok(((shared.clone(), shared, format!("embedded:{path}")), Some(s)));
    }
    Ok((meta_ports(m, config, custom).await?, None))
}

async fn meta_ports(m: &MetaBackend, config: &Config, custom: &Backends) -> Result<MetaPorts> {
    let _ = config;
    match m {
        MetaBackend::Custom(c) => match custom.meta.get(&c.kind) {
            Some(factory) => {
                let (meta, counters) = factory(c).await?;
                Ok((meta, counters, c.kind.clone()))
            }
            #[cfg(feature = "postgres")]
            None if c.kind == "postgres" => postgres_ports(c, config).await,
            #[cfg(not(feature = "postgres"))]
            None if c.kind == "postgres" => Err(missing_feature("a postgres metadata store", "postgres")),
            None => Err(unregistered("meta", &c.kind)),
        },
        MetaBackend::Memory => {
            let s = Arc::new(MemoryMeta::new());
            Ok((s.clone(), s, "memory".into()))
        }
        // Opened by `meta_store` when the feature is on.
        MetaBackend::Embedded { .. } => Err(missing_feature("an embedded metadata store", "embedded")),
        #[cfg(feature = "mongo")]
        MetaBackend::Mongo { uri, database, .. } => {
            let d = &config.deadlines;
            let cfg = udm_mongo::MongoConfig::from_backend(m)?
                .with_call_timeout(std::time::Duration::from_millis(d.call_ms))
                .with_ping_timeout(std::time::Duration::from_millis(d.health_ms));
            let s = Arc::new(udm_mongo::MongoStore::connect(&cfg).await?);
            // Indexes that serve exactly the list queries the adapter issues, at startup.
            let props: Vec<String> =
                config.collections.iter().flat_map(|c| c.indexed_props.iter().map(|p| p.path.clone())).collect();
            s.ensure_indexes(&props).await?;
            Ok((s.clone(), s, format!("mongo:{}/{database}", uri.redacted())))
        }
        #[cfg(not(feature = "mongo"))]
        MetaBackend::Mongo { .. } => Err(missing_feature("a mongo metadata store", "mongo")),
    }
}

/// `meta = { kind = "postgres", url = "postgres://…", schema = "udm", pool = 8, timeout_ms = … }`
/// (`timeout_ms` defaults to `deadlines.call_ms`).
#[cfg(feature = "postgres")]
async fn postgres_ports(c: &CustomBackend, config: &Config) -> Result<MetaPorts> {
    let setting = |name: &str| c.settings.get(name);
    let bad =
        |name: &str, what: &str| Error::new(ErrorKind::Config, format!("meta.{name} of kind \"postgres\": {what}"));
    let url = setting("url")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad("url", "a postgres:// URL is required"))?;
    let mut cfg =
        udm_postgres::PostgresConfig::new(url).with_timeout(std::time::Duration::from_millis(config.deadlines.call_ms));
    for (name, value) in &c.settings {
        match (name.as_str(), value) {
            ("url", _) => {}
            ("schema", serde_json::Value::String(s)) => cfg = cfg.with_schema(s),
            ("pool", v) => {
                let n = v.as_u64().filter(|n| (1..=1024).contains(n)).ok_or_else(|| bad("pool", "must be 1..=1024"))?;
                cfg = cfg.with_pool_size(n as usize);
            }
            ("timeout_ms", v) => {
                let ms =
                    v.as_u64().filter(|n| *n > 0).ok_or_else(|| bad("timeout_ms", "must be a positive integer"))?;
                cfg = cfg.with_timeout(std::time::Duration::from_millis(ms));
            }
            (other, _) => return Err(bad(other, "unknown or mistyped setting (url, schema, pool, timeout_ms)")),
        }
    }
    let describe = format!("postgres:{}#{}", cfg.redacted_url(), cfg.schema);
    let s = Arc::new(udm_postgres::PostgresStore::connect(&cfg).await?);
    Ok((s.clone(), s, describe))
}

type BlobPorts = (Arc<dyn BlobStore>, Arc<dyn BlobStore>, String);

async fn blob_stores(
    b: &BlobBackend,
    deadlines: &DeadlineConfig,
    custom: &Backends,
    embedded: &EmbeddedHandle,
) -> Result<BlobPorts> {
    let _ = deadlines;
    match b {
        BlobBackend::Embedded { path: None } => embedded_blobs(embedded),
        BlobBackend::Embedded { path: Some(path) } => blob_file(std::path::Path::new(path), embedded),
        BlobBackend::Custom(c) => {
            let factory = custom.blobs.get(&c.kind).ok_or_else(|| unregistered("blobs", &c.kind))?;
            let (json, content) = factory(c).await?;
            Ok((json, content, c.kind.clone()))
        }
        BlobBackend::Memory => Ok((Arc::new(MemoryBlobs::new()), Arc::new(MemoryBlobs::new()), "memory".into())),
        #[cfg(feature = "fs")]
        BlobBackend::Fs { root } => {
            let root = std::path::Path::new(root);
            let json = udm_s3::LocalBlobs::open(&root.join("json"))?;
            let content = udm_s3::LocalBlobs::open(&root.join("content"))?;
            Ok((Arc::new(json), Arc::new(content), format!("fs:{}", root.display())))
        }
        #[cfg(not(feature = "fs"))]
        BlobBackend::Fs { .. } => Err(missing_feature("a local-directory blob store", "fs")),
        BlobBackend::S3 { json_bucket, content_bucket, client, endpoint, .. } => {
            let describe = format!("s3:{}:{json_bucket},{content_bucket}", endpoint.as_deref().unwrap_or("aws"));
            s3_stores(b, *client, json_bucket, content_bucket, deadlines).map(|(j, c)| (j, c, describe))
        }
    }
}

/// Blobs in the pair's embedded metadata file (validation made sure the metadata is embedded).
#[cfg(feature = "embedded")]
fn embedded_blobs(embedded: &EmbeddedHandle) -> Result<BlobPorts> {
    let s = embedded.as_ref().ok_or_else(|| {
        Error::new(ErrorKind::Config, "blobs kind \"embedded\" needs meta kind \"embedded\" in the same pair")
    })?;
    let describe = format!("embedded blobs:{}", s.path().display());
    Ok((Arc::new(s.blobs_sharing_commits("json")?), Arc::new(s.blobs_sharing_commits("content")?), describe))
}

#[cfg(not(feature = "embedded"))]
fn embedded_blobs(_: &EmbeddedHandle) -> Result<BlobPorts> {
    Err(missing_feature("blobs in the embedded store", "embedded"))
}

/// Blobs in a redb file of their own. With an embedded metadata store in another file, the
/// puts made before a metadata commit are staged there (one fsync per write; see
/// [`udm_embedded::EmbeddedStore::blobs_staged_in`]).
#[cfg(feature = "embedded")]
fn blob_file(path: &std::path::Path, embedded: &EmbeddedHandle) -> Result<BlobPorts> {
    let s = udm_embedded::EmbeddedStore::open(path)?;
    let describe = format!("embedded blobs:{}", path.display());
    match embedded.as_ref().filter(|m| m.path() != s.path()) {
        Some(m) => Ok((Arc::new(s.blobs_staged_in("json", m)?), Arc::new(s.blobs_staged_in("content", m)?), describe)),
        None => Ok((Arc::new(s.blobs("json")?), Arc::new(s.blobs("content")?), describe)),
    }
}

#[cfg(not(feature = "embedded"))]
fn blob_file(_: &std::path::Path, _: &EmbeddedHandle) -> Result<BlobPorts> {
    Err(missing_feature("blobs in an embedded file", "embedded"))
}

#[allow(unused_variables, reason = "which arguments are used depends on the S3 features")]
fn s3_stores(
    b: &BlobBackend,
    client: S3Client,
    json_bucket: &str,
    content_bucket: &str,
    deadlines: &DeadlineConfig,
) -> Result<(Arc<dyn BlobStore>, Arc<dyn BlobStore>)> {
    #[cfg(any(feature = "s3", feature = "aws-sdk"))]
    let s = udm_s3::S3Settings::from_backend(b)?.with_timeouts(
        std::time::Duration::from_millis(deadlines.connect_ms),
        std::time::Duration::from_millis(deadlines.call_ms),
    );
    match client {
        #[cfg(feature = "aws-sdk")]
        S3Client::AwsSdk => Ok((
            Arc::new(udm_s3::AwsS3Blobs::new(&s, json_bucket)),
            Arc::new(udm_s3::AwsS3Blobs::new(&s, content_bucket)),
        )),
        #[cfg(not(feature = "aws-sdk"))]
        S3Client::AwsSdk => Err(missing_feature("an S3 blob store on the AWS SDK", "aws-sdk")),
        #[cfg(feature = "s3")]
        S3Client::ObjectStore => Ok((
            Arc::new(udm_s3::ObjectStoreBlobs::s3(&s, json_bucket)?),
            Arc::new(udm_s3::ObjectStoreBlobs::s3(&s, content_bucket)?),
        )),
        #[cfg(not(feature = "s3"))]
        S3Client::ObjectStore => Err(missing_feature("an S3 blob store on object_store", "s3")),
    }
}

impl Udm {
    /// Validates `config` and connects every pair it describes.
    pub async fn from_config(config: Config) -> Result<Self> {
        Self::builder_from_config(config).await?.build()
    }

    /// Like [`Udm::from_config`], with backend kinds provided by other crates.
    pub async fn from_config_with(config: Config, backends: &Backends) -> Result<Self> {
        Self::builder_from_config_with(config, backends).await?.build()
    }

    /// Like [`Udm::from_config`], but returns the builder so a clock or id generator can be
    /// injected before [`UdmBuilder::build`](crate::UdmBuilder::build).
    pub async fn builder_from_config(config: Config) -> Result<crate::UdmBuilder> {
        Self::builder_from_config_with(config, &Backends::new()).await
    }

    /// [`Udm::builder_from_config`] with backend kinds provided by other crates.
    pub async fn builder_from_config_with(config: Config, backends: &Backends) -> Result<crate::UdmBuilder> {
        config.validate()?;
        let mut builder = Udm::builder();
        for b in &config.backends {
            let ((meta, counters, m), embedded) = meta_store(&b.meta, &config, backends).await?;
            let (json, content, j) = blob_stores(&b.blobs, &config.deadlines, backends, &embedded).await?;
            builder = builder.pair(Pair {
                name: b.name.clone(),
                meta,
                counters,
                json,
                content,
                describe: format!("{m} + {j}"),
            });
        }
        Ok(builder.config(config))
    }

    /// The spool of the fallback queue `config` describes, opened directly (for operator
    /// tools: no `Udm`, so no worker replays anything). `Config` error if it names none.
    pub fn open_queue(config: &udm_core::config::FallbackQueueConfig) -> Result<Arc<dyn udm_core::ports::QueueStore>> {
        crate::open_spool(config)
    }

    /// The spool file the zero-setup default in `dir` uses when its fallback queue is on:
    /// `dir/udm-queue.redb`, next to `dir/udm.redb`.
    pub fn embedded_spool(dir: &std::path::Path) -> std::path::PathBuf {
        dir.join("udm-queue.redb")
    }

    /// The zero-setup default: two embedded redb files — `dir/udm.redb` holding the metadata,
    /// `dir/udm-blobs.redb` the snapshots, commit log and content (packed, one row each), so
    /// a lost metadata file is rebuilt from the blob file (`udm rebuild --dir DIR`). The
    /// directory is created.
    #[cfg(feature = "embedded")]
    pub async fn embedded(dir: &std::path::Path) -> Result<Self> {
        Self::from_config(Self::embedded_config(dir)).await
    }

    /// The config [`Udm::embedded`] uses for `dir` (to adjust, e.g. a retention policy,
    /// before [`Udm::from_config`]).
    #[cfg(feature = "embedded")]
    pub fn embedded_config(dir: &std::path::Path) -> Config {
        let pair = udm_core::config::BackendPair {
            name: "local".into(),
            meta: MetaBackend::Embedded { path: dir.join("udm.redb").display().to_string() },
            blobs: BlobBackend::Embedded { path: Some(dir.join("udm-blobs.redb").display().to_string()) },
        };
        Config::single(pair)
    }
}
