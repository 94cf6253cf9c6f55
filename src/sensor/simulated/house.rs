//! The simulated house around a battery: the appliances that draw from it, a solar charger
//! that feeds it, and the battery itself, with a true state of charge the monitor's estimate
//! can be compared with.
//!
//! Time runs in steps of one second: each step takes every appliance's draw and the sun at
//! its start, works out the charger's output and the battery's current and terminal voltage,
//! and counts the charge into the true state of charge (Peukert-weighted out, efficiency-
//! weighted in, as a real battery loses it). A chip converting during a step measures that
//! step's values.
//!
//! - **Battery.** Terminal voltage = open-circuit voltage of the true state of charge (the
//!   chemistry's curve) less current × internal resistance.
//! - **Charger.** Solar power covers the loads first; the rest charges the battery, limited to
//!   what holds the terminal voltage at the absorption voltage, so the charge current tails
//!   off as the battery fills. Once it is below 2 % of capacity the charger floats (charging
//!   no more) until the battery falls below 90 %.
//! - **Sun.** Rises at 06:00, sets at 20:00, a half sine in between, dimmed by clouds that
//!   change every quarter hour.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::current_for;
use super::load::Load;
use crate::chemistry as ocv;
use crate::config::SimulatedBattery;

/// One step of the house's clock.
const STEP: Duration = Duration::from_secs(1);
const DAY: u64 = 86_400;
const SUNRISE_HOURS: f64 = 6.0;
const SUNSET_HOURS: f64 = 20.0;
const CLOUD_PERIOD: u64 = 900;

/// A house shared by the virtual chips of one bus.
pub type SharedHouse = Arc<Mutex<House>>;

/// Lock a shared house (a panic elsewhere does not poison the simulation).
pub fn lock(house: &SharedHouse) -> std::sync::MutexGuard<'_, House> {
    house.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one step is.
#[derive(Debug, Clone, Copy, Default)]
struct StepValues {
    /// Battery terminal voltage.
    volts: f64,
    /// Battery current, discharge positive.
    amps: f64,
}

/// The battery, its charger and its loads.
pub struct House {
    config: SimulatedBattery,
    cells: f64,
    capacity_coulombs: f64,
    rated_amps: f64,
    soc: f64,
    loads: Vec<Load>,
    /// Each load's draw in the current step.
    draws: Vec<f64>,
    /// Start of the current step; `None` before the first.
    step: Option<Duration>,
    values: StepValues,
    /// Simulated time of day at t = 0.
    day_offset: Duration,
    rng: StdRng,
    cloud_factor: f64,
    cloud_period: u64,
    absorbing: bool,
    full_charges: u64,
}

impl House {
    /// A house with its battery as `config` says, drawn on by `loads`.
    pub(crate) fn new(
        config: SimulatedBattery,
        loads: Vec<Load>,
        seed: u64,
        day_offset: Duration,
    ) -> House {
        House {
            cells: ocv::cells(config.chemistry, config.nominal_volts),
            capacity_coulombs: config.capacity_ah * 3600.0,
            rated_amps: config.capacity_ah / 20.0,
            soc: config.state_of_charge,
            draws: vec![0.0; loads.len()],
            loads,
            step: None,
            values: StepValues::default(),
            day_offset,
            rng: StdRng::seed_from_u64(seed ^ 0x50_1a4),
            cloud_factor: 1.0,
            cloud_period: u64::MAX,
            absorbing: true,
            full_charges: 0,
            config,
        }
    }

    /// The battery's true state of charge.
    pub fn true_state_of_charge(&self) -> f64 {
        self.soc
    }

    #[cfg(test)]
    /// Times the charger found the battery full and went to float.
    pub(crate) fn full_charges(&self) -> u64 {
        self.full_charges
    }

    fn open_circuit_volts(&self) -> f64 {
        self.cells * ocv::cell_volts(self.config.chemistry, self.soc)
    }

    fn float_volts(&self) -> f64 {
        self.cells * 3.375_f64.min(self.config.absorption_volts() / self.cells)
    }

    /// Solar power at `t`.
    fn solar_watts(&mut self, t: Duration) -> f64 {
        if self.config.solar_peak_watts <= 0.0 {
            return 0.0;
        }
        let seconds = (self.day_offset + t).as_secs();
        let period = seconds / CLOUD_PERIOD;
        if period != self.cloud_period {
            self.cloud_period = period;
            self.cloud_factor = 1.0 - self.config.clouds * self.rng.random_range(0.0..=1.0);
        }
        let hours = (seconds % DAY) as f64 / 3600.0;
        if !(SUNRISE_HOURS..SUNSET_HOURS).contains(&hours) {
            return 0.0;
        }
        let phase = (hours - SUNRISE_HOURS) / (SUNSET_HOURS - SUNRISE_HOURS);
        self.config.solar_peak_watts * libm::sin(std::f64::consts::PI * phase) * self.cloud_factor
    }

