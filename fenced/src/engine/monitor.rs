//! Device monitoring: health checks (answers, identity as pinned, outlet lists), the health
//! state the engine keeps per device, live power reads, and the skip rule for devices marked
//! `on_fail = "skip"`.

use super::{DeviceStatus, Engine, Inner};
use crate::config::{LevelEntry, TargetConfig};
use crate::error::EngineError;
use crate::model::*;
use drivers::DeviceError;
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

/// Why a health check or a live read found no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum CheckFailure {
    /// The device did not answer in time.
    #[error("{what} did not answer within {} ms; check the device's network and that it is powered", .limit.as_millis())]
    Timeout {
        /// What was asked.
        what: &'static str,
        /// How long it had.
        limit: Duration,
    },
    /// The device answered with an error (its message says what to do).
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The level entry names a device the configuration does not have.
    #[error("device not configured; fix the target's levels in the config")]
    NotConfigured,
}

/// Stores a health result for `device`.
pub(super) fn set_health(
    inner: &Inner,
    device: &str,
    result: Result<DeviceIdentity, CheckFailure>,
    outlets: Option<Vec<crate::model::OutletSummary>>,
) {
    let now = inner.clock.now_ms();
    let mut st = inner.state();
    // A check that did not list outlets (an identity check during an operation) keeps the
    // last listing.
    let outlets = outlets.unwrap_or_else(|| {
        st.device_status
            .get(device)
            .map(|d| d.outlets.clone())
            .unwrap_or_default()
    });
    let (health, identity, error) = match result {
        Ok(id) => {
            // The device is unhealthy if any target that pins an identity for it disagrees.
            let mismatch = inner.config.targets.values().find_map(|t| {
                t.identities
                    .get(device)
                    .filter(|want| **want != id.value.trim().to_ascii_lowercase())
                    .map(|want| (t.name.clone(), want.clone()))
            });
            match mismatch {
                Some((t, want)) => (
                    HealthState::Unhealthy,
                    Some(id.clone()),
                    Some(format!(
                        "reports {} {}, but target {t} expects {want}",
                        id.kind, id.value
                    )),
                ),
                None => (HealthState::Healthy, Some(id), None),
            }
        }
        Err(e) => (HealthState::Unhealthy, None, Some(e.to_string())),
    };
    st.device_status.insert(
        device.to_string(),
        DeviceStatus {
            health,
            identity,
            error,
            checked_ms: Some(now),
            outlets,
        },
    );
}

/// Runs a device's health check and stores the result.
pub(super) async fn check_device(inner: &Inner, name: &str) {
    let Some(slot) = inner.devices.get(name) else {
        return;
    };
    let limit = Duration::from_secs(10);
    let r = match tokio::time::timeout(limit, slot.device.health()).await {
        Err(_) => Err(CheckFailure::Timeout {
            what: "health check",
            limit,
        }),
        Ok(Err(e)) => Err(CheckFailure::Device(e)),
        Ok(Ok(id)) => Ok(id.into()),
    };
    // A PDU also lists its outlets and their names, so operators see what `DEVICE:NAME`
    // level entries address; devices that have no outlets answer Unsupported.
    let outlets = if r.is_ok() {
        match tokio::time::timeout(limit, slot.device.list()).await {
            Ok(Ok(list)) => list
                .into_iter()
                .map(|o| crate::model::OutletSummary {
                    id: o.id,
                    name: o.name,
                    state: o.state.map(|s| s.to_string()),
                })
                .collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    set_health(inner, name, r, Some(outlets));
}

/// Reads every level device's power state now.
pub(super) async fn live_power(inner: &Inner, t: &TargetConfig) -> Vec<LivePower> {
    let deadline = Instant::now() + t.timing.attempt_timeout;
    let reads = t.levels.iter().enumerate().flat_map(|(i, l)| {
        l.iter().map(move |e| async move {
            let r = match inner.devices.get(&e.device) {
                None => Err(CheckFailure::NotConfigured),
                Some(slot) => {
                    match timeout_at(deadline, slot.device.status(e.port.as_deref())).await {
                        Err(_) => Err(CheckFailure::Timeout {
                            what: "power read",
                            limit: t.timing.attempt_timeout,
                        }),
                        Ok(r) => r.map_err(CheckFailure::Device),
                    }
                }
            };
            LivePower {
                level: i as u32 + 1,
                device: e.device.clone(),
                port: e.port.clone(),
                state: r.as_ref().ok().copied(),
                error: r.err().map(|e| e.to_string()),
            }
        })
    });
    futures_util::future::join_all(reads).await
}

/// Why a level is skipped: one of its devices has `on_fail = "skip"` and failed its last health
/// check. Skipping only ever moves on to the next level or fails the operation; it never
/// confirms anything.
pub(super) fn unhealthy_skip(inner: &Inner, entries: &[LevelEntry]) -> Option<String> {
    let st = inner.state();
    entries.iter().find_map(|e| {
        let skip = inner
            .config
            .devices
            .get(&e.device)
            .is_some_and(|d| d.selection.skip_when_unhealthy);
        let status = st.device_status.get(&e.device)?;
        (skip && status.health == HealthState::Unhealthy).then(|| {
            format!(
                "device {} failed its last health check ({}) and has on_fail = \"skip\"",
                e.device,
                status.error.as_deref().unwrap_or("no detail")
            )
        })
    })
}

impl Engine {
    /// All devices with their last health check.
    pub fn devices(&self) -> Vec<DeviceSummary> {
        let st = self.inner.state();
        self.inner
            .devices
            .iter()
            .map(|(name, slot)| {
                let ds = st.device_status.get(name);
                DeviceSummary {
                    name: name.clone(),
                    kind: slot.kind.clone(),
                    address: slot.address.clone(),
                    targets: self.inner.config.targets_of(name),
                    health: ds.map_or(HealthState::Unknown, |d| d.health.clone()),
                    identity: ds.and_then(|d| d.identity.clone()),
                    error: ds.and_then(|d| d.error.clone()),
                    checked_ms: ds.and_then(|d| d.checked_ms),
                    warnings: slot.device.warnings(),
                    outlets: ds.map(|d| d.outlets.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Checks one device now (identity against every target that pins one) and returns it.
    pub async fn monitor_device(&self, name: &str) -> Result<DeviceSummary, EngineError> {
        if !self.inner.devices.contains_key(name) {
            return self.tally(Err(EngineError::UnknownDevice {
                device: name.to_string(),
            }));
        }
        check_device(&self.inner, name).await;
        self.devices()
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| EngineError::UnknownDevice {
                device: name.to_string(),
            })
    }

    /// Checks every device (used at start-up and by the periodic monitor).
    pub async fn monitor_all(&self) {
        let names: Vec<String> = self.inner.devices.keys().cloned().collect();
        let checks = names.iter().map(|n| check_device(&self.inner, n));
        futures_util::future::join_all(checks).await;
    }

    /// Devices with their health, for the metrics page.
    pub fn device_health(&self) -> Vec<(String, HealthState)> {
        self.inner
            .state()
            .device_status
            .iter()
            .map(|(k, v)| (k.clone(), v.health.clone()))
            .collect()
    }
}
