//! Lie tests through the whole stack for switched PDUs: the `fence_node` binary -> the
//! `fenced` daemon process -> the SNMP driver over UDP -> hw-tests' simulated PDUs. A node
//! with two power supplies on two PDUs (or two outlets of one PDU) is fenced only when every
//! outlet reads back off; every fault ends in "NOT FENCED" with the reason and the outlet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{secret_file, text, Fenced};
use drivers::pdu::model;
use drivers::Secret;
use hw_tests::lab::snmp::{PduLab, PduLabSpec, PduUser, SNMP_IN_BAD_COMMUNITY_NAMES};
use hw_tests::lab::Fault;
use serde_json::Value;
use std::time::Duration;

const COMMUNITY: &str = "lab-community";
const AUTH: &str = "lab-auth-pass";
const PRIV: &str = "lab-priv-pass";

struct Bench {
    lab: PduLab,
    _rt: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
    fenced: Fenced,
}

/// Two PDUs, four outlets each:
/// pdu-a (pdu1): 1 db1-psu1, 2 db2-psu1, 3 db2-psu2, 4 db3
/// pdu-b (pdu2): 1 db1-psu2, 2 db4, 3 outlet3, 4 outlet4
/// Targets: db1 on both PDUs by name, db2 on two outlets of pdu-a by number, db3 by name,
/// db4 by number checked against its name, and two mis-credentialed views of pdu-a.
fn bench(v3: bool, power_delay_ms: u64) -> Bench {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut spec = PduLabSpec::new(2, 4, model::by_name("apc-rpdu").unwrap());
    spec.community = Some(Secret::new(COMMUNITY.into()));
    spec.user = Some(PduUser {
        name: "fence".into(),
        auth: Some(Secret::new(AUTH.into())),
        privacy: Some(Secret::new(PRIV.into())),
        auth_protocol: drivers::pdu::AuthProtocol::Sha1,
    });
    spec.power_delay = Duration::from_millis(power_delay_ms);
    let lab = rt.block_on(PduLab::start(spec)).unwrap();
    for (n, name) in ["db1-psu1", "db2-psu1", "db2-psu2", "db3"]
        .iter()
        .enumerate()
    {
        lab.pdus()[0].rename_outlet(n + 1, name);
    }
    for (n, name) in ["db1-psu2", "db4"].iter().enumerate() {
        lab.pdus()[1].rename_outlet(n + 1, name);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let community = secret_file(dir, "community", COMMUNITY);
    let wrong = secret_file(dir, "wrong", "not-the-community");
    let auth = secret_file(dir, "auth", AUTH);
    let privacy = secret_file(dir, "priv", PRIV);
    let wrong_auth = secret_file(dir, "wrong-auth", "wrong-auth-pass");
    let creds = |good: bool| {
        if v3 {
            format!(
                "version = \"3\"\nusername = \"fence\"\nauth_password_file = {:?}\npriv_password_file = {privacy:?}\n",
                if good { &auth } else { &wrong_auth }
            )
        } else {
            format!(
                "version = \"2c\"\ncommunity_file = {:?}\n",
                if good { &community } else { &wrong }
            )
        }
    };
    let (a, b) = (lab.pdus()[0].clone(), lab.pdus()[1].clone());
    let mut cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 3\ntotal_timeout_s = 8\n\n[limits]\nmax_operations = 200\nmax_operations_per_target = 50\n\n",
        dir.join("fenced.sock"),
        dir.join("history.redb"),
    );
    for (dev, pdu, good) in [
        ("pdu-a", &a, true),
        ("pdu-b", &b, true),
        ("pdu-a-bad", &a, false),
    ] {
        cfg.push_str(&format!(
            "[devices.{dev}]\nkind = \"snmp-pdu\"\naddress = \"{}\"\nmodel = \"apc-rpdu\"\ntimeout_ms = 300\nretries = 1\n{}\n",
            pdu.addr(),
            creds(good)
        ));
    }
    let (sa, sb) = (
        a.serial().to_ascii_lowercase(),
        b.serial().to_ascii_lowercase(),
    );
    cfg.push_str(&format!(
        "[targets.db1]\nlevels = [[\"pdu-a:db1-psu1\", \"pdu-b:db1-psu2\"]]\nidentities = {{ pdu-a = \"{sa}\", pdu-b = \"{sb}\" }}\n\n\
         [targets.db2]\nlevels = [[\"pdu-a:2\", \"pdu-a:3\"]]\nidentities = {{ pdu-a = \"{sa}\" }}\n\n\
         [targets.db3]\nlevels = [[\"pdu-a:db3\"]]\n\n\
         [targets.db4]\nlevels = [[\"pdu-b:2=db4\"]]\n\n\
         [targets.db1-bad]\nlevels = [[\"pdu-a-bad:db1-psu1\"]]\n\n"
    ));
    let config = dir.join("fenced.toml");
    std::fs::write(&config, cfg).unwrap();
    let fenced = Fenced::start(dir, &config);
    Bench {
        lab,
        _rt: rt,
        _tmp: tmp,
        fenced,
    }
}

