//! RMCP, the outermost header of every IPMI-over-LAN datagram (IPMI v2.0 §13.1.3, DMTF ASF).

use super::{byte, take, WireError};

/// RMCP version 1.0, the only one IPMI uses (§13.1.3).
pub const RMCP_VERSION: u8 = 0x06;
/// Sequence number 0xFF: "no RMCP ACK", which IPMI always uses because its own session layer
/// retransmits (§13.1.3).
pub const RMCP_SEQ_NO_ACK: u8 = 0xFF;
/// Length of the RMCP header.
pub const RMCP_HEADER_LEN: usize = 4;
/// The UDP port BMCs listen on (`623`, "asf-rmcp").
pub const RMCP_PORT: u16 = 623;
/// IANA enterprise number of the ASF (4542), used in presence ping/pong.
pub const ASF_IANA: u32 = 4542;

/// The message class of an RMCP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmcpClass {
    /// ASF messages (presence ping/pong).
    Asf,
    /// IPMI messages (everything else we send).
    Ipmi,
    /// Any other class; such datagrams are not for us.
    Other(u8),
}

impl RmcpClass {
    /// The class byte on the wire (bit 7, "ACK", is always clear here).
    pub fn to_byte(self) -> u8 {
        match self {
            RmcpClass::Asf => 0x06,
            RmcpClass::Ipmi => 0x07,
            RmcpClass::Other(b) => b,
        }
    }

    /// The class from its wire byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x06 => RmcpClass::Asf,
            0x07 => RmcpClass::Ipmi,
            other => RmcpClass::Other(other),
        }
    }
}

/// A decoded RMCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RmcpHeader {
    /// RMCP sequence number (0xFF for IPMI).
    pub sequence: u8,
    /// Message class.
    pub class: RmcpClass,
}

impl RmcpHeader {
    /// The header IPMI uses for every datagram.
    pub const IPMI: RmcpHeader = RmcpHeader {
        sequence: RMCP_SEQ_NO_ACK,
        class: RmcpClass::Ipmi,
    };

    /// Appends the 4 header bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[RMCP_VERSION, 0x00, self.sequence, self.class.to_byte()]);
    }

    /// Decodes the header and returns it with the rest of the datagram.
    pub fn decode(buf: &[u8]) -> Result<(RmcpHeader, &[u8]), WireError> {
        let h = take::<4>(buf, 0, "RMCP header")?;
        if h[0] != RMCP_VERSION {
            return Err(WireError::BadValue {
                what: "RMCP version",
                value: h[0].into(),
            });
        }
        let rest = buf.get(RMCP_HEADER_LEN..).unwrap_or_default();
        Ok((
            RmcpHeader {
                sequence: h[2],
                class: RmcpClass::from_byte(h[3]),
            },
            rest,
        ))
    }
}

/// ASF message type of a presence ping.
pub const ASF_PRESENCE_PING: u8 = 0x80;
/// ASF message type of a presence pong.
pub const ASF_PRESENCE_PONG: u8 = 0x40;

/// Encodes an ASF presence ping (a liveness probe that needs no credentials, DSP0136 §3.2.4).
pub fn encode_presence_ping(tag: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    RmcpHeader {
        sequence: RMCP_SEQ_NO_ACK,
        class: RmcpClass::Asf,
    }
    .encode(&mut out);
    out.extend_from_slice(&ASF_IANA.to_be_bytes());
    out.extend_from_slice(&[ASF_PRESENCE_PING, tag, 0x00, 0x00]);
    out
}

/// A decoded ASF presence pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresencePong {
    /// The tag of the ping this answers.
    pub tag: u8,
    /// Supported entities byte; bit 7 set means the responder supports IPMI (DSP0136 §3.2.4.3).
    pub supported_entities: u8,
}

impl PresencePong {
    /// Whether the responder says it speaks IPMI.
    pub fn supports_ipmi(&self) -> bool {
        self.supported_entities & 0x80 != 0
    }

    /// Encodes a pong answering the ping with `tag` (used by simulators).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28);
        RmcpHeader {
            sequence: RMCP_SEQ_NO_ACK,
            class: RmcpClass::Asf,
        }
        .encode(&mut out);
        out.extend_from_slice(&ASF_IANA.to_be_bytes());
        out.extend_from_slice(&[ASF_PRESENCE_PONG, self.tag, 0x00, 0x10]);
        out.extend_from_slice(&ASF_IANA.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, self.supported_entities, 0x00]);
        out.extend_from_slice(&[0; 6]);
        out
    }

    /// Decodes a whole datagram as a presence pong.
    pub fn decode(buf: &[u8]) -> Result<PresencePong, WireError> {
        let (h, rest) = RmcpHeader::decode(buf)?;
        if h.class != RmcpClass::Asf {
            return Err(WireError::BadValue {
                what: "RMCP class (expected ASF)",
                value: h.class.to_byte().into(),
            });
        }
        let msg_type = byte(rest, 4, "ASF pong")?;
        if msg_type != ASF_PRESENCE_PONG {
            return Err(WireError::BadValue {
                what: "ASF message type",
                value: msg_type.into(),
            });
        }
        Ok(PresencePong {
            tag: byte(rest, 5, "ASF pong")?,
            supported_entities: byte(rest, 16, "ASF pong")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejects_other_versions() {
        let mut out = Vec::new();
        RmcpHeader::IPMI.encode(&mut out);
        assert_eq!(out, [0x06, 0x00, 0xff, 0x07]);
        out.push(0xAA);
        let (h, rest) = RmcpHeader::decode(&out).unwrap();
        assert_eq!(h, RmcpHeader::IPMI);
        assert_eq!(rest, [0xAA]);
        assert!(RmcpHeader::decode(&[0x05, 0, 0xff, 7]).is_err());
        assert!(RmcpHeader::decode(&[0x06, 0]).is_err());
    }

    #[test]
    fn presence_pong_round_trip() {
        let p = PresencePong {
            tag: 7,
            supported_entities: 0x81,
        };
        assert_eq!(PresencePong::decode(&p.encode()).unwrap(), p);
        assert!(p.supports_ipmi());
        assert_eq!(encode_presence_ping(3).len(), 12);
    }
}
