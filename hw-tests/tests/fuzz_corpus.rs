//! Replays the drill parsers' cargo-fuzz seed corpus (and crash inputs added to it) with
//! stable Rust, every prefix too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::drill::record::{encode, Record, SECTOR};
use std::path::Path;

#[test]
fn decode_drill_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_drill");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for end in 0..=data.len() {
            hw_tests::drill::fuzz_decode(&data[..end]);
        }
        n += 1;
    }
    assert!(
        n >= 6,
        "seed corpus went missing: {n} files in {}",
        dir.display()
    );
}

/// Writes the seed corpus (`UPDATE_CORPUS=1 cargo nextest run -p hw-tests --test fuzz_corpus`).
#[test]
fn seed_corpus_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_drill");
    let rec = |seq, node: &str| {
        encode(&Record {
            seq,
            mono_ns: seq.wrapping_add(1_000_000),
            node: node.into(),
        })
        .unwrap()
        .to_vec()
    };
    let mut torn = rec(7, "node1");
    torn[300] = 0xff;
    let mut two = rec(1, "node1");
    two.extend(rec(2, "node2"));
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("record-node1", rec(0, "node1")),
        ("record-long-name", rec(u64::MAX, &"n".repeat(32))),
        ("record-torn", torn),
        ("two-records", two),
        ("empty-sector", vec![0u8; SECTOR]),
        ("heartbeat", b"hb node1 42".to_vec()),
        ("heartbeat-bad", b"hb node1 x y".to_vec()),
    ];
    let update = std::env::var_os("UPDATE_CORPUS").is_some();
    for (name, bytes) in seeds {
        let p = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&p, &bytes).unwrap();
        }
        assert_eq!(
            std::fs::read(&p).ok().as_deref(),
            Some(&bytes[..]),
            "{} is stale: UPDATE_CORPUS=1 cargo nextest run -p hw-tests --test fuzz_corpus",
            p.display()
        );
    }
}
