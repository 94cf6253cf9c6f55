//! The bundled Prometheus rules and Grafana dashboard, checked with promtool and proven
//! against a real Prometheus scraping the real daemon.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{promtool, Daemon, Prometheus};
use power_monitord::board::Board;
use power_monitord::config::Config;
use power_monitord::metrics::Metrics;
use power_monitord::sampler::SensorPipeline;
use power_monitord::state::{SocStatus, StoredBattery, StoredSensor};
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn path(p: &str) -> String {
    format!("{ROOT}/{p}")
}

fn rules() -> Yaml {
    let text = std::fs::read_to_string(path("config/prometheus/power-monitord.rules.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(path("grafana/dashboards/power-monitord.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every rule of the rule file: (record or alert name, expr).
fn rule_exprs() -> Vec<(String, String)> {
    let rules = rules();
    let mut out = Vec::new();
    for group in rules["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["record"]
                .as_str()
                .or(rule["alert"].as_str())
                .expect("record or alert");
            out.push((
                name.to_string(),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

/// Every PromQL expression in the dashboard: panel targets, annotations, variable queries.
fn dashboard_exprs(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?}", panel["title"]),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = a["expr"].as_str() {
            out.push((format!("annotation {:?}", a["name"]), expr.to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            out.push((
                format!("variable {:?}", v["name"]),
                v["definition"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// Grafana's `label_values(selector, label)` as the PromQL selector it reads.
fn label_values_selector(expr: &str) -> Option<String> {
    let inner = expr.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, _label) = inner.rsplit_once(',')?;
    Some(selector.trim().to_string())
}

/// Identifiers in the namespaces this project uses: metric names it exports, records or reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    let mut in_string = false;
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            in_string = !in_string;
            continue;
        }
        if in_string || !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, n)) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' || n == ':' {
                end = j + n.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let word = &expr[i..end];
        if [
            "powermon_",
            "process_",
            "instance_sensor:",
            "power_monitord:",
        ]
        .iter()
        .any(|p| word.starts_with(p))
            || word == "up"
        {
            names.insert(word.to_string());
        }
    }
    names
}

fn exported_metric_names() -> BTreeSet<String> {
    let config = Config::load(Path::new(&path("config/simulated.toml"))).unwrap();
    let board = Board::new();
    let metrics = Metrics::new("0", "test", Arc::clone(&board)).unwrap();
    // The remote write queues' families, registered when one starts.
    let remote = metrics.remote().unwrap();
    remote.touch("central");
    // Series exist once a sensor's pipeline creates them; a battery's, once it has been full.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let full = StoredBattery {
        samples: 1,
        status: SocStatus::Synchronized,
        full_charges: 1,
        reference_unix: now,
        last_sample_unix: now,
        ..StoredBattery::default()
    };
    // A sensor's readings have series from its first sample: one each, from the virtual bus.
    let (clock, time) = power_monitord::sensor::simulated::Clock::manual();
    let bus = power_monitord::sensor::simulated::virtual_bus(&config.sensors, &clock);
    let mut sensors = power_monitord::sensor::sensors_on(bus, &config.sensors);
    // The chips have converted once.
    time.advance(Duration::from_secs(1));
    let (_pipelines, statuses): (Vec<_>, Vec<_>) = config
        .sensors
        .iter()
        .zip(sensors.iter_mut())
        .map(|(s, sensor)| {
            let (mut p, status) = SensorPipeline::new(s, StoredSensor::default(), None);
            p.resume_battery(full, None);
            let mut result = sensor.read();
            for _ in 0..3 {
                if result.is_ok() {
                    break;
                }
                time.advance(Duration::from_secs(1));
                result = sensor.read();
            }
            assert!(result.is_ok(), "{result:?}");
            p.process(result, Instant::now(), std::time::SystemTime::now());
            (p, status)
        })
        .unzip();
    for status in &statuses {
        status
            .exported
            .raise_to(&StoredSensor::default(), Some(&full));
    }
    board.replace(statuses);
    let text = String::from_utf8(metrics.encode()).unwrap();
    let mut names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    // Prometheus adds `up` to every scraped target.
    names.insert("up".into());
    // A queue's oldest pending sample has a series only while it holds one.
    names.insert("powermon_remote_write_oldest_pending_timestamp_seconds".into());
    names
}

#[test]
fn rules_pass_promtool_check_and_test() {
    let dir = path("config/prometheus");
    for args in [
        vec!["check", "rules", "power-monitord.rules.yml"],
        vec!["test", "rules", "power-monitord.rules.test.yml"],
        vec!["test", "rules", "power-monitord.rules.days.test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = promtool().args(&args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_alert_has_a_test_severity_and_instructions() {
    let tests = ["", ".days"]
        .map(|d| {
            std::fs::read_to_string(path(&format!(
                "config/prometheus/power-monitord.rules{d}.test.yml"
            )))
            .unwrap()
        })
        .concat();
    let rules = rules();
    let mut alerts = 0;
    for group in rules["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            assert!(rule["for"].as_str().is_some(), "{name} has no `for:`");
            let severity = rule["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            let description = rule["annotations"]["description"].as_str().unwrap_or("");
            let summary = rule["annotations"]["summary"].as_str().unwrap_or("");
            assert!(
                summary.contains("$labels.instance"),
                "{name}: summary names no instance"
            );
            if !["PowerMonitordDown", "PowerMonitorStateNotSaved"].contains(&name) {
                assert!(
                    description.contains("$labels.sensor")
                        || description.contains("$labels.battery")
                        || description.contains("$labels.queue"),
                    "{name}: description names no sensor, battery or queue"
                );
            }
            assert!(
                tests.contains(&format!(
                    "alertname: {name}\n    exp_alerts:\n    - exp_labels"
                )),
                "{name} has no promtool test that expects it to fire"
            );
        }
    }
    assert_eq!(alerts, 15);
}

#[test]
fn dashboard_and_rules_use_only_exported_or_recorded_metrics() {
    let mut known = exported_metric_names();
    let rules = rule_exprs();
    known.extend(
        rules
            .iter()
            .filter(|(n, _)| n.contains(':'))
            .map(|(n, _)| n.clone()),
    );
    let d = dashboard();
    let mut checked = 0;
    for (place, expr) in dashboard_exprs(&d).into_iter().chain(rules) {
        let names = metric_names(&expr);
        assert!(
            !names.is_empty() || expr.starts_with("vector("),
            "{place}: no metric in {expr}"
        );
        for name in names {
            assert!(
                known.contains(&name),
                "{place} uses {name}, which nothing exports or records: {expr}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} metric references found");
}

#[test]
fn dashboard_is_importable_and_portable() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap() >= 39,
        "schemaVersion of a recent Grafana"
    );
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("datasource variable");
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    for name in ["instance", "sensor", "battery"] {
        assert!(
            vars.iter()
                .any(|v| v["name"] == name && v["type"] == "query"),
            "{name} variable"
        );
    }
    let text = serde_json::to_string(&d).unwrap();
    // Every datasource reference goes through the variable: no UID of somebody's Grafana.
    for (i, _) in text.match_indices("\"uid\":") {
        let rest = &text[i + 6..];
        let value = rest.split('"').nth(1).unwrap_or("");
        assert!(
            ["${datasource}", "-- Grafana --", "power-monitord"].contains(&value),
            "hard-coded uid {value:?}"
        );
    }
    // Units on everything that shows a number.
    for panel in d["panels"].as_array().unwrap() {
        let kind = panel["type"].as_str().unwrap();
        if ["timeseries", "stat", "bargauge"].contains(&kind) {
            assert!(
                panel["fieldConfig"]["defaults"]["unit"].is_string(),
                "panel {:?} has no unit",
                panel["title"]
            );
        }
    }
    let units: BTreeSet<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["fieldConfig"]["defaults"]["unit"].as_str())
        .collect();
    for unit in ["watt", "volt", "amp", "kwatth", "bytes", "s"] {
        assert!(units.contains(unit), "no panel in {unit}");
    }
}

/// The daemon on the simulated house plus a motor with an overload window, a real Prometheus
/// scraping it every second with the bundled rules, then: every dashboard query returns data,
/// and the over-power alert fires.
#[test]
fn dashboard_queries_return_data_and_the_over_power_alert_fires() {
    // The house battery starts from a stated charge: its state of charge and time to go exist
    // from the first sample (from the voltage at rest, they would wait for a rest).
    let house = std::fs::read_to_string(path("config/simulated.toml")).unwrap();
    let mut config = house
        .replace("initial_soc = \"voltage\"", "initial_soc = 0.6")
        // At night the battery discharges, so its time to go is finite (whatever the hour).
        .replace("clouds = 0.3,", "clouds = 0.3, time_of_day = \"22:00\",");
    assert_eq!(
        config.matches("initial_soc = 0.6").count() + config.matches("time_of_day").count(),
        2,
        "the house's battery changed: {house}"
    );
    config = config
        + r#"
[[sensor]]
name = "motor"
driver = "simulated"
bus = "workshop"
shunt_ohms = 0.002
max_current_amps = 100.0
interval = "500ms"
[sensor.simulation]
load = { model = "constant", watts = 300.0 }
supply_volts = 12.0
# Late enough that Prometheus sees the anomaly counter go from 0 to 1.
faults = [{ kind = "overload", start = "12s", duration = "10m", watts = 900.0 }]
[sensor.anomaly]
max_power_watts = 600.0
max_power_for = "1s"
"#
        // A remote write queue whose receiver is away: its backlog panels have data.
        + &format!(
            "\n[[remote_write]]\nurl = \"http://127.0.0.1:{}/api/v1/write\"\nname = \"central\"\ninterval = \"1s\"\nwait_for_clock_sync = false\n",
            common::free_port()
        );
    let daemon = Daemon::start(&config);
    let prometheus = Prometheus::start(&format!(
        r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: power-monitord
    static_configs:
      - targets: ["{target}"]
"#,
        rules = path("config/prometheus/power-monitord.rules.yml"),
        target = daemon.addr
    ));

    // The alert: firing as soon as the daemon's episode starts (the daemon did the waiting).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let alerts = prometheus.api("/api/v1/alerts");
        let firing = alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| {
                a["labels"]["alertname"] == "PowerMonitorOverPower"
                    && a["labels"]["sensor"] == "motor"
                    && a["state"] == "firing"
            });
        if firing {
            let alert = alerts["data"]["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["labels"]["alertname"] == "PowerMonitorOverPower")
                .unwrap()
                .clone();
            assert_eq!(alert["labels"]["severity"], "warning");
            let summary = alert["annotations"]["summary"].as_str().unwrap();
            assert!(
                summary.starts_with(&format!("motor on {} draws 9", daemon.addr)),
                "{summary}"
            );
            // Nothing else of ours fires on a healthy house.
            let others: Vec<_> = alerts["data"]["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| {
                    a["state"] == "firing" && a["labels"]["alertname"] != "PowerMonitorOverPower"
                })
                .map(|a| a["labels"].to_string())
                .collect();
            assert!(
                others.is_empty() || others.iter().all(|o| o.contains("Overrange")),
                "{others:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "over-power never fired: {alerts}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every query of the dashboard, with its variables substituted, returns data.
    let d = dashboard();
    let mut empty = Vec::new();
    let exprs = dashboard_exprs(&d);
    for (place, expr) in &exprs {
        let promql = label_values_selector(expr).unwrap_or_else(|| expr.clone());
        let promql = promql
            .replace("$instance", ".+")
            .replace("$sensor", ".+")
            .replace("$battery", ".+")
            .replace("$__range", "5m")
            .replace("$__rate_interval", "15s")
            .replace("$__interval", "5m");
        let result = prometheus.query(&promql);
        if result.is_empty() {
            empty.push(format!("{place}: {promql}"));
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
    assert!(exprs.len() >= 25, "{} queries", exprs.len());
    // Both processes are stopped by PID when `daemon` and `prometheus` drop.
}

/// The shipped `prometheus.yml`, laid out as the README says (it and the rules in one
/// directory, the Pis in `file_sd/power-monitord.yml`): the rules load and the daemon is
/// scraped.
#[test]
fn the_shipped_prometheus_configuration_loads_the_rules_and_scrapes_the_daemon() {
    let daemon = Daemon::start(&std::fs::read_to_string(path("config/simulated.toml")).unwrap());
    let read =
        |name: &str| std::fs::read_to_string(path(&format!("config/prometheus/{name}"))).unwrap();
    let prometheus = Prometheus::start_files(&[
        // A 1 s scrape so the test does not wait for the first one; nothing else changed.
        (
            "prometheus.yml",
            read("prometheus.yml")
                .replace("scrape_interval: 15s", "scrape_interval: 1s")
                .replace("scrape_timeout: 10s", "scrape_timeout: 1s"),
        ),
        ("power-monitord.rules.yml", read("power-monitord.rules.yml")),
        (
            "file_sd/power-monitord.yml",
            format!(
                "- targets: [\"{}\"]\n  labels:\n    site: test\n",
                daemon.addr
            ),
        ),
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prometheus.query("up{job=\"power-monitord\",site=\"test\"} == 1");
        if !up.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon was never scraped");
        std::thread::sleep(Duration::from_millis(500));
    }
    let rules = prometheus.api("/api/v1/rules");
    let groups = rules["data"]["groups"].as_array().unwrap();
    let loaded: usize = groups
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(loaded, 21, "{rules}");
}
