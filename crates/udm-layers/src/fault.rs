//! [`FaultLayer`]: seeded, deterministic fault injection for every port.
//!
//! Rules select calls by port, operation name and subject prefix (see
//! [`Call::subject`](crate::Call::subject): the blob key, queue entry id or job id, else
//! `tenant/db/collection/<object id>`), and fire always, with a probability, or for the next
//! N matching calls. A fired rule:
//! - [`Fault::FailBefore`]: the call never reaches the inner store and fails with a retryable
//!   `Unavailable` (a dropped connection);
//! - [`Fault::FailAfter`]: the inner call runs and succeeds, but the caller gets a retryable
//!   `Unavailable` — the acknowledgement is lost (replays by request id exist for this);
//! - [`Fault::Latency`]: the call is delayed (tokio sleep) before it starts;
//! - [`Fault::Absent`]: a lookup answers "not there" (`None`), as a store that lost the
//!   record would (calls whose answer cannot be absent are unaffected).
//!
//! Probabilities draw from a SplitMix64 generator seeded by the test, so a given seed and
//! sequence of calls injects the same faults on every run. With no rules the layer changes
//! nothing: it passes the whole conformance suite.
//!
//! ```
//! use std::sync::Arc;
//! use udm_core::ports::{Layer, MetaStore};
//! use udm_layers::fault::{FaultLayer, FaultRule};
//! use udm_testkit::memory::MemoryMeta;
//!
//! let faults = FaultLayer::seeded(7);
//! let meta: Arc<dyn MetaStore> = Arc::new(faults.layer(Arc::new(MemoryMeta::new())));
//! let lost_ack = faults.add(FaultRule::fail_after().op("commit").next(1));
//! // … drive `meta`, then:
//! assert_eq!(faults.hits(lost_ack), 0);
//! # let _ = meta;
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use udm_core::ports::Layer;
use udm_core::{Error, Result};

use crate::call::{Answer, Call, Port};
use crate::intercept::{Intercepted, Interceptor};

/// What a fired rule does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Fail with a retryable `Unavailable` before the call reaches the inner store.
    FailBefore,
    /// Run the call, then fail with a retryable `Unavailable` if it succeeded (lost ack).
    FailAfter,
    /// Delay the call by this long before it starts.
    Latency(Duration),
    /// Answer "not there" (`None`) after running the call, for lookups answering an `Option`.
    Absent,
}

/// When a matching rule fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// Every matching call.
    Always,
    /// Each matching call with this probability (0.0–1.0), from the seeded generator.
    Probability(f64),
    /// The next N matching calls, then never.
    Next(u32),
}

/// One fault rule: what to do ([`Fault`]), to which calls, and when ([`Trigger`]).
/// Built as `FaultRule::fail_before().port(Port::Meta).op("commit").next(1)`; unset
/// selectors match every call, and the default trigger is [`Trigger::Always`].
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    fault: Fault,
    port: Option<Port>,
    op: Option<String>,
    prefix: String,
    trigger: Trigger,
}

impl FaultRule {
    /// A rule doing `fault` to every call.
    pub fn new(fault: Fault) -> Self {
        Self { fault, port: None, op: None, prefix: String::new(), trigger: Trigger::Always }
    }

    /// [`Fault::FailBefore`].
    pub fn fail_before() -> Self {
        Self::new(Fault::FailBefore)
    }

    /// [`Fault::FailAfter`].
    pub fn fail_after() -> Self {
        Self::new(Fault::FailAfter)
    }

    /// [`Fault::Latency`].
    pub fn latency(delay: Duration) -> Self {
        Self::new(Fault::Latency(delay))
    }

    /// [`Fault::Absent`].
    pub fn absent() -> Self {
        Self::new(Fault::Absent)
    }

    /// Only calls to `port`.
    #[must_use]
    pub fn port(mut self, port: Port) -> Self {
        self.port = Some(port);
        self
    }

    /// Only calls of the port method `op` (`commit`, `put`, `ping`, …).
    #[must_use]
    pub fn op(mut self, op: &str) -> Self {
        self.op = Some(op.to_owned());
        self
    }

    /// Only calls whose subject starts with `prefix` (e.g. `tenant/db/collection/`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Fire on each matching call with probability `p` (clamped to 0.0–1.0).
    #[must_use]
    pub fn probability(mut self, p: f64) -> Self {
        self.trigger = Trigger::Probability(p.clamp(0.0, 1.0));
        self
    }

