//! Lab nodes: a network namespace plus a cgroup v2 group (plus, on request, a mount namespace
//! with private directories and a PID namespace), so a test can run a node's processes, cut its network, and
//! "power it off" for real.
//!
//! - [`LabNet`]: a lab network: a bridge in its own namespace (the switch, which also hosts
//!   controllers at [`LabNet::switch_addr`]) and the nodes plugged into it with veth pairs.
//! - [`LabNode`]: one node. [`LabNode::spawn`] runs a command inside it; [`LabNode::power_off`]
//!   kills everything in its group (`cgroup.kill`) and refuses spawns until
//!   [`LabNode::power_on`]; [`LabNode::cut_off`] drops its lab traffic with nftables rules in
//!   its own namespace (never the host's) while it keeps running.
//! - [`LabNet::power_hook`]: wires the nodes to simulated BMCs, so fencing a BMC's node through
//!   IPMI really stops what runs on the lab node of the same name.
//!
//! Dropping a node kills its processes, removes its cgroup and deletes its namespace; dropping
//! the net also deletes the switch. Resources a killed test process leaked (its pid is in their
//! names) are removed by the next [`LabNet::new`].
//!
//! Needs root, iproute2 and nftables (`scripts/install-test-deps.sh`), and a kernel with
//! `cgroup.kill` (5.14+).
//!
//! ```no_run
//! use hw_tests::node::{LabNet, NodeSpec};
//! use std::process::Command;
//! # fn main() -> Result<(), hw_tests::node::NodeError> {
//! let mut net = LabNet::new()?;
//! let a = net.add_node(NodeSpec::new("node1"))?;
//! let b = net.add_node(NodeSpec::new("node2"))?;
//! let inbox = net.bind_udp(7000)?; // the switch's side, e.g. for a controller
//! let _daemon = a.spawn(Command::new("sleep").arg("60"))?;
//! a.cut_off()?; // node1 keeps running, reaches nobody
//! a.power_off()?; // everything on node1 is dead when this returns
//! assert!(a.spawn(&mut Command::new("true")).is_err()); // and it stays off
//! # let _ = (b, inbox);
//! # Ok(())
//! # }
//! ```

pub mod cgroup;
pub mod netns;

use crate::lab::node::{PowerEvent, PowerHook};
use cgroup::Cgroup;
use netns::NetNs;
use std::ffi::CString;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// The prefix of every namespace and cgroup the lab makes: `plab-PID-N-…`.
const PREFIX: &str = "plab-";

/// The lab network's addresses: node `i` (1-based) is `10.77.0.i`, the switch `10.77.0.254`.
/// Every lab net has its own namespaces, so parallel tests reuse the same addresses safely.
const SUBNET: [u8; 3] = [10, 77, 0];

/// The nftables table the lab owns inside a node's namespace.
const NFT_TABLE: &str = "palisade_lab";

/// Why a lab node operation failed; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A system call or file operation failed.
    #[error("lab node: cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A helper command (`ip`, `nft`, `mount`) failed.
    #[error("lab node: {what} failed: {detail}; lab nodes need root, iproute2 and nftables (scripts/install-test-deps.sh)")]
    Command {
        /// The command.
        what: String,
        /// Its error output.
        detail: String,
    },
    /// The kernel lacks something lab nodes need.
    #[error("lab node: {0}")]
    Unsupported(String),
    /// The node is powered off: nothing can run on it until it is powered on.
    #[error(
        "lab node {0} is powered off; power it on first (LabNode::power_on, or through its BMC)"
    )]
    PoweredOff(String),
    /// Processes survived `cgroup.kill`.
    #[error("lab node: processes {pids:?} are still in {cgroup} after cgroup.kill; they may be stuck in I/O (check /proc/PID/stack)")]
    KillTimeout {
        /// The group.
        cgroup: PathBuf,
        /// Who is left.
        pids: Vec<u32>,
    },
    /// The spec is inconsistent.
    #[error("lab node: invalid spec: {0}")]
    Spec(String),
}

