//! proptest strategies, in one place, reused by every property test in the workspace.

use proptest::prelude::*;
use serde_json::{Map, Value};
use udm_core::{ObjectId, RouteContext};

/// Identifier characters, weighted toward the troublesome ones (`.`, `-`, `_`).
fn ident_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => prop::char::range('A', 'Z'),
        2 => prop::char::range('0', '9'),
        1 => Just('.'),
        1 => Just('-'),
        1 => Just('_'),
    ]
}

/// Any string of identifier characters (valid or not: leading dots, `..`, too long…).
pub fn ident_like(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(ident_char(), 0..=max).prop_map(|cs| cs.into_iter().collect())
}

/// Strings that try to break out: slashes, dots, `$`, NUL, control chars, unicode.
pub fn hostile_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("..".to_owned()),
        Just("$".to_owned()),
        Just("\0".to_owned()),
        Just("\n".to_owned()),
        Just("\\".to_owned()),
        Just("é".to_owned()),
        Just(" ".to_owned()),
        ident_like(6),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|ps| ps.concat())
}

/// A valid identifier.
pub fn valid_ident() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,8}(\\.[a-zA-Z0-9_-]{1,6}){0,2}"
}

/// A valid route context.
pub fn route_context() -> impl Strategy<Value = RouteContext> {
    (valid_ident(), valid_ident(), valid_ident())
        .prop_map(|(t, d, c)| RouteContext::new(&t, &d, &c).unwrap_or_else(|e| panic!("strategy produced {e}")))
}

/// A valid object id.
pub fn object_id() -> impl Strategy<Value = ObjectId> {
    valid_ident().prop_map(|s| ObjectId::new(s).unwrap_or_else(|e| panic!("strategy produced {e}")))
}

/// JSON scalars (numbers are integers or finite floats with a fractional part, so value
/// equality and canonical equality agree).
pub fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e6..1.0e6f64).prop_filter("non-integral", |f| f.fract() != 0.0).prop_map(Value::from),
        "[a-z\u{e9}\"\\\\ ]{0,8}".prop_map(Value::String),
    ]
}

/// Object keys (short, so random objects share keys and merges/diffs overlap).
pub fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-e]", 1 => "[a-z/~.]{0,4}"]
}

/// Any JSON value, nested up to `depth` levels.
pub fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(depth, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object (a valid document shape, without `_system`).
pub fn json_object(depth: u32) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(json_key(), json_value(depth), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}
