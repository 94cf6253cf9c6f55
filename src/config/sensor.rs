//! `[[sensor]]`: one chip (or one channel of an INA3221), where it sits, what it measures and
//! how often. [`SensorFile`] is the section as the file has it; its checks (of one sensor on
//! its own: those across sensors are in the parent module) turn it into a [`SensorConfig`],
//! whose every value is resolved and whose chip setup cannot disagree with its chip. The chips
//! and their typed settings are in [`super::chip`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::anomaly::AnomalyConfig;
use super::battery::BatteryConfig;
use super::calibration::{CalibrationFile, Trim};
use super::chip::{
    ina219_resolution, AdcBits, AdcConfig, BusRange, Channel, Chip, ChipSetup, ConversionTime,
    Ina219Setup, Ina226Averaging, Ina226Setup, ShuntRange,
};
use super::diagnostic::{invalid, Check, Invalid};
use super::simulation::SimulationConfig;
use super::values::{duration, opt_duration};

/// The smallest shunt accepted: 10 µΩ is a 5000 A / 50 mV shunt. Below it the readings (and
/// the energy totals) would be nonsense from a typo.
const MIN_SHUNT_OHMS: f64 = 1e-5;
/// The largest shunt accepted (microampere measurements use 10–100 Ω).
const MAX_SHUNT_OHMS: f64 = 1000.0;
/// The largest current accepted.
const MAX_CURRENT_AMPS: f64 = 10_000.0;

/// The addresses of the family: 0x40 to 0x4F (the INA3221 takes the first four).
pub const ADDRESS_RANGE: std::ops::RangeInclusive<u8> = 0x40..=0x4F;
/// serde's message for an address that is not a byte, said as the chip's range in hex.
pub(crate) fn explain_address(key: &str, message: &str) -> Option<String> {
    if !(key == "address" || key.ends_with(".address")) {
        return None;
    }
    let at = message.find("expected u8")?;
    Some(format!(
        "{}expected the chip's I2C address, {:#04x} to {:#04X} (set by the address pins)",
        &message[..at],
        ADDRESS_RANGE.start(),
        ADDRESS_RANGE.end()
    ))
}

/// The longest sampling interval.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The INA260's shunt, inside the package (SBOS656 7.5).
pub(crate) const INA260_SHUNT_OHMS: f64 = 0.002;
/// The INA260's continuous current rating (SBOS656 7.1): its current register's range.
pub(crate) const INA260_MAX_AMPS: f64 = 15.0;
/// Labels that `powermon_sensor_info` sets itself and a user label must not shadow.
const RESERVED_LABELS: [&str; 6] = ["sensor", "driver", "bus", "address", "chip", "calibrated"];

/// `sensor.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// An INA219 on a Linux I2C bus (`/dev/i2c-N`).
    Ina219,
    /// An INA226 on a Linux I2C bus.
    Ina226,
    /// An INA260 on a Linux I2C bus.
    Ina260,
    /// One channel of an INA3221 on a Linux I2C bus.
    Ina3221,
    /// A virtual chip on a virtual I2C bus, driven by a load model.
    Simulated,
}

impl Driver {
    /// The name in the config file and in the `driver` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Driver::Ina219 => "ina219",
            Driver::Ina226 => "ina226",
            Driver::Ina260 => "ina260",
            Driver::Ina3221 => "ina3221",
            Driver::Simulated => "simulated",
        }
    }

    /// The chip a hardware driver reads; `None` for the simulator.
    pub(crate) fn chip(self) -> Option<Chip> {
        match self {
            Driver::Ina219 => Some(Chip::Ina219),
            Driver::Ina226 => Some(Chip::Ina226),
            Driver::Ina260 => Some(Chip::Ina260),
            Driver::Ina3221 => Some(Chip::Ina3221),
            Driver::Simulated => None,
        }
    }
}

