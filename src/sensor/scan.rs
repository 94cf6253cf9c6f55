//! `power-monitord scan`: which of 0x40–0x4F answer on a bus, which of them are INA219s.
//!
//! Read-only: the probe reads the configuration, bus voltage and calibration registers and
//! writes nothing but the register pointer, so it does not disturb a chip a running daemon
//! is using.

use std::fmt::Write as _;

use embedded_hal::i2c::I2c;
use ina219::configuration::{Configuration, OperatingMode};

use super::ina219::registers::{
    bus_counts, decode_bus, CONFIG_RESET_VALUE, REG_BUS_VOLTAGE, REG_CALIBRATION, REG_CONFIG,
};
use super::{ClassifyError, ErrorKind};
use crate::config::{Driver, ADDRESS_RANGE};

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
    /// Something answered, but not like an INA219.
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
    /// An INA219, programmed or not.
    pub fn is_ina219(&self) -> bool {
        matches!(
            self,
            Found::Ina219PowerOn { .. } | Found::Ina219Configured { .. }
        )
    }

    /// The bus voltage an INA219 reads.
    pub fn bus_volts(&self) -> Option<f64> {
        match self {
            Found::Ina219PowerOn { bus_volts } | Found::Ina219Configured { bus_volts, .. } => {
                Some(*bus_volts)
            }
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

/// Read configuration, bus voltage and calibration at `address`, and judge what answered.
fn probe<I2C: I2c>(bus: &mut I2C, address: u8) -> Result<Found, I2C::Error> {
    let configuration = read_register(bus, address, REG_CONFIG)?;
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

/// Probe every INA219 address; addresses that do not acknowledge are left out.
pub fn scan<I2C>(bus: &mut I2C) -> Result<Vec<(u8, Found)>, ScanError>
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
pub fn describe_configuration(word: u16) -> String {
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

/// The report `scan` prints: a line per address, then a `[[sensor]]` block per INA219.
pub fn report(bus_name: &str, driver: Driver, found: &[(u8, Found)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Scanning {bus_name} for INA219s at 0x40-0x4F:");
    if found.is_empty() {
        let _ = writeln!(
            out,
            "  nothing answered. Check power (VCC 3.3-5 V), GND, SDA and SCL, and that A0/A1 select an address in 0x40-0x4F."
        );
        return out;
    }
    for (address, f) in found {
        let line = match f {
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
            Found::Other { configuration, .. } => format!(
                "answers, but not like an INA219 (configuration {configuration:#06x}; an INA226/INA260/INA3221?)"
            ),
            Found::Error { kind, detail } => format!("{kind}: {detail}"),
        };
        let _ = writeln!(out, "  {address:#04x}  {line}");
    }
    let chips: Vec<_> = found.iter().filter(|(_, f)| f.is_ina219()).collect();
    if chips.is_empty() {
        let _ = writeln!(out, "No INA219 found.");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{} INA219(s). For /etc/power-monitord/config.toml (set shunt_ohms and max_current_amps for your shunt, then `power-monitord check-config`):",
        chips.len()
    );
    for (address, f) in chips {
        let volts = f.bus_volts().unwrap_or(0.0);
        let (range, why) = if volts <= 14.6 {
            (16, format!("{volts:.2} V measured; 16 V range up to 16 V"))
        } else {
            (
                32,
                format!("{volts:.2} V measured; the input tops out at 26 V"),
            )
        };
        let _ = write!(
            out,
            "\n[[sensor]]\nname = \"ina219_{address:02x}\"\ndriver = \"{driver}\"\nbus = \"{bus_name}\"\naddress = {address:#04x}\n\
             shunt_ohms = 0.1             # the breakout's R100; the resistance of your shunt\n\
             max_current_amps = 3.2       # the largest current you expect; at most 0.32 V / shunt_ohms\n\
             bus_voltage_range = {range}       # {why}\n\
             adc = {{ bits = 12, samples = 16 }}\ninterval = \"1s\"\n",
            driver = driver.as_str()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::{ErrorKind as HalErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    fn reads(address: u8, config: u16, bus: u16, cal: u16) -> Vec<T> {
        [
            (REG_CONFIG, config),
            (REG_BUS_VOLTAGE, bus),
            (REG_CALIBRATION, cal),
        ]
        .into_iter()
        .map(|(reg, v)| T::write_read(address, vec![reg], v.to_be_bytes().to_vec()))
        .collect()
    }

    fn nack(address: u8) -> T {
        T::write_read(address, vec![REG_CONFIG], vec![0, 0])
            .with_error(HalErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
    }

    #[test]
    fn tells_ina219s_from_other_chips() {
        let mut expected = Vec::new();
        for address in ADDRESS_RANGE {
            match address {
                // 12.416 V = 3104 counts.
                0x40 => expected.extend(reads(address, 0x399F, 3104 << 3 | 0b10, 0)),
                0x41 => expected.extend(reads(address, 0x0E67, 3300 << 3, 17_894)),
                // An INA226 at its reset value.
                0x44 => expected.extend(reads(address, 0x4127, 0x1234, 0)),
                _ => expected.push(nack(address)),
            }
        }
        let mut mock = Mock::new(&expected);
        let found = scan(&mut mock).unwrap();
        mock.done();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0], (0x40, Found::Ina219PowerOn { bus_volts: 12.416 }));
        assert!(matches!(
            found[1].1,
            Found::Ina219Configured {
                calibration: 17_894,
                ..
            }
        ));
        assert!(matches!(
            found[2].1,
            Found::Other {
                configuration: 0x4127,
                ..
            }
        ));

        let text = report("/dev/i2c-1", Driver::Ina219, &found);
        assert!(text.contains("0x41  INA219, configured (16 V, ±80 mV, 12-bit ×16, continuous, calibration 17894), bus 13.200 V"), "{text}");
        assert!(
            text.contains("0x44  answers, but not like an INA219"),
            "{text}"
        );
        assert_eq!(text.matches("[[sensor]]").count(), 2, "{text}");
        assert!(
            text.contains(
                "name = \"ina219_40\"\ndriver = \"ina219\"\nbus = \"/dev/i2c-1\"\naddress = 0x40"
            ),
            "{text}"
        );
        // The blocks are valid configuration.
        let blocks = &text[text.find("[[sensor]]").unwrap()..];
        let config =
            crate::config::Config::from_toml(std::path::Path::new("t.toml"), blocks).unwrap();
        assert_eq!(config.sensors.len(), 2);
    }

    #[test]
    fn an_empty_bus_says_what_to_check() {
        let expected: Vec<T> = ADDRESS_RANGE.map(nack).collect();
        let mut mock = Mock::new(&expected);
        let found = scan(&mut mock).unwrap();
        mock.done();
        assert!(found.is_empty());
        assert!(report("/dev/i2c-1", Driver::Ina219, &found).contains("Check power"));
    }
}
