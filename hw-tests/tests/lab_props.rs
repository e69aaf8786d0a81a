//! Properties of the lab BMC's request handler, fed directly (no sockets): it never panics on
//! any datagram, garbage never disturbs an open session, and session setup refuses what it
//! must with the right RMCP+ status (§13.24).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::ipmi::crypto::{rakp3_auth_code, CipherSuite, RakpInputs, SessionKeys};
use drivers::ipmi::message::{
    Algorithms, Body, IpmiRequest, IpmiResponse, OpenSessionRequest, OpenSessionResponse, Rakp1,
    Rakp2, Rakp3, Rakp4, NETFN_APP, NETFN_CHASSIS,
};
use drivers::ipmi::session::{
    decode_packet, encode_packet, Packet, PayloadType, SessionHeader, V20Header,
};
use drivers::Secret;
use hw_tests::lab::ipmi::{handle, BmcConfig, BmcState};
use proptest::prelude::*;
use tokio::time::Instant;

fn bmc() -> BmcState {
    BmcState::new(BmcConfig::new("node1", "u", Secret::new(b"p".to_vec())))
}

fn setup(pt: PayloadType, payload: Vec<u8>) -> Vec<u8> {
    encode_packet(&Packet::outside_session(pt, payload), None, [0; 16]).unwrap()
}

/// A minimal console written directly on the codec, so tests can also send what a correct
/// console never would (a RAKP 3 with a wrong password's code, replays, forgeries).
struct Console {
    keys: SessionKeys,
    console_id: u32,
    bmc_id: u32,
    seq: u32,
    rq_seq: u8,
}

fn reply(st: &mut BmcState, d: &[u8]) -> Packet {
    decode_packet(&handle(st, d, Instant::now()).expect("a reply"), None).unwrap()
}

/// Opens a session; `Err(status)` with the RMCP+ status of the step that refused.
fn open(
    st: &mut BmcState,
    suite: CipherSuite,
    user: &[u8],
    password: &[u8],
) -> Result<Console, u8> {
    let console_id = 0xa0a2_a3a4;
    let algorithms = Algorithms {
        auth: suite.auth.to_byte(),
        integrity: suite.integrity.to_byte(),
        confidentiality: suite.confidentiality.to_byte(),
    };
    let req = OpenSessionRequest {
        tag: 1,
        max_privilege: 0,
        console_session_id: console_id,
        algorithms,
    };
    let p = reply(st, &setup(PayloadType::OpenSessionRequest, req.encode()));
    let r = OpenSessionResponse::decode(&p.payload).unwrap();
    if r.status != 0 {
        return Err(r.status);
    }
    let (bmc_id, chosen) = r.accepted.unwrap();
    assert_eq!(chosen, algorithms);
    let rakp1 = Rakp1 {
        tag: 2,
        bmc_session_id: bmc_id,
        console_random: [7; 16],
        role: 0x14,
        username: user.to_vec(),
    };
    let p = reply(st, &setup(PayloadType::Rakp1, rakp1.encode()));
    let r2 = Rakp2::decode(&p.payload).unwrap();
    if r2.status != 0 {
        return Err(r2.status);
    }
    let a = r2.accepted.unwrap();
    let inputs = RakpInputs {
        console_session_id: console_id,
        bmc_session_id: bmc_id,
        console_random: [7; 16],
        bmc_random: a.bmc_random,
        bmc_guid: a.bmc_guid,
        role: 0x14,
        username: user,
    };
    // No check of RAKP 2 here on purpose: the BMC must catch a wrong password at RAKP 3.
    let rakp3 = Rakp3 {
        tag: 3,
        status: 0,
        bmc_session_id: bmc_id,
        auth_code: rakp3_auth_code(suite.auth, password, &inputs),
    };
    let p = reply(st, &setup(PayloadType::Rakp3, rakp3.encode()));
    let r4 = Rakp4::decode(&p.payload).unwrap();
    if r4.status != 0 {
        return Err(r4.status);
    }
    Ok(Console {
        keys: SessionKeys::derive(suite, password, None, &inputs),
        console_id,
        bmc_id,
        seq: 0,
        rq_seq: 0,
    })
}

