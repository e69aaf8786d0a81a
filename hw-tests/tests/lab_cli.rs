//! The `palisade-lab` binary: ready lines, a real console against a printed port, clean stop
//! on SIGTERM, and helpful errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ipmitool, password_file, run, ChildGuard};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_palisade-lab");

#[test]
fn serves_prints_ready_lines_answers_ipmitool_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), "secret");
    let mut child = Command::new(LAB)
        .args([
            "ipmi",
            "--count",
            "3",
            "--base-port",
            "0",
            "--user",
            "admin",
            "--password-file",
            &pw,
            "--fault",
            "node2:stuck",
            "--guid-prefix",
            "abc",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = ChildGuard(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut ready = Vec::new();
    for _ in 0..3 {
        ready.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("ready line"),
        );
    }
    let mut ports = Vec::new();
    for (i, line) in ready.iter().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "{line}");
        assert_eq!((f[0], f[1]), ("ipmi", format!("node{}", i + 1).as_str()));
        let port: u16 = f[2].strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
        assert_eq!(
            f[3],
            format!("guid=abc00000-0000-4000-8000-00000000000{}", i + 1)
        );
        ports.push(port);
    }

    let r = ipmitool(ports[0], "admin", &pw, 17, &["chassis", "power", "off"]);
    assert!(r.ok(), "{r:?}");
    let r = ipmitool(ports[0], "admin", &pw, 17, &["chassis", "power", "status"]);
    assert_eq!(r.stdout.trim(), "Chassis Power is off", "{r:?}");
    let r = ipmitool(ports[0], "admin", &pw, 3, &["mc", "guid"]);
    assert!(
        r.stdout.contains("abc00000-0000-4000-8000-000000000001"),
        "{r:?}"
    );
    // node2 is stuck: acknowledged, still on.
    let r = ipmitool(ports[1], "admin", &pw, 3, &["chassis", "power", "off"]);
    assert!(r.ok(), "{r:?}");
    let r = ipmitool(ports[1], "admin", &pw, 3, &["chassis", "power", "status"]);
    assert_eq!(r.stdout.trim(), "Chassis Power is on", "{r:?}");

    let child = guard.0.as_mut().unwrap();
    // SAFETY: sending a signal to our own child, whose pid is still ours (not yet reaped).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    // Its ports are free again.
    for p in ports {
        std::net::UdpSocket::bind(("127.0.0.1", p)).expect("port released");
    }
}

#[test]
fn bad_fault_knob_exits_nonzero_and_lists_the_knobs() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), "p");
    let r = run(
        LAB,
        &[
            "ipmi",
            "--user",
            "u",
            "--password-file",
            &pw,
            "--fault",
            "node1:wobble",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(r.code(), Some(2), "{r:?}");
    assert!(r.stderr.contains("unknown knob `wobble`"), "{}", r.stderr);
    assert!(r.stderr.contains("--fault node2:stuck"), "{}", r.stderr);
    assert!(r.stdout.is_empty());

    let r = run(
        LAB,
        &[
            "ipmi",
            "--count",
            "2",
            "--user",
            "u",
            "--password-file",
            &pw,
            "--fault",
            "node3:crash",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(r.code(), Some(2), "{r:?}");
    assert!(r.stderr.contains("node1..node2"), "{}", r.stderr);
}

#[test]
fn unreadable_password_file_and_busy_port_say_what_to_do() {
    let r = run(
        LAB,
        &["ipmi", "--user", "u", "--password-file", "/nonexistent/pw"],
        Duration::from_secs(10),
    );
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("cannot read the password file /nonexistent/pw")
            && r.stderr.contains("--password-file"),
        "{}",
        r.stderr
    );

    let busy = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), "p");
    let r = run(
        LAB,
        &[
            "ipmi",
            "--base-port",
            &port,
            "--user",
            "u",
            "--password-file",
            &pw,
        ],
        Duration::from_secs(10),
    );
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(
        r.stderr.contains("cannot listen on UDP") && r.stderr.contains("--base-port"),
        "{}",
        r.stderr
    );
}

