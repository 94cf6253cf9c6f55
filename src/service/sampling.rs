//! Sampling: each sensor's pipeline, the bus threads that drive them, their records in the
//! live file; what they publish goes on the board, whose sensors the persister saves. A
//! reload changes them through [`Sampling::apply`]: the threads of only the buses whose
//! sensors change restart, and the board changes once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use super::{lock, ServiceError};
use crate::board::{Board, SensorStatus};
use crate::config::{Config, SensorConfig};
use crate::persist::Persister;
use crate::sampler::{Member, Sampler, SensorPipeline};
use crate::state::live::{Kind, LiveFile, LiveSlot};

/// The sensors being sampled.
pub(crate) struct Sampling {
    config: Config,
    sampler: Sampler,
    persister: Arc<Mutex<Persister>>,
    live: Option<LiveFile>,
    board: Arc<Board>,
}

impl Sampling {
    /// Build every sensor's pipeline, start a thread per bus, and put the sensors on `board`.
    pub(crate) fn start(
        config: Config,
        sampler: Sampler,
        persister: Arc<Mutex<Persister>>,
        live: Option<LiveFile>,
        board: Arc<Board>,
    ) -> Result<Sampling, ServiceError> {
        let buses: BTreeSet<String> = config.sensors.iter().map(|s| s.bus.clone()).collect();
        let mut sampling = Sampling {
            config,
            sampler,
            persister,
            live,
            board,
        };
        let mut fresh = BTreeMap::new();
        sampling.start_buses(&buses, BTreeMap::new(), &mut fresh)?;
        sampling.publish(fresh);
        Ok(sampling)
    }

    /// The configuration the sensors run on.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// A new pipeline for `sensor`, continuing from its latest totals, with `slot` (the one
    /// of the pipeline it replaces) or a record of its own in the live file; its status, with
    /// the saved totals exported, goes into `fresh`.
    fn pipeline(
        &mut self,
        sensor: &SensorConfig,
        slot: Option<LiveSlot>,
        battery_slot: Option<LiveSlot>,
        fresh: &mut BTreeMap<String, Arc<SensorStatus>>,
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
        let (mut pipeline, status) = SensorPipeline::new(sensor, latest, slot);
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
        persister.export_saved(&status);
        fresh.insert(sensor.name.clone(), status);
        pipeline
    }

    /// Start the threads of `buses`, each with its sensors of the configuration in file
    /// order: the pipelines in `running` where there is one, new ones for the others (their
    /// statuses into `fresh`).
    fn start_buses(
        &mut self,
        buses: &BTreeSet<String>,
        mut running: BTreeMap<String, Member>,
        fresh: &mut BTreeMap<String, Arc<SensorStatus>>,
    ) -> Result<(), ServiceError> {
        let sensors: Vec<SensorConfig> = self.config.sensors.clone();
        for bus in buses {
            let members: Vec<Member> = sensors
                .iter()
                .filter(|s| &s.bus == bus)
                .map(|s| match running.remove(&s.name) {
                    Some(member) => member,
                    None => (s.clone(), self.pipeline(s, None, None, fresh)),
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

    /// Put the configured sensors on the board, in file order: the `fresh` statuses, and
    /// for the others those already there.
    fn publish(&self, mut fresh: BTreeMap<String, Arc<SensorStatus>>) {
        let list = self
            .config
            .sensors
            .iter()
            .filter_map(|s| fresh.remove(&s.name).or_else(|| self.board.sensor(&s.name)))
            .collect();
        self.board.replace(list);
    }

    /// Stop every thread: afterwards the statuses hold the final totals. Hands back the live
    /// file, to be removed once they are saved.
    pub(crate) fn stop(self) -> Option<LiveFile> {
        self.sampler.stop();
        self.live
    }
}

/// What a reload did to the sensors.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Changes {
    /// Sensors that are new.
    pub(crate) added: Vec<String>,
    /// Sensors no longer configured.
    pub(crate) removed: Vec<String>,
    /// Sensors with other settings.
    pub(crate) changed: Vec<String>,
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty() {
            return f.write_str("no sensor changed");
        }
        let mut parts = Vec::new();
        for (sign, names) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            parts.extend(names.iter().map(|n| format!("{sign}{n}")));
        }
        write!(f, "sensors {}", parts.join(" "))
    }
}

impl Sampling {
    /// Run on `new` from now on.
    pub(crate) fn apply(&mut self, new: Config) -> Result<Changes, ServiceError> {
        let old: BTreeMap<String, SensorConfig> = self
            .config
            .sensors
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let mut changes = Changes::default();
        let mut buses = BTreeSet::new();
        for s in &new.sensors {
            match old.get(&s.name) {
                None => changes.added.push(s.name.clone()),
                Some(before) if before != s => {
                    changes.changed.push(s.name.clone());
                    buses.insert(before.bus.clone());
                }
                Some(_) => continue,
            }
            buses.insert(s.bus.clone());
        }
        for (name, before) in &old {
            if !new.sensors.iter().any(|s| &s.name == name) {
                changes.removed.push(name.clone());
                buses.insert(before.bus.clone());
            }
        }
        // Stop the buses that change; their pipelines come back, with their final totals.
        let mut running: BTreeMap<String, Member> = BTreeMap::new();
        for bus in &buses {
            for member in self.sampler.stop_bus(bus) {
                running.insert(member.0.name.clone(), member);
            }
        }
        for name in &changes.removed {
            running.remove(name);
        }
        self.config = new;
        let sensors = self.config.sensors.clone();
        let mut fresh = BTreeMap::new();
        for name in &changes.changed {
            let (slot, battery_slot) = match running.remove(name) {
                Some((_, mut p)) => (p.take_live(), p.take_battery_live()),
                None => (None, None),
            };
            if let Some(sensor) = sensors.iter().find(|s| &s.name == name) {
                // The battery's record goes on only with the same battery.
                let battery_slot = battery_slot
                    .filter(|(b, _)| sensor.battery.as_ref().is_some_and(|n| &n.name == b))
                    .map(|(_, slot)| slot);
                let pipeline = self.pipeline(sensor, slot, battery_slot, &mut fresh);
                running.insert(name.clone(), (sensor.clone(), pipeline));
            }
        }
        self.start_buses(&buses, running, &mut fresh)?;
        self.publish(fresh);
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_in_a_line() {
        assert_eq!(Changes::default().to_string(), "no sensor changed");
        let c = Changes {
            added: vec!["fr004".into()],
            removed: vec!["wm002".into()],
            changed: vec!["ac001".into()],
        };
        assert_eq!(c.to_string(), "sensors +fr004 -wm002 ~ac001");
    }
}
