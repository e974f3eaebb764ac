//! The S3 shadow as a second copy: **rebuild** a pair's metadata from its blob store alone,
//! and the **export** that compares a store before a loss and after its rebuild.
//!
//! Rebuild, per pair and per collection found in the pair's snapshot store (one delimited
//! listing per level: tenants, databases, collections):
//! 1. read the collection's commit-log segments (`…/log/`) and merge them with the pure
//!    reader [`committed_versions`] (contradictions are `ChecksumMismatch`);
//! 2. in CV order, in batches of [`REBUILD_BATCH`]: fetch each version's committed snapshot
//!    (up to 16 at once), verify it against the record's checksum and seal, and
//!    [`MetaStore::import`](udm_core::ports::MetaStore::import) the versions with their OV, CV,
//!    timestamps, request ids and fingerprints (idempotent: a version already there with the
//!    same record is left alone, so an interrupted rebuild is resumed by running it again —
//!    a job record remembers each collection's last imported CV so the rerun starts there);
//! 3. mark the log complete up to the last CV (`shadow_logged`) and re-derive the counters
//!    from the versions ([`Admin::recount`](crate::Admin::recount) on that pair).
//!
//! Versions retention pruned are skipped (the version index flags them, and their snapshots
//! are gone). What the log does not hold is not rebuilt: versions committed after the last
//! completed flush (their snapshots exist, unconfirmed), and hard deletes (not logged yet —
//! their versions come back). See ARCHITECTURE.md, "Commit path and shadow log".

use std::collections::BTreeMap;
use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use udm_core::layout::Layout;
use udm_core::ports::{BlobStore, ImportedVersion, JobRecord, parse_object_cursor};
use udm_core::shadow::{LogEntry, LogSegment, committed_versions};
use udm_core::{Cv, Error, ErrorKind, ObjectKey, Result, RouteContext};

use crate::admin::Admin;
use crate::options::Collection;

/// Versions imported per `import` call.
pub const REBUILD_BATCH: usize = 256;

/// Snapshots fetched at once.
const FETCH_CONCURRENCY: usize = 16;

/// Keys per listing page.
const PAGE: usize = 1000;

/// Where a rebuild is (reported after every batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildProgress {
    /// The pair.
    pub pair: String,
    /// The collection (`tenant/db/collection`).
    pub collection: String,
    /// Versions of this collection done (imported or already there).
    pub done: u64,
    /// Versions of this collection in its log.
    pub total: u64,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Collections found in the blob store.
    pub collections: u64,
    /// Commit-log segments read.
    pub segments: u64,
    /// Versions imported.
    pub imported: u64,
    /// Versions that were already there (a resumed or repeated rebuild).
    pub unchanged: u64,
    /// Versions skipped because a previous run of this rebuild had imported them (job record).
    pub skipped: u64,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    /// Collections exported.
    pub collections: u64,
    /// Objects exported.
    pub objects: u64,
    /// Versions exported.
    pub versions: u64,
}

/// The collections with any blob under `layout` in `store` (delimited listing, level by level).
pub(crate) async fn collections_in(store: &dyn BlobStore, layout: &Layout) -> Result<Vec<RouteContext>> {
    let root = layout.root();
    let mut out = Vec::new();
    for tenant in prefixes(store, &root).await? {
        for db in prefixes(store, &tenant).await? {
            for coll in prefixes(store, &db).await? {
                let parts: Vec<&str> = coll[root.len()..].trim_end_matches('/').split('/').collect();
                if let [t, d, c] = parts.as_slice()
                    && let Ok(ctx) = RouteContext::new(t, d, c)
                {
                    out.push(ctx);
                }
            }
        }
    }
    Ok(out)
}

