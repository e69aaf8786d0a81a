//! [`PduDevice`]: a switched PDU reached over SNMP, as a [`PowerDevice`] whose ports are
//! outlets.
//!
//! A level entry's port names the outlet as `3` (number), `db1-psu1` (name, looked up in the
//! PDU's outlet table on every call) or `3=db1-psu1` (number, checked to carry that name).
//! A name is pinned to the outlet it first resolved to: if the PDU is later rewired or
//! renamed so that the name sits on another outlet, or on none, or on two, every call fails
//! instead of switching an outlet that may power another node.

use super::ber::Oid;
use super::client::{Client, ClientConfig, Security, SnmpError};
use super::message::{error_status, Value, Version};
use super::model::{self, Model};
use crate::{DeviceError, Identity, Outlet, PowerCommand, PowerDevice, PowerState};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// Most outlets a listing walks (a guard against an agent whose table never ends).
pub const MAX_OUTLETS: usize = 512;

/// Configuration of one PDU.
#[derive(Debug, Clone)]
pub struct PduConfig {
    /// Address, credentials, timeout and retries of the SNMP session.
    pub client: ClientConfig,
    /// The vendor model (OIDs and values).
    pub model: &'static Model,
}

/// How a level entry names an outlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutletRef {
    /// By number.
    Number(u32),
    /// By name, looked up in the outlet table.
    Name(String),
    /// By number, which must carry this name.
    Checked(u32, String),
}

impl OutletRef {
    /// Parses `3`, `db1-psu1` or `3=db1-psu1`.
    pub fn parse(port: &str) -> Result<OutletRef, DeviceError> {
        let bad = || DeviceError::NoSuchPort {
            port: port.to_string(),
        };
        if let Some((n, name)) = port.split_once('=') {
            let n = n.trim().parse::<u32>().map_err(|_| bad())?;
            if name.is_empty() {
                return Err(bad());
            }
            return Ok(OutletRef::Checked(n, name.to_string()));
        }
        if port.is_empty() {
            return Err(bad());
        }
        Ok(match port.parse::<u32>() {
            Ok(n) => OutletRef::Number(n),
            Err(_) => OutletRef::Name(port.to_string()),
        })
    }
}

#[derive(Debug, Default)]
struct State {
    client: Option<Client>,
    /// Outlet names and the number each first resolved to.
    pinned: BTreeMap<String, u32>,
}

/// A switched PDU over SNMP v1, v2c or v3.
#[derive(Debug)]
pub struct PduDevice {
    cfg: PduConfig,
    state: Mutex<State>,
}

fn text(v: &Value) -> Option<String> {
    v.as_octets()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
}

impl PduDevice {
    /// A device for this configuration; nothing is sent until the first call.
    pub fn new(cfg: PduConfig) -> Self {
        Self {
            cfg,
            state: Mutex::new(State::default()),
        }
    }

    fn address(&self) -> String {
        self.cfg.client.addr.to_string()
    }

    fn device_error(&self, e: SnmpError) -> DeviceError {
        let address = self.address();
        match e {
            SnmpError::Timeout {
                what,
                tries,
                timeout_ms,
            } => {
                let hint = match &self.cfg.client.security {
                    // RFC 3584 §4: an agent silently drops a request with an unknown community.
                    Security::Community { .. } => "; an SNMP agent ignores a wrong community silently, so also check the community and SNMP version",
                    Security::Usm(_) => "",
                };
                DeviceError::Timeout {
                    address,
                    what: format!("{what}, {tries} tries{hint}"),
                    timeout_ms: timeout_ms.saturating_mul(tries.into()),
                }
            }
            SnmpError::Malformed { what, detail } => DeviceError::Protocol {
                address,
                detail: format!("{what}: {detail}"),
            },
            SnmpError::Io(reason) => DeviceError::Unreachable { address, reason },
            SnmpError::Auth(detail) => DeviceError::AuthFailed { address, detail },
        }
    }

    /// Runs `f` with a connected client; drops the session after a failure, so the next call
    /// starts with a fresh socket and (v3) a fresh engine discovery.
    async fn with_client<T>(
        &self,
        st: &mut State,
        f: impl for<'c> FnOnce(
            &'c mut Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, SnmpError>> + Send + 'c>,
        >,
    ) -> Result<T, DeviceError> {
        if st.client.is_none() {
            st.client = Some(
                Client::connect(self.cfg.client.clone())
                    .await
                    .map_err(|e| self.device_error(e))?,
            );
        }
        let Some(client) = st.client.as_mut() else {
            return Err(DeviceError::Unreachable {
                address: self.address(),
                reason: "no session".into(),
            });
        };
        let r = f(client).await;
        if r.is_err() {
            st.client = None;
        }
        r.map_err(|e| self.device_error(e))
    }

