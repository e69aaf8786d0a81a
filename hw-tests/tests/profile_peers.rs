//! The lab's vendor profiles driven by clients nobody here wrote, on 127.0.0.1:
//! - DMTF `redfishtool` (Debian) lists Systems, Chassis and Managers under the vendor's ids
//!   and resets a system; on profiles that refuse a reset into the current state it gets the
//!   vendor's 409/400, as operators report from the real firmware;
//! - OpenStack's `sushy` (PyPI; Ironic's library) powers off and on with a session and TLS
//!   verified against the lab's CA (`peers/sushy/sushy_off_on.py`);
//! - ClusterLabs `fence_redfish` and `fence_ipmilan` fence every Redfish and IPMI profile.
//!
//! One module per profile (nextest runs them in parallel); the `every_*_profile_is_tested`
//! tests fail when a profile is added to the tables without being added here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{run, FENCE_IPMILAN};
use drivers::Secret;
use hw_tests::lab::profile::{
    ipmi_profile, redfish_profile, RedfishProfile, IPMI_PROFILES, REDFISH_PROFILES,
};
use hw_tests::lab::redfish::{system_id, RedfishLab, RedfishLabSpec};
use hw_tests::lab::{BackgroundLab, EventKind, LabSpec};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "admin";
const PASSWORD: &str = "lab-pw-2";

/// A Redfish lab of one BMC under `profile`, on its own runtime.
struct Bench {
    lab: RedfishLab,
    _rt: tokio::runtime::Runtime,
    profile: &'static RedfishProfile,
}

fn bench(name: &str) -> Bench {
    let profile = redfish_profile(name).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let spec = RedfishLabSpec::new(1, USER, Secret::new(PASSWORD.into())).with_profile(profile);
    let lab = rt.block_on(RedfishLab::start(spec)).unwrap();
    Bench {
        lab,
        _rt: rt,
        profile,
    }
}

