//! Closed process groups (CPG, Corosync's group messaging) seen from inside cluster lab nodes:
//! a member client that joins a group on a node, and the parse of `corosync-cpgtool`.
//!
//! Debian ships no CPG client that joins a group (`testcpg` is not packaged, and
//! `corosync-cpgtool` only lists groups), and `rust-corosync` is not a dependency of the
//! bench, so the member is our own: the `palisade-cpg GROUP` binary (this crate) loads
//! Debian's `libcpg.so.4` at run time (no build-time link, so the bench builds without
//! `libcpg-dev`), joins GROUP, prints one [`CpgEvent`] line per event on stdout and
//! multicasts (agreed order) every line it reads on stdin; at end of stdin it leaves and exits 0.
//! `palisade-cpg --hold GROUP` ignores stdin and stays a member until killed: a stand-in
//! daemon for [`ClusterLab::add_daemon`](super::ClusterLab::add_daemon).
//!
//! [`CpgMember`] runs it on a lab node (sharing the node's namespaces, so it reaches that
//! node's Corosync) and reads its lines back.

use super::{ClusterError, ClusterLab};
use crate::node::NodeProcess;
use std::collections::BTreeMap;
use std::ffi::{c_int, c_uint, c_void, CStr};
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

const CS_OK: c_int = 1;
const CS_ERR_TRY_AGAIN: c_int = 6;
const CS_DISPATCH_ALL: c_int = 2;
const CPG_TYPE_AGREED: c_int = 2;
const CPG_MAX_NAME_LENGTH: usize = 128;

#[repr(C)]
struct CpgName {
    length: u32,
    value: [u8; CPG_MAX_NAME_LENGTH],
}

#[repr(C)]
struct RawAddress {
    nodeid: u32,
    pid: u32,
    reason: u32,
}

type DeliverFn = extern "C" fn(u64, *const CpgName, u32, u32, *mut c_void, usize);
type ConfchgFn = extern "C" fn(
    u64,
    *const CpgName,
    *const RawAddress,
    usize,
    *const RawAddress,
    usize,
    *const RawAddress,
    usize,
);

#[repr(C)]
struct Callbacks {
    deliver: Option<DeliverFn>,
    confchg: Option<ConfchgFn>,
}

type InitializeFn = unsafe extern "C" fn(*mut u64, *mut Callbacks) -> c_int;
type GroupFn = unsafe extern "C" fn(u64, *const CpgName) -> c_int;
type FdGetFn = unsafe extern "C" fn(u64, *mut c_int) -> c_int;
type DispatchFn = unsafe extern "C" fn(u64, c_int) -> c_int;
type McastFn = unsafe extern "C" fn(u64, c_int, *const libc::iovec, c_uint) -> c_int;
type LocalGetFn = unsafe extern "C" fn(u64, *mut c_uint) -> c_int;
type FinalizeFn = unsafe extern "C" fn(u64) -> c_int;

/// The libcpg functions the member calls, resolved with dlopen/dlsym.
struct Lib {
    initialize: InitializeFn,
    join: GroupFn,
    leave: GroupFn,
    fd_get: FdGetFn,
    dispatch: DispatchFn,
    mcast_joined: McastFn,
    local_get: LocalGetFn,
    finalize: FinalizeFn,
}

impl Lib {
    fn open() -> Result<Lib, String> {
        let name = c"libcpg.so.4";
        // SAFETY: dlopen of a NUL-terminated name; the handle is never closed, so the
        // resolved functions stay valid for the whole process.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            return Err(format!(
                "cannot load {LIBCPG}: {}; install Debian's corosync (scripts/install-test-deps.sh)",
                dl_error()
            ));
        }
        let sym = |s: &CStr| -> Result<*mut c_void, String> {
            // SAFETY: dlsym on a live handle with a NUL-terminated name.
            let p = unsafe { libc::dlsym(handle, s.as_ptr()) };
            if p.is_null() {
                Err(format!(
                    "{LIBCPG} has no {}: {}; is it Corosync 3's libcpg?",
                    s.to_string_lossy(),
                    dl_error()
                ))
            } else {
                Ok(p)
            }
        };
        // SAFETY: each symbol is the cpg.h function of that name, whose C signature the
        // type it is cast to spells out (Corosync 3.1 cpg.h; enums are C ints).
        unsafe {
            Ok(Lib {
                initialize: std::mem::transmute::<*mut c_void, InitializeFn>(sym(
                    c"cpg_initialize",
                )?),
                join: std::mem::transmute::<*mut c_void, GroupFn>(sym(c"cpg_join")?),
                leave: std::mem::transmute::<*mut c_void, GroupFn>(sym(c"cpg_leave")?),
                fd_get: std::mem::transmute::<*mut c_void, FdGetFn>(sym(c"cpg_fd_get")?),
                dispatch: std::mem::transmute::<*mut c_void, DispatchFn>(sym(c"cpg_dispatch")?),
                mcast_joined: std::mem::transmute::<*mut c_void, McastFn>(sym(
                    c"cpg_mcast_joined",
                )?),
                local_get: std::mem::transmute::<*mut c_void, LocalGetFn>(sym(c"cpg_local_get")?),
                finalize: std::mem::transmute::<*mut c_void, FinalizeFn>(sym(c"cpg_finalize")?),
            })
        }
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call
    // on this thread; it is copied at once.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "no detail".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// A cs_error_t as its cpg.h name (the common ones) and number.
