//! [`MetaStore::import`](udm_core::ports::MetaStore::import) in a constant number of
//! statements per batch: the collections of the batch are locked (in prefix order, so two
//! imports never deadlock), the stored versions, request records and heads of the whole
//! batch are read with one statement each (a join with `unnest` of the batch's keys), the
//! batch is checked in memory in order (each version sees the ones before it, exactly as
//! one-by-one imports would), and the writes go out as one statement per table plus one CV
//! update per collection — all in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use udm_core::ports::{ImportOutcome, ImportedVersion};
use udm_core::{Error, Head, Result, VersionRecord};

use crate::codec::{HeadRows, LOCK_COLLECTION, RequestRecord, RequestRows, VersionRows, col, doc, prefix_of};
use crate::error::{PgError, to_i64};
use crate::pool::Conn;
use crate::txn::Step;

const READ_VERSIONS: &str = "SELECT v.prefix, v.oid, v.ov, v.doc FROM udm_versions v \
     JOIN unnest($1::text[], $2::text[], $3::int8[]) AS k(prefix, oid, ov) \
     ON v.prefix = k.prefix AND v.oid = k.oid AND v.ov = k.ov";
const READ_REQUESTS: &str = "SELECT r.prefix, r.request_id, r.doc FROM udm_requests r \
     JOIN unnest($1::text[], $2::text[]) AS k(prefix, request_id) \
     ON r.prefix = k.prefix AND r.request_id = k.request_id";
const READ_HEADS: &str = "SELECT h.prefix, h.oid, h.doc FROM udm_heads h \
     JOIN unnest($1::text[], $2::text[]) AS k(prefix, oid) ON h.prefix = k.prefix AND h.oid = k.oid";
const RAISE_CV: &str = "UPDATE udm_collections SET cv = GREATEST(cv, $2) WHERE prefix = $1";

/// `(collection prefix, object id)`.
type ObjKey = (String, String);

/// The request records of `keys` (`(prefix, request id)`).
async fn read_requests(
    c: &Conn,
    keys: &BTreeSet<(String, String)>,
) -> Result<Result<HashMap<(String, String), RequestRecord>>, PgError> {
    let (p, r): (Vec<&str>, Vec<&str>) = keys.iter().map(|(p, r)| (p.as_str(), r.as_str())).unzip();
    let mut out = HashMap::new();
    for row in c.query(READ_REQUESTS, &[&p, &r]).await? {
        let found =
            (|| Ok::<_, Error>(((col(&row, 0, "request")?, col(&row, 1, "request")?), doc(&row, 2, "request")?)))();
        match found {
            Ok((k, rec)) => out.insert(k, rec),
            Err(e) => return Ok(Err(e)),
        };
    }
    Ok(Ok(out))
}

