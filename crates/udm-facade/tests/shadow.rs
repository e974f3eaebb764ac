//! The S3 shadow is self-sufficient: after a mixed workload on the real servers (MongoDB +
//! S3, two pairs) with injected lost acknowledgements, failed commits that leave orphan
//! snapshots, failed log flushes and lost optimistic races, the committed versions read
//! from each pair's blob store **alone** (the commit log's segments and the snapshots they
//! name) equal the metadata store's, object by object: OV, CV, op, timestamp, request id,
//! provenance, snapshot key, checksum and seal, `restoredFrom`, request fingerprint — and
//! every named snapshot verifies and holds the version's data. Each object's version index
//! (S3 alone) names the same records, and S3-only reads answer from it. Drift finds exactly
//! the orphan snapshots, the orphan GC deletes exactly those, and drift is then clean.
//! Needs `cargo xtask services up` (or `cargo xtask test`); fails, naming it, without.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use udm_core::layout::Layout;
use udm_core::ports::{BlobStore, CounterStore, Layer, MetaStore};
use udm_core::query::HistoryQuery;
use udm_core::shadow::{LogEntry, LogSegment, committed_versions};
use udm_core::version::SnapshotEnvelope;
use udm_core::{ObjectKey, Ov, Result, RouteContext, VersionRecord};
use udm_facade::{Collection, EnrichOpts, Pair, ReadOpts, ReadSource, Target, Udm, WriteOpts, Written};
use udm_mongo::{MongoConfig, MongoStore};
use udm_s3::{AwsS3Blobs, S3Settings};
use udm_testkit::faults::{FaultLayer, FaultRule, Port};

struct Side {
    meta: Arc<MongoStore>,
    /// An independent client of the pair's snapshot bucket (no faults).
    json: Arc<dyn BlobStore>,
}

async fn pair(name: &str, run: &str, faults: &FaultLayer) -> (Pair, Side) {
    let uri = udm_testkit::services::mongo_uri();
    let endpoint = udm_testkit::services::s3_endpoint();
    let meta =
        Arc::new(MongoStore::connect(&MongoConfig::new(&uri, &format!("udm_shadow_{run}_{name}"))).await.unwrap());
    let settings = S3Settings::compatible(&endpoint, "us-east-1", "test", "testsecret");
    let (json_bucket, content_bucket) = (format!("shadow-{run}-{name}-json"), format!("shadow-{run}-{name}-content"));
    for b in [&json_bucket, &content_bucket] {
        AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket (is moto running? cargo xtask services up)");
    }
    let json: Arc<dyn BlobStore> = Arc::new(AwsS3Blobs::new(&settings, &json_bucket));
    let content: Arc<dyn BlobStore> = Arc::new(AwsS3Blobs::new(&settings, &content_bucket));
    let p = Pair {
        name: name.into(),
        meta: Arc::new(faults.layer(meta.clone() as Arc<dyn MetaStore>)),
        counters: meta.clone() as Arc<dyn CounterStore>,
        json: Arc::new(faults.layer(json.clone())),
        content,
        describe: format!("mongo + s3 ({name})"),
    };
    (p, Side { meta, json })
}

