//! [`RelayDevice`]: relay lines behind embedded-hal 1.0 pins, as a [`PowerDevice`] whose ports
//! are the lines' names.
//!
//! The pins are generic, so the same code drives the Linux GPIO character device, rppal and
//! `embedded-hal-mock` in the unit tests. A pin call is a syscall or a register access and
//! does not block for long, so it runs on the async task; the waits (presses, settle time,
//! sense polling) are tokio sleeps, which the tests run with paused time.

use super::line::{judge, Basis, LineConfig, Mode, Reading};
use super::RelayError;
use crate::{DeviceError, Identity, Outlet, PowerCommand, PowerDevice, PowerState};
use async_trait::async_trait;
use embedded_hal::digital::{InputPin, OutputPin, StatefulOutputPin};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The pins of one line: the relay output and, if wired, the sense input.
pub struct LinePins<O, I> {
    /// The relay output.
    pub output: O,
    /// The sense input.
    pub sense: Option<I>,
}

struct LineState<O, I> {
    pins: LinePins<O, I>,
    /// When the relay was last switched, so a sense reading is never taken inside the
    /// settle time (a power-good line deasserts late; a power LED fades).
    switched: Option<Instant>,
}

struct Line<O, I> {
    cfg: LineConfig,
    state: Mutex<LineState<O, I>>,
}

/// A relay board: named lines, each a power cut or a power button, each optionally with a
/// sense line.
pub struct RelayDevice<O, I> {
    board: String,
    lines: Vec<Line<O, I>>,
}

impl<O, I> std::fmt::Debug for RelayDevice<O, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayDevice")
            .field("board", &self.board)
            .field(
                "lines",
                &self.lines.iter().map(|l| &l.cfg).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Releases a pressed button when dropped, so a call the engine cancels mid-press (deadline)
/// never leaves the button held.
struct Press<'a, O: OutputPin> {
    pin: &'a mut O,
    rest: bool,
    released: bool,
}

impl<O: OutputPin> Press<'_, O> {
    fn release(mut self) -> Result<(), O::Error> {
        self.released = true;
        self.pin.set_state(self.rest.into())
    }
}

impl<O: OutputPin> Drop for Press<'_, O> {
    fn drop(&mut self) {
        if !self.released {
            // Best effort on cancellation: there is no caller left to report an error to, and
            // the next call reads the line and reports it.
            let _ = self.pin.set_state(self.rest.into());
        }
    }
}

