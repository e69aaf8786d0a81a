//! One relay line as data: its polarity, its mode, its optional sense line, and the pure rules
//! that decide what a reading of it may claim. No I/O here, so every claim path is tested on
//! the host without pins.

use crate::PowerState;
use std::fmt;
use std::time::Duration;

/// Which electrical level makes a line active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// High is active (most opto-isolated relay HATs driven through a transistor).
    ActiveHigh,
    /// Low is active (many cheap relay modules, whose inputs sink current through the opto).
    ActiveLow,
}

impl Polarity {
    /// The electrical level (`true` = high) that makes the line `active`.
    pub fn level(self, active: bool) -> bool {
        match self {
            Polarity::ActiveHigh => active,
            Polarity::ActiveLow => !active,
        }
    }

    /// Whether the electrical level `high` means the line is active.
    pub fn is_active(self, high: bool) -> bool {
        self.level(high)
    }
}

/// How the relay controls the node's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The relay sits in the node's supply: while it is held active the node has no power.
    PowerCut,
    /// The relay is wired across the node's power button.
    PowerButton {
        /// A short press, which turns an off node on.
        press: Duration,
        /// A long press, which forces a running node off (ATX boards: 4 s or more).
        long_press: Duration,
    },
}

/// The optional input that reports whether the node really has power (a power-good signal,
/// a power LED, a current sensor's comparator output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseConfig {
    /// The level at which the sense line means "the node is powered".
    pub polarity: Polarity,
    /// How long after switching before the sense line is believed (supplies discharge, LEDs
    /// fade, power-good deasserts late).
    pub settle: Duration,
    /// How long after the settle time the sense line may take to reach the expected state
    /// before the switch is reported as failed.
    pub timeout: Duration,
    /// How often the sense line is read while waiting.
    pub poll: Duration,
}

/// One relay line and how it may be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineConfig {
    /// The name a level entry's port uses for this line (e.g. `node2`).
    pub name: String,
    /// Where the output is, for messages (e.g. `/dev/gpiochip0 line 17`, `BCM 17`).
    pub output_label: String,
    /// Where the sense input is, for messages, if there is one.
    pub sense_label: Option<String>,
    /// The relay output's polarity.
    pub polarity: Polarity,
    /// Power cut or power button.
    pub mode: Mode,
    /// The sense line, if wired.
    pub sense: Option<SenseConfig>,
    /// Power-cut lines without a sense line only: accept the relay output's own read-back as
    /// proof of off. This catches a failed GPIO write but not a welded contact or a node fed
    /// by a second supply, so it is off unless an operator opts in for this line.
    pub confirm_off_by_relay_output_without_sense: bool,
}

/// What a reading of a line can prove, decided by configuration alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The sense line is read after the settle time: it proves the node's power state.
    SenseLine,
    /// The relay output's level is read back; no sense line. Opted in by configuration.
    RelayOutputNoSense,
    /// Nothing can be read back: a state is never claimed.
    NotReadable(Unreadable),
}

/// Why a line cannot be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// A power button without a sense line: a press leaves no trace on the output.
    ButtonWithoutSense,
    /// A power-cut relay without a sense line, and the configuration did not opt in to trust
    /// the relay output.
    CutWithoutSenseNotOptedIn,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Basis::SenseLine => f.write_str("sense line read back after the settle time"),
            Basis::RelayOutputNoSense => f.write_str("relay output read back, no sense line"),
            Basis::NotReadable(why) => why.fmt(f),
        }
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unreadable::ButtonWithoutSense => {
                "power button without a sense line: a press cannot be read back, so this line never confirms a state; wire a sense line (power-good or power LED) or have an operator confirm"
            }
            Unreadable::CutWithoutSenseNotOptedIn => {
                "power-cut relay without a sense line: only the relay's own output could be read back, which does not catch a welded contact, and `confirm_off_by_relay_output_without_sense` is not set; wire a sense line, set that flag for this line, or have an operator confirm"
            }
        })
    }
}

impl LineConfig {
    /// What a reading of this line can prove.
    pub fn basis(&self) -> Basis {
        match (self.sense.is_some(), self.mode) {
            (true, _) => Basis::SenseLine,
            (false, Mode::PowerButton { .. }) => Basis::NotReadable(Unreadable::ButtonWithoutSense),
            (false, Mode::PowerCut) if self.confirm_off_by_relay_output_without_sense => {
                Basis::RelayOutputNoSense
            }
            (false, Mode::PowerCut) => Basis::NotReadable(Unreadable::CutWithoutSenseNotOptedIn),
        }
    }

    /// Whether the relay is active in the resting state that leaves the node powered (always
    /// inactive: a cut relay powers the node while released, a button is released between
    /// presses).
    pub fn resting_level(&self) -> bool {
        self.polarity.level(false)
    }
}

/// A raw reading of a line, before any claim is made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The sense line's level (`true` = high).
    Sense {
        /// Electrical level of the sense input.
        high: bool,
    },
    /// The relay output's level as read back (`true` = high).
    Output {
        /// Electrical level of the output as the GPIO controller reports it.
        high: bool,
    },
    /// Nothing was read (the line cannot be read back).
    Nothing,
}

