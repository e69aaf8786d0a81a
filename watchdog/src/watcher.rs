//! The SBD disk watcher: servants read the disks, the inquisitor feeds the hardware watchdog.
//!
//! # Shape
//! - One **servant** thread per disk (64 KiB stack). It opens the disk (O_DIRECT), finds or
//!   allocates this node's slot, then every `poll` (100 ms by default, sbd sleeps 1 s) reads
//!   the header and this node's node entry + mailbox with plain blocking reads on its own
//!   thread, and reports what it saw. It clears a `test` message itself.
//! - The **inquisitor** (the calling thread) never touches a disk. It keeps, per disk, when the
//!   last good read *started*. A servant stuck in the kernel simply stops reporting: its disk
//!   ages out; nobody waits for it or joins it.
//! - The inquisitor feeds the hardware watchdog only while more than half of the disks had a
//!   good read that started within the freshness window `F` and every [`HealthRule`] holds.
//!   When that stops holding, it stops feeding, and once it has not held for `F` it
//!   self-fences through the [`SelfFence`] sink. A poison pill on any disk self-fences at once;
//!   `exit` disarms the watchdog (magic close) and returns.
//!
//! # Why "pill written + msgwait elapsed" implies "target dead"
//! Let `W` be the hardware watchdog timeout the driver accepted, `F = W / 2` the freshness
//! window, and `t_p` the time the fencer's pill was on a majority of disks (it then waits
//! msgwait from `t_p`).
//! 1. If the target's watcher can still read one disk holding the pill after `t_p`, its
//!    servant sees the pill within `poll` + one read and the target self-fences at once.
//! 2. Otherwise every good read that counts for the target started before `t_p` (a read that
//!    started earlier may have returned the old mailbox, which is why we time a read by its
//!    start). A good read stops counting `F` after it started, and the fencer's majority and
//!    the target's majority share at least one disk, so the target stops meeting the majority
//!    rule by `t_p + F` at the latest. Its last feed is then no later than `t_p + F`, and the
//!    hardware resets it by `t_p + F + W = t_p + 1.5 W`. If the watcher itself hangs (SIGSTOP,
//!    a stuck kernel, a crash), feeding stops earlier, and the same bound holds.
//! 3. So msgwait >= `F + W` suffices; we refuse to start unless every disk's msgwait is at
//!    least `F + W` (sbd's documentation asks msgwait = 2 x watchdog timeout, and
//!    `palisade-sbd create` refuses less than `2 x -1` without `--force`; with the driver
//!    granting the header's watchdog timeout, `2 W >= 1.5 W` leaves `W / 2` for the reset).
//!
//! Stopping the watcher cleanly (an `exit` message, or SIGTERM to `palisade-sbd watch`) disarms
//! the watchdog; from then on the node no longer obeys pills, exactly as with sbd. Stop it only
//! when the cluster stack on the node is down.

use crate::device::{WatchdogDevice, WatchdogError};
use crate::self_fence::{SelfFence, SelfFenceAction};
use drivers::sbd::{self, format, BlockDevice, DiskError, Header, Mailbox, Message, NodeName};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stack of a servant thread: it decodes a sector or two and formats a message, no more.
pub const SERVANT_STACK: usize = 64 * 1024;
/// How often a servant reads its disk by default (sbd's loop sleeps 1 s).
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// Opens one disk for a servant (on the servant's thread; it may block).
pub type OpenDisk = Box<dyn FnMut() -> Result<Box<dyn BlockDevice>, DiskError> + Send>;

/// Opens a real block device with blocking, thread-less I/O ([`drivers::sbd::Disk::open_here`]).
pub fn real_disk(path: PathBuf) -> OpenDisk {
    Box::new(move || Ok(Box::new(HereDisk(sbd::Disk::open_here(&path)?)) as Box<dyn BlockDevice>))
}

/// A [`sbd::Disk`] whose I/O runs on the calling thread, ignoring deadlines: the servant
/// thread is itself what is abandoned when the disk stops answering.
struct HereDisk(sbd::Disk);

