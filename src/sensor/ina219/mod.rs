//! One INA219, read through the `ina219` crate on any `embedded-hal` I2C bus.
//!
//! The same code reads a chip on `/dev/i2c-N` and a virtual chip on a virtual bus.
//!
//! Current and power are computed here from the shunt and bus voltage registers rather than read
//! from the chip's current and power registers: those carry the truncation of the calibration
//! value and of the chip's integer arithmetic (Equations 4 and 5), steps of a whole
//! Current_LSB and of 20 × Current_LSB, where the software result is limited only by the ADCs
//! (10 µV over the shunt, 4 mV on the bus). The calibration register is still programmed, so
//! the chip's registers are valid for anyone else reading them, and it doubles as a brown-out
//! canary: a chip that lost power reads it back as 0.

pub mod registers;

use std::time::Duration;

use std::cell::RefCell;
use std::rc::Rc;

use embedded_hal::i2c::I2c;
use embedded_hal_bus::i2c::RcDevice;
use ina219::address::Address;
use ina219::calibration::Calibration as CrateCalibration;
use ina219::configuration::{Configuration, MeasuredSignals, OperatingMode, Reset};
use ina219::errors::{InitializationErrorReason, MeasurementError, ShuntVoltageReadError};
use ina219::measurements::{BusVoltage, CurrentRegister, PowerRegister, ShuntVoltage};
use ina219::SyncIna219;

use self::registers::{Calibration, REG_CALIBRATION};
use super::{ClassifyError, Reading, Sensor, SensorError};
use crate::config::SensorConfig;

/// Every how many reads the configuration and calibration registers are read back.
const VERIFY_EVERY: u32 = 16;

/// What the daemon writes into one chip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipSettings {
    /// The chip's address.
    pub address: u8,
    /// The configuration register.
    pub configuration: Configuration,
    /// The calibration register and the LSBs it gives.
    pub calibration: Calibration,
    /// The shunt, for current from shunt voltage.
    pub shunt_ohms: f64,
}

impl ChipSettings {
    /// The settings a (validated) sensor config asks for.
    pub fn from_config(sensor: &SensorConfig) -> ChipSettings {
        let setup = sensor.setup();
        let resolution = setup.resolution;
        ChipSettings {
            address: sensor.address,
            configuration: Configuration {
                reset: Reset::Run,
                bus_voltage_range: setup.bus_range.to_chip(),
                shunt_voltage_range: setup.shunt_range.to_chip(),
                bus_resolution: resolution,
                shunt_resolution: resolution,
                operating_mode: OperatingMode::Continous(MeasuredSignals::ShutAndBusVoltage),
            },
            calibration: Calibration::for_shunt(sensor.shunt_ohms, sensor.max_current_amps),
            shunt_ohms: sensor.shunt_ohms,
        }
    }

    /// What the chip is programmed with, in words, for `check-config`.
    pub fn describe(&self, sensor: &SensorConfig) -> String {
        let setup = sensor.setup();
        format!(
            "shunt {shunt} Ω, up to {imax} A (±{pga} mV range, Current_LSB {lsb:.3} mA, Cal {reg}), bus {range} V, ADC {bits}-bit ×{samples} ({conv:.2} ms)",
            shunt = self.shunt_ohms,
            imax = sensor.max_current_amps,
            pga = setup.shunt_range.millivolts(),
            lsb = self.calibration.current_lsb_amps * 1000.0,
            reg = self.calibration.register,
            range = setup.bus_range.volts(),
            bits = sensor.adc.bits.bits(),
            samples = sensor.adc.samples.samples(),
            conv = self.conversion_time().as_secs_f64() * 1000.0,
        )
    }

