//! Sampling: one thread per I2C bus reads its sensors in turn, each at its own interval, and
//! sends every result down the pipeline — energy, anomalies, metrics, status.
//!
//! I2C is blocking, so each bus has a plain thread rather than an async task; a slow or hung
//! chip delays only its own bus. A thread sleeps until its next sensor is due (no polling),
//! missed ticks are skipped rather than piled up, a failing sensor backs off exponentially,
//! and the path from a read to the metrics does not allocate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::anomaly::{AnomalyDetector, Transition};
use crate::clock::Clock;
use crate::config::{Config, SensorConfig};
use crate::energy::EnergyIntegrator;
use crate::metrics::{Metrics, SensorMetrics};
use crate::sensor::{self, ErrorKind, Reading, SensorError};
use crate::state::live::LiveSlot;
use crate::state::{StoredSensor, StoredState};
use crate::status::{SensorStatus, Snapshot};

/// Longest pause between retries of a failing sensor (or its interval, if longer).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a read that finds no new conversion is retried before it counts as `stale`.
const NOT_READY_RETRIES: u8 = 3;
/// How late a bus thread may be before it counts as stalled.
const STALL_GRACE: Duration = Duration::from_secs(10);

/// Tells the bus threads to finish.
#[derive(Clone, Default)]
pub struct Stop(Arc<(Mutex<bool>, Condvar)>);

impl Stop {
    /// Tell every thread holding a clone to finish.
    pub fn stop(&self) {
        let (flag, cvar) = &*self.0;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cvar.notify_all();
    }

