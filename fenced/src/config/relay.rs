//! Kind `relay` (issue 18): a relay board on GPIO lines of one chip, each line a node's power
//! cut or power button with an optional sense line, straight into the driver's
//! [`LineConfig`]. Level entries name its lines (`relays:node2`).
//!
//! Two backends (`backend = "cdev" | "rppal"`):
//! - `cdev` (the default): the Linux GPIO character device. The address of the device is its
//!   GPIO chip (`/dev/gpiochip0`): that is what must exist and what fenced must be allowed to
//!   open. A sense line is on the same chip as its relay.
//! - `rppal`: a Raspberry Pi's GPIO registers through rppal (fenced's feature `rppal`), lines
//!   named by BCM number and no `chip`. A fenced built without the feature, or a configured
//!   board that is not a Raspberry Pi, is refused at the `backend` line.

use super::device::{DeviceCx, KindSettings, KindTable};
use super::ConfigError;
use drivers::relay::line::Unreadable;
use drivers::relay::{Basis, LineConfig, Mode, Polarity, SenseConfig};
use drivers::{DeviceError, PowerDevice};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A line offset on the chip (`gpioinfo` lists them); the kernel's offsets are `u32`, but no
/// GPIO controller has anywhere near this many lines, so a larger number is a typo.
const OFFSET: (u32, u32) = (0, 65_535);
/// A short press: long enough for a board to see it, short of any forced-off threshold.
const PRESS_MS: (u32, u32) = (20, 3_000);
/// A long press: ATX boards force off after 4 s; some need longer, none need minutes.
const LONG_PRESS_MS: (u32, u32) = (1_000, 30_000);
/// Time after switching before the sense line is believed (supplies discharge, LEDs fade).
const SETTLE_MS: (u32, u32) = (0, 60_000);
/// Time after the settle time for the sense line to agree before the switch fails.
const SENSE_TIMEOUT_MS: (u32, u32) = (100, 600_000);
/// How often the sense line is read while waiting.
const SENSE_POLL_MS: (u32, u32) = (10, 10_000);
/// BCM GPIO numbers rppal can address: BCM2711 has 58 (GPIO0-57), RP1's first bank 28.
const BCM: (u32, u32) = (0, 57);
/// How the rppal backend names the Raspberry Pi's GPIO block (the device's address).
const RPPAL_ADDRESS: &str = "Raspberry Pi GPIO (rppal)";
/// Profiles whose GPIO rppal drives (boards/profiles): the Raspberry Pi SoCs and RP1.
const RPPAL_BOARDS: &[&str] = &["raspberry-pi-", "compute-module-"];

/// `[devices.NAME]` with `kind = "relay"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RelayTable {
    backend: Option<Spanned<String>>,
    chip: Option<Spanned<PathBuf>>,
    // Plain tables: toml gives no span for a table written under its own header.
    lines: Option<BTreeMap<String, LineTable>>,
}

/// `[devices.NAME.lines.LINE]`: one relay line; its name is the port level entries use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineTable {
    line: Option<Spanned<i64>>,
    polarity: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    press_ms: Option<Spanned<i64>>,
    long_press_ms: Option<Spanned<i64>>,
    sense_line: Option<Spanned<i64>>,
    sense_polarity: Option<Spanned<String>>,
    sense_settle_ms: Option<Spanned<i64>>,
    sense_timeout_ms: Option<Spanned<i64>>,
    sense_poll_ms: Option<Spanned<i64>>,
    confirm_off_by_relay_output_without_sense: Option<Spanned<bool>>,
}

/// One checked relay line: the driver's configuration and where its pins are on the chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLine {
    /// The driver's view of the line (name, polarity, mode, sense, opt-in).
    pub config: LineConfig,
    /// The relay output's offset on the chip.
    pub offset: u32,
    /// The sense input's offset on the chip, if wired.
    pub sense_offset: Option<u32>,
}

/// Which GPIO access drives the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayBackend {
    /// The Linux GPIO character device (`gpiocdev`): any board, lines requested exclusively.
    Cdev,
    /// A Raspberry Pi's GPIO registers through `rppal` (fenced's feature `rppal`), by BCM number.
    Rppal,
}

/// A checked relay device: its backend, its chip and its lines, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Which GPIO access drives the lines.
    pub backend: RelayBackend,
    /// The GPIO character device, e.g. `/dev/gpiochip0` (`cdev`). With `rppal`, the board
    /// profile's header chip, whose offsets are the BCM numbers, used only for the board
    /// checks (empty without a board).
    pub chip: PathBuf,
    /// The lines.
    pub lines: Vec<RelayLine>,
    /// The kernel label the chip must carry, from the configured board's profile: checked when
    /// fenced claims the lines, because the same path can name another chip under another
    /// kernel (Raspberry Pi 5: `/dev/gpiochip0` is an SoC bank before 6.6.45, RP1 after).
    pub board_label: Option<String>,
}

