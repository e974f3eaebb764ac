//! Reads: locate the object's pair, fetch and verify snapshots, shape content.

use std::collections::HashMap;

use futures_util::StreamExt;

use serde_json::{Map, Value};
use udm_core::metamap::CONTENT_REF_KEY;
use udm_core::ports::MetaStore;
use udm_core::query::{Cursor, HistoryQuery, Order, parse_history_cursor, sort_cmp};
use udm_core::shadow::index::Bound;
use udm_core::version::{SnapshotEnvelope, SnapshotRef};
use udm_core::{Checksum, ContentHash, Error, ErrorKind, Head, ObjectKey, Result, VersionRecord};

use crate::index;
use crate::options::{Collection, ContentMode, ListQuery, ReadOpts, ReadSource};
use crate::record::{FailedItem, ListPage, Record};

/// Which version record to look up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lookup {
    Ov(udm_core::Ov),
    At(udm_core::Timestamp),
    Cv(udm_core::Cv),
}

impl Lookup {
    /// What was asked, for messages.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Lookup::Ov(_) => "the version asked",
            Lookup::At(_) => "the version current at that instant",
            Lookup::Cv(_) => "the version current at that CV",
        }
    }

    pub(crate) async fn run(self, meta: &dyn MetaStore, key: &ObjectKey) -> Result<Option<VersionRecord>> {
        match self {
            Lookup::Ov(ov) => meta.version(key, ov).await,
            Lookup::At(t) => meta.version_at(key, t).await,
            Lookup::Cv(cv) => meta.version_at_cv(key, cv).await,
        }
    }
}

impl Collection {
    /// The pair holding `key` and its head: the routed pair, or — if the object is found on
    /// another pair — a route-mismatch error. Not found anywhere → not found.
    pub(crate) async fn locate(&self, key: &ObjectKey) -> Result<(usize, Head)> {
        let routed = self.inner.router.route(&key.ctx, &key.id).index;
        if let Some(h) = self.inner.pairs[routed].meta.head(key).await? {
            return Ok((routed, h));
        }
        // A miss on the routed pair: ask the others at once (one more round trip).
        let others = self.inner.pairs.iter().enumerate().filter(|(i, _)| *i != routed);
        let asks = others.map(|(i, p)| async move { p.meta.head(key).await.map(|h| h.map(|_| i)) });
        for found in futures_util::future::join_all(asks).await {
            if let Some(i) = found? {
                self.inner.router.check(&key.ctx, &key.id, i)?;
            }
        }
        Err(Error::not_found(format!("object {key}")))
    }

    /// The data of the head's version (inline copy if kept, else the snapshot), verified.
    pub(crate) async fn head_data(&self, pair: usize, head: &Head) -> Result<Value> {
        match &head.inline {
            Some(data) => {
                Checksum::of_json(data).verify(&head.snapshot.checksum, "inline copy")?;
                Ok(data.clone())
            }
            None => Ok(self.load_snapshot(pair, &head.snapshot).await?.data),
        }
    }

