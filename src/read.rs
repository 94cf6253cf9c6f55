//! `power-monitord read`: sample the configured sensors for a while without serving HTTP,
//! print what they read as it comes, and a summary per sensor at the end.
//!
//! It runs the daemon's own pipeline (bus threads, energy, anomalies) with its totals starting
//! at zero and no state file, so "energy" in the summary is what was used during the run.

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::battery::BatterySnapshot;
use crate::board::{SensorStatus, Snapshot};
use crate::config::{Config, Driver};
use crate::energy::JOULES_PER_WH;
use crate::sampler::{self, OnPanic, Sampler};
use crate::sensor::ErrorKind;

/// Why `read` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Writing the readings failed (a closed pipe, a full disk).
    #[error("cannot write the readings: {0}")]
    Output(#[from] io::Error),
    /// The sampling threads could not start.
    #[error("cannot start the sampling threads: {0}")]
    Threads(io::Error),
    /// Some sensors gave no valid sample.
    #[error("no valid sample from {}", Silent(.0))]
    Silent(Vec<(String, Option<ErrorKind>)>),
    /// The daemon runs on these sensors (it holds the lock of this state directory).
    #[error("the power-monitord daemon is running (it holds {}/state.lock), and `read` would share its chips: stop it first (sudo systemctl stop power-monitord), or see its readings at http://localhost:9723/ or with `curl -s localhost:9723/api/readings`", .0.display())]
    DaemonRunning(std::path::PathBuf),
    /// Whether the daemon runs could not be found out.
    #[error("cannot tell whether the power-monitord daemon is running ({0}), and `read` must not share its chips: run it as the service user (sudo -u power-monitord power-monitord read …)")]
    CannotTell(String),
}

/// The silent sensors, each with why.
struct Silent<'a>(&'a [(String, Option<ErrorKind>)]);

impl fmt::Display for Silent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, error)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match error {
                Some(kind) => write!(f, "{name} ({kind}: see its message above)")?,
                None => write!(f, "{name} (no read was due yet: read for longer)")?,
            }
        }
        Ok(())
    }
}

fn row(elapsed: f64, name: &str, snap: &Snapshot, width: usize) -> String {
    let state = match (snap.up, snap.reading) {
        (true, Some(r)) if r.power_watts.is_nan() => {
            format!(
                "{:>9.3} V   shunt saturated (beyond the configured range)",
                r.bus_voltage_volts
            )
        }
        (true, Some(r)) => format!(
            "{:>9.3} V {:>11.4} A {:>11.3} W{}",
            r.bus_voltage_volts,
            r.current_amperes,
            r.power_watts,
            if r.overflow { "  (overrange)" } else { "" }
        ),
        _ => format!(
            "down ({})",
            snap.last_error.map_or("no reading yet", |k| k.as_str())
        ),
    };
    format!("{elapsed:>7.1} s  {name:<width$}  {state}")
}

/// Sample every configured sensor for `duration` (or until Ctrl-C), writing to `out`; fails
/// if a sensor gave no valid sample.
pub fn run(config: &Config, duration: Duration, out: &mut impl Write) -> Result<(), ReadError> {
    // Two programs on one chip would fight over its settings; simulated sensors share nothing.
    if config.sensors.iter().any(|s| s.driver != Driver::Simulated) {
        match crate::state::daemon_running(config) {
            Ok(None) => {}
            Ok(Some(dir)) => return Err(ReadError::DaemonRunning(dir)),
            Err(why) => return Err(ReadError::CannotTell(why)),
        }
    }
    let (pipelines, statuses) = sampler::pipelines(config);
    let width = config
        .sensors
        .iter()
        .map(|s| s.name.len() + usize::from(!s.calibration.is_none()))
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "Reading {} sensor(s) for {} (Ctrl-C to stop early); no HTTP, no state file.",
        config.sensors.len(),
        humantime::format_duration(duration)
    )?;
    writeln!(
        out,
        "{:>9}  {:<width$}  {:>11} {:>13} {:>13}",
        "time", "sensor", "bus", "current", "power"
    )?;

    let on_panic: OnPanic =
        Arc::new(|bus| log::error!("the sampling thread of bus {bus} panicked"));
    let sampler = Sampler::start(config, pipelines, on_panic).map_err(ReadError::Threads)?;
    let start = Instant::now();
    // Print a row per sensor every interval (at least a second), until the time is up.
    let every = config
        .sensors
        .iter()
        .map(|s| s.interval)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_secs(1));
    let printed = print_rows(&statuses, duration, every, width, out);
    sampler.stop();
    let shown = printed?;
    // The samples taken after the last row (as the time ran out): a row each, so that for a
    // sensor sampled once a second or less often every sample the summary counts was shown.
    for (s, shown) in statuses.iter().zip(shown) {
        let snap = s.snapshot();
        if snap.samples + snap.read_errors != shown {
            let elapsed = start.elapsed().as_secs_f64();
            writeln!(out, "{}", row(elapsed, &s.name, &snap, width))?;
        }
    }
    summary(&statuses, start.elapsed(), width, out)
}

