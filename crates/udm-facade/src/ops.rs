//! Context-bound operations: [`Collection`] and its options.
//!
//! # Semantics
//! - **Writes** validate first (nothing is written on bad input), then route the object to its
//!   pair, externalize base64 props as content objects, put the snapshot envelope create-only,
//!   and commit the version atomically in the metadata store. A failed commit leaves at most
//!   an orphan snapshot; a committed version always has its snapshot.
//! - **Request ids**: every write has one (given, or generated). Replaying a committed request
//!   id returns the original result (`replayed: true`) and writes nothing; the same id with a
//!   different payload is [`ErrorKind::Conflict`](udm_core::ErrorKind::Conflict). A create
//!   without an id uses its request id as the object id, so replays find it.
//! - **Optimistic locking**: with `expected` OV the write commits only if the head is still
//!   there, else [`ErrorKind::VersionConflict`](udm_core::ErrorKind::VersionConflict) naming the
//!   current OV. Without it the write applies to the head it read, still atomically: a lost
//!   race is retried on the new head (updates, deletes) or re-merged (enrich).
//! - **Time** comes from the clock, made monotonic per object; `as_of(t)` returns the last
//!   version at or before `t`.
//! - **Deleted objects**: delete is a version (`deleted: true`, data kept). `get_latest` and
//!   `list` hide deleted objects unless asked; versions stay readable. Update/enrich of a
//!   deleted object is a [`Conflict`](udm_core::ErrorKind::Conflict); restore brings it back.
//! - **CVs** are assigned inside each pair's commit, so they order the commits of the objects
//!   one pair holds. An object lives on one pair: `as_of_cv` of an object is exact. A
//!   collection that lives on one pair (one pair, or a routing template without `{id}`) can be
//!   restored to a CV; one spread over pairs is restored by instant (to a CV: `Unsupported`).
//! - **Restore** appends a RESTORE version whose data equals the target version's, with
//!   `restoredFrom`; restoring to the current state is a no-op reported as
//!   [`RestoreOutcome::Unchanged`](crate::RestoreOutcome::Unchanged).

use std::sync::Arc;

use serde_json::Value;
use udm_core::query::{HistoryQuery, Page};
use udm_core::{Cv, ObjectId, ObjectKey, Ov, RequestId, Result, RouteContext, Timestamp, VersionRecord};

use crate::Inner;
use crate::observe::observe;
use crate::read::Lookup;
use crate::record::{HardDeleteReport, ListPage, Record, RestoreOutcome, Written};
use crate::write::Intent;

pub use crate::options::{
    BATCH_WRITE_CONCURRENCY, Collection, Confirm, ContentMode, EnrichOpts, ListQuery, ReadOpts, ReadSource, Target,
    WriteItem, WriteOpts,
};

impl Collection {
    pub(crate) fn new(inner: Arc<Inner>, ctx: RouteContext) -> Self {
        Self { inner, ctx }
    }

    /// The collection's context.
    pub fn context(&self) -> &RouteContext {
        &self.ctx
    }

    /// The span of a read-style operation on one object.
    fn span(&self, op: &'static str, id: &str) -> tracing::Span {
        tracing::debug_span!("udm.op", op, ctx = %self.ctx, object = id)
    }

    pub(crate) fn key(&self, id: &str) -> Result<ObjectKey> {
        let id = ObjectId::with_max(id, self.inner.config.limits.max_id_bytes)?;
        Ok(ObjectKey::new(self.ctx.clone(), id))
    }

    pub(crate) fn request_id(&self, opts: &WriteOpts) -> Result<RequestId> {
        match &opts.request_id {
            Some(r) => RequestId::with_max(r.as_str(), self.inner.config.limits.max_id_bytes),
            None => Ok(self.inner.ids.request_id()),
        }
    }

    /// Creates an object (version 1). `opts.id` or a generated id.
    pub async fn create(&self, data: Value, opts: WriteOpts) -> Result<Written> {
        let request = self.request_id(&opts)?;
        let id = match &opts.id {
            Some(id) => id.clone(),
            None => request.as_str().to_owned(),
        };
        let key = self.key(&id)?;
        self.write(Intent::create(key, data, request, &opts)).await
    }

