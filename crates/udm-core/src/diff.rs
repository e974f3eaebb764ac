//! Structural JSON diff by path.
//!
//! Paths are JSON Pointers (RFC 6901): `""` is the whole value, `/a/b/0` is key `b` of key `a`,
//! element 0; `~` and `/` inside keys are written `~0` and `~1`. Objects are compared key by
//! key; arrays element by element (index-aligned), with trailing elements reported as added or
//! removed; any other difference (including a type change) is one `Modified` at that path.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Present only in the second value.
    Added,
    /// Present only in the first value.
    Removed,
    /// Present in both, different.
    Modified,
}

/// One difference between two JSON values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// JSON Pointer of the differing value.
    pub path: String,
    /// How it differs.
    pub kind: ChangeKind,
    /// The value in the first input (absent for `Added`).
    pub before: Option<Value>,
    /// The value in the second input (absent for `Removed`).
    pub after: Option<Value>,
}

/// Every difference from `a` to `b`, in path order of a depth-first walk.
pub fn diff(a: &Value, b: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk(&mut String::new(), a, b, &mut out);
    out
}

fn walk(path: &mut String, a: &Value, b: &Value, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            for (k, va) in ma {
                with_segment(path, k, |p| match mb.get(k) {
                    Some(vb) => walk(p, va, vb, out),
                    None => out.push(change(p, ChangeKind::Removed, Some(va), None)),
                });
            }
            for (k, vb) in mb.iter().filter(|(k, _)| !ma.contains_key(*k)) {
                with_segment(path, k, |p| out.push(change(p, ChangeKind::Added, None, Some(vb))));
            }
        }
        (Value::Array(aa), Value::Array(ab)) => {
            for i in 0..aa.len().max(ab.len()) {
                with_segment(path, &i.to_string(), |p| match (aa.get(i), ab.get(i)) {
                    (Some(x), Some(y)) => walk(p, x, y, out),
                    (Some(x), None) => out.push(change(p, ChangeKind::Removed, Some(x), None)),
                    (None, y) => out.push(change(p, ChangeKind::Added, None, y)),
                });
            }
        }
        _ if a == b => {}
        _ => out.push(change(path, ChangeKind::Modified, Some(a), Some(b))),
    }
}

fn change(path: &str, kind: ChangeKind, before: Option<&Value>, after: Option<&Value>) -> Change {
    Change { path: path.to_owned(), kind, before: before.cloned(), after: after.cloned() }
}

fn with_segment(path: &mut String, seg: &str, f: impl FnOnce(&mut String)) {
    let len = path.len();
    path.push('/');
    path.push_str(&escape_segment(seg));
    f(path);
    path.truncate(len);
}

/// Escapes one JSON Pointer segment (`~` → `~0`, `/` → `~1`).
pub fn escape_segment(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// Looks up a JSON Pointer in `v` (`serde_json`'s own implementation).
pub fn lookup<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_each_kind_by_pointer() {
        let a = json!({"x": 1, "gone": true, "arr": [1, 2, 3], "a/b": {"c": 1}});
        let b = json!({"x": 2, "new": null, "arr": [1, 5], "a/b": {"c": 1}});
        let changes = diff(&a, &b);
        let got: Vec<_> = changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        assert_eq!(
            got,
            [
                ("/x", ChangeKind::Modified),
                ("/gone", ChangeKind::Removed),
                ("/arr/1", ChangeKind::Modified),
                ("/arr/2", ChangeKind::Removed),
                ("/new", ChangeKind::Added),
            ]
        );
        assert_eq!(changes[0].before, Some(json!(1)));
        assert_eq!(changes[0].after, Some(json!(2)));
    }

    #[test]
    fn escapes_keys_and_finds_them_again() {
        let a = json!({"a/b~c": 1});
        let b = json!({"a/b~c": 2});
        let c = diff(&a, &b);
        assert_eq!(c[0].path, "/a~1b~0c");
        assert_eq!(lookup(&a, &c[0].path), Some(&json!(1)));
    }

    #[test]
    fn type_change_is_one_modification() {
        let c = diff(&json!({"a": {"b": 1}}), &json!({"a": [1]}));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "/a");
    }
}
