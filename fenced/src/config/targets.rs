//! `[targets.NAME]`: each target's levels of devices, the identity each device must report
//! for it, and its timing, with `[defaults]` for the timing a target does not set.

use super::{ConfigError, Ctx, DeviceConfig, WitnessConfig};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

/// Timing settings, as `[defaults]` and each target write them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTiming {
    attempt_timeout_s: Option<Spanned<f64>>,
    total_timeout_s: Option<Spanned<f64>>,
    delay_s: Option<Spanned<f64>>,
    random_delay_s: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    levels: Spanned<Vec<Vec<Spanned<String>>>>,
    #[serde(default)]
    identities: BTreeMap<String, Spanned<String>>,
    confirm: Option<Spanned<String>>,
    witnesses: Option<Spanned<Vec<Spanned<String>>>>,
    attempt_timeout_s: Option<Spanned<f64>>,
    total_timeout_s: Option<Spanned<f64>>,
    delay_s: Option<Spanned<f64>>,
    random_delay_s: Option<Spanned<f64>>,
}

/// Per-target timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Deadline for one device step (command plus read-back).
    pub attempt_timeout: Duration,
    /// Deadline for the whole operation, delays excluded.
    pub total_timeout: Duration,
    /// Fixed fence-race delay.
    pub delay: Duration,
    /// Upper bound of the random extra delay.
    pub random_delay: Duration,
}

/// One entry of a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelEntry {
    /// Device name.
    pub device: String,
    /// Port or outlet.
    pub port: Option<String>,
}

/// What must agree before a target counts as off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Confirm {
    /// `"device"`: the device's read-back (or a poison pill waited out) alone.
    #[default]
    Device,
    /// `"device+witness"`: the device's read-back AND every witness of the target silent.
    DeviceAndWitness,
}

impl std::fmt::Display for Confirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Confirm::Device => "device",
            Confirm::DeviceAndWitness => "device+witness",
        })
    }
}

/// A configured target.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Node name.
    pub name: String,
    /// Levels in order.
    pub levels: Vec<Vec<LevelEntry>>,
    /// Identity each device must report for this target, by device name.
    pub identities: BTreeMap<String, String>,
    /// Timing.
    pub timing: Timing,
    /// What must agree before the target counts as off.
    pub confirm: Confirm,
    /// The witnesses (`[witnesses.NAME]`) that must all be silent under `device+witness`.
    pub witnesses: Vec<String>,
}

/// The longest any timing setting may be: a day.
const MAX_S: f64 = 86_400.0;

/// One timing setting: its name, built-in default, and whether zero is allowed.
struct Setting {
    name: &'static str,
    default_s: f64,
    zero_ok: bool,
}

const ATTEMPT: Setting = Setting {
    name: "attempt_timeout_s",
    default_s: 20.0,
    zero_ok: false,
};
const TOTAL: Setting = Setting {
    name: "total_timeout_s",
    default_s: 120.0,
    zero_ok: false,
};
const DELAY: Setting = Setting {
    name: "delay_s",
    default_s: 0.0,
    zero_ok: true,
};
const RANDOM_DELAY: Setting = Setting {
    name: "random_delay_s",
    default_s: 0.0,
    zero_ok: true,
};

/// A timing value and where it came from, for messages about how two of them relate.
struct Chosen {
    value: Duration,
    /// Where it was written (the target's own line, or `[defaults]`'s) and its field path.
    at: Option<(Range<usize>, String)>,
    /// Whether the target itself sets it.
    own: bool,
}

impl Chosen {
    fn origin(&self) -> &'static str {
        match (&self.at, self.own) {
            (_, true) => "this target's",
            (Some(_), false) => "[defaults]'",
            (None, _) => "the built-in",
        }
    }
}

fn check(ctx: &Ctx, field: &str, s: &Setting, v: &Spanned<f64>) -> Result<Duration, ConfigError> {
    ctx.seconds(v, field, (0.0, MAX_S), !s.zero_ok)
}

/// The target's own value, else `[defaults]`' (already checked), else the built-in one.
fn choose(
    ctx: &Ctx,
    target: &str,
    s: &Setting,
    own: &Option<Spanned<f64>>,
    default: &Option<Spanned<f64>>,
) -> Result<Chosen, ConfigError> {
    let (v, field, own) = match (own, default) {
        (Some(v), _) => (v, format!("targets.{target}.{}", s.name), true),
        (None, Some(v)) => (v, format!("defaults.{}", s.name), false),
        (None, None) => {
            return Ok(Chosen {
                value: Duration::from_secs_f64(s.default_s),
                at: None,
                own: false,
            })
        }
    };
    Ok(Chosen {
        value: check(ctx, &field, s, v)?,
        at: Some((v.span(), field)),
        own,
    })
}

