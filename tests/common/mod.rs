//! Starting, scraping and stopping the built daemon, the way a client would.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_power-monitord");

/// A running daemon on an ephemeral port with its own state directory. Killed on drop.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

/// The runtime directory (the live totals file) that goes with a state directory.
pub fn runtime_dir(state_dir: &Path) -> PathBuf {
    state_dir.with_extension("run")
}

/// config/simulated.toml with its totals saved every `persist_interval` (the energy counters
/// move at each save; the shipped 10 s would slow the tests that wait for them).
pub fn simulated_house(persist_interval: &str) -> String {
    let house = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/simulated.toml"
    ))
    .expect("config/simulated.toml");
    let shipped = "persist_interval = \"10s\"";
    assert!(
        house.contains(shipped),
        "config/simulated.toml lacks {shipped}"
    );
    house.replace(
        shipped,
        &format!("persist_interval = \"{persist_interval}\""),
    )
}

/// Write `config` to a file in a fresh temporary directory.
pub fn config_file(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("write config");
    (dir, path)
}

/// Poll `ready` until it yields a value; fail with the child's log if it exits first or
/// `timeout` passes.
fn wait_for<T>(
    child: &mut Child,
    log: &Mutex<Vec<String>>,
    name: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited with {status}:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} not ready in {timeout:?}:\n{}",
            log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collect a child's stderr lines in the background.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("stderr piped");
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    log
}

impl Daemon {
    /// Start with `config` text, a new state directory and `--listen 127.0.0.1:0`.
    pub fn start(config: &str) -> Daemon {
        let (dir, path) = config_file(config);
        let state = dir.path().join("state");
        let mut d = Daemon::start_with(&path, &state);
        d._dir = Some(dir);
        d
    }

    /// Start with a config file and state directory that outlive this daemon.
    pub fn start_with(config_path: &Path, state_dir: &Path) -> Daemon {
        Daemon::start_wrapped(&[], &[], config_path, state_dir)
    }

    /// Start as [`Daemon::start_with`] does, the command line after `wrapper` (a program
    /// that ends by running its arguments, e.g. `unshare --mount`), with `env` added.
    pub fn start_wrapped(
        wrapper: &[&str],
        env: &[(&str, &str)],
        config_path: &Path,
        state_dir: &Path,
    ) -> Daemon {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config_path)
            .args(["--listen", "127.0.0.1:0"])
            .env("STATE_DIRECTORY", state_dir)
            .env("RUNTIME_DIRECTORY", runtime_dir(state_dir))
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn power-monitord");
        let log = collect_stderr(&mut child);
        let addr = wait_for(&mut child, &log, "daemon", Duration::from_secs(20), || {
            log.lock().unwrap().iter().find_map(|l| {
                l.split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split("://").nth(1))
                    .and_then(|rest| rest.trim_end_matches('/').parse::<SocketAddr>().ok())
            })
        });
        Daemon {
            child,
            addr,
            state_dir: state_dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            log,
            _dir: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        request(self.addr, "GET", path, &[])
    }

    /// Scrape `/metrics` and parse it with a real exposition parser.
    pub fn scrape(&self) -> Metrics {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        Metrics::parse(&r.text())
    }

    /// Scrape until `done` holds or `timeout` passes; returns the last scrape.
    pub fn scrape_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.scrape();
            if done(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "condition not reached in {timeout:?}; last scrape:\n{}\nlog:\n{}",
                m.text,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send SIGTERM and wait for the exit; returns the status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        signal(self.child.id(), libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "daemon ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The daemon on `config_path` with `state_dir` (and its runtime directory), listening where
/// the configuration says (no `--listen`), its output discarded: for tests that need the
/// configured address.
pub fn spawn_configured(config_path: &Path, state_dir: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config_path)
        .env("STATE_DIRECTORY", state_dir)
        .env("RUNTIME_DIRECTORY", runtime_dir(state_dir))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn power-monitord")
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the PID of a child this process started and has not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// `power-monitord read --config CONFIG --duration DURATION` with `env`: its status,
/// stdout and stderr.
pub fn read(config: &Path, duration: &str, env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let config = config.to_str().expect("a UTF-8 path");
    run(&["read", "--config", config, "--duration", duration], env)
}

/// Run the binary to completion with `args`; returns status, stdout, stderr.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .output()
        .expect("run power-monitord");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A minimal HTTP/1.1 client (one request per connection), so tests control every byte.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if !head
        && headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A parsed scrape.
pub struct Metrics {
    pub text: String,
    pub scrape: prometheus_parse::Scrape,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("valid exposition format");
        Metrics {
            text: text.to_string(),
            scrape,
        }
    }

    /// The value of the one series of `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.scrape.samples.iter().filter(|s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        });
        let sample = found.next()?;
        assert!(
            found.next().is_none(),
            "{name} {labels:?} matches more than one series"
        );
        Some(match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a scalar"),
        })
    }

    pub fn sensor(&self, name: &str, sensor: &str) -> f64 {
        self.value(name, &[("sensor", sensor)])
            .unwrap_or_else(|| panic!("no {name}{{sensor={sensor:?}}} in\n{}", self.text))
    }

    /// Distinct values of `label` across the series of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| s.labels.get(label).map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `promtool`, or a failure that names the package to install.
pub fn promtool() -> Command {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool is not installed; it comes with Debian's `prometheus` package: apt-get install -y prometheus"
    );
    Command::new("promtool")
}

/// Percent-encode a query parameter value.
pub fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A port nobody listens on right now.
///
/// Below the kernel's ephemeral range (32768 and up by default), so that no client
/// connection of another test takes it between this check and the server's bind: the tests
/// make thousands of connections, each from an ephemeral port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Each test process starts at its own place in 20000..32000, and walks on from there.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 12_000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + port.wrapping_sub(20_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A Prometheus server of our own: temporary storage, our config, killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start `prometheus` with `config` (YAML text) and wait until it is ready.
    pub fn start(config: &str) -> Prometheus {
        Prometheus::start_files(&[("prometheus.yml", config.to_string())])
    }

    /// Start `prometheus` on a directory of `files` (paths relative to it; `prometheus.yml`
    /// among them), as a user would lay them out.
    pub fn start_files(files: &[(&str, String)]) -> Prometheus {
        let found = Command::new("prometheus")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "prometheus is not installed; it comes with Debian's `prometheus` package: apt-get install -y prometheus"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).expect("write a Prometheus file");
        }
        let config_path = dir.path().join("prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-admin-api")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn prometheus");
        let log = collect_stderr(&mut child);
        wait_for(
            &mut child,
            &log,
            "prometheus",
            Duration::from_secs(30),
            || {
                (TcpStream::connect(addr).is_ok()
                    && request(addr, "GET", "/-/ready", &[]).status == 200)
                    .then_some(())
            },
        );
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// GET an API path and parse the JSON.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let r = request(self.addr, "GET", path, &[]);
        let json: serde_json::Value =
            serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.text()));
        json
    }

    /// An instant query; returns the result vector (panics on a query error).
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let json = self.api(&format!("/api/v1/query?query={}", encode_query(promql)));
        assert_eq!(json["status"], "success", "{promql}: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
