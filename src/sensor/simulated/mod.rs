//! The simulator: virtual INA219, INA226, INA260 and INA3221 chips on a virtual I2C bus.
//!
//! [`VirtualBus`] implements `embedded_hal::i2c::I2c`, so the daemon reads a simulated sensor
//! with the very driver code that reads real hardware: reset, identification, calibration,
//! configuration, the conversion-ready flags, overflow and brown-outs all go through the
//! driver and the chip model, register by register.

pub(crate) mod clock;
mod faults;
pub mod house;
mod ina219;
mod ina226;
mod ina3221;
mod load;

use std::fmt;
use std::time::Duration;

use embedded_hal::i2c::{ErrorType, I2c, NoAcknowledgeSource, Operation};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use self::clock::{Clock, ManualTime};
pub(crate) use self::faults::FaultSchedule;
use self::house::{House, SharedHouse};
pub(crate) use self::ina219::VirtualIna219;
pub(crate) use self::ina226::VirtualIna226;
pub(crate) use self::ina3221::VirtualIna3221;
pub(crate) use self::load::Load;
use super::{family, sensors_on, ClassifyError, ErrorKind, Sensor};
use crate::config::{Chip, SensorConfig, SimulationConfig};

/// Where a chip's register pointer is, and its conversions: when the running cycle began
/// (a configuration write, a reset) and when the last conversion completed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Cycle {
    /// The register the next read returns.
    pub(crate) pointer: u8,
    /// When the conversions (re)started.
    pub(crate) start: Duration,
    /// When the last conversion completed.
    pub(crate) last: Option<Duration>,
}

impl Cycle {
    /// Conversions restart at `t`: a configuration write, a reset.
    pub(crate) fn restart(&mut self, t: Duration) {
        self.start = t;
        self.last = None;
    }
}

/// A chip model on the virtual bus. Each chip says what makes it itself: its registers, its
/// conversions, its power-on values. The I2C side is the same for every chip of the family
/// and follows from those ([`VirtualChip::advance`], [`write`](VirtualChip::write),
/// [`read`](VirtualChip::read)): a one-byte write sets the register pointer and a three-byte
/// one writes the register (RST in the configuration resets the chip, any other
/// configuration write restarts its conversions), a read returns the register the pointer
/// selects, MSB first.
pub(crate) trait VirtualChip: Send {
    /// Its scheduled faults: the bus asks them about each transfer.
    fn faults(&mut self) -> &mut FaultSchedule;
    /// Its register pointer and conversion cycle.
    fn cycle(&mut self) -> &mut Cycle;
    /// Every register back to its power-on value at `t` (RST, or power lost).
    fn reset(&mut self, t: Duration);
    /// When the latest conversion due by `t` completed, if one is due.
    fn due(&self, t: Duration) -> Option<Duration>;
    /// Complete a conversion of what the inputs see at `t`.
    fn convert(&mut self, t: Duration);
    /// A register's word as a read returns it; `None` for a register the chip lacks.
    fn word(&self, register: u8) -> Option<u16>;
    /// A write of `word` to a register other than a reset, as the chip keeps it; true when
    /// it restarts the conversions (a configuration write).
    fn store(&mut self, register: u8, word: u16) -> bool;
    /// A read of `register` happened (some clear a flag by being read).
    fn was_read(&mut self, register: u8);

    /// Bring the chip up to time `t`: brown-outs, and a conversion if one is due.
    fn advance(&mut self, t: Duration) {
        if self.faults().take_brownout(t) {
            self.reset(t);
        }
        if let Some(at) = self.due(t) {
            if !self.faults().stuck(t) {
                self.convert(at);
            }
        }
    }

