//! Facade behaviour that needs control over the stores: failed commits and lost
//! acknowledgements (the seeded fault layer around the real in-memory adapters), hanging
//! backends in health, tampered snapshots, disabled hard delete, and a property test over
//! random operation sequences.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use udm_core::config::Config;
use udm_core::ports::{BlobStore, Layer};
use udm_core::query::HistoryQuery;
use udm_core::{ErrorKind, Ov, RouteContext, Timestamp};
use udm_facade::{Collection, Confirm, ReadOpts, RestoreOutcome, Target, Udm, WriteOpts};
use udm_testkit::clock::ManualClock;
use udm_testkit::faults::{FaultLayer, FaultRule, Port};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

struct Rig {
    udm: Udm,
    /// Wraps every store of the pair.
    faults: FaultLayer,
    /// The snapshot store under the fault layer, for inspection and tampering.
    json: Arc<MemoryBlobs>,
    clock: Arc<ManualClock>,
}

/// One in-memory pair, every store wrapped by one fault layer.
fn faulty_pair(name: &str, faults: &FaultLayer, json: Arc<MemoryBlobs>) -> udm_facade::Pair {
    let meta = Arc::new(faults.layer(Arc::new(MemoryMeta::new())));
    udm_facade::Pair {
        name: name.into(),
        meta: meta.clone(),
        counters: meta,
        json: Arc::new(faults.layer(json)),
        content: Arc::new(faults.layer(MemoryBlobs::new())),
        describe: "memory".into(),
    }
}

fn rig(inline_max_bytes: usize) -> Rig {
    let faults = FaultLayer::seeded(7);
    let json = Arc::new(MemoryBlobs::new());
    let clock = Arc::new(ManualClock::at(1_000_000));
    let mut cfg = Config::in_memory();
    cfg.storage.inline_max_bytes = inline_max_bytes;
    let udm =
        Udm::builder().pair(faulty_pair("p", &faults, json.clone())).config(cfg).clock(clock.clone()).build().unwrap();
    Rig { udm, faults, json, clock }
}

impl Rig {
    /// The next commit fails before it reaches the metadata store (a dropped connection).
    fn lose_next_commit(&self) {
        self.faults.add(FaultRule::fail_before().port(Port::Meta).op("commit").next(1));
    }
}

fn coll(udm: &Udm) -> Collection {
    udm.with(RouteContext::new("t", "d", "c").unwrap())
}

#[tokio::test]
async fn failed_commit_leaves_only_an_orphan_and_the_retry_reuses_it() {
    let r = rig(16 * 1024);
    let c = coll(&r.udm);
    r.lose_next_commit();
    let opts = WriteOpts::id("x").request_id("req-1");
    let e = c.create(json!({"v": 1}), opts.clone()).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(r.json.count_containing("/versions/"), 1, "the snapshot was durable before the commit");
    assert_eq!(
        c.get_latest("x", ReadOpts::default()).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "nothing committed"
    );
    let w = c.create(json!({"v": 1}), opts).await.unwrap();
    assert_eq!((w.ov.get(), w.replayed), (1, false));
    assert_eq!(r.json.count_containing("/versions/"), 1, "the retry of the same request reused its snapshot");
    // A different write after a lost commit gets its own snapshot key: orphans never block.
    r.lose_next_commit();
    assert!(c.update("x", json!({"v": 2}), None, WriteOpts::default()).await.is_err());
    c.update("x", json!({"v": 3}), None, WriteOpts::default()).await.unwrap();
    assert_eq!(r.json.count_containing("/versions/"), 3, "one committed, one orphan, one committed");
    assert_eq!(c.get_latest("x", ReadOpts::default()).await.unwrap().data["v"], 3);
}

