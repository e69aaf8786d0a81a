//! Simulated serial-console PDUs (WTI NPS/IPS, APC AP79xx, BayTech RPC) on a pseudo-terminal
//! and on a telnet-style TCP port (as behind a console server), with per-outlet state and the
//! lab's fault knobs.
//!
//! The screens are written from the vendors' public manuals, the same ones
//! [`drivers::serial_pdu::model`] cites (WTI's text interface: `/S`, `/ON n`, `/OFF n`,
//! "Sure? (Y/N)", the `NPS>` prompt, and the plug table whose header starts with `Plug` at
//! column 0 as ClusterLabs fence_wti reads it; APC's AOS CLI: `User Name :`, `olStatus`,
//! `olOn`, `olOff`, `E000: Success`; BayTech's RPC menu: `n)...name : On` lines, the
//! `(Y/N)?` question after `ON n`/`OFF n`, the `RPC-3>` prompt). So the driver, which reads
//! the same manuals, and fence_wti, which was written against real WTI switches, both drive
//! it: a mistake shared by the driver and this simulator would show against fence_wti.
//!
//! Each PDU has one console on its pseudo-terminal (one serial line: its login state outlives
//! the program that opened the port, as a real console's does) and a fresh console per TCP
//! connection, which prints its login question unasked (as a console server's port does once
//! connected). Telnet option negotiation is refused (RFC 854: WONT/DONT answers, never an
//! answer to a refusal), and `IAC` sequences are stripped from the input.
//!
//! The pseudo-terminal is kept in raw mode and its slave side stays open in the lab, so that a
//! client closing the port does not hang up the line (the master would read EIO).

use super::node::{Node, PowerAction, PowerEvent, PowerHook};
use super::{lock, EventKind, EventLog, Fault, FaultKnob, Faults, LabError, LabTasks};
use drivers::serial_pdu::Model;
use drivers::Secret;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest input line a console keeps; the rest of a longer line is dropped (as a PDU's
/// fixed input buffer does).
const MAX_INPUT_LINE: usize = 128;

/// Most commands kept per PDU for [`SerialPduHandle::received`].
const RECEIVED_CAPACITY: usize = 256;

/// What to start.
#[derive(Clone)]
pub struct SerialLabSpec {
    /// Number of PDUs, named `pdu1` … `pduN`.
    pub count: usize,
    /// Outlets per PDU.
    pub outlets: usize,
    /// Outlet names, outlet 1 first (missing ones are `outletK`).
    pub names: Vec<String>,
    /// The console dialogue (one of [`drivers::serial_pdu::MODELS`]).
    pub model: &'static Model,
    /// The user name the console asks for (`None`: it asks none).
    pub username: Option<String>,
    /// The password the console asks for (`None`: it asks none).
    pub password: Option<Secret>,
    /// Serve each PDU on a pseudo-terminal.
    pub pty: bool,
    /// Serve each PDU on a TCP port of 127.0.0.1.
    pub tcp: bool,
    /// TCP port of `pdu1` (the others follow); 0 = any free port each.
    pub base_port: u16,
    /// Whether outlets start on.
    pub power_on: bool,
    /// Delay between a switching command and the outlet's change.
    pub power_delay: Duration,
    /// Faults every PDU starts with.
    pub faults: Faults,
    /// Called with the outlet's name on every outlet power change, so a lab node can follow.
    pub power_hook: Option<PowerHook>,
    /// Seed of the per-PDU RNG (garbage bytes).
    pub seed: u64,
}

impl fmt::Debug for SerialLabSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialLabSpec")
            .field("count", &self.count)
            .field("outlets", &self.outlets)
            .field("model", &self.model.name)
            .field("username", &self.username)
            .field("password", &self.password.is_some())
            .field("pty", &self.pty)
            .field("tcp", &self.tcp)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl SerialLabSpec {
    /// `count` PDUs of `outlets` outlets of `model`, on a pty and on TCP, no login.
    pub fn new(count: usize, outlets: usize, model: &'static Model) -> Self {
        Self {
            count,
            outlets,
            names: Vec::new(),
            model,
            username: None,
            password: None,
            pty: true,
            tcp: true,
            base_port: 0,
            power_on: true,
            power_delay: Duration::ZERO,
            faults: Faults::default(),
            power_hook: None,
            seed: 0x5e71_a100,
        }
    }
}

/// Which screens a console draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Screens {
    Wti,
    Apc,
    Baytech,
}

