//! [`MetaStore::commit_many`](udm_core::ports::MetaStore::commit_many) scenarios: group commit answers per item, assigns consecutive
//! CVs, is all-or-nothing for what it accepts, replays, and never loses a racing batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;
use udm_core::counters::CounterDelta;
use udm_core::ports::{Commit, MAX_BATCH};
use udm_core::{Cv, ErrorKind, Op, Ov};

use super::MetaAdapters;
use super::meta::{all_versions, meta_state};
use crate::fixtures::{commit, key, ov, ts, unique_ctx};

/// A batch of creates and updates (two of one object) commits with consecutive CVs in batch
/// order, and every read agrees.
pub async fn group_commit_assigns_consecutive_cvs(a: MetaAdapters) {
    let ctx = unique_ctx("group");
    let (x, y) = (key(&ctx, "x"), key(&ctx, "y"));
    a.meta.commit(commit(&x, None, Op::Create, ts(1), "x1", &json!({"n": 1}))).await.unwrap();
    let batch = vec![
        commit(&y, None, Op::Create, ts(2), "y1", &json!({"n": 1})),
        commit(&x, Some(ov(1)), Op::Update, ts(2), "x2", &json!({"n": 2})),
        commit(&x, Some(ov(2)), Op::Update, ts(3), "x3", &json!({"n": 3})),
        commit(&key(&ctx, "z"), None, Op::Create, ts(3), "z1", &json!({})),
    ];
    let answers = a.meta.commit_many(batch).await.unwrap();
    let got: Vec<(u64, u64)> = answers.iter().map(|r| r.as_ref().map(|c| (c.ov.get(), c.cv.0)).unwrap()).collect();
    assert_eq!(got, vec![(1, 2), (2, 3), (3, 4), (1, 5)]);
    assert!(answers.iter().all(|r| !r.as_ref().unwrap().replayed));
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv(5));
    let hx = a.meta.head(&x).await.unwrap().unwrap();
    assert_eq!((hx.ov, hx.cv, hx.inline.clone()), (ov(3), Cv(4), Some(json!({"n": 3}))));
    let cvs: Vec<u64> = all_versions(&*a.meta, &x).await.iter().map(|v| v.cv.0).collect();
    assert_eq!(cvs, vec![1, 3, 4]);
    assert_eq!(a.meta.version_at_cv(&x, Cv(3)).await.unwrap().unwrap().ov, ov(2));
    let (_, fp) = a.meta.find_request(&ctx, &crate::fixtures::rid("x3")).await.unwrap().unwrap();
    let x3 = commit(&x, Some(ov(2)), Op::Update, ts(3), "x3", &json!({"n": 3}));
    assert_eq!(fp, x3.fingerprint);
    // An empty batch commits nothing.
    assert!(a.meta.commit_many(Vec::new()).await.unwrap().is_empty());
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv(5));
}

