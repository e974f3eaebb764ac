//! Deep merge for enrichment.
//!
//! - objects merge recursively, key by key;
//! - arrays become the union: existing elements first, in order, then each patch element
//!   not already present (deep equality), in patch order — no duplicates are introduced;
//! - any other patch value (scalar, `null`, or a different type) replaces the existing one;
//!   `null` sets null, it does not delete;
//! - arrays the patch brings in (at new keys, as replacements, or as appended elements) are
//!   themselves treated as sets: their duplicates are dropped, first occurrence kept;
//! - a `_system` key at the top level of the patch is a validation error;
//! - a document or patch nesting deeper than [`MAX_JSON_DEPTH`] is a validation error (the
//!   document is checked iteratively up front, the patch walk carries its depth and stops at
//!   the bound before recursing), so hostile nesting cannot overflow the stack.
//!
//! Merging the same patch twice gives the same result as merging it once.

use serde_json::{Map, Value};

use crate::canonical::{MAX_JSON_DEPTH, check_depth};
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
    check_depth(base, MAX_JSON_DEPTH, "document")?;
    // `base` is now known to be shallow, so its (recursive) clone is safe.
    let mut out = b.clone();
    merge_into(&mut out, p, 1)?;
    Ok(Value::Object(out))
}

/// The depth of a container inside one at `depth`, or a validation error past the bound.
fn deeper(depth: usize) -> Result<usize> {
    if depth >= MAX_JSON_DEPTH {
        Err(Error::validation("patch", format!("nests deeper than {MAX_JSON_DEPTH} levels")))
    } else {
        Ok(depth + 1)
    }
}

/// Merges `patch` (a container at `depth`) into `base`.
fn merge_into(base: &mut Map<String, Value>, patch: &Map<String, Value>, depth: usize) -> Result<()> {
    for (k, pv) in patch {
        match (base.get_mut(k), pv) {
            (Some(Value::Object(bo)), Value::Object(po)) => merge_into(bo, po, deeper(depth)?)?,
            (Some(Value::Array(ba)), Value::Array(pa)) => union_at(ba, pa, deeper(depth)?)?,
            (Some(slot), _) => *slot = from_patch(pv, depth)?,
            (None, _) => {
                base.insert(k.clone(), from_patch(pv, depth)?);
            }
        }
    }
    Ok(())
}

/// Appends each element of `extra` not already in `base` (deep equality), keeping order.
/// Duplicates already in `base` are kept as they are: the merge never drops caller data.
/// Elements of `extra` nesting deeper than [`MAX_JSON_DEPTH`] are a validation error.
pub fn union_into(base: &mut Vec<Value>, extra: &[Value]) -> Result<()> {
    union_at(base, extra, 1)
}

/// [`union_into`] for arrays at `depth`. The equality test recurses no deeper than the
/// (bounded) patch element.
fn union_at(base: &mut Vec<Value>, extra: &[Value], depth: usize) -> Result<()> {
    for item in extra {
        let item = from_patch(item, depth)?;
        if !base.contains(&item) {
            base.push(item);
        }
    }
    Ok(())
}

/// A value as the patch brings it in (found inside a container at `depth`): every array
/// inside it deduplicated.
fn from_patch(v: &Value, depth: usize) -> Result<Value> {
    Ok(match v {
        Value::Object(m) => {
            let depth = deeper(depth)?;
            Value::Object(m.iter().map(|(k, v)| Ok((k.clone(), from_patch(v, depth)?))).collect::<Result<_>>()?)
        }
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            union_at(&mut out, a, deeper(depth)?)?;
            Value::Array(out)
        }
        other => other.clone(),
    })
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
