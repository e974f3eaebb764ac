//! Shadow section of the end-to-end bench (the S3-shadow issue), on the real servers:
//!
//! 1. **Rebuild throughput**: `VERSIONS` versions (creates and updates over `OBJECTS`
//!    objects) are written, the log flushed, the MongoDB database dropped and the metadata
//!    rebuilt from S3 (`Admin::rebuild`); against the raw work it stands for — GETs of the
//!    same snapshots (16 in flight, as the rebuild fetches them) plus an `insert_many` of as
//!    many version-sized documents in batches of 256. Target: rebuild ≥ 70 % of raw.
//! 2. **S3-only reads at 100k versions**: one object's version index holds 100,000 versions
//!    (segments and markers written directly, naming real snapshots of a seed object);
//!    `get_version`, `as_of`, `as_of_cv` and a history page from S3 alone: blob requests per
//!    read (counted through a counting layer) and p50 against `get_version` from S3 of a
//!    1-version object.
//! 3. **Drift of a 10k-object collection**: time, and the process's peak resident-memory
//!    growth during it (sampled from `/proc/self/status`).
//!
//! `UDM_BENCH_E2E_ONLY=shadow`. `UDM_BENCH_SHADOW_OBJECTS` overrides the 10,000 drift objects;
//! `UDM_BENCH_SHADOW_ONLY=drift` runs the drift part alone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use serde_json::{Map, Value, json};
use udm_core::layout::Layout;
use udm_core::ports::{BlobStore, CounterStore, PutOptions};
use udm_core::query::{HistoryQuery, Order};
use udm_core::shadow::index::{IndexEntry, IndexSegment, Marker};
use udm_core::{Cv, ObjectId, ObjectKey, Ov, Result, RouteContext, Timestamp};
use udm_facade::{Collection, DriftOptions, DriftScope, Pair, ReadOpts, ReadSource, Udm, WriteOpts};
use udm_layers::{Answer, Call, Intercepted, Interceptor};
use udm_mongo::{MongoConfig, MongoStore};
use udm_s3::{AwsS3Blobs, S3Settings};

use super::Stats;

const OBJECTS: usize = 500;
const UPDATES: usize = 5;
const LONG: u64 = 100_000;
const ROUNDS: usize = 100;
const DRIFT_OBJECTS: usize = 10_000;

/// Counts blob requests.
#[derive(Debug, Clone, Default)]
struct Count(Arc<AtomicU64>);

impl Interceptor for Count {
    async fn intercept<T, F, Fut>(&self, _call: Call<'_>, run: F) -> Result<T>
    where
        T: Answer,
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        self.0.fetch_add(1, Ordering::Relaxed);
        run().await
    }
}

struct Env {
    udm: Udm,
    meta: Arc<MongoStore>,
    json: Arc<dyn BlobStore>,
    count: Count,
    db: String,
}

async fn env(uri: &str, endpoint: &str, run: &str) -> Env {
    let db = format!("udm_bench_shadow_{run}");
    let meta = Arc::new(MongoStore::connect(&MongoConfig::new(uri, &db)).await.expect("mongo"));
    let settings = S3Settings::compatible(endpoint, "us-east-1", "test", "testsecret");
    let (jb, cb) = (format!("udm-bench-shadow-{run}-json"), format!("udm-bench-shadow-{run}-content"));
    for b in [&jb, &cb] {
        AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket");
    }
    let json: Arc<dyn BlobStore> = Arc::new(AwsS3Blobs::new(&settings, &jb));
    let count = Count::default();
    let pair = Pair {
        name: "bench".into(),
        meta: meta.clone(),
        counters: meta.clone() as Arc<dyn CounterStore>,
        json: Arc::new(Intercepted::new(json.clone(), count.clone())),
        content: Arc::new(AwsS3Blobs::new(&settings, &cb)),
        describe: "mongo + s3".into(),
    };
    let udm = Udm::builder().pair(pair).build().expect("udm");
    Env { udm, meta, json, count, db }
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}{nanos}", std::process::id())
}

