//! Network faults between UDM and the real servers (SecantusDB + moto, started by `cargo xtask
//! services up`; fails, naming it, without): a loopback TCP fault proxy
//! ([`udm_testkit::proxy`]) sits in front of each server, and each trial puts one of them in
//! a mode — outage, stall (accepts, never answers), reset mid-request, slow link — while
//! writers write, with the fallback queue on (an embedded spool file). Then the network
//! heals, the queue drains, and the trial is checked: every acknowledged write (committed or
//! queued) is committed exactly once with its data, in its writer's order; no committed
//! version lacks its snapshot; no call outlived its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use udm_core::config::Config;
use udm_core::ports::{BlobStore, CounterStore, MetaStore};
use udm_core::query::HistoryQuery;
use udm_core::{ErrorKind, RouteContext};
use udm_facade::{Collection, Pair, ReadOpts, RequestState, Udm, WriteOpts};
use udm_mongo::{MongoConfig, MongoStore};
use udm_s3::{AwsS3Blobs, S3Settings};
use udm_testkit::proxy::{FaultProxy, Mode};

/// The write budget: every call must answer (committed, queued or refused) within it.
const BUDGET: Duration = Duration::from_secs(4);
/// Slack for the enqueue after a budget ran out (a local fsync'd write).
const SLACK: Duration = Duration::from_secs(1);
const WRITERS: usize = 3;
const WRITES_PER_WRITER: usize = 8;

fn address(url: &str) -> std::net::SocketAddr {
    let rest = url.split("://").nth(1).expect("a URL with a scheme");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?']).next().expect("host:port");
    host.parse().unwrap_or_else(|e| panic!("{host}: {e}"))
}

struct Net {
    mongo: FaultProxy,
    s3: FaultProxy,
    udm: Udm,
    _spool: tempfile::TempDir,
}

async fn net(run: &str) -> Net {
    let (mongo_uri, s3_endpoint) = (udm_testkit::services::mongo_uri(), udm_testkit::services::s3_endpoint());
    let mongo = FaultProxy::start(address(&mongo_uri)).await.unwrap();
    let s3 = FaultProxy::start(address(&s3_endpoint)).await.unwrap();
    let uri = format!("mongodb://127.0.0.1:{}/?directConnection=true&retryWrites=false", mongo.port());
    let cfg = MongoConfig::new(&uri, &format!("udm_network_{run}"))
        .with_connect_timeout(Duration::from_millis(500))
        .with_server_selection_timeout(Duration::from_millis(500))
        .with_call_timeout(Duration::from_secs(1))
        .with_commit_retry_budget(Duration::from_secs(1));
    let meta = Arc::new(MongoStore::connect(&cfg).await.expect("MongoDB through the proxy (cargo xtask services up?)"));
    let endpoint = format!("http://127.0.0.1:{}", s3.port());
    let settings = S3Settings::compatible(&endpoint, "us-east-1", "test", "testsecret")
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(1))
        .with_max_attempts(1);
    let (json_bucket, content_bucket) = (format!("net-{run}-json"), format!("net-{run}-content"));
    for b in [&json_bucket, &content_bucket] {
        AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket (is moto running? cargo xtask services up)");
    }
    let json: Arc<dyn BlobStore> = Arc::new(AwsS3Blobs::new(&settings, &json_bucket));
    let content: Arc<dyn BlobStore> = Arc::new(AwsS3Blobs::new(&settings, &content_bucket));
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone() as Arc<dyn MetaStore>,
        counters: meta as Arc<dyn CounterStore>,
        json,
        content,
        describe: "mongo + s3 through fault proxies".into(),
    };
    let spool = tempfile::tempdir().unwrap();
    let mut c = Config::in_memory();
    c.fallback_queue.enabled = true;
    c.fallback_queue.spool = Some(spool.path().join("spool.redb").display().to_string());
    c.fallback_queue.poll_interval_ms = 100;
    c.fallback_queue.retry.base_delay_ms = 50;
    c.fallback_queue.retry.max_delay_ms = 500;
    c.fallback_queue.retry.max_attempts = 1_000;
    c.deadlines.write_budget_ms = BUDGET.as_millis() as u64;
    let udm = Udm::builder().pair(pair).config(c).build().unwrap();
    Net { mongo, s3, udm, _spool: spool }
}

/// One writer's acknowledged writes: (object, request, data), in the order it issued them.
type Acked = Vec<(String, String, Value)>;

