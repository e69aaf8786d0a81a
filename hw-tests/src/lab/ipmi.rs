//! A simulated IPMI v2.0 BMC speaking RMCP+ over UDP (the BMC role of the `drivers::ipmi`
//! codec: it decodes what consoles encode and encodes what they decode).
//!
//! Request handling is [`handle`], a function of the BMC's state, one datagram and the time,
//! that returns the reply (if any); [`serve`] is the socket loop around it (one task per BMC,
//! replies delayed by the latency knob through a timer queue, no task per packet).
//!
//! What it answers:
//! - ASF presence ping (DSP0136 §3.2.4), outside any session.
//! - Outside a session (IPMI 1.5 or 2.0 framing, session id 0, no authentication): Get Channel
//!   Authentication Capabilities (§22.13) and Get Channel Cipher Suites (§22.15, suites 3
//!   and 17, or those of the vendor profile: iLO and XCC offer only 17). Other commands outside a session are discarded silently:
//!   only session-setup commands are sessionless, and a BMC does not answer the rest.
//! - Open Session (§13.17/§13.18, suites 3 and 17 only), RAKP 1–4 (§13.20–§13.23).
//! - In a session (integrity checked, then decrypted; §13.28.4): Get Device ID (§20.1), Get
//!   System GUID (§22.14), Get Channel Authentication Capabilities, Get Channel Cipher
//!   Suites, Set Session Privilege Level (§22.18), Close Session (§22.19), Get Chassis Status
//!   (§28.2), Chassis Control (§28.3); anything else gets completion code C1h.

use super::node::{NodeRefusal, PowerAction};
use super::profile::IpmiProfile;
use super::{BmcHandle, EventKind, Faults, LabUser, Shared};
use drivers::ipmi::crypto::{
    constant_time_eq, rakp2_auth_code, rakp3_auth_code, rakp4_integrity_check, CipherSuite,
    RakpInputs, SessionKeys,
};
use drivers::ipmi::message::{
    chassis_control, Algorithms, Body, ChannelAuthCapabilities, ChannelCipherSuites,
    ChassisControl, ChassisStatus, CloseSession, DeviceId, GetChannelCipherSuites, IpmiRequest,
    OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp2Accepted, Rakp3, Rakp4,
    SessionPrivilegeLevel, SetSessionPrivilegeLevel, SystemGuid, NETFN_APP, NETFN_CHASSIS,
    PRIV_ADMINISTRATOR, PRIV_CALLBACK, PRIV_OPERATOR, PRIV_USER, RAKP_INVALID_INTEGRITY_CHECK,
    RAKP_UNAUTHORIZED_NAME, ROLE_NAME_ONLY_LOOKUP,
};
use drivers::ipmi::rmcp::{PresencePong, RmcpClass, RmcpHeader, ASF_IANA, ASF_PRESENCE_PING};
use drivers::ipmi::session::{
    decode_header, decode_packet, encode_packet, Packet, PayloadType, SessionHeader, V15Header,
    V20Header, AUTH_TYPE_NONE,
};
use drivers::Secret;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Most sessions a BMC of the lab's own profile holds at once (real BMCs have 4–32 slots,
/// see the vendor profiles); more is refused with RMCP+ status 01h, "insufficient resources
/// to create a session" (§13.24).
pub const MAX_SESSIONS: usize = 32;
/// The LAN channel number the BMC reports (channel 0Eh in a request means "this one", §6.3).
pub const LAN_CHANNEL: u8 = 1;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// How far behind the highest received session sequence number a packet may be and still be
/// accepted once, and how far ahead it may jump (§6.12.13 suggests tolerating a window of
/// reordered packets; a console's retransmissions make its numbers jump).
const SEQ_WINDOW_BEHIND: u32 = 16;
const SEQ_WINDOW_AHEAD: u32 = 64;

/// RMCP+ status codes the BMC sends (§13.24, Table 13-15).
mod status {
    pub const INSUFFICIENT_RESOURCES: u8 = 0x01;
    pub const INVALID_SESSION_ID: u8 = 0x02;
    pub const INVALID_AUTH_ALGORITHM: u8 = 0x04;
    pub const INVALID_INTEGRITY_ALGORITHM: u8 = 0x05;
    pub const INVALID_ROLE: u8 = 0x09;
    pub const UNAUTHORIZED_ROLE: u8 = 0x0A;
    pub const INVALID_NAME_LENGTH: u8 = 0x0C;
    pub const INVALID_CONFIDENTIALITY_ALGORITHM: u8 = 0x10;
    pub const NO_CIPHER_SUITE_MATCH: u8 = 0x11;
    pub const ILLEGAL_PARAMETER: u8 = 0x12;
}

/// Completion codes the BMC sends (§5.2, Table 5-2, and the command-specific ones).
mod cc {
    pub const OK: u8 = 0x00;
    pub const INVALID_COMMAND: u8 = 0xC1;
    pub const REQUEST_DATA_LENGTH_INVALID: u8 = 0xC7;
    pub const INVALID_DATA_FIELD: u8 = 0xCC;
    pub const INSUFFICIENT_PRIVILEGE: u8 = 0xD4;
    pub const NOT_IN_PRESENT_STATE: u8 = 0xD5;
    /// Set Session Privilege Level: "requested level not available for this user" (§22.18).
    pub const LEVEL_NOT_AVAILABLE: u8 = 0x80;
    /// Set Session Privilege Level: "requested level exceeds channel and/or user privilege
    /// limit" (§22.18).
    pub const LEVEL_EXCEEDS_LIMIT: u8 = 0x81;
    /// Close Session: "invalid session id in request" (§22.19).
    pub const INVALID_SESSION_ID: u8 = 0x87;
}

