//! The real clock, a monotonic stopwatch and the entropy source (the only place the facade
//! reads them).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use udm_core::Timestamp;
use udm_core::ports::{Clock, Entropy};

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or(Timestamp::EPOCH)
    }
}

/// Randomness from the process's random hash keys (seeded by the OS), a counter and the
/// clock, mixed by SipHash: unpredictable enough for id entropy and jitter, without a
/// dependency on an RNG crate.
#[derive(Debug)]
pub struct OsEntropy {
    keys: RandomState,
    counter: AtomicU64,
}

impl Default for OsEntropy {
    fn default() -> Self {
        Self { keys: RandomState::new(), counter: AtomicU64::new(0) }
    }
}

impl Entropy for OsEntropy {
    fn next_u64(&self) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish()
    }
}

/// Measures elapsed time on the monotonic clock (latencies in health reports).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts now.
    pub(crate) fn start() -> Self {
        Self(Instant::now())
    }

    /// Time since [`Stopwatch::start`].
    pub(crate) fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}
