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

/// Runs every witness of `target` for level `level`, whose devices `names` read back off.
/// `Ok` carries the words for the summary ("witnesses silent: ..."); `Err` the level's failure.
/// The reports are pushed to `op.witnesses`; the caller saves the operation.
pub(super) async fn corroborate(
    inner: &Inner,
    target: &TargetConfig,
    op: &mut Operation,
    level: u32,
    names: &str,
    deadline: Instant,
) -> Result<String, String> {
    let Some(slots) = inner.witnesses.get(&target.name).filter(|s| !s.is_empty()) else {
        // The configuration refuses device+witness without witnesses; should it ever get here
        // anyway, there is nobody to corroborate, which is not agreement.
        return Err(format!(
            "{names} read back off, but confirm = \"device+witness\" and no witness is configured for {}: NOT confirmed off",
            target.name
        ));
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
    if !alive.is_empty() {
        let mut st = inner.state();
        for e in target.levels.get(level as usize - 1).into_iter().flatten() {
            *st.metrics
                .lying_devices
                .entry(e.device.clone())
                .or_default() += 1;
        }
        drop(st);
        let mut why = format!(
            "{names} read back off, but {} is still alive: {}",
            target.name,
            alive.join("; ")
        );
        if !blind.is_empty() {
            why.push_str(&format!(" (and {})", blind.join("; ")));
        }
        return Err(format!(
            "{why}; a lying device or the wrong outlet/BMC for this node: NOT confirmed off"
        ));
    }
    if !blind.is_empty() {
        return Err(format!(
            "{names} read back off, but {}: NOT confirmed off",
            blind.join("; ")
        ));
    }
    Ok(format!("witnesses silent: {}", silent.join(", ")))
}
