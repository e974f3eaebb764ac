//! The conformance suite on PostgreSQL, against the real test server (started by
//! `cargo xtask services up`), plus the adapter's own settings, errors and migrations.
//! Without a server these tests fail, naming the command.
//!
//! Each test process uses a schema of its own (`udm_test_<pid>_<start secs>`), so reruns and
//! concurrent runs never see each other's rows; the first connect of a process drops the
//! schemas of test processes that are gone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use udm_core::ErrorKind;
use udm_core::ports::{CounterStore, MetaStore, QueueStore};
use udm_postgres::{PostgresConfig, PostgresStore};
use udm_testkit::conformance::MetaAdapters;
use udm_testkit::services::postgres_url;

/// This process's schema.
fn schema() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("udm_test_{}_{secs}", std::process::id())
    })
    .clone()
}

/// Drops the schemas of earlier test processes that are gone (once per process).
async fn drop_stale_schemas() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
    tokio::spawn(conn);
    let rows =
        client.query("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'udm\\_test\\_%'", &[]).await.unwrap();
    let mine = schema();
    for r in rows {
        let name: String = r.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        let stale = !alive || (pid == Some(std::process::id()) && !name.starts_with(&mine));
        if stale {
            // Another process may drop it at the same moment: errors are fine.
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await;
        }
    }
}

fn config() -> PostgresConfig {
    PostgresConfig::new(&postgres_url()).with_schema(&schema())
}

async fn store() -> Arc<PostgresStore> {
    drop_stale_schemas().await;
    let cfg = config();
    Arc::new(PostgresStore::connect(&cfg).await.unwrap_or_else(|e| panic!("connecting to {cfg:?}: {e}")))
}

mod postgres_meta {
    use super::*;
    udm_testkit::conformance_tests!(meta, async { MetaAdapters::from_one(store().await) });
}

mod postgres_queue {
    use super::*;
    udm_testkit::conformance_tests!(queue, async { store().await as Arc<dyn QueueStore> });
}

mod postgres_counter {
    use super::*;
    udm_testkit::conformance_tests!(counter, async { store().await as Arc<dyn CounterStore> });
}

/// Malformed URLs and settings are `Config` errors, before any IO.
#[tokio::test]
async fn bad_urls_are_config_errors() {
    let bad = [
        PostgresConfig::new("http://127.0.0.1:5432/postgres"),
        PostgresConfig::new("postgres://127.0.0.1:notaport/postgres"),
        PostgresConfig::new("mongodb://127.0.0.1"),
        PostgresConfig::new(&postgres_url()).with_schema("Not-A-Schema"),
        PostgresConfig::new(&postgres_url()).with_pool_size(0),
    ];
    for cfg in bad {
        let e = PostgresStore::connect(&cfg).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{cfg:?}: {e}");
    }
}

/// A database that does not exist is a `Config` error, not a retryable one.
#[tokio::test]
async fn unknown_database_is_a_config_error() {
    let url = postgres_url();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    let e = PostgresStore::connect(&PostgresConfig::new(&format!("{base}/no_such_db_udm"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(!e.is_retryable());
}

/// An unreachable server is a retryable `Unavailable`, quickly.
#[tokio::test]
async fn unreachable_server_is_retryable() {
    let started = Instant::now();
    let cfg = PostgresConfig::new("postgres://postgres@127.0.0.1:9/postgres").with_timeout(Duration::from_secs(3));
    let e = PostgresStore::connect(&cfg).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // A server that accepts connections but never answers: the deadline answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://postgres@{}/postgres", silent.local_addr().unwrap());
    let started = Instant::now();
    let e =
        PostgresStore::connect(&PostgresConfig::new(&url).with_timeout(Duration::from_millis(300))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// Neither the config nor the store prints the password.
#[tokio::test]
async fn debug_redacts_the_password() {
    let cfg = PostgresConfig::new("postgres://udm:s3cret-pw@127.0.0.1:9/udm?password=s3cret-pw");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(shown.contains("udm:***@127.0.0.1:9/udm"), "{shown}");
    let s = store().await;
    assert!(!format!("{s:?}").contains("password"));
    assert!(format!("{s:?}").contains(&schema()));
}

/// Connecting again (and many times at once) applies nothing twice: migrations are
/// idempotent and serialized by the advisory lock; data survives reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent() {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let fresh = format!("{}_m{}", schema(), RUN.fetch_add(1, Ordering::SeqCst));
    let cfg = PostgresConfig::new(&postgres_url()).with_schema(&fresh).with_pool_size(2);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let cfg = cfg.clone();
            tokio::spawn(async move { PostgresStore::connect(&cfg).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("concurrent first connects all succeed");
    }
    let s = PostgresStore::connect(&cfg).await.unwrap();
    let ctx = udm_testkit::fixtures::unique_ctx("mig");
    let k = udm_testkit::fixtures::key(&ctx, "o");
    let c = udm_testkit::fixtures::commit(
        &k,
        None,
        udm_core::Op::Create,
        udm_testkit::fixtures::ts(1),
        "r1",
        &serde_json::json!({}),
    );
    s.commit(c).await.unwrap();
    let again = PostgresStore::connect(&cfg).await.unwrap();
    assert_eq!(again.head(&k).await.unwrap().map(|h| h.ov.get()), Some(1), "data kept across connects");
    assert_eq!(PostgresStore::schema_version(), 1);
    again.drop_schema().await.unwrap();
}

/// Health answers.
#[tokio::test]
async fn ping_answers() {
    store().await.ping().await.unwrap();
}
