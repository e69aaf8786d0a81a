//! Closed process groups (CPG, Corosync's group messaging) seen from inside cluster lab nodes:
//! a member client that joins a group on a node, and the parse of `corosync-cpgtool`.
//!
//! Debian ships no CPG client that joins a group (`testcpg` is not packaged, and
//! `corosync-cpgtool` only lists groups), so the member is our own: the `palisade-cpg GROUP`
//! binary (this crate) loads Debian's `libcpg.so.4` at run time through fenced's binding
//! ([`fenced::cluster::libs`], no build-time link), joins GROUP, prints one [`CpgEvent`] line per event on stdout and
//! multicasts (agreed order) every line it reads on stdin; at end of stdin it leaves and exits 0.
//! `palisade-cpg --hold GROUP` ignores stdin and stays a member until killed: a stand-in
//! daemon for [`ClusterLab::add_daemon`](super::ClusterLab::add_daemon).
//!
//! [`CpgMember`] runs it on a lab node (sharing the node's namespaces, so it reaches that
//! node's Corosync) and reads its lines back.

use super::{ClusterError, ClusterLab};
use crate::node::NodeProcess;
use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The shared library the member loads (Debian package `libcpg4`, brought by `corosync`).
pub const LIBCPG: &str = "libcpg.so.4";

/// A process in a group as Corosync names it: its node id, and its pid as seen in its node's
/// PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpgAddr {
    /// The Corosync node id.
    pub nodeid: u32,
    /// The pid inside the node.
    pub pid: u32,
}

impl fmt::Display for CpgAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.nodeid, self.pid)
    }
}

impl std::str::FromStr for CpgAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<CpgAddr, String> {
        let (n, p) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not NODEID:PID"))?;
        let num = |x: &str| {
            x.parse::<u32>()
                .map_err(|_| format!("`{s}` is not NODEID:PID (numbers)"))
        };
        Ok(CpgAddr {
            nodeid: num(n)?,
            pid: num(p)?,
        })
    }
}

/// Why a process joined or left a group (cpg.h's `cpg_reason_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpgReason {
    /// It called `cpg_join`.
    Join,
    /// It called `cpg_leave`.
    Leave,
    /// Its node left the membership (power off, cut link).
    NodeDown,
    /// Its node joined the membership (a heal, a power on).
    NodeUp,
    /// It died or closed its connection without leaving.
    ProcDown,
    /// A value cpg.h does not name.
    Undefined,
}

impl CpgReason {
    fn from_raw(r: u32) -> CpgReason {
        match r {
            1 => CpgReason::Join,
            2 => CpgReason::Leave,
            3 => CpgReason::NodeDown,
            4 => CpgReason::NodeUp,
            5 => CpgReason::ProcDown,
            _ => CpgReason::Undefined,
        }
    }

    /// Its word in the member's output.
    pub fn word(self) -> &'static str {
        match self {
            CpgReason::Join => "join",
            CpgReason::Leave => "leave",
            CpgReason::NodeDown => "nodedown",
            CpgReason::NodeUp => "nodeup",
            CpgReason::ProcDown => "procdown",
            CpgReason::Undefined => "undefined",
        }
    }

    fn from_word(w: &str) -> Option<CpgReason> {
        [
            CpgReason::Join,
            CpgReason::Leave,
            CpgReason::NodeDown,
            CpgReason::NodeUp,
            CpgReason::ProcDown,
            CpgReason::Undefined,
        ]
        .into_iter()
        .find(|r| r.word() == w)
    }
}

/// One line of the member's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpgEvent {
    /// `local NODEID:PID`: the member joined; this is its own address.
    Local(CpgAddr),
    /// `joined NODEID:PID REASON`: a process joined the group (one line each, before the
    /// `members` line of the same change).
    Joined(CpgAddr, CpgReason),
    /// `left NODEID:PID REASON`: a process left the group.
    Left(CpgAddr, CpgReason),
    /// `members A B …`: the group's members after a change, in Corosync's order.
    Members(Vec<CpgAddr>),
    /// `deliver NODEID:PID TEXT`: a message multicast by that member, in the group's total
    /// order (newlines in the text are sent as spaces).
    Deliver(CpgAddr, String),
}

