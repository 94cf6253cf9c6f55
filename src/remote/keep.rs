//! Keeping what the receiver has not stored: the batches in memory moved into a segment (a
//! spill), the spool's size limit, memory's cap when the spool cannot be written, and the
//! oldest segment read back for sending.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::spool::{Record, Segments};
use super::{lock, publish, Batch, Shared, MEMORY_BYTES};

/// What a queue holds in memory at all (its spool cannot be written): past it the oldest go.
const MAX_MEMORY_BYTES: usize = 4 * MEMORY_BYTES;

/// The spool's gauge and size limit, on a blocking thread: past the limit, the oldest
/// segments are dropped and counted.
fn trim_spool(shared: &Shared, segments: &mut Segments) {
    while segments.bytes() > shared.max_spool_bytes && segments.len() > 1 {
        match segments.remove_oldest() {
            Ok(samples) => {
                log::warn!(
                    "remote write {}: the spool is full ({} MiB); dropped its oldest segment ({samples} samples)",
                    shared.name,
                    shared.max_spool_bytes >> 20
                );
                shared
                    .m
                    .dropped
                    .with_label_values(&[&shared.name, "spool_full"])
                    .inc_by(samples);
            }
            Err(_) => break,
        }
    }
    disk_gauges(shared, segments);
}

/// What the spool holds, for the gauges.
pub(super) fn disk_gauges(shared: &Shared, segments: &Segments) {
    shared
        .m
        .pending_bytes
        .with_label_values(&[&shared.name, "disk"])
        .set(segments.bytes() as i64);
    shared
        .disk_samples
        .store(segments.samples(), Ordering::Release);
    shared
        .disk_oldest_ms
        .store(segments.oldest_ms().unwrap_or(i64::MAX), Ordering::Release);
}

/// Move the batches in memory into a new segment (on a blocking thread), then empty the
/// tail, which held them.
pub(super) async fn spill(shared: &Arc<Shared>) {
    let Some(segments) = shared.segments.clone() else {
        cap_memory(shared);
        return;
    };
    let batches: Vec<Batch> = {
        let mut memory = lock(&shared.memory);
        memory.bytes = 0;
        memory.batches.drain(..).collect()
    };
    if batches.is_empty() {
        return;
    }
    let records: Vec<Record> = batches.iter().map(Batch::record).collect();
    let writer = Arc::clone(shared);
    let written = tokio::task::spawn_blocking(move || {
        let mut segments = lock(&segments);
        let result = segments.append(&records);
        trim_spool(&writer, &mut segments);
        result
    })
    .await;
    let failed = match written {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    match failed {
        None => {
            if let Some(tail) = lock(&shared.tail).as_mut() {
                tail.clear();
            }
        }
        Some(why) => {
            log::warn!(
                "remote write {}: cannot spool: {why}; the samples stay in memory",
                shared.name
            );
            // Back in front of what came since, in order.
            {
                let mut memory = lock(&shared.memory);
                for b in batches.into_iter().rev() {
                    memory.bytes += b.body.len();
                    memory.batches.push_front(b);
                }
            }
            cap_memory(shared);
        }
    }
    publish(shared);
}

/// Memory past [`MAX_MEMORY_BYTES`] (no spool, or one that cannot be written): the oldest
/// batches give way, counted, down to three quarters of it, and the tail is written anew with
/// what stays.
fn cap_memory(shared: &Shared) {
    let mut memory = lock(&shared.memory);
    if memory.bytes <= MAX_MEMORY_BYTES {
        return;
    }
    let mut dropped = 0;
    while memory.bytes > MAX_MEMORY_BYTES / 4 * 3 {
        let Some(b) = memory.batches.pop_front() else {
            break;
        };
        memory.bytes -= b.body.len();
        dropped += b.samples as u64;
    }
    log::warn!(
        "remote write {}: {} MiB wait in memory and cannot be spooled; dropped the oldest ({dropped} samples)",
        shared.name,
        MAX_MEMORY_BYTES >> 20
    );
    shared
        .m
        .dropped
        .with_label_values(&[&shared.name, "spool_full"])
        .inc_by(dropped);
    if let Some(tail) = lock(&shared.tail).as_mut() {
        tail.rewrite(memory.batches.iter().map(Batch::record));
    }
}

/// What reading the oldest segment gave.
pub(super) enum Oldest {
    /// Its batches, and its path.
    Batches(PathBuf, VecDeque<Batch>),
    /// No segment.
    None,
    /// It cannot be read now (the error): tried again later, nothing newer is sent meanwhile.
    Unreadable(String),
}

/// The oldest segment's batches, read on a blocking thread. A damaged one gives what it can
/// (a damaged record ends its reading); what it cannot is counted.
pub(super) async fn load_oldest(shared: &Arc<Shared>) -> Oldest {
    let Some(segments) = shared.segments.clone() else {
        return Oldest::None;
    };
    let reader = Arc::clone(shared);
    let read = tokio::task::spawn_blocking(move || {
        let mut segments = lock(&segments);
        loop {
            let Some((path, samples, records)) = segments.oldest() else {
                return Oldest::None;
            };
            let records = match records {
                Ok(records) => records,
                Err(e) => return Oldest::Unreadable(format!("{}: {e}", path.display())),
            };
            let readable: u64 = records.iter().map(|r| u64::from(r.samples)).sum();
            if readable < samples {
                log::warn!(
                    "remote write {}: {} is damaged: {} of its {samples} samples are lost",
                    reader.name,
                    path.display(),
                    samples - readable
                );
                reader
                    .m
                    .dropped
                    .with_label_values(&[&reader.name, "damaged"])
                    .inc_by(samples - readable);
            }
            if !records.is_empty() {
                let mut path = path;
                if readable < samples && segments.replace(&path, &records).is_ok() {
                    // Renamed for what it holds now.
                    path = segments.oldest().map_or(path, |(p, ..)| p);
                    disk_gauges(&reader, &segments);
                }
                let batches = records.into_iter().map(Batch::from_record).collect();
                return Oldest::Batches(path, batches);
            }
            let _ = segments.remove_path(&path);
            disk_gauges(&reader, &segments);
        }
    })
    .await;
    read.unwrap_or_else(|e| Oldest::Unreadable(e.to_string()))
}

/// Delete a segment that is all stored, on a blocking thread.
pub(super) async fn remove_segment(shared: &Arc<Shared>, path: PathBuf) {
    let Some(segments) = shared.segments.clone() else {
        return;
    };
    let owner = Arc::clone(shared);
    let _ = tokio::task::spawn_blocking(move || {
        let mut segments = lock(&segments);
        let _ = segments.remove_path(&path);
        trim_spool(&owner, &mut segments);
    })
    .await;
}
