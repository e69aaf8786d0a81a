//! The Palisade test bench: shared helpers for interop tests against real peers.
//!
//! - [`loopdev`]: real loop block devices that detach themselves on drop.
//! - [`throttle`]: make one block device (nearly) stop answering for the threads we choose,
//!   through the cgroup v1 blkio throttle, so deadline handling is tested on a real kernel path.
//! - [`bins`]: where the workspace's binaries are.

pub mod bins;
pub mod loopdev;
pub mod throttle;
