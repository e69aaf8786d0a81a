//! Witness kind `power-path`: an outlet that feeds the node, `device = "NAME"` (a PDU or a relay
//! line with a sense input) and `port = "..."`, must read off after the level's device read
//! back off.
//!
//! Only devices that sit on the power path qualify: a switched PDU's outlet (`snmp-pdu`,
//! `serial-pdu`) or a relay line whose sense input reads the node's power. A BMC or Redfish
//! service reports the host's power as its own controller believes it (the very thing that
//! lies), SBD has no power state, an agent's status is its device's, and a relay without a
//! sense line reads back only what it was told to do. And the device must not be one of the
//! target's levels: at that level it would vouch for itself.
//!
//! `max_watts = N` (optional) adds the outlet's load: an outlet that reads on but draws at most
//! N watts counts as no sign of life, one that draws more is a veto. Only an `snmp-pdu` whose
//! model meters each outlet (`apc-rpdu2`: PowerNet-MIB rPDU2OutletMeteredStatusPower) reports
//! a draw; the configuration refuses `max_watts` on any other device.

use super::witness::{DeviceLookup, WitnessCx, WitnessKindSettings};
use super::LevelEntry;
use super::{ConfigError, DeviceKind};
use drivers::witness::power_path::{self, PowerPathWitness};
use drivers::witness::Witness;
use std::sync::Arc;
use std::time::Duration;

/// Checked `power-path` witness settings.
#[derive(Debug, Clone)]
pub struct PowerPathSettings {
    /// The device whose outlet feeds the node.
    pub device: String,
    /// The outlet (or relay line).
    pub port: String,
    /// How long a transition may be reported before it counts as no evidence.
    pub settle: Duration,
    /// Deadline of each status read.
    pub read_timeout: Duration,
    /// The most an outlet that reads on may draw for a node that is off; `None`: no draw read.
    pub max_watts: Option<u32>,
}

const WANT: &str = "a power-path witness needs `device = \"NAME\"`, a [devices.NAME] on the node's power path (kind snmp-pdu or serial-pdu, or a relay line with a sense_line), and `port = \"...\"`, the outlet or line feeding the node";

