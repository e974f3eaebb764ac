//! The group committer: concurrent writes to the same (pair, collection) share one metadata
//! transaction.
//!
//! Each (pair, collection) has a *lane*. A write whose snapshot is durable hands its
//! [`Commit`] to the lane and waits for its own answer. When the lane is idle, a task is
//! spawned that drains it: it takes everything waiting (up to [`MAX_BATCH`]), commits it —
//! with [`MetaStore::commit`] for one, [`MetaStore::commit_many`] for several — answers
//! each writer, and repeats until nothing waits, then retires the lane. Writes that arrive
//! while a transaction runs form the next batch, so batches grow with the load and a lone
//! writer waits for nobody. With the write optimizer on (`write_optimization.enabled`), a
//! batch of a *busy* lane — one whose previous batch carried several commits, or that has
//! several waiting — first waits up to `batch_window_ms` for the lane to fill to
//! `max_batch` (the commit waits for its snapshot put anyway, so the window mostly overlaps
//! it); a lone writer still waits for nobody. Stats count the waits and their total time.
//!
//! Concurrent writers of one collection therefore never conflict with each other inside
//! one process: their CV increments are one statement per batch. Across processes a
//! conflict costs one retried batch, which the store retries within its budget.
//!
//! The drain task owns its batch: a writer that stops waiting (its write budget ran out)
//! does not stop the commit, exactly as a dropped acknowledgement would not. A store-level
//! failure of a batch is every item's answer (the error is [`Clone`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use udm_core::ports::{Commit, Committed, Durable, MAX_BATCH, MetaStore};
use udm_core::{Error, Result, RouteContext};

use crate::admin::StatCounters;
use crate::shadow::{Flusher, Target};

type Reply = oneshot::Sender<Result<Committed>>;

/// Resolves when the writer's snapshot (and content) is durable, or failed to be.
pub(crate) type Gate = oneshot::Receiver<Result<()>>;

/// A commit waiting in a lane: its answer channel and, when its snapshot put is still in
/// flight, the gate its transaction's commit waits for.
struct Waiting {
    commit: Commit,
    reply: Reply,
    gate: Option<Gate>,
}

/// Commits waiting in one lane, and its "full" signal; the lane exists while a drain task
/// runs for it.
#[derive(Debug, Default)]
struct Lane {
    waiting: Vec<Waiting>,
    full: Arc<tokio::sync::Notify>,
}

type Lanes = HashMap<(usize, RouteContext), Lane>;

/// How batches form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    /// How long a batch waits to fill (zero: no wait).
    pub(crate) window: Duration,
    /// Most commits per batch.
    pub(crate) max_batch: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self { window: Duration::ZERO, max_batch: MAX_BATCH }
    }
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Committer {
    lanes: Arc<Mutex<Lanes>>,
    /// Told about every batch that committed something.
    flusher: Flusher,
    batching: Batching,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").field("key", &self.commit.key).finish_non_exhaustive()
    }
}

impl Committer {
    pub(crate) fn new(batching: Batching) -> Self {
        let max_batch = batching.max_batch.clamp(1, MAX_BATCH);
        Self { batching: Batching { max_batch, ..batching }, ..Self::default() }
    }

    /// Commits `commit` on pair `pair` (whose stores are `target`) in the next batch of its
    /// lane, and answers as [`MetaStore::commit`] would. With a `gate`, the batch's
    /// transaction runs while the snapshot put is in flight and commits only once every
    /// gate of the batch opened `Ok` ([`MetaStore::commit_many_after`]); a commit whose
    /// gate failed is answered with that error and never committed.
    pub(crate) async fn commit(
        &self,
        pair: usize,
        target: &Target,
        stats: &Arc<StatCounters>,
        commit: Commit,
        gate: Option<Gate>,
    ) -> Result<Committed> {
        let (reply, rx) = oneshot::channel();
        let lane = (pair, commit.key.ctx.clone());
        let item = Waiting { commit, reply, gate };
        let start = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            match lanes.get_mut(&lane) {
                Some(l) => {
                    l.waiting.push(item);
                    if l.waiting.len() >= self.batching.max_batch {
                        l.full.notify_one();
                    }
                    false
                }
                None => {
                    lanes.insert(lane.clone(), Lane { waiting: vec![item], full: Arc::default() });
                    true
                }
            }
        };
        if start {
            let lanes = self.lanes.clone();
            let drain =
                Drain { lanes, lane, target: target.clone(), flusher: self.flusher.clone(), stats: stats.clone() };
            tokio::spawn(drain.run(self.batching));
        }
        rx.await.unwrap_or_else(|_| Err(Error::internal("the group committer stopped before answering")))
    }
}

/// A lane's drain task.
struct Drain {
    lanes: Arc<Mutex<Lanes>>,
    lane: (usize, RouteContext),
    target: Target,
    flusher: Flusher,
    stats: Arc<StatCounters>,
}

