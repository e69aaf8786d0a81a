//! The `disk-heartbeat` witness: watches the node's heartbeat record on a shared SBD disk
//! (`crate::sbd::heartbeat`), which the node's `palisade-sbd watch` advances after every good
//! read of its slot (10 times a second). A counter that moves after the device reported off
//! means the node's watcher still runs: the node is alive, a veto.
//!
//! What it can and cannot say:
//! - `Alive`: the record advanced (or a new writer, a restarted watcher, appeared) during the
//!   observation. Only a running watcher on that node writes the record.
//! - `Silent`: a valid record of this node was read at the start and again at least `settle`
//!   later, unchanged, and every read in between succeeded. It does not prove the node is off
//!   (its watcher may have died, or only its path to this disk), which is why a witness only
//!   vetoes.
//! - `NoEvidence`: the disk could not be read in time, has no heartbeat area (a disk made by
//!   sbd, or before heartbeats existed), the node has no slot or never wrote a record, a
//!   record became unreadable or went backwards, or the deadline came before `settle` was over.
//!
//! Disk reads run on tokio's blocking pool and use [`Disk`]'s deadline per I/O (a read stuck
//! in the kernel is abandoned, see `sbd::disk`), like the `sbd` fencing device, so the runtime
//! never blocks and `observe` returns by its deadline.

use super::{Evidence, Observation, Verdict, Witness};
use crate::sbd::heartbeat::{self, AreaHeader, Progress, Record};
use crate::sbd::{self, format, BlockDevice, Disk, DiskError, NodeName};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long the record must stay unchanged for `Silent` by default: many times the watcher's
/// 100 ms write period, so a watcher delayed by a slow read or a busy node still shows.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(3);
/// How often the record is read by default.
pub const DEFAULT_POLL: Duration = Duration::from_millis(250);
/// The deadline of each disk I/O by default (sbd's `timeout_io` is 3 s).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What the witness watches and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskHeartbeatConfig {
    /// The shared SBD disk (a block device).
    pub path: PathBuf,
    /// The node's name, as its SBD slot holds it (the target's `port` for an `sbd` device).
    pub node: String,
    /// The disk's SBD UUID, if configured: another disk at that path gives no evidence.
    pub uuid: Option<[u8; 16]>,
    /// How long the record must stay unchanged for `Silent`.
    pub settle: Duration,
    /// Time between reads of the record.
    pub poll: Duration,
    /// Deadline of each disk I/O.
    pub read_timeout: Duration,
}

impl DiskHeartbeatConfig {
    /// Watches `node` on `path` with the default settle, poll and read timeout.
    pub fn new(path: impl Into<PathBuf>, node: impl Into<String>) -> Self {
        DiskHeartbeatConfig {
            path: path.into(),
            node: node.into(),
            uuid: None,
            settle: DEFAULT_SETTLE,
            poll: DEFAULT_POLL,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

/// Why a disk-heartbeat witness cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskWitnessError {
    /// The node name cannot be an SBD slot's.
    #[error("disk-heartbeat witness: node name `{0}` is not an SBD node name (1 to 63 bytes, no NUL); use the name the node's watcher runs with (-n)")]
    BadNode(String),
    /// A duration is zero, or the poll is longer than the settle.
    #[error("disk-heartbeat witness: {0}")]
    BadTiming(String),
}

/// Opens the disk for one observation. Production opens [`Disk`] (O_DIRECT, a deadline);
/// tests hand in a shared in-memory disk.
pub type OpenDisk =
    Arc<dyn Fn(std::time::Instant) -> Result<Arc<dyn BlockDevice>, DiskError> + Send + Sync>;

/// The `disk-heartbeat` witness over one SBD disk.
#[derive(Clone)]
pub struct DiskHeartbeatWitness {
    cfg: DiskHeartbeatConfig,
    name: NodeName,
    open: OpenDisk,
}

impl std::fmt::Debug for DiskHeartbeatWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskHeartbeatWitness")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl DiskHeartbeatWitness {
    /// A witness over the real block device `cfg.path`.
    pub fn new(cfg: DiskHeartbeatConfig) -> Result<Self, DiskWitnessError> {
        let path = cfg.path.clone();
        let open: OpenDisk = Arc::new(move |deadline| {
            Disk::open(&path, deadline).map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
        });
        Self::with_opener(cfg, open)
    }

    /// A witness that opens its disk with `open` (tests: a [`crate::sbd::MemDisk`]).
    pub fn with_opener(cfg: DiskHeartbeatConfig, open: OpenDisk) -> Result<Self, DiskWitnessError> {
        let name = format::node_name(&cfg.node)
            .ok_or_else(|| DiskWitnessError::BadNode(cfg.node.clone()))?;
        for (what, d) in [
            ("settle", cfg.settle),
            ("poll", cfg.poll),
            ("read timeout", cfg.read_timeout),
        ] {
            if d.is_zero() {
                return Err(DiskWitnessError::BadTiming(format!(
                    "{what} is zero; give it a positive duration (defaults: settle {} ms, poll {} ms, read timeout {} ms)",
                    DEFAULT_SETTLE.as_millis(),
                    DEFAULT_POLL.as_millis(),
                    DEFAULT_READ_TIMEOUT.as_millis()
                )));
            }
        }
        if cfg.poll > cfg.settle {
            return Err(DiskWitnessError::BadTiming(format!(
                "poll ({} ms) is longer than settle ({} ms), so the record would be read only at the start and the end; make poll at most settle",
                cfg.poll.as_millis(),
                cfg.settle.as_millis()
            )));
        }
        Ok(DiskHeartbeatWitness { cfg, name, open })
    }

    /// The configuration.
    pub fn config(&self) -> &DiskHeartbeatConfig {
        &self.cfg
    }
}

/// The disk, its area and the node's slot, found at the start of an observation.
struct Found {
    dev: Arc<dyn BlockDevice>,
    header: sbd::Header,
    area: AreaHeader,
    slot: u8,
}

/// One read of the record: a valid record of this node, or why the sector holds none.
type Reading = Result<Record, String>;

fn evidence(detail: impl Into<String>) -> Evidence {
    Evidence {
        at: SystemTime::now(),
        detail: detail.into(),
    }
}

fn no_evidence(mut seen: Vec<Evidence>, why: impl Into<String>) -> Observation {
    seen.push(evidence(why));
    Observation {
        verdict: Verdict::NoEvidence,
        evidence: seen,
    }
}

fn describe_record(r: &Record) -> String {
    format!(
        "counter {} written at {} ms (Unix, the node's clock) by the watcher started at {} ms in boot {}",
        r.counter,
        r.written_ms,
        r.started_ms,
        format::format_uuid(&r.boot_id)
    )
}

impl DiskHeartbeatWitness {
    fn disk(&self) -> String {
        self.cfg.path.display().to_string()
    }

