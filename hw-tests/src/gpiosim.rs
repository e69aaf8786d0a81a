//! Real kernel GPIO lines without GPIO hardware: Linux's `gpio-sim` driver, built out of tree
//! for the VM's kernel by `scripts/build-gpio-sim.sh` (Debian's kernels do not build it, and
//! lack the irq_sim helper it needs, which the module brings along), cached under the target
//! directory, and set up in the guest through configfs.
//!
//! In the guest, a chip's lines are driven from the "outside" through sysfs:
//! `sim_gpioN/value` reads what a consumer set on an output line, and `sim_gpioN/pull`
//! (`pull-up`, `pull-down`) sets what an input line reads, so a test plays the node's power
//! supply (a sense line that follows the relay, or one that does not).

use crate::vm::{Kernel, VmError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The module's file name (the script builds it under this name).
pub const MODULE: &str = "palisade_gpio_sim.ko";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-gpio-sim.sh")
}

/// The kernel release of `kernel` (`6.1.0-57-amd64`), from its module tree's name.
pub fn release(kernel: &Kernel) -> String {
    kernel
        .modules
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn series(release: &str) -> String {
    release.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The test's requirements for building the module (on top of [`crate::vm::require`]):
/// the kernel's headers and sources; `false` means skip.
pub fn require(kernel: &Kernel) -> bool {
    use crate::require::needs;
    let rel = release(kernel);
    let headers = format!("/usr/src/linux-headers-{rel}/Makefile");
    let source = format!("/usr/src/linux-source-{}.tar.xz", series(&rel));
    let exists = |p: &str| {
        if Path::new(p).exists() {
            Ok(())
        } else {
            Err(format!("no {p}"))
        }
    };
    needs(
        "linux-headers",
        &format!("Debian package linux-headers-{rel}"),
        exists(&headers),
    ) && needs(
        "linux-source",
        &format!("Debian package linux-source-{}", series(&rel)),
        exists(&source),
    )
}

/// The built module for `kernel`: built on first use (about 30 s, most of it reading the
/// source archive), then reused from `target/gpio-sim/RELEASE/` while the VM kernel, the
/// headers and the source stay the same Debian version (the script checks).
pub fn module(kernel: &Kernel) -> Result<PathBuf, VmError> {
    let rel = release(kernel);
    let dir = crate::bins::target_dir().join("gpio-sim").join(&rel);
    let out = Command::new("bash")
        .arg(script())
        .arg(&rel)
        .arg(&dir)
        .output()
        .map_err(|e| VmError::Step {
            what: "running scripts/build-gpio-sim.sh".into(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(VmError::Step {
            what: format!("building gpio-sim for {rel}"),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(dir.join(MODULE))
}

/// `/init` lines that load configfs and the module and make one chip `NAME` with `lines`
/// lines, all inputs pulled down; `/dev/gpiochip0` then exists (the VM has no other GPIO
/// chip). The module must be in the initramfs at `/lib/modules/` + [`MODULE`], and
/// configfs.ko (from the kernel's `fs/configfs/`) at `/lib/modules/configfs.ko`.
pub fn init_lines(name: &str, lines: u32) -> String {
    format!(
        "insmod /lib/modules/configfs.ko\n\
         insmod /lib/modules/{MODULE}\n\
         mount -t configfs none /sys/kernel/config\n\
         mkdir -p /sys/kernel/config/gpio-sim/{name}/bank0\n\
         echo {lines} > /sys/kernel/config/gpio-sim/{name}/bank0/num_lines\n\
         echo 1 > /sys/kernel/config/gpio-sim/{name}/live\n"
    )
}

/// The sysfs directory of line `offset` of the first simulated chip, in the guest.
pub fn line_dir(offset: u32) -> String {
    format!("/sys/devices/platform/gpio-sim.0/gpiochip0/sim_gpio{offset}")
}

/// The configfs module path relative to the kernel's module tree, for
/// [`crate::vm::Initramfs::add_modules`].
pub const CONFIGFS: &str = "fs/configfs/configfs.ko";
