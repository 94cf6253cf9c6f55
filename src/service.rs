//! The daemon's life: logs, state, listeners, sampler, HTTP, systemd notifications, signals,
//! and an orderly stop that saves the energy totals last.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::{Config, LogLevel, DEFAULT_STATE_DIR};
use crate::http::{self, App};
use crate::metrics::Metrics;
use crate::persist::Persister;
use crate::sampler::{self, Health, Sampler};
use crate::state::live::{self, Kind, LiveFile, LiveSlot};
use crate::state::{StateError, StateStore, StoredSensor, StoredState};
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

/// Logs go to journald when systemd connected stderr to it, else to stderr.
/// `RUST_LOG` overrides the configured level.
pub fn init_logging(level: LogLevel) {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    if systemd_journal_logger::connected_to_journal() {
        let journal = systemd_journal_logger::JournalLog::new()
            .map(|j| j.with_syslog_identifier("power-monitord".into()));
        if let Ok(journal) = journal {
            if journal.install().is_ok() {
                let max = rust_log
                    .as_deref()
                    .and_then(|s| s.parse::<log::LevelFilter>().ok())
                    .unwrap_or(level.to_filter());
                log::set_max_level(max);
                return;
            }
        }
    }
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level.to_filter());
    if let Some(spec) = rust_log {
        builder.parse_filters(&spec);
    }
    let _ = builder.try_init();
}

/// Where the state lives: `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`), else
/// `daemon.state_dir` (relative to the config file), else the default. The flag says the
/// default was taken.
pub fn state_dir(config: &Config) -> (PathBuf, bool) {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| !p.as_os_str().is_empty())
    {
        return (dir, false);
    }
    if let Some(dir) = &config.daemon.state_dir {
        let base = config.path.parent().unwrap_or(Path::new("."));
        return (base.join(dir), false);
    }
    (PathBuf::from(DEFAULT_STATE_DIR), true)
}

/// Open the state directory. When the default one cannot be used by a user running the
/// daemon by hand, fall back to their own state directory rather than refuse to run.
fn open_state(config: &Config) -> Result<StateStore, StateError> {
    let (dir, is_default) = state_dir(config);
    match StateStore::open(&dir) {
        Err(StateError::Directory { source, .. })
            if is_default && source.kind() == io::ErrorKind::PermissionDenied =>
        {
            let fallback = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
                .map(|base| base.join("power-monitord"))
                .ok_or(StateError::Directory {
                    dir: dir.clone(),
                    source,
                })?;
            log::warn!(
                "cannot write {}; keeping energy totals in {} instead (set daemon.state_dir to choose)",
                dir.display(),
                fallback.display()
            );
            StateStore::open(&fallback)
        }
        other => other,
    }
}