impl fmt::Display for CpgEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpgEvent::Local(a) => write!(f, "local {a}"),
            CpgEvent::Joined(a, r) => write!(f, "joined {a} {}", r.word()),
            CpgEvent::Left(a, r) => write!(f, "left {a} {}", r.word()),
            CpgEvent::Members(m) => {
                f.write_str("members")?;
                for a in m {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
            CpgEvent::Deliver(a, text) => write!(f, "deliver {a} {text}"),
        }
    }
}

impl CpgEvent {
    /// Parses one output line (pure; the inverse of `Display`).
    pub fn parse(line: &str) -> Result<CpgEvent, String> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let reason = |rest: &str| -> Result<(CpgAddr, CpgReason), String> {
            let (a, r) = rest
                .split_once(' ')
                .ok_or_else(|| format!("`{line}`: expected NODEID:PID REASON"))?;
            let r =
                CpgReason::from_word(r).ok_or_else(|| format!("`{line}`: unknown reason `{r}`"))?;
            Ok((a.parse()?, r))
        };
        match verb {
            "local" => Ok(CpgEvent::Local(rest.parse()?)),
            "joined" => reason(rest).map(|(a, r)| CpgEvent::Joined(a, r)),
            "left" => reason(rest).map(|(a, r)| CpgEvent::Left(a, r)),
            "members" => rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map(CpgEvent::Members),
            "deliver" => {
                let (a, text) = rest.split_once(' ').unwrap_or((rest, ""));
                Ok(CpgEvent::Deliver(a.parse()?, text.to_string()))
            }
            _ => Err(format!(
                "`{line}`: expected local, joined, left, members or deliver"
            )),
        }
    }
}

