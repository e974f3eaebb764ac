//! What operations return.

use serde::Serialize;
use serde_json::{Map, Value};
use udm_core::ports::Committed;
use udm_core::{Cv, ObjectId, Op, Ov, Timestamp};

/// The result of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    /// The object.
    pub id: ObjectId,
    /// Its new OV.
    pub ov: Ov,
    /// The CV it committed at.
    pub cv: Cv,
    /// The version's timestamp.
    pub at: Timestamp,
    /// True when a replay of an already committed request id returned the original result.
    pub replayed: bool,
}

impl From<Committed> for Written {
    fn from(c: Committed) -> Self {
        Self { id: c.key.id, ov: c.ov, cv: c.cv, at: c.at, replayed: c.replayed }
    }
}

/// One version of one object, as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The object.
    pub id: ObjectId,
    /// This version's OV.
    pub ov: Ov,
    /// Its CV (0 when the version was read from the S3 shadow because its metadata record was
    /// missing: the shadow does not know CVs).
    pub cv: Cv,
    /// What it did.
    pub op: Op,
    /// When.
    pub at: Timestamp,
    /// Whether the object is logically deleted in this version.
    pub deleted: bool,
    /// The `_system` header (lifecycle + ov, cv, op, actor, reason, requestId).
    pub system: Value,
    /// The data (content per the read's [`ContentMode`](crate::ContentMode)).
    pub data: Value,
}

impl Record {
    /// The document as callers usually want it: the data with `_system` added.
    pub fn document(&self) -> Value {
        let mut m = match &self.data {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        m.insert(udm_core::validate::SYSTEM_FIELD.to_owned(), self.system.clone());
        Value::Object(m)
    }
}

/// A page of a collection's latest records.
#[derive(Debug)]
pub struct ListPage {
    /// The records, in the query's order.
    pub items: Vec<Record>,
    /// Objects in this page whose stored data failed verification (checksum, seal or a
    /// missing snapshot): reported here instead of failing the page; their data is never
    /// returned.
    pub failed: Vec<FailedItem>,
    /// Cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// An object a list page could not return.
#[derive(Debug)]
pub struct FailedItem {
    /// The object.
    pub id: ObjectId,
    /// Its head's OV.
    pub ov: Ov,
    /// Why (kind [`ChecksumMismatch`](udm_core::ErrorKind::ChecksumMismatch)).
    pub error: udm_core::Error,
}

/// What an object restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RestoreOutcome {
    /// A RESTORE version was appended.
    Restored(Written),
    /// The object already equals the target; nothing was written.
    Unchanged {
        /// The current OV.
        ov: Ov,
    },
}

/// What a hard delete removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HardDeleteReport {
    /// Whether the object existed.
    pub existed: bool,
    /// Version records removed.
    pub versions: usize,
    /// Snapshot blobs removed.
    pub snapshots: usize,
    /// Content blobs removed.
    pub content: usize,
}
