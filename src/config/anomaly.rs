//! `[sensor.anomaly]`: the rules evaluated on every sample of one sensor.

use std::time::Duration;

use serde::Deserialize;

use super::diagnostic::{invalid, Check};
use super::values::{duration, opt_duration};

/// `[sensor.anomaly]`; each rule is on when its key is set.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AnomalyConfig {
    /// `over_power`: power above this many watts ...
    pub(crate) max_power_watts: Option<f64>,
    /// ... for at least this long (default 30 s); it clears after as long below the limit
    /// less the hysteresis.
    #[serde(deserialize_with = "opt_duration")]
    pub(crate) max_power_for: Option<Duration>,
    /// `energy_budget`: energy over a rolling window above a budget.
    pub(crate) energy_budget: Option<EnergyBudget>,
    /// `spike`: deviation from an EWMA baseline by more than this many standard deviations.
    pub(crate) spike_sigma: Option<f64>,
    /// `under_voltage` / `over_voltage`: bus voltage outside `[low, high]` volts ...
    pub(crate) allowed_bus_volts: Option<[f64; 2]>,
    /// ... for at least this long (default 5 s).
    #[serde(deserialize_with = "opt_duration")]
    pub(crate) bus_volts_for: Option<Duration>,
    /// Clear thresholds sit this fraction inside the trip thresholds (default 0.05).
    pub(crate) hysteresis: Option<f64>,
}

/// `energy_budget = { kwh = 12.0, window = "24h" }`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnergyBudget {
    /// The budget.
    pub(crate) kwh: f64,
    /// The rolling window it applies to.
    #[serde(deserialize_with = "duration")]
    pub(crate) window: Duration,
}

impl AnomalyConfig {
    /// `max_power_for` when not set.
    pub(crate) const DEFAULT_MAX_POWER_FOR: Duration = Duration::from_secs(30);
    /// `bus_volts_for` when not set.
    pub(crate) const DEFAULT_BUS_VOLTS_FOR: Duration = Duration::from_secs(5);
    /// `hysteresis` when not set.
    pub(crate) const DEFAULT_HYSTERESIS: f64 = 0.05;
    /// Samples an energy budget's window must span at least.
    pub(crate) const MIN_BUDGET_INTERVALS: u32 = 10;

    /// How long power must stay over the limit.
    pub(crate) fn max_power_for(&self) -> Duration {
        self.max_power_for.unwrap_or(Self::DEFAULT_MAX_POWER_FOR)
    }
    /// How long the bus voltage must stay outside its band.
    pub(crate) fn bus_volts_for(&self) -> Duration {
        self.bus_volts_for.unwrap_or(Self::DEFAULT_BUS_VOLTS_FOR)
    }
    /// The fraction clear thresholds sit inside trip thresholds.
    pub(crate) fn hysteresis(&self) -> f64 {
        self.hysteresis.unwrap_or(Self::DEFAULT_HYSTERESIS)
    }

    /// Checks of the rules of a sensor sampled every `interval` whose bus input reads up to
    /// `bus_top_volts`; keys relative to `[sensor.anomaly]`.
    pub(crate) fn check(&self, interval: Duration, bus_top_volts: f64) -> Check {
        self.check_power(interval)?;
        if let Some(b) = self.energy_budget {
            b.check(interval)?;
        }
        if let Some(k) = self.spike_sigma {
            if !(k.is_finite() && k >= 1.0) {
                return Err(invalid(
                    "spike_sigma",
                    format!(
                        "{k} is not a usable threshold; expected 1 or more standard deviations"
                    ),
                ));
            }
        }
        self.check_voltage(bus_top_volts)?;
        if let Some(h) = self.hysteresis {
            if !(0.0..0.5).contains(&h) {
                return Err(invalid("hysteresis", format!("{h} is not a usable hysteresis; expected a fraction from 0 to below 0.5, e.g. 0.05")));
            }
        }
        Ok(())
    }

    fn check_power(&self, interval: Duration) -> Check {
        match self.max_power_watts {
            Some(w) if !(w.is_finite() && w > 0.0) => {
                return Err(invalid(
                    "max_power_watts",
                    format!("{w} is not a usable limit; expected watts above 0"),
                ))
            }
            None if self.max_power_for.is_some() => {
                return Err(invalid(
                    "max_power_for",
                    "max_power_for needs max_power_watts",
                ))
            }
            _ => {}
        }
        match self.max_power_for {
            Some(d) if d < interval => Err(invalid(
                "max_power_for",
                format!(
                    "{} is shorter than the sampling interval ({}); expected at least one interval",
                    humantime::format_duration(d),
                    humantime::format_duration(interval)
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_voltage(&self, bus_top_volts: f64) -> Check {
        let Some([low, high]) = self.allowed_bus_volts else {
            return match self.bus_volts_for {
                Some(_) => Err(invalid(
                    "bus_volts_for",
                    "bus_volts_for needs allowed_bus_volts",
                )),
                None => Ok(()),
            };
        };
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low < high) {
            return Err(invalid(
                "allowed_bus_volts",
                format!("[{low}, {high}] is not a voltage band; expected [low, high] with 0 <= low < high"),
            ));
        }
        if high > bus_top_volts {
            return Err(invalid(
                "allowed_bus_volts",
                format!(
                    "the upper bound {high} V is above what the bus input can read ({bus_top_volts} V); over_voltage could never trip"
                ),
            ));
        }
        Ok(())
    }
}

impl EnergyBudget {
    /// Checks of a budget of a sensor sampled every `interval`.
    fn check(&self, interval: Duration) -> Check {
        if !(self.kwh.is_finite() && self.kwh > 0.0) {
            return Err(invalid(
                "energy_budget.kwh",
                format!("{} is not a usable budget; expected kWh above 0", self.kwh),
            ));
        }
        if self.window < Duration::from_secs(60)
            || self.window < interval * AnomalyConfig::MIN_BUDGET_INTERVALS
        {
            return Err(invalid(
                "energy_budget.window",
                "expected a window of at least 1m and at least 10 sampling intervals",
            ));
        }
        if self.window > Duration::from_secs(366 * 86_400) {
            return Err(invalid(
                "energy_budget.window",
                "expected a window of at most a year",
            ));
        }
        Ok(())
    }
}
