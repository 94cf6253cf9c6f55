//! power-monitord: INA219 sensors → energy integration → anomaly rules → Prometheus metrics.
pub mod config;
pub mod sensor;