fn pin_err(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

impl<O, I> RelayDevice<O, I>
where
    O: StatefulOutputPin + Send + 'static,
    I: InputPin + Send + 'static,
{
    /// A device for these lines. Refuses duplicate names, a sense config without a sense pin
    /// (or the reverse), and a button whose long press is not longer than its press.
    pub fn new(
        board: impl Into<String>,
        lines: Vec<(LineConfig, LinePins<O, I>)>,
    ) -> Result<Self, RelayError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::with_capacity(lines.len());
        for (cfg, pins) in lines {
            if !seen.insert(cfg.name.clone()) {
                return Err(RelayError::Config {
                    line: cfg.name,
                    detail: "two lines have this name; give each line its own name".into(),
                });
            }
            if cfg.sense.is_some() != pins.sense.is_some() {
                return Err(RelayError::Config {
                    line: cfg.name,
                    detail: "the sense settings and the sense pin must be given together".into(),
                });
            }
            if let Mode::PowerButton { press, long_press } = cfg.mode {
                if long_press <= press || press.is_zero() {
                    return Err(RelayError::Config {
                        line: cfg.name,
                        detail: format!(
                            "a power button needs 0 < press < long press (got {} ms and {} ms); a long press that is not longer than a press cannot force the node off",
                            press.as_millis(),
                            long_press.as_millis()
                        ),
                    });
                }
            }
            out.push(Line {
                cfg,
                state: Mutex::new(LineState {
                    pins,
                    switched: None,
                }),
            });
        }
        if out.is_empty() {
            return Err(RelayError::Config {
                line: String::new(),
                detail: "a relay device needs at least one line".into(),
            });
        }
        Ok(Self {
            board: board.into(),
            lines: out,
        })
    }

    fn line(&self, port: Option<&str>) -> Result<&Line<O, I>, DeviceError> {
        match port {
            None if self.lines.len() == 1 => Ok(&self.lines[0]),
            None => Err(DeviceError::NoSuchPort {
                port: "(none: this relay device has several lines, name one)".into(),
            }),
            Some(p) => self
                .lines
                .iter()
                .find(|l| l.cfg.name == p)
                .ok_or_else(|| DeviceError::NoSuchPort { port: p.into() }),
        }
    }

    /// Reads the line as its basis allows, waiting out the settle time first.
    async fn read(cfg: &LineConfig, st: &mut LineState<O, I>) -> Result<Reading, RelayError> {
        match cfg.basis() {
            Basis::SenseLine => {
                if let (Some(s), Some(t)) = (cfg.sense, st.switched) {
                    tokio::time::sleep_until(t + s.settle).await;
                }
                let Some(pin) = st.pins.sense.as_mut() else {
                    return Ok(Reading::Nothing);
                };
                let high = pin.is_high().map_err(|e| RelayError::PinRead {
                    line: cfg.name.clone(),
                    pin: cfg.sense_label.clone().unwrap_or_default(),
                    detail: pin_err(e),
                })?;
                Ok(Reading::Sense { high })
            }
            Basis::RelayOutputNoSense => {
                let high = st
                    .pins
                    .output
                    .is_set_high()
                    .map_err(|e| RelayError::PinRead {
                        line: cfg.name.clone(),
                        pin: cfg.output_label.clone(),
                        detail: pin_err(e),
                    })?;
                Ok(Reading::Output { high })
            }
            Basis::NotReadable(_) => Ok(Reading::Nothing),
        }
    }

    fn write(cfg: &LineConfig, pin: &mut O, high: bool) -> Result<(), RelayError> {
        pin.set_state(high.into())
            .map_err(|e| RelayError::PinWrite {
                line: cfg.name.clone(),
                pin: cfg.output_label.clone(),
                detail: pin_err(e),
            })?;
        // Read the level back: a write the controller silently ignored (a line taken over by
        // a pin-mux change, a pin owned by firmware) fails here, not at confirmation.
        let now = pin.is_set_high().map_err(|e| RelayError::PinRead {
            line: cfg.name.clone(),
            pin: cfg.output_label.clone(),
            detail: pin_err(e),
        })?;
        if now != high {
            return Err(RelayError::OutputNotTaken {
                line: cfg.name.clone(),
                pin: cfg.output_label.clone(),
                wanted_high: high,
            });
        }
        Ok(())
    }

    async fn switch(
        cfg: &LineConfig,
        st: &mut LineState<O, I>,
        command: PowerCommand,
    ) -> Result<(), RelayError> {
        let rest = cfg.resting_level();
        match (cfg.mode, command) {
            (Mode::PowerCut, PowerCommand::Off) => {
                Self::write(cfg, &mut st.pins.output, !rest)?;
            }
            (Mode::PowerCut, PowerCommand::On) => {
                Self::write(cfg, &mut st.pins.output, rest)?;
            }
            (Mode::PowerButton { press, long_press }, command) => {
                let hold = match command {
                    // A hard off: the long press forces off whatever the OS does (a short
                    // press only asks the OS to shut down, which a hung node ignores).
                    PowerCommand::Off => long_press,
                    PowerCommand::On => {
                        if cfg.sense.is_none() {
                            // A press toggles: on a node that is in fact running, it starts
                            // an ACPI shutdown. Without a sense line we cannot tell.
                            return Err(RelayError::BlindPowerOn {
                                line: cfg.name.clone(),
                            });
                        }
                        press
                    }
                };
                Self::write(cfg, &mut st.pins.output, !rest)?;
                let guard = Press {
                    pin: &mut st.pins.output,
                    rest,
                    released: false,
                };
                tokio::time::sleep(hold).await;
                guard.release().map_err(|e| RelayError::PinWrite {
                    line: cfg.name.clone(),
                    pin: cfg.output_label.clone(),
                    detail: format!("{} (releasing the button)", pin_err(e)),
                })?;
            }
        }
        st.switched = Some(Instant::now());
        // With a sense line, wait for it to agree (settle first, then poll up to the timeout),
        // so a welded contact or a node on a second supply fails this call by name.
        if let Some(s) = cfg.sense {
            let expect = command.expected_state();
            let until = Instant::now() + s.settle + s.timeout;
            loop {
                let reading = Self::read(cfg, st).await?;
                let state = judge(cfg, reading);
                if state == expect {
                    return Ok(());
                }
                if Instant::now() >= until {
                    return Err(RelayError::SenseDisagrees {
                        line: cfg.name.clone(),
                        pin: cfg.sense_label.clone().unwrap_or_default(),
                        command,
                        state,
                        waited_ms: u64::try_from((s.settle + s.timeout).as_millis())
                            .unwrap_or(u64::MAX),
                    });
                }
                tokio::time::sleep(s.poll.min(until - Instant::now())).await;
            }
        }
        Ok(())
    }

    /// Reads a line and says what it proves: the state and the basis of the claim. The
    /// engine reads the state through `status` and the basis through `read_back_basis`, for
    /// history and operators.
    pub async fn read_back(&self, port: Option<&str>) -> Result<(PowerState, Basis), DeviceError> {
        let line = self.line(port)?;
        let mut st = line.state.lock().await;
        let reading = Self::read(&line.cfg, &mut st).await?;
        let state = judge(&line.cfg, reading);
        let basis = line.cfg.basis();
        if state == PowerState::Off {
            tracing::info!(device = %self.board, line = %line.cfg.name, basis = %basis, "relay line reads off");
        }
        Ok((state, basis))
    }
}

