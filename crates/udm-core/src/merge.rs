//! Deep merge for enrichment.
//!
//! - objects merge recursively, key by key;
//! - arrays become the union: existing elements first, in order, then each patch element
//!   not already present (deep equality), in patch order — no duplicates are introduced;
//! - any other patch value (scalar, `null`, or a different type) replaces the existing one;
//!   `null` sets null, it does not delete;
//! - arrays the patch brings in (at new keys, as replacements, or as appended elements) are
//!   themselves treated as sets: their duplicates are dropped, first occurrence kept;
//! - a `_system` key at the top level of the patch is a validation error.
//!
//! Merging the same patch twice gives the same result as merging it once.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::validate::SYSTEM_FIELD;

/// Merges `patch` into `base` and returns the result. Both must be JSON objects.
pub fn deep_merge(base: &Value, patch: &Value) -> Result<Value> {
    let (Value::Object(b), Value::Object(p)) = (base, patch) else {
        return Err(Error::validation("patch", "both the document and the patch must be JSON objects"));
    };
    if p.contains_key(SYSTEM_FIELD) {
        return Err(Error::validation(SYSTEM_FIELD, "the system header cannot be written by callers"));
    }
    let mut out = b.clone();
    merge_into(&mut out, p);
    Ok(Value::Object(out))
}

fn merge_into(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, pv) in patch {
        match (base.get_mut(k), pv) {
            (Some(Value::Object(bo)), Value::Object(po)) => merge_into(bo, po),
            (Some(Value::Array(ba)), Value::Array(pa)) => union_into(ba, pa),
            (Some(slot), _) => *slot = from_patch(pv),
            (None, _) => {
                base.insert(k.clone(), from_patch(pv));
            }
        }
    }
}

/// Appends each element of `extra` not already in `base` (deep equality), keeping order.
/// Duplicates already in `base` are kept as they are: the merge never drops caller data.
pub fn union_into(base: &mut Vec<Value>, extra: &[Value]) {
    for item in extra.iter().map(from_patch) {
        if !base.contains(&item) {
            base.push(item);
        }
    }
}

/// A value as the patch brings it in: every array inside it deduplicated.
fn from_patch(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), from_patch(v))).collect()),
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            union_into(&mut out, a);
            Value::Array(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_recursively_with_array_union() {
        let base = json!({"a": {"x": 1, "tags": ["a", "b"]}, "keep": true, "n": 1});
        let patch = json!({"a": {"y": 2, "tags": ["b", "c", {"k": 1}]}, "n": null});
        let out = deep_merge(&base, &patch).unwrap();
        assert_eq!(out, json!({"a": {"x": 1, "y": 2, "tags": ["a", "b", "c", {"k": 1}]}, "keep": true, "n": null}));
    }

    #[test]
    fn patch_arrays_are_sets() {
        let out = deep_merge(&json!({}), &json!({"new": [1, 1, {"x": [2, 2]}], "o": {"a": [3, 3]}})).unwrap();
        assert_eq!(out, json!({"new": [1, {"x": [2]}], "o": {"a": [3]}}));
    }

    #[test]
    fn type_change_replaces() {
        let out = deep_merge(&json!({"a": [1], "b": {"c": 1}}), &json!({"a": {"x": 1}, "b": 3})).unwrap();
        assert_eq!(out, json!({"a": {"x": 1}, "b": 3}));
    }

    #[test]
    fn rejects_system_and_non_objects() {
        assert!(deep_merge(&json!({}), &json!({"_system": {}})).is_err());
        assert!(deep_merge(&json!({}), &json!([1])).is_err());
        assert!(deep_merge(&json!(1), &json!({})).is_err());
    }
}
