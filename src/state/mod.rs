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

pub(crate) mod format;
pub(crate) mod live;
pub(crate) mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub(crate) use self::store::held_elsewhere;
pub use self::store::StateError;
pub(crate) use self::store::StateStore;

/// The largest total a file may claim, in joules: 1 PJ, about 280 GWh, or a 12 kW load running
/// for 2,600 years. Anything above is corruption (and a total near `f64::MAX` would freeze the
/// counter: adding a sample to it changes nothing).
pub(crate) const MAX_PLAUSIBLE_JOULES: f64 = 1e15;

/// Whether a daemon runs on `config`'s state directory (or the default one, where the
/// service keeps it whatever the file says): the directory whose lock it holds; the error
/// when this user cannot tell (a directory it may not open: run as the service user).
pub(crate) fn daemon_running(
    config: &crate::config::Config,
) -> Result<Option<std::path::PathBuf>, String> {
    let (configured, _) = dir(config);
    let default = std::path::PathBuf::from(crate::config::DEFAULT_STATE_DIR);
    let mut unknown = None;
    for candidate in [configured, default] {
        match held_elsewhere(&candidate) {
            Ok(true) => return Ok(Some(candidate)),
            Ok(false) => {}
            Err(e) => unknown = Some(format!("{}: {e}", candidate.display())),
        }
    }
    match unknown {
        Some(why) => Err(why),
        None => Ok(None),
    }
}

/// Where the state lives: `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`), else
/// `daemon.state_dir` (relative to the config file), else the default. The flag says the
/// default was taken.
pub(crate) fn dir(config: &crate::config::Config) -> (std::path::PathBuf, bool) {
    use std::path::{Path, PathBuf};
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| !p.as_os_str().is_empty())
    {
        return (dir, false);
    }
    if let Some(dir) = &config.daemon.state_dir {
        let base = config.path.parent().unwrap_or(Path::new("."));
        return (base.join(dir), false);
    }
    (PathBuf::from(crate::config::DEFAULT_STATE_DIR), true)
}

/// Per sensor and battery name, what the files hold. Sensors and batteries no longer
/// configured are kept, so that re-adding one continues where it was.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StoredState {
    /// Totals per sensor name.
    pub(crate) sensors: BTreeMap<String, StoredSensor>,
    /// Battery monitors per battery name.
    pub(crate) batteries: BTreeMap<String, StoredBattery>,
}

/// How much a battery monitor knows about the state of charge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocStatus {
    /// Nothing yet: no full charge, no estimate.
    #[default]
    Unknown,
    /// Estimated (from the voltage at rest, as configured, or synchronised before the battery
    /// went unwatched), with an uncertainty.
    Estimated,
    /// Counted from a full charge.
    Synchronized,
}

impl SocStatus {
    /// As a number, for the live file.
    pub(crate) fn code(self) -> f64 {
        match self {
            SocStatus::Unknown => 0.0,
            SocStatus::Estimated => 1.0,
            SocStatus::Synchronized => 2.0,
        }
    }

    /// From [`code`](Self::code).
    pub(crate) fn from_code(code: f64) -> Option<SocStatus> {
        [
            SocStatus::Unknown,
            SocStatus::Estimated,
            SocStatus::Synchronized,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}

/// One battery monitor's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredBattery {
    /// Samples counted, ever: the later of two states has more.
    pub samples: u64,
    /// What is known of the state of charge.
    pub status: SocStatus,
    /// Charge below full (Peukert-weighted out, efficiency-weighted in), in coulombs.
    pub below_full_coulombs: f64,
    /// Charge put in, as measured, in coulombs.
    pub charge_in_coulombs: f64,
    /// Charge taken out, as measured, in coulombs.
    pub charge_out_coulombs: f64,
    /// Full charges detected.
    pub full_charges: u64,
    /// Unix time of the last full charge, or of the first sample if there was none.
    pub reference_unix: f64,
    /// The uncertainty of an estimate, as a fraction of capacity (NaN: not known).
    #[serde(with = "nan_as_null")]
    pub uncertainty_ratio: f64,
    /// Unix time of the last sample.
    pub last_sample_unix: f64,
}

/// JSON has no NaN: an unknown uncertainty is `null`.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// Values of a battery in the live file.
pub(crate) const BATTERY_VALUES: usize = 9;

impl StoredBattery {
    /// Why this state cannot be real, if it cannot.
    pub(crate) fn implausible(&self) -> Option<String> {
        let coulombs = [
            ("below_full_coulombs", self.below_full_coulombs),
            ("charge_in_coulombs", self.charge_in_coulombs),
            ("charge_out_coulombs", self.charge_out_coulombs),
        ];
        if let Some((key, c)) = coulombs
            .into_iter()
            .find(|(_, c)| !(c.is_finite() && (0.0..=MAX_PLAUSIBLE_COULOMBS).contains(c)))
        {
            return Some(format!(
                "{key} = {c} is not a charge between 0 and {MAX_PLAUSIBLE_COULOMBS:e} C"
            ));
        }
        let times = [
            ("reference_unix", self.reference_unix),
            ("last_sample_unix", self.last_sample_unix),
        ];
        if let Some((key, t)) = times
            .into_iter()
            .find(|(_, t)| !(t.is_finite() && (0.0..=1e11).contains(t)))
        {
            return Some(format!("{key} = {t} is not a Unix time"));
        }
        let u = self.uncertainty_ratio;
        if !(u.is_nan() || (0.0..=1.0).contains(&u)) {
            return Some(format!(
                "uncertainty_ratio = {u} is not a fraction from 0 to 1"
            ));
        }
        None
    }

