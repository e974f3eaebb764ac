//! Decorators over the ports, in the spirit of OpenDAL's `Layer` / `LayeredAccess`.
//!
//! - Every port is implemented by `Arc<T>` for any `T: ?Sized` port (so `Arc<dyn MetaStore>`,
//!   the form the facade holds, can be wrapped like any concrete adapter).
//! - A decorator implements [`Layered`] once (what it wraps) and then [`LayeredMeta`],
//!   [`LayeredBlob`], [`LayeredQueue`] and/or [`LayeredCounter`], overriding only the methods it
//!   changes: every other method forwards to [`Layered::inner`]. Blanket impls turn each of
//!   them into the port itself, so the decorator *is* a [`MetaStore`] (etc.), runs through the
//!   conformance suite, and can be wrapped again.
//! - A [`Layer`] builds a decorator around a store (`layer.layer(store)`), so decorators stack.
//!
//! A user's own decorator, in a few lines — a metadata store that refuses hard deletes:
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use udm_core::counters::CounterDelta;
//! use udm_core::ports::{HardDeleted, Layered, LayeredMeta, MetaStore};
//! use udm_core::{Error, ErrorKind, ObjectKey, Result};
//!
//! #[derive(Debug)]
//! struct NoHardDelete<S>(S);
//!
//! impl<S: Send + Sync + std::fmt::Debug> Layered for NoHardDelete<S> {
//!     type Inner = S;
//!     fn inner(&self) -> &S {
//!         &self.0
//!     }
//! }
//!
//! #[async_trait]
//! impl<S: MetaStore> LayeredMeta for NoHardDelete<S> {
//!     // Only what changes; the 17 other methods forward to the inner store.
//!     async fn hard_delete(&self, _key: &ObjectKey, _counters: Vec<CounterDelta>) -> Result<HardDeleted> {
//!         Err(Error::new(ErrorKind::Unsupported, "hard delete is disabled here"))
//!     }
//! }
//!
//! fn protect(store: Arc<dyn MetaStore>) -> Arc<dyn MetaStore> {
//!     Arc::new(NoHardDelete(store))
//! }
//! # let _ = protect;
//! ```
//!
//! Why only `Arc` gets a blanket impl: `Box` and `&` are `#[fundamental]`, so a downstream crate
//! could implement [`LayeredMeta`] for `Box<ItsType>`, which would overlap the blanket
//! `impl<L: LayeredMeta> MetaStore for L`. Wrap a `Box<dyn MetaStore>` by converting it to an
//! `Arc` (`Arc::from(boxed)`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::blob::{BlobBody, BlobCapabilities, BlobListing, BlobMeta, BlobPage, BlobStore, PutOptions, PutResult};
use super::counter::CounterStore;
use super::meta::{
    Commit, Committed, Durable, HardDeleted, ImportOutcome, ImportedVersion, JobRecord, MetaStore, ShrinkPolicy,
    ShrinkStats,
};
use super::queue::{QueueEntry, QueueState, QueueStats, QueueStore};
use crate::canonical::Checksum;
use crate::counters::CounterDelta;
use crate::error::Result;
use crate::id::{Name, ObjectId, ObjectKey, RequestId, RouteContext};
use crate::query::{HeadQuery, HistoryQuery, Page};
use crate::retry::NextStep;
use crate::shadow::ShadowPending;
use crate::time::Timestamp;
use crate::version::{Cv, Head, Ov, SnapshotRef, VersionRecord};

/// Something that builds a decorator around a store of type `S` (OpenDAL's `Layer`).
///
/// Layers are usually generic over `S`, so one layer wraps metadata, blob, queue and counter
/// stores alike; the output implements whichever ports `S` implements.
pub trait Layer<S> {
    /// The decorated store.
    type Output;

    /// Wraps `inner`.
    fn layer(&self, inner: S) -> Self::Output;
}

/// A decorator: what it wraps. Implement this once, then the `Layered*` trait of each port
/// the decorator serves.
pub trait Layered: Send + Sync + fmt::Debug {
    /// The wrapped store (a concrete adapter, an `Arc<dyn Port>`, or another decorator).
    type Inner: ?Sized + Send + Sync;

    /// The wrapped store.
    fn inner(&self) -> &Self::Inner;
}

