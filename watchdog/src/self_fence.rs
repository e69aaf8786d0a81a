//! Self-fencing: what the watcher does to its own node when a poison pill arrives or the node
//! is no longer healthy.
//!
//! There is exactly one implementation in this crate, [`RebootSink`], and the `palisade-sbd`
//! binary constructs it unconditionally: no option, environment variable or cargo feature of
//! the binary selects anything else. Tests implement [`SelfFence`] themselves (a recording sink
//! in `#[cfg(test)]` code here and in `hw-tests`' test files), so a recording sink is never
//! compiled into anything but a test binary.
//!
//! Whatever a sink does, the watcher never feeds the hardware watchdog again after calling
//! it: if the reboot itself fails, the hardware resets the node within its timeout.

use std::io::Write;

/// What a poison pill (or a failed health rule) asks the node to do to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfFenceAction {
    /// Reboot at once (`reset` pill, lost disks, failed health rule).
    Reboot,
    /// Power off (`off` pill).
    Off,
    /// Crash the kernel so kdump takes a dump (`crashdump` pill); a reboot without kdump.
    Crashdump,
}

impl SelfFenceAction {
    /// The sysrq key that does this (`Documentation/admin-guide/sysrq.rst`).
    pub fn sysrq_key(self) -> u8 {
        match self {
            SelfFenceAction::Reboot => b'b',
            SelfFenceAction::Off => b'o',
            SelfFenceAction::Crashdump => b'c',
        }
    }
}

/// Takes the node down. Implementations must not block on disks or the network: the node may
/// have lost both.
pub trait SelfFence {
    /// Takes the node down now for `reason`. The real sink does not return; if it does, the
    /// watcher keeps the hardware watchdog unfed.
    fn self_fence(&mut self, action: SelfFenceAction, reason: &str);
}

/// The real sink: sysrq (`/proc/sysrq-trigger`) first, then `reboot(2)`, as sbd does.
///
/// No `sync()` first: with the storage gone, a sync blocks forever and the node would stay up.
#[derive(Debug, Default)]
pub struct RebootSink;

const SYSRQ_TRIGGER: &str = "/proc/sysrq-trigger";

impl SelfFence for RebootSink {
    fn self_fence(&mut self, action: SelfFenceAction, reason: &str) {
        drivers::errln!("palisade-sbd: SELF-FENCING ({action:?}): {reason}");
        // Writing the trigger file works whatever kernel.sysrq says (that only gates the
        // keyboard); it is absent when the kernel lacks CONFIG_MAGIC_SYSRQ.
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(SYSRQ_TRIGGER) {
            let _ = f.write_all(&[action.sysrq_key()]);
        }
        let cmd = match action {
            SelfFenceAction::Off => libc::RB_POWER_OFF,
            SelfFenceAction::Reboot | SelfFenceAction::Crashdump => libc::RB_AUTOBOOT,
        };
        // SAFETY: reboot(2) takes no pointers; it either does not return or fails (EPERM
        // without CAP_SYS_BOOT), and the caller then stops feeding the hardware watchdog.
        let rc = unsafe { libc::reboot(cmd) };
        drivers::errln!(
            "palisade-sbd: reboot(2) failed ({}): the hardware watchdog will reset the node",
            if rc < 0 {
                std::io::Error::last_os_error().to_string()
            } else {
                "returned".into()
            }
        );
    }
}
