//! The one trait every power device implements, and the values it speaks in.
//!
//! There is deliberately no "power cycle" command: a cycle cannot be confirmed (the state reads
//! "on" before and after), so the engine fences with `off`, reads the state back, and only then
//! (for a reboot) sends `on`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The power state a device reports for one node (or one outlet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// Power is on.
    On,
    /// Power is off. The only state that confirms a fence.
    Off,
    /// The device says it is turning the power on.
    PoweringOn,
    /// The device says it is turning the power off; not yet confirmation.
    PoweringOff,
    /// The device answered with a state this driver cannot interpret as on or off.
    Unknown,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::PoweringOn => "powering on",
            PowerState::PoweringOff => "powering off",
            PowerState::Unknown => "unknown",
        })
    }
}

/// A power change a device is asked to make. No cycle, by design (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerCommand {
    /// Cut power (a hard off, never a graceful ACPI shutdown the OS could ignore).
    Off,
    /// Restore power.
    On,
}

impl PowerCommand {
    /// The state that confirms this command took effect.
    pub fn expected_state(self) -> PowerState {
        match self {
            PowerCommand::Off => PowerState::Off,
            PowerCommand::On => PowerState::On,
        }
    }
}

impl fmt::Display for PowerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerCommand::Off => "off",
            PowerCommand::On => "on",
        })
    }
}

/// What a device says it is, used to check that a device really controls the node the
/// configuration maps it to (a wrong mapping fences the healthy node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// What kind of identifier `value` is, e.g. `system-guid`, `uuid`, `serial`.
    pub kind: String,
    /// The identifier, normalised by the driver (GUIDs and UUIDs in lower-case hyphenated form).
    pub value: String,
    /// Free-form description of the device (vendor, model, firmware) for operators.
    pub description: String,
}

/// One outlet (or port) of a device that powers several nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outlet {
    /// The id used to address the outlet (its number, as a string).
    pub id: String,
    /// The outlet's name as configured on the device, if it has one.
    pub name: Option<String>,
    /// The outlet's power state, if the listing included it.
    pub state: Option<PowerState>,
}

/// Why a device call failed. Every message says what failed and what to try.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Nothing answered at the address within the time allowed.
    #[error("device {address} did not answer within {timeout_ms} ms ({what}); check that it is powered, reachable from this node, and that the address and port are right")]
    Timeout {
        /// The address that was asked.
        address: String,
        /// What was being asked.
        what: String,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// The address could not be reached at all (connection refused, no route, bad address).
    #[error("device {address} is unreachable: {reason}; check the address, port and network path")]
    Unreachable {
        /// The address that was tried.
        address: String,
        /// The operating system's or library's reason.
        reason: String,
    },
    /// The device rejected our credentials or privilege.
    #[error("device {address} refused authentication: {detail}; check the user name, password (file) and privilege level configured for this device")]
    AuthFailed {
        /// The address that was tried.
        address: String,
        /// What the device said.
        detail: String,
    },
    /// The device answered a command with an error.
    #[error("device {address} refused `{command}`: {detail}")]
    Refused {
        /// The address that was asked.
        address: String,
        /// The command that was refused.
        command: String,
        /// The device's error, decoded.
        detail: String,
    },
    /// The device answered with bytes that do not parse or do not belong to our request.
    #[error("device {address} sent a malformed or unexpected reply ({detail}); the device may be faulty or something else answers at that address")]
    Protocol {
        /// The address that answered.
        address: String,
        /// What was wrong with the reply.
        detail: String,
    },
    /// The device cannot do this (e.g. listing outlets on a BMC).
    #[error("device does not support {operation}")]
    Unsupported {
        /// The operation that is not supported.
        operation: String,
    },
    /// The port or outlet named in the configuration does not exist on the device.
    #[error("device has no port or outlet `{port}`; list the device's outlets with `fence_node devices` and fix the target's level")]
    NoSuchPort {
        /// The port that was asked for.
        port: String,
    },
    /// The configuration refuses something the device offers (e.g. IPMI cipher suite 0).
    #[error("{detail}")]
    Policy {
        /// What was refused and how to change it.
        detail: String,
    },
    /// Hardware on this machine (a GPIO chip or line) cannot be opened, requested or driven.
    /// No network is involved, so the hint is the driver's own (`detail` says what to check).
    #[error("local device {device}: {detail}")]
    Hardware {
        /// The device node or pin, e.g. `/dev/gpiochip0 line 17`.
        device: String,
        /// What failed and what to check.
        detail: String,
    },
}

