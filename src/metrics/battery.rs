//! The battery families, read from the board at each scrape: the counters as of the last
//! save, and the gauges from the battery monitors' snapshots — a value that is not known (the
//! state of charge before the first full charge, say) has no series, rather than a made-up
//! number.

use prometheus::proto::{MetricFamily, MetricType};

use super::families::{family, label_pair};
use super::sensor::metric;
use super::text::{Family, Kind};
use crate::battery::BatterySnapshot;
use crate::board::{BatteryInfo, SensorStatus, Snapshot};

/// `powermon_battery_charge_coulombs_total`: name and help.
const CHARGE: (&str, &str) = (
    "powermon_battery_charge_coulombs_total",
    "Charge through the battery's shunt by direction (in: charging, out: discharging), as measured, as of the last save of the state file.",
);

/// `powermon_battery_full_charges_total`: name and help.
const FULL_CHARGES: (&str, &str) = (
    "powermon_battery_full_charges_total",
    "Full charges detected (charged voltage and tail current held for the detection time), as of the last save of the state file.",
);

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

/// The names and help of every battery family.
pub(super) const NAMES: [(&str, &str); 10] = [
    CHARGE,
    FULL_CHARGES,
    GAUGES[0],
    GAUGES[1],
    GAUGES[2],
    GAUGES[3],
    GAUGES[4],
    GAUGES[5],
    GAUGES[6],
    GAUGES[7],
];

/// The sensors that measure a battery, with the battery's snapshot.
fn batteries<'a>(
    sensors: &'a [(&SensorStatus, Snapshot)],
) -> impl Iterator<
    Item = (
        &'a SensorStatus,
        &'a BatteryInfo,
        Option<&'a BatterySnapshot>,
    ),
> {
    sensors.iter().filter_map(|(status, snapshot)| {
        Some((*status, status.battery.as_ref()?, snapshot.battery.as_ref()))
    })
}

/// Write the families in the text format (those with no series not at all).
pub(super) fn render(out: &mut Vec<u8>, sensors: &[(&SensorStatus, Snapshot)]) {
    let mut f = Family::new(out, CHARGE, Kind::Counter);
    for (status, info, _) in batteries(sensors) {
        let battery = ("battery", info.name.as_str());
        let exported = &status.exported;
        f.sample_pairs(
            [battery, ("direction", "in")],
            exported.charge_in_coulombs.get(),
        );
        f.sample_pairs(
            [battery, ("direction", "out")],
            exported.charge_out_coulombs.get(),
        );
    }
    let mut f = Family::new(out, FULL_CHARGES, Kind::Counter);
    for (status, info, _) in batteries(sensors) {
        f.sample_pairs(
            [("battery", info.name.as_str())],
            status.exported.full_charges.get(),
        );
    }
    for (i, family) in GAUGES.iter().enumerate() {
        let mut f = Family::new(out, *family, Kind::Gauge);
        for (status, info, snapshot) in batteries(sensors) {
            let Some(v) = snapshot.and_then(|b| value(i, b)) else {
                continue;
            };
            let pairs = [
                ("battery", info.name.as_str()),
                ("chemistry", info.chemistry),
                ("sensor", status.name.as_str()),
            ];
            if i == GAUGES.len() - 1 {
                f.sample_pairs(pairs, v);
            } else {
                f.sample_pairs(pairs.into_iter().take(1), v);
            }
        }
    }
}

/// The same families as protobuf messages, for the crate's encoder (the reference).
pub(super) fn collect(sensors: &[(&SensorStatus, Snapshot)]) -> Vec<MetricFamily> {
    let mut charge = Vec::new();
    let mut fulls = Vec::new();
    for (status, info, _) in batteries(sensors) {
        let exported = &status.exported;
        for (direction, value) in [
            ("in", exported.charge_in_coulombs.get()),
            ("out", exported.charge_out_coulombs.get()),
        ] {
            let labels = vec![
                label_pair("battery", &info.name),
                label_pair("direction", direction),
            ];
            charge.push(metric(labels, Kind::Counter, value));
        }
        let labels = vec![label_pair("battery", &info.name)];
        fulls.push(metric(labels, Kind::Counter, exported.full_charges.get()));
    }
    let mut families = vec![
        family(CHARGE.0, CHARGE.1, MetricType::COUNTER, charge),
        family(FULL_CHARGES.0, FULL_CHARGES.1, MetricType::COUNTER, fulls),
    ];
    for (i, (name, help)) in GAUGES.iter().enumerate() {
        let metrics = batteries(sensors)
            .filter_map(|(status, info, snapshot)| {
                let v = value(i, snapshot?)?;
                let mut labels = vec![label_pair("battery", &info.name)];
                if i == GAUGES.len() - 1 {
                    labels.push(label_pair("sensor", &status.name));
                    labels.push(label_pair("chemistry", info.chemistry));
                }
                Some(metric(labels, Kind::Gauge, v))
            })
            .collect();
        families.push(family(name, help, MetricType::GAUGE, metrics));
    }
    families
}
