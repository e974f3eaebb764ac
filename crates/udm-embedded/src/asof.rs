//! The **as-of index**: as of an instant or a CV in two table lookups, whatever the
//! history's length.
//!
//! Two tables, written in the transaction that writes (or imports, prunes, hard-deletes) a
//! version record:
//! - [`AS_OF_AT`]: `(object record id, at millis, ov)` → `()`, so key order per object is
//!   time order (ties by OV);
//! - [`AS_OF_CV`]: `(object record id, cv)` → `ov`.
//!
//! As of `t`: one reverse range seek to the last key `≤ (object, t, u64::MAX)` gives the OV,
//! one `get` reads the version — a B-tree descent each, O(log n) inside redb, with no scan
//! and no search in the caller. A record the index names but the version table lacks (only
//! possible if the file was edited behind the store's back) is skipped: the seek continues
//! to the previous key.

use std::sync::atomic::{AtomicU64, Ordering};

use redb::{TableDefinition, WriteTransaction};
use udm_core::layout::{head_record_id, version_record_id};
use udm_core::{Cv, ObjectKey, Ov, Result, Timestamp, VersionRecord};

use crate::{VERSIONS, db_err};

/// `(object record id, at millis, ov)` → `()`.
pub(crate) const AS_OF_AT: TableDefinition<'static, (&'static str, i64, u64), ()> = TableDefinition::new("as_of_at");
/// `(object record id, cv)` → ov.
pub(crate) const AS_OF_CV: TableDefinition<'static, (&'static str, u64), u64> = TableDefinition::new("as_of_cv");

/// "At or before" an instant or a CV.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AsOf {
    At(Timestamp),
    Cv(Cv),
}

/// Adds `r` to the index.
pub(crate) fn index_in(tx: &WriteTransaction, r: &VersionRecord) -> Result<()> {
    let obj = head_record_id(&r.key);
    let ov = r.ov.get();
    tx.open_table(AS_OF_AT).map_err(db_err)?.insert((obj.as_str(), r.at.as_millis(), ov), ()).map_err(db_err)?;
    tx.open_table(AS_OF_CV).map_err(db_err)?.insert((obj.as_str(), r.cv.0), ov).map_err(db_err)?;
    Ok(())
}

/// Removes `r` from the index (prune, hard delete).
pub(crate) fn unindex_in(tx: &WriteTransaction, r: &VersionRecord) -> Result<()> {
    let obj = head_record_id(&r.key);
    tx.open_table(AS_OF_AT).map_err(db_err)?.remove((obj.as_str(), r.at.as_millis(), r.ov.get())).map_err(db_err)?;
    tx.open_table(AS_OF_CV).map_err(db_err)?.remove((obj.as_str(), r.cv.0)).map_err(db_err)?;
    Ok(())
}

/// The last version of `key` at or before `cond`, or `None`: one reverse seek in the index
/// and one `get` per candidate (one, unless records went missing behind the store's back).
pub(crate) fn as_of_in(
    tx: &redb::ReadTransaction,
    key: &ObjectKey,
    cond: AsOf,
    reads: &AtomicU64,
) -> Result<Option<VersionRecord>> {
    let obj = head_record_id(key);
    let versions = tx.open_table(VERSIONS).map_err(db_err)?;
    // A candidate counts only if it is stored and satisfies the condition itself.
    let lookup = |ov: u64| -> Result<Option<VersionRecord>> {
        reads.fetch_add(1, Ordering::Relaxed);
        let Some(raw) = versions.get(version_record_id(key, Ov::new(ov)?).as_str()).map_err(db_err)? else {
            return Ok(None);
        };
        let v: VersionRecord = crate::pack::unpack(raw.value(), "version")?;
        let holds = match cond {
            AsOf::At(t) => v.at <= t,
            AsOf::Cv(cv) => v.cv <= cv,
        };
        Ok(holds.then_some(v))
    };
    reads.fetch_add(1, Ordering::Relaxed);
    match cond {
        AsOf::At(t) => {
            let table = tx.open_table(AS_OF_AT).map_err(db_err)?;
            let range = (obj.as_str(), i64::MIN, 0)..=(obj.as_str(), t.as_millis(), u64::MAX);
            for row in table.range(range).map_err(db_err)?.rev() {
                let (k, _) = row.map_err(db_err)?;
                if let Some(v) = lookup(k.value().2)? {
                    return Ok(Some(v));
                }
            }
        }
        AsOf::Cv(cv) => {
            let table = tx.open_table(AS_OF_CV).map_err(db_err)?;
            for row in table.range((obj.as_str(), 0)..=(obj.as_str(), cv.0)).map_err(db_err)?.rev() {
                let (_, ov) = row.map_err(db_err)?;
                if let Some(v) = lookup(ov.value())? {
                    return Ok(Some(v));
                }
            }
        }
    }
    Ok(None)
}
