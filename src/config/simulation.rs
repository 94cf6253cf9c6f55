//! `[sensor.simulation]`: what a simulated sensor's virtual chip measures: a load model on a
//! supply, noise, and scheduled faults.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::diagnostic::{invalid, Check};
pub(crate) use super::house::SimulatedBattery;
use super::values::{duration, opt_duration};

/// `[sensor.simulation]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimulationConfig {
    /// The chip simulated (default `ina219`).
    #[serde(default)]
    pub(crate) chip: Option<super::chip::Chip>,
    /// What the load draws; by default a uniform load within the shunt's range.
    #[serde(default)]
    pub(crate) load: Option<LoadModel>,
    /// Open-circuit voltage of the simulated supply (default 12.8 V); see
    /// [`supply_volts`](Self::supply_volts).
    #[serde(default, rename = "supply_volts")]
    pub(crate) supply_volts_key: Option<f64>,
    /// Internal resistance of the supply and wiring: the bus sags by `current × source_ohms`.
    #[serde(default)]
    pub(crate) source_ohms: f64,
    /// Relative noise added to every conversion (0.01 = ±1 %).
    #[serde(default)]
    pub(crate) noise: f64,
    /// Seed of the load model; default derived from the sensor name.
    #[serde(default)]
    pub(crate) seed: Option<u64>,
    /// Scheduled faults, timed from start-up.
    #[serde(default)]
    pub(crate) faults: Vec<FaultConfig>,
    /// This sensor's shunt carries a simulated battery's current.
    #[serde(default)]
    pub(crate) battery: Option<SimulatedBattery>,
    /// This sensor's load draws from the bus's simulated battery, at its terminal voltage.
    #[serde(default)]
    pub(crate) from_battery: bool,
    /// The shunt the virtual chip really has (default: the sensor's `shunt_ohms`): a 1 %
    /// module's shunt that is not what it says, for calibration.
    #[serde(default)]
    pub(crate) shunt_ohms: Option<f64>,
    /// The shunt amplifier's offset, in volts (default 0).
    #[serde(default)]
    pub(crate) shunt_offset_volts: f64,
    /// The bus ADC's gain (default 1): 1.015 reads 1.5 % high.
    #[serde(default = "SimulationConfig::unity")]
    pub(crate) bus_gain: f64,
}

impl SimulationConfig {
    /// The supply's open-circuit voltage when none is configured.
    pub(crate) const DEFAULT_SUPPLY_VOLTS: f64 = 12.8;

    /// The supply's open-circuit voltage (a battery's terminal voltage replaces it on a
    /// battery's bus).
    pub(crate) fn supply_volts(&self) -> f64 {
        self.supply_volts_key.unwrap_or(Self::DEFAULT_SUPPLY_VOLTS)
    }

    /// What a bare `driver = "simulated"` sensor measuring up to `max_current_amps` gets.
    pub(crate) fn default_for(max_current_amps: f64) -> SimulationConfig {
        SimulationConfig {
            chip: None,
            load: None,
            supply_volts_key: None,
            source_ohms: 0.0,
            noise: 0.0,
            seed: None,
            faults: Vec::new(),
            battery: None,
            from_battery: false,
            shunt_ohms: None,
            shunt_offset_volts: 0.0,
            bus_gain: 1.0,
        }
        .with_default_load(max_current_amps)
    }

    fn unity() -> f64 {
        1.0
    }

    /// With a load if none is configured: between 10 % and 60 % of what the shunt can
    /// measure at this supply.
    pub(crate) fn with_default_load(mut self, max_current_amps: f64) -> Self {
        if self.load.is_none() && self.battery.is_none() {
            let full_scale_watts = max_current_amps * self.supply_volts();
            self.load = Some(LoadModel::Uniform {
                min_watts: 0.1 * full_scale_watts,
                max_watts: 0.6 * full_scale_watts,
            });
        }
        self
    }

