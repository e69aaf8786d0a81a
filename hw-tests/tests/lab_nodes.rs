//! Lab nodes on a real kernel: network namespaces, a cgroup v2 group killed with
//! `cgroup.kill`, nftables partitions inside the nodes' namespaces only, private mounts, and
//! a simulated BMC whose power off (driven by ipmitool) really stops a node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ipmitool, password_file};
use drivers::Secret;
use hw_tests::lab::{BackgroundLab, LabSpec};
use hw_tests::node::{LabNet, LabNode, NodeError, NodeProcess, NodeSpec, Transition};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_palisade-workload");

/// Whether a process is gone or only a zombie (it runs nothing any more).
fn not_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn sleepers(node: &LabNode) -> NodeProcess {
    let child = node
        .spawn(
            Command::new("sh")
                .args(["-c", "sleep 1000 & sleep 1000 & wait"])
                .stdin(Stdio::null()),
        )
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while node.pids().len() < 3 {
        assert!(
            Instant::now() < until,
            "sleepers did not start: {:?}",
            node.pids()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Datagrams `hb NODE SEQ` received on `sock` within `span`.
fn received(sock: &UdpSocket, span: Duration) -> usize {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let until = Instant::now() + span;
    let mut n = 0;
    let mut buf = [0u8; 64];
    while Instant::now() < until {
        if sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

/// Drains what is queued, so counts start from now.
fn drain(sock: &UdpSocket) {
    sock.set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut buf = [0u8; 64];
    while sock.recv_from(&mut buf).is_ok() {}
}

fn host_ruleset() -> String {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn power_off_kills_everything_and_keeps_the_node_off_until_power_on() {
    let mut net = LabNet::new().unwrap();
    let node = net.add_node(NodeSpec::new("a")).unwrap();
    let mut child = sleepers(&node);
    let pids = node.pids();
    assert_eq!(node.power_off().unwrap(), Transition::Changed);
    assert!(node.pids().is_empty());
    for p in pids {
        assert!(not_running(p), "pid {p} survived the power off");
    }
    assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
    assert_eq!(node.power_off().unwrap(), Transition::Unchanged);
    let refused = node.spawn(&mut Command::new("true"));
    assert!(
        matches!(refused, Err(NodeError::PoweredOff(ref n)) if n == "a"),
        "{refused:?}"
    );
    assert_eq!(node.power_on().unwrap(), Transition::Changed);
    let st = node
        .spawn(&mut Command::new("true"))
        .unwrap()
        .wait()
        .unwrap();
    assert!(st.success());
}

#[test]
fn cut_off_node_keeps_running_but_reaches_nobody_and_heals() {
    let before = host_ruleset();
    let mut net = LabNet::new().unwrap();
    let a = net.add_node(NodeSpec::new("a")).unwrap();
    let b = net.add_node(NodeSpec::new("b")).unwrap();
    let at_b = b.bind_udp(7000).unwrap();
    let at_switch = net.bind_udp(7000).unwrap();
    let beat = |to: String| {
        a.spawn(
            Command::new(WORKLOAD)
                .args([
                    "heartbeat",
                    "--to",
                    &to,
                    "--node",
                    "a",
                    "--interval-ms",
                    "10",
                ])
                .stdin(Stdio::null()),
        )
        .unwrap()
    };
    let _to_b = beat(format!("{}:7000", b.addr()));
    let _to_switch = beat(format!("{}:7000", net.switch_addr()));
    assert!(
        received(&at_b, Duration::from_millis(500)) > 0,
        "a reaches b"
    );
    assert!(
        received(&at_switch, Duration::from_millis(300)) > 0,
        "a reaches the switch"
    );

    a.cut_off().unwrap();
    drain(&at_b);
    drain(&at_switch);
    assert_eq!(
        received(&at_b, Duration::from_millis(400)),
        0,
        "a is cut off from b"
    );
    assert_eq!(received(&at_switch, Duration::from_millis(100)), 0);
    assert_eq!(a.pids().len(), 2, "a's processes keep running");
    assert_eq!(
        before,
        host_ruleset(),
        "the host's ruleset is never touched"
    );

    // A partial partition: a loses b only.
    a.cut_off_from(&[b.addr()]).unwrap();
    drain(&at_b);
    drain(&at_switch);
    assert_eq!(received(&at_b, Duration::from_millis(300)), 0);
    assert!(received(&at_switch, Duration::from_millis(500)) > 0);

    a.heal().unwrap();
    a.heal().unwrap(); // idempotent
    assert!(received(&at_b, Duration::from_millis(500)) > 0, "healed");
    assert_eq!(before, host_ruleset());
}

#[test]
fn private_dirs_are_shared_by_a_nodes_processes_and_wiped_by_a_power_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let mut net = LabNet::new().unwrap();
    let mut spec = NodeSpec::new("a");
    spec.private_dirs = vec![dir.path().to_path_buf()];
    let node = net.add_node(spec).unwrap();
    let other = net.add_node(NodeSpec::new("b")).unwrap();
    let sh = |n: &LabNode, script: &str| {
        let out = n
            .spawn(
                Command::new("sh")
                    .args(["-c", script])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped()),
            )
            .unwrap()
            .wait_with_output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    sh(&node, &format!("echo on-a > {d}/f"));
    assert_eq!(
        sh(&node, &format!("cat {d}/f")),
        "on-a",
        "one mount namespace per node"
    );
    assert!(!dir.path().join("f").exists(), "the host does not see it");
    assert_eq!(
        sh(&other, &format!("cat {d}/f 2>/dev/null || echo none")),
        "none"
    );
    node.power_off().unwrap();
    node.power_on().unwrap();
    assert_eq!(
        sh(&node, &format!("cat {d}/f 2>/dev/null || echo none")),
        "none"
    );
}

#[test]
fn ipmi_power_off_through_the_lab_bmc_kills_the_lab_node() {
    let mut spec = LabSpec::new(2, "admin", Secret::new(b"lab-password".to_vec()));
    spec.power_on = true;
    let lab = BackgroundLab::start(spec).unwrap();
    let mut net = LabNet::new().unwrap();
    let n1 = net.add_node(NodeSpec::new("node1")).unwrap();
    let n2 = net.add_node(NodeSpec::new("node2")).unwrap();
    for b in lab.bmcs() {
        b.set_power_hook(Some(net.power_hook()));
    }
    let _s1 = sleepers(&n1);
    let _s2 = sleepers(&n2);
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), "lab-password");
    let port = lab.bmc("node1").unwrap().port();
    let r = ipmitool(port, "admin", &pw, 3, &["chassis", "power", "off"]);
    assert!(r.ok(), "{r:?}");
    assert!(
        !n1.is_on() && n1.pids().is_empty(),
        "node1 is off: {:?}",
        n1.pids()
    );
    assert_eq!(n2.pids().len(), 3, "node2 is untouched");
    assert!(matches!(
        n1.spawn(&mut Command::new("true")),
        Err(NodeError::PoweredOff(_))
    ));
    let r = ipmitool(port, "admin", &pw, 3, &["chassis", "power", "on"]);
    assert!(r.ok(), "{r:?}");
    assert!(n1.is_on());
    assert!(n1
        .spawn(&mut Command::new("true"))
        .unwrap()
        .wait()
        .unwrap()
        .success());
}

#[test]
fn dropping_the_lab_net_cleans_up_even_when_the_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let failing = std::thread::spawn(move || {
        let mut net = LabNet::new().unwrap();
        let mut spec = NodeSpec::new("a");
        spec.private_dirs = vec![std::env::temp_dir()];
        let a = net.add_node(spec).unwrap();
        let b = net.add_node(NodeSpec::new("b")).unwrap();
        // Forgotten, not dropped: only the lab net's own drop may stop these.
        std::mem::forget(sleepers(&a));
        std::mem::forget(sleepers(&b));
        a.cut_off().unwrap();
        let namespaces = vec![
            a.netns_name().to_string(),
            b.netns_name().to_string(),
            net.switch_netns_name().to_string(),
        ];
        let cgroups = vec![a.cgroup_path().to_path_buf(), b.cgroup_path().to_path_buf()];
        let pids: Vec<u32> = a.pids().into_iter().chain(b.pids()).collect();
        tx.send((namespaces, cgroups, pids)).unwrap();
        drop((a, b));
        panic!("a test failing with a lab net in scope");
    });
    assert!(failing.join().is_err(), "the thread panicked");
    let (namespaces, cgroups, pids) = rx.recv().unwrap();
    assert!(pids.len() >= 7, "{pids:?}"); // 2 x (sh + 2 sleeps) + the mount holder
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in &namespaces {
        assert!(!listed.contains(ns.as_str()), "namespace {ns} left behind");
        assert!(!std::path::Path::new("/run/netns").join(ns).exists());
    }
    for cg in &cgroups {
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    }
    for p in pids {
        assert!(not_running(p), "pid {p} left running");
    }
}
