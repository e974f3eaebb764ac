//! The fallback queue on injected stores: the in-memory adapters under the seeded fault layer
//! (outages, lost acknowledgements, latency), a manual clock (so retries fall due when a test
//! says), and the spool as the real embedded redb file where a restart is part of the test.
//! Every write acknowledged as committed or queued must end committed exactly once with its
//! data, in its object's order, or in the dead letters with its reason.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use udm_core::config::Config;
use udm_core::ports::{Layer, QueueState, QueueStore};
use udm_core::query::HistoryQuery;
use udm_core::{ErrorKind, Op, Ov, RouteContext};
use udm_facade::{Collection, ReadOpts, RequestState, Udm, WriteOpts};
use udm_testkit::clock::ManualClock;
use udm_testkit::faults::{FaultLayer, FaultRule, Port};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta, MemoryQueue};

/// The stores of one pair, shared by every `Udm` a test builds (processes over one backend).
#[derive(Clone)]
struct Stores {
    meta: Arc<MemoryMeta>,
    json: Arc<MemoryBlobs>,
    content: Arc<MemoryBlobs>,
}

struct Rig {
    udm: Udm,
    faults: FaultLayer,
    clock: Arc<ManualClock>,
    stores: Stores,
}

fn stores() -> Stores {
    Stores {
        meta: Arc::new(MemoryMeta::new()),
        json: Arc::new(MemoryBlobs::new()),
        content: Arc::new(MemoryBlobs::new()),
    }
}

fn config(max_attempts: u32) -> Config {
    let mut cfg = Config::in_memory();
    cfg.fallback_queue.enabled = true;
    cfg.fallback_queue.retry.base_delay_ms = 10;
    cfg.fallback_queue.retry.max_delay_ms = 1_000;
    cfg.fallback_queue.retry.max_attempts = max_attempts;
    // The test drives replays itself (Admin::run_queue_once); the worker polls rarely.
    cfg.fallback_queue.poll_interval_ms = 60_000;
    cfg.deadlines.write_budget_ms = 5_000;
    cfg
}

/// The pair over `s`, every store under `faults`.
fn pair(s: &Stores, faults: &FaultLayer) -> udm_facade::Pair {
    let meta = Arc::new(faults.layer(s.meta.clone()));
    udm_facade::Pair {
        name: "p".into(),
        meta: meta.clone(),
        counters: meta,
        json: Arc::new(faults.layer(s.json.clone())),
        content: Arc::new(faults.layer(s.content.clone())),
        describe: "memory".into(),
    }
}

/// A `Udm` over `s`, every store under `faults`, the queue's spool given by `queue` (or the
/// file the config names).
fn build(
    s: &Stores,
    faults: &FaultLayer,
    clock: &Arc<ManualClock>,
    cfg: Config,
    queue: Option<Arc<dyn QueueStore>>,
) -> Udm {
    let mut b = Udm::builder().pair(pair(s, faults)).config(cfg).clock(clock.clone());
    if let Some(q) = queue {
        b = b.queue(q);
    }
    b.build().unwrap()
}

fn rig(max_attempts: u32) -> Rig {
    let (s, faults, clock) = (stores(), FaultLayer::seeded(11), Arc::new(ManualClock::at(1_000_000)));
    let udm = build(&s, &faults, &clock, config(max_attempts), Some(Arc::new(MemoryQueue::new())));
    Rig { udm, faults, clock, stores: s }
}

fn coll(udm: &Udm) -> Collection {
    udm.with(RouteContext::new("t", "d", "c").unwrap())
}

impl Rig {
    /// Every metadata commit fails before it reaches the store (an outage).
    fn outage(&self) {
        self.faults.add(FaultRule::fail_before().port(Port::Meta).op("commit").always());
    }

    /// Lets every retry fall due, then replays until the queue has nothing pending (at most
    /// `rounds` passes: one entry per object per pass).
    async fn drain(&self, rounds: usize) {
        for _ in 0..rounds {
            self.clock.advance(10_000);
            self.udm.admin().run_queue_once().await.unwrap();
            if self.udm.admin().queue_stats().await.unwrap().pending == 0 {
                return;
            }
        }
        panic!("the queue still has pending entries after {rounds} passes");
    }
}

