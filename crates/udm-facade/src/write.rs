//! The write saga: validate → route → (replay check) → read head → compute data →
//! externalize → put snapshot (create-only) → commit.

use serde_json::{Value, json};
use udm_core::counters::{CountedVersion, deltas};
use udm_core::ports::{Commit, NewVersion, PutOptions};
use udm_core::validate::{check_size, validate_document};
use udm_core::version::{DevShadow, ENVELOPE_FORMAT, Provenance, SnapshotEnvelope, SnapshotRef};
use udm_core::{Checksum, Error, ErrorKind, Head, ObjectKey, Op, Ov, RequestId, Result, SystemHeader, Timestamp};

use crate::ops::{Collection, EnrichOpts, WriteOpts};
use crate::record::Written;

/// Attempts of a write without an expected OV before giving up on a hot object.
const MAX_OPTIMISTIC_ATTEMPTS: u32 = 32;

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
}

impl Intent {
    fn new(key: ObjectKey, op: Op, change: Change, expected: Option<Ov>, request: RequestId, o: &WriteOpts) -> Self {
        let caller_request = o.request_id.is_some();
        Self { key, op, change, expected, request, caller_request, actor: o.actor.clone(), reason: o.reason.clone() }
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

    pub(crate) fn restore(
        key: ObjectKey,
        data: Value,
        from: Ov,
        deleted: bool,
        expected: Option<Ov>,
        request: RequestId,
        o: &WriteOpts,
    ) -> Self {
        Self::new(key, Op::Restore, Change::Restore { data, from, deleted }, expected, request, o)
    }

    /// What a replay must match: the object, the op and the caller's payload.
    fn fingerprint(&self) -> Checksum {
        let payload = match &self.change {
            Change::Replace(d) => json!({"data": d}),
            Change::Delete => Value::Null,
            Change::Enrich { patch, function_id } => json!({"patch": patch, "fn": function_id}),
            Change::Restore { from, .. } => json!({"from": from.get()}),
        };
        Checksum::of_json(&json!([self.key.id.as_str(), self.op.as_str(), self.expected.map(Ov::get), payload]))
    }

    /// Rejects bad input before anything is read or written.
    fn validate(&self, limits: &udm_core::validate::Limits) -> Result<()> {
        match &self.change {
            Change::Replace(d) | Change::Restore { data: d, .. } => validate_document(d, limits),
            Change::Enrich { patch, function_id } => {
                if let Some(f) = function_id {
                    udm_core::id::check_ident("function_id", f, udm_core::id::MAX_CONTEXT_PART_BYTES * 2)?;
                }
                validate_document(patch, limits)
            }
            Change::Delete => Ok(()),
        }
    }
}

impl Collection {
    /// Runs the write saga for `intent`.
    pub(crate) async fn write(&self, intent: Intent) -> Result<Written> {
        self.inner.check_open()?;
        intent.validate(&self.inner.config.limits)?;
        let pair = self.inner.router.route(&self.ctx, &intent.key.id).index;
        let fingerprint = intent.fingerprint();
        let meta = &self.inner.pairs[pair].meta;
        if intent.caller_request
            && let Some((done, recorded)) = meta.find_request(&self.ctx, &intent.request).await?
        {
            self.inner.stats.replays.inc();
            return done.replay(&recorded, &fingerprint).map(Written::from);
        }
        if intent.op == Op::Create {
            self.check_not_elsewhere(&intent.key, pair).await?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A create needs no head read: the commit's compare-and-set rejects an existing object.
            let head = if intent.op == Op::Create { None } else { meta.head(&intent.key).await? };
            match self.attempt(pair, &intent, head.as_ref(), fingerprint).await {
                Err(e)
                    if e.kind() == ErrorKind::VersionConflict
                        && intent.expected.is_none()
                        && attempt < MAX_OPTIMISTIC_ATTEMPTS
                        && intent.op != Op::Create =>
                {
                    self.inner.stats.conflicts.inc();
                }
                Err(e) => return Err(e),
                Ok(w) => {
                    self.inner.stats.writes.inc();
                    return Ok(w);
                }
            }
        }
    }

