//! The HTTP endpoint under connection abuse, locked down with TLS and basic auth, and the inputs
//! that used to end the process.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config_file, run};

const CONFIG: &str = r#"
[[sensor]]
name = "a"
driver = "simulated"
interval = "200ms"
"#;

/// The daemon with its file limit lowered to 256 (a cap of 192 connections), so that the
/// abuse below goes beyond the cap and the server has to choose whom to close.
struct Limited {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Limited {
    fn start() -> Limited {
        let (dir, path) = config_file(CONFIG);
        let state = dir.path().join("state");
        let port = common::free_port();
        let child = Command::new("prlimit")
            .arg("--nofile=256:256")
            .arg(common::BIN)
            .arg("--config")
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("STATE_DIRECTORY", &state)
            .env("RUNTIME_DIRECTORY", common::runtime_dir(&state))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prlimit (util-linux)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Limited {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raise this process's file limit: the attacks below hold over a thousand sockets.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get and set this process's own limit, with a struct of the right type.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(
        limit.rlim_cur >= 2000,
        "file limit {} is too low for this test",
        limit.rlim_cur
    );
}

/// Keep `count` connections open from 127.0.0.1, each opened with `opening` (partial
/// headers, or a whole request whose answer is read), reopening those the server closes,
/// until `stop`.
fn attacker(addr: SocketAddr, count: usize, opening: &'static [u8], stop: Arc<AtomicBool>) {
    let open = || -> Option<TcpStream> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.write_all(opening).ok()?;
        if opening.ends_with(b"\r\n\r\n") {
            // A whole request: read the answer, then idle on the kept-alive connection.
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut buf = [0u8; 65536];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).ok()?;
                if n == 0 {
                    return None;
                }
                seen.extend_from_slice(&buf[..n]);
            }
        }
        s.set_nonblocking(true).ok()?;
        Some(s)
    };
    let mut held: Vec<Option<TcpStream>> = (0..count).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        for slot in held.iter_mut() {
            let alive = slot.as_ref().is_some_and(|s| {
                let mut b = [0u8; 1];
                matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            });
            if !alive {
                *slot = open();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Scrape `/metrics` from 127.0.0.2 every 0.5 s for `seconds`; the answer must come within
/// a second. Returns the latencies of the scrapes that succeeded and how many were tried.
fn scrape_for(addr: SocketAddr, seconds: u64) -> (Vec<Duration>, usize) {
    let mut ok = Vec::new();
    let tries = (seconds * 2) as usize;
    for _ in 0..tries {
        let start = Instant::now();
        let scraped = (|| -> std::io::Result<bool> {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            socket.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())?;
            socket.connect_timeout(&addr.into(), Duration::from_secs(1))?;
            let mut s: TcpStream = socket.into();
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut body = Vec::new();
            s.read_to_end(&mut body)?;
            Ok(
                body.starts_with(b"HTTP/1.1 200")
                    && body.windows(13).any(|w| w == b"powermon_powe"),
            )
        })();
        let took = start.elapsed();
        if scraped.unwrap_or(false) && took < Duration::from_secs(1) {
            ok.push(took);
        }
        std::thread::sleep(Duration::from_millis(500).saturating_sub(took));
    }
    (ok, tries)
}

fn under_attack(count: usize, opening: &'static [u8]) {
    raise_file_limit();
    let d = Limited::start();
    let stop = Arc::new(AtomicBool::new(false));
    let attack = {
        let stop = Arc::clone(&stop);
        let addr = d.addr;
        std::thread::spawn(move || attacker(addr, count, opening, stop))
    };
    // Let the attack fill the server first.
    std::thread::sleep(Duration::from_secs(2));
    let (ok, tries) = scrape_for(d.addr, 10);
    stop.store(true, Ordering::Relaxed);
    attack.join().unwrap();
    let mut sorted = ok.clone();
    sorted.sort();
    let p = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q) as usize)
            .copied()
    };
    println!(
        "{count} connections opened with {:?}: {}/{tries} scrapes answered within 1 s; p50 {:?}, p99 {:?}",
        String::from_utf8_lossy(opening),
        ok.len(),
        p(0.5),
        p(0.99)
    );
    assert!(
        ok.len() * 100 >= tries * 95,
        "only {}/{tries} scrapes got through",
        ok.len()
    );
}

