//! MQTT against a real Mosquitto on a free loopback port: Home Assistant discovery for every
//! sensor, states flowing, the retained `offline` of a killed daemon and its `online` after a
//! restart, a reconnect after the broker restarts, and password authentication.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_file, Daemon};
use serde_json::Value;

/// A Mosquitto broker on 127.0.0.1, stopped on drop.
struct Broker {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// A broker; with `users`, only they may connect (a password file made by mosquitto_passwd).
    fn start(users: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = format!("listener {port} 127.0.0.1\npersistence false\nlog_type error\n");
        if users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let passwords = dir.path().join("passwords");
            std::fs::write(&passwords, "").unwrap();
            for (user, password) in users {
                let ok = Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg(&passwords)
                    .args([user, password])
                    .status()
                    .expect("mosquitto_passwd (Debian's mosquitto package)");
                assert!(ok.success());
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwords.display()
            ));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut broker = Broker {
            child: None,
            port,
            conf: conf_path,
            _dir: dir,
        };
        broker.run();
        broker
    }

    fn run(&mut self) {
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            common::signal(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// What arrives on `topic` for `seconds` (retained messages first): (topic, payload) pairs.
    fn listen(
        &self,
        topic: &str,
        seconds: u32,
        auth: Option<(&str, &str)>,
    ) -> Vec<(String, String)> {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-v",
            "-t",
            topic,
        ])
        .args(["-W", &seconds.to_string()]);
        if let Some((user, password)) = auth {
            cmd.args(["-u", user, "-P", password]);
        }
        let out = cmd
            .output()
            .expect("mosquitto_sub (Debian's mosquitto-clients package)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect()
    }

    /// The retained message of `topic`, if any.
    fn retained(&self, topic: &str) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", topic])
            .args(["--retained-only", "-C", "1", "-W", "2"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!text.is_empty()).then_some(text)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mosquitto() -> &'static str {
    ["/usr/sbin/mosquitto", "mosquitto"]
        .into_iter()
        .find(|m| Path::new(m).exists() || Command::new(m).arg("-h").output().is_ok())
        .expect("mosquitto is not installed; it comes with Debian's `mosquitto` package")
}

/// The simulated house publishing to `broker` every second.
fn house(broker: &Broker, extra: &str) -> String {
    let house = common::simulated_house("2s");
    format!(
        "{house}\n[mqtt]\nbroker = \"{}\"\ninterval = \"1s\"\ntopic_prefix = \"pm/test\"\nclient_id = \"pm-test\"\n{extra}",
        broker.url()
    )
}

const SENSORS: [&str; 5] = ["ac001", "wm002", "fr003", "pi_5v", "battery"];

fn connected(d: &Daemon) -> Option<f64> {
    d.scrape().value("powermon_mqtt_connected", &[])
}

fn wait_connected(d: &Daemon, want: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while connected(d) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "powermon_mqtt_connected never {want}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn discovery_and_states_reach_the_broker() {
    let broker = Broker::start(&[]);
    // What 0.2.0 left retained: a flag per rule.
    let node = "pm_test";
    let retired = format!("homeassistant/binary_sensor/{node}/ac001_over_power/config");
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args([
            "-t",
            &retired,
            "-r",
            "-m",
            "{\"name\": \"ac001 over power\"}",
        ])
        .status()
        .unwrap();
    assert!(published.success());
    assert!(broker.retained(&retired).is_some());
    let d = Daemon::start(&house(&broker, ""));
    wait_connected(&d, 1.0, Duration::from_secs(10));
    let messages = broker.listen("#", 4, None);
    let configs: BTreeMap<String, Value> = messages
        .iter()
        .filter(|(t, _)| t.starts_with("homeassistant/") && t.ends_with("/config"))
        // Empty: the retired flag of a rule, emptied so Home Assistant drops it.
        .filter(|(_, p)| !p.is_empty() && p != "(null)")
        .map(|(t, p)| (t.clone(), serde_json::from_str(p).unwrap()))
        .collect();
    for sensor in SENSORS {
        for (component, key, class, state_class, unit) in [
            (
                "sensor",
                "power",
                Some("power"),
                Some("measurement"),
                Some("W"),
            ),
            (
                "sensor",
                "energy",
                Some("energy"),
                Some("total_increasing"),
                Some("kWh"),
            ),
            (
                "sensor",
                "voltage",
                Some("voltage"),
                Some("measurement"),
                Some("V"),
            ),
            (
                "sensor",
                "current",
                Some("current"),
                Some("measurement"),
                Some("A"),
            ),
            ("binary_sensor", "up", Some("connectivity"), None, None),
        ] {
            let topic = format!("homeassistant/{component}/{node}/{sensor}_{key}/config");
            let c = configs.get(&topic).unwrap_or_else(|| panic!("no {topic}"));
            assert_eq!(c["device_class"].as_str(), class, "{topic}");
            assert_eq!(c["state_class"].as_str(), state_class, "{topic}");
            assert_eq!(c["unit_of_measurement"].as_str(), unit, "{topic}");
            assert_eq!(c["unique_id"], format!("{node}_{sensor}_{key}"), "{topic}");
            assert_eq!(c["state_topic"], format!("pm/test/sensor/{sensor}/state"));
            assert_eq!(c["availability_topic"], "pm/test/availability");
            assert_eq!(c["device"]["identifiers"][0], node);
        }
    }
    // One problem flag per sensor with rules, the rules its attributes; and the battery's
    // state of charge.
    let problem = &configs[&format!("homeassistant/binary_sensor/{node}/ac001_problem/config")];
    assert_eq!(problem["device_class"], "problem");
    assert_eq!(
        problem["json_attributes_topic"],
        "pm/test/sensor/ac001/state"
    );
    // 0.2.0's flag per rule: emptied (an empty retained config removes the entity). The
    // listener may have got the old one, retained, before the daemon emptied it.
    assert_eq!(broker.retained(&retired), None);
    eprintln!("{} discovery configs", configs.len());
    let soc =
        &configs[&format!("homeassistant/sensor/{node}/battery_house_state_of_charge/config")];
    assert_eq!(
        (
            soc["device_class"].as_str(),
            soc["unit_of_measurement"].as_str()
        ),
        (Some("battery"), Some("%"))
    );
    // States flow, every second, for every sensor.
    for sensor in SENSORS {
        let topic = format!("pm/test/sensor/{sensor}/state");
        let states: Vec<Value> = messages
            .iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect();
        assert!(states.len() >= 2, "{topic}: {} states", states.len());
        let last = states.last().unwrap();
        assert_eq!(last["up"], "ON", "{last}");
        assert!(
            last["power"].is_number() && last["energy"].is_number(),
            "{last}"
        );
    }
    assert!(messages
        .iter()
        .any(|(t, _)| t == "pm/test/battery/house/state"));
    assert_eq!(
        broker.retained("pm/test/availability").as_deref(),
        Some("online")
    );
    let m = d.scrape();
    assert!(
        m.value("powermon_mqtt_messages_total", &[("result", "sent")])
            .unwrap()
            > 20.0
    );
}

/// The energy of the last state message on `topic` among `messages`.
fn last_energy(messages: &[(String, String)], sensor: &str) -> Option<f64> {
    let topic = format!("pm/test/sensor/{sensor}/state");
    messages
        .iter()
        .rev()
        .find(|(t, _)| *t == topic)
        .and_then(|(_, p)| serde_json::from_str::<Value>(p).ok())
        .and_then(|v| v["energy"].as_f64())
}

#[test]
fn a_killed_daemon_is_offline_and_a_restarted_one_online_with_its_energy() {
    let broker = Broker::start(&[]);
    let (dir, path) = config_file(&house(&broker, ""));
    let state = dir.path().join("state");
    let d = Daemon::start_with(&path, &state);
    wait_connected(&d, 1.0, Duration::from_secs(10));
    // A save or two, so the published energy has moved.
    std::thread::sleep(Duration::from_secs(6));
    let before = broker.listen("pm/test/sensor/+/state", 2, None);
    let energy_before = last_energy(&before, "fr003").unwrap();
    assert!(energy_before > 0.0);
    common::signal(d.pid(), libc::SIGKILL);
    drop(d);
    // The broker says so at once, and keeps saying it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.retained("pm/test/availability").as_deref() != Some("offline") {
        assert!(
            Instant::now() < deadline,
            "no retained offline after kill -9"
        );
    }
    let d = Daemon::start_with(&path, &state);
    wait_connected(&d, 1.0, Duration::from_secs(10));
    // Connected first, then the birth message: it reaches the broker a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.retained("pm/test/availability").as_deref() != Some("online") {
        assert!(
            Instant::now() < deadline,
            "no retained online after the restart"
        );
    }
    let after = broker.listen("pm/test/sensor/+/state", 2, None);
    let energy_after = last_energy(&after, "fr003").unwrap();
    assert!(
        energy_after >= energy_before,
        "{energy_after} after {energy_before}: the energy went back"
    );
    // A clean stop says offline too.
    common::signal(d.pid(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.retained("pm/test/availability").as_deref() != Some("offline") {
        assert!(Instant::now() < deadline, "no offline after SIGTERM");
    }
}

#[test]
fn the_daemon_rides_out_a_broker_restart() {
    let mut broker = Broker::start(&[]);
    let d = Daemon::start(&house(&broker, ""));
    wait_connected(&d, 1.0, Duration::from_secs(10));
    let samples = |d: &Daemon| d.scrape().sensor("powermon_samples_total", "fr003");
    broker.stop();
    wait_connected(&d, 0.0, Duration::from_secs(10));
    // Sampling and /metrics go on without the broker.
    let during = samples(&d);
    std::thread::sleep(Duration::from_secs(3));
    assert!(samples(&d) > during);
    assert_eq!(d.get("/healthz").status, 200);
    broker.run();
    wait_connected(&d, 1.0, Duration::from_secs(20));
    let messages = broker.listen("pm/test/#", 3, None);
    assert!(messages
        .iter()
        .any(|(t, _)| t == "pm/test/sensor/fr003/state"));
    let log = d.log();
    assert_eq!(
        log.matches("retrying every").count(),
        1,
        "one line per outage:\n{log}"
    );
    assert!(
        log.contains("connected to MQTT broker") && log.contains("again"),
        "{log}"
    );
}

#[test]
fn a_broker_with_passwords_lets_in_only_the_right_one() {
    let broker = Broker::start(&[("pm", "s3cret pass")]);
    for (password, expect) in [("s3cret pass", 1.0), ("wrong", 0.0)] {
        let (dir, path) = config_file(&house(
            &broker,
            "username = \"pm\"\npassword_file = \"mqtt-password\"\n",
        ));
        let file = dir.path().join("mqtt-password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let d = Daemon::start_with(&path, &dir.path().join("state"));
        if expect == 1.0 {
            wait_connected(&d, 1.0, Duration::from_secs(10));
            let states = broker.listen("pm/test/sensor/+/state", 2, Some(("pm", "s3cret pass")));
            assert!(!states.is_empty());
        } else {
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(connected(&d), Some(0.0));
            let log = d.log();
            assert_eq!(log.matches("retrying every").count(), 1, "{log}");
        }
    }
}

#[test]
fn passwords_stay_out_of_the_configuration_and_private() {
    let (dir, path) = config_file(
        "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1\"\nusername = \"pm\"\npassword = \"hunter2\"\n",
    );
    let (status, _, stderr) =
        common::run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(":7:")
            && stderr.contains("mqtt.password")
            && stderr.contains("password_file"),
        "{stderr}"
    );
    let open = dir.path().join("open");
    std::fs::write(&open, "hunter2\n").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        &path,
        "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1\"\nusername = \"pm\"\npassword_file = \"open\"\n",
    )
    .unwrap();
    let (status, _, stderr) = common::run(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("mqtt.password_file") && stderr.contains("readable by everyone"),
        "{stderr}"
    );
    std::fs::write(
        &path,
        "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[mqtt]\nbroker = \"tcp://x\"\n",
    )
    .unwrap();
    let (status, _, stderr) =
        common::run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("mqtt.broker") && stderr.contains("expected mqtt://HOST"),
        "{stderr}"
    );
}

#[test]
fn a_reload_starts_and_stops_publishing() {
    let broker = Broker::start(&[]);
    let without = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/simulated.toml"
    ))
    .unwrap();
    let (dir, path) = config_file(&without);
    let d = Daemon::start_with(&path, &dir.path().join("state"));
    assert_eq!(connected(&d), None, "no MQTT metrics without [mqtt]");
    std::fs::write(&path, house(&broker, "")).unwrap();
    common::signal(d.pid(), libc::SIGHUP);
    wait_connected(&d, 1.0, Duration::from_secs(10));
    std::fs::write(&path, &without).unwrap();
    common::signal(d.pid(), libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.retained("pm/test/availability").as_deref() != Some("offline") {
        assert!(
            Instant::now() < deadline,
            "no offline after MQTT was removed by a reload"
        );
    }
}
