//! The configuration file: its types, its defaults and every check made before the daemon
//! touches a bus or binds a port.
//!
//! Loading happens in three steps, each of which reports file, line, column and key:
//! 1. TOML syntax (`toml`'s parser, with its own spans);
//! 2. shape and types (`serde`, `deny_unknown_fields`, the key path from `serde_path_to_error`);
//! 3. cross-field checks ([`Config::validate`]), whose key paths are located in the document
//!    afterwards with [`locate`], so the config structs stay free of span bookkeeping.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ina219::configuration::{BusVoltageRange, Resolution, ShuntVoltageRange};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};

/// Where the daemon looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/power-monitord/config.toml";
/// The default scrape port (see README, "Port").
pub const DEFAULT_PORT: u16 = 9723;
/// Where energy totals live unless `$STATE_DIRECTORY` or `daemon.state_dir` say otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/power-monitord";
/// Labels that `powermon_sensor_info` sets itself and a user label must not shadow.
const RESERVED_LABELS: [&str; 4] = ["sensor", "driver", "bus", "address"];
/// The INA219 takes 7-bit addresses 0x40..=0x4F, chosen with the A0/A1 pins (datasheet Table 1).
pub const ADDRESS_RANGE: std::ops::RangeInclusive<u8> = 0x40..=0x4F;
/// Absolute maximum common-mode voltage on IN+/IN- (datasheet 7.1): the bus input tops out here.
pub const MAX_BUS_INPUT_VOLTS: f64 = 26.0;

/// A loaded and validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (used in messages).
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub sensors: Vec<SensorConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    daemon: DaemonConfig,
    #[serde(default, rename = "sensor")]
    sensors: Vec<SensorConfig>,
}

/// `[daemon]`: how the process itself runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Scrape addresses: one string or a list of them.
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub listen: Vec<SocketAddr>,
    /// How often energy totals are written to the state file.
    #[serde(deserialize_with = "duration")]
    pub persist_interval: Duration,
    /// Log threshold; `RUST_LOG` overrides it.
    pub log_level: LogLevel,
    /// Where `state.json` lives when `$STATE_DIRECTORY` is not set.
    pub state_dir: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))],
            persist_interval: Duration::from_secs(30),
            log_level: LogLevel::Info,
            state_dir: None,
        }
    }
}

/// `daemon.log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `sensor.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A real INA219 on a Linux I2C bus (`/dev/i2c-N`).
    Ina219,
    /// A virtual INA219 on a virtual I2C bus, driven by a load model.
    Simulated,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Ina219 => "ina219",
            Driver::Simulated => "simulated",
        }
    }
}

/// One `[[sensor]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// The `sensor` label: `[a-z0-9_]+`, unique.
    pub name: String,
    #[serde(default = "default_driver")]
    pub driver: Driver,
    /// `/dev/i2c-N` for hardware; any name for a virtual bus. Resolved by [`Config::validate`].
    #[serde(default)]
    pub bus: String,
    #[serde(default = "default_address")]
    pub address: u8,
    #[serde(default = "default_shunt_ohms")]
    pub shunt_ohms: f64,
    #[serde(default = "default_max_current_amps")]
    pub max_current_amps: f64,
    /// PGA range in mV (40, 80, 160, 320); by default the smallest that holds
    /// `max_current_amps × shunt_ohms`.
    #[serde(default)]
    pub shunt_range_mv: Option<u16>,
    #[serde(default = "default_bus_voltage_range")]
    pub bus_voltage_range: u8,
    #[serde(default)]
    pub adc: AdcConfig,
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// Longest pause between samples that energy integration bridges; default 5 × interval.
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_gap: Option<Duration>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub anomaly: AnomalyConfig,
    /// Load model and faults of a simulated sensor.
    #[serde(default)]
    pub simulation: Option<SimulationConfig>,
}

fn default_driver() -> Driver {
    Driver::Ina219
}
fn default_address() -> u8 {
    0x40
}
fn default_shunt_ohms() -> f64 {
    0.1
}
fn default_max_current_amps() -> f64 {
    3.2
}
fn default_bus_voltage_range() -> u8 {
    32
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}

/// `sensor.adc`: resolution and hardware averaging, applied to both the shunt and the bus ADC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdcConfig {
    pub bits: u8,
    pub samples: u8,
}

impl Default for AdcConfig {
    fn default() -> Self {
        AdcConfig {
            bits: 12,
            samples: 1,
        }
    }
}

impl AdcConfig {
    /// The chip setting for this resolution/averaging, if the combination exists
    /// (datasheet Table 5: averaging is only available at 12 bits).
    pub fn resolution(self) -> Option<Resolution> {
        Some(match (self.bits, self.samples) {
            (9, 1) => Resolution::Res9Bit,
            (10, 1) => Resolution::Res10Bit,
            (11, 1) => Resolution::Res11Bit,
            (12, 1) => Resolution::Res12Bit,
            (12, 2) => Resolution::Avg2,
            (12, 4) => Resolution::Avg4,
            (12, 8) => Resolution::Avg8,
            (12, 16) => Resolution::Avg16,
            (12, 32) => Resolution::Avg32,
            (12, 64) => Resolution::Avg64,
            (12, 128) => Resolution::Avg128,
            _ => return None,
        })
    }

    /// Time for one shunt plus one bus conversion in continuous mode (datasheet Table 5).
    pub fn conversion_time(self) -> Option<Duration> {
        self.resolution()
            .map(|r| Duration::from_micros(2 * u64::from(r.conversion_time_us())))
    }
}

