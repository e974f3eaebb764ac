//! Orphan garbage collection ([`Admin::collect_garbage`]): snapshots and content objects
//! that no committed version references.
//!
//! A snapshot is *referenced* when a version record of the metadata store names it, or the
//! shadow version index names it as a committed, unpruned version (so a record the
//! metadata store lost never costs its snapshot). An unreferenced snapshot is an orphan —
//! a write that failed or lost its race after the put, or a version retention pruned — and
//! is deleted once its envelope's timestamp is older than the grace period (a younger one
//! may belong to a write still in flight). A snapshot that cannot be decoded is reported,
//! never deleted.
//!
//! Content objects carry no timestamp, and a write puts its content before its snapshot, so
//! their age is measured by marking: content that no referenced or in-grace snapshot names
//! is marked with the time it was first seen unreferenced (a job record per object,
//! `gc/<collection>/<id>`), and deleted by a later run once the mark is older than the
//! grace period and the content is still unreferenced. Content referenced again loses its
//! mark. Finding the references reads the snapshots of objects that have content (one GET
//! per version); objects without content cost two listings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use udm_core::ports::{BlobStore, JobRecord, MAX_LIST_PAGE};
use udm_core::version::SnapshotEnvelope;
use udm_core::{ObjectId, ObjectKey, Result, RouteContext, Timestamp};

use crate::{Admin, Collection};

/// What [`Admin::collect_garbage`] reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GcEvent {
    /// An orphan deleted (or, in a dry run, that would be).
    Orphan {
        /// The pair.
        pair: String,
        /// The blob key.
        key: String,
        /// Its size in bytes.
        bytes: u64,
        /// `snapshot` or `content`.
        kind: &'static str,
    },
    /// A blob under a snapshot prefix that is not a readable snapshot: kept, reported.
    Unreadable {
        /// The pair.
        pair: String,
        /// The blob key.
        key: String,
        /// Why.
        error: String,
    },
    /// Objects examined so far.
    Progress {
        /// Count.
        objects: u64,
    },
}

/// Totals of one GC run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Whether nothing was changed (marks included).
    pub dry_run: bool,
    /// Objects examined.
    pub objects: u64,
    /// Orphan snapshots deleted.
    pub snapshots: u64,
    /// Their bytes.
    pub snapshot_bytes: u64,
    /// Orphan content objects deleted.
    pub content: u64,
    /// Their bytes.
    pub content_bytes: u64,
    /// Unreferenced blobs kept because they are younger than the grace period (or, for
    /// content, marked this run or too recently).
    pub kept_in_grace: u64,
    /// Blobs under a snapshot prefix that could not be decoded (kept).
    pub unreadable: u64,
}

/// The job-record id of an object's content marks.
fn marks_id(key: &ObjectKey) -> String {
    format!("gc/{}/{}", key.ctx, key.id)
}

impl Admin {
    /// Deletes the orphan snapshots and content objects of `scope` (one collection, or every
    /// collection in the blob stores) older than `grace`, reporting each through `on`; with
    /// `dry_run`, only reports (and marks nothing). A snapshot is referenced when a metadata
    /// record or a committed, unpruned shadow-index entry names it; unreferenced ones go
    /// once their envelope is older than `grace`. Content objects are marked when first seen
    /// unreferenced and deleted by a later run once the mark is older than `grace`.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let udm = udm_facade::Udm::in_memory().unwrap();
    /// let report = udm.admin().collect_garbage(None, std::time::Duration::from_secs(3600), true, &mut |_| {}).await?;
    /// assert_eq!(report.snapshots, 0);
    /// # Ok::<(), udm_core::Error>(()) }).unwrap();
    /// ```
    pub async fn collect_garbage(
        &self,
        scope: Option<&RouteContext>,
        grace: Duration,
        dry_run: bool,
        on: &mut (dyn FnMut(GcEvent) + Send),
    ) -> Result<GcReport> {
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let now = self.inner.clock.now();
        let cutoff = now.plus_millis(-grace_ms);
        let mut report = GcReport { dry_run, ..GcReport::default() };
        let collections = match scope {
            Some(ctx) => vec![ctx.clone()],
            None => self.all_collections().await?,
        };
        let mut gc = Gc { now, cutoff, report: &mut report, on };
        for ctx in collections {
            for pair in 0..self.inner.pairs.len() {
                self.gc_collection(pair, &ctx, &mut gc).await?;
            }
        }
        Ok(report)
    }

