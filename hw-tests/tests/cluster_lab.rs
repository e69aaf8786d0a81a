//! The cluster lab on a real kernel with a real Corosync 3: membership and quorum as
//! `corosync-quorumtool` reports them inside each node, partitions with nftables in the
//! nodes' own namespaces, power off killing the whole node, two-node votequorum, CPG (a member
//! in each node, `corosync-cpgtool` agreeing, one total order), and
//! nothing left behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::cluster::cpg::{CpgAddr, CpgEvent, CpgMember, CpgReason};
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

#[test]
fn cpg_members_on_every_node_share_one_group_and_one_order() {
    if !have_corosync() {
        return;
    }
    require::needs_command("corosync-cpgtool", "Debian package corosync");
    let program = std::path::PathBuf::from(env!("CARGO_BIN_EXE_palisade-cpg"));
    let lab = ClusterLab::new(3).unwrap();
    let group = "palisade-check";
    let mut members: Vec<CpgMember> = lab
        .nodes()
        .iter()
        .map(|n| CpgMember::join_with(&lab, n.name(), group, &program).unwrap())
        .collect();
    let mut locals: Vec<CpgAddr> = members.iter().map(CpgMember::local).collect();
    locals.sort_unstable();
    for (m, n) in members.iter_mut().zip(lab.nodes()) {
        assert_eq!(m.local().nodeid, n.id());
        let seen = m.wait_members(&[1, 2, 3], WAIT).unwrap();
        let mut seen_sorted = seen.clone();
        seen_sorted.sort_unstable();
        assert_eq!(seen_sorted, locals, "{}", n.name());
    }
    // Corosync's own tool, inside each node, lists the group with all three members (pids
    // as each member's PID namespace numbers them).
    for n in lab.nodes() {
        let groups = lab.cpg_groups(n.name()).unwrap();
        assert_eq!(groups.get(group), Some(&locals), "{}: {groups:?}", n.name());
    }
    // One multicast from each member: every member receives all three in the same order.
    for (i, m) in members.iter_mut().enumerate() {
        m.send(&format!("hello {i}")).unwrap();
    }
    let orders: Vec<Vec<(CpgAddr, String)>> = members
        .iter_mut()
        .map(|m| m.wait_delivered(3, WAIT).unwrap())
        .collect();
    assert!(orders.iter().all(|o| o == &orders[0]), "{orders:?}");
    for (i, m) in members.iter().enumerate() {
        assert!(
            orders[0].contains(&(m.local(), format!("hello {i}"))),
            "{orders:?}"
        );
    }
    // A cut node's member is reported gone with its node; after the heal it is back.
    lab.cut("node1").unwrap();
    for m in &mut members[1..] {
        m.wait_members(&[2, 3], WAIT).unwrap();
        assert!(
            m.events()
                .contains(&CpgEvent::Left(locals[0], CpgReason::NodeDown)),
            "{:?}",
            m.events()
        );
    }
    lab.heal_all().unwrap();
    for m in &mut members {
        m.wait_members(&[1, 2, 3], FORM_WAIT).unwrap();
    }
    // A clean leave is `leave` for the others, and the group shrinks in Corosync's view.
    let gone = members.remove(2);
    let gone_addr = gone.local();
    gone.leave(WAIT).unwrap();
    for m in &mut members {
        m.wait_members(&[1, 2], WAIT).unwrap();
        assert!(m
            .events()
            .contains(&CpgEvent::Left(gone_addr, CpgReason::Leave)));
    }
    let groups = lab.cpg_groups("node3").unwrap();
    assert_eq!(groups.get(group).map(Vec::len), Some(2), "{groups:?}");
}

