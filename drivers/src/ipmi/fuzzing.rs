//! Entry points shared by the cargo-fuzz target in `drivers/fuzz` and the ordinary test that
//! replays its seed corpus (CI has no nightly toolchain, so the corpus is replayed instead).

use super::crypto::{CipherSuite, RakpInputs, SessionKeys};
use super::message::{
    cipher_suite_ids, Body, ChannelAuthCapabilities, ChannelCipherSuites, ChassisControl,
    ChassisStatus, CloseSession, DeviceId, GetChannelAuthCapabilities, GetChannelCipherSuites,
    IpmiRequest, IpmiResponse, OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp3, Rakp4,
    SessionPrivilegeLevel, SetSessionPrivilegeLevel, SystemGuid,
};
use super::rmcp::PresencePong;
use super::session::{decode_header, decode_packet};

/// Fixed session keys (suite 3 and 17) so fuzzed packets reach the integrity and decryption
/// paths; a fuzzer finds valid AuthCodes only by luck, but the trailer parsing is covered.
fn keys() -> [SessionKeys; 2] {
    let i = RakpInputs {
        console_session_id: 0xa0a2a3a4,
        bmc_session_id: 0x182,
        console_random: [1; 16],
        bmc_random: [2; 16],
        bmc_guid: [3; 16],
        role: 0x14,
        username: b"u",
    };
    [
        SessionKeys::derive(CipherSuite::SUITE_3, b"p", None, &i),
        SessionKeys::derive(CipherSuite::SUITE_17, b"p", None, &i),
    ]
}

/// Feeds `data` to every decoder of the codec, as a whole datagram and as each layer's input.
/// Must return without panicking for any input; results are discarded.
pub fn decode_everything(data: &[u8]) {
    let _ = decode_header(data);
    let _ = decode_packet(data, None);
    for k in keys() {
        let _ = decode_packet(data, Some(&k));
        let _ = k.decrypt(data);
    }
    let _ = PresencePong::decode(data);
    if let Ok(req) = IpmiRequest::decode(data) {
        // Round trip: what decodes must encode back to the same bytes.
        debug_assert_eq!(req.encode(), data);
    }
    if let Ok(resp) = IpmiResponse::decode(data) {
        debug_assert_eq!(resp.encode(), data);
    }
    let _ = GetChannelAuthCapabilities::decode(data);
    let _ = ChannelAuthCapabilities::decode(data);
    let _ = GetChannelCipherSuites::decode(data);
    let _ = ChannelCipherSuites::decode(data);
    let _ = cipher_suite_ids(data);
    let _ = SetSessionPrivilegeLevel::decode(data);
    let _ = SessionPrivilegeLevel::decode(data);
    let _ = SystemGuid::decode(data).map(|g| g.to_ipmitool_string());
    let _ = ChassisStatus::decode(data);
    let _ = ChassisControl::decode(data);
    let _ = CloseSession::decode(data);
    let _ = DeviceId::decode(data).map(|d| d.describe());
    let _ = OpenSessionRequest::decode(data);
    let _ = OpenSessionResponse::decode(data);
    let _ = Rakp1::decode(data);
    let _ = Rakp2::decode(data);
    let _ = Rakp3::decode(data);
    let _ = Rakp4::decode(data);
}
