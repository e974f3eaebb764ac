//! Version lookups — by OV, as of an instant or a CV, history pages — that cost a bounded
//! number of **primary-key point lookups**, whatever plan the server would choose for a
//! range + sort (SecantusDB, the test server, does not optimise one: a sorted range as-of took
//! hundreds of milliseconds at 10k versions).
//!
//! A version document's `_id` is the layout's version record id (`<object>/<ov:020>`,
//! [`version_record_id`]), so the ids of any set of OVs are known without asking the server:
//! - **by OV**: one `find_one` by `_id` (one round trip);
//! - **a set of OVs**: one `find` with `_id: {$in: [...]}` and `limit` = `batchSize` = the
//!   number of ids (one round trip, point lookups only; the client sorts by OV);
//! - **as of an instant or a CV**: per object, timestamps are non-decreasing in OV (a commit
//!   never precedes its head's timestamp) and CVs strictly increasing (the next OV commits
//!   after the head it follows, and the collection's CV only grows), so "the last version with
//!   `at <= t`" (resp. `cv <= c`) is monotone in OV. The head (one point lookup) bounds the
//!   search: if it satisfies the condition the answer is version `head.ov` (one more lookup);
//!   otherwise a [`FANOUT`]-ary search over `1..head.ov` fetches [`FANOUT`] evenly spaced
//!   versions per round trip. Round trips: `2 + ⌈log_{FANOUT+1}(n)⌉` at most (4 at 1,000
//!   versions, 6 at 100k) without gaps;
//! - **a history page**: the `$in` of the page's `limit + 1` OVs (one round trip); a shorter
//!   answer reads the head (one more) to tell the end of the history from a gap.
//!
//! **Gaps** (a version record missing below the head: pruned, or removed by a concurrent hard
//! delete) are absent versions, never errors: a search round whose probes all miss scans what
//! remains of its OV interval by an `_id` range (primary key only, both bounds explicit, no
//! sort), and a history page keeps reading windows of doubling size until it is full or has
//! passed the head (or OV 1).
//!
//! [`MongoStore::round_trips`] counts the finds these lookups send (tests assert them): one
//! round trip each, except a gap-path `_id` range scan of more than 10,000 versions.

use bson::{Bson, Document, doc};
use futures_util::TryStreamExt;
use udm_core::layout::version_record_id;
use udm_core::query::{HistoryQuery, Order, Page, check_limit, history_cursor};
use udm_core::{Cv, Head, ObjectKey, Ov, Result, Timestamp, VersionRecord};

use crate::MongoStore;
use crate::docs::{from_json, obj_id};
use crate::error::{classify, corrupt};

/// Versions fetched per round trip of an as-of search: the search interval shrinks
/// `FANOUT + 1`-fold per round trip.
pub(crate) const FANOUT: u64 = 16;

/// Most ids in one `$in`; longer spans (only while walking over gaps) are read by `_id` range.
const MAX_IN: u64 = 1024;

/// A condition monotone in OV for one object: "at or before this instant / CV".
#[derive(Clone, Copy, Debug)]
pub(crate) enum AsOf {
    /// `at <= t` (milliseconds).
    At(i64),
    /// `cv <= c` (saturated to `i64::MAX`: every stored CV fits an i64).
    Cv(i64),
}

impl AsOf {
    pub(crate) fn at(t: Timestamp) -> Self {
        Self::At(t.as_millis())
    }

    pub(crate) fn cv(cv: Cv) -> Self {
        Self::Cv(i64::try_from(cv.0).unwrap_or(i64::MAX))
    }

    /// Whether a version with this timestamp (milliseconds) and CV satisfies it.
    pub(crate) fn holds(self, at: i64, cv: i64) -> bool {
        match self {
            Self::At(t) => at <= t,
            Self::Cv(c) => cv <= c,
        }
    }

    /// Whether a stored version document satisfies it (by its `at` / `cv` query fields).
    pub(crate) fn holds_for(self, d: &Document) -> Result<bool> {
        let (field, bound) = match self {
            Self::At(t) => ("at", t),
            Self::Cv(c) => ("cv", c),
        };
        Ok(d.get_i64(field).map_err(|e| corrupt("version", e))? <= bound)
    }

    /// Whether the head (whose `at` and `cv` are its version's) satisfies it.
    fn holds_for_head(self, h: &Head) -> bool {
        match self {
            Self::At(t) => h.at.as_millis() <= t,
            Self::Cv(c) => i64::try_from(h.cv.0).is_ok_and(|cv| cv <= c),
        }
    }
}

