//! Metric families the `prometheus` crate does not have: counters that are set from a total
//! kept elsewhere, and an info family whose label names follow its series.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::text::{Family, Kind};

/// A counter whose value is set from a total kept elsewhere (the state file) instead of being
/// added to: setting the total itself keeps it bit for bit equal to what a restart restores,
/// where adding the difference could land one ulp above it and read as a reset.
///
/// It only ever rises: a lower value is ignored.
#[derive(Debug, Default)]
pub struct SetCounter(AtomicU64);

impl SetCounter {
    /// Raise the counter to `value`, if that is higher.
    pub fn raise_to(&self, value: f64) {
        // For finite non-negative floats the order of the bit patterns is the numeric order.
        // (Zero needs nothing: the counter starts there; and -0.0 would compare high.)
        if value.is_finite() && value > 0.0 {
            self.0.fetch_max(value.to_bits(), Ordering::Relaxed);
        }
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

pub(super) fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

pub(super) fn family(desc: &Desc, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// A family of [`SetCounter`]s, one per combination of label values.
#[derive(Clone)]
pub struct SetCounterVec(Arc<SetCounterFamily>);

/// The shared part of a [`SetCounterVec`].
pub struct SetCounterFamily {
    desc: Desc,
    children: Mutex<BTreeMap<Vec<String>, Arc<SetCounter>>>,
}

impl SetCounterVec {
    /// A family `name` with the given label names.
    pub fn new(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<SetCounterVec> {
        let desc = Desc::new(
            name.to_string(),
            help.to_string(),
            labels.iter().map(|l| l.to_string()).collect(),
            HashMap::new(),
        )?;
        Ok(SetCounterVec(Arc::new(SetCounterFamily {
            desc,
            children: Mutex::new(BTreeMap::new()),
        })))
    }

    /// The counter of these label values, at `floor` at least: created there if new (in one
    /// step, so no scrape ever sees it lower), raised to it if not.
    pub fn with_label_values_at(&self, values: &[&str], floor: f64) -> Arc<SetCounter> {
        let key = values.iter().map(|v| v.to_string()).collect();
        let mut children = self
            .0
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let counter = children.entry(key).or_default();
        counter.raise_to(floor);
        Arc::clone(counter)
    }

    /// The value of the counter of these label values, if it exists.
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.0
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .map(|c| c.get())
    }

    /// Drop the series of these label values.
    pub fn remove(&self, values: &[&str]) {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.0
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }
}

impl SetCounterVec {
    /// Write the family in the text format (nothing if it has no series).
    pub fn render(&self, out: &mut Vec<u8>) {
        let children = self
            .0
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let desc = &self.0.desc;
        let mut family = Family::new(out, (&desc.fq_name, &desc.help), Kind::Counter);
        for (values, counter) in children.iter() {
            let labels = desc.variable_labels.iter().map(String::as_str);
            family.sample_pairs(labels.zip(values.iter().map(String::as_str)), counter.get());
        }
    }
}

impl Collector for SetCounterVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let children = self
            .0
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let metrics = children
            .iter()
            .map(|(values, counter)| {
                let mut metric = Metric::default();
                metric.set_label(
                    self.0
                        .desc
                        .variable_labels
                        .iter()
                        .zip(values)
                        .map(|(name, value)| label_pair(name, value))
                        .collect(),
                );
                let mut value = Counter::default();
                value.set_value(counter.get());
                metric.set_counter(value);
                metric
            })
            .collect();
        vec![family(&self.0.desc, MetricType::COUNTER, metrics)]
    }
}

/// An info family (value 1): per key, a set of labels. Series with fewer label names than
/// others get the missing ones empty, so every series of the family has the same names, and a
/// reload may bring new ones.
#[derive(Clone)]
pub struct InfoFamily(Arc<InfoShared>);

/// The shared part of an [`InfoFamily`].
pub struct InfoShared {
    desc: Desc,
    series: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl InfoFamily {
    /// A family `name`.
    pub fn new(name: &str, help: &str) -> prometheus::Result<InfoFamily> {
        let desc = Desc::new(
            name.to_string(),
            help.to_string(),
            Vec::new(),
            HashMap::new(),
        )?;
        Ok(InfoFamily(Arc::new(InfoShared {
            desc,
            series: Mutex::new(BTreeMap::new()),
        })))
    }

    /// Set the labels of the series of `key`.
    pub fn set(&self, key: &str, labels: BTreeMap<String, String>) {
        self.0
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_string(), labels);
    }

