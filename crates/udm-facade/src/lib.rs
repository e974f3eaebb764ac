//! # udm-facade — the UDM API
//!
//! Versioned JSON documents: every write is an immutable new version, kept as a checksummed
//! snapshot in a blob store and indexed in a metadata store, spread over 1–10 backend pairs by
//! rendezvous hashing. Read any object as it was at any version, instant or collection version;
//! restore objects or whole collections (append-only); enrich by deep merge with provenance.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> udm_core::Result<()> {
//! use serde_json::json;
//! use udm_core::RouteContext;
//! use udm_facade::{Udm, WriteOpts, ReadOpts};
//!
//! let udm = Udm::in_memory()?;
//! let users = udm.with(RouteContext::new("acme", "crm", "users")?);
//! let v1 = users.create(json!({"name": "Ada", "tags": ["math"]}), WriteOpts::id("u-1").actor("alice")).await?;
//! let v2 = users.update("u-1", json!({"name": "Ada Lovelace", "tags": ["math"]}), Some(v1.ov), WriteOpts::default()).await?;
//! assert_eq!(v2.ov.get(), 2);
//! // The past stays readable.
//! let old = users.get_version("u-1", v1.ov, ReadOpts::default()).await?;
//! assert_eq!(old.data["name"], "Ada");
//! // Restore appends a new version with the old data.
//! users.restore_object("u-1", udm_facade::Target::Ov(v1.ov), WriteOpts::default()).await?;
//! assert_eq!(users.get_latest("u-1", ReadOpts::default()).await?.data["name"], "Ada");
//! # Ok(()) }
//! ```
//!
//! Semantics (exact, and tested): see the crate's `ops` docs — time is monotonic per object;
//! `as_of(t)` is inclusive; CV order is commit order; deleted objects are hidden from
//! `get_latest`/`list` unless asked; restore never rewrites history; request ids make every
//! write idempotent; optimistic locking names the current OV; snapshots are verified on every
//! read.

mod admin;
mod build;
mod commit;
mod counting;
mod drift;
mod gc;
mod index;
mod locks;
mod observe;
mod ops;
mod options;
mod queue;
mod read;
mod rebuild;
mod record;
mod recover;
mod restore;
mod retention;
mod runtime;
mod shadow;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use udm_core::config::{CollectionConfig, Config};
use udm_core::counters::CounterRule;
use udm_core::layout::Layout;
use udm_core::metamap::MetadataMap;
use udm_core::ports::{BlobStore, Clock, CounterStore, IdGenerator, MetaStore, QueueStore, UlidGenerator};
use udm_core::{Error, ErrorKind, Name, ObjectKey, Result, RouteContext};
use udm_router::Router;

pub use admin::{Admin, BackendInfo, Counters, HealthReport, PairHealth, ShutdownReport, Stats};
pub use build::{BackendFuture, Backends, BlobFactory, MetaFactory};
pub use drift::{ActualState, DriftEvent, DriftFinding, DriftOptions, DriftScope, DriftTotals};
pub use gc::{GcEvent, GcReport};
pub use index::{INDEX_CACHE_BYTES, INDEX_CONCURRENCY};
pub use ops::{
    BATCH_WRITE_CONCURRENCY, Collection, Confirm, ContentMode, EnrichOpts, ListQuery, ReadOpts, ReadSource, Target,
    WriteItem, WriteOpts,
};
pub use queue::{QUEUE_REPLAY_CONCURRENCY, RequestState};
pub use read::LIST_FETCH_CONCURRENCY;
pub use rebuild::{ExportReport, REBUILD_BATCH, RebuildProgress, RebuildReport};
pub use record::{FailedItem, HardDeleteReport, ListPage, Record, RestoreOutcome, Written};
pub use recover::{RecoverEvent, RecoverMode, RecoverOptions, RecoverPoint, RecoverReport};
pub use restore::{CollectionRestoreReport, CollectionTarget, RestoreProgress};
pub use retention::{RetentionEvent, RetentionReport};
pub use runtime::{OsEntropy, SystemClock};
pub use shadow::{FLUSH_BATCH, FLUSH_DELAY, FlushReport};

/// One backend pair: a metadata store (with its counters) and the blob stores for snapshots
/// and externalized content.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The pair's name (routing hashes it).
    pub name: String,
    /// Heads, versions, CVs, request ids.
    pub meta: Arc<dyn MetaStore>,
    /// Counters (usually the same store as `meta`).
    pub counters: Arc<dyn CounterStore>,
    /// Snapshot envelopes.
    pub json: Arc<dyn BlobStore>,
    /// Externalized binary content.
    pub content: Arc<dyn BlobStore>,
    /// How to describe it to operators (no secrets).
    pub describe: String,
}

