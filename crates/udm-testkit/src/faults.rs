//! Fault injection: wrappers that implement a port by delegating to a real adapter and fail
//! chosen calls, so the conformance suite and the facade's tests can exercise failure paths
//! against real implementations.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use udm_core::counters::CounterDelta;
use udm_core::ports::{Commit, Committed, CounterStore, HardDeleted, JobRecord, MetaStore, ShrinkPolicy, ShrinkStats};
use udm_core::query::{HeadQuery, HistoryQuery, Page};
use udm_core::{Checksum, Cv, Error, Head, ObjectKey, Ov, RequestId, Result, RouteContext, Timestamp, VersionRecord};

/// A [`MetaStore`] + [`CounterStore`] that fails the next N commits with a retryable
/// `Unavailable` *before* they reach the wrapped store (as a dropped connection would), and
/// can hide version records (as a metadata store that lost them would).
#[derive(Debug)]
pub struct FailingCommits<T> {
    inner: Arc<T>,
    remaining: AtomicU32,
    hide_versions: std::sync::atomic::AtomicBool,
}

impl<T> FailingCommits<T> {
    /// Wraps `inner`; no failures until [`FailingCommits::fail_next`].
    pub fn new(inner: Arc<T>) -> Self {
        Self { inner, remaining: AtomicU32::new(0), hide_versions: std::sync::atomic::AtomicBool::new(false) }
    }

    /// Makes version-record lookups by OV answer `None`, as if the metadata store had lost them
    /// (S3-fallback tests).
    pub fn hide_versions(&self, hide: bool) {
        self.hide_versions.store(hide, Ordering::SeqCst);
    }

    /// Makes the next `n` commits fail.
    pub fn fail_next(&self, n: u32) {
        self.remaining.store(n, Ordering::SeqCst);
    }
}

#[async_trait]
impl<T: MetaStore> MetaStore for FailingCommits<T> {
    async fn commit(&self, commit: Commit) -> Result<Committed> {
        let failing = self.remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            return Err(Error::unavailable("injected fault: commit lost"));
        }
        self.inner.commit(commit).await
    }
    async fn find_request(&self, ctx: &RouteContext, r: &RequestId) -> Result<Option<(Committed, Checksum)>> {
        self.inner.find_request(ctx, r).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
        self.inner.head(key).await
    }
    async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
        if self.hide_versions.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.version(key, ov).await
    }
    async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>> {
        self.inner.version_at(key, at).await
    }
    async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>> {
        self.inner.version_at_cv(key, cv).await
    }
    async fn history(&self, key: &ObjectKey, q: &HistoryQuery) -> Result<Page<VersionRecord>> {
        self.inner.history(key, q).await
    }
    async fn list_heads(&self, ctx: &RouteContext, q: &HeadQuery) -> Result<Page<Head>> {
        self.inner.list_heads(ctx, q).await
    }
    async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv> {
        self.inner.collection_cv(ctx).await
    }
    async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, p: &ShrinkPolicy) -> Result<ShrinkStats> {
        self.inner.shrink_dev_shadows(ctx, p).await
    }
    async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted> {
        self.inner.hard_delete(key, counters).await
    }
    async fn save_job(&self, job: &JobRecord) -> Result<()> {
        self.inner.save_job(job).await
    }
    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.inner.load_job(id).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

#[async_trait]
impl<T: CounterStore> CounterStore for FailingCommits<T> {
    async fn add(&self, deltas: &[CounterDelta]) -> Result<()> {
        self.inner.add(deltas).await
    }
    async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        self.inner.totals(ctx).await
    }
    async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
        self.inner.reset(ctx, counters).await
    }
}
