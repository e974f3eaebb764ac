//! What a decorator sees of one port call: the port, the operation and its identifying
//! fields (never document data).

use std::borrow::Cow;
use std::collections::BTreeMap;

use udm_core::ports::{
    BlobBody, BlobListing, BlobPage, Committed, HardDeleted, ImportOutcome, JobRecord, PutResult, QueueEntry,
    QueueStats, ShrinkStats,
};
use udm_core::query::Page;
use udm_core::version::SnapshotRef;
use udm_core::{Checksum, Cv, ErrorKind, ObjectId, ObjectKey, Ov, RequestId, Result, RouteContext};

/// Which port a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// [`MetaStore`](udm_core::ports::MetaStore).
    Meta,
    /// [`BlobStore`](udm_core::ports::BlobStore).
    Blob,
    /// [`QueueStore`](udm_core::ports::QueueStore).
    Queue,
    /// [`CounterStore`](udm_core::ports::CounterStore).
    Counter,
}

impl Port {
    /// `meta`, `blob`, `queue` or `counter` (the `port` label and span field).
    pub fn as_str(self) -> &'static str {
        match self {
            Port::Meta => "meta",
            Port::Blob => "blob",
            Port::Queue => "queue",
            Port::Counter => "counter",
        }
    }
}

/// One port call, as decorators see it: identifiers only, never document data or secrets.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Call<'a> {
    /// The port.
    pub port: Port,
    /// The port method's name (`commit`, `put`, `claim_due`, …).
    pub op: &'static str,
    /// The collection, when the call has one.
    pub ctx: Option<&'a RouteContext>,
    /// The object, when the call has one.
    pub object: Option<&'a ObjectId>,
    /// The OV, when the call has one.
    pub ov: Option<Ov>,
    /// The request id, when the call has one.
    pub request_id: Option<&'a RequestId>,
    /// The blob key or prefix, queue entry id or job id, when the call has one.
    pub key: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A call of `op` on `port` with no identifying fields yet.
    pub fn new(port: Port, op: &'static str) -> Self {
        Self { port, op, ctx: None, object: None, ov: None, request_id: None, key: None }
    }

    /// With a collection.
    #[must_use]
    pub fn ctx(mut self, ctx: &'a RouteContext) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// With an object (and its collection).
    #[must_use]
    pub fn object(mut self, key: &'a ObjectKey) -> Self {
        self.ctx = Some(&key.ctx);
        self.object = Some(&key.id);
        self
    }

    /// With an OV.
    #[must_use]
    pub fn ov(mut self, ov: Ov) -> Self {
        self.ov = Some(ov);
        self
    }

    /// With a request id.
    #[must_use]
    pub fn request_id(mut self, request_id: &'a RequestId) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// With a blob key, queue entry id or job id.
    #[must_use]
    pub fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    /// What key-prefix rules match against: the blob key / entry id / job id if the call has
    /// one, else `tenant/db/collection/` followed by the object id if any, else `""`.
    pub fn subject(&self) -> Cow<'a, str> {
        match (self.key, self.ctx) {
            (Some(k), _) => Cow::Borrowed(k),
            (None, Some(ctx)) => {
                let id = self.object.map_or("", ObjectId::as_str);
                Cow::Owned(format!("{}{id}", udm_core::layout::collection_record_prefix(ctx)))
            }
            (None, None) => Cow::Borrowed(""),
        }
    }
}

/// An error kind as a metric label / span field: its stable name in snake case
/// (`not_found`, `version_conflict`, `unavailable`, …).
pub fn error_kind_label(kind: ErrorKind) -> &'static str {
    match kind.as_str() {
        "not found" => "not_found",
        "already exists" => "already_exists",
        "version conflict" => "version_conflict",
        "route mismatch" => "route_mismatch",
        "checksum mismatch" => "checksum_mismatch",
        "not confirmed" => "not_confirmed",
        other => other,
    }
}

/// A port call's successful answer. [`Answer::absent`] is what "the store does not have it"
/// looks like (`Some(None)` for lookups answering an `Option`), used by
/// [`Fault::Absent`](crate::fault::Fault::Absent); other answers cannot be absent.
pub trait Answer: Send + Sized {
    /// The "not there" answer, if this kind of answer has one.
    fn absent() -> Option<Self> {
        None
    }
}

impl<T: Send> Answer for Option<T> {
    fn absent() -> Option<Self> {
        Some(None)
    }
}

impl<T: Send> Answer for Page<T> {}

impl<T: Send> Answer for Vec<Result<T>> {}

macro_rules! answers {
    ($($t:ty),* $(,)?) => { $(impl Answer for $t {})* };
}

answers!(
    (),
    Committed,
    Checksum,
    Cv,
    ShrinkStats,
    HardDeleted,
    ImportOutcome,
    Vec<SnapshotRef>,
    JobRecord,
    Vec<u8>,
    String,
    BlobPage,
    BlobBody,
    BlobListing,
    PutResult,
    QueueEntry,
    Vec<QueueEntry>,
    QueueStats,
    BTreeMap<String, i64>,
    udm_core::shadow::ShadowPending,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let ctx = RouteContext::new("t", "d", "c").unwrap();
        let key = ObjectKey::new(ctx.clone(), ObjectId::new("o").unwrap());
        assert_eq!(Call::new(Port::Meta, "head").object(&key).subject(), "t/d/c/o");
        assert_eq!(Call::new(Port::Meta, "list_heads").ctx(&ctx).subject(), "t/d/c/");
        assert_eq!(Call::new(Port::Blob, "get").key("t/d/c/x").subject(), "t/d/c/x");
        assert_eq!(Call::new(Port::Meta, "ping").subject(), "");
        assert_eq!(error_kind_label(ErrorKind::NotFound), "not_found");
        assert_eq!(error_kind_label(ErrorKind::Unavailable), "unavailable");
    }
}