impl KindTable for RelayTable {
    type Settings = RelaySettings;
    const SECRETS: &'static [&'static str] = &[];

    fn resolve(self, cx: &DeviceCx<'_>) -> Result<RelaySettings, ConfigError> {
        let backend = backend(cx, &self.backend)?;
        let chip = match backend {
            RelayBackend::Cdev => {
                let chip = cx.required(
                    &self.chip,
                    "chip",
                    "a relay device needs `chip = \"/dev/gpiochipN\"` (`gpiodetect` lists the chips)",
                )?;
                cx.path(chip.get_ref())
            }
            RelayBackend::Rppal => {
                if let Some(c) = &self.chip {
                    return Err(cx.at(c, "chip", "the rppal backend drives the SoC's GPIO registers by BCM number, not a character device; remove `chip` (or use `backend = \"cdev\"`)"));
                }
                // The header chip's offsets are the BCM numbers rppal takes, so the board's
                // line checks apply unchanged.
                cx.ctx
                    .board()
                    .and_then(|b| b.board.header_chip())
                    .map(|c| PathBuf::from(&c.chip))
                    .unwrap_or_default()
            }
        };
        let lines = match &self.lines {
            Some(l) if !l.is_empty() => l,
            _ => return Err(cx.missing("lines", "a relay device needs at least one line: `[devices.NAME.lines.LINE]` with `line`, `polarity` and `mode`")),
        };
        // Offset → the line that uses it, so a pin given twice is refused here, at its line,
        // rather than by the kernel as "busy" (held by fenced itself) when the daemon starts.
        let mut used: BTreeMap<u32, String> = BTreeMap::new();
        let mut out = Vec::with_capacity(lines.len());
        for (name, t) in lines {
            let line = t.resolve(cx, name, &chip, backend)?;
            // The configured board must have the line, and with a HAT the output must be one
            // of its relays at its polarity (a wrong one switches it when fenced claims it).
            let role = boards::LineRole::Relay(match line.config.polarity {
                Polarity::ActiveHigh => boards::Polarity::ActiveHigh,
                Polarity::ActiveLow => boards::Polarity::ActiveLow,
            });
            let span = |v: &Option<Spanned<i64>>| v.as_ref().map(|v| v.span());
            cx.gpio_line_on_board(
                &chip,
                line.offset,
                role,
                span(&t.line),
                &format!("lines.{name}.line"),
            )?;
            if let Some(off) = line.sense_offset {
                cx.gpio_line_on_board(
                    &chip,
                    off,
                    boards::LineRole::Sense,
                    span(&t.sense_line),
                    &format!("lines.{name}.sense_line"),
                )?;
            }
            for (offset, value, field) in [
                (Some(line.offset), &t.line, "line"),
                (line.sense_offset, &t.sense_line, "sense_line"),
            ] {
                let Some(offset) = offset else { continue };
                if let Some(other) = used.insert(offset, format!("lines.{name}.{field}")) {
                    let f = format!("lines.{name}.{field}");
                    let msg = format!("line {offset} on {} is already used by {other}; each relay output and sense input needs its own line", chip.display());
                    return Err(match value {
                        Some(v) => cx.at(v, &f, msg),
                        None => cx.missing(&f, msg),
                    });
                }
            }
            out.push(line);
        }
        // rppal reads no chip label: only the character device can name the wrong chip.
        let board_label = (backend == RelayBackend::Cdev)
            .then(|| cx.ctx.board())
            .flatten()
            .and_then(|b| {
                b.board
                    .gpio
                    .iter()
                    .find(|c| c.is_at(&chip))
                    .map(|c| c.label.clone())
            });
        Ok(RelaySettings {
            backend,
            chip,
            lines: out,
            board_label,
        })
    }
}

/// Reads `backend`: `cdev` unless written. `rppal` needs fenced's `rppal` feature and, when a
/// board is configured, a Raspberry Pi board (rppal reads the SoC's registers and refuses any
/// other machine at start; refusing it here says so at check-config, at the line).
fn backend(cx: &DeviceCx<'_>, v: &Option<Spanned<String>>) -> Result<RelayBackend, ConfigError> {
    let Some(v) = v else {
        return Ok(RelayBackend::Cdev);
    };
    match v.get_ref().as_str() {
        "cdev" => Ok(RelayBackend::Cdev),
        "rppal" if !cfg!(feature = "rppal") => Err(cx.at(
            v,
            "backend",
            "this fenced was built without its `rppal` feature; use `backend = \"cdev\"` (the GPIO character device, which every Raspberry Pi OS and Debian kernel has) or a fenced built with `--features rppal`",
        )),
        "rppal" => match cx.ctx.board() {
            Some(b) if !RPPAL_BOARDS.iter().any(|p| b.name.starts_with(p)) => Err(cx.at(
                v,
                "backend",
                format!(
                    "the rppal backend only drives a Raspberry Pi's GPIO, and board `{}` is not one; use `backend = \"cdev\"`",
                    b.name
                ),
            )),
            _ => Ok(RelayBackend::Rppal),
        },
        other => Err(cx.at(
            v,
            "backend",
            format!("expected \"cdev\" or \"rppal\", found `{other}`"),
        )),
    }
}

