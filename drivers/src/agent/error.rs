//! [`AgentError`]: why running a fence agent failed or what its exit said; and how each reason
//! becomes the [`DeviceError`] the engine records.
//!
//! `agent` is the agent's name and device address (`fence_ipmilan 10.0.0.5`); `stderr` is the
//! agent's stderr with every secret replaced by `***` and bounded in length.

use super::format::FormatError;
use crate::DeviceError;
use std::path::PathBuf;

/// Why an agent call did not succeed, or why an agent does not fit its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// An option cannot be put on the agent's stdin (a line break in it, a bad name).
    #[error("agent {agent}: {source}")]
    Encode {
        /// The agent.
        agent: String,
        /// What is wrong with the option.
        source: FormatError,
    },
    /// The agent could not be started.
    #[error("cannot run agent {}: {reason}; check the `agent` path and that it is executable", .program.display())]
    Spawn {
        /// The agent.
        agent: String,
        /// The executable.
        program: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// Waiting for the agent failed.
    #[error("agent {agent} `{action}`: waiting for the agent failed: {reason}")]
    Wait {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The agent overran its deadline; its process group was killed.
    #[error("agent {agent} `{action}` did not finish within {timeout_ms} ms; its process group was killed{}; check the device is reachable, or raise the device's timeout_ms", stderr_tail(.stderr))]
    Timeout {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// The deadline.
        timeout_ms: u64,
        /// Its stderr so far.
        stderr: String,
    },
    /// The agent was killed by a signal (not ours).
    #[error("agent {agent} `{action}` was killed by signal {signal}; {}", stderr_or_none(.stderr))]
    Signal {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// The signal.
        signal: i32,
        /// Its stderr.
        stderr: String,
    },
    /// The agent exited with a code that is not success for this action.
    #[error("agent {agent} `{action}` exited with {code}{}; {}", meaning(*.code), stderr_or_none(.stderr))]
    Exit {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// Its exit code (fence-agents' meanings: 3, 10, 11 credentials; 4 connection lost).
        code: i32,
        /// Its stderr.
        stderr: String,
    },
    /// `off` exited 0, but the following `status` still answered on.
    #[error("agent {agent}: the agent exited 0 for off, but its status then answered ON (exit 0): power was not switched off{}", .off_stderr.as_ref().map_or(String::new(), |s| format!("; off's stderr: {s}")))]
    OffNotConfirmed {
        /// The agent.
        agent: String,
        /// `off`'s stderr, if it printed any.
        off_stderr: Option<String>,
    },
    /// `list` answered that the agent has no plugs.
    #[error("agent {agent} has no plugs to list")]
    NoPlugs {
        /// The agent.
        agent: String,
    },
    /// `list` printed something that is not a plug list.
    #[error("agent {agent} `list` printed {source}")]
    BadList {
        /// The agent.
        agent: String,
        /// What is wrong with it.
        source: FormatError,
    },
    /// `metadata` could not be run, or failed.
    #[error("`{} -o metadata` failed: {source}", .program.display())]
    Metadata {
        /// The executable.
        program: PathBuf,
        /// Why.
        source: Box<AgentError>,
    },
    /// `metadata` printed something that is not fence agent XML.
    #[error("{} printed metadata that is not fence agent XML ({source}); is `agent` a ClusterLabs fence agent?", .program.display())]
    BadMetadata {
        /// The executable.
        program: PathBuf,
        /// What is wrong with it.
        source: FormatError,
    },
    /// A configured option the agent's metadata does not list.
    #[error("option `{option}` is not a parameter of {agent} (its metadata lists: {known}); remove it or fix its spelling")]
    UnknownOption {
        /// The agent's name (from its metadata).
        agent: String,
        /// The option.
        option: String,
        /// The parameters it does list.
        known: String,
    },
    /// An action fencing needs that the agent does not offer.
    #[error("{agent} does not offer the `{action}` action; Palisade fences with off, confirms with status and unfences with on")]
    MissingAction {
        /// The agent's name (from its metadata).
        agent: String,
        /// The action.
        action: String,
    },
}

fn stderr_or_none(stderr: &str) -> String {
    if stderr.is_empty() {
        "no stderr".to_string()
    } else {
        format!("stderr: {stderr}")
    }
}

fn stderr_tail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr: {stderr}")
    }
}

/// What fence-agents' library means by an exit code.
pub(crate) fn meaning(code: i32) -> &'static str {
    match code {
        1 => " (generic error)",
        2 => " (bad arguments)",
        3 | 10 | 11 => " (login failed: check the user name and password)",
        4 => " (connection lost)",
        5 => " (timed out)",
        6 => " (timed out waiting for power on)",
        7 => " (timed out waiting for power off)",
        8 => " (could not read the plug's status, or no such plug)",
        9 => " (could not read the plug's status)",
        12 => " (no VM UUID for that plug)",
        _ => "",
    }
}

