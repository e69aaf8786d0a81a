//! What several verbs print: JSON answers, aligned tables, and one-line summaries of levels
//! and operations.

use crate::timestamp::format_ms;
use fenced::model::{LevelDevice, Operation, Outcome};
use serde_json::Value;

/// Prints an API answer as indented JSON on stdout (`--json`).
pub fn print_json(v: &Value) {
    drivers::outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Prints `rows` under `header` in left-aligned columns (the last column is not padded), or
/// `(none)` when there are no rows.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut width = [0usize; N];
    for (i, h) in header.iter().enumerate() {
        width[i] = h.len();
    }
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        drivers::outln!("{}", s.trim_end());
    };
    if rows.is_empty() {
        drivers::outln!("(none)");
        return;
    }
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// One level's devices: `bmc1 + pdu1:3`.
pub fn level_names(level: &[LevelDevice]) -> String {
    level
        .iter()
        .map(|d| match &d.port {
            Some(p) => format!("{}:{p}", d.device),
            None => d.device.clone(),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// What an operation ended with (or why it was asked for, while it runs).
pub fn op_detail(op: &Operation) -> String {
    match &op.outcome {
        Some(Outcome::Succeeded { summary, .. }) => summary.clone(),
        Some(Outcome::Failed { code, message }) => format!("{code}: {message}"),
        None => op.reason.clone(),
    }
}

/// `#7 off succeeded at 2026-11-23T15:04:05Z by unix:uid=0`.
pub fn op_line(op: &Operation) -> String {
    format!(
        "#{} {} {} at {} by {}",
        op.id,
        op.action,
        op.state,
        format_ms(op.created_ms),
        op.requested_by.identity
    )
}
