//! A virtual INA219: the chip's registers and conversion cycle, answering I2C writes and reads
//! the way the datasheet says the chip does. Conversions run back to back on the chip's own
//! schedule; the latest one completed is computed when a read comes, from the load at the
//! moment it completed: the cost follows the reads, not the time.

use std::time::Duration;

use ina219::configuration::{Configuration, OperatingMode};

use super::faults::FaultSchedule;
use super::{completed_conversion, Cycle, Simulation, VirtualChip};
use crate::sensor::ina219::registers::*;

/// The chip: register file, pointer, conversion timing, and what it measures.
pub(crate) struct VirtualIna219 {
    shunt_ohms: f64,
    simulation: Simulation,
    cycle: Cycle,
    config: u16,
    calibration: u16,
    shunt: u16,
    /// Bus voltage register without CNVR/OVF.
    bus: u16,
    current: u16,
    power: u16,
    cnvr: bool,
    ovf: bool,
}

/// The chip's registers as a reader sees them, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg(test)]
pub(crate) struct Registers {
    /// 00h.
    pub(crate) config: u16,
    /// 01h.
    pub(crate) shunt: u16,
    /// 02h, with CNVR and OVF.
    pub(crate) bus: u16,
    /// 03h.
    pub(crate) power: u16,
    /// 04h.
    pub(crate) current: u16,
    /// 05h.
    pub(crate) calibration: u16,
}

impl VirtualIna219 {
    /// A chip with its power-on register values, measuring across a `shunt_ohms` shunt. It has
    /// been powered for a while: a first conversion is in its registers.
    pub(crate) fn new(shunt_ohms: f64, simulation: Simulation) -> VirtualIna219 {
        let mut chip = VirtualIna219 {
            shunt_ohms,
            simulation,
            cycle: Cycle::default(),
            config: CONFIG_RESET_VALUE,
            calibration: 0,
            shunt: 0,
            bus: 0,
            current: 0,
            power: 0,
            cnvr: false,
            ovf: false,
        };
        chip.reset(Duration::ZERO);
        chip.convert(Duration::ZERO);
        chip
    }

    #[cfg(test)]
    /// The registers as a reader would see them now.
    pub(crate) fn registers(&self) -> Registers {
        Registers {
            config: self.config,
            shunt: self.shunt,
            bus: self.bus_register(),
            power: self.power,
            current: self.current,
            calibration: self.calibration,
        }
    }

    fn bus_register(&self) -> u16 {
        self.bus | if self.cnvr { BUS_CNVR } else { 0 } | if self.ovf { BUS_OVF } else { 0 }
    }
}

/// The I2C side (8.5.6): see [`VirtualChip`].
impl VirtualChip for VirtualIna219 {
    fn faults(&mut self) -> &mut FaultSchedule {
        &mut self.simulation.faults
    }

    fn cycle(&mut self) -> &mut Cycle {
        &mut self.cycle
    }

    /// Every register back to its power-on value (8.6.2.1, RST bit; and after a brown-out).
    fn reset(&mut self, t: Duration) {
        self.config = CONFIG_RESET_VALUE;
        self.calibration = 0;
        self.current = 0;
        self.power = 0;
        self.cnvr = false;
        self.ovf = false;
        self.cycle.restart(t);
    }

    fn due(&self, t: Duration) -> Option<Duration> {
        let config = Configuration::from_bits(self.config);
        // None in power-down or with the ADC off.
        let conversion = Duration::from_micros(u64::from(config.conversion_time_us()?));
        match (config.operating_mode, self.cycle.last) {
            (OperatingMode::Continous(_), last) => {
                completed_conversion(self.cycle.start, conversion, last, t)
            }
            // A triggered conversion happens once per configuration write.
            (OperatingMode::Triggered(_), None) => {
                let at = self.cycle.start + conversion;
                (t >= at).then_some(at)
            }
            _ => None,
        }
    }

