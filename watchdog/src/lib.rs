//! Self-fencing: the hardware watchdog device, the SBD disk watcher that feeds it only while
//! the node is healthy ([`watcher`], with the argument why a delivered poison pill means a
//! dead target), the self-fence sink, and the SBD admin verbs.

pub mod daemon;
pub mod device;
pub mod sbd_admin;
pub mod self_fence;
pub mod watcher;

pub use device::{LinuxWatchdog, WatchdogDevice, WatchdogError, WatchdogInfo};
pub use self_fence::{RebootSink, SelfFence, SelfFenceAction};
pub use watcher::{watch, HealthRule, Outcome, WatchConfig, WatchDisk, WatchError};
