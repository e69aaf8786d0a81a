//! `palisade-sbd`'s documentation command, read from the usage text its `--help` prints
//! ([`watchdog::sbd_admin::USAGE`], sbd's own layout). Only rendered, never parsed with: the
//! binary keeps sbd's getopt-style parser, so operators' scripts and `fence_sbd` work unchanged.
//!
//! The layout: a header line, then sections. `Options:` lines are `SPEC<TAB>DESCRIPTION` with
//! SPEC `-x`, `-x <ARG>`, `--long`, `--long ARG` or `-x, --long`; a section whose title says
//! "commands" has `NAME [ARGS]<TAB>DESCRIPTION` lines, where an argument is `<name>` or a
//! `(a|b|c)` choice; lines that start with a tab continue the entry above; any other paragraph is
//! prose, shown after the options.

use clap::{Arg, ArgAction, Command};
use watchdog::sbd_admin::USAGE;

/// One option or command line of the usage text, with its continuation lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What is left of the first tab: `-d <devname>`, `message <node> (test|reset)`.
    pub spec: String,
    /// The description, continuation lines joined with spaces.
    pub help: String,
}

/// The usage text split into its parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// The first line: what the program is.
    pub about: String,
    /// The `Options:` entries.
    pub options: Vec<Entry>,
    /// The entries of every commands section, in order.
    pub commands: Vec<Entry>,
    /// Every other paragraph, in order, as written.
    pub prose: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Preamble,
    Options,
    Commands,
    Prose,
}

/// Splits a usage text in sbd's layout (see the module comment).
pub fn parse(text: &str) -> Usage {
    let mut u = Usage::default();
    let mut section = Section::Preamble;
    let mut lines = text.lines();
    u.about = lines.next().unwrap_or_default().trim().to_string();
    for line in lines {
        let is_title = !line.starts_with(['\t', ' ', '-']) && line.ends_with(':');
        if is_title && line == "Options:" {
            section = Section::Options;
            continue;
        }
        if is_title && line.to_lowercase().contains("commands") {
            section = Section::Commands;
            continue;
        }
        if line.trim().is_empty() {
            // A blank line ends an options or commands list; what follows is prose until the
            // next list title.
            section = match section {
                Section::Preamble => Section::Preamble,
                _ => Section::Prose,
            };
            if !u.prose.is_empty() && !u.prose.ends_with("\n\n") {
                u.prose.push('\n');
            }
            continue;
        }
        let list = match section {
            Section::Options => &mut u.options,
            Section::Commands => &mut u.commands,
            Section::Prose => {
                u.prose.push_str(line);
                u.prose.push('\n');
                continue;
            }
            // The syntax lines after the header: clap writes its own synopsis.
            Section::Preamble => continue,
        };
        if let Some(more) = line.strip_prefix('\t') {
            if let Some(last) = list.last_mut() {
                let more = more.trim();
                if last.help.is_empty() {
                    last.help = more.to_string();
                } else {
                    last.help = format!("{} {more}", last.help);
                }
            }
            continue;
        }
        let (spec, help) = line.split_once('\t').unwrap_or((line, ""));
        list.push(Entry {
            spec: spec.trim().to_string(),
            help: help.trim().to_string(),
        });
    }
    u.prose = u.prose.trim().to_string();
    u
}

/// One option of the `Options:` section, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionSpec {
    /// `-x`.
    pub short: Option<char>,
    /// `--long`.
    pub long: Option<String>,
    /// The argument's name, when it takes one.
    pub value: Option<String>,
}

/// Reads an option's spec (`-d <devname>`, `--board NAME`, `-h, --help`).
pub fn option_spec(spec: &str) -> OptionSpec {
    let mut o = OptionSpec {
        short: None,
        long: None,
        value: None,
    };
    for word in spec.split([' ', ',']).filter(|w| !w.is_empty()) {
        if let Some(l) = word.strip_prefix("--") {
            o.long = Some(l.to_string());
        } else if let Some(s) = word.strip_prefix('-') {
            o.short = s.chars().next();
        } else {
            o.value = Some(word.trim_matches(['<', '>']).to_string());
        }
    }
    o
}

/// The command definition read from [`USAGE`], for the man page and completions.
pub fn command() -> Command {
    from_usage(&parse(USAGE))
}

