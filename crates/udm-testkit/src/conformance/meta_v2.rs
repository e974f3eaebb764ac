//! [`MetaStore`](udm_core::ports::MetaStore) v2 scenarios: enumeration, import with given OV/CV/timestamps, prune.

use serde_json::json;
use udm_core::ports::{Commit, ImportOutcome, ImportedVersion};
use udm_core::query::{HistoryQuery, Order, parse_history_cursor};
use udm_core::{Cv, ErrorKind, Name, ObjectId, ObjectKey, Op, RouteContext, Timestamp, VersionRecord};

use super::MetaAdapters;
use super::meta::{all_versions, meta_state};
use crate::fixtures::{commit, key, ov, rid, ts, unique_ctx};

fn ctx_in(base: &RouteContext, db: &str, collection: &str) -> RouteContext {
    RouteContext::new(base.tenant.as_str(), db, collection).expect("context")
}

fn ids(items: &[ObjectId]) -> Vec<&str> {
    items.iter().map(ObjectId::as_str).collect()
}

/// Version `n` of `k` as the fixture commit makes it (CREATE at 1, UPDATE after).
fn nth(k: &ObjectKey, n: u64, at: Timestamp) -> Commit {
    let expected = if n == 1 { None } else { Some(ov(n - 1)) };
    commit(k, expected, Op::Update, at, &format!("r{n}"), &json!({"n": n}))
}

/// What importing `c`'s version with CV `cv` carries.
fn imported(c: &Commit, cv: u64) -> ImportedVersion {
    let (record, _, _) = c.outcome(Cv(cv));
    ImportedVersion {
        record,
        system: c.version.system.clone(),
        indexed: c.version.indexed.clone(),
        inline: c.version.inline.clone(),
        fingerprint: c.fingerprint,
    }
}

/// Collections of a tenant (and db) with at least one head, paged in (db, collection) order;
/// objects of a collection (soft-deleted included), paged in id order; tenants isolated.
pub async fn enumeration_pages_and_isolates_tenants(a: MetaAdapters) {
    let alpha = unique_ctx("alpha");
    let beta = ctx_in(&alpha, "db", "beta");
    let gone = ctx_in(&alpha, "db", "gamma");
    let other_db = ctx_in(&alpha, "db2", "alpha");
    let other_tenant = unique_ctx("alpha");
    for i in 1..=5 {
        a.meta
            .commit(commit(&key(&alpha, &format!("o{i}")), None, Op::Create, ts(1), &format!("a{i}"), &json!({})))
            .await
            .unwrap();
    }
    // o3 soft-deleted: still an object of the collection.
    a.meta.commit(commit(&key(&alpha, "o3"), Some(ov(1)), Op::Delete, ts(2), "a3d", &json!({}))).await.unwrap();
    for (ctx, id) in [(&beta, "x1"), (&gone, "g1"), (&other_db, "y1"), (&other_tenant, "z1")] {
        a.meta.commit(commit(&key(ctx, id), None, Op::Create, ts(1), id, &json!({}))).await.unwrap();
    }
    a.meta.hard_delete(&key(&gone, "g1"), vec![]).await.unwrap();

    let t = &alpha.tenant;
    let p1 = a.meta.list_collections(t, None, None, 2).await.unwrap();
    assert_eq!(p1.items, vec![alpha.clone(), beta.clone()]);
    let p2 = a.meta.list_collections(t, None, p1.next.as_deref(), 2).await.unwrap();
    assert_eq!((p2.items, p2.next), (vec![other_db.clone()], None));
    let db2 = Name::new("db2").unwrap();
    assert_eq!(a.meta.list_collections(t, Some(&db2), None, 10).await.unwrap().items, vec![other_db.clone()]);
    let db = Name::new("db").unwrap();
    assert_eq!(a.meta.list_collections(t, Some(&db), None, 10).await.unwrap().items, vec![alpha.clone(), beta]);
    let theirs = a.meta.list_collections(&other_tenant.tenant, None, None, 10).await.unwrap();
    assert_eq!((theirs.items, theirs.next), (vec![other_tenant.clone()], None));
    let nobody = Name::new(format!("{}x", alpha.tenant)).unwrap();
    assert!(a.meta.list_collections(&nobody, None, None, 10).await.unwrap().items.is_empty());

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = a.meta.list_objects(&alpha, after.as_deref(), 2).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(ids(&page.items).into_iter().map(str::to_owned));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["o1", "o2", "o3", "o4", "o5"]);
    let tail = a.meta.list_objects(&alpha, Some("o2"), 10).await.unwrap();
    assert_eq!((ids(&tail.items), tail.next), (vec!["o3", "o4", "o5"], None));
    assert!(a.meta.list_objects(&gone, None, 10).await.unwrap().items.is_empty(), "hard-deleted objects are gone");
    assert_eq!(ids(&a.meta.list_objects(&other_tenant, None, 10).await.unwrap().items), ["z1"]);

    for bad in [
        a.meta.list_objects(&alpha, Some("a/b"), 10).await.map(|_| ()),
        a.meta.list_objects(&alpha, None, 0).await.map(|_| ()),
        a.meta.list_collections(t, None, Some("no-slash"), 10).await.map(|_| ()),
        a.meta.list_collections(t, None, None, 0).await.map(|_| ()),
    ] {
        assert_eq!(bad.expect_err("rejected").kind(), ErrorKind::Validation);
    }
}

