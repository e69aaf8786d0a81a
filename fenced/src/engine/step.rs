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

/// How late fenced may notice a deadline before it counts as having fallen behind. A daemon
/// with time to spare sees a timer within a few ms (tokio's timer wheel ticks at 1 ms); a
/// tenth of a second late means its only runtime thread was busy elsewhere that long, and a
/// device's answer may have waited unread just as long.
const LATE: Duration = Duration::from_millis(100);

/// What every step of one level try does: the command, the pill kind for poison-pill devices,
/// and the attempt deadline.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepPlan {
    /// Power off or on.
    pub(super) command: PowerCommand,
    /// The pill a poison-pill device writes for `Off` (`Reset` for a reboot).
    pub(super) pill: PillKind,
    /// When the attempt began (its deadline is counted from here): the time before a step's
    /// first device call is fenced's own, which a timeout must not blame on the device.
    pub(super) begun: Instant,
    /// When the step gives up.
    pub(super) deadline: Instant,
}

/// Where one step's time went, so that a timeout names who spent it: the device (fenced was
/// waiting for an answer or letting it switch) or fenced itself (its own work before or
/// between device calls, or a deadline noticed late because its thread was busy elsewhere).
/// Without this a starved daemon's timeouts read as "a stuck or lying device" (issue 15).
struct Pace {
    begun: Instant,
    deadline: Instant,
    /// Time spent waiting on the device so far, counted up to the deadline.
    device: Duration,
}

impl Pace {
    /// The attempt's whole budget.
    fn total_ms(&self) -> u128 {
        self.deadline
            .saturating_duration_since(self.begun)
            .as_millis()
    }

    /// Counts the wait that started at `from` (a device call, or a pause between reads) as the
    /// device's, up to the deadline; returns how long it was.
    fn waited(&mut self, from: Instant) -> Duration {
        let d = Instant::now()
            .min(self.deadline)
            .saturating_duration_since(from);
        self.device += d;
        d
    }

    /// Why fenced, not the device, is to blame for running out of time, if it is: it noticed
    /// the deadline [`LATE`] or later, or spent half the attempt or more on its own work.
    fn fenced_fault(&self) -> Option<String> {
        let now = Instant::now();
        let late = now.saturating_duration_since(self.deadline);
        let own = now
            .min(self.deadline)
            .saturating_duration_since(self.begun)
            .saturating_sub(self.device);
        let total = self.deadline.saturating_duration_since(self.begun);
        (late >= LATE || (own >= LATE && own * 2 >= total)).then(|| {
            format!(
                "fenced fell behind, not the device: it spent {} ms of the attempt on its own work before or between device calls and noticed the deadline {} ms late (fenced overloaded: its thread was busy with other requests, checks or history commits); the device had {} ms in all and may be fine",
                own.as_millis(),
                late.as_millis(),
                self.device.as_millis()
            )
        })
    }

    /// The failure of a device call started at `from` that did not finish by the deadline.
    fn timed_out(&mut self, what: &str, from: Instant) -> StepResult {
        let total = self.total_ms();
        let never_ran = from >= self.deadline;
        let this = self.waited(from);
        let message = match self.fenced_fault() {
            Some(why) if never_ran => format!(
                "{what} never ran: fenced got to it {} ms after the attempt deadline ({total} ms), so the device was given no time to answer; {why}",
                from.saturating_duration_since(self.deadline).as_millis()
            ),
            Some(why) => format!(
                "{what} did not finish within the attempt deadline ({total} ms), and any answer may not have been read: {why}"
            ),
            None => format!(
                "{what} did not finish within the attempt deadline ({total} ms): the device did not answer this call in {} ms ({} ms waiting on it this attempt); check the device and its network",
                this.as_millis(),
                self.device.as_millis()
            ),
        };
        failed("timeout", message)
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
pub(super) async fn step(
    inner: &Inner,
    target: &TargetConfig,
    e: &LevelEntry,
    plan: StepPlan,
) -> StepResult {
    let StepPlan {
        command,
        pill,
        begun,
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
    let mut pace = Pace {
        begun,
        deadline,
        device: Duration::ZERO,
    };
    let budget = pace.total_ms();

    let mut identity = None;
    if let Some(want) = target.identities.get(&e.device) {
        let from = Instant::now();
        let r = timeout_at(deadline, dev.health()).await;
        pace.waited(from);
        match r {
            Err(_) => return pace.timed_out("identity check", from),
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
        return pill_step(dev.as_ref(), port, kind, identity, pace).await;
    }

    let from = Instant::now();
    let r = timeout_at(deadline, dev.status(port)).await;
    pace.waited(from);
    match r {
        Err(_) => return pace.timed_out("reading the power state", from),
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

    let from = Instant::now();
    let r = timeout_at(deadline, dev.power(port, command)).await;
    // How long the device took to accept the command.
    let accepting = pace.waited(from);
    match r {
        Err(_) => return pace.timed_out(&format!("power {command}"), from),
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
            // The pause lets the device switch: its time, not fenced's.
            let from = Instant::now();
            tokio::time::sleep(interval.min(left)).await;
            pace.waited(from);
        }
        let cap = if sent.elapsed() < POLL_FAST_FOR {
            POLL_FAST_MAX
        } else {
            POLL_MAX
        };
        interval = (interval * 2).clamp(POLL_FIRST, cap);
        polls += 1;
        let from = Instant::now();
        let r = timeout_at(deadline, dev.status(port)).await;
        pace.waited(from);
        match r {
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
    match (last, pace.fenced_fault()) {
        // The deadline passed before any read could start, and fenced is why: the device was
        // never asked, so nothing is known about it.
        (None, Some(why)) if polls == 0 => failed(
            "timeout",
            format!(
                "device accepted power {command}, but the power state was never read: the attempt deadline ({budget} ms) passed before the first read; {why}; the target is NOT confirmed {expect}"
            ),
        ),
        // The device itself took the whole attempt to accept the command.
        (None, None) if polls == 0 => failed(
            "timeout",
            format!(
                "device accepted power {command} only after {} ms, at the attempt deadline ({budget} ms): no time was left to read the power state back; a slow device or network (raise attempt_timeout_s if it is always this slow); the target is NOT confirmed {expect}",
                accepting.as_millis()
            ),
        ),
        (None, Some(why)) => failed(
            "timeout",
            format!(
                "device accepted power {command}, but none of the {polls} power reads was seen answered before the attempt deadline ({budget} ms): {why}; the target is NOT confirmed {expect}"
            ),
        ),
        (None, None) => failed(
            "timeout",
            format!(
                "device accepted power {command}, but none of the {polls} power reads answered before the attempt deadline ({budget} ms); check the device's network; the target is NOT confirmed {expect}"
            ),
        ),
        (Some(Ok(s)), _) => {
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
        (Some(Err(err)), _) => failed(err.code(), format!("power {command} sent, then: {err}")),
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
    mut pace: Pace,
) -> StepResult {
    let (deadline, budget) = (pace.deadline, pace.total_ms());
    let from = Instant::now();
    let r = timeout_at(deadline, dev.write_pill(port, kind)).await;
    pace.waited(from);
    let report = match r {
        Err(_) => return pace.timed_out("writing the poison pill", from),
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
