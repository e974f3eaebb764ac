//! In-memory metadata store (also the counter store of the same data).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use udm_core::counters::CounterDelta;
use udm_core::layout::collection_record_prefix;
use udm_core::ports::{
    Commit, Committed, CounterStore, HardDeleted, ImportOutcome, ImportedVersion, JobRecord, MetaStore, ShrinkPolicy,
    ShrinkStats, check_prune, parse_object_cursor, plan_batch, select_collections,
};
use udm_core::query::{HeadQuery, HistoryQuery, Page, check_limit, select_heads, select_history};
use udm_core::shadow::{LogEntry, ShadowPending};
use udm_core::version::SnapshotRef;
use udm_core::{
    Checksum, Cv, Error, Head, Name, ObjectId, ObjectKey, Ov, RequestId, Result, RouteContext, Timestamp, VersionRecord,
};

#[derive(Debug, Default)]
struct State {
    heads: BTreeMap<ObjectKey, Head>,
    versions: BTreeMap<ObjectKey, Vec<VersionRecord>>,
    cvs: HashMap<RouteContext, Cv>,
    requests: HashMap<(RouteContext, RequestId), (Committed, Checksum)>,
    counters: BTreeMap<RouteContext, BTreeMap<String, i64>>,
    jobs: HashMap<String, JobRecord>,
    /// The shadow log's watermark per collection.
    logged: HashMap<RouteContext, Cv>,
}

/// Metadata + counters in process memory: the reference implementation of the
/// [`MetaStore`] and [`CounterStore`] contracts. Every operation holds one lock, so each is
/// atomic and commits are serializable.
#[derive(Debug, Default)]
pub struct MemoryMeta {
    state: Mutex<State>,
}

impl MemoryMeta {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-written (every mutation is
        // checked before it starts), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn apply_counters(counters: &mut BTreeMap<RouteContext, BTreeMap<String, i64>>, deltas: &[CounterDelta]) {
    for d in deltas {
        *counters.entry(d.ctx.clone()).or_default().entry(d.counter.clone()).or_default() += d.delta;
    }
}

fn last_where(records: &[VersionRecord], pred: impl Fn(&VersionRecord) -> bool) -> Option<VersionRecord> {
    // Records are in OV order and both `at` and `cv` are non-decreasing in OV.
    let n = records.partition_point(pred);
    n.checked_sub(1).map(|i| records[i].clone())
}

#[async_trait]
impl MetaStore for MemoryMeta {
    async fn commit_many(&self, commits: Vec<Commit>) -> Result<Vec<Result<Committed>>> {
        let Some(first) = commits.first() else { return Ok(Vec::new()) };
        let ctx = first.key.ctx.clone();
        let mut s = self.lock();
        let plan =
            plan_batch(&commits, |r| s.requests.get(&(ctx.clone(), r.clone())).cloned(), |k| s.heads.get(k).cloned())?;
        let cv = s.cvs.get(&ctx).copied().unwrap_or(Cv::ZERO);
        let w = plan.finish(&commits, cv)?;
        if w.accepted.is_empty() {
            return Ok(w.answers);
        }
        s.cvs.insert(ctx.clone(), w.last_cv);
        for a in &w.accepted {
            s.versions.entry(a.record.key.clone()).or_default().push(a.record.clone());
            s.heads.insert(a.head.key.clone(), a.head.clone());
            let req = (ctx.clone(), a.record.provenance.request_id.clone());
            s.requests.insert(req, (a.done.clone(), a.fingerprint));
        }
        apply_counters(&mut s.counters, &w.counters);
        Ok(w.answers)
    }

    async fn shadow_backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
        check_limit(limit)?;
        let s = self.lock();
        let mut behind: Vec<(String, RouteContext)> = s
            .cvs
            .iter()
            .filter(|(ctx, cv)| s.logged.get(*ctx).copied().unwrap_or(Cv::ZERO) < **cv)
            .map(|(ctx, _)| (collection_record_prefix(ctx), ctx.clone()))
            .filter(|(p, _)| after.is_none_or(|a| p.as_str() > a))
            .collect();
        behind.sort();
        behind.truncate(limit + 1);
        let items = behind.into_iter().map(|(_, ctx)| ctx).collect();
        Ok(Page::from_overfetch(items, limit, collection_record_prefix))
    }