    /// An I2C write: the register pointer, then the value if there is one.
    fn write(&mut self, bytes: &[u8], t: Duration) {
        let Some((&pointer, value)) = bytes.split_first() else {
            return;
        };
        self.cycle().pointer = pointer;
        let [hi, lo, ..] = value else { return };
        let word = u16::from_be_bytes([*hi, *lo]);
        if pointer == family::REG_CONFIG && word & family::CONFIG_RST != 0 {
            self.reset(t);
        } else if self.store(pointer, word) {
            self.cycle().restart(t);
        }
    }

    /// An I2C read of the register the pointer selects, MSB first, repeated for longer
    /// reads.
    fn read(&mut self, buf: &mut [u8], _t: Duration) {
        let pointer = self.cycle().pointer;
        let word = self.word(pointer).unwrap_or(0).to_be_bytes();
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte = word[i % 2];
        }
        self.was_read(pointer);
    }

    #[cfg(test)]
    /// A register as it is now (tests and diagnostics; reading it this way changes nothing).
    fn register(&self, register: u8) -> Option<u16> {
        self.word(register)
    }
}

/// The latest moment by `t` at which one of the conversions running back to back every
/// `period` since `start` completed, if that is later than `last`: real chips convert on
/// their own schedule, so a conversion can complete between two reads of one sample.
pub(crate) fn completed_conversion(
    start: Duration,
    period: Duration,
    last: Option<Duration>,
    t: Duration,
) -> Option<Duration> {
    let period_ns = period.as_nanos();
    if period_ns == 0 || t < start + period {
        return None;
    }
    let n = (t - start).as_nanos() / period_ns;
    let at = start + Duration::from_nanos(u64::try_from(n * period_ns).unwrap_or(u64::MAX));
    last.is_none_or(|l| at > l).then_some(at)
}

/// What the chip's inputs see at a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Signal {
    /// Voltage at IN- (the load side).
    pub(crate) bus_volts: f64,
    /// Current through the shunt.
    pub(crate) current_amps: f64,
}

/// Where a virtual chip's signal comes from.
enum Source {
    /// Its own load on its own supply.
    Own { load: Box<Load>, supply_volts: f64 },
    /// A load of the bus's house, on the battery's terminals.
    HouseLoad { house: SharedHouse, index: usize },
    /// The house's battery itself.
    Battery { house: SharedHouse },
}

/// A load on a supply, with noise and faults: what one virtual chip measures.
pub(crate) struct Simulation {
    source: Source,
    source_ohms: f64,
    /// The amplifier's offset as the current it stands for through the chip's real shunt.
    offset_amps: f64,
    bus_gain: f64,
    noise: f64,
    faults: FaultSchedule,
    rng: StdRng,
}

impl Simulation {
    /// A simulation of `config`; `seed` (unless the config has one) seeds its randomness.
    pub(crate) fn new(config: &SimulationConfig, seed: u64) -> Simulation {
        let seed = config.seed.unwrap_or(seed);
        Simulation::with_source(
            config,
            seed,
            Source::Own {
                load: Box::new(load_of(config, seed)),
                supply_volts: config.supply_volts(),
            },
        )
    }

    fn with_source(config: &SimulationConfig, seed: u64, source: Source) -> Simulation {
        Simulation {
            source,
            source_ohms: config.source_ohms,
            offset_amps: 0.0,
            bus_gain: config.bus_gain,
            noise: config.noise,
            faults: FaultSchedule::new(&config.faults, seed),
            rng: StdRng::seed_from_u64(seed ^ 0x0015_e0e5),
        }
    }

    /// The chip's inputs behind a shunt of `shunt_ohms` with this amplifier offset: the
    /// offset reads as this much more current.
    fn with_offset(mut self, offset_volts: f64, shunt_ohms: f64) -> Simulation {
        self.offset_amps = offset_volts / shunt_ohms;
        self
    }

    /// Bus voltage and current at `t`, as the chip's inputs (with its offset and bus gain)
    /// see them.
    pub(crate) fn signal(&mut self, t: Duration) -> Signal {
        let truth = self.true_signal(t);
        Signal {
            bus_volts: truth.bus_volts * self.bus_gain,
            current_amps: truth.current_amps + self.offset_amps,
        }
    }