/// Each item is answered on its own: a replay of a stored request id, a replay of an earlier
/// item, a reused id with other content, a stale expected OV and an invalid commit write
/// nothing; the rest commit, with only their counter deltas applied.
pub async fn group_commit_answers_each_item(a: MetaAdapters) {
    let ctx = unique_ctx("group-answers");
    let d = |n: i64| vec![CounterDelta { ctx: ctx.clone(), counter: "writes".into(), delta: n }];
    let (x, y, z) = (key(&ctx, "x"), key(&ctx, "y"), key(&ctx, "z"));
    let first = commit(&x, None, Op::Create, ts(1), "x1", &json!({}));
    a.meta.commit(first.clone()).await.unwrap();
    let with = |mut c: Commit, n: i64| {
        c.counters = d(n);
        c
    };
    let mut reused = commit(&y, None, Op::Create, ts(2), "y1", &json!({"other": true}));
    reused.fingerprint = udm_core::Checksum::of_bytes(b"another payload");
    let mut invalid = commit(&z, None, Op::Create, ts(2), "z-bad", &json!({}));
    invalid.version.ov = ov(5);
    let batch = vec![
        with(first.clone(), 100),                                                     // 0 stored: replay
        with(commit(&y, None, Op::Create, ts(2), "y1", &json!({"a": 1})), 1),         // 1 commits
        with(commit(&y, None, Op::Create, ts(2), "y1", &json!({"a": 1})), 100),       // 2 replay of 1
        with(reused, 100),                                                            // 3 conflict
        with(commit(&x, Some(ov(3)), Op::Update, ts(2), "x-stale", &json!({})), 100), // 4 stale
        with(invalid, 100),                                                           // 5 invalid
        with(commit(&x, Some(ov(1)), Op::Update, ts(2), "x2", &json!({"b": 2})), 10), // 6 commits
    ];
    let answers = a.meta.commit_many(batch).await.unwrap();
    assert_eq!(answers.len(), 7);
    let ok = |i: usize| answers[i].as_ref().unwrap_or_else(|e| panic!("item {i}: {e}")).clone();
    let kind = |i: usize| answers[i].as_ref().map(|_| ()).unwrap_err().kind();
    assert!(ok(0).replayed && ok(0).cv == Cv(1));
    assert_eq!((ok(1).cv, ok(1).replayed), (Cv(2), false));
    assert_eq!((ok(2).cv, ok(2).replayed), (Cv(2), true));
    assert_eq!(kind(3), ErrorKind::Conflict);
    assert_eq!(kind(4), ErrorKind::VersionConflict);
    assert_eq!(kind(5), ErrorKind::Validation);
    assert_eq!((ok(6).ov, ok(6).cv), (ov(2), Cv(3)));
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv(3));
    assert!(a.meta.head(&z).await.unwrap().is_none());
    assert!(a.meta.find_request(&ctx, &crate::fixtures::rid("x-stale")).await.unwrap().is_none());
    assert_eq!(a.counters.totals(&ctx).await.unwrap(), BTreeMap::from([("writes".into(), 11)]));
}

/// A batch whose every item is rejected, a batch of two collections and an oversized batch
/// change nothing; replaying a whole committed batch answers every item as a replay.
pub async fn group_commit_rejections_and_replays_change_nothing(a: MetaAdapters) {
    let ctx = unique_ctx("group-reject");
    let keys: Vec<_> = (0..3).map(|i| key(&ctx, &format!("o{i}"))).collect();
    let batch: Vec<Commit> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| commit(k, None, Op::Create, ts(1), &format!("r{i}"), &json!({"i": i})))
        .collect();
    let first = a.meta.commit_many(batch.clone()).await.unwrap();
    let before = meta_state(&a, &ctx, &keys).await;
    let again = a.meta.commit_many(batch).await.unwrap();
    for (f, g) in first.iter().zip(&again) {
        let (f, g) = (f.as_ref().unwrap(), g.as_ref().unwrap());
        assert!(g.replayed && (f.key.clone(), f.ov, f.cv) == (g.key.clone(), g.ov, g.cv));
    }
    let stale: Vec<Commit> =
        keys.iter().map(|k| commit(k, None, Op::Create, ts(2), &format!("{}-again", k.id), &json!({}))).collect();
    let answers = a.meta.commit_many(stale).await.unwrap();
    assert!(answers.iter().all(|r| r.as_ref().unwrap_err().kind() == ErrorKind::VersionConflict));
    let other = unique_ctx("group-other");
    let mixed = vec![
        commit(&key(&ctx, "m"), None, Op::Create, ts(3), "m", &json!({})),
        commit(&key(&other, "m"), None, Op::Create, ts(3), "m2", &json!({})),
    ];
    assert_eq!(a.meta.commit_many(mixed).await.unwrap_err().kind(), ErrorKind::Validation);
    let big: Vec<Commit> = (0..=MAX_BATCH)
        .map(|i| commit(&key(&ctx, &format!("big{i}")), None, Op::Create, ts(3), &format!("big{i}"), &json!({})))
        .collect();
    assert_eq!(a.meta.commit_many(big).await.unwrap_err().kind(), ErrorKind::Validation);
    assert_eq!(meta_state(&a, &ctx, &keys).await, before);
    assert!(a.meta.head(&key(&ctx, "m")).await.unwrap().is_none());
    assert!(a.meta.head(&key(&ctx, "big0")).await.unwrap().is_none());
}

