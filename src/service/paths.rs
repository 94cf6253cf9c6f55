//! Where the daemon keeps its files: the state directory (`state.json`) and the runtime
//! directory (the live totals), and loading the totals from both at start.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::state::live::{self, Kind};
use crate::state::{StateError, StateStore, StoredBattery, StoredSensor, StoredState};

/// Open the state directory. When the default one cannot be used by a user running the
/// daemon by hand, fall back to their own state directory rather than refuse to run.
pub(crate) fn open_state(config: &Config) -> Result<StateStore, StateError> {
    let (dir, is_default) = crate::state::dir(config);
    match StateStore::open(&dir) {
        Err(StateError::Directory { source, .. })
            if is_default && source.kind() == io::ErrorKind::PermissionDenied =>
        {
            let fallback = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
                .map(|base| base.join("power-monitord"))
                .ok_or(StateError::Directory {
                    dir: dir.clone(),
                    source,
                })?;
            log::warn!(
                "cannot write {}; keeping energy totals in {} instead (set daemon.state_dir to choose)",
                dir.display(),
                fallback.display()
            );
            StateStore::open(&fallback)
        }
        other => other,
    }
}

/// Where the live totals go: a file named after the state directory (its device and inode, so
/// that two daemons with two state directories never share one) in the runtime directory,
/// which is a tmpfs on every systemd machine: `$RUNTIME_DIRECTORY` (systemd's
/// `RuntimeDirectory=`), else `/run/power-monitord`, else `$XDG_RUNTIME_DIR/power-monitord`,
/// else the state directory itself.
pub(crate) fn live_path(state_dir: &Path) -> PathBuf {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let name = match std::fs::metadata(state_dir) {
        Ok(meta) => format!("live-{:x}-{:x}.bin", meta.dev(), meta.ino()),
        Err(_) => "live.bin".to_string(),
    };
    let candidates = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .into_iter()
        .chain([PathBuf::from("/run/power-monitord")])
        .chain(std::env::var_os("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("power-monitord")));
    for dir in candidates.filter(|d| !d.as_os_str().is_empty()) {
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        let writable = tempfile::tempfile_in(&dir).is_ok();
        if made.is_ok() && writable {
            return dir.join(name);
        }
    }
    state_dir.join(name)
}

/// Load the totals: `state.json`, then the live file of a process that did not stop cleanly,
/// the later of the two per sensor. Returns what is on disk and what to continue from.
pub(crate) fn load_totals(
    store: &StateStore,
    live_path: &Path,
) -> Result<(StoredState, StoredState), StateError> {
    let loaded = store.load()?;
    if let Some(aside) = &loaded.set_aside {
        log::warn!(
            "state file {} had problems; moved it to {} and kept {} usable total(s): {}",
            store.path().display(),
            aside.moved_to.display(),
            loaded.state.sensors.len(),
            aside.problems.join("; ")
        );
    } else if loaded.found {
        log::info!(
            "restored energy totals of {} sensor(s) from {}",
            loaded.state.sensors.len(),
            store.path().display()
        );
    } else {
        log::info!(
            "no energy totals in {} yet; starting from zero",
            store.dir().display()
        );
    }
    let durable = loaded.state;
    let mut base = durable.clone();
    match live::read(live_path) {
        Ok(records) => {
            let mut newer = StoredState::default();
            for ((kind, name), values) in records {
                match kind {
                    Kind::Sensor => {
                        let totals = StoredSensor::from_values(&values);
                        if totals.implausible().is_none() {
                            newer.sensors.insert(name, totals);
                        }
                    }
                    Kind::Battery => {
                        if let Some(battery) = StoredBattery::from_values(&values) {
                            newer.batteries.insert(name, battery);
                        }
                    }
                }
            }
            if !newer.sensors.is_empty() || !newer.batteries.is_empty() {
                log::info!(
                    "the last run did not stop cleanly; continuing from the totals of its last samples in {}",
                    live_path.display()
                );
                base.merge_latest(&newer);
            }
        }
        Err(e) => log::warn!("ignoring the live totals: {e}"),
    }
    Ok((durable, base))
}

/// Records in the live file: every sensor twice over, so that reloads adding new sensors find
/// room (a record, once named, stays with its sensor for the life of the process), and the
/// batteries.
const LIVE_RECORDS: usize =
    2 * crate::config::MAX_SENSORS + 2 * crate::config::battery::MAX_BATTERIES;

/// A new live file at `path`, its pages allocated; without one (a runtime directory that
/// cannot be written, or is full), a crash loses what was not saved yet, which one warning
/// and `powermon_state_live_file` 0 say.
pub(crate) fn create_live(path: &Path) -> Option<live::LiveFile> {
    live::LiveFile::create(path, LIVE_RECORDS)
        .map_err(|e| {
            log::warn!(
                "cannot create the live totals file {}: {e}; a crash will lose the energy since the last save",
                path.display()
            )
        })
        .ok()
}