impl BlockDevice for HereDisk {
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn sector_size(&self) -> format::SectorSize {
        self.0.sector_size()
    }
    fn read(&self, first: u64, count: u64, _deadline: Instant) -> Result<Vec<u8>, DiskError> {
        self.0.read_here(first, count)
    }
    fn write(&self, first: u64, data: &[u8], _deadline: Instant) -> Result<(), DiskError> {
        self.0.write_here(first, data)
    }
}

/// A health condition besides the disks (quorum, peers reachable, a daemon alive).
pub trait HealthRule: Send {
    /// Its name in messages.
    fn name(&self) -> &str;
    /// Whether the node is healthy by this rule; `Err` says why not. Must not block.
    fn check(&mut self) -> Result<(), String>;
}

/// One disk the watcher reads.
pub struct WatchDisk {
    /// Its name in messages.
    pub name: String,
    /// How a servant opens it.
    pub open: OpenDisk,
}

/// What the watcher needs.
pub struct WatchConfig {
    /// The shared disks (1 to 3).
    pub disks: Vec<WatchDisk>,
    /// This node's name (its slot).
    pub local_name: NodeName,
    /// Servant read period.
    pub poll: Duration,
    /// Hardware watchdog timeout to ask for; `None`: the largest on the disks' headers.
    pub watchdog_timeout: Option<u32>,
    /// How long to wait at start for a majority of disks to be read.
    pub startup_timeout: Duration,
    /// Extra health rules.
    pub rules: Vec<Box<dyn HealthRule>>,
    /// Set to stop cleanly (SIGTERM): the watchdog is disarmed and `watch` returns.
    pub stop: Arc<AtomicBool>,
}

/// How the watcher ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An `exit` message: watchdog disarmed.
    Exited {
        /// The disk it was read from.
        disk: String,
        /// The sender.
        from: String,
    },
    /// `stop` was set: watchdog disarmed.
    Stopped,
    /// The sink was called; the watchdog is left armed and unfed.
    SelfFenced {
        /// What was done.
        action: SelfFenceAction,
        /// Why.
        reason: String,
    },
}

/// Why the watcher could not start (the watchdog is not armed, or was disarmed again).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No disks, or more than sbd's 3.
    #[error("the watcher needs 1 to 3 SBD disks, {0} given; pass -d DEV or set SBD_DEVICE")]
    DiskCount(usize),
    /// A majority was not readable at start.
    #[error("only {ok} of {total} SBD disks could be read within {secs} s at start ({detail}); fix the disks or the paths before starting the watcher")]
    NoMajorityAtStart {
        /// Disks read.
        ok: usize,
        /// Disks configured.
        total: usize,
        /// The wait.
        secs: u64,
        /// Each failing disk's last error.
        detail: String,
    },
    /// A poison pill is already in our slot: this node was fenced and must not rejoin silently.
    #[error("a poison pill ({cmd}) from `{from}` is in this node's slot on {disk}: this node was fenced; find out why, then clear it with `palisade-sbd -d DEV message NODE clear` and start again")]
    PillAtStart {
        /// The disk.
        disk: String,
        /// The message.
        cmd: String,
        /// The sender.
        from: String,
    },
    /// The timeouts would let a fencer report a live node dead.
    #[error("disk {disk}: msgwait {msgwait} s is less than the {needed_ms} ms this watcher needs to be sure to be dead after a pill (watchdog {watchdog} s x 1.5); re-create the disks with -4 >= 2 x -1, or ask for a shorter watchdog timeout (-1)")]
    MsgwaitTooShort {
        /// The disk.
        disk: String,
        /// Its msgwait.
        msgwait: u32,
        /// The watchdog timeout in force.
        watchdog: u32,
        /// What msgwait needs to be, in ms.
        needed_ms: u64,
    },
    /// The watchdog device failed.
    #[error(transparent)]
    Watchdog(#[from] WatchdogError),
    /// A thread could not be started.
    #[error("cannot start a servant thread: {0}")]
    Thread(String),
}

/// What a servant saw on one read.
#[derive(Debug, Clone)]
struct Seen {
    header: Header,
    mailbox: Mailbox,
}

