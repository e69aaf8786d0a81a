//! A cgroup v2 group per lab node: every process of the node lives in it, so "power off" is
//! one write to `cgroup.kill` (the kernel kills every member, also ones forking at that
//! moment) and "off" is checked by `cgroup.events` saying `populated 0`.
//!
//! The unified hierarchy is found in `/proc/self/mountinfo`: at `/sys/fs/cgroup` on a pure v2
//! system, at `/sys/fs/cgroup/unified` on a hybrid one (the machines Palisade is tested on:
//! v1 controllers plus a cgroup2 mount without controllers, which still has `cgroup.kill`,
//! `cgroup.procs` and `cgroup.events`). Where no cgroup2 is mounted at all, it is mounted
//! at [`PRIVATE_MOUNT`].

use super::NodeError;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the lab mounts a cgroup2 file system when the machine mounts none.
pub const PRIVATE_MOUNT: &str = "/run/palisade-lab/cgroup2";

/// How long a kill may take to empty a group (processes in uninterruptible I/O die when their
/// I/O completes).
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The mount point of the cgroup2 hierarchy, from `mountinfo` text (pure: field 5 is the mount
/// point, the file system type follows the ` - ` separator).
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup2 hierarchy's mount point, mounting one at [`PRIVATE_MOUNT`] if none is mounted.
pub fn hierarchy() -> Result<PathBuf, NodeError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| NodeError::io("read /proc/self/mountinfo", e))?;
    if let Some(p) = cgroup2_mount_in(&info) {
        return Ok(p);
    }
    std::fs::create_dir_all(PRIVATE_MOUNT)
        .map_err(|e| NodeError::io(format!("create {PRIVATE_MOUNT}"), e))?;
    super::run(
        std::process::Command::new("mount").args(["-t", "cgroup2", "none", PRIVATE_MOUNT]),
        "mount a cgroup2 file system (needs root and a kernel with cgroup v2)",
    )?;
    Ok(PathBuf::from(PRIVATE_MOUNT))
}

/// One cgroup v2 group, killed and removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs` as a C string, for the pre-exec hook (no allocation after fork).
    procs: CString,
}

impl Cgroup {
    /// Creates the group `name` directly under the hierarchy's root.
    pub fn create(name: &str) -> Result<Cgroup, NodeError> {
        let dir = hierarchy()?.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| NodeError::io(format!("create cgroup {}", dir.display()), e))?;
        if !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            return Err(NodeError::Unsupported(
                "this kernel's cgroup v2 has no cgroup.kill (Linux 5.14 or later is needed)".into(),
            ));
        }
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| NodeError::Unsupported("cgroup path holds a NUL byte".into()))?;
        Ok(Cgroup { dir, procs })
    }

    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `cgroup.procs` as a C string: a forked child writes `0` there to join the group before
    /// it executes anything.
    pub fn procs_file(&self) -> &CString {
        &self.procs
    }

    /// The processes in the group now.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether no live process is in the group (`cgroup.events`: `populated 0`).
    pub fn is_empty(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|e| e.lines().any(|l| l.trim() == "populated 0"))
            .unwrap_or(true)
    }

    /// Kills every process in the group and returns once the group is empty: by then none of
    /// them can issue another system call (a process in a direct write dies after that write
    /// completes, so no write of theirs lands later).
    pub fn kill(&self) -> Result<(), NodeError> {
        if self.is_empty() {
            return Ok(());
        }
        std::fs::write(self.dir.join("cgroup.kill"), "1")
            .map_err(|e| NodeError::io(format!("kill cgroup {}", self.dir.display()), e))?;
        let until = Instant::now() + KILL_WAIT;
        while !self.is_empty() {
            if Instant::now() > until {
                return Err(NodeError::KillTimeout {
                    cgroup: self.dir.clone(),
                    pids: self.pids(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.kill();
        // rmdir fails while a member lingers; a member in uninterruptible I/O goes soon.
        for _ in 0..200 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "lab node: cgroup {} could not be removed; remove it with rmdir",
            self.dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_mount_in_hybrid_and_pure_layouts() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      36 25 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure =
            "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount_in(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let v1 = "35 25 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        assert_eq!(cgroup2_mount_in(v1), None);
        assert_eq!(cgroup2_mount_in(""), None);
    }
}
