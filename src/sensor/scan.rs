//! `power-monitord scan`: which of 0x40–0x4F answer on a bus, and which chip of the INA2xx
//! family each is.
//!
//! Read-only: the probe reads registers and writes nothing but the register pointer, so it
//! does not disturb a chip a running daemon is using. Per address:
//!
//! 1. Configuration (00h): no acknowledge means nothing there.
//! 2. Manufacturer ID (FEh) and die ID (FFh): the INA226 (SBOS547A 7.6.8–9: 5449h "TI",
//!    2260h), INA260 (SBOS656C 7.6.8–9: 2270h) and INA3221 (SBOS576D 8.6.2.17–18: 3220h) say
//!    what they are; the revision in the die ID's low four bits is ignored.
//! 3. The INA219 has no ID registers: bus voltage (02h) and calibration (05h), and the bits
//!    those registers and the configuration hold at 0 on an INA219, tell it from anything else.

use std::fmt::Write as _;

use embedded_hal::i2c::I2c;
use ina219::configuration::{Configuration, OperatingMode};

use super::family::{chip_of_die, ConfigFields, MANUFACTURER_TI, REG_DIE_ID, REG_MANUFACTURER_ID};
use super::ina219::registers::{
    bus_counts, decode_bus, CONFIG_RESET_VALUE, REG_BUS_VOLTAGE, REG_CALIBRATION, REG_CONFIG,
};
use super::{ina226, ina3221, ClassifyError, ErrorKind};
use crate::config::{Chip, ADDRESS_RANGE};

/// Configuration bit 14 is unused on the INA219 and reads 0; the INA226, INA260 and INA3221,
/// which share the address range, have it set in their reset values (4127h, 6127h, 7127h).
const CONFIG_UNUSED_BIT: u16 = 1 << 14;
/// Bus voltage register bit 2 is unused and reads 0 (Figure 20).
const BUS_UNUSED_BIT: u16 = 1 << 2;
/// What answered at one address.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// An INA219 with its power-on configuration (never programmed, or reset).
    Ina219PowerOn {
        /// The bus voltage it reads.
        bus_volts: f64,
    },
    /// An INA219 someone has programmed (a running daemon, another program).
    Ina219Configured {
        /// Its configuration register.
        configuration: u16,
        /// Its calibration register.
        calibration: u16,
        /// The bus voltage it reads.
        bus_volts: f64,
    },
    /// An INA226, INA260 or INA3221, by its IDs.
    Identified {
        /// Which.
        chip: Chip,
        /// Its configuration register.
        configuration: u16,
        /// Its die ID register (with the revision).
        die: u16,
        /// The bus voltage of each channel (one, or three for an INA3221).
        bus_volts: Vec<f64>,
    },
    /// Something answered, but not like a chip of the family.
    Other {
        /// What register 00h read.
        configuration: u16,
        /// What register 02h read.
        bus: u16,
    },
    /// The address could not be probed (e.g. a kernel driver has claimed it).
    Error {
        /// How the probe failed.
        kind: ErrorKind,
        /// The bus's own words.
        detail: String,
    },
}

impl Found {
    /// The chip, if one of the family answered.
    pub(crate) fn chip(&self) -> Option<Chip> {
        match self {
            Found::Ina219PowerOn { .. } | Found::Ina219Configured { .. } => Some(Chip::Ina219),
            Found::Identified { chip, .. } => Some(*chip),
            _ => None,
        }
    }

    /// The bus voltage of the (first) channel.
    pub(crate) fn bus_volts(&self) -> Option<f64> {
        match self {
            Found::Ina219PowerOn { bus_volts } | Found::Ina219Configured { bus_volts, .. } => {
                Some(*bus_volts)
            }
            Found::Identified { bus_volts, .. } => bus_volts.first().copied(),
            _ => None,
        }
    }
}