/// `[sensor.anomaly]`: the rules evaluated on every sample of one sensor.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// `over_power`: power above this many watts ...
    pub max_power_watts: Option<f64>,
    /// ... for at least this long (default 30 s); it clears after as long below the limit
    /// less the hysteresis.
    #[serde(deserialize_with = "opt_duration")]
    pub max_power_for: Option<Duration>,
    /// `energy_budget`: energy over a rolling window above a budget.
    pub energy_budget: Option<EnergyBudget>,
    /// `spike`: deviation from an EWMA baseline by more than this many standard deviations.
    pub spike_sigma: Option<f64>,
    /// `under_voltage` / `over_voltage`: bus voltage outside `[low, high]` volts ...
    pub allowed_bus_volts: Option<[f64; 2]>,
    /// ... for at least this long (default 5 s).
    #[serde(deserialize_with = "opt_duration")]
    pub bus_volts_for: Option<Duration>,
    /// Clear thresholds sit this fraction inside the trip thresholds (default 0.05).
    pub hysteresis: Option<f64>,
}

impl AnomalyConfig {
    pub const DEFAULT_MAX_POWER_FOR: Duration = Duration::from_secs(30);
    pub const DEFAULT_BUS_VOLTS_FOR: Duration = Duration::from_secs(5);
    pub const DEFAULT_HYSTERESIS: f64 = 0.05;

    pub fn max_power_for(&self) -> Duration {
        self.max_power_for.unwrap_or(Self::DEFAULT_MAX_POWER_FOR)
    }
    pub fn bus_volts_for(&self) -> Duration {
        self.bus_volts_for.unwrap_or(Self::DEFAULT_BUS_VOLTS_FOR)
    }
    pub fn hysteresis(&self) -> f64 {
        self.hysteresis.unwrap_or(Self::DEFAULT_HYSTERESIS)
    }
}

/// `energy_budget = { kwh = 12.0, window = "24h" }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyBudget {
    pub kwh: f64,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
}

/// `[sensor.simulation]`: what the virtual INA219 measures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationConfig {
    #[serde(default)]
    pub load: Option<LoadModel>,
    /// Open-circuit voltage of the simulated supply.
    #[serde(default = "default_supply_volts")]
    pub supply_volts: f64,
    /// Internal resistance of the supply and wiring: the bus sags by `current × source_ohms`.
    #[serde(default)]
    pub source_ohms: f64,
    /// Relative noise added to every conversion (0.01 = ±1 %).
    #[serde(default)]
    pub noise: f64,
    /// Seed of the load model; default derived from the sensor name.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub faults: Vec<FaultConfig>,
}

fn default_supply_volts() -> f64 {
    12.8
}

impl SimulationConfig {
    /// What a bare `driver = "simulated"` sensor gets.
    pub fn default_for(sensor: &SensorConfig) -> SimulationConfig {
        SimulationConfig {
            load: None,
            supply_volts: default_supply_volts(),
            source_ohms: 0.0,
            noise: 0.0,
            seed: None,
            faults: Vec::new(),
        }
        .with_default_load(sensor)
    }

    fn with_default_load(mut self, sensor: &SensorConfig) -> Self {
        if self.load.is_none() {
            // Between 10 % and 60 % of what the shunt can measure at this supply.
            let full_scale_watts = sensor.max_current_amps * self.supply_volts;
            self.load = Some(LoadModel::Uniform {
                min_watts: 0.1 * full_scale_watts,
                max_watts: 0.6 * full_scale_watts,
            });
        }
        self
    }
}

/// `simulation.load = { model = "…", … }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadModel {
    /// The same power all the time (negative: current flows backwards, e.g. charging).
    Constant { watts: f64 },
    /// A fresh uniformly distributed value every conversion.
    Uniform { min_watts: f64, max_watts: f64 },
    /// Compressor cycles around `watts` (default 1450), inrush at each start, hot spells.
    AirConditioner {
        #[serde(default)]
        watts: Option<f64>,
    },
    /// Fill, heat, wash, rinse, spin, idle; `watts` is the heater's draw (default 700).
    WashingMachine {
        #[serde(default)]
        watts: Option<f64>,
    },
    /// Compressor duty cycle around `watts` (default 240) with a start surge, door openings.
    Fridge {
        #[serde(default)]
        watts: Option<f64>,
    },
    /// A Raspberry Pi rail: idle around `watts` (default 3.5) with bursts of work.
    RaspberryPi {
        #[serde(default)]
        watts: Option<f64>,
    },
}

impl fmt::Display for LoadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, watts) = match *self {
            LoadModel::Constant { watts } => return write!(f, "constant {watts} W"),
            LoadModel::Uniform {
                min_watts,
                max_watts,
            } => return write!(f, "uniform {min_watts}–{max_watts} W"),
            LoadModel::AirConditioner { watts } => ("air_conditioner", watts.unwrap_or(1450.0)),
            LoadModel::WashingMachine { watts } => ("washing_machine", watts.unwrap_or(700.0)),
            LoadModel::Fridge { watts } => ("fridge", watts.unwrap_or(240.0)),
            LoadModel::RaspberryPi { watts } => ("raspberry_pi", watts.unwrap_or(3.5)),
        };
        write!(f, "{name} {watts} W")
    }
}

