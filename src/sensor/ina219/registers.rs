//! The INA219 register map and the arithmetic between register words and SI units.
//!
//! Pure functions only: the virtual chip encodes with them, the driver glue and the tests
//! decode with them, so the datasheet's numbers live in exactly one place. Section and table
//! numbers refer to TI's datasheet SBOS448G.

use ina219::configuration::{BusVoltageRange, ShuntVoltageRange};

/// Register pointers (Table 2); configuration at 00h, as on every chip of the family.
pub(crate) use crate::sensor::family::REG_CONFIG;
/// Shunt voltage (read-only).
pub(crate) const REG_SHUNT_VOLTAGE: u8 = 0x01;
/// Bus voltage with CNVR and OVF (read-only).
pub(crate) const REG_BUS_VOLTAGE: u8 = 0x02;
/// Power (read-only; reading it clears CNVR).
pub(crate) const REG_POWER: u8 = 0x03;
/// Current (read-only).
pub(crate) const REG_CURRENT: u8 = 0x04;
/// Calibration.
pub(crate) const REG_CALIBRATION: u8 = 0x05;

/// Configuration register power-on value (8.6.2.1): 32 V, PGA /8, 12-bit, continuous.
pub(crate) const CONFIG_RESET_VALUE: u16 = 0x399F;

/// Shunt voltage LSB, whatever the PGA setting (8.6.3.1).
pub(crate) const SHUNT_LSB_VOLTS: f64 = 10e-6;
/// Bus voltage LSB (8.6.3.2).
pub(crate) const BUS_LSB_VOLTS: f64 = 4e-3;
/// The bus voltage sits in bits 15..3 of its register (8.6.3.2).
pub(crate) const BUS_SHIFT: u32 = 3;
/// Bus voltage register bit 1: a conversion finished since the last power-register read.
pub(crate) const BUS_CNVR: u16 = 1 << 1;
/// Bus voltage register bit 0: the current or power arithmetic overflowed.
pub(crate) const BUS_OVF: u16 = 1 << 0;

/// Equation 1: Cal = trunc(0.04096 / (Current_LSB × R_shunt)).
pub(crate) const CAL_SCALE: f64 = 0.04096;
/// Equation 2: Current_LSB = max expected current / 2^15.
pub(crate) const CURRENT_LSB_DIVISOR: f64 = 32_768.0;
#[cfg(test)]
/// Equation 3: Power_LSB = 20 × Current_LSB.
pub(crate) const POWER_LSB_PER_CURRENT_LSB: f64 = 20.0;
/// Equation 4: Current = Shunt × Cal / 4096.
pub(crate) const CURRENT_DIVISOR: i32 = 4096;
/// Equation 5: Power = Current × Bus / 5000 (bus in 4 mV counts).
pub(crate) const POWER_DIVISOR: u32 = 5000;

/// Full-scale shunt voltage of a PGA range, in 10 µV counts (±4000 … ±32000).
pub(crate) fn shunt_full_scale_counts(range: ShuntVoltageRange) -> i32 {
    i32::from(*range.range_mv().end()) * 100
}

/// Full-scale bus voltage in 4 mV counts (Figure 20: 16 V → 4000, 32 V → 8000).
pub(crate) fn bus_full_scale_counts(range: BusVoltageRange) -> u16 {
    match range {
        BusVoltageRange::Fsr16v => 4000,
        BusVoltageRange::Fsr32v => 8000,
    }
}

/// The shunt voltage register for `volts`: rounded to 10 µV, saturated at the PGA's full
/// scale. The flag says the input was beyond it (the chip then raises OVF).
pub(crate) fn encode_shunt(volts: f64, range: ShuntVoltageRange) -> (u16, bool) {
    let full_scale = shunt_full_scale_counts(range);
    let counts = (volts / SHUNT_LSB_VOLTS).round();
    let over = counts.abs() > f64::from(full_scale);
    let counts = counts.clamp(-f64::from(full_scale), f64::from(full_scale)) as i16;
    (counts as u16, over)
}

/// Volts from a shunt voltage register word (two's complement, 10 µV).
pub(crate) fn decode_shunt(word: u16) -> f64 {
    f64::from(word as i16) * SHUNT_LSB_VOLTS
}