/// What a collection's config compiles to.
#[derive(Debug, Clone, Default)]
pub(crate) struct CollectionRuntime {
    pub(crate) map: MetadataMap,
    pub(crate) rules: Vec<CounterRule>,
}

pub(crate) struct Inner {
    pub(crate) pairs: Vec<Pair>,
    pub(crate) router: Router,
    pub(crate) layout: Layout,
    pub(crate) config: Config,
    collections: Vec<CollectionRuntime>,
    /// What applies to collections without a config entry.
    no_collection: CollectionRuntime,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: Arc<dyn IdGenerator>,
    pub(crate) stats: Arc<admin::StatCounters>,
    pub(crate) committer: commit::Committer,
    pub(crate) closed: AtomicBool,
    /// Writes past the open check hold a read guard; shutdown takes the write guard.
    pub(crate) in_flight: tokio::sync::RwLock<()>,
    /// With the write optimizer on: bounds the snapshot puts in flight.
    pub(crate) put_permits: Option<tokio::sync::Semaphore>,
    /// Debounced counter deltas, when `counter_debounce_ms` > 0.
    pub(crate) counter_buffer: Option<Arc<counting::CounterBuffer>>,
    /// The fallback queue, when enabled.
    pub(crate) fallback: Option<Arc<queue::Fallback>>,
    /// Per pair: one shadow flush at a time per collection.
    flush_locks: Vec<Arc<shadow::FlushLocks>>,
    /// Per pair: the index segments this process last wrote.
    segment_caches: Vec<Arc<index::SegmentCache>>,
    /// One write at a time per object in this process (see `Collection::write_within_budget`).
    pub(crate) object_locks: locks::KeyedLocks<ObjectKey>,
    /// Serializes pin changes ([`Collection::pin`]).
    pub(crate) pin_lock: tokio::sync::Mutex<()>,
}

impl Inner {
    /// The metadata map and counter rules that apply to `ctx`.
    pub(crate) fn collection(&self, ctx: &RouteContext) -> &CollectionRuntime {
        self.config
            .collection_index(ctx.tenant.as_str(), ctx.db.as_str(), ctx.collection.as_str())
            .map_or(&self.no_collection, |i| &self.collections[i])
    }

    /// Pair `pair`'s stores as the shadow log flusher needs them.
    pub(crate) fn shadow_target(&self, pair: usize) -> shadow::Target {
        let p = &self.pairs[pair];
        shadow::Target {
            meta: p.meta.clone(),
            json: p.json.clone(),
            layout: self.layout.clone(),
            segments: self.segment_caches[pair].clone(),
            locks: self.flush_locks[pair].clone(),
        }
    }

    /// Whether a task still holds a [`shadow::Target`] (each holds its pair's flush locks, and
    /// nothing else does).
    fn targets_alive(&self) -> bool {
        self.flush_locks.iter().any(|l| Arc::strong_count(l) > 1)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::new(ErrorKind::Unavailable, "this Udm was shut down").retryable(false))
        } else {
            Ok(())
        }
    }
}

/// The UDM handle. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Udm {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Udm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udm").field("pairs", &self.inner.pairs.iter().map(|p| &p.describe).collect::<Vec<_>>()).finish()
    }
}

impl Udm {
    /// A builder over injected port implementations.
    pub fn builder() -> UdmBuilder {
        UdmBuilder::default()
    }

    /// One in-memory pair (tests, examples): nothing survives the process.
    pub fn in_memory() -> Result<Self> {
        build::in_memory_pair("memory").and_then(|p| Self::builder().pair(p).build())
    }

    /// Operations on one collection.
    pub fn with(&self, ctx: RouteContext) -> Collection {
        Collection::new(self.inner.clone(), ctx)
    }

    /// Health, backends, stats, shrink, shutdown.
    pub fn admin(&self) -> Admin {
        Admin::new(self.inner.clone())
    }

    /// Counter totals.
    pub fn counters(&self) -> Counters {
        Counters::new(self.inner.clone())
    }

