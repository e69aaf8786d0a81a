//! Running one operation: the fence-race delay, levels in order (each level's devices
//! stepped together, see [`super::step`]), the outcome from what the devices confirmed, and the
//! durable record of each step before its command can go out.

use super::corroborate::corroborate;
use super::monitor::unhealthy_skip;
use super::step::{step, StepPlan};
use super::Inner;
use crate::config::{Confirm, LevelEntry, TargetConfig, Timing};
use crate::history::Write;
use crate::model::*;
use drivers::{FenceProof, PillKind, PowerCommand};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The fixed delay plus a uniform random share of the random delay.
pub(super) fn fence_race_delay(t: &Timing) -> Duration {
    let extra = if t.random_delay.is_zero() {
        Duration::ZERO
    } else {
        t.random_delay
            .mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    };
    t.delay + extra
}

fn publish(inner: &Inner, tx: &watch::Sender<Operation>, op: &Operation) {
    tx.send_replace(op.clone());
    let _ = inner.events.send(Event::Operation {
        operation: Box::new(op.clone()),
    });
}

/// Writes the operation's snapshot through the group commit.
async fn record(inner: &Inner, op: &Operation) -> Result<(), crate::history::HistoryError> {
    inner
        .journal
        .write(Write::Operation {
            operation: Box::new(op.clone()),
            also: Vec::new(),
        })
        .await
}

/// Persists and publishes. A history write failure after the operation started cannot undo
/// what devices did; it is logged, and the final outcome is still attempted.
async fn save(inner: &Inner, tx: &watch::Sender<Operation>, op: &Operation) {
    if let Err(e) = record(inner, op).await {
        tracing::error!(op = op.id, target = %op.target, error = %e, "cannot write operation to history");
    }
    publish(inner, tx, op);
}

/// Drives an accepted operation to its outcome, then releases the target.
pub(super) async fn run_operation(
    inner: Arc<Inner>,
    target: TargetConfig,
    mut op: Operation,
    tx: watch::Sender<Operation>,
    delay: Duration,
    total: Duration,
) {
    if !delay.is_zero() {
        tracing::info!(op = op.id, target = %op.target, delay_ms = delay.as_millis() as u64, "fence-race delay");
        tokio::time::sleep(delay).await;
        op.state = OpState::Running;
        let now = inner.clock.now_ms();
        op.started_ms = Some(now);
        // The first level's commands are recorded with the state change: one durable write.
        if let Some((n, level)) = first_level(&inner, &target) {
            op.pending = pending_steps(&inner, &op, n, level, first_phase(op.action), now);
        }
        save(&inner, &tx, &op).await;
    }
    tracing::info!(op = op.id, target = %op.target, action = %op.action, "operation started");

    let deadline = Instant::now() + total;
    let outcome = drive(&inner, &target, &mut op, &tx, deadline).await;
    op.state = match outcome {
        Outcome::Succeeded { .. } => OpState::Succeeded,
        Outcome::Failed { .. } => OpState::Failed,
    };
    op.finished_ms = Some(inner.clock.now_ms());
    match &outcome {
        Outcome::Succeeded { summary, .. } => {
            tracing::info!(op = op.id, target = %op.target, "{summary}")
        }
        Outcome::Failed { message, .. } => {
            tracing::warn!(op = op.id, target = %op.target, "operation failed: {message}")
        }
    }
    op.outcome = Some(outcome);
    op.pending.clear();
    // Recorded before the target is released, so a joined waiter never sees "not in flight"
    // without the outcome being in history.
    if let Err(e) = record(&inner, &op).await {
        tracing::error!(op = op.id, error = %e, "cannot write operation outcome to history");
    }
    {
        let mut st = inner.state();
        let result = if op.state == OpState::Succeeded {
            "succeeded"
        } else {
            "failed"
        };
        *st.metrics
            .operations
            .entry((op.action.to_string(), result.into()))
            .or_default() += 1;
        *st.metrics
            .duration_ms_sum
            .entry(op.action.to_string())
            .or_default() += op.elapsed_ms().unwrap_or(0);
        st.in_flight.remove(&op.target);
    }
    publish(&inner, &tx, &op);
}

/// One level try's result.
struct LevelResult {
    ok: bool,
    already: bool,
    failures: Vec<String>,
    /// Set when a device of the level confirmed by poison pill: the longest msgwait.
    pill_msgwait_ms: Option<u64>,
    /// `entry: basis` for each confirmed device whose driver said how it read back.
    bases: Vec<String>,
    /// The attempt's deadline: witnesses watch under what is left of it.
    deadline: Instant,
}

