//! Drift: the metadata store (desired) against the blob store's shadow and, optionally, an
//! *actual* state the caller supplies (e.g. what a downstream system holds), per object,
//! collection or everything.
//!
//! A collection is walked as a merge-join of id-sorted streams — each pair's metadata object
//! ids, each pair's object prefixes in the blob store, and the actual state — in the order a
//! blob store lists prefixes ([`udm_core::drift::SlashOrder`] re-orders the others), one page
//! at a time; the objects it yields are checked 16 at a time (their requests overlap, and
//! their findings are reported in id order once the window is done): memory stays bounded by
//! a page and 16 objects' histories, whatever the collection's size. Findings stream to a
//! callback.
//!
//! Per object it reports ([`DriftKind`]): an object one side lacks (`missing` / `extra`); the
//! head against the shadow's latest indexed version (`head_mismatch`); stored data that
//! fails its checksum, or a committed snapshot that is gone (`checksum_mismatch`); the
//! head's data against the shadow's and the actual state's, path by path (`modified`,
//! `missing`, `extra` with JSON Pointers under `/<id>`); snapshots no committed version names,
//! older than the grace period (`orphan_snapshot`); versions retention removed (`pruned`:
//! intentional, not drift). Per collection and pair: committed CVs the shadow log lacks
//! (`cv_gap`). With `deep`, every version record is compared with the index and every
//! snapshot verified.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use udm_core::drift::{DriftItem, DriftKind, DriftSource, DriftSummary, SlashOrder, diff_items, whole};
use udm_core::ports::MAX_LIST_PAGE;
use udm_core::version::SnapshotEnvelope;
use udm_core::{Checksum, Error, ErrorKind, Head, ObjectId, ObjectKey, Result, RouteContext, VersionRecord};

use futures_util::{StreamExt, TryStreamExt};

use crate::Admin;
use crate::index;

/// What [`Admin::drift`] checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftScope {
    /// One object.
    Object(RouteContext, String),
    /// One collection, on every pair.
    Collection(RouteContext),
    /// Every collection found in the pairs' blob stores.
    All,
    /// Every collection of one pair (by name): its metadata store against its blob store.
    Pair(String),
}

/// Options of [`Admin::drift`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftOptions {
    /// Unreferenced snapshots younger than this are writes in flight, not orphans.
    pub orphan_grace: Duration,
    /// Compare every version record with the shadow index and verify every snapshot (not
    /// only the head).
    pub deep: bool,
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self { orphan_grace: Duration::from_secs(3600), deep: false }
    }
}

/// The caller-supplied actual state of a collection: `(id, document)` in ascending id order
/// (e.g. parsed from JSON lines `{"id": …, "data": …}`); an item that is an error stops the
/// check with that error.
pub type ActualState = Box<dyn Iterator<Item = Result<(String, Value)>> + Send>;

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftFinding {
    /// The pair it was found on (empty for the actual state's objects no pair holds).
    pub pair: String,
    /// The collection.
    pub ctx: RouteContext,
    /// The object, for object-level findings.
    pub id: Option<String>,
    /// What was found.
    #[serde(flatten)]
    pub item: DriftItem,
}

/// What [`Admin::drift`] reports as it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DriftEvent {
    /// A finding.
    Finding(Box<DriftFinding>),
    /// Objects checked so far.
    Progress {
        /// Count.
        objects: u64,
    },
}

/// The totals of a drift check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriftTotals {
    /// Collections checked.
    pub collections: u64,
    /// Objects checked.
    pub objects: u64,
    /// Findings per kind; `in_sync` when nothing drifted.
    pub summary: DriftSummary,
}

/// A stream of ids in `<id>/` order, filled a page at a time.
struct Ids {
    queue: VecDeque<String>,
    order: SlashOrder,
    after: Option<String>,
    done: bool,
}

impl Ids {
    fn new() -> Self {
        Self { queue: VecDeque::new(), order: SlashOrder::default(), after: None, done: false }
    }
}

/// `a` and `b` compared as blob prefixes `a/` and `b/`.
fn slash_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes().chain([b'/']).cmp(b.bytes().chain([b'/']))
}

