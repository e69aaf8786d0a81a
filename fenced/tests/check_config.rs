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

/// A relay config for a board (and HAT): `lines` is the text of the line tables.
fn board_config(dir: &Path, head: &str, chip: &str, lines: &str) -> PathBuf {
    let p = dir.join("board.toml");
    let d = dir.display();
    std::fs::write(
        &p,
        format!(
            "{head}\n[daemon]\nsocket = \"{d}/fenced.sock\"\nhistory = \"{d}/history.redb\"\nledger_key = \"{d}/ledger.key\"\n\n[devices.relays]\nkind = \"relay\"\nchip = \"{chip}\"\n\n{lines}\n[targets.node1]\nlevels = [[\"relays:node1\"]]\n"
        ),
    )
    .unwrap();
    p
}

/// The 1-based line of `file` that starts with `needle`.
fn line_of(file: &Path, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .position(|l| l.starts_with(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in {}", file.display()))
}

const NODE1: &str = "[devices.relays.lines.node1]\nline = 17\npolarity = \"active-low\"\nmode = \"power-cut\"\nsense_line = 27\nsense_polarity = \"active-high\"\n";

#[test]
fn check_config_refuses_a_relay_line_the_board_does_not_have_naming_line_and_board() {
    let dir = tempfile::tempdir().unwrap();
    let pi4 = "board = \"raspberry-pi-4\"";
    // On the board: valid, and the summary says which board it was checked against.
    let ok = board_config(dir.path(), pi4, "/dev/gpiochip0", NODE1);
    let o = check(&ok);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("board: raspberry-pi-4 (Raspberry Pi 4 Model B (BCM2711))"),
        "{out}"
    );
    for (chip, lines, needle, want) in [
        // A chip the board does not have (the Pi 5's old RP1 name on a Pi 4).
        (
            "/dev/gpiochip4",
            NODE1.to_string(),
            "line = 17",
            "devices.relays.lines.node1.line: board `raspberry-pi-4` has no GPIO chip /dev/gpiochip4; its chips: /dev/gpiochip0 (pinctrl-bcm2711, 58 lines)",
        ),
        // A line past the chip's end.
        (
            "/dev/gpiochip0",
            NODE1.replace("line = 17", "line = 60"),
            "line = 60",
            "board `raspberry-pi-4`: /dev/gpiochip0 (pinctrl-bcm2711) has 58 lines (0 to 57), there is no line 60",
        ),
        // The SoC's own line (SD card, Ethernet): the sense input is checked too.
        (
            "/dev/gpiochip0",
            NODE1.replace("sense_line = 27", "sense_line = 40"),
            "sense_line = 40",
            "devices.relays.lines.node1.sense_line: board `raspberry-pi-4`: line 40 of /dev/gpiochip0 (pinctrl-bcm2711) is not one a relay or sense input may use",
        ),
    ] {
        let cfg = board_config(dir.path(), pi4, chip, &lines);
        let o = check(&cfg);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{lines}: {err}");
        let at = format!("{}:{}: ", cfg.display(), line_of(&cfg, needle));
        assert!(err.starts_with(&at) && err.contains(want), "want {at}…{want}\n got {err}");
    }
    // An x86 server has no GPIO at all; an unknown board is refused at its line.
    let cfg = board_config(
        dir.path(),
        "board = \"generic-x86\"",
        "/dev/gpiochip0",
        NODE1,
    );
    let err = String::from_utf8_lossy(&check(&cfg).stderr).into_owned();
    assert!(
        err.contains("board `generic-x86` has no GPIO chip /dev/gpiochip0; its chips: none"),
        "{err}"
    );
    let cfg = board_config(dir.path(), "board = \"toaster\"", "/dev/gpiochip0", NODE1);
    let err = String::from_utf8_lossy(&check(&cfg).stderr).into_owned();
    assert!(
        err.starts_with(&format!(
            "{}:1: board: no board profile `toaster`; known: ",
            cfg.display()
        )) && err.contains("raspberry-pi-5"),
        "{err}"
    );
}

#[test]
fn check_config_with_a_hat_takes_only_its_relays_at_their_polarity() {
    let dir = tempfile::tempdir().unwrap();
    let head = "board = \"raspberry-pi-5\"\nhat = \"waveshare-rpi-relay-board\"";
    // Channel 1 is BCM 26, active-low; the sense input is any free header line. Both of the
    // Pi 5's names for the RP1 chip are accepted.
    let ch1 = NODE1.replace("line = 17", "line = 26");
    for chip in ["/dev/gpiochip0", "/dev/gpiochip4"] {
        let o = check(&board_config(dir.path(), head, chip, &ch1));
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{chip}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("with HAT waveshare-rpi-relay-board"), "{out}");
    }
    for (lines, needle, want) in [
        (
            NODE1.to_string(),
            "line = 17",
            "HAT `waveshare-rpi-relay-board` on board `raspberry-pi-5` has no relay on line 17 of /dev/gpiochip0; its relays: ch1 line 26 active-low, ch2 line 20 active-low, ch3 line 21 active-low",
        ),
        (
            ch1.replace("polarity = \"active-low\"", "polarity = \"active-high\""),
            "line = 26",
            "relay ch1 (line 26) is active-low, not active-high",
        ),
        (
            ch1.replace("sense_line = 27", "sense_line = 21"),
            "sense_line = 21",
            "line 21 of /dev/gpiochip0 drives its relay ch3, it cannot be a sense input",
        ),
    ] {
        let cfg = board_config(dir.path(), head, "/dev/gpiochip0", &lines);
        let o = check(&cfg);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{lines}: {err}");
        let at = format!("{}:{}: ", cfg.display(), line_of(&cfg, needle));
        assert!(err.starts_with(&at) && err.contains(want), "want {at}…{want}\n got {err}");
    }
    // A HAT needs a board, and must fit it.
    let cfg = board_config(
        dir.path(),
        "hat = \"waveshare-rpi-relay-board\"",
        "/dev/gpiochip0",
        &ch1,
    );
    let err = String::from_utf8_lossy(&check(&cfg).stderr).into_owned();
    assert!(
        err.starts_with(&format!("{}:1: hat: a HAT sits on a board", cfg.display())),
        "{err}"
    );
    let cfg = board_config(
        dir.path(),
        "board = \"generic-x86\"\nhat = \"waveshare-rpi-relay-board-b\"",
        "/dev/gpiochip0",
        &ch1,
    );
    let err = String::from_utf8_lossy(&check(&cfg).stderr).into_owned();
    assert!(
        err.contains("HAT `waveshare-rpi-relay-board-b` does not fit board `generic-x86`"),
        "{err}"
    );
}

