//! The write saga: validate → route → replay check (every pair, one round trip) → read head
//! → compute data → externalize → put snapshot (create-only) → commit.
//!
//! The document is serialized to canonical JSON once per attempt: those bytes give the size
//! check, the data checksum, the inline decision and the envelope (see
//! [`SnapshotEnvelope::encode`]). A write without an expected OV that loses an optimistic race
//! retries on the new head with capped exponential backoff and jitter, within the write budget
//! (`deadlines.write_budget_ms`); the snapshot a lost race wrote is deleted, so races leave no
//! orphans.

use std::time::Duration;

use serde_json::{Value, json};
use udm_core::counters::{CountedVersion, deltas};
use udm_core::ports::{Commit, NewVersion, PutOptions};
use udm_core::validate::{check_size_of, validate_shape};
use udm_core::version::{DevShadow, ENVELOPE_FORMAT, Provenance, SnapshotEnvelope, SnapshotRef};
use udm_core::{Checksum, Error, ErrorKind, Head, ObjectKey, Op, Ov, RequestId, Result, SystemHeader, Timestamp};

use crate::options::{Collection, EnrichOpts, WriteOpts};
use crate::record::Written;

/// First backoff after a lost optimistic race; doubles per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(2);
/// Longest backoff between two optimistic attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What the caller asked for.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// New data (create, update).
    Replace(Value),
    /// Logical delete.
    Delete,
    /// Deep merge.
    Enrich { patch: Value, function_id: Option<String> },
    /// Copy of an earlier version's data.
    Restore { data: Value, from: Ov, deleted: bool },
}

/// One write request.
#[derive(Debug, Clone)]
pub(crate) struct Intent {
    pub(crate) key: ObjectKey,
    pub(crate) op: Op,
    pub(crate) change: Change,
    pub(crate) expected: Option<Ov>,
    pub(crate) request: RequestId,
    /// Whether the caller chose the request id (a generated one cannot have been used yet).
    pub(crate) caller_request: bool,
    pub(crate) actor: Option<String>,
    pub(crate) reason: Option<String>,
    /// What a replay must match: the object, the op and what the caller asked — never
    /// anything read at call time (a restore's fingerprint names its target, not the head).
    /// `None` for new data: derived from the checksum of the data as staged, so the
    /// document is not serialized an extra time just to fingerprint it.
    fingerprint: Option<Checksum>,
    /// The head of the object on pair `.0`, read just before by the caller (a restore reads
    /// it to decide whether anything changes): the first attempt on that pair starts from it
    /// instead of reading it again. A stale one costs what a lost race costs (the commit is
    /// refused, the next attempt reads the head). Never queued.
    head: Option<(usize, Head)>,
}

impl Intent {
    fn new(key: ObjectKey, op: Op, change: Change, expected: Option<Ov>, request: RequestId, o: &WriteOpts) -> Self {
        let caller_request = o.request_id.is_some();
        let payload = match &change {
            Change::Replace(_) => None,
            Change::Delete => Some(Value::Null),
            Change::Enrich { patch, function_id } => Some(json!({"patch": patch, "fn": function_id})),
            Change::Restore { from, .. } => Some(json!({"from": from.get()})),
        };
        let fingerprint = payload.map(|p| fingerprint(&key, op, expected, &p));
        Self {
            key,
            op,
            change,
            expected,
            request,
            caller_request,
            actor: o.actor.clone(),
            reason: o.reason.clone(),
            fingerprint,
            head: None,
        }
    }

    pub(crate) fn create(key: ObjectKey, data: Value, request: RequestId, o: &WriteOpts) -> Self {
        Self::new(key, Op::Create, Change::Replace(data), None, request, o)
    }

    pub(crate) fn update(key: ObjectKey, data: Value, expected: Option<Ov>, request: RequestId, o: &WriteOpts) -> Self {
        Self::new(key, Op::Update, Change::Replace(data), expected, request, o)
    }