    /// Sleep until `deadline`; true if told to stop meanwhile.
    fn wait_until(&self, deadline: Instant) -> bool {
        let (flag, cvar) = &*self.0;
        let mut stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *stopped {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = cvar
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// When a bus thread promised to come around again (its next due read plus grace), and
/// whether it is still running.
struct Liveness {
    origin: Instant,
    deadline_ms: AtomicU64,
    running: AtomicBool,
}

impl Liveness {
    fn promise(&self, by: Instant) {
        let ms = by.saturating_duration_since(self.origin).as_millis() as u64;
        self.deadline_ms.store(ms, Ordering::Relaxed);
    }

    fn alive(&self, now: Instant) -> bool {
        self.running.load(Ordering::Relaxed)
            && now.saturating_duration_since(self.origin).as_millis() as u64
                <= self.deadline_ms.load(Ordering::Relaxed)
    }
}

/// Whether sampling is alive, shareable with the HTTP server and the watchdog.
#[derive(Clone)]
pub struct Health(Arc<Vec<Arc<Liveness>>>);

impl Health {
    /// Every bus thread is running and came around when it said it would.
    pub fn healthy(&self) -> bool {
        let now = Instant::now();
        self.0.iter().all(|l| l.alive(now))
    }
}

/// Everything that happens to one sensor's results, in data-flow order.
pub struct SensorPipeline {
    name: String,
    interval: Duration,
    /// Wait before re-reading a chip that had no new conversion yet.
    retry_delay: Duration,
    integrator: EnergyIntegrator,
    detector: AnomalyDetector,
    metrics: SensorMetrics,
    status: Arc<SensorStatus>,
    snapshot: Snapshot,
    /// Where the totals go after every sample, to survive a crash.
    live: Option<LiveSlot>,
    /// Consecutive failed reads.
    failures: u32,
}

impl SensorPipeline {
    /// A pipeline continuing from `stored` totals, and the status it publishes to. With a
    /// `live` slot, the totals are stored there after every sample.
    pub fn new(
        config: &SensorConfig,
        metrics: &Metrics,
        stored: StoredSensor,
        live: Option<LiveSlot>,
    ) -> (SensorPipeline, Arc<SensorStatus>) {
        let detector = AnomalyDetector::new(&config.anomaly);
        let rules = detector.rules();
        let handles = metrics.sensor(config, rules);
        let status = SensorStatus::new(
            config,
            rules,
            (stored.energy_joules, stored.energy_reverse_joules),
        );
        let conversion = config.conversion_time();
        let pipeline = SensorPipeline {
            name: config.name.clone(),
            interval: config.interval,
            retry_delay: conversion + conversion / 4 + Duration::from_millis(1),
            integrator: EnergyIntegrator::new(
                config.max_gap(),
                stored.energy_joules,
                stored.energy_reverse_joules,
            ),
            detector,
            metrics: handles,
            snapshot: status.snapshot(),
            status: Arc::clone(&status),
            live,
            failures: 0,
        };
        (pipeline, status)
    }

    /// Take one read's result through energy, anomalies, metrics and status.
    pub fn process(&mut self, result: Result<Reading, SensorError>, at: Instant, wall: SystemTime) {
        match result {
            Ok(reading) => self.on_reading(reading, at, wall),
            Err(e) => self.on_error(&e),
        }
        self.status.publish(self.snapshot);
    }

    fn on_reading(&mut self, reading: Reading, at: Instant, wall: SystemTime) {
        if self.failures > 0 {
            log::info!(
                sensor = self.name.as_str();
                "sensor {} is back after {} failed read{}",
                self.name,
                self.failures,
                if self.failures == 1 { "" } else { "s" }
            );
            self.failures = 0;
        }
        let m = &self.metrics;
        let s = &mut self.snapshot;
        m.up.set(1.0);
        m.bus_voltage.set(reading.bus_voltage_volts);
        m.shunt_voltage.set(reading.shunt_voltage_volts);
        m.current.set(reading.current_amperes);
        m.power.set(reading.power_watts);
        s.up = true;
        s.reading = Some(reading);
        if reading.power_watts.is_nan() {
            // The shunt saturated: no value, so no sample.
            m.read_error(ErrorKind::Overflow).inc();
            s.read_errors += 1;
            s.last_error = Some(ErrorKind::Overflow);
        } else {
            let step = self.integrator.add(reading.power_watts, at);
            if step.gap {
                m.gaps.inc();
                self.detector.reset_pending();
            }
            m.samples.inc();
            let unix = wall
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            m.last_sample.set(unix);
            s.samples += 1;
            s.last_sample_unix = Some(unix);
            s.last_sample_at = Some(at);
            s.stats.add(reading.power_watts, &step);
            s.energy_joules = self.integrator.forward_joules();
            s.energy_reverse_joules = self.integrator.reverse_joules();
            if let Some(live) = &mut self.live {
                live.store(&[s.energy_joules, s.energy_reverse_joules]);
            }
        }
        let name = self.name.as_str();
        self.detector
            .observe(at, &reading, self.integrator.forward_joules(), |t| {
                m.anomaly(t.rule, t.started);
                log_transition(name, &t);
            });
        s.active = self.detector.active();
    }

    fn on_error(&mut self, error: &SensorError) {
        let kind = error.kind();
        self.metrics.read_error(kind).inc();
        self.metrics.up.set(0.0);
        self.snapshot.up = false;
        self.snapshot.read_errors += 1;
        self.snapshot.last_error = Some(kind);
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            log::warn!(
                sensor = self.name.as_str(), kind = kind.as_str();
                "sensor {} is down: {error}; retrying with backoff up to {}",
                self.name,
                humantime::format_duration(self.max_backoff())
            );
        } else {
            log::debug!(sensor = self.name.as_str(); "sensor {}: read {} failed: {error}", self.name, self.failures);
        }
    }

    fn max_backoff(&self) -> Duration {
        MAX_BACKOFF.max(self.interval)
    }

    /// When to read next, given the tick this read was scheduled for.
    fn next_tick(&self, scheduled: Instant, now: Instant) -> Instant {
        if self.failures > 1 {
            let factor = 1u32 << (self.failures - 1).min(16);
            return now + self.interval.saturating_mul(factor).min(self.max_backoff());
        }
        let next = scheduled + self.interval;
        if next > now {
            return next;
        }
        // Fell behind (a slow bus, a suspended machine): skip the missed ticks, keep the phase.
        let behind = now.duration_since(scheduled).as_nanos();
        let ticks = behind / self.interval.as_nanos().max(1) + 1;
        scheduled
            + self
                .interval
                .saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX))
    }
}

/// The pipeline of every configured sensor, in config order, continuing from `totals` (zero for
/// a sensor without), each with its slot of `live` if there is one; and the statuses they
/// publish to.
pub fn pipelines(
    config: &Config,
    metrics: &Metrics,
    totals: &StoredState,
    mut live: Vec<Option<LiveSlot>>,
) -> (Vec<SensorPipeline>, Vec<Arc<SensorStatus>>) {
    config
        .sensors
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let stored = totals.sensors.get(&s.name).copied().unwrap_or_default();
            let slot = live.get_mut(i).and_then(Option::take);
            SensorPipeline::new(s, metrics, stored, slot)
        })
        .unzip()
}

