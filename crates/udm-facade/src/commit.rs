//! The group committer: concurrent writes to the same (pair, collection) share one metadata
//! transaction.
//!
//! Each (pair, collection) has a *lane*. A write whose snapshot is durable hands its
//! [`Commit`] to the lane and waits for its own answer. When the lane is idle, a task is
//! spawned that drains it: it takes everything waiting (up to [`MAX_BATCH`]), commits it —
//! with [`MetaStore::commit`] for one, [`MetaStore::commit_many`] for several — answers
//! each writer, and repeats until nothing waits, then retires the lane. Writes that arrive
//! while a transaction runs form the next batch, so batches grow with the load and a lone
//! writer waits for nobody (no timer; a batching window is a later option).
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

use tokio::sync::oneshot;
use udm_core::ports::{Commit, Committed, MAX_BATCH, MetaStore};
use udm_core::{Error, Result, RouteContext};

use crate::admin::StatCounters;
use crate::shadow::{Flusher, Target};

type Reply = oneshot::Sender<Result<Committed>>;

/// Commits waiting in one lane; the lane exists while a drain task runs for it.
type Lanes = HashMap<(usize, RouteContext), Vec<(Commit, Reply)>>;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Committer {
    lanes: Arc<Mutex<Lanes>>,
    /// Told about every batch that committed something.
    flusher: Flusher,
}

impl Committer {
    /// Commits `commit` on pair `pair` (whose stores are `target`) in the next batch of its
    /// lane, and answers as [`MetaStore::commit`] would.
    pub(crate) async fn commit(
        &self,
        pair: usize,
        target: &Target,
        stats: &Arc<StatCounters>,
        commit: Commit,
    ) -> Result<Committed> {
        let (tx, rx) = oneshot::channel();
        let lane = (pair, commit.key.ctx.clone());
        let start = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            match lanes.get_mut(&lane) {
                Some(waiting) => {
                    waiting.push((commit, tx));
                    false
                }
                None => {
                    lanes.insert(lane.clone(), vec![(commit, tx)]);
                    true
                }
            }
        };
        if start {
            let lanes = self.lanes.clone();
            tokio::spawn(drain(lanes, lane, target.clone(), self.flusher.clone(), stats.clone()));
        }
        rx.await.unwrap_or_else(|_| Err(Error::internal("the group committer stopped before answering")))
    }
}

/// Commits a lane's batches until nothing waits, then retires the lane.
async fn drain(
    lanes: Arc<Mutex<Lanes>>,
    lane: (usize, RouteContext),
    target: Target,
    flusher: Flusher,
    stats: Arc<StatCounters>,
) {
    let meta = &target.meta;
    loop {
        let batch = {
            let mut all = lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(waiting) = all.get_mut(&lane) else { return };
            if waiting.is_empty() {
                all.remove(&lane);
                return;
            }
            let n = waiting.len().min(MAX_BATCH);
            waiting.drain(..n).collect::<Vec<_>>()
        };
        stats.commit_batches.inc();
        for _ in &batch {
            stats.batched_commits.inc();
        }
        let (commits, replies): (Vec<Commit>, Vec<Reply>) = batch.into_iter().unzip();
        let answers: Vec<Result<Committed>> = if commits.len() == 1 {
            let mut one = commits;
            match one.pop() {
                Some(c) => vec![meta.commit(c).await],
                None => Vec::new(),
            }
        } else {
            let n = commits.len();
            match meta.commit_many(commits).await {
                Ok(answers) if answers.len() == n => answers,
                Ok(_) => vec![Err(Error::internal("commit_many answered another number of items")); n],
                Err(e) => vec![Err(e); n],
            }
        };
        if answers.iter().any(|a| a.as_ref().is_ok_and(|c| !c.replayed)) {
            flusher.notify(lane.0, &lane.1, &target);
        }
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A writer that stopped waiting is not an error of the batch.
            let _ = reply.send(answer);
        }
    }
}
