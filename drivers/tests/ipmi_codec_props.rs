//! Property tests of the IPMI codec through its public API (the one a BMC simulator uses):
//! encode then decode is the identity, and no decoder panics on arbitrary bytes.

// Tests may panic on failure; the workspace lints are for production code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::ipmi::crypto::{CipherSuite, RakpInputs, SessionKeys};
use drivers::ipmi::message::*;
use drivers::ipmi::session::{
    decode_header, decode_packet, encode_packet, Packet, PayloadType, SessionHeader, V15Header,
    V20Header, AUTH_TYPE_RMCP_PLUS,
};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn round_trip<B: Body + PartialEq + std::fmt::Debug>(b: B) -> Result<(), TestCaseError> {
    let enc = b.encode();
    prop_assert_eq!(
        B::decode(&enc).map_err(|e| TestCaseError::fail(e.to_string()))?,
        b
    );
    Ok(())
}

fn algorithms() -> impl Strategy<Value = Algorithms> {
    (0u8..64, 0u8..64, 0u8..64).prop_map(|(auth, integrity, confidentiality)| Algorithms {
        auth,
        integrity,
        confidentiality,
    })
}

fn keys_for(suite: CipherSuite, seed: [u8; 16]) -> SessionKeys {
    SessionKeys::derive(
        suite,
        &seed,
        None,
        &RakpInputs {
            console_session_id: 1,
            bmc_session_id: 2,
            console_random: seed,
            bmc_random: [9; 16],
            bmc_guid: [7; 16],
            role: 0x14,
            username: b"admin",
        },
    )
}