    /// Shuts down ([`Admin::shutdown`]), then **closes the stores**: waits — at most
    /// [`CLOSE_WAIT`]; [`Udm::close_within`] to choose — for the background tasks (shadow flushes, the queue worker) to let go
    /// of them, then drops them on a blocking thread. An embedded store closes its file
    /// there: it checkpoints its write-ahead log and compacts the file to the size of what it
    /// holds (`udm_embedded::EmbeddedStore`). When this returns with
    /// [`CloseReport::closed`], the files can be opened again at once, by this process or
    /// another. Handles the caller still holds — clones of this `Udm`, [`Collection`]s,
    /// [`Admin`]s — keep the stores open (`closed` is then `false`): they close when the last
    /// of them goes. A plain `drop` closes them too, but a little later (when the background
    /// tasks end) and on whichever thread lets go last.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let udm = udm_facade::Udm::embedded(dir.path()).await?;
    /// let ctx = udm_core::RouteContext::new("acme", "crm", "users")?;
    /// udm.with(ctx.clone()).create(serde_json::json!({"a": 1}), udm_facade::WriteOpts::id("u1")).await?;
    /// assert!(udm.close().await?.closed);
    /// let again = udm_facade::Udm::embedded(dir.path()).await?; // the files are free at once
    /// assert_eq!(again.with(ctx).get_latest("u1", Default::default()).await?.data["a"], 1);
    /// # Ok::<(), udm_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn close(self) -> Result<CloseReport> {
        self.close_within(CLOSE_WAIT).await
    }

    /// [`Udm::close`], waiting at most `wait` for the background tasks to let go of the stores.
    pub async fn close_within(self, wait: std::time::Duration) -> Result<CloseReport> {
        let shutdown = self.admin().shutdown().await?;
        let waited = crate::runtime::Stopwatch::start();
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(2));
        // First every handle of the facade (the repair pass holds one), then every shadow
        // target a task still holds (a flush or a committer's drain ending).
        let mut inner = self.inner;
        let mut last = loop {
            match Arc::try_unwrap(inner) {
                Ok(last) => break Some(last),
                Err(_) if waited.elapsed() >= wait => break None,
                Err(shared) => {
                    inner = shared;
                    pause().await;
                }
            }
        };
        while last.as_ref().is_some_and(|l| l.targets_alive()) {
            if waited.elapsed() >= wait {
                last = None;
                break;
            }
            pause().await;
        }
        let closed = match last {
            Some(last) => {
                tokio::task::spawn_blocking(move || drop(last))
                    .await
                    .map_err(|e| Error::internal(format!("closing the stores: {e}")))?;
                true
            }
            None => false,
        };
        Ok(CloseReport { shutdown, closed })
    }
}

/// How long [`Udm::close`] waits for the background tasks to let go of the stores.
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What [`Udm::close`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CloseReport {
    /// What the shutdown did.
    pub shutdown: ShutdownReport,
    /// Whether the stores were closed when `close` returned (`false`: handles the caller
    /// still holds keep them open until they go).
    pub closed: bool,
}

/// Builds a [`Udm`] from injected ports.
#[derive(Default)]
pub struct UdmBuilder {
    pairs: Vec<Pair>,
    config: Option<Config>,
    clock: Option<Arc<dyn Clock>>,
    ids: Option<Arc<dyn IdGenerator>>,
    queue: Option<Arc<dyn QueueStore>>,
}

impl UdmBuilder {
    /// The fallback queue's spool (instead of the file `fallback_queue.spool` names); used
    /// only when `fallback_queue.enabled`. One `Udm` at a time may use a spool.
    pub fn queue(mut self, queue: Arc<dyn QueueStore>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Adds a backend pair (1–10; names must be distinct identifiers).
    pub fn pair(mut self, pair: Pair) -> Self {
        self.pairs.push(pair);
        self
    }

    /// Uses `config` for routing, collections, limits, dev shadows, hard delete, storage. Its
    /// `backends` section is ignored here (the pairs are injected); it is validated otherwise.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Replaces the system clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Replaces the ULID generator (tests).
    pub fn ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.ids = Some(ids);
        self
    }

    /// Validates and builds. Every port of every pair is wrapped in the tracing and metrics
    /// layers (`udm-layers`): a span and a latency/error record per port call.
    pub fn build(self) -> Result<Udm> {
        let mut config = self.config.unwrap_or_else(Config::in_memory);
        // Built from config, the backends describe the pairs: keep them. Injected pairs are
        // described by placeholders named like them (the config's own backends are ignored).
        let described = config.backends.len() == self.pairs.len()
            && config.backends.iter().zip(&self.pairs).all(|(b, p)| b.name == p.name);
        if !described {
            config.backends = self
                .pairs
                .iter()
                .map(|p| udm_core::config::BackendPair {
                    name: p.name.clone(),
                    meta: udm_core::config::MetaBackend::Memory,
                    blobs: udm_core::config::BlobBackend::Memory,
                })
                .collect();
        }
        config.validate()?;
        let router = Router::from_config(&config)?;
        let collections = compile_collections(&config.collections)?;
        let prefix = config.storage.key_prefix.as_deref().map(Name::new).transpose()?;
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let ids = self.ids.unwrap_or_else(|| Arc::new(UlidGenerator::new(clock.clone(), OsEntropy::default())));
        let pairs: Vec<Pair> = self.pairs.into_iter().map(observed).collect();
        let w = config.write_optimization;
        let batching = match w.enabled {
            true => {
                commit::Batching { window: std::time::Duration::from_millis(w.batch_window_ms), max_batch: w.max_batch }
            }
            false => commit::Batching::default(),
        };
        let put_permits = w.enabled.then(|| tokio::sync::Semaphore::new(w.max_concurrency));
        let fallback = match (config.fallback_queue.enabled, self.queue) {
            (false, _) => None,
            (true, Some(q)) => Some(q),
            (true, None) => Some(open_spool(&config.fallback_queue)?),
        };
        let fallback = fallback.map(|q| {
            use udm_core::ports::Layer;
            let q: Arc<dyn QueueStore> = Arc::new(udm_layers::MetricsLayer.layer(udm_layers::TracingLayer.layer(q)));
            Arc::new(queue::Fallback::new(q, config.fallback_queue.clone()))
        });
        let flush_locks = pairs.iter().map(|_| Arc::default()).collect();
        let segment_caches = pairs.iter().map(|_| Arc::default()).collect();
        let udm = Udm {
            inner: Arc::new(Inner {
                flush_locks,
                segment_caches,
                object_locks: locks::KeyedLocks::default(),
                pin_lock: tokio::sync::Mutex::new(()),
                pairs,
                router,
                layout: Layout::new(prefix),
                config,
                collections,
                no_collection: CollectionRuntime::default(),
                clock,
                ids,
                stats: Arc::default(),
                committer: commit::Committer::new(batching),
                put_permits,
                counter_buffer: (w.counter_debounce_ms > 0).then(Arc::default),
                closed: AtomicBool::new(false),
                in_flight: tokio::sync::RwLock::new(()),
                fallback,
            }),
        };
        if let Some(q) = &udm.inner.fallback {
            q.start(Arc::downgrade(&udm.inner));
        }
        if let Some(b) = &udm.inner.counter_buffer {
            let every = std::time::Duration::from_millis(udm.inner.config.write_optimization.counter_debounce_ms);
            b.start(Arc::downgrade(&udm.inner), every);
        }
        // The shadow log's repair pass: completes what a crash left unflushed. In the
        // background, when built inside a Tokio runtime (else `Admin::flush_shadow` does it).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let admin = udm.admin();
            rt.spawn(async move {
                if let Err(e) = admin.flush_shadow().await {
                    tracing::warn!(error = %e, "udm: the shadow log's repair pass failed; run Admin::flush_shadow");
                }
            });
        }
        Ok(udm)
    }
}

