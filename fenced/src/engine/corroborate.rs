//! Corroboration (`confirm = "device+witness"`): after a level's devices read back off, every
//! witness of the target watches the node at once, under what is left of the attempt's
//! deadline. The level's "off" stands only if all of them saw silence; a sign of life is a
//! veto with the evidence, and a witness that errs, times out or hangs gave no evidence, which
//! is never taken as off. Every observation goes into the operation's record with its times.

use super::Inner;
use crate::config::TargetConfig;
use crate::model::*;
use drivers::witness::{Evidence, Observation, Verdict};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::{timeout_at, Instant};

fn unix_ms(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why corroboration refused a level's "off": the record's failure code comes from this, never
/// from the words of the message, so rewording a message cannot turn a veto into "no evidence".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dissent {
    /// At least one witness saw the node alive after its devices read back off: a veto.
    Alive,
    /// No witness saw life, but at least one could not observe: not confirmed either.
    NoEvidence,
    /// The target has no witness to ask (the configuration refuses this; kept as a refusal).
    NoWitness,
}

impl Dissent {
    /// The attempt's failure code in the record and the API (`witness_alive`, ...).
    pub(super) fn code(self) -> &'static str {
        match self {
            Dissent::Alive => "witness_alive",
            Dissent::NoEvidence => "witness_no_evidence",
            Dissent::NoWitness => "witness_none",
        }
    }
}

/// A level whose "off" the witnesses did not corroborate: what kind of refusal, and the words
/// with the evidence for the record and the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The kind of refusal, which picks the failure code.
    pub(super) dissent: Dissent,
    /// The level's failure message, evidence included.
    pub(super) message: String,
}

/// The verdict of a whole corroboration from the verdicts of its witnesses, in any order: any
/// `Alive` is a veto, otherwise any `NoEvidence` refuses, otherwise (all silent) `None`.
pub(super) fn dissent_of(verdicts: impl IntoIterator<Item = Verdict>) -> Option<Dissent> {
    let mut seen = None;
    for v in verdicts {
        match v {
            Verdict::Alive => return Some(Dissent::Alive),
            Verdict::NoEvidence => seen = Some(Dissent::NoEvidence),
            Verdict::Silent => {}
        }
    }
    seen
}

