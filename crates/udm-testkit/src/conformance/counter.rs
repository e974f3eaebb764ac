//! [`CounterStore`] scenarios.

use std::collections::BTreeMap;
use std::sync::Arc;

use udm_core::counters::CounterDelta;
use udm_core::ports::CounterStore;

use crate::fixtures::unique_ctx;

/// Adds accumulate per collection; reset clears some or all.
pub async fn add_totals_reset(c: Arc<dyn CounterStore>) {
    let (ctx, other) = (unique_ctx("c"), unique_ctx("c"));
    let d =
        |ctx: &udm_core::RouteContext, n: &str, v: i64| CounterDelta { ctx: ctx.clone(), counter: n.into(), delta: v };
    c.add(&[d(&ctx, "created", 2), d(&ctx, "live", 2), d(&other, "created", 1)]).await.unwrap();
    c.add(&[d(&ctx, "live", -1), d(&ctx, "rule.vip", 1)]).await.unwrap();
    let want = BTreeMap::from([("created".into(), 2), ("live".into(), 1), ("rule.vip".into(), 1)]);
    assert_eq!(c.totals(&ctx).await.unwrap(), want);
    c.reset(&ctx, Some(&["live".to_owned()])).await.unwrap();
    let t = c.totals(&ctx).await.unwrap();
    assert_eq!(t.get("live").copied().unwrap_or(0), 0);
    assert_eq!(t.get("created"), Some(&2));
    c.reset(&ctx, None).await.unwrap();
    assert!(c.totals(&ctx).await.unwrap().values().all(|v| *v == 0));
    assert_eq!(c.totals(&other).await.unwrap().get("created"), Some(&1), "other collection untouched");
}

/// Concurrent adds are all counted.
pub async fn concurrent_adds_all_count(c: Arc<dyn CounterStore>) {
    let ctx = unique_ctx("c");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, ctx) = (c.clone(), ctx.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    c.add(&[CounterDelta { ctx: ctx.clone(), counter: "n".into(), delta: 1 }]).await.expect("add");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("adder");
    }
    assert_eq!(c.totals(&ctx).await.unwrap().get("n"), Some(&200));
}
