//! The `power-monitord` command: parse arguments, load the configuration, hand off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use power_monitord::config::{Config, ConfigError, LogLevel, DEFAULT_CONFIG_PATH};
use power_monitord::service;

/// sysexits.h: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits.h: a service (here, the I2C bus) is unavailable.
const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    name = "power-monitord",
    version,
    long_version = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("POWER_MONITORD_REVISION"), ")"),
    about = "Reads INA219 current/voltage sensors, integrates energy, flags anomalies and serves Prometheus metrics.",
    after_help = "Without a command, runs the daemon."
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,

    /// Listen on this address instead of the configured ones (repeatable; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration file and print one line per sensor.
    CheckConfig,
    /// Look for INA219s at 0x40-0x4F on a bus and print a [[sensor]] block for each.
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
    /// Each chip is reset and programmed as the daemon would: stop a running daemon first,
    /// or it will re-initialise its chips afterwards.
    Read {
        /// How long to sample, e.g. "10s" or "2m".
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        match &e {
            ConfigError::Invalid(d) => eprintln!("power-monitord: invalid configuration\n{d}"),
            ConfigError::Read { .. } => eprintln!("power-monitord: {e}"),
        }
        ExitCode::from(EX_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Scan { bus }) = &cli.command {
        return scan(bus, &cli.config);
    }
    let config = match load(&cli.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            println!(
                "{}: OK, {} sensor(s)",
                config.path.display(),
                config.sensors.len()
            );
            for line in service::describe(&config) {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Some(Command::Scan { .. }) => unreachable!("handled before loading the configuration"),
        Some(Command::Read { duration }) => {
            service::init_logging(LogLevel::Warn);
            match power_monitord::read::run(&config, duration, &mut std::io::stdout().lock()) {
                Ok(outcome) if outcome.silent.is_empty() => ExitCode::SUCCESS,
                Ok(outcome) => {
                    eprintln!(
                        "power-monitord: no valid sample from {} (see the messages above)",
                        outcome.silent.join(", ")
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("power-monitord: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            service::init_logging(config.daemon.log_level);
            match service::run(config, cli.listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `scan`: the configuration is optional here (it only names simulated buses), so a missing
/// or broken one is not an error when scanning hardware.
fn scan(bus: &str, config_path: &std::path::Path) -> ExitCode {
    let config = Config::load(config_path).ok();
    match power_monitord::sensor::scan_bus(bus, config.as_ref()) {
        Ok((driver, found)) => {
            print!(
                "{}",
                power_monitord::sensor::scan::report(bus, driver, &found)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("power-monitord: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}
