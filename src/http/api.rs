//! `/api/readings`: every sensor's latest reading, statistics since start, energy and
//! anomalies, and every battery's state of charge, as JSON (the status page's data).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::App;
use crate::board::SensorStatus;
use crate::energy::JOULES_PER_KWH;

/// `/api/readings`: the status page's data.
#[derive(Serialize)]
pub(crate) struct Readings<'a> {
    pub(crate) version: &'a str,
    pub(crate) uptime_seconds: f64,
    pub(crate) sampling_healthy: bool,
    pub(crate) sensors: Vec<SensorReading<'a>>,
    pub(crate) batteries: Vec<BatteryReading<'a>>,
}

/// A battery: `discharging` and `charging` follow the averaged current beyond the battery's
/// `current_threshold_amps` (as time to go does), whether or not the state of charge is known; JSON has no infinity, so a time to go without
/// limit is `null`; every value that is not known is `null`.
#[derive(Serialize)]
pub(crate) struct BatteryReading<'a> {
    pub(crate) name: &'a str,
    pub(crate) sensor: &'a str,
    pub(crate) chemistry: &'static str,
    pub(crate) capacity_ah: f64,
    pub(crate) state_of_charge: Option<f64>,
    pub(crate) state_of_charge_uncertainty: Option<f64>,
    pub(crate) synchronized: bool,
    pub(crate) discharging: bool,
    pub(crate) charging: bool,
    pub(crate) time_to_go_seconds: Option<f64>,
    pub(crate) average_current_amperes: f64,
    pub(crate) consumed_ah: Option<f64>,
    pub(crate) charge_in_ah: f64,
    pub(crate) charge_out_ah: f64,
    pub(crate) full_charges: u64,
    pub(crate) last_full_charge_timestamp_seconds: Option<f64>,
}

/// Coulombs per ampere-hour.
const COULOMBS_PER_AH: f64 = 3600.0;

fn battery<'a>(status: &'a SensorStatus) -> Option<BatteryReading<'a>> {
    let info = status.battery.as_ref()?;
    let b = status.snapshot().battery?;
    let s = &b.stored;
    Some(BatteryReading {
        name: &info.name,
        sensor: &status.name,
        chemistry: info.chemistry,
        capacity_ah: info.capacity_ah,
        state_of_charge: b.state_of_charge,
        state_of_charge_uncertainty: b.uncertainty(),
        synchronized: b.synchronized(),
        discharging: b.discharging,
        charging: b.charging,
        time_to_go_seconds: b.time_to_go_seconds.and_then(finite),
        average_current_amperes: b.average_current_amperes,
        consumed_ah: b
            .state_of_charge
            .map(|_| s.below_full_coulombs / COULOMBS_PER_AH),
        charge_in_ah: s.charge_in_coulombs / COULOMBS_PER_AH,
        charge_out_ah: s.charge_out_coulombs / COULOMBS_PER_AH,
        full_charges: s.full_charges,
        last_full_charge_timestamp_seconds: (s.full_charges > 0).then_some(s.reference_unix),
    })
}

/// A sensor's trims, as `[sensor.calibration]` names them.
#[derive(Serialize)]
pub(crate) struct Calibration {
    pub(crate) current_gain: f64,
    pub(crate) current_offset_amps: f64,
    pub(crate) voltage_gain: f64,
}

#[derive(Serialize)]
pub(crate) struct SensorReading<'a> {
    pub(crate) name: &'a str,
    /// Trimmed against a reference meter (`[sensor.calibration]`).
    pub(crate) calibrated: bool,
    /// The trims this run applies (`calibrate` takes them off again).
    pub(crate) calibration: Option<Calibration>,
    pub(crate) driver: &'a str,
    pub(crate) bus: &'a str,
    pub(crate) address: String,
    pub(crate) labels: &'a BTreeMap<String, String>,
    pub(crate) up: bool,
    pub(crate) down_reason: Option<String>,
    pub(crate) last_error: Option<&'static str>,
    pub(crate) interval_seconds: f64,
    pub(crate) bus_voltage_volts: Option<f64>,
    pub(crate) shunt_voltage_volts: Option<f64>,
    pub(crate) current_amperes: Option<f64>,
    pub(crate) power_watts: Option<f64>,
    pub(crate) overflow: bool,
    pub(crate) power_avg_watts: Option<f64>,
    pub(crate) power_min_watts: Option<f64>,
    pub(crate) power_max_watts: Option<f64>,
    pub(crate) energy_joules: f64,
    pub(crate) energy_kwh: f64,
    pub(crate) energy_reverse_joules: f64,
    pub(crate) energy_today_joules: f64,
    pub(crate) energy_today_kwh: f64,
    pub(crate) samples: u64,
    pub(crate) read_errors: u64,
    pub(crate) last_sample_timestamp_seconds: Option<f64>,
    pub(crate) last_sample_age_seconds: Option<f64>,
    pub(crate) anomalies_active: Vec<&'static str>,
    pub(crate) anomalies: Vec<ActiveAnomaly>,
    pub(crate) rules: Vec<&'static str>,
}

