//! The running sensors: one list, in configuration order, of what each sensor's pipeline
//! publishes ([`SensorStatus`]). The daemon changes it at start and at each reload
//! ([`Board::replace`]); the persister, the metrics, the HTTP server, MQTT and the systemd
//! status line read it.
//!
//! # Layout
//! - this module: [`Board`];
//! - [`status`]: one sensor as readers see it — its latest [`Snapshot`] and the totals
//!   exported so far;
//! - [`history`]: the recent power for the status page's sparklines.

pub mod history;
pub(crate) mod status;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

pub use self::status::{BatteryInfo, Exported, PowerStats, SensorStatus, SetCounter, Snapshot};

/// The sensors as of now.
pub(crate) type Sensors = Arc<Vec<Arc<SensorStatus>>>;

/// The running sensors.
#[derive(Debug, Default)]
pub struct Board {
    sensors: RwLock<Sensors>,
    /// Sensors a replacement took off the board, until the persister has their last totals.
    retired: Mutex<Vec<Arc<SensorStatus>>>,
}

impl Board {
    /// A board with no sensor yet.
    pub fn new() -> Arc<Board> {
        Arc::new(Board::default())
    }

    /// The sensors, in configuration order.
    pub(crate) fn sensors(&self) -> Sensors {
        Arc::clone(&self.sensors.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The sensor called `name`.
    pub(crate) fn sensor(&self, name: &str) -> Option<Arc<SensorStatus>> {
        self.sensors().iter().find(|s| s.name == name).cloned()
    }

    /// Run `sensors` from now on. Those whose names leave the board are kept for
    /// [`Board::take_retired`]; one replaced by another of the same name is not (its
    /// successor carries its totals on).
    pub fn replace(&self, sensors: Vec<Arc<SensorStatus>>) {
        let old = std::mem::replace(
            &mut *self.sensors.write().unwrap_or_else(PoisonError::into_inner),
            Arc::new(sensors),
        );
        let now = self.sensors();
        let gone = old
            .iter()
            .filter(|s| !now.iter().any(|n| n.name == s.name))
            .cloned();
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(gone);
    }

    /// The sensors taken off the board since the last call, with their final totals.
    pub(crate) fn take_retired(&self) -> Vec<Arc<SensorStatus>> {
        std::mem::take(&mut *self.retired.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
