//! The shadow version index: each object's committed versions in its blob store, so that
//! history, `get_version`, as-of by instant and as-of by CV answer from the blob store alone
//! in a constant number of requests, however long the history.
//!
//! An object's versions are cut into **segments** of [`INDEX_SEGMENT_LEN`] OVs (segment `s`
//! holds OVs `s·L+1 ..= (s+1)·L`), each one blob `…/objects/<id>/index/<s:020>.json` (format
//! [`INDEX_FORMAT`], sealed like the commit log). A segment never grows past `L` entries, so
//! no index file grows with the history. Next to the segments, a zero-byte **marker** per
//! segment, `…/objects/<id>/index/first/<s:020>.<at ms>.<cv>`, names the segment's first
//! instant and CV in its key, so one listing of the markers is a sparse index of the whole
//! history (up to 1000 segments, 256k versions, per listing page):
//!
//! | read | requests |
//! |---|---|
//! | version `ov` | 1 segment GET (its key follows from the OV) + 1 snapshot GET |
//! | as of an instant or a CV | 1 marker listing + 1 segment GET + 1 snapshot GET |
//! | latest | 1 marker listing + 1 segment GET + 1 snapshot GET |
//! | history page of ≤ `L` | 1 or 2 segment GETs |
//!
//! Entries are written by the commit-log flusher (behind the commits, never on the write
//! path) with a compare-and-swap on the segment's ETag, so concurrent flushers merge rather
//! than overwrite: [`merge_entries`] is a union by OV (the same fact twice is one entry; a
//! pruned flag, once set, stays). Retention flags the entries it prunes instead of removing
//! them, so an S3-only read of a pruned version is `Pruned`, never another version's data.
//! A marker is put before its segment; a marker whose segment is missing reads as "not
//! indexed yet", and a re-flush writes both again.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canonical::{Checksum, canonical_bytes};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectKey;
use crate::time::Timestamp;
use crate::version::{Cv, Ov, VersionRecord};

pub use crate::layout::INDEX_SEGMENT_LEN;

/// The segment format this version writes and reads.
pub const INDEX_FORMAT: &str = "udm.index.v1";

/// One version in an object's index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Its OV.
    pub ov: Ov,
    /// Removed by retention: its snapshot and metadata record are gone on purpose.
    pub pruned: bool,
    /// The version record as committed (`None` only for a version pruned before the flusher
    /// indexed it: then only its OV is known).
    pub record: Option<VersionRecord>,
}

impl IndexEntry {
    /// The entry of a committed version.
    pub fn committed(record: VersionRecord) -> Self {
        Self { ov: record.ov, pruned: false, record: Some(record) }
    }

    /// Its instant, when known.
    pub fn at(&self) -> Option<Timestamp> {
        self.record.as_ref().map(|r| r.at)
    }

    /// Its CV, when known.
    pub fn cv(&self) -> Option<Cv> {
        self.record.as_ref().map(|r| r.cv)
    }
}

/// Which segment holds `ov`.
pub fn segment_of(ov: Ov) -> u64 {
    (ov.get() - 1) / INDEX_SEGMENT_LEN
}

#[derive(Serialize, Deserialize)]
struct Stored {
    entries: Vec<IndexEntry>,
    format: String,
    key: ObjectKey,
    segment: u64,
}

/// A decoded, verified index segment.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSegment {
    /// The object.
    pub key: ObjectKey,
    /// Its number.
    pub segment: u64,
    /// Its entries, in OV order, one per OV, all inside the segment.
    pub entries: Vec<IndexEntry>,
}

fn corrupt(why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::ChecksumMismatch, format!("index segment: {why}"))
}

fn sealed_value(stored: &Stored) -> Result<(Value, Checksum)> {
    let value = serde_json::to_value(stored).map_err(|e| Error::internal(format!("index segment: {e}")))?;
    let seal = Checksum::of_bytes(&canonical_bytes(&value));
    Ok((value, seal))
}

impl IndexSegment {
    /// An empty segment.
    pub fn new(key: ObjectKey, segment: u64) -> Self {
        Self { key, segment, entries: Vec::new() }
    }