/// A scan that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The bus cannot be opened or used (its error says why and what to do).
    #[error("{detail}")]
    Unavailable {
        /// The bus's own error, with its hint.
        detail: String,
    },
    /// Not a device node, and not a simulated bus of the configuration either.
    #[error(
        "{bus} is neither an I2C device node (/dev/i2c-N) nor a simulated bus of {}{}",
        config.display(),
        match simulated.as_slice() {
            [] => " (it has none)".to_string(),
            names => format!(" (its simulated buses: {})", names.join(", ")),
        }
    )]
    UnknownBus {
        /// What was asked for.
        bus: String,
        /// The configuration looked in.
        config: std::path::PathBuf,
        /// The simulated buses it has.
        simulated: Vec<String>,
    },
}

fn read_register<I2C: I2c>(bus: &mut I2C, address: u8, register: u8) -> Result<u16, I2C::Error> {
    let mut word = [0u8; 2];
    bus.write_read(address, &[register], &mut word)?;
    Ok(u16::from_be_bytes(word))
}

/// Read the IDs, else the INA219's tell-tale registers, at `address`, and judge what answered.
fn probe<I2C: I2c>(bus: &mut I2C, address: u8) -> Result<Found, I2C::Error> {
    let configuration = read_register(bus, address, REG_CONFIG)?;
    if read_register(bus, address, REG_MANUFACTURER_ID)? == MANUFACTURER_TI {
        let die = read_register(bus, address, REG_DIE_ID)?;
        if let Some(chip) = chip_of_die(die) {
            let bus_volts = match chip {
                Chip::Ina3221 => (1..=3)
                    .map(|c| {
                        read_register(bus, address, ina3221::registers::reg_bus(c)).map(|w| {
                            f64::from(ina3221::registers::counts(w))
                                * ina3221::registers::BUS_LSB_VOLTS
                        })
                    })
                    .collect::<Result<_, _>>()?,
                _ => vec![ina226::registers::decode_bus(read_register(
                    bus,
                    address,
                    ina226::registers::REG_BUS_VOLTAGE,
                )?)],
            };
            return Ok(Found::Identified {
                chip,
                configuration,
                die,
                bus_volts,
            });
        }
    }
    let bus_word = read_register(bus, address, REG_BUS_VOLTAGE)?;
    let calibration = read_register(bus, address, REG_CALIBRATION)?;
    let plausible = configuration & CONFIG_UNUSED_BIT == 0
        && bus_word & BUS_UNUSED_BIT == 0
        && bus_counts(bus_word) <= 8000
        && calibration & 1 == 0;
    let bus_volts = decode_bus(bus_word);
    Ok(if !plausible {
        Found::Other {
            configuration,
            bus: bus_word,
        }
    } else if configuration == CONFIG_RESET_VALUE && calibration == 0 {
        Found::Ina219PowerOn { bus_volts }
    } else {
        Found::Ina219Configured {
            configuration,
            calibration,
            bus_volts,
        }
    })
}

/// Probe every address of the family; addresses that do not acknowledge are left out.
pub(crate) fn scan<I2C>(bus: &mut I2C) -> Result<Vec<(u8, Found)>, ScanError>
where
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    let mut found = Vec::new();
    for address in ADDRESS_RANGE {
        match probe(bus, address) {
            Ok(f) => found.push((address, f)),
            Err(e) => match e.error_kind() {
                ErrorKind::Nack => {}
                ErrorKind::Unavailable => {
                    return Err(ScanError::Unavailable {
                        detail: e.to_string(),
                    })
                }
                kind => found.push((
                    address,
                    Found::Error {
                        kind,
                        detail: e.to_string(),
                    },
                )),
            },
        }
    }
    Ok(found)
}

/// A configuration register in words: "16 V, ±80 mV, 12-bit ×16, continuous".
pub(crate) fn describe_configuration(word: u16) -> String {
    let c = Configuration::from_bits(word);
    let range = match c.bus_voltage_range {
        ina219::configuration::BusVoltageRange::Fsr16v => 16,
        ina219::configuration::BusVoltageRange::Fsr32v => 32,
    };
    let adc = format!("{:?}", c.shunt_resolution)
        .replace("Res", "")
        .replace("Bit", "-bit")
        .replace("Avg", "12-bit ×");
    let mode = match c.operating_mode {
        OperatingMode::PowerDown => "powered down",
        OperatingMode::AdcOff => "ADC off",
        OperatingMode::Triggered(_) => "triggered",
        OperatingMode::Continous(_) => "continuous",
    };
    format!(
        "{range} V, ±{} mV, {adc}, {mode}",
        c.shunt_voltage_range.range_mv().end()
    )
}

