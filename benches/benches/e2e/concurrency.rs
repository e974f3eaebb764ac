//! Concurrency section of the end-to-end bench (issue P4): 1,000 creates of a small document
//! into one collection issued by 1, 16 and 64 concurrent tasks (wall-clock throughput, p50/p99
//! per create, failures, mean group-commit batch size), and the batch API — `create_many` of
//! 1,000 items — against the raw calls it needs in the same run (one MongoDB `insert_many` of
//! 1,000 documents plus 1,000 S3 puts, 64 in flight). Issue 9's rows: the same creates with
//! the write optimizer on (a 2 ms batch window), and the fallback queue's cost on the happy
//! path (sequential creates with the queue enabled vs without, interleaved rounds, same run).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use mongodb::bson::{Document, doc};
use serde_json::{Map, Value, json};
use udm_facade::{Collection, Udm, WriteOpts};

use super::{Stats, body};

const CREATES: usize = 1_000;
const TASKS: [usize; 3] = [1, 16, 64];
const WARMUP_CREATES: usize = 128;
const RAW_IN_FLIGHT: usize = 64;
const RAW_PUT_BYTES: usize = 600;
const DB: &str = "udm_bench_conc";
const RAW_DB: &str = "udm_bench_conc_raw";
const JSON_BUCKET: &str = "udm-bench-conc-json";
const CONTENT_BUCKET: &str = "udm-bench-conc-content";
const RAW_BUCKET: &str = "udm-bench-conc-raw";
/// The optimizer's window in the "optimizer on" rows.
const WINDOW_MS: u64 = 2;
/// Queue-cost rounds (each: this many sequential creates with the queue on, then off).
const QUEUE_ROUNDS: usize = 10;
const QUEUE_CREATES: usize = 60;

/// Document `i`: about 200 bytes of JSON.
fn item(i: usize) -> Value {
    json!({"n": i, "name": format!("item {i}"), "tags": ["a", "b"], "p": body(150)})
}

/// The same document for the raw `insert_many`.
fn raw_item(i: usize) -> Document {
    doc! {"_id": id(i), "n": i as i64, "name": format!("item {i}"), "tags": ["a", "b"], "p": body(150)}
}

fn id(i: usize) -> String {
    format!("o{i:04}")
}

/// The clock's nanoseconds (a suffix that makes names unique per run).
fn nanos() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

/// A fresh collection: tenant named after the process, the run and the clock's nanoseconds.
fn fresh(udm: &Udm, run: &str) -> Collection {
    let tenant = format!("conc{}-{run}-{}", std::process::id(), nanos());
    udm.with(udm_core::RouteContext::new(&tenant, "db", "docs").expect("ctx"))
}

async fn connect(uri: &str, endpoint: &str) -> Udm {
    connect_with(uri, endpoint, |_| {}).await
}

/// [`connect`] with a config change (the optimizer, the queue).
async fn connect_with(uri: &str, endpoint: &str, change: impl FnOnce(&mut udm_core::config::Config)) -> Udm {
    let pair = crate::bench_pair(uri, endpoint, DB, JSON_BUCKET, CONTENT_BUCKET).await;
    // Default storage: the small documents stay inline in the head as well.
    let mut config = udm_core::config::Config::single(pair);
    change(&mut config);
    Udm::from_config(config).await.expect("udm")
}

