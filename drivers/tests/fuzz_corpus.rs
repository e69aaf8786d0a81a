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