/// Where the live totals go: a file named after the state directory (its device and inode, so
/// that two daemons with two state directories never share one) in the runtime directory,
/// which is a tmpfs on every systemd machine: `$RUNTIME_DIRECTORY` (systemd's
/// `RuntimeDirectory=`), else `/run/power-monitord`, else `$XDG_RUNTIME_DIR/power-monitord`,
/// else the state directory itself.
fn live_path(state_dir: &Path) -> PathBuf {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let name = match std::fs::metadata(state_dir) {
        Ok(meta) => format!("live-{:x}-{:x}.bin", meta.dev(), meta.ino()),
        Err(_) => "live.bin".to_string(),
    };
    let candidates = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .into_iter()
        .chain([PathBuf::from("/run/power-monitord")])
        .chain(std::env::var_os("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("power-monitord")));
    for dir in candidates.filter(|d| !d.as_os_str().is_empty()) {
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        let writable = tempfile::tempfile_in(&dir).is_ok();
        if made.is_ok() && writable {
            return dir.join(name);
        }
    }
    state_dir.join(name)
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// A listening socket; an IPv6 one takes IPv6 only, so `0.0.0.0:P` and `[::]:P` can both be
/// configured.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Load the totals: `state.json`, then the live file of a process that did not stop cleanly,
/// the later of the two per sensor. Returns what is on disk and what to continue from.
fn load_totals(
    store: &StateStore,
    live_path: &Path,
) -> Result<(StoredState, StoredState), StateError> {
    let loaded = store.load()?;
    if let Some(aside) = &loaded.set_aside {
        log::warn!(
            "state file {} had problems; moved it to {} and kept {} usable total(s): {}",
            store.path().display(),
            aside.moved_to.display(),
            loaded.state.sensors.len(),
            aside.problems.join("; ")
        );
    } else if loaded.found {
        log::info!(
            "restored energy totals of {} sensor(s) from {}",
            loaded.state.sensors.len(),
            store.path().display()
        );
    } else {
        log::info!(
            "no energy totals in {} yet; starting from zero",
            store.dir().display()
        );
    }
    let durable = loaded.state;
    let mut base = durable.clone();
    match live::read(live_path) {
        Ok(records) => {
            let mut newer = StoredState::default();
            for ((kind, name), values) in records {
                let totals = match kind {
                    Kind::Sensor => StoredSensor {
                        energy_joules: values[0],
                        energy_reverse_joules: values[1],
                    },
                };
                if totals.implausible().is_none() {
                    newer.sensors.insert(name, totals);
                }
            }
            if !newer.sensors.is_empty() {
                log::info!(
                    "the last run did not stop cleanly; continuing from the totals of its last samples in {}",
                    live_path.display()
                );
                base.merge_latest(&newer);
            }
        }
        Err(e) => log::warn!("ignoring the live totals: {e}"),
    }
    Ok((durable, base))
}

/// The live file with a record per configured sensor, holding `base`'s totals; without one
/// (a runtime directory that cannot be written), a crash loses what was not saved yet.
fn create_live(
    path: &Path,
    config: &Config,
    base: &StoredState,
) -> (Option<LiveFile>, Vec<Option<LiveSlot>>) {
    let entries: Vec<_> = config
        .sensors
        .iter()
        .map(|s| {
            let t = base.sensors.get(&s.name).copied().unwrap_or_default();
            let mut values = [0.0; live::VALUES];
            values[0] = t.energy_joules;
            values[1] = t.energy_reverse_joules;
            (Kind::Sensor, s.name.as_str(), values)
        })
        .collect();
    match LiveFile::create(path, &entries) {
        Ok((file, slots)) => (Some(file), slots.into_iter().map(Some).collect()),
        Err(e) => {
            log::warn!(
                "cannot create the live totals file {}: {e}; a crash will lose the energy since the last save",
                path.display()
            );
            (None, config.sensors.iter().map(|_| None).collect())
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT. `listen` replaces the configured addresses when
/// not empty.
pub fn run(config: Config, listen: Vec<SocketAddr>) -> Result<(), ServiceError> {
    let store = open_state(&config)?;
    let live_path = live_path(store.dir());
    let (durable, base) = load_totals(&store, &live_path)?;

    let addresses = if listen.is_empty() {
        config.daemon.listen.clone()
    } else {
        listen
    };
    let listeners = addresses
        .iter()
        .map(|&addr| bind(addr).map_err(|source| ServiceError::Bind { addr, source }))
        .collect::<Result<Vec<_>, _>>()?;

    let metrics = Arc::new(Metrics::new(&config, VERSION, REVISION)?);
    let (live_file, slots) = create_live(&live_path, &config, &base);
    let (pipelines, statuses) = sampler::pipelines(&config, &metrics, &base, slots);
    let mut persister = Persister::new(store, &durable, base, &metrics, &statuses);
    // At once, so that a new install has its totals on disk and a restart after a crash
    // exports what the live file held. A failure is logged; the loop retries.
    let _ = persister.save();
    let persister = Arc::new(Mutex::new(persister));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServiceError::System {
            doing: "start the async runtime",
            source,
        })?;
    // Before anything samples: a SIGTERM from here on ends in an orderly stop and a save.
    let mut signals = runtime.block_on(async { Signals::install() })?;
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<String>();
    let sampler = Sampler::start(&config, pipelines, &Clock::real(), move |bus| {
        let _ = fatal_tx.send(bus);
    })
    .map_err(|source| ServiceError::System {
        doing: "start the sampling threads",
        source,
    })?;
    let health = sampler.health();

    let outcome = runtime.block_on(async {
        let listeners = listeners
            .into_iter()
            .map(tokio::net::TcpListener::from_std)
            .collect::<io::Result<Vec<_>>>()
            .map_err(|source| ServiceError::System {
                doing: "hand the listeners to the runtime",
                source,
            })?;
        for l in &listeners {
            if let Ok(addr) = l.local_addr() {
                log::info!("listening on http://{addr}/");
            }
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let app = Arc::new(App {
            metrics: Arc::clone(&metrics),
            sensors: statuses.clone(),
            health: health.clone(),
            started: Instant::now(),
            version: VERSION,
        });
        let server = tokio::spawn(http::serve(listeners, app, shutdown_rx.clone()));
        let saver = tokio::spawn(persist_loop(
            Arc::clone(&persister),
            config.daemon.persist_interval,
            shutdown_rx.clone(),
        ));
        let watchdog = tokio::spawn(watchdog_loop(health.clone(), shutdown_rx.clone()));

        let buses: std::collections::BTreeSet<_> = config.sensors.iter().map(|s| &s.bus).collect();
        let status = format!(
            "sampling {} sensor(s) on {} bus(es)",
            config.sensors.len(),
            buses.len()
        );
        log::info!("ready: {status}");
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);

        let outcome = wait_for_stop(&mut signals, &mut fatal_rx).await;
        notify(&[sd_notify::NotifyState::Stopping]);
        let _ = shutdown_tx.send(true);
        let _ = server.await;
        let _ = saver.await;
        let _ = watchdog.await;
        outcome
    });

    sampler.stop();
    let mut persister = persister.lock().unwrap_or_else(PoisonError::into_inner);
    match persister.save() {
        Ok(()) => {
            // Everything the live file held is in state.json now.
            if let Some(live) = live_file {
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
        Err(_) => log::error!(
            "the totals since the last save stay in {} for the next start",
            live_path.display()
        ),
    }
    outcome
}

/// SIGTERM or SIGINT end the daemon; SIGHUP is acknowledged and ignored (the configuration
/// is read at start only); a dead sampling thread ends it with an error.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Take over SIGTERM, SIGINT and SIGHUP.
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

async fn wait_for_stop(
    signals: &mut Signals,
    fatal: &mut mpsc::UnboundedReceiver<String>,
) -> Result<(), ServiceError> {
    let Signals { term, int, hup } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM: stopping"); return Ok(()); }
            _ = int.recv() => { log::info!("SIGINT: stopping"); return Ok(()); }
            _ = hup.recv() => log::info!("SIGHUP: the configuration is read at start only; restart the service to apply changes"),
            bus = fatal.recv() => {
                return Err(ServiceError::SamplerDied { bus: bus.unwrap_or_default() });
            }
        }
    }
}

/// Save the totals every `interval`, on a blocking thread (a save waits for the disk).
async fn persist_loop(
    persister: Arc<Mutex<Persister>>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let persister = Arc::clone(&persister);
        // Failures are counted and logged by the persister.
        let _ = tokio::task::spawn_blocking(move || {
            persister
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .save()
        })
        .await;
    }
}

/// Under systemd's watchdog, send WATCHDOG=1 at half its period while sampling is alive.
async fn watchdog_loop(health: Health, mut shutdown: watch::Receiver<bool>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticker = tokio::time::interval(period / 2);
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if health.healthy() {
            notify(&[sd_notify::NotifyState::Watchdog]);
            withheld = false;
        } else if !withheld {
            log::error!("sampling has stalled; withholding the watchdog keep-alive");
            withheld = true;
        }
    }
}
