//! Open-circuit voltage against state of charge, per cell, for the chemistries the monitor
//! knows: what a rested battery's voltage says about its charge, and what the simulator's
//! battery shows at its terminals.
//!
//! LiFePO4 is nearly flat between 20 % and 90 % (about 3.26 to 3.35 V per cell): a voltage
//! there says little, which is why the monitor counts coulombs. Lead-acid falls about evenly
//! from 2.12 V (full) to 1.95 V (empty) per cell at rest.

use serde::Deserialize;

/// The cell chemistry: it sets the defaults and the voltage curve of a rested battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Chemistry {
    /// Lithium iron phosphate, 3.2 V per cell.
    #[default]
    Lifepo4,
    /// Flooded, gel or AGM lead-acid, 2 V per cell.
    LeadAcid,
}

impl Chemistry {
    /// The name in the configuration.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Chemistry::Lifepo4 => "lifepo4",
            Chemistry::LeadAcid => "lead_acid",
        }
    }
}

/// (state of charge, volts per cell), rising. LiFePO4 at rest, with the steep ends of a cell
/// near empty and (while charging) near full.
const LIFEPO4: [(f64, f64); 14] = [
    (0.0, 2.50),
    (0.05, 3.00),
    (0.10, 3.20),
    (0.20, 3.25),
    (0.30, 3.28),
    (0.40, 3.30),
    (0.50, 3.305),
    (0.60, 3.31),
    (0.70, 3.32),
    (0.80, 3.335),
    (0.90, 3.35),
    (0.95, 3.38),
    (0.99, 3.45),
    (1.0, 3.55),
];

/// Lead-acid (flooded or AGM) at rest.
const LEAD_ACID: [(f64, f64); 6] = [
    (0.0, 1.95),
    (0.2, 1.98),
    (0.4, 2.02),
    (0.6, 2.05),
    (0.8, 2.09),
    (1.0, 2.12),
];

/// Cells in series for a nominal voltage: 3.2 V per LiFePO4 cell, 2 V per lead-acid cell.
pub(crate) fn cells(chemistry: Chemistry, nominal_volts: f64) -> f64 {
    match chemistry {
        Chemistry::Lifepo4 => (nominal_volts / 3.2).round(),
        Chemistry::LeadAcid => (nominal_volts / 2.0).round(),
    }
}

fn table(chemistry: Chemistry) -> &'static [(f64, f64)] {
    match chemistry {
        Chemistry::Lifepo4 => &LIFEPO4,
        Chemistry::LeadAcid => &LEAD_ACID,
    }
}

/// Volts per cell at `soc` (clamped to 0..=1), interpolated linearly.
pub(crate) fn cell_volts(chemistry: Chemistry, soc: f64) -> f64 {
    let t = table(chemistry);
    let soc = soc.clamp(0.0, 1.0);
    for pair in t.windows(2) {
        let ((s0, v0), (s1, v1)) = (pair[0], pair[1]);
        if soc <= s1 {
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0);
        }
    }
    t[t.len() - 1].1
}

/// The state of charge a rested cell at `volts` has, clamped to the table.
pub(crate) fn soc_at(chemistry: Chemistry, volts: f64) -> f64 {
    let t = table(chemistry);
    if volts <= t[0].1 {
        return 0.0;
    }
    for pair in t.windows(2) {
        let ((s0, v0), (s1, v1)) = (pair[0], pair[1]);
        if volts <= v1 {
            return s0 + (s1 - s0) * (volts - v0) / (v1 - v0);
        }
    }
    1.0
}

/// How far off an estimate from a rested cell's `volts` can be: the span of charge over which
/// the voltage moves by ±`tolerance` volts per cell (measurement, temperature and a rest that
/// was not quite long enough), as a fraction of capacity.
pub(crate) fn uncertainty_at(chemistry: Chemistry, volts: f64, tolerance: f64) -> f64 {
    let low = soc_at(chemistry, volts - tolerance);
    let high = soc_at(chemistry, volts + tolerance);
    (high - low) / 2.0
}

/// Peukert's weight of a discharge at `amps` from a battery rated at `rated_amps`:
/// `(amps / rated_amps)^(exponent - 1)`, how much more charge each coulomb drawn costs, which
/// the monitor and the simulated battery both count. Computed as `exp((exponent - 1) · ln
/// ratio)`: as exact here (the power is at most 0.5) and a third of the time of `pow`, on the
/// path of every sample.
pub(crate) fn peukert_weight(amps: f64, rated_amps: f64, exponent: f64) -> f64 {
    libm::exp((exponent - 1.0) * libm::log(amps / rated_amps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_round_trip_and_say_how_flat_they_are() {
        for chemistry in [Chemistry::Lifepo4, Chemistry::LeadAcid] {
            for i in 0..=100 {
                let soc = f64::from(i) / 100.0;
                let back = soc_at(chemistry, cell_volts(chemistry, soc));
                assert!((back - soc).abs() < 1e-9, "{chemistry:?} {soc} -> {back}");
            }
        }
        assert_eq!(cells(Chemistry::Lifepo4, 12.0), 4.0);
        assert_eq!(cells(Chemistry::Lifepo4, 48.0), 15.0);
        assert_eq!(cells(Chemistry::LeadAcid, 24.0), 12.0);
        // ±10 mV per cell at half charge: ±14 % on LiFePO4's plateau, ±7 % on lead-acid.
        let flat = uncertainty_at(
            Chemistry::Lifepo4,
            cell_volts(Chemistry::Lifepo4, 0.5),
            0.01,
        );
        let steep = uncertainty_at(
            Chemistry::LeadAcid,
            cell_volts(Chemistry::LeadAcid, 0.5),
            0.01,
        );
        assert!(
            (flat - 0.1375).abs() < 1e-9 && (steep - 0.0667).abs() < 1e-4,
            "{flat} {steep}"
        );
    }

    #[test]
    fn peukert_weight_is_the_power() {
        for exponent in [1.0, 1.05, 1.25, 1.5] {
            for ratio in [0.001, 0.1, 0.5, 1.0, 2.0, 30.0] {
                let weight = super::peukert_weight(ratio * 20.0, 20.0, exponent);
                let power = ratio.powf(exponent - 1.0);
                assert!((weight / power - 1.0).abs() < 1e-14, "{ratio}^{exponent}");
            }
        }
    }
}