fn doc_of(i: usize, round: usize) -> Value {
    json!({"name": format!("object {i}"), "round": round, "tags": ["a", "b"], "text": "x".repeat(200)})
}

/// Rebuild against raw GETs + raw bulk inserts of the same amount.
async fn rebuild(uri: &str, endpoint: &str, report: &mut Map<String, Value>) {
    let run = run_id();
    let e = env(uri, endpoint, &run).await;
    let c = e.udm.with(RouteContext::new(&format!("r{run}"), "db", "docs").unwrap());
    let creates: Vec<(Value, WriteOpts)> =
        (0..OBJECTS).map(|i| (doc_of(i, 0), WriteOpts::id(&format!("o{i}")))).collect();
    for chunk in creates.chunks(100) {
        for r in c.create_many(chunk.to_vec()).await {
            r.expect("create");
        }
    }
    for round in 1..=UPDATES {
        let items: Vec<udm_facade::WriteItem> = (0..OBJECTS)
            .map(|i| udm_facade::WriteItem::Update {
                id: format!("o{i}"),
                data: doc_of(i, round),
                expected: None,
                opts: WriteOpts::default(),
            })
            .collect();
        for chunk in items.chunks(100) {
            for r in c.write_many(chunk.to_vec()).await {
                r.expect("update");
            }
        }
    }
    e.udm.admin().flush_shadow().await.expect("flush");
    let versions = OBJECTS * (UPDATES + 1);
    // The snapshot keys, for the raw GETs.
    let mut keys = Vec::new();
    for i in 0..OBJECTS {
        let page = c.history(&format!("o{i}"), HistoryQuery { limit: 100, ..HistoryQuery::default() }).await.unwrap();
        keys.extend(page.items.into_iter().map(|r| r.snapshot.key));
    }
    e.udm.admin().shutdown().await.expect("shutdown");
    e.meta.drop_all().await.expect("drop");
    let fresh = env(uri, endpoint, &run).await;
    let t = Instant::now();
    let r = fresh.udm.admin().rebuild(None, &|_| {}).await.expect("rebuild");
    let took = t.elapsed();
    assert_eq!(r.imported as usize, versions, "{r:?}");

    // Raw: the same GETs, 16 in flight; then insert_many of as many documents, 256 per call.
    let next = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(keys);
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (json, keys, next) = (fresh.json.clone(), keys.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(k) = keys.get(i) else { break };
                json.get(k).await.expect("raw get");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("get task");
    }
    let gets = t.elapsed();
    let client = mongodb::Client::with_uri_str(uri).await.expect("mongo client");
    let raw = client.database(&format!("{}_raw", fresh.db));
    let scratch = raw.collection::<Document>("scratch");
    scratch.insert_one(doc! {"_id": "init"}).await.expect("init");
    let docs: Vec<Document> = (0..versions)
        .map(|i| doc! {"_id": format!("v{i}"), "obj": format!("o{}", i % OBJECTS), "ov": (i / OBJECTS) as i64, "json": "x".repeat(600)})
        .collect();
    let t = Instant::now();
    for chunk in docs.chunks(256) {
        scratch.insert_many(chunk.to_vec()).await.expect("insert_many");
    }
    let inserts = t.elapsed();
    raw.drop().await.expect("drop raw");
    fresh.meta.drop_all().await.expect("drop");
    let raw_total = gets + inserts;
    let share = raw_total.as_secs_f64() / took.as_secs_f64();
    println!("\nRebuild of {versions} versions ({OBJECTS} objects) from S3 (target: ≥ 70 % of raw):");
    println!(
        "  rebuild           {:>8.2} s  {:>7.0} versions/s",
        took.as_secs_f64(),
        versions as f64 / took.as_secs_f64()
    );
    println!("  raw GETs          {:>8.2} s  (16 in flight)", gets.as_secs_f64());
    println!("  raw insert_many   {:>8.2} s  (256 per call)", inserts.as_secs_f64());
    println!("  rebuild / raw throughput: {:.0} %", share * 100.0);
    report.insert(
        "rebuild".into(),
        json!({"versions": versions, "rebuild_s": took.as_secs_f64(), "raw_gets_s": gets.as_secs_f64(),
               "raw_inserts_s": inserts.as_secs_f64(), "share_of_raw": share}),
    );
}

