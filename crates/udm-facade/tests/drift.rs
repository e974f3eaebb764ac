//! Drift (`Admin::drift`): the metadata store against the blob store's shadow and a
//! caller-supplied actual state — each kind of drift made on purpose behind UDM's back and
//! reported where it was made, an in-sync store reported in sync, and a collection of
//! thousands of objects whose ids sort differently as ids and as blob prefixes merge-joined
//! page by page.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use udm_core::config::Config;
use udm_core::drift::{DriftKind, DriftSource};
use udm_core::ports::{BlobStore, Layer, MetaStore};
use udm_core::{ErrorKind, ObjectId, ObjectKey, RouteContext};
use udm_facade::{ActualState, DriftEvent, DriftFinding, DriftOptions, DriftScope, DriftTotals, Pair, Udm, WriteOpts};
use udm_testkit::faults::{FaultLayer, FaultRule, Port};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

struct Setup {
    udm: Udm,
    meta: Arc<MemoryMeta>,
    json: Arc<MemoryBlobs>,
    faults: FaultLayer,
}

fn setup() -> Setup {
    let (meta, json) = (Arc::new(MemoryMeta::new()), Arc::new(MemoryBlobs::new()));
    let faults = FaultLayer::seeded(3);
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone(),
        counters: meta.clone(),
        json: Arc::new(faults.layer(json.clone() as Arc<dyn BlobStore>)),
        content: Arc::new(MemoryBlobs::new()),
        describe: "memory".into(),
    };
    let udm = Udm::builder().config(Config::in_memory()).pair(pair).build().unwrap();
    Setup { udm, meta, json, faults }
}

fn ctx() -> RouteContext {
    RouteContext::new("acme", "crm", "drifty").unwrap()
}

fn key(id: &str) -> ObjectKey {
    ObjectKey::new(ctx(), ObjectId::new(id).unwrap())
}

fn actual(items: Vec<(&str, Value)>) -> ActualState {
    Box::new(items.into_iter().map(|(id, v)| Ok((id.to_owned(), v))).collect::<Vec<_>>().into_iter())
}

async fn drift(
    udm: &Udm,
    scope: DriftScope,
    options: DriftOptions,
    a: Option<ActualState>,
) -> (DriftTotals, Vec<DriftFinding>) {
    let mut found = Vec::new();
    let totals = udm
        .admin()
        .drift(scope, options, a, &mut |e| {
            if let DriftEvent::Finding(f) = e {
                found.push(*f);
            }
        })
        .await
        .unwrap();
    (totals, found)
}

fn kinds(found: &[DriftFinding]) -> Vec<(Option<&str>, DriftSource, DriftKind, &str)> {
    found.iter().map(|f| (f.id.as_deref(), f.item.source, f.item.kind, f.item.path.as_str())).collect()
}

