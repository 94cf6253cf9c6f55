//! The daemon's life: start (state, metrics, sensors, listeners), serve (HTTP, saves, systemd
//! notifications, signals), reload on SIGHUP, and an orderly stop that saves the energy totals
//! last.
//!
//! # Layout
//! - this module: [`run`], start and stop, the signal loop;
//! - [`sampling`]: the sensors' pipelines, bus threads and live file, which a reload changes
//!   ([`Sampling::apply`](sampling::Sampling::apply));
//! - [`reload`]: re-reading the files on SIGHUP and applying them;
//! - [`notify`]: systemd notifications: READY, RELOADING, STATUS, the watchdog;
//! - [`logging`]: journald or stderr, at syslog priorities;
//! - [`paths`]: the state and runtime directories, loading the totals.

mod logging;
mod notify;
mod paths;
mod reload;
mod sampling;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::logging::{init as init_logging, set_level as set_log_level};
use self::notify::Notifier;
use self::sampling::Sampling;
use crate::board::Board;
use crate::config::Config;
use crate::http::web_config::WebConfigError;
use crate::http::{self, App, WebSecurity};
use crate::metrics::Metrics;
use crate::persist::Persister;
use crate::sampler::Sampler;
use crate::state::StateError;
use crate::{REVISION, VERSION};

/// Why the daemon could not run (configuration errors are caught before this).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The state directory or file.
    #[error(transparent)]
    State(#[from] StateError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}{}", bind_hint(source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The system refused something the daemon needs to run.
    #[error("cannot {doing}: {source}")]
    System {
        /// What the daemon was doing.
        doing: &'static str,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The metric families could not be registered.
    #[error("cannot register the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A sampling thread died; the daemon stops rather than serve frozen values.
    #[error("the sampling thread of bus {bus} panicked; stopping")]
    SamplerDied {
        /// The bus it sampled.
        bus: String,
    },
}

fn bind_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::AddrInUse => {
            " (another program listens there: see `ss -ltnp`; or choose another port with daemon.listen)"
        }
        io::ErrorKind::AddrNotAvailable => " (no interface of this machine has that address)",
        _ => "",
    }
}

/// A listening socket; an IPv6 one takes IPv6 only, so `0.0.0.0:P` and `[::]:P` can both be
/// configured.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServiceError> {
    let bound = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    bound().map_err(|source| ServiceError::Bind { addr, source })
}

/// The HTTP servers, one per listen address, each stoppable on its own (a reload rebinds).
struct Servers {
    app: Arc<App>,
    running: BTreeMap<SocketAddr, (watch::Sender<bool>, JoinHandle<()>)>,
}

impl Servers {
    /// Serve on `listener` (bound to `addr`) from now on.
    fn spawn(&mut self, addr: SocketAddr, listener: std::net::TcpListener) -> io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        if let Ok(local) = listener.local_addr() {
            let scheme = if self.app.serves_tls() {
                "https"
            } else {
                "http"
            };
            log::info!("listening on {scheme}://{local}/");
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(http::serve(vec![listener], Arc::clone(&self.app), stopped));
        self.running.insert(addr, (stop, task));
        Ok(())
    }

    /// Stop serving on `addr`, letting in-flight requests finish.
    async fn stop(&mut self, addr: SocketAddr) {
        if let Some((stop, task)) = self.running.remove(&addr) {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    async fn stop_all(&mut self) {
        let addrs: Vec<SocketAddr> = self.running.keys().copied().collect();
        for addr in addrs {
            self.stop(addr).await;
        }
    }
}

/// SIGTERM and SIGINT stop the daemon, SIGHUP reloads it.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, ServiceError> {
        let install = |kind| {
            signal(kind).map_err(|source| ServiceError::System {
                doing: "install the signal handlers",
                source,
            })
        };
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }
}

