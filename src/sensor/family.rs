//! What the chips with ID registers share (the INA226, INA260 and INA3221; the INA219 has
//! none): their IDs, the layout of their configuration register, and the one way they are
//! identified and programmed, which every driver and `scan` use.

use super::ladder::{ChipBus, Registers};
use super::SensorError;
use crate::config::Chip;

/// Configuration: 00h on every chip of the family.
pub(crate) const REG_CONFIG: u8 = 0x00;
/// Configuration bit 15: reset every register.
pub(crate) const CONFIG_RST: u16 = 1 << 15;
/// Manufacturer ID (SBOS547A 7.6.7, SBOS656C 8.6.7, SBOS576D 8.6.2.17).
pub(crate) const REG_MANUFACTURER_ID: u8 = 0xFE;
/// Die ID (SBOS547A 7.6.8, SBOS656C 8.6.8, SBOS576D 8.6.2.18).
pub(crate) const REG_DIE_ID: u8 = 0xFF;
/// Texas Instruments, in ASCII: "TI".
pub(crate) const MANUFACTURER_TI: u16 = 0x5449;
/// INA226 die ID: DID 226h, revision 0.
pub(crate) const DIE_INA226: u16 = 0x2260;
/// INA260 die ID: DID 227h, revision 0.
pub(crate) const DIE_INA260: u16 = 0x2270;
/// INA3221 die ID: DID 322h, revision 0.
pub(crate) const DIE_INA3221: u16 = 0x3220;

/// The die ID a chip answers with (revision 0), if it has one.
pub(crate) fn die_id(chip: Chip) -> Option<u16> {
    match chip {
        Chip::Ina219 => None,
        Chip::Ina226 => Some(DIE_INA226),
        Chip::Ina260 => Some(DIE_INA260),
        Chip::Ina3221 => Some(DIE_INA3221),
    }
}

/// The chip a TI die ID names; its low four bits are the revision.
pub(crate) fn chip_of_die(die: u16) -> Option<Chip> {
    Chip::ALL
        .into_iter()
        .find(|chip| die_id(*chip) == Some(die & 0xFFF0))
}

/// The configuration register's averaging, conversion-time and mode fields, where the INA226,
/// INA260 and INA3221 keep them (SBOS547A Table 6 and 7; the others share the layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigFields {
    /// AVG, bits 11–9.
    pub(crate) avg_code: u16,
    /// VBUSCT, bits 8–6.
    pub(crate) bus_ct_code: u16,
    /// VSHCT, bits 5–3.
    pub(crate) shunt_ct_code: u16,
    /// MODE, bits 2–0.
    pub(crate) mode: u16,
}

impl ConfigFields {
    /// The fields with one conversion time for both ADCs, continuous.
    pub(crate) fn continuous(avg_code: u16, ct_code: u16) -> ConfigFields {
        ConfigFields {
            avg_code,
            bus_ct_code: ct_code,
            shunt_ct_code: ct_code,
            mode: MODE_CONTINUOUS,
        }
    }

    /// The fields of a configuration word.
    pub(crate) fn decode(word: u16) -> ConfigFields {
        ConfigFields {
            avg_code: (word >> 9) & 7,
            bus_ct_code: (word >> 6) & 7,
            shunt_ct_code: (word >> 3) & 7,
            mode: word & 7,
        }
    }

    /// The low twelve bits of a configuration word with these fields.
    pub(crate) fn encode(self) -> u16 {
        (self.avg_code << 9) | (self.bus_ct_code << 6) | (self.shunt_ct_code << 3) | self.mode
    }
}

/// A calibration (register 05h of the INA219 and INA226): the register's value and the
/// current LSB it really gives, each chip by its own equation (`ina219::registers`,
/// `ina226::registers`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Calibration {
    /// What goes into register 05h.
    pub(crate) register: u16,
    /// Amperes per count of the current register, as the truncated `register` really gives.
    pub(crate) current_lsb_amps: f64,
}

/// MODE: shunt and bus voltage, continuous.
pub(crate) const MODE_CONTINUOUS: u16 = 0b111;

/// What programming a chip with ID registers writes, in order: its calibration (the INA226),
/// its configuration, then its Mask/Enable register with the bit that stays set until a
/// power-on reset (the brown-out canary, see the drivers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Programming {
    /// Which chip: it must say so in its ID registers.
    pub(crate) chip: Chip,
    /// The calibration register and its value.
    pub(crate) calibration: Option<(u8, u16)>,
    /// The configuration.
    pub(crate) configuration: u16,
    /// The Mask/Enable register and the canary bit.
    pub(crate) canary: (u8, u16),
}

/// Identify (on first contact, `first`, then reset), program, and read the configuration back
/// (on first contact): the same for every chip with ID registers. Later, after a brown-out,
/// the settings are simply written again.
pub(crate) fn program<B: ChipBus>(
    regs: &mut Registers<'_, B>,
    p: &Programming,
    first: bool,
) -> Result<(), SensorError> {
    if first {
        identify(regs, p.chip)?;
        regs.write(REG_CONFIG, CONFIG_RST)?;
    }
    if let Some((register, value)) = p.calibration {
        regs.write(register, value)?;
    }
    regs.write(REG_CONFIG, p.configuration)?;
    regs.write(p.canary.0, p.canary.1)?;
    if first && regs.read(REG_CONFIG)? != p.configuration {
        return Err(SensorError::Invalid(format!(
            "the configuration does not read back as written ({:#06x})",
            p.configuration
        )));
    }
    Ok(())
}

/// Whether the chip at the other end says it is `chip`.
fn identify<B: ChipBus>(regs: &mut Registers<'_, B>, chip: Chip) -> Result<(), SensorError> {
    let want = die_id(chip).unwrap_or(0);
    let manufacturer = regs.read(REG_MANUFACTURER_ID)?;
    let die = regs.read(REG_DIE_ID)?;
    if manufacturer != MANUFACTURER_TI || die & 0xFFF0 != want {
        return Err(SensorError::Invalid(format!(
            "manufacturer {manufacturer:#06x}, die {die:#06x} at {:#04x}: not an {} (it says {MANUFACTURER_TI:#06x}, {want:#06x}); `power-monitord scan` tells what it is",
            regs.address(),
            chip.title()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dies_name_their_chips_whatever_the_revision() {
        assert_eq!(chip_of_die(0x2260), Some(Chip::Ina226));
        assert_eq!(chip_of_die(0x2261), Some(Chip::Ina226));
        assert_eq!(chip_of_die(0x2270), Some(Chip::Ina260));
        assert_eq!(chip_of_die(0x3220), Some(Chip::Ina3221));
        assert_eq!(chip_of_die(0x1234), None);
    }

    #[test]
    fn configuration_fields_read_back_as_written() {
        // INA226 reset value 4127h: AVG 1 (0), 1.1 ms (4) for both, continuous.
        let f = ConfigFields::decode(0x4127);
        assert_eq!(f, ConfigFields::continuous(0, 4));
        assert_eq!(f.encode(), 0x0127);
    }
}
