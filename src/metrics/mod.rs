//! The metric families (the metrics contract in the README) and the per-sensor handles the
//! sampler updates.
//!
//! Handles are resolved once per sensor; on the sampling path an update is an atomic store or
//! add, with no label lookup and no allocation. Exposition gathers the registry, which reads
//! those atomics: the samplers are never locked for it. A reload adds and removes sensors'
//! series; the energy counters of a sensor that stays are never recreated.

mod battery;
mod families;
mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub use self::battery::BatteryGauges;
pub use self::families::{InfoFamily, SetCounter, SetCounterVec};
use self::text::{Family, Kind};
use crate::anomaly::{Rule, RuleSet};
use crate::config::SensorConfig;
use crate::sensor::ErrorKind;
use crate::state::{StoredBattery, StoredSensor as StoredTotals};
use crate::status::SensorStatus;

/// `powermon_bus_voltage_volts`: name and help.
const BUS_VOLTAGE: (&str, &str) = (
    "powermon_bus_voltage_volts",
    "Voltage from IN- to ground at the last sample (the load side of the shunt).",
);

/// `powermon_shunt_voltage_volts`: name and help.
const SHUNT_VOLTAGE: (&str, &str) = (
    "powermon_shunt_voltage_volts",
    "Voltage across the shunt at the last sample.",
);

/// `powermon_current_amperes`: name and help.
const CURRENT: (&str, &str) = (
    "powermon_current_amperes",
    "Current through the shunt at the last sample; negative when it flows backwards; NaN while the shunt is saturated.",
);

/// `powermon_power_watts`: name and help.
const POWER: (&str, &str) = (
    "powermon_power_watts",
    "Power at the last sample (bus voltage times current); NaN while the shunt is saturated.",
);

/// `powermon_samples_total`: name and help.
const SAMPLES: (&str, &str) = ("powermon_samples_total", "Valid samples taken.");

/// `powermon_read_errors_total`: name and help.
const READ_ERRORS: (&str, &str) = (
    "powermon_read_errors_total",
    "Failures, by kind: failed I2C transfers (nack, timeout, i2c, unavailable; each one, including those a retry made good), and samples without a valid value (invalid, overflow, stale).",
);

/// `powermon_sensor_recoveries_total`: name and help.
const RECOVERIES: (&str, &str) = (
    "powermon_sensor_recoveries_total",
    "What the daemon did about bus faults, by action: retry (a failed transfer tried again at once), reprogram (the chip's settings written again after a brown-out or failures in a row).",
);

/// `powermon_sensor_up`: name and help.
const UP: (&str, &str) = (
    "powermon_sensor_up",
    "1 if the last read got a well-formed answer from the chip, else 0.",
);

/// `powermon_last_sample_timestamp_seconds`: name and help.
const LAST_SAMPLE: (&str, &str) = (
    "powermon_last_sample_timestamp_seconds",
    "Unix time of the last valid sample.",
);

/// `powermon_anomaly_active`: name and help.
const ANOMALY_ACTIVE: (&str, &str) = (
    "powermon_anomaly_active",
    "1 while an anomaly rule is in an episode, else 0.",
);

/// `powermon_anomalies_total`: name and help.
const ANOMALIES: (&str, &str) = (
    "powermon_anomalies_total",
    "Anomaly episodes started, by rule.",
);