#[tokio::test]
async fn an_untouched_store_is_in_sync_and_each_tampering_is_reported_where_it_was_made() {
    let s = setup();
    let c = s.udm.with(ctx());
    for id in ["a", "b", "c", "d", "e"] {
        c.create(json!({"id": id, "n": 1, "tags": ["x"]}), WriteOpts::id(id)).await.unwrap();
        c.update(id, json!({"id": id, "n": 2, "tags": ["x"]}), None, WriteOpts::default()).await.unwrap();
    }
    s.udm.admin().flush_shadow().await.unwrap();
    let same = actual(["a", "b", "c", "d", "e"].map(|id| (id, json!({"id": id, "n": 2, "tags": ["x"]}))).into());
    let (totals, found) = drift(&s.udm, DriftScope::Collection(ctx()), DriftOptions::default(), Some(same)).await;
    assert!(found.is_empty(), "{found:?}");
    assert_eq!((totals.objects, totals.collections, totals.summary.in_sync), (5, 1, true));

    // a: its head snapshot is corrupted. b: the metadata store loses it entirely. c: an
    // orphan snapshot appears beside its versions. d: the shadow log and index stop (a blob
    // outage on the log): its next version is not in the shadow.
    let a = c.get_latest("a", Default::default()).await.unwrap();
    let a_snapshot = s.meta.head(&key("a")).await.unwrap().unwrap().snapshot.key;
    s.json.tamper(&a_snapshot, b"{\"not\": \"the snapshot\"}".to_vec());
    s.meta.hard_delete(&key("b"), vec![]).await.unwrap();
    let c_committed = s.meta.head(&key("c")).await.unwrap().unwrap().snapshot.key;
    let orphan = c_committed.replace(".json", "-orphan.json");
    s.json
        .put(&orphan, s.json.get(&c_committed).await.unwrap(), &udm_core::ports::PutOptions::create_json())
        .await
        .unwrap();
    let outage = s.faults.add(FaultRule::fail_before().port(Port::Blob).prefix("acme/crm/drifty/log/").always());
    c.update("d", json!({"id": "d", "n": 3, "tags": ["x"]}), None, WriteOpts::default()).await.unwrap();
    let _ = s.udm.admin().flush_shadow().await;
    assert!(s.faults.hits(outage) > 0);

    // The actual state: e modified and an extra field, c missing, z extra.
    let downstream = actual(vec![
        ("a", a.data.clone()),
        ("d", json!({"id": "d", "n": 3, "tags": ["x"]})),
        ("e", json!({"id": "e", "n": 5, "tags": ["x"], "more": true})),
        ("z", json!({"id": "z"})),
    ]);
    let options = DriftOptions { orphan_grace: Duration::ZERO, deep: false };
    let (totals, found) = drift(&s.udm, DriftScope::Collection(ctx()), options, Some(downstream)).await;
    let got = kinds(&found);
    let want = [
        (None, DriftSource::Shadow, DriftKind::CvGap, ""),
        (Some("a"), DriftSource::Shadow, DriftKind::ChecksumMismatch, "/a"),
        (Some("b"), DriftSource::Shadow, DriftKind::Extra, "/b"),
        (Some("c"), DriftSource::Actual, DriftKind::Missing, "/c"),
        (Some("c"), DriftSource::Shadow, DriftKind::OrphanSnapshot, "/c"),
        (Some("d"), DriftSource::Shadow, DriftKind::HeadMismatch, "/d"),
        (Some("d"), DriftSource::Shadow, DriftKind::Modified, "/d/n"),
        (Some("e"), DriftSource::Actual, DriftKind::Extra, "/e/more"),
        (Some("e"), DriftSource::Actual, DriftKind::Modified, "/e/n"),
        (Some("z"), DriftSource::Actual, DriftKind::Extra, "/z"),
    ];
    for w in &want {
        assert!(got.contains(w), "{w:?} not reported; got {got:?}");
    }
    assert_eq!(got.len(), want.len(), "nothing else: {got:?}");
    let orphan_found = found.iter().find(|f| f.item.kind == DriftKind::OrphanSnapshot).unwrap();
    assert_eq!(orphan_found.item.found, Some(json!(orphan)));
    let modified = found.iter().find(|f| f.item.path == "/e/n").unwrap();
    assert_eq!((&modified.item.expected, &modified.item.found), (&Some(json!(2)), &Some(json!(5))));
    assert!(!totals.summary.in_sync);
    assert_eq!((totals.summary.cv_gap, totals.summary.orphan_snapshot, totals.objects), (1, 1, 6));

    // With the default grace period the fresh orphan is a write in flight, not drift.
    let (_, found) = drift(&s.udm, DriftScope::Object(ctx(), "c".into()), DriftOptions::default(), None).await;
    assert!(found.is_empty(), "{found:?}");
    s.faults.clear();
}

#[tokio::test]
async fn deep_drift_compares_every_version_and_an_unsorted_actual_state_is_refused() {
    let s = setup();
    let c = s.udm.with(ctx());
    c.create(json!({"v": 1}), WriteOpts::id("x")).await.unwrap();
    for v in 2..=5 {
        c.update("x", json!({"v": v}), None, WriteOpts::default()).await.unwrap();
    }
    s.udm.admin().flush_shadow().await.unwrap();
    let deep = DriftOptions { deep: true, ..DriftOptions::default() };
    let (totals, found) = drift(&s.udm, DriftScope::All, deep, None).await;
    assert!(found.is_empty() && totals.summary.in_sync, "{found:?}");
    // An old version's snapshot is corrupted: only the deep check reads it.
    let old = s.meta.version(&key("x"), udm_core::Ov::new(2).unwrap()).await.unwrap().unwrap();
    s.json.tamper(&old.snapshot.key, b"garbage".to_vec());
    let (_, shallow) = drift(&s.udm, DriftScope::Object(ctx(), "x".into()), DriftOptions::default(), None).await;
    assert!(shallow.is_empty(), "{shallow:?}");
    let (totals, found) = drift(&s.udm, DriftScope::Object(ctx(), "x".into()), deep, None).await;
    assert_eq!(kinds(&found), [(Some("x"), DriftSource::Shadow, DriftKind::ChecksumMismatch, "/x")]);
    assert_eq!(totals.summary.checksum_mismatch, 1);

    let unsorted = actual(vec![("x", json!({})), ("a", json!({}))]);
    let err = s
        .udm
        .admin()
        .drift(DriftScope::Collection(ctx()), DriftOptions::default(), Some(unsorted), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
    let err = s.udm.admin().drift(DriftScope::All, DriftOptions::default(), Some(actual(vec![])), &mut |_| {}).await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::Validation);
    let err = s
        .udm
        .admin()
        .drift(DriftScope::Object(ctx(), "nobody".into()), DriftOptions::default(), None, &mut |_| {})
        .await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::NotFound);
}

