//! A disk that fails on command: a FUSE file (served from memory by this process) under a loop
//! device attached with `losetup --direct-io=on`, the file opened with FUSE direct I/O. Both
//! are needed: with either page cache in the way, a "frozen" disk keeps answering reads from
//! memory and a test passes falsely. The attachment is checked (`loop/dio` = 1).
//!
//! Modes: healthy, every I/O fails with EIO, every I/O is delayed, every I/O hangs (requests
//! are held unanswered). Teardown aborts the FUSE connection first
//! (`/sys/fs/fuse/connections/N/abort`): every held request then fails at once, so no reader
//! is left in uninterruptible sleep, then detaches the loop device and unmounts.

use fuser::{
    consts::FOPEN_DIRECT_IO, FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData,
    ReplyEntry, ReplyOpen, ReplyWrite, Request,
};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How the disk answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Normally.
    Healthy,
    /// Every read and write fails with EIO.
    Error,
    /// Every read and write is answered after this long.
    Delay(Duration),
    /// Nothing is answered (until the mode changes or the connection is aborted).
    Hang,
}

enum Held {
    Read(ReplyData),
    Write(ReplyWrite),
}

struct State {
    data: Vec<u8>,
    fault: Fault,
    held: Vec<Held>,
}

struct FaultyFs {
    state: Arc<Mutex<State>>,
}

const DISK_INO: u64 = 2;
const TTL: Duration = Duration::ZERO;

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    match s.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn attr(ino: u64, size: u64) -> FileAttr {
    let t = SystemTime::UNIX_EPOCH;
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: if ino == DISK_INO {
            FileType::RegularFile
        } else {
            FileType::Directory
        },
        perm: if ino == DISK_INO { 0o600 } else { 0o700 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 512,
        flags: 0,
    }
}

