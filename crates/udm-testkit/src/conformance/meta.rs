//! [`MetaStore`] scenarios: commits, reads, idempotency, locking, races, counters.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use udm_core::counters::CounterDelta;
use udm_core::ports::{JobRecord, MetaStore, ShrinkPolicy};
use udm_core::query::{HistoryQuery, Order};
use udm_core::version::DevShadow;
use udm_core::{Cv, ErrorKind, Head, ObjectKey, Op, Ov, RouteContext, VersionRecord};

use super::MetaAdapters;
use crate::fixtures::{commit, key, ov, rid, ts, unique_ctx};

/// Everything a store holds about some objects of one collection, for "nothing changed" checks.
#[derive(Debug, PartialEq)]
pub struct MetaState {
    heads: Vec<Option<Head>>,
    versions: Vec<Vec<VersionRecord>>,
    cv: Cv,
    counters: BTreeMap<String, i64>,
}

/// Reads [`MetaState`] of `keys` (all in `ctx`).
pub async fn meta_state(a: &MetaAdapters, ctx: &RouteContext, keys: &[ObjectKey]) -> MetaState {
    let mut heads = Vec::new();
    let mut versions = Vec::new();
    for k in keys {
        heads.push(a.meta.head(k).await.expect("head"));
        versions.push(all_versions(&*a.meta, k).await);
    }
    let cv = a.meta.collection_cv(ctx).await.expect("cv");
    let counters = a.counters.totals(ctx).await.expect("totals");
    MetaState { heads, versions, cv, counters }
}

/// Every version record of `key`, paging through history.
pub async fn all_versions(meta: &dyn MetaStore, key: &ObjectKey) -> Vec<VersionRecord> {
    let mut out = Vec::new();
    let mut q = HistoryQuery { limit: 1000, ..HistoryQuery::default() };
    loop {
        let page = meta.history(key, &q).await.expect("history");
        out.extend(page.items);
        match page.next {
            Some(n) => q.after = Some(udm_core::query::parse_history_cursor(&n).expect("cursor")),
            None => return out,
        }
    }
}

/// Creating an object makes its head, version 1, CV 1 and the request record readable.
pub async fn create_then_read(a: MetaAdapters) {
    let ctx = unique_ctx("users");
    let k = key(&ctx, "u1");
    let data = json!({"name": "Ada", "tier": "gold"});
    let c = commit(&k, None, Op::Create, ts(1_000), "r1", &data);
    let done = a.meta.commit(c.clone()).await.expect("commit");
    assert_eq!((done.ov, done.cv, done.at, done.replayed), (Ov::FIRST, Cv(1), ts(1_000), false));

    let head = a.meta.head(&k).await.unwrap().expect("head exists");
    assert_eq!((head.ov, head.cv, head.op), (Ov::FIRST, Cv(1), Op::Create));
    assert_eq!(head.snapshot, c.version.snapshot);
    assert_eq!(head.inline.as_ref(), Some(&data));
    assert_eq!(head.indexed.get("tier"), Some(&json!("gold")));
    assert!(!head.is_deleted());

    let v = a.meta.version(&k, Ov::FIRST).await.unwrap().expect("version 1");
    assert_eq!((v.cv, v.op, v.at, v.deleted), (Cv(1), Op::Create, ts(1_000), false));
    assert_eq!(v.provenance, c.version.provenance);
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv(1));
    let (found, fp) = a.meta.find_request(&ctx, &rid("r1")).await.unwrap().expect("request recorded");
    assert_eq!((found.ov, found.cv, found.replayed), (Ov::FIRST, Cv(1), true));
    assert_eq!(fp, c.fingerprint);
    a.meta.ping().await.expect("ping");
}

