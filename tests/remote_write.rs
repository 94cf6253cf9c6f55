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

/// The bundled rules, by one absolute path: two Prometheus servers that load the same file
/// evaluate its group at the same instants (a group's phase comes from its name and file).
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/prometheus/power-monitord.rules.yml"
);

/// A receiver as docs/remote-write.md sets one up (an out-of-order window), evaluating the
/// bundled rules every second.
fn prometheus(data: &Path, port: u16) -> Child {
    let dir = data.parent().unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  evaluation_interval: 1s\nstorage:\n  tsdb:\n    out_of_order_time_window: 4d\nrule_files: ['{RULES}']\n"
        ),
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

/// Every series matching `selector` in the receiver over the last `range`: its labels and
/// its samples in time order, (Unix milliseconds, value).
fn series(port: u16, selector: &str, range: &str) -> Vec<(String, Vec<(i64, f64)>)> {
    let query = common::encode_query(&format!("{selector}[{range}]"));
    let r = common::request(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "GET",
        &format!("/api/v1/query?query={query}&nocache=1"),
        &[],
    );
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let results = json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    results
        .iter()
        .map(|result| {
            let values = result["values"].as_array().cloned().unwrap_or_default();
            let samples = values
                .iter()
                .map(|v| {
                    (
                        (v[0].as_f64().unwrap() * 1000.0).round() as i64,
                        v[1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect();
            (result["metric"].to_string(), samples)
        })
        .collect()
}

/// The samples of the one series `selector` picks (none when it picks none).
fn samples(port: u16, selector: &str, range: &str) -> Vec<(i64, f64)> {
    let mut found = series(port, selector, range);
    assert!(found.len() <= 1, "{selector}: {found:?}");
    found.pop().map(|(_, samples)| samples).unwrap_or_default()
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
    // Beside Prometheus, a scrape-based run: another Prometheus scrapes the daemon every
    // second, never away, and evaluates the same rules.
    let scraper = matches!(store, Store::Prometheus).then(|| {
        common::Prometheus::start(&format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{RULES}']\nscrape_configs:\n  - job_name: power-monitord\n    static_configs:\n      - targets: ['127.0.0.1:{daemon_port}']\n"
        ))
    });
    if let Some(scraper) = &scraper {
        // It scrapes the (absent) daemon already: its first sample comes within a second of
        // the daemon's start, as the first pushed one does.
        let deadline = Instant::now() + Duration::from_secs(30);
        while scraper.query(r#"up{job="power-monitord"}"#).is_empty() {
            assert!(Instant::now() < deadline, "the scraper does not scrape");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
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
    if let Some(scraper) = &scraper {
        // A few evaluations with the backlog in place, then the rules' results compared.
        std::thread::sleep(Duration::from_secs(3));
        same_recordings(receiver_port, scraper);
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
    // The times the daemon took its samples: one a second while it ran, no gap but the
    // restart's.
    let ticks: Vec<i64> = samples(
        receiver_port,
        r#"powermon_build_info{instance="cabin"}"#,
        "30m",
    )
    .iter()
    .map(|s| s.0)
    .collect();
    assert!(ticks.len() as u64 >= 15 + outage - 8, "{ticks:?}");
    let gaps: Vec<i64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
    let long: Vec<&i64> = gaps.iter().filter(|g| **g > 1600).collect();
    assert!(
        long.len() <= 1 && long.iter().all(|g| **g as f64 <= (down + 2.0) * 1000.0),
        "gaps {gaps:?} (the daemon was down {down:.1} s)"
    );
    // Series by series: each has a sample at every one of those times from its first on.
    let all = series(
        receiver_port,
        r#"{instance="cabin",__name__=~"powermon_.*"}"#,
        "30m",
    );
    let mut missing = 0;
    // Two gauges exist only while they are known: the oldest pending sample's time (none
    // when nothing waits) and the last push's (none before a start's first).
    let sometimes = [
        "powermon_remote_write_oldest_pending_timestamp_seconds",
        "powermon_remote_write_last_success_timestamp_seconds",
    ];
    for (labels, samples) in &all {
        if sometimes.iter().any(|name| labels.contains(name)) {
            continue;
        }
        let times: std::collections::BTreeSet<i64> = samples.iter().map(|s| s.0).collect();
        let first = *times.first().unwrap();
        let lost: Vec<&i64> = ticks
            .iter()
            .filter(|t| **t >= first && !times.contains(t))
            .collect();
        let stray = times
            .iter()
            .filter(|t| ticks.binary_search(t).is_err())
            .count();
        if !lost.is_empty() || stray > 0 {
            eprintln!("{labels}: {} missing, {stray} at other times", lost.len());
        }
        missing += lost.len() + stray;
    }
    eprintln!(
        "{} series, {} samples a second apart over {:.0} s, the only longer gap the restart's ({down:.1} s down): {missing} missing",
        all.len(),
        ticks.len(),
        (ticks[ticks.len() - 1] - ticks[0]) as f64 / 1000.0
    );
    assert!(all.len() > 20, "{all:?}");
    assert_eq!(missing, 0);
    // The energy counter never goes down in the receiver.
    let energy = samples(
        receiver_port,
        r#"powermon_energy_joules_total{instance="cabin",sensor="load"}"#,
        "30m",
    );
    assert_eq!(energy.len(), ticks.len());
    assert!(energy.windows(2).all(|w| w[1].1 >= w[0].1), "{energy:?}");
    stop(receiver, libc::SIGTERM);
}

/// The bundled recording rules give the same results on the pushed samples (in the
/// receiver) as on the scraped ones, at the latest time both evaluated them.
fn same_recordings(receiver_port: u16, scraper: &common::Prometheus) {
    // The load draws 10 W. The two runs sample it at different instants of each second:
    // they may differ by the energy of two seconds at the ends of the range.
    for (record, tolerance) in [
        (
            "instance_sensor:powermon_energy_kwh:increase1h",
            20.0 / 3.6e6,
        ),
        (
            "instance_sensor:powermon_energy_kwh:increase24h",
            20.0 / 3.6e6,
        ),
        ("instance_sensor:powermon_power_watts:avg5m", 0.1),
    ] {
        let selector = format!(r#"{record}{{sensor="load"}}"#);
        let pushed = samples(receiver_port, &selector, "20s");
        let scraped = samples(scraper.addr.port(), &selector, "20s");
        let both = pushed
            .iter()
            .rev()
            .find_map(|p| scraped.iter().find(|s| s.0 == p.0).map(|s| (p.0, p.1, s.1)));
        let Some((at, pushed, scraped)) = both else {
            panic!("{record}: no evaluation at the same time: {pushed:?} {scraped:?}");
        };
        eprintln!(
            "{record} at {at}: pushed {pushed:.9}, scraped {scraped:.9} (ratio {:.4})",
            pushed / scraped
        );
        assert!(pushed > 0.0, "{record}");
        assert!(
            (pushed - scraped).abs() <= tolerance,
            "{record}: {pushed} vs {scraped}"
        );
    }
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
/// status and body; every request is kept, and whether it was stored (2xx).
struct FakeReceiver {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(wire::WriteRequest, bool)>>>,
}

impl FakeReceiver {
    fn start(answer: fn(&wire::WriteRequest) -> (u16, &'static str)) -> FakeReceiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = requests.clone();
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
                let (status, text) = answer(&request);
                keep.lock()
                    .unwrap()
                    .push((request, (200..300).contains(&status)));
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeReceiver { port, requests }
    }

    /// The series of the requests it stored.
    fn stored(&self) -> Vec<wire::TimeSeries> {
        let requests = self.requests.lock().unwrap();
        let stored = requests.iter().filter(|(_, stored)| *stored);
        stored.flat_map(|(r, _)| r.timeseries.clone()).collect()
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
    let series = receiver.stored();
    assert!(series.iter().all(|s| label(s, "sensor") != Some("bad")));
    assert!(series.iter().any(|s| label(s, "sensor") == Some("good")));
    assert!(
        series
            .iter()
            .any(|s| label(s, "__name__") == Some("powermon_build_info")),
        "the series of no sensor got through too"
    );
    // The receiver's reason, logged once however often it is given.
    let log = d.log();
    assert_eq!(
        log.matches("the receiver refused samples: 400: out of order sample for sensor=bad")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        m.value("powermon_remote_write_retries_total", &[("queue", "fake")]),
        Some(0.0)
    );
}

/// A 500 that says the samples are too old (Prometheus past its window) is tried again twice,
/// then the batch is refused whole (not split: its series share one time); the batches behind
/// it are refused at their first answer.
#[test]
fn a_500_too_old_is_not_retried_forever() {
    let receiver = FakeReceiver::start(|_| (500, "too old sample"));
    let (_dir, d) = pushing_daemon(receiver.port);
    let m = d.scrape_until(Duration::from_secs(20), |m| {
        m.value(
            "powermon_remote_write_samples_total",
            &[("queue", "fake"), ("result", "rejected")],
        ) > Some(200.0)
    });
    assert_eq!(
        m.value("powermon_remote_write_retries_total", &[("queue", "fake")]),
        Some(2.0)
    );
    let requests = receiver.requests.lock().unwrap();
    let times: Vec<i64> = requests
        .iter()
        .map(|(r, _)| r.timeseries[0].samples[0].timestamp)
        .collect();
    assert!(times.len() > 3, "{times:?}");
    // The first batch three times, each later one once; every request whole.
    assert!(times[..3].iter().all(|t| *t == times[0]), "{times:?}");
    assert!(times[2..].windows(2).all(|w| w[1] > w[0]), "{times:?}");
    let series = requests[0].0.timeseries.len();
    assert!(
        requests.iter().all(|(r, _)| r.timeseries.len() >= series),
        "a request was split"
    );
    let log = d.log();
    assert_eq!(log.matches("too old sample").count(), 1, "{log}");
}