/// What the command line says beside the configuration file; it holds for the life of the
/// process, reloads included.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--listen`: replaces `daemon.listen`.
    pub listen: Vec<SocketAddr>,
    /// `--web.config.file`: replaces `daemon.web_config_file`.
    pub web_config_file: Option<PathBuf>,
}

impl Options {
    /// The web configuration file in force: the command line's, else the configuration's
    /// (relative to the configuration file).
    pub(crate) fn web_config_path(&self, config: &Config) -> Option<PathBuf> {
        self.web_config_file.clone().or_else(|| {
            let file = config.daemon.web_config_file.as_ref()?;
            let base = config.path.parent().unwrap_or(std::path::Path::new("."));
            Some(base.join(file))
        })
    }

    /// Load the web configuration in force (none: plain HTTP, no authentication).
    pub fn load_web(&self, config: &Config) -> Result<WebSecurity, WebConfigError> {
        match self.web_config_path(config) {
            Some(path) => crate::http::web_config::load(&path),
            None => Ok(WebSecurity::default()),
        }
    }
}

/// The daemon while it serves.
struct Daemon {
    /// The configuration file, re-read on SIGHUP.
    config_path: PathBuf,
    /// The command line's settings.
    options: Options,
    sampling: Arc<Mutex<Sampling>>,
    persister: Arc<Mutex<Persister>>,
    metrics: Arc<Metrics>,
    servers: Servers,
    notifier: Notifier,
    /// The persist loop's interval, changed by a reload.
    persist_interval: watch::Sender<Duration>,
    /// The MQTT publisher, when `[mqtt]` asks for one.
    mqtt: Option<crate::mqtt::Mqtt>,
    /// A queue per `[[remote_write]]`.
    remote: Vec<crate::remote::RemoteWrite>,
    /// Where the remote write spools (the state directory) and keeps its tail (the live
    /// file's directory).
    spool_dirs: (PathBuf, PathBuf),
    /// Whether a reload's files are being read.
    reading: Arc<std::sync::atomic::AtomicBool>,
}

/// Run the daemon until SIGTERM or SIGINT, secured by `web` (see [`Options::load_web`]).
pub fn run(config: Config, options: Options, web: WebSecurity) -> Result<(), ServiceError> {
    let store = paths::open_state(&config)?;
    let live_path = paths::live_path(store.dir());
    let spool_dirs = (
        store.dir().to_path_buf(),
        live_path.parent().unwrap_or(store.dir()).to_path_buf(),
    );
    let (durable, newer) = paths::load_totals(&store, &live_path)?;
    let addresses = if options.listen.is_empty() {
        config.daemon.listen.clone()
    } else {
        options.listen.clone()
    };
    let listeners = addresses
        .iter()
        .map(|&addr| bind(addr).map(|l| (addr, l)))
        .collect::<Result<Vec<_>, _>>()?;
    let board = Board::new();
    let metrics = Arc::new(Metrics::new(VERSION, REVISION, Arc::clone(&board))?);
    metrics
        .daemon
        .reload_success_time
        .set(crate::time::unix_now());
    let persister = Arc::new(Mutex::new(Persister::new(
        store,
        Arc::clone(&metrics),
        durable,
        newer,
    )));
    let runtime = runtime()?;
    // Before anything samples: a SIGTERM from here on ends in an orderly stop and a save.
    let mut signals = runtime.block_on(async { Signals::install() })?;
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<String>();
    let sampler = Sampler::new(Arc::new(move |bus| {
        let _ = fatal_tx.send(bus);
    }));
    let health = sampler.health();
    let app = Arc::new(App::new(
        Arc::clone(&metrics),
        health.clone(),
        web,
        config.daemon.public_healthz,
    ));
    log::info!(
        "at most {} connections at once (from the file limit)",
        app.connections().cap()
    );
    let persist_interval = config.daemon.persist_interval;
    let live = paths::create_live(&live_path);
    metrics
        .daemon
        .live_file
        .set(if live.is_some() { 1.0 } else { 0.0 });
    let sampling = Sampling::start(
        config,
        sampler,
        Arc::clone(&persister),
        live,
        Arc::clone(&board),
    )?;
    // At once, so that a new install has its totals on disk and a restart after a crash
    // exports what the live file held. A failure is logged; the loop retries.
    let _ = lock(&persister).save();
    let mut daemon = Daemon {
        config_path: sampling.config().path.clone(),
        options,
        sampling: Arc::new(Mutex::new(sampling)),
        persister,
        metrics,
        servers: Servers {
            app: Arc::clone(&app),
            running: BTreeMap::new(),
        },
        notifier: Notifier::new(board, health),
        persist_interval: watch::channel(persist_interval).0,
        mqtt: None,
        remote: Vec::new(),
        spool_dirs,
        reading: Arc::default(),
    };
    let outcome = runtime.block_on(daemon.serve(listeners, &mut signals, &mut fatal_rx));
    // Blocking work still queued (a password check, a reload's read) is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(500));
    daemon.stop();
    outcome
}

