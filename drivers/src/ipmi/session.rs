//! IPMI session layer: the IPMI 1.5 and IPMI 2.0/RMCP+ session headers, the integrity trailer
//! and payload types (IPMI v2.0 §13.6, §13.8, Table 13-8).
//!
//! [`encode_packet`] and [`decode_packet`] turn whole UDP datagrams (RMCP header included)
//! into [`Packet`]s and back, for either role: a console encodes requests with the BMC's
//! session id, a BMC encodes responses with the console's. [`decode_header`] reads the header
//! without keys so a BMC can find the session (and its keys) a datagram belongs to.

use super::crypto::SessionKeys;
use super::rmcp::{RmcpClass, RmcpHeader};
use super::{byte, le32, take, WireError};

/// Authentication type byte of an IPMI 1.5 packet without authentication.
pub const AUTH_TYPE_NONE: u8 = 0x00;
/// Authentication type byte that marks the IPMI 2.0/RMCP+ session header format (§13.6).
pub const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
/// Next Header byte of the integrity trailer: always 0x07 (RMCP class IPMI, §13.6).
pub const NEXT_HEADER: u8 = 0x07;
/// The integrity pad byte (§13.6: "0xFF").
pub const INTEGRITY_PAD: u8 = 0xFF;

/// RMCP+ payload type (the low 6 bits of the payload type byte, §13.27.3, Table 13-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    /// An IPMI message (request or response).
    Ipmi,
    /// Serial over LAN.
    Sol,
    /// OEM explicit: the header carries an IANA number and an OEM payload id.
    OemExplicit,
    /// RMCP+ Open Session Request (console to BMC).
    OpenSessionRequest,
    /// RMCP+ Open Session Response (BMC to console).
    OpenSessionResponse,
    /// RAKP message 1 (console to BMC).
    Rakp1,
    /// RAKP message 2 (BMC to console).
    Rakp2,
    /// RAKP message 3 (console to BMC).
    Rakp3,
    /// RAKP message 4 (BMC to console).
    Rakp4,
    /// Any other 6-bit payload type.
    Other(u8),
}

impl PayloadType {
    /// The 6-bit wire value.
    pub fn to_bits(self) -> u8 {
        match self {
            PayloadType::Ipmi => 0x00,
            PayloadType::Sol => 0x01,
            PayloadType::OemExplicit => 0x02,
            PayloadType::OpenSessionRequest => 0x10,
            PayloadType::OpenSessionResponse => 0x11,
            PayloadType::Rakp1 => 0x12,
            PayloadType::Rakp2 => 0x13,
            PayloadType::Rakp3 => 0x14,
            PayloadType::Rakp4 => 0x15,
            PayloadType::Other(b) => b & 0x3F,
        }
    }

    /// The payload type from the low 6 bits of `b`.
    pub fn from_bits(b: u8) -> Self {
        match b & 0x3F {
            0x00 => PayloadType::Ipmi,
            0x01 => PayloadType::Sol,
            0x02 => PayloadType::OemExplicit,
            0x10 => PayloadType::OpenSessionRequest,
            0x11 => PayloadType::OpenSessionResponse,
            0x12 => PayloadType::Rakp1,
            0x13 => PayloadType::Rakp2,
            0x14 => PayloadType::Rakp3,
            0x15 => PayloadType::Rakp4,
            other => PayloadType::Other(other),
        }
    }
}

/// IPMI 1.5 session header (§13.6, "IPMI v1.5 LAN Session Header"). We only use it without
/// authentication, for Get Channel Authentication Capabilities before a session exists
/// (ipmitool does the same; BMCs that speak only 1.5 answer nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V15Header {
    /// Authentication type (0 = none; others carry a 16-byte AuthCode).
    pub auth_type: u8,
    /// Session sequence number.
    pub sequence: u32,
    /// Session id (0 outside a session).
    pub session_id: u32,
    /// The 16-byte AuthCode, present exactly when `auth_type` is not none.
    pub auth_code: Option<[u8; 16]>,
}

