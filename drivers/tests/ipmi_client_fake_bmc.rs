//! The client against a small BMC built from the same codec in the BMC role (the way the
//! hw-tests simulator will use it), with faults the real peer cannot produce on demand: late
//! replies to earlier requests, forged packets, wrong session ids, completion codes.

// Tests may panic on failure; the workspace lints are for production code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The bench's "this test needs X" check, by path: a dev-dependency on hw-tests would compile
// the whole bench for this crate's tests. Not every item of it is used here.
#[allow(dead_code)]
#[path = "../../hw-tests/src/require.rs"]
mod require;

use drivers::ipmi::crypto::{
    rakp2_auth_code, rakp3_auth_code, rakp4_integrity_check, CipherSuite, RakpInputs, SessionKeys,
};
use drivers::ipmi::message::*;
use drivers::ipmi::session::{
    decode_header, decode_packet, encode_packet, Packet, PayloadType, SessionHeader, V20Header,
};
use drivers::ipmi::{CipherSuiteChoice, IpmiConfig, IpmiDevice};
use drivers::{DeviceError, PowerCommand, PowerDevice, PowerState, Secret};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

#[derive(Clone, Default)]
struct Faults {
    /// Answer Get Channel Cipher Suites with these records (None: ignore it, like ipmi_sim).
    cipher_suites: Option<Vec<u8>>,
    /// Counts Close Session requests.
    closes: Arc<AtomicUsize>,
    /// Before each real answer, send a late reply to the previous request claiming power off,
    /// a packet with a broken AuthCode, and one for another session id.
    noise: bool,
    /// Completion code for Chassis Control.
    control_cc: u8,
    /// Completion code for Set Session Privilege Level.
    privilege_cc: u8,
}

struct Bmc {
    socket: Arc<UdpSocket>,
    faults: Faults,
}

struct Sess {
    console_id: u32,
    keys: SessionKeys,
    out_seq: u32,
}

const BMC_ID: u32 = 0x0102_0304;
const GUID: [u8; 16] = [0x11; 16];

impl Bmc {
    async fn start(faults: Faults) -> SocketAddr {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        tokio::spawn(Bmc { socket, faults }.run());
        addr
    }

    async fn send(&self, to: SocketAddr, p: &Packet, keys: Option<&SessionKeys>) {
        let d = encode_packet(p, keys, rand::random()).unwrap();
        self.socket.send_to(&d, to).await.unwrap();
    }

    fn setup(pt: PayloadType, payload: Vec<u8>) -> Packet {
        Packet::outside_session(pt, payload)
    }

    fn in_session(s: &mut Sess, session_id: u32, payload: Vec<u8>) -> Packet {
        s.out_seq += 1;
        Packet {
            header: SessionHeader::V20(V20Header {
                payload_type: PayloadType::Ipmi,
                encrypted: true,
                authenticated: true,
                oem: None,
                session_id,
                sequence: s.out_seq,
            }),
            payload,
        }
    }

