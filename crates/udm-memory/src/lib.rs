//! # udm-memory — in-memory adapters
//!
//! In-memory implementations of every port: the reference the conformance suite
//! (`udm-testkit`) is checked against, and the backend of `Udm::in_memory()` and of
//! `kind = "memory"` configurations. Nothing survives the process. Production builds depend
//! on this crate (not on the test kit), so they pull no test-only dependency.

mod blob;
mod meta;
mod queue;

pub use blob::MemoryBlobs;
pub use meta::MemoryMeta;
pub use queue::MemoryQueue;