    /// Checks of `[sensor.simulation]` for a chip whose bus input reads up to
    /// `bus_input_volts`; keys relative to it.
    pub(crate) fn check(&self, bus_input_volts: f64) -> Check {
        let supply = self.supply_volts();
        if !(supply.is_finite() && supply > 0.0 && supply <= bus_input_volts) {
            return Err(invalid(
                "supply_volts",
                format!("{supply} V is not a usable supply; expected above 0 and at most {bus_input_volts} V (the chip's bus input limit)"),
            ));
        }
        self.check_battery(bus_input_volts)?;
        if !(self.source_ohms.is_finite() && self.source_ohms >= 0.0) {
            return Err(invalid(
                "source_ohms",
                "expected a resistance of 0 or more ohms",
            ));
        }
        if !(0.0..=0.5).contains(&self.noise) {
            return Err(invalid(
                "noise",
                format!(
                    "{} is not a usable noise level; expected a fraction from 0 to 0.5",
                    self.noise
                ),
            ));
        }
        if let Some(load) = &self.load {
            load.check()?;
        }
        self.check_errors()?;
        for (i, fault) in self.faults.iter().enumerate() {
            fault
                .check(bus_input_volts)
                .map_err(|e| e.within(&format!("faults[{i}]")))?;
        }
        Ok(())
    }
}

impl SimulationConfig {
    /// The chip's imperfections, within what a module has.
    fn check_errors(&self) -> Check {
        if let Some(ohms) = self.shunt_ohms {
            if !(1e-5..=1000.0).contains(&ohms) {
                return Err(invalid(
                    "shunt_ohms",
                    format!("{ohms} is not a usable shunt; expected 0.00001 to 1000 ohms"),
                ));
            }
        }
        if !(-1e-3..=1e-3).contains(&self.shunt_offset_volts) {
            return Err(invalid(
                "shunt_offset_volts",
                "expected an offset of at most ±0.001 V",
            ));
        }
        if !(0.8..=1.2).contains(&self.bus_gain) {
            return Err(invalid("bus_gain", "expected a gain from 0.8 to 1.2"));
        }
        Ok(())
    }

    /// A battery, or a load on one: the keys that then make no sense.
    fn check_battery(&self, bus_input_volts: f64) -> Check {
        if let Some(battery) = &self.battery {
            if self.from_battery {
                return Err(invalid(
                    "from_battery",
                    "this sensor measures the battery itself; expected from_battery only on the sensors of its loads",
                ));
            }
            if self.load.is_some() {
                return Err(invalid(
                    "load",
                    "a battery's current is the net of its loads (from_battery = true) and its solar charger; expected no load here",
                ));
            }
            battery.check(bus_input_volts)?;
        }
        if (self.battery.is_some() || self.from_battery) && self.supply_volts_key.is_some() {
            return Err(invalid(
                "supply_volts",
                "the battery's terminal voltage is the supply here; expected no supply_volts",
            ));
        }
        Ok(())
    }
}

/// `simulation.load = { model = "…", … }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum LoadModel {
    /// The same power all the time (negative: current flows backwards, e.g. charging).
    Constant {
        /// The power.
        watts: f64,
    },
    /// A fresh uniformly distributed value every conversion.
    Uniform {
        /// The lowest power.
        min_watts: f64,
        /// The highest power.
        max_watts: f64,
    },
    /// Compressor cycles around `watts`, inrush at each start, hot spells.
    AirConditioner {
        /// The rating (default [`LoadModel::AIR_CONDITIONER_WATTS`]).
        #[serde(default)]
        watts: Option<f64>,
    },
    /// Fill, heat, wash, rinse, spin, idle; `watts` is the heater's draw.
    WashingMachine {
        /// The heater's draw (default [`LoadModel::WASHING_MACHINE_WATTS`]).
        #[serde(default)]
        watts: Option<f64>,
    },
    /// Compressor duty cycle around `watts` with a start surge, door openings.
    Fridge {
        /// The compressor's draw (default [`LoadModel::FRIDGE_WATTS`]).
        #[serde(default)]
        watts: Option<f64>,
    },
    /// A Raspberry Pi rail: idle around `watts` with bursts of work.
    RaspberryPi {
        /// The idle draw (default [`LoadModel::RASPBERRY_PI_WATTS`]).
        #[serde(default)]
        watts: Option<f64>,
    },
}

