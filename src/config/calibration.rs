//! `[sensor.calibration]`: trims measured against a reference meter (`power-monitord
//! calibrate`), which correct a sensor's readings from the next sample on:
//!
//! ```toml
//! [sensor.calibration]
//! # calibrated 2026-12-06: 2.0310 A and 12.512 V on the reference meter
//! current_gain = 1.02773
//! current_offset_amps = 0.00051
//! voltage_gain = 0.98523
//! ```
//!
//! current = `current_gain` × (the chip's current) − `current_offset_amps`; bus voltage =
//! `voltage_gain` × (the chip's); power = their product.

use serde::Deserialize;

use super::diagnostic::{invalid, Check};

/// The most a gain may differ from 1: a module off by more has a wrong `shunt_ohms` or a
/// wiring fault, which no trim should hide.
pub const MAX_GAIN_ERROR: f64 = 0.10;

/// The largest offset, as a share of `max_current_amps`.
pub const MAX_OFFSET_SHARE: f64 = 0.05;

/// `[sensor.calibration]` as the file has it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CalibrationFile {
    #[serde(default = "one")]
    current_gain: f64,
    #[serde(default)]
    current_offset_amps: f64,
    #[serde(default = "one")]
    voltage_gain: f64,
}

fn one() -> f64 {
    1.0
}

/// A sensor's trims, checked: what its readings are corrected by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trim {
    /// Multiplies the chip's current.
    pub current_gain: f64,
    /// Taken from the current after the gain, in amperes.
    pub current_offset_amps: f64,
    /// Multiplies the chip's bus voltage.
    pub voltage_gain: f64,
}

impl Default for Trim {
    fn default() -> Trim {
        Trim::NONE
    }
}

impl Trim {
    /// No correction.
    pub const NONE: Trim = Trim {
        current_gain: 1.0,
        current_offset_amps: 0.0,
        voltage_gain: 1.0,
    };

    /// Whether it corrects anything.
    pub fn is_none(&self) -> bool {
        *self == Trim::NONE
    }

    /// The current corrected.
    pub fn current(&self, amps: f64) -> f64 {
        self.current_gain * amps - self.current_offset_amps
    }

    /// The bus voltage corrected.
    pub fn voltage(&self, volts: f64) -> f64 {
        self.voltage_gain * volts
    }
}

impl CalibrationFile {
    /// The trims, each within what a calibration can mean for a sensor measuring up to
    /// `max_current_amps`; keys relative to `calibration`.
    pub(crate) fn check(self, max_current_amps: f64) -> Result<Trim, super::diagnostic::Invalid> {
        gain("current_gain", self.current_gain)?;
        gain("voltage_gain", self.voltage_gain)?;
        let limit = MAX_OFFSET_SHARE * max_current_amps;
        let offset = self.current_offset_amps;
        if !(offset.is_finite() && offset.abs() <= limit) {
            return Err(invalid(
                "current_offset_amps",
                format!(
                    "{offset} A is not a plausible offset; expected at most ±{limit:.4} A ({:.0} % of max_current_amps): more is a wiring fault, not an offset",
                    MAX_OFFSET_SHARE * 100.0
                ),
            ));
        }
        Ok(Trim {
            current_gain: self.current_gain,
            current_offset_amps: offset,
            voltage_gain: self.voltage_gain,
        })
    }
}

fn gain(key: &str, value: f64) -> Check {
    if value.is_finite() && (value - 1.0).abs() <= MAX_GAIN_ERROR {
        return Ok(());
    }
    Err(invalid(
        key,
        format!(
            "{value} is not a plausible trim; expected {} to {} (a module more than {:.0} % off has a wrong shunt_ohms or a wiring fault)",
            1.0 - MAX_GAIN_ERROR,
            1.0 + MAX_GAIN_ERROR,
            MAX_GAIN_ERROR * 100.0
        ),
    ))
}
