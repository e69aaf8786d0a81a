//! Relay lines on a Raspberry Pi through `rppal` (feature `rppal`), which drives the SoC's
//! GPIO registers through `/dev/gpiomem`, addressed by BCM number.
//!
//! Unlike the character device, register access holds no kernel claim: rppal refuses a pin
//! twice within this process, but another process can still drive it. Prefer the `cdev`
//! backend where the kernel has the character device (every Raspberry Pi OS and Debian
//! kernel does); this one is for setups that need rppal's view of the pins.
//!
//! Pins are configured not to reset on drop: a fenced restart must not release a relay that
//! holds a fenced node off.

use super::RelayError;
use rppal::gpio::{Gpio, InputPin, Mode, OutputPin};

/// How rppal names the GPIO block in messages.
const CHIP: &str = "Raspberry Pi GPIO (rppal)";

fn request_error(bcm: u8, e: rppal::gpio::Error) -> RelayError {
    match e {
        rppal::gpio::Error::PinUsed(_) => RelayError::LineBusy {
            chip: CHIP.into(),
            line: bcm.into(),
            consumer: "this process (another relay line or sense line uses the same BCM pin)"
                .into(),
        },
        e => RelayError::Request {
            chip: CHIP.into(),
            line: bcm.into(),
            detail: e.to_string(),
        },
    }
}

/// Takes BCM pin `bcm` as a relay output. A pin already in output mode keeps its level; a pin
/// in input mode starts at `resting_high`; a pin in an alternate function (UART, SPI, I2C...)
/// is refused, since a peripheral owns it.
pub fn output(gpio: &Gpio, bcm: u8, resting_high: bool) -> Result<OutputPin, RelayError> {
    let pin = gpio.get(bcm).map_err(|e| request_error(bcm, e))?;
    let mut out = match pin.mode() {
        Mode::Output => pin.into_output(),
        Mode::Input if resting_high => pin.into_output_high(),
        Mode::Input => pin.into_output_low(),
        other => {
            return Err(RelayError::Request {
                chip: CHIP.into(),
                line: bcm.into(),
                detail: format!(
                    "the pin is in mode {other}, owned by a peripheral; free it in config.txt or choose another pin"
                ),
            })
        }
    };
    out.set_reset_on_drop(false);
    Ok(out)
}

/// Takes BCM pin `bcm` as a sense input, without pull resistors (the sense circuit drives it).
pub fn input(gpio: &Gpio, bcm: u8) -> Result<InputPin, RelayError> {
    let pin = gpio.get(bcm).map_err(|e| request_error(bcm, e))?;
    Ok(pin.into_input())
}

/// Opens the Raspberry Pi's GPIO block; fails on anything that is not a Raspberry Pi.
pub fn open() -> Result<Gpio, RelayError> {
    Gpio::new().map_err(|e| RelayError::Request {
        chip: CHIP.into(),
        line: 0,
        detail: format!(
            "{e}; rppal only works on a Raspberry Pi, use the character device backend elsewhere"
        ),
    })
}
