//! History section of the end-to-end bench (issue P3): version lookups on ONE object with
//! 100,000 versions — by OV, as of an instant (`version_at`), as of a CV (`version_at_cv`) and
//! a history page of 100 — against `version` of a 1-version object (targets: as-of ≤ 2x), and
//! the history page against a raw indexed MongoDB `find` of 100 documents (target ≤ 2x), on
//! MongoDB and on the embedded (redb) store.
//!
//! Measured at the metadata port ([`MetaStore`]): every read then fetches the version's
//! snapshot from the blob store with the same single GET, whatever the lookup, so that GET is
//! left out. The versions are loaded with [`MetaStore::import`] (1,000 per call) at
//! `at = base + ov × 10 ms` and `cv = ov`, so every lookup's answer is known and checked.
//! `UDM_BENCH_HISTORY_VERSIONS` overrides the 100,000 (for quick runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use serde_json::{Map, Value, json};
use udm_core::layout::{Layout, version_record_id};
use udm_core::ports::{ImportedVersion, MetaStore};
use udm_core::query::HistoryQuery;
use udm_core::version::{Provenance, SnapshotRef};
use udm_core::{Checksum, Cv, ObjectKey, Op, RouteContext, SystemHeader, VersionRecord};
use udm_testkit::fixtures::{key, ov, rid, ts};

use super::{Stats, drain, explain, measure_interleaved, op};

const VERSIONS: u64 = 100_000;
const BATCH: u64 = 1_000;
const WARMUP: usize = 20;
const ROUNDS: usize = 200;
const PAGE: usize = 100;
const BASE_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 10;
const DB: &str = "udm_bench_history";
const RAW_DB: &str = "udm_bench_history_raw";
const RAW_DOCS: i64 = 10_000;
/// As-of and history targets: at most this many times their baseline (p50).
const TARGET: f64 = 2.0;

const BASELINE: &str = "version(1-version object, ov 1)";
const BY_OV: &str = "version(N-version object, random ov)";
const AT: &str = "version_at(random instant)";
const AT_CV: &str = "version_at_cv(random cv)";
const HISTORY: &str = "history(limit 100, after random ov)";
const RAW_FIND: &str = "raw find {g:1,n:{$gte:x}} sort lim 100";
const RAW_VERSIONS: &str = "raw find udm_versions _id range lim 100 (5x)";
/// Rounds of the (slow, informational) raw `_id` range find on the version documents.
const RAW_VERSIONS_ROUNDS: usize = 5;

/// A deterministic xorshift64 generator (random targets, same every run).
pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    /// A uniform-enough number in `1..=n`.
    pub(super) fn in_1_to(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        1 + x % n
    }
}

/// Runs every op once per round (`warmup` rounds unmeasured, then `rounds`), in a fresh
/// deterministic random order each round: load from others lands on all alike, and no op
/// always follows the same one (on the test server, a heavy call slows the call after it).
async fn measure_shuffled(warmup: usize, rounds: usize, mut ops: Vec<(&'static str, super::Op)>) -> Vec<Stats> {
    let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
    let mut order: Vec<usize> = (0..ops.len()).collect();
    let mut samples = vec![Vec::with_capacity(rounds); ops.len()];
    for round in 0..warmup + rounds {
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.in_1_to(i as u64 + 1) - 1) as usize);
        }
        for &i in &order {
            let t = Instant::now();
            (ops[i].1)().await;
            if round >= warmup {
                samples[i].push(t.elapsed());
            }
        }
    }
    ops.iter().zip(samples).map(|((name, _), samples)| Stats { name, samples }).collect()
}

/// The instant of version `n`.
fn at_of(n: u64) -> i64 {
    BASE_MS + n as i64 * STEP_MS
}

/// Version `n` of `key` as an import: CREATE at OV 1, then UPDATEs; `cv = n`,
/// `at = base + n × 10 ms`, a distinct request id per version.
fn imported(key: &ObjectKey, n: u64) -> ImportedVersion {
    let v = ov(n);
    let at = ts(at_of(n));
    let op = if n == 1 { Op::Create } else { Op::Update };
    let request = format!("{}-{n}", key.id.as_str());
    let request_id = rid(&request);
    let data = json!({"n": n});
    let checksum = Checksum::of_json(&data);
    let created = SystemHeader::created(ts(at_of(1)));
    let system = if n == 1 { created } else { created.next(op, at, None, false) };
    let record = VersionRecord {
        key: key.clone(),
        ov: v,
        cv: Cv(n),
        op,
        at,
        provenance: Provenance { actor: Some("bench".into()), reason: None, request_id: request_id.clone() },
        snapshot: SnapshotRef {
            key: Layout::default().snapshot(key, v, &request_id),
            checksum,
            seal: Checksum::of_bytes(request.as_bytes()),
            size: 100,
        },
        restored_from: None,
        deleted: false,
    };
    let fingerprint = Checksum::of_json(&json!([key.id.as_str(), op.as_str(), checksum.to_string()]));
    ImportedVersion { record, system, indexed: Map::new(), inline: Some(data), fingerprint }
}

