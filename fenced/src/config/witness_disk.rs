//! Witness kind `disk-heartbeat`: the node's heartbeat record on a shared SBD disk (written by
//! its `palisade-sbd watch`) must stop advancing for `settle_s` after the device read back off.
//! The node's name is the target's unless `node = "..."` says otherwise.

use super::witness::{DeviceLookup, WitnessCx, WitnessKindSettings};
use super::ConfigError;
use drivers::witness::disk::{self, DiskHeartbeatConfig, DiskHeartbeatWitness};
use drivers::witness::Witness;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Checked `disk-heartbeat` witness settings.
#[derive(Debug, Clone)]
pub struct DiskHeartbeatSettings {
    /// The shared SBD disk.
    pub disk: PathBuf,
    /// The node's slot name, when it is not the target's name.
    pub node: Option<String>,
    /// The disk's SBD UUID it must carry, if pinned.
    pub uuid: Option<[u8; 16]>,
    /// How long the record must stay unchanged.
    pub settle: Duration,
    /// Time between reads.
    pub poll: Duration,
    /// Deadline of each disk I/O.
    pub read_timeout: Duration,
}

impl DiskHeartbeatSettings {
    fn config(&self, target: &str) -> DiskHeartbeatConfig {
        DiskHeartbeatConfig {
            uuid: self.uuid,
            settle: self.settle,
            poll: self.poll,
            read_timeout: self.read_timeout,
            ..DiskHeartbeatConfig::new(
                self.disk.clone(),
                self.node.clone().unwrap_or_else(|| target.to_string()),
            )
        }
    }
}

impl WitnessKindSettings for DiskHeartbeatSettings {
    const KEYS: &'static [&'static str] =
        &["disk", "node", "uuid", "settle_s", "poll_ms", "timeout_ms"];

    fn resolve(cx: &mut WitnessCx<'_>) -> Result<Self, ConfigError> {
        let Some(disk) = cx.path("disk")? else {
            return Err(cx.missing(
                "disk",
                "a disk-heartbeat witness needs `disk = \"/dev/disk/by-id/...\"`: the shared SBD disk the node's watcher writes its heartbeat to",
            ));
        };
        let node = cx.string("node")?.map(|n| n.into_inner());
        let uuid = match cx.string("uuid")? {
            None => None,
            Some(u) => Some(
                drivers::sbd::format::parse_uuid(u.get_ref()).ok_or_else(|| {
                    cx.at(
                        &u,
                        "uuid",
                        "expected a UUID like 3f2c9d1e-...-..., as `palisade-sbd dump` prints it",
                    )
                })?,
            ),
        };
        let settle = cx.seconds("settle_s", disk::DEFAULT_SETTLE, (0.0, 600.0))?;
        let poll = cx.millis("poll_ms", disk::DEFAULT_POLL, (10, 60_000))?;
        let read_timeout = cx.millis("timeout_ms", disk::DEFAULT_READ_TIMEOUT, (100, 60_000))?;
        if poll > settle {
            return Err(cx.missing(
                "poll_ms",
                format!(
                    "expected poll_ms ({}) at most settle_s ({} s): the record would be read only at the start and the end",
                    poll.as_millis(),
                    settle.as_secs_f64()
                ),
            ));
        }
        Ok(DiskHeartbeatSettings {
            disk: disk.into_inner(),
            node,
            uuid,
            settle,
            poll,
            read_timeout,
        })
    }

    fn describe(&self) -> String {
        format!(
            "heartbeat of {} on {} stops for settle_s {}, poll_ms {}, timeout_ms {}",
            self.node.as_deref().unwrap_or("the target"),
            self.disk.display(),
            self.settle.as_secs_f64(),
            self.poll.as_millis(),
            self.read_timeout.as_millis()
        )
    }

    fn settle(&self) -> Duration {
        self.settle
    }

    fn check(&self, target: &str, _levels: &[Vec<super::LevelEntry>]) -> Result<(), String> {
        self.build(target, &|_| None).map(|_| ())
    }

    fn build(&self, target: &str, _device: &DeviceLookup<'_>) -> Result<Arc<dyn Witness>, String> {
        DiskHeartbeatWitness::new(self.config(target))
            .map(|w| Arc::new(w) as Arc<dyn Witness>)
            .map_err(|e| e.to_string())
    }
}
