//! [`IpmiDevice`]: a BMC as a [`PowerDevice`], with its configuration.
//!
//! The engine calls health, status, power, then polls status in quick succession, so one
//! session is kept open between calls and reopened transparently (once) when the BMC has
//! dropped it; it is closed after `idle_close` without calls, and on drop (best effort).

use super::client::{probe_cipher_suites, ClientConfig, Session};
use super::crypto::CipherSuite;
use super::message::{
    chassis_control, ChassisControl, GetChassisStatus, GetDeviceId, GetSystemGuid,
    PRIV_ADMINISTRATOR, PRIV_OPERATOR,
};
use crate::{DeviceError, Identity, PowerCommand, PowerDevice, PowerState, Secret};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Mutex;

/// How long `cipher_suite = "auto"` waits for Get Channel Cipher Suites before falling back to
/// suite 3. Short on purpose: OpenIPMI's ipmi_sim (and some old BMCs) never answer it, and
/// ipmitool's ~14 s wait on those is exactly what a fencing path cannot afford.
pub const CIPHER_SUITE_PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// The privilege level a session runs at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    /// OPERATOR (3): enough for Chassis Control on most BMCs.
    Operator,
    /// ADMINISTRATOR (4), the default: some BMCs require it for power control.
    #[default]
    Administrator,
}

impl Privilege {
    /// The IPMI privilege level number.
    pub fn level(self) -> u8 {
        match self {
            Privilege::Operator => PRIV_OPERATOR,
            Privilege::Administrator => PRIV_ADMINISTRATOR,
        }
    }
}

/// Which cipher suite to use: `"auto"` or a suite number (`3`, `17`; `0` only with
/// `allow_cipher_suite_0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCipherSuite", into = "RawCipherSuite")]
pub enum CipherSuiteChoice {
    /// Ask the BMC once (short timeout), prefer 17, then 3; remember the answer.
    #[default]
    Auto,
    /// Use this suite without asking.
    Id(u8),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawCipherSuite {
    Name(String),
    Id(u8),
}

/// A `cipher_suite` setting that is neither "auto" nor a suite number.
#[derive(Debug, thiserror::Error)]
#[error("cipher_suite must be \"auto\", 3 or 17, not {0:?}")]
pub struct CipherSuiteError(String);

impl TryFrom<RawCipherSuite> for CipherSuiteChoice {
    type Error = CipherSuiteError;
    fn try_from(raw: RawCipherSuite) -> Result<Self, CipherSuiteError> {
        match raw {
            RawCipherSuite::Name(n) if n == "auto" => Ok(CipherSuiteChoice::Auto),
            RawCipherSuite::Name(n) => n
                .parse::<u8>()
                .map(CipherSuiteChoice::Id)
                .map_err(|_| CipherSuiteError(n)),
            RawCipherSuite::Id(id) => Ok(CipherSuiteChoice::Id(id)),
        }
    }
}

impl From<CipherSuiteChoice> for RawCipherSuite {
    fn from(c: CipherSuiteChoice) -> Self {
        match c {
            CipherSuiteChoice::Auto => RawCipherSuite::Name("auto".into()),
            CipherSuiteChoice::Id(id) => RawCipherSuite::Id(id),
        }
    }
}

/// Configuration of one BMC. The daemon's TOML config builds it (the serde-friendly pieces
/// are [`Privilege`] and [`CipherSuiteChoice`]); the password arrives as a [`Secret`].
#[derive(Clone)]
pub struct IpmiConfig {
    /// Host name or address of the BMC.
    pub host: String,
    /// UDP port (623 unless the BMC is configured otherwise).
    pub port: u16,
    /// IPMI user name.
    pub username: String,
    /// The user's password.
    pub password: Secret,
    /// The BMC key Kg, where the BMC has one set.
    pub kg: Option<Secret>,
    /// Session privilege level (default administrator).
    pub privilege: Privilege,
    /// Cipher suite (default auto).
    pub cipher_suite: CipherSuiteChoice,
    /// Wait for the first try of each exchange (default 1000 ms; later tries wait longer).
    pub timeout: Duration,
    /// Retransmissions after the first try (default 2).
    pub retries: u32,
    /// Whether cipher suite 0 (no authentication: anyone on the network can power the node
    /// off) may be used. Default false.
    pub allow_cipher_suite_0: bool,
    /// Close a kept-open session after this long without calls (default 20 s, below the
    /// usual 60 s BMC session timeout so we close it before the BMC forgets it).
    pub idle_close: Duration,
}

impl fmt::Debug for IpmiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets print as *** through Secret's Debug; listed explicitly to keep it that way.
        f.debug_struct("IpmiConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("kg", &self.kg.as_ref().map(|_| "***"))
            .field("privilege", &self.privilege)
            .field("cipher_suite", &self.cipher_suite)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("allow_cipher_suite_0", &self.allow_cipher_suite_0)
            .finish()
    }
}