impl Drain {
    /// With a window, on a busy lane (`previous` commits in the last batch, or several
    /// waiting): waits until the lane holds a full batch or the window passes.
    async fn fill(&self, batching: Batching, previous: usize) {
        if batching.window.is_zero() {
            return;
        }
        let full = {
            let all = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            match all.get(&self.lane) {
                Some(l) if l.waiting.len().max(previous) >= 2 && l.waiting.len() < batching.max_batch => l.full.clone(),
                _ => return,
            }
        };
        let started = crate::runtime::Stopwatch::start();
        let _ = tokio::time::timeout(batching.window, full.notified()).await;
        self.stats.batch_waits.inc();
        self.stats.batch_wait_micros.add(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    /// Commits the lane's batches until nothing waits, then retires the lane.
    async fn run(self, batching: Batching) {
        let mut previous = 0;
        loop {
            self.fill(batching, previous).await;
            let batch = {
                let mut all = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(l) = all.get_mut(&self.lane) else { return };
                if l.waiting.is_empty() {
                    all.remove(&self.lane);
                    return;
                }
                let n = l.waiting.len().min(batching.max_batch);
                l.waiting.drain(..n).collect::<Vec<_>>()
            };
            previous = batch.len();
            self.commit(batch).await;
        }
    }

    /// Commits one batch and answers its writers.
    async fn commit(&self, batch: Vec<Waiting>) {
        let (stats, target, lane) = (&self.stats, &self.target, &self.lane);
        stats.commit_batches.inc();
        for _ in &batch {
            stats.batched_commits.inc();
        }
        let mut commits = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut gates = Vec::with_capacity(batch.len());
        for w in batch {
            commits.push(w.commit);
            replies.push(w.reply);
            gates.push(w.gate);
        }
        let answers = commit_batch(&*target.meta, commits, gates).await;
        if answers.iter().any(|a| a.as_ref().is_ok_and(|c| !c.replayed)) {
            self.flusher.notify(lane.0, &lane.1, target);
        }
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A writer that stopped waiting is not an error of the batch.
            let _ = reply.send(answer);
        }
    }
}

/// One batch's answers, one per commit.
async fn commit_batch(meta: &dyn MetaStore, commits: Vec<Commit>, gates: Vec<Option<Gate>>) -> Vec<Result<Committed>> {
    if gates.iter().all(Option::is_none) {
        return commit_plain(meta, commits).await;
    }
    let n = commits.len();
    let outcomes: Arc<Mutex<Vec<Option<Result<()>>>>> = Arc::new(Mutex::new(vec![None; n]));
    let seen = outcomes.clone();
    let durable: Durable = Box::pin(async move {
        let mut failed = None;
        for (i, gate) in gates.into_iter().enumerate() {
            let r = match gate {
                None => Ok(()),
                Some(rx) => rx
                    .await
                    .unwrap_or_else(|_| Err(Error::unavailable("the write stopped before its snapshot was durable"))),
            };
            if let Err(e) = &r {
                failed.get_or_insert_with(|| e.clone());
            }
            seen.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(r);
        }
        failed.map_or(Ok(()), Err)
    });
    let kept = commits.clone();
    match meta.commit_many_after(commits, durable).await {
        Ok(answers) => per_item(Ok(answers), n),
        Err(e) => {
            let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(PoisonError::into_inner));
            if outcomes.iter().all(Option::is_some) && outcomes.iter().any(|o| matches!(o, Some(Err(_)))) {
                // Some snapshots failed: those commits get their error; the others' snapshots
                // are durable, so they commit now.
                let mut answers: Vec<Option<Result<Committed>>> = vec![None; n];
                let mut rest = Vec::new();
                let mut at = Vec::new();
                for (i, (o, c)) in outcomes.into_iter().zip(kept).enumerate() {
                    match o {
                        Some(Err(gate_error)) => answers[i] = Some(Err(gate_error)),
                        _ => {
                            rest.push(c);
                            at.push(i);
                        }
                    }
                }
                for (i, a) in at.into_iter().zip(commit_plain(meta, rest).await) {
                    answers[i] = Some(a);
                }
                answers.into_iter().map(|a| a.unwrap_or_else(|| Err(Error::internal("an unanswered commit")))).collect()
            } else {
                vec![Err(e); n]
            }
        }
    }
}

/// A batch whose snapshots are all durable: `commit` for one, `commit_many` for several.
async fn commit_plain(meta: &dyn MetaStore, mut commits: Vec<Commit>) -> Vec<Result<Committed>> {
    let n = commits.len();
    if n == 1
        && let Some(c) = commits.pop()
    {
        return vec![meta.commit(c).await];
    }
    if n == 0 {
        return Vec::new();
    }
    per_item(meta.commit_many(commits).await, n)
}

/// A batch's result as one answer per item (a store-level failure is every item's).
fn per_item(batch: Result<Vec<Result<Committed>>>, n: usize) -> Vec<Result<Committed>> {
    match batch {
        Ok(answers) if answers.len() == n => answers,
        Ok(_) => vec![Err(Error::internal("commit_many answered another number of items")); n],
        Err(e) => vec![Err(e); n],
    }
}
