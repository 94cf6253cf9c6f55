//! A Linux I2C bus (`/dev/i2c-N`) through `linux-embedded-hal`, opened lazily.
//!
//! A bus that cannot be opened at start-up (I2C not enabled, permissions) is not fatal: every
//! transfer tries to open it again, and fails with [`ErrorKind::Unavailable`] and a hint until
//! it works.

use std::fmt;
use std::path::{Path, PathBuf};

use embedded_hal::i2c::{ErrorType, I2c, Operation};
use linux_embedded_hal::i2cdev::linux::LinuxI2CError;
use linux_embedded_hal::I2cdev;

use super::ina219::sensors_on;
use super::{ClassifyError, ErrorKind, Sensor};
use crate::config::SensorConfig;

/// `/dev/i2c-N`, opened on first use and again after an open failure.
pub struct LinuxBus {
    path: PathBuf,
    device: Option<I2cdev>,
}

impl LinuxBus {
    pub fn new(path: impl AsRef<Path>) -> LinuxBus {
        LinuxBus {
            path: path.as_ref().to_path_buf(),
            device: None,
        }
    }

    fn device(&mut self) -> Result<&mut I2cdev, LinuxBusError> {
        if self.device.is_none() {
            let device = I2cdev::new(&self.path).map_err(|e| LinuxBusError::Open {
                path: self.path.clone(),
                errno: errno_of(&e),
                message: e.to_string(),
            })?;
            self.device = Some(device);
        }
        // Just filled in above when it was empty.
        self.device.as_mut().ok_or(LinuxBusError::Open {
            path: self.path.clone(),
            errno: None,
            message: "not open".into(),
        })
    }
}

fn errno_of(e: &LinuxI2CError) -> Option<i32> {
    match e {
        LinuxI2CError::Errno(errno) => Some(*errno),
        LinuxI2CError::Io(io) => io.raw_os_error(),
    }
}

/// Why a transfer on a Linux bus failed.
#[derive(Debug)]
pub enum LinuxBusError {
    /// The device node could not be opened.
    Open {
        path: PathBuf,
        errno: Option<i32>,
        message: String,
    },
    /// The transfer itself failed; the errno tells how (kernel `i2c/fault-codes`).
    Transfer(linux_embedded_hal::I2CError),
}

impl fmt::Display for LinuxBusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinuxBusError::Open {
                path,
                errno,
                message,
            } => {
                write!(f, "cannot open {}: {message}", path.display())?;
                match *errno {
                    Some(libc_errno::ENOENT) => write!(
                        f,
                        " (is I2C enabled? `raspi-config nonint do_i2c 0`, or `dtparam=i2c_arm=on` in /boot/firmware/config.txt, then `modprobe i2c-dev`)"
                    ),
                    Some(libc_errno::EACCES) => write!(
                        f,
                        " (add the user to group i2c: `usermod -aG i2c $USER`)"
                    ),
                    _ => Ok(()),
                }
            }
            LinuxBusError::Transfer(e) => write!(f, "{e}"),
        }
    }
}

impl embedded_hal::i2c::Error for LinuxBusError {
    fn kind(&self) -> embedded_hal::i2c::ErrorKind {
        match self {
            LinuxBusError::Open { .. } => embedded_hal::i2c::ErrorKind::Other,
            LinuxBusError::Transfer(e) => e.kind(),
        }
    }
}

/// errno values this module tells apart (Linux, all architectures the daemon targets).
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const ENXIO: i32 = 6;
    pub const EACCES: i32 = 13;
    pub const ETIMEDOUT: i32 = 110;
    pub const EREMOTEIO: i32 = 121;
}

impl ClassifyError for LinuxBusError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            LinuxBusError::Open { .. } => ErrorKind::Unavailable,
            LinuxBusError::Transfer(e) => match errno_of(e.inner()) {
                // Documentation/i2c/fault-codes.rst: no ACK of the address or of data.
                Some(libc_errno::EREMOTEIO | libc_errno::ENXIO) => ErrorKind::Nack,
                Some(libc_errno::ETIMEDOUT) => ErrorKind::Timeout,
                _ => ErrorKind::I2c,
            },
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
        self.device()?
            .transaction(address, operations)
            .map_err(LinuxBusError::Transfer)
    }
}

/// The sensors of one Linux bus, sharing it in turn.
pub fn open_bus(path: &str, sensors: &[SensorConfig]) -> Vec<Box<dyn Sensor>> {
    sensors_on(LinuxBus::new(path), sensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::SensorError;

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
}
