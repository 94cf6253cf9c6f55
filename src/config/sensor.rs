//! `[[sensor]]`: one chip, where it sits, what it measures and how often, with the checks of
//! one sensor on its own (the checks across sensors are in the parent module).
//!
//! Chip settings are typed: a PGA range, a bus range, an ADC resolution or an averaging count
//! that the chip does not have cannot be written down, and serde reports it at the key.

use std::collections::BTreeMap;
use std::time::Duration;

use ina219::configuration::{BusVoltageRange, Resolution, ShuntVoltageRange};
use serde::Deserialize;

use super::anomaly::AnomalyConfig;
use super::diagnostic::{invalid, Check};
use super::simulation::SimulationConfig;
use super::values::{duration, opt_duration};

/// The INA219 takes 7-bit addresses 0x40..=0x4F, chosen with the A0/A1 pins (datasheet Table 1).
pub const ADDRESS_RANGE: std::ops::RangeInclusive<u8> = 0x40..=0x4F;
/// Absolute maximum common-mode voltage on IN+/IN- (datasheet 7.1): the bus input tops out here.
pub const MAX_BUS_INPUT_VOLTS: f64 = 26.0;
/// The longest sensor name (it becomes the `sensor` label).
pub const MAX_NAME_LEN: usize = 64;
/// The longest sampling interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Labels that `powermon_sensor_info` sets itself and a user label must not shadow.
const RESERVED_LABELS: [&str; 4] = ["sensor", "driver", "bus", "address"];

/// `sensor.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A real INA219 on a Linux I2C bus (`/dev/i2c-N`).
    Ina219,
    /// A virtual INA219 on a virtual I2C bus, driven by a load model.
    Simulated,
}

impl Driver {
    /// The name in the config file and in the `driver` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Ina219 => "ina219",
            Driver::Simulated => "simulated",
        }
    }
}

/// `shunt_range_mv`: the INA219's programmable gain (PGA) range (datasheet Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "u16")]
pub enum ShuntRange {
    /// ±40 mV (PGA /1).
    Mv40,
    /// ±80 mV (PGA /2).
    Mv80,
    /// ±160 mV (PGA /4).
    Mv160,
    /// ±320 mV (PGA /8).
    Mv320,
}

impl ShuntRange {
    /// Every range, smallest first.
    pub const ALL: [ShuntRange; 4] = [
        ShuntRange::Mv40,
        ShuntRange::Mv80,
        ShuntRange::Mv160,
        ShuntRange::Mv320,
    ];

    /// Full scale in millivolts.
    pub fn millivolts(self) -> u16 {
        match self {
            ShuntRange::Mv40 => 40,
            ShuntRange::Mv80 => 80,
            ShuntRange::Mv160 => 160,
            ShuntRange::Mv320 => 320,
        }
    }

    /// Full scale in volts.
    pub fn volts(self) -> f64 {
        f64::from(self.millivolts()) / 1000.0
    }

    /// The smallest range whose full scale is at least `volts`.
    pub fn smallest_holding(volts: f64) -> Option<ShuntRange> {
        Self::ALL.into_iter().find(|r| r.volts() >= volts - 1e-12)
    }

    /// The `ina219` crate's value.
    pub fn to_chip(self) -> ShuntVoltageRange {
        match self {
            ShuntRange::Mv40 => ShuntVoltageRange::Fsr40mv,
            ShuntRange::Mv80 => ShuntVoltageRange::Fsr80mv,
            ShuntRange::Mv160 => ShuntVoltageRange::Fsr160mv,
            ShuntRange::Mv320 => ShuntVoltageRange::Fsr320mv,
        }
    }
}

impl TryFrom<u16> for ShuntRange {
    type Error = String;
    fn try_from(mv: u16) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.millivolts() == mv)
            .ok_or_else(|| format!("{mv} is not a PGA range; expected 40, 80, 160 or 320"))
    }
}

