//! The write optimizer (`write_optimization`): a group commit waits up to its window for a
//! full batch, snapshot puts in flight stay under `max_concurrency` — counted, not timed —, and
//! debounced counters are added later (and on shutdown), with a recount restoring what a crash lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use udm_core::config::Config;
use udm_core::ports::{BlobStore, Layered, LayeredBlob, PutOptions, PutResult};
use udm_core::{Result, RouteContext};
use udm_facade::{Collection, Pair, Udm, WriteOpts};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

/// Counts snapshot puts (not the shadow log's) in flight at once; each takes a while.
#[derive(Debug)]
struct SlowPuts {
    inner: Arc<dyn BlobStore>,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

impl Layered for SlowPuts {
    type Inner = dyn BlobStore;
    fn inner(&self) -> &Self::Inner {
        &*self.inner
    }
}

#[async_trait::async_trait]
impl LayeredBlob for SlowPuts {
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
        if !key.contains("/versions/") {
            return self.inner.put_with_etag(key, bytes, options).await;
        }
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = self.inner.put_with_etag(key, bytes, options).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

fn udm(enabled: bool, window_ms: u64, max_batch: usize, max_concurrency: usize) -> (Udm, Arc<AtomicUsize>) {
    let max = Arc::new(AtomicUsize::new(0));
    let json = SlowPuts { inner: Arc::new(MemoryBlobs::new()), now: Arc::default(), max: max.clone() };
    let meta = Arc::new(MemoryMeta::new());
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone(),
        counters: meta,
        json: Arc::new(json),
        content: Arc::new(MemoryBlobs::new()),
        describe: "memory".into(),
    };
    let mut cfg = Config::in_memory();
    let w = &mut cfg.write_optimization;
    (w.enabled, w.batch_window_ms, w.max_batch, w.max_concurrency) = (enabled, window_ms, max_batch, max_concurrency);
    (Udm::builder().pair(pair).config(cfg).build().unwrap(), max)
}

fn coll(udm: &Udm) -> Collection {
    udm.with(RouteContext::new("t", "d", "c").unwrap())
}

async fn creates(c: &Collection, n: usize) {
    let writes: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.create(json!({"i": i}), WriteOpts::id(&format!("o{i}"))).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_fills_batches() {
    // 32 concurrent creates, batches of up to 16: once the lane is busy, each batch waits
    // for a full 16 (the first may carry whatever was there when the lane started).
    let (u, _) = udm(true, 2_000, 16, 64);
    creates(&coll(&u), 32).await;
    let s = u.admin().stats();
    assert_eq!(s.batched_commits, 32, "{s:?}");
    assert!(s.commit_batches <= 4, "the window filled the batches: {s:?}");
    assert!(s.batch_waits >= 1, "{s:?}");
    assert!(s.batch_wait_micros <= s.batch_waits * 2_000_000 + 100_000, "a wait never outlasts the window: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_writer_waits_for_nobody() {
    let (u, _) = udm(true, 5_000, 16, 64);
    let c = coll(&u);
    for i in 0..3 {
        c.create(json!({"i": i}), WriteOpts::id(&format!("o{i}"))).await.unwrap();
    }
    let s = u.admin().stats();
    assert_eq!((s.commit_batches, s.batch_waits), (3, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_puts_in_flight_stay_under_the_limit() {
    let (u, max) = udm(true, 1, 64, 3);
    creates(&coll(&u), 24).await;
    assert_eq!(max.load(Ordering::SeqCst), 3, "at most max_concurrency puts at once (and the limit was reached)");
    let (u, max) = udm(false, 1, 64, 3);
    creates(&coll(&u), 24).await;
    assert!(max.load(Ordering::SeqCst) > 3, "without the optimizer the puts are not limited");
    assert_eq!(u.admin().stats().batch_waits, 0, "no window without the optimizer");
}

/// The stores of one pair, shared by the `Udm`s (processes) a test builds.
type Shared = (Arc<MemoryMeta>, Arc<MemoryBlobs>, Arc<MemoryBlobs>);

fn shared() -> Shared {
    (Arc::new(MemoryMeta::new()), Arc::new(MemoryBlobs::new()), Arc::new(MemoryBlobs::new()))
}

fn debounced(ms: u64, (meta, json, content): &Shared) -> Udm {
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone(),
        counters: meta.clone(),
        json: json.clone(),
        content: content.clone(),
        describe: "memory".into(),
    };
    let mut cfg = Config::in_memory();
    cfg.write_optimization.counter_debounce_ms = ms;
    Udm::builder().pair(pair).config(cfg).build().unwrap()
}

async fn writes(c: &Collection) {
    for i in 0..6 {
        c.create(json!({"i": i}), WriteOpts::id(&format!("o{i}"))).await.unwrap();
    }
    c.update("o0", json!({"v": 2}), None, WriteOpts::default()).await.unwrap();
    c.delete("o1", None, WriteOpts::default()).await.unwrap();
}

fn want() -> std::collections::BTreeMap<String, i64> {
    [("created", 6), ("updated", 1), ("deleted", 1), ("live", 5)].into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounced_counters_are_added_later_and_on_shutdown() {
    let meta = shared();
    let u = debounced(50, &meta);
    let c = coll(&u);
    writes(&c).await;
    let started = std::time::Instant::now();
    while u.counters().totals(c.context()).await.unwrap() != want() {
        assert!(started.elapsed() < Duration::from_secs(10), "the debounced deltas were never added");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Shutdown adds what is still pending, without waiting for the timer.
    let u = debounced(60_000, &meta);
    let c = coll(&u);
    c.create(json!({}), WriteOpts::id("late")).await.unwrap();
    let before = u.counters().totals(c.context()).await.unwrap();
    assert_eq!(before, want(), "a debounced commit carries no counter statement");
    u.admin().shutdown().await.unwrap();
    let after = u.counters().totals(c.context()).await.unwrap();
    assert_eq!((after["created"], after["live"]), (7, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recount_restores_what_a_crash_lost() {
    let meta = shared();
    let u = debounced(60_000, &meta);
    let c = coll(&u);
    writes(&c).await;
    let ctx = c.context().clone();
    // A crash: the process ends without shutdown; its pending deltas are gone.
    drop((c, u));
    let u = debounced(0, &meta);
    assert!(u.counters().totals(&ctx).await.unwrap().is_empty(), "the deltas were lost");
    assert_eq!(u.admin().recount(&ctx).await.unwrap(), want());
    assert_eq!(u.counters().totals(&ctx).await.unwrap(), want(), "the recount replaced the stored totals");
    // Idempotent, and counters move on from there.
    assert_eq!(u.admin().recount(&ctx).await.unwrap(), want());
    coll(&u).create(json!({}), WriteOpts::id("next")).await.unwrap();
    assert_eq!(u.counters().totals(&ctx).await.unwrap()["created"], 7);
}
