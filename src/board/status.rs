//! What a sensor's pipeline publishes for everyone else — the metrics, the status page,
//! `/api/readings`, MQTT and the state file: a `Copy` snapshot behind a mutex held only for
//! the copy, the recent power for the sparklines, and the totals exported so far.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::anomaly::{Rule, RuleSet};
use crate::battery::BatterySnapshot;
use crate::config::SensorConfig;
use crate::energy::Step;
use crate::sensor::{ErrorKind, Reading};
use crate::state::{StoredBattery, StoredSensor};

use super::history::{History, Point};

/// Power statistics since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PowerStats {
    /// The lowest power seen.
    pub(crate) min_watts: Option<f64>,
    /// The highest power seen.
    pub(crate) max_watts: Option<f64>,
    /// Signed energy over `seconds` (forward minus reverse), for the time-weighted mean.
    net_joules: f64,
    seconds: f64,
}

impl PowerStats {
    /// Count a sample of `watts` that integrated as `step`.
    pub(crate) fn add(&mut self, watts: f64, step: &Step) {
        self.min_watts = Some(self.min_watts.map_or(watts, |m| m.min(watts)));
        self.max_watts = Some(self.max_watts.map_or(watts, |m| m.max(watts)));
        self.net_joules += step.forward_joules - step.reverse_joules;
        self.seconds += step.seconds;
    }

    /// Time-weighted mean power over the time covered by samples.
    pub(crate) fn avg_watts(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.net_joules / self.seconds)
    }
}

/// One sensor's state as of its last read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// The last reading (possibly an overflow one).
    pub(crate) reading: Option<Reading>,
    /// The last read got a well-formed answer.
    pub up: bool,
    /// The kind of the last failed read.
    pub(crate) last_error: Option<ErrorKind>,
    /// Valid samples since start.
    pub(crate) samples: u64,
    /// Failed reads since start.
    pub(crate) read_errors: u64,
    /// Failed transfers and samples without a valid value since start, by kind (in
    /// [`ErrorKind::ALL`] order).
    pub(crate) errors_by_kind: [u64; ErrorKind::ALL.len()],
    /// Failed transfers tried again at once.
    pub(crate) retries: u64,
    /// Times the chip was programmed again (a brown-out, failures in a row).
    pub(crate) reprograms: u64,
    /// Pauses between samples too long for energy integration to bridge.
    pub(crate) gaps: u64,
    /// Unix time of the last valid sample.
    pub(crate) last_sample_unix: Option<f64>,
    /// Monotonic time of the last valid sample.
    pub(crate) last_sample_at: Option<Instant>,
    /// Power statistics since start.
    pub(crate) stats: PowerStats,
    /// Forward energy, as of the last sample.
    pub energy_joules: f64,
    /// Reverse energy, as of the last sample.
    pub(crate) energy_reverse_joules: f64,
    /// Rules in an episode.
    pub(crate) active: RuleSet,
    /// The battery this sensor measures, as of the last sample.
    pub battery: Option<BatterySnapshot>,
    /// The local day "today" is, and the forward energy at its start.
    pub(crate) day: i64,
    /// The forward total when today began (or when the daemon started, if later).
    pub(crate) day_start_joules: f64,
    /// Unix time each active rule's episode started, in [`Rule::ALL`] order (NaN: inactive).
    pub(crate) anomaly_since: [f64; Rule::ALL.len()],
    /// Episodes started since start, by rule (in [`Rule::ALL`] order).
    pub(crate) episodes: [u64; Rule::ALL.len()],
}

impl Snapshot {
    /// What is saved of the totals.
    pub(crate) fn totals(&self) -> StoredSensor {
        StoredSensor {
            energy_joules: self.energy_joules,
            energy_reverse_joules: self.energy_reverse_joules,
            day: self.day,
            day_start_joules: self.day_start_joules,
        }
    }

    /// Forward energy since local midnight (or since the daemon started today).
    pub(crate) fn energy_today_joules(&self) -> f64 {
        (self.energy_joules - self.day_start_joules).max(0.0)
    }

    /// Count a failed read or a sample without a valid value.
    pub(crate) fn count_error(&mut self, kind: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.errors_by_kind[i] += 1;
        }
        self.read_errors += 1;
        self.last_error = Some(kind);
    }

    /// When the episode of `rule` started, if it is active.
    pub(crate) fn active_since(&self, rule: Rule) -> Option<f64> {
        let i = Rule::ALL.iter().position(|r| *r == rule)?;
        Some(self.anomaly_since[i]).filter(|t| t.is_finite())
    }
}

/// The battery a sensor measures.
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryInfo {
    /// The `battery` label.
    pub(crate) name: String,
    /// The chemistry's name.
    pub(crate) chemistry: &'static str,
    /// Rated capacity, in ampere-hours.
    pub(crate) capacity_ah: f64,
}

