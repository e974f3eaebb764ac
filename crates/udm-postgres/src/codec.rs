//! Rows ⇄ UDM records: JSON documents in `text` columns, the columns beside them, and the
//! multi-row writes (`unnest` of one array per column) every write path shares.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;
use udm_core::counters::CounterDelta;
use udm_core::layout::collection_record_prefix;
use udm_core::ports::Committed;
use udm_core::{Checksum, Head, Result, VersionRecord};

use crate::error::{PgError, corrupt, to_i64};
use crate::pool::Conn;

/// A committed request: its result and payload fingerprint (the `doc` of `udm_requests`).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    pub(crate) done: Committed,
    pub(crate) fingerprint: Checksum,
}

/// UDM's JSON of a record.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| udm_core::Error::internal(format!("postgres: encoding: {e}")))
}

/// A stored JSON document.
pub(crate) fn decode<T: DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

/// Column `i` of a row.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize, what: &str) -> Result<T> {
    row.try_get(i).map_err(|e| corrupt(what, e))
}

/// The JSON document in column `i` of a row.
pub(crate) fn doc<T: DeserializeOwned>(row: &Row, i: usize, what: &str) -> Result<T> {
    decode(col::<&str>(row, i, what)?, what)
}

/// A collection's key in every table: its record prefix `<tenant>/<db>/<collection>/`.
pub(crate) fn prefix_of(ctx: &udm_core::RouteContext) -> String {
    collection_record_prefix(ctx)
}

/// Locks a collection's row for the rest of the transaction (creating it at CV 0 when
/// missing) and returns its CV.
pub(crate) const LOCK_COLLECTION: &str = "INSERT INTO udm_collections AS t (prefix) VALUES ($1) \
     ON CONFLICT (prefix) DO UPDATE SET prefix = EXCLUDED.prefix RETURNING t.cv";

/// Locks a collection's row if it exists (writes that never create one).
pub(crate) const LOCK_EXISTING_COLLECTION: &str = "SELECT cv FROM udm_collections WHERE prefix = $1 FOR UPDATE";

const UPSERT_HEADS: &str = "INSERT INTO udm_heads (prefix, oid, ov, deleted, shadow_at, indexed, doc) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bool[], $5::int8[], $6::text[], $7::text[]) \
     ON CONFLICT (prefix, oid) DO UPDATE SET ov = EXCLUDED.ov, deleted = EXCLUDED.deleted, \
     shadow_at = EXCLUDED.shadow_at, indexed = EXCLUDED.indexed, doc = EXCLUDED.doc";

const INSERT_VERSIONS: &str = "INSERT INTO udm_versions (prefix, oid, ov, cv, at, request_id, doc) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[], $7::text[])";

const INSERT_REQUESTS: &str = "INSERT INTO udm_requests (prefix, request_id, oid, doc) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])";

const ADD_COUNTERS: &str = "INSERT INTO udm_counters AS t (prefix, name, value) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) \
     ON CONFLICT (prefix, name) DO UPDATE SET value = t.value + EXCLUDED.value";

/// Heads to insert or replace (one per object).
#[derive(Default)]
pub(crate) struct HeadRows {
    prefix: Vec<String>,
    oid: Vec<String>,
    ov: Vec<i64>,
    deleted: Vec<bool>,
    shadow_at: Vec<Option<i64>>,
    indexed: Vec<String>,
    doc: Vec<String>,
}

impl HeadRows {
    pub(crate) fn push(&mut self, h: &Head) -> Result<()> {
        self.prefix.push(prefix_of(&h.key.ctx));
        self.oid.push(h.key.id.as_str().to_owned());
        self.ov.push(to_i64(h.ov.get(), "ov")?);
        self.deleted.push(h.system.deleted);
        self.shadow_at.push(h.dev_shadow.as_ref().map(|s| s.written_at.as_millis()));
        self.indexed.push(encode(&h.indexed)?);
        self.doc.push(encode(h)?);
        Ok(())
    }

    /// Writes them (nothing when empty).
    pub(crate) async fn write(&self, c: &Conn) -> Result<(), PgError> {
        if self.prefix.is_empty() {
            return Ok(());
        }
        let p: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
            [&self.prefix, &self.oid, &self.ov, &self.deleted, &self.shadow_at, &self.indexed, &self.doc];
        c.execute(UPSERT_HEADS, &p).await.map(drop)
    }
}

/// Version records to insert.
#[derive(Default)]
pub(crate) struct VersionRows {
    prefix: Vec<String>,
    oid: Vec<String>,
    ov: Vec<i64>,
    cv: Vec<i64>,
    at: Vec<i64>,
    request_id: Vec<String>,
    doc: Vec<String>,
}

impl VersionRows {
    pub(crate) fn push(&mut self, r: &VersionRecord) -> Result<()> {
        self.prefix.push(prefix_of(&r.key.ctx));
        self.oid.push(r.key.id.as_str().to_owned());
        self.ov.push(to_i64(r.ov.get(), "ov")?);
        self.cv.push(to_i64(r.cv.0, "cv")?);
        self.at.push(r.at.as_millis());
        self.request_id.push(r.provenance.request_id.as_str().to_owned());
        self.doc.push(encode(r)?);
        Ok(())
    }

    pub(crate) async fn write(&self, c: &Conn) -> Result<(), PgError> {
        if self.prefix.is_empty() {
            return Ok(());
        }
        let p: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
            [&self.prefix, &self.oid, &self.ov, &self.cv, &self.at, &self.request_id, &self.doc];
        c.execute(INSERT_VERSIONS, &p).await.map(drop)
    }
}

/// Request records to insert.
#[derive(Default)]
pub(crate) struct RequestRows {
    prefix: Vec<String>,
    request_id: Vec<String>,
    oid: Vec<String>,
    doc: Vec<String>,
}

impl RequestRows {
    /// The request record of the version `r` (its request id, in its collection).
    pub(crate) fn push(&mut self, r: &VersionRecord, rec: &RequestRecord) -> Result<()> {
        self.prefix.push(prefix_of(&r.key.ctx));
        self.request_id.push(r.provenance.request_id.as_str().to_owned());
        self.oid.push(r.key.id.as_str().to_owned());
        self.doc.push(encode(rec)?);
        Ok(())
    }

    pub(crate) async fn write(&self, c: &Conn) -> Result<(), PgError> {
        if self.prefix.is_empty() {
            return Ok(());
        }
        let p: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&self.prefix, &self.request_id, &self.oid, &self.doc];
        c.execute(INSERT_REQUESTS, &p).await.map(drop)
    }
}

/// Applies counter deltas with one statement: summed per counter first, and in
/// `(collection, name)` order, so concurrent writers lock counter rows in one order.
pub(crate) async fn add_counters<'a>(
    c: &Conn,
    deltas: impl IntoIterator<Item = &'a CounterDelta>,
) -> Result<(), PgError> {
    let mut sums: BTreeMap<(String, &str), i64> = BTreeMap::new();
    for d in deltas {
        let sum = sums.entry((prefix_of(&d.ctx), d.counter.as_str())).or_insert(0);
        *sum = sum.saturating_add(d.delta);
    }
    if sums.is_empty() {
        return Ok(());
    }
    let mut prefix = Vec::with_capacity(sums.len());
    let mut name = Vec::with_capacity(sums.len());
    let mut value = Vec::with_capacity(sums.len());
    for ((p, n), v) in sums {
        prefix.push(p);
        name.push(n);
        value.push(v);
    }
    c.execute(ADD_COUNTERS, &[&prefix, &name, &value]).await.map(drop)
}
