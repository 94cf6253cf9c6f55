//! The checks of `[[battery]]` and of the simulated battery, each naming line and key.

use std::path::Path;

use super::*;

fn rejects(text: &str, line: usize, key: &str, needle: &str) {
    let err =
        Config::from_toml(Path::new("test.toml"), text).expect_err("config should be rejected");
    let d = err.diagnostic().expect("a diagnostic");
    let shown = d.to_string();
    assert_eq!((d.line, d.key.as_str()), (line, key), "{shown}");
    assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
}

const SENSOR: &str = "[[sensor]]\nname = \"bank\"\ndriver = \"simulated\"\n";

fn battery(keys: &str) -> String {
    format!(
        "{SENSOR}\n[[battery]]\nname = \"house\"\nsensor = \"bank\"\ncapacity_ah = 100.0\n{keys}"
    )
}

#[test]
fn a_battery_is_attached_to_its_sensor_with_chemistry_defaults() {
    let c = Config::from_toml(
        Path::new("t.toml"),
        &battery("chemistry = \"lead_acid\"\nnominal_volts = 24.0\n"),
    )
    .unwrap();
    let b = c.sensors[0].battery.as_ref().expect("attached");
    assert_eq!(b.name, "house");
    assert!((b.charged_voltage() - 26.4).abs() < 1e-9);
    assert_eq!(
        (
            b.peukert_exponent(),
            b.charge_efficiency(),
            b.discharge_floor_ratio()
        ),
        (1.25, 0.85, 0.5)
    );
    assert!((b.tail_current_amps() - 4.0).abs() < 1e-9);
    let lifepo4 = Config::from_toml(Path::new("t.toml"), &battery("")).unwrap();
    let b = &lifepo4.batteries[0];
    assert_eq!(
        (
            b.charged_voltage(),
            b.peukert_exponent(),
            b.discharge_floor_ratio()
        ),
        (14.0, 1.05, 0.1)
    );
}

#[test]
fn a_battery_on_an_unknown_sensor_is_located() {
    rejects(
        &format!(
            "{SENSOR}\n[[battery]]\nname = \"house\"\nsensor = \"bnak\"\ncapacity_ah = 100.0\n"
        ),
        7,
        "battery[0].sensor",
        "no [[sensor]] is named \"bnak\"; expected one of bank",
    );
}

#[test]
fn a_capacity_of_zero_is_located() {
    rejects(
        &format!("{SENSOR}\n[[battery]]\nname = \"house\"\nsensor = \"bank\"\ncapacity_ah = 0.0\n"),
        8,
        "battery[0].capacity_ah",
        "0 is out of range",
    );
}

#[test]
fn two_batteries_on_one_shunt_and_twice_one_name_are_refused() {
    let second = "\n[[battery]]\nname = \"van\"\nsensor = \"bank\"\ncapacity_ah = 50.0\n";
    rejects(
        &(battery("") + second),
        12,
        "battery[1].sensor",
        "already measures battery[0]",
    );
    let twice = "\n[[battery]]\nname = \"house\"\nsensor = \"other\"\ncapacity_ah = 50.0\n";
    rejects(
        &(battery("") + twice),
        11,
        "battery[1].name",
        "already used by battery[0]",
    );
}

#[test]
fn bad_monitor_settings_are_located() {
    rejects(
        &battery("peukert_exponent = 2.0\n"),
        9,
        "battery[0].peukert_exponent",
        "expected 1 to 1.5",
    );
    rejects(
        &battery("initial_soc = \"guess\"\n"),
        9,
        "battery[0].initial_soc",
        "expected \"unknown\", \"voltage\" or a fraction",
    );
    rejects(
        &battery("initial_soc = 1.5\n"),
        9,
        "battery[0].initial_soc",
        "1.5: expected",
    );
    rejects(
        &battery("current_threshold_amps = 5.0\n"),
        5,
        "battery[0].tail_current_ratio",
        "not above current_threshold_amps",
    );
    rejects(
        &battery("[battery.anomaly]\nmin_state_of_charge = 1.2\n"),
        10,
        "battery[0].anomaly.min_state_of_charge",
        "out of range",
    );
    rejects(
        &battery("[battery.anomaly]\nfull_charge_within = \"10m\"\n"),
        10,
        "battery[0].anomaly.full_charge_within",
        "expected 3600 s",
    );
}

#[test]
fn a_simulated_battery_and_its_loads_are_checked() {
    let house = "[[sensor]]\nname = \"bank\"\ndriver = \"simulated\"\nbus = \"h\"\n[sensor.simulation]\nbattery = { capacity_ah = 100.0 }\n";
    let load = "[[sensor]]\nname = \"fridge\"\ndriver = \"simulated\"\nbus = \"h\"\naddress = 0x41\n[sensor.simulation]\nfrom_battery = true\n";
    assert!(Config::from_toml(Path::new("t.toml"), &format!("{house}\n{load}")).is_ok());
    rejects(
        &format!("{house}\n{load}supply_volts = 12.0\n"),
        15,
        "sensor[1].simulation.supply_volts",
        "the battery's terminal voltage is the supply here",
    );
    rejects(
        &format!("{house}load = {{ model = \"constant\", watts = 5.0 }}\n"),
        7,
        "sensor[0].simulation.load",
        "expected no load here",
    );
    rejects(
        &load.replace("address = 0x41\n", ""),
        6,
        "sensor[0].simulation.from_battery",
        "no sensor on bus h simulates a battery",
    );
    rejects(
        "[[sensor]]\nname = \"bank\"\ndriver = \"simulated\"\n[sensor.simulation]\nbattery = { capacity_ah = 100.0, nominal_volts = 48.0 }\n",
        5,
        "sensor[0].simulation.battery.absorption_volts",
        "beyond what the chip's bus input reads",
    );
}
