//! A configured device: its kind, chosen first from `kind = "..."`, and the settings every kind
//! takes (Pacemaker-style selection). Each kind's own table, checks and conversion live in its
//! own file; the list of kinds is the one [`device_kinds!`] below.

use super::{table, ConfigError, Ctx};
use drivers::{DeviceError, PowerDevice};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What a kind's file provides for its raw table (serde, `deny_unknown_fields`, holding only the
/// kind's own settings: the shared ones of [`RawCommon`] are read in the first pass).
pub(crate) trait KindTable: for<'de> Deserialize<'de> {
    /// The checked settings: the driver's own configuration where it needs nothing else.
    type Settings;
    /// Settings that would hold a secret: written inline they are refused, pointing at
    /// `NAME_file` and `NAME_env` instead of "unknown field".
    const SECRETS: &'static [&'static str];
    /// Checks the table and converts it; errors point at the offending line.
    fn resolve(self, cx: &DeviceCx<'_>) -> Result<Self::Settings, ConfigError>;
}

/// What a kind's file provides for its checked settings.
#[async_trait::async_trait]
pub(crate) trait KindSettings: Sync {
    /// Where the device is, for display (never credentials).
    fn address(&self) -> String;
    /// The effective settings (timeouts, retries, security) for `fenced check-config`.
    fn describe(&self) -> String;
    /// The port of a level entry that names none (SBD: the target's own slot).
    fn default_port(&self, _target: &str) -> Option<String> {
        None
    }
    /// The driver, ready for the engine; `node_name` is this fence controller's name.
    fn build(&self, node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError>;
    /// Checks run once when the daemon starts, before it serves (an agent's metadata).
    async fn preflight(&self) -> Result<(), DeviceError> {
        Ok(())
    }
}

/// Declares the device kinds: the enum of their checked settings, the enum of their raw tables
/// and the dispatch between them. One line per kind.
macro_rules! device_kinds {
    ($( $(#[$doc:meta])* $variant:ident($name:literal, $table:ty => $settings:ty), )*) => {
        /// What kind of device, with its checked settings.
        #[derive(Debug, Clone)]
        pub enum DeviceKind {
            $( $(#[$doc])* $variant($settings), )*
        }

        /// The names `kind = "..."` accepts.
        pub(crate) const KIND_NAMES: &[&str] = &[$($name),*];

        /// A device table read as its kind, not yet checked.
        pub(crate) enum RawKind {
            $( $variant($table), )*
        }

        impl RawKind {
            /// Reads a table of kind `kind` (one of [`KIND_NAMES`]) straight from the TOML
            /// deserializer, so every value keeps its position.
            pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                d: D,
            ) -> Result<RawKind, D::Error> {
                match kind {
                    $( $name => <$table>::deserialize(table::Filtered::new(
                        d,
                        <$table as KindTable>::SECRETS,
                    ))
                    .map(RawKind::$variant), )*
                    other => Err(serde::de::Error::unknown_variant(other, KIND_NAMES)),
                }
            }

            /// Checks the table and converts it.
            pub(crate) fn resolve(self, cx: &DeviceCx<'_>) -> Result<DeviceKind, ConfigError> {
                match self {
                    $( RawKind::$variant(t) => t.resolve(cx).map(DeviceKind::$variant), )*
                }
            }
        }

        impl DeviceKind {
            /// The kind's name as written in the config.
            pub fn name(&self) -> &'static str {
                match self {
                    $( DeviceKind::$variant(_) => $name, )*
                }
            }

            fn settings(&self) -> &dyn KindSettings {
                match self {
                    $( DeviceKind::$variant(s) => s, )*
                }
            }
        }
    };
}

// A new kind is a file beside these (its table implementing `KindTable`, its settings
// `KindSettings`) and one line here; nothing else learns its fields.
device_kinds! {
    /// A ClusterLabs fence agent run as a child process.
    Agent("agent", super::agent::AgentTable => drivers::agent::AgentConfig),
    /// An IPMI v2.0 BMC over RMCP+.
    Ipmi("ipmi", super::ipmi::IpmiTable => drivers::ipmi::IpmiConfig),
    /// A Redfish service over HTTPS (one ComputerSystem of it).
    Redfish("redfish", super::redfish::RedfishTable => drivers::redfish::RedfishConfig),
    /// SBD shared disks: fences by poison pill and msgwait.
    Sbd("sbd", super::sbd::SbdTable => super::sbd::SbdSettings),
    /// A switched PDU over SNMP; level entries name its outlets.
    SnmpPdu("snmp-pdu", super::snmp_pdu::SnmpPduTable => drivers::pdu::PduConfig),
    /// A GPIO relay board: each line a node's power cut or power button.
    Relay("relay", super::relay::RelayTable => super::relay::RelaySettings),
    /// A PDU at its text console, on a serial port or a console server's TCP port.
    SerialPdu("serial-pdu", super::serial_pdu::SerialPduTable => drivers::serial_pdu::SerialPduConfig),
}

impl DeviceKind {
    /// Where the device is, for display (never credentials).
    pub fn address(&self) -> String {
        self.settings().address()
    }

    /// The effective settings (timeouts, retries, security), for `fenced check-config`.
    pub fn describe(&self) -> String {
        self.settings().describe()
    }

    /// The driver for this device; `node_name` is this fence controller's name.
    pub fn build(&self, node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        self.settings().build(node_name)
    }

    /// Checks run once at start, before the daemon serves (e.g. an agent's metadata against
    /// its configured options).
    pub async fn preflight(&self) -> Result<(), DeviceError> {
        self.settings().preflight().await
    }

    fn default_port(&self, target: &str) -> Option<String> {
        self.settings().default_port(target)
    }
}

/// A configured device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Name.
    pub name: String,
    /// Kind and settings.
    pub kind: DeviceKind,
    /// Which targets it may fence, how their ports are found, how many calls at once, and how
    /// often it is health-checked.
    pub selection: DeviceSelection,
}

impl DeviceConfig {
    /// The kind's name as written in the config.
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// Where the device is, for display (never credentials).
    pub fn address(&self) -> String {
        self.kind.address()
    }

    /// Whether a target may use this device: a device with a host list (or map) may fence
    /// only the targets it names.
    pub(crate) fn may_fence(&self, target: &str) -> bool {
        let sel = &self.selection;
        sel.host_list.as_ref().is_none_or(|list| {
            list.iter().any(|h| h == target) || sel.host_map.contains_key(target)
        })
    }

    /// The port a target's level entry uses on this device: the entry's own, else the
    /// kind's default (SBD: the target's slot), else the host map, else (dynamic list or
    /// status check) the target's name.
    pub(crate) fn port_for(&self, target: &str, port: Option<String>) -> Option<String> {
        let sel = &self.selection;
        port.or_else(|| self.kind.default_port(target))
            .or_else(|| sel.host_map.get(target).cloned())
            .or_else(|| (sel.dynamic_list || sel.status_check).then(|| target.to_string()))
    }
}

/// Pacemaker-style device selection settings (`pcmk_host_list`, `pcmk_host_map`,
/// `pcmk_host_check`, `pcmk_action_limit`, monitor interval), valid for every kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSelection {
    /// Only these targets may use the device (checked when the config is loaded).
    pub host_list: Option<Vec<String>>,
    /// The port of each target, for level entries that name the device without one.
    pub host_map: BTreeMap<String, String>,
    /// Find a target's port at fence time in the device's `list` (by alias or plug id).
    pub dynamic_list: bool,
    /// The target's name is its port, and the device's `status` answer decides whether it
    /// can fence it (the engine reads status before any command; a failed read fails the
    /// attempt with the reason).
    pub status_check: bool,
    /// At most this many calls to the device at a time.
    pub max_concurrent: Option<u32>,
    /// How often the device is health-checked (default: the daemon's 60 s).
    pub monitor_interval: Option<Duration>,
    /// `on_fail = "skip"`: while its last health check failed, a level holding this device is
    /// not tried and the next level is (Pacemaker's failed stonith monitor taking a device out
    /// of use). The default `"try"` still tries it: a check can fail while fencing would work.
    pub skip_when_unhealthy: bool,
}

/// A device's kind and the settings every kind takes, read in the first pass (unknown keys
/// are left to the kind's own table in the second).
#[derive(Debug, Deserialize)]
pub(crate) struct RawCommon {
    kind: Spanned<String>,
    host_list: Option<Spanned<Vec<String>>>,
    host_map: Option<Spanned<BTreeMap<String, String>>>,
    host_check: Option<Spanned<String>>,
    max_concurrent: Option<Spanned<i64>>,
    monitor_interval_s: Option<Spanned<f64>>,
    on_fail: Option<Spanned<String>>,
}

/// The keys of [`RawCommon`]: every kind's table skips them in the second pass.
pub(crate) const COMMON_KEYS: &[&str] = &[
    "kind",
    "host_list",
    "host_map",
    "host_check",
    "max_concurrent",
    "monitor_interval_s",
    "on_fail",
];

impl RawCommon {
    /// The kind, one of [`KIND_NAMES`].
    pub(crate) fn kind(&self, ctx: &Ctx, name: &str) -> Result<&'static str, ConfigError> {
        let kind = self.kind.get_ref();
        KIND_NAMES
            .iter()
            .find(|k| **k == kind.as_str())
            .copied()
            .ok_or_else(|| {
                ctx.at(
                    &self.kind,
                    &format!("devices.{name}.kind"),
                    format!(
                        "unknown device kind `{kind}`; expected one of: {}",
                        KIND_NAMES.join(", ")
                    ),
                )
            })
    }

