//! The values the engine, the history and the API share: operations, attempts, outcomes.
//!
//! These types are the API's JSON and the history's stored form, so changing a field is an API
//! change (the OpenAPI document test will say so).

use drivers::PowerState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = u64;

/// A fencing action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Power the target off and confirm it.
    Off,
    /// Power off, confirm off, then power on (never a device power cycle).
    Reboot,
    /// Power the target on (unfence).
    On,
}

impl Action {
    /// Parses `off`, `reboot` or `on`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Action::Off),
            "reboot" => Some(Action::Reboot),
            "on" => Some(Action::On),
            _ => None,
        }
    }

    /// Whether this action fences (takes power away).
    pub fn fences(self) -> bool {
        matches!(self, Action::Off | Action::Reboot)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Off => "off",
            Action::Reboot => "reboot",
            Action::On => "on",
        })
    }
}

/// Where an operation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Accepted, waiting out the target's fence-race delay.
    Delayed,
    /// Devices are being driven.
    Running,
    /// Finished with the result confirmed (see [`Outcome`]).
    Succeeded,
    /// Finished without confirmation; the target must be treated as NOT fenced.
    Failed,
}

impl OpState {
    /// Whether the operation has finished.
    pub fn is_terminal(self) -> bool {
        matches!(self, OpState::Succeeded | OpState::Failed)
    }
}

impl fmt::Display for OpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpState::Delayed => "delayed",
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
        })
    }
}

/// Which half of an action a device step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Taking power away and reading it back as off.
    Off,
    /// Restoring power and reading it back as on.
    On,
}

/// The result of one device's part in one level try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StepResult {
    /// The device's power state was read back as expected.
    Confirmed {
        /// The state that was read back.
        #[schemars(with = "String")]
        state: PowerState,
        /// The state was already the expected one before any command was sent.
        already: bool,
        /// How many status reads it took after the command.
        polls: u32,
        /// The identity the device reported and that matched the target's pinned one
        /// (`system-guid 5a1e…`), when the target pins one.
        #[serde(default)]
        identity: Option<String>,
        /// For poison-pill devices: the pill that was written, read back and waited out
        /// (then `state` is `off` by msgwait, not by a power reading).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pill: Option<PillProof>,
        /// How the device's read-back proves the state, when its driver says more than "power
        /// read back" (a relay line without a sense line: `relay output read back, no sense
        /// line`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        basis: Option<String>,
    },
    /// The step failed; the device must not be counted as having acted.
    Failed {
        /// Stable error code (`timeout`, `stuck`, `identity_mismatch`, ...).
        code: String,
        /// What happened, for operators.
        message: String,
    },
}

impl StepResult {
    /// Whether the step reached its confirmation.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, StepResult::Confirmed { .. })
    }
}

/// A poison pill written to a target's slot on shared disks, and its msgwait waited out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PillProof {
    /// `off` or `reset`.
    pub kind: String,
    /// Disks the pill was written to and read back from.
    pub written: u32,
    /// Disks configured.
    pub disks: u32,
    /// The msgwait that elapsed after the write (monotonic clock), in milliseconds.
    pub msgwait_ms: u64,
}

/// One device's part in one try of one topology level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    /// The level (1-based, in the target's configured order).
    pub level: u32,
    /// The device's configured name.
    pub device: String,
    /// The outlet or port on the device, for multi-node devices.
    pub port: Option<String>,
    /// Off or on.
    pub phase: Phase,
    /// When the step started.
    pub started_ms: Millis,
    /// When the step ended.
    pub finished_ms: Millis,
    /// What came of it.
    #[serde(flatten)]
    pub result: StepResult,
    /// When witnesses overruled this device's read-back (the result is then a failure,
    /// `witness_alive` or `witness_no_evidence`): what the device read back, then what each
    /// witness of the level concluded. Absent on every other attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overruled: Option<Overruled>,
}

/// The device's side of an attempt that witnesses overruled, kept as a record rather than
/// only as words in the failure's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Overruled {
    /// The device's read-back as the step recorded it before the witnesses were asked (a
    /// `confirmed` result: state, polls, identity, basis).
    pub read_back: StepResult,
    /// Each witness's verdict at this level, in the order they were asked (their evidence is
    /// in the operation's `witnesses`).
    pub witnesses: Vec<OverrulingVerdict>,
}

