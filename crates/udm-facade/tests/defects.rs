//! Regression tests for defects found by outside checks (issue 7). Each fails on the code
//! before its fix. In-memory pairs (the reference adapters), some wrapped in the seeded fault
//! layer or in a small counting decorator; the same behaviour on the real servers is covered
//! by the e2e scenarios.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use udm_core::config::Config;
use udm_core::ports::{BlobStore, Layer, Layered, LayeredMeta, MetaStore};
use udm_core::{ErrorKind, Head, ObjectId, ObjectKey, Ov, Result, RouteContext};
use udm_facade::{Collection, Confirm, EnrichOpts, ListQuery, ReadOpts, RestoreOutcome, Target, Udm, WriteOpts};
use udm_router::Router;
use udm_testkit::faults::{FaultLayer, FaultRule, Port};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

/// A pair's stores, kept for inspection.
#[derive(Clone)]
struct Stores {
    json: Arc<MemoryBlobs>,
    content: Arc<MemoryBlobs>,
}

fn pair(name: &str, faults: &FaultLayer, meta: Arc<dyn MetaStore>) -> (udm_facade::Pair, Stores) {
    let json = Arc::new(MemoryBlobs::new());
    let content = Arc::new(MemoryBlobs::new());
    let meta: Arc<dyn MetaStore> = Arc::new(faults.layer(meta));
    let counters = Arc::new(MemoryMeta::new());
    let p = udm_facade::Pair {
        name: name.into(),
        meta,
        counters,
        json: Arc::new(faults.layer(json.clone())),
        content: Arc::new(faults.layer(content.clone())),
        describe: "memory".into(),
    };
    (p, Stores { json, content })
}

const CONFIG: &str = r#"
[[backends]]
name = "placeholder"
meta = { kind = "memory" }
blobs = { kind = "memory" }

[[collections]]
db = "d"
collection = "c"
base64_props = [{ path = "file.data", content_type = "application/octet-stream" }]

[hard_delete]
enabled = true
"#;

struct Rig {
    udm: Udm,
    faults: FaultLayer,
    stores: Vec<Stores>,
    /// The pairs `udm` was built from, for a second `Udm` over the same stores.
    pairs: Vec<udm_facade::Pair>,
}

fn rig_with(names: &[&str], metas: Vec<Arc<dyn MetaStore>>, tweak: impl FnOnce(&mut Config)) -> Rig {
    let faults = FaultLayer::seeded(11);
    let mut cfg = Config::from_toml(CONFIG).unwrap();
    tweak(&mut cfg);
    let mut b = Udm::builder().config(cfg);
    let (mut stores, mut pairs) = (Vec::new(), Vec::new());
    for (n, m) in names.iter().zip(metas) {
        let (p, s) = pair(n, &faults, m);
        b = b.pair(p.clone());
        stores.push(s);
        pairs.push(p);
    }
    Rig { udm: b.build().unwrap(), faults, stores, pairs }
}

fn rig(names: &[&str]) -> Rig {
    let metas = names.iter().map(|_| Arc::new(MemoryMeta::new()) as Arc<dyn MetaStore>).collect();
    rig_with(names, metas, |_| {})
}

fn ctx() -> RouteContext {
    RouteContext::new("t", "d", "c").unwrap()
}

fn coll(r: &Rig) -> Collection {
    r.udm.with(ctx())
}

fn ov(n: u64) -> Ov {
    Ov::new(n).unwrap()
}

/// Ids that route to pair 0 and to pair 1 of `names`.
fn ids_on_two_pairs(names: &[&str]) -> (String, String) {
    let router = Router::new(names.iter().copied(), udm_core::config::DEFAULT_KEY_TEMPLATE).unwrap();
    let on = |pair: usize| {
        (0..1000)
            .map(|i| format!("obj-{i}"))
            .find(|id| router.route(&ctx(), &ObjectId::new(id).unwrap()).index == pair)
            .unwrap()
    };
    (on(0), on(1))
}

