//! Retention enforcement ([`Admin::enforce_retention`]) and version pins
//! ([`Collection::pin`]).
//!
//! Per object, the pure policy ([`udm_core::retention::prunable`]) names the versions past
//! `retention.days` or beyond the newest `retention.max_versions_per_item`, never the head
//! and never what a kept RESTORE version copied; pinned versions are then kept too, and a
//! collection with an unfinished collection restore is skipped whole (the restore may still
//! need any of its versions). Pruning one object, in an order a crash cannot hurt:
//! 1. the collection's shadow log is flushed, so the version index holds every version;
//! 2. the versions are flagged pruned in the version index (S3-only reads answer `Pruned`);
//! 3. the metadata store drops their records ([`MetaStore::prune`], atomic per object);
//! 4. their snapshots are deleted, then content objects that no kept version references.
//!
//! A crash after 2 leaves versions flagged in S3 but still served by the metadata store (a
//! rerun prunes them); after 3, snapshots and content no record references: orphans, which
//! the orphan GC ([`Admin::collect_garbage`]) removes.
//!
//! Pins are stored per object as a job record (`pin/<collection>/<id>`) in the metadata
//! store of the object's pair. Pin changes in one process are serialized; two processes
//! pinning the same object at once may lose one of the two changes (re-read with
//! [`Collection::pins`] to confirm).

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use udm_core::ports::{JobRecord, MAX_LIST_PAGE, MetaStore};
use udm_core::retention::{VersionInfo, prunable};
use udm_core::{Error, ErrorKind, ObjectKey, Ov, Result, RouteContext, VersionRecord};

use crate::{Admin, Collection};

/// The job-record id of an object's pins.
fn pin_id(key: &ObjectKey) -> String {
    format!("pin/{}/{}", key.ctx, key.id)
}

/// The job-record id listing a collection's unfinished collection restores.
pub(crate) fn restoring_id(ctx: &RouteContext) -> String {
    format!("restoring/{ctx}")
}

/// Adds (`running`) or removes a collection restore job from its collection's list of
/// unfinished restores, which retention honours.
pub(crate) async fn mark_restoring(meta: &dyn MetaStore, ctx: &RouteContext, job: &str, running: bool) -> Result<()> {
    let id = restoring_id(ctx);
    let mut jobs: BTreeSet<String> = match meta.load_job(&id).await? {
        Some(j) => serde_json::from_value(j.state.get("jobs").cloned().unwrap_or(Value::Null)).unwrap_or_default(),
        None => BTreeSet::new(),
    };
    let changed = if running { jobs.insert(job.to_owned()) } else { jobs.remove(job) };
    if changed {
        let done = jobs.is_empty();
        meta.save_job(&JobRecord { id, state: json!({ "jobs": jobs }), done }).await?;
    }
    Ok(())
}

/// The unfinished collection restores of `ctx` (job ids).
async fn restoring(meta: &dyn MetaStore, ctx: &RouteContext) -> Result<Vec<String>> {
    Ok(match meta.load_job(&restoring_id(ctx)).await? {
        Some(j) if !j.done => {
            serde_json::from_value(j.state.get("jobs").cloned().unwrap_or(Value::Null)).unwrap_or_default()
        }
        _ => Vec::new(),
    })
}

async fn load_pins(meta: &dyn MetaStore, key: &ObjectKey) -> Result<BTreeSet<Ov>> {
    let Some(j) = meta.load_job(&pin_id(key)).await? else { return Ok(BTreeSet::new()) };
    let raw: Vec<u64> = serde_json::from_value(j.state.get("ovs").cloned().unwrap_or(Value::Null))
        .map_err(|e| Error::internal(format!("pins of {key}: {e}")))?;
    raw.into_iter().map(Ov::new).collect()
}

impl Collection {
    /// Pins version `ov` of `id`: retention never prunes it. Pinning a pinned version is a
    /// no-op; a version that does not exist is `NotFound`, a pruned one `Pruned`.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let udm = udm_facade::Udm::in_memory().unwrap();
    /// # let docs = udm.with(udm_core::RouteContext::new("acme", "crm", "docs").unwrap());
    /// let w = docs.create(serde_json::json!({"v": 1}), udm_facade::WriteOpts::id("a")).await.unwrap();
    /// docs.pin("a", w.ov).await.unwrap();
    /// assert_eq!(docs.pins("a").await.unwrap(), vec![w.ov]);
    /// docs.unpin("a", w.ov).await.unwrap();
    /// # });
    /// ```
    pub async fn pin(&self, id: &str, ov: Ov) -> Result<()> {
        self.get_version(id, ov, crate::ReadOpts { include_deleted: true, ..crate::ReadOpts::default() }).await?;
        self.change_pins(id, ov, true).await.map(|_| ())
    }

    /// Unpins version `ov` of `id`; `false` when it was not pinned.
    pub async fn unpin(&self, id: &str, ov: Ov) -> Result<bool> {
        self.change_pins(id, ov, false).await
    }

