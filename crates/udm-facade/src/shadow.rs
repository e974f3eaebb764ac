//! The shadow log flusher: keeps each pair's blob store a self-sufficient copy by writing
//! the commit log ([`udm_core::shadow`]) behind the commits.
//!
//! After the group committer commits a batch, it *notifies* the (pair, collection). A
//! notified collection without a running flush gets one (a spawned task): it asks the
//! metadata store for the committed versions past the logged watermark
//! ([`MetaStore::shadow_pending`], up to [`FLUSH_BATCH`] CVs), puts them as one segment and
//! advances the watermark ([`MetaStore::shadow_logged`]), until the log has caught up; a
//! notification during a flush makes it go round once more; each round first waits
//! [`FLUSH_DELAY`] to gather the commits that follow. Writers never wait for it: the
//! write path gains no blob round trip, and under load one segment carries many commits.
//!
//! The same flush adds the versions to their objects' index segments
//! ([`udm_core::shadow::index`], written by `crate::index`), which serve the S3-only reads.
//!
//! A failed flush is logged (`tracing` warning) and left: the watermark did not move, so
//! the next flush — or [`Admin::flush_shadow`](crate::Admin::flush_shadow), the repair pass
//! that walks every collection on the metadata store's backlog and that `Udm` runs when it
//! is built — writes the same range again. Segments of the same range are overwritten
//! (their content is a pure function of the committed versions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use udm_core::layout::Layout;
use udm_core::ports::{BlobStore, MetaStore, PutOptions};
use udm_core::shadow::LogSegment;
use udm_core::{Cv, Result, RouteContext};

use crate::locks::KeyedLocks;

/// The most CVs one segment covers.
pub const FLUSH_BATCH: usize = 256;

/// How long a notified flush waits before it reads what to log, so that the commits of the
/// next few milliseconds share its segment (bounds the flush work per collection to one
/// round per window under any write rate; the log lags its commits by about this much).
pub const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(25);

/// What a flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Collections flushed.
    pub collections: u64,
    /// Segments written.
    pub segments: u64,
    /// Committed versions those segments hold.
    pub versions: u64,
}

impl std::ops::AddAssign for FlushReport {
    fn add_assign(&mut self, other: Self) {
        self.collections += other.collections;
        self.segments += other.segments;
        self.versions += other.versions;
    }
}

/// Everything a flush of one pair needs (cheap clones).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) json: Arc<dyn BlobStore>,
    pub(crate) layout: Layout,
    /// The index segments this process last wrote to `json`.
    pub(crate) segments: Arc<crate::index::SegmentCache>,
    /// One flush at a time per collection of this pair (see [`FlushLocks`]). Only targets
    /// hold these besides the facade, and as the last field it is dropped after the stores:
    /// [`Udm::close`](crate::Udm::close) counts it to know when no task holds a store.
    pub(crate) locks: Arc<FlushLocks>,
}

/// Serializes the flushes of one collection in this process: a notified flush and the
/// repair pass ([`Admin::flush_shadow`](crate::Admin::flush_shadow)) never run side by side,
/// so when the repair pass returns, every flush of a collection that started before it has
/// finished too (its index merges included).
pub(crate) type FlushLocks = KeyedLocks<RouteContext>;

/// Flushes of running (pair, collection)s, each with "notified again while running".
type Running = HashMap<(usize, RouteContext), bool>;

/// See the [module docs](self).
#[derive(Debug, Default, Clone)]
pub(crate) struct Flusher {
    running: Arc<Mutex<Running>>,
}

impl Flusher {
    /// Makes sure a flush of `ctx` on pair `pair` runs after now.
    pub(crate) fn notify(&self, pair: usize, ctx: &RouteContext, target: &Target) {
        let lane = (pair, ctx.clone());
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(again) = running.get_mut(&lane) {
                *again = true;
                return;
            }
            running.insert(lane.clone(), false);
        }
        tokio::spawn(run(self.running.clone(), lane, target.clone()));
    }
}

async fn run(running: Arc<Mutex<Running>>, lane: (usize, RouteContext), target: Target) {
    loop {
        tokio::time::sleep(FLUSH_DELAY).await;
        if let Err(e) = flush(&target, &lane.1, false).await {
            tracing::warn!(ctx = %lane.1, pair = lane.0, error = %e, "udm: shadow log flush failed; the repair pass will redo it");
        }
        let mut all = running.lock().unwrap_or_else(PoisonError::into_inner);
        match all.get_mut(&lane) {
            Some(again) if *again => *again = false,
            _ => {
                all.remove(&lane);
                return;
            }
        }
    }
}

/// Writes the segments `ctx` lacks until its log has caught up. With `confirm`, an
/// already caught-up collection is confirmed to the store (which takes it off the backlog).
pub(crate) async fn flush(t: &Target, ctx: &RouteContext, confirm: bool) -> Result<FlushReport> {
    let _one_at_a_time = t.locks.lock(ctx.clone()).await;
    flush_locked(t, ctx, confirm).await
}

async fn flush_locked(t: &Target, ctx: &RouteContext, confirm: bool) -> Result<FlushReport> {
    let mut report = FlushReport { collections: 1, ..FlushReport::default() };
    loop {
        let p = t.meta.shadow_pending(ctx, FLUSH_BATCH).await?;
        if p.upto == p.after {
            if confirm {
                t.meta.shadow_logged(ctx, p.upto).await?;
            }
            return Ok(report);
        }
        if !p.entries.is_empty() {
            let first = Cv(p.after.0 + 1);
            report.segments += 1;
            report.versions += p.entries.len() as u64;
            let bytes = LogSegment::encode(ctx, first, p.upto, p.entries.clone())?;
            let key = t.layout.log_segment(ctx, first, p.upto);
            t.json.put(&key, bytes, &PutOptions::overwrite("application/json").before_commit()).await?;
            // Then each object's version index: both before the watermark moves, so a crash
            // in between makes the next flush write both again.
            crate::index::index_entries(t, &p.entries).await?;
        }
        t.meta.shadow_logged(ctx, p.upto).await?;
        if p.upto.0 < p.after.0 + FLUSH_BATCH as u64 {
            // Fewer CVs than a full batch: the log held everything up to the CV just read.
            return Ok(report);
        }
    }
}

/// The repair pass over one pair: flushes every collection on its backlog.
pub(crate) async fn flush_backlog(t: &Target) -> Result<FlushReport> {
    let mut total = FlushReport::default();
    let mut after: Option<String> = None;
    loop {
        let page = t.meta.shadow_backlog(after.as_deref(), 100).await?;
        for ctx in &page.items {
            total += flush(t, ctx, true).await?;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(total),
        }
    }
}
