//! Prometheus remote write: the daemon pushes its series to a central store (Prometheus's
//! remote-write receiver, VictoriaMetrics, Mimir, Thanos Receive, Grafana Cloud), for Pis that
//! nobody can scrape.
//!
//! # Layout
//! - [`proto`] — the `WriteRequest` on the wire: protobuf, Snappy, headers;
//! - [`series`] — the series `/metrics` exports, as time series with external labels.

pub(crate) mod proto;
pub(crate) mod series;
