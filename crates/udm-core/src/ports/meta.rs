//! The metadata store port: heads, version records, CVs, request ids, counters-in-commit.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::Checksum;
use crate::counters::CounterDelta;
use crate::error::{Error, Result};
use crate::id::{Name, ObjectId, ObjectKey, RequestId, RouteContext};
use crate::query::{HeadQuery, HistoryQuery, Page};
use crate::shadow::ShadowPending;
use crate::time::Timestamp;
use crate::version::{Cv, DevShadow, Head, Op, Ov, Provenance, SnapshotRef, SystemHeader, VersionRecord};

/// What [`MetaStore::commit_many_after`] waits for before it commits: the batch's snapshots
/// being durable.
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'static>>;

/// The version a commit adds (its snapshot is already durable in the blob store).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewVersion {
    /// Must be the expected head OV + 1 (or 1 for a create).
    pub ov: Ov,
    /// What it does.
    pub op: Op,
    /// Its timestamp (already made monotonic by the caller; must not precede the head's).
    pub at: Timestamp,
    /// Who, why, request id.
    pub provenance: Provenance,
    /// The durable snapshot.
    pub snapshot: SnapshotRef,
    /// For RESTORE: the OV copied.
    pub restored_from: Option<Ov>,
    /// Lifecycle header after this version.
    pub system: SystemHeader,
    /// Indexed props of this version.
    pub indexed: Map<String, Value>,
    /// The data, when small enough to keep in the head.
    pub inline: Option<Value>,
    /// Dev shadow, when enabled.
    pub dev_shadow: Option<DevShadow>,
}

/// One atomic commit of one version (serializable: the embedded store's write-ahead log
/// records it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Commit {
    /// The object.
    pub key: ObjectKey,
    /// The head OV this version follows; `None` means the object must not exist yet.
    pub expected: Option<Ov>,
    /// The version.
    pub version: NewVersion,
    /// Counter changes applied in the same transaction.
    pub counters: Vec<CounterDelta>,
    /// Fingerprint of the request's payload: a replay with the same request id must carry
    /// the same fingerprint, or it is a conflict.
    pub fingerprint: Checksum,
}

impl Commit {
    /// Checks the commit's own consistency (OV follows `expected`), before any IO.
    pub fn check(&self) -> Result<()> {
        let want = Ov::after(self.expected)?;
        if self.version.ov != want {
            return Err(Error::validation(
                "version.ov",
                format!("must be {want} after {:?}", self.expected.map(Ov::get)),
            ));
        }
        if (self.version.op == Op::Create) != self.expected.is_none() {
            return Err(Error::validation("version.op", "CREATE exactly when the object does not exist yet"));
        }
        Ok(())
    }

    /// Checks the commit against the current head (inside the store's transaction): the head
    /// must be at `expected`, and the new timestamp must not precede the head's.
    pub fn check_head(&self, head: Option<&Head>) -> Result<()> {
        let current = head.map(|h| h.ov);
        if current != self.expected {
            return Err(Error::version_conflict(self.expected, current));
        }
        if head.is_some_and(|h| self.version.at < h.at) {
            return Err(Error::validation("version.at", "timestamp precedes the head's"));
        }
        Ok(())
    }

    /// The version record, new head and result this commit produces once assigned `cv`.
    pub fn outcome(&self, cv: Cv) -> (VersionRecord, Head, Committed) {
        let v = &self.version;
        let record = VersionRecord {
            key: self.key.clone(),
            ov: v.ov,
            cv,
            op: v.op,
            at: v.at,
            provenance: v.provenance.clone(),
            snapshot: v.snapshot.clone(),
            restored_from: v.restored_from,
            deleted: v.system.deleted,
        };
        let head = Head {
            key: self.key.clone(),
            ov: v.ov,
            cv,
            op: v.op,
            at: v.at,
            system: v.system.clone(),
            provenance: v.provenance.clone(),
            indexed: v.indexed.clone(),
            snapshot: v.snapshot.clone(),
            inline: v.inline.clone(),
            dev_shadow: v.dev_shadow.clone(),
        };
        let done = Committed { key: self.key.clone(), ov: v.ov, cv, at: v.at, replayed: false };
        (record, head, done)
    }
}

/// The result of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Committed {
    /// The object.
    pub key: ObjectKey,
    /// The committed OV.
    pub ov: Ov,
    /// The CV it was assigned.
    pub cv: Cv,
    /// Its timestamp.
    pub at: Timestamp,
    /// True when this call replayed an earlier commit of the same request id and wrote nothing.
    pub replayed: bool,
}

