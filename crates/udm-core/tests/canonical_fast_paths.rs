//! The canonical encoder's fast paths (short strings checked and copied as words, remembered
//! key orders of same-shaped objects, in-place integers and floats) write exactly the bytes of
//! a plain reference encoder.

use serde_json::{Map, Value, json};
use udm_core::canonical::{self, Checksum, canonical_bytes, write_canonical};

/// Plain reference: keys sorted with `str` order, `serde_json` for strings and floats.
fn reference(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).unwrap();
                out.push(b':');
                reference(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                reference(item, out);
            }
            out.push(b']');
        }
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.extend_from_slice(i.to_string().as_bytes()),
            (_, Some(u), _) => out.extend_from_slice(u.to_string().as_bytes()),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                out.extend_from_slice((f as i64).to_string().as_bytes())
            }
            _ => out.extend_from_slice(n.to_string().as_bytes()),
        },
        other => serde_json::to_writer(&mut *out, other).unwrap(),
    }
}

fn assert_same(v: &Value) {
    let mut want = Vec::new();
    reference(v, &mut want);
    assert_eq!(String::from_utf8_lossy(&canonical_bytes(v)), String::from_utf8_lossy(&want));
    assert_eq!(Checksum::of_json(v), Checksum::of_bytes(&want));
    assert_eq!(canonical::encode(v), (want.clone(), Checksum::of_bytes(&want)));
    let mut written = Vec::new();
    write_canonical(v, &mut written).unwrap();
    assert_eq!(written, want);
}

fn object(pairs: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert((*k).to_owned(), v.clone());
    }
    Value::Object(m)
}

#[test]
fn strings_of_every_short_length_with_an_escape_at_every_position() {
    let mut all = Vec::new();
    for len in 0..=24usize {
        all.push(Value::String("a".repeat(len)));
        all.push(Value::String("é".repeat(len / 2) + &"z".repeat(len % 2)));
        for at in 0..len {
            for bad in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', ' ', '!', '#', '[', ']', 'ÿ'] {
                let mut s: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                s[at] = bad;
                let s: String = s.into_iter().collect();
                all.push(Value::String(s.clone()));
                // The same string as a key, and as a key of a repeated shape.
                all.push(object(&[(&s, json!(1)), ("k", json!(2))]));
                all.push(object(&[("k", json!(2)), (&s, json!(1))]));
            }
        }
    }
    for v in &all {
        assert_same(v);
    }
    assert_same(&Value::Array(all));
}

#[test]
fn same_shaped_objects_reuse_their_key_order_only_when_keys_match() {
    let mut records = Vec::new();
    for i in 0..50u64 {
        // Same count, same keys in the same order (a remembered shape) ...
        records.push(object(&[("id", json!(i)), ("score", json!(i as f64 * 1.25)), ("active", json!(true))]));
        // ... same count, other keys or order (must not reuse it).
        records.push(object(&[("active", json!(i)), ("id", json!(1)), ("score", json!(2))]));
        records.push(object(&[("id", json!(i)), ("scorf", json!(1)), ("active", json!(2))]));
        records.push(object(&[("iD", json!(i)), ("score", json!(1)), ("active", json!(2))]));
        records.push(object(&[("id", json!(i)), ("score", json!(1)), ("activf", json!(2))]));
        records.push(object(&[("idx", json!(i)), ("score", json!(1)), ("active", json!(2))]));
        // Keys differing only inside the words compared (1..=20 bytes, each position).
        let len = (i % 20 + 1) as usize;
        let base = "k".repeat(len);
        let mut other = base.clone().into_bytes();
        other[(i as usize * 7) % len] = b'j';
        let other = String::from_utf8(other).unwrap();
        records.push(object(&[(&base, json!(1)), ("a", json!(2)), ("", json!(3))]));
        records.push(object(&[(&other, json!(1)), ("a", json!(2)), ("", json!(3))]));
        // Counts sharing a shape slot (8 apart) and more than the remembered maximum.
        for n in [1usize, 9, 17, 65, 70] {
            let mut m = Map::new();
            for j in (0..n).rev() {
                m.insert(format!("f{}", (j * 31 + i as usize) % 97), json!(j));
            }
            records.push(Value::Object(m));
        }
        // Nested same-shaped objects, open at once.
        records.push(object(&[
            ("z", object(&[("y", object(&[("y", json!(1)), ("x", json!(2))])), ("x", json!(3))])),
            ("a", json!(null)),
        ]));
    }
    assert_same(&Value::Array(records.clone()));
    for r in &records {
        assert_same(r);
    }
}

#[test]
fn numbers_in_place() {
    let mut all = vec![json!(0), json!(-0.0), json!(u64::MAX), json!(i64::MIN), json!(f64::MIN_POSITIVE)];
    let mut p = 1u64;
    for _ in 0..20 {
        all.extend([json!(p), json!(p - 1), json!(p.wrapping_add(1))]);
        if let Ok(i) = i64::try_from(p) {
            all.extend([json!(-i), json!(1 - i)]);
        }
        all.extend([json!(p as f64), json!(-(p as f64)), json!(p as f64 + 0.5), json!(p as f64 * 1e-7)]);
        p = p.saturating_mul(10);
    }
    all.extend([json!(9_007_199_254_740_992.0), json!(-9_007_199_254_740_991.0), json!(-2.2250738585072014e-308)]);
    all.extend([json!(1e21), json!(1e-7), json!(123_456_789.123_456_79), json!(f64::MAX), json!(f64::MIN)]);
    for v in &all {
        assert_same(v);
    }
    assert_same(&Value::Array(all));
}

#[test]
fn long_values_cross_the_buffer() {
    let mut items = Vec::new();
    for len in [15usize, 16, 17, 255, 256, 257, 16 * 1024 - 1, 16 * 1024, 70_000] {
        items.push(Value::String("x".repeat(len)));
        items.push(Value::String(format!("{}\"", "y".repeat(len))));
        items.push(object(&[(&"k".repeat(len), json!(1.5)), ("a", json!("v"))]));
    }
    assert_same(&Value::Array(items.clone()));
    // Deep nesting (closing brackets in a row across a flush); tests/depth.rs covers 100k levels.
    let deep = (0..1_000).fold(json!(1), |v, i| if i % 2 == 0 { json!([v]) } else { json!({"k": v}) });
    assert_same(&json!({"items": items, "deep": deep}));
}