/// `simulation.faults = [{ kind = "…", … }]`: scheduled misbehaviour, timed from start-up.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultConfig {
    /// The chip does not acknowledge its address on a fraction `rate` of transfers.
    Nack {
        rate: f64,
        #[serde(default, deserialize_with = "duration")]
        start: Duration,
        #[serde(default, deserialize_with = "opt_duration")]
        duration: Option<Duration>,
    },
    /// A fraction `rate` of transfers time out.
    Timeout {
        rate: f64,
        #[serde(default, deserialize_with = "duration")]
        start: Duration,
        #[serde(default, deserialize_with = "opt_duration")]
        duration: Option<Duration>,
    },
    /// The chip is off the bus (every transfer is NACKed).
    Disconnect {
        #[serde(deserialize_with = "duration")]
        start: Duration,
        #[serde(deserialize_with = "duration")]
        duration: Duration,
    },
    /// The ADC stops converting: registers freeze and CNVR never sets again.
    Stuck {
        #[serde(deserialize_with = "duration")]
        start: Duration,
        #[serde(deserialize_with = "duration")]
        duration: Duration,
    },
    /// The load draws `watts` instead of its model.
    Overload {
        #[serde(deserialize_with = "duration")]
        start: Duration,
        #[serde(deserialize_with = "duration")]
        duration: Duration,
        watts: f64,
    },
    /// The supply sits at `volts` instead of `supply_volts`.
    Supply {
        #[serde(deserialize_with = "duration")]
        start: Duration,
        #[serde(deserialize_with = "duration")]
        duration: Duration,
        volts: f64,
    },
    /// Transfers block until the window ends, then time out: a bus held low, a hung chip.
    Hang {
        #[serde(deserialize_with = "duration")]
        start: Duration,
        #[serde(deserialize_with = "duration")]
        duration: Duration,
    },
    /// The chip browns out and comes back with its power-on register values.
    Brownout {
        #[serde(deserialize_with = "duration")]
        at: Duration,
    },
}

/// A human duration such as "500ms", "30s", "24h" or "1h 30m".
///
/// Written out instead of `humantime_serde` so that the message keeps humantime's reason
/// ("unknown time unit \"x\"") rather than a bare "expected a duration".
fn duration<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom("expected a duration string such as \"500ms\", \"30s\" or \"24h\"")
    })?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {e}; expected a number and a unit, such as \"500ms\", \"30s\" or \"24h\""
        ))
    })
}

fn opt_duration<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    duration(deserializer).map(Some)
}

fn one_or_many_addrs<'de, D>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("expected an address string or a list of them"))?
    {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid listen address {s:?}: expected IP:PORT, such as \"0.0.0.0:{DEFAULT_PORT}\" or \"[::1]:{DEFAULT_PORT}\""
                ))
            })
        })
        .collect()
}

impl SensorConfig {
    /// The bus a sensor sits on when the file names none.
    fn default_bus(&self) -> String {
        match self.driver {
            Driver::Ina219 => "/dev/i2c-1".to_string(),
            // Each simulated sensor gets its own virtual bus unless the file puts several on one.
            Driver::Simulated => format!("virtual:{}", self.name),
        }
    }

    /// The longest gap energy integration bridges.
    pub fn max_gap(&self) -> Duration {
        self.max_gap.unwrap_or(self.interval * 5)
    }

    /// The PGA range: as configured, or the smallest that holds the full-scale shunt voltage.
    pub fn shunt_range(&self) -> ShuntVoltageRange {
        match self.shunt_range_mv {
            Some(40) => ShuntVoltageRange::Fsr40mv,
            Some(80) => ShuntVoltageRange::Fsr80mv,
            Some(160) => ShuntVoltageRange::Fsr160mv,
            Some(_) => ShuntVoltageRange::Fsr320mv,
            None => smallest_shunt_range(self.full_scale_shunt_volts())
                .unwrap_or(ShuntVoltageRange::Fsr320mv),
        }
    }

    pub fn bus_range(&self) -> BusVoltageRange {
        if self.bus_voltage_range == 16 {
            BusVoltageRange::Fsr16v
        } else {
            BusVoltageRange::Fsr32v
        }
    }

    /// The shunt voltage at `max_current_amps`.
    pub fn full_scale_shunt_volts(&self) -> f64 {
        self.max_current_amps * self.shunt_ohms
    }

    /// The simulation settings, with defaults filled in (simulated sensors only).
    pub fn simulation(&self) -> Option<SimulationConfig> {
        match self.driver {
            Driver::Ina219 => None,
            Driver::Simulated => Some(match &self.simulation {
                Some(sim) => sim.clone().with_default_load(self),
                None => SimulationConfig::default_for(self),
            }),
        }
    }
}

/// The smallest PGA range whose full scale is at least `volts`.
pub fn smallest_shunt_range(volts: f64) -> Option<ShuntVoltageRange> {
    [
        ShuntVoltageRange::Fsr40mv,
        ShuntVoltageRange::Fsr80mv,
        ShuntVoltageRange::Fsr160mv,
        ShuntVoltageRange::Fsr320mv,
    ]
    .into_iter()
    .find(|r| f64::from(*r.range_mv().end()) / 1000.0 >= volts - 1e-12)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl ConfigError {
    /// The diagnostic, for a config that was read but is wrong.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ConfigError::Invalid(d) => Some(d),
            ConfigError::Read { .. } => None,
        }
    }
}

/// One mistake in a config file, with its position.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The key path, e.g. `sensor[1].address`; empty for a syntax error outside any key.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
    source_line: String,
    caret_len: usize,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        writeln!(f, "{}", self.message)?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        let pad: String = self
            .source_line
            .chars()
            .take(self.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "{:gutter$} | {pad}{}",
            "",
            "^".repeat(self.caret_len.max(1))
        )
    }
}

impl Diagnostic {
    fn new(file: &Path, text: &str, span: Range<usize>, key: String, message: String) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let source_line = text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let end = span.end.clamp(start, line_end);
        let caret_len = text[start..end].chars().count();
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            key,
            message,
            source_line,
            caret_len,
        }
    }
}

