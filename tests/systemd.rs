//! The daemon started as systemd starts a `Type=notify` service with a watchdog: the test
//! plays the service manager's part, reading the notification socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_file, request, signal, BIN};

/// A notification socket and the messages that arrive on it, with their arrival times.
struct Manager {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    start: Instant,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Manager {
            socket,
            _dir: dir,
            path,
            start: Instant::now(),
        }
    }

    /// Messages (seconds since start, line) until `until` returns true or `timeout` passes.
    fn receive_until(
        &self,
        timeout: Duration,
        mut until: impl FnMut(&str) -> bool,
    ) -> Vec<(f64, String)> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let at = self.start.elapsed().as_secs_f64();
                let mut done = false;
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    got.push((at, line.to_string()));
                    done |= until(line);
                }
                if done {
                    return got;
                }
            }
        }
        got
    }
}

/// The daemon, killed when the test ends, pass or fail.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &str, manager: &Manager, state: &std::path::Path, port: u16) -> Child {
    let (_dir, path) = config_file(config);
    // The config file must outlive the parse only; the daemon reads it at start.
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env("STATE_DIRECTORY", state)
        .env("RUNTIME_DIRECTORY", common::runtime_dir(state))
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Keep the config until the daemon has read it.
    std::thread::sleep(Duration::from_millis(300));
    drop(_dir);
    Child(child)
}

const CONFIG: &str = "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\ninterval = \"200ms\"\n";

#[test]
fn ready_after_listening_watchdog_at_half_the_period_stopping_on_sigterm() {
    let manager = Manager::new();
    let state = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = spawn(CONFIG, &manager, state.path(), port);

    let ready = manager.receive_until(Duration::from_secs(10), |l| l == "READY=1");
    assert!(
        ready.iter().any(|(_, l)| l == "READY=1"),
        "no READY=1: {ready:?}"
    );
    // READY=1 comes after the listener is bound: /metrics answers right away.
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(request(addr, "GET", "/metrics", &[]).status, 200);
    assert!(
        ready
            .iter()
            .any(|(_, l)| l.starts_with("STATUS=") && l.contains("of 1 sensors up")),
        "{ready:?}"
    );

    // WATCHDOG_USEC = 1 s: a keep-alive every 0.5 s.
    let pings: Vec<f64> = manager
        .receive_until(Duration::from_millis(3200), |_| false)
        .into_iter()
        .filter(|(_, l)| l == "WATCHDOG=1")
        .map(|(t, _)| t)
        .collect();
    assert!(
        (5..=8).contains(&pings.len()),
        "{} keep-alives in 3.2 s: {pings:?}",
        pings.len()
    );
    let gaps: Vec<f64> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < 1.0),
        "a keep-alive gap reached the watchdog period: {gaps:?}"
    );

    signal(child.0.id(), libc::SIGTERM);
    let stopping = manager.receive_until(Duration::from_secs(5), |l| l == "STOPPING=1");
    assert!(
        stopping.iter().any(|(_, l)| l == "STOPPING=1"),
        "{stopping:?}"
    );
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn the_watchdog_goes_quiet_when_sampling_stalls() {
    let manager = Manager::new();
    let state = tempfile::tempdir().unwrap();
    let _child = spawn(
        "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\ninterval = \"200ms\"\n[sensor.simulation]\nfaults = [{ kind = \"hang\", start = \"2s\", duration = \"60s\" }]\n",
        &manager,
        state.path(),
        common::free_port(),
    );
    // Keep-alives while sampling runs, then none once the hung bus is overdue.
    let got = manager.receive_until(Duration::from_secs(20), |_| false);
    let pings: Vec<f64> = got
        .iter()
        .filter(|(_, l)| l == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(
        pings.first().is_some_and(|t| *t < 3.0),
        "no keep-alive before the hang: {pings:?}"
    );
    let last = *pings.last().unwrap();
    assert!(
        last < 15.0,
        "keep-alives went on while sampling was stalled: last at {last:.1} s"
    );
}
