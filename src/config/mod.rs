//! The configuration file: its types, its defaults and every check made before the daemon
//! touches a bus or binds a port.
//!
//! Loading happens in three steps, each of which reports file, line, column and key:
//! 1. TOML syntax (`toml`'s parser, with its own spans);
//! 2. shape and types (`serde`, `deny_unknown_fields`, typed values such as [`ShuntRange`]
//!    that cannot hold what the chip does not have; the key path from `serde_path_to_error`):
//!    the file's form ([`SensorFile`], [`MqttFile`], …);
//! 3. checks: each section checks itself and is turned into its checked form
//!    ([`SensorFile::check`] gives a [`SensorConfig`], [`MqttFile::check`] an [`MqttConfig`]),
//!    and `Config::check` adds what spans sections. A check names a key path; it is located
//!    in the document afterwards ([`diagnostic::locate`]).
//!
//! # Layout
//! - [`daemon`] — `[daemon]`;
//! - [`sensor`] — `[[sensor]]`;
//! - [`chip`] — the chips, their typed settings, what each is programmed with;
//! - [`anomaly`] — `[sensor.anomaly]`;
//! - [`calibration`] — `[sensor.calibration]`: trims against a reference meter;
//! - [`simulation`] — `[sensor.simulation]`: load models and faults; [`house`] — its
//!   `battery = { … }`, the simulated house's battery;
//! - [`battery`] — `[[battery]]`: battery monitors;
//! - [`mqtt`] — `[mqtt]`;
//! - [`remote_write`] — `[[remote_write]]`;
//! - [`values`] — serde helpers for durations and addresses, names;
//! - [`diagnostic`] — located errors.

pub(crate) mod anomaly;
pub(crate) mod battery;
#[cfg(test)]
mod battery_tests;
pub mod calibration;
pub(crate) mod chip;
pub(crate) mod daemon;
pub(crate) mod diagnostic;
pub mod house;
pub(crate) mod mqtt;
pub(crate) mod remote_write;
pub(crate) mod sensor;
pub(crate) mod simulation;
#[cfg(test)]
mod tests;
pub(crate) mod values;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::DeTable;

pub(crate) use self::anomaly::AnomalyConfig;
pub(crate) use self::battery::{BatteryConfig, ChargingCurrent, Chemistry, InitialSoc};
pub(crate) use self::chip::{
    Averaging, Channel, Chip, ChipSetup, ConversionTime, Ina219Setup, Ina226Setup,
};
pub use self::daemon::{DaemonConfig, LogLevel};
use self::diagnostic::{invalid, locate, Check, Invalid, KeyPath};
pub use self::diagnostic::{ConfigError, Diagnostic};
pub(crate) use self::mqtt::{MqttConfig, MqttFile, Qos};
pub use self::sensor::{Driver, SensorConfig, SensorFile, ADDRESS_RANGE};
pub(crate) use self::simulation::{FaultConfig, LoadModel, SimulatedBattery, SimulationConfig};

/// Where the daemon looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/power-monitord/config.toml";
/// The default scrape port (see docs/metrics.md, "Port").
pub(crate) const DEFAULT_PORT: u16 = 9723;
/// Where energy totals live unless `$STATE_DIRECTORY` or `daemon.state_dir` say otherwise.
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/power-monitord";
/// The most sensors one daemon samples: each bus is a thread, each sensor a few dozen series.
pub(crate) const MAX_SENSORS: usize = 256;
/// A config file larger than this is not one.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// A loaded and checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from (used in messages).
    pub(crate) path: PathBuf,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// Every `[[sensor]]`, in file order (each with its battery attached).
    pub sensors: Vec<SensorConfig>,
    /// Every `[[battery]]`, in file order.
    pub(crate) batteries: Vec<BatteryConfig>,
    /// `[mqtt]`, if MQTT is wanted.
    pub(crate) mqtt: Option<MqttConfig>,
    /// Every `[[remote_write]]`.
    pub(crate) remote_write: Vec<remote_write::RemoteWriteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    daemon: DaemonConfig,
    #[serde(default, rename = "sensor")]
    sensors: Vec<SensorFile>,
    #[serde(default, rename = "battery")]
    batteries: Vec<BatteryConfig>,
    #[serde(default)]
    mqtt: Option<MqttFile>,
    #[serde(default)]
    remote_write: Vec<remote_write::RemoteWriteFile>,
}

