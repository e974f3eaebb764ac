//! Group commit: the pure planning every [`MetaStore::commit_many`] implementation shares.
//!
//! A batch is decided in two steps, so a store can assign CVs with one increment after it
//! knows how many versions commit:
//!
//! 1. [`plan_batch`] walks the commits in order against the request records and heads the
//!    store holds (read inside its transaction) and decides, per item: commit it, answer it
//!    now (a replay, a version conflict, a validation error), or answer it as a replay of an
//!    earlier item of the same batch;
//! 2. [`BatchPlan::finish`] assigns consecutive CVs from the first free one to the accepted
//!    items and yields the version records and heads to write and every item's answer.
//!
//! ```
//! use udm_core::ports::{plan_batch, Commit};
//! # fn demo(commits: Vec<Commit>) -> udm_core::Result<()> {
//! let plan = plan_batch(&commits, |_| None, |_| None)?;
//! let done = plan.finish(&commits, udm_core::Cv::ZERO)?; // CVs 1, 2, … to the accepted
//! assert_eq!(done.answers.len(), commits.len());
//! # Ok(()) }
//! ```
//!
//! [`MetaStore::commit_many`]: super::MetaStore::commit_many

use std::collections::HashMap;

use crate::canonical::Checksum;
use crate::counters::CounterDelta;
use crate::error::{Error, Result};
use crate::id::{ObjectKey, RequestId};
use crate::version::{Cv, Head, VersionRecord};

use super::meta::{Commit, Committed};

/// The most commits one [`MetaStore::commit_many`](super::MetaStore::commit_many) call takes.
pub const MAX_BATCH: usize = 256;

/// What [`plan_batch`] decided for one commit of a batch.
#[derive(Debug, Clone)]
enum Planned {
    /// Commit it.
    Accept,
    /// Answer this, write nothing for it.
    Answer(Result<Committed>),
    /// Its request id is the one of the accepted item at this index: answer as its replay.
    SameAs(usize),
}

/// The decision for every commit of a batch: made by [`plan_batch`], turned into writes and
/// answers by [`BatchPlan::finish`].
#[derive(Debug, Clone)]
pub struct BatchPlan {
    items: Vec<Planned>,
}

/// One accepted commit, with its assigned CV: what the store writes for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Index of the commit in the batch.
    pub index: usize,
    /// The version record to insert.
    pub record: VersionRecord,
    /// The object's head after it (the last accepted version of an object is its new head).
    pub head: Head,
    /// Its result.
    pub done: Committed,
    /// The payload fingerprint its request id is recorded with.
    pub fingerprint: Checksum,
}

/// A finished plan: what to write and every item's answer, in batch order.
#[derive(Debug, Clone)]
pub struct BatchWrites {
    /// The accepted commits in batch (= CV) order.
    pub accepted: Vec<Accepted>,
    /// The counter deltas of every accepted commit.
    pub counters: Vec<CounterDelta>,
    /// One answer per commit of the batch, in batch order.
    pub answers: Vec<Result<Committed>>,
    /// The collection's CV after the batch (unchanged when nothing was accepted).
    pub last_cv: Cv,
}

impl BatchWrites {
    /// The new heads: the last accepted version of each object, once per object.
    pub fn final_heads(&self) -> Vec<&Head> {
        let mut last: HashMap<&ObjectKey, usize> = HashMap::new();
        for (i, a) in self.accepted.iter().enumerate() {
            last.insert(&a.head.key, i);
        }
        let mut picked: Vec<usize> = last.into_values().collect();
        picked.sort_unstable();
        picked.into_iter().map(|i| &self.accepted[i].head).collect()
    }
}

/// Checks a batch as a whole before any IO: at most [`MAX_BATCH`] commits, all of one
/// collection. An empty batch is valid (and commits nothing).
pub fn check_batch(commits: &[Commit]) -> Result<()> {
    if commits.len() > MAX_BATCH {
        return Err(Error::validation("commits", format!("at most {MAX_BATCH} commits per batch")));
    }
    if let Some(first) = commits.first()
        && commits.iter().any(|c| c.key.ctx != first.key.ctx)
    {
        return Err(Error::validation("commits", "a batch commits versions of one collection only"));
    }
    Ok(())
}