/// A key path into the document, e.g. `sensor[1].anomaly.max_power_watts`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_to_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn parse_path(text: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in text.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() && key != "?" {
            segs.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                segs.push(Seg::Index(i));
            }
        }
    }
    segs
}

/// The span of the deepest element of `path` present in the document: the value itself when
/// it exists, else the table that should have held it.
fn locate(doc: &toml::Spanned<DeTable<'_>>, path: &[Seg]) -> Range<usize> {
    let mut span = 0..0;
    let mut value: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    for seg in path {
        let next = match (seg, table, value) {
            (Seg::Key(k), Some(t), _) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                .map(|(key, v)| (key.span(), v)),
            (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((key_span, v)) = next else { break };
        // Point at the value of a scalar, at the key (or header) of a table.
        span = match v.get_ref() {
            DeValue::Table(_) => key_span,
            _ => v.span(),
        };
        value = Some(v.get_ref());
        table = v.get_ref().as_table();
    }
    span
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(path, &text)
    }

    /// Parse and validate config text; `path` only names the file in messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |span: Range<usize>, key: String, message: String| {
            ConfigError::Invalid(Box::new(Diagnostic::new(path, text, span, key, message)))
        };

        let doc = DeTable::parse(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = key_on_line(text, span.start);
            invalid(span, key, format!("TOML syntax error: {}", e.message()))
        })?;

        let deserializer = toml::Deserializer::parse(text).map_err(|e| {
            invalid(
                e.span().unwrap_or(0..0),
                String::new(),
                e.message().to_string(),
            )
        })?;
        let file: FileConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let mut key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // serde names the offending field in the message, not in the path.
            if let Some(field) = quoted_after(&message, "missing field `") {
                key = if key == "." || key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
            }
            if key == "." {
                key.clear();
            }
            let span = inner
                .span()
                .unwrap_or_else(|| locate(&doc, &parse_path(&key)));
            invalid(span, key, explain_serde_message(&message))
        })?;

        let mut config = Config {
            path: path.to_path_buf(),
            daemon: file.daemon,
            sensors: file.sensors,
        };
        config.validate().map_err(|(path, message)| {
            let span = locate(&doc, &path);
            invalid(span, path_to_string(&path), message)
        })?;
        Ok(config)
    }

    /// Cross-field checks; fills in defaults that depend on other fields.
    fn validate(&mut self) -> Result<(), (Vec<Seg>, String)> {
        let key = |k: &str| vec![Seg::Key("daemon".into()), Seg::Key(k.into())];
        if self.daemon.listen.is_empty() {
            return Err((key("listen"), "expected at least one listen address".into()));
        }
        for (i, addr) in self.daemon.listen.iter().enumerate() {
            if self.daemon.listen[..i].contains(addr) {
                return Err((key("listen"), format!("{addr} is listed twice")));
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&self.daemon.persist_interval)
        {
            return Err((
                key("persist_interval"),
                "expected 1s to 1h: the state file is rewritten this often, and a power cut loses the energy since the last write".into(),
            ));
        }
        if self.sensors.is_empty() {
            return Err((
                vec![Seg::Key("sensor".into())],
                "no [[sensor]] is configured; expected at least one (see config/config.toml)"
                    .into(),
            ));
        }

        let mut names: HashMap<String, usize> = HashMap::new();
        let mut addresses: HashMap<(String, u8), usize> = HashMap::new();
        let mut bus_drivers: HashMap<String, Driver> = HashMap::new();
        for i in 0..self.sensors.len() {
            let at = |k: &str| {
                let mut p = vec![Seg::Key("sensor".into()), Seg::Index(i)];
                p.extend(parse_path(k));
                p
            };
            let sensor = &mut self.sensors[i];
            if sensor.bus.is_empty() {
                sensor.bus = sensor.default_bus();
            }
            let sensor = &self.sensors[i];
            let name = &sensor.name;
            let err = |k: &str, msg: String| Err((at(k), format!("sensor {name:?}: {msg}")));

            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err((
                    at("name"),
                    format!(
                        "{name:?} is not a valid sensor name; expected 1 to 64 characters of a-z, 0-9 and _ (it becomes the `sensor` label)"
                    ),
                ));
            }
            if let Some(first) = names.insert(name.clone(), i) {
                return err(
                    "name",
                    format!("the name is already used by sensor[{first}]; expected unique names"),
                );
            }
            if !ADDRESS_RANGE.contains(&sensor.address) {
                return err(
                    "address",
                    format!(
                        "address {:#04x} is outside the INA219 range; expected 0x40 to 0x4F (set by the A0/A1 pins)",
                        sensor.address
                    ),
                );
            }
            if let Some(first) = addresses.insert((sensor.bus.clone(), sensor.address), i) {
                return err(
                    "address",
                    format!(
                        "address {:#04x} on bus {} is already used by sensor[{first}]; expected one chip per address on a bus",
                        sensor.address, sensor.bus
                    ),
                );
            }
            if let Some(other) = bus_drivers.insert(sensor.bus.clone(), sensor.driver) {
                if other != sensor.driver {
                    return err(
                        "bus",
                        format!(
                            "bus {} already carries {} sensors; a bus is either real or simulated",
                            sensor.bus,
                            other.as_str()
                        ),
                    );
                }
            }
            if !(sensor.shunt_ohms.is_finite() && sensor.shunt_ohms > 0.0) {
                return err(
                    "shunt_ohms",
                    format!(
                        "{} is not a usable shunt resistance; expected a positive number of ohms, e.g. 0.1 for a stock breakout or 0.000375 for a 75 mV / 200 A shunt",
                        sensor.shunt_ohms
                    ),
                );
            }
            if !(sensor.max_current_amps.is_finite() && sensor.max_current_amps > 0.0) {
                return err(
                    "max_current_amps",
                    format!(
                        "{} is not a usable current; expected the largest current you expect, in amperes, above 0",
                        sensor.max_current_amps
                    ),
                );
            }
            let full_scale = sensor.full_scale_shunt_volts();
            match sensor.shunt_range_mv {
                None => {
                    if smallest_shunt_range(full_scale).is_none() {
                        return err(
                            "max_current_amps",
                            format!(
                                "{} A through {} Ω is {:.0} mV, beyond the INA219's ±320 mV shunt input; expected at most {:.3} A with this shunt, or a smaller shunt",
                                sensor.max_current_amps,
                                sensor.shunt_ohms,
                                full_scale * 1000.0,
                                0.32 / sensor.shunt_ohms
                            ),
                        );
                    }
                }
                Some(mv @ (40 | 80 | 160 | 320)) => {
                    if full_scale > f64::from(mv) / 1000.0 + 1e-12 {
                        return err(
                            "shunt_range_mv",
                            format!(
                                "{mv} mV is less than max_current_amps × shunt_ohms = {:.1} mV; expected a range that holds the largest current",
                                full_scale * 1000.0
                            ),
                        );
                    }
                }
                Some(mv) => {
                    return err(
                        "shunt_range_mv",
                        format!("{mv} is not a PGA range; expected 40, 80, 160 or 320"),
                    );
                }
            }
            if !matches!(sensor.bus_voltage_range, 16 | 32) {
                return err(
                    "bus_voltage_range",
                    format!(
                        "{} is not a bus range; expected 16 or 32 (volts)",
                        sensor.bus_voltage_range
                    ),
                );
            }
            let Some(conversion) = sensor.adc.conversion_time() else {
                return err(
                    "adc",
                    format!(
                        "bits = {}, samples = {} is not an ADC mode; expected bits 9 to 12 with samples = 1, or bits = 12 with samples 1, 2, 4, 8, 16, 32, 64 or 128",
                        sensor.adc.bits, sensor.adc.samples
                    ),
                );
            };
            if sensor.interval < conversion {
                return err(
                    "interval",
                    format!(
                        "{} is shorter than one conversion with this ADC setting ({}); expected at least that, or fewer samples",
                        humantime::format_duration(sensor.interval),
                        humantime::format_duration(conversion)
                    ),
                );
            }
            if sensor.interval > Duration::from_secs(3600) {
                return err("interval", "expected at most 1h between samples".into());
            }
            if let Some(gap) = sensor.max_gap {
                if gap < sensor.interval {
                    return err(
                        "max_gap",
                        format!(
                            "{} is shorter than the interval ({}); expected at least one interval",
                            humantime::format_duration(gap),
                            humantime::format_duration(sensor.interval)
                        ),
                    );
                }
            }
            for (label, value) in &sensor.labels {
                let valid = label
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !label.starts_with("__");
                if !valid {
                    return err(
                        &format!("labels.{label}"),
                        format!("{label:?} is not a Prometheus label name; expected [a-zA-Z_][a-zA-Z0-9_]* not starting with __"),
                    );
                }
                if RESERVED_LABELS.contains(&label.as_str()) {
                    return err(
                        &format!("labels.{label}"),
                        format!("{label:?} is set by power-monitord itself; expected another label name"),
                    );
                }
                if value.len() > 256 {
                    return err(
                        &format!("labels.{label}"),
                        "expected a value of at most 256 bytes".into(),
                    );
                }
            }
            validate_anomaly(sensor).map_err(|(k, m)| (at(&k), format!("sensor {name:?}: {m}")))?;
            if let Some(sim) = &sensor.simulation {
                if sensor.driver != Driver::Simulated {
                    return err(
                        "simulation",
                        "[sensor.simulation] applies only to driver = \"simulated\"".into(),
                    );
                }
                validate_simulation(sim).map_err(|(k, m)| {
                    (
                        at(&format!("simulation.{k}")),
                        format!("sensor {name:?}: {m}"),
                    )
                })?;
            }
        }
        Ok(())
    }
}

