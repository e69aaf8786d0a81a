//! A real Pacemaker 2.1 cluster on the cluster lab ([`crate::cluster`]): three lab nodes, each
//! running Corosync, the whole of Pacemaker (`pacemakerd -f` and its daemons, in the
//! foreground, no systemd) and `fenced`, with `fence_palisade` as the cluster's STONITH
//! device. Fencing a node ends at the lab: `fence_palisade` -> the local `fenced` -> the
//! node's simulated IPMI BMC (level 1) or its SNMP PDU outlet (level 2) -> the cluster lab's
//! power hook, which kills the node's cgroup. Nothing here can reach the host's power.
//!
//! Layout of one node (its mount namespace, fresh at every power on):
//! - `/run`, `/dev/shm`, Corosync's directories: private tmpfs from the cluster lab;
//! - `/var/lib/pacemaker`, `/var/log/pacemaker`: private tmpfs mounted by the node's
//!   Pacemaker start script (owned by `hacluster:haclient`, as Debian's package makes them);
//! - `/usr/sbin`: a read-only overlay adding `fence_palisade` (Pacemaker runs agents only
//!   from there), leaving the host's `/usr/sbin` untouched;
//! - `/run/palisade/fenced.sock`: the node's own `fenced`, so the same socket path in the
//!   stonith resource means "the local fencer" on every node.
//!
//! The BMCs and PDUs run in the test process on the host's loopback; [`UdpRelay`]s on the
//! lab switch forward the nodes' UDP to them, so the nodes reach their management devices
//! over the lab network (and a node cut off with nftables reaches none of them, as a real
//! node whose only network is cut).
//!
//! The writer resource runs the drill's `palisade-workload write` on a loop device that every
//! node sees, inside an LXC container run by the stock `ocf:heartbeat:lxc` agent (or as a plain
//! process through `ocf:heartbeat:anything`); why LXC: docs/pacemaker.md.

use crate::cluster::{ClusterError, ClusterLab};
use crate::lab::node::{PowerEvent, PowerHook};
use crate::lab::snmp::{PduHandle, PduLab, PduLabSpec};
use crate::lab::{BackgroundLab, LabSpec};
use crate::loopdev::LoopDevice;
use crate::node::{LabNet, LabNode, NodeProcess};
use drivers::Secret;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The IPMI password of every lab BMC.
const PASSWORD: &str = "lab-password";
/// The SNMP community of the lab PDU.
const COMMUNITY: &str = "lab-community";
/// Where each node's `fenced` listens (the node's private `/run`).
pub const FENCED_SOCKET: &str = "/run/palisade/fenced.sock";
/// The id of the writer resource in the CIB.
pub const WRITER: &str = "writer";
/// How long one Pacemaker tool run inside a node may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the Pacemaker cluster could not be set up or queried; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PacemakerError {
    /// The cluster lab underneath failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A part of the rig (devices, relays, files, loop device) could not be set up.
    #[error("pacemaker cluster set-up, {step}: {message}; run as root with scripts/install-test-deps.sh done")]
    Setup {
        /// What was being set up.
        step: String,
        /// Why it failed.
        message: String,
    },
    /// A Pacemaker tool inside a node failed.
    #[error("`{what}` on {node} failed: {detail}; see the node's /var/log/pacemaker/pacemaker.log (PacemakerCluster::pacemaker_log)")]
    Tool {
        /// The node.
        node: String,
        /// The command.
        what: String,
        /// Its exit status and output.
        detail: String,
    },
    /// A state was not reached in time.
    #[error("{what} not reached within {waited:?}; last seen: {last}")]
    Timeout {
        /// The state waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// What was seen last.
        last: String,
    },
}

fn setup<E: std::fmt::Display>(step: impl Into<String>) -> impl FnOnce(E) -> PacemakerError {
    let step = step.into();
    move |e| PacemakerError::Setup {
        step,
        message: e.to_string(),
    }
}

