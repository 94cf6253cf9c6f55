//! Energy totals that outlive the process, kept in two files, one for each way a process ends
//! without saying goodbye:
//!
//! - [`store`]: `state.json` in the state directory, the durable copy. Written whole and
//!   atomically (a new file, fsync, rename, fsync of the directory) at start, every
//!   `persist_interval` and at stop. It survives a power cut; what it cannot hold is the energy
//!   since its last write.
//! - [`live`]: a memory-mapped record per sensor in the runtime directory (`/run`, a tmpfs),
//!   updated after every sample. A process crash (SIGKILL, a watchdog abort, a panic) does not
//!   lose the page cache, so the next start finds the totals of the last sample. On tmpfs it
//!   costs no write to the SD card; it does not survive a reboot, which `state.json` covers.
//!
//! A start takes, per sensor, the larger of the two (totals only grow, so the larger one is the
//! later one). Only values already on disk are exported (see `persist`), so neither a crash nor
//! a power cut can make an exported counter go backwards.

pub mod format;
pub mod live;
pub mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::store::{Loaded, SetAside, StateError, StateStore};

/// The largest total a file may claim, in joules: 1 PJ, about 280 GWh, or a 12 kW load running
/// for 2,600 years. Anything above is corruption (and a total near `f64::MAX` would freeze the
/// counter: adding a sample to it changes nothing).
pub const MAX_PLAUSIBLE_JOULES: f64 = 1e15;

/// Per sensor name, what the files hold. Sensors no longer configured are kept, so that
/// re-adding one continues its totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredState {
    /// Totals per sensor name.
    pub sensors: BTreeMap<String, StoredSensor>,
}

/// One sensor's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSensor {
    /// Energy drawn in the forward direction, in joules.
    pub energy_joules: f64,
    /// Energy that flowed backwards, in joules.
    #[serde(default)]
    pub energy_reverse_joules: f64,
}

impl StoredSensor {
    /// Why these totals cannot be real, if they cannot.
    pub fn implausible(&self) -> Option<String> {
        [
            ("energy_joules", self.energy_joules),
            ("energy_reverse_joules", self.energy_reverse_joules),
        ]
        .into_iter()
        .find(|(_, j)| !(j.is_finite() && (0.0..=MAX_PLAUSIBLE_JOULES).contains(j)))
        .map(|(key, j)| {
            format!("{key} = {j} is not a total between 0 and {MAX_PLAUSIBLE_JOULES:e} J")
        })
    }

    /// The later of two sets of totals of one sensor: each total only grows.
    pub fn latest(self, other: StoredSensor) -> StoredSensor {
        StoredSensor {
            energy_joules: self.energy_joules.max(other.energy_joules),
            energy_reverse_joules: self.energy_reverse_joules.max(other.energy_reverse_joules),
        }
    }
}

impl StoredState {
    /// Take, per sensor, the later totals of `self` and `other`.
    pub fn merge_latest(&mut self, other: &StoredState) {
        for (name, theirs) in &other.sensors {
            let merged = self
                .sensors
                .get(name)
                .map_or(*theirs, |ours| ours.latest(*theirs));
            self.sensors.insert(name.clone(), merged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(forward: f64, reverse: f64) -> StoredSensor {
        StoredSensor {
            energy_joules: forward,
            energy_reverse_joules: reverse,
        }
    }

    #[test]
    fn implausible_totals() {
        assert_eq!(totals(0.0, 0.0).implausible(), None);
        assert_eq!(totals(MAX_PLAUSIBLE_JOULES, 5.0).implausible(), None);
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1.797e308, 2e15] {
            let why = totals(1.0, bad).implausible().expect("implausible");
            assert!(why.starts_with("energy_reverse_joules"), "{why}");
        }
    }

    #[test]
    fn merging_keeps_the_later_total_of_each_direction() {
        let mut a = StoredState::default();
        a.sensors.insert("x".into(), totals(10.0, 3.0));
        a.sensors.insert("only_a".into(), totals(1.0, 0.0));
        let mut b = StoredState::default();
        b.sensors.insert("x".into(), totals(12.0, 2.0));
        b.sensors.insert("only_b".into(), totals(7.0, 0.0));
        a.merge_latest(&b);
        assert_eq!(a.sensors["x"], totals(12.0, 3.0));
        assert_eq!(a.sensors["only_a"], totals(1.0, 0.0));
        assert_eq!(a.sensors["only_b"], totals(7.0, 0.0));
    }
}
