//! Prometheus remote write: the daemon pushes its series to a central store (Prometheus's
//! remote-write receiver, VictoriaMetrics, Mimir, Thanos Receive, Grafana Cloud), for Pis that
//! nobody can scrape.
//!
//! # Layout
//! - [`clock`] — the time a sample carries: held until the clock is synchronised;
//! - [`proto`] — the `WriteRequest` on the wire: protobuf, Snappy, headers;
//! - [`series`] — the series `/metrics` exports, as time series with external labels;
//! - [`sender`] — one POST, and what its answer means;
//! - [`spool`] — the tail (runtime directory) and the segments (state directory) that keep
//!   what the receiver has not stored through crashes, restarts and days offline.
//!
//! A queue's samples, oldest first: the spooled segments, then the batches in memory (each
//! also in the tail). The collector takes a batch every interval; while the receiver is away
//! it moves the batches in memory into a new segment every `spool_flush_interval` (and at a stop).
//! The sender sends the oldest batch, retrying with a backoff; a rejected batch is split to
//! isolate the series the receiver refuses; a batch the receiver calls too old is refused
//! whole, after at most [`TOO_OLD_RETRIES`] retries.

pub(crate) mod clock;
pub(crate) mod proto;
pub(crate) mod sender;
pub(crate) mod series;
pub(crate) mod spool;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use self::clock::Clocks;
use self::proto::WriteRequest;
use self::sender::{Answer, Sender, Transport};
use self::spool::{Record, Segments, Tail};
use crate::config::remote_write::RemoteWriteConfig;
use crate::metrics::{Metrics, RemoteMetrics};

/// What a queue holds in memory at most before it spills to a segment.
const MEMORY_BYTES: usize = 4 << 20;

/// What a queue holds in memory at all (its spool cannot be written): past it the oldest go.
const MAX_MEMORY_BYTES: usize = 4 * MEMORY_BYTES;

/// How often a batch that a 5xx called too old is tried again before it counts as refused.
/// Once one has, the batches behind it are refused at their first such answer, until the
/// receiver stores one again: a backlog past the receiver's window costs a request a batch.
const TOO_OLD_RETRIES: u32 = 2;

/// The receiver's reasons for refusing samples, each logged once (the first few kinds).
#[derive(Default)]
struct Refusals(Vec<String>);

impl Refusals {
    fn log(&mut self, queue: &str, why: &str) {
        if self.0.len() < 10 && !self.0.iter().any(|w| w == why) {
            self.0.push(why.to_string());
            log::warn!(
                "remote write {queue}: the receiver refused samples: {why} (logged once; the rejected samples are counted)"
            );
        }
    }
}

/// One request's worth of samples: all series at one time.
#[derive(Clone)]
struct Batch {
    body: Bytes,
    samples: usize,
    /// Its samples' time, Unix milliseconds.
    taken_ms: i64,
}

impl Batch {
    fn record(&self) -> Record {
        Record {
            taken_ms: self.taken_ms,
            samples: self.samples as u32,
            body: self.body.to_vec(),
        }
    }

    fn from_record(r: Record) -> Batch {
        Batch {
            body: Bytes::from(r.body),
            samples: r.samples as usize,
            taken_ms: r.taken_ms,
        }
    }
}

/// The batches in memory, oldest first (the newest part of the queue).
#[derive(Default)]
struct Memory {
    batches: VecDeque<Batch>,
    bytes: usize,
}

impl Memory {
    /// Take `batch` off the front if it is still there (a spill may have moved it).
    fn pop_front_if(&mut self, batch: &Batch) -> bool {
        let same = self
            .batches
            .front()
            .is_some_and(|b| b.taken_ms == batch.taken_ms && b.body == batch.body);
        if same {
            if let Some(b) = self.batches.pop_front() {
                self.bytes -= b.body.len();
            }
        }
        same
    }
}