#[test]
fn fenced_run_refuses_a_line_the_board_does_not_have_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = board_config(
        dir.path(),
        "board = \"raspberry-pi-4\"",
        "/dev/gpiochip0",
        &NODE1.replace("line = 17", "line = 1"),
    );
    let o = Command::new(FENCED)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:{}", cfg.display(), line_of(&cfg, "line = 1")))
            && err.contains("line 1 of /dev/gpiochip0 (pinctrl-bcm2711) is not one a relay or sense input may use (GPIO0-1 are the HAT ID EEPROM's I2C bus"),
        "{err}"
    );
    assert!(
        !dir.path().join("fenced.sock").exists(),
        "fenced must not serve"
    );
}

/// A serial-pdu config on `board` with its console on `port`.
fn serial_board_config(dir: &Path, board: &str, port: &str) -> PathBuf {
    let p = dir.join("serial.toml");
    let d = dir.display();
    std::fs::write(
        &p,
        format!(
            "board = \"{board}\"\n[daemon]\nsocket = \"{d}/fenced.sock\"\nhistory = \"{d}/history.redb\"\nledger_key = \"{d}/ledger.key\"\n\n[devices.pdu-a]\nkind = \"serial-pdu\"\nmodel = \"wti\"\nport = \"{port}\"\nbaud = 9600\n\n[targets.node1]\nlevels = [[\"pdu-a:1\"]]\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn check_config_refuses_a_serial_port_the_board_does_not_have_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // The Pi 4's own UART and a USB adapter are fine.
    for port in ["/dev/ttyAMA0", "/dev/ttyUSB0"] {
        let o = check(&serial_board_config(dir.path(), "raspberry-pi-4", port));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{port}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // An x86 server's COM2 is not on a Pi 4: refused at the `port` line, naming port and board.
    let cfg = serial_board_config(dir.path(), "raspberry-pi-4", "/dev/ttyS1");
    let o = check(&cfg);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line = line_of(&cfg, "port = ");
    assert!(
        err.contains(&format!(
            "{}:{line}: devices.pdu-a.port: serial-pdu port: board `raspberry-pi-4` has no serial port /dev/ttyS1",
            cfg.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("/dev/ttyAMA0"),
        "the board's ports are listed: {err}"
    );
}

/// The first ```toml block after README.md's heading `heading`.
fn readme_example(heading: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let at = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("{}: no heading `{heading}`", path.display()));
    let rest = &readme[at..];
    let start = rest
        .find("```toml\n")
        .unwrap_or_else(|| panic!("{}: no ```toml block after `{heading}`", path.display()))
        + "```toml\n".len();
    let len = rest[start..].find("```").unwrap_or_else(|| {
        panic!(
            "{}: the block after `{heading}` is not closed",
            path.display()
        )
    });
    rest[start..start + len].to_string()
}

/// README's device examples are what an operator copies first: each must pass check-config as
/// written, with its secret files present and its daemon paths in a scratch directory.
#[test]
fn readme_relay_and_serial_pdu_examples_pass_check_config() {
    for (heading, wants) in [
        (
            "## Relay boards on GPIO lines",
            &[
                "node1: line 17 active-low power-button",
                "confirms by sense line",
                "relay output read back, no sense line",
            ][..],
        ),
        (
            "## Serial-console PDUs: kind `serial-pdu`",
            &[
                "serial 9600 8N1",
                "user fence, password (secret)",
                "confirms by reading the outlet's status back",
            ][..],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // The example's files live under /etc/palisade; here they live in the scratch dir.
        let example = readme_example(heading).replace("/etc/palisade/", &format!("{d}/"));
        for line in example.lines() {
            if let Some(v) = line.trim().strip_prefix("password_file = \"") {
                let file = v.split('"').next().unwrap();
                let name = Path::new(file).file_name().unwrap().to_str().unwrap();
                secret(dir.path(), name, "pdu-secret\n");
            }
        }
        let cfg = dir.path().join("fenced.toml");
        std::fs::write(
            &cfg,
            format!("[daemon]\nsocket = \"{d}/fenced.sock\"\nhistory = \"{d}/history.redb\"\nledger_key = \"{d}/ledger.key\"\n\n{example}"),
        )
        .unwrap();
        let o = check(&cfg);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "README example under `{heading}`:\n{example}\n{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        for want in wants {
            assert!(out.contains(want), "`{heading}`: `{want}` not in {out}");
        }
        assert!(!out.contains("pdu-secret"), "{out}");
    }
}

/// A described serial-PDU dialogue whose status pattern cannot be read (a column named twice)
/// is refused by `fenced check-config` at its line, saying what was expected.
#[test]
fn check_config_refuses_a_serial_dialogue_whose_status_pattern_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fenced.toml");
    let text = "[devices.pdu]\nkind = \"serial-pdu\"\naddress = \"192.0.2.30:2001\"\n\n\
                [devices.pdu.dialogue]\nprompts = [\"PDU>\"]\noff = \"off {outlet}\"\non = \"on {outlet}\"\n\
                status = \"status\"\nlogout = \"quit\"\nstatus_layout = \"pipe-table\"\nstatus_columns = [0, 2, 2]\n\n\
                [targets.node1]\nlevels = [[\"pdu:1\"]]\n";
    std::fs::write(&p, text).unwrap();
    let o = check(&p);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "{}:12: devices.pdu.dialogue.status_columns: expected three different columns [ID, NAME, STATE], each 0 to 15, found [0, 2, 2]",
            p.display()
        )),
        "{err}"
    );
    // The same dialogue with a readable pattern passes, and check-config names it.
    std::fs::write(&p, text.replace("[0, 2, 2]", "[0, 1, 2]")).unwrap();
    let o = check(&p);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("dialogue of devices.pdu"), "{out}");
}
