//! Prometheus remote write: the daemon pushes its series to a central store (Prometheus's
//! remote-write receiver, VictoriaMetrics, Mimir, Thanos Receive, Grafana Cloud), for Pis that
//! nobody can scrape.
//!
//! # Layout
//! - [`collect`] — the batch taken every interval;
//! - [`keep`] — the spill into segments, the spool's limit, memory's cap, the oldest segment
//!   read back;
//! - [`deliver`] — the oldest batch sent until none is left, and what each answer does;
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
//! whole, after at most [`deliver::TOO_OLD_RETRIES`] retries.

pub(crate) mod clock;
mod collect;
mod deliver;
mod keep;
pub(crate) mod proto;
pub(crate) mod sender;
pub(crate) mod series;
pub(crate) mod spool;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use self::clock::Clocks;
use self::keep::disk_gauges;
use self::sender::{Sender, Transport};
use self::spool::{Record, Segments, Tail};
use crate::config::remote_write::RemoteWriteConfig;
use crate::metrics::{Metrics, RemoteMetrics};

/// What a queue holds in memory at most before it spills to a segment.
pub(super) const MEMORY_BYTES: usize = 4 << 20;

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
        let collector = tokio::spawn(collect::collect(
            config.clone(),
            Arc::clone(metrics),
            Arc::clone(&shared),
            runtime_dir.to_path_buf(),
            clocks,
            stopped.clone(),
        ));
        let sending = tokio::spawn(deliver::send(config.clone(), transport, shared, stopped));
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
