//! Energy totals across crashes, restarts and a hostile state directory, against the built
//! daemon.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{config_file, Daemon};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Default daemon settings (persist_interval 30 s); one sensor draws, one is charged through
/// its shunt (reverse energy), one cycles like a fridge.
const HOUSE: &str = r#"
[[sensor]]
name = "ac"
driver = "simulated"
bus = "house"
address = 0x40
shunt_ohms = 0.000375
max_current_amps = 200.0
bus_voltage_range = 16
interval = "250ms"
[sensor.simulation]
load = { model = "air_conditioner", watts = 1200.0 }
supply_volts = 13.2
noise = 0.01

[[sensor]]
name = "charger"
driver = "simulated"
bus = "house"
address = 0x41
shunt_ohms = 0.01
max_current_amps = 20.0
interval = "250ms"
[sensor.simulation]
load = { model = "constant", watts = -90.0 }
supply_volts = 13.6

[[sensor]]
name = "fridge"
driver = "simulated"
bus = "house"
address = 0x44
shunt_ohms = 0.000375
max_current_amps = 200.0
bus_voltage_range = 16
interval = "250ms"
[sensor.simulation]
load = { model = "fridge", watts = 240.0 }
supply_volts = 13.2
"#;

const FAMILIES: [&str; 2] = [
    "powermon_energy_joules_total",
    "powermon_energy_reverse_joules_total",
];

/// Every (family, sensor) energy counter of a scrape.
fn energy(m: &common::Metrics) -> BTreeMap<(String, String), f64> {
    m.scrape
        .samples
        .iter()
        .filter(|s| FAMILIES.contains(&s.metric.as_str()))
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            Some(((s.metric.clone(), s.labels.get("sensor")?.to_string()), v))
        })
        .collect()
}

/// The live totals of `/api/readings`, keyed like [`energy`].
fn live(d: &Daemon) -> BTreeMap<(String, String), f64> {
    let json: serde_json::Value = serde_json::from_slice(&d.get("/api/readings").body).unwrap();
    let mut out = BTreeMap::new();
    for s in json["sensors"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap().to_string();
        for (family, key) in FAMILIES
            .iter()
            .zip(["energy_joules", "energy_reverse_joules"])
        {
            out.insert((family.to_string(), name.clone()), s[key].as_f64().unwrap());
        }
    }
    out
}

/// The done-when of the energy-integrity work: ten rounds of start, a random 2–12 s, `kill -9`.
/// The first value served after each restart is at least the last one served before the kill,
/// for every sensor and both directions; and a crash loses nothing: the restart continues from
/// at least the live totals last seen.
#[test]
fn kill_nine_never_makes_an_energy_counter_step_back() {
    let (dir, path) = config_file(HOUSE);
    let state = dir.path().join("state");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut last_served: Option<BTreeMap<(String, String), f64>> = None;
    let mut last_live: Option<BTreeMap<(String, String), f64>> = None;
    for round in 0..10 {
        let d = Daemon::start_with(&path, &state);
        let first = energy(&d.scrape());
        assert_eq!(first.len(), 6, "{first:?}");
        if let (Some(served), Some(live)) = (&last_served, &last_live) {
            for (key, before) in served {
                let now = first[key];
                assert!(
                    now >= *before,
                    "round {round}: {key:?} came back at {now}, below the {before} served before the kill\n{}",
                    d.log()
                );
                assert!(
                    now >= live[key],
                    "round {round}: {key:?} came back at {now}, below the live {} (energy lost)",
                    live[key]
                );
            }
            assert!(d.log().contains("did not stop cleanly"), "{}", d.log());
        }
        let run_for = Duration::from_millis(rng.random_range(2_000..=12_000));
        let end = Instant::now() + run_for;
        let mut served = first;
        let mut seen_live = live(&d);
        while Instant::now() < end {
            served = energy(&d.scrape());
            seen_live = live(&d);
            std::thread::sleep(Duration::from_millis(100));
        }
        common::signal(d.pid(), libc::SIGKILL);
        last_served = Some(served);
        last_live = Some(seen_live);
        drop(d);
    }
    let live = last_live.unwrap();
    assert!(
        live[&(
            "powermon_energy_reverse_joules_total".into(),
            "charger".into()
        )] > 1000.0
    );
    assert!(live[&("powermon_energy_joules_total".into(), "fridge".into())] > 1000.0);
}