    /// Replaces an object's data (optionally only if it is still at `expected`).
    pub async fn update(&self, id: &str, data: Value, expected: Option<Ov>, opts: WriteOpts) -> Result<Written> {
        let key = self.key(id)?;
        let request = self.request_id(&opts)?;
        self.write(Intent::update(key, data, expected, request, &opts)).await
    }

    /// Logically deletes an object (a DELETE version; data kept).
    pub async fn delete(&self, id: &str, expected: Option<Ov>, opts: WriteOpts) -> Result<Written> {
        let key = self.key(id)?;
        let request = self.request_id(&opts)?;
        self.write(Intent::delete(key, expected, request, &opts)).await
    }

    /// Deep-merges `patch` into the object (arrays union; provenance recorded).
    pub async fn enrich(&self, id: &str, patch: Value, opts: EnrichOpts) -> Result<Written> {
        let key = self.key(id)?;
        let request = self.request_id(&opts.write)?;
        self.write(Intent::enrich(key, patch, request, &opts)).await
    }

    /// Creates many objects: [`Collection::write_many`] of creates. One result per item, in
    /// order.
    ///
    /// ```
    /// # async fn demo(users: &udm_facade::Collection) {
    /// use serde_json::json;
    /// use udm_facade::WriteOpts;
    /// let items = (0..3).map(|i| (json!({"n": i}), WriteOpts::id(&format!("u{i}")))).collect();
    /// for result in users.create_many(items).await {
    ///     let written = result.expect("created");
    ///     assert_eq!(written.ov.get(), 1);
    /// }
    /// # }
    /// ```
    pub async fn create_many(&self, items: Vec<(Value, WriteOpts)>) -> Vec<Result<Written>> {
        self.write_many(items.into_iter().map(|(data, opts)| WriteItem::Create { data, opts }).collect()).await
    }

    /// Runs many writes — each its own atomic write with its own request id, validation and
    /// answer, in order — up to [`BATCH_WRITE_CONCURRENCY`] at a time. Their snapshot puts
    /// run concurrently and their commits reach the metadata store together, so the group
    /// committer commits them in a few transactions instead of one each. Items are not
    /// ordered against each other: two items of the same object take turns, in no set order,
    /// as two callers would (give them `expected` OVs, or put them in separate calls, to order them).
    pub async fn write_many(&self, items: Vec<WriteItem>) -> Vec<Result<Written>> {
        use futures_util::StreamExt;
        futures_util::stream::iter(items)
            .map(|item| async move {
                match item {
                    WriteItem::Create { data, opts } => self.create(data, opts).await,
                    WriteItem::Update { id, data, expected, opts } => self.update(&id, data, expected, opts).await,
                    WriteItem::Delete { id, expected, opts } => self.delete(&id, expected, opts).await,
                }
            })
            .buffered(BATCH_WRITE_CONCURRENCY)
            .collect()
            .await
    }

    /// Enriches many objects; one result per item, in order (each item is its own atomic write).
    pub async fn enrich_many(&self, items: Vec<(String, Value)>, opts: EnrichOpts) -> Vec<Result<Written>> {
        let mut out = Vec::with_capacity(items.len());
        for (i, (id, patch)) in items.into_iter().enumerate() {
            let mut item = opts.clone();
            item.write.request_id = opts.write.request_id.as_ref().map(|r| format!("{r}.{i}"));
            out.push(self.enrich(&id, patch, item).await);
        }
        out
    }

    /// Restores an object to an earlier version (append-only).
    pub async fn restore_object(&self, id: &str, target: Target, opts: WriteOpts) -> Result<RestoreOutcome> {
        let key = self.key(id)?;
        let request = self.request_id(&opts)?;
        let span = tracing::debug_span!("udm.restore_object", ctx = %self.ctx, object = id, request_id = %request);
        observe("restore_object", span, self.restore_one(key, target, request.clone(), &opts)).await
    }

    /// Irreversibly removes an object, its versions, snapshots and content. Requires
    /// `hard_delete.enabled` in config and [`Confirm::Yes`].
    pub async fn hard_delete(&self, id: &str, confirm: Confirm) -> Result<HardDeleteReport> {
        let key = self.key(id)?;
        observe("hard_delete", self.span("hard_delete", id), self.hard_delete_key(key, confirm)).await
    }

    /// The latest version (deleted objects are not-found unless `opts.include_deleted`).
    pub async fn get_latest(&self, id: &str, opts: ReadOpts) -> Result<Record> {
        let key = self.key(id)?;
        observe("get_latest", self.span("get_latest", id), self.read_latest(&key, opts)).await
    }

