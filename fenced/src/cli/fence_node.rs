//! `fence_node`'s command line (global options, every verb's options, help and examples), in
//! the library so that the packaging's generator (`packaging/src/bin/palisade-docs.rs`) renders
//! the man page and shell completions from the very definitions the command parses with.

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// Help text shown after the options.
const EXIT_HELP: &str = "\
Exit status:
  0  success; for off/reboot: the node is confirmed fenced (a reboot that fenced but did not
     power back on still exits 0 and says so); for on: confirmed powered on
  1  the operation finished WITHOUT confirmation: treat the node as NOT fenced
     (also: devices --check found an unhealthy device, confirm declined at the prompt)
  2  bad usage (unknown option, missing argument, confirm without a terminal and without --yes)
  3  refused by the daemon: conflict, paused, rate-limited, unknown target/device, forbidden,
     invalid request
  4  the daemon is unreachable, did not answer in time, or failed internally

Environment:
  PALISADE_SOCKET      the daemon's Unix socket when --socket is not given
  PALISADE_TOKEN_FILE  a file holding the bearer token when --token-file is not given

Run `fence_node VERB --help` for a verb's options and examples.";

/// Help text shown after the options.
const OFF_HELP: &str = "\
Examples:
  fence_node off node1 --reason 'kernel hung, not answering on the cluster network'
  fence_node off node1 --timeout 60            # give up (and say NOT FENCED) after 60 s
  fence_node off node1 --no-wait               # return at once; follow with `fence_node status node1`
  fence_node --json off node1                  # the operation as JSON on stdout
  fence_node off node1 node2 node3             # one batch: a line per target, then a summary
  fence_node off --targets-from rack7.txt      # the targets named in a file, one per line

Exit status 0 means the node is confirmed off: its power read back as off, a poison pill was
written and msgwait elapsed, or an operator confirmed it. Anything else (1, 3, 4): treat the
node as NOT fenced. With several targets, 0 means every one of them is confirmed off; 1 means
at least one is not (the table says which: treat those as NOT fenced).";

/// Help text shown after the options.
const REBOOT_HELP: &str = "\
Examples:
  fence_node reboot node1 --reason 'stuck in D state'

A reboot is off, confirm off, then on: never a power cycle, which cannot be confirmed. Exit
status 0 means the node was confirmed off; if it then did not power back on, the command still
exits 0 and says so.";

/// Help text shown after the options.
const ON_HELP: &str = "\
Examples:
  fence_node on node1 --reason 'repaired, back into the cluster'

Exit status 0 means the node's power read back as on.";

/// Help text shown after the options.
const STATUS_HELP: &str = "\
Examples:
  fence_node status                 # every target, its levels and last operation
  fence_node status node1           # one target in detail
  fence_node status node1 --live    # and read its power state from each device now";

/// Help text shown after the options.
const HISTORY_HELP: &str = "\
Examples:
  fence_node history                          # every operation, newest first
  fence_node history node1 --since 2h         # node1's operations of the last two hours
  fence_node history --since 2026-11-23T15:04:05Z --limit 20
  fence_node history --audit                  # who did what, from where, why
  fence_node history --verify                 # exit 1 if the ledger was tampered with

Times are shown in UTC, in the RFC 3339 form --since accepts.";

/// Help text shown after the options.
const DEVICES_HELP: &str = "\
Examples:
  fence_node devices            # each device, its last health check, and warnings
  fence_node devices --check    # check every device now; exit 1 if any is unhealthy";

/// Help text shown after the options.
const CONFIRM_HELP: &str = "\
Examples:
  fence_node confirm node1 --reason 'power cords pulled, checked at the rack'
  fence_node confirm node1 --reason 'chassis off, checked by J. Doe' --yes   # no prompt (scripts)

Only when you checked yourself that NODE has no power: the cluster then treats it as fenced
and starts its workloads elsewhere. If it is in fact running, they run twice.";

/// Help text shown after the options.
const PAUSE_HELP: &str = "\
Examples:
  fence_node pause --reason 'maintenance on the BMC network'
  fence_node resume --reason 'maintenance done'";

