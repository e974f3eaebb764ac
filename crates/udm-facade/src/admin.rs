//! Admin (health, backends, stats, shrink, shutdown) and counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use udm_core::ports::{ShrinkPolicy, ShrinkStats};
use udm_core::{Result, RouteContext};

use crate::Inner;

/// An atomic event counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub(crate) writes: Counter,
    pub(crate) reads: Counter,
    pub(crate) snapshot_reads: Counter,
    pub(crate) conflicts: Counter,
    pub(crate) replays: Counter,
}

/// Operation counts since this `Udm` was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Committed writes.
    pub writes: u64,
    /// Reads served.
    pub reads: u64,
    /// Snapshots fetched from blob stores.
    pub snapshot_reads: u64,
    /// Optimistic retries after a lost race.
    pub conflicts: u64,
    /// Writes answered by replaying a committed request id.
    pub replays: u64,
}

/// Health of one pair.
#[derive(Debug, Clone, Serialize)]
pub struct PairHealth {
    /// Pair name.
    pub name: String,
    /// Metadata store ping: `Ok(latency)` or the error message.
    pub meta: std::result::Result<Duration, String>,
    /// Snapshot store.
    pub json: std::result::Result<Duration, String>,
    /// Content store.
    pub content: std::result::Result<Duration, String>,
}

impl PairHealth {
    /// Whether every backend of the pair answered.
    pub fn is_healthy(&self) -> bool {
        self.meta.is_ok() && self.json.is_ok() && self.content.is_ok()
    }
}

/// Health of every pair.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// Per pair.
    pub pairs: Vec<PairHealth>,
}

impl HealthReport {
    /// Whether every pair is healthy.
    pub fn is_healthy(&self) -> bool {
        self.pairs.iter().all(PairHealth::is_healthy)
    }
}

/// One backend pair, as shown to operators (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct BackendInfo {
    /// Pair name.
    pub name: String,
    /// What it is (redacted).
    pub describe: String,
}

/// Administration.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

async fn timed<F: std::future::Future<Output = Result<()>>>(f: F) -> std::result::Result<Duration, String> {
    let start = Instant::now();
    f.await.map(|()| start.elapsed()).map_err(|e| e.to_string())
}

impl Admin {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Pings every metadata store and checks every bucket, with latencies.
    pub async fn health(&self) -> HealthReport {
        let mut pairs = Vec::new();
        for p in &self.inner.pairs {
            pairs.push(PairHealth {
                name: p.name.clone(),
                meta: timed(p.meta.ping()).await,
                json: timed(p.json.health()).await,
                content: timed(p.content.health()).await,
            });
        }
        HealthReport { pairs }
    }

    /// The configured pairs (secrets redacted).
    pub fn backends(&self) -> Vec<BackendInfo> {
        self.inner.pairs.iter().map(|p| BackendInfo { name: p.name.clone(), describe: p.describe.clone() }).collect()
    }

    /// Operation counts.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.stats;
        Stats {
            writes: s.writes.get(),
            reads: s.reads.get(),
            snapshot_reads: s.snapshot_reads.get(),
            conflicts: s.conflicts.get(),
            replays: s.replays.get(),
        }
    }

    /// Removes dev shadows older than the configured TTL or larger than the configured cap
    /// (in `ctx`, or everywhere); with `dry_run`, only reports.
    pub async fn shrink(&self, ctx: Option<&RouteContext>, dry_run: bool) -> Result<ShrinkStats> {
        let cfg = &self.inner.config.dev_shadow;
        let ttl_ms = i64::try_from(cfg.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let policy = ShrinkPolicy {
            expired_before: self.inner.clock.now().plus_millis(-ttl_ms),
            max_bytes: cfg.max_bytes,
            dry_run,
        };
        let mut total = ShrinkStats::default();
        for p in &self.inner.pairs {
            let s = p.meta.shrink_dev_shadows(ctx, &policy).await?;
            total.scanned += s.scanned;
            total.removed += s.removed;
            total.bytes_freed += s.bytes_freed;
        }
        Ok(total)
    }

    /// Stops accepting writes; later writes fail with a non-retryable `Unavailable`. Nothing
    /// is buffered today, so nothing needs flushing.
    pub fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
    }
}

/// Counter totals (base and rule counters) per collection, summed over pairs.
#[derive(Clone)]
pub struct Counters {
    inner: Arc<Inner>,
}

impl Counters {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Every counter of `ctx` (absent = zero).
    pub async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        let mut out: BTreeMap<String, i64> = BTreeMap::new();
        for p in &self.inner.pairs {
            for (k, v) in p.counters.totals(ctx).await? {
                *out.entry(k).or_default() += v;
            }
        }
        out.retain(|_, v| *v != 0);
        Ok(out)
    }

    /// Resets the named counters (all with `None`) of `ctx` to zero.
    pub async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
        for p in &self.inner.pairs {
            p.counters.reset(ctx, counters).await?;
        }
        Ok(())
    }
}
