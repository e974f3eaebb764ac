//! Shadow commit log bookkeeping scenarios ([`MetaStore::shadow_backlog`],
//! [`MetaStore::shadow_pending`], [`MetaStore::shadow_logged`]).

use serde_json::json;
use udm_core::ports::MetaStore;
use udm_core::{Cv, ErrorKind, Op, RouteContext};

use super::MetaAdapters;
use crate::fixtures::{commit, key, ov, rid, ts, unique_ctx};

/// Whether `ctx` is on the backlog, paging through every page of it.
async fn listed(meta: &dyn MetaStore, ctx: &RouteContext) -> bool {
    let mut after: Option<String> = None;
    loop {
        let page = meta.shadow_backlog(after.as_deref(), 1000).await.expect("backlog");
        if page.items.contains(ctx) {
            return true;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return false,
        }
    }
}

/// Committed versions the log lacks are listed in CV order from the watermark, with their
/// request fingerprints; the watermark only moves forward; a caught-up collection leaves
/// the backlog; versions pruned before the flush are skipped; bad limits are refused.
pub async fn shadow_log_lists_what_it_lacks(a: MetaAdapters) {
    let m = &*a.meta;
    let ctx = unique_ctx("shadow-log");
    let empty = m.shadow_pending(&ctx, 10).await.unwrap();
    assert_eq!((empty.after, empty.upto, empty.entries.len()), (Cv::ZERO, Cv::ZERO, 0));
    assert!(!listed(m, &ctx).await);
    let (x, y) = (key(&ctx, "x"), key(&ctx, "y"));
    m.commit(commit(&x, None, Op::Create, ts(1), "x1", &json!({"n": 1}))).await.unwrap();
    let batch = vec![
        commit(&y, None, Op::Create, ts(2), "y1", &json!({})),
        commit(&x, Some(ov(1)), Op::Update, ts(3), "x2", &json!({"n": 2})),
    ];
    m.commit_many(batch).await.unwrap();
    assert!(listed(m, &ctx).await, "commits put the collection on the backlog");

    let first = m.shadow_pending(&ctx, 2).await.unwrap();
    assert_eq!((first.after, first.upto), (Cv::ZERO, Cv(2)));
    let got: Vec<(String, u64, u64)> =
        first.entries.iter().map(|e| (e.record.key.id.to_string(), e.record.ov.get(), e.record.cv.0)).collect();
    assert_eq!(got, vec![("x".into(), 1, 1), ("y".into(), 1, 2)]);
    let (_, fp) = m.find_request(&ctx, &rid("y1")).await.unwrap().unwrap();
    assert_eq!(first.entries[1].fingerprint, fp);
    assert_eq!(first.entries[0].record, m.version(&x, ov(1)).await.unwrap().unwrap());

    m.shadow_logged(&ctx, Cv(2)).await.unwrap();
    m.shadow_logged(&ctx, Cv(1)).await.unwrap(); // never backwards
    let rest = m.shadow_pending(&ctx, 1000).await.unwrap();
    assert_eq!((rest.after, rest.upto), (Cv(2), Cv(3)));
    assert_eq!(rest.entries.iter().map(|e| e.record.cv.0).collect::<Vec<_>>(), vec![3]);
    m.shadow_logged(&ctx, Cv(3)).await.unwrap();
    let done = m.shadow_pending(&ctx, 1000).await.unwrap();
    assert_eq!((done.after, done.upto, done.entries.len()), (Cv(3), Cv(3), 0));
    assert!(!listed(m, &ctx).await, "a caught-up collection leaves the backlog");

    // A version pruned before its flush is not logged; the range still advances past it.
    m.commit(commit(&x, Some(ov(2)), Op::Update, ts(4), "x3", &json!({"n": 3}))).await.unwrap();
    m.commit(commit(&x, Some(ov(3)), Op::Update, ts(5), "x4", &json!({"n": 4}))).await.unwrap();
    m.prune(&x, &[ov(3)]).await.unwrap();
    let after_prune = m.shadow_pending(&ctx, 1000).await.unwrap();
    assert_eq!((after_prune.after, after_prune.upto), (Cv(3), Cv(5)));
    assert_eq!(after_prune.entries.iter().map(|e| e.record.ov.get()).collect::<Vec<_>>(), vec![4]);

    for bad in [0, 1001] {
        assert_eq!(m.shadow_pending(&ctx, bad).await.unwrap_err().kind(), ErrorKind::Validation);
        assert_eq!(m.shadow_backlog(None, bad).await.unwrap_err().kind(), ErrorKind::Validation);
    }
}
