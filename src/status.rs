//! What the sampler publishes about each sensor for the status page, `/api/readings` and the
//! state file: a small `Copy` snapshot behind a mutex held only for the copy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::anomaly::RuleSet;
use crate::battery::BatterySnapshot;
use crate::config::SensorConfig;
use crate::energy::Step;
use crate::sensor::{ErrorKind, Reading};

/// Power statistics since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PowerStats {
    /// The lowest power seen.
    pub min_watts: Option<f64>,
    /// The highest power seen.
    pub max_watts: Option<f64>,
    /// Signed energy over `seconds` (forward minus reverse), for the time-weighted mean.
    net_joules: f64,
    seconds: f64,
}

impl PowerStats {
    /// Count a sample of `watts` that integrated as `step`.
    pub fn add(&mut self, watts: f64, step: &Step) {
        self.min_watts = Some(self.min_watts.map_or(watts, |m| m.min(watts)));
        self.max_watts = Some(self.max_watts.map_or(watts, |m| m.max(watts)));
        self.net_joules += step.forward_joules - step.reverse_joules;
        self.seconds += step.seconds;
    }

    /// Time-weighted mean power over the time covered by samples.
    pub fn avg_watts(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.net_joules / self.seconds)
    }
}

/// One sensor's state as of its last read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// The last reading (possibly an overflow one).
    pub reading: Option<Reading>,
    /// The last read got a well-formed answer.
    pub up: bool,
    /// The kind of the last failed read.
    pub last_error: Option<ErrorKind>,
    /// Valid samples since start.
    pub samples: u64,
    /// Failed reads since start.
    pub read_errors: u64,
    /// Unix time of the last valid sample.
    pub last_sample_unix: Option<f64>,
    /// Monotonic time of the last valid sample.
    pub last_sample_at: Option<Instant>,
    /// Power statistics since start.
    pub stats: PowerStats,
    /// Forward energy, as of the last sample.
    pub energy_joules: f64,
    /// Reverse energy, as of the last sample.
    pub energy_reverse_joules: f64,
    /// Rules in an episode.
    pub active: RuleSet,
    /// The battery this sensor measures, as of the last sample.
    pub battery: Option<BatterySnapshot>,
}

/// The battery a sensor measures.
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryInfo {
    /// The `battery` label.
    pub name: String,
    /// The chemistry's name.
    pub chemistry: &'static str,
    /// Rated capacity, in ampere-hours.
    pub capacity_ah: f64,
}

/// A sensor as readers see it: what it is, and its latest snapshot.
#[derive(Debug)]
pub struct SensorStatus {
    /// The `sensor` label.
    pub name: String,
    /// The driver's name.
    pub driver: &'static str,
    /// The bus.
    pub bus: String,
    /// The chip's address.
    pub address: u8,
    /// The configured labels.
    pub labels: BTreeMap<String, String>,
    /// The rules it evaluates.
    pub rules: RuleSet,
    /// The battery it measures.
    pub battery: Option<BatteryInfo>,
    snapshot: Mutex<Snapshot>,
    /// Why it is down, in a few words, while it is.
    down_reason: Mutex<Option<String>>,
}

impl SensorStatus {
    /// The status of a sensor evaluating `rules`, with its totals (forward, reverse) so far.
    pub fn new(config: &SensorConfig, rules: RuleSet, energy: (f64, f64)) -> Arc<SensorStatus> {
        Arc::new(SensorStatus {
            name: config.name.clone(),
            driver: config.driver.as_str(),
            bus: config.bus.clone(),
            address: config.address,
            labels: config.labels.clone(),
            rules,
            battery: config.battery.as_ref().map(|b| BatteryInfo {
                name: b.name.clone(),
                chemistry: b.chemistry.as_str(),
                capacity_ah: b.capacity_ah,
            }),
            snapshot: Mutex::new(Snapshot {
                energy_joules: energy.0,
                energy_reverse_joules: energy.1,
                ..Snapshot::default()
            }),
            down_reason: Mutex::new(None),
        })
    }

    /// A copy of the latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace the snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    /// Why the sensor is down, while it is.
    pub fn down_reason(&self) -> Option<String> {
        self.down_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Set (at the start of a failure episode) or clear (when it ends) the reason.
    pub fn set_down_reason(&self, reason: Option<String>) {
        *self
            .down_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }
}
