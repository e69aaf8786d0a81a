//! Running one operation: delay, levels in order, device steps, confirmation by read-back.

use super::{DeviceStatus, Inner};
use crate::config::{LevelEntry, TargetConfig, Timing};
use crate::model::*;
use drivers::{DeviceError, FenceProof, PillKind, PowerCommand, PowerDevice, PowerState};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

/// Status reads after a command: one at once, then 5 ms apart and doubling, capped at 20 ms for the first
/// [`POLL_FAST_FOR`] (most BMCs and PDUs switch within that: the change is seen within 20 ms
/// of happening), then at 500 ms so a slow device is not flooded. No fixed multi-second sleep
/// is ever taken.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_FAST_MAX: Duration = Duration::from_millis(20);
const POLL_FAST_FOR: Duration = Duration::from_secs(2);
const POLL_MAX: Duration = Duration::from_millis(500);

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

/// Persists and publishes. A history write failure after the operation started cannot undo
/// what devices did; it is logged, and the final outcome is still attempted.
fn save(inner: &Inner, tx: &watch::Sender<Operation>, op: &Operation) {
    if let Err(e) = inner.history.record(op) {
        tracing::error!(op = op.id, target = %op.target, error = %e, "cannot write operation to history");
    }
    publish(inner, tx, op);
}

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
        op.started_ms = Some(inner.clock.now_ms());
        save(&inner, &tx, &op);
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
        // Record before releasing the target, so a joined waiter never sees "not in flight"
        // without the outcome being in history.
        if let Err(e) = inner.history.record(&op) {
            tracing::error!(op = op.id, error = %e, "cannot write operation outcome to history");
        }
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
}