/// One witness's verdict on the level whose read-back it overruled (or agreed with, when
/// another witness overruled it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OverrulingVerdict {
    /// The witness's configured name.
    pub witness: String,
    /// Its kind.
    pub kind: String,
    /// What it concluded.
    pub verdict: WitnessVerdict,
}

/// A device command that may go out, recorded durably before it is sent: if fenced dies before
/// the step finishes, recovery turns it into an `interrupted` attempt saying the command may
/// have reached the device (a crash must not make history silent about a power command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingStep {
    /// The level (1-based).
    pub level: u32,
    /// The device's configured name.
    pub device: String,
    /// The outlet or port on the device, for multi-node devices.
    pub port: Option<String>,
    /// Off or on.
    pub phase: Phase,
    /// What may be sent (`power off`, `power on`, `poison pill off`, `slot clear`).
    pub command: String,
    /// When it was recorded; the command goes out at this time or later.
    pub since_ms: Millis,
}

impl PendingStep {
    /// `bmc-node1` or `pdu1:3`.
    pub fn device_label(&self) -> String {
        match &self.port {
            Some(p) => format!("{}:{p}", self.device),
            None => self.device.clone(),
        }
    }
}

/// A UTC time as `2026-12-06T20:41:26.123Z` (for operator messages; JSON fields stay in ms).
pub fn utc_text(ms: Millis) -> String {
    // H. Hinnant's civil_from_days: days since 1970-01-01 to a proleptic Gregorian date.
    let days = (ms / 86_400_000) as i64;
    let rem = ms % 86_400_000;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// How a success was confirmed. There is no other way to succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Confirmation {
    /// Every device of `level` read the power state back as expected.
    PowerReadBack {
        /// The level that acted.
        level: u32,
        /// The devices (and ports) whose state was read back.
        devices: Vec<String>,
        /// Every device already reported the expected state before any command.
        already: bool,
    },
    /// A poison pill was written to the target's slot on a majority of the shared disks, read
    /// back, and its msgwait elapsed: the target's watcher (or, if it hung, its hardware
    /// watchdog) has taken it down by then.
    PoisonPill {
        /// The level that acted.
        level: u32,
        /// The devices (disk sets) that carried the pill.
        devices: Vec<String>,
        /// The longest msgwait waited out, in milliseconds.
        msgwait_ms: u64,
    },
    /// For `on` through SBD disks: the target's slot was cleared and read back on a majority
    /// of the disks (its watcher will let it run; nothing reads its power state).
    SlotCleared {
        /// The level that acted.
        level: u32,
        /// The devices (disk sets).
        devices: Vec<String>,
    },
    /// An operator confirmed by hand that the target is off.
    Manual {
        /// Who confirmed.
        by: String,
        /// Why they are sure.
        reason: String,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The action was confirmed.
    Succeeded {
        /// How it was confirmed.
        confirmation: Confirmation,
        /// For reboot: whether the target's power came back on. `Some(false)` means the target
        /// is fenced (off, confirmed) but did not come back.
        powered_on: Option<bool>,
        /// One line for operators.
        summary: String,
    },
    /// The action was not confirmed: the target must be treated as NOT fenced.
    Failed {
        /// Stable code: `all_levels_failed`, `timeout`, `interrupted`, `no_levels`, ...
        code: String,
        /// One line for operators, naming each level's failure.
        message: String,
    },
}

/// Who asked for something, as established by the API's authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Caller {
    /// An identity such as `uid:0`, `uid:1000` or `tcp:127.0.0.1:5500`.
    pub identity: String,
}

impl Caller {
    /// A caller inside the daemon itself (start-up recovery, the demo).
    pub fn internal(what: &str) -> Self {
        Caller {
            identity: format!("fenced:{what}"),
        }
    }
}

