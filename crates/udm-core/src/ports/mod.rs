//! The ports: async traits the adapters implement, designed as domain operations.
//!
//! | port | implemented by |
//! |---|---|
//! | [`MetaStore`] | in-memory (udm-testkit), embedded, MongoDB |
//! | [`BlobStore`] | in-memory, local filesystem, S3 (`object_store`, AWS SDK) |
//! | [`QueueStore`] | in-memory, embedded, MongoDB |
//! | [`CounterStore`] | in-memory, embedded, MongoDB |
//! | [`Clock`], [`Entropy`], [`IdGenerator`] | system (facade), manual/seeded (test kit) |
//!
//! Decorators (tracing, metrics, fault injection, a user's own) wrap any port, including
//! `Arc<dyn Port>`, and override only what they change: see [`Layered`] and [`Layer`].
//!
//! Every contract stated in these docs is a scenario of the conformance suite in
//! `udm_testkit::conformance`.

mod batch;
mod blob;
mod clock;
mod counter;
mod layer;
mod meta;
mod queue;

pub use batch::{Accepted, BatchPlan, BatchWrites, MAX_BATCH, check_batch, plan_batch};
pub use blob::{
    BlobBody, BlobCapabilities, BlobListing, BlobMeta, BlobPage, BlobStore, ETag, MAX_KEY_BYTES, MAX_LIST_PAGE,
    PutMode, PutOptions, PutResult, PutSync, check_key, check_prefix, check_presign_ttl, etag_mismatch, skip_past,
};
pub use clock::{Clock, Entropy, IdGenerator, UlidGenerator};
pub use counter::CounterStore;
pub use layer::{Layer, Layered, LayeredBlob, LayeredCounter, LayeredMeta, LayeredQueue};
pub use meta::{
    Commit, Committed, Durable, HardDeleted, ImportOutcome, ImportedVersion, JobRecord, MetaStore, NewVersion,
    ShrinkPolicy, ShrinkStats, check_prune, collection_cursor, parse_collection_cursor, parse_object_cursor,
    select_collections,
};
pub use queue::{QueueEntry, QueueState, QueueStats, QueueStore};