/// `powermon_integration_gaps_total`: name and help.
const GAPS: (&str, &str) = (
    "powermon_integration_gaps_total",
    "Pauses between samples longer than max_gap, which energy integration did not bridge.",
);

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Every metric family of the daemon, in one registry.
///
/// Exposition ([`Metrics::encode`]) writes the families with a series per sensor or battery
/// itself ([`text`]) and gathers only the few others (`rest`) through the crate's encoder.
pub struct Metrics {
    /// Every family: the crate's own exposition of it is the reference ([`Metrics::encode_reference`]).
    registry: Registry,
    /// The families [`Metrics::encode`] leaves to the crate's encoder.
    rest: Registry,
    /// Each sensor's handles and label set, for exposition.
    sensors: Mutex<BTreeMap<String, SensorSeries>>,
    /// The size of the last exposition, to size the next one's buffer.
    last_len: AtomicUsize,
    bus_voltage: GaugeVec,
    shunt_voltage: GaugeVec,
    current: GaugeVec,
    power: GaugeVec,
    energy: SetCounterVec,
    energy_reverse: SetCounterVec,
    /// Unix time of the last save of the state file.
    pub state_last_persist: Gauge,
    /// Saves of the state file that failed.
    pub state_persist_failures: IntCounter,
    samples: IntCounterVec,
    read_errors: IntCounterVec,
    recoveries: IntCounterVec,
    up: GaugeVec,
    last_sample: GaugeVec,
    anomaly_active: GaugeVec,
    anomalies: IntCounterVec,
    gaps: IntCounterVec,
    sensor_info: InfoFamily,
    battery_charge: SetCounterVec,
    battery_full_charges: SetCounterVec,
    battery_gauges: BatteryGauges,
    mqtt: std::sync::OnceLock<crate::mqtt::MqttMetrics>,
    /// 1 if the last reload applied the configuration file.
    pub reload_successful: Gauge,
    /// Unix time of the last successful reload (or of the start).
    pub reload_success_time: Gauge,
}

/// The handles of one sensor's series.
#[derive(Clone)]
pub struct SensorMetrics {
    /// `powermon_bus_voltage_volts`.
    pub bus_voltage: Gauge,
    /// `powermon_shunt_voltage_volts`.
    pub shunt_voltage: Gauge,
    /// `powermon_current_amperes`.
    pub current: Gauge,
    /// `powermon_power_watts`.
    pub power: Gauge,
    /// `powermon_samples_total`.
    pub samples: IntCounter,
    read_errors: [IntCounter; ErrorKind::ALL.len()],
    /// `powermon_sensor_recoveries_total{action="retry"}`.
    pub retries: IntCounter,
    /// `powermon_sensor_recoveries_total{action="reprogram"}`.
    pub reprograms: IntCounter,
    /// `powermon_sensor_up`.
    pub up: Gauge,
    /// `powermon_last_sample_timestamp_seconds`.
    pub last_sample: Gauge,
    anomaly_active: [Option<Gauge>; Rule::ALL.len()],
    anomalies: [Option<IntCounter>; Rule::ALL.len()],
    /// `powermon_integration_gaps_total`.
    pub gaps: IntCounter,
}

impl SensorMetrics {
    /// `powermon_read_errors_total` of one kind.
    pub fn read_error(&self, kind: ErrorKind) -> &IntCounter {
        let i = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.read_errors[i]
    }

    /// Mark a rule's episode as started or cleared; a start is counted once.
    pub fn anomaly(&self, rule: Rule, started: bool) {
        if let Some(g) = &self.anomaly_active[rule as usize] {
            g.set(if started { 1.0 } else { 0.0 });
        }
        if started {
            if let Some(c) = &self.anomalies[rule as usize] {
                c.inc();
            }
        }
    }
}

/// A family with one series per sensor: its name and help, and how to read a sensor's value.
type PerSensor<T> = ((&'static str, &'static str), fn(&SensorMetrics) -> T);

/// A sensor's series as exposition writes them.
struct SensorSeries {
    /// `sensor="name"`, escaped.
    labels: Vec<u8>,
    handles: SensorMetrics,
}

/// Register a family made for the registry of every family and for `rest`.
fn register_both<C>(
    registry: &Registry,
    rest: &Registry,
    made: prometheus::Result<C>,
) -> prometheus::Result<C>
where
    C: Collector + Clone + 'static,
{
    let family = register(registry, made)?;
    rest.register(Box::new(family.clone()))?;
    Ok(family)
}

