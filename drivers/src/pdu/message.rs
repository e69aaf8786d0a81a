//! SNMP messages (RFC 3416 PDUs; RFC 1157/1901 community messages; RFC 3412 v3 messages with
//! RFC 3414 USM security parameters), both directions, so the agent simulator in `hw-tests`
//! can decode requests and encode responses. Pure functions over bytes.

use super::ber::{self, tag, BerError, Oid, Reader};

/// SNMP message version field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SNMPv1 (community), version field 0.
    V1,
    /// SNMPv2c (community), version field 1.
    V2c,
    /// SNMPv3 (USM), version field 3.
    V3,
}

impl Version {
    fn wire(self) -> i64 {
        match self {
            Version::V1 => 0,
            Version::V2c => 1,
            Version::V3 => 3,
        }
    }
}

/// PDU types (context-specific constructed tags, RFC 3416 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduType {
    /// GetRequest.
    Get,
    /// GetNextRequest.
    GetNext,
    /// Response (v1 GetResponse).
    Response,
    /// SetRequest.
    Set,
    /// GetBulkRequest (v2c/v3).
    GetBulk,
    /// Report (v3 engine discovery and USM errors).
    Report,
}

impl PduType {
    /// The BER tag.
    pub fn tag(self) -> u8 {
        match self {
            PduType::Get => 0xa0,
            PduType::GetNext => 0xa1,
            PduType::Response => 0xa2,
            PduType::Set => 0xa3,
            PduType::GetBulk => 0xa5,
            PduType::Report => 0xa8,
        }
    }

    fn from_tag(t: u8) -> Option<Self> {
        Some(match t {
            0xa0 => PduType::Get,
            0xa1 => PduType::GetNext,
            0xa2 => PduType::Response,
            0xa3 => PduType::Set,
            0xa5 => PduType::GetBulk,
            0xa8 => PduType::Report,
            _ => return None,
        })
    }
}

/// A variable binding's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// INTEGER (also enumerations such as outlet states).
    Integer(i64),
    /// OCTET STRING (names, serial numbers).
    OctetString(Vec<u8>),
    /// NULL: the value slot of a request.
    Null,
    /// OBJECT IDENTIFIER (sysObjectID).
    Oid(Oid),
    /// IpAddress.
    IpAddress([u8; 4]),
    /// Counter32.
    Counter32(u32),
    /// Gauge32 / Unsigned32.
    Gauge32(u32),
    /// TimeTicks.
    TimeTicks(u32),
    /// Opaque.
    Opaque(Vec<u8>),
    /// Counter64.
    Counter64(u64),
    /// v2 exception: no such object.
    NoSuchObject,
    /// v2 exception: no such instance.
    NoSuchInstance,
    /// v2 exception: end of the MIB view (GetNext ran off the end).
    EndOfMibView,
}

impl Value {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Integer(x) => ber::put_integer(out, *x),
            Value::OctetString(s) => ber::put(out, tag::OCTET_STRING, s),
            Value::Null => ber::put(out, tag::NULL, &[]),
            Value::Oid(o) => ber::put_oid(out, o),
            Value::IpAddress(a) => ber::put(out, tag::IP_ADDRESS, a),
            Value::Counter32(x) => ber::put(out, tag::COUNTER32, &ber::unsigned_bytes((*x).into())),
            Value::Gauge32(x) => ber::put(out, tag::GAUGE32, &ber::unsigned_bytes((*x).into())),
            Value::TimeTicks(x) => ber::put(out, tag::TIMETICKS, &ber::unsigned_bytes((*x).into())),
            Value::Opaque(s) => ber::put(out, tag::OPAQUE, s),
            Value::Counter64(x) => ber::put(out, tag::COUNTER64, &ber::unsigned_bytes(*x)),
            Value::NoSuchObject => ber::put(out, tag::NO_SUCH_OBJECT, &[]),
            Value::NoSuchInstance => ber::put(out, tag::NO_SUCH_INSTANCE, &[]),
            Value::EndOfMibView => ber::put(out, tag::END_OF_MIB_VIEW, &[]),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Value, BerError> {
        const W: &str = "varbind value";
        let (t, v, _) = r.tlv(W)?;
        let u32_of = |v: &[u8]| ber::decode_unsigned(v, 4, W).map(|x| x as u32);
        Ok(match t {
            tag::INTEGER => Value::Integer(ber::decode_integer(v, W)?),
            tag::OCTET_STRING => Value::OctetString(v.to_vec()),
            tag::NULL if v.is_empty() => Value::Null,
            tag::OID => Value::Oid(ber::decode_oid(v, W)?),
            tag::IP_ADDRESS => {
                Value::IpAddress(<[u8; 4]>::try_from(v).map_err(|_| BerError::Range { what: W })?)
            }
            tag::COUNTER32 => Value::Counter32(u32_of(v)?),
            tag::GAUGE32 => Value::Gauge32(u32_of(v)?),
            tag::TIMETICKS => Value::TimeTicks(u32_of(v)?),
            tag::OPAQUE => Value::Opaque(v.to_vec()),
            tag::COUNTER64 => Value::Counter64(ber::decode_unsigned(v, 8, W)?),
            tag::NO_SUCH_OBJECT if v.is_empty() => Value::NoSuchObject,
            tag::NO_SUCH_INSTANCE if v.is_empty() => Value::NoSuchInstance,
            tag::END_OF_MIB_VIEW if v.is_empty() => Value::EndOfMibView,
            other => {
                return Err(BerError::BadValue {
                    what: "varbind value tag",
                    value: other.into(),
                })
            }
        })
    }

