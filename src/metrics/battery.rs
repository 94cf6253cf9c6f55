//! The battery gauges, read from the battery monitors' snapshots at each scrape: a value that
//! is not known (the state of charge before the first full charge, say) has no series, rather
//! than a made-up number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, Metric, MetricFamily, MetricType};

use super::families::{family, label_pair};
use super::text::{Family, Kind};
use crate::battery::BatterySnapshot;
use crate::status::SensorStatus;

/// The gauges: name, help.
const GAUGES: [(&str, &str); 8] = [
    ("powermon_battery_state_of_charge_ratio", "State of charge of the battery (0 to 1), by coulomb counting; no series while it is not known."),
    ("powermon_battery_state_of_charge_uncertainty_ratio", "How far off the state of charge may be, as a fraction of capacity: 0 when synchronised to a full charge; no series when not known."),
    ("powermon_battery_synchronized", "1 once the state of charge is counted from a full charge (and the battery has been watched since), else 0."),
    ("powermon_battery_time_to_go_seconds", "Time until the discharge floor at the averaged current; +Inf while the battery is not discharging; no series while the state of charge is not known."),
    ("powermon_battery_consumed_coulombs", "Charge below full (Peukert- and efficiency-weighted), in coulombs; no series while the state of charge is not known."),
    ("powermon_battery_capacity_coulombs", "The battery's rated capacity, in coulombs (3600 per Ah)."),
    ("powermon_battery_last_full_charge_timestamp_seconds", "Unix time of the last full charge; no series before the first."),
    ("powermon_battery_info", "A metric with a constant value of 1 per battery, labelled with the sensor that measures it and its chemistry."),
];

/// The battery gauges of the sensors handed to it.
#[derive(Clone)]
pub struct BatteryGauges(Arc<Shared>);

struct Shared {
    descs: Vec<Desc>,
    statuses: Mutex<Vec<Arc<SensorStatus>>>,
}

impl BatteryGauges {
    /// The family, with no battery yet.
    pub fn new() -> prometheus::Result<BatteryGauges> {
        let descs = GAUGES
            .iter()
            .map(|(name, help)| {
                let labels = if name.ends_with("_info") {
                    vec!["battery".into(), "sensor".into(), "chemistry".into()]
                } else {
                    vec!["battery".into()]
                };
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new())
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(BatteryGauges(Arc::new(Shared {
            descs,
            statuses: Mutex::new(Vec::new()),
        })))
    }

    /// Report on the batteries of these sensors from now on.
    pub fn set_statuses(&self, statuses: Vec<Arc<SensorStatus>>) {
        *self
            .0
            .statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = statuses
            .into_iter()
            .filter(|s| s.battery.is_some())
            .collect();
    }
}

/// The value of gauge `i` of a battery, if it has one.
fn value(i: usize, b: &BatterySnapshot) -> Option<f64> {
    match i {
        0 => b.state_of_charge,
        1 => b.uncertainty(),
        2 => Some(if b.synchronized() { 1.0 } else { 0.0 }),
        3 => b.time_to_go_seconds,
        4 => b.state_of_charge.map(|_| b.stored.below_full_coulombs),
        5 => Some(b.capacity_coulombs),
        6 => (b.stored.full_charges > 0).then_some(b.stored.reference_unix),
        _ => Some(1.0),
    }
}

impl BatteryGauges {
    /// Write the families in the text format (those with no series not at all).
    pub fn render(&self, out: &mut Vec<u8>) {
        let batteries = self.batteries();
        for (i, family) in GAUGES.iter().enumerate() {
            let mut f = Family::new(out, *family, Kind::Gauge);
            for (status, snapshot) in &batteries {
                let (Some(info), Some(v)) = (status.battery.as_ref(), value(i, snapshot)) else {
                    continue;
                };
                let pairs = [
                    ("battery", info.name.as_str()),
                    ("sensor", status.name.as_str()),
                    ("chemistry", info.chemistry),
                ];
                let n = if i == GAUGES.len() - 1 { 3 } else { 1 };
                f.sample_pairs(pairs.into_iter().take(n), v);
            }
        }
    }

    /// The sensors with a battery, and their batteries as they are now.
    fn batteries(&self) -> Vec<(Arc<SensorStatus>, BatterySnapshot)> {
        let statuses = self
            .0
            .statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        statuses
            .iter()
            .filter_map(|s| Some((Arc::clone(s), s.snapshot().battery?)))
            .collect()
    }
}

impl Collector for BatteryGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let batteries = self.batteries();
        self.0
            .descs
            .iter()
            .enumerate()
            .map(|(i, desc)| {
                let metrics = batteries
                    .iter()
                    .filter_map(|(status, snapshot)| {
                        let info = status.battery.as_ref()?;
                        let v = value(i, snapshot)?;
                        let mut labels = vec![label_pair("battery", &info.name)];
                        if i == GAUGES.len() - 1 {
                            labels.push(label_pair("sensor", &status.name));
                            labels.push(label_pair("chemistry", info.chemistry));
                        }
                        let mut metric = Metric::default();
                        metric.set_label(labels);
                        let mut gauge = Gauge::default();
                        gauge.set_value(v);
                        metric.set_gauge(gauge);
                        Some(metric)
                    })
                    .collect();
                family(desc, MetricType::GAUGE, metrics)
            })
            .collect()
    }
}
