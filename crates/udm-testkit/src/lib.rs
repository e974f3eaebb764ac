//! # udm-testkit — what every UDM test builds on
//!
//! - [`memory`]: the in-memory implementations of every port (re-exported from `udm-memory`);
//! - [`conformance`]: the shared conformance suite, one `pub async fn` per contract, run by
//!   every adapter's tests through [`conformance_tests!`];
//! - [`clock`]: a manual clock, seeded entropy and sequential ids;
//! - [`fixtures`]: unique contexts and commit builders;
//! - [`arbitrary`]: proptest strategies reused by every property test.
//!
//! This crate is for tests: it panics freely on setup failures.

pub mod arbitrary;
pub mod clock;
pub mod conformance;
pub mod faults;
pub mod fixtures;
/// The in-memory adapters (the `udm-memory` crate), re-exported for tests.
pub mod memory {
    pub use udm_memory::*;
}
pub mod proxy;
pub mod services;
