//! One sensor's pipeline: a read's result goes through energy integration, the anomaly rules
//! and the battery monitor into the sensor's snapshot, which it publishes on the board (the
//! metrics, the page and MQTT read it there), and into the live file, without allocating.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::anomaly::{AnomalyDetector, Rule, Transition};
use crate::battery::BatteryMonitor;
use crate::board::{SensorStatus, Snapshot};
use crate::config::{Config, SensorConfig};
use crate::energy::EnergyIntegrator;
use crate::sensor::ladder::OUTAGE_GRACE;
use crate::sensor::{ErrorKind, Events, Reading, SensorError};
use crate::state::live::LiveSlot;
use crate::state::{StoredBattery, StoredSensor};
use crate::time::LocalDay;

/// Longest pause between retries of a failing sensor (or its interval, if longer).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Failed samples in a row after which a sensor is logged as down (a missing bus at once):
/// one noisy sample is counted, not logged.
pub(crate) const DOWN_AFTER: u32 = 3;

/// Everything that happens to one sensor's results, in data-flow order.
pub struct SensorPipeline {
    name: String,
    interval: Duration,
    /// Wait before re-reading a chip that had no new conversion yet.
    retry_delay: Duration,
    integrator: EnergyIntegrator,
    detector: AnomalyDetector,
    status: Arc<SensorStatus>,
    snapshot: Snapshot,
    /// Where the totals go after every sample, to survive a crash.
    live: Option<LiveSlot>,
    /// The battery this sensor's shunt measures.
    battery: Option<BatteryMonitor>,
    /// Where the battery's state goes after every sample.
    battery_live: Option<LiveSlot>,
    /// The local day "today" is.
    today: Today,
    /// Consecutive failed reads.
    failures: u32,
    /// When the current run of failed reads began.
    failing_since: Option<Instant>,
    /// Reads since the outage outlasted [`OUTAGE_GRACE`]: the backoff exponent.
    backoff_steps: u32,
    /// The outage was logged, so its end is too.
    logged_down: bool,
}

/// The local day of "energy today", following the wall clock's date in either direction.
#[derive(Debug, Clone, Copy)]
struct Today {
    day: LocalDay,
    /// The day before this one (in the order they came, not the calendar's), the forward
    /// total when it began, and whether a step either way returns to it: a clock stepped ahead
    /// a day and back (an NTP fix on a Pi without a real-time clock) returns to its day with
    /// that day's energy. Only a step back returns, so that the real midnight after is a new
    /// day; but the day saved before a start, which the clock of the start did not show, is
    /// returned to either way (a clock behind at boot, set forward later).
    left: Option<(i64, f64, bool)>,
}

impl Today {
    /// A sample at `unix`: if its local date is another, "today" is that date's from now on
    /// (or, back on the day the clock just left, that day's again).
    fn follow(&mut self, s: &mut Snapshot, unix: f64) {
        if self.day.holds(unix) {
            return;
        }
        let day = crate::time::local_day(unix);
        let start = match self.left {
            Some((number, start, either)) if number == day.number => {
                if either || day.start < self.day.start {
                    start
                } else {
                    s.energy_joules
                }
            }
            _ => s.energy_joules,
        };
        self.left = Some((s.day, s.day_start_joules, false));
        s.day = day.number;
        s.day_start_joules = start;
        self.day = day;
    }
}

