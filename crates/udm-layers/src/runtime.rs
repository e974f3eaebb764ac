//! The only place this crate reads the real clock (latency measurement), per the workspace
//! rule that clock reads live in `runtime` modules.

use std::time::{Duration, Instant};

/// Measures elapsed wall time.
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