    /// One shunt plus one bus conversion.
    pub fn conversion_time(&self) -> Duration {
        Duration::from_micros(u64::from(
            self.configuration.conversion_time_us().unwrap_or(0),
        ))
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

impl ChipSettings {
    /// A reading from the two voltage registers and the OVF flag.
    pub fn reading(&self, bus_voltage_volts: f64, shunt: ShuntVoltage, ovf: bool) -> Reading {
        let shunt_voltage_volts = f64::from(shunt.shunt_voltage_uv()) / 1_000_000.0;
        let full_scale = registers::shunt_full_scale_counts(self.configuration.shunt_voltage_range);
        let saturated = i32::from(shunt.shunt_voltage_10uv()).abs() >= full_scale;
        let (current_amperes, power_watts) = if saturated {
            (f64::NAN, f64::NAN)
        } else {
            let current = shunt_voltage_volts / self.shunt_ohms;
            (current, current * bus_voltage_volts)
        };
        Reading {
            bus_voltage_volts,
            shunt_voltage_volts,
            current_amperes,
            power_watts,
            overflow: ovf || saturated,
        }
    }
}

fn volts(bus: BusVoltage) -> f64 {
    f64::from(bus.voltage_mv()) / 1000.0
}

fn bus_error<E: ClassifyError>(e: E) -> SensorError {
    SensorError::Bus {
        kind: e.error_kind(),
        detail: e.to_string(),
        summary: e.summary(),
    }
}

/// An INA219 on a bus shared with the other sensors of its thread.
///
/// Not initialised until the first read; any bus error or unexpected answer drops the driver,
/// so the next read resets and reprograms the chip.
pub struct Ina219Sensor<I2C: I2c> {
    bus: Rc<RefCell<I2C>>,
    settings: ChipSettings,
    driver: Option<SyncIna219<RcDevice<I2C>, CalibrationRegister>>,
    reads_since_verify: u32,
}

impl<I2C> Ina219Sensor<I2C>
where
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    /// A chip at `settings.address` on the shared `bus`, programmed at its first read.
    pub fn new(bus: Rc<RefCell<I2C>>, settings: ChipSettings) -> Self {
        Ina219Sensor {
            bus,
            settings,
            driver: None,
            reads_since_verify: 0,
        }
    }

    /// What the chip is programmed with.
    pub fn settings(&self) -> &ChipSettings {
        &self.settings
    }

    /// Reset the chip, check it answers like an INA219, write calibration and configuration.
    fn initialise(&mut self) -> Result<(), SensorError> {
        let address = Address::from_byte(self.settings.address).map_err(|_| {
            SensorError::Invalid(format!(
                "{:#04x} is not an INA219 address",
                self.settings.address
            ))
        })?;
        let calibration = CalibrationRegister(self.settings.calibration.register);
        let mut driver =
            SyncIna219::new_calibrated(RcDevice::new(Rc::clone(&self.bus)), address, calibration)
                .map_err(|e| match e.reason {
                InitializationErrorReason::I2cError(e) => bus_error(e),
                other => SensorError::Invalid(format!(
                    "{other:?} at initialisation; is this an INA219 at {:#04x}?",
                    self.settings.address
                )),
            })?;
        driver
            .set_configuration(self.settings.configuration)
            .map_err(bus_error)?;
        self.driver = Some(driver);
        self.reads_since_verify = 0;
        Ok(())
    }

    /// Read back configuration and calibration: a chip that browned out comes back with its
    /// power-on values (configuration 399Fh, calibration 0) and must be reprogrammed.
    fn verify(&mut self) -> Result<(), SensorError> {
        let Some(driver) = self.driver.as_mut() else {
            return Ok(());
        };
        let configuration = driver.configuration().map_err(|e| match e {
            ina219::errors::ConfigurationReadError::I2cError(e) => bus_error(e),
            ina219::errors::ConfigurationReadError::ConfigurationMismatch { read, .. } => {
                SensorError::Invalid(format!(
                    "configuration register reads {:#06x} instead of {:#06x} (brown-out?)",
                    read.as_bits(),
                    self.settings.configuration.as_bits()
                ))
            }
        })?;
        debug_assert_eq!(configuration, self.settings.configuration);
        let mut word = [0u8; 2];
        self.bus
            .borrow_mut()
            .write_read(self.settings.address, &[REG_CALIBRATION], &mut word)
            .map_err(bus_error)?;
        let calibration = u16::from_be_bytes(word);
        if calibration != self.settings.calibration.register {
            return Err(SensorError::Invalid(format!(
                "calibration register reads {calibration:#06x} instead of {:#06x} (brown-out?)",
                self.settings.calibration.register
            )));
        }
        Ok(())
    }

    fn measure(&mut self) -> Result<Reading, SensorError> {
        self.reads_since_verify += 1;
        if self.reads_since_verify >= VERIFY_EVERY {
            self.reads_since_verify = 0;
            self.verify()?;
        }
        let Some(driver) = self.driver.as_mut() else {
            return Err(SensorError::Invalid("chip not initialised".into()));
        };
        let settings = &self.settings;
        match driver.next_measurement() {
            Ok(Some(m)) => Ok(settings.reading(volts(m.bus_voltage), m.shunt_voltage, false)),
            Ok(None) => Err(SensorError::NotReady),
            Err(MeasurementError::MathOverflow(m)) => {
                Ok(settings.reading(volts(m.bus_voltage), m.shunt_voltage, true))
            }
            Err(MeasurementError::I2cError(e)) => Err(bus_error(e)),
            // Beyond the PGA range: saturated. The crate stops before decoding the bus voltage.
            Err(MeasurementError::ShuntVoltageReadError(
                ShuntVoltageReadError::ShuntVoltageOutOfRange { is, .. },
            )) => Ok(settings.reading(f64::NAN, is, true)),
            Err(MeasurementError::ShuntVoltageReadError(ShuntVoltageReadError::I2cError(e))) => {
                Err(bus_error(e))
            }
            Err(MeasurementError::BusVoltageReadError(e)) => {
                Err(SensorError::Invalid(format!("{e:?}")))
            }
        }
    }
}

impl<I2C> Sensor for Ina219Sensor<I2C>
where
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    fn read(&mut self) -> Result<Reading, SensorError> {
        if self.driver.is_none() {
            self.initialise()?;
        }
        let result = self.measure();
        if matches!(
            result,
            Err(SensorError::Bus { .. } | SensorError::Invalid(_))
        ) {
            self.driver = None;
        }
        result
    }
}