#[test]
fn three_hundred_half_sent_requests_do_not_shut_out_a_scraper() {
    under_attack(300, b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
}

#[test]
fn a_thousand_idle_keep_alive_connections_do_not_shut_out_a_scraper() {
    under_attack(1000, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
}

// ------------------------------------------------------------------------------------------
// Inputs that used to end the process (exit 101): each is now a clear error or a clean exit.
// ------------------------------------------------------------------------------------------

#[test]
fn a_nul_in_a_bus_name_is_a_config_error() {
    let (_dir, path) =
        config_file("[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\nbus = \"x\\u0000y\"\n");
    let (status, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("key `sensor[0].bus`"), "{stderr}");
}

#[test]
fn an_endless_persist_interval_is_a_config_error() {
    let (_dir, path) = config_file(&format!(
        "[daemon]\npersist_interval = \"18446744073709551615s\"\n{CONFIG}"
    ));
    let (status, _, stderr) = run(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("key `daemon.persist_interval`"), "{stderr}");
}

#[test]
fn too_many_sensors_is_a_config_error() {
    let many: String = (0..10_000)
        .map(|i| format!("[[sensor]]\nname = \"s{i}\"\ndriver = \"simulated\"\n"))
        .collect();
    let (_dir, path) = config_file(&many);
    let (status, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("expected at most 256"), "{stderr}");
}

/// `… | head -c1`: the reader goes away; the command ends quietly, as coreutils do.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let simulated = concat!(env!("CARGO_MANIFEST_DIR"), "/config/simulated.toml");
    for args in [
        vec!["check-config", "--config", simulated],
        vec!["scan", "--bus", "virtual-house", "--config", simulated],
        vec!["read", "--duration", "1500ms", "--config", simulated],
    ] {
        let mut child = Command::new(common::BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one byte, then close the pipe.
        let mut out = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        let _ = out.read(&mut byte);
        drop(out);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stderr.contains("panicked"),
            "{args:?}: {:?} {stderr}",
            output.status
        );
    }
}

#[test]
fn read_for_no_time_is_refused_with_a_reason() {
    let simulated = concat!(env!("CARGO_MANIFEST_DIR"), "/config/simulated.toml");
    let (status, _, stderr) = run(&["read", "--duration", "0s", "--config", simulated], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected a duration above 0"), "{stderr}");
}

// ------------------------------------------------------------------------------------------
// TLS and basic auth, from a web configuration file in the exporter-toolkit's format.
// ------------------------------------------------------------------------------------------

/// A CA and a server certificate for 127.0.0.1 signed by it, made by `openssl`.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt-get install -y openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// A daemon serving TLS with a bcrypt user `prometheus` / `s3cret`, and a real Prometheus
/// scraping it with `scheme: https` and `basic_auth`.
#[test]
fn tls_and_basic_auth_and_a_real_prometheus_scrapes_through_them() {
    let (dir, _) = config_file("");
    certificates(dir.path());
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    std::fs::write(
        dir.path().join("web.yml"),
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"),
    )
    .unwrap();
    let config = format!("[daemon]\nweb_config_file = \"web.yml\"\n{CONFIG}");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let d = common::Daemon::start_with(&path, &dir.path().join("state"));

    let curl = |args: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(args)
            .arg(format!("https://127.0.0.1:{}/metrics", d.addr.port()))
            .output()
            .expect("curl");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ca = dir.path().join("ca.crt");
    let ca = ca.to_str().unwrap();
    assert_eq!(curl(&["--cacert", ca, "-u", "prometheus:s3cret"]).0, "200");
    assert_eq!(curl(&["--cacert", ca, "-u", "prometheus:wrong"]).0, "401");
    assert_eq!(curl(&["--cacert", ca, "-u", "nobody:s3cret"]).0, "401");
    assert_eq!(curl(&["--cacert", ca]).0, "401");
    // Plain HTTP to the TLS port gets no metrics: the handshake fails and the server closes.
    let mut plain = TcpStream::connect(d.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("powermon_") && !answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );

    let prometheus = common::Prometheus::start(&format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: power-monitord
    scheme: https
    tls_config:
      ca_file: {ca}
    basic_auth:
      username: prometheus
      password: s3cret
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"#,
        port = d.addr.port()
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = prometheus.query("up{job=\"power-monitord\"}");
        if up.first().is_some_and(|s| s["value"][1] == "1") {
            break;
        }
        assert!(Instant::now() < deadline, "target never up: {up:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let energy = prometheus.query("powermon_power_watts{sensor=\"a\"}");
    assert_eq!(energy.len(), 1, "{energy:?}");
}

#[test]
fn a_bad_web_config_is_exit_78_naming_file_and_key() {
    let (dir, _) = config_file("");
    std::fs::write(
        dir.path().join("web.yml"),
        "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: nowhere.key\n",
    )
    .unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("[daemon]\nweb_config_file = \"web.yml\"\n{CONFIG}"),
    )
    .unwrap();
    let (status, _, stderr) = run(
        &[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("web.yml"), "{stderr}");
    assert!(
        stderr.contains("key `tls_server_config.cert_file`"),
        "{stderr}"
    );
    // The same through --web.config.file, with an unknown key.
    std::fs::write(dir.path().join("other.yml"), "basic_auth_userz: {}\n").unwrap();
    let other = dir.path().join("other.yml");
    let (status, _, stderr) = run(
        &[
            "check-config",
            "--config",
            path.to_str().unwrap(),
            "--web.config.file",
            other.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("unknown key `basic_auth_userz`"),
        "{stderr}"
    );
}

/// With users configured, `/healthz` needs them too, unless `public_healthz` says otherwise.
#[test]
fn healthz_is_public_only_when_configured() {
    let (dir, _) = config_file("");
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(
        dir.path().join("web.yml"),
        format!("basic_auth_users:\n  u: {hash}\n"),
    )
    .unwrap();
    for (public, expected) in [(false, 401), (true, 200)] {
        let path = dir.path().join(format!("config-{public}.toml"));
        std::fs::write(
            &path,
            format!("[daemon]\nweb_config_file = \"web.yml\"\npublic_healthz = {public}\n{CONFIG}"),
        )
        .unwrap();
        let d = common::Daemon::start_with(&path, &dir.path().join(format!("state-{public}")));
        assert_eq!(d.get("/healthz").status, expected);
        // Everything else needs the password: the page and its files too.
        for path in [
            "/metrics",
            "/",
            "/static/app.js",
            "/static/style.css",
            "/api/readings",
            "/api/history",
        ] {
            assert_eq!(d.get(path).status, 401, "{path}");
        }
    }
}
