//! The shadow version index: reads from the blob store alone take a constant number of blob
//! requests however long the history — counted through a counting layer, not timed — and
//! answer exactly what the metadata store answers; reads fall back to it when the metadata
//! store lacks a record or the whole object.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use udm_core::config::Config;
use udm_core::ports::{BlobStore, MetaStore};
use udm_core::query::{HistoryQuery, Order, Page, parse_history_cursor};
use udm_core::{Cv, ErrorKind, Ov, Result, RouteContext, Timestamp, VersionRecord};
use udm_facade::{Collection, Pair, ReadOpts, ReadSource, Record, Udm, WriteOpts};
use udm_layers::{Answer, Call, Intercepted, Interceptor};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

/// Counts blob calls by operation, and separately those on index segments.
#[derive(Debug, Clone, Default)]
struct Count(Arc<Mutex<BTreeMap<&'static str, usize>>>, Arc<Mutex<BTreeMap<&'static str, usize>>>);

impl Count {
    fn take(&self) -> BTreeMap<&'static str, usize> {
        self.take_segments();
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The calls on index segments (`…/index/<n>.json`) since the last take.
    fn take_segments(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.1.lock().unwrap())
    }
}

impl Interceptor for Count {
    async fn intercept<T, F, Fut>(&self, call: Call<'_>, run: F) -> Result<T>
    where
        T: Answer,
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        *self.0.lock().unwrap().entry(call.op).or_default() += 1;
        if call.key.is_some_and(|k| k.contains("/index/") && k.ends_with(".json")) {
            *self.1.lock().unwrap().entry(call.op).or_default() += 1;
        }
        run().await
    }
}

struct Setup {
    udm: Udm,
    meta: Arc<MemoryMeta>,
    json: Arc<MemoryBlobs>,
    content: Arc<MemoryBlobs>,
    count: Count,
}

fn udm_over(meta: Arc<MemoryMeta>, json: Arc<MemoryBlobs>, content: Arc<MemoryBlobs>, config: Config) -> (Udm, Count) {
    let count = Count::default();
    let counted: Arc<dyn BlobStore> = Arc::new(Intercepted::new(json, count.clone()));
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone(),
        counters: meta,
        json: counted,
        content,
        describe: "memory".into(),
    };
    (Udm::builder().config(config).pair(pair).build().unwrap(), count)
}

fn setup(config: Config) -> Setup {
    let (meta, json, content) =
        (Arc::new(MemoryMeta::new()), Arc::new(MemoryBlobs::new()), Arc::new(MemoryBlobs::new()));
    let (udm, count) = udm_over(meta.clone(), json.clone(), content.clone(), config);
    Setup { udm, meta, json, content, count }
}

fn ctx() -> RouteContext {
    RouteContext::new("acme", "crm", "docs").unwrap()
}

fn shadow() -> ReadOpts {
    ReadOpts { source: ReadSource::Shadow, include_deleted: true, ..ReadOpts::default() }
}

fn same(a: &Record, b: &Record) {
    assert_eq!((a.ov, a.cv, a.op, a.at, a.deleted, &a.data), (b.ov, b.cv, b.op, b.at, b.deleted, &b.data));
}

/// Writes `n` versions of "doc" (an update per version; every 1000th a delete and a
/// re-creating update is not allowed, so a restore brings it back).
async fn write_history(c: &Collection, n: u64) -> Vec<(Ov, Cv, Timestamp)> {
    let mut out = Vec::new();
    let w = c.create(json!({"n": 1}), WriteOpts::id("doc")).await.unwrap();
    out.push((w.ov, w.cv, w.at));
    for i in 2..=n {
        let w = c.update("doc", json!({"n": i}), None, WriteOpts::default()).await.unwrap();
        out.push((w.ov, w.cv, w.at));
    }
    out
}

async fn all_pages(mut page: impl AsyncFnMut(HistoryQuery) -> Page<VersionRecord>, order: Order) -> Vec<VersionRecord> {
    let mut q = HistoryQuery { limit: 100, order, after: None };
    let mut out = Vec::new();
    loop {
        let p = page(q).await;
        out.extend(p.items);
        match p.next {
            Some(n) => q.after = Some(parse_history_cursor(&n).unwrap()),
            None => return out,
        }
    }
}

