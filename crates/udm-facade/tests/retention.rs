//! Retention (`Admin::enforce_retention`) and pins: a dry run changes nothing; a run prunes
//! exactly what the policy names minus pins, restore sources and heads; every read of a
//! pruned version — by OV, instant or CV, from the metadata store or from S3 alone — is a
//! typed `Pruned` error, never another version's data; snapshots and unreferenced content
//! go; a collection with an unfinished collection restore is left alone.

use std::sync::Arc;

use serde_json::json;
use udm_core::config::Config;
use udm_core::metamap::Base64Prop;
use udm_core::ports::{BlobStore, Layer, MetaStore};
use udm_core::retention::RetentionPolicy;
use udm_core::{Cv, ErrorKind, Ov, RouteContext, Timestamp};
use udm_facade::{
    CollectionTarget, ContentMode, Pair, ReadOpts, ReadSource, RetentionEvent, RetentionReport, Target, Udm, WriteOpts,
};
use udm_testkit::clock::ManualClock;
use udm_testkit::faults::{FaultLayer, FaultRule, Port};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

const DAY: i64 = 86_400_000;

struct Setup {
    udm: Udm,
    json: Arc<MemoryBlobs>,
    content: Arc<MemoryBlobs>,
    clock: Arc<ManualClock>,
    faults: FaultLayer,
}

fn setup(policy: RetentionPolicy) -> Setup {
    let mut config = Config::in_memory();
    config.retention = policy;
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
    let faults = FaultLayer::seeded(5);
    let pair = Pair {
        name: "p".into(),
        meta: Arc::new(faults.layer(meta.clone() as Arc<dyn MetaStore>)),
        counters: meta,
        json: json.clone(),
        content: content.clone(),
        describe: "memory".into(),
    };
    let clock = Arc::new(ManualClock::at(1_800_000_000_000));
    let udm = Udm::builder().config(config).clock(clock.clone()).pair(pair).build().unwrap();
    Setup { udm, json, content, clock, faults }
}

fn ctx(coll: &str) -> RouteContext {
    RouteContext::new("acme", "crm", coll).unwrap()
}

fn ov(n: u64) -> Ov {
    Ov::new(n).unwrap()
}

fn all() -> ReadOpts {
    ReadOpts { include_deleted: true, ..ReadOpts::default() }
}

fn shadow() -> ReadOpts {
    ReadOpts { source: ReadSource::Shadow, ..all() }
}

async fn enforce(udm: &Udm, scope: Option<&RouteContext>, dry_run: bool) -> (RetentionReport, Vec<RetentionEvent>) {
    let mut events = Vec::new();
    let report = udm.admin().enforce_retention(scope, dry_run, &mut |e| events.push(e)).await.unwrap();
    (report, events)
}

async fn keys(store: &MemoryBlobs, part: &str) -> Vec<String> {
    let all = store.list("", None, 1000).await.unwrap().keys;
    all.into_iter().filter(|k| k.contains(part)).collect()
}