/// Everything one simulated BMC is configured with.
#[derive(Clone)]
pub struct BmcConfig {
    /// Name (`node1` …).
    pub name: String,
    /// The address its socket is bound to.
    pub addr: SocketAddr,
    /// System GUID, wire order.
    pub guid: [u8; 16],
    /// The users it knows.
    pub users: Vec<LabUser>,
    /// Whether the node starts powered on.
    pub power_on: bool,
    /// Delay of power changes.
    pub power_delay: Duration,
    /// Idle time after which a session is forgotten.
    pub session_timeout: Duration,
    /// Initial faults.
    pub faults: Faults,
    /// RNG seed.
    pub seed: u64,
    /// Power hook.
    pub power_hook: Option<super::node::PowerHook>,
    /// The vendor profile: cipher suites offered, chassis status lag.
    pub profile: &'static IpmiProfile,
    /// Most sessions at once (the profile's unless overridden).
    pub max_sessions: usize,
}

impl BmcConfig {
    /// A BMC named `name` with one administrator, for tests that call [`handle`] directly.
    pub fn new(name: &str, user: &str, password: Secret) -> Self {
        let lab = super::LabSpec::new(1, user, password);
        Self {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            guid: [0xA5; 16],
            users: lab.users,
            power_on: true,
            power_delay: Duration::ZERO,
            session_timeout: lab.session_timeout,
            faults: Faults::default(),
            seed: lab.seed,
            power_hook: None,
            profile: lab.profile,
            max_sessions: lab.profile.max_sessions,
        }
    }
}

/// Tracks a console's session sequence numbers: zero, replays and numbers outside the window
/// are rejected (§6.12.13).
#[derive(Debug, Clone, Copy, Default)]
struct SeqWindow {
    highest: u32,
    /// Bit i set: `highest - i` was seen.
    seen: u32,
}

impl SeqWindow {
    fn accept(&mut self, seq: u32) -> bool {
        if seq == 0 {
            return false;
        }
        if self.highest == 0 {
            self.highest = seq;
            self.seen = 1;
            return true;
        }
        let ahead = seq.wrapping_sub(self.highest);
        if ahead != 0 && ahead <= SEQ_WINDOW_AHEAD {
            self.seen = self.seen.checked_shl(ahead).unwrap_or(0) | 1;
            self.highest = seq;
            return true;
        }
        let behind = self.highest.wrapping_sub(seq);
        if behind < SEQ_WINDOW_BEHIND && self.seen & (1 << behind) == 0 {
            self.seen |= 1 << behind;
            return true;
        }
        false
    }
}

/// The values RAKP 1 fixed, kept to answer RAKP 3 and to derive the keys.
#[derive(Debug, Clone)]
struct Rakp {
    console_random: [u8; 16],
    bmc_random: [u8; 16],
    role: u8,
    username: Vec<u8>,
    user: usize,
    /// The highest level this session may be raised to.
    max_privilege: u8,
}

#[derive(Debug)]
enum Stage {
    /// Open Session answered; waiting for RAKP 1.
    Opened,
    /// RAKP 2 sent; waiting for RAKP 3.
    Authenticating(Rakp),
    /// RAKP 4 sent: the session carries commands.
    Active {
        rakp: Rakp,
        keys: SessionKeys,
        privilege: u8,
        in_seq: SeqWindow,
        out_seq: u32,
    },
}

#[derive(Debug)]
struct Session {
    console_id: u32,
    suite: CipherSuite,
    open_max_privilege: u8,
    stage: Stage,
    last_activity: Instant,
}

/// The state of one simulated BMC that [`handle`] works on.
pub struct BmcState {
    shared: Arc<Shared>,
    users: Vec<LabUser>,
    session_timeout: Duration,
    sessions: HashMap<u32, Session>,
    rng: StdRng,
    crash_epoch: u64,
    /// Set when a chassis control was done through IPMI (Get Chassis Status reports it).
    last_power_by_ipmi: bool,
    /// The cipher suites offered and accepted (the profile's).
    suites: &'static [u8],
    /// Most sessions at once.
    max_sessions: usize,
    /// How long Get Chassis Status trails a power change (the profile's).
    status_lag: Duration,
    /// Until when Get Chassis Status still reports the power from before the last chassis
    /// control, and what it was.
    stale: Option<(Instant, bool)>,
    /// Under the `lies` fault: the power state last asked for, which Get Chassis Status
    /// reports instead of the node's.
    claimed: Option<bool>,
}

impl BmcState {
    /// A BMC in its initial state (no sessions), with its own shared power/fault state.
    pub fn new(cfg: BmcConfig) -> Self {
        let shared = Arc::new(Shared::new(&cfg));
        Self {
            shared,
            users: cfg.users,
            session_timeout: cfg.session_timeout,
            sessions: HashMap::new(),
            rng: StdRng::seed_from_u64(cfg.seed),
            crash_epoch: 0,
            last_power_by_ipmi: false,
            suites: cfg.profile.suites,
            max_sessions: cfg.max_sessions,
            status_lag: cfg.profile.status_lag,
            stale: None,
            claimed: None,
        }
    }

    /// A handle on this BMC's power, faults and events.
    pub fn handle(&self) -> BmcHandle {
        BmcHandle::new(self.shared.clone())
    }

