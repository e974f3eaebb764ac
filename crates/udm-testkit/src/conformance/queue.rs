//! [`QueueStore`] scenarios.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use udm_core::ports::{QueueEntry, QueueState, QueueStore};
use udm_core::retry::NextStep;
use udm_core::{ErrorKind, RouteContext, Timestamp};

use crate::fixtures::{key, rid, ts, unique_ctx};

fn entry(ctx: &RouteContext, n: usize, due: Timestamp) -> QueueEntry {
    let k = key(ctx, &format!("o{n}"));
    let r = rid(&format!("req-{n:03}"));
    QueueEntry {
        id: QueueEntry::id_for(&k, &r),
        key: k,
        request_id: r,
        payload: json!({"op": "UPDATE", "n": n}),
        attempts: 0,
        enqueued_at: due,
        next_attempt_at: due,
        leased_until: None,
        last_error: None,
        state: QueueState::Pending,
    }
}

/// Enqueueing the same request twice keeps the first entry.
pub async fn enqueue_is_idempotent(q: Arc<dyn QueueStore>) {
    let ctx = unique_ctx("q");
    let e = entry(&ctx, 1, ts(10));
    assert_eq!(q.enqueue(e.clone()).await.unwrap(), e);
    let mut again = e.clone();
    again.payload = json!({"other": true});
    assert_eq!(q.enqueue(again).await.unwrap(), e, "first entry kept");
    assert_eq!(q.get(&e.id).await.unwrap(), Some(e.clone()), "get by id");
    // A shared server holds other scenarios' entries too: page through all of them.
    let listed = all(&*q, QueueState::Pending).await;
    assert_eq!(listed.iter().filter(|x| x.id == e.id).count(), 1);
}

/// Only due, unleased entries are claimed; a lease hides an entry until it expires.
pub async fn claim_leases_due_entries(q: Arc<dyn QueueStore>) {
    let ctx = unique_ctx("q");
    let (now, later) = (ts(1_000), ts(5_000));
    let due = entry(&ctx, 1, ts(500));
    let future = entry(&ctx, 2, later);
    q.enqueue(due.clone()).await.unwrap();
    q.enqueue(future.clone()).await.unwrap();
    let claimed = q.claim_due(now, ts(2_000), 10).await.unwrap();
    let mine: Vec<_> = claimed.iter().filter(|e| e.key.ctx == ctx).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].id.as_str(), mine[0].leased_until), (due.id.as_str(), Some(ts(2_000))));
    let again = q.claim_due(now, ts(2_000), 10).await.unwrap();
    assert!(again.iter().all(|e| e.key.ctx != ctx), "leased entry not handed out twice");
    let after_lease = q.claim_due(ts(2_001), ts(3_000), 10).await.unwrap();
    assert!(after_lease.iter().any(|e| e.id == due.id), "expired lease is claimable");
    q.complete(&due.id).await.unwrap();
    q.complete(&due.id).await.expect("completing twice is fine");
    let pending = all(&*q, QueueState::Pending).await;
    assert!(!pending.iter().any(|e| e.id == due.id) && pending.iter().any(|e| e.id == future.id));
}

/// Failures count attempts, record the error, reschedule, and finally dead-letter.
pub async fn fail_reschedules_then_dead_letters(q: Arc<dyn QueueStore>) {
    let ctx = unique_ctx("q");
    let e = entry(&ctx, 1, ts(0));
    q.enqueue(e.clone()).await.unwrap();
    q.claim_due(ts(0), ts(100), 1000).await.unwrap();
    q.fail(&e.id, "mongo down", NextStep::RetryAt(ts(50))).await.unwrap();
    let got = find(&*q, QueueState::Pending, &e.id).await.expect("still pending");
    assert_eq!((got.attempts, got.next_attempt_at, got.leased_until), (1, ts(50), None));
    assert_eq!(got.last_error.as_deref(), Some("mongo down"));
    assert!(!q.claim_due(ts(49), ts(200), 1000).await.unwrap().iter().any(|x| x.id == e.id), "not due yet");
    q.fail(&e.id, "still down", NextStep::DeadLetter).await.unwrap();
    let dead = find(&*q, QueueState::Dead, &e.id).await.expect("dead letter");
    assert_eq!((dead.attempts, dead.last_error.as_deref()), (2, Some("still down")));
    assert!(
        !q.claim_due(ts(1_000_000), ts(2_000_000), 1000).await.unwrap().iter().any(|x| x.id == e.id),
        "dead letters are not claimed"
    );
    let stats = q.stats(ts(0)).await.unwrap();
    assert!(stats.dead >= 1);
}