/// The sensors of one bus, taking turns on it; one [`Ina219Sensor`] per config.
pub fn sensors_on<I2C>(bus: I2C, sensors: &[SensorConfig]) -> Vec<Box<dyn Sensor>>
where
    I2C: I2c + 'static,
    I2C::Error: ClassifyError,
{
    let bus = Rc::new(RefCell::new(bus));
    sensors
        .iter()
        .map(|s| {
            Box::new(Ina219Sensor::new(
                Rc::clone(&bus),
                ChipSettings::from_config(s),
            )) as Box<dyn Sensor>
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::registers::*;
    use super::*;
    use crate::sensor::ErrorKind;
    use embedded_hal::i2c::ErrorKind as HalErrorKind;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    const ADDR: u8 = 0x40;

    fn settings() -> ChipSettings {
        // The datasheet example: 16 V, ±40 mV, 12-bit, continuous; 2 mΩ with Cal 5000h.
        ChipSettings {
            address: ADDR,
            configuration: Configuration::from_bits(0x019F),
            calibration: Calibration::from_register(0x5000, 0.002),
            shunt_ohms: 0.002,
        }
    }

    fn read_reg(reg: u8, value: u16) -> T {
        T::write_read(ADDR, vec![reg], value.to_be_bytes().to_vec())
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
            T::write(
                ADDR,
                [vec![REG_CALIBRATION], calibration.to_be_bytes().to_vec()].concat(),
            ),
            T::write(
                ADDR,
                [vec![REG_CONFIG], config.to_be_bytes().to_vec()].concat(),
            ),
        ]
    }

    /// One `next_measurement`: bus voltage (CNVR/OVF), power (clears CNVR), shunt voltage.
    fn measurement(bus: u16, shunt: u16) -> Vec<T> {
        vec![
            read_reg(REG_BUS_VOLTAGE, bus),
            read_reg(REG_POWER, 0),
            read_reg(REG_SHUNT_VOLTAGE, shunt),
        ]
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
            let chip = ChipSettings::from_config(&config.sensors[0]);
            assert_eq!(chip.configuration.as_bits(), config_word, "{keys}");
            assert_eq!(chip.calibration.register, calibration, "{keys}");
            let mut expected = init(config_word, calibration);
            expected.extend(measurement(0x5D98 | BUS_CNVR, 0x07D0));
            let mut mock = Mock::new(&expected);
            let mut sensor = Ina219Sensor::new(Rc::new(RefCell::new(mock.clone())), chip);
            sensor.read().unwrap();
            mock.done();
        }
    }

    #[test]
    fn initialises_and_converts_the_datasheet_example() {
        let mut expected = init(0x019F, 0x5000);
        // Table 8: shunt 07D0h (20 mV), bus 5D98h (11.98 V) with CNVR set.
        expected.extend(measurement(0x5D98 | BUS_CNVR, 0x07D0));
        let mut mock = Mock::new(&expected);
        let mut sensor = Ina219Sensor::new(Rc::new(RefCell::new(mock.clone())), settings());
        let r = sensor.read().unwrap();
        assert!((r.shunt_voltage_volts - 0.020).abs() < 1e-12);
        assert!((r.bus_voltage_volts - 11.98).abs() < 1e-12);
        assert!((r.current_amperes - 10.0).abs() < 1e-9);
        assert!((r.power_watts - 119.8).abs() < 1e-9);
        assert!(!r.overflow);
        mock.done();
    }

    #[test]
    fn cnvr_clear_is_not_a_new_reading() {
        let mut expected = init(0x019F, 0x5000);
        expected.extend(measurement(0x5D98, 0x07D0));
        let mut mock = Mock::new(&expected);
        let mut sensor = Ina219Sensor::new(Rc::new(RefCell::new(mock.clone())), settings());
        assert!(matches!(sensor.read(), Err(SensorError::NotReady)));
        mock.done();
    }

    fn read_one(bus: u16, shunt: u16) -> Reading {
        let mut expected = init(0x019F, 0x5000);
        expected.extend(measurement(bus, shunt));
        let mut mock = Mock::new(&expected);
        let mut sensor = Ina219Sensor::new(Rc::new(RefCell::new(mock.clone())), settings());
        let r = sensor.read().unwrap();
        mock.done();
        r
    }

    #[test]
    fn a_saturated_shunt_is_reported_never_a_number() {
        // Shunt at the +40 mV full scale, OVF and CNVR set.
        let r = read_one(0x5D98 | BUS_CNVR | BUS_OVF, 4000);
        assert!(r.overflow);
        assert!(r.power_watts.is_nan() && r.current_amperes.is_nan());
        assert!((r.bus_voltage_volts - 11.98).abs() < 1e-12);
        // Saturated without OVF (a calibration with headroom): still unknown.
        let r = read_one(0x5D98 | BUS_CNVR, (-4000i16) as u16);
        assert!(r.overflow && r.power_watts.is_nan());
    }

    #[test]
    fn ovf_from_the_arithmetic_alone_keeps_the_software_value() {
        // 30 mV is within ±40 mV, but the chip's current register overflowed: the flag is
        // raised, and current from the shunt voltage is still right.
        let r = read_one(0x5D98 | BUS_CNVR | BUS_OVF, 3000);
        assert!(r.overflow);
        assert!((r.current_amperes - 15.0).abs() < 1e-9);
        assert!((r.power_watts - 15.0 * 11.98).abs() < 1e-9);
    }

    #[test]
    fn a_nack_drops_the_driver_and_the_next_read_reinitialises() {
        let mut expected = init(0x019F, 0x5000);
        expected.push(
            read_reg(REG_BUS_VOLTAGE, 0).with_error(HalErrorKind::NoAcknowledge(
                embedded_hal::i2c::NoAcknowledgeSource::Address,
            )),
        );
        expected.extend(init(0x019F, 0x5000));
        expected.extend(measurement(0x5D98 | BUS_CNVR, 0x07D0));
        let mut mock = Mock::new(&expected);
        let mut sensor = Ina219Sensor::new(Rc::new(RefCell::new(mock.clone())), settings());
        let err = sensor.read().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Nack);
        assert!(sensor.read().is_ok());
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
        let mut sensor = Ina219Sensor::new(Rc::new(RefCell::new(mock.clone())), settings());
        assert_eq!(sensor.read().unwrap_err().kind(), ErrorKind::Invalid);
        mock.done();
    }

    #[test]
    fn a_brown_out_is_detected_and_the_chip_reprogrammed() {
        let mut expected = init(0x019F, 0x5000);
        for _ in 0..VERIFY_EVERY - 1 {
            expected.extend(measurement(0x5D98 | BUS_CNVR, 0x07D0));
        }
        // The periodic check: configuration matches, but calibration is back at 0.
        expected.push(read_reg(REG_CONFIG, 0x019F));
        expected.push(read_reg(REG_CALIBRATION, 0));
        expected.extend(init(0x019F, 0x5000));
        expected.extend(measurement(0x5D98 | BUS_CNVR, 0x07D0));
        let mut mock = Mock::new(&expected);
        let mut sensor = Ina219Sensor::new(Rc::new(RefCell::new(mock.clone())), settings());
        for _ in 0..VERIFY_EVERY - 1 {
            sensor.read().unwrap();
        }
        let err = sensor.read().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(err.to_string().contains("brown-out"), "{err}");
        assert!(sensor.read().is_ok());
        mock.done();
    }
}
