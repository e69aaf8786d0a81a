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