/// With the default settings a fresh install has its totals on disk at once.
#[test]
fn a_fresh_install_saves_at_start() {
    let (dir, path) = config_file(HOUSE);
    let state = dir.path().join("state");
    let d = Daemon::start_with(&path, &state);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["version"], 2);
    assert!(saved["sensors"]["charger"].is_object(), "{saved}");
    let m = d.scrape();
    let persisted = m
        .value("powermon_state_last_persist_timestamp_seconds", &[])
        .unwrap();
    assert!(persisted > 1e9, "{persisted}");
    assert_eq!(
        m.value("powermon_state_persist_failures_total", &[]),
        Some(0.0)
    );
}

/// Exported energy moves at each save and holds still between them; a clean stop saves the
/// last samples, removes the live file, and the next start continues from there.
#[test]
fn exported_energy_follows_the_saves_and_a_clean_stop_keeps_everything() {
    let config = format!("[daemon]\npersist_interval = \"1s\"\n{HOUSE}");
    let (dir, path) = config_file(&config);
    let state = dir.path().join("state");
    let mut d = Daemon::start_with(&path, &state);
    let key = (
        "powermon_energy_joules_total".to_string(),
        "fridge".to_string(),
    );
    let first = d.scrape_until(Duration::from_secs(10), |m| energy(m)[&key] > 0.0);
    let persisted = |m: &common::Metrics| {
        m.value("powermon_state_last_persist_timestamp_seconds", &[])
            .unwrap()
    };
    let later = d.scrape_until(Duration::from_secs(10), |m| {
        persisted(m) > persisted(&first)
    });
    assert!(energy(&later)[&key] > energy(&first)[&key]);
    let live_dir = common::runtime_dir(&state);
    assert_eq!(std::fs::read_dir(&live_dir).unwrap().count(), 1);

    let before_stop = live(&d);
    let (status, _) = d.terminate();
    assert!(status.success());
    assert_eq!(
        std::fs::read_dir(&live_dir).unwrap().count(),
        0,
        "the live file outlived a clean stop"
    );
    let d2 = Daemon::start_with(&path, &state);
    let restored = energy(&d2.scrape());
    for (k, v) in &before_stop {
        assert!(restored[k] >= *v, "{k:?}: {} < {v}", restored[k]);
    }
    assert!(!d2.log().contains("did not stop cleanly"), "{}", d2.log());
}

/// A save's file is flushed before it replaces `state.json`, and the directory after: the
/// order that makes a save survive a power cut, checked on the system calls of the binary.
#[test]
fn a_save_is_flushed_renamed_then_the_directory_flushed() {
    let strace = std::process::Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "strace is not installed: apt-get install -y strace"
    );
    let config = format!("[daemon]\npersist_interval = \"1s\"\n{HOUSE}");
    let (dir, path) = config_file(&config);
    let state = dir.path().join("state");
    let trace = dir.path().join("trace");
    let mut child = std::process::Command::new("strace")
        .args([
            "-ff",
            "-qq",
            "-e",
            "trace=openat,write,fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg(common::BIN)
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env("STATE_DIRECTORY", &state)
        .env("RUNTIME_DIRECTORY", common::runtime_dir(&state))
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The start-up save and three periodic ones.
    std::thread::sleep(Duration::from_millis(3_500));
    let daemon = std::fs::read_to_string(format!("/proc/{}/task/{0}/children", child.id()))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .expect("the traced daemon");
    common::signal(daemon, libc::SIGTERM);
    let _ = child.wait();

    let state_dir = state.to_str().unwrap();
    let mut saves = 0;
    for entry in std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("trace.") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        saves += check_save_order(&text, state_dir);
    }
    assert!(saves >= 3, "{saves} saves traced");
}

