//! The **as-of index**: as-of by instant or CV in two round trips, whatever the history's
//! length and whatever plan the server would choose for a range + sort.
//!
//! Versions of an object are grouped in buckets of [`ASOF_BUCKET`] OVs: bucket `k` holds
//! OVs `k·B ..= k·B + B − 1` (bucket 0 starts at OV 1). One document per object in
//! `udm_asof` (`_id` = the object's record id) holds, for every bucket `k ≥ 1`, the timestamp
//! and CV of the version that opens it, packed in one binary field `b` ([`ENTRY_BYTES`] per
//! bucket: `k` as u32, `at` millis as i64, `cv` as u64, big-endian, sorted by `k`). A binary
//! field is one value to the server, so reading even a long index is cheap on any server (on
//! the Python test server, a sub-document of 1,562 entries took 3.7 ms to read and 24 ms to
//! update; the same entries packed take about 0.4 ms).
//!
//! The commit (and import) transaction that writes a bucket-opening version reads the
//! document and writes it back with the entry added: two extra statements every
//! [`ASOF_BUCKET`] versions of an object, never on other commits. Entries are immutable once
//! written (versions are), so adding one again on a replayed import changes nothing. Past
//! [`MAX_ENTRIES`] (an object of about 6.4 million versions) the index stops growing, well
//! inside MongoDB's 16 MiB document limit, and as-of falls back to searching beyond it. A
//! hard delete removes the document.
//!
//! As of an instant or a CV (a condition monotone in OV, see the `lookup` module):
//! 1. read the index document (one point lookup) and pick the last bucket whose opening
//!    version satisfies the condition (bucket 0 if none does);
//! 2. read that bucket's versions by one `$in` of its [`ASOF_BUCKET`] ids (point lookups
//!    only) and answer with the last one that satisfies it.
//!
//! The answer lies in that bucket: every later bucket opens with a version that fails the
//! condition, and the bucket's own opening version satisfies it. When the bucket cannot
//! settle it — its versions were pruned, the index has no entry past it although the bucket
//! is full, or the object has no index document — the lookup falls back to the searched path,
//! which is correct on any stored history ([`MongoStore::version_as_of`]).

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};
use mongodb::ClientSession;
use udm_core::{ObjectKey, Result, VersionRecord};

use crate::MongoStore;
use crate::docs::{from_json, obj_id};
use crate::error::{classify, corrupt};
use crate::lookup::AsOf;

/// OVs per bucket of the as-of index: the second round trip reads this many versions.
pub(crate) const ASOF_BUCKET: u64 = 16;

/// Bytes per index entry.
const ENTRY_BYTES: usize = 20;

/// Most entries one index document holds (8 MB).
pub(crate) const MAX_ENTRIES: usize = 400_000;

/// One entry: the bucket and the `(at, cv)` of the version that opens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    bucket: u32,
    at: i64,
    cv: u64,
}

/// The entry version `r` adds to its object's index, if it opens a bucket.
pub(crate) fn entry_of(r: &VersionRecord) -> Option<(ObjectKey, Entry)> {
    let ov = r.ov.get();
    if !ov.is_multiple_of(ASOF_BUCKET) {
        return None;
    }
    let bucket = u32::try_from(ov / ASOF_BUCKET).ok()?;
    Some((r.key.clone(), Entry { bucket, at: r.at.as_millis(), cv: r.cv.0 }))
}

fn encode(entries: &[Entry]) -> Bson {
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        bytes.extend_from_slice(&e.bucket.to_be_bytes());
        bytes.extend_from_slice(&e.at.to_be_bytes());
        bytes.extend_from_slice(&e.cv.to_be_bytes());
    }
    Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes })
}

