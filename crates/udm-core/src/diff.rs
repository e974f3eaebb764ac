//! Structural JSON diff by path.
//!
//! Paths are JSON Pointers (RFC 6901): `""` is the whole value, `/a/b/0` is key `b` of key `a`,
//! element 0; `~` and `/` inside keys are written `~0` and `~1`. Objects are compared key by
//! key; arrays element by element (index-aligned), with trailing elements reported as added or
//! removed; any other difference (including a type change) is one `Modified` at that path.
//!
//! The walk is iterative (an explicit stack) and copies reported values without recursion, so
//! any nesting depth is safe here (a caller holding a hostile value still has to drop it).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::clone_value;

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
    let mut path = String::new();
    // Pending work, last first; `Truncate` restores the path when a container is done.
    let mut stack = vec![Step::Visit { seg: None, a: Some(a), b: Some(b) }];
    while let Some(step) = stack.pop() {
        let (seg, a, b) = match step {
            Step::Truncate(len) => {
                path.truncate(len);
                continue;
            }
            Step::Visit { seg, a, b } => (seg, a, b),
        };
        let len = path.len();
        match seg {
            Some(Seg::Key(k)) if k.contains(['~', '/']) => {
                path.push('/');
                path.push_str(&escape_segment(k));
            }
            Some(Seg::Key(k)) => {
                path.push('/');
                path.push_str(k);
            }
            Some(Seg::Index(i)) => {
                let _ = write!(path, "/{i}");
            }
            None => {}
        }
        match (a, b) {
            (Some(Value::Object(ma)), Some(Value::Object(mb))) => {
                stack.push(Step::Truncate(len));
                let added = mb.iter().filter(|(k, _)| !ma.contains_key(*k)).map(|(k, vb)| (k, None, Some(vb)));
                let children: Vec<_> = ma.iter().map(|(k, va)| (k, Some(va), mb.get(k))).chain(added).collect();
                stack.extend(children.into_iter().rev().map(|(k, a, b)| Step::Visit { seg: Some(Seg::Key(k)), a, b }));
                continue;
            }
            (Some(Value::Array(aa)), Some(Value::Array(ab))) => {
                stack.push(Step::Truncate(len));
                stack.extend((0..aa.len().max(ab.len())).rev().map(|i| Step::Visit {
                    seg: Some(Seg::Index(i)),
                    a: aa.get(i),
                    b: ab.get(i),
                }));
                continue;
            }
            (Some(x), None) => out.push(change(&path, ChangeKind::Removed, Some(x), None)),
            (None, Some(y)) => out.push(change(&path, ChangeKind::Added, None, Some(y))),
            (Some(x), Some(y)) if x != y => out.push(change(&path, ChangeKind::Modified, Some(x), Some(y))),
            _ => {}
        }
        path.truncate(len);
    }
    out
}

/// One unit of the diff walk.
enum Step<'v> {
    /// Compare `a` and `b` (either may be absent) at the current path plus `seg`.
    Visit { seg: Option<Seg<'v>>, a: Option<&'v Value>, b: Option<&'v Value> },
    /// Cut the path back to this length.
    Truncate(usize),
}

/// One path segment: an object key or an array index.
enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

fn change(path: &str, kind: ChangeKind, before: Option<&Value>, after: Option<&Value>) -> Change {
    Change { path: path.to_owned(), kind, before: before.map(clone_value), after: after.map(clone_value) }
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