/// max 3 per object, one pin: the dry run reports and changes nothing; the run prunes the
/// same versions, and each read of them is `Pruned` from both sources while the kept ones
/// answer as before.
#[tokio::test]
async fn pruned_versions_read_as_pruned_and_kept_ones_as_before() {
    let s = setup(RetentionPolicy { days: None, max_versions_per_item: Some(3) });
    let c = s.udm.with(ctx("docs"));
    let mut written = Vec::new();
    let w = c.create(json!({"n": 1}), WriteOpts::id("doc")).await.unwrap();
    written.push((w.ov, w.cv, w.at));
    for n in 2..=10 {
        s.clock.advance(1000);
        let w = c.update("doc", json!({"n": n}), None, WriteOpts::default()).await.unwrap();
        written.push((w.ov, w.cv, w.at));
    }
    c.create(json!({"other": 1}), WriteOpts::id("small")).await.unwrap();
    c.pin("doc", ov(2)).await.unwrap();
    assert_eq!(c.pin("doc", ov(99)).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(c.pins("doc").await.unwrap(), vec![ov(2)]);
    s.udm.admin().flush_shadow().await.unwrap();
    let before: Vec<_> = {
        let mut v = Vec::new();
        for (o, _, _) in &written {
            v.push(c.get_version("doc", *o, all()).await.unwrap());
        }
        v
    };
    let snapshots_before = keys(&s.json, "/versions/").await.len();

    let (dry, events) = enforce(&s.udm, None, true).await;
    let expect: Vec<u64> = vec![1, 3, 4, 5, 6, 7];
    assert!(dry.dry_run);
    assert_eq!((dry.versions_pruned, dry.kept_pinned, dry.snapshots_deleted), (6, 1, 6), "{dry:?}");
    let pruned_events: Vec<_> = events.iter().filter(|e| matches!(e, RetentionEvent::Pruned { .. })).collect();
    assert!(
        matches!(pruned_events.as_slice(), [RetentionEvent::Pruned { id, ovs, .. }] if id == "doc" && *ovs == expect)
    );
    assert_eq!(keys(&s.json, "/versions/").await.len(), snapshots_before, "a dry run deletes nothing");
    assert_eq!(c.get_version("doc", ov(1), all()).await.unwrap(), before[0]);

    let (run, _) = enforce(&s.udm, None, false).await;
    assert_eq!(RetentionReport { dry_run: true, ..run }, dry, "the run does what the dry run said");
    assert_eq!(keys(&s.json, "/versions/").await.len(), snapshots_before - 6);
    for (i, (o, cv, at)) in written.iter().enumerate() {
        if expect.contains(&o.get()) {
            for opts in [all(), shadow()] {
                let e = c.get_version("doc", *o, opts).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Pruned, "{o} {:?}: {e}", opts.source);
                let e = c.as_of("doc", *at, opts).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Pruned, "as of {at}: {e}");
                let e = c.as_of_cv("doc", *cv, opts).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Pruned, "as of {cv}: {e}");
            }
        } else {
            for opts in [all(), shadow()] {
                assert_eq!(c.get_version("doc", *o, opts).await.unwrap().data, before[i].data, "{o}");
                assert_eq!(c.as_of("doc", *at, opts).await.unwrap().ov, *o, "as of {at}");
                assert_eq!(c.as_of_cv("doc", *cv, opts).await.unwrap().ov, *o, "as of {cv}");
            }
        }
    }
    let history = c.history("doc", Default::default()).await.unwrap();
    let ovs: Vec<u64> = history.items.iter().map(|r| r.ov.get()).collect();
    assert_eq!(ovs, vec![2, 8, 9, 10]);
    assert_eq!(c.shadow_history("doc", Default::default()).await.unwrap(), history);
    let too_early = Timestamp::from_millis(written[0].2.as_millis() - 1).unwrap();
    assert_eq!(c.as_of("doc", too_early, all()).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(c.as_of_cv("doc", Cv(0), all()).await.unwrap_err().kind(), ErrorKind::NotFound);

    // Idempotent; unpinning lets the next run take the pinned version.
    assert_eq!(enforce(&s.udm, None, false).await.0.versions_pruned, 0);
    assert!(c.unpin("doc", ov(2)).await.unwrap());
    assert!(!c.unpin("doc", ov(2)).await.unwrap());
    assert_eq!(enforce(&s.udm, None, false).await.0.versions_pruned, 1);
    assert_eq!(c.get_version("doc", ov(2), all()).await.unwrap_err().kind(), ErrorKind::Pruned);

    // A rebuild from the shadow alone skips the pruned versions (their snapshots are gone).
    s.udm.admin().flush_shadow().await.unwrap();
    let empty = Arc::new(MemoryMeta::new());
    let rebuilt = Udm::builder()
        .config(Config::in_memory())
        .pair(Pair {
            name: "p".into(),
            meta: empty.clone(),
            counters: empty,
            json: s.json.clone(),
            content: s.content.clone(),
            describe: "memory".into(),
        })
        .build()
        .unwrap();
    rebuilt.admin().rebuild(None, &|_| {}).await.unwrap();
    let r = rebuilt.with(ctx("docs"));
    let ovs: Vec<u64> = r.history("doc", Default::default()).await.unwrap().items.iter().map(|v| v.ov.get()).collect();
    assert_eq!(ovs, vec![8, 9, 10]);
    assert_eq!(r.get_latest("doc", all()).await.unwrap().data, json!({"n": 10}));
}

