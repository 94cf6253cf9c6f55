//! What the benches share: configurations of any number of simulated sensors.

#![allow(dead_code)]

use std::fmt::Write;
use std::path::Path;

use power_monitord::config::Config;

/// `n` simulated INA219s on one virtual bus, each with the over-power, energy-budget, spike and
/// bus-voltage rules, and two labels: the shape of a real node's configuration.
pub fn sensors_toml(n: usize) -> String {
    let mut text = String::from("[daemon]\nlisten = \"127.0.0.1:0\"\n");
    for i in 0..n {
        let _ = write!(
            text,
            r#"
[[sensor]]
name = "s{i:02}"
driver = "simulated"
bus = "virtual-{bus}"
address = {address:#04x}
shunt_ohms = 0.1
max_current_amps = 3.2
interval = "1s"
labels = {{ room = "room {i}", appliance = "load {i}" }}

[sensor.simulation]
load = {{ model = "uniform", min_watts = 5.0, max_watts = 30.0 }}
noise = 0.01

[sensor.anomaly]
max_power_watts = 25.0
max_power_for = "10s"
energy_budget = {{ kwh = 1.0, window = "24h" }}
spike_sigma = 4.0
allowed_bus_volts = [11.0, 14.6]
"#,
            bus = i / 16,
            address = 0x40 + i % 16,
        );
    }
    text
}

/// [`sensors_toml`] parsed and checked.
pub fn sensors(n: usize) -> Config {
    Config::from_toml(Path::new("bench.toml"), &sensors_toml(n)).expect("a valid configuration")
}
