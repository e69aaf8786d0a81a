//! `pause` and `resume`: stop and restart accepting new fencing operations.

use crate::error::CliError;
use crate::output::print_json;
use crate::{Exit, Ui};
use fenced::model::PauseStatus;
use serde_json::{json, Value};

/// Runs `pause` (`paused` true) or `resume`.
pub async fn run(ui: &Ui, paused: bool, reason: &str) -> Result<Exit, CliError> {
    let path = if paused { "/v1/pause" } else { "/v1/resume" };
    let body = json!({ "reason": reason });
    let (st, raw): (PauseStatus, Value) =
        ui.client.call_as("POST", path, Some(&body), None).await?;
    if ui.json {
        print_json(&raw);
    } else if st.paused {
        drivers::outln!("fencing PAUSED: new operations are refused until `fence_node resume`");
    } else {
        drivers::outln!("fencing resumed");
    }
    Ok(Exit::Ok)
}