/// The groups `corosync-cpgtool -d ,` lists (pure): group name to its members, sorted.
/// Group names holding a comma are not supported (the lab names its own groups).
pub fn parse_cpgtool(text: &str) -> Result<BTreeMap<String, Vec<CpgAddr>>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some(h) if h.trim() == "GRP_NAME,PID,NODEID" => {}
        Some(h) => {
            return Err(format!(
                "unexpected header `{h}` (want GRP_NAME,PID,NODEID)"
            ))
        }
        // No group at all: corosync-cpgtool prints the header anyway, but be lenient.
        None => return Ok(BTreeMap::new()),
    }
    let mut groups: BTreeMap<String, Vec<CpgAddr>> = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.trim().rsplitn(3, ',').collect();
        let [nodeid, pid, name] = f[..] else {
            return Err(format!("`{l}` is not GROUP,PID,NODEID"));
        };
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{l}`: `{x}` is not a number"))
        };
        groups.entry(name.to_string()).or_default().push(CpgAddr {
            nodeid: num(nodeid)?,
            pid: num(pid)?,
        });
    }
    for m in groups.values_mut() {
        m.sort_unstable();
    }
    Ok(groups)
}

// ---- The member client (runs inside a node, as `palisade-cpg GROUP`). ----

use fenced::cluster::libs::{self, CpgAddress as RawAddress, CpgName, CsError};

std::thread_local! {
    /// Events the callbacks produced during one `cpg_dispatch` (the callbacks get no context
    /// of ours; the member has one thread, which drains this after every dispatch).
    static EVENTS: std::cell::RefCell<Vec<CpgEvent>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn push(e: CpgEvent) {
    EVENTS.with(|q| q.borrow_mut().push(e));
}

/// The entries of a C array Corosync passed to a callback.
///
/// # Safety
/// `p` must point to `n` valid entries for the duration of the callback (or `n` be 0).
unsafe fn entries<'a>(p: *const RawAddress, n: usize) -> &'a [RawAddress] {
    if p.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(p, n) }
    }
}

extern "C" fn on_deliver(
    _h: u64,
    _group: *const CpgName,
    nodeid: u32,
    pid: u32,
    msg: *mut c_void,
    len: usize,
) {
    let bytes: &[u8] = if msg.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: libcpg passes the message's `len` bytes, valid during the callback.
        unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) }
    };
    let text = String::from_utf8_lossy(bytes).replace(['\n', '\r'], " ");
    push(CpgEvent::Deliver(CpgAddr { nodeid, pid }, text));
}

#[allow(clippy::too_many_arguments)]
extern "C" fn on_confchg(
    _h: u64,
    _group: *const CpgName,
    members: *const RawAddress,
    n_members: usize,
    left: *const RawAddress,
    n_left: usize,
    joined: *const RawAddress,
    n_joined: usize,
) {
    let addr = |a: &RawAddress| CpgAddr {
        nodeid: a.nodeid,
        pid: a.pid,
    };
    // SAFETY: libcpg passes three arrays with their lengths, valid during the callback.
    let (members, left, joined) = unsafe {
        (
            entries(members, n_members),
            entries(left, n_left),
            entries(joined, n_joined),
        )
    };
    for a in joined {
        push(CpgEvent::Joined(addr(a), CpgReason::from_raw(a.reason)));
    }
    for a in left {
        push(CpgEvent::Left(addr(a), CpgReason::from_raw(a.reason)));
    }
    push(CpgEvent::Members(members.iter().map(addr).collect()));
}

/// How long the member retries a call Corosync answers `CS_ERR_TRY_AGAIN` (flow control, a
/// membership change in progress) before it gives up.
const TRY_AGAIN_FOR: Duration = Duration::from_secs(10);

fn retry(what: &str, mut call: impl FnMut() -> Result<(), CsError>) -> Result<(), String> {
    let until = Instant::now() + TRY_AGAIN_FOR;
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(libs::TRY_AGAIN) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

fn emit(out: &mut impl Write) -> Result<(), String> {
    let events = EVENTS.with(|q| std::mem::take(&mut *q.borrow_mut()));
    for e in events {
        writeln!(out, "{e}").map_err(|e| format!("write to stdout: {e}"))?;
    }
    out.flush().map_err(|e| format!("write to stdout: {e}"))
}

/// The member client's whole run (`palisade-cpg GROUP`): joins `group` through this node's
/// Corosync, prints events on stdout, multicasts stdin's lines; leaves at end of stdin. With
/// `hold` (`palisade-cpg --hold GROUP`, a daemon started with no stdin) it ignores stdin and
/// stays a member until it is killed or Corosync goes away.
pub fn serve_member(group: &str, hold: bool) -> Result<(), String> {
    let name = CpgName::new(group)
        .filter(|_| !group.is_empty())
        .ok_or_else(|| {
            format!(
                "group name must be 1 to {} bytes, got {}",
                libs::MAX_NAME,
                group.len()
            )
        })?;
    let until = Instant::now() + TRY_AGAIN_FOR;
    let cpg = loop {
        // SAFETY: the callbacks ignore the context (they record into this thread's EVENTS)
        // and run only inside `dispatch` on this thread.
        match unsafe { libs::Cpg::open(on_deliver, on_confchg, std::ptr::null_mut()) } {
            Ok(c) => break c,
            Err(libs::OpenError::Call(_, libs::TRY_AGAIN)) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                return Err(format!(
                    "{e}; install Debian's corosync (scripts/install-test-deps.sh)"
                ))
            }
        }
    };
    let run = || -> Result<(), String> {
        retry("cpg_join", || cpg.join(&name))?;
        let mut nodeid = 0;
        retry("cpg_local_get", || {
            nodeid = cpg.local_node()?;
            Ok(())
        })?;
        let mut fd: c_int = -1;
        retry("cpg_fd_get", || {
            fd = cpg.fd()?;
            Ok(())
        })?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        push(CpgEvent::Local(CpgAddr {
            nodeid,
            pid: std::process::id(),
        }));
        emit(&mut out)?;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // With `hold`, only Corosync's fd is watched (stdin may be /dev/null, always
            // readable and at its end).
            let (watch, count) = if hold {
                (fds[1..].as_mut_ptr(), 1)
            } else {
                (fds.as_mut_ptr(), 2)
            };
            // SAFETY: poll on `count` valid pollfd entries of a local array.
            let n = unsafe { libc::poll(watch, count, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            if fds[1].revents != 0 {
                let rc = cpg.dispatch();
                emit(&mut out)?;
                match rc {
                    Ok(()) | Err(libs::TRY_AGAIN) => {}
                    Err(e) => return Err(format!("cpg_dispatch: {e}")),
                }
            }
            if fds[0].revents != 0 {
                // SAFETY: read(2) into a local buffer of its length.
                let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if got < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(format!("read stdin: {e}"));
                }
                if got == 0 {
                    // End of input: leave cleanly, so the others see `leave`, not `procdown`.
                    return retry("cpg_leave", || cpg.leave(&name));
                }
                pending.extend_from_slice(&buf[..got as usize]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).take(i).collect();
                    retry("cpg_mcast_joined", || {
                        let r = cpg.mcast_agreed(&line);
                        if r == Err(libs::TRY_AGAIN) {
                            // Flow control: deliveries must be read for it to lift.
                            let _ = cpg.dispatch();
                        }
                        r
                    })?;
                    emit(&mut out)?;
                }
            }
        }
    };
    // `cpg` is finalized when it drops, after the run.
    run()
}

// ---- The test side: a member on a lab node. ----

/// The `palisade-cpg` binary of this workspace (built on demand).
pub fn member_program() -> PathBuf {
    crate::bins::workspace_bin("hw-tests", "palisade-cpg")
}

/// How long [`CpgMember::join`] waits for the member's `local` line.
const JOIN_WAIT: Duration = Duration::from_secs(20);

/// A `palisade-cpg` member running on a lab node; killed on drop (Corosync then reports it
/// `procdown`), or leaves cleanly with [`CpgMember::leave`].
pub struct CpgMember {
    node: String,
    group: String,
    local: CpgAddr,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Result<CpgEvent, String>>,
    events: Vec<CpgEvent>,
    members: Vec<CpgAddr>,
    process: NodeProcess,
}

impl fmt::Debug for CpgMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpgMember")
            .field("node", &self.node)
            .field("group", &self.group)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl CpgMember {
    /// Starts a member of `group` on `node` ([`member_program`]) and returns once it joined.
    pub fn join(lab: &ClusterLab, node: &str, group: &str) -> Result<CpgMember, ClusterError> {
        Self::join_with(lab, node, group, &member_program())
    }

    /// As [`CpgMember::join`], with the member binary at `program`.
    pub fn join_with(
        lab: &ClusterLab,
        node: &str,
        group: &str,
        program: &Path,
    ) -> Result<CpgMember, ClusterError> {
        let mut process = lab.spawn(
            node,
            Command::new(program)
                .arg(group)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )?;
        let tool = |detail: String| ClusterError::Tool {
            node: node.to_string(),
            what: format!("{} {group}", program.display()),
            detail,
        };
        let child = process
            .child_mut()
            .ok_or_else(|| tool("no child handle".into()))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| tool("no stdout pipe".into()))?;
        let stderr = child.stderr.take();
        let (tx, lines) = mpsc::channel();
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(CpgEvent::parse(&line)).is_err() {
                    break;
                }
            }
        });
        if let Some(stderr) = stderr {
            // The member's errors arrive as failures of whatever waits next.
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if err_tx.send(Err(line)).is_err() {
                        break;
                    }
                }
            });
        }
        let mut m = CpgMember {
            node: node.to_string(),
            group: group.to_string(),
            local: CpgAddr { nodeid: 0, pid: 0 },
            stdin,
            lines,
            events: Vec::new(),
            members: Vec::new(),
            process,
        };
        let until = Instant::now() + JOIN_WAIT;
        loop {
            if let Some(CpgEvent::Local(a)) = m.events.first() {
                m.local = *a;
                return Ok(m);
            }
            m.next(until, "its `local` line (joined)")?;
        }
    }

    /// Its own address (node id, pid inside its node).
    pub fn local(&self) -> CpgAddr {
        self.local
    }

    /// Its pid on the host.
    pub fn host_pid(&self) -> u32 {
        self.process.id()
    }

    /// Every event read so far, in order.
    pub fn events(&self) -> &[CpgEvent] {
        &self.events
    }

    /// The group's members as of the last change it read.
    pub fn members(&self) -> &[CpgAddr] {
        &self.members
    }

    /// Multicasts `text` to the group (agreed order); delivered to every member, this one too.
    pub fn send(&mut self, text: &str) -> Result<(), ClusterError> {
        if text.contains('\n') {
            return Err(ClusterError::Spec(
                "a CPG test message is one line; send several".into(),
            ));
        }
        let node = self.node.clone();
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| ClusterError::Spec("the member already left; join a new one".into()))?;
        writeln!(stdin, "{text}")
            .and_then(|_| stdin.flush())
            .map_err(|e| ClusterError::Tool {
                node,
                what: "palisade-cpg (its stdin)".into(),
                detail: format!("{e}; the member exited: see its errors in the test output"),
            })
    }

    /// Reads one event, or fails at `until`.
    fn next(&mut self, until: Instant, what: &str) -> Result<(), ClusterError> {
        let left = until.saturating_duration_since(Instant::now());
        let fail = |detail: String| ClusterError::Tool {
            node: self.node.clone(),
            what: format!("palisade-cpg {}", self.group),
            detail,
        };
        match self.lines.recv_timeout(left) {
            Ok(Ok(e)) => {
                if let CpgEvent::Members(m) = &e {
                    self.members = m.clone();
                }
                self.events.push(e);
                Ok(())
            }
            Ok(Err(line)) => Err(fail(line)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ClusterError::Timeout {
                what: format!("{what} from the CPG member on {}", self.node),
                waited: left,
                last: self
                    .events
                    .last()
                    .map_or("nothing".into(), ToString::to_string),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(fail("it exited".into())),
        }
    }

    /// Waits until the group's members are processes on exactly the nodes `nodeids` (one or
    /// more each), and returns them.
    pub fn wait_members(
        &mut self,
        nodeids: &[u32],
        timeout: Duration,
    ) -> Result<Vec<CpgAddr>, ClusterError> {
        let mut want = nodeids.to_vec();
        want.sort_unstable();
        want.dedup();
        let until = Instant::now() + timeout;
        loop {
            let mut have: Vec<u32> = self.members.iter().map(|a| a.nodeid).collect();
            have.sort_unstable();
            have.dedup();
            if have == want {
                return Ok(self.members.clone());
            }
            self.next(until, &format!("members on nodes {want:?}"))?;
        }
    }

    /// Waits until it has read `count` deliveries in all, and returns every delivery so far
    /// (sender and text), in the group's order.
    pub fn wait_delivered(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<(CpgAddr, String)>, ClusterError> {
        let until = Instant::now() + timeout;
        loop {
            let got: Vec<(CpgAddr, String)> = self
                .events
                .iter()
                .filter_map(|e| match e {
                    CpgEvent::Deliver(a, t) => Some((*a, t.clone())),
                    _ => None,
                })
                .collect();
            if got.len() >= count {
                return Ok(got);
            }
            self.next(until, &format!("{count} deliveries"))?;
        }
    }

    /// Leaves the group (end of its stdin) and waits for a clean exit.
    pub fn leave(mut self, timeout: Duration) -> Result<(), ClusterError> {
        self.stdin.take();
        let until = Instant::now() + timeout;
        loop {
            match self.process.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => {
                    return Err(ClusterError::Tool {
                        node: self.node.clone(),
                        what: format!("palisade-cpg {} leaving", self.group),
                        detail: format!("exited with {st}"),
                    })
                }
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    return Err(ClusterError::Timeout {
                        what: format!("the CPG member on {} leaving", self.node),
                        waited: timeout,
                        last: "still running".into(),
                    })
                }
                Err(e) => {
                    return Err(ClusterError::Tool {
                        node: self.node.clone(),
                        what: "palisade-cpg".into(),
                        detail: e.to_string(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_round_trip() {
        let a = CpgAddr { nodeid: 2, pid: 17 };
        let b = CpgAddr { nodeid: 3, pid: 9 };
        for e in [
            CpgEvent::Local(a),
            CpgEvent::Joined(a, CpgReason::Join),
            CpgEvent::Left(b, CpgReason::NodeDown),
            CpgEvent::Members(vec![a, b]),
            CpgEvent::Members(vec![]),
            CpgEvent::Deliver(a, "hello from node2".into()),
            CpgEvent::Deliver(b, String::new()),
        ] {
            assert_eq!(CpgEvent::parse(&e.to_string()), Ok(e.clone()), "{e}");
        }
        assert!(CpgEvent::parse("left 2:17 exploded").is_err());
        assert!(CpgEvent::parse("members 2:x").is_err());
        assert!(CpgEvent::parse("hello").is_err());
    }

    #[test]
    fn parses_cpgtool_rows_by_group() {
        let text = "GRP_NAME,PID,NODEID\nfenced,81,2\nfenced,12,1\ncheck,13,1\n";
        let g = parse_cpgtool(text).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            g["fenced"],
            vec![
                CpgAddr { nodeid: 1, pid: 12 },
                CpgAddr { nodeid: 2, pid: 81 }
            ]
        );
        assert_eq!(g["check"], vec![CpgAddr { nodeid: 1, pid: 13 }]);
        assert!(parse_cpgtool("GRP_NAME,PID,NODEID\n").unwrap().is_empty());
        assert!(parse_cpgtool("Group Name PID Node ID\n").is_err());
        assert!(parse_cpgtool("GRP_NAME,PID,NODEID\nfenced,x,1\n").is_err());
    }
}
