//! Self-fencing: the hardware watchdog device, the SBD disk watcher that feeds it only while
//! the node is healthy ([`watcher`], with the argument why a delivered poison pill means a
//! dead target), the self-fence sink, and the SBD admin verbs. The watcher's time is a
//! [`clock::Clock`]; feature `test-support` adds its virtual-time test doubles
//! (`test_support`, for this crate's tests and `hw-tests`).

pub mod clock;
pub mod daemon;
pub mod device;
pub mod sbd_admin;
pub mod self_fence;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod watcher;

pub use clock::{Clock, SystemClock};
pub use daemon::DaemonError;
pub use device::{LinuxWatchdog, WatchdogDevice, WatchdogError, WatchdogInfo};
pub use self_fence::{RebootSink, SelfFence, SelfFenceAction};
pub use watcher::{
    watch, HealthRule, Outcome, ServantError, Unhealthy, WatchConfig, WatchDisk, WatchError,
};