/// IPMI 2.0/RMCP+ session header (§13.6, "IPMI v2.0 RMCP+ Session Header").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V20Header {
    /// Payload type.
    pub payload_type: PayloadType,
    /// Bit 7: the payload is encrypted.
    pub encrypted: bool,
    /// Bit 6: the packet has an integrity trailer.
    pub authenticated: bool,
    /// OEM IANA number and OEM payload id, present exactly for [`PayloadType::OemExplicit`].
    pub oem: Option<(u32, u16)>,
    /// The receiver's session id (the BMC's on requests, the console's on responses), 0 before
    /// a session exists.
    pub session_id: u32,
    /// Session sequence number (0 outside a session).
    pub sequence: u32,
}

/// Either session header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionHeader {
    /// IPMI 1.5 format.
    V15(V15Header),
    /// IPMI 2.0/RMCP+ format.
    V20(V20Header),
}

impl SessionHeader {
    /// The session id the packet carries.
    pub fn session_id(&self) -> u32 {
        match self {
            SessionHeader::V15(h) => h.session_id,
            SessionHeader::V20(h) => h.session_id,
        }
    }

    /// The session sequence number the packet carries.
    pub fn sequence(&self) -> u32 {
        match self {
            SessionHeader::V15(h) => h.sequence,
            SessionHeader::V20(h) => h.sequence,
        }
    }

    /// The payload type (IPMI 1.5 packets always carry IPMI messages).
    pub fn payload_type(&self) -> PayloadType {
        match self {
            SessionHeader::V15(_) => PayloadType::Ipmi,
            SessionHeader::V20(h) => h.payload_type,
        }
    }
}

/// A whole session-layer packet: its header and its payload in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The session header.
    pub header: SessionHeader,
    /// The payload, decrypted.
    pub payload: Vec<u8>,
}

impl SessionHeader {
    /// An RMCP+ header outside any session (session id and sequence 0, no integrity or
    /// encryption), as session setup (Open Session, RAKP) and pre-session commands use (§13.6).
    pub fn outside_session(payload_type: PayloadType) -> SessionHeader {
        SessionHeader::V20(V20Header {
            payload_type,
            encrypted: false,
            authenticated: false,
            oem: None,
            session_id: 0,
            sequence: 0,
        })
    }
}

impl Packet {
    /// A packet outside any session (see [`SessionHeader::outside_session`]).
    pub fn outside_session(payload_type: PayloadType, payload: Vec<u8>) -> Packet {
        Packet {
            header: SessionHeader::outside_session(payload_type),
            payload,
        }
    }
}

/// Where the parts of a datagram are, once its session header has been read.
struct Layout<'a> {
    header: SessionHeader,
    /// From AuthType to the end of the datagram.
    session: &'a [u8],
    /// Offset of the payload within `session`.
    payload_start: usize,
    /// Payload length from the header.
    payload_len: usize,
}

