//! A small predicate language over JSON, used by counter rules (`when`) and list filters.
//!
//! The syntax is a subset of MongoDB's query language, so adapters can translate it:
//!
//! ```json
//! {"status": "active", "age": {"$gte": 18, "$lt": 65}, "tags": {"$in": ["a", "b"]},
//!  "$or": [{"plan": {"$exists": true}}, {"$not": {"trial": true}}]}
//! ```
//!
//! - `{"path": value}` is equality; several keys in one object are all required (and);
//! - field operators: `$eq`, `$ne`, `$in`, `$nin`, `$exists`, `$gt`, `$gte`, `$lt`, `$lte`;
//! - logical operators: `$and` and `$or` (non-empty arrays of predicates), `$not` (a predicate).
//!
//! Any other `$`-operator is a validation error at parse time — never silently false.
//! Numbers compare numerically (`1` equals `1.0`); strings by code point; booleans
//! `false < true`; values of different types are never ordered (`$gt` etc. are false).
//! Paths are dotted (`address.city`).
//!
//! Logical operators nest at most [`MAX_PREDICATE_DEPTH`] levels and operand values at most
//! [`MAX_JSON_DEPTH`]; deeper input is a validation error found before the parser recurses
//! past the bound, so a hostile filter cannot overflow the stack. Evaluation treats a
//! (hand-built) tree deeper than the bound as not matching rather than recursing further.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{MAX_JSON_DEPTH, check_depth};
use crate::error::{Error, ErrorKind, Problem, Result};
use crate::metamap::get_path;

/// Deepest nesting of predicates: the top level is 1, each `$and`/`$or` element or `$not`
/// operand one level more.
pub const MAX_PREDICATE_DEPTH: usize = 32;

/// Deepest tree [`Predicate::eval`] walks. Each parsed level can add two tree levels (the
/// implicit and of an object's keys, then the operator or a field's implicit and), so a parsed
/// predicate is at most `2 × MAX_PREDICATE_DEPTH + 1` deep.
pub const MAX_EVAL_DEPTH: usize = 2 * MAX_PREDICATE_DEPTH + 2;

/// Comparison operator of a field condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `$eq`
    Eq,
    /// `$ne`
    Ne,
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
}

/// A parsed predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Predicate {
    /// Always true (the empty object `{}`).
    True,
    /// All must hold.
    And(Vec<Predicate>),
    /// At least one must hold.
    Or(Vec<Predicate>),
    /// Must not hold.
    Not(Box<Predicate>),
    /// `path <op> value`.
    Cmp {
        /// Dotted path.
        path: String,
        /// Operator.
        op: CmpOp,
        /// Operand.
        value: Value,
    },
    /// The value at `path` equals one of `values` (`$in`), or none of them when `negated` (`$nin`).
    In {
        /// Dotted path.
        path: String,
        /// Candidates.
        values: Vec<Value>,
        /// `$nin` rather than `$in`.
        negated: bool,
    },
    /// `path` is present (or absent when false).
    Exists {
        /// Dotted path.
        path: String,
        /// Whether it must be present.
        present: bool,
    },
}

impl Predicate {
    /// Parses the JSON form; every problem is reported with its location.
    pub fn parse(v: &Value) -> Result<Self> {
        let mut problems = Vec::new();
        let p = parse_obj(v, "", 1, &mut problems);
        if problems.is_empty() { Ok(p) } else { Err(Error::invalid(ErrorKind::Validation, problems)) }
    }

    /// Evaluates against a document, resolving dotted paths by walking nested objects.
    pub fn matches(&self, doc: &Value) -> bool {
        self.eval(&|p| get_path(doc, p))
    }

    /// Evaluates against a flat map keyed by full dotted path (e.g. a head's indexed props).
    pub fn matches_flat(&self, map: &serde_json::Map<String, Value>) -> bool {
        self.eval(&|p| map.get(p))
    }

