//! Witnesses: observers independent of the power device that can veto its "off".
//!
//! A device can lie (a BMC reporting a cached "off", the wrong outlet mapped to the node, a LOM
//! that died with its host). A witness looks at the node itself after the device says off: its
//! network addresses, its heartbeat on the shared disk, the power path that feeds it. Witnesses
//! can only veto, never confirm on their own: a node that is cut off is network-silent before
//! anyone fences it, and a disk heartbeat also stops when only the node's storage path died. So
//! the engine counts a node fenced under `device+witness` only when the device read back off
//! *and* every witness observed silence; a witness that errs or times out gave no evidence,
//! which is never taken as silence.

pub mod disk;
pub mod network;
pub mod power_path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// What one witness concluded about the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No sign of life for the witness's whole settle time: the witness does not object.
    Silent,
    /// The node showed a sign of life after the device reported off: a veto.
    Alive,
    /// The witness could not observe (an error, a timeout, an unreadable disk): neither a veto
    /// nor agreement, and never read as "off".
    NoEvidence,
}

impl Verdict {
    /// The verdict as serde spells it (`silent`, `alive`, `no_evidence`), for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Silent => "silent",
            Verdict::Alive => "alive",
            Verdict::NoEvidence => "no_evidence",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Silent => "silent",
            Verdict::Alive => "alive",
            Verdict::NoEvidence => "no evidence",
        })
    }
}

/// One thing a witness saw, with when it saw it, kept in the history as the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// When it was seen.
    pub at: SystemTime,
    /// What was seen, for an operator: e.g. "10.0.0.12:5405 accepted a TCP connection".
    pub detail: String,
}

/// The outcome of one observation: a verdict and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// What the witness concluded.
    pub verdict: Verdict,
    /// What it saw, oldest first. A `Silent` verdict lists what was tried and went unanswered;
    /// `Alive` names the sign of life; `NoEvidence` says why nothing could be observed.
    pub evidence: Vec<Evidence>,
}

/// An independent observer of one node.
///
/// Implementations put their own timeout on every probe and must be cancel-safe: the engine
/// drops an observation that overruns the attempt's deadline and counts it as no evidence.
#[async_trait]
pub trait Witness: Send + Sync + 'static {
    /// The witness kind as the configuration spells it (`network`, `disk-heartbeat`,
    /// `power-path`).
    fn kind(&self) -> &'static str;

    /// What is watched, for logs and evidence (addresses, disk and slot, outlet).
    fn describe(&self) -> String;

    /// Watches the node, starting now (the engine calls this once the device has read back
    /// off). Returns [`Verdict::Alive`] as soon as a sign of life is seen, [`Verdict::Silent`]
    /// only after the witness's settle time passed without one, and [`Verdict::NoEvidence`] when
    /// it could not observe; it returns by `deadline` in every case.
    async fn observe(&self, deadline: tokio::time::Instant) -> Observation;

    /// Why this witness can never observe (it could not be built from its configuration), or
    /// `None` for one that can. `/metrics` exports it, so an alert fires before a fence needs
    /// the witness rather than when it gives no evidence in the middle of one.
    fn unavailable(&self) -> Option<&str> {
        None
    }
}