/// `palisade-lab cluster` as a child, its stdout read line by line on a thread.
struct LabCli {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl LabCli {
    fn start(nodes: usize) -> LabCli {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-lab"))
            .args(["cluster", "--nodes", &nodes.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        LabCli { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(FORM_WAIT)
            .expect("a line from palisade-lab")
    }

    fn say(&mut self, cmd: &str) {
        use std::io::Write;
        writeln!(self.child.stdin.as_mut().unwrap(), "{cmd}").unwrap();
    }

    /// Waits for the exit (bounded) and returns whether it succeeded.
    fn exit_ok(&mut self) -> bool {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.success();
            }
            assert!(Instant::now() < until, "palisade-lab did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LabCli {
    fn drop(&mut self) {
        // SIGTERM (its clean-up path), then SIGKILL if it hangs; the next lab sweeps then.
        if matches!(self.child.try_wait(), Ok(None)) {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let until = Instant::now() + WAIT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One parsed `cluster NAME nodeid=ID addr=ADDR corosync=PID enter=COMMAND` line.
#[derive(Debug)]
struct Ready {
    name: String,
    nodeid: u32,
    addr: String,
    corosync: u32,
    enter: String,
}

fn parse_ready(line: &str) -> Ready {
    let (head, enter) = line.split_once(" enter=").expect(line);
    let f: Vec<&str> = head.split(' ').collect();
    assert_eq!(f.len(), 5, "{line}");
    assert_eq!(f[0], "cluster", "{line}");
    let val = |i: usize, k: &str| f[i].strip_prefix(k).expect(line).to_string();
    Ready {
        name: f[1].to_string(),
        nodeid: val(2, "nodeid=").parse().unwrap(),
        addr: val(3, "addr="),
        corosync: val(4, "corosync=").parse().unwrap(),
        enter: enter.to_string(),
    }
}

/// What a `palisade-lab` process with this pid left: network namespaces and cgroups named
/// after it, and processes in those cgroups' paths.
fn leftovers_of(pid: u32) -> Vec<String> {
    let tag = format!("plab-{pid}-");
    let mut left = Vec::new();
    for dir in ["/run/netns", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&tag) {
                left.push(format!("{dir}/{name}"));
            }
        }
    }
    left
}

#[test]
fn palisade_lab_cluster_prints_ready_lines_obeys_faults_and_quits_clean() {
    if !have_corosync() {
        return;
    }
    let mut cli = LabCli::start(3);
    let ready: Vec<Ready> = (0..3).map(|_| parse_ready(&cli.line())).collect();
    for (i, r) in ready.iter().enumerate() {
        let id = i as u32 + 1;
        assert_eq!(
            (r.name.as_str(), r.nodeid),
            (format!("node{id}").as_str(), id)
        );
        assert_eq!(r.addr, format!("10.77.0.{id}"));
        assert!(!not_running(r.corosync), "{r:?}");
        // The printed command enters the node: its shell reaches that node's Corosync.
        let mut sh = Command::new("sh")
            .args(["-c", &r.enter])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = sh.stdin.take().unwrap();
            writeln!(stdin, "corosync-quorumtool -s; pgrep -x corosync").unwrap();
        }
        let out = sh.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Quorate:          Yes"), "{r:?}: {text}");
        // Inside its PID namespace the node's Corosync has a small pid of its own.
        let inner: u32 = text.lines().last().unwrap().trim().parse().unwrap();
        assert!(inner < 100 && inner != r.corosync, "{text}");
    }
    cli.say("fault node1:cut");
    assert_eq!(cli.line(), "applied node1:cut");
    cli.say("status");
    let status: Vec<String> = (0..3).map(|_| cli.line()).collect();
    assert_eq!(
        status,
        [
            "status node1 quorate=no members=1",
            "status node2 quorate=yes members=2,3",
            "status node3 quorate=yes members=2,3"
        ]
    );
    cli.say("fault node1:heal");
    assert_eq!(cli.line(), "applied node1:heal");
    cli.say("fault node3:power-off");
    assert_eq!(cli.line(), "applied node3:power-off");
    assert!(not_running(ready[2].corosync));
    cli.say("fault node3:power-on");
    assert_eq!(cli.line(), "applied node3:power-on");
    let again = parse_ready(&cli.line());
    assert_eq!(again.name, "node3");
    assert_ne!(again.corosync, ready[2].corosync);
    cli.say("fault node7:cut");
    assert!(cli.line().starts_with("error: node7:cut: "));
    cli.say("quit");
    assert!(cli.exit_ok());
    let pid = cli.child.id();
    assert!(not_running(again.corosync));
    assert!(ready.iter().all(|r| not_running(r.corosync)));
    assert_eq!(leftovers_of(pid), Vec::<String>::new());
}

#[test]
fn palisade_lab_cluster_cleans_up_on_sigterm_and_at_end_of_stdin() {
    if !have_corosync() {
        return;
    }
    for how in ["SIGTERM", "end of stdin"] {
        let mut cli = LabCli::start(2);
        let ready: Vec<Ready> = (0..2).map(|_| parse_ready(&cli.line())).collect();
        if how == "SIGTERM" {
            unsafe { libc::kill(cli.child.id() as i32, libc::SIGTERM) };
        } else {
            cli.child.stdin.take();
        }
        assert!(cli.exit_ok(), "{how}");
        assert!(ready.iter().all(|r| not_running(r.corosync)), "{how}");
        assert_eq!(leftovers_of(cli.child.id()), Vec::<String>::new(), "{how}");
    }
}

#[test]
fn palisade_lab_help_lists_the_cluster_lab() {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-lab"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cluster") && text.contains("Corosync"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-lab"))
        .args(["cluster", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--nodes",
        "--token-ms",
        "enter=",
        "fault NODE:cut",
        "power-on",
        "quit",
    ] {
        assert!(text.contains(want), "{want} missing: {text}");
    }
}

/// Polls until every node of `names` reports exactly `members`; how long that took.
fn time_until_members(lab: &ClusterLab, names: &[&str], members: &[u32]) -> Duration {
    let t0 = Instant::now();
    loop {
        if names
            .iter()
            .all(|n| lab.status(n).is_ok_and(|st| st.members == members))
        {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < FORM_WAIT, "{names:?} never saw {members:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A node's Corosync memory: (RSS from the lab, PSS from `smaps_rollup`), in KiB.
fn memory_kib(n: &hw_tests::cluster::ClusterNode) -> (u64, u64) {
    let pid = n.corosync_pid().unwrap();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let pss = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    (n.corosync_rss_kib().unwrap(), pss)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The figures of hw-tests/figures/cluster.md (printed, never asserted):
/// `cargo nextest run -p hw-tests --test cluster_lab --run-ignored only --no-capture figures`.
#[test]
#[ignore = "figures: run by hand (about a minute)"]
fn figures_quorum_cut_heal_and_memory() {
    if !have_corosync() {
        return;
    }
    const ROUNDS: usize = 5;
    let (mut whole, mut after_ipc) = (Vec::new(), Vec::new());
    let mut rss = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let lab = ClusterLab::start(ClusterSpec::new(3)).unwrap();
        let booted = t0.elapsed();
        let q = lab.wait_quorate_all(FORM_WAIT).unwrap();
        whole.push(booted + q);
        after_ipc.push(q);
        rss = lab.nodes().iter().map(|n| memory_kib(n)).collect();
    }
    let lab = ClusterLab::new(3).unwrap();
    let (mut cut, mut heal, mut off, mut on) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        lab.cut("node1").unwrap();
        cut.push(time_until_members(&lab, &["node2", "node3"], &[2, 3]));
        lab.wait_converged(FORM_WAIT).unwrap();
        lab.heal_all().unwrap();
        let t = Instant::now();
        lab.wait_quorate_all(FORM_WAIT).unwrap();
        heal.push(t.elapsed());
        lab.power_off("node1").unwrap();
        off.push(time_until_members(&lab, &["node2", "node3"], &[2, 3]));
        let t = Instant::now();
        lab.power_on("node1").unwrap();
        lab.wait_quorate_all(FORM_WAIT).unwrap();
        on.push(t.elapsed());
    }
    let steady: Vec<(u64, u64)> = lab.nodes().iter().map(|n| memory_kib(n)).collect();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let all = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
    println!("| figure (3 nodes, token 1000 ms, median of {ROUNDS}) | median | runs |");
    println!("|---|---|---|");
    for (what, v) in [
        (
            "start to all quorate (namespaces, Corosync, membership)",
            &whole,
        ),
        ("every Corosync answering IPC to all quorate", &after_ipc),
        ("cut of node1 to node2+node3 on membership {2,3}", &cut),
        ("heal to all three members, quorate", &heal),
        ("power off of node1 to node2+node3 on {2,3}", &off),
        ("power on of node1 to all three members, quorate", &on),
    ] {
        println!("| {what} | {} | {} |", ms(median(v.clone())), all(v));
    }
    println!("Corosync (RSS, PSS) after forming, KiB, node1..3: {rss:?}");
    println!("Corosync (RSS, PSS) after {ROUNDS} cut/heal and power cycles, KiB: {steady:?}");
}

/// Polls `node`'s `corosync-cpgtool` until `group` has members on exactly `nodeids`.
fn wait_group(lab: &ClusterLab, node: &str, group: &str, nodeids: &[u32]) -> Vec<CpgAddr> {
    let t0 = Instant::now();
    loop {
        let groups = lab.cpg_groups(node).unwrap();
        let members = groups.get(group).cloned().unwrap_or_default();
        let mut ids: Vec<u32> = members.iter().map(|a| a.nodeid).collect();
        ids.dedup();
        if ids == nodeids {
            return members;
        }
        assert!(
            t0.elapsed() < WAIT,
            "{node}: {group} never on {nodeids:?}: {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_registered_daemon_reaches_its_nodes_corosync_again_after_a_power_cycle() {
    if !have_corosync() {
        return;
    }
    let program = std::path::PathBuf::from(env!("CARGO_BIN_EXE_palisade-cpg"));
    let lab = ClusterLab::new(3).unwrap();
    // As fenced or Pacemaker would be: started by the lab after Corosync, no stdin.
    lab.add_daemon(
        "node2",
        "member",
        Box::new(move |n| {
            n.spawn(
                Command::new(&program)
                    .args(["--hold", "lab-daemon"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null()),
            )
        }),
    )
    .unwrap();
    let before = wait_group(&lab, "node1", "lab-daemon", &[2]);
    lab.power_off("node2").unwrap();
    wait_group(&lab, "node1", "lab-daemon", &[]);
    lab.power_on("node2").unwrap();
    let after = wait_group(&lab, "node3", "lab-daemon", &[2]);
    assert_eq!(after.len(), 1, "{after:?}");
    // The restarted daemon is a new process, in the node's new PID namespace.
    let host_pid = lab.daemon_pids("node2").unwrap()[0].1;
    assert!(!not_running(host_pid));
    eprintln!("daemon member before {before:?}, after the power cycle {after:?}");
}
