//! [`Intercepted`]: one decorator that implements every port by describing each call as a
//! [`Call`] and handing it, with the forwarded call, to an [`Interceptor`]. The tracing,
//! metrics and fault layers are interceptors; so can a user's "around every call" layer be.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use udm_core::counters::CounterDelta;
use udm_core::ports::{
    BlobBody, BlobListing, BlobMeta, BlobPage, BlobStore, Commit, Committed, CounterStore, Durable, HardDeleted,
    ImportOutcome, ImportedVersion, JobRecord, Layered, LayeredBlob, LayeredCounter, LayeredMeta, LayeredQueue,
    MetaStore, PutOptions, PutResult, QueueEntry, QueueState, QueueStats, QueueStore, ShrinkPolicy, ShrinkStats,
};
use udm_core::query::{HeadQuery, HistoryQuery, Page};
use udm_core::retry::NextStep;
use udm_core::shadow::ShadowPending;
use udm_core::version::SnapshotRef;
use udm_core::{
    Checksum, Cv, Head, Name, ObjectId, ObjectKey, Ov, RequestId, Result, RouteContext, Timestamp, VersionRecord,
};

use crate::call::{Answer, Call, Port};

/// Runs around every port call of an [`Intercepted`] store.
///
/// `run` starts the forwarded call; an interceptor may call it once, or not at all (the call
/// then never reaches the inner store), and may replace its answer.
pub trait Interceptor: Send + Sync + fmt::Debug {
    /// Handles one call.
    fn intercept<T, F, Fut>(&self, call: Call<'_>, run: F) -> impl Future<Output = Result<T>> + Send
    where
        T: Answer,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send;
}

/// A store of type `S` whose every port call goes through the interceptor `I`. It implements
/// each port `S` implements (through the `Layered*` traits of `udm_core::ports`).
#[derive(Debug, Clone)]
pub struct Intercepted<S, I> {
    inner: S,
    interceptor: I,
}

impl<S, I> Intercepted<S, I> {
    /// Wraps `inner`.
    pub fn new(inner: S, interceptor: I) -> Self {
        Self { inner, interceptor }
    }

    /// The wrapped store.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }

    /// The wrapped store, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Send + Sync + fmt::Debug, I: Interceptor> Layered for Intercepted<S, I> {
    type Inner = S;

