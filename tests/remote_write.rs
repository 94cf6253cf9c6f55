//! Remote write against a real receiver: Debian's Prometheus with its remote-write receiver.
//! The receiver goes away, the daemon is killed (-9) and restarted during the outage, the
//! receiver comes back: every sample taken while the daemon ran is in the receiver, and the
//! energy counter there never goes down.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_file, free_port};

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
    Command::new(common::BIN)
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STATE_DIRECTORY", state)
        .env("RUNTIME_DIRECTORY", common::runtime_dir(state))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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

fn stop(mut child: Child, signal: i32) {
    common::signal(child.id(), signal);
    let _ = child.wait();
}

/// The samples of `series` (a selector) in the receiver over the last `range`, in time order:
/// (Unix seconds, value).
fn samples(port: u16, series: &str, range: &str) -> Vec<(f64, f64)> {
    let query = common::encode_query(&format!("{series}[{range}]"));
    let r = common::request(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "GET",
        &format!("/api/v1/query?query={query}"),
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
fn an_outage_and_a_kill_lose_no_sample() {
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
queue_config = {{ spool_flush_interval = "3s", min_backoff = "100ms", max_backoff = "1s" }}
"#
    ));
    let state = dir.path().join("state");
    let data = dir.path().join("receiver").join("data");
    std::fs::create_dir_all(&data).unwrap();

    let receiver = prometheus(&data, receiver_port);
    wait_listening(receiver_port);
    let first = daemon(&config, &state, daemon_port);
    wait_listening(daemon_port);
    std::thread::sleep(Duration::from_secs(4));
    // The receiver goes away for a while; the daemon spools, then dies.
    stop(receiver, libc::SIGTERM);
    std::thread::sleep(Duration::from_secs(8));
    let killed_at = Instant::now();
    stop(first, libc::SIGKILL);
    let second = daemon(&config, &state, daemon_port);
    wait_listening(daemon_port);
    let down = killed_at.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(4));
    // The receiver is back: the backlog goes first, then the live samples.
    let receiver = prometheus(&data, receiver_port);
    wait_listening(receiver_port);
    let deadline = Instant::now() + Duration::from_secs(30);
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

    // A sample a second while the daemon ran: no gap but the restart's.
    let build = samples(
        receiver_port,
        r#"powermon_build_info{instance="cabin"}"#,
        "5m",
    );
    assert!(build.len() >= 15, "{build:?}");
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
        "5m",
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
