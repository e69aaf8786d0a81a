//! Lie tests through the whole stack for Redfish: the `fence_node` binary -> the `fenced`
//! daemon process -> the Redfish driver over HTTPS -> hw-tests' Redfish lab BMC. Each fault
//! ends in the honest outcome within the target's deadline: "NOT FENCED" with the reason,
//! never a success. The last test is the 50-target figure (peak RSS, time to all confirmed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{secret_file, text, Fenced};
use drivers::Secret;
use hw_tests::lab::redfish::{RedfishLab, RedfishLabSpec};
use hw_tests::lab::Fault;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "lab-password";

/// The lab on its own runtime, so the tests stay synchronous like the IPMI ones.
struct Bench {
    lab: RedfishLab,
    _rt: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
    fenced: Fenced,
}

#[derive(Default)]
struct Opts {
    nodes: usize,
    systems: usize,
    power_delay_ms: u64,
    wrong_uuid_for: Option<&'static str>,
    total_timeout_s: Option<u64>,
    /// Trust this CA file instead of the lab's (a certificate mismatch).
    ca_override: Option<PathBuf>,
}

fn bench(opts: Opts) -> Bench {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut spec = RedfishLabSpec::new(opts.nodes.max(1), "admin", Secret::new(PASSWORD.into()));
    spec.systems = opts.systems.max(1);
    spec.power_delay = Duration::from_millis(opts.power_delay_ms);
    let lab = rt.block_on(RedfishLab::start(spec)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pw = secret_file(dir, "pw", PASSWORD);
    let mut cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 3\ntotal_timeout_s = {}\n\n[limits]\nmax_operations = 200\nmax_operations_per_target = 50\n\n",
        dir.join("fenced.sock"),
        dir.join("history.redb"),
        opts.total_timeout_s.unwrap_or(8)
    );
    for b in lab.bmcs() {
        let uuid = if opts.wrong_uuid_for == Some(b.name()) {
            "00000000-0000-4000-8000-00000000dead".to_string()
        } else {
            b.uuid(1).unwrap()
        };
        cfg.push_str(&format!(
            "[devices.rf-{n}]\nkind = \"redfish\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = {pw:?}\nca_file = {ca:?}\ntimeout_ms = 1000\nconnect_timeout_ms = 1000\ntotal_timeout_ms = 2500\n\n[targets.{n}]\nlevels = [[\"rf-{n}\"]]\nidentities = {{ rf-{n} = \"{uuid}\" }}\n\n",
            n = b.name(),
            a = b.url(),
            ca = opts.ca_override.as_deref().unwrap_or(lab.ca_path()),
        ));
    }
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

/// Fences `node`, expecting NOT FENCED within `within`, and returns the output text.
fn not_fenced(b: &Bench, node: &str, within: Duration) -> String {
    let t = Instant::now();
    let out = b.fenced.fence_node(&["off", node, "--reason", "lie test"]);
    let took = t.elapsed();
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("NOT FENCED"), "{s}");
    assert!(took < within, "took {took:?}: {s}");
    assert_eq!(b.fenced.last_op(node)["state"], "failed");
    s
}

