//! `[sensor.simulation] battery = { … }`: the simulated house's battery, measured by this
//! sensor: a bank whose current is the net of the bus's `from_battery = true` appliances and a
//! solar charger, and whose terminal voltage (open-circuit curve of its true state of charge,
//! less the drop across its internal resistance) is those appliances' supply.

use std::time::Duration;

use serde::Deserialize;

use super::battery::Chemistry;
use super::diagnostic::{invalid, Check};

/// The simulated battery and its solar charger.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimulatedBattery {
    /// Capacity at the 20-hour rate.
    pub(crate) capacity_ah: f64,
    /// The true state of charge at start.
    #[serde(default = "SimulatedBattery::default_soc")]
    pub(crate) state_of_charge: f64,
    /// The chemistry (its open-circuit curve).
    #[serde(default)]
    pub(crate) chemistry: Chemistry,
    /// Nominal voltage.
    #[serde(default = "SimulatedBattery::default_nominal")]
    pub(crate) nominal_volts: f64,
    /// Internal resistance, cables and fuse.
    #[serde(default = "SimulatedBattery::default_internal_ohms")]
    pub(crate) internal_ohms: f64,
    /// Peukert's exponent of the real battery.
    #[serde(default = "SimulatedBattery::default_peukert")]
    pub(crate) peukert_exponent: f64,
    /// The share of the charge put in that the battery keeps.
    #[serde(default = "SimulatedBattery::default_efficiency")]
    pub(crate) charge_efficiency: f64,
    /// The solar array's output at noon under a clear sky (0: no charger).
    #[serde(default)]
    pub(crate) solar_peak_watts: f64,
    /// How cloudy: each quarter hour the sun is dimmed by up to this fraction.
    #[serde(default)]
    pub(crate) clouds: f64,
    /// The charger's absorption voltage (default 3.55 V per LiFePO4 cell, 2.4 V lead-acid).
    #[serde(default)]
    pub(crate) absorption_volts: Option<f64>,
    /// The simulated time of day at start, e.g. "06:00"; default the local time.
    #[serde(default)]
    pub(crate) time_of_day: Option<TimeOfDay>,
}

/// A time of day, "HH:MM".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeOfDay(pub Duration);

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = text.split_once(':').and_then(|(h, m)| {
            let (h, m) = (h.parse::<u64>().ok()?, m.parse::<u64>().ok()?);
            (h < 24 && m < 60).then(|| Duration::from_secs(h * 3600 + m * 60))
        });
        parsed.map(TimeOfDay).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?}: expected a time of day such as \"06:30\""
            ))
        })
    }
}

impl SimulatedBattery {
    fn default_soc() -> f64 {
        0.6
    }
    fn default_nominal() -> f64 {
        12.0
    }
    fn default_internal_ohms() -> f64 {
        0.01
    }
    fn default_peukert() -> f64 {
        1.05
    }
    fn default_efficiency() -> f64 {
        0.99
    }

    /// The absorption voltage of the charger.
    pub(crate) fn absorption_volts(&self) -> f64 {
        self.absorption_volts.unwrap_or_else(|| {
            let cells = crate::chemistry::cells(self.chemistry, self.nominal_volts);
            cells
                * match self.chemistry {
                    Chemistry::Lifepo4 => 3.55,
                    Chemistry::LeadAcid => 2.4,
                }
        })
    }

    /// Checks; keys relative to `[sensor.simulation]`.
    pub(crate) fn check(&self, bus_input_volts: f64) -> Check {
        let ranges: [(&str, f64, f64, f64); 8] = [
            ("battery.capacity_ah", self.capacity_ah, 0.01, 1e6),
            ("battery.state_of_charge", self.state_of_charge, 0.0, 1.0),
            ("battery.nominal_volts", self.nominal_volts, 2.0, 60.0),
            ("battery.internal_ohms", self.internal_ohms, 0.0, 10.0),
            ("battery.peukert_exponent", self.peukert_exponent, 1.0, 1.5),
            (
                "battery.charge_efficiency",
                self.charge_efficiency,
                0.5,
                1.0,
            ),
            ("battery.solar_peak_watts", self.solar_peak_watts, 0.0, 1e6),
            ("battery.clouds", self.clouds, 0.0, 1.0),
        ];
        for (key, v, low, high) in ranges {
            if !(v.is_finite() && (low..=high).contains(&v)) {
                return Err(invalid(
                    key,
                    format!("{v} is out of range; expected {low} to {high}"),
                ));
            }
        }
        let top = self.absorption_volts();
        if !(top.is_finite() && top > 0.0 && top <= bus_input_volts) {
            return Err(invalid(
                "battery.absorption_volts",
                format!("{top} V is beyond what the chip's bus input reads ({bus_input_volts} V); expected a smaller bank, or a chip that reads more"),
            ));
        }
        Ok(())
    }
}
