//! Orphan GC (`Admin::collect_garbage`): orphan snapshots go once older than the grace
//! period, content once marked unreferenced for longer than it; committed snapshots — also
//! those whose record the metadata store lost but the shadow index names — and referenced
//! content are never touched; a dry run changes nothing.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use udm_core::config::Config;
use udm_core::metamap::Base64Prop;
use udm_core::ports::{BlobStore, MetaStore, PutOptions};
use udm_core::{ObjectId, ObjectKey, Ov, RouteContext};
use udm_facade::{ContentMode, GcEvent, GcReport, Pair, ReadOpts, Udm, WriteOpts};
use udm_testkit::clock::ManualClock;
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

const HOUR: i64 = 3_600_000;
const GRACE: Duration = Duration::from_secs(3600);

struct Setup {
    udm: Udm,
    meta: Arc<MemoryMeta>,
    json: Arc<MemoryBlobs>,
    content: Arc<MemoryBlobs>,
    clock: Arc<ManualClock>,
}

fn setup() -> Setup {
    let mut config = Config::in_memory();
    config.collections.push(udm_core::config::CollectionConfig {
        tenant: None,
        db: "crm".into(),
        collection: "files".into(),
        indexed_props: Vec::new(),
        base64_props: vec![Base64Prop { path: "file".into(), content_type: "application/octet-stream".into() }],
        counter_rules: Vec::new(),
    });
    let (meta, json, content) =
        (Arc::new(MemoryMeta::new()), Arc::new(MemoryBlobs::new()), Arc::new(MemoryBlobs::new()));
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone(),
        counters: meta.clone(),
        json: json.clone(),
        content: content.clone(),
        describe: "memory".into(),
    };
    let clock = Arc::new(ManualClock::at(1_800_000_000_000));
    let udm = Udm::builder().config(config).clock(clock.clone()).pair(pair).build().unwrap();
    Setup { udm, meta, json, content, clock }
}

fn ctx(coll: &str) -> RouteContext {
    RouteContext::new("acme", "crm", coll).unwrap()
}

async fn gc(udm: &Udm, dry_run: bool) -> (GcReport, Vec<GcEvent>) {
    let mut events = Vec::new();
    let report = udm.admin().collect_garbage(None, GRACE, dry_run, &mut |e| events.push(e)).await.unwrap();
    (report, events)
}

async fn keys(store: &MemoryBlobs, part: &str) -> Vec<String> {
    store.list("", None, 1000).await.unwrap().keys.into_iter().filter(|k| k.contains(part)).collect()
}

#[tokio::test]
async fn orphans_go_after_the_grace_period_and_committed_blobs_never() {
    let s = setup();
    let docs = s.udm.with(ctx("docs"));
    docs.create(json!({"v": 1}), WriteOpts::id("a")).await.unwrap();
    docs.update("a", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    docs.create(json!({"v": 1}), WriteOpts::id("lost")).await.unwrap();
    docs.update("lost", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    let files = s.udm.with(ctx("files"));
    files.create(json!({"file": "aGVsbG8="}), WriteOpts::id("f")).await.unwrap();
    s.udm.admin().flush_shadow().await.unwrap();

    // Behind UDM's back: a writer that crashed after its snapshot put (a copy of a real
    // envelope under another request id), content nobody references, and a version record
    // the metadata store lost (its snapshot stays committed: the shadow index names it).
    let committed = keys(&s.json, "/versions/").await;
    let a1 = committed.iter().find(|k| k.contains("/a/versions/00000000000000000001.")).unwrap().clone();
    let orphan = a1.replace("00000000000000000001.", "00000000000000000003.").replace(".json", "x.json");
    s.json.put(&orphan, s.json.get(&a1).await.unwrap(), &PutOptions::overwrite("application/json")).await.unwrap();
    let stray = format!("{}deadbeef", committed[0].split("objects/").next().unwrap().replace("/docs/", "/files/"))
        .replace("/files/", "/files/content/f/");
    s.content.put(&stray, b"stray".to_vec(), &PutOptions::overwrite("application/octet-stream")).await.unwrap();
    let lost = ObjectKey::new(ctx("docs"), ObjectId::new("lost").unwrap());
    s.meta.prune(&lost, &[Ov::FIRST]).await.unwrap();

    // Young: kept; the stray content is marked.
    let (young, _) = gc(&s.udm, false).await;
    assert_eq!((young.snapshots, young.content, young.kept_in_grace), (0, 0, 2), "{young:?}");
    s.clock.advance(2 * HOUR);
    let (dry, events) = gc(&s.udm, true).await;
    assert_eq!((dry.snapshots, dry.content, dry.snapshot_bytes > 0, dry.content_bytes), (1, 1, true, 5), "{dry:?}");
    let named: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            GcEvent::Orphan { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(named, vec![orphan.as_str(), stray.as_str()]);
    assert_eq!(keys(&s.json, "/versions/").await.len(), committed.len() + 1, "a dry run deletes nothing");

    let (run, _) = gc(&s.udm, false).await;
    assert_eq!(GcReport { dry_run: true, ..run }, dry);
    assert_eq!(keys(&s.json, "/versions/").await, committed, "exactly the orphan went");
    assert_eq!(keys(&s.content, "/content/").await.len(), 1, "the referenced content stays");
    assert_eq!(
        files.get_latest("f", ReadOpts { content: ContentMode::Inline, ..ReadOpts::default() }).await.unwrap().data,
        json!({"file": "aGVsbG8="})
    );
    assert_eq!(docs.get_version("lost", Ov::FIRST, ReadOpts::default()).await.unwrap().data, json!({"v": 1}));
    assert_eq!(gc(&s.udm, false).await.0, GcReport { objects: 3, ..GcReport::default() }, "nothing left");
}

/// Content put by a write still in flight (no snapshot names it yet) survives: it is
/// marked, not deleted, and loses its mark once the write commits a snapshot naming it.
#[tokio::test]
async fn content_of_a_write_in_flight_is_marked_not_deleted() {
    let s = setup();
    let files = s.udm.with(ctx("files"));
    files.create(json!({"file": "aGVsbG8="}), WriteOpts::id("f")).await.unwrap();
    let first = keys(&s.content, "/content/").await;
    // The next write's content ("world"), put ahead of its snapshot.
    let hash = udm_core::canonical::ContentHash::of(b"world").to_string();
    let in_flight = format!("{}/{hash}", first[0].rsplit_once('/').unwrap().0);
    s.content.put(&in_flight, b"world".to_vec(), &PutOptions::overwrite("application/octet-stream")).await.unwrap();
    let (r, _) = gc(&s.udm, false).await;
    assert_eq!((r.content, r.kept_in_grace), (0, 1), "marked: {r:?}");
    files.update("f", json!({"file": "d29ybGQ="}), None, WriteOpts::default()).await.unwrap();
    s.clock.advance(2 * HOUR);
    let (r, _) = gc(&s.udm, false).await;
    assert_eq!((r.content, r.kept_in_grace), (0, 0), "referenced now: {r:?}");
    assert_eq!(keys(&s.content, "/content/").await, {
        let mut k = vec![first[0].clone(), in_flight];
        k.sort();
        k
    });
}
