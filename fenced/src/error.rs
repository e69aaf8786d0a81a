//! The engine's errors, each with a stable code and a hint saying what to do. How they map to
//! HTTP is the API's business (`api::status_of`).

use crate::model::Action;

/// Why the engine refused or could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The target is not in the configuration.
    #[error("unknown target `{target}`")]
    UnknownTarget {
        /// The name that was asked for.
        target: String,
    },
    /// The device is not in the configuration.
    #[error("unknown device `{device}`")]
    UnknownDevice {
        /// The name that was asked for.
        device: String,
    },
    /// No operation has that id.
    #[error("no operation with id {id}")]
    UnknownOperation {
        /// The id that was asked for.
        id: u64,
    },
    /// Another operation on the same target, with a different action, is in flight.
    #[error("target `{target}` already has operation {running_id} ({running_action}) in flight; refusing {requested}")]
    Conflict {
        /// The target.
        target: String,
        /// The operation in flight.
        running_id: u64,
        /// Its action.
        running_action: Action,
        /// The action that was refused.
        requested: Action,
    },
    /// A request id was reused for a different target or action.
    #[error("request_id `{request_id}` was used for operation {id} on {target} ({action}); a request id names one request")]
    RequestIdMismatch {
        /// The reused id.
        request_id: String,
        /// The operation it belongs to.
        id: u64,
        /// That operation's target.
        target: String,
        /// That operation's action.
        action: Action,
    },
    /// Fencing is paused by an operator.
    #[error("fencing is paused (by {by}: {reason})")]
    Paused {
        /// Who paused.
        by: String,
        /// Why.
        reason: String,
    },
    /// A blast-radius limit was reached.
    #[error("refused by blast-radius limit: {limit}")]
    RateLimited {
        /// Which limit, with its numbers.
        limit: LimitReached,
    },
    /// The request is malformed.
    #[error("bad request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// The fencer cluster refused the request or could not agree on it (`[cluster]`).
    #[error("{detail}")]
    Cluster {
        /// A stable code (`no_quorum`, `conflict`, `no_executor`, `config_mismatch`, ...).
        code: &'static str,
        /// What happened and what to do (the cluster's refusals say both).
        detail: String,
    },
    /// The durable history could not be written or read; nothing was done.
    #[error("history store failed: {detail}")]
    History {
        /// The store's error.
        detail: String,
    },
}

impl EngineError {
    /// A short stable code for the API and the command line.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownTarget { .. } => "unknown_target",
            EngineError::UnknownDevice { .. } => "unknown_device",
            EngineError::UnknownOperation { .. } => "unknown_operation",
            EngineError::Conflict { .. } => "conflict",
            EngineError::RequestIdMismatch { .. } => "request_id_mismatch",
            EngineError::Paused { .. } => "paused",
            EngineError::RateLimited { .. } => "rate_limited",
            EngineError::BadRequest { .. } => "bad_request",
            EngineError::History { .. } => "history_failed",
            EngineError::Cluster { code, .. } => code,
        }
    }

    /// What the caller can do about it.
    pub fn hint(&self) -> String {
        match self {
            EngineError::UnknownTarget { .. } => {
                "list configured targets with `fence_node status`".into()
            }
            EngineError::UnknownDevice { .. } => "list devices with `fence_node devices`".into(),
            EngineError::UnknownOperation { .. } => {
                "see recent operations with `fence_node history`".into()
            }
            EngineError::Conflict { running_id, .. } => format!(
                "wait for operation {running_id} to finish (`fence_node status`), then retry"
            ),
            EngineError::RequestIdMismatch { .. } => {
                "use a fresh request_id for a new request".into()
            }
            EngineError::Paused { .. } => {
                "an operator must run `fence_node resume` before new operations start".into()
            }
            EngineError::RateLimited { .. } => "check why so many fences are requested (a broken controller?); the limits are in the [limits] section of the config".into(),
            EngineError::BadRequest { .. } => "fix the request; see /v1/openapi.json".into(),
            EngineError::Cluster { .. } => "see `fence_node status` for the cluster's members and quorum".into(),
            EngineError::History { .. } => "check the disk holding the history file (space, permissions, errors in the kernel log); no device was touched".into(),
        }
    }
}

impl From<crate::history::HistoryError> for EngineError {
    fn from(e: crate::history::HistoryError) -> Self {
        EngineError::History {
            detail: e.to_string(),
        }
    }
}

/// Which blast-radius limit refused a fencing operation, with its numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    /// Too many fencing operations started overall within the window.
    #[error("{started} fencing operations already started in the last {window_s} s (limits.max_operations = {max})")]
    Overall {
        /// Operations started within the window.
        started: u32,
        /// The window, seconds.
        window_s: u64,
        /// The limit.
        max: u32,
    },
    /// Too many fencing operations started on this target within the window.
    #[error("{started} fencing operations already started on {target} in the last {window_s} s (limits.max_operations_per_target = {max})")]
    PerTarget {
        /// The target.
        target: String,
        /// Operations started on it within the window.
        started: u32,
        /// The window, seconds.
        window_s: u64,
        /// The limit.
        max: u32,
    },
}
