//! The conformance suite on the in-memory reference adapters.

use std::sync::Arc;

use udm_core::ports::{BlobStore, CounterStore, QueueStore};
use udm_testkit::conformance::MetaAdapters;
use udm_testkit::memory::{MemoryBlobs, MemoryMeta, MemoryQueue};

mod memory_meta {
    use super::*;
    udm_testkit::conformance_tests!(meta, async { MetaAdapters::memory() });
}

mod memory_blob {
    use super::*;
    udm_testkit::conformance_tests!(blob, async { Arc::new(MemoryBlobs::new()) as Arc<dyn BlobStore> });
}

mod memory_queue {
    use super::*;
    udm_testkit::conformance_tests!(queue, async { Arc::new(MemoryQueue::new()) as Arc<dyn QueueStore> });
}

mod memory_counter {
    use super::*;
    udm_testkit::conformance_tests!(counter, async { Arc::new(MemoryMeta::new()) as Arc<dyn CounterStore> });
}