impl NodeError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        NodeError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Runs a helper command; its error output becomes the error.
fn run(cmd: &mut Command, what: &str) -> Result<(), NodeError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NodeError::io(format!("{what} ({:?})", cmd.get_program()), e))?;
    if !out.status.success() {
        return Err(NodeError::Command {
            what: format!("{what}: {cmd:?}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a power change changed anything ("already off" is a success that says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The state changed.
    Changed,
    /// It already was in that state.
    Unchanged,
}

/// What a node has besides its network namespace and cgroup.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// The node's name (at most 15 bytes; match the simulated BMC's name to wire power).
    pub name: String,
    /// Directories that get a fresh private tmpfs on this node (a mount namespace shared by
    /// all its processes, made anew at each power on), e.g. `/run` for a daemon's runtime
    /// files. Empty: the node shares the host's mounts.
    pub private_dirs: Vec<PathBuf>,
    /// Whether the node's processes get a PID namespace of their own (made anew at each power
    /// on, with its own `/proc`), so they see only each other, as on a real machine. It
    /// implies a mount namespace (for that `/proc`) even without private directories.
    pub pid_namespace: bool,
}

impl NodeSpec {
    /// A node with no private directories.
    pub fn new(name: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            private_dirs: Vec::new(),
            pid_namespace: false,
        }
    }

    /// Whether the node needs its own mount namespace.
    fn has_mount_namespace(&self) -> bool {
        !self.private_dirs.is_empty() || self.pid_namespace
    }
}

/// Processes and mounts of a node while powered.
#[derive(Debug)]
struct Power {
    on: bool,
    /// Holds the node's mount namespace open (a `sleep` in the node's group; killed with the
    /// rest at power off, which drops the private mounts as a real power cut drops tmpfs).
    holder: Option<Holder>,
}

/// The process holding a node's namespaces: with a PID namespace it is that namespace's
/// init (pid 1), so its death at power off ends every process of the namespace.
#[derive(Debug)]
struct Holder {
    child: Child,
    mnt: File,
    /// `/proc/PID/ns/pid` of the holder, entered (for children) before a spawn forks.
    pid: Option<File>,
}

/// One lab node. Dropping it kills its processes and removes its cgroup and namespace.
#[derive(Debug)]
pub struct LabNode {
    spec: NodeSpec,
    addr: Ipv4Addr,
    power: Mutex<Power>,
    // Field order is drop order: processes die (cgroup) before their namespace goes.
    cgroup: Cgroup,
    netns: NetNs,
}

impl LabNode {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its address on the lab network (interface `eth0` inside its namespace).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its network namespace's name (for `ip netns exec`, `nsenter --net=/run/netns/NAME`).
    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    /// Its cgroup's directory.
    pub fn cgroup_path(&self) -> &std::path::Path {
        self.cgroup.path()
    }

    /// The processes running on the node now.
    pub fn pids(&self) -> Vec<u32> {
        self.cgroup.pids()
    }

    /// Whether the node is powered on.
    pub fn is_on(&self) -> bool {
        lock(&self.power).on
    }

    /// Starts `cmd` on the node: in its cgroup, network namespace and (if it has private
    /// directories) mount namespace, all entered before the program runs. Refused while the
    /// node is off.
    pub fn spawn(&self, cmd: &mut Command) -> Result<NodeProcess, NodeError> {
        // Held across fork and exec, so a power off cannot slip between the check and the
        // child joining the group (it would escape the kill).
        let power = lock(&self.power);
        if !power.on {
            return Err(NodeError::PoweredOff(self.spec.name.clone()));
        }
        let procs = self.cgroup.procs_file().clone();
        let net = self.netns.fd();
        let mnt = power.holder.as_ref().map(|h| h.mnt.as_raw_fd());
        let pidns = power.holder.as_ref().and_then(|h| h.pid.as_ref());
        // SAFETY: the hook runs in the child between fork and exec and only makes system
        // calls (open, write, close, setns) on data prepared before the fork; it allocates
        // nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                join_cgroup(&procs)?;
                if libc::setns(net, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(m) = mnt {
                    if libc::setns(m, libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = match pidns {
            None => cmd.spawn(),
            Some(ns) => spawn_in_pid_namespace(cmd, ns),
        }
        .map_err(|e| {
            NodeError::io(
                format!("start {:?} on {}", cmd.get_program(), self.spec.name),
                e,
            )
        })?;
        Ok(NodeProcess {
            pid: child.id(),
            child: Some(child),
        })
    }

    /// Cuts power: kills every process of the node and returns once none is left. Until
    /// [`LabNode::power_on`], spawns are refused.
    pub fn power_off(&self) -> Result<Transition, NodeError> {
        let mut power = lock(&self.power);
        let was_on = power.on;
        power.on = false;
        self.cgroup.kill()?;
        if let Some(mut holder) = power.holder.take() {
            // The init of a PID namespace finishes exiting only once every other process of
            // the namespace is reaped, and those are reaped by their own owners (each
            // `NodeProcess`): waiting here could wait for ever, so a thread reaps it. Nothing
            // of the node runs any more (the group is empty).
            if !matches!(holder.child.try_wait(), Ok(Some(_))) {
                std::thread::spawn(move || {
                    let _ = holder.child.wait();
                });
            }
        }
        Ok(if was_on {
            Transition::Changed
        } else {
            Transition::Unchanged
        })
    }

    /// Restores power: the node accepts spawns again, with fresh private directories.
    pub fn power_on(&self) -> Result<Transition, NodeError> {
        let mut power = lock(&self.power);
        if power.on {
            return Ok(Transition::Unchanged);
        }
        power.holder = self.start_mount_holder()?;
        power.on = true;
        Ok(Transition::Changed)
    }

    /// The node's file system as its processes see it (`/proc/HOLDER/root`): files written
    /// below it land in the node's private directories. `None` without a mount namespace
    /// (the node sees the host's files) or while the node is off.
    pub fn root(&self) -> Option<PathBuf> {
        lock(&self.power)
            .holder
            .as_ref()
            .map(|h| PathBuf::from(format!("/proc/{}/root", h.child.id())))
    }

    /// The host pid of the process holding the node's namespaces (pid 1 of its PID namespace
    /// if it has one): `nsenter -t PID -n -m [-p]` enters the node. `None` while it is off or
    /// without a mount namespace.
    pub fn holder_pid(&self) -> Option<u32> {
        lock(&self.power).holder.as_ref().map(|h| h.child.id())
    }

    /// Starts the process holding the node's mount (and PID) namespace, if it has one.
    fn start_mount_holder(&self) -> Result<Option<Holder>, NodeError> {
        if !self.spec.has_mount_namespace() {
            return Ok(None);
        }
        let pid_namespace = self.spec.pid_namespace;
        let dirs: Vec<CString> = self
            .spec
            .private_dirs
            .iter()
            .map(|d| CString::new(d.as_os_str().as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| NodeError::Spec("a private directory holds a NUL byte".into()))?;
        let procs = self.cgroup.procs_file().clone();
        let net = self.netns.fd();
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: as in `spawn`: system calls only, on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                join_cgroup(&procs)?;
                if libc::setns(net, libc::CLONE_NEWNET) != 0
                    || libc::unshare(libc::CLONE_NEWNS) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Private propagation first: the tmpfs mounts below must not leak back to the
                // host (and the host's later mounts need not reach the node).
                let root = c"/";
                let none = c"none";
                if libc::mount(
                    none.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The copies of other labs' `/run/netns` mounts would keep their namespaces
                // alive as long as this node lives: detach them here (the node needs none).
                libc::umount2(c"/run/netns".as_ptr(), libc::MNT_DETACH);
                if pid_namespace {
                    // This process is pid 1 of the new PID namespace: a /proc of that
                    // namespace, so the node's tools see only the node's processes.
                    let proc_ = c"proc";
                    if libc::mount(
                        proc_.as_ptr(),
                        c"/proc".as_ptr(),
                        proc_.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let tmpfs = c"tmpfs";
                for d in &dirs {
                    if libc::mount(
                        tmpfs.as_ptr(),
                        d.as_ptr(),
                        tmpfs.as_ptr(),
                        0,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let spawned = if pid_namespace {
            spawn_as_pid_namespace_init(&mut cmd)
        } else {
            cmd.spawn()
        };
        let mut child = spawned
            .map_err(|e| NodeError::io(format!("make {}'s mount namespace", self.spec.name), e))?;
        let open = |kind: &str| File::open(format!("/proc/{}/ns/{kind}", child.id()));
        let files = open("mnt").and_then(|mnt| {
            let pid = if pid_namespace {
                Some(open("pid")?)
            } else {
                None
            };
            Ok((mnt, pid))
        });
        match files {
            Ok((mnt, pid)) => Ok(Some(Holder { child, mnt, pid })),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(NodeError::io(
                    format!("open {}'s namespaces", self.spec.name),
                    e,
                ))
            }
        }
    }

    /// Cuts the node off from the lab network (nftables rules in its own namespace drop all
    /// traffic on `eth0`); it keeps running. Undo with [`LabNode::heal`].
    pub fn cut_off(&self) -> Result<(), NodeError> {
        self.heal()?;
        self.netns.nft(&format!(
            "table inet {NFT_TABLE} {{\n\
               chain input {{ type filter hook input priority 0; policy accept; iifname \"eth0\" drop; }}\n\
               chain output {{ type filter hook output priority 0; policy accept; oifname \"eth0\" drop; }}\n\
             }}\n"
        ))
    }

    /// Cuts the node off from these peers only (a partial partition); it still reaches the
    /// others. Undo with [`LabNode::heal`].
    pub fn cut_off_from(&self, peers: &[Ipv4Addr]) -> Result<(), NodeError> {
        if peers.is_empty() {
            return Err(NodeError::Spec(
                "cut_off_from needs at least one peer".into(),
            ));
        }
        self.heal()?;
        let set = peers
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        self.netns.nft(&format!(
            "table inet {NFT_TABLE} {{\n\
               chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
               chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        ))
    }

    /// Removes the lab's partition rules from the node (a no-op if there are none).
    pub fn heal(&self) -> Result<(), NodeError> {
        // `add` then `delete` makes removal idempotent in one transaction.
        self.netns.nft(&format!(
            "add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
        ))
    }

    /// Loads any nftables script inside the node's namespace (e.g. drop one port only).
    pub fn nft(&self, script: &str) -> Result<(), NodeError> {
        self.netns.nft(script)
    }

    /// Binds a UDP socket on the node's network (the calling process stays on the host).
    pub fn bind_udp(&self, port: u16) -> Result<UdpSocket, NodeError> {
        let addr = SocketAddrV4::new(self.addr, port);
        self.netns.run_inside(move || UdpSocket::bind(addr))
    }
}

/// A process started on a lab node ([`LabNode::spawn`]); killed and reaped on drop (its
/// node's power off kills it too, and drop then only reaps it).
#[derive(Debug)]
pub struct NodeProcess {
    pid: u32,
    /// `None` once consumed by [`NodeProcess::wait_with_output`].
    child: Option<Child>,
}

impl NodeProcess {
    fn consumed() -> std::io::Error {
        std::io::Error::other("the process was already waited for with wait_with_output")
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The `std` child, for its pipes.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.as_mut().ok_or_else(Self::consumed)?.wait()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.as_mut().ok_or_else(Self::consumed)?.try_wait()
    }

    /// Waits for it to exit and collects its piped output.
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.child
            .take()
            .ok_or_else(Self::consumed)?
            .wait_with_output()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Forks `cmd` from a fresh thread that first made a new PID namespace for its children
/// (`unshare(CLONE_NEWPID)` moves only the calling thread's children, and only that thread
/// forks), so the child is pid 1 of a namespace of its own.
fn spawn_as_pid_namespace_init(cmd: &mut Command) -> std::io::Result<Child> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare on this thread only; it affects the pid namespace of the
            // children this thread forks, and the thread ends after the one spawn.
            if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            cmd.spawn()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

/// Forks `cmd` from a fresh thread that entered the PID namespace `ns` for its children
/// (setns in the child itself would move only the child's own children).
fn spawn_in_pid_namespace(cmd: &mut Command, ns: &File) -> std::io::Result<Child> {
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd, on this thread only, which ends after
            // the one spawn.
            if unsafe { libc::setns(fd, libc::CLONE_NEWPID) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            cmd.spawn()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

/// Joins the cgroup whose `cgroup.procs` is `procs` (`0` means the writer itself). Runs after
/// fork: system calls only.
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: a valid NUL-terminated path; the fd is closed before returning.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// A lab network: the switch (a bridge in its own namespace) and the nodes plugged into it.
#[derive(Debug)]
pub struct LabNet {
    prefix: String,
    // Nodes go before the switch (field order is drop order).
    nodes: Vec<Arc<LabNode>>,
    switch: NetNs,
}

static NET_COUNTER: AtomicU32 = AtomicU32::new(0);

impl LabNet {
    /// Creates the switch; add nodes with [`LabNet::add_node`]. Removes what earlier test
    /// processes that were killed leaked.
    pub fn new() -> Result<LabNet, NodeError> {
        sweep_leftovers();
        let prefix = format!(
            "{PREFIX}{}-{}-",
            std::process::id(),
            NET_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let switch = NetNs::create(&format!("{prefix}sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        let cidr = format!("{}/24", Self::switch_addr_of());
        switch.ip(&["addr", "add", &cidr, "dev", "br0"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(LabNet {
            prefix,
            nodes: Vec::new(),
            switch,
        })
    }

    fn switch_addr_of() -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 254)
    }

    /// The switch's own address: controllers and monitors on the lab network listen here.
    pub fn switch_addr(&self) -> Ipv4Addr {
        Self::switch_addr_of()
    }

    /// Adds a powered-on node, plugged into the switch.
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<Arc<LabNode>, NodeError> {
        if spec.name.is_empty()
            || spec.name.len() > 15
            || !spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(NodeError::Spec(format!(
                "node name `{}` must be 1-15 letters, digits or `-`",
                spec.name
            )));
        }
        if self.nodes.iter().any(|n| n.name() == spec.name) {
            return Err(NodeError::Spec(format!(
                "node `{}` exists already",
                spec.name
            )));
        }
        if let Some(d) = spec
            .private_dirs
            .iter()
            .find(|d| !d.is_absolute() || !d.is_dir())
        {
            return Err(NodeError::Spec(format!(
                "private directory {} must be an existing absolute directory",
                d.display()
            )));
        }
        let index = self.nodes.len() + 1;
        if index >= 254 {
            return Err(NodeError::Spec("a lab net holds at most 253 nodes".into()));
        }
        let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], index as u8);
        let name = format!("{}{}", self.prefix, spec.name);
        let cgroup = Cgroup::create(&name)?;
        let netns = NetNs::create(&name)?;
        // The veth is made inside the switch's namespace and its node end moved at once,
        // so nothing appears in the host's namespace, even for a moment.
        let port = format!("p{index}");
        self.switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        self.switch.ip(&["link", "set", &port, "master", "br0"])?;
        self.switch.ip(&["link", "set", &port, "up"])?;
        netns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        let node = LabNode {
            spec,
            addr,
            power: Mutex::new(Power {
                on: false,
                holder: None,
            }),
            cgroup,
            netns,
        };
        node.power_on()?;
        let node = Arc::new(node);
        self.nodes.push(node.clone());
        Ok(node)
    }

    /// The nodes, in the order they were added.
    pub fn nodes(&self) -> &[Arc<LabNode>] {
        &self.nodes
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&Arc<LabNode>> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// The switch's network namespace name.
    pub fn switch_netns_name(&self) -> &str {
        self.switch.name()
    }

    /// Binds a UDP socket at the switch's address (a controller's view of the lab network);
    /// the calling process stays on the host.
    pub fn bind_udp(&self, port: u16) -> Result<UdpSocket, NodeError> {
        let addr = SocketAddrV4::new(self.switch_addr(), port);
        self.switch.run_inside(move || UdpSocket::bind(addr))
    }

    /// A power hook for simulated BMCs (`BmcHandle::set_power_hook`): a BMC's power off kills
    /// the lab node of the same name and keeps it off; its power on lets it run again. It
    /// holds the nodes weakly, so it never keeps a dropped node alive.
    pub fn power_hook(&self) -> PowerHook {
        let nodes: Vec<Weak<LabNode>> = self.nodes.iter().map(Arc::downgrade).collect();
        Arc::new(move |name: &str, event: PowerEvent| {
            let Some(node) = nodes
                .iter()
                .filter_map(Weak::upgrade)
                .find(|n| n.name() == name)
            else {
                return;
            };
            let r = match event {
                PowerEvent::Off => node.power_off(),
                PowerEvent::On => node.power_on(),
            };
            if let Err(e) = r {
                eprintln!("lab node {name}: power {event:?} failed: {e}");
            }
        })
    }
}

/// Removes namespaces and cgroups named after a process that no longer exists (a test killed
/// before its drop guards ran).
fn sweep_leftovers() {
    let dead = |name: &str| crate::owner_is_gone(name, PREFIX);
    if let Ok(root) = cgroup::hierarchy() {
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                let _ = std::fs::write(e.path().join("cgroup.kill"), "1");
                std::thread::sleep(std::time::Duration::from_millis(20));
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if dead(&name) {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}
