//! Sensors: what a reading is, how reading one fails, and how the sensors of one bus are built.
//!
//! A sensor is a chip of the INA2xx family ([`ina219`], [`ina226`] for the INA226 and INA260,
//! [`ina3221`]) read through its driver and the recovery ladder every chip shares
//! ([`ladder`]); [`family`] holds what the chips share (IDs, the configuration layout, the
//! one way to identify and program them). What differs is the bus under it: a Linux
//! `/dev/i2c-N` ([`linux`]) or a virtual bus carrying virtual chips ([`simulated`]), read
//! through the same code. [`scan`] finds the chips on a bus.

pub(crate) mod family;
pub(crate) mod ina219;
pub(crate) mod ina226;
pub(crate) mod ina3221;
pub(crate) mod ladder;
pub mod linux;
pub mod scan;
pub mod simulated;
#[cfg(test)]
mod transcript;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use embedded_hal::i2c::I2c;

pub(crate) use self::ladder::Events;
use self::ladder::{ChipDriver, Recovering};
use crate::config::calibration::Trim;
use crate::config::{Channel, ChipSetup, Config, Driver, SensorConfig};

/// One measurement, in SI units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Voltage from IN- to ground: the voltage at the load.
    pub bus_voltage_volts: f64,
    /// Voltage across the shunt, IN+ minus IN-.
    pub shunt_voltage_volts: f64,
    /// Shunt voltage over shunt resistance; negative when current flows backwards.
    pub current_amperes: f64,
    /// Bus voltage times current.
    pub power_watts: f64,
    /// Beyond the configured range: the chip's OVF flag (its current/power arithmetic, sized by
    /// `max_current_amps`, overflowed) or a shunt voltage at the PGA's full scale. When the
    /// shunt saturated, current and power are unknown and are NaN; when only the chip's
    /// arithmetic overflowed, the values computed from the shunt voltage are still right.
    pub overflow: bool,
}

impl Reading {
    /// A reading from the voltages and the current; power is their product. With the shunt
    /// `saturated`, current and power are unknown (NaN) and the reading is an overflow, as it
    /// is with the chip's own `ovf` flag.
    pub(crate) fn measured(
        bus_voltage_volts: f64,
        shunt_voltage_volts: f64,
        current_amperes: f64,
        saturated: bool,
        ovf: bool,
    ) -> Reading {
        let (current_amperes, power_watts) = if saturated {
            (f64::NAN, f64::NAN)
        } else {
            (current_amperes, current_amperes * bus_voltage_volts)
        };
        Reading {
            bus_voltage_volts,
            shunt_voltage_volts,
            current_amperes,
            power_watts,
            overflow: ovf || saturated,
        }
    }
}

impl Reading {
    /// The reading corrected by a sensor's trims ([`Trim`]): current and bus voltage, and
    /// power as their product; the shunt voltage is what the chip measured.
    pub(crate) fn trimmed(self, trim: &Trim) -> Reading {
        let bus_voltage_volts = trim.voltage(self.bus_voltage_volts);
        let current_amperes = trim.current(self.current_amperes);
        Reading {
            bus_voltage_volts,
            current_amperes,
            power_watts: current_amperes * bus_voltage_volts,
            ..self
        }
    }
}

/// A sensor whose readings are corrected by its trims.
struct Trimmed {
    sensor: Box<dyn Sensor>,
    trim: Trim,
}

impl Sensor for Trimmed {
    fn read(&mut self) -> Result<Reading, SensorError> {
        self.sensor.read().map(|r| r.trimmed(&self.trim))
    }

    fn take_events(&mut self) -> Events {
        self.sensor.take_events()
    }
}

/// What kind of failure a read was; the `kind` label of `powermon_read_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The chip did not acknowledge (EREMOTEIO/ENXIO on Linux): absent, unpowered or miswired.
    Nack,
    /// The transfer timed out (ETIMEDOUT): a stuck bus or clock stretching gone wrong.
    Timeout,
    /// Any other bus-level failure (EIO, arbitration loss, …).
    I2c,
    /// The bus device could not be opened (missing `/dev/i2c-N`, permissions).
    Unavailable,
    /// The chip answered with something a chip of the family would not say.
    Invalid,
    /// The OVF flag: current/power out of range.
    Overflow,
    /// No new conversion since the last read: the ADC is not converting.
    Stale,
}

