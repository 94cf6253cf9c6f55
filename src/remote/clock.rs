//! The time a pushed sample carries. A Pi has no real-time clock: booted without network, its
//! wall clock is wrong until NTP sets it, and a receiver would store the samples at a wrong
//! time (or refuse them as too far in the future). So while the kernel says the clock is not
//! synchronised (`adjtimex`, what `timedatectl` shows), batches are held with the boot clock's
//! time, and stamped with the wall-clock time once it is: wall = boot + (wall − boot) at the
//! moment of synchronisation. A restart before that loses them: the held batches live in
//! memory only (their boot-clock times mean nothing to another boot). Once synchronised in a
//! boot, the clock is trusted for the rest of it (see [`Trust`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::proto::WriteRequest;

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

/// Whether the wall clock is to be trusted: it has been synchronised since boot. The kernel
/// calls a clock unsynchronised again after about nine hours without NTP (its error bound
/// passes 16 s), though it drifts only by parts per million meanwhile: a Pi offline for days
/// goes on stamping its samples. The first synchronisation of a boot is remembered in the
/// runtime directory (a tmpfs, empty at the next boot) for a restart.
pub(crate) struct Trust {
    seen: bool,
    marker: PathBuf,
    boot: String,
}

impl Trust {
    /// What `runtime_dir` remembers of this boot.
    pub(crate) fn new(runtime_dir: &Path) -> Trust {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim()
            .to_string();
        Trust::with_boot(runtime_dir, boot)
    }

    fn with_boot(runtime_dir: &Path, boot: String) -> Trust {
        let marker = runtime_dir.join("clock-synchronized");
        let seen =
            !boot.is_empty() && std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == boot);
        Trust { seen, marker, boot }
    }

    /// The clock has been synchronised in this boot (now, or before).
    pub(crate) fn trusted(&mut self, clocks: &dyn Clocks) -> bool {
        if !self.seen && clocks.synchronized() {
            self.seen = true;
            if let Err(e) = std::fs::write(&self.marker, &self.boot) {
                log::debug!("cannot remember the clock's synchronisation: {e}");
            }
        }
        self.seen
    }
}

/// Batches taken before the clock was synchronised, encoded, at their boot-clock times.
#[derive(Default)]
pub(crate) struct Held {
    batches: VecDeque<(i64, Vec<u8>, usize)>,
    bytes: usize,
}

/// The most held (compressed): about eight hours of the simulated house at 15 s. The oldest
/// give way.
const MAX_HELD_BYTES: usize = 8 << 20;

impl Held {
    /// Hold `request`, taken at `boot_ms`; the samples of the batches that gave way.
    pub(crate) fn hold(&mut self, boot_ms: i64, request: &WriteRequest) -> usize {
        let body = request.body();
        self.bytes += body.len();
        self.batches.push_back((boot_ms, body, request.samples()));
        let mut dropped = 0;
        while self.bytes > MAX_HELD_BYTES && self.batches.len() > 1 {
            if let Some((_, body, samples)) = self.batches.pop_front() {
                self.bytes -= body.len();
                dropped += samples;
            }
        }
        dropped
    }

    /// How many batches wait.
    pub(crate) fn len(&self) -> usize {
        self.batches.len()
    }

    /// The held batches, oldest first, stamped with wall-clock time now that it is known:
    /// `unix_ms` and `boot_ms` read at the same moment. Decoded one at a time.
    pub(crate) fn release(
        &mut self,
        unix_ms: i64,
        boot_ms: i64,
    ) -> impl Iterator<Item = (i64, WriteRequest)> + '_ {
        let offset = unix_ms - boot_ms;
        self.bytes = 0;
        self.batches.drain(..).filter_map(move |(boot, body, _)| {
            let mut request = WriteRequest::from_body(&body)?;
            let taken = boot + offset;
            for s in &mut request.timeseries {
                for sample in &mut s.samples {
                    sample.timestamp = taken;
                }
            }
            Some((taken, request))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Label, Sample, TimeSeries};
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn request(value: f64) -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "x".into(),
                }],
                samples: vec![Sample {
                    value,
                    timestamp: 0,
                }],
            }],
        }
    }

    #[test]
    fn held_batches_get_the_wall_clock_time_they_were_taken_at() {
        let mut held = Held::default();
        // Booted in 1970 as far as the wall clock knows; samples at boot +10 s and +25 s.
        held.hold(10_000, &request(1.0));
        held.hold(25_000, &request(2.0));
        // NTP sets the clock at boot +40 s, to 2026.
        let released: Vec<(i64, WriteRequest)> = held.release(1_796_000_000_000, 40_000).collect();
        assert_eq!(held.len(), 0);
        let times: Vec<i64> = released.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [1_795_999_970_000, 1_795_999_985_000]);
        let last = &released[1].1.timeseries[0].samples[0];
        assert_eq!((last.timestamp, last.value), (1_795_999_985_000, 2.0));
    }

    #[test]
    fn the_oldest_held_give_way_past_the_limit() {
        let mut held = Held::default();
        let size = request(1.0).body().len();
        let room = MAX_HELD_BYTES / size;
        let dropped: usize = (0..room as i64 + 3)
            .map(|i| held.hold(i * 15_000, &request(1.0)))
            .sum();
        assert_eq!((held.len(), dropped), (room, 3));
        let first = held.release(0, 0).next().unwrap();
        assert_eq!(first.0, 3 * 15_000);
    }

    /// A clock whose synchronisation the test sets.
    struct Fake(AtomicBool);

    impl Clocks for Fake {
        fn synchronized(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
        fn unix_ms(&self) -> i64 {
            0
        }
        fn boot_ms(&self) -> i64 {
            0
        }
    }

    #[test]
    fn a_clock_synchronised_once_stays_trusted_for_the_boot() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Fake(AtomicBool::new(false));
        let mut trust = Trust::with_boot(dir.path(), "boot-a".into());
        assert!(!trust.trusted(&clock));
        clock.0.store(true, Ordering::SeqCst);
        assert!(trust.trusted(&clock));
        // Nine hours without NTP: the kernel says unsynchronised; still trusted.
        clock.0.store(false, Ordering::SeqCst);
        assert!(trust.trusted(&clock));
        // A restart in the same boot remembers it; the next boot does not.
        assert!(Trust::with_boot(dir.path(), "boot-a".into()).trusted(&clock));
        assert!(!Trust::with_boot(dir.path(), "boot-b".into()).trusted(&clock));
        assert!(!Trust::with_boot(dir.path(), String::new()).trusted(&clock));
    }
}
