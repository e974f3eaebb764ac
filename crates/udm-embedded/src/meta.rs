//! [`MetaStore`] and [`CounterStore`] on redb.
//!
//! Listing heads: heads are keyed `<collection prefix><object id>`, so key order is id order.
//! - **No sort** (id order, with or without a filter): one range scan from the cursor's key
//!   in the page's direction, stopping after `limit + 1` matching heads. Each scanned head is
//!   unpacked (decompressed, about 4 µs for a 2 KiB head) and decoded *lightly* (id, indexed
//!   props, deleted flag; the rest — inline data, provenance, … — is skipped by the parser
//!   without being built), and only heads that pass are decoded in full, from the same
//!   unpacked text.
//! - **Sorted**: every head of the collection is unpacked and decoded lightly once (this is
//!   the remaining O(heads) cost per page: an index on the sort prop would remove it),
//!   candidates after the cursor are ranked by (sort value, id) keeping only the first
//!   `limit + 1`, and only those are read again by key, unpacked again and decoded in full.
//!   No head is decoded in full twice.
//!
//! Either way the final page is produced by [`select_heads`] over those `≤ limit + 1` heads, so
//! its semantics (and cursors) are exactly the reference implementation's.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::Ordering as AtomicOrdering;

use async_trait::async_trait;
use redb::{ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};
use udm_core::counters::CounterDelta;
use udm_core::layout::{collection_record_prefix, head_record_id, parse_collection_record_prefix, version_record_id};
use udm_core::ports::{
    Commit, Committed, CounterStore, HardDeleted, ImportOutcome, ImportedVersion, JobRecord, MetaStore, ShrinkPolicy,
    ShrinkStats, check_batch, check_prune, parse_object_cursor, plan_batch, select_collections,
};
use udm_core::query::{
    Cursor, HeadQuery, HistoryQuery, Order, Page, check_head_query, check_limit, history_cursor, select_heads, sort_cmp,
};
use udm_core::shadow::ShadowPending;

use crate::asof::{AsOf, as_of_in, index_in, unindex_in};
use crate::shadow::{backlog_in, cv_key, pending_in};
use udm_core::version::SnapshotRef;
use udm_core::{
    Checksum, Cv, Head, Name, ObjectId, ObjectKey, Ov, RequestId, Result, RouteContext, Timestamp, VersionRecord,
};

use crate::pack::{from_json, pack, unpack, unpacked};
use crate::{
    BY_CV, COUNTERS, CVS, EmbeddedStore, HEADS, JOBS, LOGGED, REQUESTS, REQUESTS_BY_OBJECT, VERSIONS, db_err, decode,
    encode,
};

/// A committed request: its result and payload fingerprint.
#[derive(Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    pub(crate) done: Committed,
    pub(crate) fingerprint: Checksum,
}

pub(crate) fn request_key(ctx: &RouteContext, request: &RequestId) -> String {
    format!("{}{request}", collection_record_prefix(ctx))
}

/// Row `key` of `t`, read by `f`.
fn get_with<V: redb::Value + 'static, T>(
    t: &impl ReadableTable<&'static str, V>,
    key: &str,
    f: impl FnOnce(V::SelfType<'_>) -> Result<T>,
) -> Result<Option<T>> {
    t.get(key).map_err(db_err)?.map(|v| f(v.value())).transpose()
}

/// The record in JSON-text row `key` of `t`.
pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static str>,
    key: &str,
    what: &str,
) -> Result<Option<T>> {
    get_with(t, key, |v| decode(v, what))
}

/// The record in packed row `key` of `t` (the `pack` module).
pub(crate) fn get_packed<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    what: &str,
) -> Result<Option<T>> {
    get_with(t, key, |v| unpack(v, what))
}

/// Every key of `t` that starts with `prefix`, with its row read by `f`, in key order.
fn scan_with<V: redb::Value + 'static, T>(
    t: &impl ReadableTable<&'static str, V>,
    prefix: &str,
    mut f: impl FnMut(V::SelfType<'_>) -> Result<T>,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in t.range(prefix..).map_err(db_err)? {
        let (k, v) = item.map_err(db_err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_owned(), f(v.value())?));
    }
    Ok(out)
}

