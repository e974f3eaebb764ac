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
