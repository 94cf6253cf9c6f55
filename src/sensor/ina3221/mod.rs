//! The INA3221: three channels in one chip, one conversion cycle over all of them, no current
//! or power registers (current is shunt voltage over the channel's shunt).
//!
//! Each channel is a sensor of its own; the channels of one chip share one driver, which reads
//! every enabled channel at once and hands each channel the newest reading it has not had.
//! Written here: the `ina3221` crate reads a channel at a time and knows nothing of the shared
//! cycle, its conversion-ready flag or the ladder every chip shares.
//!
//! # One cycle: 2 + 2 × channels transfers (6 for three channels: 294 SCL clocks, 2.9 ms at
//! 100 kHz), shared by the channels
//!
//! 1. **Mask/Enable** (0Fh): CVRF says a cycle finished (reading clears it, 8.6.2.14); WEN,
//!    set when the chip was programmed and cleared only by a power-on reset, is the brown-out
//!    canary.
//! 2. Each enabled channel's **shunt** and **bus** registers.
//! 3. **Mask/Enable** again: a CVRF set now means a cycle finished during the reads, and the
//!    registers are read once more.

pub(crate) mod registers;

use std::time::Duration;

use self::registers::*;
use super::family::{self, Programming};
use super::ladder::{ChipBus, ChipDriver, Outcome, Registers, Sample};
use super::Reading;
use crate::config::{Channel, Chip, Ina226Setup, SensorConfig};

/// Cycles faster than this finish during any read sequence; two adjacent ones differ by less
/// than the noise, so they are taken without a second try.
const MIXED_CHECK_ABOVE: Duration = Duration::from_millis(6);

/// What the daemon writes into one INA3221, from the sensors of its channels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    /// The configuration register.
    pub(crate) configuration: u16,
    /// The shunt of each channel (index 0 for channel 1); `None` for a disabled channel.
    pub(crate) shunts: [Option<f64>; 3],
    /// One cycle over every enabled channel.
    pub(crate) cycle: Duration,
    /// What the ADCs are programmed with.
    pub(crate) adc: Ina226Setup,
}

impl Settings {
    /// The settings for one chip whose ADCs are programmed with `adc`, with its enabled
    /// channels and their shunts.
    pub(crate) fn new(adc: Ina226Setup, channels: &[(Channel, f64)]) -> Settings {
        let mut shunts = [None; 3];
        let mut numbers = Vec::new();
        for (channel, shunt_ohms) in channels {
            shunts[channel.index()] = Some(*shunt_ohms);
            numbers.push(channel.number());
        }
        let conversion = adc.conversion.duration() * 2 * u32::from(adc.averaging.samples());
        Settings {
            configuration: config_word(&numbers, adc.averaging.code(), adc.conversion.code()),
            cycle: conversion * numbers.len() as u32,
            shunts,
            adc,
        }
    }

    /// What the chip is programmed with, in words, for `check-config`.
    pub(crate) fn describe(&self, sensor: &SensorConfig) -> String {
        let enabled: Vec<String> = (1..=3u8)
            .filter(|c| self.shunts[usize::from(c - 1)].is_some())
            .map(|c| c.to_string())
            .collect();
        format!(
            "channel {} (enabled channels: {}), shunt {} Ω, up to {} A (±163.8 mV range), bus 26 V, ADC {} µs ×{} ({:.2} ms per cycle), configuration {:#06x}",
            sensor.channel().map_or(0, Channel::number),
            enabled.join(", "),
            sensor.shunt_ohms(),
            super::short(sensor.max_current_amps()),
            self.adc.conversion.duration().as_micros(),
            self.adc.averaging.samples(),
            self.cycle.as_secs_f64() * 1000.0,
            self.configuration
        )
    }
}

/// A driver of one INA3221, shared by the sensors of its channels.
#[derive(Debug)]
pub(crate) struct Ina3221 {
    settings: Settings,
    /// The newest reading of each channel, by cycle number.
    latest: [Option<(u64, Reading)>; 3],
    /// The cycle number each channel last handed out.
    handed: [u64; 3],
    cycles: u64,
}

impl Ina3221 {
    /// A driver that programs `settings`.
    pub(crate) fn new(settings: Settings) -> Ina3221 {
        Ina3221 {
            settings,
            latest: [None; 3],
            handed: [0; 3],
            cycles: 0,
        }
    }

