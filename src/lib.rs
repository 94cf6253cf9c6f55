//! power-monitord: INA219 sensors → energy integration → anomaly rules → Prometheus metrics.
pub mod anomaly;
pub mod check;
pub mod clock;
pub mod config;
pub mod energy;
pub mod http;
pub mod metrics;
pub mod persist;
pub mod read;
pub mod sampler;
pub mod sensor;
pub mod service;
pub mod state;
pub mod status;

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision it was built from (see build.rs).
pub const REVISION: &str = env!("POWER_MONITORD_REVISION");