struct Sink<'a> {
    on: &'a mut (dyn FnMut(DriftEvent) + Send),
    totals: DriftTotals,
}

impl Sink<'_> {
    fn emit(&mut self, pair: &str, ctx: &RouteContext, id: Option<&str>, item: DriftItem) {
        self.totals.summary.add(&item);
        (self.on)(DriftEvent::Finding(Box::new(DriftFinding {
            pair: pair.to_owned(),
            ctx: ctx.clone(),
            id: id.map(str::to_owned),
            item,
        })));
    }

    fn object_done(&mut self) {
        self.totals.objects += 1;
        if self.totals.objects.is_multiple_of(100) {
            (self.on)(DriftEvent::Progress { objects: self.totals.objects });
        }
    }
}

impl Sink<'_> {
    /// Reports what one object's check found, in the order it was found.
    fn replay(&mut self, found: Found) {
        for step in found.0 {
            match step {
                Step::Finding(pair, ctx, id, item) => self.emit(&pair, &ctx, id.as_deref(), *item),
                Step::ObjectDone => self.object_done(),
            }
        }
    }
}

/// Objects of a collection checked at once; their findings are reported in id order.
const DRIFT_CONCURRENCY: usize = 16;

/// One thing an object's check reports.
enum Step {
    Finding(String, RouteContext, Option<String>, Box<DriftItem>),
    ObjectDone,
}

/// What one object's check found, kept until the objects before it have been reported.
#[derive(Default)]
struct Found(Vec<Step>);

impl Found {
    fn emit(&mut self, pair: &str, ctx: &RouteContext, id: Option<&str>, item: DriftItem) {
        self.0.push(Step::Finding(pair.to_owned(), ctx.clone(), id.map(str::to_owned), Box::new(item)));
    }

    fn object_done(&mut self) {
        self.0.push(Step::ObjectDone);
    }
}

/// One object of a collection to check: where it was listed, and its actual state if given.
struct Job {
    key: ObjectKey,
    in_meta: Vec<bool>,
    in_shadow: Vec<bool>,
    wanted: Option<Option<Value>>,
}

fn item(source: DriftSource, kind: DriftKind, path: &str, expected: Option<Value>, found: Option<Value>) -> DriftItem {
    DriftItem { source, kind, path: path.to_owned(), expected, found }
}

/// A stored copy in the blob store (snapshot or index segment `stored`) that reads back
/// damaged: a checksum mismatch naming it, with the read's error.
fn unreadable(path: &str, stored: &str, e: &Error) -> DriftItem {
    item(DriftSource::Shadow, DriftKind::ChecksumMismatch, path, Some(json!(stored)), Some(json!(e.to_string())))
}

fn summary_of(r: &VersionRecord) -> Value {
    json!({"ov": r.ov.get(), "cv": r.cv.0, "checksum": r.snapshot.checksum.to_string(), "snapshot": r.snapshot.key})
}