    /// Complete a conversion of what the load draws at `t` (8.3.1, 8.6.3).
    fn convert(&mut self, t: Duration) {
        let config = Configuration::from_bits(self.config);
        let signal = self.simulation.signal(t);
        // Beyond the PGA range the register saturates at full scale; OVF is only about the
        // current and power arithmetic (8.6.3.2).
        let (shunt, _saturated) = encode_shunt(
            signal.current_amps * self.shunt_ohms,
            config.shunt_voltage_range,
        );
        self.shunt = shunt;
        self.bus = encode_bus(signal.bus_volts, config.bus_voltage_range, false, false);
        // Current and power need a calibration; without one they read 0 (Table 2, note 2).
        let current = if self.calibration == 0 {
            Some(0)
        } else {
            current_register(shunt, self.calibration)
        };
        self.current = current.unwrap_or(if (shunt as i16) < 0 { 0x8000 } else { 0x7FFF });
        self.power = power_register(self.current, self.bus);
        self.ovf = current.is_none();
        self.cnvr = true;
        self.cycle.last = Some(t);
    }

    fn word(&self, register: u8) -> Option<u16> {
        Some(match register {
            REG_CONFIG => self.config,
            REG_SHUNT_VOLTAGE => self.shunt,
            REG_BUS_VOLTAGE => self.bus_register(),
            REG_POWER => self.power,
            REG_CURRENT => self.current,
            REG_CALIBRATION => self.calibration,
            _ => return None,
        })
    }

    fn store(&mut self, register: u8, word: u16) -> bool {
        match register {
            REG_CONFIG => {
                self.config = word;
                // Writing a mode restarts conversions and clears CNVR (8.6.3.2).
                self.cnvr = false;
                true
            }
            // Bit 0 of the calibration register is void and reads 0 (8.6.4.1).
            REG_CALIBRATION => {
                self.calibration = word & !1;
                false
            }
            _ => false, // read-only
        }
    }