/// Imports versions `1..=n` of `key`, [`BATCH`] per call; returns the wall time.
async fn load(store: &dyn MetaStore, key: &ObjectKey, n: u64, label: &str) -> Duration {
    let t = Instant::now();
    let mut next = 1;
    while next <= n {
        let end = (next + BATCH - 1).min(n);
        let out = store.import((next..=end).map(|i| imported(key, i)).collect()).await.expect("import");
        assert_eq!(out.inserted, end - next + 1, "import {next}..={end}");
        if end.is_multiple_of(20_000) {
            eprintln!("  {label}: imported {end}/{n} versions in {:.1} s", t.elapsed().as_secs_f64());
        }
        next = end + 1;
    }
    t.elapsed()
}

/// The port lookups of one store, one of each per round: baseline, by OV, as of an instant,
/// as of a CV and a history page (random targets over the whole history, answers checked).
fn port_ops(store: &Arc<dyn MetaStore>, one: &ObjectKey, many: &ObjectKey, n: u64) -> Vec<(&'static str, super::Op)> {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rng = || {
        seed = seed.wrapping_add(0x1234_5678_9abc_def1);
        XorShift(seed)
    };
    vec![
        (BASELINE, {
            let (s, k) = (store.clone(), one.clone());
            op(move || {
                let (s, k) = (s.clone(), k.clone());
                async move { assert_eq!(s.version(&k, ov(1)).await.expect("version").expect("v1").ov, ov(1)) }
            })
        }),
        (BY_OV, {
            let (s, k, mut r) = (store.clone(), many.clone(), rng());
            op(move || {
                let (s, k, t) = (s.clone(), k.clone(), r.in_1_to(n));
                async move { assert_eq!(s.version(&k, ov(t)).await.expect("version").expect("some").ov, ov(t)) }
            })
        }),
        (AT, {
            let (s, k, mut r) = (store.clone(), many.clone(), rng());
            op(move || {
                let (s, k, t) = (s.clone(), k.clone(), r.in_1_to(n));
                async move {
                    // Between version t and t + 1: the answer is t.
                    let got = s.version_at(&k, ts(at_of(t) + STEP_MS / 2)).await.expect("version_at").expect("some");
                    assert_eq!(got.ov, ov(t));
                }
            })
        }),
        (AT_CV, {
            let (s, k, mut r) = (store.clone(), many.clone(), rng());
            op(move || {
                let (s, k, t) = (s.clone(), k.clone(), r.in_1_to(n));
                async move {
                    let got = s.version_at_cv(&k, Cv(t)).await.expect("version_at_cv").expect("some");
                    assert_eq!(got.ov, ov(t));
                }
            })
        }),
        (HISTORY, {
            let (s, k, mut r) = (store.clone(), many.clone(), rng());
            op(move || {
                let (s, k, t) = (s.clone(), k.clone(), r.in_1_to(n - PAGE as u64));
                async move {
                    let q = HistoryQuery { limit: PAGE, after: Some(ov(t)), ..HistoryQuery::default() };
                    let page = s.history(&k, &q).await.expect("history");
                    assert_eq!(page.items.len(), PAGE);
                    assert_eq!(page.items[0].ov, ov(t + 1));
                }
            })
        }),
    ]
}

/// Lookups (MongoDB round trips / redb table lookups) one call of each kind makes, read off
/// the store's counter, at a fixed target in the middle of the history.
async fn lookups(
    store: &dyn MetaStore,
    count: &(dyn Fn() -> u64 + Sync),
    one: &ObjectKey,
    many: &ObjectKey,
    n: u64,
) -> Value {
    let t = n / 3 + 7;
    let mut out = Map::new();
    let mut c = count();
    let mut step = |name: &str, out: &mut Map<String, Value>| {
        let now = count();
        out.insert(name.into(), json!(now - c));
        c = now;
    };
    store.version(one, ov(1)).await.expect("version");
    step(BASELINE, &mut out);
    store.version(many, ov(t)).await.expect("version");
    step(BY_OV, &mut out);
    store.version_at(many, ts(at_of(t) + STEP_MS / 2)).await.expect("version_at");
    step(AT, &mut out);
    store.version_at_cv(many, Cv(t)).await.expect("version_at_cv");
    step(AT_CV, &mut out);
    let q = HistoryQuery { limit: PAGE, after: Some(ov(t)), ..HistoryQuery::default() };
    store.history(many, &q).await.expect("history");
    step(HISTORY, &mut out);
    Value::Object(out)
}