    /// GETs `oids` and returns their values in order; an error status is a refusal.
    async fn get(
        &self,
        st: &mut State,
        oids: Vec<Oid>,
        what: &str,
    ) -> Result<Vec<Value>, DeviceError> {
        let asked = oids.clone();
        let pdu = self
            .with_client(st, move |c| Box::pin(async move { c.get(&oids).await }))
            .await?;
        if pdu.error_status == error_status::NO_SUCH_NAME {
            return Err(self.no_such(&asked, pdu.error_index, what));
        }
        if pdu.error_status != 0 {
            return Err(DeviceError::Refused {
                address: self.address(),
                command: what.to_string(),
                detail: format!(
                    "error status {} ({})",
                    pdu.error_status,
                    error_status::name(pdu.error_status)
                ),
            });
        }
        if pdu.varbinds.len() != asked.len()
            || pdu.varbinds.iter().zip(&asked).any(|((o, _), a)| o != a)
        {
            return Err(DeviceError::Protocol {
                address: self.address(),
                detail: format!("the reply to {what} names other objects than were asked"),
            });
        }
        Ok(pdu.varbinds.into_iter().map(|(_, v)| v).collect())
    }

    fn no_such(&self, asked: &[Oid], index: i64, what: &str) -> DeviceError {
        let oid = usize::try_from(index - 1)
            .ok()
            .and_then(|i| asked.get(i))
            .or(asked.first())
            .map(|o| o.to_string())
            .unwrap_or_default();
        DeviceError::Refused {
            address: self.address(),
            command: what.to_string(),
            detail: format!("the PDU has no object {oid} (noSuchName): wrong outlet number or wrong `model` for this PDU"),
        }
    }

    /// Walks the name column: (outlet number, name) for every outlet.
    async fn walk_names(&self, st: &mut State) -> Result<Vec<(u32, String)>, DeviceError> {
        let m = self.cfg.model;
        let column = model::oid(m.names);
        let mut at = column.clone();
        let mut out = Vec::new();
        while out.len() < MAX_OUTLETS {
            let from = at.clone();
            let pdu = self
                .with_client(st, move |c| {
                    Box::pin(async move { c.get_next(&from).await })
                })
                .await?;
            // v1 signals the end of the MIB with noSuchName.
            if pdu.error_status == error_status::NO_SUCH_NAME {
                break;
            }
            if pdu.error_status != 0 {
                return Err(DeviceError::Refused {
                    address: self.address(),
                    command: "walk outlet names".into(),
                    detail: error_status::name(pdu.error_status).into(),
                });
            }
            let Some((next, value)) = pdu.varbinds.into_iter().next() else {
                return Err(DeviceError::Protocol {
                    address: self.address(),
                    detail: "a GetNext reply without a variable".into(),
                });
            };
            if !next.starts_with(&column) || value.is_exception() {
                break;
            }
            // A non-increasing GetNext answer would loop forever (RFC 3416 §4.2.2).
            if next <= at {
                return Err(DeviceError::Protocol {
                    address: self.address(),
                    detail: format!("GetNext went backwards from {at} to {next}"),
                });
            }
            if let (Some(n), Some(name)) = (m.outlet_of_name_oid(&next), text(&value)) {
                out.push((n, name));
            }
            at = next;
        }
        Ok(out)
    }

    /// The outlet number for `r`, and the name it must carry (checked by the caller).
    async fn resolve(
        &self,
        st: &mut State,
        r: &OutletRef,
    ) -> Result<(u32, Option<String>), DeviceError> {
        match r {
            OutletRef::Number(n) => Ok((*n, None)),
            OutletRef::Checked(n, name) => Ok((*n, Some(name.clone()))),
            OutletRef::Name(name) => {
                let table = self.walk_names(st).await?;
                let hits: Vec<u32> = table
                    .iter()
                    .filter(|(_, nm)| nm == name)
                    .map(|(n, _)| *n)
                    .collect();
                let n = match hits.as_slice() {
                    [] => return Err(DeviceError::NoSuchPort { port: name.clone() }),
                    [n] => *n,
                    many => {
                        return Err(DeviceError::Policy {
                            detail: format!(
                                "PDU {}: outlets {many:?} are all named `{name}`; a name must pick one outlet. Rename them on the PDU or configure the outlet as NUMBER=NAME",
                                self.address()
                            ),
                        })
                    }
                };
                match st.pinned.get(name) {
                    Some(p) if *p != n => Err(DeviceError::Policy {
                        detail: format!(
                            "PDU {}: outlet name `{name}` moved from outlet {p} to outlet {n} since fenced first used it; the PDU was rewired or renamed, so the mapping may point at another node. Check the wiring, then restart fenced or configure `{n}={name}`",
                            self.address()
                        ),
                    }),
                    _ => {
                        st.pinned.insert(name.clone(), n);
                        Ok((n, Some(name.clone())))
                    }
                }
            }
        }
    }

