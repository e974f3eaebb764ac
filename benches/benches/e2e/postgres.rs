//! The PostgreSQL column: UDM on a (PostgreSQL, S3) pair against the raw statements and S3
//! calls its operations need, interleaved round by round on the same servers (so load lands
//! on both alike): create vs (raw INSERT + UPDATE transaction + raw S3 put), reads vs (raw
//! SELECT by key + raw S3 get). UDM keeps no inline copy here (`inline_max_bytes = 0`), so
//! every read fetches its snapshot, as the raw side does.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use serde_json::json;
use udm_facade::{ReadOpts, Udm, WriteOpts};

use super::{Stats, body, measure_interleaved, op};

const ROUNDS: usize = 300;
const WARMUP: usize = 30;

pub(crate) async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("postgres");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub(crate) async fn run(url: &str, endpoint: &str) -> serde_json::Map<String, serde_json::Value> {
    let raw = Arc::new(raw_client(url).await);
    raw.batch_execute(
        "DROP SCHEMA IF EXISTS udm_bench_raw CASCADE; CREATE SCHEMA udm_bench_raw;
         CREATE TABLE udm_bench_raw.versions (id text, ov int, data text, PRIMARY KEY (id, ov));
         CREATE TABLE udm_bench_raw.heads (id text PRIMARY KEY, ov int, data text);",
    )
    .await
    .expect("raw schema");
    let s3 = super::s3_client(endpoint);
    let bucket = "udm-bench-pg-raw";
    let _ = s3.create_bucket().bucket(bucket).send().await;

    let mut pair = super::bench_pair(url, endpoint, "unused", "udm-bench-pg-json", "udm-bench-pg-content").await;
    let text = format!(
        "[[backends]]\nname = \"pg\"\nmeta = {{ kind = \"postgres\", url = \"{url}\", schema = \"udm_bench_e2e\" }}\nblobs = {{ kind = \"memory\" }}\n"
    );
    pair.meta = udm_core::config::Config::from_toml(&text).expect("pg pair").backends.remove(0).meta;
    let mut cfg = udm_core::config::Config::single(pair);
    cfg.storage.inline_max_bytes = 0;
    let udm = Udm::from_config(cfg).await.expect("udm on postgres");
    let run = std::process::id();
    let c = udm.with(udm_core::RouteContext::new(&format!("pg{run}"), "db", "docs").expect("ctx"));
    let payload = body(1000);
    let doc = json!({"p": payload});

    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next = move |n: &Arc<std::sync::atomic::AtomicUsize>| n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let writes = measure_interleaved(
        WARMUP,
        ROUNDS,
        vec![
            ("pg INSERT + UPDATE transaction", {
                let (raw, n, p) = (raw.clone(), n.clone(), payload.clone());
                op(move || {
                    let (raw, p, i) = (raw.clone(), p.clone(), next(&n));
                    async move {
                        raw.batch_execute("BEGIN").await.expect("begin");
                        let id = format!("o{i}");
                        raw.execute("INSERT INTO udm_bench_raw.versions VALUES ($1, 1, $2)", &[&id, &p])
                            .await
                            .expect("insert");
                        raw.execute(
                            "INSERT INTO udm_bench_raw.heads VALUES ($1, 1, $2) ON CONFLICT (id) DO UPDATE SET ov = EXCLUDED.ov, data = EXCLUDED.data",
                            &[&id, &p],
                        )
                        .await
                        .expect("update head");
                        raw.batch_execute("COMMIT").await.expect("commit");
                    }
                })
            }),
            ("s3 put 1KiB (pg run)", {
                let (s3, p) = (s3.clone(), payload.clone());
                let k = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                op(move || {
                    let (s3, p, i) = (s3.clone(), p.clone(), k.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
                    async move {
                        let put = s3.put_object().bucket(bucket).key(format!("o{i}")).body(ByteStream::from(p.into_bytes()));
                        put.send().await.expect("put");
                    }
                })
            }),
            ("udm pg create 1KiB", {
                let (c, d) = (c.clone(), doc.clone());
                let k = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                op(move || {
                    let (c, d, i) = (c.clone(), d.clone(), k.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
                    async move {
                        c.create(d, WriteOpts::id(&format!("o{i}"))).await.expect("create");
                    }
                })
            }),
        ],
    )
    .await;
    let total = WARMUP + ROUNDS;
    let at = udm_core::Timestamp::parse_rfc3339("9999-01-01T00:00:00Z").expect("ts");
    let counter = || Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let id = move |k: &Arc<std::sync::atomic::AtomicUsize>| {
        format!("o{}", k.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % total)
    };
    let reads = measure_interleaved(
        WARMUP,
        ROUNDS,
        vec![
            ("pg SELECT by key", {
                let (raw, k) = (raw.clone(), counter());
                op(move || {
                    let (raw, i) = (raw.clone(), id(&k));
                    async move {
                        let row = raw.query_one("SELECT data FROM udm_bench_raw.heads WHERE id = $1", &[&i]).await;
                        assert_eq!(row.expect("select").get::<_, String>(0).len(), 1000);
                    }
                })
            }),
            ("s3 get 1KiB (pg run)", {
                let (s3, k) = (s3.clone(), counter());
                op(move || {
                    let (s3, i) = (s3.clone(), id(&k));
                    async move {
                        let o = s3.get_object().bucket(bucket).key(i).send().await.expect("get");
                        assert_eq!(o.body.collect().await.expect("body").into_bytes().len(), 1000);
                    }
                })
            }),
            ("udm pg get_latest", {
                let (c, k) = (c.clone(), counter());
                op(move || {
                    let (c, i) = (c.clone(), id(&k));
                    async move {
                        c.get_latest(&i, ReadOpts::default()).await.expect("latest");
                    }
                })
            }),
            ("udm pg get_version", {
                let (c, k) = (c.clone(), counter());
                op(move || {
                    let (c, i) = (c.clone(), id(&k));
                    async move {
                        c.get_version(&i, udm_core::Ov::FIRST, ReadOpts::default()).await.expect("version");
                    }
                })
            }),
            ("udm pg as_of", {
                let (c, k) = (c.clone(), counter());
                op(move || {
                    let (c, i) = (c.clone(), id(&k));
                    async move {
                        c.as_of(&i, at, ReadOpts::default()).await.expect("as_of");
                    }
                })
            }),
        ],
    )
    .await;
    udm.admin().shutdown().await.expect("shutdown");
    let all: Vec<Stats> = writes.into_iter().chain(reads).collect();
    report(&all)
}

/// UDM operation → the raw PostgreSQL statements (and S3 call) it needs.
const RATIOS: &[(&str, &str, &str)] = &[
    ("udm pg create 1KiB", "pg INSERT + UPDATE transaction", "s3 put 1KiB (pg run)"),
    ("udm pg get_latest", "pg SELECT by key", "s3 get 1KiB (pg run)"),
    ("udm pg get_version", "pg SELECT by key", "s3 get 1KiB (pg run)"),
    ("udm pg as_of", "pg SELECT by key", "s3 get 1KiB (pg run)"),
];

fn report(all: &[Stats]) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    println!("\nPostgreSQL pair ({ROUNDS} interleaved rounds after {WARMUP} warm-up, sequential, loopback):");
    println!("{:<34} {:>10} {:>10} {:>10}", "operation", "p50 µs", "p90 µs", "p99 µs");
    for s in all {
        println!("{:<34} {:>10.0} {:>10.0} {:>10.0}", s.name, s.pct(0.5), s.pct(0.9), s.pct(0.99));
        out.insert(s.name.to_owned(), s.json());
    }
    let p50 = |name: &str| all.iter().find(|s| s.name == name).map(|s| s.pct(0.5)).unwrap_or(f64::NAN);
    println!("\nUDM on PostgreSQL, p50 as a ratio to the raw calls it needs:");
    for (udm, sql, s3) in RATIOS {
        let (u, q, b) = (p50(udm), p50(sql), p50(s3));
        println!(
            "{udm:<22} {u:>8.0} µs vs {sql} {q:.0} µs + {s3} {b:.0} µs = {:.2}x (vs the SQL alone {:.2}x)",
            u / (q + b),
            u / q
        );
        out.insert(format!("ratio {udm}"), json!(u / (q + b)));
        out.insert(format!("ratio {udm} / sql alone"), json!(u / q));
    }
    out
}