#[test]
fn honest_redfish_bmc_is_fenced_and_confirmed_by_read_back() {
    let b = bench(Opts {
        nodes: 2,
        power_delay_ms: 150,
        ..Opts::default()
    });
    let out = b.fenced.fence_node(&["off", "node1", "--reason", "e2e"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("FENCED") && !t.contains("NOT FENCED"), "{t}");
    assert!(!b.lab.bmc("node1").unwrap().power());
    assert!(
        b.lab.bmc("node2").unwrap().power(),
        "the other node is untouched"
    );
    let op = b.fenced.last_op("node1");
    assert_eq!(op["outcome"]["confirmation"]["method"], "power_read_back");
    assert!(op["attempts"][0]["identity"]
        .as_str()
        .unwrap()
        .contains(&b.lab.bmc("node1").unwrap().uuid(1).unwrap()));
    let out = b.fenced.fence_node(&["on", "node1", "--reason", "e2e"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(b.lab.bmc("node1").unwrap().power());
    let devs = b.fenced.json(&["devices", "--check"]);
    assert!(
        devs.as_array()
            .unwrap()
            .iter()
            .all(|d| d["health"] == "healthy"),
        "{devs}"
    );
}

#[test]
fn stuck_redfish_bmc_is_not_fenced() {
    let b = bench(Opts {
        nodes: 1,
        ..Opts::default()
    });
    b.lab.bmc("node1").unwrap().set_fault(Fault::Stuck(true));
    not_fenced(&b, "node1", Duration::from_secs(10));
    assert!(b.lab.bmc("node1").unwrap().power());
}

#[test]
fn endless_task_and_500_are_not_fenced() {
    let b = bench(Opts {
        nodes: 2,
        ..Opts::default()
    });
    b.lab
        .bmc("node1")
        .unwrap()
        .set_fault(Fault::EndlessTask(true));
    b.lab
        .bmc("node2")
        .unwrap()
        .set_fault(Fault::ServerError(true));
    // The task is still running when the driver's total timeout (2.5 s) ends the attempt.
    not_fenced(&b, "node1", Duration::from_secs(10));
    let s = not_fenced(&b, "node2", Duration::from_secs(10));
    assert!(s.contains("500"), "{s}");
}

#[test]
fn power_state_null_is_not_off() {
    let b = bench(Opts {
        nodes: 1,
        ..Opts::default()
    });
    b.lab
        .bmc("node1")
        .unwrap()
        .set_fault(Fault::PowerStateNull(true));
    not_fenced(&b, "node1", Duration::from_secs(10));
}

#[test]
fn a_server_that_never_answers_is_not_fenced_within_the_deadline() {
    let b = bench(Opts {
        nodes: 1,
        ..Opts::default()
    });
    b.lab.bmc("node1").unwrap().set_fault(Fault::Silent(true));
    not_fenced(&b, "node1", Duration::from_secs(10));
}

#[test]
fn wrong_uuid_is_never_used_to_fence() {
    let b = bench(Opts {
        nodes: 2,
        wrong_uuid_for: Some("node1"),
        ..Opts::default()
    });
    let s = not_fenced(&b, "node1", Duration::from_secs(10));
    assert!(s.contains("does not control this node"), "{s}");
    assert!(
        b.lab.bmc("node1").unwrap().power(),
        "nothing may be sent through a mis-mapped BMC"
    );
}

#[test]
fn several_systems_without_system_id_are_not_fenced() {
    let b = bench(Opts {
        nodes: 1,
        systems: 2,
        ..Opts::default()
    });
    let s = not_fenced(&b, "node1", Duration::from_secs(10));
    assert!(s.contains("system_id"), "{s}");
    let bmc = b.lab.bmc("node1").unwrap();
    assert_eq!(
        (bmc.system_power(1), bmc.system_power(2)),
        (Some(true), Some(true))
    );
}

#[test]
fn tls_certificate_mismatch_is_not_fenced() {
    // Another lab's CA: the BMC's certificate is not the configured one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let other = rt
        .block_on(RedfishLab::start(RedfishLabSpec::new(
            1,
            "admin",
            Secret::new(PASSWORD.into()),
        )))
        .unwrap();
    let b = bench(Opts {
        nodes: 1,
        ca_override: Some(other.ca_path().to_path_buf()),
        ..Opts::default()
    });
    let s = not_fenced(&b, "node1", Duration::from_secs(10));
    assert!(s.contains("certificate"), "{s}");
    assert!(b.lab.bmc("node1").unwrap().power());
}

#[test]
fn a_session_expired_mid_operation_is_renewed_once_and_fenced() {
    let b = bench(Opts {
        nodes: 1,
        power_delay_ms: 300,
        ..Opts::default()
    });
    let bmc = b.lab.bmc("node1").unwrap().clone();
    let expirer = std::thread::spawn(move || {
        // Once the reset is in, the BMC forgets every session while the engine polls.
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if bmc.events().iter().any(|e| matches!(&e.kind, hw_tests::lab::EventKind::Http { method, path, .. } if method == "POST" && path.ends_with("ComputerSystem.Reset"))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bmc.expire_sessions();
    });
    let out = b.fenced.fence_node(&["off", "node1", "--reason", "expiry"]);
    expirer.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!b.lab.bmc("node1").unwrap().power());
    let opened = b
        .lab
        .bmc("node1")
        .unwrap()
        .events()
        .iter()
        .filter(|e| matches!(e.kind, hw_tests::lab::EventKind::SessionOpened { .. }))
        .count();
    assert!(opened >= 2, "a new session was opened after the expiry");
}

fn vm(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The figure: one fenced fences 50 Redfish targets at once (50 `fence_node off` processes
/// started together); all must end confirmed off. Prints the time until all are confirmed
/// and fenced's peak RSS (VmHWM).
#[test]
fn fifty_redfish_targets_fenced_at_once() {
    let b = bench(Opts {
        nodes: 50,
        power_delay_ms: 100,
        total_timeout_s: Some(30),
        ..Opts::default()
    });
    let pid = b.fenced.pid().unwrap();
    let idle = vm(pid, "VmRSS:");
    let t = Instant::now();
    let children: Vec<Child> = (1..=50)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_fence_node"))
                .args(["off", &format!("node{i}"), "--reason", "fifty"])
                .env("PALISADE_SOCKET", b.fenced.socket())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let all = t.elapsed();
    assert!(b.lab.bmcs().iter().all(|bmc| !bmc.power()));
    let peak = vm(pid, "VmHWM:");
    eprintln!(
        "FIGURE 50 Redfish targets at once: all confirmed off after {all:?} (power delay 100 ms); fenced VmRSS before {idle} kB, peak VmHWM {peak} kB ({} build)",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}
