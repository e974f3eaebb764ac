//! End-to-end latency against the real test servers, in one run: first the raw driver/SDK
//! calls a UDM write and read need, then UDM's own operations on one (MongoDB, S3) pair, with
//! each UDM p50 shown as a ratio to the raw calls it is built from.
//!
//! Run: `cargo xtask bench` (starts the servers), or with servers up: `cargo bench -p
//! udm-benches --bench e2e`. Writes `target/bench/e2e.json`. `UDM_BENCH_E2E_ONLY=basic|lists|
//! concurrency|history|shadow|postgres|baseline` runs one section (`basic`: P1's table).

use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use mongodb::bson::{Document, doc};
use serde_json::json;

#[path = "e2e/baseline.rs"]
mod baseline;
#[path = "e2e/concurrency.rs"]
mod concurrency;
#[path = "e2e/history.rs"]
mod history;
#[path = "e2e/postgres.rs"]
mod postgres;
#[path = "e2e/shadow.rs"]
mod shadow;

const WARMUP: usize = 30;
const ITERS: usize = 300;

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut s = self.samples.clone();
        s.sort();
        let i = ((s.len() as f64 - 1.0) * p).round() as usize;
        s[i].as_secs_f64() * 1e6
    }

    fn ops_per_sec(&self) -> f64 {
        self.samples.len() as f64 / self.samples.iter().sum::<Duration>().as_secs_f64()
    }

    fn json(&self) -> serde_json::Value {
        json!({"p50_us": self.pct(0.5), "p90_us": self.pct(0.9), "p95_us": self.pct(0.95), "p99_us": self.pct(0.99), "ops_per_sec": self.ops_per_sec(), "n": self.samples.len()})
    }
}

async fn measure<F, Fut>(name: &'static str, op: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    measure_n(name, WARMUP, ITERS, op).await
}

async fn measure_n<F, Fut>(name: &'static str, warmup: usize, iters: usize, mut op: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..warmup {
        op(i).await;
    }
    let mut samples = Vec::with_capacity(iters);
    for i in warmup..warmup + iters {
        let t = Instant::now();
        op(i).await;
        samples.push(t.elapsed());
    }
    Stats { name, samples }
}

fn body(bytes: usize) -> String {
    "x".repeat(bytes)
}

async fn mongo(uri: &str) -> Vec<Stats> {
    let client = mongodb::Client::with_uri_str(uri).await.expect("mongo client");
    let db = client.database("udm_bench_raw");
    db.drop().await.expect("drop bench db");
    let a = db.collection::<Document>("a");
    let b = db.collection::<Document>("b");
    let payload = body(1024);
    // Create the collections outside transactions.
    a.insert_one(doc! {"_id": "init"}).await.expect("init a");
    b.insert_one(doc! {"_id": "init"}).await.expect("init b");
    let insert = measure("mongo insert_one 1KiB", |i| {
        let (a, p) = (a.clone(), payload.clone());
        async move {
            a.insert_one(doc! {"_id": format!("ins-{i}"), "p": p}).await.expect("insert");
        }
    })
    .await;
    let tx = measure("mongo 2-collection transaction", |i| {
        let (client, a, b, p) = (client.clone(), a.clone(), b.clone(), payload.clone());
        async move {
            let mut s = client.start_session().await.expect("session");
            s.start_transaction().await.expect("start");
            a.insert_one(doc! {"_id": format!("tx-{i}"), "p": &p}).session(&mut s).await.expect("tx a");
            b.insert_one(doc! {"_id": format!("tx-{i}"), "p": &p}).session(&mut s).await.expect("tx b");
            s.commit_transaction().await.expect("commit");
        }
    })
    .await;
    let find = measure("mongo find_one by _id", |i| {
        let a = a.clone();
        async move {
            let found = a.find_one(doc! {"_id": format!("ins-{}", i % ITERS)}).await.expect("find");
            assert!(found.is_some());
        }
    })
    .await;
    db.drop().await.expect("drop bench db");
    vec![insert, tx, find]
}

