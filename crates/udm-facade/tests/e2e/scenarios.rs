//! End-to-end scenarios of every facade capability; each runs on every setup.

use serde_json::{Value, json};
use udm_core::query::{HistoryQuery, Order};
use udm_core::{Cv, ErrorKind, Op, Ov, RouteContext, Timestamp};
use udm_facade::{
    Collection, CollectionTarget, Confirm, ContentMode, EnrichOpts, ListQuery, ReadOpts, RestoreOutcome, Target,
    WriteOpts,
};

pub(crate) use crate::concurrency::{
    batch_writes_answer_per_item, hot_object_writers, many_creators_of_one_collection,
};
use crate::setup::Env;
pub(crate) use crate::shadow_tools::shadow_tools;

fn users(env: &Env) -> Collection {
    let tenant = udm_testkit::fixtures::unique_ctx("x").tenant;
    env.udm.with(RouteContext::new(tenant.as_str(), "crm", "users").unwrap())
}

fn ov(n: u64) -> Ov {
    Ov::new(n).unwrap()
}

/// Everything observable about some objects, for "nothing changed" checks.
async fn state(c: &Collection, ids: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        let latest = c.get_latest(id, ReadOpts { include_deleted: true, ..ReadOpts::default() }).await;
        let hist = c.history(id, HistoryQuery { limit: 1000, ..HistoryQuery::default() }).await;
        out.push(json!({
            "latest": latest.map(|r| r.document()).map_err(|e| e.kind().as_str()).ok(),
            "history": hist.map(|p| p.items.iter().map(|v| v.ov.get()).collect::<Vec<_>>()).ok(),
        }));
    }
    out
}

