//! A user's own decorator, written outside UDM's crates with only their public APIs, and run
//! through the whole metadata-store conformance suite.
//!
//! `CountingCommits` counts commits and forwards everything else: it implements `Layered`
//! (what it wraps) and overrides one method of `LayeredMeta`; `LayeredCounter` is implemented
//! with no overrides, so the decorator is a `MetaStore` + `CounterStore` like the store it wraps.
//!
//! Run: `cargo run -p udm-layers --example custom_decorator`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use udm_core::Result;
use udm_core::ports::{Commit, Committed, CounterStore, Layered, LayeredCounter, LayeredMeta, MetaStore};
use udm_testkit::conformance::{MetaAdapters, meta, meta_query};
use udm_testkit::memory::MemoryMeta;

/// Counts the commits that reach the wrapped store.
#[derive(Debug)]
struct CountingCommits<S> {
    inner: S,
    commits: Arc<AtomicU64>,
}

impl<S: Send + Sync + std::fmt::Debug> Layered for CountingCommits<S> {
    type Inner = S;
    fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: MetaStore> LayeredMeta for CountingCommits<S> {
    async fn commit(&self, commit: Commit) -> Result<Committed> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.inner.commit(commit).await
    }
}

impl<S: CounterStore> LayeredCounter for CountingCommits<S> {}

/// Wraps the in-memory reference store, held as `Arc<dyn MetaStore>` like the facade holds it.
fn adapters(commits: &Arc<AtomicU64>) -> MetaAdapters {
    let store = Arc::new(MemoryMeta::new());
    let (meta, counters): (Arc<dyn MetaStore>, Arc<dyn CounterStore>) = (store.clone(), store);
    MetaAdapters {
        meta: Arc::new(CountingCommits { inner: meta, commits: commits.clone() }),
        counters: Arc::new(CountingCommits { inner: counters, commits: commits.clone() }),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let commits = Arc::new(AtomicU64::new(0));
    let a = || adapters(&commits);
    meta::create_then_read(a()).await;
    meta::as_of_on_1000_versions(a()).await;
    meta::replay_is_idempotent(a()).await;
    meta::expected_ov_conflicts(a()).await;
    meta::writers_race(a()).await;
    meta::rejected_commits_change_nothing(a()).await;
    meta::cv_orders_commits_across_objects(a()).await;
    meta::deleted_versions_stay_readable(a()).await;
    meta::hard_delete_removes_everything(a()).await;
    meta::counters_move_with_commits(a()).await;
    meta::dev_shadows_shrink(a()).await;
    meta::jobs_round_trip(a()).await;
    meta::missing_things_are_none(a()).await;
    meta_query::list_filters_sorts_and_pages(a()).await;
    meta_query::list_rejects_bad_queries(a()).await;
    meta_query::history_pages_both_ways(a()).await;
    println!("custom decorator passed the meta conformance suite ({} commits seen)", commits.load(Ordering::Relaxed));
}
