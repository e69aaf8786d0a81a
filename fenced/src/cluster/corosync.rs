//! The Corosync binding (feature `corosync`): CPG carries the group's messages in total order
//! and its configuration changes, the quorum service says whether this node is quorate. Both
//! are driven by their dispatch descriptors registered with tokio ([`AsyncFd`]): no thread per
//! call, no polling loop. What the callbacks see goes, in CPG's order, to the member runtime
//! ([`super::Cluster::run`]) as [`Incoming`] items; what the runtime sends is multicast with
//! `CPG_TYPE_AGREED`.
//!
//! The libraries are opened at run time ([`super::libs`], which says why they are not linked).
//! Each handle's context is the address of the [`Sink`] the connection owns; the callbacks
//! read it back with `context_get`.
//!
//! When Corosync goes away (stopped, crashed) the runtime is told ([`Incoming::Lost`]) and the
//! binding reconnects every [`RECONNECT`]; it comes back as a new member (same node and pid, a
//! fresh join), so the group hands it the state again.

use super::libs::{self, CpgAddress, CpgName, CsError, Handle, RingId};
use super::state::{Delivered, MemberId, Message};
use super::{wire, Incoming};
use std::ffi::c_void;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

/// How long the binding waits before connecting again after Corosync went away.
pub const RECONNECT: Duration = Duration::from_secs(1);

/// How long a multicast refused for flow control (`CS_ERR_TRY_AGAIN`) waits before the next
/// try; Corosync lifts flow control once its queue drains.
const TRY_AGAIN: Duration = Duration::from_millis(10);

/// How many times a multicast is retried for flow control before the connection counts as
/// broken (about 5 s).
const TRY_AGAIN_LIMIT: u32 = 500;

