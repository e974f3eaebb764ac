//! Canonical JSON and checksums.
//!
//! The canonical form of a JSON value is what every checksum is computed over:
//! - object keys sorted by Unicode code point (Rust `str` order), each key once;
//! - no insignificant whitespace;
//! - strings escaped as `serde_json` does (`"`, `\`, control characters; other text raw);
//! - one number format: integers as decimal integers; a float with no fractional part and
//!   magnitude below 2^53 is written as an integer (`1.0` and `1` are the same number);
//!   other floats in shortest round-trip form.
//!
//! [`Checksum`] is SHA-256 over those bytes; [`ContentHash`] is BLAKE3 over raw bytes
//! (content addressing of externalized binary fields).

use std::fmt;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

const EXACT_FLOAT_INT_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Writes the canonical form of `value` to `out`.
pub fn write_canonical<W: Write>(value: &Value, out: &mut W) -> io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            out.write_all(b"{")?;
            if map.keys().is_sorted() {
                write_entries(map.iter(), out)?;
            } else {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                write_entries(entries.into_iter(), out)?;
            }
            out.write_all(b"}")
        }
    }
}

fn write_entries<'a, W: Write>(entries: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut W) -> io::Result<()> {
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_string(k, out)?;
        out.write_all(b":")?;
        write_canonical(v, out)?;
    }
    Ok(())
}

fn write_string<W: Write>(s: &str, out: &mut W) -> io::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.write_all(b"\"")?;
        out.write_all(s.as_bytes())?;
        out.write_all(b"\"")
    } else {
        serde_json::to_writer(&mut *out, s).map_err(io::Error::other)
    }
}

fn write_number<W: Write>(n: &serde_json::Number, out: &mut W) -> io::Result<()> {
    if let Some(i) = n.as_i64() {
        return write!(out, "{i}");
    }
    if let Some(u) = n.as_u64() {
        return write!(out, "{u}");
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < EXACT_FLOAT_INT_LIMIT => {
            // Exact: |f| < 2^53 so the conversion loses nothing.
            #[allow(clippy::cast_possible_truncation)]
            let i = f as i64;
            write!(out, "{i}")
        }
        // serde_json's Display for a float is its shortest round-trip form.
        _ => write!(out, "{n}"),
    }
}

/// The canonical bytes of `value`.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing to a Vec cannot fail.
    let _ = write_canonical(value, &mut out);
    out
}

/// `io::Write` into a SHA-256 hasher.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A SHA-256 checksum, shown and stored as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum([u8; 32]);

impl Checksum {
    /// SHA-256 of the canonical form of `value`, streamed without building the bytes.
    pub fn of_json(value: &Value) -> Self {
        // Feed the hasher in blocks: many tiny updates cost more than the hashing itself.
        let mut buffered = io::BufWriter::with_capacity(8 * 1024, HashWriter(Sha256::new()));
        // Hashing cannot fail.
        let _ = write_canonical(value, &mut buffered);
        let _ = buffered.flush();
        let (HashWriter(hasher), _) = buffered.into_parts();
        Self(hasher.finalize().into())
    }

    /// SHA-256 of raw bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        parse_hex32(s).map(Self).ok_or_else(|| Error::validation("checksum", format!("{s:?} is not 64 hex digits")))
    }

    /// Fails with [`ErrorKind::ChecksumMismatch`] unless `actual` equals `self`.
    pub fn verify(&self, actual: &Checksum, what: &str) -> Result<()> {
        if self == actual {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::ChecksumMismatch, format!("{what}: recorded sha256 {self}, computed {actual}")))
        }
    }
}

/// A BLAKE3 content hash of raw bytes (content addressing), 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// BLAKE3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        parse_hex32(s).map(Self).ok_or_else(|| Error::validation("content hash", format!("{s:?} is not 64 hex digits")))
    }
}

/// A stable 64-bit hash of `bytes` (first 8 bytes of BLAKE3, little-endian). Stable across
/// platforms and releases: routing depends on it.
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    let h = blake3::hash(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn write_hex(bytes: &[u8; 32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

macro_rules! hex_digest_impls {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(&self.0, f)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "("))?;
                write_hex(&self.0, f)?;
                f.write_str(")")
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $t::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
hex_digest_impls!(Checksum);
hex_digest_impls!(ContentHash);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_and_strips_space() {
        let v = json!({"b": [1, {"z": 1, "a": null}], "a": "x\"y", "é": true});
        assert_eq!(
            String::from_utf8(canonical_bytes(&v)).unwrap(),
            r#"{"a":"x\"y","b":[1,{"a":null,"z":1}],"é":true}"#
        );
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
    fn stable_hash_is_pinned() {
        assert_eq!(stable_hash64(b""), u64::from_le_bytes([0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6]));
    }
}
