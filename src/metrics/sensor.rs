//! The families with a series per sensor (the metrics contract in docs/metrics.md), read from the
//! board's snapshots at each scrape: the sampling path only publishes its snapshot, and a
//! sensor's series come and go with it on the board.

use std::collections::BTreeSet;

use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};

use super::families::label_pair;
use super::text::{Family, Kind};
use crate::anomaly::Rule;
use crate::board::{SensorStatus, Snapshot};
use crate::sensor::ErrorKind;

/// Each series of one sensor in a family: the second label's value (empty where the family
/// has none) and the value, handed to `emit`.
type Series = fn(&SensorStatus, &Snapshot, &mut dyn FnMut(&'static str, f64));

/// A family with a series per sensor, and per kind, action or rule where it has a second
/// label.
pub(super) struct PerSensor {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: Kind,
    /// The second label's name (it sorts before `sensor`, as the crate's encoder orders them).
    pub(super) label: Option<&'static str>,
    pub(super) series: Series,
}

/// A value of the last reading to `emit`; none before the first: a sensor never read has no
/// power, voltage or current series (not a believable 0), only `powermon_sensor_up 0`.
fn reading(
    s: &Snapshot,
    value: fn(&crate::sensor::Reading) -> f64,
    emit: &mut dyn FnMut(&'static str, f64),
) {
    if let Some(r) = &s.reading {
        emit("", value(r));
    }
}

/// Every family with a series per sensor, by name.
pub(super) const FAMILIES: [PerSensor; 14] = [
    PerSensor {
        name: "powermon_anomalies_total",
        help: "Anomaly episodes started, by rule.",
        kind: Kind::Counter,
        label: Some("rule"),
        series: |status, s, emit| {
            for (i, rule) in Rule::ALL.iter().enumerate() {
                if status.rules.contains(*rule) {
                    emit(rule.as_str(), s.episodes[i] as f64);
                }
            }
        },
    },
    PerSensor {
        name: "powermon_anomaly_active",
        help: "1 while an anomaly rule is in an episode, else 0.",
        kind: Kind::Gauge,
        label: Some("rule"),
        series: |status, s, emit| {
            for rule in Rule::ALL {
                if status.rules.contains(rule) {
                    emit(rule.as_str(), if s.active.contains(rule) { 1.0 } else { 0.0 });
                }
            }
        },
    },
    PerSensor {
        name: "powermon_bus_voltage_volts",
        help: "Voltage from IN- to ground at the last sample (the load side of the shunt); no series before the first.",
        kind: Kind::Gauge,
        label: None,
        series: |_, s, emit| reading(s, |r| r.bus_voltage_volts, emit),
    },
    PerSensor {
        name: "powermon_current_amperes",
        help: "Current through the shunt at the last sample; negative when it flows backwards; NaN while the shunt is saturated; no series before the first sample.",
        kind: Kind::Gauge,
        label: None,
        series: |_, s, emit| reading(s, |r| r.current_amperes, emit),
    },
    PerSensor {
        name: "powermon_energy_joules_total",
        help: "Energy drawn through the shunt in the forward direction, integrated over time, as of the last save of the state file (it never goes backwards, across restarts, crashes and power cuts).",
        kind: Kind::Counter,
        label: None,
        series: |status, _, emit| emit("", status.exported.energy_joules.get()),
    },
    PerSensor {
        name: "powermon_energy_reverse_joules_total",
        help: "Energy that flowed backwards through the shunt (negative power), e.g. charging, as of the last save of the state file.",
        kind: Kind::Counter,
        label: None,
        series: |status, _, emit| emit("", status.exported.energy_reverse_joules.get()),
    },
    PerSensor {
        name: "powermon_integration_gaps_total",
        help: "Pauses between samples longer than max_gap, which energy integration did not bridge.",
        kind: Kind::Counter,
        label: None,
        series: |_, s, emit| emit("", s.gaps as f64),
    },
    PerSensor {
        name: "powermon_last_sample_timestamp_seconds",
        help: "Unix time of the last valid sample; no series before the first.",
        kind: Kind::Gauge,
        label: None,
        series: |_, s, emit| {
            if let Some(unix) = s.last_sample_unix {
                emit("", unix);
            }
        },
    },
    PerSensor {
        name: "powermon_power_watts",
        help: "Power at the last sample (bus voltage times current); NaN while the shunt is saturated; no series before the first sample.",
        kind: Kind::Gauge,
        label: None,
        series: |_, s, emit| reading(s, |r| r.power_watts, emit),
    },
    PerSensor {
        name: "powermon_read_errors_total",
        help: "Failures, by kind: failed I2C transfers (nack, timeout, i2c, unavailable; each one, including those a retry made good), and samples without a valid value (invalid, overflow, stale).",
        kind: Kind::Counter,
        label: Some("kind"),
        series: |_, s, emit| {
            for (kind, n) in ErrorKind::ALL.iter().zip(s.errors_by_kind) {
                emit(kind.as_str(), n as f64);
            }
        },
    },
    PerSensor {
        name: "powermon_samples_total",
        help: "Valid samples taken.",
        kind: Kind::Counter,
        label: None,
        series: |_, s, emit| emit("", s.samples as f64),
    },
    PerSensor {
        name: "powermon_sensor_recoveries_total",
        help: "What the daemon did about bus faults, by action: retry (a failed transfer tried again at once), reprogram (the chip's settings written again after a brown-out or failures in a row).",
        kind: Kind::Counter,
        label: Some("action"),
        series: |_, s, emit| {
            emit("retry", s.retries as f64);
            emit("reprogram", s.reprograms as f64);
        },
    },
    PerSensor {
        name: "powermon_sensor_up",
        help: "1 if the last read got a well-formed answer from the chip, else 0.",
        kind: Kind::Gauge,
        label: None,
        series: |_, s, emit| emit("", if s.up { 1.0 } else { 0.0 }),
    },
    PerSensor {
        name: "powermon_shunt_voltage_volts",
        help: "Voltage across the shunt at the last sample; no series before the first.",
        kind: Kind::Gauge,
        label: None,
        series: |_, s, emit| reading(s, |r| r.shunt_voltage_volts, emit),
    },
];

/// `powermon_sensor_info`: name and help.
pub(super) const INFO: (&str, &str) = (
    "powermon_sensor_info",
    "A metric with a constant value of 1 per configured sensor, labelled with its driver, chip, bus, address, whether it is calibrated against a reference meter, and configured labels.",
);

/// The label names of `powermon_sensor_info`, sorted: its own and every configured one any
/// sensor has (every series has them all, the missing ones empty, so that a reload may bring
/// new ones).
fn info_names<'a>(sensors: &'a [(&SensorStatus, Snapshot)]) -> BTreeSet<&'a str> {
    let mut names: BTreeSet<&str> =
        ["address", "bus", "calibrated", "chip", "driver", "sensor"].into();
    names.extend(
        sensors
            .iter()
            .flat_map(|(s, _)| s.labels.keys().map(String::as_str)),
    );
    names
}

/// A sensor's address as the info series spells it (`0x40`), in `buffer`.
fn address(address: u8, buffer: &mut [u8; 4]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    *buffer = [
        b'0',
        b'x',
        HEX[usize::from(address >> 4)],
        HEX[usize::from(address & 0xF)],
    ];
    std::str::from_utf8(buffer).unwrap_or("")
}

/// A sensor's value of an info label; `address` is the address's text.
fn info_value<'a>(status: &'a SensorStatus, name: &str, address: &'a str) -> &'a str {
    match name {
        "address" => address,
        "bus" => &status.bus,
        "calibrated" => {
            if status.calibrated {
                "true"
            } else {
                "false"
            }
        }
        "chip" => status.chip,
        "driver" => status.driver,
        "sensor" => &status.name,
        other => status.labels.get(other).map_or("", String::as_str),
    }
}

/// Write every family of `sensors` (with their snapshots) in the text format.
pub(super) fn render(out: &mut Vec<u8>, sensors: &[(&SensorStatus, Snapshot)]) {
    for family in &FAMILIES {
        let mut f = Family::new(out, (family.name, family.help), family.kind);
        for (status, snapshot) in sensors {
            (family.series)(status, snapshot, &mut |value_of_label, value| {
                let sensor = ("sensor", status.name.as_str());
                match family.label {
                    Some(label) => f.sample_pairs([(label, value_of_label), sensor], value),
                    None => f.sample_pairs([sensor], value),
                }
            });
        }
    }
    render_info(out, sensors);
}

/// `powermon_sensor_info`.
fn render_info(out: &mut Vec<u8>, sensors: &[(&SensorStatus, Snapshot)]) {
    let mut f = Family::new(out, INFO, Kind::Gauge);
    let names = info_names(sensors);
    for (status, _) in sensors {
        let mut buffer = [0; 4];
        let address = address(status.address, &mut buffer);
        let pairs = names
            .iter()
            .map(|name| (*name, info_value(status, name, address)));
        f.sample_pairs(pairs, 1.0);
    }
}

/// The same families as protobuf messages, for the crate's encoder (the reference).
pub(super) fn collect(sensors: &[(&SensorStatus, Snapshot)]) -> Vec<MetricFamily> {
    let mut families: Vec<MetricFamily> = FAMILIES
        .iter()
        .map(|family| {
            let mut metrics = Vec::new();
            for (status, snapshot) in sensors {
                (family.series)(status, snapshot, &mut |value_of_label, value| {
                    let mut labels = vec![label_pair("sensor", &status.name)];
                    if let Some(label) = family.label {
                        labels.push(label_pair(label, value_of_label));
                    }
                    metrics.push(metric(labels, family.kind, value));
                });
            }
            super::families::family(family.name, family.help, kind(family.kind), metrics)
        })
        .collect();
    let names = info_names(sensors);
    let info = sensors
        .iter()
        .map(|(status, _)| {
            let mut buffer = [0; 4];
            let address = address(status.address, &mut buffer);
            let labels = names
                .iter()
                .map(|name| label_pair(name, info_value(status, name, address)))
                .collect();
            metric(labels, Kind::Gauge, 1.0)
        })
        .collect();
    families.push(super::families::family(
        INFO.0,
        INFO.1,
        MetricType::GAUGE,
        info,
    ));
    families
}

/// The protobuf type of a kind.
pub(super) fn kind(kind: Kind) -> MetricType {
    match kind {
        Kind::Gauge => MetricType::GAUGE,
        Kind::Counter => MetricType::COUNTER,
    }
}

/// One series as a protobuf message, its labels sorted by name (as the text writer writes
/// them, and as the crate's own families keep theirs).
pub(super) fn metric(
    mut labels: Vec<prometheus::proto::LabelPair>,
    kind: Kind,
    value: f64,
) -> Metric {
    labels.sort_by(|a, b| a.name().cmp(b.name()));
    let mut metric = Metric::default();
    metric.set_label(labels);
    match kind {
        Kind::Gauge => {
            let mut g = Gauge::default();
            g.set_value(value);
            metric.set_gauge(g);
        }
        Kind::Counter => {
            let mut c = Counter::default();
            c.set_value(value);
            metric.set_counter(c);
        }
    }
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::RuleSet;
    use crate::config::Config;
    use crate::state::StoredSensor;
    use std::path::Path;

    #[test]
    fn info_series_share_their_label_names() {
        let config = Config::from_toml(
            Path::new("t.toml"),
            "[[sensor]]\nname = \"a\"\nlabels = { room = \"garage\" }\n[[sensor]]\nname = \"b\"\naddress = 0x41\n[sensor.calibration]\ncurrent_gain = 1.02\n",
        )
        .unwrap();
        let statuses: Vec<_> = config
            .sensors
            .iter()
            .map(|s| SensorStatus::new(s, RuleSet::default(), StoredSensor::default()))
            .collect();
        let sensors: Vec<_> = statuses.iter().map(|s| (&**s, s.snapshot())).collect();
        let mut out = Vec::new();
        render_info(&mut out, &sensors);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "# HELP {0} {1}\n# TYPE {0} gauge\n\
                 {0}{{address=\"0x40\",bus=\"/dev/i2c-1\",calibrated=\"false\",chip=\"ina219\",driver=\"ina219\",room=\"garage\",sensor=\"a\"}} 1\n\
                 {0}{{address=\"0x41\",bus=\"/dev/i2c-1\",calibrated=\"true\",chip=\"ina219\",driver=\"ina219\",room=\"\",sensor=\"b\"}} 1\n",
                INFO.0, INFO.1
            )
        );
    }
}
