//! The lab: simulated devices with fault knobs, started in-process (by tests and by `palisade-lab`,
//! its demo included).
//!
//! - [`node`]: the simulated node behind a device: power state, delayed changes, power hook.
//! - [`ipmi`]: an IPMI v2.0 BMC speaking RMCP+ over UDP, built on the `drivers::ipmi` codec.
//! - [`redfish`]: a Redfish BMC over HTTPS ([`redfish::RedfishLab`]), same knobs and event log.
//! - [`snmp`]: switched PDUs over SNMP v1/v2c/v3 ([`snmp::PduLab`]), same knobs and event log.
//!
//! [`Lab::start`] binds one UDP socket per BMC on 127.0.0.1 and serves all of them from one
//! tokio task each (no thread per BMC or per packet). Each BMC has a [`BmcHandle`] to read and
//! set its node's power, flip its [`Fault`]s while a test runs, and read its recent
//! [`Event`]s. Dropping the [`Lab`] stops every BMC.

pub mod ipmi;
pub mod node;
pub mod profile;
pub mod redfish;
pub mod serial;
pub mod snmp;

use drivers::Secret;
use ipmi::{BmcConfig, BmcState};
use node::{PowerEvent, PowerHook};
use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How many events each BMC keeps (older ones are dropped first).
pub const EVENT_LOG_CAPACITY: usize = 64;

/// Locks a mutex, also when a panicking holder poisoned it: the lab's state stays usable for
/// diagnosis after a failed test.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fault knobs of one simulated device, all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Delay before each reply is sent, in milliseconds.
    pub latency_ms: u64,
    /// Share of received datagrams silently dropped, 0.0–1.0 (seeded RNG).
    pub drop: f64,
    /// Every session fails authentication (RAKP 3 is answered "invalid integrity check").
    pub refuse_auth: bool,
    /// Chassis Control is acknowledged but power never changes (a lying BMC).
    pub stuck: bool,
    /// Power up is acknowledged but the node stays off.
    pub power_on_fails: bool,
    /// Replies are replaced by random bytes, truncated or corrupted copies.
    pub garbage: bool,
    /// The device answers nothing at all and forgets its sessions (its process died).
    pub crashed: bool,
    /// Redfish: the Reset action answers 500 Internal Server Error.
    pub server_error: bool,
    /// Redfish: the Reset action answers 202 with a task that never ends.
    pub endless_task: bool,
    /// Redfish: the Reset action answers 202 with a task that ends when power has changed.
    pub async_reset: bool,
    /// Redfish: every connection is accepted and closed at once with a TCP reset.
    pub reset_connection: bool,
    /// Redfish: every connection is accepted and never answered (a hung web server).
    pub silent: bool,
    /// Redfish: `PowerState` is `null`.
    pub power_state_null: bool,
    /// Redfish: `PowerState` is missing.
    pub power_state_missing: bool,
    /// Serial PDUs: the console does not echo what is typed.
    pub echo_off: bool,
    /// Serial PDUs: delay after each byte sent, in milliseconds (a slow line).
    pub byte_delay_ms: u64,
    /// IPMI and Redfish: power commands are acknowledged and not carried out, and the power
    /// state reported is the one last asked for (a BMC answering from a cached state): it
    /// reports off while the node keeps running.
    pub lies: bool,
}

/// One fault knob set to a value; [`BmcHandle::set_fault`] applies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Reply latency in milliseconds (0 = none).
    Latency(u64),
    /// Drop this share of datagrams (clamped to 0.0–1.0).
    Drop(f64),
    /// Refuse every authentication, or stop refusing.
    RefuseAuth(bool),
    /// Acknowledge power changes without making them, or behave again.
    Stuck(bool),
    /// Acknowledge power up but stay off, or behave again.
    PowerOnFails(bool),
    /// Answer with garbage, or with valid replies again.
    Garbage(bool),
    /// Crash (stop answering, lose sessions), or revive.
    Crash(bool),
    /// Redfish: answer the Reset action with 500, or behave again.
    ServerError(bool),
    /// Redfish: answer the Reset action with a task that never ends, or behave again.
    EndlessTask(bool),
    /// Redfish: answer the Reset action with 202 and a task that ends with the power change.
    AsyncReset(bool),
    /// Redfish: reset every connection at once, or behave again.
    ResetConnection(bool),
    /// Redfish: accept connections and never answer, or behave again.
    Silent(bool),
    /// Redfish: send `"PowerState": null`, or the real state again.
    PowerStateNull(bool),
    /// Redfish: leave `PowerState` out, or send it again.
    PowerStateMissing(bool),
    /// Serial PDUs: stop echoing input, or echo again.
    EchoOff(bool),
    /// Serial PDUs: delay each byte sent by this many milliseconds (0 = none).
    SlowLine(u64),
    /// IPMI and Redfish: report the power last asked for without changing it, or behave again.
    Lies(bool),
}