struct Report {
    disk: usize,
    started: Instant,
    result: Result<Seen, String>,
    /// The failure is about what the disk holds (bad or changed header, slot taken), not an
    /// I/O error: the disk stops counting at once instead of ageing out, since waiting will
    /// not make a re-created disk ours again.
    content: bool,
}

/// The servant's setup: open, read the header, find or allocate the slot, clean the mailbox.
fn servant_setup(
    open: &mut OpenDisk,
    name: &NodeName,
    stop: &AtomicBool,
) -> Result<(Box<dyn BlockDevice>, Header, u8, Mailbox), String> {
    let far = Duration::from_secs(3600);
    let dev = open().map_err(|e| e.to_string())?;
    let header = sbd::read_header(dev.as_ref(), far).map_err(|e| e.to_string())?;
    let slot = loop {
        if stop.load(Ordering::SeqCst) {
            return Err("stopping".into());
        }
        // sbd's slot_allocate: claim the first free slot, wait the allocate timeout, look
        // again, so that of two nodes racing for one slot the last writer keeps it.
        let slots = sbd::read_slots(dev.as_ref(), &header, far).map_err(|e| e.to_string())?;
        if let Some(s) = slots
            .iter()
            .find(|s| s.node.is_allocated() && format::same_node(&s.node.name, name))
        {
            break s.slot;
        }
        let free = slots
            .iter()
            .find(|s| !s.node.is_allocated())
            .ok_or_else(|| format!("no free slot on {}", dev.path().display()))?;
        let e = format::NodeEntry::allocated(name.clone());
        let bytes = sbd::sector_with(dev.as_ref(), |b| e.encode(b)).map_err(|e| e.to_string())?;
        dev.write(format::node_sector(free.slot), &bytes, Instant::now() + far)
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_secs(u64::from(header.timeout_allocate)));
    };
    let mb = read_mailbox(dev.as_ref(), slot)?;
    // A left-over `test` or `exit` (a clean stop) is zeroed, as sbd's servant zeroes its inbox
    // on start. A poison pill is kept and reported: the inquisitor refuses to start on it
    // (sbd's SBD_STARTMODE=clean), because zeroing it would let a node that was fenced, and
    // whose watcher was merely restarted, run on as if nothing happened.
    if matches!(mb.cmd, Message::Test | Message::Exit | Message::Other(_)) {
        clear_mailbox(dev.as_ref(), slot)?;
        return Ok((dev, header, slot, Mailbox::default()));
    }
    Ok((dev, header, slot, mb))
}

fn read_mailbox(dev: &dyn BlockDevice, slot: u8) -> Result<Mailbox, String> {
    let b = dev
        .read(format::mailbox_sector(slot), 1, far_deadline())
        .map_err(|e| e.to_string())?;
    Mailbox::decode(&b)
        .map_err(|e| format!("{}: mailbox of slot {slot}: {e}", dev.path().display()))
}

fn clear_mailbox(dev: &dyn BlockDevice, slot: u8) -> Result<(), String> {
    let zero = vec![0u8; dev.sector_size().bytes()];
    dev.write(format::mailbox_sector(slot), &zero, far_deadline())
        .map_err(|e| e.to_string())
}

fn far_deadline() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// One read of the header and of our node entry + mailbox (adjacent sectors, one I/O).
fn servant_poll(
    dev: &dyn BlockDevice,
    first: &Header,
    slot: u8,
    name: &NodeName,
) -> Result<Seen, (bool, String)> {
    let p = dev.path().display();
    let io = |e: DiskError| (false, e.to_string());
    let h0 = dev.read(0, 1, far_deadline()).map_err(io)?;
    let header = Header::decode(&h0).map_err(|e| (true, format!("{p}: header: {e}")))?;
    if header != *first {
        return Err((true, format!(
            "{p}: the SBD header changed since the watcher started (disk re-created or replaced); not trusting this disk"
        )));
    }
    let ss = dev.sector_size().bytes();
    let b = dev
        .read(format::node_sector(slot), 2, far_deadline())
        .map_err(io)?;
    let node = format::NodeEntry::decode(b.get(..ss).unwrap_or_default())
        .map_err(|e| (true, format!("{p}: node entry of slot {slot}: {e}")))?;
    if !node.is_allocated() || !format::same_node(&node.name, name) {
        return Err((true, format!(
            "{p}: slot {slot} no longer belongs to this node (it holds `{}`); not trusting this disk",
            format::display_name(&node.name)
        )));
    }
    let mailbox = Mailbox::decode(b.get(ss..).unwrap_or_default())
        .map_err(|e| (true, format!("{p}: mailbox of slot {slot}: {e}")))?;
    if mailbox.cmd == Message::Test {
        // sbd acknowledges `test` by clearing the mailbox; the sender watches for that.
        clear_mailbox(dev, slot).map_err(|e| (false, e))?;
    }
    Ok(Seen { header, mailbox })
}

