//! Recover objects from the S3 shadow ([`Collection::recover`]) and repair damaged
//! snapshots.
//!
//! Two modes:
//! - [`RecoverMode::Restore`]: the version the shadow's index names for the point (latest,
//!   an OV, an instant, a CV) is read from the blob store, verified against its record's
//!   checksum and seal, and written as a new RESTORE version (nothing when the object
//!   already equals it). The object must exist in the metadata store.
//! - [`RecoverMode::InPlace`]: the metadata store is repaired to match the shadow: every
//!   version the collection's commit log holds for the object(s) up to the point that the
//!   metadata store lacks is imported with its OV, CV, timestamp, request id and
//!   fingerprint (snapshots fetched and verified first; pruned versions skipped); nothing
//!   is ever removed; the collection's counters are re-derived afterwards.
//!
//! Both first check the snapshots the metadata store names (the head's; every version's
//! with `deep`): a missing or damaged snapshot is rewritten from the head's inline or
//! dev-shadow copy when that copy matches the recorded checksum and the rebuilt envelope
//! matches the recorded seal, and reported unrecoverable otherwise. With `dry_run` every
//! check and fetch runs and nothing is written.

use serde::Serialize;
use serde_json::json;
use udm_core::ports::{MAX_LIST_PAGE, PutOptions};
use udm_core::shadow::LogEntry;
use udm_core::version::{ENVELOPE_FORMAT, Head, SnapshotEnvelope, VersionRecord};
use udm_core::{Checksum, Cv, Error, ErrorKind, ObjectId, ObjectKey, Ov, Result, Timestamp};

use crate::WriteOpts;
use crate::options::Collection;
use crate::read::Lookup;
use crate::record::RestoreOutcome;

/// Which version to recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoverPoint {
    /// The newest version the shadow holds.
    Latest,
    /// A given OV (one object only).
    Ov(Ov),
    /// The version current at an instant.
    At(Timestamp),
    /// The version current at a collection version.
    Cv(Cv),
}

/// How to recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoverMode {
    /// Append a RESTORE version carrying the shadow's data.
    Restore,
    /// Import the shadow's versions the metadata store lacks.
    InPlace,
}

/// Options of a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverOptions {
    /// Which version.
    pub point: RecoverPoint,
    /// How.
    pub mode: RecoverMode,
    /// Check and report only.
    pub dry_run: bool,
    /// Check every version's snapshot, not only the head's.
    pub deep: bool,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        Self { point: RecoverPoint::Latest, mode: RecoverMode::Restore, dry_run: false, deep: false }
    }
}

/// One finding or action of a recovery.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RecoverEvent {
    /// A RESTORE version written (or, dry, that would be) from the shadow.
    Restored {
        /// Object id.
        id: String,
        /// The shadow's OV it copies.
        from: u64,
    },
    /// Versions imported into the metadata store (or, dry, that would be).
    Imported {
        /// Object id.
        id: String,
        /// Their OVs.
        ovs: Vec<u64>,
    },
    /// A damaged or missing snapshot rewritten from the head's copy.
    Repaired {
        /// Object id.
        id: String,
        /// The blob key.
        key: String,
    },
    /// Something that cannot be recovered here, and why.
    Unrecoverable {
        /// Object id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Totals of a recovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecoverReport {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Objects examined.
    pub objects: u64,
    /// RESTORE versions written.
    pub restored: u64,
    /// Objects already equal to the shadow's version.
    pub unchanged: u64,
    /// Versions imported in place.
    pub imported: u64,
    /// Snapshots repaired from a head copy.
    pub repaired: u64,
    /// Problems left (see the events).
    pub unrecoverable: u64,
}

