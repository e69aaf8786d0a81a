//! Board support: which watchdog, which GPIO chips and lines, and which serial ports a fence
//! controller has, and which relays an add-on board (a HAT) puts on its header.
//!
//! A board is a TOML file in `boards/profiles/`, a HAT one in `boards/hats/`; the build embeds
//! every file there, so adding a board is adding a file. [`Board::validate`] and
//! [`Hat::validate`] check a profile is coherent (timeouts in range, line ranges inside the
//! chip, no line or name used twice), and the tests run them over every profile.
//!
//! [`Fitted`] is a board with its HAT, as a configuration names them; its checks say whether a
//! GPIO line, a serial port or a watchdog device is one the board has, and if not, why, naming
//! the board. It is pure data: nothing here opens a device.

use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/profiles.rs"));

/// A board profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// What the board is.
    pub description: String,
    /// Its hardware watchdog.
    pub watchdog: Watchdog,
    /// Its GPIO chips, as `gpiodetect` lists them.
    #[serde(default)]
    pub gpio: Vec<GpioChip>,
    /// Its serial ports (e.g. to a PDU's console).
    #[serde(default)]
    pub serial: Vec<SerialPort>,
}

/// The board's hardware watchdog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watchdog {
    /// Device node.
    pub device: String,
    /// Kernel driver name (`any` when the board may have several).
    pub driver: String,
    /// Shortest timeout the hardware supports, seconds.
    pub min_timeout_s: u32,
    /// Longest timeout the hardware supports, seconds.
    pub max_timeout_s: u32,
}

/// A GPIO chip (a Linux GPIO character device) of the board.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioChip {
    /// Its device node on current kernels, e.g. `/dev/gpiochip0`.
    pub chip: String,
    /// Other names of the same chip (older kernels numbered it differently, or a symlink).
    #[serde(default)]
    pub other_paths: Vec<String>,
    /// The kernel's label for it (`gpiodetect` prints it in brackets).
    pub label: String,
    /// How many lines the chip has.
    pub lines: u32,
    /// The chip that carries the board's expansion header (where a HAT's lines are).
    #[serde(default)]
    pub header: bool,
    /// Inclusive ranges `[first, last]` of the lines a relay or a sense input may use.
    pub usable: Vec<[u32; 2]>,
    /// Why the other lines are not usable.
    #[serde(default)]
    pub note: Option<String>,
}

impl GpioChip {
    /// Whether `path` names this chip.
    pub fn is_at(&self, path: &Path) -> bool {
        Path::new(&self.chip) == path || self.other_paths.iter().any(|p| Path::new(p) == path)
    }

    /// Whether a relay or sense input may use `offset`.
    pub fn is_usable(&self, offset: u32) -> bool {
        self.usable
            .iter()
            .any(|[first, last]| (*first..=*last).contains(&offset))
    }

    /// The usable ranges as written for people: `2-27`, or `none`.
    pub fn usable_text(&self) -> String {
        if self.usable.is_empty() {
            return "none".into();
        }
        self.usable
            .iter()
            .map(|[a, b]| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A serial port of the board. A path ending in `*` stands for every device node with that
/// prefix and no further `/` (`/dev/ttyUSB*`: USB serial adapters, numbered as plugged).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPort {
    /// What the port is.
    pub name: String,
    /// Device node, or a prefix ending in `*`.
    pub path: String,
}

impl SerialPort {
    /// Whether `path` is this port (or one of the ports its pattern stands for).
    pub fn matches(&self, path: &Path) -> bool {
        let Some(path) = path.to_str() else {
            return false;
        };
        match self.path.strip_suffix('*') {
            Some(prefix) => path
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
            None => path == self.path,
        }
    }
}

/// Which level of a line energises a relay (or, for a sense input, means "powered").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Polarity {
    /// Driving the line high.
    ActiveHigh,
    /// Driving the line low.
    ActiveLow,
}

impl fmt::Display for Polarity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Polarity::ActiveHigh => "active-high",
            Polarity::ActiveLow => "active-low",
        })
    }
}

