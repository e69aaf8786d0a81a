//! The API's own bodies: the error answer, the reason a state change carries, and the ledger
//! verification answer. (The engine's values, which are also history's stored form, are in
//! `crate::model`.)

use crate::engine::audit::LedgerCheck;
use crate::history::LedgerReport;
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
    /// Stable code (`unknown_target`, `conflict`, `forbidden`, `bad_request`, ...).
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