/// What the collector and the sender share.
struct Shared {
    name: String,
    memory: Mutex<Memory>,
    /// The tail: the batches in memory, for a crash.
    tail: Mutex<Option<Tail>>,
    /// The segments: touched only on blocking threads (file I/O).
    segments: Option<Arc<Mutex<Segments>>>,
    max_spool_bytes: u64,
    /// The samples in the segments, and the oldest one's time (Unix ms; none: `i64::MAX`),
    /// for the gauges.
    disk_samples: AtomicU64,
    disk_oldest_ms: AtomicI64,
    /// The receiver did not answer or failed the last time.
    away: AtomicBool,
    wake: Notify,
    m: RemoteMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running `[[remote_write]]`: it takes the series every interval and sends them, oldest
/// first, keeping them while the receiver is away.
pub(crate) struct RemoteWrite {
    config: RemoteWriteConfig,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RemoteWrite {
    /// Start pushing what `metrics` exports as `config` says; the spool under `state_dir`,
    /// the tail under `runtime_dir`.
    pub(crate) fn start(
        config: &RemoteWriteConfig,
        metrics: &Arc<Metrics>,
        state_dir: &Path,
        runtime_dir: &Path,
    ) -> Result<RemoteWrite, String> {
        let sender = Sender::new(config)?;
        let clocks = Arc::new(clock::System);
        RemoteWrite::start_with(config, metrics, state_dir, runtime_dir, sender, clocks)
    }

    /// [`RemoteWrite::start`], sending through `transport`, with `clocks`' time.
    fn start_with(
        config: &RemoteWriteConfig,
        metrics: &Arc<Metrics>,
        state_dir: &Path,
        runtime_dir: &Path,
        transport: impl Transport,
        clocks: Arc<dyn Clocks>,
    ) -> Result<RemoteWrite, String> {
        let m = metrics.remote().map_err(|e| e.to_string())?;
        let name = config.name.clone();
        let segments = Segments::open(&state_dir.join("remote-write").join(&name))
            .map_err(|e| {
                log::warn!(
                    "remote write {name}: no spool in {}: {e}; samples wait in memory only",
                    state_dir.display()
                )
            })
            .ok();
        let (mut tail, mut left) =
            Tail::open(&runtime_dir.join(format!("remote-write-{name}.tail")));
        // A crash between a spill's rename and the tail's emptying leaves the same batches in
        // both: the segment has them.
        if let Some(newest) = segments.as_ref().and_then(Segments::newest_ms) {
            let before = left.len();
            left.retain(|r| r.taken_ms > newest);
            if left.len() < before {
                tail.rewrite(left.iter().cloned());
            }
        }
        let mut memory = Memory::default();
        for r in left {
            let b = Batch::from_record(r);
            memory.bytes += b.body.len();
            memory.batches.push_back(b);
        }
        if let Some(s) = &segments {
            if s.len() > 0 || !memory.batches.is_empty() {
                log::info!(
                    "remote write {name}: {} spooled segment(s) and {} batch(es) from before the start to send first",
                    s.len(),
                    memory.batches.len()
                );
            }
        }
        let shared = Arc::new(Shared {
            name,
            memory: Mutex::new(memory),
            tail: Mutex::new(Some(tail)),
            segments: segments.map(|s| Arc::new(Mutex::new(s))),
            max_spool_bytes: config.max_spool_bytes,
            disk_samples: AtomicU64::new(0),
            disk_oldest_ms: AtomicI64::new(i64::MAX),
            away: AtomicBool::new(false),
            wake: Notify::new(),
            m,
        });
        shared.m.touch(&shared.name);
        if let Some(segments) = &shared.segments {
            disk_gauges(&shared, &lock(segments));
        }
        publish(&shared);
        let (stop, stopped) = watch::channel(false);
        let collector = tokio::spawn(collect(
            config.clone(),
            Arc::clone(metrics),
            Arc::clone(&shared),
            runtime_dir.to_path_buf(),
            clocks,
            stopped.clone(),
        ));
        let sending = tokio::spawn(send(config.clone(), transport, shared, stopped));
        log::info!(
            "remote write {}: pushing to {} every {}",
            config.name,
            config.url,
            humantime::format_duration(config.interval)
        );
        Ok(RemoteWrite {
            config: config.clone(),
            stop,
            tasks: vec![collector, sending],
        })
    }

    /// What it runs on.
    pub(crate) fn config(&self) -> &RemoteWriteConfig {
        &self.config
    }

    /// Stop taking and sending samples; what is not sent goes to a segment. A task that has
    /// not finished within 10 s is aborted, so a queue started next on the same spool is alone.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// Whether the files a queue needs (its TLS CA, client certificate and key; its password or
/// token) load: a reload checks this before it stops the running queue.
pub(crate) fn check_files(config: &RemoteWriteConfig) -> Result<(), String> {
    Sender::new(config).map(|_| ())
}

/// The queue's gauges.
fn publish(shared: &Shared) {
    let name = shared.name.as_str();
    let m = &shared.m;
    let memory = lock(&shared.memory);
    let samples: usize = memory.batches.iter().map(|b| b.samples).sum();
    let on_disk = shared.disk_samples.load(Ordering::Acquire);
    m.pending
        .with_label_values(&[name])
        .set(samples as i64 + on_disk as i64);
    m.pending_bytes
        .with_label_values(&[name, "memory"])
        .set(memory.bytes as i64);
    // The segments hold the older batches.
    let on_disk = Some(shared.disk_oldest_ms.load(Ordering::Acquire)).filter(|t| *t != i64::MAX);
    match on_disk.or(memory.batches.front().map(|b| b.taken_ms)) {
        Some(oldest) => m
            .oldest_pending
            .with_label_values(&[name])
            .set(oldest as f64 / 1000.0),
        None => {
            let _ = m.oldest_pending.remove_label_values(&[name]);
        }
    }
}

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
fn disk_gauges(shared: &Shared, segments: &Segments) {
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
async fn spill(shared: &Arc<Shared>) {
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

/// Every interval: the exported series, as one batch at the back of the queue (and in the
/// tail); while the receiver is away, a spill every `spool_flush_interval`; at a stop, a last one.
async fn collect(
    config: RemoteWriteConfig,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    runtime_dir: PathBuf,
    clocks: Arc<dyn Clocks>,
    mut stopped: watch::Receiver<bool>,
) {
    // The first batch an interval after the start, when the sensors have been read: a batch
    // at once would lack their series.
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + config.interval,
        config.interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trust = clock::Trust::new(&runtime_dir);
    let mut held = clock::Held::default();
    let mut said_unsynchronized = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => break,
        }
        let families = metrics.gather();
        if config.wait_for_clock_sync && !trust.trusted(clocks.as_ref()) {
            // Held with the boot clock's time until the wall clock is set.
            if !said_unsynchronized {
                said_unsynchronized = true;
                log::warn!("remote write {}: the system clock is not synchronised; holding the samples until it is (wait_for_clock_sync = false pushes them as the clock says)", shared.name);
            }
            let request = WriteRequest {
                timeseries: series::time_series(&families, &config.external_labels, 0),
            };
            let dropped = held.hold(clocks.boot_ms(), &request);
            if dropped > 0 {
                shared
                    .m
                    .dropped
                    .with_label_values(&[&shared.name, "unsynchronized_clock"])
                    .inc_by(dropped as u64);
            }
            continue;
        }
        if held.len() > 0 {
            log::info!(
                "remote write {}: the system clock is synchronised; {} held batch(es) get its time",
                shared.name,
                held.len()
            );
            for (taken_ms, request) in held.release(clocks.unix_ms(), clocks.boot_ms()) {
                queue(&shared, request, taken_ms);
            }
        }
        let taken_ms = clocks.unix_ms();
        let request = WriteRequest {
            timeseries: series::time_series(&families, &config.external_labels, taken_ms),
        };
        let taken_ms = queue(&shared, request, taken_ms);
        let due = {
            let memory = lock(&shared.memory);
            let oldest = memory.batches.front().map_or(taken_ms, |b| b.taken_ms);
            let waited = Duration::from_millis((taken_ms - oldest).max(0) as u64);
            // Whether the receiver is away or only slow: a power cut loses at most this.
            memory.bytes > MEMORY_BYTES || waited >= config.spool_flush_interval
        };
        if due {
            spill(&shared).await;
        }
        publish(&shared);
        shared.wake.notify_one();
    }
    // A stop (or an upgrade): what is not sent is kept on disk, not only in the tail.
    spill(&shared).await;
}

/// `request` (its samples at `taken_ms`) at the back of the queue and in the tail.
fn queue(shared: &Shared, request: WriteRequest, taken_ms: i64) -> i64 {
    let batch = Batch {
        samples: request.samples(),
        body: Bytes::from(request.body()),
        taken_ms,
    };
    if let Some(tail) = lock(&shared.tail).as_mut() {
        tail.push(&batch.record());
    }
    let mut memory = lock(&shared.memory);
    memory.bytes += batch.body.len();
    memory.batches.push_back(batch);
    taken_ms
}

/// Where the batch being sent came from.
enum Source {
    /// The oldest segment, loaded.
    Segment,
    /// Memory.
    Memory,
}

/// Send the oldest batch until none is left; back off while the receiver is away.
async fn send(
    config: RemoteWriteConfig,
    sender: impl Transport,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let name = shared.name.clone();
    let mut backoff = config.min_backoff;
    let mut away: Option<String> = None;
    let mut refusals = Refusals::default();
    // Tries of the front batch that the receiver said was too old with a 5xx; and whether it
    // said so after its last retry (the batches behind are then refused at their first).
    let mut too_old_tries = 0u32;
    let mut too_old_confirmed = false;
    // The oldest segment's batches, being sent.
    let mut loaded: VecDeque<Batch> = VecDeque::new();
    let mut loaded_path: Option<PathBuf> = None;
    let mut loaded_total = 0;
    loop {
        if loaded_path.as_ref().is_some_and(|p| !p.exists()) {
            // The spool was full and dropped the segment being sent (and counted it).
            loaded.clear();
            loaded_path = None;
        }
        if loaded.is_empty() {
            if let Some(path) = loaded_path.take() {
                remove_segment(&shared, path).await;
            }
            match load_oldest(&shared).await {
                Oldest::Batches(path, batches) => {
                    loaded_total = batches.len();
                    loaded = batches;
                    loaded_path = Some(path);
                    continue;
                }
                Oldest::None => {}
                Oldest::Unreadable(why) => {
                    if away.is_none() {
                        log::warn!(
                            "remote write {name}: cannot read the spool: {why}; trying again"
                        );
                    }
                    away = Some(why);
                    tokio::select! {
                        _ = tokio::time::sleep(config.max_backoff) => continue,
                        _ = stopped.changed() => break,
                    }
                }
            }
        }
        let in_memory = lock(&shared.memory).batches.front().cloned();
        let (batch, source) = match (loaded.front(), in_memory) {
            (Some(b), _) => (b.clone(), Source::Segment),
            (None, Some(b)) => (b, Source::Memory),
            (None, None) => {
                tokio::select! {
                    _ = shared.wake.notified() => continue,
                    _ = stopped.changed() => break,
                }
            }
        };
        if let Some(limit) = config.sample_age_limit {
            let age_ms = (crate::time::unix_now() * 1000.0) as i64 - batch.taken_ms;
            if age_ms > limit.as_millis() as i64 {
                done(&shared, &mut loaded, &source, &batch, Outcome::TooOldToSend);
                continue;
            }
        }
        let answer = tokio::select! {
            answer = sender.send(batch.body.clone()) => answer,
            _ = stopped.changed() => break,
        };
        match answer {
            Answer::Stored => {
                if let Some(why) = away.take() {
                    log::info!(
                        "remote write {name}: the receiver takes samples again (it had: {why})"
                    );
                }
                shared.away.store(false, Ordering::Release);
                backoff = config.min_backoff;
                (too_old_tries, too_old_confirmed) = (0, false);
                shared
                    .m
                    .last_success
                    .with_label_values(&[&name])
                    .set(crate::time::unix_now());
                done(&shared, &mut loaded, &source, &batch, Outcome::Sent);
            }
            Answer::Retry(why) => {
                if away.is_none() {
                    log::warn!("remote write {name}: {why}; keeping the samples and trying again");
                }
                away = Some(why);
                shared.away.store(true, Ordering::Release);
                shared.m.retries.with_label_values(&[&name]).inc();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => break,
                }
                backoff = (backoff * 2).min(config.max_backoff);
            }
            Answer::Rejected(why) => {
                if let Some(halves) = split(&batch) {
                    replace_front(&shared, &mut loaded, &source, &batch, halves);
                } else {
                    refusals.log(&name, &why);
                    done(&shared, &mut loaded, &source, &batch, Outcome::Rejected);
                }
            }
            Answer::TooOld { why, retry } => {
                if retry && !too_old_confirmed && too_old_tries < TOO_OLD_RETRIES {
                    too_old_tries += 1;
                    shared.m.retries.with_label_values(&[&name]).inc();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped.changed() => break,
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                    continue;
                }
                (too_old_tries, too_old_confirmed) = (0, true);
                refusals.log(&name, &why);
                done(&shared, &mut loaded, &source, &batch, Outcome::Rejected);
            }
        }
    }
    // Stopped: a segment partly stored keeps only the rest, so a restart does not send the
    // stored part again.
    if let (Some(path), Some(segments)) = (loaded_path, shared.segments.clone()) {
        if loaded.len() < loaded_total {
            let rest: Vec<Record> = loaded.iter().map(Batch::record).collect();
            let owner = Arc::clone(&shared);
            let _ = tokio::task::spawn_blocking(move || {
                let mut segments = lock(&segments);
                if let Err(e) = segments.replace(&path, &rest) {
                    log::warn!(
                        "remote write {}: cannot shorten {}: {e}; its stored part is sent again",
                        owner.name,
                        path.display()
                    );
                }
                disk_gauges(&owner, &segments);
            })
            .await;
        }
    }
}

/// What reading the oldest segment gave.
enum Oldest {
    /// Its batches, and its path.
    Batches(PathBuf, VecDeque<Batch>),
    /// No segment.
    None,
    /// It cannot be read now (the error): tried again later, nothing newer is sent meanwhile.
    Unreadable(String),
}

/// The oldest segment's batches, read on a blocking thread. A damaged one gives what it can
/// (a damaged record ends its reading); what it cannot is counted.
async fn load_oldest(shared: &Arc<Shared>) -> Oldest {
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
async fn remove_segment(shared: &Arc<Shared>, path: PathBuf) {
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

/// What became of a batch.
enum Outcome {
    /// The receiver stored it.
    Sent,
    /// The receiver refused it for good.
    Rejected,
    /// Older than `sample_age_limit`: dropped unsent.
    TooOldToSend,
}

/// `batch` (the front of `source`) done with: removed and counted by its `outcome`. A batch in
/// memory that a spill moved meanwhile stays where it went (it is sent again: a receiver
/// takes the same sample twice).
fn done(
    shared: &Shared,
    loaded: &mut VecDeque<Batch>,
    source: &Source,
    batch: &Batch,
    outcome: Outcome,
) {
    let removed = match source {
        Source::Segment => loaded.pop_front().is_some(),
        Source::Memory => {
            let mut memory = lock(&shared.memory);
            let same = memory.pop_front_if(batch);
            if same {
                if let Some(tail) = lock(&shared.tail).as_mut() {
                    if memory.batches.is_empty() {
                        tail.clear();
                    } else if tail.bytes() > 2 * memory.bytes as u64 + (1 << 20) {
                        // A link that never quite catches up: the tail sheds what is sent.
                        tail.rewrite(memory.batches.iter().map(Batch::record));
                    }
                }
            }
            same
        }
    };
    if removed {
        let counter = match outcome {
            Outcome::Sent => shared.m.samples.with_label_values(&[&shared.name, "sent"]),
            Outcome::Rejected => shared
                .m
                .samples
                .with_label_values(&[&shared.name, "rejected"]),
            Outcome::TooOldToSend => shared
                .m
                .dropped
                .with_label_values(&[&shared.name, "age_limit"]),
        };
        counter.inc_by(batch.samples as u64);
    }
    publish(shared);
}

/// The two halves (by series) of a batch, to narrow a rejection down to the series the
/// receiver refuses; none when it holds one series.
fn split(batch: &Batch) -> Option<[Batch; 2]> {
    let request = WriteRequest::from_body(&batch.body)?;
    if request.timeseries.len() < 2 {
        return None;
    }
    let mut first = request.timeseries;
    let second = first.split_off(first.len() / 2);
    Some([first, second].map(|timeseries| {
        let half = WriteRequest { timeseries };
        Batch {
            samples: half.samples(),
            body: Bytes::from(half.body()),
            taken_ms: batch.taken_ms,
        }
    }))
}

/// `batch` (the front of `source`) replaced by `halves`, in order.
fn replace_front(
    shared: &Shared,
    loaded: &mut VecDeque<Batch>,
    source: &Source,
    batch: &Batch,
    halves: [Batch; 2],
) {
    match source {
        Source::Segment => {
            loaded.pop_front();
            for half in halves.into_iter().rev() {
                loaded.push_front(half);
            }
        }
        Source::Memory => {
            let mut memory = lock(&shared.memory);
            if memory.pop_front_if(batch) {
                for half in halves.into_iter().rev() {
                    memory.bytes += half.body.len();
                    memory.batches.push_front(half);
                }
            }
        }
    }
}
