//! Raw baselines against the real test servers: the driver/SDK calls one UDM write and read
//! need, measured alone so later end-to-end benches can report UDM's cost as a ratio.
//!
//! Run: `cargo xtask bench` (starts the servers), or with servers up:
//! `cargo bench -p udm-benches --bench raw_baselines`. Prints p50/p90/p99 and ops/s, and
//! writes them to `target/bench/raw_baselines.json`.

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let uri = udm_testkit::services::mongo_uri();
    let endpoint = udm_testkit::services::s3_endpoint();
    let mut all = mongo(&uri).await;
    all.extend(s3(&endpoint).await);
    println!("\nraw baselines ({ITERS} iterations after {WARMUP} warm-up, sequential, loopback)");
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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("raw_baselines.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write report");
    println!("written to {}", path.display());
}
