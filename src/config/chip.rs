//! The INA2xx chips a sensor can be, their typed settings, and what each chip is programmed
//! with ([`ChipSetup`]), worked out from a sensor's keys by its checks.
//!
//! Typed values (a PGA range, a bus range, a resolution, an averaging count, a conversion time)
//! cannot hold what no chip has: serde reports it at the key. Which chip takes which value is
//! checked per chip, with the datasheet's reasons.

use std::time::Duration;

use ina219::configuration::{BusVoltageRange, Resolution, ShuntVoltageRange};
use serde::Deserialize;

use super::diagnostic::{invalid, Invalid};

/// A chip of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chip {
    /// INA219: 26 V, 12-bit, programmable gain.
    Ina219,
    /// INA226: 36 V, 16-bit, averaging up to 1024.
    Ina226,
    /// INA260: the INA226 with a 2 mΩ shunt inside, 15 A.
    Ina260,
    /// INA3221: three channels, 26 V, no current or power registers.
    Ina3221,
}

impl Chip {
    /// Every chip.
    pub(crate) const ALL: [Chip; 4] = [Chip::Ina219, Chip::Ina226, Chip::Ina260, Chip::Ina3221];

    /// The name in the configuration and in the `chip` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Chip::Ina219 => "ina219",
            Chip::Ina226 => "ina226",
            Chip::Ina260 => "ina260",
            Chip::Ina3221 => "ina3221",
        }
    }

    /// The name in messages.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Chip::Ina219 => "INA219",
            Chip::Ina226 => "INA226",
            Chip::Ina260 => "INA260",
            Chip::Ina3221 => "INA3221",
        }
    }

    /// The 7-bit addresses its address pins select: A0/A1 give sixteen on the INA219, INA226
    /// and INA260 (Table 1 or 2 of each datasheet); the INA3221's single A0 gives four
    /// (SBOS576 Table 1).
    pub(crate) fn addresses(self) -> std::ops::RangeInclusive<u8> {
        match self {
            Chip::Ina3221 => 0x40..=0x43,
            _ => 0x40..=0x4F,
        }
    }

    /// The highest bus voltage the input reads (absolute maximum common-mode, section 7.1).
    pub(crate) fn bus_input_volts(self) -> f64 {
        match self {
            Chip::Ina219 | Chip::Ina3221 => 26.0,
            Chip::Ina226 | Chip::Ina260 => 36.0,
        }
    }

    /// Full-scale shunt voltage (the INA219's largest PGA range), or `None` for the INA260,
    /// whose shunt is inside.
    pub(crate) fn shunt_full_scale_volts(self) -> Option<f64> {
        match self {
            Chip::Ina219 => Some(0.32),
            // 2.5 µV × 32767 (SBOS547A 7.6).
            Chip::Ina226 => Some(0.081_92),
            Chip::Ina260 => None,
            // 40 µV × 4095 (SBOS576 8.6.2).
            Chip::Ina3221 => Some(0.163_8),
        }
    }
}

/// `shunt_range_mv`: the INA219's programmable gain (PGA) range (datasheet Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "u16")]
pub(crate) enum ShuntRange {
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
    pub(crate) const ALL: [ShuntRange; 4] = [
        ShuntRange::Mv40,
        ShuntRange::Mv80,
        ShuntRange::Mv160,
        ShuntRange::Mv320,
    ];

    /// Full scale in millivolts.
    pub(crate) fn millivolts(self) -> u16 {
        match self {
            ShuntRange::Mv40 => 40,
            ShuntRange::Mv80 => 80,
            ShuntRange::Mv160 => 160,
            ShuntRange::Mv320 => 320,
        }
    }

    /// Full scale in volts.
    pub(crate) fn volts(self) -> f64 {
        f64::from(self.millivolts()) / 1000.0
    }

    /// The smallest range whose full scale is at least `volts`.
    pub(crate) fn smallest_holding(volts: f64) -> Option<ShuntRange> {
        Self::ALL.into_iter().find(|r| r.volts() >= volts - 1e-12)
    }

