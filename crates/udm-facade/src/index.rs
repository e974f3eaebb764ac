//! The shadow version index ([`udm_core::shadow::index`]): written by the commit-log flusher
//! behind the commits, flagged by retention, and read by the S3-only reads — history,
//! `get_version`, as-of by instant and by CV — in a constant number of blob requests.
//!
//! Writers merge with a compare-and-swap on the segment's ETag (create-only for a new
//! segment), re-reading and merging again when another writer got there first, so two
//! flushers (two processes, or the repair pass beside a notified flush) never lose each
//! other's entries. A store without conditional puts is written with plain overwrites (one
//! writer per bucket is then assumed).
//!
//! On a store with conditional puts, a segment update usually costs **one request**, not a
//! read and a write: each pair keeps the segments this process last wrote, with their ETags
//! ([`SegmentCache`], at most [`INDEX_CACHE_BYTES`] of them), and a segment whose first OV is
//! among the entries being added is taken to be new. Both are only guesses that the
//! compare-and-swap checks: a cached segment is put with `If-Match` on its cached ETag, a
//! new one create-only, and when the store refuses (another process wrote, retention
//! flagged, a hard delete removed the segment), the update reads the segment and merges as
//! before. A put made from a guess is never skipped as "nothing new", since the guess may
//! be stale.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use futures_util::{StreamExt, TryStreamExt};
use udm_core::ports::{ETag, PutMode, PutOptions};
use udm_core::query::{HistoryQuery, MAX_PAGE, Order, Page, history_cursor};
use udm_core::shadow::LogEntry;
use udm_core::shadow::index::{Bound, INDEX_SEGMENT_LEN, IndexEntry, IndexSegment, Marker, segment_for, segment_of};
use udm_core::{Error, ErrorKind, ObjectKey, Ov, Result, VersionRecord};

use crate::shadow::Target;

/// Index segments one flush updates at once.
pub const INDEX_CONCURRENCY: usize = 16;

/// How often a segment update re-reads and merges after losing a compare-and-swap.
const CAS_ATTEMPTS: usize = 16;

/// Encoded bytes of shadow index segments that each pair keeps in memory, with their ETags,
/// so that the flusher's next update of a segment it wrote is one compare-and-swap put
/// without a read (about 4,000 segments of a few versions, or 45 full ones). The bound
/// counts encoded bytes; the decoded copies held take somewhat more memory.
///
/// The saving is for one flusher per collection, the usual case. A segment another process
/// changed since this one cached it costs a refused put, a read and a put, where a read and
/// a put would have done.
pub const INDEX_CACHE_BYTES: usize = 8 << 20;

/// The index segments this process last wrote to one pair's blob store, each with the
/// ETag its put returned, least recently used first out past [`INDEX_CACHE_BYTES`]. An
/// entry is only a guess at the stored segment (see the module docs): it saves the read
/// before a compare-and-swap, which checks it.
#[derive(Debug, Default)]
pub(crate) struct SegmentCache(Mutex<Cached>);

#[derive(Debug, Default)]
struct Cached {
    /// Blob key → (last use, segment, its ETag, its encoded size).
    segments: HashMap<String, (u64, IndexSegment, ETag, usize)>,
    /// Last use → blob key.
    by_use: BTreeMap<u64, String>,
    clock: u64,
    bytes: usize,
}

impl SegmentCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached segment at `key` and its ETag (a use).
    fn get(&self, key: &str) -> Option<(IndexSegment, ETag)> {
        let mut c = self.lock();
        c.clock += 1;
        let now = c.clock;
        let (used, segment, etag, _) = c.segments.get_mut(key)?;
        let before = std::mem::replace(used, now);
        let found = (segment.clone(), etag.clone());
        c.by_use.remove(&before);
        c.by_use.insert(now, key.to_owned());
        Some(found)
    }

    /// Remembers that `key` holds `segment` (`size` bytes encoded) under `etag`.
    fn put(&self, key: &str, segment: IndexSegment, etag: ETag, size: usize) {
        let mut c = self.lock();
        c.forget(key);
        if size > INDEX_CACHE_BYTES {
            return;
        }
        c.clock += 1;
        let now = c.clock;
        c.by_use.insert(now, key.to_owned());
        c.segments.insert(key.to_owned(), (now, segment, etag, size));
        c.bytes += size;
        while c.bytes > INDEX_CACHE_BYTES {
            let Some((_, oldest)) = c.by_use.pop_first() else { break };
            if let Some((_, _, _, size)) = c.segments.remove(&oldest) {
                c.bytes -= size;
            }
        }
    }

    /// Drops `key` (its cached copy proved stale).
    fn forget(&self, key: &str) {
        self.lock().forget(key);
    }

    /// Segments and bytes held now.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let c = self.lock();
        (c.segments.len(), c.bytes)
    }
}