impl Screens {
    fn of(model: &Model) -> Option<Self> {
        match model.name {
            "wti-nps" => Some(Screens::Wti),
            "apc-ap79xx" => Some(Screens::Apc),
            "baytech-rpc" => Some(Screens::Baytech),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct OutletSim {
    name: String,
    node: Node,
    stuck: bool,
}

/// State a PDU shares between its consoles and its handles.
struct Shared {
    name: String,
    model: &'static Model,
    screens: Screens,
    username: Option<String>,
    password: Option<Secret>,
    started: Instant,
    outlets: Mutex<Vec<OutletSim>>,
    faults: Mutex<Faults>,
    /// Replies still to be damaged by [`SerialPduHandle::garbage_replies`].
    garbage_left: AtomicU32,
    events: Mutex<EventLog>,
    received: Mutex<std::collections::VecDeque<String>>,
    hook: Mutex<Option<PowerHook>>,
    /// Wakes the settling task after a switching command.
    wake: Notify,
    rng: Mutex<StdRng>,
}

impl Shared {
    fn record(&self, kind: EventKind) {
        lock(&self.events).record(self.started.elapsed(), kind);
    }

    fn faults(&self) -> Faults {
        *lock(&self.faults)
    }

    /// Applies due outlet changes and calls the hook outside the lock.
    fn settle(&self) {
        let now = Instant::now();
        let events: Vec<(String, PowerEvent)> = lock(&self.outlets)
            .iter_mut()
            .flat_map(|o| {
                let name = o.name.clone();
                o.node
                    .settle(now)
                    .into_iter()
                    .map(move |e| (name.clone(), e))
            })
            .collect();
        if events.is_empty() {
            return;
        }
        let hook = lock(&self.hook).clone();
        for (outlet, e) in events {
            self.record(EventKind::Power(e));
            if let Some(h) = &hook {
                h(&outlet, e);
            }
        }
    }

    fn next_change(&self) -> Option<Instant> {
        lock(&self.outlets)
            .iter()
            .filter_map(|o| o.node.next_change())
            .min()
    }

    /// Outlets named by a command argument: a number, a name (case-insensitive), `*` or
    /// `all`; `None` if it names none.
    fn select(&self, arg: &str) -> Option<Vec<usize>> {
        let outlets = lock(&self.outlets);
        let arg = arg.trim();
        if arg == "*" || arg.eq_ignore_ascii_case("all") {
            return Some((0..outlets.len()).collect());
        }
        let mut picked = Vec::new();
        // WTI takes `1,3` or `1+3`; the others one outlet.
        for part in arg.split([',', '+']).map(str::trim) {
            let i = match part.parse::<usize>() {
                Ok(n) if (1..=outlets.len()).contains(&n) => n - 1,
                Ok(_) => return None,
                Err(_) => outlets
                    .iter()
                    .position(|o| o.name.eq_ignore_ascii_case(part))?,
            };
            picked.push(i);
        }
        (!picked.is_empty()).then_some(picked)
    }

    /// Switches outlets as the PDU would: a stuck outlet (or a stuck PDU) acknowledges and
    /// stays as it was; with `power-on-fails`, on is acknowledged and nothing happens.
    fn switch(&self, outlets: &[usize], on: bool) {
        let faults = self.faults();
        let now = Instant::now();
        {
            let mut all = lock(&self.outlets);
            for &i in outlets {
                let Some(o) = all.get_mut(i) else { continue };
                if faults.stuck || o.stuck {
                    self.record(EventKind::FaultApplied("stuck"));
                } else if on && faults.power_on_fails {
                    self.record(EventKind::FaultApplied("power-on-fails"));
                } else {
                    let _ = o.node.request(
                        if on {
                            PowerAction::Up
                        } else {
                            PowerAction::Down
                        },
                        now,
                    );
                }
            }
        }
        self.settle();
        self.wake.notify_one();
    }

    /// `(number, name, on, changing)` of every outlet.
    fn states(&self) -> Vec<(usize, String, bool, bool)> {
        self.settle();
        lock(&self.outlets)
            .iter()
            .enumerate()
            .map(|(i, o)| (i + 1, o.name.clone(), o.node.is_on(), o.node.is_changing()))
            .collect()
    }

    fn note_received(&self, line: &str) {
        let mut r = lock(&self.received);
        if r.len() >= RECEIVED_CAPACITY {
            r.pop_front();
        }
        r.push_back(line.to_string());
    }
}

/// A handle on one running simulated serial PDU (cheap to clone).
#[derive(Clone)]
pub struct SerialPduHandle {
    shared: Arc<Shared>,
    pty: Option<PathBuf>,
    tcp: Option<SocketAddr>,
}

impl fmt::Debug for SerialPduHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialPduHandle")
            .field("name", &self.shared.name)
            .field("pty", &self.pty)
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl SerialPduHandle {
    /// `pdu1` …
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The model's name (`wti-nps` …).
    pub fn model(&self) -> &'static str {
        self.shared.model.name
    }

    /// The pseudo-terminal's slave device (`/dev/pts/N`), if served on one.
    pub fn pty(&self) -> Option<&Path> {
        self.pty.as_deref()
    }

    /// The TCP address, if served on one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The ready line `palisade-lab serial-pdu` prints for this PDU.
    pub fn ready_line(&self) -> String {
        let mut line = format!("serial-pdu {} {}", self.name(), self.model());
        if let Some(p) = &self.pty {
            line.push_str(&format!(" pty={}", p.display()));
        }
        if let Some(a) = self.tcp {
            line.push_str(&format!(" tcp={a}"));
        }
        line
    }

    /// Whether outlet `n` (1-based) is on now; `None` if there is no such outlet.
    pub fn outlet_on(&self, n: usize) -> Option<bool> {
        self.shared.settle();
        lock(&self.shared.outlets)
            .get(n.checked_sub(1)?)
            .map(|o| o.node.is_on())
    }

    /// Sets outlet `n`'s power at once (the hook is called if it changed).
    pub fn set_outlet(&self, n: usize, on: bool) {
        let event = lock(&self.shared.outlets)
            .get_mut(n.wrapping_sub(1))
            .and_then(|o| o.node.force(on).map(|e| (o.name.clone(), e)));
        if let Some((outlet, e)) = event {
            self.shared.record(EventKind::Power(e));
            if let Some(h) = lock(&self.shared.hook).clone() {
                h(&outlet, e);
            }
        }
    }

    /// Makes outlet `n` acknowledge switching commands without switching (or behave again).
    pub fn set_outlet_stuck(&self, n: usize, stuck: bool) {
        if let Some(o) = lock(&self.shared.outlets).get_mut(n.wrapping_sub(1)) {
            o.stuck = stuck;
        }
        self.shared
            .record(EventKind::FaultSet(format!("outlet {n} stuck={stuck}")));
    }

    /// Outlet names, outlet 1 first.
    pub fn outlet_names(&self) -> Vec<String> {
        lock(&self.shared.outlets)
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }

    /// Sets one fault knob for the whole PDU.
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.shared.faults).apply(fault);
        self.shared
            .record(EventKind::FaultSet(format!("{fault:?}")));
    }

