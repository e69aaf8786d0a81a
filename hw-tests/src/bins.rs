//! Paths to the workspace's binaries for end-to-end tests (CI builds them before the tests:
//! `cargo build --workspace --bins`; if one is missing we build it).

use std::path::PathBuf;
use std::process::Command;

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The `palisade-sbd` binary, built on demand.
pub fn palisade_sbd() -> PathBuf {
    let p = target_dir().join("debug/palisade-sbd");
    if !p.exists() {
        let _ = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "watchdog", "--bin", "palisade-sbd"])
            .status();
    }
    p
}

/// A workspace binary `name` of `package` from the debug build, built on demand (for
/// programs such as examples, which have no `CARGO_BIN_EXE_*`).
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let p = target_dir().join("debug").join(name);
    if !p.exists() {
        let _ = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", package, "--bin", name])
            .status();
    }
    p
}

/// The `fenced` daemon binary, built on demand.
pub fn fenced() -> PathBuf {
    workspace_bin("fenced", "fenced")
}