/// Every `(key, value)` of JSON-text table `t` whose key starts with `prefix`, in key order.
fn scan_prefix(t: &impl ReadableTable<&'static str, &'static str>, prefix: &str) -> Result<Vec<(String, String)>> {
    scan_with(t, prefix, |v| Ok(v.to_owned()))
}

/// Every key of packed table `t` that starts with `prefix`, with its record, in key order.
fn scan_packed<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    what: &str,
) -> Result<Vec<(String, T)>> {
    scan_with(t, prefix, |v| unpack(v, what))
}

fn apply_counters(t: &mut Table<'_, &'static str, i64>, deltas: &[CounterDelta]) -> Result<()> {
    for d in deltas {
        let key = format!("{}{}", collection_record_prefix(&d.ctx), d.counter);
        let now = t.get(key.as_str()).map_err(db_err)?.map_or(0, |v| v.value());
        t.insert(key.as_str(), now + d.delta).map_err(db_err)?;
    }
    Ok(())
}

pub(crate) fn commit_many_in(tx: &WriteTransaction, commits: &[Commit]) -> Result<Vec<Result<Committed>>> {
    let Some(first) = commits.first() else { return Ok(Vec::new()) };
    let ctx = &first.key.ctx;
    let mut requests = tx.open_table(REQUESTS).map_err(db_err)?;
    let mut heads = tx.open_table(HEADS).map_err(db_err)?;
    // What the plan needs, read once: the batch's request records and heads.
    let mut recorded = HashMap::new();
    let mut current = HashMap::new();
    for c in commits {
        let request = &c.version.provenance.request_id;
        if let Some(r) = get_packed::<RequestRecord>(&requests, &request_key(ctx, request), "request")? {
            recorded.insert(request.clone(), (r.done, r.fingerprint));
        }
        if !current.contains_key(&c.key) {
            let head: Option<Head> = get_packed(&heads, &head_record_id(&c.key), "head")?;
            current.insert(c.key.clone(), head);
        }
    }
    let plan = plan_batch(commits, |r| recorded.get(r).cloned(), |k| current.get(k).cloned().flatten())?;
    let mut cvs = tx.open_table(CVS).map_err(db_err)?;
    let prefix = collection_record_prefix(ctx);
    let cv = Cv(cvs.get(prefix.as_str()).map_err(db_err)?.map_or(0, |v| v.value()));
    let w = plan.finish(commits, cv)?;
    if w.accepted.is_empty() {
        return Ok(w.answers);
    }
    cvs.insert(prefix.as_str(), w.last_cv.0).map_err(db_err)?;
    let mut versions = tx.open_table(VERSIONS).map_err(db_err)?;
    let mut by_object = tx.open_table(REQUESTS_BY_OBJECT).map_err(db_err)?;
    let mut by_cv = tx.open_table(BY_CV).map_err(db_err)?;
    for a in &w.accepted {
        let r = &a.record;
        let vid = version_record_id(&r.key, r.ov);
        versions.insert(vid.as_str(), pack(r)?.as_slice()).map_err(db_err)?;
        index_in(tx, r)?;
        by_cv.insert(cv_key(&prefix, r.cv).as_str(), vid.as_str()).map_err(db_err)?;
        let req_key = request_key(ctx, &r.provenance.request_id);
        let req = RequestRecord { done: a.done.clone(), fingerprint: a.fingerprint };
        requests.insert(req_key.as_str(), pack(&req)?.as_slice()).map_err(db_err)?;
        let by_obj = format!("{}/{}", head_record_id(&r.key), r.provenance.request_id);
        by_object.insert(by_obj.as_str(), req_key.as_str()).map_err(db_err)?;
    }
    for h in w.final_heads() {
        heads.insert(head_record_id(&h.key).as_str(), pack(h)?.as_slice()).map_err(db_err)?;
    }
    apply_counters(&mut tx.open_table(COUNTERS).map_err(db_err)?, &w.counters)?;
    Ok(w.answers)
}

