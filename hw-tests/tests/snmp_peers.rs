//! SNMP against real third-party peers, both ways:
//! - net-snmp's `snmpget`/`snmpset`/`snmpwalk`/`snmpbulkwalk` (v1, v2c, v3 authPriv) and
//!   ClusterLabs `fence_apc_snmp` drive our simulated PDU (`palisade-lab snmp-pdu`'s library);
//! - our driver ([`drivers::pdu::PduDevice`]) fences an outlet of net-snmp's own `snmpd`
//!   (with a pass_persist outlet table), a PDU agent nobody here wrote.
//!
//! Together they pin the wire format: the simulator shares the driver's codec, so it is the
//! third-party peers on each side that prove the bytes are SNMP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::pdu::client::usm_stats;
use drivers::pdu::{
    model, AuthProtocol, ClientConfig, PduConfig, PduDevice, PrivProtocol, Security, UsmUser,
    Version,
};
use drivers::{DeviceError, PowerCommand, PowerDevice, PowerState, Secret};
use hw_tests::lab::snmp::{PduLab, PduLabSpec, PduUser, SNMP_IN_BAD_COMMUNITY_NAMES};
use hw_tests::peers::{Snmpd, SNMPD_AUTH, SNMPD_COMMUNITY, SNMPD_PRIV, SNMPD_SERIAL, SNMPD_USER};
use std::process::{Command, Output};

use std::time::Duration;

const AUTH: &str = "authpass123";
const PRIV: &str = "privpass123";
const RPDU_STATE: &str = "1.3.6.1.4.1.318.1.1.12.3.5.1.1.4";
const RPDU_CONTROL: &str = "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4";
const RPDU_NAMES: &str = "1.3.6.1.4.1.318.1.1.12.3.5.1.1.2";

struct Lab {
    lab: PduLab,
    _rt: tokio::runtime::Runtime,
}

fn lab(names: &[&str]) -> Lab {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut spec = PduLabSpec::new(1, 4, model::by_name("apc-rpdu").unwrap());
    spec.names = names.iter().map(|s| s.to_string()).collect();
    spec.user = Some(PduUser {
        name: "fence".into(),
        auth: Some(Secret::new(AUTH.into())),
        privacy: Some(Secret::new(PRIV.into())),
        auth_protocol: AuthProtocol::Sha1,
    });
    let lab = rt.block_on(PduLab::start(spec)).unwrap();
    Lab { lab, _rt: rt }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("MIBS", "")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}; run scripts/install-test-deps.sh"))
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn v3_args(auth: &str) -> Vec<&str> {
    vec![
        "-v3", "-l", "authPriv", "-u", "fence", "-a", "SHA", "-A", auth, "-x", "AES", "-X", PRIV,
    ]
}

