//! [`MetricsLayer`] and the facade's counters, through the `metrics` facade.
//!
//! Nothing is recorded until the application installs a `metrics` recorder (e.g. a
//! Prometheus exporter); [`describe`] registers units and help texts with it.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `udm_port_call_seconds` | histogram | `port`, `op` | latency of each port call (every outcome) |
//! | `udm_port_errors_total` | counter | `port`, `op`, `kind` | failed port calls by error kind |
//! | `udm_op_seconds` | histogram | `op` | latency of each facade operation ([`op_latency`]) |
//! | `udm_op_errors_total` | counter | `op`, `kind` | failed facade operations ([`op_error`]) |
//! | `udm_writes_total` | counter | | committed writes |
//! | `udm_reads_total` | counter | | reads served |
//! | `udm_snapshot_reads_total` | counter | | snapshots fetched from blob stores |
//! | `udm_write_conflicts_total` | counter | | optimistic retries after a lost race |
//! | `udm_write_replays_total` | counter | | writes answered by replaying a request id |
//! | `udm_commit_batches_total` | counter | | metadata transactions the group committer ran |
//! | `udm_batched_commits_total` | counter | | commits those transactions carried |
//! | `udm_retries_total` | counter | `reason` | retries of a backend call ([`retry`]) |
//!
//! `port` is `meta`, `blob`, `queue` or `counter`; `op` the port method (`commit`, `put`, …)
//! or facade operation; `kind` the error kind in snake case (`not_found`, `unavailable`, …).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use udm_core::ports::Layer;
use udm_core::{ErrorKind, Result};

use crate::call::{Answer, Call, error_kind_label};
use crate::intercept::{Intercepted, Interceptor};

/// Latency of each port call, seconds (`port`, `op`).
pub const PORT_CALL_SECONDS: &str = "udm_port_call_seconds";
/// Failed port calls (`port`, `op`, `kind`).
pub const PORT_ERRORS_TOTAL: &str = "udm_port_errors_total";
/// Latency of each facade operation, seconds (`op`).
pub const OP_SECONDS: &str = "udm_op_seconds";
/// Failed facade operations (`op`, `kind`).
pub const OP_ERRORS_TOTAL: &str = "udm_op_errors_total";
/// Committed writes.
pub const WRITES_TOTAL: &str = "udm_writes_total";
/// Reads served.
pub const READS_TOTAL: &str = "udm_reads_total";
/// Snapshots fetched from blob stores.
pub const SNAPSHOT_READS_TOTAL: &str = "udm_snapshot_reads_total";
/// Optimistic retries after a lost race.
pub const WRITE_CONFLICTS_TOTAL: &str = "udm_write_conflicts_total";
/// Writes answered by replaying a committed request id.
pub const WRITE_REPLAYS_TOTAL: &str = "udm_write_replays_total";
/// Metadata transactions the facade's group committer ran.
pub const COMMIT_BATCHES_TOTAL: &str = "udm_commit_batches_total";
/// Commits carried by those transactions (÷ batches = mean batch size).
pub const BATCHED_COMMITS_TOTAL: &str = "udm_batched_commits_total";
/// Writes made durable in the fallback queue instead of committing at once.
pub const QUEUED_WRITES_TOTAL: &str = "udm_queued_writes_total";
/// Queued writes the queue's worker committed (or found committed).
pub const QUEUE_APPLIED_TOTAL: &str = "udm_queue_applied_total";
/// Queued writes moved to the dead letters.
pub const DEAD_LETTERS_TOTAL: &str = "udm_dead_letters_total";
/// Times a group-commit batch waited for its window (write optimizer).
pub const BATCH_WAITS_TOTAL: &str = "udm_batch_waits_total";
/// Microseconds batches spent waiting for their window.
pub const BATCH_WAIT_MICROS_TOTAL: &str = "udm_batch_wait_micros_total";
/// Retries of a backend call (`reason`).
pub const RETRIES_TOTAL: &str = "udm_retries_total";

/// Registers the unit and help text of every metric above with the installed recorder.
pub fn describe() {
    describe_histogram!(PORT_CALL_SECONDS, Unit::Seconds, "Latency of each UDM port call.");
    describe_counter!(PORT_ERRORS_TOTAL, Unit::Count, "Failed UDM port calls, by error kind.");
    describe_histogram!(OP_SECONDS, Unit::Seconds, "Latency of each UDM operation.");
    describe_counter!(OP_ERRORS_TOTAL, Unit::Count, "Failed UDM operations, by error kind.");
    describe_counter!(WRITES_TOTAL, Unit::Count, "Committed writes.");
    describe_counter!(COMMIT_BATCHES_TOTAL, Unit::Count, "Metadata transactions run by the group committer.");
    describe_counter!(BATCHED_COMMITS_TOTAL, Unit::Count, "Commits carried by group-commit transactions.");
    describe_counter!(QUEUED_WRITES_TOTAL, Unit::Count, "Writes made durable in the fallback queue.");
    describe_counter!(QUEUE_APPLIED_TOTAL, Unit::Count, "Queued writes the queue's worker committed.");
    describe_counter!(DEAD_LETTERS_TOTAL, Unit::Count, "Queued writes moved to the dead letters.");
    describe_counter!(BATCH_WAITS_TOTAL, Unit::Count, "Group-commit batches that waited for their window.");
    describe_counter!(BATCH_WAIT_MICROS_TOTAL, Unit::Microseconds, "Time batches waited for their window.");
    describe_counter!(READS_TOTAL, Unit::Count, "Reads served.");
    describe_counter!(SNAPSHOT_READS_TOTAL, Unit::Count, "Snapshots fetched from blob stores.");
    describe_counter!(WRITE_CONFLICTS_TOTAL, Unit::Count, "Optimistic write retries after a lost race.");
    describe_counter!(WRITE_REPLAYS_TOTAL, Unit::Count, "Writes answered by replaying a request id.");
    describe_counter!(RETRIES_TOTAL, Unit::Count, "Retries of a backend call, by reason.");
}

