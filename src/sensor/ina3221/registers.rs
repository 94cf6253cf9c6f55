//! The INA3221 register map and the arithmetic between register words and SI units; pure
//! functions shared by the driver and the virtual chip. Sections refer to TI's datasheet
//! SBOS576D.

pub(crate) use crate::sensor::family::{
    ConfigFields, DIE_INA3221, MANUFACTURER_TI, MODE_CONTINUOUS, REG_CONFIG, REG_DIE_ID,
    REG_MANUFACTURER_ID,
};

/// Mask/Enable: flags and alert controls; reading it clears CVRF (8.6.2.14).
pub(crate) const REG_MASK_ENABLE: u8 = 0x0F;

/// Shunt voltage register of channel 1, 2 or 3: 01h, 03h, 05h.
pub(crate) fn reg_shunt(channel: u8) -> u8 {
    2 * channel - 1
}

/// Bus voltage register of channel 1, 2 or 3: 02h, 04h, 06h.
pub(crate) fn reg_bus(channel: u8) -> u8 {
    2 * channel
}

/// Power-on configuration: all three channels, AVG 1, 1.1 ms conversions, continuous.
pub(crate) const CONFIG_RESET: u16 = 0x7127;
/// Configuration bit enabling channel 1, 2 or 3: bits 14, 13, 12.
pub(crate) fn config_channel_enable(channel: u8) -> u16 {
    1 << (15 - channel)
}

/// Mask/Enable bit 0: a conversion cycle over every enabled channel finished.
pub(crate) const ME_CVRF: u16 = 1 << 0;
/// Mask/Enable bit 11: latch the warning alert. The warning limits stay at their power-on
/// maximum, so it never fires: set when programmed and cleared only by a power-on reset, it is
/// the brown-out canary, read with every CVRF.
pub(crate) const ME_WEN: u16 = 1 << 11;

/// Shunt voltage LSB (8.6.2.2): bits 15–3, 40 µV.
pub(crate) const SHUNT_LSB_VOLTS: f64 = 40e-6;
/// Bus voltage LSB (8.6.2.3): bits 15–3, 8 mV.
pub(crate) const BUS_LSB_VOLTS: f64 = 8e-3;
/// Full scale of the 13-bit results: ±163.8 mV over the shunt, 32.76 V on the bus.
pub(crate) const FULL_SCALE_COUNTS: i32 = 4095;

/// The configuration word for the enabled channels, averaging and conversion-time codes.
pub(crate) fn config_word(channels: &[u8], avg_code: u16, ct_code: u16) -> u16 {
    channels
        .iter()
        .fold(0, |w, c| w | config_channel_enable(*c))
        | ConfigFields::continuous(avg_code, ct_code).encode()
}

/// A result register (bits 15–3) for `value` in units of `lsb`, saturating at full scale.
pub(crate) fn encode(value: f64, lsb: f64) -> u16 {
    let counts = (value / lsb)
        .round()
        .clamp(-f64::from(FULL_SCALE_COUNTS), f64::from(FULL_SCALE_COUNTS)) as i16;
    (counts << 3) as u16
}

/// The signed count of a result register.
pub(crate) fn counts(word: u16) -> i32 {
    i32::from((word as i16) >> 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_words() {
        assert_eq!(
            (reg_shunt(1), reg_bus(1), reg_shunt(3), reg_bus(3)),
            (1, 2, 5, 6)
        );
        assert_eq!(config_word(&[1, 2, 3], 0, 4), CONFIG_RESET);
        // Channel 2 only, AVG 16 (code 2), 1.1 ms.
        assert_eq!(config_word(&[2], 2, 4), 0x2527);
    }

    #[test]
    fn results_sit_in_bits_15_to_3() {
        // 163.8 mV is full scale: 4095 × 40 µV.
        assert_eq!(encode(0.1638, SHUNT_LSB_VOLTS), 4095 << 3);
        assert_eq!(counts(encode(-0.01, SHUNT_LSB_VOLTS)), -250);
        // 12 V: 1500 × 8 mV.
        assert_eq!(counts(encode(12.0, BUS_LSB_VOLTS)), 1500);
        assert_eq!(counts(encode(1.0, SHUNT_LSB_VOLTS)), 4095);
    }
}
