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

/// The fault wrapper passes the whole meta conformance suite when it injects nothing, and
/// fails exactly the commits it was told to.
mod failing_commits_meta {
    use std::sync::Arc;
    use udm_testkit::conformance::MetaAdapters;
    use udm_testkit::faults::FailingCommits;
    use udm_testkit::memory::MemoryMeta;
    udm_testkit::conformance_tests!(meta, async {
        MetaAdapters::from_one(Arc::new(FailingCommits::new(Arc::new(MemoryMeta::new()))))
    });
}

#[tokio::test]
async fn failing_commits_fail_then_recover() {
    use serde_json::json;
    use std::sync::Arc;
    use udm_core::ports::MetaStore;
    use udm_testkit::faults::FailingCommits;
    use udm_testkit::fixtures::{commit, key, ts, unique_ctx};
    let store = FailingCommits::new(Arc::new(udm_testkit::memory::MemoryMeta::new()));
    let k = key(&unique_ctx("f"), "x");
    store.fail_next(2);
    for _ in 0..2 {
        let e = store.commit(commit(&k, None, udm_core::Op::Create, ts(1), "r", &json!({}))).await.unwrap_err();
        assert!(e.is_retryable());
    }
    assert!(store.head(&k).await.unwrap().is_none(), "nothing committed");
    store.commit(commit(&k, None, udm_core::Op::Create, ts(1), "r", &json!({}))).await.expect("third succeeds");
}
