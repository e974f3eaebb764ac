//! [`MetaStore`] and [`CounterStore`] on MongoDB.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use async_trait::async_trait;
use bson::{Bson, Document, doc};
use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::error::{Error as MongoError, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use udm_core::counters::CounterDelta;
use udm_core::layout::version_record_id;
use udm_core::layout::{collection_record_prefix, parse_collection_record_prefix};
use udm_core::ports::{
    Commit, Committed, CounterStore, Durable, HardDeleted, ImportOutcome, ImportedVersion, JobRecord, MetaStore,
    ShrinkPolicy, ShrinkStats, check_batch, check_prune, parse_object_cursor, select_collections,
};
use udm_core::query::{Cursor, HeadQuery, HistoryQuery, Order, Page, check_head_query, check_limit, select_heads};
use udm_core::shadow::ShadowPending;
use udm_core::version::SnapshotRef;
use udm_core::{
    Checksum, Cv, Error, Head, Name, ObjectId, ObjectKey, Ov, RequestId, Result, RouteContext, Timestamp, VersionRecord,
};

use crate::commit::{Attempt, commit_with_retry};
use crate::docs::{
    counter_field, counter_name, from_json, head_doc, json_of, obj_id, prefilter, request_id_of, sort_key_prefilter,
};
use crate::error::{classify, corrupt, retry_transaction, to_i64};
use crate::list::SortedList;
use crate::lookup::AsOf;
use crate::runtime::{Deadline, jitter_seed, secs};
use crate::{MongoStore, transaction_options};

/// Runs `$body` (an expression using the session `$s`, yielding
/// `Result<Step<T>, MongoError>`) in a transaction ([`transaction_options`]: snapshot reads,
/// majority + journaled commit): commits on [`Step::Commit`], aborts on [`Step::Abort`], and
/// retries the whole transaction on transient failures (including write conflicts with
/// racing writers) and the commit on unknown commit results, as the driver documents — but
/// only within the store's commit retry budget, with capped exponential backoff and jitter
/// between attempts. When the budget is spent the answer is a retryable `Unavailable`
/// ([`budget_exhausted`]). A transaction whose commit result stayed unknown is never run
/// again (it may have committed; a counter add would apply twice).
/// A macro rather than a closure-taking fn: async closures borrowing the session are not
/// `Send` for all lifetimes inside `async_trait` methods.
macro_rules! in_transaction {
    ($store:expr, $what:expr, |$s:ident| $body:expr) => {{
        let what: &str = $what;
        let deadline = Deadline::after($store.commit_retry_budget());
        let mut backoff = crate::runtime::backoff(jitter_seed());
        let mut session = $store.start().await?;
        let mut attempts: u32 = 0;
        let mut redo = false;
        loop {
            if attempts > 0 && !std::mem::take(&mut redo) {
                tokio::time::sleep(backoff.delay(attempts).min(deadline.remaining())).await;
            }
            attempts += 1;
            session
                .start_transaction()
                .with_options(transaction_options())
                .await
                .map_err(|e| classify("starting a transaction", e))?;
            let $s = &mut session;
            let failed = match $body.await {
                Ok(Step::Abort(answer)) => {
                    let _ = session.abort_transaction().await;
                    break answer;
                }
                Ok(Step::Redo) => {
                    let _ = session.abort_transaction().await;
                    redo = true;
                    continue;
                }
                Ok(Step::Commit(value)) => {
                    match commit_with_retry(&mut session, &deadline, &mut backoff, &mut attempts).await {
                        Ok(()) => break Ok(value),
                        Err(e) => e,
                    }
                }
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    e
                }
            };
            let unknown = failed.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT);
            if unknown || (retry_transaction(&failed) && deadline.expired()) {
                break Err(budget_exhausted(what, &deadline, attempts, &classify(what, failed)));
            }
            if !retry_transaction(&failed) {
                break Err(classify(what, failed));
            }
        }
    }};
}

/// The answer when a transaction's retry budget ran out: retryable `Unavailable`.
fn budget_exhausted(what: &str, deadline: &Deadline, attempts: u32, last: &Error) -> Error {
    Error::unavailable(format!(
        "{what}: commit retry budget of {} exhausted after {attempts} attempts: {last}",
        secs(deadline.budget())
    ))
}

