//! Lie tests through the whole stack: the `fence_node` binary -> the `fenced` daemon process ->
//! the native IPMI client -> a simulated BMC (hw-tests' lab, real RMCP+ over loopback UDP).
//! Each fault must end in the honest outcome: "NOT FENCED" with the reason, never a success.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{text, Fenced};
use drivers::Secret;
use hw_tests::lab::{BackgroundLab, Fault, LabSpec};
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

const PASSWORD: &str = "lab-password";

struct Bench {
    lab: BackgroundLab,
    _tmp: tempfile::TempDir,
    fenced: Fenced,
}

/// Options for the config written for the lab.
#[derive(Default)]
struct Opts {
    power_delay_ms: u64,
    wrong_password: bool,
    wrong_guid_for: Option<&'static str>,
}

fn bench(nodes: usize, opts: Opts) -> Bench {
    let mut spec = LabSpec::new(nodes, "admin", Secret::new(PASSWORD.as_bytes().to_vec()));
    spec.power_delay = Duration::from_millis(opts.power_delay_ms);
    let lab = BackgroundLab::start(spec).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pw = dir.join("pw");
    let mut f = std::fs::File::create(&pw).unwrap();
    // A password file others can read is refused (as ssh refuses such keys).
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    writeln!(
        f,
        "{}",
        if opts.wrong_password {
            "not-the-password"
        } else {
            PASSWORD
        }
    )
    .unwrap();
    let mut cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 3\ntotal_timeout_s = 8\n\n",
        dir.join("fenced.sock"),
        dir.join("history.redb")
    );
    for b in lab.bmcs() {
        let guid = if opts.wrong_guid_for == Some(b.name()) {
            "00000000-0000-4000-8000-00000000dead".to_string()
        } else {
            b.guid_text()
        };
        cfg.push_str(&format!(
            "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = {pw:?}\ncipher_suite = 17\ntimeout_ms = 200\nretries = 1\n\n[targets.{n}]\nlevels = [[\"bmc-{n}\"]]\nidentities = {{ bmc-{n} = \"{guid}\" }}\n\n",
            n = b.name(),
            a = b.addr(),
        ));
    }
    let config = dir.join("fenced.toml");
    std::fs::write(&config, cfg).unwrap();
    let fenced = Fenced::start(dir, &config);
    Bench {
        lab,
        _tmp: tmp,
        fenced,
    }
}

fn last_op(b: &Bench, node: &str) -> Value {
    let h = b.fenced.json(&["history", node]);
    h.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("no history for {node}: {h}"))
}

