//! Criterion benches of the pure hot paths: canonical checksums (next to raw SHA-256 of the
//! same bytes, so the ratio is UDM's overhead, and `canonical::encode`, bytes and checksum in
//! one pass), deep merge, drift on a 10k-leaf document,
//! and HRW routing over 10 pairs.
//!
//! Run: `cargo bench -p udm-benches --bench core`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use udm_core::canonical::{self, Checksum, canonical_bytes};
use udm_core::drift::{Observed, detect_drift};
use udm_core::{ObjectId, RouteContext, deep_merge};
use udm_router::Router;

/// A realistic document of about `bytes` canonical bytes: records with strings, numbers,
/// booleans, nested objects and small arrays.
fn document(bytes: usize) -> Value {
    let mut records = Vec::new();
    let mut i = 0u64;
    let mut doc = json!({});
    while canonical_bytes(&doc).len() < bytes {
        for _ in 0..16 {
            records.push(json!({
                "id": format!("rec-{i:06}"),
                "score": i as f64 * 1.25,
                "active": i.is_multiple_of(3),
                "tags": [format!("t{}", i % 7), format!("g{}", i % 5)],
                "address": {"city": format!("City {}", i % 97), "zip": 10_000 + i},
            }));
            i += 1;
        }
        doc = json!({"kind": "bench", "records": records});
    }
    doc
}

fn checksums(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for (label, size) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let doc = document(size);
        let bytes = canonical_bytes(&doc);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("udm_canonical_sha256", label), &doc, |b, d| {
            b.iter(|| Checksum::of_json(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("raw_sha256_same_bytes", label), &bytes, |b, d| {
            b.iter(|| Sha256::digest(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("udm_encode_bytes_and_sha256", label), &doc, |b, d| {
            b.iter(|| canonical::encode(black_box(d)))
        });
    }
    g.finish();
}

fn merge(c: &mut Criterion) {
    let base = document(64 << 10);
    let patch =
        json!({"kind": "enriched", "records": [{"id": "new"}], "geo": {"lat": 59.9, "lon": 10.7, "tags": ["a", "b"]}});
    c.bench_function("deep_merge/64KiB_doc", |b| b.iter(|| deep_merge(black_box(&base), black_box(&patch))));
}

fn drift(c: &mut Criterion) {
    // 10,000 leaves: 2,000 records of 5 scalar leaves.
    let leaves = |salt: u64| -> Value {
        let recs: Vec<Value> = (0..2_000u64)
            .map(|i| json!({"a": i, "b": format!("s{i}"), "c": i.is_multiple_of(2), "d": i ^ salt, "e": null}))
            .collect();
        json!({"records": recs})
    };
    let desired = leaves(0);
    let shadow = leaves(0);
    let drifted = leaves(1);
    c.bench_function("drift/10k_leaves_in_sync", |b| {
        b.iter(|| detect_drift(Observed::plain(black_box(&desired)), Observed::plain(black_box(&shadow)), None))
    });
    c.bench_function("drift/10k_leaves_all_records_drifted", |b| {
        b.iter(|| detect_drift(Observed::plain(black_box(&desired)), Observed::plain(black_box(&drifted)), None))
    });
}

fn routing(c: &mut Criterion) {
    let router = Router::new((0..10).map(|i| format!("pair-{i}")), "{tenant}|{db}|{collection}:{id}").expect("router");
    let ctx = RouteContext::new("acme", "crm", "users").expect("ctx");
    let ids: Vec<ObjectId> = (0..1024).map(|i| ObjectId::new(format!("user-{i}")).expect("id")).collect();
    let mut n = 0;
    c.bench_function("hrw_route/10_pairs", |b| {
        b.iter(|| {
            n = (n + 1) & 1023;
            router.route(black_box(&ctx), black_box(&ids[n]))
        })
    });
}

criterion_group!(benches, checksums, merge, drift, routing);
criterion_main!(benches);
