//! `status`: every target with its levels and last operation, or one target in detail (with
//! `--live`, its power as each device reads it now).

use crate::error::CliError;
use crate::output::{level_names, op_line, print_json, table};
use crate::{Exit, StatusArgs, Ui};
use fenced::client::{encode, ClientError};
use fenced::cluster::ClusterView;
use fenced::model::{PauseStatus, TargetSummary};
use serde_json::Value;

/// Runs `status`.
pub async fn run(ui: &Ui, a: StatusArgs) -> Result<Exit, CliError> {
    match a.node {
        Some(n) => one(ui, &n, a.live).await,
        None => all(ui).await,
    }
}

async fn one(ui: &Ui, node: &str, live: bool) -> Result<Exit, CliError> {
    let path = format!("/v1/targets/{}?live={live}", encode(node));
    let (t, raw): (TargetSummary, Value) = ui.client.call_as("GET", &path, None, None).await?;
    if ui.json {
        print_json(&raw);
        return Ok(Exit::Ok);
    }
    drivers::outln!("{}", t.name);
    for (i, level) in t.levels.iter().enumerate() {
        drivers::outln!("  level {}: {}", i + 1, level_names(level));
    }
    if t.delay_s > 0.0 || t.random_delay_s > 0.0 {
        drivers::outln!(
            "  fence-race delay: {} s + up to {} s random",
            t.delay_s,
            t.random_delay_s
        );
    }
    if let Some(id) = t.in_flight {
        drivers::outln!("  in flight: operation {id}");
    }
    match &t.last_operation {
        Some(op) => drivers::outln!("  last: {}", op_line(op)),
        None => drivers::outln!("  last: never fenced"),
    }
    for p in t.live.iter().flatten() {
        let port = p.port.as_ref().map_or(String::new(), |p| format!(":{p}"));
        match (&p.state, &p.error) {
            (Some(s), _) => {
                drivers::outln!("  power now: {s} (level {}, {}{port})", p.level, p.device)
            }
            (None, e) => drivers::outln!(
                "  power now: UNKNOWN (level {}, {}{port}): {}",
                p.level,
                p.device,
                e.clone().unwrap_or_default()
            ),
        }
    }
    Ok(Exit::Ok)
}

async fn all(ui: &Ui) -> Result<Exit, CliError> {
    let (targets, raw): (Vec<TargetSummary>, Value) =
        ui.client.call_as("GET", "/v1/targets", None, None).await?;
    let (pause, _): (PauseStatus, Value) =
        ui.client.call_as("GET", "/v1/pause", None, None).await?;
    if ui.json {
        print_json(&raw);
        return Ok(Exit::Ok);
    }
    if pause.paused {
        drivers::outln!(
            "fencing is PAUSED (by {}: {})",
            pause.by.unwrap_or_default(),
            pause.reason.unwrap_or_default()
        );
    }
    let rows: Vec<[String; 3]> = targets
        .iter()
        .map(|t| {
            let levels: Vec<String> = t.levels.iter().map(|l| level_names(l)).collect();
            let last = match (t.in_flight, &t.last_operation) {
                (Some(id), _) => format!("operation {id} in flight"),
                (None, Some(op)) => op_line(op),
                (None, None) => "never fenced".into(),
            };
            [t.name.clone(), levels.join(" | "), last]
        })
        .collect();
    table(&["TARGET", "LEVELS", "LAST OPERATION"], &rows);
    cluster(ui).await?;
    Ok(Exit::Ok)
}

/// The fencer cluster's members, quorum and executors, when the daemon is a member (a daemon
/// without `[cluster]`, or older than the route, prints nothing).
async fn cluster(ui: &Ui) -> Result<(), CliError> {
    let view: ClusterView = match ui.client.call_as("GET", "/v1/cluster", None, None).await {
        Ok((v, _)) => v,
        Err(ClientError::Api { status: 404, .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let Some(st) = view.status else {
        return Ok(());
    };
    drivers::outln!(
        "cluster `{}` as {}: {}, {}{}",
        st.group,
        st.node_name,
        if st.joined { "joined" } else { "NOT JOINED" },
        if st.quorate {
            "quorate"
        } else {
            "NO QUORUM (new operations refused)"
        },
        if st.allow_without_quorum {
            " (allow_without_quorum: DANGEROUS)"
        } else {
            ""
        }
    );
    if let Some(why) = &st.lost {
        drivers::outln!("  lost: {why}");
    }
    drivers::outln!("  members: {}", st.members.join(", "));
    for op in &st.in_flight {
        let over = if op.takeovers > 0 {
            format!(" (taken over {} times)", op.takeovers)
        } else {
            String::new()
        };
        drivers::outln!(
            "  in flight: {} {} ({}), executed by {}{over}",
            op.target,
            op.action,
            op.op,
            op.executor
        );
    }
    Ok(())
}
