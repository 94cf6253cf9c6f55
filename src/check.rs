//! `power-monitord check-config`: the file is valid, and this is what each sensor will be
//! programmed with and checked against.

use std::io::{self, Write};

use crate::config::{Config, SensorConfig};
use crate::sensor;

/// Print the verdict and one line per sensor to `out`.
pub fn run(config: &Config, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{}: OK, {} sensor(s)",
        config.path.display(),
        config.sensors.len()
    )?;
    for s in &config.sensors {
        writeln!(out, "  {}", describe(s, config))?;
    }
    Ok(())
}

/// One sensor in a line: where, what the chip is programmed with, how often, which rules.
pub(crate) fn describe(s: &SensorConfig, config: &Config) -> String {
    let a = &s.anomaly;
    let mut rules = Vec::new();
    if let Some(w) = a.max_power_watts {
        rules.push(format!(
            "over_power >{w} W for {}",
            humantime::format_duration(a.max_power_for())
        ));
    }
    if let Some(b) = a.energy_budget {
        rules.push(format!(
            "energy_budget {} kWh per {}",
            b.kwh,
            humantime::format_duration(b.window)
        ));
    }
    if let Some(k) = a.spike_sigma {
        rules.push(format!("spike {k}σ"));
    }
    if let Some([lo, hi]) = a.allowed_bus_volts {
        rules.push(format!("bus {lo}–{hi} V"));
    }
    rules.push("overrange".into());
    let load = match s.simulation().and_then(|sim| sim.load.as_ref()) {
        Some(load) => format!("; load {load}"),
        None => String::new(),
    };
    let t = s.calibration;
    let trims = if t.is_none() {
        String::new()
    } else {
        format!(
            "; calibrated: current × {:.6} − {:.6} A, voltage × {:.6}",
            t.current_gain, t.current_offset_amps, t.voltage_gain
        )
    };
    format!(
        "{name}: {driver} at {address:#04x} on {bus}; {model}: {chip}, every {interval}; rules: {rules}{trims}{load}",
        name = s.name,
        driver = s.driver.as_str(),
        model = s.chip().title(),
        address = s.address,
        bus = s.bus,
        chip = sensor::describe_programming(s, config),
        interval = humantime::format_duration(s.interval),
        rules = rules.join(", "),
    )
}
