//! The fault layer: fail before, fail after applying, latency, absent records, rules by
//! operation and prefix, seeded probabilities, counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use udm_core::ports::{BlobStore, Layer, MetaStore, PutOptions, QueueEntry, QueueState, QueueStore};
use udm_core::{Cv, ErrorKind, Op, Ov, RouteContext};
use udm_layers::{FaultLayer, FaultRule, FaultStats, Faulty, Port};
use udm_testkit::fixtures::{commit, key, rid, ts, unique_ctx};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta, MemoryQueue};

fn meta(seed: u64) -> (FaultLayer, Arc<MemoryMeta>, Faulty<Arc<MemoryMeta>>) {
    let faults = FaultLayer::seeded(seed);
    let inner = Arc::new(MemoryMeta::new());
    (faults.clone(), inner.clone(), faults.layer(inner))
}

#[tokio::test]
async fn fail_before_changes_nothing() {
    let (faults, inner, store) = meta(1);
    let rule = faults.add(FaultRule::fail_before().op("commit").next(1));
    let ctx = unique_ctx("before");
    let k = key(&ctx, "x");
    let c = commit(&k, None, Op::Create, ts(5), "req-1", &json!({"v": 1}));
    let e = store.commit(c.clone()).await.unwrap_err();
    assert_eq!((e.kind(), e.is_retryable()), (ErrorKind::Unavailable, true), "{e}");
    assert!(inner.head(&k).await.unwrap().is_none(), "never reached the store");
    assert!(inner.find_request(&ctx, &rid("req-1")).await.unwrap().is_none());
    assert_eq!(inner.collection_cv(&ctx).await.unwrap(), Cv::ZERO);
    assert_eq!((faults.hits(rule), faults.stats()), (1, FaultStats { fail_before: 1, ..FaultStats::default() }));
    let done = store.commit(c).await.expect("the rule is used up");
    assert_eq!((done.ov, done.replayed), (Ov::FIRST, false));
}

#[tokio::test]
async fn fail_after_applies_and_the_replay_says_so() {
    let (faults, inner, store) = meta(2);
    faults.add(FaultRule::fail_after().port(Port::Meta).op("commit").next(1));
    let k = key(&unique_ctx("after"), "x");
    let c = commit(&k, None, Op::Create, ts(5), "req-1", &json!({"v": 1}));
    let e = store.commit(c.clone()).await.unwrap_err();
    assert_eq!((e.kind(), e.is_retryable()), (ErrorKind::Unavailable, true), "{e}");
    assert_eq!(inner.head(&k).await.unwrap().map(|h| h.ov), Some(Ov::FIRST), "the commit was applied");
    let replay = store.commit(c).await.expect("replay by request id");
    assert_eq!((replay.ov, replay.replayed), (Ov::FIRST, true));
    assert_eq!(faults.stats().fail_after, 1);
}

#[tokio::test]
async fn blob_faults_before_and_after_a_create_only_put() {
    let faults = FaultLayer::seeded(3);
    let inner = Arc::new(MemoryBlobs::new());
    let blobs = faults.layer(inner.clone());
    faults.add(FaultRule::fail_before().op("put").next(1));
    assert!(blobs.put("a/b", b"1".to_vec(), &PutOptions::create_json()).await.is_err());
    assert!(inner.is_empty(), "fail-before wrote nothing");
    faults.add(FaultRule::fail_after().op("put").next(1));
    assert!(blobs.put("a/b", b"1".to_vec(), &PutOptions::create_json()).await.unwrap_err().is_retryable());
    assert_eq!(inner.get("a/b").await.unwrap(), b"1", "fail-after stored it");
    let again = blobs.put("a/b", b"1".to_vec(), &PutOptions::create_json()).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "what a retried create-only put sees");
    assert_eq!(faults.stats(), FaultStats { fail_before: 1, fail_after: 1, ..FaultStats::default() });
}

#[tokio::test]
async fn prefix_selects_one_collection() {
    let (faults, _, store) = meta(4);
    let (hit, miss) = (unique_ctx("hit"), unique_ctx("miss"));
    faults.add(FaultRule::fail_before().prefix(&udm_core::layout::collection_record_prefix(&hit)));
    let c = |ctx: &RouteContext| commit(&key(ctx, "x"), None, Op::Create, ts(5), "r", &json!({}));
    assert!(store.commit(c(&hit)).await.is_err());
    assert!(store.commit(c(&miss)).await.is_ok());
    assert!(store.head(&key(&hit, "x")).await.is_err(), "every op in the collection");
    assert!(store.ping().await.is_ok(), "calls without a subject never match a prefix");
}

