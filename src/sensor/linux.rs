//! A Linux I2C bus (`/dev/i2c-N`) through `linux-embedded-hal`, opened lazily.
//!
//! A bus that cannot be opened (I2C not enabled, permissions) is not fatal: every transfer
//! tries again, and fails with [`ErrorKind::Unavailable`] and a hint that says what to do.
//! Transfer errors are sorted by errno, following the kernel's `Documentation/i2c/fault-codes`.
//!
//! `linux-embedded-hal` selects a chip with the `I2C_SLAVE` ioctl, which refuses (EBUSY) an
//! address a kernel driver has claimed, such as the `ina2xx` hwmon driver: the daemon then
//! says so instead of fighting the kernel for the chip.

use std::fmt;
use std::path::{Path, PathBuf};

use embedded_hal::i2c::{ErrorType, I2c, Operation};
use linux_embedded_hal::i2cdev::linux::LinuxI2CError;
use linux_embedded_hal::I2cdev;

use super::sensors_on;
use super::{ClassifyError, ErrorKind, Sensor};
use crate::config::SensorConfig;

/// errno values this module tells apart (the same on every Linux architecture the daemon
/// targets).
mod errno {
    pub(crate) const ENOENT: i32 = 2;
    pub(crate) const EIO: i32 = 5;
    pub(crate) const ENXIO: i32 = 6;
    pub(crate) const EAGAIN: i32 = 11;
    pub(crate) const EACCES: i32 = 13;
    pub(crate) const EBUSY: i32 = 16;
    pub(crate) const ENODEV: i32 = 19;
    pub(crate) const ETIMEDOUT: i32 = 110;
    pub(crate) const EREMOTEIO: i32 = 121;
}

/// `/dev/i2c-N`, opened on first use and again after an open failure.
pub(crate) struct LinuxBus {
    path: PathBuf,
    device: Option<I2cdev>,
}

impl LinuxBus {
    /// The bus at `path`, not opened yet.
    pub(crate) fn new(path: impl AsRef<Path>) -> LinuxBus {
        LinuxBus {
            path: path.as_ref().to_path_buf(),
            device: None,
        }
    }

    /// Open the device node now, if it is not open yet.
    pub(crate) fn open(&mut self) -> Result<&mut I2cdev, LinuxBusError> {
        let device = match self.device.take() {
            Some(device) => device,
            None => I2cdev::new(&self.path)
                .map_err(|e| LinuxBusError::new(&self.path, None, Phase::Open, &e))?,
        };
        Ok(self.device.insert(device))
    }
}

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opening the device node.
    Open,
    /// A transfer to a chip.
    Transfer,
}

/// A failure on a Linux I2C bus.
#[derive(Debug, Clone)]
pub(crate) struct LinuxBusError {
    path: PathBuf,
    address: Option<u8>,
    phase: Phase,
    errno: Option<i32>,
    message: String,
}

impl LinuxBusError {
    fn new(path: &Path, address: Option<u8>, phase: Phase, e: &LinuxI2CError) -> Self {
        let errno = match e {
            LinuxI2CError::Errno(errno) => Some(*errno),
            LinuxI2CError::Io(io) => io.raw_os_error(),
        };
        LinuxBusError {
            path: path.to_path_buf(),
            address,
            phase,
            errno,
            message: e.to_string(),
        }
    }

    /// What to do about it, when there is something to do.
    fn hint(&self) -> Option<String> {
        let bus_number = self
            .path
            .to_str()
            .and_then(|p| p.strip_prefix("/dev/i2c-"))
            .unwrap_or("N");
        Some(match (self.errno?, self.phase) {
            (errno::ENOENT | errno::ENODEV, Phase::Open) => "is I2C enabled? On a Raspberry Pi: `sudo raspi-config nonint do_i2c 0` (or `dtparam=i2c_arm=on` in /boot/firmware/config.txt and a reboot); elsewhere `sudo modprobe i2c-dev`".into(),
            (errno::EACCES, _) => "permission denied: run as a member of group i2c (`sudo usermod -aG i2c $USER`, then log in again)".into(),
            (errno::EBUSY, _) => match self.address {
                Some(a) => format!(
                    "a kernel driver has claimed {a:#04x}; see `ls -l /sys/bus/i2c/devices/{bus_number}-00{a:02x}/driver` and unbind it, or remove the device-tree overlay that binds it"
                ),
                None => "the bus is busy".into(),
            },
            (errno::EREMOTEIO | errno::ENXIO, Phase::Transfer) => {
                "no chip answered: check power, wiring (SDA, SCL, GND) and the address (A0/A1)".into()
            }
            (errno::ETIMEDOUT | errno::EAGAIN, _) => {
                "the bus timed out or lost arbitration: check for a device holding SDA/SCL low, cable length and pull-ups".into()
            }
            _ => return None,
        })
    }
}