#[test]
fn net_snmp_clients_get_set_and_walk_the_simulator_over_v1_v2c_and_v3() {
    let l = lab(&["db1-psu1", "db2-psu1"]);
    let p = &l.lab.pdus()[0];
    let addr = p.addr().to_string();
    let common = ["-r", "0", "-t", "2", "-On"];

    // v2c GET of identity and state.
    let o = run(
        "snmpget",
        &[
            &["-v2c", "-c", "private"][..],
            &common,
            &[
                &addr,
                "1.3.6.1.2.1.1.5.0",
                "1.3.6.1.4.1.318.1.1.12.1.6.0",
                &format!("{RPDU_STATE}.1"),
            ],
        ]
        .concat(),
    );
    let s = out(&o);
    assert!(o.status.success(), "{s}");
    assert!(
        s.contains("STRING: \"pdu1\"") && s.contains(p.serial()) && s.contains("INTEGER: 1"),
        "{s}"
    );

    // v1 and v2c walks (GETNEXT), and a v2c bulk walk (GETBULK), list the outlet names.
    for (cmd, v) in [
        ("snmpwalk", "-v1"),
        ("snmpwalk", "-v2c"),
        ("snmpbulkwalk", "-v2c"),
    ] {
        let o = run(
            cmd,
            &[&[v, "-c", "private"][..], &common, &[&addr, RPDU_NAMES]].concat(),
        );
        let s = out(&o);
        assert!(o.status.success(), "{cmd} {v}: {s}");
        assert_eq!(s.lines().count(), 4, "{cmd} {v}: {s}");
        assert!(
            s.contains("\"db1-psu1\"") && s.contains("\"db2-psu1\"") && s.contains("\"outlet4\""),
            "{s}"
        );
    }

    // v2c SET switches outlet 2 off (after the set, the state reads back off).
    let o = run(
        "snmpset",
        &[
            &["-v2c", "-c", "private"][..],
            &common,
            &[&addr, &format!("{RPDU_CONTROL}.2"), "i", "2"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(p.outlet_on(2), Some(false));

    // v3 authPriv (SHA + AES-128): read the state back, switch the outlet on again.
    let o = run(
        "snmpget",
        &[
            &v3_args(AUTH)[..],
            &common,
            &[&addr, &format!("{RPDU_STATE}.2")],
        ]
        .concat(),
    );
    assert!(out(&o).contains("INTEGER: 2"), "{}", out(&o));
    let o = run(
        "snmpset",
        &[
            &v3_args(AUTH)[..],
            &common,
            &[&addr, &format!("{RPDU_CONTROL}.2"), "i", "1"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(p.outlet_on(2), Some(true));
    let o = run(
        "snmpwalk",
        &[&v3_args(AUTH)[..], &common, &[&addr, RPDU_NAMES]].concat(),
    );
    assert_eq!(out(&o).lines().count(), 4, "{}", out(&o));

    // A value the MIB does not allow is refused (v2c wrongValue), and nothing changes.
    let o = run(
        "snmpset",
        &[
            &["-v2c", "-c", "private"][..],
            &common,
            &[&addr, &format!("{RPDU_CONTROL}.1"), "i", "7"],
        ]
        .concat(),
    );
    assert!(
        !o.status.success() && out(&o).contains("wrongValue"),
        "{}",
        out(&o)
    );
    assert_eq!(p.outlet_on(1), Some(true));
}

#[test]
fn net_snmp_sees_wrong_credentials_answered_as_a_real_agent_would() {
    let l = lab(&[]);
    let p = &l.lab.pdus()[0];
    let addr = p.addr().to_string();
    let common = ["-r", "0", "-t", "1", "-On"];
    // v2c with a wrong community: silence (and the agent counts it).
    let o = run(
        "snmpget",
        &[
            &["-v2c", "-c", "public"][..],
            &common,
            &[&addr, "1.3.6.1.2.1.1.5.0"],
        ]
        .concat(),
    );
    assert!(out(&o).contains("Timeout"), "{}", out(&o));
    assert_eq!(p.counter(SNMP_IN_BAD_COMMUNITY_NAMES), 1);
    // v3 with a wrong password: a usmStatsWrongDigests report.
    let o = run(
        "snmpget",
        &[
            &v3_args("wrong-password")[..],
            &common,
            &[&addr, "1.3.6.1.2.1.1.5.0"],
        ]
        .concat(),
    );
    assert!(out(&o).contains("Authentication failure"), "{}", out(&o));
    assert!(p.counter(&usm_stats::oid(usm_stats::WRONG_DIGESTS).to_string()) >= 1);
    // v3 with an unknown user: usmStatsUnknownUserNames.
    let o = run(
        "snmpget",
        &[
            &[
                "-v3", "-l", "authPriv", "-u", "nobody", "-a", "SHA", "-A", AUTH, "-x", "AES",
                "-X", PRIV,
            ][..],
            &common,
            &[&addr, "1.3.6.1.2.1.1.5.0"],
        ]
        .concat(),
    );
    assert!(out(&o).contains("Unknown user name"), "{}", out(&o));
    // v3 at a lower security level than the user has: usmStatsUnsupportedSecLevels.
    let o = run(
        "snmpget",
        &[
            &[
                "-v3",
                "-l",
                "authNoPriv",
                "-u",
                "fence",
                "-a",
                "SHA",
                "-A",
                AUTH,
            ][..],
            &common,
            &[&addr, "1.3.6.1.2.1.1.5.0"],
        ]
        .concat(),
    );
    assert!(
        out(&o).contains("Unsupported security level"),
        "{}",
        out(&o)
    );
}

#[test]
fn fence_apc_snmp_fences_an_outlet_of_the_simulator_and_reads_it_back_off() {
    let l = lab(&["db1-psu1", "db2-psu1"]);
    let p = &l.lab.pdus()[0];
    let (ip, port) = ("127.0.0.1".to_string(), p.addr().port().to_string());
    let base = [
        "--ip",
        &ip,
        "--ipport",
        &port,
        "--community",
        "private",
        "-d",
        "2c",
    ];
    let o = run(
        "fence_apc_snmp",
        &[&base[..], &["--plug", "db2-psu1", "-o", "off"]].concat(),
    );
    assert!(
        o.status.success() && out(&o).contains("Powered OFF"),
        "{}",
        out(&o)
    );
    assert_eq!(p.outlet_on(2), Some(false));
    assert_eq!(p.outlet_on(1), Some(true), "only the named outlet");
    // Status reads the outlet back: exit 2 means OFF in the fence agent API.
    let o = run(
        "fence_apc_snmp",
        &[&base[..], &["--plug", "2", "-o", "status"]].concat(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("Status: OFF"), "{}", out(&o));
    let o = run("fence_apc_snmp", &[&base[..], &["-o", "list"]].concat());
    assert!(
        out(&o).contains("1,db1-psu1") && out(&o).contains("2,db2-psu1"),
        "{}",
        out(&o)
    );
    // v3 authPriv: power the outlet on again.
    let o = run(
        "fence_apc_snmp",
        &[
            "--ip",
            &ip,
            "--ipport",
            &port,
            "-d",
            "3",
            "--username",
            "fence",
            "--snmp-sec-level",
            "authPriv",
            "--snmp-auth-prot",
            "SHA",
            "--password",
            AUTH,
            "--snmp-priv-prot",
            "AES",
            "--snmp-priv-passwd",
            PRIV,
            "--plug",
            "2",
            "-o",
            "on",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(p.outlet_on(2), Some(true));
}

fn snmpd_device(peer: &Snmpd, security: Security) -> PduDevice {
    PduDevice::new(PduConfig {
        client: ClientConfig {
            addr: peer.addr(),
            security,
            timeout: Duration::from_millis(500),
            retries: 1,
        },
        model: model::by_name("apc-rpdu").unwrap(),
    })
}

fn v3(auth: &str) -> Security {
    Security::Usm(UsmUser {
        name: SNMPD_USER.into(),
        auth: Some((AuthProtocol::Sha1, Secret::new(auth.into()))),
        privacy: Some((PrivProtocol::Aes128, Secret::new(SNMPD_PRIV.into()))),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn our_driver_fences_an_outlet_of_net_snmp_snmpd_over_v2c_and_v3() {
    let peer = Snmpd::start(&["web1", "web2", "web3"]).unwrap();
    let v2c = snmpd_device(
        &peer,
        Security::Community {
            version: Version::V2c,
            community: Secret::new(SNMPD_COMMUNITY.into()),
        },
    );
    let id = v2c.health().await.unwrap();
    assert_eq!(
        (id.kind.as_str(), id.value.as_str()),
        ("serial", SNMPD_SERIAL.to_ascii_lowercase().as_str())
    );
    let outlets = v2c.list().await.unwrap();
    let names: Vec<_> = outlets
        .iter()
        .map(|o| (o.id.as_str(), o.name.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(names, [("1", "web1"), ("2", "web2"), ("3", "web3")]);
    v2c.power(Some("web2"), PowerCommand::Off).await.unwrap();
    assert_eq!(v2c.status(Some("web2")).await.unwrap(), PowerState::Off);
    assert!(!peer.outlet_on(2).unwrap());
    assert!(peer.outlet_on(1).unwrap());

    // v3 authPriv (SHA + AES-128) with net-snmp's USM: engine discovery, time window, keys.
    let dev = snmpd_device(&peer, v3(SNMPD_AUTH));
    assert_eq!(dev.status(Some("2")).await.unwrap(), PowerState::Off);
    dev.power(Some("2=web2"), PowerCommand::On).await.unwrap();
    assert_eq!(dev.status(Some("2")).await.unwrap(), PowerState::On);
    assert!(peer.outlet_on(2).unwrap());
    assert_eq!(
        dev.health().await.unwrap().value,
        SNMPD_SERIAL.to_ascii_lowercase()
    );

    // A lying agent: the set is acknowledged, the outlet stays on, and status says so.
    peer.set_stuck(true).unwrap();
    dev.power(Some("web3"), PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(Some("web3")).await.unwrap(), PowerState::On);
    peer.set_stuck(false).unwrap();

    // A set the agent refuses is an error, not a success.
    let e = dev.power(Some("9"), PowerCommand::Off).await.unwrap_err();
    assert!(matches!(e, DeviceError::Refused { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn net_snmp_snmpd_refuses_wrong_credentials_and_our_driver_says_so() {
    let peer = Snmpd::start(&["web1"]).unwrap();
    let e = snmpd_device(&peer, v3("wrong-password-1"))
        .status(Some("1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DeviceError::AuthFailed { detail, .. } if detail.contains("usmStatsWrongDigests")),
        "{e}"
    );
    let bad = snmpd_device(
        &peer,
        Security::Community {
            version: Version::V2c,
            community: Secret::new("public-wrong".into()),
        },
    );
    let e = bad.power(Some("1"), PowerCommand::Off).await.unwrap_err();
    assert!(matches!(e, DeviceError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("community"), "{e}");
    assert!(peer.outlet_on(1).unwrap());
}

/// Kills the child on drop (also when the test panics).
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn palisade_lab_snmp_pdu_prints_ready_lines_serves_net_snmp_and_applies_knobs() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    for (f, v) in [("a", AUTH), ("p", PRIV)] {
        std::fs::write(dir.path().join(f), format!("{v}\n")).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-lab"))
        .args([
            "snmp-pdu",
            "--count",
            "2",
            "--base-port",
            "0",
            "--outlets",
            "3",
            "--model",
            "apc-rpdu2",
            "--community",
            "c1",
            "--v3-user",
            "fence",
            "--auth-password-file",
        ])
        .arg(dir.path().join("a"))
        .arg("--priv-password-file")
        .arg(dir.path().join("p"))
        .args(["--fault", "pdu2:stuck"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Kill(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = Vec::new();
    for i in 1..=2 {
        let line = lines.next().unwrap().unwrap();
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert_eq!(
            (f[0], f[1]),
            ("snmp-pdu", format!("pdu{i}").as_str()),
            "{line}"
        );
        assert!(f[2].starts_with("127.0.0.1:"), "{line}");
        addrs.push(f[2].to_string());
    }
    // rPDU2: control immediateOff(2); state off(1), on(2).
    let control = "1.3.6.1.4.1.318.1.1.26.9.2.4.1.5.1";
    let state = "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5.1";
    let common = ["-r", "0", "-t", "2", "-On"];
    for a in &addrs {
        let o = run(
            "snmpset",
            &[&v3_args(AUTH)[..], &common, &[a, control, "i", "2"]].concat(),
        );
        assert!(o.status.success(), "{}", out(&o));
    }
    let o = run(
        "snmpget",
        &[&["-v2c", "-c", "c1"][..], &common, &[&addrs[0], state]].concat(),
    );
    assert!(
        out(&o).contains("INTEGER: 1"),
        "pdu1 switched off: {}",
        out(&o)
    );
    let o = run(
        "snmpget",
        &[&["-v2c", "-c", "c1"][..], &common, &[&addrs[1], state]].concat(),
    );
    assert!(
        out(&o).contains("INTEGER: 2"),
        "pdu2 is stuck on: {}",
        out(&o)
    );
    let mut child = guard;
    // SIGTERM stops it cleanly.
    sigterm(child.0.id());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Sends SIGTERM with the `kill` command.
fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}
