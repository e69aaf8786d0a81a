//! `fenced`'s command line, in the library so that the packaging's generator
//! (`packaging/src/bin/palisade-docs.rs`) renders the man page and shell completions from the
//! very definitions the daemon parses with.

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// `fenced`'s command line.
#[derive(Parser)]
#[command(
    name = "fenced",
    version,
    about = "Palisade fencer daemon: fences (powers off, reboots, powers on) cluster nodes through their BMCs, confirming every action by reading the power state back.",
    after_help = "Operators talk to the daemon with `fence_node`. Logs go to stdout; set RUST_LOG (e.g. RUST_LOG=fenced=debug) to change the level.\n\nExit status: 0 clean stop or valid config, 1 error (the message says which)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `fenced`'s commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: open history, check devices, serve the API until SIGTERM/SIGINT.
    Run {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file and print what it configures; exit 0 if valid, 1 if not.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Manage the API's bearer tokens (the file named by api.tokens_file).
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        verb: TokenVerb,
    },
    /// Check a history file's ledger offline: every hash link and every signature; names the
    /// first bad record. Works on a copy, so fenced may keep running.
    VerifyLedger {
        /// The history database (daemon.history).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The node's ledger public key (daemon.ledger_key + `.pub`, 64 hex digits), kept off
        /// the node. Without it the key recorded in the file is used, which whoever rewrote
        /// the file could also have replaced.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
}

/// `fenced token`'s verbs.
#[derive(Subcommand)]
pub enum TokenVerb {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// The configuration file naming api.tokens_file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Its role: read, fence or admin.
        #[arg(long, value_parser = ["read", "fence", "admin"])]
        role: String,
        /// Its name, recorded as the caller's identity (`token:NAME`).
        #[arg(long)]
        name: String,
    },
    /// List tokens (names, roles, creation times; never the tokens).
    List {
        /// The configuration file naming api.tokens_file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Revoke a token by name; the daemon stops accepting it at the next request.
    Revoke {
        /// The configuration file naming api.tokens_file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The token's name.
        name: String,
    },
}

/// The command definition (for man pages and completions).
pub fn command() -> clap::Command {
    Cli::command()
}