    pub(crate) fn delete(key: ObjectKey, expected: Option<Ov>, request: RequestId, o: &WriteOpts) -> Self {
        Self::new(key, Op::Delete, Change::Delete, expected, request, o)
    }

    pub(crate) fn enrich(key: ObjectKey, patch: Value, request: RequestId, o: &EnrichOpts) -> Self {
        let change = Change::Enrich { patch, function_id: o.function_id.clone() };
        Self::new(key, Op::Enrich, change, o.expected, request, &o.write)
    }

    /// This intent, starting from `head`: the object's head on pair `pair`, read just before
    /// by the caller (see the `head` field).
    pub(crate) fn starting_from(mut self, pair: usize, head: Head) -> Self {
        self.head = Some((pair, head));
        self
    }

    /// A restore to `target` (as the caller named it). `change` is the copy (a RESTORE) or,
    /// when the object did not exist at the target, a DELETE.
    pub(crate) fn restore(key: ObjectKey, change: Change, target: &Value, request: RequestId, o: &WriteOpts) -> Self {
        let op = if matches!(change, Change::Delete) { Op::Delete } else { Op::Restore };
        let mut intent = Self::new(key, op, change, None, request, o);
        intent.fingerprint = Some(restore_fingerprint(&intent.key, target));
        intent
    }

    /// The fingerprint, given the checksum of the data as staged (used for new data).
    fn fingerprint_with(&self, staged: &Checksum) -> Checksum {
        self.fingerprint
            .unwrap_or_else(|| fingerprint(&self.key, self.op, self.expected, &json!({"data": staged.to_string()})))
    }

    /// Rejects bad input before anything is read or written (the size limit applies after
    /// externalization, to the bytes the write serializes once).
    fn validate(&self, limits: &udm_core::validate::Limits) -> Result<()> {
        match &self.change {
            Change::Replace(d) | Change::Restore { data: d, .. } => validate_shape(d, limits),
            Change::Enrich { patch, function_id } => {
                if let Some(f) = function_id {
                    udm_core::id::check_ident("function_id", f, udm_core::id::MAX_CONTEXT_PART_BYTES * 2)?;
                }
                validate_shape(patch, limits)
            }
            Change::Delete => Ok(()),
        }
    }
}

/// Format of a queued write's payload (the fallback queue's spool).
pub(crate) const QUEUE_FORMAT: &str = "udm.queue.v1";

impl Intent {
    /// The queued form of this write (see [`QUEUE_FORMAT`]); `seq` orders an object's queued
    /// writes. Everything a replay needs, the fingerprint included, so a replay of a write
    /// whose first attempt committed (its acknowledgement lost) is recognized by request id.
    pub(crate) fn to_payload(&self, seq: u64) -> Value {
        let change = match &self.change {
            Change::Replace(d) => json!({"kind": "replace", "data": d}),
            Change::Delete => json!({"kind": "delete"}),
            Change::Enrich { patch, function_id } => json!({"kind": "enrich", "patch": patch, "fn": function_id}),
            Change::Restore { data, from, deleted } => {
                json!({"kind": "restore", "data": data, "from": from.get(), "deleted": deleted})
            }
        };
        json!({
            "format": QUEUE_FORMAT,
            "seq": seq,
            "op": self.op.as_str(),
            "change": change,
            "expected": self.expected.map(Ov::get),
            "actor": self.actor,
            "reason": self.reason,
            "fingerprint": self.fingerprint.map(|f| f.to_string()),
        })
    }

