//! The loader's tests: defaults, the design example, and one bad file per mistake, each
//! located at its line and key.

use std::path::Path;
use std::time::Duration;

use super::chip::ShuntRange;
use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("test.toml"), text)
}

/// Asserts the config is rejected at `line` for `key`, with `needle` in the message.
#[track_caller]
fn rejects(text: &str, line: usize, key: &str, needle: &str) {
    let err = load(text).expect_err("config should be rejected");
    let d = err.diagnostic().expect("a diagnostic");
    let shown = d.to_string();
    assert_eq!(d.line, line, "wrong line in:\n{shown}");
    assert_eq!(d.key, key, "wrong key in:\n{shown}");
    assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
    assert!(shown.starts_with(&format!("test.toml:{line}:")), "{shown}");
    assert!(
        shown.contains(&format!("key `{key}`")) || key.is_empty(),
        "{shown}"
    );
}

const MINIMAL: &str = "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n";

#[test]
fn a_bare_simulated_sensor_is_valid_with_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.daemon.listen, vec!["0.0.0.0:9723".parse().unwrap()]);
    assert_eq!(c.daemon.persist_interval, Duration::from_secs(30));
    let s = &c.sensors[0];
    assert_eq!(s.bus, "virtual:a");
    assert_eq!(s.address, 0x40);
    assert_eq!(s.interval, Duration::from_secs(1));
    assert_eq!(s.max_gap(), Duration::from_secs(5));
    assert!(s.anomaly.max_power_watts.is_none());
    let sim = s.simulation().unwrap();
    assert!(matches!(sim.load, Some(LoadModel::Uniform { .. })));
}

#[test]
fn the_design_example_parses() {
    let c = load(
        r#"
[daemon]
listen = ["127.0.0.1:9723", "[::1]:9723"]
persist_interval = "30s"
log_level = "debug"

[[sensor]]
name = "battery"
driver = "ina219"
bus = "/dev/i2c-1"
address = 0x40
shunt_ohms = 0.1
max_current_amps = 3.2
bus_voltage_range = 32
adc = { bits = 12, samples = 16 }
interval = "1s"
labels = { room = "garage", circuit = "solar" }
[sensor.anomaly]
max_power_watts = 40.0
max_power_for = "30s"
energy_budget = { kwh = 12.0, window = "24h" }
spike_sigma = 4.0
allowed_bus_volts = [11.0, 14.6]
"#,
    )
    .unwrap();
    assert_eq!(c.daemon.listen.len(), 2);
    assert_eq!(c.daemon.log_level, LogLevel::Debug);
    let s = &c.sensors[0];
    assert_eq!(s.conversion_time(), Duration::from_micros(17_020));
    assert_eq!(ina219_setup(s).shunt_range, ShuntRange::Mv320);
    assert_eq!(s.labels["circuit"], "solar");
    assert_eq!(
        s.anomaly.energy_budget.unwrap().window,
        Duration::from_secs(86_400)
    );
    assert!(s.simulation().is_none());
}

fn ina219_setup(s: &SensorConfig) -> Ina219Setup {
    match s.setup() {
        ChipSetup::Ina219(setup) => *setup,
        other => panic!("not an INA219: {other:?}"),
    }
}

#[test]
fn pga_range_follows_the_shunt() {
    let c = load("[[sensor]]\nname = \"a\"\nshunt_ohms = 0.000375\nmax_current_amps = 200.0\n")
        .unwrap();
    // 200 A × 0.375 mΩ = 75 mV → the ±80 mV range.
    assert_eq!(ina219_setup(&c.sensors[0]).shunt_range, ShuntRange::Mv80);
}

// Twelve and more distinct bad files, each naming line and key.

#[test]
fn rejects_unknown_key() {
    rejects(
        "[[sensor]]\nname = \"a\"\nshunt_ohm = 0.1\n",
        3,
        "sensor[0].shunt_ohm",
        "unknown key `shunt_ohm`",
    );
}

#[test]
fn rejects_unknown_daemon_key() {
    rejects(
        "[daemon]\nport = 9100\n[[sensor]]\nname = \"a\"\n",
        2,
        "daemon.port",
        "unknown key `port`",
    );
}

#[test]
fn rejects_missing_name() {
    rejects(
        "[[sensor]]\ndriver = \"simulated\"\n",
        1,
        "sensor[0].name",
        "required key `name` is missing",
    );
}

