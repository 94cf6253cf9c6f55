//! What a hostile file, client, clock or full disk does to the running daemon: each case was
//! tried on 0.2.0, where it froze, starved or killed it; here it must not.
//!
//! The tests assert behaviour (answers, exit codes, thread counts, totals). How fast the
//! answers come is measured and printed (`cargo test --test hostile -- --nocapture`), not
//! asserted: these machines are shared.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::Daemon;

/// One simulated sensor drawing a steady 10 W, its totals saved every second, and
/// `extra` (TOML) appended.
fn steady(extra: &str) -> String {
    format!(
        "[daemon]\npersist_interval = \"1s\"\n{extra}\n\n[[sensor]]\nname = \"load\"\ndriver = \"simulated\"\ninterval = \"100ms\"\n[sensor.simulation]\nload = {{ model = \"constant\", watts = 10.0 }}\n"
    )
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Run the binary with `args`; fail if it runs longer than 20 s (it hung). Exit code and
/// stderr.
fn run_bounded(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(common::BIN)
        .args(args)
        .env(
            "STATE_DIRECTORY",
            std::env::temp_dir().join("pm-hostile-none"),
        )
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("power-monitord {args:?} hung for 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

/// Scrape `n` times, 50 ms apart: every one must be answered 200; the latencies.
fn scrapes(d: &Daemon, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            let r = d.get("/metrics");
            assert_eq!(r.status, 200, "{}\n{}", r.text(), d.log());
            let took = started.elapsed();
            std::thread::sleep(Duration::from_millis(50));
            took
        })
        .collect()
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

/// SIGHUP, scrape through the reload, and wait for it to be refused; the scrape latencies.
fn refused_reload(d: &Daemon, why: &str) -> Vec<Duration> {
    let refusals = d.log().matches("reload refused").count();
    common::signal(d.pid(), libc::SIGHUP);
    let latencies = scrapes(d, 30);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.log().matches("reload refused").count() == refusals {
        assert!(Instant::now() < deadline, "no refusal:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("reload refused"))
        .unwrap();
    assert!(line.contains(why), "{why:?} missing from {line}");
    assert_eq!(
        d.scrape()
            .value("powermon_config_last_reload_successful", &[]),
        Some(0.0)
    );
    latencies
}

/// Findings 1–3 at start: a FIFO as the configuration, `/dev/zero` as the web configuration
/// or a certificate, and a 100k-deep YAML are refused at once with exit 78.
#[test]
fn files_that_never_end_or_never_open_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.toml");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    for args in [
        vec!["check-config", "--config", fifo],
        vec!["--config", fifo, "--listen", "127.0.0.1:0"],
    ] {
        let (code, stderr) = run_bounded(&args);
        assert_eq!(code, 78, "{args:?}: {stderr}");
        assert!(stderr.contains("a FIFO, not a regular file"), "{stderr}");
    }
    let config = dir.path().join("ok.toml");
    std::fs::write(&config, steady("")).unwrap();
    let config = config.to_str().unwrap();
    let web = dir.path().join("web.yml");
    let web_arg = web.to_str().unwrap();
    let cases: [(&str, &str); 3] = [
        ("tls_server_config:\n  cert_file: /dev/zero\n  key_file: /dev/zero\n", "character device"),
        (&"[".repeat(100_000), "nested"),
        ("basic_auth_users:\n  a: $2y$04$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n  a: $2y$04$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n", "given twice"),
    ];
    for (text, why) in cases {
        std::fs::write(&web, text).unwrap();
        let (code, stderr) = run_bounded(&[
            "check-config",
            "--config",
            config,
            "--web.config.file",
            web_arg,
        ]);
        assert_eq!(code, 78, "{stderr}");
        assert!(stderr.contains(why), "{why:?} missing: {stderr}");
    }
    let (code, stderr) = run_bounded(&[
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
        "--web.config.file",
        "/dev/zero",
    ]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("character device"), "{stderr}");
}

/// Findings 1–3 at a reload: the configuration replaced by a FIFO, the web configuration by
/// `/dev/zero`, then by a 100k-deep YAML. Each reload is refused, every scrape meanwhile is
/// answered, and SIGTERM afterwards stops the daemon.
#[test]
fn a_reload_of_hostile_files_never_stalls_serving_or_stopping() {
    let (dir, config) = common::config_file(&steady("web_config_file = \"web.yml\""));
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "").unwrap();
    let mut d = Daemon::start_with(&config, &dir.path().join("state"));
    d.scrape_until(Duration::from_secs(10), |m| {
        m.value("powermon_samples_total", &[("sensor", "load")]) > Some(0.0)
    });
    let mut latencies = Vec::new();

    let original = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::remove_file(&d.config_path).unwrap();
    mkfifo(&d.config_path);
    latencies.extend(refused_reload(&d, "a FIFO"));
    std::fs::remove_file(&d.config_path).unwrap();
    std::fs::write(&d.config_path, &original).unwrap();

    std::fs::remove_file(&web).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &web).unwrap();
    latencies.extend(refused_reload(&d, "character device"));
    std::fs::remove_file(&web).unwrap();

    std::fs::write(&web, "[".repeat(100_000)).unwrap();
    latencies.extend(refused_reload(&d, "nested"));

    let (status, took) = d.terminate();
    assert!(status.success(), "{status}\n{}", d.log());
    eprintln!(
        "hostile reloads: {} scrapes, all answered, p99 {:?}; SIGTERM after them took {took:?}",
        latencies.len(),
        p99(latencies)
    );
}

