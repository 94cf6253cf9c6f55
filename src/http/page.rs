//! `/`: the status page. The server renders the first paint (values, badges, sparklines) from
//! the same data as `/api/readings` and `/api/history`, so the page shows everything without
//! JavaScript; `app.js` then keeps it current. Template, style and script are files of their
//! own (`assets/`), compiled into the binary.

use std::fmt::Write as _;
use std::time::Duration;

use super::api::{history, readings, BatteryReading, SensorReading};
use super::App;
use crate::board::history::POINTS;

/// The page's template.
const TEMPLATE: &str = include_str!("assets/page.html");
/// `/static/style.css`.
pub(crate) const STYLE: &str = include_str!("assets/style.css");
/// `/static/app.js`.
pub(crate) const SCRIPT: &str = include_str!("assets/app.js");
/// `/static/icon.svg`.
pub(crate) const ICON: &str = include_str!("assets/icon.svg");

/// Sparkline geometry, as in `app.js`.
const WIDTH: f64 = 300.0;
const HEIGHT: f64 = 60.0;
const PAD: f64 = 3.0;

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

/// Seconds as "5 h 12 min" (or "12 min", "40 s"), as `app.js` writes them.
fn span(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match (s / 3600, s % 3600 / 60) {
        (0, 0) => format!("{s} s"),
        (0, m) => format!("{m} min"),
        (h, m) if h < 48 => format!("{h} h {m} min"),
        (h, _) => format!("{} d {} h", h / 24, h % 24),
    }
}

/// A Unix time as the server's local time of day.
fn clock(unix: f64) -> String {
    let seconds = unix.floor() as i64;
    let midnight = crate::time::local_day(unix).start;
    let of_day = (seconds as f64 - midnight).rem_euclid(86_400.0) as i64;
    format!(
        "{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The seconds a sparkline spans: the whole history once it is full, what there is until then
/// (ten points at least).
fn window(first: f64, last: f64, resolution: f64) -> f64 {
    (resolution * POINTS as f64)
        .min(last - first)
        .max(10.0 * resolution)
}

/// The sparkline's path: points further apart than a gap (a `None`) are not joined.
pub(crate) fn sparkline(points: &[(f64, Option<f32>)], resolution: f64) -> String {
    let (Some(&(tfirst, _)), Some(&(tmax, _))) = (points.first(), points.last()) else {
        return String::new();
    };
    let width = window(tfirst, tmax, resolution);
    let tmin = tmax - width;
    let values = points.iter().filter_map(|p| p.1).map(f64::from);
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), w| {
        (lo.min(w), hi.max(w))
    });
    if !lo.is_finite() {
        return String::new();
    }
    if hi - lo < 1e-9 {
        lo -= 1.0;
        hi += 1.0;
    }
    let mut d = String::new();
    let mut pen = false;
    for &(t, w) in points {
        let Some(w) = w.filter(|_| t >= tmin) else {
            pen = false;
            continue;
        };
        let x = (t - tmin) / width * WIDTH;
        let y = PAD + (1.0 - (f64::from(w) - lo) / (hi - lo)) * (HEIGHT - 2.0 * PAD);
        let _ = write!(d, "{}{x:.1} {y:.1}", if pen { 'L' } else { 'M' });
        pen = true;
    }
    d
}

fn sensor_card(s: &SensorReading<'_>, path: &str, points: usize) -> String {
    let state = if s.up {
        "<span class=\"state up\" data-f=\"state\">up</span>".to_string()
    } else {
        let why = s
            .down_reason
            .clone()
            .or(s.last_error.map(str::to_string))
            .unwrap_or_else(|| "no reading yet".into());
        format!(
            "<span class=\"state down\" data-f=\"state\">down: {}</span>",
            escape(&why)
        )
    };
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    let power = if s.overflow && s.power_watts.is_none() {
        "overrange".to_string()
    } else {
        number(s.power_watts, 1)
    };
    let badges: String = s
        .anomalies
        .iter()
        .map(|a| {
            let since = a
                .since
                .map(|t| format!(" since {}", clock(t)))
                .unwrap_or_default();
            format!("<li class=\"badge\">{}{since}</li>", a.rule)
        })
        .collect();
    let cell = |label: &str, field: &str, value: String| {
        format!("<div><dt>{label}</dt><dd data-f=\"{field}\">{value}</dd></div>")
    };
    format!(
        "<article class=\"card\" data-sensor=\"{name}\">\n<header><h2>{name}</h2>{state}</header>\n\
         <p class=\"labels\">{driver} · {bus} {address}{calibrated}{sep}{labels}</p>\n\
         <p class=\"power\"><span data-f=\"power\">{power}</span> <small>W</small></p>\n\
         <dl class=\"grid\">{volts}{amps}{today}{total}{avg}{min}{max}</dl>\n\
         <ul class=\"badges\" data-f=\"anomalies\">{badges}</ul>\n\
         <figure class=\"spark\"><svg viewBox=\"0 0 300 60\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"Recent power of {name}\" data-points=\"{points}\"><path d=\"{path}\"/></svg>\
         <figcaption data-f=\"tip\">recent power; touch or hover for values</figcaption></figure>\n</article>\n",
        name = escape(s.name),
        driver = escape(s.driver),
        bus = escape(s.bus),
        address = s.address,
        calibrated = if s.calibrated { " · calibrated" } else { "" },
        sep = if labels.is_empty() { "" } else { " · " },
        labels = labels.join(" "),
        volts = cell("Bus", "volts", format!("{} V", number(s.bus_voltage_volts, 2))),
        amps = cell("Current", "amps", format!("{} A", number(s.current_amperes, 3))),
        today = cell("Today", "today", format!("{} kWh", number(Some(s.energy_today_kwh), 3))),
        total = cell("Total", "total", format!("{} kWh", number(Some(s.energy_kwh), 3))),
        avg = cell("Avg", "avg", format!("{} W", number(s.power_avg_watts, 1))),
        min = cell("Min", "min", format!("{} W", number(s.power_min_watts, 1))),
        max = cell("Max", "max", format!("{} W", number(s.power_max_watts, 1))),
    )
}

