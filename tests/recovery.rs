//! The recovery ladder on the virtual bus, through the real driver of every chip: random and
//! periodic NACKs, a burst, brown-outs, and conversions that finish in the middle of a read.
//!
//! Each test drives one sensor as the sampler does (read, count the bus events, retry a
//! not-yet-converted chip a few times, take the result down the pipeline, schedule the next
//! tick), on a manual clock: hundreds of sampling intervals run in milliseconds.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use embedded_hal::i2c::{ErrorType, I2c, Operation};
use power_monitord::board::{Board, SensorStatus};
use power_monitord::config::{Config, SensorConfig};
use power_monitord::metrics::Metrics;
use power_monitord::sampler::SensorPipeline;
use power_monitord::sensor::simulated::{virtual_bus, VirtualBus};
use power_monitord::sensor::simulated::{Clock, ManualTime};
use power_monitord::sensor::{sensors_on, Reading, Sensor, SensorError};
use power_monitord::state::StoredSensor;

const CHIPS: [&str; 4] = ["ina219", "ina226", "ina260", "ina3221"];
/// As the sampler: how often a chip with no new conversion is asked again before the read
/// counts as stale.
const NOT_READY_RETRIES: u32 = 3;
const SUPPLY_VOLTS: f64 = 13.0;
const SOURCE_OHMS: f64 = 0.05;

