//! An async IPMI v2.0/RMCP+ session over one tokio `UdpSocket` (the console role).
//!
//! [`Session::open`] runs Get Channel Authentication Capabilities, Open Session, RAKP 1–4 and
//! Set Session Privilege Level; [`Session::call`] sends one command and waits for *its*
//! response. Every reply is checked in this order: source address, session id, integrity
//! (AuthCode) before decryption, session sequence window, then rqSeq/netFn/cmd. A datagram
//! that fails a check is dropped and the wait goes on until the try's deadline, so a late reply
//! to an earlier request (or a forged one) is never taken for the answer to a new one.
//!
//! The session's state is advanced before each send (sequence numbers, rqSeq), so a call the
//! engine cancels mid-wait leaves nothing a later reply could be matched against: the client
//! is cancel-safe as [`crate::PowerDevice`] requires.

use super::crypto::{
    rakp2_auth_code, rakp3_auth_code, rakp4_integrity_check, CipherSuite, ConfidentialityAlgorithm,
    IntegrityAlgorithm, RakpInputs, SessionKeys,
};
use super::message::{
    cipher_suite_ids, completion_code_text, rakp_status_text, Algorithms, Body,
    ChannelAuthCapabilities, CloseSession, Command, GetChannelAuthCapabilities,
    GetChannelCipherSuites, IpmiRequest, IpmiResponse, OpenSessionRequest, OpenSessionResponse,
    Rakp1, Rakp2, Rakp3, Rakp4, SetSessionPrivilegeLevel, RAKP_INVALID_INTEGRITY_CHECK,
    ROLE_NAME_ONLY_LOOKUP,
};
use super::session::{
    decode_header, decode_packet, encode_packet, Packet, PayloadType, SessionHeader, V15Header,
    V20Header, AUTH_TYPE_NONE,
};
use super::WireError;
use crate::{DeviceError, Secret};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Channel number meaning "the channel this request arrived on" (§6.3).
const THIS_CHANNEL: u8 = 0x0E;
/// Largest datagram we accept; IPMI LAN packets stay far below it.
const MAX_DATAGRAM: usize = 1024;
/// How far behind the highest accepted sequence number a reply may be and still be accepted
/// once (§6.12.13 recommends accepting a window behind to tolerate reordering).
const SEQ_WINDOW_BEHIND: u32 = 16;
/// How far ahead a reply may jump; replies lost on the way make the BMC's numbers skip.
const SEQ_WINDOW_AHEAD: u32 = 1024;

/// What a [`Session`] needs: where, who, and how long to wait.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The BMC's address (UDP port 623 unless the BMC says otherwise).
    pub address: SocketAddr,
    /// IPMI user name (at most 16 bytes).
    pub username: String,
    /// The user's password Kuid (at most 20 bytes for IPMI 2.0).
    pub password: Secret,
    /// The BMC key Kg, if the BMC has one set ("two-key login"); `None` uses the password.
    pub kg: Option<Secret>,
    /// Privilege level to run the session at (3 operator, 4 administrator).
    pub privilege: u8,
    /// Cipher suite to propose. Policy about suite 0 is the caller's (see `IpmiDevice`).
    pub suite: CipherSuite,
    /// Wait for the first try of each exchange; later tries wait longer (see [`Timing`]).
    pub timeout: Duration,
    /// Retransmissions after the first try.
    pub retries: u32,
}

/// Per-exchange timing: the first try waits `timeout`, try n waits `timeout × (1 + n/2)`,
/// so a BMC that is merely slow gets more time on each retry (the backoff) and the total stays
/// bounded by [`Timing::deadline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Wait of the first try.
    pub timeout: Duration,
    /// Retransmissions after the first try.
    pub retries: u32,
}

impl Timing {
    /// Longest wait of one try, whatever the configuration says (a typo of a few zeros in
    /// `timeout_ms` must not turn into an overflow panic or a wait of days).
    pub const MAX_TRY: Duration = Duration::from_secs(60);

    /// How long try `n` (0-based) waits for its answer.
    pub fn try_timeout(&self, n: u32) -> Duration {
        self.timeout
            .saturating_add(self.timeout.saturating_mul(n) / 2)
            .min(Self::MAX_TRY)
    }

    /// The longest one exchange can take before it reports a timeout.
    pub fn deadline(&self) -> Duration {
        (0..=self.retries).fold(Duration::ZERO, |acc, n| {
            acc.saturating_add(self.try_timeout(n))
        })
    }
}

