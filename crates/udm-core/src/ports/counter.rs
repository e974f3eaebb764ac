//! The counter store port: totals per collection.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::counters::CounterDelta;
use crate::error::Result;
use crate::id::RouteContext;

/// Counter totals (base and rule counters) per collection.
///
/// When counters live with the metadata, [`MetaStore::commit`](super::MetaStore::commit)
/// applies deltas inside the version's transaction and the same store implements this port
/// for reads and resets; a separate counters store receives debounced [`CounterStore::add`]s.
#[async_trait]
pub trait CounterStore: Send + Sync + fmt::Debug {
    /// Applies deltas atomically (all or none).
    async fn add(&self, deltas: &[CounterDelta]) -> Result<()>;

    /// Every counter of one collection (counters never touched are absent, i.e. zero).
    async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>>;

    /// Sets the named counters (all, with `None`) of one collection to zero.
    async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()>;
}