/// An add-on board (a HAT) with relays on the header's GPIO lines.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hat {
    /// What the HAT is.
    pub description: String,
    /// The boards (profile names) whose header it fits.
    pub fits: Vec<String>,
    /// Its relays, each on a line of the board's header chip.
    pub relays: Vec<HatRelay>,
}

/// One relay of a HAT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HatRelay {
    /// The channel's name as printed on the HAT (`ch1`).
    pub name: String,
    /// Its line on the header chip (the BCM GPIO number on a Raspberry Pi).
    pub line: u32,
    /// The level that pulls the relay in.
    pub polarity: Polarity,
}

/// Why a board or HAT profile cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    /// No profile of that name.
    #[error("no {what} profile `{name}`; known: {known} (a profile is a file in boards/{dir}/)")]
    Unknown {
        /// `board` or `HAT`.
        what: &'static str,
        /// `profiles` or `hats`.
        dir: &'static str,
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// The profile does not parse.
    #[error("{file}:{line}: {message}; fix the profile and rebuild")]
    Parse {
        /// The profile's file, e.g. `boards/profiles/raspberry-pi-4.toml`.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// What the TOML reader expected.
        message: String,
    },
    /// The profile parses but is not coherent.
    #[error("{file}: {detail}; fix the profile and rebuild")]
    Invalid {
        /// The profile's file.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// The HAT is not made for this board.
    #[error("HAT `{hat}` does not fit board `{board}`; it fits: {fits}")]
    DoesNotFit {
        /// The HAT.
        hat: String,
        /// The board.
        board: String,
        /// The boards it fits.
        fits: String,
    },
}

/// Parses an embedded profile, errors naming its file and line.
fn parse<T: for<'de> Deserialize<'de>>(file: &str, text: &str) -> Result<T, BoardError> {
    toml::from_str(text).map_err(|e| BoardError::Parse {
        file: file.into(),
        line: e
            .span()
            .and_then(|s| text.get(..s.start))
            .map(|before| before.bytes().filter(|b| *b == b'\n').count() + 1)
            .unwrap_or(1),
        message: e.message().trim_end().to_string(),
    })
}

/// The text of profile `name` in `table`, or [`BoardError::Unknown`].
fn text_of(
    table: &'static [(&'static str, &'static str)],
    what: &'static str,
    dir: &'static str,
    name: &str,
) -> Result<&'static str, BoardError> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| BoardError::Unknown {
            what,
            dir,
            name: name.into(),
            known: table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        })
}

impl Board {
    /// Loads and validates a named board profile.
    pub fn named(name: &str) -> Result<Board, BoardError> {
        let file = format!("boards/profiles/{name}.toml");
        Board::from_text(&file, text_of(PROFILES, "board", "profiles", name)?)
    }

    /// Parses and validates a profile's text; errors name `file` and the line.
    pub fn from_text(file: &str, text: &str) -> Result<Board, BoardError> {
        let b: Board = parse(file, text)?;
        b.validate().map_err(|detail| BoardError::Invalid {
            file: file.into(),
            detail,
        })?;
        Ok(b)
    }

