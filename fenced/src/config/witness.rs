//! `[witnesses.NAME]`: observers independent of the power devices that can veto a device's
//! "off" (see `drivers::witness`), each with its `kind` and that kind's settings; a target
//! with `confirm = "device+witness"` names the ones it uses in `witnesses = [...]`.
//!
//! Each kind's settings, checks and driver construction live in its own file
//! (`witness_network.rs`, `witness_disk.rs`); the list of kinds is the one [`witness_kinds!`]
//! below. A witness table is read as key → spanned value, so every setting keeps its line
//! and a setting the kind does not know is refused there, with the ones it takes.

use super::{ConfigError, Ctx, DeviceConfig};
use drivers::witness::Witness;
use drivers::PowerDevice;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A witness table as the first pass reads it: every setting with its position.
pub(super) type RawWitness = BTreeMap<String, Spanned<toml::Value>>;

/// What a kind's file provides: its settings' names, their checks and conversion, and the
/// witness for one target.
pub(crate) trait WitnessKindSettings: Sized + Sync {
    /// The settings this kind takes (besides `kind`).
    const KEYS: &'static [&'static str];
    /// Checks the table; errors point at the offending line.
    fn resolve(cx: &mut WitnessCx<'_>) -> Result<Self, ConfigError>;
    /// The effective settings, for `fenced check-config`.
    fn describe(&self) -> String;
    /// How long the witness watches before it can say `silent`: the attempt must leave it
    /// that much time after the device read back off.
    fn settle(&self) -> Duration;
    /// The witness watching target `target` (the node's name where the kind needs one);
    /// `device` finds the engine's driver of a configured device (kinds that read one).
    fn build(&self, target: &str, device: &DeviceLookup<'_>) -> Result<Arc<dyn Witness>, String>;
    /// Whether the witness can watch `target`, checked when the config is read (no driver is
    /// built then: a relay's lines are not opened by `check-config`).
    /// `levels` are the target's: a kind that reads a device refuses one a level uses.
    fn check(&self, target: &str, levels: &[Vec<super::LevelEntry>]) -> Result<(), String>;
}

/// Finds the engine's driver of a configured device by name.
pub type DeviceLookup<'a> = dyn Fn(&str) -> Option<Arc<dyn PowerDevice>> + 'a;

/// Declares the witness kinds: the enum of their checked settings and the dispatch. One line
/// per kind.
macro_rules! witness_kinds {
    ($( $(#[$doc:meta])* $variant:ident($name:literal, $settings:ty), )*) => {
        /// What kind of witness, with its checked settings.
        #[derive(Debug, Clone)]
        pub enum WitnessKind {
            $( $(#[$doc])* $variant($settings), )*
        }

        /// The names `kind = "..."` accepts in a witness table.
        pub(crate) const WITNESS_KIND_NAMES: &[&str] = &[$($name),*];

        impl WitnessKind {
            fn resolve(kind: &str, cx: &mut WitnessCx<'_>) -> Option<Result<WitnessKind, ConfigError>> {
                match kind {
                    $( $name => {
                        cx.keys = <$settings as WitnessKindSettings>::KEYS;
                        Some(<$settings>::resolve(cx).map(WitnessKind::$variant))
                    } )*
                    _ => None,
                }
            }

            /// The kind's name as written in the config.
            pub fn name(&self) -> &'static str {
                match self {
                    $( WitnessKind::$variant(_) => $name, )*
                }
            }

            /// The effective settings, for `fenced check-config`.
            pub fn describe(&self) -> String {
                match self {
                    $( WitnessKind::$variant(s) => s.describe(), )*
                }
            }

            /// How long it watches before it can say `silent`.
            pub fn settle(&self) -> Duration {
                match self {
                    $( WitnessKind::$variant(s) => s.settle(), )*
                }
            }

            /// The witness watching `target`; `device` finds a configured device's driver.
            pub fn build(&self, target: &str, device: &DeviceLookup<'_>) -> Result<Arc<dyn Witness>, String> {
                match self {
                    $( WitnessKind::$variant(s) => s.build(target, device), )*
                }
            }

            /// Whether it can watch `target` (checked when the config is read).
            pub fn check(&self, target: &str, levels: &[Vec<super::LevelEntry>]) -> Result<(), String> {
                match self {
                    $( WitnessKind::$variant(s) => s.check(target, levels), )*
                }
            }
        }
    };
}

// A new kind is a file beside these (its settings implementing `WitnessKindSettings`) and one
// line here.
witness_kinds! {
    /// The node's addresses stop answering TCP connects.
    Network("network", super::witness_network::NetworkSettings),
    /// The node's heartbeat on a shared SBD disk stops advancing.
    DiskHeartbeat("disk-heartbeat", super::witness_disk::DiskHeartbeatSettings),
    /// An outlet feeding the node (any configured device and port) reads off.
    PowerPath("power-path", super::witness_power_path::PowerPathSettings),
}

/// A configured witness.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// Name (`[witnesses.NAME]`).
    pub name: String,
    /// Kind and settings.
    pub kind: WitnessKind,
}

/// One witness table being read: settings are taken out as the kind reads them, and what is
/// left at the end is an unknown setting.
pub(crate) struct WitnessCx<'a> {
    ctx: &'a Ctx<'a>,
    name: &'a str,
    span: Range<usize>,
    fields: RawWitness,
    kind: &'static str,
    keys: &'static [&'static str],
    /// The configured devices (a power-path witness names one).
    pub(crate) devices: &'a BTreeMap<String, DeviceConfig>,
}

impl WitnessCx<'_> {
    /// `witnesses.NAME.FIELD`.
    fn field(&self, field: &str) -> String {
        format!("witnesses.{}.{field}", self.name)
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

    /// An error about a missing setting: at the witness's header.
    pub(crate) fn missing(&self, field: &str, message: impl Into<String>) -> ConfigError {
        self.ctx
            .err(Some(self.span.clone()), &self.field(field), message)
    }

    fn wrong_type(&self, v: &Spanned<toml::Value>, field: &str, want: &str) -> ConfigError {
        self.at(
            v,
            field,
            format!("expected {want}, found a {}", v.get_ref().type_str()),
        )
    }

    /// A list of strings, each with its position, if written.
    pub(crate) fn strings(
        &mut self,
        field: &str,
    ) -> Result<Option<Spanned<Vec<String>>>, ConfigError> {
        let Some(v) = self.fields.remove(field) else {
            return Ok(None);
        };
        let want = "a list of strings";
        let Some(items) = v.get_ref().as_array() else {
            return Err(self.wrong_type(&v, field, want));
        };
        let mut out = Vec::new();
        for item in items {
            match item.as_str() {
                Some(s) => out.push(s.to_string()),
                None => return Err(self.wrong_type(&v, field, want)),
            }
        }
        Ok(Some(Spanned::new(v.span(), out)))
    }

    /// A string, if written.
    pub(crate) fn string(&mut self, field: &str) -> Result<Option<Spanned<String>>, ConfigError> {
        let Some(v) = self.fields.remove(field) else {
            return Ok(None);
        };
        match v.get_ref().as_str() {
            Some(s) => Ok(Some(Spanned::new(v.span(), s.to_string()))),
            None => Err(self.wrong_type(&v, field, "a string")),
        }
    }

    /// An integer within `lo..=hi`, if written; `unit` names what it counts in the error.
    pub(crate) fn integer(
        &mut self,
        field: &str,
        unit: &str,
        (lo, hi): (i64, i64),
    ) -> Result<Option<Spanned<i64>>, ConfigError> {
        let Some(v) = self.fields.remove(field) else {
            return Ok(None);
        };
        let Some(n) = v.get_ref().as_integer() else {
            return Err(self.wrong_type(&v, field, &format!("an integer number of {unit}")));
        };
        if !(lo..=hi).contains(&n) {
            return Err(self.at(
                &v,
                field,
                format!("{n} {unit} is out of range; expected {lo} to {hi}"),
            ));
        }
        Ok(Some(Spanned::new(v.span(), n)))
    }

    /// A path (relative to the config file's directory), if written.
    pub(crate) fn path(&mut self, field: &str) -> Result<Option<Spanned<PathBuf>>, ConfigError> {
        Ok(self
            .string(field)?
            .map(|s| Spanned::new(s.span(), self.ctx.path(std::path::Path::new(s.get_ref())))))
    }

    /// A `_ms` setting within `lo..=hi`, or `default`.
    pub(crate) fn millis(
        &mut self,
        field: &str,
        default: Duration,
        (lo, hi): (u32, u32),
    ) -> Result<Duration, ConfigError> {
        let Some(v) = self.fields.remove(field) else {
            return Ok(default);
        };
        let Some(n) = v.get_ref().as_integer() else {
            return Err(self.wrong_type(&v, field, "an integer number of milliseconds"));
        };
        let n = Spanned::new(v.span(), n);
        self.ctx.millis(&Some(n), &self.field(field), 0, (lo, hi))
    }

    /// A `_s` setting within `lo..=hi` seconds, or `default`.
    pub(crate) fn seconds(
        &mut self,
        field: &str,
        default: Duration,
        bounds: (f64, f64),
    ) -> Result<Duration, ConfigError> {
        let Some(v) = self.fields.remove(field) else {
            return Ok(default);
        };
        let n = match v.get_ref() {
            toml::Value::Float(f) => *f,
            toml::Value::Integer(i) => *i as f64,
            _ => return Err(self.wrong_type(&v, field, "a number of seconds")),
        };
        self.ctx
            .seconds(&Spanned::new(v.span(), n), &self.field(field), bounds, true)
    }

    /// Refuses every setting the kind did not read.
    fn finish(self) -> Result<(), ConfigError> {
        if let Some((key, v)) = self.fields.iter().next() {
            return Err(self.at(
                v,
                key,
                format!(
                    "unknown setting `{key}` for a {} witness; expected one of: kind, {}",
                    self.kind,
                    self.keys.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Checks every `[witnesses.NAME]` table.
pub(super) fn resolve(
    ctx: &Ctx,
    raw: BTreeMap<String, Spanned<RawWitness>>,
    devices: &BTreeMap<String, DeviceConfig>,
) -> Result<BTreeMap<String, WitnessConfig>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, table) in raw {
        let span = table.span();
        let mut fields = table.into_inner();
        let field = format!("witnesses.{name}.kind");
        let want = format!("one of: {}", WITNESS_KIND_NAMES.join(", "));
        let Some(kind) = fields.remove("kind") else {
            return Err(ctx.err(
                Some(span),
                &field,
                format!("a witness needs `kind`, {want}"),
            ));
        };
        let Some(kind_name) = kind
            .get_ref()
            .as_str()
            .and_then(|k| WITNESS_KIND_NAMES.iter().find(|n| **n == k).copied())
        else {
            return Err(ctx.at(
                &kind,
                &field,
                format!("unknown witness kind {}; expected {want}", kind.get_ref()),
            ));
        };
        let mut cx = WitnessCx {
            ctx,
            name: &name,
            span,
            fields,
            kind: kind_name,
            keys: &[],
            devices,
        };
        let resolved = WitnessKind::resolve(kind_name, &mut cx).ok_or_else(|| {
            ctx.at(
                &kind,
                &field,
                "this kind is listed but has no settings reader; report this as a bug",
            )
        })??;
        cx.finish()?;
        out.insert(
            name.clone(),
            WitnessConfig {
                name,
                kind: resolved,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::{Config, Confirm};
    use super::WitnessKind;
    use std::path::Path;
    use std::time::Duration;

    const BASE: &str = r#"
[devices.bmc1]
kind = "ipmi"
address = "127.0.0.1:6230"
username = "admin"
password_env = "PW"

[witnesses.n1-net]
kind = "network"
addresses = ["10.0.0.12:5405", "[fd00::12]:22"]
settle_s = 2

[witnesses.sbd-hb]
kind = "disk-heartbeat"
disk = "/dev/disk/by-id/shared-1"

[targets.node1]
levels = [["bmc1"]]
confirm = "device+witness"
witnesses = ["n1-net", "sbd-hb"]
"#;

    fn parse(text: &str) -> Result<Config, super::ConfigError> {
        Config::parse(Path::new("/etc/palisade/fenced.toml"), text, &|n| {
            (n == "PW").then(|| b"pw".to_vec())
        })
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn witnesses_resolve_and_targets_name_them() {
        let c = parse(BASE).unwrap();
        let t = &c.targets["node1"];
        assert_eq!(t.confirm, Confirm::DeviceAndWitness);
        assert_eq!(t.witnesses, vec!["n1-net", "sbd-hb"]);
        let WitnessKind::Network(n) = &c.witnesses["n1-net"].kind else {
            panic!()
        };
        assert_eq!(n.0.addresses.len(), 2);
        assert_eq!(n.0.settle, Duration::from_secs(2));
        let WitnessKind::DiskHeartbeat(d) = &c.witnesses["sbd-hb"].kind else {
            panic!()
        };
        assert_eq!(d.settle, drivers::witness::disk::DEFAULT_SETTLE);
        // The disk witness watches the target's own slot.
        assert!(c.witnesses["sbd-hb"]
            .kind
            .build("node1", &|_| None)
            .unwrap()
            .describe()
            .contains("node node1"));
        // Without `confirm` a target is as before.
        let plain = BASE
            .replace("confirm = \"device+witness\"\n", "")
            .replace("witnesses = [\"n1-net\", \"sbd-hb\"]\n", "");
        let c = parse(&plain).unwrap();
        assert_eq!(c.targets["node1"].confirm, Confirm::Device);
        assert!(c.targets["node1"].witnesses.is_empty());
    }

    #[test]
    fn bad_witness_input_names_file_line_and_what_was_expected() {
        let cases = [
            (
                BASE.replace("kind = \"network\"", "kind = \"ping\""),
                ":9: witnesses.n1-net.kind: unknown witness kind \"ping\"; expected one of: network, disk-heartbeat, power-path",
            ),
            (
                BASE.replace("settle_s = 2", "settle_s = 2\nports = [1]"),
                ":12: witnesses.n1-net.ports: unknown setting `ports` for a network witness; expected one of: kind, addresses, settle_s, probe_timeout_ms, interval_ms",
            ),
            (
                BASE.replace("\"10.0.0.12:5405\"", "\"node1:5405\""),
                ":10: witnesses.n1-net.addresses: `node1:5405` is not IP:port",
            ),
            (
                BASE.replace("settle_s = 2", "settle_s = 0"),
                ":11: witnesses.n1-net.settle_s: expected more than 0 and at most 600 seconds, found 0",
            ),
            (
                BASE.replace("settle_s = 2", "settle_s = \"2\""),
                ":11: witnesses.n1-net.settle_s: expected a number of seconds, found a string",
            ),
            (
                BASE.replace("confirm = \"device+witness\"", "confirm = \"witness\""),
                ":19: targets.node1.confirm: expected \"device\" (the device's read-back alone) or \"device+witness\"",
            ),
            (
                BASE.replace("confirm = \"device+witness\"", "confirm = \"device\""),
                ":20: targets.node1.witnesses: witnesses are listed but confirm is \"device\"",
            ),
            (
                BASE.replace("witnesses = [\"n1-net\", \"sbd-hb\"]\n", ""),
                ":17: targets.node1.witnesses: confirm = \"device+witness\" needs `witnesses = [\"NAME\", ...]`",
            ),
            (
                BASE.replace("[\"n1-net\", \"sbd-hb\"]", "[\"n1-nett\"]"),
                ":20: targets.node1.witnesses: witness `n1-nett` is not defined; expected one of: n1-net, sbd-hb",
            ),
            (
                BASE.replace("settle_s = 2", "settle_s = 30"),
                ":20: targets.node1.witnesses: witness `n1-net` watches for 30 s after the device reads back off, within the same attempt, but attempt_timeout_s is 20 s",
            ),
            (
                BASE.replace("disk = \"/dev/disk/by-id/shared-1\"", "node = \"x\""),
                ":13: witnesses.sbd-hb.disk: a disk-heartbeat witness needs `disk = ",
            ),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(
                e.starts_with(&format!("/etc/palisade/fenced.toml{want}")),
                "expected {want}\n     got {e}"
            );
        }
    }

    const POWER: &str = r#"
[devices.bmc1]
kind = "ipmi"
address = "127.0.0.1:6230"
username = "admin"
password_env = "PW"

[devices.pdu-a]
kind = "snmp-pdu"
address = "127.0.0.1"
model = "apc-rpdu"
community_env = "PW"

[devices.relays]
kind = "relay"
chip = "/dev/gpiochip0"

[devices.relays.lines.sensed]
line = 17
polarity = "active-high"
mode = "power-cut"
sense_line = 27
sense_polarity = "active-high"

[devices.relays.lines.blind]
line = 18
polarity = "active-high"
mode = "power-cut"
confirm_off_by_relay_output_without_sense = true

[witnesses.feed]
kind = "power-path"
device = "pdu-a"
port = "7"

[targets.node1]
levels = [["bmc1"]]
confirm = "device+witness"
witnesses = ["feed"]
"#;

    /// `:N:` of the line holding `marker` (unique in `text`).
    fn line_of(text: &str, marker: &str) -> usize {
        let i = text.find(marker).unwrap_or_else(|| panic!("{marker}"));
        text[..i].lines().count() + usize::from(text[..i].ends_with('\n'))
    }

    #[test]
    fn a_power_path_witness_reads_a_pdu_outlet_or_a_sensed_relay_line() {
        let c = parse(POWER).unwrap();
        let WitnessKind::PowerPath(p) = &c.witnesses["feed"].kind else {
            panic!()
        };
        assert_eq!((p.device.as_str(), p.port.as_str()), ("pdu-a", "7"));
        assert_eq!(p.settle, drivers::witness::power_path::DEFAULT_SETTLE);
        assert_eq!(p.max_watts, None);
        // A metered-by-outlet APC (rPDU2OutletMeteredStatusPower) takes a draw threshold.
        let c = parse(
            &POWER
                .replace("model = \"apc-rpdu\"", "model = \"apc-rpdu2\"")
                .replace("port = \"7\"", "port = \"7\"\nmax_watts = 15"),
        )
        .unwrap();
        let WitnessKind::PowerPath(p) = &c.witnesses["feed"].kind else {
            panic!()
        };
        assert_eq!(p.max_watts, Some(15));
        assert!(
            c.witnesses["feed"]
                .kind
                .describe()
                .contains("pdu-a:7 reads off or draws at most 15 W"),
            "{}",
            c.witnesses["feed"].kind.describe()
        );
        let c = parse(&POWER.replace(
            "device = \"pdu-a\"\nport = \"7\"",
            "device = \"relays\"\nport = \"sensed\"",
        ))
        .unwrap();
        assert!(c.witnesses["feed"]
            .kind
            .describe()
            .contains("relays:sensed"));
    }

    #[test]
    fn a_power_path_witness_that_cannot_prove_anything_is_refused_at_its_line() {
        let cases: Vec<(String, &str, String)> = vec![
            // A BMC is not on the power path.
            (
                POWER.replace("device = \"pdu-a\"", "device = \"bmc1\""),
                "device = \"bmc1\"",
                "witnesses.feed.device: device `bmc1` is an ipmi device, not on the node's power path".into(),
            ),
            (
                POWER.replace("device = \"pdu-a\"", "device = \"pdu-b\""),
                "device = \"pdu-b\"",
                "witnesses.feed.device: device `pdu-b` is not defined; expected one of: bmc1, pdu-a, relays".into(),
            ),
            (
                POWER.replace("port = \"7\"\n", ""),
                "[witnesses.feed]",
                "witnesses.feed.port: device `pdu-a` is a snmp-pdu with several outlets: give `port = \"OUTLET\"`".into(),
            ),
            (
                POWER.replace("device = \"pdu-a\"\nport = \"7\"", "device = \"relays\"\nport = \"blind\""),
                "port = \"blind\"",
                "witnesses.feed.port: relay line `relays:blind` has no sense_line".into(),
            ),
            (
                POWER.replace("device = \"pdu-a\"\nport = \"7\"", "device = \"relays\"\nport = \"node9\""),
                "port = \"node9\"",
                "witnesses.feed.port: relay `relays` has no line `node9`; expected one of: blind, sensed".into(),
            ),
            // The witness reads the device a level of its own target uses.
            (
                POWER.replace("levels = [[\"bmc1\"]]", "levels = [[\"bmc1\"], [\"pdu-a:7\"]]"),
                "witnesses = [\"feed\"]",
                "targets.node1.witnesses: witness `feed` cannot watch `node1`: it reads device `pdu-a`, which level 2 of this target uses".into(),
            ),
            // apc-rpdu (AP79xx) does not meter its outlets: no draw to compare.
            (
                POWER.replace("port = \"7\"", "port = \"7\"\nmax_watts = 5"),
                "max_watts",
                "witnesses.feed.max_watts: device `pdu-a` is a snmp-pdu (model apc-rpdu), which reports no outlet power draw: max_watts needs an snmp-pdu whose model meters each outlet (apc-rpdu2)".into(),
            ),
            (
                POWER.replace("device = \"pdu-a\"\nport = \"7\"", "device = \"relays\"\nport = \"sensed\"\nmax_watts = 5"),
                "max_watts",
                "witnesses.feed.max_watts: device `relays` is a relay, which reports no outlet power draw".into(),
            ),
            (
                POWER.replace("model = \"apc-rpdu\"", "model = \"apc-rpdu2\"").replace("port = \"7\"", "port = \"7\"\nmax_watts = -1"),
                "max_watts",
                "witnesses.feed.max_watts: -1 watts is out of range; expected 0 to 100000".into(),
            ),
            (
                POWER.replace("model = \"apc-rpdu\"", "model = \"apc-rpdu2\"").replace("port = \"7\"", "port = \"7\"\nmax_watts = \"5 W\""),
                "max_watts",
                "witnesses.feed.max_watts: expected an integer number of watts, found a string".into(),
            ),
            (
                POWER.replace("port = \"7\"", "port = \"7\"\nmax_wats = 5"),
                "max_wats",
                "witnesses.feed.max_wats: unknown setting `max_wats` for a power-path witness; expected one of: kind, device, port, settle_s, timeout_ms, max_watts".into(),
            ),
        ];
        for (text, marker, want) in cases {
            let got = err(&text);
            let want = format!(
                "/etc/palisade/fenced.toml:{}: {want}",
                line_of(&text, marker)
            );
            assert!(got.contains(&want), "expected {want:?}\n     got {got:?}");
        }
    }
}
