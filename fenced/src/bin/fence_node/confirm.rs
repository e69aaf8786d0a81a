//! `confirm`: record by hand that a node is powered off, after asking on the terminal unless
//! `--yes` says the operator already knows.

use crate::error::CliError;
use crate::output::print_json;
use crate::{ConfirmArgs, Exit, Ui};
use fenced::client::encode;
use fenced::model::Operation;
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};

/// Runs `confirm`; a declined prompt is [`Exit::Failed`] and records nothing.
pub async fn run(ui: &Ui, a: ConfirmArgs) -> Result<Exit, CliError> {
    let node = &a.node;
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::NoTerminal);
        }
        drivers::err!("Record that {node} is powered OFF, confirmed by you by hand?\nIf it is in fact running, its workloads may run twice and corrupt data. [y/N] ");
        // The prompt may not show if stderr is gone; the answer is still read from stdin.
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err()
            || !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
        {
            drivers::errln!("not confirmed");
            return Ok(Exit::Failed);
        }
    }
    let path = format!("/v1/targets/{}/confirm", encode(node));
    let body = json!({ "reason": a.reason });
    let (op, raw): (Operation, Value) = ui.client.call_as("POST", &path, Some(&body), None).await?;
    if ui.json {
        print_json(&raw);
    } else {
        drivers::outln!(
            "{node} recorded as FENCED by manual confirmation (operation {}, by {})",
            op.id,
            op.requested_by.identity
        );
    }
    Ok(Exit::Ok)
}