pub(crate) async fn crud_and_versions(env: Env) {
    let c = users(&env);
    let w1 = c
        .create(json!({"email": "ada@x", "tier": "gold"}), WriteOpts::id("u1").actor("alice").reason("signup"))
        .await
        .unwrap();
    assert_eq!((w1.ov, w1.replayed, w1.id.as_str()), (ov(1), false, "u1"));
    let generated = c.create(json!({"email": "gen@x"}), WriteOpts::default()).await.unwrap();
    assert_eq!(generated.id.as_str().len(), 26, "generated ULID id");
    env.clock.advance(10);
    let w2 = c.update("u1", json!({"email": "ada@y", "tier": "vip"}), Some(w1.ov), WriteOpts::default()).await.unwrap();
    assert_eq!(w2.ov, ov(2));
    assert!(w2.at > w1.at);
    let latest = c.get_latest("u1", ReadOpts::default()).await.unwrap();
    assert_eq!(latest.data, json!({"email": "ada@y", "tier": "vip"}));
    assert_eq!(latest.system["ov"], 2);
    assert_eq!(latest.system["op"], "UPDATE");
    assert_eq!(latest.document()["_system"]["insertedAt"], w1.at.to_string());
    let v1 = c.get_version("u1", ov(1), ReadOpts::default()).await.unwrap();
    assert_eq!(
        (v1.data["email"].as_str(), v1.system["actor"].as_str(), v1.system["reason"].as_str()),
        (Some("ada@x"), Some("alice"), Some("signup"))
    );
    env.clock.advance(10);
    let d = c.delete("u1", None, WriteOpts::default()).await.unwrap();
    assert_eq!(d.ov, ov(3));
    assert_eq!(c.get_latest("u1", ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::NotFound);
    let del = c.get_latest("u1", ReadOpts { include_deleted: true, ..ReadOpts::default() }).await.unwrap();
    assert!(del.deleted && del.op == Op::Delete && del.data["email"] == "ada@y", "data kept");
    assert!(c.get_version("u1", ov(3), ReadOpts::default()).await.unwrap().deleted);
    for e in [
        c.update("u1", json!({}), None, WriteOpts::default()).await.unwrap_err(),
        c.enrich("u1", json!({"x": 1}), EnrichOpts::default()).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Conflict, "writes to a deleted object: {e}");
    }
    let page1 = c.history("u1", HistoryQuery { limit: 2, ..HistoryQuery::default() }).await.unwrap();
    assert_eq!(page1.items.iter().map(|v| v.op).collect::<Vec<_>>(), [Op::Create, Op::Update]);
    let after = udm_core::query::parse_history_cursor(page1.next.as_deref().unwrap()).unwrap();
    let page2 = c.history("u1", HistoryQuery { after: Some(after), limit: 2, order: Order::Asc }).await.unwrap();
    assert_eq!(page2.items.iter().map(|v| v.ov.get()).collect::<Vec<_>>(), [3]);
    assert!(page2.next.is_none());
    assert_eq!(c.get_version("nope", ov(1), ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(c.get_version("u1", ov(9), ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::NotFound);
}

pub(crate) async fn optimistic_locking_and_idempotency(env: Env) {
    let c = users(&env);
    c.create(json!({"n": 1}), WriteOpts::id("x").request_id("req-1")).await.unwrap();
    let replay = c.create(json!({"n": 1}), WriteOpts::id("x").request_id("req-1")).await.unwrap();
    assert!(replay.replayed && replay.ov == ov(1));
    let e = c.create(json!({"n": 2}), WriteOpts::id("x").request_id("req-1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "same request id, other payload");
    let e = c.create(json!({"n": 2}), WriteOpts::id("x")).await.unwrap_err();
    assert_eq!((e.kind(), e.current_ov()), (ErrorKind::VersionConflict, Some(ov(1))), "create of an existing id");
    c.update("x", json!({"n": 2}), Some(ov(1)), WriteOpts::default()).await.unwrap();
    let before = state(&c, &["x"]).await;
    let e = c.update("x", json!({"n": 3}), Some(ov(1)), WriteOpts::default()).await.unwrap_err();
    assert_eq!((e.kind(), e.current_ov()), (ErrorKind::VersionConflict, Some(ov(2))));
    assert_eq!(state(&c, &["x"]).await, before, "a lost lock changes nothing");
    // Without an expected OV, concurrent updates all land (none lost).
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.enrich("x", json!({"tags": [i]}), EnrichOpts::default()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let latest = c.get_latest("x", ReadOpts::default()).await.unwrap();
    assert_eq!(latest.ov, ov(8));
    let mut tags: Vec<i64> = latest.data["tags"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    tags.sort();
    assert_eq!(tags, [0, 1, 2, 3, 4, 5], "no enrichment lost");
}

pub(crate) async fn time_travel(env: Env) {
    let c = users(&env);
    let t0 = env.clock.now_ts();
    c.create(json!({"v": 1}), WriteOpts::id("t")).await.unwrap();
    env.clock.advance(1000);
    let w2 = c.update("t", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    env.clock.advance(-5000); // the clock jumps back: timestamps stay monotonic per object
    let w3 = c.update("t", json!({"v": 3}), None, WriteOpts::default()).await.unwrap();
    assert_eq!(w3.at, w2.at, "a clock reading earlier than the previous version takes its timestamp");
    let at = |t: Timestamp| {
        let c = c.clone();
        async move { c.as_of("t", t, ReadOpts::default()).await }
    };
    assert_eq!(at(t0.plus_millis(-1)).await.unwrap_err().kind(), ErrorKind::NotFound, "before the first version");
    assert_eq!(at(t0).await.unwrap().data["v"], 1, "inclusive");
    assert_eq!(at(t0.plus_millis(999)).await.unwrap().data["v"], 1);
    assert_eq!(at(w2.at).await.unwrap().data["v"], 3, "ties go to the highest OV");
    let cv2 = c.get_version("t", ov(2), ReadOpts::default()).await.unwrap().cv;
    assert_eq!(c.as_of_cv("t", cv2, ReadOpts::default()).await.unwrap().data["v"], 2);
    assert_eq!(c.as_of_cv("t", Cv(0), ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::NotFound);
}

pub(crate) async fn restore_objects(env: Env) {
    let c = users(&env);
    c.create(json!({"v": 1}), WriteOpts::id("r")).await.unwrap();
    env.clock.advance(10);
    let t1 = env.clock.now_ts();
    c.update("r", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    env.clock.advance(10);
    c.update("r", json!({"v": 3}), None, WriteOpts::default()).await.unwrap();
    let RestoreOutcome::Restored(w) = c.restore_object("r", Target::Ov(ov(1)), WriteOpts::default()).await.unwrap()
    else {
        panic!("expected a restore")
    };
    assert_eq!(w.ov, ov(4));
    let latest = c.get_latest("r", ReadOpts::default()).await.unwrap();
    assert_eq!((latest.data["v"].as_i64(), latest.op), (Some(1), Op::Restore));
    let hist = c.history("r", HistoryQuery::default()).await.unwrap();
    assert_eq!(hist.items[3].restored_from, Some(ov(1)));
    assert_eq!(
        c.restore_object("r", Target::Ov(ov(4)), WriteOpts::default()).await.unwrap(),
        RestoreOutcome::Unchanged { ov: ov(4) }
    );
    c.restore_object("r", Target::At(t1), WriteOpts::default()).await.unwrap();
    assert_eq!(c.get_latest("r", ReadOpts::default()).await.unwrap().data["v"], 2);
    // A deleted object comes back.
    c.delete("r", None, WriteOpts::default()).await.unwrap();
    c.restore_object("r", Target::Ov(ov(3)), WriteOpts::default()).await.unwrap();
    let back = c.get_latest("r", ReadOpts::default()).await.unwrap();
    assert!(!back.deleted && back.data["v"] == 3);
    assert_eq!(
        c.restore_object("r", Target::Ov(ov(99)), WriteOpts::default()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

pub(crate) async fn restore_collection_resumes(env: Env) {
    let c = users(&env);
    for i in 0..12 {
        c.create(json!({"i": i, "phase": "old"}), WriteOpts::id(&format!("o{i:02}"))).await.unwrap();
    }
    env.clock.advance(100);
    let target = env.clock.now_ts();
    env.clock.advance(100);
    for i in 0..12 {
        if i % 3 == 0 {
            c.delete(&format!("o{i:02}"), None, WriteOpts::default()).await.unwrap();
        } else if i % 3 == 1 {
            c.update(&format!("o{i:02}"), json!({"i": i, "phase": "new"}), None, WriteOpts::default()).await.unwrap();
        }
    }
    c.create(json!({"late": true}), WriteOpts::id("late")).await.unwrap();
    // Interrupt the first run part-way (the progress callback panics).
    let c2 = c.clone();
    let crashed = tokio::spawn(async move {
        c2.restore_collection(CollectionTarget::At(target), WriteOpts::default(), |p| {
            assert!(p.processed < 12, "simulated crash")
        })
        .await
    })
    .await;
    assert!(crashed.is_err(), "first run was interrupted");
    let mut seen = Vec::new();
    let report =
        c.restore_collection(CollectionTarget::At(target), WriteOpts::default(), |p| seen.push(*p)).await.unwrap();
    assert_eq!(report.progress.processed, 13, "totals include work done before the interruption");
    assert_eq!(seen.last().map(|p| p.processed), Some(13), "progress reported per object");
    // A run resumes from its last checkpoint (one per page per pair): objects checkpointed
    // before the crash are not processed again; everything else is.
    assert!(!seen.is_empty() && seen.len() <= 13);
    assert_eq!(report.resumed, seen.len() < 13, "resumed exactly when a checkpoint was found");
    for i in 0..12 {
        let r = c.get_latest(&format!("o{i:02}"), ReadOpts::default()).await.unwrap();
        assert_eq!(r.data, json!({"i": i, "phase": "old"}), "o{i:02}");
        let restores = c
            .history(&format!("o{i:02}"), HistoryQuery::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|v| v.op == Op::Restore)
            .count();
        assert_eq!(
            restores,
            usize::from(i % 3 != 2),
            "o{i:02}: exactly one RESTORE version, none duplicated by the rerun"
        );
    }
    assert!(
        c.get_latest("late", ReadOpts::default()).await.unwrap_err().kind() == ErrorKind::NotFound,
        "objects that did not exist are deleted"
    );
    // Running it again is a fresh job where everything already matches.
    let again = c.restore_collection(CollectionTarget::At(target), WriteOpts::default(), |_| {}).await.unwrap();
    assert_eq!((again.progress.unchanged, again.progress.restored, again.resumed), (13, 0, false));
    // By CV: only when the collection lives on one pair.
    let by_cv = c.restore_collection(CollectionTarget::Cv(Cv(12)), WriteOpts::default(), |_| {}).await;
    if env.pairs == 1 {
        assert_eq!(by_cv.unwrap().progress.processed, 13);
    } else {
        assert_eq!(by_cv.unwrap_err().kind(), ErrorKind::Unsupported);
    }
}

pub(crate) async fn enrichment(env: Env) {
    let c = users(&env);
    c.create(json!({"name": "Ada", "tags": ["a"], "geo": {"city": "Oslo"}}), WriteOpts::id("e")).await.unwrap();
    let opts = EnrichOpts { function_id: Some("geo-v1".into()), ..EnrichOpts::default() };
    c.enrich("e", json!({"tags": ["b", "a"], "geo": {"lat": 59.9}, "name": null}), opts.clone()).await.unwrap();
    c.enrich("e", json!({"tags": ["c"]}), opts.clone()).await.unwrap();
    let r = c.get_latest("e", ReadOpts::default()).await.unwrap();
    assert_eq!(r.data, json!({"name": null, "tags": ["a", "b", "c"], "geo": {"city": "Oslo", "lat": 59.9}}));
    assert_eq!(r.system["functionIds"], json!(["geo-v1"]));
    let e = c.enrich("e", json!({"x": 1}), EnrichOpts { expected: Some(ov(1)), ..opts.clone() }).await.unwrap_err();
    assert_eq!((e.kind(), e.current_ov()), (ErrorKind::VersionConflict, Some(ov(3))));
    assert_eq!(c.enrich("e", json!({"_system": {}}), opts.clone()).await.unwrap_err().kind(), ErrorKind::Validation);
    c.create(json!({}), WriteOpts::id("e2")).await.unwrap();
    let many = c
        .enrich_many(
            vec![("e".into(), json!({"m": 1})), ("e2".into(), json!({"m": 2})), ("ghost".into(), json!({}))],
            opts,
        )
        .await;
    assert!(many[0].is_ok() && many[1].is_ok());
    assert_eq!(many[2].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(c.get_latest("e2", ReadOpts::default()).await.unwrap().data, json!({"m": 2}));
}

pub(crate) async fn externalized_content(env: Env) {
    let c = users(&env);
    let doc = json!({"email": "a@x", "avatar": {"data": "aGVsbG8gd29ybGQ=", "name": "a.png"}});
    c.create(doc.clone(), WriteOpts::id("img")).await.unwrap();
    let stored = c.get_latest("img", ReadOpts::default()).await.unwrap();
    let r = &stored.data["avatar"]["data"]["$udmContent"];
    assert_eq!((r["size"].as_u64(), r["contentType"].as_str()), (Some(11), Some("image/png")));
    let inline = c.get_latest("img", ReadOpts { content: ContentMode::Inline, ..ReadOpts::default() }).await.unwrap();
    assert_eq!(inline.data, doc, "rehydrated exactly");
    let presigned = c.get_latest("img", ReadOpts { content: ContentMode::Presigned(60), ..ReadOpts::default() }).await;
    if env.presign {
        let url = presigned.unwrap().data["avatar"]["data"]["$udmContent"]["url"].as_str().unwrap().to_owned();
        assert!(url.starts_with("http"), "{url}");
    } else {
        assert_eq!(presigned.unwrap_err().kind(), ErrorKind::Unsupported);
    }
    // Enrich keeps the reference; a new base64 value is externalized again.
    c.enrich("img", json!({"avatar": {"name": "b.png"}}), EnrichOpts::default()).await.unwrap();
    let after = c.get_latest("img", ReadOpts { content: ContentMode::Inline, ..ReadOpts::default() }).await.unwrap();
    assert_eq!(after.data["avatar"]["data"], "aGVsbG8gd29ybGQ=");
    let before = state(&c, &["img", "bad"]).await;
    let e = c.create(json!({"avatar": {"data": "not base64!"}}), WriteOpts::id("bad")).await.unwrap_err();
    assert_eq!((e.kind(), e.problems()[0].path.as_str()), (ErrorKind::Validation, "avatar.data"));
    assert_eq!(state(&c, &["img", "bad"]).await, before);
}

pub(crate) async fn counters(env: Env) {
    let c = users(&env);
    c.create(json!({"tier": "vip"}), WriteOpts::id("a").actor("bot")).await.unwrap();
    c.create(json!({"tier": "std"}), WriteOpts::id("b")).await.unwrap();
    c.update("b", json!({"tier": "vip"}), None, WriteOpts::default()).await.unwrap();
    c.delete("a", None, WriteOpts::default()).await.unwrap();
    c.restore_object("a", Target::Ov(ov(1)), WriteOpts::default()).await.unwrap();
    let totals = env.udm.counters().totals(c.context()).await.unwrap();
    let want: std::collections::BTreeMap<String, i64> = [
        ("created", 2),
        ("updated", 1),
        ("deleted", 1),
        ("restored", 1),
        ("live", 2),
        ("rule.vips", 2),
        ("rule.by_bot", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(totals, want);
    env.udm.counters().reset(c.context(), Some(&["rule.vips".to_owned()])).await.unwrap();
    assert!(!env.udm.counters().totals(c.context()).await.unwrap().contains_key("rule.vips"));
    env.udm.counters().reset(c.context(), None).await.unwrap();
    assert!(env.udm.counters().totals(c.context()).await.unwrap().is_empty());
}

pub(crate) async fn dev_shadows(env: Env) {
    let c = users(&env);
    c.create(json!({"small": true}), WriteOpts::id("s1")).await.unwrap();
    c.create(json!({"big": "x".repeat(4000)}), WriteOpts::id("s2")).await.unwrap();
    let admin = env.udm.admin();
    let dry = admin.shrink(Some(c.context()), true).await.unwrap();
    assert_eq!((dry.scanned, dry.removed), (1, 0), "only the small document got a shadow (cap 2048 bytes)");
    env.clock.advance(61_000);
    let dry = admin.shrink(Some(c.context()), true).await.unwrap();
    assert_eq!((dry.scanned, dry.removed), (1, 1));
    assert!(dry.bytes_freed > 0);
    let real = admin.shrink(Some(c.context()), false).await.unwrap();
    assert_eq!(real, dry);
    assert_eq!(admin.shrink(Some(c.context()), false).await.unwrap().scanned, 0, "nothing left");
    assert_eq!(c.get_latest("s1", ReadOpts::default()).await.unwrap().data, json!({"small": true}), "data untouched");
}

pub(crate) async fn listing(env: Env) {
    let c = users(&env);
    for i in 0..30 {
        let tier = ["gold", "vip", "std"][i % 3];
        c.create(
            json!({"email": format!("u{i}@x"), "tier": tier, "score": i, "address": {"city": "Oslo"}}),
            WriteOpts::id(&format!("u{i:02}")),
        )
        .await
        .unwrap();
    }
    c.delete("u03", None, WriteOpts::default()).await.unwrap();
    let mut all = Vec::new();
    let mut q = ListQuery { limit: 7, ..ListQuery::default() };
    loop {
        let page = c.list(q.clone(), ReadOpts::default()).await.unwrap();
        all.extend(page.items.iter().map(|r| r.id.to_string()));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    assert_eq!(all.len(), 29, "deleted hidden");
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    let q = ListQuery {
        filter: Some(json!({"tier": "vip", "score": {"$gte": 10}})),
        sort_by: Some("score".into()),
        order: Order::Desc,
        limit: 3,
        ..ListQuery::default()
    };
    let page = c.list(q, ReadOpts::default()).await.unwrap();
    assert_eq!(page.items.iter().map(|r| r.data["score"].as_i64().unwrap()).collect::<Vec<_>>(), [28, 25, 22]);
    assert_eq!(page.items[0].data["email"], "u28@x", "list returns data");
    let q = ListQuery {
        filter: Some(json!({"address.city": "Oslo"})),
        include_deleted: true,
        limit: 100,
        ..ListQuery::default()
    };
    assert_eq!(c.list(q, ReadOpts::default()).await.unwrap().items.len(), 30);
    let bad = ListQuery { filter: Some(json!({"tier": {"$regex": "v"}})), ..ListQuery::default() };
    assert_eq!(c.list(bad, ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::Validation);
    if env.pairs > 1 {
        let cvs = c.current_cvs().await.unwrap();
        assert!(cvs.iter().all(|(_, cv)| cv.0 > 0), "objects spread over every pair: {cvs:?}");
    }
}

pub(crate) async fn routing_mismatch(env: Env) {
    if env.pairs < 2 {
        return; // one pair: every object is where it routes
    }
    let c = users(&env);
    // Write objects through single-pair handles until one lands on a pair it does not route to.
    // Write each id through a single-pair handle, so about half land on a pair they do not
    // route to in the two-pair deployment.
    for i in 0..20 {
        for (pair, single) in env.singles.iter().enumerate() {
            let sc = single.with(c.context().clone());
            sc.create(json!({"i": i}), WriteOpts::id(&format!("m{i}-{pair}"))).await.unwrap();
        }
    }
    let mut mismatches = 0;
    for i in 0..20 {
        for pair in 0..2 {
            let id = format!("m{i}-{pair}");
            match c.get_latest(&id, ReadOpts::default()).await {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::RouteMismatch, "{id}: {e}");
                    mismatches += 1;
                }
            }
        }
    }
    assert!(mismatches > 0 && mismatches < 40, "about half are on the wrong pair: {mismatches}");
}

pub(crate) async fn admin(env: Env) {
    let c = users(&env);
    c.create(json!({}), WriteOpts::id("a")).await.unwrap();
    c.get_latest("a", ReadOpts::default()).await.unwrap();
    let health = env.udm.admin().health().await;
    assert!(health.is_healthy(), "{health:?}");
    assert_eq!(health.pairs.len(), env.pairs);
    let backends = env.udm.admin().backends();
    assert_eq!(backends.len(), env.pairs);
    let shown = format!("{backends:?} {:?}", env.udm);
    assert!(!shown.contains("testsecret"), "{shown}");
    let stats = env.udm.admin().stats();
    assert!(stats.writes >= 1 && stats.reads >= 1);
    let report = env.udm.admin().shutdown().await.unwrap();
    assert_eq!(report.queue, udm_core::ports::QueueStats::default(), "no queue configured");
    let e = c.create(json!({}), WriteOpts::id("b")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(!e.is_retryable(), "{e}");
    env.udm.admin().shutdown().await.expect("shutdown is idempotent");
}

pub(crate) async fn hard_delete(env: Env) {
    let c = users(&env);
    c.create(json!({"avatar": {"data": "aGk="}}), WriteOpts::id("h")).await.unwrap();
    c.update("h", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    let before = state(&c, &["h"]).await;
    assert_eq!(c.hard_delete("h", Confirm::No).await.unwrap_err().kind(), ErrorKind::NotConfirmed);
    assert_eq!(state(&c, &["h"]).await, before, "unconfirmed: nothing removed");
    let report = c.hard_delete("h", Confirm::Yes).await.unwrap();
    assert!(report.existed);
    assert_eq!((report.versions, report.snapshots, report.content), (2, 2, 1));
    for e in [
        c.get_latest("h", ReadOpts { include_deleted: true, ..ReadOpts::default() }).await.unwrap_err(),
        c.get_version("h", ov(1), ReadOpts::default()).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
    assert!(!c.hard_delete("h", Confirm::Yes).await.unwrap().existed);
    // The id is free again.
    assert_eq!(c.create(json!({"again": true}), WriteOpts::id("h")).await.unwrap().ov, ov(1));
}

pub(crate) async fn bad_input_changes_nothing(env: Env) {
    let c = users(&env);
    c.create(json!({"ok": true}), WriteOpts::id("k")).await.unwrap();
    let before = state(&c, &["k"]).await;
    let deep = (0..30).fold(json!(1), |acc, _| json!({"d": acc}));
    let cases = [
        ("array document", c.update("k", json!([1]), None, WriteOpts::default()).await),
        ("string document", c.update("k", json!("s"), None, WriteOpts::default()).await),
        ("_system", c.update("k", json!({"_system": {"ov": 9}}), None, WriteOpts::default()).await),
        ("oversized", c.update("k", json!({"big": "x".repeat(70_000)}), None, WriteOpts::default()).await),
        ("too deep", c.update("k", deep, None, WriteOpts::default()).await),
        ("slash id", c.create(json!({}), WriteOpts::id("a/b")).await),
        ("dotdot id", c.create(json!({}), WriteOpts::id("..")).await),
        ("dollar id", c.create(json!({}), WriteOpts::id("$where")).await),
        ("long id", c.create(json!({}), WriteOpts::id(&"x".repeat(65))).await),
        ("bad request id", c.update("k", json!({}), None, WriteOpts::default().request_id("a b")).await),
        (
            "bad function id",
            c.enrich("k", json!({}), EnrichOpts { function_id: Some("f/1".into()), ..EnrichOpts::default() }).await,
        ),
    ];
    for (what, r) in cases {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Validation, "{what}");
    }
    let e = c.update("k", json!({"ok": 2}), Some(ov(7)), WriteOpts::default()).await.unwrap_err();
    assert_eq!((e.kind(), e.current_ov()), (ErrorKind::VersionConflict, Some(ov(1))));
    assert_eq!(state(&c, &["k"]).await, before, "nothing changed");
    assert_eq!(
        c.list(ListQuery { limit: 0, ..ListQuery::default() }, ReadOpts::default()).await.unwrap_err().kind(),
        ErrorKind::Validation
    );
    assert_eq!(env.udm.counters().totals(c.context()).await.unwrap().get("created"), Some(&1));
}

/// A `ManualClock` reading as a timestamp.
trait Now {
    fn now_ts(&self) -> Timestamp;
}

impl Now for udm_testkit::clock::ManualClock {
    fn now_ts(&self) -> Timestamp {
        udm_core::ports::Clock::now(self)
    }
}
