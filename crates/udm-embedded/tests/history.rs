//! Version lookups on the embedded store cost O(log n) table lookups: counted by the store
//! ([`EmbeddedStore::reads`]), not timed. Answers are checked against a reference computed
//! from the whole history, including histories with gaps (version records removed from the
//! redb file behind the store's back).

use std::path::Path;

use serde_json::json;
use udm_core::layout::version_record_id;
use udm_core::ports::MetaStore;
use udm_core::query::{HistoryQuery, Order, parse_history_cursor};
use udm_core::{Cv, ObjectKey, Op, Ov, Timestamp, VersionRecord};
use udm_embedded::EmbeddedStore;
use udm_testkit::conformance::meta::all_versions;
use udm_testkit::fixtures::{commit, key, ov, ts, unique_ctx};

/// `n` versions of `k` (two per timestamp: 10, 10, 20, 20, …), with a version of `other`
/// after every 100th, so CVs and OVs differ.
async fn commit_versions(s: &EmbeddedStore, k: &ObjectKey, other: &ObjectKey, n: u64) {
    let (mut head, mut other_head) = (None, None);
    for i in 1..=n {
        let at = ts((i.div_ceil(2) * 10) as i64);
        head = Some(s.commit(commit(k, head, Op::Update, at, &format!("r{i}"), &json!({"i": i}))).await.unwrap().ov);
        if i % 100 == 0 {
            let c = commit(other, other_head, Op::Update, at, &format!("o{i}"), &json!({"o": i}));
            other_head = Some(s.commit(c).await.unwrap().ov);
        }
    }
}

/// Removes versions `ovs` of `k` from the file directly, behind the store's back.
fn remove_versions(path: &Path, k: &ObjectKey, ovs: &[u64]) {
    let table: redb::TableDefinition<'static, &'static str, &'static [u8]> = redb::TableDefinition::new("versions");
    let db = redb::Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(table).unwrap();
        for &o in ovs {
            assert!(t.remove(version_record_id(k, ov(o)).as_str()).unwrap().is_some(), "version {o}");
        }
    }
    tx.commit().unwrap();
}

/// Table lookups of one call, and its answer.
async fn counted<T>(s: &EmbeddedStore, call: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = s.reads();
    let answer = call.await;
    (answer, s.reads() - before)
}

/// Checks as-of by instant and by CV against `all` (every stored version) for every instant
/// and CV around them; returns the most lookups one call took.
async fn check_as_of(s: &EmbeddedStore, k: &ObjectKey, all: &[VersionRecord]) -> u64 {
    let mut most = 0;
    let mut instants: Vec<Timestamp> = vec![ts(0), ts(9), ts(i64::from(i32::MAX))];
    instants.extend(all.iter().flat_map(|v| [v.at, v.at.plus_millis(1), v.at.plus_millis(-1)]));
    for t in instants {
        let want = all.iter().rev().find(|v| v.at <= t).cloned();
        let (got, n) = counted(s, s.version_at(k, t)).await;
        assert_eq!(got.unwrap(), want, "as of {t:?}");
        most = most.max(n);
    }
    let mut cvs: Vec<u64> = all.iter().flat_map(|v| [v.cv.0 - 1, v.cv.0, v.cv.0 + 1]).collect();
    cvs.extend([0, u64::from(u32::MAX), u64::MAX]);
    for cv in cvs {
        let want = all.iter().rev().find(|v| v.cv.0 <= cv).cloned();
        let (got, n) = counted(s, s.version_at_cv(k, Cv(cv))).await;
        assert_eq!(got.unwrap(), want, "as of cv {cv}");
        most = most.max(n);
    }
    most
}