/// 2,600 objects whose ids order differently as ids (`a` < `a-b`) and as blob prefixes
/// (`a-b/` < `a/`), over several listing pages, with an actual state of every one: in sync,
/// and one changed document found among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_objects_merge_join_across_pages_whatever_their_ids_sort_like() {
    let s = setup();
    let c = s.udm.with(ctx());
    let mut ids: Vec<String> = Vec::new();
    for i in 0..650 {
        for suffix in ["", "-b", ".c", "_z"] {
            ids.push(format!("o{i}{suffix}"));
        }
    }
    let items: Vec<(Value, WriteOpts)> = ids.iter().map(|id| (json!({"id": id}), WriteOpts::id(id))).collect();
    for chunk in items.chunks(200) {
        for r in c.create_many(chunk.to_vec()).await {
            r.unwrap();
        }
    }
    s.udm.admin().flush_shadow().await.unwrap();
    ids.sort();
    let docs: Vec<(String, Value)> = ids.iter().map(|id| (id.clone(), json!({"id": id}))).collect();
    let all = || -> ActualState { Box::new(docs.clone().into_iter().map(Ok)) };
    let (totals, found) = drift(&s.udm, DriftScope::Collection(ctx()), DriftOptions::default(), Some(all())).await;
    assert!(found.is_empty(), "{:?}", &found[..found.len().min(5)]);
    assert_eq!(totals.objects, 2_600);

    let mut changed = docs.clone();
    let at = changed.iter().position(|(id, _)| id == "o7").unwrap();
    changed[at].1 = json!({"id": "o7", "extra": 1});
    let (_, found) = drift(
        &s.udm,
        DriftScope::Collection(ctx()),
        DriftOptions::default(),
        Some(Box::new(changed.into_iter().map(Ok))),
    )
    .await;
    assert_eq!(kinds(&found), [(Some("o7"), DriftSource::Actual, DriftKind::Extra, "/o7/extra")]);
}

/// Blob calls in flight at once (each held for a moment so that overlapping calls meet).
#[derive(Debug, Clone, Default)]
struct Overlap(Arc<std::sync::Mutex<(usize, usize)>>);

impl udm_layers::Interceptor for Overlap {
    async fn intercept<T, F, Fut>(&self, _: udm_layers::Call<'_>, run: F) -> udm_core::Result<T>
    where
        T: udm_layers::Answer,
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = udm_core::Result<T>> + Send,
    {
        {
            let mut n = self.0.lock().unwrap();
            n.0 += 1;
            n.1 = n.1.max(n.0);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let answer = run().await;
        self.0.lock().unwrap().0 -= 1;
        answer
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_is_checked_several_objects_at_a_time_and_reported_in_order() {
    let (meta, json) = (Arc::new(MemoryMeta::new()), Arc::new(MemoryBlobs::new()));
    let overlap = Overlap::default();
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone(),
        counters: meta.clone(),
        json: Arc::new(udm_layers::Intercepted::new(json.clone() as Arc<dyn BlobStore>, overlap.clone())),
        content: Arc::new(MemoryBlobs::new()),
        describe: "memory".into(),
    };
    let udm = Udm::builder().config(Config::in_memory()).pair(pair).build().unwrap();
    let ids: Vec<String> = (0..64).map(|i| format!("o{i:02}")).collect();
    let items: Vec<(Value, WriteOpts)> = ids.iter().map(|id| (json!({"id": id}), WriteOpts::id(id))).collect();
    for r in udm.with(ctx()).create_many(items).await {
        r.unwrap();
    }
    udm.admin().flush_shadow().await.unwrap();
    // Every object differs from the actual state, so each reports a finding.
    let docs: Vec<(String, Value)> = ids.iter().map(|id| (id.clone(), json!({"id": id, "x": 1}))).collect();
    *overlap.0.lock().unwrap() = (0, 0);
    let (totals, found) =
        drift(&udm, DriftScope::Collection(ctx()), DriftOptions::default(), Some(Box::new(docs.into_iter().map(Ok))))
            .await;
    let peak = overlap.0.lock().unwrap().1;
    assert!((2..=16).contains(&peak), "blob calls in flight at once: {peak}");
    assert_eq!(totals.objects, 64);
    let reported: Vec<&str> = found.iter().filter_map(|f| f.id.as_deref()).collect();
    assert_eq!(reported, ids.iter().map(String::as_str).collect::<Vec<_>>(), "one finding per object, in id order");
}