    /// The pinned versions of `id`, ascending.
    pub async fn pins(&self, id: &str) -> Result<Vec<Ov>> {
        let key = self.key(id)?;
        let pair = self.inner.router.route(&key.ctx, &key.id).index;
        Ok(load_pins(&*self.inner.pairs[pair].meta, &key).await?.into_iter().collect())
    }

    async fn change_pins(&self, id: &str, ov: Ov, pin: bool) -> Result<bool> {
        let key = self.key(id)?;
        let pair = self.inner.router.route(&key.ctx, &key.id).index;
        let meta = &*self.inner.pairs[pair].meta;
        let _one_at_a_time = self.inner.pin_lock.lock().await;
        let mut pins = load_pins(meta, &key).await?;
        let changed = if pin { pins.insert(ov) } else { pins.remove(&ov) };
        if changed {
            let ovs: Vec<u64> = pins.iter().map(|o| o.get()).collect();
            meta.save_job(&JobRecord { id: pin_id(&key), state: json!({ "ovs": ovs }), done: ovs.is_empty() }).await?;
        }
        Ok(changed)
    }
}

/// What [`Admin::enforce_retention`] reports as it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RetentionEvent {
    /// Versions of one object pruned (or, in a dry run, that would be).
    Pruned {
        /// The pair holding it.
        pair: String,
        /// `tenant/db/collection`.
        collection: String,
        /// The object id.
        id: String,
        /// The OVs.
        ovs: Vec<u64>,
        /// Snapshot bytes freed.
        bytes: u64,
        /// Content objects deleted (no kept version references them).
        content: Vec<String>,
    },
    /// A collection left alone, and why.
    Skipped {
        /// `tenant/db/collection`.
        collection: String,
        /// Why.
        reason: String,
    },
    /// Objects examined so far.
    Progress {
        /// Count.
        objects: u64,
    },
}

/// Totals of one retention run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Collections examined.
    pub collections: u64,
    /// Collections skipped (an unfinished collection restore).
    pub skipped_collections: u64,
    /// Objects examined.
    pub objects: u64,
    /// Versions pruned.
    pub versions_pruned: u64,
    /// Versions the policy named but a pin kept.
    pub kept_pinned: u64,
    /// Snapshots deleted.
    pub snapshots_deleted: u64,
    /// Snapshot bytes freed.
    pub snapshot_bytes: u64,
    /// Content objects deleted.
    pub content_deleted: u64,
    /// Content bytes freed.
    pub content_bytes: u64,
}

