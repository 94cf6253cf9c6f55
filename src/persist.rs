//! Saving the energy totals, and exporting only what is saved.
//!
//! Prometheus reads any decrease of a counter as a reset to zero, and `increase()` then counts
//! the whole total as new energy. After a power cut the state file can only give back what was
//! on disk, so the exported counters take a total only once it is: every save raises them to
//! the totals it wrote, after the write and its flushes returned. Between saves they hold
//! still; the live totals (status page, `/api/readings`) run ahead by at most one
//! `persist_interval`.
//!
//! Whatever ends the process, the next start restores at least what was exported: a crash
//! keeps the live file (newer than any save), a power cut keeps the last save (no older than
//! any export).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntCounter};

use crate::metrics::{Metrics, SetCounter};
use crate::state::{StateError, StateStore, StoredSensor, StoredState};
use crate::status::SensorStatus;

/// Somewhere totals are made durable.
pub trait Durable: Send {
    /// Write `state` so that it survives a power cut; `Ok` only once it does.
    fn save(&self, state: &StoredState) -> Result<(), StateError>;
}

impl Durable for StateStore {
    fn save(&self, state: &StoredState) -> Result<(), StateError> {
        StateStore::save(self, state)
    }
}

/// A sensor whose totals are saved: where they come from and where they are exported.
struct Tracked {
    status: Arc<SensorStatus>,
    forward: Arc<SetCounter>,
    reverse: Arc<SetCounter>,
}

