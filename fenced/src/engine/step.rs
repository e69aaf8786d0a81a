//! One device's part in a level try: identity check, power read, command, read-back until
//! confirmed or the deadline (or, for a poison-pill device, write, read back and msgwait).
//! Only a read-back of the expected state, or a pill waited out, makes a confirmation.

use super::monitor::set_health;
use super::Inner;
use crate::config::{LevelEntry, TargetConfig};
use crate::model::*;
use drivers::{DeviceError, FenceProof, PillKind, PowerCommand, PowerDevice, PowerState};
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

/// Status reads after a command: one at once, then 5 ms apart and doubling, capped at 20 ms for the first
/// [`POLL_FAST_FOR`] (most BMCs and PDUs switch within that: the change is seen within 20 ms
/// of happening), then at 500 ms so a slow device is not flooded. No fixed multi-second sleep
/// is ever taken.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_FAST_MAX: Duration = Duration::from_millis(20);
const POLL_FAST_FOR: Duration = Duration::from_secs(2);
const POLL_MAX: Duration = Duration::from_millis(500);

/// What every step of one level try does: the command, the pill kind for poison-pill devices,
/// and the attempt deadline.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepPlan {
    /// Power off or on.
    pub(super) command: PowerCommand,
    /// The pill a poison-pill device writes for `Off` (`Reset` for a reboot).
    pub(super) pill: PillKind,
    /// When the step gives up.
    pub(super) deadline: Instant,
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
pub(super) async fn step(
    inner: &Inner,
    target: &TargetConfig,
    e: &LevelEntry,
    plan: StepPlan,
) -> StepResult {
    let StepPlan {
        command,
        pill,
        deadline,
    } = plan;
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
                basis: dev.read_back_basis(port),
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
    // What the last read that came back said (none yet).
    let mut last: Option<Result<PowerState, DeviceError>> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // The last read lands on the deadline itself, so a slow switch gets all its time.
        // The first read skips the timer: even a zero sleep waits for tokio's next 1 ms tick.
        if !interval.is_zero() {
            tokio::time::sleep(interval.min(left)).await;
        }
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
                    basis: dev.read_back_basis(port),
                }
            }
            // A dropped packet or a BMC busy switching is not yet a failure: keep reading
            // until the deadline, and report the last thing seen.
            Ok(r) => last = Some(r),
        }
    }
    match last {
        // The deadline passed before any read could start: the device was never asked, so
        // nothing is known about it (the daemon had no time: overloaded or starved).
        None if polls == 0 => failed(
            "timeout",
            format!(
                "device accepted power {command}, but the power state was never read: the attempt deadline ({budget} ms) passed before the first read (fenced overloaded?); the target is NOT confirmed {expect}"
            ),
        ),
        None => failed(
            "timeout",
            format!(
                "device accepted power {command}, but none of the {polls} power reads answered before the attempt deadline ({budget} ms); check the device's network; the target is NOT confirmed {expect}"
            ),
        ),
        Some(Ok(s)) => {
            // A device that says how it reads back (a relay button without a sense line can
            // never confirm) is named by that, not taken for a stuck or lying one.
            let why = match dev.read_back_basis(port) {
                Some(b) => format!("its read-back: {b};"),
                None => "a stuck or lying device:".into(),
            };
            failed(
                "not_confirmed",
                format!(
                    "device accepted power {command} but still reports {s} after {polls} reads ({budget} ms); {why} the target is NOT confirmed {expect}"
                ),
            )
        }
        Some(Err(err)) => failed(err.code(), format!("power {command} sent, then: {err}")),
    }
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
            basis: None,
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
        basis: None,
    }
}
