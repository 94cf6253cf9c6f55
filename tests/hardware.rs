//! The hardware-facing commands and paths, without hardware: `scan` and `read` on the virtual
//! bus, and a missing `/dev/i2c-N` for the error paths.

mod common;

use std::time::Duration;

use common::{config_file, read, run, Daemon};

const SIMULATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/simulated.toml");
/// One simulated chip of each kind on one bus.
const FAMILY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/family.toml");
const FAMILY_SENSORS: [&str; 5] = ["usb_hub", "solar", "pump", "router", "sensor_hub"];

/// A bus that does not exist on any machine.
const MISSING_BUS: &str = "/dev/i2c-97";

#[test]
fn scan_finds_the_virtual_chips_and_prints_sensor_blocks() {
    let (status, stdout, stderr) = run(
        &["scan", "--bus", "virtual-house", "--config", SIMULATED],
        &[],
    );
    assert!(status.success(), "{stderr}");
    for address in ["0x40", "0x41", "0x44", "0x45"] {
        assert!(
            stdout.contains(&format!("  {address}  INA219, power-on defaults, bus ")),
            "{address} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("5 chip(s): INA219, INA226."), "{stdout}");
    // The blocks paste into a valid configuration.
    let blocks = &stdout[stdout.find("[[sensor]]").expect("blocks")..];
    let (_dir, path) = config_file(blocks);
    let (status, stdout, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("OK, 5 sensor(s)"), "{stdout}");
}

#[test]
fn scan_of_a_missing_bus_says_how_to_enable_i2c() {
    let (status, stdout, stderr) = run(
        &[
            "scan",
            "--bus",
            MISSING_BUS,
            "--config",
            "/nonexistent.toml",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(69), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot open {MISSING_BUS}")),
        "{stderr}"
    );
    assert!(stderr.contains("is I2C enabled?"), "{stderr}");
}

#[test]
fn read_prints_live_rows_and_a_summary() {
    let (status, stdout, stderr) = run(
        &["read", "--config", SIMULATED, "--duration", "2500ms"],
        &[],
    );
    assert!(status.success(), "{stderr}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(" s  ")).collect();
    assert!(
        rows.len() >= 8,
        "two rounds of four sensors expected:\n{stdout}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("ac001") && r.ends_with(" W")),
        "{stdout}"
    );
    let summary = &stdout[stdout.find("Over ").expect("summary")..];
    assert!(summary.contains("avg W") && summary.contains("min W") && summary.contains("max W"));
    for sensor in ["ac001", "wm002", "fr003", "pi_5v"] {
        let line = summary
            .lines()
            .find(|l| l.starts_with(sensor))
            .unwrap_or_else(|| panic!("{sensor} missing:\n{summary}"));
        let numbers: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let [samples, errors, avg, min, max, wh] = numbers[..] else {
            panic!("{line}")
        };
        assert!(samples >= 2.0 && errors == 0.0, "{line}");
        assert!(min <= avg && avg <= max && min > 0.0, "{line}");
        assert!(wh > 0.0, "{line}");
        // At one sample a second, a row shows every sample the summary counts: its minimum
        // and maximum are among them.
        let shown: Vec<f64> = rows
            .iter()
            .filter(|r| r.split_whitespace().nth(2) == Some(sensor))
            .filter_map(|r| r.split_whitespace().rev().nth(1)?.parse().ok())
            .collect();
        assert_eq!(shown.len() as f64, samples, "{sensor}:\n{stdout}");
        let near = |x: f64| shown.iter().any(|w| (w - x).abs() < 0.0015);
        assert!(
            near(min) && near(max),
            "{sensor}: {min} or {max} not in {shown:?}"
        );
    }
}

#[test]
fn read_with_a_missing_bus_reports_the_sensor_and_fails() {
    let (_dir, path) = config_file(&format!(
        "[[sensor]]\nname = \"battery\"\nbus = \"{MISSING_BUS}\"\n\n[[sensor]]\nname = \"sim\"\ndriver = \"simulated\"\n"
    ));
    let (status, stdout, stderr) = read(&path, "1500ms", &[]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("battery  down (unavailable)"), "{stdout}");
    assert!(stderr.contains("is I2C enabled?"), "{stderr}");
    assert!(stderr.contains("no valid sample from battery"), "{stderr}");
    let sim = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("sim "))
        .unwrap();
    assert!(
        !sim.split_whitespace().nth(1).unwrap().starts_with('0'),
        "{sim}"
    );
}

#[test]
fn the_daemon_runs_with_a_missing_bus_and_keeps_the_other_sensors() {
    // One sensor of each hardware driver on a bus that does not exist: each is down on its
    // own, and the simulated one beside them samples on.
    let down = ["ina219", "ina226", "ina260", "ina3221"];
    let hardware: String = down
        .iter()
        .enumerate()
        .map(|(i, chip)| {
            let channel = if *chip == "ina3221" { "channel = 1\n" } else { "" };
            format!(
                "[[sensor]]\nname = \"{chip}\"\ndriver = \"{chip}\"\nbus = \"{MISSING_BUS}\"\naddress = {}\n{channel}interval = \"100ms\"\n\n",
                0x40 + i
            )
        })
        .collect();
    let d = Daemon::start(&format!(
        r#"{hardware}
[[sensor]]
name = "fridge"
driver = "simulated"
interval = "100ms"
[sensor.simulation]
load = {{ model = "constant", watts = 12.0 }}
"#
    ));
    let unavailable = |m: &common::Metrics, sensor: &str| {
        m.value(
            "powermon_read_errors_total",
            &[("sensor", sensor), ("kind", "unavailable")],
        )
        .unwrap()
    };
    let first = d.scrape_until(Duration::from_secs(10), |m| {
        down.iter().all(|s| unavailable(m, s) >= 2.0)
    });
    let fridge = |m: &common::Metrics| m.sensor("powermon_samples_total", "fridge");
    // The simulated sensor goes on sampling meanwhile (every 100 ms: wait for one at least).
    let later = d.scrape_until(Duration::from_secs(10), |m| {
        down.iter()
            .all(|s| unavailable(m, s) > unavailable(&first, s))
            && fridge(m) > fridge(&first)
    });
    for sensor in down {
        assert_eq!(later.sensor("powermon_sensor_up", sensor), 0.0, "{sensor}");
        assert_eq!(
            later.value(
                "powermon_sensor_info",
                &[("sensor", sensor), ("chip", sensor)]
            ),
            Some(1.0),
            "{sensor}"
        );
    }
    assert_eq!(later.sensor("powermon_sensor_up", "fridge"), 1.0);
    assert!(d.get("/healthz").status == 200);
    let log = d.log();
    for sensor in down {
        let line = format!("sensor {sensor} is down");
        assert_eq!(log.matches(&line).count(), 1, "{log}");
    }
    assert!(log.contains("is I2C enabled?"), "{log}");
}

#[test]
fn one_chip_of_each_kind_shares_a_bus() {
    let config = std::fs::read_to_string(FAMILY).unwrap();
    let d = Daemon::start(&config);
    let energy = |m: &common::Metrics, s: &str| m.sensor("powermon_energy_joules_total", s);
    let first = d.scrape_until(Duration::from_secs(20), |m| {
        FAMILY_SENSORS.iter().all(|s| energy(m, s) > 0.0)
    });
    let later = d.scrape_until(Duration::from_secs(20), |m| {
        FAMILY_SENSORS
            .iter()
            .all(|s| energy(m, s) > energy(&first, s))
    });
    for (sensor, chip) in FAMILY_SENSORS
        .iter()
        .zip(["ina219", "ina226", "ina260", "ina3221", "ina3221"])
    {
        assert_eq!(later.sensor("powermon_sensor_up", sensor), 1.0, "{sensor}");
        assert!(
            later.sensor("powermon_power_watts", sensor) > 0.0,
            "{sensor}"
        );
        assert_eq!(
            later.value(
                "powermon_sensor_info",
                &[("sensor", sensor), ("chip", chip)]
            ),
            Some(1.0),
            "{sensor}"
        );
    }
    // The INA3221's 5 V channel: 1.8 W.
    let hub = later.sensor("powermon_power_watts", "sensor_hub");
    assert!((hub - 1.8).abs() < 0.05, "{hub}");
}

#[test]
fn scan_names_every_chip_of_the_family() {
    let (status, stdout, stderr) =
        run(&["scan", "--bus", "virtual-bench", "--config", FAMILY], &[]);
    assert!(status.success(), "{stderr}");
    for line in [
        "0x40  INA219, power-on defaults",
        "0x41  INA3221 (die ID 0x3220), power-on defaults, channels 1-3 at 12.000 / 5.000 / 0.000 V",
        "0x44  INA226 (die ID 0x2260), power-on defaults",
        "0x45  INA260 (die ID 0x2270), power-on defaults",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }
    assert!(
        stdout.contains(
            "name = \"ina226_44\"\ndriver = \"ina226\"\nbus = \"/dev/i2c-1\"\naddress = 0x44\n"
        ),
        "{stdout}"
    );
    // The blocks are a configuration for the same chips on hardware.
    let blocks = &stdout[stdout.find("[[sensor]]").expect("blocks")..];
    let (_dir, path) = config_file(blocks);
    let (status, stdout, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("OK, 6 sensor(s)"), "{stdout}");
    for driver in [
        "ina219 at 0x40",
        "ina3221 at 0x41",
        "ina226 at 0x44",
        "ina260 at 0x45",
    ] {
        assert!(stdout.contains(driver), "{driver}\n{stdout}");
    }
}

#[test]
fn a_fourth_ina3221_channel_is_a_located_error() {
    let (_dir, path) = config_file(
        "[[sensor]]\nname = \"a\"\ndriver = \"ina3221\"\naddress = 0x40\nchannel = 4\n",
    );
    for command in [&["check-config", "--config"][..], &["--config"][..]] {
        let mut args = command.to_vec();
        args.push(path.to_str().unwrap());
        let (status, stdout, stderr) = run(&args, &[]);
        assert_eq!(status.code(), Some(78), "{stdout}{stderr}");
        assert!(stderr.contains(":5:"), "{stderr}");
        assert!(stderr.contains("sensor[0].channel"), "{stderr}");
        assert!(stderr.contains("1, 2 or 3"), "{stderr}");
    }
}

#[test]
fn a_hung_bus_stalls_only_itself_and_healthz_says_so() {
    let d = Daemon::start(
        r#"
[[sensor]]
name = "stuck"
driver = "simulated"
bus = "attic"
interval = "200ms"
[sensor.simulation]
load = { model = "constant", watts = 5.0 }
faults = [{ kind = "hang", start = "1s", duration = "14s" }]

[[sensor]]
name = "cellar"
driver = "simulated"
bus = "cellar"
interval = "200ms"
[sensor.simulation]
load = { model = "constant", watts = 7.0 }
"#,
    );
    // The attic bus blocks from 1 s; once it is overdue, /healthz turns 503 ...
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health = d.get("/healthz");
        if health.status == 503 {
            assert!(health.text().contains("stalled"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never reported the stall"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ... while the cellar bus samples on.
    let samples = |m: &common::Metrics| m.sensor("powermon_samples_total", "cellar");
    let before = d.scrape();
    d.scrape_until(Duration::from_secs(5), |m| {
        samples(m) >= samples(&before) + 5.0
    });
    // When the hang ends the transfer times out, the sensor is re-initialised and reads again.
    let back = d.scrape_until(Duration::from_secs(20), |m| {
        m.value(
            "powermon_read_errors_total",
            &[("sensor", "stuck"), ("kind", "timeout")],
        ) >= Some(1.0)
            && m.sensor("powermon_sensor_up", "stuck") == 1.0
    });
    assert!(back.sensor("powermon_power_watts", "stuck") > 4.0);
    assert_eq!(d.get("/healthz").status, 200);
}

/// `read` on real chips beside a running daemon (which holds the state directory's lock)
/// refuses at once and says what to do; on simulated sensors it runs beside one.
#[test]
fn read_refuses_to_share_chips_with_a_running_daemon() {
    let (dir, path) = config_file(&format!(
        "[[sensor]]\nname = \"battery\"\nbus = \"{MISSING_BUS}\"\n"
    ));
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let lock = std::fs::File::create(state.join("state.lock")).unwrap();
    lock.lock().unwrap();
    let state_env = state.to_str().unwrap();
    let (status, _, stderr) = read(&path, "1s", &[("STATE_DIRECTORY", state_env)]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the power-monitord daemon is running")
            && stderr.contains("sudo systemctl stop power-monitord"),
        "{stderr}"
    );
    // Simulated sensors share nothing with it.
    let (status, _, stderr) = run(
        &["read", "--config", SIMULATED, "--duration", "1s"],
        &[("STATE_DIRECTORY", state_env)],
    );
    assert!(status.success(), "{stderr}");
    // Without the daemon, `read` goes to the chips (here: a bus that is not there).
    drop(lock);
    let (status, _, stderr) = read(&path, "1s", &[("STATE_DIRECTORY", state_env)]);
    assert!(!status.success());
    assert!(!stderr.contains("daemon is running"), "{stderr}");
}
