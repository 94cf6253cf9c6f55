//! Time for the simulator's virtual chips: monotonic time since a start, real or moved by hand.
//!
//! The daemon hands [`Clock::real`] to the sensors it opens; only the simulated ones read it.
//! Tests move a [`Clock::manual`] to step through conversions and load cycles without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time since the simulation started; the same clock for every chip.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Duration + Send + Sync>);

impl Clock {
    /// Monotonic wall time from now.
    pub fn real() -> Clock {
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

/// Local calendar time, from the C library (it knows the zone and its daylight saving).
fn local(unix: i64) -> Option<libc::tm> {
    // `time_t` is the C library's (32 bits on 32-bit ARM until 2038's change of ABI).
    let t = unix as _;
    // SAFETY: an all-zero `tm` is a valid value; localtime_r writes only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    ok.then_some(tm)
}

/// The local day `unix` falls on (a number that changes at each local midnight) and the Unix
/// time of the next local midnight.
pub fn local_day(unix: f64) -> (i64, f64) {
    let secs = unix.floor() as i64;
    let Some(mut tm) = local(secs) else {
        let day = secs.div_euclid(86_400);
        return (day, ((day + 1) * 86_400) as f64);
    };
    let day = i64::from(tm.tm_year) * 1000 + i64::from(tm.tm_yday);
    tm.tm_mday += 1;
    tm.tm_hour = 0;
    tm.tm_min = 0;
    tm.tm_sec = 0;
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, normalisable calendar time.
    let next = unsafe { libc::mktime(&mut tm) };
    let next = if next > secs as _ {
        next as f64
    } else {
        (secs + 86_400) as f64
    };
    (day, next)
}

/// The local time of day now, as a duration since midnight.
pub fn local_time_of_day() -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let seconds = local(now).map_or(now.rem_euclid(86_400), |tm| {
        i64::from(tm.tm_hour) * 3600 + i64::from(tm.tm_min) * 60 + i64::from(tm.tm_sec)
    });
    Duration::from_secs(seconds.rem_euclid(86_400) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_days_turn_at_midnight() {
        let (day, next) = local_day(1.8e9);
        assert!(next > 1.8e9 && next <= 1.8e9 + 86_400.0 + 3_600.0);
        let (same, _) = local_day(next - 1.0);
        let (following, after) = local_day(next);
        assert_eq!(same, day);
        assert_ne!(following, day);
        assert!(after > next);
    }
}