/// Runs every witness of `target` for level `level`, whose devices `names` read back off.
/// `Ok` carries the words for the summary ("witnesses silent: ..."); `Err` the level's refusal.
/// The reports are pushed to `op.witnesses`; the caller saves the operation.
pub(super) async fn corroborate(
    inner: &Inner,
    target: &TargetConfig,
    op: &mut Operation,
    level: u32,
    names: &str,
    deadline: Instant,
) -> Result<String, Refusal> {
    let Some(slots) = inner.witnesses.get(&target.name).filter(|s| !s.is_empty()) else {
        // The configuration refuses device+witness without witnesses; should it ever get here
        // anyway, there is nobody to corroborate, which is not agreement.
        return Err(Refusal {
            dissent: Dissent::NoWitness,
            message: format!(
                "{names} read back off, but confirm = \"device+witness\" and no witness is configured for {}: NOT confirmed off",
                target.name
            ),
        });
    };
    let budget = deadline.saturating_duration_since(Instant::now());
    let mut running: FuturesUnordered<_> = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| async move {
            let started = inner.clock.now_ms();
            let obs = match timeout_at(deadline, slot.witness.observe(deadline)).await {
                Ok(o) => o,
                // The witness broke its promise to return by the deadline: no evidence.
                Err(_) => Observation {
                    verdict: Verdict::NoEvidence,
                    evidence: vec![Evidence {
                        at: SystemTime::now(),
                        detail: format!(
                            "did not answer within the attempt deadline ({} ms)",
                            budget.as_millis()
                        ),
                    }],
                },
            };
            (i, started, inner.clock.now_ms(), obs)
        })
        .collect();
    let mut done = Vec::new();
    while let Some(r) = running.next().await {
        done.push(r);
    }
    drop(running);
    // In the order the target lists them, so records and messages read the same every time.
    done.sort_by_key(|(i, ..)| *i);
    let mut silent = Vec::new();
    let mut alive = Vec::new();
    let mut blind = Vec::new();
    let dissent = dissent_of(done.iter().map(|(.., obs)| obs.verdict));
    for (i, started, finished, obs) in done {
        let slot = &slots[i];
        let kind = slot.witness.kind();
        let details: Vec<String> = obs.evidence.iter().map(|e| e.detail.clone()).collect();
        let words = format!("{} ({kind})", slot.name);
        match obs.verdict {
            Verdict::Silent => silent.push(words),
            Verdict::Alive => alive.push(format!("witness {words}: {}", details.join("; "))),
            Verdict::NoEvidence => blind.push(format!(
                "witness {words} gave no evidence: {}",
                details.join("; ")
            )),
        }
        {
            let mut st = inner.state();
            *st.metrics
                .witness_verdicts
                .entry((
                    slot.name.clone(),
                    kind.to_string(),
                    obs.verdict.as_str().to_string(),
                ))
                .or_default() += 1;
            if obs.verdict == Verdict::Silent {
                st.metrics
                    .witness_confirm_ms
                    .entry((slot.name.clone(), kind.to_string()))
                    .or_default()
                    .push(finished.saturating_sub(started));
            }
        }
        op.witnesses.push(WitnessReport {
            level,
            witness: slot.name.clone(),
            kind: kind.to_string(),
            watched: slot.witness.describe(),
            verdict: obs.verdict.into(),
            started_ms: started,
            finished_ms: finished,
            evidence: obs
                .evidence
                .into_iter()
                .map(|e| WitnessEvidence {
                    at_ms: unix_ms(e.at),
                    detail: e.detail,
                })
                .collect(),
        });
    }
    match dissent {
        None => Ok(format!("witnesses silent: {}", silent.join(", "))),
        Some(Dissent::Alive) => {
            count_lies(inner, target, level);
            let mut why = format!(
                "{names} read back off, but {} is still alive: {}",
                target.name,
                alive.join("; ")
            );
            if !blind.is_empty() {
                why.push_str(&format!(" (and {})", blind.join("; ")));
            }
            Err(Refusal {
                dissent: Dissent::Alive,
                message: format!(
                    "{why}; a lying device or the wrong outlet/BMC for this node: NOT confirmed off"
                ),
            })
        }
        Some(d) => Err(Refusal {
            dissent: d,
            message: format!(
                "{names} read back off, but {}: NOT confirmed off",
                blind.join("; ")
            ),
        }),
    }
}

/// Counts every device of level `level` as caught lying (a witness saw the node alive after
/// they read back off).
fn count_lies(inner: &Inner, target: &TargetConfig, level: u32) {
    let mut st = inner.state();
    for e in target.levels.get(level as usize - 1).into_iter().flatten() {
        *st.metrics
            .lying_devices
            .entry(e.device.clone())
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_alive_is_a_veto_whatever_else_the_witnesses_said() {
        use Verdict::*;
        assert_eq!(
            dissent_of([Silent, Alive, NoEvidence]),
            Some(Dissent::Alive)
        );
        assert_eq!(dissent_of([NoEvidence, Alive]), Some(Dissent::Alive));
        assert_eq!(dissent_of([Silent, NoEvidence]), Some(Dissent::NoEvidence));
        assert_eq!(dissent_of([Silent, Silent]), None);
        // No verdict at all is agreement only for this fold; corroborate refuses a target
        // without witnesses before it gets here (Dissent::NoWitness).
        assert_eq!(dissent_of([]), None);
    }

    #[test]
    fn the_failure_code_comes_from_the_kind_not_the_words() {
        assert_eq!(Dissent::Alive.code(), "witness_alive");
        assert_eq!(Dissent::NoEvidence.code(), "witness_no_evidence");
        assert_eq!(Dissent::NoWitness.code(), "witness_none");
    }
}