// 1. Restore is idempotent by request id: the replay comes first and its fingerprint names
//    the target, not the head read at call time.
#[tokio::test]
async fn restore_replays_by_request_id_whatever_happened_since() {
    let r = rig(&["p"]);
    let c = coll(&r);
    c.create(json!({"v": 1}), WriteOpts::id("x")).await.unwrap();
    c.update("x", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    let opts = WriteOpts::default().request_id("restore-r");
    let RestoreOutcome::Restored(first) = c.restore_object("x", Target::Ov(ov(1)), opts.clone()).await.unwrap() else {
        panic!("the first call restores");
    };
    assert_eq!((first.ov, first.replayed), (ov(3), false));
    let again = c.restore_object("x", Target::Ov(ov(1)), opts.clone()).await.unwrap();
    assert_eq!(again, RestoreOutcome::Restored(udm_facade::Written { replayed: true, ..first.clone() }));
    c.update("x", json!({"v": 4}), None, WriteOpts::default()).await.unwrap();
    let later = c.restore_object("x", Target::Ov(ov(1)), opts.clone()).await.unwrap();
    assert_eq!(later, RestoreOutcome::Restored(udm_facade::Written { replayed: true, ..first }));
    // The same request id for another target is a conflict, and writes nothing.
    let e = c.restore_object("x", Target::Ov(ov(2)), opts).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(c.get_latest("x", ReadOpts::default()).await.unwrap().ov, ov(4));
}

// 2. A request id identifies one write in the collection, across pairs.
#[tokio::test]
async fn a_request_id_is_unique_in_the_collection_across_pairs() {
    let names = ["pa", "pb"];
    let r = rig(&names);
    let c = coll(&r);
    let (a, b) = ids_on_two_pairs(&names);
    c.create(json!({"v": 1}), WriteOpts::id(&a)).await.unwrap();
    c.create(json!({"v": 1}), WriteOpts::id(&b)).await.unwrap();
    let w = c.update(&a, json!({"v": 2}), None, WriteOpts::default().request_id("r")).await.unwrap();
    let e = c.update(&b, json!({"v": 2}), None, WriteOpts::default().request_id("r")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(c.get_latest(&b, ReadOpts::default()).await.unwrap().ov, ov(1), "nothing written on pair B");
    let replay = c.update(&a, json!({"v": 2}), None, WriteOpts::default().request_id("r")).await.unwrap();
    assert_eq!((replay.ov, replay.replayed), (w.ov, true));
}

// 3. A rejected create leaves nothing in S3 (no snapshot, no content).
#[tokio::test]
async fn a_rejected_create_leaves_nothing_behind() {
    let r = rig(&["p"]);
    let c = coll(&r);
    let doc = |s: &str| json!({"file": {"data": base64(s)}});
    c.create(doc("first"), WriteOpts::id("x")).await.unwrap();
    let (snapshots, content) = (r.stores[0].json.count_containing("/versions/"), r.stores[0].content.len());
    assert_eq!((snapshots, content), (1, 1));
    for i in 0..5 {
        let e = c.create(doc(&format!("other {i}")), WriteOpts::id("x")).await.unwrap_err();
        assert_eq!((e.kind(), e.current_ov()), (ErrorKind::VersionConflict, Some(ov(1))));
    }
    assert_eq!((r.stores[0].json.count_containing("/versions/"), r.stores[0].content.len()), (snapshots, content));
}

fn base64(s: &str) -> String {
    use std::fmt::Write;
    // A tiny standard base64 encoder (test-only) so the test needs no extra dependency.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &x)| n | u32::from(x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = out.write_char(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// 4. Every field of the envelope is verified on read: a rewritten `_system` in S3 is refused.
#[tokio::test]
async fn a_rewritten_envelope_header_is_never_served() {
    let r = rig(&["p"]);
    let c = coll(&r);
    let e1 = EnrichOpts { function_id: Some("geo".into()), ..EnrichOpts::default() };
    c.create(json!({"v": 1}), WriteOpts::id("x")).await.unwrap();
    c.enrich("x", json!({"w": 2}), e1).await.unwrap();
    c.update("x", json!({"v": 3}), None, WriteOpts::default()).await.unwrap();
    let good = c.get_version("x", ov(2), ReadOpts::default()).await.unwrap();
    assert_eq!(good.system["functionIds"], json!(["geo"]));
    let json = &r.stores[0].json;
    let keys = json.list("", None, 100).await.unwrap().keys;
    let key = keys.iter().find(|k| k.contains("/00000000000000000002.")).unwrap();
    let bytes = String::from_utf8(json.get(key).await.unwrap()).unwrap();
    for (from, to) in [("\"functionIds\":[\"geo\"]", "\"functionIds\":[]"), ("\"insertedAt\":\"", "\"insertedAt\":\"1")]
    {
        json.tamper(key, bytes.replacen(from, to, 1).into_bytes());
        let e = c.get_version("x", ov(2), ReadOpts::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{from}: {e}");
    }
    json.tamper(key, bytes.into_bytes());
    c.get_version("x", ov(2), ReadOpts::default()).await.unwrap();
}

// 5. Hot objects: concurrent writers without an expected OV all succeed; in one process
//    they take turns (no lost race), across processes they race, and lost races leave no
//    orphan snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_objects_lose_no_write_and_leave_no_orphan() {
    let r = rig(&["p"]);
    let c = coll(&r);
    c.create(json!({"n": []}), WriteOpts::id("hot")).await.unwrap();
    // A commit that takes a moment, as on a real server: writers interleave.
    r.faults.add(FaultRule::latency(Duration::from_millis(2)).port(Port::Meta).op("commit").always());
    let write = |c: Collection, label: &'static str| async move {
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let c = c.clone();
                tokio::spawn(async move {
                    let mut failed = 0;
                    for i in 0..5 {
                        let patch = json!({"n": [format!("{label}-{w}-{i}")]});
                        if c.enrich("hot", patch, EnrichOpts::default()).await.is_err() {
                            failed += 1;
                        }
                    }
                    failed
                })
            })
            .collect::<Vec<_>>();
        let mut failed = 0;
        for t in tasks {
            failed += t.await.unwrap();
        }
        failed
    };
    assert_eq!(write(c.clone(), "alone").await, 0);
    assert_eq!(r.udm.admin().stats().conflicts, 0, "one process's writers of an object take turns");
    // A second process over the same stores: its writers race the first's.
    let twin = Udm::builder().config(Config::from_toml(CONFIG).unwrap());
    let twin = r.pairs.iter().fold(twin, |b, p| b.pair(p.clone())).build().unwrap();
    let (a, b) = tokio::join!(write(c.clone(), "one"), write(twin.with(ctx()), "two"));
    assert_eq!((a, b), (0, 0));
    let latest = c.get_latest("hot", ReadOpts::default()).await.unwrap();
    assert_eq!(latest.ov, ov(121));
    assert_eq!(latest.data["n"].as_array().unwrap().len(), 120);
    let conflicts = r.udm.admin().stats().conflicts + twin.admin().stats().conflicts;
    assert!(conflicts > 0, "the two processes' writers did race");
    assert_eq!(
        r.stores[0].json.count_containing("/versions/"),
        121,
        "one snapshot per version: no orphans from lost races"
    );
}