    async fn run(self) {
        let mut buf = [0u8; 1024];
        let mut pending: Option<(u32, [u8; 16], u8, Vec<u8>)> = None; // console id, Rm, role, name
        let mut suite = CipherSuite::SUITE_3;
        let mut sess: Option<Sess> = None;
        let bmc_random = [0x22; 16];
        let mut power_on = true;
        loop {
            let (n, from) = self.socket.recv_from(&mut buf).await.unwrap();
            let d = &buf[..n];
            let Ok(header) = decode_header(d) else {
                continue;
            };
            match (header, header.payload_type()) {
                (SessionHeader::V15(_), _) => {
                    let p = decode_packet(d, None).unwrap();
                    let req = IpmiRequest::decode(&p.payload).unwrap();
                    let caps = ChannelAuthCapabilities {
                        channel: 1,
                        auth_types: 0x80,
                        status: 0,
                        extended: 0x02,
                        oem_iana: 0,
                        oem_aux: 0,
                    };
                    let resp = req.response(0, caps.encode());
                    self.send(
                        from,
                        &Packet {
                            header,
                            payload: resp.encode(),
                        },
                        None,
                    )
                    .await;
                }
                (_, PayloadType::OpenSessionRequest) => {
                    let p = decode_packet(d, None).unwrap();
                    let r = OpenSessionRequest::decode(&p.payload).unwrap();
                    let a = r.algorithms;
                    suite = CipherSuite::from_algorithms(a.auth, a.integrity, a.confidentiality)
                        .unwrap();
                    let resp = OpenSessionResponse {
                        tag: r.tag,
                        status: 0,
                        max_privilege: 4,
                        console_session_id: r.console_session_id,
                        accepted: Some((BMC_ID, r.algorithms)),
                    };
                    pending = Some((r.console_session_id, [0; 16], 0, Vec::new()));
                    self.send(
                        from,
                        &Self::setup(PayloadType::OpenSessionResponse, resp.encode()),
                        None,
                    )
                    .await;
                }
                (_, PayloadType::Rakp1) => {
                    let p = decode_packet(d, None).unwrap();
                    let r = Rakp1::decode(&p.payload).unwrap();
                    let Some(pend) = pending.as_mut() else {
                        continue;
                    };
                    *pend = (pend.0, r.console_random, r.role, r.username.clone());
                    let i = RakpInputs {
                        console_session_id: pend.0,
                        bmc_session_id: BMC_ID,
                        console_random: r.console_random,
                        bmc_random,
                        bmc_guid: GUID,
                        role: r.role,
                        username: &r.username,
                    };
                    let resp = Rakp2 {
                        tag: r.tag,
                        status: 0,
                        console_session_id: pend.0,
                        accepted: Some(Rakp2Accepted {
                            bmc_random,
                            bmc_guid: GUID,
                            auth_code: rakp2_auth_code(suite.auth, b"pw", &i),
                        }),
                    };
                    self.send(from, &Self::setup(PayloadType::Rakp2, resp.encode()), None)
                        .await;
                }
                (_, PayloadType::Rakp3) => {
                    let p = decode_packet(d, None).unwrap();
                    let r = Rakp3::decode(&p.payload).unwrap();
                    let Some((cid, rm, role, name)) = pending.clone() else {
                        continue;
                    };
                    let i = RakpInputs {
                        console_session_id: cid,
                        bmc_session_id: BMC_ID,
                        console_random: rm,
                        bmc_random,
                        bmc_guid: GUID,
                        role,
                        username: &name,
                    };
                    assert_eq!(r.auth_code, rakp3_auth_code(suite.auth, b"pw", &i));
                    let keys = SessionKeys::derive(suite, b"pw", None, &i);
                    let resp = Rakp4 {
                        tag: r.tag,
                        status: 0,
                        console_session_id: cid,
                        integrity_check: rakp4_integrity_check(suite.auth, keys.sik(), &i),
                    };
                    sess = Some(Sess {
                        console_id: cid,
                        keys,
                        out_seq: 0,
                    });
                    self.send(from, &Self::setup(PayloadType::Rakp4, resp.encode()), None)
                        .await;
                }
                (SessionHeader::V20(h), PayloadType::Ipmi) if h.session_id == 0 => {
                    let Some(records) = &self.faults.cipher_suites else {
                        continue;
                    };
                    let p = decode_packet(d, None).unwrap();
                    let req = IpmiRequest::decode(&p.payload).unwrap();
                    let q = GetChannelCipherSuites::decode(&req.data).unwrap();
                    let start = usize::from(q.index) * 16;
                    let chunk = records.get(start..).unwrap_or_default();
                    let body = ChannelCipherSuites {
                        channel: 1,
                        records: chunk[..chunk.len().min(16)].to_vec(),
                    };
                    let resp = req.response(0, body.encode());
                    self.send(
                        from,
                        &Packet {
                            header,
                            payload: resp.encode(),
                        },
                        None,
                    )
                    .await;
                }
                (SessionHeader::V20(h), PayloadType::Ipmi) if h.session_id == BMC_ID => {
                    let Some(s) = sess.as_mut() else { continue };
                    let p = decode_packet(d, Some(&s.keys)).expect("client packets verify");
                    let req = IpmiRequest::decode(&p.payload).unwrap();
                    let (cc, data) = match (req.net_fn, req.cmd) {
                        (NETFN_APP, 0x3B) => (self.faults.privilege_cc, vec![req.data[0]]),
                        (NETFN_APP, 0x3C) => {
                            self.faults.closes.fetch_add(1, Ordering::SeqCst);
                            (0, vec![])
                        }
                        (NETFN_CHASSIS, 0x01) => (0, vec![u8::from(power_on), 0, 0]),
                        (NETFN_CHASSIS, 0x02) => {
                            let c = ChassisControl::decode(&req.data).unwrap().control;
                            assert!(c <= 1, "the client must never send control {c}");
                            if self.faults.control_cc == 0 {
                                power_on = c == 1;
                            }
                            (self.faults.control_cc, vec![])
                        }
                        _ => (0xC1, vec![]),
                    };
                    if self.faults.noise {
                        // A late reply to the previous request, claiming power is off.
                        let mut old = req.clone();
                        old.rq_seq = (old.rq_seq + 63) & 0x3F;
                        let late = old.response(0, vec![0, 0, 0]);
                        let pkt = Self::in_session(s, s.console_id, late.encode());
                        self.send(from, &pkt, Some(&s.keys)).await;
                        // A forged packet: right everything, broken AuthCode.
                        let forged = req.response(0, vec![0, 0, 0]);
                        let pkt = Self::in_session(s, s.console_id, forged.encode());
                        let mut bytes = encode_packet(&pkt, Some(&s.keys), [1; 16]).unwrap();
                        let last = bytes.len() - 1;
                        bytes[last] ^= 0xFF;
                        self.socket.send_to(&bytes, from).await.unwrap();
                        // Another session's reply.
                        let pkt = Self::in_session(s, s.console_id ^ 1, forged.encode());
                        self.send(from, &pkt, Some(&s.keys)).await;
                    }
                    let pkt = Self::in_session(s, s.console_id, req.response(cc, data).encode());
                    self.send(from, &pkt, Some(&s.keys)).await;
                }
                _ => {}
            }
        }
    }
}

