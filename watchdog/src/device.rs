//! The kernel watchdog device (`/dev/watchdog*`, Documentation/watchdog/watchdog-api.rst).
//!
//! Once opened, the hardware resets the node unless it is fed within the timeout. Closing the
//! device disarms it only after the "magic close" byte `V` was written, and only on drivers
//! without `nowayout`; we write it only on a clean, deliberate exit, never on an error path,
//! so a crash of the watcher leaves the watchdog armed and the node is reset.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What the driver says about itself (`struct watchdog_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogInfo {
    /// Driver identity, e.g. `i6300ESB timer`.
    pub identity: String,
    /// `WDIOF_*` capability flags.
    pub options: u32,
    /// Firmware version.
    pub firmware_version: u32,
}

/// `WDIOF_SETTIMEOUT`: the timeout can be changed.
pub const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// `WDIOF_MAGICCLOSE`: the driver honours the magic close byte.
pub const WDIOF_MAGICCLOSE: u32 = 0x0100;
/// `WDIOF_KEEPALIVEPING`: the keepalive ioctl is supported.
pub const WDIOF_KEEPALIVEPING: u32 = 0x8000;

/// A watchdog error.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The device could not be opened.
    #[error("cannot open watchdog {path}: {source}; check the board profile's device and that the driver module is loaded")]
    Open {
        /// The device node.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An ioctl failed.
    #[error("watchdog {path}: {what} failed: {source}")]
    Ioctl {
        /// The device node.
        path: PathBuf,
        /// Which request.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A hardware watchdog.
pub trait WatchdogDevice {
    /// The driver's identity and capabilities.
    fn info(&self) -> Result<WatchdogInfo, WatchdogError>;
    /// Sets the timeout; returns the timeout the driver actually chose.
    fn set_timeout(&mut self, seconds: u32) -> Result<u32, WatchdogError>;
    /// The current timeout.
    fn timeout(&self) -> Result<u32, WatchdogError>;
    /// Feeds the watchdog.
    fn keepalive(&mut self) -> Result<(), WatchdogError>;
    /// Disarms the watchdog on a clean exit (magic close). Never call it on an error path.
    fn disarm(self) -> Result<(), WatchdogError>;
}

// ioctl request numbers from <linux/watchdog.h>: _IOR/_IOWR('W', nr, type), computed as
// dir << 30 | size << 16 | 'W' << 8 | nr (asm-generic/ioctl.h).
// That is the encoding on x86-64 and arm64; powerpc, mips and sparc place the direction bits
// differently, so other architectures must not build with these numbers.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "watchdog ioctls: add this architecture's ioctl encoding (asm-generic covers x86-64 and arm64)"
);
const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | ((b'W' as u64) << 8) | nr
}
const IOC_READ: u64 = 2;
const IOC_READ_WRITE: u64 = 3;
const WATCHDOG_INFO_SIZE: u64 = 40;
/// `WDIOC_GETSUPPORT`
pub const WDIOC_GETSUPPORT: u64 = ioc(IOC_READ, 0, WATCHDOG_INFO_SIZE);
/// `WDIOC_KEEPALIVE`
pub const WDIOC_KEEPALIVE: u64 = ioc(IOC_READ, 5, 4);
/// `WDIOC_SETTIMEOUT`
pub const WDIOC_SETTIMEOUT: u64 = ioc(IOC_READ_WRITE, 6, 4);
/// `WDIOC_GETTIMEOUT`
pub const WDIOC_GETTIMEOUT: u64 = ioc(IOC_READ, 7, 4);

#[repr(C)]
struct RawInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

/// Decodes a `struct watchdog_info` (pure, for tests and for the ioctl result).
pub fn decode_info(options: u32, firmware_version: u32, identity: &[u8]) -> WatchdogInfo {
    let end = identity
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(identity.len());
    WatchdogInfo {
        identity: String::from_utf8_lossy(identity.get(..end).unwrap_or_default()).into_owned(),
        options,
        firmware_version,
    }
}

