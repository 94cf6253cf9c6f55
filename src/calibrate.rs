//! `power-monitord calibrate SENSOR`: trims against a reference meter.
//!
//! The sensor is read untrimmed for a while and averaged (from the chip; or, while the daemon
//! runs, through its `/api/readings` with its trims taken off again); what the reference
//! meter shows is given on the command line; the trims that make the sensor agree follow:
//!
//! - `--zero` (the load disconnected): the current offset, what the sensor reads with no
//!   current (Victron's "zero current calibration");
//! - `--current A` (a steady load): the current gain, `A` over the reading less the offset;
//! - `--voltage V`: the bus voltage gain.
//!
//! corrected current = gain × reading − offset, where the offset is kept in corrected amperes
//! (gain × the zero reading), so a later `--current` rescales it. A one-point gain without a
//! zero leaves the offset in the gain: right at that current, off elsewhere by the offset's
//! share (docs/accuracy.md). Printed as a block for the sensor's `[sensor.calibration]`, or
//! written into the configuration file with `--write`, keeping its comments and layout.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::calibration::{Trim, MAX_GAIN_ERROR, MAX_OFFSET_SHARE};
use crate::config::{Config, SensorConfig};
use crate::sensor::{open_bus, Reading, SensorError};

/// What the reference meter shows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reference {
    /// `--current`: amperes through the shunt, in the sensor's sign.
    pub current: Option<f64>,
    /// `--voltage`: volts at the load.
    pub voltage: Option<f64>,
    /// `--zero`: no current flows.
    pub zero: bool,
}

/// Why a calibration was refused.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// Nothing to calibrate against, or two things that exclude each other.
    #[error("{0}")]
    Usage(String),
    /// No such sensor.
    #[error("no sensor {0:?} in the configuration; `power-monitord check-config` lists them")]
    NoSensor(String),
    /// The daemon has the chip, and its readings cannot be had over plain HTTP.
    #[error("the power-monitord daemon is running (it holds {}/state.lock) and its endpoint has a web configuration (TLS or basic auth) that calibrate does not use: stop it (sudo systemctl stop power-monitord), calibrate, and start it again", .0.display())]
    DaemonRunning(std::path::PathBuf),
    /// Asking the running daemon failed.
    #[error("cannot get the readings from the running daemon at {addr}: {why}")]
    Daemon {
        /// Where it was asked.
        addr: std::net::SocketAddr,
        /// What went wrong.
        why: String,
    },
    /// The sensor gave no reading.
    #[error("sensor {sensor} gave no valid reading in {seconds} s ({why}); a sensor that is down cannot be calibrated")]
    Down {
        /// The sensor.
        sensor: String,
        /// How long it was tried.
        seconds: u64,
        /// The last error.
        why: String,
    },
    /// The readings and the reference do not make a sensible trim.
    #[error("{0}")]
    Refused(String),
    /// Printing or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The average of a run of readings, untrimmed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Average {
    samples: usize,
    current: f64,
    current_sd: f64,
    voltage: f64,
    voltage_sd: f64,
}

