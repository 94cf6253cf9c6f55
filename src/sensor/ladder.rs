//! The recovery ladder every chip driver climbs, sized to the fault:
//!
//! 1. **A transfer fails** (a NACK, a timeout — the "Remote I/O error" of long wires and
//!    motor noise): it is tried again at once, up to [`RETRIES`] times. Every failure is
//!    counted by kind; most noise ends here, and the sample goes on.
//! 2. **The chip lost its settings** (a brown-out: each driver notices in its ordinary
//!    reads, without extra traffic — see the drivers): it is programmed again at once.
//! 3. **Samples keep failing** ([`REPROGRAM_AFTER`] in a row): the chip is programmed again,
//!    in case it reset without a trace.
//! 4. Only a chip that stays silent is read less often: the sampler backs off after an outage
//!    of [`OUTAGE_GRACE`], not before (see the pipeline).
//!
//! A driver ([`ChipDriver`]) knows its chip: how to identify and program it, and its read
//! sequence for one sample. [`Recovering`] is the ladder around it, for any chip.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use embedded_hal::i2c::I2c;

use super::{ClassifyError, ErrorKind, Reading, SensorError};

/// How many times a failed transfer is tried again at once.
pub(crate) const RETRIES: u32 = 2;
/// Failed samples in a row after which the chip is programmed again.
pub(crate) const REPROGRAM_AFTER: u32 = 3;
/// How long an outage lasts before the sampler backs off.
pub(crate) const OUTAGE_GRACE: Duration = Duration::from_secs(10);

/// What happened on the bus during reads, for the metrics: counted by the ladder, collected
/// by the pipeline after each read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    /// Failed transfers, by kind, in [`ErrorKind::ALL`] order.
    pub(crate) failed_transfers: [u32; ErrorKind::ALL.len()],
    /// Transfers tried again after a failure.
    pub(crate) retries: u32,
    /// Times the chip was programmed again.
    pub(crate) reprogrammed: u32,
}

impl Events {
    fn failed(&mut self, kind: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.failed_transfers[i] += 1;
        }
    }
}

/// One chip's side of the shared bus, as an `embedded-hal` bus whose transfers are tried again
/// on failure (so that a driver crate gets the retries too), with register helpers.
pub(crate) struct Registers<'a, I2C> {
    bus: &'a RefCell<I2C>,
    address: u8,
    events: &'a mut Events,
}

/// A bus error as a sensor error.
pub(crate) fn bus_error<E: ClassifyError>(e: &E) -> SensorError {
    SensorError::Bus {
        kind: e.error_kind(),
        detail: e.to_string(),
        summary: e.summary(),
    }
}

impl<I2C> embedded_hal::i2c::ErrorType for Registers<'_, I2C>
where
    I2C: I2c,
{
    type Error = I2C::Error;
}

impl<I2C> Registers<'_, I2C>
where
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    /// `transfer` on the bus, tried again at once on failure, every failure counted.
    fn retrying(
        &mut self,
        mut transfer: impl FnMut(&mut I2C) -> Result<(), I2C::Error>,
    ) -> Result<(), I2C::Error> {
        let mut attempt = 0;
        loop {
            let result = transfer(&mut self.bus.borrow_mut());
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.events.failed(e.error_kind());
                    // A bus that cannot be opened does not heal within microseconds.
                    if attempt == RETRIES || e.error_kind() == ErrorKind::Unavailable {
                        return Err(e);
                    }
                    attempt += 1;
                    self.events.retries += 1;
                }
            }
        }
    }
}

// Each method goes to the bus's own (rather than through `transaction`), so a bus keeps its
// own way of doing a write-then-read.
impl<I2C> I2c for Registers<'_, I2C>
where
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [embedded_hal::i2c::Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.retrying(|bus| bus.transaction(address, operations))
    }

    fn read(&mut self, address: u8, read: &mut [u8]) -> Result<(), Self::Error> {
        self.retrying(|bus| bus.read(address, read))
    }

    fn write(&mut self, address: u8, write: &[u8]) -> Result<(), Self::Error> {
        self.retrying(|bus| bus.write(address, write))
    }

    fn write_read(
        &mut self,
        address: u8,
        write: &[u8],
        read: &mut [u8],
    ) -> Result<(), Self::Error> {
        self.retrying(|bus| bus.write_read(address, write, read))
    }
}