/// Waits until the lab's node is `on` (a peer's reset returns before the transition ends).
fn wait_power(b: &Bench, on: bool) {
    let until = Instant::now() + b.profile.transition + Duration::from_secs(5);
    while b.lab.bmcs()[0].power() != on {
        assert!(
            Instant::now() < until,
            "{}: power never {on}",
            b.profile.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// redfishtool against the lab; it has no password file or stdin option, so the lab's
/// throw-away password goes on its argv (never a real one), and it does not verify TLS.
fn redfishtool(b: &Bench, args: &[&str]) -> common::Run {
    let host = b.lab.bmcs()[0].addr().to_string();
    let mut a = vec![
        "-r", &host, "-u", USER, "-p", PASSWORD, "-S", "Always", "-A", "Session", "-T", "10",
    ];
    a.extend_from_slice(args);
    run("redfishtool", &a, Duration::from_secs(60))
}

fn redfishtool_lists_and_resets(name: &'static str) {
    if !hw_tests::require::needs_command("redfishtool", "Debian package redfishtool") {
        return;
    }
    let b = bench(name);
    let p = b.profile;
    for (collection, id) in [
        ("Systems", system_id(p, 1)),
        ("Chassis", p.chassis_id.to_string()),
        ("Managers", p.manager_id.to_string()),
    ] {
        let r = redfishtool(&b, &[collection]);
        assert!(r.ok(), "{name} {collection}: {r:?}");
        let want = format!("/redfish/v1/{collection}/{id}\"");
        assert!(r.stdout.contains(&want), "{name}: {want} in {r:?}");
    }
    let r = redfishtool(&b, &["Systems", "-F", "-P", "Manufacturer"]);
    assert!(r.stdout.contains(p.manufacturer), "{name}: {r:?}");
    let r = redfishtool(&b, &["Systems", "-F", "reset", "ForceOff"]);
    assert!(r.ok(), "{name}: {r:?}");
    wait_power(&b, false);
    let r = redfishtool(&b, &["Systems", "-F", "-P", "PowerState"]);
    assert!(r.stdout.contains("\"Off\""), "{name}: {r:?}");
    // Into the state it is already in: the vendor's answer, seen by a third party.
    let r = redfishtool(&b, &["Systems", "-F", "reset", "ForceOff"]);
    match p.same_state_status {
        Some(code) => {
            assert!(!r.ok(), "{name}: {r:?}");
            assert!(
                format!("{}{}", r.stdout, r.stderr).contains(&code.to_string()),
                "{name}: {r:?}"
            );
        }
        None => assert!(r.ok(), "{name}: {r:?}"),
    }
    let r = redfishtool(&b, &["Systems", "-F", "reset", "On"]);
    assert!(r.ok(), "{name}: {r:?}");
    wait_power(&b, true);
}

fn sushy_off_on_with_session_and_tls(name: &'static str) {
    if !hw_tests::require::needs(
        "sushy",
        "PyPI sushy 5.14.0",
        hw_tests::require::python_module("sushy"),
    ) {
        return;
    }
    let b = bench(name);
    let bmc = &b.lab.bmcs()[0];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/sushy/sushy_off_on.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(bmc.url())
        .arg(USER)
        .arg(b.lab.ca_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The password on stdin, out of argv.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name}: {said}");
    // sushy 5.14 prints its enums (`PowerState.OFF`); older releases printed `off`.
    let lower = said.to_lowercase();
    assert!(
        lower.contains("-> powerstate.off") || lower.contains("-> off"),
        "{name}: {said}"
    );
    assert!(
        lower.contains("-> powerstate.on") || lower.contains("-> on"),
        "{name}: {said}"
    );
    assert!(said.contains("SessionAuth"), "{name}: {said}");
    assert!(
        bmc.events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::SessionOpened { .. })),
        "{name}: sushy opened a session"
    );
    assert!(bmc.power(), "{name}");
}

/// fence_redfish with options on stdin (as Pacemaker passes them) and the lab's CA trusted.
fn fence_redfish(b: &Bench, action: &str) -> (Option<i32>, Duration, String) {
    let bmc = &b.lab.bmcs()[0];
    let mut child = Command::new("fence_redfish")
        .env("REQUESTS_CA_BUNDLE", b.lab.ca_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                "ip=127.0.0.1\nipport={}\nusername={USER}\npassword={PASSWORD}\naction={action}\n",
                bmc.addr().port()
            )
            .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        t.elapsed(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn fence_redfish_off_status_on(name: &'static str) {
    if !hw_tests::require::needs_command("fence_redfish", "Debian package fence-agents") {
        return;
    }
    let b = bench(name);
    let (code, took, said) = fence_redfish(&b, "off");
    assert_eq!(code, Some(0), "{name}: {said}");
    assert!(!b.lab.bmcs()[0].power(), "{name}: reported off while on");
    // The fence agent API's "off" status is exit 2.
    let (code, _, said) = fence_redfish(&b, "status");
    assert_eq!(code, Some(2), "{name}: {said}");
    let (code, _, said) = fence_redfish(&b, "on");
    assert_eq!(code, Some(0), "{name}: {said}");
    // fence_redfish takes every PowerState but "Off" for on, PoweringOn included, so it
    // reports success while a vendor's transition is still running: wait for the lab.
    wait_power(&b, true);
    eprintln!("FIGURE fence_redfish -o off against profile {name}: {took:?}");
}

fn fence_ipmilan_off_status_on(name: &'static str) {
    if !hw_tests::require::needs_command(FENCE_IPMILAN, "Debian package fence-agents") {
        return;
    }
    let p = ipmi_profile(name).unwrap();
    let lab =
        BackgroundLab::start(LabSpec::new(1, USER, Secret::new(PASSWORD.into())).with_profile(p))
            .unwrap();
    let bmc = &lab.bmcs()[0];
    let port = bmc.port().to_string();
    let suite = p.suites[0].to_string();
    let fence = |action: &str| {
        // Passing -C: ipmitool under fence_ipmilan would otherwise ask for the cipher suites
        // first (PEERS.md); the profile's first suite is one it offers.
        run(
            FENCE_IPMILAN,
            &[
                "--lanplus",
                "-a",
                "127.0.0.1",
                "-u",
                &port,
                "-l",
                USER,
                "-p",
                PASSWORD,
                "-C",
                &suite,
                "-o",
                action,
            ],
            Duration::from_secs(90),
        )
    };
    let r = fence("off");
    assert!(r.ok(), "{name}: {r:?}");
    assert!(r.stdout.contains("Success: Powered OFF"), "{name}: {r:?}");
    assert!(!bmc.power(), "{name}: reported off while on");
    let r = fence("status");
    assert_eq!(r.code(), Some(2), "{name}: {r:?}");
    let r = fence("on");
    assert!(r.ok(), "{name}: {r:?}");
    assert!(bmc.power(), "{name}");
}

macro_rules! redfish_profiles {
    ($($p:ident),* $(,)?) => {
        const REDFISH_TESTED: &[&str] = &[$(stringify!($p)),*];
        mod redfish {
            $(
                pub mod $p {
                    #[test]
                    fn redfishtool_lists_and_resets() {
                        super::super::redfishtool_lists_and_resets(stringify!($p));
                    }
                    #[test]
                    fn sushy_off_on_with_session_and_tls() {
                        super::super::sushy_off_on_with_session_and_tls(stringify!($p));
                    }
                    #[test]
                    fn fence_redfish_off_status_on() {
                        super::super::fence_redfish_off_status_on(stringify!($p));
                    }
                }
            )*
        }
    };
}

macro_rules! ipmi_profiles {
    ($($p:ident),* $(,)?) => {
        const IPMI_TESTED: &[&str] = &[$(stringify!($p)),*];
        mod ipmi {
            $(
                pub mod $p {
                    #[test]
                    fn fence_ipmilan_off_status_on() {
                        super::super::fence_ipmilan_off_status_on(stringify!($p));
                    }
                }
            )*
        }
    };
}

redfish_profiles!(palisade, idrac, ilo, openbmc, supermicro, xcc);
ipmi_profiles!(palisade, idrac, ilo, openbmc, supermicro, xcc);

#[test]
fn every_redfish_profile_is_tested() {
    let table: Vec<&str> = REDFISH_PROFILES.iter().map(|p| p.name).collect();
    assert_eq!(
        table, REDFISH_TESTED,
        "add the new profile to redfish_profiles!"
    );
}

#[test]
fn every_ipmi_profile_is_tested() {
    let table: Vec<&str> = IPMI_PROFILES.iter().map(|p| p.name).collect();
    assert_eq!(table, IPMI_TESTED, "add the new profile to ipmi_profiles!");
}