/// A configuration register of the INA226 family in words: "averaging ×16, 1.1 ms,
/// continuous" (SBOS547A Tables 6 and 7; the INA260 and INA3221 share the layout).
pub(crate) fn describe_ina2xx_configuration(word: u16) -> String {
    let fields = ConfigFields::decode(word);
    let samples = crate::config::Averaging::INA226_COUNTS[usize::from(fields.avg_code)];
    let micros = crate::config::ConversionTime::MICROS[usize::from(fields.shunt_ct_code)];
    let mode = match fields.mode {
        0 | 4 => "powered down",
        7 => "continuous",
        _ => "triggered",
    };
    format!(
        "averaging ×{samples}, {} ms, {mode}",
        f64::from(micros) / 1000.0
    )
}

/// The power-on configuration of a chip.
fn reset_configuration(chip: Chip) -> u16 {
    match chip {
        Chip::Ina219 => CONFIG_RESET_VALUE,
        Chip::Ina226 => ina226::registers::INA226_CONFIG_RESET,
        Chip::Ina260 => ina226::registers::INA260_CONFIG_RESET,
        Chip::Ina3221 => ina3221::registers::CONFIG_RESET,
    }
}

/// One line about what answered at an address.
fn describe(found: &Found) -> String {
    match found {
        Found::Ina219PowerOn { bus_volts } => {
            format!("INA219, power-on defaults, bus {bus_volts:.3} V")
        }
        Found::Ina219Configured {
            configuration,
            calibration,
            bus_volts,
        } => format!(
            "INA219, configured ({}, calibration {calibration}), bus {bus_volts:.3} V",
            describe_configuration(*configuration)
        ),
        Found::Identified {
            chip,
            configuration,
            die,
            bus_volts,
        } => {
            let state = if *configuration == reset_configuration(*chip) {
                "power-on defaults".to_string()
            } else {
                format!(
                    "configured ({})",
                    describe_ina2xx_configuration(*configuration)
                )
            };
            let volts: Vec<String> = bus_volts.iter().map(|v| format!("{v:.3}")).collect();
            let bus = if volts.len() > 1 {
                format!("channels 1-3 at {} V", volts.join(" / "))
            } else {
                format!("bus {} V", volts.join(""))
            };
            format!("{} (die ID {die:#06x}), {state}, {bus}", chip.title())
        }
        Found::Other { configuration, .. } => format!(
            "answers, but not like a chip of the INA2xx family (configuration {configuration:#06x}, no TI IDs)"
        ),
        Found::Error { kind, detail } => format!("{kind}: {detail}"),
    }
}