/// `level N`, followed by how each device read back when its driver said so, for summaries
/// (`level 1; relays:n1: relay output read back, no sense line`).
fn level_words(n: u32, bases: &[String]) -> String {
    let mut s = format!("level {n}");
    for b in bases {
        s.push_str("; ");
        s.push_str(b);
    }
    s
}

async fn drive(
    inner: &Inner,
    target: &TargetConfig,
    op: &mut Operation,
    tx: &watch::Sender<Operation>,
    deadline: Instant,
) -> Outcome {
    let mut level_failures = Vec::new();
    // Levels whose "off" a witness refused: named in a later level's success.
    let mut vetoes: Vec<String> = Vec::new();
    let first_phase = first_phase(op.action);
    for (i, level) in target.levels.iter().enumerate() {
        let n = i as u32 + 1;
        if Instant::now() >= deadline {
            level_failures.push(format!("level {n}: not tried, total timeout reached"));
            break;
        }
        if let Some(why) = unhealthy_skip(inner, level) {
            level_failures.push(format!("level {n}: not tried: {why}"));
            continue;
        }
        let r = run_level(inner, target, op, tx, n, level, first_phase, deadline).await;
        if !r.ok {
            level_failures.push(format!("level {n}: {}", r.failures.join("; ")));
            continue;
        }
        let devices: Vec<String> = level.iter().map(entry_name).collect();
        let names = devices.join(", ");
        // Corroboration: the level's "off" stands only if every witness saw silence.
        let mut witnessed = String::new();
        if op.action.fences() && target.confirm == Confirm::DeviceAndWitness {
            let asked_from = op.witnesses.len();
            let verdict = corroborate(inner, target, op, n, &names, r.deadline).await;
            if verdict.is_ok() {
                save(inner, tx, op).await;
            }
            match verdict {
                Ok(words) => witnessed = format!("; {words}"),
                Err(refusal) => {
                    // The devices' read-backs are not a confirmation any more: the record says
                    // so, with the evidence, so no reader of history takes them for one.
                    let code = refusal.dissent.code();
                    let why = refusal.message;
                    // The reports this corroboration added (a retried level has older ones).
                    let verdicts: Vec<OverrulingVerdict> = op
                        .witnesses
                        .get(asked_from..)
                        .unwrap_or_default()
                        .iter()
                        .map(|w| OverrulingVerdict {
                            witness: w.witness.clone(),
                            kind: w.kind.clone(),
                            verdict: w.verdict,
                        })
                        .collect();
                    for a in op.attempts.iter_mut().filter(|a| a.level == n) {
                        if matches!(a.result, StepResult::Confirmed { .. }) && a.phase == Phase::Off
                        {
                            let read_back = std::mem::replace(
                                &mut a.result,
                                StepResult::Failed {
                                    code: code.into(),
                                    message: why.clone(),
                                },
                            );
                            a.overruled = Some(Overruled {
                                read_back,
                                witnesses: verdicts.clone(),
                            });
                        }
                    }
                    save(inner, tx, op).await;
                    vetoes.push(format!("level {n}: {why}"));
                    level_failures.push(format!("level {n}: {why}"));
                    continue;
                }
            }
            if !vetoes.is_empty() {
                witnessed.push_str(&format!(" (after {})", vetoes.join(" | ")));
            }
        }
        if first_phase == Phase::Off {
            confirmed_off(inner, op, n);
        }
        if let (Some(_), Action::On) = (r.pill_msgwait_ms, op.action) {
            return Outcome::Succeeded {
                summary: format!(
                    "{} unfenced: its SBD slot was cleared and read back on a majority of disks via {names} (level {n})",
                    op.target
                ),
                confirmation: Confirmation::SlotCleared { level: n, devices },
                powered_on: None,
            };
        }
        if let (Some(msgwait_ms), true) = (r.pill_msgwait_ms, op.action.fences()) {
            let verb = if op.action == Action::Reboot {
                "reset"
            } else {
                "off"
            };
            return Outcome::Succeeded {
                confirmation: Confirmation::PoisonPill { level: n, devices, msgwait_ms },
                // A reset pill makes the node restart itself; nothing here can see it return.
                powered_on: None,
                summary: format!(
                    "{} fenced: poison pill ({verb}) written to its slot on a majority of disks via {names} (level {n}), read back, and msgwait ({msgwait_ms} ms) elapsed{witnessed}",
                    op.target
                ),
            };
        }
        let lv = format!("{}{witnessed}", level_words(n, &r.bases));
        let confirmation = Confirmation::PowerReadBack {
            level: n,
            devices,
            already: r.already,
        };
        return match op.action {
            Action::Off => Outcome::Succeeded {
                confirmation,
                powered_on: None,
                summary: if r.already {
                    format!("{} was already off: power read back as off from {names} ({lv}); no command sent", op.target)
                } else {
                    format!(
                        "{} fenced: power read back as off from {names} ({lv})",
                        op.target
                    )
                },
            },
            Action::On => Outcome::Succeeded {
                confirmation,
                powered_on: Some(true),
                summary: format!(
                    "{} powered on: power read back as on from {names} ({lv})",
                    op.target
                ),
            },
            Action::Reboot => {
                // Off is confirmed: the target is fenced whatever happens next. Power comes
                // back only through the same level, after every device was confirmed off.
                let on = run_level(
                    inner,
                    target,
                    op,
                    tx,
                    n,
                    level,
                    Phase::On,
                    Instant::now() + target.timing.total_timeout,
                )
                .await;
                Outcome::Succeeded {
                    confirmation,
                    powered_on: Some(on.ok),
                    summary: if on.ok {
                        format!(
                            "{} rebooted: power read back as off, then as on, from {names} ({lv})",
                            op.target
                        )
                    } else {
                        format!(
                            "{} fenced (power read back as off from {names}, {lv}) but it did NOT come back on: {}",
                            op.target,
                            on.failures.join("; ")
                        )
                    },
                }
            }
        };
    }
    if level_failures.is_empty() {
        level_failures.push("no levels configured".into());
    }
    let timed_out = Instant::now() >= deadline;
    Outcome::Failed {
        code: if timed_out {
            "timeout".into()
        } else {
            "all_levels_failed".into()
        },
        message: format!(
            "{} NOT {}: {}",
            op.target,
            match op.action {
                Action::On => "powered on",
                _ => "fenced",
            },
            level_failures.join(" | ")
        ),
    }
}

