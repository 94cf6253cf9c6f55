//! The sampling path does not allocate: a read of a virtual chip through the real driver, then
//! energy, anomalies, metrics and status, a thousand times over, with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use power_monitord::clock::Clock;
use power_monitord::config::Config;
use power_monitord::metrics::Metrics;
use power_monitord::sampler::SensorPipeline;
use power_monitord::sensor;
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

#[test]
fn a_thousand_samples_allocate_nothing() {
    // Every rule on, a load that trips some of them, noise, two chips sharing the bus.
    let config = Config::from_toml(
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
"#,
    )
    .unwrap();
    let metrics = Metrics::new("0", "test").unwrap();
    let (mut pipelines, _statuses): (Vec<_>, Vec<_>) = config
        .sensors
        .iter()
        .map(|s| SensorPipeline::new(s, &metrics, StoredSensor::default(), None))
        .unzip();
    let (clock, time) = Clock::manual();
    let mut sensors = sensor::open_bus(&config.sensors, &clock);
    let start = Instant::now();
    let mut step = |i: u32| {
        time.advance(Duration::from_secs(1));
        for (sensor, pipeline) in sensors.iter_mut().zip(pipelines.iter_mut()) {
            let result = sensor.read();
            // The very first read meets a conversion still running; from then on every read
            // finds a new one.
            assert!(i == 0 || result.is_ok(), "read {i}: {result:?}");
            pipeline.process(
                result,
                start + Duration::from_secs(u64::from(i)),
                SystemTime::now(),
            );
        }
    };
    // Initialisation and the first conversions may allocate (driver set-up, log lines).
    for i in 0..20 {
        step(i);
    }
    let before = allocations();
    for i in 20..1020 {
        step(i);
    }
    let after = allocations();
    assert_eq!(
        after - before,
        0,
        "{} allocations in 1000 samples of 2 sensors",
        after - before
    );
}
