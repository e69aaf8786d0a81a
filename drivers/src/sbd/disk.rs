//! Block I/O for SBD disks: O_DIRECT, the device's logical sector size, aligned buffers, and a
//! deadline on every I/O.
//!
//! Why a thread per I/O: a read on a dead path (a SAN that stopped answering, a throttled or
//! suspended device) sleeps uninterruptibly in the kernel and cannot be cancelled. ClusterLabs
//! sbd uses Linux AIO with a timeout, but after the timeout its `close_device` calls
//! `io_destroy`, which waits for the in-flight request anyway: measured here, `sbd dump` on a
//! throttled loop device hung for 8.5 minutes. We issue each I/O on its own thread and wait for
//! it with a deadline; on a miss the caller gets [`DiskError::Timeout`] naming the device, the
//! thread is left behind (its result is dropped unread: the channel's receiver is gone), and the
//! [`Disk`] refuses all further I/O ([`DiskError::Stuck`]) so nothing ever queues behind it or
//! mistakes a late completion for a new one.
//!
//! Why this lives in `drivers`: the fencer's `sbd` device kind (the poison-pill writer) and the
//! watcher in the `watchdog` crate both need it, and `watchdog` already depends on nothing that
//! `drivers` could not.

use super::format::SectorSize;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a disk I/O failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiskError {
    /// The device could not be opened.
    #[error("cannot open SBD device {path}: {reason}; check the path, that the device exists on this node and that we run as root")]
    Open {
        /// The device.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The path is not a block device (SBD needs O_DIRECT on a shared block device).
    #[error("{path} is not a block device; SBD needs a shared block device (for tests: `losetup -f --show FILE`)")]
    NotBlockDevice {
        /// The path.
        path: PathBuf,
    },
    /// The device's logical sector size is neither 512 nor 4096.
    #[error("SBD device {path} has logical sector size {size}, SBD supports 512 and 4096")]
    SectorSize {
        /// The device.
        path: PathBuf,
        /// The size BLKSSZGET returned.
        size: u64,
    },
    /// The I/O did not complete before its deadline; the device is now refused.
    #[error("SBD device {path} did not answer within {after_ms} ms ({what}); check the storage path to it (multipath, SAN, cabling); the device is treated as failed")]
    Timeout {
        /// The device.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// How long we waited.
        after_ms: u64,
    },
    /// An earlier I/O on this handle timed out and may still be in the kernel.
    #[error("SBD device {path} has an I/O stuck in the kernel since an earlier timeout; not using it again until it is reopened")]
    Stuck {
        /// The device.
        path: PathBuf,
    },
    /// The OS reported an error.
    #[error("SBD device {path}: {what} failed: {reason}; check the device's health (dmesg) and the storage path")]
    Io {
        /// The device.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The OS error.
        reason: String,
    },
    /// A request outside the device or not a whole number of sectors.
    #[error("SBD device {path}: {what} is out of range (device has {size_bytes} bytes); the device is too small for an SBD area")]
    Range {
        /// The device.
        path: PathBuf,
        /// What was asked.
        what: String,
        /// The device size.
        size_bytes: u64,
    },
}

impl DiskError {
    /// Whether the device did not answer in time (now or earlier).
    pub fn is_timeout(&self) -> bool {
        matches!(self, DiskError::Timeout { .. } | DiskError::Stuck { .. })
    }
}

/// A shared disk holding an SBD area: whole-sector reads and writes with a deadline each.
pub trait BlockDevice: Send + Sync {
    /// The device's name for messages (its path).
    fn path(&self) -> &Path;
    /// The device's logical sector size.
    fn sector_size(&self) -> SectorSize;
    /// Reads `count` sectors from `first`; fails with a timeout if not done by `deadline`.
    fn read(&self, first: u64, count: u64, deadline: Instant) -> Result<Vec<u8>, DiskError>;
    /// Writes whole sectors from `first`; fails with a timeout if not done by `deadline`.
    fn write(&self, first: u64, data: &[u8], deadline: Instant) -> Result<(), DiskError>;
}

/// A sector-aligned buffer for O_DIRECT without `unsafe`: over-allocate and start at the first
/// 4096-aligned byte (4096 is a multiple of every sector size we accept). A `Vec`'s heap block
/// does not move when the `Vec` does, so the alignment survives being sent between threads.
struct AlignedBuf {
    raw: Vec<u8>,
    offset: usize,
    len: usize,
}

const ALIGN: usize = 4096;

impl AlignedBuf {
    fn zeroed(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN];
        let offset = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf { raw, offset, len }
    }
    fn as_slice(&self) -> &[u8] {
        self.raw
            .get(self.offset..self.offset + self.len)
            .unwrap_or_default()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        let (o, l) = (self.offset, self.len);
        self.raw.get_mut(o..o + l).unwrap_or_default()
    }
}

