//! Simulated switched PDUs speaking SNMP v1, v2c and v3 (USM, SHA/AES) over UDP, with APC and
//! Tripp Lite outlet tables ([`drivers::pdu::model`]) and the lab's fault knobs.
//!
//! It uses the driver's BER/message codec and USM crypto in the agent role. That sharing is
//! why the format is proved elsewhere: net-snmp's `snmpget`/`snmpset`/`snmpwalk` and
//! ClusterLabs `fence_apc_snmp` drive this simulator, and the driver drives net-snmp's own
//! `snmpd` (`hw-tests/tests/snmp_peers.rs`), so a mistake shared by both sides would show.
//!
//! Agent behaviour follows the RFCs where a client can see it: a request with a wrong
//! community is dropped silently and counted in snmpInBadCommunityNames (RFC 3584 §4.1 /
//! SNMPv2-MIB); a v3 request from an unknown user, with a wrong digest, an unsupported
//! security level, outside the time window or with an unknown engine id is answered with the
//! matching usmStats report (RFC 3414 §3.2) when the request is reportable.

use super::node::{Node, PowerAction};
use super::{lock, EventKind, EventLog, Fault, FaultKnob, Faults, LabError, LabTasks};
use drivers::pdu::ber::Oid;
use drivers::pdu::client::usm_stats;
use drivers::pdu::message::{
    decode_message, encode_community, encode_v3, error_status, flags, Message, Pdu, PduType,
    ScopedData, ScopedPdu, UsmParams, V3Message, Value, Version,
};
use drivers::pdu::model::{self, Model};
use drivers::pdu::usm::{localize, AuthProtocol, LocalKey};
use drivers::Secret;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// snmpInBadCommunityNames.0 (SNMPv2-MIB).
pub const SNMP_IN_BAD_COMMUNITY_NAMES: &str = "1.3.6.1.2.1.11.4.0";
/// How far a v3 request's engine time may be from ours (RFC 3414 §3.2.7).
const TIME_WINDOW: i64 = 150;

/// A control value that the PDU accepts as "switch later": the outlet changes `after` the
/// command was acknowledged (APC delayedOn/delayedOff, Sentry4 queueOn/queueOff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayedCommand {
    /// The control value.
    pub value: i64,
    /// Whether it switches on.
    pub on: bool,
    /// How long after the acknowledgement the outlet changes.
    pub after: Duration,
}

/// Sentry4-MIB's queued outlet actions: st4OutletControlAction queueOn(4)/queueOff(5) only
/// mark the outlet; setting the scalar st4OutletQueueControl (.1718.4.1.8.6.1) to commit(1)
/// carries out every queued action, clear(0) discards them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCommands {
    /// The control value that queues an on.
    pub on: i64,
    /// The control value that queues an off.
    pub off: i64,
    /// The queue-control scalar's OID (without `.0`).
    pub control: &'static str,
    /// The queue-control value that carries out the queue.
    pub commit: i64,
    /// The queue-control value that empties the queue.
    pub clear: i64,
}

/// The values of a control-state column (Sentry4-MIB st4OutletControlState, .8.5.1.1, in
/// st4OutletControlTable beside st4OutletControlAction; OutletControlState notSet(0) ...
/// pendOn(8), pendOff(9), off(10), on(11), reboot(12) ... eventShutdown(19)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlState {
    /// The column's OID (the model's index prefix and the outlet follow).
    pub column: &'static str,
    /// The outlet is on.
    pub on: i64,
    /// The outlet is off.
    pub off: i64,
    /// An on was acknowledged and has not happened yet.
    pub pend_on: i64,
    /// An off was acknowledged and has not happened yet.
    pub pend_off: i64,
}

/// How a PDU family behaves in the lab (`palisade-lab snmp-pdu --profile NAME`): its MIB
/// (a [`Model`] of the driver's table) and the quirks a fencer meets. Values no public source
/// gave say "no public source found" and why they were chosen: they make the profile
/// exercise a code path, they are not a claim about the vendor. Every quirk can also be set by hand (`--power-delay-ms`,
/// `--model`, `--community`, `--read-community`, the fault knobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduProfile {
    /// `--profile` name.
    pub name: &'static str,
    /// One line for `--help`.
    pub summary: &'static str,
    /// The driver model (OID table) it serves, `--model` for `fenced`'s `snmp-pdu` device.
    pub model: &'static str,
    /// How long an acknowledged immediate command takes to change the outlet; meanwhile
    /// the state column reads the old state, or the model's pending value.
    pub switch_delay: Duration,
    /// Control values accepted as delayed commands.
    pub delayed: &'static [DelayedCommand],
    /// The control value that cancels a pending command (APC cancelPendingCommand(7)).
    pub cancel: Option<i64>,
    /// The control columns take seconds until the command acts (0 immediate, -1 cancels,
    /// reads -1 when nothing is pending): Eaton's outletControl{Off,On}Cmd.
    pub seconds_commands: bool,
    /// A column reading commandPending(1) / noCommandPending(2) per outlet (APC
    /// rPDUOutletStatusCommandPending).
    pub command_pending: Option<&'static str>,
    /// A column beside the control action reading the outlet's control state, with
    /// pending values while a command waits (Sentry4-MIB st4OutletControlState).
    pub control_state: Option<ControlState>,
    /// Queued actions (Sentry4-MIB queueOn/queueOff), carried out only on a commit.
    pub queue: Option<QueueCommands>,
    /// The factory read-only community.
    pub read_community: &'static str,
    /// The factory read-write community.
    pub write_community: &'static str,
    /// The vendor's SNMPv3 protocols and what the lab serves by default.
    pub v3: V3Defaults,
}

/// A PDU family's SNMPv3 protocols (`palisade-lab snmp --profile P --v3-user U`).
///
/// Privacy is always AES-128 (usmAesCfb128Protocol), the only privacy protocol Palisade's
/// driver speaks; DES is not served (broken, RFC 3826 §1 names its weakness). Authentication
/// is SHA-1 or SHA-256 (RFC 7860); MD5 is not served either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V3Defaults {
    /// What the vendor documents, for `--help` and docs/bench.md.
    pub vendor: &'static str,
    /// The authentication protocol served when `--v3-auth` is not given: the strongest the
    /// vendor documents that the driver speaks. `None`: the vendor documents only MD5
    /// authentication and DES privacy, which Palisade does not implement, so serving v3 for
    /// this profile needs an explicit `--v3-auth`.
    pub auth: Option<AuthProtocol>,
}

/// The lab's own v3: SHA-1 and AES-128, what the driver uses when `auth_protocol` is unset.
const V3_LAB: V3Defaults = V3Defaults {
    vendor: "the lab's own: SHA-1 or SHA-256, AES-128",
    auth: Some(AuthProtocol::Sha1),
};

/// The lab's own behaviour: the model you pick, no delays, one read-write community.
pub const PALISADE_PDU: PduProfile = PduProfile {
    name: "palisade",
    summary: "the lab's own: any --model, immediate switching, community private (default)",
    model: "apc-rpdu",
    switch_delay: Duration::ZERO,
    delayed: &[],
    cancel: None,
    seconds_commands: false,
    command_pending: None,
    control_state: None,
    queue: None,
    read_community: "public",
    write_community: "private",
    v3: V3_LAB,
};