impl Config {
    /// Read, parse and check a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            crate::files::read_text(path, MAX_FILE_BYTES).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Config::from_toml(path, &text)
    }

    /// Parse and check config text; `path` only names the file in messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let located = |span: std::ops::Range<usize>, key: String, message: String| {
            ConfigError::Invalid(Box::new(Diagnostic::new(path, text, span, key, message)))
        };

        let doc = DeTable::parse(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = diagnostic::key_on_line(text, span.start);
            located(span, key, format!("TOML syntax error: {}", e.message()))
        })?;

        let deserializer = toml::Deserializer::parse(text).map_err(|e| {
            located(
                e.span().unwrap_or(0..0),
                String::new(),
                e.message().to_string(),
            )
        })?;
        let file: FileConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let mut key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // serde names the offending field in the message, not in the path.
            if let Some(field) = diagnostic::quoted_after(&message, "missing field `") {
                key = if key == "." || key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
            }
            if key == "." {
                key.clear();
            }
            let span = inner
                .span()
                .unwrap_or_else(|| locate(&doc, &KeyPath::parse(&key)));
            let message = sensor::explain_address(&key, &message)
                .unwrap_or_else(|| diagnostic::explain_serde_message(&message));
            located(span, key, message)
        })?;

        Config::check(path, file).map_err(|Invalid { key, message }| {
            located(locate(&doc, &key), key.to_string(), message)
        })
    }

    /// Every section's checks, then what spans sensors (unique names, one chip per address
    /// on a bus, a bus either real or simulated) and batteries: the checked configuration.
    fn check(path: &Path, file: FileConfig) -> Result<Config, Invalid> {
        file.daemon.check().map_err(|e| e.within("daemon"))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mqtt = match file.mqtt {
            Some(mqtt) => Some(mqtt.check(&base).map_err(|e| e.within("mqtt"))?),
            None => None,
        };
        let remote_write = file
            .remote_write
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.check(&base)
                    .map_err(|e| e.within(&format!("remote_write[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(i) = (1..remote_write.len()).find(|&i| {
            remote_write[..i]
                .iter()
                .any(|r| r.name == remote_write[i].name)
        }) {
            return Err(invalid(
                &format!("remote_write[{i}].name"),
                format!("{:?} names another [[remote_write]] too; expected a name of its own (it names the spool)", remote_write[i].name),
            ));
        }
        let sensors = check_sensors(file.sensors)?;
        let mut config = Config {
            path: path.to_path_buf(),
            daemon: file.daemon,
            sensors,
            batteries: file.batteries,
            mqtt,
            remote_write,
        };
        config.check_shared()?;
        config.check_ina3221_chips()?;
        config.check_simulated_batteries()?;
        battery::check_all(&config.batteries)?;
        config.attach_batteries()?;
        Ok(config)
    }

    /// Each battery to the sensor on its shunt.
    fn attach_batteries(&mut self) -> Check {
        for (i, b) in self.batteries.iter().enumerate() {
            let Some(sensor) = self.sensors.iter_mut().find(|s| s.name == b.sensor) else {
                let names: Vec<&str> = self.sensors.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(
                    &format!("battery[{i}].sensor"),
                    format!(
                        "battery {:?}: no [[sensor]] is named {:?}; expected one of {}",
                        b.name,
                        b.sensor,
                        names.join(", ")
                    ),
                ));
            };
            sensor.battery = Some(b.clone());
        }
        Ok(())
    }

    /// Names, addresses and buses that sensors share.
    fn check_shared(&self) -> Check {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut addresses: HashMap<(&str, u8, Option<u8>), usize> = HashMap::new();
        let mut bus_kinds: HashMap<&str, (bool, usize)> = HashMap::new();
        for (i, s) in self.sensors.iter().enumerate() {
            let clash = |key: &str, message: String| {
                invalid(&format!("sensor[{i}].{key}"), message)
                    .said_of(&format!("sensor {:?}", s.name))
            };
            if let Some(first) = names.insert(&s.name, i) {
                return Err(clash(
                    "name",
                    format!("the name is already used by sensor[{first}]; expected unique names"),
                ));
            }
            // The channels of an INA3221 share its address; every other chip has its own.
            let channel = s.channel().map(Channel::number);
            if let Some(first) = addresses.insert((&s.bus, s.address, channel), i) {
                let what = match channel {
                    Some(c) => format!("channel {c} of the INA3221 at {:#04x}", s.address),
                    None => format!("address {:#04x}", s.address),
                };
                return Err(clash(
                    "address",
                    format!(
                        "{what} on bus {} is already used by sensor[{first}]; expected one chip per address on a bus",
                        s.bus
                    ),
                ));
            }
            if let Some(other) = self.sensors[..i]
                .iter()
                .position(|o| o.bus == s.bus && o.address == s.address && o.chip() != s.chip())
            {
                return Err(clash(
                    "address",
                    format!(
                        "sensor[{other}] is a {} at {:#04x} on bus {}; one address holds one chip",
                        self.sensors[other].chip().title(),
                        s.address,
                        s.bus
                    ),
                ));
            }
            // Chips of every kind share a bus; a bus is real or simulated, not both.
            let simulated = s.driver == Driver::Simulated;
            match bus_kinds.insert(&s.bus, (simulated, i)) {
                Some((other, first)) if other != simulated => {
                    return Err(clash(
                        "bus",
                        format!(
                            "bus {} already carries sensor[{first}], a {} sensor; a bus is either real or simulated",
                            s.bus,
                            if other { "simulated" } else { "hardware" }
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// One simulated battery per bus; its loads on its bus.
    fn check_simulated_batteries(&self) -> Check {
        for (i, s) in self.sensors.iter().enumerate() {
            let Some(sim) = s.simulation() else { continue };
            let on_bus = |o: &&SensorConfig| {
                o.bus == s.bus && o.simulation().is_some_and(|x| x.battery.is_some())
            };
            if sim.battery.is_some() {
                if let Some(first) = self.sensors[..i].iter().position(|o| on_bus(&o)) {
                    return Err(invalid(
                        &format!("sensor[{i}].simulation.battery"),
                        format!("bus {} already has a simulated battery (sensor[{first}]); expected one per bus", s.bus),
                    ));
                }
            }
            if sim.from_battery && !self.sensors.iter().any(|o| on_bus(&o)) {
                return Err(invalid(
                    &format!("sensor[{i}].simulation.from_battery"),
                    format!("no sensor on bus {} simulates a battery; expected one with [sensor.simulation] battery = {{ … }}", s.bus),
                ));
            }
        }
        Ok(())
    }

    /// The channels of one INA3221 share its conversion cycle: one ADC setting for all, and
    /// every interval at least the whole cycle (each enabled channel's shunt and bus).
    fn check_ina3221_chips(&self) -> Check {
        for (i, s) in self.sensors.iter().enumerate() {
            if s.chip() != Chip::Ina3221 {
                continue;
            }
            let same_chip: Vec<&SensorConfig> = self
                .sensors
                .iter()
                .filter(|o| o.bus == s.bus && o.address == s.address && o.chip() == Chip::Ina3221)
                .collect();
            let adc = |c: &SensorConfig| match c.setup() {
                ChipSetup::Ina3221(adc, _) => Some(*adc),
                _ => None,
            };
            if let Some(first) = same_chip.iter().find(|o| adc(o) != adc(s)) {
                return Err(invalid(
                    &format!("sensor[{i}].adc"),
                    format!(
                        "sensor {:?} is another channel of the same INA3221 with other adc settings; the channels of one chip share them",
                        first.name
                    ),
                ));
            }
            let cycle = s.conversion_time() * same_chip.len() as u32;
            if s.interval < cycle {
                return Err(invalid(
                    &format!("sensor[{i}].interval"),
                    format!(
                        "{} is shorter than the INA3221's cycle over its {} channel(s) ({}); expected at least that",
                        humantime::format_duration(s.interval),
                        same_chip.len(),
                        humantime::format_duration(cycle)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Every `[[sensor]]` on its own, in file order: at least one, at most [`MAX_SENSORS`], each
/// with a valid name.
fn check_sensors(files: Vec<SensorFile>) -> Result<Vec<SensorConfig>, Invalid> {
    if files.is_empty() {
        return Err(invalid(
            "sensor",
            "no [[sensor]] is configured; expected at least one (see the annotated example /usr/share/doc/power-monitord/examples/config.toml)",
        ));
    }
    if files.len() > MAX_SENSORS {
        return Err(invalid(
            &format!("sensor[{MAX_SENSORS}]"),
            format!(
                "{} sensors; expected at most {MAX_SENSORS} per daemon",
                files.len()
            ),
        ));
    }
    files
        .into_iter()
        .enumerate()
        .map(|(i, sensor)| {
            let name = sensor.name.clone();
            if !values::valid_name(&name) {
                return Err(invalid(
                    &format!("sensor[{i}].name"),
                    format!(
                        "{name:?} is not a valid sensor name; expected 1 to {} characters of a-z, 0-9 and _ (it becomes the `sensor` label)",
                        values::MAX_NAME_LEN
                    ),
                ));
            }
            sensor.check().map_err(|e| {
                e.within(&format!("sensor[{i}]"))
                    .said_of(&format!("sensor {name:?}"))
            })
        })
        .collect()
}
