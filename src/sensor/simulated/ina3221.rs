//! A virtual INA3221: three channels, each with its own load and shunt, converted in one cycle
//! over the enabled channels, with the conversion-ready flag, IDs and power-on values of
//! SBOS576D. A cycle is computed when a read finds one due.

use std::time::Duration;

use super::faults::FaultSchedule;
use super::{completed_conversion, Cycle, Simulation, VirtualChip};
use crate::sensor::ina3221::registers::*;

/// Mask/Enable bits a write sets: summation (14–12) and the alert latches WEN and CEN (11–10).
const ME_WRITABLE: u16 = 0x7C00;

/// One channel's input.
struct Channel {
    shunt_ohms: f64,
    simulation: Simulation,
}

/// The chip.
pub(crate) struct VirtualIna3221 {
    channels: [Option<Channel>; 3],
    /// Faults of the chip: those of its first channel's simulation.
    faults: FaultSchedule,
    cycle: Cycle,
    config: u16,
    mask_enable: u16,
    shunt: [u16; 3],
    bus: [u16; 3],
    cvrf: bool,
}

impl VirtualIna3221 {
    /// A chip with the given channels (number 1 to 3, shunt, what it measures), powered up a
    /// while ago.
    pub(crate) fn new(inputs: Vec<(u8, f64, Simulation)>) -> VirtualIna3221 {
        let mut channels: [Option<Channel>; 3] = [None, None, None];
        let mut faults = None;
        for (number, shunt_ohms, mut simulation) in inputs {
            let faults_here = std::mem::replace(&mut simulation.faults, FaultSchedule::new(&[], 0));
            faults.get_or_insert(faults_here);
            if let Some(slot) = channels.get_mut(usize::from(number.clamp(1, 3) - 1)) {
                *slot = Some(Channel {
                    shunt_ohms,
                    simulation,
                });
            }
        }
        let mut c = VirtualIna3221 {
            channels,
            faults: faults.unwrap_or_else(|| FaultSchedule::new(&[], 0)),
            cycle: Cycle::default(),
            config: CONFIG_RESET,
            mask_enable: 0,
            shunt: [0; 3],
            bus: [0; 3],
            cvrf: false,
        };
        c.reset(Duration::ZERO);
        c.convert(Duration::ZERO);
        c
    }

    fn enabled(&self, channel: u8) -> bool {
        self.config & config_channel_enable(channel) != 0
    }

    /// One cycle: each enabled channel's shunt and bus, averaged.
    fn period(&self) -> Duration {
        let channels = (1..=3).filter(|c| self.enabled(*c)).count() as u32;
        super::ina226::period(self.config) * channels.max(1)
    }

    fn complete(&mut self, t: Duration) {
        for i in 0..3u8 {
            let enabled = self.enabled(i + 1);
            let Some(ch) = self.channels[usize::from(i)].as_mut().filter(|_| enabled) else {
                continue;
            };
            let signal = ch.simulation.signal(t);
            self.shunt[usize::from(i)] =
                encode(signal.current_amps * ch.shunt_ohms, SHUNT_LSB_VOLTS);
            self.bus[usize::from(i)] = encode(signal.bus_volts, BUS_LSB_VOLTS);
        }
        self.cvrf = true;
        self.cycle.last = Some(t);
    }

    fn register_word(&self, pointer: u8) -> u16 {
        match pointer {
            REG_CONFIG => self.config,
            1..=6 => {
                let i = usize::from((pointer - 1) / 2);
                if pointer % 2 == 1 {
                    self.shunt[i]
                } else {
                    self.bus[i]
                }
            }
            REG_MASK_ENABLE => self.mask_enable | if self.cvrf { ME_CVRF } else { 0 },
            REG_MANUFACTURER_ID => MANUFACTURER_TI,
            REG_DIE_ID => DIE_INA3221,
            _ => 0,
        }
    }
}

/// The I2C side: see [`VirtualChip`].
impl VirtualChip for VirtualIna3221 {
    fn faults(&mut self) -> &mut FaultSchedule {
        &mut self.faults
    }

    fn cycle(&mut self) -> &mut Cycle {
        &mut self.cycle
    }

    fn reset(&mut self, t: Duration) {
        self.config = CONFIG_RESET;
        self.mask_enable = 0;
        self.cvrf = false;
        self.cycle.restart(t);
    }

    fn due(&self, t: Duration) -> Option<Duration> {
        (self.config & MODE_CONTINUOUS == MODE_CONTINUOUS)
            .then(|| completed_conversion(self.cycle.start, self.period(), self.cycle.last, t))
            .flatten()
    }

    fn convert(&mut self, t: Duration) {
        self.complete(t);
    }

    fn word(&self, register: u8) -> Option<u16> {
        Some(self.register_word(register))
    }

    fn store(&mut self, register: u8, word: u16) -> bool {
        match register {
            REG_CONFIG => {
                self.config = word & 0x7FFF;
                self.cvrf = false;
                true
            }
            REG_MASK_ENABLE => {
                self.mask_enable = word & ME_WRITABLE;
                false
            }
            _ => false,
        }
    }

    fn was_read(&mut self, register: u8) {
        if register == REG_MASK_ENABLE {
            self.cvrf = false;
        }
    }
}