/// The `[[sensor]]` block(s) for a chip found at `address`.
fn blocks(out: &mut String, bus: &str, address: u8, found: &Found) {
    let Some(chip) = found.chip() else { return };
    let head = |out: &mut String, name: String| {
        let _ = write!(
            out,
            "\n[[sensor]]\nname = \"{name}\"\ndriver = \"{}\"\nbus = \"{bus}\"\naddress = {address:#04x}\n",
            chip.as_str()
        );
    };
    let adc = "adc = { samples = 16, conversion_time = \"1.1ms\" }";
    match found {
        Found::Identified {
            chip: Chip::Ina3221,
            bus_volts,
            ..
        } => {
            for (i, volts) in bus_volts.iter().enumerate() {
                head(out, format!("ina3221_{address:02x}_ch{}", i + 1));
                let _ = write!(
                    out,
                    "channel = {}                  # {volts:.2} V measured{}\n\
                     shunt_ohms = 0.1             # the breakout's R100; the resistance of your shunt\n\
                     max_current_amps = 1.6       # the largest current you expect; at most 0.1638 V / shunt_ohms\n\
                     {adc}  # the three channels: 3 × 16 × 2 × 1.1 ms = 106 ms a cycle\n\
                     interval = \"1s\"\n",
                    i + 1,
                    if *volts < 0.1 { "; nothing connected?" } else { "" }
                );
            }
        }
        Found::Identified {
            chip: Chip::Ina260, ..
        } => {
            head(out, format!("ina260_{address:02x}"));
            let _ = write!(
                out,
                "# the shunt is inside the chip: 2 mΩ, up to 15 A\n\
                 {adc}  # 16 × 2 × 1.1 ms = 35 ms per reading\ninterval = \"1s\"\n"
            );
        }
        Found::Identified { .. } => {
            head(out, format!("ina226_{address:02x}"));
            let _ = write!(
                out,
                "shunt_ohms = 0.1             # the breakout's R100; the resistance of your shunt\n\
                 max_current_amps = 0.8       # the largest current you expect; at most 0.08192 V / shunt_ohms\n\
                 {adc}  # 16 × 2 × 1.1 ms = 35 ms per reading\ninterval = \"1s\"\n"
            );
        }
        _ => {
            let volts = found.bus_volts().unwrap_or(0.0);
            let (range, why) = if volts <= 14.6 {
                (16, format!("{volts:.2} V measured; 16 V range up to 16 V"))
            } else {
                (
                    32,
                    format!("{volts:.2} V measured; the input tops out at 26 V"),
                )
            };
            head(out, format!("ina219_{address:02x}"));
            let _ = write!(
                out,
                "shunt_ohms = 0.1             # the breakout's R100; the resistance of your shunt\n\
                 max_current_amps = 3.2       # the largest current you expect; at most 0.32 V / shunt_ohms\n\
                 bus_voltage_range = {range}       # {why}\n\
                 adc = {{ bits = 12, samples = 16 }}\ninterval = \"1s\"\n"
            );
        }
    }
}

