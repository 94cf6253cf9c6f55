//! The INA226 and the INA260 (an INA226 with its 2 mΩ shunt inside and current in place of
//! shunt voltage): one driver, their own register layer.
//!
//! Written here rather than taken from the `ina226` or `ina260` crates: the `ina260` crate is
//! on embedded-hal 0.2 and unmaintained since 2019; the `ina226` crate reads one register per
//! call, in the order its caller chooses, and neither knows the conversion-ready and brown-out
//! handling below or the ladder every chip shares.
//!
//! # One sample: four transfers, 196 SCL clocks (1.96 ms at 100 kHz, 0.49 ms at 400 kHz)
//!
//! 1. **Mask/Enable** (06h): CVRF says a conversion finished since the last sample (reading
//!    it clears the flag, SBOS547A 7.6.7); OVF that the chip's arithmetic overflowed; and
//!    LEN, set when the chip was programmed and cleared only by a power-on reset, says the
//!    chip still holds its settings — the brown-out canary, in a read the sample needs anyway.
//! 2. **Shunt voltage** (INA226) or **current** (INA260), 01h.
//! 3. **Bus voltage**, 02h.
//! 4. **Mask/Enable** again: CVRF clear means no conversion finished since step 1, so the two
//!    values are of one conversion; set, one finished in between and steps 2–4 are repeated
//!    (conversions shorter than [`MIXED_CHECK_ABOVE`] finish during any four reads; those
//!    values are taken as read). LEN is checked again.
//!
//! Current and power come from the shunt (or current) and bus registers; the chip's power
//! register, a product of the same two, adds nothing but a transfer.

pub(crate) mod registers;

use std::time::Duration;

use self::registers::*;
use super::family::{self, Programming};
use super::ladder::{ChipBus, ChipDriver, Outcome, Registers, Sample};
use super::Reading;
use crate::config::{Chip, Ina226Setup, SensorConfig};

/// Conversions faster than this finish during any read sequence; two adjacent ones differ by
/// less than the noise, so they are taken without a second try.
pub(crate) const MIXED_CHECK_ABOVE: Duration = Duration::from_millis(4);

/// What the daemon writes into an INA226 or INA260.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    /// INA226 or INA260.
    pub(crate) chip: Chip,
    /// The configuration register.
    pub(crate) configuration: u16,
    /// The INA226's calibration (the INA260 has none).
    pub(crate) calibration: Option<Calibration>,
    /// The shunt.
    pub(crate) shunt_ohms: f64,
    /// One shunt and one bus conversion, averaged.
    pub(crate) conversion_time: Duration,
    /// What the ADCs are programmed with.
    pub(crate) adc: Ina226Setup,
}

impl Settings {
    /// The settings for `sensor`, an INA226 whose ADCs are programmed with `adc`.
    pub(crate) fn ina226(sensor: &SensorConfig, adc: Ina226Setup) -> Settings {
        Settings {
            chip: Chip::Ina226,
            configuration: config_word(
                INA226_CONFIG_RESET,
                adc.averaging.code(),
                adc.conversion.code(),
            ),
            calibration: Some(calibration(
                sensor.calibrated_shunt_ohms(),
                sensor.max_current_amps(),
            )),
            shunt_ohms: sensor.shunt_ohms(),
            conversion_time: sensor.conversion_time(),
            adc,
        }
    }

    /// The settings for `sensor`, an INA260 (its shunt inside) whose ADCs are programmed
    /// with `adc`.
    pub(crate) fn ina260(sensor: &SensorConfig, adc: Ina226Setup) -> Settings {
        Settings {
            chip: Chip::Ina260,
            configuration: config_word(
                INA260_CONFIG_RESET,
                adc.averaging.code(),
                adc.conversion.code(),
            ),
            calibration: None,
            shunt_ohms: sensor.shunt_ohms(),
            conversion_time: sensor.conversion_time(),
            adc,
        }
    }