impl Faults {
    /// Sets one knob.
    pub fn apply(&mut self, fault: Fault) {
        match fault {
            Fault::Latency(ms) => self.latency_ms = ms,
            Fault::Drop(p) => self.drop = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) },
            Fault::RefuseAuth(b) => self.refuse_auth = b,
            Fault::Stuck(b) => self.stuck = b,
            Fault::PowerOnFails(b) => self.power_on_fails = b,
            Fault::Garbage(b) => self.garbage = b,
            Fault::Crash(b) => self.crashed = b,
            Fault::ServerError(b) => self.server_error = b,
            Fault::EndlessTask(b) => self.endless_task = b,
            Fault::AsyncReset(b) => self.async_reset = b,
            Fault::ResetConnection(b) => self.reset_connection = b,
            Fault::Silent(b) => self.silent = b,
            Fault::PowerStateNull(b) => self.power_state_null = b,
            Fault::PowerStateMissing(b) => self.power_state_missing = b,
            Fault::EchoOff(b) => self.echo_off = b,
            Fault::SlowLine(ms) => self.byte_delay_ms = ms,
            Fault::Lies(b) => self.lies = b,
        }
    }
}

/// What `--fault` accepts, one line per knob, for `palisade-lab --help` and error messages.
pub const FAULT_KNOBS_HELP: &str = "\
Fault knobs (`--fault [NODE:]KNOB`, repeatable; without NODE: every BMC):
  latency=MS      delay every reply by MS milliseconds         --fault latency=200
  drop=P          drop a share P (0.0-1.0) of received packets --fault node1:drop=0.3
  refuse-auth     every session fails RAKP (integrity check)   --fault refuse-auth
  stuck           acknowledge chassis control, never change    --fault node2:stuck
  power-on-fails  acknowledge power on, stay off               --fault power-on-fails
  garbage         random, truncated or corrupted replies       --fault garbage
  crash           answer nothing at all (a dead BMC)           --fault node3:crash
  lies            acknowledge power changes, make none         --fault node1:lies
                  (IPMI/Redfish), and report the state asked for: off while the node runs
SNMP PDUs: crash = no reply at all (timeout); refuse-auth = every request treated as a
  wrong community (dropped) or wrong v3 digest (usmStatsWrongDigests report); stuck,
  power-on-fails, garbage, latency, drop as above; server-error = sets answer genErr.
Redfish only:
  server-error    the Reset action answers 500                 --fault server-error
  endless-task    Reset answers 202, its task never ends       --fault endless-task
  task            Reset answers 202, task ends with the change --fault task
  reset-connection  accept each connection, reset it at once   --fault reset-connection
  silent          accept connections, never answer             --fault silent
  power-state-null / power-state-missing   PowerState null or absent
Serial PDUs: garbage = noise inside every state word of a reply; silent = read, never
  answer; stuck, power-on-fails, refuse-auth, latency as above; and
  echo-off        the console does not echo what is typed      --fault echo-off
  slow-line=MS    MS milliseconds after every byte sent        --fault pdu1:slow-line=5
Switch knobs also take =on or =off (e.g. --fault node1:stuck=off).";

/// A knob as written on a command line: `[NODE:]KNOB[=VALUE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultKnob {
    /// The device it applies to (`node2`), or every device.
    pub node: Option<String>,
    /// The knob and its value.
    pub fault: Fault,
}

