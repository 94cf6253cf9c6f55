//! What systemd hears: READY=1 once serving, RELOADING=1 … READY=1 around a reload,
//! STOPPING=1, WATCHDOG=1 at half the watchdog period while every bus samples on schedule, and
//! a STATUS= line kept current for `systemctl status`: how many sensors are up, why the others
//! are down, and how the last reload went.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;
use tokio::sync::watch;

use super::lock;
use crate::board::Board;
use crate::sampler::Health;

/// How often the STATUS line is brought up to date.
const STATUS_EVERY: Duration = Duration::from_secs(2);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// The notifications of one daemon.
pub(crate) struct Notifier {
    board: Arc<Board>,
    health: Health,
    /// The last reload: whether it applied, and the wall time it happened.
    last_reload: Arc<Mutex<Option<(bool, SystemTime)>>>,
    /// The STATUS line last sent.
    sent: Arc<Mutex<String>>,
}

impl Notifier {
    /// Notifications about the sensors on `board`, sampled as `health` says.
    pub(crate) fn new(board: Arc<Board>, health: Health) -> Notifier {
        Notifier {
            board,
            health,
            last_reload: Arc::new(Mutex::new(None)),
            sent: Arc::new(Mutex::new(String::new())),
        }
    }

    /// The STATUS line: "4 of 4 sensors up", which are down and why, which have not read
    /// yet; how the last reload went.
    pub(crate) fn status_line(board: &Board, last_reload: Option<(bool, SystemTime)>) -> String {
        let sensors = board.sensors();
        let (mut up, mut down, mut starting) = (0, Vec::new(), Vec::new());
        for s in sensors.iter() {
            let snapshot = s.snapshot();
            match (snapshot.up, snapshot.last_error) {
                (true, _) => up += 1,
                (false, Some(kind)) => down.push(format!(
                    "{} ({})",
                    s.name,
                    s.down_reason().unwrap_or_else(|| kind.to_string())
                )),
                (false, None) => starting.push(s.name.as_str()),
            }
        }
        let mut line = format!("{up} of {} sensors up", sensors.len());
        if !down.is_empty() {
            line.push_str(&format!("; down: {}", down.join(", ")));
        }
        if !starting.is_empty() {
            line.push_str(&format!("; no reading yet: {}", starting.join(", ")));
        }
        if let Some((ok, at)) = last_reload {
            let at = humantime::format_rfc3339_seconds(at);
            line.push_str(&match ok {
                true => format!("; reloaded at {at}"),
                false => format!("; reload at {at} refused (see the log)"),
            });
        }
        line
    }

    fn status(&self) -> String {
        Notifier::status_line(&self.board, *lock(&self.last_reload))
    }

    /// Serving.
    pub(crate) fn ready(&self) {
        let status = self.status();
        log::info!("ready: {status}");
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        *lock(&self.sent) = status;
    }

    /// A reload begins.
    pub(crate) fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        // systemd 253 and later want the moment of the request with RELOADING=1.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        send(&states);
    }

    /// A reload ended, applied or refused.
    pub(crate) fn reloaded(&self, applied: bool) {
        *lock(&self.last_reload) = Some((applied, SystemTime::now()));
        let status = self.status();
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        *lock(&self.sent) = status;
    }

    /// Stopping.
    pub(crate) fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }

    /// Keep STATUS current and, under systemd's watchdog, send WATCHDOG=1 at half its period
    /// while sampling is alive; until `shutdown`.
    pub(crate) fn run(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (board, health, last_reload, sent) = (
            Arc::clone(&self.board),
            self.health.clone(),
            Arc::clone(&self.last_reload),
            Arc::clone(&self.sent),
        );
        async move {
            if std::env::var_os("NOTIFY_SOCKET").is_none() {
                return;
            }
            let watchdog = sd_notify::watchdog_enabled();
            let every = watchdog.map_or(STATUS_EVERY, |p| (p / 2).min(STATUS_EVERY));
            let mut ticker = tokio::time::interval(every);
            let mut withheld = false;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = shutdown.changed() => return,
                }
                if watchdog.is_some() {
                    if health.healthy() {
                        send(&[NotifyState::Watchdog]);
                        withheld = false;
                    } else if !withheld {
                        log::error!("sampling has stalled; withholding the watchdog keep-alive");
                        withheld = true;
                    }
                }
                let status = Notifier::status_line(&board, *lock(&last_reload));
                let mut last = lock(&sent);
                if *last != status {
                    send(&[NotifyState::Status(&status)]);
                    *last = status;
                }
            }
        }
    }
}