    /// Bus voltage and current at `t`.
    fn true_signal(&mut self, t: Duration) -> Signal {
        let (supply, mut watts) = match &mut self.source {
            Source::Own { load, supply_volts } => (*supply_volts, load.watts(t.as_secs_f64())),
            Source::HouseLoad { house, index } => house::lock(house).load(*index, t),
            Source::Battery { house } => {
                let (volts, amps) = house::lock(house).battery(t);
                let noise = if self.noise > 0.0 {
                    1.0 + self.rng.random_range(-self.noise..=self.noise)
                } else {
                    1.0
                };
                return Signal {
                    bus_volts: volts,
                    current_amps: amps * noise,
                };
            }
        };
        if let Some(overload) = self.faults.overload_watts(t) {
            watts = overload;
        }
        if self.noise > 0.0 {
            watts *= 1.0 + self.rng.random_range(-self.noise..=self.noise);
        }
        let supply = self.faults.supply_volts(t).unwrap_or(supply);
        let current_amps = current_for(watts, supply, self.source_ohms);
        Signal {
            bus_volts: supply - current_amps * self.source_ohms,
            current_amps,
        }
    }
}

/// The load model of a simulation config.
fn load_of(config: &SimulationConfig, seed: u64) -> Load {
    let fallback = crate::config::LoadModel::Constant { watts: 0.0 };
    Load::new(config.load.as_ref().unwrap_or(&fallback), seed)
}

/// The current that delivers `watts` to a load fed from `supply_volts` through `source_ohms`:
/// P = (Vs − I·Rs)·I, the smaller root. Beyond the supply's maximum power transfer the
/// current stops at Vs / 2Rs.
fn current_for(watts: f64, supply_volts: f64, source_ohms: f64) -> f64 {
    if supply_volts <= 0.0 {
        return 0.0;
    }
    if source_ohms <= 0.0 {
        return watts / supply_volts;
    }
    let discriminant = supply_volts * supply_volts - 4.0 * source_ohms * watts;
    (supply_volts - discriminant.max(0.0).sqrt()) / (2.0 * source_ohms)
}

/// How a transfer on the virtual bus failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualI2cError {
    /// No chip acknowledged the address.
    Nack,
    /// The transfer timed out.
    Timeout,
}

impl fmt::Display for VirtualI2cError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VirtualI2cError::Nack => "no acknowledge from the chip (virtual bus)",
            VirtualI2cError::Timeout => "transfer timed out (virtual bus)",
        })
    }
}

impl embedded_hal::i2c::Error for VirtualI2cError {
    fn kind(&self) -> embedded_hal::i2c::ErrorKind {
        match self {
            VirtualI2cError::Nack => {
                embedded_hal::i2c::ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
            }
            VirtualI2cError::Timeout => embedded_hal::i2c::ErrorKind::Other,
        }
    }
}

impl ClassifyError for VirtualI2cError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            VirtualI2cError::Nack => ErrorKind::Nack,
            VirtualI2cError::Timeout => ErrorKind::Timeout,
        }
    }
}

/// A virtual I2C bus with virtual chips on it.
pub struct VirtualBus {
    chips: Vec<(u8, Box<dyn VirtualChip>)>,
    clock: Clock,
    house: Option<SharedHouse>,
}

impl VirtualBus {
    /// An empty bus on `clock`.
    pub(crate) fn new(clock: Clock) -> VirtualBus {
        VirtualBus {
            chips: Vec::new(),
            clock,
            house: None,
        }
    }

    /// The house of the bus's simulated battery, if it has one: its true state of charge.
    pub fn house(&self) -> Option<SharedHouse> {
        self.house.clone()
    }

