//! Palisade power-device drivers.
//!
//! The fencing engine knows devices only through [`PowerDevice`]; drivers know nothing of the
//! engine. Each device kind lives in its own module; wire formats are pure functions over bytes
//! so they can be unit-tested, property-tested and fuzzed without I/O.

pub mod agent;
pub mod ipmi;
pub mod pdu;
pub mod power;
pub mod redfish;
pub mod relay;
pub mod sbd;
pub mod secret;
pub mod serial_pdu;
pub mod stdio;
pub mod witness;

pub use power::{
    DeviceError, FenceProof, Identity, Outlet, PillKind, PillReport, PowerCommand, PowerDevice,
    PowerState,
};
pub use secret::Secret;