/// Every PDU profile, `palisade` first.
pub const PDU_PROFILES: &[PduProfile] = &[
    PALISADE_PDU,
    // APC Switched Rack PDU, AOS (PowerNet-MIB rPDUOutletControlOutletCommand): immediateOn(1),
    // immediateOff(2), immediateReboot(3), delayedOn(4), delayedOff(5), delayedReboot(6),
    // cancelPendingCommand(7); delayed commands wait rPDUOutletConfigPowerOnTime /
    // PowerOffTime (PowerNet-MIB .318.1.1.12.3.4.1.1.4/.5, seconds; 0 and 1-7200 allowed).
    // rPDUOutletStatusCommandPending (.318.1.1.12.3.5.1.1.5) says whether one is pending.
    // Factory communities public (read) and private (write), SNMPv1 on and SNMPv3 off (APC
    // Rack PDU User's Guide, "SNMP" section). SNMPv3: "SHA or MD5 authentication and AES or
    // DES encryption" (APC Network Management Card 2 and 3 User's Guides, "SNMPv3"), so
    // SHA-1 and AES-128 here. Delayed-command times: the MIB allows 0-7200 s but no public
    // source found for the factory value; chosen: 3 s, so a test sees commandPending
    // without waiting long. Switch delay 0: no public source found for a relay time.
    PduProfile {
        name: "apc",
        summary: "APC rPDU (PowerNet-MIB rPDUOutletControl): delayedOff(5)/delayedOn(4) wait 3 s, commandPending column, public/private",
        model: "apc-rpdu",
        switch_delay: Duration::ZERO,
        delayed: &[
            DelayedCommand { value: 4, on: true, after: Duration::from_secs(3) },
            DelayedCommand { value: 5, on: false, after: Duration::from_secs(3) },
        ],
        cancel: Some(7),
        seconds_commands: false,
        command_pending: Some("1.3.6.1.4.1.318.1.1.12.3.5.1.1.5"),
        control_state: None,
        queue: None,
        read_community: "public",
        write_community: "private",
        v3: V3Defaults {
            vendor: "SHA or MD5 authentication, AES or DES privacy (APC NMC2/NMC3 User's Guide)",
            auth: Some(AuthProtocol::Sha1),
        },
    },
    // Tripp Lite LX platform (TRIPPLITE-PRODUCTS tlpPduOutletCommand: idle(0), turnOff(1),
    // turnOn(2), cycle(3)); fence_tripplite_snmp's TrippliteLXPDU class. Factory communities
    // public (read) and tripplite (write) (Tripp Lite PowerAlert / SNMPWEBCARD manual).
    // The outlet relays switch after the acknowledgement: no public source found for how
    // long; chosen: 300 ms, shorter than the others, so one profile has a brief window.
    // SNMPv3: no public source found for the LX platform's protocols; chosen: SHA-1 and
    // AES-128, the strongest pair APC documents.
    PduProfile {
        name: "tripplite",
        summary: "Tripp Lite LX (TRIPPLITE-PRODUCTS tlpPduOutlet): switches 300 ms after the ack, public/tripplite",
        model: "tripplite-lx",
        switch_delay: Duration::from_millis(300),
        delayed: &[],
        cancel: None,
        seconds_commands: false,
        command_pending: None,
        control_state: None,
        queue: None,
        read_community: "public",
        write_community: "tripplite",
        v3: V3Defaults {
            vendor: "no public source found (SHA-1/AES-128 chosen)",
            auth: Some(AuthProtocol::Sha1),
        },
    },
    // Eaton ePDU G2/G3 (EATON-EPDU-MIB outletControlOffCmd/OnCmd, Integer32 -1..99999:
    // "0-n: time in seconds until the outlet command is issued, -1: cancel a pending
    // command; when read, returns -1 if no command is pending, or the current downcount");
    // outletControlStatus reads pendingOff(2)/pendingOn(3) meanwhile. An immediate command is
    // also shown pending for 1 s here: no public source found for the relay time; chosen
    // as the sequencing the MIB's outletControlSequenceDelay describes. Communities: no
    // public source found for the G3's factory values (its Operations Manual has SNMP v1
    // off and v3 read-only and read-write users to set up, with noAuthNoPriv, authNoPriv or
    // authPriv); chosen: public/private. SNMPv3 protocols: no public source found; chosen:
    // SHA-1 and AES-128.
    PduProfile {
        name: "eaton",
        summary: "Eaton ePDU G3 (EATON-EPDU-MIB outletControl{Off,On}Cmd in seconds): pendingOff for 1 s, -1 cancels, public/private",
        model: "eaton-epdu",
        switch_delay: Duration::from_secs(1),
        delayed: &[],
        cancel: None,
        seconds_commands: true,
        command_pending: None,
        control_state: None,
        queue: None,
        read_community: "public",
        write_community: "private",
        v3: V3Defaults {
            vendor: "no public source found for the protocols (SHA-1/AES-128 chosen)",
            auth: Some(AuthProtocol::Sha1),
        },
    },
    // Raritan PX2/PX3 (PDU2-MIB switchingOperation: off(0), on(1), cycle(2);
    // outletSwitchingState: on(7), off(8)). The state follows the relay: no public source
    // found for how long; chosen: 500 ms. Communities: no public source found (the PX2
    // ships with SNMP v1/v2c disabled); chosen: public/private. SNMPv3 protocols: no public
    // source found; chosen: SHA-1 and AES-128.
    PduProfile {
        name: "raritan",
        summary: "Raritan PX2/PX3 (PDU2-MIB switchingOperation): state on(7)/off(8) lags 500 ms, public/private",
        model: "raritan-px2",
        switch_delay: Duration::from_millis(500),
        delayed: &[],
        cancel: None,
        seconds_commands: false,
        command_pending: None,
        control_state: None,
        queue: None,
        read_community: "public",
        write_community: "private",
        v3: V3Defaults {
            vendor: "no public source found (SHA-1/AES-128 chosen)",
            auth: Some(AuthProtocol::Sha1),
        },
    },
    // Server Technology Sentry3 CDU (Sentry3-MIB outletControlAction: none(0), on(1),
    // off(2), reboot(3); outletStatus offWait(2)/onWait(3) while a command waits). Factory
    // communities: the Sentry3-firmware PT22 Installation and Operations Manual ("About
    // SNMP Versions") sets GET to public and leaves SET blank; a blank community cannot
    // switch anything, so private is served for SET. The wait: no public source found;
    // chosen: 1 s. SNMPv3: that manual says "Authentication types are None and MD5.
    // Encryption types are None and DES", neither of which Palisade implements: v3 is
    // served for this profile only with an explicit --v3-auth. The `sentry4` profile
    // serves Sentry4-MIB.
    PduProfile {
        name: "servertech",
        summary: "Server Technology Sentry3 (Sentry3-MIB outletControlAction): offWait/onWait for 1 s, public/private; v3 only MD5/DES",
        model: "sentry3",
        switch_delay: Duration::from_secs(1),
        delayed: &[],
        cancel: None,
        seconds_commands: false,
        command_pending: None,
        control_state: None,
        queue: None,
        read_community: "public",
        write_community: "private",
        v3: V3Defaults {
            vendor: "MD5 authentication and DES privacy only (Server Technology PT22 manual); not served by default",
            auth: None,
        },
    },
    // Server Technology PRO1/PRO2 (Sentry4-MIB, revision 2023-03-10, as compiled in
    // DotZero24/pysnmp-mibs pysnmp_mibs/Sentry4-MIB.py): st4OutletState (.1718.4.1.8.3.1.1)
    // DeviceState unknown(0)/on(1)/off(2), no pending value; st4OutletStatus (.8.3.1.2)
    // DeviceStatus normal(0)...; st4OutletControlAction (.8.5.1.2) none(0), on(1), off(2),
    // reboot(3), queueOn(4), queueOff(5), queueReboot(6); st4OutletQueueControl (.8.6.1)
    // clear(0), commit(1). The PRO2 user guide's outlet table: "Outlet state in transition -
    // re-query of outlet status required". Transition: no public source found; chosen:
    // 1 s, as Sentry3. Communities: no public source found; chosen: public/private.
    // SNMPv3 protocols: no public source found; chosen: SHA-1 and AES-128.
    PduProfile {
        name: "sentry4",
        summary: "Server Technology PRO2 (Sentry4-MIB st4OutletControlAction): queueOn(4)/queueOff(5) wait for st4OutletQueueControl commit(1), 1 s switch, public/private",
        model: "sentry4",
        switch_delay: Duration::from_secs(1),
        delayed: &[],
        cancel: None,
        seconds_commands: false,
        command_pending: None,
        // st4OutletControlState reads pendOff(9)/pendOn(8) while an acknowledged action
        // has not switched yet, off(10)/on(11) otherwise. A queued (not committed) action
        // is not a pending one: no public source found says what it reads then; chosen:
        // the present state, so only a commit makes it pending.
        control_state: Some(ControlState {
            column: "1.3.6.1.4.1.1718.4.1.8.5.1.1",
            on: 11,
            off: 10,
            pend_on: 8,
            pend_off: 9,
        }),
        queue: Some(QueueCommands {
            on: 4,
            off: 5,
            control: "1.3.6.1.4.1.1718.4.1.8.6.1",
            commit: 1,
            clear: 0,
        }),
        read_community: "public",
        write_community: "private",
        v3: V3Defaults {
            vendor: "no public source found (SHA-1/AES-128 chosen)",
            auth: Some(AuthProtocol::Sha1),
        },
    },
];