fn hard_delete_in(tx: &WriteTransaction, key: &ObjectKey, counters: &[CounterDelta]) -> Result<HardDeleted> {
    let obj = head_record_id(key);
    let head_removed = tx.open_table(HEADS).map_err(db_err)?.remove(obj.as_str()).map_err(db_err)?.is_some();
    let mut versions = tx.open_table(VERSIONS).map_err(db_err)?;
    let mut snapshots = Vec::new();
    for (k, r) in scan_packed::<VersionRecord>(&versions, &format!("{obj}/"), "version")? {
        unindex_in(tx, &r)?;
        snapshots.push(r.snapshot);
        versions.remove(k.as_str()).map_err(db_err)?;
    }
    let mut by_obj = tx.open_table(REQUESTS_BY_OBJECT).map_err(db_err)?;
    let mut requests = tx.open_table(REQUESTS).map_err(db_err)?;
    for (k, req_key) in scan_prefix(&by_obj, &format!("{obj}/"))? {
        requests.remove(req_key.as_str()).map_err(db_err)?;
        by_obj.remove(k.as_str()).map_err(db_err)?;
    }
    if head_removed {
        apply_counters(&mut tx.open_table(COUNTERS).map_err(db_err)?, counters)?;
    }
    Ok(HardDeleted { snapshots, head_removed })
}

/// Imports `versions` in one write transaction (see [`MetaStore::import`]).
fn import_in(tx: &WriteTransaction, versions: &[ImportedVersion]) -> Result<ImportOutcome> {
    let mut heads = tx.open_table(HEADS).map_err(db_err)?;
    let mut records = tx.open_table(VERSIONS).map_err(db_err)?;
    let mut requests = tx.open_table(REQUESTS).map_err(db_err)?;
    let mut by_obj = tx.open_table(REQUESTS_BY_OBJECT).map_err(db_err)?;
    let mut cvs = tx.open_table(CVS).map_err(db_err)?;
    let mut out = ImportOutcome::default();
    for v in versions {
        let r = &v.record;
        let vid = version_record_id(&r.key, r.ov);
        let stored: Option<VersionRecord> = get_packed(&records, &vid, "version")?;
        let stored_fp = match &stored {
            Some(x) => {
                get_packed::<RequestRecord>(&requests, &request_key(&x.key.ctx, &x.provenance.request_id), "request")?
                    .map(|q| q.fingerprint)
            }
            None => None,
        };
        if v.check_existing(stored.as_ref().zip(stored_fp.as_ref()))? {
            out.unchanged += 1;
            continue;
        }
        if stored.is_some() {
            return Err(udm_core::Error::internal("a stored version has no request record"));
        }
        let req_key = request_key(&r.key.ctx, &r.provenance.request_id);
        let recorded: Option<RequestRecord> = get_packed(&requests, &req_key, "request")?;
        v.check_request(recorded.as_ref().map(|q| (&q.done, &q.fingerprint)))?;
        let obj = head_record_id(&r.key);
        let head: Option<Head> = get_packed(&heads, &obj, "head")?;
        if v.check_head(head.as_ref())? {
            heads.insert(obj.as_str(), pack(&v.head())?.as_slice()).map_err(db_err)?;
            out.heads_moved += 1;
        }
        records.insert(vid.as_str(), pack(r)?.as_slice()).map_err(db_err)?;
        index_in(tx, r)?;
        let prefix = collection_record_prefix(&r.key.ctx);
        tx.open_table(BY_CV).map_err(db_err)?.insert(cv_key(&prefix, r.cv).as_str(), vid.as_str()).map_err(db_err)?;
        if recorded.is_none() {
            let req = RequestRecord { done: v.committed(), fingerprint: v.fingerprint };
            requests.insert(req_key.as_str(), pack(&req)?.as_slice()).map_err(db_err)?;
            let by = format!("{obj}/{}", r.provenance.request_id);
            by_obj.insert(by.as_str(), req_key.as_str()).map_err(db_err)?;
        }
        let prefix = collection_record_prefix(&r.key.ctx);
        let now = cvs.get(prefix.as_str()).map_err(db_err)?.map_or(0, |c| c.value());
        cvs.insert(prefix.as_str(), now.max(r.cv.0)).map_err(db_err)?;
        out.inserted += 1;
    }
    Ok(out)
}

