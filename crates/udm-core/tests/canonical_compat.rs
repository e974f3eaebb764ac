//! The iterative canonical encoder writes exactly the bytes of the original recursive one
//! (kept here, verbatim in behaviour, as the reference), so stored checksums stay valid.

use std::io::{self, Write};

use proptest::prelude::*;
use serde_json::{Value, json};
use udm_core::canonical::{self, Checksum, canonical_bytes, write_canonical};
use udm_testkit::arbitrary::{json_object, json_value};

/// The pre-optimization encoder (recursive, `write!` formatting), as the reference.
fn reference<W: Write>(value: &Value, out: &mut W) -> io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return write!(out, "{i}");
            }
            if let Some(u) = n.as_u64() {
                return write!(out, "{u}");
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => write!(out, "{}", f as i64),
                _ => write!(out, "{n}"),
            }
        }
        Value::String(s) => serde_json::to_writer(&mut *out, s).map_err(io::Error::other),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                reference(item, out)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            out.write_all(b"{")?;
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, k).map_err(io::Error::other)?;
                out.write_all(b":")?;
                reference(v, out)?;
            }
            out.write_all(b"}")
        }
    }
}

fn reference_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    reference(v, &mut out).unwrap();
    out
}

fn assert_same(v: &Value) {
    let want = reference_bytes(v);
    assert_eq!(canonical_bytes(v), want, "{v}");
    assert_eq!(Checksum::of_json(v), Checksum::of_bytes(&want), "{v}");
    assert_eq!(canonical::encode(v), (want.clone(), Checksum::of_bytes(&want)), "{v}");
    let mut written = Vec::new();
    write_canonical(v, &mut written).unwrap();
    assert_eq!(written, want, "{v}");
}

#[test]
fn edge_numbers_and_strings() {
    for v in [
        json!(0),
        json!(-0.0),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(-1),
        json!(1.0),
        json!(-3.0),
        json!(0.1),
        json!(1e300),
        json!(-1e-300),
        json!(9_007_199_254_740_992.0),
        json!(9_007_199_254_740_991.0),
        json!(-9_007_199_254_740_991.0),
        json!(f64::MAX),
        json!(f64::MIN_POSITIVE),
        json!(""),
        json!("plain"),
        json!("q\"b\\c\n\t\u{1}\u{7f}é😀"),
        json!({"b": 1, "a": 2, "é": 3, "A": 4, "": 5, "a\n": 6}),
        json!([[], {}, [{}], {"x": []}]),
    ] {
        assert_same(&v);
    }
}

#[test]
fn larger_than_one_chunk() {
    // Crosses the encoder's internal buffer boundary many times, in strings and structure.
    let big: Vec<Value> = (0..20_000u32)
        .map(|i| json!({"n": i, "s": "x".repeat((i % 50) as usize), "f": f64::from(i) * 0.37, "e": "a\"b"}))
        .collect();
    assert_same(&json!({"big": big, "long": "y".repeat(200_000)}));
}

proptest! {
    #[test]
    fn same_bytes_as_the_reference(v in json_value(4)) {
        assert_same(&v);
    }

    #[test]
    fn same_bytes_for_objects(v in json_object(5)) {
        assert_same(&v);
    }
}