    /// The canonical, sealed bytes of the segment (entries checked first: a validation error
    /// when one is outside the segment, of another object, or out of order).
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.check().map_err(|m| Error::validation("entries", m))?;
        let stored = Stored {
            entries: self.entries.clone(),
            format: INDEX_FORMAT.into(),
            key: self.key.clone(),
            segment: self.segment,
        };
        let (mut value, seal) = sealed_value(&stored)?;
        if let Value::Object(m) = &mut value {
            m.insert("seal".into(), json!(seal.to_string()));
        }
        Ok(canonical_bytes(&value))
    }

    /// Decodes and verifies a segment (seal, format, entries). A tampered or truncated
    /// segment is [`ErrorKind::ChecksumMismatch`]; another format is
    /// [`ErrorKind::Unsupported`].
    pub fn decode(bytes: &[u8]) -> Result<IndexSegment> {
        let mut value: Value = serde_json::from_slice(bytes).map_err(corrupt)?;
        let seal = match value.as_object_mut().and_then(|m| m.remove("seal")) {
            Some(Value::String(s)) => Checksum::from_hex(&s).map_err(corrupt)?,
            _ => return Err(corrupt("no seal")),
        };
        let format = value.get("format").and_then(Value::as_str).unwrap_or_default().to_owned();
        let stored: Stored = serde_json::from_value(value).map_err(corrupt)?;
        if sealed_value(&stored)?.1 != seal {
            return Err(corrupt("seal does not match its content"));
        }
        if format != INDEX_FORMAT {
            return Err(Error::new(ErrorKind::Unsupported, format!("index segment format {format:?}")));
        }
        let segment = IndexSegment { key: stored.key, segment: stored.segment, entries: stored.entries };
        segment.check().map_err(corrupt)?;
        Ok(segment)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let mut previous: Option<Ov> = None;
        for e in &self.entries {
            if segment_of(e.ov) != self.segment || previous.is_some_and(|p| p >= e.ov) {
                return Err(format!("entry {} is out of order or outside segment {}", e.ov, self.segment));
            }
            if let Some(r) = &e.record
                && (r.ov != e.ov || r.key != self.key)
            {
                return Err(format!("entry {} holds the record of {} {}", e.ov, r.key, r.ov));
            }
            previous = Some(e.ov);
        }
        Ok(())
    }

    /// Merges `incoming` (entries of this segment, any order) into it; returns whether
    /// anything changed. See [`merge_entries`].
    pub fn merge(&mut self, incoming: Vec<IndexEntry>) -> bool {
        merge_entries(&mut self.entries, incoming)
    }

    /// The first known instant and CV (the segment's marker), if any entry carries a record.
    pub fn first(&self) -> Option<(Timestamp, Cv)> {
        self.entries.iter().find_map(|e| e.record.as_ref().map(|r| (r.at, r.cv)))
    }

    /// The entry of `ov`.
    pub fn get(&self, ov: Ov) -> Option<&IndexEntry> {
        self.entries.binary_search_by_key(&ov, |e| e.ov).ok().map(|i| &self.entries[i])
    }

    /// The last entry at or before `at` (the version current at that instant), skipping
    /// nothing: a pruned entry is returned as such. Entries without a record (pruned before
    /// they were indexed) have no instant: an answer that would depend on one is `Err` with
    /// the OV range it lies in.
    pub fn at_or_before(&self, at: Timestamp) -> std::result::Result<Option<&IndexEntry>, Ov> {
        self.last_matching(|e| e.at().map(|t| t <= at))
    }

    /// The last entry with a CV at or before `cv`; see [`IndexSegment::at_or_before`].
    pub fn at_or_before_cv(&self, cv: Cv) -> std::result::Result<Option<&IndexEntry>, Ov> {
        self.last_matching(|e| e.cv().map(|c| c <= cv))
    }

    fn last_matching(
        &self,
        is_before: impl Fn(&IndexEntry) -> Option<bool>,
    ) -> std::result::Result<Option<&IndexEntry>, Ov> {
        let mut found = None;
        // An entry without an instant after the last known answer: it may be the answer.
        let mut unknown = None;
        for e in &self.entries {
            match is_before(e) {
                Some(true) => (found, unknown) = (Some(e), None),
                Some(false) => break,
                None => unknown = unknown.or(Some(e.ov)),
            }
        }
        match unknown {
            Some(ov) => Err(ov),
            None => Ok(found),
        }
    }
}