    /// The integer, for INTEGER values.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(x) => Some(*x),
            _ => None,
        }
    }

    /// The bytes, for OCTET STRING values.
    pub fn as_octets(&self) -> Option<&[u8]> {
        match self {
            Value::OctetString(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is a v2 exception or a v1-style "no such name" placeholder.
    pub fn is_exception(&self) -> bool {
        matches!(
            self,
            Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView
        )
    }
}

/// RFC 3416 error-status values the driver and the simulator use.
pub mod error_status {
    /// noError.
    pub const NO_ERROR: i64 = 0;
    /// tooBig.
    pub const TOO_BIG: i64 = 1;
    /// noSuchName (v1).
    pub const NO_SUCH_NAME: i64 = 2;
    /// badValue (v1).
    pub const BAD_VALUE: i64 = 3;
    /// readOnly (v1).
    pub const READ_ONLY: i64 = 4;
    /// genErr.
    pub const GEN_ERR: i64 = 5;
    /// noAccess.
    pub const NO_ACCESS: i64 = 6;
    /// wrongValue.
    pub const WRONG_VALUE: i64 = 10;
    /// notWritable.
    pub const NOT_WRITABLE: i64 = 17;

    /// The name RFC 3416 gives a status.
    pub fn name(status: i64) -> &'static str {
        match status {
            0 => "noError",
            1 => "tooBig",
            2 => "noSuchName",
            3 => "badValue",
            4 => "readOnly",
            5 => "genErr",
            6 => "noAccess",
            7 => "wrongType",
            8 => "wrongLength",
            9 => "wrongEncoding",
            10 => "wrongValue",
            11 => "noCreation",
            12 => "inconsistentValue",
            13 => "resourceUnavailable",
            14 => "commitFailed",
            15 => "undoFailed",
            16 => "authorizationError",
            17 => "notWritable",
            18 => "inconsistentName",
            _ => "unknown error status",
        }
    }
}

/// A PDU. For GetBulk, `error_status` and `error_index` carry non-repeaters and
/// max-repetitions (same wire positions, RFC 3416 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// Which PDU.
    pub kind: PduType,
    /// request-id, echoed by the agent.
    pub request_id: i32,
    /// error-status (or non-repeaters).
    pub error_status: i64,
    /// error-index (or max-repetitions).
    pub error_index: i64,
    /// Variable bindings.
    pub varbinds: Vec<(Oid, Value)>,
}

impl Pdu {
    /// A request of `kind` for these OIDs with NULL values.
    pub fn request(kind: PduType, request_id: i32, oids: &[Oid]) -> Pdu {
        Pdu {
            kind,
            request_id,
            error_status: 0,
            error_index: 0,
            varbinds: oids.iter().map(|o| (o.clone(), Value::Null)).collect(),
        }
    }

