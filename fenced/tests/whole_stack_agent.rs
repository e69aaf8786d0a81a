//! Device kind `agent` through the whole stack: `fence_node` -> the `fenced` daemon process ->
//! a real ClusterLabs fence agent process -> a device. `fence_ipmilan` (Debian fence-agents)
//! drives the lab's simulated BMC over real RMCP+; a fixture agent hangs, lies and prints
//! garbage, and each of those must end "NOT FENCED" with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{secret_file, text, Fenced};
use drivers::Secret;
use hw_tests::lab::{BackgroundLab, Fault, LabSpec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PASSWORD: &str = "lab-password";
const FENCE_IPMILAN: &str = "/usr/sbin/fence_ipmilan";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fence_fixture")
}

fn password_file(dir: &Path) -> PathBuf {
    secret_file(dir, "pw", PASSWORD)
}

fn write_config(dir: &Path, device: &str) -> PathBuf {
    let cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 90\ntotal_timeout_s = 180\n\n{device}\n[targets.node1]\nlevels = [[\"dev\"]]\n",
        dir.join("fenced.sock"),
        dir.join("history.redb")
    );
    let config = dir.join("fenced.toml");
    std::fs::write(&config, cfg).unwrap();
    config
}

fn last_op(f: &Fenced) -> Value {
    let h = f.json(&["history", "node1"]);
    h.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("no history: {h}"))
}

fn ipmilan_device(dir: &Path, port: u16, extra: &str) -> String {
    format!(
        "[devices.dev]\nkind = \"agent\"\nagent = \"{FENCE_IPMILAN}\"\npassword_file = {:?}\ntimeout_ms = 60000\noptions = {{ ip = \"127.0.0.1\", ipport = {port}, username = \"admin\", lanplus = 1, cipher = 3, power_wait = 0{extra} }}\n",
        password_file(dir)
    )
}

#[test]
fn fence_ipmilan_off_is_confirmed_by_its_status_and_the_engine() {
    let lab = BackgroundLab::start(LabSpec::new(1, "admin", Secret::new(PASSWORD.into()))).unwrap();
    let bmc = &lab.bmcs()[0];
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &ipmilan_device(tmp.path(), bmc.port(), ""));
    let f = Fenced::start(tmp.path(), &config);

    let out = f.fence_node(&["off", "node1", "--reason", "agent e2e"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), f.log());
    assert!(text(&out).contains("node1 FENCED"), "{}", text(&out));
    assert!(!bmc.power(), "the simulated node must really be off");
    let op = last_op(&f);
    assert_eq!(
        op["outcome"]["confirmation"]["method"], "power_read_back",
        "{op}"
    );

    let out = f.fence_node(&["on", "node1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(bmc.power());

    // fence_ipmilan hands the password to ipmitool's argv: `fence_node devices` says so.
    let out = f.fence_node(&["devices"]);
    let t = text(&out);
    assert!(
        t.contains("WARNING: device dev: fence_ipmilan passes the password on the command line of ipmitool -P"),
        "{t}"
    );
    let d = f.json(&["devices"]);
    assert!(
        d[0]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("/proc/PID/cmdline"),
        "{d}"
    );
    // The agent's monitor action is the device health check.
    let out = f.fence_node(&["devices", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("healthy"), "{}", text(&out));
}

#[test]
fn fence_ipmilan_against_a_stuck_bmc_is_not_fenced() {
    let lab = BackgroundLab::start(LabSpec::new(1, "admin", Secret::new(PASSWORD.into()))).unwrap();
    let bmc = &lab.bmcs()[0];
    bmc.set_fault(Fault::Stuck(true));
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(
        tmp.path(),
        &ipmilan_device(tmp.path(), bmc.port(), ", power_timeout = 2"),
    );
    let f = Fenced::start(tmp.path(), &config);
    let out = f.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT FENCED"), "{}", text(&out));
    assert!(bmc.power());
    let op = last_op(&f);
    assert_eq!(op["state"], "failed", "{op}");
    // The agent's own words (exit 1, "Timed out waiting to power OFF") are in the history.
    assert!(
        op.to_string().contains("Timed out waiting to power OFF"),
        "{op}"
    );
    assert!(!op.to_string().contains(PASSWORD), "{op}");
}

fn fixture_device(dir: &Path, mode: &str, extra: &str) -> String {
    format!(
        "[devices.dev]\nkind = \"agent\"\nagent = {:?}\npassword_file = {:?}\noptions = {{ mode = \"{mode}\", state_file = {:?} }}\n{extra}\n",
        fixture(),
        password_file(dir),
        dir.join("power")
    )
}

#[test]
fn fixture_agent_honest_then_its_off_confirmed() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &fixture_device(tmp.path(), "honest", ""));
    let f = Fenced::start(tmp.path(), &config);
    let out = f.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("power"))
            .unwrap()
            .trim(),
        "off"
    );
    // The fixture is not ipmitool-based: no warning.
    assert!(f.json(&["devices"])[0].get("warnings").is_none());
}

