//! `[[battery]]`: a battery monitor on the sensor whose shunt carries all of a battery's
//! current: state of charge by coulomb counting, time to go, synchronisation at full charge.
//!
//! The defaults are those of a dedicated battery monitor for the chemistry (Victron's for the
//! BMV-712): LiFePO4 unless `chemistry = "lead_acid"`, for a bank of `nominal_volts`.

use std::time::Duration;

use serde::Deserialize;

use super::diagnostic::{invalid, Check};
use super::values::{duration, opt_duration, valid_name, MAX_NAME_LEN};
pub(crate) use crate::chemistry::Chemistry;

/// The most batteries one daemon watches (one per sensor at most anyway).
pub(crate) const MAX_BATTERIES: usize = 64;

/// Which sign the sensor's current has while the battery charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChargingCurrent {
    /// IN+ on the battery side: discharge reads positive, charge negative.
    #[default]
    Negative,
    /// IN+ on the load/charger side: charge reads positive.
    Positive,
}

/// Where the state of charge starts before the first full charge.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) enum InitialSoc {
    /// Unknown: no state of charge is exported until the first full charge.
    #[default]
    Unknown,
    /// Estimated from the voltage at the first sample at rest (or under load, given the
    /// internal resistance), with its uncertainty.
    Voltage,
    /// As stated (0 to 1).
    Ratio(f64),
}

impl<'de> Deserialize<'de> for InitialSoc {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        let expected = "expected \"unknown\", \"voltage\" or a fraction from 0 to 1";
        match Raw::deserialize(deserializer).map_err(|_| serde::de::Error::custom(expected))? {
            Raw::Text(t) if t == "unknown" => Ok(InitialSoc::Unknown),
            Raw::Text(t) if t == "voltage" => Ok(InitialSoc::Voltage),
            Raw::Number(r) if (0.0..=1.0).contains(&r) => Ok(InitialSoc::Ratio(r)),
            Raw::Text(t) => Err(serde::de::Error::custom(format!("{t:?}: {expected}"))),
            Raw::Number(r) => Err(serde::de::Error::custom(format!("{r}: {expected}"))),
        }
    }
}

/// `[battery.anomaly]`; each rule is on when its key is set.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BatteryAnomalyConfig {
    /// `low_state_of_charge`: the state of charge below this fraction.
    pub(crate) min_state_of_charge: Option<f64>,
    /// `low_time_to_go`: while discharging, time to the discharge floor below this.
    #[serde(deserialize_with = "opt_duration")]
    pub(crate) min_time_to_go: Option<Duration>,
    /// `not_fully_charged`: no full charge for this long (sulphation for lead-acid, cell
    /// balancing for LiFePO4).
    #[serde(deserialize_with = "opt_duration")]
    pub(crate) full_charge_within: Option<Duration>,
}

/// `[[battery]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatteryConfig {
    /// The `battery` label.
    pub(crate) name: String,
    /// The `[[sensor]]` whose shunt carries all the battery's current.
    pub(crate) sensor: String,
    /// Rated capacity, in ampere-hours (at the 20-hour rate).
    pub(crate) capacity_ah: f64,
    /// The chemistry (default LiFePO4).
    #[serde(default)]
    pub(crate) chemistry: Chemistry,
    /// The bank's nominal voltage (default 12).
    #[serde(default = "BatteryConfig::default_nominal_volts")]
    pub(crate) nominal_volts: f64,
    /// The sign of the sensor's current while charging (default negative).
    #[serde(default)]
    pub(crate) charging_current: ChargingCurrent,
    /// Above this voltage, with the current below the tail current, the battery is full.
    #[serde(default)]
    pub(crate) charged_voltage: Option<f64>,
    /// The tail current, as a fraction of capacity per hour (0.04: 8 A for 200 Ah).
    #[serde(default)]
    pub(crate) tail_current_ratio: Option<f64>,
    /// How long both must hold.
    #[serde(default, deserialize_with = "opt_duration")]
    pub(crate) charged_detection_time: Option<Duration>,
    /// Peukert's exponent: how much less charge a battery gives at high discharge currents.
    #[serde(default)]
    pub(crate) peukert_exponent: Option<f64>,
    /// The share of the charge put in that the battery keeps.
    #[serde(default)]
    pub(crate) charge_efficiency: Option<f64>,
    /// Currents below this (either way) count as zero: a shunt amplifier's offset does not
    /// drift the state of charge.
    #[serde(default = "BatteryConfig::default_current_threshold")]
    pub(crate) current_threshold_amps: f64,
    /// The state of charge time to go counts down to.
    #[serde(default)]
    pub(crate) discharge_floor_ratio: Option<f64>,
    /// The averaging of the current time to go is computed from.
    #[serde(
        default = "BatteryConfig::default_averaging",
        deserialize_with = "duration"
    )]
    pub(crate) time_to_go_averaging: Duration,
    /// Where the state of charge starts before the first full charge.
    #[serde(default)]
    pub(crate) initial_soc: InitialSoc,
    /// The bank's internal resistance with its cables, in ohms: with it, `initial_soc =
    /// "voltage"` need not wait for the battery to rest, but estimates under load from the
    /// voltage plus current × resistance.
    #[serde(default)]
    pub(crate) internal_resistance_ohms: Option<f64>,
    /// Alarms.
    #[serde(default)]
    pub(crate) anomaly: BatteryAnomalyConfig,
}

