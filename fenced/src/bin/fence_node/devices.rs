//! `devices`: each device, its last health check (with `--check`: checked now), its warnings
//! and, for PDUs, its outlets.

use crate::error::CliError;
use crate::output::{print_json, table};
use crate::{DevicesArgs, Exit, Ui};
use fenced::client::encode;
use fenced::model::{DeviceSummary, HealthState};
use serde_json::Value;

/// Runs `devices`; with `--check`, exits [`Exit::Failed`] if any device is unhealthy.
pub async fn run(ui: &Ui, a: DevicesArgs) -> Result<Exit, CliError> {
    let (mut devices, mut raw): (Vec<DeviceSummary>, Value) =
        ui.client.call_as("GET", "/v1/devices", None, None).await?;
    if a.check {
        let mut checked = Vec::new();
        let mut checked_raw = Vec::new();
        for d in &devices {
            let path = format!("/v1/devices/{}/monitor", encode(&d.name));
            let (c, r): (DeviceSummary, Value) =
                ui.client.call_as("POST", &path, None, None).await?;
            checked.push(c);
            checked_raw.push(r);
        }
        devices = checked;
        raw = Value::Array(checked_raw);
    }
    if ui.json {
        print_json(&raw);
    } else {
        print_devices(&devices);
    }
    let unhealthy = devices.iter().any(|d| d.health == HealthState::Unhealthy);
    Ok(if a.check && unhealthy {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

fn print_devices(devices: &[DeviceSummary]) {
    let rows: Vec<[String; 6]> = devices
        .iter()
        .map(|d| {
            let health = match d.health {
                HealthState::Healthy => "healthy",
                HealthState::Unhealthy => "UNHEALTHY",
                HealthState::Unknown => "unknown",
            };
            let what = match (&d.error, &d.identity) {
                (Some(e), _) => e.clone(),
                (None, Some(i)) => format!("{} {} ({})", i.kind, i.value, i.description),
                (None, None) => String::new(),
            };
            [
                d.name.clone(),
                d.kind.clone(),
                d.address.clone(),
                health.to_string(),
                d.targets.join(","),
                what,
            ]
        })
        .collect();
    table(
        &[
            "DEVICE",
            "KIND",
            "ADDRESS",
            "HEALTH",
            "TARGETS",
            "IDENTITY / ERROR",
        ],
        &rows,
    );
    for d in devices {
        for w in &d.warnings {
            drivers::outln!("WARNING: device {}: {w}", d.name);
        }
    }
    for d in devices.iter().filter(|d| !d.outlets.is_empty()) {
        drivers::outln!("\n{} outlets:", d.name);
        let rows: Vec<[String; 3]> = d
            .outlets
            .iter()
            .map(|o| {
                [
                    o.id.clone(),
                    o.name.clone().unwrap_or_default(),
                    o.state.clone().unwrap_or_else(|| "?".into()),
                ]
            })
            .collect();
        table(&["OUTLET", "NAME", "STATE"], &rows);
    }
}