    fn was_read(&mut self, register: u8) {
        // Reading the power register clears CNVR (8.6.3.2).
        if register == REG_POWER {
            self.cnvr = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FaultConfig, LoadModel, SimulationConfig};

    fn chip(watts: f64, supply: f64, shunt_ohms: f64, faults: Vec<FaultConfig>) -> VirtualIna219 {
        let sim = SimulationConfig {
            load: Some(LoadModel::Constant { watts }),
            supply_volts_key: Some(supply),
            source_ohms: 0.0,
            noise: 0.0,
            seed: Some(1),
            faults,
            chip: None,
            battery: None,
            from_battery: false,
            shunt_ohms: None,
            shunt_offset_volts: 0.0,
            bus_gain: 1.0,
        };
        VirtualIna219::new(shunt_ohms, Simulation::new(&sim, 1))
    }

    fn read(chip: &mut VirtualIna219, reg: u8) -> u16 {
        chip.write(&[reg], Duration::ZERO);
        let mut b = [0; 2];
        chip.read(&mut b, Duration::ZERO);
        u16::from_be_bytes(b)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn power_on_values() {
        let mut c = chip(0.0, 12.0, 0.1, vec![]);
        assert_eq!(read(&mut c, REG_CONFIG), 0x399F);
        assert_eq!(read(&mut c, REG_CALIBRATION), 0);
        assert_eq!(read(&mut c, REG_CURRENT), 0);
        assert_eq!(read(&mut c, REG_POWER), 0);
    }

    /// The datasheet example, measured by the virtual chip: 10 A into a 12 V load through
    /// 2 mΩ (the example's 11.98 V is the bus voltage, after the shunt).
    #[test]
    fn reproduces_the_datasheet_example() {
        let mut c = chip(119.8, 11.98, 0.002, vec![]);
        c.write(&[REG_CONFIG, 0x01, 0x9F], ms(0));
        c.write(&[REG_CALIBRATION, 0x50, 0x00], ms(0));
        c.advance(ms(2));
        let r = c.registers();
        assert_eq!(r.shunt, 0x07D0);
        assert_eq!(r.bus, 0x5D98 | BUS_CNVR);
        assert_eq!(r.current, 0x2710);
        assert_eq!(r.power, 0x1766);
    }

    #[test]
    fn cnvr_sets_after_a_conversion_and_clears_when_power_is_read() {
        let mut c = chip(10.0, 12.0, 0.1, vec![]);
        c.write(&[REG_CONFIG, 0x01, 0x9F], ms(0)); // 12-bit: 532 µs per ADC
        c.advance(Duration::from_micros(1000));
        assert_eq!(c.registers().bus & BUS_CNVR, 0, "not done after 1.0 ms");
        c.advance(Duration::from_micros(1064));
        assert_ne!(c.registers().bus & BUS_CNVR, 0, "done after 1.064 ms");
        read(&mut c, REG_BUS_VOLTAGE);
        assert_ne!(
            c.registers().bus & BUS_CNVR,
            0,
            "reading the bus does not clear it"
        );
        read(&mut c, REG_POWER);
        assert_eq!(c.registers().bus & BUS_CNVR, 0, "reading power clears it");
    }

    #[test]
    fn the_shunt_register_saturates_beyond_the_pga_range() {
        // 5 A through 0.1 Ω = 500 mV > 320 mV; no calibration, so no arithmetic to overflow.
        let mut c = chip(60.0, 12.0, 0.1, vec![]);
        c.advance(ms(2));
        let r = c.registers();
        assert_eq!(r.shunt as i16, 32_000);
        assert_eq!(r.bus & BUS_OVF, 0);
    }

    #[test]
    fn ovf_when_the_arithmetic_overflows() {
        // 300 mV is within range, but Cal 8192 doubles it past 16 bits.
        let mut c = chip(36.0, 12.0, 0.1, vec![]);
        c.write(&[REG_CALIBRATION, 0x20, 0x00], ms(0));
        c.advance(ms(2));
        assert_ne!(c.registers().bus & BUS_OVF, 0);
    }

    #[test]
    fn reset_bit_restores_power_on_values() {
        let mut c = chip(10.0, 12.0, 0.1, vec![]);
        c.write(&[REG_CONFIG, 0x01, 0x9F], ms(0));
        c.write(&[REG_CALIBRATION, 0x10, 0x01], ms(0));
        assert_eq!(c.registers().calibration, 0x1000, "bit 0 is void");
        c.write(&[REG_CONFIG, 0x80, 0x00], ms(1));
        assert_eq!(c.registers().config, 0x399F);
        assert_eq!(c.registers().calibration, 0);
    }

    #[test]
    fn stuck_adc_freezes_the_registers() {
        let mut c = chip(
            10.0,
            12.0,
            0.1,
            vec![FaultConfig::Stuck {
                start: ms(5),
                duration: ms(100),
            }],
        );
        c.advance(ms(2));
        read(&mut c, REG_POWER);
        c.advance(ms(50));
        assert_eq!(c.registers().bus & BUS_CNVR, 0);
        c.advance(ms(200));
        assert_ne!(c.registers().bus & BUS_CNVR, 0);
    }

    #[test]
    fn brownout_loses_configuration_and_calibration() {
        let mut c = chip(
            10.0,
            12.0,
            0.1,
            vec![FaultConfig::Brownout {
                at: Some(ms(10)),
                after_transfers: None,
            }],
        );
        c.write(&[REG_CONFIG, 0x01, 0x9F], ms(0));
        c.write(&[REG_CALIBRATION, 0x10, 0x00], ms(0));
        c.advance(ms(5));
        assert_eq!(c.registers().calibration, 0x1000);
        c.advance(ms(11));
        assert_eq!(c.registers().config, 0x399F);
        assert_eq!(c.registers().calibration, 0);
    }
}
