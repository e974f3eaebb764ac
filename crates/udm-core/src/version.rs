//! Versions: [`Ov`], [`Cv`], [`Op`], the `_system` header, [`Head`], [`VersionRecord`] and
//! the [`SnapshotEnvelope`] stored in S3 for every version.
//!
//! The envelope is the unit of durability: it carries the version's data **and** everything
//! needed to rebuild the head and the version record without MongoDB, except the CV, which
//! is assigned inside the commit (after the envelope is durable) and is recorded in the
//! version record and the collection's commit log (see [`crate::layout`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{Checksum, canonical_bytes};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ObjectKey, RequestId};
use crate::time::Timestamp;

/// Object version: 1, 2, 3… per object, contiguous, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Ov(u64);

impl Ov {
    /// The first version of every object.
    pub const FIRST: Ov = Ov(1);

    /// An OV; 0 is rejected (versions start at 1).
    pub fn new(n: u64) -> Result<Self> {
        if n == 0 { Err(Error::validation("ov", "object versions start at 1")) } else { Ok(Self(n)) }
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The version after this one.
    pub fn next(self) -> Result<Self> {
        self.0.checked_add(1).map(Self).ok_or_else(|| Error::internal("object version overflow"))
    }

    /// The OV a new version takes after `head` (`None` = the object does not exist yet).
    pub fn after(head: Option<Ov>) -> Result<Self> {
        head.map_or(Ok(Ov::FIRST), Ov::next)
    }
}

impl TryFrom<u64> for Ov {
    type Error = Error;
    fn try_from(n: u64) -> Result<Self> {
        Ov::new(n)
    }
}

impl From<Ov> for u64 {
    fn from(ov: Ov) -> u64 {
        ov.0
    }
}

impl fmt::Display for Ov {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ov {}", self.0)
    }
}

/// Version-aware constructors and accessors of [`Error`] (here, so `error` does not depend on
/// this module).
impl Error {
    /// An optimistic-lock failure: the caller expected `expected`, the object is at `current`
    /// (`None` when it does not exist).
    pub fn version_conflict(expected: Option<Ov>, current: Option<Ov>) -> Self {
        let show = |ov: Option<Ov>| ov.map_or_else(|| "absent".to_owned(), |v| v.to_string());
        let mut e = Self::new(
            ErrorKind::VersionConflict,
            format!("expected object at {}, it is at {}", show(expected), show(current)),
        );
        e.current_ov = current.map(Ov::get);
        e
    }

    /// For [`ErrorKind::VersionConflict`]: the OV the object is at now (`None` if absent).
    pub fn current_ov(&self) -> Option<Ov> {
        self.current_ov.and_then(|n| Ov::new(n).ok())
    }
}

/// Collection version: strictly increasing per collection, in commit order. `Cv::ZERO` is
/// "before the first commit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cv(pub u64);

impl Cv {
    /// Before any commit.
    pub const ZERO: Cv = Cv(0);

    /// The CV after this one.
    pub fn next(self) -> Result<Self> {
        self.0.checked_add(1).map(Cv).ok_or_else(|| Error::internal("collection version overflow"))
    }
}

impl fmt::Display for Cv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cv {}", self.0)
    }
}

/// What a version did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Op {
    /// First version of an object.
    Create,
    /// Replaced the data.
    Update,
    /// Logical delete (data kept, `deleted: true`).
    Delete,
    /// Deep-merged a patch into the data.
    Enrich,
    /// Appended a copy of an earlier version's data.
    Restore,
}

impl Op {
    /// All ops, in declaration order.
    pub const ALL: [Op; 5] = [Op::Create, Op::Update, Op::Delete, Op::Enrich, Op::Restore];

    /// The upper-case name used in records and envelopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "CREATE",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            Op::Enrich => "ENRICH",
            Op::Restore => "RESTORE",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle fields of the `_system` header, carried from version to version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemHeader {
    /// When the object was created (its first version).
    pub inserted_at: Timestamp,
    /// When this version was written.
    pub updated_at: Timestamp,
    /// When the object was logically deleted, if it is.
    pub deleted_at: Option<Timestamp>,
    /// Whether the object is logically deleted in this version.
    pub deleted: bool,
    /// Enrichment functions that contributed to the data, each once, in first-seen order.
    pub function_ids: Vec<String>,
}

impl SystemHeader {
    /// The header of a first version written at `at`.
    pub fn created(at: Timestamp) -> Self {
        Self { inserted_at: at, updated_at: at, deleted_at: None, deleted: false, function_ids: vec![] }
    }

