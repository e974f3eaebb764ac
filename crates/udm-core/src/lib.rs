//! # udm-core — the pure domain of UDM
//!
//! Everything UDM knows that does not need a network, a disk or a clock: identifiers and
//! their validation, versions (OV/CV) and the `_system` header, the snapshot envelope,
//! canonical JSON and checksums, deep merge, diff and three-way drift, the storage layout,
//! metadata maps and externalization, counter rules, retry schedule, retention, the typed
//! configuration, the one public [`Error`], and the [`ports`] every adapter implements.
//!
//! **Invariant: udm-core does no IO and reads no clock or random source.** It depends on no
//! runtime, database or HTTP crate (checked by `cargo xtask ci`); time, ids and randomness
//! enter through the [`ports::Clock`], [`ports::IdGenerator`] and [`ports::Entropy`] ports.
//! A crate-level `clippy.toml` bans `SystemTime::now`, `Instant::now`, `std::env` and
//! `std::fs` here.
//!
//! ```
//! use serde_json::json;
//! use udm_core::{Checksum, deep_merge};
//!
//! let merged = deep_merge(&json!({"tags": ["a"]}), &json!({"tags": ["a", "b"]})).unwrap();
//! assert_eq!(merged, json!({"tags": ["a", "b"]}));
//! // Checksums do not depend on key order.
//! assert_eq!(Checksum::of_json(&json!({"a": 1, "b": 2})), Checksum::of_json(&json!({"b": 2, "a": 1})));
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod canonical;
pub mod config;
pub mod counters;
pub mod diff;
pub mod drift;
pub mod error;
pub mod id;
pub mod layout;
pub mod merge;
pub mod metamap;
pub mod ports;
pub mod predicate;
pub mod query;
pub mod retention;
pub mod retry;
pub mod route_key;
pub mod shadow;
pub mod time;
pub mod validate;
pub mod version;

pub use canonical::{Checksum, ContentHash};
pub use error::{Error, ErrorKind, Problem, Result};
pub use id::{Name, ObjectId, ObjectKey, RequestId, RouteContext};
pub use merge::deep_merge;
pub use time::Timestamp;
pub use version::{Cv, Head, Op, Ov, SnapshotEnvelope, SystemHeader, VersionRecord};
