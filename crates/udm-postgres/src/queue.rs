//! [`QueueStore`] on PostgreSQL: one row per entry, the parts that change (state, next
//! attempt, lease, attempts, last error) in columns, the rest as JSON. A claim is one
//! statement: an `UPDATE` of the due entries picked by a `SELECT … FOR UPDATE SKIP LOCKED`,
//! so concurrent claimers never get the same entry (a row another claimer holds is skipped;
//! one it leased meanwhile is re-checked and no longer due).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use udm_core::ports::{QueueEntry, QueueState, QueueStats, QueueStore};
use udm_core::retry::NextStep;
use udm_core::{Error, ObjectKey, RequestId, Result, Timestamp};

use crate::PostgresStore;
use crate::codec::{col, decode, encode};
use crate::error::{classify, corrupt, to_i64, to_u64};

/// The parts of an entry that never change after enqueue (kept as JSON).
#[derive(Serialize, Deserialize)]
struct Fixed {
    key: ObjectKey,
    request_id: RequestId,
    payload: Value,
    enqueued_at: Timestamp,
}

const PENDING: &str = "pending";
const DEAD: &str = "dead";

const ENQUEUE: &str = "INSERT INTO udm_queue (id, state, next_at, lease, attempts, last_error, doc) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
const GET: &str = "SELECT id, state, next_at, lease, attempts, last_error, doc FROM udm_queue WHERE id = $1";
const CLAIM: &str = "UPDATE udm_queue q SET lease = $2 FROM ( \
         SELECT id FROM udm_queue WHERE state = 'pending' AND next_at <= $1 AND (lease IS NULL OR lease <= $1) \
         ORDER BY next_at, id LIMIT $3 FOR UPDATE SKIP LOCKED \
     ) due WHERE q.id = due.id \
     RETURNING q.id, q.state, q.next_at, q.lease, q.attempts, q.last_error, q.doc";
const COMPLETE: &str = "DELETE FROM udm_queue WHERE id = $1";
const FAIL: &str = "UPDATE udm_queue SET attempts = LEAST(attempts + 1, 4294967295), last_error = $2, lease = NULL, \
     next_at = COALESCE($3, next_at), state = CASE WHEN $4 THEN 'dead' ELSE state END WHERE id = $1";
const STATS: &str = "SELECT count(*) FILTER (WHERE state = 'pending'), \
     count(*) FILTER (WHERE state = 'pending' AND lease > $1), count(*) FILTER (WHERE state = 'dead') FROM udm_queue";
const LIST: &str = "SELECT id, state, next_at, lease, attempts, last_error, doc FROM udm_queue \
     WHERE state = $1 AND id > $2 ORDER BY id LIMIT $3";
const RETRY_DEAD: &str =
    "UPDATE udm_queue SET state = 'pending', attempts = 0, next_at = $2, lease = NULL WHERE id = $1 AND state = 'dead'";

fn state_name(s: QueueState) -> &'static str {
    match s {
        QueueState::Pending => PENDING,
        QueueState::Dead => DEAD,
    }
}

/// An entry from a row of `id, state, next_at, lease, attempts, last_error, doc`.
fn from_row(r: &Row) -> Result<QueueEntry> {
    let what = "queue entry";
    let fixed: Fixed = decode(col(r, 6, what)?, what)?;
    let state = match col::<&str>(r, 1, what)? {
        PENDING => QueueState::Pending,
        DEAD => QueueState::Dead,
        other => return Err(corrupt(what, format!("state {other:?}"))),
    };
    let attempts = to_u64(col(r, 4, what)?, "attempts")?;
    Ok(QueueEntry {
        id: col(r, 0, what)?,
        key: fixed.key,
        request_id: fixed.request_id,
        payload: fixed.payload,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        enqueued_at: fixed.enqueued_at,
        next_attempt_at: Timestamp::from_millis(col(r, 2, what)?)?,
        leased_until: col::<Option<i64>>(r, 3, what)?.map(Timestamp::from_millis).transpose()?,
        last_error: col(r, 5, what)?,
        state,
    })
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("queue entry {id}"))
}