/// The saves in one thread's trace, each checked: open the temporary file exclusively, write,
/// fsync it, rename it over state.json, open the directory, fsync it.
fn check_save_order(trace: &str, state_dir: &str) -> usize {
    // strace pads the result column; one space apart, lines compare as written here.
    let normalised: Vec<String> = trace
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let lines: Vec<&str> = normalised.iter().map(String::as_str).collect();
    let fd_of = |line: &str| {
        line.rsplit("= ")
            .next()
            .and_then(|r| r.trim().parse::<i32>().ok())
    };
    let mut saves = 0;
    for (i, line) in lines.iter().enumerate() {
        if !(line.starts_with("rename") && line.contains("/.state.json.")) {
            continue;
        }
        assert!(
            line.contains(&format!("\"{state_dir}/state.json\"")),
            "{line}"
        );
        assert!(line.ends_with("= 0"), "{line}");
        let open = lines[..i]
            .iter()
            .rposition(|l| l.starts_with("openat(") && l.contains("/.state.json."))
            .expect("the temporary file's open");
        assert!(lines[open].contains("O_EXCL"), "{}", lines[open]);
        let tmp_fd = fd_of(lines[open]).unwrap();
        let between = &lines[open + 1..i];
        let wrote = between
            .iter()
            .position(|l| l.starts_with(&format!("write({tmp_fd}, ")))
            .expect("a write of the temporary file");
        assert!(
            between[wrote..]
                .iter()
                .any(|l| *l == format!("fsync({tmp_fd}) = 0")),
            "no fsync of the temporary file before the rename:\n{}",
            between.join("\n")
        );
        let after = &lines[i + 1..];
        let dir_open = after
            .iter()
            .position(|l| l.starts_with("openat(") && l.contains(&format!("\"{state_dir}\"")))
            .expect("the directory's open after the rename");
        let dir_fd = fd_of(after[dir_open]).unwrap();
        assert!(
            after[dir_open..]
                .iter()
                .any(|l| *l == format!("fsync({dir_fd}) = 0")),
            "no fsync of the directory after the rename"
        );
        saves += 1;
    }
    saves
}

// ------------------------------------------------------------------------------------------
// A hostile or damaged state directory. Each case was found by trying it on 0.1.0.
// ------------------------------------------------------------------------------------------

const ONE: &str = r#"
[[sensor]]
name = "ac001"
driver = "simulated"
interval = "200ms"
[sensor.simulation]
load = { model = "constant", watts = 100.0 }

[[sensor]]
name = "fr003"
driver = "simulated"
interval = "200ms"
[sensor.simulation]
load = { model = "constant", watts = 10.0 }
"#;

/// Start on a prepared state directory; return the daemon and its first scrape.
fn start_on(prepare: impl FnOnce(&Path)) -> (tempfile::TempDir, Daemon, common::Metrics) {
    let (dir, path) = config_file(ONE);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    prepare(&state);
    let d = Daemon::start_with(&path, &state);
    let m = d.scrape();
    (dir, d, m)
}

fn set_aside(state: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    names.sort();
    names
}

#[test]
fn one_bad_entry_costs_only_its_own_sensor() {
    let (_dir, d, m) = start_on(|state| {
        std::fs::write(
            state.join("state.json"),
            r#"{"version": 1, "sensors": {"ac001": {"energy_joules": -5.0}, "fr003": {"energy_joules": 5000.0}}}"#,
        )
        .unwrap();
    });
    assert!(m.sensor("powermon_energy_joules_total", "fr003") >= 5000.0);
    assert!(m.sensor("powermon_energy_joules_total", "ac001") < 1000.0);
    assert_eq!(set_aside(&d.state_dir).len(), 1);
    assert!(d.log().contains("ac001"), "{}", d.log());
}

