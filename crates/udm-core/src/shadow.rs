//! The shadow commit log: what makes the blob store a self-sufficient copy.
//!
//! A snapshot envelope holds a version's data and everything written with it, but two facts
//! only exist once the metadata transaction commits: the version's **CV**, and **which**
//! snapshot of an OV committed (a write whose commit failed can leave another snapshot of
//! the same OV behind). The commit log records them: after commits, a flusher reads the
//! committed versions the log lacks from the metadata store (in CV order, from the
//! collection's *logged* watermark) and writes them to the blob store as one **segment**
//! `…/<collection>/log/<first cv:020>-<last cv:020>.json`, then advances the watermark.
//!
//! Segment format `udm.log.v1` (canonical JSON, see [`LogSegment::encode`]):
//! `{"ctx":…,"entries":[{"fingerprint":…,"record":VersionRecord}…],"first":n,"format":"udm.log.v1","last":m,"seal":sha256}`
//! where `seal` is the SHA-256 of the canonical bytes of the same object without `seal`.
//!
//! A crash between a segment's put and the watermark's advance makes the next flush write
//! an overlapping segment: [`committed_versions`] merges segments by CV (equal entries are
//! the same fact; different entries for one CV are corruption).
//!
//! ```
//! use udm_core::shadow::{LogSegment, committed_versions};
//! let ctx = udm_core::RouteContext::new("t", "db", "c").unwrap();
//! let bytes = LogSegment::encode(&ctx, udm_core::Cv(0), udm_core::Cv(0), Vec::new()).unwrap();
//! let segment = LogSegment::decode(&bytes).unwrap();
//! assert!(committed_versions(vec![segment]).unwrap().is_empty());
//! ```

pub mod index;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canonical::{Checksum, canonical_bytes};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ObjectKey, RouteContext};
use crate::version::{Cv, Ov, VersionRecord};

/// The segment format this version writes and reads.
pub const LOG_FORMAT: &str = "udm.log.v1";

/// One committed version as the log records it: the record (key, OV, CV, op, timestamp,
/// provenance with the request id, the committed snapshot's key, checksum and seal,
/// `restoredFrom`, deleted) and the payload fingerprint of its request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The version record, as the metadata store holds it.
    pub record: VersionRecord,
    /// The fingerprint its request id is recorded with (replays after a rebuild).
    pub fingerprint: Checksum,
}

/// What the shadow log of a collection lacks ([`MetaStore::shadow_pending`](crate::ports::MetaStore::shadow_pending)):
/// the committed versions with a CV in `after + 1 ..= upto`, in CV order (versions pruned or
/// hard-deleted since their commit are absent). `after == upto` means the log is complete.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowPending {
    /// The logged watermark: every version up to this CV is in the log.
    pub after: Cv,
    /// The last CV this batch covers.
    pub upto: Cv,
    /// The versions to log.
    pub entries: Vec<LogEntry>,
}

/// A decoded, verified segment.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSegment {
    /// The collection.
    pub ctx: RouteContext,
    /// The CV range it covers (`first..=last`; versions pruned before the flush are absent).
    pub first: Cv,
    /// See `first`.
    pub last: Cv,
    /// The committed versions of the range, in CV order.
    pub entries: Vec<LogEntry>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    ctx: RouteContext,
    entries: Vec<LogEntry>,
    first: Cv,
    format: String,
    last: Cv,
}

fn sealed_value(stored: &Stored) -> Result<(Value, Checksum)> {
    let value = serde_json::to_value(stored).map_err(|e| Error::internal(format!("log segment: {e}")))?;
    let seal = Checksum::of_bytes(&canonical_bytes(&value));
    Ok((value, seal))
}

fn corrupt(why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::ChecksumMismatch, format!("log segment: {why}"))
}

impl LogSegment {
    /// The canonical bytes of the segment covering `first..=last` of `ctx` with `entries`
    /// (in CV order, inside the range, all of `ctx`; else a validation error).
    pub fn encode(ctx: &RouteContext, first: Cv, last: Cv, entries: Vec<LogEntry>) -> Result<Vec<u8>> {
        check_entries(ctx, first, last, &entries).map_err(|m| Error::validation("entries", m))?;
        let stored = Stored { ctx: ctx.clone(), entries, first, format: LOG_FORMAT.into(), last };
        let (mut value, seal) = sealed_value(&stored)?;
        if let Value::Object(m) = &mut value {
            m.insert("seal".into(), json!(seal.to_string()));
        }
        Ok(canonical_bytes(&value))
    }