/// Eight writers commit batches of creates and updates into one collection at once: every
/// item commits exactly once, and the CVs are exactly `1..=total`, each used once.
pub async fn group_commit_racing_batches(a: MetaAdapters) {
    let ctx = Arc::new(unique_ctx("group-race"));
    let writers = 8_usize;
    let rounds = 4_usize;
    let per = 5_usize;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (a, ctx) = (a.clone(), ctx.clone());
        tasks.push(tokio::spawn(async move {
            let mut cvs = Vec::new();
            for r in 0..rounds {
                // Writer w owns objects w-0 … w-(per-1): round 0 creates them, later rounds update.
                let batch: Vec<Commit> = (0..per)
                    .map(|i| {
                        let k = key(&ctx, &format!("w{w}-{i}"));
                        let expected = (r > 0).then(|| Ov::new(r as u64).unwrap());
                        commit(&k, expected, Op::Update, ts(1 + r as i64), &format!("w{w}-{i}-{r}"), &json!({"r": r}))
                    })
                    .collect();
                for answer in a.meta.commit_many(batch).await.expect("batch") {
                    cvs.push(answer.expect("item").cv.0);
                }
            }
            cvs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = writers * rounds * per;
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), total);
    assert_eq!(unique, (1..=total as u64).collect::<BTreeSet<u64>>(), "CVs are 1..=total, each once");
    assert_eq!(a.meta.collection_cv(&ctx).await.unwrap(), Cv(total as u64));
    for w in 0..writers {
        let h = a.meta.head(&key(&ctx, &format!("w{w}-0"))).await.unwrap().unwrap();
        assert_eq!(h.ov, ov(rounds as u64));
    }
}

/// A commit that waits for its snapshots: it commits once `durable` resolves `Ok`, and
/// commits nothing — answering `durable`'s error — when it fails (however far its statements
/// got meanwhile).
pub async fn group_commit_waits_for_durable_snapshots(a: MetaAdapters) {
    let ctx = unique_ctx("group-durable");
    let keys: Vec<_> = (0..3).map(|i| key(&ctx, &format!("d{i}"))).collect();
    let batch = |tag: &str| -> Vec<Commit> {
        keys.iter()
            .map(|k| commit(k, None, Op::Create, ts(1), &format!("{tag}-{}", k.id), &json!({"tag": tag})))
            .collect()
    };
    let failed: udm_core::ports::Durable = Box::pin(async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Err(udm_core::Error::unavailable("snapshot put failed"))
    });
    let before = meta_state(&a, &ctx, &keys).await;
    let e = a.meta.commit_many_after(batch("lost"), failed).await.unwrap_err();
    assert_eq!((e.kind(), e.message().contains("snapshot put failed")), (ErrorKind::Unavailable, true), "{e}");
    let lone: udm_core::ports::Durable = Box::pin(async { Err(udm_core::Error::unavailable("no")) });
    assert!(a.meta.commit_many_after(batch("lone")[..1].to_vec(), lone).await.is_err());
    assert_eq!(meta_state(&a, &ctx, &keys).await, before, "nothing committed");
    assert!(a.meta.find_request(&ctx, &crate::fixtures::rid("lost-d0")).await.unwrap().is_none());

    let ok: udm_core::ports::Durable = Box::pin(async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok(())
    });
    let answers = a.meta.commit_many_after(batch("kept"), ok).await.unwrap();
    assert_eq!(answers.iter().map(|r| r.as_ref().unwrap().cv.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(a.meta.head(&keys[2]).await.unwrap().unwrap().inline, Some(json!({"tag": "kept"})));
}