#[test]
fn rejects_bad_duration() {
    rejects(
        "[[sensor]]\nname = \"a\"\ninterval = \"1x\"\n",
        3,
        "sensor[0].interval",
        "unknown time unit",
    );
}

#[test]
fn rejects_wrong_type() {
    rejects(
        "[[sensor]]\nname = \"a\"\nshunt_ohms = \"0.1\"\n",
        3,
        "sensor[0].shunt_ohms",
        "expected a number",
    );
}

#[test]
fn rejects_unknown_driver() {
    rejects(
        "[[sensor]]\nname = \"a\"\ndriver = \"ina228\"\n",
        3,
        "sensor[0].driver",
        "ina219",
    );
}

#[test]
fn rejects_duplicate_names() {
    rejects(
        "[[sensor]]\nname = \"a\"\naddress = 0x40\n\n[[sensor]]\nname = \"a\"\naddress = 0x41\n",
        6,
        "sensor[1].name",
        "already used by sensor[0]",
    );
}

#[test]
fn rejects_duplicate_address_on_one_bus() {
    rejects(
        "[[sensor]]\nname = \"a\"\naddress = 0x41\n[[sensor]]\nname = \"b\"\naddress = 0x41\n",
        6,
        "sensor[1].address",
        "0x41 on bus /dev/i2c-1 is already used",
    );
}

#[test]
fn same_address_on_two_buses_is_fine() {
    load("[[sensor]]\nname = \"a\"\n[[sensor]]\nname = \"b\"\nbus = \"/dev/i2c-3\"\n").unwrap();
}

#[test]
fn rejects_address_out_of_range() {
    rejects(
        "[[sensor]]\nname = \"a\"\naddress = 0x50\n",
        3,
        "sensor[0].address",
        "expected 0x40 to 0x4F",
    );
}

#[test]
fn rejects_zero_shunt() {
    rejects(
        "[[sensor]]\nname = \"a\"\nshunt_ohms = 0.0\n",
        3,
        "sensor[0].shunt_ohms",
        "expected a positive number of ohms",
    );
}

#[test]
fn rejects_current_beyond_the_shunt_range() {
    rejects(
        "[[sensor]]\nname = \"a\"\nshunt_ohms = 0.1\nmax_current_amps = 5.0\n",
        4,
        "sensor[0].max_current_amps",
        "beyond the INA219's ±320 mV",
    );
}

#[test]
fn rejects_interval_shorter_than_conversion() {
    rejects(
        "[[sensor]]\nname = \"a\"\nadc = { bits = 12, samples = 128 }\ninterval = \"100ms\"\n",
        4,
        "sensor[0].interval",
        "shorter than one conversion with this ADC setting (136ms 200us)",
    );
}

#[test]
fn rejects_averaging_below_twelve_bits() {
    rejects(
        "[[sensor]]\nname = \"a\"\nadc = { bits = 10, samples = 4 }\n",
        3,
        "sensor[0].adc",
        "not an ADC mode",
    );
}

#[test]
fn rejects_bad_bus_range() {
    rejects(
        "[[sensor]]\nname = \"a\"\nbus_voltage_range = 24\n",
        3,
        "sensor[0].bus_voltage_range",
        "expected 16 or 32",
    );
}

#[test]
fn rejects_bad_sensor_name() {
    rejects(
        "[[sensor]]\nname = \"Fridge-1\"\n",
        2,
        "sensor[0].name",
        "a-z, 0-9 and _",
    );
}

#[test]
fn rejects_inverted_voltage_band() {
    rejects(
        "[[sensor]]\nname = \"a\"\n[sensor.anomaly]\nallowed_bus_volts = [14.6, 11.0]\n",
        4,
        "sensor[0].anomaly.allowed_bus_volts",
        "0 <= low < high",
    );
}

#[test]
fn rejects_voltage_band_beyond_the_bus_range() {
    rejects(
        "[[sensor]]\nname = \"a\"\nbus_voltage_range = 16\n[sensor.anomaly]\nallowed_bus_volts = [11.0, 20.0]\n",
        5,
        "sensor[0].anomaly.allowed_bus_volts",
        "over_voltage could never trip",
    );
}

#[test]
fn rejects_a_budget_window_that_makes_no_sense() {
    rejects(
        "[[sensor]]\nname = \"a\"\n[sensor.anomaly]\nenergy_budget = { kwh = 12.0, window = \"5s\" }\n",
        4,
        "sensor[0].anomaly.energy_budget.window",
        "at least 1m",
    );
}