    /// Every enabled channel's shunt and bus registers.
    fn read_channels<B: ChipBus>(
        &self,
        regs: &mut Registers<B>,
    ) -> Outcome<[Option<(u16, u16)>; 3]> {
        let mut words = [None; 3];
        for channel in 1..=3u8 {
            if self.settings.shunts[usize::from(channel - 1)].is_some() {
                let shunt = regs.read(reg_shunt(channel))?;
                let bus = regs.read(reg_bus(channel))?;
                words[usize::from(channel - 1)] = Some((shunt, bus));
            }
        }
        Ok(words)
    }

    fn reading(shunt_ohms: f64, shunt: u16, bus: u16) -> Reading {
        let shunt_counts = counts(shunt);
        let saturated = shunt_counts.abs() >= FULL_SCALE_COUNTS;
        let shunt_volts = f64::from(shunt_counts) * SHUNT_LSB_VOLTS;
        let bus_volts = f64::from(counts(bus).max(0)) * BUS_LSB_VOLTS;
        let amps = shunt_volts / shunt_ohms;
        Reading::measured(bus_volts, shunt_volts, amps, saturated, false)
    }
}

impl ChipDriver for Ina3221 {
    fn program<B: ChipBus>(&mut self, bus: &mut Registers<B>, first: bool) -> Outcome<()> {
        let programming = Programming {
            chip: Chip::Ina3221,
            calibration: None,
            configuration: self.settings.configuration,
            canary: (REG_MASK_ENABLE, ME_WEN),
        };
        family::program(bus, &programming, first)
    }