/// `days`: versions older than the limit go, the head stays however old, and a kept
/// RESTORE version keeps the version it copied.
#[tokio::test]
async fn days_keep_the_head_and_what_kept_restores_copied() {
    let s = setup(RetentionPolicy { days: Some(30), max_versions_per_item: None });
    let c = s.udm.with(ctx("docs"));
    c.create(json!({"v": 1}), WriteOpts::id("old")).await.unwrap();
    c.update("old", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    c.create(json!({"v": 1}), WriteOpts::id("r")).await.unwrap();
    c.update("r", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    s.clock.advance(40 * DAY);
    c.restore_object("r", Target::Ov(ov(1)), WriteOpts::default()).await.unwrap();
    let (report, _) = enforce(&s.udm, Some(&ctx("docs")), false).await;
    assert_eq!(report.versions_pruned, 2, "{report:?}");
    assert_eq!(c.get_version("old", ov(1), all()).await.unwrap_err().kind(), ErrorKind::Pruned);
    assert_eq!(c.get_latest("old", all()).await.unwrap().data, json!({"v": 2}), "the head is never pruned");
    assert_eq!(c.get_version("r", ov(1), all()).await.unwrap().data, json!({"v": 1}), "a kept restore's source");
    assert_eq!(c.get_version("r", ov(2), all()).await.unwrap_err().kind(), ErrorKind::Pruned);
}

/// Content objects go with the last version referencing them; content a kept version
/// references stays.
#[tokio::test]
async fn content_goes_with_the_last_version_referencing_it() {
    let b64 = |s: &str| match s {
        "first" => "Zmlyc3Q=",
        _ => "c2hhcmVk", // "shared"
    };
    let s = setup(RetentionPolicy { days: None, max_versions_per_item: Some(1) });
    let c = s.udm.with(ctx("files"));
    c.create(json!({"file": b64("first")}), WriteOpts::id("f")).await.unwrap();
    c.update("f", json!({"file": b64("shared"), "n": 1}), None, WriteOpts::default()).await.unwrap();
    c.update("f", json!({"file": b64("shared"), "n": 2}), None, WriteOpts::default()).await.unwrap();
    assert_eq!(keys(&s.content, "/content/").await.len(), 2);
    let (report, _) = enforce(&s.udm, None, false).await;
    assert_eq!((report.versions_pruned, report.content_deleted, report.content_bytes), (2, 1, 5), "{report:?}");
    assert_eq!(keys(&s.content, "/content/").await.len(), 1);
    assert_eq!(
        c.get_latest("f", ReadOpts { content: ContentMode::Inline, ..all() }).await.unwrap().data["file"],
        json!(b64("shared")),
        "rehydrated"
    );
}

/// Retention leaves a collection with an unfinished collection restore alone, and takes it
/// up once the restore finishes.
#[tokio::test]
async fn an_unfinished_collection_restore_protects_its_collection() {
    let s = setup(RetentionPolicy { days: None, max_versions_per_item: Some(1) });
    let c = s.udm.with(ctx("docs"));
    for id in ["a", "b", "c"] {
        c.create(json!({"v": 1}), WriteOpts::id(id)).await.unwrap();
        c.update(id, json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    }
    let target = CollectionTarget::Cv(Cv(3));
    // The restore registers itself, then fails on its first page.
    s.faults.add(FaultRule::fail_before().port(Port::Meta).op("list_heads").next(1));
    assert!(c.restore_collection(target, WriteOpts::default(), |_| {}).await.is_err());
    let (report, events) = enforce(&s.udm, None, false).await;
    assert_eq!((report.skipped_collections, report.versions_pruned), (1, 0), "{report:?}");
    assert!(
        matches!(&events[..], [RetentionEvent::Skipped { reason, .. }] if reason.contains("restore/")),
        "{events:?}"
    );
    c.restore_collection(target, WriteOpts::default(), |_| {}).await.unwrap();
    let (report, _) = enforce(&s.udm, None, false).await;
    // a: v1 (v2 is the head, unchanged by the restore); b: v2 (its restore copied v1);
    // c: v1 and v2 (the restore deleted it: v3).
    assert_eq!((report.skipped_collections, report.versions_pruned), (0, 4), "{report:?}");
}

/// Without a policy, enforcement is refused rather than silently doing nothing.
#[tokio::test]
async fn no_policy_is_unsupported() {
    let udm = Udm::in_memory().unwrap();
    let e = udm.admin().enforce_retention(None, true, &mut |_| {}).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}