proptest! {
    #[test]
    fn ipmi_request_round_trips(rs_addr: u8, net_fn in 0u8..64, rs_lun in 0u8..4, rq_addr: u8,
                                rq_seq in 0u8..64, rq_lun in 0u8..4, cmd: u8, data in bytes(64)) {
        let r = IpmiRequest { rs_addr, net_fn, rs_lun, rq_addr, rq_seq, rq_lun, cmd, data };
        prop_assert_eq!(IpmiRequest::decode(&r.encode()).unwrap(), r.clone());
        let resp = r.response(0xC1, vec![1, 2, 3]);
        prop_assert!(resp.answers(&r) || r.net_fn & 1 == 1);
        prop_assert_eq!(IpmiResponse::decode(&resp.encode()).unwrap(), resp);
    }

    #[test]
    fn command_bodies_round_trip(channel in 0u8..16, extended: bool, privilege in 0u8..16,
                                 auth_types: u8, status: u8, ext: u8, iana in 0u32..(1 << 24),
                                 aux: u8, index in 0u8..64, pt in 0u8..64, records in bytes(16),
                                 guid: [u8; 16], power: u8, ev: u8, misc: u8, fp: Option<u8>,
                                 control in 0u8..16, sid: u32, product: u16,
                                 aux_fw: Option<[u8; 4]>) {
        round_trip(GetChannelAuthCapabilities { channel, extended, privilege })?;
        round_trip(ChannelAuthCapabilities { channel, auth_types, status, extended: ext, oem_iana: iana, oem_aux: aux })?;
        round_trip(GetChannelCipherSuites { channel, payload_type: pt, list_by_suite: extended, index })?;
        round_trip(ChannelCipherSuites { channel, records })?;
        round_trip(SetSessionPrivilegeLevel { level: privilege })?;
        round_trip(SessionPrivilegeLevel { level: privilege })?;
        round_trip(SystemGuid { guid })?;
        round_trip(ChassisStatus { power_state: power, last_power_event: ev, misc, front_panel: fp })?;
        round_trip(ChassisControl { control })?;
        round_trip(CloseSession { session_id: sid })?;
        round_trip(DeviceId { device_id: aux, device_revision: status, firmware_major: ext,
            firmware_minor: power, ipmi_version: ev, additional_support: misc,
            manufacturer_id: iana, product_id: product, aux_firmware: aux_fw })?;
    }

    #[test]
    fn session_setup_payloads_round_trip(tag: u8, status in 1u8..=255, privilege in 0u8..16,
                                         a: u32, b: u32, algs in algorithms(), rand: [u8; 16],
                                         guid: [u8; 16], role: u8, name in bytes(16),
                                         code in bytes(32)) {
        round_trip(OpenSessionRequest { tag, max_privilege: privilege, console_session_id: a, algorithms: algs })?;
        round_trip(OpenSessionResponse { tag, status: 0, max_privilege: privilege, console_session_id: a, accepted: Some((b, algs)) })?;
        round_trip(OpenSessionResponse { tag, status, max_privilege: privilege, console_session_id: a, accepted: None })?;
        round_trip(Rakp1 { tag, bmc_session_id: b, console_random: rand, role, username: name })?;
        round_trip(Rakp2 { tag, status: 0, console_session_id: a, accepted: Some(Rakp2Accepted { bmc_random: rand, bmc_guid: guid, auth_code: code.clone() }) })?;
        round_trip(Rakp2 { tag, status, console_session_id: a, accepted: None })?;
        round_trip(Rakp3 { tag, status, bmc_session_id: b, auth_code: code.clone() })?;
        round_trip(Rakp4 { tag, status, console_session_id: a, integrity_check: code })?;
    }

    #[test]
    fn v15_packets_round_trip(auth_type in any::<u8>().prop_filter("not RMCP+", |t| *t != AUTH_TYPE_RMCP_PLUS),
                              sequence: u32, session_id: u32, code: [u8; 16], payload in bytes(255)) {
        let header = SessionHeader::V15(V15Header {
            auth_type, sequence, session_id, auth_code: (auth_type != 0).then_some(code),
        });
        let p = Packet { header, payload };
        let d = encode_packet(&p, None, [0; 16]).unwrap();
        prop_assert_eq!(decode_packet(&d, None).unwrap(), p);
    }

    #[test]
    fn v20_packets_round_trip_for_both_suites(suite17: bool, encrypted: bool, authenticated: bool,
                                              pt in 0u8..64, oem: (u32, u16), session_id: u32,
                                              sequence: u32, payload in bytes(200), iv: [u8; 16],
                                              seed: [u8; 16]) {
        let suite = if suite17 { CipherSuite::SUITE_17 } else { CipherSuite::SUITE_3 };
        let keys = keys_for(suite, seed);
        let payload_type = PayloadType::from_bits(pt);
        let header = SessionHeader::V20(V20Header {
            payload_type, encrypted, authenticated,
            oem: (payload_type == PayloadType::OemExplicit).then_some(oem),
            session_id, sequence,
        });
        let p = Packet { header, payload };
        let d = encode_packet(&p, Some(&keys), iv).unwrap();
        prop_assert_eq!(decode_header(&d).unwrap(), header);
        prop_assert_eq!(decode_packet(&d, Some(&keys)).unwrap(), p);
        if authenticated {
            // The other side's keys (or a flipped bit) must fail the integrity check.
            let other = keys_for(suite, [seed[0].wrapping_add(1); 16]);
            prop_assert!(decode_packet(&d, Some(&other)).is_err());
            let mut bad = d.clone();
            let i = bad.len() / 2;
            bad[i] ^= 0x01;
            prop_assert!(decode_packet(&bad, Some(&keys)).is_err());
        }
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(data in bytes(300)) {
        drivers::ipmi::fuzzing::decode_everything(&data);
    }

    #[test]
    fn decoders_never_panic_on_mutated_datagrams(flip in 0usize..64, xor: u8, cut in 0usize..64,
                                                 payload in bytes(40), seed: [u8; 16]) {
        // Start from valid datagrams so mutations reach the deeper layers.
        let keys = keys_for(CipherSuite::SUITE_3, seed);
        let p = Packet {
            header: SessionHeader::V20(V20Header {
                payload_type: PayloadType::Ipmi, encrypted: true, authenticated: true,
                oem: None, session_id: 1, sequence: 2,
            }),
            payload,
        };
        let mut d = encode_packet(&p, Some(&keys), [5; 16]).unwrap();
        if let Some(b) = d.get_mut(flip) { *b ^= xor; }
        d.truncate(d.len().saturating_sub(cut));
        drivers::ipmi::fuzzing::decode_everything(&d);
        let _ = decode_packet(&d, Some(&keys));
    }
}