/// A Linux `/dev/watchdog*` device. Opening it arms the watchdog.
pub struct LinuxWatchdog {
    file: File,
    path: PathBuf,
}

impl LinuxWatchdog {
    /// Opens (and so arms) the device.
    pub fn open(path: &Path) -> Result<Self, WatchdogError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| WatchdogError::Open {
                path: path.into(),
                source,
            })?;
        Ok(LinuxWatchdog {
            file,
            path: path.into(),
        })
    }

    fn ioctl_int(
        &self,
        what: &'static str,
        req: u64,
        value: &mut libc::c_int,
    ) -> Result<(), WatchdogError> {
        // SAFETY: `req` is a watchdog ioctl that reads or writes exactly one c_int, and `value`
        // is a valid, exclusive pointer to one for the duration of the call.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), req as _, value as *mut libc::c_int) };
        if rc < 0 {
            return Err(WatchdogError::Ioctl {
                path: self.path.clone(),
                what,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl WatchdogDevice for LinuxWatchdog {
    fn info(&self) -> Result<WatchdogInfo, WatchdogError> {
        let mut raw = RawInfo {
            options: 0,
            firmware_version: 0,
            identity: [0; 32],
        };
        // SAFETY: WDIOC_GETSUPPORT writes one `struct watchdog_info`, which `RawInfo` mirrors
        // field for field (#[repr(C)], 40 bytes).
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                WDIOC_GETSUPPORT as _,
                &mut raw as *mut RawInfo,
            )
        };
        if rc < 0 {
            return Err(WatchdogError::Ioctl {
                path: self.path.clone(),
                what: "WDIOC_GETSUPPORT",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(decode_info(
            raw.options,
            raw.firmware_version,
            &raw.identity,
        ))
    }

    fn set_timeout(&mut self, seconds: u32) -> Result<u32, WatchdogError> {
        let mut v = seconds.min(i32::MAX as u32) as libc::c_int;
        self.ioctl_int("WDIOC_SETTIMEOUT", WDIOC_SETTIMEOUT, &mut v)?;
        Ok(v.max(0) as u32)
    }

    fn timeout(&self) -> Result<u32, WatchdogError> {
        let mut v: libc::c_int = 0;
        self.ioctl_int("WDIOC_GETTIMEOUT", WDIOC_GETTIMEOUT, &mut v)?;
        Ok(v.max(0) as u32)
    }

    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        let mut v: libc::c_int = 0;
        self.ioctl_int("WDIOC_KEEPALIVE", WDIOC_KEEPALIVE, &mut v)
    }

    fn disarm(mut self) -> Result<(), WatchdogError> {
        self.file
            .write_all(b"V")
            .map_err(|source| WatchdogError::Ioctl {
                path: self.path.clone(),
                what: "magic close",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_watchdog_h() {
        // Values as the kernel headers expand them on x86-64 and arm64.
        assert_eq!(WDIOC_GETSUPPORT, 0x8028_5700);
        assert_eq!(WDIOC_KEEPALIVE, 0x8004_5705);
        assert_eq!(WDIOC_SETTIMEOUT, 0xC004_5706);
        assert_eq!(WDIOC_GETTIMEOUT, 0x8004_5707);
        assert_eq!(std::mem::size_of::<RawInfo>() as u64, WATCHDOG_INFO_SIZE);
    }

    #[test]
    fn identity_stops_at_nul_and_survives_garbage() {
        let mut id = [0u8; 32];
        id[..13].copy_from_slice(b"i6300ESB time");
        assert_eq!(
            decode_info(WDIOF_SETTIMEOUT, 0, &id).identity,
            "i6300ESB time"
        );
        assert_eq!(decode_info(0, 0, &[0xff; 32]).identity.chars().count(), 32);
    }

    #[test]
    fn opening_a_missing_device_says_what_to_check() {
        let e = LinuxWatchdog::open(Path::new("/nonexistent/watchdog9"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("driver module is loaded"));
    }
}
