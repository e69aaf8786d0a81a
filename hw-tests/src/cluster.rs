//! Cluster lab: lab nodes ([`crate::node`]) that each run a real Corosync 3 (knet, votequorum)
//! over the lab bridge, so cluster software (fenced's membership, Pacemaker) is tested against
//! the membership engine clusters really run, on one machine.
//!
//! Each node is a network namespace, a mount namespace (private `/run`, `/dev/shm`,
//! `/etc/corosync`, `/var/lib/corosync` and `/var/log/corosync`, each a fresh tmpfs at every
//! power on), a PID namespace and a cgroup. [`ClusterLab::new`] writes every node's
//! `corosync.conf` and authkey into its private `/etc/corosync`, starts `corosync -f` on each
//! and returns once every node reports the whole membership, quorate. Then:
//!
//! - [`ClusterLab::spawn`] / [`ClusterLab::run`]: any command on a node, sharing its network,
//!   mount and PID namespaces and in its cgroup, so a client reaches that node's Corosync IPC
//!   (libqb's abstract sockets live in the network namespace, its ring buffers in `/dev/shm`).
//! - [`ClusterLab::power_off`] kills everything on a node (Corosync included);
//!   [`ClusterLab::power_on`] boots it again: Corosync, then the daemons registered with
//!   [`ClusterLab::add_daemon`], and waits until it has rejoined.
//! - [`ClusterLab::cut`], [`ClusterLab::partition`], [`ClusterLab::heal`]: nftables rules in
//!   the nodes' own namespaces (never the host's).
//! - [`ClusterLab::power_hook`]: a simulated BMC's power off of node X is `power_off(X)`.
//!
//! Dropping the lab kills every process, and removes the cgroups and namespaces (the private
//! mounts die with the last process of each node); what a killed test leaked is removed by
//! the next lab ([`LabNet::new`]).
//!
//! ```no_run
//! use hw_tests::cluster::ClusterLab;
//! # fn main() -> Result<(), hw_tests::cluster::ClusterError> {
//! let lab = ClusterLab::new(3)?; // quorate when this returns
//! lab.partition(&[&["node1"], &["node2", "node3"]])?;
//! lab.wait_converged(std::time::Duration::from_secs(30))?;
//! assert!(!lab.status("node1")?.quorate);
//! lab.heal_all()?;
//! # Ok(())
//! # }
//! ```
//!
//! # A daemon on a node, and its Corosync IPC
//!
//! A process started with [`ClusterLab::spawn`], [`ClusterLab::run`] or from a
//! [`ClusterLab::add_daemon`] start function (which gets the [`LabNode`]: call
//! [`LabNode::spawn`]) enters the node's network, mount and PID namespaces and its cgroup
//! before it executes, so libcpg, libquorum, libvotequorum and libcmap in it connect to
//! *that node's* Corosync: libqb's IPC is an abstract Unix socket (scoped by the network
//! namespace) plus ring buffers in the node's private `/dev/shm`. Nothing else is needed (no
//! `nsenter`, no environment). A process on the host, or on another node, cannot reach it.
//!
//! The node sees the host's files except [`PRIVATE_DIRS`], which are empty at every power
//! on: a daemon's per-node files (its config, socket, state) belong under the node's `/run`
//! (write them through [`LabNode::root`] inside the start function, which runs again at
//! every power on), shared read-only files (binaries, a common config) can stay on the host.
//! A start function runs once Corosync answers its IPC, so a daemon may connect at once; its
//! stdout and stderr are whatever the `Command` says (a file under the node's root, a pipe).
//! [`cpg::CpgMember`] is a ready CPG client for checks, and [`ClusterLab::cpg_groups`] lists
//! what Corosync itself sees (`corosync-cpgtool`).
//!
//! ```no_run
//! use hw_tests::cluster::{cpg::CpgMember, ClusterLab};
//! use hw_tests::node::NodeError;
//! use std::process::{Command, Stdio};
//! use std::time::Duration;
//! # fn main() -> Result<(), hw_tests::cluster::ClusterError> {
//! let lab = ClusterLab::new(3)?;
//! // A daemon on node2, started now and again after Corosync at every power on of node2;
//! // killed with the node (power off, drop of the lab).
//! lab.add_daemon(
//!     "node2",
//!     "fenced",
//!     Box::new(|node| {
//!         let root = node.root().ok_or_else(|| NodeError::PoweredOff(node.name().into()))?;
//!         std::fs::write(root.join("run/fenced.toml"), "# this node's config\n")
//!             .map_err(|e| NodeError::Io { what: "write node2's config".into(), source: e })?;
//!         node.spawn(
//!             Command::new("/usr/local/bin/fenced")
//!                 .args(["run", "--config", "/run/fenced.toml"])
//!                 .stdin(Stdio::null()),
//!         )
//!     }),
//! )?;
//! // Any tool run on a node talks to that node's Corosync.
//! let out = lab.run("node2", Command::new("corosync-quorumtool").arg("-s"), Duration::from_secs(5))?;
//! assert!(out.status.success());
//! // A CPG member on node3 sees the daemon's group once the daemon joined it.
//! let mut member = CpgMember::join(&lab, "node3", "fenced")?;
//! member.wait_members(&[2, 3], Duration::from_secs(10))?;
//! assert!(lab.cpg_groups("node1")?.contains_key("fenced"));
//! # Ok(())
//! # }
//! ```

