//! Faults between the store and a real PostgreSQL server (the test server of
//! `cargo xtask services up`, behind the test kit's loopback fault proxy): a silent server
//! is cut off by the call deadline with a retryable `Unavailable`, the connection cut off
//! inside its transaction is never reused, and the store recovers when the network does.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;
use udm_core::counters::CounterDelta;
use udm_core::ports::{CounterStore, MetaStore};
use udm_core::{ErrorKind, Op, Ov};
use udm_postgres::{PostgresConfig, PostgresStore};
use udm_testkit::fixtures::{commit, key, ts, unique_ctx};
use udm_testkit::proxy::{FaultProxy, Mode};
use udm_testkit::services::postgres_url;

/// This process's schema (dropped by the conformance tests' cleanup once it is gone).
fn schema() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("udm_test_{}_{secs}", std::process::id())
    })
    .clone()
}

/// A proxy in front of the test server, and the URL that goes through it.
async fn proxied() -> (FaultProxy, String) {
    let url = postgres_url();
    let (head, rest) = url.rsplit_once('@').unwrap_or_else(|| panic!("no host in {url}"));
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let upstream = hostport.parse().unwrap_or_else(|e| panic!("{hostport}: {e}"));
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let through = format!("{head}@127.0.0.1:{}/{path}", proxy.port());
    (proxy, through)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_hits_the_deadline_and_the_store_recovers() {
    let (proxy, url) = proxied().await;
    let cfg =
        PostgresConfig::new(&url).with_schema(&schema()).with_pool_size(1).with_timeout(Duration::from_millis(800));
    let s = PostgresStore::connect(&cfg).await.unwrap();
    let ctx = unique_ctx("stall");
    let k = key(&ctx, "o");
    s.commit(commit(&k, None, Op::Create, ts(1), "r1", &json!({"n": 1}))).await.unwrap();

    proxy.set(Mode::Stall);
    let started = Instant::now();
    let update = commit(&k, Some(Ov::FIRST), Op::Update, ts(2), "r2", &json!({"n": 2}));
    let e = s.commit(update.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    proxy.set(Mode::Pass);
    // The replay is safe: it commits, or answers as a replay if the first attempt had.
    let done = s.commit(update).await.unwrap();
    assert_eq!(done.ov, Ov::new(2).unwrap());
    // The one pooled connection cut off inside its transaction was not reused: every later
    // call sees committed state and commits on its own.
    s.commit(commit(&k, Some(Ov::new(2).unwrap()), Op::Update, ts(3), "r3", &json!({"n": 3}))).await.unwrap();
    let fresh = PostgresStore::connect(&PostgresConfig::new(&postgres_url()).with_schema(&schema())).await.unwrap();
    assert_eq!(fresh.head(&k).await.unwrap().map(|h| h.ov), Some(Ov::new(3).unwrap()));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_retryable_and_heals() {
    let (proxy, url) = proxied().await;
    let cfg = PostgresConfig::new(&url).with_schema(&schema()).with_pool_size(2).with_timeout(Duration::from_secs(2));
    let s = PostgresStore::connect(&cfg).await.unwrap();
    s.ping().await.unwrap();
    proxy.set(Mode::Outage);
    let e = s.ping().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    proxy.set(Mode::Pass);
    // Closed connections are dropped from the pool; new ones are opened.
    let mut healed = false;
    for _ in 0..20 {
        if s.ping().await.is_ok() {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healed, "the store did not recover after the outage");
    proxy.stop().await;
}

/// Data the server rejects (a NUL in a counter name) is a validation error, and nothing of
/// the batch is applied.
#[tokio::test]
async fn rejected_data_is_a_validation_error() {
    let s = PostgresStore::connect(&PostgresConfig::new(&postgres_url()).with_schema(&schema())).await.unwrap();
    let ctx = unique_ctx("nul");
    let d = |n: &str| CounterDelta { ctx: ctx.clone(), counter: n.into(), delta: 1 };
    let e = s.add(&[d("fine"), d("bad\0name")]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Validation, "{e}");
    assert!(s.totals(&ctx).await.unwrap().is_empty(), "all or nothing");
}

/// Racing commits on **fresh** connections (statements not prepared yet): the reads of each
/// commit run after its collection lock, so exactly one racer wins each round and every
/// other one gets a `VersionConflict` (never a duplicate-key `Conflict` from a stale read).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commits_on_fresh_connections_read_after_the_lock() {
    for round in 0..40 {
        let s = std::sync::Arc::new(
            PostgresStore::connect(&PostgresConfig::new(&postgres_url()).with_schema(&schema()).with_pool_size(8))
                .await
                .unwrap(),
        );
        let k = key(&unique_ctx("fresh"), "hot");
        s.commit(commit(&k, None, Op::Create, ts(1), "init", &json!({}))).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let (s, k) = (s.clone(), k.clone());
                tokio::spawn(async move {
                    s.commit(commit(&k, Some(Ov::FIRST), Op::Update, ts(2), &format!("w{w}"), &json!({"w": w}))).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e.kind(), ErrorKind::VersionConflict, "round {round}: {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
}