    /// One optimistic attempt against the head just read.
    async fn attempt(
        &self,
        pair: usize,
        intent: &Intent,
        head: Option<&Head>,
        fingerprint: Checksum,
    ) -> Result<Written> {
        check_preconditions(intent, head)?;
        let previous = match (&intent.change, head) {
            (Change::Enrich { .. } | Change::Delete, Some(h)) => Some(self.head_data(pair, h).await?),
            _ => None,
        };
        let (data, function_id, target_deleted) = match &intent.change {
            Change::Replace(d) => (d.clone(), None, false),
            Change::Delete => (previous.clone().unwrap_or(Value::Null), None, false),
            Change::Enrich { patch, function_id } => {
                let base = previous.clone().unwrap_or_else(|| json!({}));
                (udm_core::deep_merge(&base, patch)?, function_id.as_deref(), false)
            }
            Change::Restore { data, deleted, .. } => (data.clone(), None, *deleted),
        };
        let rt = self.inner.collection(&self.ctx);
        let (data, content) = rt.map.externalize(&data)?;
        check_size(&data, &self.inner.config.limits)?;
        let indexed = rt.map.extract_indexed(&data)?;
        let p = &self.inner.pairs[pair];
        for c in &content {
            let key = self.inner.layout.content(&intent.key, &c.reference.blake3);
            match p.content.put(&key, c.bytes.clone(), &PutOptions::create(&c.reference.content_type)).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {} // content-addressed: same bytes
                Err(e) => return Err(e),
            }
        }
        let now = self.inner.clock.now();
        let at = Timestamp::monotonic_after(head.map(|h| h.at), now);
        let system = match head {
            None => SystemHeader::created(at),
            Some(h) => h.system.next(intent.op, at, function_id, target_deleted),
        };
        let ov = Ov::after(head.map(|h| h.ov))?;
        let provenance = Provenance {
            actor: intent.actor.clone(),
            reason: intent.reason.clone(),
            request_id: intent.request.clone(),
        };
        let restored_from = match &intent.change {
            Change::Restore { from, .. } => Some(*from),
            _ => None,
        };
        let checksum = Checksum::of_json(&data);
        let envelope = SnapshotEnvelope {
            format: ENVELOPE_FORMAT.into(),
            key: intent.key.clone(),
            ov,
            op: intent.op,
            at,
            provenance: provenance.clone(),
            restored_from,
            system: system.clone(),
            indexed: indexed.clone(),
            checksum,
            data: data.clone(),
        };
        let bytes = envelope.to_bytes()?;
        let size = bytes.len() as u64;
        let snap_key = self.inner.layout.snapshot(&intent.key, ov, &intent.request);
        match p.json.put(&snap_key, bytes, &PutOptions::create_json()).await {
            Ok(_) => {}
            // A retry of this very request after a failed commit: reuse it if it is the same.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let existing = SnapshotEnvelope::decode(&p.json.get(&snap_key).await?, None)?;
                if existing.checksum != checksum {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("request {} already wrote different data for {ov}", intent.request),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
        let was_deleted = head.is_some_and(Head::is_deleted);
        let counted =
            CountedVersion { op: intent.op, was_deleted, system: &system, provenance: &provenance, data: &data };
        let counters = deltas(&self.ctx, &counted, &rt.rules);
        let canonical_size = udm_core::canonical::canonical_bytes(&data).len();
        let inline = (canonical_size <= self.inner.config.storage.inline_max_bytes).then(|| data.clone());
        let dev_shadow = self.dev_shadow(&data, canonical_size, at);
        let commit = Commit {
            key: intent.key.clone(),
            expected: head.map(|h| h.ov),
            version: NewVersion {
                ov,
                op: intent.op,
                at,
                provenance,
                snapshot: SnapshotRef { key: snap_key, checksum, size },
                restored_from,
                system,
                indexed,
                inline,
                dev_shadow,
            },
            counters,
            fingerprint,
        };
        let done = p.meta.commit(commit).await?;
        Ok(done.into())
    }

    fn dev_shadow(&self, data: &Value, bytes: usize, at: Timestamp) -> Option<DevShadow> {
        let cfg = &self.inner.config.dev_shadow;
        let skip_over = self.inner.config.write_optimization.skip_dev_shadow_over_bytes;
        let bytes = bytes as u64;
        let wanted = cfg.enabled && bytes <= cfg.max_bytes && (skip_over == 0 || bytes <= skip_over);
        wanted.then(|| DevShadow { data: data.clone(), written_at: at, bytes })
    }

    /// A create must not shadow an object that lives on another pair (route mismatch).
    async fn check_not_elsewhere(&self, key: &ObjectKey, routed: usize) -> Result<()> {
        for (i, p) in self.inner.pairs.iter().enumerate() {
            if i != routed && p.meta.head(key).await?.is_some() {
                return self.inner.router.check(&key.ctx, &key.id, i);
            }
        }
        Ok(())
    }
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