    /// Evaluates with a caller-supplied path resolver.
    /// If evaluation reaches a node nested deeper than [`MAX_EVAL_DEPTH`] (only possible for a
    /// tree built by hand: [`parse`](Self::parse) never builds one), it stops there and the
    /// predicate does not match.
    pub fn eval<'a>(&self, get: &dyn Fn(&str) -> Option<&'a Value>) -> bool {
        self.eval_at(get, 1).unwrap_or(false)
    }

    /// [`eval`](Self::eval) of a predicate at nesting `depth`; `None` when too deep.
    fn eval_at<'a>(&self, get: &dyn Fn(&str) -> Option<&'a Value>, depth: usize) -> Option<bool> {
        let inner = |p: &Predicate| if depth < MAX_EVAL_DEPTH { p.eval_at(get, depth + 1) } else { None };
        Some(match self {
            Predicate::True => true,
            Predicate::And(ps) => {
                for p in ps {
                    if !inner(p)? {
                        return Some(false);
                    }
                }
                true
            }
            Predicate::Or(ps) => {
                for p in ps {
                    if inner(p)? {
                        return Some(true);
                    }
                }
                false
            }
            Predicate::Not(p) => !inner(p)?,
            Predicate::Exists { path, present } => get(path).is_some() == *present,
            Predicate::In { path, values, negated } => {
                let hit = get(path).is_some_and(|v| values.iter().any(|c| json_eq(v, c)));
                hit != *negated
            }
            Predicate::Cmp { path, op, value } => {
                let found = get(path);
                match op {
                    CmpOp::Eq => found.is_some_and(|v| json_eq(v, value)),
                    CmpOp::Ne => !found.is_some_and(|v| json_eq(v, value)),
                    _ => found.and_then(|v| json_cmp(v, value)).is_some_and(|o| match op {
                        CmpOp::Gt => o == Ordering::Greater,
                        CmpOp::Gte => o != Ordering::Less,
                        CmpOp::Lt => o == Ordering::Less,
                        CmpOp::Lte => o != Ordering::Greater,
                        CmpOp::Eq | CmpOp::Ne => false,
                    }),
                }
            }
        })
    }
}

/// Parses the predicate `v` at nesting `depth` (at most [`MAX_PREDICATE_DEPTH`]).
fn parse_obj(v: &Value, at: &str, depth: usize, problems: &mut Vec<Problem>) -> Predicate {
    let Value::Object(m) = v else {
        problems.push(Problem::new(at, "a predicate must be a JSON object"));
        return Predicate::True;
    };
    let mut all: Vec<Predicate> = m
        .iter()
        .map(|(k, val)| {
            let here = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            match k.as_str() {
                "$and" | "$or" => parse_list(k, val, &here, depth, problems),
                "$not" => match nested(depth, &here, problems) {
                    Some(d) => Predicate::Not(Box::new(parse_obj(val, &here, d, problems))),
                    None => Predicate::True,
                },
                op if op.starts_with('$') => {
                    problems.push(Problem::new(&here, format!("unknown operator {op}")));
                    Predicate::True
                }
                path => parse_field(path, val, &here, problems),
            }
        })
        .collect();
    match all.len() {
        0 => Predicate::True,
        1 => all.remove(0),
        _ => Predicate::And(all),
    }
}

/// The depth of a predicate nested in one at `depth`, or `None` (and a problem at `at`) when
/// that would pass [`MAX_PREDICATE_DEPTH`]: checked before recursing, never after.
fn nested(depth: usize, at: &str, problems: &mut Vec<Problem>) -> Option<usize> {
    if depth < MAX_PREDICATE_DEPTH {
        Some(depth + 1)
    } else {
        problems.push(Problem::new(at, format!("predicates nest at most {MAX_PREDICATE_DEPTH} levels deep")));
        None
    }
}

fn parse_list(op: &str, v: &Value, at: &str, depth: usize, problems: &mut Vec<Problem>) -> Predicate {
    let items = match v {
        Value::Array(a) if !a.is_empty() => a,
        _ => {
            problems.push(Problem::new(at, format!("{op} takes a non-empty array of predicates")));
            return Predicate::True;
        }
    };
    let Some(depth) = nested(depth, at, problems) else { return Predicate::True };
    let ps = items.iter().enumerate().map(|(i, p)| parse_obj(p, &format!("{at}[{i}]"), depth, problems)).collect();
    if op == "$and" { Predicate::And(ps) } else { Predicate::Or(ps) }
}

/// Copies an operand, unless it nests deeper than [`MAX_JSON_DEPTH`] (`Value::clone` and the
/// comparisons in [`Predicate::eval`] recurse over it).
fn operand(v: &Value, at: &str, problems: &mut Vec<Problem>) -> Value {
    match check_depth(v, MAX_JSON_DEPTH, at) {
        Ok(()) => v.clone(),
        Err(e) => {
            problems.extend(e.problems().iter().cloned());
            Value::Null
        }
    }
}