    /// How many sessions exist (in any stage).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn new_session_id(&mut self) -> u32 {
        loop {
            let id: u32 = self.rng.gen();
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.session_timeout;
        let shared = &self.shared;
        self.sessions.retain(|&id, s| {
            let keep = now.saturating_duration_since(s.last_activity) < timeout;
            if !keep {
                shared.record(EventKind::SessionClosed {
                    session_id: id,
                    reason: "idle timeout",
                });
            }
            keep
        });
    }
}

/// Handles one datagram at `now` and returns the reply to send, if any. Never panics, whatever
/// the bytes (property-tested). Faults that change *what* is answered (crash, drop, garbage,
/// refuse-auth, stuck, power-on-fails) act here; latency is the socket loop's.
pub fn handle(st: &mut BmcState, datagram: &[u8], now: Instant) -> Option<Vec<u8>> {
    let reply = handle_inner(st, datagram, now);
    st.shared
        .sessions
        .store(st.sessions.len(), std::sync::atomic::Ordering::Relaxed);
    st.shared
        .sessions_peak
        .fetch_max(st.sessions.len(), std::sync::atomic::Ordering::Relaxed);
    reply
}

fn handle_inner(st: &mut BmcState, datagram: &[u8], now: Instant) -> Option<Vec<u8>> {
    st.shared.settle(now);
    let epoch = st.shared.crash_epoch();
    if epoch != st.crash_epoch {
        st.crash_epoch = epoch;
        for id in st.sessions.keys() {
            st.shared.record(EventKind::SessionClosed {
                session_id: *id,
                reason: "crash",
            });
        }
        st.sessions.clear();
    }
    let faults = st.shared.faults();
    if faults.crashed {
        st.shared.record(EventKind::FaultApplied("crashed"));
        return None;
    }
    st.expire(now);
    if faults.drop > 0.0 && st.rng.gen::<f64>() < faults.drop {
        st.shared.record(EventKind::FaultApplied("dropped"));
        return None;
    }
    let reply = respond(st, datagram, now, &faults)?;
    if faults.garbage {
        st.shared.record(EventKind::FaultApplied("garbage"));
        return Some(garble(&mut st.rng, reply));
    }
    Some(reply)
}

/// Turns a valid reply into garbage: random bytes, a truncated copy, or a copy with one bit
/// flipped. Integrity codes (in a session) and message checksums catch a flipped bit, except
/// in fields nothing covers (the RMCP header's reserved and sequence bytes, an IPMI 1.5
/// session sequence number), where the reply stays readable and still tells the truth.
fn garble(rng: &mut StdRng, mut reply: Vec<u8>) -> Vec<u8> {
    match rng.gen_range(0..3u8) {
        0 => {
            let n = rng.gen_range(1..=64usize);
            (0..n).map(|_| rng.gen()).collect()
        }
        1 => {
            let n = rng.gen_range(0..reply.len().max(1));
            reply.truncate(n);
            reply
        }
        _ => {
            if !reply.is_empty() {
                let i = rng.gen_range(0..reply.len());
                if let Some(b) = reply.get_mut(i) {
                    *b ^= 1 << rng.gen_range(0..8u8);
                }
            }
            reply
        }
    }
}

fn respond(st: &mut BmcState, datagram: &[u8], now: Instant, faults: &Faults) -> Option<Vec<u8>> {
    let (rmcp, rest) = RmcpHeader::decode(datagram).ok()?;
    match rmcp.class {
        RmcpClass::Asf => presence_pong(st, rest),
        RmcpClass::Ipmi => {
            let header = match decode_header(datagram) {
                Ok(h) => h,
                Err(_) => {
                    st.shared
                        .record(EventKind::Discarded("malformed session header"));
                    return None;
                }
            };
            match header {
                SessionHeader::V15(h) => {
                    // IPMI 1.5 sessions are not offered (no auth types in the capabilities),
                    // so only session-less requests are answered.
                    if h.session_id != 0 || h.auth_type != AUTH_TYPE_NONE {
                        st.shared.record(EventKind::Discarded("IPMI 1.5 session"));
                        return None;
                    }
                    let p = decode_packet(datagram, None).ok()?;
                    presession(st, &p.payload, true)
                }
                SessionHeader::V20(h) => {
                    let setup = h.session_id == 0 && !h.authenticated && !h.encrypted;
                    match h.payload_type {
                        PayloadType::Ipmi if setup => {
                            let p = decode_packet(datagram, None).ok()?;
                            presession(st, &p.payload, false)
                        }
                        PayloadType::Ipmi => in_session(st, datagram, h, now, faults),
                        PayloadType::OpenSessionRequest if setup => {
                            let p = decode_packet(datagram, None).ok()?;
                            open_session(st, &p.payload, now)
                        }
                        PayloadType::Rakp1 if setup => {
                            let p = decode_packet(datagram, None).ok()?;
                            rakp1(st, &p.payload, now)
                        }
                        PayloadType::Rakp3 if setup => {
                            let p = decode_packet(datagram, None).ok()?;
                            rakp3(st, &p.payload, now, faults)
                        }
                        _ => {
                            st.shared
                                .record(EventKind::Discarded("unsupported payload"));
                            None
                        }
                    }
                }
            }
        }
        RmcpClass::Other(_) => None,
    }
}

/// Answers an ASF presence ping (DSP0136 §3.2.4.3): supported entities bit 7 = IPMI.
fn presence_pong(st: &mut BmcState, rest: &[u8]) -> Option<Vec<u8>> {
    let iana = rest.get(..4)?;
    if iana != ASF_IANA.to_be_bytes() || *rest.get(4)? != ASF_PRESENCE_PING {
        return None;
    }
    st.shared.record(EventKind::Ping);
    Some(
        PresencePong {
            tag: *rest.get(5)?,
            supported_entities: 0x81,
        }
        .encode(),
    )
}