fn timing(
    ctx: &Ctx,
    name: &str,
    t: &RawTarget,
    d: &RawTiming,
    header: Range<usize>,
) -> Result<Timing, ConfigError> {
    let attempt = choose(
        ctx,
        name,
        &ATTEMPT,
        &t.attempt_timeout_s,
        &d.attempt_timeout_s,
    )?;
    let total = choose(ctx, name, &TOTAL, &t.total_timeout_s, &d.total_timeout_s)?;
    if total.value < attempt.value {
        // Reported where the target's own value is, else where the default that decided it.
        let own = |c: &Chosen| c.at.clone().filter(|_| c.own);
        let (span, field) = own(&total)
            .or_else(|| own(&attempt))
            .or_else(|| total.at.clone())
            .or_else(|| attempt.at.clone())
            .unwrap_or_else(|| (header, format!("targets.{name}")));
        return Err(ctx.err(Some(span), &field, format!(
            "target `{name}`: expected total_timeout_s >= attempt_timeout_s, found {} s ({} total_timeout_s) below {} s ({} attempt_timeout_s)",
            total.value.as_secs_f64(), total.origin(), attempt.value.as_secs_f64(), attempt.origin()
        )));
    }
    Ok(Timing {
        attempt_timeout: attempt.value,
        total_timeout: total.value,
        delay: choose(ctx, name, &DELAY, &t.delay_s, &d.delay_s)?.value,
        random_delay: choose(
            ctx,
            name,
            &RANDOM_DELAY,
            &t.random_delay_s,
            &d.random_delay_s,
        )?
        .value,
    })
}