/// Why the binding could not talk to Corosync; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum CorosyncError {
    /// A library call failed.
    #[error("corosync {call} failed: {err}; is corosync running on this node and this fenced in its namespaces? check `corosync-cfgtool -s` and `corosync-quorumtool -s`")]
    Call {
        /// The libcpg/libquorum call.
        call: &'static str,
        /// Corosync's error.
        err: CsError,
    },
    /// Corosync's client libraries are not installed.
    #[error(transparent)]
    Load(#[from] libs::LoadError),
    /// The group's name does not fit CPG's.
    #[error("the cluster group name `{0}` is longer than CPG's {max} bytes; choose a shorter [cluster] group", max = libs::MAX_NAME)]
    GroupName(String),
    /// A dispatch descriptor could not be registered with tokio.
    #[error("cannot watch corosync's {service} descriptor: {source}; check the process's file descriptor limit")]
    Watch {
        /// `cpg` or `quorum`.
        service: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

fn call(call: &'static str) -> impl FnOnce(CsError) -> CorosyncError {
    move |err| CorosyncError::Call { call, err }
}

impl From<libs::OpenError> for CorosyncError {
    fn from(e: libs::OpenError) -> Self {
        match e {
            libs::OpenError::Load(l) => CorosyncError::Load(l),
            libs::OpenError::Call(call, err) => CorosyncError::Call { call, err },
        }
    }
}

/// What the C callbacks record during one dispatch, read out right after it.
#[derive(Default)]
struct Sink {
    items: Mutex<Vec<Incoming>>,
}

impl Sink {
    fn items(&self) -> MutexGuard<'_, Vec<Incoming>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, i: Incoming) {
        self.items().push(i);
    }
}

/// The sink a callback's context names.
///
/// # Safety
/// `ctx` must be NULL or the address of a [`Sink`] that outlives the call; [`Connection`]
/// sets it to its boxed sink, which it drops only after both handles (whose callbacks run
/// only inside its own `dispatch` calls).
unsafe fn sink_at<'a>(ctx: *const c_void) -> Option<&'a Sink> {
    // SAFETY: per this function's contract.
    unsafe { ctx.cast::<Sink>().as_ref() }
}

fn member(node: u32, pid: u32) -> MemberId {
    MemberId { node, pid }
}

unsafe extern "C" fn on_deliver(
    h: Handle,
    _group: *const CpgName,
    node: u32,
    pid: u32,
    msg: *mut c_void,
    len: usize,
) {
    let Some(ctx) = libs::Cpg::context(h) else {
        return;
    };
    // SAFETY: the context is the connection's sink (given in `Connection::open`).
    let Some(sink) = (unsafe { sink_at(ctx) }) else {
        return;
    };
    // SAFETY: libcpg hands `len` bytes at `msg`, valid during the callback.
    let msg = unsafe { libs::slice(msg.cast::<u8>().cast_const(), len) };
    let from = member(node, pid);
    match wire::decode(msg) {
        Ok(msg) => sink.push(Incoming::Delivered(Delivered::Message { from, msg })),
        // Every member skips the same undecodable message, so their states stay equal.
        Err(e) => tracing::warn!(%from, "cluster: ignoring a message: {e}"),
    }
}

#[allow(clippy::too_many_arguments)] // cpg_confchg_fn_t's signature
unsafe extern "C" fn on_confchg(
    h: Handle,
    _group: *const CpgName,
    members: *const CpgAddress,
    n_members: usize,
    _left: *const CpgAddress,
    _n_left: usize,
    joined: *const CpgAddress,
    n_joined: usize,
) {
    let Some(ctx) = libs::Cpg::context(h) else {
        return;
    };
    // SAFETY: as in `on_deliver`.
    let Some(sink) = (unsafe { sink_at(ctx) }) else {
        return;
    };
    let ids = |l: &[CpgAddress]| {
        let mut v: Vec<MemberId> = l.iter().map(|a| member(a.nodeid, a.pid)).collect();
        v.sort_unstable();
        v
    };
    // SAFETY: libcpg hands arrays of the given lengths, valid during the callback.
    let (members, joined) = unsafe {
        (
            libs::slice(members, n_members),
            libs::slice(joined, n_joined),
        )
    };
    sink.push(Incoming::Delivered(Delivered::Membership {
        members: ids(members),
        joined: ids(joined),
    }));
}

unsafe extern "C" fn on_quorum(
    h: Handle,
    quorate: u32,
    _ring: RingId,
    _n_members: u32,
    _members: *const u32,
) {
    let Some(ctx) = libs::Quorum::context(h) else {
        return;
    };
    // SAFETY: as in `on_deliver`.
    if let Some(sink) = unsafe { sink_at(ctx) } {
        sink.push(Incoming::Quorum(quorate != 0));
    }
}

/// A dispatch descriptor as tokio sees it; libcpg/libquorum own and close it.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// One connection to this node's Corosync; in the group while this node is quorate (or its
/// config allows fencing without quorum).
pub struct Connection {
    // Field order is drop order: the watchers, then the handles (finalized on drop), then the
    // sink their callbacks write to.
    cpg_fd: AsyncFd<Fd>,
    quorum_fd: AsyncFd<Fd>,
    cpg: libs::Cpg,
    quorum: libs::Quorum,
    group: String,
    name: CpgName,
    me: MemberId,
    quorate: bool,
    /// Leave the group without quorum (`allow_without_quorum = false`).
    follow_quorum: bool,
    /// Joined to the group now.
    in_group: bool,
    /// The runtime was told why this member is out of the group.
    told_out: bool,
    sink: Box<Sink>,
}

impl Connection {
    /// Connects to CPG and the quorum service and starts tracking quorum; [`Connection::serve`]
    /// joins `group` once this node is quorate (at once when `follow_quorum` is false).
    /// Must be called inside a tokio runtime.
    pub fn open(group: &str, follow_quorum: bool) -> Result<Connection, CorosyncError> {
        let name = CpgName::new(group).ok_or_else(|| CorosyncError::GroupName(group.into()))?;
        let sink = Box::new(Sink::default());
        let ctx = std::ptr::from_ref::<Sink>(&sink)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: `ctx` is the boxed sink, which the connection drops after both handles
        // (field order); the callbacks only push to it.
        let cpg = unsafe { libs::Cpg::open(on_deliver, on_confchg, ctx) }?;
        // SAFETY: as above.
        let quorum = unsafe { libs::Quorum::open(on_quorum, ctx) }?;
        let node = cpg.local_node().map_err(call("cpg_local_get"))?;
        let quorate = quorum.quorate().map_err(call("quorum_getquorate"))?;
        quorum.track_changes().map_err(call("quorum_trackstart"))?;
        let watch = |service, fd| {
            // SAFETY: the descriptor belongs to a handle that this connection drops only
            // after the `AsyncFd` (field order), so it stays open and the same file while
            // registered; `Fd` returns the same number every time.
            unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) }.map_err(|e| {
                CorosyncError::Watch {
                    service,
                    source: e.into(),
                }
            })
        };
        let cpg_fd = watch("cpg", cpg.fd().map_err(call("cpg_fd_get"))?)?;
        let quorum_fd = watch("quorum", quorum.fd().map_err(call("quorum_fd_get"))?)?;
        Ok(Connection {
            cpg_fd,
            quorum_fd,
            cpg,
            quorum,
            group: group.to_string(),
            name,
            me: member(node, std::process::id()),
            quorate,
            follow_quorum,
            in_group: false,
            told_out: false,
            sink,
        })
    }

    /// This member as CPG names it.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// Hands what the callbacks recorded to the runtime, in order. Before a configuration
    /// change, the quorum as Corosync has it now: a member that was cut off must not send
    /// its claims, nor say it is quorate, on the quorum it had before the change (votequorum
    /// settles the new quorum before CPG delivers the change).
    fn flush(&mut self, to: &mpsc::UnboundedSender<Incoming>) -> Result<(), String> {
        let items = std::mem::take(&mut *self.sink.items());
        for i in items {
            if matches!(i, Incoming::Delivered(Delivered::Membership { .. })) {
                if let Ok(q) = self.quorum.quorate() {
                    if q != self.quorate {
                        self.quorate = q;
                        to.send(Incoming::Quorum(q))
                            .map_err(|_| "fenced is stopping".to_string())?;
                    }
                }
            }
            if let Incoming::Quorum(q) = i {
                if q == self.quorate {
                    continue;
                }
                self.quorate = q;
            }
            to.send(i).map_err(|_| "fenced is stopping".to_string())?;
        }
        Ok(())
    }

    /// Joins or leaves the group as quorum says. A member without quorum is out of the
    /// group, so the quorate side never merges with a state it did not see: it comes back as
    /// a new member and is handed the group's state. Leaving also hands what it executed to
    /// the quorate side, which reads the target back itself.
    fn follow(&mut self, to: &mpsc::UnboundedSender<Incoming>) -> Result<(), String> {
        let want = self.quorate || !self.follow_quorum;
        let stopping = |_| "fenced is stopping".to_string();
        if want && !self.in_group {
            to.send(Incoming::Joined(self.me)).map_err(stopping)?;
            self.cpg
                .join(&self.name)
                .map_err(|e| format!("cpg_join of group `{}` failed: {e}", self.group))?;
            tracing::info!(group = %self.group, member = %self.me, "cluster: joined the CPG group");
            self.in_group = true;
            self.told_out = false;
        } else if !want && (self.in_group || !self.told_out) {
            if self.in_group {
                self.cpg
                    .leave(&self.name)
                    .map_err(|e| format!("cpg_leave of group `{}` failed: {e}", self.group))?;
                self.in_group = false;
            }
            let why = format!("this node has no quorum: out of the CPG group `{}` until quorum returns (new operations are refused in a partition without quorum; heal it, or after checking a node is off confirm it by hand)", self.group);
            tracing::warn!("cluster: {why}");
            to.send(Incoming::Lost(why)).map_err(stopping)?;
            self.told_out = true;
        }
        Ok(())
    }

    /// Multicasts one message in the group (agreed order); waits out flow control.
    async fn send(&self, m: &Message) -> Result<(), String> {
        if !self.in_group {
            // The runtime refuses requests while out of the group; its late notes (an
            // outcome of an operation the group has handed over) have no group to go to.
            tracing::debug!("cluster: not in the group, dropping a message");
            return Ok(());
        }
        let bytes = match wire::encode(m) {
            Ok(b) => b,
            // Nothing was sent; the connection is fine. The runtime's caller times out.
            Err(e) => {
                tracing::error!("cluster: {e}");
                return Ok(());
            }
        };
        let mut tries = 0;
        loop {
            match self.cpg.mcast_agreed(&bytes) {
                Ok(()) => return Ok(()),
                Err(libs::TRY_AGAIN) if tries < TRY_AGAIN_LIMIT => {
                    tries += 1;
                    tokio::time::sleep(TRY_AGAIN).await;
                }
                Err(e) => {
                    return Err(format!(
                        "cpg_mcast_joined to group `{}` failed: {e}",
                        self.group
                    ))
                }
            }
        }
    }

    /// Serves until Corosync goes away (the reason) or the runtime stops (`None`).
    pub async fn serve(
        &mut self,
        out: &mut mpsc::UnboundedReceiver<Message>,
        to: &mpsc::UnboundedSender<Incoming>,
    ) -> Option<String> {
        if to.send(Incoming::Quorum(self.quorate)).is_err() {
            return None;
        }
        if let Err(why) = self.follow(to) {
            return Some(why);
        }
        loop {
            let r = tokio::select! {
                r = self.cpg_fd.readable() => match r {
                    Ok(mut g) => {
                        // Cleared before dispatching: whatever arrives meanwhile wakes us again.
                        g.clear_ready();
                        self.cpg.dispatch()
                            .map_err(|e| format!("cpg_dispatch failed: {e}"))
                    }
                    Err(e) => Err(format!("waiting on the CPG descriptor failed: {e}")),
                },
                r = self.quorum_fd.readable() => match r {
                    Ok(mut g) => {
                        g.clear_ready();
                        self.quorum.dispatch()
                            .map_err(|e| format!("quorum_dispatch failed: {e}"))
                    }
                    Err(e) => Err(format!("waiting on the quorum descriptor failed: {e}")),
                },
                m = out.recv() => match m {
                    None => return None,
                    Some(m) => self.send(&m).await,
                },
            };
            // What was delivered before an error still counts (it is part of the order).
            if let Err(stopping) = self.flush(to) {
                tracing::debug!("cluster: {stopping}");
                return None;
            }
            if let Err(why) = r {
                return Some(format!("lost corosync: {why}"));
            }
            if let Err(why) = self.follow(to) {
                return Some(why);
            }
        }
    }
}

