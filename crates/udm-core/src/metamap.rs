//! Metadata maps: indexed props and externalized base64 fields of a collection.
//!
//! - **Indexed props** are copied out of the data by dotted path (`address.city`) into the
//!   head, where queries filter and sort on them. A prop marked `required` must be present.
//! - **Base64 props** are decoded and stored as content objects (see
//!   [`Layout::content`](crate::layout::Layout::content)); the document keeps a reference
//!   `{"$udmContent": {"blake3": …, "size": …, "contentType": …}}`. Rehydration turns a
//!   reference back into the exact base64 text (canonical padded base64 is required on input,
//!   so externalize → rehydrate is the identity). The content key is always derived from the
//!   object key and the hash, never read from the document, so a forged reference cannot point
//!   outside its object's content prefix.
//!
//! Path lookups are iterative (one step per segment). Operations that copy the document or a
//! value out of it first check it nests at most [`MAX_JSON_DEPTH`] levels (iteratively), so a
//! hostile document is a validation error, never a stack overflow in `Value::clone`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{ContentHash, MAX_JSON_DEPTH, check_depth};
use crate::error::{Error, ErrorKind, Problem, Result};

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// The key marking an externalized-content reference.
pub const CONTENT_REF_KEY: &str = "$udmContent";

/// One indexed prop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedProp {
    /// Dotted path into the document (`a.b.c`).
    pub path: String,
    /// Whether every write must carry it.
    #[serde(default)]
    pub required: bool,
}

/// One base64 prop to externalize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base64Prop {
    /// Dotted path into the document.
    pub path: String,
    /// Content type recorded on the content object.
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

fn default_content_type() -> String {
    "application/octet-stream".to_owned()
}

/// The metadata map of one collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataMap {
    /// Props copied into the head for queries.
    #[serde(default)]
    pub indexed_props: Vec<IndexedProp>,
    /// Props decoded and stored as content objects.
    #[serde(default)]
    pub base64_props: Vec<Base64Prop>,
}

/// Checks a dotted path: non-empty segments, none starting with `$`, not `_system`.
pub fn check_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("path must not be empty".into());
    }
    if path.split('.').next() == Some(crate::validate::SYSTEM_FIELD) {
        return Err("path must not point into _system".into());
    }
    match path.split('.').find(|s| s.is_empty() || s.starts_with('$')) {
        Some(_) => Err(format!("{path:?}: segments must be non-empty and not start with '$'")),
        None => Ok(()),
    }
}

/// Looks up a dotted path.
pub fn get_path<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, seg| v.as_object()?.get(seg))
}

fn get_path_mut<'a>(doc: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.').try_fold(doc, |v, seg| v.as_object_mut()?.get_mut(seg))
}

impl MetadataMap {
    /// Problems with the map itself (bad paths, a path both indexed and externalized).
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, p) in self.indexed_props.iter().enumerate() {
            if let Err(m) = check_path(&p.path) {
                out.push(Problem::new(format!("{at}.indexed_props[{i}].path"), m));
            }
        }
        for (i, p) in self.base64_props.iter().enumerate() {
            if let Err(m) = check_path(&p.path) {
                out.push(Problem::new(format!("{at}.base64_props[{i}].path"), m));
            }
            if self.indexed_props.iter().any(|ix| ix.path == p.path) {
                out.push(Problem::new(format!("{at}.base64_props[{i}].path"), "cannot also be indexed"));
            }
        }
        out
    }

    /// The indexed props of `doc`, keyed by path; every missing required prop is reported.
    pub fn extract_indexed(&self, doc: &Value) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        let mut problems = Vec::new();
        for p in &self.indexed_props {
            match get_path(doc, &p.path) {
                Some(v) => match check_depth(v, MAX_JSON_DEPTH, &p.path) {
                    Ok(()) => {
                        out.insert(p.path.clone(), v.clone());
                    }
                    Err(e) => problems.extend(e.problems().iter().cloned()),
                },
                None if p.required => problems.push(Problem::new(p.path.clone(), "required indexed field is missing")),
                None => {}
            }
        }
        if problems.is_empty() { Ok(out) } else { Err(Error::invalid(ErrorKind::Validation, problems)) }
    }

    /// Decodes every base64 prop present in `doc` and replaces it with a reference.
    /// Returns the new document and the content to store. A present prop that is not a
    /// string of canonical base64 is a validation error (all such props are reported).
    pub fn externalize(&self, doc: &Value) -> Result<(Value, Vec<Content>)> {
        check_depth(doc, MAX_JSON_DEPTH, "document")?;
        let mut out = doc.clone();
        let mut content = Vec::new();
        let mut problems = Vec::new();
        for p in &self.base64_props {
            let Some(slot) = get_path_mut(&mut out, &p.path) else { continue };
            if is_reference(slot) {
                continue; // already externalized (e.g. data copied from an earlier version)
            }
            let decoded = slot
                .as_str()
                .ok_or("must be a base64 string")
                .and_then(|s| BASE64.decode(s).map_err(|_| "is not canonical (padded, standard-alphabet) base64"));
            match decoded {
                Ok(bytes) => {
                    let c = Content::new(p.path.clone(), p.content_type.clone(), bytes);
                    *slot = c.reference.to_value();
                    content.push(c);
                }
                Err(m) => problems.push(Problem::new(p.path.clone(), m)),
            }
        }
        if problems.is_empty() { Ok((out, content)) } else { Err(Error::invalid(ErrorKind::Validation, problems)) }
    }

    /// Every content reference at this map's base64 paths.
    pub fn references(&self, doc: &Value) -> Vec<(String, ContentRef)> {
        self.base64_props
            .iter()
            .filter_map(|p| Some((p.path.clone(), ContentRef::from_value(get_path(doc, &p.path)?)?)))
            .collect()
    }

    /// Replaces each reference at this map's base64 paths with `f(path, reference)`.
    pub fn map_references(&self, doc: &Value, mut f: impl FnMut(&str, &ContentRef) -> Result<Value>) -> Result<Value> {
        check_depth(doc, MAX_JSON_DEPTH, "document")?;
        let mut out = doc.clone();
        for p in &self.base64_props {
            let Some(slot) = get_path_mut(&mut out, &p.path) else { continue };
            if let Some(r) = ContentRef::from_value(slot) {
                *slot = f(&p.path, &r)?;
            }
        }
        Ok(out)
    }

    /// Turns references back into base64 text, from the bytes in `blobs` (keyed by hash).
    /// A missing blob is [`ErrorKind::NotFound`]; bytes whose hash differs are
    /// [`ErrorKind::ChecksumMismatch`].
    pub fn rehydrate(&self, doc: &Value, blobs: &HashMap<ContentHash, Vec<u8>>) -> Result<Value> {
        self.map_references(doc, |path, r| {
            let bytes =
                blobs.get(&r.blake3).ok_or_else(|| Error::not_found(format!("content {} of {path}", r.blake3)))?;
            let actual = ContentHash::of(bytes);
            if actual != r.blake3 {
                return Err(Error::new(
                    ErrorKind::ChecksumMismatch,
                    format!("content of {path}: expected {}, got {actual}", r.blake3),
                ));
            }
            Ok(Value::String(BASE64.encode(bytes)))
        })
    }
}