fn validate_anomaly(sensor: &SensorConfig) -> Result<(), (String, String)> {
    let a = &sensor.anomaly;
    let err = |k: &str, m: String| Err((format!("anomaly.{k}"), m));
    if let Some(w) = a.max_power_watts {
        if !(w.is_finite() && w > 0.0) {
            return err(
                "max_power_watts",
                format!("{w} is not a usable limit; expected watts above 0"),
            );
        }
    } else if a.max_power_for.is_some() {
        return err(
            "max_power_for",
            "max_power_for needs max_power_watts".into(),
        );
    }
    if let Some(d) = a.max_power_for {
        if d < sensor.interval {
            return err(
                "max_power_for",
                format!(
                    "{} is shorter than the sampling interval ({}); expected at least one interval",
                    humantime::format_duration(d),
                    humantime::format_duration(sensor.interval)
                ),
            );
        }
    }
    if let Some(b) = a.energy_budget {
        if !(b.kwh.is_finite() && b.kwh > 0.0) {
            return err(
                "energy_budget.kwh",
                format!("{} is not a usable budget; expected kWh above 0", b.kwh),
            );
        }
        if b.window < Duration::from_secs(60) || b.window < sensor.interval * 10 {
            return err(
                "energy_budget.window",
                "expected a window of at least 1m and at least 10 sampling intervals".into(),
            );
        }
        if b.window > Duration::from_secs(366 * 86_400) {
            return err(
                "energy_budget.window",
                "expected a window of at most a year".into(),
            );
        }
    }
    if let Some(k) = a.spike_sigma {
        if !(k.is_finite() && k >= 1.0) {
            return err(
                "spike_sigma",
                format!("{k} is not a usable threshold; expected 1 or more standard deviations"),
            );
        }
    }
    if let Some([low, high]) = a.allowed_bus_volts {
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low < high) {
            return err(
                "allowed_bus_volts",
                format!("[{low}, {high}] is not a voltage band; expected [low, high] with 0 <= low < high"),
            );
        }
        let top = f64::from(sensor.bus_voltage_range).min(MAX_BUS_INPUT_VOLTS);
        if high > top {
            return err(
                "allowed_bus_volts",
                format!(
                    "the upper bound {high} V is above what the bus input can read ({top} V with bus_voltage_range = {}); over_voltage could never trip",
                    sensor.bus_voltage_range
                ),
            );
        }
    } else if a.bus_volts_for.is_some() {
        return err(
            "bus_volts_for",
            "bus_volts_for needs allowed_bus_volts".into(),
        );
    }
    if let Some(h) = a.hysteresis {
        if !(0.0..0.5).contains(&h) {
            return err("hysteresis", format!("{h} is not a usable hysteresis; expected a fraction from 0 to below 0.5, e.g. 0.05"));
        }
    }
    Ok(())
}

