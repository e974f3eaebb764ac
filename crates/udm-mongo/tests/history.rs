//! Version lookups on MongoDB cost O(log n) primary-key point lookups, whatever plan the
//! server would choose for a range + sort: round trips counted by the store
//! ([`MongoStore::round_trips`]), not time, on the real test server (SecantusDB, started by
//! `cargo xtask services up`). Answers are checked against a reference computed from the
//! whole history, including histories with gaps (version records removed behind the store's
//! back).

use std::time::Instant;

use bson::{Bson, doc};
use serde_json::json;
use udm_core::layout::version_record_id;
use udm_core::ports::MetaStore;
use udm_core::query::{HistoryQuery, Order, parse_history_cursor};
use udm_core::{Cv, ObjectKey, Op, Ov, Timestamp, VersionRecord};
use udm_mongo::{MongoConfig, MongoStore};
use udm_testkit::fixtures::{commit, key, ov, ts, unique_ctx};
use udm_testkit::services::mongo_uri;

const DB: &str = "udm_history";

async fn store() -> MongoStore {
    let cfg = MongoConfig::new(&mongo_uri(), DB);
    MongoStore::connect(&cfg).await.unwrap_or_else(|e| panic!("connecting to {}: {e}", cfg.uri))
}

/// `n` versions of `k` (two per timestamp: 10, 10, 20, 20, …), with a version of `other`
/// after every 100th, so CVs and OVs differ.
async fn commit_versions(s: &MongoStore, k: &ObjectKey, other: &ObjectKey, n: u64) {
    let started = Instant::now();
    let (mut head, mut other_head) = (None, None);
    for i in 1..=n {
        let at = ts((i.div_ceil(2) * 10) as i64);
        head = Some(s.commit(commit(k, head, Op::Update, at, &format!("r{i}"), &json!({"i": i}))).await.unwrap().ov);
        if i % 100 == 0 {
            let c = commit(other, other_head, Op::Update, at, &format!("o{i}"), &json!({"o": i}));
            other_head = Some(s.commit(c).await.unwrap().ov);
        }
    }
    eprintln!("committed {n} versions in {:?}", started.elapsed());
}

/// Every stored version of `k`, read straight from the database (the reference).
async fn stored_versions(k: &ObjectKey) -> Vec<VersionRecord> {
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let coll = client.database(DB).collection::<bson::Document>("udm_versions");
    let prefix = format!("{}/", udm_core::layout::head_record_id(k));
    let mut cursor = coll.find(doc! {"_id": {"$regex": format!("^{}", regex_escape(&prefix))}}).await.unwrap();
    let mut out: Vec<VersionRecord> = Vec::new();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        out.push(serde_json::from_str(d.get_str("json").unwrap()).unwrap());
    }
    out.sort_by_key(|v| v.ov);
    out
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_ascii_alphanumeric() || c == '/' { vec![c] } else { vec!['\\', c] }).collect()
}

/// Removes versions `ovs` of `k` behind the store's back (a gap, as a prune would leave).
async fn remove_versions(k: &ObjectKey, ovs: &[u64]) {
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let coll = client.database(DB).collection::<bson::Document>("udm_versions");
    let ids: Vec<Bson> = ovs.iter().map(|&o| Bson::String(version_record_id(k, ov(o)))).collect();
    let removed = coll.delete_many(doc! {"_id": {"$in": ids}}).await.unwrap().deleted_count;
    assert_eq!(removed, ovs.len() as u64);
}

/// Round trips of one call, and its answer.
async fn counted<T>(s: &MongoStore, call: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = s.round_trips();
    let answer = call.await;
    (answer, s.round_trips() - before)
}

/// Instants to ask about: before the first version, every stored timestamp, between them,
/// after the last.
fn instants(all: &[VersionRecord]) -> Vec<Timestamp> {
    let mut out = vec![ts(0), ts(9), ts(i64::from(i32::MAX))];
    for v in all {
        out.extend([v.at, v.at.plus_millis(1), v.at.plus_millis(-1)]);
    }
    out.sort();
    out.dedup();
    out
}

/// Checks as-of by instant and by CV against `all` (every stored version) for every instant
/// and CV around them; returns the most round trips one lookup took.
async fn check_as_of(s: &MongoStore, k: &ObjectKey, all: &[VersionRecord], every: usize) -> u64 {
    let mut most = 0;
    for (i, t) in instants(all).into_iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let want = all.iter().rev().find(|v| v.at <= t).cloned();
        let (got, n) = counted(s, s.version_at(k, t)).await;
        assert_eq!(got.unwrap(), want, "as of {t:?}");
        most = most.max(n);
    }
    let mut cvs: Vec<u64> = all.iter().flat_map(|v| [v.cv.0 - 1, v.cv.0, v.cv.0 + 1]).collect();
    cvs.extend([0, u64::from(u32::MAX), u64::MAX]);
    for (i, cv) in cvs.into_iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let want = all.iter().rev().find(|v| v.cv.0 <= cv).cloned();
        let (got, n) = counted(s, s.version_at_cv(k, Cv(cv))).await;
        assert_eq!(got.unwrap(), want, "as of cv {cv}");
        most = most.max(n);
    }
    most
}