    /// Appends the PDU's encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        ber::put_nested(out, self.kind.tag(), |p| {
            ber::put_integer(p, self.request_id.into());
            ber::put_integer(p, self.error_status);
            ber::put_integer(p, self.error_index);
            ber::put_nested(p, tag::SEQUENCE, |l| {
                for (oid, value) in &self.varbinds {
                    ber::put_nested(l, tag::SEQUENCE, |vb| {
                        ber::put_oid(vb, oid);
                        value.encode(vb);
                    });
                }
            });
        });
    }

    /// Decodes one PDU that must fill `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Pdu, BerError> {
        let mut r = Reader::new(bytes);
        let p = Pdu::read(&mut r)?;
        r.finish("PDU")?;
        Ok(p)
    }

    fn read(r: &mut Reader<'_>) -> Result<Pdu, BerError> {
        let (t, v, _) = r.tlv("PDU")?;
        let kind = PduType::from_tag(t).ok_or(BerError::BadValue {
            what: "PDU type",
            value: t.into(),
        })?;
        let mut p = Reader::new(v);
        let request_id = p.integer("request-id")?;
        let request_id =
            i32::try_from(request_id).map_err(|_| BerError::Range { what: "request-id" })?;
        let error_status = p.integer("error-status")?;
        let error_index = p.integer("error-index")?;
        let mut list = p.nested(tag::SEQUENCE, "varbind list")?;
        p.finish("PDU")?;
        let mut varbinds = Vec::new();
        while !list.is_empty() {
            let mut vb = list.nested(tag::SEQUENCE, "varbind")?;
            let oid = vb.oid("varbind name")?;
            let value = Value::decode(&mut vb)?;
            vb.finish("varbind")?;
            varbinds.push((oid, value));
        }
        Ok(Pdu {
            kind,
            request_id,
            error_status,
            error_index,
            varbinds,
        })
    }
}

/// USM security parameters (RFC 3414 §2.4), as carried in msgSecurityParameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsmParams {
    /// msgAuthoritativeEngineID.
    pub engine_id: Vec<u8>,
    /// msgAuthoritativeEngineBoots.
    pub engine_boots: i64,
    /// msgAuthoritativeEngineTime.
    pub engine_time: i64,
    /// msgUserName.
    pub user: Vec<u8>,
    /// msgAuthenticationParameters (the truncated HMAC, or empty).
    pub auth_params: Vec<u8>,
    /// msgPrivacyParameters (the salt, or empty).
    pub priv_params: Vec<u8>,
}

/// msgFlags bits (RFC 3412 §6.4).
pub mod flags {
    /// authFlag.
    pub const AUTH: u8 = 0x01;
    /// privFlag.
    pub const PRIV: u8 = 0x02;
    /// reportableFlag.
    pub const REPORTABLE: u8 = 0x04;
}

/// A scopedPDU (RFC 3412 §6.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedPdu {
    /// contextEngineID.
    pub context_engine_id: Vec<u8>,
    /// contextName.
    pub context_name: Vec<u8>,
    /// The PDU.
    pub pdu: Pdu,
}

impl ScopedPdu {
    /// Encodes the scopedPDU SEQUENCE (the plaintext that privacy encrypts).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        ber::put_nested(&mut out, tag::SEQUENCE, |s| {
            ber::put(s, tag::OCTET_STRING, &self.context_engine_id);
            ber::put(s, tag::OCTET_STRING, &self.context_name);
            self.pdu.encode(s);
        });
        out
    }

    /// Decodes a scopedPDU. Trailing bytes after the SEQUENCE are allowed: decrypted
    /// plaintext may carry cipher padding (RFC 3414 §8.1.1.3 for DES; harmless for AES).
    pub fn decode(bytes: &[u8]) -> Result<ScopedPdu, BerError> {
        let mut r = Reader::new(bytes);
        let mut s = r.nested(tag::SEQUENCE, "scopedPDU")?;
        let context_engine_id = s.octets("contextEngineID")?.to_vec();
        let context_name = s.octets("contextName")?.to_vec();
        let pdu = Pdu::read(&mut s)?;
        s.finish("scopedPDU")?;
        Ok(ScopedPdu {
            context_engine_id,
            context_name,
            pdu,
        })
    }
}

/// The data part of a v3 message: plaintext or encrypted scopedPDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopedData {
    /// Not encrypted.
    Plain(ScopedPdu),
    /// encryptedPDU (an OCTET STRING).
    Encrypted(Vec<u8>),
}

/// An SNMPv3 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Message {
    /// msgID.
    pub msg_id: i32,
    /// msgMaxSize.
    pub max_size: i64,
    /// msgFlags.
    pub flags: u8,
    /// USM parameters (msgSecurityModel must be 3).
    pub usm: UsmParams,
    /// The scoped PDU.
    pub data: ScopedData,
}

/// A decoded message of any version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// v1 or v2c.
    Community {
        /// V1 or V2c.
        version: Version,
        /// The community string.
        community: Vec<u8>,
        /// The PDU.
        pdu: Pdu,
    },
    /// v3, with where the authentication parameters sit in the datagram.
    V3 {
        /// The message.
        msg: V3Message,
        /// Offset of msgAuthenticationParameters' value in the datagram (to zero it for the
        /// HMAC check).
        auth_offset: usize,
    },
}

/// The USM security model number.
pub const USM: i64 = 3;