/// What one transaction attempt decided: commit with this result, abort and answer, or
/// abort and run the attempt again at once (no backoff: nothing raced).
pub(crate) enum Step<T> {
    Commit(T),
    Abort(Result<T>),
    Redo,
}

impl MongoStore {
    /// A group commit (see `commit.rs`); with `durable`, the transaction's statements run
    /// while it is pending and the commit waits for it (once: a retried transaction after it
    /// resolved does not wait again).
    async fn commit_batch(&self, commits: Vec<Commit>, durable: Option<Durable>) -> Result<Vec<Result<Committed>>> {
        check_batch(&commits)?;
        if commits.is_empty() {
            if let Some(d) = durable {
                d.await?;
            }
            return Ok(Vec::new());
        }
        // Fast mode first for a lone commit or a batch of creates (see `commit.rs`).
        let fast = commits.len() == 1 || commits.iter().all(|c| c.expected.is_none());
        let careful = AtomicBool::new(!fast);
        let mut durable = durable;
        self.bounded_txn("commit", async {
            in_transaction!(self, "commit", |s| async {
                match self.commit_many_attempt(s, &commits, careful.load(AtomicOrdering::Relaxed)).await? {
                    Attempt::Done(Step::Commit(answers)) => match durable.take() {
                        Some(d) => match d.await {
                            Ok(()) => Ok(Step::Commit(answers)),
                            Err(e) => Ok(Step::Abort(Err(e))),
                        },
                        None => Ok(Step::Commit(answers)),
                    },
                    Attempt::Done(step) => Ok(step),
                    Attempt::Careful => {
                        careful.store(true, AtomicOrdering::Relaxed);
                        Ok(Step::Redo)
                    }
                }
            })
        })
        .await
    }

    async fn start(&self) -> Result<ClientSession> {
        self.client().start_session().await.map_err(|e| classify("starting a session", e))
    }

    /// One `$inc` per collection touched (one document holds a collection's counters).
    pub(crate) async fn apply_counters(
        &self,
        s: &mut ClientSession,
        deltas: &[CounterDelta],
    ) -> Result<(), MongoError> {
        let mut by_ctx: BTreeMap<String, Document> = BTreeMap::new();
        for d in deltas {
            let inc = by_ctx.entry(collection_record_prefix(&d.ctx)).or_default();
            let field = counter_field(&d.counter);
            let now = inc.get_i64(&field).unwrap_or(0);
            inc.insert(field, now + d.delta);
        }
        for (ctx, inc) in by_ctx {
            self.counters().update_one(doc! {"_id": ctx}, doc! {"$inc": inc}).upsert(true).session(&mut *s).await?;
        }
        Ok(())
    }

    async fn find_one_json<T: serde::de::DeserializeOwned>(
        &self,
        coll: mongodb::Collection<Document>,
        filter: Document,
        sort: Option<Document>,
        what: &str,
    ) -> Result<Option<T>> {
        let mut q = coll.find_one(filter);
        if let Some(sort) = sort {
            q = q.sort(sort);
        }
        match q.await.map_err(|e| classify(what, e))? {
            Some(d) => from_json(&d, what).map(Some),
            None => Ok(None),
        }
    }