#[test]
fn duplicate_entries_are_not_restored_last_wins() {
    let (_dir, d, m) = start_on(|state| {
        std::fs::write(
            state.join("state.json"),
            r#"{"version": 1, "sensors": {"ac001": {"energy_joules": 90000.0}, "ac001": {"energy_joules": 5.0}, "fr003": {"energy_joules": 70.0}}}"#,
        )
        .unwrap();
    });
    let ac = m.sensor("powermon_energy_joules_total", "ac001");
    assert_eq!(ac, 0.0, "restored {ac}: one of two duplicates, silently");
    assert!(m.sensor("powermon_energy_joules_total", "fr003") >= 70.0);
    assert!(d.log().contains("appears 2 times"), "{}", d.log());
}

#[test]
fn an_absurd_total_is_refused_instead_of_freezing_the_counter() {
    let (_dir, _d, m) = start_on(|state| {
        std::fs::write(
            state.join("state.json"),
            r#"{"version": 1, "sensors": {"ac001": {"energy_joules": 1.797e308}}}"#,
        )
        .unwrap();
    });
    assert!(m.sensor("powermon_energy_joules_total", "ac001") < 1e15);
}

#[test]
fn a_fifo_at_state_json_does_not_hang_the_start() {
    let (_dir, d, _m) = start_on(|state| {
        let status = std::process::Command::new("mkfifo")
            .arg(state.join("state.json"))
            .status()
            .unwrap();
        assert!(status.success());
    });
    assert!(d.log().contains("not a regular file"), "{}", d.log());
}

#[test]
fn a_link_to_dev_zero_is_not_read() {
    let (_dir, d, m) = start_on(|state| {
        std::os::unix::fs::symlink("/dev/zero", state.join("state.json")).unwrap();
    });
    let rss = m.value("process_resident_memory_bytes", &[]).unwrap();
    assert!(rss < 50e6, "{rss} bytes resident");
    assert!(d.log().contains("symbolic link"), "{}", d.log());
}

#[test]
fn links_planted_in_the_state_directory_are_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let created = outside.path().join("created");
    let (victim2, created2) = (victim.clone(), created.clone());
    let (dir, path) = config_file(ONE);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::symlink(&victim2, state.join("state.json.tmp")).unwrap();
    std::os::unix::fs::symlink(&created2, state.join("state.lock")).unwrap();
    // A linked lock file is refused: the daemon says so and exits.
    let (status, _, stderr) = common::run(
        &[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("STATE_DIRECTORY", state.to_str().unwrap()),
            (
                "RUNTIME_DIRECTORY",
                common::runtime_dir(&state).to_str().unwrap(),
            ),
        ],
    );
    assert!(!status.success());
    assert!(stderr.contains("state.lock is a symbolic link"), "{stderr}");
    assert!(!created.exists(), "the lock's link target was created");
    // Without it, a save does not write through the link at the old temporary name.
    std::fs::remove_file(state.join("state.lock")).unwrap();
    let mut d = Daemon::start_with(&path, &state);
    d.terminate();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(std::fs::symlink_metadata(state.join("state.json"))
        .unwrap()
        .is_file());
}

#[test]
fn two_corrupt_files_in_one_second_are_both_kept() {
    let (dir, path) = config_file(ONE);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    for garbage in ["first garbage", "second garbage"] {
        std::fs::write(state.join("state.json"), garbage).unwrap();
        let (status, _, _) =
            common::run(&["check-config", "--config", path.to_str().unwrap()], &[]);
        assert!(status.success());
        let mut d = Daemon::start_with(&path, &state);
        d.terminate();
    }
    let kept: Vec<String> = set_aside(&state)
        .iter()
        .map(|n| std::fs::read_to_string(state.join(n)).unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.contains(&"first garbage".to_string()));
    assert!(kept.contains(&"second garbage".to_string()));
}