/// Pages through the whole history; returns the OVs read and the most lookups one page took.
async fn page_through(s: &EmbeddedStore, k: &ObjectKey, order: Order, limit: usize) -> (Vec<Ov>, u64) {
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

fn ovs_of(all: &[VersionRecord], order: Order) -> Vec<Ov> {
    let mut want: Vec<Ov> = all.iter().map(|v| v.ov).collect();
    if order == Order::Desc {
        want.reverse();
    }
    want
}

/// 1,000 versions: as-of by instant and by CV in 2 lookups (one seek in the as-of index, one
/// `get`; the binary search it replaced took up to 11), a version by OV in 1, a history page
/// of 100 in 1.
#[tokio::test]
async fn lookups_are_log_n_reads_at_1000_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(&dir.path().join("meta.redb")).unwrap();
    let ctx = unique_ctx("history");
    let (k, other) = (key(&ctx, "doc"), key(&ctx, "other"));
    commit_versions(&s, &k, &other, 1000).await;
    let all = all_versions(&s, &k).await;
    assert_eq!(all.len(), 1000);

    let most = check_as_of(&s, &k, &all).await;
    eprintln!("as-of: at most {most} reads");
    assert_eq!(most, 2, "as-of: one index seek and one get");
    for i in [1, 500, 1000, 1001] {
        let (v, n) = counted(&s, s.version(&k, ov(i))).await;
        assert_eq!(v.unwrap().as_ref(), all.get(i as usize - 1));
        assert_eq!(n, 1, "version {i}");
    }
    for order in [Order::Asc, Order::Desc] {
        let (ovs, most) = page_through(&s, &k, order, 100).await;
        assert_eq!(ovs, ovs_of(&all, order), "{order:?}");
        assert_eq!(most, 1, "{order:?}: one seek per page");
    }
}

/// Gaps are absent versions, never errors: every lookup answers as the reference over what
/// is stored. Pruned versions leave the as-of index with their records (2 lookups still);
/// records removed behind the store's back (the head's own included) are stepped over.
#[tokio::test]
async fn gaps_are_absent_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let ctx = unique_ctx("gaps");
    let (k, other) = (key(&ctx, "doc"), key(&ctx, "other"));
    let mut pruned: Vec<u64> = (1..=10).chain(50..=150).chain([200, 201, 299]).collect();
    pruned.extend((220..=260).step_by(3));
    {
        let s = EmbeddedStore::open(&path).unwrap();
        commit_versions(&s, &k, &other, 300).await;
        let ovs: Vec<Ov> = pruned.iter().map(|&o| ov(o)).collect();
        assert_eq!(s.prune(&k, &ovs).await.unwrap().len(), pruned.len());
        let all = all_versions(&s, &k).await;
        assert_eq!(all.len(), 300 - pruned.len());
        let most = check_as_of(&s, &k, &all).await;
        assert!(most <= 2, "as-of over pruned versions took {most} reads");
    }
    remove_versions(&path, &k, &[298, 300]);
    let s = EmbeddedStore::open(&path).unwrap();
    let all = all_versions(&s, &k).await;
    assert_eq!(all.len(), 300 - pruned.len() - 2);

    let most = check_as_of(&s, &k, &all).await;
    eprintln!("as-of with records removed behind the store's back: at most {most} reads");
    assert!(most <= 4, "as-of stepping over 2 missing records took {most} reads");
    for order in [Order::Asc, Order::Desc] {
        for limit in [1, 7, 100] {
            let (ovs, _) = page_through(&s, &k, order, limit).await;
            assert_eq!(ovs, ovs_of(&all, order), "{order:?} by {limit}");
        }
    }
    let everything: Vec<u64> = all.iter().map(|v| v.ov.get()).collect();
    drop(s);
    remove_versions(&path, &k, &everything);
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.version_at(&k, ts(i64::from(i32::MAX))).await.unwrap(), None);
    assert_eq!(s.version_at_cv(&k, Cv(1)).await.unwrap(), None);
    assert_eq!(s.version_at_cv(&k, Cv(u64::MAX)).await.unwrap(), None);
}

#[test]
fn a_file_whose_records_are_json_text_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("earlier.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&str, &str>::new("versions")).unwrap();
        tx.commit().unwrap();
    }
    let err = EmbeddedStore::open(&path).unwrap_err();
    assert_eq!(err.kind(), udm_core::ErrorKind::Config);
    assert!(err.to_string().contains("table versions was written by an earlier build"), "{err}");
}