/// `user:password` as a Basic Authorization header value.
fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// The process's thread count.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Finding 4: unauthenticated clients with unique wrong passwords on 64 connections at once
/// neither evict the scraper's verified login nor make it wait, and cost no thread each.
#[test]
fn wrong_passwords_cannot_lock_out_the_scraper() {
    let hash = bcrypt::hash("secret", 8).unwrap();
    let (dir, config) = common::config_file(&steady("web_config_file = \"web.yml\""));
    std::fs::write(
        dir.path().join("web.yml"),
        format!("basic_auth_users:\n  prometheus: {hash}\n"),
    )
    .unwrap();
    let d = Daemon::start_with(&config, &dir.path().join("state"));
    let right = basic("prometheus", "secret");
    let scrape =
        |d: &Daemon| common::request(d.addr, "GET", "/metrics", &[("Authorization", &right)]);
    // The scraper logs in once.
    assert_eq!(scrape(&d).status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicUsize; 3]> = Arc::default();
    let attackers: Vec<_> = (0..64)
        .map(|i| {
            let (stop, counts, addr) = (Arc::clone(&stop), Arc::clone(&counts), d.addr);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let user = if n % 2 == 0 { "prometheus" } else { "mallory" };
                    let header = basic(user, &format!("guess-{i}-{n}"));
                    let status =
                        common::request(addr, "GET", "/metrics", &[("Authorization", &header)])
                            .status;
                    let slot = match status {
                        401 => 0,
                        503 => 1,
                        _ => 2,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                    // A breath between attempts: enough of them wait at once to fill the
                    // queue, without tens of thousands of connections in TIME_WAIT.
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut most_threads = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        let r = scrape(&d);
        assert_eq!(r.status, 200, "the scraper was refused: {}", r.text());
        latencies.push(t.elapsed());
        most_threads = most_threads.max(threads(d.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let [refused, busy, other] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    eprintln!(
        "auth attack: scraper {} of {} answered 200, p99 {:?}; attackers {refused} refused, {busy} busy; at most {most_threads} threads",
        latencies.len(),
        latencies.len(),
        p99(latencies.clone())
    );
    assert_eq!(other, 0, "an attacker got something else than 401 or 503");
    assert!(
        busy > 0,
        "no attacker was turned away: the queue is not bounded"
    );
    assert!(most_threads < 32, "{most_threads} threads");
}

/// A request from `local` (a loopback address of this machine) to `addr`; its status.
fn status_from(local: IpAddr, addr: SocketAddr, path: &str) -> u16 {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(local, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap();
    head.push_str(&String::from_utf8_lossy(&buf[..n]));
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

/// Finding 6: one client flooding past the rate limit leaves another client's requests
/// alone.
#[test]
fn one_flooding_client_does_not_use_up_the_rate_limit_of_another() {
    let (dir, config) = common::config_file(&steady("web_config_file = \"web.yml\""));
    std::fs::write(
        dir.path().join("web.yml"),
        "rate_limit:\n  burst: 5\n  interval: 10s\n",
    )
    .unwrap();
    let d = Daemon::start_with(&config, &dir.path().join("state"));
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    let scraper: IpAddr = "127.0.0.3".parse().unwrap();
    let flood: Vec<u16> = (0..40)
        .map(|_| status_from(flooder, d.addr, "/metrics"))
        .collect();
    assert_eq!(flood.iter().filter(|&&s| s == 200).count(), 5, "{flood:?}");
    assert!(flood[5..].iter().all(|&s| s == 429), "{flood:?}");
    for _ in 0..5 {
        assert_eq!(status_from(scraper, d.addr, "/metrics"), 200);
    }
}

/// `run_dir` as a tmpfs of `size` (`full`: filled) in a mount namespace of the daemon's own:
/// the wrapper that mounts it, then runs the daemon.
fn tmpfs_wrapper(run_dir: &Path, size: &str, full: bool) -> Vec<String> {
    std::fs::create_dir_all(run_dir).unwrap();
    let probe = Command::new("unshare").args(["--mount", "true"]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test needs `unshare --mount` (root, util-linux) to give the daemon a small tmpfs"
    );
    let fill = if full {
        format!("cat /dev/zero > '{}/fill' 2>/dev/null;", run_dir.display())
    } else {
        String::new()
    };
    let script = format!(
        "mount -t tmpfs -o size={size},mode=0700 pm-hostile '{}' && {fill} exec \"$@\"",
        run_dir.display()
    );
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]
    .map(String::from)
    .to_vec()
}

/// Fill the file system of `dir` as seen by process `pid` (in its mount namespace).
fn fill(pid: u32, dir: &Path) {
    let script = format!("cat /dev/zero > '{}/fill' 2>/dev/null; true", dir.display());
    let status = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "sh", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Finding 7: a full runtime directory at start, and one that fills before a reload adds
/// sensors: the daemon runs on, says so, and counts.
#[test]
fn a_full_runtime_directory_never_kills_the_daemon() {
    // Full at start.
    let (dir, config) = common::config_file(&steady(""));
    let state = dir.path().join("state");
    let run = common::runtime_dir(&state);
    let wrapper = tmpfs_wrapper(&run, "64k", true);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let d = Daemon::start_wrapped(&wrapper, &[], &config, &state);
    let m = d.scrape_until(Duration::from_secs(10), |m| {
        m.value("powermon_samples_total", &[("sensor", "load")]) > Some(5.0)
    });
    assert_eq!(m.value("powermon_state_live_file", &[]), Some(0.0));
    assert_eq!(
        d.log()
            .matches("cannot create the live totals file")
            .count(),
        1,
        "{}",
        d.log()
    );
    drop(d);

    // Room at start, full before a reload that adds sensors on new pages of the live file.
    let (dir, config) = common::config_file(&steady(""));
    let state = dir.path().join("state");
    let run = common::runtime_dir(&state);
    let wrapper = tmpfs_wrapper(&run, "1m", false);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let d = Daemon::start_wrapped(&wrapper, &[], &config, &state);
    let m = d.scrape_until(Duration::from_secs(10), |m| {
        m.value("powermon_samples_total", &[("sensor", "load")]) > Some(0.0)
    });
    assert_eq!(m.value("powermon_state_live_file", &[]), Some(1.0));
    fill(d.pid(), &run);
    let more: String = (0..16)
        .map(|i| format!("\n[[sensor]]\nname = \"more{i}\"\ndriver = \"simulated\"\nbus = \"more\"\naddress = {}\ninterval = \"100ms\"\n", 0x40 + i))
        .collect();
    std::fs::write(&config, steady("") + &more).unwrap();
    common::signal(d.pid(), libc::SIGHUP);
    d.scrape_until(Duration::from_secs(10), |m| {
        m.value("powermon_samples_total", &[("sensor", "more15")]) > Some(2.0)
    });
}

/// Finding 8: the wall clock stepped a day ahead and back (an NTP fix on a Pi without a
/// real-time clock) leaves "energy today" on today, with today's energy.
#[test]
fn energy_today_follows_a_clock_stepped_ahead_and_back() {
    let preload = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib/arm-linux-gnueabihf",
    ]
    .iter()
    .map(|d| format!("{d}/faketime/libfaketime.so.1"))
    .find(|p| Path::new(p).exists())
    .expect("this test steps the daemon's clock with libfaketime (apt-get install libfaketime)");
    let (dir, config) = common::config_file(&steady(""));
    let offset = dir.path().join("offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let offset_arg = offset.to_str().unwrap().to_string();
    let env = [
        ("LD_PRELOAD", preload.as_str()),
        ("FAKETIME_TIMESTAMP_FILE", offset_arg.as_str()),
        ("FAKETIME_NO_CACHE", "1"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut d = Daemon::start_wrapped(&[], &env, &config, &dir.path().join("state"));
    let today = |d: &Daemon| -> f64 {
        let r = d.get("/api/readings");
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        json["sensors"][0]["energy_today_joules"].as_f64().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while today(&d) < 30.0 {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = today(&d);
    std::fs::write(&offset, "+1d\n").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(today(&d) < before, "a day ahead is another day");
    std::fs::write(&offset, "+0\n").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let after = today(&d);
    assert!(
        after > before,
        "back on today, {after} J today, was {before} J before the step"
    );
    // The day saved is today's.
    let (status, _) = d.terminate();
    assert!(status.success());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).unwrap())
            .unwrap();
    let saved = state["sensors"]["load"]["day"].as_i64().unwrap();
    let restarted = Daemon::start_with(&config, &dir.path().join("state"));
    let again = today(&restarted);
    assert!(
        again >= after,
        "after a restart {again} J today, {after} J before it (saved day {saved})"
    );
}

/// Finding 9: implausible numbers that overflowed or made totals absurd are located
/// mistakes, exit 78.
#[test]
fn implausible_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    for (text, key) in [
        ("[[sensor]]\nname = \"a\"\nshunt_ohms = 1e-300\n", "sensor[0].shunt_ohms"),
        ("[[sensor]]\nname = \"a\"\ndriver = \"ina226\"\nshunt_ohms = 0.00001\nmax_current_amps = 1e300\n", "sensor[0].max_current_amps"),
        ("[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[sensor.simulation]\nfaults = [{ kind = \"nack\", rate = 0.5, duration = \"18446744073709551615s\" }]\n", "sensor[0].simulation.faults[0]"),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, stderr) = run_bounded(&["check-config", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 78, "{text}: {stderr}");
        assert!(stderr.contains("config.toml:") && stderr.contains(key), "{stderr}");
    }
}
