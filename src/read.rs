//! `power-monitord read`: sample the configured sensors for a while without serving HTTP,
//! print what they read as it comes, and a summary per sensor at the end.
//!
//! It runs the daemon's own pipeline (bus threads, energy, anomalies) with its totals starting
//! at zero and no state file, so "energy" in the summary is what was used during the run.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sampler::{Sampler, SensorPipeline};
use crate::sensor::simulated::Clock;
use crate::service::{REVISION, VERSION};
use crate::state::StoredSensor;
use crate::status::{SensorStatus, Snapshot};

/// How `read` ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Sensors that never gave a valid sample.
    pub silent: Vec<String>,
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

/// Sample every configured sensor for `duration` (or until Ctrl-C), writing to `out`.
pub fn run(config: &Config, duration: Duration, out: &mut impl Write) -> io::Result<Outcome> {
    let metrics = Metrics::new(config, VERSION, REVISION).map_err(io::Error::other)?;
    let (pipelines, statuses): (Vec<_>, Vec<Arc<SensorStatus>>) = config
        .sensors
        .iter()
        .map(|s| SensorPipeline::new(s, &metrics, StoredSensor::default(), None))
        .unzip();
    let width = config
        .sensors
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let every = config
        .sensors
        .iter()
        .map(|s| s.interval)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_secs(1));

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

    let sampler = Sampler::start(config, pipelines, &Clock::real(), |message| {
        log::error!("{message}");
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = Instant::now();
    let printed = runtime.block_on(async {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let end = tokio::time::sleep(duration);
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let elapsed = start.elapsed().as_secs_f64();
                    for s in &statuses {
                        writeln!(out, "{}", row(elapsed, &s.name, &s.snapshot(), width))?;
                    }
                    out.flush()?;
                }
                _ = &mut end => return Ok::<_, io::Error>(()),
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    });
    sampler.stop();
    printed?;

    let seconds = start.elapsed().as_secs_f64();
    writeln!(out, "\nOver {seconds:.1} s:")?;
    writeln!(
        out,
        "{:<width$}  {:>7} {:>7} {:>11} {:>11} {:>11} {:>12}",
        "sensor", "samples", "errors", "avg W", "min W", "max W", "energy Wh"
    )?;
    let watts = |v: Option<f64>| v.map_or("-".to_string(), |w| format!("{w:.3}"));
    let mut silent = Vec::new();
    for s in &statuses {
        let snap = s.snapshot();
        if snap.samples == 0 {
            silent.push(s.name.clone());
        }
        writeln!(
            out,
            "{:<width$}  {:>7} {:>7} {:>11} {:>11} {:>11} {:>12.4}",
            s.name,
            snap.samples,
            snap.read_errors,
            watts(snap.stats.avg_watts()),
            watts(snap.stats.min_watts),
            watts(snap.stats.max_watts),
            snap.energy_joules / 3600.0,
        )?;
    }
    Ok(Outcome { silent })
}
