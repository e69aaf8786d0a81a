//! Writing a message (a poison pill) to a node's slot on a majority of SBD disks.
//!
//! What ClusterLabs sbd's `message` does (`messenger` / `slot_msg` in sbd-md.c): one process per
//! disk reads the header, finds the target's slot, writes the mailbox, reads it back, sleeps
//! msgwait, and the command succeeds once more than half the disks did. Two sbd quirks we do
//! not copy: its read-back check compares `mbox_write_verify(...) < -1`, which is never true,
//! so a failed write or verification still counts as delivered; and a disk that hangs keeps
//! the command waiting until the kernel completes the I/O. Here a disk counts only if its
//! mailbox read back identical, every I/O has a deadline, and the caller decides whether and
//! how to wait msgwait ([`Delivered::msgwait`]) so it can use a monotonic clock.

use super::{
    check_uuid, format, lookup_slot, read_header, sector_with, BlockDevice, Disk, Header, Mailbox,
    Message, SbdError,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One disk a pill is written to, with the UUID it must carry (if pinned in configuration).
#[derive(Clone, Copy)]
pub struct PillDisk<'a> {
    /// The opened device.
    pub dev: &'a dyn BlockDevice,
    /// The disk's expected UUID; a disk with another one is refused (replaced or re-created).
    pub expected_uuid: Option<[u8; 16]>,
}

/// A disk on which the message was written and read back identical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOutcome {
    /// The device.
    pub path: PathBuf,
    /// The target's slot on it.
    pub slot: u8,
    /// The disk's header (timeouts, UUID).
    pub header: Header,
    /// When the message had been read back from this disk (monotonic clock).
    pub confirmed_at: Instant,
}

/// A message written and read back on a majority of disks.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Disks where it was written and read back.
    pub written: Vec<DiskOutcome>,
    /// Disks where it failed, each with why.
    pub failed: Vec<SbdError>,
    /// Disks configured.
    pub total: usize,
    /// The longest msgwait among the written disks' headers: after this much time the target's
    /// watcher has either obeyed the pill or been reset by its watchdog. Wait it on a
    /// monotonic clock before calling the target fenced.
    pub msgwait: Duration,
    /// When a majority of disks held the message (the read-back of the disk that made the
    /// majority): msgwait counts from here, as sbd's per-disk sleep starts after its write.
    pub majority_at: Instant,
}

impl Delivered {
    /// How much of msgwait is still to wait from now (a disk that timed out may have kept
    /// [`deliver`] busy for part of it already).
    pub fn remaining_wait(&self) -> Duration {
        self.msgwait.saturating_sub(self.majority_at.elapsed())
    }
}

/// Why a message was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The target or sender name is not a valid SBD node name.
    #[error("`{name}` is not a valid SBD node name (1 to 63 bytes, no NUL); use the name the node's watcher runs under (`uname -n` or its -n option)")]
    BadName {
        /// The name.
        name: String,
    },
    /// No disk has a slot for the target.
    #[error("node {target} has no slot on any SBD disk: no SBD watcher ever ran there, so nothing would obey a poison pill; fence it another way, or start its watcher first ({})", join(.failed))]
    NoSlot {
        /// The node.
        target: String,
        /// Every disk's error.
        failed: Vec<SbdError>,
    },
    /// Fewer than a majority of disks took the message.
    #[error("message written and read back on {written} of {total} SBD disks, a majority needs {needed}; not delivered ({})", join(.failed))]
    NoMajority {
        /// Disks written.
        written: usize,
        /// Disks configured.
        total: usize,
        /// Disks needed.
        needed: usize,
        /// The failed disks, each with why.
        failed: Vec<SbdError>,
    },
}