/// Register a freshly made metric family and hand it back.
fn register<C>(registry: &Registry, made: prometheus::Result<C>) -> prometheus::Result<C>
where
    C: Collector + Clone + 'static,
{
    let family = made?;
    registry.register(Box::new(family.clone()))?;
    Ok(family)
}

impl Metrics {
    /// Register every family, `powermon_build_info` and the process collector.
    pub fn new(version: &str, revision: &str) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let rest = Registry::new();
        let s = &["sensor"];
        let build_info = register_both(&r, &rest, GaugeVec::new(Opts::new("powermon_build_info", "A metric with a constant value of 1, labelled with the version and git revision of power-monitord."), &["version", "revision"]))?;
        build_info.with_label_values(&[version, revision]).set(1.0);

        let metrics = Metrics {
            bus_voltage: register(&r, GaugeVec::new(Opts::new(BUS_VOLTAGE.0, BUS_VOLTAGE.1), s))?,
            shunt_voltage: register(&r, GaugeVec::new(Opts::new(SHUNT_VOLTAGE.0, SHUNT_VOLTAGE.1), s))?,
            current: register(&r, GaugeVec::new(Opts::new(CURRENT.0, CURRENT.1), s))?,
            power: register(&r, GaugeVec::new(Opts::new(POWER.0, POWER.1), s))?,
            energy: register(&r, SetCounterVec::new("powermon_energy_joules_total", "Energy drawn through the shunt in the forward direction, integrated over time, as of the last save of the state file (it never goes backwards, across restarts, crashes and power cuts).", s))?,
            energy_reverse: register(&r, SetCounterVec::new("powermon_energy_reverse_joules_total", "Energy that flowed backwards through the shunt (negative power), e.g. charging, as of the last save of the state file.", s))?,
            state_last_persist: register_both(&r, &rest, Gauge::new("powermon_state_last_persist_timestamp_seconds", "Unix time of the last successful save of the energy totals to the state file; the energy counters hold the values of that save."))?,
            state_persist_failures: register_both(&r, &rest, IntCounter::new("powermon_state_persist_failures_total", "Saves of the energy totals to the state file that failed."))?,
            samples: register(&r, IntCounterVec::new(Opts::new(SAMPLES.0, SAMPLES.1), s))?,
            read_errors: register(&r, IntCounterVec::new(Opts::new(READ_ERRORS.0, READ_ERRORS.1), &["sensor", "kind"]))?,
            recoveries: register(&r, IntCounterVec::new(Opts::new(RECOVERIES.0, RECOVERIES.1), &["sensor", "action"]))?,
            up: register(&r, GaugeVec::new(Opts::new(UP.0, UP.1), s))?,
            last_sample: register(&r, GaugeVec::new(Opts::new(LAST_SAMPLE.0, LAST_SAMPLE.1), s))?,
            anomaly_active: register(&r, GaugeVec::new(Opts::new(ANOMALY_ACTIVE.0, ANOMALY_ACTIVE.1), &["sensor", "rule"]))?,
            anomalies: register(&r, IntCounterVec::new(Opts::new(ANOMALIES.0, ANOMALIES.1), &["sensor", "rule"]))?,
            gaps: register(&r, IntCounterVec::new(Opts::new(GAPS.0, GAPS.1), s))?,
            sensor_info: register(&r, InfoFamily::new("powermon_sensor_info", "A metric with a constant value of 1 per configured sensor, labelled with its driver, chip, bus, address and configured labels."))?,
            battery_charge: register(&r, SetCounterVec::new("powermon_battery_charge_coulombs_total", "Charge through the battery's shunt by direction (in: charging, out: discharging), as measured, as of the last save of the state file.", &["battery", "direction"]))?,
            battery_full_charges: register(&r, SetCounterVec::new("powermon_battery_full_charges_total", "Full charges detected (charged voltage and tail current held for the detection time), as of the last save of the state file.", &["battery"]))?,
            battery_gauges: register(&r, BatteryGauges::new())?,
            mqtt: std::sync::OnceLock::new(),
            reload_successful: register_both(&r, &rest, Gauge::new("powermon_config_last_reload_successful", "1 if the last reload of the configuration file was applied, 0 if it was refused (the daemon runs on the previous one)."))?,
            reload_success_time: register_both(&r, &rest, Gauge::new("powermon_config_last_reload_success_timestamp_seconds", "Unix time of the last successful load of the configuration file (at start or by a reload)."))?,
            registry: r,
            rest,
            sensors: Mutex::new(BTreeMap::new()),
            last_len: AtomicUsize::new(16 * 1024),
        };
        metrics.reload_successful.set(1.0);

