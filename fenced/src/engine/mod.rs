//! The fencing engine: accepts operations, serialises them per target, applies fence-race
//! delays and blast-radius limits, drives topology levels, and records everything in history
//! before and after each device step (DESIGN.md §3).
//!
//! Time is tokio's (`tokio::time`), so tests run with paused time; wall-clock stamps come from
//! [`Clock`], which follows tokio's clock and therefore pauses with it.

pub mod audit;
mod limits;
mod run;

use crate::config::{Config, TargetConfig};
use crate::error::EngineError;
use crate::history::{History, LedgerEntry};
use crate::model::*;
use drivers::PowerDevice;
use limits::Limiter;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, watch};

/// Wall-clock milliseconds that advance with tokio's clock (so paused-time tests see time move
/// only when tokio's does).
#[derive(Debug, Clone)]
pub struct Clock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl Clock {
    /// A clock anchored at the system time now.
    pub fn system() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> Millis {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

/// A configured device as the engine holds it.
pub struct DeviceSlot {
    /// The driver.
    pub device: Arc<dyn PowerDevice>,
    /// Kind name for display.
    pub kind: String,
    /// Address for display.
    pub address: String,
}

struct DeviceStatus {
    health: HealthState,
    identity: Option<DeviceIdentity>,
    error: Option<String>,
    checked_ms: Option<Millis>,
    outlets: Vec<crate::model::OutletSummary>,
}

/// One in-flight operation.
struct InFlight {
    id: u64,
    action: Action,
    tx: watch::Sender<Operation>,
}

struct State {
    in_flight: HashMap<String, InFlight>,
    /// request_id -> (operation id, target).
    request_ids: HashMap<String, u64>,
    /// Newest operation id per target (in flight or finished).
    latest: HashMap<String, u64>,
    limiter: Limiter,
    pause: PauseStatus,
    device_status: BTreeMap<String, DeviceStatus>,
    next_id: u64,
    metrics: Metrics,
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Finished operations by (action, outcome).
    pub operations: BTreeMap<(String, String), u64>,
    /// Device steps by (device, result code).
    pub steps: BTreeMap<(String, String), u64>,
    /// Requests refused, by error code.
    pub refused: BTreeMap<String, u64>,
    /// Sum of finished operations' durations, ms, by action.
    pub duration_ms_sum: BTreeMap<String, u64>,
    /// Operations recorded as interrupted at start-up.
    pub interrupted_at_startup: u32,
}

pub(crate) struct Inner {
    config: Arc<Config>,
    devices: BTreeMap<String, DeviceSlot>,
    history: History,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    clock: Clock,
}

/// The fencing engine. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than refusing all further service would, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    /// Builds the engine over an opened history. Operations that history found in flight (the
    /// daemon died mid-operation) have already been recorded as failed by [`History::open`];
    /// pass their count as `interrupted` for `/healthz` and `/metrics`.
    pub fn new(
        config: Arc<Config>,
        devices: BTreeMap<String, DeviceSlot>,
        history: History,
        interrupted: u32,
        clock: Clock,
    ) -> Result<Engine, EngineError> {
        let next_id = history.last_operation_id()? + 1;
        let pause = history.pause_status()?;
        let mut latest = HashMap::new();
        let mut request_ids = HashMap::new();
        let since = clock
            .now_ms()
            .saturating_sub(config.limits.request_id_window.as_millis() as u64);
        for t in config.targets.keys() {
            let recent = history.query(&HistoryQuery {
                target: Some(t.clone()),
                limit: Some(1),
                ..Default::default()
            })?;
            if let Some(op) = recent.first() {
                latest.insert(t.clone(), op.id);
                if let (Some(rid), Some(fin)) = (&op.request_id, op.finished_ms) {
                    if fin >= since {
                        request_ids.insert(rid.clone(), op.id);
                    }
                }
            }
        }
        let device_status = devices
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    DeviceStatus {
                        health: HealthState::Unknown,
                        identity: None,
                        error: None,
                        checked_ms: None,
                        outlets: Vec::new(),
                    },
                )
            })
            .collect();
        let (events, _) = broadcast::channel(256);
        let limiter = Limiter::new(config.limits.clone());
        let metrics = Metrics {
            interrupted_at_startup: interrupted,
            ..Default::default()
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                config,
                devices,
                history,
                state: Mutex::new(State {
                    in_flight: HashMap::new(),
                    request_ids,
                    latest,
                    limiter,
                    pause,
                    device_status,
                    next_id,
                    metrics,
                }),
                events,
                clock,
            }),
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn target(&self, name: &str) -> Result<&TargetConfig, EngineError> {
        self.inner
            .config
            .targets
            .get(name)
            .ok_or_else(|| EngineError::UnknownTarget {
                target: name.to_string(),
            })
    }

    /// Accepts a fence request: joins the operation in flight for the same target and action
    /// (or the same recent `request_id`), refuses a conflicting one, otherwise records a new
    /// operation in history and starts it. Returns before any device is touched.
    pub fn fence(&self, req: FenceRequest, caller: &Caller) -> Result<FenceAccepted, EngineError> {
        let result = self.fence_inner(req, caller);
        if let Err(e) = &result {
            *self
                .inner
                .state()
                .metrics
                .refused
                .entry(e.code().to_string())
                .or_default() += 1;
        }
        result
    }

    fn fence_inner(
        &self,
        req: FenceRequest,
        caller: &Caller,
    ) -> Result<FenceAccepted, EngineError> {
        let target = self.target(&req.target)?.clone();
        if req.reason.len() > 1024
            || req
                .request_id
                .as_ref()
                .is_some_and(|r| r.len() > 128 || r.is_empty())
        {
            return Err(EngineError::BadRequest {
                detail: "reason is limited to 1024 bytes and request_id to 1..=128 bytes".into(),
            });
        }
        if req.timeout_s == Some(0) {
            return Err(EngineError::BadRequest {
                detail: "timeout_s must be at least 1".into(),
            });
        }
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let mut st = inner.state();

        if let Some(rid) = &req.request_id {
            if let Some(&id) = st.request_ids.get(rid) {
                let op = match st.in_flight.get(&req.target) {
                    Some(f) if f.id == id => Some(f.tx.borrow().clone()),
                    _ => inner.history.get(id)?,
                };
                if let Some(op) = op {
                    if op.target != req.target || op.action != req.action {
                        return Err(EngineError::RequestIdMismatch {
                            request_id: rid.clone(),
                            id,
                            target: op.target,
                            action: op.action,
                        });
                    }
                    let newest = st.latest.get(&req.target).copied() == Some(id);
                    let recent = op.finished_ms.is_none_or(|f| {
                        now.saturating_sub(f)
                            <= inner.config.limits.request_id_window.as_millis() as u64
                    });
                    // Only the newest operation on the target may be returned: if the node was
                    // powered on (or anything else ran) since, an old "fenced" would be a lie.
                    if newest && recent {
                        return Ok(FenceAccepted {
                            id,
                            state: op.state,
                            joined: true,
                        });
                    }
                }
            }
        }

        if let Some(f) = st.in_flight.get(&req.target) {
            if f.action == req.action {
                let state = f.tx.borrow().state;
                let id = f.id;
                if let Some(rid) = &req.request_id {
                    st.request_ids.insert(rid.clone(), id);
                }
                return Ok(FenceAccepted {
                    id,
                    state,
                    joined: true,
                });
            }
            return Err(EngineError::Conflict {
                target: req.target.clone(),
                running_id: f.id,
                running_action: f.action,
                requested: req.action,
            });
        }

        if st.pause.paused {
            return Err(EngineError::Paused {
                by: st.pause.by.clone().unwrap_or_default(),
                reason: st.pause.reason.clone().unwrap_or_default(),
            });
        }
        if req.action.fences() {
            if let Err(detail) = st.limiter.check(&req.target, tokio::time::Instant::now()) {
                drop(st);
                let _ = inner.history.append_event(LedgerEntry::Refused {
                    at_ms: now,
                    by: caller.identity.clone(),
                    target: req.target.clone(),
                    action: req.action,
                    code: "rate_limited".into(),
                    detail: detail.clone(),
                });
                return Err(EngineError::RateLimited { detail });
            }
        }

        let delay = run::fence_race_delay(&target.timing);
        let id = st.next_id;
        let op = Operation {
            id,
            target: req.target.clone(),
            action: req.action,
            reason: req.reason.clone(),
            requested_by: caller.clone(),
            request_id: req.request_id.clone(),
            state: if delay.is_zero() {
                OpState::Running
            } else {
                OpState::Delayed
            },
            created_ms: now,
            // Without a delay the operation starts now: one durable write less (each costs
            // an fsync, ~4 ms on a VM disk).
            started_ms: delay.is_zero().then_some(now),
            finished_ms: None,
            delay_ms: delay.as_millis() as u64,
            attempts: Vec::new(),
            outcome: None,
        };
        // Durability first: the operation exists in history before anything else happens.
        inner.history.record(&op)?;
        st.next_id += 1;
        if req.action.fences() {
            st.limiter.record(&req.target, tokio::time::Instant::now());
        }
        let (tx, _rx) = watch::channel(op.clone());
        st.in_flight.insert(
            req.target.clone(),
            InFlight {
                id,
                action: req.action,
                tx: tx.clone(),
            },
        );
        st.latest.insert(req.target.clone(), id);
        if let Some(rid) = &req.request_id {
            st.request_ids.insert(rid.clone(), id);
        }
        drop(st);
        let _ = inner.events.send(Event::Operation {
            operation: Box::new(op.clone()),
        });
        let total = req
            .timeout_s
            .map(Duration::from_secs)
            .map_or(target.timing.total_timeout, |t| {
                t.min(target.timing.total_timeout)
            });
        let state = op.state;
        tokio::spawn(run::run_operation(
            self.inner.clone(),
            target,
            op,
            tx,
            delay,
            total,
        ));
        Ok(FenceAccepted {
            id,
            state,
            joined: false,
        })
    }

    /// The operation as it is now.
    pub fn operation(&self, id: u64) -> Result<Operation, EngineError> {
        {
            let st = self.inner.state();
            if let Some(f) = st.in_flight.values().find(|f| f.id == id) {
                return Ok(f.tx.borrow().clone());
            }
        }
        self.inner
            .history
            .get(id)?
            .ok_or(EngineError::UnknownOperation { id })
    }

    /// Waits up to `wait` for the operation to finish, then returns it as it is.
    pub async fn wait_operation(&self, id: u64, wait: Duration) -> Result<Operation, EngineError> {
        let rx = {
            let st = self.inner.state();
            st.in_flight
                .values()
                .find(|f| f.id == id)
                .map(|f| f.tx.subscribe())
        };
        let Some(mut rx) = rx else {
            return self.operation(id);
        };
        let _ = tokio::time::timeout(wait, rx.wait_for(|op| op.state.is_terminal())).await;
        let op = rx.borrow().clone();
        if op.state.is_terminal() {
            Ok(op)
        } else {
            self.operation(id)
        }
    }

    /// Subscribes to events (operation changes, pause switch).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Finished and in-flight operations, newest first.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<Operation>, EngineError> {
        if let Some(t) = &q.target {
            self.target(t)?;
        }
        Ok(self.inner.history.query(q)?)
    }

    fn summary(&self, t: &TargetConfig) -> Result<TargetSummary, EngineError> {
        let in_flight = self.inner.state().in_flight.get(&t.name).map(|f| f.id);
        let last_operation = self
            .inner
            .history
            .query(&HistoryQuery {
                target: Some(t.name.clone()),
                limit: Some(1),
                ..Default::default()
            })?
            .into_iter()
            .next();
        Ok(TargetSummary {
            name: t.name.clone(),
            levels: t
                .levels
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|e| LevelDevice {
                            device: e.device.clone(),
                            port: e.port.clone(),
                            expected_identity: t.identities.get(&e.device).cloned(),
                        })
                        .collect()
                })
                .collect(),
            delay_s: t.timing.delay.as_secs_f64(),
            random_delay_s: t.timing.random_delay.as_secs_f64(),
            in_flight,
            last_operation,
            live: None,
        })
    }

    /// All targets with their last operation.
    pub fn targets(&self) -> Result<Vec<TargetSummary>, EngineError> {
        self.inner
            .config
            .targets
            .values()
            .map(|t| self.summary(t))
            .collect()
    }

    /// One target; with `live`, also reads every level device's power state now (bounded by
    /// the target's attempt timeout).
    pub async fn target_detail(
        &self,
        name: &str,
        live: bool,
    ) -> Result<TargetSummary, EngineError> {
        let t = self.target(name)?.clone();
        let mut s = self.summary(&t)?;
        if live {
            s.live = Some(run::live_power(&self.inner, &t).await);
        }
        Ok(s)
    }

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
            return Err(EngineError::UnknownDevice {
                device: name.to_string(),
            });
        }
        run::check_device(&self.inner, name).await;
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
        let checks = names.iter().map(|n| run::check_device(&self.inner, n));
        futures_util::future::join_all(checks).await;
    }

    /// Records an operator's manual confirmation that `target` is off. It is a succeeded `off`
    /// operation whose confirmation names the operator and the reason. Refused while an
    /// operation on the target is in flight (its outcome must not be overwritten).
    pub fn confirm(
        &self,
        target: &str,
        caller: &Caller,
        reason: &str,
    ) -> Result<Operation, EngineError> {
        self.target(target)?;
        if reason.trim().is_empty() {
            return Err(EngineError::BadRequest { detail: "a manual confirmation needs a reason (what you checked, e.g. \"power cords pulled, checked in the rack\")".into() });
        }
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let mut st = inner.state();
        if let Some(f) = st.in_flight.get(target) {
            return Err(EngineError::Conflict {
                target: target.to_string(),
                running_id: f.id,
                running_action: f.action,
                requested: Action::Off,
            });
        }
        let id = st.next_id;
        let op = Operation {
            id,
            target: target.to_string(),
            action: Action::Off,
            reason: reason.to_string(),
            requested_by: caller.clone(),
            request_id: None,
            state: OpState::Succeeded,
            created_ms: now,
            started_ms: Some(now),
            finished_ms: Some(now),
            delay_ms: 0,
            attempts: Vec::new(),
            outcome: Some(Outcome::Succeeded {
                confirmation: Confirmation::Manual {
                    by: caller.identity.clone(),
                    reason: reason.to_string(),
                },
                powered_on: None,
                summary: format!(
                    "{target} confirmed off by hand by {}: {reason}",
                    caller.identity
                ),
            }),
        };
        inner.history.record(&op)?;
        st.next_id += 1;
        st.latest.insert(target.to_string(), id);
        drop(st);
        let _ = inner.events.send(Event::Operation {
            operation: Box::new(op.clone()),
        });
        Ok(op)
    }

    /// Turns the pause switch on or off; recorded in history (and kept across restarts).
    pub fn set_paused(
        &self,
        paused: bool,
        caller: &Caller,
        reason: &str,
    ) -> Result<PauseStatus, EngineError> {
        let inner = &self.inner;
        let status = PauseStatus {
            paused,
            by: Some(caller.identity.clone()),
            reason: Some(reason.to_string()),
            since_ms: Some(inner.clock.now_ms()),
        };
        inner.history.append_event(LedgerEntry::Pause {
            status: status.clone(),
        })?;
        inner.state().pause = status.clone();
        let _ = inner.events.send(Event::Pause {
            paused,
            by: caller.identity.clone(),
            reason: reason.to_string(),
        });
        Ok(status)
    }

    /// The pause switch.
    pub fn pause_status(&self) -> PauseStatus {
        self.inner.state().pause.clone()
    }

    /// `/healthz`.
    pub fn health(&self) -> HealthReport {
        let history_ok = self.inner.history.last_operation_id().is_ok();
        let st = self.inner.state();
        HealthReport {
            status: if history_ok {
                "ok".into()
            } else {
                "history_unavailable".into()
            },
            version: env!("CARGO_PKG_VERSION").into(),
            paused: st.pause.paused,
            in_flight: st.in_flight.len() as u32,
            interrupted_at_startup: st.metrics.interrupted_at_startup,
        }
    }

    /// A copy of the counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.state().metrics.clone()
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

    /// Operations in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.state().in_flight.len()
    }
}

#[cfg(test)]
pub(crate) mod testdev;
#[cfg(test)]
pub(crate) mod tests;
