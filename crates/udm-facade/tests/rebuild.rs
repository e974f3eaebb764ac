//! Rebuild after the total loss of a metadata database, on the real servers (SecantusDB or
//! PostgreSQL + moto, started by `cargo xtask services up`; fails, naming it, without): over 10,000
//! versions of many objects — creates, updates, enrichments, logical deletes, restores,
//! externalized content — are written, the shadow log flushed and the store exported; the
//! MongoDB database (or the PostgreSQL schema) is dropped; the metadata is rebuilt from the blob store alone (the first
//! attempt interrupted by an injected failure, then resumed); the export is byte-identical,
//! and every read — latest, version, as-of, as-of-CV, list, history, counters — answers as
//! before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use udm_core::config::{CollectionConfig, Config};
use udm_core::metamap::Base64Prop;
use udm_core::ports::{BlobStore, CounterStore, Layer, MetaStore};
use udm_core::query::HistoryQuery;
use udm_core::{Cv, Ov, RouteContext};
use udm_facade::{Collection, EnrichOpts, ListQuery, Pair, ReadOpts, Target, Udm, WriteItem, WriteOpts};
use udm_mongo::{MongoConfig, MongoStore};
use udm_postgres::{PostgresConfig, PostgresStore};
use udm_s3::{AwsS3Blobs, S3Settings};
use udm_testkit::faults::{FaultLayer, FaultRule, Port};

const OBJECTS: usize = 500;
/// Rounds of one write per object after the creates (plus a few restores): over 10k versions
/// on MongoDB; on PostgreSQL (the same code path, a second adapter) fewer, to keep CI short.
const ROUNDS: usize = 20;
const PG_ROUNDS: usize = 4;

#[derive(Clone, Copy, Debug)]
enum Meta {
    Mongo,
    Postgres,
}

struct Stores {
    kind: Meta,
    uri: String,
    db: String,
    json: Arc<dyn BlobStore>,
    content: Arc<dyn BlobStore>,
}

async fn stores(kind: Meta, run: &str) -> Stores {
    let endpoint = udm_testkit::services::s3_endpoint();
    let settings = S3Settings::compatible(&endpoint, "us-east-1", "test", "testsecret");
    let (jb, cb) = (format!("rebuild-{run}-json"), format!("rebuild-{run}-content"));
    for b in [&jb, &cb] {
        AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket (is moto running? cargo xtask services up)");
    }
    let uri = match kind {
        Meta::Mongo => udm_testkit::services::mongo_uri(),
        Meta::Postgres => udm_testkit::services::postgres_url(),
    };
    Stores {
        kind,
        uri,
        db: format!("udm_rebuild_{run}"),
        json: Arc::new(AwsS3Blobs::new(&settings, &jb)),
        content: Arc::new(AwsS3Blobs::new(&settings, &cb)),
    }
}

/// The metadata store (a new connection each time).
async fn meta_store(s: &Stores) -> (Arc<dyn MetaStore>, Arc<dyn CounterStore>) {
    match s.kind {
        Meta::Mongo => {
            let m = MongoStore::connect(&MongoConfig::new(&s.uri, &s.db))
                .await
                .expect("MongoDB (cargo xtask services up?)");
            let m = Arc::new(m);
            (m.clone(), m)
        }
        Meta::Postgres => {
            let cfg = PostgresConfig::new(&s.uri).with_schema(&s.db);
            let m = Arc::new(PostgresStore::connect(&cfg).await.expect("PostgreSQL (cargo xtask services up?)"));
            (m.clone(), m)
        }
    }
}

/// The total loss of the metadata database.
async fn drop_metadata(s: &Stores) {
    match s.kind {
        Meta::Mongo => MongoStore::connect(&MongoConfig::new(&s.uri, &s.db)).await.unwrap().drop_all().await.unwrap(),
        Meta::Postgres => {
            let cfg = PostgresConfig::new(&s.uri).with_schema(&s.db);
            PostgresStore::connect(&cfg).await.unwrap().drop_schema().await.unwrap();
        }
    }
}

/// A `Udm` over the stores, its metadata store under `faults`.
async fn open(s: &Stores, faults: &FaultLayer) -> Udm {
    let (meta, counters) = meta_store(s).await;
    let pair = Pair {
        name: "p".into(),
        meta: Arc::new(faults.layer(meta)),
        counters,
        json: s.json.clone(),
        content: s.content.clone(),
        describe: format!("{:?} + s3", s.kind),
    };
    let mut cfg = Config::in_memory();
    cfg.collections.push(CollectionConfig {
        tenant: Some("rb".into()),
        db: "suite".into(),
        collection: "docs".into(),
        indexed_props: Vec::new(),
        base64_props: vec![Base64Prop { path: "avatar.data".into(), content_type: "image/png".into() }],
        counter_rules: Vec::new(),
    });
    Udm::builder().pair(pair).config(cfg).build().unwrap()
}

fn docs(udm: &Udm) -> Collection {
    udm.with(RouteContext::new("rb", "suite", "docs").unwrap())
}