/// The entries of an index document, sorted by bucket.
fn decode(d: &Document) -> Result<Vec<Entry>> {
    let bytes = match d.get("b") {
        None => return Ok(Vec::new()),
        Some(Bson::Binary(b)) => &b.bytes,
        Some(other) => return Err(corrupt("as-of index", format!("field b is {:?}", other.element_type()))),
    };
    if bytes.len() % ENTRY_BYTES != 0 {
        return Err(corrupt("as-of index", format!("{} bytes", bytes.len())));
    }
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
    for c in bytes.chunks_exact(ENTRY_BYTES) {
        let (k, rest) = c.split_at(4);
        let (at, cv) = rest.split_at(8);
        let arr = |s: &[u8]| <[u8; 8]>::try_from(s).map_err(|_| corrupt("as-of index", "short entry"));
        let k = <[u8; 4]>::try_from(k).map_err(|_| corrupt("as-of index", "short entry"))?;
        out.push(Entry {
            bucket: u32::from_be_bytes(k),
            at: i64::from_be_bytes(arr(at)?),
            cv: u64::from_be_bytes(arr(cv)?),
        });
    }
    if !out.windows(2).all(|w| w[0].bucket < w[1].bucket) {
        return Err(corrupt("as-of index", "entries out of order"));
    }
    Ok(out)
}

/// Adds `e` to sorted `entries` (an entry already there stays); whether anything changed.
fn insert(entries: &mut Vec<Entry>, e: Entry) -> bool {
    match entries.binary_search_by_key(&e.bucket, |x| x.bucket) {
        Ok(_) => false,
        Err(_) if entries.len() >= MAX_ENTRIES => false,
        Err(i) => {
            entries.insert(i, e);
            true
        }
    }
}

/// The bucket the answer lies in, and whether the index has an entry for the bucket after
/// it (whose opening version then fails the condition).
fn pick(entries: &[Entry], cond: AsOf) -> (u64, bool) {
    let cv = |e: &Entry| i64::try_from(e.cv).unwrap_or(i64::MAX);
    // Entries are sorted by bucket and the condition is monotone in OV.
    let n = entries.partition_point(|e| cond.holds(e.at, cv(e)));
    let bucket = n.checked_sub(1).map_or(0, |i| u64::from(entries[i].bucket));
    (bucket, entries.get(n).is_some_and(|e| u64::from(e.bucket) == bucket + 1))
}

/// The OVs of bucket `k`.
fn span(k: u64) -> (u64, u64) {
    ((k * ASOF_BUCKET).max(1), k * ASOF_BUCKET + ASOF_BUCKET - 1)
}

