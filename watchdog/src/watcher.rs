//! The SBD disk watcher: servants read the disks, the inquisitor feeds the hardware watchdog.
//!
//! # Shape
//! - One **servant** thread per disk (64 KiB stack). It opens the disk (O_DIRECT), finds or
//!   allocates this node's slot, then every `poll` (100 ms by default, sbd sleeps 1 s) reads
//!   the header and this node's node entry + mailbox with plain blocking reads on its own
//!   thread, and reports what it saw. It clears a `test` message itself. On a disk with a
//!   Palisade heartbeat area (`drivers::sbd::heartbeat`) it then writes this node's heartbeat
//!   record (one sector, the same thread, right after the report so a pill's reaction never
//!   waits on it): the `disk-heartbeat` witness watches that counter to see that the node's
//!   watcher still runs. It stops advancing when the watcher stops, self-fences or cannot
//!   read its disk (no good read, no heartbeat).
//! - The **inquisitor** (the calling thread) never touches a disk. It keeps, per disk, when the
//!   last good read *started*. A servant stuck in the kernel simply stops reporting: its disk
//!   ages out; nobody waits for it or joins it.
//! - The inquisitor feeds the hardware watchdog only while more than half of the disks had a
//!   good read that started less than the freshness window `F` ago ([`is_fresh`]) and every
//!   [`HealthRule`] holds.
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
//! All of it runs on the [`Clock`] in [`WatchConfig::clock`] (threads, sleeps, the servants'
//! reports), so the tests run it on virtual time with simulated disks and check these bounds
//! to the millisecond (`watcher/tests.rs`).
//!
//! Stopping the watcher cleanly (an `exit` message, or SIGTERM to `palisade-sbd watch`) disarms
//! the watchdog; from then on the node no longer obeys pills, exactly as with sbd. Stop it only
//! when the cluster stack on the node is down.

use crate::clock::{self, Clock, RecvError};
use crate::device::{WatchdogDevice, WatchdogError};
use crate::self_fence::{SelfFence, SelfFenceAction};
use drivers::sbd::heartbeat::{self, AreaError, AreaHeader, Record};
use drivers::sbd::{
    self, format, BlockDevice, DiskError, FormatError, Header, Mailbox, Message, NodeName, SbdError,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    fn check(&mut self) -> Result<(), Unhealthy>;
}

/// Why a [`HealthRule`] does not hold: what is wrong and what to do about it, in the rule's
/// own words (the watcher adds the rule's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

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
    /// The watcher's time and threads ([`clock::system`] outside tests).
    pub clock: Arc<dyn Clock>,
    /// Write this node's heartbeat on every disk that has a heartbeat area (`palisade-sbd
    /// create` makes one; a disk without it is never written past sbd's sectors).
    pub heartbeat: bool,
}