/// A raw AWS SDK client of the test S3 server.
fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("test", "testsecret", None, None, "bench"))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn s3(endpoint: &str) -> Vec<Stats> {
    let c = s3_client(endpoint);
    let bucket = "udm-bench-raw";
    let _ = c.create_bucket().bucket(bucket).send().await;
    let mut out = Vec::new();
    for (label_put, label_get, size) in
        [("s3 put 1KiB", "s3 get 1KiB", 1024), ("s3 put 64KiB", "s3 get 64KiB", 64 * 1024)]
    {
        let data = body(size).into_bytes();
        out.push(
            measure(label_put, |i| {
                let (c, d) = (c.clone(), data.clone());
                async move {
                    c.put_object()
                        .bucket(bucket)
                        .key(format!("{size}/{i}"))
                        .body(ByteStream::from(d))
                        .send()
                        .await
                        .expect("put");
                }
            })
            .await,
        );
        out.push(
            measure(label_get, |i| {
                let c = c.clone();
                async move {
                    let o =
                        c.get_object().bucket(bucket).key(format!("{size}/{}", i % ITERS)).send().await.expect("get");
                    assert_eq!(o.body.collect().await.expect("body").into_bytes().len(), size);
                }
            })
            .await,
        );
    }
    out
}

/// One (MongoDB database `db`, S3 buckets) pair on the test servers, its buckets created.
async fn bench_pair(
    uri: &str,
    endpoint: &str,
    db: &str,
    json_bucket: &str,
    content_bucket: &str,
) -> udm_core::config::BackendPair {
    use udm_core::config::{BackendPair, BlobBackend, MetaBackend, MongoUri, S3Client, Secret};
    let settings = udm_s3::S3Settings::compatible(endpoint, "us-east-1", "test", "testsecret");
    for b in [json_bucket, content_bucket] {
        udm_s3::AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket");
    }
    BackendPair {
        name: "bench".into(),
        meta: MetaBackend::Mongo {
            uri: MongoUri::new(uri),
            database: db.into(),
            max_pool_size: None,
            connect_timeout_ms: None,
            server_selection_timeout_ms: None,
        },
        blobs: BlobBackend::S3 {
            endpoint: Some(endpoint.to_owned()),
            region: "us-east-1".into(),
            access_key_id: Some(Secret::new("test")),
            secret_access_key: Some(Secret::new("testsecret")),
            json_bucket: json_bucket.into(),
            content_bucket: content_bucket.into(),
            backups_bucket: None,
            path_style: true,
            client: S3Client::AwsSdk,
        },
    }
}

async fn udm(uri: &str, endpoint: &str) -> Vec<Stats> {
    use udm_facade::{ReadOpts, Udm, WriteOpts};
    mongodb::Client::with_uri_str(uri).await.expect("client").database("udm_bench_e2e").drop().await.expect("drop");
    let pair = bench_pair(uri, endpoint, "udm_bench_e2e", "udm-bench-json", "udm-bench-content").await;
    let mut cfg = udm_core::config::Config::single(pair);
    // Read latest from the snapshot too, so get_latest and get_version cost the same calls.
    cfg.storage.inline_max_bytes = 0;
    let udm = Udm::from_config(cfg).await.expect("udm");
    let run = std::process::id();
    let c = udm.with(udm_core::RouteContext::new(&format!("bench{run}"), "db", "docs").expect("ctx"));
    let doc = serde_json::json!({"p": body(1000)});
    let create = measure("udm create 1KiB", |i| {
        let (c, d) = (c.clone(), doc.clone());
        async move {
            c.create(d, WriteOpts::id(&format!("o{i}"))).await.expect("create");
        }
    })
    .await;
    let id = |i: usize| format!("o{}", i % (ITERS + WARMUP));
    let latest = measure("udm get_latest", |i| {
        let c = c.clone();
        async move {
            c.get_latest(&id(i), ReadOpts::default()).await.expect("latest");
        }
    })
    .await;
    let version = measure("udm get_version", |i| {
        let c = c.clone();
        async move {
            c.get_version(&id(i), udm_core::Ov::FIRST, ReadOpts::default()).await.expect("version");
        }
    })
    .await;
    let at = udm_core::Timestamp::parse_rfc3339("9999-01-01T00:00:00Z").expect("ts");
    let as_of = measure("udm as_of", |i| {
        let c = c.clone();
        async move {
            c.as_of(&id(i), at, ReadOpts::default()).await.expect("as_of");
        }
    })
    .await;
    vec![create, latest, version, as_of]
}

