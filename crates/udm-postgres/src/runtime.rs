//! The one module of this crate that reads the clock: deadlines and the seed of the retry
//! jitter. Everything else takes a [`Deadline`] from here (a tidy check bans `Instant::now`
//! and `SystemTime::now` elsewhere), and the backoff arithmetic ([`Backoff`]) is pure, so
//! tests can pin it with a fixed seed.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use udm_core::{Error, Result};

/// A time budget that started when it was created: retry loops stop starting new attempts
/// once it is spent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    start: Instant,
    budget: Duration,
}

impl Deadline {
    /// A budget of `budget` starting now.
    pub(crate) fn after(budget: Duration) -> Self {
        Self { start: Instant::now(), budget }
    }

    /// What is left of the budget (zero once spent).
    pub(crate) fn remaining(&self) -> Duration {
        self.budget.saturating_sub(self.start.elapsed())
    }

    /// Whether the budget is spent.
    pub(crate) fn expired(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// A seed for [`Backoff`]'s jitter, from the wall clock's sub-second part (never zero).
pub(crate) fn jitter_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) | 1
}

/// Runs `call` with a whole-call deadline: on expiry the call is dropped (a connection left
/// inside a transaction is closed, never reused: the server rolls the transaction back) and
/// the answer is a retryable `Unavailable` naming the operation and the deadline.
pub(crate) async fn within<T>(op: &str, limit: Duration, call: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => answer,
        Err(_) => {
            Err(Error::unavailable(format!("postgres {op}: no answer within the {} deadline", secs(limit)))
                .retryable(true))
        }
    }
}

/// A duration as seconds for messages: `30s`, `0.25s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Capped exponential backoff with jitter between retries of a transaction that lost a race
/// (serialization failure, deadlock). Pure: the jitter comes from a xorshift generator
/// seeded once, never from a global random source.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    state: u64,
}

impl Backoff {
    /// First delay about 2 ms, doubling per attempt, capped at 200 ms.
    pub(crate) fn new(seed: u64) -> Self {
        Self { base: Duration::from_millis(2), cap: Duration::from_millis(200), state: seed | 1 }
    }

    /// The delay before retry number `retry` (1 = the first retry): half the capped
    /// exponential step plus a random part of up to the other half ("equal jitter").
    pub(crate) fn delay(&mut self, retry: u32) -> Duration {
        let step = self.base.saturating_mul(1_u32 << retry.saturating_sub(1).min(16)).min(self.cap);
        let half = step / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.next() % half_nanos.saturating_add(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_deterministically() {
        let mut a = Backoff::new(42);
        let mut b = Backoff::new(42);
        let da: Vec<Duration> = (1..=12).map(|n| a.delay(n)).collect();
        let db: Vec<Duration> = (1..=12).map(|n| b.delay(n)).collect();
        assert_eq!(da, db, "same seed, same delays");
        for (i, d) in da.iter().enumerate() {
            let step = Duration::from_millis(2 * (1 << i)).min(Duration::from_millis(200));
            assert!(*d >= step / 2 && *d <= step, "retry {}: {d:?} not in [{:?}, {step:?}]", i + 1, step / 2);
        }
        assert!(Backoff::new(1).delay(u32::MAX) <= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_retryable_unavailable() {
        let e = within("head", Duration::from_millis(10), std::future::pending::<Result<()>>()).await.unwrap_err();
        assert_eq!(e.kind(), udm_core::ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(e.message().contains("head") && e.message().contains("0.01s deadline"), "{e}");
    }
}