    /// What the chip is programmed with, in words, for `check-config`.
    pub(crate) fn describe(&self, sensor: &SensorConfig) -> String {
        let adc = format!(
            "ADC {} µs ×{} ({:.2} ms)",
            self.adc.conversion.duration().as_micros(),
            self.adc.averaging.samples(),
            self.conversion_time.as_secs_f64() * 1000.0
        );
        match self.calibration {
            Some(cal) => format!(
                "shunt {} Ω, up to {} A (±81.92 mV range, Current_LSB {:.3} mA, Cal {}), bus 36 V, {adc}, configuration {:#06x}",
                self.shunt_ohms,
                super::short(sensor.max_current_amps()),
                cal.current_lsb_amps * 1000.0,
                cal.register,
                self.configuration
            ),
            None => format!(
                "internal 2 mΩ shunt, up to 15 A (current LSB 1.25 mA), bus 36 V, {adc}, configuration {:#06x}",
                self.configuration
            ),
        }
    }
}

/// A driver of one INA226 or INA260.
#[derive(Debug)]
pub(crate) struct Ina226 {
    settings: Settings,
}

impl Ina226 {
    /// A driver that programs `settings`.
    pub(crate) fn new(settings: Settings) -> Ina226 {
        Ina226 { settings }
    }

    fn reading(&self, [first, bus]: [u16; 2], ovf: bool) -> Reading {
        let bus_volts = decode_bus(bus);
        let saturated = saturated(first);
        let (shunt_volts, amps) = match self.settings.chip {
            Chip::Ina260 => {
                let amps = f64::from(first as i16) * INA260_CURRENT_LSB_AMPS;
                (amps * self.settings.shunt_ohms, amps)
            }
            _ => {
                let volts = f64::from(first as i16) * SHUNT_LSB_VOLTS;
                (volts, volts / self.settings.shunt_ohms)
            }
        };
        Reading::measured(bus_volts, shunt_volts, amps, saturated, ovf)
    }
}

impl ChipDriver for Ina226 {
    fn program<B: ChipBus>(&mut self, bus: &mut Registers<B>, first: bool) -> Outcome<()> {
        let s = self.settings;
        let programming = Programming {
            chip: s.chip,
            calibration: s.calibration.map(|cal| (REG_CALIBRATION, cal.register)),
            configuration: s.configuration,
            canary: (REG_MASK_ENABLE, ME_LEN),
        };
        family::program(bus, &programming, first)
    }

