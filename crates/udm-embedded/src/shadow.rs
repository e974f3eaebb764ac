//! The shadow commit log's bookkeeping on redb ([`udm_core::shadow`]): the [`BY_CV`] index
//! that lists a collection's versions in CV order and the [`LOGGED`] watermark.

use udm_core::layout::{collection_record_prefix, parse_collection_record_prefix};
use udm_core::query::Page;
use udm_core::shadow::{LogEntry, ShadowPending};
use udm_core::{Cv, Result, RouteContext, VersionRecord};

use crate::meta::{RequestRecord, get_packed, request_key};
use crate::{BY_CV, CVS, LOGGED, REQUESTS, VERSIONS, db_err};

/// The [`BY_CV`] key of CV `cv` of the collection with record prefix `prefix`.
pub(crate) fn cv_key(prefix: &str, cv: Cv) -> String {
    format!("{prefix}{:020}", cv.0)
}

/// The versions of one collection with a CV in `after + 1 ..= upto` (see
/// [`MetaStore::shadow_pending`]).
pub(crate) fn pending_in(tx: &redb::ReadTransaction, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
    let prefix = collection_record_prefix(ctx);
    let after =
        Cv(tx.open_table(LOGGED).map_err(db_err)?.get(prefix.as_str()).map_err(db_err)?.map_or(0, |v| v.value()));
    let cv = Cv(tx.open_table(CVS).map_err(db_err)?.get(prefix.as_str()).map_err(db_err)?.map_or(0, |v| v.value()));
    let upto = Cv(cv.0.min(after.0.saturating_add(limit as u64))).max(after);
    let mut entries = Vec::new();
    if upto > after {
        let by_cv = tx.open_table(BY_CV).map_err(db_err)?;
        let versions = tx.open_table(VERSIONS).map_err(db_err)?;
        let requests = tx.open_table(REQUESTS).map_err(db_err)?;
        let (from, to) = (cv_key(&prefix, Cv(after.0 + 1)), cv_key(&prefix, upto));
        for item in by_cv.range(from.as_str()..=to.as_str()).map_err(db_err)? {
            let (_, vid) = item.map_err(db_err)?;
            // Pruned or hard-deleted since: not in the log.
            let Some(record) = get_packed::<VersionRecord>(&versions, vid.value(), "version")? else { continue };
            let req: Option<RequestRecord> =
                get_packed(&requests, &request_key(ctx, &record.provenance.request_id), "request")?;
            let fingerprint = req.map(|r| r.fingerprint).ok_or_else(|| {
                udm_core::Error::internal(format!("{} of {} has no request record", record.ov, record.key))
            })?;
            entries.push(LogEntry { record, fingerprint });
        }
    }
    Ok(ShadowPending { after, upto, entries })
}

/// A page of the collections whose CV is above their logged watermark, after the record
/// prefix `after`.
pub(crate) fn backlog_in(tx: &redb::ReadTransaction, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
    use std::ops::Bound;
    let logged = tx.open_table(LOGGED).map_err(db_err)?;
    let cvs = tx.open_table(CVS).map_err(db_err)?;
    let from = match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Unbounded,
    };
    let mut out = Vec::new();
    for item in cvs.range::<&str>((from, Bound::Unbounded)).map_err(db_err)? {
        let (prefix, cv) = item.map_err(db_err)?;
        let done = logged.get(prefix.value()).map_err(db_err)?.map_or(0, |v| v.value());
        if done < cv.value()
            && let Some(ctx) = parse_collection_record_prefix(prefix.value())
        {
            out.push(ctx);
            if out.len() > limit {
                break;
            }
        }
    }
    Ok(Page::from_overfetch(out, limit, collection_record_prefix))
}
