//! Storage layout: every S3 key and metadata record id UDM writes.
//!
//! All keys live under `[<prefix>/]<tenant>/<db>/<collection>/`. Numbers are zero-padded to
//! 20 digits, so lexicographic key order is numeric order (S3 lists in key order). Because
//! identifiers cannot contain `/` or `..` (see [`crate::id`]), a key built here never escapes
//! its tenant's prefix, and every key parses back to the parts it was built from.
//!
//! ```text
//! <t>/<d>/<c>/objects/<id>/versions/<ov:020>.<request id>.json   snapshot envelope
//! <t>/<d>/<c>/objects/<id>/index/<segment:020>.json  shadow version-index segment
//! <t>/<d>/<c>/objects/<id>/index/first/<segment:020>.<at ms>.<cv>  its marker (empty)
//! <t>/<d>/<c>/content/<id>/<blake3>                  externalized binary field
//! <t>/<d>/<c>/log/<cv:020>-<cv:020>.json            commit log segment (see crate::shadow)
//! <t>/<d>/<c>/backups/<label>                        backups
//! ```
//!
//! The request id in a snapshot key makes every write attempt's key its own: a snapshot left
//! behind by a failed commit (an orphan) never blocks a later write of the same OV, and a
//! retry of the same request finds its own snapshot again.
//!
//! Metadata record ids (MongoDB `_id`, embedded keys) use the same `/`-joined form:
//! `<t>/<d>/<c>/<id>` for heads and `<t>/<d>/<c>/<id>/<ov:020>` for version records.

use crate::canonical::ContentHash;
use crate::error::Result;
use crate::id::{Name, ObjectId, ObjectKey, RequestId, RouteContext};
use crate::version::{Cv, Ov};

/// Versions per shadow index segment.
pub const INDEX_SEGMENT_LEN: u64 = 256;

/// Key builder, with an optional bucket-wide prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    prefix: Option<Name>,
}

impl Layout {
    /// Keys under `prefix/` (or at the bucket root with `None`).
    pub fn new(prefix: Option<Name>) -> Self {
        Self { prefix }
    }