impl SensorPipeline {
    /// A pipeline continuing from `stored` totals, and the status it publishes to. With a
    /// `live` slot, the totals are stored there after every sample.
    pub fn new(
        config: &SensorConfig,
        stored: StoredSensor,
        live: Option<LiveSlot>,
    ) -> (SensorPipeline, Arc<SensorStatus>) {
        let detector = AnomalyDetector::new(&config.anomaly);
        let battery = config
            .battery
            .as_ref()
            .map(|b| BatteryMonitor::new(b, StoredBattery::default(), config.max_gap()));
        let rules = detector
            .rules()
            .union(battery.as_ref().map(|b| b.rules()).unwrap_or_default());
        // Energy "today" continues if the saved day is today; else (an earlier day, or a
        // later one, saved under a clock that was ahead) today starts now.
        let today = crate::time::local_day(crate::time::unix_now());
        let mut stored = stored;
        let mut left = None;
        if stored.day != today.number {
            // Kept for a clock that is wrong now and set right later, either way.
            if stored.day != 0 {
                left = Some((stored.day, stored.day_start_joules, true));
            }
            stored.day = today.number;
            stored.day_start_joules = stored.energy_joules;
        }
        let status = SensorStatus::new(config, rules, stored);
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
            snapshot: status.snapshot(),
            status: Arc::clone(&status),
            live,
            battery,
            battery_live: None,
            today: Today { day: today, left },
            failures: 0,
            failing_since: None,
            backoff_steps: 0,
            logged_down: false,
        };
        let mut pipeline = pipeline;
        if let Some(monitor) = &pipeline.battery {
            pipeline.snapshot.battery = Some(monitor.snapshot());
            status.publish(pipeline.snapshot);
        }
        (pipeline, status)
    }

    /// Continue the battery monitor from `stored`, storing its state into `live` after every
    /// sample.
    pub fn resume_battery(&mut self, stored: StoredBattery, live: Option<LiveSlot>) {
        if let Some(monitor) = &mut self.battery {
            *monitor = BatteryMonitor::new_like(monitor, stored);
            self.snapshot.battery = Some(monitor.snapshot());
            self.status.publish(self.snapshot);
            self.battery_live = live;
        }
    }

    /// Count what happened on the bus during a read: each failed transfer under its kind,
    /// each retry and reprogramming.
    pub fn record(&mut self, events: &Events) {
        let s = &mut self.snapshot;
        for (i, (kind, &n)) in ErrorKind::ALL
            .iter()
            .zip(&events.failed_transfers)
            .enumerate()
        {
            if n > 0 {
                s.errors_by_kind[i] += u64::from(n);
                s.read_errors += u64::from(n);
                s.last_error = Some(*kind);
            }
        }
        s.retries += u64::from(events.retries);
        s.reprograms += u64::from(events.reprogrammed);
    }

    /// Take one read's result through energy, anomalies, metrics and status.
    pub fn process(&mut self, result: Result<Reading, SensorError>, at: Instant, wall: SystemTime) {
        match result {
            Ok(reading) => self.on_reading(reading, at, wall),
            Err(e) => self.on_error(&e, at),
        }
        self.status.publish(self.snapshot);
    }

    fn on_reading(&mut self, reading: Reading, at: Instant, wall: SystemTime) {
        let unix = crate::time::unix(wall);
        if self.logged_down {
            log::info!(
                sensor = self.name.as_str();
                "sensor {} is back after {} failed read{}",
                self.name,
                self.failures,
                if self.failures == 1 { "" } else { "s" }
            );
        }
        if self.failures > 0 {
            self.failures = 0;
            self.failing_since = None;
            self.backoff_steps = 0;
            self.logged_down = false;
            self.status.set_down_reason(None);
        }
        let s = &mut self.snapshot;
        s.up = true;
        s.reading = Some(reading);
        self.status.record_power(unix, reading.power_watts);
        if reading.power_watts.is_nan() {
            // The shunt saturated: no value, so no sample.
            s.count_error(ErrorKind::Overflow);
        } else {
            let step = self.integrator.add(reading.power_watts, at);
            if step.gap {
                s.gaps += 1;
                self.detector.reset_pending();
            }
            s.samples += 1;
            s.last_sample_unix = Some(unix);
            s.last_sample_at = Some(at);
            s.stats.add(reading.power_watts, &step);
            s.energy_joules = self.integrator.forward_joules();
            s.energy_reverse_joules = self.integrator.reverse_joules();
            self.today.follow(s, unix);
            if let Some(live) = &mut self.live {
                live.store(&s.totals().to_values());
            }
        }
        let name = self.name.as_str();
        self.detector
            .observe(at, &reading, self.integrator.forward_joules(), |t| {
                mark(s, &t, unix);
                log_transition(name, &t);
            });
        s.active = self.detector.active();
        self.observe_battery(&reading, at, unix);
    }

    /// The battery monitor's part of a reading.
    fn observe_battery(&mut self, reading: &Reading, at: Instant, unix: f64) {
        let Some(monitor) = &mut self.battery else {
            return;
        };
        let (s, name) = (&mut self.snapshot, self.name.as_str());
        let (amps, volts) = (reading.current_amperes, reading.bus_voltage_volts);
        monitor.observe(amps, volts, at, unix, |t| {
            mark(s, &t, unix);
            log_transition(name, &t);
        });
        s.battery = Some(monitor.snapshot());
        s.active = s.active.union(monitor.active());
        if let Some(live) = &mut self.battery_live {
            live.store(&monitor.stored().to_values());
        }
    }

    fn on_error(&mut self, error: &SensorError, at: Instant) {
        let kind = error.kind();
        // A bus error's transfers were counted one by one (`record`).
        if !matches!(error, SensorError::Bus { .. }) {
            self.snapshot.count_error(kind);
        }
        self.snapshot.up = false;
        self.snapshot.last_error = Some(kind);
        self.failures = self.failures.saturating_add(1);
        let since = *self.failing_since.get_or_insert(at);
        if at.saturating_duration_since(since) >= OUTAGE_GRACE {
            self.backoff_steps = self.backoff_steps.saturating_add(1);
        }
        if self.failures == 1 {
            self.status.set_down_reason(Some(error.summary()));
        }
        let down = self.failures >= DOWN_AFTER || kind == ErrorKind::Unavailable;
        if down && !self.logged_down {
            self.logged_down = true;
            log::warn!(
                sensor = self.name.as_str(), kind = kind.as_str();
                "sensor {} is down: {error}; retrying every {}, backing off up to {} if it lasts beyond {}",
                self.name,
                humantime::format_duration(self.interval),
                humantime::format_duration(self.max_backoff()),
                humantime::format_duration(OUTAGE_GRACE)
            );
        } else {
            log::debug!(sensor = self.name.as_str(); "sensor {}: read {} failed: {error}", self.name, self.failures);
        }
    }

    fn max_backoff(&self) -> Duration {
        MAX_BACKOFF.max(self.interval)
    }

    /// The live-file slot, handed on to the pipeline that replaces this one.
    pub(crate) fn take_live(&mut self) -> Option<LiveSlot> {
        self.live.take()
    }

    /// The battery's live-file slot and name, handed on the same way.
    pub(crate) fn take_battery_live(&mut self) -> Option<(String, LiveSlot)> {
        let name = self.battery.as_ref()?.name().to_string();
        Some((name, self.battery_live.take()?))
    }

    /// Wait before re-reading a chip that had no new conversion yet.
    pub fn retry_delay(&self) -> Duration {
        self.retry_delay
    }

    /// When to read next, given the tick this read was scheduled for.
    pub fn next_tick(&self, scheduled: Instant, now: Instant) -> Instant {
        if self.backoff_steps > 0 {
            // An outage past its grace: the chip is really gone; ask less and less often.
            let factor = 1u32 << self.backoff_steps.min(16);
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

/// The pipeline of every configured sensor, in config order, starting from zero and without a
/// live file (`read`); and the statuses they publish to.
pub fn pipelines(config: &Config) -> (Vec<SensorPipeline>, Vec<Arc<SensorStatus>>) {
    config
        .sensors
        .iter()
        .map(|s| SensorPipeline::new(s, StoredSensor::default(), None))
        .unzip()
}

/// Note when a rule's episode started (NaN once it clears), and count its start.
fn mark(s: &mut Snapshot, t: &Transition, unix: f64) {
    if let Some(i) = Rule::ALL.iter().position(|r| *r == t.rule) {
        s.anomaly_since[i] = if t.started { unix } else { f64::NAN };
        if t.started {
            s.episodes[i] += 1;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use std::path::Path;

    #[test]
    fn today_follows_the_date_both_ways_and_returns_to_a_day_it_left() {
        let day = crate::time::local_day(1.8e9);
        let mut today = Today { day, left: None };
        let mut s = Snapshot {
            day: day.number,
            day_start_joules: 100.0,
            energy_joules: 150.0,
            ..Snapshot::default()
        };
        today.follow(&mut s, day.start + 60.0);
        assert_eq!((s.day, s.day_start_joules), (day.number, 100.0));
        // The clock steps a day ahead: a new day.
        today.follow(&mut s, day.end + 3600.0);
        assert_ne!(s.day, day.number);
        assert_eq!(s.energy_today_joules(), 0.0);
        // ... and back: the day it left, with that day's energy.
        s.energy_joules = 160.0;
        today.follow(&mut s, day.start + 120.0);
        assert_eq!((s.day, s.energy_today_joules()), (day.number, 60.0));
        // A start on a clock a day behind the saved day, set forward later: the saved day's
        // energy again.
        let mut behind = Today {
            day: crate::time::local_day(day.start - 3600.0),
            left: Some((day.number, 100.0, true)),
        };
        let mut b = Snapshot {
            day: behind.day.number,
            day_start_joules: 150.0,
            energy_joules: 150.0,
            ..Snapshot::default()
        };
        behind.follow(&mut b, day.start + 60.0);
        assert_eq!((b.day, b.energy_today_joules()), (day.number, 50.0));
        // The real midnight after that: a new day, from zero.
        let (mut after, mut t) = (today, s);
        after.follow(&mut t, day.end + 1.0);
        assert_eq!(t.energy_today_joules(), 0.0);
        // A step back to yesterday is a day change too.
        today.follow(&mut s, day.start - 3600.0);
        assert_ne!(s.day, day.number);
        assert_eq!(s.energy_today_joules(), 0.0);
        // The real midnight after: a new day from there.
        s.energy_joules = 170.0;
        today.follow(&mut s, day.end + 1.0);
        assert_eq!(s.energy_today_joules(), 0.0);
        assert_eq!(s.day, crate::time::local_day(day.end).number);
    }

    fn pipeline(text: &str) -> (SensorPipeline, Arc<SensorStatus>, Metrics) {
        let config = Config::from_toml(Path::new("t.toml"), text).unwrap();
        let board = crate::board::Board::new();
        let metrics = Metrics::new("0", "test", Arc::clone(&board)).unwrap();
        let (p, s) = SensorPipeline::new(&config.sensors[0], StoredSensor::default(), None);
        board.replace(vec![Arc::clone(&s)]);
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
            summary: "test".into(),
        };
        // Within the grace period every tick is kept: a noisy bus is not an absent chip.
        let mut at = t0;
        for _ in 0..10 {
            p.process(Err(err.clone()), at, SystemTime::now());
            let next = p.next_tick(at, at);
            assert_eq!(next, at + Duration::from_secs(1));
            at = next;
        }
        let mut waits = Vec::new();
        for _ in 0..7 {
            p.process(Err(err.clone()), at, SystemTime::now());
            let next = p.next_tick(at, at);
            waits.push(next.duration_since(at).as_secs());
            at = next;
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
        p.process(Ok(reading(10.0)), at, SystemTime::now());
        assert_eq!(p.next_tick(at, at), at + Duration::from_secs(1));
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
        // A transfer failed twice, was retried, and the sample failed on the third try.
        let mut events = Events::default();
        events.failed_transfers[1] = 3;
        events.retries = 2;
        p.record(&events);
        p.process(
            Err(SensorError::Bus {
                kind: ErrorKind::Timeout,
                detail: "test".into(),
                summary: "test".into(),
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
        assert!(text.contains("powermon_read_errors_total{kind=\"timeout\",sensor=\"a\"} 3"));
        assert!(text.contains("powermon_sensor_recoveries_total{action=\"retry\",sensor=\"a\"} 2"));
        assert!(
            text.contains("powermon_sensor_recoveries_total{action=\"reprogram\",sensor=\"a\"} 0")
        );
        assert!(text.contains("powermon_anomalies_total{rule=\"over_power\",sensor=\"a\"} 1"));
        assert!(text.contains("powermon_sensor_up{sensor=\"a\"} 0"));
    }

    #[test]
    fn every_sample_reaches_the_live_file() {
        use crate::state::live::{self, Kind, LiveFile};
        let config = Config::from_toml(Path::new("t.toml"), "[[sensor]]\nname = \"a\"\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.bin");
        let file = LiveFile::create(&path, 1).unwrap();
        let slot = file.claim(Kind::Sensor, "a", &[0.0]);
        let stored = StoredSensor::totals(1000.0, 5.0);
        let (mut p, _) = SensorPipeline::new(&config.sensors[0], stored, slot);
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
}