fn parse_field(path: &str, v: &Value, at: &str, problems: &mut Vec<Problem>) -> Predicate {
    if let Err(m) = crate::metamap::check_path(path) {
        problems.push(Problem::new(at, m));
    }
    let ops = match v {
        Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => m,
        _ => return Predicate::Cmp { path: path.to_owned(), op: CmpOp::Eq, value: operand(v, at, problems) },
    };
    let mut conds: Vec<Predicate> =
        ops.iter().map(|(op, operand)| parse_field_op(path, op, operand, &format!("{at}.{op}"), problems)).collect();
    if conds.len() == 1 { conds.remove(0) } else { Predicate::And(conds) }
}

fn parse_field_op(path: &str, op: &str, v: &Value, at: &str, problems: &mut Vec<Problem>) -> Predicate {
    let path = path.to_owned();
    let cmp_op = match op {
        "$eq" => Some(CmpOp::Eq),
        "$ne" => Some(CmpOp::Ne),
        "$gt" => Some(CmpOp::Gt),
        "$gte" => Some(CmpOp::Gte),
        "$lt" => Some(CmpOp::Lt),
        "$lte" => Some(CmpOp::Lte),
        _ => None,
    };
    if let Some(op) = cmp_op {
        return Predicate::Cmp { path, op, value: operand(v, at, problems) };
    }
    match op {
        "$in" | "$nin" => match operand(v, at, problems) {
            Value::Array(values) => Predicate::In { path, values, negated: op == "$nin" },
            Value::Null if !v.is_null() => Predicate::True, // too deep: reported by `operand`
            _ => {
                problems.push(Problem::new(at, format!("{op} takes an array")));
                Predicate::True
            }
        },
        "$exists" => match v {
            Value::Bool(present) => Predicate::Exists { path, present: *present },
            _ => {
                problems.push(Problem::new(at, "$exists takes true or false"));
                Predicate::True
            }
        },
        other => {
            problems.push(Problem::new(at, format!("unknown operator {other}")));
            Predicate::True
        }
    }
}

/// JSON equality with numbers compared numerically.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => json_cmp(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

/// Orders two JSON scalars of the same type; `None` for different types, arrays and objects.
pub fn json_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Some(i.cmp(&j)),
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => Some(i.cmp(&j)),
                _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
            },
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Predicate {
        Predicate::parse(&v).unwrap()
    }

    #[test]
    fn evaluates_each_operator() {
        let doc = json!({"status": "active", "age": 30, "score": 1.0, "tags": "a", "addr": {"city": "Oslo"}});
        assert!(p(json!({"status": "active", "addr.city": "Oslo"})).matches(&doc));
        assert!(p(json!({"age": {"$gte": 30, "$lt": 31}})).matches(&doc));
        assert!(!p(json!({"age": {"$gt": 30}})).matches(&doc));
        assert!(p(json!({"score": 1})).matches(&doc));
        assert!(p(json!({"tags": {"$in": ["b", "a"]}})).matches(&doc));
        assert!(p(json!({"tags": {"$nin": ["b"]}})).matches(&doc));
        assert!(p(json!({"plan": {"$exists": false}, "age": {"$exists": true}})).matches(&doc));
        assert!(p(json!({"$or": [{"age": 1}, {"status": "active"}]})).matches(&doc));
        assert!(!p(json!({"$and": [{"age": 30}, {"status": "gone"}]})).matches(&doc));
        assert!(p(json!({"$not": {"status": "gone"}})).matches(&doc));
        assert!(p(json!({"status": {"$ne": "gone"}, "missing": {"$ne": 1}})).matches(&doc));
        assert!(!p(json!({"status": {"$gt": 1}})).matches(&doc), "mixed types never order");
        assert!(p(json!({})).matches(&doc));
    }

    #[test]
    fn unknown_operators_are_errors() {
        for bad in [
            json!({"$where": "1"}),
            json!({"a": {"$regex": "x"}}),
            json!({"$or": []}),
            json!({"a": {"$in": 1}}),
            json!({"a": {"$exists": 1}}),
            json!([1]),
            json!({"$not": 3}),
        ] {
            let e = Predicate::parse(&bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Validation, "{bad}");
        }
        let e = Predicate::parse(&json!({"$or": [{"a": {"$foo": 1}}], "b": {"$bar": 2}})).unwrap_err();
        let paths: Vec<_> = e.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["$or[0].a.$foo", "b.$bar"]);
    }

    #[test]
    fn flat_maps_use_whole_paths() {
        let m = json!({"address.city": "Oslo"});
        assert!(p(json!({"address.city": "Oslo"})).matches_flat(m.as_object().unwrap()));
    }
}