/// `bus_voltage_range`: the INA219's bus full scale (datasheet 8.6.2.1, BRNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum BusRange {
    /// 16 V.
    V16,
    /// 32 V (the input itself tops out at 26 V).
    V32,
}

impl BusRange {
    /// Full scale in volts.
    pub fn volts(self) -> u8 {
        match self {
            BusRange::V16 => 16,
            BusRange::V32 => 32,
        }
    }

    /// What the bus input reads at most: the range, or the input's own limit.
    pub fn readable_volts(self) -> f64 {
        f64::from(self.volts()).min(MAX_BUS_INPUT_VOLTS)
    }

    /// The `ina219` crate's value.
    pub fn to_chip(self) -> BusVoltageRange {
        match self {
            BusRange::V16 => BusVoltageRange::Fsr16v,
            BusRange::V32 => BusVoltageRange::Fsr32v,
        }
    }
}

impl TryFrom<u8> for BusRange {
    type Error = String;
    fn try_from(volts: u8) -> Result<Self, String> {
        match volts {
            16 => Ok(BusRange::V16),
            32 => Ok(BusRange::V32),
            _ => Err(format!(
                "{volts} is not a bus range; expected 16 or 32 (volts)"
            )),
        }
    }
}

/// `adc.bits`: conversion resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum AdcBits {
    /// 9 bits.
    B9,
    /// 10 bits.
    B10,
    /// 11 bits.
    B11,
    /// 12 bits.
    B12,
}

impl AdcBits {
    /// The number of bits.
    pub fn bits(self) -> u8 {
        match self {
            AdcBits::B9 => 9,
            AdcBits::B10 => 10,
            AdcBits::B11 => 11,
            AdcBits::B12 => 12,
        }
    }
}

impl TryFrom<u8> for AdcBits {
    type Error = String;
    fn try_from(bits: u8) -> Result<Self, String> {
        Ok(match bits {
            9 => AdcBits::B9,
            10 => AdcBits::B10,
            11 => AdcBits::B11,
            12 => AdcBits::B12,
            _ => {
                return Err(format!(
                    "{bits} is not a resolution; expected 9, 10, 11 or 12"
                ))
            }
        })
    }
}

/// `adc.samples`: conversions averaged into one result, a power of two from 1 to 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "u16")]
pub struct Averaging(u16);

impl Averaging {
    /// No averaging.
    pub const ONE: Averaging = Averaging(1);

    /// The number of conversions.
    pub fn samples(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for Averaging {
    type Error = String;
    fn try_from(samples: u16) -> Result<Self, String> {
        if samples.is_power_of_two() && samples <= 1024 {
            Ok(Averaging(samples))
        } else {
            Err(format!(
                "{samples} is not an averaging count; expected a power of two from 1 to 1024"
            ))
        }
    }
}

/// `sensor.adc`: resolution and hardware averaging, applied to both the shunt and the bus ADC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdcConfig {
    /// Resolution.
    pub bits: AdcBits,
    /// Conversions averaged.
    pub samples: Averaging,
}

impl Default for AdcConfig {
    fn default() -> Self {
        AdcConfig {
            bits: AdcBits::B12,
            samples: Averaging::ONE,
        }
    }
}

impl AdcConfig {
    /// The INA219 mode for this resolution and averaging (datasheet Table 5: averaging only
    /// at 12 bits, at most 128 samples).
    fn ina219_resolution(self) -> Result<Resolution, String> {
        Ok(match (self.bits, self.samples.samples()) {
            (AdcBits::B9, 1) => Resolution::Res9Bit,
            (AdcBits::B10, 1) => Resolution::Res10Bit,
            (AdcBits::B11, 1) => Resolution::Res11Bit,
            (AdcBits::B12, 1) => Resolution::Res12Bit,
            (AdcBits::B12, 2) => Resolution::Avg2,
            (AdcBits::B12, 4) => Resolution::Avg4,
            (AdcBits::B12, 8) => Resolution::Avg8,
            (AdcBits::B12, 16) => Resolution::Avg16,
            (AdcBits::B12, 32) => Resolution::Avg32,
            (AdcBits::B12, 64) => Resolution::Avg64,
            (AdcBits::B12, 128) => Resolution::Avg128,
            (bits, samples) => return Err(format!(
                "bits = {}, samples = {samples} is not an ADC mode; expected bits 9 to 12 with samples = 1, or bits = 12 with samples 1, 2, 4, 8, 16, 32, 64 or 128",
                bits.bits()
            )),
        })
    }
}

/// What an INA219 is programmed with, worked out from a sensor's keys by its checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ina219Setup {
    /// ADC resolution and averaging, for both ADCs.
    pub resolution: Resolution,
    /// The PGA range: as configured, or the smallest that holds the full-scale shunt voltage.
    pub shunt_range: ShuntRange,
    /// The bus range.
    pub bus_range: BusRange,
}