impl IpmiConfig {
    /// A configuration with the defaults: port 623, administrator, auto suite, 1000 ms,
    /// 2 retries, suite 0 refused.
    pub fn new(host: impl Into<String>, username: impl Into<String>, password: Secret) -> Self {
        Self {
            host: host.into(),
            port: super::rmcp::RMCP_PORT,
            username: username.into(),
            password,
            kg: None,
            privilege: Privilege::default(),
            cipher_suite: CipherSuiteChoice::default(),
            timeout: Duration::from_millis(1000),
            retries: 2,
            allow_cipher_suite_0: false,
            idle_close: Duration::from_secs(20),
        }
    }

    /// The longest a single exchange (one request and its retries) can take.
    pub fn exchange_deadline(&self) -> Duration {
        super::client::Timing {
            timeout: self.timeout,
            retries: self.retries,
        }
        .deadline()
    }

    fn address_string(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The suite an explicit choice names, or why it is refused.
    fn explicit_suite(&self, id: u8) -> Result<CipherSuite, DeviceError> {
        if id == 0 && !self.allow_cipher_suite_0 {
            return Err(DeviceError::Policy {
                detail: format!(
                    "IPMI device {}: cipher suite 0 (no authentication) is refused: anyone who can reach the BMC could power the node off; configure cipher_suite = 3 or 17, or set allow_cipher_suite_0 = true if you accept that",
                    self.address_string()
                ),
            });
        }
        CipherSuite::from_id(id).ok_or_else(|| DeviceError::Policy {
            detail: format!(
                "IPMI device {}: cipher suite {id} is not supported; configure cipher_suite = \"auto\", 3 or 17",
                self.address_string()
            ),
        })
    }
}

#[derive(Debug, Default)]
struct State {
    session: Option<Session>,
    /// The suite `auto` settled on, asked once per device.
    suite: Option<CipherSuite>,
    idle_closer: bool,
}

#[derive(Debug)]
struct Inner {
    cfg: IpmiConfig,
    state: Mutex<State>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: a BMC has few session slots, so say goodbye if a runtime is there to
        // do it; otherwise the BMC reclaims the slot at its own timeout.
        if let Some(session) = self.state.get_mut().session.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(session.close());
            }
        }
    }
}

/// A BMC reached over IPMI v2.0 LAN (RMCP+), as a [`PowerDevice`].
#[derive(Debug, Clone)]
pub struct IpmiDevice {
    inner: Arc<Inner>,
}

/// What one device call does inside a session.
#[derive(Debug, Clone, Copy)]
enum Op {
    Status,
    Power(PowerCommand),
    Health,
}

enum Reply {
    Status(PowerState),
    Done,
    Identity(Identity),
}

