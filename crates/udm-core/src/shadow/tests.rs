//! Unit tests of the shadow commit log's format and reader.

use super::*;
use crate::id::ObjectId;
use crate::time::Timestamp;
use crate::version::{Op, Ov, Provenance, SnapshotRef};
use crate::{ErrorKind, RequestId};

fn ctx() -> RouteContext {
    RouteContext::new("t", "db", "c").unwrap()
}

pub(crate) fn entry(id: &str, ov: u64, cv: u64) -> LogEntry {
    let key = ObjectKey::new(ctx(), ObjectId::new(id).unwrap());
    let request = format!("{id}-{ov}");
    LogEntry {
        record: VersionRecord {
            key,
            ov: Ov::new(ov).unwrap(),
            cv: Cv(cv),
            op: if ov == 1 { Op::Create } else { Op::Update },
            at: Timestamp::from_millis(cv as i64).unwrap(),
            provenance: Provenance {
                actor: Some("a".into()),
                reason: None,
                request_id: RequestId::new(&request).unwrap(),
            },
            snapshot: SnapshotRef {
                key: format!("snap/{request}"),
                checksum: Checksum::of_bytes(request.as_bytes()),
                seal: Checksum::of_bytes(b"seal"),
                size: 10,
            },
            restored_from: None,
            deleted: false,
        },
        fingerprint: Checksum::of_bytes(b"fp"),
    }
}

#[test]
fn segments_round_trip_and_pin_their_bytes() {
    let entries = vec![entry("a", 1, 1), entry("b", 1, 2), entry("a", 2, 4)];
    let bytes = LogSegment::encode(&ctx(), Cv(1), Cv(4), entries.clone()).unwrap();
    assert!(bytes.starts_with(br#"{"ctx":{"#), "canonical: keys sorted");
    let s = LogSegment::decode(&bytes).unwrap();
    assert_eq!((s.first, s.last, s.entries), (Cv(1), Cv(4), entries));
    assert_eq!(
        LogSegment::encode(&ctx(), Cv(1), Cv(4), vec![entry("a", 1, 1), entry("b", 1, 2), entry("a", 2, 4)]).unwrap(),
        bytes
    );
}

#[test]
fn tampered_segments_are_checksum_mismatches() {
    let bytes = LogSegment::encode(&ctx(), Cv(1), Cv(2), vec![entry("a", 1, 1), entry("a", 2, 2)]).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    for (from, to) in [("\"cv\":2", "\"cv\":3"), ("a-2", "a-9"), ("\"size\":10", "\"size\":11")] {
        assert!(text.contains(from), "{from}");
        let bad = text.replacen(from, to, 1);
        assert_eq!(LogSegment::decode(bad.as_bytes()).unwrap_err().kind(), ErrorKind::ChecksumMismatch, "{from}");
    }
    assert_eq!(LogSegment::decode(&bytes[..bytes.len() - 3]).unwrap_err().kind(), ErrorKind::ChecksumMismatch);
    // A well-sealed segment of another format is unsupported, not silently read.
    let stored = Stored { ctx: ctx(), entries: Vec::new(), first: Cv(1), format: "udm.log.v9".into(), last: Cv(1) };
    let (mut v, seal) = sealed_value(&stored).unwrap();
    v.as_object_mut().unwrap().insert("seal".into(), json!(seal.to_string()));
    assert_eq!(LogSegment::decode(&canonical_bytes(&v)).unwrap_err().kind(), ErrorKind::Unsupported);
}

#[test]
fn entries_must_be_ordered_inside_the_range_and_collection() {
    let kind = |first, last, e: Vec<LogEntry>| LogSegment::encode(&ctx(), Cv(first), Cv(last), e).unwrap_err().kind();
    assert_eq!(kind(1, 3, vec![entry("a", 1, 2), entry("b", 1, 1)]), ErrorKind::Validation);
    assert_eq!(kind(2, 3, vec![entry("a", 1, 1)]), ErrorKind::Validation);
    let mut other = entry("a", 1, 1);
    other.record.key.ctx = RouteContext::new("t", "db", "other").unwrap();
    assert_eq!(kind(1, 1, vec![other]), ErrorKind::Validation);
}

#[test]
fn overlapping_segments_merge_and_contradictions_are_corruption() {
    let seg = |first, last, e: Vec<LogEntry>| {
        LogSegment::decode(&LogSegment::encode(&ctx(), Cv(first), Cv(last), e).unwrap()).unwrap()
    };
    let s1 = seg(1, 2, vec![entry("a", 1, 1), entry("b", 1, 2)]);
    // The flush after a crash rewrote 1..=3.
    let s2 = seg(1, 3, vec![entry("a", 1, 1), entry("b", 1, 2), entry("a", 2, 3)]);
    let all = committed_versions(vec![s1.clone(), s2]).unwrap();
    let a: Vec<(u64, u64)> = all.values().next().unwrap().iter().map(|e| (e.record.ov.get(), e.record.cv.0)).collect();
    assert_eq!(a, vec![(1, 1), (2, 3)]);
    assert_eq!(all.len(), 2);
    let liar = seg(2, 2, vec![entry("c", 1, 2)]);
    assert_eq!(committed_versions(vec![s1.clone(), liar]).unwrap_err().kind(), ErrorKind::ChecksumMismatch);
    let backwards = seg(3, 3, vec![entry("a", 2, 3)]);
    let mut early = entry("a", 3, 4);
    early.record.at = Timestamp::from_millis(0).unwrap();
    let late = seg(4, 4, vec![early]);
    assert_eq!(committed_versions(vec![s1, backwards, late]).unwrap_err().kind(), ErrorKind::ChecksumMismatch);
}

#[test]
fn an_id_created_again_after_a_hard_delete_keeps_only_its_new_versions() {
    let seg = LogSegment::encode(
        &ctx(),
        Cv(1),
        Cv(4),
        vec![entry("a", 1, 1), entry("a", 2, 2), entry("b", 1, 3), entry("a", 1, 4)],
    )
    .unwrap();
    let all = committed_versions(vec![LogSegment::decode(&seg).unwrap()]).unwrap();
    let a: Vec<(u64, u64)> = all.values().next().unwrap().iter().map(|e| (e.record.ov.get(), e.record.cv.0)).collect();
    assert_eq!(a, vec![(1, 4)], "the hard-deleted incarnation (cvs 1, 2) is gone");
    // An UPDATE at an OV already seen is still corruption.
    let seg =
        LogSegment::encode(&ctx(), Cv(1), Cv(3), vec![entry("a", 1, 1), entry("a", 2, 2), entry("a", 2, 3)]).unwrap();
    assert_eq!(
        committed_versions(vec![LogSegment::decode(&seg).unwrap()]).unwrap_err().kind(),
        ErrorKind::ChecksumMismatch
    );
}