/// Tracks the BMC's session sequence numbers: rejects zero, replays and numbers outside the
/// window (§6.12.13), so a captured packet cannot be replayed into the session.
#[derive(Debug, Clone, Copy, Default)]
struct SeqWindow {
    highest: u32,
    /// Bit i set: `highest - i` has been seen.
    seen: u32,
}

impl SeqWindow {
    fn check(&self, seq: u32) -> bool {
        if seq == 0 {
            return false;
        }
        if self.highest == 0 {
            return true;
        }
        let ahead = seq.wrapping_sub(self.highest);
        if ahead != 0 && ahead <= SEQ_WINDOW_AHEAD {
            return true;
        }
        let behind = self.highest.wrapping_sub(seq);
        behind < SEQ_WINDOW_BEHIND && self.seen & (1 << behind) == 0
    }

    fn record(&mut self, seq: u32) {
        if self.highest == 0 {
            self.highest = seq;
            self.seen = 1;
            return;
        }
        let ahead = seq.wrapping_sub(self.highest);
        if ahead != 0 && ahead <= SEQ_WINDOW_AHEAD {
            self.seen = self.seen.checked_shl(ahead).unwrap_or(0) | 1;
            self.highest = seq;
        } else {
            let behind = self.highest.wrapping_sub(seq);
            if behind < SEQ_WINDOW_BEHIND {
                self.seen |= 1 << behind;
            }
        }
    }
}

/// An open RMCP+ session with one BMC.
#[derive(Debug)]
pub struct Session {
    socket: UdpSocket,
    cfg: ClientConfig,
    keys: Option<SessionKeys>,
    console_id: u32,
    bmc_id: u32,
    out_seq: u32,
    in_seq: SeqWindow,
    rq_seq: u8,
    last_used: Instant,
}

fn protocol(cfg: &ClientConfig, detail: impl Into<String>) -> DeviceError {
    DeviceError::Protocol {
        address: cfg.address.to_string(),
        detail: detail.into(),
    }
}

fn auth_failed(cfg: &ClientConfig, detail: impl Into<String>) -> DeviceError {
    DeviceError::AuthFailed {
        address: cfg.address.to_string(),
        detail: detail.into(),
    }
}

/// Turns an RMCP+ status from Open Session / RAKP into the error an operator can act on.
fn rakp_error(cfg: &ClientConfig, stage: &str, status: u8) -> DeviceError {
    let text = rakp_status_text(status);
    let address = cfg.address.to_string();
    match status {
        0x0D | 0x0F => DeviceError::AuthFailed {
            address,
            detail: format!("{stage}: {text} (status {status:#04x}); check user and password"),
        },
        0x09..=0x0B => DeviceError::AuthFailed {
            address,
            detail: format!(
                "{stage}: {text} (status {status:#04x}); the user may not hold privilege level {}: raise the user's privilege on the BMC or configure a lower one",
                cfg.privilege
            ),
        },
        0x04..=0x07 | 0x10 | 0x11 => DeviceError::Refused {
            address,
            command: stage.into(),
            detail: format!(
                "{text} (status {status:#04x}): the BMC does not accept cipher suite {}; configure cipher_suite = \"auto\" or another suite the BMC offers",
                cfg.suite.id
            ),
        },
        0x01 => DeviceError::Refused {
            address,
            command: stage.into(),
            detail: format!("{text} (status {status:#04x}); stale sessions may be holding every slot: wait for them to time out or close them on the BMC"),
        },
        _ => DeviceError::Refused {
            address,
            command: stage.into(),
            detail: format!("{text} (status {status:#04x})"),
        },
    }
}

