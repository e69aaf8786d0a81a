//! `history`: operations newest first; with `--audit`, the ledger's audit records; with
//! `--verify`, the ledger's hash chain and signatures checked by the daemon.

use crate::error::CliError;
use crate::output::{op_detail, print_json, table};
use crate::timestamp::{format_ms, now_ms, parse_since};
use crate::{Exit, HistoryArgs, Ui};
use fenced::client::encode;
use fenced::model::Operation;
use serde_json::Value;

/// How many ledger records one request asks for while paging through the audit trail.
const LEDGER_PAGE: usize = 1000;

/// Runs `history` (operations).
pub async fn run(ui: &Ui, a: HistoryArgs) -> Result<Exit, CliError> {
    let mut q = Vec::new();
    if let Some(n) = &a.node {
        q.push(format!("target={}", encode(n)));
    }
    if let Some(s) = &a.since {
        q.push(format!("since_ms={}", parse_since(s, now_ms())?));
    }
    if let Some(l) = a.limit {
        q.push(format!("limit={l}"));
    }
    let path = if q.is_empty() {
        "/v1/history".to_string()
    } else {
        format!("/v1/history?{}", q.join("&"))
    };
    let (ops, raw): (Vec<Operation>, Value) = ui.client.call_as("GET", &path, None, None).await?;
    if ui.json {
        print_json(&raw);
        return Ok(Exit::Ok);
    }
    let rows: Vec<[String; 7]> = ops
        .iter()
        .map(|op| {
            [
                op.id.to_string(),
                format_ms(op.created_ms),
                op.target.clone(),
                op.action.to_string(),
                op.state.to_string(),
                op.requested_by.identity.clone(),
                op_detail(op),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "CREATED (UTC)",
            "TARGET",
            "ACTION",
            "STATE",
            "BY",
            "DETAIL",
        ],
        &rows,
    );
    Ok(Exit::Ok)
}

/// Runs `history --verify`: exits [`Exit::Failed`] naming the first bad record when the
/// ledger does not verify.
pub async fn verify_ledger(ui: &Ui) -> Result<Exit, CliError> {
    let (v, raw): (fenced::api::LedgerVerification, Value) = ui
        .client
        .call_as("GET", "/v1/ledger/verify", None, None)
        .await?;
    if ui.json {
        print_json(&raw);
    }
    match (&v.report, v.ok) {
        (Some(r), true) => {
            if !ui.json {
                drivers::outln!(
                    "ledger intact: {} records ({} signed, {} unsigned from before signing), head {} {}",
                    r.records, r.signed, r.unsigned, r.head_seq, r.head_hash
                );
                if let Some(k) = &r.public_key {
                    drivers::outln!("signed by {k}");
                }
            }
            Ok(Exit::Ok)
        }
        _ => {
            drivers::errln!(
                "fence_node: ledger NOT intact: first bad record {}: {}",
                v.first_bad_seq.unwrap_or(0),
                v.detail.unwrap_or_default()
            );
            Ok(Exit::Failed)
        }
    }
}

/// Runs `history --audit`: the audit records, oldest first, the last `limit` of them.
pub async fn audit(ui: &Ui, limit: Option<u32>) -> Result<Exit, CliError> {
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut raws = Vec::new();
    let mut from = 1u64;
    loop {
        let (recs, raw): (Vec<fenced::history::LedgerRecord>, Value) = ui
            .client
            .call_as(
                "GET",
                &format!("/v1/ledger?from_seq={from}&limit={LEDGER_PAGE}"),
                None,
                None,
            )
            .await?;
        let n = recs.len();
        raws.push(raw);
        for r in recs {
            from = r.seq + 1;
            if let fenced::history::LedgerEntry::Audit {
                at_ms,
                who,
                from: src,
                what,
                why,
                outcome,
            } = r.entry
            {
                rows.push([
                    r.seq.to_string(),
                    format_ms(at_ms),
                    who,
                    src,
                    what,
                    why,
                    outcome,
                ]);
            }
        }
        if n < LEDGER_PAGE {
            break;
        }
    }
    if let Some(l) = limit {
        let skip = rows.len().saturating_sub(l as usize);
        rows.drain(..skip);
    }
    if ui.json {
        print_json(&Value::Array(raws));
        return Ok(Exit::Ok);
    }
    table(
        &["SEQ", "AT (UTC)", "WHO", "FROM", "WHAT", "WHY", "OUTCOME"],
        &rows,
    );
    Ok(Exit::Ok)
}
