//! Load models: how many watts a simulated appliance draws at a moment.
//!
//! Appliance profiles are phase machines driven by a seeded RNG: the same seed gives the same
//! day. Time only moves forward (it comes from a monotonic clock), so each model keeps the
//! phase it is in and the moment that phase ends.

use std::f64::consts::TAU;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::config::LoadModel;

/// A running load model.
pub(crate) struct Load {
    model: Model,
    rng: StdRng,
}

enum Model {
    Constant(f64),
    Uniform(f64, f64),
    AirConditioner(AirConditioner),
    WashingMachine(WashingMachine),
    Fridge(Fridge),
    RaspberryPi(RaspberryPi),
}

impl Load {
    /// The model at its start; `seed` gives its day.
    pub(crate) fn new(model: &LoadModel, seed: u64) -> Load {
        let model = match *model {
            LoadModel::Constant { watts } => Model::Constant(watts),
            LoadModel::Uniform {
                min_watts,
                max_watts,
            } => Model::Uniform(min_watts, max_watts),
            LoadModel::AirConditioner { watts } => Model::AirConditioner(AirConditioner::new(
                watts.unwrap_or(LoadModel::AIR_CONDITIONER_WATTS),
            )),
            LoadModel::WashingMachine { watts } => Model::WashingMachine(WashingMachine::new(
                watts.unwrap_or(LoadModel::WASHING_MACHINE_WATTS),
            )),
            LoadModel::Fridge { watts } => {
                Model::Fridge(Fridge::new(watts.unwrap_or(LoadModel::FRIDGE_WATTS)))
            }
            LoadModel::RaspberryPi { watts } => Model::RaspberryPi(RaspberryPi::new(
                watts.unwrap_or(LoadModel::RASPBERRY_PI_WATTS),
            )),
        };
        Load {
            model,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Watts drawn at `t` seconds after start. `t` must not go backwards.
    pub(crate) fn watts(&mut self, t: f64) -> f64 {
        let rng = &mut self.rng;
        match &mut self.model {
            Model::Constant(w) => *w,
            Model::Uniform(lo, hi) => {
                if lo == hi {
                    *lo
                } else {
                    rng.random_range(*lo..=*hi)
                }
            }
            Model::AirConditioner(m) => m.watts(t, rng),
            Model::WashingMachine(m) => m.watts(t, rng),
            Model::Fridge(m) => m.watts(t, rng),
            Model::RaspberryPi(m) => m.watts(t, rng),
        }
    }
}

/// A motor start: `surge` × running power, decaying with time constant `tau` seconds.
fn inrush(running: f64, surge: f64, since_start: f64, tau: f64) -> f64 {
    running * (1.0 + (surge - 1.0) * libm::exp(-since_start / tau))
}

/// Split-unit air conditioner on a DC inverter: the compressor cycles on and off around the
/// thermostat; every 15–30 minutes a hot spell keeps it running flat out at ~1.2 × rating.
struct AirConditioner {
    rated: f64,
    compressor_on: bool,
    phase_start: f64,
    phase_end: f64,
    cycle_scale: f64,
    hot_start: f64,
    hot_end: f64,
}

impl AirConditioner {
    fn new(rated: f64) -> Self {
        AirConditioner {
            rated,
            compressor_on: false,
            phase_start: 0.0,
            phase_end: 0.0,
            cycle_scale: 1.0,
            hot_start: f64::NAN,
            hot_end: f64::NAN,
        }
    }

    fn watts(&mut self, t: f64, rng: &mut StdRng) -> f64 {
        if self.hot_start.is_nan() {
            // The first hot spell comes soon, so a short run shows the over-power rule at work.
            self.hot_start = rng.random_range(120.0..240.0);
            self.hot_end = self.hot_start + rng.random_range(90.0..180.0);
        }
        if t >= self.hot_end {
            self.hot_start = t + rng.random_range(900.0..1800.0);
            self.hot_end = self.hot_start + rng.random_range(90.0..180.0);
        }
        let hot = t >= self.hot_start;
        while t >= self.phase_end {
            self.compressor_on = !self.compressor_on;
            self.phase_start = self.phase_end;
            self.phase_end += if self.compressor_on {
                rng.random_range(240.0..600.0)
            } else {
                rng.random_range(90.0..240.0)
            };
            self.cycle_scale = rng.random_range(0.95..1.05);
        }
        let ripple = 1.0 + 0.02 * libm::sin(TAU * t / 20.0);
        if hot {
            // Running flat out: no cycling, no inrush.
            1.2 * self.rated * ripple
        } else if self.compressor_on {
            inrush(
                self.rated * self.cycle_scale,
                2.5,
                t - self.phase_start,
                0.5,
            ) * ripple
        } else {
            // Indoor fan only.
            55.0 * self.rated / LoadModel::AIR_CONDITIONER_WATTS + rng.random_range(-5.0..5.0)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum WashPhase {
    Idle,
    Fill,
    Heat,
    Wash,
    Rinse,
    Spin,
}

/// Washing machine: fill, heat the water, tumble, rinse, spin, then stand by.
struct WashingMachine {
    heater: f64,
    phase: WashPhase,
    phase_start: f64,
    phase_end: f64,
}

impl WashingMachine {
    fn new(heater: f64) -> Self {
        WashingMachine {
            heater,
            phase: WashPhase::Idle,
            phase_start: 0.0,
            phase_end: 0.0,
        }
    }

    fn watts(&mut self, t: f64, rng: &mut StdRng) -> f64 {
        while t >= self.phase_end {
            let (next, seconds) = match self.phase {
                WashPhase::Idle if self.phase_end == 0.0 => {
                    (WashPhase::Idle, rng.random_range(30.0..90.0))
                }
                WashPhase::Idle => (WashPhase::Fill, rng.random_range(60.0..120.0)),
                WashPhase::Fill => (WashPhase::Heat, rng.random_range(300.0..600.0)),
                WashPhase::Heat => (WashPhase::Wash, rng.random_range(600.0..900.0)),
                WashPhase::Wash => (WashPhase::Rinse, 300.0),
                WashPhase::Rinse => (WashPhase::Spin, rng.random_range(180.0..300.0)),
                WashPhase::Spin => (WashPhase::Idle, rng.random_range(600.0..2400.0)),
            };
            self.phase = next;
            self.phase_start = self.phase_end;
            self.phase_end += seconds;
        }
        let scale = self.heater / LoadModel::WASHING_MACHINE_WATTS;
        let since = t - self.phase_start;
        // The drum turns 12 s one way, rests 4 s, turns the other way.
        let tumbling = since % 16.0 < 12.0;
        match self.phase {
            WashPhase::Idle => 2.0 * scale,
            WashPhase::Fill => 15.0 * scale,
            WashPhase::Heat => {
                self.heater * rng.random_range(0.97..1.03)
                    + if tumbling { 40.0 * scale } else { 0.0 }
            }
            WashPhase::Wash => {
                if tumbling {
                    rng.random_range(150.0..250.0) * scale
                } else {
                    15.0 * scale
                }
            }
            WashPhase::Rinse => {
                if tumbling {
                    rng.random_range(100.0..150.0) * scale
                } else {
                    15.0 * scale
                }
            }
            // The motor ramps up to full spin over a minute.
            WashPhase::Spin => (100.0 + 350.0 * (since / 60.0).min(1.0)) * scale,
        }
    }
}

/// Fridge: compressor duty cycle with a start surge; the light comes on with the door.
struct Fridge {
    rated: f64,
    compressor_on: bool,
    phase_start: f64,
    phase_end: f64,
    door_until: f64,
    next_door: f64,
}

impl Fridge {
    fn new(rated: f64) -> Self {
        Fridge {
            rated,
            compressor_on: false,
            phase_start: 0.0,
            phase_end: 0.0,
            door_until: 0.0,
            next_door: 0.0,
        }
    }

    fn watts(&mut self, t: f64, rng: &mut StdRng) -> f64 {
        while t >= self.phase_end {
            self.compressor_on = !self.compressor_on;
            self.phase_start = self.phase_end;
            self.phase_end += if self.compressor_on {
                rng.random_range(360.0..720.0)
            } else {
                rng.random_range(720.0..1200.0)
            };
        }
        if t >= self.next_door {
            self.door_until = t + rng.random_range(10.0..40.0);
            self.next_door = t + rng.random_range(600.0..3600.0);
        }
        let light = if t < self.door_until { 10.0 } else { 0.0 };
        let base = if self.compressor_on {
            inrush(self.rated, 3.0, t - self.phase_start, 0.3) * rng.random_range(0.97..1.03)
        } else {
            4.0
        };
        base + light
    }
}

/// A Raspberry Pi: idle with bursts of work.
struct RaspberryPi {
    idle: f64,
    busy_until: f64,
    next_burst: f64,
    burst: f64,
}

impl RaspberryPi {
    fn new(idle: f64) -> Self {
        RaspberryPi {
            idle,
            busy_until: 0.0,
            next_burst: 0.0,
            burst: 0.0,
        }
    }

    fn watts(&mut self, t: f64, rng: &mut StdRng) -> f64 {
        if t >= self.next_burst {
            self.busy_until = t + rng.random_range(2.0..20.0);
            self.next_burst = self.busy_until + rng.random_range(10.0..60.0);
            self.burst = rng.random_range(1.5..3.0);
        }
        let factor = if t < self.busy_until { self.burst } else { 1.0 };
        self.idle * factor * rng.random_range(0.98..1.02)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(model: LoadModel, seconds: u32) -> Vec<f64> {
        let mut load = Load::new(&model, 7);
        (0..seconds).map(|t| load.watts(f64::from(t))).collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn constant_and_uniform() {
        assert!(series(LoadModel::Constant { watts: 42.0 }, 10)
            .iter()
            .all(|&w| w == 42.0));
        let v = series(
            LoadModel::Uniform {
                min_watts: 100.0,
                max_watts: 500.0,
            },
            2000,
        );
        assert!(v.iter().all(|&w| (100.0..=500.0).contains(&w)));
        assert!((mean(&v) - 300.0).abs() < 15.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_day() {
        assert_eq!(
            series(LoadModel::Fridge { watts: None }, 3600),
            series(LoadModel::Fridge { watts: None }, 3600)
        );
    }

    #[test]
    fn air_conditioner_cycles_and_has_hot_spells() {
        let v = series(LoadModel::AirConditioner { watts: None }, 4 * 3600);
        let on = v.iter().filter(|&&w| w > 1000.0).count() as f64 / v.len() as f64;
        let off = v.iter().filter(|&&w| w < 100.0).count() as f64 / v.len() as f64;
        assert!((0.5..0.9).contains(&on), "compressor duty {on}");
        assert!(off > 0.1, "fan-only share {off}");
        // Hot spells run above 1600 W for minutes on end.
        let longest_hot = v
            .split(|&w| w < 1650.0)
            .map(<[f64]>::len)
            .max()
            .unwrap_or(0);
        assert!(
            longest_hot >= 60,
            "longest run above 1650 W: {longest_hot} s"
        );
        // The first one comes within the first few minutes.
        assert!(v[..420].iter().any(|&w| w > 1650.0));
    }

    #[test]
    fn washing_machine_goes_through_its_phases() {
        let v = series(LoadModel::WashingMachine { watts: None }, 3 * 3600);
        assert!(v.iter().any(|&w| w < 3.0), "standby");
        assert!(v.iter().any(|&w| w > 650.0), "heater");
        assert!(v.iter().any(|&w| (300.0..460.0).contains(&w)), "spin");
        assert!(v.iter().cloned().fold(0.0, f64::max) < 800.0);
    }

    #[test]
    fn fridge_duty_cycle_and_start_surge() {
        let v = series(LoadModel::Fridge { watts: None }, 6 * 3600);
        let on = v.iter().filter(|&&w| w > 200.0).count() as f64 / v.len() as f64;
        assert!((0.2..0.6).contains(&on), "duty {on}");
        assert!(v.iter().any(|&w| w > 500.0), "start surge");
        assert!((mean(&v) - 240.0 * on).abs() < 40.0);
    }
}