/// The workload: creates, then rounds of updates / enrichments / deletes, then restores.
async fn write(c: &Collection, rounds: usize) -> usize {
    let mut versions = 0;
    let creates: Vec<_> = (0..OBJECTS)
        .map(|i| (json!({"i": i, "avatar": {"data": "aGVsbG8="}, "tags": []}), WriteOpts::id(&format!("o{i:04}"))))
        .collect();
    for r in c.create_many(creates).await {
        r.unwrap();
        versions += 1;
    }
    for round in 0..rounds {
        let (mut items, mut enrich) = (Vec::new(), Vec::new());
        for i in 0..OBJECTS {
            let id = format!("o{i:04}");
            let opts = WriteOpts::default();
            match (i + round) % 10 {
                1..=3 => enrich.push((id, json!({"tags": [format!("r{round}")], "seen": round}))),
                _ => items.push(WriteItem::Update {
                    id,
                    data: json!({"i": i, "round": round, "tags": []}),
                    expected: None,
                    opts,
                }),
            }
        }
        let written = c.write_many(items).await.into_iter().chain(c.enrich_many(enrich, EnrichOpts::default()).await);
        for r in written {
            r.unwrap();
            versions += 1;
        }
    }
    // Logical deletes, then restores (reviving some of the deleted).
    let deletes: Vec<WriteItem> = (0..OBJECTS)
        .step_by(5)
        .map(|i| WriteItem::Delete { id: format!("o{i:04}"), expected: None, opts: WriteOpts::default() })
        .collect();
    for r in c.write_many(deletes).await {
        r.unwrap();
        versions += 1;
    }
    for i in (0..OBJECTS).step_by(7) {
        c.restore_object(&format!("o{i:04}"), Target::Ov(Ov::new(1).unwrap()), WriteOpts::default()).await.unwrap();
        versions += 1;
    }
    versions
}

/// Reads to compare before the loss and after the rebuild.
async fn reads(c: &Collection) -> Vec<Value> {
    let mut out = Vec::new();
    let all = ReadOpts { include_deleted: true, ..ReadOpts::default() };
    for i in (0..OBJECTS).step_by(37) {
        let id = format!("o{i:04}");
        let latest = c.get_latest(&id, all).await.unwrap();
        let v2 = c.get_version(&id, Ov::new(2).unwrap(), all).await.unwrap();
        let at = c.as_of(&id, v2.at, all).await.unwrap();
        let at_cv = c.as_of_cv(&id, Cv(v2.cv.0 + 1), all).await.unwrap();
        let history = c.history(&id, HistoryQuery { limit: 5, ..HistoryQuery::default() }).await.unwrap();
        for r in [latest, v2, at, at_cv] {
            out.push(serde_json::to_value((r.ov, r.cv, r.op, r.at, r.deleted, &r.data, &r.system)).unwrap());
        }
        out.push(serde_json::to_value(&history.items).unwrap());
    }
    let page = c.list(ListQuery { limit: 50, ..ListQuery::default() }, ReadOpts::default()).await.unwrap();
    out.push(serde_json::to_value(page.items.iter().map(|r| (&r.id, r.ov, &r.data)).collect::<Vec<_>>()).unwrap());
    out.push(serde_json::to_value(c.current_cvs().await.unwrap()).unwrap());
    out
}

async fn export(udm: &Udm) -> Vec<u8> {
    let mut out = Vec::new();
    udm.admin().export(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_mongodb_database_is_rebuilt_from_the_blob_store_alone() {
    lost_and_rebuilt(Meta::Mongo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_postgresql_schema_is_rebuilt_from_the_blob_store_alone() {
    lost_and_rebuilt(Meta::Postgres).await;
}

async fn lost_and_rebuilt(kind: Meta) {
    let run = format!("{}{}", std::process::id(), format!("{kind:?}").to_lowercase());
    let s = stores(kind, &run).await;
    let none = FaultLayer::seeded(1);
    let udm = open(&s, &none).await;
    let c = docs(&udm);
    let started = Instant::now();
    let (rounds, least) = match kind {
        Meta::Mongo => (ROUNDS, 10_000),
        Meta::Postgres => (PG_ROUNDS, 2_500),
    };
    let versions = write(&c, rounds).await;
    assert!(versions >= least, "{versions} versions");
    udm.admin().flush_shadow().await.unwrap();
    let before = export(&udm).await;
    let reads_before = reads(&c).await;
    eprintln!("wrote {versions} versions and exported them in {:?}", started.elapsed());
    udm.admin().shutdown().await.unwrap();
    drop((c, udm));

    drop_metadata(&s).await;

    // Rebuild, interrupted by a failed import after the first batch, then resumed.
    let faults = FaultLayer::seeded(2);
    let udm = open(&s, &faults).await;
    let armed = AtomicBool::new(false);
    let interrupt = |p: &udm_facade::RebuildProgress| {
        if !armed.swap(true, Ordering::SeqCst) {
            assert!(p.done > 0 && p.done < p.total, "{p:?}");
            faults.add(FaultRule::fail_before().port(Port::Meta).op("import").next(1));
        }
    };
    let e = udm.admin().rebuild(None, &interrupt).await.expect_err("the injected failure interrupts it");
    assert!(e.is_retryable(), "{e}");
    let started = Instant::now();
    let report = udm.admin().rebuild(Some("p"), &|_| {}).await.unwrap();
    let took = started.elapsed();
    eprintln!("rebuilt in {took:?}: {report:?}");
    assert!(report.skipped > 0, "the resumed rebuild started after what was done: {report:?}");
    assert_eq!(report.imported + report.unchanged + report.skipped, versions as u64, "{report:?}");
    let after = export(&udm).await;
    assert_eq!(before.len(), after.len());
    assert!(before == after, "the export after the rebuild differs from the one before the loss");
    assert_eq!(reads(&docs(&udm)).await, reads_before, "reads answer as before");

    // Again: the job records say it is done; nothing is imported.
    let again = udm.admin().rebuild(None, &|_| {}).await.unwrap();
    assert_eq!((again.imported, again.skipped), (0, versions as u64), "{again:?}");
    udm.admin().shutdown().await.unwrap();
    drop_metadata(&s).await;
}