/// The OV of a stored version document.
fn ov_of(d: &Document) -> Result<u64> {
    let n = d.get_i64("ov").map_err(|e| corrupt("version", e))?;
    u64::try_from(n).map_err(|_| corrupt("version", format!("ov {n}")))
}

/// `_id` of version `ov` of `key`.
fn vid(key: &ObjectKey, ov: u64) -> Result<String> {
    Ok(version_record_id(key, Ov::new(ov)?))
}

/// `n` (≥ 1) evenly spaced OVs strictly inside the split of `lo..=hi` into `n + 1` parts.
fn probes(lo: u64, hi: u64, n: u64) -> Vec<u64> {
    let size = hi - lo + 1;
    (1..=n).map(|j| lo + j * size / (n + 1)).collect()
}

impl MongoStore {
    /// Version `ov` of `key`: one point lookup.
    pub(crate) async fn version_by_ov(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
        self.count_round_trip();
        let found = self
            .versions()
            .find_one(doc! {"_id": version_record_id(key, ov)})
            .await
            .map_err(|e| classify("version", e))?;
        found.map(|d| from_json(&d, "version")).transpose()
    }

    /// The head of `key`: one point lookup.
    async fn head_of(&self, key: &ObjectKey) -> Result<Option<Head>> {
        self.count_round_trip();
        let found = self.heads().find_one(doc! {"_id": obj_id(key)}).await.map_err(|e| classify("head", e))?;
        found.map(|d| from_json(&d, "head")).transpose()
    }

    /// The stored versions of `key` among `ovs`, by OV: one `$in` of ids (one round trip).
    pub(crate) async fn fetch(&self, key: &ObjectKey, ovs: &[u64]) -> Result<Vec<(u64, Document)>> {
        if ovs.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ovs.iter().map(|&o| vid(key, o).map(Bson::String)).collect::<Result<Vec<_>>>()?;
        let n = ids.len();
        let versions = self.versions();
        let find = versions
            .find(doc! {"_id": {"$in": ids}})
            .limit(i64::try_from(n).unwrap_or(i64::MAX))
            .batch_size(u32::try_from(n).unwrap_or(u32::MAX));
        self.collect_sorted(find).await
    }

    /// The stored versions of `key` with OV in `lo..=hi`, by OV: a `$in` of ids for short
    /// spans, else one `_id` range (primary key only, both bounds explicit, no sort).
    async fn fetch_span(
        &self,
        key: &ObjectKey,
        lo: u64,
        hi: u64,
        fields: Option<Document>,
    ) -> Result<Vec<(u64, Document)>> {
        if lo > hi {
            return Ok(Vec::new());
        }
        if hi - lo < MAX_IN && fields.is_none() {
            return self.fetch(key, &(lo..=hi).collect::<Vec<_>>()).await;
        }
        // Only on the gap path: the batch size keeps a scan of query fields to few round trips.
        let filter = doc! {"_id": {"$gte": vid(key, lo)?, "$lte": vid(key, hi)?}};
        let versions = self.versions();
        let mut find = versions.find(filter).batch_size(10_000);
        if let Some(fields) = fields {
            find = find.projection(fields);
        }
        self.collect_sorted(find).await
    }