/// The bus voltage register for `volts` with the CNVR and OVF flags.
pub(crate) fn encode_bus(volts: f64, range: BusVoltageRange, cnvr: bool, ovf: bool) -> u16 {
    let counts = (volts / BUS_LSB_VOLTS)
        .round()
        .clamp(0.0, f64::from(bus_full_scale_counts(range))) as u16;
    (counts << BUS_SHIFT) | if cnvr { BUS_CNVR } else { 0 } | if ovf { BUS_OVF } else { 0 }
}

/// Bus voltage in 4 mV counts from its register word.
pub(crate) fn bus_counts(word: u16) -> u16 {
    word >> BUS_SHIFT
}

/// Volts from a bus voltage register word.
pub(crate) fn decode_bus(word: u16) -> f64 {
    f64::from(bus_counts(word)) * BUS_LSB_VOLTS
}

/// The current register the chip computes (Equation 4), or `None` when it overflows 16 bits.
pub(crate) fn current_register(shunt: u16, calibration: u16) -> Option<u16> {
    let value = i32::from(shunt as i16) * i32::from(calibration) / CURRENT_DIVISOR;
    i16::try_from(value).ok().map(|v| v as u16)
}

/// The power register the chip computes (Equation 5). Power is unsigned: the chip multiplies
/// the magnitude of the current. It cannot overflow on its own: 32768 × 8191 / 5000 < 2^16.
pub(crate) fn power_register(current: u16, bus: u16) -> u16 {
    let magnitude = u32::from((current as i16).unsigned_abs());
    (magnitude * u32::from(bus_counts(bus)) / POWER_DIVISOR) as u16
}

pub(crate) use crate::sensor::family::Calibration;

/// The INA219's equations for its calibration.
impl Calibration {
    /// Calibration for a shunt and the largest current expected through it (8.5.1).
    ///
    /// Current_LSB = max current / 2^15 (Equation 2). If that makes Cal exceed 16 bits (a
    /// small full-scale shunt voltage), Current_LSB is raised until it fits. Bit 0 of the
    /// register is void and reads 0 (8.6.4.1), so it is cleared here. The LSB reported is the
    /// one the truncated register really yields, so it carries no rounding error.
    pub(crate) fn for_shunt(shunt_ohms: f64, max_current_amps: f64) -> Calibration {
        let minimum_lsb = CAL_SCALE / (f64::from(u16::MAX - 1) * shunt_ohms);
        let current_lsb = (max_current_amps / CURRENT_LSB_DIVISOR).max(minimum_lsb);
        // The relative nudge keeps values that are whole numbers on paper (20480 in the
        // datasheet example) from truncating to one less through binary rounding.
        let exact = CAL_SCALE / (current_lsb * shunt_ohms) * (1.0 + 1e-12);
        let register = (exact.trunc().min(f64::from(u16::MAX)) as u16).max(2) & !1;
        Calibration::from_register(register, shunt_ohms)
    }

    /// The calibration a register value stands for.
    pub(crate) fn from_register(register: u16, shunt_ohms: f64) -> Calibration {
        Calibration {
            register,
            current_lsb_amps: CAL_SCALE / (f64::from(register) * shunt_ohms),
        }
    }

    #[cfg(test)]
    /// Watts per count of the power register.
    pub(crate) fn power_lsb_watts(&self) -> f64 {
        POWER_LSB_PER_CURRENT_LSB * self.current_lsb_amps
    }

    #[cfg(test)]
    /// Amperes from a current register word.
    pub(crate) fn decode_current(&self, word: u16) -> f64 {
        f64::from(word as i16) * self.current_lsb_amps
    }

