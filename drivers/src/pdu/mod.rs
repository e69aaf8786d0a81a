//! Switched PDUs over SNMP v1, v2c and v3: outlet fencing.
//!
//! One file per layer, outermost last:
//! - [`ber`]: the BER subset SNMP uses (pure functions over bytes).
//! - [`message`]: PDUs, community and v3 messages, both directions (the lab's agent uses them).
//! - [`usm`]: RFC 3414/3826/7860 key localisation, HMAC-SHA-96 (and -256-192), AES-128-CFB.
//! - [`client`]: an async manager session over one tokio `UdpSocket` per PDU.
//! - [`model`]: vendor models as data (OID columns and value maps).
//! - [`device`]: [`PduDevice`], the [`crate::PowerDevice`] whose ports are outlets.
//!
//! Why our own codec and not a crate (checked November 2026): `snmp` (the original) is
//! v1/v2c, synchronous and unmaintained; `snmp2` has v3 but its async session relies on the
//! caller for retries and request matching, pulls `asn1-rs`, and its v3 crypto needs OpenSSL or
//! an extra feature set; `csnmp` is v2c only; `snmp-parser` (rusticata) only parses (no
//! encoder, no USM crypto); `rasn-snmp` gives types but no USM, no session and a large
//! dependency tree; `async-snmp` has everything but needs Rust 1.88 (the workspace's floor is
//! 1.85) and brings `bytes` and more into `fenced`, whose idle RSS budget is 8 MiB. The
//! subset a fencing path needs (GET/GETNEXT/SET, USM with SHA and AES) is small, and written
//! here it reuses the `hmac`, `sha1`, `sha2` and `aes` crates already linked for IPMI, so
//! `fenced` gains no dependency. The decoder is fuzzed (`drivers/fuzz`, target
//! `snmp_decode`) and its corpus replayed by `drivers/tests/fuzz_corpus.rs`; the wire format
//! is checked against net-snmp, ClusterLabs `fence_apc_snmp` and net-snmp's `snmpd` in
//! `hw-tests`.

pub mod ber;
pub mod client;
pub mod device;
pub mod message;
pub mod model;
pub mod usm;

pub use ber::Oid;
pub use client::{Client, ClientConfig, Security, SnmpError, UsmUser};
pub use device::{OutletRef, PduConfig, PduDevice};
pub use message::Version;
pub use model::{Model, MODELS};
pub use usm::{AuthProtocol, PrivProtocol};

/// Feeds `data` to every decoder (whole message, PDU, scopedPDU, and after a fixed-key AES
/// decryption); for the fuzz target and the corpus replay. Never panics.
pub fn fuzz_decode(data: &[u8]) {
    let _ = message::decode_message(data);
    let _ = message::Pdu::decode(data);
    let _ = message::ScopedPdu::decode(data);
    let mut r = ber::Reader::new(data);
    let _ = r.oid("fuzz");
    let _ = ber::decode_oid(data, "fuzz");
    let k = usm::LocalKey::from_bytes(vec![7; 20]);
    let _ = message::ScopedPdu::decode(&k.aes_cfb(1, 2, &[0; 8], data, false));
    let _ = k.verify(AuthProtocol::Sha1, data, data.len() / 2);
}