    async fn shadow_pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
        check_limit(limit)?;
        let s = self.lock();
        let after = s.logged.get(ctx).copied().unwrap_or(Cv::ZERO);
        let cv = s.cvs.get(ctx).copied().unwrap_or(Cv::ZERO);
        let upto = Cv(cv.0.min(after.0.saturating_add(limit as u64))).max(after);
        let mut entries: Vec<LogEntry> = s
            .versions
            .iter()
            .filter(|(k, _)| &k.ctx == ctx)
            .flat_map(|(_, records)| records.iter().filter(|r| r.cv > after && r.cv <= upto))
            .map(|r| {
                let fp = s.requests.get(&(ctx.clone(), r.provenance.request_id.clone())).map(|(_, fp)| *fp);
                fp.map(|fingerprint| LogEntry { record: r.clone(), fingerprint })
                    .ok_or_else(|| Error::internal(format!("{} of {} has no request record", r.ov, r.key)))
            })
            .collect::<Result<_>>()?;
        entries.sort_by_key(|e| e.record.cv);
        Ok(ShadowPending { after, upto, entries })
    }

    async fn shadow_logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
        let mut s = self.lock();
        let w = s.logged.entry(ctx.clone()).or_insert(Cv::ZERO);
        *w = (*w).max(upto);
        Ok(())
    }

    async fn find_request(&self, ctx: &RouteContext, request_id: &RequestId) -> Result<Option<(Committed, Checksum)>> {
        let s = self.lock();
        Ok(s.requests
            .get(&(ctx.clone(), request_id.clone()))
            .map(|(c, fp)| (Committed { replayed: true, ..c.clone() }, *fp)))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
        Ok(self.lock().heads.get(key).cloned())
    }

    async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
        let s = self.lock();
        let records = s.versions.get(key).map(Vec::as_slice).unwrap_or_default();
        // Records are in OV order, possibly with gaps (pruned versions).
        Ok(records.binary_search_by_key(&ov, |r| r.ov).ok().map(|i| records[i].clone()))
    }

    async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>> {
        let s = self.lock();
        Ok(s.versions.get(key).and_then(|r| last_where(r, |v| v.at <= at)))
    }

    async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>> {
        let s = self.lock();
        Ok(s.versions.get(key).and_then(|r| last_where(r, |v| v.cv <= cv)))
    }

    async fn history(&self, key: &ObjectKey, query: &HistoryQuery) -> Result<Page<VersionRecord>> {
        let s = self.lock();
        let records = s.versions.get(key).map(Vec::as_slice).unwrap_or_default();
        select_history(records, |r| r.ov, query)
    }

    async fn list_heads(&self, ctx: &RouteContext, query: &HeadQuery) -> Result<Page<Head>> {
        let s = self.lock();
        let heads = s.heads.values().filter(|h| &h.key.ctx == ctx).cloned().collect::<Vec<_>>();
        select_heads(heads, query)
    }

    async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv> {
        Ok(self.lock().cvs.get(ctx).copied().unwrap_or(Cv::ZERO))
    }

    async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, policy: &ShrinkPolicy) -> Result<ShrinkStats> {
        let mut s = self.lock();
        let mut stats = ShrinkStats::default();
        for h in s.heads.values_mut().filter(|h| ctx.is_none_or(|c| &h.key.ctx == c)) {
            let Some(shadow) = &h.dev_shadow else { continue };
            stats.scanned += 1;
            if shadow.written_at < policy.expired_before || shadow.bytes > policy.max_bytes {
                stats.removed += 1;
                stats.bytes_freed += shadow.bytes;
                if !policy.dry_run {
                    h.dev_shadow = None;
                }
            }
        }
        Ok(stats)
    }

    async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted> {
        let mut s = self.lock();
        let head_removed = s.heads.remove(key).is_some();
        let records = s.versions.remove(key).unwrap_or_default();
        s.requests.retain(|_, (c, _)| &c.key != key);
        if head_removed {
            apply_counters(&mut s.counters, &counters);
        }
        Ok(HardDeleted { snapshots: records.into_iter().map(|r| r.snapshot).collect(), head_removed })
    }

    async fn list_collections(
        &self,
        tenant: &Name,
        db: Option<&Name>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RouteContext>> {
        let s = self.lock();
        let mut ctxs: Vec<RouteContext> = s.heads.keys().map(|k| k.ctx.clone()).collect();
        ctxs.dedup();
        select_collections(ctxs, tenant, db, after, limit)
    }

    async fn list_objects(&self, ctx: &RouteContext, after: Option<&str>, limit: usize) -> Result<Page<ObjectId>> {
        check_limit(limit)?;
        let after = after.map(parse_object_cursor).transpose()?;
        let s = self.lock();
        let ids: Vec<ObjectId> = s
            .heads
            .keys()
            .filter(|k| &k.ctx == ctx && after.as_ref().is_none_or(|a| &k.id > a))
            .take(limit + 1)
            .map(|k| k.id.clone())
            .collect();
        Ok(Page::from_overfetch(ids, limit, ToString::to_string))
    }

    async fn import(&self, versions: Vec<ImportedVersion>) -> Result<ImportOutcome> {
        for v in &versions {
            v.check()?;
        }
        let mut s = self.lock();
        // Staged changes, applied only once every version passed (the batch is atomic).
        let mut heads: BTreeMap<ObjectKey, Option<Head>> = BTreeMap::new();
        let mut records: BTreeMap<ObjectKey, Vec<VersionRecord>> = BTreeMap::new();
        let mut requests: HashMap<(RouteContext, RequestId), (Committed, Checksum)> = HashMap::new();
        let mut cvs: HashMap<RouteContext, Cv> = HashMap::new();
        let mut out = ImportOutcome::default();
        for v in versions {
            let r = &v.record;
            let key = &r.key;
            let req = (key.ctx.clone(), r.provenance.request_id.clone());
            let recorded = requests.get(&req).or_else(|| s.requests.get(&req)).cloned();
            let list = records.entry(key.clone()).or_insert_with(|| s.versions.get(key).cloned().unwrap_or_default());
            let at = list.binary_search_by_key(&r.ov, |x| x.ov);
            let stored = at.ok().map(|i| &list[i]);
            // A stored record's fingerprint is its request's (kept even when pruned).
            let stored_fp = stored.and_then(|x| {
                let rq = (x.key.ctx.clone(), x.provenance.request_id.clone());
                requests.get(&rq).or_else(|| s.requests.get(&rq)).map(|(_, fp)| *fp)
            });
            if v.check_existing(stored.zip(stored_fp.as_ref()))? {
                out.unchanged += 1;
                continue;
            }
            if stored.is_some() {
                return Err(Error::internal("a stored version has no request record"));
            }
            v.check_request(recorded.as_ref().map(|(c, fp)| (c, fp)))?;
            let head = heads.entry(key.clone()).or_insert_with(|| s.heads.get(key).cloned());
            if v.check_head(head.as_ref())? {
                *head = Some(v.head());
                out.heads_moved += 1;
            }
            if let Err(i) = at {
                list.insert(i, r.clone());
            }
            requests.insert(req, (v.committed(), v.fingerprint));
            let cv = cvs.entry(key.ctx.clone()).or_insert_with(|| s.cvs.get(&key.ctx).copied().unwrap_or(Cv::ZERO));
            *cv = (*cv).max(r.cv);
            out.inserted += 1;
        }
        for (k, h) in heads {
            if let Some(h) = h {
                s.heads.insert(k, h);
            }
        }
        for (k, list) in records {
            if !list.is_empty() {
                s.versions.insert(k, list);
            }
        }
        s.requests.extend(requests);
        s.cvs.extend(cvs);
        Ok(out)
    }

    async fn prune(&self, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>> {
        let mut s = self.lock();
        let Some(head) = s.heads.get(key) else { return Ok(Vec::new()) };
        check_prune(head, ovs)?;
        let Some(list) = s.versions.get_mut(key) else { return Ok(Vec::new()) };
        let mut removed = Vec::new();
        list.retain(|r| {
            let gone = ovs.contains(&r.ov);
            if gone {
                removed.push(r.snapshot.clone());
            }
            !gone
        });
        Ok(removed)
    }

    async fn save_job(&self, job: &JobRecord) -> Result<()> {
        self.lock().jobs.insert(job.id.clone(), job.clone());
        Ok(())
    }

    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>> {
        Ok(self.lock().jobs.get(id).cloned())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl CounterStore for MemoryMeta {
    async fn add(&self, deltas: &[CounterDelta]) -> Result<()> {
        apply_counters(&mut self.lock().counters, deltas);
        Ok(())
    }

    async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        Ok(self.lock().counters.get(ctx).cloned().unwrap_or_default())
    }

    async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
        let mut s = self.lock();
        if let Some(all) = s.counters.get_mut(ctx) {
            match counters {
                None => all.clear(),
                Some(names) => names.iter().for_each(|n| {
                    all.remove(n);
                }),
            }
        }
        Ok(())
    }
}