    /// The write a queue entry holds, and its sequence number. Replays always look the
    /// request id up first (the original attempt may have committed).
    pub(crate) fn from_entry(e: &udm_core::ports::QueueEntry) -> Result<(Self, u64)> {
        let p = &e.payload;
        let bad = |what: &str| Error::internal(format!("queue entry {}: {what}", e.id));
        if p.get("format").and_then(Value::as_str) != Some(QUEUE_FORMAT) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("queue entry {}: not a {QUEUE_FORMAT} payload", e.id),
            ));
        }
        let seq = p.get("seq").and_then(Value::as_u64).ok_or_else(|| bad("no seq"))?;
        let op = p.get("op").and_then(Value::as_str).ok_or_else(|| bad("no op"))?;
        let op = Op::ALL.into_iter().find(|o| o.as_str() == op).ok_or_else(|| bad("unknown op"))?;
        let c = p.get("change").ok_or_else(|| bad("no change"))?;
        let field = |name: &str| c.get(name).cloned().ok_or_else(|| bad(name));
        let change = match c.get("kind").and_then(Value::as_str) {
            Some("replace") => Change::Replace(field("data")?),
            Some("delete") => Change::Delete,
            Some("enrich") => Change::Enrich {
                patch: field("patch")?,
                function_id: c.get("fn").and_then(Value::as_str).map(str::to_owned),
            },
            Some("restore") => Change::Restore {
                data: field("data")?,
                from: Ov::new(c.get("from").and_then(Value::as_u64).ok_or_else(|| bad("from"))?)?,
                deleted: c.get("deleted").and_then(Value::as_bool).ok_or_else(|| bad("deleted"))?,
            },
            _ => return Err(bad("unknown change")),
        };
        let expected = match p.get("expected") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Ov::new(v.as_u64().ok_or_else(|| bad("expected"))?)?),
        };
        let text = |name: &str| p.get(name).and_then(Value::as_str).map(str::to_owned);
        let fingerprint = text("fingerprint").map(|f| Checksum::from_hex(&f)).transpose()?;
        let intent = Self {
            key: e.key.clone(),
            op,
            change,
            expected,
            request: e.request_id.clone(),
            caller_request: true,
            actor: text("actor"),
            reason: text("reason"),
            fingerprint,
            head: None,
        };
        Ok((intent, seq))
    }
}

/// A restore's fingerprint: the object and the target as the caller named it.
pub(crate) fn restore_fingerprint(key: &ObjectKey, target: &Value) -> Checksum {
    fingerprint(key, Op::Restore, None, &json!({"target": target}))
}

fn fingerprint(key: &ObjectKey, op: Op, expected: Option<Ov>, payload: &Value) -> Checksum {
    Checksum::of_json(&json!([key.id.as_str(), op.as_str(), expected.map(Ov::get), payload]))
}

/// A version ready to be written: the data, its canonical bytes and what the envelope needs.
struct Staged {
    data: Value,
    bytes: Vec<u8>,
    content: Vec<udm_core::metamap::Content>,
    function_id: Option<String>,
    target_deleted: bool,
}

impl Collection {
    /// Runs the write saga for `intent` within the write budget; with the fallback queue on,
    /// a write that fails on a transient error (or that must wait behind queued writes to its
    /// object) is queued instead ([`ErrorKind::Queued`]).
    pub(crate) async fn write(&self, intent: Intent) -> Result<Written> {
        self.inner.check_open()?;
        intent.validate(&self.inner.config.limits)?;
        // Shutdown waits for the writes that got past this point.
        let _in_flight = self.inner.in_flight.read().await;
        self.inner.check_open()?;
        match &self.inner.fallback {
            Some(queue) => queue.write(self, intent).await,
            None => self.write_bounded(&intent).await,
        }
    }