    fn check_name(&self, n: u32, want: &str, got: &Value) -> Result<(), DeviceError> {
        match text(got) {
            Some(name) if name == want => Ok(()),
            other => Err(DeviceError::Policy {
                detail: format!(
                    "PDU {}: outlet {n} is named {}, not `{want}`; the PDU was rewired or renamed, so the mapping may point at another node. Nothing was switched; fix the level entry or the outlet's name",
                    self.address(),
                    other.map(|s| format!("`{s}`")).unwrap_or_else(|| "nothing readable".into())
                ),
            }),
        }
    }

    fn port<'a>(&self, port: Option<&'a str>) -> Result<&'a str, DeviceError> {
        port.ok_or_else(|| DeviceError::NoSuchPort {
            port: "(none: a PDU level entry needs DEVICE:OUTLET, e.g. pdu-a:3 or pdu-a:db1-psu1)"
                .into(),
        })
    }

    fn state_of(&self, n: u32, v: &Value) -> Result<PowerState, DeviceError> {
        let m = self.cfg.model;
        match v {
            Value::Integer(x) if *x == m.state_on => Ok(PowerState::On),
            Value::Integer(x) if *x == m.state_off => Ok(PowerState::Off),
            // A pending command is not a change: the engine keeps polling (and times out).
            Value::Integer(x) if m.state_pending.is_some_and(|(off, _)| *x == off) => {
                Ok(PowerState::PoweringOff)
            }
            Value::Integer(x) if m.state_pending.is_some_and(|(_, on)| *x == on) => {
                Ok(PowerState::PoweringOn)
            }
            Value::Integer(_) => Ok(PowerState::Unknown),
            Value::NoSuchInstance | Value::NoSuchObject => Err(DeviceError::NoSuchPort {
                port: n.to_string(),
            }),
            other => Err(DeviceError::Protocol {
                address: self.address(),
                detail: format!("outlet {n}'s state is {other:?}, not an INTEGER"),
            }),
        }
    }
}

/// An outlet's metered power from its active-power varbind, in watts. The MIB types the column
/// INTEGER (PowerNet-MIB) but agents also answer Gauge32; a negative value (APC answers -1 on
/// an outlet that is not metered), an exception or any other type is not a reading, and says
/// what was seen instead.
pub fn watts_of(v: &Value) -> Result<u32, String> {
    match v {
        Value::Integer(w) => u32::try_from(*w)
            .map_err(|_| format!("reads {w} W, which is not a load reading (not metered?)")),
        Value::Gauge32(w) => Ok(*w),
        Value::NoSuchInstance | Value::NoSuchObject => Err(
            "has no active-power reading (noSuchInstance: this unit does not meter its outlets)"
                .into(),
        ),
        other => Err(format!(
            "active power is {other:?}, not an INTEGER number of watts"
        )),
    }
}

