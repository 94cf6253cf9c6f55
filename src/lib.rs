//! power-monitord: INA219 sensors → energy integration → anomaly rules → Prometheus metrics.
pub mod anomaly;
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