/// The PDU profile named `name`.
pub fn pdu_profile(name: &str) -> Option<&'static PduProfile> {
    PDU_PROFILES.iter().find(|p| p.name == name)
}

/// The PDU profiles for `--help`, one per line.
pub fn pdu_profiles_help() -> String {
    PDU_PROFILES
        .iter()
        .map(|p| {
            format!(
                "  {:<11} {} (model {})\n  {:<11} SNMPv3: {}",
                p.name, p.summary, p.model, "", p.v3.vendor
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A v3 user of the simulated PDUs (SHA-1 or SHA-256 authentication; AES-128 privacy when a
/// privacy password is given).
#[derive(Clone)]
pub struct PduUser {
    /// msgUserName.
    pub name: String,
    /// Authentication password (`None`: noAuthNoPriv).
    pub auth: Option<Secret>,
    /// Privacy password (needs `auth`).
    pub privacy: Option<Secret>,
    /// The authentication protocol.
    pub auth_protocol: AuthProtocol,
}

impl fmt::Debug for PduUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PduUser")
            .field("name", &self.name)
            .field("auth", &self.auth.is_some())
            .field("privacy", &self.privacy.is_some())
            .finish()
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct PduLabSpec {
    /// Number of PDUs, named `pdu1` … `pduN`.
    pub count: usize,
    /// UDP port of `pdu1` (the others follow); 0 = any free port each.
    pub base_port: u16,
    /// Outlets per PDU.
    pub outlets: usize,
    /// Outlet names (missing ones are `outletK`).
    pub names: Vec<String>,
    /// The vendor model.
    pub model: &'static Model,
    /// The read-write community (v1 and v2c); `None` serves no community at all.
    pub community: Option<Secret>,
    /// A read-only community: gets work, a set is refused with noAccess (v2c) or
    /// noSuchName (v1), as RFC 3584 §4.1 maps it.
    pub read_community: Option<Secret>,
    /// The vendor behaviour (delays, delayed commands).
    pub profile: &'static PduProfile,
    /// A v3 user, if v3 is served.
    pub user: Option<PduUser>,
    /// Delay between a set and the outlet's change.
    pub power_delay: Duration,
    /// Whether outlets start on.
    pub power_on: bool,
    /// Faults every PDU starts with.
    pub faults: Faults,
    /// Seed of the per-PDU RNG (drops, garbage, salts).
    pub seed: u64,
}

impl PduLabSpec {
    /// `count` PDUs of `outlets` outlets each, model `model`, community `private`.
    pub fn new(count: usize, outlets: usize, model: &'static Model) -> Self {
        Self {
            count,
            base_port: 0,
            outlets,
            names: Vec::new(),
            model,
            community: Some(Secret::new(b"private".to_vec())),
            read_community: None,
            profile: &PALISADE_PDU,
            user: None,
            power_delay: Duration::ZERO,
            power_on: true,
            faults: Faults::default(),
            seed: 0x5a1e_1ab0,
        }
    }

    /// `count` PDUs of `outlets` outlets each, as `profile`'s vendor ships them: its model,
    /// switch delay and factory communities.
    pub fn with_profile(count: usize, outlets: usize, profile: &'static PduProfile) -> Self {
        let model = model::by_name(profile.model).unwrap_or(&model::MODELS[0]);
        let mut spec = Self::new(count, outlets, model);
        spec.profile = profile;
        spec.power_delay = profile.switch_delay;
        spec.community = Some(Secret::new(profile.write_community.as_bytes().to_vec()));
        spec.read_community = Some(Secret::new(profile.read_community.as_bytes().to_vec()));
        spec
    }
}

/// One outlet's simulated state.
#[derive(Debug, Clone)]
struct OutletSim {
    name: String,
    node: Node,
    stuck: bool,
    /// The direction of the change scheduled, while one is (for pending state values).
    going_on: Option<bool>,
    /// A queued action (Sentry4 queueOn/queueOff) waiting for a commit: on or off.
    queued: Option<bool>,
}

/// State a PDU shares between its task and its handles.
struct Shared {
    name: String,
    addr: SocketAddr,
    serial: String,
    engine_id: Vec<u8>,
    started: Instant,
    /// snmpEngineBoots and the instant snmpEngineTime counts from (RFC 3414 §2.2): an agent
    /// restart increments the one and resets the other.
    engine_clock: Mutex<(i64, Instant)>,
    /// Sets are answered with another value than was set, and not applied.
    set_answers_other: std::sync::atomic::AtomicBool,
    outlets: Mutex<Vec<OutletSim>>,
    faults: Mutex<Faults>,
    events: Mutex<EventLog>,
    counters: Mutex<BTreeMap<String, u32>>,
    /// What is plugged into each outlet (1-based), for models that meter outlets.
    loads: Mutex<BTreeMap<usize, OutletLoad>>,
}

/// The watts the equipment plugged into an outlet draws while the outlet is on, asked at every
/// read (a lab node: its load while its processes run, next to nothing once its power went).
pub type OutletLoad = Arc<dyn Fn() -> u32 + Send + Sync>;

impl Shared {
    fn record(&self, kind: EventKind) {
        lock(&self.events).record(self.started.elapsed(), kind);
    }

    fn count(&self, oid: &str) {
        *lock(&self.counters).entry(oid.to_string()).or_insert(0) += 1;
    }
}

/// A handle on one running simulated PDU.
#[derive(Clone)]
pub struct PduHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for PduHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PduHandle")
            .field("name", &self.shared.name)
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl PduHandle {
    /// `pdu1` …
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Its serial number (the identity the driver reports, lower-cased).
    pub fn serial(&self) -> &str {
        &self.shared.serial
    }

    /// Its v3 engine id.
    pub fn engine_id(&self) -> &[u8] {
        &self.shared.engine_id
    }

    /// Whether outlet `n` (1-based) is on now; `None` if there is no such outlet.
    pub fn outlet_on(&self, n: usize) -> Option<bool> {
        let now = Instant::now();
        let mut o = lock(&self.shared.outlets);
        let out = o.get_mut(n.checked_sub(1)?)?;
        out.node.settle(now);
        Some(out.node.is_on())
    }

    /// Sets outlet `n`'s power at once.
    pub fn set_outlet(&self, n: usize, on: bool) {
        if let Some(o) = lock(&self.shared.outlets).get_mut(n.wrapping_sub(1)) {
            o.node.force(on);
        }
    }

    /// Plugs `load` into outlet `n`, or unplugs it (`None`: the outlet draws 0 W). Models with
    /// an outlet power column (apc-rpdu2's rPDU2OutletMeteredStatusPower) serve its watts while
    /// the outlet is on, 0 W while it is off.
    pub fn set_outlet_load(&self, n: usize, load: Option<OutletLoad>) {
        let mut l = lock(&self.shared.loads);
        match load {
            Some(f) => l.insert(n, f),
            None => l.remove(&n),
        };
    }

    /// Renames outlet `n` (as an operator would on the PDU's web page).
    pub fn rename_outlet(&self, n: usize, name: &str) {
        if let Some(o) = lock(&self.shared.outlets).get_mut(n.wrapping_sub(1)) {
            o.name = name.to_string();
        }
    }

    /// Makes outlet `n` acknowledge sets without switching (or behave again).
    pub fn set_outlet_stuck(&self, n: usize, stuck: bool) {
        if let Some(o) = lock(&self.shared.outlets).get_mut(n.wrapping_sub(1)) {
            o.stuck = stuck;
        }
        self.shared
            .record(EventKind::FaultSet(format!("outlet {n} stuck={stuck}")));
    }

    /// Makes the PDU answer every outlet set with the opposite command value and not apply it
    /// (an agent whose reply disagrees with the request), or behave again.
    pub fn set_answers_other_value(&self, on: bool) {
        self.shared
            .set_answers_other
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self.shared
            .record(EventKind::FaultSet(format!("set answers other value={on}")));
    }

    /// Simulates an agent restart for SNMPv3: snmpEngineBoots goes up by one and
    /// snmpEngineTime starts again from 0, so managers must resynchronise (RFC 3414 §2.2.2).
    pub fn restart_engine(&self) {
        let mut c = lock(&self.shared.engine_clock);
        *c = (c.0 + 1, Instant::now());
    }

    /// Outlet names, outlet 1 first.
    pub fn outlet_names(&self) -> Vec<String> {
        lock(&self.shared.outlets)
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }

    /// Sets one fault knob for the whole PDU.
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.shared.faults).apply(fault);
        self.shared
            .record(EventKind::FaultSet(format!("{fault:?}")));
    }

    /// The current knobs.
    pub fn faults(&self) -> Faults {
        *lock(&self.shared.faults)
    }

    /// A counter the agent keeps (snmpInBadCommunityNames, usmStats…), by OID.
    pub fn counter(&self, oid: &str) -> u32 {
        lock(&self.shared.counters).get(oid).copied().unwrap_or(0)
    }

    /// Recent events, oldest first.
    pub fn events(&self) -> Vec<super::Event> {
        lock(&self.shared.events).entries()
    }
}

/// Running simulated PDUs; dropping stops them.
#[derive(Debug)]
pub struct PduLab {
    pdus: Vec<PduHandle>,
    tasks: LabTasks,
}

impl PduLab {
    /// Binds and starts the PDUs on 127.0.0.1; returns once all listen. Needs a tokio runtime.
    pub async fn start(spec: PduLabSpec) -> Result<PduLab, LabError> {
        if spec.outlets == 0 || spec.outlets > 512 {
            return Err(LabError::Spec("a PDU has 1 to 512 outlets".into()));
        }
        if spec.community.is_none() && spec.user.is_none() {
            return Err(LabError::Spec(
                "serve a community, a v3 user, or both".into(),
            ));
        }
        if let Some(u) = &spec.user {
            if u.privacy.is_some() && u.auth.is_none() {
                return Err(LabError::Spec(
                    "a v3 privacy password needs an auth password".into(),
                ));
            }
            if [&u.auth, &u.privacy]
                .into_iter()
                .flatten()
                .any(|p| p.expose().len() < 8)
            {
                return Err(LabError::Spec("v3 passwords need at least 8 characters (RFC 3414 §11.2); net-snmp refuses shorter ones".into()));
            }
        }
        let mut lab = PduLab {
            pdus: Vec::with_capacity(spec.count),
            tasks: LabTasks::with_capacity(spec.count),
        };
        for i in 1..=spec.count {
            let port = if spec.base_port == 0 {
                0
            } else {
                u16::try_from(usize::from(spec.base_port) + i - 1)
                    .map_err(|_| LabError::Spec("base port + count runs past 65535".into()))?
            };
            let want: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
            let socket = UdpSocket::bind(want)
                .await
                .map_err(|source| LabError::Bind { addr: want, source })?;
            let addr = socket
                .local_addr()
                .map_err(|source| LabError::Bind { addr: want, source })?;
            let name = format!("pdu{i}");
            let mut engine_id = vec![0x80, 0x00, 0x1f, 0x88, 0x04];
            engine_id.extend_from_slice(format!("palisade-{name}").as_bytes());
            let outlets = (1..=spec.outlets)
                .map(|k| OutletSim {
                    name: spec
                        .names
                        .get(k - 1)
                        .cloned()
                        .unwrap_or_else(|| format!("outlet{k}")),
                    node: Node::new(spec.power_on, spec.power_delay),
                    stuck: false,
                    going_on: None,
                    queued: None,
                })
                .collect();
            let shared = Arc::new(Shared {
                name,
                addr,
                serial: format!("5A1E{i:06}"),
                engine_id,
                started: Instant::now(),
                engine_clock: Mutex::new((1, Instant::now())),
                set_answers_other: std::sync::atomic::AtomicBool::new(false),
                outlets: Mutex::new(outlets),
                faults: Mutex::new(spec.faults),
                events: Mutex::new(EventLog::default()),
                counters: Mutex::new(BTreeMap::new()),
                loads: Mutex::new(BTreeMap::new()),
            });
            let agent = Agent::new(shared.clone(), &spec, i as u64);
            lab.pdus.push(PduHandle { shared });
            lab.tasks.push(tokio::spawn(serve(socket, agent)));
        }
        Ok(lab)
    }

    /// The PDUs, `pdu1` first.
    pub fn pdus(&self) -> &[PduHandle] {
        &self.pdus
    }

    /// The PDU with this name.
    pub fn pdu(&self, name: &str) -> Option<&PduHandle> {
        self.pdus.iter().find(|p| p.name() == name)
    }

    /// Applies a knob to the PDU it names, or to all; `false` if it names none here.
    pub fn apply(&self, knob: &FaultKnob) -> bool {
        super::apply_knob(&self.pdus, |p| p.name(), |p, f| p.set_fault(f), knob)
    }

    /// Stops every PDU and waits until their sockets are closed.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// A decoded outlet command.
#[derive(Debug, Clone, Copy)]
enum Command {
    /// Switch on or off, now (after the PDU's switch delay) or `after` this long.
    Switch { on: bool, after: Option<Duration> },
    /// Cancel whatever is pending.
    Cancel,
    /// Queue a switch until the queue is committed (Sentry4).
    Queue { on: bool },
}

/// The agent's per-PDU request handler state.
struct Agent {
    shared: Arc<Shared>,
    model: &'static Model,
    profile: &'static PduProfile,
    community: Option<Secret>,
    read_community: Option<Secret>,
    user: Option<PduUser>,
    auth_key: Option<LocalKey>,
    priv_key: Option<LocalKey>,
    rng: StdRng,
}

impl Agent {
    fn new(shared: Arc<Shared>, spec: &PduLabSpec, i: u64) -> Self {
        let (auth_key, priv_key) = match &spec.user {
            Some(u) => (
                u.auth
                    .as_ref()
                    .map(|p| localize(u.auth_protocol, p.expose(), &shared.engine_id)),
                u.privacy
                    .as_ref()
                    .map(|p| localize(u.auth_protocol, p.expose(), &shared.engine_id)),
            ),
            None => (None, None),
        };
        Agent {
            shared,
            model: spec.model,
            profile: spec.profile,
            community: spec.community.clone(),
            read_community: spec.read_community.clone(),
            user: spec.user.clone(),
            auth_key,
            priv_key,
            rng: StdRng::seed_from_u64(spec.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    }

    fn engine_boots(&self) -> i64 {
        lock(&self.shared.engine_clock).0
    }

    fn engine_time(&self) -> i64 {
        i64::try_from(lock(&self.shared.engine_clock).1.elapsed().as_secs()).unwrap_or(0)
    }

    /// The MIB as it is now: every object and its value, in OID order.
    fn mib(&self) -> BTreeMap<Oid, Value> {
        let m = self.model;
        let mut mib = BTreeMap::new();
        let now = Instant::now();
        let descr = format!("Palisade lab PDU {} ({})", self.shared.name, m.description);
        mib.insert(
            model::oid(model::SYS_DESCR),
            Value::OctetString(descr.into_bytes()),
        );
        let object_id = m.sys_object_id.unwrap_or("1.3.6.1.4.1.318.1.3.4.5");
        mib.insert(
            model::oid(model::SYS_OBJECT_ID),
            Value::Oid(model::oid(object_id)),
        );
        let ticks =
            u32::try_from(self.shared.started.elapsed().as_millis() / 10).unwrap_or(u32::MAX);
        mib.insert(model::oid("1.3.6.1.2.1.1.3.0"), Value::TimeTicks(ticks));
        mib.insert(
            model::oid(model::SYS_NAME),
            Value::OctetString(self.shared.name.clone().into_bytes()),
        );
        if let Some(s) = m.serial {
            mib.insert(
                model::oid(s),
                Value::OctetString(self.shared.serial.clone().into_bytes()),
            );
        }
        for (oid, n) in lock(&self.shared.counters).iter() {
            if let Ok(o) = oid.parse::<Oid>() {
                mib.insert(o, Value::Counter32(*n));
            }
        }
        mib.entry(model::oid(SNMP_IN_BAD_COMMUNITY_NAMES))
            .or_insert(Value::Counter32(0));
        let mut outlets = lock(&self.shared.outlets);
        let p = self.profile;
        if let Some(q) = p.queue {
            // What st4OutletQueueControl reads is not in the MIB text and no public source
            // found says; chosen: clear(0), the value that leaves nothing to carry out.
            mib.insert(model::oid(q.control).child(&[0]), Value::Integer(q.clear));
        }
        for (k, o) in outlets.iter_mut().enumerate() {
            let n = u32::try_from(k + 1).unwrap_or(u32::MAX);
            o.node.settle(now);
            if !o.node.is_changing() {
                o.going_on = None;
            }
            let on = o.node.is_on();
            mib.insert(
                m.name_oid(n),
                Value::OctetString(o.name.clone().into_bytes()),
            );
            // While a command waits, families with a pending value show it (Eaton
            // pendingOff, Sentry3 offWait); the others show the old state.
            let state = match (o.going_on, m.state_pending) {
                (Some(false), Some((off, _))) => off,
                (Some(true), Some((_, on))) => on,
                _ if on => m.state_on,
                _ => m.state_off,
            };
            mib.insert(m.state_oid(n), Value::Integer(state));
            if let Some(col) = m.watts_oid(n) {
                let load = lock(&self.shared.loads).get(&(k + 1)).cloned();
                let watts = match load {
                    Some(f) if on => f(),
                    _ => 0,
                };
                mib.insert(col, Value::Integer(i64::from(watts)));
            }
            if let Some(col) = p.command_pending {
                // outletStatusCommandPending(1), outletStatusNoCommandPending(2).
                let pending = if o.going_on.is_some() { 1 } else { 2 };
                mib.insert(model::oid(col).child(&[n]), Value::Integer(pending));
            }
            if let Some(c) = p.control_state {
                let v = match o.going_on {
                    Some(true) => c.pend_on,
                    Some(false) => c.pend_off,
                    None if on => c.on,
                    None => c.off,
                };
                mib.insert(m.at_column(c.column, n), Value::Integer(v));
            }
            if p.seconds_commands {
                // Eaton: the countdown of a pending command in seconds, -1 if none.
                let left = o.node.next_change().map(|at| {
                    i64::try_from(at.saturating_duration_since(now).as_secs()).unwrap_or(0)
                });
                for (col, dir) in [
                    (m.control, false),
                    (m.control_on.unwrap_or(m.control), true),
                ] {
                    let v = match (o.going_on, left) {
                        (Some(d), Some(s)) if d == dir => s,
                        _ => -1,
                    };
                    mib.insert(m.at_column(col, n), Value::Integer(v));
                }
            } else {
                // A control column reads back the command matching the present state.
                let (oid, value) = m.command(n, on);
                mib.insert(oid, Value::Integer(value));
            }
        }
        mib
    }

    /// What a control value written to an outlet's on column (`on_col`) and/or off column
    /// asks for; `None` for a value the MIB does not allow there.
    fn decode_command(&self, c: i64, on_col: bool, off_col: bool) -> Option<Command> {
        let (m, p) = (self.model, self.profile);
        if p.seconds_commands {
            // One column per direction; the value is a delay in seconds (EATON-EPDU-MIB).
            let on = on_col && !off_col;
            return match c {
                -1 => Some(Command::Cancel),
                0 => Some(Command::Switch { on, after: None }),
                1..=99_999 => Some(Command::Switch {
                    on,
                    after: Some(Duration::from_secs(c.unsigned_abs())),
                }),
                _ => None,
            };
        }
        if c == m.command_on && on_col {
            return Some(Command::Switch {
                on: true,
                after: None,
            });
        }
        if c == m.command_off && off_col {
            return Some(Command::Switch {
                on: false,
                after: None,
            });
        }
        if p.cancel == Some(c) {
            return Some(Command::Cancel);
        }
        if let Some(q) = p.queue {
            if c == q.on || c == q.off {
                return Some(Command::Queue { on: c == q.on });
            }
        }
        p.delayed
            .iter()
            .find(|d| d.value == c)
            .map(|d| Command::Switch {
                on: d.on,
                after: Some(d.after),
            })
    }

    /// Answers one PDU (after authentication). `v1` selects v1 error conventions; a
    /// `read_only` community may not set.
    fn answer(&mut self, pdu: &Pdu, v1: bool, read_only: bool) -> Pdu {
        let mut reply = Pdu {
            kind: PduType::Response,
            request_id: pdu.request_id,
            error_status: 0,
            error_index: 0,
            varbinds: Vec::new(),
        };
        let mib = self.mib();
        let fail = |mut r: Pdu, status: i64, index: usize| {
            r.error_status = status;
            r.error_index = i64::try_from(index + 1).unwrap_or(0);
            r.varbinds = pdu.varbinds.clone();
            r
        };
        match pdu.kind {
            PduType::Get => {
                for (i, (oid, _)) in pdu.varbinds.iter().enumerate() {
                    match mib.get(oid) {
                        Some(v) => reply.varbinds.push((oid.clone(), v.clone())),
                        None if v1 => return fail(reply, error_status::NO_SUCH_NAME, i),
                        None => {
                            let exists = mib.keys().any(|k| {
                                k.starts_with(oid)
                                    || oid.0.len() > 1 && k.0.starts_with(&oid.0[..oid.0.len() - 1])
                            });
                            reply.varbinds.push((
                                oid.clone(),
                                if exists {
                                    Value::NoSuchInstance
                                } else {
                                    Value::NoSuchObject
                                },
                            ));
                        }
                    }
                }
            }
            PduType::GetNext => {
                for (i, (oid, _)) in pdu.varbinds.iter().enumerate() {
                    match mib
                        .range((
                            std::ops::Bound::Excluded(oid.clone()),
                            std::ops::Bound::Unbounded,
                        ))
                        .next()
                    {
                        Some((k, v)) => reply.varbinds.push((k.clone(), v.clone())),
                        None if v1 => return fail(reply, error_status::NO_SUCH_NAME, i),
                        None => reply.varbinds.push((oid.clone(), Value::EndOfMibView)),
                    }
                }
            }
            PduType::GetBulk if !v1 => {
                let non_rep = usize::try_from(pdu.error_status.max(0))
                    .unwrap_or(0)
                    .min(pdu.varbinds.len());
                let max_rep = usize::try_from(pdu.error_index.max(0)).unwrap_or(0).min(64);
                let next = |oid: &Oid| {
                    mib.range((
                        std::ops::Bound::Excluded(oid.clone()),
                        std::ops::Bound::Unbounded,
                    ))
                    .next()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .unwrap_or((oid.clone(), Value::EndOfMibView))
                };
                for (oid, _) in &pdu.varbinds[..non_rep] {
                    reply.varbinds.push(next(oid));
                }
                let mut cursors: Vec<Oid> = pdu.varbinds[non_rep..]
                    .iter()
                    .map(|(o, _)| o.clone())
                    .collect();
                for _ in 0..max_rep {
                    for c in cursors.iter_mut() {
                        let (k, v) = next(c);
                        *c = k.clone();
                        reply.varbinds.push((k, v));
                    }
                }
            }
            PduType::Set => {
                if lock(&self.shared.faults).server_error {
                    return fail(reply, error_status::GEN_ERR, 0);
                }
                // Check every binding first: a set applies all or nothing (RFC 3416 §4.2.5).
                if read_only {
                    // RFC 3584 §4.1: a read-only community's set is noAccess (v1: noSuchName).
                    let status = if v1 {
                        error_status::NO_SUCH_NAME
                    } else {
                        error_status::NO_ACCESS
                    };
                    return fail(reply, status, 0);
                }
                let mut actions = Vec::new();
                // Some(true): commit the queue, Some(false): clear it (Sentry4).
                let mut queue_op = None;
                for (i, (oid, value)) in pdu.varbinds.iter().enumerate() {
                    if let Some(q) = self.profile.queue {
                        if *oid == model::oid(q.control).child(&[0]) {
                            match value {
                                Value::Integer(v) if *v == q.commit || *v == q.clear => {
                                    queue_op = Some(*v == q.commit);
                                    continue;
                                }
                                _ => {
                                    return fail(
                                        reply,
                                        if v1 {
                                            error_status::BAD_VALUE
                                        } else {
                                            error_status::WRONG_VALUE
                                        },
                                        i,
                                    )
                                }
                            }
                        }
                    }
                    let m = self.model;
                    let count = lock(&self.shared.outlets).len();
                    let control = (1..=count).find_map(|n| {
                        let n32 = n as u32;
                        let (on_oid, _) = m.command(n32, true);
                        let (off_oid, _) = m.command(n32, false);
                        (on_oid == *oid || off_oid == *oid).then_some((
                            n,
                            on_oid == *oid,
                            off_oid == *oid,
                        ))
                    });
                    let named = (1..=count).find(|n| m.name_oid(*n as u32) == *oid);
                    let command = match (control, value) {
                        (Some((_, on_col, off_col)), Value::Integer(c)) => {
                            self.decode_command(*c, on_col, off_col)
                        }
                        _ => None,
                    };
                    match (control, named, value) {
                        (Some((n, _, _)), _, _) if command.is_some() => {
                            actions.push((n, command, None));
                        }
                        (Some(_), _, _) => {
                            return fail(
                                reply,
                                if v1 {
                                    error_status::BAD_VALUE
                                } else {
                                    error_status::WRONG_VALUE
                                },
                                i,
                            )
                        }
                        (None, Some(n), Value::OctetString(s)) => {
                            actions.push((n, None, Some(String::from_utf8_lossy(s).into_owned())));
                        }
                        _ => {
                            return fail(
                                reply,
                                if v1 {
                                    error_status::NO_SUCH_NAME
                                } else {
                                    error_status::NOT_WRITABLE
                                },
                                i,
                            )
                        }
                    }
                }
                if self
                    .shared
                    .set_answers_other
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    self.shared
                        .record(EventKind::FaultApplied("set-answers-other"));
                    let m = self.model;
                    reply.varbinds = pdu
                        .varbinds
                        .iter()
                        .map(|(o, v)| match v {
                            // Eaton's columns take the same value for on and off: answer -1.
                            Value::Integer(_) if m.command_on == m.command_off => {
                                (o.clone(), Value::Integer(-1))
                            }
                            Value::Integer(c) if *c == m.command_off => {
                                (o.clone(), Value::Integer(m.command_on))
                            }
                            Value::Integer(_) => (o.clone(), Value::Integer(m.command_off)),
                            other => (o.clone(), other.clone()),
                        })
                        .collect();
                    return reply;
                }
                let faults = *lock(&self.shared.faults);
                let now = Instant::now();
                let mut outlets = lock(&self.shared.outlets);
                let mut switches: Vec<(usize, Option<Command>, Option<String>)> = actions;
                match queue_op {
                    Some(true) => {
                        // The commit carries out every queued action as an immediate one.
                        for (k, o) in outlets.iter_mut().enumerate() {
                            if let Some(on) = o.queued.take() {
                                switches.push((
                                    k + 1,
                                    Some(Command::Switch { on, after: None }),
                                    None,
                                ));
                            }
                        }
                    }
                    Some(false) => outlets.iter_mut().for_each(|o| o.queued = None),
                    None => {}
                }
                for (n, power, rename) in switches {
                    let Some(o) = outlets.get_mut(n - 1) else {
                        continue;
                    };
                    if let Some(name) = rename {
                        o.name = name;
                    }
                    match power {
                        Some(Command::Queue { on }) => o.queued = Some(on),
                        Some(Command::Cancel) => {
                            let on = o.node.is_on();
                            o.node.force(on);
                            o.going_on = None;
                        }
                        Some(_) if faults.stuck || o.stuck => {
                            self.shared.record(EventKind::FaultApplied("stuck"));
                        }
                        Some(Command::Switch { on: true, .. }) if faults.power_on_fails => {
                            self.shared
                                .record(EventKind::FaultApplied("power-on-fails"));
                        }
                        Some(Command::Switch { on, after }) => {
                            let base = o.node.delay();
                            o.node.set_delay(after.unwrap_or(base));
                            let _ = o.node.request(
                                if on {
                                    PowerAction::Up
                                } else {
                                    PowerAction::Down
                                },
                                now,
                            );
                            o.node.set_delay(base);
                            if o.node.is_changing() {
                                o.going_on = Some(on);
                            }
                        }
                        None => {}
                    }
                }
                reply.varbinds = pdu.varbinds.clone();
            }
            _ => return fail(reply, error_status::GEN_ERR, 0),
        }
        reply
    }

    /// Handles one datagram; the reply to send, if any.
    fn handle(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let msg = match decode_message(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.shared.count("1.3.6.1.2.1.11.6.0"); // snmpInASNParseErrs
                self.shared.record(EventKind::Discarded("malformed"));
                return None;
            }
        };
        match msg {
            Message::Community {
                version,
                community,
                pdu,
            } => {
                let rw = self
                    .community
                    .as_ref()
                    .is_some_and(|c| c.expose() == community.as_slice());
                let ro = self
                    .read_community
                    .as_ref()
                    .is_some_and(|c| c.expose() == community.as_slice());
                if !rw && !ro {
                    self.shared.count(SNMP_IN_BAD_COMMUNITY_NAMES);
                    self.shared.record(EventKind::Discarded("bad community"));
                    return None;
                }
                if lock(&self.shared.faults).refuse_auth {
                    self.shared.count(SNMP_IN_BAD_COMMUNITY_NAMES);
                    self.shared.record(EventKind::FaultApplied("refuse-auth"));
                    return None;
                }
                if matches!(pdu.kind, PduType::Response | PduType::Report) {
                    return None;
                }
                let reply = self.answer(&pdu, version == Version::V1, !rw);
                self.record_command(&pdu, &reply);
                Some(encode_community(version, &community, &reply))
            }
            Message::V3 { msg, auth_offset } => self.handle_v3(bytes, msg, auth_offset),
        }
    }

    fn record_command(&self, pdu: &Pdu, reply: &Pdu) {
        self.shared.record(EventKind::Command {
            net_fn: pdu.kind.tag(),
            cmd: u8::try_from(pdu.varbinds.len()).unwrap_or(u8::MAX),
            completion_code: u8::try_from(reply.error_status).unwrap_or(u8::MAX),
        });
    }

    /// A usmStats report for a reportable request (RFC 3414 §3.2 step 1 of each check).
    fn report(&self, req: &V3Message, counter: u32, authenticated: bool) -> Option<Vec<u8>> {
        let oid = usm_stats::oid(counter);
        self.shared.count(&oid.to_string());
        self.shared.record(EventKind::SetupRefused {
            stage: usm_stats::name(counter)
                .split(' ')
                .next()
                .unwrap_or("usmStats"),
            status: counter as u8,
        });
        if req.flags & flags::REPORTABLE == 0 {
            return None;
        }
        let value = self.counter_value(&oid);
        let pdu = Pdu {
            kind: PduType::Report,
            request_id: match &req.data {
                ScopedData::Plain(s) => s.pdu.request_id,
                ScopedData::Encrypted(_) => 0,
            },
            error_status: 0,
            error_index: 0,
            varbinds: vec![(oid, Value::Counter32(value))],
        };
        let auth = if authenticated {
            self.auth_key.as_ref()
        } else {
            None
        };
        let user = req.usm.user.clone();
        let msg = V3Message {
            msg_id: req.msg_id,
            max_size: 65507,
            flags: if auth.is_some() { flags::AUTH } else { 0 },
            usm: UsmParams {
                engine_id: self.shared.engine_id.clone(),
                engine_boots: self.engine_boots(),
                engine_time: self.engine_time(),
                user,
                auth_params: if auth.is_some() {
                    vec![0; self.auth_protocol().mac_len()]
                } else {
                    Vec::new()
                },
                priv_params: Vec::new(),
            },
            data: ScopedData::Plain(ScopedPdu {
                context_engine_id: self.shared.engine_id.clone(),
                context_name: Vec::new(),
                pdu,
            }),
        };
        let (mut bytes, at) = encode_v3(&msg);
        if let Some(k) = auth {
            k.sign(self.auth_protocol(), &mut bytes, at);
        }
        Some(bytes)
    }

    fn auth_protocol(&self) -> AuthProtocol {
        self.user
            .as_ref()
            .map(|u| u.auth_protocol)
            .unwrap_or(AuthProtocol::Sha1)
    }

    fn counter_value(&self, oid: &Oid) -> u32 {
        lock(&self.shared.counters)
            .get(&oid.to_string())
            .copied()
            .unwrap_or(0)
    }

    fn handle_v3(&mut self, bytes: &[u8], req: V3Message, auth_offset: usize) -> Option<Vec<u8>> {
        let Some(user) = self.user.clone() else {
            // No v3 served: an agent without USM users knows no engine id to discover.
            return self.report(&req, usm_stats::UNKNOWN_USER_NAMES, false);
        };
        if req.usm.engine_id != self.shared.engine_id {
            return self.report(&req, usm_stats::UNKNOWN_ENGINE_IDS, false);
        }
        if req.usm.user != user.name.as_bytes() {
            return self.report(&req, usm_stats::UNKNOWN_USER_NAMES, false);
        }
        let wants_auth = req.flags & flags::AUTH != 0;
        let wants_priv = req.flags & flags::PRIV != 0;
        if wants_priv && !wants_auth
            || wants_auth != self.auth_key.is_some()
            || wants_priv != self.priv_key.is_some()
        {
            return self.report(&req, usm_stats::UNSUPPORTED_SEC_LEVELS, false);
        }
        let refuse = lock(&self.shared.faults).refuse_auth;
        if let Some(k) = &self.auth_key {
            if refuse || !k.verify(self.auth_protocol(), bytes, auth_offset) {
                return self.report(&req, usm_stats::WRONG_DIGESTS, false);
            }
            if req.usm.engine_boots != self.engine_boots()
                || (req.usm.engine_time - self.engine_time()).abs() > TIME_WINDOW
            {
                return self.report(&req, usm_stats::NOT_IN_TIME_WINDOWS, true);
            }
        }
        let scoped = match &req.data {
            ScopedData::Plain(s) => s.clone(),
            ScopedData::Encrypted(c) => {
                let (Some(pk), Ok(salt)) = (
                    &self.priv_key,
                    <[u8; 8]>::try_from(req.usm.priv_params.as_slice()),
                ) else {
                    return self.report(&req, usm_stats::DECRYPTION_ERRORS, false);
                };
                let boots = u32::try_from(req.usm.engine_boots).unwrap_or(0);
                let time = u32::try_from(req.usm.engine_time).unwrap_or(0);
                match ScopedPdu::decode(&pk.aes_cfb(boots, time, &salt, c, false)) {
                    Ok(s) => s,
                    Err(_) => return self.report(&req, usm_stats::DECRYPTION_ERRORS, false),
                }
            }
        };
        if matches!(scoped.pdu.kind, PduType::Response | PduType::Report) {
            return None;
        }
        let reply_pdu = self.answer(&scoped.pdu, false, false);
        self.record_command(&scoped.pdu, &reply_pdu);
        let reply_scoped = ScopedPdu {
            context_engine_id: self.shared.engine_id.clone(),
            context_name: scoped.context_name,
            pdu: reply_pdu,
        };
        let time = self.engine_time();
        let (data, priv_params) = match &self.priv_key {
            Some(pk) => {
                let salt: [u8; 8] = self.rng.gen();
                let c = pk.aes_cfb(
                    u32::try_from(self.engine_boots()).unwrap_or(0),
                    u32::try_from(time).unwrap_or(0),
                    &salt,
                    &reply_scoped.encode(),
                    true,
                );
                (ScopedData::Encrypted(c), salt.to_vec())
            }
            None => (ScopedData::Plain(reply_scoped), Vec::new()),
        };
        let msg = V3Message {
            msg_id: req.msg_id,
            max_size: 65507,
            flags: req.flags & (flags::AUTH | flags::PRIV),
            usm: UsmParams {
                engine_id: self.shared.engine_id.clone(),
                engine_boots: self.engine_boots(),
                engine_time: time,
                user: req.usm.user.clone(),
                auth_params: if self.auth_key.is_some() {
                    vec![0; self.auth_protocol().mac_len()]
                } else {
                    Vec::new()
                },
                priv_params,
            },
            data,
        };
        let (mut out, at) = encode_v3(&msg);
        if let Some(k) = &self.auth_key {
            k.sign(self.auth_protocol(), &mut out, at);
        }
        Some(out)
    }

    /// Replaces a reply with garbage: random bytes, a truncated copy or one flipped byte.
    fn garble(&mut self, mut reply: Vec<u8>) -> Vec<u8> {
        match self.rng.gen_range(0..3) {
            0 => (0..self.rng.gen_range(1..64))
                .map(|_| self.rng.gen())
                .collect(),
            1 => {
                let keep = self.rng.gen_range(0..reply.len().max(1));
                reply.truncate(keep);
                reply
            }
            _ => {
                if !reply.is_empty() {
                    let i = self.rng.gen_range(0..reply.len());
                    reply[i] ^= 0xff;
                }
                reply
            }
        }
    }
}

/// The socket loop of one PDU: one task, replies in order (latency delays the queue).
async fn serve(socket: UdpSocket, mut agent: Agent) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let faults = *lock(&agent.shared.faults);
        if faults.crashed {
            agent.shared.record(EventKind::FaultApplied("crashed"));
            continue;
        }
        if faults.drop > 0.0 && agent.rng.gen_bool(faults.drop) {
            agent.shared.record(EventKind::FaultApplied("dropped"));
            continue;
        }
        let Some(mut reply) = agent.handle(buf.get(..n).unwrap_or_default()) else {
            continue;
        };
        if faults.garbage {
            agent.shared.record(EventKind::FaultApplied("garbage"));
            reply = agent.garble(reply);
        }
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        let _ = socket.send_to(&reply, from).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wrong_community_is_dropped_and_counted() {
        let lab = PduLab::start(PduLabSpec::new(1, 4, model::by_name("apc-rpdu").unwrap()))
            .await
            .unwrap();
        let pdu = &lab.pdus()[0];
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let req = Pdu::request(PduType::Get, 1, &[model::oid(model::SYS_NAME)]);
        sock.send_to(&encode_community(Version::V2c, b"public", &req), pdu.addr())
            .await
            .unwrap();
        sock.send_to(
            &encode_community(Version::V2c, b"private", &req),
            pdu.addr(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf).await.unwrap();
        let Message::Community {
            community,
            pdu: reply,
            ..
        } = decode_message(&buf[..n]).unwrap()
        else {
            panic!()
        };
        assert_eq!(community, b"private");
        assert_eq!(reply.varbinds[0].1, Value::OctetString(b"pdu1".to_vec()));
        assert_eq!(pdu.counter(SNMP_IN_BAD_COMMUNITY_NAMES), 1);
    }
}
