//! The `power-monitord` command: parse arguments, load the configuration, hand off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use power_monitord::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use power_monitord::service;

/// sysexits.h: configuration error.
const EX_CONFIG: u8 = 78;

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