/// Plans a batch (step 1; [`BatchPlan::finish`] is step 2) as if its commits ran one after the
/// other: `recorded` answers the request record the store holds for a request id of the
/// batch's collection, `head` the object's current head. An accepted commit moves the head
/// the later items of the batch are checked against, and records its request id for them.
/// An invalid commit ([`Commit::check`]) is answered with its validation error.
pub fn plan_batch(
    commits: &[Commit],
    recorded: impl Fn(&RequestId) -> Option<(Committed, Checksum)>,
    head: impl Fn(&ObjectKey) -> Option<Head>,
) -> Result<BatchPlan> {
    check_batch(commits)?;
    let mut heads: HashMap<&ObjectKey, Option<Head>> = HashMap::new();
    let mut taken: HashMap<&RequestId, usize> = HashMap::new();
    let mut items = Vec::with_capacity(commits.len());
    for (i, c) in commits.iter().enumerate() {
        let request = &c.version.provenance.request_id;
        if let Some(&j) = taken.get(request) {
            items.push(Planned::SameAs(j));
            continue;
        }
        if let Some((done, fp)) = recorded(request) {
            items.push(Planned::Answer(done.replay(&fp, &c.fingerprint)));
            continue;
        }
        let current = heads.entry(&c.key).or_insert_with(|| head(&c.key));
        let verdict = c.check().and_then(|()| c.check_head(current.as_ref()));
        match verdict {
            Ok(()) => {
                // Only the OV and timestamp of a head are checked: the CV comes later.
                *current = Some(c.outcome(Cv::ZERO).1);
                taken.insert(request, i);
                items.push(Planned::Accept);
            }
            Err(e) => items.push(Planned::Answer(Err(e))),
        }
    }
    Ok(BatchPlan { items })
}

impl BatchPlan {
    /// How many commits it accepted (the CVs the batch takes).
    pub fn accepted(&self) -> usize {
        self.items.iter().filter(|p| matches!(p, Planned::Accept)).count()
    }

    /// Whether every commit was accepted (no answer came from the store's records or heads).
    pub fn all_accepted(&self) -> bool {
        self.items.iter().all(|p| matches!(p, Planned::Accept))
    }

    /// The counter deltas of the accepted commits, in batch order (known before CVs are).
    pub fn counters<'a>(&self, commits: &'a [Commit]) -> impl Iterator<Item = &'a CounterDelta> {
        self.items
            .iter()
            .zip(commits)
            .filter(|(p, _)| matches!(p, Planned::Accept))
            .flat_map(|(_, c)| c.counters.iter())
    }

    /// Step 2: assigns CVs `cv + 1, cv + 2, …` (`cv` is the collection's CV before the batch)
    /// to the accepted commits in order and yields what to write and every answer.
    pub fn finish(self, commits: &[Commit], cv: Cv) -> Result<BatchWrites> {
        if commits.len() != self.items.len() {
            return Err(Error::internal("a batch plan finished with other commits"));
        }
        let mut last_cv = cv;
        let mut accepted = Vec::new();
        let mut counters = Vec::new();
        let mut answers: Vec<Result<Committed>> = Vec::with_capacity(commits.len());
        let mut by_index: HashMap<usize, (Committed, Checksum)> = HashMap::new();
        for (i, (planned, c)) in self.items.into_iter().zip(commits).enumerate() {
            match planned {
                Planned::Accept => {
                    last_cv = last_cv.next()?;
                    let (record, head, done) = c.outcome(last_cv);
                    by_index.insert(i, (done.clone(), c.fingerprint));
                    counters.extend(c.counters.iter().cloned());
                    answers.push(Ok(done.clone()));
                    accepted.push(Accepted { index: i, record, head, done, fingerprint: c.fingerprint });
                }
                Planned::Answer(a) => answers.push(a),
                Planned::SameAs(j) => {
                    let (done, fp) = by_index.get(&j).ok_or_else(|| Error::internal("a batch replay of nothing"))?;
                    answers.push(done.replay(fp, &c.fingerprint));
                }
            }
        }
        Ok(BatchWrites { accepted, counters, answers, last_cv })
    }
}

#[cfg(test)]
mod tests;
