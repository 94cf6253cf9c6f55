//! The battery monitor against the simulator's true state of charge, on simulated days: the
//! real INA226 driver reads the virtual chip on the battery's shunt, the pipeline counts
//! coulombs, and the house's battery (loads, sun, charger) knows the truth. A manual clock
//! runs days in seconds.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use power_monitord::battery::BatterySnapshot;
use power_monitord::board::SensorStatus;
use power_monitord::config::Config;
use power_monitord::sampler::SensorPipeline;
use power_monitord::sensor::simulated::house::{lock, SharedHouse};
use power_monitord::sensor::simulated::virtual_bus;
use power_monitord::sensor::simulated::{Clock, ManualTime};
use power_monitord::sensor::{sensors_on, Sensor, SensorError};
use power_monitord::state::StoredSensor;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// A house: a 200 Ah LiFePO4 bank on an INA226 shunt, a fridge and lights drawing from it, a
/// solar array; `battery` and `monitor` add keys to the simulated battery and the
/// `[[battery]]`.
fn house(battery: &str, loads: &str, monitor: &str) -> String {
    format!(
        r#"
[[sensor]]
name = "battery"
driver = "simulated"
bus = "house"
address = 0x40
shunt_ohms = 0.0003
max_current_amps = 250.0
interval = "10s"
[sensor.simulation]
chip = "ina226"
battery = {{ capacity_ah = 200.0, time_of_day = "00:00", {battery} }}

{loads}

[[battery]]
name = "house"
sensor = "battery"
capacity_ah = 200.0
{monitor}
"#
    )
}

const LOADS: &str = r#"
[[sensor]]
name = "fridge"
driver = "simulated"
bus = "house"
address = 0x41
shunt_ohms = 0.01
max_current_amps = 30.0
[sensor.simulation]
from_battery = true
load = { model = "fridge", watts = 120.0 }

[[sensor]]
name = "lights"
driver = "simulated"
bus = "house"
address = 0x44
shunt_ohms = 0.01
max_current_amps = 30.0
[sensor.simulation]
from_battery = true
load = { model = "constant", watts = 60.0 }
"#;

/// The battery sensor read as the sampler reads it, every 10 s of the manual clock.
struct Bench {
    sensor: Box<dyn Sensor>,
    pipeline: SensorPipeline,
    status: Arc<SensorStatus>,
    house: SharedHouse,
    time: ManualTime,
    clock: Clock,
    origin: Instant,
    wall: SystemTime,
}