    /// A std deadline for one I/O starting now: the read timeout, cut to the observation's.
    fn io_deadline(&self, deadline: Instant) -> std::time::Instant {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        std::time::Instant::now() + left.min(self.cfg.read_timeout)
    }

    /// Runs `f` on the blocking pool, giving up at `deadline` (every I/O inside has its own
    /// deadline, so the thread ends on its own soon after).
    async fn blocking<T: Send + 'static>(
        &self,
        deadline: Instant,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        match tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(f)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("the disk read stopped unexpectedly: {e}")),
            Err(_) => Err(format!(
                "no answer from {} before the observation's deadline",
                self.disk()
            )),
        }
    }

    /// Opens the disk and finds the header, the heartbeat area and the node's slot.
    async fn find(&self, deadline: Instant) -> Result<Found, String> {
        let (open, name, uuid) = (Arc::clone(&self.open), self.name.clone(), self.cfg.uuid);
        let io = self.io_deadline(deadline);
        let timeout = self.cfg.read_timeout;
        let node = self.cfg.node.clone();
        self.blocking(deadline, move || {
            let dev = open(io).map_err(|e| e.to_string())?;
            let io_left = || io.saturating_duration_since(std::time::Instant::now()).min(timeout);
            let header = sbd::read_header(dev.as_ref(), io_left()).map_err(|e| e.to_string())?;
            sbd::check_uuid(dev.as_ref(), &header, uuid.as_ref()).map_err(|e| e.to_string())?;
            let area = heartbeat::read_area(dev.as_ref(), &header, io)
                .map_err(|e| format!("{}: {e}", dev.path().display()))?;
            let slot = sbd::lookup_slot(dev.as_ref(), &header, &name, io_left())
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "node {node} has no slot on {}: its watcher never ran with this disk, so it writes no heartbeat here",
                        dev.path().display()
                    )
                })?;
            Ok(Found {
                dev,
                header,
                area,
                slot,
            })
        })
        .await
    }

    /// Reads the node's record once.
    async fn read(&self, found: &Found, deadline: Instant) -> Result<Reading, String> {
        let dev = Arc::clone(&found.dev);
        let (area, slot, uuid, name) =
            (found.area, found.slot, found.header.uuid, self.name.clone());
        let io = self.io_deadline(deadline);
        self.blocking(deadline, move || {
            let r = heartbeat::read_record(dev.as_ref(), &area, slot, io).map_err(|e| e.to_string())?;
            Ok(match r {
                Err(e) => Err(format!("slot {slot}'s heartbeat sector holds no record: {e}")),
                Ok(r) if !format::same_node(&r.name, &name) || r.slot != slot => Err(format!(
                    "slot {slot}'s heartbeat record names {} (slot {}), not this node: left from an earlier owner of the slot",
                    format::display_name(&r.name),
                    r.slot
                )),
                Ok(r) if r.disk_uuid != uuid => Err(format!(
                    "slot {slot}'s heartbeat record is for SBD disk {}, not this one ({})",
                    format::format_uuid(&r.disk_uuid),
                    format::format_uuid(&uuid)
                )),
                Ok(r) => Ok(r),
            })
        })
        .await
    }
}

