//! A crash in the middle of a mass fence (issue 15): one `POST /v1/fence/batch` of many targets
//! against slow simulated BMCs (hw-tests' lab, real RMCP+ over loopback UDP), `fenced` killed
//! with SIGKILL as soon as the batch is accepted, then started again on the same history.
//! Every accepted operation must still be in history, and each must end honestly: failed
//! (interrupted, or another failure with its reason), or succeeded only where the BMC's own
//! event log shows the power went off and was then read back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{text, Fenced};
use drivers::Secret;
use hw_tests::lab::node::PowerEvent;
use hw_tests::lab::{BackgroundLab, EventKind, LabSpec};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const PASSWORD: &str = "lab-password";

/// Targets in the batch.
const TARGETS: usize = 50;

/// IPMI v2.0 §28.2: Get Chassis Status is NetFn Chassis (0x00), command 0x01; the only
/// command that reads the power state back.
const NETFN_CHASSIS: u8 = 0x00;
const GET_CHASSIS_STATUS: u8 = 0x01;
/// §28.3: Chassis Control, the power command itself.
const CHASSIS_CONTROL: u8 = 0x02;

/// Whether the BMC's event log shows the power going off and a successful Get Chassis Status
/// answered after it: the read-back a `succeeded` outcome claims.
fn log_shows_off_read_back(events: &[hw_tests::lab::Event]) -> bool {
    let Some(off) = events
        .iter()
        .position(|e| e.kind == EventKind::Power(PowerEvent::Off))
    else {
        return false;
    };
    events[off + 1..].iter().any(|e| {
        e.kind
            == EventKind::Command {
                net_fn: NETFN_CHASSIS,
                cmd: GET_CHASSIS_STATUS,
                completion_code: 0,
            }
    })
}

#[test]
fn fenced_killed_right_after_a_batch_loses_no_operation_and_claims_nothing_unseen() {
    let spec = LabSpec::new(TARGETS, "admin", Secret::new(PASSWORD.as_bytes().to_vec()));
    let lab = BackgroundLab::start(spec).unwrap();
    // Slow BMCs, each a little slower than the last (0 to ~3 s): when the kill comes some
    // operations may be done, most have their power command out or not yet sent.
    for (i, b) in lab.bmcs().iter().enumerate() {
        b.set_power_delay(Duration::from_millis(60 * i as u64));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pw = common::process::secret_file(dir, "pw", PASSWORD);
    let mut cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[api]\nmax_connections = 1024\n\n\
         [limits]\nwindow_s = 3600\nmax_operations = 1000\nmax_operations_per_target = 5\n\n\
         [defaults]\nattempt_timeout_s = 8\ntotal_timeout_s = 20\n\n",
        dir.join("fenced.sock"),
        dir.join("history.redb")
    );
    for b in lab.bmcs() {
        let _ = write!(
            cfg,
            "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = {pw:?}\ncipher_suite = 17\ntimeout_ms = 500\nretries = 1\n\n[targets.{n}]\nlevels = [[\"bmc-{n}\"]]\nidentities = {{ bmc-{n} = \"{g}\" }}\n\n",
            n = b.name(),
            a = b.addr(),
            g = b.guid_text(),
        );
    }
    let config = dir.join("fenced.toml");
    std::fs::write(&config, cfg).unwrap();
    let mut fenced = Fenced::start(dir, &config);

    // One batch (fence_node sends several targets as one POST /v1/fence/batch), not waited for.
    let names: Vec<String> = lab.bmcs().iter().map(|b| b.name().to_string()).collect();
    let mut args = vec!["off"];
    args.extend(names.iter().map(String::as_str));
    args.extend(["--no-wait", "--reason", "mass crash test", "--json"]);
    let out = fenced.fence_node(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The answer came. Kill once the fastest BMCs are off (so the daemon may or may not have
    // read them back yet) while the slow ones are still mid-operation.
    let until = Instant::now() + Duration::from_secs(10);
    while lab.bmcs().iter().filter(|b| !b.power()).count() < 3 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    fenced.kill9();
    let still_changing = lab.bmcs().iter().filter(|b| b.power_changing()).count();
    let answer: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let mut accepted: HashMap<String, u64> = HashMap::new();
    for r in answer["results"].as_array().unwrap() {
        let id = r
            .pointer("/accepted/id")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("every entry is accepted: {r}"));
        accepted.insert(r["target"].as_str().unwrap().to_string(), id);
    }
    assert_eq!(accepted.len(), TARGETS, "{answer}");
    let ids: HashSet<u64> = accepted.values().copied().collect();
    assert_eq!(ids.len(), TARGETS, "one operation per target: {answer}");

    // Same history, new daemon: what it says about each operation is all an operator has.
    fenced.restart();
    let (mut succeeded, mut interrupted, mut other_failures) = (0, 0, 0);
    for b in lab.bmcs() {
        let name = b.name();
        let id = accepted[name];
        let hist = fenced.json(&["history", name]);
        let op = hist
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"].as_u64() == Some(id))
            .unwrap_or_else(|| panic!("accepted operation {id} of {name} is lost: {hist}"));
        let events = b.events();
        match op["state"].as_str() {
            Some("succeeded") => {
                assert_eq!(
                    op["outcome"]["confirmation"]["method"], "power_read_back",
                    "{op}"
                );
                assert!(
                    log_shows_off_read_back(&events),
                    "{name} is recorded fenced but its BMC never read back off: {op}\n{events:#?}"
                );
                assert!(!b.power(), "{name} recorded fenced and still on: {op}");
                succeeded += 1;
            }
            Some("failed") => {
                let msg = op["outcome"]["message"].as_str().unwrap_or("");
                assert!(!msg.is_empty(), "a failure says why: {op}");
                if op["outcome"]["code"] == "interrupted" {
                    let sent = events.iter().any(|e| {
                        matches!(
                            e.kind,
                            EventKind::Command {
                                net_fn: NETFN_CHASSIS,
                                cmd: CHASSIS_CONTROL,
                                ..
                            }
                        )
                    });
                    // A BMC that received the power command: history must say it may have gone
                    // out (the step was recorded before it was sent), never that nothing did.
                    if sent {
                        assert!(
                            msg.contains(&format!("power off may have been sent to bmc-{name}")),
                            "{op}"
                        );
                    }
                    interrupted += 1;
                } else {
                    other_failures += 1;
                }
            }
            other => panic!("{name}: after the restart operation {id} is {other:?}: {op}"),
        }
        assert!(op["pending"].is_null(), "nothing is left pending: {op}");
        let st = fenced.json(&["status", name]);
        if st["last_operation"]["state"] == "succeeded" {
            assert!(log_shows_off_read_back(&events), "{name}: {st}");
        }
    }
    assert_eq!(succeeded + interrupted + other_failures, TARGETS);
    assert!(
        interrupted > 0,
        "the kill came while operations ran, so some must be interrupted \
         ({succeeded} succeeded, {other_failures} other failures)"
    );
    assert!(fenced.log().contains("interrupted"), "{}", fenced.log());
    // Every record, the interrupted ones included, chains and verifies.
    let out = fenced.fence_node(&["history", "--verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    eprintln!(
        "{TARGETS} accepted: {succeeded} succeeded by read-back, {interrupted} interrupted, \
         {other_failures} failed otherwise; {still_changing} BMCs were mid power change at the kill"
    );
}
