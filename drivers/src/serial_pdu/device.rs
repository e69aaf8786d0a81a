//! [`SerialPduDevice`]: a serial-console PDU as a [`PowerDevice`] whose ports are outlets.
//!
//! A PDU serves several outlets (a node with two power supplies is two outlets, maybe of two
//! PDUs): every call takes the device's one mutex, so one dialogue at a time runs per PDU and
//! a reply can only be read by the call that asked for it. `power` reports that the PDU took
//! the command; whether the outlet went off is only ever learnt from `status`, which the
//! engine reads back until it says off or the attempt's deadline passes. A level entry per
//! outlet makes the engine name the one that failed.
//!
//! A local port stays open (and locked) between calls, so no other program can slip in
//! between a fence and its read-back; a TCP console is connected per call and logged out
//! after it, since console servers and PDUs usually allow one client per port (WTI's manual
//! warns that an idle telnet session blocks every other one).

use super::model::Model;
use super::parse::{parse_ack, parse_status, render, ParseError, StatusReport};
use super::session::{Session, SessionError, Timeouts};
use super::transport::{Endpoint, OpenError, Opened, PortLock};
use crate::{DeviceError, Identity, Outlet, PowerCommand, PowerDevice, PowerState, Secret};
use async_trait::async_trait;
use tokio::sync::Mutex;

/// Configuration of one serial PDU.
#[derive(Debug, Clone)]
pub struct SerialPduConfig {
    /// Where its console is.
    pub endpoint: Endpoint,
    /// Its dialogue.
    pub model: &'static Model,
    /// The user name, if the console asks for one.
    pub username: Option<String>,
    /// The password, if the console asks for one.
    pub password: Option<Secret>,
    /// Connect, read and reply timeouts.
    pub timeouts: Timeouts,
}

struct Live {
    session: Session,
    /// Held as long as the session: the port's lock file.
    _lock: Option<PortLock>,
}

/// A serial-console PDU.
pub struct SerialPduDevice {
    cfg: SerialPduConfig,
    live: Mutex<Option<Live>>,
}

impl std::fmt::Debug for SerialPduDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialPduDevice")
            .field("endpoint", &self.cfg.endpoint)
            .field("model", &self.cfg.model.name)
            .finish_non_exhaustive()
    }
}

/// One failed exchange, before it becomes a [`DeviceError`].
enum Failure {
    Open(OpenError),
    Session(SessionError),
    Parse(ParseError),
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        Failure::Session(e)
    }
}

impl From<ParseError> for Failure {
    fn from(e: ParseError) -> Self {
        Failure::Parse(e)
    }
}

impl SerialPduDevice {
    /// A device for this configuration; nothing is opened until the first call.
    pub fn new(cfg: SerialPduConfig) -> Self {
        Self {
            cfg,
            live: Mutex::new(None),
        }
    }

    fn address(&self) -> String {
        self.cfg.endpoint.to_string()
    }

    fn keeps_open(&self) -> bool {
        matches!(self.cfg.endpoint, Endpoint::Serial(_))
    }

