//! One failover drill, end to end: a simulated IPMI BMC per lab node (its power hook kills the
//! node's cgroup), a real `fenced` process configured with those BMCs, the stateful workload
//! on a loop device, and the reference controller talking to `fenced` through
//! `fenced::client`. Shared by `tests/drill` (each variant once, with assertions) and
//! `examples/drill.rs` (medians over several runs).

use drivers::Secret;
use fenced::client::{Client, ClientError, Endpoint};
use fenced::model::{FenceAccepted, OpState, Operation, Outcome};
use hw_tests::drill::controller::{
    self, Decision, FenceOutcome, Fencer, Heartbeats, Plan, Policy, Timeline,
};
use hw_tests::drill::mono_ns;
use hw_tests::drill::volume::{check, Slot, Verdict, Volume};
use hw_tests::lab::{BackgroundLab, Fault, LabSpec};
use hw_tests::loopdev::LoopDevice;
use hw_tests::node::{LabNet, NodeProcess, NodeSpec};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A `fenced run` child process, killed on drop.
struct FencedProcess {
    child: Child,
    log: PathBuf,
}

impl FencedProcess {
    fn start(bin: &Path, dir: &Path, config: &Path) -> Result<FencedProcess, String> {
        let socket = dir.join("fenced.sock");
        let log = dir.join("fenced.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (cargo build -p fenced)",
                    bin.display()
                )
            })?;
        let mut f = FencedProcess { child, log };
        let until = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Ok(Some(st)) = f.child.try_wait() {
                return Err(format!("fenced exited with {st}: {}", f.log()));
            }
            if Instant::now() > until {
                return Err(format!("fenced did not create its socket: {}", f.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(f)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FencedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The controller's fencer: the fencer API over `fenced`'s Unix socket, through
/// `fenced::client`. This is the whole protocol a controller needs.
pub struct ApiFencer {
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl ApiFencer {
    /// A fencer talking to the daemon at `socket`.
    pub fn new(socket: PathBuf) -> ApiFencer {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        ApiFencer {
            // Every request has a deadline; the long poll sets its own below.
            client: Client::new(Endpoint::Unix(socket), Duration::from_secs(5)),
            rt,
        }
    }
}

impl Fencer for ApiFencer {
    fn request_off(&mut self, target: &str, reason: &str, request_id: &str) -> Result<u64, String> {
        let body = serde_json::json!({
            "target": target,
            "action": "off",
            "reason": reason,
            "request_id": request_id,
        });
        self.rt
            .block_on(
                self.client
                    .call_as::<FenceAccepted>("POST", "/v1/fence", Some(&body), None),
            )
            .map(|(accepted, _)| accepted.id)
            .map_err(|e| e.to_string())
    }

    fn wait(&mut self, operation: u64, within: Duration) -> FenceOutcome {
        let started = Instant::now();
        loop {
            let left = within.saturating_sub(started.elapsed());
            if left.is_zero() {
                return FenceOutcome::Unknown {
                    reason: format!("no outcome for operation {operation} within {within:?}"),
                };
            }
            // Long poll: the daemon answers as soon as the operation ends, or after `wait`
            // seconds with its current state.
            let wait = left.as_secs().clamp(1, 300);
            let path = format!("/v1/operations/{operation}?wait={wait}");
            let answer = self.rt.block_on(self.client.call_as::<Operation>(
                "GET",
                &path,
                None,
                Some(Duration::from_secs(wait + 5)),
            ));
            match answer {
                Ok((op, _)) => match (op.state, op.outcome) {
                    (OpState::Succeeded, Some(Outcome::Succeeded { confirmation, .. })) => {
                        let method = serde_json::to_value(&confirmation)
                            .ok()
                            .and_then(|v| v["method"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        return FenceOutcome::Fenced {
                            confirmation: method,
                        };
                    }
                    (OpState::Failed, Some(Outcome::Failed { code, message })) => {
                        return FenceOutcome::Failed { code, message }
                    }
                    (s, o) if s.is_terminal() => {
                        return FenceOutcome::Unknown {
                            reason: format!("operation {operation} ended {s} with outcome {o:?}"),
                        }
                    }
                    // Delayed or running: poll again (not in a hot loop if something between
                    // us and the daemon answers long polls at once).
                    _ => std::thread::sleep(Duration::from_millis(50)),
                },
                // The daemon may be restarting: the outcome is unknown until it answers.
                Err(ClientError::Unreachable { .. } | ClientError::Timeout { .. }) => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    return FenceOutcome::Unknown {
                        reason: e.to_string(),
                    }
                }
            }
        }
    }
}

fn config(dir: &Path, lab: &BackgroundLab) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
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
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    Ok(path)
}

fn log_of(dev: &Path) -> Result<Vec<Slot>, String> {
    Volume::open(dev, false)
        .and_then(|v| v.read_log())
        .map_err(|e| format!("reading the volume {}: {e}", dev.display()))
}

fn count(log: &[Slot], node: &str) -> usize {
    log.iter()
        .filter(|s| matches!(s, Slot::Record(r) if r.node == node))
        .count()
}

/// Runs one drill. Everything it starts (BMCs, fenced, lab nodes and their processes, the
/// loop device) is stopped and removed when it returns, also on error or panic.
pub fn run(variant: Variant, knobs: &Knobs, bins: &Bins) -> Result<DrillResult, String> {
    let disk = LoopDevice::new(16, None).map_err(|e| e.to_string())?;
    let dev = disk.path().to_path_buf();
    let lab = BackgroundLab::start(LabSpec::new(
        2,
        "admin",
        Secret::new(PASSWORD.as_bytes().to_vec()),
    ))
    .map_err(|e| e.to_string())?;
    let mut net = LabNet::new().map_err(|e| e.to_string())?;
    let a = net
        .add_node(NodeSpec::new("node1"))
        .map_err(|e| e.to_string())?;
    let b = net
        .add_node(NodeSpec::new("node2"))
        .map_err(|e| e.to_string())?;
    for bmc in lab.bmcs() {
        bmc.set_power_hook(Some(net.power_hook()));
    }
    if variant == Variant::StuckBmc {
        if let Some(bmc) = lab.bmc("node1") {
            bmc.set_fault(Fault::Stuck(true));
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cfg = config(tmp.path(), &lab)?;
    let fenced = FencedProcess::start(&bins.fenced, tmp.path(), &cfg)?;

    let mut hb = Heartbeats::new(net.bind_udp(HB_PORT).map_err(|e| e.to_string())?);
    let to = format!("{}:{HB_PORT}", net.switch_addr());
    let hb_ms = knobs.heartbeat.as_millis().to_string();
    let wr_ms = knobs.write_interval.as_millis().to_string();
    let agent = |node: &hw_tests::node::LabNode| {
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
    let writer = |node: &hw_tests::node::LabNode| {
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
    let mut children: Vec<NodeProcess> = vec![agent(&a)?, agent(&b)?, writer(&a)?];

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
            return Err(format!(
                "the workload or the heartbeats did not start within 30 s: node1 beats {:?}, node2 {:?}, records {}",
                hb.last_seen("node1"),
                hb.last_seen("node2"),
                count(&log_of(&dev)?, "node1")
            ));
        }
    }

    let mut timeline = Timeline {
        cut_off: Some(mono_ns()),
        ..Timeline::default()
    };
    a.cut_off().map_err(|e| e.to_string())?;

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
    let mut fencer = ApiFencer::new(tmp.path().join("fenced.sock"));
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
    a.power_off().map_err(|e| e.to_string())?;
    b.power_off().map_err(|e| e.to_string())?;
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