pub mod cpg;

use crate::lab::node::{PowerEvent, PowerHook};
use crate::node::{LabNet, LabNode, NodeError, NodeProcess, NodeSpec, Transition};
use rand::RngCore;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

/// Directories each cluster node gets as a fresh private tmpfs (Corosync's runtime, IPC,
/// state, configuration and logs).
pub const PRIVATE_DIRS: [&str; 5] = [
    "/run",
    "/dev/shm",
    "/etc/corosync",
    "/var/lib/corosync",
    "/var/log/corosync",
];

/// The Corosync binary the lab runs.
pub const COROSYNC: &str = "/usr/sbin/corosync";

/// The cluster name written into every `corosync.conf`.
pub const CLUSTER_NAME: &str = "palisade-lab";

/// How long one tool run inside a node may take before it counts as hung.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node's Corosync may take to answer its IPC after it started.
const IPC_WAIT: Duration = Duration::from_secs(20);

/// How long [`ClusterLab::new`] and [`ClusterLab::power_on`] wait for the membership.
pub const FORM_WAIT: Duration = Duration::from_secs(60);

/// Why a cluster lab operation failed; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The lab node underneath failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The spec or an argument is inconsistent.
    #[error("cluster lab: {0}")]
    Spec(String),
    /// No node of that name.
    #[error("cluster lab: no node `{0}` (nodes are node1..nodeN)")]
    UnknownNode(String),
    /// Writing a node's configuration failed.
    #[error("cluster lab: cannot write {path} on {node}: {source}")]
    Write {
        /// The node.
        node: String,
        /// The file, as the node sees it.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A Corosync tool inside a node failed or printed something unexpected.
    #[error("cluster lab: `{what}` on {node} failed: {detail}; see the node's /var/log/corosync/corosync.log (ClusterLab::log)")]
    Tool {
        /// The node.
        node: String,
        /// The command.
        what: String,
        /// Its exit status and output.
        detail: String,
    },
    /// A state was not reached in time.
    #[error("cluster lab: {what} not reached within {waited:?}; last seen: {last}")]
    Timeout {
        /// The state waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// What the nodes reported last.
        last: String,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the cluster is configured.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// How many nodes (`node1`..`nodeN`, node ids 1..N, one vote each).
    pub nodes: usize,
    /// votequorum `two_node`: with two nodes, either alone is quorate (once both were seen,
    /// if `wait_for_all`).
    pub two_node: bool,
    /// votequorum `wait_for_all`: quorum only once all nodes were seen together after a start.
    pub wait_for_all: bool,
    /// The totem token timeout. Debian's default is 3000 ms; the lab uses 1000 ms so a
    /// membership change takes about two seconds (token plus consensus, 1.2 × token), which
    /// still rides out a loaded two-core machine without spurious splits.
    pub token_ms: u32,
}

impl ClusterSpec {
    /// `n` nodes; with two, `two_node` and `wait_for_all` as votequorum enables them by
    /// default for two-node clusters.
    pub fn new(n: usize) -> ClusterSpec {
        ClusterSpec {
            nodes: n,
            two_node: n == 2,
            wait_for_all: n == 2,
            token_ms: 1000,
        }
    }
}

/// The name of node `id` (1-based).
pub fn node_name(id: u32) -> String {
    format!("node{id}")
}

/// The `corosync.conf` of a cluster whose node `i` (1-based) has address `addrs[i-1]` (pure,
/// the same text on every node).
pub fn corosync_conf(spec: &ClusterSpec, addrs: &[Ipv4Addr]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# Written by the Palisade cluster lab (hw-tests/src/cluster.rs).\n\
         totem {{\n\
         \tversion: 2\n\
         \tcluster_name: {CLUSTER_NAME}\n\
         \ttransport: knet\n\
         \tcrypto_cipher: aes256\n\
         \tcrypto_hash: sha256\n\
         \t# Shortened for tests (Debian: 3000); consensus stays 1.2 x token.\n\
         \ttoken: {}\n\
         }}\n\
         nodelist {{\n",
        spec.token_ms
    );
    for (i, a) in addrs.iter().enumerate() {
        let id = i + 1;
        let _ = write!(
            s,
            "\tnode {{\n\t\tring0_addr: {a}\n\t\tname: node{id}\n\t\tnodeid: {id}\n\t}}\n"
        );
    }
    let _ = write!(
        s,
        "}}\n\
         quorum {{\n\
         \tprovider: corosync_votequorum\n\
         \ttwo_node: {}\n\
         \twait_for_all: {}\n\
         }}\n\
         system {{\n\
         \t# The host is shared: no real-time priority 99 for lab nodes (Debian's default\n\
         \t# sched_rr: yes), and never leave the node's cgroup (power off is cgroup.kill).\n\
         \tsched_rr: no\n\
         \tmove_to_root_cgroup: no\n\
         }}\n\
         logging {{\n\
         \t# The node's private /var/log/corosync; syslog would reach the host's.\n\
         \tto_logfile: yes\n\
         \tlogfile: /var/log/corosync/corosync.log\n\
         \tto_syslog: no\n\
         \tto_stderr: no\n\
         \ttimestamp: on\n\
         }}\n",
        u8::from(spec.two_node),
        u8::from(spec.wait_for_all)
    );
    s
}

/// What `corosync-quorumtool -s` reports on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuorumStatus {
    /// `Quorate: Yes`.
    pub quorate: bool,
    /// The node ids in this node's membership, sorted.
    pub members: Vec<u32>,
    /// `Ring ID` (changes with every membership change).
    pub ring_id: String,
    /// `Expected votes`.
    pub expected_votes: u32,
    /// `Total votes`.
    pub total_votes: u32,
    /// `Quorum` (votes needed).
    pub quorum: u32,
    /// `Flags` (e.g. `2Node Quorate WaitForAll`).
    pub flags: String,
}

impl QuorumStatus {
    /// Parses the output of `corosync-quorumtool -s` (pure).
    pub fn parse(text: &str) -> Result<QuorumStatus, String> {
        let mut st = QuorumStatus::default();
        let mut seen_quorate = false;
        let mut in_members = false;
        let num = |k: &str, v: &str| {
            v.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| format!("`{k}: {v}` is not a number"))
        };
        for line in text.lines() {
            let t = line.trim();
            if in_members {
                // `    Nodeid      Votes Name`, then one row per member.
                let mut f = t.split_whitespace();
                if let Some(id) = f.next().and_then(|n| n.parse::<u32>().ok()) {
                    st.members.push(id);
                }
                continue;
            }
            if t.starts_with("Nodeid") {
                in_members = true;
                continue;
            }
            let Some((k, v)) = t.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "Quorate" => {
                    seen_quorate = true;
                    st.quorate = v.eq_ignore_ascii_case("yes");
                }
                "Ring ID" => st.ring_id = v.to_string(),
                "Expected votes" => st.expected_votes = num(k, v)?,
                "Total votes" => st.total_votes = num(k, v)?,
                "Quorum" => st.quorum = num(k, v)?,
                "Flags" => st.flags = v.to_string(),
                _ => {}
            }
        }
        if !seen_quorate {
            return Err("no `Quorate:` line".into());
        }
        st.members.sort_unstable();
        Ok(st)
    }
}

