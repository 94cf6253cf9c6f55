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

/// Seconds as "5 h 12 min" (or "12 min", "40 s").
fn span(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match (s / 3600, s % 3600 / 60) {
        (0, 0) => format!("{s} s"),
        (0, m) => format!("{m} min"),
        (h, m) if h < 48 => format!("{h} h {m} min"),
        (h, _) => format!("{} d {} h", h / 24, h % 24),
    }
}

/// A card per battery: the state of charge as a bar, in % and Ah, time to go, and how sure.
fn battery_cards(batteries: &[super::api::BatteryReading<'_>]) -> String {
    let mut out = String::new();
    for b in batteries {
        let (bar, soc) = match b.state_of_charge {
            Some(soc) => (
                format!("<meter class=soc min=0 max=1 low=0.2 high=0.5 optimum=1 value={soc:.4}>{:.0} %</meter>", soc * 100.0),
                format!(
                    "<b>{:.1} %</b> · {:.0} of {:.0} Ah",
                    soc * 100.0,
                    soc * b.capacity_ah,
                    b.capacity_ah
                ),
            ),
            None => (String::new(), "<b>state of charge unknown</b> until the first full charge".to_string()),
        };
        let certainty = match (
            b.synchronized,
            b.state_of_charge_uncertainty,
            b.state_of_charge,
        ) {
            (true, _, _) => "synchronised to a full charge".to_string(),
            (false, Some(u), Some(_)) => format!(
                "an estimate, ± {:.0} %, until the next full charge",
                u * 100.0
            ),
            (false, None, Some(_)) => "an estimate until the next full charge".to_string(),
            _ => String::new(),
        };
        let to_go = match (b.time_to_go_seconds, b.state_of_charge) {
            (Some(t), _) => format!("{} to go at {:.1} A", span(t), b.average_current_amperes),
            (None, Some(_)) if b.average_current_amperes < 0.0 => {
                format!("charging at {:.1} A", -b.average_current_amperes)
            }
            (None, Some(_)) => "idle".to_string(),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "<div class=battery><h2>Battery {name} <small>({chemistry}, on sensor {sensor})</small></h2>{bar}             <p>{soc}. {to_go}</p><p><small>{certainty}; {fulls} full charge(s); in {charge_in:.1} Ah, out {charge_out:.1} Ah</small></p></div>",
            name = escape(b.name),
            chemistry = b.chemistry,
            sensor = escape(b.sensor),
            fulls = b.full_charges,
            charge_in = b.charge_in_ah,
            charge_out = b.charge_out_ah,
        );
    }
    out
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
.battery{{max-width:40em}}meter.soc{{width:100%;height:1.4em}}
</style></head>
<body>
<h1>power-monitord</h1>
<p>Version {version}, up {uptime}. Sampling {health}. <a href="/metrics">Metrics</a> · <a href="/api/readings">JSON</a> · <a href="/healthz">Health</a></p>
<table>
<tr><th>Sensor</th><th>State</th><th>Bus V</th><th>Current A</th><th>Power W</th><th>Avg W</th><th>Min W</th><th>Max W</th><th>Energy kWh</th><th>Anomalies</th></tr>
{rows}</table>
{batteries}
<p><small>Avg, min and max since the daemon started; energy is the persisted total. This page reloads every {PAGE_REFRESH_SECONDS} s.</small></p>
</body></html>
"#,
        batteries = battery_cards(&data.batteries),
        version = escape(data.version),
        uptime = humantime::format_duration(Duration::from_secs(data.uptime_seconds as u64)),
        health = if data.sampling_healthy {
            "<span class=ok>healthy</span>"
        } else {
            "<span class=bad>stalled</span>"
        },
    )
}