fn cs_error(code: c_int) -> String {
    let name = match code {
        2 => "CS_ERR_LIBRARY (Corosync is not running on this node, or it went away)",
        4 => "CS_ERR_INIT",
        5 => "CS_ERR_TIMEOUT",
        6 => "CS_ERR_TRY_AGAIN",
        7 => "CS_ERR_INVALID_PARAM",
        9 => "CS_ERR_BAD_HANDLE",
        11 => "CS_ERR_ACCESS (run as root)",
        12 => "CS_ERR_NOT_EXIST",
        14 => "CS_ERR_EXIST (already joined)",
        100 => "CS_ERR_SECURITY",
        _ => "cs_error_t",
    };
    format!("{name} ({code})")
}

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

fn retry(what: &str, mut call: impl FnMut() -> c_int) -> Result<(), String> {
    let until = Instant::now() + TRY_AGAIN_FOR;
    loop {
        match call() {
            CS_OK => return Ok(()),
            CS_ERR_TRY_AGAIN if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20))
            }
            e => return Err(format!("{what}: {}", cs_error(e))),
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
    if group.is_empty() || group.len() > CPG_MAX_NAME_LENGTH {
        return Err(format!(
            "group name must be 1 to {CPG_MAX_NAME_LENGTH} bytes, got {}",
            group.len()
        ));
    }
    let lib = Lib::open()?;
    let mut name = CpgName {
        length: group.len() as u32,
        value: [0; CPG_MAX_NAME_LENGTH],
    };
    name.value[..group.len()].copy_from_slice(group.as_bytes());
    let mut callbacks = Callbacks {
        deliver: Some(on_deliver),
        confchg: Some(on_confchg),
    };
    let mut handle: u64 = 0;
    // SAFETY (this and every libcpg call below): the functions are libcpg's (Lib::open),
    // called with a handle cpg_initialize produced and pointers to live locals; libcpg copies
    // the callbacks and the group name.
    retry("cpg_initialize", || unsafe {
        (lib.initialize)(&mut handle, &mut callbacks)
    })?;
    let run = || -> Result<(), String> {
        retry("cpg_join", || unsafe { (lib.join)(handle, &name) })?;
        let mut nodeid: c_uint = 0;
        retry("cpg_local_get", || unsafe {
            (lib.local_get)(handle, &mut nodeid)
        })?;
        let mut fd: c_int = -1;
        retry("cpg_fd_get", || unsafe { (lib.fd_get)(handle, &mut fd) })?;
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
                // SAFETY: as above (libcpg call on our handle).
                let rc = unsafe { (lib.dispatch)(handle, CS_DISPATCH_ALL) };
                emit(&mut out)?;
                if rc != CS_OK && rc != CS_ERR_TRY_AGAIN {
                    return Err(format!("cpg_dispatch: {}", cs_error(rc)));
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
                    return retry("cpg_leave", || unsafe { (lib.leave)(handle, &name) });
                }
                pending.extend_from_slice(&buf[..got as usize]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).take(i).collect();
                    let iov = libc::iovec {
                        iov_base: line.as_ptr() as *mut c_void,
                        iov_len: line.len(),
                    };
                    retry("cpg_mcast_joined", || {
                        // SAFETY: as above; `iov` points into `line`, alive across the call
                        // (libcpg copies the message before returning).
                        let rc = unsafe { (lib.mcast_joined)(handle, CPG_TYPE_AGREED, &iov, 1) };
                        if rc == CS_ERR_TRY_AGAIN {
                            // Flow control: deliveries must be read for it to lift.
                            // SAFETY: as above.
                            unsafe { (lib.dispatch)(handle, CS_DISPATCH_ALL) };
                        }
                        rc
                    })?;
                    emit(&mut out)?;
                }
            }
        }
    };
    let r = run();
    // SAFETY: as above; the handle is not used after this.
    unsafe { (lib.finalize)(handle) };
    r
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