fn validate_simulation(sim: &SimulationConfig) -> Result<(), (String, String)> {
    let err = |k: &str, m: String| Err((k.to_string(), m));
    if !(sim.supply_volts.is_finite()
        && sim.supply_volts > 0.0
        && sim.supply_volts <= MAX_BUS_INPUT_VOLTS)
    {
        return err(
            "supply_volts",
            format!("{} V is not a usable supply; expected above 0 and at most 26 V (the INA219 bus input limit)", sim.supply_volts),
        );
    }
    if !(sim.source_ohms.is_finite() && sim.source_ohms >= 0.0) {
        return err(
            "source_ohms",
            "expected a resistance of 0 or more ohms".into(),
        );
    }
    if !(0.0..=0.5).contains(&sim.noise) {
        return err(
            "noise",
            format!(
                "{} is not a usable noise level; expected a fraction from 0 to 0.5",
                sim.noise
            ),
        );
    }
    match sim.load {
        Some(LoadModel::Constant { watts }) if !watts.is_finite() => {
            return err("load.watts", "expected a finite number of watts".into());
        }
        Some(LoadModel::Uniform {
            min_watts,
            max_watts,
        }) if !(min_watts.is_finite()
            && max_watts.is_finite()
            && 0.0 <= min_watts
            && min_watts <= max_watts) =>
        {
            return err("load", format!("min_watts = {min_watts}, max_watts = {max_watts}; expected 0 <= min_watts <= max_watts"));
        }
        Some(
            LoadModel::AirConditioner { watts: Some(w) }
            | LoadModel::WashingMachine { watts: Some(w) }
            | LoadModel::Fridge { watts: Some(w) }
            | LoadModel::RaspberryPi { watts: Some(w) },
        ) if !(w.is_finite() && w > 0.0) => {
            return err(
                "load.watts",
                format!("{w} is not a usable rating; expected watts above 0"),
            );
        }
        _ => {}
    }
    for (i, fault) in sim.faults.iter().enumerate() {
        let key = |k: &str| format!("faults[{i}].{k}");
        match *fault {
            FaultConfig::Nack { rate, duration, .. }
            | FaultConfig::Timeout { rate, duration, .. } => {
                if !(0.0..=1.0).contains(&rate) {
                    return Err((
                        key("rate"),
                        format!("{rate} is not a probability; expected 0 to 1"),
                    ));
                }
                if duration == Some(Duration::ZERO) {
                    return Err((key("duration"), "expected a window longer than 0s".into()));
                }
            }
            FaultConfig::Disconnect { duration, .. }
            | FaultConfig::Hang { duration, .. }
            | FaultConfig::Stuck { duration, .. }
            | FaultConfig::Overload { duration, .. }
            | FaultConfig::Supply { duration, .. }
                if duration.is_zero() =>
            {
                return Err((key("duration"), "expected a window longer than 0s".into()));
            }
            FaultConfig::Overload { watts, .. } if !watts.is_finite() => {
                return Err((key("watts"), "expected a finite number of watts".into()));
            }
            FaultConfig::Supply { volts, .. }
                if !(volts.is_finite() && (0.0..=MAX_BUS_INPUT_VOLTS).contains(&volts)) =>
            {
                return Err((
                    key("volts"),
                    format!("{volts} V is outside 0 to 26 V, the INA219 bus input range"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `foo` from "... `foo` ..." after `marker`.
fn quoted_after<'a>(message: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &message[message.find(marker)? + marker.len()..];
    Some(&rest[..rest.find('`')?])
}

/// serde's messages, said the way a person editing a config file needs them.
fn explain_serde_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("required key {rest} is missing");
    }
    message.replace("u8", "an integer from 0 to 255")
}

/// For a syntax error, the key of the line it is on (`key = value` lines), if any.
fn key_on_line(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    match line.split_once('=') {
        Some((k, _)) if !k.trim_start().starts_with('[') && !k.trim().is_empty() => {
            k.trim().to_string()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("test.toml"), text)
    }

    /// Asserts the config is rejected at `line` for `key`, with `needle` in the message.
    #[track_caller]
    fn rejects(text: &str, line: usize, key: &str, needle: &str) {
        let err = load(text).expect_err("config should be rejected");
        let d = err.diagnostic().expect("a diagnostic");
        let shown = d.to_string();
        assert_eq!(d.line, line, "wrong line in:\n{shown}");
        assert_eq!(d.key, key, "wrong key in:\n{shown}");
        assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        assert!(shown.starts_with(&format!("test.toml:{line}:")), "{shown}");
        assert!(
            shown.contains(&format!("key `{key}`")) || key.is_empty(),
            "{shown}"
        );
    }

    const MINIMAL: &str = "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n";

    #[test]
    fn a_bare_simulated_sensor_is_valid_with_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.daemon.listen, vec!["0.0.0.0:9723".parse().unwrap()]);
        assert_eq!(c.daemon.persist_interval, Duration::from_secs(30));
        let s = &c.sensors[0];
        assert_eq!(s.bus, "virtual:a");
        assert_eq!(s.address, 0x40);
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.max_gap(), Duration::from_secs(5));
        assert!(s.anomaly.max_power_watts.is_none());
        let sim = s.simulation().unwrap();
        assert!(matches!(sim.load, Some(LoadModel::Uniform { .. })));
    }

    #[test]
    fn the_design_example_parses() {
        let c = load(
            r#"
[daemon]
listen = ["127.0.0.1:9723", "[::1]:9723"]
persist_interval = "30s"
log_level = "debug"

[[sensor]]
name = "battery"
driver = "ina219"
bus = "/dev/i2c-1"
address = 0x40
shunt_ohms = 0.1
max_current_amps = 3.2
bus_voltage_range = 32
adc = { bits = 12, samples = 16 }
interval = "1s"
labels = { room = "garage", circuit = "solar" }
[sensor.anomaly]
max_power_watts = 40.0
max_power_for = "30s"
energy_budget = { kwh = 12.0, window = "24h" }
spike_sigma = 4.0
allowed_bus_volts = [11.0, 14.6]
"#,
        )
        .unwrap();
        assert_eq!(c.daemon.listen.len(), 2);
        assert_eq!(c.daemon.log_level, LogLevel::Debug);
        let s = &c.sensors[0];
        assert_eq!(s.adc.conversion_time(), Some(Duration::from_micros(17_020)));
        assert_eq!(s.shunt_range(), ShuntVoltageRange::Fsr320mv);
        assert_eq!(s.labels["circuit"], "solar");
        assert_eq!(
            s.anomaly.energy_budget.unwrap().window,
            Duration::from_secs(86_400)
        );
        assert!(s.simulation().is_none());
    }

    #[test]
    fn pga_range_follows_the_shunt() {
        let c = load("[[sensor]]\nname = \"a\"\nshunt_ohms = 0.000375\nmax_current_amps = 200.0\n")
            .unwrap();
        // 200 A × 0.375 mΩ = 75 mV → the ±80 mV range.
        assert_eq!(c.sensors[0].shunt_range(), ShuntVoltageRange::Fsr80mv);
    }

    // Twelve and more distinct bad files, each naming line and key.

    #[test]
    fn rejects_unknown_key() {
        rejects(
            "[[sensor]]\nname = \"a\"\nshunt_ohm = 0.1\n",
            3,
            "sensor[0].shunt_ohm",
            "unknown key `shunt_ohm`",
        );
    }

    #[test]
    fn rejects_unknown_daemon_key() {
        rejects(
            "[daemon]\nport = 9100\n[[sensor]]\nname = \"a\"\n",
            2,
            "daemon.port",
            "unknown key `port`",
        );
    }

    #[test]
    fn rejects_missing_name() {
        rejects(
            "[[sensor]]\ndriver = \"simulated\"\n",
            1,
            "sensor[0].name",
            "required key `name` is missing",
        );
    }

    #[test]
    fn rejects_bad_duration() {
        rejects(
            "[[sensor]]\nname = \"a\"\ninterval = \"1x\"\n",
            3,
            "sensor[0].interval",
            "unknown time unit",
        );
    }

    #[test]
    fn rejects_wrong_type() {
        rejects(
            "[[sensor]]\nname = \"a\"\nshunt_ohms = \"0.1\"\n",
            3,
            "sensor[0].shunt_ohms",
            "expected f64",
        );
    }

    #[test]
    fn rejects_unknown_driver() {
        rejects(
            "[[sensor]]\nname = \"a\"\ndriver = \"ina226\"\n",
            3,
            "sensor[0].driver",
            "ina219",
        );
    }

    #[test]
    fn rejects_duplicate_names() {
        rejects(
            "[[sensor]]\nname = \"a\"\naddress = 0x40\n\n[[sensor]]\nname = \"a\"\naddress = 0x41\n",
            6,
            "sensor[1].name",
            "already used by sensor[0]",
        );
    }

    #[test]
    fn rejects_duplicate_address_on_one_bus() {
        rejects(
            "[[sensor]]\nname = \"a\"\naddress = 0x41\n[[sensor]]\nname = \"b\"\naddress = 0x41\n",
            6,
            "sensor[1].address",
            "0x41 on bus /dev/i2c-1 is already used",
        );
    }

    #[test]
    fn same_address_on_two_buses_is_fine() {
        load("[[sensor]]\nname = \"a\"\n[[sensor]]\nname = \"b\"\nbus = \"/dev/i2c-3\"\n").unwrap();
    }

    #[test]
    fn rejects_address_out_of_range() {
        rejects(
            "[[sensor]]\nname = \"a\"\naddress = 0x50\n",
            3,
            "sensor[0].address",
            "expected 0x40 to 0x4F",
        );
    }

    #[test]
    fn rejects_zero_shunt() {
        rejects(
            "[[sensor]]\nname = \"a\"\nshunt_ohms = 0.0\n",
            3,
            "sensor[0].shunt_ohms",
            "expected a positive number of ohms",
        );
    }

    #[test]
    fn rejects_current_beyond_the_shunt_range() {
        rejects(
            "[[sensor]]\nname = \"a\"\nshunt_ohms = 0.1\nmax_current_amps = 5.0\n",
            4,
            "sensor[0].max_current_amps",
            "beyond the INA219's ±320 mV",
        );
    }

    #[test]
    fn rejects_interval_shorter_than_conversion() {
        rejects(
            "[[sensor]]\nname = \"a\"\nadc = { bits = 12, samples = 128 }\ninterval = \"100ms\"\n",
            4,
            "sensor[0].interval",
            "shorter than one conversion with this ADC setting (136ms 200us)",
        );
    }

    #[test]
    fn rejects_averaging_below_twelve_bits() {
        rejects(
            "[[sensor]]\nname = \"a\"\nadc = { bits = 10, samples = 4 }\n",
            3,
            "sensor[0].adc",
            "not an ADC mode",
        );
    }

    #[test]
    fn rejects_bad_bus_range() {
        rejects(
            "[[sensor]]\nname = \"a\"\nbus_voltage_range = 24\n",
            3,
            "sensor[0].bus_voltage_range",
            "expected 16 or 32",
        );
    }

    #[test]
    fn rejects_bad_sensor_name() {
        rejects(
            "[[sensor]]\nname = \"Fridge-1\"\n",
            2,
            "sensor[0].name",
            "a-z, 0-9 and _",
        );
    }

    #[test]
    fn rejects_inverted_voltage_band() {
        rejects(
            "[[sensor]]\nname = \"a\"\n[sensor.anomaly]\nallowed_bus_volts = [14.6, 11.0]\n",
            4,
            "sensor[0].anomaly.allowed_bus_volts",
            "0 <= low < high",
        );
    }

    #[test]
    fn rejects_voltage_band_beyond_the_bus_range() {
        rejects(
            "[[sensor]]\nname = \"a\"\nbus_voltage_range = 16\n[sensor.anomaly]\nallowed_bus_volts = [11.0, 20.0]\n",
            5,
            "sensor[0].anomaly.allowed_bus_volts",
            "over_voltage could never trip",
        );
    }

    #[test]
    fn rejects_a_budget_window_that_makes_no_sense() {
        rejects(
            "[[sensor]]\nname = \"a\"\n[sensor.anomaly]\nenergy_budget = { kwh = 12.0, window = \"5s\" }\n",
            4,
            "sensor[0].anomaly.energy_budget.window",
            "at least 1m",
        );
    }

    #[test]
    fn rejects_max_power_for_without_a_limit() {
        rejects(
            "[[sensor]]\nname = \"a\"\n[sensor.anomaly]\nmax_power_for = \"10s\"\n",
            4,
            "sensor[0].anomaly.max_power_for",
            "needs max_power_watts",
        );
    }

    #[test]
    fn rejects_simulation_on_real_hardware() {
        rejects(
            "[[sensor]]\nname = \"a\"\n[sensor.simulation]\nnoise = 0.01\n",
            3,
            "sensor[0].simulation",
            "applies only to driver = \"simulated\"",
        );
    }

    #[test]
    fn rejects_unknown_load_model() {
        let err = load("[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[sensor.simulation]\nload = { model = \"heater\" }\n")
            .unwrap_err();
        let d = err.diagnostic().unwrap();
        assert_eq!(d.line, 5);
        assert_eq!(d.key, "sensor[0].simulation.load.model");
        assert!(d.message.contains("heater"), "{d}");
    }

    #[test]
    fn rejects_bad_fault_rate() {
        rejects(
            "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[sensor.simulation]\nfaults = [\n  { kind = \"nack\", rate = 2.0 },\n]\n",
            6,
            "sensor[0].simulation.faults[0].rate",
            "expected 0 to 1",
        );
    }

    #[test]
    fn rejects_a_persist_interval_beyond_an_hour() {
        rejects(
            "[daemon]\npersist_interval = \"18446744073709551615s\"\n[[sensor]]\nname = \"a\"\n",
            2,
            "daemon.persist_interval",
            "expected 1s to 1h",
        );
    }

    #[test]
    fn rejects_bad_listen_address() {
        rejects(
            "[daemon]\nlisten = \"localhost\"\n[[sensor]]\nname = \"a\"\n",
            2,
            "daemon.listen",
            "expected IP:PORT",
        );
    }

    #[test]
    fn rejects_reserved_label() {
        rejects(
            "[[sensor]]\nname = \"a\"\nlabels = { sensor = \"x\" }\n",
            3,
            "sensor[0].labels.sensor",
            "set by power-monitord itself",
        );
    }

    #[test]
    fn rejects_mixed_bus() {
        rejects(
            "[[sensor]]\nname = \"a\"\nbus = \"/dev/i2c-1\"\n[[sensor]]\nname = \"b\"\ndriver = \"simulated\"\nbus = \"/dev/i2c-1\"\naddress = 0x41\n",
            7,
            "sensor[1].bus",
            "a bus is either real or simulated",
        );
    }

    #[test]
    fn rejects_no_sensors() {
        rejects(
            "[daemon]\nlog_level = \"info\"\n",
            1,
            "sensor",
            "no [[sensor]] is configured",
        );
    }

    #[test]
    fn rejects_syntax_error_naming_the_key() {
        rejects(
            "[[sensor]]\nname = \"a\"\ninterval = 1s\n",
            3,
            "interval",
            "TOML syntax error",
        );
    }

    #[test]
    fn diagnostic_points_at_the_value() {
        let err = load("[[sensor]]\nname = \"a\"\naddress   = 0x50\n").unwrap_err();
        let d = err.diagnostic().unwrap();
        assert_eq!((d.line, d.column), (3, 13));
        assert!(d.to_string().ends_with("  |             ^^^^"), "{d}");
    }
}
