//! The daemon's one TOML configuration file: devices, targets and their levels, limits, API.
//!
//! Every error names the file, the line and the field, and says what was expected. A number
//! outside its range is refused with the range, never clamped. Secrets are read from files or
//! environment variables named in the config, never written in it, and are held as
//! [`drivers::Secret`] so they are never printed.
//!
//! One file per part of the file: [`api`] (`[api]`), [`targets`] (`[targets.*]` and
//! `[defaults]`), [`device`] (what every device has, and the list of kinds), and one file per
//! device kind holding its raw table, its checks and its conversion into the driver's
//! configuration (`ipmi.rs`, `redfish.rs`, `snmp_pdu.rs`, `sbd.rs`, `agent.rs`,
//! `relay.rs`).
//!
//! The text is read twice, so every value keeps its position in it. The first pass reads the
//! sections and, of each device, its `kind` and the settings every kind takes. The second
//! ([`table`]) reads each device's table with the kind already chosen, straight into that
//! kind's raw table, so a field of another kind is an unknown field. (A serde internally
//! tagged enum would choose the kind too, but it buffers the table first and every position
//! in it is lost: errors would all point at the `[devices.NAME]` header, or nowhere.)

mod agent;
mod api;
mod cluster;
mod device;
mod ipmi;
mod redfish;
mod relay;
mod sbd;
mod secret;
mod serial_dialogue;
mod serial_pdu;
mod snmp_pdu;
mod table;
mod targets;
mod witness;
mod witness_disk;
mod witness_network;
mod witness_power_path;

pub use api::{ApiConfig, ApiSecurity, CertMatch, ClientCertRule, Role, TlsConfig};
pub use cluster::ClusterConfig;
pub use device::{DeviceConfig, DeviceKind, DeviceSelection};
pub use relay::{RelayLine, RelaySettings};
pub use sbd::SbdSettings;
pub use secret::{check_secret_file_mode, SecretFileError};
pub use targets::{Confirm, LevelEntry, TargetConfig, Timing};
pub use witness::{WitnessConfig, WitnessKind};
pub use witness_disk::DiskHeartbeatSettings;
pub use witness_network::NetworkSettings;
pub use witness_power_path::PowerPathSettings;

use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error, with where and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The field path, e.g. `targets.node1.levels`.
    pub field: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The first pass over the file: every section, and of each device its kind and the settings
/// every kind takes (its own settings are read in the second pass, see [`table`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The fence controller's board profile (`boards/profiles`): what its devices may use.
    board: Option<Spanned<String>>,
    /// The HAT on the board's header (`boards/hats`).
    hat: Option<Spanned<String>>,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    api: api::RawApi,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    defaults: targets::RawTiming,
    #[serde(default)]
    devices: BTreeMap<String, Spanned<device::RawCommon>>,
    #[serde(default)]
    witnesses: BTreeMap<String, Spanned<witness::RawWitness>>,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<targets::RawTarget>>,
    cluster: Option<cluster::RawCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    socket: Option<PathBuf>,
    history: Option<PathBuf>,
    node_name: Option<String>,
    ledger_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    window_s: Option<Spanned<i64>>,
    max_operations: Option<Spanned<i64>>,
    max_operations_per_target: Option<Spanned<i64>>,
    request_id_window_s: Option<Spanned<i64>>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from.
    pub source: PathBuf,
    /// Daemon paths.
    pub daemon: DaemonConfig,
    /// API listeners and access.
    pub api: ApiConfig,
    /// Blast-radius limits.
    pub limits: Limits,
    /// Devices by name.
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Witnesses by name (`[witnesses.NAME]`), used by targets with `confirm = "device+witness"`.
    pub witnesses: BTreeMap<String, WitnessConfig>,
    /// Targets by name.
    pub targets: BTreeMap<String, TargetConfig>,
    /// The board (and HAT) this fence controller is, when the file names one: every relay
    /// line, serial port and watchdog device was checked against it.
    pub board: Option<boards::Fitted>,
    /// `[cluster]`: the fencer cluster this node joins; `None` runs alone.
    pub cluster: Option<ClusterConfig>,
}

/// Daemon paths and name.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The API's Unix socket.
    pub socket: PathBuf,
    /// The history database file.
    pub history: PathBuf,
    /// This fence controller's name (history records say who fenced).
    pub node_name: String,
    /// The Ed25519 key that signs the ledger (created, mode 0600, at first start).
    pub ledger_key: PathBuf,
}

