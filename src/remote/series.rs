//! The series a remote write pushes: every series `/metrics` exports (the registry's own
//! gathering, which the exposition is tested against), as remote write time series with the
//! queue's external labels, at one timestamp.

use prometheus::proto::{MetricFamily, MetricType};

use super::proto::{Label, Sample, TimeSeries};

/// The time series of `families` at `timestamp_ms`, each with `external` labels added
/// (a series' own label of the same name wins, as Prometheus does), labels sorted by name.
pub(crate) fn time_series(
    families: &[MetricFamily],
    external: &[(String, String)],
    timestamp_ms: i64,
) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for family in families {
        for metric in family.get_metric() {
            let value = match family.get_field_type() {
                MetricType::COUNTER => metric.get_counter().get_value(),
                MetricType::GAUGE => metric.get_gauge().get_value(),
                // The daemon exports none (untyped, a histogram or a summary would need
                // their series spelled out: _bucket, _sum, _count).
                _ => continue,
            };
            let mut labels: Vec<Label> = Vec::with_capacity(metric.get_label().len() + 3);
            labels.push(Label {
                name: "__name__".into(),
                value: family.name().to_string(),
            });
            labels.extend(metric.get_label().iter().map(|l| Label {
                name: l.name().to_string(),
                value: l.value().to_string(),
            }));
            for (name, value) in external {
                if !labels.iter().any(|l| &l.name == name) {
                    labels.push(Label {
                        name: name.clone(),
                        value: value.clone(),
                    });
                }
            }
            // An empty label value is no label, as a scrape reads it.
            labels.retain(|l| !l.value.is_empty());
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(TimeSeries {
                labels,
                samples: vec![Sample {
                    value,
                    timestamp: timestamp_ms,
                }],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::Board;
    use crate::metrics::Metrics;

    #[test]
    fn every_exported_series_with_sorted_labels_and_the_external_ones() {
        let metrics = Metrics::new("1.2.3", "abc", Board::new()).unwrap();
        let external = vec![
            ("instance".to_string(), "pi".to_string()),
            ("job".to_string(), "power-monitord".to_string()),
        ];
        let series = time_series(&metrics.gather(), &external, 1_700_000_000_000);
        let build = series
            .iter()
            .find(|s| s.labels.iter().any(|l| l.value == "powermon_build_info"))
            .expect("powermon_build_info");
        let names: Vec<&str> = build.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["__name__", "instance", "job", "revision", "version"]
        );
        assert_eq!(build.samples[0].value, 1.0);
        assert_eq!(build.samples[0].timestamp, 1_700_000_000_000);
        // The same series the exposition has (process_* included), one each.
        let text = String::from_utf8(metrics.encode()).unwrap();
        let exposed = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        assert_eq!(series.len(), exposed);
    }
}
