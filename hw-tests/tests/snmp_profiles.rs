//! The vendor PDU profiles of the SNMP lab (`palisade-lab snmp --profile NAME`), each driven
//! by clients nobody here wrote and by our own driver through the real `fenced`:
//! - net-snmp's `snmpget`/`snmpset`/`snmpwalk` with the numeric OIDs of the vendor's MIB
//!   (written out here from the MIB text, not taken from the driver's table, so a typo in
//!   either shows);
//! - `fenced` + `fence_node off` confirms each profile's outlet off only by reading it back,
//!   through the profile's delay and pending states, and a stuck outlet (acknowledges, stays
//!   on) is NOT fenced;
//! - ClusterLabs `fence_apc_snmp` and `fence_tripplite_snmp` fence their profiles, and
//!   `fence_eaton_snmp` is shown not to know EATON-EPDU-MIB PDUs (it crashes on their
//!   sysObjectID), which is why our driver has the eaton-epdu model.
//!
//! Time-to-off figures are measured by `scripts/pdu-profile-figures.sh`, not here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::daemon::FencedProcess;
use hw_tests::lab::snmp::{pdu_profile, PduLab, PduLabSpec, PDU_PROFILES};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

/// One profile's MIB, as its vendor's MIB text numbers it: (state column, control column
/// for off, control column for on, name column, index between column and outlet, state
/// off, state on, immediate off value, immediate on value).
struct Mib {
    profile: &'static str,
    state: &'static str,
    off_column: &'static str,
    on_column: &'static str,
    names: &'static str,
    index: &'static str,
    state_off: &'static str,
    state_on: &'static str,
    off: &'static str,
    on: &'static str,
}

const MIBS: &[Mib] = &[
    // PowerNet-MIB rPDUOutletStatusOutletState / rPDUOutletControlOutletCommand /
    // rPDUOutletStatusOutletName.
    Mib {
        profile: "apc",
        state: "1.3.6.1.4.1.318.1.1.12.3.5.1.1.4",
        off_column: "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4",
        on_column: "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4",
        names: "1.3.6.1.4.1.318.1.1.12.3.5.1.1.2",
        index: "",
        state_off: "2",
        state_on: "1",
        off: "2",
        on: "1",
    },
    // TRIPPLITE-PRODUCTS tlpPduOutletState / tlpPduOutletCommand / tlpPduOutletName,
    // INDEX { tlpDeviceIndex, tlpPduOutletIndex }.
    Mib {
        profile: "tripplite",
        state: "1.3.6.1.4.1.850.1.1.3.2.3.3.1.1.4",
        off_column: "1.3.6.1.4.1.850.1.1.3.2.3.3.1.1.6",
        on_column: "1.3.6.1.4.1.850.1.1.3.2.3.3.1.1.6",
        names: "1.3.6.1.4.1.850.1.1.3.2.3.3.1.1.2",
        index: "1.",
        state_off: "1",
        state_on: "2",
        off: "1",
        on: "2",
    },
    // EATON-EPDU-MIB outletControlStatus / outletControlOffCmd / outletControlOnCmd /
    // outletName, INDEX { strappingIndex, outletIndex }.
    Mib {
        profile: "eaton",
        state: "1.3.6.1.4.1.534.6.6.7.6.6.1.2",
        off_column: "1.3.6.1.4.1.534.6.6.7.6.6.1.3",
        on_column: "1.3.6.1.4.1.534.6.6.7.6.6.1.4",
        names: "1.3.6.1.4.1.534.6.6.7.6.1.1.3",
        index: "0.",
        state_off: "0",
        state_on: "1",
        off: "0",
        on: "0",
    },
    // PDU2-MIB outletSwitchingState / switchingOperation / outletName, INDEX { pduId,
    // outletId }.
    Mib {
        profile: "raritan",
        state: "1.3.6.1.4.1.13742.6.4.1.2.1.3",
        off_column: "1.3.6.1.4.1.13742.6.4.1.2.1.2",
        on_column: "1.3.6.1.4.1.13742.6.4.1.2.1.2",
        names: "1.3.6.1.4.1.13742.6.3.5.3.1.3",
        index: "1.",
        state_off: "8",
        state_on: "7",
        off: "0",
        on: "1",
    },
    // Sentry3-MIB outletStatus / outletControlAction / outletName, INDEX { towerIndex,
    // infeedIndex, outletIndex }.
    Mib {
        profile: "servertech",
        state: "1.3.6.1.4.1.1718.3.2.3.1.5",
        off_column: "1.3.6.1.4.1.1718.3.2.3.1.11",
        on_column: "1.3.6.1.4.1.1718.3.2.3.1.11",
        names: "1.3.6.1.4.1.1718.3.2.3.1.3",
        index: "1.1.",
        state_off: "0",
        state_on: "1",
        off: "2",
        on: "1",
    },
    // Sentry4-MIB st4OutletState / st4OutletControlAction / st4OutletName, INDEX
    // { st4UnitIndex, st4InputCordIndex, st4OutletIndex }.
    Mib {
        profile: "sentry4",
        state: "1.3.6.1.4.1.1718.4.1.8.3.1.1",
        off_column: "1.3.6.1.4.1.1718.4.1.8.5.1.2",
        on_column: "1.3.6.1.4.1.1718.4.1.8.5.1.2",
        names: "1.3.6.1.4.1.1718.4.1.8.2.1.3",
        index: "1.1.",
        state_off: "2",
        state_on: "1",
        off: "2",
        on: "1",
    },
];

