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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::sampling::Changes;
use super::{bind, lock, logging, Daemon, Options};
use crate::config::Config;
use crate::http::WebSecurity;

/// How long reading and checking the files of a reload may take. They are read off the
/// runtime's thread, so serving, sampling and saving go on meanwhile; past this the reload is
/// refused (the files are small and read without blocking: this is the last line of defence).
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// The files of a reload, read and checked.
pub(super) type Read = Result<(Config, WebSecurity), String>;

/// Read and check the configuration at `path`, the web configuration it names and MQTT's
/// certificate files, off the runtime's thread and within [`READ_DEADLINE`].
/// `busy` is held while a read runs: a read stuck past its deadline (a file system that does
/// not answer) keeps its thread, and the reloads after it are refused rather than stack up
/// threads.
pub(super) async fn read(
    path: std::path::PathBuf,
    options: Options,
    busy: Arc<AtomicBool>,
) -> Read {
    if busy.swap(true, Ordering::AcqRel) {
        return Err("the files of an earlier reload are still being read".into());
    }
    let reading = tokio::task::spawn_blocking(move || {
        struct Done(Arc<AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(busy);
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        let web = options.load_web(&config).map_err(|e| e.to_string())?;
        if let Some(mqtt) = &config.mqtt {
            crate::mqtt::check_files(mqtt).map_err(|e| format!("MQTT: {e}"))?;
        }
        for queue in &config.remote_write {
            crate::remote::check_files(queue)
                .map_err(|e| format!("remote write {}: {e}", queue.name))?;
        }
        Ok((config, web))
    });
    match tokio::time::timeout(READ_DEADLINE, reading).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => Err(format!("reading the files failed: {e}")),
        // The thread finishes on its own (or never, on a file system that hangs); nothing
        // waits for it.
        Err(_) => Err(format!(
            "reading the configuration took longer than {} s",
            READ_DEADLINE.as_secs()
        )),
    }
}

impl Daemon {
    /// SIGHUP, once the files are [`read`]: apply them, or keep running on the old ones.
    pub(super) async fn reload(&mut self, read: Read) {
        let outcome = match read {
            Ok((new, web)) => self.apply(new, web).await,
            Err(e) => Err(e),
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
    async fn apply(&mut self, new: Config, web: WebSecurity) -> Result<Changes, String> {
        let level = new.daemon.log_level;
        let interval = new.daemon.persist_interval;
        let public_healthz = new.daemon.public_healthz;
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
        let remote = lock(&self.sampling).config().remote_write.clone();
        self.restart_remote(&remote).await;
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