impl DeviceError {
    /// A short stable code for history, metrics and the API (`timeout`, `auth_failed`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            DeviceError::Timeout { .. } => "timeout",
            DeviceError::Unreachable { .. } => "unreachable",
            DeviceError::AuthFailed { .. } => "auth_failed",
            DeviceError::Refused { .. } => "refused",
            DeviceError::Protocol { .. } => "protocol",
            DeviceError::Unsupported { .. } => "unsupported",
            DeviceError::NoSuchPort { .. } => "no_such_port",
            DeviceError::Policy { .. } => "policy",
            DeviceError::Hardware { .. } => "hardware",
        }
    }
}

/// How a device proves that a node is fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceProof {
    /// The device switches power and the engine reads the power state back as off.
    PowerReadBack,
    /// The device cannot read a node's power state (a shared disk): it writes a poison pill to
    /// the node's slot and reads it back, and the engine then waits the pill's msgwait, after
    /// which the node's watcher has killed it (or its watchdog has).
    PoisonPill,
}

/// What a poison pill asks the node's watcher to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PillKind {
    /// Power off.
    Off,
    /// Reset (reboot) immediately.
    Reset,
    /// Clear the slot: unfence (the node may run again).
    Clear,
}

/// A poison pill that was written and read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PillReport {
    /// Disks on which the pill was written and read back.
    pub written: u32,
    /// Disks configured.
    pub disks: u32,
    /// How long the node's watcher may take to obey (from the disks' header): the engine waits
    /// this long after the write before it counts the node as fenced.
    pub msgwait: std::time::Duration,
}

/// A device that can switch power to one node (a BMC) or to several (a PDU's outlets).
///
/// `port` names the outlet on multi-node devices and is `None` for single-node devices.
/// Implementations put their own timeout on every network exchange; the engine additionally
/// drops (cancels) a call that overruns the attempt's deadline, so implementations must be
/// cancel-safe: a dropped call leaves no state that would let a late reply be taken for a new one.
#[async_trait]
pub trait PowerDevice: Send + Sync + 'static {
    /// Reads the current power state.
    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError>;

    /// Asks the device to switch power. Success means the device accepted the command, not
    /// that power changed: the engine confirms by reading [`PowerDevice::status`] back.
    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError>;

    /// The power `port` draws now in watts, where the device meters it (a metered-by-outlet
    /// PDU); `Ok(None)` for devices that do not report draw. A read that fails is an error,
    /// never a reading of zero.
    async fn power_draw(&self, port: Option<&str>) -> Result<Option<u32>, DeviceError> {
        let _ = port;
        Ok(None)
    }

    /// Lists outlets, for devices that have several.
    async fn list(&self) -> Result<Vec<Outlet>, DeviceError> {
        Err(DeviceError::Unsupported {
            operation: "listing outlets".into(),
        })
    }

    /// Checks the device answers and returns what it says it is.
    async fn health(&self) -> Result<Identity, DeviceError>;

    /// Things an operator should know about how this device is driven (e.g. an agent that
    /// exposes its password on another program's command line); shown by `fence_node devices`.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// How a read-back of `port` proves its power state, when the driver has more to say than
    /// "power read back" (a relay line without a sense line: `relay output read back, no sense
    /// line`), or why it never can. The engine records it with a confirmed step and names it
    /// when a step is not confirmed; `None` (the default) for devices that report power as such.
    fn read_back_basis(&self, port: Option<&str>) -> Option<String> {
        let _ = port;
        None
    }

    /// How this device proves a fence; most read the power state back.
    fn proof(&self) -> FenceProof {
        FenceProof::PowerReadBack
    }

    /// For [`FenceProof::PoisonPill`] devices: writes the pill to `port`'s slot on a majority
    /// of the disks and reads it back. Returns as soon as it is written; the engine waits
    /// msgwait. Fewer than a majority written is an error, never a partial success.
    async fn write_pill(
        &self,
        port: Option<&str>,
        kind: PillKind,
    ) -> Result<PillReport, DeviceError> {
        let _ = (port, kind);
        Err(DeviceError::Unsupported {
            operation: "poison pills".into(),
        })
    }
}