/// Reads a polarity word.
fn polarity(cx: &DeviceCx<'_>, v: &Spanned<String>, field: &str) -> Result<Polarity, ConfigError> {
    match v.get_ref().as_str() {
        "active-high" => Ok(Polarity::ActiveHigh),
        "active-low" => Ok(Polarity::ActiveLow),
        other => Err(cx.at(
            v,
            field,
            format!("expected \"active-high\" or \"active-low\", found `{other}`"),
        )),
    }
}

impl LineTable {
    /// Where the first setting of this line's table is written.
    fn first_span(&self) -> Option<std::ops::Range<usize>> {
        let ints = [
            &self.line,
            &self.press_ms,
            &self.long_press_ms,
            &self.sense_line,
            &self.sense_settle_ms,
            &self.sense_timeout_ms,
            &self.sense_poll_ms,
        ];
        let words = [&self.polarity, &self.mode, &self.sense_polarity];
        ints.into_iter()
            .flatten()
            .map(|v| v.span())
            .chain(words.into_iter().flatten().map(|v| v.span()))
            .chain(
                self.confirm_off_by_relay_output_without_sense
                    .iter()
                    .map(|v| v.span()),
            )
            .min_by_key(|s| s.start)
    }

    fn resolve(
        &self,
        cx: &DeviceCx<'_>,
        name: &str,
        chip: &std::path::Path,
        backend: RelayBackend,
    ) -> Result<RelayLine, ConfigError> {
        let f = |field: &str| format!("lines.{name}.{field}");
        // A missing setting is reported at the line's first setting (its table's first line),
        // or at the device's header if the line's table is empty.
        let span = self.first_span().unwrap_or_else(|| cx.span.clone());
        let missing = |field: &str, msg: &str| {
            cx.ctx
                .err(Some(span.clone()), &cx.field(&f(field)), msg.to_string())
        };
        let line = self.line.as_ref().ok_or_else(|| {
            missing(
                "line",
                "a relay line needs `line = N`, its offset on the chip (`gpioinfo` lists them)",
            )
        })?;
        // rppal addresses BCM numbers, a much smaller range than a chip's offsets.
        let range = match backend {
            RelayBackend::Cdev => OFFSET,
            RelayBackend::Rppal => BCM,
        };
        let offset = cx.count(&Some(line.clone()), &f("line"), 0, range, "")?;
        // Required, not defaulted: a wrong polarity would cut every node's power the moment
        // fenced claims the lines.
        let pol = self.polarity.as_ref().ok_or_else(|| {
            missing("polarity", "a relay line needs `polarity = \"active-high\"` or `\"active-low\"` (the level that energizes the relay; a wrong one cuts the node's power when fenced starts)")
        })?;
        let pol = polarity(cx, pol, &f("polarity"))?;
        let mode_word = self.mode.as_ref().ok_or_else(|| {
            missing("mode", "a relay line needs `mode = \"power-cut\"` (the relay holds the node off) or `\"power-button\"` (the relay presses its power button)")
        })?;
        let mode = match mode_word.get_ref().as_str() {
            "power-cut" => {
                for (v, field) in [
                    (&self.press_ms, "press_ms"),
                    (&self.long_press_ms, "long_press_ms"),
                ] {
                    if let Some(v) = v {
                        return Err(cx.at(v, &f(field), "only a `mode = \"power-button\"` line is pressed; remove it or change the mode"));
                    }
                }
                Mode::PowerCut
            }
            "power-button" => {
                let press = cx.millis(&self.press_ms, &f("press_ms"), 200, PRESS_MS)?;
                let long_press = cx.millis(
                    &self.long_press_ms,
                    &f("long_press_ms"),
                    6_000,
                    LONG_PRESS_MS,
                )?;
                if long_press <= press {
                    let msg = format!("a long press must be longer than a press ({} ms), or it cannot force the node off", press.as_millis());
                    return Err(match &self.long_press_ms {
                        Some(v) => cx.at(v, &f("long_press_ms"), msg),
                        None => missing("long_press_ms", &msg),
                    });
                }
                Mode::PowerButton { press, long_press }
            }
            other => {
                return Err(cx.at(
                    mode_word,
                    &f("mode"),
                    format!("expected \"power-cut\" or \"power-button\", found `{other}`"),
                ))
            }
        };
        let (sense, sense_offset) = match &self.sense_line {
            None => {
                for (v, field) in [
                    (&self.sense_settle_ms, "sense_settle_ms"),
                    (&self.sense_timeout_ms, "sense_timeout_ms"),
                    (&self.sense_poll_ms, "sense_poll_ms"),
                ] {
                    if let Some(v) = v {
                        return Err(cx.at(
                            v,
                            &f(field),
                            "this line has no `sense_line`; add one or remove this setting",
                        ));
                    }
                }
                if let Some(v) = &self.sense_polarity {
                    return Err(cx.at(
                        v,
                        &f("sense_polarity"),
                        "this line has no `sense_line`; add one or remove this setting",
                    ));
                }
                (None, None)
            }
            Some(s) => {
                let offset = cx.count(&Some(s.clone()), &f("sense_line"), 0, range, "")?;
                let sp = self.sense_polarity.as_ref().ok_or_else(|| {
                    missing("sense_polarity", "a sense line needs `sense_polarity = \"active-high\"` or `\"active-low\"` (the level that means the node has power)")
                })?;
                let sense = SenseConfig {
                    polarity: polarity(cx, sp, &f("sense_polarity"))?,
                    settle: cx.millis(
                        &self.sense_settle_ms,
                        &f("sense_settle_ms"),
                        1_000,
                        SETTLE_MS,
                    )?,
                    timeout: cx.millis(
                        &self.sense_timeout_ms,
                        &f("sense_timeout_ms"),
                        5_000,
                        SENSE_TIMEOUT_MS,
                    )?,
                    poll: cx.millis(
                        &self.sense_poll_ms,
                        &f("sense_poll_ms"),
                        100,
                        SENSE_POLL_MS,
                    )?,
                };
                (Some(sense), Some(offset))
            }
        };
        let opt_in = match &self.confirm_off_by_relay_output_without_sense {
            Some(v) if *v.get_ref() => {
                let field = f("confirm_off_by_relay_output_without_sense");
                if sense.is_some() {
                    return Err(cx.at(v, &field, "this line has a sense line, which is what confirms it; remove this setting (it is only for power-cut lines without one)"));
                }
                if matches!(mode, Mode::PowerButton { .. }) {
                    return Err(cx.at(v, &field, "a button press cannot be read back from the relay output, so this setting cannot apply to a power-button line; wire a sense line or have an operator confirm"));
                }
                true
            }
            _ => false,
        };
        let label = |off: u32| match backend {
            RelayBackend::Cdev => format!("{} line {off}", chip.display()),
            RelayBackend::Rppal => format!("BCM {off}"),
        };
        Ok(RelayLine {
            config: LineConfig {
                name: name.to_string(),
                output_label: label(offset),
                sense_label: sense_offset.map(label),
                polarity: pol,
                mode,
                sense,
                confirm_off_by_relay_output_without_sense: opt_in,
            },
            offset,
            sense_offset,
        })
    }
}