impl Committed {
    /// The answer to a replay of this commit's request id: this result with
    /// `replayed = true` when the payload fingerprints match, else
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict). Every adapter answers replays
    /// through this, so they agree.
    pub fn replay(&self, recorded: &Checksum, given: &Checksum) -> Result<Committed> {
        if recorded == given {
            Ok(Committed { replayed: true, ..self.clone() })
        } else {
            Err(Error::new(
                crate::ErrorKind::Conflict,
                format!("request id was already used for a different write (committed as {} of {})", self.ov, self.key),
            ))
        }
    }
}

/// A version record to import with its **given** OV, CV and timestamp (rebuilding a metadata
/// store from the blob store, or moving objects between pairs), with what a head needs when
/// it becomes the object's head. Its request id is [`VersionRecord::provenance`]'s.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedVersion {
    /// The version record, exactly as it is to be stored.
    pub record: VersionRecord,
    /// The lifecycle header after this version.
    pub system: SystemHeader,
    /// Indexed props of this version.
    pub indexed: Map<String, Value>,
    /// The data, when small enough to keep in the head.
    pub inline: Option<Value>,
    /// The payload fingerprint of the request that wrote it (for replays of its request id).
    pub fingerprint: Checksum,
}

impl ImportedVersion {
    /// Checks its own consistency, before any IO: CV above zero, CREATE exactly at OV 1,
    /// `record.deleted` equal to `system.deleted`.
    pub fn check(&self) -> Result<()> {
        let r = &self.record;
        if r.cv == Cv::ZERO {
            return Err(Error::validation("record.cv", "an imported version needs a CV above 0"));
        }
        if (r.op == Op::Create) != (r.ov == Ov::FIRST) {
            return Err(Error::validation("record.op", "CREATE exactly at OV 1"));
        }
        if r.deleted != self.system.deleted {
            return Err(Error::validation("record.deleted", "must equal system.deleted"));
        }
        Ok(())
    }

    /// The head this version makes when it becomes the object's head (no dev shadow).
    pub fn head(&self) -> Head {
        let r = &self.record;
        Head {
            key: r.key.clone(),
            ov: r.ov,
            cv: r.cv,
            op: r.op,
            at: r.at,
            system: self.system.clone(),
            provenance: r.provenance.clone(),
            indexed: self.indexed.clone(),
            snapshot: r.snapshot.clone(),
            inline: self.inline.clone(),
            dev_shadow: None,
        }
    }

    /// The commit result its request id answers replays with (before `replayed` is set).
    pub fn committed(&self) -> Committed {
        let r = &self.record;
        Committed { key: r.key.clone(), ov: r.ov, cv: r.cv, at: r.at, replayed: false }
    }

