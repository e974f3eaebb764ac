//! The id-generator port over the test clock and entropy.

use std::sync::Arc;

use udm_core::ports::{IdGenerator, UlidGenerator};
use udm_testkit::clock::{ManualClock, SeededEntropy, SequentialIds};

#[test]
fn ulids_are_valid_unique_and_time_ordered() {
    let clock = Arc::new(ManualClock::at(1_795_291_045_123));
    let ids = UlidGenerator::new(clock.clone(), SeededEntropy::new(7));
    let a = ids.object_id();
    let b = ids.object_id();
    assert_ne!(a, b);
    clock.advance(1);
    let c = ids.request_id();
    assert_eq!(a.as_str().len(), 26);
    assert!(c.as_str() > a.as_str() && c.as_str() > b.as_str(), "later millisecond sorts later");
}

#[test]
fn sequential_ids_are_readable() {
    let ids = SequentialIds::new("obj");
    assert_eq!(ids.object_id().as_str(), "obj-1");
    assert_eq!(ids.request_id().as_str(), "obj-2");
}

/// The fault layer passes the whole meta conformance suite when it injects nothing, and
/// fails exactly the commits it was told to.
mod fault_layer_meta {
    use std::sync::Arc;
    use udm_core::ports::Layer;
    use udm_testkit::conformance::MetaAdapters;
    use udm_testkit::faults::FaultLayer;
    use udm_testkit::memory::MemoryMeta;
    udm_testkit::conformance_tests!(meta, async {
        MetaAdapters::from_one(Arc::new(FaultLayer::seeded(1).layer(Arc::new(MemoryMeta::new()))))
    });
}

#[tokio::test]
async fn failing_commits_fail_then_recover() {
    use serde_json::json;
    use udm_core::ports::{Layer, MetaStore};
    use udm_testkit::faults::{FaultLayer, FaultRule};
    use udm_testkit::fixtures::{commit, key, ts, unique_ctx};
    let faults = FaultLayer::seeded(1);
    let store = faults.layer(Arc::new(udm_testkit::memory::MemoryMeta::new()));
    let k = key(&unique_ctx("f"), "x");
    faults.add(FaultRule::fail_before().op("commit").next(2));
    for _ in 0..2 {
        let e = store.commit(commit(&k, None, udm_core::Op::Create, ts(1), "r", &json!({}))).await.unwrap_err();
        assert!(e.is_retryable());
    }
    assert!(store.head(&k).await.unwrap().is_none(), "nothing committed");
    store.commit(commit(&k, None, udm_core::Op::Create, ts(1), "r", &json!({}))).await.expect("third succeeds");
    assert_eq!(faults.stats().fail_before, 2);
}