    /// The `ina219` crate's value.
    pub(crate) fn to_chip(self) -> ShuntVoltageRange {
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
pub(crate) enum BusRange {
    /// 16 V.
    V16,
    /// 32 V (the input itself tops out at 26 V).
    V32,
}

impl BusRange {
    /// Full scale in volts.
    pub(crate) fn volts(self) -> u8 {
        match self {
            BusRange::V16 => 16,
            BusRange::V32 => 32,
        }
    }

    /// The `ina219` crate's value.
    pub(crate) fn to_chip(self) -> BusVoltageRange {
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

/// `adc.bits`: the INA219's conversion resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub(crate) enum AdcBits {
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
    pub(crate) fn bits(self) -> u8 {
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
pub(crate) struct Averaging(u16);

impl Averaging {
    /// No averaging.
    pub(crate) const ONE: Averaging = Averaging(1);
    /// What the INA226, INA260 and INA3221 offer (AVG bits, SBOS547A Table 6).
    pub(crate) const INA226_COUNTS: [u16; 8] = [1, 4, 16, 64, 128, 256, 512, 1024];

    /// The number of conversions.
    pub(crate) fn samples(self) -> u16 {
        self.0
    }

    /// The INA226-family AVG code (0 to 7).
    pub(crate) fn ina226_code(self) -> Option<u16> {
        Self::INA226_COUNTS
            .iter()
            .position(|n| *n == self.0)
            .map(|i| i as u16)
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

/// `adc.conversion_time`: the INA226 family's conversion time, for the shunt and the bus ADC
/// alike (VSHCT and VBUSCT, SBOS547A Table 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct ConversionTime(u16);

impl ConversionTime {
    /// The eight times, in microseconds, by code.
    pub(crate) const MICROS: [u16; 8] = [140, 204, 332, 588, 1100, 2116, 4156, 8244];
    /// The power-on time: 1.1 ms.
    pub(crate) const DEFAULT: ConversionTime = ConversionTime(1100);

    /// The time of one conversion.
    pub(crate) fn duration(self) -> Duration {
        Duration::from_micros(u64::from(self.0))
    }

    /// The CT code (0 to 7).
    pub(crate) fn code(self) -> u16 {
        Self::MICROS.iter().position(|m| *m == self.0).unwrap_or(4) as u16
    }
}

impl TryFrom<String> for ConversionTime {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let expected =
            "expected one of 140us, 204us, 332us, 588us, 1.1ms, 2.116ms, 4.156ms, 8.244ms";
        let d = humantime::parse_duration(&text)
            .map_err(|e| format!("invalid duration {text:?}: {e}; {expected}"))?;
        Self::MICROS
            .iter()
            .find(|m| Duration::from_micros(u64::from(**m)) == d)
            .map(|m| ConversionTime(*m))
            .ok_or_else(|| format!("{text} is not a conversion time of the chip; {expected}"))
    }
}

/// `sensor.adc`: resolution or conversion time, and averaging; for both ADCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AdcConfig {
    /// Resolution (INA219; default 12).
    pub(crate) bits: Option<AdcBits>,
    /// Conversions averaged.
    pub(crate) samples: Averaging,
    /// Conversion time (INA226, INA260, INA3221; default 1.1 ms).
    pub(crate) conversion_time: Option<ConversionTime>,
}

impl Default for AdcConfig {
    fn default() -> Self {
        AdcConfig {
            bits: None,
            samples: Averaging::ONE,
            conversion_time: None,
        }
    }
}

/// What an INA219 is programmed with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ina219Setup {
    /// ADC resolution and averaging, for both ADCs.
    pub(crate) resolution: Resolution,
    /// The PGA range: as configured, or the smallest that holds the full-scale shunt voltage.
    pub(crate) shunt_range: ShuntRange,
    /// The bus range.
    pub(crate) bus_range: BusRange,
}

/// The INA226 family's averaging: one of the counts its AVG bits offer (SBOS547A Table 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ina226Averaging(u16);

impl Ina226Averaging {
    /// The count, if the INA226 family offers it.
    pub(crate) fn of(samples: Averaging) -> Option<Ina226Averaging> {
        samples.ina226_code().map(Ina226Averaging)
    }

    /// The AVG code (0 to 7).
    pub(crate) fn code(self) -> u16 {
        self.0
    }

    /// The number of conversions averaged.
    pub(crate) fn samples(self) -> u16 {
        Averaging::INA226_COUNTS[usize::from(self.0)]
    }
}

/// What an INA226 or INA260, or the ADC of an INA3221, is programmed with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ina226Setup {
    /// Conversions averaged.
    pub(crate) averaging: Ina226Averaging,
    /// Conversion time of each ADC.
    pub(crate) conversion: ConversionTime,
}

/// An INA3221 channel: 1, 2 or 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Channel(u8);

impl Channel {
    /// The channel numbered `n`, if the INA3221 has one.
    pub(crate) fn of(n: u8) -> Option<Channel> {
        (1..=3).contains(&n).then_some(Channel(n))
    }

    /// Its number, 1 to 3.
    pub(crate) fn number(self) -> u8 {
        self.0
    }

    /// Its place in per-channel arrays, 0 to 2.
    pub(crate) fn index(self) -> usize {
        usize::from(self.0 - 1)
    }
}

/// What a sensor's chip is programmed with: one variant per chip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ChipSetup {
    /// An INA219.
    Ina219(Ina219Setup),
    /// An INA226.
    Ina226(Ina226Setup),
    /// An INA260.
    Ina260(Ina226Setup),
    /// One channel of an INA3221.
    Ina3221(Ina226Setup, Channel),
}

impl Default for Ina219Setup {
    /// The INA219's power-on settings.
    fn default() -> Self {
        Ina219Setup {
            resolution: Resolution::Res12Bit,
            shunt_range: ShuntRange::Mv320,
            bus_range: BusRange::V32,
        }
    }
}

impl Ina219Setup {
    /// The ADC resolution in bits and the conversions averaged.
    pub(crate) fn bits_and_samples(&self) -> (u8, u16) {
        match self.resolution {
            Resolution::Res9Bit => (9, 1),
            Resolution::Res10Bit => (10, 1),
            Resolution::Res11Bit => (11, 1),
            Resolution::Res12Bit => (12, 1),
            Resolution::Avg2 => (12, 2),
            Resolution::Avg4 => (12, 4),
            Resolution::Avg8 => (12, 8),
            Resolution::Avg16 => (12, 16),
            Resolution::Avg32 => (12, 32),
            Resolution::Avg64 => (12, 64),
            Resolution::Avg128 => (12, 128),
        }
    }
}

impl ChipSetup {
    /// The chip.
    pub(crate) fn chip(&self) -> Chip {
        match self {
            ChipSetup::Ina219(_) => Chip::Ina219,
            ChipSetup::Ina226(_) => Chip::Ina226,
            ChipSetup::Ina260(_) => Chip::Ina260,
            ChipSetup::Ina3221(..) => Chip::Ina3221,
        }
    }

    /// One conversion of the shunt and the bus (for an INA3221, of one channel; its cycle
    /// takes as many of these as channels are enabled).
    pub(crate) fn conversion_time(&self) -> Duration {
        match self {
            // Table 5: the time per ADC; shunt and bus convert one after the other.
            ChipSetup::Ina219(s) => {
                Duration::from_micros(2 * u64::from(s.resolution.conversion_time_us()))
            }
            ChipSetup::Ina226(s) | ChipSetup::Ina260(s) | ChipSetup::Ina3221(s, _) => {
                s.conversion.duration() * 2 * u32::from(s.averaging.samples())
            }
        }
    }
}

/// The INA219 mode for a resolution and an averaging count (datasheet Table 5: averaging only
/// at 12 bits, at most 128 samples).
pub(crate) fn ina219_resolution(bits: AdcBits, samples: Averaging) -> Result<Resolution, Invalid> {
    Ok(match (bits, samples.samples()) {
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
        (bits, samples) => return Err(invalid("adc", format!(
            "bits = {}, samples = {samples} is not an ADC mode of the INA219; expected bits 9 to 12 with samples = 1, or bits = 12 with samples 1, 2, 4, 8, 16, 32, 64 or 128",
            bits.bits()
        ))),
    })
}
