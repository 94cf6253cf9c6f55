//! Anomaly rules, evaluated on every reading of one sensor.
//!
//! Every rule is an episode machine with hysteresis: it starts when its trip condition has
//! held for the rule's duration and clears when a stricter clear condition (the threshold
//! moved inwards by the hysteresis) has held as long. Between the two thresholds it keeps its
//! state, so a value hovering at the limit does not flap. The detector reports each start and
//! each clear once; the caller logs and counts them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::AnomalyConfig;
use crate::energy::JOULES_PER_KWH;
use crate::sensor::Reading;

/// A rule's name: the `rule` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rule {
    /// Power above a limit for a while.
    OverPower,
    /// Energy over a rolling window above a budget.
    EnergyBudget,
    /// Power far from its recent baseline.
    Spike,
    /// Bus voltage below its band.
    UnderVoltage,
    /// Bus voltage above its band.
    OverVoltage,
    /// The chip reads beyond its configured range.
    Overrange,
    /// A battery's state of charge below its minimum.
    LowStateOfCharge,
    /// A battery's time to go below its minimum.
    LowTimeToGo,
    /// A battery not fully charged for too long.
    NotFullyCharged,
}

impl Rule {
    /// Every rule, in label order of the metrics.
    pub(crate) const ALL: [Rule; 9] = [
        Rule::OverPower,
        Rule::EnergyBudget,
        Rule::Spike,
        Rule::UnderVoltage,
        Rule::OverVoltage,
        Rule::Overrange,
        Rule::LowStateOfCharge,
        Rule::LowTimeToGo,
        Rule::NotFullyCharged,
    ];

    /// The `rule` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rule::OverPower => "over_power",
            Rule::EnergyBudget => "energy_budget",
            Rule::Spike => "spike",
            Rule::UnderVoltage => "under_voltage",
            Rule::OverVoltage => "over_voltage",
            Rule::Overrange => "overrange",
            Rule::LowStateOfCharge => "low_state_of_charge",
            Rule::LowTimeToGo => "low_time_to_go",
            Rule::NotFullyCharged => "not_fully_charged",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of rules, as bits (no allocation on the sampling path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RuleSet(u16);

impl RuleSet {
    /// Whether `rule` is in the set.
    pub(crate) fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }
    fn set(&mut self, rule: Rule, on: bool) {
        if on {
            self.0 |= rule.bit();
        } else {
            self.0 &= !rule.bit();
        }
    }
    /// Add `rule` if `on`.
    pub(crate) fn insert_if(&mut self, rule: Rule, on: bool) {
        if on {
            self.set(rule, true);
        }
    }
    /// Whether the set holds no rule.
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Both sets together.
    pub(crate) fn union(self, other: RuleSet) -> RuleSet {
        RuleSet(self.0 | other.0)
    }
    /// The rules in the set.
    pub(crate) fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

/// A rule starting or clearing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Transition {
    /// The rule.
    pub(crate) rule: Rule,
    /// True when the episode starts, false when it clears.
    pub(crate) started: bool,
    /// The value that decided it, in `unit`.
    pub(crate) value: f64,
    /// The threshold it was compared with.
    pub(crate) threshold: f64,
    /// The unit of `value` and `threshold`.
    pub(crate) unit: &'static str,
}

/// Trip after `on_after` of the trip condition, clear after `off_after` of the clear condition.
#[derive(Debug, Clone, Copy)]
struct Episode {
    active: bool,
    since: Option<Instant>,
    on_after: Duration,
    off_after: Duration,
}

impl Episode {
    fn new(on_after: Duration, off_after: Duration) -> Self {
        Episode {
            active: false,
            since: None,
            on_after,
            off_after,
        }
    }