/// The state a reading may claim under the line's basis. Never `Off` unless the basis allows
/// it and the reading shows it; a reading that does not match the basis claims `Unknown`.
pub fn judge(cfg: &LineConfig, reading: Reading) -> PowerState {
    match (cfg.basis(), reading) {
        (Basis::SenseLine, Reading::Sense { high }) => match cfg.sense {
            Some(s) if s.polarity.is_active(high) => PowerState::On,
            Some(_) => PowerState::Off,
            None => PowerState::Unknown,
        },
        (Basis::RelayOutputNoSense, Reading::Output { high }) => {
            // Only power-cut lines get this basis: an active relay holds the node off.
            if cfg.polarity.is_active(high) {
                PowerState::Off
            } else {
                PowerState::On
            }
        }
        _ => PowerState::Unknown,
    }
}

/// A line for the tests: sense (if any) active-high, 500 ms settle, 2 s timeout, 100 ms poll.
#[cfg(test)]
pub(crate) fn test_cfg(mode: Mode, sense: bool, flag: bool, polarity: Polarity) -> LineConfig {
    LineConfig {
        name: "n1".into(),
        output_label: "test line 1".into(),
        sense_label: sense.then(|| "test line 2".into()),
        polarity,
        mode,
        sense: sense.then_some(SenseConfig {
            polarity: Polarity::ActiveHigh,
            settle: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            poll: Duration::from_millis(100),
        }),
        confirm_off_by_relay_output_without_sense: flag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_cfg as cfg;

    const BUTTON: Mode = Mode::PowerButton {
        press: Duration::from_millis(200),
        long_press: Duration::from_secs(5),
    };

    #[test]
    fn basis_follows_the_safety_rule() {
        use Polarity::ActiveHigh as H;
        assert_eq!(cfg(BUTTON, true, false, H).basis(), Basis::SenseLine);
        assert_eq!(cfg(Mode::PowerCut, true, true, H).basis(), Basis::SenseLine);
        // The flag never lets a button claim anything.
        assert_eq!(
            cfg(BUTTON, false, true, H).basis(),
            Basis::NotReadable(Unreadable::ButtonWithoutSense)
        );
        assert_eq!(
            cfg(Mode::PowerCut, false, false, H).basis(),
            Basis::NotReadable(Unreadable::CutWithoutSenseNotOptedIn)
        );
        assert_eq!(
            cfg(Mode::PowerCut, false, true, H).basis(),
            Basis::RelayOutputNoSense
        );
        assert_eq!(
            Basis::RelayOutputNoSense.to_string(),
            "relay output read back, no sense line"
        );
    }

    #[test]
    fn active_low_relay_output_reads_back() {
        let c = cfg(Mode::PowerCut, false, true, Polarity::ActiveLow);
        assert_eq!(judge(&c, Reading::Output { high: false }), PowerState::Off);
        assert_eq!(judge(&c, Reading::Output { high: true }), PowerState::On);
        assert!(c.resting_level());
    }

    fn any_mode() -> impl Strategy<Value = Mode> {
        prop_oneof![
            Just(Mode::PowerCut),
            (1u64..10_000, 1u64..10_000).prop_map(|(p, l)| Mode::PowerButton {
                press: Duration::from_millis(p),
                long_press: Duration::from_millis(l),
            })
        ]
    }

    fn any_polarity() -> impl Strategy<Value = Polarity> {
        prop_oneof![Just(Polarity::ActiveHigh), Just(Polarity::ActiveLow)]
    }

    fn any_reading() -> impl Strategy<Value = Reading> {
        prop_oneof![
            any::<bool>().prop_map(|high| Reading::Sense { high }),
            any::<bool>().prop_map(|high| Reading::Output { high }),
            Just(Reading::Nothing)
        ]
    }

    proptest! {
        /// Off is claimed only from a sense line reading "not powered", or from a power-cut
        /// relay's active output with the opt-in flag and no sense line. Nothing else, whatever
        /// the configuration and the reading.
        #[test]
        fn off_only_from_an_allowed_reading(
            mode in any_mode(), sense in any::<bool>(), flag in any::<bool>(),
            pol in any_polarity(), sense_pol in any_polarity(), reading in any_reading(),
        ) {
            let mut c = cfg(mode, sense, flag, pol);
            if let Some(s) = c.sense.as_mut() { s.polarity = sense_pol; }
            if judge(&c, reading) == PowerState::Off {
                match reading {
                    Reading::Sense { high } => {
                        prop_assert!(sense);
                        prop_assert!(!sense_pol.is_active(high));
                    }
                    Reading::Output { high } => {
                        prop_assert!(!sense && flag && mode == Mode::PowerCut);
                        prop_assert!(pol.is_active(high));
                    }
                    Reading::Nothing => prop_assert!(false, "off claimed from nothing"),
                }
            }
            if matches!(mode, Mode::PowerButton { .. }) && !sense {
                prop_assert_eq!(judge(&c, reading), PowerState::Unknown);
            }
        }

        /// Polarity is an involution: the level of "active" is active, of "inactive" is not.
        #[test]
        fn polarity_round_trips(pol in any_polarity(), active in any::<bool>()) {
            prop_assert_eq!(pol.is_active(pol.level(active)), active);
        }
    }
}
