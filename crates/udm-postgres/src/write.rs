//! The write transactions of one collection: group commit, hard delete and prune. Each runs
//! inside [`in_txn!`](crate::txn) and first locks the collection's row (see the crate docs).

use std::collections::HashMap;

use udm_core::counters::CounterDelta;
use udm_core::ports::{Commit, Committed, HardDeleted, check_prune, plan_batch};
use udm_core::version::SnapshotRef;
use udm_core::{Checksum, Cv, Error, Head, ObjectKey, Ov, Result, VersionRecord};

use crate::codec::{
    HeadRows, LOCK_COLLECTION, LOCK_EXISTING_COLLECTION, RequestRecord, RequestRows, VersionRows, add_counters, col,
    doc, prefix_of,
};
use crate::error::{PgError, to_i64, to_u64};
use crate::pool::{Conn, Param};
use crate::txn::Step;

const READ_REQUESTS: &str = "SELECT request_id, doc FROM udm_requests WHERE prefix = $1 AND request_id = ANY($2)";
const READ_HEADS: &str = "SELECT doc FROM udm_heads WHERE prefix = $1 AND oid = ANY($2)";
const READ_HEAD: &str = "SELECT doc FROM udm_heads WHERE prefix = $1 AND oid = $2";
const SET_CV: &str = "UPDATE udm_collections SET cv = $2 WHERE prefix = $1";
const DELETE_HEAD: &str = "DELETE FROM udm_heads WHERE prefix = $1 AND oid = $2";
const DELETE_VERSIONS: &str = "DELETE FROM udm_versions WHERE prefix = $1 AND oid = $2 RETURNING ov, doc";
const DELETE_REQUESTS: &str = "DELETE FROM udm_requests WHERE prefix = $1 AND oid = $2";
const PRUNE_VERSIONS: &str =
    "DELETE FROM udm_versions WHERE prefix = $1 AND oid = $2 AND ov = ANY($3) RETURNING ov, doc";

