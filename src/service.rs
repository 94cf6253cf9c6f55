//! The daemon's life: logs, state, listeners, sampler, HTTP, systemd notifications, signals,
//! and an orderly stop that saves the energy totals last.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, LogLevel, DEFAULT_STATE_DIR};
use crate::http::{self, App};
use crate::metrics::Metrics;
use crate::persist::Persister;
use crate::sampler::{Health, Sampler, SensorPipeline};
use crate::sensor::simulated::Clock;
use crate::state::live::{self, Kind, LiveFile, LiveSlot};
use crate::state::{StateError, StateStore, StoredSensor, StoredState};
use crate::status::SensorStatus;

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision it was built from (see build.rs).
pub const REVISION: &str = env!("POWER_MONITORD_REVISION");

/// Why the daemon could not run (configuration errors are caught before this).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start: {0}")]
    Start(String),
    #[error("{0}")]
    Fatal(String),
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

    let metrics = Arc::new(
        Metrics::new(&config, VERSION, REVISION).map_err(|e| ServiceError::Start(e.to_string()))?,
    );
    let (live_file, slots) = create_live(&live_path, &config, &base);
    let (pipelines, statuses): (Vec<SensorPipeline>, Vec<Arc<SensorStatus>>) = config
        .sensors
        .iter()
        .zip(slots)
        .map(|(s, slot)| {
            let stored = base.sensors.get(&s.name).copied().unwrap_or_default();
            SensorPipeline::new(s, &metrics, stored, slot)
        })
        .unzip();
    let mut persister = Persister::new(store, &durable, base, &metrics, &statuses);
    // At once, so that a new install has its totals on disk and a restart after a crash
    // exports what the live file held. A failure is logged; the loop retries.
    let _ = persister.save();
    let persister = Arc::new(Mutex::new(persister));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Start(format!("async runtime: {e}")))?;
    // Before anything samples: a SIGTERM from here on ends in an orderly stop and a save.
    let mut signals = runtime.block_on(async { Signals::install() })?;
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<String>();
    let sampler = Sampler::start(&config, pipelines, &Clock::real(), move |message| {
        let _ = fatal_tx.send(message);
    })
    .map_err(|e| ServiceError::Start(format!("sampling threads: {e}")))?;
    let health = sampler.health();

    let outcome = runtime.block_on(async {
        let listeners = listeners
            .into_iter()
            .map(tokio::net::TcpListener::from_std)
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| ServiceError::Start(format!("listener: {e}")))?;
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
        let install =
            |kind| signal(kind).map_err(|e| ServiceError::Start(format!("signal handlers: {e}")));
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
            message = fatal.recv() => {
                let message = message.unwrap_or_else(|| "sampling ended".into());
                log::error!("{message}; stopping");
                return Err(ServiceError::Fatal(message));
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

/// A one-line description of each sensor, for `check-config`.
pub fn describe(config: &Config) -> Vec<String> {
    use crate::sensor::ina219::ChipSettings;
    let mut lines = Vec::new();
    let mut per_bus: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &config.sensors {
        *per_bus.entry(&s.bus).or_default() += 1;
        let chip = ChipSettings::from_config(s);
        let cal = chip.calibration;
        let mut rules = Vec::new();
        let a = &s.anomaly;
        if let Some(w) = a.max_power_watts {
            rules.push(format!(
                "over_power >{w} W for {}",
                humantime::format_duration(a.max_power_for())
            ));
        }
        if let Some(b) = a.energy_budget {
            rules.push(format!(
                "energy_budget {} kWh per {}",
                b.kwh,
                humantime::format_duration(b.window)
            ));
        }
        if let Some(k) = a.spike_sigma {
            rules.push(format!("spike {k}σ"));
        }
        if let Some([lo, hi]) = a.allowed_bus_volts {
            rules.push(format!("bus {lo}–{hi} V"));
        }
        rules.push("overrange".into());
        let load = match s.simulation().and_then(|sim| sim.load) {
            Some(load) => format!("; load {load}"),
            None => String::new(),
        };
        lines.push(format!(
            "{name}: {driver} at {address:#04x} on {bus}; shunt {shunt} Ω, up to {imax} A (±{pga} mV range, Current_LSB {lsb:.3} mA, Cal {reg}), bus {range} V, ADC {bits}-bit ×{samples} ({conv:.2} ms), every {interval}; rules: {rules}{load}",
            name = s.name,
            driver = s.driver.as_str(),
            address = s.address,
            bus = s.bus,
            shunt = s.shunt_ohms,
            imax = s.max_current_amps,
            pga = s.shunt_range().range_mv().end(),
            lsb = cal.current_lsb_amps * 1000.0,
            reg = cal.register,
            range = s.bus_voltage_range,
            bits = s.adc.bits,
            samples = s.adc.samples,
            conv = chip.conversion_time().as_secs_f64() * 1000.0,
            interval = humantime::format_duration(s.interval),
            rules = rules.join(", "),
        ));
    }
    lines
}
