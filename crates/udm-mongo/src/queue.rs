//! [`QueueStore`] on MongoDB: one document per entry; claims are atomic find-and-modify.

use async_trait::async_trait;
use bson::{Bson, Document, doc};
use futures_util::TryStreamExt;
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use udm_core::ports::{QueueEntry, QueueState, QueueStats, QueueStore};
use udm_core::retry::NextStep;
use udm_core::{Error, ObjectKey, RequestId, Result, Timestamp};

use crate::MongoStore;
use crate::docs::{from_json, json_of};
use crate::error::{classify, corrupt};

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

fn state_name(s: QueueState) -> &'static str {
    match s {
        QueueState::Pending => PENDING,
        QueueState::Dead => DEAD,
    }
}

fn to_doc(e: &QueueEntry) -> Result<Document> {
    let fixed = Fixed {
        key: e.key.clone(),
        request_id: e.request_id.clone(),
        payload: e.payload.clone(),
        enqueued_at: e.enqueued_at,
    };
    Ok(doc! {
        "_id": &e.id,
        "state": state_name(e.state),
        "attempts": i64::from(e.attempts),
        "next_at": e.next_attempt_at.as_millis(),
        "lease": e.leased_until.map_or(Bson::Null, |t| Bson::Int64(t.as_millis())),
        "last_error": e.last_error.clone().map_or(Bson::Null, Bson::String),
        "json": json_of(&fixed)?,
    })
}

fn from_doc(d: &Document) -> Result<QueueEntry> {
    let fixed: Fixed = from_json(d, "queue entry")?;
    let ts = |field: &str| -> Result<Option<Timestamp>> {
        match d.get(field) {
            Some(Bson::Int64(ms)) => Timestamp::from_millis(*ms).map(Some),
            None | Some(Bson::Null) => Ok(None),
            Some(other) => Err(corrupt("queue entry", format!("{field} = {other}"))),
        }
    };
    Ok(QueueEntry {
        id: d.get_str("_id").map_err(|e| corrupt("queue entry", e))?.to_owned(),
        key: fixed.key,
        request_id: fixed.request_id,
        payload: fixed.payload,
        attempts: u32::try_from(d.get_i64("attempts").map_err(|e| corrupt("queue entry", e))?).unwrap_or(u32::MAX),
        enqueued_at: fixed.enqueued_at,
        next_attempt_at: ts("next_at")?.ok_or_else(|| corrupt("queue entry", "next_at missing"))?,
        leased_until: ts("lease")?,
        last_error: d.get_str("last_error").ok().map(str::to_owned),
        state: if d.get_str("state").is_ok_and(|s| s == DEAD) { QueueState::Dead } else { QueueState::Pending },
    })
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("queue entry {id}"))
}

#[async_trait]
impl QueueStore for MongoStore {
    async fn enqueue(&self, entry: QueueEntry) -> Result<QueueEntry> {
        self.bounded("enqueue", async {
            // Insert-if-absent, atomically: $setOnInsert never touches an existing entry.
            let found = self
                .queue()
                .find_one_and_update(doc! {"_id": &entry.id}, doc! {"$setOnInsert": to_doc(&entry)?})
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await
                .map_err(|e| classify("enqueue", e))?;
            found.as_ref().map(from_doc).unwrap_or(Ok(entry))
        })
        .await
    }

    async fn claim_due(&self, now: Timestamp, lease_until: Timestamp, limit: usize) -> Result<Vec<QueueEntry>> {
        self.bounded("claim", async {
            let now_ms = now.as_millis();
            let filter = doc! {
                "state": PENDING,
                "next_at": {"$lte": now_ms},
                "$or": [{"lease": Bson::Null}, {"lease": {"$lte": now_ms}}],
            };
            let mut out = Vec::new();
            while out.len() < limit {
                let claimed = self
                    .queue()
                    .find_one_and_update(filter.clone(), doc! {"$set": {"lease": lease_until.as_millis()}})
                    .sort(doc! {"next_at": 1, "_id": 1})
                    .return_document(ReturnDocument::After)
                    .await
                    .map_err(|e| classify("claim", e))?;
                match claimed {
                    Some(d) => out.push(from_doc(&d)?),
                    None => break,
                }
            }
            Ok(out)
        })
        .await
    }

    async fn complete(&self, id: &str) -> Result<()> {
        self.bounded("complete", async {
            self.queue().delete_one(doc! {"_id": id}).await.map_err(|e| classify("complete", e))?;
            Ok(())
        })
        .await
    }

    async fn fail(&self, id: &str, error: &str, next: NextStep) -> Result<()> {
        self.bounded("fail", async {
            let mut set = doc! {"last_error": error, "lease": Bson::Null};
            match next {
                NextStep::RetryAt(t) => set.insert("next_at", t.as_millis()),
                NextStep::DeadLetter => set.insert("state", DEAD),
            };
            let r = self
                .queue()
                .update_one(doc! {"_id": id}, doc! {"$set": set, "$inc": {"attempts": 1_i64}})
                .await
                .map_err(|e| classify("fail", e))?;
            if r.matched_count == 0 { Err(missing(id)) } else { Ok(()) }
        })
        .await
    }

    async fn stats(&self, now: Timestamp) -> Result<QueueStats> {
        self.bounded("queue stats", async {
            let count = async |filter: Document| {
                self.queue().count_documents(filter).await.map_err(|e| classify("queue stats", e))
            };
            Ok(QueueStats {
                pending: count(doc! {"state": PENDING}).await?,
                leased: count(doc! {"state": PENDING, "lease": {"$gt": now.as_millis()}}).await?,
                dead: count(doc! {"state": DEAD}).await?,
            })
        })
        .await
    }

    async fn list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>> {
        self.bounded("queue list", async {
            let mut filter = doc! {"state": state_name(state)};
            if let Some(a) = after {
                filter.insert("_id", doc! {"$gt": a});
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut cursor = self
                .queue()
                .find(filter)
                .sort(doc! {"_id": 1})
                .limit(limit)
                .await
                .map_err(|e| classify("queue list", e))?;
            let mut out = Vec::new();
            while let Some(d) = cursor.try_next().await.map_err(|e| classify("queue list", e))? {
                out.push(from_doc(&d)?);
            }
            Ok(out)
        })
        .await
    }

    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<()> {
        self.bounded("retry dead letter", async {
            let r = self
                .queue()
                .update_one(
                    doc! {"_id": id, "state": DEAD},
                    doc! {"$set": {"state": PENDING, "attempts": 0_i64, "next_at": now.as_millis(), "lease": Bson::Null}},
                )
                .await
                .map_err(|e| classify("retry dead letter", e))?;
            if r.matched_count == 0 { Err(Error::not_found(format!("dead letter {id}"))) } else { Ok(()) }
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<QueueEntry>> {
        self.bounded("queue get", async {
            let found = self.queue().find_one(doc! {"_id": id}).await.map_err(|e| classify("queue get", e))?;
            found.as_ref().map(from_doc).transpose()
        })
        .await
    }

    async fn cancel(&self, id: &str) -> Result<()> {
        self.bounded("cancel", async {
            let r = self.queue().delete_one(doc! {"_id": id}).await.map_err(|e| classify("cancel", e))?;
            if r.deleted_count == 0 { Err(missing(id)) } else { Ok(()) }
        })
        .await
    }
}
