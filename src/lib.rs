//! power-monitord: INA2xx current/voltage sensors on I2C → energy integration → anomaly
//! rules and battery monitors → Prometheus metrics, a status page and a JSON API; totals that
//! survive crashes and power cuts.
//!
//! # Layout
//!
//! The pipeline, in the order a reading travels; a module uses those above it, never those
//! below (`tests/layout.rs` fails on an import cycle):
//!
//! 1. [`sensor`] — a chip on a bus gives a [`sensor::Reading`] or a [`sensor::SensorError`]:
//!    the INA219, INA226/INA260 and INA3221 drivers, what the family shares and the recovery
//!    ladder, Linux `/dev/i2c-N`, the simulator's virtual chips (and house battery) on a
//!    virtual bus with its own clock, `scan`.
//! 2. [`energy`] — trapezoidal integration of power over monotonic time.
//! 3. [`anomaly`] — the rules (over-power, energy budget, spike, bus voltage, overrange).
//! 4. [`state`] — the files the totals live in: `state.json` and the live file.
//! 5. [`battery`] — the battery monitor: coulomb counting, synchronisation, time to go.
//! 6. [`board`] — the running sensors: what each pipeline publishes (its snapshot, its
//!    recent power, its exported totals), one list that a reload changes.
//! 7. [`metrics`] — the Prometheus families, one module per concern, as views over the board.
//! 8. [`persist`] — saving the board's totals, and exporting only what is saved.
//! 9. [`sampler`] — one thread per bus driving each sensor's pipeline through 2–6.
//! 10. [`http`] — `/metrics`, `/`, `/api/readings`, `/api/history`, `/healthz`; [`mqtt`],
//!     the states and Home Assistant discovery published to a broker; and [`remote`], the
//!     series pushed to a central store by Prometheus remote write.
//! 11. The entry points: [`service`] (the daemon: start, reload, systemd, stop), [`read`],
//!     [`calibrate`] and [`check`] (the `read`, `calibrate` and `check-config` commands), and
//!     `main.rs` (the command line, one place for errors and exit codes).
//!
//! Underneath everything: [`config`] (the file, and its checked form), [`files`] (reading a
//! file without blocking on it or without end), [`time`] (Unix time and the local calendar)
//! and [`chemistry`] (battery voltage curves, for the monitor and the simulator).
#![warn(missing_docs)]

pub mod anomaly;
pub mod battery;
pub mod board;
pub mod calibrate;
pub mod check;
pub mod chemistry;
pub mod config;
pub mod energy;
pub mod files;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod persist;
pub mod read;
pub mod remote;
pub mod sampler;
pub mod sensor;
pub mod service;
pub mod state;

pub mod time;

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision it was built from (see build.rs).
pub const REVISION: &str = env!("POWER_MONITORD_REVISION");
