//! The audit side of the ledger: who asked what, from where, why, and what came of it; the
//! refusal counter; and the ledger's verification.

use super::{Engine, Requester};
use crate::error::EngineError;
use crate::history::{HistoryError, LedgerEntry, LedgerRecord, LedgerReport, Write};

/// What checking the whole ledger found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerCheck {
    /// Every link and signature checked out.
    Intact(LedgerReport),
    /// The first bad record, and what is wrong with it.
    Broken {
        /// Its sequence number.
        seq: u64,
        /// What does not match.
        detail: String,
    },
}

impl Engine {
    /// Appends an audit record to the ledger. A failure to write it is logged, not returned:
    /// the request it describes has already been decided and recorded on its own.
    pub(super) fn audit(&self, by: &Requester, what: &str, why: &str, outcome: &str) {
        self.append_audit(&by.caller.identity, &by.source, what, why, outcome);
    }

    /// Like [`Engine::audit`], through the group commit (a refused or joined fence request
    /// shares its durable write with the others in flight). `also` goes first in the same
    /// commit (the refusal record of a rate-limited request).
    pub(super) async fn audit_batched(
        &self,
        by: &Requester,
        what: &str,
        why: &str,
        outcome: &str,
        also: Option<LedgerEntry>,
    ) {
        let mut entries: Vec<LedgerEntry> = also.into_iter().collect();
        entries.push(self.audit_entry(by, what, why, outcome));
        if let Err(e) = self.inner.journal.write(Write::Events(entries)).await {
            tracing::error!(
                "cannot write the audit record ({what} by {}): {e}",
                by.caller.identity
            );
        }
    }

    /// The audit record of a request, to be written with the record the request made (one
    /// durable commit for both).
    pub(super) fn audit_entry(
        &self,
        by: &Requester,
        what: &str,
        why: &str,
        outcome: &str,
    ) -> LedgerEntry {
        LedgerEntry::Audit {
            at_ms: self.inner.clock.now_ms(),
            who: by.caller.identity.clone(),
            from: by.source.clone(),
            what: what.to_string(),
            why: why.to_string(),
            outcome: outcome.to_string(),
        }
    }

    fn append_audit(&self, who: &str, from: &str, what: &str, why: &str, outcome: &str) {
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

    /// Counts a refusal by its code (for `/metrics`) and passes the result on.
    pub(super) fn tally<T>(&self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        if let Err(e) = &result {
            *self
                .inner
                .state()
                .metrics
                .refused
                .entry(e.code().to_string())
                .or_default() += 1;
        }
        result
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
        self.append_audit(
            who,
            from,
            &format!("{method} {path}"),
            &why,
            "authentication failed",
        );
    }

    /// Audits an action refused before it reached the engine because the caller is not
    /// authenticated or lacks the role it needs; `outcome` says which (`refused: forbidden
    /// (needs the `admin` role)`).
    pub fn audit_access_refused(
        &self,
        by: &Requester,
        method: &impl std::fmt::Display,
        path: &str,
        outcome: &str,
    ) {
        self.audit(by, &format!("{method} {path}"), "", outcome);
    }

    /// Ledger records from `from_seq` on, at most `limit`.
    pub fn ledger(&self, from_seq: u64, limit: usize) -> Result<Vec<LedgerRecord>, EngineError> {
        self.tally(
            self.inner
                .history
                .ledger(from_seq, limit)
                .map_err(EngineError::from),
        )
    }

    /// Verifies the whole ledger with the daemon's own key.
    pub fn verify_ledger(&self) -> Result<LedgerCheck, EngineError> {
        let key = self.inner.history.verifying_key();
        match self.inner.history.verify(key.as_ref()) {
            Ok(r) => Ok(LedgerCheck::Intact(r)),
            Err(HistoryError::ChainBroken { seq, detail }) => {
                Ok(LedgerCheck::Broken { seq, detail })
            }
            Err(e) => self.tally(Err(e.into())),
        }
    }
}