impl Admin {
    /// Enforces the configured retention (`retention.days`, `retention.max_versions_per_item`)
    /// on `scope` (one collection, or every collection in the blob stores), reporting each
    /// object's pruned versions through `on`; with `dry_run`, only reports. Never prunes a
    /// head, a pinned version, a version a kept RESTORE copied, or anything in a collection
    /// with an unfinished collection restore. Without a policy it is an `Unsupported` error.
    ///
    /// Reading a pruned version, or an instant or CV whose version was pruned, is then
    /// [`ErrorKind::Pruned`] — never another version's data.
    pub async fn enforce_retention(
        &self,
        scope: Option<&RouteContext>,
        dry_run: bool,
        on: &mut (dyn FnMut(RetentionEvent) + Send),
    ) -> Result<RetentionReport> {
        let policy = self.inner.config.retention;
        if policy.days.is_none() && policy.max_versions_per_item.is_none() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "no retention policy is configured (retention.days or retention.max_versions_per_item)",
            ));
        }
        let mut report = RetentionReport { dry_run, ..RetentionReport::default() };
        let collections = match scope {
            Some(ctx) => vec![ctx.clone()],
            None => self.all_collections().await?,
        };
        for ctx in collections {
            report.collections += 1;
            let running = restoring(&*self.inner.pairs[0].meta, &ctx).await?;
            if !running.is_empty() {
                report.skipped_collections += 1;
                let reason = format!("unfinished collection restore(s): {}", running.join(", "));
                on(RetentionEvent::Skipped { collection: ctx.to_string(), reason });
                continue;
            }
            for pair in 0..self.inner.pairs.len() {
                self.retain_collection(pair, &ctx, dry_run, &mut report, on).await?;
            }
        }
        Ok(report)
    }

    /// Every collection any pair's blob store holds, each once, in order.
    pub(crate) async fn all_collections(&self) -> Result<Vec<RouteContext>> {
        let mut all = BTreeSet::new();
        for p in &self.inner.pairs {
            all.extend(crate::rebuild::collections_in(&*p.json, &self.inner.layout).await?);
        }
        Ok(all.into_iter().collect())
    }

    async fn retain_collection(
        &self,
        pair: usize,
        ctx: &RouteContext,
        dry_run: bool,
        report: &mut RetentionReport,
        on: &mut (dyn FnMut(RetentionEvent) + Send),
    ) -> Result<()> {
        let t = self.inner.shadow_target(pair);
        if !dry_run {
            crate::shadow::flush(&t, ctx, false).await?;
        }
        let meta = self.inner.pairs[pair].meta.clone();
        let mut after: Option<String> = None;
        loop {
            let page = meta.list_objects(ctx, after.as_deref(), MAX_LIST_PAGE).await?;
            for id in &page.items {
                let key = ObjectKey::new(ctx.clone(), id.clone());
                self.retain_object(pair, &key, dry_run, report, on).await?;
                report.objects += 1;
                if report.objects.is_multiple_of(1000) {
                    on(RetentionEvent::Progress { objects: report.objects });
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(()),
            }
        }
    }

    async fn retain_object(
        &self,
        pair: usize,
        key: &ObjectKey,
        dry_run: bool,
        report: &mut RetentionReport,
        on: &mut (dyn FnMut(RetentionEvent) + Send),
    ) -> Result<()> {
        let meta = &*self.inner.pairs[pair].meta;
        let records = all_records(meta, key).await?;
        let infos: Vec<VersionInfo> =
            records.iter().map(|r| VersionInfo { ov: r.ov, at: r.at, restored_from: r.restored_from }).collect();
        let now = self.inner.clock.now();
        let named = prunable(&infos, &self.inner.config.retention, now);
        if named.is_empty() {
            return Ok(());
        }
        let pins = load_pins(meta, key).await?;
        let (kept, ovs): (Vec<Ov>, Vec<Ov>) = named.into_iter().partition(|ov| pins.contains(ov));
        report.kept_pinned += kept.len() as u64;
        if ovs.is_empty() {
            return Ok(());
        }
        let doomed: BTreeSet<Ov> = ovs.iter().copied().collect();
        let (gone, stay): (Vec<&VersionRecord>, Vec<&VersionRecord>) =
            records.iter().partition(|r| doomed.contains(&r.ov));
        let content = self.unreferenced_content(pair, key, &gone, &stay).await?;
        let bytes: u64 = gone.iter().map(|r| r.snapshot.size).sum();
        report.versions_pruned += ovs.len() as u64;
        report.snapshots_deleted += gone.len() as u64;
        report.snapshot_bytes += bytes;
        report.content_deleted += content.len() as u64;
        report.content_bytes += content.values().sum::<u64>();
        if !dry_run {
            let t = self.inner.shadow_target(pair);
            crate::index::mark_pruned(&t, key, &ovs).await?;
            let snapshots = meta.prune(key, &ovs).await?;
            let json = &self.inner.pairs[pair].json;
            for s in &snapshots {
                delete_if_present(&**json, &s.key).await?;
            }
            for k in content.keys() {
                delete_if_present(&*self.inner.pairs[pair].content, k).await?;
            }
        }
        on(RetentionEvent::Pruned {
            pair: self.inner.pairs[pair].name.clone(),
            collection: key.ctx.to_string(),
            id: key.id.to_string(),
            ovs: ovs.iter().map(|o| o.get()).collect(),
            bytes,
            content: content.into_keys().collect(),
        });
        Ok(())
    }

    /// The content objects (key → size) that the `gone` versions reference and no `stay`
    /// version does. Reads snapshots only when the object has externalized content.
    async fn unreferenced_content(
        &self,
        pair: usize,
        key: &ObjectKey,
        gone: &[&VersionRecord],
        stay: &[&VersionRecord],
    ) -> Result<BTreeMap<String, u64>> {
        let map = &self.inner.collection(&key.ctx).map;
        let prefix = self.inner.layout.content_prefix(key);
        let content = &self.inner.pairs[pair].content;
        if content.list(&prefix, None, 1).await?.keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let coll = Collection::new(self.inner.clone(), key.ctx.clone());
        let refs = async |records: &[&VersionRecord]| -> Result<BTreeMap<String, u64>> {
            let mut out = BTreeMap::new();
            for r in records.iter().filter(|r| !r.deleted) {
                let env = coll.load_snapshot(pair, &r.snapshot).await?;
                for (_, c) in map.references(&env.data) {
                    out.insert(self.inner.layout.content(key, &c.blake3), c.size);
                }
            }
            Ok(out)
        };
        let mut candidates = refs(gone).await?;
        if candidates.is_empty() {
            return Ok(candidates);
        }
        for k in refs(stay).await?.keys() {
            candidates.remove(k);
        }
        Ok(candidates)
    }
}

/// Every version record of `key`, ascending.
pub(crate) async fn all_records(meta: &dyn MetaStore, key: &ObjectKey) -> Result<Vec<VersionRecord>> {
    crate::read::history_pages(meta, key, None, MAX_LIST_PAGE).try_concat().await
}

pub(crate) async fn delete_if_present(store: &dyn udm_core::ports::BlobStore, key: &str) -> Result<()> {
    match store.delete(key).await {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