/// `fence_node`'s command line: global options and a verb.
#[derive(Parser)]
#[command(
    name = "fence_node",
    version,
    about = "Fence (power off, reboot, power on) cluster nodes through the Palisade fencer daemon, and inspect its targets, devices and history.",
    after_help = EXIT_HELP
)]
pub struct Cli {
    /// The daemon's Unix socket [default: $PALISADE_SOCKET, else /run/palisade/fenced.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Talk to the daemon's TCP listener instead: https://HOST:PORT (with --ca), or
    /// http://127.0.0.1:7420 on loopback.
    #[arg(long, global = true, value_name = "URL", conflicts_with = "socket")]
    pub url: Option<String>,
    /// PEM file of the CA that signed the daemon's certificate (for https URLs).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// File holding a bearer token from `fenced token create` (mode 0600)
    /// [default: $PALISADE_TOKEN_FILE]. Tokens are never taken on the command line, where
    /// other users could read them.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON answer on stdout instead of text (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// Timeout for each API request, seconds.
    #[arg(long, global = true, value_name = "S", default_value_t = 30)]
    pub api_timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// The options of `off`, `reboot` and `on`.
#[derive(Args)]
pub struct FenceArgs {
    /// The target node(s), as named in the daemon's configuration. More than one (or
    /// --targets-from) sends one batch request: one operation per target.
    #[arg(value_name = "NODE", required_unless_present = "targets_from")]
    pub nodes: Vec<String>,
    /// Also fence the targets named in FILE: one per line; blank lines and lines starting with
    /// `#` are skipped (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    pub targets_from: Option<std::path::PathBuf>,
    /// Why (recorded in history).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Idempotency key: repeating a request with the same id returns the same operation
    /// (with several targets, each gets ID:TARGET).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// Give up after this many seconds (also the operation's deadline on the daemon).
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Return once the daemon accepted the request; do not wait for the outcome.
    #[arg(long)]
    pub no_wait: bool,
}

/// The options of `status`.
#[derive(Args)]
pub struct StatusArgs {
    /// One target.
    pub node: Option<String>,
    /// Read every level device's power state now (needs NODE).
    #[arg(long, requires = "node")]
    pub live: bool,
}

/// The options of `history`.
#[derive(Args)]
pub struct HistoryArgs {
    /// Only this target.
    pub node: Option<String>,
    /// Only since: a duration back from now (90s, 30m, 2h, 7d, 1h 30m) or a UTC time
    /// (2026-11-23T15:04:05Z, 2026-11-23 15:04, 2026-11-23) or milliseconds since the epoch.
    #[arg(long, value_name = "DURATION|TIMESTAMP")]
    pub since: Option<String>,
    /// At most this many.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Show the ledger's audit records (who, from where, what, why, outcome) instead.
    #[arg(long)]
    pub audit: bool,
    /// Verify the ledger's hash chain and signatures; exit 1 and name the first bad record
    /// if anything was removed or changed.
    #[arg(long)]
    pub verify: bool,
}

/// The options of `devices`.
#[derive(Args)]
pub struct DevicesArgs {
    /// Check every device now; exit 1 if any is unhealthy.
    #[arg(long)]
    pub check: bool,
}

/// The options of `confirm`.
#[derive(Args)]
pub struct ConfirmArgs {
    /// The target node.
    pub node: String,
    /// What you checked (recorded with your identity).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Do not ask; required when there is no terminal.
    #[arg(long)]
    pub yes: bool,
}

/// The options of `pause` and `resume`.
#[derive(Args)]
pub struct PauseArgs {
    /// Why (recorded).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

/// `fence_node`'s verbs.
#[derive(Subcommand)]
pub enum Verb {
    /// Power the node off and confirm it is off.
    #[command(after_help = OFF_HELP)]
    Off(FenceArgs),
    /// Power off, confirm off, then power on (never a power cycle).
    #[command(after_help = REBOOT_HELP)]
    Reboot(FenceArgs),
    /// Power the node on (unfence).
    #[command(after_help = ON_HELP)]
    On(FenceArgs),
    /// Show all targets, or one target (with --live: read its power state now).
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Show operations, newest first.
    #[command(after_help = HISTORY_HELP)]
    History(HistoryArgs),
    /// Show devices and their last health check (with --check: check them now).
    #[command(after_help = DEVICES_HELP)]
    Devices(DevicesArgs),
    /// Record by hand that NODE is powered off (audited; only when you checked it yourself).
    #[command(after_help = CONFIRM_HELP)]
    Confirm(ConfirmArgs),
    /// Pause fencing: new operations are refused until resumed.
    #[command(after_help = PAUSE_HELP)]
    Pause(PauseArgs),
    /// Resume fencing.
    #[command(after_help = PAUSE_HELP)]
    Resume(PauseArgs),
}

/// The command definition (for man pages and completions).
pub fn command() -> clap::Command {
    Cli::command()
}