fn layout(datagram: &[u8]) -> Result<Layout<'_>, WireError> {
    let (rmcp, session) = RmcpHeader::decode(datagram)?;
    if rmcp.class != RmcpClass::Ipmi {
        return Err(WireError::BadValue {
            what: "RMCP class (expected IPMI)",
            value: rmcp.class.to_byte().into(),
        });
    }
    let auth_type = byte(session, 0, "session header")?;
    if auth_type == AUTH_TYPE_RMCP_PLUS {
        let pt = byte(session, 1, "RMCP+ session header")?;
        let payload_type = PayloadType::from_bits(pt);
        let (oem, at) = if payload_type == PayloadType::OemExplicit {
            let iana = le32(session, 2, "RMCP+ OEM header")?;
            let id = u16::from_le_bytes(take::<2>(session, 6, "RMCP+ OEM header")?);
            (Some((iana, id)), 8)
        } else {
            (None, 2)
        };
        let session_id = le32(session, at, "RMCP+ session header")?;
        let sequence = le32(session, at + 4, "RMCP+ session header")?;
        let len = u16::from_le_bytes(take::<2>(session, at + 8, "RMCP+ session header")?);
        Ok(Layout {
            header: SessionHeader::V20(V20Header {
                payload_type,
                encrypted: pt & 0x80 != 0,
                authenticated: pt & 0x40 != 0,
                oem,
                session_id,
                sequence,
            }),
            session,
            payload_start: at + 10,
            payload_len: usize::from(len),
        })
    } else {
        let sequence = le32(session, 1, "IPMI 1.5 session header")?;
        let session_id = le32(session, 5, "IPMI 1.5 session header")?;
        let (auth_code, at) = if auth_type == AUTH_TYPE_NONE {
            (None, 9)
        } else {
            (Some(take::<16>(session, 9, "IPMI 1.5 AuthCode")?), 25)
        };
        let len = byte(session, at, "IPMI 1.5 session header")?;
        Ok(Layout {
            header: SessionHeader::V15(V15Header {
                auth_type,
                sequence,
                session_id,
                auth_code,
            }),
            session,
            payload_start: at + 1,
            payload_len: usize::from(len),
        })
    }
}

/// Reads the session header of a datagram without verifying or decrypting anything.
pub fn decode_header(datagram: &[u8]) -> Result<SessionHeader, WireError> {
    layout(datagram).map(|l| l.header)
}

/// Decodes a datagram. For an authenticated RMCP+ packet the AuthCode is verified with `keys`
/// before anything else is done with the payload, and only then is it decrypted (§13.28.4:
/// integrity covers the encrypted payload, so a forged packet never reaches the cipher).
/// Whether a packet *should* be authenticated is the caller's policy, not the codec's.
pub fn decode_packet(datagram: &[u8], keys: Option<&SessionKeys>) -> Result<Packet, WireError> {
    let l = layout(datagram)?;
    let end = l
        .payload_start
        .checked_add(l.payload_len)
        .ok_or(WireError::Mismatch {
            what: "payload length",
        })?;
    let raw = l
        .session
        .get(l.payload_start..end)
        .ok_or(WireError::Truncated {
            what: "payload",
            needed: end,
            got: l.session.len(),
        })?;
    let SessionHeader::V20(h) = l.header else {
        return Ok(Packet {
            header: l.header,
            payload: raw.to_vec(),
        });
    };
    let needs_keys = || WireError::BadValue {
        what: "authenticated or encrypted packet outside a session (payload type)",
        value: h.payload_type.to_bits().into(),
    };
    if h.authenticated {
        let keys = keys.ok_or_else(needs_keys)?;
        let code_len = keys.auth_code_len();
        let signed_end = l
            .session
            .len()
            .checked_sub(code_len)
            .ok_or(WireError::Truncated {
                what: "integrity trailer",
                needed: code_len,
                got: l.session.len(),
            })?;
        // Trailer: pad (0xFF × n), pad length n, next header, AuthCode (§13.6).
        let next = byte(l.session, signed_end.wrapping_sub(1), "integrity trailer")?;
        let pad_len = byte(l.session, signed_end.wrapping_sub(2), "integrity trailer")?;
        if next != NEXT_HEADER {
            return Err(WireError::BadValue {
                what: "integrity trailer next header",
                value: next.into(),
            });
        }
        if end.checked_add(usize::from(pad_len) + 2) != Some(signed_end) {
            return Err(WireError::Mismatch {
                what: "integrity pad length",
            });
        }
        let signed = l.session.get(..signed_end).unwrap_or_default();
        let code = l.session.get(signed_end..).unwrap_or_default();
        if !keys.verify_auth_code(signed, code) {
            return Err(WireError::Integrity);
        }
    } else if end != l.session.len() {
        return Err(WireError::Mismatch {
            what: "payload length (trailing bytes without integrity)",
        });
    }
    let payload = if h.encrypted {
        keys.ok_or_else(needs_keys)?.decrypt(raw)?
    } else {
        raw.to_vec()
    };
    Ok(Packet {
        header: l.header,
        payload,
    })
}

