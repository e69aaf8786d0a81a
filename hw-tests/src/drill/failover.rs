//! One failover drill, end to end: a simulated IPMI BMC per lab node (its power hook kills the
//! node's cgroup), a real `fenced` process configured with those BMCs, the stateful workload
//! on a loop device, and the reference controller talking to `fenced` through
//! [`super::fencer::ApiFencer`]. Run by `tests/drill` (each variant once, with assertions) and
//! `examples/drill.rs` (medians over several runs).

use super::controller::{self, Decision, Heartbeats, Plan, Policy, Timeline};
use super::fencer::ApiFencer;
use super::mono_ns;
use super::volume::{check, Slot, Verdict, Volume};
use crate::daemon::{FencedError, FencedProcess};
use crate::lab::{BackgroundLab, Fault, LabSpec};
use crate::loopdev::LoopDevice;
use crate::node::{LabNet, LabNode, NodeProcess, NodeSpec};
use drivers::Secret;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "lab-password";
/// The controller's heartbeat port on the switch.
const HB_PORT: u16 = 7000;

/// Which controller and which fence device the drill runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The safe controller and an honest BMC.
    Fenced,
    /// A controller that skips fencing (shows the corruption).
    SkipFencing,
    /// The safe controller and a BMC that acknowledges power off but never acts (stuck).
    StuckBmc,
}

/// Paths to the binaries the drill runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `fenced`.
    pub fenced: PathBuf,
    /// `palisade-workload`.
    pub workload: PathBuf,
}

/// Timing knobs.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Heartbeat period of the node agents.
    pub heartbeat: Duration,
    /// Silence after which the controller declares a node lost.
    pub lost_after: Duration,
    /// One record every this often.
    pub write_interval: Duration,
    /// How long the drill lets things run after the controller's decision.
    pub after: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            heartbeat: Duration::from_millis(50),
            lost_after: Duration::from_millis(500),
            write_interval: Duration::from_millis(5),
            after: Duration::from_millis(600),
        }
    }
}

/// What a drill found.
#[derive(Debug)]
pub struct DrillResult {
    /// The controller's decision.
    pub decision: Decision,
    /// When what happened.
    pub timeline: Timeline,
    /// The checker's verdict on the volume.
    pub verdict: Verdict,
    /// Records A wrote after it was cut off (it kept running).
    pub a_records_after_cut: usize,
    /// Whether node A's lab node was powered (its BMC's view and the node's own) at the end,
    /// before the drill stopped everything.
    pub a_powered: (bool, bool),
    /// fenced's log, for failure messages.
    pub fenced_log: String,
}

/// Why a drill could not run (not a verdict: a drill that ran reports in [`DrillResult`]).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// A part of the rig (loop device, lab, namespaces, files, processes) could not be set up.
    #[error("drill set-up, {step}: {message}")]
    Setup {
        /// What was being set up.
        step: &'static str,
        /// Why it failed.
        message: String,
    },
    /// The daemon did not start.
    #[error(transparent)]
    Fenced(#[from] FencedError),
    /// The workload or the heartbeats did not start.
    #[error("the workload or the heartbeats did not start within 30 s: {0}; run as root (namespaces, cgroups, loop devices) and check the workload binary")]
    NotStarted(String),
    /// The volume could not be read.
    #[error("reading the volume {path}: {message}")]
    Volume {
        /// The loop device.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Maps a set-up step's error into [`DrillError::Setup`].
fn setup<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> DrillError {
    move |e| DrillError::Setup {
        step,
        message: e.to_string(),
    }
}

fn config(dir: &Path, lab: &BackgroundLab) -> Result<PathBuf, DrillError> {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).map_err(setup("password file"))?;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))
        .map_err(setup("password file"))?;
    // Short deadlines: a stuck BMC fails the operation in seconds, not minutes.
    let mut cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 2\ntotal_timeout_s = 4\n\n",
        dir.join("fenced.sock"),
        dir.join("history.redb")
    );
    for b in lab.bmcs() {
        cfg.push_str(&format!(
            "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = {pw:?}\ncipher_suite = 17\ntimeout_ms = 200\nretries = 1\n\n[targets.{n}]\nlevels = [[\"bmc-{n}\"]]\nidentities = {{ bmc-{n} = \"{g}\" }}\n\n",
            n = b.name(),
            a = b.addr(),
            g = b.guid_text(),
        ));
    }
    let path = dir.join("fenced.toml");
    std::fs::write(&path, cfg).map_err(setup("config file"))?;
    Ok(path)
}

fn log_of(dev: &Path) -> Result<Vec<Slot>, DrillError> {
    Volume::open(dev, false)
        .and_then(|v| v.read_log())
        .map_err(|e| DrillError::Volume {
            path: dev.to_path_buf(),
            message: e.to_string(),
        })
}

fn count(log: &[Slot], node: &str) -> usize {
    log.iter()
        .filter(|s| matches!(s, Slot::Record(r) if r.node == node))
        .count()
}