    fn sample<B: ChipBus>(&mut self, regs: &mut Registers<B>, channel: u8) -> Outcome<Sample> {
        let index = usize::from(channel.clamp(1, 3) - 1);
        if let Some((cycle, reading)) = self.latest[index] {
            if cycle > self.handed[index] {
                self.handed[index] = cycle;
                return Ok(Sample::Reading(reading));
            }
        }
        let flags = regs.read(REG_MASK_ENABLE)?;
        if flags & ME_WEN == 0 {
            return Ok(Sample::LostSettings);
        }
        if flags & ME_CVRF == 0 {
            return Ok(Sample::NotReady);
        }
        let mut words = self.read_channels(regs)?;
        if regs.read(REG_MASK_ENABLE)? & ME_CVRF != 0 && self.settings.cycle > MIXED_CHECK_ABOVE {
            // A cycle finished during the reads: the registers now hold one cycle, the newest.
            words = self.read_channels(regs)?;
        }
        self.cycles += 1;
        for (i, w) in words.iter().enumerate() {
            if let (Some((shunt, bus)), Some(ohms)) = (w, self.settings.shunts[i]) {
                self.latest[i] = Some((self.cycles, Self::reading(ohms, *shunt, *bus)));
            }
        }
        match self.latest[index] {
            Some((cycle, reading)) if cycle > self.handed[index] => {
                self.handed[index] = cycle;
                Ok(Sample::Reading(reading))
            }
            _ => Ok(Sample::NotReady),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::SensorError;

    /// The settings of one chip from the sensors of its channels.
    fn settings_of(sensors: &[SensorConfig]) -> Settings {
        let channels: Vec<(Channel, f64)> = sensors
            .iter()
            .map(|s| (s.channel().expect("an INA3221 channel"), s.shunt_ohms()))
            .collect();
        match sensors[0].setup() {
            crate::config::ChipSetup::Ina3221(adc, _) => Settings::new(*adc, &channels),
            other => panic!("not an INA3221: {other:?}"),
        }
    }
    use crate::config::{Config, SensorConfig};
    use crate::sensor::simulated::virtual_bus;
    use crate::sensor::simulated::Clock;
    use crate::sensor::transcript::{on_mock, replay, Step, Step::*};

    const ADDR: u8 = 0x41;

    /// Channels of one simulated INA3221, each `(channel, supply volts, watts)`: 0.1 Ω
    /// shunts, 0.12 Ω from the supply.
    fn channels(list: &[(u8, f64, f64)]) -> Vec<SensorConfig> {
        let text: String = list
            .iter()
            .map(|(c, volts, watts)| {
                format!(
                    "[[sensor]]\nname = \"ch{c}\"\ndriver = \"simulated\"\naddress = {ADDR}\nchannel = {c}\n\
                     shunt_ohms = 0.1\n[sensor.simulation]\nchip = \"ina3221\"\nsupply_volts = {volts}\n\
                     source_ohms = 0.12\nload = {{ model = \"constant\", watts = {watts} }}\n"
                )
            })
            .collect();
        Config::from_toml(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .sensors
    }

    fn init(configuration: u16) -> Vec<Step> {
        vec![
            Read(REG_MANUFACTURER_ID, MANUFACTURER_TI),
            Read(REG_DIE_ID, DIE_INA3221),
            Write(REG_CONFIG, crate::sensor::family::CONFIG_RST),
            Write(REG_CONFIG, configuration),
            Write(REG_MASK_ENABLE, ME_WEN),
            Read(REG_CONFIG, configuration),
        ]
    }

    #[test]
    fn one_channel_programs_and_converts() {
        // 0.2 A through 0.1 Ω: 20 mV = 500 × 40 µV (0FA0h); 12 V − 0.2 A × 0.12 Ω = 11.976 V
        // = 1497 × 8 mV (2EC8h). 2.3952 W at the load.
        let configs = channels(&[(1, 12.0, 11.976 * 0.2)]);
        let settings = settings_of(&configs);
        // Channel 1 only, AVG 1, 1.1 ms, continuous.
        assert_eq!(settings.configuration, 0x4127);
        let mut steps = init(0x4127);
        steps.extend([
            Wait(Duration::from_millis(3)),
            Read(REG_MASK_ENABLE, ME_WEN | ME_CVRF),
            Read(reg_shunt(1), 0x0FA0),
            Read(reg_bus(1), 0x2EC8),
            Read(REG_MASK_ENABLE, ME_WEN),
        ]);
        let (mut chip, mut mock) = on_mock(Ina3221::new(settings), ADDR, &steps);
        assert!(matches!(chip.read(1), Err(SensorError::NotReady)));
        let r = chip.read(1).unwrap();
        mock.done();
        assert!((r.shunt_voltage_volts - 0.020).abs() < 1e-12, "{r:?}");
        assert!((r.bus_voltage_volts - 11.976).abs() < 1e-12, "{r:?}");
        assert!((r.current_amperes - 0.2).abs() < 1e-12, "{r:?}");
        let (clock, time) = Clock::manual();
        replay(&mut virtual_bus(&configs, &clock), &time, ADDR, &steps);
    }

    #[test]
    fn one_cycle_serves_every_channel_and_is_handed_out_once() {
        // Channels 1 and 3 enabled (bits 14 and 12): 5127h.
        let configs = channels(&[(1, 12.0, 11.976 * 0.2), (3, 5.0, 0.0)]);
        let settings = settings_of(&configs);
        assert_eq!(settings.configuration, 0x5127);
        let mut steps = init(0x5127);
        steps.extend([
            Wait(Duration::from_millis(5)),
            Read(REG_MASK_ENABLE, ME_WEN | ME_CVRF),
            Read(reg_shunt(1), 0x0FA0),
            Read(reg_bus(1), 0x2EC8),
            // 5 V = 625 × 8 mV, no current.
            Read(reg_shunt(3), 0),
            Read(reg_bus(3), 625 << 3),
            Read(REG_MASK_ENABLE, ME_WEN),
            // Channel 1 again, before the next cycle: nothing new.
            Read(REG_MASK_ENABLE, ME_WEN),
        ]);
        let (mut chip, mut mock) = on_mock(Ina3221::new(settings), ADDR, &steps);
        assert!(matches!(chip.read(1), Err(SensorError::NotReady)));
        assert!((chip.read(1).unwrap().current_amperes - 0.2).abs() < 1e-12);
        // Channel 3 from the same cycle, without a transfer.
        assert!((chip.read(3).unwrap().bus_voltage_volts - 5.0).abs() < 1e-12);
        assert!(matches!(chip.read(1), Err(SensorError::NotReady)));
        mock.done();
        let (clock, time) = Clock::manual();
        replay(&mut virtual_bus(&configs, &clock), &time, ADDR, &steps);
    }

    #[test]
    fn a_cleared_warning_latch_is_a_brown_out() {
        let configs = channels(&[(2, 12.0, 1.0)]);
        let settings = settings_of(&configs);
        let mut steps = init(0x2127);
        steps.extend([
            // Power-on Mask/Enable: WEN clear.
            Read(REG_MASK_ENABLE, ME_CVRF),
            Write(REG_CONFIG, 0x2127),
            Write(REG_MASK_ENABLE, ME_WEN),
        ]);
        let (mut chip, mut mock) = on_mock(Ina3221::new(settings), ADDR, &steps);
        assert!(matches!(chip.read(2), Err(SensorError::NotReady)));
        assert!(matches!(chip.read(2), Err(SensorError::NotReady)));
        assert_eq!(chip.take_events().reprogrammed, 1);
        mock.done();
    }
}
