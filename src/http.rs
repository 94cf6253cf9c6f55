//! The HTTP server: `/metrics`, the status page `/`, `/healthz` and `/api/readings`.
//!
//! hyper 1.x over HTTP/1.1, with the limits an exporter on a shared network needs: a header
//! read timeout, a cap on header size (request bodies are never read), a cap on concurrent
//! connections, and a graceful shutdown that lets in-flight scrapes finish.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::energy::JOULES_PER_KWH;
use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::sampler::Health;
use crate::status::SensorStatus;

/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers; larger requests are refused.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// In-flight requests get this long to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The status page reloads itself this often.
const PAGE_REFRESH_SECONDS: u32 = 5;

/// What the handlers serve.
pub struct App {
    /// The registry `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// Every sensor's latest snapshot, for the page and the API; a reload replaces the list.
    pub sensors: RwLock<Arc<Vec<Arc<SensorStatus>>>>,
    /// Whether sampling is alive (`/healthz`).
    pub health: Health,
    /// When the daemon started.
    pub started: Instant,
    /// The package version.
    pub version: &'static str,
}

impl App {
    /// The sensors as of now.
    pub fn sensors(&self) -> Arc<Vec<Arc<SensorStatus>>> {
        Arc::clone(&self.sensors.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replace the sensors (a reload).
    pub fn set_sensors(&self, sensors: Vec<Arc<SensorStatus>>) {
        *self.sensors.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(sensors);
    }
}

/// Serve on every listener until `shutdown` turns true (or its sender goes away).
pub async fn serve(listeners: Vec<TcpListener>, app: Arc<App>, shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tasks: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(accept_loop(
                l,
                Arc::clone(&app),
                Arc::clone(&limit),
                shutdown.clone(),
            ))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        log::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    log::debug!("connection limit ({MAX_CONNECTIONS}) reached; closing a new connection");
                    continue;
                };
                let app = Arc::clone(&app);
                let service = service_fn(move |request| {
                    let response = handle(&app, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(permit);
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Route a request. Only GET and HEAD exist; hyper leaves out the body for HEAD.
fn handle(app: &App, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match request.uri().path() {
        "/metrics" => metrics(app, request.headers()),
        "/" => response(StatusCode::OK, "text/html; charset=utf-8", status_page(app)),
        "/healthz" => {
            if app.health.healthy() {
                response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
            } else {
                response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "sampling has stalled\n",
                )
            }
        }
        "/api/readings" => match serde_json::to_vec_pretty(&readings(app, &app.sensors())) {
            Ok(body) => response(StatusCode::OK, "application/json", body),
            Err(e) => response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        },
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    }
}

fn metrics(app: &App, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let body = app.metrics.encode();
    if !accepts_gzip(headers) {
        return response(StatusCode::OK, CONTENT_TYPE, body);
    }
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    match encoder.write_all(&body).and_then(|()| encoder.finish()) {
        Ok(gzipped) => {
            let mut r = response(StatusCode::OK, CONTENT_TYPE, gzipped);
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            r
        }
        Err(_) => response(StatusCode::OK, CONTENT_TYPE, body),
    }
}

/// `Accept-Encoding` names gzip (or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

/// `/api/readings`: the status page's data.
#[derive(Serialize)]
struct Readings<'a> {
    version: &'a str,
    uptime_seconds: f64,
    sampling_healthy: bool,
    sensors: Vec<SensorReading<'a>>,
}

#[derive(Serialize)]
struct SensorReading<'a> {
    name: &'a str,
    driver: &'a str,
    bus: &'a str,
    address: String,
    labels: &'a BTreeMap<String, String>,
    up: bool,
    last_error: Option<&'static str>,
    bus_voltage_volts: Option<f64>,
    shunt_voltage_volts: Option<f64>,
    current_amperes: Option<f64>,
    power_watts: Option<f64>,
    overflow: bool,
    power_avg_watts: Option<f64>,
    power_min_watts: Option<f64>,
    power_max_watts: Option<f64>,
    energy_joules: f64,
    energy_kwh: f64,
    energy_reverse_joules: f64,
    samples: u64,
    read_errors: u64,
    last_sample_timestamp_seconds: Option<f64>,
    last_sample_age_seconds: Option<f64>,
    anomalies_active: Vec<&'static str>,
    rules: Vec<&'static str>,
}

/// JSON has no NaN: an unknown value is null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn readings<'a>(app: &'a App, sensors: &'a [Arc<SensorStatus>]) -> Readings<'a> {
    let now = Instant::now();
    Readings {
        version: app.version,
        uptime_seconds: now.duration_since(app.started).as_secs_f64(),
        sampling_healthy: app.health.healthy(),
        sensors: sensors
            .iter()
            .map(|s| {
                let snap = s.snapshot();
                let r = snap.reading;
                SensorReading {
                    name: &s.name,
                    driver: s.driver,
                    bus: &s.bus,
                    address: format!("{:#04x}", s.address),
                    labels: &s.labels,
                    up: snap.up,
                    last_error: snap.last_error.map(|k| k.as_str()),
                    bus_voltage_volts: r.and_then(|r| finite(r.bus_voltage_volts)),
                    shunt_voltage_volts: r.and_then(|r| finite(r.shunt_voltage_volts)),
                    current_amperes: r.and_then(|r| finite(r.current_amperes)),
                    power_watts: r.and_then(|r| finite(r.power_watts)),
                    overflow: r.is_some_and(|r| r.overflow),
                    power_avg_watts: snap.stats.avg_watts(),
                    power_min_watts: snap.stats.min_watts,
                    power_max_watts: snap.stats.max_watts,
                    energy_joules: snap.energy_joules,
                    energy_kwh: snap.energy_joules / JOULES_PER_KWH,
                    energy_reverse_joules: snap.energy_reverse_joules,
                    samples: snap.samples,
                    read_errors: snap.read_errors,
                    last_sample_timestamp_seconds: snap.last_sample_unix,
                    last_sample_age_seconds: snap
                        .last_sample_at
                        .map(|at| now.saturating_duration_since(at).as_secs_f64()),
                    anomalies_active: snap.active.iter().map(|r| r.as_str()).collect(),
                    rules: s.rules.iter().map(|r| r.as_str()).collect(),
                }
            })
            .collect(),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".into(),
    }
}

/// `/`: a small page that reloads itself; no scripts, no external assets.
fn status_page(app: &App) -> String {
    let sensors = app.sensors();
    let data = readings(app, &sensors);
    let mut rows = String::new();
    for s in &data.sensors {
        let state = if s.up {
            "<span class=ok>up</span>".to_string()
        } else {
            format!(
                "<span class=bad>down ({})</span>",
                s.last_error.unwrap_or("no reading yet")
            )
        };
        let anomalies = if s.anomalies_active.is_empty() {
            "–".to_string()
        } else {
            format!("<span class=bad>{}</span>", s.anomalies_active.join(", "))
        };
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect();
        let power = if s.overflow {
            "<span class=bad>overrange</span>".to_string()
        } else {
            number(s.power_watts, 1)
        };
        let _ = writeln!(
            rows,
            "<tr><td><b>{name}</b><br><small>{driver} {bus} {address} {labels}</small></td><td>{state}</td>\
             <td>{volts}</td><td>{amps}</td><td>{power}</td><td>{avg}</td><td>{min}</td><td>{max}</td>\
             <td>{kwh}</td><td>{anomalies}</td></tr>",
            name = escape(s.name),
            driver = escape(s.driver),
            bus = escape(s.bus),
            address = s.address,
            labels = labels.join(" "),
            volts = number(s.bus_voltage_volts, 3),
            amps = number(s.current_amperes, 3),
            avg = number(s.power_avg_watts, 1),
            min = number(s.power_min_watts, 1),
            max = number(s.power_max_watts, 1),
            kwh = number(Some(s.energy_kwh), 4),
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{PAGE_REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>power-monitord</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse}}td,th{{padding:.35em .7em;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}}
td:first-child,th:first-child{{text-align:left}}small{{color:#666}}.ok{{color:#1a7f37}}.bad{{color:#c62828;font-weight:bold}}
</style></head>
<body>
<h1>power-monitord</h1>
<p>Version {version}, up {uptime}. Sampling {health}. <a href="/metrics">Metrics</a> · <a href="/api/readings">JSON</a> · <a href="/healthz">Health</a></p>
<table>
<tr><th>Sensor</th><th>State</th><th>Bus V</th><th>Current A</th><th>Power W</th><th>Avg W</th><th>Min W</th><th>Max W</th><th>Energy kWh</th><th>Anomalies</th></tr>
{rows}</table>
<p><small>Avg, min and max since the daemon started; energy is the persisted total. This page reloads every {PAGE_REFRESH_SECONDS} s.</small></p>
</body></html>
"#,
        version = escape(data.version),
        uptime = humantime::format_duration(Duration::from_secs(data.uptime_seconds as u64)),
        health = if data.sampling_healthy {
            "<span class=ok>healthy</span>"
        } else {
            "<span class=bad>stalled</span>"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
