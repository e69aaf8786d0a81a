//! The SNMP client's request handling against a scripted agent socket in the test: replies to
//! other requests, garbage and silence are never taken as the answer; retries are bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::pdu::message::{
    decode_message, encode_community, Message, Pdu, PduType, Value, Version,
};
use drivers::pdu::{Client, ClientConfig, Oid, Security, SnmpError};
use drivers::Secret;
use std::time::Duration;
use tokio::net::UdpSocket;

fn sys_name() -> Oid {
    "1.3.6.1.2.1.1.5.0".parse().unwrap()
}

async fn setup(retries: u32) -> (Client, UdpSocket) {
    let agent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = Client::connect(ClientConfig {
        addr: agent.local_addr().unwrap(),
        security: Security::Community {
            version: Version::V2c,
            community: Secret::new(b"c".to_vec()),
        },
        timeout: Duration::from_millis(200),
        retries,
    })
    .await
    .unwrap();
    (client, agent)
}

async fn next_request(agent: &UdpSocket) -> (Pdu, std::net::SocketAddr) {
    let mut buf = [0u8; 1500];
    let (n, from) = agent.recv_from(&mut buf).await.unwrap();
    let Message::Community { pdu, .. } = decode_message(&buf[..n]).unwrap() else {
        panic!()
    };
    (pdu, from)
}

fn response(id: i32, value: &str) -> Vec<u8> {
    encode_community(
        Version::V2c,
        b"c",
        &Pdu {
            kind: PduType::Response,
            request_id: id,
            error_status: 0,
            error_index: 0,
            varbinds: vec![(sys_name(), Value::OctetString(value.as_bytes().to_vec()))],
        },
    )
}

#[tokio::test]
async fn foreign_ids_garbage_and_wrong_community_are_skipped_for_the_real_answer() {
    let (mut client, agent) = setup(0).await;
    let server = tokio::spawn(async move {
        let (req, from) = next_request(&agent).await;
        // A late answer to an older request, garbage, a reply with another community, then
        // the answer.
        agent
            .send_to(&response(req.request_id.wrapping_sub(1), "old"), from)
            .await
            .unwrap();
        agent
            .send_to(&[0x30, 0x03, 0x02, 0x01], from)
            .await
            .unwrap();
        let other = encode_community(
            Version::V2c,
            b"x",
            &decode_pdu(&response(req.request_id, "forged")),
        );
        agent.send_to(&other, from).await.unwrap();
        agent
            .send_to(&response(req.request_id, "pdu-a"), from)
            .await
            .unwrap();
    });
    let pdu = client.get(&[sys_name()]).await.unwrap();
    assert_eq!(pdu.varbinds[0].1, Value::OctetString(b"pdu-a".to_vec()));
    server.await.unwrap();
}

fn decode_pdu(bytes: &[u8]) -> Pdu {
    match decode_message(bytes).unwrap() {
        Message::Community { pdu, .. } => pdu,
        _ => panic!(),
    }
}

#[tokio::test]
async fn a_late_reply_to_the_first_try_answers_the_retry() {
    let (mut client, agent) = setup(2).await;
    let server = tokio::spawn(async move {
        let (first, from) = next_request(&agent).await;
        let (second, _) = next_request(&agent).await;
        assert_ne!(
            first.request_id, second.request_id,
            "each try has its own id"
        );
        agent
            .send_to(&response(first.request_id, "late"), from)
            .await
            .unwrap();
    });
    let pdu = client.get(&[sys_name()]).await.unwrap();
    assert_eq!(pdu.varbinds[0].1, Value::OctetString(b"late".to_vec()));
    server.await.unwrap();
}

#[tokio::test]
async fn silence_is_a_timeout_after_every_try_and_only_garbage_is_malformed() {
    let (mut client, agent) = setup(1).await;
    let counter = tokio::spawn(async move {
        let mut n = 0;
        let mut buf = [0u8; 1500];
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), agent.recv_from(&mut buf)).await
        {
            n += 1;
        }
        n
    });
    let e = client.get(&[sys_name()]).await.unwrap_err();
    assert!(matches!(e, SnmpError::Timeout { tries: 2, .. }), "{e}");
    assert_eq!(
        counter.await.unwrap(),
        2,
        "one request and one retry, no more"
    );

    let (mut client, agent) = setup(1).await;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = agent.recv_from(&mut buf).await {
            agent.send_to(b"\x30\x82\xff\xff", from).await.unwrap();
        }
    });
    let e = client.get(&[sys_name()]).await.unwrap_err();
    assert!(matches!(e, SnmpError::Malformed { .. }), "{e}");
}
