//! How UDM records are stored as MongoDB documents.
//!
//! Each stored document has a few **query fields** (what filters, sorts and indexes use) and a
//! `json` field holding the full record as UDM's own JSON. The JSON copy keeps every record
//! exact (u64 numbers, keys with `.` or `$` in user data) whatever BSON can express; the query
//! fields are derived from it and never read back as data.
//!
//! Heads keep their indexed props twice: nested under `idx` (what list filters push down to)
//! and flat under `sk`, one **sort key** per prop (see [`sort_keys`]), which list sorts and
//! equality filters use and the per-prop indexes cover.

use bson::{Bson, Document, doc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use udm_core::layout::{collection_record_prefix, head_record_id, version_record_id};
use udm_core::predicate::{CmpOp, Predicate};
use udm_core::{Error, Head, ObjectKey, Result, VersionRecord};

use crate::error::{corrupt, to_i64};

/// JSON → BSON, exactly where BSON can (u64 beyond i64 becomes a double).
pub(crate) fn to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Bson::Int64(i),
            (None, Some(f)) => Bson::Double(f),
            (None, None) => Bson::Null,
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(a.iter().map(to_bson).collect()),
        Value::Object(m) => Bson::Document(m.iter().map(|(k, v)| (k.clone(), to_bson(v))).collect()),
    }
}

/// Indexed props (flat, keyed by dotted path) as a nested document, so `idx.a.b` queries work.
pub(crate) fn nested_index(indexed: &Map<String, Value>) -> Document {
    let mut root = Document::new();
    for (path, value) in indexed {
        let mut node = &mut root;
        let segments: Vec<&str> = path.split('.').collect();
        for seg in &segments[..segments.len() - 1] {
            if !matches!(node.get(*seg), Some(Bson::Document(_))) {
                node.insert(*seg, Document::new());
            }
            node = match node.get_mut(*seg) {
                Some(Bson::Document(d)) => d,
                _ => unreachable!("inserted above"),
            };
        }
        node.insert(segments[segments.len() - 1], to_bson(value));
    }
    root
}

/// Sort keys of a head's indexed props, flat: one field per prop path (named by
/// [`sort_key_name`], so `a.b` is one field, never a nested path) holding the value when it is
/// a scalar (null, boolean, number, string — exactly as [`to_bson`] stores it) and `MaxKey`
/// for an array or object. So a prop is absent from `sk` exactly when the head does not have
/// it, and the BSON type of its sort key tells its UDM sort class.
pub(crate) fn sort_keys(indexed: &Map<String, Value>) -> Document {
    indexed
        .iter()
        .filter_map(|(path, v)| {
            let key = match v {
                Value::Array(_) | Value::Object(_) => Bson::MaxKey,
                scalar => to_bson(scalar),
            };
            sort_key_name(path).map(|name| (name, key))
        })
        .collect()
}

/// The field name of a prop's sort key inside `sk`: the path with `~` written `~t` and `.`
/// written `~d` (reversible, no dots). `None` for a string that is not a valid prop path.
pub(crate) fn sort_key_name(path: &str) -> Option<String> {
    udm_core::metamap::check_path(path).ok()?;
    Some(path.replace('~', "~t").replace('.', "~d"))
}

/// The full field path of a prop's sort key (`sk.<name>`).
pub(crate) fn sort_key_field(path: &str) -> Option<String> {
    sort_key_name(path).map(|n| format!("sk.{n}"))
}

/// The record serialized as UDM JSON text.
pub(crate) fn json_of<T: Serialize>(record: &T) -> Result<String> {
    serde_json::to_string(record).map_err(|e| Error::internal(format!("serializing a record: {e}")))
}