#[test]
fn hanging_agent_is_killed_with_its_process_group_at_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    // PCMK_service makes real agents disable their own timeouts: our deadline must hold.
    let config = write_config(
        tmp.path(),
        &fixture_device(
            tmp.path(),
            "hang",
            "timeout_ms = 1500\nenvironment = { PCMK_service = \"pacemaker-fenced\" }",
        ),
    );
    let f = Fenced::start(tmp.path(), &config);
    let started = Instant::now();
    let out = f.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT FENCED"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(60));
    let op = last_op(&f);
    let s = op.to_string();
    assert!(s.contains("process group was killed"), "{op}");
    assert!(s.contains("PCMK_service=pacemaker-fenced"), "{op}");
    // The grandchild that held the agent's pipes is gone too.
    let child: i32 = std::fs::read_to_string(tmp.path().join("power.child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        // Gone, or a zombie awaiting its reaper: either way no longer running.
        if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')) {
            break;
        }
        assert!(
            Instant::now() < until,
            "agent grandchild {child} still runs: {stat}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lying_agent_off_exit_0_but_status_on_is_not_fenced() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &fixture_device(tmp.path(), "lie", ""));
    let f = Fenced::start(tmp.path(), &config);
    let out = f.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT FENCED"), "{}", text(&out));
    let op = last_op(&f);
    assert!(
        op.to_string()
            .contains("exited 0 for off, but its status then answered ON"),
        "{op}"
    );
}

#[test]
fn garbage_agent_fails_with_its_scrubbed_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &fixture_device(tmp.path(), "garbage", ""));
    let f = Fenced::start(tmp.path(), &config);
    let out = f.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let op = last_op(&f);
    let s = op.to_string();
    assert!(s.contains("exited with 77"), "{op}");
    assert!(s.contains("login with password *** failed"), "{op}");
    assert!(
        !s.contains(PASSWORD),
        "the password leaked into history: {op}"
    );
    assert!(
        !f.log().contains(PASSWORD),
        "the password leaked into the log"
    );
}

#[test]
fn misspelt_agent_option_stops_the_daemon_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = format!(
        "[devices.dev]\nkind = \"agent\"\nagent = \"{FENCE_IPMILAN}\"\npassword_file = {:?}\noptions = {{ ip = \"127.0.0.1\", lanplsu = 1 }}\n",
        password_file(tmp.path())
    );
    let config = write_config(tmp.path(), &dev);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenced"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("option `lanplsu` is not a parameter of fence_ipmilan"),
        "{t}"
    );
    // A missing agent (cts-fencing's fence_missing_agent) stops the daemon too, naming it.
    let config = write_config(
        tmp.path(),
        "[devices.dev]\nkind = \"agent\"\nagent = \"/nonexistent/fence_missing\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenced"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot run agent /nonexistent/fence_missing"),
        "{}",
        text(&out)
    );
    // Passwords belong in files, never in options.
    let dev = format!(
        "[devices.dev]\nkind = \"agent\"\nagent = \"{FENCE_IPMILAN}\"\noptions = {{ password = \"x\" }}\n"
    );
    let config = write_config(tmp.path(), &dev);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenced"))
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("passwords go in password_file"),
        "{}",
        text(&out)
    );
}
