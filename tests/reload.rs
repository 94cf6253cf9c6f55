//! SIGHUP reloads the configuration file into the running daemon.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Daemon;

fn house() -> String {
    common::simulated_house("1s")
}

const EXTRA: &str = r#"
[[sensor]]
name = "kettle"
driver = "simulated"
bus = "kitchen"
interval = "200ms"
[sensor.simulation]
load = { model = "constant", watts = 30.0 }
"#;

fn energy(m: &common::Metrics) -> BTreeMap<(String, String), f64> {
    m.scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("powermon_energy"))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => {
                Some(((s.metric.clone(), s.labels.get("sensor")?.to_string()), v))
            }
            _ => None,
        })
        .collect()
}

fn assert_none_lower(before: &common::Metrics, after: &common::Metrics) {
    let after = energy(after);
    for (key, value) in energy(before) {
        if let Some(now) = after.get(&key) {
            assert!(*now >= value, "{key:?} went from {value} to {now}");
        }
    }
}

/// The done-when of reload: a sensor added and a rule changed apply without a restart; a
/// broken edit is refused and the daemon runs on.
#[test]
fn sighup_applies_an_edit_and_refuses_a_broken_one() {
    let d = Daemon::start(&house());
    let pid = d.pid();
    let up = |m: &common::Metrics, s: &str| m.value("powermon_sensor_up", &[("sensor", s)]);
    let before = d.scrape_until(Duration::from_secs(10), |m| {
        m.value("powermon_energy_joules_total", &[("sensor", "fr003")]) > Some(0.0)
    });
    assert_eq!(
        before.value("powermon_config_last_reload_successful", &[]),
        Some(1.0)
    );
    let started = before
        .value("powermon_config_last_reload_success_timestamp_seconds", &[])
        .unwrap();
    let samples_before = before.sensor("powermon_samples_total", "pi_5v");

    // A new sensor on a bus of its own, and a rule changed on one of the house's sensors.
    let edited = house().replace("max_power_watts = 400.0", "max_power_watts = 100.0") + EXTRA;
    std::fs::write(&d.config_path, edited).unwrap();
    common::signal(pid, libc::SIGHUP);
    let after = d.scrape_until(Duration::from_secs(5), |m| up(m, "kettle") == Some(1.0));
    assert_eq!(d.pid(), pid);
    assert_none_lower(&before, &after);
    assert!(
        after
            .value("powermon_config_last_reload_success_timestamp_seconds", &[])
            .unwrap()
            >= started
    );
    assert!(d.log().contains("reloaded"), "{}", d.log());
    assert!(
        d.log().contains("+kettle") && d.log().contains("~fr003"),
        "{}",
        d.log()
    );
    // The house's other sensors kept sampling: their counters did not restart.
    assert!(after.sensor("powermon_samples_total", "pi_5v") >= samples_before);
    // The changed rule is the one now evaluated.
    let d_check = common::run(
        &["check-config", "--config", d.config_path.to_str().unwrap()],
        &[],
    );
    assert!(d_check.1.contains("fr003: ") && d_check.1.contains("over_power >100 W"));

    // A broken edit: the daemon keeps its configuration and says so.
    std::fs::write(
        &d.config_path,
        house() + "[[sensor]]\nname = \"Bad Name\"\n",
    )
    .unwrap();
    common::signal(pid, libc::SIGHUP);
    let refused = d.scrape_until(Duration::from_secs(5), |m| {
        m.value("powermon_config_last_reload_successful", &[]) == Some(0.0)
    });
    assert_eq!(
        up(&refused, "kettle"),
        Some(1.0),
        "the running sensors stay"
    );
    assert_none_lower(&after, &refused);
    let log = d.log();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("key `sensor[5].name`"), "{log}");
    assert_eq!(d.pid(), pid);
}

/// Removing a sensor drops its series but keeps its totals; adding it back continues them.
#[test]
fn a_removed_sensor_comes_back_with_its_totals() {
    let d = Daemon::start(&(house() + EXTRA));
    let first = d.scrape_until(Duration::from_secs(10), |m| {
        m.value("powermon_energy_joules_total", &[("sensor", "kettle")]) > Some(30.0)
    });
    let kettle = first.sensor("powermon_energy_joules_total", "kettle");

    std::fs::write(&d.config_path, house()).unwrap();
    common::signal(d.pid(), libc::SIGHUP);
    let gone = d.scrape_until(Duration::from_secs(5), |m| {
        m.value("powermon_sensor_up", &[("sensor", "kettle")])
            .is_none()
    });
    assert!(gone
        .value("powermon_energy_joules_total", &[("sensor", "kettle")])
        .is_none());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.state_dir.join("state.json")).unwrap())
            .unwrap();
    let stored = saved["sensors"]["kettle"]["energy_joules"]
        .as_f64()
        .unwrap();
    assert!(stored >= kettle, "stored {stored} < exported {kettle}");

    std::fs::write(&d.config_path, house() + EXTRA).unwrap();
    common::signal(d.pid(), libc::SIGHUP);
    let back = d.scrape_until(Duration::from_secs(5), |m| {
        m.value("powermon_sensor_up", &[("sensor", "kettle")]) == Some(1.0)
    });
    let again = back.sensor("powermon_energy_joules_total", "kettle");
    assert!(again >= stored, "came back at {again}, stored {stored}");
}

/// The log level and the listen addresses follow the file too.
#[test]
fn a_reload_rebinds_the_listeners() {
    let port = common::free_port();
    let config = house().replace(
        "listen = \"127.0.0.1:9723\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    assert!(config.contains(&format!(":{port}\"")));
    let (dir, path) = common::config_file(&config);
    let state = dir.path().join("state");
    let mut child = common::spawn_configured(&path, &state);
    let old: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let wait_for = |addr: std::net::SocketAddr, listening: bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_ok() != listening {
            assert!(
                std::time::Instant::now() < deadline,
                "{addr} listening: {}",
                !listening
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(old, true);
    let new_port = common::free_port();
    let new: std::net::SocketAddr = format!("127.0.0.1:{new_port}").parse().unwrap();
    std::fs::write(
        &path,
        config.replace(&format!(":{port}\""), &format!(":{new_port}\"")),
    )
    .unwrap();
    common::signal(child.id(), libc::SIGHUP);
    wait_for(new, true);
    wait_for(old, false);
    assert_eq!(common::request(new, "GET", "/healthz", &[]).status, 200);
    common::signal(child.id(), libc::SIGTERM);
    assert!(child.wait().unwrap().success());
}
