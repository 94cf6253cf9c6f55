//! MQTT: the daemon's sensors and batteries published to a broker, with Home Assistant
//! discovery ([`messages`]), on the daemon's own tokio runtime (rumqttc; TLS by rustls).
//!
//! Two tasks share a client:
//! - the **connection** polls the broker: on connecting it tells the publisher (which then
//!   announces `online` and the discovery configurations), on Home Assistant's `online` it asks
//!   for the discovery again, and on losing the broker it waits (1 s, doubling to 60 s) before
//!   the next attempt, logging once per outage;
//! - the **publisher** sends each sensor's state every `interval`, without waiting: when the
//!   client's small queue is full (the broker is away or slow) the message is dropped and
//!   counted, so memory never grows. It stops by announcing `offline`.
//!
//! The broker holds the last will, `offline` retained on the availability topic, for a
//! process that dies without saying so. Sampling and `/metrics` never wait for any of this.

pub(crate) mod messages;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::messages::Names;
use crate::board::Board;
use crate::config::{MqttConfig, Qos};
use crate::metrics::{Metrics, MqttMetrics};

/// State messages the client holds at most while the broker is away.
const QUEUE: usize = 64;
/// The longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the connection tells the publisher.
enum Notice {
    /// Connected: announce, and publish the discovery.
    Connected,
    /// Home Assistant (re)started: publish the discovery again.
    Rediscover,
}

/// The running publisher.
pub(crate) struct Mqtt {
    config: MqttConfig,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Mqtt {
    /// Start publishing the sensors `metrics` reports as `config` says.
    pub(crate) fn start(config: &MqttConfig, metrics: &Metrics) -> Result<Mqtt, String> {
        let names = names(config);
        let options = options(config, &names)?;
        let (client, eventloop) = AsyncClient::new(options, QUEUE);
        let m = metrics
            .mqtt()
            .map_err(|e| format!("cannot register the MQTT metrics: {e}"))?;
        let (notices_tx, notices) = mpsc::channel(4);
        let (stop, stopped) = watch::channel(false);
        let broker = config.broker.clone();
        let tasks = vec![
            tokio::spawn(connection(
                eventloop,
                client.clone(),
                names.clone(),
                m.clone(),
                notices_tx,
                stopped.clone(),
                broker,
            )),
            tokio::spawn(publisher(
                client,
                names,
                config.clone(),
                Arc::clone(metrics.board()),
                m,
                notices,
                stopped,
            )),
        ];
        log::info!(
            "publishing to MQTT broker {} under {}",
            config.broker,
            config.topic_prefix.clone()
        );
        Ok(Mqtt {
            config: config.clone(),
            stop,
            tasks,
        })
    }

    /// The configuration it runs on.
    pub(crate) fn config(&self) -> &MqttConfig {
        &self.config
    }

    /// Announce `offline`, disconnect, and wait for both tasks (a few seconds at most).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_err()
            {
                log::warn!("the MQTT connection did not close in time");
            }
        }
    }
}

fn names(config: &MqttConfig) -> Names {
    let host = crate::config::mqtt::hostname();
    let node: String = config
        .client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    Names {
        prefix: config.topic_prefix.clone(),
        discovery_prefix: config.discovery_prefix.clone(),
        node,
        device_name: format!("power-monitord {host}"),
        expire_after: (config.interval.as_secs() * 3).max(30),
    }
}