    /// Fire on the next `n` matching calls only.
    #[must_use]
    pub fn next(mut self, n: u32) -> Self {
        self.trigger = Trigger::Next(n);
        self
    }

    /// Fire on every matching call (the default).
    #[must_use]
    pub fn always(mut self) -> Self {
        self.trigger = Trigger::Always;
        self
    }

    fn matches(&self, call: &Call<'_>) -> bool {
        self.port.is_none_or(|p| p == call.port)
            && self.op.as_deref().is_none_or(|op| op == call.op)
            && (self.prefix.is_empty() || call.subject().starts_with(self.prefix.as_str()))
    }
}

/// A rule added to a [`FaultLayer`], to read its hits or remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(usize);

/// Faults injected so far, by what they did. A fail-after or absent rule counts when it
/// changed an answer (not when the inner call had failed anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Calls failed before reaching the store.
    pub fail_before: u64,
    /// Calls applied whose acknowledgement was lost.
    pub fail_after: u64,
    /// Calls delayed.
    pub latency: u64,
    /// Lookups answered "not there".
    pub absent: u64,
}

impl FaultStats {
    /// All injected faults.
    pub fn total(&self) -> u64 {
        self.fail_before + self.fail_after + self.latency + self.absent
    }
}

#[derive(Debug)]
struct Armed {
    rule: FaultRule,
    hits: u64,
}

#[derive(Debug)]
struct State {
    rng: u64,
    rules: Vec<Option<Armed>>,
    stats: FaultStats,
}

/// What fired for one call.
#[derive(Debug, Default)]
struct Plan {
    delay: Duration,
    before: Option<usize>,
    after: Option<usize>,
    absent: Option<usize>,
}

/// Seeded fault injection for every port. Cheap to clone: clones share rules, generator and
/// counts, so a test keeps one handle and wraps every store of a pair with it.
#[derive(Debug, Clone)]
pub struct FaultLayer {
    state: Arc<Mutex<State>>,
}

/// A store wrapped by [`FaultLayer`].
pub type Faulty<S> = Intercepted<S, FaultLayer>;

impl<S> Layer<S> for FaultLayer {
    type Output = Faulty<S>;

    fn layer(&self, inner: S) -> Faulty<S> {
        Intercepted::new(inner, self.clone())
    }
}

impl FaultLayer {
    /// A layer with no rules whose probabilities draw from a generator seeded with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self { state: Arc::new(Mutex::new(State { rng: seed, rules: Vec::new(), stats: FaultStats::default() })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a rule (rules apply in the order added; see [`FaultLayer::remove`]).
    pub fn add(&self, rule: FaultRule) -> RuleId {
        let mut s = self.lock();
        s.rules.push(Some(Armed { rule, hits: 0 }));
        RuleId(s.rules.len() - 1)
    }

    /// Removes a rule; its hits stay readable.
    pub fn remove(&self, id: RuleId) {
        if let Some(Some(armed)) = self.lock().rules.get_mut(id.0) {
            armed.rule.trigger = Trigger::Next(0);
        }
    }

    /// Removes every rule.
    pub fn clear(&self) {
        // One lock for all of them (a guard in the loop's range expression would live
        // through the loop, and `remove` would wait for it forever).
        for armed in self.lock().rules.iter_mut().flatten() {
            armed.rule.trigger = Trigger::Next(0);
        }
    }

    /// How many times the rule changed a call.
    pub fn hits(&self, id: RuleId) -> u64 {
        self.lock().rules.get(id.0).and_then(Option::as_ref).map_or(0, |a| a.hits)
    }