impl IpmiDevice {
    /// A device for this configuration. Nothing is sent until the first call.
    pub fn new(cfg: IpmiConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &IpmiConfig {
        &self.inner.cfg
    }

    /// The cipher suite `auto` settled on, once it has.
    pub async fn negotiated_suite(&self) -> Option<CipherSuite> {
        self.inner.state.lock().await.suite
    }

    /// Closes the kept-open session now (best effort).
    pub async fn close(&self) {
        let session = self.inner.state.lock().await.session.take();
        if let Some(s) = session {
            s.close().await;
        }
    }

    async fn resolve(&self) -> Result<SocketAddr, DeviceError> {
        let cfg = &self.inner.cfg;
        let address = cfg.address_string();
        let mut addrs = tokio::net::lookup_host((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| DeviceError::Unreachable {
                address: address.clone(),
                reason: format!("cannot resolve the host name: {e}"),
            })?;
        addrs.next().ok_or(DeviceError::Unreachable {
            address,
            reason: "the host name resolves to no address".into(),
        })
    }

    async fn suite(&self, st: &mut State, peer: SocketAddr) -> Result<CipherSuite, DeviceError> {
        let cfg = &self.inner.cfg;
        if let CipherSuiteChoice::Id(id) = cfg.cipher_suite {
            return cfg.explicit_suite(id);
        }
        if let Some(s) = st.suite {
            return Ok(s);
        }
        let offered = probe_cipher_suites(peer, CIPHER_SUITE_PROBE_TIMEOUT).await?;
        let chosen = match &offered {
            // No answer (ipmi_sim) or an error: every RMCP+ BMC has suite 3.
            None => CipherSuite::SUITE_3,
            Some(ids) if ids.contains(&17) => CipherSuite::SUITE_17,
            Some(ids) if ids.contains(&3) => CipherSuite::SUITE_3,
            Some(ids) => {
                return Err(DeviceError::Policy {
                    detail: format!(
                        "IPMI device {peer} offers cipher suites {ids:?} but neither 17 nor 3; enable suite 17 or 3 on the BMC"
                    ),
                })
            }
        };
        tracing::info!(address = %peer, ?offered, suite = chosen.id, "IPMI cipher suite chosen");
        st.suite = Some(chosen);
        Ok(chosen)
    }

    async fn open(&self, st: &mut State) -> Result<Session, DeviceError> {
        let cfg = &self.inner.cfg;
        let peer = self.resolve().await?;
        let suite = self.suite(st, peer).await?;
        let opened = Session::open(&ClientConfig {
            address: peer,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            kg: cfg.kg.clone(),
            privilege: cfg.privilege.level(),
            suite,
            timeout: cfg.timeout,
            retries: cfg.retries,
        })
        .await;
        // A BMC that answered nothing at all may have been down rather than mute to Get
        // Channel Cipher Suites: forget what `auto` settled on, so it asks again next time
        // instead of pinning suite 3 on a BMC that offers 17.
        if matches!(opened, Err(DeviceError::Timeout { .. })) {
            if let CipherSuiteChoice::Auto = cfg.cipher_suite {
                st.suite = None;
            }
        }
        opened
    }

    async fn run(&self, op: Op) -> Result<Reply, DeviceError> {
        let cfg = &self.inner.cfg;
        let mut guard = self.inner.state.lock().await;
        let st = &mut *guard;
        if let Some(s) = st
            .session
            .take_if(|s| s.last_used().elapsed() >= cfg.idle_close)
        {
            // Not awaited: a BMC that has gone away would make every later call wait for it.
            tokio::spawn(s.close());
        }
        let reused = st.session.is_some();
        if !reused {
            let s = self.open(st).await?;
            st.session = Some(s);
        }
        // The session stays in the state while it is used, so a call the engine cancels
        // leaves it there with its counters already advanced (the cancelled request's late
        // reply cannot match the next one) instead of leaking a BMC session slot.
        let Some(session) = st.session.as_mut() else {
            return Err(unexpected());
        };
        // A kept session gets one try: if the BMC dropped it (reset, timeout), it silently
        // ignores the session id and waiting through every retry would only delay the reopen.
        let retries = if reused { 0 } else { cfg.retries };
        let mut result = execute(session, op, retries).await;
        if reused && matches!(result, Err(DeviceError::Timeout { .. })) {
            tracing::debug!(address = %cfg.address_string(), "kept IPMI session did not answer; reopening");
            st.session = None;
            let s = self.open(st).await?;
            result = execute(st.session.insert(s), op, cfg.retries).await;
        }
        // Keep the session only when it is known good; after a timeout or a protocol error
        // its state is doubtful and the next call opens a fresh one.
        match &result {
            Ok(_) | Err(DeviceError::Refused { .. }) => self.spawn_idle_closer(st),
            Err(DeviceError::Timeout { .. }) => st.session = None,
            Err(_) => {
                if let Some(s) = st.session.take() {
                    tokio::spawn(s.close());
                }
            }
        }
        result
    }

    fn spawn_idle_closer(&self, st: &mut State) {
        if st.idle_closer {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        st.idle_closer = true;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let idle = self.inner.cfg.idle_close;
        rt.spawn(async move {
            loop {
                tokio::time::sleep(idle).await;
                let Some(inner) = weak.upgrade() else { return };
                let mut st = inner.state.lock().await;
                let expired = st
                    .session
                    .as_ref()
                    .is_none_or(|s| s.last_used().elapsed() >= idle);
                if expired {
                    st.idle_closer = false;
                    if let Some(s) = st.session.take() {
                        s.close().await;
                    }
                    return;
                }
            }
        });
    }

    fn no_ports(port: Option<&str>) -> Result<(), DeviceError> {
        match port {
            None => Ok(()),
            Some(p) => Err(DeviceError::NoSuchPort { port: p.into() }),
        }
    }
}

async fn execute(s: &mut Session, op: Op, retries: u32) -> Result<Reply, DeviceError> {
    match op {
        Op::Status => {
            let st = s.call_with_retries(&GetChassisStatus, retries).await?;
            Ok(Reply::Status(if st.power_on() {
                PowerState::On
            } else {
                PowerState::Off
            }))
        }
        Op::Power(cmd) => {
            // Only power down (a hard off) and power up: never cycle or soft shutdown, which
            // cannot be confirmed or can be ignored by the OS (see crate::power).
            let control = match cmd {
                PowerCommand::Off => chassis_control::POWER_DOWN,
                PowerCommand::On => chassis_control::POWER_UP,
            };
            s.call_with_retries(&ChassisControl { control }, retries)
                .await?;
            Ok(Reply::Done)
        }
        Op::Health => {
            let guid = s.call_with_retries(&GetSystemGuid, retries).await?;
            // The description is informative only: a BMC that refuses Get Device ID is still
            // identified by its GUID.
            let description = match s.call_with_retries(&GetDeviceId, retries).await {
                Ok(id) => id.describe(),
                Err(_) => "IPMI BMC".into(),
            };
            Ok(Reply::Identity(Identity {
                kind: "system-guid".into(),
                value: guid.to_ipmitool_string(),
                description,
            }))
        }
    }
}

fn unexpected() -> DeviceError {
    DeviceError::Protocol {
        address: String::new(),
        detail: "internal: reply kind does not match the operation".into(),
    }
}

#[async_trait]
impl PowerDevice for IpmiDevice {
    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError> {
        Self::no_ports(port)?;
        match self.run(Op::Status).await? {
            Reply::Status(s) => Ok(s),
            _ => Err(unexpected()),
        }
    }

    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        Self::no_ports(port)?;
        match self.run(Op::Power(command)).await? {
            Reply::Done => Ok(()),
            _ => Err(unexpected()),
        }
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        match self.run(Op::Health).await? {
            Reply::Identity(i) => Ok(i),
            _ => Err(unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Piece {
        privilege: Privilege,
        cipher_suite: CipherSuiteChoice,
    }

    #[test]
    fn config_pieces_deserialize_from_toml() {
        let p: Piece = toml::from_str("privilege = \"operator\"\ncipher_suite = \"auto\"").unwrap();
        assert_eq!(
            (p.privilege, p.cipher_suite),
            (Privilege::Operator, CipherSuiteChoice::Auto)
        );
        let p: Piece = toml::from_str("privilege = \"administrator\"\ncipher_suite = 17").unwrap();
        assert_eq!(p.cipher_suite, CipherSuiteChoice::Id(17));
        assert!(toml::from_str::<Piece>("privilege = \"user\"\ncipher_suite = 3").is_err());
        assert!(
            toml::from_str::<Piece>("privilege = \"operator\"\ncipher_suite = \"best\"").is_err()
        );
    }

    #[tokio::test]
    async fn suite_0_is_refused_unless_allowed_and_secrets_never_print() {
        let mut cfg = IpmiConfig::new("127.0.0.1", "u", Secret::new(b"hunter2".to_vec()));
        cfg.cipher_suite = CipherSuiteChoice::Id(0);
        cfg.kg = Some(Secret::new(b"kgsecret".to_vec()));
        let printed = format!("{cfg:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("kgsecret"),
            "{printed}"
        );
        let dev = IpmiDevice::new(cfg.clone());
        match dev.status(None).await {
            Err(DeviceError::Policy { detail }) => {
                assert!(detail.contains("allow_cipher_suite_0"), "{detail}")
            }
            other => panic!("expected a policy error, got {other:?}"),
        }
        cfg.cipher_suite = CipherSuiteChoice::Id(2);
        assert!(matches!(
            IpmiDevice::new(cfg).status(None).await,
            Err(DeviceError::Policy { .. })
        ));
    }

    #[tokio::test]
    async fn a_bmc_has_no_ports() {
        let dev = IpmiDevice::new(IpmiConfig::new("127.0.0.1", "u", Secret::default()));
        assert!(matches!(
            dev.status(Some("3")).await,
            Err(DeviceError::NoSuchPort { .. })
        ));
    }
}