    /// The new state if it changed.
    fn update(&mut self, now: Instant, trip: bool, clear: bool) -> Option<bool> {
        let (condition, wait) = if self.active {
            (clear, self.off_after)
        } else {
            (trip, self.on_after)
        };
        if !condition {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) >= wait {
            self.active = !self.active;
            self.since = None;
            Some(self.active)
        } else {
            None
        }
    }
}

/// `over_power`.
#[derive(Debug, Clone)]
struct OverPower {
    limit_watts: f64,
    clear_watts: f64,
    episode: Episode,
}

/// `energy_budget`: forward energy over a rolling window, from checkpoints of the running
/// total taken every window/96 (it undercounts by at most one such slice).
#[derive(Debug, Clone)]
struct EnergyBudget {
    budget_joules: f64,
    clear_joules: f64,
    window: Duration,
    slice: Duration,
    checkpoints: VecDeque<(Instant, f64)>,
    episode: Episode,
}

const BUDGET_SLICES: u32 = 96;

impl EnergyBudget {
    /// Energy used within the window ending at `now`.
    fn used(&mut self, now: Instant, total_joules: f64) -> f64 {
        if self
            .checkpoints
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= self.slice)
        {
            if self.checkpoints.len() == self.checkpoints.capacity() {
                self.checkpoints.pop_front();
            }
            self.checkpoints.push_back((now, total_joules));
        }
        while self.checkpoints.len() > 1
            && self
                .checkpoints
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.window)
        {
            self.checkpoints.pop_front();
        }
        self.checkpoints
            .front()
            .map_or(0.0, |(_, start)| total_joules - start)
    }
}

/// `spike`: an exponentially weighted mean and variance of power (over about 60 samples).
#[derive(Debug, Clone)]
struct Spike {
    sigmas: f64,
    clear_sigmas: f64,
    mean: f64,
    variance: f64,
    samples: u32,
    episode: Episode,
}

/// Samples before the baseline is trusted.
const SPIKE_WARMUP: u32 = 30;
/// EWMA weight: 2 / (N + 1) for N = 60 samples.
const SPIKE_ALPHA: f64 = 2.0 / 61.0;

impl Spike {
    /// The deviation of `watts` from the baseline in standard deviations, then learn it.
    fn deviation(&mut self, watts: f64) -> Option<f64> {
        let z = (self.samples >= SPIKE_WARMUP).then(|| {
            // A floor under σ: a perfectly steady load would otherwise call any change a spike.
            let sigma = self.variance.sqrt().max(0.01 * self.mean.abs()).max(0.01);
            (watts - self.mean).abs() / sigma
        });
        self.samples = self.samples.saturating_add(1);
        if self.samples == 1 {
            self.mean = watts;
        } else {
            let diff = watts - self.mean;
            let increment = SPIKE_ALPHA * diff;
            self.mean += increment;
            self.variance = (1.0 - SPIKE_ALPHA) * (self.variance + diff * increment);
        }
        z
    }
}

/// `under_voltage` and `over_voltage`.
#[derive(Debug, Clone)]
struct VoltageBand {
    low: f64,
    high: f64,
    margin: f64,
    under: Episode,
    over: Episode,
}

/// All rules of one sensor.
#[derive(Debug, Clone)]
pub(crate) struct AnomalyDetector {
    over_power: Option<OverPower>,
    budget: Option<EnergyBudget>,
    spike: Option<Spike>,
    voltage: Option<VoltageBand>,
    overrange: Episode,
    active: RuleSet,
}

impl AnomalyDetector {
    /// The rules `config` turns on, none in an episode yet.
    pub(crate) fn new(config: &AnomalyConfig) -> Self {
        let h = config.hysteresis();
        AnomalyDetector {
            over_power: config.max_power_watts.map(|limit| {
                let d = config.max_power_for();
                OverPower {
                    limit_watts: limit,
                    clear_watts: limit * (1.0 - h),
                    episode: Episode::new(d, d),
                }
            }),
            budget: config.energy_budget.map(|b| {
                let budget_joules = b.kwh * JOULES_PER_KWH;
                EnergyBudget {
                    budget_joules,
                    clear_joules: budget_joules * (1.0 - h),
                    window: b.window,
                    slice: b.window / BUDGET_SLICES,
                    checkpoints: VecDeque::with_capacity(BUDGET_SLICES as usize + 2),
                    episode: Episode::new(Duration::ZERO, Duration::ZERO),
                }
            }),
            spike: config.spike_sigma.map(|k| Spike {
                sigmas: k,
                clear_sigmas: k * (1.0 - h),
                mean: 0.0,
                variance: 0.0,
                samples: 0,
                episode: Episode::new(Duration::ZERO, Duration::ZERO),
            }),
            voltage: config.allowed_bus_volts.map(|[low, high]| {
                let d = config.bus_volts_for();
                VoltageBand {
                    low,
                    high,
                    margin: h * (high - low),
                    under: Episode::new(d, d),
                    over: Episode::new(d, d),
                }
            }),
            overrange: Episode::new(Duration::ZERO, Duration::ZERO),
            active: RuleSet::default(),
        }
    }

