//! `state.json`: the durable copy of the energy totals, in the state directory.
//!
//! A save writes a new file under an unpredictable name (created with `O_EXCL`, so a link
//! planted in the directory is never written through), flushes it, renames it over
//! `state.json` and flushes the directory, so that the rename itself survives a power cut: at
//! any moment the file is the old version or the new one, never a mix.
//!
//! Loading trusts nothing: `state.json` must be a regular file (not a link, a FIFO or a device)
//! of at most [`MAX_FILE_BYTES`]; each sensor's entry is checked on its own, so one bad entry
//! costs only that sensor's total. A file with any problem is set aside under a unique name
//! (the newest [`KEEP_SET_ASIDE`] are kept) and the good totals go on. A file written by a newer
//! power-monitord is refused: starting from zero would lose totals an upgrade would keep.
//!
//! A lock file keeps two daemons from sharing one directory.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{self, Parsed, FORMAT_VERSION};
use super::StoredState;

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "state.lock";
/// Prefix of the names a file that could not be used is set aside under.
const SET_ASIDE_PREFIX: &str = "state.json.corrupt-";
/// A state file larger than this is not ours (a sensor's entry is about 100 bytes).
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;
/// How many set-aside files are kept; older ones are deleted.
pub(crate) const KEEP_SET_ASIDE: usize = 5;

/// Why the state directory or file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory cannot be created, locked or read.
    #[error("cannot use state directory {}: {source}", dir.display())]
    Directory {
        /// The state directory.
        dir: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Another process holds the lock.
    #[error("state directory {} is in use by another power-monitord (it holds {LOCK_FILE})", dir.display())]
    Locked {
        /// The state directory.
        dir: PathBuf,
    },
    /// A write, flush or rename failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file was written by a newer power-monitord.
    #[error(
        "{} is in state format {found}, written by a newer power-monitord; this one reads formats up to {FORMAT_VERSION}. \
         Install the newer version again, or move the file away to start the totals from zero",
        path.display()
    )]
    NewerFormat {
        /// The state file.
        path: PathBuf,
        /// Its format version.
        found: u64,
    },
}

/// What loading found.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The usable totals (empty for a new install).
    pub(crate) state: StoredState,
    /// There was a state file (possibly set aside).
    pub(crate) found: bool,
    /// The file had problems and was moved away.
    pub(crate) set_aside: Option<SetAside>,
}

/// A state file that was moved away, and why.
#[derive(Debug)]
pub(crate) struct SetAside {
    /// Where it went.
    pub(crate) moved_to: PathBuf,
    /// One line per problem: the whole file, or one sensor's entry.
    pub(crate) problems: Vec<String>,
}

/// Whether another process (a running daemon) holds the lock of the state directory `dir`:
/// a shared lock is tried and at once let go. No lock file says no; a lock file this user
/// cannot open is the error (it cannot tell).
pub(crate) fn held_elsewhere(dir: &Path) -> io::Result<bool> {
    let lock = match guarded().read(true).open(dir.join(LOCK_FILE)) {
        Ok(lock) => lock,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(matches!(
        lock.try_lock_shared(),
        Err(fs::TryLockError::WouldBlock)
    ))
}

/// The state directory, locked for this process.
#[derive(Debug)]
pub(crate) struct StateStore {
    dir: PathBuf,
    _lock: File,
}

/// Open flags for everything in the state directory: never follow a link, never block on a
/// FIFO, never hand the descriptor to a child.
fn guarded() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    options
}

/// The bytes of `path` if it is a regular file of a sane size; `Ok(None)` when there is none.
fn read_regular(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut file = match guarded().read(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symbolic link, which power-monitord never follows".into())
        }
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "it is {} bytes, more than a state file can be ({MAX_FILE_BYTES})",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    Read::by_ref(&mut file)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("it grew beyond {MAX_FILE_BYTES} bytes while read"));
    }
    Ok(Some(bytes))
}