impl Average {
    fn of(readings: &[Reading]) -> Option<Average> {
        let n = readings.len();
        let mean_sd = |f: fn(&Reading) -> f64| {
            let mean = readings.iter().map(f).sum::<f64>() / n as f64;
            let var =
                readings.iter().map(|r| (f(r) - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
            (mean, var.sqrt())
        };
        (n > 0).then(|| {
            let (current, current_sd) = mean_sd(|r| r.current_amperes);
            let (voltage, voltage_sd) = mean_sd(|r| r.bus_voltage_volts);
            Average {
                samples: n,
                current,
                current_sd,
                voltage,
                voltage_sd,
            }
        })
    }

    /// The standard error of the mean current.
    fn current_error(&self) -> f64 {
        self.current_sd / (self.samples as f64).sqrt()
    }

    fn voltage_error(&self) -> f64 {
        self.voltage_sd / (self.samples as f64).sqrt()
    }
}

/// The new trims, and how sure they are (relative, one standard error; `None`: not changed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) trim: Trim,
    pub(crate) current_gain_error: Option<f64>,
    pub(crate) offset_error: Option<f64>,
    pub(crate) voltage_gain_error: Option<f64>,
}

/// The trims that make `raw` (an untrimmed average) read `reference`, from the sensor's
/// trims `old`, for a sensor measuring up to `max_current`; or why not.
pub(crate) fn compute(
    old: Trim,
    raw: &Average,
    reference: &Reference,
    max_current: f64,
    lsb_amps: f64,
) -> Result<Outcome, CalibrateError> {
    let mut out = Outcome {
        trim: old,
        current_gain_error: None,
        offset_error: None,
        voltage_gain_error: None,
    };
    // The zero reading in the chip's amperes.
    let zero = old.current_offset_amps / old.current_gain;
    if reference.zero {
        let limit = MAX_OFFSET_SHARE * max_current;
        if raw.current.abs() > limit {
            return Err(CalibrateError::Refused(format!(
                "with no load the sensor reads {:.4} A, more than an offset can be (±{limit:.4} A, {:.0} % of max_current_amps): is the load really disconnected?",
                raw.current,
                MAX_OFFSET_SHARE * 100.0
            )));
        }
        out.trim.current_offset_amps = old.current_gain * raw.current;
        out.offset_error = Some(raw.current_error() + lsb_amps / 12f64.sqrt());
    }
    if let Some(amps) = reference.current {
        let measured = raw.current - zero;
        // Far enough from zero for the gain to mean something: 1 % of the range, and well
        // above the reading's resolution and noise.
        let floor = (0.01 * max_current)
            .max(100.0 * lsb_amps)
            .max(10.0 * raw.current_error());
        if measured.abs() < floor || amps.abs() < floor {
            return Err(CalibrateError::Refused(format!(
                "the sensor reads {:.4} A and the reference {amps} A: too close to zero for a gain (at least {floor:.4} A); calibrate the gain with a load of a good share of max_current_amps, and the offset with --zero",
                raw.current
            )));
        }
        if amps.signum() != measured.signum() {
            return Err(CalibrateError::Refused(format!(
                "the reference says {amps} A and the sensor {:.4} A: opposite signs. The sensor reads current from IN+ to IN- as positive: give the reference in that sign (or the meter's leads are the other way round)",
                raw.current
            )));
        }
        let gain = amps / measured;
        check_gain("current", gain, amps, raw.current)?;
        out.trim.current_gain = gain;
        out.trim.current_offset_amps = gain * zero;
        out.current_gain_error =
            Some((raw.current_error() + lsb_amps / 12f64.sqrt()) / measured.abs());
    }
    if let Some(volts) = reference.voltage {
        if raw.voltage < 0.5 || volts <= 0.0 {
            return Err(CalibrateError::Refused(format!(
                "the sensor reads {:.3} V and the reference {volts} V: a voltage gain needs a bus voltage of at least 0.5 V and a positive reference",
                raw.voltage
            )));
        }
        let gain = volts / raw.voltage;
        check_gain("voltage", gain, volts, raw.voltage)?;
        out.trim.voltage_gain = gain;
        out.voltage_gain_error = Some(raw.voltage_error() / raw.voltage);
    }
    Ok(out)
}

fn check_gain(what: &str, gain: f64, reference: f64, reading: f64) -> Result<(), CalibrateError> {
    if (gain - 1.0).abs() <= MAX_GAIN_ERROR {
        return Ok(());
    }
    Err(CalibrateError::Refused(format!(
        "the reference {reference} and the sensor's {reading:.4} make a {what} gain of {gain:.4}, more than {:.0} % off: check shunt_ohms (and max_current_amps) in the configuration, the wiring and the reference meter's range rather than trim it away",
        MAX_GAIN_ERROR * 100.0
    )))
}

/// Read `sensor` (untrimmed) for `duration` at its interval: the readings, or why none.
fn sample(
    config: &Config,
    sensor: &SensorConfig,
    duration: Duration,
    out: &mut impl Write,
) -> Result<Vec<Reading>, CalibrateError> {
    // A progress line on a terminal; a log or a pipe gets the result only.
    let progress = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Every sensor of its bus, untrimmed (an INA3221's channels share the chip).
    let on_bus: Vec<SensorConfig> = config
        .sensors
        .iter()
        .filter(|s| s.bus == sensor.bus)
        .map(SensorConfig::untrimmed)
        .collect();
    let index = on_bus
        .iter()
        .position(|s| s.name == sensor.name)
        .unwrap_or(0);
    let mut sensors = open_bus(&on_bus);
    let Some(chip) = sensors.get_mut(index) else {
        return Err(CalibrateError::Usage(
            "the sensor's bus has no sensors".into(),
        ));
    };
    let started = Instant::now();
    let mut readings = Vec::new();
    let mut last_error = String::from("no answer");
    let mut next = started;
    while started.elapsed() < duration {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += sensor.interval;
        match read_ready(chip.as_mut(), sensor.conversion_time()) {
            Ok(r) if !r.overflow && r.current_amperes.is_finite() => readings.push(r),
            Ok(_) => last_error = "the shunt saturated: the load is beyond max_current_amps".into(),
            Err(e) => last_error = e.to_string(),
        }
        if progress {
            write!(
                out,
                "\r  {} readings in {:.0} of {} s ",
                readings.len(),
                started.elapsed().as_secs_f64(),
                duration.as_secs()
            )?;
            out.flush()?;
        }
    }
    if progress {
        writeln!(out)?;
    }
    if readings.is_empty() {
        return Err(CalibrateError::Down {
            sensor: sensor.name.clone(),
            seconds: duration.as_secs(),
            why: last_error,
        });
    }
    Ok(readings)
}

/// Where the running daemon answers plain HTTP on this machine: its first listen address
/// (a wildcard as loopback); none when a web configuration may ask for TLS or a password.
fn daemon_address(config: &Config) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    if config.daemon.web_config_file.is_some() {
        return None;
    }
    let mut addr = *config.daemon.listen.first()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Some(addr)
}

/// `sensor`'s readings from the running daemon's `/api/readings` for `duration`, a new one
/// per sample, with the trims the daemon applies (it says which) taken off again.
fn from_daemon(
    addr: std::net::SocketAddr,
    sensor: &SensorConfig,
    duration: Duration,
) -> Result<Vec<Reading>, CalibrateError> {
    let failed = |why: String| CalibrateError::Daemon { addr, why };
    let started = Instant::now();
    let mut readings = Vec::new();
    let mut last_sample = None;
    let mut why_none = String::from("it reported no sample");
    while started.elapsed() < duration {
        let json = get_json(addr, "/api/readings").map_err(failed)?;
        let entry = json["sensors"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == sensor.name.as_str()))
            .ok_or_else(|| failed(format!("it has no sensor {:?} (reload it?)", sensor.name)))?;
        let at = entry["last_sample_timestamp_seconds"].as_f64();
        // The trims the daemon applies (its configuration may be older than the file's).
        let in_force = &entry["calibration"];
        let trim = Trim {
            current_gain: in_force["current_gain"].as_f64().unwrap_or(1.0),
            current_offset_amps: in_force["current_offset_amps"].as_f64().unwrap_or(0.0),
            voltage_gain: in_force["voltage_gain"].as_f64().unwrap_or(1.0),
        };
        let values = (
            entry["up"].as_bool(),
            entry["current_amperes"].as_f64(),
            entry["bus_voltage_volts"].as_f64(),
        );
        match values {
            _ if entry["overflow"].as_bool() == Some(true) => {
                why_none = "the shunt saturated: the load is beyond max_current_amps".into()
            }
            (Some(true), Some(amps), Some(volts)) if at != last_sample => {
                last_sample = at;
                let raw_amps = (amps + trim.current_offset_amps) / trim.current_gain;
                let raw_volts = volts / trim.voltage_gain;
                readings.push(Reading::measured(raw_volts, 0.0, raw_amps, false, false));
            }
            (Some(false), ..) => why_none = "the daemon reports it down".into(),
            _ => {}
        }
        std::thread::sleep(sensor.interval.min(Duration::from_secs(1)));
    }
    if readings.is_empty() {
        return Err(CalibrateError::Down {
            sensor: sensor.name.clone(),
            seconds: duration.as_secs(),
            why: why_none,
        });
    }
    Ok(readings)
}

