//! Unit tests of the canonical encoder and the digest types.

use super::*;
use serde_json::json;

#[test]
fn canonical_sorts_keys_and_strips_space() {
    let v = json!({"b": [1, {"z": 1, "a": null}], "a": "x\"y", "é": true});
    assert_eq!(String::from_utf8(canonical_bytes(&v)).unwrap(), r#"{"a":"x\"y","b":[1,{"a":null,"z":1}],"é":true}"#);
}

#[test]
fn one_number_format() {
    assert_eq!(canonical_bytes(&json!(1.0)), b"1");
    assert_eq!(canonical_bytes(&json!(-3.0)), b"-3");
    assert_eq!(canonical_bytes(&json!(1.5)), b"1.5");
    assert_eq!(canonical_bytes(&json!(u64::MAX)), b"18446744073709551615");
    assert_eq!(canonical_bytes(&json!(1e300)), b"1e+300");
}

#[test]
fn checksum_streaming_equals_bytes() {
    let v = json!({"k": [1, 2, "three"], "n": {"x": 0.25}});
    assert_eq!(Checksum::of_json(&v), Checksum::of_bytes(&canonical_bytes(&v)));
    // Pinned: must never change, stored checksums depend on it.
    assert_eq!(
        Checksum::of_json(&json!({})).to_string(),
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
}

#[test]
fn hex_round_trip_and_rejects() {
    let c = Checksum::of_bytes(b"abc");
    assert_eq!(Checksum::from_hex(&c.to_string()).unwrap(), c);
    assert!(Checksum::from_hex("zz").is_err());
    assert!(Checksum::from_hex(&"A".repeat(64)).is_err());
    let e = c.verify(&Checksum::of_bytes(b"abd"), "snapshot").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch);
}

#[test]
fn encode_is_bytes_and_checksum() {
    let v = json!({"z": [1.5, -2, "a\nb", {"y": null, "x": true}], "a": 18446744073709551615u64});
    let (bytes, sum) = encode(&v);
    assert_eq!(bytes, canonical_bytes(&v));
    assert_eq!(sum, Checksum::of_json(&v));
    assert_eq!(sum, Checksum::of_bytes(&bytes));
    let mut written = Vec::new();
    write_canonical(&v, &mut written).unwrap();
    assert_eq!(written, bytes);
}

#[test]
fn depth_check_and_iterative_clone() {
    let v = json!({"a": [{"b": []}], "c": 1});
    assert!(check_depth(&v, 4, "doc").is_ok());
    let e = check_depth(&v, 3, "doc").unwrap_err();
    assert_eq!((e.kind(), e.problems()[0].path.as_str()), (ErrorKind::Validation, "doc"));
    assert!(check_depth(&json!(1), 0, "doc").is_ok());
    assert!(check_depth(&json!({}), 0, "doc").is_err());
    assert_eq!(clone_value(&v), v);
    assert_eq!(clone_value(&json!("s")), json!("s"));
}

#[test]
fn stable_hash_is_pinned() {
    assert_eq!(stable_hash64(b""), u64::from_le_bytes([0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6]));
}