async fn drive(
    inner: &Inner,
    target: &TargetConfig,
    op: &mut Operation,
    tx: &watch::Sender<Operation>,
    deadline: Instant,
) -> Outcome {
    let mut level_failures = Vec::new();
    let first_phase = match op.action {
        Action::Off | Action::Reboot => Phase::Off,
        Action::On => Phase::On,
    };
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
                    "{} fenced: poison pill ({verb}) written to its slot on a majority of disks via {names} (level {n}), read back, and msgwait ({msgwait_ms} ms) elapsed",
                    op.target
                ),
            };
        }
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
                    format!("{} was already off: power read back as off from {names} (level {n}); no command sent", op.target)
                } else {
                    format!(
                        "{} fenced: power read back as off from {names} (level {n})",
                        op.target
                    )
                },
            },
            Action::On => Outcome::Succeeded {
                confirmation,
                powered_on: Some(true),
                summary: format!(
                    "{} powered on: power read back as on from {names} (level {n})",
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
                        format!("{} rebooted: power read back as off, then as on, from {names} (level {n})", op.target)
                    } else {
                        format!(
                            "{} fenced (power read back as off from {names}, level {n}) but it did NOT come back on: {}",
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

fn entry_name(e: &LevelEntry) -> String {
    match &e.port {
        Some(p) => format!("{}:{p}", e.device),
        None => e.device.clone(),
    }
}

/// Why a level is skipped: one of its devices has `on_fail = "skip"` and failed its last health
/// check. Skipping only ever moves on to the next level or fails the operation; it never
/// confirms anything.
fn unhealthy_skip(inner: &Inner, entries: &[LevelEntry]) -> Option<String> {
    let st = inner.state();
    entries.iter().find_map(|e| {
        let skip = inner
            .config
            .devices
            .get(&e.device)
            .is_some_and(|d| d.selection.skip_when_unhealthy);
        let status = st.device_status.get(&e.device)?;
        (skip && status.health == HealthState::Unhealthy).then(|| {
            format!(
                "device {} failed its last health check ({}) and has on_fail = \"skip\"",
                e.device,
                status.error.as_deref().unwrap_or("no detail")
            )
        })
    })
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
    let attempt_deadline = deadline.min(Instant::now() + target.timing.attempt_timeout);
    let command = match phase {
        Phase::Off => PowerCommand::Off,
        Phase::On => PowerCommand::On,
    };
    // All devices of a level act together: a node with two supplies is off only when both are.
    let pill = if op.action == Action::Reboot {
        PillKind::Reset
    } else {
        PillKind::Off
    };
    let mut steps: FuturesUnordered<_> = entries
        .iter()
        .map(|e| async move {
            let started = inner.clock.now_ms();
            let result = step(inner, target, e, command, pill, attempt_deadline).await;
            (e, started, result)
        })
        .collect();
    // When the operation ends with this level, its final record follows at once and holds the
    // last attempt too: that attempt is not written twice (each write is an fsync).
    let ends_if_ok = matches!(
        (op.action, phase),
        (Action::Off, Phase::Off) | (Action::On, Phase::On)
    );
    let ends_anyway = op.action == Action::Reboot && phase == Phase::On;
    let mut ok = true;
    let mut already = true;
    let mut failures = Vec::new();
    let mut pill_msgwait_ms = None;
    let mut done = 0;
    while let Some((e, started, result)) = steps.next().await {
        done += 1;
        let code = match &result {
            StepResult::Confirmed { .. } => "confirmed".to_string(),
            StepResult::Failed { code, .. } => code.clone(),
        };
        *inner
            .state()
            .metrics
            .steps
            .entry((e.device.clone(), code))
            .or_default() += 1;
        match &result {
            StepResult::Confirmed {
                already: a, pill, ..
            } => {
                already &= *a;
                if let Some(p) = pill {
                    pill_msgwait_ms = Some(pill_msgwait_ms.unwrap_or(0).max(p.msgwait_ms));
                }
            }
            StepResult::Failed { message, .. } => {
                ok = false;
                failures.push(format!("{}: {message}", entry_name(e)));
            }
        }
        op.attempts.push(Attempt {
            level,
            device: e.device.clone(),
            port: e.port.clone(),
            phase,
            started_ms: started,
            finished_ms: inner.clock.now_ms(),
            result,
        });
        let last = done == entries.len();
        if last && (ends_anyway || (ends_if_ok && ok)) {
            publish(inner, tx, op);
        } else {
            // Written as each device finishes, so a crash loses no finished attempt.
            save(inner, tx, op);
        }
    }
    LevelResult {
        ok,
        already: ok && already,
        failures,
        pill_msgwait_ms,
    }
}

fn failed(code: &str, message: String) -> StepResult {
    StepResult::Failed {
        code: code.into(),
        message,
    }
}

fn device_failed(e: &DeviceError) -> StepResult {
    failed(e.code(), e.to_string())
}

/// One device's part: identity check, read state, command, read back until confirmed or the
/// deadline. Only a read-back of the expected state makes a confirmation.
async fn step(
    inner: &Inner,
    target: &TargetConfig,
    e: &LevelEntry,
    command: PowerCommand,
    pill: PillKind,
    deadline: Instant,
) -> StepResult {
    let Some(slot) = inner.devices.get(&e.device) else {
        return failed(
            "unknown_device",
            format!("device {} is not configured", e.device),
        );
    };
    let dev = &slot.device;
    let port = e.port.as_deref();
    let expect = command.expected_state();
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    let timed_out = |what: &str| {
        failed(
            "timeout",
            format!("{what} did not finish within the attempt deadline ({budget} ms)"),
        )
    };

    let mut identity = None;
    if let Some(want) = target.identities.get(&e.device) {
        match timeout_at(deadline, dev.health()).await {
            Err(_) => return timed_out("identity check"),
            Ok(Err(err)) => return device_failed(&err),
            Ok(Ok(id)) => {
                let got = id.value.trim().to_ascii_lowercase();
                set_health(inner, &e.device, Ok(id.clone().into()), None);
                if &got != want {
                    return failed(
                        "identity_mismatch",
                        format!(
                            "device reports {} {got}, but target {} expects {want}: this device does not control this node; fix the mapping in the config (nothing was sent)",
                            id.kind, target.name
                        ),
                    );
                }
                identity = Some(format!("{} {got}", id.kind));
            }
        }
    }

    if dev.proof() == FenceProof::PoisonPill {
        let kind = match command {
            PowerCommand::Off => pill,
            PowerCommand::On => PillKind::Clear,
        };
        return pill_step(dev.as_ref(), port, kind, identity, deadline, budget).await;
    }

    match timeout_at(deadline, dev.status(port)).await {
        Err(_) => return timed_out("reading the power state"),
        Ok(Err(err)) => return device_failed(&err),
        Ok(Ok(s)) if s == expect => {
            return StepResult::Confirmed {
                state: s,
                already: true,
                polls: 0,
                identity,
                pill: None,
            }
        }
        Ok(Ok(_)) => {}
    }

    match timeout_at(deadline, dev.power(port, command)).await {
        Err(_) => return timed_out(&format!("power {command}")),
        Ok(Err(err)) => return device_failed(&err),
        Ok(Ok(())) => {}
    }

    // The first read is immediate: many devices report the new state as soon as they accept
    // the command.
    let mut interval = Duration::ZERO;
    let mut polls = 0u32;
    let sent = Instant::now();
    let mut last: Result<PowerState, DeviceError> = Ok(PowerState::Unknown);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // The last read lands on the deadline itself, so a slow switch gets all its time.
        tokio::time::sleep(interval.min(left)).await;
        let cap = if sent.elapsed() < POLL_FAST_FOR {
            POLL_FAST_MAX
        } else {
            POLL_MAX
        };
        interval = (interval * 2).clamp(POLL_FIRST, cap);
        polls += 1;
        match timeout_at(deadline, dev.status(port)).await {
            Err(_) => break,
            Ok(Ok(s)) if s == expect => {
                return StepResult::Confirmed {
                    state: s,
                    already: false,
                    polls,
                    identity,
                    pill: None,
                }
            }
            // A dropped packet or a BMC busy switching is not yet a failure: keep reading
            // until the deadline, and report the last thing seen.
            Ok(r) => last = r,
        }
    }
    match last {
        Ok(s) => failed(
            "not_confirmed",
            format!(
                "device accepted power {command} but still reports {s} after {polls} reads ({budget} ms); a stuck or lying device: the target is NOT confirmed {expect}"
            ),
        ),
        Err(err) => failed(err.code(), format!("power {command} sent, then: {err}")),
    }
}

fn set_health(
    inner: &Inner,
    device: &str,
    result: Result<DeviceIdentity, String>,
    outlets: Option<Vec<crate::model::OutletSummary>>,
) {
    let now = inner.clock.now_ms();
    let mut st = inner.state();
    // A check that did not list outlets (an identity check during an operation) keeps the
    // last listing.
    let outlets = outlets.unwrap_or_else(|| {
        st.device_status
            .get(device)
            .map(|d| d.outlets.clone())
            .unwrap_or_default()
    });
    let (health, identity, error) = match result {
        Ok(id) => {
            // The device is unhealthy if any target that pins an identity for it disagrees.
            let mismatch = inner.config.targets.values().find_map(|t| {
                t.identities
                    .get(device)
                    .filter(|want| **want != id.value.trim().to_ascii_lowercase())
                    .map(|want| (t.name.clone(), want.clone()))
            });
            match mismatch {
                Some((t, want)) => (
                    HealthState::Unhealthy,
                    Some(id.clone()),
                    Some(format!(
                        "reports {} {}, but target {t} expects {want}",
                        id.kind, id.value
                    )),
                ),
                None => (HealthState::Healthy, Some(id), None),
            }
        }
        Err(e) => (HealthState::Unhealthy, None, Some(e)),
    };
    st.device_status.insert(
        device.to_string(),
        DeviceStatus {
            health,
            identity,
            error,
            checked_ms: Some(now),
            outlets,
        },
    );
}

/// Runs a device's health check and stores the result.
pub(super) async fn check_device(inner: &Inner, name: &str) {
    let Some(slot) = inner.devices.get(name) else {
        return;
    };
    let limit = Duration::from_secs(10);
    let r = match tokio::time::timeout(limit, slot.device.health()).await {
        Err(_) => Err(format!(
            "health check did not answer within {} s",
            limit.as_secs()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(id)) => Ok(id.into()),
    };
    // A PDU also lists its outlets and their names, so operators see what `DEVICE:NAME`
    // level entries address; devices that have no outlets answer Unsupported.
    let outlets = if r.is_ok() {
        match tokio::time::timeout(limit, slot.device.list()).await {
            Ok(Ok(list)) => list
                .into_iter()
                .map(|o| crate::model::OutletSummary {
                    id: o.id,
                    name: o.name,
                    state: o.state.map(|s| s.to_string()),
                })
                .collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    set_health(inner, name, r, Some(outlets));
}

/// Reads every level device's power state now.
pub(super) async fn live_power(inner: &Inner, t: &TargetConfig) -> Vec<LivePower> {
    let deadline = Instant::now() + t.timing.attempt_timeout;
    let reads = t.levels.iter().enumerate().flat_map(|(i, l)| {
        l.iter().map(move |e| async move {
            let r = match inner.devices.get(&e.device) {
                None => Err("device not configured".to_string()),
                Some(slot) => {
                    match timeout_at(deadline, slot.device.status(e.port.as_deref())).await {
                        Err(_) => Err("timed out".to_string()),
                        Ok(r) => r.map_err(|e| e.to_string()),
                    }
                }
            };
            LivePower {
                level: i as u32 + 1,
                device: e.device.clone(),
                port: e.port.clone(),
                state: r.as_ref().ok().copied(),
                error: r.err(),
            }
        })
    });
    futures_util::future::join_all(reads).await
}

/// A poison-pill step: write and read back on a majority (the device), then wait msgwait on
/// tokio's monotonic clock, so a wall-clock jump cannot shorten it. A crash during the wait
/// leaves the operation in flight in history, which the next start records as interrupted.
async fn pill_step(
    dev: &dyn PowerDevice,
    port: Option<&str>,
    kind: PillKind,
    identity: Option<String>,
    deadline: Instant,
    budget: u128,
) -> StepResult {
    let report = match timeout_at(deadline, dev.write_pill(port, kind)).await {
        Err(_) => {
            return failed(
                "timeout",
                format!(
                "writing the poison pill did not finish within the attempt deadline ({budget} ms)"
            ),
            )
        }
        Ok(Err(err)) => return device_failed(&err),
        Ok(Ok(r)) => r,
    };
    if report.written * 2 <= report.disks {
        // The device must refuse this itself; checked again because it decides the outcome.
        return failed(
            "no_majority",
            format!("poison pill written to {} of {} disks, not a majority: the target may not see it; NOT fenced", report.written, report.disks),
        );
    }
    if kind == PillKind::Clear {
        // Unfencing: the cleared slot was read back on a majority; nothing to wait for.
        return StepResult::Confirmed {
            state: PowerState::On,
            already: false,
            polls: 0,
            identity,
            pill: Some(PillProof {
                kind: "clear".into(),
                written: report.written,
                disks: report.disks,
                msgwait_ms: 0,
            }),
        };
    }
    let until = Instant::now() + report.msgwait;
    if until > deadline {
        return failed(
            "timeout",
            format!(
                "poison pill written, but its msgwait ({} ms) does not fit the attempt deadline ({budget} ms): the target will probably die, but that is NOT confirmed; raise attempt_timeout_s above msgwait",
                report.msgwait.as_millis()
            ),
        );
    }
    tokio::time::sleep_until(until).await;
    StepResult::Confirmed {
        state: PowerState::Off,
        already: false,
        polls: 0,
        identity,
        pill: Some(PillProof {
            kind: match kind {
                PillKind::Off => "off".into(),
                PillKind::Reset => "reset".into(),
                PillKind::Clear => "clear".into(),
            },
            written: report.written,
            disks: report.disks,
            msgwait_ms: report.msgwait.as_millis() as u64,
        }),
    }
}
