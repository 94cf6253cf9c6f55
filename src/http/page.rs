//! `/`: a small status page that reloads itself; no scripts, no external assets.

use std::fmt::Write as _;
use std::time::Duration;

use super::api::readings;
use super::App;

/// The status page reloads itself this often.
const PAGE_REFRESH_SECONDS: u32 = 5;

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
/// The page, rendered now.
pub fn status_page(app: &App) -> String {
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