#[async_trait]
impl Witness for DiskHeartbeatWitness {
    fn kind(&self) -> &'static str {
        "disk-heartbeat"
    }

    fn describe(&self) -> String {
        format!(
            "heartbeat of node {} on SBD disk {}",
            self.cfg.node,
            self.disk()
        )
    }

    async fn observe(&self, deadline: Instant) -> Observation {
        let start = Instant::now();
        let settled_at = start + self.cfg.settle;
        let mut seen = Vec::new();
        let found = match self.find(deadline).await {
            Ok(f) => f,
            Err(why) => return no_evidence(seen, why),
        };
        let disk = self.disk();
        let slot = found.slot;
        // The first valid record read, and when; and why the sector held none, if it did not.
        let mut baseline: Option<(Record, Instant)> = None;
        let mut absent: Option<String> = None;
        let mut reads = 0u32;
        loop {
            let read_at = Instant::now();
            let reading = match self.read(&found, deadline).await {
                Ok(r) => r,
                Err(why) => {
                    return no_evidence(
                        seen,
                        format!("reading node {}'s heartbeat (slot {slot}) on {disk} failed after {reads} good read(s): {why}", self.cfg.node),
                    )
                }
            };
            reads += 1;
            match (reading, &baseline) {
                (Err(why), None) => absent = Some(why),
                (Err(why), Some((b, _))) => {
                    return no_evidence(
                        seen,
                        format!("node {}'s heartbeat on {disk}, read as {} before, became unreadable: {why}", self.cfg.node, describe_record(b)),
                    )
                }
                (Ok(r), None) if absent.is_some() => {
                    // The sector held no record at the first read and holds one now: written
                    // during the observation.
                    seen.push(evidence(format!(
                        "node {}'s heartbeat on {disk} (slot {slot}) appeared {} ms into the observation: {}",
                        self.cfg.node,
                        read_at.saturating_duration_since(start).as_millis(),
                        describe_record(&r)
                    )));
                    return Observation {
                        verdict: Verdict::Alive,
                        evidence: seen,
                    };
                }
                (Ok(r), None) => {
                    seen.push(evidence(format!(
                        "node {}'s heartbeat on {disk} (slot {slot}) at the start: {}",
                        self.cfg.node,
                        describe_record(&r)
                    )));
                    baseline = Some((r, read_at));
                }
                (Ok(r), Some((b, b_at))) => match r.progress_since(b) {
                    Progress::Unchanged => {}
                    p @ (Progress::Advanced | Progress::NewWriter) => {
                        let how = if p == Progress::Advanced {
                            format!("advanced from {} to {}", b.counter, r.counter)
                        } else {
                            "was rewritten by a newly started watcher".to_string()
                        };
                        seen.push(evidence(format!(
                            "node {}'s heartbeat on {disk} {how} within {} ms: {}",
                            self.cfg.node,
                            read_at.saturating_duration_since(*b_at).as_millis(),
                            describe_record(&r)
                        )));
                        return Observation {
                            verdict: Verdict::Alive,
                            evidence: seen,
                        };
                    }
                    Progress::Backwards => {
                        return no_evidence(
                            seen,
                            format!("node {}'s heartbeat on {disk} went backwards from {} to {} (a restored or lying disk); it says nothing", self.cfg.node, b.counter, r.counter),
                        )
                    }
                },
            }
            if read_at >= settled_at {
                // A read that started a whole settle after the start found nothing new.
                return match baseline {
                    Some((b, _)) => {
                        seen.push(evidence(format!(
                            "node {}'s heartbeat on {disk} stayed at counter {} for {} ms ({reads} reads)",
                            self.cfg.node,
                            b.counter,
                            read_at.saturating_duration_since(start).as_millis()
                        )));
                        Observation {
                            verdict: Verdict::Silent,
                            evidence: seen,
                        }
                    }
                    None => no_evidence(
                        seen,
                        format!(
                            "{}; node {}'s watcher does not write heartbeats there (started with --no-heartbeat, or an older palisade-sbd), so its silence says nothing",
                            absent.unwrap_or_default(),
                            self.cfg.node
                        ),
                    ),
                };
            }
            let next = (read_at + self.cfg.poll).min(settled_at);
            if next >= deadline {
                return no_evidence(
                    seen,
                    format!(
                        "the observation's deadline came {} ms into the {} ms settle, before silence could be established",
                        deadline.saturating_duration_since(start).as_millis(),
                        self.cfg.settle.as_millis()
                    ),
                );
            }
            tokio::time::sleep_until(next).await;
        }
    }
}

#[cfg(test)]
mod tests;
