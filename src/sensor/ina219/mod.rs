//! The INA219: identified and first programmed through the `ina219` crate (reset, and its
//! checks that the chip answers like an INA219), then read with a sequence of our own.
//!
//! The same code reads a chip on `/dev/i2c-N` and a virtual chip on a virtual bus.
//!
//! # One sample: four transfers, 196 SCL clocks (1.96 ms at 100 kHz, 0.49 ms at 400 kHz)
//!
//! 1. **Bus voltage** (02h): CNVR says a conversion finished since the last sample (else there
//!    is nothing new, SBOS448G 8.6.3.2).
//! 2. **Power** (03h): reading it clears CNVR (8.6.3.2).
//! 3. **Shunt voltage** (01h).
//! 4. **Bus voltage** again: with CNVR still clear, no conversion finished since the power
//!    read, so power, shunt and this bus voltage are all of one conversion; OVF here is that
//!    conversion's. With CNVR set, one finished in between and steps 2–4 are repeated.
//!    (Bus voltage first and shunt second, as before, pairs a bus voltage of one conversion
//!    with a shunt voltage of the next whenever one finishes between the two reads.)
//!    Conversions shorter than [`MIXED_CHECK_ABOVE`] finish during any four reads; those
//!    values are taken as read, from adjacent conversions.
//!
//! The power register is also the brown-out canary, without a transfer of its own: a chip that
//! lost power comes back with calibration 0, so its power reads 0 while shunt and bus say
//! otherwise; the configuration and calibration registers are then read back, and the chip
//! reprogrammed at once. While no current flows that check cannot tell, so after
//! [`VERIFY_AFTER`] such samples they are read back anyway. A power register that disagrees
//! with its own conversion's shunt and bus (someone else changed the calibration) is checked
//! the same way.
//!
//! Current and power are computed here from the shunt and bus voltage registers rather than read
//! from the chip's current and power registers: those carry the truncation of the calibration
//! value and of the chip's integer arithmetic (Equations 4 and 5), steps of a whole
//! Current_LSB and of 20 × Current_LSB, where the software result is limited only by the ADCs
//! (10 µV over the shunt, 4 mV on the bus).

pub(crate) mod registers;

use std::time::Duration;

use ina219::address::Address;
use ina219::calibration::Calibration as CrateCalibration;
use ina219::configuration::{Configuration, MeasuredSignals, OperatingMode, Reset};
use ina219::errors::InitializationErrorReason;
use ina219::measurements::{CurrentRegister, PowerRegister};
use ina219::SyncIna219;

use self::registers::*;
use super::ladder::{bus_error, ChipBus, ChipDriver, Outcome, Registers, Sample};
use super::{Reading, SensorError};
use crate::config::{Ina219Setup, SensorConfig};

/// Samples in a row without current after which configuration and calibration are read back.
pub(crate) const VERIFY_AFTER: u32 = 16;
/// Conversions faster than this finish during any read sequence; the values of two adjacent
/// ones differ by less than the noise, so they are taken without a second try.
pub(crate) const MIXED_CHECK_ABOVE: Duration = Duration::from_millis(4);

/// What the daemon writes into one chip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ChipSettings {
    /// The chip's address.
    pub(crate) address: u8,
    /// The configuration register.
    pub(crate) configuration: Configuration,
    /// The calibration register and the LSBs it gives.
    pub(crate) calibration: Calibration,
    /// The shunt, for current from shunt voltage.
    pub(crate) shunt_ohms: f64,
    /// What they come from.
    pub(crate) setup: Ina219Setup,
}