    #[cfg(test)]
    /// Watts from a power register word.
    pub(crate) fn decode_power(&self, word: u16) -> f64 {
        f64::from(word) * self.power_lsb_watts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datasheet Table 8 (SBOS448F Table 3), "Configure/Measure/Calculate Example":
    /// 10 A load, 12 V common mode, 2 mΩ shunt, 40 mV shunt range, 16 V bus range.
    #[test]
    fn datasheet_worked_example() {
        let (shunt, over) = encode_shunt(0.020, ShuntVoltageRange::Fsr40mv);
        assert_eq!((shunt, over), (0x07D0, false));
        assert!((decode_shunt(shunt) - 0.020).abs() < 1e-12);

        let bus = encode_bus(11.98, BusVoltageRange::Fsr16v, false, false);
        assert_eq!(bus, 0x5D98);
        assert_eq!(bus_counts(bus), 2995);
        assert!((decode_bus(bus) - 11.98).abs() < 1e-9);

        // Current_LSB = 1 mA chosen by hand in the example: Cal = 0.04096 / (1 mA × 2 mΩ).
        let cal = Calibration::from_register(0x5000, 0.002);
        assert_eq!(cal.register, 20_480);
        assert!((cal.current_lsb_amps - 0.001).abs() < 1e-12);

        let current = current_register(shunt, cal.register).unwrap();
        assert_eq!(current, 0x2710);
        assert!((cal.decode_current(current) - 10.0).abs() < 1e-9);

        let power = power_register(current, bus);
        assert_eq!(power, 0x1766);
        assert!((cal.decode_power(power) - 119.8).abs() < 1e-9);
    }

    /// Datasheet Figure 19 / Table 7: shunt register examples at each PGA setting.
    #[test]
    fn shunt_register_examples() {
        assert_eq!(encode_shunt(0.31999, ShuntVoltageRange::Fsr320mv).0, 0x7CFF);
        assert_eq!(encode_shunt(-0.32, ShuntVoltageRange::Fsr320mv).0, 0x8300);
        assert_eq!(
            encode_shunt(-0.04001, ShuntVoltageRange::Fsr320mv).0,
            0xF05F
        );
        assert!((decode_shunt(0xF05F) + 0.04001).abs() < 1e-12);
    }

    #[test]
    fn shunt_saturates_at_the_pga_range_and_flags_it() {
        let (word, over) = encode_shunt(0.075, ShuntVoltageRange::Fsr40mv);
        assert_eq!((word as i16, over), (4000, true));
        let (word, over) = encode_shunt(-0.5, ShuntVoltageRange::Fsr320mv);
        assert_eq!((word as i16, over), (-32000, true));
        assert!(!encode_shunt(0.04, ShuntVoltageRange::Fsr40mv).1);
    }

    #[test]
    fn bus_register_flags_and_full_scale() {
        assert_eq!(
            encode_bus(32.0, BusVoltageRange::Fsr32v, false, false),
            0x1F40 << 3
        );
        let word = encode_bus(16.0, BusVoltageRange::Fsr16v, true, true);
        assert_eq!(word, (0x0FA0 << 3) | 0b11);
        // Above full scale the register saturates.
        assert_eq!(
            bus_counts(encode_bus(20.0, BusVoltageRange::Fsr16v, false, false)),
            4000
        );
    }

    #[test]
    fn current_and_power_overflow() {
        // 320 mV × Cal 4096 / 4096 = 32000: fits; with Cal 8192 it does not.
        assert_eq!(current_register(32_000, 4096), Some(32_000));
        assert_eq!(current_register(32_000, 8192), None);
        // The largest current at the largest bus voltage still fits the power register.
        assert_eq!(power_register(0x8000, 8191 << 3), 53_680);
        // Power is unsigned: negative current gives positive power.
        let negative = (-10_000i16) as u16;
        assert_eq!(power_register(negative, 2995 << 3), 5990);
    }

    #[test]
    fn calibration_for_common_shunts() {
        // Stock breakout: 0.1 Ω, 3.2 A → Current_LSB 97.66 µA, Cal trunc(4194.3) = 4194.
        let c = Calibration::for_shunt(0.1, 3.2);
        assert_eq!(c.register, 4194);
        assert!((c.current_lsb_amps - 3.2 / 32_768.0).abs() < 1e-8);
        // The datasheet example's numbers come out exact: 1 mA × 2 mΩ → 20480.
        assert_eq!(Calibration::for_shunt(0.002, 32.768).register, 20_480);
        // 75 mV / 200 A shunt: Cal = trunc(0.04096 × 32768 / 0.075) = 17895 → 17894 (bit 0 void).
        let c = Calibration::for_shunt(0.000375, 200.0);
        assert_eq!(c.register, 17_894);
        // The effective LSB is what the truncated register gives.
        assert!((c.current_lsb_amps - 0.04096 / (17_894.0 * 0.000375)).abs() < 1e-15);
        // A tiny full-scale shunt voltage would need Cal > 65535: the LSB is raised instead.
        let c = Calibration::for_shunt(0.001, 1.0);
        assert_eq!(c.register, 65_534);
    }
}
