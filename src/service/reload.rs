//! Reload: SIGHUP (`systemctl reload`) re-reads the configuration file and applies the
//! difference to the running daemon.
//!
//! A file that does not load is logged with its location and changes nothing
//! (`powermon_config_last_reload_successful 0`). Otherwise: listen addresses are bound first
//! (a failure there changes nothing either); then sensors are added, removed or rebuilt with
//! their new settings, the threads of only the buses they are on restarted, and every other
//! bus left running without a pause. A sensor that stays, or comes back, continues its
//! totals; a removed one's totals stay in the state file. The log level and the persist
//! interval change at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use super::core::Core;
use super::{bind, lock, logging, notify, Daemon, ServiceError};
use crate::config::{Config, SensorConfig};
use crate::sampler::Member;

/// What a reload did to the sensors.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Sensors that are new.
    pub added: Vec<String>,
    /// Sensors no longer configured.
    pub removed: Vec<String>,
    /// Sensors with other settings.
    pub changed: Vec<String>,
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

impl Core {
    /// Run on `new` from now on.
    pub fn apply(&mut self, new: Config) -> Result<Changes, ServiceError> {
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
        let metrics = Arc::clone(&self.app.metrics);
        for name in &changes.removed {
            lock(&self.persister).untrack(name);
            metrics.remove_sensor(name, false);
            self.statuses.remove(name);
            running.remove(name);
        }
        for gone in self
            .config
            .batteries
            .iter()
            .filter(|b| !new.batteries.iter().any(|n| n.name == b.name))
        {
            metrics.remove_battery(&gone.name);
        }
        self.config = new;
        let sensors = self.config.sensors.clone();
        for name in &changes.changed {
            lock(&self.persister).untrack(name);
            metrics.remove_sensor(name, true);
            let (slot, battery_slot) = match running.remove(name) {
                Some((_, mut p)) => (p.take_live(), p.take_battery_live()),
                None => (None, None),
            };
            if let Some(sensor) = sensors.iter().find(|s| &s.name == name) {
                // The battery's record goes on only with the same battery.
                let battery_slot = battery_slot
                    .filter(|(b, _)| sensor.battery.as_ref().is_some_and(|n| &n.name == b))
                    .map(|(_, slot)| slot);
                let pipeline = self.pipeline(sensor, slot, battery_slot);
                running.insert(name.clone(), (sensor.clone(), pipeline));
            }
        }
        self.start_buses(&buses, running)?;
        self.publish_statuses();
        Ok(changes)
    }
}

impl Daemon {
    /// SIGHUP: re-read the file and apply it, or keep running on the old one.
    pub(super) async fn reload(&mut self) {
        self.notifier.reloading();
        let outcome = match crate::config::Config::load(&self.config_path) {
            Ok(new) => self.apply(new).await,
            Err(e) => Err(e.to_string()),
        };
        match &outcome {
            Ok(changes) => {
                self.metrics.reload_successful.set(1.0);
                self.metrics.reload_success_time.set(notify::unix_now());
                log::info!("reloaded {}: {changes}", self.config_path.display());
            }
            Err(why) => {
                self.metrics.reload_successful.set(0.0);
                log::error!("reload refused, still running on the previous configuration: {why}");
            }
        }
        self.notifier.reloaded(outcome.is_ok());
    }

    /// Apply a loaded configuration: listeners first (a bind can fail), then the sensors,
    /// then the log level and persist interval.
    async fn apply(&mut self, new: Config) -> Result<Changes, String> {
        let level = new.daemon.log_level;
        let interval = new.daemon.persist_interval;
        let public_healthz = new.daemon.public_healthz;
        let web = self.options.load_web(&new).map_err(|e| e.to_string())?;
        if self.options.listen.is_empty() {
            self.rebind(&new.daemon.listen).await?;
        } else if new.daemon.listen != lock(&self.core).config().daemon.listen {
            log::info!("listening where --listen says; a change of daemon.listen needs a restart without --listen");
        }
        let core = Arc::clone(&self.core);
        let persister = Arc::clone(&self.persister);
        // Stopping a bus thread waits for its transfer in flight: off the async thread.
        let changes = tokio::task::spawn_blocking(move || {
            let changes = lock(&core).apply(new);
            // The removed sensors' totals go to disk now.
            let _ = lock(&persister).save();
            changes
        })
        .await
        .map_err(|e| format!("applying the configuration failed: {e}"))?
        .map_err(|e| e.to_string())?;
        logging::set_level(level);
        self.persist_interval.send_replace(interval);
        let mqtt = lock(&self.core).config().mqtt.clone();
        self.restart_mqtt(mqtt.as_ref()).await;
        self.servers.app.set_web(web, public_healthz);
        Ok(changes)
    }

    /// Listen on `addresses`: bind the new ones first, then close the ones no longer wanted.
    async fn rebind(&mut self, addresses: &[SocketAddr]) -> Result<(), String> {
        let mut bound = Vec::new();
        for &addr in addresses {
            if !self.servers.running.contains_key(&addr) {
                bound.push((addr, bind(addr).map_err(|e| e.to_string())?));
            }
        }
        for (addr, listener) in bound {
            self.servers
                .spawn(addr, listener)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        }
        let gone: Vec<SocketAddr> = self
            .servers
            .running
            .keys()
            .filter(|a| !addresses.contains(a))
            .copied()
            .collect();
        for addr in gone {
            log::info!("no longer listening on {addr}");
            self.servers.stop(addr).await;
        }
        Ok(())
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