    /// Checks the profile is coherent.
    pub fn validate(&self) -> Result<(), String> {
        let w = &self.watchdog;
        if w.min_timeout_s == 0 || w.min_timeout_s > w.max_timeout_s {
            return Err(format!(
                "watchdog timeouts must satisfy 1 <= min <= max, found {}..={}",
                w.min_timeout_s, w.max_timeout_s
            ));
        }
        let mut paths = HashSet::new();
        for c in &self.gpio {
            for p in std::iter::once(&c.chip).chain(&c.other_paths) {
                if !paths.insert(p.as_str()) {
                    return Err(format!("GPIO chip path {p} is given twice"));
                }
            }
            for [first, last] in &c.usable {
                if first > last || *last >= c.lines {
                    return Err(format!(
                        "{}: usable range [{first}, {last}] must be within lines 0 to {} of the chip, first <= last",
                        c.chip,
                        c.lines.saturating_sub(1)
                    ));
                }
            }
        }
        if self.gpio.iter().filter(|c| c.header).count() > 1 {
            return Err("only one GPIO chip can carry the header (`header = true`)".into());
        }
        let mut names = HashSet::new();
        for s in &self.serial {
            if !names.insert(&s.name) {
                return Err(format!("serial port name `{}` is used twice", s.name));
            }
            if s.path.find('*').is_some_and(|i| i + 1 != s.path.len()) {
                return Err(format!(
                    "serial port `{}`: `*` may only end a path, found {}",
                    s.name, s.path
                ));
            }
        }
        Ok(())
    }

    /// The chip carrying the expansion header, if the board has one.
    pub fn header_chip(&self) -> Option<&GpioChip> {
        self.gpio.iter().find(|c| c.header)
    }

    /// Clamps a requested watchdog timeout into what the hardware supports.
    pub fn watchdog_timeout(&self, wanted_s: u32) -> u32 {
        wanted_s.clamp(self.watchdog.min_timeout_s, self.watchdog.max_timeout_s)
    }
}

impl Hat {
    /// Loads and validates a named HAT profile.
    pub fn named(name: &str) -> Result<Hat, BoardError> {
        let file = format!("boards/hats/{name}.toml");
        Hat::from_text(&file, text_of(HATS, "HAT", "hats", name)?)
    }

    /// Parses and validates a HAT profile's text; errors name `file` and the line.
    pub fn from_text(file: &str, text: &str) -> Result<Hat, BoardError> {
        let h: Hat = parse(file, text)?;
        h.validate().map_err(|detail| BoardError::Invalid {
            file: file.into(),
            detail,
        })?;
        Ok(h)
    }

    /// Checks the profile is coherent: each relay on its own line with its own name.
    pub fn validate(&self) -> Result<(), String> {
        if self.relays.is_empty() {
            return Err("a HAT profile needs at least one `[[relays]]`".into());
        }
        let mut lines = HashSet::new();
        let mut names = HashSet::new();
        for r in &self.relays {
            if !lines.insert(r.line) {
                return Err(format!("line {} is used by two relays", r.line));
            }
            if !names.insert(&r.name) {
                return Err(format!("relay name `{}` is used twice", r.name));
            }
        }
        Ok(())
    }

    /// The relay on header line `line`, if the HAT has one.
    pub fn relay_on(&self, line: u32) -> Option<&HatRelay> {
        self.relays.iter().find(|r| r.line == line)
    }
}

/// Names of all board profiles.
pub fn names() -> impl Iterator<Item = &'static str> {
    PROFILES.iter().map(|(n, _)| *n)
}

/// Names of all HAT profiles.
pub fn hat_names() -> impl Iterator<Item = &'static str> {
    HATS.iter().map(|(n, _)| *n)
}

/// What a configured GPIO line is for: a relay output (driven) or a sense input (read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRole {
    /// Drives a relay; the polarity the configuration gives it.
    Relay(Polarity),
    /// Reads a node's power-good or power LED.
    Sense,
}

