//! Scheduled faults of a simulated sensor, timed from start-up.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::VirtualI2cError;
use crate::config::FaultConfig;

/// A time window `[start, end)`.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Duration,
    end: Option<Duration>,
}

impl Window {
    fn new(start: Duration, duration: Option<Duration>) -> Window {
        Window {
            start,
            end: duration.map(|d| start + d),
        }
    }

    fn contains(&self, t: Duration) -> bool {
        t >= self.start && self.end.is_none_or(|end| t < end)
    }
}

/// The faults of one chip.
pub(crate) struct FaultSchedule {
    faults: Vec<(Window, FaultConfig)>,
    brownouts_done: usize,
    /// Transfers addressed to the chip so far.
    transfers: u64,
    rng: StdRng,
}

impl FaultSchedule {
    /// The schedule of `faults`; `seed` drives the random ones.
    pub(crate) fn new(faults: &[FaultConfig], seed: u64) -> FaultSchedule {
        let faults = faults
            .iter()
            .map(|f| {
                let window = match *f {
                    FaultConfig::Nack {
                        start, duration, ..
                    }
                    | FaultConfig::Timeout {
                        start, duration, ..
                    } => Window::new(start, duration),
                    FaultConfig::Disconnect { start, duration }
                    | FaultConfig::Hang { start, duration }
                    | FaultConfig::Stuck { start, duration }
                    | FaultConfig::Overload {
                        start, duration, ..
                    }
                    | FaultConfig::Supply {
                        start, duration, ..
                    } => Window::new(start, Some(duration)),
                    FaultConfig::Brownout { at, .. } => Window::new(at.unwrap_or_default(), None),
                };
                (window, f.clone())
            })
            .collect();
        FaultSchedule {
            faults,
            brownouts_done: 0,
            transfers: 0,
            // Its own stream, so adding a fault does not change the load model's day.
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_fa17),
        }
    }

    fn active(&self, t: Duration) -> impl Iterator<Item = &FaultConfig> {
        self.faults
            .iter()
            .filter(move |(w, _)| w.contains(t))
            .map(|(_, f)| f)
    }

    /// Whether a transfer at `t` fails, and how; every call is one transfer to the chip.
    pub(crate) fn transfer_error(&mut self, t: Duration) -> Option<VirtualI2cError> {
        self.transfers += 1;
        let n = self.transfers;
        let mut nack = 0.0;
        let mut timeout = 0.0;
        for f in self.active(t) {
            match *f {
                FaultConfig::Disconnect { .. } => return Some(VirtualI2cError::Nack),
                FaultConfig::Nack { every: Some(k), .. } if n.is_multiple_of(u64::from(k)) => {
                    return Some(VirtualI2cError::Nack)
                }
                FaultConfig::Timeout { every: Some(k), .. } if n.is_multiple_of(u64::from(k)) => {
                    return Some(VirtualI2cError::Timeout)
                }
                FaultConfig::Nack { rate, .. } => nack = f64::max(nack, rate),
                FaultConfig::Timeout { rate, .. } => timeout = f64::max(timeout, rate),
                _ => {}
            }
        }
        if nack > 0.0 && self.rng.random_bool(nack.min(1.0)) {
            return Some(VirtualI2cError::Nack);
        }
        if timeout > 0.0 && self.rng.random_bool(timeout.min(1.0)) {
            return Some(VirtualI2cError::Timeout);
        }
        None
    }

    /// When a transfer started at `t` gets unstuck, if a hang is under way.
    pub(crate) fn hang_until(&self, t: Duration) -> Option<Duration> {
        self.faults.iter().find_map(|(w, f)| {
            (matches!(f, FaultConfig::Hang { .. }) && w.contains(t))
                .then_some(w.end)
                .flatten()
        })
    }

    /// The ADC does not convert at `t`.
    pub(crate) fn stuck(&self, t: Duration) -> bool {
        self.active(t)
            .any(|f| matches!(f, FaultConfig::Stuck { .. }))
    }

    /// The load's watts replaced by an overload at `t`.
    pub(crate) fn overload_watts(&self, t: Duration) -> Option<f64> {
        self.active(t).find_map(|f| match *f {
            FaultConfig::Overload { watts, .. } => Some(watts),
            _ => None,
        })
    }

    /// The supply voltage replaced at `t`.
    pub(crate) fn supply_volts(&self, t: Duration) -> Option<f64> {
        self.active(t).find_map(|f| match *f {
            FaultConfig::Supply { volts, .. } => Some(volts),
            _ => None,
        })
    }

    /// True once for every brown-out whose moment (or transfer count) has come.
    pub(crate) fn take_brownout(&mut self, t: Duration) -> bool {
        let transfers = self.transfers;
        let due = self
            .faults
            .iter()
            .filter(|(_, f)| match *f {
                FaultConfig::Brownout { at: Some(at), .. } => at <= t,
                FaultConfig::Brownout {
                    after_transfers: Some(n),
                    ..
                } => transfers >= n,
                _ => false,
            })
            .count();
        if due > self.brownouts_done {
            self.brownouts_done = due;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn windows_open_and_close() {
        let mut f = FaultSchedule::new(
            &[
                FaultConfig::Disconnect {
                    start: s(10),
                    duration: s(5),
                },
                FaultConfig::Overload {
                    start: s(20),
                    duration: s(3),
                    watts: 900.0,
                },
                FaultConfig::Brownout {
                    at: Some(s(30)),
                    after_transfers: None,
                },
            ],
            1,
        );
        assert_eq!(f.transfer_error(s(9)), None);
        assert_eq!(f.transfer_error(s(10)), Some(VirtualI2cError::Nack));
        assert_eq!(f.transfer_error(s(15)), None);
        assert_eq!(f.overload_watts(s(19)), None);
        assert_eq!(f.overload_watts(s(22)), Some(900.0));
        assert_eq!(f.overload_watts(s(23)), None);
        assert!(!f.take_brownout(s(29)));
        assert!(f.take_brownout(s(31)));
        assert!(!f.take_brownout(s(32)));
    }

    #[test]
    fn error_rates_are_rates() {
        let mut f = FaultSchedule::new(
            &[FaultConfig::Nack {
                rate: 0.2,
                every: None,
                start: s(0),
                duration: None,
            }],
            3,
        );
        let n = (0..10_000)
            .filter(|_| f.transfer_error(s(1)).is_some())
            .count();
        assert!((1_800..2_200).contains(&n), "{n}");
    }

    #[test]
    fn every_nth_transfer_fails_and_a_brown_out_can_follow_a_count() {
        let mut f = FaultSchedule::new(
            &[FaultConfig::Nack {
                rate: 0.0,
                every: Some(5),
                start: s(0),
                duration: None,
            }],
            3,
        );
        let failed: Vec<usize> = (1..=20)
            .filter(|_| f.transfer_error(s(1)).is_some())
            .collect();
        assert_eq!(failed, [5, 10, 15, 20]);
        let mut f = FaultSchedule::new(
            &[FaultConfig::Brownout {
                at: None,
                after_transfers: Some(3),
            }],
            3,
        );
        let mut brownouts = Vec::new();
        for i in 1..=6 {
            f.transfer_error(s(1));
            if f.take_brownout(s(1)) {
                brownouts.push(i);
            }
        }
        assert_eq!(brownouts, [3]);
    }
}