/// The capabilities this BMC reports (§22.13, Table 22-15): byte 1 bit 7 "IPMI v2.0+ extended
/// capabilities available" and no IPMI 1.5 authentication type; byte 2 bit 2 "non-null user
/// names enabled"; byte 3 bit 1 "channel supports IPMI v2.0 connections" only.
fn auth_capabilities() -> ChannelAuthCapabilities {
    ChannelAuthCapabilities {
        channel: LAN_CHANNEL,
        auth_types: 0x80,
        status: 0x04,
        extended: 0x02,
        oem_iana: 0,
        oem_aux: 0,
    }
}

/// The cipher suite records (§22.15.1, Table 22-19): start 0xC0, suite id, then the
/// authentication (tag 00b), integrity (01b) and confidentiality (10b) algorithm numbers.
fn cipher_suite_records(offered: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in [CipherSuite::SUITE_3, CipherSuite::SUITE_17]
        .into_iter()
        .filter(|s| offered.contains(&s.id))
    {
        v.extend_from_slice(&[
            0xC0,
            s.id,
            s.auth.to_byte(),
            0x40 | s.integrity.to_byte(),
            0x80 | s.confidentiality.to_byte(),
        ]);
    }
    v
}

/// Get Channel Cipher Suites (§22.15): the record list in 16-byte chunks by index; a chunk
/// shorter than 16 bytes ends the list.
fn cipher_suites(req: &GetChannelCipherSuites, offered: &[u8]) -> (u8, Vec<u8>) {
    if req.payload_type != 0 {
        return (cc::INVALID_DATA_FIELD, Vec::new());
    }
    let all = if req.list_by_suite {
        cipher_suite_records(offered)
    } else {
        // "List supported algorithms": the algorithm bytes once each.
        vec![0x01, 0x03, 0x41, 0x44, 0x81]
    };
    let start = usize::from(req.index) * 16;
    let chunk = all
        .get(start.min(all.len())..(start + 16).min(all.len()))
        .unwrap_or_default()
        .to_vec();
    (
        cc::OK,
        ChannelCipherSuites {
            channel: LAN_CHANNEL,
            records: chunk,
        }
        .encode(),
    )
}

/// Session-less IPMI requests: only the commands a console needs before it has a session.
fn presession(st: &mut BmcState, payload: &[u8], v15: bool) -> Option<Vec<u8>> {
    let req = IpmiRequest::decode(payload).ok()?;
    let (code, data) = match (req.net_fn, req.cmd) {
        (NETFN_APP, 0x38) => (cc::OK, auth_capabilities().encode()),
        (NETFN_APP, 0x54) => match GetChannelCipherSuites::decode(&req.data) {
            Ok(r) => cipher_suites(&r, st.suites),
            Err(_) => (cc::REQUEST_DATA_LENGTH_INVALID, Vec::new()),
        },
        _ => {
            st.shared
                .record(EventKind::Discarded("command outside a session"));
            return None;
        }
    };
    st.shared.record(EventKind::Command {
        net_fn: req.net_fn,
        cmd: req.cmd,
        completion_code: code,
    });
    let header = if v15 {
        SessionHeader::V15(V15Header {
            auth_type: AUTH_TYPE_NONE,
            sequence: 0,
            session_id: 0,
            auth_code: None,
        })
    } else {
        SessionHeader::outside_session(PayloadType::Ipmi)
    };
    encode_packet(
        &Packet {
            header,
            payload: req.response(code, data).encode(),
        },
        None,
        [0; 16],
    )
    .ok()
}

fn setup_reply(pt: PayloadType, payload: Vec<u8>) -> Option<Vec<u8>> {
    encode_packet(
        &Packet {
            header: SessionHeader::outside_session(pt),
            payload,
        },
        None,
        [0; 16],
    )
    .ok()
}

/// Which cipher suite a proposal names, or the RMCP+ status that refuses it (§13.17, §13.24).
/// Only suites 3 and 17 are enabled: an algorithm number we do not implement at all gets the
/// status for that algorithm (04h, 05h, 10h); known algorithms in a combination that is not
/// an enabled suite, which includes suite 0's "none, none, none", get 11h "no cipher suite
/// match with proposed security algorithms".
fn choose_suite(a: &Algorithms, offered: &[u8]) -> Result<CipherSuite, u8> {
    use drivers::ipmi::crypto::{AuthAlgorithm, ConfidentialityAlgorithm, IntegrityAlgorithm};
    if AuthAlgorithm::from_byte(a.auth).is_none() {
        return Err(status::INVALID_AUTH_ALGORITHM);
    }
    if IntegrityAlgorithm::from_byte(a.integrity).is_none() {
        return Err(status::INVALID_INTEGRITY_ALGORITHM);
    }
    if ConfidentialityAlgorithm::from_byte(a.confidentiality).is_none() {
        return Err(status::INVALID_CONFIDENTIALITY_ALGORITHM);
    }
    [CipherSuite::SUITE_3, CipherSuite::SUITE_17]
        .into_iter()
        .filter(|s| offered.contains(&s.id))
        .find(|s| {
            s.auth.to_byte() == a.auth
                && s.integrity.to_byte() == a.integrity
                && s.confidentiality.to_byte() == a.confidentiality
        })
        .ok_or(status::NO_CIPHER_SUITE_MATCH)
}