impl ChipSettings {
    /// The settings for `sensor`, an INA219 programmed with `setup`.
    pub(crate) fn new(sensor: &SensorConfig, setup: Ina219Setup) -> ChipSettings {
        ChipSettings {
            setup,
            address: sensor.address,
            configuration: Configuration {
                reset: Reset::Run,
                bus_voltage_range: setup.bus_range.to_chip(),
                shunt_voltage_range: setup.shunt_range.to_chip(),
                bus_resolution: setup.resolution,
                shunt_resolution: setup.resolution,
                operating_mode: OperatingMode::Continous(MeasuredSignals::ShutAndBusVoltage),
            },
            calibration: Calibration::for_shunt(
                sensor.calibrated_shunt_ohms(),
                sensor.max_current_amps(),
            ),
            shunt_ohms: sensor.shunt_ohms(),
        }
    }

    /// What the chip is programmed with, in words, for `check-config`.
    pub(crate) fn describe(&self, sensor: &SensorConfig) -> String {
        let (pga, range) = (
            self.setup.shunt_range.millivolts(),
            self.setup.bus_range.volts(),
        );
        let (bits, samples) = self.setup.bits_and_samples();
        format!(
            "shunt {shunt} Ω, up to {imax} A (±{pga} mV range, Current_LSB {lsb:.3} mA, Cal {reg}), bus {range} V, ADC {bits}-bit ×{samples} ({conv:.2} ms)",
            shunt = self.shunt_ohms,
            imax = sensor.max_current_amps(),
            lsb = self.calibration.current_lsb_amps * 1000.0,
            reg = self.calibration.register,
            bits = bits,
            samples = samples,
            conv = self.conversion_time().as_secs_f64() * 1000.0,
        )
    }

    /// One shunt plus one bus conversion.
    pub(crate) fn conversion_time(&self) -> Duration {
        Duration::from_micros(u64::from(
            self.configuration.conversion_time_us().unwrap_or(0),
        ))
    }

    /// A reading from the two voltage registers and the OVF flag.
    pub(crate) fn reading(&self, bus_volts: f64, shunt: u16, ovf: bool) -> Reading {
        let shunt_volts = decode_shunt(shunt);
        let full_scale = shunt_full_scale_counts(self.configuration.shunt_voltage_range);
        let saturated = i32::from(shunt as i16).abs() >= full_scale;
        let amps = shunt_volts / self.shunt_ohms;
        Reading::measured(bus_volts, shunt_volts, amps, saturated, ovf)
    }
}

/// The crate's calibration hook: it writes our register value; current and power are
/// computed in software (see the module docs), so the current register is never read.
#[derive(Debug, Clone, Copy)]
struct CalibrationRegister(u16);

impl CrateCalibration for CalibrationRegister {
    type Current = ();
    type Power = ();
    const READ_CURRENT: bool = false;

    fn register_bits(&self) -> u16 {
        self.0
    }
    fn current_from_register(&self, _: CurrentRegister) {}
    fn power_from_register(&self, _: PowerRegister) {}
}

/// How the power register relates to the shunt and bus values of its conversion.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    /// As the calibration says.
    Consistent,
    /// Not as the calibration says: someone changed it.
    Mismatch,
    /// Power 0 while current flows: the calibration may be gone.
    NoCalibration,
    /// No current: the power register cannot tell.
    Undecided,
}

/// A driver of one INA219.
#[derive(Debug)]
pub(crate) struct Ina219 {
    settings: ChipSettings,
    /// Samples in a row the power check could not decide.
    undecided: u32,
}

impl Ina219 {
    /// A driver that programs `settings`.
    pub(crate) fn new(settings: ChipSettings) -> Ina219 {
        Ina219 {
            settings,
            undecided: 0,
        }
    }

    fn check(&self, shunt: u16, bus: u16, power: u16) -> Check {
        let Some(current) = current_register(shunt, self.settings.calibration.register) else {
            // The chip's own arithmetic overflows here too (and raises OVF).
            return Check::Consistent;
        };
        let expected = power_register(current, bus);
        if expected < 2 {
            return Check::Undecided;
        }
        if power == 0 {
            return Check::NoCalibration;
        }
        // One LSB of slack for the chip's rounding, and half a percent: two conversions that
        // close are the same reading within the noise.
        if power.abs_diff(expected) <= 1 + expected / 200 {
            Check::Consistent
        } else {
            Check::Mismatch
        }
    }