    /// The rules this sensor evaluates.
    pub(crate) fn rules(&self) -> RuleSet {
        let mut set = RuleSet::default();
        set.set(Rule::OverPower, self.over_power.is_some());
        set.set(Rule::EnergyBudget, self.budget.is_some());
        set.set(Rule::Spike, self.spike.is_some());
        set.set(Rule::UnderVoltage, self.voltage.is_some());
        set.set(Rule::OverVoltage, self.voltage.is_some());
        set.set(Rule::Overrange, true);
        set
    }

    /// The rules in an episode now.
    pub(crate) fn active(&self) -> RuleSet {
        self.active
    }

    /// Forget half-elapsed durations: after a gap in the samples nothing is known about it.
    pub(crate) fn reset_pending(&mut self) {
        for e in self.episodes_mut() {
            e.since = None;
        }
    }

    fn episodes_mut(&mut self) -> impl Iterator<Item = &mut Episode> {
        let AnomalyDetector {
            over_power,
            budget,
            spike,
            voltage,
            overrange,
            ..
        } = self;
        let band = voltage.as_mut().map(|v| [&mut v.under, &mut v.over]);
        over_power
            .as_mut()
            .map(|o| &mut o.episode)
            .into_iter()
            .chain(budget.as_mut().map(|b| &mut b.episode))
            .chain(spike.as_mut().map(|s| &mut s.episode))
            .chain(band.into_iter().flatten())
            .chain(std::iter::once(overrange))
    }