fn from_usage(u: &Usage) -> Command {
    // The header repeats the name ("palisade-sbd: shared storage ..."); a man page's NAME
    // line already starts with it.
    let about = u
        .about
        .split_once(": ")
        .map_or(u.about.as_str(), |(_, a)| a);
    let mut cmd = Command::new("palisade-sbd")
        .about(about.to_string())
        .after_help(u.prose.clone())
        .disable_help_flag(true)
        .subcommand_value_name("COMMAND");
    for e in &u.options {
        let o = option_spec(&e.spec);
        let id = o
            .long
            .clone()
            .or_else(|| o.short.map(String::from))
            .unwrap_or_else(|| e.spec.clone());
        let mut arg = Arg::new(id).help(e.help.clone()).global(true);
        if let Some(c) = o.short {
            arg = arg.short(c);
        }
        if let Some(l) = &o.long {
            arg = arg.long(l.clone());
        }
        arg = match (&o.value, o.long.as_deref()) {
            (_, Some("help")) => arg.action(ArgAction::Help).global(false),
            (Some(v), _) => {
                let a = arg.value_name(v.clone()).action(ArgAction::Append);
                if v == "devname" {
                    a.value_hint(clap::ValueHint::FilePath)
                } else {
                    a
                }
            }
            (None, _) => arg.action(ArgAction::Count),
        };
        cmd = cmd.arg(arg);
    }
    for e in &u.commands {
        let mut words = e.spec.split_whitespace();
        let Some(name) = words.next() else { continue };
        let mut sub = Command::new(name.to_string()).about(e.help.clone());
        for w in words {
            if let Some(choice) = w.strip_prefix('(').and_then(|w| w.strip_suffix(')')) {
                let values: Vec<String> = choice.split('|').map(str::to_string).collect();
                sub = sub.arg(
                    Arg::new("message")
                        .required(true)
                        .value_parser(clap::builder::PossibleValuesParser::new(values)),
                );
            } else {
                let n = w.trim_matches(['<', '>']).to_string();
                sub = sub.arg(Arg::new(n.clone()).value_name(n).required(true));
            }
        }
        cmd = cmd.subcommand(sub);
    }
    cmd
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn reads_every_option_and_command_of_the_usage_text() {
        let u = parse(USAGE);
        assert!(u.about.starts_with("palisade-sbd:"), "{}", u.about);
        let specs: Vec<OptionSpec> = u.options.iter().map(|e| option_spec(&e.spec)).collect();
        assert!(specs.len() >= 10, "{specs:?}");
        let board = specs
            .iter()
            .find(|s| s.long.as_deref() == Some("board"))
            .unwrap();
        assert_eq!(board.value.as_deref(), Some("NAME"));
        let cmds: Vec<&str> = u.commands.iter().map(|e| e.spec.as_str()).collect();
        for c in [
            "create",
            "list",
            "dump",
            "watch",
            "query-watchdog",
            "test-watchdog",
        ] {
            assert!(
                cmds.iter().any(|s| s.split_whitespace().next() == Some(c)),
                "{c}: {cmds:?}"
            );
        }
        // Continuation lines are joined into their entry, never taken as entries.
        let watch = u.commands.iter().find(|e| e.spec == "watch").unwrap();
        assert!(watch.help.contains("disarms and exits"), "{}", watch.help);
        assert!(u.prose.contains("Safer than sbd:"), "{}", u.prose);
    }

    #[test]
    fn every_documented_option_is_one_the_parser_accepts() {
        // The docs are read from the help text; the parser is separate code. Each option the
        // help names must parse, with a value when the help gives it one.
        for e in parse(USAGE).options {
            let o = option_spec(&e.spec);
            let flag = match (&o.long, o.short) {
                (Some(l), _) => format!("--{l}"),
                (None, Some(c)) => format!("-{c}"),
                (None, None) => panic!("no flag in `{}`", e.spec),
            };
            let mut args = vec![flag.clone()];
            if o.value.is_some() {
                args.push("5".into());
            }
            args.push("list".into());
            let parsed = watchdog::sbd_admin::parse_args(&args);
            assert!(parsed.is_ok(), "{args:?} (from `{}`): {parsed:?}", e.spec);
        }
    }

    #[test]
    fn the_message_command_offers_its_messages() {
        let cmd = command();
        let m = cmd
            .get_subcommands()
            .find(|s| s.get_name() == "message")
            .unwrap();
        let values: Vec<String> = m
            .get_arguments()
            .find(|a| a.get_id() == "message")
            .unwrap()
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(
            values,
            ["test", "reset", "off", "crashdump", "clear", "exit"]
        );
    }
}