/// `rename(from, to)` that fails instead of replacing an existing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (from_c, to_c) = (c(from)?, c(to)?);
    // The system call rather than the C library's wrapper, which only some C libraries have
    // (glibc from 2.28; musl, which the ARMv6 test build uses, not at all).
    // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // A file system without RENAME_NOREPLACE: check, then rename (racy only against
        // another process, which the lock rules out).
        Some(libc::EINVAL | libc::ENOSYS) if fs::symlink_metadata(to).is_err() => {
            fs::rename(from, to)
        }
        Some(libc::EINVAL | libc::ENOSYS) => Err(io::ErrorKind::AlreadyExists.into()),
        _ => Err(err),
    }
}

impl StateStore {
    /// Create (if needed) and lock `dir`. The directory itself may be a link (a state
    /// directory moved off the SD card); nothing inside it is followed.
    pub(crate) fn open(dir: &Path) -> Result<StateStore, StateError> {
        let directory_error = |source| StateError::Directory {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(directory_error)?;
        let lock = guarded()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    directory_error(io::Error::other(format!(
                        "{LOCK_FILE} is a symbolic link; remove it"
                    )))
                } else {
                    directory_error(e)
                }
            })?;
        if !lock.metadata().map_err(directory_error)?.is_file() {
            return Err(directory_error(io::Error::other(format!(
                "{LOCK_FILE} is not a regular file; remove it"
            ))));
        }
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

    /// `state.json`.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The state directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read the state file: every usable total, and the file set aside if anything in it was
    /// not usable.
    pub(crate) fn load(&self) -> Result<Loaded, StateError> {
        let path = self.path();
        let (state, problems) = match read_regular(&path) {
            Ok(None) => return Ok(Loaded::default()),
            Ok(Some(bytes)) => match format::parse(&bytes) {
                Parsed::Totals(state, problems) => (state, problems),
                Parsed::Corrupt(problem) => (StoredState::default(), vec![problem]),
                Parsed::Newer(found) => return Err(StateError::NewerFormat { path, found }),
            },
            Err(problem) => (StoredState::default(), vec![problem]),
        };
        let set_aside = if problems.is_empty() {
            None
        } else {
            Some(SetAside {
                moved_to: self.set_aside()?,
                problems,
            })
        };
        Ok(Loaded {
            state,
            found: true,
            set_aside,
        })
    }

    /// Move `state.json` to a name of its own, and keep only the newest few moved files.
    fn set_aside(&self) -> Result<PathBuf, StateError> {
        let stamp = crate::time::unix_now() as u64;
        // Numbered after the newest of this second, so the order of the names is the order of
        // the events even after the oldest were deleted.
        let mut n = self
            .set_aside_files()
            .iter()
            .filter(|((s, _), _)| *s == stamp)
            .map(|((_, n), _)| n + 1)
            .max()
            .unwrap_or(0);
        let moved_to = loop {
            let candidate = self.dir.join(format!("{SET_ASIDE_PREFIX}{stamp}-{n}"));
            match rename_noreplace(&self.path(), &candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < u32::MAX => n += 1,
                Err(source) => {
                    return Err(StateError::Write {
                        path: candidate,
                        source,
                    })
                }
            }
        };
        let files = self.set_aside_files();
        let excess = files.len().saturating_sub(KEEP_SET_ASIDE);
        for (_, path) in files.into_iter().take(excess) {
            if let Err(e) = fs::remove_file(&path) {
                log::warn!("cannot remove old {}: {e}", path.display());
            }
        }
        Ok(moved_to)
    }

    /// The set-aside files, oldest first, by (unix second, number).
    fn set_aside_files(&self) -> Vec<((u64, u32), PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<((u64, u32), PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let (stamp, n) = name
                    .to_str()?
                    .strip_prefix(SET_ASIDE_PREFIX)?
                    .split_once('-')?;
                Some(((stamp.parse().ok()?, n.parse().ok()?), e.path()))
            })
            .collect();
        files.sort();
        files
    }

    /// Write `state` atomically and durably: when this returns `Ok`, the totals survive a
    /// power cut.
    pub(crate) fn save(&self, state: &StoredState) -> Result<(), StateError> {
        let path = self.path();
        let write_error = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let bytes =
            format::encode(state, crate::time::unix_now()).map_err(|e| write_error(e.into()))?;
        // O_CREAT | O_EXCL under a random name, mode 0600; deleted again if anything fails.
        let mut tmp = tempfile::Builder::new()
            .prefix(".state.json.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(write_error)?;
        tmp.write_all(&bytes).map_err(write_error)?;
        tmp.as_file().sync_all().map_err(write_error)?;
        // rename(2) replaces whatever `state.json` is, a link included, without following it.
        tmp.persist(&path).map_err(|e| write_error(e.error))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StoredSensor;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    fn state(joules: f64) -> StoredState {
        let mut s = StoredState::default();
        s.sensors
            .insert("fridge".into(), StoredSensor::totals(joules, 0.0));
        s
    }

    fn store_with(text: &[u8]) -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), text).unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn set_aside_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(SET_ASIDE_PREFIX))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let fresh = store.load().unwrap();
        assert!(!fresh.found && fresh.state.sensors.is_empty());
        store.save(&state(1234.5)).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.found && loaded.set_aside.is_none());
        assert_eq!(loaded.state.sensors["fridge"].energy_joules, 1234.5);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }

    /// Totals come back bit for bit: a total one ulp lower would read as a counter reset.
    #[test]
    fn totals_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut x = 59.719_690_560_000_004_f64;
        for _ in 0..500 {
            store.save(&state(x)).unwrap();
            let loaded = store.load().unwrap().state;
            assert_eq!(
                loaded.sensors["fridge"].energy_joules.to_bits(),
                x.to_bits(),
                "{x}"
            );
            x = x * 1.000_123_4 + 0.1;
        }
    }

    #[test]
    fn the_format_of_version_one_still_loads() {
        let (_dir, store) = store_with(
            br#"{"version": 1, "saved_at": 1.5, "sensors": {"a": {"energy_joules": 5.0}}}"#,
        );
        let loaded = store.load().unwrap();
        assert!(loaded.set_aside.is_none());
        assert_eq!(loaded.state.sensors["a"].energy_joules, 5.0);
        assert_eq!(loaded.state.sensors["a"].energy_reverse_joules, 0.0);
    }

    #[test]
    fn a_newer_format_is_refused_and_left_in_place() {
        let text = br#"{"version": 7, "sensors": {"a": {"energy_joules": 5.0}}, "batteries": {}}"#;
        let (dir, store) = store_with(text);
        let err = store.load().unwrap_err();
        assert!(
            matches!(err, StateError::NewerFormat { found: 7, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("newer power-monitord"), "{err}");
        assert_eq!(fs::read(dir.path().join(STATE_FILE)).unwrap(), text);
        assert!(set_aside_files(dir.path()).is_empty());
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_not_lost() {
        let (dir, store) = store_with(b"{\"version\": 1, \"sensors\": {\"a\": ");
        let loaded = store.load().unwrap();
        let aside = loaded.set_aside.expect("set aside");
        assert!(loaded.state.sensors.is_empty());
        assert!(aside.problems[0].contains("not a"), "{:?}", aside.problems);
        assert!(!store.path().exists());
        assert!(fs::read_to_string(&aside.moved_to)
            .unwrap()
            .starts_with("{\"version\": 1"));
        assert_eq!(set_aside_files(dir.path()).len(), 1);
    }

    /// One bad entry costs only its own sensor.
    #[test]
    fn entries_are_checked_one_by_one() {
        let (dir, store) = store_with(
            br#"{"version": 1, "sensors": {
                "ac001": {"energy_joules": -5.0},
                "fr003": {"energy_joules": 5000.0, "energy_reverse_joules": 2.0},
                "wm002": {"energy_joules": "lots"},
                "pi_5v": {"energy_joules": 1.797e308},
                "nan": {"energy_joules": 1e999},
                "extra": {"energy_joules": 1.0, "colour": "red"},
                "ok2": {"energy_joules": 7.0}
            }}"#,
        );
        let loaded = store.load().unwrap();
        let sensors = &loaded.state.sensors;
        assert_eq!(sensors.len(), 2, "{sensors:?}");
        assert_eq!(sensors["fr003"].energy_joules, 5000.0);
        assert_eq!(sensors["fr003"].energy_reverse_joules, 2.0);
        assert_eq!(sensors["ok2"].energy_joules, 7.0);
        let problems = loaded.set_aside.expect("set aside").problems;
        assert_eq!(problems.len(), 5, "{problems:?}");
        for name in ["ac001", "wm002", "pi_5v", "nan", "extra"] {
            assert!(
                problems.iter().any(|p| p.contains(&format!("{name:?}"))),
                "{name}: {problems:?}"
            );
        }
        assert_eq!(set_aside_files(dir.path()).len(), 1);
    }

    #[test]
    fn duplicate_entries_are_refused_not_last_wins() {
        let (_dir, store) = store_with(
            br#"{"version": 1, "sensors": {
                "ac001": {"energy_joules": 90000.0},
                "fr003": {"energy_joules": 10.0},
                "ac001": {"energy_joules": 5.0}
            }}"#,
        );
        let loaded = store.load().unwrap();
        assert!(!loaded.state.sensors.contains_key("ac001"));
        assert_eq!(loaded.state.sensors["fr003"].energy_joules, 10.0);
        let problems = loaded.set_aside.unwrap().problems;
        assert_eq!(problems, vec!["sensor \"ac001\" appears 2 times"]);
    }

    #[test]
    fn a_duplicate_top_level_key_is_corrupt() {
        let (_dir, store) = store_with(
            br#"{"version": 1, "sensors": {"a": {"energy_joules": 9.0}}, "sensors": {"a": {"energy_joules": 1.0}}}"#,
        );
        let loaded = store.load().unwrap();
        assert!(loaded.state.sensors.is_empty());
        assert!(loaded.set_aside.is_some());
    }

    #[test]
    fn a_fifo_is_set_aside_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; mkfifo creates a node and touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let store = StateStore::open(dir.path()).unwrap();
        let start = Instant::now();
        let loaded = store.load().unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        let problems = loaded.set_aside.unwrap().problems;
        assert!(problems[0].contains("not a regular file"), "{problems:?}");
    }

    #[test]
    fn a_link_to_a_device_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/dev/zero", dir.path().join(STATE_FILE)).unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let aside = loaded.set_aside.unwrap();
        assert!(
            aside.problems[0].contains("symbolic link"),
            "{:?}",
            aside.problems
        );
        // The link itself was moved, its target untouched.
        assert!(fs::symlink_metadata(&aside.moved_to)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn an_oversized_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join(STATE_FILE)).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let problems = store.load().unwrap().set_aside.unwrap().problems;
        assert!(
            problems[0].contains("more than a state file"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_planted_link_at_the_old_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        let missing = outside.path().join("created");
        fs::write(&victim, "keep me").unwrap();
        symlink(&victim, dir.path().join("state.json.tmp")).unwrap();
        symlink(&missing, dir.path().join(".state.json.tmp")).unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.save(&state(1.0)).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!missing.exists());
        assert!(fs::symlink_metadata(store.path()).unwrap().is_file());
    }

    #[test]
    fn a_link_at_state_json_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "keep me").unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        symlink(&victim, store.path()).unwrap();
        store.save(&state(1.0)).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(fs::symlink_metadata(store.path()).unwrap().is_file());
    }

    #[test]
    fn a_linked_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("not-created");
        symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn set_aside_names_are_unique_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        for i in 0..KEEP_SET_ASIDE + 3 {
            fs::write(store.path(), format!("garbage {i}")).unwrap();
            assert!(store.load().unwrap().set_aside.is_some());
        }
        let names = set_aside_files(dir.path());
        assert_eq!(names.len(), KEEP_SET_ASIDE, "{names:?}");
        let mut kept: Vec<String> = names
            .iter()
            .map(|n| fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        kept.sort();
        let newest: Vec<String> = (3..KEEP_SET_ASIDE + 3)
            .map(|i| format!("garbage {i}"))
            .collect();
        assert_eq!(kept, newest);
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