    /// Version `ov`. Looked up in the metadata store first; if its record is missing there but
    /// the object's head says it exists, it is read from the blob store's version index and
    /// snapshot (checksum-verified), and a version retention removed is
    /// [`ErrorKind::Pruned`](udm_core::ErrorKind::Pruned). With [`ReadSource::Shadow`] it is
    /// read from the blob store alone.
    pub async fn get_version(&self, id: &str, ov: Ov, opts: ReadOpts) -> Result<Record> {
        let key = self.key(id)?;
        let read = async {
            let (pair, rec) = self.version_record(&key, Lookup::Ov(ov), opts.source).await?;
            self.read_version(pair, &key, rec, opts).await
        };
        observe("get_version", self.span("get_version", id), read).await
    }

    /// The version current at `at` (inclusive).
    pub async fn as_of(&self, id: &str, at: Timestamp, opts: ReadOpts) -> Result<Record> {
        let key = self.key(id)?;
        let read = async {
            let (pair, rec) = self.version_record(&key, Lookup::At(at), opts.source).await?;
            self.read_version(pair, &key, rec, opts).await
        };
        observe("as_of", self.span("as_of", id), read).await
    }

    /// The object's last version with CV ≤ `cv`.
    pub async fn as_of_cv(&self, id: &str, cv: Cv, opts: ReadOpts) -> Result<Record> {
        let key = self.key(id)?;
        let read = async {
            let (pair, rec) = self.version_record(&key, Lookup::Cv(cv), opts.source).await?;
            self.read_version(pair, &key, rec, opts).await
        };
        observe("as_of_cv", self.span("as_of_cv", id), read).await
    }

    /// A page of the object's version records (metadata only).
    pub async fn history(&self, id: &str, query: HistoryQuery) -> Result<Page<VersionRecord>> {
        let key = self.key(id)?;
        let pair = self.locate(&key).await?.0;
        self.inner.pairs[pair].meta.history(&key, &query).await
    }

    /// A page of the object's version records from the blob store alone: its version index
    /// ([`ReadSource::Shadow`]), without asking the metadata store — e.g. to audit the shadow,
    /// or while the metadata store is lost. Pruned versions are skipped. One or two blob
    /// requests per page of up to 256 versions.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let udm = udm_facade::Udm::in_memory()?;
    /// let docs = udm.with(udm_core::RouteContext::new("acme", "crm", "docs")?);
    /// docs.create(serde_json::json!({"n": 1}), udm_facade::WriteOpts::id("d-1")).await?;
    /// udm.admin().flush_shadow().await?; // the index is written a few ms behind the commits
    /// let page = docs.shadow_history("d-1", udm_core::query::HistoryQuery::default()).await?;
    /// assert_eq!(page.items.len(), 1);
    /// # Ok::<(), udm_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn shadow_history(&self, id: &str, query: HistoryQuery) -> Result<Page<VersionRecord>> {
        let key = self.key(id)?;
        let pair = self.inner.router.route(&key.ctx, &key.id).index;
        crate::index::history(&self.inner.shadow_target(pair), &key, &query).await
    }

    /// A page of the collection's latest records, across every pair.
    ///
    /// An object whose stored data fails verification does not fail the page: it is
    /// reported in [`ListPage::failed`] with its error, and its data is never returned.
    pub async fn list(&self, query: ListQuery, opts: ReadOpts) -> Result<ListPage> {
        let span = tracing::debug_span!("udm.list", ctx = %self.ctx);
        observe("list", span, self.list_records(query, opts)).await
    }

    /// The collection's current CV on each pair (pair name, CV). Each pair numbers the
    /// commits of the objects it holds; a collection that lives on one pair (one pair, or a
    /// routing template without `{id}`) has one CV sequence.
    pub async fn current_cvs(&self) -> Result<Vec<(String, Cv)>> {
        let mut out = Vec::new();
        for p in &self.inner.pairs {
            out.push((p.name.clone(), p.meta.collection_cv(&self.ctx).await?));
        }
        Ok(out)
    }

    /// The pair this whole collection lives on, if it lives on one (one pair, or a routing
    /// template without `{id}`).
    pub fn single_pair(&self) -> Option<usize> {
        self.inner.router.collection_route(&self.ctx).map(|r| r.index)
    }
}