/// A GET on the daemon over plain HTTP/1.1, its JSON body.
fn get_json(addr: std::net::SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    use std::io::Read;
    let timeout = Duration::from_secs(5);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(crate::files::MAX_SMALL_FILE)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(format!(
            "it answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    serde_json::from_slice(&raw[split + 4..]).map_err(|e| e.to_string())
}

/// A reading, waiting out a conversion in progress (the chip's first).
fn read_ready(
    chip: &mut dyn crate::sensor::Sensor,
    conversion: Duration,
) -> Result<Reading, SensorError> {
    let mut result = chip.read();
    for _ in 0..3 {
        if !matches!(result, Err(SensorError::NotReady)) {
            break;
        }
        std::thread::sleep(conversion + conversion / 4 + Duration::from_millis(1));
        result = chip.read();
    }
    result
}

/// The resolution of a sensor's current: its shunt voltage LSB through its shunt.
fn current_lsb(sensor: &SensorConfig) -> f64 {
    use crate::config::Chip;
    let shunt_lsb_volts = match sensor.chip() {
        Chip::Ina219 => 10e-6,
        Chip::Ina226 => 2.5e-6,
        Chip::Ina3221 => 40e-6,
        Chip::Ina260 => return 1.25e-3,
    };
    shunt_lsb_volts / sensor.shunt_ohms()
}

/// What `calibrate` was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The sensor's name.
    pub sensor: String,
    /// What the reference meter shows.
    pub reference: Reference,
    /// How long to average.
    pub duration: Duration,
    /// Write the trims into the configuration file.
    pub write: bool,
}

/// Calibrate as `request` says; the report goes to `out`.
pub fn run(config: &Config, request: &Request, out: &mut impl Write) -> Result<(), CalibrateError> {
    let reference = &request.reference;
    if !reference.zero && reference.current.is_none() && reference.voltage.is_none() {
        return Err(CalibrateError::Usage(
            "nothing to calibrate against: give what the reference meter shows (--current A, --voltage V), or --zero with the load disconnected".into(),
        ));
    }
    if reference.zero && reference.current.is_some() {
        return Err(CalibrateError::Usage(
            "--zero needs the load disconnected and --current a load: calibrate them one after the other, --zero first".into(),
        ));
    }
    let sensor = config
        .sensors
        .iter()
        .find(|s| s.name == request.sensor)
        .ok_or_else(|| CalibrateError::NoSensor(request.sensor.clone()))?;
    let running = match crate::state::daemon_running(config) {
        Ok(running) => running,
        // A simulated sensor shares no chip with a daemon.
        Err(_) if sensor.driver == crate::config::Driver::Simulated => None,
        Err(why) => {
            return Err(CalibrateError::Usage(format!(
                "cannot tell whether the power-monitord daemon is running ({why}), and calibrate must not share its chips: run it with sudo"
            )))
        }
    };
    let readings = if let Some(state_dir) = running {
        // The daemon has the chips: its readings, untrimmed.
        let addr = daemon_address(config).ok_or(CalibrateError::DaemonRunning(state_dir))?;
        writeln!(
            out,
            "Averaging {} for {} s through the running daemon at http://{addr}/ (untrimmed) …",
            sensor.name,
            request.duration.as_secs()
        )?;
        from_daemon(addr, sensor, request.duration)?
    } else {
        writeln!(
            out,
            "Averaging {} for {} s (untrimmed) …",
            sensor.name,
            request.duration.as_secs()
        )?;
        sample(config, sensor, request.duration, out)?
    };
    let raw = Average::of(&readings).expect("at least one reading");
    let old = sensor.calibration;
    let outcome = compute(
        old,
        &raw,
        reference,
        sensor.max_current_amps(),
        current_lsb(sensor),
    )?;
    report(out, sensor, &raw, reference, &outcome)?;
    let block = Block {
        trim: outcome.trim,
        reference: *reference,
        date: crate::time::local_date(crate::time::unix_now()),
    };
    // What the file would hold, checked as the daemon will check it (a trim rounded to the
    // edge of its range, an offset the gain took past its limit).
    let text = crate::files::read_text(&config.path, crate::files::MAX_SMALL_FILE)?;
    let new_text =
        with_calibration(&text, &sensor.name, &block).map_err(CalibrateError::Refused)?;
    if let Err(e) = Config::from_toml(&config.path, &new_text) {
        return Err(CalibrateError::Refused(format!(
            "these trims would make a configuration power-monitord refuses:\n{e}"
        )));
    }
    if request.write {
        let written = write_file(&config.path, &new_text)?;
        writeln!(
            out,
            "\nWritten to {}; `sudo systemctl reload power-monitord` applies it from the next sample (energy totals are not touched).",
            written.display()
        )?;
    } else {
        writeln!(
            out,
            "\nPaste into the sensor's block in {} (or run again with --write):\n\n[sensor.calibration]\n{}",
            config.path.display(),
            block
        )?;
    }
    Ok(())
}

fn report(
    out: &mut impl Write,
    sensor: &SensorConfig,
    raw: &Average,
    reference: &Reference,
    outcome: &Outcome,
) -> io::Result<()> {
    let old = sensor.calibration;
    let new = outcome.trim;
    let row = |trim: &Trim| (trim.current(raw.current), trim.voltage(raw.voltage));
    let (before_a, before_v) = row(&old);
    let (after_a, after_v) = row(&new);
    writeln!(out, "{} readings:", raw.samples)?;
    writeln!(
        out,
        "  before: {before_a:>10.5} A  {before_v:>9.4} V  {:>10.4} W",
        before_a * before_v
    )?;
    writeln!(
        out,
        "  after:  {after_a:>10.5} A  {after_v:>9.4} V  {:>10.4} W",
        after_a * after_v
    )?;
    let reference_text = match (reference.zero, reference.current, reference.voltage) {
        (true, _, v) => format!("0 A{}", v.map(|v| format!(", {v} V")).unwrap_or_default()),
        (false, a, v) => [a.map(|a| format!("{a} A")), v.map(|v| format!("{v} V"))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
    };
    writeln!(out, "  reference: {reference_text}")?;
    let pct = |e: Option<f64>| {
        e.map(|e| format!(" (± {:.3} %)", e * 100.0))
            .unwrap_or_default()
    };
    writeln!(out, "Trims:")?;
    writeln!(
        out,
        "  current_gain        {:.6}{}",
        new.current_gain,
        pct(outcome.current_gain_error)
    )?;
    writeln!(
        out,
        "  current_offset_amps {:.6}{}",
        new.current_offset_amps,
        outcome
            .offset_error
            .map(|e| format!(" (± {e:.6} A)"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "  voltage_gain        {:.6}{}",
        new.voltage_gain,
        pct(outcome.voltage_gain_error)
    )
}

/// A `[sensor.calibration]` block's contents: the trims, with the date and reference as a
/// comment.
pub(crate) struct Block {
    pub(crate) trim: Trim,
    pub(crate) reference: Reference,
    pub(crate) date: String,
}

impl Block {
    fn comment(&self) -> String {
        let r = &self.reference;
        let mut parts = Vec::new();
        if r.zero {
            parts.push("0 A (no load)".to_string());
        }
        if let Some(a) = r.current {
            parts.push(format!("{a} A"));
        }
        if let Some(v) = r.voltage {
            parts.push(format!("{v} V"));
        }
        format!(
            "# calibrated {} against {} on a reference meter (power-monitord calibrate)",
            self.date,
            parts.join(", ")
        )
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.comment())?;
        writeln!(f, "current_gain = {:.6}", self.trim.current_gain)?;
        writeln!(
            f,
            "current_offset_amps = {:.6}",
            self.trim.current_offset_amps
        )?;
        writeln!(f, "voltage_gain = {:.6}", self.trim.voltage_gain)
    }
}

/// `text` (a configuration file) with `sensor`'s `[sensor.calibration]` set to `block`,
/// everything else as it was: comments, blank lines, order.
pub(crate) fn with_calibration(text: &str, sensor: &str, block: &Block) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let sensors = doc
        .get_mut("sensor")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
        .ok_or("no [[sensor]] in the file")?;
    let table = sensors
        .iter_mut()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(sensor))
        .ok_or_else(|| format!("no [[sensor]] named {sensor:?} in the file"))?;
    let round = |x: f64| (x * 1e6).round() / 1e6;
    let mut calibration = toml_edit::Table::new();
    calibration["current_gain"] = toml_edit::value(round(block.trim.current_gain));
    calibration["current_offset_amps"] = toml_edit::value(round(block.trim.current_offset_amps));
    calibration["voltage_gain"] = toml_edit::value(round(block.trim.voltage_gain));
    calibration
        .decor_mut()
        .set_prefix(format!("\n{}\n", block.comment()));
    match table.get_mut("calibration") {
        Some(existing) => {
            // In its place; the earlier calibration's comment gives way to this one's.
            if let Some(existing) = existing.as_table_mut() {
                let position = existing.position();
                *existing = calibration;
                existing.set_position(position);
            } else {
                *existing = toml_edit::Item::Table(calibration);
            }
        }
        None => {
            table.insert("calibration", toml_edit::Item::Table(calibration));
        }
    }
    Ok(doc.to_string())
}

/// Replace the configuration file at `path` (a link followed to the file) with `text`:
/// written beside it, synced, renamed over it, with its owner, group and permissions.
fn write_file(path: &Path, text: &str) -> Result<std::path::PathBuf, CalibrateError> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&target)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".calibrate.")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(tmp.path(), meta.permissions())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(target)
}

#[cfg(test)]
mod tests;
