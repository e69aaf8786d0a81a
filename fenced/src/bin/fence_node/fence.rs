//! `off`, `reboot` and `on`: ask the daemon for an operation, follow it to its outcome, and say
//! whether the node is confirmed fenced.

use crate::error::CliError;
use crate::output::print_json;
use crate::{Exit, FenceArgs, Ui};
use fenced::client::ClientError;
use fenced::model::{
    Action, Confirmation, FenceAccepted, FenceRequest, OpState, Operation, Outcome, Phase,
    StepResult, WitnessVerdict,
};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Runs one fencing verb: one request for one target, a batch for several.
pub async fn run(ui: &Ui, action: Action, a: FenceArgs) -> Result<Exit, CliError> {
    let reason = a.reason.clone().unwrap_or_else(|| {
        format!(
            "fence_node {action} by {}",
            std::env::var("USER").unwrap_or_else(|_| "unknown user".into())
        )
    });
    let mut nodes = a.nodes.clone();
    if let Some(f) = &a.targets_from {
        nodes.extend(crate::batch::read_targets(f)?);
    }
    match nodes.as_slice() {
        [] => Err(CliError::NoTargets),
        [node] if a.targets_from.is_none() => {
            single(ui, action, single_args(&a, node), reason).await
        }
        _ => crate::batch::run(ui, action, &a, nodes, reason).await,
    }
}

/// One target: `POST /v1/fence`, then follow the operation.
async fn single(ui: &Ui, action: Action, a: Single, reason: String) -> Result<Exit, CliError> {
    let req = FenceRequest {
        target: a.node.clone(),
        action,
        reason,
        request_id: a.request_id.clone(),
        timeout_s: a.timeout,
    };
    let body = serde_json::to_value(&req).map_err(|e| ClientError::Protocol {
        detail: format!("cannot encode the fence request: {e}"),
    })?;
    let (accepted, raw): (FenceAccepted, Value) = ui
        .client
        .call_as("POST", "/v1/fence", Some(&body), None)
        .await?;
    if a.no_wait {
        if ui.json {
            print_json(&raw);
        } else {
            drivers::outln!(
                "{} {action}: operation {} {} ({}); follow it with `fence_node status {}`",
                a.node,
                accepted.id,
                if accepted.joined {
                    "joined (already in flight)"
                } else {
                    "accepted"
                },
                accepted.state,
                a.node
            );
        }
        return Ok(Exit::Ok);
    }
    if accepted.joined && !ui.json {
        drivers::errln!(
            "{}: joined operation {} already in flight for {action}",
            a.node,
            accepted.id
        );
    }
    wait(ui, &a.node, action, accepted.id, a.timeout).await
}

/// The options of a single-target request.
struct Single {
    node: String,
    request_id: Option<String>,
    timeout: Option<u64>,
    no_wait: bool,
}

fn single_args(a: &FenceArgs, node: &str) -> Single {
    Single {
        node: node.to_string(),
        request_id: a.request_id.clone(),
        timeout: a.timeout,
        no_wait: a.no_wait,
    }
}

/// Follows operation `id` until it ends (or our own limit passes), showing progress on a
/// terminal, then prints the outcome.
async fn wait(
    ui: &Ui,
    node: &str,
    action: Action,
    id: u64,
    timeout: Option<u64>,
) -> Result<Exit, CliError> {
    let started = Instant::now();
    // The daemon enforces the operation's own deadline; ours only guards against waiting
    // forever on a daemon that stopped making progress.
    let limit = Duration::from_secs(timeout.map_or(24 * 3600, |t| t + 5));
    let progress = !ui.json && std::io::stderr().is_terminal();
    let mut shown = false;
    loop {
        let left = limit.saturating_sub(started.elapsed());
        // A terminal gets a fresh progress line every second; otherwise one long poll.
        let wait = if progress {
            1.0
        } else {
            left.as_secs_f64().clamp(0.0, 300.0)
        };
        let path = format!("/v1/operations/{id}?wait={wait:.0}");
        let (op, raw): (Operation, Value) = ui
            .client
            .call_as(
                "GET",
                &path,
                None,
                Some(Duration::from_secs_f64(wait) + Duration::from_secs(30)),
            )
            .await?;
        if progress {
            shown = true;
            let mut err = std::io::stderr();
            // A progress line that fails to print changes nothing about the outcome.
            let _ = write!(
                err,
                "\r\x1b[K{node} {action}: {}  {:.1} s",
                progress_line(&op),
                started.elapsed().as_secs_f64()
            );
            let _ = err.flush();
        }
        if op.state.is_terminal() || started.elapsed() >= limit {
            if shown {
                drivers::err!("\r\x1b[K");
            }
            if ui.json {
                print_json(&raw);
            }
            return Ok(final_line(node, action, &op, ui.json));
        }
    }
}

