//! Energy: trapezoidal integration of power over monotonic time.
//!
//! Power in the forward direction (positive current: the load draws) and in reverse (negative:
//! e.g. a battery being charged through the shunt) go to separate totals, so both stay
//! counters. Where power changes sign between two samples the trapezoid is split at the
//! interpolated zero crossing, so the result stays exact for power that is linear in time.

use std::time::{Duration, Instant};

/// Joules in a watt-hour.
pub(crate) const JOULES_PER_WH: f64 = 3600.0;
/// Joules in a kilowatt-hour.
pub(crate) const JOULES_PER_KWH: f64 = 1000.0 * JOULES_PER_WH;

/// What one sample added.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Step {
    /// Energy added in the forward direction.
    pub(crate) forward_joules: f64,
    /// Energy added in reverse.
    pub(crate) reverse_joules: f64,
    /// Time covered by this step (0 for the first sample and after a gap).
    pub(crate) seconds: f64,
    /// The pause before this sample was longer than `max_gap` and was not bridged.
    pub(crate) gap: bool,
}

/// Integrates one sensor's power.
#[derive(Debug, Clone)]
pub(crate) struct EnergyIntegrator {
    max_gap: Duration,
    last: Option<(Instant, f64)>,
    forward_joules: f64,
    reverse_joules: f64,
}

impl EnergyIntegrator {
    /// Start from stored totals (0 for a new sensor).
    pub(crate) fn new(max_gap: Duration, forward_joules: f64, reverse_joules: f64) -> Self {
        EnergyIntegrator {
            max_gap,
            last: None,
            forward_joules,
            reverse_joules,
        }
    }

    /// Add a power sample taken at `at`. Samples must come in time order; a non-finite power
    /// is ignored (the chip's value was unknown) and the next sample bridges over it if it
    /// comes within `max_gap`.
    pub(crate) fn add(&mut self, power_watts: f64, at: Instant) -> Step {
        if !power_watts.is_finite() {
            return Step::default();
        }
        let previous = self.last.replace((at, power_watts));
        let Some((then, p0)) = previous else {
            return Step::default();
        };
        let dt = at.saturating_duration_since(then);
        if dt > self.max_gap {
            return Step {
                gap: true,
                ..Step::default()
            };
        }
        let (forward, reverse) = trapezoid(p0, power_watts, dt.as_secs_f64());
        self.forward_joules += forward;
        self.reverse_joules += reverse;
        Step {
            forward_joules: forward,
            reverse_joules: reverse,
            seconds: dt.as_secs_f64(),
            gap: false,
        }
    }

    /// Energy drawn in the forward direction since the first reading ever.
    pub(crate) fn forward_joules(&self) -> f64 {
        self.forward_joules
    }

    /// Energy that flowed backwards.
    pub(crate) fn reverse_joules(&self) -> f64 {
        self.reverse_joules
    }
}

/// The area under the line from `p0` to `p1` over `dt` seconds, split into its positive and
/// (the magnitude of) its negative part.
fn trapezoid(p0: f64, p1: f64, dt: f64) -> (f64, f64) {
    if p0 >= 0.0 && p1 >= 0.0 {
        ((p0 + p1) / 2.0 * dt, 0.0)
    } else if p0 <= 0.0 && p1 <= 0.0 {
        (0.0, -(p0 + p1) / 2.0 * dt)
    } else {
        let crossing = dt * p0 / (p0 - p1);
        let first = p0 * crossing / 2.0;
        let second = p1 * (dt - crossing) / 2.0;
        if p0 > 0.0 {
            (first, -second)
        } else {
            (second, -first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        samples: impl IntoIterator<Item = (f64, f64)>,
        max_gap: f64,
    ) -> (EnergyIntegrator, Vec<Step>) {
        let start = Instant::now();
        let mut e = EnergyIntegrator::new(Duration::from_secs_f64(max_gap), 0.0, 0.0);
        let steps = samples
            .into_iter()
            .map(|(t, p)| e.add(p, start + Duration::from_secs_f64(t)))
            .collect();
        (e, steps)
    }

    #[test]
    fn constant_power_is_exact() {
        let (e, _) = run((0..=3600).map(|t| (f64::from(t), 100.0)), 5.0);
        assert_eq!(e.forward_joules(), 360_000.0);
        assert_eq!(e.reverse_joules(), 0.0);
    }

    #[test]
    fn a_ramp_is_exact_even_when_sampled_unevenly() {
        // P(t) = 10 + 2t over 0..100 s: ∫ = 10·100 + 100² = 11000 J.
        let times = [
            0.0, 0.7, 3.1, 3.2, 10.0, 27.5, 50.0, 51.0, 80.0, 99.9, 100.0,
        ];
        let (e, _) = run(times.iter().map(|&t| (t, 10.0 + 2.0 * t)), 50.0);
        assert!(
            (e.forward_joules() - 11_000.0).abs() < 1e-9,
            "{}",
            e.forward_joules()
        );
    }

    #[test]
    fn a_ramp_through_zero_splits_at_the_crossing() {
        // P(t) = 10 − t over 0..30 s: +50 J before t = 10, −200 J after.
        let (e, _) = run([(0.0, 10.0), (30.0, -20.0)], 60.0);
        assert!((e.forward_joules() - 50.0).abs() < 1e-9);
        assert!((e.reverse_joules() - 200.0).abs() < 1e-9);
        let (e, _) = run([(0.0, -20.0), (30.0, 10.0)], 60.0);
        assert!((e.forward_joules() - 50.0).abs() < 1e-9);
        assert!((e.reverse_joules() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn a_gap_longer_than_max_gap_is_not_bridged() {
        // 100 W for 10 s, a 60 s outage, 100 W for 10 s more.
        let samples = (0..=10)
            .map(|t| (f64::from(t), 100.0))
            .chain((70..=80).map(|t| (f64::from(t), 100.0)));
        let (e, steps) = run(samples, 5.0);
        assert_eq!(e.forward_joules(), 2_000.0);
        assert_eq!(steps.iter().filter(|s| s.gap).count(), 1);
        assert!(steps[11].gap);
    }

    #[test]
    fn a_gap_within_max_gap_is_bridged() {
        let (e, steps) = run([(0.0, 100.0), (4.0, 100.0)], 5.0);
        assert_eq!(e.forward_joules(), 400.0);
        assert!(!steps[1].gap);
        assert_eq!(steps[1].seconds, 4.0);
    }

    #[test]
    fn unknown_power_is_skipped_and_bridged() {
        let (e, _) = run([(0.0, 100.0), (1.0, f64::NAN), (2.0, 100.0)], 5.0);
        assert_eq!(e.forward_joules(), 200.0);
    }

    #[test]
    fn continues_from_stored_totals() {
        let start = Instant::now();
        let mut e = EnergyIntegrator::new(Duration::from_secs(5), 1_000.0, 7.0);
        e.add(50.0, start);
        e.add(50.0, start + Duration::from_secs(2));
        assert_eq!(e.forward_joules(), 1_100.0);
        assert_eq!(e.reverse_joules(), 7.0);
    }
}
