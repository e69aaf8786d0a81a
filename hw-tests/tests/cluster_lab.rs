//! The cluster lab on a real kernel with a real Corosync 3: membership and quorum as
//! `corosync-quorumtool` reports them inside each node, partitions with nftables in the
//! nodes' own namespaces, power off killing the whole node, two-node votequorum, CPG, and
//! nothing left behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::cluster::{ClusterLab, ClusterSpec, FORM_WAIT};
use hw_tests::require;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Whether the machine has what the cluster lab needs (else the test fails, or skips when
/// allowed).
fn have_corosync() -> bool {
    require::needs_command("corosync", "Debian package corosync")
        && require::needs_command("corosync-quorumtool", "Debian package corosync")
        && require::needs_command("nft", "Debian package nftables")
        && require::needs(
            "root",
            "running the tests as root (namespaces, cgroups, mounts)",
            if unsafe { libc::geteuid() } == 0 {
                Ok(())
            } else {
                Err("not root".into())
            },
        )
}

/// Whether a process is gone or only a zombie.
fn not_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn three_nodes_form_one_quorate_membership() {
    if !have_corosync() {
        return;
    }
    let lab = ClusterLab::new(3).unwrap();
    for n in lab.nodes() {
        let st = n.status().unwrap();
        assert!(st.quorate, "{}: {st:?}", n.name());
        assert_eq!(st.members, vec![1, 2, 3], "{}", n.name());
        assert_eq!((st.expected_votes, st.total_votes, st.quorum), (3, 3, 2));
        // The node's own tools see only the node's processes (its PID namespace).
        let out = n
            .run(
                Command::new("sh").args(["-c", "ls /proc | grep -c '^[0-9]'"]),
                WAIT,
            )
            .unwrap();
        let count: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(count < 10, "{} sees {count} processes", n.name());
        // corosync-cfgtool agrees: the knet links to both other nodes are connected.
        let out = n
            .run(Command::new("corosync-cfgtool").arg("-s"), WAIT)
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let connected = text
            .lines()
            .filter(|l| l.trim_end().ends_with("\tconnected"))
            .count();
        assert_eq!(connected, 2, "{}: {text}", n.name());
    }
}

#[test]
fn a_partition_leaves_the_majority_quorate_and_heal_rejoins() {
    if !have_corosync() {
        return;
    }
    let lab = ClusterLab::new(3).unwrap();
    lab.partition(&[&["node1"], &["node2", "node3"]]).unwrap();
    lab.wait_converged(WAIT).unwrap();
    let a = lab.status("node1").unwrap();
    assert!(!a.quorate, "node1 alone must not be quorate: {a:?}");
    assert_eq!(a.members, vec![1]);
    for b in ["node2", "node3"] {
        let st = lab.status(b).unwrap();
        assert!(st.quorate, "{b}: {st:?}");
        assert_eq!(st.members, vec![2, 3], "{b}");
    }
    lab.heal_all().unwrap();
    lab.wait_quorate_all(FORM_WAIT).unwrap();
}

#[test]
fn power_off_kills_the_whole_node_and_power_on_rejoins() {
    if !have_corosync() {
        return;
    }
    let lab = ClusterLab::new(3).unwrap();
    let a = lab.node("node1").unwrap().clone();
    lab.add_daemon(
        "node1",
        "sleeper",
        Box::new(|n| n.spawn(Command::new("sleep").arg("1000"))),
    )
    .unwrap();
    let corosync = a.corosync_pid().unwrap();
    let mut pids = a.lab_node().pids();
    assert!(pids.contains(&corosync) && pids.len() >= 3, "{pids:?}");
    pids.extend(lab.daemon_pids("node1").unwrap().iter().map(|d| d.1));
    lab.power_off("node1").unwrap();
    assert!(pids.iter().all(|&p| not_running(p)), "{pids:?} survived");
    assert!(a.lab_node().pids().is_empty());
    lab.wait_converged(WAIT).unwrap();
    for b in ["node2", "node3"] {
        let st = lab.status(b).unwrap();
        assert!(st.quorate && st.members == vec![2, 3], "{b}: {st:?}");
    }
    let started = Instant::now();
    lab.power_on("node1").unwrap();
    lab.wait_quorate_all(WAIT).unwrap();
    assert_ne!(a.corosync_pid(), Some(corosync));
    assert_eq!(lab.daemon_pids("node1").unwrap().len(), 1);
    eprintln!("node1 rejoined {:?} after power on", started.elapsed());
}

#[test]
fn two_node_with_wait_for_all_as_votequorum_documents() {
    if !have_corosync() {
        return;
    }
    // votequorum(5): with two_node one vote is quorum, so a survivor stays quorate...
    let lab = ClusterLab::with_spec(ClusterSpec::new(2)).unwrap();
    let st = lab.status("node1").unwrap();
    assert!(
        st.flags.contains("2Node") && st.flags.contains("WaitForAll"),
        "{st:?}"
    );
    lab.power_off("node2").unwrap();
    lab.wait_converged(WAIT).unwrap();
    let st = lab.status("node1").unwrap();
    assert!(st.quorate && st.members == vec![1], "{st:?}");
    // ...but wait_for_all: after a start, a node alone is not quorate until it saw the other.
    lab.power_off("node1").unwrap();
    let n1 = lab.node("node1").unwrap();
    lab.power_hook()("node1", hw_tests::lab::node::PowerEvent::On);
    lab.wait_converged(WAIT).unwrap();
    let st = n1.status().unwrap();
    assert!(!st.quorate && st.members == vec![1], "{st:?}");
    lab.power_on("node2").unwrap();
    lab.wait_quorate_all(WAIT).unwrap();
}

#[test]
fn nothing_is_left_after_drop() {
    if !have_corosync() {
        return;
    }
    let lab = ClusterLab::new(3).unwrap();
    let mut pids: Vec<u32> = Vec::new();
    let mut names = Vec::new();
    let mut cgroups = Vec::new();
    for n in lab.nodes() {
        pids.extend(n.lab_node().pids());
        names.push(n.lab_node().netns_name().to_string());
        cgroups.push(n.lab_node().cgroup_path().to_path_buf());
    }
    names.push(lab.net().switch_netns_name().to_string());
    drop(lab);
    assert!(pids.iter().all(|&p| not_running(p)), "{pids:?}");
    for n in &names {
        assert!(!std::path::Path::new("/run/netns").join(n).exists(), "{n}");
    }
    assert!(cgroups.iter().all(|c| !c.exists()), "{cgroups:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.lines().any(|l| l.contains(" /etc/corosync ")),
        "a lab mount reached the host"
    );
}