/// The live line: state, and the last step's level, device and result.
fn progress_line(op: &Operation) -> String {
    match (op.state, op.attempts.last()) {
        (OpState::Delayed, _) => format!(
            "delayed (fence-race delay {:.1} s)",
            op.delay_ms as f64 / 1000.0
        ),
        // Steps are recorded when they finish: none yet means level 1 is being driven.
        (OpState::Running, None) => "running, level 1".to_string(),
        (s, Some(a)) => {
            let phase = match a.phase {
                Phase::Off => "off",
                Phase::On => "on",
            };
            let result = match &a.result {
                StepResult::Confirmed { .. } => "confirmed".to_string(),
                StepResult::Failed { code, .. } => format!("failed ({code})"),
            };
            format!(
                "{s}, last step: level {} {} {phase} {result}{}",
                a.level,
                a.device,
                witness_words(op, Some(a.level))
            )
        }
        (s, None) => s.to_string(),
    }
}

/// `; witnesses: net (network) silent, hb (disk-heartbeat) alive at level 1`, for the
/// witnesses of `level` (all levels when `None`), or nothing when none watched.
pub fn witness_words(op: &Operation, level: Option<u32>) -> String {
    let mut levels: Vec<u32> = op
        .witnesses
        .iter()
        .map(|w| w.level)
        .filter(|l| level.is_none_or(|x| x == *l))
        .collect();
    levels.dedup();
    if levels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = levels
        .iter()
        .map(|l| {
            let ws: Vec<String> = op
                .witnesses
                .iter()
                .filter(|w| w.level == *l)
                .map(|w| {
                    let v = match w.verdict {
                        WitnessVerdict::Silent => "silent",
                        WitnessVerdict::Alive => "ALIVE",
                        WitnessVerdict::NoEvidence => "no evidence",
                    };
                    format!("{} ({}) {v}", w.witness, w.kind)
                })
                .collect();
            format!("{} at level {l}", ws.join(", "))
        })
        .collect();
    format!("; witnesses: {}", parts.join("; "))
}

/// ` in 1.23 s`, or nothing while the operation has not finished.
pub fn secs(op: &Operation) -> String {
    op.elapsed_ms()
        .map_or_else(String::new, |ms| format!(" in {:.2} s", ms as f64 / 1000.0))
}

/// How the outcome was confirmed, in words.
pub fn how(c: &Confirmation) -> String {
    match c {
        Confirmation::PowerReadBack {
            level,
            devices,
            already,
        } => format!(
            "power read back from {} (level {level}){}",
            devices.join(", "),
            if *already {
                ", already in that state before any command"
            } else {
                ""
            }
        ),
        Confirmation::PoisonPill {
            level,
            devices,
            msgwait_ms,
        } => format!(
            "poison pill written via {} (level {level}), read back, and msgwait ({:.1} s) elapsed",
            devices.join(", "),
            *msgwait_ms as f64 / 1000.0
        ),
        Confirmation::SlotCleared { level, devices } => format!(
            "SBD slot cleared and read back via {} (level {level})",
            devices.join(", ")
        ),
        Confirmation::Manual { by, reason } => format!("confirmed by hand by {by}: {reason}"),
    }
}

/// Prints the outcome line (on stderr with `--json`, whose stdout is the JSON) and returns
/// the exit status: [`Exit::Ok`] only for a confirmed outcome.
fn final_line(node: &str, action: Action, op: &Operation, json: bool) -> Exit {
    let (line, code) = match &op.outcome {
        Some(Outcome::Succeeded {
            confirmation,
            powered_on,
            summary,
            ..
        }) => {
            let how = format!("{}{}", how(confirmation), witness_words(op, None));
            let line = match (action, powered_on) {
                (Action::On, _) => format!("{node} POWERED ON: {how}{}", secs(op)),
                (Action::Reboot, Some(false)) => format!(
                    "{node} FENCED, but did NOT come back on: {summary}{}",
                    secs(op)
                ),
                (Action::Reboot, _) => {
                    format!("{node} FENCED and powered back on: {how}{}", secs(op))
                }
                (Action::Off, _) => format!("{node} FENCED: {how}{}", secs(op)),
            };
            (line, Exit::Ok)
        }
        Some(Outcome::Failed { code, message }) => {
            let what = if action == Action::On {
                "NOT POWERED ON"
            } else {
                "NOT FENCED"
            };
            (
                format!("{node} {what} ({code}): {message}{}", secs(op)),
                Exit::Failed,
            )
        }
        None => (
            format!(
                "{node} NOT FENCED (yet): operation {} is still {} after the client's timeout; follow it with `fence_node status {node}`",
                op.id, op.state
            ),
            Exit::Failed,
        ),
    };
    if json {
        drivers::errln!("{line}");
    } else {
        drivers::outln!("{line}");
    }
    code
}