impl Bench {
    fn a(&self) -> &hw_tests::lab::snmp::PduHandle {
        &self.lab.pdus()[0]
    }
    fn b(&self) -> &hw_tests::lab::snmp::PduHandle {
        &self.lab.pdus()[1]
    }
}

fn all_on(p: &hw_tests::lab::snmp::PduHandle) -> bool {
    (1..=4).all(|n| p.outlet_on(n) == Some(true))
}

#[test]
fn two_psus_on_two_pdus_are_fenced_only_when_both_read_back_off() {
    let b = bench(false, 100);
    let s = b.fenced.fenced_ok("off", "db1", "snmp e2e");
    assert!(s.contains("FENCED") && !s.contains("NOT FENCED"), "{s}");
    assert_eq!(
        (b.a().outlet_on(1), b.b().outlet_on(1)),
        (Some(false), Some(false))
    );
    for n in 2..=4 {
        assert_eq!(b.a().outlet_on(n), Some(true), "other outlets untouched");
        assert_eq!(b.b().outlet_on(n), Some(true), "other outlets untouched");
    }
    let op = b.fenced.last_op("db1");
    assert_eq!(op["outcome"]["confirmation"]["method"], "power_read_back");
    let attempts = op["attempts"].as_array().unwrap();
    let ports: Vec<&str> = attempts
        .iter()
        .map(|a| a["port"].as_str().unwrap())
        .collect();
    assert!(
        ports.contains(&"db1-psu1") && ports.contains(&"db1-psu2"),
        "{op}"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a["identity"].as_str().is_some_and(|i| i.contains("serial"))),
        "{op}"
    );
    b.fenced.fenced_ok("on", "db1", "snmp e2e");
    assert!(all_on(b.a()) && all_on(b.b()));
}

