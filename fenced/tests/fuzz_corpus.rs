//! Replays the cargo-fuzz seed corpora of `fenced/fuzz` (and any crash inputs added to them)
//! with stable Rust: every file, and every prefix of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn replay(target: &str, f: fn(&[u8]), at_least: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        f(&data);
        // Every prefix too: truncation is the commonest malformed input.
        for end in 0..data.len() {
            f(&data[..end]);
        }
        n += 1;
    }
    assert!(
        n >= at_least,
        "seed corpus went missing: {n} files in {}",
        dir.display()
    );
}

#[test]
fn config_text_corpus_replays() {
    replay("config_text", fenced::fuzzing::config_text, 9);
    // The corpus reaches the end of the parser, not only its first error.
    let valid = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_text/valid.toml"),
    )
    .unwrap();
    fenced::config::Config::parse(Path::new("v.toml"), &valid, &|_| Some(b"pw".to_vec())).unwrap();
    // And through every device kind's own table.
    let kinds = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_text/kinds.toml"),
    )
    .unwrap();
    let c = fenced::config::Config::parse(Path::new("k.toml"), &kinds, &|_| Some(b"pw".to_vec()))
        .unwrap();
    let mut names: Vec<_> = c.devices.values().map(|d| d.kind_name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["agent", "ipmi", "redfish", "sbd", "snmp-pdu"]);
}

#[test]
fn api_body_corpus_replays() {
    replay("api_body", fenced::fuzzing::api_body, 8);
}

#[test]
fn credentials_corpus_replays() {
    replay("credentials", fenced::fuzzing::credentials, 6);
    let der = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/credentials/cert-with-cn.der"),
    )
    .unwrap();
    assert_eq!(
        fenced::api::tls::subject_cn(&der).as_deref(),
        Some("ctrl-1")
    );
}