/// Why a device setting names something the configured board does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotOnBoard {
    /// No GPIO chip of that path.
    #[error("board `{board}` has no GPIO chip {chip}; its chips: {chips}")]
    NoSuchChip {
        /// The board.
        board: String,
        /// The chip asked for.
        chip: String,
        /// The chips it has (`none`).
        chips: String,
    },
    /// The line is past the chip's end.
    #[error("board `{board}`: {chip} ({label}) has {lines} lines (0 to {last}), there is no line {offset}; usable: {usable}")]
    NoSuchLine {
        /// The board.
        board: String,
        /// The chip.
        chip: String,
        /// Its label.
        label: String,
        /// Its line count.
        lines: u32,
        /// Its last line.
        last: u32,
        /// The line asked for.
        offset: u32,
        /// The usable lines.
        usable: String,
    },
    /// The line exists but is the board's own.
    #[error("board `{board}`: line {offset} of {chip} ({label}) is not one a relay or sense input may use ({why}); usable: {usable}")]
    NotUsable {
        /// The board.
        board: String,
        /// The chip.
        chip: String,
        /// Its label.
        label: String,
        /// The line asked for.
        offset: u32,
        /// Why.
        why: String,
        /// The usable lines.
        usable: String,
    },
    /// With a HAT, a relay output must be one of the HAT's relays.
    #[error("HAT `{hat}` on board `{board}` has no relay on line {offset} of {chip}; its relays: {relays}")]
    NotARelay {
        /// The board.
        board: String,
        /// The HAT.
        hat: String,
        /// The chip.
        chip: String,
        /// The line asked for.
        offset: u32,
        /// The HAT's relays (`ch1` line 26 active-low, ...).
        relays: String,
    },
    /// The relay's polarity is not the HAT's: fenced would energise it when it claims the line.
    #[error("HAT `{hat}` on board `{board}`: relay {relay} (line {offset}) is {want}, not {found}; with the wrong polarity the relay switches the moment fenced claims the line")]
    WrongPolarity {
        /// The board.
        board: String,
        /// The HAT.
        hat: String,
        /// The HAT's relay.
        relay: String,
        /// Its line.
        offset: u32,
        /// The HAT's polarity.
        want: Polarity,
        /// The configuration's.
        found: Polarity,
    },
    /// A sense input on a line a HAT relay drives.
    #[error("HAT `{hat}` on board `{board}`: line {offset} of {chip} drives its relay {relay}, it cannot be a sense input")]
    SenseOnRelay {
        /// The board.
        board: String,
        /// The HAT.
        hat: String,
        /// The chip.
        chip: String,
        /// The line.
        offset: u32,
        /// The HAT's relay on it.
        relay: String,
    },
    /// No serial port of that path.
    #[error("board `{board}` has no serial port {port}; its ports: {ports}")]
    NoSuchSerialPort {
        /// The board.
        board: String,
        /// The port asked for.
        port: String,
        /// The ports it has.
        ports: String,
    },
    /// Not the board's watchdog device.
    #[error("board `{board}`'s watchdog is {want} ({driver}), not {found}")]
    NotTheWatchdog {
        /// The board.
        board: String,
        /// The board's watchdog device.
        want: String,
        /// Its driver.
        driver: String,
        /// The device asked for.
        found: String,
    },
}

/// A board with the HAT on its header, as a configuration names them (`board = "..."`,
/// `hat = "..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// The board's profile name.
    pub name: String,
    /// The board.
    pub board: Board,
    /// The HAT's profile name and the HAT.
    pub hat: Option<(String, Hat)>,
}

impl Fitted {
    /// Loads the board and the HAT, which must fit it.
    pub fn new(board: &str, hat: Option<&str>) -> Result<Fitted, BoardError> {
        let b = Board::named(board)?;
        let hat = match hat {
            None => None,
            Some(h) => {
                let hat = Hat::named(h)?;
                if !hat.fits.iter().any(|f| f == board) || b.header_chip().is_none() {
                    return Err(BoardError::DoesNotFit {
                        hat: h.into(),
                        board: board.into(),
                        fits: hat.fits.join(", "),
                    });
                }
                Some((h.to_string(), hat))
            }
        };
        Ok(Fitted {
            name: board.into(),
            board: b,
            hat,
        })
    }