    async fn collect_json<T: serde::de::DeserializeOwned>(
        &self,
        find: mongodb::action::Find<'_, Document>,
        what: &str,
    ) -> Result<Vec<T>> {
        let mut cursor = find.await.map_err(|e| classify(what, e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| classify(what, e))? {
            out.push(from_json(&d, what)?);
        }
        Ok(out)
    }

    /// What every list query of `q` carries: the collection, `deleted: false` unless deleted
    /// heads are wanted, the nested-index prefilter and the implied sort-key constraints
    /// (all supersets of the exact predicate, which decides afterwards).
    fn heads_filter(ctx: &RouteContext, q: &HeadQuery) -> Document {
        let mut f = doc! {"ctx": collection_record_prefix(ctx)};
        if !q.include_deleted {
            f.insert("deleted", false);
        }
        // Exact sort-key constraints go at the top level, on the fields the per-prop index
        // `{ctx, deleted, sk.<prop>, oid}` covers, so the server can use it (a test server
        // scans the whole collection when they sit inside `$and` or next to `idx.*`
        // conditions). They select a superset of the matches, like the `idx.*` prefilter,
        // which is pushed only when there are none: the exact predicate decides every page.
        let sk = sort_key_prefilter(&q.filter);
        if sk.is_empty()
            && let Some(pre) = prefilter(&q.filter)
        {
            f = merge_flat(f, pre);
        }
        for cond in sk {
            f = merge_flat(f, cond);
        }
        f
    }

    /// A list page by a full scan of the collection's matching heads (the fallback).
    async fn list_scan(&self, filter: Document, q: &HeadQuery) -> Result<Page<Head>> {
        let mut cursor = self.heads().find(filter).await.map_err(|e| classify("list", e))?;
        let mut heads = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| classify("list", e))? {
            let h: Head = from_json(&d, "head")?;
            if q.filter.matches_flat(&h.indexed) {
                heads.push(h);
            }
        }
        select_heads(heads, q)
    }
}

/// The commit a version document records, and the fingerprint of the request that wrote it.
pub(crate) fn committed_by(stored: &Document) -> Result<(Committed, Checksum)> {
    let v: VersionRecord = from_json(stored, "version")?;
    let fp = stored.get_str("fp").map_err(|e| corrupt("version", e)).and_then(Checksum::from_hex)?;
    Ok((Committed { key: v.key, ov: v.ov, cv: v.cv, at: v.at, replayed: true }, fp))
}

#[async_trait]
impl MetaStore for MongoStore {
    async fn commit_many(&self, commits: Vec<Commit>) -> Result<Vec<Result<Committed>>> {
        self.commit_batch(commits, None).await
    }

    async fn commit_many_after(&self, commits: Vec<Commit>, durable: Durable) -> Result<Vec<Result<Committed>>> {
        self.commit_batch(commits, Some(durable)).await
    }

