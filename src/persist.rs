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
//!
//! The sensors whose totals are saved are those on the board; a sensor taken off it (a
//! reload) has its final totals saved once more and then kept as they are.

use std::sync::Arc;

use crate::board::{Board, SensorStatus};
use crate::metrics::Metrics;
use crate::state::{StateError, StateStore, StoredBattery, StoredSensor, StoredState};

/// Somewhere totals are made durable.
pub(crate) trait Durable: Send {
    /// Write `state` so that it survives a power cut; `Ok` only once it does.
    fn save(&self, state: &StoredState) -> Result<(), StateError>;
}

impl Durable for StateStore {
    fn save(&self, state: &StoredState) -> Result<(), StateError> {
        StateStore::save(self, state)
    }
}

/// A sensor's battery and its state, if it measures one.
fn battery_of(status: &SensorStatus) -> Option<(&str, StoredBattery)> {
    let info = status.battery.as_ref()?;
    Some((&info.name, status.snapshot().battery?.stored))
}

/// Saves the totals of the board's sensors and exports them once saved.
pub(crate) struct Persister<D: Durable = StateStore> {
    disk: D,
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    /// The totals of the last save: on disk.
    saved: StoredState,
    /// Totals newer than the last save of sensors not on the board (the live file's after a
    /// crash, sensors a reload removed), written by the next save.
    pending: StoredState,
    failing: bool,
}

impl<D: Durable> Persister<D> {
    /// A persister of the sensors on the board `metrics` reports. `durable` is what the state
    /// file held at start; `newer` are totals that may be newer (the live file after a crash),
    /// saved by the first [`save`](Self::save).
    pub(crate) fn new(
        disk: D,
        metrics: Arc<Metrics>,
        durable: StoredState,
        newer: StoredState,
    ) -> Self {
        Persister {
            disk,
            board: Arc::clone(metrics.board()),
            metrics,
            saved: durable,
            pending: newer,
            failing: false,
        }
    }

    /// The durable side.
    pub(crate) fn disk(&self) -> &D {
        &self.disk
    }

    /// The final totals of sensors taken off the board, kept for the next save.
    fn absorb_retired(&mut self) {
        for status in self.board.take_retired() {
            let totals = status.snapshot().totals();
            let kept = match self.pending.sensors.get(&status.name) {
                Some(p) => p.latest(totals),
                None => totals,
            };
            self.pending.sensors.insert(status.name.clone(), kept);
            if let Some((battery, stored)) = battery_of(&status) {
                let kept = match self.pending.batteries.get(battery) {
                    Some(p) => p.latest(stored),
                    None => stored,
                };
                self.pending.batteries.insert(battery.to_string(), kept);
            }
        }
    }

    /// The latest totals of `name`: its live ones if it is on the board, else the newest
    /// known.
    pub(crate) fn latest(&mut self, name: &str) -> StoredSensor {
        self.absorb_retired();
        if let Some(status) = self.board.sensor(name) {
            return status.snapshot().totals();
        }
        let saved = self.saved.sensors.get(name).copied().unwrap_or_default();
        match self.pending.sensors.get(name) {
            Some(pending) => saved.latest(*pending),
            None => saved,
        }
    }

    /// The latest state of battery `name`: its live one if its sensor is on the board, else
    /// the newest known.
    pub(crate) fn latest_battery(&mut self, name: &str) -> StoredBattery {
        self.absorb_retired();
        if let Some(stored) = self
            .board
            .sensors()
            .iter()
            .filter_map(|s| battery_of(s).filter(|(n, _)| *n == name).map(|(_, b)| b))
            .next()
        {
            return stored;
        }
        let saved = self.saved.batteries.get(name).copied().unwrap_or_default();
        match self.pending.batteries.get(name) {
            Some(pending) => saved.latest(*pending),
            None => saved,
        }
    }

    /// Set the exported counters of a new sensor's `status` to the last saved totals, before
    /// it goes on the board.
    pub(crate) fn export_saved(&self, status: &SensorStatus) {
        let sensor = self
            .saved
            .sensors
            .get(&status.name)
            .copied()
            .unwrap_or_default();
        let battery = status.battery.as_ref().map(|b| {
            self.saved
                .batteries
                .get(&b.name)
                .copied()
                .unwrap_or_default()
        });
        status.exported.raise_to(&sensor, battery.as_ref());
    }

    /// Save every sensor's current totals; export them once they are on disk. A failure is
    /// counted and logged once per episode; the exported totals then stay where they were.
    pub(crate) fn save(&mut self) -> Result<(), StateError> {
        self.absorb_retired();
        let metrics = Arc::clone(&self.metrics);
        let metrics = &metrics.daemon;
        let sensors = self.board.sensors();
        let mut state = self.saved.clone();
        state.merge_latest(&self.pending);
        for status in sensors.iter() {
            state
                .sensors
                .insert(status.name.clone(), status.snapshot().totals());
            if let Some((battery, stored)) = battery_of(status) {
                state.batteries.insert(battery.to_string(), stored);
            }
        }
        match self.disk.save(&state) {
            Ok(()) => {
                for status in sensors.iter() {
                    if let Some(totals) = state.sensors.get(&status.name) {
                        let battery = status
                            .battery
                            .as_ref()
                            .and_then(|b| state.batteries.get(&b.name));
                        status.exported.raise_to(totals, battery);
                    }
                }
                self.saved = state;
                self.pending = StoredState::default();
                metrics.state_last_persist.set(crate::time::unix_now());
                if self.failing {
                    log::info!("saving the energy totals works again");
                    self.failing = false;
                }
                Ok(())
            }
            Err(e) => {
                metrics.state_persist_failures.inc();
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
    use crate::board::Snapshot;
    use crate::config::Config;
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
        metrics: Arc<Metrics>,
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
            let board = Board::new();
            let metrics = Arc::new(Metrics::new("0", "test", Arc::clone(&board)).unwrap());
            let durable = disk.durable.lock().unwrap().clone();
            let newer = live.cloned().unwrap_or_default();
            let mut persister = Persister::new(disk.clone(), Arc::clone(&metrics), durable, newer);
            let statuses: Vec<_> = config
                .sensors
                .iter()
                .map(|s| {
                    let t = persister.latest(&s.name);
                    let status = SensorStatus::new(s, Default::default(), t);
                    persister.export_saved(&status);
                    status
                })
                .collect();
            board.replace(statuses.clone());
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
                .flat_map(|name| {
                    let status = self.statuses.iter().find(|s| s.name == *name).unwrap();
                    let e = &status.exported;
                    [e.energy_joules.get(), e.energy_reverse_joules.get()]
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
                    StoredSensor::totals(snap.energy_joules, snap.energy_reverse_joules),
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
        assert_eq!(process.metrics.daemon.state_persist_failures.get(), 2);
        *disk.fail.lock().unwrap() = false;
        process.persister.save().unwrap();
        let live = process.live();
        assert_eq!(process.scrape()[0], live.sensors["load"].energy_joules);
        assert!(process.metrics.daemon.state_last_persist.get() > 1e9);
    }
}
