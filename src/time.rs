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

/// The local date of `unix`, as `YYYY-MM-DD`.
pub(crate) fn local_date(unix: f64) -> String {
    match local(unix.floor() as i64) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday
        ),
        None => "unknown date".into(),
    }
}

/// A local calendar day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LocalDay {
    /// A number that changes at each local midnight (not a count of days).
    pub(crate) number: i64,
    /// The Unix time of its midnight.
    pub(crate) start: f64,
    /// The Unix time of the next midnight.
    pub(crate) end: f64,
}

impl LocalDay {
    /// Whether `unix` falls on this day.
    pub(crate) fn holds(&self, unix: f64) -> bool {
        (self.start..self.end).contains(&unix)
    }
}

/// The local day `unix` falls on.
pub(crate) fn local_day(unix: f64) -> LocalDay {
    let secs = unix.floor() as i64;
    let Some(mut tm) = local(secs) else {
        let day = secs.div_euclid(86_400);
        return LocalDay {
            number: day,
            start: (day * 86_400) as f64,
            end: ((day + 1) * 86_400) as f64,
        };
    };
    let number = i64::from(tm.tm_year) * 1000 + i64::from(tm.tm_yday);
    tm.tm_hour = 0;
    tm.tm_min = 0;
    tm.tm_sec = 0;
    tm.tm_isdst = -1;
    let mut next_tm = tm;
    next_tm.tm_mday += 1;
    // SAFETY: both are valid, normalisable calendar times.
    let (start, end) = unsafe { (libc::mktime(&mut tm), libc::mktime(&mut next_tm)) };
    // Where a zone skips midnight, mktime moves on to the first existing time; any failure
    // falls back to whole days of 24 hours around `unix`.
    let start = if start != -1 && start <= secs as _ {
        start as f64
    } else {
        (secs - secs.rem_euclid(86_400)) as f64
    };
    let end = if end > secs as _ {
        end as f64
    } else {
        (secs + 86_400) as f64
    };
    LocalDay { number, start, end }
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
        let day = local_day(1.8e9);
        assert!(day.holds(1.8e9));
        assert!(day.end > 1.8e9 && day.end <= 1.8e9 + 86_400.0 + 3_600.0);
        assert!(day.start <= 1.8e9 && day.start > 1.8e9 - 86_400.0 - 3_600.0);
        assert_eq!(local_day(day.end - 1.0), day);
        assert_eq!(local_day(day.start), day);
        let following = local_day(day.end);
        assert_ne!(following.number, day.number);
        assert_eq!(following.start, day.end);
        let before = local_day(day.start - 1.0);
        assert_ne!(before.number, day.number);
        assert_eq!(before.end, day.start);
    }
}
