//! Restores (append-only) and hard delete.
//!
//! A collection restore walks every object of the collection (deleted ones included), in id
//! order, page by page. For each it finds the version current at the target (by instant, or by
//! CV when the collection lives on one pair) and appends a RESTORE version with that data — or
//! a DELETE when the object did not exist yet — unless the object already matches. Progress is
//! saved after every page as a job record keyed by the collection and target; every version it
//! writes uses a request id derived from the job and the object, so rerunning after an
//! interruption resumes where it stopped and never writes a version twice.

use serde::{Deserialize, Serialize};
use serde_json::json;
use udm_core::ports::JobRecord;
use udm_core::query::HeadQuery;
use udm_core::{Checksum, Cv, Error, ErrorKind, ObjectKey, RequestId, Result, Timestamp, VersionRecord};

use crate::options::{Collection, Confirm, Target, WriteOpts};
use crate::read::Lookup;
use crate::record::{HardDeleteReport, RestoreOutcome};
use crate::write::{Change, Intent, restore_fingerprint};

/// What a collection restore targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectionTarget {
    /// The collection as of this CV (the collection must live on one pair).
    Cv(Cv),
    /// The collection as of this instant.
    At(Timestamp),
}

/// Progress of a collection restore (reported after every object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreProgress {
    /// Objects looked at.
    pub processed: u64,
    /// RESTORE versions written.
    pub restored: u64,
    /// Objects logically deleted (they did not exist at the target).
    pub deleted: u64,
    /// Objects already equal to the target.
    pub unchanged: u64,
}

/// The result of a collection restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionRestoreReport {
    /// The job id (progress record).
    pub job: String,
    /// Final counts.
    pub progress: RestoreProgress,
    /// Whether this call resumed an interrupted run.
    pub resumed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct JobState {
    target: CollectionTarget,
    /// Per pair: the cursor after the last finished page (`None` = start; pair done when `done`).
    cursors: Vec<Option<String>>,
    done_pairs: Vec<bool>,
    progress: RestoreProgress,
    generation: u64,
}

/// Objects per progress checkpoint.
const PAGE: usize = 100;

impl Collection {
    pub(crate) async fn restore_one(
        &self,
        key: ObjectKey,
        target: Target,
        request: RequestId,
        opts: &WriteOpts,
    ) -> Result<RestoreOutcome> {
        self.inner.check_open()?;
        let named = json!(target);
        // A replay comes first and answers what the first call did, whatever happened since.
        if opts.request_id.is_some()
            && let Some(done) = self.replay(&request, &restore_fingerprint(&key, &named)).await?
        {
            return Ok(RestoreOutcome::Restored(done));
        }
        let lookup = match target {
            Target::Ov(ov) => Lookup::Ov(ov),
            Target::At(t) => Lookup::At(t),
        };
        let (pair, rec) = self.version_record(&key, lookup, crate::options::ReadSource::Primary).await?;
        self.restore_to(pair, key, Some(rec), &named, request, opts).await
    }

    /// Makes `key` equal `target` (or deleted when `None`), appending one version if needed.
    /// `named` is the target as the caller named it (the write's fingerprint).
    pub(crate) async fn restore_to(
        &self,
        pair: usize,
        key: ObjectKey,
        target: Option<VersionRecord>,
        named: &serde_json::Value,
        request: RequestId,
        opts: &WriteOpts,
    ) -> Result<RestoreOutcome> {
        let head = async {
            self.inner.pairs[pair].meta.head(&key).await?.ok_or_else(|| Error::not_found(format!("object {key}")))
        };
        let Some(target) = target else {
            let head = head.await?;
            if head.is_deleted() {
                return Ok(RestoreOutcome::Unchanged { ov: head.ov });
            }
            let intent = Intent::restore(key, Change::Delete, named, request, opts).starting_from(pair, head);
            let w = self.write(intent).await?;
            return Ok(RestoreOutcome::Restored(w));
        };
        // The head and the target's snapshot at once: neither needs the other.
        let (head, env) = tokio::try_join!(head, self.load_snapshot(pair, &target.snapshot))?;
        if head.snapshot.checksum == env.checksum && head.is_deleted() == target.deleted {
            return Ok(RestoreOutcome::Unchanged { ov: head.ov });
        }
        let change = Change::Restore { data: env.data, from: target.ov, deleted: target.deleted };
        let intent = Intent::restore(key, change, named, request, opts).starting_from(pair, head);
        self.write(intent).await.map(RestoreOutcome::Restored)
    }

