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
//!
//! The encoder is iterative (an explicit stack, never recursion), so any nesting depth is
//! safe; it writes into one buffer that is hashed in large chunks. [`encode`] produces the
//! bytes and their checksum in one pass, for writers that need both.
//!
//! This module also holds the JSON walk helpers the rest of the crate uses to stay safe on
//! hostile nesting: [`MAX_JSON_DEPTH`], [`check_depth`] and an iterative deep clone.

use std::cmp::Ordering;
use std::fmt;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

const EXACT_FLOAT_INT_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Deepest nesting (objects/arrays; `{}` is 1) that recursive walks over caller JSON accept.
///
/// [`Limits::default().max_depth`](crate::validate::Limits) is 100; this leaves slack above it
/// (and equals `serde_json`'s parser recursion limit), so every valid document passes while a
/// hostile one is rejected with [`ErrorKind::Validation`] instead of overflowing the stack.
/// Walks that are iterative (canonical encoding, checksums, diff, drift) need no bound.
pub const MAX_JSON_DEPTH: usize = 128;

/// Bytes buffered between two hasher (or writer) calls.
const CHUNK: usize = 64 * 1024;

/// Fails with [`ErrorKind::Validation`] at `what` when `value` nests deeper than `max` levels
/// (a scalar is 0, `{}` or `[]` is 1). Iterative, and stops at the first level past `max`.
pub fn check_depth(value: &Value, max: usize, what: &str) -> Result<()> {
    if exceeds_depth(value, max) {
        Err(Error::validation(what, format!("nests deeper than {max} levels")))
    } else {
        Ok(())
    }
}

/// The children of one container being walked.
enum Children<'v> {
    Array(std::slice::Iter<'v, Value>),
    Object(serde_json::map::Values<'v>),
}

impl<'v> Children<'v> {
    fn of(v: &'v Value) -> Option<Self> {
        match v {
            Value::Array(a) => Some(Self::Array(a.iter())),
            Value::Object(m) => Some(Self::Object(m.values())),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<&'v Value> {
        match self {
            Self::Array(it) => it.next(),
            Self::Object(it) => it.next(),
        }
    }
}

fn exceeds_depth(root: &Value, max: usize) -> bool {
    let mut stack: Vec<Children<'_>> = Vec::new();
    let mut next = Some(root);
    loop {
        if let Some(children) = next.take().and_then(Children::of) {
            if stack.len() >= max {
                return true;
            }
            stack.push(children);
        }
        match stack.last_mut() {
            None => return false,
            Some(top) => match top.next() {
                Some(child) => next = Some(child),
                None => {
                    stack.pop();
                }
            },
        }
    }
}

/// A container being rebuilt by [`clone_value`].
enum Partial<'v> {
    Array(std::slice::Iter<'v, Value>, Vec<Value>),
    Object(serde_json::map::Iter<'v>, Map<String, Value>, String),
}

impl Partial<'_> {
    fn finish(self) -> Value {
        match self {
            Self::Array(_, out) => Value::Array(out),
            Self::Object(_, out, _) => Value::Object(out),
        }
    }
}

/// A deep copy of `root`, built with an explicit stack (`Value::clone` recurses).
pub(crate) fn clone_value(root: &Value) -> Value {
    let mut stack: Vec<Partial<'_>> = Vec::new();
    let mut next = Some(root);
    loop {
        let mut done = match next.take() {
            Some(Value::Array(a)) => {
                stack.push(Partial::Array(a.iter(), Vec::with_capacity(a.len())));
                None
            }
            Some(Value::Object(m)) => {
                stack.push(Partial::Object(m.iter(), Map::with_capacity(m.len()), String::new()));
                None
            }
            Some(scalar) => Some(scalar.clone()),
            None => None,
        };
        loop {
            let Some(top) = stack.last_mut() else { return done.unwrap_or(Value::Null) };
            if let Some(v) = done.take() {
                match top {
                    Partial::Array(_, out) => out.push(v),
                    Partial::Object(_, out, key) => {
                        out.insert(std::mem::take(key), v);
                    }
                }
            }
            let child = match top {
                Partial::Array(it, _) => it.next(),
                Partial::Object(it, _, key) => it.next().map(|(k, v)| {
                    key.clone_from(k);
                    v
                }),
            };
            match child {
                Some(c) => {
                    next = Some(c);
                    break;
                }
                None => done = stack.pop().map(Partial::finish),
            }
        }
    }
}

/// Where the encoder hands its bytes.
trait Sink {
    /// Takes `bytes`; `Ok(true)` means they may be dropped from the buffer.
    fn take(&mut self, bytes: &[u8]) -> io::Result<bool>;
}

/// Keeps everything in the buffer (plain canonical bytes).
struct Keep;

impl Sink for Keep {
    fn take(&mut self, _: &[u8]) -> io::Result<bool> {
        Ok(false)
    }
}

/// Hashes bytes; `keep` also leaves them in the buffer (bytes and checksum in one pass).
struct Hash {
    hasher: Sha256,
    keep: bool,
}

impl Sink for Hash {
    fn take(&mut self, bytes: &[u8]) -> io::Result<bool> {
        self.hasher.update(bytes);
        Ok(!self.keep)
    }
}

/// Forwards bytes to an `io::Write`.
struct ToWriter<'w, W>(&'w mut W);

impl<W: Write> Sink for ToWriter<'_, W> {
    fn take(&mut self, bytes: &[u8]) -> io::Result<bool> {
        self.0.write_all(bytes)?;
        Ok(true)
    }
}