fn is_reference(v: &Value) -> bool {
    ContentRef::from_value(v).is_some()
}

/// A reference to an externalized content object, as kept in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentRef {
    /// BLAKE3 of the bytes (the content address).
    pub blake3: ContentHash,
    /// Size in bytes.
    pub size: u64,
    /// Content type.
    pub content_type: String,
}

impl ContentRef {
    /// The reference as it sits in the document.
    pub fn to_value(&self) -> Value {
        let inner = serde_json::to_value(self).unwrap_or(Value::Null);
        Value::Object(Map::from_iter([(CONTENT_REF_KEY.to_owned(), inner)]))
    }

    /// Reads a reference back (`None` if `v` is not one).
    pub fn from_value(v: &Value) -> Option<Self> {
        let m = v.as_object()?;
        if m.len() != 1 {
            return None;
        }
        // Deserialize from the borrowed value: no copy, and no recursion into a deep value
        // (a reference's fields are scalars; anything else fails at once).
        Self::deserialize(m.get(CONTENT_REF_KEY)?).ok()
    }
}

/// Content to store for one externalized field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The dotted path it came from.
    pub path: String,
    /// Its reference (hash, size, type).
    pub reference: ContentRef,
    /// The decoded bytes.
    pub bytes: Vec<u8>,
}

impl Content {
    fn new(path: String, content_type: String, bytes: Vec<u8>) -> Self {
        let reference = ContentRef { blake3: ContentHash::of(&bytes), size: bytes.len() as u64, content_type };
        Self { path, reference, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map() -> MetadataMap {
        MetadataMap {
            indexed_props: vec![
                IndexedProp { path: "email".into(), required: true },
                IndexedProp { path: "address.city".into(), required: false },
            ],
            base64_props: vec![Base64Prop { path: "avatar.data".into(), content_type: "image/png".into() }],
        }
    }

    #[test]
    fn extracts_indexed_and_requires() {
        let m = map();
        let got = m.extract_indexed(&json!({"email": "a@b", "address": {"city": "Oslo"}})).unwrap();
        assert_eq!(Value::Object(got), json!({"email": "a@b", "address.city": "Oslo"}));
        let e = m.extract_indexed(&json!({"address": {}})).unwrap_err();
        assert_eq!(e.problems()[0].path, "email");
    }

    #[test]
    fn externalize_and_rehydrate() {
        let m = map();
        let doc = json!({"email": "x", "avatar": {"data": "aGVsbG8=", "name": "a.png"}});
        let (ext, content) = m.externalize(&doc).unwrap();
        assert_eq!(content.len(), 1);
        assert_eq!(content[0].bytes, b"hello");
        let r = ContentRef::from_value(&ext["avatar"]["data"]).unwrap();
        assert_eq!((r.size, r.content_type.as_str()), (5, "image/png"));
        assert_eq!(m.references(&ext).len(), 1);
        let blobs = HashMap::from([(r.blake3, b"hello".to_vec())]);
        assert_eq!(m.rehydrate(&ext, &blobs).unwrap(), doc);
        // Externalizing already-externalized data is a no-op.
        assert_eq!(m.externalize(&ext).unwrap().0, ext);
        // Tampered bytes are a checksum error.
        let bad = HashMap::from([(r.blake3, b"hellO".to_vec())]);
        assert_eq!(m.rehydrate(&ext, &bad).unwrap_err().kind(), ErrorKind::ChecksumMismatch);
    }

    #[test]
    fn invalid_base64_is_rejected() {
        let m = map();
        for bad in [json!("not base64!"), json!("aGVsbG8"), json!(12)] {
            let e = m.externalize(&json!({"avatar": {"data": bad}})).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Validation);
            assert_eq!(e.problems()[0].path, "avatar.data");
        }
    }

    #[test]
    fn bad_map_paths() {
        let m = MetadataMap {
            indexed_props: vec![
                IndexedProp { path: "a..b".into(), required: false },
                IndexedProp { path: "x".into(), required: false },
            ],
            base64_props: vec![
                Base64Prop { path: "x".into(), content_type: "t".into() },
                Base64Prop { path: "_system.a".into(), content_type: "t".into() },
            ],
        };
        assert_eq!(m.problems("c").len(), 3);
    }
}