async fn pattern(seed: u64) -> Vec<bool> {
    let (faults, _, store) = meta(seed);
    faults.add(FaultRule::fail_before().op("ping").probability(0.3));
    let mut out = Vec::new();
    for _ in 0..200 {
        out.push(store.ping().await.is_err());
    }
    out
}

#[tokio::test]
async fn probabilities_are_seeded() {
    let a = pattern(42).await;
    assert_eq!(a, pattern(42).await, "same seed, same faults");
    assert_ne!(a, pattern(43).await, "another seed, other faults");
    let failed = a.iter().filter(|f| **f).count();
    assert!((30..=90).contains(&failed), "about 30 % of 200: {failed}");
}

#[tokio::test]
async fn latency_delays_the_call() {
    let (faults, _, store) = meta(5);
    faults.add(FaultRule::latency(Duration::from_millis(40)).op("ping"));
    let start = Instant::now();
    store.ping().await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(40));
    assert_eq!(faults.stats().latency, 1);
}

#[tokio::test]
async fn absent_hides_records_until_removed() {
    let (faults, _, store) = meta(6);
    let k = key(&unique_ctx("absent"), "x");
    store.commit(commit(&k, None, Op::Create, ts(5), "r", &json!({}))).await.unwrap();
    let hide = faults.add(FaultRule::absent().op("version"));
    assert!(store.version(&k, Ov::FIRST).await.unwrap().is_none());
    assert!(store.head(&k).await.unwrap().is_some(), "other ops answer");
    faults.remove(hide);
    assert!(store.version(&k, Ov::FIRST).await.unwrap().is_some());
    assert_eq!((faults.hits(hide), faults.stats().absent), (1, 1));
    faults.add(FaultRule::absent());
    assert_eq!(store.collection_cv(&k.ctx).await.unwrap(), Cv(1), "answers that cannot be absent are kept");
}

#[tokio::test]
async fn queue_fail_before_enqueues_nothing() {
    let faults = FaultLayer::seeded(7);
    let queue = faults.layer(MemoryQueue::new());
    faults.add(FaultRule::fail_before().port(Port::Queue).next(1));
    let (k, r) = (key(&unique_ctx("q"), "x"), rid("req-1"));
    let entry = QueueEntry {
        id: QueueEntry::id_for(&k, &r),
        key: k,
        request_id: r,
        payload: json!({}),
        attempts: 0,
        enqueued_at: ts(1),
        next_attempt_at: ts(1),
        leased_until: None,
        last_error: None,
        state: QueueState::Pending,
    };
    assert!(queue.enqueue(entry.clone()).await.is_err());
    assert_eq!(queue.stats(ts(1)).await.unwrap().pending, 0);
    queue.enqueue(entry).await.unwrap();
    assert_eq!(queue.stats(ts(1)).await.unwrap().pending, 1);
}

/// The blob port's v2 operations are intercepted by name: every put (a compare-and-swap
/// included) is `put`; `get_with_etag` and `list_with_delimiter` are their own ops.
#[tokio::test]
async fn blob_v2_operations_are_selectable_by_op() {
    use udm_core::ports::ETag;
    let faults = FaultLayer::seeded(9);
    let inner = Arc::new(MemoryBlobs::new());
    let blobs = faults.layer(inner.clone());
    let etag = blobs.put_with_etag("a/b", b"1".to_vec(), &PutOptions::create_json()).await.unwrap().etag.unwrap();
    faults.add(FaultRule::fail_after().op("put").next(1));
    let lost = blobs.put("a/b", b"2".to_vec(), &PutOptions::if_match(etag.clone(), "text/plain")).await.unwrap_err();
    assert!(lost.is_retryable(), "{lost}");
    assert_eq!(inner.get("a/b").await.unwrap(), b"2", "the swap was applied, its acknowledgement lost");
    let retried = blobs.put("a/b", b"2".to_vec(), &PutOptions::if_match(etag, "text/plain")).await.unwrap_err();
    assert_eq!(retried.kind(), ErrorKind::Conflict, "what a blind retry of a swap sees");
    faults.add(FaultRule::fail_before().op("get_with_etag").next(1));
    assert!(blobs.get_with_etag("a/b").await.is_err());
    assert_eq!(blobs.get("a/b").await.unwrap(), b"2", "plain gets are another op");
    faults.add(FaultRule::fail_before().op("list_with_delimiter").prefix("a/").next(1));
    assert!(blobs.list_with_delimiter("a/", None, 10).await.is_err());
    assert_eq!(blobs.list_with_delimiter("a/", None, 10).await.unwrap().keys, ["a/b"]);
    assert!(blobs.put("a/c", b"x".to_vec(), &PutOptions::if_match(ETag::new("\"g0\""), "x")).await.is_err());
    assert_eq!(faults.stats(), FaultStats { fail_before: 2, fail_after: 1, ..FaultStats::default() });
}
