//! The fallback queue: a write that fails on a transient error is made durable in a spool
//! before the call returns, and a worker owned by the [`Udm`](crate::Udm) replays it until it
//! commits or goes to the dead letters.
//!
//! - **Where**: a [`QueueStore`] — from config, an embedded redb file on the writer's own disk
//!   (`fallback_queue.spool`, fsync'd on every change), so it survives an outage of the stores
//!   being written. One process owns a spool at a time, so the order of an object's queued
//!   writes is kept in memory (loaded from the spool on first use) and leases are not needed.
//! - **Outcome**: the call fails with [`ErrorKind::Queued`] naming the request id
//!   ([`Error::queued_request`]); [`Collection::request_state`] later tells committed, pending
//!   or dead. If the spool itself refuses the entry, the original error is returned (nothing
//!   is durable then, and the caller knows it).
//! - **Order per object**: while an object has pending queued writes, a later write to it is
//!   queued behind them (without trying the stores), and the worker replays an object's
//!   entries one at a time, in the order they were queued. Dead letters do not hold an object:
//!   an operator who retries one puts it back in its original place in the order.
//! - **Replays** go through the normal write saga with the entry's request id, which is looked
//!   up first: a write whose first attempt committed (its acknowledgement lost) is answered
//!   from the store and never applied twice. A transient failure is retried with the core's
//!   capped exponential backoff with full jitter (jitter derived from the entry id and attempt,
//!   no RNG read) up to `retry.max_attempts` (the original try counts); any other failure —
//!   e.g. an expected-OV conflict, because another write moved the object meanwhile — moves the
//!   entry to the dead letters with the error as its reason.
//! - **Time**: a replayed version gets the time it is applied, not the time it was queued:
//!   versions of an object must be in time order for as-of, and other writes may have
//!   committed to the object in between. The entry keeps `enqueued_at`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use udm_core::config::FallbackQueueConfig;
use udm_core::ports::{QueueEntry, QueueState, QueueStats, QueueStore};
use udm_core::retry::NextStep;
use udm_core::{Error, ErrorKind, ObjectKey, Result, Timestamp};

use crate::Inner;
use crate::options::Collection;
use crate::record::Written;
use crate::write::Intent;

/// Objects the worker replays at once (each object's entries stay sequential).
pub const QUEUE_REPLAY_CONCURRENCY: usize = 16;

/// Entries read from the spool per page when loading it.
const LOAD_PAGE: usize = 500;

/// One pending entry in an object's line.
#[derive(Debug, Clone)]
struct Slot {
    id: String,
    seq: u64,
    due: Timestamp,
    running: bool,
}

/// The in-memory order: each object's pending entries by sequence number.
#[derive(Debug, Default)]
struct Lines {
    objects: HashMap<ObjectKey, VecDeque<Slot>>,
    next_seq: u64,
}

impl Lines {
    fn add(&mut self, key: ObjectKey, slot: Slot) {
        let line = self.objects.entry(key).or_default();
        if line.iter().any(|s| s.id == slot.id) {
            return;
        }
        let at = line.partition_point(|s| s.seq < slot.seq);
        line.insert(at, slot);
    }

    fn remove(&mut self, key: &ObjectKey, id: &str) {
        if let Some(line) = self.objects.get_mut(key) {
            line.retain(|s| s.id != id);
            if line.is_empty() {
                self.objects.remove(key);
            }
        }
    }
}