    /// The write saga within the write budget (no queue).
    pub(crate) async fn write_bounded(&self, intent: &Intent) -> Result<Written> {
        let budget = Duration::from_millis(self.inner.config.deadlines.write_budget_ms);
        let request = intent.request.clone();
        let op = intent.op.as_str();
        let span = tracing::debug_span!(
            "udm.write",
            op,
            ctx = %self.ctx,
            object = %intent.key.id,
            expected = intent.expected.map(Ov::get),
            request_id = %intent.request,
        );
        let bounded = async move {
            match tokio::time::timeout(budget, self.write_within_budget(intent)).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "write budget of {budget:?} exhausted (deadlines.write_budget_ms); it may or may \
                         not have committed: retry with request id {request} to find out"
                    ),
                )),
            }
        };
        crate::observe::observe(op, span, bounded).await
    }

    async fn write_within_budget(&self, intent: &Intent) -> Result<Written> {
        let pair = self.inner.router.route(&self.ctx, &intent.key.id).index;
        if intent.caller_request
            && let Some((done, recorded)) = self.find_request(&intent.request).await?
        {
            let fp = match (&intent.change, intent.fingerprint) {
                (_, Some(fp)) => fp,
                (Change::Replace(d) | Change::Restore { data: d, .. }, None) => {
                    let (data, _) = self.inner.collection(&self.ctx).map.externalize(d)?;
                    intent.fingerprint_with(&Checksum::of_json(&data))
                }
                (_, None) => return Err(Error::internal("a write without a fingerprint")),
            };
            return done.replay(&recorded, &fp).map(Written::from);
        }
        // Writers of one object in this process take turns instead of racing: a lost race
        // costs a snapshot put, a commit and a backoff, and under load the losers can lose
        // until their budget runs out. Races remain between processes (and with writes
        // naming an expected OV, which the turn does not change).
        let _turn = self.inner.object_locks.lock(intent.key.clone()).await;
        let meta = &self.inner.pairs[pair].meta;
        let mut attempt: u32 = 0;
        let mut read_just_before = intent.head.clone().filter(|(on, _)| *on == pair).map(|(_, h)| h);
        loop {
            let head = if intent.op == Op::Create {
                // Before anything is written: an existing object here, or one on another pair,
                // fails the create without leaving a snapshot behind.
                self.create_head(&intent.key, pair).await?
            } else if let Some(h) = read_just_before.take() {
                Some(h)
            } else {
                meta.head(&intent.key).await?
            };
            match self.attempt(pair, intent, head.as_ref()).await {
                Err(e)
                    if e.kind() == ErrorKind::VersionConflict
                        && intent.expected.is_none()
                        && intent.op != Op::Create =>
                {
                    self.inner.stats.conflicts.inc();
                    udm_layers::metric::retry("optimistic_conflict");
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(backoff(attempt, &intent.request)).await;
                }
                Err(e) => return Err(e),
                Ok(w) => {
                    self.inner.stats.writes.inc();
                    return Ok(w);
                }
            }
        }
    }

    /// The earlier commit of a caller's request id and the fingerprint it was recorded with.
    /// A request id identifies one write in the collection, whichever pair its object lives
    /// on, so every pair is asked (concurrently: one round trip).
    pub(crate) async fn find_request(
        &self,
        request: &RequestId,
    ) -> Result<Option<(udm_core::ports::Committed, Checksum)>> {
        let found = self.lookup_request(request).await?;
        if found.is_some() {
            self.inner.stats.replays.inc();
        }
        Ok(found)
    }

    /// [`Collection::find_request`] without counting a replay (state queries).
    pub(crate) async fn lookup_request(
        &self,
        request: &RequestId,
    ) -> Result<Option<(udm_core::ports::Committed, Checksum)>> {
        let asks = self.inner.pairs.iter().map(|p| p.meta.find_request(&self.ctx, request));
        for found in futures_util::future::join_all(asks).await {
            if let Some(hit) = found? {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// The earlier result of a caller's request id when `fingerprint` matches it; a
    /// [`ErrorKind::Conflict`] when it was used for a different write.
    pub(crate) async fn replay(&self, request: &RequestId, fingerprint: &Checksum) -> Result<Option<Written>> {
        match self.find_request(request).await? {
            Some((done, recorded)) => done.replay(&recorded, fingerprint).map(|c| Some(Written::from(c))),
            None => Ok(None),
        }
    }

    /// The head a create sees on its routed pair (must be none); an object of that id on
    /// another pair is a route mismatch. All pairs are asked at once (one round trip).
    async fn create_head(&self, key: &ObjectKey, routed: usize) -> Result<Option<Head>> {
        let asks = self.inner.pairs.iter().map(|p| p.meta.head(key));
        let heads = futures_util::future::join_all(asks).await;
        let mut routed_head = None;
        for (i, h) in heads.into_iter().enumerate() {
            match h? {
                Some(h) if i == routed => routed_head = Some(h),
                Some(_) => self.inner.router.check(&key.ctx, &key.id, i)?,
                None => {}
            }
        }
        if let Some(h) = &routed_head {
            return Err(Error::version_conflict(None, Some(h.ov)));
        }
        Ok(routed_head)
    }

    /// One optimistic attempt against the head just read. The snapshot put (content first)
    /// runs while the group committer already runs the commit's statements; the commit waits
    /// for the put (a gate), so a committed version always has its durable snapshot.
    async fn attempt(&self, pair: usize, intent: &Intent, head: Option<&Head>) -> Result<Written> {
        check_preconditions(intent, head)?;
        let staged = self.stage(pair, intent, head).await?;
        let (envelope, encoded) = self.envelope(intent, head, &staged)?;
        let key = self.inner.layout.snapshot(&intent.key, envelope.ov, &intent.request);
        let size = encoded.bytes.len() as u64;
        let snapshot = SnapshotRef { key: key.clone(), checksum: envelope.checksum, seal: encoded.seal, size };
        let mut commit = self.commit_of(intent, head, &staged, envelope, snapshot);
        let debounced = self.debounce(&mut commit);
        let (gate, gate_rx) = tokio::sync::oneshot::channel();
        let put = async {
            let r = self.put_blobs(pair, &intent.key, &staged.content, &key, encoded.bytes).await;
            let _ = gate.send(r.clone());
            r
        };
        let target = self.inner.shadow_target(pair);
        let committer = &self.inner.committer;
        let (put, committed) =
            tokio::join!(put, committer.commit(pair, &target, &self.inner.stats, commit, Some(gate_rx)));
        let (committed, created) = match put {
            Ok(()) => (committed, true),
            // This request's own earlier attempt at this OV wrote the snapshot (its commit
            // failed): the gated commit was refused; commit that envelope as written, so the
            // record pins exactly the stored bytes.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let mut commit = self.reuse_snapshot(pair, intent, head, &staged, key.clone()).await?;
                self.debounce(&mut commit);
                (committer.commit(pair, &target, &self.inner.stats, commit, None).await, false)
            }
            // The gate failed, so nothing committed (a replay answered before it is still
            // the answer).
            Err(e) => {
                return match committed {
                    Ok(done) if done.replayed => Ok(done.into()),
                    _ => Err(e),
                };
            }
        };
        match committed {
            Ok(done) => {
                if let (Some(buffer), Some(ds), false) = (&self.inner.counter_buffer, debounced, done.replayed) {
                    buffer.add(pair, ds);
                }
                Ok(done.into())
            }
            Err(e) => {
                if created && e.kind() == ErrorKind::VersionConflict {
                    // A lost race: definitely not committed (the store answers a committed
                    // request id with a replay before it compares heads), and the key holds
                    // this request's id and OV, so no committed version can point at it.
                    // Best effort: a failed delete leaves an orphan that drift reports.
                    let _ = self.inner.pairs[pair].json.delete(&key).await;
                }
                Err(e)
            }
        }
    }

    /// With counter debouncing on, takes the counter deltas out of `commit` (they are added
    /// to the buffer once it commits).
    fn debounce(&self, commit: &mut Commit) -> Option<Vec<udm_core::counters::CounterDelta>> {
        self.inner.counter_buffer.as_ref().map(|_| std::mem::take(&mut commit.counters))
    }

    /// Computes the version's data and serializes it (once).
    async fn stage(&self, pair: usize, intent: &Intent, head: Option<&Head>) -> Result<Staged> {
        let previous = match (&intent.change, head) {
            (Change::Enrich { .. } | Change::Delete, Some(h)) => Some(self.head_data(pair, h).await?),
            _ => None,
        };
        let (data, function_id, target_deleted) = match &intent.change {
            Change::Replace(d) => (d.clone(), None, false),
            Change::Delete => (previous.unwrap_or(Value::Null), None, false),
            Change::Enrich { patch, function_id } => {
                let base = previous.unwrap_or_else(|| json!({}));
                (udm_core::deep_merge(&base, patch)?, function_id.clone(), false)
            }
            Change::Restore { data, deleted, .. } => (data.clone(), None, *deleted),
        };
        let rt = self.inner.collection(&self.ctx);
        let (data, content) = rt.map.externalize(&data)?;
        let bytes = udm_core::canonical::canonical_bytes(&data);
        check_size_of(bytes.len(), &self.inner.config.limits)?;
        Ok(Staged { data, bytes, content, function_id, target_deleted })
    }

    /// The envelope of this attempt's version and its bytes (no IO).
    fn envelope(
        &self,
        intent: &Intent,
        head: Option<&Head>,
        s: &Staged,
    ) -> Result<(SnapshotEnvelope, udm_core::version::EncodedEnvelope)> {
        let at = Timestamp::monotonic_after(head.map(|h| h.at), self.inner.clock.now());
        let system = match head {
            None => SystemHeader::created(at),
            Some(h) => h.system.next(intent.op, at, s.function_id.as_deref(), s.target_deleted),
        };
        let provenance = Provenance {
            actor: intent.actor.clone(),
            reason: intent.reason.clone(),
            request_id: intent.request.clone(),
        };
        let restored_from = match &intent.change {
            Change::Restore { from, .. } => Some(*from),
            _ => None,
        };
        let indexed = self.inner.collection(&self.ctx).map.extract_indexed(&s.data)?;
        let envelope = SnapshotEnvelope {
            format: ENVELOPE_FORMAT.into(),
            key: intent.key.clone(),
            ov: Ov::after(head.map(|h| h.ov))?,
            op: intent.op,
            at,
            provenance,
            restored_from,
            system,
            indexed,
            checksum: Checksum::of_bytes(&s.bytes),
            data: Value::Null, // the staged bytes are the data
        };
        let encoded = envelope.encode(&s.bytes)?;
        Ok((envelope, encoded))
    }

    /// The commit of `envelope`'s version, whose snapshot is `snapshot`.
    fn commit_of(
        &self,
        intent: &Intent,
        head: Option<&Head>,
        s: &Staged,
        envelope: SnapshotEnvelope,
        snapshot: SnapshotRef,
    ) -> Commit {
        let rt = self.inner.collection(&self.ctx);
        let SnapshotEnvelope { ov, at, system, provenance, restored_from, indexed, .. } = envelope;
        let was_deleted = head.is_some_and(Head::is_deleted);
        let counted =
            CountedVersion { op: intent.op, was_deleted, system: &system, provenance: &provenance, data: &s.data };
        let counters = deltas(&self.ctx, &counted, &rt.rules);
        let inline = (s.bytes.len() <= self.inner.config.storage.inline_max_bytes).then(|| s.data.clone());
        let dev_shadow = self.dev_shadow(&s.data, s.bytes.len(), at);
        let fingerprint = intent.fingerprint_with(&snapshot.checksum);
        Commit {
            key: intent.key.clone(),
            expected: head.map(|h| h.ov),
            version: NewVersion {
                ov,
                op: intent.op,
                at,
                provenance,
                snapshot,
                restored_from,
                system,
                indexed,
                inline,
                dev_shadow,
            },
            counters,
            fingerprint,
        }
    }

    /// The commit of the envelope this request already stored under `key` (an earlier attempt
    /// whose commit failed), checked to be the same write.
    async fn reuse_snapshot(
        &self,
        pair: usize,
        intent: &Intent,
        head: Option<&Head>,
        s: &Staged,
        key: String,
    ) -> Result<Commit> {
        let stored = self.inner.pairs[pair].json.get(&key).await?;
        let existing = SnapshotEnvelope::decode(&stored, None)?;
        let checksum = Checksum::of_bytes(&s.bytes);
        if existing.checksum != checksum || existing.key != intent.key || existing.op != intent.op {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("request {} already wrote a different {} of {}", intent.request, existing.ov, intent.key),
            ));
        }
        let snapshot = SnapshotRef { key, checksum, seal: existing.seal()?, size: stored.len() as u64 };
        Ok(self.commit_of(intent, head, s, SnapshotEnvelope { data: Value::Null, ..existing }, snapshot))
    }

    /// Puts the content, then the snapshot envelope create-only (`AlreadyExists` when this
    /// request's earlier attempt stored it).
    async fn put_blobs(
        &self,
        pair: usize,
        key: &ObjectKey,
        content: &[udm_core::metamap::Content],
        snapshot: &str,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let _permit = match &self.inner.put_permits {
            Some(permits) => Some(permits.acquire().await.map_err(|_| Error::internal("put permits closed"))?),
            None => None,
        };
        self.put_content(pair, key, content).await?;
        self.inner.pairs[pair].json.put(snapshot, bytes, &PutOptions::create_json().before_commit()).await.map(|_| ())
    }

    /// Puts externalized content (content-addressed: an existing blob holds the same bytes).
    async fn put_content(&self, pair: usize, key: &ObjectKey, content: &[udm_core::metamap::Content]) -> Result<()> {
        let blobs = &self.inner.pairs[pair].content;
        for c in content {
            let blob = self.inner.layout.content(key, &c.reference.blake3);
            match blobs
                .put(&blob, c.bytes.clone(), &PutOptions::create(&c.reference.content_type).before_commit())
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn dev_shadow(&self, data: &Value, bytes: usize, at: Timestamp) -> Option<DevShadow> {
        let cfg = &self.inner.config.dev_shadow;
        let skip_over = self.inner.config.write_optimization.skip_dev_shadow_over_bytes;
        let bytes = bytes as u64;
        let wanted = cfg.enabled && bytes <= cfg.max_bytes && (skip_over == 0 || bytes <= skip_over);
        wanted.then(|| DevShadow { data: data.clone(), written_at: at, bytes })
    }
}

/// Backoff before optimistic attempt `attempt + 1`: capped exponential with full jitter.
/// The jitter is derived from the request id and the attempt (no clock or RNG read), so
/// concurrent writers — which have different request ids — spread out, and a test is
/// reproducible.
fn backoff(attempt: u32, request: &RequestId) -> Duration {
    let cap = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(16)).min(MAX_BACKOFF);
    let seed = udm_core::canonical::stable_hash64(format!("{request}/{attempt}").as_bytes());
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(seed % nanos)
}

fn check_preconditions(intent: &Intent, head: Option<&Head>) -> Result<()> {
    let current = head.map(|h| h.ov);
    if let Some(expected) = intent.expected
        && current != Some(expected)
    {
        return Err(Error::version_conflict(Some(expected), current));
    }
    match (intent.op, head) {
        (Op::Create, Some(h)) => Err(Error::version_conflict(None, Some(h.ov))),
        (Op::Create, None) => Ok(()),
        (_, None) => Err(Error::not_found(format!("object {}", intent.key))),
        (Op::Update | Op::Enrich | Op::Delete, Some(h)) if h.is_deleted() => {
            Err(Error::new(ErrorKind::Conflict, format!("{} is deleted (restore it first)", intent.key)))
        }
        _ => Ok(()),
    }
}
