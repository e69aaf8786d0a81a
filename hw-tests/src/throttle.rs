//! A block device that stops answering, made with the cgroup v1 blkio throttle: reads of the
//! device by tasks in the group are limited to a few bytes per second, so a 512-byte O_DIRECT
//! read sleeps in the kernel (uninterruptibly) for minutes, as on a dead SAN path. Device-mapper
//! (`dmsetup` error/delay targets) is not available on these machines; this is. Dropping the
//! guard lifts the limit, which lets the stuck I/O complete.

use std::io;
use std::path::PathBuf;

const ROOT: &str = "/sys/fs/cgroup/blkio";

/// A blkio cgroup that throttles reads of one device.
#[derive(Debug)]
pub struct Throttle {
    dir: PathBuf,
    maj_min: String,
}

impl Throttle {
    /// Creates a group limiting reads of `maj_min` to `bytes_per_sec`.
    pub fn new(maj_min: &str, bytes_per_sec: u64) -> io::Result<Self> {
        remove_stale_groups();
        let dir = PathBuf::from(ROOT).join(format!(
            "palisade-throttle-{}-{}",
            std::process::id(),
            maj_min.replace(':', "_")
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("blkio.throttle.read_bps_device"),
            format!("{maj_min} {bytes_per_sec}"),
        )?;
        Ok(Throttle {
            dir,
            maj_min: maj_min.into(),
        })
    }

    /// Changes the group's read limit (0 lifts it): a test can let a disk work first and
    /// freeze it later for threads already in the group.
    pub fn limit(&self, bytes_per_sec: u64) -> io::Result<()> {
        std::fs::write(
            self.dir.join("blkio.throttle.read_bps_device"),
            format!("{} {bytes_per_sec}", self.maj_min),
        )
    }

    /// Moves the calling thread into the group (threads it spawns later inherit it).
    pub fn enter_this_thread(&self) -> io::Result<()> {
        // The thread id, from /proc/thread-self (no libc call needed).
        let tid = std::fs::read_link("/proc/thread-self")?
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .unwrap_or_default();
        std::fs::write(self.dir.join("tasks"), tid)
    }

    /// Moves the calling thread back to the root group.
    pub fn leave_this_thread(&self) -> io::Result<()> {
        let tid = std::fs::read_link("/proc/thread-self")?
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .unwrap_or_default();
        std::fs::write(PathBuf::from(ROOT).join("tasks"), tid)
    }

    /// A shell prefix that runs a command inside the group: `sh -c '<prefix> exec CMD'`.
    pub fn shell_prefix(&self) -> String {
        format!("echo $$ > {}/cgroup.procs;", self.dir.display())
    }

    /// The test's requirement of the cgroup v1 blkio throttle: missing, it fails the test
    /// unless skips are allowed ([`crate::require`]); `false` means skip.
    pub fn require() -> bool {
        let file = std::path::Path::new(ROOT).join("blkio.throttle.read_bps_device");
        crate::require::needs(
            "blkio-throttle",
            "a kernel with the cgroup v1 blkio controller mounted at /sys/fs/cgroup/blkio",
            if file.exists() {
                Ok(())
            } else {
                Err(format!("{} does not exist", file.display()))
            },
        )
    }
}

/// Removes the groups of test processes that are gone: a test killed by its harness (a
/// timeout, a panic while a read was stuck) never ran [`Drop`], and a cgroup directory outlives
/// its processes. A group still holding tasks is left alone (its removal fails).
fn remove_stale_groups() {
    let Ok(groups) = std::fs::read_dir(ROOT) else {
        return;
    };
    for g in groups.flatten() {
        if crate::owner_is_gone(&g.file_name().to_string_lossy(), "palisade-throttle-") {
            let _ = std::fs::remove_dir(g.path());
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        // Writing 0 removes the limit; queued bios are then dispatched and complete.
        let _ = std::fs::write(
            self.dir.join("blkio.throttle.read_bps_device"),
            format!("{} 0", self.maj_min),
        );
        // The group can only go once its tasks left it: a thread whose read was abandoned
        // stays until that read completes (now quickly, the limit being gone).
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