fn open_session(st: &mut BmcState, payload: &[u8], now: Instant) -> Option<Vec<u8>> {
    let req = match OpenSessionRequest::decode(payload) {
        Ok(r) => r,
        Err(_) => {
            // Answer what can be answered: the tag and "illegal parameter".
            let tag = *payload.first()?;
            st.shared.record(EventKind::SetupRefused {
                stage: "open session",
                status: status::ILLEGAL_PARAMETER,
            });
            let refusal = OpenSessionResponse {
                tag,
                status: status::ILLEGAL_PARAMETER,
                max_privilege: 0,
                console_session_id: payload
                    .get(4..8)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map_or(0, u32::from_le_bytes),
                accepted: None,
            };
            return setup_reply(PayloadType::OpenSessionResponse, refusal.encode());
        }
    };
    let refuse = |st: &mut BmcState, code: u8| {
        st.shared.record(EventKind::SetupRefused {
            stage: "open session",
            status: code,
        });
        setup_reply(
            PayloadType::OpenSessionResponse,
            OpenSessionResponse {
                tag: req.tag,
                status: code,
                max_privilege: 0,
                console_session_id: req.console_session_id,
                accepted: None,
            }
            .encode(),
        )
    };
    let suite = match choose_suite(&req.algorithms, st.suites) {
        Ok(s) => s,
        Err(code) => return refuse(st, code),
    };
    // 0 means "the highest level the algorithms allow"; 5 (OEM) and above are not roles here.
    if req.max_privilege > PRIV_ADMINISTRATOR {
        return refuse(st, status::INVALID_ROLE);
    }
    if req.console_session_id == 0 {
        return refuse(st, status::INVALID_SESSION_ID);
    }
    if st.sessions.len() >= st.max_sessions {
        return refuse(st, status::INSUFFICIENT_RESOURCES);
    }
    let max_privilege = if req.max_privilege == 0 {
        PRIV_ADMINISTRATOR
    } else {
        req.max_privilege
    };
    let id = st.new_session_id();
    st.sessions.insert(
        id,
        Session {
            console_id: req.console_session_id,
            suite,
            open_max_privilege: max_privilege,
            stage: Stage::Opened,
            last_activity: now,
        },
    );
    setup_reply(
        PayloadType::OpenSessionResponse,
        OpenSessionResponse {
            tag: req.tag,
            status: 0,
            max_privilege,
            console_session_id: req.console_session_id,
            accepted: Some((id, req.algorithms)),
        }
        .encode(),
    )
}

fn rakp2_refusal(st: &mut BmcState, tag: u8, console_id: u32, code: u8) -> Option<Vec<u8>> {
    st.shared.record(EventKind::SetupRefused {
        stage: "RAKP 1",
        status: code,
    });
    setup_reply(
        PayloadType::Rakp2,
        Rakp2 {
            tag,
            status: code,
            console_session_id: console_id,
            accepted: None,
        }
        .encode(),
    )
}

fn rakp1(st: &mut BmcState, payload: &[u8], now: Instant) -> Option<Vec<u8>> {
    let tag = *payload.first()?;
    let bmc_id = payload
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)?;
    let Some(console_id) = st.sessions.get(&bmc_id).map(|s| s.console_id) else {
        return rakp2_refusal(st, tag, 0, status::INVALID_SESSION_ID);
    };
    if payload
        .get(27)
        .is_some_and(|&n| usize::from(n) > Rakp1::MAX_USERNAME)
    {
        st.sessions.remove(&bmc_id);
        return rakp2_refusal(st, tag, console_id, status::INVALID_NAME_LENGTH);
    }
    let Ok(req) = Rakp1::decode(payload) else {
        return rakp2_refusal(st, tag, console_id, status::ILLEGAL_PARAMETER);
    };
    let level = req.role & 0x0F;
    if !(PRIV_CALLBACK..=PRIV_ADMINISTRATOR).contains(&level) || req.role & 0xE0 != 0 {
        st.sessions.remove(&bmc_id);
        return rakp2_refusal(st, tag, console_id, status::INVALID_ROLE);
    }
    let Some(user) = st
        .users
        .iter()
        .position(|u| u.name.as_bytes() == req.username.as_slice())
    else {
        st.sessions.remove(&bmc_id);
        return rakp2_refusal(st, tag, console_id, RAKP_UNAUTHORIZED_NAME);
    };
    let user_max = st.users.get(user).map_or(0, |u| u.max_privilege);
    // §13.20: with name-only lookup the user is found by name and the session is limited to
    // the user's maximum (Set Session Privilege Level refuses more later); with
    // name+privilege lookup a user who does not hold the requested level does not match.
    if req.role & ROLE_NAME_ONLY_LOOKUP == 0 && level > user_max {
        st.sessions.remove(&bmc_id);
        return rakp2_refusal(st, tag, console_id, status::UNAUTHORIZED_ROLE);
    }
    let bmc_random: [u8; 16] = st.rng.gen();
    let guid = st.shared.guid;
    let session = st.sessions.get_mut(&bmc_id)?;
    if matches!(session.stage, Stage::Active { .. }) {
        // RAKP 1 for a session that is already up: not a retransmission we can honour.
        return None;
    }
    let max_privilege = level.min(user_max).min(session.open_max_privilege);
    let rakp = Rakp {
        console_random: req.console_random,
        bmc_random,
        role: req.role,
        username: req.username.clone(),
        user,
        max_privilege,
    };
    let password = st.users.get(user)?.password.clone();
    let inputs = inputs(&rakp, console_id, bmc_id, guid);
    let auth_code = rakp2_auth_code(session.suite.auth, password.expose(), &inputs);
    session.stage = Stage::Authenticating(rakp);
    session.last_activity = now;
    setup_reply(
        PayloadType::Rakp2,
        Rakp2 {
            tag: req.tag,
            status: 0,
            console_session_id: console_id,
            accepted: Some(Rakp2Accepted {
                bmc_random,
                bmc_guid: guid,
                auth_code,
            }),
        }
        .encode(),
    )
}

