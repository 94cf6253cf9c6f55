//! The `power-monitord` command: parse the arguments, run one command, and turn its failure
//! into one message and one exit status.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use power_monitord::calibrate::{self, CalibrateError};
use power_monitord::config::{Config, ConfigError, LogLevel, DEFAULT_CONFIG_PATH};
use power_monitord::http::web_config::WebConfigError;
use power_monitord::read::ReadError;
use power_monitord::sensor::scan::{self, ScanError};
use power_monitord::service::{self, ServiceError};
use power_monitord::{check, read, sensor};

/// sysexits.h: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits.h: a service (here, the I2C bus) is unavailable.
const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    name = "power-monitord",
    version,
    long_version = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("POWER_MONITORD_REVISION"), ")"),
    about = "Reads INA219, INA226, INA260 and INA3221 current/voltage sensors, integrates energy, flags anomalies and serves Prometheus metrics.",
    after_help = "Without a command, runs the daemon."
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,

    /// Listen on this address instead of the configured ones (repeatable; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,

    /// TLS and basic-auth configuration, in the exporter-toolkit's format (as node_exporter's
    /// --web.config.file); replaces daemon.web_config_file.
    #[arg(long = "web.config.file", global = true, value_name = "PATH")]
    web_config_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration file and print one line per sensor.
    CheckConfig,
    /// Look for INA219, INA226, INA260 and INA3221 chips at 0x40-0x4F on a bus and print a [[sensor]] block for each.
    ///
    /// Read-only. The bus is /dev/i2c-N, or the name of a simulated bus in --config.
    Scan {
        /// The bus to scan.
        #[arg(long, value_name = "BUS", default_value = "/dev/i2c-1")]
        bus: String,
    },
    /// Sample the configured sensors for a while and print what they read, without serving
    /// HTTP or touching the state file.
    ///
    /// Each chip is reset and programmed as the daemon would: beside a running daemon it
    /// refuses (stop the daemon first); simulated sensors share nothing and run beside one.
    Read {
        /// How long to sample, e.g. "10s" or "2m".
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
        duration: Duration,
    },
    /// Trim a sensor against a reference meter: average its readings, compare them with what
    /// the meter shows, and print (or --write) its [sensor.calibration].
    ///
    /// First with the load disconnected (--zero: the current offset), then with a steady load
    /// (--current A and --voltage V: the gains). See docs/accuracy.md.
    Calibrate {
        /// The sensor, by its name.
        sensor: String,
        /// Amperes through the shunt on the reference meter, in the sensor's sign.
        #[arg(long, value_name = "A", allow_hyphen_values = true)]
        current: Option<f64>,
        /// Volts at the load on the reference meter.
        #[arg(long, value_name = "V")]
        voltage: Option<f64>,
        /// No current flows (the load disconnected): measure the offset.
        #[arg(long)]
        zero: bool,
        /// How long to average.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
        duration: Duration,
        /// Write the trims into the configuration file (keeping its comments and layout).
        #[arg(long)]
        write: bool,
    },
}

/// A duration of at least a millisecond.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_millis(1) => Ok(d),
        Ok(_) => Err("expected a duration above 0, such as \"10s\"".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid web configuration\n{0}")]
    Web(#[from] WebConfigError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) | Failure::Web(_) => EX_CONFIG,
            Failure::Scan(ScanError::Unavailable { .. }) => EX_UNAVAILABLE,
            _ => 1,
        }
    }

    /// The reader of our output went away (`… | head`): nothing to report.
    fn is_closed_output(&self) -> bool {
        let io = match self {
            Failure::Output(e) | Failure::Read(ReadError::Output(e)) => e,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::BrokenPipe
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // As ripgrep and coreutils do: a closed pipe ends the command quietly.
        Err(failure) if failure.is_closed_output() => ExitCode::SUCCESS,
        Err(failure) => {
            if matches!(failure, Failure::Service(_)) {
                // The daemon's logger is up (journald under systemd): the error goes there.
                log::error!("{failure}");
            } else {
                let _ = writeln!(std::io::stderr(), "power-monitord: {failure}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Some(Command::Scan { bus }) => scan(&bus, &cli.config),
        Some(Command::CheckConfig) => {
            let config = Config::load(&cli.config)?;
            options(&cli).load_web(&config)?;
            Ok(check::run(&config, &mut std::io::stdout().lock())?)
        }
        Some(Command::Read { duration }) => {
            let config = Config::load(&cli.config)?;
            service::init_logging(LogLevel::Warn);
            Ok(read::run(&config, duration, &mut std::io::stdout().lock())?)
        }
        Some(Command::Calibrate {
            ref sensor,
            current,
            voltage,
            zero,
            duration,
            write,
        }) => {
            let config = Config::load(&cli.config)?;
            service::init_logging(LogLevel::Warn);
            let request = calibrate::Request {
                sensor: sensor.clone(),
                reference: calibrate::Reference {
                    current,
                    voltage,
                    zero,
                },
                duration,
                write,
            };
            Ok(calibrate::run(
                &config,
                &request,
                &mut std::io::stdout().lock(),
            )?)
        }
        None => {
            let config = Config::load(&cli.config)?;
            let options = options(&cli);
            let web = options.load_web(&config)?;
            service::init_logging(config.daemon.log_level);
            Ok(service::run(config, options, web)?)
        }
    }
}

fn options(cli: &Cli) -> service::Options {
    service::Options {
        listen: cli.listen.clone(),
        web_config_file: cli.web_config_file.clone(),
    }
}

/// `scan`: the configuration only names simulated buses, so a missing or broken one is not an
/// error when scanning a device node.
fn scan(bus: &str, config_path: &Path) -> Result<(), Failure> {
    let config = if bus.starts_with("/dev/") {
        Config::load(config_path).ok()
    } else {
        Some(Config::load(config_path)?)
    };
    let (simulated, found) = sensor::scan_bus(bus, config.as_ref())?;
    let mut out = std::io::stdout().lock();
    out.write_all(scan::report(bus, simulated, &found).as_bytes())?;
    Ok(out.flush()?)
}