/// Import inserts versions with their given OV/CV/timestamp, moves the head only upwards,
/// never moves the collection CV backwards, is idempotent, refuses different content at the
/// same OV or a reused request id, and records request ids so replays answer after it.
pub async fn import_is_idempotent_and_never_moves_cvs_back(a: MetaAdapters) {
    let ctx = unique_ctx("imported");
    let k = key(&ctx, "a");
    let cs: Vec<Commit> = (1..=3).map(|n| nth(&k, n, ts(n as i64 * 100))).collect();
    let (v1, v2, v3) = (imported(&cs[0], 10), imported(&cs[1], 20), imported(&cs[2], 30));

    let out = a.meta.import(vec![v1.clone(), v3.clone()]).await.expect("import");
    assert_eq!(out, ImportOutcome { inserted: 2, unchanged: 0, heads_moved: 2 });
    let head = a.meta.head(&k).await.unwrap().expect("head");
    assert_eq!(
        (head.ov, head.cv, head.at, head.snapshot.clone()),
        (ov(3), Cv(30), ts(300), v3.record.snapshot.clone())
    );
    assert_eq!(head.inline, v3.inline);
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv(30));
    assert_eq!(a.meta.version(&k, ov(2)).await.unwrap(), None, "a gap until 2 is imported");

    let out = a.meta.import(vec![v2.clone()]).await.unwrap();
    assert_eq!(out, ImportOutcome { inserted: 1, unchanged: 0, heads_moved: 0 });
    assert_eq!(a.meta.head(&k).await.unwrap().unwrap().ov, ov(3), "the head never moves down");
    let want: Vec<VersionRecord> = vec![v1.record.clone(), v2.record.clone(), v3.record.clone()];
    assert_eq!(all_versions(&*a.meta, &k).await, want);
    assert_eq!(a.meta.version_at_cv(&k, Cv(25)).await.unwrap().map(|v| v.ov), Some(ov(2)));

    let before = meta_state(&a, &ctx, std::slice::from_ref(&k)).await;
    let again = a.meta.import(vec![v1.clone(), v2.clone(), v3.clone()]).await.unwrap();
    assert_eq!(again, ImportOutcome { inserted: 0, unchanged: 3, heads_moved: 0 });
    assert_eq!(meta_state(&a, &ctx, std::slice::from_ref(&k)).await, before, "re-importing changes nothing");

    // Different content at a stored OV; a request id already used by another version.
    let mut changed = v2.clone();
    changed.record.provenance.actor = Some("someone else".into());
    let mut reused = imported(&nth(&k, 4, ts(400)), 40);
    reused.record.provenance.request_id = rid("r1");
    let mut refingerprinted = v2.clone();
    refingerprinted.fingerprint = udm_core::Checksum::of_bytes(b"other");
    for bad in [changed, reused, refingerprinted] {
        let err = a.meta.import(vec![imported(&nth(&k, 4, ts(400)), 41), bad]).await.expect_err("conflict");
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    }
    // Out of order with the head (CV not above it) and invalid versions.
    let err = a.meta.import(vec![imported(&nth(&k, 4, ts(400)), 5)]).await.expect_err("out of order");
    assert_eq!(err.kind(), ErrorKind::Validation);
    let err = a.meta.import(vec![imported(&nth(&k, 4, ts(400)), 0)]).await.expect_err("cv 0");
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert_eq!(meta_state(&a, &ctx, std::slice::from_ref(&k)).await, before, "refused batches change nothing");

    // The collection CV never moves backwards; commits continue above it.
    let other = key(&ctx, "b");
    let done = a.meta.commit(commit(&other, None, Op::Create, ts(1), "b1", &json!({}))).await.unwrap();
    assert_eq!(done.cv, Cv(31));
    let low = imported(&commit(&key(&ctx, "c"), None, Op::Create, ts(50), "c1", &json!({})), 7);
    assert_eq!(a.meta.import(vec![low]).await.unwrap().inserted, 1);
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv(31));
    let next = a.meta.commit(nth(&k, 4, ts(400))).await.expect("commit after the imported head");
    assert_eq!((next.ov, next.cv, next.replayed), (ov(4), Cv(32), false));

    // Imported request ids replay.
    let replay = a.meta.commit(cs[1].clone()).await.expect("replay");
    assert_eq!((replay.ov, replay.cv, replay.at, replay.replayed), (ov(2), Cv(20), ts(200), true));
    let (found, fp) = a.meta.find_request(&ctx, &rid("r3")).await.unwrap().expect("recorded");
    assert_eq!((found.ov, found.cv, fp), (ov(3), Cv(30), cs[2].fingerprint));
    let mut other_payload = cs[0].clone();
    other_payload.fingerprint = udm_core::Checksum::of_bytes(b"different");
    assert_eq!(a.meta.commit(other_payload).await.expect_err("different payload").kind(), ErrorKind::Conflict);
}