impl From<AgentError> for DeviceError {
    fn from(e: AgentError) -> DeviceError {
        let refused = |agent: String, action: &str, detail: String| DeviceError::Refused {
            address: agent,
            command: format!("agent {action}"),
            detail,
        };
        match e {
            AgentError::Encode { .. }
            | AgentError::Metadata { .. }
            | AgentError::BadMetadata { .. }
            | AgentError::UnknownOption { .. }
            | AgentError::MissingAction { .. } => DeviceError::Policy {
                detail: e.to_string(),
            },
            AgentError::Spawn { ref agent, .. } => DeviceError::Unreachable {
                address: agent.clone(),
                reason: e.to_string(),
            },
            AgentError::Wait {
                agent,
                action,
                reason,
            } => refused(
                agent,
                &action,
                format!("waiting for the agent failed: {reason}"),
            ),
            AgentError::Timeout {
                agent,
                action,
                timeout_ms,
                stderr,
            } => DeviceError::Timeout {
                address: agent,
                what: format!(
                    "agent {action}; its process group was killed{}",
                    stderr_tail(&stderr)
                ),
                timeout_ms,
            },
            AgentError::Signal {
                agent,
                action,
                signal,
                stderr,
            } => refused(
                agent,
                &action,
                format!(
                    "the agent was killed by signal {signal}; {}",
                    stderr_or_none(&stderr)
                ),
            ),
            AgentError::Exit {
                agent,
                action,
                code: code @ (3 | 10 | 11),
                stderr,
            } => DeviceError::AuthFailed {
                address: agent,
                detail: format!("agent {action} exit {code}; {}", stderr_or_none(&stderr)),
            },
            AgentError::Exit {
                agent,
                action,
                code: 4,
                stderr,
            } => DeviceError::Unreachable {
                address: agent,
                reason: format!(
                    "agent {action} exit 4 (connection lost); {}",
                    stderr_or_none(&stderr)
                ),
            },
            AgentError::Exit {
                agent,
                action,
                code,
                stderr,
            } => refused(
                agent,
                &action,
                format!(
                    "the agent exited with {code}{}; {}",
                    meaning(code),
                    stderr_or_none(&stderr)
                ),
            ),
            AgentError::OffNotConfirmed { agent, off_stderr } => refused(
                agent,
                "off",
                format!(
                    "the agent exited 0 for off, but its status then answered ON (exit 0): power was not switched off{}",
                    off_stderr.map_or(String::new(), |s| format!("; off's stderr: {s}"))
                ),
            ),
            AgentError::NoPlugs { agent } => DeviceError::Unsupported {
                operation: format!("listing plugs ({agent} has none)"),
            },
            AgentError::BadList { agent, source } => DeviceError::Protocol {
                address: agent,
                detail: format!("agent list printed {source}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> AgentError {
        AgentError::Exit {
            agent: "fence_x 10.0.0.5".into(),
            action: "off".into(),
            code,
            stderr: "login with password *** failed".into(),
        }
    }

    #[test]
    fn exit_codes_map_as_fence_agents_mean_them() {
        for (code, kind) in [
            (3, "auth_failed"),
            (10, "auth_failed"),
            (11, "auth_failed"),
            (4, "unreachable"),
            (1, "refused"),
            (77, "refused"),
        ] {
            let d = DeviceError::from(exit(code));
            assert_eq!(d.code(), kind, "exit {code}: {d}");
            let t = d.to_string();
            assert!(t.contains("fence_x 10.0.0.5"), "{t}");
            assert!(t.contains("login with password *** failed"), "{t}");
        }
        assert!(DeviceError::from(exit(77))
            .to_string()
            .contains("exited with 77"));
        assert!(exit(7)
            .to_string()
            .contains("timed out waiting for power off"));
    }

    #[test]
    fn a_timeout_and_an_unconfirmed_off_say_what_happened() {
        let t = DeviceError::from(AgentError::Timeout {
            agent: "fence_x".into(),
            action: "off".into(),
            timeout_ms: 2000,
            stderr: "PCMK_service=pacemaker-fenced".into(),
        });
        assert_eq!(t.code(), "timeout");
        let s = t.to_string();
        assert!(
            s.contains("process group was killed") && s.contains("PCMK_service"),
            "{s}"
        );
        let off = DeviceError::from(AgentError::OffNotConfirmed {
            agent: "fence_x".into(),
            off_stderr: None,
        });
        assert_eq!(off.code(), "refused");
        assert!(
            off.to_string()
                .contains("exited 0 for off, but its status then answered ON"),
            "{off}"
        );
    }

    #[test]
    fn a_missing_program_names_it() {
        let e = AgentError::Spawn {
            agent: "fence_missing".into(),
            program: "/nonexistent/fence_missing".into(),
            reason: "No such file or directory (os error 2)".into(),
        };
        assert!(e
            .to_string()
            .contains("cannot run agent /nonexistent/fence_missing"));
        let d = DeviceError::from(e);
        assert_eq!(d.code(), "unreachable");
        assert!(d.to_string().contains("/nonexistent/fence_missing"), "{d}");
    }
}
