//! `fenced check-config` as an operator meets it: what it prints is what the daemon will do
//! (each device's effective timeouts, what a TLS caller needs), and what it refuses names the
//! file, the line and the allowed range.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FENCED: &str = env!("CARGO_BIN_EXE_fenced");

fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn check(config: &Path) -> Output {
    Command::new(FENCED)
        .arg("check-config")
        .arg(config)
        .output()
        .unwrap()
}

fn config(dir: &Path, device_extra: &str) -> PathBuf {
    secret(dir, "bmc.pw", "secret-pw\n");
    secret(dir, "key.pem", "");
    let p = dir.join("fenced.toml");
    std::fs::write(
        &p,
        format!(
            "[api]\ntcp = \"0.0.0.0:7420\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\ntokens_file = \"tokens\"\n\n[devices.bmc1]\nkind = \"ipmi\"\naddress = \"192.0.2.10\"\nusername = \"admin\"\npassword_file = \"bmc.pw\"\n{device_extra}\n[targets.node1]\nlevels = [[\"bmc1\"]]\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn check_config_prints_effective_timeouts_and_what_tls_callers_need() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(&config(dir.path(), "timeout_ms = 500\nretries = 3\n"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("TLS 0.0.0.0:7420 (callers need a token)"),
        "{out}"
    );
    assert!(
        !out.contains("role read"),
        "TLS callers without credentials get no role: {out}"
    );
    assert!(
        out.contains("timeout_ms 500 with 3 retries: tries wait 500, 750, 1000, 1250 ms, an exchange gives up after 3.5 s"),
        "{out}"
    );
    assert!(!out.contains("secret-pw"), "{out}");
}

#[test]
fn check_config_refuses_out_of_range_numbers_at_their_line_instead_of_clamping() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, range) in [
        (
            "timeout_ms = 999999999999",
            "expected 50 to 60000 ms, found 999999999999",
        ),
        ("timeout_ms = 0", "expected 50 to 60000 ms, found 0"),
        ("retries = 1000", "expected 0 to 10 retries, found 1000"),
    ] {
        let cfg = config(dir.path(), extra);
        let o = check(&cfg);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{extra}: {err}");
        // Line 11 of the file `config` writes: the line after password_file.
        assert!(
            err.starts_with(&format!("{}:11: devices.bmc1.", cfg.display())),
            "{extra}: {err}"
        );
        assert!(err.contains(range), "{extra}: {err}");
    }
}

#[test]
fn check_config_says_how_to_give_a_password_and_refuses_empty_or_directory_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "password = \"hunter2\"");
    let err = String::from_utf8_lossy(&check(&cfg).stderr).into_owned();
    assert!(err.contains(":11:"), "{err}");
    assert!(
        err.contains("password_file") && err.contains("password_env"),
        "{err}"
    );
    assert!(!err.contains("expected one of"), "{err}");

    let cfg = config(dir.path(), "");
    secret(dir.path(), "bmc.pw", "");
    let err = String::from_utf8_lossy(&check(&cfg).stderr).into_owned();
    assert!(err.contains(":10:") && err.contains("is empty"), "{err}");
    assert!(err.contains("empty_password = true"), "{err}");

    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("password_file = \"bmc.pw\"", "empty_password = true"),
    )
    .unwrap();
    let o = check(&cfg);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    std::fs::create_dir(dir.path().join("pwdir")).unwrap();
    std::fs::write(
        &cfg,
        text.replace("password_file = \"bmc.pw\"", "password_file = \"pwdir\""),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&check(&cfg).stderr).into_owned();
    assert!(err.contains("is a directory"), "{err}");
    assert!(!err.contains("chmod"), "{err}");
}

#[test]
fn a_reader_that_stops_early_does_not_crash_check_config_and_an_invalid_file_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    let valid = config(dir.path(), "");
    let invalid = dir.path().join("bad.toml");
    std::fs::write(
        &invalid,
        "[devices.bmc1]\nkind = \"ipmi\"\ntimeout_ms = 0\n",
    )
    .unwrap();
    for (file, want) in [(&valid, 0), (&invalid, 1)] {
        // A pipe whose reader is already gone (`fenced check-config big.toml | head -0`): the
        // first write fails with EPIPE (Rust ignores SIGPIPE), which must not become a panic.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fds[0] is the read end just created and owned by nobody else.
        unsafe { libc::close(fds[0]) };
        // SAFETY: fds[1] is the write end just created; the Stdio takes ownership of it.
        let stdout =
            unsafe { <std::process::Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        let o = Command::new(FENCED)
            .arg("check-config")
            .arg(file)
            .stdout(stdout)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(o.status.code(), Some(want), "{}: {err}", file.display());
    }
}

/// A relay board in a config of its own: `chip` as given, one line of each basis.
fn relay_config(dir: &Path, chip: &str) -> PathBuf {
    let p = dir.join("relay.toml");
    let d = dir.display();
    std::fs::write(
        &p,
        format!(
            "[daemon]\nsocket = \"{d}/fenced.sock\"\nhistory = \"{d}/history.redb\"\nledger_key = \"{d}/ledger.key\"\n\n[devices.relays]\nkind = \"relay\"\nchip = \"{chip}\"\n\n[devices.relays.lines.node1]\nline = 17\npolarity = \"active-low\"\nmode = \"power-button\"\nsense_line = 27\nsense_polarity = \"active-high\"\n\n[devices.relays.lines.node2]\nline = 18\npolarity = \"active-high\"\nmode = \"power-cut\"\nconfirm_off_by_relay_output_without_sense = true\n\n[devices.relays.lines.node3]\nline = 19\npolarity = \"active-high\"\nmode = \"power-button\"\n\n[targets.node1]\nlevels = [[\"relays:node1\"]]\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn check_config_says_what_each_relay_line_can_prove() {
    let dir = tempfile::tempdir().unwrap();
    // check-config reads the file only: the chip need not exist where the config is checked.
    let o = check(&relay_config(dir.path(), "/dev/gpiochip-none"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("relays: relay at /dev/gpiochip-none ("),
        "{out}"
    );
    assert!(
        out.contains("node1: line 17 active-low power-button press 200 ms, long press 6000 ms, sense line 27 active-high settle 1000 ms timeout 5000 ms: confirms by sense line"),
        "{out}"
    );
    assert!(
        out.contains("node2: line 18 active-high power-cut: confirms by relay output read back, no sense line"),
        "{out}"
    );
    assert!(
        out.contains("node3: line 19 active-high power-button press 200 ms, long press 6000 ms: cannot confirm: button without sense line"),
        "{out}"
    );
}

#[test]
fn fenced_run_on_a_missing_gpio_chip_stops_naming_the_chip_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = relay_config(dir.path(), "/dev/gpiochip-none");
    let o = Command::new(FENCED)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    // The error is logged (tracing writes to stdout) and fenced exits 1.
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("device `relays` (kind relay)")
            && err.contains("cannot request GPIO line 17 on /dev/gpiochip-none"),
        "{err}"
    );
    assert!(
        !dir.path().join("fenced.sock").exists(),
        "fenced must not serve without its devices"
    );
}