/// A `--fault` value that does not parse; its message lists the knobs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fault knob `{given}`: {reason}\n{FAULT_KNOBS_HELP}")]
pub struct FaultKnobError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for FaultKnob {
    type Err = FaultKnobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| FaultKnobError {
            given: s.to_string(),
            reason,
        };
        let (node, knob) = match s.split_once(':') {
            Some((n, k)) if !n.is_empty() => (Some(n.to_string()), k),
            Some(_) => return Err(err("the node name before `:` is empty".into())),
            None => (None, s),
        };
        let (name, value) = match knob.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (knob, None),
        };
        let flag = |f: fn(bool) -> Fault| match value {
            None => Ok(f(true)),
            Some("true" | "on" | "1") => Ok(f(true)),
            Some("false" | "off" | "0") => Ok(f(false)),
            Some(v) => Err(err(format!("`{name}` takes no value or on/off, not `{v}`"))),
        };
        let fault = match name {
            "latency" => {
                let v =
                    value.ok_or_else(|| err("latency needs milliseconds: latency=200".into()))?;
                let ms = v
                    .parse::<u64>()
                    .map_err(|_| err(format!("latency must be whole milliseconds, not `{v}`")))?;
                Fault::Latency(ms)
            }
            "drop" => {
                let v = value.ok_or_else(|| err("drop needs a share: drop=0.3".into()))?;
                let p = v
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| err(format!("drop must be between 0.0 and 1.0, not `{v}`")))?;
                Fault::Drop(p)
            }
            "refuse-auth" => flag(Fault::RefuseAuth)?,
            "stuck" => flag(Fault::Stuck)?,
            "power-on-fails" => flag(Fault::PowerOnFails)?,
            "garbage" => flag(Fault::Garbage)?,
            "crash" => flag(Fault::Crash)?,
            "server-error" => flag(Fault::ServerError)?,
            "endless-task" => flag(Fault::EndlessTask)?,
            "task" => flag(Fault::AsyncReset)?,
            "reset-connection" => flag(Fault::ResetConnection)?,
            "silent" => flag(Fault::Silent)?,
            "power-state-null" => flag(Fault::PowerStateNull)?,
            "power-state-missing" => flag(Fault::PowerStateMissing)?,
            "echo-off" => flag(Fault::EchoOff)?,
            "lies" => flag(Fault::Lies)?,
            "slow-line" => {
                let v = value.ok_or_else(|| {
                    err("slow-line needs milliseconds per byte: slow-line=5".into())
                })?;
                Fault::SlowLine(
                    v.parse::<u64>().map_err(|_| {
                        err(format!("slow-line must be whole milliseconds, not `{v}`"))
                    })?,
                )
            }
            other => return Err(err(format!("unknown knob `{other}`"))),
        };
        Ok(FaultKnob { node, fault })
    }
}

/// What a simulated device did, for diagnosis after a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// An ASF presence ping was answered.
    Ping,
    /// A session passed RAKP and is open.
    SessionOpened {
        /// The BMC's session id.
        session_id: u32,
        /// The user name (never a password).
        user: String,
        /// The cipher suite.
        suite: u8,
    },
    /// A session ended.
    SessionClosed {
        /// The BMC's session id.
        session_id: u32,
        /// Why: `close session`, `idle timeout`, `console rejected RAKP 2`, `crash`.
        reason: &'static str,
    },
    /// Session setup was refused with an RMCP+ status code (§13.24).
    SetupRefused {
        /// Which step: `open session`, `RAKP 1`, `RAKP 3`.
        stage: &'static str,
        /// The RMCP+ status code sent.
        status: u8,
    },
    /// A command was answered.
    Command {
        /// Network function of the request.
        net_fn: u8,
        /// Command number.
        cmd: u8,
        /// Completion code sent.
        completion_code: u8,
    },
    /// The node's power changed.
    Power(PowerEvent),
    /// The node's power was changed by hand at the chassis ([`BmcHandle::set_power_by_hand`]),
    /// not by a command: kept apart from [`EventKind::Power`] so a check of what clients did
    /// to the power can leave it out.
    PowerByHand(PowerEvent),
    /// A fault knob was changed through the handle.
    FaultSet(String),
    /// A fault changed what the device did: `dropped`, `garbage`, `stuck`, `power-on-fails`,
    /// `refuse-auth`, `crashed`.
    FaultApplied(&'static str),
    /// A datagram was discarded: malformed, failed integrity, out-of-window sequence number,
    /// unknown session.
    Discarded(&'static str),
    /// Redfish: an HTTP request was answered.
    Http {
        /// The method.
        method: String,
        /// The path (no query, no credentials).
        path: String,
        /// The status sent.
        status: u16,
    },
}

/// One entry of a device's event log; consecutive identical events share an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When the event (first) happened, since the lab started.
    pub at: Duration,
    /// How many times in a row it happened.
    pub count: u32,
    /// What happened.
    pub kind: EventKind,
}

