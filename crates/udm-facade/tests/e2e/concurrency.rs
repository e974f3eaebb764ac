//! Hot objects: many writers without an expected OV on one object, on every setup.

use std::collections::BTreeMap;

use serde_json::json;
use udm_core::RouteContext;
use udm_core::query::HistoryQuery;
use udm_facade::{EnrichOpts, ReadOpts, WriteOpts};

use crate::setup::Env;

const WRITERS: usize = 8;
const RUNS: usize = 20;

/// 8 writers × 20 writes each (enrichments without an expected OV, each with its own
/// request id) on one object: every write succeeds, each lands exactly once (its request id
/// appears once in the history), nothing is lost (every enrichment's tag is in the result).
pub(crate) async fn hot_object_writers(env: Env) {
    let tenant = udm_testkit::fixtures::unique_ctx("hot").tenant;
    let c = env.udm.with(RouteContext::new(tenant.as_str(), "crm", "users").unwrap());
    c.create(json!({"tags": []}), WriteOpts::id("hot")).await.unwrap();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for run in 0..RUNS {
                    let request = format!("w{w}-r{run}");
                    let opts = EnrichOpts { write: WriteOpts::default().request_id(&request), ..EnrichOpts::default() };
                    // Even runs add a tag (a set union: none may be lost); odd runs overwrite
                    // the writer's own field.
                    let patch =
                        if run % 2 == 0 { json!({"tags": [request]}) } else { json!({"last": {format!("w{w}"): run}}) };
                    let result = c.enrich("hot", patch, opts).await;
                    if let Err(e) = result {
                        failures.push(format!("{request}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(failures.is_empty(), "{} failed writes: {failures:?}", failures.len());
    let latest = c.get_latest("hot", ReadOpts::default()).await.unwrap();
    assert_eq!(latest.ov.get(), 1 + (WRITERS * RUNS) as u64, "every write is one version");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut after = None;
    loop {
        let q = HistoryQuery { limit: 100, after, ..HistoryQuery::default() };
        let page = c.history("hot", q).await.unwrap();
        for v in &page.items {
            *seen.entry(v.provenance.request_id.to_string()).or_default() += 1;
        }
        match (page.next, page.items.last()) {
            (Some(_), Some(last)) => after = Some(last.ov),
            _ => break,
        }
    }
    for w in 0..WRITERS {
        for run in 0..RUNS {
            let r = format!("w{w}-r{run}");
            assert_eq!(seen.get(&r), Some(&1), "request {r} must be committed exactly once");
        }
    }
    let tags = latest.data["tags"].as_array().unwrap();
    assert_eq!(tags.len(), WRITERS * RUNS / 2, "no enrichment lost: {tags:?}");
    assert_eq!(env.udm.admin().stats().conflicts, 0, "one process's writers of an object take turns, never race");
    // Lost races deleted their snapshots: exactly one per version is stored.
    let key = udm_core::ObjectKey::new(c.context().clone(), udm_core::ObjectId::new("hot").unwrap());
    let prefix = format!("{}versions/", udm_core::layout::Layout::default().object_prefix(&key));
    let mut stored = 0;
    for blobs in &env.snapshots {
        let mut after: Option<String> = None;
        loop {
            let page = blobs.list(&prefix, after.as_deref(), 1000).await.unwrap();
            stored += page.keys.len();
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    assert_eq!(stored as u64, latest.ov.get(), "one snapshot per version, no orphans from lost races");
}

const CREATORS: usize = 64;
const CREATES_EACH: usize = 8;

/// 64 tasks create 8 objects each in one collection at once (the load that used to fail 286
/// of 1,000 writes with write conflicts): every create succeeds exactly once, the
/// collection's CVs count every version once, and the group committer shared transactions
/// between writers (fewer transactions than writes).
pub(crate) async fn many_creators_of_one_collection(env: Env) {
    let tenant = udm_testkit::fixtures::unique_ctx("creators").tenant;
    let c = env.udm.with(RouteContext::new(tenant.as_str(), "crm", "users").unwrap());
    let before = env.udm.admin().stats();
    let tasks: Vec<_> = (0..CREATORS)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..CREATES_EACH {
                    let id = format!("w{w}-{i}");
                    if let Err(e) = c.create(json!({"w": w, "i": i}), WriteOpts::id(&id)).await {
                        failures.push(format!("{id}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(failures.is_empty(), "{} failed creates: {failures:?}", failures.len());
    let total = (CREATORS * CREATES_EACH) as u64;
    let cvs: u64 = c.current_cvs().await.unwrap().iter().map(|(_, cv)| cv.0).sum();
    assert_eq!(cvs, total, "one CV per create, over all pairs");
    let after = env.udm.admin().stats();
    let (batches, carried) =
        (after.commit_batches - before.commit_batches, after.batched_commits - before.batched_commits);
    assert_eq!(carried, total, "every commit went through the group committer once");
    assert!(batches < total, "concurrent commits shared transactions: {batches} for {total}");
    for w in [0, CREATORS - 1] {
        let r = c.get_latest(&format!("w{w}-3"), ReadOpts::default()).await.unwrap();
        assert_eq!(r.data, json!({"w": w, "i": 3}));
    }
}

/// The batch API answers per item, in order: good items commit, bad ones get their own typed
/// error and write nothing; a replayed batch answers every item as a replay.
pub(crate) async fn batch_writes_answer_per_item(env: Env) {
    use udm_core::ErrorKind;
    use udm_facade::WriteItem;
    let tenant = udm_testkit::fixtures::unique_ctx("batch").tenant;
    let c = env.udm.with(RouteContext::new(tenant.as_str(), "crm", "users").unwrap());
    let mut items: Vec<(serde_json::Value, WriteOpts)> = (0..200)
        .map(|i| (json!({"n": i}), WriteOpts::id(&format!("b{i:03}")).request_id(&format!("req-{i}"))))
        .collect();
    items[5].0 = json!("not an object");
    items[7].1 = WriteOpts::id("b006").request_id("req-dup"); // the id of item 6: one of them conflicts
    let first = c.create_many(items.clone()).await;
    assert_eq!(first.len(), 200);
    assert_eq!(first[5].as_ref().unwrap_err().kind(), ErrorKind::Validation);
    let b006 = [&first[6], &first[7]];
    assert_eq!(b006.iter().filter(|r| r.is_ok()).count(), 1, "one create of b006 wins");
    assert_eq!(b006.iter().filter(|r| r.as_ref().is_err_and(|e| e.kind() == ErrorKind::VersionConflict)).count(), 1);
    let committed = first.iter().filter(|r| r.is_ok()).count();
    assert_eq!(committed, 198);
    assert!(c.get_latest("b005", ReadOpts::default()).await.is_err(), "the invalid item wrote nothing");
    let again = c.create_many(items).await;
    for (i, (a, b)) in first.iter().zip(&again).enumerate() {
        if let (Ok(a), Ok(b)) = (a, b) {
            assert!(b.replayed && a.ov == b.ov, "item {i} replays");
        }
    }
    // Mixed writes: updates with and without locks, and a delete.
    let mixed = vec![
        WriteItem::Update {
            id: "b000".into(),
            data: json!({"n": "x"}),
            expected: Some(udm_core::Ov::FIRST),
            opts: WriteOpts::default(),
        },
        WriteItem::Update {
            id: "b001".into(),
            data: json!({"n": "y"}),
            expected: Some(udm_core::Ov::new(9).unwrap()),
            opts: WriteOpts::default(),
        },
        WriteItem::Delete { id: "b002".into(), expected: None, opts: WriteOpts::default() },
        WriteItem::Update { id: "nope".into(), data: json!({}), expected: None, opts: WriteOpts::default() },
    ];
    let out = c.write_many(mixed).await;
    assert_eq!(out[0].as_ref().unwrap().ov.get(), 2);
    assert_eq!(out[1].as_ref().unwrap_err().kind(), ErrorKind::VersionConflict);
    assert_eq!(out[2].as_ref().unwrap().ov.get(), 2);
    assert_eq!(out[3].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
}