/// The spool file `fallback_queue.spool` names (an embedded redb database).
fn open_spool(c: &udm_core::config::FallbackQueueConfig) -> Result<Arc<dyn QueueStore>> {
    let path = c.spool.as_deref().ok_or_else(|| {
        let problem =
            udm_core::error::Problem::new("fallback_queue.spool", "required when the fallback queue is enabled");
        Error::invalid(ErrorKind::Config, vec![problem])
    })?;
    spool_file(std::path::Path::new(path))
}

#[cfg(feature = "embedded")]
fn spool_file(path: &std::path::Path) -> Result<Arc<dyn QueueStore>> {
    Ok(Arc::new(udm_embedded::EmbeddedStore::open(path)?))
}

/// Without the `embedded` feature there is no spool file to open.
#[cfg(not(feature = "embedded"))]
fn spool_file(_: &std::path::Path) -> Result<Arc<dyn QueueStore>> {
    Err(Error::new(
        ErrorKind::Unsupported,
        "fallback_queue.spool needs the `embedded` feature (or inject a queue with UdmBuilder::queue)",
    ))
}

/// The pair with every port wrapped in the tracing and metrics layers.
fn observed(p: Pair) -> Pair {
    use udm_core::ports::Layer;
    use udm_layers::{MetricsLayer, TracingLayer};
    Pair {
        meta: Arc::new(MetricsLayer.layer(TracingLayer.layer(p.meta))),
        counters: Arc::new(MetricsLayer.layer(TracingLayer.layer(p.counters))),
        json: Arc::new(MetricsLayer.layer(TracingLayer.layer(p.json))),
        content: Arc::new(MetricsLayer.layer(TracingLayer.layer(p.content))),
        ..p
    }
}

fn compile_collections(cols: &[CollectionConfig]) -> Result<Vec<CollectionRuntime>> {
    cols.iter()
        .enumerate()
        .map(|(i, c)| {
            let rules = c
                .counter_rules
                .iter()
                .enumerate()
                .map(|(j, r)| CounterRule::from_config(r, &format!("collections[{i}].counter_rules[{j}]")))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|p| Error::invalid(ErrorKind::Config, p))?;
            Ok(CollectionRuntime { map: c.metadata_map(), rules })
        })
        .collect()
}