/// A counted ring buffer of recent events (as Hubris's `counted_ringbuf!`): the last
/// [`EVENT_LOG_CAPACITY`] distinct entries (or as many as [`EventLog::set_capacity`] says),
/// repeats counted in place.
#[derive(Debug, Clone)]
pub struct EventLog {
    entries: VecDeque<Event>,
    total: u64,
    capacity: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            entries: VecDeque::new(),
            total: 0,
            capacity: EVENT_LOG_CAPACITY,
        }
    }
}

impl EventLog {
    /// Keeps the last `capacity` distinct entries from now on (at least one); a test that
    /// checks a whole run's order of events sets it above what the run records.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }

    /// Records an event at `at` (time since the lab started).
    pub fn record(&mut self, at: Duration, kind: EventKind) {
        self.total = self.total.saturating_add(1);
        if let Some(last) = self.entries.back_mut() {
            if last.kind == kind {
                last.count = last.count.saturating_add(1);
                return;
            }
        }
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(Event { at, count: 1, kind });
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> Vec<Event> {
        self.entries.iter().cloned().collect()
    }

    /// How many events were ever recorded (repeats included).
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// An IPMI user of the simulated BMCs.
#[derive(Debug, Clone)]
pub struct LabUser {
    /// User name (at most 16 bytes, §13.20).
    pub name: String,
    /// Password Kuid (at most 20 bytes).
    pub password: Secret,
    /// Highest privilege level the user may hold (2 user, 3 operator, 4 administrator).
    pub max_privilege: u8,
}

/// A GUID as ipmitool prints it: 32 hex digits, hyphenated 8-4-4-4-12.
fn guid_text_to_wire(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    // `ipmitool mc guid` prints the wire bytes reversed (see SystemGuid::to_ipmitool_string),
    // so the wire order is the printed order reversed.
    bytes.reverse();
    Some(bytes)
}

/// The GUID of BMC number `index` (1-based), as ipmitool prints it:
/// `PPPPPPPP-0000-4000-8000-NNNNNNNNNNNN`, with `prefix` (up to 8 hex digits, zero-padded on
/// the right) first and the index in hex last.
///
/// The fixed middle makes `ipmitool mc guid` recognise the IPMI encoding (§20.8: every field
/// LS byte first) and print the GUID hyphenated: ipmitool tries the IPMI, RFC 4122 and SMBIOS
/// readings and keeps one whose version nibble is valid. Read the IPMI way, the version is 4
/// (random); read the other two ways the same bytes give versions 0 and 8, which are invalid,
/// so IPMI is the only candidate. Without that, ipmitool dumps the raw bytes instead.
pub fn lab_guid(prefix: &str, index: usize) -> Result<String, String> {
    if prefix.len() > 8 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "GUID prefix `{prefix}` must be at most 8 hex digits (e.g. 5a1e1ab0)"
        ));
    }
    if index > 0xFFFF_FFFF_FFFF {
        return Err(format!(
            "BMC index {index} does not fit a GUID's last 12 digits"
        ));
    }
    Ok(format!(
        "{:0<8}-0000-4000-8000-{index:012x}",
        prefix.to_ascii_lowercase()
    ))
}

/// The default GUID prefix of lab BMCs.
pub const DEFAULT_GUID_PREFIX: &str = "5a1e1ab0";

/// What to start: how many BMCs, where, with which users, power model and faults.
#[derive(Clone)]
pub struct LabSpec {
    /// Number of BMCs, named `node1` … `nodeN`.
    pub count: usize,
    /// UDP port of `node1` (the others follow); 0 = any free port for each.
    pub base_port: u16,
    /// Users every BMC knows.
    pub users: Vec<LabUser>,
    /// Delay between a chassis control and the power change.
    pub power_delay: Duration,
    /// Whether nodes start powered on.
    pub power_on: bool,
    /// Faults every BMC starts with.
    pub faults: Faults,
    /// Idle time after which a BMC forgets a session (the spec's session inactivity timeout;
    /// real BMCs use about 60 s).
    pub session_timeout: Duration,
    /// Hex prefix of the BMCs' GUIDs (see [`lab_guid`]).
    pub guid_prefix: String,
    /// Seed of the per-BMC RNG (drop decisions, garbage, random numbers in RAKP).
    pub seed: u64,
    /// Hook called on every node's power change.
    pub power_hook: Option<PowerHook>,
    /// The vendor profile (session limit, cipher suites, status lag).
    pub profile: &'static profile::IpmiProfile,
    /// Overrides the profile's session limit.
    pub max_sessions: Option<usize>,
}