/// Prune removes chosen non-head versions (returning their snapshots), never the head's;
/// every read answers correctly across the gaps; request records stay.
pub async fn prune_leaves_readable_gaps(a: MetaAdapters) {
    let ctx = unique_ctx("pruned");
    let k = key(&ctx, "doc");
    let cs: Vec<Commit> = (1..=10).map(|n| nth(&k, n, ts(n as i64 * 100))).collect();
    for c in &cs {
        a.meta.commit(c.clone()).await.expect("commit");
    }
    let snaps = |ns: &[usize]| ns.iter().map(|n| cs[n - 1].version.snapshot.clone()).collect::<Vec<_>>();

    let err = a.meta.prune(&k, &[ov(9), ov(10)]).await.expect_err("head refused");
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert_eq!(all_versions(&*a.meta, &k).await.len(), 10, "a refused prune removes nothing");

    assert_eq!(a.meta.prune(&k, &[ov(5), ov(3), ov(4), ov(4)]).await.unwrap(), snaps(&[3, 4, 5]));
    assert_eq!(a.meta.prune(&k, &[ov(3)]).await.unwrap(), vec![], "pruning again removes nothing");
    assert_eq!(a.meta.prune(&key(&ctx, "nobody"), &[ov(1)]).await.unwrap(), vec![]);

    let ov_of = |v: Option<VersionRecord>| v.map(|v| v.ov.get());
    assert_eq!(ov_of(a.meta.version(&k, ov(4)).await.unwrap()), None);
    assert_eq!(ov_of(a.meta.version(&k, ov(2)).await.unwrap()), Some(2));
    assert_eq!(ov_of(a.meta.version(&k, ov(6)).await.unwrap()), Some(6));
    for (t, want) in [(250, Some(2)), (450, Some(2)), (500, Some(2)), (600, Some(6)), (99, None), (10_000, Some(10))] {
        assert_eq!(ov_of(a.meta.version_at(&k, ts(t)).await.unwrap()), want, "as of {t}");
    }
    for (cv, want) in [(4, Some(2)), (5, Some(2)), (2, Some(2)), (6, Some(6)), (0, None)] {
        assert_eq!(ov_of(a.meta.version_at_cv(&k, Cv(cv)).await.unwrap()), want, "as of cv {cv}");
    }
    let all: Vec<u64> = all_versions(&*a.meta, &k).await.iter().map(|v| v.ov.get()).collect();
    assert_eq!(all, [1, 2, 6, 7, 8, 9, 10]);
    for order in [Order::Asc, Order::Desc] {
        let mut q = HistoryQuery { limit: 2, order, ..HistoryQuery::default() };
        let mut got = Vec::new();
        loop {
            let page = a.meta.history(&k, &q).await.unwrap();
            assert!(page.items.len() <= 2);
            got.extend(page.items.iter().map(|v| v.ov.get()));
            match page.next {
                Some(n) => q.after = Some(parse_history_cursor(&n).unwrap()),
                None => break,
            }
        }
        let mut want = all.clone();
        if order == Order::Desc {
            want.reverse();
        }
        assert_eq!(got, want, "{order:?}");
    }

    // Pruning version 1 too: nothing is left at or before 150.
    assert_eq!(a.meta.prune(&k, &[ov(1), ov(7), ov(8)]).await.unwrap(), snaps(&[1, 7, 8]));
    assert_eq!(ov_of(a.meta.version_at(&k, ts(150)).await.unwrap()), None);
    assert_eq!(ov_of(a.meta.version_at(&k, ts(899)).await.unwrap()), Some(6));
    assert_eq!(ov_of(a.meta.version_at_cv(&k, Cv(8)).await.unwrap()), Some(6));

    // Request records of pruned versions stay: replays still answer.
    let replay = a.meta.commit(cs[3].clone()).await.expect("replay of a pruned version's request");
    assert_eq!((replay.ov, replay.cv, replay.replayed), (ov(4), Cv(4), true));
    assert!(a.meta.find_request(&ctx, &rid("r1")).await.unwrap().is_some());

    // A pruned version can be imported again; hard delete returns only what remains.
    let back = imported(&cs[2], 3);
    assert_eq!(a.meta.import(vec![back]).await.unwrap().inserted, 1);
    assert_eq!(ov_of(a.meta.version(&k, ov(3)).await.unwrap()), Some(3));
    let gone = a.meta.hard_delete(&k, vec![]).await.unwrap();
    let mut left = gone.snapshots;
    left.sort_by(|x, y| x.key.cmp(&y.key));
    let mut want = snaps(&[2, 3, 6, 9, 10]);
    want.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(left, want);
    assert!(a.meta.find_request(&ctx, &rid("r4")).await.unwrap().is_none(), "hard delete removes pruned requests too");
}

