//! Remote write against a real receiver: Debian's Prometheus with its remote-write receiver.
//! The receiver goes away, the daemon is killed (-9) and restarted during the outage, the
//! receiver comes back: every sample taken while the daemon ran is in the receiver, and the
//! energy counter there never goes down.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_file, free_port};

/// A receiver's kind: how to start it.
#[derive(Clone, Copy)]
enum Store {
    Prometheus,
    VictoriaMetrics,
}

impl Store {
    /// Start it on `data`, listening on `port`.
    fn start(self, data: &Path, port: u16) -> Child {
        match self {
            Store::Prometheus => prometheus(data, port),
            Store::VictoriaMetrics => Command::new("victoria-metrics")
                .arg(format!("-storageDataPath={}", data.display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                // Show the newest samples at once (it hides the last 30 s by default).
                .arg("-search.latencyOffset=0s")
                .arg("-retentionPeriod=100y")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("victoria-metrics (Debian's victoria-metrics package)"),
        }
    }
}

fn prometheus(data: &Path, port: u16) -> Child {
    let dir = data.parent().unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        "global:\n  scrape_interval: 1m\n",
    )
    .unwrap();
    Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's prometheus package)")
}

fn daemon(config: &Path, state: &Path, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.with_extension("log"))
        .unwrap();
    Command::new(common::BIN)
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STATE_DIRECTORY", state)
        .env("RUNTIME_DIRECTORY", common::runtime_dir(state))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process of the test's, killed if the test ends before it stops it (a failed assertion).
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl From<Child> for Running {
    fn from(child: Child) -> Running {
        Running(Some(child))
    }
}

fn stop(mut running: Running, signal: i32) {
    if let Some(mut child) = running.0.take() {
        common::signal(child.id(), signal);
        let _ = child.wait();
    }
}

/// The samples of `series` (a selector) in the receiver over the last `range`, in time order:
/// (Unix seconds, value).
fn samples(port: u16, series: &str, range: &str) -> Vec<(f64, f64)> {
    let query = common::encode_query(&format!("{series}[{range}]"));
    let r = common::request(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "GET",
        &format!("/api/v1/query?query={query}&nocache=1"),
        &[],
    );
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    json["data"]["result"][0]["values"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| {
                    (
                        v[0].as_f64().unwrap(),
                        v[1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_outage_and_a_kill_lose_no_sample_in_prometheus() {
    outage_and_kill(Store::Prometheus);
}

#[test]
fn an_outage_and_a_kill_lose_no_sample_in_victoria_metrics() {
    outage_and_kill(Store::VictoriaMetrics);
}

/// The receiver away for a while, the daemon killed (-9) and started again meanwhile, the
/// receiver back: every sample taken while the daemon ran arrives, the counters never lower.
fn outage_and_kill(store: Store) {
    let receiver_port = free_port();
    let daemon_port = free_port();
    let (dir, config) = config_file(&format!(
        r#"[daemon]
persist_interval = "1s"

[[sensor]]
name = "load"
driver = "simulated"
interval = "500ms"
[sensor.simulation]
load = {{ model = "constant", watts = 10.0 }}

[[remote_write]]
url = "http://127.0.0.1:{receiver_port}/api/v1/write"
interval = "1s"
external_labels = {{ instance = "cabin" }}
# These machines may have no NTP: push as the clock says.
wait_for_clock_sync = false
queue_config = {{ spool_flush_interval = "3s", min_backoff = "100ms", max_backoff = "1s" }}
"#
    ));
    let state = dir.path().join("state");
    let data = dir.path().join("receiver").join("data");
    std::fs::create_dir_all(&data).unwrap();

    let receiver = Running::from(store.start(&data, receiver_port));
    wait_listening(receiver_port);
    let first = Running::from(daemon(&config, &state, daemon_port));
    wait_listening(daemon_port);
    std::thread::sleep(Duration::from_secs(4));
    // The receiver goes away for a while (REMOTE_WRITE_OUTAGE_SECONDS, 8 by default; 600
    // for the ten minutes of the issue); the daemon spools, then dies.
    let outage: u64 = std::env::var("REMOTE_WRITE_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    stop(receiver, libc::SIGTERM);
    std::thread::sleep(Duration::from_secs(outage));
    let killed_at = Instant::now();
    stop(first, libc::SIGKILL);
    let second = Running::from(daemon(&config, &state, daemon_port));
    wait_listening(daemon_port);
    let down = killed_at.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(4));
    // The receiver is back: the backlog goes first, then the live samples.
    let receiver = Running::from(store.start(&data, receiver_port));
    wait_listening(receiver_port);
    let deadline = Instant::now() + Duration::from_secs(30 + outage / 5);
    loop {
        let metrics = common::Metrics::parse(
            &common::request(
                format!("127.0.0.1:{daemon_port}").parse().unwrap(),
                "GET",
                "/metrics",
                &[],
            )
            .text(),
        );
        let pending = metrics.value(
            "powermon_remote_write_pending_samples",
            &[("queue", "127.0.0.1")],
        );
        let disk = metrics.value(
            "powermon_remote_write_pending_bytes",
            &[("queue", "127.0.0.1"), ("where", "disk")],
        );
        if pending == Some(0.0) && disk == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog was not sent: {pending:?} {disk:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(second, libc::SIGTERM);
    if let Store::VictoriaMetrics = store {
        // It makes what it took searchable within a few seconds.
        std::thread::sleep(Duration::from_secs(6));
    }

    let log = std::fs::read_to_string(state.with_extension("log")).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("remote write")) {
        eprintln!("{line}");
    }
    // A sample a second while the daemon ran: no gap but the restart's.
    let build = samples(
        receiver_port,
        r#"powermon_build_info{instance="cabin"}"#,
        "30m",
    );
    assert!(build.len() as u64 >= 15 + outage - 8, "{build:?}");
    eprintln!(
        "{} samples a second apart over {:.0} s, the only longer gap the restart's ({down:.1} s down)",
        build.len(),
        build.last().map_or(0.0, |l| l.0 - build[0].0)
    );
    let gaps: Vec<f64> = build.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let long: Vec<&f64> = gaps.iter().filter(|g| **g > 1.6).collect();
    assert!(
        long.len() <= 1 && long.iter().all(|g| **g <= down + 2.0),
        "gaps {gaps:?} (the daemon was down {down:.1} s)"
    );
    // The energy counter never goes down in the receiver.
    let energy = samples(
        receiver_port,
        r#"powermon_energy_joules_total{instance="cabin",sensor="load"}"#,
        "30m",
    );
    assert!(
        energy.len() == build.len(),
        "{} vs {}",
        energy.len(),
        build.len()
    );
    assert!(energy.windows(2).all(|w| w[1].1 >= w[0].1), "{energy:?}");
    stop(receiver, libc::SIGTERM);
}

/// The wire format, as a receiver decodes it.
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// A receiver on a thread: each request decoded and handed to `answer`, which gives the
/// status and body; every request it stored (2xx) is kept.
struct FakeReceiver {
    port: u16,
    stored: std::sync::Arc<std::sync::Mutex<Vec<wire::WriteRequest>>>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeReceiver {
    fn start(answer: fn(&wire::WriteRequest) -> (u16, &'static str)) -> FakeReceiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stored = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (keep, count) = (stored.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                let mut encoding = String::new();
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = lower.strip_prefix("content-encoding:") {
                        encoding = v.trim().to_string();
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                // Only remote write requests (a stray connection gets a 400).
                let request = (encoding == "snappy" && head.starts_with("POST "))
                    .then(|| snap::raw::Decoder::new().decompress_vec(&body).ok())
                    .flatten()
                    .and_then(|raw| prost::Message::decode(raw.as_slice()).ok());
                let Some(request): Option<wire::WriteRequest> = request else {
                    let mut stream = reader.into_inner();
                    let _ = write!(stream, "HTTP/1.1 400 X\r\nContent-Length: 0\r\n\r\n");
                    continue;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (status, text) = answer(&request);
                if (200..300).contains(&status) {
                    keep.lock().unwrap().push(request);
                }
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeReceiver {
            port,
            stored,
            requests,
        }
    }
}

fn label<'a>(series: &'a wire::TimeSeries, name: &str) -> Option<&'a str> {
    series
        .labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

fn pushing_daemon(receiver_port: u16) -> (tempfile::TempDir, common::Daemon) {
    let (dir, config) = config_file(&format!(
        r#"[[sensor]]
name = "good"
driver = "simulated"
interval = "500ms"

[[sensor]]
name = "bad"
driver = "simulated"
address = 0x41
interval = "500ms"

[[remote_write]]
url = "http://127.0.0.1:{receiver_port}/api/v1/write"
name = "fake"
interval = "1s"
wait_for_clock_sync = false
queue_config = {{ min_backoff = "100ms", max_backoff = "500ms" }}
"#
    ));
    let d = common::Daemon::start_with(&config, &dir.path().join("state"));
    (dir, d)
}

/// A receiver that refuses one sensor's series with 400 still gets every other series: the
/// daemon splits the request until the refused series stand alone, and drops only those.
#[test]
fn a_rejected_series_costs_only_itself() {
    let receiver = FakeReceiver::start(|request| {
        let bad = request
            .timeseries
            .iter()
            .any(|s| label(s, "sensor") == Some("bad"));
        if bad {
            (400, "out of order sample for sensor=bad")
        } else {
            (204, "")
        }
    });
    let (_dir, d) = pushing_daemon(receiver.port);
    let m = d.scrape_until(Duration::from_secs(20), |m| {
        m.value(
            "powermon_remote_write_samples_total",
            &[("queue", "fake"), ("result", "sent")],
        ) > Some(200.0)
    });
    let rejected = m
        .value(
            "powermon_remote_write_samples_total",
            &[("queue", "fake"), ("result", "rejected")],
        )
        .unwrap_or(0.0);
    assert!(rejected > 0.0);
    let stored = receiver.stored.lock().unwrap();
    let series: Vec<&wire::TimeSeries> = stored.iter().flat_map(|r| &r.timeseries).collect();
    assert!(series.iter().all(|s| label(s, "sensor") != Some("bad")));
    assert!(series.iter().any(|s| label(s, "sensor") == Some("good")));
    assert!(
        series
            .iter()
            .any(|s| label(s, "__name__") == Some("powermon_build_info")),
        "the series of no sensor got through too"
    );
    assert!(d.log().contains("the receiver refused"), "{}", d.log());
    assert_eq!(
        m.value("powermon_remote_write_retries_total", &[("queue", "fake")]),
        Some(0.0)
    );
}

/// A 500 that says the samples are too old (Prometheus past its window) is not retried.
#[test]
fn a_500_too_old_is_not_retried_forever() {
    let receiver = FakeReceiver::start(|_| (500, "too old sample"));
    let (_dir, d) = pushing_daemon(receiver.port);
    let m = d.scrape_until(Duration::from_secs(20), |m| {
        m.value(
            "powermon_remote_write_samples_total",
            &[("queue", "fake"), ("result", "rejected")],
        ) > Some(0.0)
    });
    assert_eq!(
        m.value("powermon_remote_write_retries_total", &[("queue", "fake")]),
        Some(0.0)
    );
    // Nothing piles up.
    let later = d.scrape_until(Duration::from_secs(10), |m| {
        m.value(
            "powermon_remote_write_pending_samples",
            &[("queue", "fake")],
        ) == Some(0.0)
    });
    let _ = (
        later,
        receiver.requests.load(std::sync::atomic::Ordering::SeqCst),
    );
}