    async fn shadow_backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
        check_limit(limit)?;
        self.bounded("shadow backlog", self.backlog(after, limit)).await
    }

    async fn shadow_pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
        check_limit(limit)?;
        self.bounded("shadow pending", self.pending(ctx, limit)).await
    }

    async fn shadow_logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
        self.bounded("shadow logged", self.logged(ctx, upto)).await
    }

    async fn find_request(&self, ctx: &RouteContext, request_id: &RequestId) -> Result<Option<(Committed, Checksum)>> {
        self.bounded("request", async {
            let found = self
                .versions()
                .find_one(doc! {"req": request_id_of(ctx, request_id)})
                .await
                .map_err(|e| classify("request", e))?;
            found.as_ref().map(committed_by).transpose()
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
        self.bounded("head", async { self.find_one_json(self.heads(), doc! {"_id": obj_id(key)}, None, "head").await })
            .await
    }

    // Version lookups are primary-key point lookups (see the `lookup` module), never a
    // range + sort whose plan is up to the server.
    async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
        self.bounded("version", self.version_by_ov(key, ov)).await
    }

    async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>> {
        self.bounded("version", self.version_as_of(key, AsOf::at(at))).await
    }

    async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>> {
        self.bounded("version", self.version_as_of(key, AsOf::cv(cv))).await
    }

    async fn history(&self, key: &ObjectKey, q: &HistoryQuery) -> Result<Page<VersionRecord>> {
        self.bounded("history", self.history_page(key, q)).await
    }

    async fn list_heads(&self, ctx: &RouteContext, q: &HeadQuery) -> Result<Page<Head>> {
        check_head_query(q)?;
        self.bounded("list", async {
            let after = q.after.as_deref().map(Cursor::decode).transpose()?;
            let mut filter = Self::heads_filter(ctx, q);
            if let Some(prop) = &q.sort_by {
                let list = SortedList { q, prop, base: filter.clone() };
                if let Some(page) = self.list_sorted(&list).await? {
                    return Ok(page);
                }
                return self.list_scan(filter, q).await;
            }
            // Sorted by id: push the cursor and the order down, read only what one page needs.
            let (cmp, dir) = if q.order == Order::Asc { ("$gt", 1) } else { ("$lt", -1) };
            if let Some(c) = &after {
                filter.insert("oid", doc! {cmp: c.id.as_str()});
            }
            // Windows of `limit + 1` in id order, each pushed down with its limit (the server
            // keeps only that many instead of sorting every match), until the page is full or
            // the matches run out; the exact predicate filters each window.
            let want = q.limit + 1;
            let window = i64::try_from(want).unwrap_or(i64::MAX);
            let mut heads = Vec::new();
            let mut from = filter;
            loop {
                let mut cursor = self
                    .heads()
                    .find(from.clone())
                    .sort(doc! {"oid": dir})
                    .limit(window)
                    .await
                    .map_err(|e| classify("list", e))?;
                let (mut returned, mut last) = (0usize, None);
                while let Some(d) = cursor.try_next().await.map_err(|e| classify("list", e))? {
                    returned += 1;
                    let h: Head = from_json(&d, "head")?;
                    last = Some(h.key.id.as_str().to_owned());
                    if q.filter.matches_flat(&h.indexed) && heads.len() < want {
                        heads.push(h);
                    }
                }
                match last {
                    Some(last) if returned == want && heads.len() < want => {
                        from.insert("oid", doc! {cmp: last});
                    }
                    _ => break,
                }
            }
            // The reference semantics decide the page (exact filter, sort, cursor, next).
            select_heads(heads, q)
        })
        .await
    }

    async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv> {
        self.bounded("collection cv", async {
            let found = self
                .cvs()
                .find_one(doc! {"_id": collection_record_prefix(ctx)})
                .await
                .map_err(|e| classify("collection cv", e))?;
            found.as_ref().map_or(Ok(Cv::ZERO), |d| crate::shadow::cv_of(d, "cv"))
        })
        .await
    }

    async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, policy: &ShrinkPolicy) -> Result<ShrinkStats> {
        self.bounded("shrink", async {
            let mut filter = doc! {"shadow_at": {"$ne": Bson::Null}};
            if let Some(ctx) = ctx {
                filter.insert("ctx", collection_record_prefix(ctx));
            }
            let coll = self.heads();
            let heads: Vec<Head> = self.collect_json(coll.find(filter), "head").await?;
            let mut stats = ShrinkStats::default();
            for mut h in heads {
                let Some(shadow) = h.dev_shadow.take() else { continue };
                stats.scanned += 1;
                if shadow.written_at >= policy.expired_before && shadow.bytes <= policy.max_bytes {
                    continue;
                }
                stats.removed += 1;
                stats.bytes_freed += shadow.bytes;
                if !policy.dry_run {
                    // Only if the head did not move meanwhile (a newer head keeps its own shadow).
                    let filter = doc! {"_id": obj_id(&h.key), "ov": to_i64(h.ov.get(), "ov")?};
                    self.heads().replace_one(filter, head_doc(&h)?).await.map_err(|e| classify("shrink", e))?;
                }
            }
            Ok(stats)
        })
        .await
    }

    async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted> {
        self.bounded_txn("hard delete", async {
            in_transaction!(self, "hard delete", |s| self.hard_delete_attempt(s, key, &counters))
        })
        .await
    }

    async fn list_collections(
        &self,
        tenant: &Name,
        db: Option<&Name>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RouteContext>> {
        check_limit(limit)?;
        self.bounded("list collections", async {
            let prefix = match db {
                Some(d) => format!("{tenant}/{d}/"),
                None => format!("{tenant}/"),
            };
            // Every collection ever committed to has a CV document `_id: <tenant>/<db>/<coll>/`.
            let end = format!("{}0", prefix.trim_end_matches('/'));
            let mut cursor = self
                .cvs()
                .find(doc! {"_id": {"$gte": &prefix, "$lt": &end}})
                .projection(doc! {"_id": 1})
                .await
                .map_err(|e| classify("list collections", e))?;
            let mut ctxs = Vec::new();
            while let Some(d) = cursor.try_next().await.map_err(|e| classify("list collections", e))? {
                let id = d.get_str("_id").map_err(|e| corrupt("cv", e))?;
                let Some(ctx) = parse_collection_record_prefix(id) else { continue };
                let any = self
                    .heads()
                    .find_one(doc! {"ctx": id})
                    .projection(doc! {"_id": 1})
                    .await
                    .map_err(|e| classify("list collections", e))?;
                if any.is_some() {
                    ctxs.push(ctx);
                }
            }
            select_collections(ctxs, tenant, db, after, limit)
        })
        .await
    }

    async fn list_objects(&self, ctx: &RouteContext, after: Option<&str>, limit: usize) -> Result<Page<ObjectId>> {
        check_limit(limit)?;
        let after = after.map(parse_object_cursor).transpose()?;
        self.bounded("list objects", async {
            let mut filter = doc! {"ctx": collection_record_prefix(ctx)};
            if let Some(a) = &after {
                filter.insert("oid", doc! {"$gt": a.as_str()});
            }
            let n = limit + 1;
            let heads = self.heads();
            let mut cursor = heads
                .find(filter)
                .sort(doc! {"oid": 1})
                .projection(doc! {"oid": 1})
                .limit(i64::try_from(n).unwrap_or(i64::MAX))
                .batch_size(u32::try_from(n).unwrap_or(u32::MAX))
                .await
                .map_err(|e| classify("list objects", e))?;
            let mut items = Vec::new();
            while let Some(d) = cursor.try_next().await.map_err(|e| classify("list objects", e))? {
                let oid = d.get_str("oid").map_err(|e| corrupt("head", e))?;
                items.push(ObjectId::with_max(oid, udm_core::id::MAX_STORED_ID_BYTES)?);
            }
            Ok(Page::from_overfetch(items, limit, ToString::to_string))
        })
        .await
    }

    async fn import(&self, versions: Vec<ImportedVersion>) -> Result<ImportOutcome> {
        self.bounded_txn("import", async {
            for v in &versions {
                v.check()?;
            }
            in_transaction!(self, "import", |s| self.import_attempt(s, &versions))
        })
        .await
    }

    async fn prune(&self, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>> {
        self.bounded_txn("prune", async { in_transaction!(self, "prune", |s| self.prune_attempt(s, key, ovs)) }).await
    }

    async fn save_job(&self, job: &JobRecord) -> Result<()> {
        self.bounded("save job", async {
            self.jobs()
                .replace_one(doc! {"_id": &job.id}, doc! {"_id": &job.id, "json": json_of(job)?})
                .upsert(true)
                .await
                .map_err(|e| classify("save job", e))?;
            Ok(())
        })
        .await
    }

    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.bounded("load job", async { self.find_one_json(self.jobs(), doc! {"_id": id}, None, "job").await }).await
    }

    async fn ping(&self) -> Result<()> {
        self.ping_latency().await.map(|_| ())
    }
}