impl Cached {
    fn forget(&mut self, key: &str) {
        if let Some((used, _, _, size)) = self.segments.remove(key) {
            self.by_use.remove(&used);
            self.bytes -= size;
        }
    }
}

/// The first OV segment `s` holds.
fn first_ov(segment: u64) -> Ov {
    Ov::new(segment * udm_core::shadow::index::INDEX_SEGMENT_LEN + 1).unwrap_or(Ov::FIRST)
}

/// Adds the versions of one flush to their objects' index segments (before the flush moves
/// the shadow watermark, so its puts are durable with that commit: [`PutSync::WithNextCommit`](udm_core::ports::PutSync::WithNextCommit)).
pub(crate) async fn index_entries(t: &Target, entries: &[LogEntry]) -> Result<()> {
    let mut by_segment: BTreeMap<(ObjectKey, u64), Vec<IndexEntry>> = BTreeMap::new();
    for e in entries {
        let at = (e.record.key.clone(), segment_of(e.record.ov));
        by_segment.entry(at).or_default().push(IndexEntry::committed(e.record.clone()));
    }
    futures_util::stream::iter(by_segment)
        .map(|((key, segment), incoming)| update(t, key, segment, incoming))
        .buffer_unordered(INDEX_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// Flags versions `ovs` of `key` as pruned in its index (entries the flusher never indexed
/// are added as pruned, with their OV only). Idempotent.
pub(crate) async fn mark_pruned(t: &Target, key: &ObjectKey, ovs: &[Ov]) -> Result<()> {
    let mut by_segment: BTreeMap<u64, Vec<IndexEntry>> = BTreeMap::new();
    for ov in ovs {
        by_segment.entry(segment_of(*ov)).or_default().push(IndexEntry { ov: *ov, pruned: true, record: None });
    }
    for (segment, incoming) in by_segment {
        update(t, key.clone(), segment, incoming).await?;
    }
    Ok(())
}

/// Merges `incoming` into segment `segment` of `key` (and puts its marker when its first
/// entry is new or earlier), retrying lost compare-and-swaps. With conditional puts, the
/// first attempt starts from a guess instead of a read (see the module docs).
async fn update(t: &Target, key: ObjectKey, segment: u64, incoming: Vec<IndexEntry>) -> Result<()> {
    let blob_key = t.layout.index_segment(&key, first_ov(segment));
    let cas = t.json.capabilities().conditional_put;
    let mut guess = if cas {
        match t.segments.get(&blob_key) {
            Some((cached, etag)) => Some((cached, Some(etag))),
            // The flusher adding a segment's first version (retention's flags carry no
            // record and mostly land on segments that exist: no guess for them).
            None if incoming.iter().any(|e| e.ov == first_ov(segment) && e.record.is_some()) => {
                Some((IndexSegment::new(key.clone(), segment), None))
            }
            None => None,
        }
    } else {
        None
    };
    for _ in 0..CAS_ATTEMPTS {
        let guessed = guess.is_some();
        let (mut current, etag, rebuilt) = match guess.take() {
            Some((s, etag)) => (s, etag, false),
            None => read(t, &key, segment, &blob_key).await?,
        };
        let was_first = if rebuilt { None } else { current.first() };
        if !current.merge(incoming.clone()) && !rebuilt && !guessed {
            return Ok(());
        }
        if let Some((at, cv)) = current.first()
            && was_first != Some((at, cv))
        {
            let marker = t.layout.index_marker(&key, &Marker { segment, at, cv });
            t.json.put(&marker, Vec::new(), &PutOptions::overwrite("application/octet-stream").before_commit()).await?;
        }
        let mode = match (cas, etag) {
            (false, _) => PutMode::Overwrite,
            (true, Some(etag)) => PutMode::IfMatch(etag),
            (true, None) => PutMode::Create,
        };
        // A new segment is put durable at once, not "before commit": a blob store may keep a
        // create-only put made before a metadata commit with the metadata store until a later
        // put moves it (the embedded default stages snapshots so), and a segment must be in
        // the blob store when its flush ends.
        let options = match mode {
            PutMode::Create => PutOptions::new(mode, "application/json"),
            _ => PutOptions::new(mode, "application/json").before_commit(),
        };
        let bytes = current.encode()?;
        let size = bytes.len();
        match t.json.put_with_etag(&blob_key, bytes, &options).await {
            Ok(put) => {
                match put.etag {
                    Some(etag) if cas => t.segments.put(&blob_key, current, etag, size),
                    _ => t.segments.forget(&blob_key),
                }
                return Ok(());
            }
            // Another writer changed (or created, or removed) the segment since the read or
            // the guess: read and merge again.
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::AlreadyExists) => {
                t.segments.forget(&blob_key);
                continue;
            }
            Err(e) => {
                t.segments.forget(&blob_key);
                return Err(e);
            }
        }
    }
    Err(Error::new(
        ErrorKind::Unavailable,
        format!("index segment {blob_key} kept changing under {CAS_ATTEMPTS} merges"),
    ))
}

/// Segment `segment` of `key` (at `blob_key`) as read for an update: the segment (empty if
/// absent), its ETag, and whether it read back damaged and was rebuilt from the metadata
/// store (the ETag is then the damaged one's).
async fn read(t: &Target, key: &ObjectKey, segment: u64, blob_key: &str) -> Result<(IndexSegment, Option<ETag>, bool)> {
    let read = t.json.get_with_etag(blob_key).await.and_then(|body| {
        let s = IndexSegment::decode(&body.bytes)?;
        check_identity(&s, key, segment)?;
        Ok((s, body.etag))
    });
    match read {
        Ok((s, etag)) => Ok((s, etag, false)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok((IndexSegment::new(key.clone(), segment), None, false)),
        // A damaged segment (torn by a server crash, or rotten): the index is derived data,
        // so it is rebuilt from the metadata store and replaces the damaged one.
        Err(e) if e.kind() == ErrorKind::ChecksumMismatch => {
            tracing::warn!(segment = %blob_key, error = %e, "udm: damaged shadow index segment; rebuilding it from the metadata store");
            let etag = t.json.head(blob_key).await?.and_then(|m| m.etag);
            Ok((from_metadata(t, key, segment).await?, etag, true))
        }
        Err(e) => Err(e),
    }
}

/// Segment `segment` of `key` as the metadata store knows it: its kept versions, and its
/// OVs up to the head that the store no longer holds, as pruned (a head read and the history
/// pages covering the segment: one for segments of up to `MAX_PAGE` OVs).
async fn from_metadata(t: &Target, key: &ObjectKey, segment: u64) -> Result<IndexSegment> {
    let mut rebuilt = IndexSegment::new(key.clone(), segment);
    let Some(head) = t.meta.head(key).await? else { return Ok(rebuilt) };
    let (first, end) = (first_ov(segment).get(), first_ov(segment + 1).get());
    let page = usize::try_from(INDEX_SEGMENT_LEN).map_or(MAX_PAGE, |n| n.min(MAX_PAGE));
    let mut kept: BTreeMap<u64, VersionRecord> = BTreeMap::new();
    let mut pages = std::pin::pin!(crate::read::history_pages(&*t.meta, key, Ov::new(first - 1).ok(), page));
    'pages: while let Some(records) = pages.try_next().await? {
        for r in records {
            if r.ov.get() >= end {
                break 'pages;
            }
            kept.insert(r.ov.get(), r);
        }
    }
    let pruned = (first..end.min(head.ov.get().saturating_add(1)))
        .filter(|n| !kept.contains_key(n))
        .filter_map(|n| Ov::new(n).ok())
        .map(|ov| IndexEntry { ov, pruned: true, record: None })
        .collect::<Vec<_>>();
    let entries = pruned.into_iter().chain(kept.into_values().map(IndexEntry::committed)).collect();
    rebuilt.merge(entries);
    Ok(rebuilt)
}

/// A segment read from `key`'s segment `segment` must be that segment.
fn check_identity(s: &IndexSegment, key: &ObjectKey, segment: u64) -> Result<()> {
    if &s.key != key || s.segment != segment {
        return Err(Error::new(ErrorKind::ChecksumMismatch, format!("index segment {segment} of {key} holds another")));
    }
    Ok(())
}

/// Segment `segment` of `key`, if it exists (1 request).
pub(crate) async fn segment(t: &Target, key: &ObjectKey, segment: u64) -> Result<Option<IndexSegment>> {
    match t.json.get(&t.layout.index_segment(key, first_ov(segment))).await {
        Ok(bytes) => {
            let s = IndexSegment::decode(&bytes)?;
            check_identity(&s, key, segment)?;
            Ok(Some(s))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every marker of `key`'s index (1 listing request per 1000 segments).
pub(crate) async fn markers(t: &Target, key: &ObjectKey) -> Result<Vec<Marker>> {
    let prefix = t.layout.index_marker_prefix(key);
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = t.json.list(&prefix, after.as_deref(), udm_core::ports::MAX_LIST_PAGE).await?;
        out.extend(page.keys.iter().filter_map(|k| k.strip_prefix(&prefix)).filter_map(Marker::parse));
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// What the index says about one lookup.
#[derive(Debug)]
pub(crate) enum Found {
    /// The version, committed and kept.
    Version(Box<VersionRecord>),
    /// The answer is a version retention removed (or may be: one whose instant is unknown).
    Pruned(Ov),
    /// The index holds nothing that answers (not indexed, or before the history).
    Nothing,
}

impl Found {
    fn of(entry: Option<&IndexEntry>) -> Found {
        match entry {
            None => Found::Nothing,
            Some(e) if e.pruned => Found::Pruned(e.ov),
            Some(e) => match &e.record {
                Some(r) => Found::Version(Box::new(r.clone())),
                None => Found::Pruned(e.ov),
            },
        }
    }

    /// The record, or the typed error: `Pruned` for a pruned answer, `NotFound` for none.
    pub(crate) fn into_record(self, key: &ObjectKey, what: &str) -> Result<VersionRecord> {
        match self {
            Found::Version(r) => Ok(*r),
            Found::Pruned(ov) => Err(pruned(key, ov, what)),
            Found::Nothing => Err(Error::not_found(format!("{what} of {key} in the shadow index"))),
        }
    }
}

/// The `Pruned` error of `key`'s `ov`.
pub(crate) fn pruned(key: &ObjectKey, ov: Ov, what: &str) -> Error {
    Error::new(ErrorKind::Pruned, format!("{what} of {key} is {ov}, which retention removed"))
}

/// Version `ov` (1 request).
pub(crate) async fn by_ov(t: &Target, key: &ObjectKey, ov: Ov) -> Result<Found> {
    Ok(match segment(t, key, segment_of(ov)).await? {
        Some(s) => Found::of(s.get(ov)),
        None => Found::Nothing,
    })
}

/// The version current at `bound` (a marker listing and 1 segment request).
pub(crate) async fn by_bound(t: &Target, key: &ObjectKey, bound: Bound) -> Result<Found> {
    let Some(n) = segment_for(&markers(t, key).await?, bound) else { return Ok(Found::Nothing) };
    let Some(s) = segment(t, key, n).await? else { return Ok(Found::Nothing) };
    let answer = match bound {
        Bound::At(at) => s.at_or_before(at),
        Bound::Cv(cv) => s.at_or_before_cv(cv),
        Bound::Latest => Ok(s.entries.last()),
    };
    Ok(match answer {
        Ok(entry) => Found::of(entry),
        Err(unknown) => Found::Pruned(unknown),
    })
}

/// A page of `key`'s history from the index alone (kept versions only, pruned ones
/// skipped), in the query's order.
pub(crate) async fn history(t: &Target, key: &ObjectKey, query: &HistoryQuery) -> Result<Page<VersionRecord>> {
    let limit = query.limit.clamp(1, udm_core::query::MAX_PAGE);
    let mut picked: Vec<VersionRecord> = Vec::new();
    let mut next_segment = match (query.order, query.after) {
        (Order::Asc, after) => Some(
            after.map_or(0, |a| segment_of(a) + u64::from(a.get() % udm_core::shadow::index::INDEX_SEGMENT_LEN == 0)),
        ),
        (Order::Desc, Some(after)) if after.get() > 1 => Some(segment_of(Ov::new(after.get() - 1)?)),
        (Order::Desc, Some(_)) => None,
        (Order::Desc, None) => segment_for(&markers(t, key).await?, Bound::Latest),
    };
    while let Some(n) = next_segment {
        if picked.len() > limit {
            break;
        }
        let Some(s) = segment(t, key, n).await? else { break };
        let kept = s.entries.into_iter().filter(|e| !e.pruned).filter_map(|e| e.record);
        let in_range = |r: &VersionRecord| match (query.order, query.after) {
            (_, None) => true,
            (Order::Asc, Some(a)) => r.ov > a,
            (Order::Desc, Some(a)) => r.ov < a,
        };
        match query.order {
            Order::Asc => picked.extend(kept.filter(in_range)),
            Order::Desc => picked.extend(kept.filter(in_range).collect::<Vec<_>>().into_iter().rev()),
        }
        next_segment = match query.order {
            Order::Asc => Some(n + 1),
            Order::Desc => n.checked_sub(1),
        };
    }
    let more = picked.len() > limit;
    picked.truncate(limit);
    let next = match picked.last() {
        Some(r) if more => Some(history_cursor(r.ov)),
        _ => None,
    };
    Ok(Page { items: picked, next })
}

/// Every entry of `key`'s index, in OV order: the marker listing, then each segment it names.
pub(crate) async fn all_entries(t: &Target, key: &ObjectKey) -> Result<Vec<IndexEntry>> {
    let (entries, damaged) = readable_entries(t, key).await?;
    match damaged.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(entries),
    }
}

/// Every entry of `key`'s readable index segments, in OV order, and the segments that read
/// back damaged (`ChecksumMismatch`: torn, rotten, or naming another object) with their
/// errors — for drift, which reports them instead of failing.
pub(crate) async fn readable_entries(t: &Target, key: &ObjectKey) -> Result<(Vec<IndexEntry>, Vec<(String, Error)>)> {
    let mut segments: Vec<u64> = markers(t, key).await?.iter().map(|m| m.segment).collect();
    segments.sort_unstable();
    segments.dedup();
    let (mut out, mut damaged) = (Vec::new(), Vec::new());
    for n in segments {
        match segment(t, key, n).await {
            Ok(Some(s)) => out.extend(s.entries),
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::ChecksumMismatch => {
                damaged.push((t.layout.index_segment(key, first_ov(n)), e));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, damaged))
}

#[cfg(test)]
mod tests {
    use udm_core::{ObjectId, RouteContext};

    use super::*;

    fn segment(n: u64) -> IndexSegment {
        let ctx = RouteContext::new("t", "d", "c").unwrap();
        IndexSegment::new(ObjectKey::new(ctx, ObjectId::new("o").unwrap()), n)
    }

    #[test]
    fn the_cache_keeps_the_recently_used_segments_within_its_bytes() {
        let cache = SegmentCache::default();
        let third = INDEX_CACHE_BYTES / 3;
        for n in 0..3 {
            cache.put(&format!("s{n}"), segment(n), ETag::new(format!("e{n}")), third);
        }
        assert_eq!(cache.held(), (3, 3 * third));
        assert_eq!(cache.get("s0"), Some((segment(0), ETag::new("e0"))), "s0 is now the most recent");
        cache.put("s3", segment(3), ETag::new("e3"), third);
        assert_eq!(cache.get("s1"), None, "the least recently used went first");
        assert!(cache.get("s0").is_some() && cache.get("s2").is_some() && cache.get("s3").is_some());
        assert_eq!(cache.held(), (3, 3 * third));

        cache.put("s2", segment(2), ETag::new("e2b"), third);
        assert_eq!(cache.get("s2"), Some((segment(2), ETag::new("e2b"))), "a put replaces the entry");
        assert_eq!(cache.held(), (3, 3 * third), "and its size");
        cache.forget("s2");
        cache.forget("missing");
        assert_eq!(cache.held(), (2, 2 * third));
        cache.put("huge", segment(9), ETag::new("h"), INDEX_CACHE_BYTES + 1);
        assert_eq!(cache.get("huge"), None, "a segment larger than the cache is not kept");
        assert_eq!(cache.held(), (2, 2 * third), "nor does it push others out");
    }
}
