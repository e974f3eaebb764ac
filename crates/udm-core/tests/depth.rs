//! Hostile nesting: every walk over caller JSON either is iterative or stops at a documented
//! bound with a validation error — a 100,000-level document never aborts the process.
//!
//! The deep values are built iteratively and taken apart iteratively ([`dismantle`]), because
//! `serde_json::Value`'s own `Drop` (and `Clone`, `PartialEq`) recurse. Each test runs on a
//! thread with a modest stack, so a regression overflows quickly and visibly.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use udm_core::canonical::{self, Checksum, MAX_JSON_DEPTH, canonical_bytes, check_depth, write_canonical};
use udm_core::diff::{ChangeKind, diff};
use udm_core::drift::{DriftKind, Observed, detect_collection_drift, detect_drift};
use udm_core::merge::union_into;
use udm_core::metamap::{Base64Prop, IndexedProp, MetadataMap};
use udm_core::predicate::{MAX_EVAL_DEPTH, MAX_PREDICATE_DEPTH, Predicate};
use udm_core::{ErrorKind, deep_merge};

const DEEP: usize = 100_000;

/// Runs `f` on a thread with a 1 MiB stack (recursion over 100k levels would overflow it).
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap().join().unwrap();
}

/// `levels` times `wrap` around `leaf`, built iteratively.
fn nest(levels: usize, leaf: Value, wrap: impl Fn(Value) -> Value) -> Value {
    (0..levels).fold(leaf, |v, _| wrap(v))
}

/// `{key: v}` without `json!` (which copies an interpolated value through a recursive
/// `to_value`).
fn obj(key: &str, v: Value) -> Value {
    Value::Object(Map::from_iter([(key.to_owned(), v)]))
}

/// `{"a": {"a": … leaf}}`, `levels` objects deep.
fn deep_object(levels: usize, leaf: Value) -> Value {
    nest(levels, leaf, |v| obj("a", v))
}