impl Default for Ina219Setup {
    fn default() -> Self {
        Ina219Setup {
            resolution: Resolution::Res12Bit,
            shunt_range: ShuntRange::Mv320,
            bus_range: BusRange::V32,
        }
    }
}

impl Ina219Setup {
    /// One shunt plus one bus conversion in continuous mode (datasheet Table 5).
    pub fn conversion_time(&self) -> Duration {
        Duration::from_micros(2 * u64::from(self.resolution.conversion_time_us()))
    }
}

/// One `[[sensor]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// The `sensor` label: `[a-z0-9_]+`, unique.
    pub name: String,
    /// What reads it.
    #[serde(default = "SensorConfig::default_driver")]
    pub driver: Driver,
    /// `/dev/i2c-N` for hardware; any name for a virtual bus. Filled in by the checks.
    #[serde(default)]
    pub bus: String,
    /// The chip's 7-bit address.
    #[serde(default = "SensorConfig::default_address")]
    pub address: u8,
    /// The shunt's resistance.
    #[serde(default = "SensorConfig::default_shunt_ohms")]
    pub shunt_ohms: f64,
    /// The largest current expected: sets Current_LSB and the calibration.
    #[serde(default = "SensorConfig::default_max_current_amps")]
    pub max_current_amps: f64,
    /// PGA range; by default the smallest that holds `max_current_amps × shunt_ohms`.
    #[serde(default)]
    pub shunt_range_mv: Option<ShuntRange>,
    /// Bus voltage range.
    #[serde(default = "SensorConfig::default_bus_range")]
    pub bus_voltage_range: BusRange,
    /// Resolution and averaging.
    #[serde(default)]
    pub adc: AdcConfig,
    /// Sampling interval.
    #[serde(
        default = "SensorConfig::default_interval",
        deserialize_with = "duration"
    )]
    pub interval: Duration,
    /// Longest pause between samples that energy integration bridges; default 5 × interval.
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_gap: Option<Duration>,
    /// Extra labels of `powermon_sensor_info`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Anomaly rules.
    #[serde(default)]
    pub anomaly: AnomalyConfig,
    /// Load model and faults of a simulated sensor.
    #[serde(default)]
    pub simulation: Option<SimulationConfig>,
    /// The chip settings the keys above come to; worked out by [`SensorConfig::check`].
    #[serde(skip)]
    setup: Ina219Setup,
}

