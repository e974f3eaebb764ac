//! The conformance suite: every port contract as a `pub async fn` scenario.
//!
//! Each adapter's tests instantiate the whole suite with one macro line, so the scenarios
//! show up by name per adapter in the test output:
//!
//! ```
//! mod memory_meta {
//!     udm_testkit::conformance_tests!(meta, async { udm_testkit::conformance::MetaAdapters::memory() });
//! }
//! # fn main() {}
//! ```
//!
//! The macro expands to one `#[tokio::test]` per scenario (the calling crate needs `tokio`
//! with the `macros` and `rt-multi-thread` features). The expression is evaluated once per
//! scenario and must yield the adapter(s) under test; scenarios isolate themselves with a
//! fresh tenant ([`crate::fixtures::unique_ctx`]), so adapters backed by one shared server
//! may hand out the same connection every time.

pub mod blob;
pub mod counter;
pub mod group;
pub mod meta;
pub mod meta_query;
pub mod meta_v2;
pub mod queue;
pub mod shadow;

use std::sync::Arc;

use udm_core::ports::{CounterStore, MetaStore};

use crate::memory::MemoryMeta;

/// A metadata store and the counter store that reads the counters its commits apply
/// (usually the same object).
#[derive(Clone)]
pub struct MetaAdapters {
    /// The metadata store under test.
    pub meta: Arc<dyn MetaStore>,
    /// Its counters.
    pub counters: Arc<dyn CounterStore>,
}

impl MetaAdapters {
    /// Both ports from one object implementing both.
    pub fn from_one<T: MetaStore + CounterStore + 'static>(store: Arc<T>) -> Self {
        Self { meta: store.clone(), counters: store }
    }

    /// The in-memory reference implementation.
    pub fn memory() -> Self {
        Self::from_one(Arc::new(MemoryMeta::new()))
    }
}

/// Instantiates a conformance suite (`meta`, `blob`, `queue` or `counter`) as `#[tokio::test]`s.
#[macro_export]
macro_rules! conformance_tests {
    (meta, $make:expr) => {
        $crate::__conformance_cases!(meta, $make;
            create_then_read, as_of_on_1000_versions, replay_is_idempotent, expected_ov_conflicts,
            writers_race, rejected_commits_change_nothing, cv_orders_commits_across_objects,
            deleted_versions_stay_readable, hard_delete_removes_everything, counters_move_with_commits,
            dev_shadows_shrink, jobs_round_trip, missing_things_are_none);
        $crate::__conformance_cases!(meta_query, $make;
            list_filters_sorts_and_pages, list_rejects_bad_queries, history_pages_both_ways);
        $crate::__conformance_cases!(meta_v2, $make;
            enumeration_pages_and_isolates_tenants, import_is_idempotent_and_never_moves_cvs_back,
            prune_leaves_readable_gaps, as_of_follows_prunes_imports_and_rebirth);
        $crate::__conformance_cases!(group, $make;
            group_commit_assigns_consecutive_cvs, group_commit_answers_each_item,
            group_commit_rejections_and_replays_change_nothing, group_commit_racing_batches,
            group_commit_waits_for_durable_snapshots);
        $crate::__conformance_cases!(shadow, $make; shadow_log_lists_what_it_lacks);
    };
    (blob, $make:expr) => {
        $crate::__conformance_cases!(blob, $make;
            put_get_head_delete, create_only_never_overwrites, create_only_race, list_paginates_past_1000,
            bad_keys_change_nothing, missing_blobs, presign_per_capability, etags_follow_overwrites,
            compare_and_swap_checks_the_etag, compare_and_swap_counter_race, delimiter_listing_pages);
    };
    (queue, $make:expr) => {
        $crate::__conformance_cases!(queue, $make;
            enqueue_is_idempotent, claim_leases_due_entries, fail_reschedules_then_dead_letters,
            dead_letters_retry_and_cancel, concurrent_claims_never_share, missing_entries);
    };
    (counter, $make:expr) => {
        $crate::__conformance_cases!(counter, $make; add_totals_reset, concurrent_adds_all_count);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($module:ident, $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let adapter = $make.await;
                $crate::conformance::$module::$case(adapter).await;
            }
        )*
    };
}