#[async_trait]
impl<O, I> PowerDevice for RelayDevice<O, I>
where
    O: StatefulOutputPin + Send + 'static,
    I: InputPin + Send + 'static,
{
    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError> {
        Ok(self.read_back(port).await?.0)
    }

    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        let line = self.line(port)?;
        let mut st = line.state.lock().await;
        Self::switch(&line.cfg, &mut st, command).await?;
        // The switch is done (the node most likely loses power, and an operator can confirm
        // it), but no read of this line can ever prove it: say so now. Returning Ok would
        // leave the engine reading `unknown` until the attempt deadline, then retrying.
        if let Basis::NotReadable(why) = line.cfg.basis() {
            return Err(RelayError::Unconfirmable {
                line: line.cfg.name.clone(),
                command,
                why,
            }
            .into());
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Outlet>, DeviceError> {
        let mut out = Vec::with_capacity(self.lines.len());
        for l in &self.lines {
            let (state, _) = self.read_back(Some(&l.cfg.name)).await?;
            out.push(Outlet {
                id: l.cfg.name.clone(),
                name: Some(l.cfg.output_label.clone()),
                state: Some(state),
            });
        }
        Ok(out)
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        // Reading every line checks that every pin still answers.
        let mut parts = Vec::with_capacity(self.lines.len());
        for l in &self.lines {
            let (state, basis) = self.read_back(Some(&l.cfg.name)).await?;
            let mode = match l.cfg.mode {
                Mode::PowerCut => "power cut",
                Mode::PowerButton { .. } => "power button",
            };
            parts.push(format!(
                "{} ({mode}, {}): {state}, {basis}",
                l.cfg.name, l.cfg.output_label
            ));
        }
        Ok(Identity {
            kind: "relay-board".into(),
            value: self.board.clone(),
            description: parts.join("; "),
        })
    }

    /// The line's basis: what its read-back proves (the sense line, or the relay output alone
    /// with no sense line), or why it proves nothing.
    fn read_back_basis(&self, port: Option<&str>) -> Option<String> {
        self.line(port).ok().map(|l| l.cfg.basis().to_string())
    }

    fn warnings(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| match l.cfg.basis() {
                Basis::SenseLine => None,
                b @ Basis::RelayOutputNoSense => Some(format!(
                    "relay line {}: off is confirmed by {b}; a welded contact or a second supply is not caught",
                    l.cfg.name
                )),
                b @ Basis::NotReadable(_) => Some(format!("relay line {}: {b}", l.cfg.name)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