/// `WRITES_PER_WRITER` updates of one object per writer (created first, before the fault);
/// returns what was acknowledged and the longest call.
async fn write_through(c: &Collection, trial: &str, w: usize) -> (Acked, Duration) {
    let object = format!("{trial}-w{w}");
    let mut acked = Vec::new();
    let mut longest = Duration::ZERO;
    for i in 0..WRITES_PER_WRITER {
        let request = format!("{trial}-w{w}-{i}");
        let data = json!({"trial": trial, "w": w, "i": i});
        let started = Instant::now();
        let r = c.update(&object, data.clone(), None, WriteOpts::default().request_id(&request)).await;
        longest = longest.max(started.elapsed());
        match r {
            Ok(_) => acked.push((object.clone(), request, data)),
            Err(e) if e.kind() == ErrorKind::Queued => acked.push((object.clone(), request, data)),
            Err(e) => panic!("{trial}: write {request} was neither committed nor queued: {e}"),
        }
    }
    (acked, longest)
}

/// Runs one trial: the proxy in `mode` while the writers write, then healed and checked.
async fn trial(n: &Net, c: &Collection, name: &str, proxy: &FaultProxy, mode: Mode) -> (usize, Duration) {
    for w in 0..WRITERS {
        c.create(json!({"trial": name, "w": w, "i": "created"}), WriteOpts::id(&format!("{name}-w{w}"))).await.unwrap();
    }
    proxy.set(mode);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (c, name) = (c.clone(), name.to_owned());
            tokio::spawn(async move { write_through(&c, &name, w).await })
        })
        .collect();
    let mut acked = Vec::new();
    let mut longest = Duration::ZERO;
    for w in writers {
        let (a, l) = w.await.unwrap();
        acked.push(a);
        longest = longest.max(l);
    }
    assert!(longest <= BUDGET + SLACK, "{name}: a call took {longest:?} (budget {BUDGET:?})");
    proxy.set(Mode::Pass);

    let started = Instant::now();
    while n.udm.admin().queue_stats().await.unwrap().pending > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "{name}: the queue did not drain");
        n.udm.admin().run_queue_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut writes = 0;
    for (w, acked) in acked.iter().enumerate() {
        let object = format!("{name}-w{w}");
        let page = c.history(&object, HistoryQuery { limit: 100, ..HistoryQuery::default() }).await.unwrap();
        let ovs: Vec<u64> = page.items.iter().map(|v| v.ov.get()).collect();
        assert_eq!(ovs, (1..=page.items.len() as u64).collect::<Vec<_>>(), "{name}: {object}'s OVs");
        // After the create: exactly the acknowledged writes, once each, in order.
        let got: Vec<String> = page.items[1..].iter().map(|v| v.provenance.request_id.to_string()).collect();
        let want: Vec<String> = acked.iter().map(|(_, r, _)| r.clone()).collect();
        assert_eq!(got, want, "{name}: {object}'s versions");
        for (v, (_, request, data)) in page.items[1..].iter().zip(acked) {
            let read = c.get_version(&object, v.ov, ReadOpts::default()).await.unwrap();
            assert_eq!(&read.data, data, "{name}: {request}'s data");
            assert!(matches!(c.request_state(request).await.unwrap(), RequestState::Committed(_)), "{name}: {request}");
        }
        writes += acked.len();
    }
    (writes, longest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_network_faults_between_udm_and_the_servers() {
    let run = format!("{}", std::process::id());
    let n = net(&run).await;
    let c = n.udm.with(RouteContext::new("net", "suite", &format!("r{run}")).unwrap());
    let trials: [(&str, &FaultProxy, Mode); 6] = [
        ("mongo-outage", &n.mongo, Mode::Outage),
        ("mongo-stall", &n.mongo, Mode::Stall),
        ("mongo-reset", &n.mongo, Mode::ResetMidRequest),
        ("mongo-slow", &n.mongo, Mode::Slow(Duration::from_millis(30))),
        ("s3-outage", &n.s3, Mode::Outage),
        ("s3-stall", &n.s3, Mode::Stall),
    ];
    let mut total = 0;
    for (name, proxy, mode) in trials {
        let before = n.udm.admin().stats();
        let (writes, longest) = trial(&n, &c, name, proxy, mode).await;
        let after = n.udm.admin().stats();
        eprintln!(
            "{name}: {writes} acknowledged writes, {} queued, {} applied from the queue, longest call {longest:?}",
            after.queued - before.queued,
            after.queue_applied - before.queue_applied,
        );
        total += writes;
    }
    assert_eq!(total, 6 * WRITERS * WRITES_PER_WRITER, "every write was acknowledged");
    let stats = n.udm.admin().stats();
    assert!(stats.queued > 0, "the faults must have queued writes: {stats:?}");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    n.udm.admin().shutdown().await.unwrap();
}
