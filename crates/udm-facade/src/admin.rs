//! Admin (health, backends, stats, shrink, shutdown) and counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use udm_core::ports::{QueueEntry, QueueState, QueueStats, ShrinkPolicy, ShrinkStats};
use udm_core::{Result, RouteContext};

use crate::Inner;
use crate::runtime::Stopwatch;

/// The facade's operation counters: each `inc()` counts for [`Admin::stats`] and goes to the
/// `metrics` facade (`udm_writes_total`, `udm_reads_total`, … — see `udm_layers::metric`).
pub(crate) type StatCounters = udm_layers::metric::FacadeCounters;

/// How long [`Admin::health`] waits for one backend before reporting it unhealthy.
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Metadata transactions run by the group committer.
    pub commit_batches: u64,
    /// Commits those transactions carried (÷ `commit_batches` = mean batch size).
    pub batched_commits: u64,
    /// Writes made durable in the fallback queue instead of committing at once.
    pub queued: u64,
    /// Queued writes the queue's worker committed (or found committed).
    pub queue_applied: u64,
    /// Queued writes moved to the dead letters.
    pub dead_lettered: u64,
    /// Group-commit batches that waited for the write optimizer's window.
    pub batch_waits: u64,
    /// Microseconds they waited in all.
    pub batch_wait_micros: u64,
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
    pub(crate) inner: Arc<Inner>,
}

/// Runs one health check within `limit`: its latency, its error, or the timeout.
async fn timed<F: std::future::Future<Output = Result<()>>>(
    f: F,
    limit: Duration,
) -> std::result::Result<Duration, String> {
    let watch = Stopwatch::start();
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(())) => Ok(watch.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("unavailable: no answer within {} ms", limit.as_millis())),
    }
}

impl Admin {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Pings every metadata store and checks every bucket, all at once, with latencies; a
    /// backend that does not answer within 5 seconds is reported unhealthy ("no answer
    /// within 5000 ms").
    pub async fn health(&self) -> HealthReport {
        self.health_within(HEALTH_TIMEOUT).await
    }

