//! Replays the SBD fuzz target's seed corpus on stable (CI has no nightly for cargo-fuzz).

#[test]
fn sbd_decode_seed_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-sbd/corpus/decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        drivers::sbd::fuzz_decode(&data);
        n += 1;
    }
    assert!(n >= 5, "seed corpus has {n} files");
}