/// Runs the binding for `group` until the runtime stops: connects, serves, and after losing
/// Corosync tells the runtime and connects again. Messages the runtime sends while there is
/// no connection are dropped (the runtime refuses new requests then).
pub async fn run(
    group: String,
    follow_quorum: bool,
    mut out: mpsc::UnboundedReceiver<Message>,
    to: mpsc::UnboundedSender<Incoming>,
) {
    let mut last_error: Option<String> = None;
    loop {
        match Connection::open(&group, follow_quorum) {
            Ok(mut c) => {
                tracing::info!(group = %group, member = %c.me(), quorate = c.quorate, "cluster: connected to corosync");
                last_error = None;
                let Some(why) = c.serve(&mut out, &to).await else {
                    return;
                };
                tracing::error!(
                    "cluster: {why}; reconnecting every {} s",
                    RECONNECT.as_secs()
                );
                if to.send(Incoming::Lost(why)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let why = e.to_string();
                // Said once per cause, not every second.
                if last_error.as_deref() != Some(why.as_str()) {
                    tracing::error!("cluster: {why}; retrying every {} s", RECONNECT.as_secs());
                    if to.send(Incoming::Lost(why.clone())).is_err() {
                        return;
                    }
                    last_error = Some(why);
                }
            }
        }
        let pause = tokio::time::sleep(RECONNECT);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                m = out.recv() => if m.is_none() { return },
            }
        }
    }
}