/// Blast-radius limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The sliding window the counts apply to.
    pub window: Duration,
    /// Fencing operations (off, reboot) started in the window, across all targets.
    pub max_operations: u32,
    /// Fencing operations started in the window for one target.
    pub max_operations_per_target: u32,
    /// How long after it finished a request id still returns the same operation.
    pub request_id_window: Duration,
}

/// Default Unix socket path.
pub const DEFAULT_SOCKET: &str = "/run/palisade/fenced.sock";
/// Default history path.
pub const DEFAULT_HISTORY: &str = "/var/lib/palisade/history.redb";

/// The longest window a limit may count over: a week. Windows are added to and subtracted
/// from monotonic instants, so an unbounded one could overflow them.
const MAX_WINDOW_S: i64 = 7 * 86_400;

/// The file being read: turns byte offsets into lines, paths into absolute ones, and looks up
/// environment variables.
pub(crate) struct Ctx<'a> {
    pub(crate) file: &'a Path,
    text: &'a str,
    /// The config file's directory: relative paths in it are relative to this.
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    /// The configured board: devices check their lines and ports against it.
    board: Option<&'a boards::Fitted>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text
            .get(..offset.min(self.text.len()))
            .map(|s| s.bytes().filter(|b| *b == b'\n').count() + 1)
            .unwrap_or(1)
    }

    /// An error at `span` (its line), about `field`.
    pub(crate) fn err(
        &self,
        span: Option<Range<usize>>,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)),
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// An error at the line where `value` is written.
    pub(crate) fn at<T>(
        &self,
        value: &Spanned<T>,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.err(Some(value.span()), field, message)
    }

    /// An error the TOML reader (or serde) found, at its line.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: e.span().map(|s| self.line_of(s.start)),
            field: None,
            message: e.message().trim_end().to_string(),
        }
    }

    /// A path as written in the file: relative ones are relative to the file's directory.
    pub(crate) fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The board the file names (`board = "..."`), if any.
    pub(crate) fn board(&self) -> Option<&boards::Fitted> {
        self.board
    }

    /// The value of an environment variable.
    pub(crate) fn env(&self, name: &str) -> Option<Vec<u8>> {
        (self.env)(name)
    }

    /// An integer setting within `lo..=hi`, or `default` when it is absent; out of range is
    /// refused at its line, saying the range.
    pub(crate) fn int(
        &self,
        value: &Option<Spanned<i64>>,
        field: &str,
        default: i64,
        (lo, hi): (i64, i64),
        unit: &str,
    ) -> Result<i64, ConfigError> {
        let Some(v) = value else {
            return Ok(default);
        };
        let n = *v.get_ref();
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(self.at(v, field, format!("expected {lo} to {hi}{unit}, found {n}")))
        }
    }

    /// [`Ctx::int`] for a `u32` setting (`lo >= 0`, `hi <= u32::MAX`).
    pub(crate) fn count(
        &self,
        value: &Option<Spanned<i64>>,
        field: &str,
        default: u32,
        (lo, hi): (u32, u32),
        unit: &str,
    ) -> Result<u32, ConfigError> {
        let n = self.int(value, field, default.into(), (lo.into(), hi.into()), unit)?;
        // In range, so it fits; the fallback is never taken.
        Ok(u32::try_from(n).unwrap_or(hi))
    }

    /// A `_ms` setting within `lo..=hi` milliseconds, or `default` when it is absent.
    pub(crate) fn millis(
        &self,
        value: &Option<Spanned<i64>>,
        field: &str,
        default: u32,
        bounds: (u32, u32),
    ) -> Result<Duration, ConfigError> {
        self.count(value, field, default, bounds, " ms")
            .map(|n| Duration::from_millis(n.into()))
    }

    /// A `_s` setting in seconds within `lo..=hi` (above `lo` when `lo_open`).
    pub(crate) fn seconds(
        &self,
        value: &Spanned<f64>,
        field: &str,
        (lo, hi): (f64, f64),
        lo_open: bool,
    ) -> Result<Duration, ConfigError> {
        let v = *value.get_ref();
        let above_lo = if lo_open { v > lo } else { v >= lo };
        if v.is_finite() && above_lo && v <= hi {
            Ok(Duration::from_secs_f64(v))
        } else {
            let from = if lo_open {
                format!("more than {lo} and at most")
            } else {
                format!("{lo} to")
            };
            Err(self.at(
                value,
                field,
                format!("expected {from} {hi} seconds, found {v}"),
            ))
        }
    }
}