impl Admin {
    /// Compares the metadata store with the blob store's shadow (and, for a collection,
    /// with `actual` when given) and reports every finding to `on` as it is found, with
    /// progress every 100 objects; returns the totals. Read-only. Flush the shadow first
    /// ([`Admin::flush_shadow`]) so that versions committed in the last milliseconds are not
    /// reported as a gap. `actual` must be sorted by id; it is refused for [`DriftScope::All`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let udm = udm_facade::Udm::in_memory()?;
    /// use udm_facade::{DriftEvent, DriftOptions, DriftScope};
    /// let ctx = udm_core::RouteContext::new("acme", "crm", "users")?;
    /// udm.with(ctx.clone()).create(serde_json::json!({"a": 1}), udm_facade::WriteOpts::id("u1")).await?;
    /// udm.admin().flush_shadow().await?;
    /// let actual: udm_facade::ActualState = Box::new(vec![Ok(("u1".to_owned(), serde_json::json!({"a": 2})))].into_iter());
    /// let mut found = Vec::new();
    /// let totals = udm.admin().drift(DriftScope::Collection(ctx), DriftOptions::default(), Some(actual), &mut |e| {
    ///     if let DriftEvent::Finding(f) = e { found.push(*f) }
    /// }).await?;
    /// assert_eq!((totals.objects, totals.summary.modified), (1, 1));
    /// assert_eq!(found[0].item.path, "/u1/a");
    /// # Ok::<(), udm_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn drift(
        &self,
        scope: DriftScope,
        options: DriftOptions,
        actual: Option<ActualState>,
        on: &mut (dyn FnMut(DriftEvent) + Send),
    ) -> Result<DriftTotals> {
        let summary = DriftSummary { in_sync: true, ..DriftSummary::default() };
        let mut sink = Sink { on, totals: DriftTotals { summary, ..DriftTotals::default() } };
        match scope {
            DriftScope::Object(ctx, id) => {
                let key = ObjectKey::new(ctx, ObjectId::new(&id)?);
                let pair = self.inner.router.route(&key.ctx, &key.id).index;
                let head = self.inner.pairs[pair].meta.head(&key).await?;
                let mut wanted: Option<Option<Value>> = None;
                if let Some(items) = actual {
                    wanted = Some(None);
                    for a in items {
                        let (aid, doc) = a?;
                        if aid == id {
                            wanted = Some(Some(doc));
                        }
                    }
                }
                let present = head.is_some() || self.in_shadow(pair, &key).await?;
                if !present && !matches!(wanted, Some(Some(_))) {
                    return Err(Error::not_found(format!("object {key} (neither store holds it)")));
                }
                let mut found = Found::default();
                self.check_object(pair, &key, head, wanted, &options, &mut found).await?;
                sink.replay(found);
                sink.totals.collections = 1;
            }
            DriftScope::Collection(ctx) => self.check_collection(&ctx, actual, &options, None, &mut sink).await?,
            DriftScope::Pair(name) => {
                if actual.is_some() {
                    return Err(Error::validation("actual", "an actual state belongs to one collection"));
                }
                let pairs = &self.inner.pairs;
                let Some(pair) = pairs.iter().position(|p| p.name == name) else {
                    let names: Vec<&str> = pairs.iter().map(|p| p.name.as_str()).collect();
                    return Err(Error::validation("pair", format!("no pair named {name:?} (pairs: {names:?})")));
                };
                for ctx in crate::rebuild::collections_in(&*pairs[pair].json, &self.inner.layout).await? {
                    self.check_collection(&ctx, None, &options, Some(pair), &mut sink).await?;
                }
            }
            DriftScope::All => {
                if actual.is_some() {
                    return Err(Error::validation("actual", "an actual state belongs to one collection"));
                }
                for ctx in self.all_collections().await? {
                    self.check_collection(&ctx, None, &options, None, &mut sink).await?;
                }
            }
        }
        Ok(sink.totals)
    }

    async fn in_shadow(&self, pair: usize, key: &ObjectKey) -> Result<bool> {
        let prefix = self.inner.layout.object_prefix(key);
        Ok(!self.inner.pairs[pair].json.list(&prefix, None, 1).await?.keys.is_empty())
    }

    async fn check_collection(
        &self,
        ctx: &RouteContext,
        actual: Option<ActualState>,
        options: &DriftOptions,
        only: Option<usize>,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        sink.totals.collections += 1;
        let skipped = |i: usize| only.is_some_and(|o| o != i);
        for (i, p) in self.inner.pairs.iter().enumerate() {
            if skipped(i) {
                continue;
            }
            let committed = p.meta.collection_cv(ctx).await?;
            let logged = p.meta.shadow_pending(ctx, 1).await?.after;
            if logged < committed {
                let gap = item(
                    DriftSource::Shadow,
                    DriftKind::CvGap,
                    "",
                    Some(json!({"committed_cv": committed.0})),
                    Some(json!({"logged_cv": logged.0})),
                );
                sink.emit(&self.inner.pairs[i].name, ctx, None, gap);
            }
        }
        let n = self.inner.pairs.len();
        // A pair left out of scope contributes no ids.
        let ids = |i: usize| Ids { done: skipped(i), ..Ids::new() };
        let mut meta: Vec<Ids> = (0..n).map(ids).collect();
        let mut shadow: Vec<Ids> = (0..n).map(ids).collect();
        let mut actual = actual.map(Actual::new);
        let mut window = Vec::with_capacity(DRIFT_CONCURRENCY);
        loop {
            for i in 0..n {
                self.fill_meta(i, ctx, &mut meta[i]).await?;
                self.fill_shadow(i, ctx, &mut shadow[i]).await?;
            }
            if let Some(a) = actual.as_mut() {
                a.fill()?;
            }
            let heads = meta.iter().chain(&shadow).filter_map(|s| s.queue.front().map(String::as_str));
            let next = heads
                .chain(actual.as_ref().and_then(|a| a.queue.front().map(|(id, _)| id.as_str())))
                .min_by(|a, b| slash_cmp(a, b))
                .map(str::to_owned);
            let Some(id) = next else { break };
            let take = |s: &mut Ids| s.queue.front() == Some(&id) && s.queue.pop_front().is_some();
            let in_meta: Vec<bool> = meta.iter_mut().map(take).collect();
            let in_shadow: Vec<bool> = shadow.iter_mut().map(take).collect();
            let wanted = match actual.as_mut() {
                Some(a) if a.queue.front().is_some_and(|(a, _)| *a == id) => a.queue.pop_front().map(|(_, d)| Some(d)),
                Some(_) => Some(None),
                None => None,
            };
            let key = ObjectKey::new(ctx.clone(), ObjectId::new(&id)?);
            window.push(Job { key, in_meta, in_shadow, wanted });
            if window.len() == DRIFT_CONCURRENCY {
                self.check_window(&mut window, options, sink).await?;
            }
        }
        self.check_window(&mut window, options, sink).await
    }

    /// Checks the objects of `window` concurrently and reports them in order.
    async fn check_window(&self, window: &mut Vec<Job>, options: &DriftOptions, sink: &mut Sink<'_>) -> Result<()> {
        let checks = futures_util::stream::iter(window.drain(..)).map(|job| self.check_job(job, options));
        let found: Vec<Found> = checks.buffered(DRIFT_CONCURRENCY).try_collect().await?;
        found.into_iter().for_each(|f| sink.replay(f));
        Ok(())
    }

    /// One object of a collection on every pair that holds it.
    async fn check_job(&self, job: Job, options: &DriftOptions) -> Result<Found> {
        let (key, mut wanted, mut found) = (job.key, job.wanted, Found::default());
        let mut holders = Vec::new();
        for i in (0..self.inner.pairs.len()).filter(|i| job.in_meta[*i] || job.in_shadow[*i]) {
            let head = if job.in_meta[i] { self.inner.pairs[i].meta.head(&key).await? } else { None };
            holders.push((i, head));
        }
        // The actual state is compared once: on the pair holding the head (else the first).
        let compare_on = holders.iter().position(|(_, h)| h.is_some()).unwrap_or(0);
        let any = !holders.is_empty();
        for (n, (i, head)) in holders.into_iter().enumerate() {
            let mine = if n == compare_on { wanted.take() } else { None };
            self.check_object(i, &key, head, mine, options, &mut found).await?;
        }
        if !any && let Some(Some(doc)) = wanted {
            let id = key.id.as_str();
            let path = format!("/{}", udm_core::diff::escape_segment(id));
            found.emit("", &key.ctx, Some(id), whole(DriftSource::Actual, DriftKind::Extra, &path, None, Some(&doc)));
            found.object_done();
        }
        Ok(found)
    }

    async fn fill_meta(&self, pair: usize, ctx: &RouteContext, ids: &mut Ids) -> Result<()> {
        while ids.queue.is_empty() && !ids.done {
            let page = self.inner.pairs[pair].meta.list_objects(ctx, ids.after.as_deref(), MAX_LIST_PAGE).await?;
            for id in page.items {
                ids.queue.extend(ids.order.push(id.as_str().to_owned()));
            }
            match page.next {
                Some(n) => ids.after = Some(n),
                None => {
                    ids.queue.extend(ids.order.finish());
                    ids.done = true;
                }
            }
        }
        Ok(())
    }

    async fn fill_shadow(&self, pair: usize, ctx: &RouteContext, ids: &mut Ids) -> Result<()> {
        let prefix = format!("{}objects/", self.inner.layout.collection_prefix(ctx));
        while ids.queue.is_empty() && !ids.done {
            let page =
                self.inner.pairs[pair].json.list_with_delimiter(&prefix, ids.after.as_deref(), MAX_LIST_PAGE).await?;
            let found = page.prefixes.iter().filter_map(|p| p.strip_prefix(&prefix)?.strip_suffix('/'));
            ids.queue.extend(found.map(str::to_owned));
            match page.next {
                Some(n) => ids.after = Some(n),
                None => ids.done = true,
            }
        }
        Ok(())
    }

    /// Checks one object on `pair`. `actual`: `None` = no actual state given; `Some(None)` =
    /// the actual state lacks the object.
    async fn check_object(
        &self,
        pair: usize,
        key: &ObjectKey,
        head: Option<Head>,
        actual: Option<Option<Value>>,
        options: &DriftOptions,
        sink: &mut Found,
    ) -> Result<()> {
        let name = self.inner.pairs[pair].name.clone();
        let id = key.id.as_str();
        let path = format!("/{}", udm_core::diff::escape_segment(id));
        let t = self.inner.shadow_target(pair);
        // A damaged index segment is a finding, not a failed check. The shadow's latest
        // version is then unknown, so it is not compared with the head.
        let (entries, damaged) = index::readable_entries(&t, key).await?;
        for (segment, e) in &damaged {
            sink.emit(&name, &key.ctx, Some(id), unreadable(&path, segment, e));
        }
        let latest = entries.iter().rev().find(|e| !e.pruned).and_then(|e| e.record.clone());
        let pruned: Vec<u64> = entries.iter().filter(|e| e.pruned).map(|e| e.ov.get()).collect();
        if !pruned.is_empty() {
            let n = pruned.len();
            sink.emit(
                &name,
                &key.ctx,
                Some(id),
                item(DriftSource::Shadow, DriftKind::Pruned, &path, None, Some(json!({"ovs": pruned, "count": n}))),
            );
        }
        let coll = crate::Collection::new(self.inner.clone(), key.ctx.clone());
        // The desired document: the head's data (inline copy or snapshot), verified.
        let mut desired: Option<Value> = None;
        match (&head, &latest) {
            _ if !damaged.is_empty() => {}
            (None, None) => {}
            (Some(h), None) => {
                sink.emit(
                    &name,
                    &key.ctx,
                    Some(id),
                    item(
                        DriftSource::Shadow,
                        DriftKind::Missing,
                        &path,
                        Some(json!({"ov": h.ov.get(), "cv": h.cv.0})),
                        None,
                    ),
                );
            }
            (None, Some(r)) => {
                sink.emit(
                    &name,
                    &key.ctx,
                    Some(id),
                    item(DriftSource::Shadow, DriftKind::Extra, &path, None, Some(summary_of(r))),
                );
            }
            (Some(h), Some(r)) => {
                let same = h.ov == r.ov && h.cv == r.cv && h.snapshot == r.snapshot;
                if !same {
                    let expected = json!({"ov": h.ov.get(), "cv": h.cv.0, "checksum": h.snapshot.checksum.to_string(), "snapshot": h.snapshot.key});
                    sink.emit(
                        &name,
                        &key.ctx,
                        Some(id),
                        item(DriftSource::Shadow, DriftKind::HeadMismatch, &path, Some(expected), Some(summary_of(r))),
                    );
                }
            }
        }
        if let Some(h) = &head {
            if let Some(inline) = &h.inline {
                let computed = Checksum::of_json(inline);
                if computed != h.snapshot.checksum {
                    sink.emit(
                        &name,
                        &key.ctx,
                        Some(id),
                        item(
                            DriftSource::Desired,
                            DriftKind::ChecksumMismatch,
                            &path,
                            Some(json!(h.snapshot.checksum.to_string())),
                            Some(json!(computed.to_string())),
                        ),
                    );
                } else {
                    desired = Some(inline.clone());
                }
            }
            match coll.load_snapshot(pair, &h.snapshot).await {
                Ok(env) => match &desired {
                    Some(d) => {
                        let mut items = Vec::new();
                        diff_items(&path, DriftSource::Shadow, d, &env.data, &mut items);
                        for i in items {
                            sink.emit(&name, &key.ctx, Some(id), i);
                        }
                    }
                    None => desired = Some(env.data),
                },
                Err(e) if e.kind() == ErrorKind::ChecksumMismatch => {
                    sink.emit(&name, &key.ctx, Some(id), unreadable(&path, &h.snapshot.key, &e));
                }
                Err(e) => return Err(e),
            }
            // The shadow's latest names another snapshot: compare its data too.
            if damaged.is_empty()
                && let (Some(r), Some(d)) = (&latest, &desired)
                && r.snapshot.key != h.snapshot.key
            {
                match coll.load_snapshot(pair, &r.snapshot).await {
                    Ok(env) => {
                        let mut items = Vec::new();
                        diff_items(&path, DriftSource::Shadow, d, &env.data, &mut items);
                        for i in items {
                            sink.emit(&name, &key.ctx, Some(id), i);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::ChecksumMismatch => {
                        sink.emit(&name, &key.ctx, Some(id), unreadable(&path, &r.snapshot.key, &e));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(actual) = actual {
            let live = head.as_ref().is_some_and(|h| !h.is_deleted());
            match (live.then_some(desired.as_ref()).flatten(), actual) {
                (Some(d), Some(a)) => {
                    let mut items = Vec::new();
                    diff_items(&path, DriftSource::Actual, d, &a, &mut items);
                    for i in items {
                        sink.emit(&name, &key.ctx, Some(id), i);
                    }
                }
                (Some(d), None) => sink.emit(
                    &name,
                    &key.ctx,
                    Some(id),
                    whole(DriftSource::Actual, DriftKind::Missing, &path, Some(d), None),
                ),
                (None, Some(a)) if !live => sink.emit(
                    &name,
                    &key.ctx,
                    Some(id),
                    whole(DriftSource::Actual, DriftKind::Extra, &path, None, Some(&a)),
                ),
                _ => {}
            }
        }
        let mut referenced: BTreeSet<String> = entries
            .iter()
            .filter(|e| !e.pruned)
            .filter_map(|e| e.record.as_ref().map(|r| r.snapshot.key.clone()))
            .collect();
        if let Some(h) = &head {
            referenced.insert(h.snapshot.key.clone());
        }
        if options.deep && head.is_some() {
            self.deep_check(pair, key, &entries, &mut referenced, &path, sink).await?;
        } else if !damaged.is_empty() {
            // The damaged segments' snapshots are named by the metadata store's versions:
            // not orphans.
            let meta = &*self.inner.pairs[pair].meta;
            let mut pages = std::pin::pin!(crate::read::history_pages(meta, key, None, MAX_LIST_PAGE));
            while let Some(page) = pages.try_next().await? {
                referenced.extend(page.into_iter().map(|r| r.snapshot.key));
            }
        }
        self.orphans(pair, key, &referenced, options, &path, sink).await?;
        sink.object_done();
        Ok(())
    }

    /// Every version record against the index entries; every snapshot verified.
    async fn deep_check(
        &self,
        pair: usize,
        key: &ObjectKey,
        entries: &[udm_core::shadow::index::IndexEntry],
        referenced: &mut BTreeSet<String>,
        path: &str,
        sink: &mut Found,
    ) -> Result<()> {
        let name = self.inner.pairs[pair].name.clone();
        let id = key.id.as_str();
        let coll = crate::Collection::new(self.inner.clone(), key.ctx.clone());
        let by_ov: HashMap<u64, &udm_core::shadow::index::IndexEntry> =
            entries.iter().map(|e| (e.ov.get(), e)).collect();
        let mut pages =
            std::pin::pin!(crate::read::history_pages(&*self.inner.pairs[pair].meta, key, None, MAX_LIST_PAGE));
        while let Some(page) = pages.try_next().await? {
            for r in &page {
                referenced.insert(r.snapshot.key.clone());
                match by_ov.get(&r.ov.get()).and_then(|e| e.record.as_ref()) {
                    Some(s) if s == r => {}
                    Some(s) => sink.emit(
                        &name,
                        &key.ctx,
                        Some(id),
                        item(DriftSource::Shadow, DriftKind::Modified, path, Some(summary_of(r)), Some(summary_of(s))),
                    ),
                    None => sink.emit(
                        &name,
                        &key.ctx,
                        Some(id),
                        item(DriftSource::Shadow, DriftKind::Missing, path, Some(summary_of(r)), None),
                    ),
                }
                if let Err(e) = coll.load_snapshot(pair, &r.snapshot).await {
                    if e.kind() != ErrorKind::ChecksumMismatch {
                        return Err(e);
                    }
                    sink.emit(&name, &key.ctx, Some(id), unreadable(path, &r.snapshot.key, &e));
                }
            }
        }
        Ok(())
    }

    /// Snapshots of `key` no committed version names, older than the grace period.
    async fn orphans(
        &self,
        pair: usize,
        key: &ObjectKey,
        referenced: &BTreeSet<String>,
        options: &DriftOptions,
        path: &str,
        sink: &mut Found,
    ) -> Result<()> {
        let json = &self.inner.pairs[pair].json;
        let prefix = format!("{}versions/", self.inner.layout.object_prefix(key));
        let now = self.inner.clock.now().as_millis();
        let grace = i64::try_from(options.orphan_grace.as_millis()).unwrap_or(i64::MAX);
        let mut after: Option<String> = None;
        loop {
            let page = json.list(&prefix, after.as_deref(), MAX_LIST_PAGE).await?;
            for k in page.keys.iter().filter(|k| !referenced.contains(*k)) {
                // Its age: the instant its write stamped in the envelope (unreadable = old).
                let at = match json.get(k).await {
                    Ok(bytes) => SnapshotEnvelope::decode(&bytes, None).map(|e| e.at.as_millis()).unwrap_or(i64::MIN),
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if now.saturating_sub(at) >= grace {
                    let name = self.inner.pairs[pair].name.clone();
                    sink.emit(
                        &name,
                        &key.ctx,
                        Some(key.id.as_str()),
                        item(DriftSource::Shadow, DriftKind::OrphanSnapshot, path, None, Some(json!(k))),
                    );
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(()),
            }
        }
    }
}

/// The actual state's stream, re-ordered like the others.
struct Actual {
    source: ActualState,
    queue: VecDeque<(String, Value)>,
    order: SlashOrder,
    held: HashMap<String, Value>,
    last: Option<String>,
    line: u64,
    done: bool,
}

impl Actual {
    fn new(source: ActualState) -> Self {
        Self {
            source,
            queue: VecDeque::new(),
            order: SlashOrder::default(),
            held: HashMap::new(),
            last: None,
            line: 0,
            done: false,
        }
    }

    fn fill(&mut self) -> Result<()> {
        while self.queue.is_empty() && !self.done {
            let due = match self.source.next() {
                Some(item) => {
                    let (id, doc) = item?;
                    self.line += 1;
                    if self.last.as_ref().is_some_and(|l| *l >= id) {
                        return Err(Error::validation(
                            "actual",
                            format!(
                                "item {}: id {id:?} is not after the previous one (sort the actual state by id)",
                                self.line
                            ),
                        ));
                    }
                    self.last = Some(id.clone());
                    self.held.insert(id.clone(), doc);
                    self.order.push(id)
                }
                None => {
                    self.done = true;
                    self.order.finish()
                }
            };
            for id in due {
                if let Some(doc) = self.held.remove(&id) {
                    self.queue.push_back((id, doc));
                }
            }
        }
        Ok(())
    }
}