    fn sample<B: ChipBus>(&mut self, regs: &mut Registers<B>, _: u8) -> Outcome<Sample> {
        let mut flags = regs.read(REG_MASK_ENABLE)?;
        if flags & ME_LEN == 0 {
            return Ok(Sample::LostSettings);
        }
        if flags & ME_CVRF == 0 {
            return Ok(Sample::NotReady);
        }
        for _ in 0..2 {
            let words = [
                regs.read(REG_SHUNT_OR_CURRENT)?,
                regs.read(REG_BUS_VOLTAGE)?,
            ];
            let after = regs.read(REG_MASK_ENABLE)?;
            if after & ME_LEN == 0 {
                return Ok(Sample::LostSettings);
            }
            if after & ME_CVRF == 0 || self.settings.conversion_time <= MIXED_CHECK_ABOVE {
                // The OVF of the conversion the values are of.
                return Ok(Sample::Reading(self.reading(words, flags & ME_OVF != 0)));
            }
            // A conversion finished during the reads; the registers hold it now, whole.
            flags = after;
        }
        Ok(Sample::NotReady)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::SensorError;

    /// The settings of an INA226 or INA260 sensor.
    fn settings_of(sensor: &SensorConfig) -> Settings {
        match sensor.setup() {
            crate::config::ChipSetup::Ina226(adc) => Settings::ina226(sensor, *adc),
            crate::config::ChipSetup::Ina260(adc) => Settings::ina260(sensor, *adc),
            other => panic!("not an INA226 or INA260: {other:?}"),
        }
    }
    use crate::config::Config;
    use crate::sensor::simulated::virtual_bus;
    use crate::sensor::simulated::Clock;
    use crate::sensor::transcript::{on_mock, replay, Step, Step::*};
    use crate::sensor::ErrorKind;

    const ADDR: u8 = 0x40;
    /// Mask/Enable with a conversion ready and the canary set; with the canary alone.
    const READY: u16 = ME_CVRF | ME_LEN;
    const IDLE: u16 = ME_LEN;

    /// A simulated sensor of `chip` reproducing SBOS547A Table 1: 10 A through 2 mΩ, 12 V
    /// at the source, 11.98 V at the load; `keys` adds or overrides sensor keys.
    fn sensor(chip: &str, keys: &str) -> crate::config::SensorConfig {
        let text = format!(
            "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\naddress = {ADDR}\n{keys}\n\
             [sensor.simulation]\nchip = \"{chip}\"\nsupply_volts = 12.0\nsource_ohms = 0.002\n\
             load = {{ model = \"constant\", watts = 119.8 }}\n"
        );
        Config::from_toml(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .sensors
            .remove(0)
    }

    /// Identification, reset, calibration (INA226), configuration, the LEN canary, and the
    /// configuration read back.
    fn init(die: u16, calibration: Option<u16>, configuration: u16) -> Vec<Step> {
        let mut steps = vec![
            Read(REG_MANUFACTURER_ID, MANUFACTURER_TI),
            Read(REG_DIE_ID, die),
            Write(REG_CONFIG, crate::sensor::family::CONFIG_RST),
        ];
        steps.extend(calibration.map(|c| Write(REG_CALIBRATION, c)));
        steps.extend([
            Write(REG_CONFIG, configuration),
            Write(REG_MASK_ENABLE, ME_LEN),
            Read(REG_CONFIG, configuration),
        ]);
        steps
    }

    /// One sample: flags, the two values, flags again (nothing finished meanwhile).
    fn sample(first: u16, bus: u16) -> Vec<Step> {
        vec![
            Read(REG_MASK_ENABLE, READY),
            Read(REG_SHUNT_OR_CURRENT, first),
            Read(REG_BUS_VOLTAGE, bus),
            Read(REG_MASK_ENABLE, IDLE),
        ]
    }

    /// Program through the mock, then read once; the reading, with the mock checked.
    fn run(config: &crate::config::SensorConfig, steps: &[Step]) -> Reading {
        let (mut chip, mut mock) = on_mock(Ina226::new(settings_of(config)), ADDR, steps);
        assert!(matches!(chip.read(0), Err(SensorError::NotReady)));
        let reading = chip.read(0).unwrap();
        mock.done();
        reading
    }

    /// The same transcript on the virtual chip of `config`.
    fn replay_virtual(config: &crate::config::SensorConfig, steps: &[Step]) {
        let (clock, time) = Clock::manual();
        let mut bus = virtual_bus(std::slice::from_ref(config), &clock);
        replay(&mut bus, &time, ADDR, steps);
    }

    #[test]
    fn the_ina226_programs_and_converts_the_datasheet_example() {
        // Current_LSB 1 mA: Cal = 0.00512 / (1 mA × 2 mΩ) = 2560 (A00h), as in Table 1.
        let config = sensor("ina226", "shunt_ohms = 0.002\nmax_current_amps = 32.768");
        let settings = settings_of(&config);
        assert_eq!(settings.calibration.unwrap().register, 0x0A00);
        assert_eq!(settings.configuration, INA226_CONFIG_RESET);
        let mut steps = init(DIE_INA226, Some(0x0A00), 0x4127);
        steps.push(Wait(Duration::from_millis(3)));
        // Shunt 1F40h (20 mV), bus 2570h (11.98 V).
        steps.extend(sample(0x1F40, 0x2570));
        let r = run(&config, &steps);
        assert!((r.shunt_voltage_volts - 0.020).abs() < 1e-12, "{r:?}");
        assert!((r.bus_voltage_volts - 11.98).abs() < 1e-12, "{r:?}");
        assert!((r.current_amperes - 10.0).abs() < 1e-9, "{r:?}");
        assert!((r.power_watts - 119.8).abs() < 1e-9, "{r:?}");
        assert!(!r.overflow);
        // The virtual chip answers the same, and its own current and power registers hold
        // Table 1's 2710h and 12B8h.
        let (clock, time) = Clock::manual();
        let mut bus = virtual_bus(std::slice::from_ref(&config), &clock);
        replay(&mut bus, &time, ADDR, &steps);
        assert_eq!(bus.register(ADDR, REG_CURRENT), Some(0x2710));
        assert_eq!(bus.register(ADDR, REG_POWER), Some(0x12B8));
    }

    #[test]
    fn the_ina260_reads_current_from_its_own_shunt() {
        let config = sensor("ina260", "");
        let mut steps = init(DIE_INA260, None, INA260_CONFIG_RESET);
        steps.push(Wait(Duration::from_millis(3)));
        // Current 1F40h: 8000 × 1.25 mA = 10 A; bus 11.98 V.
        steps.extend(sample(0x1F40, 0x2570));
        let r = run(&config, &steps);
        assert!((r.current_amperes - 10.0).abs() < 1e-9, "{r:?}");
        assert!((r.power_watts - 119.8).abs() < 1e-9, "{r:?}");
        assert!((r.shunt_voltage_volts - 0.020).abs() < 1e-12, "{r:?}");
        replay_virtual(&config, &steps);
    }

    #[test]
    fn averaging_and_conversion_time_go_into_the_configuration() {
        // AVG 64 (code 3), 588 µs (code 3) for both ADCs, continuous: 4000h | 3 << 9 | 3 << 6
        // | 3 << 3 | 7.
        let config = sensor(
            "ina226",
            "shunt_ohms = 0.002\nmax_current_amps = 32.768\nadc = { samples = 64, conversion_time = \"588us\" }",
        );
        let settings = settings_of(&config);
        assert_eq!(settings.configuration, 0x46DF);
        assert_eq!(
            settings.conversion_time,
            Duration::from_micros(64 * 2 * 588)
        );
    }

    #[test]
    fn a_conversion_finishing_mid_sample_is_read_again_whole() {
        // ×4 averaging: 8.8 ms per conversion.
        let config = sensor(
            "ina226",
            "shunt_ohms = 0.002\nmax_current_amps = 32.768\nadc = { samples = 4 }",
        );
        let mut steps = init(DIE_INA226, Some(0x0A00), 0x4327);
        steps.extend([
            Read(REG_MASK_ENABLE, READY),
            Read(REG_SHUNT_OR_CURRENT, 0x1F40),
            Read(REG_BUS_VOLTAGE, 0x2570),
            // Another conversion finished: its shunt (5 A) may or may not be in the first
            // value; read both again.
            Read(REG_MASK_ENABLE, READY),
            Read(REG_SHUNT_OR_CURRENT, 0x0FA0),
            Read(REG_BUS_VOLTAGE, 0x2580),
            Read(REG_MASK_ENABLE, IDLE),
        ]);
        let r = run(&config, &steps);
        assert!((r.current_amperes - 5.0).abs() < 1e-9, "{r:?}");
        assert!(
            (r.bus_voltage_volts - 0x2580 as f64 * 1.25e-3).abs() < 1e-12,
            "{r:?}"
        );
    }

    #[test]
    fn a_cleared_canary_is_a_brown_out_and_the_chip_is_programmed_again() {
        let config = sensor("ina226", "shunt_ohms = 0.002\nmax_current_amps = 32.768");
        let mut steps = init(DIE_INA226, Some(0x0A00), 0x4127);
        // Power-on Mask/Enable: LEN is 0, a conversion is ready at power-on settings.
        steps.push(Read(REG_MASK_ENABLE, ME_CVRF));
        // No reset and no identification: calibration, configuration, canary.
        steps.extend([
            Write(REG_CALIBRATION, 0x0A00),
            Write(REG_CONFIG, 0x4127),
            Write(REG_MASK_ENABLE, ME_LEN),
        ]);
        steps.extend(sample(0x1F40, 0x2570));
        let (mut chip, mut mock) = on_mock(Ina226::new(settings_of(&config)), ADDR, &steps);
        assert!(matches!(chip.read(0), Err(SensorError::NotReady)));
        assert!(matches!(chip.read(0), Err(SensorError::NotReady)));
        assert_eq!(chip.take_events().reprogrammed, 1);
        assert!((chip.read(0).unwrap().power_watts - 119.8).abs() < 1e-9);
        mock.done();
    }

    #[test]
    fn another_chip_at_the_address_is_named() {
        let config = sensor("ina226", "shunt_ohms = 0.002\nmax_current_amps = 32.768");
        let steps = [
            Read(REG_MANUFACTURER_ID, MANUFACTURER_TI),
            Read(REG_DIE_ID, DIE_INA260),
        ];
        let (mut chip, mut mock) = on_mock(Ina226::new(settings_of(&config)), ADDR, &steps);
        let err = chip.read(0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(err.to_string().contains("not an INA226"), "{err}");
        mock.done();
    }
}