fn polarity_word(p: Polarity) -> &'static str {
    match p {
        Polarity::ActiveHigh => "active-high",
        Polarity::ActiveLow => "active-low",
    }
}

/// What a reading of the line can prove, in the words `fenced check-config` prints.
fn proof(c: &LineConfig) -> String {
    match c.basis() {
        Basis::SenseLine => "confirms by sense line".into(),
        basis @ Basis::RelayOutputNoSense => format!("confirms by {basis}"),
        Basis::NotReadable(Unreadable::ButtonWithoutSense) => {
            "cannot confirm: button without sense line (an operator must confirm)".into()
        }
        Basis::NotReadable(Unreadable::CutWithoutSenseNotOptedIn) => "cannot confirm: power cut without sense line and without confirm_off_by_relay_output_without_sense (an operator must confirm)".into(),
    }
}

impl KindSettings for RelaySettings {
    fn address(&self) -> String {
        match self.backend {
            RelayBackend::Cdev => self.chip.display().to_string(),
            RelayBackend::Rppal => RPPAL_ADDRESS.into(),
        }
    }

    fn describe(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        let lines: Vec<String> = self
            .lines
            .iter()
            .map(|l| {
                let c = &l.config;
                let mode = match c.mode {
                    Mode::PowerCut => "power-cut".to_string(),
                    Mode::PowerButton { press, long_press } => format!(
                        "power-button press {} ms, long press {} ms",
                        ms(press),
                        ms(long_press)
                    ),
                };
                let sense = match (c.sense, l.sense_offset) {
                    (Some(s), Some(off)) => format!(
                        ", sense line {off} {} settle {} ms timeout {} ms",
                        polarity_word(s.polarity),
                        ms(s.settle),
                        ms(s.timeout)
                    ),
                    _ => String::new(),
                };
                format!(
                    "{}: line {} {} {mode}{sense}: {}",
                    c.name,
                    l.offset,
                    polarity_word(c.polarity),
                    proof(c)
                )
            })
            .collect();
        match self.backend {
            RelayBackend::Cdev => lines.join("; "),
            RelayBackend::Rppal => format!("rppal, BCM numbers: {}", lines.join("; ")),
        }
    }

    fn build(&self, _node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        match self.backend {
            RelayBackend::Cdev => self.build_cdev(),
            RelayBackend::Rppal => self.build_rppal(),
        }
    }
}

