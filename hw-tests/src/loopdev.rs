//! Loop devices over sparse files, detached in `Drop` even when a test fails (a leaked loop
//! device survives the test process and eventually exhausts `/dev/loop*`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device attached to a sparse file in its own temporary directory.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    /// Creates a `size_mib` MiB sparse file and attaches it (`losetup -f --show`), with the
    /// given logical sector size (512 or 4096) if any.
    pub fn new(size_mib: u64, sector_size: Option<u32>) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("disk");
        std::fs::File::create(&file)?.set_len(size_mib * 1024 * 1024)?;
        let path = attach(&file, sector_size)?;
        Ok(LoopDevice { path, _dir: dir })
    }

    /// Detaches the device and attaches the same file again read-only (`losetup -r`): a disk
    /// that opens for reading only, so writes fail. (Not `blockdev --setro`: that flag
    /// outlives the attachment and would make the next test's loop device read-only.)
    pub fn reattach_read_only(&mut self) -> io::Result<()> {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
        let file = self._dir.path().join("disk");
        let out = Command::new("losetup")
            .args(["-r", "-f", "--show"])
            .arg(&file)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "losetup -r failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        self.path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(())
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device node as a string (for command lines).
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// `MAJ:MIN` of the device, as cgroup files want it.
    pub fn maj_min(&self) -> io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.path)?.rdev();
        // dev_t decoding as glibc's gnu_dev_major/gnu_dev_minor do it.
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
        Ok(format!("{major}:{minor}"))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// The file beside a test's backing file that names the process owning the loop device.
const OWNER: &str = "palisade-test-owner";

/// Attaches `file` to a free loop device (`losetup -f --show`) and returns the device node.
/// The caller detaches it (as [`LoopDevice`]'s `Drop` does). An owner mark beside the file lets
/// a later test detach it if this process dies without running its `Drop` (nextest kills a test
/// that runs out of time with SIGKILL): see [`sweep_orphans`], which runs first.
pub fn attach(file: &Path, sector_size: Option<u32>) -> io::Result<PathBuf> {
    sweep_orphans();
    if let Some(dir) = file.parent() {
        std::fs::write(
            dir.join(OWNER),
            owner_mark(std::process::id()).unwrap_or_default(),
        )?;
    }
    let mut cmd = Command::new("losetup");
    if let Some(ss) = sector_size {
        cmd.arg("--sector-size").arg(ss.to_string());
    }
    let out = cmd.arg("-f").arg("--show").arg(file).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "losetup failed: {}; loop devices need root and the loop module",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `PID STARTTIME` of a live process (the start time tells a reused pid apart), if it runs.
fn owner_mark(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime) counts from after the `(comm)` field, which may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Detaches loop devices whose backing file carries an owner mark of a process that is gone,
/// and removes their directories (unmounting a test's private tmpfs first). Devices of other
/// tests that still run, and devices nobody marked, are left alone.
pub fn sweep_orphans() {
    let Ok(blocks) = std::fs::read_dir("/sys/block") else {
        return;
    };
    for b in blocks.flatten() {
        let name = b.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(b.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = PathBuf::from(backing.trim());
        let Some(dir) = backing.parent() else {
            continue;
        };
        let Ok(mark) = std::fs::read_to_string(dir.join(OWNER)) else {
            continue;
        };
        let pid = mark.split_whitespace().next().and_then(|p| p.parse().ok());
        if pid.and_then(owner_mark).as_deref() == Some(mark.trim()) {
            continue;
        }
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(format!("/dev/{name}"))
            .status();
        let _ = Command::new("umount")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The test's requirement of loop devices (root, the loop module), checked by making one: a
/// missing one fails the test unless skips are allowed ([`crate::require`]); `false` means skip.
pub fn require() -> bool {
    crate::require::needs(
        "loop-devices",
        "root and the loop kernel module: modprobe loop",
        LoopDevice::new(1, None)
            .map(drop)
            .map_err(|e| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(dev: &Path) -> bool {
        let name = dev.file_name().unwrap().to_string_lossy().into_owned();
        Path::new("/sys/block")
            .join(name)
            .join("loop/backing_file")
            .exists()
    }

    #[test]
    fn orphans_of_dead_owners_are_swept_and_live_ones_kept() {
        if !require() {
            return;
        }
        let live = LoopDevice::new(1, None).unwrap();
        // A device as a SIGKILLed test leaves it: attached, marked by a process that is gone.
        let dir = tempfile::tempdir().unwrap().keep();
        let file = dir.join("disk");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success());
        let orphan = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        std::fs::write(dir.join(OWNER), "4194303 1").unwrap();
        assert!(attached(&orphan));

        sweep_orphans();
        assert!(!attached(&orphan), "{} still attached", orphan.display());
        assert!(!dir.exists(), "its directory is removed");
        assert!(attached(live.path()), "a running owner's device is kept");
    }
}