impl LabSpec {
    /// Takes a vendor profile, its transition time as the power delay included.
    pub fn with_profile(mut self, profile: &'static profile::IpmiProfile) -> Self {
        self.profile = profile;
        self.power_delay = profile.transition;
        self
    }

    /// `count` BMCs on free ports with one administrator `user`, power on, no delay, no faults.
    pub fn new(count: usize, user: impl Into<String>, password: Secret) -> Self {
        Self {
            count,
            base_port: 0,
            users: vec![LabUser {
                name: user.into(),
                password,
                max_privilege: drivers::ipmi::message::PRIV_ADMINISTRATOR,
            }],
            power_delay: Duration::ZERO,
            power_on: true,
            faults: Faults::default(),
            session_timeout: Duration::from_secs(60),
            guid_prefix: DEFAULT_GUID_PREFIX.into(),
            seed: 0x5a1e_1ab0,
            power_hook: None,
            profile: &profile::IPMI_PROFILES[0],
            max_sessions: None,
        }
    }
}

impl fmt::Debug for LabSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Users print through LabUser's Debug, whose password is a Secret (`***`).
        f.debug_struct("LabSpec")
            .field("count", &self.count)
            .field("base_port", &self.base_port)
            .field("users", &self.users)
            .field("power_delay", &self.power_delay)
            .field("power_on", &self.power_on)
            .field("faults", &self.faults)
            .field("session_timeout", &self.session_timeout)
            .field("guid_prefix", &self.guid_prefix)
            .field("seed", &self.seed)
            .field("power_hook", &self.power_hook.is_some())
            .finish()
    }
}

/// Why a lab could not start; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A UDP port could not be bound.
    #[error("cannot listen on UDP {addr}: {source}; choose another --base-port (or 0 for any free ports) or stop what holds the port")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The spec is inconsistent.
    #[error("invalid lab spec: {0}")]
    Spec(String),
    /// The background runtime could not be started.
    #[error(
        "cannot start the lab's async runtime: {0}; check the process's thread and file limits"
    )]
    Runtime(std::io::Error),
}

/// State one BMC shares between its serving task and its handles.
pub(crate) struct Shared {
    name: String,
    addr: SocketAddr,
    guid: [u8; 16],
    started: Instant,
    node: Mutex<node::Node>,
    faults: Mutex<Faults>,
    events: Mutex<EventLog>,
    hook: Mutex<Option<PowerHook>>,
    /// Incremented on every crash, so the serving state drops its sessions even when no
    /// datagram arrives while crashed.
    crash_epoch: AtomicU64,
    /// How many sessions the BMC holds, as of the last datagram it handled.
    sessions: std::sync::atomic::AtomicUsize,
    /// The most sessions it ever held at once.
    sessions_peak: std::sync::atomic::AtomicUsize,
    /// Wakes the serving task when a handle changed something it schedules around.
    wake: Notify,
}