#[tokio::test]
async fn a_lost_acknowledgement_is_answered_by_replaying_the_request() {
    let r = rig(16 * 1024);
    let c = coll(&r.udm);
    r.faults.add(FaultRule::fail_after().port(Port::Meta).op("commit").next(1));
    let opts = WriteOpts::id("x").request_id("req-ack");
    let e = c.create(json!({"v": 1}), opts.clone()).await.unwrap_err();
    assert_eq!((e.kind(), e.is_retryable()), (ErrorKind::Unavailable, true), "{e}");
    assert_eq!(c.get_latest("x", ReadOpts::default()).await.unwrap().data["v"], 1, "the commit was applied");
    let w = c.create(json!({"v": 1}), opts).await.expect("the retry is a replay");
    assert_eq!((w.ov.get(), w.replayed), (1, true));
    assert_eq!(r.json.count_containing("/versions/"), 1, "no second snapshot");
    assert_eq!(r.faults.stats().fail_after, 1);
}

#[tokio::test]
async fn health_reports_a_hanging_backend_instead_of_waiting() {
    let r = rig(1024);
    r.faults.add(FaultRule::latency(Duration::from_secs(60)).port(Port::Meta).op("ping"));
    let report = tokio::time::timeout(Duration::from_secs(10), r.udm.admin().health_within(Duration::from_millis(100)))
        .await
        .expect("health returns within its limit");
    let p = &report.pairs[0];
    assert!(!report.is_healthy());
    assert!(p.meta.as_ref().unwrap_err().contains("no answer within 100 ms"), "{:?}", p.meta);
    assert!(p.json.is_ok() && p.content.is_ok(), "the other backends answered: {p:?}");
}

#[tokio::test]
async fn health_checks_every_pair_at_once() {
    let faults = FaultLayer::seeded(8);
    let delay = Duration::from_millis(300);
    faults.add(FaultRule::latency(delay).op("ping"));
    faults.add(FaultRule::latency(delay).op("health"));
    let mut builder = Udm::builder();
    for name in ["a", "b", "c"] {
        builder = builder.pair(faulty_pair(name, &faults, Arc::new(MemoryBlobs::new())));
    }
    let udm = builder.build().unwrap();
    let start = Instant::now();
    let report = udm.admin().health().await;
    let took = start.elapsed();
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(faults.stats().latency, 9, "3 pairs x 3 backends");
    assert!(took < delay * 4, "9 checks of {delay:?} ran concurrently, took {took:?}");
}