/// One attempt of an import transaction (see the module docs).
pub(crate) async fn import_in(c: &mut Conn, versions: &[ImportedVersion]) -> Result<Step<ImportOutcome>, PgError> {
    let mut out = ImportOutcome::default();
    if versions.is_empty() {
        return Ok(Step::Commit(out));
    }
    let prefixes: BTreeSet<String> = versions.iter().map(|v| prefix_of(&v.record.key.ctx)).collect();
    for p in &prefixes {
        c.query_opt(LOCK_COLLECTION, &[p]).await?;
    }
    let mut keys: Vec<(ObjKey, i64)> = Vec::with_capacity(versions.len());
    for v in versions {
        let r = &v.record;
        let ov = or_abort!(to_i64(r.ov.get(), "ov"));
        keys.push(((prefix_of(&r.key.ctx), r.key.id.as_str().to_owned()), ov));
    }
    // The versions stored at the batch's (object, OV)s.
    let vp: Vec<&str> = keys.iter().map(|((p, _), _)| p.as_str()).collect();
    let vo: Vec<&str> = keys.iter().map(|((_, o), _)| o.as_str()).collect();
    let vov: Vec<i64> = keys.iter().map(|(_, ov)| *ov).collect();
    let mut stored: HashMap<(ObjKey, i64), VersionRecord> = HashMap::new();
    for row in c.query(READ_VERSIONS, &[&vp, &vo, &vov]).await? {
        let k = or_abort!((|| Ok::<_, Error>((
            (col(&row, 0, "version")?, col(&row, 1, "version")?),
            col(&row, 2, "version")?
        )))());
        stored.insert(k, or_abort!(doc(&row, 3, "version")));
    }
    // The request records of the batch's request ids and of the stored versions'.
    let mut wanted: BTreeSet<(String, String)> = versions
        .iter()
        .map(|v| (prefix_of(&v.record.key.ctx), v.record.provenance.request_id.as_str().to_owned()))
        .collect();
    wanted.extend(stored.values().map(|r| (prefix_of(&r.key.ctx), r.provenance.request_id.as_str().to_owned())));
    let mut requests = or_abort!(read_requests(c, &wanted).await?);
    // The heads of the batch's objects.
    let objs: BTreeSet<&ObjKey> = keys.iter().map(|(o, _)| o).collect();
    let (hp, ho): (Vec<&str>, Vec<&str>) = objs.iter().map(|(p, o)| (p.as_str(), o.as_str())).unzip();
    let mut heads: HashMap<ObjKey, Head> = HashMap::new();
    for row in c.query(READ_HEADS, &[&hp, &ho]).await? {
        let k = or_abort!((|| Ok::<_, Error>((col(&row, 0, "head")?, col(&row, 1, "head")?)))());
        heads.insert(k, or_abort!(doc(&row, 2, "head")));
    }

    let (mut new_versions, mut new_requests) = (VersionRows::default(), RequestRows::default());
    let mut moved: BTreeMap<ObjKey, Head> = BTreeMap::new();
    let mut max_cv: BTreeMap<String, i64> = BTreeMap::new();
    for (v, (obj, ov)) in versions.iter().zip(keys) {
        let r = &v.record;
        let at = (obj, ov);
        let found = stored.get(&at);
        let found_fp = found.and_then(|x| {
            requests.get(&(at.0.0.clone(), x.provenance.request_id.as_str().to_owned())).map(|q| q.fingerprint)
        });
        if or_abort!(v.check_existing(found.zip(found_fp.as_ref()))) {
            out.unchanged += 1;
            continue;
        }
        if found.is_some() {
            return Ok(Step::Abort(Err(Error::internal("postgres: a stored version has no request record"))));
        }
        let req_key = (at.0.0.clone(), r.provenance.request_id.as_str().to_owned());
        let recorded = requests.get(&req_key);
        or_abort!(v.check_request(recorded.map(|q| (&q.done, &q.fingerprint))));
        let head = moved.get(&at.0).or(heads.get(&at.0));
        if or_abort!(v.check_head(head)) {
            moved.insert(at.0.clone(), v.head());
            out.heads_moved += 1;
        }
        or_abort!(new_versions.push(r));
        if recorded.is_none() {
            let rec = RequestRecord { done: v.committed(), fingerprint: v.fingerprint };
            or_abort!(new_requests.push(r, &rec));
            requests.insert(req_key, rec);
        }
        let cv = or_abort!(to_i64(r.cv.0, "cv"));
        let top = max_cv.entry(at.0.0.clone()).or_insert(cv);
        *top = (*top).max(cv);
        stored.insert(at, r.clone());
        out.inserted += 1;
    }
    let mut new_heads = HeadRows::default();
    for h in moved.values() {
        or_abort!(new_heads.push(h));
    }
    let c: &Conn = c;
    let raises = async {
        for (prefix, cv) in &max_cv {
            c.execute(RAISE_CV, &[prefix, cv]).await?;
        }
        Ok::<_, PgError>(())
    };
    // One round trip for the writes (plus one per further collection).
    pipeline!(
        _versions = new_versions.write(c),
        _requests = new_requests.write(c),
        _heads = new_heads.write(c),
        _cvs = raises,
    );
    Ok(Step::Commit(out))
}