/// Saves the totals and exports them once saved.
pub struct Persister<D: Durable = StateStore> {
    disk: D,
    /// The totals of the last save, with those of sensors no longer configured.
    saved: StoredState,
    tracked: Vec<Tracked>,
    last_persist: Gauge,
    failures: IntCounter,
    failing: bool,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl<D: Durable> Persister<D> {
    /// A persister for `sensors`. `durable` is what the state file held at start (exported
    /// right away: it is on disk); `base` the totals to save from, which may be newer (the
    /// live file after a crash) and are exported by the first successful [`save`](Self::save).
    pub fn new(
        disk: D,
        durable: &StoredState,
        base: StoredState,
        metrics: &Metrics,
        sensors: &[Arc<SensorStatus>],
    ) -> Persister<D> {
        let tracked = sensors
            .iter()
            .map(|status| {
                let (forward, reverse) = metrics.published_energy(&status.name);
                Tracked {
                    status: Arc::clone(status),
                    forward,
                    reverse,
                }
            })
            .collect();
        let persister = Persister {
            disk,
            saved: base,
            tracked,
            last_persist: metrics.state_last_persist.clone(),
            failures: metrics.state_persist_failures.clone(),
            failing: false,
        };
        persister.export(durable);
        persister
    }

    /// The durable side.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Raise the exported counters to the totals of `state`.
    fn export(&self, state: &StoredState) {
        for t in &self.tracked {
            if let Some(totals) = state.sensors.get(&t.status.name) {
                t.forward.raise_to(totals.energy_joules);
                t.reverse.raise_to(totals.energy_reverse_joules);
            }
        }
    }

    /// Save every sensor's current totals; export them once they are on disk. A failure is
    /// counted and logged once per episode; the exported totals then stay where they were.
    pub fn save(&mut self) -> Result<(), StateError> {
        let mut state = self.saved.clone();
        for t in &self.tracked {
            let snapshot = t.status.snapshot();
            state.sensors.insert(
                t.status.name.clone(),
                StoredSensor {
                    energy_joules: snapshot.energy_joules,
                    energy_reverse_joules: snapshot.energy_reverse_joules,
                },
            );
        }
        match self.disk.save(&state) {
            Ok(()) => {
                self.export(&state);
                self.saved = state;
                self.last_persist.set(unix_now());
                if self.failing {
                    log::info!("saving the energy totals works again");
                    self.failing = false;
                }
                Ok(())
            }
            Err(e) => {
                self.failures.inc();
                if !self.failing {
                    log::error!(
                        "{e}; the exported energy counters stay at the last saved totals until a save succeeds"
                    );
                    self.failing = true;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::status::Snapshot;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use std::path::Path;
    use std::sync::Mutex;

    /// A disk as a power cut sees it: a save that returned `Ok` is on it; a save cut short is
    /// not (the adversarial case: the rename never reached the directory); a save can fail.
    #[derive(Clone, Default)]
    struct ModelDisk {
        durable: Arc<Mutex<StoredState>>,
        fail: Arc<Mutex<bool>>,
    }

    impl Durable for ModelDisk {
        fn save(&self, state: &StoredState) -> Result<(), StateError> {
            if *self.fail.lock().unwrap() {
                return Err(StateError::Write {
                    path: "model".into(),
                    source: std::io::Error::other("injected failure"),
                });
            }
            *self.durable.lock().unwrap() = state.clone();
            Ok(())
        }
    }

    const SENSORS: [&str; 2] = ["load", "charger"];

    /// A process of the daemon: statuses the sampler would publish to, and the persister.
    struct Process {
        metrics: Metrics,
        statuses: Vec<Arc<SensorStatus>>,
        persister: Persister<ModelDisk>,
    }

    impl Process {
        /// Start as the service does: export what is on disk, take the newer of disk and
        /// live file, save at once.
        fn start(disk: &ModelDisk, live: Option<&StoredState>) -> Process {
            let config = Config::from_toml(
                Path::new("t.toml"),
                "[[sensor]]\nname = \"load\"\ndriver = \"simulated\"\n[[sensor]]\nname = \"charger\"\ndriver = \"simulated\"\n",
            )
            .unwrap();
            let metrics = Metrics::new(&config, "0", "test").unwrap();
            let durable = disk.durable.lock().unwrap().clone();
            let mut base = durable.clone();
            if let Some(live) = live {
                base.merge_latest(live);
            }
            let statuses: Vec<_> = config
                .sensors
                .iter()
                .map(|s| {
                    let t = base.sensors.get(&s.name).copied().unwrap_or_default();
                    SensorStatus::new(
                        s,
                        Default::default(),
                        (t.energy_joules, t.energy_reverse_joules),
                    )
                })
                .collect();
            let mut persister = Persister::new(disk.clone(), &durable, base, &metrics, &statuses);
            let _ = persister.save();
            Process {
                metrics,
                statuses,
                persister,
            }
        }

        /// What a scrape would read, per sensor and direction.
        fn scrape(&self) -> Vec<f64> {
            SENSORS
                .iter()
                .flat_map(|s| {
                    let (f, r) = self.metrics.published_energy(s);
                    [f.get(), r.get()]
                })
                .collect()
        }

        /// The sampler's totals, which the live file holds after every sample.
        fn live(&self) -> StoredState {
            let mut state = StoredState::default();
            for s in &self.statuses {
                let snap = s.snapshot();
                state.sensors.insert(
                    s.name.clone(),
                    StoredSensor {
                        energy_joules: snap.energy_joules,
                        energy_reverse_joules: snap.energy_reverse_joules,
                    },
                );
            }
            state
        }

        fn sample(&self, rng: &mut StdRng) {
            for s in &self.statuses {
                let snap = s.snapshot();
                s.publish(Snapshot {
                    energy_joules: snap.energy_joules + rng.random_range(0.0..50.0),
                    energy_reverse_joules: snap.energy_reverse_joules + rng.random_range(0.0..5.0),
                    ..snap
                });
            }
        }
    }

    /// Thousands of random lives: samples, scrapes, saves that succeed or fail, crashes and
    /// power cuts. After every restart, the first scrape is at least the last one before:
    /// never a step back, which Prometheus would read as a reset.
    #[test]
    fn no_exported_total_goes_back_across_crashes_and_power_cuts() {
        let mut rng = StdRng::seed_from_u64(8);
        let disk = ModelDisk::default();
        let mut process = Process::start(&disk, None);
        let mut last_scrape = process.scrape();
        let (mut crashes, mut cuts, mut failed_saves) = (0, 0, 0);
        for _ in 0..20_000 {
            match rng.random_range(0..100) {
                0..=49 => process.sample(&mut rng),
                50..=79 => {
                    let scrape = process.scrape();
                    for (now, before) in scrape.iter().zip(&last_scrape) {
                        assert!(now >= before, "{scrape:?} after {last_scrape:?}");
                    }
                    last_scrape = scrape;
                }
                80..=93 => {
                    let fail = rng.random_bool(0.3);
                    *disk.fail.lock().unwrap() = fail;
                    failed_saves += usize::from(process.persister.save().is_err());
                    *disk.fail.lock().unwrap() = false;
                }
                kind => {
                    // The process dies. A crash leaves the live file, a power cut only what a
                    // completed save put on disk.
                    let power_cut = kind >= 97;
                    let live = (!power_cut).then(|| process.live());
                    let lost_nothing = live.clone();
                    process = Process::start(&disk, live.as_ref());
                    let first = process.scrape();
                    for (now, before) in first.iter().zip(&last_scrape) {
                        assert!(now >= before, "restart at {first:?} after {last_scrape:?}");
                    }
                    if let Some(live) = lost_nothing {
                        // A crash loses nothing: the restart continues from the last sample.
                        assert_eq!(process.live(), live);
                    }
                    last_scrape = first;
                    if power_cut {
                        cuts += 1;
                    } else {
                        crashes += 1;
                    }
                }
            }
        }
        assert!(crashes > 100 && cuts > 100 && failed_saves > 100);
    }

    #[test]
    fn a_failed_save_is_counted_and_exports_nothing_new() {
        let disk = ModelDisk::default();
        let mut process = Process::start(&disk, None);
        let mut rng = StdRng::seed_from_u64(1);
        process.sample(&mut rng);
        *disk.fail.lock().unwrap() = true;
        assert!(process.persister.save().is_err());
        assert!(process.persister.save().is_err());
        assert_eq!(process.scrape(), vec![0.0; 4]);
        assert_eq!(process.metrics.state_persist_failures.get(), 2);
        *disk.fail.lock().unwrap() = false;
        process.persister.save().unwrap();
        let live = process.live();
        assert_eq!(process.scrape()[0], live.sensors["load"].energy_joules);
        assert!(process.metrics.state_last_persist.get() > 1e9);
    }
}
