//! The sensors' side of the daemon: each sensor's pipeline, the bus threads that drive them,
//! their records in the live file, and the persister that saves and exports their totals.
//! A reload changes it through [`Core::apply`] (see `reload.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{lock, ServiceError};
use crate::config::{Config, SensorConfig};
use crate::http::App;
use crate::persist::Persister;
use crate::sampler::{Member, Sampler, SensorPipeline};
use crate::state::live::{Kind, LiveFile, LiveSlot};
use crate::status::SensorStatus;

/// The running sensors.
pub struct Core {
    pub(super) config: Config,
    pub(super) sampler: Sampler,
    pub(super) persister: Arc<Mutex<Persister>>,
    pub(super) live: Option<LiveFile>,
    pub(super) app: Arc<App>,
    /// Every configured sensor's status, by name.
    pub(super) statuses: BTreeMap<String, Arc<SensorStatus>>,
}

impl Core {
    /// Build every sensor's pipeline and start a thread per bus.
    pub fn start(
        config: Config,
        sampler: Sampler,
        persister: Arc<Mutex<Persister>>,
        live: Option<LiveFile>,
        app: Arc<App>,
    ) -> Result<Core, ServiceError> {
        let buses: BTreeSet<String> = config.sensors.iter().map(|s| s.bus.clone()).collect();
        let mut core = Core {
            config,
            sampler,
            persister,
            live,
            app,
            statuses: BTreeMap::new(),
        };
        core.start_buses(&buses, BTreeMap::new())?;
        core.publish_statuses();
        Ok(core)
    }

    /// The configuration the sensors run on.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new pipeline for `sensor`, continuing from its latest totals, with `slot` (the one
    /// of the pipeline it replaces) or a record of its own in the live file; its totals
    /// saved and exported from now on.
    pub(super) fn pipeline(
        &mut self,
        sensor: &SensorConfig,
        slot: Option<LiveSlot>,
        battery_slot: Option<LiveSlot>,
    ) -> SensorPipeline {
        let mut persister = lock(&self.persister);
        let latest = persister.latest(&sensor.name);
        let values = [latest.energy_joules, latest.energy_reverse_joules];
        let slot = slot.or_else(|| {
            let claimed = self.live.as_ref()?.claim(Kind::Sensor, &sensor.name, &values);
            if claimed.is_none() {
                log::warn!(
                    "no record left in the live file for sensor {}; a crash would lose its energy since the last save",
                    sensor.name
                );
            }
            claimed
        });
        let (mut pipeline, status) = SensorPipeline::new(sensor, &self.app.metrics, latest, slot);
        if let Some(battery) = &sensor.battery {
            let stored = persister.latest_battery(&battery.name);
            let slot = battery_slot.or_else(|| {
                let claimed =
                    self.live.as_ref()?.claim(Kind::Battery, &battery.name, &stored.to_values());
                if claimed.is_none() {
                    log::warn!(
                        "no record left in the live file for battery {}; a crash would lose its state since the last save",
                        battery.name
                    );
                }
                claimed
            });
            pipeline.resume_battery(stored, slot);
        }
        persister.track(Arc::clone(&status));
        self.statuses.insert(sensor.name.clone(), status);
        pipeline
    }

    /// Start the threads of `buses`, each with its sensors of the configuration in file
    /// order: the pipelines in `running` where there is one, new ones for the others.
    pub(super) fn start_buses(
        &mut self,
        buses: &BTreeSet<String>,
        mut running: BTreeMap<String, Member>,
    ) -> Result<(), ServiceError> {
        let sensors: Vec<SensorConfig> = self.config.sensors.clone();
        for bus in buses {
            let members: Vec<Member> = sensors
                .iter()
                .filter(|s| &s.bus == bus)
                .map(|s| match running.remove(&s.name) {
                    Some(member) => member,
                    None => (s.clone(), self.pipeline(s, None, None)),
                })
                .collect();
            if members.is_empty() {
                continue;
            }
            self.sampler
                .start_bus(bus, members)
                .map_err(|source| ServiceError::System {
                    doing: "start a sampling thread",
                    source,
                })?;
        }
        Ok(())
    }

    /// Hand the sensors, in file order, to the HTTP server.
    pub(super) fn publish_statuses(&self) {
        let list = self
            .config
            .sensors
            .iter()
            .filter_map(|s| self.statuses.get(&s.name).cloned())
            .collect();
        self.app.metrics.set_statuses(Vec::clone(&list));
        self.app.set_sensors(list);
    }

    /// Stop every thread: afterwards the statuses hold the final totals. Hands back the live
    /// file, to be removed once they are saved.
    pub fn stop(self) -> Option<LiveFile> {
        self.sampler.stop();
        self.live
    }
}
