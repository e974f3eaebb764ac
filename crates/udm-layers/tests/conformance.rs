//! The whole conformance suite through the layers: the fault layer injecting nothing, and
//! all three layers stacked, over the in-memory reference adapters.

use std::sync::Arc;

use udm_core::ports::{BlobStore, CounterStore, Layer, QueueStore};
use udm_layers::{FaultLayer, MetricsLayer, TracingLayer};
use udm_testkit::conformance::MetaAdapters;
use udm_testkit::memory::{MemoryBlobs, MemoryMeta, MemoryQueue};

fn faults() -> FaultLayer {
    FaultLayer::seeded(0x5eed)
}

/// Fault(Metrics(Tracing(store))).
fn stacked<S>(store: S) -> udm_layers::Faulty<udm_layers::Metered<udm_layers::Traced<S>>> {
    faults().layer(MetricsLayer.layer(TracingLayer.layer(store)))
}

mod fault_meta {
    use super::*;
    udm_testkit::conformance_tests!(meta, async {
        MetaAdapters::from_one(Arc::new(faults().layer(Arc::new(MemoryMeta::new()))))
    });
}

mod fault_blob {
    use super::*;
    udm_testkit::conformance_tests!(blob, async { Arc::new(faults().layer(MemoryBlobs::new())) as Arc<dyn BlobStore> });
}

mod fault_queue {
    use super::*;
    udm_testkit::conformance_tests!(queue, async {
        Arc::new(faults().layer(MemoryQueue::new())) as Arc<dyn QueueStore>
    });
}

mod fault_counter {
    use super::*;
    udm_testkit::conformance_tests!(counter, async {
        Arc::new(faults().layer(MemoryMeta::new())) as Arc<dyn CounterStore>
    });
}

mod stacked_meta {
    use super::*;
    // Wrapping `Arc<dyn …>` (what the facade holds) works like wrapping a concrete adapter.
    udm_testkit::conformance_tests!(meta, async {
        let m = MetaAdapters::memory();
        MetaAdapters { meta: Arc::new(stacked(m.meta)), counters: Arc::new(stacked(m.counters)) }
    });
}

mod stacked_blob {
    use super::*;
    udm_testkit::conformance_tests!(blob, async {
        Arc::new(stacked(Arc::new(MemoryBlobs::new()) as Arc<dyn BlobStore>)) as Arc<dyn BlobStore>
    });
}