impl Bench {
    fn new(text: &str) -> Bench {
        let config =
            Config::from_toml(Path::new("house.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        let (clock, time) = Clock::manual();
        let bus = virtual_bus(&config.sensors, &clock);
        let house = bus.house().expect("a house");
        let sensor = sensors_on(bus, &config.sensors).remove(0);
        let (pipeline, status) =
            SensorPipeline::new(&config.sensors[0], StoredSensor::default(), None);
        Bench {
            sensor,
            pipeline,
            status,
            house,
            time,
            clock,
            origin: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// One sample, at the next multiple of 10 s.
    fn step(&mut self) {
        let now = self.clock.now();
        let next = Duration::from_secs((now.as_secs() / 10 + 1) * 10);
        self.time.advance(next - now);
        let mut tries = 0;
        let result = loop {
            let result = self.sensor.read();
            if matches!(result, Err(SensorError::NotReady)) && tries < 3 {
                tries += 1;
                self.time.advance(self.pipeline.retry_delay());
                continue;
            }
            break result;
        };
        let t = self.clock.now();
        self.pipeline
            .process(result, self.origin + t, self.wall + t);
    }

    fn battery(&self) -> BatterySnapshot {
        self.status.snapshot().battery.expect("a battery")
    }

    fn truth(&self) -> f64 {
        lock(&self.house).true_state_of_charge()
    }

    fn hours(&self) -> f64 {
        self.clock.now().as_secs_f64() / 3600.0
    }
}

#[test]
fn over_days_of_sun_and_night_the_count_follows_the_truth_and_resynchronises() {
    let mut bench = Bench::new(&house(
        "state_of_charge = 0.5, solar_peak_watts = 1500.0, clouds = 0.3",
        LOADS,
        "",
    ));
    let mut first_sync = None;
    let mut worst: f64 = 0.0;
    let mut fulls_per_day = Vec::new();
    while bench.clock.now() < Duration::from_secs(4 * DAY) {
        bench.step();
        let b = bench.battery();
        match (first_sync, b.state_of_charge) {
            (None, Some(_)) => {
                assert!(b.synchronized(), "known before a full charge: {b:?}");
                first_sync = Some(bench.hours());
            }
            (Some(_), Some(soc)) => worst = worst.max((soc - bench.truth()).abs()),
            (_, None) => {}
        }
        if bench.clock.now().as_secs().is_multiple_of(DAY) {
            fulls_per_day.push(b.stored.full_charges);
        }
    }
    // Unknown (not made up) until the sun filled the battery on the first day.
    let first = first_sync.expect("never synchronised");
    assert!(
        (6.0..20.0).contains(&first),
        "first full charge at {first:.1} h"
    );
    // Over three more days and nights, within 1 % of capacity of the truth.
    assert!(
        worst <= 0.01,
        "worst error {:.2} % of capacity",
        worst * 100.0
    );
    // A full charge every day, each resynchronising the count.
    assert_eq!(fulls_per_day, [1, 2, 3, 4], "{fulls_per_day:?}");
    // The nights took a real share of the charge: this was a cycle, not a float.
    let b = bench.battery();
    assert!(b.stored.charge_out_coulombs / 3600.0 > 4.0 * 50.0, "{b:?}");
}

#[test]
fn time_to_go_on_a_constant_load_comes_true_within_ten_percent() {
    let mut bench = Bench::new(&house(
        "state_of_charge = 0.9",
        r#"
[[sensor]]
name = "heater"
driver = "simulated"
bus = "house"
address = 0x41
shunt_ohms = 0.002
max_current_amps = 40.0
[sensor.simulation]
from_battery = true
load = { model = "constant", watts = 300.0 }
"#,
        "initial_soc = 0.9",
    ));
    // Half an hour for the average to settle, then the prediction.
    while bench.clock.now() < Duration::from_secs(HOUR / 2) {
        bench.step();
    }
    let b = bench.battery();
    let predicted = b.time_to_go_seconds.unwrap();
    assert!((b.state_of_charge.unwrap() - bench.truth()).abs() < 0.002);
    let start = bench.clock.now().as_secs_f64();
    // The truth reaches the 10 % floor.
    while bench.truth() > 0.1 {
        bench.step();
        assert!(
            bench.clock.now() < Duration::from_secs(2 * DAY),
            "never reached the floor"
        );
    }
    let actual = bench.clock.now().as_secs_f64() - start;
    let error = (predicted - actual).abs() / actual;
    assert!(
        error <= 0.1,
        "predicted {:.2} h, it took {:.2} h",
        predicted / 3600.0,
        actual / 3600.0
    );
    // And at the floor, there is no time left to go.
    bench.step();
    assert!(bench.battery().time_to_go_seconds.unwrap() < 600.0);
}

/// A house that never rests (the fridge, the lights): given the bank's internal resistance,
/// `initial_soc = "voltage"` estimates under load within a minute at any hour, and the
/// truth is within the stated uncertainty.
#[test]
fn a_house_that_never_rests_has_a_state_of_charge_within_a_minute_at_any_hour() {
    for time in ["00:00", "03:30", "08:00", "12:00", "17:00", "21:30"] {
        for soc in [0.25, 0.5, 0.8] {
            let battery =
                format!("state_of_charge = {soc}, internal_ohms = 0.01, solar_peak_watts = 1500.0");
            let monitor = "initial_soc = \"voltage\"\ninternal_resistance_ohms = 0.01";
            let text = house(&battery, LOADS, monitor).replacen(
                "time_of_day = \"00:00\"",
                &format!("time_of_day = \"{time}\""),
                1,
            );
            let mut bench = Bench::new(&text);
            for _ in 0..6 {
                bench.step();
            }
            let b = bench.battery();
            let estimate = b
                .state_of_charge
                .unwrap_or_else(|| panic!("none at {time}, {soc}"));
            let uncertainty = b.uncertainty().expect("an estimate has an uncertainty");
            let truth = bench.truth();
            assert!(
                (estimate - truth).abs() <= uncertainty + 0.01,
                "{time}, {soc}: estimate {estimate:.3} ± {uncertainty:.3}, truth {truth:.3}"
            );
        }
    }
}
