//! `off`, `reboot` and `on` for several targets: one `POST /v1/fence/batch`, then every
//! accepted operation followed to its outcome, a line per target, and an exit status that is 0
//! only when every target is confirmed.

use crate::error::CliError;
use crate::fence::{how, secs};
use crate::output::{print_json, table};
use crate::{Exit, FenceArgs, Ui};
use fenced::api::{FenceBatchAnswer, FenceBatchRequest, MAX_BATCH};
use fenced::client::ClientError;
use fenced::model::{Action, FenceRequest, Operation, Outcome};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How many operations are long-polled at once: well under the daemon's default connection
/// limit (256), so other clients still get in.
const WAIT_CONCURRENCY: usize = 32;

/// Reads a `--targets-from` file (`-` is standard input): one target per line; blank lines and
/// `#` comments are skipped.
pub fn read_targets(path: &Path) -> Result<Vec<String>, CliError> {
    let shown = path.display().to_string();
    let text = if shown == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| CliError::TargetsFile {
        path: shown.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.split_whitespace().count() != 1 {
            return Err(CliError::TargetsLine {
                path: shown,
                line: i + 1,
                found: line.to_string(),
            });
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Sends the batch (in chunks of at most [`MAX_BATCH`]), follows every accepted operation, and
/// prints a line per target.
pub async fn run(
    ui: &Ui,
    action: Action,
    a: &FenceArgs,
    nodes: Vec<String>,
    reason: String,
) -> Result<Exit, CliError> {
    let started = Instant::now();
    let requests: Vec<FenceRequest> = nodes
        .iter()
        .map(|n| FenceRequest {
            target: n.clone(),
            action,
            reason: reason.clone(),
            request_id: a.request_id.as_ref().map(|id| format!("{id}:{n}")),
            timeout_s: a.timeout,
        })
        .collect();
    let mut results = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(MAX_BATCH) {
        let body = serde_json::to_value(FenceBatchRequest {
            requests: chunk.to_vec(),
        })
        .map_err(|e| ClientError::Protocol {
            detail: format!("cannot encode the batch request: {e}"),
        })?;
        let (answer, _raw): (FenceBatchAnswer, Value) = ui
            .client
            .call_as("POST", "/v1/fence/batch", Some(&body), None)
            .await?;
        results.extend(answer.results);
    }

    let mut ops: HashMap<u64, Result<Operation, ClientError>> = HashMap::new();
    if !a.no_wait {
        let mut ids: Vec<u64> = results
            .iter()
            .filter_map(|r| r.accepted.as_ref().map(|acc| acc.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let total = ids.len();
        let progress = !ui.json && std::io::stderr().is_terminal();
        let mut waits = futures_util::stream::iter(ids)
            .map(|id| async move { (id, follow(ui, id, a.timeout).await) })
            .buffer_unordered(WAIT_CONCURRENCY);
        while let Some((id, r)) = waits.next().await {
            ops.insert(id, r);
            if progress {
                let mut err = std::io::stderr();
                // A progress line that fails to print changes nothing about the outcome.
                let _ = write!(
                    err,
                    "\r\x1b[K{action}: {}/{total} operations finished  {:.1} s",
                    ops.len(),
                    started.elapsed().as_secs_f64()
                );
                let _ = err.flush();
            }
        }
        if progress {
            drivers::err!("\r\x1b[K");
        }
    }

    let mut rows = Vec::with_capacity(results.len());
    let mut confirmed = 0usize;
    let mut json_rows = Vec::with_capacity(results.len());
    for r in &results {
        let (id, verdict, detail, ok) = match (&r.accepted, &r.error) {
            (Some(acc), _) if a.no_wait => (
                format!("#{}", acc.id),
                if acc.joined { "JOINED" } else { "ACCEPTED" }.to_string(),
                format!("{} (not waited for: NOT confirmed yet)", acc.state),
                false,
            ),
            (Some(acc), _) => match ops.get(&acc.id) {
                Some(Ok(op)) => {
                    let (v, d, ok) = verdict(action, op);
                    (format!("#{}", acc.id), v, d, ok)
                }
                Some(Err(e)) => (
                    format!("#{}", acc.id),
                    "UNKNOWN".to_string(),
                    format!("could not follow the operation: {e}; treat it as NOT confirmed"),
                    false,
                ),
                None => (
                    format!("#{}", acc.id),
                    "UNKNOWN".into(),
                    "not followed".into(),
                    false,
                ),
            },
            (None, Some(err)) => (
                "-".to_string(),
                "REFUSED".to_string(),
                format!("{} ({}): {}", err.message, err.code, err.hint),
                false,
            ),
            (None, None) => (
                "-".into(),
                "REFUSED".into(),
                format!("status {} without a reason", r.status),
                false,
            ),
        };
        if ok {
            confirmed += 1;
        }
        if ui.json {
            let op = r
                .accepted
                .as_ref()
                .and_then(|acc| ops.get(&acc.id))
                .and_then(|o| o.as_ref().ok());
            json_rows.push(serde_json::json!({
                "target": r.target,
                "action": r.action,
                "request_id": r.request_id,
                "status": r.status,
                "accepted": r.accepted,
                "error": r.error,
                "operation": op,
                "confirmed": ok,
            }));
        }
        rows.push([r.target.clone(), id, verdict, detail]);
    }
    let n = results.len();
    let word = match action {
        Action::On => "powered on",
        Action::Off | Action::Reboot => "fenced",
    };
    let summary = if a.no_wait {
        format!(
            "{action}: {} of {n} requests accepted in {:.2} s; not waited for, so none is confirmed yet: follow them with `fence_node status`",
            results.iter().filter(|r| r.accepted.is_some()).count(),
            started.elapsed().as_secs_f64()
        )
    } else if confirmed == n {
        format!(
            "{action}: all {n} targets confirmed {word} in {:.2} s",
            started.elapsed().as_secs_f64()
        )
    } else {
        format!(
            "{action}: {} of {n} targets NOT confirmed {word} (treat them as NOT {word}); {confirmed} confirmed, in {:.2} s",
            n - confirmed,
            started.elapsed().as_secs_f64()
        )
    };
    if ui.json {
        print_json(&serde_json::json!({ "results": json_rows }));
        drivers::errln!("{summary}");
    } else {
        table(&["TARGET", "OPERATION", "RESULT", "DETAIL"], &rows);
        drivers::outln!("{summary}");
    }
    Ok(if a.no_wait || confirmed == n {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// Long-polls operation `id` until it ends or our own limit passes.
async fn follow(ui: &Ui, id: u64, timeout: Option<u64>) -> Result<Operation, ClientError> {
    let started = Instant::now();
    // The daemon enforces each operation's deadline; ours only guards against a daemon that
    // stopped making progress.
    let limit = Duration::from_secs(timeout.map_or(24 * 3600, |t| t + 5));
    loop {
        let wait = limit
            .saturating_sub(started.elapsed())
            .as_secs_f64()
            .clamp(0.0, 300.0);
        let (op, _raw): (Operation, Value) = ui
            .client
            .call_as(
                "GET",
                &format!("/v1/operations/{id}?wait={wait:.0}"),
                None,
                Some(Duration::from_secs_f64(wait) + Duration::from_secs(30)),
            )
            .await?;
        if op.state.is_terminal() || started.elapsed() >= limit {
            return Ok(op);
        }
    }
}

/// A finished (or given-up-on) operation as a table cell: the verdict, the detail, and whether
/// it counts as confirmed. Only a confirmed outcome counts, as for a single target.
fn verdict(action: Action, op: &Operation) -> (String, String, bool) {
    match &op.outcome {
        Some(Outcome::Succeeded {
            confirmation,
            powered_on,
            summary,
        }) => {
            let v = match (action, powered_on) {
                (Action::On, _) => "POWERED ON",
                (Action::Reboot, Some(false)) => "FENCED, NOT back on",
                (Action::Reboot, _) => "FENCED, back on",
                (Action::Off, _) => "FENCED",
            };
            let d = match (action, powered_on) {
                (Action::Reboot, Some(false)) => summary.clone(),
                _ => how(confirmation),
            };
            (v.to_string(), format!("{d}{}", secs(op)), true)
        }
        Some(Outcome::Failed { code, message }) => (
            if action == Action::On {
                "NOT POWERED ON"
            } else {
                "NOT FENCED"
            }
            .to_string(),
            format!("{code}: {message}{}", secs(op)),
            false,
        ),
        None => (
            "NOT FENCED (yet)".to_string(),
            format!(
                "still {} after the client's timeout; follow it with `fence_node status {}`",
                op.state, op.target
            ),
            false,
        ),
    }
}
