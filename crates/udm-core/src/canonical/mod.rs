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

/// Bytes buffered between two hasher (or writer) calls (stays in L1/L2 between them).
const CHUNK: usize = 16 * 1024;

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

/// Room past the flush point: every step of the walk (a scalar, a key, a bracket, a comma)
/// writes at most this many bytes without checking for room; longer strings check.
const SLACK: usize = 256;

/// Objects with at most this many entries remember their key order (see [`Shape`]).
const SHAPE_MAX: usize = 64;

/// Remembered shapes, by entry count modulo this.
const SHAPES: usize = 8;

/// The keys of a recently sorted object, in its order, and where each lands once sorted: the
/// next object with exactly these keys in this order (records of one array, usually) is
/// placed without sorting. A hit compares every key, so it is never wrong, only faster.
#[derive(Default)]
struct Shape<'v> {
    keys: Vec<&'v str>,
    rank: Vec<u8>,
}

/// An open container of the walk: the rest of its elements, or its next entry (entries are
/// sorted, stacked in `Encoder::entries`; the open object's run ends at the stack's end).
enum Frame<'v> {
    Array(std::slice::Iter<'v, Value>),
    Object { start: usize, next: usize },
}

/// The iterative canonical encoder. It writes into a window of `buf` (bytes `[..pos]` are
/// written, `[pos..]` is zeroed room of at least `SLACK` past `limit`) with fixed-size stores,
/// and hands `buf[taken..pos]` to the sink once `pos` reaches `limit` (every `CHUNK` bytes).
struct Encoder<'v, S> {
    buf: Vec<u8>,
    pos: usize,
    /// Bytes of `buf` before this were handed to the sink (and kept).
    taken: usize,
    limit: usize,
    sink: S,
    frames: Vec<Frame<'v>>,
    /// Sorted entries of every open object, stacked.
    entries: Vec<(&'v str, &'v Value)>,
    shapes: Vec<Shape<'v>>,
    /// Scratch for [`Encoder::sort`].
    order: Vec<u8>,
    spare: Vec<(&'v str, &'v Value)>,
}