/// The fallback queue of one [`Udm`](crate::Udm).
#[derive(Debug)]
pub(crate) struct Fallback {
    store: Arc<dyn QueueStore>,
    config: FallbackQueueConfig,
    /// `None` until loaded from the spool (on first use).
    lines: tokio::sync::Mutex<Option<Lines>>,
    wake: tokio::sync::Notify,
    stop: tokio::sync::watch::Sender<bool>,
    worker: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Fallback {
    pub(crate) fn new(store: Arc<dyn QueueStore>, config: FallbackQueueConfig) -> Self {
        Self {
            store,
            config,
            lines: tokio::sync::Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            stop: tokio::sync::watch::channel(false).0,
            worker: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn QueueStore> {
        &self.store
    }

    /// The lines, loaded from the spool if this is the first use.
    async fn lines(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Lines>>> {
        let mut guard = self.lines.lock().await;
        if guard.is_none() {
            let mut lines = Lines::default();
            let mut after: Option<String> = None;
            loop {
                let page = self.store.list(QueueState::Pending, after.as_deref(), LOAD_PAGE).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                for e in page {
                    let seq = Intent::from_entry(&e).map_or(0, |(_, seq)| seq);
                    lines.next_seq = lines.next_seq.max(seq);
                    let slot = Slot { id: e.id.clone(), seq, due: e.next_attempt_at, running: false };
                    lines.add(e.key, slot);
                }
            }
            *guard = Some(lines);
        }
        Ok(guard)
    }

    /// A write through the queue: queued behind an object's pending entries, else tried, and
    /// queued if it fails on a transient error.
    pub(crate) async fn write(&self, coll: &Collection, intent: Intent) -> Result<Written> {
        if self.lines().await?.as_ref().is_some_and(|l| l.objects.contains_key(&intent.key)) {
            return Err(self.enqueue(coll, &intent, None).await);
        }
        match coll.write_bounded(&intent).await {
            Err(e) if e.is_retryable() => Err(self.enqueue(coll, &intent, Some(e)).await),
            other => other,
        }
    }

    /// Makes `intent` durable in the spool; the error the call returns ([`ErrorKind::Queued`],
    /// or `failed` itself if the spool refused it).
    async fn enqueue(&self, coll: &Collection, intent: &Intent, failed: Option<Error>) -> Error {
        let now = coll.inner.clock.now();
        let seq = match self.lines().await {
            Ok(mut g) => {
                let lines = g.get_or_insert_with(Lines::default);
                lines.next_seq += 1;
                lines.next_seq
            }
            Err(e) => return failed.unwrap_or(e),
        };
        let (attempts, due, why) = match &failed {
            // The original try counts as the first attempt.
            Some(e) => (1, self.next_step(&QueueEntry::id_for(&intent.key, &intent.request), 1, now), e.to_string()),
            None => (0, NextStep::RetryAt(now), "earlier writes to this object are queued".to_owned()),
        };
        let NextStep::RetryAt(due) = due else {
            // max_attempts = 1: nothing to retry.
            return failed.unwrap_or_else(|| Error::internal("a queued write with no attempt left"));
        };
        let entry = QueueEntry {
            id: QueueEntry::id_for(&intent.key, &intent.request),
            key: intent.key.clone(),
            request_id: intent.request.clone(),
            payload: intent.to_payload(seq),
            attempts,
            enqueued_at: now,
            next_attempt_at: due,
            leased_until: None,
            last_error: failed.as_ref().map(ToString::to_string),
            state: QueueState::Pending,
        };
        let stored = match self.store.enqueue(entry).await {
            Ok(stored) => stored,
            Err(e) => {
                let msg = format!("the fallback queue refused the write too ({e})");
                return match failed {
                    Some(f) => Error::new(f.kind(), format!("{}; {msg}", f.message())).retryable(f.is_retryable()),
                    None => Error::new(e.kind(), msg).retryable(e.is_retryable()),
                };
            }
        };
        coll.inner.stats.queued.inc();
        if stored.state == QueueState::Pending {
            let seq = Intent::from_entry(&stored).map_or(seq, |(_, s)| s);
            let slot = Slot { id: stored.id.clone(), seq, due: stored.next_attempt_at, running: false };
            if let Ok(mut g) = self.lines().await {
                g.get_or_insert_with(Lines::default).add(stored.key.clone(), slot);
            }
            self.wake.notify_one();
        }
        Error::queued(intent.request.as_str(), &why)
    }

    /// When to try entry `id` again after `attempts` failed attempts.
    fn next_step(&self, id: &str, attempts: u32, now: Timestamp) -> NextStep {
        // Jitter from the entry and attempt (FNV-1a): no RNG read, different per entry.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.as_bytes().iter().chain(&attempts.to_le_bytes()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.config.retry.next_step(attempts, now, h)
    }

    /// Starts the worker (inside a Tokio runtime; without one, nothing replays until
    /// [`Admin::run_queue_once`](crate::Admin::run_queue_once) is called).
    pub(crate) fn start(self: &Arc<Self>, inner: Weak<Inner>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let me = self.clone();
        let handle = rt.spawn(async move { me.run(inner).await });
        if let Ok(mut w) = self.worker.lock() {
            *w = Some(handle);
        }
    }

    /// Stops the worker after the replays it is running, and waits for it.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let handle = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    async fn run(self: Arc<Self>, inner: Weak<Inner>) {
        let mut stop = self.stop.subscribe();
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        loop {
            if *stop.borrow() {
                return;
            }
            let Some(strong) = inner.upgrade() else { return };
            let wait = match self.run_due(&strong).await {
                Ok(Some(next)) => next.min(poll),
                Ok(None) => poll,
                Err(e) => {
                    tracing::warn!(error = %e, "udm: the fallback queue's worker could not read its spool");
                    poll
                }
            };
            drop(strong);
            tokio::select! {
                _ = stop.changed() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Replays every object's first entry that is due; returns how long until the next one
    /// is due (if any is pending).
    pub(crate) async fn run_due(&self, inner: &Arc<Inner>) -> Result<Option<Duration>> {
        let now = inner.clock.now();
        let due: Vec<(ObjectKey, Slot)> = {
            let mut g = self.lines().await?;
            let lines = g.get_or_insert_with(Lines::default);
            let mut out = Vec::new();
            for (key, line) in &mut lines.objects {
                if let Some(front) = line.front_mut()
                    && !front.running
                    && front.due <= now
                {
                    front.running = true;
                    out.push((key.clone(), front.clone()));
                }
            }
            out
        };
        futures_util::stream::iter(due)
            .for_each_concurrent(QUEUE_REPLAY_CONCURRENCY, |(key, slot)| self.replay(inner, key, slot))
            .await;
        let g = self.lines().await?;
        let next = g
            .as_ref()
            .and_then(|l| l.objects.values().filter_map(VecDeque::front).filter(|s| !s.running).map(|s| s.due).min());
        let now = inner.clock.now();
        Ok(next.map(|t| Duration::from_millis(u64::try_from((t.as_millis() - now.as_millis()).max(0)).unwrap_or(0))))
    }

    /// Replays one entry and records what happened.
    async fn replay(&self, inner: &Arc<Inner>, key: ObjectKey, slot: Slot) {
        let outcome = self.replay_once(inner, &key, &slot).await;
        let mut g = self.lines().await;
        let Ok(lines) = g.as_mut().map(|g| g.get_or_insert_with(Lines::default)) else { return };
        match outcome {
            Ok(Some(due)) => {
                if let Some(s) = lines.objects.get_mut(&key).and_then(|l| l.iter_mut().find(|s| s.id == slot.id)) {
                    s.due = due;
                    s.running = false;
                }
            }
            Ok(None) => lines.remove(&key, &slot.id),
            Err(e) => {
                // The spool failed: try again after the poll interval (replays are idempotent).
                tracing::warn!(error = %e, entry = %slot.id, "udm: the fallback queue could not record a replay");
                let later =
                    inner.clock.now().plus_millis(i64::try_from(self.config.poll_interval_ms).unwrap_or(i64::MAX));
                if let Some(s) = lines.objects.get_mut(&key).and_then(|l| l.iter_mut().find(|s| s.id == slot.id)) {
                    s.due = later;
                    s.running = false;
                }
            }
        }
    }

    /// One replay: `Ok(Some(t))` = retry at `t`, `Ok(None)` = done (committed, dead or gone).
    async fn replay_once(&self, inner: &Arc<Inner>, key: &ObjectKey, slot: &Slot) -> Result<Option<Timestamp>> {
        let Some(entry) = self.store.get(&slot.id).await? else { return Ok(None) };
        if entry.state != QueueState::Pending {
            return Ok(None);
        }
        let intent = match Intent::from_entry(&entry) {
            Ok((intent, _)) => intent,
            Err(e) => {
                self.store.fail(&entry.id, &e.to_string(), NextStep::DeadLetter).await?;
                inner.stats.dead_lettered.inc();
                return Ok(None);
            }
        };
        let coll = Collection::new(inner.clone(), key.ctx.clone());
        match coll.write_bounded(&intent).await {
            Ok(_) => {
                self.store.complete(&entry.id).await?;
                inner.stats.queue_applied.inc();
                Ok(None)
            }
            Err(e) => {
                let attempts = entry.attempts.saturating_add(1);
                let next = if e.is_retryable() {
                    self.next_step(&entry.id, attempts, inner.clock.now())
                } else {
                    NextStep::DeadLetter
                };
                self.store.fail(&entry.id, &e.to_string(), next).await?;
                match next {
                    NextStep::RetryAt(t) => Ok(Some(t)),
                    NextStep::DeadLetter => {
                        inner.stats.dead_lettered.inc();
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Stats of the spool.
    pub(crate) async fn stats(&self, now: Timestamp) -> Result<QueueStats> {
        self.store.stats(now).await
    }

    /// Moves dead letter `id` back to pending, due now, in its original place in its
    /// object's order.
    pub(crate) async fn retry(&self, id: &str, now: Timestamp) -> Result<()> {
        self.store.retry_dead(id, now).await?;
        if let Some(e) = self.store.get(id).await? {
            let seq = Intent::from_entry(&e).map_or(0, |(_, s)| s);
            let slot = Slot { id: e.id.clone(), seq, due: e.next_attempt_at, running: false };
            self.lines().await?.get_or_insert_with(Lines::default).add(e.key, slot);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Removes entry `id` (pending or dead). A replay already running finishes.
    pub(crate) async fn cancel(&self, id: &str) -> Result<()> {
        let entry = self.store.get(id).await?.ok_or_else(|| Error::not_found(format!("queue entry {id}")))?;
        self.store.cancel(id).await?;
        if let Some(lines) = self.lines().await?.as_mut() {
            lines.remove(&entry.key, id);
        }
        Ok(())
    }
}

/// Where a write identified by its request id stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestState {
    /// Committed (possibly by a replay from the queue).
    Committed(Written),
    /// In the fallback queue, waiting for its next attempt.
    Pending {
        /// Failed attempts so far (the original try included).
        attempts: u32,
        /// When the worker tries it next.
        next_attempt_at: Timestamp,
        /// The last failure, if it was tried.
        last_error: Option<String>,
    },
    /// In the dead letters: it will not be tried again unless an operator retries it.
    Dead {
        /// Attempts made.
        attempts: u32,
        /// Why it stopped.
        reason: String,
    },
    /// Neither committed nor queued (never written, cancelled, or failed without queueing).
    Unknown,
}

impl Collection {
    /// Where the write with `request_id` stands: queued (pending or dead) or committed, as
    /// the fallback queue and every pair's metadata store tell.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use serde_json::json;
    /// use udm_core::{ErrorKind, RouteContext};
    /// use udm_facade::{RequestState, Udm, WriteOpts};
    ///
    /// let udm = Udm::in_memory()?;
    /// let users = udm.with(RouteContext::new("acme", "crm", "users")?);
    /// let request = match users.create(json!({"name": "Ada"}), WriteOpts::id("u1").request_id("r-1")).await {
    ///     Ok(_) => "r-1".to_owned(),
    ///     // With the fallback queue on, a transient failure is queued under its request id.
    ///     Err(e) if e.kind() == ErrorKind::Queued => e.queued_request().unwrap_or_default().to_owned(),
    ///     Err(e) => return Err(e),
    /// };
    /// assert!(matches!(users.request_state(&request).await?, RequestState::Committed(w) if w.ov.get() == 1));
    /// assert_eq!(users.request_state("never-written").await?, RequestState::Unknown);
    /// # Ok::<(), udm_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn request_state(&self, request_id: &str) -> Result<RequestState> {
        let request = udm_core::RequestId::new(request_id)?;
        if let Some(q) = &self.inner.fallback {
            let id = format!("{}{request}", udm_core::layout::collection_record_prefix(&self.ctx));
            if let Some(e) = q.store().get(&id).await? {
                return Ok(match e.state {
                    QueueState::Pending => RequestState::Pending {
                        attempts: e.attempts,
                        next_attempt_at: e.next_attempt_at,
                        last_error: e.last_error,
                    },
                    QueueState::Dead => {
                        RequestState::Dead { attempts: e.attempts, reason: e.last_error.unwrap_or_default() }
                    }
                });
            }
        }
        match self.lookup_request(&request).await? {
            Some((done, _)) => Ok(RequestState::Committed(Written::from(done))),
            None => Ok(RequestState::Unknown),
        }
    }
}

/// The error for queue operations when the queue is off.
pub(crate) fn queue_off() -> Error {
    Error::new(ErrorKind::Unsupported, "the fallback queue is not enabled (fallback_queue.enabled)")
}
