//! The live file: the totals of the last sample, in a memory-mapped file that outlives a crash.
//!
//! The sampler stores each sensor's totals into its record after every sample: a few atomic
//! stores into the page cache, no system call, no allocation. When the process dies (SIGKILL,
//! a watchdog abort, a panic), the kernel keeps the pages, and the next start reads them. Kept
//! on a tmpfs (`/run`), the file never reaches the SD card; after a reboot it is gone, and
//! `state.json` speaks for the totals.
//!
//! Each record holds two copies of its values, written alternately, each framed by the same
//! sequence number before and after: a process that dies in the middle of an update leaves the
//! other copy whole, and the reader takes the newest complete one.
//!
//! Layout (native byte order; the file never leaves the machine):
//!
//! ```text
//! header   64 bytes   magic "PMLIVE\0\x01", record count (u32), record size (u32), zeros
//! record  264 bytes   kind (u8), name length (u8), name (64 bytes), 6 bytes padding,
//!                     2 × copy: sequence (u64), 10 values (f64 bits), sequence again (u64)
//! ```
//!
//! The header's record size tells the layout: files of 0.2, whose records held 6 values
//! (200 bytes), are read too, their missing values as 0.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use memmap2::{MmapOptions, MmapRaw};

/// Values per record.
pub(crate) const VALUES: usize = 10;
/// Values per record in the files of earlier versions.
const OLD_VALUES: usize = 6;
/// Records per file at most.
pub(crate) const MAX_RECORDS: usize = 1024;
/// The longest name a record holds (a sensor name's limit).
pub(crate) const MAX_NAME: usize = 64;

const MAGIC: [u8; 8] = *b"PMLIVE\0\x01";
const HEADER: usize = 64;
const NAME_AREA: usize = 72;
const COPY: usize = 8 * (VALUES + 2);
const RECORD: usize = NAME_AREA + 2 * COPY;

/// The size of a record of `values` values.
const fn record_size(values: usize) -> usize {
    NAME_AREA + 2 * 8 * (values + 2)
}

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// A sensor's energy totals.
    Sensor = 1,
    /// A battery monitor's state.
    Battery = 2,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Sensor),
            2 => Some(Kind::Battery),
            _ => None,
        }
    }
}

/// The newest complete values of each record of a live file.
pub(crate) type Records = BTreeMap<(Kind, String), [f64; VALUES]>;