fn servant(
    idx: usize,
    mut open: OpenDisk,
    name: NodeName,
    poll: Duration,
    tx: mpsc::Sender<Report>,
    stop: Arc<AtomicBool>,
) {
    let mut state: Option<(Box<dyn BlockDevice>, Header, u8)> = None;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let (result, content) = match &state {
            None => match servant_setup(&mut open, &name, &stop) {
                Ok((dev, header, slot, mailbox)) => {
                    state = Some((dev, header, slot));
                    (Ok(Seen { header, mailbox }), false)
                }
                Err(e) => (Err(e), false),
            },
            Some((dev, header, slot)) => match servant_poll(dev.as_ref(), header, *slot, &name) {
                Ok(seen) => (Ok(seen), false),
                Err((content, e)) => (Err(e), content),
            },
        };
        if tx
            .send(Report {
                disk: idx,
                started,
                result,
                content,
            })
            .is_err()
        {
            return; // the inquisitor is gone
        }
        std::thread::sleep(poll.saturating_sub(started.elapsed()));
    }
}

/// What the inquisitor knows about one disk.
#[derive(Debug, Default, Clone)]
struct DiskState {
    last_good: Option<Instant>,
    last_error: Option<String>,
    header: Option<Header>,
}

fn pill_action(m: Message) -> Option<SelfFenceAction> {
    match m {
        Message::Reset => Some(SelfFenceAction::Reboot),
        Message::Off => Some(SelfFenceAction::Off),
        Message::Crashdump => Some(SelfFenceAction::Crashdump),
        _ => None,
    }
}

/// Status lines for the service manager (sd_notify) and the log.
pub trait Notify {
    /// Sends one `KEY=VALUE` line (`READY=1`, `WATCHDOG=1`, `STATUS=...`).
    fn notify(&mut self, line: &str);
}

impl<F: FnMut(&str)> Notify for F {
    fn notify(&mut self, line: &str) {
        self(line)
    }
}