impl Shared {
    pub(crate) fn new(cfg: &BmcConfig) -> Self {
        Self {
            name: cfg.name.clone(),
            addr: cfg.addr,
            guid: cfg.guid,
            started: Instant::now(),
            node: Mutex::new(node::Node::new(cfg.power_on, cfg.power_delay)),
            faults: Mutex::new(cfg.faults),
            events: Mutex::new(EventLog::default()),
            hook: Mutex::new(cfg.power_hook.clone()),
            crash_epoch: AtomicU64::new(0),
            sessions: std::sync::atomic::AtomicUsize::new(0),
            sessions_peak: std::sync::atomic::AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    pub(crate) fn record(&self, kind: EventKind) {
        let at = self.started.elapsed();
        lock(&self.events).record(at, kind);
    }

    pub(crate) fn faults(&self) -> Faults {
        *lock(&self.faults)
    }

    pub(crate) fn crash_epoch(&self) -> u64 {
        self.crash_epoch.load(Ordering::Relaxed)
    }

    pub(crate) fn with_node<R>(&self, f: impl FnOnce(&mut node::Node) -> R) -> R {
        f(&mut lock(&self.node))
    }

    /// Applies due power changes, logs them and calls the hook outside the lock.
    pub(crate) fn settle(&self, now: Instant) {
        let events = self.with_node(|n| n.settle(now));
        self.emit_as(events, EventKind::Power);
    }

    /// Logs power changes (as `kind` says: by command, or by hand) and calls the hook
    /// outside the lock.
    fn emit_as(&self, events: Vec<PowerEvent>, kind: fn(PowerEvent) -> EventKind) {
        if events.is_empty() {
            return;
        }
        let hook = lock(&self.hook).clone();
        for e in events {
            self.record(kind(e));
            if let Some(h) = &hook {
                h(&self.name, e);
            }
        }
    }

    pub(crate) fn next_change(&self) -> Option<Instant> {
        self.with_node(|n| n.next_change())
    }
}

/// A handle on one running simulated BMC (cheap to clone).
#[derive(Clone)]
pub struct BmcHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for BmcHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcHandle")
            .field("name", &self.shared.name)
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl BmcHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The BMC's name (`node1` …).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The UDP address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Its UDP port.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// Its system GUID in wire order (as Get System GUID and RAKP 2 carry it).
    pub fn guid(&self) -> [u8; 16] {
        self.shared.guid
    }

    /// Its system GUID as `ipmitool mc guid` prints it.
    pub fn guid_text(&self) -> String {
        drivers::ipmi::message::SystemGuid {
            guid: self.shared.guid,
        }
        .to_ipmitool_string()
    }

    /// Whether the node's power is on now (due changes applied first).
    pub fn power(&self) -> bool {
        self.shared.settle(Instant::now());
        self.shared.with_node(|n| n.is_on())
    }

    /// Whether a requested power change has not taken effect yet.
    pub fn power_changing(&self) -> bool {
        self.shared.settle(Instant::now());
        self.shared.with_node(|n| n.is_changing())
    }

    /// Sets the node's power at once (cancelling scheduled changes); the hook is called if
    /// the state changes.
    pub fn set_power(&self, on: bool) {
        let event = self.shared.with_node(|n| n.force(on));
        self.shared
            .emit_as(event.into_iter().collect(), EventKind::Power);
        self.shared.wake.notify_one();
    }

    /// Sets the node's power at once as a hand at the chassis does (a pulled cord, the
    /// power button), cancelling scheduled changes; the hook is called if the state changes,
    /// and the log says [`EventKind::PowerByHand`], so the change is told apart from one a
    /// client's command made.
    pub fn set_power_by_hand(&self, on: bool) {
        let event = self.shared.with_node(|n| n.force(on));
        self.shared
            .emit_as(event.into_iter().collect(), EventKind::PowerByHand);
        self.shared.wake.notify_one();
    }

    /// Keeps the last `capacity` distinct events from now on (default
    /// [`EVENT_LOG_CAPACITY`]): a test that checks the order of a whole run's events sets
    /// it above what the run records.
    pub fn set_event_capacity(&self, capacity: usize) {
        lock(&self.shared.events).set_capacity(capacity);
    }

    /// Changes the delay of later power changes.
    pub fn set_power_delay(&self, delay: Duration) {
        self.shared.with_node(|n| n.set_delay(delay));
    }

    /// Installs (or removes) the hook called on this node's power changes.
    pub fn set_power_hook(&self, hook: Option<PowerHook>) {
        *lock(&self.shared.hook) = hook;
    }

    /// The current fault knobs.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Sets one fault knob; takes effect with the next datagram (a crash also drops every
    /// session at once, and replies still waiting out their latency are not sent).
    pub fn set_fault(&self, fault: Fault) {
        let was_crashed = {
            let mut f = lock(&self.shared.faults);
            let was = f.crashed;
            f.apply(fault);
            was
        };
        if fault == Fault::Crash(true) && !was_crashed {
            self.shared.crash_epoch.fetch_add(1, Ordering::Relaxed);
        }
        self.shared
            .record(EventKind::FaultSet(format!("{fault:?}")));
        self.shared.wake.notify_one();
    }

    /// Replaces every fault knob.
    pub fn set_faults(&self, faults: Faults) {
        let crash = faults.crashed && !lock(&self.shared.faults).crashed;
        *lock(&self.shared.faults) = faults;
        if crash {
            self.shared.crash_epoch.fetch_add(1, Ordering::Relaxed);
        }
        self.shared
            .record(EventKind::FaultSet(format!("{faults:?}")));
        self.shared.wake.notify_one();
    }

    /// The recent events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.shared.events).entries()
    }

    /// How many sessions the BMC holds (in any stage), as of the last datagram it handled.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.load(Ordering::Relaxed)
    }

    /// The most sessions the BMC ever held at once (a session-limit test checks that a
    /// client never went past the limit).
    pub fn sessions_peak(&self) -> usize {
        self.shared.sessions_peak.load(Ordering::Relaxed)
    }

    /// How many events were recorded since start (repeats included).
    pub fn event_total(&self) -> u64 {
        lock(&self.shared.events).total()
    }
}

