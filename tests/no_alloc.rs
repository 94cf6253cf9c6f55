//! The sampling path does not allocate: a read of a virtual chip through the real driver, then
//! energy, anomalies, metrics and status, a thousand times over, with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use power_monitord::board::Board;
use power_monitord::config::Config;
use power_monitord::metrics::Metrics;
use power_monitord::sampler::SensorPipeline;
use power_monitord::sensor;
use power_monitord::sensor::simulated::Clock;
use power_monitord::state::StoredSensor;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn house() -> Config {
    Config::from_toml(
        Path::new("t.toml"),
        r#"
[[sensor]]
name = "ac"
driver = "simulated"
bus = "house"
address = 0x40
shunt_ohms = 0.000375
max_current_amps = 400.0
bus_voltage_range = 16
adc = { bits = 12, samples = 16 }
[sensor.simulation]
load = { model = "air_conditioner" }
supply_volts = 13.3
source_ohms = 0.004
noise = 0.01
[sensor.anomaly]
max_power_watts = 1000.0
max_power_for = "5s"
energy_budget = { kwh = 0.1, window = "10m" }
spike_sigma = 4.0
allowed_bus_volts = [12.9, 14.6]

[[sensor]]
name = "pi"
driver = "simulated"
bus = "house"
address = 0x41
[sensor.simulation]
load = { model = "raspberry_pi" }
supply_volts = 5.1

# The battery monitor runs on the ac sensor's current too.
[[battery]]
name = "bank"
sensor = "ac"
capacity_ah = 400.0
[battery.anomaly]
min_state_of_charge = 0.2
min_time_to_go = "1h"
"#,
    )
    .unwrap()
}

/// Sensors read through the real driver into their pipelines, one sample a second.
struct Run {
    sensors: Vec<Box<dyn sensor::Sensor>>,
    pipelines: Vec<SensorPipeline>,
    statuses: Vec<std::sync::Arc<power_monitord::board::SensorStatus>>,
    time: power_monitord::sensor::simulated::ManualTime,
    start: Instant,
    wall: SystemTime,
    _metrics: Metrics,
}

impl Run {
    fn new() -> Run {
        let config = house();
        let board = Board::new();
        let metrics = Metrics::new("0", "test", Arc::clone(&board)).unwrap();
        let (pipelines, statuses): (Vec<_>, Vec<_>) = config
            .sensors
            .iter()
            .map(|s| SensorPipeline::new(s, StoredSensor::default(), None))
            .unzip();
        board.replace(statuses.clone());
        let (clock, time) = Clock::manual();
        let sensors = sensor::simulated::open_bus(&config.sensors, &clock);
        Run {
            sensors,
            pipelines,
            statuses,
            time,
            start: Instant::now(),
            wall: SystemTime::now(),
            _metrics: metrics,
        }
    }

    fn step(&mut self, i: u32) {
        self.time.advance(Duration::from_secs(1));
        let t = Duration::from_secs(u64::from(i));
        for (sensor, pipeline) in self.sensors.iter_mut().zip(self.pipelines.iter_mut()) {
            let result = sensor.read();
            // The very first read meets a conversion still running; from then on every read
            // finds a new one.
            assert!(i == 0 || result.is_ok(), "read {i}: {result:?}");
            pipeline.process(result, self.start + t, self.wall + t);
        }
    }
}

#[test]
fn a_thousand_samples_allocate_nothing() {
    // Every rule on, a load that trips some of them, noise, two chips sharing the bus, a
    // battery monitor.
    let mut run = Run::new();
    // Initialisation and the first conversions may allocate (driver set-up, log lines).
    for i in 0..20 {
        run.step(i);
    }
    let before = allocations();
    for i in 20..1020 {
        run.step(i);
    }
    let after = allocations();
    assert_eq!(
        after - before,
        0,
        "{} allocations in 1000 samples of 2 sensors",
        after - before
    );
}

/// A simulated day: the recent-power history of each sensor holds its fixed number of points
/// and its memory does not grow; nothing is allocated after the start.
#[test]
fn a_day_of_samples_keeps_the_history_within_its_bounds() {
    let mut run = Run::new();
    for i in 0..20 {
        run.step(i);
    }
    let footprints: Vec<usize> = run.statuses.iter().map(|s| s.history_footprint()).collect();
    let before = allocations();
    for i in 20..86_420 {
        run.step(i);
    }
    let after = allocations();
    assert_eq!(after - before, 0, "allocations over a day");
    for (status, footprint) in run.statuses.iter().zip(footprints) {
        assert_eq!(status.history_footprint(), footprint);
        assert!(footprint < 16 * 1024, "{footprint} bytes");
        let (points, _) = status.history_since(0.0);
        assert_eq!(points.len(), power_monitord::board::history::POINTS);
    }
}

/// `n` simulated sensors with every rule, their series created: what a scrape renders.
fn sensors_metrics(n: usize) -> (Metrics, Vec<SensorPipeline>) {
    let mut text = String::new();
    for i in 0..n {
        text += &format!(
            "[[sensor]]\nname = \"s{i}\"\ndriver = \"simulated\"\nbus = \"b{}\"\naddress = {}\n\
             labels = {{ room = \"r{i}\" }}\n[sensor.anomaly]\nmax_power_watts = 10.0\n\
             energy_budget = {{ kwh = 1.0, window = \"1h\" }}\nspike_sigma = 4.0\n\
             allowed_bus_volts = [11.0, 14.6]\n",
            i / 16,
            0x40 + i % 16
        );
    }
    let config = Config::from_toml(Path::new("t.toml"), &text).unwrap();
    let board = Board::new();
    let metrics = Metrics::new("0", "test", Arc::clone(&board)).unwrap();
    let (pipelines, statuses) = config
        .sensors
        .iter()
        .map(|s| SensorPipeline::new(s, StoredSensor::default(), None))
        .unzip();
    board.replace(statuses);
    (metrics, pipelines)
}

/// Allocations of one call of `f`.
fn allocations_of<T>(f: impl FnOnce() -> T) -> u64 {
    let before = allocations();
    let result = f();
    let after = allocations();
    drop(result);
    after - before
}

/// A scrape's allocations do not grow with the sensors (the body's buffer is sized from the
/// last one), where gathering the series into protobuf messages costs several per series.
#[test]
fn a_scrape_allocates_a_few_times_per_sensor_not_per_series() {
    let (small, _a) = sensors_metrics(4);
    let (large, _b) = sensors_metrics(64);
    let _ = (small.encode(), large.encode()); // buffers sized, process collector warmed
    let per_sensor = |f: &dyn Fn(&Metrics) -> Vec<u8>| {
        (allocations_of(|| f(&large)) as f64 - allocations_of(|| f(&small)) as f64) / 60.0
    };
    let ours = per_sensor(&|m| m.encode());
    let reference = per_sensor(&|m| m.encode_reference());
    assert!(ours < 0.1, "{ours} allocations per sensor");
    assert!(
        reference > 10.0,
        "the crate's encoder: {reference} per sensor"
    );
    // And the body: about 2 KB per sensor with every rule, nothing repeated.
    let bytes = (large.encode().len() - small.encode().len()) as f64 / 60.0;
    assert!(
        (1000.0..3000.0).contains(&bytes),
        "{bytes} bytes per sensor"
    );
}