/// At 100k versions, every S3-only read takes at most 3 blob requests (a marker listing,
/// one index segment, one snapshot), a history page of 100 at most 2, and each answers what
/// the metadata store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_only_reads_take_a_constant_number_of_requests_at_100k_versions() {
    let s = setup(Config::in_memory());
    let c = s.udm.with(ctx());
    let n = 100_000;
    let written = write_history(&c, n).await;
    s.udm.admin().flush_shadow().await.unwrap();
    s.count.take();

    let mut probes: Vec<usize> = vec![0, 1, 255, 256, 257, 50_000, 99_998, 99_999];
    probes.extend((0..16).map(|i| i * 6_247 + 13));
    let primary = ReadOpts { include_deleted: true, ..ReadOpts::default() };
    for i in probes {
        let (ov, cv, at) = written[i];
        let want = c.get_version("doc", ov, primary).await.unwrap();
        s.count.take();
        let got = c.get_version("doc", ov, shadow()).await.unwrap();
        let requests = s.count.take();
        same(&got, &want);
        assert_eq!(requests.values().sum::<usize>(), 2, "get_version {ov} from S3: {requests:?}");

        let want_at = c.as_of("doc", at, primary).await.unwrap();
        s.count.take();
        let got = c.as_of("doc", at, shadow()).await.unwrap();
        let requests = s.count.take();
        same(&got, &want_at);
        assert_eq!(requests.values().sum::<usize>(), 3, "as_of {at} from S3: {requests:?}");

        let got = c.as_of_cv("doc", cv, shadow()).await.unwrap();
        let requests = s.count.take();
        same(&got, &want);
        assert_eq!(requests.values().sum::<usize>(), 3, "as_of_cv {cv} from S3: {requests:?}");
    }
    let latest = c.get_latest("doc", shadow()).await.unwrap();
    let requests = s.count.take();
    assert_eq!((latest.ov.get(), &latest.data), (n, &json!({"n": n})));
    assert!(requests.values().sum::<usize>() <= 3, "latest from S3: {requests:?}");

    for after in [None, Some(Ov::new(1).unwrap()), Some(Ov::new(40_000).unwrap())] {
        for order in [Order::Asc, Order::Desc] {
            let q = HistoryQuery { after, limit: 100, order };
            let want = c.history("doc", q).await.unwrap();
            s.count.take();
            let got = c.shadow_history("doc", q).await.unwrap();
            let requests = s.count.take();
            assert_eq!(got, want, "{q:?}");
            assert!(requests.values().sum::<usize>() <= 2, "history page {q:?} from S3: {requests:?}");
        }
    }
}