#[test]
fn reboot_of_two_outlets_of_one_pdu_turns_all_off_confirms_then_all_on() {
    let b = bench(false, 50);
    b.fenced.fenced_ok("reboot", "db2", "snmp e2e");
    assert!(all_on(b.a()));
    let op = b.fenced.last_op("db2");
    let phases: Vec<(String, String)> = op["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["phase"].as_str().unwrap().to_string(),
                a["port"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Both outlets confirmed off before either is switched on again.
    assert_eq!(phases.len(), 4, "{op}");
    assert!(phases[..2].iter().all(|(p, _)| p == "off"), "{phases:?}");
    assert!(phases[2..].iter().all(|(p, _)| p == "on"), "{phases:?}");
}

#[test]
fn one_stuck_psu_outlet_is_not_fenced_and_history_names_it() {
    let b = bench(false, 0);
    b.b().set_outlet_stuck(1, true);
    let s = b.fenced.not_fenced("db1");
    assert!(s.contains("pdu-b:db1-psu2"), "{s}");
    assert_eq!(
        b.b().outlet_on(1),
        Some(true),
        "the stuck outlet still powers the node"
    );
    let op = b.fenced.last_op("db1");
    let failed: Vec<&Value> = op["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["result"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{op}");
    assert_eq!(failed[0]["device"], "pdu-b");
    assert_eq!(failed[0]["port"], "db1-psu2");
}

#[test]
fn a_pdu_that_stays_silent_is_not_fenced() {
    let b = bench(false, 0);
    b.a().set_fault(Fault::Crash(true));
    let s = b.fenced.not_fenced("db3");
    assert!(s.contains("did not answer"), "{s}");
}

#[test]
fn malformed_replies_are_not_fenced() {
    let b = bench(true, 0);
    b.a().set_fault(Fault::Garbage(true));
    b.fenced.not_fenced("db3");
    assert_eq!(b.a().outlet_on(4), Some(true));
}

#[test]
fn a_set_answered_with_an_error_is_not_fenced() {
    let b = bench(false, 0);
    b.a().set_fault(Fault::ServerError(true));
    let s = b.fenced.not_fenced("db3");
    assert!(s.contains("genErr"), "{s}");
    assert_eq!(b.a().outlet_on(4), Some(true));
}

#[test]
fn a_set_answered_with_another_value_is_not_fenced() {
    let b = bench(true, 0);
    b.b().set_answers_other_value(true);
    let s = b.fenced.not_fenced("db1");
    assert!(
        s.contains("pdu-b:db1-psu2") && s.contains("instead of"),
        "{s}"
    );
    assert_eq!(b.b().outlet_on(1), Some(true));
}

#[test]
fn wrong_community_is_not_fenced_and_the_agent_counts_it() {
    let b = bench(false, 0);
    let s = b.fenced.not_fenced("db1-bad");
    assert!(s.contains("community"), "{s}");
    assert!(b.a().counter(SNMP_IN_BAD_COMMUNITY_NAMES) > 0);
    assert_eq!(b.a().outlet_on(1), Some(true));
}

#[test]
fn v3_auth_priv_fences_and_a_wrong_v3_password_is_refused() {
    let b = bench(true, 20);
    b.fenced.fenced_ok("off", "db1", "snmp e2e");
    assert_eq!(
        (b.a().outlet_on(1), b.b().outlet_on(1)),
        (Some(false), Some(false))
    );
    let s = b.fenced.not_fenced("db1-bad");
    assert!(s.contains("usmStatsWrongDigests"), "{s}");
    b.fenced.fenced_ok("on", "db1", "snmp e2e");
    assert!(all_on(b.a()));
}

#[test]
fn an_outlet_renamed_so_the_name_points_elsewhere_is_refused() {
    let b = bench(false, 0);
    // First use pins db3 to outlet 4.
    b.fenced.fenced_ok("off", "db3", "snmp e2e");
    b.fenced.fenced_ok("on", "db3", "snmp e2e");
    // Someone rewires: outlet 4 is now `spare`, and `db3` is on outlet 3 (db2's PSU).
    b.a().rename_outlet(4, "spare");
    b.a().rename_outlet(3, "db3");
    let s = b.fenced.not_fenced("db3");
    assert!(s.contains("moved from outlet 4 to outlet 3"), "{s}");
    assert_eq!(
        b.a().outlet_on(3),
        Some(true),
        "db2's outlet must not be switched"
    );
    assert_eq!(b.a().outlet_on(4), Some(true));
    // A number checked against a name refuses as soon as the name differs.
    b.b().rename_outlet(2, "something-else");
    let s = b.fenced.not_fenced("db4");
    assert!(s.contains("is named `something-else`, not `db4`"), "{s}");
    assert_eq!(b.b().outlet_on(2), Some(true));
}

#[test]
fn fence_node_devices_lists_outlets_with_names() {
    let b = bench(false, 0);
    let out = b.fenced.fence_node(&["devices", "--check"]);
    let s = text(&out);
    // pdu-a-bad cannot answer (wrong community), so the check as a whole exits 1.
    assert!(s.contains("pdu-a outlets:"), "{s}");
    for name in ["db1-psu1", "db2-psu1", "db2-psu2", "db3", "db1-psu2", "db4"] {
        assert!(s.contains(name), "{name} missing: {s}");
    }
    let devs = b.fenced.json(&["devices"]);
    let a = devs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "pdu-a")
        .unwrap();
    assert_eq!(a["outlets"][0]["name"], "db1-psu1");
    assert_eq!(a["outlets"][0]["state"], "on");
    assert_eq!(a["identity"]["kind"], "serial");
}