    /// Fetches a snapshot envelope and verifies it against the metadata record's digests.
    pub(crate) async fn load_snapshot(&self, pair: usize, snapshot: &SnapshotRef) -> Result<SnapshotEnvelope> {
        self.inner.stats.snapshot_reads.inc();
        let key = &snapshot.key;
        let hint = || crate::recover::repair_hint(&self.ctx, key);
        let bytes = match self.inner.pairs[pair].json.get(key).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let message = format!("committed snapshot {key} is missing; {}", hint());
                return Err(Error::new(ErrorKind::ChecksumMismatch, message));
            }
            other => other?,
        };
        SnapshotEnvelope::decode(&bytes, Some(snapshot)).map_err(|e| match e.kind() {
            ErrorKind::ChecksumMismatch => Error::new(ErrorKind::ChecksumMismatch, format!("{key}: {e}; {}", hint())),
            _ => e,
        })
    }

    pub(crate) async fn read_latest(&self, key: &ObjectKey, opts: ReadOpts) -> Result<Record> {
        if opts.source == ReadSource::Shadow {
            let pair = self.inner.router.route(&key.ctx, &key.id).index;
            let t = self.inner.shadow_target(pair);
            let rec = index::by_bound(&t, key, Bound::Latest).await?.into_record(key, "the latest version")?;
            if rec.deleted && !opts.include_deleted {
                return Err(Error::not_found(format!("object {key} (deleted)")));
            }
            return self.read_version(pair, key, rec, opts).await;
        }
        let (pair, head) = self.locate(key).await?;
        if head.is_deleted() && !opts.include_deleted {
            return Err(Error::not_found(format!("object {key} (deleted)")));
        }
        self.inner.stats.reads.inc();
        let data = self.head_data(pair, &head).await?;
        let data = self.shape(pair, key, &data, opts.content).await?;
        Ok(head_record(&head, data))
    }

    /// Looks up one version record. From the primary: on the routed pair first (one round
    /// trip); on a miss, [`Collection::locate`] tells a missing object or a route mismatch
    /// from a missing version, and a record the metadata store lacks is looked up in the
    /// blob store's version index (a pruned answer is [`ErrorKind::Pruned`]). From the
    /// shadow: the routed pair's blob store alone ([`crate::index`]).
    pub(crate) async fn version_record(
        &self,
        key: &ObjectKey,
        lookup: Lookup,
        source: ReadSource,
    ) -> Result<(usize, VersionRecord)> {
        let routed = self.inner.router.route(&key.ctx, &key.id).index;
        if source == ReadSource::Shadow {
            return Ok((routed, self.index_answer(routed, key, lookup).await?));
        }
        if let Some(r) = lookup.run(&*self.inner.pairs[routed].meta, key).await? {
            return Ok((routed, self.across_gaps(routed, key, lookup, r).await?));
        }
        let (pair, head) = match self.locate(key).await {
            Ok(found) => found,
            // Not in the metadata store at all: the shadow may still hold it (a lost record).
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return match self.index_answer(routed, key, lookup).await {
                    Ok(r) => Ok((routed, r)),
                    Err(shadow) if shadow.kind() == ErrorKind::NotFound => Err(e),
                    Err(shadow) => Err(shadow),
                };
            }
            Err(e) => return Err(e),
        };
        if pair != routed
            && let Some(r) = lookup.run(&*self.inner.pairs[pair].meta, key).await?
        {
            return Ok((pair, self.across_gaps(pair, key, lookup, r).await?));
        }
        if let Lookup::Ov(ov) = lookup
            && ov > head.ov
        {
            return Err(Error::not_found(format!("no such version of {key}")));
        }
        // The object exists but the record is gone: pruned, or lost from the metadata store.
        match (self.index_lookup(pair, key, lookup).await?, lookup) {
            (index::Found::Nothing, Lookup::Ov(ov)) => self.version_from_shadow(pair, key, ov, &head).await,
            (found, _) => Ok((pair, found.into_record(key, lookup.what())?)),
        }
    }

    /// What the blob store's version index of `pair` answers for `lookup`.
    async fn index_lookup(&self, pair: usize, key: &ObjectKey, lookup: Lookup) -> Result<index::Found> {
        let t = self.inner.shadow_target(pair);
        match lookup {
            Lookup::Ov(ov) => index::by_ov(&t, key, ov).await,
            Lookup::At(at) => index::by_bound(&t, key, Bound::At(at)).await,
            Lookup::Cv(cv) => index::by_bound(&t, key, Bound::Cv(cv)).await,
        }
    }

    /// `lookup` answered from the blob store alone.
    pub(crate) async fn index_answer(&self, pair: usize, key: &ObjectKey, lookup: Lookup) -> Result<VersionRecord> {
        self.index_lookup(pair, key, lookup).await?.into_record(key, lookup.what())
    }

    /// An as-of answer `found` of the metadata store, checked against pruned versions: with
    /// retention configured, versions after `found` may have been pruned, and one of them
    /// may be the true answer. One more lookup (the next stored version) tells; across a gap
    /// the blob store's index decides, and when it cannot, the read is `Pruned` rather than
    /// serve another version's data.
    async fn across_gaps(
        &self,
        pair: usize,
        key: &ObjectKey,
        lookup: Lookup,
        found: VersionRecord,
    ) -> Result<VersionRecord> {
        let policy = &self.inner.config.retention;
        if matches!(lookup, Lookup::Ov(_)) || (policy.days.is_none() && policy.max_versions_per_item.is_none()) {
            return Ok(found);
        }
        let query = HistoryQuery { after: Some(found.ov), limit: 1, order: Order::Asc };
        let next = self.inner.pairs[pair].meta.history(key, &query).await?;
        match next.items.first() {
            Some(n) if n.ov.get() > found.ov.get() + 1 => {}
            _ => return Ok(found),
        }
        match self.index_lookup(pair, key, lookup).await? {
            index::Found::Version(r) if r.ov >= found.ov => Ok(*r),
            index::Found::Pruned(ov) => Err(index::pruned(key, ov, lookup.what())),
            _ => Err(Error::new(
                ErrorKind::Pruned,
                format!(
                    "{} of {key}: versions after {} were pruned and the shadow index cannot tell whether one of them was current",
                    lookup.what(),
                    found.ov
                ),
            )),
        }
    }

    /// Version `ov` rebuilt from its snapshot envelope alone (the S3 fallback). The envelope
    /// carries everything but the CV, which is reported as 0 (unknown). The committed snapshot
    /// is the head's for the head's OV; for older OVs it must be the only snapshot written for
    /// that OV (a failed commit may have left an orphan beside it: then the lookup is ambiguous
    /// and fails rather than guess).
    async fn version_from_shadow(
        &self,
        pair: usize,
        key: &ObjectKey,
        ov: udm_core::Ov,
        head: &Head,
    ) -> Result<(usize, VersionRecord)> {
        let json = &self.inner.pairs[pair].json;
        let candidates = if ov == head.ov {
            vec![head.snapshot.key.clone()]
        } else {
            json.list(&self.inner.layout.snapshot_prefix(key, ov), None, 16).await?.keys
        };
        let [snapshot_key] = candidates.as_slice() else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{key} {ov}: the version record is missing and the shadow holds {} snapshots for it",
                    candidates.len()
                ),
            ));
        };
        let bytes = json.get(snapshot_key).await?;
        let size = bytes.len() as u64;
        let env = SnapshotEnvelope::decode(&bytes, None)?;
        if &env.key != key || env.ov != ov {
            return Err(Error::new(
                ErrorKind::ChecksumMismatch,
                format!("{snapshot_key} holds {} {}", env.key, env.ov),
            ));
        }
        let snapshot = SnapshotRef { key: snapshot_key.clone(), checksum: env.checksum, seal: env.seal()?, size };
        Ok((pair, env.to_record(udm_core::Cv::ZERO, snapshot)))
    }

    /// Reads a version's snapshot (verified) into a record.
    pub(crate) async fn read_version(
        &self,
        pair: usize,
        key: &ObjectKey,
        rec: VersionRecord,
        opts: ReadOpts,
    ) -> Result<Record> {
        self.inner.stats.reads.inc();
        let env = self.load_snapshot(pair, &rec.snapshot).await?;
        let data = self.shape(pair, key, &env.data, opts.content).await?;
        Ok(Record {
            id: key.id.clone(),
            ov: rec.ov,
            cv: rec.cv,
            op: rec.op,
            at: rec.at,
            deleted: rec.deleted,
            system: rec.render_system(&env.system),
            data,
        })
    }

    /// Applies the content mode to stored data.
    async fn shape(&self, pair: usize, key: &ObjectKey, data: &Value, mode: ContentMode) -> Result<Value> {
        let map = &self.inner.collection(&self.ctx).map;
        let refs = map.references(data);
        if refs.is_empty() || mode == ContentMode::Ref {
            return Ok(data.clone());
        }
        let content = &self.inner.pairs[pair].content;
        match mode {
            ContentMode::Ref => Ok(data.clone()),
            ContentMode::Inline => {
                let mut blobs: HashMap<ContentHash, Vec<u8>> = HashMap::new();
                for (_, r) in &refs {
                    let bytes = content.get(&self.inner.layout.content(key, &r.blake3)).await?;
                    blobs.insert(r.blake3, bytes);
                }
                map.rehydrate(data, &blobs)
            }
            ContentMode::Presigned(ttl) => {
                let mut urls = HashMap::new();
                for (_, r) in &refs {
                    urls.insert(r.blake3, content.presign_get(&self.inner.layout.content(key, &r.blake3), ttl).await?);
                }
                map.map_references(data, |_, r| {
                    let mut inner = match serde_json::to_value(r) {
                        Ok(Value::Object(m)) => m,
                        _ => Map::new(),
                    };
                    inner.insert("url".into(), urls.get(&r.blake3).cloned().unwrap_or_default().into());
                    Ok(Value::Object(Map::from_iter([(CONTENT_REF_KEY.to_owned(), Value::Object(inner))])))
                })
            }
        }
    }

    /// A page of latest records across every pair, merged in the query's order. Pairs are
    /// asked concurrently, and the page's data is fetched concurrently (at most
    /// [`LIST_FETCH_CONCURRENCY`] snapshots in flight).
    pub(crate) async fn list_records(&self, query: ListQuery, opts: ReadOpts) -> Result<ListPage> {
        let q = query.compile()?;
        let asks = self.inner.pairs.iter().map(|p| p.meta.list_heads(&self.ctx, &q));
        let mut heads: Vec<(usize, Head)> = Vec::new();
        let mut any_more = false;
        for (i, page) in futures_util::future::join_all(asks).await.into_iter().enumerate() {
            let page = page?;
            any_more |= page.next.is_some();
            heads.extend(page.items.into_iter().map(|h| (i, h)));
        }
        let value = |h: &Head| q.sort_by.as_ref().and_then(|s| h.indexed.get(s)).cloned();
        heads.sort_by(|(_, a), (_, b)| {
            let o = sort_cmp(value(a).as_ref(), value(b).as_ref()).then_with(|| a.key.id.cmp(&b.key.id));
            if q.order == Order::Asc { o } else { o.reverse() }
        });
        let more = heads.len() > q.limit || any_more;
        heads.truncate(q.limit);
        let next = match heads.last() {
            Some((_, h)) if more => Some(Cursor { value: value(h), id: h.key.id.clone() }.encode()),
            _ => None,
        };
        let fetches = heads.into_iter().map(|(pair, head)| async move {
            let data = match self.head_data(pair, &head).await {
                Ok(d) => self.shape(pair, &head.key, &d, opts.content).await,
                Err(e) => Err(e),
            };
            (head, data)
        });
        let fetched: Vec<_> = futures_util::stream::iter(fetches).buffered(LIST_FETCH_CONCURRENCY).collect().await;
        let mut page = ListPage { items: Vec::with_capacity(fetched.len()), failed: Vec::new(), next };
        for (head, data) in fetched {
            match data {
                Ok(data) => page.items.push(head_record(&head, data)),
                // This object's stored data is corrupt: report it, never return its data.
                Err(e) if e.kind() == ErrorKind::ChecksumMismatch => {
                    page.failed.push(FailedItem { id: head.key.id.clone(), ov: head.ov, error: e });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(page)
    }
}

/// Most snapshot fetches one list page runs at once.
pub const LIST_FETCH_CONCURRENCY: usize = 16;

/// The record of a head's version with `data`.
fn head_record(head: &Head, data: Value) -> Record {
    Record {
        id: head.key.id.clone(),
        ov: head.ov,
        cv: head.cv,
        op: head.op,
        at: head.at,
        deleted: head.is_deleted(),
        system: head.render_system(),
        data,
    }
}

/// The version records of `key` in `meta` after OV `after` (all of them for `None`), oldest
/// first, as a stream of pages of at most `limit` (each page one request; a page is asked for
/// only when the one before is used up).
pub(crate) fn history_pages<'a>(
    meta: &'a dyn MetaStore,
    key: &'a ObjectKey,
    after: Option<udm_core::Ov>,
    limit: usize,
) -> impl futures_util::Stream<Item = Result<Vec<VersionRecord>>> + Send + 'a {
    let first = HistoryQuery { after, limit, order: Order::Asc };
    futures_util::stream::try_unfold(Some(first), move |query| async move {
        let Some(mut query) = query else { return Ok(None) };
        let page = meta.history(key, &query).await?;
        let next = match page.next {
            Some(cursor) => {
                query.after = Some(parse_history_cursor(&cursor)?);
                Some(query)
            }
            None => None,
        };
        Ok(Some((page.items, next)))
    })
}