    /// Power (clearing CNVR), shunt and bus registers: one conversion if the bus register's
    /// CNVR is clear.
    fn read_conversion<B: ChipBus>(regs: &mut Registers<B>) -> Outcome<(u16, u16, u16)> {
        let power = regs.read(REG_POWER)?;
        let shunt = regs.read(REG_SHUNT_VOLTAGE)?;
        let bus = regs.read(REG_BUS_VOLTAGE)?;
        Ok((shunt, bus, power))
    }

    /// Whether the chip still holds its configuration and calibration.
    fn holds_settings<B: ChipBus>(&self, regs: &mut Registers<B>) -> Outcome<bool> {
        Ok(
            regs.read(REG_CONFIG)? == self.settings.configuration.as_bits()
                && regs.read(REG_CALIBRATION)? == self.settings.calibration.register,
        )
    }
}

impl ChipDriver for Ina219 {
    fn program<B: ChipBus>(&mut self, regs: &mut Registers<B>, first: bool) -> Outcome<()> {
        let settings = self.settings;
        if !first {
            // It is an INA219 and answers: its settings are all it lost.
            regs.write(REG_CALIBRATION, settings.calibration.register)?;
            return regs.write(REG_CONFIG, settings.configuration.as_bits());
        }
        let address = Address::from_byte(settings.address).map_err(|_| {
            SensorError::Invalid(format!(
                "{:#04x} is not an INA219 address",
                settings.address
            ))
        })?;
        let calibration = CalibrationRegister(settings.calibration.register);
        let mut driver =
            SyncIna219::new_calibrated(regs, address, calibration).map_err(|e| match e.reason {
                InitializationErrorReason::I2cError(e) => bus_error(&e),
                other => SensorError::Invalid(format!(
                    "{other:?} at initialisation; is this an INA219 at {:#04x}?",
                    settings.address
                )),
            })?;
        driver
            .set_configuration(settings.configuration)
            .map_err(|e| bus_error(&e))
    }