#[test]
fn a_state_file_of_a_newer_version_stops_the_start_instead_of_zeroing() {
    let (dir, path) = config_file(ONE);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let newer = r#"{"version": 3, "sensors": {"ac001": {"energy_joules": 5.0}}, "batteries": {}}"#;
    std::fs::write(state.join("state.json"), newer).unwrap();
    let (status, _, stderr) = common::run(
        &[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("STATE_DIRECTORY", state.to_str().unwrap()),
            (
                "RUNTIME_DIRECTORY",
                common::runtime_dir(&state).to_str().unwrap(),
            ),
        ],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("newer power-monitord"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(state.join("state.json")).unwrap(),
        newer
    );
}

/// A battery behind a sensor, charged by the sun at noon; its state starts at 50 %.
const BATTERY: &str = r#"
[daemon]
persist_interval = "2s"

[[sensor]]
name = "bank"
driver = "simulated"
bus = "house"
shunt_ohms = 0.0003
max_current_amps = 250.0
interval = "250ms"
[sensor.simulation]
chip = "ina226"
battery = { capacity_ah = 100.0, state_of_charge = 0.5, solar_peak_watts = 900.0, time_of_day = "12:00" }

[[sensor]]
name = "fridge"
driver = "simulated"
bus = "house"
address = 0x41
interval = "250ms"
[sensor.simulation]
from_battery = true
load = { model = "constant", watts = 60.0 }

[[battery]]
name = "house"
sensor = "bank"
capacity_ah = 100.0
initial_soc = 0.5
"#;

/// The battery's exported counters of a scrape: charge in, out, full charges.
fn battery_counters(m: &common::Metrics) -> [f64; 3] {
    let charge = |direction| {
        m.value(
            "powermon_battery_charge_coulombs_total",
            &[("battery", "house"), ("direction", direction)],
        )
        .expect("charge counter")
    };
    let fulls = m
        .value(
            "powermon_battery_full_charges_total",
            &[("battery", "house")],
        )
        .expect("full charges counter");
    [charge("in"), charge("out"), fulls]
}

/// The battery on `/api/readings`: state of charge, and charge in (coulombs) as of the last
/// sample.
fn battery_live(d: &Daemon) -> (f64, f64) {
    let json: serde_json::Value = serde_json::from_slice(&d.get("/api/readings").body).unwrap();
    let b = &json["batteries"][0];
    (
        b["state_of_charge"].as_f64().expect("a state of charge"),
        b["charge_in_ah"].as_f64().unwrap() * 3600.0,
    )
}

/// A battery monitor's counters never step back across `kill -9`, and its state of charge
/// continues from the last sample before the crash.
#[test]
fn kill_nine_keeps_the_battery_where_it_was() {
    let (dir, path) = config_file(BATTERY);
    let state = dir.path().join("state");
    let mut before: Option<([f64; 3], (f64, f64))> = None;
    for round in 0..4 {
        let d = Daemon::start_with(&path, &state);
        let counters = battery_counters(&d.scrape());
        let (soc, charged) = battery_live(&d);
        if let Some((served, (last_soc, last_charged))) = before {
            for (now, then) in counters.iter().zip(served) {
                assert!(*now >= then, "round {round}: {counters:?} after {served:?}");
            }
            // Nothing lost: the counter starts where the last sample before the kill left it.
            assert!(
                counters[0] >= last_charged,
                "round {round}: charge in exported {} below the {last_charged} counted before the kill",
                counters[0]
            );
            assert!(charged >= last_charged);
            // Charging at ~60 A into 100 Ah moves 0.02 % a second; a restart takes well under.
            assert!(
                (soc - last_soc).abs() < 0.002,
                "round {round}: state of charge {soc} after {last_soc} before the kill"
            );
        }
        let end = Instant::now() + Duration::from_secs(3);
        let mut served = counters;
        let mut last = (soc, charged);
        while Instant::now() < end {
            served = battery_counters(&d.scrape());
            last = battery_live(&d);
            std::thread::sleep(Duration::from_millis(100));
        }
        common::signal(d.pid(), libc::SIGKILL);
        before = Some((served, last));
        drop(d);
    }
    // The sun charged it the whole time.
    let (counters, (soc, _)) = before.unwrap();
    assert!(counters[0] > 100.0 && soc > 0.5, "{counters:?} {soc}");
}
