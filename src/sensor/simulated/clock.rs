//! Time for the simulator's virtual chips: monotonic time since a start, real or moved by hand.
//!
//! A simulated bus opened by the daemon runs on [`Clock::real`]. Tests move a
//! [`Clock::manual`] to step through conversions and load cycles without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time since the simulation started; the same clock for every chip.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Duration + Send + Sync>);

impl Clock {
    /// Monotonic wall time from now.
    pub(crate) fn real() -> Clock {
        let start = Instant::now();
        Clock(Arc::new(move || start.elapsed()))
    }

    /// A clock that moves only when told to, for tests.
    pub fn manual() -> (Clock, ManualTime) {
        let nanos = Arc::new(AtomicU64::new(0));
        let reader = Arc::clone(&nanos);
        (
            Clock(Arc::new(move || {
                Duration::from_nanos(reader.load(Ordering::SeqCst))
            })),
            ManualTime(nanos),
        )
    }

    /// Time since the start.
    pub fn now(&self) -> Duration {
        (self.0)()
    }
}

/// The hand that moves a [`Clock::manual`].
#[derive(Clone)]
pub struct ManualTime(Arc<AtomicU64>);

impl ManualTime {
    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}
