//! A virtual INA3221: three channels, each with its own load and shunt, converted in one cycle
//! over the enabled channels, with the conversion-ready flag, IDs and power-on values of
//! SBOS576D. A cycle is computed when a read finds one due.

use std::time::Duration;

use super::faults::FaultSchedule;
use super::{completed_conversion, Simulation, VirtualChip};
use crate::config::ConversionTime;
use crate::sensor::ina3221::registers::*;

/// Mask/Enable bits a write sets: summation (14–12) and the alert latches WEN and CEN (11–10).
const ME_WRITABLE: u16 = 0x7C00;

/// One channel's input.
struct Channel {
    shunt_ohms: f64,
    simulation: Simulation,
}

/// The chip.
pub struct VirtualIna3221 {
    channels: [Option<Channel>; 3],
    /// Faults of the chip: those of its first channel's simulation.
    faults: FaultSchedule,
    pointer: u8,
    config: u16,
    mask_enable: u16,
    shunt: [u16; 3],
    bus: [u16; 3],
    cvrf: bool,
    cycle_start: Duration,
    last_cycle: Option<Duration>,
}

impl VirtualIna3221 {
    /// A chip with the given channels (number 1 to 3, shunt, what it measures), powered up a
    /// while ago.
    pub fn new(inputs: Vec<(u8, f64, Simulation)>) -> VirtualIna3221 {
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
            pointer: REG_CONFIG,
            config: CONFIG_RESET,
            mask_enable: 0,
            shunt: [0; 3],
            bus: [0; 3],
            cvrf: false,
            cycle_start: Duration::ZERO,
            last_cycle: None,
        };
        c.power_on_reset(Duration::ZERO);
        c.convert(Duration::ZERO);
        c
    }

    fn power_on_reset(&mut self, t: Duration) {
        self.config = CONFIG_RESET;
        self.mask_enable = 0;
        self.cvrf = false;
        self.cycle_start = t;
        self.last_cycle = None;
    }

    fn enabled(&self, channel: u8) -> bool {
        self.config & config_channel_enable(channel) != 0
    }

    /// One cycle: each enabled channel's shunt and bus, averaged.
    fn cycle(&self) -> Duration {
        let avg = [1u32, 4, 16, 64, 128, 256, 512, 1024][usize::from((self.config >> 9) & 7)];
        let ct = |code: u16| {
            Duration::from_micros(u64::from(ConversionTime::MICROS[usize::from(code & 7)]))
        };
        let channels = (1..=3).filter(|c| self.enabled(*c)).count() as u32;
        (ct(self.config >> 6) + ct(self.config >> 3)) * avg * channels.max(1)
    }

    fn convert(&mut self, t: Duration) {
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
        self.last_cycle = Some(t);
    }

    fn word(&self, pointer: u8) -> u16 {
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

impl VirtualChip for VirtualIna3221 {
    fn faults(&mut self) -> &mut FaultSchedule {
        &mut self.faults
    }

    fn advance(&mut self, t: Duration) {
        if self.faults.take_brownout(t) {
            self.power_on_reset(t);
        }
        if self.config & MODE_CONTINUOUS != MODE_CONTINUOUS {
            return;
        }
        let done = completed_conversion(self.cycle_start, self.cycle(), self.last_cycle, t);
        if let Some(at) = done.filter(|_| !self.faults.stuck(t)) {
            self.convert(at);
        }
    }

    fn write(&mut self, bytes: &[u8], t: Duration) {
        let Some((pointer, word)) = super::register_write(bytes) else {
            return;
        };
        self.pointer = pointer;
        let Some(word) = word else { return };
        match pointer {
            REG_CONFIG if word & CONFIG_RST != 0 => self.power_on_reset(t),
            REG_CONFIG => {
                self.config = word & 0x7FFF;
                self.cycle_start = t;
                self.last_cycle = None;
                self.cvrf = false;
            }
            REG_MASK_ENABLE => self.mask_enable = word & ME_WRITABLE,
            _ => {}
        }
    }

    fn read(&mut self, buf: &mut [u8], _: Duration) {
        let word = self.word(self.pointer);
        super::fill(buf, word);
        if self.pointer == REG_MASK_ENABLE {
            self.cvrf = false;
        }
    }

    fn register(&self, register: u8) -> Option<u16> {
        Some(self.word(register))
    }
}