/// Prints one store's table: p50/p99, their ratios to the row's baseline, the target.
fn table(store: &str, stats: &[Stats], history_base: &str, report: &mut Map<String, Value>) {
    let get = |name: &str| stats.iter().find(|s| s.name == name);
    let pct = |name: &str, p: f64| get(name).map_or(f64::NAN, |s| s.pct(p));
    println!(
        "| {:<46} | {:>8} | {:>8} | {:>9} | {:>9} | {:<48} | {:<6} |",
        "operation", "p50 µs", "p99 µs", "p50 ratio", "p99 ratio", "baseline (target on p50)", "met"
    );
    println!("|{:-<48}|{:->10}|{:->10}|{:->11}|{:->11}|{:-<50}|{:-<8}|", "", ":", ":", ":", ":", "", "");
    for s in stats {
        let (base, target) = match s.name {
            AT | AT_CV => (BASELINE, Some(TARGET)),
            HISTORY => (history_base, (history_base != BASELINE).then_some(TARGET)),
            BY_OV => (BASELINE, None),
            RAW_VERSIONS => (RAW_FIND, None),
            _ => (s.name, None),
        };
        let (r50, r99) = (s.pct(0.5) / pct(base, 0.5), s.pct(0.99) / pct(base, 0.99));
        let (label, met) = match target {
            Some(t) => (format!("{base} ≤ {t}x"), if r50 <= t { "met" } else { "UNMET" }),
            None if base == s.name => ("(baseline)".to_owned(), ""),
            None => (format!("{base} (info)"), ""),
        };
        println!(
            "| {:<46} | {:>8.0} | {:>8.0} | {r50:>8.2}x | {r99:>8.2}x | {label:<48} | {met:<6} |",
            s.name,
            s.pct(0.5),
            s.pct(0.99)
        );
        report.insert(format!("history {store} {}", s.name), s.json());
        if base != s.name {
            report.insert(format!("ratio history {store} {} / {base}", s.name), json!(r50));
        }
    }
}

/// The raw baseline of the history page: a scratch collection of [`RAW_DOCS`] `{g: 1, n: i}`
/// documents indexed `{g: 1, n: 1}`.
async fn raw_scratch(client: &mongodb::Client) -> mongodb::Collection<Document> {
    let db = client.database(RAW_DB);
    db.drop().await.expect("drop raw db");
    let coll = db.collection::<Document>("scratch");
    let docs: Vec<Document> = (0..RAW_DOCS).map(|i| doc! {"g": 1, "n": i}).collect();
    for chunk in docs.chunks(1_000) {
        coll.insert_many(chunk.to_vec()).await.expect("insert scratch");
    }
    coll.create_index(mongodb::IndexModel::builder().keys(doc! {"g": 1, "n": 1}).build()).await.expect("index");
    coll
}

/// The raw finds on MongoDB: the scratch range find (the target's baseline) and, for
/// information, the same 100 version documents the history page returns, by `_id` range.
fn raw_ops(
    scratch: &mongodb::Collection<Document>,
    versions: &mongodb::Collection<Document>,
    many: &ObjectKey,
    n: u64,
) -> Vec<(&'static str, super::Op)> {
    let mut r1 = XorShift(0x2545_f491_4f6c_dd1d);
    let mut r2 = XorShift(0x1405_7b7e_f767_814f);
    let (c, v, many) = (scratch.clone(), versions.clone(), many.clone());
    vec![
        (
            RAW_FIND,
            op(move || {
                let (c, x) = (c.clone(), r1.in_1_to((RAW_DOCS - PAGE as i64) as u64) as i64);
                async move {
                    let find = c.find(doc! {"g": 1, "n": {"$gte": x}}).sort(doc! {"g": 1, "n": 1}).limit(PAGE as i64);
                    assert_eq!(drain(find).await.len(), PAGE);
                }
            }),
        ),
        (
            RAW_VERSIONS,
            op(move || {
                let t = r2.in_1_to(n - PAGE as u64);
                let (lo, hi) = (version_record_id(&many, ov(t)), version_record_id(&many, ov(t + PAGE as u64)));
                let v = v.clone();
                async move {
                    let find = v.find(doc! {"_id": {"$gt": lo, "$lte": hi}}).sort(doc! {"_id": 1}).limit(PAGE as i64);
                    assert_eq!(drain(find).await.len(), PAGE);
                }
            }),
        ),
    ]
}