/// Encodes a v1 or v2c message.
pub fn encode_community(version: Version, community: &[u8], pdu: &Pdu) -> Vec<u8> {
    let mut out = Vec::new();
    ber::put_nested(&mut out, tag::SEQUENCE, |m| {
        ber::put_integer(m, version.wire());
        ber::put(m, tag::OCTET_STRING, community);
        pdu.encode(m);
    });
    out
}

/// Encodes a v3 message; returns it with the offset of msgAuthenticationParameters' value
/// (whose bytes the caller overwrites with the HMAC once computed over the whole message).
pub fn encode_v3(msg: &V3Message) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut auth_in_usm = 0;
    let mut usm_in_msg = 0;
    let outer = ber::put_nested(&mut out, tag::SEQUENCE, |m| {
        ber::put_integer(m, 3);
        ber::put_nested(m, tag::SEQUENCE, |h| {
            ber::put_integer(h, msg.msg_id.into());
            ber::put_integer(h, msg.max_size);
            ber::put(h, tag::OCTET_STRING, &[msg.flags]);
            ber::put_integer(h, USM);
        });
        let mut sec = Vec::new();
        let mut auth_in_contents = 0;
        let contents = ber::put_nested(&mut sec, tag::SEQUENCE, |u| {
            ber::put(u, tag::OCTET_STRING, &msg.usm.engine_id);
            ber::put_integer(u, msg.usm.engine_boots);
            ber::put_integer(u, msg.usm.engine_time);
            ber::put(u, tag::OCTET_STRING, &msg.usm.user);
            ber::put(u, tag::OCTET_STRING, &msg.usm.auth_params);
            auth_in_contents = u.len() - msg.usm.auth_params.len();
            ber::put(u, tag::OCTET_STRING, &msg.usm.priv_params);
        });
        auth_in_usm = contents + auth_in_contents;
        ber::put(m, tag::OCTET_STRING, &sec);
        usm_in_msg = m.len() - sec.len();
        match &msg.data {
            ScopedData::Plain(s) => m.extend_from_slice(&s.encode()),
            ScopedData::Encrypted(e) => ber::put(m, tag::OCTET_STRING, e),
        }
    });
    (out, outer + usm_in_msg + auth_in_usm)
}