        #[cfg(target_os = "linux")]
        for registry in [&metrics.registry, &metrics.rest] {
            registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))?;
        }
        Ok(metrics)
    }

    /// Create a sensor's series (at zero, so rates work from the first scrape; the energy
    /// counters at their saved totals if they exist already) and return the handles to them.
    pub fn sensor(&self, sensor: &SensorConfig, rules: RuleSet) -> SensorMetrics {
        let name = sensor.name.as_str();
        let mut info = sensor.labels.clone();
        for (key, value) in [
            ("sensor", name.to_string()),
            ("driver", sensor.driver.as_str().to_string()),
            ("chip", sensor.chip().as_str().to_string()),
            ("bus", sensor.bus.clone()),
            ("address", format!("{:#04x}", sensor.address)),
        ] {
            info.insert(key.to_string(), value);
        }
        self.sensor_info.set(name, info);
        self.published_energy(name, StoredTotals::default());

        let rule_gauge = |r: Rule| {
            rules
                .contains(r)
                .then(|| self.anomaly_active.with_label_values(&[name, r.as_str()]))
        };
        let rule_counter = |r: Rule| {
            rules
                .contains(r)
                .then(|| self.anomalies.with_label_values(&[name, r.as_str()]))
        };
        let handles = SensorMetrics {
            bus_voltage: self.bus_voltage.with_label_values(&[name]),
            shunt_voltage: self.shunt_voltage.with_label_values(&[name]),
            current: self.current.with_label_values(&[name]),
            power: self.power.with_label_values(&[name]),
            samples: self.samples.with_label_values(&[name]),
            read_errors: ErrorKind::ALL
                .map(|k| self.read_errors.with_label_values(&[name, k.as_str()])),
            retries: self.recoveries.with_label_values(&[name, "retry"]),
            reprograms: self.recoveries.with_label_values(&[name, "reprogram"]),
            up: self.up.with_label_values(&[name]),
            last_sample: self.last_sample.with_label_values(&[name]),
            anomaly_active: Rule::ALL.map(rule_gauge),
            anomalies: Rule::ALL.map(rule_counter),
            gaps: self.gaps.with_label_values(&[name]),
        };
        let series = SensorSeries {
            labels: text::labels([("sensor", name)]),
            handles: handles.clone(),
        };
        lock(&self.sensors).insert(name.to_string(), series);
        handles
    }

    /// Drop every series of a sensor: it is no longer configured. With `keep_energy`, its
    /// energy counters stay (the sensor is about to come back with other settings).
    pub fn remove_sensor(&self, name: &str, keep_energy: bool) {
        for family in [
            &self.bus_voltage,
            &self.shunt_voltage,
            &self.current,
            &self.power,
            &self.up,
            &self.last_sample,
        ] {
            let _ = family.remove_label_values(&[name]);
        }
        for family in [&self.samples, &self.gaps] {
            let _ = family.remove_label_values(&[name]);
        }
        for kind in ErrorKind::ALL {
            let _ = self.read_errors.remove_label_values(&[name, kind.as_str()]);
        }
        for action in ["retry", "reprogram"] {
            let _ = self.recoveries.remove_label_values(&[name, action]);
        }
        for rule in Rule::ALL {
            let _ = self
                .anomaly_active
                .remove_label_values(&[name, rule.as_str()]);
            let _ = self.anomalies.remove_label_values(&[name, rule.as_str()]);
        }
        self.sensor_info.remove(name);
        lock(&self.sensors).remove(name);
        if !keep_energy {
            self.energy.remove(&[name]);
            self.energy_reverse.remove(&[name]);
        }
    }

    /// The exported energy counters of a sensor (forward, reverse), created or raised to
    /// `floor` in one step.
    pub fn published_energy(
        &self,
        sensor: &str,
        floor: StoredTotals,
    ) -> (Arc<SetCounter>, Arc<SetCounter>) {
        (
            self.energy
                .with_label_values_at(&[sensor], floor.energy_joules),
            self.energy_reverse
                .with_label_values_at(&[sensor], floor.energy_reverse_joules),
        )
    }

    /// The exported battery counters (charge in, charge out, full charges), created or raised
    /// to `floor` in one step.
    pub fn published_battery(&self, battery: &str, floor: &StoredBattery) -> [Arc<SetCounter>; 3] {
        [
            self.battery_charge
                .with_label_values_at(&[battery, "in"], floor.charge_in_coulombs),
            self.battery_charge
                .with_label_values_at(&[battery, "out"], floor.charge_out_coulombs),
            self.battery_full_charges
                .with_label_values_at(&[battery], floor.full_charges as f64),
        ]
    }

    /// Drop a battery's counters: it is no longer configured.
    pub fn remove_battery(&self, battery: &str) {
        self.battery_charge.remove(&[battery, "in"]);
        self.battery_charge.remove(&[battery, "out"]);
        self.battery_full_charges.remove(&[battery]);
    }

    /// The exported energy counters of `sensor` (forward, reverse): the saved totals.
    pub fn exported_energy(&self, sensor: &str) -> (f64, f64) {
        (
            self.energy.get(&[sensor]).unwrap_or(0.0),
            self.energy_reverse.get(&[sensor]).unwrap_or(0.0),
        )
    }

    /// The MQTT metrics, registered the first time MQTT is started (without `[mqtt]` there
    /// are none).
    pub fn mqtt(&self) -> crate::mqtt::MqttMetrics {
        self.mqtt
            .get_or_init(|| {
                let connected = IntGauge::new(
                    "powermon_mqtt_connected",
                    "1 while the MQTT broker is connected, else 0.",
                )
                .expect("a valid metric name");
                let messages = IntCounterVec::new(
                    Opts::new(
                        "powermon_mqtt_messages_total",
                        "MQTT messages by result: sent (handed to the broker's connection), dropped (the queue was full while the broker was away or slow).",
                    ),
                    &["result"],
                )
                .expect("a valid metric name");
                let registered = register_both(&self.registry, &self.rest, Ok(connected.clone()))
                    .and_then(|_| register_both(&self.registry, &self.rest, Ok(messages.clone())));
                if let Err(e) = registered {
                    log::error!("cannot register the MQTT metrics: {e}");
                }
                crate::mqtt::MqttMetrics {
                    connected,
                    sent: messages.with_label_values(&["sent"]),
                    dropped: messages.with_label_values(&["dropped"]),
                }
            })
            .clone()
    }

    /// The sensors whose batteries the battery gauges report.
    pub fn set_statuses(&self, statuses: Vec<Arc<SensorStatus>>) {
        self.battery_gauges.set_statuses(statuses);
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.last_len.load(Ordering::Relaxed) + 1024);
        self.render_sensors(&mut out);
        self.energy.render(&mut out);
        self.energy_reverse.render(&mut out);
        self.battery_charge.render(&mut out);
        self.battery_full_charges.render(&mut out);
        self.battery_gauges.render(&mut out);
        self.sensor_info.render(&mut out);
        let rest = encode_with_crate(&self.rest);
        out.extend_from_slice(&rest);
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// The same exposition written by the `prometheus` crate's own `gather` and encoder: the
    /// reference [`Metrics::encode`] is checked against, and a baseline for the benches.
    pub fn encode_reference(&self) -> Vec<u8> {
        encode_with_crate(&self.registry)
    }

    /// The families with a series per sensor.
    fn render_sensors(&self, out: &mut Vec<u8>) {
        let sensors = lock(&self.sensors);
        let all = || sensors.values();
        let gauges: [PerSensor<f64>; 6] = [
            (BUS_VOLTAGE, |m| m.bus_voltage.get()),
            (CURRENT, |m| m.current.get()),
            (LAST_SAMPLE, |m| m.last_sample.get()),
            (POWER, |m| m.power.get()),
            (UP, |m| m.up.get()),
            (SHUNT_VOLTAGE, |m| m.shunt_voltage.get()),
        ];
        for (family, value) in gauges {
            let mut f = Family::new(out, family, Kind::Gauge);
            for s in all() {
                f.sample(&s.labels, value(&s.handles));
            }
        }
        let counters: [PerSensor<u64>; 2] =
            [(GAPS, |m| m.gaps.get()), (SAMPLES, |m| m.samples.get())];
        for (family, value) in counters {
            let mut f = Family::new(out, family, Kind::Counter);
            for s in all() {
                f.sample(&s.labels, value(&s.handles) as f64);
            }
        }
        let mut f = Family::new(out, READ_ERRORS, Kind::Counter);
        for s in all() {
            for kind in ErrorKind::ALL {
                let n = s.handles.read_error(kind).get() as f64;
                f.sample_with(&s.labels, ("kind", kind.as_str()), n);
            }
        }
        let mut f = Family::new(out, RECOVERIES, Kind::Counter);
        for s in all() {
            for (action, c) in [
                ("retry", &s.handles.retries),
                ("reprogram", &s.handles.reprograms),
            ] {
                f.sample_with(&s.labels, ("action", action), c.get() as f64);
            }
        }
        let mut f = Family::new(out, ANOMALY_ACTIVE, Kind::Gauge);
        for s in all() {
            for (rule, g) in Rule::ALL.iter().zip(&s.handles.anomaly_active) {
                if let Some(g) = g {
                    f.sample_with(&s.labels, ("rule", rule.as_str()), g.get());
                }
            }
        }
        let mut f = Family::new(out, ANOMALIES, Kind::Counter);
        for s in all() {
            for (rule, c) in Rule::ALL.iter().zip(&s.handles.anomalies) {
                if let Some(c) = c {
                    f.sample_with(&s.labels, ("rule", rule.as_str()), c.get() as f64);
                }
            }
        }
    }
}