/// Counts, per device of level `n`, the time from its off step's start to the level's "off"
/// standing. Called only once it stands (read back, and under `device+witness` every witness
/// silent), so a device whose "off" a witness refused is not counted as a confirmation, and the
/// witnesses' watch is part of the time.
fn confirmed_off(inner: &Inner, op: &Operation, n: u32) {
    let now = inner.clock.now_ms();
    let mut st = inner.state();
    for a in op.attempts.iter().filter(|a| {
        a.level == n && a.phase == Phase::Off && matches!(a.result, StepResult::Confirmed { .. })
    }) {
        st.metrics
            .device_confirm_ms
            .entry(a.device.clone())
            .or_default()
            .push(now.saturating_sub(a.started_ms));
    }
}

/// The phase an action starts with.
pub(super) fn first_phase(action: Action) -> Phase {
    match action {
        Action::Off | Action::Reboot => Phase::Off,
        Action::On => Phase::On,
    }
}

/// The level an operation will try first (1-based number and its entries): the first one not
/// skipped as unhealthy.
pub(super) fn first_level<'t>(
    inner: &Inner,
    target: &'t TargetConfig,
) -> Option<(u32, &'t [LevelEntry])> {
    target
        .levels
        .iter()
        .enumerate()
        .find(|(_, l)| unhealthy_skip(inner, l).is_none())
        .map(|(i, l)| (i as u32 + 1, l.as_slice()))
}

/// What the steps of a level try may send, one per device, to be recorded before any of them
/// is sent.
pub(super) fn pending_steps(
    inner: &Inner,
    op: &Operation,
    level: u32,
    entries: &[LevelEntry],
    phase: Phase,
    now: Millis,
) -> Vec<PendingStep> {
    entries
        .iter()
        .map(|e| {
            let pill = inner
                .devices
                .get(&e.device)
                .is_some_and(|s| s.device.proof() == FenceProof::PoisonPill);
            let command = match (pill, phase, op.action) {
                (true, Phase::On, _) => "clearing the poison pill slot",
                (true, Phase::Off, Action::Reboot) => "a poison pill (reset)",
                (true, Phase::Off, _) => "a poison pill (off)",
                (false, Phase::Off, _) => "power off",
                (false, Phase::On, _) => "power on",
            };
            PendingStep {
                level,
                device: e.device.clone(),
                port: e.port.clone(),
                phase,
                command: command.into(),
                since_ms: now,
            }
        })
        .collect()
}