impl<I2C> Registers<'_, I2C>
where
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    /// The chip's address.
    pub(crate) fn address(&self) -> u8 {
        self.address
    }

    /// Read a 16-bit register (pointer write, then a two-byte read; MSB first).
    pub(crate) fn read(&mut self, register: u8) -> Result<u16, SensorError> {
        let mut word = [0u8; 2];
        let address = self.address;
        self.write_read(address, &[register], &mut word)
            .map_err(|e| bus_error(&e))?;
        Ok(u16::from_be_bytes(word))
    }

    /// Write a 16-bit register.
    pub(crate) fn write(&mut self, register: u8, value: u16) -> Result<(), SensorError> {
        let [hi, lo] = value.to_be_bytes();
        let address = self.address;
        I2c::write(self, address, &[register, hi, lo]).map_err(|e| bus_error(&e))
    }
}

/// What one sample of a chip came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sample {
    /// A reading, its values all from one conversion.
    Reading(Reading),
    /// No conversion since the last sample.
    NotReady,
    /// The chip answers with its power-on settings: it browned out.
    LostSettings,
}

/// A bus the chips are read over: an `embedded-hal` bus whose errors say their kind.
pub(crate) trait ChipBus: I2c<Error: ClassifyError> {}

impl<T: I2c<Error: ClassifyError>> ChipBus for T {}

/// A chip's own part: identify and program it, and read one sample.
pub(crate) trait ChipDriver {
    /// Program the chip; `first` on first contact, when it is also identified (and may be
    /// reset) — later, after a brown-out, its settings are simply written again.
    fn program<B: ChipBus>(&mut self, bus: &mut Registers<B>, first: bool) -> Outcome<()>;

    /// One sample of `part` (the channel of a multi-channel chip; 0 otherwise).
    fn sample<B: ChipBus>(&mut self, bus: &mut Registers<B>, part: u8) -> Outcome<Sample>;
}

/// What a driver's step came to.
pub(crate) type Outcome<T> = Result<T, SensorError>;

/// A chip on a shared bus, read through its driver, with the recovery ladder around it.
pub(crate) struct Recovering<D, I2C> {
    driver: D,
    bus: Rc<RefCell<I2C>>,
    address: u8,
    /// Programmed and not known to have lost it.
    programmed: bool,
    /// Identified once.
    identified: bool,
    /// Samples in a row that failed.
    failed_samples: u32,
    events: Events,
}

impl<D, I2C> Recovering<D, I2C>
where
    D: ChipDriver,
    I2C: I2c,
    I2C::Error: ClassifyError,
{
    /// The chip at `address` on `bus`, programmed at its first read.
    pub(crate) fn new(driver: D, bus: Rc<RefCell<I2C>>, address: u8) -> Self {
        Recovering {
            driver,
            bus,
            address,
            programmed: false,
            identified: false,
            failed_samples: 0,
            events: Events::default(),
        }
    }

    /// What happened since the last call.
    pub(crate) fn take_events(&mut self) -> Events {
        std::mem::take(&mut self.events)
    }

    fn program(&mut self) -> Result<(), SensorError> {
        let first = !self.identified;
        let mut regs = Registers {
            bus: &self.bus,
            address: self.address,
            events: &mut self.events,
        };
        self.driver.program(&mut regs, first)?;
        if !first {
            self.events.reprogrammed += 1;
        }
        self.identified = true;
        self.programmed = true;
        Ok(())
    }

    /// One sample of `part`.
    pub(crate) fn read(&mut self, part: u8) -> Result<Reading, SensorError> {
        if !self.programmed {
            if let Err(e) = self.program() {
                self.failed_samples += 1;
                return Err(e);
            }
            // Programming restarts the conversions: the next one is not there yet.
            return Err(SensorError::NotReady);
        }
        let mut regs = Registers {
            bus: &self.bus,
            address: self.address,
            events: &mut self.events,
        };
        match self.driver.sample(&mut regs, part) {
            Ok(Sample::Reading(reading)) => {
                self.failed_samples = 0;
                Ok(reading)
            }
            Ok(Sample::NotReady) => Err(SensorError::NotReady),
            Ok(Sample::LostSettings) => {
                log::warn!(
                    "the chip at {:#04x} lost its settings (a brown-out?); programming it again",
                    self.address
                );
                self.programmed = false;
                self.program()?;
                Err(SensorError::NotReady)
            }
            Err(e) => {
                self.failed_samples += 1;
                if self.failed_samples >= REPROGRAM_AFTER {
                    self.programmed = false;
                }
                Err(e)
            }
        }
    }
}