    fn inner(&self) -> &S {
        &self.inner
    }
}

fn meta(op: &'static str) -> Call<'static> {
    Call::new(Port::Meta, op)
}

#[async_trait]
impl<S: MetaStore, I: Interceptor> LayeredMeta for Intercepted<S, I> {
    async fn commit(&self, commit: Commit) -> Result<Committed> {
        let (key, ov, request) = (commit.key.clone(), commit.version.ov, commit.version.provenance.request_id.clone());
        let call = meta("commit").object(&key).ov(ov).request_id(&request);
        self.interceptor.intercept(call, || self.inner.commit(commit)).await
    }
    async fn commit_many(&self, commits: Vec<Commit>) -> Result<Vec<Result<Committed>>> {
        let ctx = commits.first().map(|c| c.key.ctx.clone());
        let call = meta("commit_many");
        let call = match &ctx {
            Some(ctx) => call.ctx(ctx),
            None => call,
        };
        self.interceptor.intercept(call, || self.inner.commit_many(commits)).await
    }
    async fn commit_many_after(&self, commits: Vec<Commit>, durable: Durable) -> Result<Vec<Result<Committed>>> {
        // Reported as `commit` for one commit (as `commit` is), `commit_many` for several, so
        // a rule on either op sees every commit of that size.
        let first = commits.first().map(|c| (c.key.clone(), c.version.ov, c.version.provenance.request_id.clone()));
        let call = match (&first, commits.len()) {
            (Some((key, ov, request)), 1) => meta("commit").object(key).ov(*ov).request_id(request),
            (Some((key, ..)), _) => meta("commit_many").ctx(&key.ctx),
            (None, _) => meta("commit_many"),
        };
        self.interceptor.intercept(call, || self.inner.commit_many_after(commits, durable)).await
    }
    async fn shadow_backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
        self.interceptor.intercept(meta("shadow_backlog"), || self.inner.shadow_backlog(after, limit)).await
    }
    async fn shadow_pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
        self.interceptor.intercept(meta("shadow_pending").ctx(ctx), || self.inner.shadow_pending(ctx, limit)).await
    }
    async fn shadow_logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
        self.interceptor.intercept(meta("shadow_logged").ctx(ctx), || self.inner.shadow_logged(ctx, upto)).await
    }
    async fn find_request(&self, ctx: &RouteContext, r: &RequestId) -> Result<Option<(Committed, Checksum)>> {
        let call = meta("find_request").ctx(ctx).request_id(r);
        self.interceptor.intercept(call, || self.inner.find_request(ctx, r)).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
        self.interceptor.intercept(meta("head").object(key), || MetaStore::head(&self.inner, key)).await
    }
    async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
        self.interceptor.intercept(meta("version").object(key).ov(ov), || self.inner.version(key, ov)).await
    }
    async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>> {
        self.interceptor.intercept(meta("version_at").object(key), || self.inner.version_at(key, at)).await
    }
    async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>> {
        self.interceptor.intercept(meta("version_at_cv").object(key), || self.inner.version_at_cv(key, cv)).await
    }
    async fn history(&self, key: &ObjectKey, q: &HistoryQuery) -> Result<Page<VersionRecord>> {
        self.interceptor.intercept(meta("history").object(key), || self.inner.history(key, q)).await
    }
    async fn list_heads(&self, ctx: &RouteContext, q: &HeadQuery) -> Result<Page<Head>> {
        self.interceptor.intercept(meta("list_heads").ctx(ctx), || self.inner.list_heads(ctx, q)).await
    }
    async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv> {
        self.interceptor.intercept(meta("collection_cv").ctx(ctx), || self.inner.collection_cv(ctx)).await
    }
    async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, p: &ShrinkPolicy) -> Result<ShrinkStats> {
        let call = meta("shrink_dev_shadows");
        let call = if let Some(ctx) = ctx { call.ctx(ctx) } else { call };
        self.interceptor.intercept(call, || self.inner.shrink_dev_shadows(ctx, p)).await
    }
    async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted> {
        self.interceptor.intercept(meta("hard_delete").object(key), || self.inner.hard_delete(key, counters)).await
    }
    async fn list_collections(
        &self,
        tenant: &Name,
        db: Option<&Name>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RouteContext>> {
        let call = meta("list_collections").key(tenant.as_str());
        self.interceptor.intercept(call, || self.inner.list_collections(tenant, db, after, limit)).await
    }
    async fn list_objects(&self, ctx: &RouteContext, after: Option<&str>, limit: usize) -> Result<Page<ObjectId>> {
        let call = meta("list_objects").ctx(ctx);
        self.interceptor.intercept(call, || self.inner.list_objects(ctx, after, limit)).await
    }
    /// The call names the first version's object (a batch may span several).
    async fn import(&self, versions: Vec<ImportedVersion>) -> Result<ImportOutcome> {
        let first = versions.first().map(|v| v.record.key.clone());
        let call = meta("import");
        let call = if let Some(k) = &first { call.object(k) } else { call };
        self.interceptor.intercept(call, || self.inner.import(versions)).await
    }
    async fn prune(&self, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>> {
        self.interceptor.intercept(meta("prune").object(key), || self.inner.prune(key, ovs)).await
    }
    async fn save_job(&self, job: &JobRecord) -> Result<()> {
        self.interceptor.intercept(meta("save_job").key(&job.id), || self.inner.save_job(job)).await
    }
    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.interceptor.intercept(meta("load_job").key(id), || self.inner.load_job(id)).await
    }
    async fn ping(&self) -> Result<()> {
        self.interceptor.intercept(meta("ping"), || self.inner.ping()).await
    }
}