fn log_transition(sensor: &str, t: &Transition) {
    let rule = t.rule.as_str();
    if t.started && t.threshold.is_nan() {
        log::warn!(
            sensor = sensor, rule = rule, value = t.value;
            "anomaly {rule} on sensor {sensor}: {:.3} {} is beyond the configured range",
            t.value, t.unit
        );
    } else if t.started {
        log::warn!(
            sensor = sensor, rule = rule, value = t.value;
            "anomaly {rule} on sensor {sensor}: {:.3} {} (threshold {:.3} {})",
            t.value, t.unit, t.threshold, t.unit
        );
    } else {
        log::info!(
            sensor = sensor, rule = rule, value = t.value;
            "anomaly {rule} on sensor {sensor} cleared: {:.3} {}",
            t.value, t.unit
        );
    }
}

/// The running bus threads.
pub struct Sampler {
    stop: Stop,
    workers: Vec<(String, JoinHandle<()>)>,
    health: Health,
}

impl Sampler {
    /// Start one thread per bus. `pipelines` are in config order; `on_panic` hears of a bus
    /// thread that died, by the name of its bus.
    pub fn start(
        config: &Config,
        pipelines: Vec<SensorPipeline>,
        clock: &Clock,
        on_panic: impl Fn(String) + Clone + Send + 'static,
    ) -> std::io::Result<Sampler> {
        let mut buses: BTreeMap<&str, Vec<(SensorConfig, SensorPipeline)>> = BTreeMap::new();
        for (config, pipeline) in config.sensors.iter().zip(pipelines) {
            buses
                .entry(config.bus.as_str())
                .or_default()
                .push((config.clone(), pipeline));
        }
        let stop = Stop::default();
        let origin = Instant::now();
        let mut workers = Vec::new();
        let mut liveness = Vec::new();
        for (bus, members) in buses {
            let live = Arc::new(Liveness {
                origin,
                deadline_ms: AtomicU64::new(STALL_GRACE.as_millis() as u64),
                running: AtomicBool::new(true),
            });
            let (stop, clock, live_for_thread, on_panic) = (
                stop.clone(),
                clock.clone(),
                Arc::clone(&live),
                on_panic.clone(),
            );
            let bus_name = bus.to_string();
            let thread_name: String = format!("bus {bus}").chars().take(15).collect();
            let handle = std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || {
                    let name = bus_name.clone();
                    let run = std::panic::AssertUnwindSafe(|| {
                        run_bus(members, &clock, &stop, &live_for_thread)
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        on_panic(name);
                    }
                })?;
            workers.push((bus.to_string(), handle));
            liveness.push(live);
        }
        Ok(Sampler {
            stop,
            workers,
            health: Health(Arc::new(liveness)),
        })
    }

    /// Whether the threads sample on schedule, for `/healthz` and the watchdog.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Ask the threads to finish and wait for them. Afterwards every sensor's status holds
    /// its final totals.
    pub fn stop(self) {
        self.stop.stop();
        for (bus, handle) in self.workers {
            if handle.join().is_err() {
                log::error!("the sampling thread of bus {bus} ended in a panic");
            }
        }
    }
}

