//! The metrics contract (docs/metrics.md): the families, one module per concern as
//! node_exporter has a collector per concern, and `/metrics` written from them.
//!
//! The families with a series per sensor or battery are views over the board: each scrape
//! reads the snapshots the pipelines publish, so the sampling path updates no metric of its
//! own and a sensor's series come and go with it. The daemon's and MQTT's families are the
//! `prometheus` crate's, as is the process collector. Exposition ([`Metrics::encode`]) writes
//! the board's families itself ([`text`]) and leaves the others to the crate's encoder; the
//! crate's encoder over all of them ([`Metrics::encode_reference`]) is the reference it is
//! tested against, line for line.
//!
//! # Layout
//! - [`sensor`] — the families with a series per sensor, and `powermon_sensor_info`;
//! - [`battery`] — the battery counters and gauges;
//! - [`daemon`] — build, saves of the state file, reloads;
//! - [`mqtt`] — the MQTT publisher's, registered when it first starts;
//! - [`remote`] — the remote write queues', registered when the first starts;
//! - [`text`] — the text exposition format; [`families`] — protobuf families for the reference.

mod battery;
mod daemon;
mod families;
mod mqtt;
mod remote;
mod sensor;
mod text;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};

pub(crate) use self::daemon::DaemonMetrics;
pub(crate) use self::mqtt::MqttMetrics;
pub use self::remote::RemoteMetrics;
use crate::board::{Board, SensorStatus, Snapshot};

/// Content type of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Every metric family of the daemon.
pub struct Metrics {
    /// Every family: the crate's own exposition of it is the reference.
    registry: Registry,
    /// The families [`Metrics::encode`] leaves to the crate's encoder.
    rest: Registry,
    board: Arc<Board>,
    /// The daemon's own families.
    pub(crate) daemon: DaemonMetrics,
    mqtt: OnceLock<MqttMetrics>,
    remote: OnceLock<RemoteMetrics>,
    /// The size of the last exposition, to size the next one's buffer.
    last_len: AtomicUsize,
}

/// The board's families for the crate's registry.
struct BoardFamilies {
    board: Arc<Board>,
    descs: Vec<Desc>,
}

impl Collector for BoardFamilies {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sensors = self.board.sensors();
        let snapshots = snapshots(&sensors);
        let mut families = sensor::collect(&snapshots);
        families.extend(battery::collect(&snapshots));
        families
    }
}

/// Each sensor with a copy of its latest snapshot: one lock per sensor per scrape.
fn snapshots(sensors: &[Arc<SensorStatus>]) -> Vec<(&SensorStatus, Snapshot)> {
    sensors.iter().map(|s| (&**s, s.snapshot())).collect()
}

impl Metrics {
    /// Every family of the sensors on `board`, the daemon's and the process collector's;
    /// `powermon_build_info` says `version` and `revision`.
    pub fn new(version: &str, revision: &str, board: Arc<Board>) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let rest = Registry::new();
        let daemon = DaemonMetrics::new([&registry, &rest], version, revision)?;
        // Descriptions of the board's families: the registry checks them against the others.
        let descs = board_family_names()
            .map(|(name, help)| Desc::new(name.into(), help.into(), Vec::new(), HashMap::new()))
            .collect::<prometheus::Result<_>>()?;
        registry.register(Box::new(BoardFamilies {
            board: Arc::clone(&board),
            descs,
        }))?;
        #[cfg(target_os = "linux")]
        for r in [&registry, &rest] {
            r.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))?;
        }
        Ok(Metrics {
            registry,
            rest,
            board,
            daemon,
            mqtt: OnceLock::new(),
            remote: OnceLock::new(),
            last_len: AtomicUsize::new(16 * 1024),
        })
    }

    /// The sensors the families report.
    pub(crate) fn board(&self) -> &Arc<Board> {
        &self.board
    }

    /// The MQTT metrics, registered the first time MQTT starts.
    pub fn mqtt(&self) -> Result<MqttMetrics, prometheus::Error> {
        if let Some(m) = self.mqtt.get() {
            return Ok(m.clone());
        }
        let made = MqttMetrics::new([&self.registry, &self.rest])?;
        Ok(self.mqtt.get_or_init(|| made).clone())
    }

    /// The remote write metrics, registered the first time a queue starts.
    pub fn remote(&self) -> Result<RemoteMetrics, prometheus::Error> {
        if let Some(m) = self.remote.get() {
            return Ok(m.clone());
        }
        let made = RemoteMetrics::new([&self.registry, &self.rest])?;
        Ok(self.remote.get_or_init(|| made).clone())
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.last_len.load(Ordering::Relaxed) + 1024);
        let sensors = self.board.sensors();
        let snapshots = snapshots(&sensors);
        sensor::render(&mut out, &snapshots);
        battery::render(&mut out, &snapshots);
        out.extend_from_slice(&encode_with_crate(&self.rest));
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// Every family, gathered by the crate (the same series as [`Metrics::encode`]): what a
    /// remote write pushes.
    pub(crate) fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The same exposition written by the `prometheus` crate's own `gather` and encoder: the
    /// reference [`Metrics::encode`] is checked against, and a baseline for the benches.
    pub fn encode_reference(&self) -> Vec<u8> {
        encode_with_crate(&self.registry)
    }
}

/// The names and help of the board's families.
fn board_family_names() -> impl Iterator<Item = (&'static str, &'static str)> {
    sensor::FAMILIES
        .iter()
        .map(|f| (f.name, f.help))
        .chain([sensor::INFO])
        .chain(battery::NAMES)
}

/// The exposition of `registry` by the crate's own encoder.
fn encode_with_crate(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * 1024);
    // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug here.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        log::error!("encoding metrics failed: {e}");
    }
    spell_infinities(out)
}

/// The encoder writes infinities as Rust prints them (`inf`); the exposition format spells
/// them `+Inf` and `-Inf`. A value ends its line (label values escape their newlines), so
/// only a line's last word can be one.
fn spell_infinities(text: Vec<u8>) -> Vec<u8> {
    if !text.windows(4).any(|w| w == b"inf\n") {
        return text;
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    for line in text.split_inclusive(|b| *b == b'\n') {
        if let Some(head) = line.strip_suffix(b" inf\n") {
            out.extend_from_slice(head);
            out.extend_from_slice(b" +Inf\n");
        } else if let Some(head) = line.strip_suffix(b" -inf\n") {
            out.extend_from_slice(head);
            out.extend_from_slice(b" -Inf\n");
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinities_are_spelled_as_the_exposition_format_says() {
        let text = b"a 1\nb{x=\"inf\"} inf\nc -inf\nd NaN\n".to_vec();
        assert_eq!(
            String::from_utf8(spell_infinities(text)).unwrap(),
            "a 1\nb{x=\"inf\"} +Inf\nc -Inf\nd NaN\n"
        );
    }
}