impl WitnessKindSettings for PowerPathSettings {
    const KEYS: &'static [&'static str] =
        &["device", "port", "settle_s", "timeout_ms", "max_watts"];

    fn resolve(cx: &mut WitnessCx<'_>) -> Result<Self, ConfigError> {
        let Some(device) = cx.string("device")? else {
            return Err(cx.missing("device", WANT));
        };
        let Some(d) = cx.devices.get(device.get_ref()) else {
            let known: Vec<&str> = cx.devices.keys().map(String::as_str).collect();
            return Err(cx.at(
                &device,
                "device",
                format!(
                    "device `{}` is not defined; expected one of: {}",
                    device.get_ref(),
                    known.join(", ")
                ),
            ));
        };
        let kind = d.kind_name();
        let port = cx.string("port")?;
        match &d.kind {
            DeviceKind::SnmpPdu(_) | DeviceKind::SerialPdu(_) => {
                if port.is_none() {
                    return Err(cx.missing(
                        "port",
                        format!(
                            "device `{}` is a {kind} with several outlets: give `port = \"OUTLET\"`, the outlet feeding the node (as a level entry `{}:OUTLET` names it)",
                            device.get_ref(),
                            device.get_ref()
                        ),
                    ));
                }
            }
            DeviceKind::Relay(r) => {
                let Some(p) = &port else {
                    return Err(cx.missing(
                        "port",
                        format!(
                            "device `{}` is a relay board: give `port = \"LINE\"`, the line feeding the node; expected one of: {}",
                            device.get_ref(),
                            r.lines.iter().map(|l| l.config.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                let Some(line) = r.lines.iter().find(|l| &l.config.name == p.get_ref()) else {
                    return Err(cx.at(
                        p,
                        "port",
                        format!(
                            "relay `{}` has no line `{}`; expected one of: {}",
                            device.get_ref(),
                            p.get_ref(),
                            r.lines
                                .iter()
                                .map(|l| l.config.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                if line.sense_offset.is_none() {
                    return Err(cx.at(
                        p,
                        "port",
                        format!(
                            "relay line `{}:{}` has no sense_line: its status is only the output it was commanded to, not the node's power; wire and configure a sense_line, or use another witness",
                            device.get_ref(),
                            p.get_ref()
                        ),
                    ));
                }
            }
            DeviceKind::Ipmi(_)
            | DeviceKind::Redfish(_)
            | DeviceKind::Sbd(_)
            | DeviceKind::Agent(_) => {
                return Err(cx.at(
                    &device,
                    "device",
                    format!(
                        "device `{}` is {} {kind} device, not on the node's power path: a BMC or Redfish service reports the host's power as its own controller sees it (the state that can lie), sbd has no power state, and an agent's status is its device's; {WANT}",
                        device.get_ref(),
                        if kind.starts_with(['a', 'i']) { "an" } else { "a" }
                    ),
                ));
            }
        }
        let max_watts = cx.integer("max_watts", "watts", (0, 100_000))?;
        if let Some(w) = &max_watts {
            let metered =
                matches!(&d.kind, DeviceKind::SnmpPdu(p) if p.model.outlet_watts.is_some());
            if !metered {
                let model = match &d.kind {
                    DeviceKind::SnmpPdu(p) => format!(" (model {})", p.model.name),
                    _ => String::new(),
                };
                return Err(cx.at(
                    w,
                    "max_watts",
                    format!(
                        "device `{}` is a {kind}{model}, which reports no outlet power draw: max_watts needs an snmp-pdu whose model meters each outlet (apc-rpdu2); remove max_watts to use the outlet's switched state only",
                        device.get_ref()
                    ),
                ));
            }
        }
        let port = port.map(|p| p.into_inner()).unwrap_or_default();
        Ok(PowerPathSettings {
            max_watts: max_watts.map(|w| u32::try_from(*w.get_ref()).unwrap_or(u32::MAX)),
            device: device.into_inner(),
            port,
            settle: cx.seconds("settle_s", power_path::DEFAULT_SETTLE, (0.0, 600.0))?,
            read_timeout: cx.millis(
                "timeout_ms",
                power_path::DEFAULT_READ_TIMEOUT,
                (100, 60_000),
            )?,
        })
    }

    fn describe(&self) -> String {
        let draw = match self.max_watts {
            Some(w) => format!(" or draws at most {w} W"),
            None => String::new(),
        };
        format!(
            "outlet {}:{} reads off{draw}; settle_s {}, timeout_ms {}",
            self.device,
            self.port,
            self.settle.as_secs_f64(),
            self.read_timeout.as_millis()
        )
    }

    fn settle(&self) -> Duration {
        self.settle
    }

    fn check(&self, _target: &str, levels: &[Vec<LevelEntry>]) -> Result<(), String> {
        match levels
            .iter()
            .position(|l| l.iter().any(|e| e.device == self.device))
        {
            Some(i) => Err(format!(
                "it reads device `{}`, which level {} of this target uses: at that level the device would vouch for its own \"off\"; name a device on the power path that no level uses",
                self.device,
                i + 1
            )),
            None => Ok(()),
        }
    }

    fn build(&self, _target: &str, device: &DeviceLookup<'_>) -> Result<Arc<dyn Witness>, String> {
        let dev = device(&self.device)
            .ok_or_else(|| format!("device `{}` has no driver in the engine", self.device))?;
        Ok(Arc::new(PowerPathWitness {
            device_name: self.device.clone(),
            device: dev,
            port: Some(self.port.clone()),
            settle: self.settle,
            read_timeout: self.read_timeout,
            max_watts: self.max_watts,
        }))
    }
}