/// The CV a hard delete's tombstone at `key` covers, if there is one.
pub(crate) async fn tombstone_cv(store: &dyn BlobStore, key: &str) -> Result<Option<Cv>> {
    match store.get(key).await {
        Ok(bytes) => {
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::new(ErrorKind::ChecksumMismatch, format!("tombstone {key}: {e}")))?;
            let cv = v.get("cv").and_then(Value::as_u64);
            cv.map(|c| Some(Cv(c)))
                .ok_or_else(|| Error::new(ErrorKind::ChecksumMismatch, format!("tombstone {key}: no cv")))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The common prefixes one level under `prefix`.
async fn prefixes(store: &dyn BlobStore, prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_with_delimiter(prefix, after.as_deref(), PAGE).await?;
        out.extend(page.prefixes);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// Every committed version a collection's commit log holds, in CV order, and the number of
/// segments read.
pub(crate) async fn logged_versions(
    store: &dyn BlobStore,
    layout: &Layout,
    ctx: &RouteContext,
) -> Result<(Vec<LogEntry>, u64)> {
    let prefix = layout.log_prefix(ctx);
    let mut segments = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(&prefix, after.as_deref(), PAGE).await?;
        let fetched: Vec<Result<LogSegment>> = futures_util::stream::iter(&page.keys)
            .map(|key| async move { LogSegment::decode(&store.get(key).await?) })
            .buffered(FETCH_CONCURRENCY)
            .collect()
            .await;
        for s in fetched {
            segments.push(s?);
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let n = segments.len() as u64;
    let mut all: Vec<LogEntry> = committed_versions(segments)?.into_values().flatten().collect();
    all.sort_by_key(|e| e.record.cv);
    Ok((all, n))
}

impl Admin {
    /// Rebuilds the metadata of pair `pair` (by name; `None` = the only pair) from its blob
    /// store alone — after the total loss of its metadata database — calling `progress`
    /// after every batch. Per collection found in the blob store: the commit-log segments
    /// are merged, each logged version's snapshot is fetched and verified and the versions
    /// are imported in CV order (OV, CV, timestamps, request ids and fingerprints kept), the
    /// log is marked complete and the counters are re-derived. Idempotent, and resumable: a
    /// job record keeps each collection's last imported CV. Pruned versions are skipped.
    /// Versions committed after the last completed log flush, and hard deletes (not logged
    /// yet), are not rebuilt.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let udm = udm_facade::Udm::in_memory()?;
    /// let report = udm.admin().rebuild(None, &|p| eprintln!("{}: {}/{}", p.collection, p.done, p.total)).await?;
    /// println!("{} versions imported", report.imported);
    /// # Ok::<(), udm_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn rebuild(
        &self,
        pair: Option<&str>,
        progress: &(dyn Fn(&RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport> {
        let index = self.pair_index(pair)?;
        let (inner, name) = (&self.inner, self.inner.pairs[index].name.clone());
        let p = &inner.pairs[index];
        let mut report = RebuildReport::default();
        for ctx in collections_in(&*p.json, &inner.layout).await? {
            let (entries, segments) = logged_versions(&*p.json, &inner.layout, &ctx).await?;
            report.collections += 1;
            report.segments += segments;
            let job_id = format!("rebuild/{name}/{}", udm_core::layout::collection_record_prefix(&ctx));
            let resume = p.meta.load_job(&job_id).await?.and_then(|j| j.state.get("cv").and_then(Value::as_u64));
            let coll = Collection::new(inner.clone(), ctx.clone());
            let total = entries.len() as u64;
            let mut done = 0u64;
            let mut last = Cv::ZERO;
            // Counted as imported unless a previous run did part of the work.
            let mut counting = resume.is_none().then(Counting::default);
            for batch in entries.chunks(REBUILD_BATCH) {
                last = batch.last().map_or(last, |e| e.record.cv);
                let todo: Vec<&LogEntry> = batch.iter().filter(|e| resume.is_none_or(|r| e.record.cv.0 > r)).collect();
                report.skipped += (batch.len() - todo.len()) as u64;
                if !todo.is_empty() {
                    let versions = coll.imported(index, &todo, counting.as_mut()).await?;
                    let out = p.meta.import(versions).await?;
                    report.imported += out.inserted;
                    report.unchanged += out.unchanged;
                    let state = json!({"cv": last.0});
                    p.meta.save_job(&JobRecord { id: job_id.clone(), state, done: false }).await?;
                }
                done += batch.len() as u64;
                progress(&RebuildProgress { pair: name.clone(), collection: ctx.to_string(), done, total });
            }
            if last > Cv::ZERO {
                p.meta.shadow_logged(&ctx, last).await?;
            }
            let totals = match counting {
                Some(c) => {
                    let mut t = c.totals;
                    t.retain(|_, v| *v != 0);
                    t
                }
                None => coll.recount_on(index).await?,
            };
            p.counters.reset(&ctx, None).await?;
            let deltas: Vec<_> = totals
                .into_iter()
                .map(|(counter, delta)| udm_core::counters::CounterDelta { ctx: ctx.clone(), counter, delta })
                .collect();
            p.counters.add(&deltas).await?;
            p.meta.save_job(&JobRecord { id: job_id, state: json!({"cv": last.0}), done: true }).await?;
        }
        Ok(report)
    }

    /// Every version of every object of every collection found in the pairs' blob stores —
    /// metadata and data, as stored (content as references) — as JSON lines in a canonical,
    /// deterministic order (collection, object id, OV; keys sorted), then one line per
    /// collection with its counters and its CV on each pair. An audit export, and the way to
    /// compare a store before a loss and after its rebuild.
    pub async fn export<W: Write + Send>(&self, out: &mut W) -> Result<ExportReport> {
        let inner = &self.inner;
        let mut contexts = self.all_collections().await?;
        contexts.sort_by_key(ToString::to_string);
        let mut report = ExportReport::default();
        let io = |e: std::io::Error| Error::new(ErrorKind::Unavailable, format!("writing the export: {e}"));
        for ctx in contexts {
            report.collections += 1;
            let coll = Collection::new(inner.clone(), ctx.clone());
            // Objects of every pair, by id (an object lives on one pair).
            let mut objects: BTreeMap<String, usize> = BTreeMap::new();
            for (i, p) in inner.pairs.iter().enumerate() {
                let mut after: Option<String> = None;
                loop {
                    let page = p.meta.list_objects(&ctx, after.as_deref(), PAGE).await?;
                    for id in &page.items {
                        objects.insert(id.as_str().to_owned(), i);
                    }
                    match page.next {
                        Some(n) => after = Some(parse_object_cursor(&n)?.as_str().to_owned()),
                        None => break,
                    }
                }
            }
            for (id, pair) in objects {
                report.objects += 1;
                let key = ObjectKey::new(ctx.clone(), udm_core::ObjectId::new(&id)?);
                let mut pages = std::pin::pin!(crate::read::history_pages(&*inner.pairs[pair].meta, &key, None, PAGE));
                while let Some(page) = pages.try_next().await? {
                    for v in &page {
                        let env = coll.load_snapshot(pair, &v.snapshot).await?;
                        let line = json!({
                            "collection": ctx.to_string(), "id": id, "ov": v.ov.get(), "cv": v.cv.0,
                            "op": v.op.as_str(), "at": v.at.as_millis(), "deleted": v.deleted,
                            "restoredFrom": v.restored_from.map(udm_core::Ov::get),
                            "provenance": serde_json::to_value(&v.provenance).unwrap_or_default(),
                            "snapshot": serde_json::to_value(&v.snapshot).unwrap_or_default(),
                            "system": serde_json::to_value(&env.system).unwrap_or_default(),
                            "indexed": env.indexed, "data": env.data,
                        });
                        udm_core::canonical::write_canonical(&line, out).map_err(io)?;
                        out.write_all(b"\n").map_err(io)?;
                        report.versions += 1;
                    }
                }
            }
            let counters = inner.pairs.iter().map(|p| p.counters.totals(&ctx));
            let mut totals: BTreeMap<String, i64> = BTreeMap::new();
            for t in futures_util::future::join_all(counters).await {
                for (k, v) in t? {
                    *totals.entry(k).or_default() += v;
                }
            }
            totals.retain(|_, v| *v != 0);
            let mut cvs = Vec::new();
            for p in &inner.pairs {
                cvs.push(p.meta.collection_cv(&ctx).await?.0);
            }
            let line = json!({"collection": ctx.to_string(), "counters": totals, "cvs": cvs});
            udm_core::canonical::write_canonical(&line, out).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
        }
        Ok(report)
    }

    /// The index of pair `name` (`None`: the only pair).
    fn pair_index(&self, name: Option<&str>) -> Result<usize> {
        let pairs = &self.inner.pairs;
        match name {
            Some(n) => pairs.iter().position(|p| p.name == n).ok_or_else(|| {
                let names: Vec<&str> = pairs.iter().map(|p| p.name.as_str()).collect();
                Error::validation("pair", format!("no pair named {n:?} (pairs: {names:?})"))
            }),
            None if pairs.len() == 1 => Ok(0),
            None => Err(Error::validation("pair", "there are several pairs: name the one to rebuild")),
        }
    }
}

/// Counters re-derived while a rebuild imports (the versions arrive in CV order, so in OV
/// order per object), saving the second pass over every snapshot that a recount is.
#[derive(Debug, Default)]
pub(crate) struct Counting {
    was_deleted: std::collections::HashMap<ObjectKey, bool>,
    pub(crate) totals: BTreeMap<String, i64>,
}

impl Collection {
    /// The import of logged versions: each version's committed snapshot fetched and verified
    /// (up to [`FETCH_CONCURRENCY`] at once); versions retention pruned or a hard delete
    /// removed are left out. With `counting`, each imported version's counter deltas are
    /// added to it, in order.
    pub(crate) async fn imported(
        &self,
        pair: usize,
        entries: &[&LogEntry],
        counting: Option<&mut Counting>,
    ) -> Result<Vec<ImportedVersion>> {
        let inline_max = self.inner.config.storage.inline_max_bytes;
        let fetches = entries.iter().map(|e| async move {
            match self.load_snapshot(pair, &e.record.snapshot).await {
                Ok(env) => Ok(Some(env)),
                // Retention pruned it after it was logged, or a hard delete removed it (its
                // tombstone covers the CV): its snapshot is gone on purpose.
                Err(err) if err.kind() == ErrorKind::ChecksumMismatch => {
                    let t = self.inner.shadow_target(pair);
                    if let crate::index::Found::Pruned(_) = crate::index::by_ov(&t, &e.record.key, e.record.ov).await? {
                        return Ok(None);
                    }
                    let tombstone = self.inner.layout.tombstone(&e.record.key);
                    match tombstone_cv(&*t.json, &tombstone).await? {
                        Some(cv) if e.record.cv <= cv => Ok(None),
                        _ => Err(err),
                    }
                }
                Err(err) => Err(err),
            }
        });
        let fetched: Vec<Result<Option<udm_core::version::SnapshotEnvelope>>> =
            futures_util::stream::iter(fetches).buffered(FETCH_CONCURRENCY).collect().await;
        let rules = &self.inner.collection(&self.ctx).rules;
        let mut counting = counting;
        let mut out = Vec::with_capacity(entries.len());
        for (e, env) in entries.iter().zip(fetched) {
            let Some(env) = env? else { continue };
            if let Some(c) = counting.as_deref_mut() {
                let was_deleted = c.was_deleted.get(&e.record.key).copied().unwrap_or(false);
                let counted = udm_core::counters::CountedVersion {
                    op: e.record.op,
                    was_deleted,
                    system: &env.system,
                    provenance: &e.record.provenance,
                    data: &env.data,
                };
                for d in udm_core::counters::deltas(&self.ctx, &counted, rules) {
                    *c.totals.entry(d.counter).or_default() += d.delta;
                }
                c.was_deleted.insert(e.record.key.clone(), e.record.deleted);
            }
            let small = udm_core::canonical::canonical_bytes(&env.data).len() <= inline_max;
            out.push(ImportedVersion {
                record: e.record.clone(),
                system: env.system,
                indexed: env.indexed,
                inline: small.then_some(env.data),
                fingerprint: e.fingerprint,
            });
        }
        Ok(out)
    }
}