/// Who writes a heartbeat: a new boot or a new watcher start is a new writer, so a reader
/// never mistakes a restarted counter for one going backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterIdentity {
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`); zero where it is unreadable.
    pub boot_id: [u8; 16],
    /// When this watcher started, ms since the Unix epoch.
    pub started_ms: u64,
}

impl WriterIdentity {
    /// This boot and now.
    pub fn now() -> Self {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| format::parse_uuid(s.trim()))
            .unwrap_or([0; 16]);
        WriterIdentity {
            boot_id,
            started_ms: unix_ms(),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a servant does with heartbeats on its disk, as reported to the inquisitor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HeartbeatState {
    /// Not asked for (`--no-heartbeat`), or not yet known.
    #[default]
    Off,
    /// The disk has no usable area (why, and how to add one).
    NoArea(String),
    /// The last heartbeat write succeeded with this counter.
    Writing(u64),
    /// The last heartbeat write failed.
    Failed(String),
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
    #[error("cannot start a servant thread: {0}; check the process's thread and memory limits (ulimit -u, the unit's TasksMax=)")]
    Thread(#[source] std::io::Error),
}

/// Why a servant's look at its disk does not count.
#[derive(Debug, thiserror::Error)]
pub enum ServantError {
    /// The disk could not be opened, read or written.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Reading the header or the slots failed (I/O, no header, no free slot).
    #[error(transparent)]
    Sbd(#[from] SbdError),
    /// A sector does not decode.
    #[error("{path}: {what}: {source}; the disk no longer holds what this watcher wrote, check that nobody re-created or overwrote it")]
    Decode {
        /// The device.
        path: PathBuf,
        /// Which sector.
        what: String,
        /// Why.
        source: FormatError,
    },
    /// The header differs from the one read at start.
    #[error("{path}: the SBD header changed since the watcher started (disk re-created or replaced); not trusting this disk: restart the watcher once the disks are right")]
    HeaderChanged {
        /// The device.
        path: PathBuf,
    },
    /// Our slot now names another node.
    #[error("{path}: slot {slot} no longer belongs to this node (it holds `{holder}`); not trusting this disk: restart the watcher so that it claims a slot again")]
    SlotLost {
        /// The device.
        path: PathBuf,
        /// The slot.
        slot: u8,
        /// Who holds it now.
        holder: String,
    },
    /// The watcher is stopping while the servant was setting up.
    #[error("the watcher is stopping")]
    Stopping,
    /// The heartbeat writer could not be started (heartbeats stay off on this disk; the
    /// disk still counts).
    #[error("cannot start the heartbeat writer thread: {0}; check the process's thread limits")]
    Heartbeat(String),
}

impl ServantError {
    /// The failure is about what the disk holds (bad or changed header, slot taken), not an
    /// I/O error: the disk stops counting at once instead of ageing out, since waiting will
    /// not make a re-created disk ours again.
    fn about_content(&self) -> bool {
        matches!(
            self,
            ServantError::Decode { .. }
                | ServantError::HeaderChanged { .. }
                | ServantError::SlotLost { .. }
        )
    }
}

/// What a servant saw on one read.
#[derive(Debug, Clone)]
struct Seen {
    header: Header,
    mailbox: Mailbox,
    /// The heartbeat as of the servant's previous poll (written after each report).
    heartbeat: HeartbeatState,
}

struct Report {
    disk: usize,
    /// When the read began: a read that started before a pill may return the old mailbox.
    started: Instant,
    result: Result<Seen, ServantError>,
}

/// I/O deadlines the servant's own (thread-less) disk ignores: the servant thread itself is
/// what gets abandoned when the disk stops answering.
const FAR: Duration = Duration::from_secs(3600);

/// One servant: a thread reading one disk.
struct Servant {
    idx: usize,
    open: OpenDisk,
    name: NodeName,
    poll: Duration,
    tx: clock::Sender<Report>,
    stop: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    /// `None`: heartbeats not asked for.
    writer: Option<WriterIdentity>,
}

/// A servant's heartbeat on its disk.
enum Beat {
    /// Off, or the disk has no area (checked once per setup: the area is made offline).
    Never(HeartbeatState),
    /// Not checked yet (or the check failed with an I/O error: tried again next poll).
    Unchecked,
    /// Writing: the next record to write.
    Active(AreaHeader, Record),
}

impl Servant {
    fn far(&self) -> Instant {
        self.clock.now() + FAR
    }

    /// Open, read the header, find or allocate the slot, clean the mailbox.
    fn setup(&mut self) -> Result<(Box<dyn BlockDevice>, Header, u8, Mailbox), ServantError> {
        let dev = (self.open)()?;
        let header = sbd::read_header(dev.as_ref(), FAR)?;
        let slot = loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(ServantError::Stopping);
            }
            // sbd's slot_allocate: claim the first free slot, wait the allocate timeout, look
            // again, so that of two nodes racing for one slot the last writer keeps it.
            let slots = sbd::read_slots(dev.as_ref(), &header, FAR)?;
            if let Some(s) = slots
                .iter()
                .find(|s| s.node.is_allocated() && format::same_node(&s.node.name, &self.name))
            {
                break s.slot;
            }
            let free = slots
                .iter()
                .find(|s| !s.node.is_allocated())
                .ok_or_else(|| SbdError::NoFreeSlot {
                    path: dev.path().into(),
                    name: format::display_name(&self.name),
                    slots: header.slots,
                })?;
            let e = format::NodeEntry::allocated(self.name.clone());
            let bytes = sbd::sector_with(dev.as_ref(), |b| e.encode(b))?;
            dev.write(format::node_sector(free.slot), &bytes, self.far())?;
            self.clock
                .sleep(Duration::from_secs(u64::from(header.timeout_allocate)));
        };
        let mb = self.read_mailbox(dev.as_ref(), slot)?;
        // A left-over `test` or `exit` (a clean stop) is zeroed, as sbd's servant zeroes its
        // inbox on start. A poison pill is kept and reported: the inquisitor refuses to start
        // on it (sbd's SBD_STARTMODE=clean), because zeroing it would let a node that was
        // fenced, and whose watcher was merely restarted, run on as if nothing happened.
        if matches!(mb.cmd, Message::Test | Message::Exit | Message::Other(_)) {
            self.clear_mailbox(dev.as_ref(), slot)?;
            return Ok((dev, header, slot, Mailbox::default()));
        }
        Ok((dev, header, slot, mb))
    }

    fn read_mailbox(&self, dev: &dyn BlockDevice, slot: u8) -> Result<Mailbox, ServantError> {
        let b = dev.read(format::mailbox_sector(slot), 1, self.far())?;
        Mailbox::decode(&b).map_err(|source| ServantError::Decode {
            path: dev.path().into(),
            what: format!("mailbox of slot {slot}"),
            source,
        })
    }

    fn clear_mailbox(&self, dev: &dyn BlockDevice, slot: u8) -> Result<(), ServantError> {
        let zero = vec![0u8; dev.sector_size().bytes()];
        Ok(dev.write(format::mailbox_sector(slot), &zero, self.far())?)
    }

    /// One read of the header and of our node entry + mailbox (adjacent sectors, one I/O).
    fn poll(&self, dev: &dyn BlockDevice, first: &Header, slot: u8) -> Result<Seen, ServantError> {
        let decode = |what: &str, source| ServantError::Decode {
            path: dev.path().into(),
            what: what.into(),
            source,
        };
        let h0 = dev.read(0, 1, self.far())?;
        let header = Header::decode(&h0).map_err(|e| decode("header", e))?;
        if header != *first {
            return Err(ServantError::HeaderChanged {
                path: dev.path().into(),
            });
        }
        let ss = dev.sector_size().bytes();
        let b = dev.read(format::node_sector(slot), 2, self.far())?;
        let node = format::NodeEntry::decode(b.get(..ss).unwrap_or_default())
            .map_err(|e| decode(&format!("node entry of slot {slot}"), e))?;
        if !node.is_allocated() || !format::same_node(&node.name, &self.name) {
            return Err(ServantError::SlotLost {
                path: dev.path().into(),
                slot,
                holder: format::display_name(&node.name),
            });
        }
        let mailbox = Mailbox::decode(b.get(ss..).unwrap_or_default())
            .map_err(|e| decode(&format!("mailbox of slot {slot}"), e))?;
        if mailbox.cmd == Message::Test {
            // sbd acknowledges `test` by clearing the mailbox; the sender watches for that.
            self.clear_mailbox(dev, slot)?;
        }
        Ok(Seen {
            header,
            mailbox,
            heartbeat: HeartbeatState::Off,
        })
    }

    /// Checks the heartbeat area once a setup succeeded; continues the node's counter from
    /// its record if it has one (so the counter only grows across watcher restarts).
    fn check_area(
        &self,
        dev: &dyn BlockDevice,
        header: &Header,
        slot: u8,
        me: WriterIdentity,
    ) -> Beat {
        let area = match heartbeat::read_area(dev, header, self.far()) {
            Ok(a) => a,
            Err(AreaError::Disk(_)) => return Beat::Unchecked,
            Err(e) => return Beat::Never(HeartbeatState::NoArea(e.to_string())),
        };
        let counter = match heartbeat::read_record(dev, &area, slot, self.far()) {
            Ok(Ok(r)) if format::same_node(&r.name, &self.name) && r.disk_uuid == header.uuid => {
                r.counter.saturating_add(1)
            }
            Ok(_) => 0,
            Err(_) => return Beat::Unchecked,
        };
        Beat::Active(
            area,
            Record {
                slot,
                name: self.name.clone(),
                disk_uuid: header.uuid,
                boot_id: me.boot_id,
                started_ms: me.started_ms,
                counter,
                written_ms: 0,
            },
        )
    }

    /// Hands the next record to the disk's heartbeat writer, starting the writer the first
    /// time. A writer still busy with the previous record (a slow or stuck write) is skipped,
    /// not waited for: the servant's reads, which the node's life depends on, never queue
    /// behind a heartbeat.
    fn hand_over(
        &self,
        dev: &Arc<dyn BlockDevice>,
        area: &AreaHeader,
        next: &mut Record,
        writer: &mut Option<SharedBeat>,
    ) -> Result<(), ServantError> {
        if writer.is_none() {
            let shared: SharedBeat = Arc::new(Mutex::new(BeatSlot::default()));
            let w = BeatWriter {
                dev: Arc::clone(dev),
                slots: area.slots,
                shared: Arc::clone(&shared),
                stop: Arc::clone(&self.stop),
                clock: Arc::clone(&self.clock),
            };
            self.clock
                .spawn(
                    format!("heartbeat-{}", self.idx),
                    SERVANT_STACK,
                    Box::new(move || w.run()),
                )
                .map_err(|e| ServantError::Heartbeat(e.to_string()))?;
            *writer = Some(shared);
        }
        if let Some(shared) = writer {
            let mut g = lock_beat(shared);
            if g.next.is_none() {
                g.next = Some(next.clone());
                next.counter = next.counter.saturating_add(1);
            }
        }
        self.clock.notify();
        Ok(())
    }

    fn run(mut self) {
        let mut state: Option<(Arc<dyn BlockDevice>, Header, u8)> = None;
        let mut beat = match self.writer {
            Some(_) => Beat::Unchecked,
            None => Beat::Never(HeartbeatState::Off),
        };
        let mut writer: Option<SharedBeat> = None;
        let mut done = WriterDone(self.clock.clone(), None);
        while !self.stop.load(Ordering::SeqCst) {
            let started = self.clock.now();
            let last_beat = match (&writer, &beat) {
                (Some(w), _) => lock_beat(w).last.clone(),
                (None, Beat::Never(why)) => why.clone(),
                (None, _) => HeartbeatState::Off,
            };
            let result = match &state {
                None => self.setup().map(|(dev, header, slot, mailbox)| {
                    state = Some((Arc::from(dev), header, slot));
                    Seen {
                        header,
                        mailbox,
                        heartbeat: last_beat,
                    }
                }),
                Some((dev, header, slot)) => self.poll(dev.as_ref(), header, *slot).map(|mut s| {
                    s.heartbeat = last_beat;
                    s
                }),
            };
            // A heartbeat says "this node's watcher just read its slot and would obey a
            // pill": only after a good read that found no pill and no exit.
            let beat_now = matches!(&result, Ok(s) if matches!(s.mailbox.cmd, Message::Clear | Message::Test | Message::Other(_)));
            let report = Report {
                disk: self.idx,
                started,
                result,
            };
            if self.tx.send(report).is_err() {
                return; // the inquisitor is gone
            }
            if let (true, Some((dev, header, slot)), Some(me)) = (beat_now, &state, self.writer) {
                if matches!(beat, Beat::Unchecked) {
                    beat = self.check_area(dev.as_ref(), header, *slot, me);
                }
                if let Beat::Active(area, next) = &mut beat {
                    if let Err(e) = self.hand_over(dev, area, next, &mut writer) {
                        beat = Beat::Never(HeartbeatState::Failed(e.to_string()));
                    }
                    done.1.clone_from(&writer);
                }
            }
            let spent = self.clock.now().saturating_duration_since(started);
            self.clock.sleep(self.poll.saturating_sub(spent));
        }
    }
}

/// What a servant and its disk's heartbeat writer share.
#[derive(Debug, Default)]
struct BeatSlot {
    /// The record to write next; `Some` while the writer is busy with it.
    next: Option<Record>,
    /// How the last write went.
    last: HeartbeatState,
    /// The servant has ended: the writer ends too.
    done: bool,
}

type SharedBeat = Arc<Mutex<BeatSlot>>;

fn lock_beat(s: &SharedBeat) -> std::sync::MutexGuard<'_, BeatSlot> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tells the heartbeat writer that its servant has ended (on every way out of `run`).
struct WriterDone(Arc<dyn Clock>, Option<SharedBeat>);

impl Drop for WriterDone {
    fn drop(&mut self) {
        if let Some(s) = &self.1 {
            lock_beat(s).done = true;
            self.0.notify();
        }
    }
}

/// One thread per disk that writes the records its servant hands over, one sector each, with
/// the servant's thread-less disk handle: a write stuck in the kernel holds up only this
/// thread, never the servant's reads.
struct BeatWriter {
    dev: Arc<dyn BlockDevice>,
    slots: u8,
    shared: SharedBeat,
    stop: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
}

impl BeatWriter {
    fn run(self) {
        loop {
            let (shared, stop) = (&self.shared, &self.stop);
            self.clock.wait_until(None, &mut || {
                let g = lock_beat(shared);
                g.done || g.next.is_some() || stop.load(Ordering::SeqCst)
            });
            let next = {
                let g = lock_beat(shared);
                if g.done || stop.load(Ordering::SeqCst) {
                    // Stopped, self-fenced or gone: whatever was handed over stays unwritten.
                    return;
                }
                g.next.clone()
            };
            let Some(mut rec) = next else { continue };
            rec.written_ms = unix_ms();
            let sector = heartbeat::record_sector(self.slots, rec.slot);
            let mut buf = vec![0u8; self.dev.sector_size().bytes()];
            let state = match rec.encode(&mut buf) {
                Err(e) => HeartbeatState::Failed(e.to_string()),
                Ok(()) => match self.dev.write(sector, &buf, self.clock.now() + FAR) {
                    Ok(()) => HeartbeatState::Writing(rec.counter),
                    Err(e) => HeartbeatState::Failed(e.to_string()),
                },
            };
            let mut g = lock_beat(shared);
            g.last = state;
            g.next = None;
        }
    }
}

/// Whether a good read that started at `started` still counts at `now`: only while it is
/// younger than `fresh` (`W / 2`). A read exactly `fresh` old no longer counts, which keeps the
/// last feed strictly before `t_p + W / 2` in the argument above.
pub fn is_fresh(started: Instant, now: Instant, fresh: Duration) -> bool {
    now.saturating_duration_since(started) < fresh
}

/// What the inquisitor knows about one disk.
#[derive(Debug)]
struct DiskState {
    last_good: Option<Instant>,
    last_error: Option<ServantError>,
    header: Option<Header>,
    heartbeat: HeartbeatState,
}

impl Default for DiskState {
    fn default() -> Self {
        DiskState {
            last_good: None,
            last_error: None,
            header: None,
            heartbeat: HeartbeatState::Off,
        }
    }
}

/// A status line when a disk's heartbeat changes kind (starts, has no area, fails, recovers);
/// `None` while it just keeps counting, so the log is not written every poll.
fn heartbeat_change(before: &HeartbeatState, now: &HeartbeatState, disk: &str) -> Option<String> {
    if std::mem::discriminant(before) == std::mem::discriminant(now)
        && !matches!((before, now), (HeartbeatState::NoArea(a), HeartbeatState::NoArea(b)) | (HeartbeatState::Failed(a), HeartbeatState::Failed(b)) if a != b)
    {
        return None;
    }
    Some(match now {
        HeartbeatState::Off => return None,
        HeartbeatState::Writing(n) => format!("STATUS=heartbeat on {disk}: writing (counter {n})"),
        HeartbeatState::NoArea(why) => format!("STATUS=heartbeat on {disk}: not written: {why}"),
        HeartbeatState::Failed(why) => format!("STATUS=heartbeat on {disk}: write failed: {why}"),
    })
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
    let clock = Arc::clone(&cfg.clock);
    let (tx, rx) = clock::channel::<Report>(Arc::clone(&clock));
    // Servants stop when this is set; the caller's `stop` stays the caller's.
    let servants_stop = Arc::new(AtomicBool::new(false));
    let _stop_servants = StopOnDrop(Arc::clone(&servants_stop));
    let writer = WriterIdentity::now();
    for (idx, d) in cfg.disks.into_iter().enumerate() {
        let servant = Servant {
            idx,
            open: d.open,
            name: cfg.local_name.clone(),
            poll: cfg.poll,
            tx: tx.clone(),
            stop: Arc::clone(&servants_stop),
            clock: Arc::clone(&clock),
            writer: cfg.heartbeat.then_some(writer),
        };
        clock
            .spawn(
                format!("servant-{idx}"),
                SERVANT_STACK,
                Box::new(move || servant.run()),
            )
            .map_err(WatchError::Thread)?;
    }
    drop(tx);
    let mut disks: Vec<DiskState> = (0..n).map(|_| DiskState::default()).collect();
    let majority = n / 2 + 1;

    // Start: wait for a majority of disks to be read.
    let t0 = clock.now();
    while disks.iter().filter(|d| d.last_good.is_some()).count() < majority {
        let waited = clock.now().saturating_duration_since(t0);
        let left = cfg.startup_timeout.saturating_sub(waited);
        if left.is_zero() || cfg.stop.load(Ordering::SeqCst) {
            let ok = disks.iter().filter(|d| d.last_good.is_some()).count();
            let detail = disks
                .iter()
                .zip(&names)
                .filter(|(d, _)| d.last_good.is_none())
                .map(|(d, name)| match &d.last_error {
                    Some(e) => format!("{name}: {e}"),
                    None => format!("{name}: no answer"),
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
        if let Err(RecvError::Disconnected) = got {
            clock.sleep(left.min(cfg.poll));
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
            Err(RecvError::Timeout) => None,
            Err(RecvError::Disconnected) => {
                // Every servant is gone (they only leave when told to): nothing will count
                // again. Do not spin at real-time priority meanwhile; the disks age out below.
                clock.sleep(tick);
                None
            }
        };
        while let Some(r) = first.take().or_else(|| rx.try_recv()) {
            if let Ok(seen) = &r.result {
                let disk = names.get(r.disk).cloned().unwrap_or_default();
                if let Some(d) = disks.get_mut(r.disk) {
                    if let Some(line) = heartbeat_change(&d.heartbeat, &seen.heartbeat, &disk) {
                        notify.notify(&line);
                    }
                    d.heartbeat = seen.heartbeat.clone();
                }
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
        let now = clock.now();
        let fresh_count = disks
            .iter()
            .filter(|d| d.last_good.is_some_and(|t| is_fresh(t, now, fresh)))
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
            if e.about_content() {
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
mod tests;