impl<'v, S: Sink> Encoder<'v, S> {
    fn new(sink: S) -> Self {
        Self {
            buf: vec![0; CHUNK + SLACK],
            pos: 0,
            taken: 0,
            limit: CHUNK,
            sink,
            frames: Vec::new(),
            entries: Vec::new(),
            shapes: Vec::new(),
            order: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Hands the written bytes to the sink and makes room for `need` more bytes past `SLACK`.
    #[cold]
    #[inline(never)]
    fn flush(&mut self, need: usize) -> io::Result<()> {
        if self.pos > self.taken {
            if self.sink.take(&self.buf[self.taken..self.pos])? {
                self.pos = 0;
            }
            self.taken = self.pos;
        }
        self.limit = self.pos + CHUNK;
        let want = self.limit + need + SLACK;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        Ok(())
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    #[inline(always)]
    fn bytes<const N: usize>(&mut self, b: &[u8; N]) {
        self.buf[self.pos..self.pos + N].copy_from_slice(b);
        self.pos += N;
    }

    /// Writes `b`, making room first if it is long.
    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        if self.pos + b.len() > self.buf.len() {
            self.flush(b.len())?;
        }
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
        Ok(())
    }

    /// Writes `s` as a JSON string, followed by `colon` when set (object keys).
    #[inline(always)]
    fn string(&mut self, s: &str, colon: bool) -> io::Result<()> {
        let b = s.as_bytes();
        let n = b.len();
        if n <= 16 {
            // Short (most keys and values): checked and copied as at most two overlapping
            // words each way, no loop and no `memcpy` call.
            let bad = if n >= 8 {
                bad_bytes(le64(b, 0)) | bad_bytes(le64(b, n - 8))
            } else if n >= 4 {
                bad_bytes(le32(b, 0) | (le32(b, n - 4) << 32))
            } else {
                let mut x = PLAIN;
                for (i, &c) in b.iter().enumerate() {
                    x = (x & !(0xff << (8 * i))) | (u64::from(c) << (8 * i));
                }
                bad_bytes(x)
            };
            if bad == 0 {
                let p = self.pos;
                let w = &mut self.buf[p..p + 20];
                w[0] = b'"';
                if n >= 8 {
                    w[1..9].copy_from_slice(&b[..8]);
                    w[n - 7..][..8].copy_from_slice(&b[n - 8..][..8]);
                } else if n >= 4 {
                    w[1..5].copy_from_slice(&b[..4]);
                    w[n - 3..][..4].copy_from_slice(&b[n - 4..][..4]);
                } else {
                    for (i, &c) in b.iter().enumerate() {
                        w[1 + i] = c;
                    }
                }
                w[n + 1] = b'"';
                w[n + 2] = b':';
                self.pos = p + n + 2 + usize::from(colon);
                return Ok(());
            }
        } else if !needs_escape(b) {
            if self.pos + n + 3 > self.buf.len() {
                self.flush(n + 3)?;
            }
            let p = self.pos;
            self.buf[p] = b'"';
            self.buf[p + 1..p + 1 + n].copy_from_slice(b);
            self.buf[p + 1 + n] = b'"';
            self.buf[p + 2 + n] = b':';
            self.pos = p + n + 2 + usize::from(colon);
            return Ok(());
        }
        self.escaped(s, colon)
    }

    /// A string that needs escaping, escaped by `serde_json` itself.
    #[cold]
    fn escaped(&mut self, s: &str, colon: bool) -> io::Result<()> {
        let mut out = Vec::with_capacity(s.len() + 8);
        // serde_json's own escaping; writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, s);
        if colon {
            out.push(b':');
        }
        self.raw(&out)
    }

    #[inline]
    fn number(&mut self, n: &serde_json::Number) {
        if let Some(u) = n.as_u64() {
            return self.integer(u, false);
        }
        if let Some(i) = n.as_i64() {
            return self.integer(i.unsigned_abs(), i < 0);
        }
        match n.as_f64() {
            // `(f as i64) as f64 == f` is `f.fract() == 0.0` for |f| < 2^53 (exact there), without
            // the `trunc` call.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            Some(f) if f.abs() < EXACT_FLOAT_INT_LIMIT && (f as i64) as f64 == f => {
                let i = f as i64;
                self.integer(i.unsigned_abs(), i < 0);
            }
            _ => self.float(n),
        }
    }

    /// A float in `serde_json`'s shortest round-trip form (at most 24 bytes), written in place.
    #[inline(never)]
    fn float(&mut self, n: &serde_json::Number) {
        let mut w: &mut [u8] = &mut self.buf[self.pos..self.pos + 32];
        let _ = serde_json::to_writer(&mut w, n);
        let left = w.len();
        self.pos += 32 - left;
    }

    /// Decimal digits of `u`, with a leading `-` when `negative` (never for zero).
    #[inline]
    fn integer(&mut self, mut u: u64, negative: bool) {
        if negative {
            self.byte(b'-');
        }
        let len = decimal_len(u);
        let p = self.pos;
        let w = &mut self.buf[p..p + 20];
        let mut at = len;
        while u >= 100 {
            #[allow(clippy::cast_possible_truncation)]
            let r = (u % 100) as usize;
            u /= 100;
            at -= 2;
            w[at..at + 2].copy_from_slice(&DIGIT_PAIRS[2 * r..2 * r + 2]);
        }
        #[allow(clippy::cast_possible_truncation)]
        if u >= 10 {
            let r = u as usize;
            w[..2].copy_from_slice(&DIGIT_PAIRS[2 * r..2 * r + 2]);
        } else {
            w[0] = b'0' + u as u8;
        }
        self.pos = p + len;
    }

    /// Stacks the entries of `map` (non-empty) in key order.
    #[inline]
    fn push_entries(&mut self, map: &'v Map<String, Value>, filler: &'v Value) {
        let start = self.entries.len();
        let n = map.len();
        if let Some(shape) = self.shapes.get(n % SHAPES)
            && shape.keys.len() == n
            && shape.keys.iter().zip(map.keys()).all(|(a, b)| key_eq(a, b))
        {
            self.entries.resize(start + n, ("", filler));
            let mine = &mut self.entries[start..];
            for ((k, v), &r) in map.iter().zip(&shape.rank) {
                mine[usize::from(r)] = (k.as_str(), v);
            }
            return;
        }
        self.entries.extend(map.iter().map(|(k, v)| (k.as_str(), v)));
        self.sort(start);
    }

    /// Sorts `entries[start..]` by key, remembering the shape of a small object.
    fn sort(&mut self, start: usize) {
        let mine = &mut self.entries[start..];
        let n = mine.len();
        if n > SHAPE_MAX {
            if !mine.is_sorted_by(|a, b| key_cmp(a.0, b.0).is_le()) {
                mine.sort_unstable_by(|a, b| key_cmp(a.0, b.0));
            }
            return;
        }
        if self.shapes.is_empty() {
            self.shapes.resize_with(SHAPES, Shape::default);
        }
        let shape = &mut self.shapes[n % SHAPES];
        shape.keys.clear();
        shape.keys.extend(mine.iter().map(|e| e.0));
        #[allow(clippy::cast_possible_truncation)] // n <= SHAPE_MAX
        let n8 = n as u8;
        shape.rank.clear();
        if mine.is_sorted_by(|a, b| key_cmp(a.0, b.0).is_le()) {
            shape.rank.extend(0..n8);
            return;
        }
        let keys = &shape.keys;
        self.order.clear();
        self.order.extend(0..n8);
        self.order.sort_unstable_by(|&a, &b| key_cmp(keys[usize::from(a)], keys[usize::from(b)]));
        shape.rank.resize(n, 0);
        self.spare.clear();
        self.spare.extend_from_slice(mine);
        for (at, &from) in (0..n8).zip(&self.order) {
            shape.rank[usize::from(from)] = at;
            mine[usize::from(at)] = self.spare[usize::from(from)];
        }
    }

    fn encode(mut self, root: &'v Value) -> io::Result<(Vec<u8>, S)> {
        let mut v = root;
        'walk: loop {
            if self.pos >= self.limit {
                self.flush(0)?;
            }
            // Write `v`, or open it and go down to its first child.
            match v {
                Value::Null => self.bytes(b"null"),
                Value::Bool(true) => self.bytes(b"true"),
                Value::Bool(false) => self.bytes(b"false"),
                Value::Number(n) => self.number(n),
                Value::String(s) => self.string(s, false)?,
                Value::Array(items) => match items.split_first() {
                    None => self.bytes(b"[]"),
                    Some((first, rest)) => {
                        self.byte(b'[');
                        self.frames.push(Frame::Array(rest.iter()));
                        v = first;
                        continue;
                    }
                },
                Value::Object(map) if map.is_empty() => self.bytes(b"{}"),
                Value::Object(map) => {
                    self.byte(b'{');
                    let start = self.entries.len();
                    self.push_entries(map, v);
                    let (k, first) = self.entries[start];
                    self.frames.push(Frame::Object { start, next: start + 1 });
                    self.string(k, true)?;
                    v = first;
                    continue;
                }
            }
            // Go up until an open container has a next child.
            loop {
                if self.pos >= self.limit {
                    self.flush(0)?;
                }
                match self.frames.last_mut() {
                    None => break 'walk,
                    Some(Frame::Array(items)) => match items.next() {
                        Some(item) => {
                            self.byte(b',');
                            v = item;
                            continue 'walk;
                        }
                        None => {
                            self.byte(b']');
                            self.frames.pop();
                        }
                    },
                    Some(Frame::Object { start, next }) => match self.entries.get(*next) {
                        Some(&(k, item)) => {
                            *next += 1;
                            self.byte(b',');
                            self.string(k, true)?;
                            v = item;
                            continue 'walk;
                        }
                        None => {
                            let start = *start;
                            self.byte(b'}');
                            self.entries.truncate(start);
                            self.frames.pop();
                        }
                    },
                }
            }
        }
        if self.pos > self.taken {
            self.sink.take(&self.buf[self.taken..self.pos])?;
        }
        self.buf.truncate(self.pos);
        Ok((self.buf, self.sink))
    }
}