/// A fencing operation: one action on one target, from request to outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Operation {
    /// Unique, increasing id.
    pub id: u64,
    /// The target node.
    pub target: String,
    /// The action.
    pub action: Action,
    /// Why it was requested (free text from the caller).
    pub reason: String,
    /// Who requested it.
    pub requested_by: Caller,
    /// The caller's idempotency key, if it gave one.
    pub request_id: Option<String>,
    /// Current state.
    pub state: OpState,
    /// When it was accepted.
    pub created_ms: Millis,
    /// When the first device step started (after any delay).
    pub started_ms: Option<Millis>,
    /// When it finished.
    pub finished_ms: Option<Millis>,
    /// The fence-race delay that was applied, in milliseconds.
    pub delay_ms: u64,
    /// Every device step, in order.
    pub attempts: Vec<Attempt>,
    /// Commands recorded as about to be sent whose step has not finished yet (empty once the
    /// operation has finished). Absent in history written before fenced recorded them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingStep>,
    /// What each witness observed after a level's devices read back off (targets with
    /// `confirm = "device+witness"`). Absent in history written before witnesses existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<WitnessReport>,
    /// How it ended, once it has.
    pub outcome: Option<Outcome>,
    /// For an operation agreed by the fencer cluster: which cluster operation it is and who
    /// originated and executed it (every member keeps its own copy). Absent outside a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Box<ClusterOrigin>>,
}

/// Where a cluster-agreed operation came from: the same on every member's copy of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterOrigin {
    /// The cluster operation (`node/pid#n`: the originating member and its claim number);
    /// each member's history holds one record per cluster operation.
    pub op: String,
    /// The member (node name) whose API received the request.
    pub origin: String,
    /// The member (node name) that executed it last (after any takeover).
    pub executor: String,
}

/// One witness's observation of the target after one level's devices read back off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WitnessReport {
    /// The level whose "off" was being corroborated.
    pub level: u32,
    /// The witness's configured name.
    pub witness: String,
    /// Its kind (`network`, `disk-heartbeat`, `power-path`).
    pub kind: String,
    /// What it watched (addresses, disk slot, outlet).
    pub watched: String,
    /// What it concluded.
    pub verdict: WitnessVerdict,
    /// When the observation started.
    pub started_ms: Millis,
    /// When it ended.
    pub finished_ms: Millis,
    /// What it saw, oldest first.
    pub evidence: Vec<WitnessEvidence>,
}

/// What one witness concluded (only `silent` from every witness lets the device's "off" stand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WitnessVerdict {
    /// No sign of life for its whole settle time: no objection.
    Silent,
    /// A sign of life after the device reported off: a veto.
    Alive,
    /// It could not observe (error, timeout): never taken as off.
    NoEvidence,
}

impl From<drivers::witness::Verdict> for WitnessVerdict {
    fn from(v: drivers::witness::Verdict) -> Self {
        match v {
            drivers::witness::Verdict::Silent => WitnessVerdict::Silent,
            drivers::witness::Verdict::Alive => WitnessVerdict::Alive,
            drivers::witness::Verdict::NoEvidence => WitnessVerdict::NoEvidence,
        }
    }
}

/// One thing a witness saw, with when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WitnessEvidence {
    /// When it was seen (Unix ms).
    pub at_ms: Millis,
    /// What was seen.
    pub detail: String,
}

impl Operation {
    /// Whether this operation proves the target is off (a confirmed off or reboot, or a manual
    /// confirmation).
    pub fn fenced(&self) -> bool {
        self.action.fences() && matches!(self.outcome, Some(Outcome::Succeeded { .. }))
    }

    /// Duration from acceptance to finish, if finished.
    pub fn elapsed_ms(&self) -> Option<u64> {
        self.finished_ms.map(|f| f.saturating_sub(self.created_ms))
    }
}

/// Something that happened, published to `/v1/events` subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An operation changed (new, state change, new attempt, finished).
    Operation {
        /// The operation as it is now.
        operation: Box<Operation>,
    },
    /// Fencing was paused or resumed.
    Pause {
        /// Whether new operations are refused now.
        paused: bool,
        /// Who did it.
        by: String,
        /// Why.
        reason: String,
    },
}

/// `POST /v1/fence` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FenceRequest {
    /// The target node, as named in the configuration.
    pub target: String,
    /// What to do.
    pub action: Action,
    /// Why (recorded in history).
    #[serde(default)]
    pub reason: String,
    /// Idempotency key: the same key returns the same operation while it is in flight or
    /// recently finished with no later operation on the target.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Overall deadline in seconds, if shorter than the target's configured one.
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// `POST /v1/fence` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FenceAccepted {
    /// The operation's id.
    pub id: u64,
    /// Its state now.
    pub state: OpState,
    /// The request joined an operation already in flight (or recently finished with the same
    /// request id) instead of starting a new one.
    pub joined: bool,
}

