//! # udm-layers — decorators over UDM's ports
//!
//! Each layer wraps any store — a concrete adapter, an `Arc<dyn MetaStore>`, another layer —
//! and implements the same ports, so layers stack and every layered store runs through the
//! conformance suite (`udm_testkit::conformance`):
//!
//! ```
//! use std::sync::Arc;
//! use udm_core::ports::{Layer, MetaStore};
//! use udm_layers::{FaultLayer, MetricsLayer, TracingLayer};
//! use udm_testkit::memory::MemoryMeta;
//!
//! let store: Arc<dyn MetaStore> = Arc::new(MemoryMeta::new());
//! let faults = FaultLayer::seeded(42);
//! let layered: Arc<dyn MetaStore> =
//!     Arc::new(faults.layer(MetricsLayer.layer(TracingLayer.layer(store))));
//! # let _ = layered;
//! ```
//!
//! - [`TracingLayer`]: a `tracing` span per port call ([`trace`]);
//! - [`MetricsLayer`]: latency and errors per port call through the `metrics` facade, plus
//!   the facade's counters; every metric name is listed in [`metric`];
//! - [`FaultLayer`]: seeded fault injection — fail before, fail after applying (lost
//!   acknowledgement), latency, absent records — by port, operation and key prefix ([`fault`]).
//!
//! All three are [`Interceptor`]s run by [`Intercepted`], which describes each call as a
//! [`Call`] (port, op, ctx, object id, OV, request id, key — never document data). A decorator
//! that changes only some methods is better written directly on the `Layered*` traits of
//! `udm_core::ports` (see `examples/custom_decorator.rs`).

mod call;
pub mod fault;
mod intercept;
pub mod metric;
mod runtime;
pub mod trace;

pub use call::{Answer, Call, Port, error_kind_label};
pub use fault::{Fault, FaultLayer, FaultRule, FaultStats, Faulty, RuleId, Trigger};
pub use intercept::{Intercepted, Interceptor};
pub use metric::{Metered, MetricsLayer};
pub use trace::{Traced, TracingLayer};