/// Starts a daemon on a node; called at registration and at each power on.
pub type DaemonStart = Box<dyn Fn(&LabNode) -> Result<NodeProcess, NodeError> + Send + Sync>;

struct Daemon {
    name: String,
    start: DaemonStart,
    running: Option<NodeProcess>,
}

/// Which lab traffic a node drops (its nftables rules).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// No rules.
    Open,
    /// Everything on `eth0` ([`LabNode::cut_off`]).
    Cut,
    /// Traffic with these nodes (0-based indices).
    From(BTreeSet<usize>),
}

/// One cluster node: a lab node with its Corosync and its registered daemons.
pub struct ClusterNode {
    id: u32,
    node: Arc<LabNode>,
    conf: String,
    authkey: Arc<zeroize::Zeroizing<Vec<u8>>>,
    corosync: Mutex<Option<NodeProcess>>,
    daemons: Mutex<Vec<Daemon>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id)
            .field("node", &self.node.name())
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Its Corosync node id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its name (`nodeN`).
    pub fn name(&self) -> &str {
        self.node.name()
    }

    /// The lab node underneath (addresses, cgroup, raw spawn).
    pub fn lab_node(&self) -> &Arc<LabNode> {
        &self.node
    }

    /// The host pid of its Corosync, while it runs.
    pub fn corosync_pid(&self) -> Option<u32> {
        lock(&self.corosync).as_ref().map(NodeProcess::id)
    }

    fn write(&self, root: &Path, path: &str, data: &[u8], mode: u32) -> Result<(), ClusterError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| ClusterError::Write {
            node: self.name().to_string(),
            path: PathBuf::from(path),
            source,
        };
        let full = root.join(path.trim_start_matches('/'));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&full)
            .map_err(err)?;
        f.write_all(data).map_err(err)
    }

    /// Boots the node: power on (fresh private directories), writes Corosync's files, starts
    /// Corosync, waits for its IPC, starts the registered daemons. Does not wait for the
    /// membership.
    fn boot(&self) -> Result<(), ClusterError> {
        self.node.power_on()?;
        let root = self
            .node
            .root()
            .ok_or_else(|| ClusterError::Spec(format!("{} has no mount namespace", self.name())))?;
        self.write(
            &root,
            "/etc/corosync/corosync.conf",
            self.conf.as_bytes(),
            0o644,
        )?;
        // Corosync refuses an authkey others can read.
        self.write(&root, "/etc/corosync/authkey", &self.authkey, 0o400)?;
        {
            let mut c = lock(&self.corosync);
            if c.as_mut().is_some_and(|p| matches!(p.try_wait(), Ok(None))) {
                return Ok(());
            }
            *c = Some(
                self.node.spawn(
                    Command::new(COROSYNC)
                        .arg("-f")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                )?,
            );
        }
        self.wait_ipc()?;
        let mut daemons = lock(&self.daemons);
        for d in daemons.iter_mut() {
            d.running = Some((d.start)(&self.node)?);
        }
        Ok(())
    }

    /// Waits until this node's Corosync answers `corosync-quorumtool -s`.
    fn wait_ipc(&self) -> Result<(), ClusterError> {
        let until = Instant::now() + IPC_WAIT;
        loop {
            let last = match self.status() {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if let Some(c) = lock(&self.corosync).as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(ClusterError::Tool {
                        node: self.name().to_string(),
                        what: "corosync -f".into(),
                        detail: format!("exited with {st}: {}", self.log_tail()),
                    });
                }
            }
            if Instant::now() > until {
                return Err(ClusterError::Timeout {
                    what: format!("{}'s Corosync answering its IPC", self.name()),
                    waited: IPC_WAIT,
                    last,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills everything on the node; its processes are reaped when this returns.
    fn off(&self) -> Result<Transition, ClusterError> {
        let init = self.node.holder_pid();
        let t = self.node.power_off()?;
        // Dead already: dropping only reaps them.
        lock(&self.corosync).take();
        for d in lock(&self.daemons).iter_mut() {
            d.running.take();
        }
        // The PID namespace's init finishes exiting once the others are reaped (just now):
        // wait for that too, so no process of the node is left when this returns.
        if let Some(pid) = init {
            let until = Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
            }) {
                if Instant::now() > until {
                    return Err(ClusterError::Timeout {
                        what: format!("the init of {}'s PID namespace exiting", self.name()),
                        waited: Duration::from_secs(10),
                        last: format!("pid {pid} still runs"),
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(t)
    }

    /// Runs `cmd` on the node and collects its output, killing it after `timeout`.
    pub fn run(&self, cmd: &mut Command, timeout: Duration) -> Result<Output, ClusterError> {
        let what = format!("{cmd:?}");
        let p = self.node.spawn(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )?;
        let pid = p.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(p.wait_with_output());
        });
        let tool = |detail: String| ClusterError::Tool {
            node: self.name().to_string(),
            what: what.clone(),
            detail,
        };
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(|e| tool(e.to_string())),
            Err(_) => {
                // SAFETY: kill(2) of our own unreaped child: the pid cannot be reused yet.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                let _ = rx.recv();
                Err(tool(format!("no answer within {timeout:?}; killed")))
            }
        }
    }

    /// What `corosync-quorumtool -s` says on this node.
    pub fn status(&self) -> Result<QuorumStatus, ClusterError> {
        let out = self.run(Command::new("corosync-quorumtool").arg("-s"), TOOL_TIMEOUT)?;
        let text = String::from_utf8_lossy(&out.stdout);
        // Exit 2 is "not quorate", a valid answer.
        let answered = matches!(out.status.code(), Some(0) | Some(2));
        let parsed = if answered {
            QuorumStatus::parse(&text)
        } else {
            Err(String::new())
        };
        parsed.map_err(|why| ClusterError::Tool {
            node: self.name().to_string(),
            what: "corosync-quorumtool -s".into(),
            detail: format!(
                "{} {why}: {} {}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }

    /// The CPG groups this node's Corosync knows, with their members (`corosync-cpgtool -d ,`).
    pub fn cpg_groups(&self) -> Result<BTreeMap<String, Vec<cpg::CpgAddr>>, ClusterError> {
        let out = self.run(
            Command::new("corosync-cpgtool").args(["-d", ","]),
            TOOL_TIMEOUT,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let parsed = if out.status.success() {
            cpg::parse_cpgtool(&text)
        } else {
            Err(String::new())
        };
        parsed.map_err(|why| ClusterError::Tool {
            node: self.name().to_string(),
            what: "corosync-cpgtool -d ,".into(),
            detail: format!(
                "{} {why}: {} {}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }

    /// The resident memory of its Corosync in KiB (`VmRSS` of `/proc/PID/status`), while it runs.
    pub fn corosync_rss_kib(&self) -> Option<u64> {
        let pid = self.corosync_pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }

    /// The node's Corosync log (its private `/var/log/corosync/corosync.log`).
    pub fn log(&self) -> String {
        self.node
            .root()
            .and_then(|r| std::fs::read_to_string(r.join("var/log/corosync/corosync.log")).ok())
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join(" | ")
    }
}

/// A running Corosync cluster of lab nodes.
pub struct ClusterLab {
    spec: ClusterSpec,
    links: Mutex<Vec<Link>>,
    // Field order is drop order: the nodes' processes are reaped before the net goes.
    nodes: Vec<Arc<ClusterNode>>,
    net: LabNet,
}

impl std::fmt::Debug for ClusterLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLab")
            .field("spec", &self.spec)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl ClusterLab {
    /// `n` nodes with [`ClusterSpec::new`], quorate when this returns.
    pub fn new(n: usize) -> Result<ClusterLab, ClusterError> {
        Self::with_spec(ClusterSpec::new(n))
    }

    /// A cluster as `spec` says; returns once every node reports all `n` members, quorate.
    pub fn with_spec(spec: ClusterSpec) -> Result<ClusterLab, ClusterError> {
        let lab = Self::start(spec)?;
        lab.wait_quorate_all(FORM_WAIT)?;
        Ok(lab)
    }

    /// Creates the nodes and starts Corosync on each, without waiting for the membership.
    pub fn start(spec: ClusterSpec) -> Result<ClusterLab, ClusterError> {
        if spec.nodes == 0 || spec.nodes > 32 {
            return Err(ClusterError::Spec(format!(
                "{} nodes asked; a cluster lab has 1 to 32",
                spec.nodes
            )));
        }
        if spec.two_node && spec.nodes != 2 {
            return Err(ClusterError::Spec(
                "two_node needs exactly 2 nodes (votequorum ignores it otherwise)".into(),
            ));
        }
        if spec.token_ms < 300 {
            return Err(ClusterError::Spec(format!(
                "token {} ms is below 300 ms: Corosync would split spuriously on a loaded machine",
                spec.token_ms
            )));
        }
        let mut net = LabNet::new()?;
        let mut key = zeroize::Zeroizing::new(vec![0u8; 256]);
        rand::thread_rng().fill_bytes(&mut key);
        let authkey = Arc::new(key);
        let mut lab_nodes = Vec::new();
        for id in 1..=spec.nodes as u32 {
            let mut ns = NodeSpec::new(node_name(id));
            ns.private_dirs = PRIVATE_DIRS.iter().map(PathBuf::from).collect();
            ns.pid_namespace = true;
            lab_nodes.push(net.add_node(ns)?);
        }
        let addrs: Vec<Ipv4Addr> = lab_nodes.iter().map(|n| n.addr()).collect();
        let conf = corosync_conf(&spec, &addrs);
        let nodes: Vec<Arc<ClusterNode>> = lab_nodes
            .into_iter()
            .zip(1u32..)
            .map(|(node, id)| {
                Arc::new(ClusterNode {
                    id,
                    node,
                    conf: conf.clone(),
                    authkey: authkey.clone(),
                    corosync: Mutex::new(None),
                    daemons: Mutex::new(Vec::new()),
                })
            })
            .collect();
        let lab = ClusterLab {
            links: Mutex::new(vec![Link::Open; spec.nodes]),
            spec,
            nodes,
            net,
        };
        for n in &lab.nodes {
            n.boot()?;
        }
        Ok(lab)
    }

    /// The spec the lab was made with.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The nodes, `node1` first.
    pub fn nodes(&self) -> &[Arc<ClusterNode>] {
        &self.nodes
    }

    /// The lab network (the switch hosts controllers at [`LabNet::switch_addr`]).
    pub fn net(&self) -> &LabNet {
        &self.net
    }

    fn index(&self, name: &str) -> Result<usize, ClusterError> {
        self.nodes
            .iter()
            .position(|n| n.name() == name)
            .ok_or_else(|| ClusterError::UnknownNode(name.to_string()))
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Arc<ClusterNode>, ClusterError> {
        Ok(&self.nodes[self.index(name)?])
    }

    /// What `corosync-quorumtool -s` says on `name`.
    pub fn status(&self, name: &str) -> Result<QuorumStatus, ClusterError> {
        self.node(name)?.status()
    }

    /// The CPG groups `name`'s Corosync knows, with their members ([`ClusterNode::cpg_groups`]).
    pub fn cpg_groups(
        &self,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<cpg::CpgAddr>>, ClusterError> {
        self.node(name)?.cpg_groups()
    }

    /// Starts `cmd` on `name` (its network, mount and PID namespaces, its cgroup).
    pub fn spawn(&self, name: &str, cmd: &mut Command) -> Result<NodeProcess, ClusterError> {
        Ok(self.node(name)?.node.spawn(cmd)?)
    }

    /// Runs `cmd` on `name` and collects its output (killed after `timeout`).
    pub fn run(
        &self,
        name: &str,
        cmd: &mut Command,
        timeout: Duration,
    ) -> Result<Output, ClusterError> {
        self.node(name)?.run(cmd, timeout)
    }

    /// Registers a daemon of `name` (e.g. fenced): started now if the node is on, and again
    /// after Corosync at every power on; killed with the node at power off.
    pub fn add_daemon(
        &self,
        name: &str,
        daemon: &str,
        start: DaemonStart,
    ) -> Result<(), ClusterError> {
        let node = self.node(name)?;
        let running = if node.node.is_on() {
            Some(start(&node.node)?)
        } else {
            None
        };
        lock(&node.daemons).push(Daemon {
            name: daemon.to_string(),
            start,
            running,
        });
        Ok(())
    }

    /// SIGKILLs the registered daemon `daemon` of `name` and reaps it (no drain, no clean
    /// up: a crash); the node and its other processes keep running. `Unchanged` if it was
    /// not running. It stays registered: [`ClusterLab::start_daemon`] or the next power on
    /// starts it again.
    pub fn kill_daemon(&self, name: &str, daemon: &str) -> Result<Transition, ClusterError> {
        let node = self.node(name)?;
        let running = lock(&node.daemons)
            .iter_mut()
            .find(|d| d.name == daemon)
            .ok_or_else(|| {
                ClusterError::Spec(format!("no daemon `{daemon}` registered on {name}"))
            })?
            .running
            .take();
        // Dropping a NodeProcess SIGKILLs and reaps it.
        Ok(match running {
            Some(p) => {
                drop(p);
                Transition::Changed
            }
            None => Transition::Unchanged,
        })
    }

    /// Starts the registered daemon `daemon` of `name` again if it is not running (after
    /// [`ClusterLab::kill_daemon`], or when it exited); `Unchanged` if it runs. Fails when
    /// the node is off (its next power on starts it).
    pub fn start_daemon(&self, name: &str, daemon: &str) -> Result<Transition, ClusterError> {
        let node = self.node(name)?;
        if !node.node.is_on() || node.corosync_pid().is_none() {
            return Err(ClusterError::Node(NodeError::PoweredOff(name.to_string())));
        }
        let mut daemons = lock(&node.daemons);
        let d = daemons
            .iter_mut()
            .find(|d| d.name == daemon)
            .ok_or_else(|| {
                ClusterError::Spec(format!("no daemon `{daemon}` registered on {name}"))
            })?;
        if d.running
            .as_mut()
            .is_some_and(|p| matches!(p.try_wait(), Ok(None)))
        {
            return Ok(Transition::Unchanged);
        }
        d.running = Some((d.start)(&node.node)?);
        Ok(Transition::Changed)
    }

    /// The host pid of each registered daemon of `name` now running, by daemon name.
    pub fn daemon_pids(&self, name: &str) -> Result<Vec<(String, u32)>, ClusterError> {
        Ok(lock(&self.node(name)?.daemons)
            .iter()
            .filter_map(|d| d.running.as_ref().map(|p| (d.name.clone(), p.id())))
            .collect())
    }

    /// Kills everything on `name` (Corosync and daemons included) and returns once no process
    /// of it is left. The others notice after the token timeout.
    pub fn power_off(&self, name: &str) -> Result<Transition, ClusterError> {
        self.node(name)?.off()
    }

    /// Boots `name` again (Corosync, then its daemons) and waits until every node's view
    /// matches the lab's links ([`ClusterLab::wait_converged`]).
    pub fn power_on(&self, name: &str) -> Result<Transition, ClusterError> {
        let node = self.node(name)?;
        if node.node.is_on() && node.corosync_pid().is_some() {
            return Ok(Transition::Unchanged);
        }
        node.boot()?;
        self.wait_converged(FORM_WAIT)?;
        Ok(Transition::Changed)
    }

    /// Drops all of `name`'s lab traffic (nftables in its namespace); it keeps running.
    pub fn cut(&self, name: &str) -> Result<(), ClusterError> {
        let i = self.index(name)?;
        self.nodes[i].node.cut_off()?;
        lock(&self.links)[i] = Link::Cut;
        Ok(())
    }

    /// Splits the cluster: every node in exactly one group; each node drops traffic with
    /// the nodes of the other groups.
    pub fn partition(&self, groups: &[&[&str]]) -> Result<(), ClusterError> {
        let mut group_of = vec![None; self.nodes.len()];
        for (g, members) in groups.iter().enumerate() {
            for name in *members {
                let i = self.index(name)?;
                if group_of[i].replace(g).is_some() {
                    return Err(ClusterError::Spec(format!(
                        "{name} is in two groups of the partition"
                    )));
                }
            }
        }
        if let Some(i) = group_of.iter().position(Option::is_none) {
            return Err(ClusterError::Spec(format!(
                "{} is in no group of the partition; name every node",
                self.nodes[i].name()
            )));
        }
        let mut links = lock(&self.links);
        for (i, node) in self.nodes.iter().enumerate() {
            let others: BTreeSet<usize> = (0..self.nodes.len())
                .filter(|&j| group_of[j] != group_of[i])
                .collect();
            if others.is_empty() {
                node.node.heal()?;
                links[i] = Link::Open;
            } else {
                let addrs: Vec<Ipv4Addr> =
                    others.iter().map(|&j| self.nodes[j].node.addr()).collect();
                node.node.cut_off_from(&addrs)?;
                links[i] = Link::From(others);
            }
        }
        Ok(())
    }

    /// Reconnects `name`: removes its rules, and removes it from the other nodes' rules.
    pub fn heal(&self, name: &str) -> Result<(), ClusterError> {
        let i = self.index(name)?;
        let mut links = lock(&self.links);
        self.nodes[i].node.heal()?;
        links[i] = Link::Open;
        for (j, link) in links.iter_mut().enumerate() {
            if let Link::From(set) = link {
                if set.remove(&i) {
                    let node = &self.nodes[j].node;
                    if set.is_empty() {
                        node.heal()?;
                        *link = Link::Open;
                    } else {
                        let addrs: Vec<Ipv4Addr> =
                            set.iter().map(|&k| self.nodes[k].node.addr()).collect();
                        node.cut_off_from(&addrs)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every partition rule of the lab.
    pub fn heal_all(&self) -> Result<(), ClusterError> {
        let mut links = lock(&self.links);
        for (n, link) in self.nodes.iter().zip(links.iter_mut()) {
            n.node.heal()?;
            *link = Link::Open;
        }
        Ok(())
    }

    /// The membership each node should see now (node ids), from power and links: the nodes
    /// it reaches both ways and that are on. `None` for a node that is off.
    pub fn expected_views(&self) -> Vec<Option<Vec<u32>>> {
        let links = lock(&self.links);
        let n = self.nodes.len();
        let on: Vec<bool> = self
            .nodes
            .iter()
            .map(|c| c.node.is_on() && c.corosync_pid().is_some())
            .collect();
        let drops = |a: usize, b: usize| match &links[a] {
            Link::Open => false,
            Link::Cut => true,
            Link::From(s) => s.contains(&b),
        };
        (0..n)
            .map(|i| {
                on[i].then(|| {
                    (0..n)
                        .filter(|&j| j == i || (on[j] && !drops(i, j) && !drops(j, i)))
                        .map(|j| self.nodes[j].id)
                        .collect()
                })
            })
            .collect()
    }

    /// Waits until every running node reports the membership [`ClusterLab::expected_views`]
    /// says; returns how long that took.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, ClusterError> {
        self.wait_for("the expected memberships", timeout, |_, st, expected| {
            st.members == expected
        })
    }

    /// Waits until every node is on and reports all nodes as members, quorate.
    pub fn wait_quorate_all(&self, timeout: Duration) -> Result<Duration, ClusterError> {
        let all: Vec<u32> = self.nodes.iter().map(|n| n.id).collect();
        self.wait_for("all nodes members and quorate", timeout, |_, st, _| {
            st.quorate && st.members == all
        })
    }

    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&ClusterNode, &QuorumStatus, &[u32]) -> bool,
    ) -> Result<Duration, ClusterError> {
        let start = Instant::now();
        loop {
            let views = self.expected_views();
            let mut last = String::new();
            let mut done = true;
            for (node, view) in self.nodes.iter().zip(&views) {
                let Some(view) = view else { continue };
                match node.status() {
                    Ok(st) if ok(node, &st, view) => {}
                    Ok(st) => {
                        done = false;
                        let _ = write!(
                            last,
                            "{}: members {:?} quorate {} (expected {:?}); ",
                            node.name(),
                            st.members,
                            st.quorate,
                            view
                        );
                    }
                    Err(e) => {
                        done = false;
                        let _ = write!(last, "{}: {e}; ", node.name());
                    }
                }
            }
            if done {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(ClusterError::Timeout {
                    what: what.to_string(),
                    waited: timeout,
                    last,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A shell command that enters `name` as its processes see it (namespaces and cgroup),
    /// for humans: `sh -c '…'` to paste into a root shell.
    pub fn enter_command(&self, name: &str) -> Result<String, ClusterError> {
        let node = self.node(name)?;
        let pid = node
            .node
            .holder_pid()
            .ok_or_else(|| ClusterError::Spec(format!("{name} is off; power it on to enter it")))?;
        Ok(format!(
            "sh -c 'echo $$ > {}/cgroup.procs && exec nsenter -t {pid} -n -m -p -- bash'",
            node.node.cgroup_path().display()
        ))
    }

    /// The line `palisade-lab cluster` prints for `name` once it is up:
    /// `cluster NAME nodeid=ID addr=ADDR corosync=PID enter=COMMAND` (the command, from
    /// [`ClusterLab::enter_command`], is the rest of the line; `corosync=-` while it is off).
    pub fn ready_line(&self, name: &str) -> Result<String, ClusterError> {
        let node = self.node(name)?;
        let pid = node
            .corosync_pid()
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        Ok(format!(
            "cluster {name} nodeid={} addr={} corosync={pid} enter={}",
            node.id,
            node.node.addr(),
            self.enter_command(name)?
        ))
    }

    /// A power hook for simulated BMCs (`BmcHandle::set_power_hook`): a BMC's power off of
    /// node X is [`ClusterLab::power_off`] of X; its power on boots X (without waiting for
    /// the membership, so the BMC answers at once). It holds the nodes weakly.
    pub fn power_hook(&self) -> PowerHook {
        let nodes: Vec<Weak<ClusterNode>> = self.nodes.iter().map(Arc::downgrade).collect();
        Arc::new(move |name: &str, event: PowerEvent| {
            let Some(node) = nodes
                .iter()
                .filter_map(Weak::upgrade)
                .find(|n| n.name() == name)
            else {
                return;
            };
            let r = match event {
                PowerEvent::Off => node.off().map(|_| ()),
                PowerEvent::On => node.boot(),
            };
            if let Err(e) = r {
                eprintln!("cluster lab node {name}: power {event:?} failed: {e}");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quorumtool_status() {
        let text =
            "Quorum information\n------------------\nDate:             Mon Dec  7 09:00:00 2026\n\
            Quorum provider:  corosync_votequorum\nNodes:            2\nNode ID:          1\n\
            Ring ID:          1.10\nQuorate:          No\n\nVotequorum information\n\
            ----------------------\nExpected votes:   3\nHighest expected: 3\nTotal votes:      2\n\
            Quorum:           2 Activity blocked\nFlags:            \n\nMembership information\n\
            ----------------------\n    Nodeid      Votes Name\n         3          1 node3\n\
                     1          1 node1 (local)\n";
        let st = QuorumStatus::parse(text).unwrap();
        assert!(!st.quorate);
        assert_eq!(st.members, vec![1, 3]);
        assert_eq!(st.ring_id, "1.10");
        assert_eq!((st.expected_votes, st.total_votes, st.quorum), (3, 2, 2));
        assert!(QuorumStatus::parse("Cannot initialize QUORUM service").is_err());
    }

    #[test]
    fn conf_names_every_node_and_the_quorum_options() {
        let addrs = [Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)];
        let c = corosync_conf(&ClusterSpec::new(2), &addrs);
        assert!(c.contains("ring0_addr: 10.77.0.2\n\t\tname: node2\n\t\tnodeid: 2"));
        assert!(c.contains("two_node: 1") && c.contains("wait_for_all: 1"));
        assert!(c.contains("token: 1000") && c.contains("transport: knet"));
        assert!(c.contains("sched_rr: no") && c.contains("move_to_root_cgroup: no"));
        let c3 = corosync_conf(&ClusterSpec::new(3), &addrs);
        assert!(c3.contains("two_node: 0") && c3.contains("wait_for_all: 0"));
    }
}