fn inputs(rakp: &Rakp, console_id: u32, bmc_id: u32, guid: [u8; 16]) -> RakpInputs<'_> {
    RakpInputs {
        console_session_id: console_id,
        bmc_session_id: bmc_id,
        console_random: rakp.console_random,
        bmc_random: rakp.bmc_random,
        bmc_guid: guid,
        role: rakp.role,
        username: &rakp.username,
    }
}

fn rakp4_reply(tag: u8, code: u8, console_id: u32, icv: Vec<u8>) -> Option<Vec<u8>> {
    setup_reply(
        PayloadType::Rakp4,
        Rakp4 {
            tag,
            status: code,
            console_session_id: console_id,
            integrity_check: icv,
        }
        .encode(),
    )
}

fn rakp3(st: &mut BmcState, payload: &[u8], now: Instant, faults: &Faults) -> Option<Vec<u8>> {
    let req = Rakp3::decode(payload).ok()?;
    let guid = st.shared.guid;
    let Some(session) = st.sessions.get_mut(&req.bmc_session_id) else {
        st.shared.record(EventKind::SetupRefused {
            stage: "RAKP 3",
            status: status::INVALID_SESSION_ID,
        });
        return rakp4_reply(req.tag, status::INVALID_SESSION_ID, 0, Vec::new());
    };
    let console_id = session.console_id;
    let suite = session.suite;
    let rakp = match &session.stage {
        Stage::Opened => return None,
        Stage::Authenticating(r) | Stage::Active { rakp: r, .. } => r.clone(),
    };
    if req.status != 0 {
        // The console rejected our RAKP 2 (wrong password on its side): free the slot now.
        st.sessions.remove(&req.bmc_session_id);
        st.shared.record(EventKind::SessionClosed {
            session_id: req.bmc_session_id,
            reason: "console rejected RAKP 2",
        });
        return None;
    }
    let password = st.users.get(rakp.user)?.password.clone();
    let i = inputs(&rakp, console_id, req.bmc_session_id, guid);
    let expected = rakp3_auth_code(suite.auth, password.expose(), &i);
    let valid = constant_time_eq(&expected, &req.auth_code);
    if !valid || faults.refuse_auth {
        if faults.refuse_auth {
            st.shared.record(EventKind::FaultApplied("refuse-auth"));
        }
        st.sessions.remove(&req.bmc_session_id);
        st.shared.record(EventKind::SetupRefused {
            stage: "RAKP 3",
            status: RAKP_INVALID_INTEGRITY_CHECK,
        });
        return rakp4_reply(
            req.tag,
            RAKP_INVALID_INTEGRITY_CHECK,
            console_id,
            Vec::new(),
        );
    }
    let keys = SessionKeys::derive(suite, password.expose(), None, &i);
    let icv = rakp4_integrity_check(suite.auth, keys.sik(), &i);
    session.last_activity = now;
    if !matches!(session.stage, Stage::Active { .. }) {
        let user = String::from_utf8_lossy(&rakp.username).into_owned();
        // Sessions start at USER level, or lower if that is all the user may hold (§13.15);
        // the console raises it with Set Session Privilege Level.
        let privilege = PRIV_USER.min(rakp.max_privilege);
        session.stage = Stage::Active {
            rakp,
            keys,
            privilege,
            in_seq: SeqWindow::default(),
            out_seq: 0,
        };
        st.shared.record(EventKind::SessionOpened {
            session_id: req.bmc_session_id,
            user,
            suite: suite.id,
        });
    }
    rakp4_reply(req.tag, 0, console_id, icv)
}

/// Privilege each command needs (Appendix G, "Command Assignments"): status reads need USER, power
/// control OPERATOR, closing one's own session CALLBACK.
fn required_privilege(net_fn: u8, cmd: u8) -> Option<u8> {
    match (net_fn, cmd) {
        (NETFN_APP, 0x01 | 0x37 | 0x38 | 0x54) => Some(PRIV_USER),
        (NETFN_APP, 0x3B | 0x3C) => Some(PRIV_CALLBACK),
        (NETFN_CHASSIS, 0x01) => Some(PRIV_USER),
        (NETFN_CHASSIS, 0x02) => Some(PRIV_OPERATOR),
        _ => None,
    }
}

/// What a command asks of the session after its reply is sent.
enum After {
    Nothing,
    Close(u32),
}

