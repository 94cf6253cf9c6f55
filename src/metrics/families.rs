//! Building protobuf families for the crate's encoder, which [`super::Metrics::encode_reference`]
//! uses as the reference for the daemon's own text writer.

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

/// A label pair.
pub(super) fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

/// A family of `metrics`.
pub(super) fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    metrics: Vec<Metric>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}
