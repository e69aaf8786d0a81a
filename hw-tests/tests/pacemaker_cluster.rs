//! A real three-node Pacemaker 2.1 + Corosync 3 cluster on the cluster lab whose STONITH
//! device is Palisade (`fence_palisade` -> the node's `fenced` -> its lab BMC, then its lab
//! PDU outlet), failing over a writer on a shared volume (the drill's O_DIRECT, sequence
//! numbered, node-tagged records) run by the stock `ocf:heartbeat:anything` agent.
//!
//! Checked every run: no record of the old node after the new node's first record; the
//! writer runs on exactly one node, by Pacemaker's view and by the nodes' processes;
//! Pacemaker's fence history agrees with fenced's; nothing is left behind.
//!
//! The short always-run case is the power off of the active node; the longer variants run
//! with `PALISADE_LONG=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::drill::mono_ns;
use hw_tests::drill::volume::{check, Slot, Verdict, Volume};
use hw_tests::pacemaker::{
    lxc_cgroups, PacemakerBins, PacemakerCluster, StonithDevice, WriterKind,
};
use hw_tests::require;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn have_pacemaker() -> bool {
    require::needs_command("pacemakerd", "Debian package pacemaker")
        && require::needs_command("crm_mon", "Debian package pacemaker-cli-utils")
        && require::needs_command("cibadmin", "Debian package pacemaker-cli-utils")
        && require::needs_command("corosync", "Debian package corosync")
        && require::needs_command("nft", "Debian package nftables")
        && require::needs(
            "ocf:heartbeat:anything",
            "Debian package resource-agents",
            if Path::new("/usr/lib/ocf/resource.d/heartbeat/anything").exists() {
                Ok(())
            } else {
                Err("missing".into())
            },
        )
        && require::needs(
            "root",
            "running the tests as root (namespaces, cgroups, mounts, loop devices)",
            if unsafe { libc::geteuid() } == 0 {
                Ok(())
            } else {
                Err("not root".into())
            },
        )
}

fn bins() -> PacemakerBins {
    PacemakerBins {
        workload: PathBuf::from(env!("CARGO_BIN_EXE_palisade-workload")),
        ..PacemakerBins::from_workspace()
    }
}

fn fence_node_bin() -> PathBuf {
    hw_tests::bins::workspace_bin("fenced", "fence_node")
}

fn records(dev: &Path) -> Vec<hw_tests::drill::record::Record> {
    Volume::open(dev, false)
        .unwrap()
        .read_log()
        .unwrap()
        .into_iter()
        .filter_map(|s| match s {
            Slot::Record(r) => Some(r),
            Slot::Bad(_) => None,
        })
        .collect()
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

/// What a failover run found.
#[derive(Debug)]
struct Failover {
    old: String,
    new: Option<String>,
    verdict: Verdict,
    /// From the fault to the new node's first record.
    fault_to_new_write: Option<Duration>,
    /// Records of the old node written after the fault.
    old_after_fault: usize,
}

/// The fault injected into the active node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// (c) the node dies (its cgroup killed, as a power cut), its BMC still reads on.
    PowerOff,
    /// (a) all its lab traffic dropped (nftables in its namespace); it keeps running.
    NetworkCut,
}