#[test]
fn help_documents_every_knob() {
    let r = run(LAB, &["ipmi", "--help"], Duration::from_secs(10));
    assert!(r.ok(), "{r:?}");
    for knob in [
        "latency=",
        "drop=",
        "refuse-auth",
        "stuck",
        "power-on-fails",
        "garbage",
        "crash",
    ] {
        assert!(r.stdout.contains(knob), "{knob} missing:\n{}", r.stdout);
    }
}

#[test]
fn redfish_prints_url_and_ca_lines_answers_curl_with_the_ca_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), "secret");
    let mut child = Command::new(LAB)
        .args([
            "redfish",
            "--count",
            "2",
            "--systems",
            "2",
            "--user",
            "admin",
        ])
        .args(["--password-file", &pw, "--fault", "node2:stuck"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = ChildGuard(Some(child));
    let mut lines = BufReader::new(stdout).lines();
    let mut urls = Vec::new();
    for i in 1..=2 {
        let line = lines.next().unwrap().unwrap();
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "{line}");
        assert_eq!((f[0], f[1]), ("redfish", format!("node{i}").as_str()));
        assert!(f[2].starts_with("https://127.0.0.1:"), "{line}");
        assert!(std::path::Path::new(f[3]).exists(), "{line}");
        urls.push((f[2].to_string(), f[3].to_string()));
    }
    // A real client that verifies the certificate with the printed CA file.
    let (url, ca) = &urls[0];
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "--cacert",
            ca,
            "-u",
            "admin:secret",
        ])
        .arg(format!("{url}/redfish/v1/Systems"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("/redfish/v1/Systems/System2"), "{body}");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert", ca])
        .arg(format!("{url}/redfish/v1/Systems"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NoValidSession"));

    let child = guard.0.as_mut().unwrap();
    // SAFETY: sending a signal to our own child, whose pid is still ours (not yet reaped).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Each subcommand's `--help` names every vendor profile of `hw_tests::lab::profile` with its
/// summary (taken from the tables, so a new profile is checked without editing this test),
/// the profile knobs, and every fault knob, each of which must parse.
#[test]
fn help_lists_every_profile_and_knob() {
    use hw_tests::lab::profile::{IPMI_PROFILES, REDFISH_PROFILES};
    use hw_tests::lab::{FaultKnob, FAULT_KNOBS_HELP};
    let help = |sub: &str| {
        let r = run(LAB, &[sub, "--help"], Duration::from_secs(10));
        assert!(r.ok(), "{sub}: {r:?}");
        r.stdout
    };
    let (ipmi, redfish) = (help("ipmi"), help("redfish"));
    for p in REDFISH_PROFILES {
        assert!(
            redfish.contains(&format!("  {:<11} {}", p.name, p.summary)),
            "redfish --help lacks profile {}:\n{redfish}",
            p.name
        );
    }
    for p in IPMI_PROFILES {
        assert!(
            ipmi.contains(&format!("  {:<11} {}", p.name, p.summary)),
            "ipmi --help lacks profile {}:\n{ipmi}",
            p.name
        );
    }
    for flag in [
        "--profile",
        "--max-sessions",
        "--reset-types",
        "--power-delay-ms",
    ] {
        assert!(redfish.contains(flag), "redfish --help lacks {flag}");
    }
    for flag in ["--profile", "--max-sessions", "--power-delay-ms"] {
        assert!(ipmi.contains(flag), "ipmi --help lacks {flag}");
    }
    // Every knob the list names (the rows with an example or an `a / b` pair; the knob is
    // the first word, `=VALUE` cut) parses, and both subcommands print the list.
    let knobs: Vec<&str> = FAULT_KNOBS_HELP
        .lines()
        .filter(|l| l.starts_with("  ") && (l.contains("--fault ") || l.contains(" / ")))
        .filter_map(|l| l.trim().split("   ").next())
        .flat_map(|head| head.split(" / "))
        .filter_map(|w| w.split_whitespace().next())
        .map(|w| w.split('=').next().unwrap_or(w))
        .filter(|w| !w.is_empty())
        .collect();
    assert!(knobs.len() >= 10, "{knobs:?}");
    for k in &knobs {
        let given = match *k {
            "latency" => "latency=5".to_string(),
            "drop" => "drop=0.1".to_string(),
            "slow-line" => "slow-line=5".to_string(),
            k => k.to_string(),
        };
        given
            .parse::<FaultKnob>()
            .unwrap_or_else(|e| panic!("--help lists `{k}`, which does not parse: {e}"));
        for (sub, text) in [("ipmi", &ipmi), ("redfish", &redfish)] {
            assert!(text.contains(k), "{sub} --help lacks knob {k}");
        }
    }
    // The top level names every subcommand.
    let top = run(LAB, &["--help"], Duration::from_secs(10));
    for sub in ["demo", "ipmi", "redfish", "snmp-pdu"] {
        assert!(top.stdout.contains(sub), "palisade-lab --help lacks {sub}");
    }
}

/// `snmp-pdu --v3-auth`/`--v3-priv`: only what the driver speaks parses (no MD5, no DES), a
/// profile whose vendor documents only MD5/DES (servertech) needs an explicit `--v3-auth`
/// and says why, and `--help` gives each profile's SNMPv3 protocols.
#[test]
fn snmp_v3_knobs_refuse_md5_and_des_and_say_what_a_profile_lacks() {
    use hw_tests::lab::snmp::PDU_PROFILES;
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), "authpass1");
    let v3 = |extra: &[&str]| {
        let mut args = vec![
            "snmp-pdu",
            "--v3-user",
            "fencer",
            "--auth-password-file",
            &pw,
        ];
        args.extend_from_slice(extra);
        run(LAB, &args, Duration::from_secs(10))
    };
    let r = v3(&["--v3-auth", "md5"]);
    assert_eq!(r.code(), Some(2), "{r:?}");
    assert!(r.stderr.contains("sha256"), "{}", r.stderr);
    let r = v3(&["--priv-password-file", &pw, "--v3-priv", "des"]);
    assert_eq!(r.code(), Some(2), "{r:?}");
    assert!(r.stderr.contains("aes"), "{}", r.stderr);
    let r = v3(&["--profile", "servertech"]);
    assert_eq!(r.code(), Some(2), "{r:?}");
    assert!(
        r.stderr.contains("MD5") && r.stderr.contains("--v3-auth sha256"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    let help = run(LAB, &["snmp-pdu", "--help"], Duration::from_secs(10));
    assert!(help.ok(), "{help:?}");
    for flag in ["--v3-auth", "--v3-priv"] {
        assert!(help.stdout.contains(flag), "snmp-pdu --help lacks {flag}");
    }
    for p in PDU_PROFILES {
        assert!(
            help.stdout
                .contains(&format!("  {:<11} {}", p.name, p.summary))
                && help.stdout.contains(&format!("SNMPv3: {}", p.v3.vendor)),
            "snmp-pdu --help lacks profile {}:\n{}",
            p.name,
            help.stdout
        );
    }
}

/// A `--v3-auth sha256` PDU started from the command line answers net-snmp's SHA-256
/// `snmpget` on the port of its ready line.
#[test]
fn snmp_v3_sha256_from_the_command_line_answers_net_snmp() {
    if !hw_tests::require::needs(
        "snmpget",
        "Debian package snmp",
        hw_tests::require::command("snmpget"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), "authpass1");
    let mut child = Command::new(LAB)
        .args([
            "snmp-pdu",
            "--profile",
            "raritan",
            "--outlets",
            "2",
            "--v3-user",
            "fencer",
            "--auth-password-file",
            &pw,
            "--priv-password-file",
            &pw,
            "--v3-auth",
            "sha256",
            "--v3-priv",
            "aes",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = ChildGuard(Some(child));
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .nth(2)
        .expect("ready line")
        .to_string();
    // PDU2-MIB outletSwitchingState.1.1: on(7).
    let r = run(
        "snmpget",
        &[
            "-v3",
            "-l",
            "authPriv",
            "-u",
            "fencer",
            "-a",
            "SHA-256",
            "-A",
            "authpass1",
            "-x",
            "AES",
            "-X",
            "authpass1",
            "-Oqv",
            &addr,
            "1.3.6.1.4.1.13742.6.4.1.2.1.3.1.1",
        ],
        Duration::from_secs(10),
    );
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.stdout.trim(), "7");
}