    /// The header of the next version (`op` at `at`) following this one. Deletes set
    /// `deleted`; restores of a live version clear it; enrichments record `function_id` once.
    pub fn next(&self, op: Op, at: Timestamp, function_id: Option<&str>, target_deleted: bool) -> Self {
        let mut h = self.clone();
        h.updated_at = at;
        match op {
            Op::Delete => {
                h.deleted = true;
                h.deleted_at = Some(at);
            }
            Op::Restore => {
                h.deleted = target_deleted;
                h.deleted_at = target_deleted.then_some(at);
            }
            Op::Create | Op::Update | Op::Enrich => {}
        }
        if let Some(f) = function_id
            && !h.function_ids.iter().any(|x| x == f)
        {
            h.function_ids.push(f.to_owned());
        }
        h
    }
}

/// Where a version's snapshot lives and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    /// The blob key (see [`crate::layout`]).
    pub key: String,
    /// SHA-256 of the canonical JSON of the version's data.
    pub checksum: Checksum,
    /// SHA-256 of the envelope's header (see [`SnapshotEnvelope`]): pins every field of the
    /// envelope besides the data, which the header pins through `checksum`.
    pub seal: Checksum,
    /// Size of the envelope blob in bytes.
    pub size: u64,
}

/// Who wrote a version and why (actor and reason optional, recorded as given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// Who made the change (user, service, job).
    pub actor: Option<String>,
    /// Why, in words.
    pub reason: Option<String>,
    /// The idempotency key of the write.
    pub request_id: RequestId,
}

/// One version of one object, as the metadata store indexes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRecord {
    /// The object.
    pub key: ObjectKey,
    /// Its OV.
    pub ov: Ov,
    /// The CV assigned at commit.
    pub cv: Cv,
    /// What the version did.
    pub op: Op,
    /// When (monotonic per object).
    pub at: Timestamp,
    /// Who, why, request id.
    pub provenance: Provenance,
    /// The snapshot.
    pub snapshot: SnapshotRef,
    /// For RESTORE versions: the OV whose data was copied.
    pub restored_from: Option<Ov>,
    /// Whether the object is logically deleted in this version.
    pub deleted: bool,
}

/// A full copy of the document kept with the head for debugging (dev shadows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevShadow {
    /// The full document.
    pub data: Value,
    /// When it was written (TTL counts from here).
    pub written_at: Timestamp,
    /// Canonical size in bytes.
    pub bytes: u64,
}

/// The current state of one object, as the metadata store keeps it (one per object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// The object.
    pub key: ObjectKey,
    /// Current OV.
    pub ov: Ov,
    /// CV of the current version.
    pub cv: Cv,
    /// Op of the current version.
    pub op: Op,
    /// Timestamp of the current version.
    pub at: Timestamp,
    /// Lifecycle header of the current version.
    pub system: SystemHeader,
    /// Who wrote the current version and why (so reads of the latest need no version lookup).
    pub provenance: Provenance,
    /// Indexed props copied out of the data for queries.
    pub indexed: Map<String, Value>,
    /// The current version's snapshot.
    pub snapshot: SnapshotRef,
    /// The data itself, for small documents (one-round-trip reads).
    pub inline: Option<Value>,
    /// Dev shadow, when enabled.
    pub dev_shadow: Option<DevShadow>,
}

impl Head {
    /// Whether the object is logically deleted.
    pub fn is_deleted(&self) -> bool {
        self.system.deleted
    }
}

/// The `_system` object shown to callers: lifecycle header plus the version's identity.
pub fn render_system(system: &SystemHeader, ov: Ov, cv: Cv, op: Op, provenance: &Provenance) -> Value {
    let mut m = match serde_json::to_value(system) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    m.insert("ov".into(), ov.get().into());
    m.insert("cv".into(), cv.0.into());
    m.insert("op".into(), op.as_str().into());
    m.insert("actor".into(), provenance.actor.clone().into());
    m.insert("reason".into(), provenance.reason.clone().into());
    m.insert("requestId".into(), provenance.request_id.as_str().into());
    Value::Object(m)
}

impl Head {
    /// The `_system` object of the head's version.
    pub fn render_system(&self) -> Value {
        render_system(&self.system, self.ov, self.cv, self.op, &self.provenance)
    }
}

impl VersionRecord {
    /// The `_system` object of this version, given its lifecycle header (from the snapshot).
    pub fn render_system(&self, system: &SystemHeader) -> Value {
        render_system(system, self.ov, self.cv, self.op, &self.provenance)
    }
}

/// Format tag of the envelopes this version writes and reads.
pub const ENVELOPE_FORMAT: &str = "udm.snapshot.v2";