/// The client's options: broker, credentials, TLS, the last will.
fn options(config: &MqttConfig, names: &Names) -> Result<MqttOptions, String> {
    let broker = &config.endpoint;
    let mut options = MqttOptions::new(&config.client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    options.set_last_will(LastWill::new(
        names.availability(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options.set_credentials(user.clone(), password.0.clone());
    } else if let Some(user) = &config.username {
        options.set_credentials(user.clone(), "");
    }
    if broker.tls {
        let tls = tls_config(config)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    Ok(options)
}

/// Whether the files MQTT needs (its CA, client certificate and key, for `mqtts://`) load:
/// a reload checks this before it stops the running publisher.
pub(crate) fn check_files(config: &MqttConfig) -> Result<(), String> {
    if config.endpoint.tls {
        tls_config(config)?;
    }
    Ok(())
}

/// The rustls client configuration for the broker.
fn tls_config(config: &MqttConfig) -> Result<rustls::ClientConfig, String> {
    crate::files::tls_client(
        config.ca_file.as_deref(),
        config
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
    )
}

/// Poll the broker until told to stop; reconnect with a bounded backoff.
async fn connection(
    mut eventloop: EventLoop,
    client: AsyncClient,
    names: Names,
    m: MqttMetrics,
    notices: mpsc::Sender<Notice>,
    mut stopped: watch::Receiver<bool>,
    broker: String,
) {
    let mut backoff = Duration::from_secs(1);
    let mut outage = false;
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = stopped.changed() => {
                m.connected.set(0);
                // Let the publisher's last words (offline, disconnect) go out.
                let until = tokio::time::Instant::now() + Duration::from_secs(2);
                while let Ok(Ok(event)) = tokio::time::timeout_at(until, eventloop.poll()).await {
                    if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
                return;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                m.connected.set(1);
                backoff = Duration::from_secs(1);
                if outage {
                    log::info!("connected to MQTT broker {broker} again");
                } else {
                    log::info!("connected to MQTT broker {broker}");
                }
                outage = false;
                let _ = client.try_subscribe(names.ha_status(), QoS::AtLeastOnce);
                let _ = notices.try_send(Notice::Connected);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic == names.ha_status() && p.payload.as_ref() == b"online" {
                    let _ = notices.try_send(Notice::Rediscover);
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => m.sent.inc(),
            Ok(_) => {}
            Err(e) => {
                m.connected.set(0);
                if !outage {
                    log::warn!("MQTT broker {broker}: {e}; retrying every {} at most (sampling and /metrics go on)", humantime::format_duration(MAX_BACKOFF));
                    outage = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Publish states every interval; discovery and `online` when connected; `offline` at the end.
async fn publisher(
    client: AsyncClient,
    names: Names,
    config: MqttConfig,
    board: Arc<Board>,
    m: MqttMetrics,
    mut notices: mpsc::Receiver<Notice>,
    mut stopped: watch::Receiver<bool>,
) {
    let qos = match config.qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    };
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut announced: Vec<String> = Vec::new();
    let mut retired = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let sensors = board.sensors();
                let current: Vec<String> = sensors.iter().map(|s| s.name.clone()).collect();
                if config.discovery && m.connected.get() == 1 && current != announced {
                    // A reload added or removed sensors.
                    announced = discover(&client, &names, &board, &announced, false).await;
                }
                for s in sensors.iter() {
                    let state = messages::sensor_state(s);
                    count(client.try_publish(names.sensor_state(&s.name), qos, config.retain, state), &m);
                    if let Some((topic, payload)) = messages::battery_state(&names, s) {
                        count(client.try_publish(topic, qos, config.retain, payload), &m);
                    }
                }
            }
            notice = notices.recv() => {
                let Some(notice) = notice else { return };
                if matches!(notice, Notice::Connected) {
                    let _ = client.publish(names.availability(), QoS::AtLeastOnce, true, "online").await;
                }
                if config.discovery {
                    // The retired flags are emptied once a run: retained, they stay empty.
                    announced = discover(&client, &names, &board, &[], !retired).await;
                    retired = true;
                }
                // States soon after (a second, for Home Assistant to subscribe to what the
                // discovery named), not an interval later: an entity with `expire_after` is
                // unavailable until its first state.
                ticker.reset_after(config.interval.min(Duration::from_secs(1)));
            }
            _ = stopped.changed() => {
                let _ = client.try_publish(names.availability(), QoS::AtLeastOnce, true, "offline");
                let _ = client.try_disconnect();
                return;
            }
        }
    }
}

fn count(result: Result<(), ClientError>, m: &MqttMetrics) {
    if result.is_err() {
        m.dropped.inc();
    }
}

/// Publish the discovery of every sensor (retained), and empty configs for those of
/// `previous` that are gone (and, with `retire`, for 0.2.0's flag per rule); the names
/// announced.
async fn discover(
    client: &AsyncClient,
    names: &Names,
    board: &Board,
    previous: &[String],
    retire: bool,
) -> Vec<String> {
    let sensors = board.sensors();
    for s in sensors.iter() {
        for d in messages::sensor_discovery(names, s) {
            let _ = client
                .publish(d.topic, QoS::AtLeastOnce, true, d.payload)
                .await;
        }
        if retire {
            for topic in messages::retired_discovery_topics(names, &s.name) {
                let _ = client.publish(topic, QoS::AtLeastOnce, true, "").await;
            }
        }
    }
    let current: Vec<String> = sensors.iter().map(|s| s.name.clone()).collect();
    for gone in previous.iter().filter(|n| !current.contains(n)) {
        for topic in messages::sensor_discovery_topics(names, gone) {
            let _ = client.publish(topic, QoS::AtLeastOnce, true, "").await;
        }
    }
    current
}