impl RelaySettings {
    #[cfg(target_os = "linux")]
    fn build_cdev(&self) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        use drivers::relay::cdev::CdevPin;
        use drivers::relay::{LinePins, RelayDevice};
        if let Some(want) = &self.board_label {
            check_chip_label(&self.chip, want)?;
        }
        let mut lines = Vec::with_capacity(self.lines.len());
        for l in &self.lines {
            // Each request is exclusive in the kernel and held as long as the device lives;
            // a chip or line that cannot be had fails here, naming the chip and the line.
            let output = CdevPin::output(&self.chip, l.offset, l.config.resting_level())?;
            let sense = match l.sense_offset {
                Some(off) => Some(CdevPin::input(&self.chip, off)?),
                None => None,
            };
            lines.push((l.config.clone(), LinePins { output, sense }));
        }
        let device = RelayDevice::new(self.chip.display().to_string(), lines)?;
        Ok(Arc::new(device))
    }

    #[cfg(not(target_os = "linux"))]
    fn build_cdev(&self) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        Err(DeviceError::Hardware {
            device: self.chip.display().to_string(),
            detail:
                "relay devices use the Linux GPIO character device; this build is not for Linux: run fenced on Linux"
                    .into(),
        })
    }

    /// Opens the Raspberry Pi's GPIO block and takes the lines by BCM number. rppal holds no
    /// kernel claim: it refuses a pin taken twice in this process, not one another process
    /// drives (drivers/src/relay/rpi.rs), which is why `cdev` is the default.
    #[cfg(feature = "rppal")]
    fn build_rppal(&self) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        use drivers::relay::rpi;
        use drivers::relay::{LinePins, RelayDevice};
        let gpio = rpi::open()?;
        let bcm = |off: u32| {
            u8::try_from(off).map_err(|_| DeviceError::Policy {
                detail: format!("BCM {off} is not a Raspberry Pi GPIO number; fix the line"),
            })
        };
        let mut lines = Vec::with_capacity(self.lines.len());
        for l in &self.lines {
            let output = rpi::output(&gpio, bcm(l.offset)?, l.config.resting_level())?;
            let sense = match l.sense_offset {
                Some(off) => Some(rpi::input(&gpio, bcm(off)?)?),
                None => None,
            };
            lines.push((l.config.clone(), LinePins { output, sense }));
        }
        Ok(Arc::new(RelayDevice::new(RPPAL_ADDRESS, lines)?))
    }

    /// The config refuses `backend = "rppal"` in this build; this says so again should a
    /// settings value be made some other way.
    #[cfg(not(feature = "rppal"))]
    fn build_rppal(&self) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        Err(DeviceError::Policy {
            detail: "this fenced was built without its `rppal` feature; use `backend = \"cdev\"` or a fenced built with `--features rppal`".into(),
        })
    }
}

/// Refuses a chip whose kernel label is not the board profile's: its lines are not the ones
/// the profile (and the wiring) describe, and driving them could switch the board's own.
#[cfg(target_os = "linux")]
fn check_chip_label(chip: &std::path::Path, want: &str) -> Result<(), DeviceError> {
    let address = chip.display().to_string();
    let info = gpiocdev::chip::Chip::from_path(chip)
        .and_then(|c| c.info())
        .map_err(|e| DeviceError::Unreachable {
            address: address.clone(),
            reason: format!(
                "cannot read the GPIO chip's label ({e}); `gpiodetect` lists the chips"
            ),
        })?;
    if info.label == want {
        return Ok(());
    }
    Err(DeviceError::Policy {
        detail: format!(
            "GPIO chip {address} is `{}` ({} lines), but the board profile's chip at that path is `{want}`: on this kernel the board's lines are on another chip (`gpiodetect` shows which); fix `chip`",
            info.label, info.num_lines
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, DeviceKind};
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/palisade/fenced.toml"), text, &|_: &str| {
            None
        })
    }

    /// A board with one line of each basis: sensed button, opted-in cut, unsensed button.
    const BOARD: &str = r#"
[devices.relays]
kind = "relay"
chip = "/dev/gpiochip0"

[devices.relays.lines.node1]
line = 17
polarity = "active-low"
mode = "power-button"
press_ms = 300
long_press_ms = 7000
sense_line = 27
sense_polarity = "active-high"
sense_settle_ms = 500
sense_timeout_ms = 2000
sense_poll_ms = 50

[devices.relays.lines.node2]
line = 18
polarity = "active-high"
mode = "power-cut"
confirm_off_by_relay_output_without_sense = true

[devices.relays.lines.node3]
line = 19
polarity = "active-high"
mode = "power-button"

