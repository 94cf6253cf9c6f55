//! Where a remote write queue keeps what the receiver has not stored yet, so that days
//! offline, a crash or a restart lose nothing:
//!
//! - **the tail**, in the runtime directory (a tmpfs: no SD-card writes): every batch taken is
//!   appended, without fsync; a `kill -9` leaves it for the next start. Emptied when the
//!   receiver has stored everything.
//! - **segments**, in the state directory: while the receiver is away, the batches in memory
//!   are written out in one file at a time (written, synced, renamed), every few minutes, so a
//!   power cut loses at most the batches since the last one, and the card sees a few writes an
//!   hour. Sent oldest first; a segment is deleted once all of it is stored. Past the size
//!   limit the oldest segment is dropped.
//!
//! Both hold records: `len` (u32), `crc32` (u32, of what follows), `taken_ms` (i64), `samples`
//! (u32), then `len` bytes of a Snappy-compressed `WriteRequest`; little-endian. A record cut
//! short or damaged ends its file's reading.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A batch: one request's worth of samples.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    /// Its samples' time, Unix milliseconds.
    pub(crate) taken_ms: i64,
    /// How many samples it carries.
    pub(crate) samples: u32,
    /// The request body.
    pub(crate) body: Vec<u8>,
}

const HEADER: usize = 4 + 4 + 8 + 4;
/// The largest record read back (a request of every series is tens of kilobytes).
const MAX_RECORD: usize = 16 << 20;

impl Record {
    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut head = [0u8; HEADER];
        head[0..4].copy_from_slice(&(self.body.len() as u32).to_le_bytes());
        head[8..16].copy_from_slice(&self.taken_ms.to_le_bytes());
        head[16..20].copy_from_slice(&self.samples.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[8..]);
        crc.update(&self.body);
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        out.write_all(&head)?;
        out.write_all(&self.body)
    }

    /// The bytes it takes in a file.
    pub(crate) fn size(&self) -> u64 {
        (HEADER + self.body.len()) as u64
    }
}

/// The records of `bytes`, up to the first that is cut short or damaged.
fn parse(bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(body) = bytes
            .get(at + HEADER..at + HEADER + len)
            .filter(|_| len <= MAX_RECORD)
        else {
            break;
        };
        let mut check = crc32fast::Hasher::new();
        check.update(&head[8..]);
        check.update(body);
        if check.finalize() != crc {
            break;
        }
        let mut taken = [0u8; 8];
        taken.copy_from_slice(&head[8..16]);
        out.push(Record {
            taken_ms: i64::from_le_bytes(taken),
            samples: u32::from_le_bytes([head[16], head[17], head[18], head[19]]),
            body: body.to_vec(),
        });
        at += HEADER + len;
    }
    out
}