pub(super) fn entry_name(e: &LevelEntry) -> String {
    match &e.port {
        Some(p) => format!("{}:{p}", e.device),
        None => e.device.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_level(
    inner: &Inner,
    target: &TargetConfig,
    op: &mut Operation,
    tx: &watch::Sender<Operation>,
    level: u32,
    entries: &[LevelEntry],
    phase: Phase,
    deadline: Instant,
) -> LevelResult {
    let begun = Instant::now();
    let attempt_deadline = deadline.min(begun + target.timing.attempt_timeout);
    let plan = StepPlan {
        command: match phase {
            Phase::Off => PowerCommand::Off,
            Phase::On => PowerCommand::On,
        },
        pill: if op.action == Action::Reboot {
            PillKind::Reset
        } else {
            PillKind::Off
        },
        begun,
        deadline: attempt_deadline,
    };
    // Durability before any command: whatever this level may send is in history first, so a
    // crash from here on leaves "may have been sent" rather than nothing. The first level's
    // record usually went out with the operation's own (acceptance or end of delay).
    let pending = pending_steps(inner, op, level, entries, phase, inner.clock.now_ms());
    let same = |a: &[PendingStep], b: &[PendingStep]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                (x.level, &x.device, &x.port, x.phase, &x.command)
                    == (y.level, &y.device, &y.port, y.phase, &y.command)
            })
    };
    if !same(&op.pending, &pending) {
        op.pending = pending;
        if let Err(e) = record(inner, op).await {
            // Sending commands that history cannot show would make a later crash silent about
            // them: this level is not tried.
            tracing::error!(op = op.id, target = %op.target, error = %e, "cannot record the level's steps; not sending its commands");
            op.pending.clear();
            return LevelResult {
                ok: false,
                already: false,
                failures: vec![format!(
                    "not tried: the steps could not be recorded in history first ({e}); check the disk holding the history file"
                )],
                pill_msgwait_ms: None,
                bases: Vec::new(),
                deadline: attempt_deadline,
            };
        }
        publish(inner, tx, op);
    }
    // All devices of a level act together: a node with two supplies is off only when both are.
    let mut steps: FuturesUnordered<_> = entries
        .iter()
        .map(|e| async move {
            let started = inner.clock.now_ms();
            let result = step(inner, target, e, plan).await;
            (e, started, result)
        })
        .collect();
    // When the operation ends with this level, its final record follows at once and holds the
    // last attempt too: that attempt is not written twice (each write is an fsync).
    // Not so when witnesses still have to watch: the attempt is written before they start.
    let ends_if_ok = matches!(
        (op.action, phase),
        (Action::Off, Phase::Off) | (Action::On, Phase::On)
    ) && !(op.action.fences() && target.confirm == Confirm::DeviceAndWitness);
    let ends_anyway = op.action == Action::Reboot && phase == Phase::On;
    let mut ok = true;
    let mut already = true;
    let mut failures = Vec::new();
    let mut pill_msgwait_ms = None;
    let mut bases = Vec::new();
    let mut done = 0;
    while let Some((e, started, result)) = steps.next().await {
        done += 1;
        let code = match &result {
            StepResult::Confirmed { .. } => "confirmed".to_string(),
            StepResult::Failed { code, .. } => code.clone(),
        };
        {
            let mut st = inner.state();
            *st.metrics
                .steps
                .entry((e.device.clone(), code))
                .or_default() += 1;
        }
        match &result {
            StepResult::Confirmed {
                already: a,
                pill,
                basis,
                ..
            } => {
                already &= *a;
                if let Some(b) = basis {
                    bases.push(format!("{}: {b}", entry_name(e)));
                }
                if let Some(p) = pill {
                    pill_msgwait_ms = Some(pill_msgwait_ms.unwrap_or(0).max(p.msgwait_ms));
                }
            }
            StepResult::Failed { message, .. } => {
                ok = false;
                failures.push(format!("{}: {message}", entry_name(e)));
            }
        }
        op.pending
            .retain(|p| !(p.level == level && p.device == e.device && p.port == e.port));
        op.attempts.push(Attempt {
            level,
            device: e.device.clone(),
            port: e.port.clone(),
            phase,
            started_ms: started,
            finished_ms: inner.clock.now_ms(),
            result,
            overruled: None,
        });
        let last = done == entries.len();
        if last && (ends_anyway || (ends_if_ok && ok)) {
            publish(inner, tx, op);
        } else {
            // Written as each device finishes, so a crash loses no finished attempt.
            save(inner, tx, op).await;
        }
    }
    LevelResult {
        ok,
        already: ok && already,
        failures,
        pill_msgwait_ms,
        bases,
        deadline: attempt_deadline,
    }
}
