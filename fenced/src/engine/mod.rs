//! The fencing engine: accepts operations, serialises them per target, applies fence-race
//! delays and blast-radius limits, drives topology levels, and records everything in history
//! before and after each device step (DESIGN.md §3).
//!
//! One face: each request kind is one call ([`Engine::fence`], [`Engine::confirm`],
//! [`Engine::set_paused`], [`Engine::monitor_device`], the reads) that validates, records, audits
//! and counts its refusal, and answers with a typed value or [`EngineError`]; the engine speaks
//! no HTTP. The files: `request` (the calls that change something), `operation` (running one
//! operation, level by level), `step` (one device's part in a level), `monitor` (device health),
//! `audit` (the ledger's audit side and the refusal counter), `limits` (blast radius).
//!
//! Time is tokio's (`tokio::time`), so tests run with paused time; wall-clock stamps come from
//! [`Clock`], which follows tokio's clock and therefore pauses with it.

pub mod audit;
mod corroborate;
mod journal;
mod limits;
mod monitor;
mod operation;
mod request;
mod step;

use crate::config::{Config, TargetConfig};
use crate::error::EngineError;
use crate::history::History;
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

/// Who makes a request, and from where: the caller is recorded in history, the source in the
/// audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The caller's identity, as authentication established it.
    pub caller: Caller,
    /// Where the request came from (peer address, or `unix:uid=…,pid=…`).
    pub source: String,
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

/// A witness of one target as the engine holds it.
#[derive(Clone)]
pub struct WitnessSlot {
    /// The configured name (`[witnesses.NAME]`).
    pub name: String,
    /// The witness.
    pub witness: Arc<dyn drivers::witness::Witness>,
}

/// A configured witness of one target, as `/metrics` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessInfo {
    /// The target it watches.
    pub target: String,
    /// Its configured name (`[witnesses.NAME]`).
    pub name: String,
    /// Its kind (`network`, `disk-heartbeat`, `power-path`).
    pub kind: String,
    /// Why it can never observe (it could not be built), if so.
    pub unavailable: Option<String>,
}

/// Per target, its witnesses in the order its `witnesses` lists them.
pub type WitnessSlots = BTreeMap<String, Vec<WitnessSlot>>;

/// Builds every target's witnesses from the configuration. The configuration already built each
/// one when it was checked; one that fails now anyway is held as a witness that gives no
/// evidence, with the reason, so its target can never be confirmed off without it.
pub fn build_witnesses(config: &Config, devices: &BTreeMap<String, DeviceSlot>) -> WitnessSlots {
    let lookup = |name: &str| devices.get(name).map(|s| s.device.clone());
    config
        .targets
        .values()
        .filter(|t| !t.witnesses.is_empty())
        .map(|t| {
            let slots = t
                .witnesses
                .iter()
                .map(|name| {
                    let witness = match config.witnesses.get(name) {
                        Some(w) => w.kind.build(&t.name, &lookup).unwrap_or_else(|e| {
                            Arc::new(Unbuilt {
                                kind: w.kind.name(),
                                why: e,
                            })
                        }),
                        None => Arc::new(Unbuilt {
                            kind: "unknown",
                            why: format!("witness `{name}` is not configured"),
                        }),
                    };
                    WitnessSlot {
                        name: name.clone(),
                        witness,
                    }
                })
                .collect();
            (t.name.clone(), slots)
        })
        .collect()
}

/// A witness that could not be built: it only ever says why it has no evidence.
struct Unbuilt {
    kind: &'static str,
    why: String,
}

#[async_trait::async_trait]
impl drivers::witness::Witness for Unbuilt {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn describe(&self) -> String {
        format!("not built: {}", self.why)
    }

    fn unavailable(&self) -> Option<&str> {
        Some(&self.why)
    }

    async fn observe(&self, _deadline: tokio::time::Instant) -> drivers::witness::Observation {
        drivers::witness::Observation {
            verdict: drivers::witness::Verdict::NoEvidence,
            evidence: vec![drivers::witness::Evidence {
                at: SystemTime::now(),
                detail: format!(
                    "the witness could not be built: {}; fix its configuration",
                    self.why
                ),
            }],
        }
    }
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
    /// Whether the operation's first record is in history: `None` while its write is queued,
    /// then `Some(stored)`. A request that joins meanwhile waits for it, so it is never told
    /// "joined" about an operation that history refused (and that therefore never ran).
    recorded: watch::Receiver<Option<bool>>,
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
    /// Cluster operations (`node/pid#n`) whose copy has an id and is queued for history but
    /// not yet committed: a second delivery of one of them is not copied twice.
    cluster_pending: std::collections::BTreeSet<String>,
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
    /// Time from a device's off step start to its level's off standing (read back, and under
    /// `device+witness` every witness silent), by device. A vetoed "off" is not counted.
    pub device_confirm_ms: BTreeMap<String, Histogram>,
    /// Time from a witness's start to its `silent`, by (witness, kind).
    pub witness_confirm_ms: BTreeMap<(String, String), Histogram>,
    /// Witness observations by (witness, kind, verdict).
    pub witness_verdicts: BTreeMap<(String, String, String), u64>,
    /// Levels whose device read back off while a witness saw the node alive, by device.
    pub lying_devices: BTreeMap<String, u64>,
}