    /// Restores the whole collection to `target`, resumably; `progress` is called after each object.
    pub async fn restore_collection(
        &self,
        target: CollectionTarget,
        opts: WriteOpts,
        mut progress: impl FnMut(&RestoreProgress),
    ) -> Result<CollectionRestoreReport> {
        if matches!(target, CollectionTarget::Cv(_)) && self.single_pair().is_none() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this collection spans several pairs, each numbering its own CVs: restore it by instant",
            ));
        }
        let job_id = format!("restore/{}/{}", self.ctx, Checksum::of_json(&json!(target)));
        let home = &self.inner.pairs[0].meta;
        let (mut state, resumed) = match home.load_job(&job_id).await? {
            Some(j) if !j.done => (decode_state(&j)?, true),
            Some(j) => (fresh(target, self.inner.pairs.len(), decode_state(&j)?.generation + 1), false),
            None => (fresh(target, self.inner.pairs.len(), 0), false),
        };
        // Retention leaves the collection alone until this restore finishes.
        crate::retention::mark_restoring(&**home, &self.ctx, &job_id, true).await?;
        for pair in 0..self.inner.pairs.len() {
            while !state.done_pairs[pair] {
                let q = HeadQuery {
                    include_deleted: true,
                    limit: PAGE,
                    after: state.cursors[pair].clone(),
                    ..HeadQuery::default()
                };
                let page = self.inner.pairs[pair].meta.list_heads(&self.ctx, &q).await?;
                for head in &page.items {
                    let request = job_request(state.generation, &job_id, &head.key)?;
                    let lookup = match target {
                        CollectionTarget::Cv(cv) => Lookup::Cv(cv),
                        CollectionTarget::At(t) => Lookup::At(t),
                    };
                    let rec = lookup.run(&*self.inner.pairs[pair].meta, &head.key).await?;
                    let existed = rec.is_some();
                    // A known request id: a resumed run finds it committed and replays.
                    let object_opts = WriteOpts { request_id: Some(request.to_string()), ..opts.clone() };
                    let named = json!({"job": job_id});
                    match self.restore_to(pair, head.key.clone(), rec, &named, request, &object_opts).await? {
                        RestoreOutcome::Unchanged { .. } => state.progress.unchanged += 1,
                        RestoreOutcome::Restored(_) if existed => state.progress.restored += 1,
                        RestoreOutcome::Restored(_) => state.progress.deleted += 1,
                    }
                    state.progress.processed += 1;
                    progress(&state.progress);
                }
                state.cursors[pair] = page.next.clone();
                state.done_pairs[pair] = page.next.is_none();
                save(home, &job_id, &state, false).await?;
            }
        }
        save(home, &job_id, &state, true).await?;
        crate::retention::mark_restoring(&**home, &self.ctx, &job_id, false).await?;
        Ok(CollectionRestoreReport { job: job_id, progress: state.progress, resumed })
    }

    pub(crate) async fn hard_delete_key(&self, key: ObjectKey, confirm: Confirm) -> Result<HardDeleteReport> {
        self.inner.check_open()?;
        if !self.inner.config.hard_delete.enabled {
            return Err(Error::new(ErrorKind::Unsupported, "hard delete is disabled (hard_delete.enabled = false)"));
        }
        if confirm != Confirm::Yes {
            return Err(Error::new(ErrorKind::NotConfirmed, "hard delete is irreversible: pass Confirm::Yes"));
        }
        let (pair, head) = match self.locate(&key).await {
            Ok(found) => found,
            // No metadata left — but an earlier hard delete may have stopped between removing
            // the metadata and the blobs: finish that (blobs live on the routed pair).
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let p = &self.inner.pairs[self.inner.router.route(&key.ctx, &key.id).index];
                // Every version it had is at or below the collection's CV now.
                let cv = p.meta.collection_cv(&key.ctx).await?;
                self.put_tombstone(&*p.json, &key, cv).await?;
                return Ok(HardDeleteReport {
                    snapshots: delete_prefix(&*p.json, &self.inner.layout.object_prefix(&key)).await?,
                    content: delete_prefix(&*p.content, &self.inner.layout.content_prefix(&key)).await?,
                    ..HardDeleteReport::default()
                });
            }
            Err(e) => return Err(e),
        };
        let p = &self.inner.pairs[pair];
        let live = if head.is_deleted() { 0 } else { -1 };
        let counters = vec![udm_core::counters::CounterDelta {
            ctx: key.ctx.clone(),
            counter: udm_core::counters::LIVE.into(),
            delta: live,
        }];
        let removed = p.meta.hard_delete(&key, if live == 0 { vec![] } else { counters }).await?;
        // Metadata first: from here no committed version points at these blobs.
        let mut report =
            HardDeleteReport { existed: removed.head_removed, versions: removed.snapshots.len(), ..Default::default() };
        self.put_tombstone(&*p.json, &key, head.cv).await?;
        report.snapshots = delete_prefix(&*p.json, &self.inner.layout.object_prefix(&key)).await?;
        report.content = delete_prefix(&*p.content, &self.inner.layout.content_prefix(&key)).await?;
        Ok(report)
    }
}

