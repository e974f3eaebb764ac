//! Deterministic clock, entropy and ids for tests.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use udm_core::ports::{Clock, Entropy, IdGenerator};
use udm_core::retry::SplitMix64;
use udm_core::{ObjectId, RequestId, Timestamp};

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at `millis` since the epoch.
    pub fn at(millis: i64) -> Self {
        Self(AtomicI64::new(millis))
    }

    /// Moves by `millis` (negative moves it back: clock skew tests).
    pub fn advance(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set(&self, millis: i64) {
        self.0.store(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst)).unwrap_or(Timestamp::EPOCH)
    }
}

/// Reproducible randomness from a seed.
#[derive(Debug)]
pub struct SeededEntropy(AtomicU64);

impl SeededEntropy {
    /// From a seed.
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }
}

impl Entropy for SeededEntropy {
    fn next_u64(&self) -> u64 {
        let state = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst);
        SplitMix64::new(state).next_u64()
    }
}

/// Ids `<prefix>-1`, `<prefix>-2`, … (readable in test failures).
#[derive(Debug)]
pub struct SequentialIds {
    prefix: String,
    next: AtomicU64,
}

impl SequentialIds {
    /// Ids with this prefix (an identifier).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), next: AtomicU64::new(1) }
    }

    fn take(&self) -> String {
        format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::SeqCst))
    }
}

impl IdGenerator for SequentialIds {
    fn object_id(&self) -> ObjectId {
        ObjectId::new(self.take()).unwrap_or_else(|e| panic!("bad id prefix: {e}"))
    }

    fn request_id(&self) -> RequestId {
        RequestId::new(self.take()).unwrap_or_else(|e| panic!("bad id prefix: {e}"))
    }
}
