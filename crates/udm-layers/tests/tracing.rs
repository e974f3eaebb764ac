//! The tracing layer records one span per port call with the call's identifiers and, on
//! failure, the error kind — and never document data.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use udm_core::ports::{BlobStore, Layer, MetaStore};
use udm_core::{Op, RouteContext};
use udm_layers::TracingLayer;
use udm_layers::trace::SPAN_NAME;
use udm_testkit::fixtures::{commit, key, ts};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

type Fields = BTreeMap<String, String>;

/// Keeps every span's name and fields, and every event's fields.
#[derive(Default)]
struct Capture {
    spans: Mutex<Vec<(String, Fields)>>,
    events: Mutex<Vec<Fields>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// The subscriber: a handle on the shared capture.
struct Sub(Arc<Capture>);

impl Subscriber for Sub {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = Fields::new();
        attrs.record(&mut Collect(&mut fields));
        let mut spans = self.0.spans.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), fields));
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.0.spans.lock().unwrap();
        let (_, fields) = &mut spans[span.into_u64() as usize - 1];
        values.record(&mut Collect(fields));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        self.0.events.lock().unwrap().push(fields);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn traced(f: impl AsyncFnOnce()) -> Arc<Capture> {
    let capture = Arc::new(Capture::default());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tracing::subscriber::with_default(Sub(capture.clone()), || rt.block_on(f()));
    capture
}

fn span(c: &Capture, op: &str) -> Fields {
    let spans = c.spans.lock().unwrap();
    let found = spans.iter().find(|(name, f)| name == SPAN_NAME && f.get("op").map(String::as_str) == Some(op));
    found.unwrap_or_else(|| panic!("no span for {op}: {spans:?}")).1.clone()
}

#[test]
fn a_commit_span_carries_its_identifiers_and_no_data() {
    let capture = traced(async || {
        let meta = TracingLayer.layer(Arc::new(MemoryMeta::new()) as Arc<dyn MetaStore>);
        let k = key(&RouteContext::new("acme", "crm", "users").unwrap(), "u-1");
        let c = commit(&k, None, Op::Create, ts(5), "req-7", &json!({"password": "hunter2-secret"}));
        meta.commit(c).await.unwrap();
    });
    let f = span(&capture, "commit");
    let want = [("port", "meta"), ("ctx", "acme/crm/users"), ("object", "u-1"), ("ov", "1"), ("request_id", "req-7")];
    for (name, value) in want {
        assert_eq!(f.get(name).map(String::as_str), Some(value), "{name} in {f:?}");
    }
    assert!(!f.contains_key("error_kind"));
    let everything = format!("{:?}{:?}", capture.spans.lock().unwrap(), capture.events.lock().unwrap());
    assert!(!everything.contains("hunter2"), "document data never recorded: {everything}");
}

#[test]
fn a_failed_call_records_its_kind() {
    let capture = traced(async || {
        let blobs = TracingLayer.layer(MemoryBlobs::new());
        assert!(blobs.get("t/d/c/missing").await.is_err());
    });
    let f = span(&capture, "get");
    assert_eq!(
        (f["port"].as_str(), f["key"].as_str(), f["error_kind"].as_str(), f["retryable"].as_str()),
        ("blob", "t/d/c/missing", "not_found", "false")
    );
    let events = capture.events.lock().unwrap();
    assert!(events.iter().any(|e| e.get("error_kind").map(String::as_str) == Some("not_found")), "{events:?}");
}
