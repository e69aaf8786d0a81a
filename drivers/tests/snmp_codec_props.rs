//! Property tests of the SNMP codec: every message the encoder writes decodes to itself, and
//! no input makes a decoder panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::pdu::message::{
    decode_message, encode_community, encode_v3, Message, Pdu, PduType, ScopedData, ScopedPdu,
    UsmParams, V3Message, Value, Version,
};
use drivers::pdu::Oid;
use proptest::prelude::*;

fn oid() -> impl Strategy<Value = Oid> {
    (
        0u32..3,
        0u32..40,
        proptest::collection::vec(any::<u32>(), 0..20),
    )
        .prop_map(|(a, b, rest)| Oid([vec![a, b], rest].concat()))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::OctetString),
        Just(Value::Null),
        oid().prop_map(Value::Oid),
        any::<[u8; 4]>().prop_map(Value::IpAddress),
        any::<u32>().prop_map(Value::Counter32),
        any::<u32>().prop_map(Value::Gauge32),
        any::<u32>().prop_map(Value::TimeTicks),
        any::<u64>().prop_map(Value::Counter64),
        Just(Value::NoSuchObject),
        Just(Value::NoSuchInstance),
        Just(Value::EndOfMibView),
    ]
}

fn pdu() -> impl Strategy<Value = Pdu> {
    (
        prop_oneof![
            Just(PduType::Get),
            Just(PduType::GetNext),
            Just(PduType::Response),
            Just(PduType::Set),
            Just(PduType::GetBulk),
            Just(PduType::Report)
        ],
        any::<i32>(),
        0i64..20,
        any::<i64>(),
        proptest::collection::vec((oid(), value()), 0..8),
    )
        .prop_map(
            |(kind, request_id, error_status, error_index, varbinds)| Pdu {
                kind,
                request_id,
                error_status,
                error_index,
                varbinds,
            },
        )
}

proptest! {
    #[test]
    fn community_messages_round_trip(p in pdu(), community in proptest::collection::vec(any::<u8>(), 0..40), v1 in any::<bool>()) {
        let version = if v1 { Version::V1 } else { Version::V2c };
        let bytes = encode_community(version, &community, &p);
        prop_assert_eq!(decode_message(&bytes).unwrap(), Message::Community { version, community, pdu: p });
    }

    #[test]
    fn v3_messages_round_trip(p in pdu(), msg_id in any::<i32>(), boots in 0i64..i32::MAX as i64, time in 0i64..i32::MAX as i64,
                              engine in proptest::collection::vec(any::<u8>(), 0..32), enc in any::<bool>()) {
        let data = if enc {
            ScopedData::Encrypted(engine.clone())
        } else {
            ScopedData::Plain(ScopedPdu { context_engine_id: engine.clone(), context_name: vec![], pdu: p })
        };
        let msg = V3Message {
            msg_id, max_size: 65507, flags: 7,
            usm: UsmParams { engine_id: engine, engine_boots: boots, engine_time: time, user: b"u".to_vec(), auth_params: vec![0; 12], priv_params: vec![1; 8] },
            data,
        };
        let (bytes, at) = encode_v3(&msg);
        let Message::V3 { msg: back, auth_offset } = decode_message(&bytes).unwrap() else { panic!() };
        prop_assert_eq!(back, msg);
        prop_assert_eq!(auth_offset, at);
    }

    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        drivers::pdu::fuzz_decode(&data);
    }
}
