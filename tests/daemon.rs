//! The built daemon, end to end on simulated sensors: spawned on port 0, scraped like
//! Prometheus would, signalled like systemd would.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use common::{config_file, request, run, Daemon};

const SENSORS: [&str; 4] = ["ac001", "wm002", "fr003", "pi_5v"];

fn simulated_config() -> String {
    common::simulated_house("2s")
}

#[test]
fn the_simulated_house_reports_all_sensors_and_passes_promtool() {
    let d = Daemon::start(&simulated_config());
    let first = d.scrape_until(Duration::from_secs(10), |m| {
        SENSORS.iter().all(|s| {
            m.value("powermon_energy_joules_total", &[("sensor", s)])
                .is_some_and(|e| e > 0.0)
        })
    });
    for s in SENSORS {
        assert!(
            first.sensor("powermon_power_watts", s) > 0.0,
            "{s} has no power"
        );
        assert_eq!(first.sensor("powermon_sensor_up", s), 1.0);
        assert!(first.sensor("powermon_bus_voltage_volts", s) > 4.0);
    }
    let energy = |m: &common::Metrics, s: &str| m.sensor("powermon_energy_joules_total", s);
    let second = d.scrape_until(Duration::from_secs(10), |m| {
        SENSORS.iter().all(|s| energy(m, s) > energy(&first, s))
    });
    assert!(SENSORS
        .iter()
        .all(|s| energy(&second, s) > energy(&first, s)));

    // Every family of the contract is there.
    for family in [
        "powermon_bus_voltage_volts",
        "powermon_shunt_voltage_volts",
        "powermon_current_amperes",
        "powermon_power_watts",
        "powermon_energy_joules_total",
        "powermon_samples_total",
        "powermon_read_errors_total",
        "powermon_sensor_up",
        "powermon_last_sample_timestamp_seconds",
        "powermon_anomaly_active",
        "powermon_anomalies_total",
        "powermon_integration_gaps_total",
        "powermon_sensor_info",
        "powermon_build_info",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ] {
        assert!(
            second.scrape.samples.iter().any(|s| s.metric == family),
            "{family} missing"
        );
    }
    let info = second
        .scrape
        .samples
        .iter()
        .find(|s| s.metric == "powermon_sensor_info" && s.labels.get("sensor") == Some("fr003"))
        .expect("sensor_info for fr003");
    assert_eq!(info.labels.get("driver"), Some("simulated"));
    assert_eq!(info.labels.get("address"), Some("0x44"));
    assert_eq!(info.labels.get("appliance"), Some("fridge"));

    // The house battery: its monitor's series, and the INA226 it is read through.
    let house = [("battery", "house")];
    assert_eq!(
        second.value("powermon_battery_capacity_coulombs", &house),
        Some(400.0 * 3600.0)
    );
    assert!(second
        .value("powermon_battery_synchronized", &house)
        .is_some());
    for direction in ["in", "out"] {
        assert!(second
            .value(
                "powermon_battery_charge_coulombs_total",
                &[("battery", "house"), ("direction", direction)]
            )
            .is_some());
    }
    assert_eq!(
        second.value(
            "powermon_battery_info",
            &[
                ("battery", "house"),
                ("sensor", "battery"),
                ("chemistry", "lifepo4")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        second.value(
            "powermon_sensor_info",
            &[("sensor", "battery"), ("chip", "ina226")]
        ),
        Some(1.0)
    );
    let api: serde_json::Value = serde_json::from_slice(&d.get("/api/readings").body).unwrap();
    let battery = &api["batteries"][0];
    assert_eq!(battery["name"], "house");
    assert_eq!(battery["capacity_ah"], 400.0);
    // The house never rests; estimated under load from its first sample, at any hour: a
    // number with its uncertainty, and time to go while it discharges.
    assert!(battery["state_of_charge"].is_number(), "{battery}");
    assert!(
        battery["state_of_charge_uncertainty"].is_number(),
        "{battery}"
    );
    // The house draws from its battery at night, and the sun charges it by day: one of the
    // two, from the current's sign, whatever the state of charge.
    let amps = battery["average_current_amperes"].as_f64().unwrap();
    assert_eq!(
        battery["discharging"].as_bool(),
        Some(amps > 0.1),
        "{battery}"
    );
    assert_eq!(
        battery["charging"].as_bool(),
        Some(amps < -0.1),
        "{battery}"
    );
    if battery["discharging"].as_bool().unwrap() {
        assert!(battery["time_to_go_seconds"].is_number(), "{battery}");
    }

    let mut check = common::promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(second.text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );
}

const CONSTANT: &str = r#"
[daemon]
persist_interval = "1s"

[[sensor]]
name = "heater"
driver = "simulated"
shunt_ohms = 0.01
max_current_amps = 20.0
interval = "100ms"
[sensor.simulation]
load = { model = "constant", watts = 120.0 }
supply_volts = 12.0
"#;

/// The live totals of `/api/readings` follow every sample: energy is power times time.
#[test]
fn energy_grows_by_power_times_time_on_a_constant_load() {
    let d = Daemon::start(CONSTANT);
    let heater = |d: &Daemon| -> serde_json::Value {
        let json: serde_json::Value = serde_json::from_slice(&d.get("/api/readings").body).unwrap();
        json["sensors"][0].clone()
    };
    let samples = |h: &serde_json::Value| h["samples"].as_u64().unwrap();
    let wait = |at_least: u64| loop {
        let h = heater(&d);
        if samples(&h) >= at_least {
            return h;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let first = wait(3);
    let second = wait(samples(&first) + 30);
    let f = |h: &serde_json::Value, k: &str| h[k].as_f64().unwrap();
    let joules = f(&second, "energy_joules") - f(&first, "energy_joules");
    let seconds =
        f(&second, "last_sample_timestamp_seconds") - f(&first, "last_sample_timestamp_seconds");
    let watts = f(&second, "power_watts");
    assert!((watts - 120.0).abs() / 120.0 < 0.01, "power {watts} W");
    let expected = watts * seconds;
    assert!(
        (joules - expected).abs() / expected < 0.01,
        "{joules} J over {seconds} s, expected {expected} J"
    );
}

#[test]
fn endpoints_answer_like_an_exporter() {
    let d = Daemon::start(CONSTANT);
    d.scrape_until(Duration::from_secs(10), |m| {
        m.sensor("powermon_samples_total", "heater") >= 2.0
    });

    let health = d.get("/healthz");
    assert_eq!((health.status, health.text().trim()), (200, "ok"));

    let page = d.get("/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    assert!(
        html.contains("<h2>heater</h2>") && html.contains("href=\"/metrics\""),
        "{html}"
    );
    // It updates itself in place rather than reloading.
    assert!(!html.contains("http-equiv=\"refresh\""));
    assert!(html.contains("src=\"/static/app.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external assets in the page"
    );

    let api = d.get("/api/readings");
    assert_eq!(api.status, 200);
    assert_eq!(api.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&api.body).expect("JSON");
    let heater = &json["sensors"][0];
    assert_eq!(heater["name"], "heater");
    assert_eq!(heater["up"], true);
    let power = heater["power_watts"].as_f64().unwrap();
    assert!((power - 120.0).abs() < 1.2, "{power}");
    for key in [
        "power_avg_watts",
        "power_min_watts",
        "power_max_watts",
        "energy_kwh",
    ] {
        assert!(heater[key].as_f64().is_some(), "{key} missing in {heater}");
    }

    assert_eq!(d.get("/nope").status, 404);
    assert_eq!(d.get("/metrics/extra").status, 404);
    let post = request(d.addr, "POST", "/metrics", &[]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(request(d.addr, "DELETE", "/", &[]).status, 405);

    let head = request(d.addr, "HEAD", "/metrics", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let gz = request(d.addr, "GET", "/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut text)
        .unwrap();
    assert!(text.contains("powermon_power_watts{sensor=\"heater\"}"));
    assert!(gz.body.len() * 3 < text.len(), "gzip did not compress");
}

#[test]
fn oversized_requests_are_refused() {
    let d = Daemon::start(CONSTANT);
    let big = "x".repeat(64 * 1024);
    let r = request(d.addr, "GET", "/metrics", &[("X-Filler", &big)]);
    assert_eq!(r.status, 431, "oversized headers");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let d = Daemon::start(CONSTANT);
    let mut stream = std::net::TcpStream::connect(d.addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    // The server closes the connection (after its header read timeout) instead of waiting on.
    let closed = std::io::Read::read_to_end(&mut stream, &mut rest);
    assert!(
        closed.is_ok(),
        "connection still open after 60 s: {closed:?}"
    );
    // Meanwhile others are served.
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn sigterm_saves_the_energy_and_a_restart_continues_from_it() {
    let (dir, path) = config_file(CONSTANT);
    let state = dir.path().join("state");
    let mut d = Daemon::start_with(&path, &state);
    let before = d.scrape_until(Duration::from_secs(10), |m| {
        m.sensor("powermon_energy_joules_total", "heater") > 50.0
    });
    let (status, took) = d.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state.json")).unwrap()).unwrap();
    let stored = saved["sensors"]["heater"]["energy_joules"]
        .as_f64()
        .unwrap();
    let scraped = before.sensor("powermon_energy_joules_total", "heater");
    assert!(
        stored >= scraped,
        "saved {stored} J, but {scraped} J were scraped before the stop"
    );
    assert!(d.log().contains("saved energy totals"), "{}", d.log());

    let d2 = Daemon::start_with(&path, &state);
    let after = d2.scrape();
    let restored = after.sensor("powermon_energy_joules_total", "heater");
    assert!(
        restored >= stored,
        "counter restarted at {restored}, stored {stored}"
    );
    assert!(
        restored < stored + 120.0 * 5.0,
        "counter jumped to {restored} from {stored}"
    );
    assert!(
        d2.log().contains("restored energy totals of 1 sensor"),
        "{}",
        d2.log()
    );
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_the_daemon_runs() {
    let (dir, path) = config_file(CONSTANT);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.json"), "{\"version\": 1, \"sens").unwrap();
    let d = Daemon::start_with(&path, &state);
    d.scrape_until(Duration::from_secs(10), |m| {
        m.sensor("powermon_samples_total", "heater") >= 1.0
    });
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(d.log().contains("had problems"), "{}", d.log());
}

#[test]
fn a_bad_config_exits_78_before_binding() {
    // Hold a port: if the daemon got as far as binding it, it would fail differently.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().to_string();
    let (_dir, path) =
        config_file("[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\naddress = 0x50\n");
    let (status, stdout, stderr) = run(
        &["--config", path.to_str().unwrap(), "--listen", &port],
        &[],
    );
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("config.toml:4:11:"), "{stderr}");
    assert!(stderr.contains("key `sensor[0].address`"), "{stderr}");
    assert!(stderr.contains("expected 0x40 to 0x4F"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");

    let (status, _, stderr) = run(&["--config", "/nonexistent/config.toml"], &[]);
    assert_eq!(status.code(), Some(78));
    assert!(
        stderr.contains("cannot read /nonexistent/config.toml"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_a_line_per_sensor() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/simulated.toml");
    let (status, stdout, stderr) = run(&["check-config", "--config", path], &[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("OK, 5 sensor(s)"), "{stdout}");
    for s in SENSORS {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{s}:"))),
            "{stdout}"
        );
    }
    assert!(stdout.contains("Cal 17894"), "{stdout}");
}

#[test]
fn the_annotated_hardware_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.toml");
    let (status, stdout, stderr) = run(&["check-config", "--config", path], &[]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("battery: ina219 at 0x40 on /dev/i2c-1"),
        "{stdout}"
    );
}

#[test]
fn version_and_help() {
    let (status, stdout, _) = run(&["--version"], &[]);
    assert!(status.success());
    assert!(
        stdout.starts_with(&format!("power-monitord {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    let (status, stdout, _) = run(&["--help"], &[]);
    assert!(status.success());
    assert!(
        stdout.contains("check-config") && stdout.contains("--listen"),
        "{stdout}"
    );
}

#[test]
fn an_overload_window_is_one_over_power_episode() {
    let d = Daemon::start(
        r#"
[[sensor]]
name = "motor"
driver = "simulated"
shunt_ohms = 0.002
max_current_amps = 100.0
interval = "100ms"
[sensor.simulation]
load = { model = "constant", watts = 100.0 }
supply_volts = 12.0
faults = [{ kind = "overload", start = "2s", duration = "3s", watts = 900.0 }]
[sensor.anomaly]
max_power_watts = 500.0
max_power_for = "500ms"
"#,
    );
    let active = |m: &common::Metrics| {
        m.value(
            "powermon_anomaly_active",
            &[("sensor", "motor"), ("rule", "over_power")],
        )
        .unwrap()
    };
    let on = d.scrape_until(Duration::from_secs(15), |m| active(m) == 1.0);
    assert!(on.sensor("powermon_power_watts", "motor") > 500.0);
    let off = d.scrape_until(Duration::from_secs(15), |m| active(m) == 0.0);
    assert!(off.sensor("powermon_power_watts", "motor") < 500.0);
    let episodes = off
        .value(
            "powermon_anomalies_total",
            &[("sensor", "motor"), ("rule", "over_power")],
        )
        .unwrap();
    assert_eq!(episodes, 1.0);
    let log = d.log();
    assert_eq!(
        log.matches("anomaly over_power on sensor motor:").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("anomaly over_power on sensor motor cleared")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn a_failing_sensor_is_reported_while_the_others_keep_sampling() {
    let d = Daemon::start(
        r#"
[[sensor]]
name = "flaky"
driver = "simulated"
bus = "shared"
address = 0x40
interval = "100ms"
[sensor.simulation]
load = { model = "constant", watts = 10.0 }
faults = [{ kind = "disconnect", start = "500ms", duration = "1h" }]

[[sensor]]
name = "steady"
driver = "simulated"
bus = "shared"
address = 0x41
interval = "100ms"
[sensor.simulation]
load = { model = "constant", watts = 20.0 }
"#,
    );
    let first = d.scrape_until(Duration::from_secs(10), |m| {
        m.value(
            "powermon_read_errors_total",
            &[("sensor", "flaky"), ("kind", "nack")],
        ) >= Some(2.0)
    });
    assert_eq!(first.sensor("powermon_sensor_up", "flaky"), 0.0);
    let steady = first.sensor("powermon_samples_total", "steady");
    let later = d.scrape_until(Duration::from_secs(10), |m| {
        m.sensor("powermon_samples_total", "steady") >= steady + 10.0
    });
    assert_eq!(later.sensor("powermon_sensor_up", "steady"), 1.0);
    assert_eq!(later.sensor("powermon_sensor_up", "flaky"), 0.0);
    // One log line for the episode, not one per failed read.
    assert_eq!(
        d.log().matches("sensor flaky is down").count(),
        1,
        "{}",
        d.log()
    );
}

/// The context switches of the daemon's thread named `name`.
fn switches_of_thread(pid: u32, name: &str) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            return status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
    }
    panic!("no thread {name:?} in {pid}");
}

#[test]
fn sensors_sharing_an_interval_on_a_bus_are_read_in_one_wake_up() {
    // 16 chips every 100 ms: one wake-up per tick is 10 a second; one per sensor would be 160.
    let mut config = String::new();
    for i in 0..16 {
        config += &format!(
            "[[sensor]]\nname = \"s{i}\"\ndriver = \"simulated\"\nbus = \"shared\"\n\
             address = {}\ninterval = \"100ms\"\n",
            0x40 + i
        );
    }
    let d = Daemon::start(&config);
    let samples_of = |m: &common::Metrics| -> f64 {
        (0..16)
            .map(|i| m.sensor("powermon_samples_total", &format!("s{i}")))
            .sum()
    };
    d.scrape_until(Duration::from_secs(10), |m| {
        m.value("powermon_samples_total", &[("sensor", "s15")])
            .is_some_and(|v| v > 5.0)
    });
    let before = switches_of_thread(d.pid(), "bus shared");
    let samples_before = samples_of(&d.scrape());
    std::thread::sleep(Duration::from_secs(3));
    let after = switches_of_thread(d.pid(), "bus shared");
    let samples = samples_of(&d.scrape()) - samples_before;
    let wakeups = (after - before) as f64;
    // Every chip kept being read, and the thread woke about once per tick for all of them
    // (a tick may take a second switch while a conversion is retried).
    assert!(samples >= 16.0 * 20.0, "{samples} samples in 3 s");
    assert!(
        wakeups <= samples / 16.0 * 2.0 + 5.0,
        "{wakeups} wake-ups for {samples} samples of 16 sensors"
    );
}
