//! Taking the samples: every interval the exported series become a batch at the back of the
//! queue (and in the tail), held for the clock's time if need be.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use tokio::sync::watch;

use super::clock::{self, Clocks};
use super::keep::spill;
use super::proto::WriteRequest;
use super::series;
use super::{lock, publish, Batch, Shared, MEMORY_BYTES};
use crate::config::remote_write::RemoteWriteConfig;
use crate::metrics::Metrics;

/// Every interval: the exported series, as one batch at the back of the queue (and in the
/// tail); while the receiver is away, a spill every `spool_flush_interval`; at a stop, a last one.
pub(super) async fn collect(
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
pub(super) fn queue(shared: &Shared, request: WriteRequest, taken_ms: i64) -> i64 {
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
