//! A virtual INA226 or INA260: registers, IDs, the conversion cycle and its flags, answering
//! I2C writes and reads the way the datasheets say (SBOS547A, SBOS656C). A conversion is
//! computed when a read comes, from the load at the moment it completed.

use std::time::Duration;

use super::faults::FaultSchedule;
use super::{completed_conversion, Cycle, Simulation, VirtualChip};
use crate::config::{Chip, ConversionTime};
use crate::sensor::ina226::registers::*;

/// Mask/Enable bits a write sets: the alert functions (15–10), APOL and LEN (1–0).
const ME_WRITABLE: u16 = 0xFC03;
/// INA226 calibration: bit 15 is reserved and reads 0.
const CAL_WRITABLE: u16 = 0x7FFF;

/// The chip.
pub(crate) struct VirtualIna226 {
    chip: Chip,
    shunt_ohms: f64,
    simulation: Simulation,
    cycle: Cycle,
    config: u16,
    calibration: u16,
    mask_enable: u16,
    alert_limit: u16,
    /// Shunt voltage (INA226) or current (INA260).
    first: u16,
    bus: u16,
    current: u16,
    power: u16,
    cvrf: bool,
    ovf: bool,
}

impl VirtualIna226 {
    /// An INA226 (`shunt_ohms` outside) or an INA260 (2 mΩ inside), powered up a while ago.
    pub(crate) fn new(chip: Chip, shunt_ohms: f64, simulation: Simulation) -> VirtualIna226 {
        let mut c = VirtualIna226 {
            chip,
            shunt_ohms,
            simulation,
            cycle: Cycle::default(),
            config: 0,
            calibration: 0,
            mask_enable: 0,
            alert_limit: 0,
            first: 0,
            bus: 0,
            current: 0,
            power: 0,
            cvrf: false,
            ovf: false,
        };
        c.reset(Duration::ZERO);
        c.convert(Duration::ZERO);
        c
    }

    fn reset_value(&self) -> u16 {
        match self.chip {
            Chip::Ina260 => INA260_CONFIG_RESET,
            _ => INA226_CONFIG_RESET,
        }
    }

    fn complete(&mut self, t: Duration) {
        let signal = self.simulation.signal(t);
        self.bus = encode_bus(signal.bus_volts);
        match self.chip {
            Chip::Ina260 => {
                self.first = encode_signed(signal.current_amps, INA260_CURRENT_LSB_AMPS);
                self.current = self.first;
                self.power = ina260_power(self.first, self.bus);
                self.ovf = false;
            }
            _ => {
                self.first = encode_signed(signal.current_amps * self.shunt_ohms, SHUNT_LSB_VOLTS);
                // Without a calibration, current and power read 0 (7.6.4).
                let current = if self.calibration == 0 {
                    Some(0)
                } else {
                    ina226_current(self.first, self.calibration)
                };
                self.current = current.unwrap_or(if (self.first as i16) < 0 {
                    0x8000
                } else {
                    0x7FFF
                });
                self.power = ina226_power(self.current, self.bus);
                self.ovf = current.is_none();
            }
        }
        self.cvrf = true;
        self.cycle.last = Some(t);
    }

    fn mask_enable_word(&self) -> u16 {
        self.mask_enable | if self.cvrf { ME_CVRF } else { 0 } | if self.ovf { ME_OVF } else { 0 }
    }

    fn register_word(&self, pointer: u8) -> u16 {
        match (pointer, self.chip) {
            (REG_CONFIG, _) => self.config,
            (REG_SHUNT_OR_CURRENT, _) => self.first,
            (REG_BUS_VOLTAGE, _) => self.bus,
            (REG_POWER, _) => self.power,
            (REG_CURRENT, Chip::Ina226) => self.current,
            (REG_CALIBRATION, Chip::Ina226) => self.calibration,
            (REG_MASK_ENABLE, _) => self.mask_enable_word(),
            (REG_ALERT_LIMIT, _) => self.alert_limit,
            (REG_MANUFACTURER_ID, _) => MANUFACTURER_TI,
            (REG_DIE_ID, Chip::Ina260) => DIE_INA260,
            (REG_DIE_ID, _) => DIE_INA226,
            _ => 0,
        }
    }
}

/// The I2C side: see [`VirtualChip`].
impl VirtualChip for VirtualIna226 {
    fn faults(&mut self) -> &mut FaultSchedule {
        &mut self.simulation.faults
    }

    fn cycle(&mut self) -> &mut Cycle {
        &mut self.cycle
    }

    /// Every register back to its power-on value (RST, or power lost).
    fn reset(&mut self, t: Duration) {
        self.config = self.reset_value();
        self.calibration = 0;
        self.mask_enable = 0;
        self.alert_limit = 0;
        self.current = 0;
        self.power = 0;
        self.cvrf = false;
        self.ovf = false;
        self.cycle.restart(t);
    }

    fn due(&self, t: Duration) -> Option<Duration> {
        // Powered down or triggered: no conversions in this model.
        (self.config & MODE_CONTINUOUS == MODE_CONTINUOUS)
            .then(|| {
                completed_conversion(self.cycle.start, period(self.config), self.cycle.last, t)
            })
            .flatten()
    }

    fn convert(&mut self, t: Duration) {
        self.complete(t);
    }

    fn word(&self, register: u8) -> Option<u16> {
        Some(self.register_word(register))
    }

    fn store(&mut self, register: u8, word: u16) -> bool {
        match (register, self.chip) {
            (REG_CONFIG, _) => {
                // Bits 14–12 are read-only; writing restarts conversions and clears CVRF.
                self.config = (word & 0x0FFF) | (self.reset_value() & 0x7000);
                self.cvrf = false;
                return true;
            }
            (REG_CALIBRATION, Chip::Ina226) => self.calibration = word & CAL_WRITABLE,
            (REG_MASK_ENABLE, _) => self.mask_enable = word & ME_WRITABLE,
            (REG_ALERT_LIMIT, _) => self.alert_limit = word,
            _ => {} // read-only
        }
        false
    }

    fn was_read(&mut self, register: u8) {
        if register == REG_MASK_ENABLE {
            self.cvrf = false;
        }
    }
}

/// One shunt and one bus conversion, averaged, for a configuration: from AVG, VBUSCT and
/// VSHCT (the INA3221 converts one of these per enabled channel).
pub(crate) fn period(config: u16) -> Duration {
    let fields = ConfigFields::decode(config);
    let ct =
        |code: u16| Duration::from_micros(u64::from(ConversionTime::MICROS[usize::from(code)]));
    let averaged = u32::from(crate::config::Averaging::INA226_COUNTS[usize::from(fields.avg_code)]);
    (ct(fields.bus_ct_code) + ct(fields.shunt_ct_code)) * averaged
}