/// Encodes a packet into a datagram (RMCP header included). An RMCP+ packet marked
/// `encrypted` is encrypted with `keys` and `iv` (which must be fresh random bytes for every
/// packet, §13.29); one marked `authenticated` gets the pad and AuthCode trailer.
pub fn encode_packet(
    packet: &Packet,
    keys: Option<&SessionKeys>,
    iv: [u8; 16],
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(packet.payload.len() + 64);
    RmcpHeader::IPMI.encode(&mut out);
    match packet.header {
        SessionHeader::V15(h) => {
            let len = u8::try_from(packet.payload.len()).map_err(|_| WireError::TooLong {
                what: "IPMI 1.5 payload",
                len: packet.payload.len(),
                max: 255,
            })?;
            if (h.auth_type == AUTH_TYPE_NONE) != h.auth_code.is_none()
                || h.auth_type == AUTH_TYPE_RMCP_PLUS
            {
                return Err(WireError::BadValue {
                    what: "IPMI 1.5 auth type (AuthCode present iff not none)",
                    value: h.auth_type.into(),
                });
            }
            out.push(h.auth_type);
            out.extend_from_slice(&h.sequence.to_le_bytes());
            out.extend_from_slice(&h.session_id.to_le_bytes());
            if let Some(code) = h.auth_code {
                out.extend_from_slice(&code);
            }
            out.push(len);
            out.extend_from_slice(&packet.payload);
        }
        SessionHeader::V20(h) => {
            let needs_keys = WireError::BadValue {
                what: "authenticated or encrypted packet without session keys (payload type)",
                value: h.payload_type.to_bits().into(),
            };
            if (h.payload_type == PayloadType::OemExplicit) != h.oem.is_some() {
                return Err(WireError::BadValue {
                    what: "OEM header present iff payload type is OEM explicit",
                    value: h.payload_type.to_bits().into(),
                });
            }
            let payload = if h.encrypted {
                keys.ok_or(needs_keys.clone())?.encrypt(iv, &packet.payload)
            } else {
                packet.payload.clone()
            };
            let len = u16::try_from(payload.len()).map_err(|_| WireError::TooLong {
                what: "RMCP+ payload",
                len: payload.len(),
                max: usize::from(u16::MAX),
            })?;
            let session_start = out.len();
            out.push(AUTH_TYPE_RMCP_PLUS);
            out.push(
                h.payload_type.to_bits()
                    | if h.encrypted { 0x80 } else { 0 }
                    | if h.authenticated { 0x40 } else { 0 },
            );
            if let Some((iana, id)) = h.oem {
                out.extend_from_slice(&iana.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
            }
            out.extend_from_slice(&h.session_id.to_le_bytes());
            out.extend_from_slice(&h.sequence.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&payload);
            if h.authenticated {
                let keys = keys.ok_or(needs_keys)?;
                // Pad so that AuthType..NextHeader is a multiple of 4 bytes (§13.6).
                let unpadded = out.len() - session_start + 2;
                let pad = (4 - unpadded % 4) % 4;
                out.extend(std::iter::repeat_n(INTEGRITY_PAD, pad));
                // pad < 4, so it fits a byte.
                out.push(pad as u8);
                out.push(NEXT_HEADER);
                let code = keys.auth_code(out.get(session_start..).unwrap_or_default());
                out.extend_from_slice(&code);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipmi::crypto::{CipherSuite, RakpInputs};

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn captured_keys() -> SessionKeys {
        let h16 = |s: &str| -> [u8; 16] { hex(s).try_into().unwrap() };
        SessionKeys::derive(
            CipherSuite::SUITE_3,
            b"p",
            None,
            &RakpInputs {
                console_session_id: 0xa0a2a3a4,
                bmc_session_id: 0x182,
                console_random: h16("7b 8f e6 93 84 e3 07 93 2a 7b 05 53 df c5 e1 01"),
                bmc_random: h16("ce 74 99 e7 60 d8 d8 bc a9 2c 1b a3 d3 5b d6 f5"),
                bmc_guid: h16("a1 23 45 67 89 ab cd ef a1 23 45 67 89 ab cd ef"),
                role: 0x14,
                username: b"u",
            },
        )
    }

    #[test]
    fn ipmitool_v15_get_channel_auth_caps_round_trips() {
        let sent = hex("06 00 ff 07 00 00 00 00 00 00 00 00 00 09 20 18 c8 81 00 38 8e 04 b5");
        let p = decode_packet(&sent, None).unwrap();
        assert_eq!(p.header.session_id(), 0);
        assert_eq!(p.payload, hex("20 18 c8 81 00 38 8e 04 b5"));
        assert_eq!(encode_packet(&p, None, [0; 16]).unwrap(), sent);
    }

    #[test]
    fn ipmitool_encrypted_request_round_trips_byte_exact() {
        let keys = captured_keys();
        let sent = hex(
            "06 00 ff 07 06 c0 82 01 00 00 03 00 00 00 20 00 b8 23 38 10 fc 35 3f a1 04 24 3b 48 e8 57 ae e5 fe 1b 6c be 01 26 27 6c b8 14 8a 0b 6c cb 48 82 ff ff 02 07 cc e8 a0 b5 2b 1c cc db d0 b2 53 3a",
        );
        let p = decode_packet(&sent, Some(&keys)).unwrap();
        assert_eq!(p.payload, hex("20 18 c8 81 04 3b 04 3c"));
        let iv: [u8; 16] = sent[16..32].try_into().unwrap();
        assert_eq!(encode_packet(&p, Some(&keys), iv).unwrap(), sent);
    }

    #[test]
    fn ipmi_sim_encrypted_response_decodes_and_forgery_is_caught() {
        let keys = captured_keys();
        let mut got = hex(
            "06 00 ff 07 06 c0 a4 a3 a2 a0 01 00 00 00 20 00 cf 26 d5 c2 7b f3 f1 ca a0 be 51 a7 14 e3 52 c3 4c ff 50 66 d5 6d 6a 45 92 8a 44 6e 09 50 0f 97 ff ff 02 07 4a 4b 5d 13 78 f2 09 ad 87 a3 f3 c6",
        );
        let p = decode_packet(&got, Some(&keys)).unwrap();
        let SessionHeader::V20(h) = p.header else {
            panic!("not v2")
        };
        assert_eq!((h.session_id, h.sequence), (0xa0a2a3a4, 1));
        assert_eq!(p.payload, hex("81 1c 63 20 04 3b 00 04 9d"));
        got[40] ^= 1;
        assert_eq!(decode_packet(&got, Some(&keys)), Err(WireError::Integrity));
        assert!(decode_packet(&got, None).is_err());
    }

    #[test]
    fn open_session_packets_from_capture() {
        let req = hex("06 00 ff 07 06 10 00 00 00 00 00 00 00 00 20 00 00 00 00 00 a4 a3 a2 a0 00 00 00 08 01 00 00 00 01 00 00 08 01 00 00 00 02 00 00 08 01 00 00 00");
        let p = decode_packet(&req, None).unwrap();
        assert_eq!(p.header.payload_type(), PayloadType::OpenSessionRequest);
        assert_eq!(p.payload.len(), 32);
        assert_eq!(encode_packet(&p, None, [0; 16]).unwrap(), req);
    }

    #[test]
    fn truncation_and_trailing_bytes_are_errors() {
        let sent = hex("06 00 ff 07 00 00 00 00 00 00 00 00 00 09 20 18 c8 81 00 38 8e 04 b5");
        for n in 0..sent.len() {
            assert!(decode_packet(&sent[..n], None).is_err());
        }
        let mut longer = sent.clone();
        longer.push(0);
        // IPMI 1.5 allows a trailing "legacy pad" byte (§13.6), so extra bytes are ignored.
        assert!(decode_packet(&longer, None).is_ok());
    }
}
