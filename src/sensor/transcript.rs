//! Register-level transcripts for the driver tests: one list of reads and writes, played to
//! the driver through `embedded-hal-mock` (which fails on any transfer out of place) and
//! replayed on the virtual chip (which must answer every read the same way).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use embedded_hal::i2c::I2c;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

use super::ladder::{ChipDriver, Recovering};
use super::simulated::VirtualBus;
use crate::sensor::simulated::ManualTime;

/// One step of a transcript.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// The register reads this word.
    Read(u8, u16),
    /// The driver writes this word.
    Write(u8, u16),
    /// Time passes (for the virtual chip; the mock has no time).
    Wait(Duration),
}

/// The mock's transactions for `steps` at `address`.
pub(crate) fn transactions(address: u8, steps: &[Step]) -> Vec<Transaction> {
    steps
        .iter()
        .filter_map(|step| match *step {
            Step::Read(reg, word) => Some(Transaction::write_read(
                address,
                vec![reg],
                word.to_be_bytes().to_vec(),
            )),
            Step::Write(reg, word) => Some(Transaction::write(
                address,
                [vec![reg], word.to_be_bytes().to_vec()].concat(),
            )),
            Step::Wait(_) => None,
        })
        .collect()
}

/// A driver on a mock bus that expects `steps`.
pub(crate) fn on_mock<D: ChipDriver>(
    driver: D,
    address: u8,
    steps: &[Step],
) -> (Recovering<D, Mock>, Mock) {
    let mock = Mock::new(&transactions(address, steps));
    let chip = Recovering::new(driver, Rc::new(RefCell::new(mock.clone())), address);
    (chip, mock)
}

/// Play `steps` on a virtual chip: the writes are made, and every read must answer as the
/// transcript says.
pub(crate) fn replay(bus: &mut VirtualBus, time: &ManualTime, address: u8, steps: &[Step]) {
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Read(reg, want) => {
                let mut word = [0u8; 2];
                bus.write_read(address, &[reg], &mut word)
                    .unwrap_or_else(|e| panic!("step {i}: {e}"));
                let got = u16::from_be_bytes(word);
                assert_eq!(
                    got, want,
                    "step {i}: register {reg:#04x} of the virtual chip reads {got:#06x}, the transcript {want:#06x}"
                );
            }
            Step::Write(reg, word) => {
                let [hi, lo] = word.to_be_bytes();
                bus.write(address, &[reg, hi, lo])
                    .unwrap_or_else(|e| panic!("step {i}: {e}"));
            }
            Step::Wait(d) => time.advance(d),
        }
    }
}
