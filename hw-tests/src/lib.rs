//! Palisade test bench: harnesses for real third-party peers and simulated devices that the
//! interop tests in `tests/` drive.
//!
//! - [`peers`]: real third-party peers (OpenIPMI `ipmi_sim`), started per test on loopback in
//!   a temporary directory and stopped on drop, also when the test panics.
//! - [`lab`]: our own simulated devices (IPMI and Redfish BMCs) with fault knobs, for tests, the
//!   `palisade-lab` command and the daemon's in-process demo.

pub mod lab;
pub mod peers;
