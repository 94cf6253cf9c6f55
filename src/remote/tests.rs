//! A queue through three simulated days: tokio's paused clock drives the intervals and
//! backoffs, a simulated wall clock stands in for NTP and a simulated receiver for the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;

use super::clock::Clocks;
use super::proto::WriteRequest;
use super::sender::{Answer, Transport};
use super::RemoteWrite;
use crate::board::Board;
use crate::config::remote_write::RemoteWriteConfig;
use crate::metrics::Metrics;

/// The true time at boot, Unix ms (2026-12-01).
const BOOTED_AT: i64 = 1_796_083_200_000;
const INTERVAL_MS: i64 = 15_000;

/// The boot clock runs with tokio's (paused) clock; the wall clock reads 1970 + uptime until
/// the test synchronises it, then the true time.
struct Simulated {
    boot: tokio::time::Instant,
    synchronized: AtomicBool,
}

impl Clocks for Simulated {
    fn synchronized(&self) -> bool {
        self.synchronized.load(Ordering::SeqCst)
    }
    fn unix_ms(&self) -> i64 {
        let since_boot = self.boot_ms();
        if self.synchronized() {
            BOOTED_AT + since_boot
        } else {
            since_boot
        }
    }
    fn boot_ms(&self) -> i64 {
        self.boot.elapsed().as_millis() as i64
    }
}

/// A receiver that is away until the test brings it back, then stores every request: the
/// times of the batches it stored, in the order they came.
#[derive(Clone, Default)]
struct Receiver {
    up: Arc<AtomicBool>,
    stored: Arc<Mutex<Vec<i64>>>,
    /// How long it takes to answer.
    slow: Arc<Mutex<Duration>>,
}

impl Transport for Receiver {
    async fn send(&self, body: Bytes) -> Answer {
        if !self.up.load(Ordering::SeqCst) {
            return Answer::Retry("connection refused".into());
        }
        let slow = *self.slow.lock().unwrap();
        tokio::time::sleep(slow).await;
        let request = WriteRequest::from_body(&body).expect("a WriteRequest");
        let mut times: Vec<i64> = request
            .timeseries
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
            .collect();
        times.dedup();
        assert_eq!(times.len(), 1, "one time per batch");
        self.stored.lock().unwrap().push(times[0]);
        Answer::Stored
    }
}

/// A queue's `queue_config`, the rest as a Pi's.
fn config(queue_config: &str) -> RemoteWriteConfig {
    let text = format!(
        r#"
[[sensor]]
name = "load"
driver = "simulated"

[[remote_write]]
url = "http://127.0.0.1:9/api/v1/write"
name = "central"
interval = "15s"
queue_config = {{ {queue_config} }}
"#
    );
    let config = crate::config::Config::from_toml(std::path::Path::new("t.toml"), &text).unwrap();
    config.remote_write[0].clone()
}

fn gauge(metrics: &Metrics, name: &str, labels: &[&str]) -> f64 {
    let remote = metrics.remote().unwrap();
    match name {
        "pending" => remote.pending.with_label_values(labels).get() as f64,
        "bytes" => remote.pending_bytes.with_label_values(labels).get() as f64,
        _ => remote.oldest_pending.with_label_values(labels).get(),
    }
}

/// A Pi: its directories, metrics, clocks and receiver.
struct Pi {
    state: tempfile::TempDir,
    runtime: tempfile::TempDir,
    metrics: Arc<Metrics>,
    clocks: Arc<Simulated>,
    receiver: Receiver,
}

impl Pi {
    /// Booted now, its clock synchronised or not.
    fn boot(synchronized: bool) -> Pi {
        Pi {
            state: tempfile::tempdir().unwrap(),
            runtime: tempfile::tempdir().unwrap(),
            metrics: Arc::new(Metrics::new("test", "test", Board::new()).unwrap()),
            clocks: Arc::new(Simulated {
                boot: tokio::time::Instant::now(),
                synchronized: AtomicBool::new(synchronized),
            }),
            receiver: Receiver::default(),
        }
    }

    fn start(&self, config: &RemoteWriteConfig) -> RemoteWrite {
        RemoteWrite::start_with(
            config,
            &self.metrics,
            self.state.path(),
            self.runtime.path(),
            self.receiver.clone(),
            self.clocks.clone(),
        )
        .unwrap()
    }