/// A device's identity as reported by the device (mirror of `drivers::Identity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceIdentity {
    /// What kind of identifier (`system-guid`, `uuid`, `serial`).
    pub kind: String,
    /// The identifier.
    pub value: String,
    /// Vendor, model, firmware, as the device describes itself.
    pub description: String,
}

impl From<drivers::Identity> for DeviceIdentity {
    fn from(i: drivers::Identity) -> Self {
        DeviceIdentity {
            kind: i.kind,
            value: i.value,
            description: i.description,
        }
    }
}

/// What the last health check of a device found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Not checked yet.
    Unknown,
    /// Answered, and its identity matches every target that pins one.
    Healthy,
    /// Did not answer, refused us, or reported an identity a target does not expect.
    Unhealthy,
}

/// A device as `GET /v1/devices` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceSummary {
    /// Configured name.
    pub name: String,
    /// Kind (`ipmi`, ...).
    pub kind: String,
    /// Where it is (address:port), never credentials.
    pub address: String,
    /// Targets whose levels use it.
    pub targets: Vec<String>,
    /// Last health check result.
    pub health: HealthState,
    /// What the device said it is, at the last check.
    pub identity: Option<DeviceIdentity>,
    /// Why it is unhealthy, if it is.
    pub error: Option<String>,
    /// When it was last checked.
    pub checked_ms: Option<Millis>,
    /// What an operator should know about how it is driven (e.g. an agent that exposes its
    /// password on another program's command line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Outlets of a multi-outlet device (a PDU) with their names, as read at the last check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlets: Vec<OutletSummary>,
}

/// One outlet of a PDU as its last health check listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutletSummary {
    /// The outlet's number (what `DEVICE:NUMBER` addresses).
    pub id: String,
    /// Its name on the device (what `DEVICE:NAME` addresses).
    pub name: Option<String>,
    /// Its power state at the check (`on`, `off`, ...).
    pub state: Option<String>,
}

/// One device entry of a topology level, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LevelDevice {
    /// Device name.
    pub device: String,
    /// Port or outlet on the device, for multi-node devices.
    pub port: Option<String>,
    /// The identity the device must report for this target, if pinned.
    pub expected_identity: Option<String>,
}

/// A live power reading of one level device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LivePower {
    /// The level (1-based).
    pub level: u32,
    /// Device name.
    pub device: String,
    /// Port, if any.
    pub port: Option<String>,
    /// The state read, if the read succeeded.
    #[schemars(with = "Option<String>")]
    pub state: Option<PowerState>,
    /// Why the read failed, if it did.
    pub error: Option<String>,
}

/// A target as `GET /v1/targets` and `GET /v1/targets/{t}` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TargetSummary {
    /// Node name.
    pub name: String,
    /// Topology levels in order; each is a list of devices that must all succeed.
    pub levels: Vec<Vec<LevelDevice>>,
    /// Fixed fence-race delay, seconds.
    pub delay_s: f64,
    /// Upper bound of the random extra delay, seconds.
    pub random_delay_s: f64,
    /// The operation in flight, if any.
    pub in_flight: Option<u64>,
    /// The most recent finished operation, if any.
    pub last_operation: Option<Operation>,
    /// Live power readings (only on `GET /v1/targets/{t}`, with `?live=true`).
    pub live: Option<Vec<LivePower>>,
}

/// Pause switch state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PauseStatus {
    /// Whether new operations are refused.
    pub paused: bool,
    /// Who last changed it.
    pub by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub since_ms: Option<Millis>,
}

/// `GET /healthz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthReport {
    /// `ok` when the daemon is serving and its history is writable.
    pub status: String,
    /// Daemon version.
    pub version: String,
    /// Whether fencing is paused.
    pub paused: bool,
    /// Operations in flight.
    pub in_flight: u32,
    /// Operations recorded as interrupted at the last start-up.
    pub interrupted_at_startup: u32,
}

/// A history query (`GET /v1/history?target=&since_ms=&until_ms=&limit=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryQuery {
    /// Only this target.
    #[serde(default)]
    pub target: Option<String>,
    /// Only operations created at or after this time.
    #[serde(default)]
    pub since_ms: Option<Millis>,
    /// Only operations created before this time.
    #[serde(default)]
    pub until_ms: Option<Millis>,
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}
