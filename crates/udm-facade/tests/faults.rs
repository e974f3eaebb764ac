//! The fault suite on the real servers (SecantusDB + moto, started by `cargo xtask services
//! up`; fails, naming it, without): 1,000 seeded writes by 8 concurrent writers through the
//! fault layer wrapped around the real adapters (each writer owns its objects) — failed commits, commits applied whose
//! acknowledgement is lost, failed and "applied but unacknowledged" snapshot puts, latency —
//! with the fallback queue on (an embedded spool file). Then the faults stop, the queue drains,
//! and every trial is checked:
//! - every acknowledged write (committed, or queued) is committed exactly once, with its data;
//! - no committed version lacks its snapshot (each is read and verified);
//! - each object's OVs are contiguous from 1, and its versions are its writer's acknowledged
//!   writes in the order they were issued (queued writes never overtake each other or later
//!   writes);
//! - the counters equal a recount from the versions;
//! - every dead letter carries its error, and a write that failed outright left nothing;
//! - no call took longer than its write budget (plus the queue's own enqueue).
//!
//! `UDM_FAULT_SEED` picks the seed (default: from the clock); it is printed first, and in every
//! assertion message, so a failure can be replayed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use udm_core::config::Config;
use udm_core::counters::{CREATED, DELETED, LIVE, UPDATED};
use udm_core::ports::{BlobStore, CounterStore, Layer, MetaStore, QueueState};
use udm_core::query::HistoryQuery;
use udm_core::retry::SplitMix64;
use udm_core::{ErrorKind, Op, RouteContext, VersionRecord};
use udm_facade::{Collection, ContentMode, EnrichOpts, Pair, ReadOpts, RequestState, Udm, WriteOpts};
use udm_mongo::{MongoConfig, MongoStore};
use udm_s3::{AwsS3Blobs, S3Settings};
use udm_testkit::faults::{FaultLayer, FaultRule, Port};

const WRITES: u64 = 1_000;
const WRITERS: u64 = 8;
const OBJECTS_PER_WRITER: usize = 25;
const BUDGET: Duration = Duration::from_secs(10);

/// What a writer asked for and what it was told.
#[derive(Debug, Clone)]
struct Asked {
    request: String,
    object: String,
    op: Op,
    /// Replace: the data; enrich: the patch.
    payload: Value,
    told: Told,
}

#[derive(Debug, Clone, PartialEq)]
enum Told {
    Committed,
    Queued,
    /// A non-retryable answer (e.g. not found): nothing may have been written.
    Refused(ErrorKind),
    /// A retryable failure the queue could not take (must not happen with the queue on).
    Failed(String),
}

fn seed() -> u64 {
    std::env::var("UDM_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64
    })
}

async fn pair(run: &str, faults: &FaultLayer) -> Pair {
    let uri = udm_testkit::services::mongo_uri();
    let endpoint = udm_testkit::services::s3_endpoint();
    let cfg = MongoConfig::new(&uri, &format!("udm_faults_{run}")).with_call_timeout(Duration::from_secs(5));
    let meta = Arc::new(MongoStore::connect(&cfg).await.expect("MongoDB (is it running? cargo xtask services up)"));
    let settings = S3Settings::compatible(&endpoint, "us-east-1", "test", "testsecret")
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(5));
    let (json_bucket, content_bucket) = (format!("faults-{run}-json"), format!("faults-{run}-content"));
    for b in [&json_bucket, &content_bucket] {
        AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket (is moto running? cargo xtask services up)");
    }
    let json: Arc<dyn BlobStore> = Arc::new(AwsS3Blobs::new(&settings, &json_bucket));
    let content: Arc<dyn BlobStore> = Arc::new(AwsS3Blobs::new(&settings, &content_bucket));
    Pair {
        name: "p".into(),
        meta: Arc::new(faults.layer(meta.clone() as Arc<dyn MetaStore>)),
        counters: meta as Arc<dyn CounterStore>,
        json: Arc::new(faults.layer(json)),
        content: Arc::new(faults.layer(content)),
        describe: "mongo + s3 under faults".into(),
    }
}