/// Writes the canonical form of `value` to `out`.
pub fn write_canonical<W: Write>(value: &Value, out: &mut W) -> io::Result<()> {
    Encoder::new(ToWriter(out)).encode(value).map(|_| ())
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

/// `a == b`, inline (no `memcmp` call) for keys of up to 16 bytes.
#[inline(always)]
fn key_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        false
    } else if (8..=16).contains(&n) {
        le64(a, 0) == le64(b, 0) && le64(a, n - 8) == le64(b, n - 8)
    } else if (4..8).contains(&n) {
        le32(a, 0) == le32(b, 0) && le32(a, n - 4) == le32(b, n - 4)
    } else if n < 4 {
        n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1])
    } else {
        a == b
    }
}

#[inline(always)]
fn le64(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn le32(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

const ONES: u64 = 0x0101_0101_0101_0101;
/// Eight bytes that need no escaping (`a`).
const PLAIN: u64 = ONES * 0x61;

/// Nonzero when some byte of `x` is a control character, `"` or `\` (the bytes JSON escapes;
/// exact as a yes/no answer, the classic "has zero byte" / "has byte less than" tricks).
#[inline(always)]
fn bad_bytes(x: u64) -> u64 {
    const HIGH: u64 = ONES * 0x80;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (x.wrapping_sub(ONES * 0x20) | quote.wrapping_sub(ONES) | backslash.wrapping_sub(ONES)) & !x & HIGH
}

/// Whether `s` needs escaping. Checked 16 bytes at a time without early exit inside a block,
/// so the compiler vectorizes it.
fn needs_escape(s: &[u8]) -> bool {
    let bad = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut blocks = s.chunks_exact(16);
    let hit = blocks.by_ref().any(|block| block.iter().fold(false, |acc, &b| acc | bad(b)));
    hit || blocks.remainder().iter().any(|&b| bad(b))
}

static DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Number of decimal digits of `u`.
#[inline]
fn decimal_len(u: u64) -> usize {
    let mut n = 1;
    let mut x = u;
    while x >= 10_000 {
        x /= 10_000;
        n += 4;
    }
    if x >= 1000 {
        n + 3
    } else if x >= 100 {
        n + 2
    } else if x >= 10 {
        n + 1
    } else {
        n
    }
}

/// The canonical bytes of `value`.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    // Keeping bytes in a Vec cannot fail.
    Encoder::new(Keep).encode(value).map(|(bytes, _)| bytes).unwrap_or_default()
}

/// The canonical bytes of `value` and their [`Checksum`], serialized once (for writers that
/// store the bytes and record the checksum).
pub fn encode(value: &Value) -> (Vec<u8>, Checksum) {
    let sink = Hash { hasher: Sha256::new(), keep: true };
    match Encoder::new(sink).encode(value) {
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
        match Encoder::new(sink).encode(value) {
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
mod tests;
