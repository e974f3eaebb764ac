//! In-memory implementations of every port: the reference for the conformance suite and the
//! fast default for unit tests.

mod blob;
mod meta;
mod queue;

pub use blob::MemoryBlobs;
pub use meta::MemoryMeta;
pub use queue::MemoryQueue;