impl ErrorKind {
    /// Every kind, in label order of the metrics.
    pub(crate) const ALL: [ErrorKind; 7] = [
        ErrorKind::Nack,
        ErrorKind::Timeout,
        ErrorKind::I2c,
        ErrorKind::Unavailable,
        ErrorKind::Invalid,
        ErrorKind::Overflow,
        ErrorKind::Stale,
    ];

    /// The `kind` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Nack => "nack",
            ErrorKind::Timeout => "timeout",
            ErrorKind::I2c => "i2c",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Stale => "stale",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed read. Data, not a panic: it becomes a counter, `sensor_up 0` and one log line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SensorError {
    /// The bus transfer failed.
    #[error("{kind} error on the I2C bus: {detail}")]
    Bus {
        /// How it failed.
        kind: ErrorKind,
        /// The bus's own words, with a hint.
        detail: String,
        /// A few words for `systemctl status`.
        summary: String,
    },
    /// The chip has not finished a conversion since the last read (its conversion-ready flag,
    /// CNVR or CVRF, is clear).
    #[error("no new conversion since the last read (the conversion-ready flag is clear)")]
    NotReady,
    /// The chip answered, but not as the chip we configured would.
    #[error("unexpected answer from the chip: {0}")]
    Invalid(String),
}

impl SensorError {
    /// A few words of why, for `systemctl status`.
    pub(crate) fn summary(&self) -> String {
        match self {
            SensorError::Bus { summary, .. } => summary.clone(),
            SensorError::NotReady => "no new conversion".into(),
            SensorError::Invalid(_) => "unexpected answer (brown-out?)".into(),
        }
    }

    /// The `kind` label this failure counts under.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            SensorError::Bus { kind, .. } => *kind,
            SensorError::NotReady => ErrorKind::Stale,
            SensorError::Invalid(_) => ErrorKind::Invalid,
        }
    }
}

/// Sorts a bus error into an [`ErrorKind`]; implemented by every bus the daemon drives.
pub trait ClassifyError: fmt::Debug + fmt::Display {
    /// The kind of failure.
    fn error_kind(&self) -> ErrorKind;

    /// A few words of what to do, for `systemctl status`.
    fn summary(&self) -> String {
        self.error_kind().as_str().to_string()
    }
}

impl ClassifyError for embedded_hal::i2c::ErrorKind {
    fn error_kind(&self) -> ErrorKind {
        match self {
            embedded_hal::i2c::ErrorKind::NoAcknowledge(_) => ErrorKind::Nack,
            _ => ErrorKind::I2c,
        }
    }
}

/// Anything that yields readings.
pub trait Sensor {
    /// Take one reading. Blocking: call it from the bus's own thread.
    fn read(&mut self) -> Result<Reading, SensorError>;

    /// What happened on the bus since the last call: failed transfers, retries,
    /// reprogramming.
    fn take_events(&mut self) -> Events;
}

/// A single-channel chip as a sensor.
struct ChipSensor<D, I2C>(Recovering<D, I2C>);

impl<D, I2C> Sensor for ChipSensor<D, I2C>
where
    D: ChipDriver,
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    fn read(&mut self) -> Result<Reading, SensorError> {
        self.0.read(0)
    }

    fn take_events(&mut self) -> Events {
        self.0.take_events()
    }
}

/// One channel of an INA3221, sharing the chip with its other channels.
struct ChannelSensor<I2C> {
    chip: Rc<RefCell<Recovering<ina3221::Ina3221, I2C>>>,
    channel: u8,
}

impl<I2C> Sensor for ChannelSensor<I2C>
where
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    fn read(&mut self) -> Result<Reading, SensorError> {
        self.chip.borrow_mut().read(self.channel)
    }

    fn take_events(&mut self) -> Events {
        self.chip.borrow_mut().take_events()
    }
}

