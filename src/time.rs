//! Wall-clock time: Unix time now, and the local calendar (days for "energy today", the time
//! of day for the simulated house's loads).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time now, in seconds (0 before 1970, which no running system has).
pub(crate) fn unix_now() -> f64 {
    unix(SystemTime::now())
}

/// A wall-clock time as Unix seconds.
pub(crate) fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
pub(crate) fn local_day(unix: f64) -> (i64, f64) {
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
pub(crate) fn local_time_of_day() -> Duration {
    let now = unix_now().floor() as i64;
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