/// One bus's loop: read whatever is due, sleep until the next is.
fn run_bus(
    members: Vec<(SensorConfig, SensorPipeline)>,
    clock: &Clock,
    stop: &Stop,
    live: &Liveness,
) {
    let (configs, mut pipelines): (Vec<_>, Vec<_>) = members.into_iter().unzip();
    let mut sensors = sensor::open_bus(&configs, clock);
    let start = Instant::now();
    let mut tick = vec![start; sensors.len()];
    let mut due = vec![start; sensors.len()];
    let mut not_ready = vec![0u8; sensors.len()];
    loop {
        let now = Instant::now();
        for i in 0..sensors.len() {
            if due[i] > now {
                continue;
            }
            let result = sensors[i].read();
            let at = Instant::now();
            if matches!(result, Err(SensorError::NotReady)) && not_ready[i] < NOT_READY_RETRIES {
                // Right after (re)initialisation the first conversion is still running.
                not_ready[i] += 1;
                due[i] = at + pipelines[i].retry_delay;
                continue;
            }
            not_ready[i] = 0;
            pipelines[i].process(result, at, SystemTime::now());
            tick[i] = pipelines[i].next_tick(tick[i], at);
            due[i] = tick[i];
        }
        let next = due.iter().min().copied().unwrap_or(now + MAX_BACKOFF);
        live.promise(next + STALL_GRACE);
        if stop.wait_until(next) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn pipeline(text: &str) -> (SensorPipeline, Arc<SensorStatus>, Metrics) {
        let config = Config::from_toml(Path::new("t.toml"), text).unwrap();
        let metrics = Metrics::new(&config, "0", "test").unwrap();
        let (p, s) =
            SensorPipeline::new(&config.sensors[0], &metrics, StoredSensor::default(), None);
        (p, s, metrics)
    }

    fn reading(watts: f64) -> Reading {
        Reading {
            bus_voltage_volts: 12.0,
            shunt_voltage_volts: 0.001,
            current_amperes: watts / 12.0,
            power_watts: watts,
            overflow: false,
        }
    }

    #[test]
    fn ticks_keep_their_phase_and_skip_missed_ones() {
        let (p, _, _) = pipeline("[[sensor]]\nname = \"a\"\ninterval = \"1s\"\n");
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(p.next_tick(t0, t0 + Duration::from_millis(3)), t0 + s(1));
        // 3.5 s late: the ticks at 1, 2 and 3 s are skipped, not run back to back.
        assert_eq!(p.next_tick(t0, t0 + Duration::from_millis(3500)), t0 + s(4));
    }

    #[test]
    fn a_failing_sensor_backs_off_exponentially_up_to_a_cap() {
        let (mut p, _, _) = pipeline("[[sensor]]\nname = \"a\"\ninterval = \"1s\"\n");
        let t0 = Instant::now();
        let err = SensorError::Bus {
            kind: ErrorKind::Nack,
            detail: "test".into(),
        };
        let mut waits = Vec::new();
        for _ in 0..8 {
            p.process(Err(err.clone()), t0, SystemTime::now());
            waits.push(p.next_tick(t0, t0).duration_since(t0).as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        p.process(Ok(reading(10.0)), t0, SystemTime::now());
        assert_eq!(p.next_tick(t0, t0), t0 + Duration::from_secs(1));
    }

    #[test]
    fn results_reach_metrics_and_status() {
        let (mut p, status, metrics) = pipeline(
            "[[sensor]]\nname = \"a\"\n[sensor.anomaly]\nmax_power_watts = 50.0\nmax_power_for = \"1s\"\n",
        );
        let t0 = Instant::now();
        for i in 0..3u64 {
            p.process(
                Ok(reading(100.0)),
                t0 + Duration::from_secs(i),
                SystemTime::now(),
            );
        }
        p.process(
            Err(SensorError::Bus {
                kind: ErrorKind::Timeout,
                detail: "test".into(),
            }),
            t0 + Duration::from_secs(3),
            SystemTime::now(),
        );
        let snap = status.snapshot();
        assert_eq!(snap.samples, 3);
        assert_eq!(snap.energy_joules, 200.0);
        assert!(!snap.up);
        assert_eq!(snap.last_error, Some(ErrorKind::Timeout));
        assert!(snap.active.contains(crate::anomaly::Rule::OverPower));
        assert_eq!(snap.stats.avg_watts(), Some(100.0));
        let text = String::from_utf8(metrics.encode()).unwrap();
        // Energy is exported by the persister once it is on disk, not by the pipeline.
        assert!(
            text.contains("powermon_energy_joules_total{sensor=\"a\"} 0"),
            "{text}"
        );
        assert!(text.contains("powermon_read_errors_total{kind=\"timeout\",sensor=\"a\"} 1"));
        assert!(text.contains("powermon_anomalies_total{rule=\"over_power\",sensor=\"a\"} 1"));
        assert!(text.contains("powermon_sensor_up{sensor=\"a\"} 0"));
    }

    #[test]
    fn every_sample_reaches_the_live_file() {
        use crate::state::live::{self, Kind, LiveFile};
        let config = Config::from_toml(Path::new("t.toml"), "[[sensor]]\nname = \"a\"\n").unwrap();
        let metrics = Metrics::new(&config, "0", "test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.bin");
        let (_file, mut slots) =
            LiveFile::create(&path, &[(Kind::Sensor, "a", [0.0; live::VALUES])]).unwrap();
        let stored = StoredSensor {
            energy_joules: 1000.0,
            energy_reverse_joules: 5.0,
        };
        let (mut p, _) = SensorPipeline::new(&config.sensors[0], &metrics, stored, slots.pop());
        let t0 = Instant::now();
        p.process(Ok(reading(100.0)), t0, SystemTime::now());
        p.process(
            Ok(reading(100.0)),
            t0 + Duration::from_secs(2),
            SystemTime::now(),
        );
        let records = live::read(&path).unwrap();
        assert_eq!(records[&(Kind::Sensor, "a".into())][..2], [1200.0, 5.0]);
    }

    #[test]
    fn stop_interrupts_the_wait() {
        let stop = Stop::default();
        let other = stop.clone();
        let t =
            std::thread::spawn(move || other.wait_until(Instant::now() + Duration::from_secs(60)));
        stop.stop();
        assert!(t.join().unwrap());
    }
}