fn join(errs: &[SbdError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The number of disks that makes a majority of `total` (sbd's `quorum_write`: more than half).
pub fn majority(total: usize) -> usize {
    total / 2 + 1
}

/// Writes `msg` from node `from` into `target`'s mailbox on every disk in parallel, reads each
/// back, and succeeds if more than half of `disks` hold it. Each disk's I/Os have `io_timeout`
/// each (five I/Os per disk at most), so this returns within about `5 * io_timeout`.
pub fn deliver(
    disks: &[PillDisk<'_>],
    target: &str,
    msg: Message,
    from: &str,
    io_timeout: Duration,
) -> Result<Delivered, DeliveryError> {
    deliver_counting(disks, Vec::new(), target, msg, from, io_timeout)
}

/// A configured SBD disk: its path and, if pinned in configuration, its UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The block device.
    pub path: PathBuf,
    /// The UUID it must carry (`None`: any, as sbd itself does).
    pub uuid: Option<[u8; 16]>,
}

/// Opens every configured disk (each open with `io_timeout`) and delivers `msg` to `target` as
/// [`deliver`] does; a disk that does not open counts as failed against the majority of all
/// configured disks. This is the one call a fencer needs: on `Ok`, wait
/// [`Delivered::msgwait`] on a monotonic clock, then the target is fenced.
pub fn open_and_deliver(
    disks: &[DiskConfig],
    target: &str,
    msg: Message,
    from: &str,
    io_timeout: Duration,
) -> Result<Delivered, DeliveryError> {
    let mut opened = Vec::new();
    let mut failed = Vec::new();
    for d in disks {
        match Disk::open(&d.path, Instant::now() + io_timeout) {
            Ok(x) => opened.push((x, d.uuid)),
            Err(e) => failed.push(SbdError::Disk(e)),
        }
    }
    let pds: Vec<PillDisk<'_>> = opened
        .iter()
        .map(|(x, u)| PillDisk {
            dev: x,
            expected_uuid: *u,
        })
        .collect();
    deliver_counting(&pds, failed, target, msg, from, io_timeout)
}

fn deliver_counting(
    disks: &[PillDisk<'_>],
    pre_failed: Vec<SbdError>,
    target: &str,
    msg: Message,
    from: &str,
    io_timeout: Duration,
) -> Result<Delivered, DeliveryError> {
    let target_name = format::node_name(target).ok_or_else(|| DeliveryError::BadName {
        name: target.into(),
    })?;
    let from_name =
        format::node_name(from).ok_or_else(|| DeliveryError::BadName { name: from.into() })?;
    let mailbox = Mailbox {
        cmd: msg,
        from: from_name,
    };
    // Per-disk work on scoped threads: each is bounded because every I/O under it has a
    // deadline (a stuck I/O is abandoned on its own thread inside the device).
    let results: Vec<Result<DiskOutcome, SbdError>> = std::thread::scope(|s| {
        let handles: Vec<_> = disks
            .iter()
            .map(|d| {
                let mb = &mailbox;
                let t = &target_name;
                s.spawn(move || deliver_one(*d, t, mb, io_timeout))
            })
            .collect();
        handles
            .into_iter()
            .zip(disks)
            .map(|(h, d)| {
                h.join().unwrap_or_else(|_| {
                    Err(SbdError::Disk(super::DiskError::Io {
                        path: d.dev.path().into(),
                        what: "delivering".into(),
                        reason: "the delivery thread panicked".into(),
                    }))
                })
            })
            .collect()
    });
    let mut written = Vec::new();
    let mut failed = pre_failed;
    let total = disks.len() + failed.len();
    for r in results {
        match r {
            Ok(o) => written.push(o),
            Err(e) => failed.push(e),
        }
    }
    let needed = majority(total);
    if written.len() >= needed && total > 0 {
        let msgwait = written
            .iter()
            .map(|o| o.header.timeout_msgwait)
            .max()
            .unwrap_or(0);
        let mut times: Vec<Instant> = written.iter().map(|o| o.confirmed_at).collect();
        times.sort();
        let majority_at = times.get(needed - 1).copied().unwrap_or_else(Instant::now);
        return Ok(Delivered {
            written,
            failed,
            total,
            msgwait: Duration::from_secs(u64::from(msgwait)),
            majority_at,
        });
    }
    // "No slot" only when every disk answered and none has one; a disk we could not read
    // might hold the slot, so then it is the plain majority failure.
    if written.is_empty()
        && !failed.is_empty()
        && failed.iter().all(|e| matches!(e, SbdError::NoSlot { .. }))
    {
        return Err(DeliveryError::NoSlot {
            target: target.into(),
            failed,
        });
    }
    Err(DeliveryError::NoMajority {
        written: written.len(),
        total,
        needed,
        failed,
    })
}

fn deliver_one(
    d: PillDisk<'_>,
    target: &[u8],
    mailbox: &Mailbox,
    io_timeout: Duration,
) -> Result<DiskOutcome, SbdError> {
    let dev = d.dev;
    let header = read_header(dev, io_timeout)?;
    check_uuid(dev, &header, d.expected_uuid.as_ref())?;
    let slot = lookup_slot(dev, &header, target, io_timeout)?.ok_or_else(|| SbdError::NoSlot {
        target: format::display_name(target),
        path: dev.path().into(),
    })?;
    let sector = format::mailbox_sector(slot);
    let bytes = sector_with(dev, |b| mailbox.encode(b))?;
    dev.write(sector, &bytes, Instant::now() + io_timeout)?;
    let back = dev.read(sector, 1, Instant::now() + io_timeout)?;
    if back != bytes {
        return Err(SbdError::ReadBackMismatch {
            path: dev.path().into(),
            slot,
        });
    }
    let confirmed_at = Instant::now();
    // The disk could have been swapped or re-created while we wrote: the header must still
    // be the one we checked, or the slot number we wrote to means nothing.
    if read_header(dev, io_timeout)? != header {
        return Err(SbdError::HeaderChanged {
            path: dev.path().into(),
        });
    }
    Ok(DiskOutcome {
        path: dev.path().into(),
        slot,
        header,
        confirmed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbd::{format::node_name, MemDisk, NodeEntry, SectorSize};

    const T: Duration = Duration::from_millis(200);

    fn formatted(path: &str, uuid: u8, nodes: &[&str]) -> MemDisk {
        let d = MemDisk::new(path, SectorSize::S512, 600);
        let h = Header::for_tests([uuid; 16]);
        let far = Instant::now() + T;
        d.write(0, &sector_with(&d, |b| h.encode(b)).unwrap(), far)
            .unwrap();
        for (i, n) in nodes.iter().enumerate() {
            let e = NodeEntry::allocated(node_name(n).unwrap());
            d.write(
                format::node_sector(i as u8),
                &sector_with(&d, |b| e.encode(b)).unwrap(),
                far,
            )
            .unwrap();
        }
        d
    }

    fn pd(d: &MemDisk) -> PillDisk<'_> {
        PillDisk {
            dev: d,
            expected_uuid: None,
        }
    }

    #[test]
    fn writes_to_all_disks_and_reports_msgwait() {
        let disks = [
            formatted("a", 1, &["n1", "n2"]),
            formatted("b", 2, &["n2", "n1"]),
            formatted("c", 3, &["n1"]),
        ];
        let pds: Vec<_> = disks.iter().map(pd).collect();
        let ok = deliver(&pds, "N1", Message::Off, "fencer", T).unwrap();
        assert_eq!(ok.written.len(), 3);
        assert_eq!(ok.msgwait, Duration::from_secs(10));
        assert_eq!(ok.written[1].slot, 1);
        let snap = disks[1].snapshot();
        assert_eq!(&snap[4 * 512..4 * 512 + 8], b"\x03fencer\0");
    }

    #[test]
    fn one_of_three_is_not_a_majority() {
        let disks = [
            formatted("a", 1, &["n1"]),
            formatted("b", 2, &["n1"]),
            formatted("c", 3, &["n1"]),
        ];
        disks[1].set_failing(true);
        disks[2].set_losing_writes(true);
        let pds: Vec<_> = disks.iter().map(pd).collect();
        match deliver(&pds, "n1", Message::Reset, "f", T) {
            Err(DeliveryError::NoMajority {
                written: 1,
                total: 3,
                needed: 2,
                failed,
            }) => {
                assert!(matches!(failed[1], SbdError::ReadBackMismatch { .. }));
            }
            other => panic!("expected no majority, got {other:?}"),
        }
    }

    #[test]
    fn hanging_disk_is_bounded_and_two_of_three_suffice() {
        let disks = [
            formatted("a", 1, &["n1"]),
            formatted("b", 2, &["n1"]),
            formatted("c", 3, &["n1"]),
        ];
        disks[2].set_hanging(true);
        let pds: Vec<_> = disks.iter().map(pd).collect();
        let t0 = Instant::now();
        let ok = deliver(&pds, "n1", Message::Reset, "f", T).unwrap();
        assert!(t0.elapsed() < T * 3);
        assert_eq!(ok.written.len(), 2);
        // The hung disk's timeout is already part of msgwait: less than msgwait remains.
        assert!(ok.majority_at < t0 + T / 2);
        assert!(ok.remaining_wait() <= ok.msgwait - T / 2);
        assert!(ok.failed[0].to_string().contains("did not answer"));
    }

    #[test]
    fn replaced_disk_with_other_uuid_is_refused() {
        let disks = [formatted("a", 1, &["n1"]), formatted("b", 9, &["n1"])];
        let pds = [
            PillDisk {
                dev: &disks[0],
                expected_uuid: Some([1; 16]),
            },
            PillDisk {
                dev: &disks[1],
                expected_uuid: Some([2; 16]),
            },
        ];
        let e = deliver(&pds, "n1", Message::Off, "f", T).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        assert!(
            disks[1].snapshot()[1024] == 0,
            "nothing written to the impostor"
        );
    }

    #[test]
    fn target_without_slot_says_no_watcher_ran() {
        let disks = [formatted("a", 1, &["n1"]), formatted("b", 2, &["n1"])];
        let pds: Vec<_> = disks.iter().map(pd).collect();
        let e = deliver(&pds, "n7", Message::Off, "f", T).unwrap_err();
        assert!(matches!(e, DeliveryError::NoSlot { .. }));
        assert!(e.to_string().contains("no SBD watcher ever ran there"));
    }

    #[test]
    fn names_are_checked() {
        let disks = [formatted("a", 1, &["n1"])];
        let pds: Vec<_> = disks.iter().map(pd).collect();
        assert!(matches!(
            deliver(&pds, &"x".repeat(64), Message::Off, "f", T),
            Err(DeliveryError::BadName { .. })
        ));
    }
}