/// UDM operation → the raw calls it is compared with (their p50s are summed).
const RATIOS: &[(&str, &[&str])] = &[
    ("udm create 1KiB", &["s3 put 1KiB", "mongo 2-collection transaction"]),
    ("udm get_latest", &["mongo find_one by _id", "s3 get 1KiB"]),
    ("udm get_version", &["mongo find_one by _id", "s3 get 1KiB"]),
    ("udm as_of", &["mongo find_one by _id", "s3 get 1KiB"]),
];

/// The raw-call and UDM single-object table and its ratios.
fn print_basic(all: &[Stats], report: &mut serde_json::Map<String, serde_json::Value>) {
    println!("\nend-to-end latency ({ITERS} iterations after {WARMUP} warm-up, sequential, loopback)");
    println!("{:<34} {:>10} {:>10} {:>10} {:>10}", "operation", "p50 µs", "p90 µs", "p99 µs", "ops/s");
    for s in all {
        println!(
            "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            s.name,
            s.pct(0.5),
            s.pct(0.9),
            s.pct(0.99),
            s.ops_per_sec()
        );
        report.insert(s.name.to_owned(), s.json());
    }
    println!("\nUDM p50 as a ratio to the raw calls it needs (p50s summed):");
    let p50 = |name: &str| all.iter().find(|s| s.name == name).map(|s| s.pct(0.5)).unwrap_or(f64::NAN);
    for (op, raw) in RATIOS {
        let base: f64 = raw.iter().map(|r| p50(r)).sum();
        let ratio = p50(op) / base;
        println!("{op:<20} {:>8.0} µs vs {:>8.0} µs ({}) = {ratio:.2}x", p50(op), base, raw.join(" + "));
        report.insert(format!("ratio {op}"), json!(ratio));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let uri = udm_testkit::services::mongo_uri();
    let endpoint = udm_testkit::services::s3_endpoint();
    // `UDM_BENCH_E2E_ONLY=<section>` runs only that section (the full run takes a while).
    let only = std::env::var("UDM_BENCH_E2E_ONLY").unwrap_or_default();
    let pg_url = || udm_testkit::services::postgres_url();
    match only.as_str() {
        "concurrency" => return save(&concurrency::run(&uri, &endpoint).await, "e2e-concurrency.json"),
        "shadow" => return save(&shadow::run(&uri, &endpoint).await, "e2e-shadow.json"),
        "history" => return save(&history::run(&uri).await, "e2e-history.json"),
        "postgres" => return save(&postgres::run(&pg_url(), &endpoint).await, "e2e-postgres.json"),
        "baseline" => return save(&baseline::run(&pg_url()).await, "e2e-baseline.json"),
        _ => {}
    }
    let only_lists = only == "lists";
    let mut all = Vec::new();
    let mut report = serde_json::Map::new();
    if !only_lists {
        all.extend(mongo(&uri).await);
        all.extend(s3(&endpoint).await);
        all.extend(udm(&uri, &endpoint).await);
        print_basic(&all, &mut report);
        if only == "basic" {
            return save(&report, "e2e-basic.json");
        }
    }
    let (list_stats, list_extra) = lists(&uri, &endpoint).await;
    println!("\nUDM list p50 as a ratio to a raw indexed find (target ≤ 1.5x):");
    let lp50 = |name: &str| list_stats.iter().find(|s| s.name == name).map(|s| s.pct(0.5)).unwrap_or(f64::NAN);
    for (op, heads, plain) in LIST_RATIOS {
        let (u, h, p) = (lp50(op), lp50(heads), lp50(plain));
        println!(
            "{op:<32} {u:>8.0} µs vs heads find {h:>6.0} µs = {:>5.2}x | vs plain find {p:>6.0} µs = {:>5.2}x",
            u / h,
            u / p
        );
        report.insert(format!("ratio {op} / raw heads find"), json!(u / h));
        report.insert(format!("ratio {op} / raw plain find"), json!(u / p));
    }
    for s in &list_stats {
        report.insert(s.name.to_owned(), s.json());
    }
    report.extend(list_extra);
    if !only_lists {
        report.extend(concurrency::run(&uri, &endpoint).await);
        report.extend(history::run(&uri).await);
        report.extend(postgres::run(&pg_url(), &endpoint).await);
        report.extend(baseline::run(&pg_url()).await);
    }
    // A partial run does not overwrite the full report.
    save(&report, if only_lists { "e2e-lists.json" } else { "e2e.json" });
}

/// Writes the JSON report to `target/bench/<file>`.
fn save(report: &serde_json::Map<String, serde_json::Value>, file: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench").join(file);
    std::fs::create_dir_all(path.parent().expect("bench dir")).expect("bench dir");
    std::fs::write(&path, serde_json::to_string_pretty(report).expect("json")).expect("write report");
    println!("written to {}", path.display());
}

// ---------------------------------------------------------------------------------------------
// Lists by an indexed prop on 10k documents (issue 7, defect 12): UDM `list` against a raw
// indexed `find` on the adapter's own heads collection (same filter, sort and limit, same
// index: the minimum a correct implementation must do) and on a plain collection a user would
// index by hand.
// ---------------------------------------------------------------------------------------------

const LIST_DOCS: usize = 10_000;
const LIST_WARMUP: usize = 5;
const LIST_ITERS: usize = 50;
const LOAD_IN_FLIGHT: usize = 16;
const PAGE: usize = 50;
const TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];
const LIST_DB: &str = "udm_bench_list";
const PLAIN_DB: &str = "udm_bench_list_raw";

