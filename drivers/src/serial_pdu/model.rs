//! Serial-console PDU models as data: how to log in, which prompt means "ready", how to switch
//! and read an outlet, and how the status reply is laid out.
//!
//! The command sets are described from the vendors' manuals (WTI NPS/IPS user's guide, APC
//! Switched Rack PDU CLI guide, BayTech RPC owner's manual); a new model is a new table entry
//! here. Configuration names a built-in model (`model = "wti"`) or, for a firmware that speaks
//! another dialogue, describes one in the same terms (fenced's `[devices.NAME.dialogue]`).

/// How a status reply lays out one outlet per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusLayout {
    /// Columns separated by `|` (WTI's plug status screen): the outlet id, its name and its
    /// state are in the given columns, counted from 0 after the leading `|`.
    PipeTable {
        /// Column of the plug number (or id such as `A1`).
        id: usize,
        /// Column of the plug name.
        name: usize,
        /// Column of the state (`ON`, `OFF`, with `*` while the plug is busy).
        state: usize,
    },
    /// `<id><end> <name> : <state>`: the id runs up to `id_end` (`)` on BayTech, `:` on APC),
    /// the state follows the last `:` on the line, and the name is what lies between (BayTech
    /// pads it with leader dots).
    Numbered {
        /// The character that ends the outlet id.
        id_end: char,
    },
}

/// The words a status reply uses for an outlet's state, matched whole and case-insensitively
/// (a trailing `*`, a plug still switching, reads as unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateWords {
    /// Words that mean the outlet has power.
    pub on: &'static [&'static str],
    /// Words that mean it has none.
    pub off: &'static [&'static str],
}

/// `ON` and `OFF`, as every built-in model prints them.
pub const ON_OFF: StateWords = StateWords {
    on: &["on"],
    off: &["off"],
};

/// How the PDU says a switching command was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The PDU prints the prompt again; any line containing one of the model's error markers
    /// before it means the command was refused.
    Prompt,
    /// Every reply starts with `E<3 digits>: <text>`; `E000` and `E001` mean done, anything
    /// else is refused with that text (APC AOS CLI).
    ResultCode,
}

/// One vendor's serial dialogue.
#[derive(Debug, PartialEq, Eq)]
pub struct Model {
    /// The name configuration uses (`wti-nps`, `apc-ap79xx`, `baytech-rpc`).
    pub name: &'static str,
    /// Vendor and product family, for operators.
    pub description: &'static str,
    /// Prompts that mean "ready for a command", matched at the end of the received text
    /// (after trailing spaces) and case-sensitively.
    pub prompts: &'static [&'static str],
    /// Substrings (case-insensitive) of the question asking for a user name, if any.
    pub user_prompts: &'static [&'static str],
    /// Substrings (case-insensitive) of the question asking for a password.
    pub password_prompts: &'static [&'static str],
    /// What ends a line we send.
    pub line_ending: &'static str,
    /// Switches an outlet off; `{}` is replaced by the outlet id.
    pub off: &'static str,
    /// Switches an outlet on.
    pub on: &'static str,
    /// Prints the state of one outlet (or all, if the firmware cannot select one).
    pub status: &'static str,
    /// A yes/no question the PDU may ask after a switching command, and our answer.
    pub confirm: Option<(&'static str, &'static str)>,
    /// Ends the session.
    pub logout: &'static str,
    /// How the status reply is read.
    pub layout: StatusLayout,
    /// What the state column says.
    pub states: StateWords,
    /// How a switching command is acknowledged.
    pub ack: Ack,
    /// Substrings (case-insensitive) of lines that mean the command was refused.
    pub error_markers: &'static [&'static str],
}