/// 1,000 versions: as-of by time (inclusive, ties to the highest OV) and by CV.
pub async fn as_of_on_1000_versions(a: MetaAdapters) {
    let ctx = unique_ctx("long");
    let k = key(&ctx, "doc");
    let other = key(&ctx, "other");
    let mut head = None;
    for i in 1..=1000u64 {
        // Two versions share each timestamp: 10, 10, 20, 20, …
        let at = ts((i.div_ceil(2) * 10) as i64);
        let c = commit(&k, head, Op::Update, at, &format!("r{i}"), &json!({"i": i}));
        head = Some(a.meta.commit(c).await.expect("commit").ov);
        if i % 100 == 0 {
            // Interleave another object so CVs and OVs differ.
            let prev = a.meta.head(&other).await.unwrap().map(|h| h.ov);
            a.meta
                .commit(commit(&other, prev, Op::Update, at, &format!("o{i}"), &json!({"o": i})))
                .await
                .expect("other");
        }
    }
    assert_eq!(head, Some(ov(1000)));
    assert!(a.meta.version_at(&k, ts(9)).await.unwrap().is_none(), "before the first version");
    for (t, want) in [(10, 2), (15, 2), (20, 4), (4_995, 998), (5_000, 1000), (9_999_999, 1000)] {
        let v = a.meta.version_at(&k, ts(t)).await.unwrap().expect("as of");
        assert_eq!(v.ov, ov(want), "as of t={t}");
    }
    // CVs: 100 versions of `k`, then one of `other`, so version i has CV i + (i-1)/100.
    for i in [1u64, 99, 100, 101, 555, 1000] {
        let v = a.meta.version(&k, ov(i)).await.unwrap().expect("version");
        assert_eq!(v.cv, Cv(i + (i - 1) / 100), "cv of ov {i}");
        assert_eq!(a.meta.version_at_cv(&k, v.cv).await.unwrap().expect("as of cv").ov, ov(i));
    }
    // CV 101 is `other`'s first version: `k` as of it is still ov 100.
    assert_eq!(a.meta.version_at_cv(&k, Cv(101)).await.unwrap().expect("as of cv").ov, ov(100));
    assert!(a.meta.version_at_cv(&other, Cv(100)).await.unwrap().is_none());
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv(1010));
}

/// Replaying a committed request id returns the original result and writes nothing; the same
/// id with another payload is a conflict.
pub async fn replay_is_idempotent(a: MetaAdapters) {
    let ctx = unique_ctx("idem");
    let k = key(&ctx, "x");
    let c = commit(&k, None, Op::Create, ts(5), "req-1", &json!({"v": 1}));
    let first = a.meta.commit(c.clone()).await.unwrap();
    let before = meta_state(&a, &ctx, std::slice::from_ref(&k)).await;
    let again = a.meta.commit(c.clone()).await.expect("replay");
    assert!(again.replayed);
    assert_eq!((again.ov, again.cv, again.at), (first.ov, first.cv, first.at));
    // Replaying while the head has moved on still returns the original result.
    a.meta.commit(commit(&k, Some(Ov::FIRST), Op::Update, ts(6), "req-2", &json!({"v": 2}))).await.unwrap();
    let later = a.meta.commit(c.clone()).await.expect("replay after update");
    assert_eq!((later.ov, later.replayed), (Ov::FIRST, true));

    let mid = meta_state(&a, &ctx, std::slice::from_ref(&k)).await;
    let mut different = commit(&k, Some(ov(2)), Op::Update, ts(7), "req-1", &json!({"v": 3}));
    different.fingerprint = udm_core::Checksum::of_bytes(b"another payload");
    let e = a.meta.commit(different).await.expect_err("same id, other payload");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(meta_state(&a, &ctx, std::slice::from_ref(&k)).await, mid, "conflict changed nothing");
    assert_ne!(before, mid);
}

/// A stale expected OV (or a create of an existing object) fails with the current OV.
pub async fn expected_ov_conflicts(a: MetaAdapters) {
    let ctx = unique_ctx("lock");
    let k = key(&ctx, "x");
    a.meta.commit(commit(&k, None, Op::Create, ts(1), "c", &json!({}))).await.unwrap();
    a.meta.commit(commit(&k, Some(ov(1)), Op::Update, ts(2), "u1", &json!({"a": 1}))).await.unwrap();
    let before = meta_state(&a, &ctx, std::slice::from_ref(&k)).await;

    let e = a.meta.commit(commit(&k, Some(ov(1)), Op::Update, ts(3), "u2", &json!({"a": 2}))).await.unwrap_err();
    assert_eq!((e.kind(), e.current_ov()), (ErrorKind::VersionConflict, Some(ov(2))));
    let e = a.meta.commit(commit(&k, None, Op::Create, ts(3), "c2", &json!({}))).await.unwrap_err();
    assert_eq!((e.kind(), e.current_ov()), (ErrorKind::VersionConflict, Some(ov(2))));
    let missing = key(&ctx, "nope");
    let e = a.meta.commit(commit(&missing, Some(ov(1)), Op::Update, ts(3), "u3", &json!({}))).await.unwrap_err();
    assert_eq!((e.kind(), e.current_ov()), (ErrorKind::VersionConflict, None));
    assert_eq!(meta_state(&a, &ctx, std::slice::from_ref(&k)).await, before, "conflicts changed nothing");
    assert!(a.meta.head(&missing).await.unwrap().is_none());
    // A conflicting request id is not burnt: it can commit later.
    a.meta
        .commit(commit(&k, Some(ov(2)), Op::Update, ts(3), "u2", &json!({"a": 2})))
        .await
        .expect("retry with fresh OV");
}