/// As-of answers exactly the reference (the last stored version at or before the instant or
/// CV) on `k`'s stored history, probed at every instant and CV around it.
async fn as_of_matches_the_stored_history(a: &MetaAdapters, k: &ObjectKey) {
    let all = all_versions(&*a.meta, k).await;
    let last = all.last().expect("a history");
    let ov_of = |v: Option<&VersionRecord>| v.map(|v| v.ov.get());
    for t in (0..=last.at.as_millis() + 10).step_by(3) {
        let want = all.iter().rev().find(|v| v.at.as_millis() <= t);
        assert_eq!(ov_of(a.meta.version_at(k, ts(t)).await.unwrap().as_ref()), ov_of(want), "{k} as of {t}");
    }
    for cv in 0..=last.cv.0 + 1 {
        let want = all.iter().rev().find(|v| v.cv.0 <= cv);
        assert_eq!(ov_of(a.meta.version_at_cv(k, Cv(cv)).await.unwrap().as_ref()), ov_of(want), "{k} as of cv {cv}");
    }
}

/// As-of over a history longer than any adapter's index bucket (200 versions), after whole
/// runs of versions are pruned (bucket-opening OVs 64, 128 and 192 among them), on a history
/// that was imported rather than committed, and after a hard delete and a re-creation later
/// in time (nothing of the old history may answer).
pub async fn as_of_follows_prunes_imports_and_rebirth(a: MetaAdapters) {
    let ctx = unique_ctx("asof");
    let k = key(&ctx, "doc");
    for n in 1..=200 {
        a.meta.commit(nth(&k, n, ts(n as i64 * 10))).await.expect("commit");
    }
    as_of_matches_the_stored_history(&a, &k).await;
    let pruned: Vec<_> = (60..=70).chain(120..=135).chain([191, 192]).map(ov).collect();
    assert_eq!(a.meta.prune(&k, &pruned).await.unwrap().len(), pruned.len());
    as_of_matches_the_stored_history(&a, &k).await;

    let imported_ctx = unique_ctx("asof-imported");
    let k2 = key(&imported_ctx, "doc");
    let history: Vec<ImportedVersion> = (1..=150).map(|n| imported(&nth(&k2, n, ts(n as i64 * 7)), n * 2)).collect();
    assert_eq!(a.meta.import(history).await.unwrap().inserted, 150);
    as_of_matches_the_stored_history(&a, &k2).await;

    a.meta.hard_delete(&k, vec![]).await.unwrap();
    let again = commit(&k, None, Op::Create, ts(50_000), "again", &json!({"again": true}));
    let cv = a.meta.commit(again).await.unwrap().cv;
    for t in [10, 640, 1_280, 2_000, 49_999] {
        assert!(a.meta.version_at(&k, ts(t)).await.unwrap().is_none(), "the deleted history answered as of {t}");
    }
    for c in [1, 64, 200, cv.0 - 1] {
        assert!(a.meta.version_at_cv(&k, Cv(c)).await.unwrap().is_none(), "the deleted history answered as of cv {c}");
    }
    assert_eq!(a.meta.version_at(&k, ts(50_000)).await.unwrap().map(|v| v.ov), Some(ov(1)));
    assert_eq!(a.meta.version_at_cv(&k, cv).await.unwrap().map(|v| v.ov), Some(ov(1)));
}