    /// Bring the receiver back and wait until the queue holds nothing.
    async fn receiver_back(&self) {
        self.receiver.up.store(true, Ordering::SeqCst);
        let mut waited = 0;
        while gauge(&self.metrics, "pending", &["central"]) > 0.0
            || gauge(&self.metrics, "bytes", &["central", "disk"]) > 0.0
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            waited += 1;
            assert!(waited < 3600, "the backlog is not sent");
        }
    }

    /// The times of the batches the receiver stored, and the steps between them that are not
    /// an interval.
    fn stored(&self) -> (Vec<i64>, Vec<i64>) {
        let stored = self.receiver.stored.lock().unwrap().clone();
        let odd = stored
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|s| *s != INTERVAL_MS)
            .collect();
        (stored, odd)
    }
}

/// The steps between stored batches that are not an interval: none, or the restart's (the
/// interval it fell in is lost, no more).
#[track_caller]
fn every_interval_but_a_restart(odd: &[i64]) {
    assert!(
        odd.len() <= 1
            && odd
                .iter()
                .all(|s| *s > INTERVAL_MS && *s <= 2 * INTERVAL_MS),
        "{odd:?}"
    );
}

/// Booted offline: the clock unsynchronised for 10 minutes (samples held with the boot
/// clock's time), the receiver away for three days (spooled every 5 minutes), the daemon
/// restarted half way: once the receiver is back every batch arrives once, oldest first, at
/// the true time it was taken, and the spool is empty.
#[tokio::test(start_paused = true)]
async fn three_days_offline_from_an_unsynchronised_start() {
    let pi = Pi::boot(false);
    let config = config(r#"spool_flush_interval = "5m", min_backoff = "1s", max_backoff = "1m""#);
    let queue = pi.start(&config);
    // NTP sets the clock 10 minutes after boot (40 batches held by then).
    tokio::time::sleep(Duration::from_secs(600)).await;
    pi.clocks.synchronized.store(true, Ordering::SeqCst);
    // A day and a half later the daemon is restarted (a stop writes a segment).
    tokio::time::sleep(Duration::from_secs(36 * 3600 - 600)).await;
    assert!(gauge(&pi.metrics, "bytes", &["central", "disk"]) > 0.0);
    // The oldest unsent sample is the first one taken, at its true time.
    let oldest = gauge(&pi.metrics, "oldest", &["central"]);
    assert_eq!(oldest, (BOOTED_AT + INTERVAL_MS) as f64 / 1000.0);
    queue.stop().await;
    let queue = pi.start(&config);
    // Three days after boot the receiver is back.
    tokio::time::sleep(Duration::from_secs(36 * 3600)).await;
    pi.receiver_back().await;
    queue.stop().await;

    // Every batch once, oldest first, every 15 s from the first interval after boot (the
    // held ones at their true time); the restart costs at most the interval it fell in.
    let (stored, odd) = pi.stored();
    assert_eq!(stored[0], BOOTED_AT + INTERVAL_MS);
    every_interval_but_a_restart(&odd);
    let days = 3 * 86_400_000 / INTERVAL_MS;
    assert!(stored.len() as i64 >= days - 1, "{} batches", stored.len());
    let spool = pi.state.path().join("remote-write").join("central");
    assert!(std::fs::read_dir(spool).unwrap().next().is_none());
}

/// A day offline with a spool of 1 MiB: the oldest segments give way and are counted; what
/// arrives is every batch after them, in order.
#[tokio::test(start_paused = true)]
async fn a_full_spool_drops_the_oldest_and_counts_them() {
    let pi = Pi::boot(true);
    let queue = pi.start(&config(r#"max_spool_mib = 1, max_backoff = "1m""#));
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    let remote = pi.metrics.remote().unwrap();
    let dropped = remote
        .dropped
        .with_label_values(&["central", "spool_full"])
        .get();
    assert!(dropped > 0);
    assert!(gauge(&pi.metrics, "bytes", &["central", "disk"]) <= (1 << 20) as f64);
    pi.receiver_back().await;
    queue.stop().await;
    let (stored, odd) = pi.stored();
    assert!(odd.is_empty(), "{odd:?}");
    // The first ones are gone; the rest arrived up to the last taken.
    assert!(stored[0] > BOOTED_AT + INTERVAL_MS);
    let sent = remote.samples.with_label_values(&["central", "sent"]).get();
    let per_batch = sent / stored.len() as u64;
    assert_eq!(per_batch * stored.len() as u64, sent, "batches of one size");
    // Counted to the sample: the batches before the first stored, the very first of them a
    // sample short (nothing was pending yet, so it has no oldest-pending gauge).
    let lost = (stored[0] - BOOTED_AT - INTERVAL_MS) / INTERVAL_MS;
    assert_eq!(dropped, lost as u64 * per_batch - 1);
}

/// The receiver back after a day, slow (100 ms a request): the daemon stops in the middle of
/// the backlog and starts again. What was stored is not sent again, nothing is missing.
#[tokio::test(start_paused = true)]
async fn a_stop_in_the_middle_of_the_backlog_sends_nothing_twice() {
    let pi = Pi::boot(true);
    let config = config(r#"max_backoff = "1m""#);
    let queue = pi.start(&config);
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    *pi.receiver.slow.lock().unwrap() = Duration::from_millis(100);
    pi.receiver.up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = pi.receiver.stored.lock().unwrap().len();
    assert!((100..5000).contains(&before), "{before} stored by the stop");
    queue.stop().await;
    let queue = pi.start(&config);
    pi.receiver_back().await;
    queue.stop().await;
    let (stored, odd) = pi.stored();
    assert!(stored.windows(2).all(|w| w[1] > w[0]), "a batch sent twice");
    every_interval_but_a_restart(&odd);
    assert_eq!(stored[0], BOOTED_AT + INTERVAL_MS);
}

/// A crash between a spill's rename and the tail's emptying leaves the same batches in a
/// segment and in the tail: each is sent once.
#[tokio::test(start_paused = true)]
async fn batches_both_spooled_and_in_the_tail_are_sent_once() {
    let pi = Pi::boot(true);
    let record = |i: i64| {
        let request = WriteRequest {
            timeseries: vec![super::proto::TimeSeries {
                labels: vec![super::proto::Label {
                    name: "__name__".into(),
                    value: "x".into(),
                }],
                samples: vec![super::proto::Sample {
                    value: 1.0,
                    timestamp: BOOTED_AT + i * INTERVAL_MS,
                }],
            }],
        };
        super::spool::Record {
            taken_ms: BOOTED_AT + i * INTERVAL_MS,
            samples: 1,
            body: request.body(),
        }
    };
    let spool = pi.state.path().join("remote-write").join("central");
    let mut segments = super::spool::Segments::open(&spool).unwrap();
    segments
        .append(&(1..=3).map(record).collect::<Vec<_>>())
        .unwrap();
    let tail = pi.runtime.path().join("remote-write-central.tail");
    let (mut left, _) = super::spool::Tail::open(&tail);
    for i in 1..=4 {
        left.push(&record(i));
    }
    drop(left);
    let queue = pi.start(&config(""));
    pi.receiver_back().await;
    queue.stop().await;
    let (stored, _) = pi.stored();
    let expected: Vec<i64> = (1..=4).map(|i| BOOTED_AT + i * INTERVAL_MS).collect();
    assert_eq!(stored[..4], expected[..]);
    assert!(stored[4..].iter().all(|t| *t > expected[3]), "{stored:?}");
}

/// A spool that cannot be written (its directory is a file): the batches wait in memory, 16
/// MiB at most; past that the oldest go, counted, and the tail holds only what stays.
#[tokio::test(start_paused = true)]
async fn an_unwritable_spool_keeps_a_bounded_memory() {
    let pi = Pi::boot(true);
    std::fs::write(pi.state.path().join("remote-write"), "not a directory").unwrap();
    let mut per_second = config(r#"max_backoff = "1m""#);
    per_second.interval = Duration::from_secs(1);
    let queue = pi.start(&per_second);
    tokio::time::sleep(Duration::from_secs(7 * 3600)).await;
    let remote = pi.metrics.remote().unwrap();
    let dropped = remote
        .dropped
        .with_label_values(&["central", "spool_full"])
        .get();
    let memory = gauge(&pi.metrics, "bytes", &["central", "memory"]);
    assert!(dropped > 0, "nothing dropped: {memory} bytes in memory");
    assert!(memory <= (16 << 20) as f64, "{memory}");
    let tail = std::fs::metadata(pi.runtime.path().join("remote-write-central.tail"))
        .unwrap()
        .len();
    assert!(tail <= (17 << 20), "the tail holds {tail} bytes");
    pi.receiver_back().await;
    queue.stop().await;
    // What stayed arrives, every second of it, the oldest gone.
    let stored = pi.receiver.stored.lock().unwrap().clone();
    assert!(stored.windows(2).all(|w| w[1] - w[0] == 1000));
    assert!(stored[0] > BOOTED_AT + 1000);
}
