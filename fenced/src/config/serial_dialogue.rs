//! `[devices.NAME.dialogue]` of kind `serial-pdu`: a site's own console dialogue, in the terms
//! of the driver's built-in models ([`drivers::serial_pdu::Model`]), for a firmware none of
//! them speaks. Every value is checked here, at its line, because a wrong one does not fail
//! loudly later: an empty prompt would match any text, and a state word that is both "on" and
//! "off" would read a powered outlet as off.
//!
//! ```toml
//! [devices.pdu-x.dialogue]
//! prompts = ["NPS>"]                 # what ends the console's output when it is ready
//! user_prompts = ["login:"]          # case-insensitive substrings; leave out if none
//! password_prompts = ["password:"]
//! line_ending = "crlf"               # "cr", "lf" or "crlf"
//! off = "/OFF {outlet},Y"            # `{outlet}` is the level entry's outlet
//! on = "/ON {outlet},Y"
//! status = "/S"                      # `{outlet}` allowed, not required
//! confirm_question = "sure?"         # optional, with confirm_answer
//! confirm_answer = "Y"
//! logout = "/X"
//! status_layout = "pipe-table"       # "| 1 | name | ON |", with status_columns = [id, name, state]
//! status_columns = [0, 1, 2]
//! # status_layout = "numbered"       # "1) name : On", with status_id_end = ")"
//! on_words = ["on"]                  # what the state column says (default on / off)
//! off_words = ["off"]
//! ack = "prompt"                     # "prompt" or "result-code" (E000: Success)
//! error_markers = ["invalid"]        # a line holding one means the command was refused
//! ```

use super::device::DeviceCx;
use super::ConfigError;
use drivers::serial_pdu::model::StateWords;
use drivers::serial_pdu::{Ack, Model, StatusLayout};
use serde::Deserialize;
use serde_spanned::Spanned;

/// The highest status column a pipe table may name: no PDU's status screen has more.
const MAX_COLUMN: u32 = 15;

/// `[devices.NAME.dialogue]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DialogueTable {
    prompts: Option<Spanned<Vec<String>>>,
    user_prompts: Option<Spanned<Vec<String>>>,
    password_prompts: Option<Spanned<Vec<String>>>,
    line_ending: Option<Spanned<String>>,
    off: Option<Spanned<String>>,
    on: Option<Spanned<String>>,
    status: Option<Spanned<String>>,
    confirm_question: Option<Spanned<String>>,
    confirm_answer: Option<Spanned<String>>,
    logout: Option<Spanned<String>>,
    status_layout: Option<Spanned<String>>,
    status_columns: Option<Spanned<Vec<i64>>>,
    status_id_end: Option<Spanned<String>>,
    on_words: Option<Spanned<Vec<String>>>,
    off_words: Option<Spanned<Vec<String>>>,
    ack: Option<Spanned<String>>,
    error_markers: Option<Spanned<Vec<String>>>,
}

