//! The caller-facing types of collection operations: [`Collection`] itself and the options
//! of writes, reads, lists and restores. A leaf module: `ops`, `read`, `write` and `restore`
//! depend on it, it depends on none of them.

use std::sync::Arc;

use serde_json::Value;
use udm_core::predicate::Predicate;
use udm_core::query::{HeadQuery, Order};
use udm_core::{Ov, Result, RouteContext, Timestamp};

use crate::Inner;

/// Who writes, why, with which id and request id.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// Object id for creates (generated when absent).
    pub id: Option<String>,
    /// Who made the change.
    pub actor: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Idempotency key (generated when absent).
    pub request_id: Option<String>,
}

impl WriteOpts {
    /// Options with an object id (for creates).
    pub fn id(id: &str) -> Self {
        Self { id: Some(id.to_owned()), ..Self::default() }
    }

    /// Sets the actor.
    #[must_use]
    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }

    /// Sets the reason.
    #[must_use]
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    /// Sets the request id.
    #[must_use]
    pub fn request_id(mut self, request_id: &str) -> Self {
        self.request_id = Some(request_id.to_owned());
        self
    }
}

/// One write of a batch ([`Collection::write_many`]).
#[derive(Debug, Clone)]
pub enum WriteItem {
    /// [`Collection::create`].
    Create {
        /// The data.
        data: Value,
        /// Id, actor, reason, request id.
        opts: WriteOpts,
    },
    /// [`Collection::update`].
    Update {
        /// The object.
        id: String,
        /// The new data.
        data: Value,
        /// Optimistic lock.
        expected: Option<Ov>,
        /// Actor, reason, request id.
        opts: WriteOpts,
    },
    /// [`Collection::delete`].
    Delete {
        /// The object.
        id: String,
        /// Optimistic lock.
        expected: Option<Ov>,
        /// Actor, reason, request id.
        opts: WriteOpts,
    },
}

/// How many writes of one batch call run at once ([`Collection::write_many`]).
pub const BATCH_WRITE_CONCURRENCY: usize = 64;

/// Options of an enrichment.
#[derive(Debug, Clone, Default)]
pub struct EnrichOpts {
    /// The enrichment function, recorded once in `_system.functionIds`.
    pub function_id: Option<String>,
    /// Optimistic lock.
    pub expected: Option<Ov>,
    /// Actor, reason, request id.
    pub write: WriteOpts,
}

/// How externalized content appears in read data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ContentMode {
    /// As stored: `{"$udmContent": {blake3, size, contentType}}`.
    #[default]
    Ref,
    /// The original base64 text (content fetched and verified).
    Inline,
    /// The reference plus a presigned `url` valid for this many seconds.
    Presigned(u64),
}

/// Options of a read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOpts {
    /// Return logically deleted objects from `get_latest` instead of not-found.
    pub include_deleted: bool,
    /// How externalized content appears.
    pub content: ContentMode,
    /// Where the version is looked up.
    pub source: ReadSource,
}

/// Where a read looks up versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadSource {
    /// The metadata store, with the blob store's version index as the fallback for a record
    /// the metadata store lacks (lost, or pruned: then [`udm_core::ErrorKind::Pruned`]).
    #[default]
    Primary,
    /// The blob store alone — its version index and snapshots — in a constant number of
    /// requests whatever the history's length; the metadata store is not asked. Sees what
    /// the commit-log flusher has indexed (it runs a few milliseconds behind the commits;
    /// `Admin::flush_shadow` catches it up).
    Shadow,
}

/// Which version an object restore targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Target {
    /// A specific OV.
    Ov(Ov),
    /// The version current at this instant.
    At(Timestamp),
}

/// Per-call confirmation of irreversible operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Yes, irreversibly.
    Yes,
    /// No (the call fails with [`ErrorKind::NotConfirmed`](udm_core::ErrorKind::NotConfirmed)).
    No,
}

/// A list query over indexed props.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Filter (the predicate language of [`udm_core::predicate`]) over indexed props.
    pub filter: Option<Value>,
    /// Include logically deleted objects.
    pub include_deleted: bool,
    /// Sort by this indexed prop (then id); `None` sorts by id.
    pub sort_by: Option<String>,
    /// Direction.
    pub order: Order,
    /// Cursor from the previous page.
    pub after: Option<String>,
    /// Page size (1–1000).
    pub limit: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self { filter: None, include_deleted: false, sort_by: None, order: Order::Asc, after: None, limit: 100 }
    }
}

impl ListQuery {
    pub(crate) fn compile(&self) -> Result<HeadQuery> {
        let filter = self.filter.as_ref().map(Predicate::parse).transpose()?.unwrap_or(Predicate::True);
        udm_core::query::check_limit(self.limit)?;
        udm_core::query::check_sort_by(self.sort_by.as_deref())?;
        Ok(HeadQuery {
            filter,
            include_deleted: self.include_deleted,
            sort_by: self.sort_by.clone(),
            order: self.order,
            after: self.after.clone(),
            limit: self.limit,
        })
    }
}

/// Operations on one collection (`udm.with(ctx)`).
#[derive(Clone)]
pub struct Collection {
    pub(crate) inner: Arc<Inner>,
    pub(crate) ctx: RouteContext,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection").field("ctx", &self.ctx).finish()
    }
}