/// Dead letters can be retried (attempts reset) or cancelled.
pub async fn dead_letters_retry_and_cancel(q: Arc<dyn QueueStore>) {
    let ctx = unique_ctx("q");
    let (a, b) = (entry(&ctx, 1, ts(0)), entry(&ctx, 2, ts(0)));
    for e in [&a, &b] {
        q.enqueue(e.clone()).await.unwrap();
        q.fail(&e.id, "boom", NextStep::DeadLetter).await.unwrap();
    }
    q.retry_dead(&a.id, ts(77)).await.unwrap();
    let back = find(&*q, QueueState::Pending, &a.id).await.expect("pending again");
    assert_eq!((back.attempts, back.next_attempt_at), (0, ts(77)));
    assert_eq!(q.retry_dead(&a.id, ts(78)).await.unwrap_err().kind(), ErrorKind::NotFound, "only dead letters retry");
    q.cancel(&b.id).await.unwrap();
    assert!(find(&*q, QueueState::Dead, &b.id).await.is_none());
    q.cancel(&a.id).await.unwrap();
    assert!(find(&*q, QueueState::Pending, &a.id).await.is_none());
}

/// Concurrent claimers never receive the same entry under a live lease.
pub async fn concurrent_claims_never_share(q: Arc<dyn QueueStore>) {
    let ctx = unique_ctx("q");
    for n in 0..40 {
        q.enqueue(entry(&ctx, n, ts(0))).await.unwrap();
    }
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                // Until nothing is due: on a shared server other scenarios' entries are due too,
                // so a fixed number of rounds could leave some of this one's unclaimed.
                let mut got = Vec::new();
                for _ in 0..200 {
                    let claimed = q.claim_due(ts(10), ts(1_000_000), 3).await.expect("claim");
                    if claimed.is_empty() {
                        break;
                    }
                    got.extend(claimed.into_iter().map(|e| e.id));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("claimer"));
    }
    let mine: Vec<_> =
        all.into_iter().filter(|id| id.starts_with(&udm_core::layout::collection_record_prefix(&ctx))).collect();
    let unique: BTreeSet<_> = mine.iter().collect();
    assert_eq!(unique.len(), mine.len(), "an entry was claimed twice");
    assert_eq!(unique.len(), 40, "every entry claimed once");
}

/// Operations on absent entries are not-found (complete is idempotent instead).
pub async fn missing_entries(q: Arc<dyn QueueStore>) {
    let id = format!("{}nope", udm_core::layout::collection_record_prefix(&unique_ctx("q")));
    assert_eq!(q.fail(&id, "x", NextStep::DeadLetter).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(q.retry_dead(&id, ts(0)).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(q.cancel(&id).await.unwrap_err().kind(), ErrorKind::NotFound);
    q.complete(&id).await.expect("complete of absent is fine");
    assert_eq!(q.get(&id).await.unwrap(), None);
}

/// Every entry in `state`, page by page.
async fn all(q: &dyn QueueStore, state: QueueState) -> Vec<QueueEntry> {
    let mut out: Vec<QueueEntry> = Vec::new();
    loop {
        let page = q.list(state, out.last().map(|e| e.id.as_str()), 100).await.expect("list");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

async fn find(q: &dyn QueueStore, state: QueueState, id: &str) -> Option<QueueEntry> {
    let mut after: Option<String> = None;
    loop {
        let page = q.list(state, after.as_deref(), 100).await.expect("list");
        if let Some(e) = page.iter().find(|e| e.id == id) {
            return Some(e.clone());
        }
        after = Some(page.last()?.id.clone());
    }
}