    /// The current knobs.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Damages the next `n` replies that show outlet states (noise inside each state word),
    /// then answers cleanly again: a line that was noisy for a moment.
    pub fn garbage_replies(&self, n: u32) {
        self.shared.garbage_left.store(n, Ordering::Relaxed);
        self.shared
            .record(EventKind::FaultSet(format!("garbage for {n} replies")));
    }

    /// Installs (or removes) the hook called with the outlet's name on its power changes.
    pub fn set_power_hook(&self, hook: Option<PowerHook>) {
        *lock(&self.shared.hook) = hook;
    }

    /// The command lines received at the command prompt, oldest first (never a password).
    pub fn received(&self) -> Vec<String> {
        lock(&self.shared.received).iter().cloned().collect()
    }

    /// Recent events, oldest first.
    pub fn events(&self) -> Vec<super::Event> {
        lock(&self.shared.events).entries()
    }
}

/// Running simulated serial PDUs; dropping it stops them (and closes the pseudo-terminals).
#[derive(Debug)]
pub struct SerialLab {
    pdus: Vec<SerialPduHandle>,
    tasks: LabTasks,
}

impl SerialLab {
    /// Starts `spec.count` PDUs and returns once every pty is open and every port listens.
    /// Must be called inside a tokio runtime.
    pub async fn start(spec: SerialLabSpec) -> Result<SerialLab, LabError> {
        if spec.outlets == 0 || spec.outlets > 48 {
            return Err(LabError::Spec(
                "a serial PDU has 1 to 48 outlets (the widest status screen)".into(),
            ));
        }
        if !spec.pty && !spec.tcp {
            return Err(LabError::Spec("serve on a pty, on TCP, or both".into()));
        }
        let Some(screens) = Screens::of(spec.model) else {
            return Err(LabError::Spec(format!(
                "no screens for model `{}`; the lab draws {}",
                spec.model.name,
                drivers::serial_pdu::model::names()
            )));
        };
        if spec.username.is_some() && spec.password.is_none() {
            return Err(LabError::Spec(
                "a console that asks a user name also asks a password; give one".into(),
            ));
        }
        let mut lab = SerialLab {
            pdus: Vec::with_capacity(spec.count),
            tasks: LabTasks::with_capacity(spec.count * 3),
        };
        for i in 1..=spec.count {
            let outlets = (1..=spec.outlets)
                .map(|k| OutletSim {
                    name: spec
                        .names
                        .get(k - 1)
                        .cloned()
                        .unwrap_or_else(|| format!("outlet{k}")),
                    node: Node::new(spec.power_on, spec.power_delay),
                    stuck: false,
                })
                .collect();
            let shared = Arc::new(Shared {
                name: format!("pdu{i}"),
                model: spec.model,
                screens,
                username: spec.username.clone(),
                password: spec.password.clone(),
                started: Instant::now(),
                outlets: Mutex::new(outlets),
                faults: Mutex::new(spec.faults),
                garbage_left: AtomicU32::new(0),
                events: Mutex::new(EventLog::default()),
                received: Mutex::new(std::collections::VecDeque::new()),
                hook: Mutex::new(spec.power_hook.clone()),
                wake: Notify::new(),
                rng: Mutex::new(StdRng::seed_from_u64(
                    spec.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                )),
            });
            let mut handle = SerialPduHandle {
                shared: shared.clone(),
                pty: None,
                tcp: None,
            };
            lab.tasks.push(tokio::spawn(settle_loop(shared.clone())));
            if spec.pty {
                let pty = Pty::open().map_err(|e| {
                    LabError::Spec(format!(
                        "cannot open a pseudo-terminal for pdu{i}: {e}; check that /dev/ptmx and /dev/pts are there (mount devpts)"
                    ))
                })?;
                handle.pty = Some(pty.path.clone());
                lab.tasks.push(tokio::spawn(serve_pty(pty, shared.clone())));
            }
            if spec.tcp {
                let port = if spec.base_port == 0 {
                    0
                } else {
                    u16::try_from(usize::from(spec.base_port) + i - 1)
                        .map_err(|_| LabError::Spec("base port + count runs past 65535".into()))?
                };
                let want: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
                let listener = TcpListener::bind(want)
                    .await
                    .map_err(|source| LabError::Bind { addr: want, source })?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| LabError::Bind { addr: want, source })?;
                handle.tcp = Some(addr);
                lab.tasks
                    .push(tokio::spawn(serve_tcp(listener, shared.clone())));
            }
            lab.pdus.push(handle);
        }
        Ok(lab)
    }

    /// The PDUs, `pdu1` first.
    pub fn pdus(&self) -> &[SerialPduHandle] {
        &self.pdus
    }

    /// The PDU with this name.
    pub fn pdu(&self, name: &str) -> Option<&SerialPduHandle> {
        self.pdus.iter().find(|p| p.name() == name)
    }

    /// Applies a knob to the PDU it names, or to all; `false` if it names no PDU here.
    pub fn apply(&self, knob: &FaultKnob) -> bool {
        super::apply_knob(&self.pdus, |p| p.name(), |p, f| p.set_fault(f), knob)
    }

    /// Stops every PDU and waits until their ptys and ports are closed.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Applies delayed outlet changes when they are due, so the power hook fires on time even
