//! The INA226 and INA260 register maps and the arithmetic between register words and SI
//! units; pure functions shared by the driver and the virtual chips. Sections and equations
//! refer to TI's datasheets SBOS547A (INA226) and SBOS656C (INA260).

pub(crate) use crate::sensor::family::{
    ConfigFields, DIE_INA226, DIE_INA260, MANUFACTURER_TI, MODE_CONTINUOUS, REG_CONFIG, REG_DIE_ID,
    REG_MANUFACTURER_ID,
};

/// INA226: shunt voltage. INA260: current.
pub(crate) const REG_SHUNT_OR_CURRENT: u8 = 0x01;
/// Bus voltage.
pub(crate) const REG_BUS_VOLTAGE: u8 = 0x02;
/// Power.
pub(crate) const REG_POWER: u8 = 0x03;
/// INA226: current.
pub(crate) const REG_CURRENT: u8 = 0x04;
/// INA226: calibration.
pub(crate) const REG_CALIBRATION: u8 = 0x05;
/// Mask/Enable: alert functions and flags; reading it clears CVRF (7.6.6).
pub(crate) const REG_MASK_ENABLE: u8 = 0x06;
/// Alert limit, compared with the value the alert function selects (7.6.7).
pub(crate) const REG_ALERT_LIMIT: u8 = 0x07;
/// INA226 power-on configuration: AVG 1, 1.1 ms conversions, shunt and bus continuous.
pub(crate) const INA226_CONFIG_RESET: u16 = 0x4127;
/// INA260 power-on configuration (its bits 14–12 read 110).
pub(crate) const INA260_CONFIG_RESET: u16 = 0x6127;

/// Mask/Enable bit 3: a conversion finished since the register was last read.
pub(crate) const ME_CVRF: u16 = 1 << 3;
/// Mask/Enable bit 2: the current or power arithmetic overflowed.
pub(crate) const ME_OVF: u16 = 1 << 2;
/// Mask/Enable bit 0: latch the alert. No alert function is enabled, so it does nothing but
/// stay set until the chip loses power: the brown-out canary, read with every CVRF.
pub(crate) const ME_LEN: u16 = 1 << 0;

/// INA226 shunt voltage LSB (7.6.2).
pub(crate) const SHUNT_LSB_VOLTS: f64 = 2.5e-6;
/// Bus voltage LSB of both (7.6.3).
pub(crate) const BUS_LSB_VOLTS: f64 = 1.25e-3;
/// INA260 current LSB (8.6.2).
pub(crate) const INA260_CURRENT_LSB_AMPS: f64 = 1.25e-3;
/// Full scale of a signed 16-bit result register.
pub(crate) const FULL_SCALE_COUNTS: i32 = 32_767;
/// Equation 1: CAL = 0.00512 / (Current_LSB × R_shunt).
pub(crate) const CAL_SCALE: f64 = 0.00512;
/// Equation 3: Current = Shunt × CAL / 2048.
pub(crate) const CURRENT_DIVISOR: i32 = 2048;
/// Equation 4: Power = Current × Bus / 20000.
pub(crate) const POWER_DIVISOR: u32 = 20_000;

/// The configuration word: averaging and conversion-time codes, continuous mode, and the
/// bits 14–12 the chip reads back as its own (`fixed`, from its power-on value).
pub(crate) fn config_word(fixed: u16, avg_code: u16, ct_code: u16) -> u16 {
    (fixed & 0x7000) | ConfigFields::continuous(avg_code, ct_code).encode()
}

/// A signed result register for a value in units of `lsb`, rounded, saturating at full scale.
pub(crate) fn encode_signed(value: f64, lsb: f64) -> u16 {
    let counts = (value / lsb)
        .round()
        .clamp(-f64::from(FULL_SCALE_COUNTS), f64::from(FULL_SCALE_COUNTS));
    (counts as i16) as u16
}

/// The bus voltage register (bit 15 reads 0: 0 to 40.96 V).
pub(crate) fn encode_bus(volts: f64) -> u16 {
    (volts / BUS_LSB_VOLTS)
        .round()
        .clamp(0.0, f64::from(FULL_SCALE_COUNTS)) as u16
}

/// Volts on the bus.
pub(crate) fn decode_bus(word: u16) -> f64 {
    f64::from(word & 0x7FFF) * BUS_LSB_VOLTS
}