/// Runs one drill. Everything it starts (BMCs, fenced, lab nodes and their processes, the
/// loop device) is stopped and removed when it returns, also on error or panic.
pub fn run(variant: Variant, knobs: &Knobs, bins: &Bins) -> Result<DrillResult, DrillError> {
    let disk = LoopDevice::new(16, None).map_err(setup("loop device"))?;
    let dev = disk.path().to_path_buf();
    let lab = BackgroundLab::start(LabSpec::new(
        2,
        "admin",
        Secret::new(PASSWORD.as_bytes().to_vec()),
    ))
    .map_err(setup("lab BMCs"))?;
    let mut net = LabNet::new().map_err(setup("lab network"))?;
    let a = net
        .add_node(NodeSpec::new("node1"))
        .map_err(setup("lab node node1"))?;
    let b = net
        .add_node(NodeSpec::new("node2"))
        .map_err(setup("lab node node2"))?;
    for bmc in lab.bmcs() {
        bmc.set_power_hook(Some(net.power_hook()));
    }
    if variant == Variant::StuckBmc {
        if let Some(bmc) = lab.bmc("node1") {
            bmc.set_fault(Fault::Stuck(true));
        }
    }
    let tmp = tempfile::tempdir().map_err(setup("temporary directory"))?;
    let cfg = config(tmp.path(), &lab)?;
    let socket = tmp.path().join("fenced.sock");
    let mut fenced =
        FencedProcess::spawn(&bins.fenced, &cfg, &socket, &tmp.path().join("fenced.log"))?;
    fenced.wait_ready(Duration::from_secs(20))?;

    let mut hb = Heartbeats::new(net.bind_udp(HB_PORT).map_err(setup("heartbeat socket"))?);
    let to = format!("{}:{HB_PORT}", net.switch_addr());
    let hb_ms = knobs.heartbeat.as_millis().to_string();
    let wr_ms = knobs.write_interval.as_millis().to_string();
    let agent = |node: &LabNode| {
        node.spawn(
            Command::new(&bins.workload)
                .args([
                    "heartbeat",
                    "--to",
                    &to,
                    "--node",
                    node.name(),
                    "--interval-ms",
                    &hb_ms,
                ])
                .stdin(Stdio::null()),
        )
        .map_err(|e| e.to_string())
    };
    let writer = |node: &LabNode| {
        node.spawn(
            Command::new(&bins.workload)
                .args(["write", "--device"])
                .arg(&dev)
                .args(["--node", node.name(), "--interval-ms", &wr_ms])
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )
        .map_err(|e| e.to_string())
    };
    // Handles only reap; the nodes' cgroups kill the processes.
    let mut children: Vec<NodeProcess> = vec![
        agent(&a).map_err(setup("node1's heartbeat agent"))?,
        agent(&b).map_err(setup("node2's heartbeat agent"))?,
        writer(&a).map_err(setup("node1's workload"))?,
    ];

    // The workload runs and both nodes beat before the fault.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        hb.pump(Duration::from_millis(50));
        if count(&log_of(&dev)?, "node1") >= 20
            && hb.alive("node1", knobs.lost_after)
            && hb.alive("node2", knobs.lost_after)
        {
            break;
        }
        if Instant::now() > until {
            return Err(DrillError::NotStarted(format!(
                "node1 beats {:?}, node2 {:?}, records {}",
                hb.last_seen("node1"),
                hb.last_seen("node2"),
                count(&log_of(&dev)?, "node1")
            )));
        }
    }

    let mut timeline = Timeline {
        cut_off: Some(mono_ns()),
        ..Timeline::default()
    };
    a.cut_off().map_err(setup("cutting node1 off"))?;

    let plan = Plan {
        primary: "node1".into(),
        standby: "node2".into(),
        lost_after: knobs.lost_after,
        fence_wait: Duration::from_secs(30),
        watch_for: Duration::from_secs(20),
        policy: match variant {
            Variant::SkipFencing => Policy::SkipFencing,
            Variant::Fenced | Variant::StuckBmc => Policy::FenceFirst { attempts: 2 },
        },
    };
    let mut fencer = ApiFencer::new(socket).map_err(setup("the controller's fencer"))?;
    let mut started_b: Option<NodeProcess> = None;
    let decision = controller::run(
        &mut hb,
        &mut fencer,
        &plan,
        &mut || {
            started_b = Some(writer(&b)?);
            Ok(())
        },
        &mut timeline,
    );
    children.extend(started_b);
    // Let both copies (if there are two) write for a while.
    std::thread::sleep(knobs.after);
    let a_powered = (lab.bmc("node1").is_some_and(|m| m.power()), a.is_on());

    // Stop everything, then read what is on the disk.
    a.power_off()
        .map_err(setup("powering node1 off at the end"))?;
    b.power_off()
        .map_err(setup("powering node2 off at the end"))?;
    for mut c in children {
        let _ = c.wait();
    }
    let log = log_of(&dev)?;
    let verdict = check(&log, "node1", "node2");
    let records = || {
        log.iter().filter_map(|s| match s {
            Slot::Record(r) => Some(r),
            Slot::Bad(_) => None,
        })
    };
    let cut = timeline.cut_off.unwrap_or(0);
    let a_records_after_cut = records()
        .filter(|r| r.node == "node1" && r.mono_ns > cut)
        .count();
    timeline.standby_first_record = records()
        .filter(|r| r.node == "node2")
        .map(|r| r.mono_ns)
        .min();
    timeline.primary_last_record = records()
        .filter(|r| r.node == "node1")
        .map(|r| r.mono_ns)
        .max();
    Ok(DrillResult {
        decision,
        timeline,
        verdict,
        a_records_after_cut,
        a_powered,
        fenced_log: fenced.log(),
    })
}