impl BatteryConfig {
    fn default_nominal_volts() -> f64 {
        12.0
    }
    fn default_current_threshold() -> f64 {
        0.1
    }
    fn default_averaging() -> Duration {
        Duration::from_secs(180)
    }

    /// The voltage at which the battery counts as charged.
    pub(crate) fn charged_voltage(&self) -> f64 {
        let per_12v = match self.chemistry {
            Chemistry::Lifepo4 => 14.0,
            Chemistry::LeadAcid => 13.2,
        };
        self.charged_voltage
            .unwrap_or(per_12v * self.nominal_volts / 12.0)
    }

    /// The tail current in amperes.
    pub(crate) fn tail_current_amps(&self) -> f64 {
        self.tail_current_ratio.unwrap_or(0.04) * self.capacity_ah
    }

    /// How long the charged condition must hold.
    pub(crate) fn charged_detection_time(&self) -> Duration {
        self.charged_detection_time
            .unwrap_or(Duration::from_secs(180))
    }

    /// Peukert's exponent.
    pub(crate) fn peukert_exponent(&self) -> f64 {
        self.peukert_exponent.unwrap_or(match self.chemistry {
            Chemistry::Lifepo4 => 1.05,
            Chemistry::LeadAcid => 1.25,
        })
    }

    /// The charge efficiency factor.
    pub(crate) fn charge_efficiency(&self) -> f64 {
        self.charge_efficiency.unwrap_or(match self.chemistry {
            Chemistry::Lifepo4 => 0.99,
            Chemistry::LeadAcid => 0.85,
        })
    }

    /// The discharge floor.
    pub(crate) fn discharge_floor_ratio(&self) -> f64 {
        self.discharge_floor_ratio.unwrap_or(match self.chemistry {
            Chemistry::Lifepo4 => 0.1,
            Chemistry::LeadAcid => 0.5,
        })
    }

    /// The capacity in coulombs.
    pub(crate) fn capacity_coulombs(&self) -> f64 {
        self.capacity_ah * 3600.0
    }

