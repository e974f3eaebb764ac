//! Unit tests of the group-commit planner.

use serde_json::Map;

use super::*;
use crate::ErrorKind;
use crate::id::{ObjectId, RouteContext};
use crate::ports::NewVersion;
use crate::time::Timestamp;
use crate::version::{Op, Ov, Provenance, SnapshotRef, SystemHeader};

fn ctx(c: &str) -> RouteContext {
    RouteContext::new("t", "db", c).unwrap()
}

fn key(c: &str, id: &str) -> ObjectKey {
    ObjectKey::new(ctx(c), ObjectId::new(id).unwrap())
}

fn commit(key: &ObjectKey, expected: Option<u64>, request: &str, at: i64) -> Commit {
    let expected = expected.map(|n| Ov::new(n).unwrap());
    let ov = Ov::after(expected).unwrap();
    let at = Timestamp::from_millis(at).unwrap();
    let request_id = RequestId::new(request).unwrap();
    Commit {
        key: key.clone(),
        expected,
        version: NewVersion {
            ov,
            op: if expected.is_none() { Op::Create } else { Op::Update },
            at,
            provenance: Provenance { actor: None, reason: None, request_id },
            snapshot: SnapshotRef {
                key: format!("s/{request}"),
                checksum: Checksum::of_bytes(request.as_bytes()),
                seal: Checksum::of_bytes(b"seal"),
                size: 1,
            },
            restored_from: None,
            system: SystemHeader::created(at),
            indexed: Map::new(),
            inline: None,
            dev_shadow: None,
        },
        counters: Vec::new(),
        fingerprint: Checksum::of_bytes(request.as_bytes()),
    }
}

fn ovs(w: &BatchWrites) -> Vec<(u64, u64)> {
    w.accepted.iter().map(|a| (a.record.ov.get(), a.record.cv.0)).collect()
}

#[test]
fn accepted_commits_take_consecutive_cvs_in_batch_order() {
    let (a, b) = (key("c", "a"), key("c", "b"));
    let batch = vec![commit(&a, None, "r1", 1), commit(&b, None, "r2", 1), commit(&a, Some(1), "r3", 2)];
    let plan = plan_batch(&batch, |_| None, |_| None).unwrap();
    assert!(plan.all_accepted());
    let w = plan.finish(&batch, Cv(7)).unwrap();
    assert_eq!(ovs(&w), vec![(1, 8), (1, 9), (2, 10)]);
    assert_eq!(w.last_cv, Cv(10));
    // `a`'s head is its second version, once.
    let heads: Vec<(String, u64)> = w.final_heads().iter().map(|h| (h.key.id.to_string(), h.ov.get())).collect();
    assert_eq!(heads, vec![("b".to_string(), 1), ("a".to_string(), 2)]);
}

#[test]
fn conflicts_inside_a_batch_are_answered_per_item() {
    let a = key("c", "a");
    // Two racing updates of the same head: the first wins, the second conflicts.
    let batch = vec![commit(&a, Some(1), "r1", 5), commit(&a, Some(1), "r2", 5)];
    let head = commit(&a, None, "r0", 1).outcome(Cv(1)).1;
    let plan = plan_batch(&batch, |_| None, |_| Some(head.clone())).unwrap();
    assert_eq!(plan.accepted(), 1);
    let w = plan.finish(&batch, Cv(1)).unwrap();
    assert_eq!(w.answers[0].as_ref().unwrap().cv, Cv(2));
    assert_eq!(w.answers[1].as_ref().unwrap_err().kind(), ErrorKind::VersionConflict);
}

#[test]
fn request_ids_replay_from_the_store_and_from_the_batch() {
    let (a, b) = (key("c", "a"), key("c", "b"));
    let stored =
        Committed { key: b.clone(), ov: Ov::FIRST, cv: Cv(3), at: Timestamp::from_millis(1).unwrap(), replayed: true };
    let fp_old = commit(&b, None, "old", 1).fingerprint;
    let batch = vec![
        commit(&b, None, "old", 1), // recorded in the store: replayed
        commit(&a, None, "new", 1), // accepted
        commit(&a, None, "new", 1), // same request as item 1: its replay
        {
            let mut c = commit(&a, None, "new", 1);
            c.fingerprint = Checksum::of_bytes(b"other");
            c
        }, // reuse: conflict
    ];
    let recorded = |r: &RequestId| (r.as_str() == "old").then(|| (stored.clone(), fp_old));
    let plan = plan_batch(&batch, recorded, |_| None).unwrap();
    assert!(!plan.all_accepted());
    let w = plan.finish(&batch, Cv(3)).unwrap();
    assert_eq!(w.answers[0].as_ref().unwrap(), &stored);
    let first = w.answers[1].as_ref().unwrap();
    assert_eq!((first.cv, first.replayed), (Cv(4), false));
    let again = w.answers[2].as_ref().unwrap();
    assert_eq!((again.cv, again.replayed), (Cv(4), true));
    assert_eq!(w.answers[3].as_ref().unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(w.accepted.len(), 1);
}

#[test]
fn invalid_items_are_validation_answers_and_bad_batches_are_refused() {
    let a = key("c", "a");
    let mut bad = commit(&a, None, "r1", 1);
    bad.version.ov = Ov::new(3).unwrap();
    let batch = vec![bad, commit(&a, None, "r2", 1)];
    let w = plan_batch(&batch, |_| None, |_| None).unwrap().finish(&batch, Cv::ZERO).unwrap();
    assert_eq!(w.answers[0].as_ref().unwrap_err().kind(), ErrorKind::Validation);
    assert_eq!(w.answers[1].as_ref().unwrap().cv, Cv(1));

    let mixed = vec![commit(&a, None, "r1", 1), commit(&key("other", "b"), None, "r2", 1)];
    assert_eq!(plan_batch(&mixed, |_| None, |_| None).unwrap_err().kind(), ErrorKind::Validation);
    let many: Vec<Commit> =
        (0..=MAX_BATCH).map(|i| commit(&key("c", &format!("o{i}")), None, &format!("r{i}"), 1)).collect();
    assert_eq!(check_batch(&many).unwrap_err().kind(), ErrorKind::Validation);
    assert!(check_batch(&[]).is_ok());
}

#[test]
fn a_timestamp_before_the_head_is_refused() {
    let a = key("c", "a");
    let head = commit(&a, None, "r0", 10).outcome(Cv(1)).1;
    let batch = vec![commit(&a, Some(1), "r1", 5)];
    let w = plan_batch(&batch, |_| None, |_| Some(head.clone())).unwrap().finish(&batch, Cv(1)).unwrap();
    assert_eq!(w.answers[0].as_ref().unwrap_err().kind(), ErrorKind::Validation);
    assert_eq!(w.last_cv, Cv(1));
}