/// Runs the section, prints its tables and returns its figures for the JSON report.
pub(crate) async fn run(uri: &str) -> Map<String, Value> {
    let n = std::env::var("UDM_BENCH_HISTORY_VERSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(VERSIONS);
    assert!(n > PAGE as u64, "need more than {PAGE} versions");
    let mut report = Map::new();
    let ctx = |c: &str| RouteContext::new("hist", "db", c).expect("ctx");
    let (one, many) = (key(&ctx("one"), "single"), key(&ctx("many"), "long"));
    println!(
        "\nhistory (P3): one object with {n} versions vs a 1-version object, at the metadata port \
         (MetaStore): the snapshot GET that follows every read is the same for all, so it is left out"
    );
    println!(
        "({ROUNDS} rounds after {WARMUP} warm-up; a store's port lookups interleaved in a random order per round, MongoDB's raw finds in loops of \
         their own after them; random targets over the whole history)"
    );

    // ---- MongoDB
    let cfg = udm_mongo::MongoConfig::new(uri, DB);
    udm_mongo::MongoStore::connect(&cfg).await.expect("mongo").drop_all().await.expect("drop");
    // Connect again: `connect` creates the indexes `drop_all` removed.
    let mongo = udm_mongo::MongoStore::connect(&cfg).await.expect("mongo");
    let mongo_load = load(&mongo, &many, n, "mongo").await;
    load(&mongo, &one, 1, "mongo").await;
    let client = mongodb::Client::with_uri_str(uri).await.expect("mongo client");
    let scratch = raw_scratch(&client).await;
    let versions = client.database(DB).collection::<Document>("udm_versions");
    let store: Arc<dyn MetaStore> = Arc::new(mongo.clone());
    let mut mongo_stats = measure_shuffled(WARMUP, ROUNDS, port_ops(&store, &one, &many, n)).await;
    // The raw finds in loops of their own: on this server a find of 100+ ms slows the
    // lookup that follows it, which would skew the interleaved port lookups.
    let mut raw = raw_ops(&scratch, &versions, &many, n);
    let by_id_range = raw.split_off(1);
    mongo_stats.extend(measure_interleaved(WARMUP, ROUNDS, raw).await);
    mongo_stats.extend(measure_interleaved(1, RAW_VERSIONS_ROUNDS, by_id_range).await);
    let mongo_trips = lookups(&mongo, &|| mongo.round_trips(), &one, &many, n).await;

    // ---- Embedded (redb in a temporary directory)
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = udm_embedded::EmbeddedStore::open(&dir.path().join("meta.redb")).expect("embedded");
    let embedded_load = load(&embedded, &many, n, "embedded").await;
    load(&embedded, &one, 1, "embedded").await;
    let store: Arc<dyn MetaStore> = Arc::new(embedded.clone());
    let embedded_stats = measure_shuffled(WARMUP, ROUNDS, port_ops(&store, &one, &many, n)).await;
    let embedded_reads = lookups(&embedded, &|| embedded.reads(), &one, &many, n).await;

    println!(
        "\nimport of {n} versions ({BATCH} per MetaStore::import call): MongoDB {:.1} s ({:.0} versions/s), embedded {:.1} s ({:.0} versions/s)",
        mongo_load.as_secs_f64(),
        n as f64 / mongo_load.as_secs_f64(),
        embedded_load.as_secs_f64(),
        n as f64 / embedded_load.as_secs_f64()
    );
    report.insert("history versions".into(), json!(n));
    report.insert("history mongo import seconds".into(), json!(mongo_load.as_secs_f64()));
    report.insert("history embedded import seconds".into(), json!(embedded_load.as_secs_f64()));

    println!("\nhistory on MongoDB ({n} versions; history page target vs the raw indexed find of {PAGE})");
    table("mongo", &mongo_stats, RAW_FIND, &mut report);
    println!("MongoDB round trips per call (MongoStore::round_trips): {mongo_trips}");
    let x = RAW_DOCS / 2;
    let plan =
        explain(&client.database(RAW_DB), "scratch", doc! {"g": 1, "n": {"$gte": x}}, doc! {"g": 1, "n": 1}, Some(100))
            .await;
    println!("raw find plan (explain executionStats): {plan}");
    report.insert("history mongo raw find plan".into(), json!(plan));
    report.insert("history mongo round trips per call".into(), mongo_trips);

    println!(
        "\nhistory on the embedded store ({n} versions; history page shown against the embedded `version` baseline)"
    );
    table("embedded", &embedded_stats, BASELINE, &mut report);
    println!("embedded table lookups per call (EmbeddedStore::reads): {embedded_reads}");
    report.insert("history embedded reads per call".into(), embedded_reads);

    drop(store);
    let _ = mongo.drop_all().await;
    let _ = client.database(RAW_DB).drop().await;
    report
}
