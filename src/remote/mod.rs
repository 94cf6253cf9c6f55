//! Prometheus remote write: the daemon pushes its series to a central store (Prometheus's
//! remote-write receiver, VictoriaMetrics, Mimir, Thanos Receive, Grafana Cloud), for Pis that
//! nobody can scrape.
//!
//! # Layout
//! - [`proto`] — the `WriteRequest` on the wire: protobuf, Snappy, headers;
//! - [`series`] — the series `/metrics` exports, as time series with external labels.

pub(crate) mod proto;
pub(crate) mod series;
pub(crate) mod sender;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use self::proto::WriteRequest;
use self::sender::{Answer, Sender};
use crate::config::remote_write::RemoteWriteConfig;
use crate::metrics::{Metrics, RemoteMetrics};

/// What a queue holds in memory at most; beyond it the oldest requests give way.
const MEMORY_BYTES: usize = 4 << 20;

/// One request's worth of samples: all series at one time.
struct Batch {
    body: Bytes,
    samples: usize,
    /// Its samples' time, Unix milliseconds.
    taken_ms: i64,
}

/// The samples taken and not yet stored by the receiver, oldest first.
#[derive(Default)]
struct Pending {
    batches: VecDeque<Batch>,
    bytes: usize,
}

/// A running `[[remote_write]]`: it takes the series every interval and sends them, oldest
/// first, retrying while the receiver is away.
pub(crate) struct RemoteWrite {
    config: RemoteWriteConfig,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RemoteWrite {
    /// Start pushing what `metrics` exports as `config` says.
    pub(crate) fn start(config: &RemoteWriteConfig, metrics: &Arc<Metrics>) -> Result<RemoteWrite, String> {
        let sender = Sender::new(config)?;
        let m = metrics.remote().map_err(|e| e.to_string())?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let collector = tokio::spawn(collect(
            config.clone(),
            Arc::clone(metrics),
            m.clone(),
            Arc::clone(&pending),
            Arc::clone(&wake),
            stopped.clone(),
        ));
        let sending = tokio::spawn(send(config.clone(), sender, m, pending, wake, stopped));
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

    /// Stop taking and sending samples.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The queue's gauges from what it holds.
fn publish(name: &str, m: &RemoteMetrics, p: &Pending) {
    let samples: usize = p.batches.iter().map(|b| b.samples).sum();
    m.pending.with_label_values(&[name]).set(samples as i64);
    m.pending_bytes
        .with_label_values(&[name, "memory"])
        .set(p.bytes as i64);
    match p.batches.front() {
        Some(b) => m
            .oldest_pending
            .with_label_values(&[name])
            .set(b.taken_ms as f64 / 1000.0),
        None => {
            let _ = m.oldest_pending.remove_label_values(&[name]);
        }
    }
}

/// Every interval: the exported series, as one batch at the back of the queue.
async fn collect(
    config: RemoteWriteConfig,
    metrics: Arc<Metrics>,
    m: RemoteMetrics,
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        let taken_ms = (crate::time::unix_now() * 1000.0) as i64;
        let request = WriteRequest {
            timeseries: series::time_series(&metrics.gather(), &config.external_labels, taken_ms),
        };
        let batch = Batch {
            samples: request.samples(),
            body: Bytes::from(request.body()),
            taken_ms,
        };
        let mut p = lock(&pending);
        p.bytes += batch.body.len();
        p.batches.push_back(batch);
        while p.bytes > MEMORY_BYTES {
            let Some(old) = p.batches.pop_front() else { break };
            p.bytes -= old.body.len();
            m.samples
                .with_label_values(&[&config.name, "dropped"])
                .inc_by(old.samples as u64);
        }
        publish(&config.name, &m, &p);
        drop(p);
        wake.notify_one();
    }
}

/// Send the oldest batch until the queue is empty; back off while the receiver is away; a
/// rejected batch is split to isolate the series it refuses.
async fn send(
    config: RemoteWriteConfig,
    sender: Sender,
    m: RemoteMetrics,
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let name = config.name.as_str();
    let mut backoff = config.min_backoff;
    let mut away: Option<String> = None;
    let mut rejections_logged = 0u32;
    loop {
        let front = lock(&pending)
            .batches
            .front()
            .map(|b| (b.body.clone(), b.samples, b.taken_ms));
        let Some((body, samples, taken_ms)) = front else {
            tokio::select! {
                _ = wake.notified() => continue,
                _ = stopped.changed() => return,
            }
        };
        if let Some(limit) = config.sample_age_limit {
            let age_ms = (crate::time::unix_now() * 1000.0) as i64 - taken_ms;
            if age_ms > limit.as_millis() as i64 {
                finish(name, &m, &pending, "dropped", samples);
                continue;
            }
        }
        let answer = tokio::select! {
            answer = sender.send(body.clone()) => answer,
            _ = stopped.changed() => return,
        };
        match answer {
            Answer::Stored => {
                if let Some(why) = away.take() {
                    log::info!("remote write {name}: the receiver takes samples again (it had: {why})");
                }
                backoff = config.min_backoff;
                m.last_success
                    .with_label_values(&[name])
                    .set(crate::time::unix_now());
                finish(name, &m, &pending, "sent", samples);
            }
            Answer::Retry(why) => {
                if away.is_none() {
                    log::warn!("remote write {name}: {why}; keeping the samples and trying again");
                }
                away = Some(why);
                m.retries.with_label_values(&[name]).inc();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => return,
                }
                backoff = (backoff * 2).min(config.max_backoff);
            }
            Answer::Rejected(why) => {
                if !split_front(&pending, &body) {
                    if rejections_logged < 10 {
                        rejections_logged += 1;
                        log::warn!("remote write {name}: the receiver refused {samples} sample(s): {why}");
                    }
                    finish(name, &m, &pending, "rejected", samples);
                }
            }
        }
    }
}

/// The front batch (whose body is `body`) done with: removed and counted as `result`.
fn finish(name: &str, m: &RemoteMetrics, pending: &Mutex<Pending>, result: &str, samples: usize) {
    let mut p = lock(pending);
    if let Some(b) = p.batches.pop_front() {
        p.bytes -= b.body.len();
    }
    m.samples
        .with_label_values(&[name, result])
        .inc_by(samples as u64);
    publish(name, m, &p);
}

/// Replace the front batch by its two halves (by series), so that a rejection is narrowed
/// to the series the receiver refuses; false when it holds one series.
fn split_front(pending: &Mutex<Pending>, body: &Bytes) -> bool {
    let Some(request) = WriteRequest::from_body(body) else {
        return false;
    };
    if request.timeseries.len() < 2 {
        return false;
    }
    let mut first = request.timeseries;
    let second = first.split_off(first.len() / 2);
    let halves = [first, second].map(|timeseries| WriteRequest { timeseries });
    let mut p = lock(pending);
    let Some(old) = p.batches.pop_front() else {
        return false;
    };
    p.bytes -= old.body.len();
    for half in halves.into_iter().rev() {
        let body = Bytes::from(half.body());
        p.bytes += body.len();
        p.batches.push_front(Batch {
            samples: half.samples(),
            body,
            taken_ms: old.taken_ms,
        });
    }
    true
}