/// The exposition of `registry` by the crate's own encoder.
fn encode_with_crate(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * 1024);
    // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug here.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        log::error!("encoding metrics failed: {e}");
    }
    spell_infinities(out)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The encoder writes infinities as Rust prints them (`inf`); the exposition format spells
/// them `+Inf` and `-Inf`. A value ends its line (label values escape their newlines), so
/// only a line's last word can be one.
fn spell_infinities(text: Vec<u8>) -> Vec<u8> {
    if !text.windows(4).any(|w| w == b"inf\n") {
        return text;
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    for line in text.split_inclusive(|b| *b == b'\n') {
        if let Some(head) = line.strip_suffix(b" inf\n") {
            out.extend_from_slice(head);
            out.extend_from_slice(b" +Inf\n");
        } else if let Some(head) = line.strip_suffix(b" -inf\n") {
            out.extend_from_slice(head);
            out.extend_from_slice(b" -Inf\n");
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinities_are_spelled_as_the_exposition_format_says() {
        let text = b"a 1\nb{x=\"inf\"} inf\nc -inf\nd NaN\n".to_vec();
        assert_eq!(
            String::from_utf8(spell_infinities(text)).unwrap(),
            "a 1\nb{x=\"inf\"} +Inf\nc -Inf\nd NaN\n"
        );
    }
}
