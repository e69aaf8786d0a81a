//! The unit in `watchdog/systemd/`: `systemd-analyze verify` accepts it with ExecStart pointing
//! at the binary just built, and it keeps the grants the watcher needs and no others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The bench's "this test needs X" check, by path: a dev-dependency on hw-tests would compile
// the whole bench for this crate's tests. Not every item of it is used here.
#[allow(dead_code)]
#[path = "../../hw-tests/src/require.rs"]
mod require;

use std::path::Path;
use std::process::Command;

fn unit() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/palisade-sbd.service"),
    )
    .unwrap()
}

#[test]
fn unit_grants_what_self_fencing_needs_and_no_more() {
    let u = unit();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "CapabilityBoundingSet=CAP_SYS_BOOT CAP_IPC_LOCK CAP_SYS_NICE\n",
        "AmbientCapabilities=\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateNetwork=yes",
        "RestrictAddressFamilies=AF_UNIX\n",
        "SystemCallFilter=@system-service @reboot\n",
        "LimitMEMLOCK=infinity",
    ] {
        assert!(
            u.contains(line),
            "palisade-sbd.service lost `{}`",
            line.trim()
        );
    }
    // Each of these would break self-fencing: sysrq-trigger read-only, SCHED_RR refused, or a
    // restart that could race a poison pill.
    for bad in [
        "\nProtectKernelTunables=yes",
        "\nRestrictRealtime=yes",
        "\nRestart=",
    ] {
        assert!(
            !u.contains(bad),
            "palisade-sbd.service must not set {}",
            bad.trim()
        );
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if !require::needs_command("systemd-analyze", "Debian package systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade-sbd.service");
    std::fs::write(
        &path,
        unit().replace("/usr/sbin/palisade-sbd", env!("CARGO_BIN_EXE_palisade-sbd")),
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
        !out.contains("palisade-sbd.service:"),
        "warnings about the unit: {out}"
    );
}
