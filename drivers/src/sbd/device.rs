//! `SbdDevice`: SBD shared disks as a fencing device behind [`PowerDevice`].
//!
//! A shared disk cannot read a node's power state; it carries messages. So this device proves
//! a fence by [`FenceProof::PoisonPill`]: the pill is written to the target's slot on a
//! majority of the disks and read back ([`open_and_deliver`]); the engine then waits the disks'
//! msgwait on a monotonic clock. What that rests on: the target runs a watcher that reads its
//! slot every loop and obeys the pill, and feeds an armed hardware watchdog only while it can
//! read a majority of the disks — so after msgwait the target has either obeyed or been reset
//! by its watchdog. A target with no slot has never run a watcher and is refused.

use super::format::format_uuid;
use super::{open_and_deliver, read_header, DeliveryError, DiskConfig, Message};
use crate::power::{
    DeviceError, FenceProof, Identity, PillKind, PillReport, PowerCommand, PowerDevice, PowerState,
};
use async_trait::async_trait;
use std::time::{Duration, Instant};

/// SBD disks used to fence nodes by poison pill.
#[derive(Debug, Clone)]
pub struct SbdDevice {
    disks: Vec<DiskConfig>,
    /// The name written as the pill's sender (this fence controller's node name).
    from: String,
    io_timeout: Duration,
}

impl SbdDevice {
    /// A device over these disks (1 to 3, as sbd allows), sending as `from`, with a deadline
    /// of `io_timeout` on every disk I/O.
    pub fn new(disks: Vec<DiskConfig>, from: impl Into<String>, io_timeout: Duration) -> Self {
        SbdDevice {
            disks,
            from: from.into(),
            io_timeout,
        }
    }

    fn names(&self) -> String {
        self.disks
            .iter()
            .map(|d| d.path.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `f` on the blocking pool: every disk I/O already has its own deadline (a read stuck
    /// in the kernel is abandoned, see `disk.rs`), so this returns in bounded time.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(Self) -> T + Send + 'static,
    ) -> Result<T, DeviceError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(me))
            .await
            .map_err(|e| DeviceError::Protocol {
                address: self.names(),
                detail: format!("{what} stopped unexpectedly: {e}"),
            })
    }

    async fn deliver(&self, target: &str, msg: Message) -> Result<super::Delivered, DeviceError> {
        let target = target.to_string();
        let address = self.names();
        self.blocking("writing the SBD message", move |me| {
            open_and_deliver(&me.disks, &target, msg, &me.from, me.io_timeout)
        })
        .await?
        .map_err(|e| match e {
            DeliveryError::NoSlot { .. } | DeliveryError::BadName { .. } => DeviceError::Refused {
                address,
                command: "poison pill".into(),
                detail: e.to_string(),
            },
            DeliveryError::NoMajority { .. } => DeviceError::Unreachable {
                address,
                reason: e.to_string(),
            },
        })
    }
}

fn slot_name(port: Option<&str>) -> Result<&str, DeviceError> {
    port.ok_or_else(|| DeviceError::NoSuchPort {
        port: "(none): an SBD level entry names the target's slot".into(),
    })
}

#[async_trait]
impl PowerDevice for SbdDevice {
    async fn status(&self, _port: Option<&str>) -> Result<PowerState, DeviceError> {
        Err(DeviceError::Unsupported {
            operation: "reading a node's power state (SBD disks carry messages, not power state)"
                .into(),
        })
    }

    /// `on` clears the target's mailbox (what unfencing means for SBD); `off` is refused here
    /// because SBD fences only through [`PowerDevice::write_pill`] and msgwait.
    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        match command {
            PowerCommand::On => self
                .deliver(slot_name(port)?, Message::Clear)
                .await
                .map(|_| ()),
            PowerCommand::Off => Err(DeviceError::Unsupported {
                operation: "power off without a poison pill".into(),
            }),
        }
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        let address = self.names();
        let headers = self
            .blocking("reading SBD headers", |me| {
                me.disks
                    .iter()
                    .map(|d| {
                        super::Disk::open(&d.path, Instant::now() + me.io_timeout)
                            .map_err(|e| e.to_string())
                            .and_then(|disk| {
                                read_header(&disk, me.io_timeout).map_err(|e| e.to_string())
                            })
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
        let ok: Vec<_> = headers.iter().filter_map(|h| h.as_ref().ok()).collect();
        if ok.len() * 2 <= headers.len() {
            let errs: Vec<String> = headers
                .iter()
                .filter_map(|h| h.as_ref().err().cloned())
                .collect();
            return Err(DeviceError::Unreachable {
                address,
                reason: format!(
                    "fewer than a majority of SBD disks readable: {}",
                    errs.join("; ")
                ),
            });
        }
        let first = ok[0];
        Ok(Identity {
            kind: "sbd-uuid".into(),
            value: format_uuid(&first.uuid),
            description: format!(
                "{} of {} SBD disks readable; watchdog {} s, msgwait {} s",
                ok.len(),
                headers.len(),
                first.timeout_watchdog,
                first.timeout_msgwait
            ),
        })
    }

    fn proof(&self) -> FenceProof {
        FenceProof::PoisonPill
    }

    async fn write_pill(
        &self,
        port: Option<&str>,
        kind: PillKind,
    ) -> Result<PillReport, DeviceError> {
        let msg = match kind {
            PillKind::Off => Message::Off,
            PillKind::Reset => Message::Reset,
            PillKind::Clear => Message::Clear,
        };
        let d = self.deliver(slot_name(port)?, msg).await?;
        Ok(PillReport {
            written: d.written.len() as u32,
            disks: d.total as u32,
            // msgwait counts from when the majority held the pill, as sbd's does.
            msgwait: d.remaining_wait(),
        })
    }
}
