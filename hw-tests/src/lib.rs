//! Palisade test bench: harnesses for real third-party peers (and, later, simulated devices)
//! that the interop tests in `tests/` drive.
//!
//! Every harness starts its peer on loopback in a temporary directory and stops it on drop,
//! also when the test panics.

pub mod peers;
