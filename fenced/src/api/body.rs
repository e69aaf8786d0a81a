//! The API's own bodies: the error answer, the reason a state change carries, and the ledger
//! verification answer. (The engine's values, which are also history's stored form, are in
//! `crate::model`.)

use crate::engine::audit::LedgerCheck;
use crate::history::LedgerReport;
use crate::model::{Action, FenceAccepted, FenceRequest};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The error every endpoint answers with: `{"error": {"code", "message", "hint"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable code (`unknown_target`, `conflict`, `forbidden`, `bad_request`, ...; in a
    /// fencer cluster also `no_quorum` 503, `no_executor` 503, `config_mismatch` 409,
    /// `cluster_joining` 503, `cluster_timeout` 503, `cluster_lost` 503, `cluster_state` 503).
    pub code: String,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// `POST /v1/pause`, `/v1/resume` and `/v1/targets/{t}/confirm` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (recorded in history; required for manual confirmation).
    #[serde(default)]
    pub reason: String,
}

/// Most entries one `POST /v1/fence/batch` may carry.
pub const MAX_BATCH: usize = 1000;

/// Largest `POST /v1/fence/batch` body: [`MAX_BATCH`] entries of about a kilobyte each (the
/// reason is limited to 1024 bytes).
pub const MAX_BATCH_BODY_BYTES: usize = 2 * 1024 * 1024;

/// `POST /v1/fence/batch` body: many fence requests, one operation per target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FenceBatchRequest {
    /// The requests (1 to 1000), each as `POST /v1/fence` takes it and judged by the same
    /// rules: its own operation, join, or refusal, its own request id, limits and audit record.
    pub requests: Vec<FenceRequest>,
}

/// `POST /v1/fence/batch` answer: one result per request, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FenceBatchAnswer {
    /// The results, in the order of the request's entries.
    pub results: Vec<FenceBatchResult>,
}

/// What became of one entry of a batch: exactly what `POST /v1/fence` would have answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FenceBatchResult {
    /// The entry's target.
    pub target: String,
    /// The entry's action.
    pub action: Action,
    /// The entry's request id, if it had one.
    pub request_id: Option<String>,
    /// The HTTP status `POST /v1/fence` would have answered this entry with (202 accepted or
    /// joined; 404, 409, 429, 400, 500 refused).
    pub status: u16,
    /// The operation started or joined (when `status` is 202).
    pub accepted: Option<FenceAccepted>,
    /// Why it was refused (otherwise). A refused entry started nothing: its target is NOT
    /// fenced by this request.
    pub error: Option<ErrorDetail>,
}

/// `GET /v1/ledger/verify`: whether the ledger is intact, and if not, the first bad record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerVerification {
    /// Every link and signature checked out.
    pub ok: bool,
    /// What was checked (when `ok`).
    pub report: Option<LedgerReport>,
    /// The first bad record (when not `ok`).
    pub first_bad_seq: Option<u64>,
    /// What is wrong with it (when not `ok`).
    pub detail: Option<String>,
}

impl From<LedgerCheck> for LedgerVerification {
    fn from(c: LedgerCheck) -> Self {
        match c {
            LedgerCheck::Intact(r) => LedgerVerification {
                ok: true,
                report: Some(r),
                first_bad_seq: None,
                detail: None,
            },
            LedgerCheck::Broken { seq, detail } => LedgerVerification {
                ok: false,
                report: None,
                first_bad_seq: Some(seq),
                detail: Some(detail),
            },
        }
    }
}