/// An anomaly in an episode, and since when (Unix time).
#[derive(Serialize)]
pub(crate) struct ActiveAnomaly {
    pub(crate) rule: &'static str,
    pub(crate) since: Option<f64>,
}

/// `/api/history`: recent power per sensor, oldest first, as `[unix, watts]` pairs (`null`
/// watts: the shunt saturated).
#[derive(Serialize)]
pub(crate) struct History<'a> {
    pub(crate) points_per_sensor: usize,
    pub(crate) sensors: BTreeMap<&'a str, SensorHistory>,
}

#[derive(Serialize)]
pub(crate) struct SensorHistory {
    pub(crate) resolution_seconds: f64,
    pub(crate) points: Vec<(f64, Option<f32>)>,
}

/// The history of `sensors` after `since`; `None` if `only` names no sensor.
pub(crate) fn history<'a>(
    sensors: &'a [Arc<SensorStatus>],
    only: Option<&str>,
    since: f64,
) -> Option<History<'a>> {
    if only.is_some_and(|n| !sensors.iter().any(|s| s.name == n)) {
        return None;
    }
    let sensors = sensors
        .iter()
        .filter(|s| only.is_none_or(|n| s.name == n))
        .map(|s| {
            let (points, resolution) = s.history_since(since);
            let points = points
                .into_iter()
                .map(|p| (p.unix, Some(p.watts).filter(|w| w.is_finite())))
                .collect();
            (
                s.name.as_str(),
                SensorHistory {
                    resolution_seconds: resolution,
                    points,
                },
            )
        })
        .collect();
    Some(History {
        points_per_sensor: crate::board::history::POINTS,
        sensors,
    })
}

/// JSON has no NaN: an unknown value is null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The readings of `sensors`, as of now.
pub(crate) fn readings<'a>(app: &'a App, sensors: &'a [Arc<SensorStatus>]) -> Readings<'a> {
    let now = Instant::now();
    Readings {
        version: app.version,
        uptime_seconds: now.duration_since(app.started).as_secs_f64(),
        sampling_healthy: app.health.healthy(),
        sensors: sensors
            .iter()
            .map(|s| {
                let snap = s.snapshot();
                let r = snap.reading;
                SensorReading {
                    name: &s.name,
                    calibrated: s.calibrated,
                    calibration: s.calibrated.then_some(Calibration {
                        current_gain: s.trim.current_gain,
                        current_offset_amps: s.trim.current_offset_amps,
                        voltage_gain: s.trim.voltage_gain,
                    }),
                    driver: s.driver,
                    bus: &s.bus,
                    address: format!("{:#04x}", s.address),
                    labels: &s.labels,
                    up: snap.up,
                    down_reason: if snap.up { None } else { s.down_reason() },
                    last_error: snap.last_error.map(|k| k.as_str()),
                    interval_seconds: s.interval.as_secs_f64(),
                    bus_voltage_volts: r.and_then(|r| finite(r.bus_voltage_volts)),
                    shunt_voltage_volts: r.and_then(|r| finite(r.shunt_voltage_volts)),
                    current_amperes: r.and_then(|r| finite(r.current_amperes)),
                    power_watts: r.and_then(|r| finite(r.power_watts)),
                    overflow: r.is_some_and(|r| r.overflow),
                    power_avg_watts: snap.stats.avg_watts(),
                    power_min_watts: snap.stats.min_watts,
                    power_max_watts: snap.stats.max_watts,
                    energy_joules: snap.energy_joules,
                    energy_kwh: snap.energy_joules / JOULES_PER_KWH,
                    energy_reverse_joules: snap.energy_reverse_joules,
                    energy_today_joules: snap.energy_today_joules(),
                    energy_today_kwh: snap.energy_today_joules() / JOULES_PER_KWH,
                    samples: snap.samples,
                    read_errors: snap.read_errors,
                    last_sample_timestamp_seconds: snap.last_sample_unix,
                    last_sample_age_seconds: snap
                        .last_sample_at
                        .map(|at| now.saturating_duration_since(at).as_secs_f64()),
                    anomalies_active: snap.active.iter().map(|r| r.as_str()).collect(),
                    anomalies: snap
                        .active
                        .iter()
                        .map(|r| ActiveAnomaly {
                            rule: r.as_str(),
                            since: snap.active_since(r),
                        })
                        .collect(),
                    rules: s.rules.iter().map(|r| r.as_str()).collect(),
                }
            })
            .collect(),
        batteries: sensors.iter().filter_map(|s| battery(s)).collect(),
    }
}