/// Wraps a store so that every port call records [`PORT_CALL_SECONDS`] and every failure
/// [`PORT_ERRORS_TOTAL`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl MetricsLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

/// A store wrapped by [`MetricsLayer`].
pub type Metered<S> = Intercepted<S, MetricsLayer>;

impl<S> Layer<S> for MetricsLayer {
    type Output = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Intercepted::new(inner, *self)
    }
}

impl Interceptor for MetricsLayer {
    async fn intercept<T, F, Fut>(&self, call: Call<'_>, run: F) -> Result<T>
    where
        T: Answer,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let (port, op) = (call.port.as_str(), call.op);
        let start = crate::runtime::Stopwatch::start();
        let out = run().await;
        histogram!(PORT_CALL_SECONDS, "port" => port, "op" => op).record(start.elapsed().as_secs_f64());
        if let Err(e) = &out {
            counter!(PORT_ERRORS_TOTAL, "port" => port, "op" => op, "kind" => error_kind_label(e.kind())).increment(1);
        }
        out
    }
}

/// Records one facade operation's latency ([`OP_SECONDS`]).
pub fn op_latency(op: &'static str, elapsed: Duration) {
    histogram!(OP_SECONDS, "op" => op).record(elapsed.as_secs_f64());
}

/// Counts one failed facade operation ([`OP_ERRORS_TOTAL`]).
pub fn op_error(op: &'static str, kind: ErrorKind) {
    counter!(OP_ERRORS_TOTAL, "op" => op, "kind" => error_kind_label(kind)).increment(1);
}

/// Counts one retry of a backend call ([`RETRIES_TOTAL`]), e.g. `reason = "version_conflict"`.
pub fn retry(reason: &'static str) {
    counter!(RETRIES_TOTAL, "reason" => reason).increment(1);
}

/// A counter reported to the `metrics` facade under a fixed name that also keeps its own
/// count (so an API can report "since this handle was built" without reading the recorder).
#[derive(Debug)]
pub struct EventCounter {
    name: &'static str,
    count: AtomicU64,
}

impl EventCounter {
    /// A counter named `name` (one of the constants above).
    pub const fn new(name: &'static str) -> Self {
        Self { name, count: AtomicU64::new(0) }
    }

    /// One more event.
    pub fn inc(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        counter!(self.name).increment(1);
    }

    /// `n` more (a total such as microseconds waited).
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        counter!(self.name).increment(n);
    }

    /// Events counted by this handle.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Its metric name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The facade's operation counters ([`WRITES_TOTAL`], [`READS_TOTAL`],
/// [`SNAPSHOT_READS_TOTAL`], [`WRITE_CONFLICTS_TOTAL`], [`WRITE_REPLAYS_TOTAL`]).
#[derive(Debug)]
pub struct FacadeCounters {
    /// Committed writes.
    pub writes: EventCounter,
    /// Reads served.
    pub reads: EventCounter,
    /// Snapshots fetched from blob stores.
    pub snapshot_reads: EventCounter,
    /// Optimistic retries after a lost race.
    pub conflicts: EventCounter,
    /// Writes answered by replaying a request id.
    pub replays: EventCounter,
    /// Metadata transactions the group committer ran.
    pub commit_batches: EventCounter,
    /// Commits those transactions carried.
    pub batched_commits: EventCounter,
    /// Writes made durable in the fallback queue.
    pub queued: EventCounter,
    /// Queued writes the queue's worker committed.
    pub queue_applied: EventCounter,
    /// Queued writes moved to the dead letters.
    pub dead_lettered: EventCounter,
    /// Batches that waited for their window.
    pub batch_waits: EventCounter,
    /// Microseconds they waited.
    pub batch_wait_micros: EventCounter,
}

impl Default for FacadeCounters {
    fn default() -> Self {
        Self {
            writes: EventCounter::new(WRITES_TOTAL),
            reads: EventCounter::new(READS_TOTAL),
            snapshot_reads: EventCounter::new(SNAPSHOT_READS_TOTAL),
            conflicts: EventCounter::new(WRITE_CONFLICTS_TOTAL),
            replays: EventCounter::new(WRITE_REPLAYS_TOTAL),
            commit_batches: EventCounter::new(COMMIT_BATCHES_TOTAL),
            batched_commits: EventCounter::new(BATCHED_COMMITS_TOTAL),
            queued: EventCounter::new(QUEUED_WRITES_TOTAL),
            queue_applied: EventCounter::new(QUEUE_APPLIED_TOTAL),
            dead_lettered: EventCounter::new(DEAD_LETTERS_TOTAL),
            batch_waits: EventCounter::new(BATCH_WAITS_TOTAL),
            batch_wait_micros: EventCounter::new(BATCH_WAIT_MICROS_TOTAL),
        }
    }
}