fn arm(faults: &FaultLayer) {
    // A lone commit is "commit", a group "commit_many": fail both before and after they apply.
    for op in ["commit", "commit_many"] {
        faults.add(FaultRule::fail_before().port(Port::Meta).op(op).probability(0.03));
        faults.add(FaultRule::fail_after().port(Port::Meta).op(op).probability(0.02));
    }
    faults.add(FaultRule::fail_before().port(Port::Blob).op("put").probability(0.015));
    faults.add(FaultRule::fail_after().port(Port::Blob).op("put").probability(0.01));
    faults.add(FaultRule::latency(Duration::from_millis(5)).port(Port::Meta).op("head").probability(0.1));
}

/// One writer: `WRITES / WRITERS` random writes over objects it alone writes (so the order
/// it issued them in is the order they must commit in), 25 of them.
async fn writer(c: Collection, seed: u64, w: u64, longest: Arc<AtomicU64>) -> Vec<Asked> {
    let mut rng = SplitMix64::new(seed ^ (w + 1).wrapping_mul(0x9E37_79B9));
    // Per object: created (committed or queued), deleted.
    let mut state = [(false, false); OBJECTS_PER_WRITER];
    let mut out = Vec::new();
    for i in 0..WRITES / WRITERS {
        let k = (rng.next_u64() % OBJECTS_PER_WRITER as u64) as usize;
        let object = format!("w{w}-o{k:02}");
        let request = format!("s{seed}-w{w}-{i}");
        let opts = WriteOpts::default().request_id(&request).actor("faults");
        // Every fourth write carries a base64 prop: externalized as a content object, so the
        // content put is a saga step the faults hit too.
        let avatar = if i % 4 == 0 { json!({"data": base64(&request)}) } else { Value::Null };
        let (op, payload) = match (state[k], rng.next_u64() % 20) {
            ((false, _), _) => (Op::Create, json!({"by": request, "n": i, "avatar": avatar})),
            // A deleted object only ever gets (refused) updates.
            ((true, true), _) | (_, 0..=10) => (Op::Update, json!({"by": request, "n": i, "avatar": avatar})),
            (_, 11..=18) => (Op::Enrich, json!({"seen": {request.clone(): true}})),
            _ => (Op::Delete, Value::Null),
        };
        let started = Instant::now();
        let answer = match op {
            Op::Create => c.create(payload.clone(), WriteOpts { id: Some(object.clone()), ..opts }).await,
            Op::Update => c.update(&object, payload.clone(), None, opts).await,
            Op::Enrich => {
                let e = EnrichOpts { write: opts, ..EnrichOpts::default() };
                c.enrich(&object, payload.clone(), e).await
            }
            _ => c.delete(&object, None, opts).await,
        };
        longest.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let told = match answer {
            Ok(_) => Told::Committed,
            Err(e) if e.kind() == ErrorKind::Queued => Told::Queued,
            Err(e) if e.is_retryable() => Told::Failed(e.to_string()),
            Err(e) => Told::Refused(e.kind()),
        };
        if matches!(told, Told::Committed | Told::Queued) {
            match op {
                Op::Create => state[k].0 = true,
                Op::Delete => state[k].1 = true,
                _ => {}
            }
        }
        out.push(Asked { request, object, op, payload, told });
    }
    out
}

