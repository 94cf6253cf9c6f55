//! The daemon's own families: its build, the saves of the state file, reloads.

use prometheus::{Gauge, GaugeVec, IntCounter, Opts, Registry};

/// The daemon's own metrics.
pub(crate) struct DaemonMetrics {
    /// Unix time of the last save of the state file.
    pub(crate) state_last_persist: Gauge,
    /// Saves of the state file that failed.
    pub(crate) state_persist_failures: IntCounter,
    /// 1 if the last reload applied the configuration file.
    pub(crate) reload_successful: Gauge,
    /// Unix time of the last successful reload (or of the start).
    pub(crate) reload_success_time: Gauge,
    /// 1 while every sample's totals reach the live file.
    pub(crate) live_file: Gauge,
}

impl DaemonMetrics {
    /// The families, registered in `registries`; `powermon_build_info` set from `version` and
    /// `revision`.
    pub(super) fn new(
        registries: [&Registry; 2],
        version: &str,
        revision: &str,
    ) -> prometheus::Result<DaemonMetrics> {
        let build_info = GaugeVec::new(Opts::new("powermon_build_info", "A metric with a constant value of 1, labelled with the version and git revision of power-monitord."), &["version", "revision"])?;
        build_info.with_label_values(&[version, revision]).set(1.0);
        let metrics = DaemonMetrics {
            state_last_persist: Gauge::new("powermon_state_last_persist_timestamp_seconds", "Unix time of the last successful save of the energy totals to the state file; the energy counters hold the values of that save.")?,
            state_persist_failures: IntCounter::new("powermon_state_persist_failures_total", "Saves of the energy totals to the state file that failed.")?,
            reload_successful: Gauge::new("powermon_config_last_reload_successful", "1 if the last reload of the configuration file was applied, 0 if it was refused (the daemon runs on the previous one).")?,
            reload_success_time: Gauge::new("powermon_config_last_reload_success_timestamp_seconds", "Unix time of the last successful load of the configuration file (at start or by a reload).")?,
            live_file: Gauge::new("powermon_state_live_file", "1 if the totals of every sample reach the live file in the runtime directory, so a crash loses nothing; 0 if it could not be created (e.g. a full runtime directory), so a crash loses the energy since the last save of the state file.")?,
        };
        metrics.reload_successful.set(1.0);
        for registry in registries {
            registry.register(Box::new(build_info.clone()))?;
            registry.register(Box::new(metrics.state_last_persist.clone()))?;
            registry.register(Box::new(metrics.state_persist_failures.clone()))?;
            registry.register(Box::new(metrics.reload_successful.clone()))?;
            registry.register(Box::new(metrics.reload_success_time.clone()))?;
            registry.register(Box::new(metrics.live_file.clone()))?;
        }
        Ok(metrics)
    }
}
