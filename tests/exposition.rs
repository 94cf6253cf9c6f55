//! `/metrics` is written by the daemon's own text writer, not by the `prometheus` crate's
//! `gather` and encoder: both must say exactly the same thing, family by family and series
//! by series, whatever state the sensors are in.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use power_monitord::board::Board;
use power_monitord::config::Config;
use power_monitord::metrics::Metrics;
use power_monitord::sampler::SensorPipeline;
use power_monitord::sensor::{ErrorKind, Reading, SensorError};
use power_monitord::state::{StoredBattery, StoredSensor};

const CONFIG: &str = r#"
[[sensor]]
name = "ac"
driver = "simulated"
bus = "house"
address = 0x40
shunt_ohms = 0.000375
max_current_amps = 400.0
labels = { room = "living \"front\" room\\1", note = "two\nlines" }
[sensor.anomaly]
max_power_watts = 1000.0
max_power_for = "2s"
energy_budget = { kwh = 0.001, window = "1h" }
spike_sigma = 3.0
allowed_bus_volts = [12.0, 14.6]

[[sensor]]
name = "pi"
driver = "simulated"
bus = "house"
address = 0x41

[[sensor]]
name = "gone"
driver = "simulated"
bus = "other"
address = 0x40

[[battery]]
name = "bank"
sensor = "ac"
capacity_ah = 100.0
"#;

fn reading(volts: f64, amps: f64) -> Reading {
    Reading {
        bus_voltage_volts: volts,
        shunt_voltage_volts: amps * 0.000375,
        current_amperes: amps,
        power_watts: volts * amps,
        overflow: false,
    }
}

/// A sample's identity and value; NaN compared by its bits.
type Series = BTreeMap<(String, Vec<(String, String)>), u64>;

/// Every series and every family's help and type, parsed; the process's own metrics (which
/// change between two scrapes) by name only.
fn parsed(text: &[u8]) -> (Series, BTreeMap<String, String>, Vec<String>) {
    let text = String::from_utf8(text.to_vec()).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut series = Series::new();
    let mut process = Vec::new();
    for s in &scrape.samples {
        if s.metric.starts_with("process_") {
            process.push(s.metric.clone());
            continue;
        }
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("unexpected kind of {}", s.metric),
        };
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let bits = if value.is_nan() { 1 } else { value.to_bits() };
        let key = (s.metric.clone(), labels);
        assert!(series.insert(key.clone(), bits).is_none(), "{key:?} twice");
    }
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap().to_string();
        assert!(
            types.insert(name.clone(), line.to_string()).is_none(),
            "{name} declared twice"
        );
    }
    let mut helps: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("# HELP "))
        .map(str::to_string)
        .collect();
    helps.sort();
    types.extend(
        helps
            .into_iter()
            .enumerate()
            .map(|(i, h)| (format!("help {i}"), h)),
    );
    process.sort();
    (series, types, process)
}

/// The lines of an exposition other than the process's own, sorted.
fn lines(text: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8(text.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.contains("process_"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn same_exposition(metrics: &Metrics) -> usize {
    let (text, reference_text) = (metrics.encode(), metrics.encode_reference());
    // Word for word the same lines (label order, number spelling); only the order of the
    // families may differ.
    assert_eq!(lines(&text), lines(&reference_text));
    let ours = parsed(&text);
    let reference = parsed(&reference_text);
    for (key, value) in &reference.0 {
        assert_eq!(ours.0.get(key), Some(value), "series {key:?}");
    }
    assert_eq!(ours.0.len(), reference.0.len(), "series");
    assert_eq!(ours.1, reference.1, "help and type lines");
    assert_eq!(ours.2, reference.2, "process metrics");
    ours.0.len()
}

#[test]
fn the_exposition_matches_the_crates_encoder_in_every_state() {
    let config = Config::from_toml(Path::new("t.toml"), CONFIG).unwrap();
    let board = Board::new();
    let metrics = Metrics::new("0.0.0", "test\"rev", Arc::clone(&board)).unwrap();
    // No sensor at all yet: only the daemon's own families.
    same_exposition(&metrics);

    let (mut pipelines, statuses): (Vec<_>, Vec<_>) = config
        .sensors
        .iter()
        .map(|s| SensorPipeline::new(s, StoredSensor::default(), None))
        .unzip();
    pipelines[0].resume_battery(StoredBattery::default(), None);
    board.replace(statuses.clone());
    let fresh = same_exposition(&metrics);

    let start = Instant::now();
    let wall = SystemTime::now();
    for i in 0..30u64 {
        let at = start + Duration::from_secs(i);
        let w = wall + Duration::from_secs(i);
        // Over power, a spike, bus voltage out of range, a saturated shunt, failing reads.
        let ac = match i {
            5 => reading(13.0, f64::NAN),
            20 => reading(11.0, 400.0),
            _ => reading(13.2, 90.0 + i as f64),
        };
        pipelines[0].process(Ok(ac), at, w);
        let pi = if i % 7 == 3 {
            Err(SensorError::Bus {
                kind: ErrorKind::Nack,
                detail: "gone".into(),
                summary: "gone".into(),
            })
        } else {
            Ok(reading(5.1, -0.5))
        };
        pipelines[1].process(pi, at, w);
        pipelines[2].process(Err(SensorError::Invalid("x".into())), at, w);
    }
    statuses[0]
        .exported
        .raise_to(&StoredSensor::default(), None);
    // The same series, and the readings of the two sensors that were read: voltage, shunt
    // voltage, current, power and the last sample's time (never-read sensors have none).
    assert_eq!(same_exposition(&metrics), fresh + 2 * 5);
    assert!(!text_of(&metrics).contains("powermon_power_watts{sensor=\"gone\"}"));
    // The states compared are the ones meant: episodes, errors of each kind, a saturation.
    let text = String::from_utf8(metrics.encode()).unwrap();
    for line in [
        "powermon_anomalies_total{rule=\"over_power\",sensor=\"ac\"} 1",
        "powermon_anomaly_active{rule=\"over_power\",sensor=\"ac\"} 1",
        "powermon_read_errors_total{kind=\"overflow\",sensor=\"ac\"} 1",
        "powermon_read_errors_total{kind=\"invalid\",sensor=\"gone\"} 30",
        "powermon_samples_total{sensor=\"ac\"} 29",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }

    // MQTT's families appear; a sensor leaves but keeps its energy counters.
    let mqtt = metrics.mqtt().unwrap();
    mqtt.sent.inc();
    board.replace(statuses[..2].to_vec());
    same_exposition(&metrics);
    board.replace(statuses[..1].to_vec());
    same_exposition(&metrics);
}

fn text_of(metrics: &Metrics) -> String {
    String::from_utf8(metrics.encode()).unwrap()
}
