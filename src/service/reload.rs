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

use std::net::SocketAddr;
use std::sync::Arc;

use super::sampling::Changes;
use super::{bind, lock, logging, Daemon};
use crate::config::Config;

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
                self.metrics.daemon.reload_successful.set(1.0);
                self.metrics
                    .daemon
                    .reload_success_time
                    .set(crate::time::unix_now());
                log::info!("reloaded {}: {changes}", self.config_path.display());
            }
            Err(why) => {
                self.metrics.daemon.reload_successful.set(0.0);
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
        } else if new.daemon.listen != lock(&self.sampling).config().daemon.listen {
            log::info!("listening where --listen says; a change of daemon.listen needs a restart without --listen");
        }
        let sampling = Arc::clone(&self.sampling);
        let persister = Arc::clone(&self.persister);
        // Stopping a bus thread waits for its transfer in flight: off the async thread.
        let changes = tokio::task::spawn_blocking(move || {
            let changes = lock(&sampling).apply(new);
            // The removed sensors' totals go to disk now.
            let _ = lock(&persister).save();
            changes
        })
        .await
        .map_err(|e| format!("applying the configuration failed: {e}"))?
        .map_err(|e| e.to_string())?;
        logging::set_level(level);
        self.persist_interval.send_replace(interval);
        let mqtt = lock(&self.sampling).config().mqtt.clone();
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