    /// The selection settings.
    pub(crate) fn selection(&self, cx: &DeviceCx) -> Result<DeviceSelection, ConfigError> {
        let (dynamic_list, status_check) = match &self.host_check {
            None => (false, false),
            Some(h) => match h.get_ref().as_str() {
                "static-list" => (false, false),
                "dynamic-list" => (true, false),
                "status" => (false, true),
                other => return Err(cx.at(h, "host_check", format!("expected \"static-list\" (host_list, host_map and level ports), \"dynamic-list\" (ports found in the device's `list` by target name) or \"status\" (the target's name is the port; the device's status answer decides), found `{other}`"))),
            },
        };
        let max_concurrent = match &self.max_concurrent {
            None => None,
            some => Some(cx.count(some, "max_concurrent", 1, (1, 1024), " calls at a time")?),
        };
        let monitor_interval = match &self.monitor_interval_s {
            None => None,
            Some(v) => Some(cx.seconds(v, "monitor_interval_s", (1.0, 86_400.0))?),
        };
        let skip_when_unhealthy = match &self.on_fail {
            None => false,
            Some(v) => match v.get_ref().as_str() {
                "try" => false,
                "skip" => true,
                other => return Err(cx.at(v, "on_fail", format!("expected \"try\" (a level holding this device is tried even after a failed health check) or \"skip\" (such a level is skipped, and the next one tried, until a health check passes), found `{other}`"))),
            },
        };
        Ok(DeviceSelection {
            host_list: self.host_list.as_ref().map(|l| l.get_ref().clone()),
            host_map: self
                .host_map
                .as_ref()
                .map(|m| m.get_ref().clone())
                .unwrap_or_default(),
            dynamic_list,
            status_check,
            max_concurrent,
            monitor_interval,
            skip_when_unhealthy,
        })
    }
}

