//! Redfish fencing over HTTPS: [`RedfishDevice`], the [`crate::PowerDevice`] for a BMC that
//! speaks DMTF Redfish (DSP0266), and its [`RedfishConfig`].
//!
//! - [`model`]: serde types of the resources the fencing path reads (ServiceRoot, the Systems
//!   collection, ComputerSystem with its Reset action, ActionInfo, Task, error bodies).
//! - [`tls`]: how the BMC's certificate is verified (system roots, CA file, pinned SHA-256
//!   fingerprint, or explicitly none).
//! - [`device`]: discovery, sessions, the reset and its task, the power state read back.
//!
//! # Why `reqwest` and not a Redfish crate
//! The `redfish` crates on crates.io were weighed: `redfish` (Rust bindings generated from
//! the DMTF schemas) and `libredfish` (a vendor-oriented client) both pull in a large schema
//! model or a fixed HTTP/TLS stack (native-tls or default reqwest features), neither exposes
//! connect/request/total timeouts per call together with a pinned-fingerprint verifier, and
//! the fencing path reads only six resources. A dozen small serde structs are cheaper to
//! audit than a generated schema tree, and tolerant of BMCs that send `null` where the schema
//! says a value (we must read those as "unknown", never as "off").
//!
//! `reqwest` 0.12 with default features off and `rustls-tls-native-roots` (rustls on `ring`:
//! no OpenSSL, no aws-lc C build, HTTP/1 only) is the HTTP client. fenced already links hyper
//! (its API server), so reqwest adds mostly rustls and ring; measured cost: see the
//! `hw-tests` README figures and the branch report (about +1 MiB of release binary and well
//! under 1 MiB of idle RSS, since nothing is allocated until a device is called).
//!
//! # Why not ForceRestart or PowerCycle
//! A reboot is off, confirm off, on (see [`crate::power`]): a restart or cycle cannot be
//! confirmed, since `PowerState` reads `On` before and after.

pub mod device;
pub mod model;
pub mod tls;

pub use device::{power_state_of, AuthMode, RedfishConfig, RedfishDevice};
pub use tls::TlsVerify;
