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
    let (health, identity, error) = match result {
        Ok(id) => {
            // The device is unhealthy if any target that pins an identity for it disagrees.
            let got = id.value.trim().to_ascii_lowercase();
            let mismatch = inner.uses.get(device).and_then(|uses| {
                uses.iter().find_map(|(t, want)| {
                    want.as_ref()
                        .filter(|want| **want != got)
                        .map(|want| (t.clone(), want.clone()))
                })
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
    let mut st = inner.state();
    match st.device_status.get_mut(device) {
        Some(d) => {
            // A check that did not list outlets (an identity check during an operation)
            // keeps the last listing.
            if let Some(o) = outlets {
                d.outlets = o;
            }
            d.health = health;
            d.identity = identity;
            d.error = error;
            d.checked_ms = Some(now);
        }
        None => {
            st.device_status.insert(
                device.to_string(),
                DeviceStatus {
                    health,
                    identity,
                    error,
                    checked_ms: Some(now),
                    outlets: outlets.unwrap_or_default(),
                },
            );
        }
    }
}

/// Runs a device's health check and stores the result.
pub(super) async fn check_device(inner: &Inner, name: &str) {
    if let Some((r, outlets)) = run_check(inner, name).await {
        set_health(inner, name, r, Some(outlets));
    }
}

type CheckResult = (
    Result<DeviceIdentity, CheckFailure>,
    Vec<crate::model::OutletSummary>,
);

/// A device's health check (identity, and a PDU's outlets); `None` for an unknown device.
async fn run_check(inner: &Inner, name: &str) -> Option<CheckResult> {
    let slot = inner.devices.get(name)?;
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
    Some((r, outlets))
}

/// How often a scheduled check looks again whether fence operations are still in flight.
const DEFER_POLL: Duration = Duration::from_millis(50);

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
            .map(|(name, slot)| self.device_summary(&st, name, slot))
            .collect()
    }

    /// One device with its last health check (what [`Engine::devices`] lists for it).
    fn device_summary(
        &self,
        st: &super::State,
        name: &str,
        slot: &super::DeviceSlot,
    ) -> DeviceSummary {
        let ds = st.device_status.get(name);
        DeviceSummary {
            name: name.to_string(),
            kind: slot.kind.clone(),
            address: slot.address.clone(),
            targets: self
                .inner
                .uses
                .get(name)
                .map(|u| u.iter().map(|(t, _)| t.clone()).collect())
                .unwrap_or_default(),
            health: ds.map_or(HealthState::Unknown, |d| d.health.clone()),
            identity: ds.and_then(|d| d.identity.clone()),
            error: ds.and_then(|d| d.error.clone()),
            checked_ms: ds.and_then(|d| d.checked_ms),
            warnings: slot.device.warnings(),
            outlets: ds.map(|d| d.outlets.clone()).unwrap_or_default(),
        }
    }

    /// Checks one device now (identity against every target that pins one) and returns it.
    pub async fn monitor_device(&self, name: &str) -> Result<DeviceSummary, EngineError> {
        if !self.inner.devices.contains_key(name) {
            return self.tally(Err(EngineError::UnknownDevice {
                device: name.to_string(),
            }));
        }
        check_device(&self.inner, name).await;
        // This device's summary only: listing the whole fleet to return one device made each
        // check cost O(devices) (5 ms of CPU per check at 1000 devices, mass_fence `devices`).
        let slot = self
            .inner
            .devices
            .get(name)
            .ok_or_else(|| EngineError::UnknownDevice {
                device: name.to_string(),
            })?;
        let st = self.inner.state();
        Ok(self.device_summary(&st, name, slot))
    }

    /// A scheduled (periodic or start-up) health check of `name`. Fencing comes first: the
    /// check waits for a permit of `permits` (a few checks at a time, so a thousand devices
    /// due at once do not take the only runtime thread) and while any fence operation is in
    /// flight. A failed check is not stored when fencing ran during it: the daemon was busy,
    /// so a timeout may be ours, not the device's, and a healthy BMC must not be marked
    /// unhealthy for it; it is checked again at its next turn. Returns the stored state,
    /// `None` if the result was not stored.
    pub async fn scheduled_check(
        &self,
        name: &str,
        permits: &tokio::sync::Semaphore,
    ) -> Option<HealthState> {
        let _permit = permits.acquire().await.ok()?;
        while self.in_flight() > 0 {
            tokio::time::sleep(DEFER_POLL).await;
        }
        let started_id = self.inner.state().next_id;
        let (r, outlets) = run_check(&self.inner, name).await?;
        let fencing_ran = {
            let st = self.inner.state();
            st.next_id != started_id || !st.in_flight.is_empty()
        };
        if r.is_err() && fencing_ran {
            tracing::debug!(
                device = name,
                "health check failed while fencing ran; not stored, checked again at its next turn"
            );
            return None;
        }
        let healthy = r.is_ok();
        set_health(&self.inner, name, r, Some(outlets));
        let st = self.inner.state();
        let stored = st.device_status.get(name).map(|d| d.health.clone());
        if !healthy {
            if let Some(d) = st.device_status.get(name) {
                tracing::warn!(
                    device = name,
                    "device unhealthy: {}",
                    d.error.as_deref().unwrap_or("")
                );
            }
        }
        stored
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