/// Standard base64 of `s` (no padding concerns: the test only needs valid base64).
fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for j in 0..4 {
            if j <= chunk.len() {
                out.push(A[((n >> (18 - 6 * j)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn history(c: &Collection, id: &str) -> Vec<VersionRecord> {
    let mut q = HistoryQuery { limit: 1000, ..HistoryQuery::default() };
    let mut out = Vec::new();
    loop {
        let page = match c.history(id, q).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return out,
            other => other.expect("history"),
        };
        out.extend(page.items);
        match page.next {
            Some(n) => q.after = Some(udm_core::query::parse_history_cursor(&n).unwrap()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_injected_faults() {
    let seed = seed();
    eprintln!("fault suite seed {seed} (UDM_FAULT_SEED={seed} replays it)");
    let run = format!("{}", seed % 1_000_000_007);
    let faults = FaultLayer::seeded(seed);
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = Config::in_memory();
    cfg.fallback_queue.enabled = true;
    cfg.fallback_queue.spool = Some(spool.path().join("spool.redb").display().to_string());
    cfg.fallback_queue.poll_interval_ms = 50;
    cfg.fallback_queue.retry.base_delay_ms = 20;
    cfg.fallback_queue.retry.max_delay_ms = 200;
    cfg.fallback_queue.retry.max_attempts = 1_000;
    cfg.deadlines.write_budget_ms = BUDGET.as_millis() as u64;
    cfg.collections.push(udm_core::config::CollectionConfig {
        tenant: Some("faults".into()),
        db: "suite".into(),
        collection: format!("r{run}"),
        indexed_props: Vec::new(),
        base64_props: vec![udm_core::metamap::Base64Prop {
            path: "avatar.data".into(),
            content_type: "application/octet-stream".into(),
        }],
        counter_rules: Vec::new(),
    });
    let udm = Udm::builder().pair(pair(&run, &faults).await).config(cfg).build().unwrap();
    let c = udm.with(RouteContext::new("faults", "suite", &format!("r{run}")).unwrap());

    arm(&faults);
    let longest = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(c.clone(), seed, w, longest.clone()))).collect();
    let mut asked = Vec::new();
    for w in writers {
        asked.extend(w.await.unwrap());
    }
    let injected = faults.stats().total();
    faults.clear();

    // Drain: the worker replays; bounded.
    let started = Instant::now();
    while udm.admin().queue_stats().await.unwrap().pending > 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "seed {seed}: the queue did not drain");
        udm.admin().run_queue_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let count = |t: &dyn Fn(&Told) -> bool| asked.iter().filter(|a| t(&a.told)).count();
    let (committed, queued) = (count(&|t| *t == Told::Committed), count(&|t| *t == Told::Queued));
    let refused = count(&|t| matches!(t, Told::Refused(_)));
    let failed: Vec<_> = asked.iter().filter(|a| matches!(a.told, Told::Failed(_))).collect();
    assert!(failed.is_empty(), "seed {seed}: retryable failures the queue did not take: {failed:?}");

    // Every object's history, by request id.
    let mut by_request: BTreeMap<String, (String, VersionRecord)> = BTreeMap::new();
    let mut versions = 0u64;
    let mut derived: BTreeMap<&str, i64> = BTreeMap::new();
    let objects = (0..WRITERS).flat_map(|w| (0..OBJECTS_PER_WRITER).map(move |k| format!("w{w}-o{k:02}")));
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in objects {
        let h = history(&c, &id).await;
        order.insert(id.clone(), h.iter().map(|v| v.provenance.request_id.to_string()).collect());
        let ovs: Vec<u64> = h.iter().map(|v| v.ov.get()).collect();
        assert_eq!(ovs, (1..=h.len() as u64).collect::<Vec<_>>(), "seed {seed}: {id}'s OVs are not contiguous");
        let mut deleted = false;
        for v in h {
            // Every committed version has its snapshot, and it verifies.
            c.get_version(&id, v.ov, ReadOpts { include_deleted: true, ..ReadOpts::default() })
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {id} v{} has no readable snapshot: {e}", v.ov));
            let base = match v.op {
                Op::Create => CREATED,
                Op::Update | Op::Enrich => UPDATED,
                Op::Delete => DELETED,
                Op::Restore => "restored",
            };
            *derived.entry(base).or_default() += 1;
            let now_deleted = v.op == Op::Delete;
            let live = match (v.op, deleted, now_deleted) {
                (Op::Create, _, _) => 1,
                (_, false, true) => -1,
                (_, true, false) => 1,
                _ => 0,
            };
            *derived.entry(LIVE).or_default() += live;
            deleted = now_deleted;
            let prev = by_request.insert(v.provenance.request_id.to_string(), (id.clone(), v));
            assert!(prev.is_none(), "seed {seed}: a request id committed twice");
            versions += 1;
        }
    }

    let mut dead = 0;
    for a in &asked {
        let found = by_request.get(&a.request);
        match &a.told {
            Told::Committed | Told::Queued => match c.request_state(&a.request).await.unwrap() {
                RequestState::Committed(w) => {
                    let (id, v) = found.unwrap_or_else(|| panic!("seed {seed}: {a:?} not in {}'s history", a.object));
                    assert_eq!((id, v.ov), (&a.object, w.ov), "seed {seed}: {a:?}");
                    assert_eq!(v.op, a.op, "seed {seed}: {a:?}");
                    let data = c
                        .get_version(
                            id,
                            v.ov,
                            ReadOpts { include_deleted: true, content: ContentMode::Inline, ..ReadOpts::default() },
                        )
                        .await
                        .unwrap()
                        .data;
                    match a.op {
                        Op::Create | Op::Update => assert_eq!(data, a.payload, "seed {seed}: {a:?}"),
                        Op::Enrich => {
                            let (k, _) = a.payload["seen"].as_object().unwrap().iter().next().unwrap();
                            assert_eq!(data["seen"][k], json!(true), "seed {seed}: {a:?}");
                        }
                        _ => {}
                    }
                }
                RequestState::Dead { reason, .. } => {
                    assert!(!reason.is_empty(), "seed {seed}: a dead letter without its error: {a:?}");
                    assert!(found.is_none(), "seed {seed}: dead but committed: {a:?}");
                    dead += 1;
                }
                other => panic!("seed {seed}: acknowledged write {a:?} ended {other:?}"),
            },
            Told::Refused(_) => assert!(found.is_none(), "seed {seed}: a refused write committed: {a:?}"),
            Told::Failed(_) => {}
        }
    }
    // Each object's versions are its writer's committed and queued writes, in the order it
    // issued them (dead letters and refusals excepted).
    for (id, got) in &order {
        let want: Vec<String> = asked
            .iter()
            .filter(|a| &a.object == id && matches!(a.told, Told::Committed | Told::Queued))
            .filter(|a| by_request.contains_key(&a.request))
            .map(|a| a.request.clone())
            .collect();
        assert_eq!(got, &want, "seed {seed}: {id}'s versions are not in the order its writer issued them");
    }
    let totals = udm.counters().totals(c.context()).await.unwrap();
    for (name, want) in &derived {
        assert_eq!(totals.get(*name).copied().unwrap_or(0), *want, "seed {seed}: counter {name}");
    }
    assert_eq!(udm.admin().recount(c.context()).await.unwrap(), totals, "seed {seed}: the counters equal a recount");
    let dead_listed = udm.admin().queue_list(QueueState::Dead, None, 10_000).await.unwrap();
    assert!(dead_listed.iter().all(|e| e.last_error.is_some()), "seed {seed}: dead letters carry their error");
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for e in &dead_listed {
        let kind = e.last_error.as_deref().unwrap_or("").split(':').next().unwrap_or("").to_owned();
        *why.entry(kind).or_default() += 1;
    }
    let longest = Duration::from_millis(longest.load(Ordering::Relaxed));
    assert!(longest <= BUDGET + Duration::from_secs(2), "seed {seed}: a call took {longest:?}");
    let stats = udm.admin().stats();
    eprintln!(
        "seed {seed}: {} writes, {injected} faults injected: {committed} committed, {queued} queued \
         ({} replayed from the queue), {refused} refused (not found, conflicts), {dead} dead-lettered, \
         0 lost, 0 duplicated; {versions} versions; longest call {longest:?}; dead letters by error: {why:?}",
        asked.len(),
        stats.queue_applied,
    );
    assert!(queued > 0 && injected > 0, "seed {seed}: the faults must have bitten");
    udm.admin().shutdown().await.unwrap();
}