    fn error(&self, f: Failure, command: &str) -> DeviceError {
        let address = self.address();
        match f {
            Failure::Open(e @ (OpenError::Locked { .. } | OpenError::LockFile { .. })) => {
                DeviceError::Unreachable {
                    address,
                    reason: e.to_string(),
                }
            }
            Failure::Open(OpenError::ConnectTimeout { timeout, .. }) => DeviceError::Timeout {
                address,
                what: "TCP connect to the console".into(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            },
            Failure::Open(e) => DeviceError::Unreachable {
                address,
                reason: e.to_string(),
            },
            Failure::Session(SessionError::Timeout { what, waited }) => DeviceError::Timeout {
                address,
                what: format!(
                    "{command}: {what}; check the line settings (baud, parity) and the `model`, or the console is hung"
                ),
                timeout_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            },
            Failure::Session(SessionError::Login(e)) => DeviceError::AuthFailed {
                address,
                detail: e.to_string(),
            },
            Failure::Session(e @ (SessionError::Closed { .. } | SessionError::Io { .. })) => {
                DeviceError::Unreachable {
                    address,
                    reason: e.to_string(),
                }
            }
            Failure::Session(e) => DeviceError::Protocol {
                address,
                detail: format!("{command}: {e}"),
            },
            Failure::Parse(ParseError::NoSuchOutlet {
                outlet,
                discarded: 0,
                ..
            }) => DeviceError::NoSuchPort { port: outlet },
            Failure::Parse(ParseError::BadOutletId { outlet }) => {
                DeviceError::NoSuchPort { port: outlet }
            }
            Failure::Parse(e @ ParseError::Refused { .. }) => DeviceError::Refused {
                address,
                command: command.to_string(),
                detail: e.to_string(),
            },
            Failure::Parse(e) => DeviceError::Protocol {
                address,
                detail: format!("{command}: {e}"),
            },
        }
    }

    /// Runs `f` on a ready session (opened, resynchronised, logged in). A failure drops the
    /// session (closing the port or connection), so the next call starts clean; a console
    /// that logged us out is logged in again once.
    async fn with_session<T>(
        &self,
        command: &str,
        f: impl for<'s> Fn(
            &'s mut Session,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, Failure>> + Send + 's>,
        >,
    ) -> Result<T, DeviceError> {
        let mut live = self.live.lock().await;
        let mut relogged = false;
        let result = loop {
            if live.is_none() {
                let Opened { link, lock } =
                    match self.cfg.endpoint.open(self.cfg.timeouts.connect).await {
                        Ok(o) => o,
                        Err(e) => return Err(self.error(Failure::Open(e), command)),
                    };
                let talks_first = !self.keeps_open();
                *live = Some(Live {
                    session: Session::new(link, self.cfg.model, self.cfg.timeouts, talks_first),
                    _lock: lock,
                });
            }
            let Some(l) = live.as_mut() else {
                continue;
            };
            let s = &mut l.session;
            let r = match s
                .ready(self.cfg.username.as_deref(), self.cfg.password.as_ref())
                .await
            {
                Ok(()) => f(s).await,
                Err(e) => Err(Failure::Session(e)),
            };
            match r {
                Err(Failure::Session(SessionError::LoggedOut)) if !relogged => {
                    relogged = true;
                    *live = None;
                }
                other => break other,
            }
        };
        match &result {
            // A refusal or an unreadable status is the PDU's answer, in sync: keep a serial
            // session; anything else may have left the console mid-reply.
            Ok(_) | Err(Failure::Parse(_)) if self.keeps_open() => {}
            _ => {
                if let Some(mut l) = live.take() {
                    if result.is_ok() {
                        l.session.logout().await;
                    }
                }
            }
        }
        result.map_err(|e| self.error(e, command))
    }

    /// Reads the status screen for `outlet` (all outlets where the model cannot select one).
    /// A reply that lost the outlet's line to noise, or shows it twice differently, is read
    /// once more; the second reply stands.
    async fn report(&self, outlet: &str, command: &str) -> Result<StatusReport, DeviceError> {
        let model = self.cfg.model;
        let outlet = outlet.to_string();
        self.with_session(command, move |s| {
            let outlet = outlet.clone();
            Box::pin(async move {
                let line = render(model, model.status, &outlet)?;
                let mut report = StatusReport::default();
                for _ in 0..2 {
                    let reply = s.command(&line, "the status command").await?;
                    report = parse_status(model, &reply);
                    match report.state_of(&outlet) {
                        Err(ParseError::NoSuchOutlet { discarded, .. }) if discarded > 0 => {}
                        Err(ParseError::Conflict { .. }) => {}
                        _ => break,
                    }
                }
                Ok(report)
            })
        })
        .await
    }

    fn port<'a>(&self, port: Option<&'a str>) -> Result<&'a str, DeviceError> {
        port.ok_or_else(|| DeviceError::NoSuchPort {
            port: "(none: a serial PDU level entry needs DEVICE:OUTLET, e.g. pdu-a:3 or pdu-a:db1)"
                .into(),
        })
    }
}

#[async_trait]
impl PowerDevice for SerialPduDevice {
    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError> {
        let outlet = self.port(port)?;
        let what = format!("read outlet {outlet}");
        let report = self.report(outlet, &what).await?;
        report
            .state_of(outlet)
            .map_err(|e| self.error(Failure::Parse(e), &what))
    }

    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        let outlet = self.port(port)?.to_string();
        let model = self.cfg.model;
        let template = match command {
            PowerCommand::Off => model.off,
            PowerCommand::On => model.on,
        };
        let what = format!("outlet {outlet} {command}");
        self.with_session(&what, move |s| {
            let outlet = outlet.clone();
            Box::pin(async move {
                let line = render(model, template, &outlet)?;
                let reply = s.command(&line, "the switching command").await?;
                parse_ack(model, &reply)?;
                Ok(())
            })
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Outlet>, DeviceError> {
        // APC selects outlets (`olStatus all`); the others print every outlet anyway.
        let report = self.report("all", "list outlets").await?;
        Ok(report
            .outlets
            .into_iter()
            .map(|o| Outlet {
                id: o.id,
                name: (!o.name.is_empty()).then_some(o.name),
                state: Some(o.state),
            })
            .collect())
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        let outlets = self.list().await?;
        if outlets.is_empty() {
            return Err(DeviceError::Protocol {
                address: self.address(),
                detail: format!(
                    "the console answered, but its status screen lists no outlets as model {} prints them; check `model`",
                    self.cfg.model.name
                ),
            });
        }
        // A console has no serial number to ask for: it is identified by where it is.
        Ok(Identity {
            kind: "console".into(),
            value: self.address().to_ascii_lowercase(),
            description: format!(
                "{} at {}, {} outlets",
                self.cfg.model.description,
                self.address(),
                outlets.len()
            ),
        })
    }
}
