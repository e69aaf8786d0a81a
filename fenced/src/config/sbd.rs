//! Kind `sbd`: shared disks in sbd's format, fencing by poison pill and msgwait. A level
//! entry's port is the slot name: the target's own unless it says `device:slot`.

use super::device::{DeviceCx, KindSettings, KindTable};
use super::ConfigError;
use drivers::sbd::{DiskConfig, SbdDevice};
use drivers::{DeviceError, PowerDevice};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The deadline of each disk I/O: 100 ms to 60 s.
const TIMEOUT_MS: (u32, u32) = (100, 60_000);

/// `[devices.NAME]` with `kind = "sbd"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SbdTable {
    disks: Option<Spanned<Vec<PathBuf>>>,
    uuids: Option<Spanned<Vec<String>>>,
    timeout_ms: Option<Spanned<i64>>,
}

/// SBD device settings: the driver's disks and deadline (the sender's name, the other thing
/// [`SbdDevice`] needs, is the daemon's `node_name`).
#[derive(Debug, Clone)]
pub struct SbdSettings {
    /// The shared block devices (1 to 3), each with the UUID it must carry if pinned.
    pub disks: Vec<DiskConfig>,
    /// Deadline of each disk I/O.
    pub io_timeout: Duration,
}

impl KindTable for SbdTable {
    type Settings = SbdSettings;
    const SECRETS: &'static [&'static str] = &[];

    fn resolve(self, cx: &DeviceCx<'_>) -> Result<SbdSettings, ConfigError> {
        let want = "an sbd device needs `disks = [\"/dev/disk/by-id/...\"]` with 1 to 3 shared block devices";
        let disks = cx.required(&self.disks, "disks", want)?;
        if !(1..=3).contains(&disks.get_ref().len()) {
            return Err(cx.at(disks, "disks", want));
        }
        let n = disks.get_ref().len();
        let uuids = match &self.uuids {
            None => vec![None; n],
            Some(u) if u.get_ref().len() == n => u
                .get_ref()
                .iter()
                .map(|s| drivers::sbd::format::parse_uuid(s).map(Some))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    cx.at(
                        u,
                        "uuids",
                        "expected UUIDs like 3f2c9d1e-...-..., as `palisade-sbd dump` prints them",
                    )
                })?,
            Some(u) => {
                return Err(cx.at(
                    u,
                    "uuids",
                    format!(
                        "expected one UUID per disk ({n}), found {}",
                        u.get_ref().len()
                    ),
                ))
            }
        };
        Ok(SbdSettings {
            disks: disks
                .get_ref()
                .iter()
                .zip(uuids)
                .map(|(path, uuid)| DiskConfig {
                    path: path.clone(),
                    uuid,
                })
                .collect(),
            io_timeout: cx.millis(&self.timeout_ms, "timeout_ms", 2000, TIMEOUT_MS)?,
        })
    }
}

impl KindSettings for SbdSettings {
    fn address(&self) -> String {
        self.disks
            .iter()
            .map(|d| d.path.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn describe(&self) -> String {
        format!(
            "{} disk(s), timeout_ms {} per disk I/O, poison pill + msgwait",
            self.disks.len(),
            self.io_timeout.as_millis()
        )
    }

    fn default_port(&self, target: &str) -> Option<String> {
        Some(target.to_string())
    }

    fn build(&self, node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        Ok(Arc::new(SbdDevice::new(
            self.disks.clone(),
            node_name,
            self.io_timeout,
        )))
    }
}