    /// Evaluate every rule on a reading taken at `at`, with the sensor's forward energy total
    /// after it; `emit` hears of every start and clear.
    pub(crate) fn observe(
        &mut self,
        at: Instant,
        reading: &Reading,
        energy_joules: f64,
        mut emit: impl FnMut(Transition),
    ) {
        let mut changes = [None; 6];
        let mut note = |rule: Rule, change: Option<bool>, value: f64, threshold: f64, unit| {
            if let Some(started) = change {
                changes[rule as usize] = Some(Transition {
                    rule,
                    started,
                    value,
                    threshold,
                    unit,
                });
            }
        };

        let ovf = self
            .overrange
            .update(at, reading.overflow, !reading.overflow);
        note(
            Rule::Overrange,
            ovf,
            reading.shunt_voltage_volts,
            f64::NAN,
            "V",
        );

        if let Some(v) = &mut self.voltage {
            let volts = reading.bus_voltage_volts;
            let under = v.under.update(at, volts < v.low, volts > v.low + v.margin);
            note(Rule::UnderVoltage, under, volts, v.low, "V");
            let over = v.over.update(at, volts > v.high, volts < v.high - v.margin);
            note(Rule::OverVoltage, over, volts, v.high, "V");
        }

        // Power is unknown while the shunt is saturated.
        if reading.power_watts.is_finite() {
            let watts = reading.power_watts;
            if let Some(o) = &mut self.over_power {
                let change = o
                    .episode
                    .update(at, watts > o.limit_watts, watts < o.clear_watts);
                note(Rule::OverPower, change, watts, o.limit_watts, "W");
            }
            if let Some(s) = &mut self.spike {
                if let Some(z) = s.deviation(watts) {
                    let change = s.episode.update(at, z > s.sigmas, z < s.clear_sigmas);
                    note(Rule::Spike, change, watts, s.mean, "W");
                }
            }
            if let Some(b) = &mut self.budget {
                let used = b.used(at, energy_joules);
                let change = b
                    .episode
                    .update(at, used > b.budget_joules, used < b.clear_joules);
                note(
                    Rule::EnergyBudget,
                    change,
                    used / JOULES_PER_KWH,
                    b.budget_joules / JOULES_PER_KWH,
                    "kWh",
                );
            }
        }

        for t in changes.into_iter().flatten() {
            self.active.set(t.rule, t.started);
            emit(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::anomaly::EnergyBudget as BudgetConfig;

    fn reading(watts: f64, volts: f64) -> Reading {
        Reading {
            bus_voltage_volts: volts,
            shunt_voltage_volts: 0.0,
            current_amperes: watts / volts,
            power_watts: watts,
            overflow: false,
        }
    }

    /// Feeds one reading per second; returns (second, transition) pairs.
    fn drive(
        detector: &mut AnomalyDetector,
        readings: impl IntoIterator<Item = (Reading, f64)>,
    ) -> Vec<(usize, Transition)> {
        let start = Instant::now();
        let mut out = Vec::new();
        for (i, (r, energy)) in readings.into_iter().enumerate() {
            detector.observe(start + Duration::from_secs(i as u64), &r, energy, |t| {
                out.push((i, t))
            });
        }
        out
    }

    fn starts_and_clears(events: &[(usize, Transition)], rule: Rule) -> Vec<(usize, bool)> {
        events
            .iter()
            .filter(|(_, t)| t.rule == rule)
            .map(|(i, t)| (*i, t.started))
            .collect()
    }

    #[test]
    fn over_power_starts_holds_and_clears_with_hysteresis() {
        let mut d = AnomalyDetector::new(&AnomalyConfig {
            max_power_watts: Some(1000.0),
            max_power_for: Some(Duration::from_secs(5)),
            hysteresis: Some(0.1),
            ..AnomalyConfig::default()
        });
        // 10 s at 900 W, 20 s at 1200 W, 10 s at 950 W (inside the band), 20 s at 800 W.
        let watts = [(900.0, 10), (1200.0, 20), (950.0, 10), (800.0, 20)];
        let series = watts
            .iter()
            .flat_map(|&(w, n)| std::iter::repeat_n((reading(w, 12.0), 0.0), n));
        let events = drive(&mut d, series);
        // Above the limit from second 10: starts 5 s later, at 15.
        // 950 W is below the limit but above the clear threshold (900 W): holds.
        // Below 900 W from second 40: clears 5 s later, at 45.
        assert_eq!(
            starts_and_clears(&events, Rule::OverPower),
            vec![(15, true), (45, false)]
        );
        assert!(!d.active().contains(Rule::OverPower));
    }

    #[test]
    fn over_power_ignores_short_excursions() {
        let mut d = AnomalyDetector::new(&AnomalyConfig {
            max_power_watts: Some(1000.0),
            max_power_for: Some(Duration::from_secs(5)),
            ..AnomalyConfig::default()
        });
        let series = (0..30).map(|i| (reading(if i % 4 == 0 { 1500.0 } else { 500.0 }, 12.0), 0.0));
        assert!(drive(&mut d, series).is_empty());
    }

    #[test]
    fn energy_budget_trips_on_the_rolling_window_and_clears_as_it_slides() {
        // Budget 0.01 kWh = 36 kJ over 1 h; the load draws 20 W for 2000 s (40 kJ), then 0.
        let mut d = AnomalyDetector::new(&AnomalyConfig {
            energy_budget: Some(BudgetConfig {
                kwh: 0.01,
                window: Duration::from_secs(3600),
            }),
            ..AnomalyConfig::default()
        });
        let series = (0..6000u32).map(|t| {
            let energy = 20.0 * f64::from(t.min(2000));
            (reading(if t < 2000 { 20.0 } else { 0.0 }, 12.0), energy)
        });
        let events = starts_and_clears(&drive(&mut d, series), Rule::EnergyBudget);
        assert_eq!(events.len(), 2, "{events:?}");
        // Trips once 36 kJ are used: at 1800 s.
        assert_eq!(events[0], (1801, true));
        // Clears when the window has slid past enough of the burst to leave < 34.2 kJ:
        // at t = 3600 + (40 − 34.2)/0.02 s = 3890 s, or up to one slice (37.5 s) sooner,
        // since the window undercounts by at most a slice.
        assert!(!events[1].1);
        assert!((3890 - 38..=3890).contains(&events[1].0), "{events:?}");
    }

    #[test]
    fn spike_flags_a_deviation_from_the_baseline() {
        let mut d = AnomalyDetector::new(&AnomalyConfig {
            spike_sigma: Some(4.0),
            ..AnomalyConfig::default()
        });
        // A noisy 100 W baseline (±2 W), one 200 W sample at 100 s, then baseline again.
        let series = (0..200).map(|i| {
            let w = if i == 100 {
                200.0
            } else {
                100.0 + if i % 2 == 0 { 2.0 } else { -2.0 }
            };
            (reading(w, 12.0), 0.0)
        });
        let events = drive(&mut d, series);
        assert_eq!(
            starts_and_clears(&events, Rule::Spike),
            vec![(100, true), (101, false)]
        );
    }

    #[test]
    fn spike_waits_for_a_baseline() {
        let mut d = AnomalyDetector::new(&AnomalyConfig {
            spike_sigma: Some(4.0),
            ..AnomalyConfig::default()
        });
        let series = (0..20).map(|i| (reading(if i == 10 { 500.0 } else { 100.0 }, 12.0), 0.0));
        assert!(drive(&mut d, series).is_empty());
    }

    #[test]
    fn voltage_band_with_duration_and_hysteresis() {
        let mut d = AnomalyDetector::new(&AnomalyConfig {
            allowed_bus_volts: Some([11.0, 14.6]),
            bus_volts_for: Some(Duration::from_secs(3)),
            hysteresis: Some(0.05), // 0.18 V of a 3.6 V band
            ..AnomalyConfig::default()
        });
        let volts = [
            (12.5, 5),
            (10.8, 10),
            (11.1, 5),
            (11.3, 10),
            (14.9, 10),
            (14.0, 10),
        ];
        let series = volts
            .iter()
            .flat_map(|&(v, n)| std::iter::repeat_n((reading(10.0, v), 0.0), n));
        let events = drive(&mut d, series);
        // Under from 5, starts at 8; 11.1 V is inside the band's margin: holds;
        // 11.3 V from 20 clears at 23. Over from 30, starts at 33; 14.0 V from 40 clears at 43.
        assert_eq!(
            starts_and_clears(&events, Rule::UnderVoltage),
            vec![(8, true), (23, false)]
        );
        assert_eq!(
            starts_and_clears(&events, Rule::OverVoltage),
            vec![(33, true), (43, false)]
        );
    }

    #[test]
    fn overrange_follows_the_ovf_flag_and_skips_power_rules() {
        let mut d = AnomalyDetector::new(&AnomalyConfig {
            max_power_watts: Some(1.0),
            max_power_for: Some(Duration::from_secs(1)),
            ..AnomalyConfig::default()
        });
        let ovf = Reading {
            overflow: true,
            power_watts: f64::NAN,
            current_amperes: f64::NAN,
            ..reading(0.0, 12.0)
        };
        let series = [ovf, ovf, ovf, reading(0.5, 12.0), reading(0.5, 12.0)].map(|r| (r, 0.0));
        let events = drive(&mut d, series);
        assert_eq!(
            starts_and_clears(&events, Rule::Overrange),
            vec![(0, true), (3, false)]
        );
        assert!(starts_and_clears(&events, Rule::OverPower).is_empty());
    }

    #[test]
    fn a_gap_restarts_pending_durations() {
        let mut d = AnomalyDetector::new(&AnomalyConfig {
            max_power_watts: Some(100.0),
            max_power_for: Some(Duration::from_secs(10)),
            ..AnomalyConfig::default()
        });
        let start = Instant::now();
        let mut events = 0;
        d.observe(start, &reading(200.0, 12.0), 0.0, |_| events += 1);
        d.reset_pending();
        d.observe(
            start + Duration::from_secs(60),
            &reading(200.0, 12.0),
            0.0,
            |_| events += 1,
        );
        assert_eq!(
            events, 0,
            "60 s apart with a gap between is not 60 s above the limit"
        );
    }

    #[test]
    fn configured_rules() {
        let d = AnomalyDetector::new(&AnomalyConfig {
            allowed_bus_volts: Some([4.75, 5.25]),
            ..AnomalyConfig::default()
        });
        let rules: Vec<_> = d.rules().iter().map(Rule::as_str).collect();
        assert_eq!(rules, ["under_voltage", "over_voltage", "overrange"]);
    }
}