/// Runs the watcher until `exit`, `stop` or a self-fence.
///
/// `open_watchdog` is called once a majority of disks has been read (opening arms the
/// hardware, so a node whose disks are unreadable at boot does not arm it just to be reset).
pub fn watch<W: WatchdogDevice>(
    cfg: WatchConfig,
    open_watchdog: impl FnOnce() -> Result<W, WatchdogError>,
    sink: &mut dyn SelfFence,
    notify: &mut dyn Notify,
) -> Result<Outcome, WatchError> {
    let n = cfg.disks.len();
    if n == 0 || n > 3 {
        return Err(WatchError::DiskCount(n));
    }
    let names: Vec<String> = cfg.disks.iter().map(|d| d.name.clone()).collect();
    let (tx, rx) = mpsc::channel::<Report>();
    // Servants stop when this is set; the caller's `stop` stays the caller's.
    let servants_stop = Arc::new(AtomicBool::new(false));
    for (i, d) in cfg.disks.into_iter().enumerate() {
        let (tx, stop, name) = (
            tx.clone(),
            Arc::clone(&servants_stop),
            cfg.local_name.clone(),
        );
        let poll = cfg.poll;
        std::thread::Builder::new()
            .name(format!("servant-{i}"))
            .stack_size(SERVANT_STACK)
            .spawn(move || servant(i, d.open, name, poll, tx, stop))
            .map_err(|e| WatchError::Thread(e.to_string()))?;
    }
    drop(tx);
    let _stop_servants = StopOnDrop(Arc::clone(&servants_stop));
    let mut disks = vec![DiskState::default(); n];
    let majority = n / 2 + 1;

    // Start: wait for a majority of disks to be read.
    let t0 = Instant::now();
    while disks.iter().filter(|d| d.last_good.is_some()).count() < majority {
        let left = cfg.startup_timeout.saturating_sub(t0.elapsed());
        if left.is_zero() || cfg.stop.load(Ordering::SeqCst) {
            let ok = disks.iter().filter(|d| d.last_good.is_some()).count();
            let detail = disks
                .iter()
                .zip(&names)
                .filter(|(d, _)| d.last_good.is_none())
                .map(|(d, name)| {
                    format!("{name}: {}", d.last_error.as_deref().unwrap_or("no answer"))
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(WatchError::NoMajorityAtStart {
                ok,
                total: n,
                secs: cfg.startup_timeout.as_secs(),
                detail,
            });
        }
        let got = rx.recv_timeout(left.min(cfg.poll));
        if let Err(mpsc::RecvTimeoutError::Disconnected) = got {
            std::thread::sleep(left.min(cfg.poll));
        }
        if let Ok(r) = got {
            if let Ok(seen) = &r.result {
                if pill_action(seen.mailbox.cmd).is_some() {
                    return Err(WatchError::PillAtStart {
                        disk: names.get(r.disk).cloned().unwrap_or_default(),
                        cmd: seen.mailbox.cmd.to_string(),
                        from: format::display_name(&seen.mailbox.from),
                    });
                }
            }
            apply(&mut disks, r);
        }
    }
    let wanted = cfg.watchdog_timeout.unwrap_or_else(|| {
        disks
            .iter()
            .filter_map(|d| d.header.map(|h| h.timeout_watchdog))
            .max()
            .unwrap_or(5)
    });
    let mut wd = open_watchdog()?;
    let granted = match wd.set_timeout(wanted.max(1)) {
        Ok(g) if g > 0 => g,
        _ => wd.timeout()?,
    };
    let w_ms = u64::from(granted) * 1000;
    let fresh = Duration::from_millis(w_ms / 2);
    let needed_ms = w_ms + fresh.as_millis() as u64;
    for (d, name) in disks.iter().zip(&names) {
        if let Some(h) = d.header {
            if u64::from(h.timeout_msgwait) * 1000 < needed_ms {
                // Nothing has been promised yet (never fed, not READY): disarm, refuse.
                let _ = wd.disarm();
                return Err(WatchError::MsgwaitTooShort {
                    disk: name.clone(),
                    msgwait: h.timeout_msgwait,
                    watchdog: granted,
                    needed_ms,
                });
            }
        }
    }
    wd.keepalive()?;
    notify.notify(&format!(
        "STATUS=watching {n} disk(s), watchdog {granted} s, fresh within {} ms",
        fresh.as_millis()
    ));
    notify.notify("READY=1");

    let mut rules = cfg.rules;
    let tick = cfg.poll.min(fresh / 4).max(Duration::from_millis(10));
    let mut unhealthy_since: Option<Instant> = None;
    loop {
        if cfg.stop.load(Ordering::SeqCst) {
            wd.disarm()?;
            return Ok(Outcome::Stopped);
        }
        let mut first = match rx.recv_timeout(tick) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Every servant is gone (they only leave when told to): nothing will count
                // again. Do not spin at real-time priority meanwhile; the disks age out below.
                std::thread::sleep(tick);
                None
            }
        };
        while let Some(r) = first.take().or_else(|| rx.try_recv().ok()) {
            if let Ok(seen) = &r.result {
                let disk = names.get(r.disk).cloned().unwrap_or_default();
                let from = format::display_name(&seen.mailbox.from);
                if let Some(action) = pill_action(seen.mailbox.cmd) {
                    let reason =
                        format!("poison pill `{}` from `{from}` on {disk}", seen.mailbox.cmd);
                    // Never fed again from here on, whatever the sink does.
                    sink.self_fence(action, &reason);
                    return Ok(Outcome::SelfFenced { action, reason });
                }
                if seen.mailbox.cmd == Message::Exit {
                    wd.disarm()?;
                    notify.notify("STOPPING=1");
                    return Ok(Outcome::Exited { disk, from });
                }
            }
            apply(&mut disks, r);
        }
        let now = Instant::now();
        let fresh_count = disks
            .iter()
            .filter(|d| {
                d.last_good
                    .is_some_and(|t| now.saturating_duration_since(t) <= fresh)
            })
            .count();
        let mut why = None;
        if fresh_count < majority {
            why = Some(format!(
                "only {fresh_count} of {n} SBD disks read within {} ms ({})",
                fresh.as_millis(),
                disks
                    .iter()
                    .zip(&names)
                    .filter_map(|(d, name)| d.last_error.as_ref().map(|e| format!("{name}: {e}")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        for r in rules.iter_mut() {
            if why.is_some() {
                break;
            }
            if let Err(e) = r.check() {
                why = Some(format!("health rule {}: {e}", r.name()));
            }
        }
        match why {
            None => {
                unhealthy_since = None;
                if wd.keepalive().is_ok() {
                    notify.notify("WATCHDOG=1");
                }
            }
            Some(reason) => {
                // The majority rule already has its grace (`fresh`) built in; any other rule
                // gets the same grace before the node takes itself down.
                let since = *unhealthy_since.get_or_insert(now);
                if fresh_count < majority || now.saturating_duration_since(since) >= fresh {
                    sink.self_fence(SelfFenceAction::Reboot, &reason);
                    return Ok(Outcome::SelfFenced {
                        action: SelfFenceAction::Reboot,
                        reason,
                    });
                }
            }
        }
    }
}

fn apply(disks: &mut [DiskState], r: Report) {
    let Some(d) = disks.get_mut(r.disk) else {
        return;
    };
    match r.result {
        Ok(seen) => {
            // Reports from one servant arrive in order, so `started` only grows.
            d.last_good = Some(r.started);
            d.last_error = None;
            d.header = Some(seen.header);
        }
        Err(e) => {
            if r.content {
                d.last_good = None;
            }
            d.last_error = Some(e);
        }
    }
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drivers::sbd::{MemDisk, SectorSize};
    use std::sync::Mutex;

    /// The recording sink: exists only in test builds.
    #[derive(Default)]
    struct Recorder(Vec<(SelfFenceAction, String)>);
    impl SelfFence for Recorder {
        fn self_fence(&mut self, action: SelfFenceAction, reason: &str) {
            self.0.push((action, reason.into()));
        }
    }

    #[derive(Default)]
    struct Soft {
        feeds: Vec<Instant>,
        timeout: u32,
        disarmed: bool,
    }
    #[derive(Clone, Default)]
    struct SoftDog(Arc<Mutex<Soft>>);
    impl WatchdogDevice for SoftDog {
        fn info(&self) -> Result<crate::WatchdogInfo, WatchdogError> {
            Ok(crate::WatchdogInfo {
                identity: "soft".into(),
                options: 0,
                firmware_version: 0,
            })
        }
        fn set_timeout(&mut self, s: u32) -> Result<u32, WatchdogError> {
            self.0.lock().unwrap().timeout = s;
            Ok(s)
        }
        fn timeout(&self) -> Result<u32, WatchdogError> {
            Ok(self.0.lock().unwrap().timeout)
        }
        fn keepalive(&mut self) -> Result<(), WatchdogError> {
            self.0.lock().unwrap().feeds.push(Instant::now());
            Ok(())
        }
        fn disarm(self) -> Result<(), WatchdogError> {
            self.0.lock().unwrap().disarmed = true;
            Ok(())
        }
    }

    fn mem_disk(msgwait: u32, nodes: &[&str]) -> Arc<MemDisk> {
        let d = Arc::new(MemDisk::new("mem", SectorSize::S512, 600));
        let h = Header {
            slots: 255,
            sector_size: SectorSize::S512,
            timeout_watchdog: 2,
            timeout_allocate: 0,
            timeout_loop: 1,
            timeout_msgwait: msgwait,
            minor_version: 1,
            uuid: [7; 16],
        };
        let far = far_deadline();
        d.write(
            0,
            &sbd::sector_with(d.as_ref(), |b| h.encode(b)).unwrap(),
            far,
        )
        .unwrap();
        for (i, n) in nodes.iter().enumerate() {
            let e = format::NodeEntry::allocated(format::node_name(n).unwrap());
            d.write(
                format::node_sector(i as u8),
                &sbd::sector_with(d.as_ref(), |b| e.encode(b)).unwrap(),
                far,
            )
            .unwrap();
        }
        d
    }

    fn config(disks: &[Arc<MemDisk>]) -> WatchConfig {
        WatchConfig {
            disks: disks
                .iter()
                .map(|d| {
                    let d = Arc::clone(d);
                    WatchDisk {
                        name: "mem".into(),
                        open: Box::new(move || {
                            Ok(Box::new(Shared(Arc::clone(&d))) as Box<dyn BlockDevice>)
                        }),
                    }
                })
                .collect(),
            local_name: format::node_name("me").unwrap(),
            poll: Duration::from_millis(20),
            watchdog_timeout: None,
            startup_timeout: Duration::from_secs(5),
            rules: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    struct Shared(Arc<MemDisk>);
    impl BlockDevice for Shared {
        fn path(&self) -> &Path {
            self.0.path()
        }
        fn sector_size(&self) -> SectorSize {
            self.0.sector_size()
        }
        fn read(&self, f: u64, c: u64, d: Instant) -> Result<Vec<u8>, DiskError> {
            self.0.read(f, c, d)
        }
        fn write(&self, f: u64, b: &[u8], d: Instant) -> Result<(), DiskError> {
            self.0.write(f, b, d)
        }
    }

    fn put(d: &MemDisk, slot: u8, m: Message) {
        let mb = Mailbox {
            cmd: m,
            from: format::node_name("fencer").unwrap(),
        };
        d.write(
            format::mailbox_sector(slot),
            &sbd::sector_with(d, |b| mb.encode(b)).unwrap(),
            far_deadline(),
        )
        .unwrap();
    }

    fn run_bg(
        cfg: WatchConfig,
        dog: SoftDog,
    ) -> std::thread::JoinHandle<(Result<Outcome, WatchError>, Recorder)> {
        std::thread::spawn(move || {
            let mut rec = Recorder::default();
            let r = watch(cfg, || Ok(dog), &mut rec, &mut |_: &str| {});
            (r, rec)
        })
    }

    fn wait_fed(dog: &SoftDog, n: usize) {
        for _ in 0..500 {
            if dog.0.lock().unwrap().feeds.len() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("never fed {n} times");
    }

    #[test]
    fn allocates_its_slot_and_obeys_a_pill() {
        let d = mem_disk(4, &["other"]);
        let dog = SoftDog::default();
        let h = run_bg(config(&[Arc::clone(&d)]), dog.clone());
        wait_fed(&dog, 3);
        assert_eq!(
            dog.0.lock().unwrap().timeout,
            2,
            "header's watchdog timeout"
        );
        put(&d, 1, Message::Off);
        let (r, rec) = h.join().unwrap();
        assert!(matches!(
            r.unwrap(),
            Outcome::SelfFenced {
                action: SelfFenceAction::Off,
                ..
            }
        ));
        assert_eq!(rec.0.len(), 1);
        assert!(rec.0[0].1.contains("from `fencer`"), "{:?}", rec.0);
        assert!(!dog.0.lock().unwrap().disarmed, "left armed");
    }

    #[test]
    fn test_is_cleared_and_exit_disarms() {
        let d = mem_disk(4, &["me"]);
        let dog = SoftDog::default();
        let h = run_bg(config(&[Arc::clone(&d)]), dog.clone());
        wait_fed(&dog, 1);
        put(&d, 0, Message::Test);
        for _ in 0..500 {
            let b = d.snapshot();
            if b[1024] == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(d.snapshot()[1024], 0, "test cleared");
        put(&d, 0, Message::Exit);
        let (r, rec) = h.join().unwrap();
        assert!(matches!(r.unwrap(), Outcome::Exited { .. }));
        assert!(rec.0.is_empty());
        assert!(dog.0.lock().unwrap().disarmed);
    }

    #[test]
    fn hanging_majority_self_fences_and_stops_feeding() {
        let disks: Vec<_> = (0..3).map(|_| mem_disk(4, &["me"])).collect();
        let dog = SoftDog::default();
        let h = run_bg(config(&disks), dog.clone());
        wait_fed(&dog, 3);
        disks[0].set_hanging(true);
        disks[1].set_failing(true);
        let (r, rec) = h.join().unwrap();
        let Outcome::SelfFenced { action, reason } = r.unwrap() else {
            panic!()
        };
        assert_eq!(action, SelfFenceAction::Reboot);
        assert!(reason.contains("only 1 of 3"), "{reason}");
        assert_eq!(rec.0.len(), 1);
        disks[0].set_hanging(false);
    }

    #[test]
    fn one_failing_disk_of_three_keeps_feeding() {
        let disks: Vec<_> = (0..3).map(|_| mem_disk(4, &["me"])).collect();
        let dog = SoftDog::default();
        let cfg = config(&disks);
        let stop = Arc::clone(&cfg.stop);
        let h = run_bg(cfg, dog.clone());
        wait_fed(&dog, 1);
        disks[2].set_failing(true);
        let n = dog.0.lock().unwrap().feeds.len();
        wait_fed(&dog, n + 40);
        stop.store(true, Ordering::SeqCst);
        let (r, rec) = h.join().unwrap();
        assert_eq!(r.unwrap(), Outcome::Stopped);
        assert!(rec.0.is_empty());
    }

    #[test]
    fn pill_at_start_and_short_msgwait_are_refused() {
        let d = mem_disk(4, &["me"]);
        put(&d, 0, Message::Reset);
        let (r, rec) = run_bg(config(&[Arc::clone(&d)]), SoftDog::default())
            .join()
            .unwrap();
        assert!(matches!(r, Err(WatchError::PillAtStart { .. })), "{r:?}");
        assert!(rec.0.is_empty());
        let d = mem_disk(2, &["me"]);
        let dog = SoftDog::default();
        let (r, _) = run_bg(config(&[d]), dog.clone()).join().unwrap();
        let e = r.unwrap_err().to_string();
        assert!(e.contains("msgwait 2 s") && e.contains("3000 ms"), "{e}");
        assert!(dog.0.lock().unwrap().feeds.is_empty());
    }

    struct Failing;
    impl HealthRule for Failing {
        fn name(&self) -> &str {
            "quorum"
        }
        fn check(&mut self) -> Result<(), String> {
            Err("not quorate".into())
        }
    }

    #[test]
    fn a_failing_rule_stops_feeding_then_self_fences() {
        let d = mem_disk(4, &["me"]);
        let dog = SoftDog::default();
        let mut cfg = config(&[d]);
        cfg.rules.push(Box::new(Failing));
        let (r, rec) = run_bg(cfg, dog.clone()).join().unwrap();
        let Outcome::SelfFenced { reason, .. } = r.unwrap() else {
            panic!()
        };
        assert!(reason.contains("health rule quorum: not quorate"));
        assert_eq!(rec.0.len(), 1);
        // One feed at arming; none while unhealthy.
        assert_eq!(dog.0.lock().unwrap().feeds.len(), 1);
    }

    #[test]
    fn corrupted_header_is_not_fed() {
        let d = mem_disk(4, &["me"]);
        let dog = SoftDog::default();
        let h = run_bg(config(&[Arc::clone(&d)]), dog.clone());
        wait_fed(&dog, 2);
        d.write(0, &[0xAB; 512], far_deadline()).unwrap();
        let (r, _) = h.join().unwrap();
        let Outcome::SelfFenced { reason, .. } = r.unwrap() else {
            panic!()
        };
        assert!(reason.contains("no SBD header"), "{reason}");
    }
}