/// Read a live file left by an earlier process. Tolerant of anything: a problem with the file
/// as a whole is the `Err`, a damaged record is skipped.
pub(crate) fn read(path: &Path) -> Result<Records, String> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Records::new()),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let limit = (HEADER + MAX_RECORDS * RECORD) as u64;
    if !meta.is_file() || meta.len() > limit {
        return Err(format!(
            "{} is not a live totals file (not a regular file of at most {limit} bytes)",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    Read::by_ref(&mut file)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    parse(&bytes).ok_or_else(|| format!("{} is not a live totals file", path.display()))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn parse(bytes: &[u8]) -> Option<Records> {
    if bytes.get(..8)? != MAGIC {
        return None;
    }
    let count = u32_at(bytes, 8)? as usize;
    let record = u32_at(bytes, 12)? as usize;
    let stored = [VALUES, OLD_VALUES]
        .into_iter()
        .find(|v| record_size(*v) == record)?;
    let copy_size = 8 * (stored + 2);
    if bytes.len() != HEADER + count.checked_mul(record)? {
        return None;
    }
    let mut records = Records::new();
    for i in 0..count {
        let at = HEADER + i * record;
        let Some(kind) = Kind::from_byte(bytes[at]) else {
            continue;
        };
        let len = usize::from(bytes[at + 1]);
        let Some(name) = bytes
            .get(at + 2..at + 2 + len)
            .filter(|_| len <= MAX_NAME)
            .and_then(|n| std::str::from_utf8(n).ok())
        else {
            continue;
        };
        let newest = (0..2)
            .filter_map(|copy| {
                let base = at + NAME_AREA + copy * copy_size;
                let (begin, end) = (u64_at(bytes, base)?, u64_at(bytes, base + copy_size - 8)?);
                (begin != 0 && begin == end).then_some((begin, base))
            })
            .max();
        if let Some((_, base)) = newest {
            let mut values = [0.0; VALUES];
            for (j, v) in values.iter_mut().enumerate().take(stored) {
                *v = f64::from_bits(u64_at(bytes, base + 8 * (j + 1))?);
            }
            records.insert((kind, name.to_string()), values);
        }
    }
    Some(records)
}

/// A live file this process writes: a fixed number of records, claimed by name.
pub(crate) struct LiveFile {
    path: PathBuf,
    shared: Arc<Shared>,
}

/// The mapping and who holds which record.
struct Shared {
    map: MmapRaw,
    /// Per record: whose it is (once claimed, a record keeps its name for this process, so a
    /// sensor removed and added again continues in its own record), and whether a slot holds it.
    owners: Mutex<Vec<Option<(Kind, String, bool)>>>,
}

/// One record of a [`LiveFile`], written by the one pipeline that owns it.
pub struct LiveSlot {
    shared: Arc<Shared>,
    index: usize,
    seq: u64,
}

impl LiveSlot {
    fn offset(&self) -> usize {
        HEADER + self.index * RECORD
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        let map = &self.shared.map;
        debug_assert!(at.is_multiple_of(8) && at + 8 <= map.len());
        // SAFETY: `at` is 8-aligned within the mapping (the mapping is page-aligned and every
        // offset is a multiple of 8 below its length), the mapping lives as long as `shared`,
        // and the words of this record are only ever accessed atomically, by this slot.
        unsafe { AtomicU64::from_ptr(map.as_mut_ptr().add(at).cast()) }
    }

    /// Store the values (at most [`VALUES`]; the rest read 0) as the record's newest copy.
    pub(crate) fn store(&mut self, values: &[f64]) {
        self.seq += 1;
        let copy = self.offset() + NAME_AREA + (self.seq as usize & 1) * COPY;
        // Release orders the stores as written: a reader after a crash sees the opening
        // sequence number change first and the closing one last.
        self.word(copy).store(self.seq, Ordering::Release);
        for j in 0..VALUES {
            let v = values.get(j).copied().unwrap_or(0.0);
            self.word(copy + 8 * (j + 1))
                .store(v.to_bits(), Ordering::Release);
        }
        self.word(copy + COPY - 8)
            .store(self.seq, Ordering::Release);
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        // The record keeps its name and last values: a crash before its totals are saved
        // still finds them.
        let mut owners = self
            .shared
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(Some((_, _, held))) = owners.get_mut(self.index) {
            *held = false;
        }
    }
}

/// Give `file` `len` bytes of real storage, not a sparse hole: a page of a mapped file that
/// the file system cannot allocate when it is first touched (a full tmpfs) kills the process
/// with SIGBUS, so every page is allocated before the mapping, and no space is an error here.
fn allocate(file: &std::fs::File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len_off = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "live file too large"))?;
    // SAFETY: a valid open descriptor; the call reads no memory of ours.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len_off) } {
        0 => Ok(()),
        // A file system without fallocate (musl does not emulate it): write the zeros.
        libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL => {
            use std::io::Write;
            let mut writer = io::BufWriter::new(file);
            io::copy(&mut io::repeat(0).take(len), &mut writer)?;
            writer.flush()
        }
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

impl LiveFile {
    /// Replace the file at `path` with one of `capacity` empty records (at most
    /// [`MAX_RECORDS`]).
    pub(crate) fn create(path: &Path, capacity: usize) -> io::Result<LiveFile> {
        if capacity > MAX_RECORDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many records for the live file",
            ));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new().prefix(".live.").tempfile_in(dir)?;
        allocate(tmp.as_file(), (HEADER + capacity * RECORD) as u64)?;
        let map = MmapOptions::new().map_raw(tmp.as_file())?;
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&(capacity as u32).to_ne_bytes());
        header[12..16].copy_from_slice(&(RECORD as u32).to_ne_bytes());
        // SAFETY: the mapping is at least HEADER bytes long and not yet shared.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), map.as_mut_ptr(), header.len()) };
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(LiveFile {
            path: path.to_path_buf(),
            shared: Arc::new(Shared {
                map,
                owners: Mutex::new(vec![None; capacity]),
            }),
        })
    }

    /// A record for `name` holding `values`: its own record if it had one, else a new one;
    /// `None` when the name is too long, it is held already, or the file is full.
    pub(crate) fn claim(&self, kind: Kind, name: &str, values: &[f64]) -> Option<LiveSlot> {
        if name.len() > MAX_NAME {
            return None;
        }
        let mut owners = self
            .shared
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let index = match owners
            .iter()
            .position(|o| matches!(o, Some((k, n, _)) if *k == kind && n == name))
        {
            Some(i) if matches!(owners[i], Some((_, _, true))) => return None,
            Some(i) => i,
            None => owners.iter().position(Option::is_none)?,
        };
        owners[index] = Some((kind, name.to_string(), true));
        let mut area = [0u8; 2 + MAX_NAME];
        area[0] = kind as u8;
        area[1] = name.len() as u8;
        area[2..2 + name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: the record lies within the mapping (its length counts every record), and no
        // slot holds it: nothing else touches its bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                area.as_ptr(),
                self.shared.map.as_mut_ptr().add(HEADER + index * RECORD),
                area.len(),
            )
        };
        let mut slot = LiveSlot {
            shared: Arc::clone(&self.shared),
            index,
            seq: 0,
        };
        // Above the sequence numbers a previous holder left, so the reader takes these values.
        slot.seq = (0..2)
            .map(|copy| {
                slot.word(slot.offset() + NAME_AREA + copy * COPY)
                    .load(Ordering::Acquire)
            })
            .max()
            .unwrap_or(0);
        slot.store(values);
        Some(slot)
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Delete the file: after a clean stop, `state.json` holds everything it held.
    pub(crate) fn remove(self) -> io::Result<()> {
        std::fs::remove_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(a: f64, b: f64) -> [f64; VALUES] {
        let mut v = [0.0; VALUES];
        v[0] = a;
        v[1] = b;
        v
    }

    #[test]
    fn what_was_stored_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.bin");
        let file = LiveFile::create(&path, 4).unwrap();
        let mut slots = [
            file.claim(Kind::Sensor, "ac001", &values(1.0, 2.0))
                .unwrap(),
            file.claim(Kind::Sensor, &"x".repeat(MAX_NAME), &values(3.0, 0.0))
                .unwrap(),
        ];
        let read_back = read(&path).unwrap();
        assert_eq!(read_back[&(Kind::Sensor, "ac001".into())], values(1.0, 2.0));
        for i in 0..5 {
            slots[0].store(&[10.0 + f64::from(i), 0.5]);
        }
        // A second process sees the page cache as the dead one left it.
        let read_back = read(&path).unwrap();
        assert_eq!(
            read_back[&(Kind::Sensor, "ac001".into())],
            values(14.0, 0.5)
        );
        assert_eq!(
            read_back[&(Kind::Sensor, "x".repeat(MAX_NAME))],
            values(3.0, 0.0)
        );
        file.remove().unwrap();
        assert!(read(&path).unwrap().is_empty());
    }

    /// A process killed in the middle of an update leaves the previous copy.
    #[test]
    fn a_torn_update_falls_back_to_the_other_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.bin");
        let file = LiveFile::create(&path, 1).unwrap();
        let mut slot = file.claim(Kind::Sensor, "a", &values(1.0, 0.0)).unwrap();
        slot.store(&[2.0]);
        slot.store(&[3.0]);
        let mut bytes = std::fs::read(&path).unwrap();
        // Copy 1 holds sequence 3 (value 3.0): tear it by changing its closing number.
        let copy1 = HEADER + NAME_AREA + COPY;
        bytes[copy1 + COPY - 8] ^= 0xFF;
        let records = parse(&bytes).unwrap();
        assert_eq!(records[&(Kind::Sensor, "a".into())][0], 2.0);
    }

    /// A file of the previous layout (6 values a record) still speaks for its totals.
    #[test]
    fn files_of_the_previous_layout_are_read() {
        let old = record_size(OLD_VALUES);
        assert_eq!(old, 200);
        let mut bytes = vec![0u8; HEADER + old];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&1u32.to_ne_bytes());
        bytes[12..16].copy_from_slice(&(old as u32).to_ne_bytes());
        let at = HEADER;
        bytes[at] = Kind::Sensor as u8;
        bytes[at + 1] = 2;
        bytes[at + 2..at + 4].copy_from_slice(b"pv");
        // Copy 0: sequence 7, forward 1234.5, reverse 6.25, sequence 7.
        let base = at + NAME_AREA;
        bytes[base..base + 8].copy_from_slice(&7u64.to_ne_bytes());
        bytes[base + 8..base + 16].copy_from_slice(&1234.5f64.to_bits().to_ne_bytes());
        bytes[base + 16..base + 24].copy_from_slice(&6.25f64.to_bits().to_ne_bytes());
        let end = base + 8 * (OLD_VALUES + 1);
        bytes[end..end + 8].copy_from_slice(&7u64.to_ne_bytes());
        let records = parse(&bytes).unwrap();
        assert_eq!(records[&(Kind::Sensor, "pv".into())], values(1234.5, 6.25));
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        assert!(parse(b"").is_none());
        assert!(parse(&[0u8; 4096]).is_none());
        let mut bytes = vec![0u8; HEADER + RECORD];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&2u32.to_ne_bytes());
        bytes[12..16].copy_from_slice(&(RECORD as u32).to_ne_bytes());
        assert!(parse(&bytes).is_none(), "count beyond the file");
        bytes[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert!(parse(&bytes).unwrap().is_empty(), "an empty record");
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("live.bin");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read(&link).is_err());
    }

    #[test]
    fn records_are_claimed_by_name_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.bin");
        let file = LiveFile::create(&path, 2).unwrap();
        let long = "x".repeat(MAX_NAME + 1);
        assert!(file.claim(Kind::Sensor, &long, &[0.0]).is_none());
        let mut a = file.claim(Kind::Sensor, "a", &[1.0]).unwrap();
        assert!(
            file.claim(Kind::Sensor, "a", &[1.0]).is_none(),
            "held twice"
        );
        for v in 2..6 {
            a.store(&[f64::from(v)]);
        }
        drop(a);
        // Released, the record still holds its last values for a crash to find.
        assert_eq!(read(&path).unwrap()[&(Kind::Sensor, "a".into())][0], 5.0);
        let _b = file.claim(Kind::Sensor, "b", &[7.0]).unwrap();
        assert!(file.claim(Kind::Sensor, "c", &[0.0]).is_none(), "full");
        // Claimed again, "a" continues in its own record, above the old sequence numbers.
        let again = file.claim(Kind::Sensor, "a", &[6.0]).unwrap();
        assert_eq!(read(&path).unwrap()[&(Kind::Sensor, "a".into())][0], 6.0);
        drop(again);
        assert!(LiveFile::create(&path, MAX_RECORDS + 1).is_err());
    }
}