/// Sequential creates with the fallback queue on and off, in interleaved rounds: the p50s.
async fn queue_cost(uri: &str, endpoint: &str, plain: &Udm) -> (Stats, Stats) {
    let spool = std::env::temp_dir().join(format!("udm-bench-spool-{}-{}.redb", std::process::id(), nanos()));
    let queued = connect_with(uri, endpoint, |c| {
        c.fallback_queue.enabled = true;
        c.fallback_queue.spool = Some(spool.display().to_string());
    })
    .await;
    let warm = creates(&queued, &fresh(&queued, "q-warm"), 1, QUEUE_CREATES).await;
    assert_eq!(warm.failed, 0, "queue-cost warm-up failed: {:?}", warm.first_error);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..QUEUE_ROUNDS {
        // Alternate which goes first, so drift in the servers does not favour one.
        let mut order = [(&queued, &mut on), (plain, &mut off)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (udm, out) in order {
            let r = creates(udm, &fresh(udm, &format!("q{round}")), 1, QUEUE_CREATES).await;
            assert_eq!(r.failed, 0, "queue-cost creates failed: {:?}", r.first_error);
            out.extend(r.latency.samples);
        }
    }
    let _ = queued.admin().shutdown().await;
    drop(queued);
    let _ = std::fs::remove_file(&spool);
    (Stats { name: "create, queue on", samples: on }, Stats { name: "create, queue off", samples: off })
}

/// One measured run: what happened and the group committer's work during it.
struct Run {
    wall: Duration,
    latency: Stats,
    failed: usize,
    first_error: Option<String>,
    batches: u64,
    commits: u64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        CREATES as f64 / self.wall.as_secs_f64()
    }

    fn mean_batch(&self) -> f64 {
        self.commits as f64 / self.batches as f64
    }

    fn json(&self) -> Value {
        let mut j = json!({"wall_s": self.wall.as_secs_f64(), "creates_per_sec": self.per_sec(), "failed": self.failed,
            "first_error": self.first_error, "commit_batches": self.batches, "batched_commits": self.commits,
            "mean_batch": self.mean_batch()});
        if !self.latency.samples.is_empty() {
            j["p50_us"] = json!(self.latency.pct(0.5));
            j["p99_us"] = json!(self.latency.pct(0.99));
        }
        j
    }
}

/// `n` creates into `c` by `tasks` tasks (task `t` creates items `t`, `t + tasks`, …).
async fn creates(udm: &Udm, c: &Collection, tasks: usize, n: usize) -> Run {
    let before = udm.admin().stats();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let c = c.clone();
        let work: Vec<_> = (task..n).step_by(tasks).map(|i| (item(i), WriteOpts::id(&id(i)))).collect();
        set.spawn(async move {
            let mut out = Vec::with_capacity(work.len());
            for (data, opts) in work {
                let t = Instant::now();
                let r = c.create(data, opts).await;
                out.push((t.elapsed(), r.err().map(|e| e.to_string())));
            }
            out
        });
    }
    let mut samples = Vec::with_capacity(n);
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        for (d, e) in r.expect("create task") {
            samples.push(d);
            errors.extend(e);
        }
    }
    let wall = t.elapsed();
    let after = udm.admin().stats();
    Run {
        wall,
        latency: Stats { name: "create", samples },
        failed: errors.len(),
        first_error: errors.into_iter().next(),
        batches: after.commit_batches - before.commit_batches,
        commits: after.batched_commits - before.batched_commits,
    }
}

/// `n` puts of `bytes`-byte bodies, `RAW_IN_FLIGHT` at a time; the wall time.
async fn s3_puts(c: &aws_sdk_s3::Client, prefix: &str, n: usize, bytes: usize) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let data = body(bytes).into_bytes();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..RAW_IN_FLIGHT {
        let (c, next, data, prefix) = (c.clone(), next.clone(), data.clone(), prefix.to_owned());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let put = c.put_object().bucket(RAW_BUCKET).key(format!("{prefix}/{i}"));
                put.body(ByteStream::from(data.clone())).send().await.expect("raw put");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("put task");
    }
    t.elapsed()
}

/// The raw baseline: (`insert_many` of 1,000 documents, 1,000 S3 puts 64 in flight).
async fn raw(uri: &str, endpoint: &str) -> (Duration, Duration) {
    let client = mongodb::Client::with_uri_str(uri).await.expect("mongo client");
    let db = client.database(RAW_DB);
    db.drop().await.expect("drop raw db");
    let scratch = db.collection::<Document>("scratch");
    // Create the collection (and the connection) outside the timing.
    scratch.insert_one(doc! {"_id": "init"}).await.expect("init");
    let docs: Vec<Document> = (0..CREATES).map(raw_item).collect();
    let t = Instant::now();
    scratch.insert_many(docs).await.expect("insert_many");
    let mongo = t.elapsed();
    db.drop().await.expect("drop raw db");

    let conf = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("test", "testsecret", None, None, "bench"))
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    let _ = s3.create_bucket().bucket(RAW_BUCKET).send().await;
    let run = format!("{}-{}", std::process::id(), nanos());
    // Warm-up: open the connections first, as the UDM runs did.
    s3_puts(&s3, &format!("warm{run}"), RAW_IN_FLIGHT, RAW_PUT_BYTES).await;
    let puts = s3_puts(&s3, &format!("run{run}"), CREATES, RAW_PUT_BYTES).await;
    (mongo, puts)
}