fn battery_card(b: &BatteryReading<'_>) -> String {
    let (soc, unit, ah) = match b.state_of_charge {
        Some(soc) => (
            number(Some(soc * 100.0), 1),
            "%",
            format!("{:.0} of {:.0} Ah", soc * b.capacity_ah, b.capacity_ah),
        ),
        None => (
            "unknown".to_string(),
            "",
            "state of charge unknown until the first full charge".to_string(),
        ),
    };
    let meter = format!(
        "<meter class=\"soc\" min=\"0\" max=\"1\" low=\"0.2\" high=\"0.5\" optimum=\"1\" value=\"{:.4}\"{}></meter>",
        b.state_of_charge.unwrap_or(0.0),
        if b.state_of_charge.is_none() { " hidden" } else { "" }
    );
    let amps = b.average_current_amperes;
    let togo = match (b.discharging, b.time_to_go_seconds, b.state_of_charge) {
        (true, Some(t), _) => format!("{} to go at {amps:.1} A", span(t)),
        (true, None, _) => format!("discharging at {amps:.1} A"),
        (false, _, _) if b.charging => format!("charging at {:.1} A", -amps),
        (false, _, Some(_)) => "idle".to_string(),
        (false, _, None) => String::new(),
    };
    let sure = match (
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
    format!(
        "<article class=\"card battery\" data-battery=\"{name}\">\n<header><h2>Battery {name}</h2><span class=\"muted\">{chemistry}, sensor {sensor}</span></header>\n\
         <p class=\"power\"><span data-f=\"soc\">{soc}</span><small data-f=\"unit\">{unit}</small></p>\n{meter}\n\
         <p><span data-f=\"ah\">{ah}</span><br><span data-f=\"togo\">{togo}</span></p>\n\
         <p class=\"muted\"><span data-f=\"sure\">{sure}</span><br>{fulls} full charge(s); in {charge_in:.1} Ah, out {charge_out:.1} Ah</p>\n</article>\n",
        name = escape(b.name),
        chemistry = b.chemistry,
        sensor = escape(b.sensor),
        fulls = b.full_charges,
        charge_in = b.charge_in_ah,
        charge_out = b.charge_out_ah,
    )
}

/// The page, rendered now.
pub(crate) fn status_page(app: &App) -> String {
    let sensors = app.sensors();
    let data = readings(app, &sensors);
    let recent = history(&sensors, None, 0.0);
    let mut cards = String::new();
    let mut span_seconds: f64 = 0.0;
    for s in &data.sensors {
        let (path, points) = recent
            .as_ref()
            .and_then(|h| h.sensors.get(s.name))
            .map(|h| {
                span_seconds = span_seconds.max(h.resolution_seconds * POINTS as f64);
                (sparkline(&h.points, h.resolution_seconds), h.points.len())
            })
            .unwrap_or_default();
        cards.push_str(&sensor_card(s, &path, points));
    }
    let batteries: String = data.batteries.iter().map(battery_card).collect();
    let batteries = if batteries.is_empty() {
        String::new()
    } else {
        format!("<section class=\"cards\" aria-label=\"Batteries\">\n{batteries}</section>")
    };
    TEMPLATE
        .replace("{{VERSION}}", &escape(data.version))
        .replace(
            "{{UPTIME}}",
            &span(Duration::from_secs_f64(data.uptime_seconds.max(0.0)).as_secs_f64()),
        )
        .replace(
            "{{HEALTH_CLASS}}",
            if data.sampling_healthy { "ok" } else { "bad" },
        )
        .replace(
            "{{HEALTH}}",
            if data.sampling_healthy {
                "healthy"
            } else {
                "stalled"
            },
        )
        .replace("{{SPAN}}", &span(span_seconds))
        .replace("{{BATTERIES}}", &batteries)
        .replace("{{CARDS}}", &cards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_spans_its_window_and_breaks_at_gaps() {
        let points = [
            (100.0, Some(10.0)),
            (101.0, Some(20.0)),
            (102.0, None),
            (103.0, Some(20.0)),
        ];
        let d = sparkline(&points, 1.0);
        // Two pieces; the newest point at the right edge, the lowest at the bottom (the
        // window: ten points, as there are fewer).
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert!(d.ends_with("M300.0 3.0"), "{d}");
        assert!(d.starts_with("M210.0 57.0"), "{d}");
        assert!(d.contains("57.0"), "{d}");
        assert_eq!(sparkline(&[], 1.0), "");
        assert_eq!(sparkline(&[(1.0, None)], 1.0), "");
    }
}