/// A real block device opened with O_DIRECT | O_SYNC, as sbd opens it (`open_device`).
pub struct Disk {
    path: PathBuf,
    file: Arc<File>,
    sector_size: SectorSize,
    size_bytes: u64,
    stuck: Arc<AtomicBool>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .field("sector_size", &self.sector_size)
            .field("size_bytes", &self.size_bytes)
            .finish()
    }
}

// From <linux/fs.h>: BLKSSZGET = _IO(0x12, 104) (an int), BLKGETSIZE64 = _IOR(0x12, 114, size_t).
// The ioctl encoding is per architecture (asm-generic on x86-64 and arm64; powerpc, mips and
// sparc put the direction bits elsewhere), so BLKSSZGET comes from libc's per-arch table and
// BLKGETSIZE64, which libc lacks, is only defined where the asm-generic encoding holds.
const BLKSSZGET: libc::Ioctl = libc::BLKSSZGET;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "BLKGETSIZE64: add this architecture's ioctl encoding (asm-generic covers x86-64 and arm64)"
);
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const BLKGETSIZE64: u64 = asm_generic_ior(0x12, 114, std::mem::size_of::<libc::size_t>() as u64);

/// `_IOR(type, nr, size)` in the asm-generic encoding: read direction (2) in bits 30-31, the
/// argument's size in bits 16-29, the type in bits 8-15, the number in bits 0-7.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const fn asm_generic_ior(ty: u64, nr: u64, size: u64) -> u64 {
    (2 << 30) | (size << 16) | (ty << 8) | nr
}

struct Opened {
    file: File,
    sector_size: u64,
    size_bytes: u64,
}