/// A running set of simulated devices; dropping it stops them all.
#[derive(Debug)]
pub struct Lab {
    bmcs: Vec<BmcHandle>,
    tasks: LabTasks,
}

/// The serving tasks of a lab: aborted when the lab is dropped; [`LabTasks::shutdown`] also
/// waits until they are gone (their sockets closed).
#[derive(Debug, Default)]
pub(crate) struct LabTasks(Vec<JoinHandle<()>>);

impl LabTasks {
    /// Room for `n` tasks.
    pub(crate) fn with_capacity(n: usize) -> Self {
        LabTasks(Vec::with_capacity(n))
    }

    /// Adds a serving task.
    pub(crate) fn push(&mut self, t: JoinHandle<()>) {
        self.0.push(t);
    }

    /// Aborts every task and waits for each to end.
    pub(crate) async fn shutdown(&mut self) {
        let tasks = std::mem::take(&mut self.0);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for LabTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Applies `knob` to the device it names among `devices` (by `name`), or to all of them;
/// `false` if it names none here. Shared by the IPMI and Redfish labs.
pub(crate) fn apply_knob<D>(
    devices: &[D],
    name: impl Fn(&D) -> &str,
    set: impl Fn(&D, Fault),
    knob: &FaultKnob,
) -> bool {
    match &knob.node {
        Some(n) => match devices.iter().find(|d| name(d) == n) {
            Some(d) => {
                set(d, knob.fault);
                true
            }
            None => false,
        },
        None => {
            devices.iter().for_each(|d| set(d, knob.fault));
            true
        }
    }
}

impl Lab {
    /// Binds and starts `spec.count` BMCs on 127.0.0.1 and returns once all are listening.
    /// Must be called inside a tokio runtime (the BMCs run as tasks on it).
    pub async fn start(spec: LabSpec) -> Result<Lab, LabError> {
        if spec.users.is_empty() {
            return Err(LabError::Spec("at least one user is needed".into()));
        }
        if let Some(u) = spec.users.iter().find(|u| u.name.len() > 16) {
            return Err(LabError::Spec(format!(
                "user name `{}` is longer than the 16 bytes IPMI allows",
                u.name
            )));
        }
        if spec.users.iter().any(|u| u.password.expose().len() > 20) {
            return Err(LabError::Spec(
                "a password is longer than the 20 bytes IPMI 2.0 allows".into(),
            ));
        }
        let mut lab = Lab {
            bmcs: Vec::with_capacity(spec.count),
            tasks: LabTasks::with_capacity(spec.count),
        };
        for i in 1..=spec.count {
            let port = if spec.base_port == 0 {
                0
            } else {
                u16::try_from(usize::from(spec.base_port) + i - 1).map_err(|_| {
                    LabError::Spec(format!(
                        "base port {} + {} BMCs runs past port 65535",
                        spec.base_port, spec.count
                    ))
                })?
            };
            let want: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
            let socket = tokio::net::UdpSocket::bind(want)
                .await
                .map_err(|source| LabError::Bind { addr: want, source })?;
            let addr = socket
                .local_addr()
                .map_err(|source| LabError::Bind { addr: want, source })?;
            let guid_text = lab_guid(&spec.guid_prefix, i).map_err(LabError::Spec)?;
            let guid = guid_text_to_wire(&guid_text)
                .ok_or_else(|| LabError::Spec(format!("bad GUID {guid_text}")))?;
            let cfg = BmcConfig {
                name: format!("node{i}"),
                addr,
                guid,
                users: spec.users.clone(),
                power_on: spec.power_on,
                power_delay: spec.power_delay,
                session_timeout: spec.session_timeout,
                faults: spec.faults,
                seed: spec.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                power_hook: spec.power_hook.clone(),
                profile: spec.profile,
                max_sessions: spec.max_sessions.unwrap_or(spec.profile.max_sessions),
            };
            let state = BmcState::new(cfg);
            lab.bmcs.push(state.handle());
            lab.tasks.push(tokio::spawn(ipmi::serve(socket, state)));
        }
        Ok(lab)
    }

    /// The BMCs, `node1` first.
    pub fn bmcs(&self) -> &[BmcHandle] {
        &self.bmcs
    }

    /// The BMC with this name.
    pub fn bmc(&self, name: &str) -> Option<&BmcHandle> {
        self.bmcs.iter().find(|b| b.name() == name)
    }

    /// Applies a knob to the BMC it names, or to all; `false` if it names no BMC here.
    pub fn apply(&self, knob: &FaultKnob) -> bool {
        apply_knob(&self.bmcs, |b| b.name(), |b, f| b.set_fault(f), knob)
    }

    /// Stops every BMC and waits until their sockets are closed.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// A lab on its own small runtime (one worker thread for all its BMCs), for synchronous tests
/// and programs that have no runtime; stops on drop like [`Lab`].
#[derive(Debug)]
pub struct BackgroundLab {
    lab: Lab,
    /// Always `Some` until drop.
    rt: Option<tokio::runtime::Runtime>,
}

impl BackgroundLab {
    /// Starts the lab and returns once every BMC listens.
    pub fn start(spec: LabSpec) -> Result<Self, LabError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("palisade-lab")
            .enable_all()
            .build()
            .map_err(LabError::Runtime)?;
        let lab = rt.block_on(Lab::start(spec))?;
        Ok(Self { lab, rt: Some(rt) })
    }
}

impl std::ops::Deref for BackgroundLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl Drop for BackgroundLab {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Cancels every BMC task and closes their sockets. Unlike a plain drop of the
            // runtime, this is also allowed inside another runtime.
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_parse_and_bad_ones_explain() {
        let k: FaultKnob = "node2:stuck".parse().unwrap();
        assert_eq!(
            k,
            FaultKnob {
                node: Some("node2".into()),
                fault: Fault::Stuck(true)
            }
        );
        assert_eq!(
            "latency=200".parse::<FaultKnob>().unwrap().fault,
            Fault::Latency(200)
        );
        assert_eq!(
            "node1:drop=0.3".parse::<FaultKnob>().unwrap().fault,
            Fault::Drop(0.3)
        );
        assert_eq!(
            "crash=off".parse::<FaultKnob>().unwrap().fault,
            Fault::Crash(false)
        );
        for bad in [
            "drop=1.5",
            "latency",
            "latency=x",
            "wobble",
            ":stuck",
            "stuck=maybe",
        ] {
            let e = bad.parse::<FaultKnob>().unwrap_err().to_string();
            assert!(e.contains("refuse-auth") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn guids_round_trip_through_ipmitool_order() {
        let g = lab_guid(DEFAULT_GUID_PREFIX, 2).unwrap();
        assert_eq!(g, "5a1e1ab0-0000-4000-8000-000000000002");
        assert_eq!(
            lab_guid("ab", 0x1f).unwrap(),
            "ab000000-0000-4000-8000-00000000001f"
        );
        let wire = guid_text_to_wire(&g).unwrap();
        assert_eq!(
            drivers::ipmi::message::SystemGuid { guid: wire }.to_ipmitool_string(),
            g
        );
        assert!(lab_guid("xyz", 1).is_err());
        assert!(lab_guid("123456789", 1).is_err());
    }

    #[test]
    fn event_log_counts_repeats_and_keeps_the_last_64() {
        let mut log = EventLog::default();
        log.record(Duration::ZERO, EventKind::Ping);
        log.record(Duration::ZERO, EventKind::Ping);
        assert_eq!(log.entries().len(), 1);
        assert_eq!(log.entries()[0].count, 2);
        for i in 0..100u8 {
            log.record(
                Duration::ZERO,
                EventKind::Command {
                    net_fn: 0,
                    cmd: i,
                    completion_code: 0,
                },
            );
        }
        assert_eq!(log.entries().len(), EVENT_LOG_CAPACITY);
        assert_eq!(log.total(), 102);
    }

    #[test]
    fn event_log_keeps_as_many_as_its_capacity_says() {
        let mut log = EventLog::default();
        log.set_capacity(1000);
        for i in 0..500u16 {
            log.record(
                Duration::ZERO,
                EventKind::Command {
                    net_fn: 0,
                    cmd: (i % 256) as u8,
                    completion_code: (i / 256) as u8,
                },
            );
        }
        assert_eq!(log.entries().len(), 500);
        log.set_capacity(10);
        let e = log.entries();
        assert_eq!(e.len(), 10);
        // The newest are kept.
        assert_eq!(
            e[9].kind,
            EventKind::Command {
                net_fn: 0,
                cmd: (499 % 256) as u8,
                completion_code: 1
            }
        );
    }
}