/// An open container of the walk: its elements, or its entries (sorted) in `Encoder::entries`.
enum Frame<'v> {
    Array(std::slice::Iter<'v, Value>, bool),
    Object { start: usize, next: usize },
}

/// The iterative canonical encoder.
struct Encoder<'v, S> {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed to the sink (and kept).
    taken: usize,
    sink: S,
    frames: Vec<Frame<'v>>,
    /// Sorted entries of every open object, stacked.
    entries: Vec<(&'v str, &'v Value)>,
}

impl<'v, S: Sink> Encoder<'v, S> {
    fn new(sink: S, capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity), taken: 0, sink, frames: Vec::new(), entries: Vec::new() }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.len() > self.taken {
            if self.sink.take(&self.buf[self.taken..])? {
                self.buf.clear();
            }
            self.taken = self.buf.len();
        }
        Ok(())
    }

    fn encode(mut self, root: &'v Value) -> io::Result<(Vec<u8>, S)> {
        let mut next = Some(root);
        loop {
            if let Some(v) = next.take() {
                self.open(v);
                if self.buf.len() - self.taken >= CHUNK {
                    self.flush()?;
                }
            }
            next = match self.frames.last_mut() {
                None => break,
                Some(Frame::Array(items, first)) => match items.next() {
                    Some(item) => {
                        if !std::mem::replace(first, false) {
                            self.buf.push(b',');
                        }
                        Some(item)
                    }
                    None => {
                        self.buf.push(b']');
                        self.frames.pop();
                        None
                    }
                },
                Some(Frame::Object { start, next }) => match self.entries.get(*next) {
                    Some(&(k, v)) => {
                        if *next > *start {
                            self.buf.push(b',');
                        }
                        *next += 1;
                        write_string(k, &mut self.buf);
                        self.buf.push(b':');
                        Some(v)
                    }
                    None => {
                        let start = *start;
                        self.buf.push(b'}');
                        self.entries.truncate(start);
                        self.frames.pop();
                        None
                    }
                },
            };
        }
        self.flush()?;
        Ok((self.buf, self.sink))
    }

    /// Writes a scalar, or opens a container (pushing its frame).
    fn open(&mut self, v: &'v Value) {
        match v {
            Value::Null => self.buf.extend_from_slice(b"null"),
            Value::Bool(b) => self.buf.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Number(n) => write_number(n, &mut self.buf),
            Value::String(s) => write_string(s, &mut self.buf),
            Value::Array(items) => {
                self.buf.push(b'[');
                self.frames.push(Frame::Array(items.iter(), true));
            }
            Value::Object(map) => {
                self.buf.push(b'{');
                let start = self.entries.len();
                self.entries.extend(map.iter().map(|(k, v)| (k.as_str(), v)));
                let mine = &mut self.entries[start..];
                if !mine.is_sorted_by(|a, b| key_cmp(a.0, b.0).is_le()) {
                    mine.sort_unstable_by(|a, b| key_cmp(a.0, b.0));
                }
                self.frames.push(Frame::Object { start, next: start });
            }
        }
    }
}

