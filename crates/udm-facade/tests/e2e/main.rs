//! End-to-end tests of the facade: every scenario on (a) two (MongoDB, S3) pairs on the real
//! test servers, (b) one (PostgreSQL, S3) pair, (c) a mixed deployment — one (MongoDB, S3)
//! pair and one (PostgreSQL, S3) pair in one `Udm` — and (d) the embedded zero-setup default. The server setup needs
//! `cargo xtask services up` (or `cargo xtask test`); without servers those tests fail, naming it.

mod concurrency;
mod scenarios;
mod setup;
mod shadow_tools;

macro_rules! setups {
    ($($scenario:ident),* $(,)?) => {
        mod servers {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    crate::scenarios::$scenario(crate::setup::servers().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    crate::scenarios::$scenario(crate::setup::postgres().await).await;
                }
            )*
        }
        mod mixed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    crate::scenarios::$scenario(crate::setup::mixed().await).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    crate::scenarios::$scenario(crate::setup::embedded().await).await;
                }
            )*
        }
    };
}

setups!(
    crud_and_versions,
    optimistic_locking_and_idempotency,
    time_travel,
    restore_objects,
    restore_collection_resumes,
    enrichment,
    externalized_content,
    counters,
    dev_shadows,
    listing,
    routing_mismatch,
    admin,
    hard_delete,
    bad_input_changes_nothing,
    hot_object_writers,
    many_creators_of_one_collection,
    batch_writes_answer_per_item,
    shadow_tools,
);