/// One device's place in the file, for its kind's checks: field names are relative to
/// `devices.NAME`.
pub(crate) struct DeviceCx<'a> {
    pub(crate) ctx: &'a Ctx<'a>,
    pub(crate) name: &'a str,
    /// The device's table (its `[devices.NAME]` header): where a missing setting is reported.
    pub(crate) span: Range<usize>,
}

impl DeviceCx<'_> {
    /// `devices.NAME.FIELD`.
    pub(crate) fn field(&self, field: &str) -> String {
        format!("devices.{}.{field}", self.name)
    }

    /// An error at the line where `value` is written.
    pub(crate) fn at<T>(
        &self,
        value: &Spanned<T>,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.ctx.at(value, &self.field(field), message)
    }

    /// An error about a setting that is missing: at the device's header.
    pub(crate) fn missing(&self, field: &str, message: impl Into<String>) -> ConfigError {
        self.ctx
            .err(Some(self.span.clone()), &self.field(field), message)
    }

    /// A setting the kind cannot do without.
    pub(crate) fn required<'v, T>(
        &self,
        value: &'v Option<Spanned<T>>,
        field: &str,
        message: &str,
    ) -> Result<&'v Spanned<T>, ConfigError> {
        value.as_ref().ok_or_else(|| self.missing(field, message))
    }

    /// The required `model` of a vendor-model kind, looked up by name; an absent or unknown
    /// one is refused at its line with the models the kind knows.
    pub(crate) fn model<M>(
        &self,
        value: &Option<Spanned<String>>,
        kind: &str,
        names: &str,
        by_name: impl Fn(&str) -> Option<M>,
    ) -> Result<M, ConfigError> {
        let model = self.required(
            value,
            "model",
            &format!("{kind} device needs `model`, one of: {names}"),
        )?;
        by_name(model.get_ref()).ok_or_else(|| {
            self.at(
                model,
                "model",
                format!(
                    "unknown model `{}`; expected one of: {names}",
                    model.get_ref()
                ),
            )
        })
    }

    /// A `_ms` setting within `lo..=hi`, or `default`.
    pub(crate) fn millis(
        &self,
        value: &Option<Spanned<i64>>,
        field: &str,
        default: u32,
        bounds: (u32, u32),
    ) -> Result<Duration, ConfigError> {
        self.ctx.millis(value, &self.field(field), default, bounds)
    }

    /// A count setting within `lo..=hi`, or `default`.
    pub(crate) fn count(
        &self,
        value: &Option<Spanned<i64>>,
        field: &str,
        default: u32,
        bounds: (u32, u32),
        unit: &str,
    ) -> Result<u32, ConfigError> {
        self.ctx
            .count(value, &self.field(field), default, bounds, unit)
    }

    /// A `_s` setting within `lo..=hi` seconds.
    pub(crate) fn seconds(
        &self,
        value: &Spanned<f64>,
        field: &str,
        bounds: (f64, f64),
    ) -> Result<Duration, ConfigError> {
        self.ctx.seconds(value, &self.field(field), bounds, false)
    }

    /// Checks that serial port `port` (the setting `field` of a device of kind `kind`) is one
    /// of the configured board's; without `board = "..."` any port passes. Every kind that
    /// talks over a serial port calls this from its `resolve`.
    pub(crate) fn serial_port_on_board(
        &self,
        kind: &str,
        port: &Spanned<PathBuf>,
        field: &str,
    ) -> Result<(), ConfigError> {
        let Some(board) = self.ctx.board() else {
            return Ok(());
        };
        board
            .serial_port(&self.path(port.get_ref()))
            .map(|_| ())
            .map_err(|e| {
                self.at(
                    port,
                    field,
                    format!("{kind} port: {e}; name one of them, or fix `board`"),
                )
            })
    }

    /// Checks that line `offset` of `chip` (the setting `field`, written at `at`) may be used
    /// for `role` on the configured board; without `board = "..."` any line passes.
    pub(crate) fn gpio_line_on_board(
        &self,
        chip: &Path,
        offset: u32,
        role: boards::LineRole,
        at: Option<Range<usize>>,
        field: &str,
    ) -> Result<(), ConfigError> {
        let Some(board) = self.ctx.board() else {
            return Ok(());
        };
        board
            .gpio_line(chip, offset, role)
            .map(|_| ())
            .map_err(|e| {
                self.ctx.err(
                    Some(at.unwrap_or_else(|| self.span.clone())),
                    &self.field(field),
                    format!("{e}; fix the line, or `board`/`hat` if the wiring is different"),
                )
            })
    }

    /// A path as written: relative to the config file's directory.
    pub(crate) fn path(&self, p: &Path) -> PathBuf {
        self.ctx.path(p)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_serial_port_the_board_lacks_is_refused_at_its_line_naming_kind_and_board() {
        let text = "[devices.pdu]\nkind = \"x\"\nport = \"/dev/ttyS1\"\n";
        let board = boards::Fitted::new("raspberry-pi-4", None).unwrap();
        let env = |_: &str| None;
        let ctx = Ctx {
            file: Path::new("/etc/palisade/fenced.toml"),
            text,
            base_dir: Path::new("/etc/palisade"),
            env: &env,
            board: Some(&board),
        };
        let cx = DeviceCx {
            ctx: &ctx,
            name: "pdu",
            span: 0..13,
        };
        let start = text.find("\"/dev").unwrap();
        let port = |p: &str| Spanned::new(start..start + p.len() + 2, PathBuf::from(p));
        let e = cx
            .serial_port_on_board("serial-pdu", &port("/dev/ttyS1"), "port")
            .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.to_string().starts_with("/etc/palisade/fenced.toml:3: devices.pdu.port: serial-pdu port: board `raspberry-pi-4` has no serial port /dev/ttyS1; its ports: /dev/ttyAMA0, /dev/ttyS0"),
            "{e}"
        );
        for ok in [
            "/dev/ttyAMA0",
            "/dev/ttyUSB0",
            "/dev/serial/by-id/usb-FTDI-if00",
        ] {
            cx.serial_port_on_board("serial-pdu", &port(ok), "port")
                .unwrap();
        }
        // Without a board every port passes (nothing to check against).
        let ctx = Ctx { board: None, ..ctx };
        let cx = DeviceCx { ctx: &ctx, ..cx };
        cx.serial_port_on_board("serial-pdu", &port("/dev/ttyS1"), "port")
            .unwrap();
    }

    #[test]
    fn every_common_key_is_read_by_the_first_pass() {
        // Each key of COMMON_KEYS, given a value of the wrong type, must fail RawCommon: a key
        // RawCommon does not know would be ignored (and then skipped by every kind's table).
        for key in COMMON_KEYS {
            let text = if *key == "kind" {
                "kind = 1\n".to_string()
            } else {
                format!("kind = \"ipmi\"\n{key} = {{ x = {{}} }}\n")
            };
            assert!(
                toml::from_str::<RawCommon>(&text).is_err(),
                "{key} is not a field of RawCommon"
            );
        }
    }
}