    /// Put a chip at `address`.
    pub(crate) fn attach(&mut self, address: u8, chip: Box<dyn VirtualChip>) {
        self.chips.retain(|(a, _)| *a != address);
        self.chips.push((address, chip));
    }

    #[cfg(test)]
    /// A register of the chip at `address`, as it is now.
    pub(crate) fn register(&self, address: u8, register: u8) -> Option<u16> {
        self.chips
            .iter()
            .find(|(a, _)| *a == address)
            .and_then(|(_, c)| c.register(register))
    }
}

impl ErrorType for VirtualBus {
    type Error = VirtualI2cError;
}

impl I2c for VirtualBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let t = self.clock.now();
        let chip = self
            .chips
            .iter_mut()
            .find(|(a, _)| *a == address)
            .map(|(_, c)| c)
            .ok_or(VirtualI2cError::Nack)?;
        if let Some(until) = chip.faults().hang_until(t) {
            // The whole bus is held up, as a chip holding SDA low would hold it.
            std::thread::sleep(until.saturating_sub(t));
            return Err(VirtualI2cError::Timeout);
        }
        if let Some(e) = chip.faults().transfer_error(t) {
            return Err(e);
        }
        chip.advance(t);
        for op in operations {
            match op {
                Operation::Write(bytes) => chip.write(bytes, t),
                Operation::Read(buf) => chip.read(buf, t),
            }
        }
        Ok(())
    }
}

