//! SBD (storage-based death): poison-pill fencing through a shared disk, byte-compatible with
//! ClusterLabs sbd's version-2 on-disk format.
//!
//! - [`format`]: pure encode/decode of the header, node entries and mailboxes.
//! - [`disk`]: O_DIRECT block I/O with a deadline on every I/O ([`BlockDevice`], [`Disk`]).
//! - this module: reading an SBD area (header, slot table) from one disk.
//! - [`heartbeat`]: the Palisade heartbeat area after sbd's sectors (the disk-heartbeat
//!   witness reads it, the watcher writes it).
//! - [`pill`]: writing a message to a node's slot on a majority of disks and reading it back.
//! - [`device`]: the disks as a fencing device (poison pill + msgwait) for the engine.
//!
//! [`SbdDevice`] is the fencer's `sbd` device kind; the disk side is one call:
//! [`open_and_deliver`]`(&[DiskConfig { path, uuid }], target, Message::Off, local_node, io)`
//! opens every disk (a deadline on each I/O), refuses disks whose UUID is not the configured
//! one, writes the pill to the target's slot, reads it back, and succeeds only on more than half
//! of the configured disks; a target with no slot anywhere is [`DeliveryError::NoSlot`]. On
//! success wait [`Delivered::remaining_wait`] (msgwait from the disks' headers, counted from
//! when the majority held the pill) on a monotonic clock before reporting the target fenced.
//! It blocks (threads, not async): call it from `spawn_blocking`. msgwait alone is
//! [`read_header`]`(&disk, io)?.timeout_msgwait`.

pub mod device;
pub mod disk;
pub mod format;
pub mod heartbeat;
pub mod pill;

pub use device::SbdDevice;
pub use disk::{BlockDevice, Disk, DiskError, MemDisk};
pub use format::{FormatError, Header, Mailbox, Message, NodeEntry, NodeName, SectorSize};
pub use pill::{
    deliver, open_and_deliver, Delivered, DeliveryError, DiskConfig, DiskOutcome, PillDisk,
};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What went wrong on one SBD disk.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SbdError {
    /// The I/O failed or timed out.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A sector does not decode (e.g. no SBD header).
    #[error("SBD device {path}, sector {sector}: {source}")]
    Format {
        /// The device.
        path: PathBuf,
        /// The sector.
        sector: u64,
        /// Why.
        source: FormatError,
    },
    /// The header's sector size is not the device's (sbd's `valid_header` refuses this too).
    #[error("SBD device {path}: header says {header}-byte sectors but the device has {device}-byte sectors; the disk was created on another device or copied, re-create it")]
    SectorSizeMismatch {
        /// The device.
        path: PathBuf,
        /// Size in the header.
        header: usize,
        /// Size of the device.
        device: usize,
    },
    /// The disk's UUID is not the one configured: it was replaced or re-created.
    #[error("SBD device {path} has UUID {found}, but {expected} is configured: the disk was replaced or re-created since the watchers started; refusing it (check the device path; update the configured UUID only after every node's watcher uses the new disk)")]
    UuidMismatch {
        /// The device.
        path: PathBuf,
        /// The configured UUID.
        expected: String,
        /// The UUID on disk.
        found: String,
    },
    /// The header changed between two reads during one operation.
    #[error("SBD device {path}: the header changed during the operation (the disk was replaced or re-created); not trusting it")]
    HeaderChanged {
        /// The device.
        path: PathBuf,
    },
    /// The named node has no slot on this disk.
    #[error("node {target} has no slot on SBD device {path}: no SBD watcher ever ran there (a watcher allocates its slot when it starts), so nothing would obey a poison pill; fence it another way, or start its watcher first")]
    NoSlot {
        /// The node.
        target: String,
        /// The device.
        path: PathBuf,
    },
    /// The mailbox read back differs from what was written.
    #[error("SBD device {path}: the message written to slot {slot} did not read back identical; the disk or its cache is unreliable")]
    ReadBackMismatch {
        /// The device.
        path: PathBuf,
        /// The slot.
        slot: u8,
    },
    /// Every slot is taken.
    #[error("SBD device {path}: no free slot for {name} (all {slots} slots taken); remove stale nodes by re-creating the disk")]
    NoFreeSlot {
        /// The device.
        path: PathBuf,
        /// The node.
        name: String,
        /// Slots on the disk.
        slots: u8,
    },
}

impl SbdError {
    /// The device this error is about.
    pub fn path(&self) -> &Path {
        match self {
            SbdError::Disk(
                DiskError::Open { path, .. }
                | DiskError::NotBlockDevice { path }
                | DiskError::SectorSize { path, .. }
                | DiskError::Timeout { path, .. }
                | DiskError::Stuck { path }
                | DiskError::Io { path, .. }
                | DiskError::Range { path, .. },
            )
            | SbdError::Format { path, .. }
            | SbdError::SectorSizeMismatch { path, .. }
            | SbdError::UuidMismatch { path, .. }
            | SbdError::HeaderChanged { path }
            | SbdError::NoSlot { path, .. }
            | SbdError::ReadBackMismatch { path, .. }
            | SbdError::NoFreeSlot { path, .. } => path,
        }
    }
}

/// One slot as read from disk: its node entry and its mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// The slot number (0-based, as sbd's `list` prints it).
    pub slot: u8,
    /// The node entry.
    pub node: NodeEntry,
    /// The mailbox.
    pub mailbox: Mailbox,
}

