//! The battery monitor: state of charge by counting coulombs through the battery's shunt,
//! the way a dedicated battery monitor (a Victron BMV, say) does it.
//!
//! - **Counting.** Current is integrated over monotonic time by trapezoids, with the energy
//!   integrator's gap rule (a pause longer than `max_gap` is not bridged). Currents below
//!   `current_threshold_amps` count as zero, so a shunt amplifier's offset does not drift the
//!   count. Charge put in counts at `charge_efficiency`; charge taken out is weighted by
//!   Peukert's law, (I / I₂₀)^(n−1), I₂₀ being the 20-hour rate the capacity is rated at.
//! - **Synchronisation.** When the voltage is at or above `charged_voltage` and the current
//!   within ± the tail current for `charged_detection_time`, the battery is full: the count
//!   starts again from 100 %. Until the first time, the state of charge is unknown and not
//!   exported (unless `initial_soc` says where to start, or asks for an estimate from the
//!   voltage of the battery at rest, whose uncertainty is exported with it).
//! - **Time to go.** From the current averaged over `time_to_go_averaging`: the charge above
//!   the discharge floor over the Peukert-weighted rate. While the battery is not discharging
//!   there is no limit: +∞.
//!
//! Sign convention inside: discharge is positive.

use std::time::{Duration, Instant};

use crate::anomaly::{Rule, RuleSet, Transition};
use crate::chemistry as ocv;
use crate::config::{BatteryConfig, ChargingCurrent, Chemistry, InitialSoc};
use crate::state::{SocStatus, StoredBattery};

/// Hours in the rate a capacity is rated at.
const RATED_HOURS: f64 = 20.0;
/// A battery unwatched for longer than this (the daemon stopped, the machine off) may have
/// been charged or discharged meanwhile: its state of charge becomes an estimate.
pub(crate) const UNWATCHED_AFTER: Duration = Duration::from_secs(3600);
/// The volts per cell a rested battery's voltage may be off by (measurement, temperature, a
/// rest that was too short), for the uncertainty of an estimate.
const REST_TOLERANCE_VOLTS: f64 = 0.02;
/// State-of-charge hysteresis of the `low_state_of_charge` rule.
const SOC_HYSTERESIS: f64 = 0.05;
/// Time-to-go hysteresis of the `low_time_to_go` rule (a fraction of the threshold).
const TIME_TO_GO_HYSTERESIS: f64 = 0.2;

/// What the monitor knows, for the status page, the API and the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatterySnapshot {
    /// What is saved.
    pub stored: StoredBattery,
    /// The capacity, in coulombs.
    pub(crate) capacity_coulombs: f64,
    /// The state of charge (0 to 1), when known.
    pub state_of_charge: Option<f64>,
    /// Seconds to the discharge floor, when the state of charge is known; +∞ while not
    /// discharging.
    pub time_to_go_seconds: Option<f64>,
    /// The averaged current (discharge positive), in amperes.
    pub(crate) average_current_amperes: f64,
    /// The averaged current discharges it (beyond `current_threshold_amps`, as time to go
    /// counts it), whether or not the state of charge is known.
    pub(crate) discharging: bool,
    /// The averaged current charges it (beyond the threshold the other way).
    pub(crate) charging: bool,
}

impl BatterySnapshot {
    /// Synchronised to a full charge since the battery was last unwatched.
    pub fn synchronized(&self) -> bool {
        self.stored.status == SocStatus::Synchronized
    }

    /// The uncertainty of the state of charge, when it is known (0 when synchronised).
    pub fn uncertainty(&self) -> Option<f64> {
        match self.stored.status {
            SocStatus::Unknown => None,
            SocStatus::Synchronized => Some(0.0),
            SocStatus::Estimated => Some(self.stored.uncertainty_ratio).filter(|u| u.is_finite()),
        }
    }
}

/// One rule's state: tripped, or not.
#[derive(Debug, Clone, Copy, Default)]
struct Alarm {
    active: bool,
}

impl Alarm {
    /// The new state, if it changed.
    fn update(&mut self, trip: bool, clear: bool) -> Option<bool> {
        if !self.active && trip {
            self.active = true;
            Some(true)
        } else if self.active && clear {
            self.active = false;
            Some(false)
        } else {
            None
        }
    }
}

/// Unix times before this (2020-01-01) come from a clock that was not set.
const PLAUSIBLE_UNIX: f64 = 1_577_836_800.0;

