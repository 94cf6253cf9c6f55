//! The remote write queues' families, registered when the first `[[remote_write]]` starts
//! (without one there are none); a series per queue (`queue` label, the section's name).

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Why a queue drops samples unsent.
pub(crate) const DROPPED: [&str; 4] =
    ["spool_full", "age_limit", "unsynchronized_clock", "damaged"];

/// The remote write metrics of every queue.
#[derive(Clone)]
pub struct RemoteMetrics {
    /// `powermon_remote_write_samples_total{queue, result}`: sent, rejected.
    pub(crate) samples: IntCounterVec,
    /// `powermon_remote_write_samples_dropped_total{queue, reason}`: see [`DROPPED`].
    pub(crate) dropped: IntCounterVec,
    /// `powermon_remote_write_retries_total{queue}`.
    pub(crate) retries: IntCounterVec,
    /// `powermon_remote_write_pending_samples{queue}`.
    pub(crate) pending: IntGaugeVec,
    /// `powermon_remote_write_pending_bytes{queue, where}`: memory, disk.
    pub(crate) pending_bytes: IntGaugeVec,
    /// `powermon_remote_write_oldest_pending_timestamp_seconds{queue}`.
    pub(crate) oldest_pending: GaugeVec,
    /// `powermon_remote_write_last_success_timestamp_seconds{queue}`.
    pub(crate) last_success: GaugeVec,
}

impl RemoteMetrics {
    /// The families, registered in `registries`.
    pub(super) fn new(registries: [&Registry; 2]) -> prometheus::Result<RemoteMetrics> {
        let m = RemoteMetrics {
            samples: IntCounterVec::new(Opts::new("powermon_remote_write_samples_total", "Samples of a remote write queue by result: sent (the receiver stored them), rejected (the receiver refused them for good: a 4xx, or too old)."), &["queue", "result"])?,
            dropped: IntCounterVec::new(Opts::new("powermon_remote_write_samples_dropped_total", "Samples a remote write queue dropped unsent, by reason: spool_full (the oldest spooled segment gave way), age_limit (older than sample_age_limit), unsynchronized_clock (held while the clock was not synchronised, and the oldest gave way), damaged (a spooled segment that could not be read back)."), &["queue", "reason"])?,
            retries: IntCounterVec::new(Opts::new("powermon_remote_write_retries_total", "Requests of a remote write queue tried again (the receiver was away, overloaded or failed)."), &["queue"])?,
            pending: IntGaugeVec::new(Opts::new("powermon_remote_write_pending_samples", "Samples a remote write queue holds, not yet stored by the receiver."), &["queue"])?,
            pending_bytes: IntGaugeVec::new(Opts::new("powermon_remote_write_pending_bytes", "Bytes a remote write queue holds, compressed, in memory and on disk (the spool)."), &["queue", "where"])?,
            oldest_pending: GaugeVec::new(Opts::new("powermon_remote_write_oldest_pending_timestamp_seconds", "Unix time of the oldest sample a remote write queue holds; no series while it holds none."), &["queue"])?,
            last_success: GaugeVec::new(Opts::new("powermon_remote_write_last_success_timestamp_seconds", "Unix time of the last request the receiver stored."), &["queue"])?,
        };
        for registry in registries {
            registry.register(Box::new(m.samples.clone()))?;
            registry.register(Box::new(m.dropped.clone()))?;
            registry.register(Box::new(m.retries.clone()))?;
            registry.register(Box::new(m.pending.clone()))?;
            registry.register(Box::new(m.pending_bytes.clone()))?;
            registry.register(Box::new(m.oldest_pending.clone()))?;
            registry.register(Box::new(m.last_success.clone()))?;
        }
        Ok(m)
    }

    /// Every series of `queue`, at 0 (the oldest-pending and last-success times aside: they
    /// have none while the queue holds nothing, and before its first success).
    pub fn touch(&self, queue: &str) {
        for result in ["sent", "rejected"] {
            self.samples.with_label_values(&[queue, result]);
        }
        for reason in DROPPED {
            self.dropped.with_label_values(&[queue, reason]);
        }
        self.retries.with_label_values(&[queue]);
        self.pending.with_label_values(&[queue]);
        for place in ["memory", "disk"] {
            self.pending_bytes.with_label_values(&[queue, place]);
        }
    }

    /// Remove every series of `queue` (a reload took it out of the configuration).
    pub(crate) fn forget(&self, queue: &str) {
        for result in ["sent", "rejected"] {
            let _ = self.samples.remove_label_values(&[queue, result]);
        }
        for reason in DROPPED {
            let _ = self.dropped.remove_label_values(&[queue, reason]);
        }
        let _ = self.retries.remove_label_values(&[queue]);
        let _ = self.pending.remove_label_values(&[queue]);
        for place in ["memory", "disk"] {
            let _ = self.pending_bytes.remove_label_values(&[queue, place]);
        }
        let _ = self.oldest_pending.remove_label_values(&[queue]);
        let _ = self.last_success.remove_label_values(&[queue]);
    }
}