impl Filesystem for FaultyFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == fuser::FUSE_ROOT_ID && name == "disk" {
            let size = lock(&self.state).data.len() as u64;
            reply.entry(&TTL, &attr(DISK_INO, size), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let size = lock(&self.state).data.len() as u64;
        match ino {
            fuser::FUSE_ROOT_ID | DISK_INO => reply.attr(&TTL, &attr(ino, size)),
            _ => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, _ino: u64, _flags: i32, reply: ReplyOpen) {
        // FOPEN_DIRECT_IO: the kernel sends every read to us instead of its page cache.
        reply.opened(0, FOPEN_DIRECT_IO);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let mut s = lock(&self.state);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(s.data.len());
        let end = start.saturating_add(size as usize).min(s.data.len());
        match s.fault {
            Fault::Healthy => reply.data(s.data.get(start..end).unwrap_or_default()),
            Fault::Error => reply.error(libc::EIO),
            Fault::Hang => s.held.push(Held::Read(reply)),
            Fault::Delay(d) => {
                let bytes = s.data.get(start..end).unwrap_or_default().to_vec();
                std::thread::spawn(move || {
                    std::thread::sleep(d);
                    reply.data(&bytes);
                });
            }
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = lock(&self.state);
        match s.fault {
            Fault::Error => return reply.error(libc::EIO),
            Fault::Hang => return s.held.push(Held::Write(reply)),
            Fault::Healthy | Fault::Delay(_) => {}
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(data.len());
        match s.data.get_mut(start..end) {
            Some(dst) => dst.copy_from_slice(data),
            None => return reply.error(libc::ENOSPC),
        }
        let n = data.len() as u32;
        if let Fault::Delay(d) = s.fault {
            std::thread::spawn(move || {
                std::thread::sleep(d);
                reply.written(n);
            });
        } else {
            reply.written(n);
        }
    }
}

/// A loop device over a FUSE file that fails on command; torn down on drop.
pub struct FaultyDisk {
    state: Arc<Mutex<State>>,
    loop_path: PathBuf,
    abort: Option<PathBuf>,
    session: Option<fuser::BackgroundSession>,
    mount: tempfile::TempDir,
}

impl std::fmt::Debug for FaultyDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyDisk")
            .field("loop", &self.loop_path)
            .field("mount", &self.mount.path())
            .finish()
    }
}

fn other(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// The test's requirements for faulty disks: FUSE (`/dev/fuse` opens) and loop devices; each
/// missing one fails the test unless skips are allowed ([`crate::require`]); `false` means skip.
pub fn require() -> bool {
    crate::require::needs(
        "fuse",
        "the fuse kernel module (modprobe fuse) and /dev/fuse; a container needs --device /dev/fuse",
        fuse_device(),
    ) && crate::loopdev::require()
}

/// `/dev/fuse` is the FUSE character device and opens for reading and writing (as a mount does).
fn fuse_device() -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata("/dev/fuse").map_err(|e| format!("/dev/fuse: {e}"))?;
    if !meta.file_type().is_char_device() {
        return Err("/dev/fuse is not a character device".into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))
}

impl FaultyDisk {
    /// A healthy zeroed disk of `size_mib` MiB at a new loop device (root, /dev/fuse, loop).
    pub fn new(size_mib: usize) -> io::Result<FaultyDisk> {
        let state = Arc::new(Mutex::new(State {
            data: vec![0; size_mib * 1024 * 1024],
            fault: Fault::Healthy,
            held: Vec::new(),
        }));
        let mount = tempfile::tempdir()?;
        let session = fuser::spawn_mount2(
            FaultyFs {
                state: Arc::clone(&state),
            },
            mount.path(),
            &[
                MountOption::FSName("palisade-faulty".into()),
                MountOption::RW,
            ],
        )
        .map_err(|e| {
            other(
                "mounting the FUSE file system (needs root and /dev/fuse)",
                e,
            )
        })?;
        let mut me = FaultyDisk {
            state,
            loop_path: PathBuf::new(),
            abort: None,
            session: Some(session),
            mount,
        };
        me.abort = Some(connection_abort_file(me.mount.path())?);
        let file = me.mount.path().join("disk");
        let out = Command::new("losetup")
            .args(["--direct-io=on", "-f", "--show"])
            .arg(&file)
            .output()?;
        if !out.status.success() {
            return Err(other(
                "losetup --direct-io=on",
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        me.loop_path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let name = me
            .loop_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dio = std::fs::read_to_string(format!("/sys/block/{name}/loop/dio"))?;
        if dio.trim() != "1" {
            return Err(other(
                "loop device",
                "direct I/O was not enabled (the page cache would hide faults)",
            ));
        }
        Ok(me)
    }

    /// The loop device, e.g. `/dev/loop5`.
    pub fn path(&self) -> &Path {
        &self.loop_path
    }

    /// Changes how the disk answers; requests held by [`Fault::Hang`] are answered (or failed)
    /// by the new mode.
    pub fn set(&self, fault: Fault) {
        let mut s = lock(&self.state);
        s.fault = fault;
        if fault != Fault::Hang {
            for h in s.held.drain(..) {
                match h {
                    // A held request is failed rather than replayed: its data may be stale.
                    Held::Read(r) => r.error(libc::EIO),
                    Held::Write(r) => r.error(libc::EIO),
                }
            }
        }
    }

    /// `MAJ:MIN` of the loop device.
    pub fn maj_min(&self) -> io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.loop_path)?.rdev();
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
        Ok(format!("{major}:{minor}"))
    }
}

/// `/sys/fs/fuse/connections/N/abort` for the FUSE mount at `mount` (N is the minor number
/// of the mount's anonymous device).
fn connection_abort_file(mount: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(mount)?.dev();
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let p = PathBuf::from(format!("/sys/fs/fuse/connections/{minor}/abort"));
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("fusectl"))
        })
        .unwrap_or(false);
    if !mounted {
        // systemd mounts it on most systems (sys-fs-fuse-connections.mount); containers and
        // minimal hosts do not.
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"])
            .status();
    }
    if p.exists() {
        Ok(p)
    } else {
        Err(other(
            "finding the FUSE connection",
            format!("{} missing (is fusectl mounted?)", p.display()),
        ))
    }
}

impl Drop for FaultyDisk {
    fn drop(&mut self) {
        // Abort first: held and future requests fail at once, so nothing stays in D state.
        if let Some(a) = &self.abort {
            let _ = std::fs::write(a, "1");
        }
        lock(&self.state).held.clear();
        if !self.loop_path.as_os_str().is_empty() {
            let _ = Command::new("losetup")
                .arg("-d")
                .arg(&self.loop_path)
                .status();
        }
        drop(self.session.take());
        // The session's own unmount can fail on an aborted connection: detach lazily.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
