//! The cost of a sample: the pipeline after the bus (energy, anomaly rules, battery, the
//! published snapshot), a virtual chip read through the real driver, and the two together for
//! a bus of 16 sensors.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use power_monitord::config::Config;
use power_monitord::sampler::SensorPipeline;
use power_monitord::sensor::simulated::Clock;
use power_monitord::sensor::{self, Reading};
use power_monitord::state::{StoredBattery, StoredSensor};

/// A sensor with every rule and a battery monitor on its shunt: the most a sample does.
const FULL: &str = r#"
[[sensor]]
name = "bank"
driver = "simulated"
bus = "house"
address = 0x40
shunt_ohms = 0.000375
max_current_amps = 400.0
[sensor.anomaly]
max_power_watts = 2000.0
max_power_for = "30s"
energy_budget = { kwh = 12.0, window = "24h" }
spike_sigma = 4.0
allowed_bus_volts = [11.0, 14.6]

[[battery]]
name = "bank"
sensor = "bank"
capacity_ah = 200.0
[battery.anomaly]
min_state_of_charge = 0.2
min_time_to_go = "1h"
"#;

fn pipeline(c: &mut Criterion) {
    let config = Config::from_toml(Path::new("bench.toml"), FULL).expect("valid");
    let (mut pipeline, _status) =
        SensorPipeline::new(&config.sensors[0], StoredSensor::default(), None);
    pipeline.resume_battery(StoredBattery::default(), None);
    let (start, wall) = (Instant::now(), SystemTime::now());
    let mut i = 0u64;
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sample", |b| {
        b.iter(|| {
            i += 1;
            // A load that wanders around 1 kW, sampled once a second.
            let watts = 1000.0 + (i % 97) as f64;
            let reading = Reading {
                bus_voltage_volts: 13.1,
                shunt_voltage_volts: watts / 13.1 * 0.000375,
                current_amperes: watts / 13.1,
                power_watts: watts,
                overflow: false,
            };
            let t = Duration::from_secs(i);
            pipeline.process(Ok(reading), start + t, wall + t);
        })
    });
    group.finish();
}

fn virtual_chip(c: &mut Criterion) {
    let config = common::sensors(1);
    let (clock, time) = Clock::manual();
    let mut sensors = sensor::simulated::open_bus(&config.sensors, &clock);
    let mut group = c.benchmark_group("virtual_chip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("read", |b| {
        b.iter(|| {
            // A new conversion every read, as at the configured interval.
            time.advance(Duration::from_secs(1));
            sensors[0].read()
        })
    });
    group.finish();
}

fn bus_of_16(c: &mut Criterion) {
    let config = common::sensors(16);
    let mut pipelines: Vec<SensorPipeline> = config
        .sensors
        .iter()
        .map(|s| SensorPipeline::new(s, StoredSensor::default(), None).0)
        .collect();
    let (clock, time) = Clock::manual();
    let mut sensors = sensor::simulated::open_bus(&config.sensors, &clock);
    let (start, wall) = (Instant::now(), SystemTime::now());
    let mut i = 0u64;
    let mut group = c.benchmark_group("bus");
    group.throughput(Throughput::Elements(16));
    group.bench_function("16 sensors, read and pipeline", |b| {
        b.iter(|| {
            i += 1;
            time.advance(Duration::from_millis(1));
            let t = Duration::from_millis(i);
            for (sensor, pipeline) in sensors.iter_mut().zip(pipelines.iter_mut()) {
                let result = sensor.read();
                pipeline.record(&sensor.take_events());
                pipeline.process(result, start + t, wall + t);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline, virtual_chip, bus_of_16);
criterion_main!(benches);