/// Prunes `ovs` of `key` in one write transaction (see [`MetaStore::prune`]).
fn prune_in(tx: &WriteTransaction, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>> {
    let heads = tx.open_table(HEADS).map_err(db_err)?;
    let Some(head) = get_packed::<Head>(&heads, &head_record_id(key), "head")? else { return Ok(Vec::new()) };
    check_prune(&head, ovs)?;
    let mut ovs = ovs.to_vec();
    ovs.sort_unstable();
    ovs.dedup();
    let mut versions = tx.open_table(VERSIONS).map_err(db_err)?;
    let mut out = Vec::new();
    for ov in ovs.into_iter().filter(|ov| *ov < head.ov) {
        if let Some(raw) = versions.remove(version_record_id(key, ov).as_str()).map_err(db_err)? {
            let r = unpack::<VersionRecord>(raw.value(), "version")?;
            unindex_in(tx, &r)?;
            out.push(r.snapshot);
        }
    }
    Ok(out)
}

/// The collections of a tenant (`prefix` = `<tenant>/` or `<tenant>/<db>/`) that have a head.
fn collections_in(tx: &redb::ReadTransaction, prefix: &str) -> Result<Vec<RouteContext>> {
    let cvs = tx.open_table(CVS).map_err(db_err)?;
    let heads = tx.open_table(HEADS).map_err(db_err)?;
    let mut out = Vec::new();
    for item in cvs.range(prefix..).map_err(db_err)? {
        let (k, _) = item.map_err(db_err)?;
        let coll = k.value();
        if !coll.starts_with(prefix) {
            break;
        }
        let Some(ctx) = parse_collection_record_prefix(coll) else { continue };
        let first = heads.range(coll..).map_err(db_err)?.next().transpose().map_err(db_err)?;
        if first.is_some_and(|(hk, _)| hk.value().starts_with(coll)) {
            out.push(ctx);
        }
    }
    Ok(out)
}

fn shrink_in(tx: &WriteTransaction, prefix: &str, policy: &ShrinkPolicy) -> Result<ShrinkStats> {
    let mut heads = tx.open_table(HEADS).map_err(db_err)?;
    let mut stats = ShrinkStats::default();
    for (k, mut h) in scan_packed::<Head>(&heads, prefix, "head")? {
        let Some(shadow) = h.dev_shadow.take() else { continue };
        stats.scanned += 1;
        if shadow.written_at < policy.expired_before || shadow.bytes > policy.max_bytes {
            stats.removed += 1;
            stats.bytes_freed += shadow.bytes;
            if !policy.dry_run {
                heads.insert(k.as_str(), pack(&h)?.as_slice()).map_err(db_err)?;
            }
        }
    }
    Ok(stats)
}

/// The fields of a stored head a list needs to decide whether (and where) it is in a page.
#[derive(Deserialize)]
struct HeadListing {
    key: ListingKey,
    indexed: serde_json::Map<String, serde_json::Value>,
    system: ListingSystem,
}

#[derive(Deserialize)]
struct ListingKey {
    id: ObjectId,
}

#[derive(Deserialize)]
struct ListingSystem {
    deleted: bool,
}

impl HeadListing {
    fn passes(&self, q: &HeadQuery) -> bool {
        (q.include_deleted || !self.system.deleted) && q.filter.matches_flat(&self.indexed)
    }
}

/// Full decodes of heads by list pages (tests count them).
#[cfg(test)]
static FULL_DECODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The head of JSON text `json` (from an unpacked row).
fn decode_head(json: &[u8]) -> Result<Head> {
    #[cfg(test)]
    FULL_DECODES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    from_json(json, "head")
}

/// One page of heads (see the module docs for the cost of each path).
fn list_heads_in(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    q: &HeadQuery,
) -> Result<Page<Head>> {
    let after = q.after.as_deref().map(Cursor::decode).transpose()?;
    let heads = match (&q.sort_by, after) {
        (None, None) => heads_by_id(t, prefix, q, None)?,
        (None, Some(c)) if c.value.is_none() => heads_by_id(t, prefix, q, Some(&c.id))?,
        (sort_by, after) => heads_sorted(t, prefix, q, sort_by.as_deref(), after.as_ref())?,
    };
    select_heads(heads, q)
}

/// The first `limit + 1` passing heads in id order (`q.order`) strictly after `after`.
fn heads_by_id(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    q: &HeadQuery,
    after: Option<&ObjectId>,
) -> Result<Vec<Head>> {
    let cursor_key = after.map(|id| format!("{prefix}{id}"));
    // Keys of this collection sort between `prefix` and `prefix` with its final '/' bumped to '0'.
    let end = format!("{}0", prefix.strip_suffix('/').unwrap_or(prefix));
    let (lo, hi) = match (q.order, cursor_key.as_deref()) {
        (Order::Asc, Some(c)) => (Bound::Excluded(c), Bound::Excluded(end.as_str())),
        (Order::Desc, Some(c)) => (Bound::Included(prefix), Bound::Excluded(c)),
        (_, None) => (Bound::Included(prefix), Bound::Excluded(end.as_str())),
    };
    let range = t.range::<&str>((lo, hi)).map_err(db_err)?;
    let rows: Box<dyn Iterator<Item = _>> = if q.order == Order::Asc { Box::new(range) } else { Box::new(range.rev()) };
    let mut out = Vec::new();
    for row in rows {
        let (k, v) = row.map_err(db_err)?;
        if !k.value().starts_with(prefix) {
            continue;
        }
        let json = unpacked(v.value(), "head")?;
        let listing: HeadListing = from_json(&json, "head")?;
        if listing.passes(q) {
            out.push(decode_head(&json)?);
            if out.len() > q.limit {
                break;
            }
        }
    }
    Ok(out)
}

/// The first `limit + 1` passing heads in (sort value, id) order strictly after `after`.
fn heads_sorted(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    q: &HeadQuery,
    sort_by: Option<&str>,
    after: Option<&Cursor>,
) -> Result<Vec<Head>> {
    let mut candidates: Vec<(Option<serde_json::Value>, ObjectId, String)> = Vec::new();
    for row in t.range(prefix..).map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        let mut listing: HeadListing = from_json(&unpacked(v.value(), "head")?, "head")?;
        if !listing.passes(q) {
            continue;
        }
        let value = sort_by.and_then(|p| listing.indexed.remove(p));
        let beyond = after.is_none_or(|c| {
            let o = c.cmp_item(value.as_ref(), &listing.key.id);
            if q.order == Order::Asc { o == Ordering::Greater } else { o == Ordering::Less }
        });
        if beyond {
            candidates.push((value, listing.key.id, k.value().to_owned()));
        }
    }
    let rank = |a: &(Option<serde_json::Value>, ObjectId, String),
                b: &(Option<serde_json::Value>, ObjectId, String)| {
        let o = sort_cmp(a.0.as_ref(), b.0.as_ref()).then_with(|| a.1.cmp(&b.1));
        if q.order == Order::Asc { o } else { o.reverse() }
    };
    let keep = q.limit + 1;
    if candidates.len() > keep {
        candidates.select_nth_unstable_by(keep - 1, rank);
        candidates.truncate(keep);
    }
    let mut out = Vec::with_capacity(candidates.len());
    for (_, _, key) in candidates {
        let raw = t.get(key.as_str()).map_err(db_err)?;
        let raw = raw.ok_or_else(|| udm_core::Error::internal(format!("head {key} vanished in a snapshot")))?;
        out.push(decode_head(&unpacked(raw.value(), "head")?)?);
    }
    Ok(out)
}

