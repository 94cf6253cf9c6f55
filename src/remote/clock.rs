//! The time a pushed sample carries. A Pi has no real-time clock: booted without network, its
//! wall clock is wrong until NTP sets it, and a receiver would store the samples at a wrong
//! time (or refuse them as too far in the future). So while the kernel says the clock is not
//! synchronised (`adjtimex`, what `timedatectl` shows), batches are held with the boot clock's
//! time, and stamped with the wall-clock time once it is: wall = boot + (wall − boot) at the
//! moment of synchronisation. A restart before that loses them: the held batches live in
//! memory only (their boot-clock times mean nothing to another boot).

use super::proto::TimeSeries;

/// What the collector asks of the clocks.
pub(crate) trait Clocks: Send + Sync {
    /// The kernel has the wall clock synchronised.
    fn synchronized(&self) -> bool;
    /// Wall-clock time, Unix milliseconds.
    fn unix_ms(&self) -> i64;
    /// Time since boot (suspend included), milliseconds.
    fn boot_ms(&self) -> i64;
}

/// The system's clocks.
pub(crate) struct System;

impl Clocks for System {
    fn synchronized(&self) -> bool {
        // SAFETY: an all-zero timex with modes 0 only reads the kernel's state into it.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer for the call.
        let state = unsafe { libc::adjtimex(&mut t) };
        state != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0
    }

    fn unix_ms(&self) -> i64 {
        (crate::time::unix_now() * 1000.0) as i64
    }

    // `time_t` and `c_long` are 32 bits on 32-bit ARM: the conversions are not useless there.
    #[allow(clippy::useless_conversion)]
    fn boot_ms(&self) -> i64 {
        // SAFETY: a zeroed timespec is valid; clock_gettime writes only into it.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer for the call.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        i64::from(ts.tv_sec) * 1000 + i64::from(ts.tv_nsec) / 1_000_000
    }
}

/// Batches taken before the clock was synchronised, at their boot-clock times.
#[derive(Default)]
pub(crate) struct Held {
    batches: Vec<(i64, Vec<TimeSeries>)>,
}

/// The most batches held (a day at 15 s); the oldest give way.
const MAX_HELD: usize = 5760;

impl Held {
    /// Hold `series`, taken at `boot_ms`; the batches that gave way (their samples).
    pub(crate) fn hold(&mut self, boot_ms: i64, series: Vec<TimeSeries>) -> usize {
        self.batches.push((boot_ms, series));
        let mut dropped = 0;
        while self.batches.len() > MAX_HELD {
            let (_, old) = self.batches.remove(0);
            dropped += old.iter().map(|s| s.samples.len()).sum::<usize>();
        }
        dropped
    }

    /// How many batches wait.
    pub(crate) fn len(&self) -> usize {
        self.batches.len()
    }

    /// The held batches, oldest first, stamped with wall-clock time now that it is known:
    /// `unix_ms` and `boot_ms` read at the same moment.
    pub(crate) fn release(&mut self, unix_ms: i64, boot_ms: i64) -> Vec<(i64, Vec<TimeSeries>)> {
        let offset = unix_ms - boot_ms;
        self.batches
            .drain(..)
            .map(|(boot, mut series)| {
                let taken = boot + offset;
                for s in &mut series {
                    for sample in &mut s.samples {
                        sample.timestamp = taken;
                    }
                }
                (taken, series)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Label, Sample};
    use super::*;

    fn series(value: f64) -> Vec<TimeSeries> {
        vec![TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "x".into(),
            }],
            samples: vec![Sample {
                value,
                timestamp: 0,
            }],
        }]
    }

    #[test]
    fn held_batches_get_the_wall_clock_time_they_were_taken_at() {
        let mut held = Held::default();
        // Booted in 1970 as far as the wall clock knows; samples at boot +10 s and +25 s.
        held.hold(10_000, series(1.0));
        held.hold(25_000, series(2.0));
        // NTP sets the clock at boot +40 s, to 2026.
        let released = held.release(1_796_000_000_000, 40_000);
        assert_eq!(held.len(), 0);
        let times: Vec<i64> = released.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [1_795_999_970_000, 1_795_999_985_000]);
        assert_eq!(released[1].1[0].samples[0].timestamp, 1_795_999_985_000);
        assert_eq!(released[1].1[0].samples[0].value, 2.0);
    }

    #[test]
    fn a_day_is_held_at_most() {
        let mut held = Held::default();
        let dropped: usize = (0..MAX_HELD as i64 + 3)
            .map(|i| held.hold(i * 15_000, series(1.0)))
            .sum();
        assert_eq!((held.len(), dropped), (MAX_HELD, 3));
    }
}
