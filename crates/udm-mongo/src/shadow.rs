//! The shadow commit log's bookkeeping on MongoDB ([`udm_core::shadow`]): each collection
//! document carries the logged watermark `sh` and a `dirty` flag that every commit sets
//! (in the statement that moves its CV) and a flush clears once the log caught up; the
//! flusher reads versions by `{ctx, cv}` range (bounded, no sort).

use bson::{Bson, doc};
use futures_util::TryStreamExt;
use udm_core::layout::{collection_record_prefix, parse_collection_record_prefix};
use udm_core::query::Page;
use udm_core::shadow::{LogEntry, ShadowPending};
use udm_core::{Cv, Result, RouteContext};

use crate::MongoStore;
use crate::docs::from_json;
use crate::error::{classify, corrupt, to_i64};
use crate::meta::committed_by;

/// A CV field of a collection document (absent: [`Cv::ZERO`]).
pub(crate) fn cv_of(d: &bson::Document, field: &str) -> Result<Cv> {
    match d.get(field) {
        None | Some(Bson::Null) => Ok(Cv::ZERO),
        Some(v) => {
            let n = v.as_i64().ok_or_else(|| corrupt("collection document", format!("{field} = {v}")))?;
            Ok(Cv(u64::try_from(n).map_err(|_| corrupt("collection document", n))?))
        }
    }
}

impl MongoStore {
    pub(crate) async fn backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
        let what = "shadow backlog";
        let mut filter = doc! {"dirty": true};
        if let Some(a) = after {
            filter.insert("_id", doc! {"$gt": a});
        }
        let mut cursor = self
            .cvs()
            .find(filter)
            .sort(doc! {"_id": 1})
            .projection(doc! {"_id": 1})
            .limit(i64::try_from(limit + 1).unwrap_or(i64::MAX))
            .await
            .map_err(|e| classify(what, e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| classify(what, e))? {
            let id = d.get_str("_id").map_err(|e| corrupt("collection document", e))?;
            if let Some(ctx) = parse_collection_record_prefix(id) {
                out.push(ctx);
            }
        }
        Ok(Page::from_overfetch(out, limit, collection_record_prefix))
    }

    pub(crate) async fn pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
        let what = "shadow pending";
        let prefix = collection_record_prefix(ctx);
        let found = self.cvs().find_one(doc! {"_id": &prefix}).await.map_err(|e| classify(what, e))?;
        let (cv, after) = match &found {
            Some(d) => (cv_of(d, "cv")?, cv_of(d, "sh")?),
            None => (Cv::ZERO, Cv::ZERO),
        };
        let upto = Cv(cv.0.min(after.0.saturating_add(limit as u64))).max(after);
        let mut entries = Vec::new();
        if upto > after {
            let range = doc! {"$gt": to_i64(after.0, "cv")?, "$lte": to_i64(upto.0, "cv")?};
            let filter = doc! {"ctx": &prefix, "cv": range, "pruned": {"$ne": true}};
            let mut cursor = self.versions().find(filter).await.map_err(|e| classify(what, e))?;
            while let Some(d) = cursor.try_next().await.map_err(|e| classify(what, e))? {
                let (_, fingerprint) = committed_by(&d)?;
                entries.push(LogEntry { record: from_json(&d, "version")?, fingerprint });
            }
            entries.sort_by_key(|e: &LogEntry| e.record.cv);
        }
        Ok(ShadowPending { after, upto, entries })
    }

    pub(crate) async fn logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
        let what = "shadow logged";
        let id = collection_record_prefix(ctx);
        let n = to_i64(upto.0, "cv")?;
        self.cvs().update_one(doc! {"_id": &id}, doc! {"$max": {"sh": n}}).await.map_err(|e| classify(what, e))?;
        // Caught up: clear the flag, unless a commit moved the CV past `upto` meanwhile.
        self.cvs()
            .update_one(doc! {"_id": &id, "cv": {"$lte": n}, "sh": {"$gte": n}}, doc! {"$set": {"dirty": false}})
            .await
            .map_err(|e| classify(what, e))?;
        Ok(())
    }
}