/// Sends `build()` and waits for a datagram `accept` takes, retransmitting per `timing`.
/// `accept` returns `None` for datagrams that are not the answer (dropped, wait goes on).
async fn exchange<T>(
    socket: &UdpSocket,
    peer: SocketAddr,
    timing: Timing,
    what: &str,
    mut build: impl FnMut() -> Result<Vec<u8>, DeviceError>,
    mut accept: impl FnMut(&[u8]) -> Option<Result<T, DeviceError>>,
) -> Result<T, DeviceError> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut waited = Duration::ZERO;
    for attempt in 0..=timing.retries {
        let datagram = build()?;
        socket
            .send_to(&datagram, peer)
            .await
            .map_err(|e| DeviceError::Unreachable {
                address: peer.to_string(),
                reason: e.to_string(),
            })?;
        let wait = timing.try_timeout(attempt);
        let now = Instant::now();
        let deadline = now.checked_add(wait).unwrap_or(now);
        loop {
            match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                Err(_elapsed) => break,
                Ok(Err(e)) => {
                    return Err(DeviceError::Unreachable {
                        address: peer.to_string(),
                        reason: e.to_string(),
                    })
                }
                Ok(Ok((n, from))) => {
                    if from != peer {
                        tracing::debug!(%from, "dropping datagram from another address");
                        continue;
                    }
                    if let Some(result) = accept(buf.get(..n).unwrap_or_default()) {
                        return result;
                    }
                }
            }
        }
        waited = waited.saturating_add(wait);
        if attempt < timing.retries {
            tracing::debug!(%peer, what, attempt, "no answer, retransmitting");
        }
    }
    Err(DeviceError::Timeout {
        address: peer.to_string(),
        what: what.into(),
        timeout_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
    })
}

async fn bind_for(peer: SocketAddr) -> Result<UdpSocket, DeviceError> {
    let local: SocketAddr = if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Unconnected on purpose: Linux reports ICMP "port unreachable" only to connected UDP
    // sockets, and a BMC that is booting must read as "no answer" (a timeout), not as a hard
    // error that skips the retries.
    UdpSocket::bind(local)
        .await
        .map_err(|e| DeviceError::Unreachable {
            address: peer.to_string(),
            reason: format!("cannot open a UDP socket: {e}"),
        })
}

/// A pre-session request on `socket` (session id 0, no authentication): encodes `req`, waits
/// for the response that answers it, and returns its completion code and body.
async fn presession_call<C: Command>(
    socket: &UdpSocket,
    peer: SocketAddr,
    timing: Timing,
    rq_seq: u8,
    v15: bool,
    req: &C,
) -> Result<(u8, Result<C::Response, WireError>), DeviceError> {
    let msg = IpmiRequest::to_bmc(C::NET_FN, C::CMD, rq_seq, req.encode());
    let header = if v15 {
        SessionHeader::V15(V15Header {
            auth_type: AUTH_TYPE_NONE,
            sequence: 0,
            session_id: 0,
            auth_code: None,
        })
    } else {
        SessionHeader::V20(V20Header {
            payload_type: PayloadType::Ipmi,
            encrypted: false,
            authenticated: false,
            oem: None,
            session_id: 0,
            sequence: 0,
        })
    };
    let packet = Packet {
        header,
        payload: msg.encode(),
    };
    let address = peer.to_string();
    exchange(
        socket,
        peer,
        timing,
        C::NAME,
        || {
            encode_packet(&packet, None, [0; 16]).map_err(|e| DeviceError::Protocol {
                address: address.clone(),
                detail: format!("cannot encode {}: {e}", C::NAME),
            })
        },
        |d| {
            let p = decode_packet(d, None).ok()?;
            if p.header.session_id() != 0 || p.header.payload_type() != PayloadType::Ipmi {
                return None;
            }
            let resp = IpmiResponse::decode(&p.payload).ok()?;
            if !resp.answers(&msg) {
                return None;
            }
            Some(Ok((resp.completion_code, C::Response::decode(&resp.data))))
        },
    )
    .await
}