impl PostgresStore {
    async fn get_entry(&self, id: &str) -> Result<Option<QueueEntry>> {
        let mut lease = self.pool().get().await?;
        let row = lease.conn().query_opt(GET, &[&id]).await.map_err(|e| classify("queue get", e))?;
        row.as_ref().map(from_row).transpose()
    }

    /// Runs one statement on entry `id`, returning how many rows it changed.
    async fn change(&self, what: &str, sql: &'static str, params: &crate::pool::Params<'_>) -> Result<u64> {
        let mut lease = self.pool().get().await?;
        lease.conn().execute(sql, params).await.map_err(|e| classify(what, e))
    }
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn enqueue(&self, entry: QueueEntry) -> Result<QueueEntry> {
        self.bounded("enqueue", async {
            let fixed = Fixed {
                key: entry.key.clone(),
                request_id: entry.request_id.clone(),
                payload: entry.payload.clone(),
                enqueued_at: entry.enqueued_at,
            };
            let json = encode(&fixed)?;
            let lease = entry.leased_until.map(|t| t.as_millis());
            let attempts = i64::from(entry.attempts);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &entry.id,
                &state_name(entry.state),
                &entry.next_attempt_at.as_millis(),
                &lease,
                &attempts,
                &entry.last_error,
                &json,
            ];
            if self.change("enqueue", ENQUEUE, &params).await? == 1 {
                return Ok(entry);
            }
            // Already there: the first entry is kept and returned.
            Ok(self.get_entry(&entry.id).await?.unwrap_or(entry))
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<QueueEntry>> {
        self.bounded("queue get", self.get_entry(id)).await
    }

    async fn claim_due(&self, now: Timestamp, lease_until: Timestamp, limit: usize) -> Result<Vec<QueueEntry>> {
        let n = to_i64(limit as u64, "limit")?;
        self.bounded("claim", async {
            let mut lease = self.pool().get().await?;
            let rows = lease
                .conn()
                .query(CLAIM, &[&now.as_millis(), &lease_until.as_millis(), &n])
                .await
                .map_err(|e| classify("claim", e))?;
            let mut out = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
            out.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
            Ok(out)
        })
        .await
    }

    async fn complete(&self, id: &str) -> Result<()> {
        self.bounded("complete", self.change("complete", COMPLETE, &[&id])).await.map(drop)
    }

    async fn fail(&self, id: &str, error: &str, next: NextStep) -> Result<()> {
        let (retry_at, dead) = match next {
            NextStep::RetryAt(t) => (Some(t.as_millis()), false),
            NextStep::DeadLetter => (None, true),
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&id, &error, &retry_at, &dead];
        let changed = self.bounded("fail", self.change("fail", FAIL, &params)).await?;
        if changed == 0 { Err(missing(id)) } else { Ok(()) }
    }

    async fn stats(&self, now: Timestamp) -> Result<QueueStats> {
        self.bounded("queue stats", async {
            let mut lease = self.pool().get().await?;
            let r = lease
                .conn()
                .query_opt(STATS, &[&now.as_millis()])
                .await
                .map_err(|e| classify("queue stats", e))?
                .ok_or_else(|| Error::internal("postgres: queue stats returned nothing"))?;
            let n = |i: usize| -> Result<u64> { to_u64(col(&r, i, "queue stats")?, "count") };
            Ok(QueueStats { pending: n(0)?, leased: n(1)?, dead: n(2)? })
        })
        .await
    }

    async fn list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>> {
        let n = to_i64(limit as u64, "limit")?;
        self.bounded("queue list", async {
            let mut lease = self.pool().get().await?;
            let rows = lease
                .conn()
                .query(LIST, &[&state_name(state), &after.unwrap_or(""), &n])
                .await
                .map_err(|e| classify("queue list", e))?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<()> {
        let changed = self
            .bounded("retry dead letter", self.change("retry dead letter", RETRY_DEAD, &[&id, &now.as_millis()]))
            .await?;
        if changed == 0 { Err(Error::not_found(format!("dead letter {id}"))) } else { Ok(()) }
    }

    async fn cancel(&self, id: &str) -> Result<()> {
        let changed = self.bounded("cancel", self.change("cancel", COMPLETE, &[&id])).await?;
        if changed == 0 { Err(missing(id)) } else { Ok(()) }
    }
}
