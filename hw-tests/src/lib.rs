//! Palisade test bench: simulated devices, harnesses for real third-party peers, and helpers
//! that the interop tests in `tests/` drive.
//!
//! - [`peers`]: real third-party peers (OpenIPMI `ipmi_sim`), started per test on loopback in
//!   a temporary directory and stopped on drop, also when the test panics.
//! - [`lab`]: our own simulated devices (IPMI and Redfish BMCs, SNMP PDUs) with fault knobs,
//!   for tests, the `palisade-lab` command and its demo.
//! - `demo` (feature `cli`): `palisade-lab demo`, the real `fenced` on a lab.
//! - [`daemon`]: a real `fenced run` child process, as an operator starts it.
//! - [`loopdev`]: real loop block devices that detach themselves on drop.
//! - [`throttle`]: make one block device (nearly) stop answering for the threads we choose,
//!   through the cgroup v1 blkio throttle, so deadline handling is tested on a real kernel path.
//! - [`vm`]: small qemu VMs (Debian kernel, busybox initramfs, serial console, QMP events)
//!   for real kernel devices the test machine must not use itself (watchdogs).
//! - [`gpiosim`]: real kernel GPIO lines in a VM (Linux's gpio-sim, built out of tree for the
//!   VM's kernel), for the relay driver.
//! - `faultydisk` (feature `fuse`): a loop device over a FUSE file that returns EIO, is slow
//!   or hangs on command, with direct I/O end to end.
//! - [`bins`]: where the workspace's binaries are.
//! - [`require`]: "this test needs X": a missing peer or kernel feature fails the test
//!   unless the developer allowed skips (`PALISADE_ALLOW_SKIP`); every skip is logged.
//! - [`node`]: lab nodes (network namespace + cgroup v2 group + optional mount namespace)
//!   that a simulated BMC really powers off, with nftables partitions and a lab network.
//! - [`cluster`]: cluster lab nodes, each running a real Corosync (knet, votequorum), with
//!   partitions, power off/on and a BMC power hook, for multi-node tests.
//! - [`browser`]: headless Chromium driven through ChromeDriver (WebDriver), for page tests.
//! - [`mass`]: mass fencing: a `palisade-lab ipmi` fleet, its `fenced` config, rounds of requests.
//! - [`drill`]: the failover drill: a stateful workload on a shared disk, a reference
//!   controller, and the checker that shows whether two copies ever wrote at once.
//! - [`pacemaker`]: a real Pacemaker 2.1 cluster on the cluster lab, with `fence_palisade`
//!   (and the node's `fenced`) as its STONITH device, failing over a writer on a shared volume.

pub mod bins;
pub mod browser;
pub mod cluster;
pub mod daemon;
#[cfg(feature = "cli")]
pub mod demo;
pub mod drill;
#[cfg(feature = "fuse")]
pub mod faultydisk;
pub mod gpiosim;
pub mod lab;
pub mod loopdev;
pub mod mass;
pub mod node;
pub mod pacemaker;
pub mod peers;
pub mod require;
pub mod throttle;
pub mod vm;

/// Whether `name` is `PREFIX<pid>-…` (or `PREFIX<pid>`) for a process that no longer exists:
/// how the labs recognise cgroups and namespaces a killed test left behind (its drop guards
/// never ran). `false` for any other name.
pub(crate) fn owner_is_gone(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}