/// A write's request id from its `Queued` error.
fn queued(r: udm_core::Result<udm_facade::Written>) -> String {
    let e = r.expect_err("queued, not committed");
    assert_eq!(e.kind(), ErrorKind::Queued, "{e}");
    assert!(!e.is_retryable(), "a queued write must not be retried by the caller");
    e.queued_request().expect("the request id").to_owned()
}

async fn data_of(c: &Collection, id: &str) -> Value {
    c.get_latest(id, ReadOpts::default()).await.unwrap().data
}

async fn ops_of(c: &Collection, id: &str) -> Vec<(Op, Value)> {
    let page = c.history(id, HistoryQuery { limit: 100, ..HistoryQuery::default() }).await.unwrap();
    let mut out = Vec::new();
    for v in page.items {
        let data = c.get_version(id, v.ov, ReadOpts::default()).await.unwrap().data;
        out.push((v.op, data));
    }
    out
}

#[tokio::test]
async fn an_outage_queues_writes_and_the_worker_applies_each_once() {
    let r = rig(10);
    let c = coll(&r.udm);
    r.outage();
    let mut requests = Vec::new();
    for i in 0..5 {
        requests.push(queued(c.create(json!({"i": i}), WriteOpts::id(&format!("o{i}"))).await));
    }
    assert_eq!(r.udm.admin().queue_stats().await.unwrap().pending, 5);
    match c.request_state(&requests[0]).await.unwrap() {
        RequestState::Pending { attempts, last_error, .. } => {
            // The original try counts; the worker may have tried once more meanwhile.
            assert!((1..=2).contains(&attempts), "{attempts}");
            assert!(last_error.unwrap().contains("unavailable"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.get_latest("o0", ReadOpts::default()).await.unwrap_err().kind(), ErrorKind::NotFound);

    r.faults.clear();
    r.drain(3).await;
    for (i, req) in requests.iter().enumerate() {
        let id = format!("o{i}");
        assert_eq!(data_of(&c, &id).await, json!({"i": i}));
        assert_eq!(ops_of(&c, &id).await.len(), 1, "{id} committed exactly once");
        match c.request_state(req).await.unwrap() {
            RequestState::Committed(w) => assert_eq!((w.id.as_str(), w.ov), (id.as_str(), Ov::new(1).unwrap())),
            other => panic!("{other:?}"),
        }
    }
    let stats = r.udm.admin().stats();
    assert_eq!((stats.queued, stats.queue_applied, stats.dead_lettered), (5, 5, 0));
    assert_eq!(r.stores.json.count_containing("/versions/"), 5, "one snapshot per version, nothing orphaned");
}

#[tokio::test]
async fn a_lost_acknowledgement_is_applied_once() {
    let r = rig(10);
    let c = coll(&r.udm);
    c.create(json!({"v": 1}), WriteOpts::id("x")).await.unwrap();
    r.faults.add(FaultRule::fail_after().port(Port::Meta).op("commit").next(1));
    let req = queued(c.update("x", json!({"v": 2}), None, WriteOpts::default()).await);
    assert_eq!(data_of(&c, "x").await, json!({"v": 2}), "the commit happened; only its acknowledgement was lost");
    r.drain(2).await;
    let ops = ops_of(&c, "x").await;
    assert_eq!(ops, vec![(Op::Create, json!({"v": 1})), (Op::Update, json!({"v": 2}))], "applied once");
    assert!(matches!(c.request_state(&req).await.unwrap(), RequestState::Committed(w) if w.ov.get() == 2));
    assert_eq!(r.udm.admin().stats().queue_applied, 1);
}

#[tokio::test]
async fn later_writes_to_an_object_queue_behind_its_queued_writes_in_order() {
    let r = rig(10);
    let c = coll(&r.udm);
    r.outage();
    queued(c.create(json!({"v": 1}), WriteOpts::id("o")).await);
    r.faults.clear();
    // The stores are back, but "o" has a queued write: these queue behind it untried.
    queued(c.update("o", json!({"v": 2}), None, WriteOpts::default()).await);
    queued(c.enrich("o", json!({"w": 3}), udm_facade::EnrichOpts::default()).await);
    // Other objects are not held.
    c.create(json!({"free": true}), WriteOpts::id("other")).await.unwrap();
    // (The worker may already be replaying them: the stores are back.)
    assert_eq!(r.udm.admin().stats().queued, 3);
    r.drain(5).await;
    let ops = ops_of(&c, "o").await;
    assert_eq!(
        ops,
        vec![(Op::Create, json!({"v": 1})), (Op::Update, json!({"v": 2})), (Op::Enrich, json!({"v": 2, "w": 3}))],
        "replayed in the order they were queued"
    );
    // Nothing is queued for "o" any more: writes go straight through again.
    let w = c.update("o", json!({"v": 4}), None, WriteOpts::default()).await.unwrap();
    assert_eq!(w.ov.get(), 4);
}

#[tokio::test]
async fn an_expected_ov_conflict_at_replay_is_a_dead_letter_with_its_reason() {
    let r = rig(10);
    let c = coll(&r.udm);
    c.create(json!({"v": 1}), WriteOpts::id("o")).await.unwrap();
    r.outage();
    let req = queued(c.update("o", json!({"mine": true}), Some(Ov::new(1).unwrap()), WriteOpts::default()).await);
    r.faults.clear();
    // Another process (no queue of its own) moves the object meanwhile.
    let other = build(&r.stores, &FaultLayer::seeded(1), &r.clock, Config::in_memory(), None);
    coll(&other).update("o", json!({"theirs": true}), None, WriteOpts::default()).await.unwrap();

    r.drain(2).await;
    let reason = match c.request_state(&req).await.unwrap() {
        RequestState::Dead { attempts, reason } => {
            // The original try, the conflicting replay, and perhaps a worker's try during
            // the outage.
            assert!((2..=3).contains(&attempts), "{attempts}");
            reason
        }
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("version conflict"), "{reason}");
    assert_eq!(data_of(&c, "o").await, json!({"theirs": true}), "the stale write was not applied");
    let dead = r.udm.admin().queue_list(QueueState::Dead, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(r.udm.admin().stats().dead_lettered, 1);
    // A dead letter does not hold its object.
    c.update("o", json!({"v": 3}), None, WriteOpts::default()).await.unwrap();

    // Retried, it is tried again and fails the same way; cancelled, it is gone.
    r.udm.admin().queue_retry(&dead[0].id).await.unwrap();
    r.drain(2).await;
    assert!(matches!(c.request_state(&req).await.unwrap(), RequestState::Dead { .. }));
    assert_eq!(r.udm.admin().stats().dead_lettered, 2, "the retried entry was tried again");
    r.udm.admin().queue_cancel(&dead[0].id).await.unwrap();
    assert_eq!(c.request_state(&req).await.unwrap(), RequestState::Unknown);
    assert_eq!(r.udm.admin().queue_cancel(&dead[0].id).await.unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn attempts_run_out_into_the_dead_letters_and_a_retry_commits() {
    let r = rig(3);
    let c = coll(&r.udm);
    r.outage();
    let req = queued(c.create(json!({"v": 1}), WriteOpts::id("o")).await);
    for _ in 0..2 {
        r.clock.advance(10_000);
        r.udm.admin().run_queue_once().await.unwrap();
    }
    match c.request_state(&req).await.unwrap() {
        RequestState::Dead { attempts, reason } => {
            assert_eq!(attempts, 3, "max_attempts, the original try included");
            assert!(reason.contains("unavailable"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let stats = r.udm.admin().queue_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 1));
    r.faults.clear();
    let id = r.udm.admin().queue_list(QueueState::Dead, None, 1).await.unwrap().remove(0).id;
    r.udm.admin().queue_retry(&id).await.unwrap();
    r.drain(2).await;
    assert_eq!(data_of(&c, "o").await, json!({"v": 1}));
    assert!(matches!(c.request_state(&req).await.unwrap(), RequestState::Committed(_)));
}

#[cfg(feature = "embedded")]
#[tokio::test]
async fn the_spool_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (s, faults, clock) = (stores(), FaultLayer::seeded(3), Arc::new(ManualClock::at(1_000_000)));
    let mut cfg = config(10);
    cfg.fallback_queue.spool = Some(dir.path().join("spool.redb").display().to_string());
    let udm = build(&s, &faults, &clock, cfg.clone(), None);
    let c = coll(&udm);
    c.create(json!({"n": "first"}), WriteOpts::id("o")).await.unwrap();
    faults.add(FaultRule::fail_before().port(Port::Meta).op("commit").always());
    let mut requests = Vec::new();
    for i in 0..3 {
        requests.push(queued(c.update("o", json!({"n": i}), None, WriteOpts::default()).await));
    }
    let report = udm.admin().shutdown().await.unwrap();
    assert_eq!(report.queue.pending, 3, "still queued when the process stops");
    assert_eq!(c.create(json!({}), WriteOpts::id("late")).await.unwrap_err().kind(), ErrorKind::Unavailable);
    drop((c, udm));

    // The next process, on the same spool, with the stores back.
    faults.clear();
    let udm = build(&s, &faults, &clock, cfg, None);
    let c = coll(&udm);
    // Kept by the spool (pending, or already replayed by the new worker).
    let state = c.request_state(&requests[2]).await.unwrap();
    assert!(matches!(state, RequestState::Pending { .. } | RequestState::Committed(_)), "{state:?}");
    for _ in 0..5 {
        clock.advance(10_000);
        udm.admin().run_queue_once().await.unwrap();
    }
    assert_eq!(udm.admin().queue_stats().await.unwrap().pending, 0);
    let ops: Vec<Value> = ops_of(&c, "o").await.into_iter().map(|(_, d)| d).collect();
    assert_eq!(
        ops,
        vec![json!({"n": "first"}), json!({"n": 0}), json!({"n": 1}), json!({"n": 2})],
        "in order, once each"
    );
}

/// Without the `embedded` feature there is no spool file: the config is refused, naming it.
#[cfg(not(feature = "embedded"))]
#[tokio::test]
async fn a_spool_file_needs_the_embedded_feature() {
    let (s, faults, clock) = (stores(), FaultLayer::seeded(3), Arc::new(ManualClock::at(0)));
    let mut cfg = config(3);
    cfg.fallback_queue.spool = Some("/nonexistent/spool.redb".into());
    let pair = pair(&s, &faults);
    let e = Udm::builder().pair(pair).config(cfg).clock(clock).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("embedded"), "{e}");
}

#[tokio::test]
async fn shutdown_waits_for_writes_in_flight() {
    let r = rig(10);
    let c = coll(&r.udm);
    r.faults.add(FaultRule::latency(Duration::from_millis(300)).port(Port::Meta).op("commit").always());
    let writer = {
        let c = c.clone();
        tokio::spawn(async move { c.create(json!({"slow": true}), WriteOpts::id("slow")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.udm.admin().shutdown().await.unwrap();
    assert!(writer.is_finished(), "shutdown returned before the write in flight");
    assert_eq!(writer.await.unwrap().unwrap().ov.get(), 1);
    let e = c.create(json!({}), WriteOpts::id("after")).await.unwrap_err();
    assert_eq!((e.kind(), e.is_retryable()), (ErrorKind::Unavailable, false));
}

#[tokio::test]
async fn an_enabled_queue_needs_a_spool_or_an_injected_store() {
    let (s, faults, clock) = (stores(), FaultLayer::seeded(1), Arc::new(ManualClock::at(0)));
    let pair = pair(&s, &faults);
    let e = Udm::builder().pair(pair).config(config(3)).clock(clock).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(e.problems()[0].path, "fallback_queue.spool", "{e:?}");
}

#[tokio::test]
async fn queue_operations_without_a_queue_are_unsupported() {
    let udm = Udm::in_memory().unwrap();
    let admin = udm.admin();
    assert_eq!(admin.queue_stats().await.unwrap_err().kind(), ErrorKind::Unsupported);
    assert_eq!(admin.queue_retry("x").await.unwrap_err().kind(), ErrorKind::Unsupported);
    assert_eq!(coll(&udm).request_state("never").await.unwrap(), RequestState::Unknown);
}