/// Upper bounds (ms) of [`Histogram`]'s buckets: from a fast BMC's read-back to a slow PDU's,
/// and past the default 3 s settle of the witnesses.
pub const CONFIRM_BUCKETS_MS: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 3_500, 5_000, 10_000, 20_000, 60_000,
];

/// A fixed-bucket histogram of durations in ms (Prometheus-style: cumulative when exported).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Observations at or below each bound of [`CONFIRM_BUCKETS_MS`] (not cumulative).
    pub buckets: [u64; CONFIRM_BUCKETS_MS.len()],
    /// All observations.
    pub count: u64,
    /// Their sum, ms.
    pub sum_ms: u64,
}

impl Histogram {
    /// Counts one duration.
    pub fn push(&mut self, ms: u64) {
        if let Some(i) = CONFIRM_BUCKETS_MS.iter().position(|b| ms <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_ms += ms;
    }
}

pub(crate) struct Inner {
    config: Arc<Config>,
    devices: BTreeMap<String, DeviceSlot>,
    /// Per target, its witnesses (targets with `confirm = "device+witness"`).
    witnesses: WitnessSlots,
    /// Per device, the targets whose levels use it and the identity each pins for it (if
    /// any), built once from the config: a health check looks up its own device's entries
    /// instead of walking every target (which made a check cost the size of the fleet).
    uses: HashMap<String, Vec<(String, Option<String>)>>,
    history: Arc<History>,
    journal: Arc<journal::Journal>,
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
        let witnesses = build_witnesses(&config, &devices);
        Self::with_witnesses(config, devices, witnesses, history, interrupted, clock)
    }

    /// [`Engine::new`] with the witnesses given instead of built from the configuration
    /// (tests hand in scripted ones).
    pub fn with_witnesses(
        config: Arc<Config>,
        devices: BTreeMap<String, DeviceSlot>,
        witnesses: WitnessSlots,
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
        let mut uses: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
        for t in config.targets.values() {
            let mut seen = std::collections::BTreeSet::new();
            for e in t.levels.iter().flatten() {
                if seen.insert(e.device.as_str()) {
                    uses.entry(e.device.clone())
                        .or_default()
                        .push((t.name.clone(), t.identities.get(&e.device).cloned()));
                }
            }
        }
        let history = Arc::new(history);
        let journal = journal::Journal::new(history.clone());
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
                witnesses,
                uses,
                history,
                journal,
                state: Mutex::new(State {
                    in_flight: HashMap::new(),
                    request_ids,
                    latest,
                    limiter,
                    pause,
                    device_status,
                    next_id,
                    metrics,
                    cluster_pending: std::collections::BTreeSet::new(),
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

    /// The operation as it is now.
    pub fn operation(&self, id: u64) -> Result<Operation, EngineError> {
        self.tally(self.find_operation(id))
    }

    fn find_operation(&self, id: u64) -> Result<Operation, EngineError> {
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
        self.tally((|| {
            if let Some(t) = &q.target {
                self.target(t)?;
            }
            Ok(self.inner.history.query(q)?)
        })())
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
        self.tally(
            self.inner
                .config
                .targets
                .values()
                .map(|t| self.summary(t))
                .collect(),
        )
    }

    /// One target; with `live`, also reads every level device's power state now (bounded by
    /// the target's attempt timeout).
    pub async fn target_detail(
        &self,
        name: &str,
        live: bool,
    ) -> Result<TargetSummary, EngineError> {
        let t = self.tally(self.target(name))?.clone();
        let mut s = self.tally(self.summary(&t))?;
        if live {
            s.live = Some(monitor::live_power(&self.inner, &t).await);
        }
        Ok(s)
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

    /// Every target's witnesses, target by target in the order each lists them.
    pub fn witnesses(&self) -> Vec<WitnessInfo> {
        self.inner
            .witnesses
            .iter()
            .flat_map(|(target, slots)| {
                slots.iter().map(move |s| WitnessInfo {
                    target: target.clone(),
                    name: s.name.clone(),
                    kind: s.witness.kind().to_string(),
                    unavailable: s.witness.unavailable().map(str::to_string),
                })
            })
            .collect()
    }

    /// Operations in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.state().in_flight.len()
    }
}

#[cfg(test)]
mod pace_tests;
#[cfg(test)]
mod relay_tests;
#[cfg(test)]
pub(crate) mod testdev;
#[cfg(test)]
pub(crate) mod tests;
