//! Redfish fencing over HTTPS: [`RedfishDevice`], the [`crate::PowerDevice`] for a BMC that
//! speaks DMTF Redfish (DSP0266), and its [`RedfishConfig`].
//!
//! - [`model`]: serde types of the resources the fencing path reads (ServiceRoot, the Systems
//!   collection, ComputerSystem with its Reset action, ActionInfo, Task, error bodies).
//! - [`tls`]: how the BMC's certificate is verified (system roots, CA file, pinned SHA-256
//!   fingerprint, or explicitly none).
//! - [`device`]: discovery, sessions, the reset and its task, the power state read back.
//! - [`error`]: [`RedfishError`], every reason a call fails, with the service, the request and
//!   the HTTP status; it becomes a [`crate::DeviceError`] at the [`crate::PowerDevice`] edge.
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
//! no OpenSSL, no aws-lc C build, HTTP/1 only) is the HTTP client. Measured cost in fenced
//! (release, `fenced run` with 3 targets, VmRSS 3 s after start, median of 5): the binary grew
//! from 4.33 MB to 6.60 MB and idle RSS from 6.8 MiB to 8.2 MiB with the default `demo`
//! feature (which also links the Redfish simulator: hyper server, tokio-rustls, rcgen); without
//! the demo, 5.93 MB and 7.5 MiB (IPMI targets) / 7.9 MiB (Redfish targets). Almost all of the
//! growth is file-backed (RssFile: binary pages), not heap: a device allocates nothing until
//! called. hyper + tokio-rustls directly would save reqwest, tower and url (a few hundred KB)
//! but means re-writing timeouts, pooling and body limits; with the demo off, reqwest fits the
//! 8 MiB idle budget, so it is kept. `url`'s IDNA backend is pinned to the ASCII adapter (see
//! `drivers/Cargo.toml`) to keep ICU4X tables out.
//!
//! # Why not ForceRestart or PowerCycle
//! A reboot is off, confirm off, on (see [`crate::power`]): a restart or cycle cannot be
//! confirmed, since `PowerState` reads `On` before and after.

pub mod device;
pub mod error;
pub mod model;
pub mod tls;

pub use device::{power_state_of, AuthMode, RedfishConfig, RedfishDevice};
pub use error::RedfishError;
pub use tls::TlsVerify;