/// Decodes a message of any version.
pub fn decode_message(bytes: &[u8]) -> Result<Message, BerError> {
    let mut r = Reader::new(bytes);
    let mut m = r.nested(tag::SEQUENCE, "message")?;
    r.finish("datagram")?;
    let version = m.integer("version")?;
    match version {
        0 | 1 => {
            let community = m.octets("community")?.to_vec();
            let pdu = Pdu::read(&mut m)?;
            m.finish("message")?;
            Ok(Message::Community {
                version: if version == 0 {
                    Version::V1
                } else {
                    Version::V2c
                },
                community,
                pdu,
            })
        }
        3 => {
            let mut h = m.nested(tag::SEQUENCE, "msgGlobalData")?;
            let msg_id = i32::try_from(h.integer("msgID")?)
                .map_err(|_| BerError::Range { what: "msgID" })?;
            let max_size = h.integer("msgMaxSize")?;
            let f = h.octets("msgFlags")?;
            let flags = match f {
                [b] => *b,
                _ => {
                    return Err(BerError::Range { what: "msgFlags" });
                }
            };
            let model = h.integer("msgSecurityModel")?;
            h.finish("msgGlobalData")?;
            if model != USM {
                return Err(BerError::BadValue {
                    what: "msgSecurityModel",
                    value: model,
                });
            }
            let mut sec = m.nested(tag::OCTET_STRING, "msgSecurityParameters")?;
            let mut u = sec.nested(tag::SEQUENCE, "UsmSecurityParameters")?;
            sec.finish("msgSecurityParameters")?;
            let engine_id = u.octets("msgAuthoritativeEngineID")?.to_vec();
            let engine_boots = u.integer("msgAuthoritativeEngineBoots")?;
            let engine_time = u.integer("msgAuthoritativeEngineTime")?;
            let user = u.octets("msgUserName")?.to_vec();
            let (auth, auth_offset) =
                u.expect_at(tag::OCTET_STRING, "msgAuthenticationParameters")?;
            let priv_params = u.octets("msgPrivacyParameters")?.to_vec();
            u.finish("UsmSecurityParameters")?;
            let data = match m.peek_tag() {
                Some(tag::OCTET_STRING) => {
                    ScopedData::Encrypted(m.octets("encryptedPDU")?.to_vec())
                }
                _ => {
                    let (t, whole) = m.raw("scopedPDU")?;
                    if t != tag::SEQUENCE {
                        return Err(BerError::UnexpectedTag {
                            what: "scopedPDU",
                            expected: tag::SEQUENCE,
                            found: t,
                        });
                    }
                    ScopedData::Plain(ScopedPdu::decode(whole)?)
                }
            };
            m.finish("message")?;
            if engine_boots < 0 || engine_time < 0 || max_size < 484 {
                return Err(BerError::BadValue {
                    what: "v3 header",
                    value: engine_boots.min(engine_time).min(max_size),
                });
            }
            Ok(Message::V3 {
                msg: V3Message {
                    msg_id,
                    max_size,
                    flags,
                    usm: UsmParams {
                        engine_id,
                        engine_boots,
                        engine_time,
                        user,
                        auth_params: auth.to_vec(),
                        priv_params,
                    },
                    data,
                },
                auth_offset,
            })
        }
        other => Err(BerError::BadValue {
            what: "SNMP version",
            value: other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(s: &str) -> Oid {
        s.parse().unwrap()
    }

    #[test]
    fn net_snmp_v2c_get_decodes() {
        // A v2c GET of sysName.0 in the form `snmpget -v2c -c public HOST 1.3.6.1.2.1.1.5.0` sends.
        let wire = [
            0x30, 0x29, 0x02, 0x01, 0x01, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa0,
            0x1c, 0x02, 0x04, 0x2c, 0x5e, 0x6a, 0x39, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30,
            0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x05, 0x00, 0x05,
            0x00,
        ];
        let m = decode_message(&wire).unwrap();
        let Message::Community {
            version,
            community,
            pdu,
        } = m
        else {
            panic!()
        };
        assert_eq!(version, Version::V2c);
        assert_eq!(community, b"public");
        assert_eq!(pdu.kind, PduType::Get);
        assert_eq!(pdu.request_id, 0x2c5e6a39);
        assert_eq!(pdu.varbinds, vec![(oid("1.3.6.1.2.1.1.5.0"), Value::Null)]);
        assert_eq!(encode_community(Version::V2c, b"public", &pdu), wire);
    }

    #[test]
    fn v3_round_trip_finds_the_auth_field() {
        let msg = V3Message {
            msg_id: 77,
            max_size: 65507,
            flags: flags::AUTH | flags::REPORTABLE,
            usm: UsmParams {
                engine_id: vec![0x80, 0, 0x1f, 0x88, 4, 1, 2, 3],
                engine_boots: 3,
                engine_time: 1000,
                user: b"fence".to_vec(),
                auth_params: vec![0; 12],
                priv_params: vec![],
            },
            data: ScopedData::Plain(ScopedPdu {
                context_engine_id: vec![1, 2],
                context_name: vec![],
                pdu: Pdu::request(PduType::Get, 9, &[oid("1.3.6.1.2.1.1.5.0")]),
            }),
        };
        let (mut bytes, at) = encode_v3(&msg);
        bytes[at..at + 12].copy_from_slice(&[0xab; 12]);
        let Message::V3 {
            msg: back,
            auth_offset,
        } = decode_message(&bytes).unwrap()
        else {
            panic!()
        };
        assert_eq!(auth_offset, at);
        assert_eq!(back.usm.auth_params, vec![0xab; 12]);
        assert_eq!(back.data, msg.data);
        let enc = V3Message {
            data: ScopedData::Encrypted(vec![1, 2, 3]),
            ..msg
        };
        let (bytes, _) = encode_v3(&enc);
        let Message::V3 { msg: back, .. } = decode_message(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(back.data, ScopedData::Encrypted(vec![1, 2, 3]));
    }

    #[test]
    fn every_prefix_of_a_message_is_refused_without_panic() {
        let pdu = Pdu {
            kind: PduType::Response,
            request_id: -5,
            error_status: 0,
            error_index: 0,
            varbinds: vec![
                (
                    oid("1.3.6.1.2.1.1.5.0"),
                    Value::OctetString(b"pdu-a".to_vec()),
                ),
                (oid("1.3.6.1.2.1.1.3.0"), Value::TimeTicks(12345)),
                (
                    oid("1.3.6.1.2.1.1.2.0"),
                    Value::Oid(oid("1.3.6.1.4.1.318.1.3.4.5")),
                ),
                (oid("1.3.6.1.2.1.1.9.0"), Value::NoSuchInstance),
            ],
        };
        let wire = encode_community(Version::V1, b"private", &pdu);
        let Message::Community { pdu: back, .. } = decode_message(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(back, pdu);
        for end in 0..wire.len() {
            assert!(decode_message(&wire[..end]).is_err());
        }
    }
}