impl fmt::Display for LinuxBusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.phase, self.address) {
            (Phase::Open, _) => write!(f, "cannot open {}: {}", self.path.display(), self.message)?,
            (Phase::Transfer, Some(a)) => {
                write!(f, "{} at {a:#04x}: {}", self.path.display(), self.message)?
            }
            (Phase::Transfer, None) => write!(f, "{}: {}", self.path.display(), self.message)?,
        }
        if let Some(hint) = self.hint() {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for LinuxBusError {}

impl embedded_hal::i2c::Error for LinuxBusError {
    fn kind(&self) -> embedded_hal::i2c::ErrorKind {
        use embedded_hal::i2c::{ErrorKind as K, NoAcknowledgeSource};
        match self.error_kind() {
            ErrorKind::Nack => K::NoAcknowledge(NoAcknowledgeSource::Unknown),
            ErrorKind::I2c if self.errno == Some(errno::EAGAIN) => K::ArbitrationLoss,
            ErrorKind::I2c if self.errno == Some(errno::EIO) => K::Bus,
            _ => K::Other,
        }
    }
}

impl ClassifyError for LinuxBusError {
    fn summary(&self) -> String {
        let path = self.path.display();
        match (self.errno, self.phase) {
            (Some(errno::ENOENT | errno::ENODEV), _) => format!("{path} missing: enable I2C"),
            (Some(errno::EACCES), _) => format!("{path}: permission denied (group i2c)"),
            (Some(errno::EBUSY), _) => format!("{path}: address claimed by a kernel driver"),
            (Some(errno::EREMOTEIO | errno::ENXIO), Phase::Transfer) => match self.address {
                Some(a) => format!("no answer at {a:#04x} on {path}: check wiring"),
                None => format!("no answer on {path}"),
            },
            (Some(errno::ETIMEDOUT | errno::EAGAIN), _) => format!("{path} timed out"),
            _ => format!("{path}: {}", self.error_kind()),
        }
    }

    fn error_kind(&self) -> ErrorKind {
        match (self.phase, self.errno) {
            (Phase::Open, _) | (_, Some(errno::ENOENT | errno::ENODEV | errno::EACCES)) => {
                ErrorKind::Unavailable
            }
            // Documentation/i2c/fault-codes: EREMOTEIO, ENXIO: no ACK (of data or address).
            (_, Some(errno::EREMOTEIO | errno::ENXIO)) => ErrorKind::Nack,
            (_, Some(errno::ETIMEDOUT)) => ErrorKind::Timeout,
            _ => ErrorKind::I2c,
        }
    }
}

impl ErrorType for LinuxBus {
    type Error = LinuxBusError;
}

impl I2c for LinuxBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let path = self.path.clone();
        let result = self.open()?.transaction(address, operations);
        result.map_err(|e| LinuxBusError::new(&path, Some(address), Phase::Transfer, e.inner()))
    }
}

/// The sensors of one Linux bus, sharing it in turn.
pub(crate) fn open_bus(path: &str, sensors: &[SensorConfig]) -> Vec<Box<dyn Sensor>> {
    sensors_on(LinuxBus::new(path), sensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::SensorError;

    fn error(phase: Phase, errno: i32) -> LinuxBusError {
        LinuxBusError::new(
            Path::new("/dev/i2c-1"),
            Some(0x40),
            phase,
            &LinuxI2CError::Errno(errno),
        )
    }

    #[test]
    fn errors_are_sorted_by_errno() {
        assert_eq!(
            error(Phase::Transfer, errno::EREMOTEIO).error_kind(),
            ErrorKind::Nack
        );
        assert_eq!(
            error(Phase::Transfer, errno::ENXIO).error_kind(),
            ErrorKind::Nack
        );
        assert_eq!(
            error(Phase::Transfer, errno::ETIMEDOUT).error_kind(),
            ErrorKind::Timeout
        );
        assert_eq!(
            error(Phase::Transfer, errno::EIO).error_kind(),
            ErrorKind::I2c
        );
        assert_eq!(
            error(Phase::Transfer, errno::EAGAIN).error_kind(),
            ErrorKind::I2c
        );
        assert_eq!(
            error(Phase::Open, errno::ENOENT).error_kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            error(Phase::Open, errno::EACCES).error_kind(),
            ErrorKind::Unavailable
        );
        // The device node vanished between transfers (the module was unloaded).
        assert_eq!(
            error(Phase::Transfer, errno::ENOENT).error_kind(),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        assert!(error(Phase::Open, errno::ENOENT)
            .to_string()
            .contains("raspi-config nonint do_i2c 0"));
        assert!(error(Phase::Open, errno::EACCES)
            .to_string()
            .contains("group i2c"));
        let busy = error(Phase::Transfer, errno::EBUSY).to_string();
        assert!(
            busy.contains("/sys/bus/i2c/devices/1-0040/driver"),
            "{busy}"
        );
        assert!(error(Phase::Transfer, errno::EREMOTEIO)
            .to_string()
            .contains("A0/A1"));
    }

    #[test]
    fn a_missing_bus_is_unavailable_with_a_hint() {
        let config = crate::config::Config::from_toml(
            Path::new("t.toml"),
            "[[sensor]]\nname = \"a\"\nbus = \"/dev/i2c-does-not-exist\"\n",
        )
        .unwrap();
        let mut sensors = open_bus("/dev/i2c-does-not-exist", &config.sensors);
        let err = sensors[0].read().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let SensorError::Bus { detail, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(detail.contains("is I2C enabled"), "{detail}");
    }

    #[test]
    fn a_node_that_is_not_an_i2c_adapter_is_unavailable() {
        // /dev/null opens, but the I2C_SLAVE ioctl fails (ENOTTY).
        let mut bus = LinuxBus::new("/dev/null");
        let err = bus.write(0x40, &[0]).unwrap_err();
        assert_eq!(err.error_kind(), ErrorKind::Unavailable, "{err}");
        assert!(
            err.to_string().starts_with("cannot open /dev/null"),
            "{err}"
        );
    }
}
