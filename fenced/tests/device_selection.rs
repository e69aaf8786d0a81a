//! Pacemaker-parity device selection through the whole stack (`fence_node` -> `fenced` ->
//! the fixture fence agent): host maps, host lists, dynamic lists, a concurrency limit and a
//! per-device monitor interval. The checklist is Pacemaker's cts-fencing; README.md says which
//! of its scenarios apply here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{text, Fenced};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fence_fixture")
}

/// A config with one fixture device (`mode`, plus `device_extra` lines) and `targets`.
fn config(dir: &Path, mode: &str, device_extra: &str, targets: &str) -> PathBuf {
    let cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 20\ntotal_timeout_s = 40\n\n[devices.pdu]\nkind = \"agent\"\nagent = {:?}\noptions = {{ mode = \"{mode}\", state_file = {:?} }}\n{device_extra}\n\n{targets}\n",
        dir.join("fenced.sock"),
        dir.join("history.redb"),
        fixture(),
        dir.join("power"),
    );
    let p = dir.join("fenced.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn power(dir: &Path, plug: &str) -> String {
    std::fs::read_to_string(dir.join(format!("power.{plug}")))
        .unwrap_or_else(|_| "on".into())
        .trim()
        .to_string()
}

const TWO_TARGETS: &str =
    "[targets.node1]\nlevels = [[\"pdu\"]]\n\n[targets.node2]\nlevels = [[\"pdu\"]]\n";

#[test]
fn host_map_gives_each_target_its_plug() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = config(
        d,
        "honest",
        "host_map = { node1 = \"1\", node2 = \"2\" }",
        TWO_TARGETS,
    );
    let f = Fenced::start(d, &cfg);
    let out = f.fence_node(&["off", "node2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(power(d, "2"), "off");
    assert_eq!(power(d, "1"), "on", "the other node's plug is untouched");
    let t = f.json(&["status", "node2"]);
    assert_eq!(t["levels"][0][0]["port"], "2", "{t}");
}

#[test]
fn host_list_refuses_a_target_the_device_may_not_fence() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "honest", "host_list = [\"node1\"]", TWO_TARGETS);
    let out = Command::new(env!("CARGO_BIN_EXE_fenced"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("device `pdu` may not fence `node2`: its host_list is [node1]"),
        "{}",
        text(&out)
    );
}

#[test]
fn dynamic_list_finds_the_plug_by_name_and_refuses_an_unlisted_target() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let targets = format!("{TWO_TARGETS}\n[targets.node3]\nlevels = [[\"pdu\"]]\n");
    let cfg = config(d, "honest", "host_check = \"dynamic-list\"", &targets);
    let f = Fenced::start(d, &cfg);
    // The fixture's `list` prints `1,node1` and `2,node2`.
    let out = f.fence_node(&["off", "node2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(power(d, "2"), "off");
    assert_eq!(power(d, "1"), "on");
    // node3 is not on the device: never guess a plug, fail with the reason.
    let out = f.fence_node(&["off", "node3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("NOT FENCED") && t.contains("no port or outlet `node3`"),
        "{t}"
    );
}

#[test]
fn status_check_lets_the_device_status_decide() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let targets = format!("{TWO_TARGETS}\n[targets.node3]\nlevels = [[\"pdu\"]]\n");
    let cfg = config(d, "honest", "host_check = \"status\"", &targets);
    let f = Fenced::start(d, &cfg);
    // The target's name is the plug; the fixture knows node1 and node2.
    let out = f.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(power(d, "node1"), "off");
    // Its status fails for node3: nothing is switched, and the reason is the device's.
    let out = f.fence_node(&["off", "node3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("NOT FENCED") && t.contains("plug is not available"),
        "{t}"
    );
    let log = std::fs::read_to_string(d.join("power.log")).unwrap();
    assert!(
        !log.contains("off node3"),
        "a command was sent to a plug whose status failed:\n{log}"
    );
}

#[test]
fn max_concurrent_1_serialises_calls_to_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = config(
        d,
        "slow",
        "host_map = { node1 = \"1\", node2 = \"2\" }\nmax_concurrent = 1",
        TWO_TARGETS,
    );
    let f = Fenced::start(d, &cfg);
    let spawn = |node: &str| {
        Command::new(env!("CARGO_BIN_EXE_fence_node"))
            .args(["off", node])
            .env("PALISADE_SOCKET", f.socket())
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("node1").unwrap());
        let b = s.spawn(|| spawn("node2").unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let log = std::fs::read_to_string(d.join("power.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let plugs: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(3)).collect();
    assert!(plugs.contains(&"1") && plugs.contains(&"2"), "{log}");
    // Never two agent runs at once: every start is followed by its own end.
    for pair in lines.chunks(2) {
        let (s, e) = (pair[0], pair.get(1).copied().unwrap_or(""));
        assert!(
            s.starts_with("start ") && e.starts_with("end ") && s[6..] == e[4..],
            "overlapping calls:\n{log}"
        );
    }
}

#[test]
fn monitor_interval_updates_health_in_fence_node_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = config(d, "honest", "monitor_interval_s = 1", TWO_TARGETS);
    let f = Fenced::start(d, &cfg);
    let wait_for = |want: &str| {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let v = f.json(&["devices"]);
            if v[0]["health"] == want {
                return v;
            }
            assert!(Instant::now() < until, "device never became {want}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("healthy");
    // Break it (the fixture's monitor then fails) without anyone asking for a check.
    std::fs::write(d.join("power.broken"), "").unwrap();
    let v = wait_for("unhealthy");
    assert!(v[0]["error"].as_str().unwrap().contains("test knob"), "{v}");
    let out = f.fence_node(&["devices"]);
    assert!(text(&out).contains("UNHEALTHY"), "{}", text(&out));
    std::fs::remove_file(d.join("power.broken")).unwrap();
    wait_for("healthy");
}