/// The records of the file at `path` (none if it is not there).
pub(crate) fn read(path: &Path) -> io::Result<Vec<Record>> {
    let mut file = match crate::files::open_regular(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(parse(&bytes))
}

/// `records` in a new file at `path`: written to `tmp`, synced, renamed, the directory
/// synced. A failed write leaves no `tmp` behind.
fn write_synced(dir: &Path, path: &Path, tmp: &Path, records: &[Record]) -> io::Result<()> {
    let written = (|| {
        let mut out = io::BufWriter::new(File::create(tmp)?);
        for r in records {
            r.write_to(&mut out)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// The segments of a queue, in its own directory. A segment's name is its sequence number, its
/// first batch's time (Unix ms) and the samples it holds
/// (`0000000000000007-1796545253633-4620.seg`), so the gauges read no file.
#[derive(Debug)]
pub(crate) struct Segments {
    dir: PathBuf,
    /// Oldest first.
    files: Vec<Segment>,
    next: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    samples: u64,
    first_ms: i64,
}

impl Segments {
    /// The segments in `dir` (created if need be).
    pub(crate) fn open(dir: &Path) -> io::Result<Segments> {
        fs::create_dir_all(dir)?;
        let mut files: Vec<(u64, Segment)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some((seq, first_ms, samples)) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| {
                    let mut parts = n.splitn(3, '-');
                    let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
                    Some((
                        seq,
                        parts.next()?.parse().ok()?,
                        parts.next()?.parse().ok()?,
                    ))
                })
            else {
                continue;
            };
            let meta = entry.metadata()?;
            if meta.is_file() {
                let (path, bytes) = (entry.path(), meta.len());
                files.push((
                    seq,
                    Segment {
                        path,
                        bytes,
                        samples,
                        first_ms,
                    },
                ));
            }
        }
        // A segment being written when the process died: its batches are still in the tail.
        for entry in fs::read_dir(dir)?.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".tmp"))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        files.sort_by_key(|(seq, _)| *seq);
        let next = files.last().map_or(0, |(seq, _)| seq + 1);
        Ok(Segments {
            dir: dir.to_path_buf(),
            files: files.into_iter().map(|(_, segment)| segment).collect(),
            next,
        })
    }

    /// Bytes on disk.
    pub(crate) fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Samples on disk.
    pub(crate) fn samples(&self) -> u64 {
        self.files.iter().map(|f| f.samples).sum()
    }

    /// The time of the oldest batch on disk, Unix ms.
    pub(crate) fn oldest_ms(&self) -> Option<i64> {
        self.files.first().map(|f| f.first_ms)
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// `records` as the newest segment: written to a temporary file, synced, renamed, the
    /// directory synced.
    pub(crate) fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let samples = records.iter().map(|r| u64::from(r.samples)).sum();
        let first_ms = records[0].taken_ms;
        let path = self
            .dir
            .join(format!("{:016x}-{first_ms}-{samples}.seg", self.next));
        let tmp = self.dir.join(format!("{:016x}.tmp", self.next));
        write_synced(&self.dir, &path, &tmp, records)?;
        let bytes = records.iter().map(Record::size).sum();
        self.files.push(Segment {
            path,
            bytes,
            samples,
            first_ms,
        });
        self.next += 1;
        Ok(())
    }

    /// The oldest segment's path (to remove once its records are stored), the samples its
    /// name says it holds, and its records.
    pub(crate) fn oldest(&self) -> Option<(PathBuf, u64, io::Result<Vec<Record>>)> {
        let first = self.files.first()?;
        Some((first.path.clone(), first.samples, read(&first.path)))
    }

    /// The time of the newest batch on disk, Unix ms (the newest segment read).
    pub(crate) fn newest_ms(&self) -> Option<i64> {
        let last = self.files.last()?;
        read(&last.path).ok()?.last().map(|r| r.taken_ms)
    }

    /// The segment at `path` holding only `records` now (the rest is stored): written anew
    /// under its sequence number, then the old file removed. Nothing left: removed.
    pub(crate) fn replace(&mut self, path: &Path, records: &[Record]) -> io::Result<()> {
        let Some(i) = self.files.iter().position(|f| f.path == path) else {
            return Ok(());
        };
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').next())
            .unwrap_or_default()
            .to_string();
        if records.is_empty() {
            return self.remove_path(path);
        }
        let samples = records.iter().map(|r| u64::from(r.samples)).sum();
        let first_ms = records[0].taken_ms;
        let new = self.dir.join(format!("{seq}-{first_ms}-{samples}.seg"));
        write_synced(
            &self.dir,
            &new,
            &self.dir.join(format!("{seq}.tmp")),
            records,
        )?;
        if new != path {
            fs::remove_file(path)?;
        }
        self.files[i] = Segment {
            path: new,
            bytes: records.iter().map(Record::size).sum(),
            samples,
            first_ms,
        };
        Ok(())
    }

    /// Delete the segment at `path` if it is one of these.
    pub(crate) fn remove_path(&mut self, path: &Path) -> io::Result<()> {
        if let Some(i) = self.files.iter().position(|f| f.path == path) {
            self.files.remove(i);
            fs::remove_file(path)?;
        }
        Ok(())
    }

    /// Delete the oldest segment; the samples it held.
    pub(crate) fn remove_oldest(&mut self) -> io::Result<u64> {
        if self.files.is_empty() {
            return Ok(0);
        }
        let oldest = self.files.remove(0);
        fs::remove_file(&oldest.path)?;
        Ok(oldest.samples)
    }
}

/// The tail file: the batches not in a segment yet, appended as they are taken.
#[derive(Debug)]
pub(crate) struct Tail {
    file: Option<File>,
    /// Its length.
    bytes: u64,
}

impl Tail {
    /// The tail at `path`, and the whole records a previous process left in it (a record cut
    /// short by a crash is cut off, so what is appended next can be read).
    pub(crate) fn open(path: &Path) -> (Tail, Vec<Record>) {
        let left = read(path).unwrap_or_default();
        let bytes = left.iter().map(Record::size).sum();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|file| file.set_len(bytes).map(|()| file))
            .map_err(|e| {
                log::warn!(
                    "remote write: cannot keep {}: {e}; a crash loses the samples not sent or spooled",
                    path.display()
                )
            })
            .ok();
        (Tail { file, bytes }, left)
    }

    /// Append a record (no fsync: it is for a crash, not a power cut). A tail that cannot be
    /// written (its tmpfs full) is emptied and given up, so no stale batch comes back.
    pub(crate) fn push(&mut self, record: &Record) {
        if let Some(file) = &mut self.file {
            let mut buf = Vec::with_capacity(record.size() as usize);
            if record.write_to(&mut buf).is_ok() && file.write_all(&buf).is_ok() {
                self.bytes += buf.len() as u64;
            } else {
                log::warn!("remote write: cannot append to the tail; a crash loses the samples not sent or spooled");
                let _ = file.set_len(0);
                self.file = None;
            }
        }
    }

    /// Its length.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Empty it: everything it held is stored, or in a segment.
    pub(crate) fn clear(&mut self) {
        if let Some(file) = &self.file {
            let _ = file.set_len(0);
        }
        self.bytes = 0;
    }

    /// Hold exactly `records` (what is left in memory), written anew.
    pub(crate) fn rewrite(&mut self, records: impl Iterator<Item = Record>) {
        self.clear();
        for r in records {
            self.push(&r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> Record {
        Record {
            taken_ms: 1_700_000_000_000 + i * 15_000,
            samples: 3,
            body: vec![i as u8; 10 + i as usize],
        }
    }

    #[test]
    fn segments_keep_their_records_in_order_and_drop_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        segments.append(&[record(0), record(1)]).unwrap();
        segments.append(&[record(2)]).unwrap();
        assert_eq!(segments.len(), 2);
        // Another process finds them, oldest first.
        let mut again = Segments::open(dir.path()).unwrap();
        let (_, samples, oldest) = again.oldest().unwrap();
        assert_eq!(samples, 6);
        assert_eq!(oldest.unwrap(), [record(0), record(1)]);
        assert_eq!(again.remove_oldest().unwrap(), 6);
        assert_eq!(again.oldest().unwrap().2.unwrap(), [record(2)]);
        again.append(&[record(3)]).unwrap();
        assert_eq!(again.bytes(), record(2).size() + record(3).size());
        let found = Segments::open(dir.path()).unwrap();
        assert_eq!(found.samples(), 6);
        assert_eq!(found.oldest_ms(), Some(record(2).taken_ms));
    }

    #[test]
    fn a_segment_partly_stored_keeps_the_rest_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        segments.append(&[record(0), record(1), record(2)]).unwrap();
        segments.append(&[record(3)]).unwrap();
        let (path, ..) = segments.oldest().unwrap();
        segments.replace(&path, &[record(2)]).unwrap();
        assert_eq!(segments.newest_ms(), Some(record(3).taken_ms));
        let found = Segments::open(dir.path()).unwrap();
        assert_eq!((found.len(), found.samples()), (2, 6));
        assert_eq!(found.oldest_ms(), Some(record(2).taken_ms));
        assert_eq!(found.oldest().unwrap().2.unwrap(), [record(2)]);
        // All of it stored: gone.
        let mut segments = found;
        let (path, ..) = segments.oldest().unwrap();
        segments.replace(&path, &[]).unwrap();
        assert_eq!(Segments::open(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_tail_cut_short_keeps_its_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail");
        let (mut tail, left) = Tail::open(&path);
        assert!(left.is_empty());
        for i in 0..3 {
            tail.push(&record(i));
        }
        drop(tail);
        // A crash in the middle of the last write.
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let (mut tail, left) = Tail::open(&path);
        assert_eq!(left, [record(0), record(1)]);
        // The cut record is gone, so what comes next can be read.
        tail.push(&record(3));
        drop(tail);
        let (mut tail, left) = Tail::open(&path);
        assert_eq!(left, [record(0), record(1), record(3)]);
        tail.clear();
        assert!(Tail::open(&path).1.is_empty());
        // A flipped bit ends the reading there.
        let mut bytes = Vec::new();
        for i in 0..2 {
            record(i).write_to(&mut bytes).unwrap();
        }
        bytes[HEADER + 3] ^= 1;
        assert_eq!(parse(&bytes), []);
    }

    /// Three days offline at a batch every 15 s, spooled every 5 minutes: drained oldest
    /// first, every batch once; with a smaller limit, the oldest go and are counted.
    #[test]
    fn three_days_offline_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        let batch = |i: i64| Record {
            taken_ms: i * 15_000,
            samples: 150,
            body: (i as u32).to_le_bytes().repeat(50),
        };
        let per_segment = 20; // 5 minutes
        let days = 3 * 86_400 / 15;
        for start in (0..days).step_by(per_segment) {
            let records: Vec<Record> = (start..start + per_segment as i64).map(batch).collect();
            segments.append(&records).unwrap();
        }
        assert_eq!(segments.len(), (days as usize) / per_segment);
        // A restart in the middle of the outage finds them all.
        let mut segments = Segments::open(dir.path()).unwrap();
        let mut next = 0;
        while let Some((path, _, records)) = segments.oldest() {
            for r in records.unwrap() {
                assert_eq!(r, batch(next));
                next += 1;
            }
            segments.remove_path(&path).unwrap();
        }
        assert_eq!(next, days);

        // The same with room for one day: the first two days give way, oldest first.
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        let day_bytes: u64 = (0..86_400 / 15).map(|i| batch(i).size()).sum();
        let mut dropped = 0;
        for start in (0..days).step_by(per_segment) {
            let records: Vec<Record> = (start..start + per_segment as i64).map(batch).collect();
            segments.append(&records).unwrap();
            while segments.bytes() > day_bytes {
                dropped += segments.remove_oldest().unwrap();
            }
        }
        assert_eq!(dropped, 2 * 86_400 / 15 * 150);
        let (_, _, first) = segments.oldest().unwrap();
        assert_eq!(first.unwrap()[0], batch(2 * 86_400 / 15));
    }
}