/// Versions whose records the metadata store lost (removed behind UDM's back) are read from
/// the index with their true CV; an object the metadata store lost entirely too; the whole
/// history from S3 equals the metadata store's in both orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_the_index_for_lost_records_and_objects() {
    let s = setup(Config::in_memory());
    let c = s.udm.with(ctx());
    let written = write_history(&c, 600).await;
    c.create(json!({"other": true}), WriteOpts::id("other")).await.unwrap();
    s.udm.admin().flush_shadow().await.unwrap();
    let primary = ReadOpts::default();
    // Each version, and the as-of answer at its instant, before anything is lost (versions
    // written in one millisecond share an instant: as-of answers the last of them).
    let (before, before_at): (Vec<Record>, Vec<Record>) = {
        let (mut v, mut a) = (Vec::new(), Vec::new());
        for (ov, _, at) in &written {
            v.push(c.get_version("doc", *ov, primary).await.unwrap());
            a.push(c.as_of("doc", *at, primary).await.unwrap());
        }
        (v, a)
    };
    let history = async |c: &Collection, shadow: bool, order| {
        all_pages(
            async |q| {
                if shadow { c.shadow_history("doc", q).await.unwrap() } else { c.history("doc", q).await.unwrap() }
            },
            order,
        )
        .await
    };
    for order in [Order::Asc, Order::Desc] {
        assert_eq!(history(&c, true, order).await, history(&c, false, order).await, "{order:?}");
    }

    // The metadata store loses the records of OVs 250..=260 (across a segment boundary).
    let key = udm_core::ObjectKey::new(ctx(), udm_core::ObjectId::new("doc").unwrap());
    let lost: Vec<Ov> = (250..=260).map(|n| Ov::new(n).unwrap()).collect();
    assert_eq!(s.meta.prune(&key, &lost).await.unwrap().len(), lost.len());
    for ov in &lost {
        assert!(s.meta.version(&key, *ov).await.unwrap().is_none());
        let got = c.get_version("doc", *ov, primary).await.unwrap();
        same(&got, &before[ov.get() as usize - 1]);
        assert_ne!(got.cv, Cv::ZERO, "the index knows the CV");
    }

    // A second Udm over the same blob stores and an empty metadata store: every version and
    // as-of still answers (the object is found in the shadow index).
    let (empty, _) = udm_over(Arc::new(MemoryMeta::new()), s.json.clone(), s.content.clone(), Config::in_memory());
    let lost_all = empty.with(ctx());
    for (i, (ov, cv, at)) in written.iter().enumerate().step_by(37) {
        let want = &before[i];
        same(&lost_all.get_version("doc", *ov, primary).await.unwrap(), want);
        same(&lost_all.as_of("doc", *at, primary).await.unwrap(), &before_at[i]);
        same(&lost_all.as_of_cv("doc", *cv, primary).await.unwrap(), want);
    }
    same(&lost_all.get_latest("doc", shadow()).await.unwrap(), before.last().unwrap());
    let err = lost_all.get_version("nobody", Ov::FIRST, primary).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let too_early = Timestamp::from_millis(written[0].2.as_millis() - 1).unwrap();
    assert_eq!(lost_all.as_of("doc", too_early, shadow()).await.unwrap_err().kind(), ErrorKind::NotFound);
}

/// The index is written behind the commits by the flusher, also for an object whose
/// versions arrive in many flushes, and a repeated flush changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flusher_keeps_the_index_complete_and_a_repeat_changes_nothing() {
    let s = setup(Config::in_memory());
    let c = s.udm.with(ctx());
    for round in 0..5u64 {
        for id in ["a", "b", "c"] {
            if round == 0 {
                c.create(json!({"round": round}), WriteOpts::id(id)).await.unwrap();
            } else {
                c.update(id, json!({"round": round}), None, WriteOpts::default()).await.unwrap();
            }
        }
        s.udm.admin().flush_shadow().await.unwrap();
    }
    c.delete("b", None, WriteOpts::default()).await.unwrap();
    s.udm.admin().flush_shadow().await.unwrap();
    for id in ["a", "b", "c"] {
        let from_s3 = c.shadow_history(id, HistoryQuery::default()).await.unwrap();
        assert_eq!(from_s3, c.history(id, HistoryQuery::default()).await.unwrap(), "{id}");
    }
    let deleted = c.get_latest("b", ReadOpts { source: ReadSource::Shadow, ..ReadOpts::default() }).await;
    assert_eq!(deleted.unwrap_err().kind(), ErrorKind::NotFound, "a deleted latest is hidden from S3 reads too");
    s.count.take();
    s.udm.admin().flush_shadow().await.unwrap();
    let requests = s.count.take();
    assert_eq!(requests.get("put").copied().unwrap_or(0), 0, "a caught-up flush writes nothing: {requests:?}");
}