impl Console {
    fn request(&mut self, net_fn: u8, cmd: u8, data: Vec<u8>) -> Vec<u8> {
        self.seq += 1;
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        encode_packet(
            &Packet {
                header: SessionHeader::V20(V20Header {
                    payload_type: PayloadType::Ipmi,
                    encrypted: true,
                    authenticated: true,
                    oem: None,
                    session_id: self.bmc_id,
                    sequence: self.seq,
                }),
                payload: IpmiRequest::to_bmc(net_fn, cmd, self.rq_seq, data).encode(),
            },
            Some(&self.keys),
            [self.seq as u8; 16],
        )
        .unwrap()
    }

    fn decode(&self, d: &[u8]) -> IpmiResponse {
        let p = decode_packet(d, Some(&self.keys)).unwrap();
        assert_eq!(p.header.session_id(), self.console_id);
        IpmiResponse::decode(&p.payload).unwrap()
    }

    fn call(&mut self, st: &mut BmcState, net_fn: u8, cmd: u8, data: Vec<u8>) -> IpmiResponse {
        let d = self.request(net_fn, cmd, data);
        self.decode(&handle(st, &d, Instant::now()).expect("reply"))
    }
}

#[test]
fn setup_refusals_carry_the_right_status() {
    let mut st = bmc();
    // Wrong password: the BMC finds out at RAKP 3 (§13.31) and answers "invalid integrity
    // check value" (0Fh).
    assert_eq!(
        open(&mut st, CipherSuite::SUITE_3, b"u", b"wrong").err(),
        Some(0x0F)
    );
    assert_eq!(
        open(&mut st, CipherSuite::SUITE_17, b"u", b"wrong").err(),
        Some(0x0F)
    );
    // Unknown user: "unauthorized name" (0Dh) in RAKP 2.
    assert_eq!(
        open(&mut st, CipherSuite::SUITE_3, b"x", b"p").err(),
        Some(0x0D)
    );
    // Suite 0 (no authentication): "no cipher suite match" (11h).
    assert_eq!(
        open(&mut st, CipherSuite::SUITE_0, b"u", b"p").err(),
        Some(0x11)
    );
    assert_eq!(st.session_count(), 0, "refused sessions are freed");
    let mut c = open(&mut st, CipherSuite::SUITE_17, b"u", b"p").unwrap();
    let r = c.call(&mut st, NETFN_CHASSIS, 0x01, vec![]);
    assert_eq!((r.completion_code, r.data[0] & 1), (0, 1));
    // Chassis Control needs OPERATOR; the session starts at USER (§13.15).
    let r = c.call(&mut st, NETFN_CHASSIS, 0x02, vec![0]);
    assert_eq!(r.completion_code, 0xD4);
    let r = c.call(&mut st, NETFN_APP, 0x3B, vec![4]);
    assert_eq!((r.completion_code, r.data.as_slice()), (0, &[4u8][..]));
    let r = c.call(&mut st, NETFN_CHASSIS, 0x02, vec![0]);
    assert_eq!(r.completion_code, 0);
    let r = c.call(&mut st, NETFN_CHASSIS, 0x01, vec![]);
    assert_eq!(r.data[0] & 1, 0, "off");
    // Unknown command: C1h.
    assert_eq!(
        c.call(&mut st, NETFN_APP, 0x04, vec![]).completion_code,
        0xC1
    );
}