/// One `[[sensor]]` as the file has it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorFile {
    /// The `sensor` label: `[a-z0-9_]+`, unique.
    pub(crate) name: String,
    /// What reads it.
    #[serde(default = "SensorFile::default_driver")]
    driver: Driver,
    /// `/dev/i2c-N` for hardware; any name for a virtual bus.
    #[serde(default)]
    bus: Option<String>,
    /// The chip's 7-bit address.
    #[serde(default = "SensorFile::default_address")]
    address: u8,
    /// The INA3221's channel, 1 to 3.
    #[serde(default)]
    channel: Option<u8>,
    /// The shunt's resistance (default 0.1 Ω; none on the INA260).
    #[serde(default)]
    shunt_ohms: Option<f64>,
    /// The largest current expected: sets Current_LSB and the calibration (default 3.2 A).
    #[serde(default)]
    max_current_amps: Option<f64>,
    /// INA219 PGA range; by default the smallest that holds `max_current_amps × shunt_ohms`.
    #[serde(default)]
    shunt_range_mv: Option<ShuntRange>,
    /// INA219 bus voltage range (default 32).
    #[serde(default)]
    bus_voltage_range: Option<BusRange>,
    /// Resolution or conversion time, and averaging.
    #[serde(default)]
    adc: AdcConfig,
    /// Sampling interval.
    #[serde(
        default = "SensorFile::default_interval",
        deserialize_with = "duration"
    )]
    interval: Duration,
    /// Longest pause between samples that energy integration bridges; default 5 × interval.
    #[serde(default, deserialize_with = "opt_duration")]
    max_gap: Option<Duration>,
    /// Extra labels of `powermon_sensor_info`.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Anomaly rules.
    #[serde(default)]
    anomaly: AnomalyConfig,
    /// Load model, chip and faults of a simulated sensor.
    #[serde(default)]
    simulation: Option<SimulationConfig>,
    /// Trims against a reference meter.
    #[serde(default)]
    calibration: Option<CalibrationFile>,
}

/// One sensor, checked: where its chip is, what it is programmed with, how often it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// The `sensor` label: `[a-z0-9_]+`, unique.
    pub(crate) name: String,
    /// What reads it.
    pub(crate) driver: Driver,
    /// `/dev/i2c-N` for hardware; any name for a virtual bus.
    pub(crate) bus: String,
    /// The chip's 7-bit address.
    pub(crate) address: u8,
    /// Sampling interval.
    pub(crate) interval: Duration,
    /// Extra labels of `powermon_sensor_info`.
    pub(crate) labels: BTreeMap<String, String>,
    /// Anomaly rules.
    pub(crate) anomaly: AnomalyConfig,
    /// The `[[battery]]` whose current this sensor's shunt carries.
    pub(crate) battery: Option<BatteryConfig>,
    /// Trims against a reference meter (none: [`Trim::NONE`]).
    pub(crate) calibration: Trim,
    setup: ChipSetup,
    shunt_ohms: f64,
    max_current_amps: f64,
    max_gap: Duration,
    simulation: Option<SimulationConfig>,
}

impl SensorConfig {
    /// The chip: the driver's, or the one a simulated sensor simulates.
    pub(crate) fn chip(&self) -> Chip {
        self.setup.chip()
    }

    /// What the chip is programmed with.
    pub(crate) fn setup(&self) -> &ChipSetup {
        &self.setup
    }

    /// The INA3221's channel.
    pub(crate) fn channel(&self) -> Option<Channel> {
        match self.setup {
            ChipSetup::Ina3221(_, channel) => Some(channel),
            _ => None,
        }
    }

    /// The shunt's resistance.
    pub(crate) fn shunt_ohms(&self) -> f64 {
        self.shunt_ohms
    }

    /// The same sensor without its trims: what `calibrate` measures.
    pub(crate) fn untrimmed(&self) -> SensorConfig {
        SensorConfig {
            calibration: Trim::NONE,
            ..self.clone()
        }
    }

    /// The shunt the chip's calibration register is computed for: the configured one over
    /// the current gain. That is the datasheet's corrected calibration (INA219 Equation 6,
    /// `trunc(Cal × measured / reported current)`), so the chip's own current and power
    /// registers agree with the trimmed readings; the readings themselves are trimmed in
    /// software, at full precision.
    pub(crate) fn calibrated_shunt_ohms(&self) -> f64 {
        self.shunt_ohms / self.calibration.current_gain
    }

    /// The largest current expected.
    pub(crate) fn max_current_amps(&self) -> f64 {
        self.max_current_amps
    }

    /// One conversion of the shunt and the bus: the shortest useful interval (an INA3221
    /// needs one per enabled channel; see the checks across sensors).
    pub(crate) fn conversion_time(&self) -> Duration {
        self.setup.conversion_time()
    }