/// A sensor as readers see it: what it is, and its latest snapshot.
#[derive(Debug)]
pub struct SensorStatus {
    /// The `sensor` label.
    pub(crate) name: String,
    /// The driver's name.
    pub(crate) driver: &'static str,
    /// The chip's name.
    pub(crate) chip: &'static str,
    /// The bus.
    pub(crate) bus: String,
    /// The chip's address.
    pub(crate) address: u8,
    /// The configured labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Its trims against a reference meter (`[sensor.calibration]`), as this run applies them.
    pub(crate) trim: crate::config::calibration::Trim,
    /// It has some.
    pub(crate) calibrated: bool,
    /// The rules it evaluates.
    pub(crate) rules: RuleSet,
    /// The battery it measures.
    pub(crate) battery: Option<BatteryInfo>,
    /// The sampling interval.
    pub(crate) interval: std::time::Duration,
    /// The totals as of the last save of the state file: what `/metrics` exports.
    pub exported: Exported,
    snapshot: Mutex<Snapshot>,
    history: Mutex<History>,
    /// Why it is down, in a few words, while it is.
    down_reason: Mutex<Option<String>>,
}

impl SensorStatus {
    /// The status of a sensor evaluating `rules`, with its totals so far.
    pub(crate) fn new(
        config: &SensorConfig,
        rules: RuleSet,
        totals: StoredSensor,
    ) -> Arc<SensorStatus> {
        Arc::new(SensorStatus {
            name: config.name.clone(),
            driver: config.driver.as_str(),
            chip: config.chip().as_str(),
            bus: config.bus.clone(),
            address: config.address,
            labels: config.labels.clone(),
            trim: config.calibration,
            calibrated: !config.calibration.is_none(),
            rules,
            battery: config.battery.as_ref().map(|b| BatteryInfo {
                name: b.name.clone(),
                chemistry: b.chemistry.as_str(),
                capacity_ah: b.capacity_ah,
            }),
            interval: config.interval,
            exported: Exported::default(),
            snapshot: Mutex::new(Snapshot {
                energy_joules: totals.energy_joules,
                energy_reverse_joules: totals.energy_reverse_joules,
                day: totals.day,
                day_start_joules: totals.day_start_joules,
                anomaly_since: [f64::NAN; Rule::ALL.len()],
                ..Snapshot::default()
            }),
            history: Mutex::new(History::new(config.interval.as_secs_f64())),
            down_reason: Mutex::new(None),
        })
    }

    /// A copy of the latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace the snapshot.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    /// Count a sample's power into the recent history (no allocation).
    pub(crate) fn record_power(&self, unix: f64, watts: f64) {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(unix, watts);
    }

    /// The recent power after `since` (Unix time), oldest first, and the seconds between
    /// points.
    pub fn history_since(&self, since: f64) -> (Vec<Point>, f64) {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        (history.points_since(since), history.resolution())
    }

    /// The bytes the recent history takes, whatever it holds.
    pub fn history_footprint(&self) -> usize {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .footprint()
    }

    /// Why the sensor is down, while it is.
    pub(crate) fn down_reason(&self) -> Option<String> {
        self.down_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Set (at the start of a failure episode) or clear (when it ends) the reason.
    pub(crate) fn set_down_reason(&self, reason: Option<String>) {
        *self
            .down_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }
}

/// A counter whose value is set from a total kept elsewhere (the state file) instead of being
/// added to: setting the total itself keeps it bit for bit equal to what a restart restores,
/// where adding the difference could land one ulp above it and read as a reset.
///
/// It only ever rises: a lower value is ignored.
#[derive(Debug, Default)]
pub struct SetCounter(AtomicU64);

impl SetCounter {
    /// Raise the counter to `value`, if that is higher.
    pub(crate) fn raise_to(&self, value: f64) {
        // For finite non-negative floats the order of the bit patterns is the numeric order.
        // (Zero needs nothing: the counter starts there; and -0.0 would compare high.)
        if value.is_finite() && value > 0.0 {
            self.0.fetch_max(value.to_bits(), Ordering::Relaxed);
        }
    }

    /// The value.
    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A sensor's totals as the counters on `/metrics` give them: those of the last save of the
/// state file, raised by the persister after each save (see `persist`).
#[derive(Debug, Default)]
pub struct Exported {
    /// `powermon_energy_joules_total`.
    pub(crate) energy_joules: SetCounter,
    /// `powermon_energy_reverse_joules_total`.
    pub(crate) energy_reverse_joules: SetCounter,
    /// `powermon_battery_charge_coulombs_total{direction="in"}`.
    pub(crate) charge_in_coulombs: SetCounter,
    /// `powermon_battery_charge_coulombs_total{direction="out"}`.
    pub(crate) charge_out_coulombs: SetCounter,
    /// `powermon_battery_full_charges_total`.
    pub(crate) full_charges: SetCounter,
}

impl Exported {
    /// Raise the counters to saved totals.
    pub fn raise_to(&self, sensor: &StoredSensor, battery: Option<&StoredBattery>) {
        self.energy_joules.raise_to(sensor.energy_joules);
        self.energy_reverse_joules
            .raise_to(sensor.energy_reverse_joules);
        if let Some(b) = battery {
            self.charge_in_coulombs.raise_to(b.charge_in_coulombs);
            self.charge_out_coulombs.raise_to(b.charge_out_coulombs);
            self.full_charges.raise_to(b.full_charges as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_counter_never_goes_down() {
        let c = SetCounter::default();
        c.raise_to(5.5);
        c.raise_to(2.0);
        c.raise_to(f64::NAN);
        c.raise_to(-0.0);
        c.raise_to(-7.0);
        assert_eq!(c.get(), 5.5);
        c.raise_to(5.500_000_000_000_001);
        assert_eq!(c.get(), 5.500_000_000_000_001);
    }
}
