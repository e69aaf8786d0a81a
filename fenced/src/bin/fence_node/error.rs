//! Why `fence_node` could not do what it was asked, and the exit status each reason gives.

use crate::timestamp::SinceError;
use crate::{output, Exit};
use fenced::client::{ClientError, TlsConfigError, TokenFileError, UrlError};
use serde_json::json;

/// A verb (or the setup before it) that did not produce an outcome. An outcome that is a
/// failure (NOT FENCED, an unhealthy device, a ledger that does not verify) is not an error:
/// the verb prints it and returns its [`Exit`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--url` does not parse.
    #[error("--url: {0}")]
    Url(#[from] UrlError),
    /// `--ca` cannot be used.
    #[error("--ca: {0}")]
    Ca(#[from] TlsConfigError),
    /// The token file cannot be used.
    #[error("token file: {0}")]
    TokenFile(#[from] TokenFileError),
    /// `--since` does not parse.
    #[error("--since: {0}")]
    Since(#[from] SinceError),
    /// `confirm` without `--yes` and without a terminal to ask on.
    #[error("confirm: refusing to record a manual confirmation without asking; there is no terminal to ask on, so pass --yes if you are sure")]
    NoTerminal,
    /// The async runtime could not be started (out of memory or file descriptors).
    #[error(
        "cannot start the async runtime: {0}; check the process limits (ulimit -n) and free memory"
    )]
    Runtime(#[source] std::io::Error),
    /// The request to the daemon failed or was refused.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl CliError {
    /// The exit status for this error (see `fence_node --help`).
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Url(_)
            | CliError::Ca(_)
            | CliError::TokenFile(_)
            | CliError::Since(_)
            | CliError::NoTerminal => Exit::Usage,
            CliError::Runtime(_) => Exit::Unreachable,
            CliError::Client(ClientError::Api { status, error, .. }) => {
                // A paused daemon answers 503 but refuses by policy: nothing is broken.
                if *status < 500 || error.code == "paused" {
                    Exit::Refused
                } else {
                    Exit::Unreachable
                }
            }
            CliError::Client(
                ClientError::Unreachable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Protocol { .. },
            ) => Exit::Unreachable,
        }
    }
}

/// Prints `e` on stderr (and, with `--json`, the error as JSON on stdout for errors that
/// involve the daemon) and returns its exit status.
pub fn report(e: &CliError, json: bool) -> Exit {
    if let CliError::Client(c) = e {
        if json {
            let v = match c {
                ClientError::Api { json, .. } => json.clone(),
                ClientError::Unreachable { .. } | ClientError::Timeout { .. } => {
                    json!({"error": {"code": "unreachable", "message": c.to_string(), "hint": "start fenced, or point fence_node at it with --socket or --url"}})
                }
                ClientError::Protocol { .. } => {
                    json!({"error": {"code": "protocol", "message": c.to_string(), "hint": "check that --socket/--url points at fenced"}})
                }
            };
            output::print_json(&v);
        }
    }
    match e {
        CliError::Client(ClientError::Api { error, .. }) => {
            eprintln!("fence_node: refused: {}", error.message);
            eprintln!("  hint: {}", error.hint);
        }
        _ => eprintln!("fence_node: {e}"),
    }
    e.exit()
}
