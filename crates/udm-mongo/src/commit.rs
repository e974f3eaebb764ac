//! The commit transaction (one version or a group), with as few statements as its
//! guarantees allow.
//!
//! A commit runs in one of two modes, chosen per attempt:
//!
//! - **Fast** (the first attempt of a lone commit, or of a batch of creates): nothing is
//!   read. The batch is planned on the assumption that every head is at the commit's
//!   expected OV and no request id was used; the statements then *check* that assumption as
//!   they write: the collection document's `$inc` (CV and counters, one statement) returns
//!   the first free CV, the version records' insert hits the unique `req` index if a request
//!   id was committed before (and the unique `_id` if the OV exists), a created head's
//!   insert hits the head's `_id`, and a replaced head is replaced with a compare-and-set
//!   filter (`{_id, ov: expected, at ≤ new at}`). Any of these failing aborts the attempt and
//!   runs it again in careful mode. A lone update is then: `$inc`, insert, compare-and-set
//!   replace, commit — four round trips.
//! - **Careful**: the request records and heads of the batch are read first (two `$in`
//!   finds), the batch is planned on them ([`plan_batch`]), and only accepted commits are
//!   written. Replays, conflicts and validation errors are answered per item.

use std::collections::HashMap;

use bson::{Bson, Document, doc};
use mongodb::ClientSession;
use mongodb::error::{Error as MongoError, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::ReturnDocument;
use udm_core::counters::CounterDelta;
use udm_core::layout::collection_record_prefix;
use udm_core::ports::{BatchWrites, Commit, Committed, plan_batch};
use udm_core::{Checksum, Cv, Error, Head, ObjectKey, RequestId, Result};

use crate::MongoStore;
use crate::asof::entry_of;
use crate::docs::{counter_field, from_json, head_doc, obj_id, request_id_of, version_doc};
use crate::error::{DUPLICATE_KEY, code};
use crate::meta::{Step, committed_by};
use crate::runtime::{Backoff, Deadline};

/// One attempt's outcome when it must be run again in careful mode.
pub(crate) enum Attempt<T> {
    /// As [`Step`].
    Done(Step<T>),
    /// An assumption of the fast mode failed: abort and run again, carefully.
    Careful,
}

impl MongoStore {
    /// One attempt of a group commit's statements (not the commit itself).
    pub(crate) async fn commit_many_attempt(
        &self,
        s: &mut ClientSession,
        commits: &[Commit],
        careful: bool,
    ) -> Result<Attempt<Vec<Result<Committed>>>, MongoError> {
        let Some(first) = commits.first() else { return Ok(Attempt::Done(Step::Commit(Vec::new()))) };
        let ctx = &first.key.ctx;
        let (recorded, heads) = if careful {
            (self.requests_in(s, commits).await?, Some(self.heads_in(s, commits).await?))
        } else {
            (HashMap::new(), None)
        };
        // Fast mode: each object's head is assumed to be at the first commit's expected OV.
        let assumed = |k: &ObjectKey| -> Option<Head> {
            let c = commits.iter().find(|c| &c.key == k)?;
            let expected = c.expected?;
            let mut h = c.outcome(Cv::ZERO).1;
            h.ov = expected; // and its timestamp is the commit's: checked by the head's filter
            Some(h)
        };
        let plan = match &heads {
            Some(h) => plan_batch(commits, |r| recorded.get(r).cloned(), |k| h.get(k).cloned().flatten()),
            None => plan_batch(commits, |_| None, assumed),
        };
        let plan = match plan {
            Ok(p) => p,
            Err(e) => return Ok(Attempt::Done(Step::Abort(Err(e)))),
        };
        if !careful && !plan.all_accepted() {
            return Ok(Attempt::Careful);
        }
        let accepted = plan.accepted();
        if accepted == 0 {
            let answers = plan.finish(commits, Cv::ZERO).map(|w| w.answers);
            return Ok(Attempt::Done(Step::Abort(answers)));
        }
        let n = i64::try_from(accepted).unwrap_or(i64::MAX);
        // CV and this collection's counters: one statement on one document.
        let mut inc = doc! {"cv": n};
        let mut others: Vec<CounterDelta> = Vec::new();
        for d in plan.counters(commits) {
            if &d.ctx == ctx {
                let field = counter_field(&d.counter);
                let now = inc.get_i64(&field).unwrap_or(0);
                inc.insert(field, now + d.delta);
            } else {
                others.push(d.clone());
            }
        }
        let updated = self
            .cvs()
            .find_one_and_update(
                doc! {"_id": collection_record_prefix(ctx)},
                doc! {"$inc": inc, "$set": {"dirty": true}},
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .session(&mut *s)
            .await?;
        let last = updated.as_ref().and_then(|d| d.get_i64("cv").ok()).and_then(|v| u64::try_from(v).ok());
        let Some(first_free) = last.and_then(|l| l.checked_sub(accepted as u64)) else {
            return Ok(Attempt::Done(Step::Abort(Err(Error::internal("collection version counter is missing")))));
        };
        let w = match plan.finish(commits, Cv(first_free)) {
            Ok(w) => w,
            Err(e) => return Ok(Attempt::Done(Step::Abort(Err(e)))),
        };
        if !others.is_empty() {
            self.apply_counters(s, &others).await?;
        }
        let docs = match documents(&w) {
            Ok(d) => d,
            Err(e) => return Ok(Attempt::Done(Step::Abort(Err(e)))),
        };
        match self.versions().insert_many(docs.versions).session(&mut *s).await {
            Err(e) if !careful && is_duplicate(&e) => return Ok(Attempt::Careful),
            other => other?,
        };
        let had_head = |k: &ObjectKey| match &heads {
            Some(h) => h.get(k).is_some_and(Option::is_some),
            None => commits.iter().find(|c| &c.key == k).is_some_and(|c| c.expected.is_some()),
        };
        let (mut inserts, mut replaces) = (Vec::new(), Vec::new());
        for (h, d) in w.final_heads().into_iter().zip(docs.heads) {
            if had_head(&h.key) { replaces.push((h, d)) } else { inserts.push(d) }
        }
        if !careful && !replaces.is_empty() {
            // Compare-and-set on the head each commit expected (fast mode read nothing).
            for (h, d) in replaces.drain(..) {
                let Some(c) = commits.iter().find(|c| c.key == h.key) else {
                    return Ok(Attempt::Done(Step::Abort(Err(Error::internal("a planned head has no commit")))));
                };
                let expected = c.expected.map_or(0, |o| i64::try_from(o.get()).unwrap_or(i64::MAX));
                let filter = doc! {"_id": obj_id(&h.key), "ov": expected, "at": {"$lte": c.version.at.as_millis()}};
                let r = self.heads().replace_one(filter, d).session(&mut *s).await?;
                if r.matched_count != 1 {
                    return Ok(Attempt::Careful);
                }
            }
        } else if replaces.len() == 1 {
            let (h, d) = replaces.remove(0);
            self.heads().replace_one(doc! {"_id": obj_id(&h.key)}, d).session(&mut *s).await?;
        } else if !replaces.is_empty() {
            let ids: Vec<Bson> = replaces.iter().map(|(h, _)| Bson::String(obj_id(&h.key))).collect();
            self.heads().delete_many(doc! {"_id": {"$in": ids}}).session(&mut *s).await?;
            inserts.extend(replaces.into_iter().map(|(_, d)| d));
        }
        if !inserts.is_empty() {
            match self.heads().insert_many(inserts).session(&mut *s).await {
                Err(e) if !careful && is_duplicate(&e) => return Ok(Attempt::Careful),
                other => other?,
            };
        }
        let openers = w.accepted.iter().filter_map(|a| entry_of(&a.record)).collect();
        if let Err(e) = self.index_as_of(s, openers).await? {
            return Ok(Attempt::Done(Step::Abort(Err(e))));
        }
        Ok(Attempt::Done(Step::Commit(w.answers)))
    }

    /// The request records the store holds for the batch's request ids.
    async fn requests_in(
        &self,
        s: &mut ClientSession,
        commits: &[Commit],
    ) -> Result<HashMap<RequestId, (Committed, Checksum)>, MongoError> {
        let by_id: HashMap<String, &RequestId> = commits
            .iter()
            .map(|c| (request_id_of(&c.key.ctx, &c.version.provenance.request_id), &c.version.provenance.request_id))
            .collect();
        let ids: Vec<&String> = by_id.keys().collect();
        let mut cursor = self.versions().find(doc! {"req": {"$in": ids}}).session(&mut *s).await?;
        let mut out = HashMap::new();
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            let (Ok(req), Ok(found)) = (d.get_str("req"), committed_by(&d)) else { continue };
            if let Some(r) = by_id.get(req) {
                out.insert((*r).clone(), found);
            }
        }
        Ok(out)
    }

    /// The current heads of the batch's objects (`None` for those that have none).
    async fn heads_in(
        &self,
        s: &mut ClientSession,
        commits: &[Commit],
    ) -> Result<HashMap<ObjectKey, Option<Head>>, MongoError> {
        let mut out: HashMap<ObjectKey, Option<Head>> = commits.iter().map(|c| (c.key.clone(), None)).collect();
        let ids: Vec<String> = out.keys().map(obj_id).collect();
        let mut cursor = self.heads().find(doc! {"_id": {"$in": ids}}).session(&mut *s).await?;
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            if let Ok(h) = from_json::<Head>(&d, "head") {
                out.insert(h.key.clone(), Some(h));
            }
        }
        Ok(out)
    }
}

