//! Fault injection: the seeded [`FaultLayer`] of `udm-layers`, re-exported for tests.
//!
//! It wraps any port implementation (a concrete adapter or an `Arc<dyn Port>`) and, by rules
//! on the port, operation and key prefix, fails calls before they reach the store, fails them
//! *after* they were applied (the acknowledgement is lost), delays them, or answers lookups as
//! if the record were gone — always, with a seeded probability, or for the next N calls. With
//! no rules it passes the whole conformance suite (`udm-layers`' tests run it).
//!
//! ```
//! use std::sync::Arc;
//! use udm_core::ports::Layer;
//! use udm_testkit::faults::{FaultLayer, FaultRule};
//! use udm_testkit::memory::MemoryMeta;
//!
//! let faults = FaultLayer::seeded(1);
//! let meta = Arc::new(faults.layer(Arc::new(MemoryMeta::new()))); // MetaStore + CounterStore
//! faults.add(FaultRule::fail_before().op("commit").next(1)); // the next commit is lost
//! # let _ = meta;
//! ```

pub use udm_layers::fault::{Fault, FaultLayer, FaultRule, FaultStats, Faulty, RuleId, Trigger};
pub use udm_layers::{Call, Port};