/// WTI NPS/IPS/VMR network power switches on their serial (or telnet) console. Commands start
/// with `/`; `,Y` after a switching command skips the "Sure?" question; `/S` prints a
/// `|`-separated table with the plug number, name and status (`*` marks a busy plug).
///
/// Checked against WTI's VMR/NPS user's guide (§9.2 "Operation via the Text Interface":
/// commands are not case sensitive, plugs by name or number, an asterisk in the Status column
/// marks a plug still busy) and the NPS-2HD guide (`/ON`, `/OFF` ask "Sure?" unless confirmed;
/// the `NPS>` prompt ends each command), and against what ClusterLabs fence_wti sends
/// (`/off N,y`, `/S`, `/X`) and how it reads the screen (a header starting `Plug`).
pub const WTI_NPS: Model = Model {
    name: "wti-nps",
    description: "WTI NPS/IPS/VMR network power switch, text interface",
    prompts: &["NPS>", "IPS>", "VMR>", "RSM>", "MPC>", "TPS>", "NBB>"],
    // fence_wti waits for `login: `, `Login Name:  `, `username: ` or `User Name :`.
    user_prompts: &["login:", "login name:", "username:", "user name:"],
    password_prompts: &["password:"],
    line_ending: "\r\n",
    off: "/OFF {},Y",
    on: "/ON {},Y",
    status: "/S",
    confirm: Some(("sure?", "Y")),
    logout: "/X",
    layout: StatusLayout::PipeTable {
        id: 0,
        name: 1,
        state: 2,
    },
    states: ON_OFF,
    ack: Ack::Prompt,
    error_markers: &["invalid", "access denied", "not owned"],
};

/// APC Switched Rack PDUs (AP79xx) with the AOS command-line interface on the serial port:
/// `User Name :`/`Password  :` login, prompt `apc>`, `olOn`/`olOff`/`olStatus <n>`, and every
/// reply headed by a result code (`E000: Success`).
///
/// Checked against APC's AOS CLI documentation (the Rack Power Filter owner's manual, "Command
/// Line Interface": `apc> olOff 3` answered `E000: Success`; `olName 3` answered
/// `E000: Success` then `Outlet 3: Web Server`), whose outlet lines `N: NAME: STATE` the
/// `Numbered { id_end: ':' }` layout reads.
pub const APC_AP79XX: Model = Model {
    name: "apc-ap79xx",
    description: "APC Switched Rack PDU (AP79xx), AOS command-line interface",
    prompts: &["apc>"],
    user_prompts: &["user name"],
    password_prompts: &["password"],
    line_ending: "\r",
    off: "olOff {}",
    on: "olOn {}",
    status: "olStatus {}",
    confirm: None,
    logout: "exit",
    layout: StatusLayout::Numbered { id_end: ':' },
    states: ON_OFF,
    ack: Ack::ResultCode,
    error_markers: &[],
};

/// BayTech RPC remote power controllers (RPC-2/3/5, DS-RPC) on their serial console: prompt
/// `RPC-3>` (or `RPC>`), `OFF n`/`ON n` answered by a `(Y/N)?` question, and a status menu of
/// lines `n)...name : On`.
///
/// Checked against BayTech's DS-RPC owner's manual ("Controlling Receptacles": `ON 3` at the
/// `RPC >` prompt is answered `Turn On Outlet 3 (Y/N)?`, then the status menu with
/// `Circuit Breaker : On` and `3) . . . OUTLET 3 : On`); the RPC-2/3/5 manual prints the
/// model in the prompt (`RPC-3>`).
pub const BAYTECH_RPC: Model = Model {
    name: "baytech-rpc",
    description: "BayTech RPC remote power controller, serial console",
    prompts: &["RPC-3>", "RPC-5>", "RPC-2>", "RPC>", "RPC >"],
    user_prompts: &["username"],
    password_prompts: &["password"],
    line_ending: "\r",
    off: "OFF {}",
    on: "ON {}",
    status: "STATUS",
    confirm: Some(("(y/n)", "Y")),
    logout: "LOGOUT",
    layout: StatusLayout::Numbered { id_end: ')' },
    states: ON_OFF,
    ack: Ack::Prompt,
    error_markers: &["input error", "invalid", "error"],
};

/// The built-in models.
pub const MODELS: &[&Model] = &[&WTI_NPS, &APC_AP79XX, &BAYTECH_RPC];

/// The built-in model called `name`: its full name (`wti-nps`) or its vendor alone (`wti`).
pub fn by_name(name: &str) -> Option<&'static Model> {
    MODELS
        .iter()
        .copied()
        .find(|m| m.name == name || m.name.split('-').next() == Some(name))
}

/// The built-in models' names, for error messages.
pub fn names() -> String {
    MODELS
        .iter()
        .map(|m| {
            format!(
                "{} ({})",
                m.name.split('-').next().unwrap_or(m.name),
                m.name
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for m in MODELS {
            assert_eq!(by_name(m.name), Some(*m));
            assert_eq!(by_name(m.name.split('-').next().unwrap()), Some(*m));
            assert!(m.off.contains("{}") && m.on.contains("{}"), "{}", m.name);
            assert!(!m.prompts.is_empty());
        }
        assert!(by_name("nope").is_none());
    }
}
