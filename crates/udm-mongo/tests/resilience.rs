//! Deadlines, retry budgets and list pushdown against the real test server (SecantusDB) and
//! against silent TCP peers. Tests assert error kinds and answers, never timings.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bson::doc;
use serde_json::{Value, json};
use udm_core::ports::MetaStore;
use udm_core::predicate::Predicate;
use udm_core::query::{HeadQuery, Order, select_heads};
use udm_core::{ErrorKind, Head, Op};
use udm_mongo::{MongoConfig, MongoStore};
use udm_testkit::fixtures::{commit, key, ts, unique_ctx};
use udm_testkit::services::mongo_uri;

const SHORT: Duration = Duration::from_millis(300);

fn short_config(uri: &str) -> MongoConfig {
    MongoConfig::new(uri, "udm_resilience")
        .with_connect_timeout(SHORT)
        .with_server_selection_timeout(SHORT)
        .with_call_timeout(Duration::from_secs(1))
        .with_ping_timeout(Duration::from_millis(500))
        .with_commit_retry_budget(Duration::from_millis(500))
}

async fn store() -> MongoStore {
    let cfg = MongoConfig::new(&mongo_uri(), "udm_resilience");
    MongoStore::connect(&cfg).await.unwrap_or_else(|e| panic!("connecting to {}: {e}", cfg.uri))
}

/// A TCP peer that accepts connections and never answers (kept open until the test ends).
fn silent_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    port
}

/// A loopback proxy to the test server that forwards until `stall` is set, then holds every
/// byte (connections stay open, nothing more arrives either way).
fn stallable_proxy(upstream: &str) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stall = Arc::new(AtomicBool::new(false));
    let upstream = upstream.to_owned();
    let flag = stall.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else { continue };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server.try_clone().unwrap(), client.try_clone().unwrap()),
            ] {
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        while flag.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    (port, stall)
}

/// host:port of the test server's URI (`mongodb://host:port/...`).
fn server_address(uri: &str) -> String {
    let rest = uri.strip_prefix("mongodb://").expect("a mongodb:// test uri");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap().to_owned()
}

fn assert_unavailable(what: &str, r: udm_core::Result<impl std::fmt::Debug>) {
    let e = r.expect_err(what);
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{what}: {e}");
    assert!(e.is_retryable(), "{what}: {e}");
}

/// `connect` to a peer that accepts and never answers, or to a closed port, ends with a
/// retryable `Unavailable` (it used to depend on driver defaults for every step).
#[tokio::test]
async fn connect_to_a_silent_or_closed_server_is_unavailable() {
    let silent = format!("mongodb://127.0.0.1:{}/?directConnection=true", silent_listener());
    assert_unavailable("silent peer", MongoStore::connect(&short_config(&silent)).await);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let closed = format!("mongodb://127.0.0.1:{closed}/?directConnection=true");
    assert_unavailable("closed port", MongoStore::connect(&short_config(&closed)).await);
}

/// A server that stops answering on established connections: every call ends with a
/// retryable `Unavailable` at its deadline instead of hanging (the driver has no socket
/// timeout, so without the whole-call deadline `head` waited forever).
#[tokio::test]
async fn calls_to_a_stalled_server_hit_their_deadline() {
    let (port, stall) = stallable_proxy(&server_address(&mongo_uri()));
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let s = MongoStore::connect(&short_config(&uri)).await.expect("connect through the proxy");
    let ctx = unique_ctx("stall");
    let k = key(&ctx, "x");
    assert!(s.head(&k).await.unwrap().is_none());
    stall.store(true, Ordering::SeqCst);
    assert_unavailable("head", s.head(&k).await);
    assert_unavailable("ping", s.ping().await);
    assert_unavailable("ping_latency", s.ping_latency().await);
    assert_unavailable("commit", s.commit(commit(&k, None, Op::Create, ts(1), "r1", &json!({}))).await);
    assert_unavailable("list", s.list_heads(&ctx, &HeadQuery::default()).await);
    stall.store(false, Ordering::SeqCst);
}

/// A commit that keeps losing to a transaction holding its collection's CV document gives up
/// when the retry budget is spent, with a retryable `Unavailable` naming the budget (it used
/// to retry a fixed number of times whatever that took, and the commit forever on unknown
/// results).
#[tokio::test]
async fn commit_retries_stop_at_the_budget() {
    let uri = mongo_uri();
    let s = MongoStore::connect(&short_config(&uri)).await.unwrap();
    let ctx = unique_ctx("budget");
    let k = key(&ctx, "x");
    s.commit(commit(&k, None, Op::Create, ts(1), "first", &json!({}))).await.unwrap();

    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let cvs = client.database("udm_resilience").collection::<bson::Document>("udm_collections");
    let mut holder = client.start_session().await.unwrap();
    holder.start_transaction().await.unwrap();
    let id = udm_core::layout::collection_record_prefix(&ctx);
    cvs.update_one(doc! {"_id": &id}, doc! {"$inc": {"cv": 1_i64}}).session(&mut holder).await.unwrap();

    let second = commit(&k, Some(udm_core::Ov::FIRST), Op::Update, ts(2), "second", &json!({"a": 1}));
    let e = s.commit(second.clone()).await.expect_err("blocked by the open transaction");
    holder.abort_transaction().await.unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(e.message().contains("commit retry budget of 0.5s exhausted after"), "{e}");
    // Once the other transaction is gone the same commit goes through.
    assert_eq!(s.commit(second).await.unwrap().ov.get(), 2);
}