/// Runs a write, retrying with the same request id while it fails retryably (as a caller
/// who lost an acknowledgement would); returns the final answer.
async fn with_retries<F, Fut>(mut write: F) -> Result<Written>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Written>>,
{
    let mut last = None;
    for _ in 0..8 {
        match write().await {
            Err(e) if e.is_retryable() => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap())
}

fn opts(request: &str) -> WriteOpts {
    WriteOpts::default().request_id(request).actor("shadow-test")
}

/// The writers alternate between `c` and `twin`: the same collection through two `Udm`s over
/// the same stores, as two processes would be (one process's writers of an object take turns;
/// two processes' race).
async fn workload(c: &Collection, twin: &Collection) {
    // 24 objects created by 6 concurrent writers.
    let creators: Vec<_> = (0..6)
        .map(|w| {
            let c = if w % 2 == 0 { c.clone() } else { twin.clone() };
            tokio::spawn(async move {
                for i in 0..4 {
                    let id = format!("o{w}{i}");
                    let o = WriteOpts::id(&id).request_id(&format!("create-{id}")).actor("shadow-test");
                    with_retries(|| c.create(json!({"w": w, "i": i, "tags": []}), o.clone())).await.unwrap();
                }
            })
        })
        .collect();
    for t in creators {
        t.await.unwrap();
    }
    // Updates, enrichments racing on one hot object, deletes and restores.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let c = if w % 2 == 0 { c.clone() } else { twin.clone() };
            tokio::spawn(async move {
                for r in 0..6 {
                    let id = format!("o{w}{}", if r == 0 { 0 } else { 3 });
                    let req = format!("w{w}-r{r}");
                    match r {
                        0 | 3 => {
                            with_retries(|| c.update(&id, json!({"w": w, "r": r, "tags": []}), None, opts(&req)))
                                .await
                                .unwrap();
                        }
                        4 => {
                            with_retries(|| c.delete(&id, None, opts(&req))).await.unwrap();
                            let again = format!("{req}-restore");
                            let back = || c.restore_object(&id, Target::Ov(Ov::FIRST), opts(&again));
                            let mut tries = 0;
                            loop {
                                match back().await {
                                    Err(e) if e.is_retryable() && tries < 8 => tries += 1,
                                    other => {
                                        other.unwrap();
                                        break;
                                    }
                                }
                            }
                        }
                        _ => {
                            let e = EnrichOpts { write: opts(&req), ..EnrichOpts::default() };
                            with_retries(|| c.enrich("o00", json!({"tags": [req.clone()]}), e.clone())).await.unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for t in writers {
        t.await.unwrap();
    }
}

/// Every committed version of `ctx` the metadata store holds, with its request fingerprint.
async fn from_metadata(meta: &MongoStore, ctx: &RouteContext) -> BTreeMap<ObjectKey, Vec<LogEntry>> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = meta.list_objects(ctx, after.as_deref(), 1000).await.unwrap();
        for id in &page.items {
            let key = ObjectKey::new(ctx.clone(), id.clone());
            let q = HistoryQuery { limit: 1000, ..HistoryQuery::default() };
            let versions: Vec<VersionRecord> = meta.history(&key, &q).await.unwrap().items;
            let mut entries = Vec::new();
            for record in versions {
                let (_, fingerprint) =
                    meta.find_request(ctx, &record.provenance.request_id).await.unwrap().expect("request record");
                entries.push(LogEntry { record, fingerprint });
            }
            out.insert(key, entries);
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// Every committed version of `ctx` read from the blob store alone.
async fn from_blobs(json: &dyn BlobStore, ctx: &RouteContext) -> BTreeMap<ObjectKey, Vec<LogEntry>> {
    let prefix = Layout::default().log_prefix(ctx);
    let mut segments = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = json.list(&prefix, after.as_deref(), 1000).await.unwrap();
        for k in &page.keys {
            segments.push(LogSegment::decode(&json.get(k).await.unwrap()).unwrap());
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    committed_versions(segments).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_versions_read_from_the_blob_store_alone_equal_the_metadata_stores() {
    let run = format!("{}", udm_testkit::fixtures::unique_ctx("x").tenant).replace('-', "");
    let faults = FaultLayer::seeded(20261122);
    let (pa, a) = pair("a", &run, &faults).await;
    let (pb, b) = pair("b", &run, &faults).await;
    let udm = Udm::builder().pair(pa.clone()).pair(pb.clone()).build().unwrap();
    let other_process = Udm::builder().pair(pa).pair(pb).build().unwrap();
    let ctx = RouteContext::new(&format!("t{run}"), "crm", "users").unwrap();
    let c = udm.with(ctx.clone());
    // Lost acknowledgements (the commit applied, the answer lost), failed commits (an orphan
    // snapshot stays behind at that OV), failed snapshot puts, failed log flushes.
    let lost_ack = faults.add(FaultRule::fail_after().port(Port::Meta).op("commit").probability(0.1));
    let lost_ack_batch = faults.add(FaultRule::fail_after().port(Port::Meta).op("commit_many").probability(0.1));
    let failed_commit = faults.add(FaultRule::fail_before().port(Port::Meta).op("commit").probability(0.1));
    let failed_put = faults.add(FaultRule::fail_after().port(Port::Blob).op("put").probability(0.05));
    let failed_flush = faults.add(FaultRule::fail_before().port(Port::Meta).op("shadow_logged").probability(0.2));
    // Every commit starts 10 ms after its head was read, so the two processes' writers of the
    // hot object reliably race (without it, some runs saw no race: a timing accident). Batched
    // commits too: on a loaded machine the lanes batch, and with only lone commits delayed a
    // run in the full suite once saw no race.
    for op in ["commit", "commit_many"] {
        faults.add(FaultRule::latency(std::time::Duration::from_millis(10)).port(Port::Meta).op(op));
    }
    workload(&c, &other_process.with(ctx.clone())).await;
    faults.clear();
    other_process.admin().shutdown().await.unwrap();
    let report = udm.admin().flush_shadow().await.unwrap();
    let fired: Vec<u64> =
        [lost_ack, lost_ack_batch, failed_commit, failed_put, failed_flush].map(|r| faults.hits(r)).into();
    assert!(fired[0] + fired[1] > 0 && fired[2] > 0 && fired[3] > 0, "faults fired: {fired:?}");
    assert!(
        udm.admin().stats().conflicts + other_process.admin().stats().conflicts > 0,
        "the hot object's writers in two processes raced"
    );

    let mut objects = 0;
    let mut orphans = 0;
    for side in [&a, &b] {
        let expected = from_metadata(&side.meta, &ctx).await;
        let logged = from_blobs(&*side.json, &ctx).await;
        assert_eq!(logged.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "the same objects");
        for (key, versions) in &expected {
            assert_eq!(&logged[key], versions, "{key}: the log names exactly the committed versions");
            for e in versions {
                let bytes = side.json.get(&e.record.snapshot.key).await.unwrap();
                let env = SnapshotEnvelope::decode(&bytes, Some(&e.record.snapshot)).unwrap();
                let read = c.get_version(key.id.as_str(), e.record.ov, ReadOpts::default()).await.unwrap();
                assert_eq!(env.data, read.data, "{key} {}: the named snapshot holds the version's data", e.record.ov);
                assert_eq!((env.ov, env.at, env.op), (e.record.ov, e.record.at, e.record.op));
            }
            // The object's version index (S3 alone) holds the same records, and reads from it
            // answer the same.
            let mut indexed = Vec::new();
            let mut q = HistoryQuery { limit: 7, ..HistoryQuery::default() };
            loop {
                let page = c.shadow_history(key.id.as_str(), q).await.unwrap();
                indexed.extend(page.items);
                match page.next {
                    Some(n) => q.after = Some(udm_core::query::parse_history_cursor(&n).unwrap()),
                    None => break,
                }
            }
            let records: Vec<VersionRecord> = versions.iter().map(|e| e.record.clone()).collect();
            assert_eq!(indexed, records, "{key}: the version index names exactly the committed versions");
            let shadow = ReadOpts { source: ReadSource::Shadow, include_deleted: true, ..ReadOpts::default() };
            for r in &records {
                let (by_ov, by_cv) = (
                    c.get_version(key.id.as_str(), r.ov, shadow).await.unwrap(),
                    c.as_of_cv(key.id.as_str(), r.cv, shadow).await.unwrap(),
                );
                assert_eq!((by_ov.ov, by_ov.cv, by_cv.ov), (r.ov, r.cv, r.ov), "{key}: S3-only reads");
            }
            let prefix = format!("{}versions/", Layout::default().object_prefix(key));
            let stored = side.json.list(&prefix, None, 1000).await.unwrap().keys.len();
            orphans += stored - versions.len();
            objects += 1;
        }
    }
    assert_eq!(objects, 24);
    assert!(orphans > 0, "failed commits left snapshots the log had to tell apart (report {report:?})");
    let restored = c.get_latest("o13", ReadOpts::default()).await.unwrap();
    assert_eq!(restored.data, json!({"w": 1, "i": 3, "tags": []}), "deleted, then restored to its first version");

    // Drift, deep, with no grace period: the failed commits' orphans, and nothing else.
    let options = udm_facade::DriftOptions { orphan_grace: std::time::Duration::ZERO, deep: true };
    let mut kinds = BTreeMap::new();
    let totals = udm
        .admin()
        .drift(udm_facade::DriftScope::Collection(ctx.clone()), options, None, &mut |e| {
            if let udm_facade::DriftEvent::Finding(f) = e {
                *kinds.entry(format!("{:?}", f.item.kind)).or_insert(0usize) += 1;
            }
        })
        .await
        .unwrap();
    assert_eq!(kinds, BTreeMap::from([("OrphanSnapshot".to_owned(), orphans)]), "{totals:?}");
    assert_eq!(totals.objects, 24);

    // The orphan GC with no grace period deletes exactly those orphans; then drift is clean
    // and every committed version still reads.
    let gc = udm.admin().collect_garbage(Some(&ctx), std::time::Duration::ZERO, false, &mut |_| {}).await.unwrap();
    assert_eq!((gc.snapshots as usize, gc.unreadable), (orphans, 0), "{gc:?}");
    let after =
        udm.admin().drift(udm_facade::DriftScope::Collection(ctx.clone()), options, None, &mut |_| {}).await.unwrap();
    assert!(after.summary.in_sync, "{after:?}");
    for side in [&a, &b] {
        for (key, versions) in from_metadata(&side.meta, &ctx).await {
            for e in versions {
                c.get_version(key.id.as_str(), e.record.ov, ReadOpts::default()).await.unwrap();
            }
        }
    }
}