/// Index segments and markers of a `LONG`-version object whose entries name the seed's real
/// snapshots (so every read verifies a real snapshot).
async fn long_history(e: &Env, c: &Collection) -> (ObjectKey, Vec<(Ov, Cv, Timestamp)>) {
    c.create(json!({"n": 0}), WriteOpts::id("seed")).await.unwrap();
    for n in 1..16 {
        c.update("seed", json!({"n": n}), None, WriteOpts::default()).await.unwrap();
    }
    let seed = c.history("seed", HistoryQuery::default()).await.unwrap().items;
    let key = ObjectKey::new(c.context().clone(), ObjectId::new("long").unwrap());
    let layout = Layout::default();
    let base = 1_700_000_000_000i64;
    let mut probes = Vec::new();
    let per = udm_core::shadow::index::INDEX_SEGMENT_LEN;
    for s in 0..LONG.div_ceil(per) {
        let mut seg = IndexSegment::new(key.clone(), s);
        let first = s * per + 1;
        let entries = (first..=(first + per - 1).min(LONG)).map(|n| {
            let mut r = seed[(n % 16) as usize].clone();
            (r.key, r.ov, r.cv, r.at) =
                (key.clone(), Ov::new(n).unwrap(), Cv(n), Timestamp::from_millis(base + n as i64 * 10).unwrap());
            r.op = if n == 1 { udm_core::Op::Create } else { udm_core::Op::Update };
            IndexEntry::committed(r)
        });
        seg.merge(entries.collect());
        let (at, cv) = seg.first().unwrap();
        probes.push((Ov::new(first).unwrap(), cv, at));
        e.json
            .put(
                &layout.index_marker(&key, &Marker { segment: s, at, cv }),
                Vec::new(),
                &PutOptions::overwrite("application/octet-stream"),
            )
            .await
            .unwrap();
        e.json
            .put(
                &layout.index_segment(&key, Ov::new(first).unwrap()),
                seg.encode().unwrap(),
                &PutOptions::overwrite("application/json"),
            )
            .await
            .unwrap();
    }
    (key, probes)
}

