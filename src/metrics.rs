//! The metric families (the metrics contract in the README) and the per-sensor handles the
//! sampler updates.
//!
//! Handles are resolved once per sensor at start-up; on the sampling path an update is an
//! atomic store or add, with no label lookup and no allocation. Exposition gathers the
//! registry, which reads those atomics: the samplers are never locked for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::anomaly::{Rule, RuleSet};
use crate::config::{Config, SensorConfig};
use crate::sensor::ErrorKind;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Every metric family of the daemon, in one registry.
pub struct Metrics {
    registry: Registry,
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
    up: GaugeVec,
    last_sample: GaugeVec,
    anomaly_active: GaugeVec,
    anomalies: IntCounterVec,
    gaps: IntCounterVec,
    sensor_info: GaugeVec,
    info_label_names: Vec<String>,
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
    pub fn new(config: &Config, version: &str, revision: &str) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let s = &["sensor"];
        let info_label_names: Vec<String> = config
            .sensors
            .iter()
            .flat_map(|sensor| sensor.labels.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut info_labels = vec!["sensor", "driver", "bus", "address"];
        info_labels.extend(info_label_names.iter().map(String::as_str));

        let build_info = register(&r, GaugeVec::new(Opts::new("powermon_build_info", "A metric with a constant value of 1, labelled with the version and git revision of power-monitord."), &["version", "revision"]))?;
        build_info.with_label_values(&[version, revision]).set(1.0);

        let metrics = Metrics {
            bus_voltage: register(&r, GaugeVec::new(Opts::new("powermon_bus_voltage_volts", "Voltage from IN- to ground at the last sample (the load side of the shunt)."), s))?,
            shunt_voltage: register(&r, GaugeVec::new(Opts::new("powermon_shunt_voltage_volts", "Voltage across the shunt at the last sample."), s))?,
            current: register(&r, GaugeVec::new(Opts::new("powermon_current_amperes", "Current through the shunt at the last sample; negative when it flows backwards; NaN while the shunt is saturated."), s))?,
            power: register(&r, GaugeVec::new(Opts::new("powermon_power_watts", "Power at the last sample (bus voltage times current); NaN while the shunt is saturated."), s))?,
            energy: register(&r, SetCounterVec::new("powermon_energy_joules_total", "Energy drawn through the shunt in the forward direction, integrated over time, as of the last save of the state file (it never goes backwards, across restarts, crashes and power cuts).", s))?,
            energy_reverse: register(&r, SetCounterVec::new("powermon_energy_reverse_joules_total", "Energy that flowed backwards through the shunt (negative power), e.g. charging, as of the last save of the state file.", s))?,
            state_last_persist: register(&r, Gauge::new("powermon_state_last_persist_timestamp_seconds", "Unix time of the last successful save of the energy totals to the state file; the energy counters hold the values of that save."))?,
            state_persist_failures: register(&r, IntCounter::new("powermon_state_persist_failures_total", "Saves of the energy totals to the state file that failed."))?,
            samples: register(&r, IntCounterVec::new(Opts::new("powermon_samples_total", "Valid samples taken."), s))?,
            read_errors: register(&r, IntCounterVec::new(Opts::new("powermon_read_errors_total", "Reads that gave no valid sample, by kind: nack, timeout, i2c, unavailable, invalid, overflow, stale."), &["sensor", "kind"]))?,
            up: register(&r, GaugeVec::new(Opts::new("powermon_sensor_up", "1 if the last read got a well-formed answer from the chip, else 0."), s))?,
            last_sample: register(&r, GaugeVec::new(Opts::new("powermon_last_sample_timestamp_seconds", "Unix time of the last valid sample."), s))?,
            anomaly_active: register(&r, GaugeVec::new(Opts::new("powermon_anomaly_active", "1 while an anomaly rule is in an episode, else 0."), &["sensor", "rule"]))?,
            anomalies: register(&r, IntCounterVec::new(Opts::new("powermon_anomalies_total", "Anomaly episodes started, by rule."), &["sensor", "rule"]))?,
            gaps: register(&r, IntCounterVec::new(Opts::new("powermon_integration_gaps_total", "Pauses between samples longer than max_gap, which energy integration did not bridge."), s))?,
            sensor_info: register(&r, GaugeVec::new(Opts::new("powermon_sensor_info", "A metric with a constant value of 1 per configured sensor, labelled with its driver, bus, address and configured labels."), &info_labels))?,
            info_label_names,
            registry: r,
        };

        #[cfg(target_os = "linux")]
        metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// Create a sensor's series (at zero, so rates work from the first scrape) and return the
    /// handles to them.
    pub fn sensor(&self, sensor: &SensorConfig, rules: RuleSet) -> SensorMetrics {
        let name = sensor.name.as_str();
        let address = format!("{:#04x}", sensor.address);
        let mut info = vec![
            name,
            sensor.driver.as_str(),
            sensor.bus.as_str(),
            address.as_str(),
        ];
        info.extend(
            self.info_label_names
                .iter()
                .map(|k| sensor.labels.get(k).map_or("", String::as_str)),
        );
        self.sensor_info.with_label_values(&info).set(1.0);
        // The energy counters exist from the start, at their last saved value (0 until then).
        self.published_energy(name);

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
        SensorMetrics {
            bus_voltage: self.bus_voltage.with_label_values(&[name]),
            shunt_voltage: self.shunt_voltage.with_label_values(&[name]),
            current: self.current.with_label_values(&[name]),
            power: self.power.with_label_values(&[name]),
            samples: self.samples.with_label_values(&[name]),
            read_errors: ErrorKind::ALL
                .map(|k| self.read_errors.with_label_values(&[name, k.as_str()])),
            up: self.up.with_label_values(&[name]),
            last_sample: self.last_sample.with_label_values(&[name]),
            anomaly_active: Rule::ALL.map(rule_gauge),
            anomalies: Rule::ALL.map(rule_counter),
            gaps: self.gaps.with_label_values(&[name]),
        }
    }

    /// The exported energy counters of a sensor: forward and reverse.
    pub fn published_energy(&self, sensor: &str) -> (Arc<SetCounter>, Arc<SetCounter>) {
        (
            self.energy.with_label_values(&[sensor]),
            self.energy_reverse.with_label_values(&[sensor]),
        )
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug here.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("encoding metrics failed: {e}");
        }
        out
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
    pub fn raise_to(&self, value: f64) {
        // For finite non-negative floats the order of the bit patterns is the numeric order.
        // (Zero needs nothing: the counter starts there; and -0.0 would compare high.)
        if value.is_finite() && value > 0.0 {
            self.0.fetch_max(value.to_bits(), Ordering::Relaxed);
        }
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A family of [`SetCounter`]s, one per combination of label values.
#[derive(Clone)]
pub struct SetCounterVec(Arc<SetCounterFamily>);

/// The shared part of a [`SetCounterVec`].
pub struct SetCounterFamily {
    desc: Desc,
    children: Mutex<BTreeMap<Vec<String>, Arc<SetCounter>>>,
}

impl SetCounterVec {
    /// A family `name` with the given label names.
    pub fn new(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<SetCounterVec> {
        let desc = Desc::new(
            name.to_string(),
            help.to_string(),
            labels.iter().map(|l| l.to_string()).collect(),
            HashMap::new(),
        )?;
        Ok(SetCounterVec(Arc::new(SetCounterFamily {
            desc,
            children: Mutex::new(BTreeMap::new()),
        })))
    }

    /// The counter of these label values, created at 0 if new.
    pub fn with_label_values(&self, values: &[&str]) -> Arc<SetCounter> {
        let key = values.iter().map(|v| v.to_string()).collect();
        let mut children = self
            .0
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(children.entry(key).or_default())
    }
}

impl Collector for SetCounterVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let children = self
            .0
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let metrics = children
            .iter()
            .map(|(values, counter)| {
                let mut metric = Metric::default();
                metric.set_label(
                    self.0
                        .desc
                        .variable_labels
                        .iter()
                        .zip(values)
                        .map(|(name, value)| {
                            let mut pair = LabelPair::default();
                            pair.set_name(name.clone());
                            pair.set_value(value.clone());
                            pair
                        })
                        .collect(),
                );
                let mut value = prometheus::proto::Counter::default();
                value.set_value(counter.get());
                metric.set_counter(value);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.0.desc.fq_name.clone());
        family.set_help(self.0.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(metrics);
        vec![family]
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

    #[test]
    fn set_counters_are_exposed_as_counters() {
        let r = Registry::new();
        let family = register(
            &r,
            SetCounterVec::new("test_joules_total", "Help.", &["sensor"]),
        )
        .unwrap();
        family.with_label_values(&["b"]).raise_to(2.0);
        family.with_label_values(&["a"]).raise_to(0.1 + 0.2);
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP test_joules_total Help.\n# TYPE test_joules_total counter\n\
             test_joules_total{sensor=\"a\"} 0.30000000000000004\n\
             test_joules_total{sensor=\"b\"} 2\n"
        );
    }
}