/// The monitor of one battery.
#[derive(Debug, Clone)]
pub(crate) struct BatteryMonitor {
    config: BatteryConfig,
    /// The sign that makes discharge positive.
    sign: f64,
    capacity: f64,
    rated_amps: f64,
    max_gap: Duration,
    state: StoredBattery,
    /// The last sample: when, and its current (discharge positive, thresholded).
    last: Option<(Instant, f64)>,
    /// Since when the charged condition holds; and whether this episode was counted.
    charged_since: Option<Instant>,
    counted_full: bool,
    average: Option<f64>,
    low_soc: Alarm,
    low_time_to_go: Alarm,
    not_full: Alarm,
    /// How long since the last full charge (or the first sample), in seconds, at an instant
    /// of this process: the age counts on from there on the monotonic clock, so a step of the
    /// wall clock cannot make it older or younger.
    since_full: Option<(Instant, f64)>,
}

impl BatteryMonitor {
    /// A monitor of `config`, continuing from `stored`; samples further apart than `max_gap`
    /// are not bridged.
    pub(crate) fn new(config: &BatteryConfig, stored: StoredBattery, max_gap: Duration) -> Self {
        BatteryMonitor {
            sign: match config.charging_current {
                ChargingCurrent::Negative => 1.0,
                ChargingCurrent::Positive => -1.0,
            },
            capacity: config.capacity_coulombs(),
            rated_amps: config.capacity_ah / RATED_HOURS,
            max_gap,
            state: stored,
            last: None,
            charged_since: None,
            counted_full: false,
            average: None,
            low_soc: Alarm::default(),
            low_time_to_go: Alarm::default(),
            not_full: Alarm::default(),
            since_full: None,
            config: config.clone(),
        }
    }

    /// A monitor with the settings of `other`, continuing from `stored`.
    pub(crate) fn new_like(other: &BatteryMonitor, stored: StoredBattery) -> Self {
        BatteryMonitor::new(&other.config, stored, other.max_gap)
    }

    /// The battery's name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// The rules this battery evaluates.
    pub(crate) fn rules(&self) -> RuleSet {
        let a = &self.config.anomaly;
        let mut rules = RuleSet::default();
        rules.insert_if(Rule::LowStateOfCharge, a.min_state_of_charge.is_some());
        rules.insert_if(Rule::LowTimeToGo, a.min_time_to_go.is_some());
        rules.insert_if(Rule::NotFullyCharged, a.full_charge_within.is_some());
        rules
    }

    /// The rules in an episode.
    pub(crate) fn active(&self) -> RuleSet {
        let mut rules = RuleSet::default();
        rules.insert_if(Rule::LowStateOfCharge, self.low_soc.active);
        rules.insert_if(Rule::LowTimeToGo, self.low_time_to_go.active);
        rules.insert_if(Rule::NotFullyCharged, self.not_full.active);
        rules
    }

    /// What is saved.
    pub(crate) fn stored(&self) -> StoredBattery {
        self.state
    }

    fn state_of_charge(&self) -> Option<f64> {
        (self.state.status != SocStatus::Unknown)
            .then(|| 1.0 - self.state.below_full_coulombs / self.capacity)
    }

    /// Peukert's weight of a discharge at `amps`.
    fn peukert(&self, amps: f64) -> f64 {
        if amps <= 0.0 {
            return 1.0;
        }
        crate::chemistry::peukert_weight(amps, self.rated_amps, self.config.peukert_exponent())
    }

    fn time_to_go(&self, soc: f64) -> f64 {
        let average = self.average.unwrap_or(0.0);
        if average <= self.config.current_threshold_amps {
            return f64::INFINITY;
        }
        let above_floor = (soc - self.config.discharge_floor_ratio()).max(0.0) * self.capacity;
        above_floor / (average * self.peukert(average))
    }

    /// The snapshot as of the last sample.
    pub(crate) fn snapshot(&self) -> BatterySnapshot {
        let soc = self.state_of_charge();
        BatterySnapshot {
            stored: self.state,
            capacity_coulombs: self.capacity,
            state_of_charge: soc,
            time_to_go_seconds: soc.map(|s| self.time_to_go(s)),
            average_current_amperes: self.average.unwrap_or(0.0),
            discharging: self.average.unwrap_or(0.0) > self.config.current_threshold_amps,
            charging: self.average.unwrap_or(0.0) < -self.config.current_threshold_amps,
        }
    }

