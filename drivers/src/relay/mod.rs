//! Relay boards (device kind `relay`): a node's power cut or power button wired to a GPIO
//! line, optionally with a sense line (power-good, power LED) that reads the node's power back.
//!
//! One file per layer:
//! - [`line`]: a line's polarity, mode and sense line as data, and the pure rule of what a
//!   reading may claim (no I/O).
//! - [`device`]: [`RelayDevice`], the [`crate::PowerDevice`] over embedded-hal 1.0 pins.
//! - `cdev`: the Linux GPIO character device backend (`gpiocdev`, feature `gpiocdev`, on by
//!   default on Linux): lines requested exclusively, a busy line named with its holder.
//! - `rpi`: the Raspberry Pi backend (`rppal`, feature `rppal`, off by default).
//!
//! The safety rule decides what may be claimed ([`line::Basis`]): a button press is never
//! read back, so a button without a sense line never confirms; a power-cut relay without a
//! sense line can only read back its own output, which does not catch a welded contact, so it
//! confirms only with `confirm_off_by_relay_output_without_sense`, and then says "relay output
//! read back, no sense line"; with a sense line, off is claimed only when the sense line reads
//! off after the settle time, and a switch whose sense line does not agree within the timeout
//! fails by name.

#[cfg(all(target_os = "linux", feature = "gpiocdev"))]
pub mod cdev;
pub mod device;
pub mod line;
#[cfg(feature = "rppal")]
pub mod rpi;

pub use device::{LinePins, RelayDevice};
pub use line::{Basis, LineConfig, Mode, Polarity, SenseConfig};

use crate::{DeviceError, PowerCommand, PowerState};

/// Why a relay line could not be set up or driven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Another process holds the GPIO line.
    #[error("GPIO line {line} on {chip} is already in use by `{consumer}`; stop that process (see `gpioinfo {chip}`) or configure another line")]
    LineBusy {
        /// The chip's device path.
        chip: String,
        /// The line's offset on the chip.
        line: u32,
        /// The holder's consumer label as the kernel reports it (empty if it gave none).
        consumer: String,
    },
    /// The GPIO line could not be opened or requested.
    #[error("cannot request GPIO line {line} on {chip}: {detail}; check that the chip exists (`gpiodetect`), the line offset is on it (`gpioinfo`), and fenced may open the chip device")]
    Request {
        /// The chip's device path (or the backend's name for it).
        chip: String,
        /// The line's offset on the chip (BCM number for rppal).
        line: u32,
        /// The backend's reason.
        detail: String,
    },
    /// Setting the relay output failed.
    #[error("relay line {line}: writing output {pin} failed: {detail}; the relay state is unknown, check the GPIO controller")]
    PinWrite {
        /// The line's name.
        line: String,
        /// Where the output is.
        pin: String,
        /// The backend's reason.
        detail: String,
    },
    /// Reading a pin failed.
    #[error("relay line {line}: reading {pin} failed: {detail}; nothing is claimed about the node's power, check the GPIO controller")]
    PinRead {
        /// The line's name.
        line: String,
        /// Where the pin is.
        pin: String,
        /// The backend's reason.
        detail: String,
    },
    /// The output read back differs from what was just written.
    #[error("relay line {line}: output {pin} reads back {} right after being set {}; another owner or a pin-mux setting overrides it, check the board's device tree", level(!.wanted_high), level(*.wanted_high))]
    OutputNotTaken {
        /// The line's name.
        line: String,
        /// Where the output is.
        pin: String,
        /// The level that was written.
        wanted_high: bool,
    },
    /// After switching, the sense line did not reach the expected state in time.
    #[error("relay line {line}: power {command} was switched but sense line {pin} still reads {state} after {waited_ms} ms; a welded contact, a second supply or a sense line wired to another node: the node is NOT confirmed {command}")]
    SenseDisagrees {
        /// The line's name.
        line: String,
        /// Where the sense input is.
        pin: String,
        /// What was switched.
        command: PowerCommand,
        /// What the sense line claims.
        state: PowerState,
        /// Settle time plus timeout.
        waited_ms: u64,
    },
    /// Power on by a button with no sense line is refused.
    #[error("relay line {line}: power on by a button press is refused without a sense line: a press on a node that is in fact running would shut it down; power it on by hand or wire a sense line")]
    BlindPowerOn {
        /// The line's name.
        line: String,
    },
    /// The line was switched, but nothing can ever read it back (a button without a sense
    /// line, a power-cut relay without sense and without the opt-in): the call fails at once
    /// with the reason, instead of the engine reading `unknown` until the attempt deadline.
    #[error("relay line {line}: power {command} was switched, but it can never be confirmed: {why}. The node is NOT confirmed {command}")]
    Unconfirmable {
        /// The line's name.
        line: String,
        /// What was switched.
        command: PowerCommand,
        /// Why this line cannot be read back, and what would let it confirm.
        why: line::Unreadable,
    },
    /// The configuration of a line is inconsistent.
    #[error("relay line `{line}`: {detail}")]
    Config {
        /// The line's name.
        line: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
}

fn level(high: bool) -> &'static str {
    if high {
        "high"
    } else {
        "low"
    }
}

impl From<RelayError> for DeviceError {
    fn from(e: RelayError) -> Self {
        let detail = e.to_string();
        match e {
            // GPIO lines are hardware on this machine: the hint is the relay error's own
            // (which process holds the line, which chip to check), never a network path.
            RelayError::LineBusy { chip, line, .. } | RelayError::Request { chip, line, .. } => {
                DeviceError::Hardware {
                    device: format!("{chip} line {line}"),
                    detail,
                }
            }
            RelayError::PinWrite { pin, .. }
            | RelayError::PinRead { pin, .. }
            | RelayError::OutputNotTaken { pin, .. } => DeviceError::Hardware {
                device: pin,
                detail,
            },
            RelayError::SenseDisagrees { pin, command, .. } => DeviceError::Refused {
                address: pin,
                command: format!("power {command}"),
                detail,
            },
            RelayError::BlindPowerOn { .. }
            | RelayError::Unconfirmable { .. }
            | RelayError::Config { .. } => DeviceError::Policy { detail },
        }
    }
}
