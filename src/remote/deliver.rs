//! Delivering the queue: the oldest batch sent until none is left (segments first), backing
//! off while the receiver is away, splitting a refused request to isolate the series the
//! receiver refuses, refusing whole a batch it calls too old.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Bytes;
use tokio::sync::watch;

use super::keep::{disk_gauges, load_oldest, remove_segment, Oldest};
use super::proto::WriteRequest;
use super::sender::{Answer, Transport};
use super::spool::Record;
use super::{lock, publish, Batch, Shared};
use crate::config::remote_write::RemoteWriteConfig;

/// How often a batch that a 5xx called too old is tried again before it counts as refused.
/// Once one has, the batches behind it are refused at their first such answer, until the
/// receiver stores one again: a backlog past the receiver's window costs a request a batch.
pub(super) const TOO_OLD_RETRIES: u32 = 2;

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

/// Where the batch being sent came from.
enum Source {
    /// The oldest segment, loaded.
    Segment,
    /// Memory.
    Memory,
}

/// Send the oldest batch until none is left; back off while the receiver is away.
pub(super) async fn send(
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