/// A damaged index segment (torn by an S3 server crash mid-overwrite, or rotten) does not
/// stop the flusher: the next flush rebuilds it from the metadata store — its kept versions,
/// and the OVs the store pruned as pruned — and the S3-only reads answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_index_segment_is_rebuilt_by_the_next_flush() {
    let s = setup(Config::in_memory());
    let c = s.udm.with(ctx());
    write_history(&c, 10).await;
    s.udm.admin().flush_shadow().await.unwrap();
    let key = udm_core::ObjectKey::new(ctx(), udm_core::ObjectId::new("doc").unwrap());
    let pruned = [Ov::new(2).unwrap(), Ov::new(3).unwrap()];
    assert_eq!(s.meta.prune(&key, &pruned).await.unwrap().len(), 2);

    // Tear the segment: keep all but its last bytes, as a crash between writing an object's
    // bytes and its checksum leaves it.
    let listed = s.json.list("", None, udm_core::ports::MAX_LIST_PAGE).await.unwrap();
    let at =
        listed.keys.iter().find(|k| k.ends_with("objects/doc/index/00000000000000000000.json")).expect("segment 0");
    let whole = s.json.get(at).await.unwrap();
    let torn = whole[..whole.len() - 3].to_vec();
    s.json.put(at, torn.clone(), &udm_core::ports::PutOptions::overwrite("application/json")).await.unwrap();
    let err = c.get_version("doc", Ov::new(5).unwrap(), shadow()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");

    for i in 11..=15 {
        c.update("doc", json!({"n": i}), None, WriteOpts::default()).await.unwrap();
    }
    s.udm.admin().flush_shadow().await.expect("the flush rebuilds the damaged segment");
    assert_ne!(s.json.get(at).await.unwrap(), torn, "rewritten");
    let from_s3 = all_pages(async |q| c.shadow_history("doc", q).await.unwrap(), Order::Asc).await;
    let from_meta = all_pages(async |q| c.history("doc", q).await.unwrap(), Order::Asc).await;
    assert_eq!(from_s3.len(), 13, "15 versions, 2 pruned");
    assert_eq!(from_s3, from_meta);
    for ov in pruned {
        let err = c.get_version("doc", ov, shadow()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Pruned, "{ov}: {err}");
    }
    let v5 = c.get_version("doc", Ov::new(5).unwrap(), shadow()).await.unwrap();
    same(&v5, &c.get_version("doc", Ov::new(5).unwrap(), ReadOpts::default()).await.unwrap());
}