/// A [`MetaStore`] decorator: every method forwards to [`Layered::inner`] unless overridden.
/// Each method's contract is [`MetaStore`]'s.
#[async_trait]
#[allow(missing_docs)] // the contracts are MetaStore's
pub trait LayeredMeta: Layered<Inner: MetaStore> {
    async fn commit(&self, commit: Commit) -> Result<Committed> {
        self.inner().commit(commit).await
    }
    async fn commit_many(&self, commits: Vec<Commit>) -> Result<Vec<Result<Committed>>> {
        self.inner().commit_many(commits).await
    }
    async fn commit_many_after(&self, commits: Vec<Commit>, durable: Durable) -> Result<Vec<Result<Committed>>> {
        self.inner().commit_many_after(commits, durable).await
    }
    async fn shadow_backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
        self.inner().shadow_backlog(after, limit).await
    }
    async fn shadow_pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
        self.inner().shadow_pending(ctx, limit).await
    }
    async fn shadow_logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
        self.inner().shadow_logged(ctx, upto).await
    }
    async fn find_request(&self, ctx: &RouteContext, request_id: &RequestId) -> Result<Option<(Committed, Checksum)>> {
        self.inner().find_request(ctx, request_id).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
        self.inner().head(key).await
    }
    async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
        self.inner().version(key, ov).await
    }
    async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>> {
        self.inner().version_at(key, at).await
    }
    async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>> {
        self.inner().version_at_cv(key, cv).await
    }
    async fn history(&self, key: &ObjectKey, query: &HistoryQuery) -> Result<Page<VersionRecord>> {
        self.inner().history(key, query).await
    }
    async fn list_heads(&self, ctx: &RouteContext, query: &HeadQuery) -> Result<Page<Head>> {
        self.inner().list_heads(ctx, query).await
    }
    async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv> {
        self.inner().collection_cv(ctx).await
    }
    async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, policy: &ShrinkPolicy) -> Result<ShrinkStats> {
        self.inner().shrink_dev_shadows(ctx, policy).await
    }
    async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted> {
        self.inner().hard_delete(key, counters).await
    }
    async fn list_collections(
        &self,
        tenant: &Name,
        db: Option<&Name>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RouteContext>> {
        self.inner().list_collections(tenant, db, after, limit).await
    }
    async fn list_objects(&self, ctx: &RouteContext, after: Option<&str>, limit: usize) -> Result<Page<ObjectId>> {
        self.inner().list_objects(ctx, after, limit).await
    }
    async fn import(&self, versions: Vec<ImportedVersion>) -> Result<ImportOutcome> {
        self.inner().import(versions).await
    }
    async fn prune(&self, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>> {
        self.inner().prune(key, ovs).await
    }
    async fn save_job(&self, job: &JobRecord) -> Result<()> {
        self.inner().save_job(job).await
    }
    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.inner().load_job(id).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner().ping().await
    }
}

/// A [`BlobStore`] decorator: every method forwards to [`Layered::inner`] unless overridden.
/// Each method's contract is [`BlobStore`]'s. `put` goes through the decorator's own
/// `put_with_etag`, so overriding that one method changes every put.
#[async_trait]
#[allow(missing_docs)] // the contracts are BlobStore's
pub trait LayeredBlob: Layered<Inner: BlobStore> {
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
        self.inner().put_with_etag(key, bytes, options).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<Checksum> {
        Ok(LayeredBlob::put_with_etag(self, key, bytes, options).await?.checksum)
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.inner().get(key).await
    }
    async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
        self.inner().get_with_etag(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        self.inner().head(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner().delete(key).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
        self.inner().list(prefix, after, limit).await
    }
    async fn list_with_delimiter(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<BlobListing> {
        self.inner().list_with_delimiter(prefix, start_after, limit).await
    }
    async fn presign_get(&self, key: &str, ttl_secs: u64) -> Result<String> {
        self.inner().presign_get(key, ttl_secs).await
    }
    async fn health(&self) -> Result<()> {
        self.inner().health().await
    }
    fn capabilities(&self) -> BlobCapabilities {
        self.inner().capabilities()
    }
}

/// A [`QueueStore`] decorator: every method forwards to [`Layered::inner`] unless overridden.
/// Each method's contract is [`QueueStore`]'s.
#[async_trait]
#[allow(missing_docs)] // the contracts are QueueStore's
pub trait LayeredQueue: Layered<Inner: QueueStore> {
    async fn enqueue(&self, entry: QueueEntry) -> Result<QueueEntry> {
        self.inner().enqueue(entry).await
    }
    async fn claim_due(&self, now: Timestamp, lease_until: Timestamp, limit: usize) -> Result<Vec<QueueEntry>> {
        self.inner().claim_due(now, lease_until, limit).await
    }
    async fn complete(&self, id: &str) -> Result<()> {
        self.inner().complete(id).await
    }
    async fn fail(&self, id: &str, error: &str, next: NextStep) -> Result<()> {
        self.inner().fail(id, error, next).await
    }
    async fn stats(&self, now: Timestamp) -> Result<QueueStats> {
        self.inner().stats(now).await
    }
    async fn list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>> {
        self.inner().list(state, after, limit).await
    }
    async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<()> {
        self.inner().retry_dead(id, now).await
    }
    async fn cancel(&self, id: &str) -> Result<()> {
        self.inner().cancel(id).await
    }
    async fn get(&self, id: &str) -> Result<Option<QueueEntry>> {
        self.inner().get(id).await
    }
}

/// A [`CounterStore`] decorator: every method forwards to [`Layered::inner`] unless
/// overridden. Each method's contract is [`CounterStore`]'s.
#[async_trait]
#[allow(missing_docs)] // the contracts are CounterStore's
pub trait LayeredCounter: Layered<Inner: CounterStore> {
    async fn add(&self, deltas: &[CounterDelta]) -> Result<()> {
        self.inner().add(deltas).await
    }
    async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        self.inner().totals(ctx).await
    }
    async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
        self.inner().reset(ctx, counters).await
    }
}