impl Collection {
    /// Recovers object `id` from the S3 shadow: as a RESTORE of the version the shadow names
    /// for `options.point`, or in place (the commit log's versions the metadata store lacks
    /// imported), after checking — and repairing from the head's copy — its snapshots. Problems that
    /// cannot be fixed are reported (`unrecoverable` and an event), not errors; an error
    /// means the recovery could not run (a store unavailable, bad input).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use udm_facade::{RecoverOptions, RecoverPoint};
    /// # let udm = udm_facade::Udm::in_memory()?;
    /// # let docs = udm.with(udm_core::RouteContext::new("acme", "crm", "docs")?);
    /// docs.create(serde_json::json!({"v": 1}), udm_facade::WriteOpts::id("a")).await?;
    /// udm.admin().flush_shadow().await?;
    /// let report = docs.recover("a", RecoverOptions::default(), &mut |e| println!("{e:?}")).await?;
    /// assert_eq!((report.unchanged, report.unrecoverable), (1, 0));
    /// # Ok::<(), udm_core::Error>(()) }).unwrap();
    /// ```
    pub async fn recover(
        &self,
        id: &str,
        options: RecoverOptions,
        on: &mut (dyn FnMut(RecoverEvent) + Send),
    ) -> Result<RecoverReport> {
        let key = self.key(id)?;
        let mut report = RecoverReport { dry_run: options.dry_run, ..RecoverReport::default() };
        let logged = match options.mode {
            RecoverMode::InPlace => self.logged_for(Some(&key)).await?,
            RecoverMode::Restore => Vec::new(),
        };
        self.recover_key(&key, &logged, options, &mut report, on).await?;
        if options.mode == RecoverMode::InPlace && report.imported > 0 && !options.dry_run {
            crate::Admin::new(self.inner.clone()).recount(&self.ctx).await?;
        }
        Ok(report)
    }

    /// Recovers every object of the collection that either store holds (ids from the
    /// metadata store and from the shadow), like [`Collection::recover`]; an OV point is a
    /// validation error (OVs are per object).
    pub async fn recover_all(
        &self,
        options: RecoverOptions,
        on: &mut (dyn FnMut(RecoverEvent) + Send),
    ) -> Result<RecoverReport> {
        if matches!(options.point, RecoverPoint::Ov(_)) {
            return Err(Error::validation("point", "an OV names a version of one object: recover the object"));
        }
        let mut report = RecoverReport { dry_run: options.dry_run, ..RecoverReport::default() };
        let logged = match options.mode {
            RecoverMode::InPlace => self.logged_for(None).await?,
            RecoverMode::Restore => Vec::new(),
        };
        for id in self.ids_in_either().await? {
            let key = ObjectKey::new(self.ctx.clone(), id);
            let mine: Vec<LogEntry> = logged.iter().filter(|e| e.record.key == key).cloned().collect();
            self.recover_key(&key, &mine, options, &mut report, on).await?;
        }
        if options.mode == RecoverMode::InPlace && report.imported > 0 && !options.dry_run {
            crate::Admin::new(self.inner.clone()).recount(&self.ctx).await?;
        }
        Ok(report)
    }

    /// The commit log's versions of `key` (or of the whole collection), in CV order, after
    /// a flush of what the metadata store committed.
    async fn logged_for(&self, key: Option<&ObjectKey>) -> Result<Vec<LogEntry>> {
        let mut all = Vec::new();
        for pair in 0..self.inner.pairs.len() {
            let t = self.inner.shadow_target(pair);
            // Best effort: the metadata store may be the thing that is broken.
            if let Err(e) = crate::shadow::flush(&t, &self.ctx, false).await {
                tracing::warn!(ctx = %self.ctx, error = %e, "udm: recover: the shadow log could not be flushed first");
            }
            let (entries, _) = crate::rebuild::logged_versions(&*t.json, &self.inner.layout, &self.ctx).await?;
            all.extend(entries.into_iter().filter(|e| key.is_none_or(|k| e.record.key == *k)));
        }
        Ok(all)
    }