fn blob(op: &'static str) -> Call<'static> {
    Call::new(Port::Blob, op)
}

/// Blob calls. Every put — create-only, overwrite or compare-and-swap, through `put` or
/// `put_with_etag` — is the op `put` (`put` reaches the inner store as `put_with_etag`).
#[async_trait]
impl<S: BlobStore, I: Interceptor> LayeredBlob for Intercepted<S, I> {
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
        self.interceptor.intercept(blob("put").key(key), || self.inner.put_with_etag(key, bytes, options)).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.interceptor.intercept(blob("get").key(key), || self.inner.get(key)).await
    }
    async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
        self.interceptor.intercept(blob("get_with_etag").key(key), || self.inner.get_with_etag(key)).await
    }
    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        self.interceptor.intercept(blob("head").key(key), || BlobStore::head(&self.inner, key)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.interceptor.intercept(blob("delete").key(key), || self.inner.delete(key)).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
        self.interceptor
            .intercept(blob("list").key(prefix), || BlobStore::list(&self.inner, prefix, after, limit))
            .await
    }
    async fn list_with_delimiter(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<BlobListing> {
        let call = blob("list_with_delimiter").key(prefix);
        self.interceptor.intercept(call, || self.inner.list_with_delimiter(prefix, start_after, limit)).await
    }
    async fn presign_get(&self, key: &str, ttl_secs: u64) -> Result<String> {
        self.interceptor.intercept(blob("presign_get").key(key), || self.inner.presign_get(key, ttl_secs)).await
    }
    async fn health(&self) -> Result<()> {
        self.interceptor.intercept(blob("health"), || self.inner.health()).await
    }
}

fn queue(op: &'static str) -> Call<'static> {
    Call::new(Port::Queue, op)
}

#[async_trait]
impl<S: QueueStore, I: Interceptor> LayeredQueue for Intercepted<S, I> {
    async fn enqueue(&self, entry: QueueEntry) -> Result<QueueEntry> {
        let (id, key, request) = (entry.id.clone(), entry.key.clone(), entry.request_id.clone());
        let call = queue("enqueue").object(&key).request_id(&request).key(&id);
        self.interceptor.intercept(call, || self.inner.enqueue(entry)).await
    }
    async fn claim_due(&self, now: Timestamp, lease_until: Timestamp, limit: usize) -> Result<Vec<QueueEntry>> {
        self.interceptor.intercept(queue("claim_due"), || self.inner.claim_due(now, lease_until, limit)).await
    }
    async fn complete(&self, id: &str) -> Result<()> {
        self.interceptor.intercept(queue("complete").key(id), || self.inner.complete(id)).await
    }
    async fn fail(&self, id: &str, error: &str, next: NextStep) -> Result<()> {
        self.interceptor.intercept(queue("fail").key(id), || self.inner.fail(id, error, next)).await
    }
    async fn stats(&self, now: Timestamp) -> Result<QueueStats> {
        self.interceptor.intercept(queue("stats"), || self.inner.stats(now)).await
    }
    async fn list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>> {
        self.interceptor.intercept(queue("list"), || QueueStore::list(&self.inner, state, after, limit)).await
    }
    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<()> {
        self.interceptor.intercept(queue("retry_dead").key(id), || self.inner.retry_dead(id, now)).await
    }
    async fn cancel(&self, id: &str) -> Result<()> {
        self.interceptor.intercept(queue("cancel").key(id), || self.inner.cancel(id)).await
    }
    async fn get(&self, id: &str) -> Result<Option<QueueEntry>> {
        self.interceptor.intercept(queue("get").key(id), || self.inner.get(id)).await
    }
}

fn counter(op: &'static str) -> Call<'static> {
    Call::new(Port::Counter, op)
}

#[async_trait]
impl<S: CounterStore, I: Interceptor> LayeredCounter for Intercepted<S, I> {
    async fn add(&self, deltas: &[CounterDelta]) -> Result<()> {
        let call = counter("add");
        let call = if let Some(d) = deltas.first() { call.ctx(&d.ctx) } else { call };
        self.interceptor.intercept(call, || self.inner.add(deltas)).await
    }
    async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        self.interceptor.intercept(counter("totals").ctx(ctx), || self.inner.totals(ctx)).await
    }
    async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
        self.interceptor.intercept(counter("reset").ctx(ctx), || self.inner.reset(ctx, counters)).await
    }
}