/// 8 writers race on one object, 20 times over: every round exactly one wins, OVs stay
/// contiguous, nothing is lost or duplicated.
pub async fn writers_race(a: MetaAdapters) {
    const WRITERS: usize = 8;
    const ROUNDS: u64 = 5;
    for race in 0..20 {
        let ctx = unique_ctx("race");
        let k = key(&ctx, "hot");
        a.meta.commit(commit(&k, None, Op::Create, ts(1), "init", &json!({}))).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (meta, k) = (a.meta.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                let mut wins = Vec::new();
                for round in 1..=ROUNDS {
                    let c = commit(
                        &k,
                        Some(ov(round)),
                        Op::Update,
                        ts(1 + round as i64),
                        &format!("w{w}-r{round}"),
                        &json!({"w": w, "round": round}),
                    );
                    match meta.commit(c).await {
                        Ok(done) => wins.push((round, done.ov)),
                        Err(e) if e.kind() == ErrorKind::VersionConflict => {}
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                    // Wait until the round is decided before the next.
                    while meta.head(&k).await.unwrap().map(|h| h.ov) < Some(ov(round + 1)) {
                        tokio::task::yield_now().await;
                    }
                }
                wins
            }));
        }
        let mut wins: Vec<(u64, Ov)> = Vec::new();
        for t in tasks {
            wins.extend(t.await.expect("writer task"));
        }
        wins.sort();
        let rounds: Vec<u64> = wins.iter().map(|(r, _)| *r).collect();
        assert_eq!(rounds, (1..=ROUNDS).collect::<Vec<_>>(), "race {race}: exactly one winner per round");
        let history = all_versions(&*a.meta, &k).await;
        let ovs: Vec<u64> = history.iter().map(|v| v.ov.get()).collect();
        assert_eq!(ovs, (1..=ROUNDS + 1).collect::<Vec<_>>(), "race {race}: contiguous OVs");
        let cvs: BTreeSet<Cv> = history.iter().map(|v| v.cv).collect();
        assert_eq!(cvs.len(), history.len(), "race {race}: distinct CVs");
    }
}

/// Malformed commits are rejected before anything is written.
pub async fn rejected_commits_change_nothing(a: MetaAdapters) {
    let ctx = unique_ctx("bad");
    let k = key(&ctx, "x");
    a.meta.commit(commit(&k, None, Op::Create, ts(100), "c", &json!({}))).await.unwrap();
    let before = meta_state(&a, &ctx, std::slice::from_ref(&k)).await;

    let mut skipping = commit(&k, Some(ov(1)), Op::Update, ts(101), "skip", &json!({}));
    skipping.version.ov = ov(3);
    let mut create_op_on_update = commit(&k, Some(ov(1)), Op::Update, ts(101), "op", &json!({}));
    create_op_on_update.version.op = Op::Create;
    let back_in_time = commit(&k, Some(ov(1)), Op::Update, ts(99), "time", &json!({}));
    for bad in [skipping, create_op_on_update, back_in_time] {
        let e = a.meta.commit(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Validation, "{e}");
    }
    assert_eq!(meta_state(&a, &ctx, std::slice::from_ref(&k)).await, before);
    for r in ["skip", "op", "time"] {
        assert!(a.meta.find_request(&ctx, &rid(r)).await.unwrap().is_none(), "{r} recorded");
    }
}