/// One attempt of a group commit (see [`MetaStore::commit_many`](udm_core::ports::MetaStore::commit_many)):
/// lock the collection (its CV), read the batch's request records and heads, plan, write
/// the accepted versions with one statement per table.
pub(crate) async fn commit_many_in(c: &mut Conn, commits: &[Commit]) -> Result<Step<Vec<Result<Committed>>>, PgError> {
    let Some(first) = commits.first() else { return Ok(Step::Commit(Vec::new())) };
    let prefix = prefix_of(&first.key.ctx);
    let requests: Vec<&str> = commits.iter().map(|c| c.version.provenance.request_id.as_str()).collect();
    let mut oids: Vec<&str> = commits.iter().map(|c| c.key.id.as_str()).collect();
    oids.sort_unstable();
    oids.dedup();
    // One round trip: prepared first, they are sent in this order and the server runs them
    // in order, so both reads see the state after the lock is granted (READ COMMITTED: each
    // statement reads what was committed when it started).
    let c: &Conn = c;
    c.prepare(&[LOCK_COLLECTION, READ_REQUESTS, READ_HEADS]).await?;
    let (lock, by_request, by_oid): ([Param<'_>; 1], [Param<'_>; 2], [Param<'_>; 2]) =
        ([&prefix], [&prefix, &requests], [&prefix, &oids]);
    pipeline!(
        row = c.query_opt(LOCK_COLLECTION, &lock),
        request_rows = c.query(READ_REQUESTS, &by_request),
        head_rows = c.query(READ_HEADS, &by_oid),
    );
    let cv = match row {
        Some(r) => Cv(or_abort!(col::<i64>(&r, 0, "collection").and_then(|n| to_u64(n, "collection cv")))),
        None => return Ok(Step::Abort(Err(Error::internal("postgres: locking the collection returned nothing")))),
    };
    let mut recorded: HashMap<String, (Committed, Checksum)> = HashMap::new();
    for r in request_rows {
        let id = or_abort!(col::<String>(&r, 0, "request"));
        let rec: RequestRecord = or_abort!(doc(&r, 1, "request"));
        recorded.insert(id, (rec.done, rec.fingerprint));
    }
    let mut heads: HashMap<String, Head> = HashMap::new();
    for r in head_rows {
        let h: Head = or_abort!(doc(&r, 0, "head"));
        heads.insert(h.key.id.as_str().to_owned(), h);
    }
    let plan = or_abort!(plan_batch(
        commits,
        |r| recorded.get(r.as_str()).cloned(),
        |k| heads.get(k.id.as_str()).filter(|h| h.key == *k).cloned()
    ));
    let w = or_abort!(plan.finish(commits, cv));
    if w.accepted.is_empty() {
        return Ok(Step::Abort(Ok(w.answers)));
    }
    let (mut versions, mut reqs, mut new_heads) = (VersionRows::default(), RequestRows::default(), HeadRows::default());
    for a in &w.accepted {
        or_abort!(versions.push(&a.record));
        let rec = RequestRecord { done: a.done.clone(), fingerprint: a.fingerprint };
        or_abort!(reqs.push(&a.record, &rec));
    }
    for h in w.final_heads() {
        or_abort!(new_heads.push(h));
    }
    let last = or_abort!(to_i64(w.last_cv.0, "cv"));
    // One round trip for every write.
    let set_cv: [Param<'_>; 2] = [&prefix, &last];
    pipeline!(
        _cv = c.execute(SET_CV, &set_cv),
        _versions = versions.write(c),
        _requests = reqs.write(c),
        _heads = new_heads.write(c),
        _counters = add_counters(c, &w.counters),
    );
    Ok(Step::Commit(w.answers))
}

/// The snapshots of deleted version rows `(ov, doc)`, in OV order.
fn snapshots_of(rows: &[tokio_postgres::Row]) -> Result<Vec<SnapshotRef>> {
    let mut records = Vec::with_capacity(rows.len());
    for r in rows {
        records.push(doc::<VersionRecord>(r, 1, "version")?);
    }
    records.sort_by_key(|r| r.ov);
    Ok(records.into_iter().map(|r| r.snapshot).collect())
}

/// One attempt of a hard delete (see [`MetaStore::hard_delete`](udm_core::ports::MetaStore::hard_delete)).
pub(crate) async fn hard_delete_in(
    c: &mut Conn,
    key: &ObjectKey,
    counters: &[CounterDelta],
) -> Result<Step<HardDeleted>, PgError> {
    let (prefix, oid) = (prefix_of(&key.ctx), key.id.as_str());
    if c.query_opt(LOCK_EXISTING_COLLECTION, &[&prefix]).await?.is_none() {
        return Ok(Step::Commit(HardDeleted::default()));
    }
    let c: &Conn = c;
    let object: [Param<'_>; 2] = [&prefix, &oid];
    pipeline!(
        removed = c.execute(DELETE_HEAD, &object),
        rows = c.query(DELETE_VERSIONS, &object),
        _requests = c.execute(DELETE_REQUESTS, &object),
    );
    let head_removed = removed > 0;
    let snapshots = or_abort!(snapshots_of(&rows));
    if head_removed {
        add_counters(c, counters).await?;
    }
    Ok(Step::Commit(HardDeleted { snapshots, head_removed }))
}

/// One attempt of a prune (see [`MetaStore::prune`](udm_core::ports::MetaStore::prune)).
pub(crate) async fn prune_in(c: &mut Conn, key: &ObjectKey, ovs: &[Ov]) -> Result<Step<Vec<SnapshotRef>>, PgError> {
    let (prefix, oid) = (prefix_of(&key.ctx), key.id.as_str());
    if c.query_opt(LOCK_EXISTING_COLLECTION, &[&prefix]).await?.is_none() {
        return Ok(Step::Commit(Vec::new()));
    }
    let Some(row) = c.query_opt(READ_HEAD, &[&prefix, &oid]).await? else { return Ok(Step::Commit(Vec::new())) };
    let head: Head = or_abort!(doc(&row, 0, "head"));
    or_abort!(check_prune(&head, ovs));
    let mut gone = Vec::with_capacity(ovs.len());
    for ov in ovs.iter().filter(|ov| **ov < head.ov) {
        gone.push(or_abort!(to_i64(ov.get(), "ov")));
    }
    if gone.is_empty() {
        return Ok(Step::Commit(Vec::new()));
    }
    let rows = c.query(PRUNE_VERSIONS, &[&prefix, &oid, &gone]).await?;
    Ok(Step::Commit(or_abort!(snapshots_of(&rows))))
}