fn value_of(i: usize) -> Value {
    // Mostly numbers (int and float), with every other class mixed in.
    match i % 20 {
        0 => Value::Null,
        1 => json!(i % 40 == 1),
        2 => json!(format!("s{:03}", i % 37)),
        3 => json!([i % 3]),
        4 => json!({"k": i % 4}),
        5 => json!(9_007_199_254_740_993_u64 + (i as u64 % 3)),
        6 => json!(-9_007_199_254_740_993_i64),
        7 => json!((i % 11) as f64 + 0.5),
        8 => json!(i % 11),
        _ => json!((i * 7919) % 101),
    }
}

async fn pages(s: &MongoStore, ctx: &udm_core::RouteContext, mut q: HeadQuery, all: &[Head]) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let page = s.list_heads(ctx, &q).await.expect("list");
        let want = select_heads(all.to_vec(), &q).unwrap();
        let ids = |p: &udm_core::query::Page<Head>| p.items.iter().map(|h| h.key.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&page), ids(&want), "page of {q:?}");
        assert_eq!(page.next, want.next, "cursor of {q:?}");
        got.extend(ids(&page));
        match page.next {
            Some(n) => q.after = Some(n),
            None => return got,
        }
    }
}

/// Lists sorted by an indexed prop, pushed down to the server, give exactly the reference's
/// pages over 300 heads with every sort class (absent, null, booleans, exact and inexact
/// numbers, strings, arrays, objects), both directions, with and without filters.
#[tokio::test]
async fn sorted_lists_match_the_reference_on_every_page() {
    let s = store().await;
    s.ensure_indexes(&["v".to_owned(), "g".to_owned()]).await.unwrap();
    s.ensure_indexes(&["v".to_owned(), "g".to_owned()]).await.expect("idempotent");
    let names = s.head_index_names().await.unwrap();
    assert!(names.iter().any(|n| n == "ctx_1_deleted_1_sk.v_1_oid_1"), "{names:?}");
    let ctx = unique_ctx("sorted");
    for i in 0..300 {
        let k = key(&ctx, &format!("o{i:03}"));
        let mut data = json!({"g": if i % 3 == 0 { "a" } else { "b" }});
        if i % 20 != 19 {
            data["v"] = value_of(i);
        }
        // Index every top-level prop, arrays and objects included (the fixture skips them).
        let indexed = data.as_object().cloned().unwrap();
        let mut c = commit(&k, None, Op::Create, ts(1), &format!("c{i}"), &data);
        c.version.indexed = indexed.clone();
        s.commit(c).await.unwrap();
        if i % 50 == 7 {
            let mut d = commit(&k, Some(udm_core::Ov::FIRST), Op::Delete, ts(2), &format!("d{i}"), &data);
            d.version.indexed = indexed;
            s.commit(d).await.unwrap();
        }
    }
    let all: Vec<Head> = s
        .list_heads(&ctx, &HeadQuery { include_deleted: true, limit: 1000, ..HeadQuery::default() })
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 300);
    let filters = [
        json!({}),
        json!({"g": "a"}),
        json!({"v": {"$gte": 5}}),
        json!({"$or": [{"g": "a"}, {"v": "s001"}]}),
        json!({"v": {"$ne": null}, "g": {"$in": ["b"]}}),
    ];
    for filter in &filters {
        for order in [Order::Asc, Order::Desc] {
            for (limit, include_deleted) in [(10, false), (40, true)] {
                let q = HeadQuery {
                    filter: Predicate::parse(filter).unwrap(),
                    sort_by: Some("v".into()),
                    order,
                    limit,
                    include_deleted,
                    ..HeadQuery::default()
                };
                let ids = pages(&s, &ctx, q.clone(), &all).await;
                let want = select_heads(all.clone(), &HeadQuery { limit: 1000, after: None, ..q }).unwrap();
                assert_eq!(ids.len(), want.items.len(), "{filter} {order:?} {limit}");
            }
        }
    }
    // Sorting by a prop no head has, and by id with an equality filter, also page exactly.
    let q = HeadQuery { sort_by: Some("nope".into()), limit: 25, ..HeadQuery::default() };
    assert_eq!(pages(&s, &ctx, q, &all).await.len(), 294);
    let q = HeadQuery { filter: Predicate::parse(&json!({"g": "a"})).unwrap(), limit: 9, ..HeadQuery::default() };
    assert_eq!(pages(&s, &ctx, q, &all).await.len(), 98);
}