/// Asks the BMC which cipher suites it offers (Get Channel Cipher Suites, §22.15), outside
/// any session. `Ok(None)` means it did not answer within `timeout` or refused the command
/// (OpenIPMI's ipmi_sim never answers it): callers fall back to suite 3.
pub async fn probe_cipher_suites(
    peer: SocketAddr,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, DeviceError> {
    let socket = bind_for(peer).await?;
    let timing = Timing {
        timeout,
        retries: 0,
    };
    let mut records = Vec::new();
    // The list comes in 16-byte chunks; 8 chunks hold far more suites than any BMC has.
    for index in 0..8u8 {
        let req = GetChannelCipherSuites {
            channel: THIS_CHANNEL,
            payload_type: 0,
            list_by_suite: true,
            index,
        };
        let (cc, body) = match presession_call(&socket, peer, timing, index, false, &req).await {
            Ok(r) => r,
            Err(DeviceError::Timeout { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(body) = body else {
            return Ok(None);
        };
        if cc != 0 {
            return Ok(None);
        }
        let last = body.records.len() < 16;
        records.extend_from_slice(&body.records);
        if last {
            break;
        }
    }
    Ok(Some(cipher_suite_ids(&records)))
}

impl Session {
    /// Opens a session: authentication capabilities, Open Session, RAKP 1–4, then Set Session
    /// Privilege Level (§13.14–§13.23, §22.18).
    pub async fn open(cfg: &ClientConfig) -> Result<Session, DeviceError> {
        let peer = cfg.address;
        let timing = Timing {
            timeout: cfg.timeout,
            retries: cfg.retries,
        };
        let socket = bind_for(peer).await?;
        let username = cfg.username.as_bytes();
        if username.len() > Rakp1::MAX_USERNAME {
            return Err(auth_failed(
                cfg,
                format!(
                    "user name is {} bytes, IPMI allows at most 16",
                    username.len()
                ),
            ));
        }
        if cfg.password.expose().len() > 20 {
            return Err(auth_failed(
                cfg,
                "password is longer than the 20 bytes IPMI 2.0 allows",
            ));
        }

        // Get Channel Authentication Capabilities first, in IPMI 1.5 format as ipmitool does:
        // it tells a 1.5-only BMC (which would ignore RMCP+ packets silently) from a dead one.
        let caps_req = GetChannelAuthCapabilities {
            channel: THIS_CHANNEL,
            extended: true,
            privilege: cfg.privilege,
        };
        let (cc, caps) = presession_call(&socket, peer, timing, 0, true, &caps_req).await?;
        if cc != 0 {
            return Err(DeviceError::Refused {
                address: peer.to_string(),
                command: GetChannelAuthCapabilities::NAME.into(),
                detail: format!(
                    "{}; the BMC may not support IPMI 2.0 (RMCP+): enable \"IPMI over LAN\" v2.0 on it",
                    completion_code_text(cc)
                ),
            });
        }
        let caps: ChannelAuthCapabilities =
            caps.map_err(|e| protocol(cfg, format!("authentication capabilities: {e}")))?;
        if !caps.supports_rmcp_plus() {
            return Err(DeviceError::Unsupported {
                operation: format!(
                    "IPMI 2.0/RMCP+ sessions (the BMC at {peer} offers only IPMI 1.5; enable IPMI 2.0 on it)"
                ),
            });
        }
        if caps.kg_set() && cfg.kg.is_none() {
            return Err(auth_failed(
                cfg,
                "the BMC has a BMC key (Kg) set but none is configured; configure it",
            ));
        }

        // Open Session (§13.17). The console's session id is random and non-zero so that
        // replies to an earlier session of ours are never accepted in this one.
        let console_id = loop {
            let id: u32 = rand::random();
            if id != 0 {
                break id;
            }
        };
        let tag: u8 = rand::random();
        let proposed = Algorithms {
            auth: cfg.suite.auth.to_byte(),
            integrity: cfg.suite.integrity.to_byte(),
            confidentiality: cfg.suite.confidentiality.to_byte(),
        };
        let open_req = OpenSessionRequest {
            tag,
            // 0 = "the highest level the proposed algorithms allow", as ipmitool sends; the
            // level actually used is set afterwards with Set Session Privilege Level.
            max_privilege: 0,
            console_session_id: console_id,
            algorithms: proposed,
        };
        let open_resp: OpenSessionResponse = setup_exchange(
            &socket,
            cfg,
            timing,
            "RMCP+ Open Session",
            PayloadType::OpenSessionRequest,
            open_req.encode(),
            PayloadType::OpenSessionResponse,
            |r: &OpenSessionResponse| {
                r.tag == tag
                    && (r.console_session_id == console_id
                        || short_refusal(r.status, r.console_session_id))
            },
        )
        .await?;
        if open_resp.status != 0 {
            return Err(rakp_error(cfg, "RMCP+ Open Session", open_resp.status));
        }
        let Some((bmc_id, chosen)) = open_resp.accepted else {
            return Err(protocol(cfg, "Open Session Response accepted nothing"));
        };
        // A BMC that picks other algorithms than we proposed (say, none) is downgrading the
        // session: refuse rather than run a weaker one.
        if chosen != proposed {
            return Err(protocol(
                cfg,
                format!(
                    "the BMC chose algorithms {chosen:?} instead of cipher suite {}'s {proposed:?}",
                    cfg.suite.id
                ),
            ));
        }
        if bmc_id == 0 {
            return Err(protocol(cfg, "the BMC's session id is 0"));
        }

        // RAKP 1 / 2 (§13.20, §13.21).
        let console_random: [u8; 16] = rand::random();
        // Name-only lookup (bit 4), as ipmitool does by default: BMCs then look the user up by
        // name alone and check the privilege later, which is what Set Session Privilege does.
        let role = (cfg.privilege & 0x0F) | ROLE_NAME_ONLY_LOOKUP;
        let rakp1 = Rakp1 {
            tag,
            bmc_session_id: bmc_id,
            console_random,
            role,
            username: username.to_vec(),
        };
        let rakp2: Rakp2 = setup_exchange(
            &socket,
            cfg,
            timing,
            "RAKP 1",
            PayloadType::Rakp1,
            rakp1.encode(),
            PayloadType::Rakp2,
            |r: &Rakp2| {
                r.tag == tag
                    && (r.console_session_id == console_id
                        || short_refusal(r.status, r.console_session_id))
            },
        )
        .await?;
        if rakp2.status != 0 {
            return Err(rakp_error(cfg, "RAKP 2", rakp2.status));
        }
        let Some(accepted) = rakp2.accepted else {
            return Err(protocol(cfg, "RAKP 2 carries no data"));
        };
        let inputs = RakpInputs {
            console_session_id: console_id,
            bmc_session_id: bmc_id,
            console_random,
            bmc_random: accepted.bmc_random,
            bmc_guid: accepted.bmc_guid,
            role,
            username,
        };
        let kuid = cfg.password.expose();
        let expected = rakp2_auth_code(cfg.suite.auth, kuid, &inputs);
        if !super::crypto::constant_time_eq(&expected, &accepted.auth_code) {
            // Tell the BMC, so it frees the session slot now instead of at its timeout.
            let reject = Rakp3 {
                tag,
                status: RAKP_INVALID_INTEGRITY_CHECK,
                bmc_session_id: bmc_id,
                auth_code: Vec::new(),
            };
            send_setup(&socket, peer, PayloadType::Rakp3, reject.encode()).await;
            return Err(auth_failed(
                cfg,
                "the BMC's RAKP 2 code does not match our password (invalid integrity check); check user and password",
            ));
        }

        // RAKP 3 / 4 (§13.22, §13.23).
        let rakp3 = Rakp3 {
            tag,
            status: 0,
            bmc_session_id: bmc_id,
            auth_code: rakp3_auth_code(cfg.suite.auth, kuid, &inputs),
        };
        let rakp4: Rakp4 = setup_exchange(
            &socket,
            cfg,
            timing,
            "RAKP 3",
            PayloadType::Rakp3,
            rakp3.encode(),
            PayloadType::Rakp4,
            |r: &Rakp4| {
                r.tag == tag
                    && (r.console_session_id == console_id
                        || short_refusal(r.status, r.console_session_id))
            },
        )
        .await?;
        if rakp4.status != 0 {
            return Err(rakp_error(cfg, "RAKP 4", rakp4.status));
        }
        let kg = cfg.kg.as_ref().map(Secret::expose);
        let keys = SessionKeys::derive(cfg.suite, kuid, kg, &inputs);
        let icv = rakp4_integrity_check(cfg.suite.auth, keys.sik(), &inputs);
        if !super::crypto::constant_time_eq(&icv, &rakp4.integrity_check) {
            return Err(auth_failed(
                cfg,
                "the BMC's RAKP 4 integrity check value does not match; the BMC key (Kg) is probably wrong",
            ));
        }

        let mut session = Session {
            socket,
            cfg: cfg.clone(),
            keys: (cfg.suite.integrity != IntegrityAlgorithm::None
                || cfg.suite.confidentiality != ConfidentialityAlgorithm::None)
                .then_some(keys),
            console_id,
            bmc_id,
            out_seq: 0,
            in_seq: SeqWindow::default(),
            rq_seq: 0,
            last_used: Instant::now(),
        };
        // Sessions start at USER (§13.15 "session privilege level"); power control needs at
        // least OPERATOR, so the level must be raised explicitly.
        let raised = match session
            .call(&SetSessionPrivilegeLevel {
                level: cfg.privilege,
            })
            .await
        {
            Ok(granted) if granted.level == cfg.privilege & 0x0F => Ok(()),
            Ok(granted) => Err(auth_failed(
                    cfg,
                    format!(
                        "asked for privilege level {} and the BMC granted {}",
                        cfg.privilege, granted.level
                    ),
                )),
            Err(DeviceError::Refused { detail, .. })
                if detail.contains("0x80")
                    || detail.contains("0x81")
                    || detail.contains("0xd4") =>
            {
                Err(auth_failed(
                    cfg,
                    format!(
                        "Set Session Privilege Level {} refused ({detail}); raise the user's privilege on the BMC (e.g. `ipmitool user priv ID 4`) or configure a lower privilege",
                        cfg.privilege
                    ),
                ))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = raised {
            // The session exists on the BMC: close it, or it holds one of the BMC's few session
            // slots until its inactivity timeout (a retrying controller could exhaust them).
            session.close().await;
            return Err(e);
        }
        tracing::debug!(address = %peer, suite = cfg.suite.id, "IPMI session open");
        Ok(session)
    }

    /// Sends one command in the session and returns its decoded response body, with the
    /// configured retries. A non-zero completion code is a [`DeviceError::Refused`].
    pub async fn call<C: Command>(&mut self, req: &C) -> Result<C::Response, DeviceError> {
        self.call_with_retries(req, self.cfg.retries).await
    }

    /// Like [`Session::call`] with an explicit number of retransmissions (0 when probing
    /// whether a kept-open session is still alive).
    pub async fn call_with_retries<C: Command>(
        &mut self,
        req: &C,
        retries: u32,
    ) -> Result<C::Response, DeviceError> {
        // rqSeq is 6 bits; it advances before sending, so after a cancelled call the next
        // request has a new number and the cancelled one's late reply cannot match it.
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        let msg = IpmiRequest::to_bmc(C::NET_FN, C::CMD, self.rq_seq, req.encode());
        let payload = msg.encode();
        let timing = Timing {
            timeout: self.cfg.timeout,
            retries,
        };
        let suite = self.cfg.suite;
        let encrypted = suite.confidentiality != ConfidentialityAlgorithm::None;
        let authenticated = suite.integrity != IntegrityAlgorithm::None;
        let (console_id, bmc_id, peer) = (self.console_id, self.bmc_id, self.cfg.address);
        let address = peer.to_string();
        let keys = self.keys.as_ref();
        let out_seq = &mut self.out_seq;
        let in_seq = &mut self.in_seq;
        let resp = exchange(
            &self.socket,
            peer,
            timing,
            C::NAME,
            || {
                // Each retransmission gets a new session sequence number (§6.12.13: the BMC
                // drops a number it has already seen).
                *out_seq = out_seq.wrapping_add(1).max(1);
                let packet = Packet {
                    header: SessionHeader::V20(V20Header {
                        payload_type: PayloadType::Ipmi,
                        encrypted,
                        authenticated,
                        oem: None,
                        session_id: bmc_id,
                        sequence: *out_seq,
                    }),
                    payload: payload.clone(),
                };
                encode_packet(&packet, keys, rand::random()).map_err(|e| DeviceError::Protocol {
                    address: address.clone(),
                    detail: format!("cannot encode {}: {e}", C::NAME),
                })
            },
            |d| {
                let SessionHeader::V20(h) = decode_header(d).ok()? else {
                    return None;
                };
                if h.session_id != console_id
                    || h.payload_type != PayloadType::Ipmi
                    || h.authenticated != authenticated
                    || h.encrypted != encrypted
                    || !in_seq.check(h.sequence)
                {
                    return None;
                }
                // Verifies the AuthCode before decrypting (decode_packet's contract).
                let p = decode_packet(d, keys).ok()?;
                in_seq.record(h.sequence);
                let resp = IpmiResponse::decode(&p.payload).ok()?;
                resp.answers(&msg).then_some(Ok(resp))
            },
        )
        .await?;
        self.last_used = Instant::now();
        if resp.completion_code != 0 {
            return Err(DeviceError::Refused {
                address: self.cfg.address.to_string(),
                command: C::NAME.into(),
                detail: completion_code_text(resp.completion_code),
            });
        }
        C::Response::decode(&resp.data)
            .map_err(|e| protocol(&self.cfg, format!("{}: {e}", C::NAME)))
    }

    /// When the session last had a command answered.
    pub fn last_used(&self) -> Instant {
        self.last_used
    }

    /// The cipher suite the session runs.
    pub fn suite(&self) -> CipherSuite {
        self.cfg.suite
    }

    /// Closes the session, best effort: one try with the configured timeout, errors ignored
    /// (a BMC that does not hear it drops the session at its own idle timeout).
    pub async fn close(mut self) {
        let req = CloseSession {
            session_id: self.bmc_id,
        };
        if let Err(e) = self.call_with_retries(&req, 0).await {
            tracing::debug!(address = %self.cfg.address, error = %e, "closing the IPMI session failed");
        }
    }
}

/// Whether a session-setup reply is a refusal that was cut short before the session id
/// (see `message::setup_session_id`): it can only be matched by its tag.
fn short_refusal(status: u8, session_id: u32) -> bool {
    status != 0 && session_id == 0
}

/// Sends a session-setup payload once without waiting (used to tell the BMC we reject it).
async fn send_setup(socket: &UdpSocket, peer: SocketAddr, pt: PayloadType, payload: Vec<u8>) {
    let packet = Packet::outside_session(pt, payload);
    if let Ok(d) = encode_packet(&packet, None, [0; 16]) {
        let _ = socket.send_to(&d, peer).await;
    }
}

/// One session-setup exchange: send a payload of type `pt`, wait for a payload of type
/// `want` that `matches` (tag and session id), decode it as `R`.
#[allow(clippy::too_many_arguments)]
async fn setup_exchange<R: Body>(
    socket: &UdpSocket,
    cfg: &ClientConfig,
    timing: Timing,
    what: &str,
    pt: PayloadType,
    payload: Vec<u8>,
    want: PayloadType,
    matches: impl Fn(&R) -> bool,
) -> Result<R, DeviceError> {
    let packet = Packet::outside_session(pt, payload);
    exchange(
        socket,
        cfg.address,
        timing,
        what,
        || {
            encode_packet(&packet, None, [0; 16])
                .map_err(|e| protocol(cfg, format!("cannot encode {what}: {e}")))
        },
        |d| {
            let p = decode_packet(d, None).ok()?;
            if p.header.session_id() != 0 || p.header.payload_type() != want {
                return None;
            }
            let r = R::decode(&p.payload).ok()?;
            matches(&r).then_some(Ok(r))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_window_rejects_replays_zero_and_far_jumps() {
        let mut w = SeqWindow::default();
        assert!(!w.check(0));
        assert!(w.check(5));
        w.record(5);
        assert!(!w.check(5), "replay");
        assert!(w.check(6));
        w.record(7);
        assert!(w.check(6), "reordered but unseen");
        w.record(6);
        assert!(!w.check(6));
        w.record(100);
        assert!(!w.check(100 - SEQ_WINDOW_BEHIND), "too old");
        assert!(w.check(101 - SEQ_WINDOW_BEHIND));
        assert!(w.check(100 + SEQ_WINDOW_AHEAD));
        assert!(!w.check(101 + SEQ_WINDOW_AHEAD));
        // Wrap-around.
        let mut w = SeqWindow::default();
        w.record(u32::MAX);
        assert!(w.check(1));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_a_timeout_after_exactly_the_deadline() {
        // A port nobody listens on; with paused time the runtime jumps from timer to timer,
        // so this checks the retry schedule itself, deterministically and instantly.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = ClientConfig {
            address: (Ipv4Addr::LOCALHOST, port).into(),
            username: "u".into(),
            password: Secret::new(b"p".to_vec()),
            kg: None,
            privilege: 4,
            suite: CipherSuite::SUITE_3,
            timeout: Duration::from_millis(1000),
            retries: 2,
        };
        let start = Instant::now();
        match Session::open(&cfg).await {
            Err(DeviceError::Timeout {
                timeout_ms, what, ..
            }) => {
                assert_eq!(timeout_ms, 4500);
                assert_eq!(what, "Get Channel Authentication Capabilities");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(start.elapsed(), Duration::from_millis(4500));
    }

    #[test]
    fn timing_backs_off_and_bounds_the_deadline() {
        let t = Timing {
            timeout: Duration::from_millis(1000),
            retries: 2,
        };
        assert_eq!(t.try_timeout(0), Duration::from_millis(1000));
        assert_eq!(t.try_timeout(2), Duration::from_millis(2000));
        assert_eq!(t.deadline(), Duration::from_millis(4500));
        let absurd = Timing {
            timeout: Duration::MAX,
            retries: u32::MAX,
        };
        assert_eq!(absurd.try_timeout(7), Timing::MAX_TRY);
    }
}