impl MongoStore {
    /// Adds the entries of bucket-opening versions (from [`entry_of`]) to their objects'
    /// indexes, inside the session's transaction: per object, one read and one write.
    pub(crate) async fn index_as_of(
        &self,
        s: &mut ClientSession,
        entries: Vec<(ObjectKey, Entry)>,
    ) -> Result<Result<(), udm_core::Error>, mongodb::error::Error> {
        if entries.is_empty() {
            return Ok(Ok(()));
        }
        // One read of every index document the entries touch, one update per changed one.
        let mut by_object: std::collections::BTreeMap<String, Vec<Entry>> = std::collections::BTreeMap::new();
        for (key, e) in entries {
            by_object.entry(obj_id(&key)).or_default().push(e);
        }
        let ids: Vec<&String> = by_object.keys().collect();
        let mut known: std::collections::HashMap<String, Document> = std::collections::HashMap::new();
        let mut cursor = self.asof().find(doc! {"_id": {"$in": ids}}).session(&mut *s).await?;
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            if let Ok(id) = d.get_str("_id") {
                known.insert(id.to_owned(), d);
            }
        }
        for (id, adds) in by_object {
            let mut all = match known.get(&id).map(decode).transpose() {
                Ok(all) => all.unwrap_or_default(),
                Err(err) => return Ok(Err(err)),
            };
            let mut changed = false;
            for e in adds {
                changed |= insert(&mut all, e);
            }
            if changed {
                let update = doc! {"$set": {"b": encode(&all)}};
                self.asof().update_one(doc! {"_id": &id}, update).upsert(true).session(&mut *s).await?;
            }
        }
        Ok(Ok(()))
    }

    /// Removes `key`'s index document, inside the session's transaction (hard delete).
    pub(crate) async fn drop_as_of(&self, s: &mut ClientSession, key: &ObjectKey) -> Result<(), mongodb::error::Error> {
        self.asof().delete_one(doc! {"_id": obj_id(key)}).session(&mut *s).await?;
        Ok(())
    }

    /// As of `cond` by the index (see the module docs): `Some(answer)` when the index
    /// settles it, `None` when the caller must search.
    pub(crate) async fn indexed_as_of(&self, key: &ObjectKey, cond: AsOf) -> Result<Option<Option<VersionRecord>>> {
        self.count_round_trip();
        let found = self.asof().find_one(doc! {"_id": obj_id(key)}).await.map_err(|e| classify("as-of index", e))?;
        let entries = found.as_ref().map(decode).transpose()?.unwrap_or_default();
        let (bucket, next_known) = pick(&entries, cond);
        let (lo, hi) = span(bucket);
        let probe = self.fetch(key, &(lo..=hi).collect::<Vec<_>>()).await?;
        let mut last = None;
        for (ov, d) in &probe {
            if cond.holds_for(d)? {
                last = Some((*ov, d));
            }
        }
        match last {
            // Later versions exist only in the bucket (checked) or after an entry that fails.
            Some((ov, d)) if next_known || ov < hi => from_json(d, "version").map(|v| Some(Some(v))),
            // Nothing before the first version.
            None if bucket == 0 && probe.first().is_some_and(|(ov, _)| *ov == 1) => Ok(Some(None)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(bucket: u32, at: i64, cv: u64) -> Entry {
        Entry { bucket, at, cv }
    }

    #[test]
    fn buckets_cover_every_ov_once() {
        assert_eq!(span(0), (1, 15));
        assert_eq!(span(1), (16, 31));
        assert_eq!(span(6_250), (100_000, 100_015));
    }

    #[test]
    fn the_answer_bucket_is_the_last_that_opens_in_time() {
        let entries = [e(1, 100, 10), e(2, 300, 30), e(3, 500, 50)];
        assert_eq!(pick(&entries, AsOf::At(50)), (0, true));
        assert_eq!(pick(&entries, AsOf::At(100)), (1, true));
        assert_eq!(pick(&entries, AsOf::At(499)), (2, true));
        assert_eq!(pick(&entries, AsOf::At(i64::MAX)), (3, false));
        assert_eq!(pick(&entries, AsOf::Cv(30)), (2, true));
        assert_eq!(pick(&[e(1, 100, 10), e(3, 500, 50)], AsOf::At(200)), (1, false), "a missing entry is not known");
        assert_eq!(pick(&[], AsOf::Cv(30)), (0, false));
    }

    #[test]
    fn entries_round_trip_sorted_and_bounded() {
        let mut all = Vec::new();
        assert!(insert(&mut all, e(3, 30, 3)));
        assert!(insert(&mut all, e(1, 10, u64::MAX)));
        assert!(!insert(&mut all, e(1, 99, 99)), "an entry is written once");
        assert_eq!(all, vec![e(1, 10, u64::MAX), e(3, 30, 3)]);
        let d = doc! {"b": encode(&all)};
        assert_eq!(decode(&d).unwrap(), all);
        assert_eq!(decode(&doc! {}).unwrap(), Vec::new());
        let mut full = vec![e(0, 0, 0); MAX_ENTRIES];
        assert!(!insert(&mut full, e(u32::MAX, 1, 1)), "a full index stops growing");
    }

    #[test]
    fn corrupt_indexes_are_errors() {
        let bin = |bytes: Vec<u8>| doc! {"b": Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes })};
        assert!(decode(&bin(vec![0; 19])).is_err());
        assert!(decode(&doc! {"b": "text"}).is_err());
        let backwards = [e(2, 0, 0), e(1, 0, 0)];
        assert!(decode(&doc! {"b": encode(&backwards)}).is_err());
    }
}