#[async_trait]
impl PowerDevice for PduDevice {
    async fn power_draw(&self, port: Option<&str>) -> Result<Option<u32>, DeviceError> {
        let r = OutletRef::parse(self.port(port)?)?;
        let mut st = self.state.lock().await;
        let (n, name) = self.resolve(&mut st, &r).await?;
        let Some(watts) = self.cfg.model.watts_oid(n) else {
            return Ok(None);
        };
        let mut oids = vec![watts];
        if name.is_some() {
            oids.push(self.cfg.model.name_oid(n));
        }
        let v = self.get(&mut st, oids, "read outlet power").await?;
        if let Some(want) = name {
            self.check_name(n, &want, v.get(1).unwrap_or(&Value::Null))?;
        }
        watts_of(v.first().unwrap_or(&Value::Null))
            .map(Some)
            .map_err(|detail| DeviceError::Protocol {
                address: self.address(),
                detail: format!("outlet {n} {detail}"),
            })
    }

    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError> {
        let r = OutletRef::parse(self.port(port)?)?;
        let mut st = self.state.lock().await;
        let (n, name) = self.resolve(&mut st, &r).await?;
        let m = self.cfg.model;
        match name {
            None => {
                let v = self
                    .get(&mut st, vec![m.state_oid(n)], "read outlet state")
                    .await?;
                self.state_of(n, v.first().unwrap_or(&Value::Null))
            }
            Some(want) => {
                let v = self
                    .get(
                        &mut st,
                        vec![m.name_oid(n), m.state_oid(n)],
                        "read outlet name and state",
                    )
                    .await?;
                self.check_name(n, &want, v.first().unwrap_or(&Value::Null))?;
                self.state_of(n, v.get(1).unwrap_or(&Value::Null))
            }
        }
    }

    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        let r = OutletRef::parse(self.port(port)?)?;
        let mut st = self.state.lock().await;
        let (n, name) = self.resolve(&mut st, &r).await?;
        let m = self.cfg.model;
        if let Some(want) = name {
            let v = self
                .get(&mut st, vec![m.name_oid(n)], "read outlet name")
                .await?;
            self.check_name(n, &want, v.first().unwrap_or(&Value::Null))?;
        }
        let (oid, value) = m.command(n, matches!(command, PowerCommand::On));
        let o2 = oid.clone();
        let pdu = self
            .with_client(&mut st, move |c| {
                Box::pin(async move { c.set(&o2, Value::Integer(value)).await })
            })
            .await?;
        let what = format!("set outlet {n} {command}");
        if pdu.error_status != 0 {
            return Err(DeviceError::Refused {
                address: self.address(),
                command: what,
                detail: format!(
                    "error status {} ({}){}",
                    pdu.error_status,
                    error_status::name(pdu.error_status),
                    if matches!(pdu.error_status, 2 | 6 | 16 | 17) {
                        "; the community or v3 user may be read-only, or the outlet does not exist"
                    } else {
                        ""
                    }
                ),
            });
        }
        // An agent that answers the set with another value did not do what was asked.
        match pdu.varbinds.as_slice() {
            [(o, Value::Integer(v))] if *o == oid && *v == value => Ok(()),
            other => Err(DeviceError::Refused {
                address: self.address(),
                command: what,
                detail: format!(
                    "the PDU answered the set with {other:?} instead of {oid} = {value}"
                ),
            }),
        }
    }

    async fn list(&self) -> Result<Vec<Outlet>, DeviceError> {
        let mut st = self.state.lock().await;
        let table = self.walk_names(&mut st).await?;
        let m = self.cfg.model;
        let mut out = Vec::with_capacity(table.len());
        for chunk in table.chunks(16) {
            let oids = chunk.iter().map(|(n, _)| m.state_oid(*n)).collect();
            let values = self.get(&mut st, oids, "read outlet states").await?;
            for ((n, name), v) in chunk.iter().zip(values) {
                out.push(Outlet {
                    id: n.to_string(),
                    name: Some(name.clone()),
                    state: self.state_of(*n, &v).ok(),
                });
            }
        }
        Ok(out)
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        let m = self.cfg.model;
        let mut st = self.state.lock().await;
        let mut oids = vec![
            model::oid(model::SYS_NAME),
            model::oid(model::SYS_DESCR),
            model::oid(model::SYS_OBJECT_ID),
        ];
        if let Some(s) = m.serial {
            oids.push(model::oid(s));
        }
        let v = self.get(&mut st, oids, "read the PDU's identity").await?;
        let sys_name = v.first().and_then(text).unwrap_or_default();
        let descr = v.get(1).and_then(text).unwrap_or_default();
        let object_id = match v.get(2) {
            Some(Value::Oid(o)) => o.to_string(),
            _ => String::new(),
        };
        let serial = v.get(3).and_then(text).filter(|s| !s.is_empty());
        let (kind, value) = match serial {
            Some(s) => ("serial", s),
            None if !sys_name.is_empty() => ("sys-name", sys_name.clone()),
            None => {
                return Err(DeviceError::Protocol {
                    address: self.address(),
                    detail: "the PDU reports neither a serial number nor a sysName to identify it"
                        .into(),
                })
            }
        };
        Ok(Identity {
            kind: kind.into(),
            value: value.to_ascii_lowercase(),
            description: format!(
                "{descr} (model {}, sysName {sys_name}, sysObjectID {object_id})",
                m.name
            ),
        })
    }
}

/// The SNMP version a [`Security`] speaks, for display.
pub fn version_of(s: &Security) -> &'static str {
    match s {
        Security::Community {
            version: Version::V1,
            ..
        } => "1",
        Security::Community { .. } => "2c",
        Security::Usm(_) => "3",
    }
}

/// A short default per-try timeout: PDUs answer on the LAN in milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn watts_are_read_from_an_integer_or_a_gauge() {
        assert_eq!(watts_of(&Value::Integer(0)), Ok(0));
        assert_eq!(watts_of(&Value::Integer(142)), Ok(142));
        assert_eq!(watts_of(&Value::Gauge32(7)), Ok(7));
    }

    #[test]
    fn what_is_not_a_watt_reading_is_an_error_that_says_what_was_seen() {
        let e = watts_of(&Value::Integer(-1)).unwrap_err();
        assert!(e.contains("-1 W") && e.contains("not metered"), "{e}");
        let e = watts_of(&Value::NoSuchInstance).unwrap_err();
        assert!(e.contains("noSuchInstance"), "{e}");
        let e = watts_of(&Value::OctetString(b"12".to_vec())).unwrap_err();
        assert!(e.contains("not an INTEGER"), "{e}");
        assert!(watts_of(&Value::Null).is_err());
    }
}