    /// Count charge taken out (`q` > 0) or put in (`q` < 0) over `seconds`.
    fn count(&mut self, q: f64, seconds: f64) {
        if q > 0.0 {
            self.state.charge_out_coulombs += q;
            let weight = self.peukert(q / seconds.max(f64::MIN_POSITIVE));
            self.state.below_full_coulombs += q * weight;
        } else if q < 0.0 {
            self.state.charge_in_coulombs -= q;
            self.state.below_full_coulombs += q * self.config.charge_efficiency();
        }
        self.state.below_full_coulombs = self.state.below_full_coulombs.clamp(0.0, self.capacity);
    }

    /// Integrate from the last sample to one of `amps` at `at`, split where the current
    /// crosses zero so charge in and out are counted apart.
    fn integrate(&mut self, amps: f64, at: Instant) {
        let Some((t0, a0)) = self.last else { return };
        let dt = at.saturating_duration_since(t0);
        if dt > self.max_gap {
            if dt > UNWATCHED_AFTER {
                self.unwatched(dt);
            }
            return;
        }
        let dt = dt.as_secs_f64();
        if a0 * amps >= 0.0 {
            self.count((a0 + amps) / 2.0 * dt, dt);
        } else {
            let first = a0.abs() / (a0.abs() + amps.abs()) * dt;
            self.count(a0 / 2.0 * first, first);
            self.count(amps / 2.0 * (dt - first), dt - first);
        }
    }

    fn unwatched(&mut self, gap: Duration) {
        if self.state.status == SocStatus::Synchronized {
            self.state.status = SocStatus::Estimated;
            self.state.uncertainty_ratio = f64::NAN;
            log::warn!(
                battery = self.config.name.as_str();
                "battery {} went unwatched for {}; its state of charge is an estimate until the next full charge",
                self.config.name,
                humantime::format_duration(Duration::from_secs(gap.as_secs()))
            );
        }
    }

    /// The first sample of this process, at `at` (`wall_unix` on the wall clock): where to
    /// start.
    fn start(&mut self, at: Instant, wall_unix: f64) {
        // The age of the last full charge, from the wall clock once, within reason: a
        // reference in the future, or from before the clock was set (a Pi without a
        // real-time clock boots in 1970), counts from now.
        let age = wall_unix - self.state.reference_unix;
        let age = if self.state.reference_unix >= PLAUSIBLE_UNIX && age > 0.0 {
            age
        } else {
            0.0
        };
        self.since_full = Some((at, age));
        if self.state.samples == 0 {
            self.state.reference_unix = wall_unix;
            if let InitialSoc::Ratio(r) = self.config.initial_soc {
                self.state.status = SocStatus::Estimated;
                self.state.below_full_coulombs = (1.0 - r) * self.capacity;
                self.state.uncertainty_ratio = f64::NAN;
            }
        } else if wall_unix - self.state.last_sample_unix > UNWATCHED_AFTER.as_secs_f64() {
            self.unwatched(Duration::from_secs_f64(
                (wall_unix - self.state.last_sample_unix).min(1e12),
            ));
        }
    }

    /// An estimate from the voltage of the battery at rest; or, given its internal
    /// resistance, under load (up to a C/2 current) from the voltage it would have at rest:
    /// the terminal voltage plus current × resistance, with a quarter of that correction
    /// added to the tolerance (the resistance is not exact, and a battery under load
    /// polarises).
    fn estimate(&mut self, amps: f64, volts: f64) {
        if self.state.status != SocStatus::Unknown || self.config.initial_soc != InitialSoc::Voltage
        {
            return;
        }
        let rest = self
            .config
            .current_threshold_amps
            .max(self.rated_amps / 5.0);
        let (open_circuit, correction) = match self.config.internal_resistance_ohms {
            Some(ohms) if amps.abs() <= self.config.capacity_ah / 2.0 => {
                (volts + amps * ohms, (amps * ohms).abs())
            }
            _ if amps.abs() <= rest => (volts, 0.0),
            _ => return,
        };
        let chemistry: Chemistry = self.config.chemistry;
        let cells = ocv::cells(chemistry, self.config.nominal_volts);
        let per_cell = open_circuit / cells;
        let tolerance = REST_TOLERANCE_VOLTS + correction / 4.0 / cells;
        let soc = ocv::soc_at(chemistry, per_cell);
        self.state.status = SocStatus::Estimated;
        self.state.below_full_coulombs = (1.0 - soc) * self.capacity;
        self.state.uncertainty_ratio = ocv::uncertainty_at(chemistry, per_cell, tolerance);
        let how = if correction > 0.0 {
            format!("{volts:.2} V at {amps:.1} A, {open_circuit:.2} V at rest")
        } else {
            format!("{volts:.2} V at rest")
        };
        log::info!(
            battery = self.config.name.as_str();
            "battery {}: {:.0} % estimated from {how} (± {:.0} %); counting from there until the first full charge",
            self.config.name,
            soc * 100.0,
            self.state.uncertainty_ratio * 100.0
        );
    }