#[tokio::test]
async fn tampered_snapshots_are_errors_never_data() {
    let r = rig(0); // no inline copies: every read goes to the snapshot
    let c = coll(&r.udm);
    c.create(json!({"secret": "original"}), WriteOpts::id("x")).await.unwrap();
    r.clock.advance(10);
    c.update("x", json!({"secret": "v2"}), None, WriteOpts::default()).await.unwrap();
    let v1 = c.history("x", HistoryQuery::default()).await.unwrap().items[0].snapshot.key.clone();
    let bytes = String::from_utf8(r.json.get(&v1).await.unwrap()).unwrap();
    r.json.tamper(&v1, bytes.replace("original", "tampered").into_bytes());
    for e in [
        c.get_version("x", Ov::FIRST, ReadOpts::default()).await.unwrap_err(),
        c.as_of("x", Timestamp::from_millis(1_000_000).unwrap(), ReadOpts::default()).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{e}");
        assert!(!e.to_string().contains("tampered"), "no data in the error");
    }
    let before = c.history("x", HistoryQuery::default()).await.unwrap().items.len();
    let e = c.restore_object("x", Target::Ov(Ov::FIRST), WriteOpts::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch);
    assert_eq!(c.history("x", HistoryQuery::default()).await.unwrap().items.len(), before, "restore wrote nothing");
    assert_eq!(c.get_latest("x", ReadOpts::default()).await.unwrap().data["secret"], "v2", "other versions unaffected");
    let latest_key = c.history("x", HistoryQuery::default()).await.unwrap().items[1].snapshot.key.clone();
    r.json.tamper(&latest_key, b"{}".to_vec());
    assert_eq!(c.get_latest("x", ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::ChecksumMismatch);
}

#[tokio::test]
async fn version_lookups_fall_back_to_the_s3_shadow() {
    let r = rig(16 * 1024);
    let c = coll(&r.udm);
    c.create(json!({"v": 1}), WriteOpts::id("x").actor("alice")).await.unwrap();
    r.lose_next_commit(); // leaves an orphan snapshot for ov 2
    assert!(c.update("x", json!({"v": "lost"}), None, WriteOpts::default()).await.is_err());
    c.update("x", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    c.update("x", json!({"v": 3}), None, WriteOpts::default()).await.unwrap();
    // The metadata store loses its version records (lookups by OV answer "absent").
    let hide = r.faults.add(FaultRule::absent().port(Port::Meta).op("version"));
    let v1 = c.get_version("x", Ov::FIRST, ReadOpts::default()).await.unwrap();
    assert_eq!(
        (v1.data.clone(), v1.cv.0, v1.system["actor"].as_str()),
        (json!({"v": 1}), 0, Some("alice")),
        "from the shadow; CV unknown"
    );
    let v3 = c.get_version("x", Ov::new(3).unwrap(), ReadOpts::default()).await.unwrap();
    assert_eq!(v3.data, json!({"v": 3}), "the head's own snapshot");
    let e = c.get_version("x", Ov::new(2).unwrap(), ReadOpts::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "an orphan beside the committed snapshot makes ov 2 ambiguous: {e}");
    assert_eq!(
        c.get_version("x", Ov::new(4).unwrap(), ReadOpts::default()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    r.faults.remove(hide);
    assert_eq!(c.get_version("x", Ov::new(2).unwrap(), ReadOpts::default()).await.unwrap().data, json!({"v": 2}));
}

#[tokio::test]
async fn hard_delete_disabled_changes_nothing() {
    let r = rig(1024);
    let c = coll(&r.udm);
    c.create(json!({}), WriteOpts::id("x")).await.unwrap();
    let e = c.hard_delete("x", Confirm::Yes).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(c.get_latest("x", ReadOpts::default()).await.is_ok());
    assert_eq!(r.json.count_containing("/versions/"), 1);
}

#[tokio::test]
async fn bad_config_is_rejected_by_the_builder() {
    let mut cfg = Config::in_memory();
    cfg.routing.key_template = "{nope}".into();
    let e = Udm::builder()
        .pair(udm_facade::Pair {
            name: "p".into(),
            meta: Arc::new(MemoryMeta::new()),
            counters: Arc::new(MemoryMeta::new()),
            json: Arc::new(MemoryBlobs::new()),
            content: Arc::new(MemoryBlobs::new()),
            describe: "m".into(),
        })
        .config(cfg)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(Udm::builder().build().unwrap_err().kind(), ErrorKind::Config, "no pairs");
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    Update(i64),
    Enrich(i64),
    Delete,
    Restore(prop::sample::Index),
    Tick(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<i64>().prop_map(Step::Update),
        2 => any::<i64>().prop_map(Step::Enrich),
        1 => Just(Step::Delete),
        2 => any::<prop::sample::Index>().prop_map(Step::Restore),
        2 => (-50i64..200).prop_map(Step::Tick),
    ]
}

/// What the model expects of version n.
#[derive(Debug, Clone)]
struct Expected {
    data: Value,
    deleted: bool,
    at: Timestamp,
}

async fn run_steps(steps: Vec<Step>) {
    let r = rig(if steps.len().is_multiple_of(2) { 0 } else { 16 * 1024 });
    let c = coll(&r.udm);
    let mut model: Vec<Expected> = Vec::new();
    let w = c.create(json!({"n": 0, "tags": []}), WriteOpts::id("p")).await.unwrap();
    model.push(Expected { data: json!({"n": 0, "tags": []}), deleted: false, at: w.at });
    for s in steps {
        let last = model.last().cloned().unwrap();
        let result = match &s {
            Step::Tick(ms) => {
                r.clock.advance(*ms);
                continue;
            }
            Step::Update(n) => c
                .update("p", json!({"n": n, "tags": []}), None, WriteOpts::default())
                .await
                .map(|w| (w, json!({"n": n, "tags": []}), false)),
            Step::Enrich(n) => {
                let mut merged = last.data.clone();
                let tags = merged["tags"].as_array_mut().unwrap();
                if !tags.contains(&json!(n)) {
                    tags.push(json!(n));
                }
                c.enrich("p", json!({"tags": [n]}), Default::default()).await.map(|w| (w, merged, false))
            }
            Step::Delete => c.delete("p", None, WriteOpts::default()).await.map(|w| (w, last.data.clone(), true)),
            Step::Restore(ix) => {
                let target = ix.index(model.len());
                match c.restore_object("p", Target::Ov(Ov::new(target as u64 + 1).unwrap()), WriteOpts::default()).await
                {
                    Ok(RestoreOutcome::Restored(w)) => Ok((w, model[target].data.clone(), model[target].deleted)),
                    Ok(RestoreOutcome::Unchanged { .. }) => {
                        assert_eq!(
                            (last.data.clone(), last.deleted),
                            (model[target].data.clone(), model[target].deleted),
                            "unchanged only when equal"
                        );
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok((w, data, deleted)) => {
                assert_eq!(w.ov.get() as usize, model.len() + 1, "OVs contiguous");
                assert!(w.at >= last.at, "time never goes back");
                model.push(Expected { data, deleted, at: w.at });
            }
            Err(e) => {
                assert!(last.deleted, "only writes to a deleted object may fail: {e}");
                assert_eq!(e.kind(), ErrorKind::Conflict);
            }
        }
    }
    for (i, m) in model.iter().enumerate() {
        let v = c.get_version("p", Ov::new(i as u64 + 1).unwrap(), ReadOpts::default()).await.unwrap();
        assert_eq!((&v.data, v.deleted), (&m.data, m.deleted), "version {}", i + 1);
        // as_of(at) is the last version at or before `at`.
        let want = model.iter().rposition(|x| x.at <= m.at).unwrap();
        let got = c.as_of("p", m.at, ReadOpts::default()).await.unwrap();
        assert_eq!(got.ov.get() as usize, want + 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_histories_keep_every_version(steps in prop::collection::vec(step(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_steps(steps));
    }
}

/// The snapshot put runs while the commit's statements do, but the commit waits for it: a
/// write whose put fails commits nothing, and writers batched with it whose puts succeed
/// still commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_snapshot_put_commits_nothing_and_spares_its_batch() {
    let r = rig(16 * 1024);
    let c = coll(&r.udm);
    // Slow puts so concurrent writers share a batch; the put of `bad` fails.
    r.faults.add(FaultRule::latency(Duration::from_millis(20)).port(Port::Blob).op("put"));
    r.faults.add(FaultRule::fail_before().port(Port::Blob).op("put").prefix("t/d/c/objects/bad/"));
    let writers: Vec<_> = ["a", "b", "bad", "d", "e"]
        .into_iter()
        .map(|id| {
            let c = c.clone();
            tokio::spawn(async move { (id, c.create(json!({"id": id}), WriteOpts::id(id)).await) })
        })
        .collect();
    for w in writers {
        let (id, result) = w.await.unwrap();
        if id == "bad" {
            assert_eq!(result.unwrap_err().kind(), ErrorKind::Unavailable);
        } else {
            assert_eq!(result.unwrap().ov, Ov::FIRST, "{id} commits");
        }
    }
    assert_eq!(c.get_latest("bad", ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::NotFound);
    let cvs: u64 = c.current_cvs().await.unwrap().iter().map(|(_, cv)| cv.0).sum();
    assert_eq!(cvs, 4, "only the four good writes committed");
    assert!(r.udm.admin().stats().batched_commits > r.udm.admin().stats().commit_batches, "writers shared a batch");
}