    /// The later of two states of one battery: the one with more samples counted; the
    /// counters never go back.
    pub(crate) fn latest(self, other: StoredBattery) -> StoredBattery {
        let mut later = if other.samples > self.samples {
            other
        } else {
            self
        };
        later.charge_in_coulombs = self.charge_in_coulombs.max(other.charge_in_coulombs);
        later.charge_out_coulombs = self.charge_out_coulombs.max(other.charge_out_coulombs);
        later.full_charges = self.full_charges.max(other.full_charges);
        later
    }

    /// The live file's values.
    pub(crate) fn to_values(self) -> [f64; BATTERY_VALUES] {
        [
            self.samples as f64,
            self.status.code(),
            self.below_full_coulombs,
            self.charge_in_coulombs,
            self.charge_out_coulombs,
            self.full_charges as f64,
            self.reference_unix,
            self.uncertainty_ratio,
            self.last_sample_unix,
        ]
    }

    /// From the live file's values; `None` if they are not a battery's.
    pub(crate) fn from_values(v: &[f64]) -> Option<StoredBattery> {
        let whole = |x: f64| {
            (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 9e15).then_some(x as u64)
        };
        let stored = StoredBattery {
            samples: whole(*v.first()?)?,
            status: SocStatus::from_code(*v.get(1)?)?,
            below_full_coulombs: *v.get(2)?,
            charge_in_coulombs: *v.get(3)?,
            charge_out_coulombs: *v.get(4)?,
            full_charges: whole(*v.get(5)?)?,
            reference_unix: *v.get(6)?,
            uncertainty_ratio: *v.get(7)?,
            last_sample_unix: *v.get(8)?,
        };
        stored.implausible().is_none().then_some(stored)
    }
}

/// The largest charge a file may claim, in coulombs: a 1000 Ah battery cycled daily for
/// 2,700 years.
pub(crate) const MAX_PLAUSIBLE_COULOMBS: f64 = 1e13;

/// One sensor's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSensor {
    /// Energy drawn in the forward direction, in joules.
    pub(crate) energy_joules: f64,
    /// Energy that flowed backwards, in joules.
    #[serde(default)]
    pub(crate) energy_reverse_joules: f64,
    /// The local day "today" began on (0: none yet), for the energy used today ...
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) day: i64,
    /// ... and the forward total at its start.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub(crate) day_start_joules: f64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl StoredSensor {
    /// Why these totals cannot be real, if they cannot.
    pub(crate) fn implausible(&self) -> Option<String> {
        [
            ("energy_joules", self.energy_joules),
            ("energy_reverse_joules", self.energy_reverse_joules),
            ("day_start_joules", self.day_start_joules),
        ]
        .into_iter()
        .find(|(_, j)| !(j.is_finite() && (0.0..=MAX_PLAUSIBLE_JOULES).contains(j)))
        .map(|(key, j)| {
            format!("{key} = {j} is not a total between 0 and {MAX_PLAUSIBLE_JOULES:e} J")
        })
    }

    /// The later of two sets of totals of one sensor: each total only grows.
    pub(crate) fn latest(self, other: StoredSensor) -> StoredSensor {
        let later = if other.energy_joules > self.energy_joules {
            other
        } else {
            self
        };
        StoredSensor {
            energy_joules: self.energy_joules.max(other.energy_joules),
            energy_reverse_joules: self.energy_reverse_joules.max(other.energy_reverse_joules),
            day: later.day,
            day_start_joules: later.day_start_joules,
        }
    }

    #[cfg(test)]
    /// Totals of forward and reverse energy only.
    pub(crate) fn totals(energy_joules: f64, energy_reverse_joules: f64) -> StoredSensor {
        StoredSensor {
            energy_joules,
            energy_reverse_joules,
            ..StoredSensor::default()
        }
    }

    /// The live file's values.
    pub(crate) fn to_values(self) -> [f64; 4] {
        [
            self.energy_joules,
            self.energy_reverse_joules,
            self.day as f64,
            self.day_start_joules,
        ]
    }

    /// From the live file's values (a record of 0.2 has only the first two).
    pub(crate) fn from_values(v: &[f64]) -> StoredSensor {
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        let day = at(2);
        StoredSensor {
            energy_joules: at(0),
            energy_reverse_joules: at(1),
            day: if day.is_finite() && day.fract() == 0.0 && day.abs() < 1e12 {
                day as i64
            } else {
                0
            },
            day_start_joules: at(3),
        }
    }
}

impl StoredState {
    /// Take, per sensor and battery, the later state of `self` and `other`.
    pub(crate) fn merge_latest(&mut self, other: &StoredState) {
        for (name, theirs) in &other.sensors {
            let merged = self
                .sensors
                .get(name)
                .map_or(*theirs, |ours| ours.latest(*theirs));
            self.sensors.insert(name.clone(), merged);
        }
        for (name, theirs) in &other.batteries {
            let merged = self
                .batteries
                .get(name)
                .map_or(*theirs, |ours| ours.latest(*theirs));
            self.batteries.insert(name.clone(), merged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(forward: f64, reverse: f64) -> StoredSensor {
        StoredSensor::totals(forward, reverse)
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