/// The async runtime: one thread serves HTTP and MQTT and keeps time; saves of the state file
/// go to a blocking thread.
fn runtime() -> Result<tokio::runtime::Runtime, ServiceError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The blocking thread that saves the state file outlives the save interval: one
        // thread for the daemon's life rather than a new one for every save.
        .thread_keep_alive(Duration::from_secs(600))
        // Saves, reloads and password checks; each kind bounds its own use.
        .max_blocking_threads(8)
        .build()
        .map_err(|source| ServiceError::System {
            doing: "start the async runtime",
            source,
        })
}

/// Lock a mutex whose holder may have panicked: the data is still the best there is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Daemon {
    /// Serve until a stop signal or a dead sampling thread.
    async fn serve(
        &mut self,
        listeners: Vec<(SocketAddr, std::net::TcpListener)>,
        signals: &mut Signals,
        fatal: &mut mpsc::UnboundedReceiver<String>,
    ) -> Result<(), ServiceError> {
        for (addr, listener) in listeners {
            self.servers
                .spawn(addr, listener)
                .map_err(|source| ServiceError::System {
                    doing: "hand a listener to the runtime",
                    source,
                })?;
        }
        let (shutdown_tx, shutdown) = watch::channel(false);
        let saver = tokio::spawn(persist_loop(
            Arc::clone(&self.persister),
            self.persist_interval.subscribe(),
            shutdown.clone(),
        ));
        let notifier = tokio::spawn(self.notifier.run(shutdown.clone()));
        let mqtt = lock(&self.sampling).config().mqtt.clone();
        self.restart_mqtt(mqtt.as_ref()).await;
        let remote = lock(&self.sampling).config().remote_write.clone();
        self.restart_remote(&remote).await;
        self.notifier.ready();

        let outcome = loop {
            tokio::select! {
                _ = signals.term.recv() => { log::info!("SIGTERM: stopping"); break Ok(()); }
                _ = signals.int.recv() => { log::info!("SIGINT: stopping"); break Ok(()); }
                _ = signals.hup.recv() => {
                    self.notifier.reloading();
                    let reading = reload::read(self.config_path.clone(), self.options.clone(), Arc::clone(&self.reading));
                    // A stop signal is heard while the files are read.
                    let read = tokio::select! {
                        read = reading => read,
                        _ = signals.term.recv() => { log::info!("SIGTERM during a reload: stopping"); break Ok(()); }
                        _ = signals.int.recv() => { log::info!("SIGINT during a reload: stopping"); break Ok(()); }
                    };
                    self.reload(read).await;
                }
                bus = fatal.recv() => break Err(ServiceError::SamplerDied { bus: bus.unwrap_or_default() }),
            }
        };
        self.notifier.stopping();
        self.restart_mqtt(None).await;
        self.restart_remote(&[]).await;
        let _ = shutdown_tx.send(true);
        self.servers.stop_all().await;
        let _ = saver.await;
        let _ = notifier.await;
        outcome
    }

    /// Run MQTT as `config` says: nothing changes if it is what runs; else the running
    /// publisher stops (saying `offline`) and one for `config` starts. A broker that cannot
    /// be set up is logged; the daemon runs on without MQTT.
    async fn restart_mqtt(&mut self, config: Option<&crate::config::MqttConfig>) {
        if self.mqtt.as_ref().map(|m| m.config()) == config {
            return;
        }
        if let Some(old) = self.mqtt.take() {
            old.stop().await;
        }
        let Some(config) = config else { return };
        match crate::mqtt::Mqtt::start(config, &self.metrics) {
            Ok(mqtt) => self.mqtt = Some(mqtt),
            Err(e) => log::error!("MQTT: {e}; running without it"),
        }
    }

    /// Run a remote write queue per entry of `configs`: a queue whose configuration is
    /// unchanged runs on; a changed one stops and starts again; one no longer configured stops
    /// and its series go. One that cannot be set up is logged; the daemon runs on without it.
    async fn restart_remote(&mut self, configs: &[crate::config::remote_write::RemoteWriteConfig]) {
        let mut old: Vec<_> = self.remote.drain(..).collect();
        for config in configs {
            if let Some(i) = old.iter().position(|q| q.config() == config) {
                self.remote.push(old.remove(i));
                continue;
            }
            // The same name shares the spool: the old queue stops first.
            if let Some(i) = old.iter().position(|q| q.config().name == config.name) {
                old.remove(i).stop().await;
            }
            let (state, runtime) = &self.spool_dirs;
            match crate::remote::RemoteWrite::start(config, &self.metrics, state, runtime) {
                Ok(queue) => self.remote.push(queue),
                Err(e) => log::error!("remote write {}: {e}; running without it", config.name),
            }
        }
        for gone in old {
            let name = gone.config().name.clone();
            gone.stop().await;
            // At the daemon's stop the series stay for the last scrape.
            if !configs.is_empty() {
                if let Ok(m) = self.metrics.remote() {
                    m.forget(&name);
                }
            }
        }
    }

    /// Stop sampling, save the final totals, and remove the live file once they are saved.
    fn stop(self) {
        let sampling = Arc::try_unwrap(self.sampling)
            .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner));
        let Ok(sampling) = sampling else {
            log::error!("the sampling threads are still in use; the totals since the last save stay in the live file");
            return;
        };
        let live = sampling.stop();
        let mut persister = lock(&self.persister);
        match persister.save() {
            Ok(()) => {
                if let Some(live) = live {
                    let path = live.path().to_path_buf();
                    if let Err(e) = live.remove() {
                        log::warn!("cannot remove {}: {e}", path.display());
                    }
                }
                log::info!(
                    "saved energy totals to {}; stopped",
                    persister.disk().path().display()
                );
            }
            Err(_) => {
                if let Some(live) = live {
                    log::error!(
                        "the totals since the last save stay in {} for the next start",
                        live.path().display()
                    );
                }
            }
        }
    }
}

/// How soon after the start the totals are saved the first time (then every interval).
const FIRST_SAVE_AFTER: Duration = Duration::from_secs(2);

/// Save the totals every interval (a reload may change it), on a blocking thread: a save waits
/// for the disk.
async fn persist_loop(
    persister: Arc<Mutex<Persister>>,
    mut interval: watch::Receiver<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The first save soon after start: the energy exported (and published to MQTT) moves
    // from the start's value within seconds rather than a whole interval later.
    let mut first = true;
    loop {
        let every = *interval.borrow_and_update();
        let every = if first {
            every.min(FIRST_SAVE_AFTER)
        } else {
            every
        };
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interval.changed() => continue,
            _ = shutdown.changed() => return,
        }
        let persister = Arc::clone(&persister);
        // Failures are counted and logged by the persister.
        let _ = tokio::task::spawn_blocking(move || lock(&persister).save()).await;
    }
}