/// The report `scan` prints: a line per address, then `[[sensor]]` blocks for the chips
/// found. For a `simulated` bus, the blocks are those the same chips need on `/dev/i2c-1`.
pub fn report(bus_name: &str, simulated: bool, found: &[(u8, Found)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Scanning {bus_name} for INA219, INA226, INA260 and INA3221 chips at 0x40-0x4F:"
    );
    if found.is_empty() {
        let _ = writeln!(
            out,
            "  nothing answered. Check power (VCC 3.3-5 V), GND, SDA and SCL, and that the address pins select an address in 0x40-0x4F."
        );
        return out;
    }
    for (address, f) in found {
        let _ = writeln!(out, "  {address:#04x}  {}", describe(f));
    }
    let chips: Vec<_> = found.iter().filter(|(_, f)| f.chip().is_some()).collect();
    if chips.is_empty() {
        let _ = writeln!(out, "No chip of the INA2xx family found.");
        return out;
    }
    let mut titles: Vec<&str> = chips
        .iter()
        .filter_map(|(_, f)| f.chip())
        .map(Chip::title)
        .collect();
    titles.sort_unstable();
    titles.dedup();
    let _ = writeln!(
        out,
        "\n{} chip(s): {}. For /etc/power-monitord/config.toml (set shunt_ohms and max_current_amps for your shunt, then `power-monitord check-config`):",
        chips.len(),
        titles.join(", ")
    );
    let bus = if simulated {
        let _ = writeln!(
            out,
            "({bus_name} is a simulated bus: these are the blocks for the same chips on /dev/i2c-1.)"
        );
        "/dev/i2c-1"
    } else {
        bus_name
    };
    for (address, f) in chips {
        blocks(&mut out, bus, *address, f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::{ErrorKind as HalErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    fn reg(address: u8, reg: u8, value: u16) -> T {
        T::write_read(address, vec![reg], value.to_be_bytes().to_vec())
    }

    /// An INA219: no IDs (FEh reads whatever; here 0), then bus voltage and calibration.
    fn ina219(address: u8, config: u16, bus: u16, cal: u16) -> Vec<T> {
        vec![
            reg(address, REG_CONFIG, config),
            reg(address, REG_MANUFACTURER_ID, 0),
            reg(address, REG_BUS_VOLTAGE, bus),
            reg(address, REG_CALIBRATION, cal),
        ]
    }

    /// A chip with TI's IDs: configuration, manufacturer, die, then the bus voltage(s).
    fn identified(address: u8, config: u16, die: u16, buses: &[(u8, u16)]) -> Vec<T> {
        let mut t = vec![
            reg(address, REG_CONFIG, config),
            reg(address, REG_MANUFACTURER_ID, MANUFACTURER_TI),
            reg(address, REG_DIE_ID, die),
        ];
        t.extend(buses.iter().map(|(r, v)| reg(address, *r, *v)));
        t
    }

    fn nack(address: u8) -> T {
        T::write_read(address, vec![REG_CONFIG], vec![0, 0])
            .with_error(HalErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
    }

    #[test]
    fn names_each_chip_of_the_family() {
        let mut expected = Vec::new();
        for address in ADDRESS_RANGE {
            match address {
                // 12.416 V = 3104 counts.
                0x40 => expected.extend(ina219(address, 0x399F, 3104 << 3 | 0b10, 0)),
                // An INA3221 at power-on: 12 V, 5 V and nothing on its three channels.
                0x41 => expected.extend(identified(
                    address,
                    0x7127,
                    0x3220,
                    &[(2, 1500 << 3), (4, 625 << 3), (6, 0)],
                )),
                0x42 => expected.extend(ina219(address, 0x0E67, 3300 << 3, 17_894)),
                // An INA226 (revision 0) programmed with ×16, reading 24 V = 19200 × 1.25 mV.
                0x44 => expected.extend(identified(address, 0x4527, 0x2260, &[(2, 19_200)])),
                // An INA260 at power-on.
                0x45 => expected.extend(identified(address, 0x6127, 0x2270, &[(2, 9600)])),
                // Something else with the INA226's reset value, but no IDs.
                0x46 => expected.extend(ina219(address, 0x4127, 0x1234, 0)),
                _ => expected.push(nack(address)),
            }
        }
        let mut mock = Mock::new(&expected);
        let found = scan(&mut mock).unwrap();
        mock.done();
        let chips: Vec<_> = found.iter().map(|(a, f)| (*a, f.chip())).collect();
        assert_eq!(
            chips,
            [
                (0x40, Some(Chip::Ina219)),
                (0x41, Some(Chip::Ina3221)),
                (0x42, Some(Chip::Ina219)),
                (0x44, Some(Chip::Ina226)),
                (0x45, Some(Chip::Ina260)),
                (0x46, None),
            ]
        );
        assert_eq!(found[0].1, Found::Ina219PowerOn { bus_volts: 12.416 });

        let text = report("/dev/i2c-1", false, &found);
        for line in [
            "0x41  INA3221 (die ID 0x3220), power-on defaults, channels 1-3 at 12.000 / 5.000 / 0.000 V",
            "0x42  INA219, configured (16 V, ±80 mV, 12-bit ×16, continuous, calibration 17894), bus 13.200 V",
            "0x44  INA226 (die ID 0x2260), configured (averaging ×16, 1.1 ms, continuous), bus 24.000 V",
            "0x45  INA260 (die ID 0x2270), power-on defaults, bus 12.000 V",
            "0x46  answers, but not like a chip of the INA2xx family",
            "5 chip(s): INA219, INA226, INA260, INA3221.",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        // Two INA219s, three INA3221 channels, an INA226 and an INA260.
        assert_eq!(text.matches("[[sensor]]").count(), 7, "{text}");
        assert!(
            text.contains(
                "name = \"ina226_44\"\ndriver = \"ina226\"\nbus = \"/dev/i2c-1\"\naddress = 0x44"
            ),
            "{text}"
        );
        assert!(
            text.contains("name = \"ina3221_41_ch3\"\ndriver = \"ina3221\""),
            "{text}"
        );
        // The blocks are valid configuration.
        let blocks = &text[text.find("[[sensor]]").unwrap()..];
        let config =
            crate::config::Config::from_toml(std::path::Path::new("t.toml"), blocks).unwrap();
        assert_eq!(config.sensors.len(), 7);
    }

    #[test]
    fn an_empty_bus_says_what_to_check() {
        let expected: Vec<T> = ADDRESS_RANGE.map(nack).collect();
        let mut mock = Mock::new(&expected);
        let found = scan(&mut mock).unwrap();
        mock.done();
        assert!(found.is_empty());
        assert!(report("/dev/i2c-1", false, &found).contains("Check power"));
    }
}