    /// The longest gap energy integration bridges.
    pub(crate) fn max_gap(&self) -> Duration {
        self.max_gap
    }

    /// What the bus input reads at most.
    pub(crate) fn readable_bus_volts(&self) -> f64 {
        match self.setup {
            ChipSetup::Ina219(s) => {
                f64::from(s.bus_range.volts()).min(Chip::Ina219.bus_input_volts())
            }
            other => other.chip().bus_input_volts(),
        }
    }

    /// The simulation settings, with defaults filled in (simulated sensors only).
    pub(crate) fn simulation(&self) -> Option<&SimulationConfig> {
        self.simulation.as_ref()
    }

    /// The simulation settings, for tests that add what the file cannot say.
    #[cfg(test)]
    pub(crate) fn simulation_mut(&mut self) -> Option<&mut SimulationConfig> {
        self.simulation.as_mut()
    }
}

impl SensorFile {
    fn default_driver() -> Driver {
        Driver::Ina219
    }
    fn default_address() -> u8 {
        0x40
    }
    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }

    /// The chip: the driver's, or the one a simulated sensor simulates.
    pub(super) fn chip(&self) -> Chip {
        self.driver.chip().unwrap_or_else(|| {
            self.simulation
                .as_ref()
                .and_then(|s| s.chip)
                .unwrap_or(Chip::Ina219)
        })
    }

    /// The shunt's resistance: as configured, 0.1 Ω by default, the INA260's own.
    fn shunt_ohms(&self) -> f64 {
        match self.chip() {
            Chip::Ina260 => INA260_SHUNT_OHMS,
            _ => self.shunt_ohms.unwrap_or(0.1),
        }
    }

    /// The largest current expected: as configured; else what a stock INA219 breakout reads
    /// (3.2 A), or all that the shunt input of an INA226 or INA3221 reads through the shunt.
    fn max_current_amps(&self) -> f64 {
        match (self.chip(), self.max_current_amps) {
            (Chip::Ina260, _) => INA260_MAX_AMPS,
            (_, Some(amps)) => amps,
            (Chip::Ina219, None) => 3.2,
            (chip, None) => {
                chip.shunt_full_scale_volts().unwrap_or(f64::INFINITY) / self.shunt_ohms()
            }
        }
    }

    /// The shunt voltage at `max_current_amps`.
    fn full_scale_shunt_volts(&self) -> f64 {
        self.max_current_amps() * self.shunt_ohms()
    }

    /// Check this sensor on its own, with its keys relative to it, and resolve what depends on
    /// other keys (the bus, the chip's setup, the defaults).
    pub(crate) fn check(self) -> Result<SensorConfig, Invalid> {
        let chip = self.chip();
        let bus = match &self.bus {
            Some(bus) if !bus.is_empty() => bus.clone(),
            // Each simulated sensor gets its own virtual bus unless the file puts several on one.
            _ if self.driver == Driver::Simulated => format!("virtual:{}", self.name),
            _ => "/dev/i2c-1".to_string(),
        };
        if bus.contains('\0') {
            return Err(invalid(
                "bus",
                "expected a path or a name without NUL characters",
            ));
        }
        if !chip.addresses().contains(&self.address) {
            let range = chip.addresses();
            return Err(invalid(
                "address",
                format!(
                    "address {:#04x} is outside the {} range; expected {:#04x} to {:#04X} (set by the address pins)",
                    self.address,
                    chip.title(),
                    range.start(),
                    range.end()
                ).replace("0X", "0x"),
            ));
        }
        let setup = match chip {
            Chip::Ina219 => self.check_ina219()?,
            _ => self.check_ina2xx(chip)?,
        };
        let max_gap = self.check_timing(setup.conversion_time())?;
        self.check_labels()?;
        let simulation = match (&self.simulation, self.driver) {
            (Some(_), driver) if driver != Driver::Simulated => {
                return Err(invalid(
                    "simulation",
                    "[sensor.simulation] applies only to driver = \"simulated\"",
                ))
            }
            (Some(sim), _) => Some(sim.clone().with_default_load(self.max_current_amps())),
            (None, Driver::Simulated) => {
                Some(SimulationConfig::default_for(self.max_current_amps()))
            }
            (None, _) => None,
        };
        let calibration = match self.calibration {
            Some(c) => c
                .check(self.max_current_amps())
                .map_err(|e| e.within("calibration"))?,
            None => Trim::NONE,
        };
        let checked = SensorConfig {
            calibration,
            name: self.name.clone(),
            driver: self.driver,
            bus,
            address: self.address,
            interval: self.interval,
            labels: self.labels.clone(),
            anomaly: self.anomaly.clone(),
            battery: None,
            setup,
            shunt_ohms: self.shunt_ohms(),
            max_current_amps: self.max_current_amps(),
            max_gap,
            simulation,
        };
        checked
            .anomaly
            .check(checked.interval, checked.readable_bus_volts())
            .map_err(|e| e.within("anomaly"))?;
        if let Some(sim) = &self.simulation {
            sim.check(chip.bus_input_volts())
                .map_err(|e| e.within("simulation"))?;
        }
        Ok(checked)
    }

    /// Keys that belong to other chips.
    fn refuse_foreign_keys(&self, chip: Chip) -> Check {
        let ina219 = chip == Chip::Ina219;
        let foreign = [
            (
                "channel",
                self.channel.is_some() && chip != Chip::Ina3221,
                "the INA3221",
            ),
            (
                "shunt_range_mv",
                self.shunt_range_mv.is_some() && !ina219,
                "the INA219",
            ),
            (
                "bus_voltage_range",
                self.bus_voltage_range.is_some() && !ina219,
                "the INA219",
            ),
            (
                "adc.bits",
                self.adc.bits.is_some() && !ina219,
                "the INA219 (the others take adc.conversion_time)",
            ),
            (
                "adc.conversion_time",
                self.adc.conversion_time.is_some() && ina219,
                "the INA226, INA260 and INA3221 (the INA219 takes adc.bits)",
            ),
            (
                "shunt_ohms",
                self.shunt_ohms.is_some() && chip == Chip::Ina260,
                "chips with an external shunt: the INA260's 2 mΩ shunt is inside it",
            ),
            (
                "max_current_amps",
                self.max_current_amps.is_some() && chip == Chip::Ina260,
                "chips with an external shunt: the INA260 measures up to 15 A",
            ),
        ];
        match foreign.iter().find(|(_, present, _)| *present) {
            Some((key, _, applies)) => Err(invalid(
                key,
                format!("applies to {applies}, not to the {}", chip.title()),
            )),
            None => Ok(()),
        }
    }

    fn check_ina219(&self) -> Result<ChipSetup, Invalid> {
        self.refuse_foreign_keys(Chip::Ina219)?;
        self.check_shunt(Chip::Ina219)?;
        let full_scale = self.full_scale_shunt_volts();
        let shunt_range = match self.shunt_range_mv {
            None => ShuntRange::smallest_holding(full_scale).ok_or_else(|| {
                invalid("max_current_amps", "beyond the shunt input")
            })?,
            Some(range) if full_scale > range.volts() + 1e-12 => {
                return Err(invalid(
                    "shunt_range_mv",
                    format!(
                        "{} mV is less than max_current_amps × shunt_ohms = {:.1} mV; expected a range that holds the largest current",
                        range.millivolts(),
                        full_scale * 1000.0
                    ),
                ))
            }
            Some(range) => range,
        };
        Ok(ChipSetup::Ina219(Ina219Setup {
            resolution: ina219_resolution(self.adc.bits.unwrap_or(AdcBits::B12), self.adc.samples)?,
            shunt_range,
            bus_range: self.bus_voltage_range.unwrap_or(BusRange::V32),
        }))
    }

    fn check_ina2xx(&self, chip: Chip) -> Result<ChipSetup, Invalid> {
        self.refuse_foreign_keys(chip)?;
        if chip != Chip::Ina260 {
            self.check_shunt(chip)?;
        }
        let channel = match (chip, self.channel) {
            (Chip::Ina3221, Some(c)) => Some(Channel::of(c).ok_or_else(|| {
                invalid(
                    "channel",
                    format!("{c} is not a channel of the INA3221; expected 1, 2 or 3"),
                )
            })?),
            (Chip::Ina3221, None) => {
                return Err(invalid(
                    "channel",
                    "an INA3221 sensor needs its channel: 1, 2 or 3",
                ))
            }
            _ => None,
        };
        let Some(averaging) = Ina226Averaging::of(self.adc.samples) else {
            return Err(invalid(
                "adc.samples",
                format!(
                    "the {} averages 1, 4, 16, 64, 128, 256, 512 or 1024 conversions, not {}",
                    chip.title(),
                    self.adc.samples.samples()
                ),
            ));
        };
        let adc = Ina226Setup {
            averaging,
            conversion: self.adc.conversion_time.unwrap_or(ConversionTime::DEFAULT),
        };
        Ok(match (chip, channel) {
            (_, Some(channel)) => ChipSetup::Ina3221(adc, channel),
            (Chip::Ina260, _) => ChipSetup::Ina260(adc),
            _ => ChipSetup::Ina226(adc),
        })
    }

    /// The shunt and the largest current, within [`MIN_SHUNT_OHMS`]..[`MAX_SHUNT_OHMS`] and
    /// up to [`MAX_CURRENT_AMPS`], against what the chip's shunt input reads.
    fn check_shunt(&self, chip: Chip) -> Check {
        let shunt = self.shunt_ohms();
        if !(MIN_SHUNT_OHMS..=MAX_SHUNT_OHMS).contains(&shunt) {
            return Err(invalid(
                "shunt_ohms",
                format!(
                    "{shunt} is not a usable shunt resistance; expected a positive number of ohms, from {MIN_SHUNT_OHMS} (10 µΩ) to {MAX_SHUNT_OHMS}, e.g. 0.1 for a stock breakout or 0.000375 for a 75 mV / 200 A shunt"
                ),
            ));
        }
        let current = self.max_current_amps();
        if !(current > 0.0 && current <= MAX_CURRENT_AMPS) {
            return Err(invalid(
                "max_current_amps",
                format!(
                    "{current} is not a usable current; expected the largest current you expect, in amperes, above 0 and at most {MAX_CURRENT_AMPS}"
                ),
            ));
        }
        let full_scale = self.full_scale_shunt_volts();
        let limit = chip.shunt_full_scale_volts().unwrap_or(f64::INFINITY);
        if full_scale > limit + 1e-12 {
            return Err(invalid(
                "max_current_amps",
                format!(
                    "{current} A through {shunt} Ω is {:.0} mV, beyond the {}'s ±{} mV shunt input; expected at most {:.3} A with this shunt, or a smaller shunt",
                    full_scale * 1000.0,
                    chip.title(),
                    limit * 1000.0,
                    limit / shunt
                ),
            ));
        }
        Ok(())
    }

    /// The interval against `conversion` (the chip's conversion time), and the gap against
    /// the interval; the gap in force.
    fn check_timing(&self, conversion: Duration) -> Result<Duration, Invalid> {
        if self.interval < conversion {
            return Err(invalid(
                "interval",
                format!(
                    "{} is shorter than one conversion with this ADC setting ({}); expected at least that, or fewer samples",
                    humantime::format_duration(self.interval),
                    humantime::format_duration(conversion)
                ),
            ));
        }
        if self.interval > MAX_INTERVAL {
            return Err(invalid("interval", "expected at most 1h between samples"));
        }
        match self.max_gap {
            Some(gap) if gap < self.interval => Err(invalid(
                "max_gap",
                format!(
                    "{} is shorter than the interval ({}); expected at least one interval",
                    humantime::format_duration(gap),
                    humantime::format_duration(self.interval)
                ),
            )),
            Some(gap) if gap > MAX_INTERVAL * 24 => Err(invalid("max_gap", "expected at most 24h")),
            Some(gap) => Ok(gap),
            None => Ok(self.interval * 5),
        }
    }

    fn check_labels(&self) -> Check {
        for (label, value) in &self.labels {
            let key = format!("labels.{label}");
            let valid = label
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !label.starts_with("__");
            if !valid {
                return Err(invalid(
                    &key,
                    format!("{label:?} is not a Prometheus label name; expected [a-zA-Z_][a-zA-Z0-9_]* not starting with __"),
                ));
            }
            if RESERVED_LABELS.contains(&label.as_str()) {
                return Err(invalid(
                    &key,
                    format!(
                        "{label:?} is set by power-monitord itself; expected another label name"
                    ),
                ));
            }
            if value.len() > 256 {
                return Err(invalid(&key, "expected a value of at most 256 bytes"));
            }
        }
        Ok(())
    }
}