    /// The values of the step starting at `t`.
    fn begin_step(&mut self, t: Duration) {
        let secs = t.as_secs_f64();
        for (draw, load) in self.draws.iter_mut().zip(&mut self.loads) {
            *draw = load.watts(secs).max(0.0);
        }
        let loads: f64 = self.draws.iter().sum();
        let solar = self.solar_watts(t);
        let ocv = self.open_circuit_volts();
        let target = if self.absorbing {
            self.config.absorption_volts()
        } else {
            self.float_volts()
        };
        let ohms = self.config.internal_ohms;
        // The most the charger may push in without the terminal going above its target.
        let charge_limit_watts = if target <= ocv {
            0.0
        } else if ohms > 0.0 {
            target * (target - ocv) / ohms
        } else {
            f64::INFINITY
        };
        let charger = solar.min(loads + charge_limit_watts);
        let amps = current_for(loads - charger, ocv, ohms);
        self.values = StepValues {
            volts: ocv - amps * ohms,
            amps,
        };
        if self.absorbing && amps < 0.0 && -amps < 0.02 * self.config.capacity_ah && self.soc > 0.95
        {
            self.absorbing = false;
            self.full_charges += 1;
        } else if !self.absorbing && self.soc < 0.9 {
            self.absorbing = true;
        }
    }

    /// Count the current step's charge into the true state of charge.
    fn end_step(&mut self) {
        let amps = self.values.amps;
        let seconds = STEP.as_secs_f64();
        let lost = if amps > 0.0 {
            let weight = crate::chemistry::peukert_weight(
                amps,
                self.rated_amps,
                self.config.peukert_exponent,
            );
            amps * weight * seconds
        } else {
            amps * self.config.charge_efficiency * seconds
        };
        self.soc = (self.soc - lost / self.capacity_coulombs).clamp(0.0, 1.0);
    }

    /// Bring the house to time `t`.
    pub(crate) fn advance(&mut self, t: Duration) {
        let Some(mut step) = self.step else {
            self.step = Some(Duration::ZERO);
            self.begin_step(Duration::ZERO);
            return self.advance(t);
        };
        while step + STEP <= t {
            self.end_step();
            step += STEP;
            self.begin_step(step);
        }
        self.step = Some(step);
    }

    /// The battery at `t`: terminal voltage and current (discharge positive).
    pub(crate) fn battery(&mut self, t: Duration) -> (f64, f64) {
        self.advance(t);
        (self.values.volts, self.values.amps)
    }

    /// Load `index` at `t`: the battery's terminal voltage and the load's draw in watts.
    pub(crate) fn load(&mut self, index: usize, t: Duration) -> (f64, f64) {
        self.advance(t);
        (
            self.values.volts,
            self.draws.get(index).copied().unwrap_or(0.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Chemistry, LoadModel};

    fn battery(soc: f64, solar: f64) -> SimulatedBattery {
        SimulatedBattery {
            capacity_ah: 100.0,
            state_of_charge: soc,
            chemistry: Chemistry::Lifepo4,
            nominal_volts: 12.0,
            internal_ohms: 0.01,
            peukert_exponent: 1.0,
            charge_efficiency: 1.0,
            solar_peak_watts: solar,
            clouds: 0.0,
            absorption_volts: None,
            time_of_day: None,
        }
    }

    #[test]
    fn a_constant_load_empties_the_battery_at_its_rate() {
        // 120 W from a 100 Ah battery at about 13.2 V: ~9 A, 10 % in about 1.1 h.
        let load = Load::new(&LoadModel::Constant { watts: 120.0 }, 1);
        let mut house = House::new(battery(0.8, 0.0), vec![load], 1, Duration::ZERO);
        let (volts, amps) = house.battery(Duration::ZERO);
        assert!((volts * amps - 120.0).abs() < 1e-6, "{volts} V × {amps} A");
        house.advance(Duration::from_secs(3600));
        let used = 0.8 - house.true_state_of_charge();
        let expected = amps * 3600.0 / (100.0 * 3600.0);
        assert!((used - expected).abs() < 0.002, "{used} vs {expected}");
        // The voltage follows the curve down, less the drop across 10 mΩ.
        let (later, _) = house.battery(Duration::from_secs(3600));
        assert!(later < volts);
    }

    #[test]
    fn the_sun_charges_it_full_and_the_charger_tails_off_then_floats() {
        let load = Load::new(&LoadModel::Constant { watts: 20.0 }, 1);
        let mut house = House::new(
            battery(0.7, 800.0),
            vec![load],
            1,
            Duration::from_secs(6 * 3600),
        );
        let mut tail = None;
        for minute in 0..(14 * 60) {
            let t = Duration::from_secs(minute * 60);
            let (volts, amps) = house.battery(t);
            if tail.is_none() && house.true_state_of_charge() > 0.99 && amps > -4.0 {
                tail = Some((volts, amps));
            }
        }
        assert!(
            house.true_state_of_charge() > 0.99,
            "{}",
            house.true_state_of_charge()
        );
        assert_eq!(house.full_charges(), 1);
        let (volts, _) = tail.expect("the charge current tailed off");
        assert!(volts > 14.0, "{volts}");
    }
}
