//! Board support: which watchdog, which GPIO relays and which serial ports a board has.
//!
//! A board is a TOML file in `boards/profiles/`; the build embeds every file there, so adding
//! a board is adding a file. [`Board::validate`] checks a profile is coherent (timeouts in
//! range, no GPIO line used twice, unique names) and runs over every profile in the tests.

use serde::Deserialize;
use std::collections::HashSet;

include!(concat!(env!("OUT_DIR"), "/profiles.rs"));

/// A board profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// What the board is.
    pub description: String,
    /// Its hardware watchdog.
    pub watchdog: Watchdog,
    /// Relays wired to GPIO lines (e.g. cutting a node's power supply).
    #[serde(default)]
    pub relays: Vec<Relay>,
    /// Serial ports (e.g. to a PDU's console).
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

/// A relay on a GPIO line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// Name used in the fencing config.
    pub name: String,
    /// GPIO character device.
    pub chip: String,
    /// Line offset on the chip.
    pub line: u32,
    /// The relay is energised by driving the line low.
    pub active_low: bool,
}

/// A serial port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPort {
    /// Name used in the fencing config.
    pub name: String,
    /// Device node.
    pub path: String,
}

/// Why a board profile cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    /// No profile of that name.
    #[error("no board profile `{name}`; known boards: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// The profile does not parse.
    #[error("board profile {name}.toml: {detail}")]
    Parse {
        /// The profile.
        name: String,
        /// The parser's message (with line and column).
        detail: String,
    },
    /// The profile parses but is not coherent.
    #[error("board profile {name}.toml: {detail}")]
    Invalid {
        /// The profile.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

impl Board {
    /// Loads and validates a named board profile.
    pub fn named(name: &str) -> Result<Board, BoardError> {
        let text = PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| BoardError::Unknown {
                name: name.into(),
                known: names().collect::<Vec<_>>().join(", "),
            })?;
        let b: Board = toml::from_str(text).map_err(|e| BoardError::Parse {
            name: name.into(),
            detail: e.to_string(),
        })?;
        b.validate().map_err(|detail| BoardError::Invalid {
            name: name.into(),
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
        let mut lines = HashSet::new();
        let mut names = HashSet::new();
        for r in &self.relays {
            if !lines.insert((&r.chip, r.line)) {
                return Err(format!(
                    "GPIO line {} of {} is used by two relays",
                    r.line, r.chip
                ));
            }
            if !names.insert(&r.name) {
                return Err(format!("relay name `{}` is used twice", r.name));
            }
        }
        for s in &self.serial {
            if !names.insert(&s.name) {
                return Err(format!("name `{}` is used twice", s.name));
            }
        }
        Ok(())
    }

    /// Clamps a requested watchdog timeout into what the hardware supports.
    pub fn watchdog_timeout(&self, wanted_s: u32) -> u32 {
        wanted_s.clamp(self.watchdog.min_timeout_s, self.watchdog.max_timeout_s)
    }
}

/// Names of all board profiles.
pub fn names() -> impl Iterator<Item = &'static str> {
    PROFILES.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_loads_and_validates() {
        assert!(names().count() >= 3);
        for n in names() {
            Board::named(n).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn pi_watchdog_range_is_the_hardware_one() {
        let b = Board::named("raspberry-pi-4").unwrap();
        assert_eq!(b.watchdog_timeout(60), 15);
        assert!(b.relays.iter().all(|r| r.active_low));
    }

    #[test]
    fn incoherent_profiles_are_refused() {
        let mut b = Board::named("raspberry-pi-4").unwrap();
        b.relays[1].line = b.relays[0].line;
        assert!(b.validate().unwrap_err().contains("used by two relays"));
        let e = Board::named("toaster").unwrap_err().to_string();
        assert!(e.contains("known boards") && e.contains("generic-x86"));
    }
}