    /// Decodes and verifies a segment: its seal, its format, and its entries (in CV order,
    /// inside its range, of its collection). A tampered or truncated segment is
    /// [`ErrorKind::ChecksumMismatch`]; another format is [`ErrorKind::Unsupported`].
    pub fn decode(bytes: &[u8]) -> Result<LogSegment> {
        let mut value: Value = serde_json::from_slice(bytes).map_err(corrupt)?;
        let seal = match value.as_object_mut().and_then(|m| m.remove("seal")) {
            Some(Value::String(s)) => Checksum::from_hex(&s).map_err(corrupt)?,
            _ => return Err(corrupt("no seal")),
        };
        let format = value.get("format").and_then(Value::as_str).unwrap_or_default().to_owned();
        let stored: Stored = serde_json::from_value(value).map_err(corrupt)?;
        let (_, expected) = sealed_value(&stored)?;
        if expected != seal {
            return Err(corrupt("seal does not match its content"));
        }
        if format != LOG_FORMAT {
            return Err(Error::new(ErrorKind::Unsupported, format!("log segment format {format:?}")));
        }
        check_entries(&stored.ctx, stored.first, stored.last, &stored.entries).map_err(corrupt)?;
        Ok(LogSegment { ctx: stored.ctx, first: stored.first, last: stored.last, entries: stored.entries })
    }
}

fn check_entries(ctx: &RouteContext, first: Cv, last: Cv, entries: &[LogEntry]) -> std::result::Result<(), String> {
    let mut previous: Option<Cv> = None;
    for e in entries {
        let cv = e.record.cv;
        if &e.record.key.ctx != ctx {
            return Err(format!("entry {} is of another collection", e.record.key));
        }
        if cv < first || cv > last || previous.is_some_and(|p| p >= cv) {
            return Err(format!("entry at CV {} is out of order or outside {}..={}", cv.0, first.0, last.0));
        }
        previous = Some(cv);
    }
    Ok(())
}

/// Every committed version the segments record, per object in OV order: what a
/// collection's history is from the blob store alone. Overlapping segments (a flush
/// repeated after a crash) merge by CV; two different entries for one CV, or one object's
/// versions whose CVs or timestamps go backwards with the OV, are
/// [`ErrorKind::ChecksumMismatch`] (the log is corrupt). An object created again after a hard
/// delete (a CREATE at OV 1 above earlier versions of its id) keeps only its new versions.
pub fn committed_versions(segments: Vec<LogSegment>) -> Result<BTreeMap<ObjectKey, Vec<LogEntry>>> {
    let mut by_cv: BTreeMap<(RouteContext, Cv), LogEntry> = BTreeMap::new();
    for s in segments {
        for e in s.entries {
            let at = (e.record.key.ctx.clone(), e.record.cv);
            match by_cv.get(&at) {
                Some(known) if known != &e => {
                    return Err(corrupt(format!("two different entries for CV {} of {}", at.1.0, at.0)));
                }
                Some(_) => {}
                None => {
                    by_cv.insert(at, e);
                }
            }
        }
    }
    let mut out: BTreeMap<ObjectKey, Vec<LogEntry>> = BTreeMap::new();
    for e in by_cv.into_values() {
        let versions = out.entry(e.record.key.clone()).or_default();
        // Only a hard delete lets an id start over at OV 1: the versions before are of an
        // incarnation that no longer exists.
        if e.record.op == crate::version::Op::Create && e.record.ov == Ov::FIRST {
            versions.clear();
        }
        versions.push(e);
    }
    for versions in out.values_mut() {
        versions.sort_by_key(|e| e.record.ov);
        for w in versions.windows(2) {
            let (a, b) = (&w[0].record, &w[1].record);
            if a.ov == b.ov || a.cv >= b.cv || a.at > b.at {
                return Err(corrupt(format!("{} and {} of {} are out of order", a.ov, b.ov, a.key)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
