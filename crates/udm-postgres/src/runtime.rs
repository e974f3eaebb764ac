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

pub(crate) use udm_core::retry::Backoff;

/// The adapter's backoff between retries of a transaction that lost a race: 2 ms doubling to 200 ms.
pub(crate) fn backoff(seed: u64) -> Backoff {
    Backoff::new(Duration::from_millis(2), Duration::from_millis(200), seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_at_200_ms() {
        let mut b = backoff(42);
        assert!(b.delay(1) <= Duration::from_millis(2));
        assert!(b.delay(u32::MAX) <= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_retryable_unavailable() {
        let e = within("head", Duration::from_millis(10), std::future::pending::<Result<()>>()).await.unwrap_err();
        assert_eq!(e.kind(), udm_core::ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(e.message().contains("head") && e.message().contains("0.01s deadline"), "{e}");
    }
}