impl Collection {
    /// Leaves the tombstone of a hard delete (see [`udm_core::layout::Layout::tombstone`]),
    /// never lowering one already there.
    async fn put_tombstone(
        &self,
        json: &dyn udm_core::ports::BlobStore,
        key: &ObjectKey,
        cv: udm_core::Cv,
    ) -> Result<()> {
        let at = self.inner.layout.tombstone(key);
        let before = crate::rebuild::tombstone_cv(json, &at).await?;
        if before.is_some_and(|b| b >= cv) {
            return Ok(());
        }
        let body = serde_json::to_vec(&json!({"cv": cv.0})).map_err(|e| Error::internal(e.to_string()))?;
        json.put(&at, body, &udm_core::ports::PutOptions::overwrite("application/json")).await.map(|_| ())
    }
}

/// Deletes every blob under `prefix`; returns how many of them were snapshots or content
/// (an object's index segments and markers are deleted too, uncounted).
async fn delete_prefix(blobs: &dyn udm_core::ports::BlobStore, prefix: &str) -> Result<usize> {
    let mut n = 0;
    loop {
        let page = blobs.list(prefix, None, udm_core::ports::MAX_LIST_PAGE).await?;
        if page.keys.is_empty() {
            return Ok(n);
        }
        for k in &page.keys {
            blobs.delete(k).await?;
            n += usize::from(!k.contains("/index/"));
        }
    }
}

fn fresh(target: CollectionTarget, pairs: usize, generation: u64) -> JobState {
    JobState {
        target,
        cursors: vec![None; pairs],
        done_pairs: vec![false; pairs],
        progress: RestoreProgress::default(),
        generation,
    }
}

fn decode_state(j: &JobRecord) -> Result<JobState> {
    serde_json::from_value(j.state.clone()).map_err(|e| Error::internal(format!("restore job {}: {e}", j.id)))
}

async fn save(
    meta: &std::sync::Arc<dyn udm_core::ports::MetaStore>,
    id: &str,
    state: &JobState,
    done: bool,
) -> Result<()> {
    let state = serde_json::to_value(state).map_err(|e| Error::internal(e.to_string()))?;
    meta.save_job(&JobRecord { id: id.to_owned(), state, done }).await
}

/// The request id of the version a restore job writes for one object: deterministic, so a
/// resumed run replays instead of writing twice; short, whatever the id's length.
fn job_request(generation: u64, job_id: &str, key: &ObjectKey) -> Result<RequestId> {
    let digest = Checksum::of_json(&json!([job_id, key.id.as_str()])).to_string();
    RequestId::new(format!("restore-{generation}-{}", &digest[..32]))
}
