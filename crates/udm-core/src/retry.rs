//! Retry schedule for the fallback queue: capped exponential backoff with full jitter.
//!
//! For attempt `n` (1-based) the upper bound is `min(max_delay, base_delay · 2^(n-1))`, and
//! the delay is a uniform fraction of it chosen by a random sample. The sample is passed in
//! (from the entropy port or a seeded [`SplitMix64`]), so schedules are reproducible in tests.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

use std::time::Duration;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Upper bound of the first retry's delay, ms.
    pub base_delay_ms: u64,
    /// Cap on any delay, ms.
    pub max_delay_ms: u64,
    /// Attempts before an entry goes to the dead-letter queue (the first try counts).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { base_delay_ms: 500, max_delay_ms: 5 * 60 * 1000, max_attempts: 10 }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again at this time.
    RetryAt(Timestamp),
    /// Attempts are used up: move to the dead-letter queue.
    DeadLetter,
}

impl RetryPolicy {
    /// The upper bound of the delay after failed attempt `attempt` (1-based).
    pub fn upper_bound_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(63);
        self.base_delay_ms.saturating_mul(1u64 << shift).min(self.max_delay_ms)
    }

    /// The delay after failed attempt `attempt`, given a uniform random `sample`.
    pub fn delay_ms(&self, attempt: u32, sample: u64) -> u64 {
        let upper = self.upper_bound_ms(attempt);
        // Uniform in [0, upper]: scale the sample into that range without overflow.
        ((u128::from(sample) * (u128::from(upper) + 1)) >> 64) as u64
    }

    /// After `attempts` failed attempts at `now`: when to retry, or dead-letter.
    pub fn next_step(&self, attempts: u32, now: Timestamp, sample: u64) -> NextStep {
        if attempts >= self.max_attempts {
            return NextStep::DeadLetter;
        }
        let delay = i64::try_from(self.delay_ms(attempts, sample)).unwrap_or(i64::MAX);
        NextStep::RetryAt(now.plus_millis(delay))
    }
}

/// A tiny deterministic PRNG (SplitMix64) for jitter samples from a seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next sample.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Capped exponential backoff with "equal jitter" between retries of a transaction that
/// lost a race (the adapters' retry loops): the delay before retry `n` is half the step
/// `min(cap, base · 2^(n-1))` plus a random part of up to the other half, so delays grow but
/// racing writers spread out. Pure: the jitter comes from a xorshift generator seeded once.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    state: u64,
}

impl Backoff {
    /// A backoff from `base` doubling up to `cap`, its jitter seeded by `seed`.
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Self { base, cap, state: seed | 1 }
    }

    /// The delay before retry number `retry` (1 = the first retry).
    pub fn delay(&mut self, retry: u32) -> Duration {
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
    fn bounds_grow_then_cap() {
        let p = RetryPolicy { base_delay_ms: 100, max_delay_ms: 1000, max_attempts: 5 };
        let bounds: Vec<_> = (1..=6).map(|a| p.upper_bound_ms(a)).collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay_ms(3, 0), 0);
        assert_eq!(p.delay_ms(3, u64::MAX), 400);
    }

    #[test]
    fn dead_letters_after_max_attempts() {
        let p = RetryPolicy { base_delay_ms: 100, max_delay_ms: 1000, max_attempts: 2 };
        let now = Timestamp::EPOCH;
        assert!(matches!(p.next_step(1, now, 7), NextStep::RetryAt(t) if t >= now));
        assert_eq!(p.next_step(2, now, 7), NextStep::DeadLetter);
    }

    #[test]
    fn splitmix_is_deterministic() {
        let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(a.next_u64(), SplitMix64::new(43).next_u64());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_deterministically() {
        let (base, cap) = (Duration::from_millis(5), Duration::from_millis(500));
        let delays = |seed| (1..=12).map(|n| Backoff::new(base, cap, seed).delay(n)).collect::<Vec<_>>();
        let mut a = Backoff::new(base, cap, 42);
        let da: Vec<Duration> = (1..=12).map(|n| a.delay(n)).collect();
        let mut b = Backoff::new(base, cap, 42);
        assert_eq!(da, (1..=12).map(|n| b.delay(n)).collect::<Vec<_>>(), "same seed, same delays");
        for (i, d) in da.iter().enumerate() {
            let step = (base * (1 << i)).min(cap);
            assert!(*d >= step / 2 && *d <= step, "retry {}: {d:?} not in [{:?}, {step:?}]", i + 1, step / 2);
        }
        assert_ne!(delays(7), delays(8), "seeds spread racing writers");
        assert!(Backoff::new(base, cap, 1).delay(u32::MAX) <= cap);
    }
}