    /// The numbers, each within what a battery can have.
    fn check_ranges(&self) -> Check {
        let ranges: [(&str, Option<f64>, f64, f64, &str); 8] = [
            (
                "internal_resistance_ohms",
                self.internal_resistance_ohms,
                0.0,
                1.0,
                "ohms",
            ),
            (
                "capacity_ah",
                Some(self.capacity_ah),
                0.01,
                1e6,
                "ampere-hours",
            ),
            (
                "nominal_volts",
                Some(self.nominal_volts),
                2.0,
                60.0,
                "volts",
            ),
            ("charged_voltage", self.charged_voltage, 1.0, 70.0, "volts"),
            (
                "tail_current_ratio",
                self.tail_current_ratio,
                0.001,
                0.5,
                "of capacity",
            ),
            ("peukert_exponent", self.peukert_exponent, 1.0, 1.5, ""),
            ("charge_efficiency", self.charge_efficiency, 0.5, 1.0, ""),
            (
                "discharge_floor_ratio",
                self.discharge_floor_ratio,
                0.0,
                0.99,
                "of capacity",
            ),
        ];
        for (key, value, low, high, unit) in ranges {
            if let Some(v) = value.filter(|v| !(v.is_finite() && (low..=high).contains(v))) {
                return Err(invalid(
                    key,
                    format!("{v} is out of range; expected {low} to {high} {unit}")
                        .trim_end()
                        .to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Checks of one battery; keys relative to it.
    pub(crate) fn check(&self) -> Check {
        if !valid_name(&self.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} is not a valid battery name; expected 1 to {MAX_NAME_LEN} characters of a-z, 0-9 and _ (it becomes the `battery` label)",
                    self.name
                ),
            ));
        }
        self.check_ranges()?;
        if !(self.current_threshold_amps.is_finite() && self.current_threshold_amps >= 0.0) {
            return Err(invalid(
                "current_threshold_amps",
                "expected a current of 0 or more amperes",
            ));
        }
        if self.tail_current_amps() <= self.current_threshold_amps {
            return Err(invalid(
                "tail_current_ratio",
                format!(
                    "the tail current ({} A) is not above current_threshold_amps ({} A); expected it to be",
                    self.tail_current_amps(),
                    self.current_threshold_amps
                ),
            ));
        }
        window(
            "charged_detection_time",
            self.charged_detection_time,
            1,
            86_400,
        )?;
        window(
            "time_to_go_averaging",
            Some(self.time_to_go_averaging),
            1,
            86_400,
        )?;
        self.anomaly.check().map_err(|e| e.within("anomaly"))
    }
}

/// A duration within `low..=high` seconds, if given.
fn window(key: &str, d: Option<Duration>, low: u64, high: u64) -> Check {
    match d {
        Some(d) if d < Duration::from_secs(low) || d > Duration::from_secs(high) => Err(invalid(
            key,
            format!(
                "{} is out of range; expected {low} s to {high} s",
                humantime::format_duration(d)
            ),
        )),
        _ => Ok(()),
    }
}

impl BatteryAnomalyConfig {
    /// Checks of the alarms; keys relative to `[battery.anomaly]`.
    fn check(&self) -> Check {
        if let Some(r) = self.min_state_of_charge.filter(|r| !(0.0..1.0).contains(r)) {
            return Err(invalid(
                "min_state_of_charge",
                format!("{r} is out of range; expected a fraction from 0 to below 1"),
            ));
        }
        window("min_time_to_go", self.min_time_to_go, 60, 30 * 86_400)?;
        window(
            "full_charge_within",
            self.full_charge_within,
            3_600,
            366 * 86_400,
        )
    }
}

/// The batteries on their own and against each other: at most [`MAX_BATTERIES`], each
/// checked, unique names, one battery per sensor.
pub(crate) fn check_all(batteries: &[BatteryConfig]) -> Check {
    if batteries.len() > MAX_BATTERIES {
        return Err(invalid(
            &format!("battery[{MAX_BATTERIES}]"),
            format!("expected at most {MAX_BATTERIES} batteries"),
        ));
    }
    for (i, b) in batteries.iter().enumerate() {
        let key = |k: &str| format!("battery[{i}].{k}");
        b.check().map_err(|e| {
            e.within(&format!("battery[{i}]"))
                .said_of(&format!("battery {:?}", b.name))
        })?;
        if let Some(first) = batteries[..i].iter().position(|o| o.name == b.name) {
            return Err(invalid(
                &key("name"),
                format!("battery {:?}: the name is already used by battery[{first}]; expected unique names", b.name),
            ));
        }
        if let Some(first) = batteries[..i].iter().position(|o| o.sensor == b.sensor) {
            return Err(invalid(
                &key("sensor"),
                format!(
                    "battery {:?}: sensor {:?} already measures battery[{first}]; a shunt carries one battery's current",
                    b.name, b.sensor
                ),
            ));
        }
    }
    Ok(())
}