    /// `raspberry-pi-4 (Raspberry Pi 4 Model B (BCM2711)) with HAT waveshare-rpi-relay-board`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} ({})", self.name, self.board.description);
        if let Some((name, hat)) = &self.hat {
            s.push_str(&format!(" with HAT {name} ({})", hat.description));
        }
        s
    }

    /// Whether line `offset` of `chip` may be used for `role` on this board: the chip is the
    /// board's, the line exists and is not the board's own, and with a HAT on the header chip
    /// a relay output is one of the HAT's relays with its polarity (a sense input, any usable
    /// line the HAT does not drive). Returns the HAT relay a relay output is, if any.
    pub fn gpio_line(
        &self,
        chip: &Path,
        offset: u32,
        role: LineRole,
    ) -> Result<Option<&HatRelay>, NotOnBoard> {
        let board = || self.name.clone();
        let Some(c) = self.board.gpio.iter().find(|c| c.is_at(chip)) else {
            let chips: Vec<String> = self
                .board
                .gpio
                .iter()
                .map(|c| format!("{} ({}, {} lines)", c.chip, c.label, c.lines))
                .collect();
            return Err(NotOnBoard::NoSuchChip {
                board: board(),
                chip: chip.display().to_string(),
                chips: if chips.is_empty() {
                    "none (this board has no GPIO lines)".into()
                } else {
                    chips.join(", ")
                },
            });
        };
        if offset >= c.lines {
            return Err(NotOnBoard::NoSuchLine {
                board: board(),
                chip: chip.display().to_string(),
                label: c.label.clone(),
                lines: c.lines,
                last: c.lines.saturating_sub(1),
                offset,
                usable: c.usable_text(),
            });
        }
        if !c.is_usable(offset) {
            return Err(NotOnBoard::NotUsable {
                board: board(),
                chip: chip.display().to_string(),
                label: c.label.clone(),
                offset,
                why: c
                    .note
                    .clone()
                    .unwrap_or_else(|| "the board's own line".into()),
                usable: c.usable_text(),
            });
        }
        let Some((hat_name, hat)) = self.hat.as_ref().filter(|_| c.header) else {
            return Ok(None);
        };
        let relay = hat.relay_on(offset);
        match (role, relay) {
            (LineRole::Relay(found), Some(r)) if r.polarity != found => {
                Err(NotOnBoard::WrongPolarity {
                    board: board(),
                    hat: hat_name.clone(),
                    relay: r.name.clone(),
                    offset,
                    want: r.polarity,
                    found,
                })
            }
            (LineRole::Relay(_), Some(r)) => Ok(Some(r)),
            (LineRole::Relay(_), None) => Err(NotOnBoard::NotARelay {
                board: board(),
                hat: hat_name.clone(),
                chip: chip.display().to_string(),
                offset,
                relays: hat
                    .relays
                    .iter()
                    .map(|r| format!("{} line {} {}", r.name, r.line, r.polarity))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            (LineRole::Sense, Some(r)) => Err(NotOnBoard::SenseOnRelay {
                board: board(),
                hat: hat_name.clone(),
                chip: chip.display().to_string(),
                offset,
                relay: r.name.clone(),
            }),
            (LineRole::Sense, None) => Ok(None),
        }
    }

    /// The board's serial port at `port`, for any device kind that talks over one.
    pub fn serial_port(&self, port: &Path) -> Result<&SerialPort, NotOnBoard> {
        self.board
            .serial
            .iter()
            .find(|s| s.matches(port))
            .ok_or_else(|| NotOnBoard::NoSuchSerialPort {
                board: self.name.clone(),
                port: port.display().to_string(),
                ports: if self.board.serial.is_empty() {
                    "none".into()
                } else {
                    self.board
                        .serial
                        .iter()
                        .map(|s| s.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    /// Whether `device` is the board's watchdog.
    pub fn watchdog_device(&self, device: &Path) -> Result<(), NotOnBoard> {
        let w = &self.board.watchdog;
        if Path::new(&w.device) == device {
            Ok(())
        } else {
            Err(NotOnBoard::NotTheWatchdog {
                board: self.name.clone(),
                want: w.device.clone(),
                driver: w.driver.clone(),
                found: device.display().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn every_profile_loads_and_validates() {
        let boards: Vec<_> = names().collect();
        for want in [
            "raspberry-pi-4",
            "raspberry-pi-5",
            "compute-module-4",
            "generic-x86",
        ] {
            assert!(boards.contains(&want), "{want} missing: {boards:?}");
        }
        for n in names() {
            Board::named(n).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(hat_names().count() >= 1);
        for n in hat_names() {
            Hat::named(n).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn every_hat_fits_its_boards_on_usable_header_lines() {
        for h in hat_names() {
            let hat = Hat::named(h).unwrap();
            assert!(!hat.fits.is_empty(), "{h}");
            for b in &hat.fits {
                let f = Fitted::new(b, Some(h)).unwrap_or_else(|e| panic!("{h} on {b}: {e}"));
                let chip = f.board.header_chip().unwrap().chip.clone();
                for r in &hat.relays {
                    let got = f
                        .gpio_line(Path::new(&chip), r.line, LineRole::Relay(r.polarity))
                        .unwrap_or_else(|e| panic!("{h} on {b}: {e}"));
                    assert_eq!(got, Some(r));
                }
            }
        }
    }

    #[test]
    fn pi_watchdog_range_and_header_are_the_hardware_ones() {
        let b = Board::named("raspberry-pi-4").unwrap();
        assert_eq!(b.watchdog_timeout(60), 15);
        let h = b.header_chip().unwrap();
        assert_eq!((h.label.as_str(), h.lines), ("pinctrl-bcm2711", 58));
        let p5 = Board::named("raspberry-pi-5").unwrap();
        let h = p5.header_chip().unwrap();
        assert_eq!((h.label.as_str(), h.lines), ("pinctrl-rp1", 54));
        // Both kernels' names of the RP1 chip.
        assert!(h.is_at(Path::new("/dev/gpiochip0")) && h.is_at(Path::new("/dev/gpiochip4")));
        assert!(Board::named("generic-x86").unwrap().gpio.is_empty());
    }

    #[test]
    fn a_line_the_board_does_not_have_is_refused_naming_it_and_the_board() {
        let f = Fitted::new("raspberry-pi-4", None).unwrap();
        let relay = LineRole::Relay(Polarity::ActiveLow);
        assert_eq!(
            f.gpio_line(Path::new("/dev/gpiochip0"), 17, relay),
            Ok(None)
        );
        let e = f
            .gpio_line(Path::new("/dev/gpiochip4"), 17, relay)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("board `raspberry-pi-4` has no GPIO chip /dev/gpiochip4")
                && e.contains("/dev/gpiochip0 (pinctrl-bcm2711, 58 lines)"),
            "{e}"
        );
        let e = f
            .gpio_line(Path::new("/dev/gpiochip0"), 58, relay)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has 58 lines (0 to 57), there is no line 58"),
            "{e}"
        );
        let e = f
            .gpio_line(Path::new("/dev/gpiochip0"), 40, LineRole::Sense)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 40 of /dev/gpiochip0 (pinctrl-bcm2711) is not one")
                && e.contains("usable: 2-27"),
            "{e}"
        );
        let e = f
            .gpio_line(Path::new("/dev/gpiochip1"), 3, relay)
            .unwrap_err()
            .to_string();
        assert!(e.contains("usable: none"), "{e}");
        let x86 = Fitted::new("generic-x86", None).unwrap();
        let e = x86
            .gpio_line(Path::new("/dev/gpiochip0"), 1, relay)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none (this board has no GPIO lines)"), "{e}");
    }

    #[test]
    fn with_a_hat_a_relay_is_one_of_its_channels_with_its_polarity() {
        let f = Fitted::new("raspberry-pi-5", Some("waveshare-rpi-relay-board")).unwrap();
        let chip = Path::new("/dev/gpiochip0");
        let low = LineRole::Relay(Polarity::ActiveLow);
        assert_eq!(f.gpio_line(chip, 26, low).unwrap().unwrap().name, "ch1");
        let e = f.gpio_line(chip, 17, low).unwrap_err().to_string();
        assert!(
            e.contains(
                "HAT `waveshare-rpi-relay-board` on board `raspberry-pi-5` has no relay on line 17"
            ) && e
                .contains("ch1 line 26 active-low, ch2 line 20 active-low, ch3 line 21 active-low"),
            "{e}"
        );
        let e = f
            .gpio_line(chip, 20, LineRole::Relay(Polarity::ActiveHigh))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("relay ch2 (line 20) is active-low, not active-high"),
            "{e}"
        );
        // A sense input may be any usable header line the HAT leaves free.
        assert_eq!(f.gpio_line(chip, 17, LineRole::Sense), Ok(None));
        let e = f
            .gpio_line(chip, 21, LineRole::Sense)
            .unwrap_err()
            .to_string();
        assert!(e.contains("drives its relay ch3"), "{e}");
        let e = Fitted::new("generic-x86", Some("waveshare-rpi-relay-board"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit board `generic-x86`"), "{e}");
    }

    #[test]
    fn serial_ports_and_the_watchdog_are_the_boards() {
        let f = Fitted::new("raspberry-pi-4", None).unwrap();
        for p in [
            "/dev/ttyAMA0",
            "/dev/ttyS0",
            "/dev/ttyUSB3",
            "/dev/serial/by-id/usb-FTDI_x-if00-port0",
        ] {
            assert!(f.serial_port(Path::new(p)).is_ok(), "{p}");
        }
        for p in ["/dev/ttyS1", "/dev/ttyUSB", "/dev/ttyUSB0/x", "/dev/ttyXR0"] {
            let e = f.serial_port(Path::new(p)).unwrap_err().to_string();
            assert!(
                e.contains(&format!("board `raspberry-pi-4` has no serial port {p}")),
                "{e}"
            );
        }
        assert!(f.watchdog_device(Path::new("/dev/watchdog0")).is_ok());
        let e = f
            .watchdog_device(Path::new("/dev/watchdog1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/watchdog0 (bcm2835_wdt), not /dev/watchdog1"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_profile_names_its_file_and_line() {
        let text = "description = \"x\"\n\n[watchdog]\ndevice = \"/dev/watchdog0\"\ndriver = \"x\"\nmin_timeout_s = \"one\"\nmax_timeout_s = 2\n";
        let e = Board::from_text("boards/profiles/x.toml", text).unwrap_err();
        let BoardError::Parse { line, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(*line, 6, "{e}");
        assert!(
            e.to_string().starts_with("boards/profiles/x.toml:6: "),
            "{e}"
        );
        let text = "description = \"x\"\nfits = [\"raspberry-pi-4\"]\n\n[[relays]]\nname = \"a\"\nline = 5\npolarity = \"low\"\n";
        let e = Hat::from_text("boards/hats/x.toml", text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("boards/hats/x.toml:7: "), "{e}");
    }

    #[test]
    fn incoherent_profiles_are_refused() {
        let mut b = Board::named("raspberry-pi-4").unwrap();
        b.gpio[0].usable = vec![[2, 58]];
        assert!(b.validate().unwrap_err().contains("within lines 0 to 57"));
        let mut b = Board::named("raspberry-pi-5").unwrap();
        b.gpio[0].other_paths.push("/dev/gpiochip0".into());
        assert!(b.validate().unwrap_err().contains("given twice"));
        let mut h = Hat::named("waveshare-rpi-relay-board").unwrap();
        h.relays[1].line = h.relays[0].line;
        assert!(h.validate().unwrap_err().contains("used by two relays"));
        let e = Board::named("toaster").unwrap_err().to_string();
        assert!(e.contains("known: ") && e.contains("generic-x86"), "{e}");
        let e = Hat::named("toaster").unwrap_err().to_string();
        assert!(e.contains("no HAT profile `toaster`"), "{e}");
    }
}