/// Implements a port for `$for` by forwarding every method to `<$via as $tr>`. Used for the
/// blanket impls below (`Arc<T>` → `T`, deref-coerced; a `Layered*` decorator → its `Layered*`
/// methods). It emits the whole `#[async_trait]` impl: `async_trait` must see the methods.
macro_rules! forward {
    (meta, [$($gen:tt)*] $for:ty, $via:ty as $tr:path) => {
        #[async_trait]
        impl<$($gen)*> MetaStore for $for {
            async fn commit(&self, commit: Commit) -> Result<Committed> {
                <$via as $tr>::commit(self, commit).await
            }
            async fn commit_many(&self, commits: Vec<Commit>) -> Result<Vec<Result<Committed>>> {
                <$via as $tr>::commit_many(self, commits).await
            }
            async fn commit_many_after(&self, commits: Vec<Commit>, durable: Durable) -> Result<Vec<Result<Committed>>> {
                <$via as $tr>::commit_many_after(self, commits, durable).await
            }
            async fn shadow_backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
                <$via as $tr>::shadow_backlog(self, after, limit).await
            }
            async fn shadow_pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
                <$via as $tr>::shadow_pending(self, ctx, limit).await
            }
            async fn shadow_logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
                <$via as $tr>::shadow_logged(self, ctx, upto).await
            }
            async fn find_request(&self, ctx: &RouteContext, r: &RequestId) -> Result<Option<(Committed, Checksum)>> {
                <$via as $tr>::find_request(self, ctx, r).await
            }
            async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
                <$via as $tr>::head(self, key).await
            }
            async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
                <$via as $tr>::version(self, key, ov).await
            }
            async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>> {
                <$via as $tr>::version_at(self, key, at).await
            }
            async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>> {
                <$via as $tr>::version_at_cv(self, key, cv).await
            }
            async fn history(&self, key: &ObjectKey, q: &HistoryQuery) -> Result<Page<VersionRecord>> {
                <$via as $tr>::history(self, key, q).await
            }
            async fn list_heads(&self, ctx: &RouteContext, q: &HeadQuery) -> Result<Page<Head>> {
                <$via as $tr>::list_heads(self, ctx, q).await
            }
            async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv> {
                <$via as $tr>::collection_cv(self, ctx).await
            }
            async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, p: &ShrinkPolicy) -> Result<ShrinkStats> {
                <$via as $tr>::shrink_dev_shadows(self, ctx, p).await
            }
            async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted> {
                <$via as $tr>::hard_delete(self, key, counters).await
            }
            async fn list_collections(
                &self,
                tenant: &Name,
                db: Option<&Name>,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Page<RouteContext>> {
                <$via as $tr>::list_collections(self, tenant, db, after, limit).await
            }
            async fn list_objects(&self, ctx: &RouteContext, after: Option<&str>, limit: usize) -> Result<Page<ObjectId>> {
                <$via as $tr>::list_objects(self, ctx, after, limit).await
            }
            async fn import(&self, versions: Vec<ImportedVersion>) -> Result<ImportOutcome> {
                <$via as $tr>::import(self, versions).await
            }
            async fn prune(&self, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>> {
                <$via as $tr>::prune(self, key, ovs).await
            }
            async fn save_job(&self, job: &JobRecord) -> Result<()> {
                <$via as $tr>::save_job(self, job).await
            }
            async fn load_job(&self, id: &str) -> Result<Option<JobRecord>> {
                <$via as $tr>::load_job(self, id).await
            }
            async fn ping(&self) -> Result<()> {
                <$via as $tr>::ping(self).await
            }
        }
    };
    (blob, [$($gen:tt)*] $for:ty, $via:ty as $tr:path) => {
        #[async_trait]
        impl<$($gen)*> BlobStore for $for {
            async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
                <$via as $tr>::put_with_etag(self, key, bytes, options).await
            }
            async fn put(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<Checksum> {
                <$via as $tr>::put(self, key, bytes, options).await
            }
            async fn get(&self, key: &str) -> Result<Vec<u8>> {
                <$via as $tr>::get(self, key).await
            }
            async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
                <$via as $tr>::get_with_etag(self, key).await
            }
            async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
                <$via as $tr>::head(self, key).await
            }
            async fn delete(&self, key: &str) -> Result<()> {
                <$via as $tr>::delete(self, key).await
            }
            async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
                <$via as $tr>::list(self, prefix, after, limit).await
            }
            async fn list_with_delimiter(&self, prefix: &str, s: Option<&str>, limit: usize) -> Result<BlobListing> {
                <$via as $tr>::list_with_delimiter(self, prefix, s, limit).await
            }
            async fn presign_get(&self, key: &str, ttl_secs: u64) -> Result<String> {
                <$via as $tr>::presign_get(self, key, ttl_secs).await
            }
            async fn health(&self) -> Result<()> {
                <$via as $tr>::health(self).await
            }
            fn capabilities(&self) -> BlobCapabilities {
                <$via as $tr>::capabilities(self)
            }
        }
    };
    (queue, [$($gen:tt)*] $for:ty, $via:ty as $tr:path) => {
        #[async_trait]
        impl<$($gen)*> QueueStore for $for {
            async fn enqueue(&self, entry: QueueEntry) -> Result<QueueEntry> {
                <$via as $tr>::enqueue(self, entry).await
            }
            async fn claim_due(&self, now: Timestamp, lease_until: Timestamp, limit: usize) -> Result<Vec<QueueEntry>> {
                <$via as $tr>::claim_due(self, now, lease_until, limit).await
            }
            async fn complete(&self, id: &str) -> Result<()> {
                <$via as $tr>::complete(self, id).await
            }
            async fn fail(&self, id: &str, error: &str, next: NextStep) -> Result<()> {
                <$via as $tr>::fail(self, id, error, next).await
            }
            async fn stats(&self, now: Timestamp) -> Result<QueueStats> {
                <$via as $tr>::stats(self, now).await
            }
            async fn list(&self, state: QueueState, after: Option<&str>, limit: usize) -> Result<Vec<QueueEntry>> {
                <$via as $tr>::list(self, state, after, limit).await
            }
            async fn retry_dead(&self, id: &str, now: Timestamp) -> Result<()> {
                <$via as $tr>::retry_dead(self, id, now).await
            }
            async fn cancel(&self, id: &str) -> Result<()> {
                <$via as $tr>::cancel(self, id).await
            }
            async fn get(&self, id: &str) -> Result<Option<QueueEntry>> {
                <$via as $tr>::get(self, id).await
            }
        }
    };
    (counter, [$($gen:tt)*] $for:ty, $via:ty as $tr:path) => {
        #[async_trait]
        impl<$($gen)*> CounterStore for $for {
            async fn add(&self, deltas: &[CounterDelta]) -> Result<()> {
                <$via as $tr>::add(self, deltas).await
            }
            async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
                <$via as $tr>::totals(self, ctx).await
            }
            async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
                <$via as $tr>::reset(self, ctx, counters).await
            }
        }
    };
}

forward!(meta, [L: LayeredMeta] L, L as LayeredMeta);
forward!(blob, [L: LayeredBlob] L, L as LayeredBlob);
forward!(queue, [L: LayeredQueue] L, L as LayeredQueue);
forward!(counter, [L: LayeredCounter] L, L as LayeredCounter);

// `&Arc<T>` deref-coerces to `&T` at the call.
forward!(meta, [T: MetaStore + ?Sized] Arc<T>, T as MetaStore);
forward!(blob, [T: BlobStore + ?Sized] Arc<T>, T as BlobStore);
forward!(queue, [T: QueueStore + ?Sized] Arc<T>, T as QueueStore);
forward!(counter, [T: CounterStore + ?Sized] Arc<T>, T as CounterStore);
