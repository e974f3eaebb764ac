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

    /// Whether a worker may claim it at `now`: pending, due, and not under a live lease.
    pub fn is_claimable(&self, now: Timestamp) -> bool {
        self.state == QueueState::Pending && self.next_attempt_at <= now && self.leased_until.is_none_or(|l| l <= now)
    }

    /// Records a failed attempt (see [`QueueStore::fail`]).
    pub fn record_failure(&mut self, error: &str, next: NextStep) {
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = Some(error.to_owned());
        self.leased_until = None;
        match next {
            NextStep::RetryAt(t) => self.next_attempt_at = t,
            NextStep::DeadLetter => self.state = QueueState::Dead,
        }
    }

    /// Moves a dead letter back to pending, due at `now` (see [`QueueStore::retry_dead`]);
    /// `false` (and no change) if it is not a dead letter.
    pub fn revive(&mut self, now: Timestamp) -> bool {
        if self.state != QueueState::Dead {
            return false;
        }
        self.state = QueueState::Pending;
        self.attempts = 0;
        self.next_attempt_at = now;
        self.leased_until = None;
        true
    }
}

impl QueueStats {
    /// The stats of `entries` at `now`.
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a QueueEntry>, now: Timestamp) -> Self {
        let mut s = Self::default();
        for e in entries {
            match e.state {
                QueueState::Dead => s.dead += 1,
                QueueState::Pending => {
                    s.pending += 1;
                    s.leased += u64::from(e.leased_until.is_some_and(|l| l > now));
                }
            }
        }
        s
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

    /// The entry `id` (pending or dead), or `None`.
    async fn get(&self, id: &str) -> Result<Option<QueueEntry>>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RouteContext;

    fn entry(due: i64) -> QueueEntry {
        let key = ObjectKey::new(RouteContext::new("t", "d", "c").unwrap(), crate::ObjectId::new("o").unwrap());
        let request_id = RequestId::new("r").unwrap();
        QueueEntry {
            id: QueueEntry::id_for(&key, &request_id),
            key,
            request_id,
            payload: Value::Null,
            attempts: 0,
            enqueued_at: Timestamp::EPOCH,
            next_attempt_at: Timestamp::from_millis(due).unwrap(),
            leased_until: None,
            last_error: None,
            state: QueueState::Pending,
        }
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    #[test]
    fn claimable_only_when_due_and_unleased() {
        let mut e = entry(10);
        assert_eq!(e.id, "t/d/c/r");
        assert!(!e.is_claimable(t(9)));
        assert!(e.is_claimable(t(10)));
        e.leased_until = Some(t(20));
        assert!(!e.is_claimable(t(15)));
        assert!(e.is_claimable(t(20)), "an expired lease frees the entry");
    }

    #[test]
    fn failures_then_dead_letter_then_revive() {
        let mut e = entry(0);
        e.leased_until = Some(t(5));
        e.record_failure("boom", NextStep::RetryAt(t(50)));
        assert_eq!((e.attempts, e.next_attempt_at, e.leased_until, e.state), (1, t(50), None, QueueState::Pending));
        assert!(!e.clone().revive(t(1)), "only dead letters revive");
        e.record_failure("again", NextStep::DeadLetter);
        assert_eq!((e.attempts, e.state, e.last_error.as_deref()), (2, QueueState::Dead, Some("again")));
        assert!(!e.is_claimable(t(1_000)));
        assert!(e.revive(t(70)));
        assert_eq!((e.attempts, e.state, e.next_attempt_at), (0, QueueState::Pending, t(70)));
    }

    #[test]
    fn stats_count_states_and_live_leases() {
        let mut leased = entry(0);
        leased.leased_until = Some(t(100));
        let mut dead = entry(0);
        dead.state = QueueState::Dead;
        let s = QueueStats::of([&entry(0), &leased, &dead], t(50));
        assert_eq!(s, QueueStats { pending: 2, leased: 1, dead: 1 });
        assert_eq!(QueueStats::of([&leased], t(100)).leased, 0, "expired lease");
    }
}