/// Starts the cluster, configures it, waits for the writer, injects `fault` on the writer's
/// node and waits for the writer on another node (or `settle` without one); then checks.
fn failover(
    c: &PacemakerCluster,
    fault: FaultKind,
    expect_new: bool,
    settle: Duration,
) -> Failover {
    let old = c.wait_writer("node1", Duration::from_secs(90)).unwrap();
    let dev = c.volume().to_path_buf();
    // The writer really writes before the fault.
    let until = Instant::now() + Duration::from_secs(30);
    while records(&dev).iter().filter(|r| r.node == old).count() < 20 {
        assert!(Instant::now() < until, "{old} never wrote");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t_fault = mono_ns();
    match fault {
        FaultKind::PowerOff => {
            c.lab().power_off(&old).unwrap();
        }
        FaultKind::NetworkCut => c.lab().cut(&old).unwrap(),
    }
    let until = Instant::now()
        + if expect_new {
            Duration::from_secs(90)
        } else {
            settle
        };
    let mut new = None;
    while Instant::now() < until {
        if let Some(r) = records(&dev).iter().find(|r| r.node != old) {
            new = Some(r.node.clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if new.is_some() {
        // Both would write for a while if the old copy still ran.
        std::thread::sleep(settle);
    }
    let log = Volume::open(&dev, false).unwrap().read_log().unwrap();
    let second = new.clone().unwrap_or_default();
    let verdict = check(&log, &old, &second);
    let recs = records(&dev);
    let first_new = recs
        .iter()
        .filter(|r| Some(&r.node) == new.as_ref())
        .map(|r| r.mono_ns)
        .min();
    Failover {
        old_after_fault: recs
            .iter()
            .filter(|r| r.node == old && r.mono_ns > t_fault)
            .count(),
        fault_to_new_write: first_new.map(|t| Duration::from_nanos(t.saturating_sub(t_fault))),
        old,
        new,
        verdict,
    }
}

/// The checks of every fenced failover: the log is clean, the writer runs once, and
/// Pacemaker's fence history agrees with the fenced of the node that ran the device.
fn assert_fenced_failover(c: &PacemakerCluster, f: &Failover) {
    let new = f.new.as_deref().unwrap_or_else(|| {
        panic!(
            "the writer never wrote on another node after {} was lost: {:?}\n{}",
            f.old,
            f.verdict,
            c.pacemaker_log("node2", 40)
        )
    });
    assert!(f.verdict.is_clean(), "{}", f.verdict.summary());
    assert!(
        f.verdict.second_starts_at.is_some(),
        "{}",
        f.verdict.summary()
    );
    let survivors: Vec<String> = c
        .lab()
        .nodes()
        .iter()
        .map(|n| n.name().to_string())
        .filter(|n| *n != f.old)
        .collect();
    for s in &survivors {
        assert_eq!(
            c.writer_location(s).unwrap(),
            vec![new.to_string()],
            "{s}'s view"
        );
    }
    assert_eq!(c.writer_processes(), vec![new.to_string()]);
    // Pacemaker's history: one successful off of the old node, by a survivor's device.
    let pcmk = c.pacemaker_fence_history(&survivors[0], &f.old).unwrap();
    let ok: Vec<_> = pcmk.iter().filter(|e| e.successful).collect();
    let raw = c
        .tool(
            &survivors[0],
            "stonith_admin",
            &["--history", &f.old, "--verbose"],
        )
        .unwrap();
    assert_eq!(ok.len(), 1, "{pcmk:?}: {raw}");
    assert_eq!(ok[0].action, "off", "{pcmk:?}");
    let delegate = ok[0].delegate.clone().expect("a delegate");
    assert!(survivors.contains(&delegate), "{delegate} is no survivor");
    // fenced's: the delegate's fenced has exactly that operation, confirmed by read-back;
    // the other survivors' fenced fenced nothing.
    for s in &survivors {
        let h = c.fenced_history(s, &f.old, &fence_node_bin()).unwrap();
        let succeeded: Vec<_> = h.iter().filter(|o| o["state"] == "succeeded").collect();
        if *s == delegate {
            assert_eq!(succeeded.len(), 1, "{s}: {h:?}\n{}", c.fenced_log(s));
            assert_eq!(succeeded[0]["action"], "off", "{h:?}");
            assert!(
                succeeded[0]["outcome"]["confirmation"]["method"].is_string(),
                "{h:?}"
            );
        } else {
            assert!(succeeded.is_empty(), "{s} fenced too: {h:?}");
        }
    }
}

/// Everything the cluster had: its processes, namespaces, cgroups and loop device.
struct Leftovers {
    pids: Vec<u32>,
    netns: Vec<String>,
    cgroups: Vec<PathBuf>,
    loopdev: PathBuf,
    container: String,
}

fn leftovers(c: &PacemakerCluster) -> Leftovers {
    let mut l = Leftovers {
        pids: Vec::new(),
        netns: vec![c.lab().net().switch_netns_name().to_string()],
        cgroups: Vec::new(),
        loopdev: c.volume().to_path_buf(),
        container: c.container().to_string(),
    };
    for n in c.lab().nodes() {
        l.pids.extend(n.lab_node().pids());
        l.netns.push(n.lab_node().netns_name().to_string());
        l.cgroups.push(n.lab_node().cgroup_path().to_path_buf());
    }
    l
}

fn assert_nothing_left(l: &Leftovers) {
    assert!(l.pids.iter().all(|&p| not_running(p)), "{:?}", l.pids);
    for n in &l.netns {
        assert!(!Path::new("/run/netns").join(n).exists(), "{n}");
    }
    assert!(l.cgroups.iter().all(|c| !c.exists()), "{:?}", l.cgroups);
    let lxc = lxc_cgroups(&l.container);
    assert!(lxc.is_empty(), "LXC's cgroups survived: {lxc:?}");
    let name = l.loopdev.file_name().unwrap().to_string_lossy().to_string();
    let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"));
    assert!(backing.is_err(), "{name} still attached: {backing:?}");
}

/// (c) The active node loses power: Pacemaker fences it through fence_palisade -> fenced ->
/// its lab BMC and restarts the writer on a survivor.
#[test]
fn power_off_of_the_active_node_fails_over_through_fence_palisade() {
    if !have_pacemaker() {
        return;
    }
    let started = Instant::now();
    let c = PacemakerCluster::start(3, &bins()).unwrap();
    let formed = started.elapsed();
    c.configure("node1", StonithDevice::Palisade, true, WriterKind::Lxc)
        .unwrap();
    let f = failover(&c, FaultKind::PowerOff, true, Duration::from_secs(2));
    eprintln!(
        "power off of {}: writer on {:?} after {:?} (cluster formed in {formed:?}); {}",
        f.old,
        f.new,
        f.fault_to_new_write,
        f.verdict.summary()
    );
    assert_fenced_failover(&c, &f);
    // The old node is off at its BMC: fencing really cut its power.
    assert!(!c.bmcs().bmc(&f.old).unwrap().power());
    assert_eq!(f.old_after_fault, 0);
    // And the writer is a real LXC container: its process is in LXC's payload cgroup.
    let (_, pid) = c.writer_pids()[0];
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.contains(&format!("lxc.payload.{}", c.container())),
        "the writer is not in its container: {cg}"
    );
    let l = leftovers(&c);
    drop(c);
    assert_nothing_left(&l);
    eprintln!("whole run {:?}", started.elapsed());
}
