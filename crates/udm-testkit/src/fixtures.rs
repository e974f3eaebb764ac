//! Builders for the values scenarios need: unique contexts, commits, envelopes.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};
use udm_core::layout::Layout;
use udm_core::ports::{Commit, NewVersion};
use udm_core::version::{Provenance, SnapshotRef};
use udm_core::{Checksum, ObjectId, ObjectKey, Op, Ov, RequestId, RouteContext, SystemHeader, Timestamp};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A context no other scenario in this process (or an earlier run against the same server)
/// uses: tenant `t<nanos>-<n>`.
pub fn unique_ctx(collection: &str) -> RouteContext {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    #[allow(clippy::disallowed_methods)] // the test kit may read the clock; udm-core may not
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    RouteContext::new(&format!("t{}-{n}", nanos % 1_000_000_000_000), "db", collection)
        .unwrap_or_else(|e| panic!("fixture context: {e}"))
}

/// An object key in `ctx`.
pub fn key(ctx: &RouteContext, id: &str) -> ObjectKey {
    ObjectKey::new(ctx.clone(), ObjectId::new(id).unwrap_or_else(|e| panic!("fixture id: {e}")))
}

/// A request id.
pub fn rid(s: &str) -> RequestId {
    RequestId::new(s).unwrap_or_else(|e| panic!("fixture request id: {e}"))
}

/// An OV.
pub fn ov(n: u64) -> Ov {
    Ov::new(n).unwrap_or_else(|e| panic!("fixture ov: {e}"))
}

/// A timestamp from millis.
pub fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap_or_else(|e| panic!("fixture timestamp: {e}"))
}

/// A commit of version `expected + 1` of `key` with `data`, at `at`, with request id `request`.
/// The op is CREATE for the first version, else `op`; indexed props are the data's top-level
/// scalars (so list scenarios can filter on them).
pub fn commit(key: &ObjectKey, expected: Option<Ov>, op: Op, at: Timestamp, request: &str, data: &Value) -> Commit {
    let ov = Ov::after(expected).unwrap_or_else(|e| panic!("{e}"));
    let op = if expected.is_none() { Op::Create } else { op };
    let checksum = Checksum::of_json(data);
    let mut system = SystemHeader::created(at);
    if op == Op::Delete {
        system = system.next(Op::Delete, at, None, false);
    }
    let indexed: Map<String, Value> = data
        .as_object()
        .map(|m| {
            m.iter().filter(|(_, v)| !v.is_object() && !v.is_array()).map(|(k, v)| (k.clone(), v.clone())).collect()
        })
        .unwrap_or_default();
    Commit {
        key: key.clone(),
        expected,
        version: NewVersion {
            ov,
            op,
            at,
            provenance: Provenance { actor: Some("tester".into()), reason: None, request_id: rid(request) },
            snapshot: SnapshotRef {
                key: Layout::default().snapshot(key, ov, &rid(request)),
                checksum,
                seal: Checksum::of_bytes(request.as_bytes()),
                size: 100,
            },
            restored_from: None,
            system,
            indexed,
            inline: Some(data.clone()),
            dev_shadow: None,
        },
        counters: Vec::new(),
        fingerprint: Checksum::of_json(&json!([key.id.as_str(), op.as_str(), checksum.to_string()])),
    }
}