impl LoadModel {
    /// An air conditioner's rating when `watts` is not given.
    pub(crate) const AIR_CONDITIONER_WATTS: f64 = 1450.0;
    /// A washing machine heater's draw when `watts` is not given.
    pub(crate) const WASHING_MACHINE_WATTS: f64 = 700.0;
    /// A fridge compressor's draw when `watts` is not given.
    pub(crate) const FRIDGE_WATTS: f64 = 240.0;
    /// A Raspberry Pi's idle draw when `watts` is not given.
    pub(crate) const RASPBERRY_PI_WATTS: f64 = 3.5;

    /// An appliance profile's name and rating (configured, or its default); `None` for the
    /// `constant` and `uniform` models.
    pub(crate) fn appliance(&self) -> Option<(&'static str, f64)> {
        Some(match *self {
            LoadModel::Constant { .. } | LoadModel::Uniform { .. } => return None,
            LoadModel::AirConditioner { watts } => (
                "air_conditioner",
                watts.unwrap_or(Self::AIR_CONDITIONER_WATTS),
            ),
            LoadModel::WashingMachine { watts } => (
                "washing_machine",
                watts.unwrap_or(Self::WASHING_MACHINE_WATTS),
            ),
            LoadModel::Fridge { watts } => ("fridge", watts.unwrap_or(Self::FRIDGE_WATTS)),
            LoadModel::RaspberryPi { watts } => {
                ("raspberry_pi", watts.unwrap_or(Self::RASPBERRY_PI_WATTS))
            }
        })
    }

    /// Checks of the model's numbers; keys relative to `[sensor.simulation]`.
    fn check(&self) -> Check {
        match *self {
            LoadModel::Constant { watts } if !watts.is_finite() => {
                Err(invalid("load.watts", "expected a finite number of watts"))
            }
            LoadModel::Uniform {
                min_watts,
                max_watts,
            } if !(min_watts.is_finite()
                && max_watts.is_finite()
                && 0.0 <= min_watts
                && min_watts <= max_watts) =>
            {
                Err(invalid("load", format!("min_watts = {min_watts}, max_watts = {max_watts}; expected 0 <= min_watts <= max_watts")))
            }
            _ => match self.appliance() {
                Some((_, w)) if !(w.is_finite() && w > 0.0) => Err(invalid(
                    "load.watts",
                    format!("{w} is not a usable rating; expected watts above 0"),
                )),
                _ => Ok(()),
            },
        }
    }
}

impl fmt::Display for LoadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.appliance()) {
            (_, Some((name, watts))) => write!(f, "{name} {watts} W"),
            (LoadModel::Constant { watts }, _) => write!(f, "constant {watts} W"),
            (
                LoadModel::Uniform {
                    min_watts,
                    max_watts,
                },
                _,
            ) => write!(f, "uniform {min_watts}–{max_watts} W"),
            _ => Ok(()),
        }
    }
}