/// One version as stored (create-only) in S3: the data and everything needed to rebuild
/// the head and the version record without the metadata store (except the CV).
///
/// **Format v2** (pinned by a golden test). The blob is exactly
///
/// ```text
/// {"data":D,"header":H,"seal":"<sha256(H) as hex>"}
/// ```
///
/// where `D` is the canonical JSON of the data and `H` the canonical JSON of every other
/// field (`format`, `key`, `ov`, `op`, `at`, `provenance`, `restoredFrom`, `system`,
/// `indexed`, and `checksum` = SHA-256 of `D`). The seal covers the header and the header
/// covers the data, so every byte a read returns or a rebuild uses is verified, each byte is
/// hashed once, and verification works on the stored bytes without re-serializing. The
/// metadata record pins both digests ([`SnapshotRef::checksum`], [`SnapshotRef::seal`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEnvelope {
    /// Always [`ENVELOPE_FORMAT`].
    pub format: String,
    /// The object.
    pub key: ObjectKey,
    /// Its OV.
    pub ov: Ov,
    /// What the version did.
    pub op: Op,
    /// When.
    pub at: Timestamp,
    /// Who, why, request id.
    pub provenance: Provenance,
    /// For RESTORE: the OV copied.
    pub restored_from: Option<Ov>,
    /// Lifecycle header of this version.
    pub system: SystemHeader,
    /// Indexed props of this version.
    pub indexed: Map<String, Value>,
    /// SHA-256 of the canonical JSON of `data`.
    pub checksum: Checksum,
    /// The version's data (externalized fields hold references).
    pub data: Value,
}

/// The header as written (borrowed).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeaderOut<'a> {
    format: &'a str,
    key: &'a ObjectKey,
    ov: Ov,
    op: Op,
    at: Timestamp,
    provenance: &'a Provenance,
    restored_from: Option<Ov>,
    system: &'a SystemHeader,
    indexed: &'a Map<String, Value>,
    checksum: Checksum,
}

/// The header as read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HeaderIn {
    format: String,
    key: ObjectKey,
    ov: Ov,
    op: Op,
    at: Timestamp,
    provenance: Provenance,
    restored_from: Option<Ov>,
    system: SystemHeader,
    indexed: Map<String, Value>,
    checksum: Checksum,
}

/// The three parts of a stored envelope, borrowed from its bytes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Parts<'a> {
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    header: &'a serde_json::value::RawValue,
    seal: Checksum,
}

/// An encoded envelope: its bytes and the digests the metadata record pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEnvelope {
    /// The blob.
    pub bytes: Vec<u8>,
    /// SHA-256 of the data's canonical JSON.
    pub checksum: Checksum,
    /// SHA-256 of the header.
    pub seal: Checksum,
}

fn corrupt(what: impl fmt::Display) -> Error {
    Error::new(ErrorKind::ChecksumMismatch, format!("snapshot is not a valid {ENVELOPE_FORMAT} envelope: {what}"))
}