/// CVs are strictly increasing in commit order across the objects of a collection, and
/// independent between collections.
pub async fn cv_orders_commits_across_objects(a: MetaAdapters) {
    let ctx = unique_ctx("cvs");
    let other_ctx = unique_ctx("cvs");
    let mut seen = Vec::new();
    for i in 0..10 {
        let k = key(&ctx, &format!("o{}", i % 3));
        let prev = a.meta.head(&k).await.unwrap().map(|h| h.ov);
        seen.push(
            a.meta.commit(commit(&k, prev, Op::Update, ts(i), &format!("r{i}"), &json!({"i": i}))).await.unwrap().cv,
        );
    }
    assert_eq!(seen, (1..=10).map(Cv).collect::<Vec<_>>());
    let o = a.meta.commit(commit(&key(&other_ctx, "o0"), None, Op::Create, ts(0), "r0", &json!({}))).await.unwrap();
    assert_eq!(o.cv, Cv(1), "each collection counts its own CVs");
}

/// Logical deletes are versions: the head says deleted, older versions stay readable.
pub async fn deleted_versions_stay_readable(a: MetaAdapters) {
    let ctx = unique_ctx("del");
    let k = key(&ctx, "x");
    a.meta.commit(commit(&k, None, Op::Create, ts(1), "c", &json!({"v": 1}))).await.unwrap();
    a.meta.commit(commit(&k, Some(ov(1)), Op::Delete, ts(2), "d", &json!({"v": 1}))).await.unwrap();
    let head = a.meta.head(&k).await.unwrap().expect("head kept");
    assert!(head.is_deleted());
    assert_eq!(head.op, Op::Delete);
    assert!(a.meta.version(&k, ov(2)).await.unwrap().expect("v2").deleted);
    assert!(!a.meta.version(&k, ov(1)).await.unwrap().expect("v1").deleted);
    assert!(!a.meta.version_at(&k, ts(1)).await.unwrap().expect("as of").deleted);
}

/// Hard delete removes head, versions and request records and returns the snapshots.
pub async fn hard_delete_removes_everything(a: MetaAdapters) {
    let ctx = unique_ctx("hard");
    let (k, keep) = (key(&ctx, "gone"), key(&ctx, "kept"));
    a.meta.commit(commit(&k, None, Op::Create, ts(1), "c", &json!({}))).await.unwrap();
    a.meta.commit(commit(&k, Some(ov(1)), Op::Update, ts(2), "u", &json!({"a": 1}))).await.unwrap();
    a.meta.commit(commit(&keep, None, Op::Create, ts(3), "k", &json!({}))).await.unwrap();
    let delta = vec![CounterDelta { ctx: ctx.clone(), counter: "live".into(), delta: -1 }];
    let removed = a.meta.hard_delete(&k, delta.clone()).await.unwrap();
    assert!(removed.head_removed);
    let mut keys: Vec<_> = removed.snapshots.iter().map(|s| s.key.clone()).collect();
    keys.sort();
    assert_eq!(keys.len(), 2);
    assert!(
        keys[0].ends_with("00000000000000000001.c.json") && keys[1].ends_with("00000000000000000002.u.json"),
        "{keys:?}"
    );
    assert!(a.meta.head(&k).await.unwrap().is_none());
    assert!(all_versions(&*a.meta, &k).await.is_empty());
    assert!(a.meta.find_request(&ctx, &rid("c")).await.unwrap().is_none());
    assert!(a.meta.head(&keep).await.unwrap().is_some(), "other objects untouched");
    assert_eq!(a.counters.totals(&ctx).await.unwrap().get("live"), Some(&-1));
    // Again: nothing to remove, counters untouched.
    let again = a.meta.hard_delete(&k, delta).await.unwrap();
    assert!(!again.head_removed && again.snapshots.is_empty());
    assert_eq!(a.counters.totals(&ctx).await.unwrap().get("live"), Some(&-1));
}