/// Drops a value without recursion (`Value`'s own drop recurses).
fn dismantle(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => stack.extend(a),
            Value::Object(m) => stack.extend(m.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

fn assert_validation<T>(r: udm_core::Result<T>) -> udm_core::Error {
    match r {
        Ok(_) => panic!("expected a validation error"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Validation, "{e}");
            e
        }
    }
}

#[test]
fn predicate_with_100k_nested_not_is_a_validation_error() {
    on_small_stack(|| {
        let v = nest(DEEP, json!({}), |v| obj("$not", v));
        let e = assert_validation(Predicate::parse(&v));
        assert_eq!(e.problems().len(), 1);
        assert_eq!(e.problems()[0].path, vec!["$not"; MAX_PREDICATE_DEPTH].join("."));
        dismantle(v);
    });
}

#[test]
fn predicate_with_100k_nested_and_or_is_a_validation_error() {
    on_small_stack(|| {
        for op in ["$and", "$or"] {
            let v = nest(DEEP, json!({"a": 1}), |v| obj(op, Value::Array(vec![v])));
            let e = assert_validation(Predicate::parse(&v));
            let expected = format!("{}{op}", format!("{op}[0].").repeat(MAX_PREDICATE_DEPTH - 1));
            assert_eq!(e.problems()[0].path, expected);
            dismantle(v);
        }
    });
}

#[test]
fn predicate_depth_bound_is_exact() {
    // n `$not`s put the innermost predicate at depth n + 1.
    let ok = nest(MAX_PREDICATE_DEPTH - 1, json!({"a": 1}), |v| json!({ "$not": v }));
    let p = Predicate::parse(&ok).unwrap();
    assert!(!p.matches(&json!({"a": 1})), "31 negations of a match");
    let deep = nest(MAX_PREDICATE_DEPTH, json!({"a": 1}), |v| obj("$not", v));
    assert_validation(Predicate::parse(&deep));
    // The deepest parsed tree (implicit ands at every level) still evaluates exactly.
    let leaf = json!({"a": {"$gte": 1, "$lte": 1}, "b": {"$exists": false}});
    let widest = nest(MAX_PREDICATE_DEPTH - 1, leaf, |v| {
        let mut level = json!({"x": {"$exists": false, "$ne": 3}});
        level["$not"] = v;
        level
    });
    let p = Predicate::parse(&widest).unwrap();
    assert!(!p.matches(&json!({"a": 1})), "31 negations of a match");
    assert!(p.matches(&json!({"a": 2})));
    // A hand-built tree past the bound is never walked past it: it does not match, whatever
    // the parity of its negations.
    for extra in [0, 1] {
        let n = MAX_EVAL_DEPTH + extra;
        let hand = (0..n).fold(Predicate::True, |p, _| Predicate::Not(Box::new(p)));
        assert!(!hand.matches(&json!({})), "{n}");
    }
    let at_bound = (0..MAX_EVAL_DEPTH - 1).fold(Predicate::True, |p, _| Predicate::Not(Box::new(p)));
    assert_eq!(at_bound.matches(&json!({})), (MAX_EVAL_DEPTH - 1).is_multiple_of(2));
}

#[test]
fn predicate_operands_are_depth_bounded() {
    on_small_stack(|| {
        for wrap in [
            (|d: Value| obj("a", d)) as fn(Value) -> Value,
            |d| obj("a", obj("$eq", d)),
            |d| obj("a", obj("$in", Value::Array(vec![d]))),
            |d| obj("$or", Value::Array(vec![json!({"b": 1}), obj("a", obj("$gt", d))])),
        ] {
            let v = wrap(deep_object(DEEP, json!(1)));
            assert_validation(Predicate::parse(&v));
            dismantle(v);
        }
        let shallow = obj("a", deep_object(MAX_JSON_DEPTH - 1, json!(1)));
        let p = Predicate::parse(&shallow).unwrap();
        assert!(p.matches(&shallow));
    });
}

#[test]
fn deep_merge_rejects_deep_documents_and_patches() {
    on_small_stack(|| {
        let deep = obj("x", deep_object(DEEP, json!(1)));
        assert_validation(deep_merge(&deep, &json!({"a": 1})));
        assert_validation(deep_merge(&json!({"a": {}}), &deep));
        assert_validation(deep_merge(&json!({"x": {"a": {}}}), &deep));
        let deep_array = obj("arr", Value::Array(vec![nest(DEEP, json!(1), |v| Value::Array(vec![v]))]));
        assert_validation(deep_merge(&json!({"arr": [1]}), &deep_array));
        let mut base = vec![json!(1)];
        let extra = vec![deep_object(10, json!(1)), deep_object(DEEP, json!(1))];
        assert_validation(union_into(&mut base, &extra));
        dismantle(deep);
        dismantle(deep_array);
        dismantle(Value::Array(base));
        dismantle(Value::Array(extra));
        // At the bound, merging works.
        let ok = deep_object(MAX_JSON_DEPTH - 1, json!(1));
        let out = deep_merge(&json!({}), &obj("a", ok.clone())).unwrap();
        assert_eq!(out, obj("a", ok));
    });
}

#[test]
fn diff_and_drift_of_100k_deep_documents_work() {
    on_small_stack(|| {
        let a = deep_object(DEEP, json!(1));
        let b = deep_object(DEEP, json!(2));
        let changes = diff(&a, &b);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].kind, changes[0].path.len()), (ChangeKind::Modified, 2 * DEEP));

        // A removed deep subtree is copied into the change without recursion.
        let x = obj("x", deep_object(DEEP, json!(1)));
        let mut removed = diff(&x, &json!({}));
        assert_eq!((removed[0].kind, removed[0].path.as_str()), (ChangeKind::Removed, "/x"));
        dismantle(removed[0].before.take().unwrap());
        dismantle(x);

        let recorded = Checksum::of_json(&a);
        let r = detect_drift(Observed { data: &a, recorded: Some(&recorded) }, Observed::plain(&b), Some(&a));
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].kind, DriftKind::Modified);

        let desired = BTreeMap::from([("o1".to_owned(), Observed::plain(&a))]);
        let mut r = detect_collection_drift(&desired, &BTreeMap::new(), None);
        assert_eq!((r.items[0].kind, r.items[0].path.as_str()), (DriftKind::Missing, "/o1"));
        dismantle(r.items[0].expected.take().unwrap());
        dismantle(a);
        dismantle(b);
    });
}

#[test]
fn canonical_bytes_and_checksums_of_100k_deep_documents_work() {
    on_small_stack(|| {
        let v = nest(DEEP, json!({"k": "v"}), |v| {
            let is_array = v.is_array();
            Value::Array(vec![v, json!({"b": 1, "a": is_array})])
        });
        let bytes = canonical_bytes(&v);
        assert!(bytes.starts_with(b"[[[") && bytes.ends_with(b"{\"a\":true,\"b\":1}]"));
        assert_eq!(Checksum::of_json(&v), Checksum::of_bytes(&bytes));
        assert_eq!(canonical::encode(&v), (bytes.clone(), Checksum::of_bytes(&bytes)));
        let mut written = Vec::new();
        write_canonical(&v, &mut written).unwrap();
        assert_eq!(written, bytes);
        assert_validation(check_depth(&v, MAX_JSON_DEPTH, "document"));
        dismantle(v);
    });
}

#[test]
fn metamap_rejects_deep_documents() {
    on_small_stack(|| {
        let map = MetadataMap {
            indexed_props: vec![IndexedProp { path: "deep".into(), required: false }],
            base64_props: vec![Base64Prop { path: "img".into(), content_type: "t".into() }],
        };
        let mut doc = obj("deep", deep_object(DEEP, json!(1)));
        doc["img"] = json!("aGVsbG8=");
        let e = assert_validation(map.extract_indexed(&doc));
        assert_eq!(e.problems()[0].path, "deep");
        assert_validation(map.externalize(&doc));
        assert_validation(map.map_references(&doc, |_, _| Ok(Value::Null)));
        // A forged reference holding a deep value is simply not a reference.
        let forged = obj("img", obj("$udmContent", deep_object(DEEP, json!(1))));
        assert!(map.references(&forged).is_empty());
        dismantle(doc);
        dismantle(forged);
    });
}