fn in_session(
    st: &mut BmcState,
    datagram: &[u8],
    h: V20Header,
    now: Instant,
    faults: &Faults,
) -> Option<Vec<u8>> {
    let Some(session) = st.sessions.get_mut(&h.session_id) else {
        st.shared.record(EventKind::Discarded("unknown session"));
        return None;
    };
    let Stage::Active {
        keys,
        in_seq,
        privilege,
        rakp,
        ..
    } = &mut session.stage
    else {
        st.shared.record(EventKind::Discarded("session not active"));
        return None;
    };
    // Suites 3 and 17 both integrity-protect and encrypt every packet (§13.28); a packet
    // without either is not of this session.
    if !h.authenticated || !h.encrypted {
        st.shared
            .record(EventKind::Discarded("unprotected packet in a session"));
        return None;
    }
    let Ok(packet) = decode_packet(datagram, Some(keys)) else {
        st.shared
            .record(EventKind::Discarded("integrity or decryption failed"));
        return None;
    };
    if !in_seq.accept(h.sequence) {
        st.shared
            .record(EventKind::Discarded("session sequence number"));
        return None;
    }
    let Ok(req) = IpmiRequest::decode(&packet.payload) else {
        st.shared
            .record(EventKind::Discarded("malformed IPMI message"));
        return None;
    };
    session.last_activity = now;
    let session_privilege = *privilege;
    let session_max = rakp.max_privilege;
    let user_max = st.users.get(rakp.user).map_or(0, |u| u.max_privilege);
    let console_id = session.console_id;

    let mut after = After::Nothing;
    let (code, data) = match required_privilege(req.net_fn, req.cmd) {
        None => (cc::INVALID_COMMAND, Vec::new()),
        Some(need) if need > session_privilege => (cc::INSUFFICIENT_PRIVILEGE, Vec::new()),
        Some(_) => match (req.net_fn, req.cmd) {
            (NETFN_APP, 0x01) => (cc::OK, device_id().encode()),
            (NETFN_APP, 0x37) => (
                cc::OK,
                SystemGuid {
                    guid: st.shared.guid,
                }
                .encode(),
            ),
            (NETFN_APP, 0x38) => (cc::OK, auth_capabilities().encode()),
            (NETFN_APP, 0x54) => match GetChannelCipherSuites::decode(&req.data) {
                Ok(r) => cipher_suites(&r, st.suites),
                Err(_) => (cc::REQUEST_DATA_LENGTH_INVALID, Vec::new()),
            },
            (NETFN_APP, 0x3B) => match SetSessionPrivilegeLevel::decode(&req.data) {
                Err(_) => (cc::REQUEST_DATA_LENGTH_INVALID, Vec::new()),
                // 0: "no change, just return the present level".
                Ok(r) if r.level == 0 => (
                    cc::OK,
                    SessionPrivilegeLevel {
                        level: session_privilege,
                    }
                    .encode(),
                ),
                Ok(r) if r.level > PRIV_ADMINISTRATOR => (cc::LEVEL_NOT_AVAILABLE, Vec::new()),
                Ok(r) if r.level > user_max || r.level > session_max => {
                    (cc::LEVEL_EXCEEDS_LIMIT, Vec::new())
                }
                Ok(r) => {
                    if let Some(Session {
                        stage: Stage::Active { privilege, .. },
                        ..
                    }) = st.sessions.get_mut(&h.session_id)
                    {
                        *privilege = r.level;
                    }
                    (cc::OK, SessionPrivilegeLevel { level: r.level }.encode())
                }
            },
            (NETFN_APP, 0x3C) => match CloseSession::decode(&req.data) {
                Err(_) => (cc::REQUEST_DATA_LENGTH_INVALID, Vec::new()),
                // §22.19: a session may close itself; closing another needs ADMINISTRATOR.
                Ok(r) if r.session_id == h.session_id => {
                    after = After::Close(r.session_id);
                    (cc::OK, Vec::new())
                }
                Ok(r)
                    if session_privilege >= PRIV_ADMINISTRATOR
                        && st.sessions.contains_key(&r.session_id) =>
                {
                    after = After::Close(r.session_id);
                    (cc::OK, Vec::new())
                }
                Ok(_) => (cc::INVALID_SESSION_ID, Vec::new()),
            },
            (NETFN_CHASSIS, 0x01) => (cc::OK, chassis_status(st, now, faults).encode()),
            (NETFN_CHASSIS, 0x02) => match ChassisControl::decode(&req.data) {
                Err(_) => (cc::REQUEST_DATA_LENGTH_INVALID, Vec::new()),
                Ok(c) => (chassis(st, c.control, now, faults), Vec::new()),
            },
            _ => (cc::INVALID_COMMAND, Vec::new()),
        },
    };
    st.shared.record(EventKind::Command {
        net_fn: req.net_fn,
        cmd: req.cmd,
        completion_code: code,
    });

    let iv: [u8; 16] = st.rng.gen();
    let session = st.sessions.get_mut(&h.session_id)?;
    let Stage::Active { keys, out_seq, .. } = &mut session.stage else {
        return None;
    };
    // The BMC's own sequence numbers for the session start at 1 and never repeat (§13.6).
    *out_seq = out_seq.wrapping_add(1).max(1);
    let reply = encode_packet(
        &Packet {
            header: SessionHeader::V20(V20Header {
                payload_type: PayloadType::Ipmi,
                encrypted: true,
                authenticated: true,
                oem: None,
                session_id: console_id,
                sequence: *out_seq,
            }),
            payload: req.response(code, data).encode(),
        },
        Some(keys),
        iv,
    )
    .ok();
    if let After::Close(id) = after {
        st.sessions.remove(&id);
        st.shared.record(EventKind::SessionClosed {
            session_id: id,
            reason: "close session",
        });
    }
    reply
}

fn device_id() -> DeviceId {
    DeviceId {
        device_id: 0x20,
        device_revision: 0x01,
        firmware_major: 0x01,
        firmware_minor: 0x00,
        // IPMI 2.0, BCD with the minor version in the high nibble (§20.1).
        ipmi_version: 0x02,
        // Additional device support: bit 7, chassis device.
        additional_support: 0x80,
        manufacturer_id: 0,
        product_id: 0x5061,
        aux_firmware: None,
    }
}