/// Counter deltas commit with the version (and not with a rejected one).
pub async fn counters_move_with_commits(a: MetaAdapters) {
    let ctx = unique_ctx("count");
    let k = key(&ctx, "x");
    let d = |name: &str, n: i64| CounterDelta { ctx: ctx.clone(), counter: name.into(), delta: n };
    let mut c = commit(&k, None, Op::Create, ts(1), "c", &json!({}));
    c.counters = vec![d("created", 1), d("live", 1)];
    a.meta.commit(c.clone()).await.unwrap();
    a.meta.commit(c).await.unwrap(); // replay: counted once
    let mut stale = commit(&k, None, Op::Create, ts(2), "c2", &json!({}));
    stale.counters = vec![d("created", 1)];
    assert!(a.meta.commit(stale).await.is_err());
    let totals = a.counters.totals(&ctx).await.unwrap();
    assert_eq!(totals, BTreeMap::from([("created".into(), 1), ("live".into(), 1)]));
}

/// Dev shadows: shrink removes expired or oversized ones (dry run removes nothing).
pub async fn dev_shadows_shrink(a: MetaAdapters) {
    let ctx = unique_ctx("shadow");
    for (i, (written, bytes)) in [(10, 100), (1_000, 100), (1_000, 10_000)].into_iter().enumerate() {
        let mut c = commit(&key(&ctx, &format!("s{i}")), None, Op::Create, ts(written), &format!("r{i}"), &json!({}));
        c.version.dev_shadow = Some(DevShadow { data: json!({"big": "x"}), written_at: ts(written), bytes });
        a.meta.commit(c).await.unwrap();
    }
    let mut policy = ShrinkPolicy { expired_before: ts(500), max_bytes: 5_000, dry_run: true };
    let dry = a.meta.shrink_dev_shadows(Some(&ctx), &policy).await.unwrap();
    assert_eq!((dry.scanned, dry.removed, dry.bytes_freed), (3, 2, 10_100));
    assert!(a.meta.head(&key(&ctx, "s0")).await.unwrap().unwrap().dev_shadow.is_some(), "dry run removed nothing");
    policy.dry_run = false;
    let real = a.meta.shrink_dev_shadows(Some(&ctx), &policy).await.unwrap();
    assert_eq!(real, dry);
    assert!(a.meta.head(&key(&ctx, "s0")).await.unwrap().unwrap().dev_shadow.is_none());
    assert!(a.meta.head(&key(&ctx, "s1")).await.unwrap().unwrap().dev_shadow.is_some());
    assert_eq!(a.meta.shrink_dev_shadows(Some(&ctx), &policy).await.unwrap().removed, 0);
}

/// Job records round-trip and replace.
pub async fn jobs_round_trip(a: MetaAdapters) {
    let id = format!("{}/restore", unique_ctx("jobs"));
    assert!(a.meta.load_job(&id).await.unwrap().is_none());
    let mut job = JobRecord { id: id.clone(), state: json!({"next": "o5", "done": 4}), done: false };
    a.meta.save_job(&job).await.unwrap();
    assert_eq!(a.meta.load_job(&id).await.unwrap(), Some(job.clone()));
    job.done = true;
    job.state = Value::Null;
    a.meta.save_job(&job).await.unwrap();
    assert_eq!(a.meta.load_job(&id).await.unwrap(), Some(job));
}

/// Absent objects, versions and requests are `None`, not errors.
pub async fn missing_things_are_none(a: MetaAdapters) {
    let ctx = unique_ctx("missing");
    let k = key(&ctx, "ghost");
    assert!(a.meta.head(&k).await.unwrap().is_none());
    assert!(a.meta.version(&k, Ov::FIRST).await.unwrap().is_none());
    assert!(a.meta.version_at(&k, ts(i64::from(i32::MAX))).await.unwrap().is_none());
    assert!(a.meta.version_at_cv(&k, Cv(u64::from(u32::MAX))).await.unwrap().is_none());
    assert!(a.meta.find_request(&ctx, &rid("none")).await.unwrap().is_none());
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv::ZERO);
    assert!(a.counters.totals(&ctx).await.unwrap().is_empty());
    a.meta.commit(commit(&k, None, Op::Create, ts(1), "c", &json!({}))).await.unwrap();
    assert!(a.meta.version(&k, ov(2)).await.unwrap().is_none());
    let page = a.meta.history(&k, &HistoryQuery { after: Some(ov(1)), limit: 10, order: Order::Asc }).await.unwrap();
    assert!(page.items.is_empty() && page.next.is_none());
}
