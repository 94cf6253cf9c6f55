use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;

/// A 200 Ah battery on sensor "bat" with `keys` added to its `[[battery]]`.
fn config(keys: &str) -> BatteryConfig {
    let text = format!(
        "[[sensor]]\nname = \"bat\"\ndriver = \"simulated\"\n\n[[battery]]\nname = \"house\"\nsensor = \"bat\"\ncapacity_ah = 200.0\n{keys}\n"
    );
    Config::from_toml(Path::new("t.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .batteries
        .remove(0)
}

const HOUR: f64 = 3600.0;

/// Drives a monitor with samples `every` seconds, on a clock of its own.
struct Run {
    monitor: BatteryMonitor,
    origin: Instant,
    t: f64,
    /// How far the wall clock is off.
    wall_step: f64,
    transitions: Vec<(Rule, bool)>,
}

impl Run {
    fn new(keys: &str, stored: StoredBattery) -> Run {
        let monitor = BatteryMonitor::new(&config(keys), stored, Duration::from_secs(60));
        Run {
            monitor,
            origin: Instant::now(),
            t: 0.0,
            wall_step: 0.0,
            transitions: Vec::new(),
        }
    }

    fn synced(keys: &str, soc: f64) -> Run {
        let stored = StoredBattery {
            samples: 1,
            status: SocStatus::Synchronized,
            below_full_coulombs: (1.0 - soc) * 200.0 * HOUR,
            reference_unix: 1.7e9,
            last_sample_unix: 1.7e9,
            ..StoredBattery::default()
        };
        Run::new(keys, stored)
    }

    /// `amps` as the sensor reads them (charging negative) at `volts`, for `seconds`.
    fn hold(&mut self, amps: f64, volts: f64, seconds: f64, every: f64) {
        let end = self.t + seconds;
        while self.t < end - 1e-9 {
            self.sample(amps, volts);
            self.t += every;
        }
    }

    fn sample(&mut self, amps: f64, volts: f64) {
        let at = self.origin + Duration::from_secs_f64(self.t);
        let wall = 1.7e9 + self.t + self.wall_step;
        let transitions = &mut self.transitions;
        self.monitor.observe(amps, volts, at, wall, |t| {
            transitions.push((t.rule, t.started))
        });
    }

    fn soc(&self) -> Option<f64> {
        self.monitor.snapshot().state_of_charge
    }
}

#[test]
fn an_offset_below_the_threshold_does_not_drift_the_state_of_charge() {
    let mut run = Run::synced("", 0.7);
    // A day of 0.05 A either way: under the 0.1 A threshold.
    run.hold(0.05, 13.2, 12.0 * HOUR, 10.0);
    run.hold(-0.05, 13.2, 12.0 * HOUR, 10.0);
    assert_eq!(run.soc(), Some(0.7));
    let stored = run.monitor.stored();
    assert_eq!(
        (stored.charge_in_coulombs, stored.charge_out_coulombs),
        (0.0, 0.0)
    );
    // Without the threshold the same offset would have moved it 0.2 % over the first half.
    let mut bare = Run::synced("current_threshold_amps = 0.0", 0.7);
    bare.hold(0.05, 13.2, 12.0 * HOUR, 10.0);
    assert!(bare.soc().unwrap() < 0.698, "{:?}", bare.soc());
}

#[test]
fn discharge_counts_with_peukert_and_charge_with_efficiency() {
    // Peukert 1 and efficiency 1: 10 A for an hour is 10 Ah of 200.
    let mut run = Run::synced("peukert_exponent = 1.0\ncharge_efficiency = 1.0", 1.0);
    run.hold(10.0, 13.0, HOUR, 1.0);
    run.sample(10.0, 13.0);
    assert!((run.soc().unwrap() - 0.95).abs() < 1e-9, "{:?}", run.soc());
    assert!((run.monitor.stored().charge_out_coulombs - 10.0 * HOUR).abs() < 1e-6);
    // Twice the 20-hour rate (10 A) with n = 1.25: each ampere-hour costs 2^0.25 of capacity.
    let mut run = Run::synced("peukert_exponent = 1.25\ncharge_efficiency = 1.0", 1.0);
    run.hold(20.0, 13.0, HOUR, 1.0);
    run.sample(20.0, 13.0);
    let used = (1.0 - run.soc().unwrap()) * 200.0;
    assert!((used - 20.0 * 2f64.powf(0.25)).abs() < 1e-6, "{used} Ah");
    // Charging 10 A for an hour at 90 %: 9 Ah back in; the counter says 10 went in.
    let mut run = Run::synced("peukert_exponent = 1.0\ncharge_efficiency = 0.9", 0.5);
    run.hold(-10.0, 13.4, HOUR, 1.0);
    run.sample(-10.0, 13.4);
    assert!(
        (run.soc().unwrap() - (0.5 + 9.0 / 200.0)).abs() < 1e-9,
        "{:?}",
        run.soc()
    );
    assert!((run.monitor.stored().charge_in_coulombs - 10.0 * HOUR).abs() < 1e-6);
}

#[test]
fn a_reversed_shunt_is_a_setting() {
    let mut run = Run::synced(
        "charging_current = \"positive\"\npeukert_exponent = 1.0\ncharge_efficiency = 1.0",
        0.5,
    );
    run.hold(10.0, 13.4, HOUR, 1.0);
    run.sample(10.0, 13.4);
    assert!((run.soc().unwrap() - 0.55).abs() < 1e-9, "{:?}", run.soc());
}

#[test]
fn unknown_until_the_first_full_charge_then_synchronised() {
    let mut run = Run::new("", StoredBattery::default());
    run.hold(15.0, 13.1, HOUR, 10.0);
    assert_eq!(run.soc(), None);
    assert!(!run.monitor.snapshot().synchronized());
    // Charged voltage (14.0 V) and a tail current below 8 A, but only for 2 minutes.
    run.hold(-20.0, 14.1, 600.0, 10.0);
    run.hold(-6.0, 14.2, 120.0, 10.0);
    run.hold(-20.0, 14.1, 60.0, 10.0);
    assert_eq!(run.soc(), None);
    // For 3 minutes: full.
    run.hold(-6.0, 14.2, 200.0, 10.0);
    assert_eq!(run.soc(), Some(1.0));
    let snapshot = run.monitor.snapshot();
    assert!(snapshot.synchronized());
    assert_eq!(snapshot.stored.full_charges, 1);
    assert_eq!(snapshot.uncertainty(), Some(0.0));
    // Staying full is one full charge, not one per sample.
    run.hold(-2.0, 14.2, 600.0, 10.0);
    assert_eq!(run.monitor.stored().full_charges, 1);
}

#[test]
fn a_start_from_the_voltage_at_rest_says_how_uncertain_it_is() {
    let mut run = Run::new("initial_soc = \"voltage\"", StoredBattery::default());
    // Under load the voltage says nothing.
    run.hold(30.0, 12.9, 60.0, 10.0);
    assert_eq!(run.soc(), None);
    // At rest: 13.30 V on four cells, 3.325 V each: about 73 % on the LiFePO4 plateau.
    run.hold(0.5, 13.30, 10.0, 10.0);
    let snapshot = run.monitor.snapshot();
    let soc = snapshot.state_of_charge.unwrap();
    assert!((soc - 0.733).abs() < 0.01, "{soc}");
    assert!(!snapshot.synchronized());
    let u = snapshot.uncertainty().unwrap();
    assert!(u > 0.1 && u < 0.5, "{u}");
    // A stated start has no voltage to be uncertain about.
    let mut run = Run::new("initial_soc = 0.8", StoredBattery::default());
    run.hold(0.0, 13.3, 10.0, 10.0);
    assert_eq!(run.soc(), Some(0.8));
    assert_eq!(run.monitor.snapshot().uncertainty(), None);
}

#[test]
fn time_to_go_on_a_constant_load_and_none_while_charging() {
    let mut run = Run::synced("peukert_exponent = 1.0\ntime_to_go_averaging = \"1m\"", 0.9);
    // 20 A: (0.9 − 0.1) × 200 Ah / 20 A = 8 h, less what the averaging minutes used.
    run.hold(20.0, 13.0, 600.0, 1.0);
    let snapshot = run.monitor.snapshot();
    let expected = (snapshot.state_of_charge.unwrap() - 0.1) * 200.0 * HOUR / 20.0;
    let ttg = snapshot.time_to_go_seconds.unwrap();
    assert!(
        (ttg - expected).abs() / expected < 0.001,
        "{ttg} vs {expected}"
    );
    run.hold(-20.0, 13.6, 600.0, 1.0);
    assert_eq!(
        run.monitor.snapshot().time_to_go_seconds,
        Some(f64::INFINITY)
    );
    // Below the floor there is no time left.
    let mut run = Run::synced("", 0.05);
    run.hold(20.0, 12.5, 60.0, 1.0);
    assert_eq!(run.monitor.snapshot().time_to_go_seconds, Some(0.0));
}

#[test]
fn alarms_trip_and_clear_with_hysteresis() {
    let keys = "peukert_exponent = 1.0\n[battery.anomaly]\nmin_state_of_charge = 0.2\nmin_time_to_go = \"2h\"\nfull_charge_within = \"2d\"";
    let mut run = Run::synced(keys, 0.3);
    assert_eq!(run.monitor.rules().iter().count(), 3);
    // 40 A: 0.2 of 200 Ah is 40 Ah above the floor: 1 h to go: low_time_to_go at once...
    run.hold(40.0, 12.8, 60.0, 10.0);
    assert_eq!(run.transitions, [(Rule::LowTimeToGo, true)]);
    // ... and below 20 % after about 30 minutes.
    run.hold(40.0, 12.8, 1800.0, 10.0);
    assert!(run.transitions.contains(&(Rule::LowStateOfCharge, true)));
    // Charging clears time to go at once, the state of charge only above 25 %.
    run.hold(-40.0, 13.4, 600.0, 10.0);
    assert!(run.transitions.contains(&(Rule::LowTimeToGo, false)));
    assert!(!run.transitions.contains(&(Rule::LowStateOfCharge, false)));
    run.hold(-40.0, 13.4, 1800.0, 10.0);
    assert!(run.transitions.contains(&(Rule::LowStateOfCharge, false)));
    // Two days without a full charge.
    run.hold(0.0, 13.3, 2.0 * 86_400.0 + 60.0, 60.0);
    assert_eq!(run.transitions.last(), Some(&(Rule::NotFullyCharged, true)));
    assert!(run.monitor.active().contains(Rule::NotFullyCharged));
}

#[test]
fn a_battery_unwatched_for_hours_is_an_estimate_again() {
    let mut run = Run::synced("", 0.8);
    run.hold(5.0, 13.2, 60.0, 10.0);
    assert!(run.monitor.snapshot().synchronized());
    // The machine was off for two hours.
    run.t += 2.0 * HOUR;
    run.sample(5.0, 13.2);
    let snapshot = run.monitor.snapshot();
    assert!(!snapshot.synchronized());
    assert!(snapshot.state_of_charge.is_some());
    assert_eq!(snapshot.uncertainty(), None);
    // And so is one restored from a file saved two hours ago.
    let mut stored = run.monitor.stored();
    stored.status = SocStatus::Synchronized;
    let mut later = Run::new("", stored);
    later.t = 4.0 * HOUR;
    later.sample(5.0, 13.2);
    assert!(!later.monitor.snapshot().synchronized());
}

#[test]
fn a_step_of_the_wall_clock_neither_ages_nor_rejuvenates_the_last_full_charge() {
    let keys = "[battery.anomaly]\nfull_charge_within = \"14d\"";
    let mut run = Run::synced(keys, 0.9);
    run.hold(1.0, 13.0, 600.0, 60.0);
    // The clock jumps 20 days ahead and comes back a minute later: no alarm.
    run.wall_step = 20.0 * 86_400.0;
    run.hold(1.0, 13.0, 60.0, 10.0);
    run.wall_step = 0.0;
    run.hold(1.0, 13.0, 600.0, 60.0);
    assert_eq!(run.transitions, []);
    // Fourteen days on the monotonic clock: the alarm, whatever the wall clock says.
    run.wall_step = -30.0 * 86_400.0;
    run.hold(1.0, 13.0, 14.1 * 86_400.0, 3600.0);
    assert_eq!(run.transitions, [(Rule::NotFullyCharged, true)]);
}

#[test]
fn at_start_the_age_of_the_last_full_charge_is_taken_within_reason() {
    let keys = "[battery.anomaly]\nfull_charge_within = \"14d\"";
    let stored = |reference_unix| StoredBattery {
        samples: 1,
        status: SocStatus::Estimated,
        reference_unix,
        last_sample_unix: 1.7e9,
        ..StoredBattery::default()
    };
    // Saved 20 days before now: the alarm at once.
    let mut run = Run::new(keys, stored(1.7e9 - 20.0 * 86_400.0));
    run.sample(1.0, 13.0);
    assert_eq!(run.transitions, [(Rule::NotFullyCharged, true)]);
    // Saved under a clock that was ahead, or one that was not set: counted from now.
    for reference in [1.7e9 + 30.0 * 86_400.0, 86_400.0] {
        let mut run = Run::new(keys, stored(reference));
        run.hold(1.0, 13.0, 86_400.0, 600.0);
        assert_eq!(run.transitions, [], "saved at {reference}");
    }
}

#[test]
fn discharging_and_charging_follow_the_current_without_a_state_of_charge() {
    let mut run = Run::new("", StoredBattery::default());
    run.hold(20.0, 12.9, 60.0, 10.0);
    let b = run.monitor.snapshot();
    assert!(b.state_of_charge.is_none());
    assert!(b.discharging && !b.charging);
    // The load stops: the averaged current decays, and below the threshold it is neither.
    run.hold(0.0, 13.1, 3600.0, 10.0);
    let b = run.monitor.snapshot();
    assert!(
        !b.discharging && !b.charging,
        "{}",
        b.average_current_amperes
    );
    run.hold(-15.0, 13.6, 600.0, 10.0);
    assert!(run.monitor.snapshot().charging);
}