    /// `[<prefix>/]` (empty without a prefix): everything UDM stores in a bucket.
    pub fn root(&self) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/"),
            None => String::new(),
        }
    }

    /// `[<prefix>/]<tenant>/`: everything of one tenant.
    pub fn tenant_prefix(&self, tenant: &Name) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{tenant}/"),
            None => format!("{tenant}/"),
        }
    }

    /// `…/<tenant>/<db>/<collection>/`: everything of one collection.
    pub fn collection_prefix(&self, ctx: &RouteContext) -> String {
        format!("{}{}/{}/", self.tenant_prefix(&ctx.tenant), ctx.db, ctx.collection)
    }

    /// Every snapshot and index segment of one object.
    pub fn object_prefix(&self, key: &ObjectKey) -> String {
        format!("{}objects/{}/", self.collection_prefix(&key.ctx), key.id)
    }

    /// The snapshot envelope of version `ov`, written by request `request`.
    pub fn snapshot(&self, key: &ObjectKey, ov: Ov, request: &RequestId) -> String {
        format!("{}{request}.json", self.snapshot_prefix(key, ov))
    }

    /// Every snapshot written for version `ov` (committed or orphaned).
    pub fn snapshot_prefix(&self, key: &ObjectKey, ov: Ov) -> String {
        format!("{}versions/{:020}.", self.object_prefix(key), ov.get())
    }

    /// The shadow index segment holding version `ov`.
    pub fn index_segment(&self, key: &ObjectKey, ov: Ov) -> String {
        let segment = (ov.get() - 1) / INDEX_SEGMENT_LEN;
        format!("{}index/{segment:020}.json", self.object_prefix(key))
    }

    /// Where the markers of an object's index segments live
    /// ([`crate::shadow::index::Marker`]).
    pub fn index_marker_prefix(&self, key: &ObjectKey) -> String {
        format!("{}index/first/", self.object_prefix(key))
    }

    /// The marker naming the first instant and CV of an index segment.
    pub fn index_marker(&self, key: &ObjectKey, marker: &crate::shadow::index::Marker) -> String {
        format!("{}{}", self.index_marker_prefix(key), marker.file_name())
    }

    /// The tombstone a hard delete leaves: `{"cv": N}`, the highest CV of the versions it
    /// removed, so a rebuild from the commit log (which still lists them) skips them.
    pub fn tombstone(&self, key: &ObjectKey) -> String {
        format!("{}tombstones/{}.json", self.collection_prefix(&key.ctx), key.id)
    }

    /// Every content object of one object.
    pub fn content_prefix(&self, key: &ObjectKey) -> String {
        format!("{}content/{}/", self.collection_prefix(&key.ctx), key.id)
    }

    /// An externalized binary field, content-addressed.
    pub fn content(&self, key: &ObjectKey, hash: &ContentHash) -> String {
        format!("{}{hash}", self.content_prefix(key))
    }

    /// The commit-log segment covering CVs `first..=last` of a collection
    /// ([`crate::shadow`]): names sort in CV order.
    pub fn log_segment(&self, ctx: &RouteContext, first: Cv, last: Cv) -> String {
        format!("{}{:020}-{:020}.json", self.log_prefix(ctx), first.0, last.0)
    }

    /// Where a collection's commit-log segments live.
    pub fn log_prefix(&self, ctx: &RouteContext) -> String {
        format!("{}log/", self.collection_prefix(ctx))
    }

    /// A backup of a collection.
    pub fn backup(&self, ctx: &RouteContext, label: &Name) -> String {
        format!("{}backups/{label}", self.collection_prefix(ctx))
    }

    /// Parses a snapshot key built by [`Layout::snapshot`] back into its object, OV and request.
    pub fn parse_snapshot(&self, key: &str) -> Option<(ObjectKey, Ov, RequestId)> {
        let rest = match &self.prefix {
            Some(p) => key.strip_prefix(p.as_str())?.strip_prefix('/')?,
            None => key,
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [t, d, c, "objects", id, "versions", file] = parts.as_slice() else { return None };
        let (digits, request) = file.strip_suffix(".json")?.split_once('.')?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let ov = Ov::new(digits.parse().ok()?).ok()?;
        let ctx = RouteContext::new(t, d, c).ok()?;
        let id = ObjectId::with_max(*id, crate::id::MAX_STORED_ID_BYTES).ok()?;
        let request = RequestId::with_max(request, crate::id::MAX_STORED_ID_BYTES).ok()?;
        Some((ObjectKey::new(ctx, id), ov, request))
    }
}

/// Metadata record id of an object's head: `<tenant>/<db>/<collection>/<id>`.
pub fn head_record_id(key: &ObjectKey) -> String {
    format!("{}/{}/{}/{}", key.ctx.tenant, key.ctx.db, key.ctx.collection, key.id)
}

/// Metadata record id of a version: `<tenant>/<db>/<collection>/<id>/<ov:020>`.
pub fn version_record_id(key: &ObjectKey, ov: Ov) -> String {
    format!("{}/{:020}", head_record_id(key), ov.get())
}

/// Metadata record id prefix of a collection: `<tenant>/<db>/<collection>/`.
pub fn collection_record_prefix(ctx: &RouteContext) -> String {
    format!("{}/{}/{}/", ctx.tenant, ctx.db, ctx.collection)
}

/// The collection of a [`collection_record_prefix`] (`<tenant>/<db>/<collection>/`), or
/// `None` when `prefix` is not one.
pub fn parse_collection_record_prefix(prefix: &str) -> Option<RouteContext> {
    let parts: Vec<&str> = prefix.strip_suffix('/')?.split('/').collect();
    let [t, d, c] = parts[..] else { return None };
    RouteContext::new(t, d, c).ok()
}

/// Validates a backup label or key prefix.
pub fn label(s: &str) -> Result<Name> {
    Name::new(s)
}