/// Object `i` of the list collection: `tier` (4 values, 2,500 objects each), `score` (distinct
/// numbers, a permutation of 0..10,007), a name and a 200-byte payload (kept inline).
fn list_doc(i: usize) -> serde_json::Value {
    json!({"tier": TIERS[i % TIERS.len()], "score": (i * 7919) % 10_007, "name": format!("item {i}"), "p": body(200)})
}

fn list_id(i: usize) -> String {
    format!("o{i:05}")
}

/// Reads a find's whole cursor (documents decoded by the driver).
async fn drain(find: mongodb::action::Find<'_, Document>) -> Vec<Document> {
    let mut cursor = find.await.expect("find");
    let mut out = Vec::new();
    while cursor.advance().await.expect("advance") {
        out.push(cursor.deserialize_current().expect("decode"));
    }
    out
}

/// One measured operation of an interleaved group.
type Op = Box<dyn FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

fn op<F, Fut>(mut f: F) -> Op
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Box::new(move || Box::pin(f()))
}

/// Runs every op once per round, in turn (`warmup` rounds unmeasured, then `rounds`), so load
/// from others on a shared server lands on all of them alike.
async fn measure_interleaved(warmup: usize, rounds: usize, mut ops: Vec<(&'static str, Op)>) -> Vec<Stats> {
    let mut samples = vec![Vec::with_capacity(rounds); ops.len()];
    for round in 0..warmup + rounds {
        for (i, (_, f)) in ops.iter_mut().enumerate() {
            let t = Instant::now();
            f().await;
            if round >= warmup {
                samples[i].push(t.elapsed());
            }
        }
    }
    ops.iter().zip(samples).map(|((name, _), samples)| Stats { name, samples }).collect()
}

/// The winning plan of a find, as the server explains it (if it does).
async fn explain(db: &mongodb::Database, coll: &str, filter: Document, sort: Document, limit: Option<i64>) -> String {
    let mut find = doc! {"find": coll, "filter": filter, "sort": sort};
    if let Some(l) = limit {
        find.insert("limit", l);
    }
    match db.run_command(doc! {"explain": find, "verbosity": "executionStats"}).await {
        Ok(r) => {
            let plan =
                r.get_document("queryPlanner").and_then(|q| q.get_document("winningPlan")).map(|p| p.to_string());
            let stats = r.get_document("executionStats").ok().map(|e| {
                format!(
                    "keysExamined={:?} docsExamined={:?} nReturned={:?}",
                    e.get("totalKeysExamined"),
                    e.get("totalDocsExamined"),
                    e.get("nReturned")
                )
            });
            let mut plan = plan.unwrap_or_else(|_| r.to_string());
            plan.truncate(400);
            format!("{plan} | {}", stats.unwrap_or_default())
        }
        Err(e) => format!("explain failed: {e}"),
    }
}

fn print_stats(s: &Stats) {
    println!("{:<56} {:>9.0} {:>9.0} {:>9.0}", s.name, s.pct(0.5), s.pct(0.95), s.ops_per_sec());
}

async fn lists(uri: &str, endpoint: &str) -> (Vec<Stats>, serde_json::Map<String, serde_json::Value>) {
    use udm_core::config::{
        BackendPair, BlobBackend, CollectionConfig, Config, MetaBackend, MongoUri, S3Client, Secret,
    };
    use udm_core::metamap::IndexedProp;
    use udm_core::ports::MetaStore;
    use udm_core::query::{HeadQuery, Order};
    use udm_facade::{ListQuery, ReadOpts, Udm, WriteOpts};

    let mut extra = serde_json::Map::new();
    let raw = mongodb::Client::with_uri_str(uri).await.expect("mongo client");
    raw.database(LIST_DB).drop().await.expect("drop list db");
    raw.database(PLAIN_DB).drop().await.expect("drop plain db");

    let pair = BackendPair {
        name: "bench".into(),
        meta: MetaBackend::Mongo {
            uri: MongoUri::new(uri),
            database: LIST_DB.into(),
            max_pool_size: None,
            connect_timeout_ms: None,
            server_selection_timeout_ms: None,
        },
        blobs: BlobBackend::S3 {
            endpoint: Some(endpoint.to_owned()),
            region: "us-east-1".into(),
            access_key_id: Some(Secret::new("test")),
            secret_access_key: Some(Secret::new("testsecret")),
            json_bucket: "udm-bench-list-json".into(),
            content_bucket: "udm-bench-list-content".into(),
            backups_bucket: None,
            path_style: true,
            client: S3Client::AwsSdk,
        },
    };
    let settings = udm_s3::S3Settings::compatible(endpoint, "us-east-1", "test", "testsecret");
    for b in ["udm-bench-list-json", "udm-bench-list-content"] {
        udm_s3::AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket");
    }
    let run = std::process::id();
    let tenant = format!("list{run}");
    let mut cfg = Config::single(pair);
    // Default storage: small documents stay inline in the head, so a list reads no snapshot.
    cfg.collections.push(CollectionConfig {
        tenant: Some(tenant.clone()),
        db: "db".into(),
        collection: "items".into(),
        indexed_props: ["tier", "score"].iter().map(|p| IndexedProp { path: (*p).into(), required: false }).collect(),
        base64_props: Vec::new(),
        counter_rules: Vec::new(),
    });
    let udm = Udm::from_config(cfg).await.expect("udm");
    let ctx = udm_core::RouteContext::new(&tenant, "db", "items").expect("ctx");
    let c = udm.with(ctx.clone());

    // Load through UDM, LOAD_IN_FLIGHT creates at once.
    let t = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..LOAD_IN_FLIGHT {
        let (c, next) = (c.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= LIST_DOCS {
                    break;
                }
                c.create(list_doc(i), WriteOpts::id(&list_id(i))).await.expect("create");
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.expect("load worker");
    }
    let load = t.elapsed();
    let stats = udm.admin().stats();
    println!(
        "\nloaded {LIST_DOCS} documents through UDM ({LOAD_IN_FLIGHT} creates in flight) in {:.1} s ({:.0} creates/s, {} lost-race retries)",
        load.as_secs_f64(),
        LIST_DOCS as f64 / load.as_secs_f64(),
        stats.conflicts
    );
    extra.insert("list load seconds".into(), json!(load.as_secs_f64()));

    // The same documents as plain documents, indexed by hand.
    let plain_db = raw.database(PLAIN_DB);
    let plain = plain_db.collection::<Document>("items");
    let t = Instant::now();
    for chunk in (0..LIST_DOCS).collect::<Vec<_>>().chunks(1000) {
        let docs = chunk.iter().map(|&i| {
            let d = list_doc(i);
            doc! {"_id": list_id(i), "tier": d["tier"].as_str().unwrap_or_default(), "score": d["score"].as_i64().unwrap_or_default(), "name": d["name"].as_str().unwrap_or_default(), "p": d["p"].as_str().unwrap_or_default()}
        });
        plain.insert_many(docs).await.expect("insert plain");
    }
    let ix = |keys: Document| mongodb::IndexModel::builder().keys(keys).build();
    plain
        .create_indexes([ix(doc! {"tier": 1, "_id": 1}), ix(doc! {"score": 1, "_id": 1})])
        .await
        .expect("plain indexes");
    println!("loaded the plain collection (insert_many, 1,000 per call) in {:.1} s", t.elapsed().as_secs_f64());

    let heads = raw.database(LIST_DB).collection::<Document>("udm_heads");
    let prefix = udm_core::layout::collection_record_prefix(&ctx);
    let indexes = heads.list_index_names().await.expect("index names");
    println!("udm_heads indexes: {indexes:?}");

    let eq_query = || ListQuery { filter: Some(json!({"tier": "gold"})), limit: PAGE, ..ListQuery::default() };
    let sort_query = || ListQuery { sort_by: Some("score".into()), limit: PAGE, ..ListQuery::default() };
    // Sanity: same answers as the raw finds, and no snapshot read.
    let reads_before = udm.admin().stats().snapshot_reads;
    let page = c.list(eq_query(), ReadOpts::default()).await.expect("list");
    let ids: Vec<String> = page.items.iter().map(|r| r.id.as_str().to_owned()).collect();
    let want: Vec<String> = (0..LIST_DOCS).filter(|i| i % 4 == 2).take(PAGE).map(list_id).collect();
    assert_eq!(ids, want, "equality page");
    let page = c.list(sort_query(), ReadOpts::default()).await.expect("list");
    let scores: Vec<i64> = page.items.iter().map(|r| r.data["score"].as_i64().expect("score")).collect();
    assert_eq!(scores, (0..PAGE as i64).collect::<Vec<_>>(), "sorted page");
    assert_eq!(udm.admin().stats().snapshot_reads, reads_before, "lists are served from inline copies");

    let store = udm_mongo::MongoStore::connect(&udm_mongo::MongoConfig::new(uri, LIST_DB)).await.expect("store");
    let head_query = |filter: Option<serde_json::Value>, sort_by: Option<&str>| HeadQuery {
        filter: filter.map_or(udm_core::predicate::Predicate::True, |f| {
            udm_core::predicate::Predicate::parse(&f).expect("predicate")
        }),
        sort_by: sort_by.map(str::to_owned),
        order: Order::Asc,
        limit: PAGE,
        ..HeadQuery::default()
    };
    let base = doc! {"ctx": &prefix, "deleted": false};
    // The adapter's equality query as sent (meta.rs list_heads + heads_filter).
    let udm_eq_filter =
        doc! {"ctx": &prefix, "deleted": false, "$and": [{"idx.tier": {"$eq": "gold"}}, {"sk.tier": {"$eq": "gold"}}]};
    let raw_eq_filter = doc! {"ctx": &prefix, "deleted": false, "sk.tier": "gold"};
    let big = 1_i64 << 53;
    let field = "sk.score";
    let rest = doc! {"$and": [base.clone(), {"$or": [{field: {"$lte": -big}}, {field: {"$gte": big}}, {field: {"$type": "maxKey"}}]}]};
    let number_class = doc! {"$and": [base.clone(), {field: {"$gt": -big, "$lt": big}}]};
    let absent_class = doc! {"$and": [base.clone(), {field: {"$exists": false}}]};

    // Each op runs once per round, in turn, so a busy shared server slows all alike.
    let eq_ops: Vec<(&'static str, Op)> = vec![
        ("udm list tier=gold limit 50", {
            let c = c.clone();
            op(move || {
                let c = c.clone();
                async move { assert_eq!(c.list(eq_query(), ReadOpts::default()).await.expect("list").items.len(), PAGE) }
            })
        }),
        ("adapter list_heads tier=gold", {
            let (store, ctx) = (store.clone(), ctx.clone());
            let q = head_query(Some(json!({"tier": "gold"})), None);
            op(move || {
                let (store, ctx, q) = (store.clone(), ctx.clone(), q.clone());
                async move { assert_eq!(store.list_heads(&ctx, &q).await.expect("list").items.len(), PAGE) }
            })
        }),
        ("replay adapter eq find: $and idx+sk, batch 51, no lim", {
            let (h, f) = (heads.clone(), udm_eq_filter.clone());
            op(move || {
                let (h, f) = (h.clone(), f.clone());
                async move {
                    let mut cursor = h.find(f).sort(doc! {"oid": 1}).batch_size(PAGE as u32 + 1).await.expect("find");
                    let mut n = 0;
                    while n <= PAGE && cursor.advance().await.expect("advance") {
                        let _d: Document = cursor.deserialize_current().expect("decode");
                        n += 1;
                    }
                    assert_eq!(n, PAGE + 1);
                }
            })
        }),
        ("raw heads find {ctx,deleted,sk.tier} sort oid lim 50", {
            let (h, f) = (heads.clone(), raw_eq_filter.clone());
            op(move || {
                let (h, f) = (h.clone(), f.clone());
                async move { assert_eq!(drain(h.find(f).sort(doc! {"oid": 1}).limit(PAGE as i64)).await.len(), PAGE) }
            })
        }),
        ("raw plain find {tier} sort _id lim 50", {
            let p = plain.clone();
            op(move || {
                let p = p.clone();
                async move {
                    let d = drain(p.find(doc! {"tier": "gold"}).sort(doc! {"_id": 1}).limit(PAGE as i64)).await;
                    assert_eq!(d.len(), PAGE);
                }
            })
        }),
    ];
    let mut out = measure_interleaved(LIST_WARMUP, LIST_ITERS, eq_ops).await;
    let sort_ops: Vec<(&'static str, Op)> = vec![
        ("udm list sort_by score limit 50", {
            let c = c.clone();
            op(move || {
                let c = c.clone();
                async move { assert_eq!(c.list(sort_query(), ReadOpts::default()).await.expect("list").items.len(), PAGE) }
            })
        }),
        ("raw heads find {ctx,deleted} sort sk.score,oid lim 50", {
            let (h, f) = (heads.clone(), base.clone());
            op(move || {
                let (h, f) = (h.clone(), f.clone());
                async move {
                    let d = drain(h.find(f).sort(doc! {"sk.score": 1, "oid": 1}).limit(PAGE as i64)).await;
                    assert_eq!(d.len(), PAGE);
                }
            })
        }),
        ("raw heads same, hint sk.score index", {
            let (h, f) = (heads.clone(), base.clone());
            op(move || {
                let (h, f) = (h.clone(), f.clone());
                async move {
                    let find = h
                        .find(f)
                        .sort(doc! {"sk.score": 1, "oid": 1})
                        .limit(PAGE as i64)
                        .hint(mongodb::options::Hint::Name("ctx_1_deleted_1_sk.score_1_oid_1".into()));
                    assert_eq!(drain(find).await.len(), PAGE);
                }
            })
        }),
        ("raw plain find {} sort score,_id lim 50", {
            let p = plain.clone();
            op(move || {
                let p = p.clone();
                async move {
                    let d = drain(p.find(doc! {}).sort(doc! {"score": 1, "_id": 1}).limit(PAGE as i64)).await;
                    assert_eq!(d.len(), PAGE);
                }
            })
        }),
    ];
    out.extend(measure_interleaved(LIST_WARMUP, LIST_ITERS, sort_ops).await);

    // ---- Where the time goes (fewer rounds): the adapter alone, and its queries replayed.
    let mut diag_ops: Vec<(&'static str, Op)> = vec![("adapter list_heads sort_by score", {
        let (store, ctx) = (store.clone(), ctx.clone());
        let q = head_query(None, Some("score"));
        op(move || {
            let (store, ctx, q) = (store.clone(), ctx.clone(), q.clone());
            async move { assert_eq!(store.list_heads(&ctx, &q).await.expect("list").items.len(), PAGE) }
        })
    })];
    // The sorted list's queries as sent (list.rs list_sorted: the rest whole, then each pushed
    // class in order with sort + limit until limit + 1 heads are found).
    let class_queries: Vec<(&'static str, Document)> = vec![
        ("replay sorted 1/5 rest ($or, no sort/limit)", rest.clone()),
        ("replay sorted 2/5 absent ($exists:false) lim 51", absent_class.clone()),
        ("replay sorted 3/5 null ($type null) lim 51", doc! {"$and": [base.clone(), {field: {"$type": "null"}}]}),
        ("replay sorted 4/5 bool ($type bool) lim 51", doc! {"$and": [base.clone(), {field: {"$type": "bool"}}]}),
        ("replay sorted 5/5 number (range) lim 51", number_class.clone()),
    ];
    for (i, (name, f)) in class_queries.iter().enumerate() {
        let (h, f, sorted) = (heads.clone(), f.clone(), i > 0);
        diag_ops.push((
            *name,
            op(move || {
                let (h, f) = (h.clone(), f.clone());
                async move {
                    let find = h.find(f);
                    let find = if sorted { find.sort(doc! {field: 1, "oid": 1}).limit(PAGE as i64 + 1) } else { find };
                    drain(find).await;
                }
            }),
        ));
    }
    let diag = measure_interleaved(2, 10, diag_ops).await;

    // CPU per page, no server: what the adapter and facade do with 51 fetched head documents
    // (parse the `json` text into a Head, then the facade's inline checksum and record).
    let docs = drain(heads.find(raw_eq_filter.clone()).sort(doc! {"oid": 1}).limit(PAGE as i64 + 1)).await;
    let cpu = |f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..200 {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / 200.0
    };
    let parse = cpu(&|| {
        for d in &docs {
            let _h: udm_core::Head = serde_json::from_str(d.get_str("json").expect("json")).expect("head");
        }
    });
    let parsed: Vec<udm_core::Head> =
        docs.iter().map(|d| serde_json::from_str(d.get_str("json").expect("json")).expect("head")).collect();
    let verify = cpu(&|| {
        for h in &parsed {
            let inline = h.inline.as_ref().expect("inline");
            udm_core::Checksum::of_json(inline).verify(&h.snapshot.checksum, "inline").expect("verify");
            let _ = h.render_system();
        }
    });
    let head_bytes: usize = docs.iter().map(|d| d.get_str("json").map_or(0, str::len)).sum::<usize>() / docs.len();
    let cpu_line = format!(
        "per page of {} heads (avg json {head_bytes} B): parse json -> Head {parse:.0} µs; inline checksum + render _system {verify:.0} µs",
        docs.len()
    );
    extra.insert(
        "list cpu per page".into(),
        json!({"parse_us": parse, "verify_render_us": verify, "head_json_bytes": head_bytes}),
    );

    let db = raw.database(LIST_DB);
    let mut plans = serde_json::Map::new();
    for (name, f, s, l) in [
        ("adapter eq find ($and idx+sk, no limit)", udm_eq_filter.clone(), doc! {"oid": 1}, None),
        ("raw heads eq find (flat sk.tier, limit 50)", raw_eq_filter.clone(), doc! {"oid": 1}, Some(50)),
        ("raw heads sorted find (limit 50)", base.clone(), doc! {field: 1, "oid": 1}, Some(50)),
        ("sorted rest", rest.clone(), doc! {}, None),
        ("sorted absent (limit 51)", absent_class.clone(), doc! {field: 1, "oid": 1}, Some(51)),
        ("sorted number (limit 51)", number_class.clone(), doc! {field: 1, "oid": 1}, Some(51)),
        ("plain eq find (limit 50)", doc! {"tier": "gold"}, doc! {"_id": 1}, Some(50)),
        ("plain sorted find (limit 50)", doc! {}, doc! {"score": 1, "_id": 1}, Some(50)),
    ] {
        let dbx = if name.starts_with("plain") { plain_db.clone() } else { db.clone() };
        let coll = if name.starts_with("plain") { "items" } else { "udm_heads" };
        plans.insert(name.into(), json!(explain(&dbx, coll, f, s, l).await));
    }

    println!(
        "\nlists on {LIST_DOCS} documents ({LIST_ITERS} rounds after {LIST_WARMUP} warm-up; ops of a group interleaved)"
    );
    println!("{:<56} {:>9} {:>9} {:>9}", "operation", "p50 µs", "p95 µs", "ops/s");
    for s in &out {
        print_stats(s);
    }
    println!("-- where the time goes (10 rounds)");
    for s in &diag {
        print_stats(s);
    }
    println!("{cpu_line}");
    println!("-- server plans (explain executionStats)");
    for (k, v) in &plans {
        println!("{k}: {}", v.as_str().unwrap_or_default());
    }
    extra.insert("list explain".into(), serde_json::Value::Object(plans));
    for s in &diag {
        extra.insert(s.name.to_owned(), s.json());
    }
    drop(c);
    let _ = raw.database(PLAIN_DB).drop().await;
    let _ = raw.database(LIST_DB).drop().await;
    (out, extra)
}

/// UDM list → (raw heads find, plain find) it is compared with.
const LIST_RATIOS: &[(&str, &str, &str)] = &[
    (
        "udm list tier=gold limit 50",
        "raw heads find {ctx,deleted,sk.tier} sort oid lim 50",
        "raw plain find {tier} sort _id lim 50",
    ),
    (
        "udm list sort_by score limit 50",
        "raw heads find {ctx,deleted} sort sk.score,oid lim 50",
        "raw plain find {} sort score,_id lim 50",
    ),
];