/// The record stored in a document's `json` field.
pub(crate) fn from_json<T: DeserializeOwned>(doc: &Document, what: &str) -> Result<T> {
    let text = doc.get_str("json").map_err(|e| corrupt(what, e))?;
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// The stored form of a head.
pub(crate) fn head_doc(h: &Head) -> Result<Document> {
    let (shadow_at, shadow_bytes) = match &h.dev_shadow {
        Some(s) => (Bson::Int64(s.written_at.as_millis()), Bson::Int64(to_i64(s.bytes, "shadow size")?)),
        None => (Bson::Null, Bson::Null),
    };
    Ok(doc! {
        "_id": head_record_id(&h.key),
        "ctx": collection_record_prefix(&h.key.ctx),
        "oid": h.key.id.as_str(),
        "ov": to_i64(h.ov.get(), "ov")?,
        "at": h.at.as_millis(),
        "deleted": h.is_deleted(),
        "idx": nested_index(&h.indexed),
        "sk": sort_keys(&h.indexed),
        "shadow_at": shadow_at,
        "shadow_bytes": shadow_bytes,
        "json": json_of(h)?,
    })
}

/// The stored form of a version record. It is also the record of the request that wrote it:
/// `req` (unique) is the request's id in its collection and `fp` its payload fingerprint, so a
/// commit needs no separate request document.
pub(crate) fn version_doc(v: &VersionRecord, fingerprint: &udm_core::Checksum) -> Result<Document> {
    Ok(doc! {
        "_id": version_record_id(&v.key, v.ov),
        "obj": head_record_id(&v.key),
        "ctx": udm_core::layout::collection_record_prefix(&v.key.ctx),
        "ov": to_i64(v.ov.get(), "ov")?,
        "cv": to_i64(v.cv.0, "cv")?,
        "at": v.at.as_millis(),
        "req": request_id_of(&v.key.ctx, &v.provenance.request_id),
        "fp": fingerprint.to_string(),
        "json": json_of(v)?,
    })
}

/// The field that marks a pruned version's tombstone (`true`) in the versions collection.
pub(crate) const PRUNED: &str = "pruned";

/// Whether a version document is a pruned version's tombstone. Reads skip them as they
/// arrive rather than filter on the field: a negated condition beside an index range made
/// the test server scan the whole collection (see the `shadow` module).
pub(crate) fn is_pruned(d: &Document) -> bool {
    d.get_bool(PRUNED).unwrap_or(false)
}

/// Every version document of object `obj` (its `_id` in the heads), tombstones included:
/// the `{obj, ov}` index's first field only.
pub(crate) fn object_filter(obj: &str) -> Document {
    doc! {"obj": obj}
}

/// A request's id within its collection: `<tenant>/<db>/<collection>/<request id>`.
pub(crate) fn request_id_of(ctx: &udm_core::RouteContext, request: &udm_core::RequestId) -> String {
    format!("{}{request}", udm_core::layout::collection_record_prefix(ctx))
}

/// Counter names as field names: identifiers never contain `~`, so `.` ↔ `~` is reversible
/// and keeps `rule.vips` from becoming a nested path.
pub(crate) fn counter_field(name: &str) -> String {
    format!("c.{}", name.replace('.', "~"))
}

/// The counter name of a stored field name (inside `c`).
pub(crate) fn counter_name(field: &str) -> String {
    field.replace('~', ".")
}

/// `_id` of an object's head, and `obj` of its versions and requests.
pub(crate) fn obj_id(key: &ObjectKey) -> String {
    head_record_id(key)
}

/// A MongoDB filter matching **at least** the heads `p` matches (over `idx.*`), or `None`
/// for "no constraint". The exact predicate is always applied to the results afterwards, so
/// only constructs whose MongoDB semantics are a superset of UDM's are pushed down: equality
/// and ranges on scalars, `$in` of scalars, `$exists: true`, `$and`, `$or`.
pub(crate) fn prefilter(p: &Predicate) -> Option<Document> {
    let field = |path: &str| format!("idx.{path}");
    let scalar = |v: &Value| !v.is_object() && !v.is_array();
    match p {
        Predicate::True | Predicate::Not(_) => None,
        Predicate::And(ps) => {
            let parts: Vec<Bson> = ps.iter().filter_map(prefilter).map(Bson::Document).collect();
            (!parts.is_empty()).then(|| doc! { "$and": parts })
        }
        Predicate::Or(ps) => {
            let parts: Option<Vec<Bson>> = ps.iter().map(|p| prefilter(p).map(Bson::Document)).collect();
            parts.map(|parts| doc! { "$or": parts })
        }
        Predicate::Cmp { path, op, value } if scalar(value) => {
            let op = match op {
                CmpOp::Eq => "$eq",
                CmpOp::Gt => "$gt",
                CmpOp::Gte => "$gte",
                CmpOp::Lt => "$lt",
                CmpOp::Lte => "$lte",
                CmpOp::Ne => return None,
            };
            Some(doc! { field(path): { op: to_bson(value) } })
        }
        Predicate::In { path, values, negated: false } if values.iter().all(scalar) => {
            Some(doc! { field(path): { "$in": values.iter().map(to_bson).collect::<Vec<_>>() } })
        }
        Predicate::Exists { path, present: true } => Some(doc! { field(path): { "$exists": true } }),
        Predicate::Cmp { .. } | Predicate::In { .. } | Predicate::Exists { .. } => None,
    }
}

/// Largest magnitude below which every integer is exact as an `f64` (2^53). Numbers strictly
/// inside `(-2^53, 2^53)` compare the same in UDM (which compares mixed integers and floats as
/// `f64`) and in BSON (which compares them exactly); outside it they may not.
pub(crate) const EXACT_NUMBERS: i64 = 1 << 53;

/// Whether a scalar compares and matches the same way as a sort key in BSON as in UDM:
/// null, booleans, strings, and numbers strictly inside `(-2^53, 2^53)`.
pub(crate) fn exact_scalar(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.unsigned_abs() < EXACT_NUMBERS.unsigned_abs(),
            (None, Some(f)) => f.abs() < EXACT_NUMBERS as f64,
            (None, None) => false,
        },
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Constraints on sort keys (`sk.*`) that every head matching `p` satisfies: the top-level
/// conjuncts of `p` that compare a prop with an [`exact_scalar`] (`=`, `<`, `<=`, `>`, `>=`,
/// `$in`). They add nothing to the answer (the exact predicate still decides); they let the
/// server use the per-prop index `{ctx, deleted, sk.<prop>, oid}` for the filter.
pub(crate) fn sort_key_prefilter(p: &Predicate) -> Vec<Document> {
    let mut out = Vec::new();
    let mut stack = vec![p];
    while let Some(p) = stack.pop() {
        match p {
            Predicate::And(ps) => stack.extend(ps.iter()),
            Predicate::Cmp { path, op, value } if exact_scalar(value) => {
                let op = match op {
                    CmpOp::Eq => "$eq",
                    CmpOp::Gt => "$gt",
                    CmpOp::Gte => "$gte",
                    CmpOp::Lt => "$lt",
                    CmpOp::Lte => "$lte",
                    CmpOp::Ne => continue,
                };
                if let Some(field) = sort_key_field(path) {
                    out.push(doc! { field: { op: to_bson(value) } });
                }
            }
            Predicate::In { path, values, negated: false } if values.iter().all(exact_scalar) => {
                if let Some(field) = sort_key_field(path) {
                    out.push(doc! { field: { "$in": values.iter().map(to_bson).collect::<Vec<_>>() } });
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nests_dotted_paths() {
        let m = json!({"a.b": 1, "a.c": "x", "d": true}).as_object().cloned().unwrap();
        assert_eq!(nested_index(&m), doc! {"a": {"b": 1_i64, "c": "x"}, "d": true});
    }

    #[test]
    fn pushes_down_only_superset_constructs() {
        let p = Predicate::parse(&json!({"a": 1, "b": {"$ne": 2}, "$or": [{"c": {"$gt": 3}}, {"d": {"$in": ["x"]}}]}))
            .unwrap();
        let f = prefilter(&p).unwrap();
        assert_eq!(
            f,
            doc! {"$and": [{"idx.a": {"$eq": 1_i64}}, {"$or": [{"idx.c": {"$gt": 3_i64}}, {"idx.d": {"$in": ["x"]}}]}]}
        );
        let not = Predicate::parse(&json!({"$or": [{"a": 1}, {"$not": {"b": 2}}]})).unwrap();
        assert_eq!(prefilter(&not), None, "an or with an unpushable branch pushes nothing");
        assert_eq!(to_bson(&json!(u64::MAX)), Bson::Double(u64::MAX as f64));
    }

    #[test]
    fn sort_keys_are_flat_and_typed() {
        let m = json!({"a.b": 1, "a~x": "s", "o": {"k": 1}, "l": [1], "n": null}).as_object().cloned().unwrap();
        assert_eq!(
            sort_keys(&m),
            doc! {"a~db": 1_i64, "a~tx": "s", "o": Bson::MaxKey, "l": Bson::MaxKey, "n": Bson::Null}
        );
        assert_eq!(sort_key_field("a.b").as_deref(), Some("sk.a~db"));
        assert_eq!(sort_key_field("$x"), None);
        assert_eq!(sort_key_field(""), None);
    }

    #[test]
    fn sort_key_prefilter_keeps_only_implied_exact_constraints() {
        let p = Predicate::parse(&json!({
            "a": "x", "b": {"$gte": 3, "$ne": 4}, "c": {"$in": [1, 2]}, "big": 9007199254740993_u64,
            "$or": [{"d": 1}], "e": {"$in": [[1]]}
        }))
        .unwrap();
        let mut got = sort_key_prefilter(&p);
        got.sort_by_key(|d| d.to_string());
        let mut want =
            vec![doc! {"sk.a": {"$eq": "x"}}, doc! {"sk.b": {"$gte": 3_i64}}, doc! {"sk.c": {"$in": [1_i64, 2_i64]}}];
        want.sort_by_key(|d| d.to_string());
        assert_eq!(got, want);
        assert!(!exact_scalar(&json!(9007199254740992_i64)) && exact_scalar(&json!(9007199254740991_i64)));
        assert!(!exact_scalar(&json!(-9.1e15)) && exact_scalar(&json!(1.5)));
    }
}