/// `simulation.faults = [{ kind = "…", … }]`: scheduled misbehaviour, timed from start-up.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum FaultConfig {
    /// The chip does not acknowledge its address on a fraction `rate` of transfers, or on
    /// every `every`-th transfer.
    Nack {
        /// The fraction of transfers that fail.
        #[serde(default)]
        rate: f64,
        /// Every this many transfers, one fails.
        #[serde(default)]
        every: Option<u32>,
        /// When the fault begins.
        #[serde(default, deserialize_with = "duration")]
        start: Duration,
        /// How long it lasts (for good if not given).
        #[serde(default, deserialize_with = "opt_duration")]
        duration: Option<Duration>,
    },
    /// A fraction `rate` of transfers (or every `every`-th) time out.
    Timeout {
        /// The fraction of transfers that fail.
        #[serde(default)]
        rate: f64,
        /// Every this many transfers, one fails.
        #[serde(default)]
        every: Option<u32>,
        /// When the fault begins.
        #[serde(default, deserialize_with = "duration")]
        start: Duration,
        /// How long it lasts (for good if not given).
        #[serde(default, deserialize_with = "opt_duration")]
        duration: Option<Duration>,
    },
    /// The chip is off the bus (every transfer is NACKed).
    Disconnect {
        /// When the fault begins.
        #[serde(deserialize_with = "duration")]
        start: Duration,
        /// How long it lasts.
        #[serde(deserialize_with = "duration")]
        duration: Duration,
    },
    /// The ADC stops converting: registers freeze and CNVR never sets again.
    Stuck {
        /// When the fault begins.
        #[serde(deserialize_with = "duration")]
        start: Duration,
        /// How long it lasts.
        #[serde(deserialize_with = "duration")]
        duration: Duration,
    },
    /// The load draws `watts` instead of its model.
    Overload {
        /// When the fault begins.
        #[serde(deserialize_with = "duration")]
        start: Duration,
        /// How long it lasts.
        #[serde(deserialize_with = "duration")]
        duration: Duration,
        /// What the load draws meanwhile.
        watts: f64,
    },
    /// The supply sits at `volts` instead of `supply_volts`.
    Supply {
        /// When the fault begins.
        #[serde(deserialize_with = "duration")]
        start: Duration,
        /// How long it lasts.
        #[serde(deserialize_with = "duration")]
        duration: Duration,
        /// The supply voltage meanwhile.
        volts: f64,
    },
    /// Transfers block until the window ends, then time out: a bus held low, a hung chip.
    Hang {
        /// When the fault begins.
        #[serde(deserialize_with = "duration")]
        start: Duration,
        /// How long it lasts.
        #[serde(deserialize_with = "duration")]
        duration: Duration,
    },
    /// The chip browns out and comes back with its power-on register values: at a moment, or
    /// after a number of transfers.
    Brownout {
        /// When.
        #[serde(default, deserialize_with = "opt_duration")]
        at: Option<Duration>,
        /// After this many transfers to the chip.
        #[serde(default)]
        after_transfers: Option<u64>,
    },
}

impl FaultConfig {
    /// Checks of one fault; keys relative to it.
    fn check(&self, bus_input_volts: f64) -> Check {
        let zero_window = || invalid("duration", "expected a window longer than 0s");
        match *self {
            FaultConfig::Nack {
                rate,
                every,
                duration,
                ..
            }
            | FaultConfig::Timeout {
                rate,
                every,
                duration,
                ..
            } => {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(invalid(
                        "rate",
                        format!("{rate} is not a probability; expected 0 to 1"),
                    ));
                }
                if every == Some(0) || (every.is_some() == (rate > 0.0)) {
                    return Err(invalid(
                        "rate",
                        "expected either a rate above 0 or every = N (N ≥ 1), one of the two",
                    ));
                }
                if duration == Some(Duration::ZERO) {
                    return Err(zero_window());
                }
                Ok(())
            }
            FaultConfig::Brownout {
                at,
                after_transfers,
            } if at.is_some() == after_transfers.is_some() => Err(invalid(
                "at",
                "expected either at = \"…\" or after_transfers = N, one of the two",
            )),
            FaultConfig::Disconnect { duration, .. }
            | FaultConfig::Hang { duration, .. }
            | FaultConfig::Stuck { duration, .. }
            | FaultConfig::Overload { duration, .. }
            | FaultConfig::Supply { duration, .. }
                if duration.is_zero() =>
            {
                Err(zero_window())
            }
            FaultConfig::Overload { watts, .. } if !watts.is_finite() => {
                Err(invalid("watts", "expected a finite number of watts"))
            }
            FaultConfig::Supply { volts, .. }
                if !(volts.is_finite() && (0.0..=bus_input_volts).contains(&volts)) =>
            {
                Err(invalid(
                    "volts",
                    format!(
                        "{volts} V is outside 0 to {bus_input_volts} V, the chip's bus input range"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}
