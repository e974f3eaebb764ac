//! In-memory queue store.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use udm_core::ports::{QueueEntry, QueueState, QueueStats, QueueStore};
use udm_core::retry::NextStep;
use udm_core::{Error, Result, Timestamp};

/// The fallback queue in process memory; the reference implementation of [`QueueStore`].
#[derive(Debug, Default)]
pub struct MemoryQueue {
    entries: Mutex<BTreeMap<String, QueueEntry>>,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, QueueEntry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("queue entry {id}"))
}

#[async_trait]
impl QueueStore for MemoryQueue {
    async fn enqueue(&self, entry: QueueEntry) -> Result<QueueEntry> {
        let mut m = self.lock();
        Ok(m.entry(entry.id.clone()).or_insert(entry).clone())
    }

    async fn claim_due(&self, now: Timestamp, lease_until: Timestamp, limit: usize) -> Result<Vec<QueueEntry>> {
        let mut m = self.lock();
        let mut due: Vec<&mut QueueEntry> = m.values_mut().filter(|e| e.is_claimable(now)).collect();
        due.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|e| {
                e.leased_until = Some(lease_until);
                e.clone()
            })
            .collect())
    }

    async fn complete(&self, id: &str) -> Result<()> {
        self.lock().remove(id);
        Ok(())
    }

    async fn fail(&self, id: &str, error: &str, next: NextStep) -> Result<()> {
        self.lock().get_mut(id).ok_or_else(|| missing(id))?.record_failure(error, next);
        Ok(())
    }

    async fn stats(&self, now: Timestamp) -> Result<QueueStats> {
        Ok(QueueStats::of(self.lock().values(), now))
    }

    async fn list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>> {
        let m = self.lock();
        Ok(m.values()
            .filter(|e| e.state == state && after.is_none_or(|a| e.id.as_str() > a))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<()> {
        let revived = self.lock().get_mut(id).is_some_and(|e| e.revive(now));
        if revived { Ok(()) } else { Err(Error::not_found(format!("dead letter {id}"))) }
    }

    async fn get(&self, id: &str) -> Result<Option<QueueEntry>> {
        Ok(self.lock().get(id).cloned())
    }

    async fn cancel(&self, id: &str) -> Result<()> {
        self.lock().remove(id).map(|_| ()).ok_or_else(|| missing(id))
    }
}
