//! The audit side of the ledger: who asked what, from where, why, and what came of it, and
//! the ledger's verification for the API.

use super::Engine;
use crate::error::EngineError;
use crate::history::{HistoryError, LedgerEntry, LedgerRecord, LedgerReport};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

impl Engine {
    /// Appends an audit record to the ledger. A failure to write it is logged, not returned:
    /// the request it describes has already been decided and recorded on its own.
    pub fn audit(&self, who: &str, from: &str, what: &str, why: &str, outcome: &str) {
        let entry = LedgerEntry::Audit {
            at_ms: self.inner.clock.now_ms(),
            who: who.to_string(),
            from: from.to_string(),
            what: what.to_string(),
            why: why.to_string(),
            outcome: outcome.to_string(),
        };
        if let Err(e) = self.inner.history.append_event(entry) {
            tracing::error!("cannot write the audit record ({what} by {who}): {e}");
        }
    }

    /// Audits a failed authentication (the presented credential itself is never recorded);
    /// `unaudited` earlier failures were over the audit budget and are summed up here.
    pub fn audit_auth_failure(
        &self,
        who: &str,
        from: &str,
        method: &impl std::fmt::Display,
        path: &str,
        unaudited: u64,
    ) {
        let why = match unaudited {
            0 => String::new(),
            n => format!("{n} earlier failed authentications were over the audit budget and not recorded one by one"),
        };
        self.audit(
            who,
            from,
            &format!("{method} {path}"),
            &why,
            "authentication failed",
        );
    }

    /// Ledger records from `from_seq` on, at most `limit`.
    pub fn ledger(&self, from_seq: u64, limit: usize) -> Result<Vec<LedgerRecord>, EngineError> {
        Ok(self.inner.history.ledger(from_seq, limit)?)
    }

    /// Verifies the whole ledger with the daemon's own key.
    pub fn verify_ledger(&self) -> Result<LedgerVerification, EngineError> {
        let key = self.inner.history.verifying_key();
        match self.inner.history.verify(key.as_ref()) {
            Ok(r) => Ok(LedgerVerification {
                ok: true,
                report: Some(r),
                first_bad_seq: None,
                detail: None,
            }),
            Err(HistoryError::ChainBroken { seq, detail }) => Ok(LedgerVerification {
                ok: false,
                report: None,
                first_bad_seq: Some(seq),
                detail: Some(detail),
            }),
            Err(e) => Err(e.into()),
        }
    }
}