impl SensorConfig {
    fn default_driver() -> Driver {
        Driver::Ina219
    }
    fn default_address() -> u8 {
        0x40
    }
    fn default_shunt_ohms() -> f64 {
        0.1
    }
    fn default_max_current_amps() -> f64 {
        3.2
    }
    fn default_bus_range() -> BusRange {
        BusRange::V32
    }
    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }

    /// What the chip is programmed with.
    pub fn setup(&self) -> &Ina219Setup {
        &self.setup
    }

    /// One conversion of both ADCs: the shortest useful interval.
    pub fn conversion_time(&self) -> Duration {
        self.setup.conversion_time()
    }

    /// The longest gap energy integration bridges.
    pub fn max_gap(&self) -> Duration {
        self.max_gap.unwrap_or(self.interval * 5)
    }

    /// The shunt voltage at `max_current_amps`.
    pub fn full_scale_shunt_volts(&self) -> f64 {
        self.max_current_amps * self.shunt_ohms
    }

    /// The simulation settings, with defaults filled in (simulated sensors only).
    pub fn simulation(&self) -> Option<SimulationConfig> {
        match self.driver {
            Driver::Ina219 => None,
            Driver::Simulated => Some(match &self.simulation {
                Some(sim) => sim.clone().with_default_load(self.max_current_amps),
                None => SimulationConfig::default_for(self.max_current_amps),
            }),
        }
    }

    /// Fill in what depends on other keys (the bus, the chip setup) and check this sensor on
    /// its own; keys relative to it.
    pub fn check(&mut self) -> Check {
        if self.bus.is_empty() {
            self.bus = match self.driver {
                Driver::Ina219 => "/dev/i2c-1".to_string(),
                // Each simulated sensor gets its own virtual bus unless the file puts several on one.
                Driver::Simulated => format!("virtual:{}", self.name),
            };
        }
        if self.bus.contains('\0') {
            return Err(invalid(
                "bus",
                "expected a path or a name without NUL characters",
            ));
        }
        if !ADDRESS_RANGE.contains(&self.address) {
            return Err(invalid(
                "address",
                format!(
                    "address {:#04x} is outside the INA219 range; expected 0x40 to 0x4F (set by the A0/A1 pins)",
                    self.address
                ),
            ));
        }
        self.check_shunt()?;
        let resolution = self
            .adc
            .ina219_resolution()
            .map_err(|message| invalid("adc", message))?;
        self.setup.resolution = resolution;
        self.setup.bus_range = self.bus_voltage_range;
        self.check_timing()?;
        self.check_labels()?;
        self.anomaly
            .check(self.interval, self.bus_voltage_range.readable_volts())
            .map_err(|e| e.within("anomaly"))?;
        if let Some(sim) = &self.simulation {
            if self.driver != Driver::Simulated {
                return Err(invalid(
                    "simulation",
                    "[sensor.simulation] applies only to driver = \"simulated\"",
                ));
            }
            sim.check(MAX_BUS_INPUT_VOLTS)
                .map_err(|e| e.within("simulation"))?;
        }
        Ok(())
    }

    /// The shunt, the current and the PGA range that holds them.
    fn check_shunt(&mut self) -> Check {
        if !(self.shunt_ohms.is_finite() && self.shunt_ohms > 0.0) {
            return Err(invalid(
                "shunt_ohms",
                format!(
                    "{} is not a usable shunt resistance; expected a positive number of ohms, e.g. 0.1 for a stock breakout or 0.000375 for a 75 mV / 200 A shunt",
                    self.shunt_ohms
                ),
            ));
        }
        if !(self.max_current_amps.is_finite() && self.max_current_amps > 0.0) {
            return Err(invalid(
                "max_current_amps",
                format!(
                    "{} is not a usable current; expected the largest current you expect, in amperes, above 0",
                    self.max_current_amps
                ),
            ));
        }
        let full_scale = self.full_scale_shunt_volts();
        self.setup.shunt_range = match self.shunt_range_mv {
            None => ShuntRange::smallest_holding(full_scale).ok_or_else(|| {
                invalid(
                    "max_current_amps",
                    format!(
                        "{} A through {} Ω is {:.0} mV, beyond the INA219's ±320 mV shunt input; expected at most {:.3} A with this shunt, or a smaller shunt",
                        self.max_current_amps,
                        self.shunt_ohms,
                        full_scale * 1000.0,
                        ShuntRange::Mv320.volts() / self.shunt_ohms
                    ),
                )
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
        Ok(())
    }

    /// The interval against the conversion time, and the gap against the interval.
    fn check_timing(&self) -> Check {
        let conversion = self.conversion_time();
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
            _ => Ok(()),
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

/// Whether `name` can be a sensor name (the `sensor` label).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