#[test]
fn honest_bmc_is_fenced_and_confirmed_by_read_back() {
    let b = bench(2, Opts::default());
    let out = b.fenced.fence_node(&["off", "node1", "--reason", "e2e"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("FENCED") && !t.contains("NOT FENCED"), "{t}");
    assert!(
        !b.lab.bmc("node1").unwrap().power(),
        "the node must really be off"
    );
    assert!(
        b.lab.bmc("node2").unwrap().power(),
        "the other node is untouched"
    );
    let op = last_op(&b, "node1");
    assert_eq!(op["state"], "succeeded");
    assert_eq!(op["outcome"]["confirmation"]["method"], "power_read_back");
    assert!(op["attempts"][0]["identity"]
        .as_str()
        .unwrap()
        .contains(&b.lab.bmc("node1").unwrap().guid_text()));
    // And back on.
    let out = b.fenced.fence_node(&["on", "node1", "--reason", "e2e"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(b.lab.bmc("node1").unwrap().power());
}

#[test]
fn stuck_bmc_is_not_fenced() {
    let b = bench(1, Opts::default());
    b.lab.bmc("node1").unwrap().set_fault(Fault::Stuck(true));
    let out = b.fenced.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT FENCED"), "{}", text(&out));
    assert!(
        b.lab.bmc("node1").unwrap().power(),
        "a stuck BMC leaves the node running"
    );
    let op = last_op(&b, "node1");
    assert_eq!(op["state"], "failed");
    assert_eq!(op["attempts"][0]["code"], "not_confirmed");
}

#[test]
fn bmc_that_stops_answering_mid_operation_is_not_fenced() {
    let b = bench(
        1,
        Opts {
            power_delay_ms: 1500,
            ..Opts::default()
        },
    );
    let bmc = b.lab.bmc("node1").unwrap().clone();
    let killer = std::thread::spawn(move || {
        // Let the command through, then the BMC dies before it can confirm anything.
        let until = Instant::now() + Duration::from_secs(10);
        while !bmc.power_changing() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        bmc.set_fault(Fault::Crash(true));
    });
    let out = b.fenced.fence_node(&["off", "node1"]);
    killer.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT FENCED"), "{}", text(&out));
    // The node did go off behind the dead BMC; we could not see it, so we must not claim it.
    let op = last_op(&b, "node1");
    assert_eq!(op["state"], "failed");
}

#[test]
fn wrong_password_is_not_fenced_and_says_why() {
    let b = bench(
        1,
        Opts {
            wrong_password: true,
            ..Opts::default()
        },
    );
    let out = b.fenced.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("NOT FENCED") && t.contains("password"), "{t}");
    assert!(b.lab.bmc("node1").unwrap().power());
}

#[test]
fn garbage_replies_are_not_fenced() {
    let b = bench(1, Opts::default());
    b.lab.bmc("node1").unwrap().set_fault(Fault::Garbage(true));
    let out = b.fenced.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT FENCED"));
    assert!(b.lab.bmc("node1").unwrap().power());
}

#[test]
fn wrong_system_guid_is_never_used_to_fence() {
    let b = bench(
        2,
        Opts {
            wrong_guid_for: Some("node1"),
            ..Opts::default()
        },
    );
    let out = b.fenced.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not control this node"),
        "{}",
        text(&out)
    );
    assert!(
        b.lab.bmc("node1").unwrap().power(),
        "nothing may be sent through a mis-mapped BMC"
    );
    let devs = b.fenced.json(&["devices"]);
    let d = devs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "bmc-node1")
        .unwrap();
    assert_eq!(d["health"], "unhealthy");
}

#[test]
fn reboot_whose_power_on_fails_is_fenced_but_did_not_come_back() {
    let b = bench(1, Opts::default());
    b.lab
        .bmc("node1")
        .unwrap()
        .set_fault(Fault::PowerOnFails(true));
    let out = b.fenced.fence_node(&["reboot", "node1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("did NOT come back"), "{t}");
    assert!(!b.lab.bmc("node1").unwrap().power());
}

#[test]
fn fenced_killed_mid_operation_is_recorded_interrupted_not_fenced() {
    let mut b = bench(
        1,
        Opts {
            power_delay_ms: 2500,
            ..Opts::default()
        },
    );
    let out = b.fenced.fence_node(&["off", "node1", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let until = Instant::now() + Duration::from_secs(10);
    while !b.lab.bmc("node1").unwrap().power_changing() {
        assert!(
            Instant::now() < until,
            "the off command never reached the BMC"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The command is out: the step was recorded before it was sent, so the running operation
    // already shows it as pending.
    let running = last_op(&b, "node1");
    assert_eq!(running["pending"][0]["device"], "bmc-node1", "{running}");
    assert_eq!(running["pending"][0]["command"], "power off", "{running}");
    b.fenced.restart(); // SIGKILL, then start again on the same history
    let op = last_op(&b, "node1");
    assert_eq!(op["state"], "failed", "{op}");
    assert_eq!(op["outcome"]["code"], "interrupted", "{op}");
    assert!(b.fenced.log().contains("interrupted"));
    // History says the power command may have gone out, to which device, and when.
    let step = &op["attempts"][0];
    assert_eq!(step["device"], "bmc-node1", "{op}");
    assert_eq!(step["code"], "interrupted", "{op}");
    let said = step["message"].as_str().unwrap();
    assert!(
        said.contains("power off may have been sent to bmc-node1 at 20"),
        "{said}"
    );
    assert!(
        op["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("power off may have been sent to bmc-node1"),
        "{op}"
    );
    assert!(op["pending"].is_null(), "nothing is left pending: {op}");
    // The interrupted record chains and verifies like every other.
    let out = b.fenced.fence_node(&["history", "--verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The target is not reported fenced anywhere.
    let st = b.fenced.json(&["status", "node1"]);
    assert_ne!(st["last_operation"]["state"], "succeeded", "{st}");
}
