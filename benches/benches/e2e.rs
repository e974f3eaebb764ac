//! End-to-end latency against the real test servers, in one run: first the raw driver/SDK
//! calls a UDM write and read need, then UDM's own operations on one (MongoDB, S3) pair, with
//! each UDM p50 shown as a ratio to the raw calls it is built from.
//!
//! Run: `cargo xtask bench` (starts the servers), or with servers up:
//! `cargo bench -p udm-benches --bench e2e`. Writes `target/bench/e2e.json`.

use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use mongodb::bson::{Document, doc};
use serde_json::json;

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
        json!({"p50_us": self.pct(0.5), "p90_us": self.pct(0.9), "p99_us": self.pct(0.99), "ops_per_sec": self.ops_per_sec(), "n": self.samples.len()})
    }
}

async fn measure<F, Fut>(name: &'static str, mut op: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..WARMUP {
        op(i).await;
    }
    let mut samples = Vec::with_capacity(ITERS);
    for i in WARMUP..WARMUP + ITERS {
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

async fn s3(endpoint: &str) -> Vec<Stats> {
    let conf = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("test", "testsecret", None, None, "bench"))
        .build();
    let c = aws_sdk_s3::Client::from_conf(conf);
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

async fn udm(uri: &str, endpoint: &str) -> Vec<Stats> {
    use udm_core::config::{BackendPair, BlobBackend, Config, MetaBackend, MongoUri, S3Client, Secret};
    use udm_facade::{ReadOpts, Udm, WriteOpts};
    let pair = BackendPair {
        name: "bench".into(),
        meta: MetaBackend::Mongo {
            uri: MongoUri::new(uri),
            database: "udm_bench_e2e".into(),
            max_pool_size: None,
            connect_timeout_ms: None,
            server_selection_timeout_ms: None,
        },
        blobs: BlobBackend::S3 {
            endpoint: Some(endpoint.to_owned()),
            region: "us-east-1".into(),
            access_key_id: Some(Secret::new("test")),
            secret_access_key: Some(Secret::new("testsecret")),
            json_bucket: "udm-bench-json".into(),
            content_bucket: "udm-bench-content".into(),
            backups_bucket: None,
            path_style: true,
            client: S3Client::AwsSdk,
        },
    };
    let settings = udm_s3::S3Settings::compatible(endpoint, "us-east-1", "test", "testsecret");
    for b in ["udm-bench-json", "udm-bench-content"] {
        udm_s3::AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket");
    }
    let mut cfg = Config::single(pair);
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let uri = udm_testkit::services::mongo_uri();
    let endpoint = udm_testkit::services::s3_endpoint();
    let mut all = mongo(&uri).await;
    all.extend(s3(&endpoint).await);
    all.extend(udm(&uri, &endpoint).await);
    println!("\nend-to-end latency ({ITERS} iterations after {WARMUP} warm-up, sequential, loopback)");
    println!("{:<34} {:>10} {:>10} {:>10} {:>10}", "operation", "p50 µs", "p90 µs", "p99 µs", "ops/s");
    let mut report = serde_json::Map::new();
    for s in &all {
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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("e2e.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write report");
    println!("written to {}", path.display());
}