    /// Runs a find (one round trip: `$in` finds ask for every id in the first batch) and
    /// sorts the documents by OV.
    async fn collect_sorted(&self, find: mongodb::action::Find<'_, Document>) -> Result<Vec<(u64, Document)>> {
        self.count_round_trip();
        let mut cursor = find.await.map_err(|e| classify("version", e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| classify("version", e))? {
            out.push((ov_of(&d)?, d));
        }
        out.sort_by_key(|(ov, _)| *ov);
        Ok(out)
    }

    /// The last version of `key` satisfying `cond` (monotone in OV), or `None`: by the as-of
    /// index (two round trips, see the `asof` module), else by searching.
    pub(crate) async fn version_as_of(&self, key: &ObjectKey, cond: AsOf) -> Result<Option<VersionRecord>> {
        match self.indexed_as_of(key, cond).await? {
            Some(answer) => Ok(answer),
            None => self.searched_as_of(key, cond).await,
        }
    }

    /// [`MongoStore::version_as_of`] without the index: correct on any stored history.
    async fn searched_as_of(&self, key: &ObjectKey, cond: AsOf) -> Result<Option<VersionRecord>> {
        let Some(head) = self.head_of(key).await? else { return Ok(None) };
        let h = head.ov.get();
        if cond.holds_for_head(&head)
            && let Some((_, d)) = self.fetch(key, &[h]).await?.pop()
        {
            // Every version satisfies it: the answer is the last one.
            return from_json(&d, "version").map(Some);
        }
        // Invariant: every stored version below `lo` satisfies `cond` (`best` is the highest
        // one seen), none above `hi` does.
        let (mut lo, mut hi) = (1, h - 1);
        let mut best: Option<Document> = None;
        while lo <= hi {
            let all = hi - lo < FANOUT;
            let ovs = if all { (lo..=hi).collect() } else { probes(lo, hi, FANOUT) };
            let (mut yes, mut no) = (None, None);
            for (ov, d) in self.fetch(key, &ovs).await? {
                if cond.holds_for(&d)? {
                    yes = Some((ov, d));
                } else if no.is_none() {
                    no = Some(ov);
                }
            }
            if yes.is_none() && no.is_none() && !all {
                return self.scan_as_of(key, cond, lo, hi, best).await;
            }
            if let Some((ov, d)) = yes {
                lo = ov + 1;
                best = Some(d);
            }
            if let Some(ov) = no {
                hi = ov - 1;
            }
            if all {
                break;
            }
        }
        best.map(|d| from_json(&d, "version")).transpose()
    }

    /// The gap path of [`MongoStore::searched_as_of`]: the last version in `lo..=hi`
    /// satisfying `cond` (by an `_id` range over the query fields, then one point lookup),
    /// else `best`.
    async fn scan_as_of(
        &self,
        key: &ObjectKey,
        cond: AsOf,
        lo: u64,
        hi: u64,
        best: Option<Document>,
    ) -> Result<Option<VersionRecord>> {
        let fields = doc! {"ov": 1, "at": 1, "cv": 1};
        let mut last = None;
        for (ov, d) in self.fetch_span(key, lo, hi, Some(fields)).await? {
            if cond.holds_for(&d)? {
                last = Some(ov);
            }
        }
        match last {
            Some(ov) => self.version_by_ov(key, Ov::new(ov)?).await,
            None => best.map(|d| from_json(&d, "version")).transpose(),
        }
    }

    /// A page of `key`'s history (see the module docs for its round trips).
    pub(crate) async fn history_page(&self, key: &ObjectKey, q: &HistoryQuery) -> Result<Page<VersionRecord>> {
        check_limit(q.limit)?;
        let want = q.limit as u64 + 1;
        let mut items: Vec<Document> = Vec::new();
        let mut head: Option<Option<u64>> = None;
        match q.order {
            Order::Asc => {
                let mut lo = q.after.map_or(1, |a| a.get() + 1);
                let mut span = want;
                loop {
                    let hi = lo.saturating_add(span - 1);
                    items.extend(self.fetch_span(key, lo, hi, None).await?.into_iter().map(|(_, d)| d));
                    if items.len() as u64 >= want {
                        break;
                    }
                    let h = match head {
                        Some(h) => h,
                        None => *head.insert(self.head_of(key).await?.map(|h| h.ov.get())),
                    };
                    if h.is_none_or(|h| hi >= h) {
                        break;
                    }
                    (lo, span) = (hi + 1, span.saturating_mul(2));
                }
            }
            Order::Desc => {
                let start = match q.after {
                    Some(a) => a.get() - 1,
                    None => self.head_of(key).await?.map_or(0, |h| h.ov.get()),
                };
                let mut hi = start;
                let mut span = want;
                while hi >= 1 {
                    let lo = hi.saturating_sub(span - 1).max(1);
                    let mut got = self.fetch_span(key, lo, hi, None).await?;
                    got.reverse();
                    items.extend(got.into_iter().map(|(_, d)| d));
                    if items.len() as u64 >= want {
                        break;
                    }
                    (hi, span) = (lo - 1, span.saturating_mul(2));
                }
            }
        }
        let items: Vec<VersionRecord> =
            items.iter().take(q.limit + 1).map(|d| from_json(d, "version")).collect::<Result<_>>()?;
        Ok(Page::from_overfetch(items, q.limit, |r| history_cursor(r.ov)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_split_evenly_and_stay_inside() {
        for (lo, hi) in [(1, 17), (1, 999), (5, 100_000), (10, 26)] {
            let p = probes(lo, hi, FANOUT);
            assert_eq!(p.len() as u64, FANOUT);
            assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
            assert!(p[0] > lo && *p.last().unwrap() <= hi, "{lo}..={hi}: {p:?}");
            let widest = p.windows(2).map(|w| w[1] - w[0] - 1).chain([p[0] - lo, hi - p[FANOUT as usize - 1]]).max();
            assert!(widest.unwrap() <= (hi - lo + 1) / (FANOUT + 1) + 1, "{lo}..={hi}: {p:?}");
        }
    }
}