/// S3-only reads at 100k versions: requests and p50 against get_version of a 1-version object.
async fn s3_only(uri: &str, endpoint: &str, report: &mut Map<String, Value>) {
    let run = run_id();
    let e = env(uri, endpoint, &run).await;
    let c = e.udm.with(RouteContext::new(&format!("s{run}"), "db", "docs").unwrap());
    c.create(json!({"one": 1}), WriteOpts::id("one")).await.unwrap();
    let (_, _) = long_history(&e, &c).await;
    e.udm.admin().flush_shadow().await.unwrap();
    let shadow = ReadOpts { source: ReadSource::Shadow, ..ReadOpts::default() };
    let base = 1_700_000_000_000i64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        1 + rng % LONG
    };
    let mut samples: BTreeMap<&'static str, (Vec<Duration>, u64)> = BTreeMap::new();
    for round in 0..ROUNDS + 10 {
        let n = next();
        let ops: [(&'static str, u8); 5] = [
            ("get_version 1-version object", 0),
            ("get_version", 1),
            ("as_of", 2),
            ("as_of_cv", 3),
            ("history page 100", 4),
        ];
        for (name, which) in ops {
            let before = e.count.0.load(Ordering::Relaxed);
            let t = Instant::now();
            match which {
                0 => drop(c.get_version("one", Ov::FIRST, shadow).await.unwrap()),
                1 => drop(c.get_version("long", Ov::new(n).unwrap(), shadow).await.unwrap()),
                2 => drop(
                    c.as_of("long", Timestamp::from_millis(base + n as i64 * 10 + 5).unwrap(), shadow).await.unwrap(),
                ),
                3 => drop(c.as_of_cv("long", Cv(n), shadow).await.unwrap()),
                _ => {
                    let q = HistoryQuery { after: Some(Ov::new(n).unwrap()), limit: 100, order: Order::Asc };
                    drop(c.shadow_history("long", q).await.unwrap())
                }
            }
            let took = t.elapsed();
            let requests = e.count.0.load(Ordering::Relaxed) - before;
            if round >= 10 {
                let s = samples.entry(name).or_default();
                s.0.push(took);
                s.1 = s.1.max(requests);
            }
        }
    }
    let p50 = |v: &Vec<Duration>| Stats { name: "", samples: v.clone() }.pct(0.5);
    let baseline = p50(&samples["get_version 1-version object"].0);
    println!("\nS3-only reads of an object with {LONG} versions (p50; most blob requests per read):");
    let mut out = Map::new();
    for (name, (v, requests)) in &samples {
        let ratio = p50(v) / baseline;
        println!("  {name:<32} {:>9.0} µs  {ratio:>5.2}x  {requests} requests", p50(v));
        out.insert((*name).into(), json!({"p50_us": p50(v), "ratio": ratio, "max_requests": requests}));
    }
    report.insert("s3_only_reads".into(), Value::Object(out));
    e.meta.drop_all().await.expect("drop");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Drift of a 10k-object collection: time and peak RSS growth.
async fn drift(uri: &str, endpoint: &str, report: &mut Map<String, Value>) {
    let n: usize = std::env::var("UDM_BENCH_SHADOW_OBJECTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DRIFT_OBJECTS);
    let run = run_id();
    let e = env(uri, endpoint, &run).await;
    let ctx = RouteContext::new(&format!("d{run}"), "db", "docs").unwrap();
    let c = e.udm.with(ctx.clone());
    let items: Vec<(Value, WriteOpts)> = (0..n).map(|i| (doc_of(i, 0), WriteOpts::id(&format!("o{i:05}")))).collect();
    for chunk in items.chunks(200) {
        for r in c.create_many(chunk.to_vec()).await {
            r.expect("create");
        }
    }
    e.udm.admin().flush_shadow().await.unwrap();
    let start = rss_kib();
    let peak = Arc::new(Mutex::new(start));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let now = rss_kib();
                {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(now);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let before = e.count.0.load(Ordering::Relaxed);
    let t = Instant::now();
    let totals =
        e.udm.admin().drift(DriftScope::Collection(ctx), DriftOptions::default(), None, &mut |_| {}).await.unwrap();
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let requests = e.count.0.load(Ordering::Relaxed) - before;
    assert!(totals.summary.in_sync && totals.objects as usize == n, "{totals:?}");
    let growth = peak.lock().unwrap().saturating_sub(start);
    println!("\nDrift of a {n}-object collection (MongoDB + S3, shallow):");
    println!(
        "  {:.1} s ({:.0} objects/s), {requests} blob requests, peak RSS growth {growth} KiB (RSS before {start} KiB)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    report.insert(
        "drift".into(),
        json!({"objects": n, "seconds": took.as_secs_f64(), "blob_requests": requests, "peak_rss_growth_kib": growth}),
    );
    e.meta.drop_all().await.expect("drop");
}

pub(crate) async fn run(uri: &str, endpoint: &str) -> Map<String, Value> {
    let mut report = Map::new();
    if std::env::var("UDM_BENCH_SHADOW_ONLY").map_or(true, |v| v != "drift") {
        s3_only(uri, endpoint, &mut report).await;
        rebuild(uri, endpoint, &mut report).await;
    }
    drift(uri, endpoint, &mut report).await;
    report
}