    async fn gc_collection(&self, pair: usize, ctx: &RouteContext, gc: &mut Gc<'_, '_>) -> Result<()> {
        let json = &*self.inner.pairs[pair].json;
        let content = &*self.inner.pairs[pair].content;
        let base = self.inner.layout.collection_prefix(ctx);
        // Objects with snapshots, then objects with only content left.
        for (store, sub) in [(json, "objects/"), (content, "content/")] {
            let prefix = format!("{base}{sub}");
            let mut after: Option<String> = None;
            loop {
                let page = store.list_with_delimiter(&prefix, after.as_deref(), MAX_LIST_PAGE).await?;
                for p in &page.prefixes {
                    let Some(id) = p.strip_prefix(&prefix).and_then(|r| r.strip_suffix('/')) else { continue };
                    let Ok(id) = ObjectId::new(id) else { continue };
                    let key = ObjectKey::new(ctx.clone(), id);
                    if sub == "content/"
                        && !json.list(&self.inner.layout.object_prefix(&key), None, 1).await?.keys.is_empty()
                    {
                        continue; // done in the first pass
                    }
                    self.gc_object(pair, &key, gc).await?;
                    gc.report.objects += 1;
                    if gc.report.objects.is_multiple_of(1000) {
                        (gc.on)(GcEvent::Progress { objects: gc.report.objects });
                    }
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        Ok(())
    }

    async fn gc_object(&self, pair: usize, key: &ObjectKey, gc: &mut Gc<'_, '_>) -> Result<()> {
        let p = &self.inner.pairs[pair];
        let name = p.name.clone();
        let mut referenced: BTreeMap<String, udm_core::version::SnapshotRef> = BTreeMap::new();
        for r in crate::retention::all_records(&*p.meta, key).await? {
            referenced.insert(r.snapshot.key.clone(), r.snapshot);
        }
        let t = self.inner.shadow_target(pair);
        for e in crate::index::all_entries(&t, key).await? {
            if let (false, Some(r)) = (e.pruned, e.record) {
                referenced.insert(r.snapshot.key.clone(), r.snapshot);
            }
        }
        let contents = list_keys(&*p.content, &self.inner.layout.content_prefix(key)).await?;
        let map = &self.inner.collection(&key.ctx).map;
        let coll = Collection::new(self.inner.clone(), key.ctx.clone());
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut uses = |data: &Value| {
            for (_, c) in map.references(data) {
                used.insert(self.inner.layout.content(key, &c.blake3));
            }
        };
        // A damaged committed snapshot hides what it references: its object's content stays.
        let mut content_unknown = false;
        if !contents.is_empty() {
            for snapshot in referenced.values() {
                match coll.load_snapshot(pair, snapshot).await {
                    Ok(env) => uses(&env.data),
                    Err(e) if e.kind() == udm_core::ErrorKind::ChecksumMismatch => content_unknown = true,
                    Err(e) => return Err(e),
                }
            }
        }
        let versions = format!("{}versions/", self.inner.layout.object_prefix(key));
        for blob in list_keys(&*p.json, &versions).await? {
            if referenced.contains_key(&blob) {
                continue;
            }
            let (env, bytes) = match p.json.get(&blob).await {
                Ok(bytes) => (SnapshotEnvelope::decode(&bytes, None), bytes.len() as u64),
                Err(e) if e.kind() == udm_core::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match env {
                Ok(env) if env.at < gc.cutoff => {
                    if !gc.report.dry_run {
                        crate::retention::delete_if_present(&*p.json, &blob).await?;
                    }
                    gc.report.snapshots += 1;
                    gc.report.snapshot_bytes += bytes;
                    (gc.on)(GcEvent::Orphan { pair: name.clone(), key: blob, bytes, kind: "snapshot" });
                }
                Ok(env) => {
                    gc.report.kept_in_grace += 1;
                    uses(&env.data);
                }
                Err(e) => {
                    gc.report.unreadable += 1;
                    (gc.on)(GcEvent::Unreadable { pair: name.clone(), key: blob, error: e.to_string() });
                }
            }
        }
        if contents.is_empty() || content_unknown {
            return Ok(());
        }
        // Content: mark what is unreferenced now, sweep what was marked long enough ago.
        let id = marks_id(key);
        let old: BTreeMap<String, i64> = match p.meta.load_job(&id).await? {
            Some(j) => serde_json::from_value(j.state.get("marks").cloned().unwrap_or(Value::Null)).unwrap_or_default(),
            None => BTreeMap::new(),
        };
        let mut marks = BTreeMap::new();
        for k in contents {
            if used.contains(&k) {
                continue;
            }
            match old.get(&k) {
                Some(&seen) if seen < gc.cutoff.as_millis() => {
                    let Some(size) = p.content.head(&k).await?.map(|m| m.size) else { continue };
                    if !gc.report.dry_run {
                        crate::retention::delete_if_present(&*p.content, &k).await?;
                    }
                    gc.report.content += 1;
                    gc.report.content_bytes += size;
                    (gc.on)(GcEvent::Orphan { pair: name.clone(), key: k, bytes: size, kind: "content" });
                }
                Some(&seen) => {
                    gc.report.kept_in_grace += 1;
                    marks.insert(k, seen);
                }
                None => {
                    gc.report.kept_in_grace += 1;
                    marks.insert(k, gc.now.as_millis());
                }
            }
        }
        if !gc.report.dry_run && marks != old {
            let done = marks.is_empty();
            p.meta.save_job(&JobRecord { id, state: json!({ "marks": marks }), done }).await?;
        }
        Ok(())
    }
}

struct Gc<'a, 'b> {
    now: Timestamp,
    cutoff: Timestamp,
    report: &'a mut GcReport,
    on: &'a mut (dyn FnMut(GcEvent) + Send + 'b),
}

/// Every key under `prefix`.
async fn list_keys(store: &dyn BlobStore, prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(prefix, after.as_deref(), MAX_LIST_PAGE).await?;
        out.extend(page.keys);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}