fn decode_at<T>(
    dev: &dyn BlockDevice,
    sector: u64,
    bytes: &[u8],
    f: impl FnOnce(&[u8]) -> Result<T, FormatError>,
) -> Result<T, SbdError> {
    f(bytes).map_err(|source| SbdError::Format {
        path: dev.path().into(),
        sector,
        source,
    })
}

/// Reads and checks the header (magic, version, sector size against the device's), with one
/// I/O that must finish within `io_timeout`.
pub fn read_header(dev: &dyn BlockDevice, io_timeout: Duration) -> Result<Header, SbdError> {
    let bytes = dev.read(0, 1, Instant::now() + io_timeout)?;
    let h = decode_at(dev, 0, &bytes, Header::decode)?;
    if h.sector_size != dev.sector_size() {
        return Err(SbdError::SectorSizeMismatch {
            path: dev.path().into(),
            header: h.sector_size.bytes(),
            device: dev.sector_size().bytes(),
        });
    }
    Ok(h)
}

/// Checks the header's UUID against the configured one, if any.
pub fn check_uuid(
    dev: &dyn BlockDevice,
    header: &Header,
    expected: Option<&[u8; 16]>,
) -> Result<(), SbdError> {
    match expected {
        Some(want) if *want != header.uuid || header.minor_version == 0 => {
            Err(SbdError::UuidMismatch {
                path: dev.path().into(),
                expected: format::format_uuid(want),
                found: header
                    .uuid_string()
                    .unwrap_or_else(|| "none (minor version 0)".into()),
            })
        }
        _ => Ok(()),
    }
}

/// Reads every slot's node entry and mailbox in one I/O (sbd reads them one sector at a time).
pub fn read_slots(
    dev: &dyn BlockDevice,
    header: &Header,
    io_timeout: Duration,
) -> Result<Vec<SlotState>, SbdError> {
    let ss = dev.sector_size().bytes();
    let n = format::sectors_used(header.slots) - 1;
    if n == 0 {
        return Ok(Vec::new());
    }
    let bytes = dev.read(1, n, Instant::now() + io_timeout)?;
    let mut out = Vec::with_capacity(header.slots as usize);
    for slot in 0..header.slots {
        let ns = format::node_sector(slot);
        let ms = format::mailbox_sector(slot);
        let at = |sector: u64| {
            let start = (sector as usize - 1) * ss;
            bytes.get(start..start + ss).unwrap_or_default()
        };
        let node = decode_at(dev, ns, at(ns), NodeEntry::decode)?;
        let mailbox = decode_at(dev, ms, at(ms), Mailbox::decode)?;
        out.push(SlotState {
            slot,
            node,
            mailbox,
        });
    }
    Ok(out)
}

/// Reads the node entries only and returns the slot owned by `name` (compared as sbd does,
/// ASCII case-insensitively), or `None`.
pub fn lookup_slot(
    dev: &dyn BlockDevice,
    header: &Header,
    name: &[u8],
    io_timeout: Duration,
) -> Result<Option<u8>, SbdError> {
    Ok(read_slots(dev, header, io_timeout)?
        .iter()
        .find(|s| s.node.is_allocated() && format::same_node(&s.node.name, name))
        .map(|s| s.slot))
}

/// Encodes one sector for `dev`.
pub fn sector_with(
    dev: &dyn BlockDevice,
    f: impl FnOnce(&mut [u8]) -> Result<(), FormatError>,
) -> Result<Vec<u8>, SbdError> {
    let mut buf = vec![0u8; dev.sector_size().bytes()];
    f(&mut buf).map_err(|source| SbdError::Format {
        path: dev.path().into(),
        sector: 0,
        source,
    })?;
    Ok(buf)
}

/// Decodes arbitrary bytes every way an SBD reader does and checks that whatever decodes
/// re-encodes to the same value. Shared by the cargo-fuzz target (`drivers/fuzz`, target `sbd_decode`) and the
/// seed-corpus replay test, so CI (stable, no libFuzzer) runs the same checks.
pub fn fuzz_decode(data: &[u8]) {
    let mut buf = vec![0u8; data.len().max(format::USED_BYTES)];
    if let Ok(h) = Header::decode(data) {
        assert!(h.encode(&mut buf).is_ok());
        assert_eq!(Header::decode(&buf).ok(), Some(h));
    }
    if let Ok(n) = NodeEntry::decode(data) {
        assert!(n.encode(&mut buf).is_ok());
        assert_eq!(NodeEntry::decode(&buf).ok(), Some(n));
    }
    if let Ok(m) = Mailbox::decode(data) {
        assert!(m.encode(&mut buf).is_ok());
        assert_eq!(Mailbox::decode(&buf).ok(), Some(m));
    }
    heartbeat::fuzz_decode(data);
    // The same bytes as the start of a disk: header, then the slot table.
    let disk = MemDisk::new("fuzz", SectorSize::S512, format::sectors_used(255));
    let len = data.len().min(512 * format::sectors_used(255) as usize);
    let whole = len - len % 512;
    if whole > 0 {
        let far = Instant::now() + Duration::from_secs(60);
        if disk.write(0, &data[..whole], far).is_ok() {
            if let Ok(h) = read_header(&disk, Duration::from_secs(60)) {
                if let Ok(slots) = read_slots(&disk, &h, Duration::from_secs(60)) {
                    assert_eq!(slots.len(), usize::from(h.slots));
                }
            }
        }
    }
}