/// Whether a signed result register sits at full scale: the true value is beyond it.
pub(crate) fn saturated(word: u16) -> bool {
    i32::from(word as i16).abs() >= FULL_SCALE_COUNTS
}

/// The INA226 current register (Equation 3), or `None` when it overflows 16 bits (OVF).
pub(crate) fn ina226_current(shunt: u16, calibration: u16) -> Option<u16> {
    let value = i32::from(shunt as i16) * i32::from(calibration) / CURRENT_DIVISOR;
    i16::try_from(value).ok().map(|v| v as u16)
}

/// The INA226 power register (Equation 4): the magnitude of the current times the bus.
pub(crate) fn ina226_power(current: u16, bus: u16) -> u16 {
    let magnitude = u32::from((current as i16).unsigned_abs());
    (magnitude * u32::from(bus) / POWER_DIVISOR).min(u32::from(u16::MAX)) as u16
}

/// The INA260 power register: |current| × bus in 10 mW (1.25 mA × 1.25 mV = 1/6400 of it).
pub(crate) fn ina260_power(current: u16, bus: u16) -> u16 {
    let magnitude = u64::from((current as i16).unsigned_abs());
    (magnitude * u64::from(bus) / 6400).min(u64::from(u16::MAX)) as u16
}

pub(crate) use crate::sensor::family::Calibration;

/// An INA226 calibration: Current_LSB = max current / 2^15 (Equation 2), raised if CAL would
/// not fit its 15 bits (bit 15 is reserved: at most 7FFFh).
pub(crate) fn calibration(shunt_ohms: f64, max_current_amps: f64) -> Calibration {
    let minimum_lsb = CAL_SCALE / (32_767.0 * shunt_ohms);
    let lsb = (max_current_amps / 32_768.0).max(minimum_lsb);
    let exact = CAL_SCALE / (lsb * shunt_ohms) * (1.0 + 1e-12);
    let register = (exact.trunc() as u32).clamp(1, 32_767) as u16;
    Calibration {
        register,
        current_lsb_amps: CAL_SCALE / (f64::from(register) * shunt_ohms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worked example through Equations 1–4: 2 mΩ shunt, Current_LSB rounded to 1 mA by
    /// hand, so CAL = 0.00512 / (0.001 × 0.002) = 2560.
    #[test]
    fn the_datasheet_calibration() {
        let c = Calibration {
            register: 2560,
            current_lsb_amps: 0.001,
        };
        // 10 A through 2 mΩ is 20 mV: 8000 counts of 2.5 µV.
        let shunt = encode_signed(0.020, SHUNT_LSB_VOLTS);
        assert_eq!(shunt, 8000);
        let current = ina226_current(shunt, c.register).unwrap();
        assert_eq!(current, 10_000);
        // 12 V on the bus: 9600 counts of 1.25 mV; power LSB 25 mW: 120 W = 4800.
        let bus = encode_bus(12.0);
        assert_eq!(bus, 9600);
        assert_eq!(ina226_power(current, bus), 4800);
        // Equation 2 from 10 A: 305.2 µA LSB, CAL trunc(8388.6) = 8388.
        assert_eq!(calibration(0.002, 10.0).register, 8388);
    }

    #[test]
    fn configuration_words() {
        // AVG 16 (code 2), 1.1 ms (code 4) on the INA226: 0x4527.
        assert_eq!(config_word(INA226_CONFIG_RESET, 2, 4), 0x4527);
        assert_eq!(config_word(INA226_CONFIG_RESET, 0, 4), INA226_CONFIG_RESET);
        assert_eq!(config_word(INA260_CONFIG_RESET, 0, 4), INA260_CONFIG_RESET);
    }

    #[test]
    fn signed_registers_saturate_and_negative_current_gives_positive_power() {
        assert_eq!(encode_signed(1.0, SHUNT_LSB_VOLTS) as i16, 32_767);
        assert!(saturated(encode_signed(-1.0, SHUNT_LSB_VOLTS)));
        let current = encode_signed(-2.0, INA260_CURRENT_LSB_AMPS);
        assert_eq!(current as i16, -1600);
        // 2 A at 12 V: 24 W = 2400 × 10 mW.
        assert_eq!(ina260_power(current, encode_bus(12.0)), 2400);
    }
}