impl EmbeddedStore {
    /// The last version of `key` at or before `cond`, or `None` (see the `asof` module).
    async fn version_as_of(&self, key: &ObjectKey, cond: AsOf) -> Result<Option<VersionRecord>> {
        let reads = self.read_counter();
        self.read_here(|tx| as_of_in(tx, key, cond, &reads))
    }
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn commit_many(&self, commits: Vec<Commit>) -> Result<Vec<Result<Committed>>> {
        check_batch(&commits)?;
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        // Unsynced, its input logged: durable once the log record is (the `wal` module).
        // Staged snapshots waiting for this file's next commit join it (the `stage` module).
        let db = self.db();
        let redo = crate::wal::Redo::Commit { staged: Vec::new(), commits };
        self.write_logged(redo, true, move |tx, r| match r {
            crate::wal::Redo::Commit { staged, commits } => {
                *staged = db.pending.carry(tx)?;
                commit_many_in(tx, commits)
            }
            crate::wal::Redo::Blob { .. } => Err(udm_core::Error::internal("embedded store: not a commit")),
        })
        .await
    }

    async fn shadow_backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
        check_limit(limit)?;
        let after = after.map(str::to_owned);
        self.read(move |tx| backlog_in(tx, after.as_deref(), limit)).await
    }

    async fn shadow_pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
        check_limit(limit)?;
        let ctx = ctx.clone();
        self.read(move |tx| pending_in(tx, &ctx, limit)).await
    }

    async fn shadow_logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
        let prefix = collection_record_prefix(ctx);
        self.write(move |tx| {
            let mut t = tx.open_table(LOGGED).map_err(db_err)?;
            let now = t.get(prefix.as_str()).map_err(db_err)?.map_or(0, |v| v.value());
            if upto.0 > now {
                t.insert(prefix.as_str(), upto.0).map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn find_request(&self, ctx: &RouteContext, request_id: &RequestId) -> Result<Option<(Committed, Checksum)>> {
        let key = request_key(ctx, request_id);
        self.read_here(|tx| {
            let t = tx.open_table(REQUESTS).map_err(db_err)?;
            let r: Option<RequestRecord> = get_packed(&t, &key, "request")?;
            Ok(r.map(|r| (Committed { replayed: true, ..r.done }, r.fingerprint)))
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
        let id = head_record_id(key);
        self.read_here(|tx| get_packed(&tx.open_table(HEADS).map_err(db_err)?, &id, "head"))
    }

    async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
        let (id, reads) = (version_record_id(key, ov), self.read_counter());
        self.read_here(|tx| {
            reads.fetch_add(1, AtomicOrdering::Relaxed);
            get_packed(&tx.open_table(VERSIONS).map_err(db_err)?, &id, "version")
        })
    }

    async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>> {
        self.version_as_of(key, AsOf::At(at)).await
    }

    async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>> {
        self.version_as_of(key, AsOf::Cv(cv)).await
    }

    async fn history(&self, key: &ObjectKey, q: &HistoryQuery) -> Result<Page<VersionRecord>> {
        check_limit(q.limit)?;
        let (key, q, reads) = (key.clone(), *q, self.read_counter());
        self.read(move |tx| {
            // One range seek, then at most `limit + 1` records in key (= OV) order.
            reads.fetch_add(1, AtomicOrdering::Relaxed);
            let t = tx.open_table(VERSIONS).map_err(db_err)?;
            let first = version_record_id(&key, Ov::FIRST);
            let last = version_record_id(&key, Ov::new(u64::MAX)?);
            let (lo, hi) = match (q.order, q.after) {
                (Order::Asc, Some(a)) => (version_record_id(&key, a.next()?), last),
                (Order::Desc, Some(a)) if a == Ov::FIRST => return Ok(Page { items: vec![], next: None }),
                (Order::Desc, Some(a)) => (first, version_record_id(&key, Ov::new(a.get() - 1)?)),
                (_, None) => (first, last),
            };
            let range = t.range(lo.as_str()..=hi.as_str()).map_err(db_err)?;
            let rows: Box<dyn Iterator<Item = _>> =
                if q.order == Order::Asc { Box::new(range) } else { Box::new(range.rev()) };
            let mut items = Vec::new();
            for row in rows.take(q.limit + 1) {
                let (_, v) = row.map_err(db_err)?;
                items.push(unpack::<VersionRecord>(v.value(), "version")?);
            }
            Ok(Page::from_overfetch(items, q.limit, |r| history_cursor(r.ov)))
        })
        .await
    }

    async fn list_heads(&self, ctx: &RouteContext, q: &HeadQuery) -> Result<Page<Head>> {
        check_head_query(q)?;
        let (prefix, q) = (collection_record_prefix(ctx), q.clone());
        self.read(move |tx| list_heads_in(&tx.open_table(HEADS).map_err(db_err)?, &prefix, &q)).await
    }

    async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv> {
        let prefix = collection_record_prefix(ctx);
        self.read(move |tx| {
            let t = tx.open_table(CVS).map_err(db_err)?;
            Ok(Cv(t.get(prefix.as_str()).map_err(db_err)?.map_or(0, |v| v.value())))
        })
        .await
    }

    async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, policy: &ShrinkPolicy) -> Result<ShrinkStats> {
        let (prefix, policy) = (ctx.map(collection_record_prefix).unwrap_or_default(), *policy);
        self.write(move |tx| shrink_in(tx, &prefix, &policy)).await
    }

    async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted> {
        let key = key.clone();
        self.write(move |tx| hard_delete_in(tx, &key, &counters)).await
    }

    async fn list_collections(
        &self,
        tenant: &Name,
        db: Option<&Name>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RouteContext>> {
        check_limit(limit)?;
        let prefix = match db {
            Some(d) => format!("{tenant}/{d}/"),
            None => format!("{tenant}/"),
        };
        let ctxs = self.read(move |tx| collections_in(tx, &prefix)).await?;
        select_collections(ctxs, tenant, db, after, limit)
    }

    async fn list_objects(&self, ctx: &RouteContext, after: Option<&str>, limit: usize) -> Result<Page<ObjectId>> {
        check_limit(limit)?;
        let after = after.map(parse_object_cursor).transpose()?;
        let prefix = collection_record_prefix(ctx);
        self.read(move |tx| {
            let t = tx.open_table(HEADS).map_err(db_err)?;
            let start = after.as_ref().map(|a| format!("{prefix}{a}"));
            let lo = match &start {
                Some(s) => Bound::Excluded(s.as_str()),
                None => Bound::Included(prefix.as_str()),
            };
            let mut items = Vec::new();
            for row in t.range::<&str>((lo, Bound::Unbounded)).map_err(db_err)? {
                let (k, _) = row.map_err(db_err)?;
                let Some(id) = k.value().strip_prefix(prefix.as_str()) else { break };
                items.push(ObjectId::with_max(id, udm_core::id::MAX_STORED_ID_BYTES)?);
                if items.len() > limit {
                    break;
                }
            }
            Ok(Page::from_overfetch(items, limit, ToString::to_string))
        })
        .await
    }

    async fn import(&self, versions: Vec<ImportedVersion>) -> Result<ImportOutcome> {
        for v in &versions {
            v.check()?;
        }
        self.write(move |tx| import_in(tx, &versions)).await
    }

    async fn prune(&self, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>> {
        let (key, ovs) = (key.clone(), ovs.to_vec());
        self.write(move |tx| prune_in(tx, &key, &ovs)).await
    }

    async fn save_job(&self, job: &JobRecord) -> Result<()> {
        let (id, json) = (job.id.clone(), encode(job)?);
        self.write(move |tx| {
            tx.open_table(JOBS).map_err(db_err)?.insert(id.as_str(), json.as_str()).map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>> {
        let id = id.to_owned();
        self.read(move |tx| get_json(&tx.open_table(JOBS).map_err(db_err)?, &id, "job")).await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|tx| tx.open_table(HEADS).map(|_| ()).map_err(db_err)).await
    }
}

#[async_trait]
impl CounterStore for EmbeddedStore {
    async fn add(&self, deltas: &[CounterDelta]) -> Result<()> {
        let deltas = deltas.to_vec();
        self.write(move |tx| apply_counters(&mut tx.open_table(COUNTERS).map_err(db_err)?, &deltas)).await
    }

    async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        let prefix = collection_record_prefix(ctx);
        self.read(move |tx| {
            let t = tx.open_table(COUNTERS).map_err(db_err)?;
            let mut out = BTreeMap::new();
            for item in t.range(prefix.as_str()..).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let Some(name) = k.value().strip_prefix(prefix.as_str()) else { break };
                out.insert(name.to_owned(), v.value());
            }
            Ok(out)
        })
        .await
    }

    async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
        let prefix = collection_record_prefix(ctx);
        let names = counters.map(<[String]>::to_vec);
        self.write(move |tx| {
            let mut t = tx.open_table(COUNTERS).map_err(db_err)?;
            let keys: Vec<String> = match names {
                Some(names) => names.iter().map(|n| format!("{prefix}{n}")).collect(),
                None => {
                    let mut ks = Vec::new();
                    for item in t.range(prefix.as_str()..).map_err(db_err)? {
                        let (k, _) = item.map_err(db_err)?;
                        if !k.value().starts_with(prefix.as_str()) {
                            break;
                        }
                        ks.push(k.value().to_owned());
                    }
                    ks
                }
            };
            for k in keys {
                t.remove(k.as_str()).map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use serde_json::json;
    use udm_core::Op;
    use udm_core::predicate::Predicate;
    use udm_testkit::fixtures::{commit, key, ts, unique_ctx};

    use super::*;

    /// Full head decodes done by one `list_heads` call.
    async fn decodes(s: &EmbeddedStore, ctx: &RouteContext, q: &HeadQuery) -> (Page<Head>, usize) {
        let before = FULL_DECODES.load(SeqCst);
        let page = s.list_heads(ctx, q).await.unwrap();
        (page, FULL_DECODES.load(SeqCst) - before)
    }

    #[tokio::test]
    async fn pages_decode_only_what_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(&dir.path().join("meta.redb")).unwrap();
        let ctx = unique_ctx("paging");
        for i in 0..60 {
            let data = json!({"n": 60 - i, "even": i % 2 == 0, "blob": "x".repeat(1000)});
            s.commit(commit(&key(&ctx, &format!("o{i:03}")), None, Op::Create, ts(1), &format!("r{i}"), &data))
                .await
                .unwrap();
        }
        let all: Vec<Head> = {
            let q = HeadQuery { limit: 1000, ..HeadQuery::default() };
            s.list_heads(&ctx, &q).await.unwrap().items
        };
        let queries = [
            HeadQuery { limit: 5, ..HeadQuery::default() },
            HeadQuery { limit: 5, order: Order::Desc, ..HeadQuery::default() },
            HeadQuery { limit: 5, filter: Predicate::parse(&json!({"even": true})).unwrap(), ..HeadQuery::default() },
            HeadQuery { limit: 5, sort_by: Some("n".into()), ..HeadQuery::default() },
            HeadQuery { limit: 5, sort_by: Some("n".into()), order: Order::Desc, ..HeadQuery::default() },
        ];
        for mut q in queries {
            let mut pages = 0;
            loop {
                let (page, n) = decodes(&s, &ctx, &q).await;
                assert!(n <= q.limit + 1, "{q:?}: decoded {n} heads in full for one page");
                // The same page as the reference implementation over every head.
                assert_eq!(page, select_heads(all.clone(), &q).unwrap(), "{q:?}");
                pages += 1;
                match page.next {
                    Some(next) => q.after = Some(next),
                    None => break,
                }
            }
            assert!(pages > 1);
        }
    }
}
