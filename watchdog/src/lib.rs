//! Self-fencing: the hardware watchdog device and, later, the SBD disk watcher that feeds it
//! only while the node is healthy.

pub mod device;
pub mod sbd_admin;

pub use device::{LinuxWatchdog, WatchdogDevice, WatchdogError, WatchdogInfo};