#[test]
fn replays_and_forgeries_are_dropped() {
    let mut st = bmc();
    let mut c = open(&mut st, CipherSuite::SUITE_3, b"u", b"p").unwrap();
    let d = c.request(NETFN_CHASSIS, 0x01, vec![]);
    assert!(handle(&mut st, &d, Instant::now()).is_some());
    assert!(handle(&mut st, &d, Instant::now()).is_none(), "replay");
    let mut forged = c.request(NETFN_CHASSIS, 0x01, vec![]);
    let n = forged.len();
    forged[n - 20] ^= 1;
    assert!(
        handle(&mut st, &forged, Instant::now()).is_none(),
        "forgery"
    );
    c.seq += 1000;
    let far = c.request(NETFN_CHASSIS, 0x01, vec![]);
    assert!(
        handle(&mut st, &far, Instant::now()).is_none(),
        "out of window"
    );
    c.seq -= 1001;
    assert_eq!(
        c.call(&mut st, NETFN_CHASSIS, 0x01, vec![]).completion_code,
        0
    );
}

#[test]
fn presence_ping_is_answered_outside_any_session() {
    use drivers::ipmi::rmcp::{encode_presence_ping, PresencePong};
    let mut st = bmc();
    let pong = handle(&mut st, &encode_presence_ping(9), Instant::now()).unwrap();
    let pong = PresencePong::decode(&pong).unwrap();
    assert_eq!(pong.tag, 9);
    assert!(pong.supports_ipmi());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut st = bmc();
        let _ = handle(&mut st, &bytes, Instant::now());
        let mut c = open(&mut st, CipherSuite::SUITE_17, b"u", b"p").unwrap();
        let _ = handle(&mut st, &bytes, Instant::now());
        prop_assert_eq!(c.call(&mut st, NETFN_CHASSIS, 0x01, vec![]).completion_code, 0);
    }

    #[test]
    fn rmcp_plus_headers_with_random_bodies_never_panic(
        pt in 0u8..=255,
        session in prop_oneof![Just(0u32), any::<u32>()],
        seq in any::<u32>(),
        len in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        v15 in any::<bool>(),
    ) {
        let mut st = bmc();
        let mut d = vec![0x06, 0x00, 0xff, 0x07];
        if v15 {
            d.push(0);
            d.extend_from_slice(&seq.to_le_bytes());
            d.extend_from_slice(&session.to_le_bytes());
            d.push(len as u8);
        } else {
            d.extend_from_slice(&[0x06, pt]);
            d.extend_from_slice(&session.to_le_bytes());
            d.extend_from_slice(&seq.to_le_bytes());
            d.extend_from_slice(&len.to_le_bytes());
        }
        d.extend_from_slice(&body);
        let _ = handle(&mut st, &d, Instant::now());
        // And with a correct length, so the body reaches the payload decoders.
        if !v15 {
            let blen = (body.len() as u16).to_le_bytes();
            d[14] = blen[0];
            d[15] = blen[1];
            let _ = handle(&mut st, &d, Instant::now());
        }
    }

    #[test]
    fn mutated_session_packets_never_panic_and_the_session_survives(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        cmd in any::<u8>(),
        netfn in prop_oneof![Just(NETFN_APP), Just(NETFN_CHASSIS), any::<u8>()],
        data in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        let mut st = bmc();
        let mut c = open(&mut st, CipherSuite::SUITE_3, b"u", b"p").unwrap();
        let mut d = c.request(netfn & 0x3E, cmd, data.clone());
        // Unmutated: whatever the command, a well-formed reply (never a panic).
        if let Some(r) = handle(&mut st, &d, Instant::now()) {
            let resp = c.decode(&r);
            prop_assert_eq!(resp.cmd, cmd);
        }
        d = c.request(netfn & 0x3E, cmd, data);
        for (i, bit) in flips {
            let i = i.index(d.len());
            d[i] ^= 1 << bit;
        }
        if let Some(cut) = cut {
            d.truncate(cut.index(d.len()));
        }
        let _ = handle(&mut st, &d, Instant::now());
        // The session still answers (the unmutated request may have lowered its privilege
        // with Set Session Privilege Level, so D4h is a fine answer too).
        let code = c.call(&mut st, NETFN_CHASSIS, 0x01, vec![]).completion_code;
        prop_assert!(code == 0 || code == 0xD4, "completion code {:#x}", code);
    }
}