/// Labs on a runtime of their own, stopped on drop.
struct Labs {
    labs: Vec<(&'static str, PduLab)>,
    rt: tokio::runtime::Runtime,
}

impl Drop for Labs {
    fn drop(&mut self) {
        for (_, lab) in self.labs.drain(..) {
            self.rt.block_on(lab.shutdown());
        }
    }
}

impl Labs {
    fn start(profiles: &[&'static str]) -> Labs {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let labs = profiles
            .iter()
            .map(|name| {
                let mut spec = PduLabSpec::with_profile(1, 4, pdu_profile(name).unwrap());
                spec.names = vec!["db1-psu1".into(), "db2-psu1".into()];
                (*name, rt.block_on(PduLab::start(spec)).unwrap())
            })
            .collect();
        Labs { labs, rt }
    }

    fn lab(&self, name: &str) -> &PduLab {
        &self.labs.iter().find(|(n, _)| *n == name).unwrap().1
    }
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

fn needs(tool: &str, package: &str) -> bool {
    hw_tests::require::needs(tool, package, hw_tests::require::command(tool))
}

/// The value of a `snmpget -Oqv` answer.
fn get(addr: &str, community: &str, oid: &str) -> String {
    let o = run("snmpget", &["-v2c", "-c", community, "-Oqv", addr, oid]);
    assert!(o.status.success(), "snmpget {oid}: {}", out(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Polls outlet `n`'s state column until it reads `want` (the profiles' delays are at most
/// a few seconds).
fn wait_state(addr: &str, community: &str, oid: &str, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let v = get(addr, community, oid);
        if seen.last() != Some(&v) {
            seen.push(v.clone());
        }
        if v == want {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{oid} never read {want}; it read {seen:?}");
}

#[test]
fn net_snmp_walks_gets_and_sets_each_profile_by_its_vendor_mib_oids() {
    if !needs("snmpget", "Debian package snmp") {
        return;
    }
    let names: Vec<&'static str> = MIBS.iter().map(|m| m.profile).collect();
    let labs = Labs::start(&names);
    for m in MIBS {
        let p = pdu_profile(m.profile).unwrap();
        let pdu = &labs.lab(m.profile).pdus()[0];
        let addr = pdu.addr().to_string();
        let (ro, rw) = (p.read_community, p.write_community);
        // The name column walks as the MIB indexes it.
        let o = run("snmpwalk", &["-v2c", "-c", ro, "-On", &addr, m.names]);
        let walk = out(&o);
        assert!(
            walk.contains(&format!(".{}.{}1 = STRING: \"db1-psu1\"", m.names, m.index)),
            "{}: {walk}",
            m.profile
        );
        let state = format!("{}.{}2", m.state, m.index);
        assert_eq!(get(&addr, ro, &state), m.state_on, "{}", m.profile);
        // The factory read-only community may not switch (RFC 3584 §4.1: noAccess).
        let off = format!("{}.{}2", m.off_column, m.index);
        let o = run("snmpset", &["-v2c", "-c", ro, &addr, &off, "i", m.off]);
        assert!(
            !o.status.success() && out(&o).contains("noAccess"),
            "{}: {}",
            m.profile,
            out(&o)
        );
        assert_eq!(pdu.outlet_on(2), Some(true));
        // The write community switches off, and the state column follows, after the
        // profile's delay and through its pending value if it has one.
        let o = run("snmpset", &["-v2c", "-c", rw, &addr, &off, "i", m.off]);
        assert!(o.status.success(), "{}: {}", m.profile, out(&o));
        let seen = wait_state(&addr, ro, &state, m.state_off);
        if let Some((pending_off, _)) = drivers::pdu::model::by_name(p.model).unwrap().state_pending
        {
            assert!(
                seen.contains(&pending_off.to_string()),
                "{}: the state went {seen:?} without the pending value {pending_off}",
                m.profile
            );
        }
        assert_eq!(pdu.outlet_on(2), Some(false), "{}", m.profile);
        let on = format!("{}.{}2", m.on_column, m.index);
        let o = run("snmpset", &["-v2c", "-c", rw, &addr, &on, "i", m.on]);
        assert!(o.status.success(), "{}: {}", m.profile, out(&o));
        wait_state(&addr, ro, &state, m.state_on);
        // A value the MIB does not allow in the control column is refused (-5 is outside
        // every one of these enumerations and below Eaton's -1..99999).
        let o = run("snmpset", &["-v2c", "-c", rw, &addr, &off, "i", "-5"]);
        assert!(
            !o.status.success() && out(&o).contains("wrongValue"),
            "{}: {}",
            m.profile,
            out(&o)
        );
    }
}

#[test]
fn delayed_commands_wait_and_can_be_cancelled_as_the_mibs_say() {
    if !needs("snmpget", "Debian package snmp") {
        return;
    }
    let labs = Labs::start(&["apc", "eaton"]);
    // APC delayedOff(5): acknowledged, rPDUOutletStatusCommandPending reads
    // commandPending(1) and the outlet stays on until rPDUOutletConfigPowerOffTime.
    let apc = &labs.lab("apc").pdus()[0];
    let a = apc.addr().to_string();
    let o = run(
        "snmpset",
        &[
            "-v2c",
            "-c",
            "private",
            &a,
            "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3",
            "i",
            "5",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(get(&a, "public", "1.3.6.1.4.1.318.1.1.12.3.5.1.1.5.3"), "1");
    assert_eq!(get(&a, "public", "1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.3"), "1");
    // cancelPendingCommand(7) drops it: nothing pending, the outlet stays on.
    let o = run(
        "snmpset",
        &[
            "-v2c",
            "-c",
            "private",
            &a,
            "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3",
            "i",
            "7",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(get(&a, "public", "1.3.6.1.4.1.318.1.1.12.3.5.1.1.5.3"), "2");
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(
        apc.outlet_on(3),
        Some(true),
        "the cancelled delayedOff never acted"
    );
    // Eaton: off after 30 s reads pendingOff(2) and the countdown; -1 cancels.
    let eaton = &labs.lab("eaton").pdus()[0];
    let e = eaton.addr().to_string();
    let off = "1.3.6.1.4.1.534.6.6.7.6.6.1.3.0.3";
    let o = run("snmpset", &["-v2c", "-c", "private", &e, off, "i", "30"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(get(&e, "public", "1.3.6.1.4.1.534.6.6.7.6.6.1.2.0.3"), "2");
    let left: i64 = get(&e, "public", off).parse().unwrap();
    assert!((28..=30).contains(&left), "countdown {left}");
    let o = run("snmpset", &["-v2c", "-c", "private", &e, off, "i", "-1"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(get(&e, "public", "1.3.6.1.4.1.534.6.6.7.6.6.1.2.0.3"), "1");
    assert_eq!(get(&e, "public", off), "-1");
    assert_eq!(eaton.outlet_on(3), Some(true));
}

/// A `fenced` on every profile's PDU: target `P-db1` on outlet 1, `P-stuck` on outlet 2,
/// which is made to acknowledge and stay on.
struct Daemon {
    fenced: FencedProcess,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(labs: &Labs) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = format!(
            "[daemon]\nsocket = \"{0}/S.sock\"\nhistory = \"{0}/S.redb\"\n\n[limits]\nmax_operations = 500\nmax_operations_per_target = 100\n\n",
            dir.path().display()
        );
        for (name, lab) in &labs.labs {
            let p = pdu_profile(name).unwrap();
            let cf = dir.path().join(format!("{name}.community"));
            std::fs::write(&cf, format!("{}\n", p.write_community)).unwrap();
            std::fs::set_permissions(&cf, std::fs::Permissions::from_mode(0o600)).unwrap();
            write!(
                cfg,
                "[devices.{name}]\nkind = \"snmp-pdu\"\naddress = \"{}\"\nmodel = \"{}\"\nversion = \"2c\"\ncommunity_file = \"{}\"\ntimeout_ms = 300\n\n",
                lab.pdus()[0].addr(),
                p.model,
                cf.display()
            )
            .unwrap();
            write!(
                cfg,
                "[targets.{name}-db1]\nlevels = [[\"{name}:db1-psu1\"]]\n\n[targets.{name}-stuck]\nlevels = [[\"{name}:2\"]]\nattempt_timeout_s = 3.0\ntotal_timeout_s = 3.5\n\n"
            )
            .unwrap();
        }
        let config = dir.path().join("fenced.toml");
        std::fs::write(&config, cfg).unwrap();
        let mut fenced = FencedProcess::spawn(
            &hw_tests::bins::fenced(),
            &config,
            &dir.path().join("S.sock"),
            &dir.path().join("fenced.log"),
        )
        .unwrap();
        fenced.wait_ready(Duration::from_secs(20)).unwrap();
        Daemon { fenced, dir }
    }

    fn fence_node(&self, args: &[&str]) -> Output {
        Command::new(hw_tests::bins::workspace_bin("fenced", "fence_node"))
            .arg("--socket")
            .arg(self.dir.path().join("S.sock"))
            .args(args)
            .output()
            .unwrap()
    }
}

#[test]
fn fenced_confirms_each_profile_off_by_read_back_and_never_fences_a_stuck_outlet() {
    let names: Vec<&'static str> = PDU_PROFILES.iter().map(|p| p.name).collect();
    let labs = Labs::start(&names);
    for (_, lab) in &labs.labs {
        lab.pdus()[0].set_outlet_stuck(2, true);
    }
    let d = Daemon::start(&labs);
    for name in &names {
        let pdu = &labs.lab(name).pdus()[0];
        let o = d.fence_node(&["off", &format!("{name}-db1"), "--reason", "profile test"]);
        assert!(
            o.status.success(),
            "{name}: {}\n{}",
            out(&o),
            d.fenced.log()
        );
        assert_eq!(pdu.outlet_on(1), Some(false), "{name}: outlet 1 is off");
        // The stuck outlet acknowledged the set (no SNMP error) and stayed on: exit 1, not
        // fenced, with the reason.
        let o = d.fence_node(&["off", &format!("{name}-stuck"), "--reason", "profile test"]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", out(&o));
        assert!(out(&o).contains("NOT"), "{name}: {}", out(&o));
        assert_eq!(pdu.outlet_on(2), Some(true), "{name}: still on");
        // Power on is confirmed the same way.
        let o = d.fence_node(&["on", &format!("{name}-db1"), "--reason", "profile test"]);
        assert!(o.status.success(), "{name}: {}", out(&o));
        assert_eq!(pdu.outlet_on(1), Some(true));
    }
}

#[test]
fn clusterlabs_fence_agents_against_their_profiles() {
    if !needs("fence_apc_snmp", "Debian package fence-agents") {
        return;
    }
    let labs = Labs::start(&["apc", "tripplite", "eaton"]);
    for (agent, profile) in [
        ("fence_apc_snmp", "apc"),
        ("fence_tripplite_snmp", "tripplite"),
    ] {
        let pdu = &labs.lab(profile).pdus()[0];
        let p = pdu_profile(profile).unwrap();
        let port = pdu.addr().port().to_string();
        let base = [
            "--ip",
            "127.0.0.1",
            "--ipport",
            &port,
            "--community",
            p.write_community,
            "-d",
            "2c",
        ];
        let o = run(
            agent,
            &[&base[..], &["--plug", "db2-psu1", "-o", "off"]].concat(),
        );
        assert!(
            o.status.success() && out(&o).contains("Powered OFF"),
            "{agent}: {}",
            out(&o)
        );
        assert_eq!(pdu.outlet_on(2), Some(false), "{agent}");
        let o = run(agent, &[&base[..], &["--plug", "2", "-o", "on"]].concat());
        assert!(o.status.success(), "{agent}: {}", out(&o));
        assert_eq!(pdu.outlet_on(2), Some(true), "{agent}");
    }
    // fence_eaton_snmp (fence-agents 4.12) knows the Managed ePDU (534.6.6.6) and Pulizzi
    // (20677) MIBs only; an EATON-EPDU-MIB PDU's sysObjectID (534.6.6.7) makes it crash
    // without switching anything. If a later version learns the MIB, this fails: then
    // compare it as the others are.
    let eaton = &labs.lab("eaton").pdus()[0];
    let port = eaton.addr().port().to_string();
    let o = run(
        "fence_eaton_snmp",
        &[
            "--ip",
            "127.0.0.1",
            "--ipport",
            &port,
            "--community",
            "private",
            "-d",
            "2c",
            "--plug",
            "1",
            "-o",
            "off",
        ],
    );
    assert!(!out(&o).contains("Success"), "{}", out(&o));
    assert_eq!(eaton.outlet_on(1), Some(true));
}

#[test]
fn sentry4_queued_actions_wait_for_the_commit_and_clear_discards_them() {
    if !needs("snmpget", "Debian package snmp") {
        return;
    }
    let labs = Labs::start(&["sentry4"]);
    let pdu = &labs.lab("sentry4").pdus()[0];
    let addr = pdu.addr().to_string();
    // st4OutletControlAction.1.1.3, st4OutletState.1.1.3, st4OutletQueueControl.0.
    let control = "1.3.6.1.4.1.1718.4.1.8.5.1.2.1.1.3";
    let state = "1.3.6.1.4.1.1718.4.1.8.3.1.1.1.1.3";
    let queue = "1.3.6.1.4.1.1718.4.1.8.6.1.0";
    // queueOff(5): acknowledged, nothing switches, however long one waits.
    let o = run(
        "snmpset",
        &["-v2c", "-c", "private", &addr, control, "i", "5"],
    );
    assert!(o.status.success(), "{}", out(&o));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(&addr, "public", state), "1");
    assert_eq!(pdu.outlet_on(3), Some(true));
    // commit(1) carries it out, after the profile's switch delay.
    let o = run(
        "snmpset",
        &["-v2c", "-c", "private", &addr, queue, "i", "1"],
    );
    assert!(o.status.success(), "{}", out(&o));
    wait_state(&addr, "public", state, "2");
    assert_eq!(pdu.outlet_on(3), Some(false));
    // queueOn(4) then clear(0): the queue is emptied and the outlet stays off.
    let o = run(
        "snmpset",
        &["-v2c", "-c", "private", &addr, control, "i", "4"],
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = run(
        "snmpset",
        &["-v2c", "-c", "private", &addr, queue, "i", "0"],
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = run(
        "snmpset",
        &["-v2c", "-c", "private", &addr, queue, "i", "1"],
    );
    assert!(o.status.success(), "{}", out(&o));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(&addr, "public", state), "2");
    assert_eq!(pdu.outlet_on(3), Some(false));
    // A value outside clear(0)/commit(1) is refused.
    let o = run(
        "snmpset",
        &["-v2c", "-c", "private", &addr, queue, "i", "7"],
    );
    assert!(
        !o.status.success() && out(&o).contains("wrongValue"),
        "{}",
        out(&o)
    );
}
