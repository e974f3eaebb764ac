//! The metrics layer and the facade counters record the documented names and labels.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use serde_json::json;
use udm_core::ports::{BlobStore, Layer, MetaStore};
use udm_core::{ErrorKind, Op};
use udm_layers::MetricsLayer;
use udm_layers::metric::{self, FacadeCounters};
use udm_testkit::fixtures::{commit, key, ts, unique_ctx};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

/// `name{label=value,…}` → (counter total, histogram samples).
type Seen = Arc<Mutex<BTreeMap<String, (u64, usize)>>>;

#[derive(Default)]
struct TestRecorder {
    seen: Seen,
}

struct Handle {
    key: String,
    seen: Seen,
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.seen.lock().unwrap().entry(self.key.clone()).or_default().0 += value;
    }
    fn absolute(&self, _: u64) {}
}

impl HistogramFn for Handle {
    fn record(&self, _: f64) {
        self.seen.lock().unwrap().entry(self.key.clone()).or_default().1 += 1;
    }
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    labels.sort();
    if labels.is_empty() { key.name().to_owned() } else { format!("{}{{{}}}", key.name(), labels.join(",")) }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle { key: render(key), seen: self.seen.clone() }))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Handle { key: render(key), seen: self.seen.clone() }))
    }
}

fn recorded(f: impl AsyncFnOnce()) -> BTreeMap<String, (u64, usize)> {
    let recorder = TestRecorder::default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        metric::describe();
        rt.block_on(f());
    });
    recorder.seen.lock().unwrap().clone()
}

#[test]
fn port_calls_record_latency_and_errors_by_kind() {
    let seen = recorded(async || {
        let meta = MetricsLayer.layer(Arc::new(MemoryMeta::new()));
        let k = key(&unique_ctx("m"), "x");
        meta.commit(commit(&k, None, Op::Create, ts(5), "r", &json!({}))).await.unwrap();
        meta.commit(commit(&k, None, Op::Create, ts(5), "r2", &json!({}))).await.unwrap_err();
        let blobs = MetricsLayer.layer(MemoryBlobs::new());
        blobs.get("a/missing").await.unwrap_err();
    });
    assert_eq!(seen["udm_port_call_seconds{op=commit,port=meta}"].1, 2, "{seen:?}");
    assert_eq!(seen["udm_port_call_seconds{op=get,port=blob}"].1, 1);
    assert_eq!(seen["udm_port_errors_total{kind=version_conflict,op=commit,port=meta}"].0, 1);
    assert_eq!(seen["udm_port_errors_total{kind=not_found,op=get,port=blob}"].0, 1);
    assert_eq!(seen.keys().filter(|k| k.starts_with("udm_port_errors_total")).count(), 2, "{seen:?}");
}

#[test]
fn facade_counters_count_locally_and_in_the_recorder() {
    let counters = FacadeCounters::default();
    let seen = recorded(async || {
        counters.writes.inc();
        counters.writes.inc();
        counters.reads.inc();
        counters.snapshot_reads.inc();
        counters.conflicts.inc();
        counters.replays.inc();
        metric::retry("version_conflict");
        metric::op_latency("create", Duration::from_millis(3));
        metric::op_error("create", ErrorKind::NotFound);
    });
    assert_eq!((counters.writes.get(), counters.reads.get(), counters.replays.get()), (2, 1, 1));
    let want = [
        ("udm_writes_total", 2),
        ("udm_reads_total", 1),
        ("udm_snapshot_reads_total", 1),
        ("udm_write_conflicts_total", 1),
        ("udm_write_replays_total", 1),
        ("udm_retries_total{reason=version_conflict}", 1),
        ("udm_op_errors_total{kind=not_found,op=create}", 1),
    ];
    for (name, n) in want {
        assert_eq!(seen.get(name).map(|s| s.0), Some(n), "{name}: {seen:?}");
    }
    assert_eq!(seen["udm_op_seconds{op=create}"].1, 1);
}
