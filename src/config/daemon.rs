//! `[daemon]`: how the process itself runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::diagnostic::{invalid, Check};
use super::values::{duration, one_or_many_addrs};
use super::DEFAULT_PORT;

/// The longest `persist_interval`: a power cut loses the energy of up to one.
pub(crate) const MAX_PERSIST_INTERVAL: Duration = Duration::from_secs(3600);

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Scrape addresses: one string or a list of them.
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub(crate) listen: Vec<SocketAddr>,
    /// How often energy totals are written to the state file.
    #[serde(deserialize_with = "duration")]
    pub(crate) persist_interval: Duration,
    /// Log threshold; `RUST_LOG` overrides it.
    pub log_level: LogLevel,
    /// Where `state.json` lives when `$STATE_DIRECTORY` is not set.
    pub(crate) state_dir: Option<PathBuf>,
    /// The web configuration file (TLS, basic auth), relative to this file;
    /// `--web.config.file` overrides it.
    pub(crate) web_config_file: Option<PathBuf>,
    /// `/healthz` answers without authentication (for local health checks).
    pub(crate) public_healthz: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))],
            persist_interval: Duration::from_secs(30),
            log_level: LogLevel::Info,
            state_dir: None,
            web_config_file: None,
            public_healthz: false,
        }
    }
}

impl DaemonConfig {
    /// Checks of `[daemon]` on its own; keys relative to it.
    pub(crate) fn check(&self) -> Check {
        if self.listen.is_empty() {
            return Err(invalid("listen", "expected at least one listen address"));
        }
        for (i, addr) in self.listen.iter().enumerate() {
            if self.listen[..i].contains(addr) {
                return Err(invalid("listen", format!("{addr} is listed twice")));
            }
        }
        if !(Duration::from_secs(1)..=MAX_PERSIST_INTERVAL).contains(&self.persist_interval) {
            return Err(invalid(
                "persist_interval",
                "expected 1s to 1h: the state file is rewritten this often, and a power cut loses the energy since the last write",
            ));
        }
        Ok(())
    }
}

/// `daemon.log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// What the daemon does: start, stop, sensors going down and up, anomalies.
    Info,
    /// Every failed read.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub(crate) fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}