/// Get Chassis Status (§28.2, Table 28-3): byte 1 bit 0 power on, bits 6:5 restore policy
/// 01b "restore power to the state it was in"; byte 2 bit 4 "last power-on state was entered
/// through an IPMI command".
fn chassis_status(st: &mut BmcState, now: Instant, faults: &Faults) -> ChassisStatus {
    let mut on = st.shared.with_node(|n| n.is_on());
    if let (true, Some(claimed)) = (faults.lies, st.claimed) {
        if claimed != on {
            st.shared.record(EventKind::FaultApplied("lies"));
        }
        on = claimed;
    }
    match st.stale {
        // A profile whose status trails the change (see profile.rs) still reports the state
        // from before the command.
        Some((until, was)) if now < until => {
            if was != on {
                st.shared.record(EventKind::FaultApplied("status-lag"));
            }
            on = was;
        }
        Some(_) => st.stale = None,
        None => {}
    }
    ChassisStatus {
        power_state: u8::from(on) | 0x20,
        last_power_event: if st.last_power_by_ipmi { 0x10 } else { 0 },
        misc: 0,
        front_panel: None,
    }
}

/// Chassis Control (§28.3, Table 28-4) as the node model's actions, with the stuck and
/// power-on-fails faults. Returns the completion code.
fn chassis(st: &mut BmcState, control: u8, now: Instant, faults: &Faults) -> u8 {
    let action = match control {
        chassis_control::POWER_DOWN => PowerAction::Down,
        chassis_control::POWER_UP => PowerAction::Up,
        chassis_control::POWER_CYCLE => PowerAction::Cycle,
        chassis_control::HARD_RESET => PowerAction::HardReset,
        chassis_control::SOFT_SHUTDOWN => PowerAction::SoftShutdown,
        // A diagnostic interrupt reaches the OS, not the power: acknowledged, no effect here.
        chassis_control::DIAGNOSTIC_INTERRUPT => return cc::OK,
        _ => return cc::INVALID_DATA_FIELD,
    };
    let on = st.shared.with_node(|n| n.is_on());
    if matches!(action, PowerAction::Cycle | PowerAction::HardReset) && !on {
        return cc::NOT_IN_PRESENT_STATE;
    }
    if faults.stuck {
        st.shared.record(EventKind::FaultApplied("stuck"));
        return cc::OK;
    }
    if faults.lies {
        // Acknowledged, not carried out; the status reports what was asked for from now on.
        st.shared.record(EventKind::FaultApplied("lies"));
        st.claimed = match action {
            PowerAction::Up | PowerAction::Cycle | PowerAction::HardReset => Some(true),
            PowerAction::Down | PowerAction::SoftShutdown => Some(false),
        };
        return cc::OK;
    }
    let result = if faults.power_on_fails && action == PowerAction::Up {
        st.shared.record(EventKind::FaultApplied("power-on-fails"));
        Ok(())
    } else if faults.power_on_fails && action == PowerAction::Cycle {
        st.shared.record(EventKind::FaultApplied("power-on-fails"));
        st.shared.with_node(|n| n.request_off_only(now));
        Ok(())
    } else {
        st.shared.with_node(|n| n.request(action, now))
    };
    match result {
        Ok(()) => {
            if !st.status_lag.is_zero() {
                let delay = st.shared.with_node(|n| n.delay());
                st.stale = Some((now + delay + st.status_lag, on));
            }
            st.last_power_by_ipmi = true;
            st.shared.settle(now);
            st.shared.wake.notify_one();
            cc::OK
        }
        Err(NodeRefusal::PowerIsOff) => cc::NOT_IN_PRESENT_STATE,
    }
}

/// Replies waiting out their latency: (due, arrival counter for FIFO order, peer, datagram),
/// earliest first.
type Outbox = BinaryHeap<Reverse<(Instant, u64, SocketAddr, Vec<u8>)>>;

/// Serves one BMC on `socket` until the task is aborted: receives datagrams, hands them to
/// [`handle`], and sends replies at once or, with the latency fault, from a timer queue.
/// Scheduled power changes are applied when due even when no datagram arrives.
pub async fn serve(socket: UdpSocket, mut st: BmcState) {
    let shared = st.shared.clone();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Replies waiting out their latency, earliest first (the counter keeps FIFO order).
    let mut outbox: Outbox = BinaryHeap::new();
    let mut counter: u64 = 0;
    loop {
        let next_send = outbox.peek().map(|Reverse((at, ..))| *at);
        let next_power = shared.next_change();
        let wake_at = match (next_send, next_power) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else {
                    // Errors on an unconnected UDP socket are transient (e.g. ENOBUFS).
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                let now = Instant::now();
                let Some(reply) = handle(&mut st, buf.get(..n).unwrap_or_default(), now) else {
                    continue;
                };
                let latency = shared.faults().latency_ms;
                if latency == 0 {
                    let _ = socket.send_to(&reply, from).await;
                } else {
                    counter = counter.wrapping_add(1);
                    outbox.push(Reverse((now + Duration::from_millis(latency), counter, from, reply)));
                }
            }
            () = sleep_until_opt(wake_at) => {
                let now = Instant::now();
                shared.settle(now);
                let crashed = shared.faults().crashed;
                while let Some(Reverse((at, ..))) = outbox.peek() {
                    if *at > now {
                        break;
                    }
                    if let Some(Reverse((_, _, to, reply))) = outbox.pop() {
                        // A BMC that crashed meanwhile sends nothing it had queued.
                        if !crashed {
                            let _ = socket.send_to(&reply, to).await;
                        }
                    }
                }
            }
            () = shared.wake.notified() => {}
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
