//! The shadow commit log's bookkeeping on MongoDB ([`udm_core::shadow`]): each collection
//! document carries the logged watermark `sh` and a `dirty` flag that every commit sets
//! (in the statement that moves its CV) and a flush clears once the log caught up; the
//! flusher reads versions by `{ctx, cv}` range (bounded, no sort), on the fields of the
//! `{ctx: 1, cv: 1}` index only: pruned versions are skipped as they arrive, not in the
//! filter (a negated condition beside the range made the test server scan the whole
//! collection on every flush: 16 ms at 3,000 versions, growing with the collection, where
//! the index range takes 1.2–1.6 ms).

use bson::{Bson, Document, doc};
use futures_util::TryStreamExt;
use udm_core::layout::{collection_record_prefix, parse_collection_record_prefix};
use udm_core::query::Page;
use udm_core::shadow::{LogEntry, ShadowPending};
use udm_core::{Cv, Result, RouteContext};

use crate::MongoStore;
use crate::docs::{from_json, is_pruned};
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

/// The versions of collection `prefix` with a CV in `after..=upto`, pruned ones included
/// (the caller skips them): the `{ctx, cv}` index's fields only, so any server answers it
/// with that index.
pub(crate) fn pending_filter(prefix: &str, after: Cv, upto: Cv) -> Result<Document> {
    Ok(doc! {"ctx": prefix, "cv": {"$gt": to_i64(after.0, "cv")?, "$lte": to_i64(upto.0, "cv")?}})
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
            let mut cursor =
                self.versions().find(pending_filter(&prefix, after, upto)?).await.map_err(|e| classify(what, e))?;
            while let Some(d) = cursor.try_next().await.map_err(|e| classify(what, e))? {
                if is_pruned(&d) {
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use mongodb::bson::{Document, doc};

    use super::*;
    use crate::{MongoConfig, MongoStore};

    /// The winning plan's stages, outermost first, and the documents the server examined.
    async fn plan(s: &MongoStore, filter: Document) -> (Vec<String>, i64) {
        let explain = doc! {"explain": {"find": "udm_versions", "filter": filter}, "verbosity": "executionStats"};
        let r = s.db.run_command(explain).await.unwrap();
        let mut stages = Vec::new();
        let mut stage = r.get_document("queryPlanner").and_then(|q| q.get_document("winningPlan")).ok().cloned();
        while let Some(st) = stage {
            stages.push(st.get_str("stage").unwrap_or("?").to_owned());
            stage = st.get_document("inputStage").ok().cloned();
        }
        let examined = r
            .get_document("executionStats")
            .and_then(|e| e.get_i64("totalDocsExamined").or_else(|_| e.get_i32("totalDocsExamined").map(i64::from)));
        (stages, examined.unwrap_or(i64::MAX))
    }

    /// The flusher's range and a hard delete's listing are answered by an index on the real
    /// server, not a scan of every version of every collection (the flusher's filter had a
    /// `pruned: {$ne: true}` beside the range, and the server scanned the collection).
    #[tokio::test]
    async fn the_flusher_and_hard_deletes_read_versions_by_index() {
        let cfg = MongoConfig::new(&udm_testkit::services::mongo_uri(), "udm_plans");
        let s = MongoStore::connect(&cfg).await.unwrap();
        s.versions().delete_many(doc! {}).await.unwrap();
        let docs: Vec<Document> = (1..=300_i64)
            .map(|n| {
                let (ctx, obj) = (format!("t/d/c{}/", n % 3), format!("t/d/c{}/o{}", n % 3, n % 7));
                let mut d = doc! {"_id": format!("{obj}/{n:020}"), "ctx": ctx, "obj": obj, "ov": n, "cv": n, "req": format!("r{n}")};
                if n % 10 == 0 {
                    d.insert(crate::docs::PRUNED, true);
                }
                d
            })
            .collect();
        s.versions().insert_many(docs).await.unwrap();

        let pending = pending_filter("t/d/c1/", Cv(100), Cv(130)).unwrap();
        let (stages, examined) = plan(&s, pending.clone()).await;
        assert!(stages.iter().any(|st| st == "IXSCAN") && !stages.iter().any(|st| st == "COLLSCAN"), "{stages:?}");
        assert!(examined <= 10, "the range holds 10 versions of that collection; {examined} examined");
        let found: Vec<Document> = s.versions().find(pending).await.unwrap().try_collect().await.unwrap();
        let kept: Vec<i64> = found.iter().filter(|d| !is_pruned(d)).map(|d| d.get_i64("cv").unwrap()).collect();
        assert_eq!(kept.len(), 9, "cv 130 is pruned: {kept:?}");

        let (stages, examined) = plan(&s, crate::docs::object_filter("t/d/c1/o1")).await;
        assert!(stages.iter().any(|st| st == "IXSCAN") && !stages.iter().any(|st| st == "COLLSCAN"), "{stages:?}");
        assert!(examined <= 15, "the object has 15 versions (n ≡ 1 mod 21); {examined} examined");
    }
}
