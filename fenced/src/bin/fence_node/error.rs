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
    /// `--targets-from` and the command line named no target at all.
    #[error("no target to fence: name one or more targets, or a --targets-from file that lists them (one per line)")]
    NoTargets,
    /// The `--targets-from` file cannot be read.
    #[error("--targets-from {path}: {source}; check the path and its permissions")]
    TargetsFile {
        /// The file.
        path: String,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// A line of the `--targets-from` file is not a target name.
    #[error("{path}:{line}: expected one target name per line (no spaces), found {found:?}")]
    TargetsLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What the line holds.
        found: String,
    },
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
            | CliError::NoTerminal
            | CliError::NoTargets
            | CliError::TargetsFile { .. }
            | CliError::TargetsLine { .. } => Exit::Usage,
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
            drivers::errln!("fence_node: refused: {}", error.message);
            drivers::errln!("  hint: {}", error.hint);
        }
        _ => drivers::errln!("fence_node: {e}"),
    }
    e.exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> CliError {
        let body = json!({"error": {"code": code, "message": "m", "hint": "h"}});
        CliError::Client(ClientError::Api {
            status,
            error: serde_json::from_value(body["error"].clone()).unwrap(),
            json: body,
        })
    }

    #[test]
    fn exit_statuses_stay_what_scripts_expect() {
        assert_eq!(api(404, "unknown_target").exit(), Exit::Refused);
        assert_eq!(api(409, "conflict").exit(), Exit::Refused);
        // Paused answers 503, yet is a refusal by policy, not a broken daemon.
        assert_eq!(api(503, "paused").exit(), Exit::Refused);
        assert_eq!(api(500, "internal").exit(), Exit::Unreachable);
        let unreachable = CliError::Client(ClientError::Unreachable {
            endpoint: "unix:/run/palisade/fenced.sock".into(),
            detail: "No such file or directory".into(),
        });
        assert_eq!(unreachable.exit(), Exit::Unreachable);
        assert!(unreachable.to_string().contains("cannot reach fenced"));
        let timeout = CliError::Client(ClientError::Timeout {
            endpoint: "unix:/s".into(),
            secs: 30,
        });
        assert_eq!(timeout.exit(), Exit::Unreachable);
        assert!(timeout.to_string().contains("--api-timeout"), "{timeout}");
        assert_eq!(CliError::NoTerminal.exit(), Exit::Usage);
        assert!(CliError::NoTerminal.to_string().contains("--yes"));
        let since = CliError::from(crate::timestamp::parse_since("soon", 0).unwrap_err());
        assert_eq!(since.exit(), Exit::Usage);
        assert!(since.to_string().starts_with("--since: "), "{since}");
        let url = CliError::from(fenced::client::Endpoint::from_url("ftp://x").unwrap_err());
        assert_eq!(url.exit(), Exit::Usage);
        assert_eq!(Exit::Refused as u8, 3);
        assert_eq!(Exit::Unreachable as u8, 4);
    }
}