/// A seed that differs per sensor and stays the same from run to run (FNV-1a of the name).
pub(crate) fn seed_for(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The house of a bus with a simulated battery: the battery, and the loads of the sensors
/// drawing from it, in config order.
fn house_of(sensors: &[SensorConfig]) -> Option<(SharedHouse, Vec<&str>)> {
    let (battery_sensor, battery) = sensors
        .iter()
        .find_map(|s| Some((s, s.simulation()?.battery?)))?;
    let members: Vec<&SensorConfig> = sensors
        .iter()
        .filter(|s| s.simulation().is_some_and(|x| x.from_battery))
        .collect();
    let loads = members
        .iter()
        .map(|s| {
            let config = simulation_config(s);
            load_of(&config, config.seed.unwrap_or_else(|| seed_for(&s.name)))
        })
        .collect();
    let day_offset = battery
        .time_of_day
        .map_or_else(crate::time::local_time_of_day, |t| t.0);
    let house = House::new(battery, loads, seed_for(&battery_sensor.name), day_offset);
    let names = members.iter().map(|s| s.name.as_str()).collect();
    Some((std::sync::Arc::new(std::sync::Mutex::new(house)), names))
}

/// What a sensor simulates: its `[sensor.simulation]`; the default load for a sensor of
/// another driver that a test puts on a virtual bus.
fn simulation_config(s: &SensorConfig) -> SimulationConfig {
    s.simulation()
        .cloned()
        .unwrap_or_else(|| SimulationConfig::default_for(s.max_current_amps()))
}

/// The simulation of a sensor, seeded by its name; a part of `house` if it is one.
fn simulation_of(s: &SensorConfig, house: Option<&(SharedHouse, Vec<&str>)>) -> Simulation {
    let config = simulation_config(s);
    let offset = config.shunt_offset_volts;
    simulation_source(s, house, &config).with_offset(offset, true_shunt_ohms(s))
}

/// The shunt a simulated sensor's virtual chip really has.
fn true_shunt_ohms(s: &SensorConfig) -> f64 {
    simulation_config(s).shunt_ohms.unwrap_or(s.shunt_ohms())
}

fn simulation_source(
    s: &SensorConfig,
    house: Option<&(SharedHouse, Vec<&str>)>,
    config: &SimulationConfig,
) -> Simulation {
    let config = config.clone();
    let seed = config.seed.unwrap_or_else(|| seed_for(&s.name));
    let source = match house {
        Some((house, _)) if config.battery.is_some() => Source::Battery {
            house: std::sync::Arc::clone(house),
        },
        Some((house, names)) if config.from_battery => Source::HouseLoad {
            house: std::sync::Arc::clone(house),
            index: names
                .iter()
                .position(|n| *n == s.name)
                .unwrap_or(usize::MAX),
        },
        _ => return Simulation::new(&config, seed),
    };
    Simulation::with_source(&config, seed, source)
}

/// A virtual bus carrying one virtual chip per sensor config (one per INA3221, with a channel
/// per sensor), at its address.
pub fn virtual_bus(sensors: &[SensorConfig], clock: &Clock) -> VirtualBus {
    let mut bus = VirtualBus::new(clock.clone());
    let house = house_of(sensors);
    bus.house = house.as_ref().map(|(h, _)| std::sync::Arc::clone(h));
    let house = house.as_ref();
    for s in sensors {
        let chip: Box<dyn VirtualChip> = match s.chip() {
            Chip::Ina219 => Box::new(VirtualIna219::new(
                true_shunt_ohms(s),
                simulation_of(s, house),
            )),
            chip @ (Chip::Ina226 | Chip::Ina260) => Box::new(VirtualIna226::new(
                chip,
                true_shunt_ohms(s),
                simulation_of(s, house),
            )),
            Chip::Ina3221 => {
                if sensors[..]
                    .iter()
                    .take_while(|o| !std::ptr::eq(*o, s))
                    .any(|o| o.chip() == Chip::Ina3221 && o.address == s.address)
                {
                    continue; // built with the first of its channels
                }
                let channels = sensors
                    .iter()
                    .filter(|o| o.address == s.address)
                    .filter_map(|o| {
                        Some((
                            o.channel()?.number(),
                            true_shunt_ohms(o),
                            simulation_of(o, house),
                        ))
                    })
                    .collect();
                Box::new(VirtualIna3221::new(channels))
            }
        };
        bus.attach(s.address, chip);
    }
    bus
}

/// A virtual bus with one chip per sensor, and the sensors reading them through the driver.
pub fn open_bus(sensors: &[SensorConfig], clock: &Clock) -> Vec<Box<dyn Sensor>> {
    sensors_on(virtual_bus(sensors, clock), sensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, FaultConfig, LoadModel};
    use crate::sensor::SensorError;
    use std::path::Path;

    #[test]
    fn current_for_a_sagging_supply() {
        assert_eq!(current_for(120.0, 12.0, 0.0), 10.0);
        let i = current_for(1450.0, 13.2, 0.01);
        let v = 13.2 - i * 0.01;
        assert!((v * i - 1450.0).abs() < 1e-9, "{v} V × {i} A");
        // Charging: negative power, the bus rises above the supply.
        assert!(current_for(-100.0, 13.0, 0.01) < 0.0);
        // Beyond maximum power transfer.
        assert_eq!(current_for(1e9, 12.0, 0.1), 60.0);
    }

    fn sensor_config(text: &str) -> Vec<SensorConfig> {
        Config::from_toml(Path::new("t.toml"), text)
            .unwrap()
            .sensors
    }

    /// The real driver, reading a virtual chip on a virtual bus, end to end.
    #[test]
    fn the_driver_reads_the_virtual_chip() {
        let configs = sensor_config(
            "[[sensor]]\nname = \"ac\"\ndriver = \"simulated\"\nshunt_ohms = 0.000375\nmax_current_amps = 200.0\nbus_voltage_range = 16\n\
             [sensor.simulation]\nload = { model = \"constant\", watts = 1450.0 }\nsupply_volts = 13.2\nsource_ohms = 0.005\n",
        );
        let (clock, time) = Clock::manual();
        let mut sensors = open_bus(&configs, &clock);
        time.advance(Duration::from_millis(10));
        // Right after initialisation no conversion has completed.
        let first = sensors[0].read();
        assert!(matches!(first, Err(SensorError::NotReady)), "{first:?}");
        time.advance(Duration::from_millis(10));
        let r = sensors[0].read().unwrap();
        // 1450 W at ~12.6 V: ~115 A, 43 mV over the shunt; quantised to 10 µV and 4 mV.
        assert!((r.power_watts - 1450.0).abs() / 1450.0 < 0.002, "{r:?}");
        let expected_volts = 13.2 - current_for(1450.0, 13.2, 0.005) * 0.005;
        assert!(
            (r.bus_voltage_volts - expected_volts).abs() <= 0.002,
            "{r:?}"
        );
        // The same conversion is not read twice.
        assert!(matches!(sensors[0].read(), Err(SensorError::NotReady)));
    }

    #[test]
    fn two_chips_share_a_bus_and_a_missing_one_nacks() {
        let configs = sensor_config(
            "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\nbus = \"sim\"\naddress = 0x40\n\
             [sensor.simulation]\nload = { model = \"constant\", watts = 10.0 }\n\
             [[sensor]]\nname = \"b\"\ndriver = \"simulated\"\nbus = \"sim\"\naddress = 0x41\n\
             [sensor.simulation]\nload = { model = \"constant\", watts = 20.0 }\n",
        );
        let (clock, time) = Clock::manual();
        let mut sensors = open_bus(&configs, &clock);
        for s in sensors.iter_mut() {
            let _ = s.read();
        }
        time.advance(Duration::from_millis(5));
        let a = sensors[0].read().unwrap().power_watts;
        let b = sensors[1].read().unwrap().power_watts;
        assert!(
            (a - 10.0).abs() < 0.05 && (b - 20.0).abs() < 0.05,
            "{a} {b}"
        );

        let mut bus = VirtualBus::new(clock);
        assert_eq!(bus.write(0x44, &[0]), Err(VirtualI2cError::Nack));
    }

    #[test]
    fn a_disconnect_window_fails_reads_then_recovers() {
        let configs = sensor_config(
            "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[sensor.simulation]\n\
             load = { model = \"constant\", watts = 10.0 }\n\
             faults = [{ kind = \"disconnect\", start = \"1s\", duration = \"2s\" }]\n",
        );
        let (clock, time) = Clock::manual();
        let mut sensors = open_bus(&configs, &clock);
        let _ = sensors[0].read();
        let mut kinds = Vec::new();
        for _ in 0..8 {
            time.advance(Duration::from_millis(500));
            kinds.push(
                sensors[0]
                    .read()
                    .map_err(|e| e.kind())
                    .map(|r| r.power_watts.round()),
            );
        }
        assert_eq!(kinds[0], Ok(10.0));
        assert_eq!(kinds[2], Err(ErrorKind::Nack));
        assert_eq!(kinds[4], Err(ErrorKind::Nack));
        // Back on the bus: the driver re-initialises, then reads again.
        assert!(kinds[6..].contains(&Ok(10.0)), "{kinds:?}");
    }

    #[test]
    fn an_overload_beyond_the_shunt_is_an_overflow_reading() {
        let mut configs = sensor_config(
            "[[sensor]]\nname = \"a\"\ndriver = \"simulated\"\n[sensor.simulation]\nload = { model = \"constant\", watts = 10.0 }\n",
        );
        let sim = configs[0].simulation_mut().unwrap();
        sim.faults.push(FaultConfig::Overload {
            start: Duration::from_secs(1),
            duration: Duration::from_secs(1),
            watts: 100.0,
        });
        assert!(matches!(sim.load, Some(LoadModel::Constant { .. })));
        let (clock, time) = Clock::manual();
        let mut sensors = open_bus(&configs, &clock);
        let _ = sensors[0].read();
        time.advance(Duration::from_millis(1500));
        let r = sensors[0].read().unwrap();
        assert!(r.overflow && r.power_watts.is_nan(), "{r:?}");
    }
}