// 6. No call can hang: a write is bounded by the write budget.
#[tokio::test]
async fn a_write_is_bounded_by_its_budget() {
    let names = ["p"];
    let metas = vec![Arc::new(MemoryMeta::new()) as Arc<dyn MetaStore>];
    let r = rig_with(&names, metas, |cfg| cfg.deadlines.write_budget_ms = 200);
    let c = coll(&r);
    r.faults.add(FaultRule::latency(Duration::from_secs(3600)).port(Port::Meta).op("commit").always());
    let e = c.create(json!({"v": 1}), WriteOpts::id("x").request_id("slow")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_retryable());
    assert!(e.to_string().contains("write budget") && e.to_string().contains("slow"), "{e}");
}

// 9a. An interrupted hard delete, retried, removes the remaining blobs.
#[tokio::test]
async fn a_retried_hard_delete_removes_every_blob() {
    let r = rig(&["p"]);
    let c = coll(&r);
    c.create(json!({"file": {"data": base64("one")}}), WriteOpts::id("x")).await.unwrap();
    c.update("x", json!({"file": {"data": base64("two")}}), None, WriteOpts::default()).await.unwrap();
    assert_eq!((r.stores[0].json.count_containing("/versions/"), r.stores[0].content.len()), (2, 2));
    r.faults.add(FaultRule::fail_before().port(Port::Blob).op("delete").next(1));
    assert!(c.hard_delete("x", Confirm::Yes).await.is_err(), "the first blob delete fails");
    let report = c.hard_delete("x", Confirm::Yes).await.unwrap();
    assert!(!report.existed);
    assert_eq!((r.stores[0].json.count_containing("/versions/"), r.stores[0].content.len()), (0, 0), "{report:?}");
}

// 9b. One corrupted object does not fail a list page; it is reported, its data never returned.
#[tokio::test]
async fn a_corrupt_object_is_reported_per_item_in_a_list() {
    let names = ["p"];
    let metas = vec![Arc::new(MemoryMeta::new()) as Arc<dyn MetaStore>];
    let r = rig_with(&names, metas, |cfg| cfg.storage.inline_max_bytes = 0);
    let c = coll(&r);
    for id in ["a", "b", "c"] {
        c.create(json!({"secret": id}), WriteOpts::id(id)).await.unwrap();
    }
    let json = &r.stores[0].json;
    let keys = json.list("", None, 100).await.unwrap().keys;
    let key = keys.iter().find(|k| k.contains("/objects/b/")).unwrap();
    let bytes = String::from_utf8(json.get(key).await.unwrap()).unwrap();
    json.tamper(key, bytes.replace("\"b\"", "\"B\"").into_bytes());
    let page = c.list(ListQuery::default(), ReadOpts::default()).await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(page.failed.len(), 1);
    assert_eq!((page.failed[0].id.as_str(), page.failed[0].error.kind()), ("b", ErrorKind::ChecksumMismatch));
    assert!(!format!("{page:?}").contains("\"B\""), "the tampered data is never returned");
}