/// Merges `incoming` into `entries` (kept in OV order, one per OV); returns whether anything
/// changed. The same OV twice keeps one entry: a record replaces a missing one, the pruned
/// flag once set stays, and of two different records the one with the higher CV wins (the
/// object was hard-deleted and created again).
pub fn merge_entries(entries: &mut Vec<IndexEntry>, incoming: Vec<IndexEntry>) -> bool {
    let mut changed = false;
    for e in incoming {
        match entries.binary_search_by_key(&e.ov, |x| x.ov) {
            Err(i) => {
                entries.insert(i, e);
                changed = true;
            }
            Ok(i) => {
                let known = &mut entries[i];
                let record = match (&known.record, e.record) {
                    (None, Some(r)) => Some(r),
                    (Some(k), Some(r)) if r.cv > k.cv => Some(r),
                    _ => None,
                };
                if let Some(r) = record {
                    known.record = Some(r);
                    changed = true;
                }
                if e.pruned && !known.pruned {
                    known.pruned = true;
                    changed = true;
                }
            }
        }
    }
    changed
}

/// One marker: segment `segment` starts at instant `at` and CV `cv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The segment.
    pub segment: u64,
    /// Its first entry's instant.
    pub at: Timestamp,
    /// Its first entry's CV.
    pub cv: Cv,
}

impl Marker {
    /// The marker's file name (under the object's marker prefix).
    pub fn file_name(&self) -> String {
        format!("{:020}.{}.{}", self.segment, self.at.as_millis(), self.cv.0)
    }

    /// Parses a marker's file name; `None` when it is not one.
    pub fn parse(name: &str) -> Option<Marker> {
        let mut parts = name.split('.');
        let (seg, at, cv) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || seg.len() != 20 {
            return None;
        }
        Some(Marker {
            segment: seg.parse().ok()?,
            at: Timestamp::from_millis(at.parse().ok()?).ok()?,
            cv: Cv(cv.parse().ok()?),
        })
    }
}

/// Which bound a lookup searches by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The version current at an instant.
    At(Timestamp),
    /// The version current at a collection version.
    Cv(Cv),
    /// The newest version.
    Latest,
}