    /// Full: the charged condition held long enough.
    fn synchronise(&mut self, amps: f64, volts: f64, at: Instant, wall_unix: f64) {
        let charged =
            volts >= self.config.charged_voltage() && amps.abs() <= self.config.tail_current_amps();
        if !charged {
            self.charged_since = None;
            self.counted_full = false;
            return;
        }
        let since = *self.charged_since.get_or_insert(at);
        if self.counted_full
            || at.saturating_duration_since(since) < self.config.charged_detection_time()
        {
            return;
        }
        self.counted_full = true;
        if self.state.status != SocStatus::Synchronized {
            log::info!(
                battery = self.config.name.as_str();
                "battery {} is full ({volts:.2} V, {:.2} A): state of charge synchronised to 100 %",
                self.config.name,
                -amps
            );
        }
        self.state.status = SocStatus::Synchronized;
        self.state.below_full_coulombs = 0.0;
        self.state.uncertainty_ratio = 0.0;
        self.state.full_charges += 1;
        self.state.reference_unix = wall_unix;
        self.since_full = Some((at, 0.0));
    }

    /// The rules, after a sample.
    fn alarms(&mut self, at: Instant, mut on: impl FnMut(Transition)) {
        let a = self.config.anomaly;
        let soc = self.state_of_charge();
        if let Some(min) = a.min_state_of_charge {
            let value = soc.unwrap_or(f64::NAN);
            let changed = self.low_soc.update(
                soc.is_some_and(|s| s < min),
                soc.is_none_or(|s| s >= min + SOC_HYSTERESIS),
            );
            if let Some(started) = changed {
                on(transition(
                    Rule::LowStateOfCharge,
                    started,
                    value,
                    min,
                    "ratio",
                ));
            }
        }
        if let Some(min) = a.min_time_to_go {
            let ttg = soc.map_or(f64::INFINITY, |s| self.time_to_go(s));
            let min = min.as_secs_f64();
            let changed = self
                .low_time_to_go
                .update(ttg < min, ttg >= min * (1.0 + TIME_TO_GO_HYSTERESIS));
            if let Some(started) = changed {
                on(transition(Rule::LowTimeToGo, started, ttg, min, "s"));
            }
        }
        if let Some(within) = a.full_charge_within {
            let age = self.since_full.map_or(0.0, |(anchor, age)| {
                age + at.saturating_duration_since(anchor).as_secs_f64()
            });
            let days = age / 86_400.0;
            let limit = within.as_secs_f64() / 86_400.0;
            let changed = self.not_full.update(days > limit, days <= limit);
            if let Some(started) = changed {
                on(transition(
                    Rule::NotFullyCharged,
                    started,
                    days,
                    limit,
                    "days",
                ));
            }
        }
    }

    /// One sample: the sensor's current (as it reads it) and bus voltage at `at`
    /// (`wall_unix` on the wall clock). Rule transitions go to `on`.
    pub(crate) fn observe(
        &mut self,
        current_amperes: f64,
        volts: f64,
        at: Instant,
        wall_unix: f64,
        on: impl FnMut(Transition),
    ) {
        if !(current_amperes.is_finite() && volts.is_finite()) {
            return;
        }
        let mut amps = current_amperes * self.sign;
        if amps.abs() < self.config.current_threshold_amps {
            amps = 0.0;
        }
        if self.last.is_none() {
            self.start(at, wall_unix);
        }
        self.integrate(amps, at);
        let dt = self.last.map_or(0.0, |(t0, _)| {
            at.saturating_duration_since(t0).as_secs_f64()
        });
        let tau = self.config.time_to_go_averaging.as_secs_f64();
        self.average = Some(match self.average {
            Some(avg) if dt <= self.max_gap.as_secs_f64() => {
                avg + (amps - avg) * (1.0 - libm::exp(-dt / tau))
            }
            _ => amps,
        });
        self.last = Some((at, amps));
        self.estimate(amps, volts);
        self.synchronise(amps, volts, at, wall_unix);
        self.state.samples += 1;
        self.state.last_sample_unix = wall_unix;
        self.alarms(at, on);
    }
}

fn transition(
    rule: Rule,
    started: bool,
    value: f64,
    threshold: f64,
    unit: &'static str,
) -> Transition {
    Transition {
        rule,
        started,
        value,
        threshold,
        unit,
    }
}

#[cfg(test)]
mod tests;
