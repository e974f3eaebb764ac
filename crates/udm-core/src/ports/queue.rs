//! The queue store port: the persistent fallback queue and its dead-letter queue.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::id::{ObjectKey, RequestId};
use crate::retry::NextStep;
use crate::time::Timestamp;

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    /// Waiting for its next attempt (or leased to a worker until `leased_until`).
    Pending,
    /// Attempts used up; waits for an operator to retry or cancel it.
    Dead,
}

/// One queued write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueEntry {
    /// Unique id: `<tenant>/<db>/<collection>/<request id>` (one entry per request).
    pub id: String,
    /// The object written.
    pub key: ObjectKey,
    /// The write's request id (replays are idempotent on it).
    pub request_id: RequestId,
    /// The write to replay (facade-defined JSON).
    pub payload: Value,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the entry was queued.
    pub enqueued_at: Timestamp,
    /// Earliest next attempt.
    pub next_attempt_at: Timestamp,
    /// A worker holds it until then.
    pub leased_until: Option<Timestamp>,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Pending or dead.
    pub state: QueueState,
}

impl QueueEntry {
    /// The queue id of a request.
    pub fn id_for(key: &ObjectKey, request_id: &RequestId) -> String {
        format!("{}{request_id}", crate::layout::collection_record_prefix(&key.ctx))
    }
}

/// Queue sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Pending entries (leased included).
    pub pending: u64,
    /// Pending entries currently leased to a worker.
    pub leased: u64,
    /// Dead letters.
    pub dead: u64,
}

/// The persistent fallback queue.
#[async_trait]
pub trait QueueStore: Send + Sync + fmt::Debug {
    /// Adds `entry` (state pending). Idempotent: if an entry with the same id exists, it is
    /// returned unchanged and nothing is written.
    async fn enqueue(&self, entry: QueueEntry) -> Result<QueueEntry>;

    /// Leases up to `limit` pending entries due at `now` (next attempt `<= now`, no live
    /// lease) until `lease_until`, oldest due first. Concurrent callers never get the same
    /// entry while its lease lasts.
    async fn claim_due(&self, now: Timestamp, lease_until: Timestamp, limit: usize) -> Result<Vec<QueueEntry>>;

    /// Removes an entry whose write succeeded. Absent entries are not an error.
    async fn complete(&self, id: &str) -> Result<()>;

    /// Records a failed attempt: `attempts` + 1, `last_error`, lease released; then
    /// reschedules it or moves it to the dead-letter queue per `next`. Missing → not found.
    async fn fail(&self, id: &str, error: &str, next: NextStep) -> Result<()>;

    /// Counts.
    async fn stats(&self, now: Timestamp) -> Result<QueueStats>;

    /// Entries in `state`, by id, strictly after `after`, at most `limit`.
    async fn list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>>;

    /// Moves a dead letter back to pending, due at `now`, attempts reset. Missing → not found.
    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<()>;

    /// Removes an entry (pending or dead). Missing → not found.
    async fn cancel(&self, id: &str) -> Result<()>;
}