/// The segment to read for `bound`, from an object's markers (any order; several markers of
/// one segment count by their lowest): the last segment whose first entry is at or before
/// the bound. `None` when the history starts after it (or has no markers).
pub fn segment_for(markers: &[Marker], bound: Bound) -> Option<u64> {
    let mut firsts: std::collections::BTreeMap<u64, (Timestamp, Cv)> = std::collections::BTreeMap::new();
    for m in markers {
        let e = firsts.entry(m.segment).or_insert((m.at, m.cv));
        *e = ((e.0).min(m.at), (e.1).min(m.cv));
    }
    firsts
        .iter()
        .rev()
        .find(|(_, (at, cv))| match bound {
            Bound::At(t) => *at <= t,
            Bound::Cv(c) => *cv <= c,
            Bound::Latest => true,
        })
        .map(|(s, _)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{ObjectId, RouteContext};
    use crate::shadow::tests::entry;

    fn key() -> ObjectKey {
        ObjectKey::new(RouteContext::new("t", "db", "c").unwrap(), ObjectId::new("a").unwrap())
    }

    /// Version `ov` of object "a", committed at CV (and instant) `10 · ov`.
    fn committed(ov: u64) -> IndexEntry {
        IndexEntry::committed(entry("a", ov, ov * 10).record)
    }

    fn pruned(ov: u64) -> IndexEntry {
        IndexEntry { ov: Ov::new(ov).unwrap(), pruned: true, record: None }
    }

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn ovs(e: std::result::Result<Option<&IndexEntry>, Ov>) -> std::result::Result<Option<u64>, u64> {
        e.map(|e| e.map(|e| e.ov.get())).map_err(Ov::get)
    }

    #[test]
    fn segments_round_trip_and_refuse_tampering() {
        let mut s = IndexSegment::new(key(), 0);
        assert!(s.merge(vec![committed(3), committed(1), pruned(2)]));
        let bytes = s.encode().unwrap();
        assert_eq!(IndexSegment::decode(&bytes).unwrap(), s);
        let tampered = String::from_utf8(bytes.clone()).unwrap().replace("\"pruned\":true", "\"pruned\":false");
        assert_eq!(IndexSegment::decode(tampered.as_bytes()).unwrap_err().kind(), ErrorKind::ChecksumMismatch);
        let other = String::from_utf8(bytes).unwrap().replace(INDEX_FORMAT, "udm.index.v0");
        assert_eq!(IndexSegment::decode(other.as_bytes()).unwrap_err().kind(), ErrorKind::ChecksumMismatch);
        let mut outside = IndexSegment::new(key(), 1);
        outside.entries.push(committed(1));
        assert_eq!(outside.encode().unwrap_err().kind(), ErrorKind::Validation);
    }

    #[test]
    fn merging_is_a_union_by_ov_and_keeps_the_pruned_flag() {
        let mut s = IndexSegment::new(key(), 0);
        assert!(s.merge(vec![committed(1), committed(2)]));
        assert!(!s.merge(vec![committed(2), committed(1)]), "the same facts again change nothing");
        assert!(s.merge(vec![pruned(2)]));
        assert!(!s.merge(vec![committed(2)]), "a pruned entry stays pruned");
        let e = s.get(Ov::new(2).unwrap()).unwrap();
        assert!(e.pruned && e.record.is_some(), "the record is kept with the flag");
        assert!(s.merge(vec![pruned(5), committed(4)]));
        assert!(s.merge(vec![committed(5)]), "a record fills an entry pruned before it was indexed");
        assert_eq!(s.entries.iter().map(|e| e.ov.get()).collect::<Vec<_>>(), [1, 2, 4, 5]);
        assert_eq!(s.first(), Some((ts(10), Cv(10))));
    }

    #[test]
    fn as_of_answers_the_last_entry_at_or_before_and_never_guesses_past_an_unknown_one() {
        let mut s = IndexSegment::new(key(), 0);
        s.merge(vec![committed(1), committed(2), pruned(3), committed(4)]);
        assert_eq!(ovs(s.at_or_before(ts(5))), Ok(None));
        assert_eq!(ovs(s.at_or_before(ts(10))), Ok(Some(1)));
        assert_eq!(ovs(s.at_or_before(ts(29))), Err(3), "OV 3's instant is unknown: it may be the answer");
        assert_eq!(ovs(s.at_or_before(ts(40))), Ok(Some(4)));
        assert_eq!(ovs(s.at_or_before_cv(Cv(25))), Err(3));
        assert_eq!(ovs(s.at_or_before_cv(Cv(1_000))), Ok(Some(4)));
        assert_eq!(ovs(s.at_or_before_cv(Cv(20))), Err(3), "an unknown entry right after the answer");
    }

    #[test]
    fn markers_choose_the_segment_by_its_lowest_first_entry() {
        let m = |segment, at, cv| Marker { segment, at: ts(at), cv: Cv(cv) };
        let markers = [m(0, 10, 1), m(1, 500, 50), m(2, 900, 90), m(1, 400, 40)];
        assert_eq!(segment_for(&markers, Bound::At(ts(5))), None);
        assert_eq!(segment_for(&markers, Bound::At(ts(10))), Some(0));
        assert_eq!(segment_for(&markers, Bound::At(ts(450))), Some(1), "the lower marker of segment 1 counts");
        assert_eq!(segment_for(&markers, Bound::Cv(Cv(89))), Some(1));
        assert_eq!(segment_for(&markers, Bound::Cv(Cv(90))), Some(2));
        assert_eq!(segment_for(&markers, Bound::Latest), Some(2));
        assert_eq!(segment_for(&[], Bound::Latest), None);
        for bad in ["1.2.3", "00000000000000000001.x.3", "00000000000000000001.2", "00000000000000000001.2.3.4"] {
            assert_eq!(Marker::parse(bad), None, "{bad}");
        }
    }
}