/// The version and head documents of a finished batch.
struct Documents {
    versions: Vec<Document>,
    heads: Vec<Document>,
}

fn documents(w: &BatchWrites) -> Result<Documents> {
    let versions = w.accepted.iter().map(|a| version_doc(&a.record, &a.fingerprint)).collect::<Result<_>>()?;
    let heads = w.final_heads().into_iter().map(head_doc).collect::<Result<_>>()?;
    Ok(Documents { versions, heads })
}

fn is_duplicate(e: &MongoError) -> bool {
    if code(e) == Some(DUPLICATE_KEY) {
        return true;
    }
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::InsertMany(f) => {
            f.write_errors.as_ref().is_some_and(|errs| errs.iter().any(|w| w.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

/// One `commitTransaction`, abstracted so the retry loop can be tested without a server.
pub(crate) trait CommitOnce: Send {
    /// The error of one commit.
    type Error: Send;
    /// Whether the outcome of a failed commit is unknown (retry the commit itself).
    fn unknown_result(e: &Self::Error) -> bool;
    /// Sends the commit.
    fn commit_once(&mut self) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

impl CommitOnce for ClientSession {
    type Error = MongoError;

    fn unknown_result(e: &MongoError) -> bool {
        e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
    }

    async fn commit_once(&mut self) -> Result<(), MongoError> {
        self.commit_transaction().await
    }
}

/// Commits, retrying the commit while its result is unknown — with backoff, and only while
/// `deadline` has time left (then the last unknown-result error is returned). Each retry
/// counts in `attempts`.
pub(crate) async fn commit_with_retry<S: CommitOnce>(
    s: &mut S,
    deadline: &Deadline,
    backoff: &mut Backoff,
    attempts: &mut u32,
) -> Result<(), S::Error> {
    loop {
        match s.commit_once().await {
            Err(e) if S::unknown_result(&e) && !deadline.expired() => {
                *attempts += 1;
                tokio::time::sleep(backoff.delay(*attempts).min(deadline.remaining())).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A commit whose outcome is always unknown (the server never answers the commit's
    /// acknowledgement): the old loop retried it forever.
    struct NeverKnown {
        calls: u32,
    }

    impl CommitOnce for NeverKnown {
        type Error = &'static str;

        fn unknown_result(e: &&'static str) -> bool {
            *e == "unknown"
        }

        async fn commit_once(&mut self) -> Result<(), &'static str> {
            self.calls += 1;
            Err("unknown")
        }
    }

    #[tokio::test]
    async fn unknown_commit_results_are_retried_only_within_the_budget() {
        let deadline = Deadline::after(Duration::from_millis(50));
        let mut attempts = 1;
        let mut s = NeverKnown { calls: 0 };
        let mut backoff = crate::runtime::backoff(3);
        let run = commit_with_retry(&mut s, &deadline, &mut backoff, &mut attempts);
        let answer =
            tokio::time::timeout(Duration::from_secs(10), run).await.expect("the commit retry loop is bounded");
        assert_eq!(answer, Err("unknown"));
        assert!(s.calls > 1, "retried at least once: {}", s.calls);
        assert_eq!(attempts, s.calls, "every retry counted");
    }
}