#[test]
fn rejects_max_power_for_without_a_limit() {
    rejects(
        "[[sensor]]\nname = \"a\"\n[sensor.anomaly]\nmax_power_for = \"10s\"\n",
        4,
        "sensor[0].anomaly.max_power_for",
        "needs max_power_watts",
    );
}

#[test]
fn rejects_simulation_on_real_hardware() {
    rejects(
        "[[sensor]]\nname = \"a\"\n[sensor.simulation]\nnoise = 0.01\n",
        3,
        "sensor[0].simulation",
        "applies only to driver = \"simulated\"",
    );
}

#[test]
fn rejects_unknown_load_model() {
    let err = load("[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[sensor.simulation]\nload = { model = \"heater\" }\n")
        .unwrap_err();
    let d = err.diagnostic().unwrap();
    assert_eq!(d.line, 5);
    assert_eq!(d.key, "sensor[0].simulation.load.model");
    assert!(d.message.contains("heater"), "{d}");
}

#[test]
fn rejects_bad_fault_rate() {
    rejects(
        "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[sensor.simulation]\nfaults = [\n  { kind = \"nack\", rate = 2.0 },\n]\n",
        6,
        "sensor[0].simulation.faults[0].rate",
        "expected 0 to 1",
    );
}

#[test]
fn rejects_a_persist_interval_beyond_an_hour() {
    rejects(
        "[daemon]\npersist_interval = \"18446744073709551615s\"\n[[sensor]]\nname = \"a\"\n",
        2,
        "daemon.persist_interval",
        "longer than a year",
    );
}

#[test]
fn rejects_bad_listen_address() {
    rejects(
        "[daemon]\nlisten = \"localhost\"\n[[sensor]]\nname = \"a\"\n",
        2,
        "daemon.listen",
        "expected IP:PORT",
    );
}

#[test]
fn rejects_reserved_label() {
    rejects(
        "[[sensor]]\nname = \"a\"\nlabels = { sensor = \"x\" }\n",
        3,
        "sensor[0].labels.sensor",
        "set by power-monitord itself",
    );
}

#[test]
fn rejects_mixed_bus() {
    rejects(
        "[[sensor]]\nname = \"a\"\nbus = \"/dev/i2c-1\"\n[[sensor]]\nname = \"b\"\ndriver = \"simulated\"\nbus = \"/dev/i2c-1\"\naddress = 0x41\n",
        7,
        "sensor[1].bus",
        "a bus is either real or simulated",
    );
}

#[test]
fn rejects_no_sensors() {
    rejects(
        "[daemon]\nlog_level = \"info\"\n",
        1,
        "sensor",
        "no [[sensor]] is configured",
    );
}

#[test]
fn rejects_syntax_error_naming_the_key() {
    rejects(
        "[[sensor]]\nname = \"a\"\ninterval = 1s\n",
        3,
        "interval",
        "TOML syntax error",
    );
}

#[test]
fn diagnostic_points_at_the_value() {
    let err = load("[[sensor]]\nname = \"a\"\naddress   = 0x50\n").unwrap_err();
    let d = err.diagnostic().unwrap();
    assert_eq!((d.line, d.column), (3, 13));
    assert!(d.to_string().ends_with("  |             ^^^^"), "{d}");
}

mod generated {
    use super::*;
    use proptest::prelude::*;

