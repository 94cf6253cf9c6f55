//! power-monitord: INA2xx current/voltage sensors on I2C → energy integration → anomaly
//! rules and battery monitors → Prometheus metrics, a status page and a JSON API; totals that
//! survive crashes and power cuts.
//!
//! # Layout
//!
//! The pipeline, in the order a reading travels; a module uses those above it, never those
//! below:
//!
//! 1. [`sensor`] — a chip on a bus gives a [`sensor::Reading`] or a [`sensor::SensorError`]:
//!    the INA219, INA226/INA260 and INA3221 drivers and the recovery ladder they share, Linux
//!    `/dev/i2c-N`, the simulator's virtual chips (and house battery) on a virtual bus, `scan`.
//! 2. [`energy`] — trapezoidal integration of power over monotonic time.
//! 3. [`anomaly`] — the rules (over-power, energy budget, spike, bus voltage, overrange).
//! 4. [`state`] — the files the totals live in: `state.json` and the live file.
//! 5. [`battery`] — the battery monitor: coulomb counting, synchronisation, time to go.
//! 6. [`metrics`] and [`status`] — the views: Prometheus families, and the snapshot the page
//!    and the API read.
//! 7. [`persist`] — saving the totals, and exporting only what is saved.
//! 8. [`sampler`] — one thread per bus driving each sensor's pipeline through 2–6.
//! 9. [`http`] — `/metrics`, `/`, `/api/readings`, `/api/history`, `/healthz`; and [`mqtt`],
//!    the states and Home Assistant discovery published to a broker.
//! 10. The entry points: [`service`] (the daemon: start, reload, systemd, stop), [`read`] and
//!     [`check`] (the `read` and `check-config` commands), and `main.rs` (the command line, one
//!     place for errors and exit codes).
//!
//! Underneath everything: [`config`] (the file, its types and checks), [`clock`] (time for
//! the simulator) and [`chemistry`] (battery voltage curves, for the monitor and the
//! simulator).
#![warn(missing_docs)]

pub mod anomaly;
pub mod battery;
pub mod board;
pub mod check;
pub mod chemistry;
pub mod config;
pub mod energy;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod persist;
pub mod read;
pub mod sampler;
pub mod sensor;
pub mod service;
pub mod state;

pub mod time;

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision it was built from (see build.rs).
pub const REVISION: &str = env!("POWER_MONITORD_REVISION");
