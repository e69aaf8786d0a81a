//! An async SNMP manager session over one tokio `UdpSocket` per agent: request-id (and v3
//! msgID) matching, a timeout per try and bounded retries, v3 engine discovery, time-window
//! tracking and USM authentication and privacy. No thread per call.
//!
//! Replies that do not belong to a try of the current request (late answers to an earlier
//! request, forged or corrupt datagrams) are discarded, never taken as the answer; if only
//! such datagrams arrived, the call fails with [`SnmpError::Malformed`] naming the last problem.

use super::ber::Oid;
use super::message::{
    decode_message, encode_community, encode_v3, flags, Message, Pdu, PduType, ScopedData,
    ScopedPdu, UsmParams, V3Message, Value, Version,
};
use super::usm::{localize, AuthProtocol, LocalKey, PrivProtocol};
use crate::Secret;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// usmStats counters an agent reports (RFC 3414 §5, `1.3.6.1.6.3.15.1.1.N.0`).
pub mod usm_stats {
    /// usmStatsUnsupportedSecLevels.
    pub const UNSUPPORTED_SEC_LEVELS: u32 = 1;
    /// usmStatsNotInTimeWindows.
    pub const NOT_IN_TIME_WINDOWS: u32 = 2;
    /// usmStatsUnknownUserNames.
    pub const UNKNOWN_USER_NAMES: u32 = 3;
    /// usmStatsUnknownEngineIDs.
    pub const UNKNOWN_ENGINE_IDS: u32 = 4;
    /// usmStatsWrongDigests.
    pub const WRONG_DIGESTS: u32 = 5;
    /// usmStatsDecryptionErrors.
    pub const DECRYPTION_ERRORS: u32 = 6;

    /// The OID of counter `n`.
    pub fn oid(n: u32) -> super::Oid {
        super::Oid(vec![1, 3, 6, 1, 6, 3, 15, 1, 1, n, 0])
    }

    /// The counter's name.
    pub fn name(n: u32) -> &'static str {
        match n {
            1 => "usmStatsUnsupportedSecLevels (the agent does not allow this security level for the user)",
            2 => "usmStatsNotInTimeWindows",
            3 => "usmStatsUnknownUserNames (the agent has no such user)",
            4 => "usmStatsUnknownEngineIDs",
            5 => "usmStatsWrongDigests (wrong authentication password or protocol)",
            6 => "usmStatsDecryptionErrors (wrong privacy password or protocol)",
            _ => "an unknown usmStats report",
        }
    }
}

/// How the manager authenticates.
#[derive(Debug, Clone)]
pub enum Security {
    /// v1 or v2c with a community string.
    Community {
        /// V1 or V2c.
        version: Version,
        /// The community.
        community: Secret,
    },
    /// v3 USM.
    Usm(UsmUser),
}

/// A v3 user and its keys' passwords. Without `auth`: noAuthNoPriv; `auth` without `privacy`:
/// authNoPriv; both: authPriv.
#[derive(Debug, Clone)]
pub struct UsmUser {
    /// msgUserName.
    pub name: String,
    /// Authentication protocol and password.
    pub auth: Option<(AuthProtocol, Secret)>,
    /// Privacy protocol and password (needs `auth`).
    pub privacy: Option<(PrivProtocol, Secret)>,
}

/// Where and how to reach one agent.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The agent's UDP address.
    pub addr: SocketAddr,
    /// Credentials.
    pub security: Security,
    /// Wait per try.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnmpError {
    /// No acceptable reply within every try.
    #[error("no reply to {what} after {tries} tries of {timeout_ms} ms")]
    Timeout {
        /// The request.
        what: String,
        /// Tries made.
        tries: u32,
        /// Wait per try.
        timeout_ms: u64,
    },
    /// Only datagrams that are not a valid reply to this request arrived.
    #[error("only malformed or foreign replies to {what}: {detail}")]
    Malformed {
        /// The request.
        what: String,
        /// The last problem seen.
        detail: String,
    },
    /// The socket failed (ICMP port unreachable, no route).
    #[error("{0}")]
    Io(String),
    /// The agent refused our v3 credentials (a usmStats report) or v3 is misconfigured.
    #[error("{0}")]
    Auth(String),
}