/// Pages through the whole history both ways; returns the OVs read and the most round trips
/// one page took.
async fn page_through(s: &MongoStore, k: &ObjectKey, order: Order, limit: usize) -> (Vec<Ov>, u64) {
    let mut q = HistoryQuery { after: None, limit, order };
    let (mut ovs, mut most) = (Vec::new(), 0);
    loop {
        let (page, n) = counted(s, s.history(k, &q)).await;
        let page = page.unwrap();
        most = most.max(n);
        ovs.extend(page.items.iter().map(|v| v.ov));
        match page.next {
            Some(c) => q.after = Some(parse_history_cursor(&c).unwrap()),
            None => return (ovs, most),
        }
    }
}

/// 1,000 versions: as-of by instant and by CV in 2 round trips by the as-of index (its
/// document, then one bucket of versions; the fan-out-16 search it replaced took up to 5),
/// a version by OV in 1, a history page of 100 in at most 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_a_few_point_reads_at_1000_versions() {
    let s = store().await;
    let ctx = unique_ctx("history");
    let (k, other) = (key(&ctx, "doc"), key(&ctx, "other"));
    commit_versions(&s, &k, &other, 1000).await;
    let all = stored_versions(&k).await;
    assert_eq!(all.len(), 1000);

    let started = Instant::now();
    let most = check_as_of(&s, &k, &all, 7).await;
    eprintln!("as-of lookups: at most {most} round trips each ({:?} for all)", started.elapsed());
    assert_eq!(most, 2, "as-of: the index document, then its bucket");

    for i in [1, 2, 500, 999, 1000] {
        let (v, n) = counted(&s, s.version(&k, ov(i))).await;
        assert_eq!(v.unwrap().as_ref(), Some(&all[i as usize - 1]));
        assert_eq!(n, 1, "version {i}");
    }
    let (absent, n) = counted(&s, s.version(&k, ov(1001))).await;
    assert_eq!((absent.unwrap(), n), (None, 1));

    for order in [Order::Asc, Order::Desc] {
        let started = Instant::now();
        let (ovs, most) = page_through(&s, &k, order, 100).await;
        let mut want: Vec<Ov> = all.iter().map(|v| v.ov).collect();
        if order == Order::Desc {
            want.reverse();
        }
        assert_eq!(ovs, want, "{order:?}");
        eprintln!("history {order:?}: 10 pages of 100, at most {most} round trips each ({:?})", started.elapsed());
        assert!(most <= 2, "{order:?}: a page took {most} round trips");
    }
}

/// Gaps (missing version records, the head's own included) are absent versions: every lookup
/// still answers as the reference over what is stored, in few round trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_absent_versions() {
    let s = store().await;
    let ctx = unique_ctx("gaps");
    let (k, other) = (key(&ctx, "doc"), key(&ctx, "other"));
    commit_versions(&s, &k, &other, 150).await;
    let mut gone: Vec<u64> = (1..=5).chain(30..=90).chain([120, 121, 149, 150]).collect();
    gone.extend((100..=115).step_by(3));
    remove_versions(&k, &gone).await;
    let all = stored_versions(&k).await;
    assert_eq!(all.len(), 150 - gone.len());

    let most = check_as_of(&s, &k, &all, 2).await;
    eprintln!("as-of with gaps: at most {most} round trips");
    for order in [Order::Asc, Order::Desc] {
        for limit in [4, 100] {
            let (ovs, most) = page_through(&s, &k, order, limit).await;
            let mut want: Vec<Ov> = all.iter().map(|v| v.ov).collect();
            if order == Order::Desc {
                want.reverse();
            }
            assert_eq!(ovs, want, "{order:?} by {limit}");
            assert!(most <= 10, "{order:?} by {limit}: a page took {most} round trips");
        }
    }
    // Every version gone: nothing, in few round trips.
    remove_versions(&k, &all.iter().map(|v| v.ov.get()).collect::<Vec<_>>()).await;
    let (none, n) = counted(&s, s.version_at(&k, ts(i64::from(i32::MAX)))).await;
    assert_eq!(none.unwrap(), None);
    assert!(
        n <= 6,
        "the index and its bucket, then the search (head, its version, one round of probes, one scan): {n}"
    );
    let (none, _) = counted(&s, s.version_at_cv(&k, Cv(500))).await;
    assert_eq!(none.unwrap(), None);
    let (empty, _) = counted(&s, s.history(&k, &HistoryQuery { after: None, limit: 10, order: Order::Asc })).await;
    assert!(empty.unwrap().items.is_empty());
}
