//! The MQTT publisher's families, registered when MQTT first starts (without `[mqtt]` there
//! are none).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The MQTT metrics.
#[derive(Clone)]
pub struct MqttMetrics {
    /// `powermon_mqtt_connected`.
    pub(crate) connected: IntGauge,
    /// `powermon_mqtt_messages_total{result="sent"}`.
    pub sent: IntCounter,
    /// `powermon_mqtt_messages_total{result="dropped"}`.
    pub(crate) dropped: IntCounter,
}

impl MqttMetrics {
    /// The families, registered in `registries`.
    pub(super) fn new(registries: [&Registry; 2]) -> prometheus::Result<MqttMetrics> {
        let connected = IntGauge::new(
            "powermon_mqtt_connected",
            "1 while the MQTT broker is connected, else 0.",
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "powermon_mqtt_messages_total",
                "MQTT messages by result: sent (handed to the broker's connection), dropped (the queue was full while the broker was away or slow).",
            ),
            &["result"],
        )?;
        for registry in registries {
            registry.register(Box::new(connected.clone()))?;
            registry.register(Box::new(messages.clone()))?;
        }
        Ok(MqttMetrics {
            connected,
            sent: messages.with_label_values(&["sent"]),
            dropped: messages.with_label_values(&["dropped"]),
        })
    }
}