/// What the receive loop makes of one datagram.
enum Verdict<T> {
    Accept(T),
    Ignore(String),
    Fail(SnmpError),
}

/// A discovered authoritative engine and the keys localised to it.
#[derive(Debug, Clone)]
struct Engine {
    id: Vec<u8>,
    boots: u32,
    time: u32,
    at: Instant,
    auth: Option<(AuthProtocol, LocalKey)>,
    privacy: Option<LocalKey>,
}

impl Engine {
    fn now_time(&self) -> u32 {
        let elapsed = u32::try_from(self.at.elapsed().as_secs()).unwrap_or(u32::MAX);
        self.time.saturating_add(elapsed)
    }
}

/// A session with one agent.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    socket: UdpSocket,
    next_id: i32,
    salt: u64,
    engine: Option<Engine>,
}

/// Largest datagram accepted (an SNMP message over UDP fits 65507 bytes).
const MAX_DATAGRAM: usize = 65_536;

impl Client {
    /// Binds a socket connected to the agent (so datagrams from anyone else are dropped by
    /// the kernel). Nothing is sent yet.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, SnmpError> {
        if let Security::Usm(u) = &cfg.security {
            if u.privacy.is_some() && u.auth.is_none() {
                return Err(SnmpError::Auth(
                    "SNMPv3 privacy needs authentication too (authPriv); configure an auth password".into(),
                ));
            }
        }
        let local: SocketAddr = if cfg.addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| SnmpError::Io(format!("cannot bind a UDP socket: {e}")))?;
        socket
            .connect(cfg.addr)
            .await
            .map_err(|e| SnmpError::Io(format!("cannot reach {}: {e}", cfg.addr)))?;
        let seed = rand::random::<u32>();
        Ok(Client {
            cfg,
            socket,
            next_id: i32::try_from(seed >> 2).unwrap_or(1).max(1),
            salt: rand::random(),
            engine: None,
        })
    }

    /// The agent's address.
    pub fn addr(&self) -> SocketAddr {
        self.cfg.addr
    }

    fn fresh_id(&mut self) -> i32 {
        self.next_id = if self.next_id >= i32::MAX - 1 {
            1
        } else {
            self.next_id + 1
        };
        self.next_id
    }

    /// GET of `oids`; the Response PDU (error status not checked here).
    pub async fn get(&mut self, oids: &[Oid]) -> Result<Pdu, SnmpError> {
        let vbs = oids.iter().map(|o| (o.clone(), Value::Null)).collect();
        self.request(PduType::Get, vbs).await
    }

    /// GETNEXT after `oid`.
    pub async fn get_next(&mut self, oid: &Oid) -> Result<Pdu, SnmpError> {
        self.request(PduType::GetNext, vec![(oid.clone(), Value::Null)])
            .await
    }

    /// SET of `oid` to `value`.
    pub async fn set(&mut self, oid: &Oid, value: Value) -> Result<Pdu, SnmpError> {
        self.request(PduType::Set, vec![(oid.clone(), value)]).await
    }

    /// Sends one request (with retries) and returns the agent's Response PDU.
    pub async fn request(
        &mut self,
        kind: PduType,
        varbinds: Vec<(Oid, Value)>,
    ) -> Result<Pdu, SnmpError> {
        let what = format!(
            "{kind:?} {}",
            varbinds
                .first()
                .map(|v| v.0.to_string())
                .unwrap_or_default()
        );
        match self.cfg.security.clone() {
            Security::Community { version, community } => {
                let pdu_template = Pdu {
                    kind,
                    request_id: 0,
                    error_status: 0,
                    error_index: 0,
                    varbinds,
                };
                let c2 = community.clone();
                self.exchange(
                    &what,
                    move |id| {
                        let mut p = pdu_template.clone();
                        p.request_id = id;
                        Ok(encode_community(version, community.expose(), &p))
                    },
                    move |bytes, ids| match decode_message(bytes) {
                        Err(e) => Verdict::Ignore(format!("undecodable reply: {e}")),
                        Ok(Message::Community {
                            version: v,
                            community: c,
                            pdu,
                        }) => {
                            if v != version || c != c2.expose() {
                                Verdict::Ignore("a reply with another version or community".into())
                            } else if pdu.kind != PduType::Response
                                || !ids.contains(&pdu.request_id)
                            {
                                Verdict::Ignore(format!(
                                    "a {:?} with request-id {} that is not ours",
                                    pdu.kind, pdu.request_id
                                ))
                            } else {
                                Verdict::Accept(pdu)
                            }
                        }
                        Ok(Message::V3 { .. }) => {
                            Verdict::Ignore("a v3 reply to a community request".into())
                        }
                    },
                )
                .await
            }
            Security::Usm(user) => self.request_v3(&what, &user, kind, varbinds).await,
        }
    }

    async fn request_v3(
        &mut self,
        what: &str,
        user: &UsmUser,
        kind: PduType,
        varbinds: Vec<(Oid, Value)>,
    ) -> Result<Pdu, SnmpError> {
        // At most: one rediscovery (the agent rebooted: unknown engine id) or one time-window
        // resynchronisation, then the real answer.
        for round in 0..3 {
            if self.engine.is_none() {
                self.engine = Some(self.discover(user).await?);
            }
            let Some(engine) = self.engine.clone() else {
                continue;
            };
            let request_id = self.fresh_id();
            let pdu = Pdu {
                kind,
                request_id,
                error_status: 0,
                error_index: 0,
                varbinds: varbinds.clone(),
            };
            let scoped = ScopedPdu {
                context_engine_id: engine.id.clone(),
                context_name: Vec::new(),
                pdu,
            };
            self.salt = self.salt.wrapping_add(1);
            let salt0 = self.salt;
            let e2 = engine.clone();
            let name = user.name.clone();
            let mut tries = 0u64;
            let result = self
                .exchange(
                    what,
                    move |msg_id| {
                        tries += 1;
                        let salt = salt0.wrapping_add(tries << 40).to_be_bytes();
                        Ok(build_v3(&e2, &name, msg_id, &scoped, salt))
                    },
                    |bytes, ids| accept_v3(bytes, ids, &engine, request_id),
                )
                .await;
            match result {
                Err(SnmpError::Auth(detail)) if detail == REDISCOVER && round < 2 => {
                    self.engine = None;
                }
                Err(SnmpError::Auth(detail)) if detail.starts_with(RESYNC) && round < 2 => {
                    // "resync BOOTS TIME": the authenticated report carried the agent's clock.
                    let mut parts = detail[RESYNC.len()..].split_whitespace();
                    let boots = parts.next().and_then(|s| s.parse().ok());
                    let time = parts.next().and_then(|s| s.parse().ok());
                    if let (Some(e), Some(boots), Some(time)) = (self.engine.as_mut(), boots, time)
                    {
                        e.boots = boots;
                        e.time = time;
                        e.at = Instant::now();
                    }
                }
                other => return other,
            }
        }
        Err(SnmpError::Auth(
            "the agent kept refusing our engine id or time window; check its clock and engine id"
                .into(),
        ))
    }

    /// Engine discovery (RFC 3414 §4): a reportable, unauthenticated request with an empty
    /// engine id, answered by a usmStatsUnknownEngineIDs report carrying the agent's engine
    /// id, boots and time.
    async fn discover(&mut self, user: &UsmUser) -> Result<Engine, SnmpError> {
        let request_id = self.fresh_id();
        let scoped = ScopedPdu {
            context_engine_id: Vec::new(),
            context_name: Vec::new(),
            pdu: Pdu::request(PduType::Get, request_id, &[]),
        };
        let found = self
            .exchange(
                "SNMPv3 engine discovery",
                move |msg_id| {
                    let msg = V3Message {
                        msg_id,
                        max_size: 65507,
                        flags: flags::REPORTABLE,
                        usm: UsmParams::default(),
                        data: ScopedData::Plain(scoped.clone()),
                    };
                    Ok(encode_v3(&msg).0)
                },
                |bytes, ids| match decode_message(bytes) {
                    Ok(Message::V3 { msg, .. }) if ids.contains(&msg.msg_id) => {
                        if msg.usm.engine_id.is_empty() || msg.usm.engine_id.len() > 32 {
                            return Verdict::Ignore(
                                "a discovery reply without a valid engine id".into(),
                            );
                        }
                        let boots = u32::try_from(msg.usm.engine_boots).unwrap_or(0);
                        let time = u32::try_from(msg.usm.engine_time).unwrap_or(0);
                        Verdict::Accept((msg.usm.engine_id, boots, time))
                    }
                    Ok(_) => Verdict::Ignore("a reply that is not ours".into()),
                    Err(e) => Verdict::Ignore(format!("undecodable reply: {e}")),
                },
            )
            .await?;
        let (id, boots, time) = found;
        let auth = user
            .auth
            .as_ref()
            .map(|(p, pw)| (*p, localize(*p, pw.expose(), &id)));
        let privacy = match (&user.privacy, &user.auth) {
            (Some((PrivProtocol::Aes128, pw)), Some((p, _))) => {
                Some(localize(*p, pw.expose(), &id))
            }
            _ => None,
        };
        Ok(Engine {
            id,
            boots,
            time,
            at: Instant::now(),
            auth,
            privacy,
        })
    }

    /// Sends `build(id)` up to 1 + retries times (a fresh id per try, any try's reply
    /// accepted) and feeds every datagram to `accept` until it accepts or fails.
    async fn exchange<T>(
        &mut self,
        what: &str,
        mut build: impl FnMut(i32) -> Result<Vec<u8>, SnmpError>,
        mut accept: impl FnMut(&[u8], &[i32]) -> Verdict<T>,
    ) -> Result<T, SnmpError> {
        let mut ids = Vec::new();
        let mut last_problem: Option<String> = None;
        let mut io_error: Option<String> = None;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let tries = self.cfg.retries.saturating_add(1);
        for _ in 0..tries {
            let id = self.fresh_id();
            ids.push(id);
            let datagram = build(id)?;
            if let Err(e) = self.socket.send(&datagram).await {
                io_error = Some(format!("sending to {} failed: {e}", self.cfg.addr));
                tokio::time::sleep(self.cfg.timeout).await;
                continue;
            }
            let deadline = Instant::now() + self.cfg.timeout;
            loop {
                let n = match tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await {
                    Err(_) => break,
                    // ECONNREFUSED from an ICMP port unreachable: nothing listens there.
                    Ok(Err(e)) => {
                        io_error = Some(format!("{}: {e}", self.cfg.addr));
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                    Ok(Ok(n)) => n,
                };
                match accept(buf.get(..n).unwrap_or_default(), &ids) {
                    Verdict::Accept(t) => return Ok(t),
                    Verdict::Fail(e) => return Err(e),
                    Verdict::Ignore(why) => last_problem = Some(why),
                }
            }
        }
        if let Some(detail) = last_problem {
            return Err(SnmpError::Malformed {
                what: what.to_string(),
                detail,
            });
        }
        if let Some(e) = io_error {
            return Err(SnmpError::Io(e));
        }
        Err(SnmpError::Timeout {
            what: what.to_string(),
            tries,
            timeout_ms: u64::try_from(self.cfg.timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Internal marker: the agent no longer knows our engine id (it was replaced or reset).
const REDISCOVER: &str = "rediscover";
/// Internal marker prefix: resynchronise the time window to "BOOTS TIME".
const RESYNC: &str = "resync ";

fn build_v3(
    engine: &Engine,
    user: &str,
    msg_id: i32,
    scoped: &ScopedPdu,
    salt: [u8; 8],
) -> Vec<u8> {
    let time = engine.now_time();
    let mut fl = flags::REPORTABLE;
    let (data, priv_params) = match (&engine.auth, &engine.privacy) {
        (Some(_), Some(pk)) => {
            fl |= flags::AUTH | flags::PRIV;
            let c = pk.aes_cfb(engine.boots, time, &salt, &scoped.encode(), true);
            (ScopedData::Encrypted(c), salt.to_vec())
        }
        (Some(_), None) => {
            fl |= flags::AUTH;
            (ScopedData::Plain(scoped.clone()), Vec::new())
        }
        _ => (ScopedData::Plain(scoped.clone()), Vec::new()),
    };
    let msg = V3Message {
        msg_id,
        max_size: 65507,
        flags: fl,
        usm: UsmParams {
            engine_id: engine.id.clone(),
            engine_boots: engine.boots.into(),
            engine_time: time.into(),
            user: user.as_bytes().to_vec(),
            auth_params: engine
                .auth
                .as_ref()
                .map(|(p, _)| vec![0; p.mac_len()])
                .unwrap_or_default(),
            priv_params,
        },
        data,
    };
    let (mut bytes, at) = encode_v3(&msg);
    if let Some((p, k)) = &engine.auth {
        k.sign(*p, &mut bytes, at);
    }
    bytes
}

fn accept_v3(bytes: &[u8], ids: &[i32], engine: &Engine, request_id: i32) -> Verdict<Pdu> {
    let (msg, auth_offset) = match decode_message(bytes) {
        Ok(Message::V3 { msg, auth_offset }) => (msg, auth_offset),
        Ok(_) => return Verdict::Ignore("a community reply to a v3 request".into()),
        Err(e) => return Verdict::Ignore(format!("undecodable reply: {e}")),
    };
    if !ids.contains(&msg.msg_id) {
        return Verdict::Ignore(format!(
            "a reply with msgID {} that is not ours",
            msg.msg_id
        ));
    }
    let authenticated = msg.flags & flags::AUTH != 0;
    if authenticated {
        let Some((p, k)) = &engine.auth else {
            return Verdict::Ignore("an authenticated reply to an unauthenticated request".into());
        };
        if msg.usm.engine_id != engine.id || !k.verify(*p, bytes, auth_offset) {
            return Verdict::Ignore(
                "a reply whose HMAC does not verify (forged or corrupt)".into(),
            );
        }
    }
    let scoped = match &msg.data {
        ScopedData::Plain(s) => s.clone(),
        ScopedData::Encrypted(c) => {
            let (Some(pk), true) = (&engine.privacy, authenticated) else {
                return Verdict::Ignore("an encrypted reply we cannot decrypt".into());
            };
            let Ok(salt) = <[u8; 8]>::try_from(msg.usm.priv_params.as_slice()) else {
                return Verdict::Ignore("an encrypted reply without an 8-byte salt".into());
            };
            let boots = u32::try_from(msg.usm.engine_boots).unwrap_or(0);
            let time = u32::try_from(msg.usm.engine_time).unwrap_or(0);
            match ScopedPdu::decode(&pk.aes_cfb(boots, time, &salt, c, false)) {
                Ok(s) => s,
                Err(e) => {
                    return Verdict::Ignore(format!(
                        "a reply that does not decrypt to a scopedPDU: {e}"
                    ))
                }
            }
        }
    };
    let pdu = scoped.pdu;
    if pdu.kind == PduType::Report {
        let counter = pdu
            .varbinds
            .first()
            .and_then(|(oid, _)| (1..=6).find(|n| *oid == usm_stats::oid(*n)));
        return match counter {
            Some(usm_stats::UNKNOWN_ENGINE_IDS) => {
                Verdict::Fail(SnmpError::Auth(REDISCOVER.into()))
            }
            // Only an authenticated report may move our clock (RFC 3414 §3.2.7 b).
            Some(usm_stats::NOT_IN_TIME_WINDOWS) if authenticated => {
                Verdict::Fail(SnmpError::Auth(format!(
                    "{RESYNC}{} {}",
                    msg.usm.engine_boots, msg.usm.engine_time
                )))
            }
            Some(n) => Verdict::Fail(SnmpError::Auth(format!(
                "the agent answered with a {} report",
                usm_stats::name(n)
            ))),
            None => Verdict::Fail(SnmpError::Auth(format!(
                "the agent answered with a report: {:?}",
                pdu.varbinds.first().map(|v| v.0.to_string())
            ))),
        };
    }
    if pdu.kind != PduType::Response || pdu.request_id != request_id {
        return Verdict::Ignore(format!(
            "a {:?} with request-id {} that is not ours",
            pdu.kind, pdu.request_id
        ));
    }
    if engine.auth.is_some() && !authenticated {
        // A downgrade: an unauthenticated Response to an authenticated request.
        return Verdict::Ignore("an unauthenticated response to an authenticated request".into());
    }
    Verdict::Accept(pdu)
}