    async fn ids_in_either(&self) -> Result<Vec<ObjectId>> {
        let mut ids = std::collections::BTreeSet::new();
        for (i, p) in self.inner.pairs.iter().enumerate() {
            let mut after: Option<String> = None;
            loop {
                let page = p.meta.list_objects(&self.ctx, after.as_deref(), MAX_LIST_PAGE).await?;
                ids.extend(page.items.into_iter().map(|id| id.as_str().to_owned()));
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            let prefix = format!("{}objects/", self.inner.layout.collection_prefix(&self.ctx));
            let mut after: Option<String> = None;
            loop {
                let page =
                    self.inner.pairs[i].json.list_with_delimiter(&prefix, after.as_deref(), MAX_LIST_PAGE).await?;
                ids.extend(
                    page.prefixes.iter().filter_map(|p| Some(p.strip_prefix(&prefix)?.strip_suffix('/')?.to_owned())),
                );
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        ids.into_iter().map(|id| ObjectId::new(&id)).collect()
    }

    async fn recover_key(
        &self,
        key: &ObjectKey,
        logged: &[LogEntry],
        options: RecoverOptions,
        report: &mut RecoverReport,
        on: &mut (dyn FnMut(RecoverEvent) + Send),
    ) -> Result<()> {
        report.objects += 1;
        let routed = self.inner.router.route(&key.ctx, &key.id).index;
        let located = match self.locate(key).await {
            Ok(found) => Some(found),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        // 1. The snapshots the metadata store names.
        let mut repaired = std::collections::BTreeSet::new();
        if let Some((pair, head)) = &located {
            let records = if options.deep {
                crate::retention::all_records(&*self.inner.pairs[*pair].meta, key).await?
            } else {
                self.inner.pairs[*pair].meta.version(key, head.ov).await?.into_iter().collect()
            };
            for r in records {
                match self.load_snapshot(*pair, &r.snapshot).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::ChecksumMismatch => {
                        match self.repair_snapshot(*pair, head, &r, options.dry_run).await? {
                            Ok(()) => {
                                repaired.insert(r.snapshot.key.clone());
                                report.repaired += 1;
                                on(RecoverEvent::Repaired { id: key.id.to_string(), key: r.snapshot.key.clone() });
                            }
                            Err(why) => problem(report, on, key, format!("{}: {e}; {why}", r.ov)),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // 2. The recovery itself.
        let lookup = match options.point {
            RecoverPoint::Latest => None,
            RecoverPoint::Ov(ov) => Some(Lookup::Ov(ov)),
            RecoverPoint::At(at) => Some(Lookup::At(at)),
            RecoverPoint::Cv(cv) => Some(Lookup::Cv(cv)),
        };
        match options.mode {
            RecoverMode::Restore => {
                let Some((pair, _)) = located else {
                    problem(report, on, key, "the metadata store lacks the object: recover it in place".into());
                    return Ok(());
                };
                let found = match lookup {
                    Some(l) => self.index_answer(pair, key, l).await,
                    None => {
                        let t = self.inner.shadow_target(pair);
                        let latest = crate::index::by_bound(&t, key, udm_core::shadow::index::Bound::Latest).await;
                        latest.and_then(|f| f.into_record(key, "the latest version"))
                    }
                };
                let target = match found {
                    Ok(r) => r,
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Pruned) => {
                        problem(report, on, key, format!("the shadow holds no such version: {e}"));
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                // Verified before anything is written (restore_to reads it again, verified).
                // (A dry run did not write the repair it reported.)
                let repaired_dry = options.dry_run && repaired.contains(&target.snapshot.key);
                if let (Err(e), false) = (self.load_snapshot(pair, &target.snapshot).await, repaired_dry) {
                    problem(report, on, key, format!("the shadow's OV {} fails verification: {e}", target.ov));
                    return Ok(());
                }
                let head = self.inner.pairs[pair].meta.head(key).await?;
                if head.as_ref().is_some_and(|h| {
                    h.snapshot.checksum == target.snapshot.checksum && h.is_deleted() == target.deleted
                }) {
                    report.unchanged += 1;
                    return Ok(());
                }
                if !options.dry_run {
                    let opts = WriteOpts::default();
                    let request = self.request_id(&opts)?;
                    let named = json!({"recover": target.ov.get(), "from": "shadow"});
                    let target = if target.deleted { None } else { Some(target.clone()) };
                    if let RestoreOutcome::Unchanged { .. } =
                        self.restore_to(pair, key.clone(), target, &named, request, &opts).await?
                    {
                        report.unchanged += 1;
                        return Ok(());
                    }
                }
                report.restored += 1;
                on(RecoverEvent::Restored { id: key.id.to_string(), from: target.ov.get() });
            }
            RecoverMode::InPlace => {
                let upto: Vec<&LogEntry> = logged
                    .iter()
                    .filter(|e| match lookup {
                        None => true,
                        Some(Lookup::Ov(ov)) => e.record.ov <= ov,
                        Some(Lookup::At(at)) => e.record.at <= at,
                        Some(Lookup::Cv(cv)) => e.record.cv <= cv,
                    })
                    .collect();
                let meta = &self.inner.pairs[routed].meta;
                let mut missing = Vec::new();
                for e in upto {
                    if meta.version(key, e.record.ov).await?.is_none() {
                        missing.push(e);
                    }
                }
                if missing.is_empty() {
                    report.unchanged += 1;
                    return Ok(());
                }
                let versions = match self.imported(routed, &missing, None).await {
                    Ok(v) => v,
                    Err(e) if e.kind() == ErrorKind::ChecksumMismatch => {
                        problem(report, on, key, format!("a logged version fails verification: {e}"));
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let ovs: Vec<u64> = versions.iter().map(|v| v.record.ov.get()).collect();
                if ovs.is_empty() {
                    report.unchanged += 1;
                    return Ok(());
                }
                if !options.dry_run {
                    match meta.import(versions).await {
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::Validation) => {
                            problem(report, on, key, format!("the metadata store disagrees with the shadow: {e}"));
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
                report.imported += ovs.len() as u64;
                on(RecoverEvent::Imported { id: key.id.to_string(), ovs });
            }
        }
        Ok(())
    }

    /// Rewrites the damaged snapshot of `record` from the head's inline or dev-shadow copy;
    /// `Err(why)` when no verified copy exists.
    async fn repair_snapshot(
        &self,
        pair: usize,
        head: &Head,
        record: &VersionRecord,
        dry_run: bool,
    ) -> Result<std::result::Result<(), String>> {
        if record.ov != head.ov {
            return Ok(Err("only the head's version has a second copy (inline or dev shadow)".into()));
        }
        let copies = [head.inline.as_ref(), head.dev_shadow.as_ref().map(|d| &d.data)];
        let Some(data) = copies.into_iter().flatten().find(|d| Checksum::of_json(d) == record.snapshot.checksum) else {
            return Ok(Err("no inline or dev-shadow copy matches the recorded checksum".into()));
        };
        let envelope = SnapshotEnvelope {
            format: ENVELOPE_FORMAT.to_owned(),
            key: head.key.clone(),
            ov: head.ov,
            op: head.op,
            at: head.at,
            provenance: head.provenance.clone(),
            restored_from: record.restored_from,
            system: head.system.clone(),
            indexed: head.indexed.clone(),
            checksum: record.snapshot.checksum,
            data: data.clone(),
        };
        let bytes = envelope.to_bytes()?;
        if let Err(e) = SnapshotEnvelope::decode(&bytes, Some(&record.snapshot)) {
            return Ok(Err(format!("the envelope rebuilt from the head does not match the recorded seal: {e}")));
        }
        if !dry_run {
            let json = &self.inner.pairs[pair].json;
            json.put(&record.snapshot.key, bytes, &PutOptions::overwrite("application/json")).await?;
        }
        Ok(Ok(()))
    }
}

fn problem(report: &mut RecoverReport, on: &mut (dyn FnMut(RecoverEvent) + Send), key: &ObjectKey, reason: String) {
    report.unrecoverable += 1;
    on(RecoverEvent::Unrecoverable { id: key.id.to_string(), reason });
}

/// The repair a read names when a snapshot fails verification.
pub(crate) fn repair_hint(ctx: &udm_core::RouteContext, blob_key: &str) -> String {
    let id = blob_key.split_once("/objects/").and_then(|(_, rest)| rest.rsplit_once("/versions/")).map(|(id, _)| id);
    match id {
        Some(id) => format!("repair: `udm recover --object {ctx}/{id}` (Collection::recover)"),
        None => "repair: `udm recover` (Collection::recover)".to_owned(),
    }
}