    /// [`Admin::health`] with another per-backend time limit.
    pub async fn health_within(&self, limit: Duration) -> HealthReport {
        let pairs = self.inner.pairs.iter().map(|p| async move {
            let (meta, json, content) = tokio::join!(
                timed(p.meta.ping(), limit),
                timed(p.json.health(), limit),
                timed(p.content.health(), limit)
            );
            PairHealth { name: p.name.clone(), meta, json, content }
        });
        HealthReport { pairs: join_all(pairs).await }
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
            commit_batches: s.commit_batches.get(),
            batched_commits: s.batched_commits.get(),
            queued: s.queued.get(),
            queue_applied: s.queue_applied.get(),
            dead_lettered: s.dead_lettered.get(),
            batch_waits: s.batch_waits.get(),
            batch_wait_micros: s.batch_wait_micros.get(),
        }
    }

    /// The repair pass of the shadow commit log ([`udm_core::shadow`]): on every pair, writes
    /// the log segments of every collection whose log lags its commits (after a crash, or a
    /// blob store outage during a flush), and reports what it wrote. Idempotent; safe while
    /// writes run. `Udm` runs it in the background when it is built.
    ///
    /// ```
    /// # async fn demo(udm: &udm_facade::Udm) -> udm_core::Result<()> {
    /// let report = udm.admin().flush_shadow().await?;
    /// println!("{} versions logged in {} segments", report.versions, report.segments);
    /// # Ok(()) }
    /// ```
    pub async fn flush_shadow(&self) -> Result<crate::FlushReport> {
        let mut total = crate::FlushReport::default();
        for pair in 0..self.inner.pairs.len() {
            total += crate::shadow::flush_backlog(&self.inner.shadow_target(pair)).await?;
        }
        Ok(total)
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

    /// Shuts down: stops taking writes (later ones fail with a non-retryable `Unavailable`),
    /// waits for the writes in flight (each bounded by the write budget; one that fails on a
    /// transient error is queued, with the fallback queue on), stops the queue's worker after
    /// the replays it is running (what is still queued stays in the spool for the next
    /// start), and flushes the shadow commit log. Idempotent.
    ///
    /// ```
    /// # async fn demo(udm: udm_facade::Udm) -> udm_core::Result<()> {
    /// let report = udm.admin().shutdown().await?;
    /// println!("{} queued writes left for the next start", report.queue.pending);
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> Result<ShutdownReport> {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Every write that got past the open check holds a read guard until it returns.
        drop(self.inner.in_flight.write().await);
        let mut report = ShutdownReport::default();
        if let Some(q) = &self.inner.fallback {
            q.stop().await;
            report.queue = q.stats(self.inner.clock.now()).await?;
        }
        if let Some(b) = &self.inner.counter_buffer {
            b.stop().await;
            b.flush(&self.inner).await?;
        }
        report.flushed = self.flush_shadow().await?;
        Ok(report)
    }

    /// Re-derives every counter of `ctx` from its versions (each version's snapshot read and
    /// verified, counted as its commit counted it) and replaces the stored totals with them,
    /// pair by pair; returns the totals. For counters that drifted — a crash that lost
    /// debounced deltas (`write_optimization.counter_debounce_ms`), or a manual edit. Versions
    /// pruned by retention no longer count. Run it while the collection is quiet: a write
    /// committed during the recount of its pair may be counted twice or not at all.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let udm = udm_facade::Udm::in_memory()?;
    /// let ctx = udm_core::RouteContext::new("acme", "crm", "users")?;
    /// udm.with(ctx.clone()).create(serde_json::json!({"a": 1}), udm_facade::WriteOpts::default()).await?;
    /// let totals = udm.admin().recount(&ctx).await?;
    /// assert_eq!(totals.get("created"), Some(&1));
    /// # Ok::<(), udm_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn recount(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        if let Some(b) = &self.inner.counter_buffer {
            b.flush(&self.inner).await?;
        }
        let coll = crate::Collection::new(self.inner.clone(), ctx.clone());
        let mut all: BTreeMap<String, i64> = BTreeMap::new();
        for (i, p) in self.inner.pairs.iter().enumerate() {
            let totals = coll.recount_on(i).await?;
            p.counters.reset(ctx, None).await?;
            let deltas: Vec<_> = totals
                .iter()
                .map(|(k, v)| udm_core::counters::CounterDelta { ctx: ctx.clone(), counter: k.clone(), delta: *v })
                .collect();
            p.counters.add(&deltas).await?;
            for (k, v) in totals {
                *all.entry(k).or_default() += v;
            }
        }
        Ok(all)
    }

    /// The fallback queue's sizes (pending, leased, dead). `Unsupported` when it is off.
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        self.fallback()?.stats(self.inner.clock.now()).await
    }

    /// Queue entries in `state`, by id, after `after`, at most `limit`.
    pub async fn queue_list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>> {
        self.fallback()?.store().list(state, after, limit).await
    }

    /// Puts dead letter `id` back in the queue, due now (attempts reset).
    pub async fn queue_retry(&self, id: &str) -> Result<()> {
        self.fallback()?.retry(id, self.inner.clock.now()).await
    }

    /// Removes queue entry `id` (pending or dead): it will never be applied.
    pub async fn queue_cancel(&self, id: &str) -> Result<()> {
        self.fallback()?.cancel(id).await
    }

    /// Replays every queued write that is due now, then returns (the worker does this on its
    /// own; this is for tools and tests that want it done at once).
    pub async fn run_queue_once(&self) -> Result<()> {
        self.fallback()?.run_due(&self.inner).await.map(|_| ())
    }

    fn fallback(&self) -> Result<&Arc<crate::queue::Fallback>> {
        self.inner.fallback.as_ref().ok_or_else(crate::queue::queue_off)
    }
}

/// What [`Admin::shutdown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// The fallback queue after the worker stopped (all zero when it is off).
    pub queue: QueueStats,
    /// What the final shadow-log flush wrote.
    pub flushed: crate::FlushReport,
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
