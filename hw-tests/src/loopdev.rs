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
        let mut cmd = Command::new("losetup");
        if let Some(ss) = sector_size {
            cmd.arg("--sector-size").arg(ss.to_string());
        }
        let out = cmd.arg("-f").arg("--show").arg(&file).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "losetup failed: {}; loop devices need root and the loop module",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
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

/// Whether loop devices can be made here (root, loop module); tests skip loudly otherwise.
pub fn available() -> bool {
    match LoopDevice::new(1, None) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP: no loop devices: {e}");
            false
        }
    }
}