    /// Drop the series of `key`.
    pub fn remove(&self, key: &str) {
        self.0
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

impl InfoFamily {
    /// Write the family in the text format (nothing if it has no series).
    pub fn render(&self, out: &mut Vec<u8>) {
        let series = self.0.series.lock().unwrap_or_else(PoisonError::into_inner);
        let names: BTreeSet<&String> = series.values().flat_map(|l| l.keys()).collect();
        let desc = &self.0.desc;
        let mut family = Family::new(out, (&desc.fq_name, &desc.help), Kind::Gauge);
        for labels in series.values() {
            let pairs = names
                .iter()
                .map(|n| (n.as_str(), labels.get(*n).map_or("", String::as_str)));
            family.sample_pairs(pairs, 1.0);
        }
    }
}

impl Collector for InfoFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = self.0.series.lock().unwrap_or_else(PoisonError::into_inner);
        let names: BTreeSet<&String> = series.values().flat_map(|l| l.keys()).collect();
        let metrics = series
            .values()
            .map(|labels| {
                let mut metric = Metric::default();
                metric.set_label(
                    names
                        .iter()
                        .map(|n| label_pair(n, labels.get(*n).map_or("", String::as_str)))
                        .collect(),
                );
                let mut value = Gauge::default();
                value.set_value(1.0);
                metric.set_gauge(value);
                metric
            })
            .collect();
        vec![family(&self.0.desc, MetricType::GAUGE, metrics)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    fn exposition(r: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_set_counter_never_goes_down() {
        let c = SetCounter::default();
        c.raise_to(5.5);
        c.raise_to(2.0);
        c.raise_to(f64::NAN);
        c.raise_to(-0.0);
        c.raise_to(-7.0);
        assert_eq!(c.get(), 5.5);
        c.raise_to(5.500_000_000_000_001);
        assert_eq!(c.get(), 5.500_000_000_000_001);
    }

    #[test]
    fn set_counters_are_exposed_as_counters() {
        let r = Registry::new();
        let family = SetCounterVec::new("test_joules_total", "Help.", &["sensor"]).unwrap();
        r.register(Box::new(family.clone())).unwrap();
        family.with_label_values_at(&["b"], 2.0);
        family.with_label_values_at(&["a"], 0.1 + 0.2);
        family.with_label_values_at(&["c"], 9.0);
        family.remove(&["c"]);
        assert_eq!(
            exposition(&r),
            "# HELP test_joules_total Help.\n# TYPE test_joules_total counter\n\
             test_joules_total{sensor=\"a\"} 0.30000000000000004\n\
             test_joules_total{sensor=\"b\"} 2\n"
        );
        // Asked for again with a lower floor, a counter keeps its value.
        assert_eq!(family.with_label_values_at(&["b"], 1.0).get(), 2.0);
    }

    #[test]
    fn info_series_share_their_label_names() {
        let r = Registry::new();
        let info = InfoFamily::new("test_info", "Help.").unwrap();
        r.register(Box::new(info.clone())).unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        info.set("a", labels(&[("sensor", "a"), ("room", "garage")]));
        info.set("b", labels(&[("sensor", "b")]));
        info.set("c", labels(&[("sensor", "c")]));
        info.remove("c");
        assert_eq!(
            exposition(&r),
            "# HELP test_info Help.\n# TYPE test_info gauge\n\
             test_info{room=\"\",sensor=\"b\"} 1\n\
             test_info{room=\"garage\",sensor=\"a\"} 1\n"
        );
    }
}