/// Watches a metadata store's `head` calls: counts them and the most in flight at once
/// (each held `hold`, so calls issued together overlap: a round-trip count that needs no
/// timing), and when armed answers the next one with a stale head instead.
#[derive(Debug, Clone, Default)]
struct HeadWatch {
    calls: Arc<AtomicUsize>,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    stale: Arc<std::sync::Mutex<Option<Head>>>,
    hold: Duration,
}

impl HeadWatch {
    fn over(&self, inner: Arc<dyn MetaStore>) -> Arc<dyn MetaStore> {
        Arc::new(Watched { inner, watch: self.clone() })
    }
}

/// The layer of a [`HeadWatch`].
#[derive(Debug)]
struct Watched {
    inner: Arc<dyn MetaStore>,
    watch: HeadWatch,
}

impl Layered for Watched {
    type Inner = dyn MetaStore;
    fn inner(&self) -> &Self::Inner {
        &*self.inner
    }
}

#[async_trait::async_trait]
impl LayeredMeta for Watched {
    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
        let w = &self.watch;
        w.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(h) = w.stale.lock().unwrap().take() {
            return Ok(Some(h));
        }
        let n = w.now.fetch_add(1, Ordering::SeqCst) + 1;
        w.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(w.hold).await;
        let r = self.inner.head(key).await;
        w.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

// 9c. A create asks every pair at once (O(1) round trips in the number of pairs).
#[tokio::test]
async fn a_create_reads_all_pairs_heads_in_one_round_trip() {
    let names = ["p0", "p1", "p2", "p3", "p4"];
    // Long enough for the other pairs' calls to start if they were issued together.
    let watch = HeadWatch { hold: Duration::from_millis(20), ..HeadWatch::default() };
    let metas = names.iter().map(|_| watch.over(Arc::new(MemoryMeta::new()))).collect();
    let r = rig_with(&names, metas, |_| {});
    coll(&r).create(json!({"v": 1}), WriteOpts::id("x")).await.unwrap();
    assert_eq!(watch.max.load(Ordering::SeqCst), names.len(), "all pairs' heads were in flight together");
}

// A restore reads the head once: the write starts from the head the restore just read. A
// stale one (another writer committed in between) costs a refused commit and a fresh read,
// and the restore still lands on top.
#[tokio::test]
async fn a_restore_reads_the_head_once_and_a_stale_one_still_restores() {
    let watch = HeadWatch::default();
    let (calls, stale) = (watch.calls.clone(), watch.stale.clone());
    let memory = Arc::new(MemoryMeta::new());
    let r = rig_with(&["p0"], vec![watch.over(memory.clone())], |_| {});
    let c = coll(&r);
    c.create(json!({"v": 1}), WriteOpts::id("x")).await.unwrap();
    c.update("x", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    let key = ObjectKey::new(ctx(), ObjectId::new("x").unwrap());
    let at_two = memory.head(&key).await.unwrap().unwrap();
    c.update("x", json!({"v": 3}), None, WriteOpts::default()).await.unwrap();

    calls.store(0, Ordering::SeqCst);
    let back = c.restore_object("x", Target::Ov(ov(2)), WriteOpts::default()).await.unwrap();
    let RestoreOutcome::Restored(w) = back else { panic!("restored: {back:?}") };
    assert_eq!((w.ov, calls.load(Ordering::SeqCst)), (ov(4), 1), "one head read");

    *stale.lock().unwrap() = Some(at_two);
    calls.store(0, Ordering::SeqCst);
    let back = c.restore_object("x", Target::Ov(ov(1)), WriteOpts::default()).await.unwrap();
    let RestoreOutcome::Restored(w) = back else { panic!("restored: {back:?}") };
    assert_eq!((w.ov, calls.load(Ordering::SeqCst)), (ov(5), 2), "the stale head, then a fresh one");
    let latest = c.get_latest("x", ReadOpts::default()).await.unwrap();
    assert_eq!((latest.ov, latest.data), (ov(5), json!({"v": 1})));
}

// 7/8. Hostile list queries are typed validation errors: nesting past the predicate depth
//      bound (checked before recursing; deep cases are in udm-core's tests) and bad sort paths.
#[tokio::test]
async fn hostile_list_queries_are_validation_errors() {
    let r = rig(&["p"]);
    let c = coll(&r);
    c.create(json!({"v": 1}), WriteOpts::id("x")).await.unwrap();
    let mut deep = json!({"v": 1});
    for _ in 0..40 {
        deep = json!({"$not": deep});
    }
    let q = ListQuery { filter: Some(deep), ..ListQuery::default() };
    assert_eq!(c.list(q, ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::Validation);
    for bad in ["", "$x", "a..b", &"k".repeat(10 * 1024)] {
        let q = ListQuery { sort_by: Some(bad.to_owned()), ..ListQuery::default() };
        let e = c.list(q, ReadOpts::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Validation, "{bad:.20}: {e}");
        assert!(e.to_string().contains("sort_by"), "{e}");
    }
}