    /// What to do given what the store holds at the same `(object, OV)`: `Ok(true)` when
    /// that record is this one (a no-op), `Ok(false)` when there is none, else
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict).
    pub fn check_existing(&self, stored: Option<(&VersionRecord, &Checksum)>) -> Result<bool> {
        match stored {
            None => Ok(false),
            Some((rec, fp)) if rec == &self.record && fp == &self.fingerprint => Ok(true),
            Some(_) => Err(Error::new(
                crate::ErrorKind::Conflict,
                format!("{} of {} is already stored with different content", self.record.ov, self.record.key),
            )),
        }
    }

    /// Checks its request id against the request record of the same id in its collection
    /// (`Ok` when there is none or it names this very version with the same fingerprint),
    /// else [`ErrorKind::Conflict`](crate::ErrorKind::Conflict).
    pub fn check_request(&self, recorded: Option<(&Committed, &Checksum)>) -> Result<()> {
        match recorded {
            Some((done, fp))
                if (&done.key, done.ov, done.cv, done.at)
                    != (&self.record.key, self.record.ov, self.record.cv, self.record.at)
                    || fp != &self.fingerprint =>
            {
                Err(Error::new(
                    crate::ErrorKind::Conflict,
                    format!(
                        "request id {} is already recorded for {} of {}",
                        self.record.provenance.request_id, done.ov, done.key
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Checks it against the object's current head, which it must keep ordered (per object,
    /// timestamps never decrease and CVs increase with the OV), and says whether it becomes
    /// the new head (its OV is above the head's, or there is no head). Out of order is
    /// [`ErrorKind::Validation`](crate::ErrorKind::Validation).
    pub fn check_head(&self, head: Option<&Head>) -> Result<bool> {
        let r = &self.record;
        let Some(h) = head else { return Ok(true) };
        let above = r.ov > h.ov;
        let ordered = if above { r.at >= h.at && r.cv > h.cv } else { r.at <= h.at && r.cv < h.cv };
        if r.ov != h.ov && !ordered {
            return Err(Error::validation(
                "record",
                format!("{} (cv {}) is out of order with the head {} (cv {})", r.ov, r.cv.0, h.ov, h.cv.0),
            ));
        }
        Ok(above)
    }
}

/// Refuses a prune naming the head's OV ([`MetaStore::prune`]): a validation error.
pub fn check_prune(head: &Head, ovs: &[Ov]) -> Result<()> {
    if ovs.contains(&head.ov) {
        return Err(Error::validation(
            "ovs",
            format!("{} is the head of {}: the head's version cannot be pruned", head.ov, head.key),
        ));
    }
    Ok(())
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    /// Version records inserted.
    pub inserted: u64,
    /// Versions already stored exactly so (no-ops).
    pub unchanged: u64,
    /// Heads created or moved to a higher OV.
    pub heads_moved: u64,
}

/// The cursor of a [`MetaStore::list_collections`] page that ended at `ctx`: `<db>/<collection>`.
pub fn collection_cursor(ctx: &RouteContext) -> String {
    format!("{}/{}", ctx.db, ctx.collection)
}

/// Parses a [`collection_cursor`]; anything else is a validation error.
pub fn parse_collection_cursor(s: &str) -> Result<(Name, Name)> {
    let bad = || Error::validation("after", "not a collection cursor");
    let (db, collection) = s.split_once('/').ok_or_else(bad)?;
    Ok((Name::new(db).map_err(|_| bad())?, Name::new(collection).map_err(|_| bad())?))
}

/// The reference page of [`MetaStore::list_collections`] over `ctxs` (any order, duplicates
/// allowed; each must have at least one head): those of `tenant` (and `db`) strictly after
/// the cursor, in `(db, collection)` order, at most `limit`.
pub fn select_collections(
    ctxs: impl IntoIterator<Item = RouteContext>,
    tenant: &Name,
    db: Option<&Name>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<RouteContext>> {
    crate::query::check_limit(limit)?;
    let after = after.map(parse_collection_cursor).transpose()?;
    let mut picked: Vec<RouteContext> = ctxs
        .into_iter()
        .filter(|c| &c.tenant == tenant && db.is_none_or(|d| &c.db == d))
        .filter(|c| after.as_ref().is_none_or(|(d, n)| (&c.db, &c.collection) > (d, n)))
        .collect();
    picked.sort();
    picked.dedup();
    Ok(Page::from_overfetch(picked, limit, collection_cursor))
}

/// Parses a [`MetaStore::list_objects`] cursor (an object id); anything else is a validation
/// error.
pub fn parse_object_cursor(s: &str) -> Result<crate::id::ObjectId> {
    crate::id::ObjectId::with_max(s, crate::id::MAX_STORED_ID_BYTES)
        .map_err(|_| Error::validation("after", "not an object cursor"))
}

/// What a hard delete removed from the metadata store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardDeleted {
    /// Version records removed, with their snapshots (the caller deletes those blobs next).
    pub snapshots: Vec<SnapshotRef>,
    /// Whether a head was removed.
    pub head_removed: bool,
}

/// Which dev shadows a shrink removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShrinkPolicy {
    /// Shadows written before this instant are expired.
    pub expired_before: Timestamp,
    /// Shadows larger than this are removed.
    pub max_bytes: u64,
    /// Report only; remove nothing.
    pub dry_run: bool,
}

/// What a shrink removed (or would remove, in a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShrinkStats {
    /// Heads with a shadow looked at.
    pub scanned: u64,
    /// Shadows removed.
    pub removed: u64,
    /// Bytes those shadows held.
    pub bytes_freed: u64,
}

/// Progress record of a long job (e.g. a collection restore), so a rerun resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Stable job id (e.g. derived from the collection and target).
    pub id: String,
    /// Job-specific state.
    pub state: Value,
    /// Whether it finished.
    pub done: bool,
}

/// The metadata store: heads, version records, collection versions, request ids and
/// (when counters live with the metadata) counters.
///
/// Implementations: in-memory (udm-testkit), embedded, MongoDB. All of them pass the
/// conformance suite in `udm_testkit::conformance`.
#[async_trait]
pub trait MetaStore: Send + Sync + fmt::Debug {
    /// Commits one version **atomically**: either all of the following happen or none:
    /// 1. if `request_id` was committed before in this collection: with the same
    ///    fingerprint, return that result with `replayed = true` and change nothing; with a
    ///    different one, fail with [`ErrorKind::Conflict`](crate::ErrorKind::Conflict);
    /// 2. the head is still at `expected` (absent for `None`), else
    ///    [`ErrorKind::VersionConflict`](crate::ErrorKind::VersionConflict) carrying the current OV;
    /// 3. the collection's CV advances by one and is assigned to the version (so CV order is
    ///    commit order);
    /// 4. the version record is inserted, the head replaced, the request id recorded and the
    ///    counter deltas applied.
    ///
    /// An invalid commit ([`Commit::check`]) or a timestamp earlier than the head's is
    /// [`ErrorKind::Validation`](crate::ErrorKind::Validation). Transient backend failures are
    /// retryable [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable); after one, the
    /// commit may or may not have happened — replaying it with the same request id is safe.
    ///
    /// Provided: a [`MetaStore::commit_many`] of one.
    async fn commit(&self, commit: Commit) -> Result<Committed> {
        commit.check()?;
        let mut answers = self.commit_many(vec![commit]).await?;
        answers.pop().unwrap_or_else(|| Err(Error::internal("a batch of one answered nothing")))
    }

    /// Group commit: commits a batch of versions of **one collection** in **one** atomic
    /// transaction, as if each commit ran after the one before it (see
    /// [`plan_batch`](super::plan_batch)), and answers **per item**, in batch order:
    /// - an item whose request id was committed before — in the store or by an earlier item
    ///   of this batch — is answered like [`MetaStore::commit`] answers a replay (same
    ///   fingerprint: the earlier result with `replayed = true`; else `Conflict`);
    /// - an item that fails [`Commit::check`] or its head check (an earlier item of the batch
    ///   may have moved that head) is answered with that error and writes nothing;
    /// - every other item commits: consecutive CVs in batch order, records, heads, request
    ///   ids and counters — all of them or, on a store failure, none (the outer `Err`, a
    ///   retryable `Unavailable` after which replaying the batch is safe).
    ///
    /// A batch of several collections or of more than [`MAX_BATCH`](super::MAX_BATCH)
    /// commits is a validation error (outer); an empty batch commits nothing.
    async fn commit_many(&self, commits: Vec<Commit>) -> Result<Vec<Result<Committed>>>;

    /// [`MetaStore::commit_many`] that may run its transaction's statements while the
    /// batch's snapshots are still being written, and **commits only after `durable`
    /// resolves `Ok`** — so a committed version still always has a durable snapshot, and
    /// only the commit waits for it. If `durable` fails, nothing is committed and its error
    /// is the answer. The default waits for `durable`, then commits; a store whose commit
    /// is several round trips overlaps them with the wait.
    async fn commit_many_after(&self, commits: Vec<Commit>, durable: Durable) -> Result<Vec<Result<Committed>>> {
        durable.await?;
        self.commit_many(commits).await
    }

    /// The earlier result of `request_id` in this collection (`replayed = true`) and the
    /// fingerprint it was committed with, if it was committed.
    async fn find_request(&self, ctx: &RouteContext, request_id: &RequestId) -> Result<Option<(Committed, Checksum)>>;

    /// The head of one object (deleted ones included; check [`Head::is_deleted`]).
    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>>;

    /// Version `ov` of one object.
    async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>>;

    /// The last version with timestamp `<= at` (ties: the highest OV); `None` before the first.
    async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>>;

    /// The last version with CV `<= cv`; `None` if the object had no version by then.
    async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>>;

    /// A page of one object's version records, in OV order (see [`HistoryQuery`]).
    async fn history(&self, key: &ObjectKey, query: &HistoryQuery) -> Result<Page<VersionRecord>>;

    /// A page of heads of one collection, filtered on indexed props, sorted, with a cursor.
    /// An unknown or malformed cursor is a validation error.
    async fn list_heads(&self, ctx: &RouteContext, query: &HeadQuery) -> Result<Page<Head>>;

    /// The collection's current CV ([`Cv::ZERO`] before the first commit).
    async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv>;

    /// Removes dev shadows per `policy` in `ctx` (or everywhere), reporting what it removed.
    async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, policy: &ShrinkPolicy) -> Result<ShrinkStats>;

    /// Irreversibly removes the head, every version record and every request record of one
    /// object, applying `counters` in the same transaction. Returns the removed snapshots.
    /// Removing an absent object removes nothing and is not an error.
    async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted>;

    /// A page of the collections of `tenant` (only those of `db` when given) that hold at
    /// least one head (deleted ones count; a collection whose objects were all hard-deleted
    /// does not), in `(db, collection)` order, at most `limit` of them, strictly after the
    /// cursor `after` (a [`Page::next`] of an earlier page: [`collection_cursor`]). A
    /// malformed cursor or a limit outside `1..=1000` is a validation error. Other tenants'
    /// collections never appear. Cost: O(collections of the tenant).
    async fn list_collections(
        &self,
        tenant: &Name,
        db: Option<&Name>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RouteContext>>;

    /// A page of the ids of every object of `ctx` that has a head (soft-deleted ones
    /// included, hard-deleted ones not), in id order, at most `limit`, strictly after the
    /// cursor `after` (a [`Page::next`] of an earlier page: the last id returned). A
    /// malformed cursor or a limit outside `1..=1000` is a validation error.
    async fn list_objects(&self, ctx: &RouteContext, after: Option<&str>, limit: usize) -> Result<Page<ObjectId>>;

    /// Imports version records with their **given** OV, CV and timestamp, **atomically** (all
    /// or none), in order:
    /// - a version already stored at the same `(object, OV)` with the same record and
    ///   fingerprint is a no-op (`unchanged`); a different one is
    ///   [`ErrorKind::Conflict`](crate::ErrorKind::Conflict);
    /// - its request id is recorded (so replays of it answer as after a commit) unless
    ///   recorded already; recorded for another version (or fingerprint) it is a `Conflict`;
    /// - the object's head becomes this version when its OV is above the head's (or there is
    ///   no head); versions must stay ordered with the head (timestamps never decreasing, CVs
    ///   increasing with the OV), else [`ErrorKind::Validation`](crate::ErrorKind::Validation);
    /// - the collection's CV becomes the larger of its current CV and the imported CV (it
    ///   never moves backwards).
    ///
    /// Counters are not touched. An invalid version ([`ImportedVersion::check`]) is a
    /// validation error. Re-importing a pruned version stores it again. Keep batches modest
    /// (≤ 1,000): some stores run the whole batch as one transaction.
    async fn import(&self, versions: Vec<ImportedVersion>) -> Result<ImportOutcome>;

    /// Removes the version records of `ovs` of one object, atomically, and returns their
    /// snapshots in OV order (the caller deletes those blobs next). OVs not stored (never
    /// committed, or pruned already) are skipped. The head's version can never be pruned:
    /// naming it is [`ErrorKind::Validation`](crate::ErrorKind::Validation) and removes
    /// nothing. Request records are kept (replays still answer with the original result).
    /// Every read stays correct on the gaps left: `version` of a pruned OV is `None`,
    /// `version_at`/`version_at_cv` answer the last remaining version satisfying them, and
    /// `history` skips the pruned OVs.
    async fn prune(&self, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>>;

    /// A page of the collections whose shadow commit log may lag (committed versions with a
    /// CV above the collection's logged watermark, [`crate::shadow`]), of every tenant, in
    /// record-prefix order ([`collection_record_prefix`](crate::layout::collection_record_prefix)),
    /// strictly after the cursor `after` (a [`Page::next`]), at most `limit` (`1..=1000`,
    /// else a validation error). After a crash, these are what a repair pass flushes. A
    /// collection may stay listed until a flush confirms it caught up.
    async fn shadow_backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>>;

    /// The committed versions of `ctx` the shadow log lacks: those with a CV above the logged
    /// watermark, up to `limit` CVs past it (`1..=1000`, else a validation error), in CV
    /// order, each with the fingerprint of its request.
    async fn shadow_pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending>;

    /// Records that the shadow log of `ctx` holds every committed version up to CV `upto`.
    /// The watermark never moves backwards (a lower `upto` is a no-op).
    async fn shadow_logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()>;

    /// Stores (replaces) a job's progress record.
    async fn save_job(&self, job: &JobRecord) -> Result<()>;

    /// Loads a job's progress record.
    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>>;

    /// Checks the store answers (health).
    async fn ping(&self) -> Result<()>;
}