    fn sample<B: ChipBus>(&mut self, regs: &mut Registers<B>, _: u8) -> Outcome<Sample> {
        if regs.read(REG_BUS_VOLTAGE)? & BUS_CNVR == 0 {
            return Ok(Sample::NotReady);
        }
        let mut conversion = Self::read_conversion(regs)?;
        if conversion.1 & BUS_CNVR != 0 && self.settings.conversion_time() > MIXED_CHECK_ABOVE {
            // A conversion finished during the reads: the registers hold it now, whole.
            conversion = Self::read_conversion(regs)?;
            if conversion.1 & BUS_CNVR != 0 {
                return Ok(Sample::NotReady);
            }
        }
        let (shunt, bus, power) = conversion;
        let ovf = bus & BUS_OVF != 0;
        if !ovf {
            let check = self.check(shunt, bus, power);
            self.undecided = if check == Check::Undecided {
                self.undecided + 1
            } else {
                0
            };
            let verify = matches!(check, Check::NoCalibration | Check::Mismatch)
                || self.undecided >= VERIFY_AFTER;
            if verify {
                self.undecided = 0;
                if !self.holds_settings(regs)? {
                    return Ok(Sample::LostSettings);
                }
            }
        }
        let volts = decode_bus(bus);
        let settings = &self.settings;
        // Beyond the PGA range the bus voltage is still valid; the shunt saturated.
        Ok(Sample::Reading(settings.reading(volts, shunt, ovf)))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::registers::*;
    use super::*;
    use crate::sensor::ladder::{Events, Recovering, REPROGRAM_AFTER};
    use crate::sensor::{ErrorKind, SensorError};

    /// The settings of an INA219 sensor.
    fn settings_of(sensor: &SensorConfig) -> ChipSettings {
        match sensor.setup() {
            crate::config::ChipSetup::Ina219(setup) => ChipSettings::new(sensor, *setup),
            other => panic!("not an INA219: {other:?}"),
        }
    }
    use embedded_hal::i2c::ErrorKind as HalErrorKind;
    use embedded_hal::i2c::NoAcknowledgeSource;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    const ADDR: u8 = 0x40;
    /// Table 8 of the datasheet: 20 mV over 2 mΩ at 11.98 V, Cal 5000h.
    const SHUNT: u16 = 0x07D0;
    const BUS: u16 = 0x5D98;
    const POWER: u16 = 0x1766;

    fn settings() -> ChipSettings {
        // The datasheet example: 16 V, ±40 mV, 12-bit, continuous; 2 mΩ with Cal 5000h.
        ChipSettings {
            address: ADDR,
            configuration: Configuration::from_bits(0x019F),
            calibration: Calibration::from_register(0x5000, 0.002),
            shunt_ohms: 0.002,
            setup: Ina219Setup {
                resolution: ina219::configuration::Resolution::Res12Bit,
                shunt_range: crate::config::chip::ShuntRange::Mv40,
                bus_range: crate::config::chip::BusRange::V16,
            },
        }
    }

    fn read_reg(reg: u8, value: u16) -> T {
        T::write_read(ADDR, vec![reg], value.to_be_bytes().to_vec())
    }

    fn write_reg(reg: u8, value: u16) -> T {
        T::write(ADDR, [vec![reg], value.to_be_bytes().to_vec()].concat())
    }

    fn nack(t: T) -> T {
        t.with_error(HalErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
    }

    /// What `ina219` does at initialisation, then our configuration write.
    fn init(config: u16, calibration: u16) -> Vec<T> {
        vec![
            // Reset (bit 15) and wait until the configuration reads its power-on value.
            T::write(ADDR, vec![REG_CONFIG, 0xB9, 0x9F]),
            read_reg(REG_CONFIG, CONFIG_RESET_VALUE),
            // The crate's paranoid checks: calibration, current and power read 0 after reset,
            // shunt and bus voltage in range.
            read_reg(REG_CALIBRATION, 0),
            read_reg(REG_CURRENT, 0),
            read_reg(REG_POWER, 0),
            read_reg(REG_SHUNT_VOLTAGE, 0),
            read_reg(REG_BUS_VOLTAGE, 0),
            write_reg(REG_CALIBRATION, calibration),
            write_reg(REG_CONFIG, config),
        ]
    }

    /// One sample of a new conversion: bus voltage (CNVR set), power (clears CNVR), shunt
    /// voltage, bus voltage again (CNVR clear: nothing finished meanwhile; OVF as given).
    fn sample(bus: u16, shunt: u16, power: u16) -> Vec<T> {
        vec![
            read_reg(REG_BUS_VOLTAGE, bus | BUS_CNVR),
            read_reg(REG_POWER, power),
            read_reg(REG_SHUNT_VOLTAGE, shunt),
            read_reg(REG_BUS_VOLTAGE, bus & !BUS_CNVR),
        ]
    }

    /// The power register a chip calibrated with `cal` computes from one conversion.
    fn power_of(bus: u16, shunt: u16, cal: u16) -> u16 {
        power_register(current_register(shunt, cal).unwrap(), bus)
    }

    fn chip(mock: &Mock, settings: ChipSettings) -> Recovering<Ina219, Mock> {
        Recovering::new(
            Ina219::new(settings),
            Rc::new(RefCell::new(mock.clone())),
            ADDR,
        )
    }

    /// Programming comes first and restarts the conversions, so the first read is not ready.
    fn programmed(mock: &Mock, settings: ChipSettings) -> Recovering<Ina219, Mock> {
        let mut chip = chip(mock, settings);
        assert!(matches!(chip.read(0), Err(SensorError::NotReady)));
        chip
    }

    /// The exact configuration and calibration written for sensor configs, through the mock.
    #[test]
    fn initialisation_writes_range_gain_adc_and_calibration() {
        let cases = [
            // Stock breakout: 32 V, PGA /8 (±320 mV), 12-bit ×16 both ADCs, continuous;
            // Cal = trunc(0.04096 / (3.2 A / 2^15 × 0.1 Ω)) = 4194.
            ("shunt_ohms = 0.1\nmax_current_amps = 3.2\nbus_voltage_range = 32\nadc = { bits = 12, samples = 16 }", 0x3E67, 4194),
            // 75 mV / 200 A shunt on a 12 V bank: 16 V, PGA /2 (±80 mV), 12-bit ×16.
            ("shunt_ohms = 0.000375\nmax_current_amps = 200.0\nbus_voltage_range = 16\nadc = { bits = 12, samples = 16 }", 0x0E67, 17_894),
            // The datasheet's example circuit (2 mΩ, 15 A expected, 16 V): its configuration
            // 019Fh (PGA /1, 12-bit); Current_LSB = 15 A / 2^15 gives Cal 44739 → 44738.
            ("shunt_ohms = 0.002\nmax_current_amps = 15.0\nbus_voltage_range = 16", 0x019F, 44_738),
            // 9-bit conversions for speed, explicit ±160 mV range; Cal trunc(13421.8) = 13421,
            // bit 0 void → 13420.
            ("shunt_ohms = 0.01\nmax_current_amps = 10.0\nshunt_range_mv = 160\nadc = { bits = 9, samples = 1 }", 0x3007, 13_420),
        ];
        for (keys, config_word, calibration) in cases {
            let text = format!("[[sensor]]\nname = \"a\"\n{keys}\n");
            let config =
                crate::config::Config::from_toml(std::path::Path::new("t.toml"), &text).unwrap();
            let settings = settings_of(&config.sensors[0]);
            assert_eq!(settings.configuration.as_bits(), config_word, "{keys}");
            assert_eq!(settings.calibration.register, calibration, "{keys}");
            let mut expected = init(config_word, calibration);
            let shunt = 200; // 2 mV
            expected.extend(sample(BUS, shunt, power_of(BUS, shunt, calibration)));
            let mut mock = Mock::new(&expected);
            let mut chip = programmed(&mock, settings);
            chip.read(0).unwrap();
            mock.done();
        }
    }

    #[test]
    fn converts_the_datasheet_example_in_four_transfers() {
        assert_eq!(power_of(BUS, SHUNT, 0x5000), POWER);
        let mut expected = init(0x019F, 0x5000);
        expected.extend(sample(BUS, SHUNT, POWER));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, settings());
        let r = chip.read(0).unwrap();
        assert!((r.shunt_voltage_volts - 0.020).abs() < 1e-12);
        assert!((r.bus_voltage_volts - 11.98).abs() < 1e-12);
        assert!((r.current_amperes - 10.0).abs() < 1e-9);
        assert!((r.power_watts - 119.8).abs() < 1e-9);
        assert!(!r.overflow);
        assert_eq!(chip.take_events(), Events::default());
        mock.done();
    }

    #[test]
    fn cnvr_clear_is_not_a_new_reading() {
        let mut expected = init(0x019F, 0x5000);
        // CNVR clear: nothing more is read.
        expected.push(read_reg(REG_BUS_VOLTAGE, BUS));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, settings());
        assert!(matches!(chip.read(0), Err(SensorError::NotReady)));
        mock.done();
    }