/// when nobody is reading the console.
async fn settle_loop(shared: Arc<Shared>) {
    loop {
        shared.settle();
        match shared.next_change() {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// A pseudo-terminal: the master end the lab serves, and the slave end kept open.
struct Pty {
    master: AsyncFd<OwnedFd>,
    /// Held open for the lab's lifetime: without it the line hangs up each time a client
    /// closes the port, and reads on the master fail with EIO until the next open.
    _slave: std::fs::File,
    path: PathBuf,
}

impl Pty {
    fn open() -> std::io::Result<Pty> {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: posix_openpt returns a new descriptor or -1; nothing else is touched.
        let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by posix_openpt and is owned by nobody else.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: grantpt/unlockpt take the master descriptor we own.
        if unsafe { libc::grantpt(fd) } != 0 || unsafe { libc::unlockpt(fd) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer is valid for its whole length, which is passed.
        if unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: ptsname_r wrote a NUL-terminated string into the buffer.
        let cname = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(cname.to_bytes()));
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)?;
        // Raw mode: no echo, no line editing, no CR/LF translation by the kernel; the
        // simulated console does its own echo, as a PDU on a serial line does.
        // SAFETY: termios is plain data; tcgetattr fills it from the slave we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and pointer.
        if unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: t is a valid termios.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: valid descriptor and termios.
        if unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it (and so keeps it open
        // and the same descriptor) until it is dropped.
        let master = unsafe { AsyncFd::register(master) }?;
        Ok(Pty {
            master,
            _slave: slave,
            path,
        })
    }
}

impl AsyncRead for Pty {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = match self.master.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let r = guard.try_io(|fd| {
                // SAFETY: the buffer is valid for `len` bytes; fd is the open master.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            match r {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Pty {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = match self.master.poll_write_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let r = guard.try_io(|fd| {
                // SAFETY: data is valid for its length; fd is the open master.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            match r {
                Ok(res) => return Poll::Ready(res),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The one console of the PDU's serial line. It never ends: the line stays up whether or
/// not a client has the port open.
async fn serve_pty(mut pty: Pty, shared: Arc<Shared>) {
    let mut console = Console::new(shared.clone(), false);
    if let Err(e) = run_console(&mut pty, &mut console, false).await {
        shared.record(EventKind::Discarded(
            if e.kind() == std::io::ErrorKind::Other {
                "pty error"
            } else {
                "pty closed"
            },
        ));
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        // Connections end when the client leaves, logs out, or the lab's runtime stops.
        tokio::spawn(async move {
            let mut console = Console::new(shared, true);
            let _ = run_console(&mut stream, &mut console, true).await;
        });
    }
}

/// Telnet command bytes (RFC 854).
const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;

/// Strips telnet commands from the input, keeping the state across reads.
#[derive(Debug, Default)]
struct Telnet {
    state: TelnetState,
    /// Options already refused, so a refusal is sent once per option and direction.
    refused: std::collections::BTreeSet<(u8, u8)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum TelnetState {
    #[default]
    Data,
    Iac,
    Option(u8),
    Sub,
    SubIac,
}

impl Telnet {
    /// Data bytes of `input`, and the answers to send for option requests.
    fn strip(&mut self, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut data = Vec::with_capacity(input.len());
        let mut answer = Vec::new();
        for &b in input {
            self.state = match (self.state, b) {
                (TelnetState::Data, IAC) => TelnetState::Iac,
                (TelnetState::Data, _) => {
                    data.push(b);
                    TelnetState::Data
                }
                (TelnetState::Iac, IAC) => {
                    data.push(IAC);
                    TelnetState::Data
                }
                (TelnetState::Iac, WILL | WONT | DO | DONT) => TelnetState::Option(b),
                (TelnetState::Iac, SB) => TelnetState::Sub,
                (TelnetState::Iac, _) => TelnetState::Data,
                (TelnetState::Option(verb), opt) => {
                    // Refuse what is offered or asked; never answer a refusal (RFC 854's
                    // rule against negotiation loops).
                    let reply = match verb {
                        WILL => Some(DONT),
                        DO => Some(WONT),
                        _ => None,
                    };
                    if let Some(r) = reply {
                        if self.refused.insert((r, opt)) {
                            answer.extend_from_slice(&[IAC, r, opt]);
                        }
                    }
                    TelnetState::Data
                }
                (TelnetState::Sub, IAC) => TelnetState::SubIac,
                (TelnetState::Sub, _) => TelnetState::Sub,
                (TelnetState::SubIac, SE) => TelnetState::Data,
                (TelnetState::SubIac, _) => TelnetState::Sub,
            };
        }
        (data, answer)
    }
}

/// Feeds input to the console and sends its output, applying the output faults.
async fn run_console<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    console: &mut Console,
    telnet: bool,
) -> std::io::Result<()> {
    let mut tn = Telnet::default();
    if telnet {
        let greeting = console.greet();
        send(stream, &console.shared, greeting).await?;
    }
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let input = if telnet {
            let (data, answer) = tn.strip(&buf[..n]);
            if !answer.is_empty() {
                stream.write_all(&answer).await?;
            }
            data
        } else {
            buf[..n].to_vec()
        };
        let faults = console.shared.faults();
        if faults.silent || faults.crashed {
            console
                .shared
                .record(EventKind::FaultApplied(if faults.crashed {
                    "crashed"
                } else {
                    "silent"
                }));
            continue;
        }
        for &b in &input {
            let out = console.feed(b);
            let closing = out.iter().any(|o| matches!(o, Out::Close));
            send(stream, &console.shared, out).await?;
            if closing {
                let _ = stream.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// What a console does after a byte.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    /// The typed character echoed back (no latency, no noise).
    Echo(Vec<u8>),
    /// A reply; `states` says it shows outlet states (where noise does the most harm).
    Reply { text: Vec<u8>, states: bool },
    /// Hang up (TCP) after the output.
    Close,
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    out: Vec<Out>,
) -> std::io::Result<()> {
    for o in out {
        let faults = shared.faults();
        let bytes = match o {
            Out::Echo(b) if !faults.echo_off => b,
            Out::Echo(_) => continue,
            Out::Reply { text, states } => {
                if faults.latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
                }
                let damage = faults.garbage
                    || (states
                        && shared
                            .garbage_left
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok());
                if damage {
                    shared.record(EventKind::FaultApplied("garbage"));
                    damage_reply(&text, &mut lock(&shared.rng))
                } else {
                    text
                }
            }
            Out::Close => continue,
        };
        if faults.byte_delay_ms > 0 {
            // A slow line: each byte on its own, as a 300-baud line or a congested console
            // server delivers it.
            for b in bytes {
                stream.write_all(&[b]).await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_millis(faults.byte_delay_ms)).await;
            }
        } else {
            stream.write_all(&bytes).await?;
            stream.flush().await?;
        }
    }
    Ok(())
}

/// Line noise inside every outlet state word of a reply (`O` + noise + `N`), or in the middle
/// of the reply when it shows no state. The noise bytes are never a line end and never
/// printable, so the damaged line cannot pass for another one: only the driver's rule
/// (discard a damaged line whole) decides what it reads.
fn damage_reply(text: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut noise = || -> Vec<u8> {
        let n = rng.gen_range(1..=6);
        (0..n)
            .map(|_| {
                if rng.gen_bool(0.5) {
                    rng.gen_range(0x80..=0xff)
                } else {
                    // Control characters other than CR and LF (BS, NUL, BEL among them).
                    let c: u8 = rng.gen_range(0x00..0x20);
                    if c == b'\r' || c == b'\n' {
                        0x08
                    } else {
                        c
                    }
                }
            })
            .collect()
    };
    let mut out = Vec::with_capacity(text.len() + 32);
    let mut hit = false;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let word = [&b"ON"[..], b"On", b"OFF", b"Off"]
            .into_iter()
            .find(|w| rest.starts_with(w));
        // A state word stands alone: after a space or `|`, before a space, `|`, `*` or a line end.
        let alone = word.is_some_and(|w| {
            let before = i.checked_sub(1).map(|j| text[j]);
            let after = text.get(i + w.len()).copied();
            matches!(before, Some(b' ' | b'|' | b':'))
                && matches!(after, None | Some(b' ' | b'|' | b'*' | b'\r' | b'\n'))
        });
        if let (Some(w), true) = (word, alone) {
            out.push(w[0]);
            out.extend(noise());
            out.extend_from_slice(&w[1..]);
            i += w.len();
            hit = true;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    if !hit {
        // No state shown: noise after the first line end (mid reply, before the prompt).
        if let Some(p) = out.iter().position(|&b| b == b'\n') {
            let n = noise();
            out.splice(p + 1..p + 1, n);
        }
    }
    out
}

/// Where a console is in its dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Nobody logged in; the next line end brings the login question.
    LoggedOut,
    /// The user name question is showing.
    User,
    /// The password question is showing (input is not echoed).
    Password { user: String },
    /// At the command prompt.
    Ready,
    /// A switching command asked "Sure?"/"(Y/N)?".
    Confirm { outlets: Vec<usize>, on: bool },
}

/// One console dialogue: bytes in, screens out. Pure apart from the PDU's shared outlet state.
struct Console {
    shared: Arc<Shared>,
    state: State,
    line: Vec<u8>,
    /// The last byte ended a line with CR: a following LF or NUL belongs to the same end
    /// (CR LF from most programs, CR NUL from telnet's NVT).
    after_cr: bool,
    /// The last byte ended a line (of any kind).
    after_eol: bool,
    /// A TCP (telnet) console: logging out hangs up, and a run of line ends counts as one,
    /// since a telnet client run from a program's pty sends Enter as `\n\n` (the pty turns
    /// the program's CR LF into two LFs, as fence_wti's `/S\r\n` arrives).
    hangs_up: bool,
}

impl Console {
    fn new(shared: Arc<Shared>, hangs_up: bool) -> Self {
        Self {
            shared,
            state: State::LoggedOut,
            line: Vec::new(),
            after_cr: false,
            after_eol: false,
            hangs_up,
        }
    }

    fn screens(&self) -> Screens {
        self.shared.screens
    }

    fn reply(text: impl Into<Vec<u8>>) -> Out {
        Out::Reply {
            text: text.into(),
            states: false,
        }
    }

    /// The first question a console shows: the user name, the password, or (with no login
    /// configured) the banner and the prompt.
    fn greet(&mut self) -> Vec<Out> {
        if self.shared.username.is_some() {
            self.state = State::User;
            vec![Self::reply(self.user_question())]
        } else if self.shared.password.is_some() {
            self.state = State::Password {
                user: String::new(),
            };
            vec![Self::reply(self.password_question())]
        } else {
            self.state = State::Ready;
            self.logged_in()
        }
    }

    fn user_question(&self) -> &'static str {
        match self.screens() {
            // fence_wti waits for `login: ` or `Login Name:  ` (two spaces).
            Screens::Wti => "\r\nLogin Name:  ",
            Screens::Apc => "\r\nUser Name : ",
            Screens::Baytech => "\r\nEnter username>",
        }
    }

    fn password_question(&self) -> &'static str {
        match self.screens() {
            // fence_wti waits for `Password: ` (case-sensitive).
            Screens::Wti => "\r\nPassword: ",
            Screens::Apc => "\r\nPassword  : ",
            Screens::Baytech => "\r\nEnter password>",
        }
    }

    fn prompt(&self) -> String {
        match self.screens() {
            Screens::Wti => "\r\nNPS> ".into(),
            Screens::Apc => "\r\napc>".into(),
            Screens::Baytech => "\r\nRPC-3>".into(),
        }
    }

    fn logged_in(&self) -> Vec<Out> {
        let name = &self.shared.name;
        match self.screens() {
            Screens::Wti => vec![Self::reply(format!(
                "\r\n\r\nNetwork Power Switch (Palisade lab)\r\nSite ID: {name}\r\n{}",
                self.prompt()
            ))],
            Screens::Apc => vec![Self::reply(format!(
                "\r\n\r\nAmerican Power Conversion               Palisade lab\r\nName      : {name}\r\n\r\nType ? for command listing\r\n{}",
                self.prompt()
            ))],
            // BayTech shows its status menu on login.
            Screens::Baytech => vec![Out::Reply {
                text: format!("{}{}", self.baytech_status(), self.prompt()).into_bytes(),
                states: true,
            }],
        }
    }

    /// One input byte.
    fn feed(&mut self, b: u8) -> Vec<Out> {
        let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
        let after_eol = std::mem::replace(&mut self.after_eol, b == b'\r' || b == b'\n');
        match b {
            b'\n' | 0 if after_cr => {
                self.after_eol = true;
                Vec::new()
            }
            b'\r' | b'\n' if after_eol && self.hangs_up => Vec::new(),
            b'\r' | b'\n' => {
                let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
                let mut out = Vec::new();
                if !matches!(self.state, State::Password { .. }) {
                    out.push(Out::Echo(b"\r\n".to_vec()));
                }
                out.extend(self.line_done(line.trim()));
                out
            }
            0x08 | 0x7f => {
                if self.line.pop().is_some() && !matches!(self.state, State::Password { .. }) {
                    vec![Out::Echo(b"\x08 \x08".to_vec())]
                } else {
                    Vec::new()
                }
            }
            0x20..=0x7e => {
                if self.line.len() < MAX_INPUT_LINE {
                    self.line.push(b);
                }
                if matches!(self.state, State::Password { .. }) {
                    Vec::new()
                } else {
                    vec![Out::Echo(vec![b])]
                }
            }
            // Other control characters and noise: ignored, as a console's line editor does.
            _ => Vec::new(),
        }
    }

    fn line_done(&mut self, line: &str) -> Vec<Out> {
        match std::mem::replace(&mut self.state, State::LoggedOut) {
            State::LoggedOut => self.greet(),
            State::User => {
                self.state = State::Password {
                    user: line.to_string(),
                };
                vec![Self::reply(self.password_question())]
            }
            State::Password { user } => {
                let user_ok = self.shared.username.as_deref().is_none_or(|u| u == user);
                let pw_ok = self
                    .shared
                    .password
                    .as_ref()
                    .is_none_or(|p| p.expose() == line.as_bytes());
                let refused = self.shared.faults().refuse_auth;
                if user_ok && pw_ok && !refused {
                    self.state = State::Ready;
                    self.logged_in()
                } else {
                    if refused {
                        self.shared.record(EventKind::FaultApplied("refuse-auth"));
                    }
                    self.shared.record(EventKind::SetupRefused {
                        stage: "login",
                        status: 0,
                    });
                    let mut out = vec![Self::reply(match self.screens() {
                        Screens::Wti => "\r\nInvalid password\r\n",
                        Screens::Apc => "\r\n",
                        Screens::Baytech => "\r\nInvalid password\r\n",
                    })];
                    out.extend(self.greet());
                    out
                }
            }
            State::Ready => {
                self.state = State::Ready;
                if !line.is_empty() {
                    self.shared.note_received(line);
                }
                self.command(line)
            }
            State::Confirm { outlets, on } => {
                self.state = State::Ready;
                self.shared.note_received(line);
                if line.eq_ignore_ascii_case("y") || line.eq_ignore_ascii_case("yes") {
                    self.shared.switch(&outlets, on);
                    self.after_switch()
                } else {
                    vec![Self::reply(format!("\r\nAborted.\r\n{}", self.prompt()))]
                }
            }
        }
    }

    /// The reply after a switching command was carried out (or acknowledged by a stuck one).
    fn after_switch(&self) -> Vec<Out> {
        match self.screens() {
            Screens::Wti => vec![Self::reply(format!(
                "\r\n   Processing - please wait ...\r\n{}",
                self.prompt()
            ))],
            Screens::Apc => vec![Self::reply(format!("E000: Success\r\n{}", self.prompt()))],
            Screens::Baytech => vec![Out::Reply {
                text: format!("{}{}", self.baytech_status(), self.prompt()).into_bytes(),
                states: true,
            }],
        }
    }

    fn command(&mut self, line: &str) -> Vec<Out> {
        let (verb, arg) = match line.split_once([' ', '\t']) {
            Some((v, a)) => (v, a.trim()),
            None => (line, ""),
        };
        let verb = verb.to_ascii_lowercase();
        match self.screens() {
            Screens::Wti => self.wti(&verb, arg),
            Screens::Apc => self.apc(&verb, arg),
            Screens::Baytech => self.baytech(&verb, arg),
        }
    }

    fn logout(&mut self, text: &str) -> Vec<Out> {
        self.state = State::LoggedOut;
        let mut out = vec![Self::reply(text.to_string())];
        if self.hangs_up {
            out.push(Out::Close);
        }
        out
    }

    /// WTI NPS/IPS text interface: `/S`, `/ON n[,Y]`, `/OFF n[,Y]`, `/X`; not case sensitive.
    fn wti(&mut self, verb: &str, arg: &str) -> Vec<Out> {
        match verb {
            "" => vec![Self::reply(self.prompt())],
            "/s" => vec![Out::Reply {
                text: format!("{}{}", self.wti_status(), self.prompt()).into_bytes(),
                states: true,
            }],
            "/on" | "/off" => {
                let on = verb == "/on";
                // `,Y` (or `,y`) after the plugs skips the "Sure?" question.
                let (plugs, sure) = match arg.rsplit_once(',') {
                    Some((p, y)) if y.trim().eq_ignore_ascii_case("y") => (p, true),
                    _ => (arg, false),
                };
                let Some(outlets) = self.shared.select(plugs) else {
                    return vec![Self::reply(format!(
                        "\r\nInvalid Plug Name or Number: {plugs}\r\n{}",
                        self.prompt()
                    ))];
                };
                if sure {
                    self.shared.switch(&outlets, on);
                    self.after_switch()
                } else {
                    self.state = State::Confirm { outlets, on };
                    vec![Self::reply("\r\n   Sure? (Y/N): ")]
                }
            }
            "/x" => self.logout("\r\n\r\nDisconnecting ...\r\n"),
            _ => vec![Self::reply(format!(
                "\r\nInvalid Command\r\n{}",
                self.prompt()
            ))],
        }
    }

    fn wti_status(&self) -> String {
        let mut s = format!(
            "\r\n\r\nNetwork Power Switch (Palisade lab)\r\nSite ID: {}\r\n\r\n",
            self.shared.name
        );
        // The header starts at column 0 with `Plug`, and plug lines carry as many `|` as it
        // does: fence_wti finds the columns by their header names.
        s.push_str("Plug | Name             | Status | Boot Delay | Default |\r\n");
        s.push_str("-----+------------------+--------+------------+---------+\r\n");
        for (n, name, on, changing) in self.shared.states() {
            let st = format!(
                "{}{}",
                if on { "ON" } else { "OFF" },
                if changing { " *" } else { "" }
            );
            s.push_str(&format!(
                " {n:<3} | {name:<16} | {st:^6} |  0.5 Secs  |   ON    |\r\n"
            ));
        }
        s.push_str("-----+------------------+--------+------------+---------+\r\n");
        s
    }

    /// APC AOS CLI: `olStatus`, `olOn`, `olOff` with an outlet number, name or `all`; every
    /// reply headed by its result code.
    fn apc(&mut self, verb: &str, arg: &str) -> Vec<Out> {
        match verb {
            "" => vec![Self::reply(self.prompt())],
            "olstatus" | "olon" | "oloff" => {
                let Some(outlets) = (!arg.is_empty()).then(|| self.shared.select(arg)).flatten()
                else {
                    return vec![Self::reply(format!(
                        "E102: Parameter Error\r\n{}",
                        self.prompt()
                    ))];
                };
                if verb == "olstatus" {
                    let states = self.shared.states();
                    let mut s = String::from("E000: Success\r\n");
                    for i in outlets {
                        if let Some((n, name, on, _)) = states.get(i) {
                            s.push_str(&format!(
                                " {n}: {name}: {}\r\n",
                                if *on { "On" } else { "Off" }
                            ));
                        }
                    }
                    s.push_str(&self.prompt());
                    vec![Out::Reply {
                        text: s.into_bytes(),
                        states: true,
                    }]
                } else {
                    self.shared.switch(&outlets, verb == "olon");
                    self.after_switch()
                }
            }
            "exit" | "quit" | "bye" => self.logout("\r\nBye.\r\n"),
            _ => vec![Self::reply(format!(
                "E101: Command Not Found\r\n{}",
                self.prompt()
            ))],
        }
    }

    /// BayTech RPC: `STATUS`, `ON n`, `OFF n` (answered by a `(Y/N)?` question), `LOGOUT`.
    fn baytech(&mut self, verb: &str, arg: &str) -> Vec<Out> {
        match verb {
            "" => vec![Self::reply(self.prompt())],
            "status" => vec![Out::Reply {
                text: format!("{}{}", self.baytech_status(), self.prompt()).into_bytes(),
                states: true,
            }],
            "on" | "off" => {
                let on = verb == "on";
                let Some(outlets) = (!arg.is_empty()).then(|| self.shared.select(arg)).flatten()
                else {
                    return vec![Self::reply(format!("\r\nInput error\r\n{}", self.prompt()))];
                };
                let what = if outlets.len() > 1 {
                    "All Outlets".to_string()
                } else {
                    format!("Outlet {}", outlets.first().map_or(0, |i| i + 1))
                };
                self.state = State::Confirm { outlets, on };
                vec![Self::reply(format!(
                    "\r\nTurn {} {what} (Y/N)? ",
                    if on { "On" } else { "Off" }
                ))]
            }
            "logout" | "logoff" | "exit" => self.logout("\r\nLogging out...\r\n"),
            _ => vec![Self::reply(format!("\r\nInput error\r\n{}", self.prompt()))],
        }
    }

    fn baytech_status(&self) -> String {
        let mut s = format!(
            "\r\n\r\nRPC-3 (Palisade lab)\r\nUnit ID: {}\r\n\r\nCircuit Breaker: On\r\n\r\n",
            self.shared.name
        );
        for (n, name, on, _) in self.shared.states() {
            s.push_str(&format!(
                "{n})...{name:<16}: {}\r\n",
                if on { "On " } else { "Off" }
            ));
        }
        s.push_str("\r\nType \"Help\" for a list of commands\r\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drivers::serial_pdu::model::{APC_AP79XX, BAYTECH_RPC, WTI_NPS};
    use drivers::serial_pdu::parse::{parse_ack, parse_status, split_lines};
    use drivers::PowerState;

    fn shared(model: &'static Model, user: Option<&str>, pw: Option<&str>) -> Arc<Shared> {
        Arc::new(Shared {
            name: "pdu1".into(),
            model,
            screens: Screens::of(model).unwrap(),
            username: user.map(str::to_string),
            password: pw.map(|p| Secret::new(p.as_bytes().to_vec())),
            started: Instant::now(),
            outlets: Mutex::new(
                (1..=3)
                    .map(|k| OutletSim {
                        name: format!("db{k}"),
                        node: Node::new(true, Duration::ZERO),
                        stuck: false,
                    })
                    .collect(),
            ),
            faults: Mutex::new(Faults::default()),
            garbage_left: AtomicU32::new(0),
            events: Mutex::new(EventLog::default()),
            received: Mutex::new(Default::default()),
            hook: Mutex::new(None),
            wake: Notify::new(),
            rng: Mutex::new(StdRng::seed_from_u64(1)),
        })
    }

    /// Types `text` and returns everything the console printed (echo included).
    fn type_in(c: &mut Console, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for b in text.bytes() {
            for o in c.feed(b) {
                match o {
                    Out::Echo(t) | Out::Reply { text: t, .. } => out.extend(t),
                    Out::Close => {}
                }
            }
        }
        out
    }

    #[test]
    fn wti_screens_read_back_by_the_driver_parser() {
        let s = shared(&WTI_NPS, None, Some("pw"));
        let mut c = Console::new(s.clone(), true);
        let greet: Vec<u8> = c
            .greet()
            .into_iter()
            .flat_map(|o| match o {
                Out::Reply { text, .. } => text,
                _ => Vec::new(),
            })
            .collect();
        assert!(String::from_utf8_lossy(&greet).ends_with("Password: "));
        let out = type_in(&mut c, "pw\r\n");
        assert!(String::from_utf8_lossy(&out).ends_with("NPS> "), "{out:?}");
        // fence_wti's lowercase form.
        type_in(&mut c, "/off 2,y\r\n");
        assert!(!s.states()[1].2);
        let out = type_in(&mut c, "/S\r\n");
        let r = parse_status(&WTI_NPS, &out);
        assert_eq!(r.state_of("1"), Ok(PowerState::On));
        assert_eq!(r.state_of("db2"), Ok(PowerState::Off));
        // Without `,Y` the question comes first.
        let out = type_in(&mut c, "/ON 2\r");
        assert!(String::from_utf8_lossy(&out).contains("Sure?"));
        let out = type_in(&mut c, "Y\r");
        assert_eq!(parse_ack(&WTI_NPS, &out), Ok(()));
        assert!(s.states()[1].2);
        assert_eq!(s.received(), ["/off 2,y", "/S", "/ON 2", "Y"]);
    }

    impl Shared {
        fn received(&self) -> Vec<String> {
            lock(&self.received).iter().cloned().collect()
        }
    }

    #[test]
    fn apc_and_baytech_dialogues() {
        let s = shared(&APC_AP79XX, Some("apc"), Some("pw"));
        let mut c = Console::new(s.clone(), false);
        let out = type_in(&mut c, "\r");
        assert!(String::from_utf8_lossy(&out).ends_with("User Name : "));
        type_in(&mut c, "apc\r");
        let out = type_in(&mut c, "wrong\r");
        assert!(String::from_utf8_lossy(&out).ends_with("User Name : "));
        type_in(&mut c, "apc\r");
        let out = type_in(&mut c, "pw\r");
        assert!(String::from_utf8_lossy(&out).ends_with("apc>"));
        let out = type_in(&mut c, "olOff 3\r");
        assert_eq!(parse_ack(&APC_AP79XX, &out), Ok(()));
        let out = type_in(&mut c, "olStatus 3\r");
        assert_eq!(
            parse_status(&APC_AP79XX, &out).state_of("3"),
            Ok(PowerState::Off)
        );
        let out = type_in(&mut c, "olOff 9\r");
        assert!(parse_ack(&APC_AP79XX, &out).is_err());

        let s = shared(&BAYTECH_RPC, None, None);
        let mut c = Console::new(s.clone(), false);
        type_in(&mut c, "\r");
        let out = type_in(&mut c, "OFF 1\r");
        assert!(String::from_utf8_lossy(&out).contains("(Y/N)?"));
        let out = type_in(&mut c, "Y\r");
        let r = parse_status(&BAYTECH_RPC, &out);
        assert_eq!(r.state_of("1"), Ok(PowerState::Off));
        assert_eq!(r.state_of("db2"), Ok(PowerState::On));
        let (_, tail) = split_lines(&out);
        assert_eq!(tail, b"RPC-3>");
    }

    #[test]
    fn garbage_lands_inside_every_state_word() {
        let mut rng = StdRng::seed_from_u64(7);
        let text = b" 1   | db1 |   ON   |\r\n 2   | db2 |  OFF   |\r\nNPS> ";
        let bad = damage_reply(text, &mut rng);
        let r = parse_status(&WTI_NPS, &bad);
        assert_eq!(r.discarded, 2, "{bad:?}");
        assert!(r.outlets.is_empty());
        let bad = damage_reply(b"\r\nProcessing\r\nNPS> ", &mut rng);
        assert_ne!(bad, b"\r\nProcessing\r\nNPS> ");
    }

    #[test]
    fn telnet_commands_are_stripped_and_refused_once() {
        let mut t = Telnet::default();
        let (data, answer) = t.strip(&[IAC, DO, 1, b'a', IAC, IAC, IAC, WILL, 0, b'b']);
        assert_eq!(data, [b'a', IAC, b'b']);
        assert_eq!(answer, [IAC, WONT, 1, IAC, DONT, 0]);
        let (_, answer) = t.strip(&[IAC, DO, 1, IAC, SB, 24, 1, IAC, SE, b'c']);
        assert!(answer.is_empty());
        // Split across reads.
        let (d1, _) = t.strip(&[b'x', IAC]);
        let (d2, _) = t.strip(&[WONT, 3, b'y']);
        assert_eq!([d1, d2].concat(), b"xy");
    }
}