/// The sensors of one bus, in the order given, taking turns on it; each with the driver of
/// its chip.
pub fn sensors_on<I2C>(bus: I2C, sensors: &[SensorConfig]) -> Vec<Box<dyn Sensor>>
where
    I2C: I2c + 'static,
    I2C::Error: ClassifyError,
{
    let bus = Rc::new(RefCell::new(bus));
    let mut ina3221s: BTreeMap<u8, Rc<RefCell<Recovering<ina3221::Ina3221, I2C>>>> =
        BTreeMap::new();
    sensors
        .iter()
        .map(|s| -> Box<dyn Sensor> {
            let shared = Rc::clone(&bus);
            let ina226 = |settings| {
                Box::new(ChipSensor(Recovering::new(
                    ina226::Ina226::new(settings),
                    Rc::clone(&bus),
                    s.address,
                )))
            };
            match *s.setup() {
                ChipSetup::Ina219(setup) => Box::new(ChipSensor(Recovering::new(
                    ina219::Ina219::new(ina219::ChipSettings::new(s, setup)),
                    shared,
                    s.address,
                ))),
                ChipSetup::Ina226(adc) => ina226(ina226::Settings::ina226(s, adc)),
                ChipSetup::Ina260(adc) => ina226(ina226::Settings::ina260(s, adc)),
                ChipSetup::Ina3221(adc, channel) => {
                    let chip = ina3221s.entry(s.address).or_insert_with(|| {
                        let settings = ina3221::Settings::new(adc, &ina3221_channels(sensors, s));
                        Rc::new(RefCell::new(Recovering::new(
                            ina3221::Ina3221::new(settings),
                            shared,
                            s.address,
                        )))
                    });
                    Box::new(ChannelSensor {
                        chip: Rc::clone(chip),
                        channel: channel.number(),
                    })
                }
            }
        })
        .zip(sensors)
        .map(|(sensor, s)| -> Box<dyn Sensor> {
            if s.calibration.is_none() {
                sensor
            } else {
                Box::new(Trimmed {
                    sensor,
                    trim: s.calibration,
                })
            }
        })
        .collect()
}

/// The sensors of one bus, in the order given, sharing that bus in turn.
///
/// Built on the thread that will drive them: the shared bus handle is not `Send`. A simulated
/// bus runs on real time.
pub(crate) fn open_bus(sensors: &[SensorConfig]) -> Vec<Box<dyn Sensor>> {
    let Some(first) = sensors.first() else {
        return Vec::new();
    };
    match first.driver {
        Driver::Simulated => simulated::open_bus(sensors, &simulated::Clock::real()),
        _ => linux::open_bus(&first.bus, sensors),
    }
}

/// A number for people: at most four decimals, no trailing zeros (0.8192, 50, 1.6384).
pub(crate) fn short(x: f64) -> String {
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// The channels of the INA3221 of `sensor` among `sensors` (those of one bus), with their
/// shunts.
fn ina3221_channels(sensors: &[SensorConfig], sensor: &SensorConfig) -> Vec<(Channel, f64)> {
    sensors
        .iter()
        .filter(|o| o.bus == sensor.bus && o.address == sensor.address)
        .filter_map(|o| Some((o.channel()?, o.shunt_ohms())))
        .collect()
}

/// What the chip of `sensor` is programmed with, in words (`check-config`); `config` holds
/// the other channels of an INA3221.
pub(crate) fn describe_programming(sensor: &SensorConfig, config: &Config) -> String {
    match *sensor.setup() {
        ChipSetup::Ina219(setup) => ina219::ChipSettings::new(sensor, setup).describe(sensor),
        ChipSetup::Ina226(adc) => ina226::Settings::ina226(sensor, adc).describe(sensor),
        ChipSetup::Ina260(adc) => ina226::Settings::ina260(sensor, adc).describe(sensor),
        ChipSetup::Ina3221(adc, _) => {
            ina3221::Settings::new(adc, &ina3221_channels(&config.sensors, sensor)).describe(sensor)
        }
    }
}

/// Scan `bus` for the chips of the family: a simulated bus of `config`, or a device node
/// `/dev/…`. Returns whether the bus is simulated, and what answered.
pub fn scan_bus(
    bus: &str,
    config: Option<&Config>,
) -> Result<(bool, Vec<(u8, scan::Found)>), scan::ScanError> {
    let simulated: Vec<SensorConfig> = config
        .map(|c| {
            c.sensors
                .iter()
                .filter(|s| s.driver == Driver::Simulated && s.bus == bus)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if !simulated.is_empty() {
        let mut virtual_bus = simulated::virtual_bus(&simulated, &simulated::Clock::real());
        return Ok((true, scan::scan(&mut virtual_bus)?));
    }
    if let (false, Some(config)) = (bus.starts_with("/dev/"), config) {
        let names: std::collections::BTreeSet<String> = config
            .sensors
            .iter()
            .filter(|s| s.driver == Driver::Simulated)
            .map(|s| s.bus.clone())
            .collect();
        return Err(scan::ScanError::UnknownBus {
            bus: bus.to_string(),
            config: config.path.clone(),
            simulated: names.into_iter().collect(),
        });
    }
    let mut linux = linux::LinuxBus::new(bus);
    linux.open().map_err(|e| scan::ScanError::Unavailable {
        detail: e.to_string(),
    })?;
    Ok((false, scan::scan(&mut linux)?))
}