    fn read_one(bus: u16, shunt: u16, power: u16) -> Reading {
        let mut expected = init(0x019F, 0x5000);
        expected.extend(sample(bus, shunt, power));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, settings());
        let r = chip.read(0).unwrap();
        mock.done();
        r
    }

    #[test]
    fn a_saturated_shunt_is_reported_never_a_number() {
        // Shunt at the +40 mV full scale, OVF and CNVR set.
        let r = read_one(BUS | BUS_OVF, 4000, 0);
        assert!(r.overflow);
        assert!(r.power_watts.is_nan() && r.current_amperes.is_nan());
        assert!((r.bus_voltage_volts - 11.98).abs() < 1e-12);
        // Saturated without OVF (a calibration with headroom): still unknown.
        let shunt = (-4000i16) as u16;
        let r = read_one(BUS, shunt, power_of(BUS, shunt, 0x5000));
        assert!(r.overflow && r.power_watts.is_nan());
    }

    #[test]
    fn ovf_from_the_arithmetic_alone_keeps_the_software_value() {
        // 30 mV is within ±40 mV, but the chip's current register overflowed: the flag is
        // raised, and current from the shunt voltage is still right.
        let r = read_one(BUS | BUS_OVF, 3000, 0);
        assert!(r.overflow);
        assert!((r.current_amperes - 15.0).abs() < 1e-9);
        assert!((r.power_watts - 15.0 * 11.98).abs() < 1e-9);
    }

    #[test]
    fn a_nack_is_retried_at_once_and_the_sample_goes_on() {
        let mut expected = init(0x019F, 0x5000);
        expected.push(read_reg(REG_BUS_VOLTAGE, BUS | BUS_CNVR));
        expected.push(read_reg(REG_POWER, POWER));
        expected.push(nack(read_reg(REG_SHUNT_VOLTAGE, 0)));
        expected.push(read_reg(REG_SHUNT_VOLTAGE, SHUNT));
        expected.push(read_reg(REG_BUS_VOLTAGE, BUS));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, settings());
        assert!((chip.read(0).unwrap().power_watts - 119.8).abs() < 1e-9);
        let events = chip.take_events();
        assert_eq!(events.failed_transfers[0], 1, "{events:?}");
        assert_eq!((events.retries, events.reprogrammed), (1, 0));
        mock.done();
    }

    #[test]
    fn samples_failing_in_a_row_get_the_chip_programmed_again_without_a_reset() {
        let mut expected = init(0x019F, 0x5000);
        for _ in 0..REPROGRAM_AFTER {
            // The first transfer and both retries fail: the sample fails.
            for _ in 0..3 {
                expected.push(nack(read_reg(REG_BUS_VOLTAGE, 0)));
            }
        }
        // Then calibration and configuration are written again; no reset, no identification.
        expected.push(write_reg(REG_CALIBRATION, 0x5000));
        expected.push(write_reg(REG_CONFIG, 0x019F));
        expected.extend(sample(BUS, SHUNT, POWER));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, settings());
        for _ in 0..REPROGRAM_AFTER {
            assert_eq!(chip.read(0).unwrap_err().kind(), ErrorKind::Nack);
        }
        let events = chip.take_events();
        assert_eq!(events.failed_transfers[0], 3 * REPROGRAM_AFTER);
        assert_eq!(events.retries, 2 * REPROGRAM_AFTER);
        assert!(matches!(chip.read(0), Err(SensorError::NotReady)));
        assert_eq!(chip.take_events().reprogrammed, 1);
        assert!(chip.read(0).is_ok());
        mock.done();
    }

    #[test]
    fn a_chip_that_is_not_an_ina219_is_invalid() {
        // Calibration does not read 0 after reset: something else lives at this address.
        let expected = vec![
            T::write(ADDR, vec![REG_CONFIG, 0xB9, 0x9F]),
            read_reg(REG_CONFIG, CONFIG_RESET_VALUE),
            read_reg(REG_CALIBRATION, 0x1234),
        ];
        let mut mock = Mock::new(&expected);
        let mut chip = chip(&mock, settings());
        assert_eq!(chip.read(0).unwrap_err().kind(), ErrorKind::Invalid);
        mock.done();
    }

    #[test]
    fn a_brown_out_shows_in_the_power_register_and_is_reprogrammed_at_once() {
        let mut expected = init(0x019F, 0x5000);
        // Calibration lost: power reads 0 while 20 mV flow; the chip's power-on settings.
        expected.extend(sample(BUS, SHUNT, 0));
        // The configuration is read back: the power-on value, so calibration need not be.
        expected.push(read_reg(REG_CONFIG, CONFIG_RESET_VALUE));
        expected.push(write_reg(REG_CALIBRATION, 0x5000));
        expected.push(write_reg(REG_CONFIG, 0x019F));
        expected.extend(sample(BUS, SHUNT, POWER));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, settings());
        assert!(matches!(chip.read(0), Err(SensorError::NotReady)));
        assert_eq!(chip.take_events().reprogrammed, 1);
        assert!(chip.read(0).is_ok());
        mock.done();
    }

    #[test]
    fn without_current_the_settings_are_read_back_every_so_often() {
        let mut expected = init(0x019F, 0x5000);
        for _ in 0..VERIFY_AFTER - 1 {
            expected.extend(sample(BUS, 0, 0));
        }
        expected.extend(sample(BUS, 0, 0));
        expected.push(read_reg(REG_CONFIG, 0x019F));
        expected.push(read_reg(REG_CALIBRATION, 0x5000));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, settings());
        for _ in 0..VERIFY_AFTER {
            assert_eq!(chip.read(0).unwrap().current_amperes, 0.0);
        }
        assert_eq!(chip.take_events().reprogrammed, 0);
        mock.done();
    }

    #[test]
    fn a_conversion_finishing_mid_sample_is_read_again_whole() {
        // 12-bit ×16 averaging: 8.5 ms per value, so a conversion can finish mid-sample.
        let mut s = settings();
        s.configuration = Configuration::from_bits(0x01E7);
        let mut expected = init(0x01E7, 0x5000);
        // Power and shunt of one conversion (11.98 V, 20 mV); the next (10 V, 15 mV) finished
        // before the second bus read, which says so with CNVR.
        let (bus2, shunt2) = (2500 << BUS_SHIFT, 1500);
        let power2 = power_of(bus2, shunt2, 0x5000);
        expected.push(read_reg(REG_BUS_VOLTAGE, BUS | BUS_CNVR));
        expected.push(read_reg(REG_POWER, POWER));
        expected.push(read_reg(REG_SHUNT_VOLTAGE, SHUNT));
        expected.push(read_reg(REG_BUS_VOLTAGE, bus2 | BUS_CNVR));
        // Power, shunt and bus again: all of the newest conversion.
        expected.push(read_reg(REG_POWER, power2));
        expected.push(read_reg(REG_SHUNT_VOLTAGE, shunt2));
        expected.push(read_reg(REG_BUS_VOLTAGE, bus2));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, s);
        let r = chip.read(0).unwrap();
        assert!((r.current_amperes - 7.5).abs() < 1e-9, "{r:?}");
        assert!((r.bus_voltage_volts - 10.0).abs() < 1e-9, "{r:?}");
        mock.done();
    }

    #[test]
    fn a_power_register_off_its_calibration_gets_the_settings_read_back() {
        let mut expected = init(0x019F, 0x5000);
        // Someone wrote another calibration: power disagrees with shunt and bus.
        expected.extend(sample(BUS, SHUNT, POWER / 2));
        expected.push(read_reg(REG_CONFIG, 0x019F));
        expected.push(read_reg(REG_CALIBRATION, 0x2800));
        expected.push(write_reg(REG_CALIBRATION, 0x5000));
        expected.push(write_reg(REG_CONFIG, 0x019F));
        let mut mock = Mock::new(&expected);
        let mut chip = programmed(&mock, settings());
        assert!(matches!(chip.read(0), Err(SensorError::NotReady)));
        assert_eq!(chip.take_events().reprogrammed, 1);
        mock.done();
    }
}