/// Drift over an object whose index segment reads back damaged: one `ChecksumMismatch`
/// finding naming the segment — not a failed check, and no false findings from the entries
/// it could not read (a head "missing" from the shadow, its snapshots taken for orphans).
#[tokio::test]
async fn drift_reports_a_damaged_index_segment_and_nothing_it_cannot_know() {
    use udm_core::drift::{DriftKind, DriftSource};
    use udm_facade::{DriftEvent, DriftOptions, DriftScope};

    let s = setup(Config::in_memory());
    let c = s.udm.with(ctx());
    write_history(&c, 10).await;
    s.udm.admin().flush_shadow().await.unwrap();
    let listed = s.json.list("", None, udm_core::ports::MAX_LIST_PAGE).await.unwrap();
    let at = listed.keys.iter().find(|k| k.ends_with("objects/doc/index/00000000000000000000.json")).unwrap().clone();
    let whole = s.json.get(&at).await.unwrap();
    s.json
        .put(&at, whole[..whole.len() - 3].to_vec(), &udm_core::ports::PutOptions::overwrite("application/json"))
        .await
        .unwrap();

    // Every snapshot is old enough to be an orphan if nothing named it.
    let options = DriftOptions { orphan_grace: std::time::Duration::ZERO, deep: false };
    for scope in [DriftScope::Object(ctx(), "doc".into()), DriftScope::Collection(ctx())] {
        let mut found = Vec::new();
        let totals = s
            .udm
            .admin()
            .drift(scope.clone(), options, None, &mut |e| {
                if let DriftEvent::Finding(f) = e {
                    found.push(*f);
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{scope:?}: drift reports the damage instead of failing: {e}"));
        assert_eq!(found.len(), 1, "{scope:?}: {found:#?}");
        let f = &found[0];
        assert_eq!(
            (f.id.as_deref(), f.item.source, f.item.kind),
            (Some("doc"), DriftSource::Shadow, DriftKind::ChecksumMismatch)
        );
        assert_eq!(f.item.expected, Some(json!(at)), "names the segment");
        assert!(!totals.summary.in_sync);
        assert_eq!(totals.summary.orphan_snapshot, 0);
    }

    // The next write's flush rebuilds the segment: in sync again.
    c.update("doc", json!({"n": 11}), None, WriteOpts::default()).await.unwrap();
    s.udm.admin().flush_shadow().await.unwrap();
    let totals =
        s.udm.admin().drift(DriftScope::Object(ctx(), "doc".into()), options, None, &mut |_| {}).await.unwrap();
    assert!(totals.summary.in_sync, "{totals:?}");
}

/// The flusher's index updates cost one request per segment on a store with conditional
/// puts: a new object's segment is put create-only without reading it first, and a segment
/// this process wrote is put with `If-Match` on the ETag its put returned, without reading
/// it back. A segment another process changed since is read and merged (its compare-and-swap
/// fails), so nothing either process wrote is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_updates_skip_the_read_and_a_stale_guess_still_merges() {
    let s = setup(Config::in_memory());
    let c = s.udm.with(ctx());
    let ids = ["a", "b", "c"];
    s.count.take();
    for id in ids {
        c.create(json!({"n": 0}), WriteOpts::id(id)).await.unwrap();
    }
    s.udm.admin().flush_shadow().await.unwrap();
    let created = s.count.take_segments();
    assert_eq!(created, BTreeMap::from([("put", 3)]), "one create-only put per new segment, no read");

    for round in 1..=3 {
        for id in ids {
            c.update(id, json!({"n": round}), None, WriteOpts::default()).await.unwrap();
        }
        s.udm.admin().flush_shadow().await.unwrap();
        let updated = s.count.take_segments();
        assert_eq!(updated, BTreeMap::from([("put", 3)]), "round {round}: segments written here are not read back");
    }

    // Another process (its own cache) writes and flushes "a": this process's cached ETag of
    // that segment is stale now.
    let (other, _) = udm_over(s.meta.clone(), s.json.clone(), s.content.clone(), Config::in_memory());
    other.with(ctx()).update("a", json!({"n": "other"}), None, WriteOpts::default()).await.unwrap();
    other.admin().flush_shadow().await.unwrap();
    other.admin().shutdown().await.unwrap();
    c.update("a", json!({"n": "mine"}), None, WriteOpts::default()).await.unwrap();
    s.count.take();
    s.udm.admin().flush_shadow().await.unwrap();
    let merged = s.count.take_segments();
    assert_eq!(
        merged,
        BTreeMap::from([("get_with_etag", 1), ("put", 2)]),
        "the refused guess is read, merged and put again"
    );
    for id in ids {
        let from_s3 = c.shadow_history(id, HistoryQuery::default()).await.unwrap();
        assert_eq!(from_s3, c.history(id, HistoryQuery::default()).await.unwrap(), "{id}");
    }
    assert_eq!(c.shadow_history("a", HistoryQuery::default()).await.unwrap().items.len(), 6);
}

/// Retention's flags carry no version record: run in a process that never wrote the
/// segment, they are merged into it with a read and a put, not first tried as a new segment
/// (retention prunes the oldest versions, so it mostly flags a segment's first OV).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_in_another_process_reads_the_segment_it_flags() {
    let mut config = Config::in_memory();
    config.retention = udm_core::retention::RetentionPolicy { days: None, max_versions_per_item: Some(2) };
    let s = setup(config.clone());
    write_history(&s.udm.with(ctx()), 5).await;
    s.udm.admin().flush_shadow().await.unwrap();
    s.udm.admin().shutdown().await.unwrap();

    let (other, count) = udm_over(s.meta.clone(), s.json.clone(), s.content.clone(), config);
    count.take();
    let report = other.admin().enforce_retention(None, false, &mut |_| {}).await.unwrap();
    assert_eq!(report.versions_pruned, 3, "{report:?}");
    assert_eq!(count.take_segments(), BTreeMap::from([("get_with_etag", 1), ("put", 1)]), "one read, one put");
    let c = other.with(ctx());
    let err = c.get_version("doc", Ov::new(1).unwrap(), shadow()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Pruned, "{err}");
    let kept = c.shadow_history("doc", HistoryQuery::default()).await.unwrap();
    assert_eq!(kept, c.history("doc", HistoryQuery::default()).await.unwrap());
    assert_eq!(kept.items.len(), 2);
}
