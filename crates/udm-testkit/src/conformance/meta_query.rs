//! [`MetaStore`](udm_core::ports::MetaStore) query scenarios: listing heads and history pages.

use serde_json::json;
use udm_core::predicate::Predicate;
use udm_core::query::{HeadQuery, HistoryQuery, Order, parse_history_cursor};
use udm_core::{ErrorKind, Head, Op, Ov, RouteContext};

use super::MetaAdapters;
use crate::fixtures::{commit, key, ov, ts, unique_ctx};

async fn list_all(a: &MetaAdapters, ctx: &RouteContext, mut q: HeadQuery) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = a.meta.list_heads(ctx, &q).await.expect("list");
        pages += 1;
        assert!(page.items.len() <= q.limit);
        ids.extend(page.items.iter().map(|h: &Head| h.key.id.to_string()));
        match page.next {
            Some(n) => q.after = Some(n),
            None => return (ids, pages),
        }
    }
}

/// Filter on indexed props, hide deleted objects unless asked, sort by a prop then id, and
/// page with cursors without skipping or repeating.
pub async fn list_filters_sorts_and_pages(a: MetaAdapters) {
    let ctx = unique_ctx("list");
    for i in 0..25u64 {
        let k = key(&ctx, &format!("o{i:02}"));
        let data = json!({"n": i % 5, "group": if i % 2 == 0 { "even" } else { "odd" }});
        a.meta.commit(commit(&k, None, Op::Create, ts(1), &format!("c{i}"), &data)).await.unwrap();
        if i % 10 == 3 {
            a.meta.commit(commit(&k, Some(Ov::FIRST), Op::Delete, ts(2), &format!("d{i}"), &data)).await.unwrap();
        }
    }
    // o03 and o13 and o23 are deleted.
    let (ids, pages) = list_all(&a, &ctx, HeadQuery { limit: 7, ..HeadQuery::default() }).await;
    assert_eq!(ids.len(), 22);
    assert_eq!(pages, 4);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "id order");
    assert!(!ids.contains(&"o03".to_owned()));

    let (with_deleted, _) =
        list_all(&a, &ctx, HeadQuery { include_deleted: true, limit: 1000, ..HeadQuery::default() }).await;
    assert_eq!(with_deleted.len(), 25);

    let filter = Predicate::parse(&json!({"group": "even", "n": {"$gte": 3}})).unwrap();
    let q = HeadQuery { filter, limit: 2, sort_by: Some("n".into()), order: Order::Desc, ..HeadQuery::default() };
    let (ids, _) = list_all(&a, &ctx, q).await;
    // even i with i%5 >= 3: 4(n4), 8(n3), 14(n4), 18(n3), 24(n4); by n desc then id desc.
    assert_eq!(ids, ["o24", "o14", "o04", "o18", "o08"]);

    let q = HeadQuery { sort_by: Some("n".into()), limit: 4, ..HeadQuery::default() };
    let (ids, _) = list_all(&a, &ctx, q).await;
    assert_eq!(&ids[..4], ["o00", "o05", "o10", "o15"]);
    assert_eq!(ids.len(), 22);
}

/// Bad cursors and limits are validation errors.
pub async fn list_rejects_bad_queries(a: MetaAdapters) {
    let ctx = unique_ctx("listbad");
    a.meta.commit(commit(&key(&ctx, "x"), None, Op::Create, ts(1), "c", &json!({}))).await.unwrap();
    for q in [
        HeadQuery { after: Some("not a cursor".into()), ..HeadQuery::default() },
        HeadQuery { limit: 0, ..HeadQuery::default() },
        HeadQuery { limit: 100_000, ..HeadQuery::default() },
    ] {
        let e = a.meta.list_heads(&ctx, &q).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Validation, "{q:?}");
    }
    let bad_history = HistoryQuery { limit: 0, ..HistoryQuery::default() };
    assert_eq!(a.meta.history(&key(&ctx, "x"), &bad_history).await.unwrap_err().kind(), ErrorKind::Validation);
}

/// History pages ascending and descending, with cursors.
pub async fn history_pages_both_ways(a: MetaAdapters) {
    let ctx = unique_ctx("hist");
    let k = key(&ctx, "x");
    let mut head = None;
    for i in 1..=23 {
        head = Some(
            a.meta.commit(commit(&k, head, Op::Update, ts(i), &format!("r{i}"), &json!({"i": i}))).await.unwrap().ov,
        );
    }
    for order in [Order::Asc, Order::Desc] {
        let mut q = HistoryQuery { after: None, limit: 10, order };
        let mut got = Vec::new();
        loop {
            let page = a.meta.history(&k, &q).await.unwrap();
            got.extend(page.items.iter().map(|v| v.ov.get()));
            match page.next {
                Some(n) => q.after = Some(parse_history_cursor(&n).unwrap()),
                None => break,
            }
        }
        let mut want: Vec<u64> = (1..=23).collect();
        if order == Order::Desc {
            want.reverse();
        }
        assert_eq!(got, want, "{order:?}");
    }
    let page = a.meta.history(&k, &HistoryQuery { after: Some(ov(20)), limit: 100, order: Order::Asc }).await.unwrap();
    assert_eq!(page.items.iter().map(|v| v.ov.get()).collect::<Vec<_>>(), [21, 22, 23]);
}