    /// Faults injected so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats
    }

    /// Which rules fire for `call` (consuming `Next` budgets and drawing probabilities).
    fn plan(&self, call: &Call<'_>) -> Plan {
        let mut s = self.lock();
        let mut plan = Plan::default();
        for i in 0..s.rules.len() {
            let Some(armed) = s.rules[i].as_ref() else { continue };
            if !armed.rule.matches(call) || !fire(&mut s, i) {
                continue;
            }
            let Some(armed) = s.rules[i].as_mut() else { continue };
            match armed.rule.fault {
                Fault::Latency(d) => {
                    armed.hits += 1;
                    s.stats.latency += 1;
                    plan.delay += d;
                }
                Fault::FailBefore if plan.before.is_none() => {
                    armed.hits += 1;
                    s.stats.fail_before += 1;
                    plan.before = Some(i);
                }
                Fault::FailAfter => plan.after = plan.after.or(Some(i)),
                Fault::Absent => plan.absent = plan.absent.or(Some(i)),
                Fault::FailBefore => {}
            }
        }
        plan
    }

    /// Counts a fail-after or absent rule that changed an answer.
    fn record(&self, rule: usize, fault: Fault) {
        let mut s = self.lock();
        if let Some(Some(armed)) = s.rules.get_mut(rule) {
            armed.hits += 1;
        }
        match fault {
            Fault::FailAfter => s.stats.fail_after += 1,
            Fault::Absent => s.stats.absent += 1,
            Fault::FailBefore | Fault::Latency(_) => {}
        }
    }
}

/// Whether rule `i` (which matched) fires now.
fn fire(s: &mut State, i: usize) -> bool {
    let trigger = match s.rules[i].as_ref() {
        Some(a) => a.rule.trigger,
        None => return false,
    };
    match trigger {
        Trigger::Always => true,
        Trigger::Probability(p) => unit(split_mix(&mut s.rng)) < p,
        Trigger::Next(0) => false,
        Trigger::Next(n) => {
            if let Some(a) = s.rules[i].as_mut() {
                a.rule.trigger = Trigger::Next(n - 1);
            }
            true
        }
    }
}

/// SplitMix64: tiny, seedable, good enough to pick faults.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A sample in [0, 1) from the top 53 bits.
#[allow(clippy::cast_precision_loss)] // 53 bits are exact in an f64
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Interceptor for FaultLayer {
    async fn intercept<T, F, Fut>(&self, call: Call<'_>, run: F) -> Result<T>
    where
        T: Answer,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let plan = self.plan(&call);
        let (port, op) = (call.port.as_str(), call.op);
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        if plan.before.is_some() {
            return Err(Error::unavailable(format!("injected fault: {port}.{op} failed before reaching the store")));
        }
        let answer = run().await?;
        if let Some(rule) = plan.after {
            self.record(rule, Fault::FailAfter);
            return Err(Error::unavailable(format!("injected fault: {port}.{op} applied, acknowledgement lost")));
        }
        if let (Some(rule), Some(absent)) = (plan.absent, T::absent()) {
            self.record(rule, Fault::Absent);
            return Ok(absent);
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_mix_is_seeded_and_uniform_enough() {
        let (mut a, mut b) = (1u64, 1u64);
        let xs: Vec<u64> = (0..100).map(|_| split_mix(&mut a)).collect();
        assert_eq!(xs, (0..100).map(|_| split_mix(&mut b)).collect::<Vec<_>>());
        let below_half = xs.iter().filter(|&&x| unit(x) < 0.5).count();
        assert!((30..70).contains(&below_half), "{below_half}");
    }

    #[test]
    fn clear_disarms_every_rule_and_returns() {
        // It used to wait for its own lock forever: run it on a thread, with a deadline.
        let f = FaultLayer::seeded(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let g = f.clone();
        std::thread::spawn(move || {
            let a = g.add(FaultRule::fail_before().op("head"));
            g.add(FaultRule::fail_before().op("commit"));
            g.clear();
            let head = Call::new(Port::Meta, "head");
            let disarmed = g.plan(&head).before.is_none() && g.plan(&Call::new(Port::Meta, "commit")).before.is_none();
            g.add(FaultRule::fail_before().op("head"));
            let rearmed = g.plan(&head).before.is_some();
            let _ = tx.send((disarmed, rearmed, g.hits(a)));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got, Ok((true, true, 0)), "clear returned, disarmed every rule, and new rules apply");
    }

    #[test]
    fn next_n_then_never() {
        let f = FaultLayer::seeded(1);
        let id = f.add(FaultRule::fail_before().op("commit").next(2));
        let commit = Call::new(Port::Meta, "commit");
        let head = Call::new(Port::Meta, "head");
        assert!(f.plan(&head).before.is_none(), "other ops unaffected");
        assert!(f.plan(&commit).before.is_some());
        assert!(f.plan(&commit).before.is_some());
        assert!(f.plan(&commit).before.is_none());
        assert_eq!((f.hits(id), f.stats().fail_before), (2, 2));
    }
}