/// One simulated sensor with the chip, ADC keys and `[sensor.simulation]` lines given.
fn sensor(chip: &str, interval: &str, adc: &str, simulation: &str) -> Vec<SensorConfig> {
    let channel = if chip == "ina3221" {
        "channel = 1\n"
    } else {
        ""
    };
    let text = format!(
        "[[sensor]]\nname = \"s\"\ndriver = \"simulated\"\nbus = \"lab\"\naddress = 0x40\n{channel}\
         interval = \"{interval}\"\n{adc}\n\
         [sensor.simulation]\nchip = \"{chip}\"\nsupply_volts = {SUPPLY_VOLTS}\nsource_ohms = {SOURCE_OHMS}\n{simulation}\n"
    );
    Config::from_toml(Path::new("t.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .sensors
}

/// A sensor read as the sampler reads it, on a manual clock.
struct Harness {
    sensor: Box<dyn Sensor>,
    pipeline: SensorPipeline,
    status: Arc<SensorStatus>,
    metrics: Metrics,
    clock: Clock,
    time: ManualTime,
    origin: Instant,
    /// When the next read is due, on the clock.
    due: Duration,
}

impl Harness {
    fn new(configs: &[SensorConfig]) -> Harness {
        let (clock, time) = Clock::manual();
        let bus = virtual_bus(configs, &clock);
        Harness::on(configs, bus, clock, time)
    }

    fn on<I2C>(configs: &[SensorConfig], bus: I2C, clock: Clock, time: ManualTime) -> Harness
    where
        I2C: I2c + 'static,
        I2C::Error: power_monitord::sensor::ClassifyError,
    {
        let board = Board::new();
        let metrics = Metrics::new("0", "test", Arc::clone(&board)).unwrap();
        let sensor = sensors_on(bus, configs).pop().unwrap();
        let (pipeline, status) = SensorPipeline::new(&configs[0], StoredSensor::default(), None);
        board.replace(vec![Arc::clone(&status)]);
        Harness {
            sensor,
            pipeline,
            status,
            metrics,
            clock,
            time,
            origin: Instant::now(),
            due: Duration::ZERO,
        }
    }

    fn advance_to(&self, t: Duration) {
        self.time.advance(t.saturating_sub(self.clock.now()));
    }

    /// The next scheduled read: its time on the clock, and what it came to.
    fn step(&mut self) -> (Duration, Result<Reading, SensorError>) {
        self.advance_to(self.due);
        let scheduled = self.origin + self.due;
        let mut tries = 0;
        loop {
            let result = self.sensor.read();
            self.pipeline.record(&self.sensor.take_events());
            if matches!(result, Err(SensorError::NotReady)) && tries < NOT_READY_RETRIES {
                tries += 1;
                self.time.advance(self.pipeline.retry_delay());
                continue;
            }
            let now = self.clock.now();
            let at = self.origin + now;
            self.pipeline.process(result.clone(), at, SystemTime::now());
            self.due = self.pipeline.next_tick(scheduled, at) - self.origin;
            return (now, result);
        }
    }

    /// Run until the clock passes `end`; every read's time and result.
    fn run_until(&mut self, end: Duration) -> Vec<(Duration, Result<Reading, SensorError>)> {
        let mut results = Vec::new();
        while self.due < end {
            results.push(self.step());
        }
        results
    }

    /// A series of the sensor from the metrics, e.g. `powermon_read_errors_total{kind="nack"`.
    fn metric(&self, series: &str) -> f64 {
        let text = String::from_utf8(self.metrics.encode()).unwrap();
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    fn recoveries(&self, action: &str) -> f64 {
        self.metric(&format!(
            "powermon_sensor_recoveries_total{{action=\"{action}\",sensor=\"s\"}}"
        ))
    }

    fn read_errors(&self, kind: &str) -> f64 {
        self.metric(&format!(
            "powermon_read_errors_total{{kind=\"{kind}\",sensor=\"s\"}}"
        ))
    }
}

fn valid(results: &[(Duration, Result<Reading, SensorError>)]) -> usize {
    results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|r| r.power_watts.is_finite()))
        .count()
}

#[test]
fn with_a_fifth_of_all_transfers_nacked_samples_and_energy_keep_coming() {
    for chip in CHIPS {
        let configs = sensor(
            chip,
            "1s",
            "",
            "load = { model = \"constant\", watts = 10.0 }\nfaults = [{ kind = \"nack\", rate = 0.2 }]",
        );
        let mut h = Harness::new(&configs);
        let results = h.run_until(Duration::from_secs(300));
        let share = valid(&results) as f64 / results.len() as f64;
        assert!(
            share >= 0.7,
            "{chip}: {share:.3} of {} reads valid",
            results.len()
        );
        // Energy over 300 s at 10 W, less what the failed samples leave out at the start.
        let joules = h.status.snapshot().energy_joules;
        assert!(
            (2_900.0..=3_000.0).contains(&joules),
            "{chip}: {joules} J in 300 s at 10 W"
        );
        // Every failed transfer is counted, and most were made good by a retry.
        let nacks = h.read_errors("nack");
        let retries = h.recoveries("retry");
        assert!(
            nacks > 100.0 && retries > 0.9 * nacks,
            "{chip}: {nacks} NACKs, {retries} retries"
        );
        assert!(h.status.snapshot().up, "{chip}");
    }
}

#[test]
fn with_every_fifth_transfer_nacked_no_sample_is_lost() {
    for chip in CHIPS {
        let configs = sensor(
            chip,
            "1s",
            "",
            "load = { model = \"constant\", watts = 10.0 }\nfaults = [{ kind = \"nack\", every = 5 }]",
        );
        let mut h = Harness::new(&configs);
        let results = h.run_until(Duration::from_secs(100));
        // Every read after the first (which programs the chip) is a sample.
        assert_eq!(
            valid(&results[1..]),
            results.len() - 1,
            "{chip}: {results:?}"
        );
        assert!(h.read_errors("nack") >= 60.0, "{chip}");
        assert_eq!(h.recoveries("reprogram"), 0.0, "{chip}");
    }
}

#[test]
fn a_two_second_burst_recovers_within_one_interval_of_its_end() {
    for chip in CHIPS {
        let configs = sensor(
            chip,
            "250ms",
            "",
            "load = { model = \"constant\", watts = 10.0 }\n\
             faults = [{ kind = \"disconnect\", start = \"20s\", duration = \"2s\" }]",
        );
        let mut h = Harness::new(&configs);
        let results = h.run_until(Duration::from_secs(30));
        let end = Duration::from_secs(22);
        let failed: Vec<Duration> = results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(t, _)| *t)
            .filter(|t| *t > Duration::from_secs(1))
            .collect();
        assert!(failed.len() >= 7, "{chip}: {failed:?}");
        assert!(failed.iter().all(|t| *t < end), "{chip}: {failed:?}");
        let back = results
            .iter()
            .find(|(t, r)| *t >= end && r.is_ok())
            .map(|(t, _)| *t)
            .unwrap();
        assert!(
            back <= end + Duration::from_millis(250),
            "{chip}: back at {back:?}"
        );
        // Eight failed samples in a row: the chip was programmed again on the way.
        assert!(h.recoveries("reprogram") >= 1.0, "{chip}");
    }
}