[targets.node1]
levels = [["relays:node1"]]
"#;

    fn settings(c: &Config) -> &RelaySettings {
        let DeviceKind::Relay(s) = &c.devices["relays"].kind else {
            panic!("relays is a relay device")
        };
        s
    }

    /// The 1-based line of the first line of `text` starting with `needle`.
    fn line(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("`{needle}` not in {text}"))
    }

    #[test]
    fn a_relay_board_converts_to_the_drivers_line_configs() {
        let c = parse(BOARD).unwrap();
        assert_eq!(c.devices["relays"].address(), "/dev/gpiochip0");
        let s = settings(&c);
        assert_eq!(s.chip, Path::new("/dev/gpiochip0"));
        let [n1, n2, n3] = &s.lines[..] else {
            panic!("three lines: {s:?}")
        };
        assert_eq!((n1.offset, n1.sense_offset), (17, Some(27)));
        assert_eq!(
            n1.config,
            LineConfig {
                name: "node1".into(),
                output_label: "/dev/gpiochip0 line 17".into(),
                sense_label: Some("/dev/gpiochip0 line 27".into()),
                polarity: Polarity::ActiveLow,
                mode: Mode::PowerButton {
                    press: Duration::from_millis(300),
                    long_press: Duration::from_secs(7),
                },
                sense: Some(SenseConfig {
                    polarity: Polarity::ActiveHigh,
                    settle: Duration::from_millis(500),
                    timeout: Duration::from_secs(2),
                    poll: Duration::from_millis(50),
                }),
                confirm_off_by_relay_output_without_sense: false,
            }
        );
        assert_eq!(n1.config.basis(), Basis::SenseLine);
        assert_eq!((n2.config.mode, n2.sense_offset), (Mode::PowerCut, None));
        assert_eq!(n2.config.basis(), Basis::RelayOutputNoSense);
        // A button's press defaults: 200 ms, and 6 s to force off (ATX needs 4 s or more).
        assert_eq!(
            n3.config.mode,
            Mode::PowerButton {
                press: Duration::from_millis(200),
                long_press: Duration::from_secs(6),
            }
        );
        assert_eq!(
            n3.config.basis(),
            Basis::NotReadable(Unreadable::ButtonWithoutSense)
        );
    }

    #[test]
    fn describe_says_what_each_line_can_prove() {
        let c = parse(BOARD).unwrap();
        let d = c.devices["relays"].kind.describe();
        assert!(d.contains("node1: line 17 active-low power-button press 300 ms, long press 7000 ms, sense line 27 active-high settle 500 ms timeout 2000 ms: confirms by sense line"), "{d}");
        assert!(
            d.contains("node2: line 18 active-high power-cut: confirms by relay output read back, no sense line"),
            "{d}"
        );
        assert!(
            d.contains("node3: line 19 active-high power-button press 200 ms, long press 6000 ms: cannot confirm: button without sense line"),
            "{d}"
        );
        // Without the opt-in, a cut line without sense confirms nothing either.
        let text = BOARD.replace("confirm_off_by_relay_output_without_sense = true\n", "");
        let d = parse(&text).unwrap().devices["relays"].kind.describe();
        assert!(
            d.contains("node2: line 18 active-high power-cut: cannot confirm: power cut without sense line"),
            "{d}"
        );
    }

    #[test]
    fn every_relay_range_is_refused_at_its_line_saying_the_range() {
        for (from, to, range) in [
            (
                "line = 17",
                "line = 70000",
                "expected 0 to 65535, found 70000",
            ),
            ("line = 18", "line = -1", "expected 0 to 65535, found -1"),
            (
                "sense_line = 27",
                "sense_line = 99999",
                "expected 0 to 65535, found 99999",
            ),
            (
                "press_ms = 300",
                "press_ms = 5",
                "expected 20 to 3000 ms, found 5",
            ),
            (
                "long_press_ms = 7000",
                "long_press_ms = 100000",
                "expected 1000 to 30000 ms, found 100000",
            ),
            (
                "sense_settle_ms = 500",
                "sense_settle_ms = 60001",
                "expected 0 to 60000 ms, found 60001",
            ),
            (
                "sense_timeout_ms = 2000",
                "sense_timeout_ms = 10",
                "expected 100 to 600000 ms, found 10",
            ),
            (
                "sense_poll_ms = 50",
                "sense_poll_ms = 0",
                "expected 10 to 10000 ms, found 0",
            ),
            (
                "press_ms = 300\nlong_press_ms = 7000",
                "press_ms = 2000\nlong_press_ms = 1500",
                "must be longer than a press (2000 ms)",
            ),
        ] {
            let text = BOARD.replacen(from, to, 1);
            let e = parse(&text).unwrap_err();
            let want = line(&text, to.lines().last().unwrap_or(to));
            assert_eq!(e.line, Some(want), "{to}: {e}");
            assert!(e.to_string().contains(range), "{to}: {e}");
            assert!(
                e.to_string().starts_with(&format!(
                    "/etc/palisade/fenced.toml:{want}: devices.relays.lines.node"
                )),
                "{to}: {e}"
            );
        }
    }

    #[test]
    fn polarity_and_mode_words_and_misplaced_settings_are_refused_at_their_line() {
        for (from, to, want) in [
            (
                "polarity = \"active-low\"",
                "polarity = \"low\"",
                "expected \"active-high\" or \"active-low\", found `low`",
            ),
            (
                "sense_polarity = \"active-high\"",
                "sense_polarity = \"on\"",
                "expected \"active-high\" or \"active-low\", found `on`",
            ),
            (
                "mode = \"power-cut\"",
                "mode = \"cut\"",
                "expected \"power-cut\" or \"power-button\", found `cut`",
            ),
            (
                "mode = \"power-cut\"",
                "mode = \"power-cut\"\npress_ms = 200",
                "only a `mode = \"power-button\"` line is pressed",
            ),
            (
                "mode = \"power-cut\"",
                "mode = \"power-cut\"\nsense_settle_ms = 200",
                "has no `sense_line`",
            ),
            (
                "line = 19",
                "line = 27",
                "line 27 on /dev/gpiochip0 is already used by lines.node1.sense_line",
            ),
        ] {
            let text = BOARD.replacen(from, to, 1);
            let e = parse(&text).unwrap_err();
            assert_eq!(
                e.line,
                Some(line(&text, to.lines().last().unwrap_or(to))),
                "{to}: {e}"
            );
            assert!(e.message.contains(want), "{to}: {e}");
        }
    }

    #[test]
    fn missing_settings_are_reported_at_the_lines_table() {
        for (remove, want) in [
            ("line = 18\n", "needs `line = N`"),
            (
                "polarity = \"active-high\"\nmode = \"power-cut\"",
                "needs `polarity",
            ),
            ("mode = \"power-cut\"\n", "needs `mode"),
        ] {
            let text = BOARD.replacen(remove, "", 1);
            let e = parse(&text).unwrap_err();
            assert_eq!(
                e.line,
                // The first setting of node2's table: the line after its header.
                Some(line(&text, "[devices.relays.lines.node2]") + 1),
                "{remove}: {e}"
            );
            assert!(e.message.contains(want), "{remove}: {e}");
        }
        let text = BOARD.replacen("sense_polarity = \"active-high\"\n", "", 1);
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("devices.relays.lines.node1.sense_polarity"),
            "{e}"
        );
        let e = parse(&BOARD.replacen("chip = \"/dev/gpiochip0\"\n", "", 1)).unwrap_err();
        assert!(e.message.contains("needs `chip"), "{e}");
    }

    #[test]
    fn the_opt_in_is_only_for_a_cut_line_without_sense() {
        // On a button it would promise a read-back that cannot exist.
        let text = BOARD.replacen("confirm_off_by_relay_output_without_sense = true\n", "", 1);
        let text = text.replacen(
            "line = 19\npolarity = \"active-high\"\nmode = \"power-button\"",
            "line = 19\npolarity = \"active-high\"\nmode = \"power-button\"\nconfirm_off_by_relay_output_without_sense = true",
            1,
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e.line,
            Some(line(
                &text,
                "confirm_off_by_relay_output_without_sense = true"
            )),
            "{e}"
        );
        assert!(
            e.message.contains("cannot apply to a power-button line"),
            "{e}"
        );
        // With a sense line the sense line confirms; the flag would be dead and misleading.
        let text = BOARD.replacen(
            "sense_poll_ms = 50",
            "sense_poll_ms = 50\nconfirm_off_by_relay_output_without_sense = true",
            1,
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("has a sense line"), "{e}");
        // Written false, it is the default.
        let text = BOARD.replacen(
            "confirm_off_by_relay_output_without_sense = true",
            "confirm_off_by_relay_output_without_sense = false",
            1,
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            settings(&c).lines[1].config.basis(),
            Basis::NotReadable(Unreadable::CutWithoutSenseNotOptedIn)
        );
    }

    #[test]
    fn another_kinds_field_is_unknown_at_its_line() {
        let text = BOARD.replacen(
            "chip = \"/dev/gpiochip0\"",
            "chip = \"/dev/gpiochip0\"\naddress = \"192.0.2.1\"",
            1,
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "address = ")), "{e}");
        assert!(e.message.contains("unknown field `address`"), "{e}");
        // Inside a line's table too.
        let text = BOARD.replacen("line = 18", "line = 18\ntimeout_ms = 100", 1);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "timeout_ms = ")), "{e}");
        assert!(e.message.contains("unknown field `timeout_ms`"), "{e}");
    }

    #[test]
    fn the_backend_is_cdev_unless_written_and_an_unknown_one_is_refused_at_its_line() {
        assert_eq!(settings(&parse(BOARD).unwrap()).backend, RelayBackend::Cdev);
        let text = BOARD.replacen(
            "kind = \"relay\"",
            "kind = \"relay\"\nbackend = \"cdev\"",
            1,
        );
        let c = parse(&text).unwrap();
        assert_eq!(settings(&c), settings(&parse(BOARD).unwrap()));
        let text = BOARD.replacen(
            "kind = \"relay\"",
            "kind = \"relay\"\nbackend = \"sysfs\"",
            1,
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "backend = ")), "{e}");
        assert!(
            e.to_string().starts_with(&format!("/etc/palisade/fenced.toml:{}: devices.relays.backend: expected \"cdev\" or \"rppal\", found `sysfs`", line(&text, "backend = "))),
            "{e}"
        );
    }

    /// `BOARD` on the rppal backend: no `chip`, lines by BCM number.
    fn rppal_board() -> String {
        BOARD.replacen("chip = \"/dev/gpiochip0\"", "backend = \"rppal\"", 1)
    }

    #[cfg(not(feature = "rppal"))]
    #[test]
    fn rppal_in_a_build_without_the_feature_is_refused_at_the_backend_line() {
        let text = rppal_board();
        let e = parse(&text).unwrap_err();
        let at = line(&text, "backend = ");
        assert_eq!(e.line, Some(at), "{e}");
        assert!(
            e.to_string().starts_with(&format!("/etc/palisade/fenced.toml:{at}: devices.relays.backend: this fenced was built without its `rppal` feature; use `backend = \"cdev\"`")),
            "{e}"
        );
    }

    #[cfg(feature = "rppal")]
    #[test]
    fn rppal_selects_bcm_pins_without_a_chip() {
        let c = parse(&rppal_board()).unwrap();
        let s = settings(&c);
        assert_eq!(s.backend, RelayBackend::Rppal);
        assert_eq!(c.devices["relays"].address(), "Raspberry Pi GPIO (rppal)");
        assert_eq!(s.board_label, None);
        let n1 = &s.lines[0];
        assert_eq!((n1.offset, n1.sense_offset), (17, Some(27)));
        assert_eq!(n1.config.output_label, "BCM 17");
        assert_eq!(n1.config.sense_label.as_deref(), Some("BCM 27"));
        // The same safety rule as on the character device: what each line can prove.
        assert_eq!(n1.config.basis(), Basis::SenseLine);
        let d = c.devices["relays"].kind.describe();
        assert!(d.starts_with("rppal, BCM numbers: node1: line 17"), "{d}");
        // On a Raspberry Pi board the header's lines are checked as BCM numbers.
        let on_pi = format!("board = \"raspberry-pi-4\"\n{}", rppal_board());
        let c = parse(&on_pi).unwrap();
        assert_eq!(settings(&c).chip, Path::new("/dev/gpiochip0"));
        let e = parse(&on_pi.replacen("line = 19", "line = 40", 1)).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("devices.relays.lines.node3.line"),
            "{e}"
        );
    }

    #[cfg(feature = "rppal")]
    #[test]
    fn rppal_refuses_a_chip_a_non_bcm_line_and_a_board_that_is_not_a_pi_at_their_line() {
        let text = rppal_board().replacen(
            "backend = \"rppal\"",
            "backend = \"rppal\"\nchip = \"/dev/gpiochip0\"",
            1,
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "chip = ")), "{e}");
        assert!(e.message.contains("remove `chip`"), "{e}");
        let text = rppal_board().replacen("line = 18", "line = 58", 1);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "line = 58")), "{e}");
        assert!(e.message.contains("expected 0 to 57, found 58"), "{e}");
        let text = format!("board = \"generic-x86\"\n{}", rppal_board());
        let e = parse(&text).unwrap_err();
        let at = line(&text, "backend = ");
        assert!(
            e.to_string().starts_with(&format!("/etc/palisade/fenced.toml:{at}: devices.relays.backend: the rppal backend only drives a Raspberry Pi's GPIO, and board `generic-x86` is not one")),
            "{e}"
        );
    }

    /// rppal on a machine that is not a Raspberry Pi (this one: no BCM GPIO block) fails at
    /// build, saying so; the backend itself has never driven real BCM GPIO in CI.
    #[cfg(feature = "rppal")]
    #[test]
    fn rppal_off_a_raspberry_pi_fails_the_build_saying_so() {
        let c = parse(&rppal_board()).unwrap();
        let e = crate::devices::build(&c).map(|_| ()).unwrap_err();
        let t = e.to_string();
        assert!(t.starts_with("device `relays` (kind relay): "), "{t}");
        assert!(t.contains("rppal only works on a Raspberry Pi"), "{t}");
    }

    #[test]
    fn a_missing_chip_fails_the_build_naming_chip_and_line() {
        let text = BOARD.replacen("/dev/gpiochip0", "/dev/gpiochip-none", 1);
        let c = parse(&text).unwrap();
        let e = crate::devices::build(&c).map(|_| ()).unwrap_err();
        let t = e.to_string();
        assert!(t.starts_with("device `relays` (kind relay): "), "{t}");
        // The first line requested is node1's output (lines are in name order).
        assert!(
            t.contains("cannot request GPIO line 17 on /dev/gpiochip-none")
                && t.contains("gpiodetect"),
            "{t}"
        );
    }
}