/// Turns a domain failure inside a transaction attempt into "abort and answer it".
macro_rules! or_abort {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Step::Abort(Err(e))),
        }
    };
}

/// `_id` of the request record a pruned version leaves behind: outside every object's `_id`
/// range, so version lookups (by `_id`) never see it, while the unique `req` still finds it.
fn pruned_id(version_id: &str) -> String {
    format!("~pruned/{version_id}")
}

impl MongoStore {
    /// One attempt of a prune transaction (see [`MetaStore::prune`]): each pruned version
    /// document is replaced by its request record (same `req`, `fp` and record JSON, `_id`
    /// [`pruned_id`], `ov` negated so the unique `{obj, ov}` stays free, `pruned: true`).
    async fn prune_attempt(
        &self,
        s: &mut ClientSession,
        key: &ObjectKey,
        ovs: &[Ov],
    ) -> Result<Step<Vec<SnapshotRef>>, MongoError> {
        let obj = obj_id(key);
        let Some(hd) = self.heads().find_one(doc! {"_id": &obj}).session(&mut *s).await? else {
            return Ok(Step::Commit(Vec::new()));
        };
        let head: Head = or_abort!(from_json(&hd, "head"));
        or_abort!(check_prune(&head, ovs));
        let mut ovs: Vec<Ov> = ovs.iter().copied().filter(|o| *o < head.ov).collect();
        ovs.sort_unstable();
        ovs.dedup();
        let mut out = Vec::new();
        for ov in ovs {
            let vid = version_record_id(key, ov);
            let Some(mut d) = self.versions().find_one_and_delete(doc! {"_id": &vid}).session(&mut *s).await? else {
                continue;
            };
            let rec: VersionRecord = or_abort!(from_json(&d, "version"));
            out.push(rec.snapshot);
            d.insert("_id", pruned_id(&vid));
            d.insert("ov", -or_abort!(to_i64(ov.get(), "ov")));
            d.insert(crate::docs::PRUNED, true);
            self.versions().insert_one(d).session(&mut *s).await?;
        }
        Ok(Step::Commit(out))
    }

