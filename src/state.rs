//! Energy totals on disk: `state.json` in the state directory, written atomically.
//!
//! A write goes to a temporary file in the same directory, is flushed to disk, renamed over
//! `state.json`, and the directory is flushed so the rename itself survives a power cut. At
//! any moment the file is the old version or the new one, never a mix. A file that cannot be
//! parsed is moved aside (never deleted) and the daemon starts from zero for it, with a
//! warning. A lock file keeps two daemons from sharing one directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "state.lock";
const FORMAT_VERSION: u32 = 1;

/// Why the state directory or file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use state directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state directory {} is in use by another power-monitord (it holds {LOCK_FILE})", dir.display())]
    Locked { dir: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredState {
    pub version: u32,
    /// Unix time of the write.
    #[serde(default)]
    pub saved_at: f64,
    /// Per sensor name. Sensors no longer configured are kept, not dropped.
    #[serde(default)]
    pub sensors: BTreeMap<String, StoredSensor>,
}

/// One sensor's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSensor {
    pub energy_joules: f64,
    #[serde(default)]
    pub energy_reverse_joules: f64,
}

impl StoredSensor {
    fn is_valid(&self) -> bool {
        [self.energy_joules, self.energy_reverse_joules]
            .iter()
            .all(|j| j.is_finite() && *j >= 0.0)
    }
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No state file yet.
    Fresh(StoredState),
    /// The file as stored.
    Restored(StoredState),
    /// The file could not be used and was moved to `moved_to`.
    MovedAside {
        state: StoredState,
        moved_to: PathBuf,
        reason: String,
    },
}

/// The state directory, locked for this process.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    _lock: File,
}

impl StateStore {
    /// Create (if needed) and lock `dir`.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        let directory_error = |source| StateError::Directory {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(directory_error)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(directory_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(directory_error(e)),
        }
        Ok(StateStore {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read the state file; a file that cannot be used is moved aside.
    pub fn load(&self) -> Result<Loaded, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Loaded::Fresh(StoredState::default()))
            }
            Err(e) => return self.move_aside(format!("cannot read it: {e}")),
        };
        let reason = match serde_json::from_str::<StoredState>(&text) {
            Ok(state) if state.version != FORMAT_VERSION => {
                format!("format version {} is not {FORMAT_VERSION}", state.version)
            }
            Ok(state) => match state.sensors.iter().find(|(_, s)| !s.is_valid()) {
                Some((name, s)) => format!("sensor {name:?} has an impossible total {s:?}"),
                None => return Ok(Loaded::Restored(state)),
            },
            Err(e) => format!("not valid JSON state: {e}"),
        };
        self.move_aside(reason)
    }

    fn move_aside(&self, reason: String) -> Result<Loaded, StateError> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let moved_to = self.dir.join(format!("{STATE_FILE}.corrupt-{stamp}"));
        fs::rename(self.path(), &moved_to).map_err(|source| StateError::Write {
            path: moved_to.clone(),
            source,
        })?;
        Ok(Loaded::MovedAside {
            state: StoredState::default(),
            moved_to,
            reason,
        })
    }

    /// Write `state` atomically.
    pub fn save(&self, state: &StoredState) -> Result<(), StateError> {
        let path = self.path();
        let state = StoredState {
            version: FORMAT_VERSION,
            saved_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            sensors: state.sensors.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| StateError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        write_atomically(&path, &bytes).map_err(|source| StateError::Write { path, source })
    }
}

/// Temporary file, fsync, rename over `path`, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(joules: f64) -> StoredState {
        let mut s = StoredState::default();
        s.sensors.insert(
            "fridge".into(),
            StoredSensor {
                energy_joules: joules,
                energy_reverse_joules: 0.0,
            },
        );
        s
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(matches!(store.load().unwrap(), Loaded::Fresh(_)));
        store.save(&state(1234.5)).unwrap();
        let Loaded::Restored(loaded) = store.load().unwrap() else {
            panic!("not restored")
        };
        assert_eq!(loaded.sensors["fridge"].energy_joules, 1234.5);
        assert_eq!(loaded.version, FORMAT_VERSION);
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    /// Totals come back bit for bit: a total one ulp lower would read as a counter reset.
    #[test]
    fn totals_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut x = 59.719_690_560_000_004_f64;
        for _ in 0..500 {
            store.save(&state(x)).unwrap();
            let Loaded::Restored(loaded) = store.load().unwrap() else {
                panic!("not restored")
            };
            assert_eq!(
                loaded.sensors["fridge"].energy_joules.to_bits(),
                x.to_bits(),
                "{x}"
            );
            x = x * 1.000_123_4 + 0.1;
        }
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(STATE_FILE),
            b"{\"version\": 1, \"sensors\": {\"a\": ",
        )
        .unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let Loaded::MovedAside {
            state,
            moved_to,
            reason,
        } = store.load().unwrap()
        else {
            panic!("not moved aside")
        };
        assert!(state.sensors.is_empty());
        assert!(reason.contains("not valid JSON"), "{reason}");
        assert!(moved_to.exists());
        assert!(!store.path().exists());
        assert!(fs::read_to_string(moved_to)
            .unwrap()
            .starts_with("{\"version\": 1"));
    }

    #[test]
    fn impossible_totals_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(STATE_FILE),
            br#"{"version": 1, "sensors": {"a": {"energy_joules": -5.0}}}"#,
        )
        .unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(matches!(store.load().unwrap(), Loaded::MovedAside { .. }));
    }

    #[test]
    fn a_second_daemon_cannot_share_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateStore::open(dir.path()).unwrap();
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(StateError::Locked { .. })
        ));
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let err = StateStore::open(Path::new("/proc/power-monitord-test")).unwrap_err();
        assert!(
            err.to_string().contains("/proc/power-monitord-test"),
            "{err}"
        );
    }
}
