//! Document validation: what a caller may write.
//!
//! A document must be a JSON object, must not contain `_system` at the top level (the system
//! header is UDM's), must nest at most `max_depth` levels and serialize (canonically, after
//! externalization) to at most `max_document_bytes`. Rejections are
//! [`ErrorKind::Validation`](crate::ErrorKind::Validation) and happen before anything is written.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::canonical_bytes;
use crate::error::{Error, Result};

/// The reserved top-level key holding the system header.
pub const SYSTEM_FIELD: &str = "_system";

/// Size and shape limits (configurable; defaults per the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest document, canonical JSON bytes after externalization (default 16 MiB).
    pub max_document_bytes: usize,
    /// Deepest nesting of objects/arrays (default 100).
    pub max_depth: usize,
    /// Longest object or request id in bytes (default 128).
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_document_bytes: 16 * 1024 * 1024, max_depth: 100, max_id_bytes: 128 }
    }
}

/// Parses caller text as a document; malformed JSON is a validation error.
pub fn parse_document(text: &str, limits: &Limits) -> Result<Value> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| Error::validation("document", format!("malformed JSON: {e}")))?;
    validate_document(&v, limits)?;
    Ok(v)
}

/// Checks a caller document: an object, no `_system`, within depth and size limits.
pub fn validate_document(doc: &Value, limits: &Limits) -> Result<()> {
    validate_shape(doc, limits)?;
    check_size(doc, limits)
}

/// Checks a caller document's shape — an object, no `_system`, within the depth limit —
/// without serializing it (a write checks the size on the bytes it serializes anyway).
pub fn validate_shape(doc: &Value, limits: &Limits) -> Result<()> {
    let Value::Object(map) = doc else {
        return Err(Error::validation("document", format!("must be a JSON object, got {}", type_name(doc))));
    };
    if map.contains_key(SYSTEM_FIELD) {
        return Err(Error::validation(SYSTEM_FIELD, "the system header cannot be written by callers"));
    }
    let depth = depth(doc);
    if depth > limits.max_depth {
        return Err(Error::validation(
            "document",
            format!("nests {depth} levels deep, at most {} allowed", limits.max_depth),
        ));
    }
    Ok(())
}

/// Checks only the size limit (used after externalization shrank the document).
pub fn check_size(doc: &Value, limits: &Limits) -> Result<()> {
    check_size_of(canonical_bytes(doc).len(), limits)
}

/// Checks the size limit given the document's canonical size in bytes.
pub fn check_size_of(size: usize, limits: &Limits) -> Result<()> {
    if size > limits.max_document_bytes {
        return Err(Error::validation(
            "document",
            format!("is {size} bytes, at most {} allowed", limits.max_document_bytes),
        ));
    }
    Ok(())
}

/// Nesting depth: a scalar is 0, `{}` or `[]` is 1, `{"a":{}}` is 2.
pub fn depth(v: &Value) -> usize {
    // Iterative, so hostile nesting cannot overflow the stack.
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => {
                max = max.max(d + 1);
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            Value::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    max
}

/// The JSON type name of a value, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    #[test]
    fn rejects_bad_documents() {
        let l = Limits::default();
        for bad in [json!([1]), json!("s"), json!(null), json!({"_system": {}})] {
            assert_eq!(validate_document(&bad, &l).unwrap_err().kind(), ErrorKind::Validation);
        }
        assert!(parse_document("{\"a\":", &l).is_err());
        assert!(parse_document("{\"a\":1}", &l).is_ok());
    }

    #[test]
    fn depth_and_size_limits() {
        let l = Limits { max_depth: 3, max_document_bytes: 20, ..Limits::default() };
        assert_eq!(depth(&json!({"a": {"b": [1]}})), 3);
        assert!(validate_document(&json!({"a": {"b": [1]}}), &l).is_ok());
        assert!(validate_document(&json!({"a": {"b": [[1]]}}), &l).is_err());
        let e = validate_document(&json!({"a": "x".repeat(30)}), &l).unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
    }
}