fn device(addr: SocketAddr) -> IpmiDevice {
    let mut cfg = IpmiConfig::new("127.0.0.1", "admin", Secret::new(b"pw".to_vec()));
    cfg.port = addr.port();
    cfg.cipher_suite = CipherSuiteChoice::Id(3);
    cfg.timeout = std::time::Duration::from_millis(300);
    IpmiDevice::new(cfg)
}

#[tokio::test]
async fn late_forged_and_foreign_replies_are_never_taken() {
    let addr = Bmc::start(Faults {
        noise: true,
        ..Faults::default()
    })
    .await;
    let dev = device(addr);
    for _ in 0..3 {
        assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    }
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
    dev.power(None, PowerCommand::On).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn insufficient_privilege_says_what_to_do() {
    let addr = Bmc::start(Faults {
        control_cc: 0xD4,
        ..Faults::default()
    })
    .await;
    let dev = device(addr);
    match dev.power(None, PowerCommand::Off).await {
        Err(e @ DeviceError::Refused { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("Chassis Control") && text.contains("raise"),
                "{text}"
            );
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    // The session survives a refusal.
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn wrong_password_against_the_codec_bmc_is_auth_failed() {
    let addr = Bmc::start(Faults::default()).await;
    let mut cfg = device(addr).config().clone();
    cfg.password = Secret::new(b"not-pw".to_vec());
    let err = IpmiDevice::new(cfg).status(None).await.unwrap_err();
    assert!(matches!(err, DeviceError::AuthFailed { .. }), "{err:?}");
}

#[tokio::test]
async fn auto_prefers_suite_17_when_offered_and_runs_it() {
    // Suites 0, 3 and 17 (records split across two 16-byte chunks).
    let records = vec![
        0xC0, 0x00, 0x00, 0x40, 0x80, 0xC0, 0x03, 0x01, 0x41, 0x81, 0xC0, 0x11, 0x03, 0x44, 0x81,
        0xC0, 0x01, 0x01, 0x40, 0x80,
    ];
    let addr = Bmc::start(Faults {
        cipher_suites: Some(records),
        ..Faults::default()
    })
    .await;
    let mut cfg = device(addr).config().clone();
    cfg.cipher_suite = CipherSuiteChoice::Auto;
    let dev = IpmiDevice::new(cfg);
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert_eq!(dev.negotiated_suite().await, Some(CipherSuite::SUITE_17));
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn idle_sessions_are_closed_and_so_is_the_session_of_a_dropped_device() {
    let faults = Faults::default();
    let closes = faults.closes.clone();
    let addr = Bmc::start(faults).await;
    let mut cfg = device(addr).config().clone();
    cfg.idle_close = Duration::from_millis(150);
    let dev = IpmiDevice::new(cfg.clone());
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        closes.load(Ordering::SeqCst),
        1,
        "closed after the idle period"
    );
    // The next call opens a new session transparently.
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    drop(dev);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(closes.load(Ordering::SeqCst), 2, "closed on drop");
}

/// ipmitool (a third-party console) against the BMC built from our codec: the only real peer
/// for cipher suite 17 on this machine, since ipmi_sim rejects it. Checks our RAKP-HMAC-SHA256,
/// HMAC-SHA256-128 and K1/K2 derivation against ipmitool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmitool_talks_to_the_codec_bmc_with_suites_3_and_17() {
    const IPMITOOL: &str = "/usr/bin/ipmitool";
    if !require::needs_command(IPMITOOL, "Debian package ipmitool") {
        return;
    }
    let addr = Bmc::start(Faults::default()).await;
    for suite in ["3", "17"] {
        // -H 127.0.0.1 always: without it ipmitool drives this machine's own BMC. The
        // password goes through the environment (-E), never argv.
        let out = tokio::process::Command::new(IPMITOOL)
            .args(["-I", "lanplus", "-H", "127.0.0.1", "-p"])
            .arg(addr.port().to_string())
            .args(["-U", "admin", "-E", "-C", suite, "-N", "1", "-R", "2"])
            .args(["chassis", "power", "status"])
            .env("IPMI_PASSWORD", "pw")
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("Chassis Power is on"),
            "ipmitool -C {suite}: {text}"
        );
    }
}

#[tokio::test]
async fn a_refused_session_privilege_says_to_raise_it() {
    // 0x81: "requested level exceeds the user's or channel's limit" (§22.18).
    let addr = Bmc::start(Faults {
        privilege_cc: 0x81,
        ..Faults::default()
    })
    .await;
    let err = device(addr).status(None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, DeviceError::AuthFailed { .. })
            && text.contains("raise the user's privilege"),
        "{text}"
    );
}