fn row(label: &str, r: &Run) {
    let failed = match &r.first_error {
        Some(e) => format!("{} (first: {e})", r.failed),
        None => r.failed.to_string(),
    };
    println!(
        "| {label:<28} | {:>9.1} | {:>9.0} | {:>8.0} | {:>8.0} | {:>6} | {:>7} | {:>10.1} |",
        r.wall.as_secs_f64() * 1e3,
        r.per_sec(),
        r.latency.pct(0.5),
        r.latency.pct(0.99),
        failed,
        r.batches,
        r.mean_batch()
    );
}

/// Runs the section, prints its tables and returns its figures for the JSON report.
pub(crate) async fn run(uri: &str, endpoint: &str) -> Map<String, Value> {
    let raw_client = mongodb::Client::with_uri_str(uri).await.expect("mongo client");
    raw_client.database(DB).drop().await.expect("drop bench db");
    let udm = connect(uri, endpoint).await;
    let mut report = Map::new();

    // Warm-up (unmeasured): connections and pools open, the committer's lane exists.
    let warm = creates(&udm, &fresh(&udm, "warm"), 64, WARMUP_CREATES).await;
    assert_eq!(warm.failed, 0, "warm-up creates failed: {:?}", warm.first_error);

    let optimized = connect_with(uri, endpoint, |c| {
        let w = &mut c.write_optimization;
        (w.enabled, w.batch_window_ms, w.max_batch, w.max_concurrency) = (true, WINDOW_MS, 64, 64);
    })
    .await;
    let warm = creates(&optimized, &fresh(&optimized, "warm-opt"), 64, WARMUP_CREATES).await;
    assert_eq!(warm.failed, 0, "warm-up creates failed: {:?}", warm.first_error);
    let mut runs = Vec::new();
    let mut opt_runs = Vec::new();
    for tasks in TASKS {
        let r = creates(&udm, &fresh(&udm, &format!("t{tasks}")), tasks, CREATES).await;
        report.insert(format!("concurrency {CREATES} creates {tasks} tasks"), r.json());
        runs.push((tasks, r));
        let r = creates(&optimized, &fresh(&optimized, &format!("o{tasks}")), tasks, CREATES).await;
        report.insert(format!("concurrency {CREATES} creates {tasks} tasks, optimizer on"), r.json());
        opt_runs.push((tasks, r));
    }
    drop(optimized);
    let (queue_on, queue_off) = queue_cost(uri, endpoint, &udm).await;

    // The batch API, then the raw calls it needs.
    let c = fresh(&udm, "many");
    let items: Vec<_> = (0..CREATES).map(|i| (item(i), WriteOpts::id(&id(i)))).collect();
    let before = udm.admin().stats();
    let t = Instant::now();
    let results = c.create_many(items).await;
    let wall = t.elapsed();
    let after = udm.admin().stats();
    let errors: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
    let many = Run {
        wall,
        latency: Stats { name: "create_many", samples: Vec::new() },
        failed: errors.len(),
        first_error: errors.into_iter().next(),
        batches: after.commit_batches - before.commit_batches,
        commits: after.batched_commits - before.batched_commits,
    };
    let (mongo, puts) = raw(uri, endpoint).await;
    let raw_total = mongo + puts;

    let doc_bytes = serde_json::to_vec(&item(0)).map_or(0, |v| v.len());
    println!("\nconcurrency: {CREATES} creates of a {doc_bytes} B document into one fresh collection per row");
    println!(
        "| {:<28} | {:>9} | {:>9} | {:>8} | {:>8} | {:>6} | {:>7} | {:>10} |",
        "tasks", "wall ms", "creates/s", "p50 µs", "p99 µs", "failed", "txns", "mean batch"
    );
    println!("|{:-<30}|{:->11}|{:->11}|{:->10}|{:->10}|{:->8}|{:->9}|{:->12}|", "", ":", ":", ":", ":", ":", ":", ":");
    for (tasks, r) in &runs {
        row(&format!("{tasks} task(s), {} creates each", CREATES.div_ceil(*tasks)), r);
    }
    for (tasks, r) in &opt_runs {
        row(&format!("{tasks} task(s), optimizer on"), r);
    }
    let per_sec =
        |runs: &[(usize, Run)], n: usize| runs.iter().find(|(t, _)| *t == n).map_or(f64::NAN, |(_, r)| r.per_sec());
    let scale = per_sec(&runs, 64) / per_sec(&runs, 1);
    println!("throughput 64 tasks / 1 task = {scale:.2}x (target ≥ 4x)");
    report.insert("ratio concurrency throughput 64 tasks / 1 task".into(), json!(scale));
    let gain = per_sec(&opt_runs, 64) / per_sec(&runs, 64);
    println!("throughput at 64 tasks, optimizer on ({WINDOW_MS} ms window) / off = {gain:.2}x (target > 1x)");
    report.insert("ratio concurrency 64 tasks optimizer on / off".into(), json!(gain));
    let cost = queue_on.pct(0.5) / queue_off.pct(0.5);
    println!(
        "fallback queue on the happy path: create p50 {:.0} µs with the queue, {:.0} µs without = {cost:.3}x \
         (target ≤ 1.05x; {QUEUE_ROUNDS} interleaved rounds of {QUEUE_CREATES} sequential creates)",
        queue_on.pct(0.5),
        queue_off.pct(0.5)
    );
    report.insert("ratio create p50 queue on / off".into(), json!(cost));

    let ratio = many.wall.as_secs_f64() / raw_total.as_secs_f64();
    println!("\nbatch API: create_many of {CREATES} items vs the raw calls it needs (same run)");
    println!("| {:<52} | {:>9} | {:>9} | {:>6} | {:>10} |", "operation", "wall ms", "items/s", "failed", "mean batch");
    println!("|{:-<54}|{:->11}|{:->11}|{:->8}|{:->12}|", "", ":", ":", ":", ":");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let failed = match &many.first_error {
        Some(e) => format!("{} (first: {e})", many.failed),
        None => many.failed.to_string(),
    };
    println!(
        "| {:<52} | {:>9.1} | {:>9.0} | {failed:>6} | {:>10.1} |",
        "udm create_many",
        ms(many.wall),
        many.per_sec(),
        many.mean_batch()
    );
    for (label, d) in [
        (format!("raw mongo insert_many of {CREATES} docs"), mongo),
        (format!("raw s3 {CREATES} puts of {RAW_PUT_BYTES} B, {RAW_IN_FLIGHT} in flight"), puts),
        ("raw total (insert_many + puts)".to_owned(), raw_total),
    ] {
        println!(
            "| {label:<52} | {:>9.1} | {:>9.0} | {:>6} | {:>10} |",
            ms(d),
            CREATES as f64 / d.as_secs_f64(),
            "",
            ""
        );
    }
    println!("create_many / raw total = {ratio:.2}x (target ≤ 3x)");
    report.insert(format!("concurrency create_many {CREATES}"), many.json());
    report.insert(
        format!("concurrency raw baseline {CREATES}"),
        json!({"insert_many_ms": ms(mongo), "s3_puts_ms": ms(puts), "total_ms": ms(raw_total),
            "s3_put_bytes": RAW_PUT_BYTES, "s3_in_flight": RAW_IN_FLIGHT}),
    );
    report.insert("ratio create_many / raw insert_many + s3 puts".into(), json!(ratio));
    drop(c);
    drop(udm);
    let _ = raw_client.database(DB).drop().await;
    report
}
