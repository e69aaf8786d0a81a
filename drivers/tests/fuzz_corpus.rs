//! Replays the cargo-fuzz seed corpus (and any crash inputs added to it) with stable Rust.

// Tests may panic on failure; the workspace lints are for production code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

#[test]
fn decode_packet_corpus_replays_without_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_packet");
    let mut n = 0;
    for entry in fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        let data = fs::read(&path).expect("corpus file");
        drivers::ipmi::fuzzing::decode_everything(&data);
        // Every prefix too: truncation is the commonest malformed input.
        for end in 0..data.len() {
            drivers::ipmi::fuzzing::decode_everything(&data[..end]);
        }
        n += 1;
    }
    assert!(
        n >= 20,
        "seed corpus went missing: {n} files in {}",
        dir.display()
    );
}

#[test]
fn sbd_decode_seed_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sbd_decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        drivers::sbd::fuzz_decode(&data);
        n += 1;
    }
    assert!(n >= 5, "seed corpus has {n} files");
}

#[test]
fn redfish_json_seed_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/redfish_json");
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        drivers::redfish::model::fuzz_decode(&data);
        for end in 0..data.len() {
            drivers::redfish::model::fuzz_decode(&data[..end]);
        }
        n += 1;
    }
    assert!(
        n >= 15,
        "seed corpus went missing: {n} files in {}",
        dir.display()
    );
}

#[test]
fn agent_formats_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/agent_formats");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        drivers::agent::format::fuzz_all(&data);
        // Prefixes too (truncated output); a stride keeps the large metadata seeds quick.
        let step = (data.len() / 512).max(1);
        for end in (0..data.len()).step_by(step) {
            drivers::agent::format::fuzz_all(&data[..end]);
        }
        n += 1;
    }
    assert!(n >= 10, "seed corpus has {n} files");
    // The real agents' metadata seeds must parse (the corpus is also a regression test).
    let ipmilan = std::fs::read(dir.join("fence_ipmilan-metadata")).unwrap();
    let m = drivers::agent::format::parse_metadata(&ipmilan).unwrap();
    assert_eq!(m.name, "fence_ipmilan");
    assert!(m.has_parameter("lanplus") && m.has_action("status"));
}

#[test]
fn snmp_decode_corpus_replays_and_third_party_datagrams_decode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snmp_decode");
    let mut n = 0;
    let mut third_party = 0;
    for entry in fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        let data = fs::read(&path).expect("corpus file");
        drivers::pdu::fuzz_decode(&data);
        for end in 0..data.len() {
            drivers::pdu::fuzz_decode(&data[..end]);
        }
        // Datagrams written by net-snmp (its clients and its agent) must decode: they are the
        // codec's ground truth, independent of our encoder.
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("netsnmp-") || name.starts_with("snmpd-reply-") {
            drivers::pdu::message::decode_message(&data)
                .unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
            third_party += 1;
        }
        n += 1;
    }
    assert!(
        n >= 40 && third_party >= 30,
        "seed corpus went missing: {n} files, {third_party} from net-snmp"
    );
}
