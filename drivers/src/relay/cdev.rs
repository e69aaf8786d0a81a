//! Relay lines through the Linux GPIO character device (`/dev/gpiochipN`, uAPI v2) with
//! `gpiocdev`: any board whose GPIO controller has a kernel driver.
//!
//! A line request is exclusive in the kernel: while fenced holds it, no other process (and no
//! second request of ours) can drive it, and a line someone else holds fails with
//! [`RelayError::LineBusy`], naming the chip, the offset and the holder's consumer label.
//! Polarity is applied by the driver ([`super::Polarity`]), so lines are requested active-high
//! and levels here are electrical.

use super::RelayError;
use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin, StatefulOutputPin};
use gpiocdev::line::{Direction, Value};
use gpiocdev::{Chip, Request};
use std::path::{Path, PathBuf};

/// The consumer label fenced's requests carry (shown by `gpioinfo`).
pub const CONSUMER: &str = "palisade-fenced";

/// A pin error from the character device.
#[derive(Debug)]
pub struct CdevError(pub gpiocdev::Error);

impl embedded_hal::digital::Error for CdevError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// One requested line on a GPIO chip, held until dropped.
#[derive(Debug)]
pub struct CdevPin {
    req: Request,
    offset: u32,
}

fn chip_name(chip: &Path) -> String {
    chip.display().to_string()
}

/// Turns a failed request into an error that names the holder if the line is in use.
fn request_error(chip: &Path, offset: u32, e: gpiocdev::Error) -> RelayError {
    if let Ok(info) = Chip::from_path(chip).and_then(|c| c.line_info(offset)) {
        if info.used {
            return RelayError::LineBusy {
                chip: chip_name(chip),
                line: offset,
                consumer: info.consumer,
            };
        }
    }
    RelayError::Request {
        chip: chip_name(chip),
        line: offset,
        detail: e.to_string(),
    }
}

/// Checks the line is free before requesting, so the error names the holder even on kernels
/// whose request error does not say why; the request itself is the authoritative check.
fn line_direction(chip: &Path, offset: u32) -> Result<Direction, RelayError> {
    let c = Chip::from_path(chip).map_err(|e| RelayError::Request {
        chip: chip_name(chip),
        line: offset,
        detail: e.to_string(),
    })?;
    let info = c.line_info(offset).map_err(|e| RelayError::Request {
        chip: chip_name(chip),
        line: offset,
        detail: e.to_string(),
    })?;
    if info.used {
        return Err(RelayError::LineBusy {
            chip: chip_name(chip),
            line: offset,
            consumer: info.consumer,
        });
    }
    Ok(info.direction)
}

impl CdevPin {
    /// Requests `offset` on `chip` as a relay output.
    ///
    /// A line that is already an output keeps its level (requested as-is, read, then
    /// switched to output at that level): a fenced restart must not release a relay that
    /// holds a fenced node off. A line that is an input (fresh boot) starts at `resting_high`,
    /// the level that leaves the node powered.
    pub fn output(chip: &Path, offset: u32, resting_high: bool) -> Result<Self, RelayError> {
        let dir = line_direction(chip, offset)?;
        let req = match dir {
            Direction::Output => {
                let req = Request::builder()
                    .on_chip(chip)
                    .with_consumer(CONSUMER)
                    .with_line(offset)
                    .as_is()
                    .request()
                    .map_err(|e| request_error(chip, offset, e))?;
                let now = req.value(offset).map_err(|e| RelayError::Request {
                    chip: chip_name(chip),
                    line: offset,
                    detail: format!("reading the current output level: {e}"),
                })?;
                let mut cfg = req.config();
                cfg.with_line(offset).as_output(now);
                req.reconfigure(&cfg).map_err(|e| RelayError::Request {
                    chip: chip_name(chip),
                    line: offset,
                    detail: format!("keeping the output at its level: {e}"),
                })?;
                req
            }
            Direction::Input => Request::builder()
                .on_chip(chip)
                .with_consumer(CONSUMER)
                .with_line(offset)
                .as_output(Value::from(resting_high))
                .request()
                .map_err(|e| request_error(chip, offset, e))?,
        };
        Ok(Self { req, offset })
    }

    /// Requests `offset` on `chip` as a sense input (no bias: the sense circuit drives it).
    pub fn input(chip: &Path, offset: u32) -> Result<Self, RelayError> {
        line_direction(chip, offset)?;
        let req = Request::builder()
            .on_chip(chip)
            .with_consumer(CONSUMER)
            .with_line(offset)
            .as_input()
            .request()
            .map_err(|e| request_error(chip, offset, e))?;
        Ok(Self { req, offset })
    }

    /// The chip this line is on.
    pub fn chip(&self) -> PathBuf {
        self.req.chip_path()
    }

    fn get(&self) -> Result<bool, CdevError> {
        self.req
            .value(self.offset)
            .map(|v| v == Value::Active)
            .map_err(CdevError)
    }
}

impl ErrorType for CdevPin {
    type Error = CdevError;
}

impl OutputPin for CdevPin {
    fn set_low(&mut self) -> Result<(), CdevError> {
        self.req
            .set_value(self.offset, Value::Inactive)
            .map_err(CdevError)
    }

    fn set_high(&mut self) -> Result<(), CdevError> {
        self.req
            .set_value(self.offset, Value::Active)
            .map_err(CdevError)
    }
}

impl StatefulOutputPin for CdevPin {
    /// The level the kernel reports for the output (on most controllers the pad's level),
    /// read each time rather than remembered, so a write that did not take is seen.
    fn is_set_high(&mut self) -> Result<bool, CdevError> {
        self.get()
    }

    fn is_set_low(&mut self) -> Result<bool, CdevError> {
        self.get().map(|h| !h)
    }
}

impl InputPin for CdevPin {
    fn is_high(&mut self) -> Result<bool, CdevError> {
        self.get()
    }

    fn is_low(&mut self) -> Result<bool, CdevError> {
        self.get().map(|h| !h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the host (no GPIO chip; the host kernel has no gpio-sim) only the refusal path runs
    /// here: a chip that does not exist is an error naming the chip and the line. Real lines
    /// are driven in a VM with an out-of-tree gpio-sim (hw-tests/tests/relay_vm.rs).
    #[test]
    fn a_missing_chip_names_chip_and_line() {
        let chip = Path::new("/dev/gpiochip-palisade-missing");
        for r in [CdevPin::output(chip, 17, false), CdevPin::input(chip, 17)] {
            let e = r.unwrap_err();
            let t = e.to_string();
            assert!(matches!(e, RelayError::Request { line: 17, .. }), "{t}");
            assert!(
                t.contains("/dev/gpiochip-palisade-missing") && t.contains("line 17"),
                "{t}"
            );
        }
    }
}