/// Checks `[defaults]` on its own, so a bad value is reported at its line even where no
/// target uses it.
fn check_defaults(ctx: &Ctx, d: &RawTiming) -> Result<(), ConfigError> {
    for (s, v) in [
        (&ATTEMPT, &d.attempt_timeout_s),
        (&TOTAL, &d.total_timeout_s),
        (&DELAY, &d.delay_s),
        (&RANDOM_DELAY, &d.random_delay_s),
    ] {
        if let Some(v) = v {
            check(ctx, &format!("defaults.{}", s.name), s, v)?;
        }
    }
    if let (Some(a), Some(t)) = (&d.attempt_timeout_s, &d.total_timeout_s) {
        if t.get_ref() < a.get_ref() {
            return Err(ctx.at(
                t,
                "defaults.total_timeout_s",
                format!(
                    "expected total_timeout_s >= attempt_timeout_s, found {} below {}",
                    t.get_ref(),
                    a.get_ref()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks every target against the devices.
pub(super) fn resolve(
    ctx: &Ctx,
    raw: BTreeMap<String, Spanned<RawTarget>>,
    defaults: &RawTiming,
    devices: &BTreeMap<String, DeviceConfig>,
    witnesses: &BTreeMap<String, WitnessConfig>,
) -> Result<BTreeMap<String, TargetConfig>, ConfigError> {
    check_defaults(ctx, defaults)?;
    let mut targets = BTreeMap::new();
    for (name, t) in raw {
        let header = t.span();
        let t = t.into_inner();
        let levels = levels(ctx, &name, &t, devices)?;
        let mut identities = BTreeMap::new();
        for (dev, id) in &t.identities {
            if !levels.iter().flatten().any(|e| &e.device == dev) {
                return Err(ctx.at(
                    id,
                    &format!("targets.{name}.identities"),
                    format!(
                        "identity given for device `{dev}`, which no level of this target uses"
                    ),
                ));
            }
            identities.insert(dev.clone(), id.get_ref().trim().to_ascii_lowercase());
        }
        let timing = timing(ctx, &name, &t, defaults, header.clone())?;
        let (confirm, witnesses) = confirm(ctx, &name, &t, witnesses, &timing, header, &levels)?;
        targets.insert(
            name.clone(),
            TargetConfig {
                name,
                levels,
                identities,
                timing,
                confirm,
                witnesses,
            },
        );
    }
    Ok(targets)
}

/// `confirm` and `witnesses`: `device+witness` needs at least one witness, each defined, each
/// able to watch this target, and an attempt timeout longer than its settle time (the witness
/// starts watching when the device read back off, within the same attempt).
fn confirm(
    ctx: &Ctx,
    name: &str,
    t: &RawTarget,
    all: &BTreeMap<String, WitnessConfig>,
    timing: &Timing,
    header: Range<usize>,
    levels: &[Vec<LevelEntry>],
) -> Result<(Confirm, Vec<String>), ConfigError> {
    let confirm = match &t.confirm {
        None => Confirm::Device,
        Some(c) => match c.get_ref().as_str() {
            "device" => Confirm::Device,
            "device+witness" => Confirm::DeviceAndWitness,
            other => return Err(ctx.at(c, &format!("targets.{name}.confirm"), format!(
                "expected \"device\" (the device's read-back alone) or \"device+witness\" (the device's read-back and every witness in `witnesses` silent), found `{other}`"
            ))),
        },
    };
    let field = format!("targets.{name}.witnesses");
    let list = t.witnesses.as_ref();
    match (confirm, list) {
        (Confirm::Device, None) => return Ok((confirm, Vec::new())),
        (Confirm::Device, Some(l)) => {
            return Err(ctx.at(l, &field, "witnesses are listed but confirm is \"device\", so none would be asked: set confirm = \"device+witness\" or remove `witnesses`"))
        }
        (Confirm::DeviceAndWitness, None) => {
            return Err(ctx.err(Some(header), &field, "confirm = \"device+witness\" needs `witnesses = [\"NAME\", ...]` naming one or more [witnesses.NAME] tables"))
        }
        (Confirm::DeviceAndWitness, Some(l)) if l.get_ref().is_empty() => {
            return Err(ctx.at(l, &field, "confirm = \"device+witness\" needs one or more witnesses here"))
        }
        _ => {}
    }
    let mut names = Vec::new();
    for w in list.map(|l| l.get_ref().as_slice()).unwrap_or_default() {
        let Some(cfg) = all.get(w.get_ref()) else {
            return Err(ctx.at(
                w,
                &field,
                format!(
                    "witness `{}` is not defined; expected one of: {}",
                    w.get_ref(),
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if names.contains(w.get_ref()) {
            return Err(ctx.at(
                w,
                &field,
                format!("witness `{}` is listed twice", w.get_ref()),
            ));
        }
        if let Err(e) = cfg.kind.check(name, levels) {
            return Err(ctx.at(
                w,
                &field,
                format!("witness `{}` cannot watch `{name}`: {e}", w.get_ref()),
            ));
        }
        let settle = cfg.kind.settle();
        if timing.attempt_timeout <= settle {
            return Err(ctx.at(w, &field, format!(
                "witness `{}` watches for {} s after the device reads back off, within the same attempt, but attempt_timeout_s is {} s: expected attempt_timeout_s above the settle time (plus the device's own read-back time)",
                w.get_ref(),
                settle.as_secs_f64(),
                timing.attempt_timeout.as_secs_f64()
            )));
        }
        names.push(w.get_ref().clone());
    }
    Ok((confirm, names))
}

fn levels(
    ctx: &Ctx,
    name: &str,
    t: &RawTarget,
    devices: &BTreeMap<String, DeviceConfig>,
) -> Result<Vec<Vec<LevelEntry>>, ConfigError> {
    let field = format!("targets.{name}.levels");
    if t.levels.get_ref().is_empty() {
        return Err(ctx.at(
            &t.levels,
            &field,
            "expected at least one level, e.g. levels = [[\"bmc-node1\"]]",
        ));
    }
    let mut levels = Vec::new();
    for (i, level) in t.levels.get_ref().iter().enumerate() {
        if level.is_empty() {
            return Err(ctx.at(
                &t.levels,
                &field,
                format!(
                    "level {} is empty; a level lists one or more devices",
                    i + 1
                ),
            ));
        }
        let mut entries = Vec::new();
        for entry in level {
            let (dev, port) = match entry.get_ref().split_once(':') {
                Some((d, p)) => (d.to_string(), Some(p.to_string())),
                None => (entry.get_ref().clone(), None),
            };
            let Some(d) = devices.get(&dev) else {
                return Err(ctx.at(
                    entry,
                    &field,
                    format!(
                        "level {} names device `{dev}`, which is not defined; expected one of: {}",
                        i + 1,
                        devices.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            if !d.may_fence(name) {
                return Err(ctx.at(entry, &field, format!(
                    "device `{dev}` may not fence `{name}`: its host_list is [{}]; add the target there (or to its host_map) or use another device",
                    d.selection.host_list.as_deref().unwrap_or_default().join(", ")
                )));
            }
            entries.push(LevelEntry {
                port: d.port_for(name, port),
                device: dev,
            });
        }
        levels.push(entries);
    }
    Ok(levels)
}
