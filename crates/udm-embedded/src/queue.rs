//! [`QueueStore`] on redb: one JSON entry per key; claims happen in one write transaction.

use async_trait::async_trait;
use redb::ReadableTable;
use udm_core::ports::{QueueEntry, QueueState, QueueStats, QueueStore};
use udm_core::retry::NextStep;
use udm_core::{Error, Result, Timestamp};

use crate::{EmbeddedStore, QUEUE, db_err, decode, encode};

fn all(t: &impl ReadableTable<&'static str, &'static str>) -> Result<Vec<QueueEntry>> {
    let mut out = Vec::new();
    for item in t.iter().map_err(db_err)? {
        let (_, v) = item.map_err(db_err)?;
        out.push(decode(v.value(), "queue entry")?);
    }
    Ok(out)
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("queue entry {id}"))
}

impl EmbeddedStore {
    /// Reads entry `id`, lets `f` change it (or fail), and writes it back, atomically.
    async fn update_entry(
        &self,
        id: &str,
        f: impl FnOnce(&mut QueueEntry) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            let mut t = tx.open_table(QUEUE).map_err(db_err)?;
            let mut e: QueueEntry = match t.get(id.as_str()).map_err(db_err)? {
                Some(v) => decode(v.value(), "queue entry")?,
                None => return Err(missing(&id)),
            };
            f(&mut e)?;
            t.insert(id.as_str(), encode(&e)?.as_str()).map_err(db_err)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl QueueStore for EmbeddedStore {
    async fn enqueue(&self, entry: QueueEntry) -> Result<QueueEntry> {
        self.write(move |tx| {
            let mut t = tx.open_table(QUEUE).map_err(db_err)?;
            if let Some(v) = t.get(entry.id.as_str()).map_err(db_err)? {
                return decode(v.value(), "queue entry");
            }
            t.insert(entry.id.as_str(), encode(&entry)?.as_str()).map_err(db_err)?;
            Ok(entry)
        })
        .await
    }

    async fn claim_due(&self, now: Timestamp, lease_until: Timestamp, limit: usize) -> Result<Vec<QueueEntry>> {
        self.write(move |tx| {
            let mut t = tx.open_table(QUEUE).map_err(db_err)?;
            let mut due: Vec<QueueEntry> = all(&t)?.into_iter().filter(|e| e.is_claimable(now)).collect();
            due.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
            due.truncate(limit);
            for e in &mut due {
                e.leased_until = Some(lease_until);
                t.insert(e.id.as_str(), encode(e)?.as_str()).map_err(db_err)?;
            }
            Ok(due)
        })
        .await
    }

    async fn complete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.open_table(QUEUE).map_err(db_err)?.remove(id.as_str()).map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn fail(&self, id: &str, error: &str, next: NextStep) -> Result<()> {
        let error = error.to_owned();
        self.update_entry(id, move |e| {
            e.record_failure(&error, next);
            Ok(())
        })
        .await
    }

    async fn stats(&self, now: Timestamp) -> Result<QueueStats> {
        self.read(move |tx| Ok(QueueStats::of(&all(&tx.open_table(QUEUE).map_err(db_err)?)?, now))).await
    }

    async fn list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>> {
        let after = after.map(str::to_owned);
        self.read(move |tx| {
            let t = tx.open_table(QUEUE).map_err(db_err)?;
            let mut out = Vec::new();
            let start = after.clone().unwrap_or_default();
            for item in t.range(start.as_str()..).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                if after.as_deref() == Some(k.value()) {
                    continue;
                }
                let e: QueueEntry = decode(v.value(), "queue entry")?;
                if e.state == state {
                    out.push(e);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<()> {
        let owned = id.to_owned();
        self.update_entry(id, move |e| {
            if e.revive(now) { Ok(()) } else { Err(Error::not_found(format!("dead letter {owned}"))) }
        })
        .await
        .map_err(|e| {
            if e.kind() == udm_core::ErrorKind::NotFound { Error::not_found(format!("dead letter {id}")) } else { e }
        })
    }

    async fn get(&self, id: &str) -> Result<Option<QueueEntry>> {
        let id = id.to_owned();
        self.read(move |tx| match tx.open_table(QUEUE).map_err(db_err)?.get(id.as_str()).map_err(db_err)? {
            Some(v) => decode(v.value(), "queue entry").map(Some),
            None => Ok(None),
        })
        .await
    }

    async fn cancel(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            let removed = tx.open_table(QUEUE).map_err(db_err)?.remove(id.as_str()).map_err(db_err)?.is_some();
            if removed { Ok(()) } else { Err(missing(&id)) }
        })
        .await
    }
}