    async fn hard_delete_attempt(
        &self,
        s: &mut ClientSession,
        key: &ObjectKey,
        counters: &[CounterDelta],
    ) -> Result<Step<HardDeleted>, MongoError> {
        let obj = obj_id(key);
        let head_removed = self.heads().delete_one(doc! {"_id": &obj}).session(&mut *s).await?.deleted_count > 0;
        let mut snapshots = Vec::new();
        let mut cursor = self.versions().find(crate::docs::object_filter(&obj)).session(&mut *s).await?;
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            if crate::docs::is_pruned(&d) {
                continue;
            }
            match from_json::<VersionRecord>(&d, "version") {
                Ok(v) => snapshots.push(v.snapshot),
                Err(e) => return Ok(Step::Abort(Err(e))),
            }
        }
        self.versions().delete_many(doc! {"obj": &obj}).session(&mut *s).await?;
        self.drop_as_of(s, key).await?;
        if head_removed {
            self.apply_counters(s, counters).await?;
        }
        Ok(Step::Commit(HardDeleted { snapshots, head_removed }))
    }
}

#[async_trait]
impl CounterStore for MongoStore {
    async fn add(&self, deltas: &[CounterDelta]) -> Result<()> {
        self.bounded_txn("counters", async {
            in_transaction!(self, "counters", |s| async { self.apply_counters(s, deltas).await.map(Step::Commit) })
        })
        .await
    }

    async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        self.bounded("counters", async {
            let found = self
                .counters()
                .find_one(doc! {"_id": collection_record_prefix(ctx)})
                .await
                .map_err(|e| classify("counters", e))?;
            let mut out = BTreeMap::new();
            if let Some(Ok(c)) = found.as_ref().map(|d| d.get_document("c")) {
                for (field, v) in c {
                    let n = v.as_i64().ok_or_else(|| corrupt("counter", format!("{field} = {v}")))?;
                    out.insert(counter_name(field), n);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
        self.bounded("counters reset", async {
            let id = collection_record_prefix(ctx);
            let result = match counters {
                // The document also holds the collection's CV: only the counters go.
                None => self.counters().update_one(doc! {"_id": id}, doc! {"$unset": {"c": ""}}).await.map(|_| ()),
                Some(names) => {
                    let unset: Document =
                        names.iter().map(|n| (counter_field(n), Bson::String(String::new()))).collect();
                    self.counters().update_one(doc! {"_id": id}, doc! {"$unset": unset}).await.map(|_| ())
                }
            };
            result.map_err(|e| classify("counters reset", e))
        })
        .await
    }
}

/// `base` and `extra` as one flat filter when their keys are disjoint (so a server can match
/// top-level fields against an index), else as an `$and` of the two.
pub(crate) fn merge_flat(mut base: Document, extra: Document) -> Document {
    if extra.keys().any(|k| base.contains_key(k)) {
        return doc! { "$and": [base, extra] };
    }
    base.extend(extra);
    base
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn exhausted_budget_message() {
        let deadline = Deadline::after(Duration::from_secs(30));
        let e = budget_exhausted("commit", &deadline, 7, &Error::unavailable("write conflict"));
        assert_eq!(e.kind(), udm_core::ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(e.message().starts_with("commit: commit retry budget of 30s exhausted after 7 attempts: "), "{e}");
        assert!(e.message().contains("write conflict"), "{e}");
    }
}