/// Writes the canonical form of `value` to `out`.
pub fn write_canonical<W: Write>(value: &Value, out: &mut W) -> io::Result<()> {
    Encoder::new(ToWriter(out), CHUNK + 1024).encode(value).map(|_| ())
}

/// `str` order (= code point order, as UTF-8 preserves it), comparing inline: object keys are
/// short and usually differ in their first bytes, where a `memcmp` call costs more than the
/// comparison.
fn key_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Whether `s` needs escaping. Checked 16 bytes at a time without early exit inside a block,
/// so the compiler vectorizes it.
fn needs_escape(s: &[u8]) -> bool {
    let bad = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut blocks = s.chunks_exact(16);
    let hit = blocks.by_ref().any(|block| block.iter().fold(false, |acc, &b| acc | bad(b)));
    hit || blocks.remainder().iter().any(|&b| bad(b))
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // serde_json's own escaping; writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn write_number(n: &serde_json::Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        return write_u64(u, false, out);
    }
    if let Some(i) = n.as_i64() {
        return write_u64(i.unsigned_abs(), i < 0, out);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < EXACT_FLOAT_INT_LIMIT => {
            // Exact: |f| < 2^53 so the conversion loses nothing.
            #[allow(clippy::cast_possible_truncation)]
            let i = f as i64;
            write_u64(i.unsigned_abs(), i < 0, out);
        }
        // serde_json writes a float in its shortest round-trip form (as its Display does).
        _ => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
    }
}

/// Decimal digits of `u`, with a leading `-` when `negative` (never for zero).
fn write_u64(mut u: u64, negative: bool, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        #[allow(clippy::cast_possible_truncation)]
        let d = (u % 10) as u8;
        digits[at] = b'0' + d;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

/// The canonical bytes of `value`.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    // Keeping bytes in a Vec cannot fail.
    Encoder::new(Keep, 256).encode(value).map(|(bytes, _)| bytes).unwrap_or_default()
}

/// The canonical bytes of `value` and their [`Checksum`], serialized once (for writers that
/// store the bytes and record the checksum).
pub fn encode(value: &Value) -> (Vec<u8>, Checksum) {
    let sink = Hash { hasher: Sha256::new(), keep: true };
    match Encoder::new(sink, 256).encode(value) {
        Ok((bytes, sink)) => (bytes, Checksum(sink.hasher.finalize().into())),
        // Unreachable (hashing cannot fail); recompute plainly rather than panic.
        Err(_) => {
            let bytes = canonical_bytes(value);
            let sum = Checksum::of_bytes(&bytes);
            (bytes, sum)
        }
    }
}

/// A SHA-256 checksum, shown and stored as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum([u8; 32]);

impl Checksum {
    /// SHA-256 of the canonical form of `value`, streamed in chunks without keeping the bytes.
    pub fn of_json(value: &Value) -> Self {
        let sink = Hash { hasher: Sha256::new(), keep: false };
        match Encoder::new(sink, CHUNK + 1024).encode(value) {
            Ok((_, sink)) => Self(sink.hasher.finalize().into()),
            // Unreachable (hashing cannot fail); recompute plainly rather than panic.
            Err(_) => Self::of_bytes(&canonical_bytes(value)),
        }
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
}