    /// Lines a config file is made of, good and bad, for the generator to combine.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("[[sensor]]".to_string()),
            Just("[daemon]".to_string()),
            Just("[sensor.anomaly]".to_string()),
            Just("[sensor.simulation]".to_string()),
            "[a-z_]{1,20}".prop_map(|k| format!("{k} = 1")),
            (
                prop::sample::select(vec![
                    "name",
                    "driver",
                    "bus",
                    "address",
                    "shunt_ohms",
                    "max_current_amps",
                    "shunt_range_mv",
                    "bus_voltage_range",
                    "interval",
                    "max_gap",
                    "labels",
                    "listen",
                    "persist_interval",
                    "log_level",
                    "max_power_watts",
                    "energy_budget",
                    "allowed_bus_volts",
                    "load",
                    "faults",
                    "adc",
                ]),
                prop::sample::select(vec![
                    "\"a\"",
                    "\"simulated\"",
                    "0x40",
                    "0x99",
                    "-1",
                    "0",
                    "1e400",
                    "3.2",
                    "\"1s\"",
                    "\"18446744073709551615s\"",
                    "\"0s\"",
                    "[1, 2]",
                    "[]",
                    "{}",
                    "{ bits = 9, samples = 128 }",
                    "{ kwh = 1.0, window = \"1m\" }",
                    "\"\\u0000\"",
                    "nan",
                    "inf",
                    "\"virtual:x\"",
                    "{ model = \"fridge\" }",
                    "[{ kind = \"nack\", rate = 2.0 }]",
                    "\"127.0.0.1:0\"",
                    "true",
                ]),
            )
                .prop_map(|(k, v)| format!("{k} = {v}")),
            "[ -~]{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever the file holds: a configuration or a located error, never a panic.
        #[test]
        fn any_file_loads_or_is_located(lines in prop::collection::vec(line(), 0..24)) {
            let text = lines.join("\n");
            match load(&text) {
                Ok(config) => prop_assert!(!config.sensors.is_empty()),
                Err(e) => {
                    let d = e.diagnostic().expect("read from text: always a diagnostic");
                    prop_assert!(d.line >= 1 && d.to_string().starts_with("test.toml:"));
                }
            }
        }

        /// Arbitrary bytes as text, too.
        #[test]
        fn any_text_loads_or_is_located(text in "\\PC{0,300}") {
            let _ = load(&text);
        }
    }
}

#[test]
fn rejects_implausible_shunts_currents_and_durations() {
    rejects(
        "[[sensor]]\nname = \"a\"\nshunt_ohms = 1e-300\n",
        3,
        "sensor[0].shunt_ohms",
        "from 0.00001 (10 µΩ) to 1000",
    );
    rejects(
        "[[sensor]]\nname = \"a\"\ndriver = \"ina226\"\nshunt_ohms = 0.00001\nmax_current_amps = 1e300\n",
        5,
        "sensor[0].max_current_amps",
        "at most 10000",
    );
    rejects(
        "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[sensor.simulation]\nfaults = [\n  { kind = \"nack\", rate = 0.5, duration = \"18446744073709551615s\" },\n]\n",
        5,
        "sensor[0].simulation.faults[0]",
        "longer than a year",
    );
}

#[test]
fn an_address_out_of_a_byte_names_the_chips_range_in_hex() {
    rejects(
        "[[sensor]]\nname = \"a\"\naddress = 300\n",
        3,
        "sensor[0].address",
        "expected the chip's I2C address, 0x40 to 0x4F",
    );
}

const PUSH: &str = "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n\n[[remote_write]]\n";

#[test]
fn remote_write_defaults_follow_prometheus() {
    let c = load(&format!(
        "{PUSH}url = \"https://m.example.org/api/v1/write\"\n"
    ))
    .unwrap();
    let rw = &c.remote_write[0];
    assert_eq!(rw.name, "m.example.org");
    assert_eq!(rw.interval, Duration::from_secs(15));
    assert_eq!(rw.max_spool_bytes, 64 << 20);
    assert!(rw.wait_for_clock_sync);
    let labels: Vec<&str> = rw.external_labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(labels, ["instance", "job"]);
}

#[test]
fn remote_write_mistakes_are_located() {
    let url = "url = \"https://m.example.org/api/v1/write\"\n";
    rejects(
        &format!("{PUSH}url = \"ftp://m\"\n"),
        6,
        "remote_write[0].url",
        "expected http://",
    );
    rejects(
        &format!("{PUSH}url = \"https://cabin:secret@m.example.org/api/v1/write\"\n"),
        6,
        "remote_write[0].url",
        "credentials in the URL are refused",
    );
    rejects(
        &format!("{PUSH}{url}remote_timeout = \"0s\"\n"),
        7,
        "remote_write[0].remote_timeout",
        "expected 100ms to 10m",
    );
    rejects(
        &format!("{PUSH}{url}basic_auth = {{ username = \"u\", password = \"p\" }}\n"),
        7,
        "remote_write[0].basic_auth.password",
        "put it in a file",
    );
    rejects(
        &format!("{PUSH}{url}queue_config = {{ max_spool_mib = 0 }}\n"),
        7,
        "remote_write[0].queue_config.max_spool_mib",
        "expected 1 to 4096 MiB",
    );
    rejects(
        &format!("{PUSH}{url}headers = {{ \"Content-Encoding\" = \"gzip\" }}\n"),
        7,
        "remote_write[0].headers.Content-Encoding",
        "",
    );
}
