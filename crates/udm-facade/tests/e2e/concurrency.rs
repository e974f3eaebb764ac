//! Hot objects: many writers without an expected OV on one object, on every setup.

use std::collections::BTreeMap;

use serde_json::json;
use udm_core::RouteContext;
use udm_core::query::HistoryQuery;
use udm_facade::{EnrichOpts, ReadOpts, WriteOpts};

use crate::setup::Env;

const WRITERS: usize = 8;
const RUNS: usize = 20;

/// 8 writers × 20 writes each (enrichments without an expected OV, each with its own
/// request id) on one object: every write succeeds, each lands exactly once (its request id
/// appears once in the history), nothing is lost (every enrichment's tag is in the result).
pub(crate) async fn hot_object_writers(env: Env) {
    let tenant = udm_testkit::fixtures::unique_ctx("hot").tenant;
    let c = env.udm.with(RouteContext::new(tenant.as_str(), "crm", "users").unwrap());
    c.create(json!({"tags": []}), WriteOpts::id("hot")).await.unwrap();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for run in 0..RUNS {
                    let request = format!("w{w}-r{run}");
                    let opts = EnrichOpts { write: WriteOpts::default().request_id(&request), ..EnrichOpts::default() };
                    // Even runs add a tag (a set union: none may be lost); odd runs overwrite
                    // the writer's own field.
                    let patch =
                        if run % 2 == 0 { json!({"tags": [request]}) } else { json!({"last": {format!("w{w}"): run}}) };
                    let result = c.enrich("hot", patch, opts).await;
                    if let Err(e) = result {
                        failures.push(format!("{request}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(failures.is_empty(), "{} failed writes: {failures:?}", failures.len());
    let latest = c.get_latest("hot", ReadOpts::default()).await.unwrap();
    assert_eq!(latest.ov.get(), 1 + (WRITERS * RUNS) as u64, "every write is one version");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut after = None;
    loop {
        let q = HistoryQuery { limit: 100, after, ..HistoryQuery::default() };
        let page = c.history("hot", q).await.unwrap();
        for v in &page.items {
            *seen.entry(v.provenance.request_id.to_string()).or_default() += 1;
        }
        match (page.next, page.items.last()) {
            (Some(_), Some(last)) => after = Some(last.ov),
            _ => break,
        }
    }
    for w in 0..WRITERS {
        for run in 0..RUNS {
            let r = format!("w{w}-r{run}");
            assert_eq!(seen.get(&r), Some(&1), "request {r} must be committed exactly once");
        }
    }
    let tags = latest.data["tags"].as_array().unwrap();
    assert_eq!(tags.len(), WRITERS * RUNS / 2, "no enrichment lost: {tags:?}");
    assert!(env.udm.admin().stats().conflicts > 0, "the writers did race");
    // Lost races deleted their snapshots: exactly one per version is stored.
    let key = udm_core::ObjectKey::new(c.context().clone(), udm_core::ObjectId::new("hot").unwrap());
    let prefix = udm_core::layout::Layout::default().object_prefix(&key);
    let mut stored = 0;
    for blobs in &env.snapshots {
        let mut after: Option<String> = None;
        loop {
            let page = blobs.list(&prefix, after.as_deref(), 1000).await.unwrap();
            stored += page.keys.len();
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    assert_eq!(stored as u64, latest.ov.get(), "one snapshot per version, no orphans from lost races");
}