impl Config {
    /// Reads and checks a config file; the environment is consulted for `password_env`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            field: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(path, &text, &|name| {
            std::env::var_os(name).map(|v| v.into_encoded_bytes())
        })
    }

    /// Parses config text; `env` looks up environment variables (injectable for tests).
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            file: path,
            text,
            base_dir: path.parent().unwrap_or(Path::new(".")),
            env,
            board: None,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        let board = resolve_board(&ctx, &raw.board, &raw.hat)?;
        let ctx = Ctx {
            board: board.as_ref(),
            ..ctx
        };
        let mut kinds = BTreeMap::new();
        for (name, common) in &raw.devices {
            kinds.insert(name.clone(), common.get_ref().kind(&ctx, name)?);
        }
        let mut tables = table::read_devices(text, &kinds).map_err(|e| ctx.toml_error(&e))?;

        let api = api::resolve(&ctx, raw.api)?;
        let daemon = resolve_daemon(raw.daemon);
        let limits = resolve_limits(&ctx, &raw.limits)?;

        let mut devices = BTreeMap::new();
        for (name, common) in raw.devices {
            let span = common.span();
            let cx = device::DeviceCx {
                ctx: &ctx,
                name: &name,
                span,
            };
            let table = tables.remove(&name).ok_or_else(|| {
                cx.missing(
                    "kind",
                    "this device's table was not found when it was read again; report this as a bug",
                )
            })?;
            let kind = table.resolve(&cx)?;
            let selection = common.get_ref().selection(&cx)?;
            devices.insert(
                name.clone(),
                DeviceConfig {
                    name,
                    kind,
                    selection,
                },
            );
        }
        let witnesses = witness::resolve(&ctx, raw.witnesses, &devices)?;
        let targets = targets::resolve(&ctx, raw.targets, &raw.defaults, &devices, &witnesses)?;
        let cluster = cluster::resolve(&ctx, raw.cluster, &daemon.node_name, &devices)?;

        Ok(Config {
            source: path.to_path_buf(),
            daemon,
            api,
            limits,
            devices,
            witnesses,
            targets,
            board,
            cluster,
        })
    }

    /// Names of targets whose levels use `device`.
    pub fn targets_of(&self, device: &str) -> Vec<String> {
        self.targets
            .values()
            .filter(|t| t.levels.iter().flatten().any(|e| e.device == device))
            .map(|t| t.name.clone())
            .collect()
    }
}

/// `board = "..."` and `hat = "..."`: the profiles, loaded and fitted together.
fn resolve_board(
    ctx: &Ctx,
    board: &Option<Spanned<String>>,
    hat: &Option<Spanned<String>>,
) -> Result<Option<boards::Fitted>, ConfigError> {
    let Some(board) = board else {
        return match hat {
            Some(h) => Err(ctx.at(
                h,
                "hat",
                "a HAT sits on a board: add `board = \"...\"` (a profile in boards/profiles) before it",
            )),
            None => Ok(None),
        };
    };
    boards::Fitted::new(board.get_ref(), hat.as_ref().map(|h| h.get_ref().as_str()))
        .map(Some)
        .map_err(|e| match (&e, hat) {
            (boards::BoardError::Unknown { what: "HAT", .. }, Some(h)) => {
                ctx.at(h, "hat", e.to_string())
            }
            _ => ctx.at(board, "board", e.to_string()),
        })
}

fn resolve_daemon(raw: RawDaemon) -> DaemonConfig {
    let history = raw.history.unwrap_or_else(|| DEFAULT_HISTORY.into());
    DaemonConfig {
        socket: raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
        ledger_key: raw
            .ledger_key
            .unwrap_or_else(|| history.with_extension("key")),
        history,
        node_name: raw
            .node_name
            .unwrap_or_else(|| hostname().unwrap_or_else(|| "fenced".into())),
    }
}

fn resolve_limits(ctx: &Ctx, raw: &RawLimits) -> Result<Limits, ConfigError> {
    let secs = |v: i64| Duration::from_secs(v.unsigned_abs());
    Ok(Limits {
        window: secs(ctx.int(
            &raw.window_s,
            "limits.window_s",
            600,
            (1, MAX_WINDOW_S),
            " seconds",
        )?),
        max_operations: ctx.count(
            &raw.max_operations,
            "limits.max_operations",
            10,
            (0, u32::MAX),
            " operations",
        )?,
        max_operations_per_target: ctx.count(
            &raw.max_operations_per_target,
            "limits.max_operations_per_target",
            3,
            (0, u32::MAX),
            " operations",
        )?,
        request_id_window: secs(ctx.int(
            &raw.request_id_window_s,
            "limits.request_id_window_s",
            300,
            (0, MAX_WINDOW_S),
            " seconds",
        )?),
    })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests;