/// A value lives as long as the model that holds it: the driver keeps `&'static Model`, so a
/// described dialogue is leaked once per parse of the config (a few hundred bytes; fenced
/// parses its file once at start, `check-config` once per run).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn leak_all(v: Vec<String>) -> &'static [&'static str] {
    Box::leak(
        v.into_iter()
            .map(leak)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

/// Text sent or matched on one console line: no control characters (a line end inside would
/// send a second command).
fn plain(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

impl DialogueTable {
    /// Checks every value and makes the driver's model; `field` prefixes are `dialogue.`.
    pub(crate) fn resolve(&self, cx: &DeviceCx<'_>) -> Result<&'static Model, ConfigError> {
        let f = |name: &str| format!("dialogue.{name}");
        let missing = |name: &str, msg: &str| cx.missing(&f(name), msg.to_string());
        let words = |v: &Option<Spanned<Vec<String>>>,
                     name: &str,
                     required: bool,
                     lower: bool|
         -> Result<Vec<String>, ConfigError> {
            let Some(v) = v else {
                return if required {
                    Err(missing(
                        name,
                        &format!("a described dialogue needs `{name} = [\"...\"]`"),
                    ))
                } else {
                    Ok(Vec::new())
                };
            };
            if required && v.get_ref().is_empty() {
                return Err(cx.at(v, &f(name), "expected at least one entry"));
            }
            for w in v.get_ref() {
                if w.trim().is_empty() || !plain(w) || w.trim() != w {
                    return Err(cx.at(v, &f(name), format!("expected non-empty text without control characters or surrounding spaces (the console's output is matched after its trailing spaces are cut), found {w:?}")));
                }
            }
            Ok(v.get_ref()
                .iter()
                .map(|w| {
                    if lower {
                        w.to_ascii_lowercase()
                    } else {
                        w.clone()
                    }
                })
                .collect())
        };
        let prompts = words(&self.prompts, "prompts", true, false)?;
        let user_prompts = words(&self.user_prompts, "user_prompts", false, true)?;
        let password_prompts = words(&self.password_prompts, "password_prompts", false, true)?;
        let line_ending = match &self.line_ending {
            None => "\r\n",
            Some(v) => match v.get_ref().as_str() {
                "crlf" => "\r\n",
                "cr" => "\r",
                "lf" => "\n",
                other => {
                    return Err(cx.at(
                        v,
                        &f("line_ending"),
                        format!("expected \"crlf\", \"cr\" or \"lf\", found `{other}`"),
                    ))
                }
            },
        };
        // `{outlet}` once in a switching command: without it every call would switch the
        // same outlet (or none), whatever the level names.
        let template = |v: &Option<Spanned<String>>,
                        name: &str,
                        need_outlet: bool|
         -> Result<&'static str, ConfigError> {
            let v = v.as_ref().ok_or_else(|| {
                missing(
                    name,
                    &format!("a described dialogue needs `{name} = \"...\"`, the command to type (`{{outlet}}` for the outlet)"),
                )
            })?;
            let t = v.get_ref();
            let n = t.matches("{outlet}").count();
            let rest = t.replace("{outlet}", "");
            let bad = if t.trim().is_empty() || !plain(t) {
                Some("expected a command without control characters".to_string())
            } else if rest.contains('{') || rest.contains('}') {
                Some("the only placeholder is `{outlet}`".to_string())
            } else if n > 1 || (need_outlet && n == 0) {
                Some(format!(
                    "expected `{{outlet}}` exactly once{}, found it {n} times",
                    if need_outlet { "" } else { " at most" }
                ))
            } else {
                None
            };
            if let Some(why) = bad {
                return Err(cx.at(v, &f(name), format!("{why}: {t:?}")));
            }
            Ok(leak(t.replace("{outlet}", "{}")))
        };
        let off = template(&self.off, "off", true)?;
        let on = template(&self.on, "on", true)?;
        let status = template(&self.status, "status", false)?;
        let logout = template(&self.logout, "logout", false)?;
        if logout.contains("{}") {
            let v = self.logout.as_ref().map(Spanned::span);
            return Err(cx.ctx.err(
                v,
                &cx.field(&f("logout")),
                "a logout names no outlet; remove `{outlet}`",
            ));
        }
        let confirm = match (&self.confirm_question, &self.confirm_answer) {
            (None, None) => None,
            (Some(q), Some(a)) => {
                for (v, name) in [(q, "confirm_question"), (a, "confirm_answer")] {
                    if v.get_ref().trim().is_empty() || !plain(v.get_ref()) {
                        return Err(cx.at(v, &f(name), "expected non-empty text without control characters"));
                    }
                }
                Some((leak(q.get_ref().to_ascii_lowercase()), leak(a.get_ref().clone())))
            }
            (Some(v), None) | (None, Some(v)) => {
                return Err(cx.at(v, &f("confirm_question"), "give both `confirm_question` (what the console asks after a switch) and `confirm_answer`, or neither"))
            }
        };
        let layout_word = self.status_layout.as_ref().ok_or_else(|| {
            missing("status_layout", "a described dialogue needs `status_layout = \"pipe-table\"` (with `status_columns`) or `\"numbered\"` (with `status_id_end`)")
        })?;
        let layout = match layout_word.get_ref().as_str() {
            "pipe-table" => {
                if let Some(v) = &self.status_id_end {
                    return Err(cx.at(
                        v,
                        &f("status_id_end"),
                        "only a `numbered` layout has an id end; remove it or change the layout",
                    ));
                }
                let v = self.status_columns.as_ref().ok_or_else(|| {
                    missing("status_columns", "a pipe-table layout needs `status_columns = [ID, NAME, STATE]`, the columns counted from 0 after the leading `|`")
                })?;
                let cols = v.get_ref();
                let ok = cols.len() == 3
                    && cols.iter().all(|c| (0..=i64::from(MAX_COLUMN)).contains(c))
                    && cols[0] != cols[1]
                    && cols[1] != cols[2]
                    && cols[0] != cols[2];
                if !ok {
                    return Err(cx.at(v, &f("status_columns"), format!("expected three different columns [ID, NAME, STATE], each 0 to {MAX_COLUMN}, found {cols:?}")));
                }
                let col = |i: usize| usize::try_from(cols[i]).unwrap_or(0);
                StatusLayout::PipeTable {
                    id: col(0),
                    name: col(1),
                    state: col(2),
                }
            }
            "numbered" => {
                if let Some(v) = &self.status_columns {
                    return Err(cx.at(
                        v,
                        &f("status_columns"),
                        "only a `pipe-table` layout has columns; remove it or change the layout",
                    ));
                }
                let v = self.status_id_end.as_ref().ok_or_else(|| {
                    missing("status_id_end", "a numbered layout needs `status_id_end`, the character after the outlet number (`)` in `1) name : On`)")
                })?;
                let mut chars = v.get_ref().chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_punctuation() && !matches!(c, '_' | '-' | '.') => {
                        StatusLayout::Numbered { id_end: c }
                    }
                    _ => {
                        return Err(cx.at(v, &f("status_id_end"), format!("expected one punctuation character that cannot be part of an outlet id (not `_`, `-` or `.`), like \")\" or \":\", found {:?}", v.get_ref())))
                    }
                }
            }
            other => {
                return Err(cx.at(
                    layout_word,
                    &f("status_layout"),
                    format!("expected \"pipe-table\" or \"numbered\", found `{other}`"),
                ))
            }
        };
        let default = |v: &Option<Spanned<Vec<String>>>, name: &str, d: &str| {
            if v.is_some() {
                words(v, name, true, true)
            } else {
                Ok(vec![d.to_string()])
            }
        };
        let on_words = default(&self.on_words, "on_words", "on")?;
        let off_words = default(&self.off_words, "off_words", "off")?;
        if let Some(w) = on_words.iter().find(|w| off_words.contains(w)) {
            let msg =
                format!("`{w}` is both an on word and an off word; a state must read one way");
            return Err(match (&self.off_words, &self.on_words) {
                (Some(v), _) | (None, Some(v)) => cx.at(v, &f("off_words"), msg),
                (None, None) => missing("off_words", &msg),
            });
        }
        // A `*` ends a word as "still switching": a word with one could never be read.
        for (v, ws, name) in [
            (&self.on_words, &on_words, "on_words"),
            (&self.off_words, &off_words, "off_words"),
        ] {
            if let (Some(v), Some(w)) = (
                v,
                ws.iter()
                    .find(|w| w.contains('*') || w.contains('|') || w.contains(':')),
            ) {
                return Err(cx.at(v, &f(name), format!("`{w}` holds `*`, `|` or `:`, which the status layouts read as separators or as \"still switching\"")));
            }
        }
        let ack = match &self.ack {
            None => Ack::Prompt,
            Some(v) => match v.get_ref().as_str() {
                "prompt" => Ack::Prompt,
                "result-code" => Ack::ResultCode,
                other => {
                    return Err(cx.at(
                        v,
                        &f("ack"),
                        format!("expected \"prompt\" (the prompt again, no error marker) or \"result-code\" (E000: Success), found `{other}`"),
                    ))
                }
            },
        };
        let error_markers = words(&self.error_markers, "error_markers", false, true)?;
        Ok(Box::leak(Box::new(Model {
            name: leak(format!("dialogue of devices.{}", cx.name)),
            description: leak(format!(
                "site-described dialogue, [devices.{}.dialogue] in {}",
                cx.name,
                cx.ctx.file.display()
            )),
            prompts: leak_all(prompts),
            user_prompts: leak_all(user_prompts),
            password_prompts: leak_all(password_prompts),
            line_ending,
            off,
            on,
            status,
            confirm,
            logout,
            layout,
            states: StateWords {
                on: leak_all(on_words),
                off: leak_all(off_words),
            },
            ack,
            error_markers: leak_all(error_markers),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, DeviceKind};
    use super::*;
    use drivers::serial_pdu::model::WTI_NPS;
    use drivers::serial_pdu::parse::{parse_status, render};
    use drivers::PowerState;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/palisade/fenced.toml"), text, &|_: &str| {
            None
        })
    }

    /// WTI's text interface written out as a site would (model.rs, `WTI_NPS`).
    pub(crate) const WTI_AS_DIALOGUE: &str = r#"
[devices.pdu]
kind = "serial-pdu"
address = "192.0.2.30:2001"

[devices.pdu.dialogue]
prompts = ["NPS>", "IPS>"]
user_prompts = ["login:", "user name:"]
password_prompts = ["Password:"]
line_ending = "crlf"
off = "/OFF {outlet},Y"
on = "/ON {outlet},Y"
status = "/S"
confirm_question = "Sure?"
confirm_answer = "Y"
logout = "/X"
status_layout = "pipe-table"
status_columns = [0, 1, 2]
error_markers = ["Invalid", "access denied"]

[targets.db1]
levels = [["pdu:2"]]
"#;

    fn model(c: &Config) -> &'static Model {
        let DeviceKind::SerialPdu(s) = &c.devices["pdu"].kind else {
            panic!("pdu is a serial-pdu device")
        };
        s.model
    }

    fn line(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("`{needle}` not in {text}"))
    }

    #[test]
    fn a_described_dialogue_speaks_and_reads_like_the_built_in_model() {
        let m = model(&parse(WTI_AS_DIALOGUE).unwrap());
        assert_eq!(m.off, WTI_NPS.off);
        assert_eq!(m.on, WTI_NPS.on);
        assert_eq!((m.status, m.logout, m.line_ending), ("/S", "/X", "\r\n"));
        assert_eq!(m.confirm, Some(("sure?", "Y")));
        assert_eq!(m.layout, WTI_NPS.layout);
        assert_eq!(m.states, WTI_NPS.states);
        assert_eq!(m.password_prompts, &["password:"]);
        assert_eq!(m.error_markers, &["invalid", "access denied"]);
        assert_eq!(
            render(m, m.off, "db1").unwrap(),
            render(&WTI_NPS, WTI_NPS.off, "db1").unwrap()
        );
        let screen =
            b"\r\n  Plug | Name | Status |\r\n  1 | db1 | ON |\r\n  2 | db2 | OFF |\r\nNPS> ";
        let (ours, wti) = (parse_status(m, screen), parse_status(&WTI_NPS, screen));
        assert_eq!(ours.state_of("2"), Ok(PowerState::Off));
        assert_eq!(ours.state_of("1"), wti.state_of("1"));
    }

    #[test]
    fn state_words_and_a_numbered_layout_are_read_as_written() {
        let text = WTI_AS_DIALOGUE
            .replacen("status_layout = \"pipe-table\"\nstatus_columns = [0, 1, 2]", "status_layout = \"numbered\"\nstatus_id_end = \")\"\non_words = [\"Energized\"]\noff_words = [\"Dark\", \"Down\"]", 1);
        let m = model(&parse(&text).unwrap());
        assert_eq!(m.layout, StatusLayout::Numbered { id_end: ')' });
        let r = parse_status(
            m,
            b"1) db1 : Energized\r\n2) db2 : down\r\n3) db3 : On\r\nNPS>",
        );
        assert_eq!(r.state_of("1"), Ok(PowerState::On));
        assert_eq!(r.state_of("2"), Ok(PowerState::Off));
        // `On` is not one of this console's words: no outlet 3 is read at all.
        assert!(r.state_of("3").is_err(), "{:?}", r.state_of("3"));
    }

    #[test]
    fn every_bad_value_is_refused_at_its_line_saying_what_was_expected() {
        for (from, to, want) in [
            (
                "prompts = [\"NPS>\", \"IPS>\"]",
                "prompts = [\"\"]",
                "expected non-empty text",
            ),
            (
                "prompts = [\"NPS>\", \"IPS>\"]",
                "prompts = []",
                "expected at least one entry",
            ),
            (
                "prompts = [\"NPS>\", \"IPS>\"]",
                "prompts = [\"NPS> \"]",
                "surrounding spaces",
            ),
            (
                "off = \"/OFF {outlet},Y\"",
                "off = \"/OFF 1,Y\"",
                "expected `{outlet}` exactly once, found it 0 times",
            ),
            (
                "on = \"/ON {outlet},Y\"",
                "on = \"/ON {outlet} {outlet}\"",
                "found it 2 times",
            ),
            (
                "status = \"/S\"",
                "status = \"/S {plug}\"",
                "the only placeholder is `{outlet}`",
            ),
            (
                "off = \"/OFF {outlet},Y\"",
                "off = \"/OFF {outlet}\\r/X\"",
                "without control characters",
            ),
            (
                "logout = \"/X\"",
                "logout = \"/X {outlet}\"",
                "a logout names no outlet",
            ),
            (
                "line_ending = \"crlf\"",
                "line_ending = \"\\r\\n\"",
                "expected \"crlf\", \"cr\" or \"lf\"",
            ),
            (
                "status_columns = [0, 1, 2]",
                "status_columns = [0, 1, 1]",
                "expected three different columns [ID, NAME, STATE], each 0 to 15, found [0, 1, 1]",
            ),
            (
                "status_columns = [0, 1, 2]",
                "status_columns = [0, 1, 16]",
                "each 0 to 15",
            ),
            (
                "status_layout = \"pipe-table\"",
                "status_layout = \"regex\"",
                "expected \"pipe-table\" or \"numbered\", found `regex`",
            ),
            (
                "status_columns = [0, 1, 2]",
                "status_columns = [0, 1, 2]\non_words = [\"on\"]\noff_words = [\"ON\"]",
                "`on` is both an on word and an off word",
            ),
            (
                "status_columns = [0, 1, 2]",
                "status_columns = [0, 1, 2]\noff_words = [\"off*\"]",
                "holds `*`",
            ),
            (
                "status_columns = [0, 1, 2]",
                "status_columns = [0, 1, 2]\nstatus_id_end = \")\"",
                "only a `numbered` layout has an id end",
            ),
            (
                "status_columns = [0, 1, 2]",
                "status_columns = [0, 1, 2]\nack = \"ok\"",
                "expected \"prompt\"",
            ),
            (
                "confirm_answer = \"Y\"\n",
                "",
                "give both `confirm_question`",
            ),
        ] {
            let text = WTI_AS_DIALOGUE.replacen(from, to, 1);
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains(want), "{to}: {e}");
            let last = to.lines().last().unwrap_or(to);
            if !to.is_empty() {
                let at = line(&text, last);
                assert!(
                    e.to_string().starts_with(&format!(
                        "/etc/palisade/fenced.toml:{at}: devices.pdu.dialogue."
                    )),
                    "{to}: {e}"
                );
            }
        }
        let text = WTI_AS_DIALOGUE.replacen(
            "status_layout = \"pipe-table\"\nstatus_columns = [0, 1, 2]",
            "status_layout = \"numbered\"\nstatus_id_end = \"-\"",
            1,
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "status_id_end")), "{e}");
        assert!(e.message.contains("not `_`, `-` or `.`"), "{e}");
    }

    #[test]
    fn a_model_and_a_dialogue_together_or_a_missing_setting_are_refused() {
        let text = WTI_AS_DIALOGUE.replacen(
            "kind = \"serial-pdu\"",
            "kind = \"serial-pdu\"\nmodel = \"wti\"",
            1,
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "model = ")), "{e}");
        assert!(e.message.contains("either `model`"), "{e}");
        for (remove, field) in [
            ("off = \"/OFF {outlet},Y\"\n", "devices.pdu.dialogue.off"),
            (
                "status_layout = \"pipe-table\"\n",
                "devices.pdu.dialogue.status_layout",
            ),
            (
                "status_columns = [0, 1, 2]\n",
                "devices.pdu.dialogue.status_columns",
            ),
            (
                "prompts = [\"NPS>\", \"IPS>\"]\n",
                "devices.pdu.dialogue.prompts",
            ),
        ] {
            let e = parse(&WTI_AS_DIALOGUE.replacen(remove, "", 1)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{remove}: {e}");
            assert!(e.line.is_some(), "{e}");
        }
        // Neither: the error names both ways.
        let text = WTI_AS_DIALOGUE
            .split("[devices.pdu.dialogue]")
            .next()
            .unwrap();
        let e = parse(text).unwrap_err();
        assert!(e.message.contains("[devices.NAME.dialogue]"), "{e}");
    }
}
