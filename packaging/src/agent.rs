//! `fence_palisade`'s documentation command, built from the tables its hand-rolled parser, its
//! metadata and its `--help` use ([`fenced::cli::fence_palisade`]). Only rendered, never parsed
//! with: the agent keeps its own parser, which also reads options on stdin as Pacemaker passes
//! them.

use clap::{Arg, ArgAction, Command};
use fenced::cli::fence_palisade::{ACTIONS, LONGDESC, SHORTDESC, USAGE, VALUE_OPTIONS};

/// The agent's command definition, for its man page and completions.
pub fn command() -> Command {
    let mut cmd = Command::new("fence_palisade")
        .version(env!("CARGO_PKG_VERSION"))
        .about(SHORTDESC)
        .long_about(format!(
            "{LONGDESC}\n\nPacemaker runs it with no arguments and the options as name=value lines on stdin (the names below without the leading dashes, with underscores: token_file=/etc/palisade/fence.token); the target comes as plug= (or its old name port=, or nodename=)."
        ))
        .after_help(USAGE)
        .disable_help_flag(true)
        .disable_version_flag(true);
    for (name, short, ty, desc) in VALUE_OPTIONS {
        let mut arg = Arg::new(*name)
            .long(name.replace('_', "-"))
            .help(*desc)
            .value_name(if *ty == "second" { "S" } else { "VALUE" });
        if let Some(c) = short {
            arg = arg.short(*c);
        }
        arg = match *name {
            "action" => arg.value_parser(clap::builder::PossibleValuesParser::new(ACTIONS)),
            "socket" | "ca_file" | "token_file" => arg.value_hint(clap::ValueHint::FilePath),
            "url" => arg.value_hint(clap::ValueHint::Url),
            _ => arg,
        };
        cmd = cmd.arg(arg);
    }
    // The flags the parser knows besides the value options (see `set` in fence_palisade.rs).
    cmd.arg(
        Arg::new("help")
            .short('h')
            .long("help")
            .action(ArgAction::Help)
            .help("Print the usage and exit"),
    )
    .arg(
        Arg::new("version")
            .short('V')
            .long("version")
            .action(ArgAction::Version)
            .help("Print the version and exit"),
    )
    .arg(
        Arg::new("verbose")
            .short('v')
            .long("verbose")
            .action(ArgAction::Count)
            .help("Accepted for fence-agents compatibility; changes nothing"),
    )
}