/// The output of a command as one string (stdout, then stderr).
pub fn output_text(out: &Output) -> String {
    format!(
        "{} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A UDP forwarder from the lab switch (`LabNet::switch_addr`, a port of its own) to a device
/// on the host's loopback: each client address gets its own host-side socket, so replies go
/// back to the right node. Stops (and closes its sockets) on drop.
pub struct UdpRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often relay threads look at their stop flag.
const RELAY_POLL: Duration = Duration::from_millis(100);

impl UdpRelay {
    /// Binds a free port on the switch and forwards what arrives there to `to`.
    pub fn start(net: &LabNet, to: SocketAddr) -> Result<UdpRelay, PacemakerError> {
        let front = net
            .bind_udp(0)
            .map_err(setup("relay socket on the switch"))?;
        let addr = front.local_addr().map_err(setup("relay socket address"))?;
        front
            .set_read_timeout(Some(RELAY_POLL))
            .map_err(setup("relay socket timeout"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("udp-relay".into())
            .spawn(move || relay_loop(front, to, flag))
            .map_err(setup("relay thread"))?;
        Ok(UdpRelay {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address nodes send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn relay_loop(front: UdpSocket, to: SocketAddr, stop: Arc<AtomicBool>) {
    let mut backs: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut repliers: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, client)) = front.recv_from(&mut buf) else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = backs.entry(client) {
            // Created on this thread, which lives in the host's network namespace: it
            // reaches the device's loopback address.
            let Ok(back) = UdpSocket::bind("127.0.0.1:0") else {
                continue;
            };
            if back.connect(to).is_err() || back.set_read_timeout(Some(RELAY_POLL)).is_err() {
                continue;
            }
            let (Ok(reply_back), Ok(reply_front)) = (back.try_clone(), front.try_clone()) else {
                continue;
            };
            let flag = stop.clone();
            if let Ok(h) = std::thread::Builder::new()
                .name("udp-relay-reply".into())
                .spawn(move || {
                    let mut b = vec![0u8; 65536];
                    while !flag.load(Ordering::Relaxed) {
                        if let Ok(n) = reply_back.recv(&mut b) {
                            let _ = reply_front.send_to(&b[..n], client);
                        }
                    }
                })
            {
                repliers.push(h);
            }
            slot.insert(back);
        }
        if let Some(back) = backs.get(&client) {
            let _ = back.send(&buf[..n]);
        }
    }
    for h in repliers {
        let _ = h.join();
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wires the lab PDU's outlets to the nodes: outlet `i` feeds `node{i}`, so switching it off
/// through SNMP kills the node as pulling its plug would (the simulated PDU has no power hook
/// of its own; this thread watches its outlets). Stops on drop.
struct OutletWire {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OutletWire {
    fn start(pdu: PduHandle, nodes: usize, hook: PowerHook) -> Result<OutletWire, PacemakerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("outlet-wire".into())
            .spawn(move || {
                let mut last: Vec<Option<bool>> = (1..=nodes).map(|i| pdu.outlet_on(i)).collect();
                while !flag.load(Ordering::Relaxed) {
                    for (i, was) in last.iter_mut().enumerate() {
                        let now = pdu.outlet_on(i + 1);
                        if now != *was {
                            let name = format!("node{}", i + 1);
                            match now {
                                Some(false) => hook(&name, PowerEvent::Off),
                                Some(true) => hook(&name, PowerEvent::On),
                                None => {}
                            }
                            *was = now;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
            .map_err(setup("outlet watcher thread"))?;
        Ok(OutletWire {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for OutletWire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Paths to the workspace binaries the cluster runs.
#[derive(Debug, Clone)]
pub struct PacemakerBins {
    /// `fenced`.
    pub fenced: PathBuf,
    /// `fence_palisade` (installed as `/usr/sbin/fence_palisade` inside each node).
    pub fence_palisade: PathBuf,
    /// `palisade-workload`.
    pub workload: PathBuf,
}

impl PacemakerBins {
    /// The debug builds in the workspace's target directory (built on demand).
    pub fn from_workspace() -> PacemakerBins {
        PacemakerBins {
            fenced: crate::bins::fenced(),
            fence_palisade: crate::bins::workspace_bin("fenced", "fence_palisade"),
            workload: crate::bins::workspace_bin("hw-tests", "palisade-workload"),
        }
    }
}

/// Which fence device Pacemaker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StonithDevice {
    /// `fence_palisade` talking to the node's local `fenced` (levels: BMC, then PDU outlet).
    Palisade,
    /// ClusterLabs' `fence_ipmilan` straight at the same lab BMCs (through the relays).
    IpmiLan,
}

/// What runs the writer, as a Pacemaker resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterKind {
    /// `ocf:heartbeat:anything` running `palisade-workload write` as a plain process.
    Anything,
    /// `ocf:heartbeat:lxc`: an LXC 5 container (a busybox-static root file system made here)
    /// whose init is the writer.
    Lxc,
}

/// A three-node (or n-node) Pacemaker cluster on the cluster lab, with its lab BMCs, PDU,
/// relays, per-node `fenced`, and the shared volume. Dropping it kills every node (and so
/// every process of the cluster), stops the devices, detaches the loop device and removes
/// its files.
pub struct PacemakerCluster {
    // Field order is drop order: the nodes (and every process writing to the volume) die
    // first, then what they talked to, then the volume and the files.
    lab: ClusterLab,
    _wire: OutletWire,
    bmc_relays: Vec<UdpRelay>,
    _pdu_relay: UdpRelay,
    bmcs: BackgroundLab,
    pdu: PduLab,
    rt: tokio::runtime::Runtime,
    disk: LoopDevice,
    dir: tempfile::TempDir,
    /// The LXC container's name: unique per cluster, as LXC's cgroup v1 groups live at the
    /// root of each hierarchy, shared by every test on the machine.
    container: String,
}

impl PacemakerCluster {
    /// Starts `nodes` cluster lab nodes with Corosync, `fenced` and Pacemaker on each, and
    /// returns once `crm_mon` on every node shows them all online with a DC. The CIB is still
    /// empty: see [`PacemakerCluster::configure`].
    pub fn start(nodes: usize, bins: &PacemakerBins) -> Result<PacemakerCluster, PacemakerError> {
        let dir = tempfile::tempdir().map_err(setup("temporary directory"))?;
        // Pacemaker's daemons (user hacluster) and the agents read files below it.
        set_mode(dir.path(), 0o755)?;
        remove_leaked_lxc_cgroups();
        let disk = LoopDevice::new(16, None).map_err(setup("loop device"))?;
        let lab = ClusterLab::new(nodes)?;
        let hook = lab.power_hook();
        let mut spec = LabSpec::new(nodes, "admin", Secret::new(PASSWORD.as_bytes().to_vec()));
        spec.power_hook = Some(hook.clone());
        let bmcs = BackgroundLab::start(spec).map_err(setup("lab BMCs"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(setup("PDU runtime"))?;
        let model =
            drivers::pdu::model::by_name("apc-rpdu").ok_or_else(|| PacemakerError::Setup {
                step: "PDU model".into(),
                message: "no apc-rpdu model in drivers::pdu::model".into(),
            })?;
        let mut pspec = PduLabSpec::new(1, nodes.max(8), model);
        pspec.community = Some(Secret::new(COMMUNITY.as_bytes().to_vec()));
        let pdu = rt
            .block_on(PduLab::start(pspec))
            .map_err(setup("lab PDU"))?;
        let pdu_handle = pdu
            .pdus()
            .first()
            .cloned()
            .ok_or_else(|| PacemakerError::Setup {
                step: "lab PDU".into(),
                message: "the PDU lab started no PDU".into(),
            })?;
        let wire = OutletWire::start(pdu_handle.clone(), nodes, hook)?;
        let mut bmc_relays = Vec::new();
        for b in bmcs.bmcs() {
            bmc_relays.push(UdpRelay::start(lab.net(), b.addr())?);
        }
        let pdu_relay = UdpRelay::start(lab.net(), pdu_handle.addr())?;

        // Files every node reads: fenced's config and secrets, the agents overlay, the
        // writer's wrapper.
        let d = dir.path();
        write_secret(&d.join("pw"), PASSWORD)?;
        write_secret(&d.join("community"), COMMUNITY)?;
        let mut cfg = format!(
            "[daemon]\nsocket = {FENCED_SOCKET:?}\nhistory = \"/run/palisade/history.redb\"\n\n\
             [defaults]\nattempt_timeout_s = 5\ntotal_timeout_s = 20\n\n"
        );
        for (b, relay) in bmcs.bmcs().iter().zip(&bmc_relays) {
            let _ = write!(
                cfg,
                "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = {pw:?}\ncipher_suite = 17\ntimeout_ms = 500\nretries = 2\n\n",
                n = b.name(),
                a = relay.addr(),
                pw = d.join("pw"),
            );
        }
        let _ = write!(
            cfg,
            "[devices.pdu]\nkind = \"snmp-pdu\"\naddress = \"{}\"\nmodel = \"apc-rpdu\"\ntimeout_ms = 500\nretries = 2\nversion = \"2c\"\ncommunity_file = {:?}\n\n",
            pdu_relay.addr(),
            d.join("community")
        );
        for i in 1..=nodes {
            let _ = write!(
                cfg,
                "[targets.node{i}]\nlevels = [[\"bmc-node{i}\"], [\"pdu:{i}\"]]\n\n"
            );
        }
        let config = d.join("fenced.toml");
        std::fs::write(&config, cfg).map_err(setup("fenced config"))?;
        let agents = d.join("agents");
        std::fs::create_dir_all(&agents).map_err(setup("agents directory"))?;
        set_mode(&agents, 0o755)?;
        std::os::unix::fs::symlink(&bins.fence_palisade, agents.join("fence_palisade"))
            .map_err(setup("fence_palisade link"))?;
        let writer = d.join("writer.sh");
        // The node's name comes from the node itself (written by its fenced start), so one
        // resource definition runs on any node.
        std::fs::write(
            &writer,
            format!(
                "#!/bin/sh\nexec {} write --device {} --node \"$(cat /run/palisade/node)\" --interval-ms 5\n",
                bins.workload.display(),
                disk.path().display()
            ),
        )
        .map_err(setup("writer script"))?;
        set_mode(&writer, 0o755)?;
        let container = container_name();
        make_container(d, &container, &bins.workload, disk.path())?;

        for n in lab.nodes() {
            let name = n.name().to_string();
            let fenced_bin = bins.fenced.clone();
            let config = config.clone();
            let log = d.join(format!("{name}-fenced.log"));
            lab.add_daemon(
                &name,
                "fenced",
                Box::new(move |node: &LabNode| {
                    let out = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .map_err(|e| crate::node::NodeError::Io {
                            what: format!("open {}", log.display()),
                            source: e,
                        })?;
                    let err = out.try_clone().map_err(|e| crate::node::NodeError::Io {
                        what: format!("dup {}", log.display()),
                        source: e,
                    })?;
                    node.spawn(
                        Command::new("sh")
                            .arg("-c")
                            .arg(format!(
                                "mkdir -p /run/palisade && echo {} > /run/palisade/node && exec {} run --config {}",
                                node.name(),
                                fenced_bin.display(),
                                config.display()
                            ))
                            .env("RUST_LOG", "info")
                            .stdin(Stdio::null())
                            .stdout(out)
                            .stderr(err),
                    )
                }),
            )?;
            let agents = agents.clone();
            lab.add_daemon(
                &name,
                "pacemakerd",
                Box::new(move |node: &LabNode| node.spawn(&mut pacemakerd_command(&agents))),
            )?;
        }
        let c = PacemakerCluster {
            lab,
            _wire: wire,
            bmc_relays,
            _pdu_relay: pdu_relay,
            bmcs,
            pdu,
            rt,
            disk,
            dir,
            container,
        };
        let names: Vec<String> = c.lab.nodes().iter().map(|n| n.name().to_string()).collect();
        c.wait_online(&names, Duration::from_secs(90))?;
        Ok(c)
    }

    /// The cluster lab underneath.
    pub fn lab(&self) -> &ClusterLab {
        &self.lab
    }

    /// The lab BMCs (`node1`…).
    pub fn bmcs(&self) -> &BackgroundLab {
        &self.bmcs
    }

    /// The lab PDU (outlet `i` feeds `node{i}`).
    pub fn pdu(&self) -> Option<&PduHandle> {
        self.pdu.pdus().first()
    }

    /// The address (on the lab switch) at which the nodes reach `node`'s BMC.
    pub fn bmc_relay_addr(&self, node: &str) -> Option<SocketAddr> {
        self.bmcs
            .bmcs()
            .iter()
            .zip(&self.bmc_relays)
            .find(|(b, _)| b.name() == node)
            .map(|(_, r)| r.addr())
    }

    /// The shared volume (a loop device every node sees).
    pub fn volume(&self) -> &Path {
        self.disk.path()
    }

    /// The LXC container's name.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The test's files (fenced logs, config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The runtime the PDU runs on (kept for the cluster's lifetime).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Runs `prog args` inside `node`; fails unless it exits 0.
    pub fn tool(&self, node: &str, prog: &str, args: &[&str]) -> Result<String, PacemakerError> {
        let out = self.tool_output(node, prog, args)?;
        if !out.status.success() {
            return Err(PacemakerError::Tool {
                node: node.into(),
                what: format!("{prog} {}", args.join(" ")),
                detail: output_text(&out),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `prog args` inside `node` and returns its output whatever its exit status.
    pub fn tool_output(
        &self,
        node: &str,
        prog: &str,
        args: &[&str],
    ) -> Result<Output, PacemakerError> {
        Ok(self.lab.run(
            node,
            Command::new(prog).args(args).stdin(Stdio::null()),
            TOOL_TIMEOUT,
        )?)
    }

    /// The tail of `node`'s Pacemaker log (empty while the node is off).
    pub fn pacemaker_log(&self, node: &str, lines: usize) -> String {
        let Some(root) = self.lab.node(node).ok().and_then(|n| n.lab_node().root()) else {
            return String::new();
        };
        let text = std::fs::read_to_string(root.join("var/log/pacemaker/pacemaker.log"))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `node`'s fenced log (all its boots).
    pub fn fenced_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{node}-fenced.log")))
            .unwrap_or_default()
    }

    /// Waits until `crm_mon -1` on each of `nodes` shows exactly them online and a DC.
    pub fn wait_online(&self, nodes: &[String], timeout: Duration) -> Result<(), PacemakerError> {
        let start = Instant::now();
        let mut want: Vec<&str> = nodes.iter().map(String::as_str).collect();
        want.sort_unstable();
        loop {
            let mut last = String::new();
            let mut done = true;
            for n in nodes {
                match self.tool_output(n, "crm_mon", &["-1", "--output-as=text"]) {
                    Ok(out) => {
                        let text = String::from_utf8_lossy(&out.stdout);
                        let mut online = online_nodes(&text);
                        online.sort_unstable();
                        if !(has_dc(&text) && online == want) {
                            done = false;
                            let _ = write!(last, "{n}: online {online:?}, DC {}; ", has_dc(&text));
                        }
                    }
                    Err(e) => {
                        done = false;
                        let _ = write!(last, "{n}: {e}; ");
                    }
                }
            }
            if done {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(PacemakerError::Timeout {
                    what: format!("{want:?} online with a DC"),
                    waited: timeout,
                    last,
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Configures the CIB with Pacemaker's own tools (`crm_attribute`, `cibadmin`), on
    /// `node`: fencing on (`stonith-action=off`, so a fenced node stays down for the
    /// checks), one stonith resource per node, and the writer resource.
    pub fn configure(
        &self,
        via: &str,
        device: StonithDevice,
        stonith_enabled: bool,
        writer_kind: WriterKind,
    ) -> Result<(), PacemakerError> {
        for (name, value) in [
            (
                "stonith-enabled",
                if stonith_enabled { "true" } else { "false" },
            ),
            ("stonith-action", "off"),
            ("stonith-timeout", "60s"),
            ("no-quorum-policy", "stop"),
        ] {
            self.tool(
                via,
                "crm_attribute",
                &["--type", "crm_config", "--name", name, "--update", value],
            )?;
        }
        // The writer must not move back when a node returns.
        self.tool(
            via,
            "crm_attribute",
            &[
                "--type",
                "rsc_defaults",
                "--name",
                "resource-stickiness",
                "--update",
                "100",
            ],
        )?;
        let mut resources = String::from("<resources>");
        let mut constraints = String::from("<constraints>");
        for n in self.lab.nodes() {
            let t = n.name();
            let params = match device {
                StonithDevice::Palisade => {
                    vec![
                        ("pcmk_host_list", t.to_string()),
                        ("socket", FENCED_SOCKET.to_string()),
                        // One fenced operation per attempt: fenced already retries each
                        // device and walks both levels before it answers, so Pacemaker's
                        // default of 2 re-runs the same failing walk and doubles the time
                        // to a verdict (both levels failing: 40 s instead of 20 s with 2
                        // survivors). A confirmed off is never delayed by it, and Pacemaker
                        // still tries every survivor's device and schedules new attempts.
                        ("pcmk_off_retries", "1".to_string()),
                    ]
                }
                StonithDevice::IpmiLan => {
                    let addr = self
                        .bmc_relay_addr(t)
                        .ok_or_else(|| PacemakerError::Setup {
                            step: "fence_ipmilan device".into(),
                            message: format!("no lab BMC for {t}"),
                        })?;
                    vec![
                        ("pcmk_host_list", t.to_string()),
                        // Always a lab address: never this machine's own BMC.
                        ("ip", addr.ip().to_string()),
                        ("ipport", addr.port().to_string()),
                        ("username", "admin".to_string()),
                        ("password", PASSWORD.to_string()),
                        ("lanplus", "1".to_string()),
                        ("cipher", "3".to_string()),
                    ]
                }
            };
            let agent = match device {
                StonithDevice::Palisade => "fence_palisade",
                StonithDevice::IpmiLan => "fence_ipmilan",
            };
            let _ = write!(
                resources,
                "<primitive id=\"fence-{t}\" class=\"stonith\" type=\"{agent}\"><instance_attributes id=\"fence-{t}-ia\">"
            );
            for (k, v) in params {
                let _ = write!(
                    resources,
                    "<nvpair id=\"fence-{t}-{k}\" name=\"{k}\" value=\"{v}\"/>"
                );
            }
            let _ = write!(
                resources,
                "</instance_attributes><operations><op id=\"fence-{t}-monitor\" name=\"monitor\" interval=\"30s\"/></operations></primitive>"
            );
            // A node does not run the device that fences itself (ClusterLabs' usual advice).
            let _ = write!(
                constraints,
                "<rsc_location id=\"fence-{t}-not-self\" rsc=\"fence-{t}\" node=\"{t}\" score=\"-INFINITY\"/>"
            );
        }
        let params: Vec<(&str, String)> = match writer_kind {
            WriterKind::Anything => vec![(
                "binfile",
                self.dir.path().join("writer.sh").display().to_string(),
            )],
            WriterKind::Lxc => vec![
                ("container", self.container.clone()),
                (
                    "config",
                    self.dir.path().join("lxc.conf").display().to_string(),
                ),
                ("log", self.dir.path().join("lxc.log").display().to_string()),
            ],
        };
        let agent = match writer_kind {
            WriterKind::Anything => "anything",
            WriterKind::Lxc => "lxc",
        };
        let _ = write!(
            resources,
            "<primitive id=\"{WRITER}\" class=\"ocf\" provider=\"heartbeat\" type=\"{agent}\"><instance_attributes id=\"{WRITER}-ia\">"
        );
        for (k, v) in params {
            let _ = write!(
                resources,
                "<nvpair id=\"{WRITER}-{k}\" name=\"{k}\" value=\"{v}\"/>"
            );
        }
        let _ = write!(
            resources,
            "</instance_attributes><operations><op id=\"{WRITER}-monitor\" name=\"monitor\" interval=\"2s\" timeout=\"20s\"/>\
             <op id=\"{WRITER}-start\" name=\"start\" interval=\"0\" timeout=\"30s\"/>\
             <op id=\"{WRITER}-stop\" name=\"stop\" interval=\"0\" timeout=\"20s\"/></operations></primitive>"
        );
        resources.push_str("</resources>");
        constraints.push_str("</constraints>");
        self.tool(
            via,
            "cibadmin",
            &[
                "--replace",
                "--scope",
                "resources",
                "--xml-text",
                &resources,
            ],
        )?;
        self.tool(
            via,
            "cibadmin",
            &[
                "--replace",
                "--scope",
                "constraints",
                "--xml-text",
                &constraints,
            ],
        )?;
        Ok(())
    }

    /// Where `crm_resource --locate` on `via` says the writer runs.
    pub fn writer_location(&self, via: &str) -> Result<Vec<String>, PacemakerError> {
        let out = self.tool_output(via, "crm_resource", &["--locate", "--resource", WRITER])?;
        Ok(parse_locate(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Waits until the writer runs on exactly one node (as `via` sees it) and returns it.
    pub fn wait_writer(&self, via: &str, timeout: Duration) -> Result<String, PacemakerError> {
        let start = Instant::now();
        loop {
            let at = self.writer_location(via)?;
            if let [one] = at.as_slice() {
                return Ok(one.clone());
            }
            if start.elapsed() > timeout {
                return Err(PacemakerError::Timeout {
                    what: "the writer running on one node".into(),
                    waited: timeout,
                    last: format!("{at:?}; {}", self.pacemaker_log(via, 20)),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The nodes on which a `palisade-workload write` process runs now (from each node's
    /// cgroup tree, containers included, not from Pacemaker's view).
    pub fn writer_processes(&self) -> Vec<String> {
        self.writer_pids().into_iter().map(|(n, _)| n).collect()
    }

    /// Each `palisade-workload write` process now running: its node and host pid.
    pub fn writer_pids(&self) -> Vec<(String, u32)> {
        let mut at = Vec::new();
        for n in self.lab.nodes() {
            for pid in cgroup_tree_pids(n.lab_node().cgroup_path()) {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                if args
                    .first()
                    .is_some_and(|a| a.ends_with(b"palisade-workload"))
                    && args.get(1).is_some_and(|a| *a == b"write")
                {
                    at.push((n.name().to_string(), pid));
                }
            }
        }
        at
    }

    /// Freezes `node`'s cluster stack: SIGSTOP to its Corosync and every Pacemaker daemon
    /// (`pacemakerd`, `pacemaker-*`), leaving the rest (fenced, the writer) running, as a
    /// node whose cluster software hangs. Returns the pids stopped.
    pub fn freeze_cluster_stack(&self, node: &str) -> Result<Vec<u32>, PacemakerError> {
        let n = self.lab.node(node)?;
        let mut stopped = Vec::new();
        for pid in cgroup_tree_pids(n.lab_node().cgroup_path()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let comm = comm.trim();
            if comm == "corosync" || comm.starts_with("pacemaker") {
                let raw = i32::try_from(pid).map_err(setup("pid"))?;
                // SAFETY: kill(2) with a pid read from the node's own cgroup just now.
                if unsafe { libc::kill(raw, libc::SIGSTOP) } == 0 {
                    stopped.push(pid);
                }
            }
        }
        Ok(stopped)
    }

    /// Pacemaker's fence history for `target` as `via` reports it (`stonith_admin --history '*'`).
    pub fn pacemaker_fence_history(
        &self,
        via: &str,
        target: &str,
    ) -> Result<Vec<FenceEvent>, PacemakerError> {
        // The whole history (`'*'`), as an operator asks for it, then this target's part.
        let out = self.tool(via, "stonith_admin", &["--history", "*", "--verbose"])?;
        Ok(parse_stonith_history(&out)
            .into_iter()
            .filter(|e| e.target == target)
            .collect())
    }

    /// The number of operations on `target` in `node`'s fenced history that succeeded, and
    /// all of them (JSON, newest first).
    pub fn fenced_history(
        &self,
        node: &str,
        target: &str,
        fence_node: &Path,
    ) -> Result<Vec<serde_json::Value>, PacemakerError> {
        let fence_node = fence_node.to_string_lossy();
        let out = self.tool(
            node,
            &fence_node,
            &["--socket", FENCED_SOCKET, "--json", "history", target],
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| PacemakerError::Tool {
                node: node.into(),
                what: "fence_node history --json".into(),
                detail: format!("{e}: {out}"),
            })?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

impl Drop for PacemakerCluster {
    fn drop(&mut self) {
        // Every process first (containers included), then the cgroups LXC made: nested in
        // each node's cgroup v2 group (which cannot be removed while they exist) and at the
        // root of every cgroup v1 hierarchy (this machine's cgroups are hybrid).
        for n in self.lab.nodes() {
            let _ = n.lab_node().power_off();
            remove_cgroup_children(n.lab_node().cgroup_path());
        }
        for dir in lxc_cgroups(&self.container) {
            remove_cgroup_children(&dir);
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// A container name no other cluster on the machine uses.
fn container_name() -> String {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "pw{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The cgroup directories LXC makes for `container` (`lxc.payload.NAME`,
/// `lxc.monitor.NAME`, …) at the root of each mounted hierarchy, that exist now.
pub fn lxc_cgroups(container: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    for h in hier.flatten() {
        let Ok(groups) = std::fs::read_dir(h.path()) else {
            continue;
        };
        for g in groups.flatten() {
            let name = g.file_name().to_string_lossy().to_string();
            if name.starts_with("lxc.")
                && (name.ends_with(&format!(".{container}"))
                    || name.contains(&format!(".{container}-")))
            {
                out.push(g.path());
            }
        }
    }
    out
}

/// Removes the LXC cgroups a killed test process left (`lxc.*.pwPID-N` with PID gone): its
/// nodes died with it, but cgroup directories outlive their processes.
fn remove_leaked_lxc_cgroups() {
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hier.flatten() {
        let Ok(groups) = std::fs::read_dir(h.path()) else {
            continue;
        };
        for g in groups.flatten() {
            let name = g.file_name().to_string_lossy().to_string();
            if crate::owner_is_gone(&name, "lxc.payload.pw")
                || crate::owner_is_gone(&name, "lxc.monitor.pw")
            {
                remove_cgroup_children(&g.path());
                let _ = std::fs::remove_dir(g.path());
            }
        }
    }
}

/// Removes every group below `dir`, deepest first (their processes must be dead).
fn remove_cgroup_children(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_children(&e.path());
            for _ in 0..100 {
                if std::fs::remove_dir(e.path()).is_ok() || !e.path().exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Every process in the cgroup `dir` and the groups below it.
fn cgroup_tree_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_tree_pids(&e.path()));
            }
        }
    }
    pids
}

/// Makes the writer's LXC container in `dir`: a busybox-static root file system
/// (`rootfs/`), its init script and `lxc.conf`. The container shares the node's network
/// (`lxc.net.0.type = none`: the writer needs none), sees the host's libraries and the
/// workload binary read-only, the shared volume, and the node's `/run/palisade` (for the
/// node's name, so one configuration serves every node).
fn make_container(
    dir: &Path,
    name: &str,
    workload: &Path,
    volume: &Path,
) -> Result<(), PacemakerError> {
    let root = dir.join("rootfs");
    for d in [
        "bin", "dev", "proc", "sys", "run", "tmp", "lib", "lib64", "usr", "work",
    ] {
        std::fs::create_dir_all(root.join(d)).map_err(setup("container root file system"))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(setup(
        "busybox-static into the container (Debian package busybox-static)",
    ))?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).map_err(setup("container sh"))?;
    std::os::unix::fs::symlink("busybox", root.join("bin/cat")).map_err(setup("container cat"))?;
    let exe = workload
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let bin_dir = workload.parent().unwrap_or(Path::new("/"));
    std::fs::write(
        root.join("init.sh"),
        format!(
            "#!/bin/sh
exec /work/{exe} write --device {} --node \"$(cat /run/palisade/node)\" --interval-ms 5\n",
            volume.display()
        ),
    )
    .map_err(setup("container init"))?;
    set_mode(&root.join("init.sh"), 0o755)?;
    let vol = volume.display().to_string();
    let conf = format!(
        "# The drill's writer as an LXC container (hw-tests/src/pacemaker.rs).\n\
         lxc.uts.name = {name}\n\
         lxc.rootfs.path = dir:{root}\n\
         lxc.net.0.type = none\n\
         lxc.init.cmd = /init.sh\n\
         lxc.mount.auto = proc:mixed sys:ro\n\
         lxc.mount.entry = /lib lib none ro,bind 0 0\n\
         lxc.mount.entry = /lib64 lib64 none ro,bind 0 0\n\
         lxc.mount.entry = /usr usr none ro,bind 0 0\n\
         lxc.mount.entry = {bins} work none ro,bind 0 0\n\
         lxc.mount.entry = /run/palisade run/palisade none ro,bind,create=dir 0 0\n\
         lxc.mount.entry = {vol} {vol_rel} none bind,create=file 0 0\n\
         # Loop devices (major 7) for the shared volume.\n\
         lxc.cgroup.devices.allow = b 7:* rwm\n\
         lxc.apparmor.profile = unconfined\n",
        root = root.display(),
        bins = bin_dir.display(),
        vol_rel = vol.trim_start_matches('/'),
    );
    std::fs::write(dir.join("lxc.conf"), conf).map_err(setup("lxc.conf"))?;
    Ok(())
}

/// The CIB each node boots with: empty but for `dc-deadtime`, which Pacemaker waits at start
/// for a DC to show up (default 20 s; the lab's nodes boot together in a second). Every
/// node has the same epoch 1, so a node that reboots takes the cluster's newer CIB.
const BOOTSTRAP_CIB: &str = "<cib validate-with=\"pacemaker-3.9\" epoch=\"1\" num_updates=\"0\" admin_epoch=\"0\"><configuration><crm_config><cluster_property_set id=\"cib-bootstrap-options\"><nvpair id=\"cib-bootstrap-options-dc-deadtime\" name=\"dc-deadtime\" value=\"2s\"/></cluster_property_set></crm_config><nodes/><resources/><constraints/></configuration><status/></cib>";

/// The command that starts Pacemaker on a node: its private state and log directories, the
/// agents overlay, then `pacemakerd -f`.
fn pacemakerd_command(agents: &Path) -> Command {
    let script = format!(
        r#"set -e
for d in /var/lib/pacemaker /var/log/pacemaker; do mount -t tmpfs -o mode=0770 tmpfs "$d"; done
for d in cib pengine blackbox cores; do mkdir -p -m 0750 /var/lib/pacemaker/$d; done
cat > /var/lib/pacemaker/cib/cib.xml <<'CIB'
{bootstrap}
CIB
chown -R hacluster:haclient /var/lib/pacemaker /var/log/pacemaker
mount -t overlay overlay -o lowerdir={agents}:/usr/sbin /usr/sbin
exec pacemakerd -f
"#,
        agents = agents.display(),
        bootstrap = BOOTSTRAP_CIB,
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(script)
        .env("PCMK_logfile", "/var/log/pacemaker/pacemaker.log")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn set_mode(p: &Path, mode: u32) -> Result<(), PacemakerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(setup(format!("mode of {}", p.display())))
}

fn write_secret(p: &Path, secret: &str) -> Result<(), PacemakerError> {
    std::fs::write(p, format!("{secret}\n")).map_err(setup(format!("{}", p.display())))?;
    set_mode(p, 0o600)
}

/// The nodes `crm_mon -1` lists as online (pure).
pub fn online_nodes(crm_mon: &str) -> Vec<String> {
    crm_mon
        .lines()
        .filter_map(|l| l.trim().strip_prefix("* Online: ["))
        .flat_map(|rest| {
            rest.trim_end_matches(']')
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `crm_mon -1` names a DC (pure).
pub fn has_dc(crm_mon: &str) -> bool {
    crm_mon
        .lines()
        .any(|l| l.trim().starts_with("* Current DC: ") && !l.contains("NONE"))
}

/// The nodes in `crm_resource --locate` output (pure).
pub fn parse_locate(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(" is running on: "))
        .map(|(_, n)| n.split_whitespace().next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// One line of `stonith_admin --history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceEvent {
    /// `off`, `reboot`, `on`.
    pub action: String,
    /// The fenced node.
    pub target: String,
    /// Whether it succeeded.
    pub successful: bool,
    /// Whether it is still running (neither succeeded nor failed yet).
    pub pending: bool,
    /// The node that ran the device (`delegate=`), if named.
    pub delegate: Option<String>,
}

/// Parses `stonith_admin --history` (Pacemaker 2.1.5's text: `turning off of node1
/// successful: delegate=node2, client=…`, `rebooting of …`, `unfencing of …`, each
/// `successful`, `failed` or `pending`) (pure).
pub fn parse_stonith_history(text: &str) -> Vec<FenceEvent> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("* ").unwrap_or(l);
            let (action, rest) = l.split_once(" of ")?;
            let action = match action {
                "turning off" => "off",
                "rebooting" => "reboot",
                "unfencing" => "on",
                other => other,
            };
            let (target, rest) = rest.split_once(' ')?;
            let successful = rest.starts_with("successful");
            let pending = rest.starts_with("pending");
            if !successful && !pending && !rest.starts_with("failed") {
                return None;
            }
            let delegate = rest
                .split_once("delegate=")
                .map(|(_, d)| d.split([',', ' ']).next().unwrap_or("").to_string());
            Some(FenceEvent {
                action: action.to_string(),
                target: target.to_string(),
                successful,
                pending,
                delegate,
            })
        })
        .collect()
}

/// Starts an arbitrary command on a node as a daemon; helper for tests that add one.
pub fn spawn_on(node: &LabNode, cmd: &mut Command) -> Result<NodeProcess, PacemakerError> {
    node.spawn(cmd).map_err(|e| PacemakerError::Setup {
        step: format!("start {:?} on {}", cmd.get_program(), node.name()),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_crm_mon_locate_and_history() {
        let mon = "Cluster Summary:\n  * Stack: corosync\n  * Current DC: node2 (version 2.1.5-a3f44794f94) - partition with quorum\n\nNode List:\n  * Online: [ node1 node2 node3 ]\n";
        assert_eq!(online_nodes(mon), vec!["node1", "node2", "node3"]);
        assert!(has_dc(mon));
        assert!(!has_dc("  * Current DC: NONE\n"));
        assert_eq!(
            parse_locate("resource writer is running on: node3 \n"),
            vec!["node3"]
        );
        assert!(parse_locate("resource writer is NOT running\n").is_empty());
        let h = "turning off of node1 successful: delegate=node2, client=pacemaker-controld.47, origin=node1, completed='2026-12-07 12:47:51Z'\n* turning off of node1 failed: delegate=node3, client=x, origin=node3, last-failed='…'\n1 event found\n";
        let ev = parse_stonith_history(h);
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[0],
            FenceEvent {
                action: "off".into(),
                target: "node1".into(),
                successful: true,
                pending: false,
                delegate: Some("node2".into())
            }
        );
        assert!(!ev[1].successful && !ev[1].pending);
        let p = parse_stonith_history(
            "turning off of node3 pending: client=pacemaker-controld.40, origin=node1\n",
        );
        assert!(p[0].pending && !p[0].successful);
    }
}