#[test]
fn a_brown_out_is_reprogrammed_within_two_intervals() {
    for chip in CHIPS {
        for fault in ["at = \"20s\"", "after_transfers = 150"] {
            let configs = sensor(
                chip,
                "1s",
                "",
                &format!(
                    "load = {{ model = \"constant\", watts = 10.0 }}\n\
                     faults = [{{ kind = \"brownout\", {fault} }}]"
                ),
            );
            let mut h = Harness::new(&configs);
            let mut reprogrammed_at = None;
            let mut results = Vec::new();
            while h.due < Duration::from_secs(120) {
                let (t, r) = h.step();
                if reprogrammed_at.is_none() && h.recoveries("reprogram") > 0.0 {
                    reprogrammed_at = Some(t);
                }
                results.push((t, r));
            }
            assert_eq!(h.recoveries("reprogram"), 1.0, "{chip} {fault}");
            // No value read under the power-on settings: every sample is the load's 10 W.
            for (t, r) in &results {
                if let Ok(r) = r {
                    assert!(
                        (r.power_watts - 10.0).abs() < 0.1,
                        "{chip} {fault} at {t:?}: {r:?}"
                    );
                }
            }
            if fault.starts_with("at") {
                let at = reprogrammed_at.unwrap();
                assert!(
                    at <= Duration::from_secs(22),
                    "{chip}: reprogrammed at {at:?}"
                );
            }
            // Samples keep coming after it.
            assert!(valid(&results) >= results.len() - 3, "{chip} {fault}");
        }
    }
}

/// A bus on which every transfer takes `step` of the manual clock, so that conversions
/// complete between the transfers of one sample; it counts the transfers.
struct SlowBus {
    inner: VirtualBus,
    time: ManualTime,
    step: Duration,
    transfers: std::rc::Rc<std::cell::Cell<u64>>,
}

impl ErrorType for SlowBus {
    type Error = <VirtualBus as ErrorType>::Error;
}

impl I2c for SlowBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.time.advance(self.step);
        self.transfers.set(self.transfers.get() + 1);
        self.inner.transaction(address, operations)
    }
}

#[test]
fn no_reading_pairs_values_of_two_conversions() {
    // Conversions long enough to be worth a second read, and transfers slow enough that one
    // finishes within most samples. The load changes every conversion; the supply sags
    // through its source resistance, so a bus voltage belongs to exactly one current.
    for (chip, adc, step_ms) in [
        ("ina219", "adc = { bits = 12, samples = 16 }", 5),
        (
            "ina226",
            "adc = { samples = 16, conversion_time = \"1.1ms\" }",
            3,
        ),
        (
            "ina260",
            "adc = { samples = 16, conversion_time = \"1.1ms\" }",
            3,
        ),
        (
            "ina3221",
            "adc = { samples = 16, conversion_time = \"1.1ms\" }",
            3,
        ),
    ] {
        let configs = sensor(
            chip,
            "100ms",
            adc,
            "load = { model = \"uniform\", min_watts = 1.0, max_watts = 7.0 }",
        );
        let (clock, time) = Clock::manual();
        let transfers = std::rc::Rc::new(std::cell::Cell::new(0));
        let bus = SlowBus {
            inner: virtual_bus(&configs, &clock),
            time: time.clone(),
            step: Duration::from_millis(step_ms),
            transfers: std::rc::Rc::clone(&transfers),
        };
        let mut h = Harness::on(&configs, bus, clock, time);
        let mut per_read = Vec::new();
        let mut readings = Vec::new();
        for _ in 0..300 {
            let before = transfers.get();
            let (_, r) = h.step();
            per_read.push(transfers.get() - before);
            readings.extend(r.ok());
        }
        assert!(readings.len() > 200, "{chip}: {} readings", readings.len());
        // Bus LSB (4, 1.25 or 8 mV) plus the current's quantisation through the source.
        let tolerance = 0.0081;
        for r in &readings {
            let expected = SUPPLY_VOLTS - r.current_amperes * SOURCE_OHMS;
            assert!(
                (r.bus_voltage_volts - expected).abs() <= tolerance,
                "{chip}: {:.4} V at {:.4} A, expected {expected:.4} V: values of two conversions",
                r.bus_voltage_volts,
                r.current_amperes
            );
        }
        // The case arose: some samples (not counting the first read, which programs the
        // chip) needed their registers read a second time.
        let usual = {
            let mut sorted = per_read.clone();
            sorted.sort_unstable();
            sorted[sorted.len() / 2]
        };
        let reread = per_read[1..].iter().filter(|n| **n > usual).count();
        assert!(reread >= 10, "{chip}: {per_read:?}");
    }
}