impl SnapshotEnvelope {
    /// The envelope's bytes (see the type's docs for the format).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.encode(&canonical_bytes(&self.data))?.bytes)
    }

    /// Encodes the envelope given the canonical bytes of its data (computed once by the
    /// caller, who also hashed them into `checksum`).
    pub fn encode(&self, data_bytes: &[u8]) -> Result<EncodedEnvelope> {
        let header = HeaderOut {
            format: &self.format,
            key: &self.key,
            ov: self.ov,
            op: self.op,
            at: self.at,
            provenance: &self.provenance,
            restored_from: self.restored_from,
            system: &self.system,
            indexed: &self.indexed,
            checksum: self.checksum,
        };
        let header = serde_json::to_value(&header).map_err(|e| Error::internal(format!("envelope header: {e}")))?;
        let header = canonical_bytes(&header);
        let seal = Checksum::of_bytes(&header);
        let mut bytes = Vec::with_capacity(data_bytes.len() + header.len() + 96);
        bytes.extend_from_slice(b"{\"data\":");
        bytes.extend_from_slice(data_bytes);
        bytes.extend_from_slice(b",\"header\":");
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(b",\"seal\":\"");
        bytes.extend_from_slice(seal.to_string().as_bytes());
        bytes.extend_from_slice(b"\"}");
        Ok(EncodedEnvelope { bytes, checksum: self.checksum, seal })
    }

    /// Parses envelope bytes and verifies them: the seal against the header, the header's
    /// checksum against the data and, when given, both digests against the `expected`
    /// metadata record. Any mismatch — or bytes that are not an envelope — is
    /// [`ErrorKind::ChecksumMismatch`] and the data is never returned. A well-sealed envelope
    /// of another format version is [`ErrorKind::Unsupported`].
    pub fn decode(bytes: &[u8], expected: Option<&SnapshotRef>) -> Result<Self> {
        let parts: Parts<'_> = serde_json::from_slice(bytes).map_err(corrupt)?;
        let header_bytes = parts.header.get().as_bytes();
        parts.seal.verify(&Checksum::of_bytes(header_bytes), "snapshot header seal")?;
        if let Some(exp) = expected {
            exp.seal.verify(&parts.seal, "snapshot header vs metadata")?;
        }
        let format = serde_json::from_slice::<Value>(header_bytes)
            .ok()
            .and_then(|h| h.get("format").and_then(Value::as_str).map(str::to_owned))
            .ok_or_else(|| corrupt("header has no format"))?;
        if format != ENVELOPE_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("snapshot format {format:?} is not {ENVELOPE_FORMAT}"),
            ));
        }
        let h: HeaderIn = serde_json::from_slice(header_bytes).map_err(corrupt)?;
        h.checksum.verify(&Checksum::of_bytes(parts.data.get().as_bytes()), "snapshot data")?;
        if let Some(exp) = expected {
            exp.checksum.verify(&h.checksum, "snapshot vs metadata")?;
        }
        let data: Value = serde_json::from_str(parts.data.get()).map_err(corrupt)?;
        Ok(Self {
            format: h.format,
            key: h.key,
            ov: h.ov,
            op: h.op,
            at: h.at,
            provenance: h.provenance,
            restored_from: h.restored_from,
            system: h.system,
            indexed: h.indexed,
            checksum: h.checksum,
            data,
        })
    }

    /// The digests a metadata record must pin for this envelope.
    pub fn seal(&self) -> Result<Checksum> {
        Ok(self.encode(&[])?.seal)
    }

    /// The version record this envelope describes, given the CV it was committed at.
    pub fn to_record(&self, cv: Cv, snapshot: SnapshotRef) -> VersionRecord {
        VersionRecord {
            key: self.key.clone(),
            ov: self.ov,
            cv,
            op: self.op,
            at: self.at,
            provenance: self.provenance.clone(),
            snapshot,
            restored_from: self.restored_from,
            deleted: self.system.deleted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    #[test]
    fn version_conflict_carries_current_ov() {
        let e = Error::version_conflict(Some(Ov::new(2).unwrap()), Some(Ov::new(5).unwrap()));
        assert_eq!(e.kind(), ErrorKind::VersionConflict);
        assert_eq!(e.current_ov(), Some(Ov::new(5).unwrap()));
        assert_eq!(e.to_string(), "version conflict: expected object at ov 2, it is at ov 5");
    }

    #[test]
    fn ov_starts_at_one_and_follows_heads() {
        assert!(Ov::new(0).is_err());
        assert_eq!(Ov::after(None).unwrap(), Ov::FIRST);
        assert_eq!(Ov::after(Some(Ov::new(4).unwrap())).unwrap().get(), 5);
        assert!(Ov::new(u64::MAX).unwrap().next().is_err());
        assert!(serde_json::from_str::<Ov>("0").is_err());
        assert_eq!(serde_json::to_string(&Ov::new(7).unwrap()).unwrap(), "7");
    }

    #[test]
    fn system_header_lifecycle() {
        let h = SystemHeader::created(t(1));
        let e = h.next(Op::Enrich, t(2), Some("f1"), false).next(Op::Enrich, t(3), Some("f1"), false);
        assert_eq!(e.function_ids, ["f1"], "function ids recorded once");
        assert_eq!((e.inserted_at, e.updated_at), (t(1), t(3)));
        let d = e.next(Op::Delete, t(4), None, false);
        assert!(d.deleted);
        assert_eq!(d.deleted_at, Some(t(4)));
        let r = d.next(Op::Restore, t(5), None, false);
        assert!(!r.deleted && r.deleted_at.is_none(), "restoring a live version revives");
        let rd = r.next(Op::Restore, t(6), None, true);
        assert!(rd.deleted && rd.deleted_at == Some(t(6)), "restoring a deleted version deletes");
        assert_eq!(rd.function_ids, ["f1"]);
    }

    #[test]
    fn op_names() {
        let names: Vec<_> = Op::ALL.iter().map(|o| serde_json::to_value(o).unwrap()).collect();
        assert_eq!(names, ["CREATE", "UPDATE", "DELETE", "ENRICH", "RESTORE"]);
        assert!(Op::ALL.iter().all(|o| serde_json::to_value(o).unwrap() == o.as_str()));
    }
}
