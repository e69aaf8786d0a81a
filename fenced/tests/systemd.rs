//! The systemd unit in `fenced/systemd/`: `systemd-analyze verify` accepts it (with ExecStart
//! pointing at the binary just built), it keeps its least-privilege settings, and its offline
//! exposure score stays low.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/fenced.service"))
        .unwrap()
}

#[test]
fn unit_keeps_least_privilege() {
    let u = unit();
    for line in [
        "Type=notify",
        "User=palisade",
        "CapabilityBoundingSet=\n",
        "AmbientCapabilities=\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectoryMode=0700",
    ] {
        assert!(u.contains(line), "fenced.service lost `{}`", line.trim());
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if !hw_tests::require::needs_command("systemd-analyze", "Debian package systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fenced.service");
    std::fs::write(
        &path,
        unit().replace("/usr/sbin/fenced", env!("CARGO_BIN_EXE_fenced")),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "systemd-analyze verify: {out}");
    assert!(
        !out.contains("fenced.service:"),
        "warnings about the unit: {out}"
    );

    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("exposure level for fenced.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score: {out}"));
    assert!(score <= 2.0, "exposure {score} (was 1.4): {out}");
}
