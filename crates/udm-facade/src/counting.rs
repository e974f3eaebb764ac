//! Counter debouncing and the recount.
//!
//! With `write_optimization.counter_debounce_ms` > 0, a commit carries no counter deltas:
//! once it has committed (not replayed), its deltas are summed in memory per pair and
//! collection, and a task owned by the [`Udm`](crate::Udm) adds them to the counter store every
//! `counter_debounce_ms` (one `add` per pair per flush instead of counter statements in every
//! commit); shutdown flushes what is left. A failed flush keeps its deltas for the next one.
//! What a crash loses is only what was not flushed yet, and [`Admin::recount`](crate::Admin::recount)
//! re-derives exact totals from the version records, so nothing is lost permanently.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};

use udm_core::counters::{CountedVersion, CounterDelta, deltas};
use udm_core::ports::parse_object_cursor;
use udm_core::{ObjectKey, Result, RouteContext};

use crate::Inner;
use crate::options::Collection;

/// Objects read per page by a recount.
const RECOUNT_PAGE: usize = 500;

/// Snapshots a recount fetches at once.
const RECOUNT_FETCHES: usize = 16;

/// Deltas waiting for the next flush, summed per (pair, collection, counter).
type Pending = BTreeMap<(usize, RouteContext, String), i64>;

/// The debounced counter deltas of one [`Udm`](crate::Udm).
#[derive(Debug, Default)]
pub(crate) struct CounterBuffer {
    pending: Mutex<Pending>,
    stop: tokio::sync::Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl CounterBuffer {
    /// Adds a committed version's deltas on pair `pair`.
    pub(crate) fn add(&self, pair: usize, ds: Vec<CounterDelta>) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for d in ds {
            *p.entry((pair, d.ctx, d.counter)).or_default() += d.delta;
        }
    }

    /// Adds everything pending to the counter stores; what a store refuses stays pending.
    pub(crate) async fn flush(&self, inner: &Inner) -> Result<()> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let mut by_pair: BTreeMap<usize, Vec<CounterDelta>> = BTreeMap::new();
        for ((pair, ctx, counter), delta) in taken {
            if delta != 0 {
                by_pair.entry(pair).or_default().push(CounterDelta { ctx, counter, delta });
            }
        }
        let mut first_error = None;
        for (pair, ds) in by_pair {
            if let Err(e) = inner.pairs[pair].counters.add(&ds).await {
                self.add(pair, ds);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts the flush task (inside a Tokio runtime).
    pub(crate) fn start(self: &Arc<Self>, inner: Weak<Inner>, every: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let me = self.clone();
        let handle = rt.spawn(async move {
            loop {
                tokio::select! {
                    () = me.stop.notified() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = me.flush(&inner).await {
                    tracing::warn!(error = %e, "udm: a counter flush failed; its deltas wait for the next one");
                }
            }
        });
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
    }

    /// Stops the flush task (the caller flushes once more after).
    pub(crate) async fn stop(&self) {
        self.stop.notify_one();
        let handle = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }
}

impl Collection {
    /// Every counter of this collection re-derived from its versions on pair `pair` (each
    /// version's snapshot read and verified, as its commit counted it).
    pub(crate) async fn recount_on(&self, pair: usize) -> Result<BTreeMap<String, i64>> {
        let p = &self.inner.pairs[pair];
        let rules = &self.inner.collection(&self.ctx).rules;
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = p.meta.list_objects(&self.ctx, after.as_deref(), RECOUNT_PAGE).await?;
            for id in &page.items {
                let key = ObjectKey::new(self.ctx.clone(), id.clone());
                let mut was_deleted = false;
                let mut pages = std::pin::pin!(crate::read::history_pages(&*p.meta, &key, None, RECOUNT_PAGE));
                while let Some(versions) = pages.try_next().await? {
                    // The snapshots of a page fetched RECOUNT_FETCHES at a time, in order.
                    let envelopes: Vec<Result<_>> = futures_util::stream::iter(&versions)
                        .map(|v| self.load_snapshot(pair, &v.snapshot))
                        .buffered(RECOUNT_FETCHES)
                        .collect()
                        .await;
                    for (v, env) in versions.iter().zip(envelopes) {
                        let env = env?;
                        let counted = CountedVersion {
                            op: v.op,
                            was_deleted,
                            system: &env.system,
                            provenance: &v.provenance,
                            data: &env.data,
                        };
                        for d in deltas(&self.ctx, &counted, rules) {
                            *totals.entry(d.counter).or_default() += d.delta;
                        }
                        was_deleted = v.deleted;
                    }
                }
            }
            match page.next {
                Some(n) => after = Some(parse_object_cursor(&n)?.as_str().to_owned()),
                None => break,
            }
        }
        totals.retain(|_, v| *v != 0);
        Ok(totals)
    }
}
