//! The cost of the views: `/metrics` rendered for 4, 16 and 64 sensors, and a configuration
//! file loaded and checked.

mod common;

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use power_monitord::board::Board;
use power_monitord::config::Config;
use power_monitord::metrics::Metrics;
use power_monitord::sampler::SensorPipeline;
use power_monitord::state::StoredSensor;

fn metrics_of(config: &Config) -> (Metrics, Vec<SensorPipeline>) {
    let board = Board::new();
    let metrics = Metrics::new("bench", "bench", Arc::clone(&board)).expect("metrics");
    let (pipelines, statuses) = config
        .sensors
        .iter()
        .map(|s| SensorPipeline::new(s, StoredSensor::default(), None))
        .unzip();
    board.replace(statuses);
    (metrics, pipelines)
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_render");
    for n in [4, 16, 64] {
        let (metrics, _pipelines) = metrics_of(&common::sensors(n));
        let bytes = metrics.encode().len();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("sensors", n), &metrics, |b, m| {
            b.iter(|| m.encode())
        });
    }
    group.finish();
}

fn config_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("config_load");
    let simulated = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/simulated.toml"),
    )
    .expect("config/simulated.toml");
    group.bench_function("simulated.toml", |b| {
        b.iter(|| Config::from_toml(Path::new("simulated.toml"), &simulated).expect("valid"))
    });
    let big = common::sensors_toml(64);
    group.bench_function("64 sensors", |b| {
        b.iter(|| Config::from_toml(Path::new("bench.toml"), &big).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, render, config_load);
criterion_main!(benches);