fn open_blocking(path: &Path) -> Result<Opened, DiskError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_SYNC)
        .open(path)
        .map_err(|e| DiskError::Open {
            path: path.into(),
            reason: e.to_string(),
        })?;
    let meta = file.metadata().map_err(|e| DiskError::Open {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if !meta.file_type().is_block_device() {
        return Err(DiskError::NotBlockDevice { path: path.into() });
    }
    let fd = file.as_raw_fd();
    let mut ssz: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at a live c_int.
    let rc = unsafe { libc::ioctl(fd, BLKSSZGET as _, &mut ssz as *mut libc::c_int) };
    if rc < 0 {
        return Err(io_err(path, "BLKSSZGET", io::Error::last_os_error()));
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live u64.
    let rc = unsafe { libc::ioctl(fd, BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc < 0 {
        return Err(io_err(path, "BLKGETSIZE64", io::Error::last_os_error()));
    }
    Ok(Opened {
        file,
        sector_size: ssz.max(0) as u64,
        size_bytes: size,
    })
}

fn io_err(path: &Path, what: &str, e: io::Error) -> DiskError {
    DiskError::Io {
        path: path.into(),
        what: what.into(),
        reason: e.to_string(),
    }
}

/// Runs `f` on a new thread and waits for it until `deadline`. On a miss, sets `stuck` and
/// returns a timeout; the thread's eventual result is dropped (its send fails).
fn with_deadline<T: Send + 'static>(
    path: &Path,
    what: &str,
    deadline: Instant,
    stuck: &AtomicBool,
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Result<T, DiskError> {
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("sbd-io".into())
        .spawn(move || {
            // The receiver may be gone (deadline missed): then the result is dropped unread.
            let _ = tx.send(f());
        })
        .map_err(|e| io_err(path, "starting an I/O thread", e))?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            stuck.store(true, Ordering::SeqCst);
            Err(DiskError::Timeout {
                path: path.into(),
                what: what.into(),
                after_ms: started.elapsed().as_millis() as u64,
            })
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(DiskError::Io {
            path: path.into(),
            what: what.into(),
            reason: "the I/O thread ended without a result".into(),
        }),
    }
}

impl Disk {
    /// Opens `path` (O_DIRECT | O_SYNC, read-write) and learns its sector size, all before
    /// `deadline` (opening a device on a dead path can block too).
    pub fn open(path: &Path, deadline: Instant) -> Result<Disk, DiskError> {
        let stuck = Arc::new(AtomicBool::new(false));
        let p = path.to_path_buf();
        let opened = with_deadline(path, "open", deadline, &stuck, move || open_blocking(&p))?;
        Disk::from_opened(path, opened, stuck)
    }

    fn from_opened(path: &Path, opened: Opened, stuck: Arc<AtomicBool>) -> Result<Disk, DiskError> {
        let sector_size =
            SectorSize::from_bytes(opened.sector_size).ok_or_else(|| DiskError::SectorSize {
                path: path.into(),
                size: opened.sector_size,
            })?;
        Ok(Disk {
            path: path.into(),
            file: Arc::new(opened.file),
            sector_size,
            size_bytes: opened.size_bytes,
            stuck,
        })
    }

    /// The open file descriptor (sbd prints it in `create`'s output).
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// The device size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Whether an I/O on this handle missed its deadline (the handle is then refused).
    pub fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::SeqCst)
    }

    fn check_range(&self, first: u64, count: u64, what: &str) -> Result<(u64, usize), DiskError> {
        let ss = self.sector_size.bytes() as u64;
        let offset = first.checked_mul(ss);
        let len = count.checked_mul(ss);
        match (offset, len) {
            (Some(o), Some(l)) if o.checked_add(l).is_some_and(|end| end <= self.size_bytes) => {
                Ok((o, usize::try_from(l).unwrap_or(usize::MAX)))
            }
            _ => Err(DiskError::Range {
                path: self.path.clone(),
                what: what.into(),
                size_bytes: self.size_bytes,
            }),
        }
    }

    /// Opens `path` on the calling thread, without a deadline. For a caller that is itself a
    /// disposable thread whose progress someone else watches (the watcher's servants): it may
    /// block for as long as the device does.
    pub fn open_here(path: &Path) -> Result<Disk, DiskError> {
        Disk::from_opened(path, open_blocking(path)?, Arc::new(AtomicBool::new(false)))
    }

    /// Reads `count` sectors from `first` on the calling thread, without a deadline (see
    /// [`Disk::open_here`]): no thread is started, so a watcher polling several times a second
    /// does not create one per read.
    pub fn read_here(&self, first: u64, count: u64) -> Result<Vec<u8>, DiskError> {
        let (what, offset, len) = self.plan_read(first, count)?;
        read_sectors(&self.file, &self.path, &what, offset, len)
    }

    /// Writes whole sectors from `first` on the calling thread, without a deadline (see
    /// [`Disk::open_here`]).
    pub fn write_here(&self, first: u64, data: &[u8]) -> Result<(), DiskError> {
        let (what, offset, buf) = self.plan_write(first, data)?;
        write_sectors(&self.file, &self.path, &what, offset, &buf)
    }

    /// Checks a read of `count` sectors from `first`: what it is called, offset and length.
    fn plan_read(&self, first: u64, count: u64) -> Result<(String, u64, usize), DiskError> {
        self.refuse_if_stuck()?;
        let what = format!("reading {count} sector(s) at sector {first}");
        let (offset, len) = self.check_range(first, count, &what)?;
        Ok((what, offset, len))
    }

    /// Checks a write of whole sectors from `first` and stages it in an aligned buffer
    /// (O_DIRECT needs one).
    fn plan_write(&self, first: u64, data: &[u8]) -> Result<(String, u64, AlignedBuf), DiskError> {
        self.refuse_if_stuck()?;
        let ss = self.sector_size.bytes();
        let count = (data.len() / ss) as u64;
        let what = format!("writing {count} sector(s) at sector {first}");
        if data.len() % ss != 0 || data.is_empty() {
            return Err(DiskError::Range {
                path: self.path.clone(),
                what,
                size_bytes: self.size_bytes,
            });
        }
        let (offset, len) = self.check_range(first, count, &what)?;
        let mut buf = AlignedBuf::zeroed(len);
        buf.as_mut_slice().copy_from_slice(data);
        Ok((what, offset, buf))
    }

    fn refuse_if_stuck(&self) -> Result<(), DiskError> {
        if self.is_stuck() {
            return Err(DiskError::Stuck {
                path: self.path.clone(),
            });
        }
        Ok(())
    }
}

impl BlockDevice for Disk {
    fn path(&self) -> &Path {
        &self.path
    }

    fn sector_size(&self) -> SectorSize {
        self.sector_size
    }

    fn read(&self, first: u64, count: u64, deadline: Instant) -> Result<Vec<u8>, DiskError> {
        let (what, offset, len) = self.plan_read(first, count)?;
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        let w = what.clone();
        with_deadline(&self.path, &what, deadline, &self.stuck, move || {
            read_sectors(&file, &path, &w, offset, len)
        })
    }

    fn write(&self, first: u64, data: &[u8], deadline: Instant) -> Result<(), DiskError> {
        let (what, offset, buf) = self.plan_write(first, data)?;
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        let w = what.clone();
        with_deadline(&self.path, &what, deadline, &self.stuck, move || {
            write_sectors(&file, &path, &w, offset, &buf)
        })
    }
}

/// One O_DIRECT read into an aligned buffer (blocks for as long as the device does).
fn read_sectors(
    file: &File,
    path: &Path,
    what: &str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, DiskError> {
    let mut buf = AlignedBuf::zeroed(len);
    file.read_exact_at(buf.as_mut_slice(), offset)
        .map_err(|e| io_err(path, what, e))?;
    Ok(buf.as_slice().to_vec())
}

/// One O_DIRECT write from an aligned buffer (blocks for as long as the device does).
fn write_sectors(
    file: &File,
    path: &Path,
    what: &str,
    offset: u64,
    buf: &AlignedBuf,
) -> Result<(), DiskError> {
    file.write_all_at(buf.as_slice(), offset)
        .map_err(|e| io_err(path, what, e))
}

/// An in-memory disk for tests of the SBD logic (and of the fencer's `sbd` device): it can be
/// made to fail or hang, like a real path can.
#[derive(Debug)]
pub struct MemDisk {
    path: PathBuf,
    sector_size: SectorSize,
    state: Mutex<MemState>,
}

#[derive(Debug, Default)]
struct MemState {
    bytes: Vec<u8>,
    fail: bool,
    hang: bool,
    writes_lost: bool,
}

impl MemDisk {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(path: &str, sector_size: SectorSize, sectors: u64) -> Self {
        MemDisk {
            path: path.into(),
            sector_size,
            state: Mutex::new(MemState {
                bytes: vec![0; (sectors as usize).saturating_mul(sector_size.bytes())],
                ..MemState::default()
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemState) -> R) -> R {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Makes every I/O fail with an I/O error (true) or succeed again (false).
    pub fn set_failing(&self, on: bool) {
        self.with(|s| s.fail = on);
    }

    /// Makes every I/O wait until its deadline and time out, as a dead path does.
    pub fn set_hanging(&self, on: bool) {
        self.with(|s| s.hang = on);
    }

    /// Makes writes report success but change nothing (a lying cache).
    pub fn set_losing_writes(&self, on: bool) {
        self.with(|s| s.writes_lost = on);
    }

    /// A copy of the whole disk.
    pub fn snapshot(&self) -> Vec<u8> {
        self.with(|s| s.bytes.clone())
    }

    fn gate(&self, what: &str, deadline: Instant) -> Result<(), DiskError> {
        let (fail, hang) = self.with(|s| (s.fail, s.hang));
        if hang {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return Err(DiskError::Timeout {
                path: self.path.clone(),
                what: what.into(),
                after_ms: 0,
            });
        }
        if fail {
            return Err(DiskError::Io {
                path: self.path.clone(),
                what: what.into(),
                reason: "injected I/O error".into(),
            });
        }
        Ok(())
    }

    fn range(&self, first: u64, len: usize, total: usize) -> Result<(usize, usize), DiskError> {
        let start = usize::try_from(first)
            .ok()
            .and_then(|f| f.checked_mul(self.sector_size.bytes()));
        match start {
            Some(s) if s.checked_add(len).is_some_and(|e| e <= total) => Ok((s, s + len)),
            _ => Err(DiskError::Range {
                path: self.path.clone(),
                what: format!("sector {first}"),
                size_bytes: total as u64,
            }),
        }
    }
}

impl BlockDevice for MemDisk {
    fn path(&self) -> &Path {
        &self.path
    }
    fn sector_size(&self) -> SectorSize {
        self.sector_size
    }
    fn read(&self, first: u64, count: u64, deadline: Instant) -> Result<Vec<u8>, DiskError> {
        self.gate("read", deadline)?;
        let len = (count as usize).saturating_mul(self.sector_size.bytes());
        let total = self.with(|s| s.bytes.len());
        let (a, b) = self.range(first, len, total)?;
        Ok(self.with(|s| s.bytes.get(a..b).map(<[u8]>::to_vec).unwrap_or_default()))
    }
    fn write(&self, first: u64, data: &[u8], deadline: Instant) -> Result<(), DiskError> {
        self.gate("write", deadline)?;
        let total = self.with(|s| s.bytes.len());
        let (a, b) = self.range(first, data.len(), total)?;
        self.with(|s| {
            if !s.writes_lost {
                if let Some(dst) = s.bytes.get_mut(a..b) {
                    dst.copy_from_slice(data);
                }
            }
        });
        Ok(())
    }
}

/// A deadline `timeout` from now.
pub fn deadline_in(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

#[cfg(test)]
mod ioctl_tests {
    use super::*;

    #[test]
    fn block_ioctl_numbers_are_the_kernels_on_this_architecture() {
        // <linux/fs.h> as the kernel headers expand it on x86-64 and arm64 (size_t is 8 bytes
        // on both); this test runs on arm64 under qemu-aarch64 in scripts/test.sh.
        assert_eq!(BLKSSZGET, 0x1268);
        assert_eq!(BLKGETSIZE64, 0x8008_1272);
    }
}
