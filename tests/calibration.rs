//! `calibrate` against a module that is not what it says: a virtual INA226 whose shunt is
//! 0.0973 Ω where the configuration says 0.1 Ω, with a 50 µV amplifier offset and a bus ADC
//! 1.5 % high. A zero, then one load against the truth; then three other loads must read
//! within 0.2 % (and a resolution step) of the truth.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{config_file, read, run, Daemon};

const SUPPLY: f64 = 12.0;
/// The INA226's shunt voltage step (2.5 µV) through the configured shunt.
const LSB_AMPS: f64 = 2.5e-6 / 0.1;

fn module(watts: f64) -> String {
    format!(
        r#"# A module whose shunt is not what it says.
[daemon]
persist_interval = "1s"

[[sensor]]
name = "load"
driver = "simulated"
address = 0x40
shunt_ohms = 0.1                 # what the module says
max_current_amps = 0.8
interval = "100ms"

[sensor.simulation]
chip = "ina226"
supply_volts = {SUPPLY}
load = {{ model = "constant", watts = {watts} }}
shunt_ohms = 0.0973              # what it really has
shunt_offset_volts = 0.00005
bus_gain = 1.015
"#
    )
}

/// The config file with the load changed to `watts`, its calibration kept.
fn set_load(path: &Path, watts: f64) {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("load = {").unwrap();
    let end = start + text[start..].find('}').unwrap() + 1;
    let new = format!(
        "{}load = {{ model = \"constant\", watts = {watts} }}{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(path, new).unwrap();
}

/// The mean current, power and bus voltage `read` shows over a second.
fn read_means(path: &Path) -> (f64, f64, f64) {
    let (status, stdout, stderr) = read(path, "1s", &[]);
    assert!(status.success(), "{stderr}");
    let rows: Vec<(f64, f64, f64)> = stdout
        .lines()
        .filter(|l| l.contains(" s  load"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[5].parse().unwrap(),
                f[7].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    assert!(!rows.is_empty(), "{stdout}");
    let n = rows.len() as f64;
    (
        rows.iter().map(|r| r.0).sum::<f64>() / n,
        rows.iter().map(|r| r.1).sum::<f64>() / n,
        rows.iter().map(|r| r.2).sum::<f64>() / n,
    )
}

fn calibrate(path: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec![
        "calibrate",
        "load",
        "--config",
        path.to_str().unwrap(),
        "--duration",
        "1s",
    ];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run(&all, &[]);
    (status.code(), stdout, stderr)
}

#[test]
fn a_zero_and_one_load_make_every_load_read_true() {
    let (_dir, path) = config_file(&module(0.0));
    // Before: 2.8 % off.
    set_load(&path, 4.0);
    let truth = 4.0 / SUPPLY;
    let (amps, _, volts) = read_means(&path);
    assert!((volts - SUPPLY) / SUPPLY > 0.014, "{volts}");
    let before = (amps - truth) / truth;
    assert!(before.abs() > 0.02, "{before}");
    eprintln!(
        "before: 4 W load reads {:+.3} % of its current",
        before * 100.0
    );

    set_load(&path, 0.0);
    let (code, stdout, stderr) = calibrate(&path, &["--zero", "--write"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    set_load(&path, 6.0);
    let reference = format!("{}", 6.0 / SUPPLY);
    let (code, stdout, stderr) = calibrate(
        &path,
        &["--current", &reference, "--voltage", "12", "--write"],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("current_gain        1.02"), "{stdout}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# A module whose shunt is not what it says."),
        "{text}"
    );
    assert!(
        text.contains("shunt_ohms = 0.0973              # what it really has"),
        "{text}"
    );

    for watts in [2.0, 4.5, 9.0] {
        set_load(&path, watts);
        let truth_amps = watts / SUPPLY;
        let (amps, power, volts) = read_means(&path);
        assert!(
            (volts - SUPPLY).abs() / SUPPLY <= 0.001,
            "{watts} W: {volts} V"
        );
        eprintln!(
            "after, {watts} W: current {:+.3} %, power {:+.3} %",
            (amps - truth_amps) / truth_amps * 100.0,
            (power - watts) / watts * 100.0
        );
        // read prints 4 decimals of current and 3 of power.
        let amps_limit = 0.002 * truth_amps + LSB_AMPS + 0.00005;
        let power_limit = 0.002 * watts + LSB_AMPS * SUPPLY + 0.0005;
        assert!(
            (amps - truth_amps).abs() <= amps_limit,
            "{watts} W: {amps} A, truth {truth_amps} A"
        );
        assert!(
            (power - watts).abs() <= power_limit,
            "{watts} W: {power} W read"
        );
    }
    // check-config says it is calibrated.
    let (status, stdout, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("calibrated: current × 1.02"), "{stdout}");
}

#[test]
fn nonsense_is_refused_with_a_message() {
    let (_dir, path) = config_file(&module(6.0));
    for (args, message) in [
        (vec![], "nothing to calibrate against"),
        (
            vec!["--zero", "--current", "0.5"],
            "calibrate them one after the other",
        ),
        (vec!["--current", "-0.5"], "opposite signs"),
        (vec!["--current", "0.7"], "more than 10 % off"),
        (vec!["--zero"], "is the load really disconnected?"),
    ] {
        let (code, stdout, stderr) = calibrate(&path, &args);
        assert_eq!(code, Some(1), "{args:?}: {stdout}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    set_load(&path, 0.0);
    let (code, _, stderr) = calibrate(&path, &["--current", "0.001"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("too close to zero for a gain"), "{stderr}");
    // A sensor that is down.
    let down = module(6.0).replace(
        "bus_gain = 1.015",
        "bus_gain = 1.015\nfaults = [{ kind = \"nack\", rate = 1.0 }]",
    );
    let (_dir2, down_path) = config_file(&down);
    let (code, _, stderr) = calibrate(&down_path, &["--current", "0.5"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("a sensor that is down cannot be calibrated"),
        "{stderr}"
    );
    let (status, _, stderr) = run(
        &[
            "calibrate",
            "nosuch",
            "--config",
            path.to_str().unwrap(),
            "--zero",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("no sensor \"nosuch\""), "{stderr}");
    // The file was never touched.
    assert!(!std::fs::read_to_string(&path)
        .unwrap()
        .contains("[sensor.calibration]"));
}

#[test]
fn a_bad_trim_is_a_located_mistake() {
    let text = module(6.0) + "\n[sensor.calibration]\ncurrent_gain = 1.5\n";
    let (_dir, path) = config_file(&text);
    let (status, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("config.toml:22:") && stderr.contains("sensor[0].calibration.current_gain"),
        "{stderr}"
    );
    assert!(stderr.contains("0.9 to 1.1"), "{stderr}");
}

/// A calibration written beside the running daemon applies at a reload: the same process,
/// no energy total lower, the readings trimmed from then on.
#[test]
fn a_reload_applies_a_calibration_without_a_restart() {
    let (dir, path) = config_file(&module(6.0));
    let d = Daemon::start_with(&path, &dir.path().join("state"));
    let pid = d.pid();
    let before = d.scrape_until(Duration::from_secs(10), |m| {
        m.value("powermon_energy_joules_total", &[("sensor", "load")]) > Some(0.0)
    });
    let power = before.sensor("powermon_power_watts", "load");
    assert!((power - 6.0).abs() / 6.0 > 0.01, "{power}");
    let info = |m: &common::Metrics| {
        m.scrape
            .samples
            .iter()
            .find(|s| s.metric == "powermon_sensor_info")
            .and_then(|s| s.labels.get("calibrated").map(str::to_string))
    };
    assert_eq!(info(&before).as_deref(), Some("false"));
    let (code, stdout, stderr) = calibrate(
        &path,
        &[
            "--current",
            &format!("{}", 6.0 / SUPPLY),
            "--voltage",
            "12",
            "--write",
        ],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    common::signal(pid, libc::SIGHUP);
    let reloaded = d.scrape_until(Duration::from_secs(10), |m| {
        info(m).as_deref() == Some("true")
    });
    // The same process: no restart.
    assert_eq!(
        reloaded.value("process_start_time_seconds", &[]),
        before.value("process_start_time_seconds", &[])
    );
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let after = d.scrape_until(Duration::from_secs(5), |m| {
        (m.sensor("powermon_power_watts", "load") - 6.0).abs() < 0.02
    });
    for name in [
        "powermon_energy_joules_total",
        "powermon_energy_reverse_joules_total",
    ] {
        assert!(
            after.sensor(name, "load") >= before.sensor(name, "load"),
            "{name}"
        );
    }
}

/// With the daemon running (it holds the state directory's lock), `calibrate` reads the
/// sensor through the daemon's `/api/readings`, taking the daemon's trims off again.
#[test]
fn beside_a_running_daemon_it_reads_through_the_daemon() {
    let port = common::free_port();
    let text = module(6.0).replace(
        "persist_interval = \"1s\"",
        &format!("persist_interval = \"1s\"\nlisten = \"127.0.0.1:{port}\""),
    ) + "\n[sensor.calibration]\ncurrent_gain = 1.01\n";
    let (dir, path) = config_file(&text);
    let state = dir.path().join("state");
    let mut daemon = common::spawn_configured(&path, &state);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let state_env = state.to_str().unwrap();
    let (status, stdout, stderr) = run(
        &[
            "calibrate",
            "load",
            "--config",
            path.to_str().unwrap(),
            "--duration",
            "2s",
            "--current",
            &format!("{}", 6.0 / SUPPLY),
        ],
        &[("STATE_DIRECTORY", state_env)],
    );
    common::signal(daemon.id(), libc::SIGTERM);
    let _ = daemon.wait();
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("through the running daemon"), "{stdout}");
    // The same gain as read from the chip: the daemon's 1.01 was taken off (truth: the
    // shunt is 0.0973 where 0.1 is configured, and 0.5 mA of offset in it).
    let gain: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("current_gain"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let expected = 0.5 / (0.5 * 0.0973 / 0.1 + 0.0005);
    assert!(
        (gain - expected).abs() < 0.001,
        "{gain} vs {expected}: {stdout}"
    );
}

/// Every driver is trimmed: an INA260 (its shunt inside) and each INA3221 channel on its own,
/// beside an untrimmed twin on the same load.
#[test]
fn trims_apply_to_every_chip_and_channel() {
    let sensor = |name: &str, address: &str, chip: &str, extra: &str, trim: &str| {
        format!(
            "[[sensor]]\nname = \"{name}\"\ndriver = \"simulated\"\nbus = \"bench\"\naddress = {address}\n{extra}interval = \"200ms\"\n{trim}[sensor.simulation]\nchip = \"{chip}\"\nsupply_volts = 12.0\nload = {{ model = \"constant\", watts = 12.0 }}\n\n"
        )
    };
    let trim = "[sensor.calibration]\ncurrent_gain = 1.05\nvoltage_gain = 0.98\n";
    let text = [
        sensor("plain260", "0x40", "ina260", "", ""),
        sensor("trim260", "0x41", "ina260", "", trim),
        sensor(
            "plain1",
            "0x42",
            "ina3221",
            "channel = 1\nshunt_ohms = 0.1\n",
            "",
        ),
        sensor(
            "trim2",
            "0x42",
            "ina3221",
            "channel = 2\nshunt_ohms = 0.1\n",
            trim,
        ),
    ]
    .concat();
    let (_dir, path) = config_file(&text);
    let (status, stdout, stderr) = read(&path, "1s", &[]);
    assert!(status.success(), "{stderr}");
    let avg = |name: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {stdout}"));
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    for (plain, trimmed) in [("plain260", "trim260*"), ("plain1", "trim2*")] {
        let ratio = avg(trimmed) / avg(plain);
        assert!(
            (ratio - 1.05 * 0.98).abs() < 0.003,
            "{trimmed}: {ratio}\n{stdout}"
        );
    }
}