/// A row per sample of each sensor (at most one per `every` for a sensor sampled faster), for
/// `duration` or until Ctrl-C; what each sensor's last row showed (its reads so far).
fn print_rows(
    statuses: &[Arc<SensorStatus>],
    duration: Duration,
    every: Duration,
    width: usize,
    out: &mut impl Write,
) -> Result<Vec<u64>, ReadError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReadError::Threads)?;
    let start = Instant::now();
    let mut shown = vec![0; statuses.len()];
    let mut last_row: Vec<Option<Instant>> = vec![None; statuses.len()];
    // A little early is still this interval's sample: the sampler's schedule jitters.
    let spacing = every.saturating_sub(Duration::from_millis(100));
    runtime.block_on(async {
        let end = tokio::time::sleep(duration);
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = &mut end => break,
                _ = tokio::signal::ctrl_c() => break,
            }
            for (i, s) in statuses.iter().enumerate() {
                let snap = s.snapshot();
                let reads = snap.samples + snap.read_errors;
                if reads != shown[i] && last_row[i].is_none_or(|t| t.elapsed() >= spacing) {
                    shown[i] = reads;
                    last_row[i] = Some(Instant::now());
                    let elapsed = start.elapsed().as_secs_f64();
                    writeln!(out, "{}", row(elapsed, &s.name, &snap, width))?;
                }
            }
            out.flush()?;
        }
        Ok::<(), ReadError>(())
    })?;
    Ok(shown)
}

/// The summary table; the sensors without a valid sample are the error.
fn summary(
    statuses: &[Arc<SensorStatus>],
    elapsed: Duration,
    width: usize,
    out: &mut impl Write,
) -> Result<(), ReadError> {
    writeln!(out, "\nOver {:.1} s:", elapsed.as_secs_f64())?;
    writeln!(
        out,
        "{:<width$}  {:>7} {:>7} {:>11} {:>11} {:>11} {:>12}",
        "sensor", "samples", "errors", "avg W", "min W", "max W", "energy Wh"
    )?;
    let watts = |v: Option<f64>| v.map_or("-".to_string(), |w| format!("{w:.3}"));
    let mut silent = Vec::new();
    for s in statuses {
        let snap = s.snapshot();
        if snap.samples == 0 {
            silent.push((s.name.clone(), snap.last_error));
        }
        let name = if s.calibrated {
            format!("{}*", s.name)
        } else {
            s.name.clone()
        };
        writeln!(
            out,
            "{:<width$}  {:>7} {:>7} {:>11} {:>11} {:>11} {:>12.4}",
            name,
            snap.samples,
            snap.read_errors,
            watts(snap.stats.avg_watts()),
            watts(snap.stats.min_watts),
            watts(snap.stats.max_watts),
            snap.energy_joules / JOULES_PER_WH,
        )?;
    }
    if statuses.iter().any(|s| s.calibrated) {
        writeln!(
            out,
            "* calibrated against a reference meter ([sensor.calibration])"
        )?;
    }
    for s in statuses {
        if let (Some(info), Some(b)) = (&s.battery, s.snapshot().battery) {
            writeln!(out, "{}", battery_line(&info.name, &s.name, &b))?;
        }
    }
    if silent.is_empty() {
        Ok(())
    } else {
        Err(ReadError::Silent(silent))
    }
}

/// A battery in a line: state of charge, how sure, time to go, charge during the run.
fn battery_line(name: &str, sensor: &str, b: &BatterySnapshot) -> String {
    let soc = match (b.state_of_charge, b.uncertainty()) {
        (Some(soc), Some(0.0)) => format!("{:.1} % (synchronised)", soc * 100.0),
        (Some(soc), Some(u)) => format!("{:.1} % (estimate ± {:.0} %)", soc * 100.0, u * 100.0),
        (Some(soc), None) => format!("{:.1} % (estimate)", soc * 100.0),
        (None, _) => {
            "state of charge unknown until a full charge (read keeps no state)".to_string()
        }
    };
    let to_go = match b.time_to_go_seconds {
        Some(t) if t.is_finite() => format!(
            ", {} to go",
            humantime::format_duration(Duration::from_secs(t as u64 / 60 * 60))
        ),
        _ => String::new(),
    };
    format!(
        "battery {name} (sensor {sensor}): {soc}{to_go}; in {:.4} Ah, out {:.4} Ah",
        b.stored.charge_in_coulombs / 3600.0,
        b.stored.charge_out_coulombs / 3600.0
    )
}
