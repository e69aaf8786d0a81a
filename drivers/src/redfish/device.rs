//! [`RedfishDevice`]: one ComputerSystem behind a Redfish service, as a [`PowerDevice`].
//!
//! The engine calls health, status, power, then polls status, so the discovered system and
//! the session are kept between calls. A session is deleted (`DELETE` on its URI) after
//! `idle_close` without calls, by [`RedfishDevice::close`], and on drop (best effort): BMCs
//! have few session slots, and a fencer that leaks them locks itself out of the BMC.
//!
//! Devices of one process that reach the same service with the same account, password and
//! TLS settings (several systems behind one BMC, or one chassis manager for many blades)
//! share one session: iDRAC refuses a ninth session with 503 (RAC0218,
//! bb-Ricardo/check_redfish#89), so one session per target would fail a mass fence on a
//! BMC that serves many targets.

use super::error::RedfishError;
use super::model::{
    ActionInfo, Collection, ComputerSystem, ErrorBody, Link, ResetRequest, ServiceRoot,
    SessionRequest, Task,
};
use super::tls::{self, TlsVerify};
use crate::{DeviceError, Identity, PowerCommand, PowerDevice, PowerState, Secret};
use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The largest response body read; Redfish resources the fencing path reads are a few KiB,
/// and a BMC streaming garbage must not grow the daemon.
pub const MAX_BODY: usize = 1 << 20;

/// How the driver authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// A Redfish session (`X-Auth-Token`), the default: the password crosses the wire once.
    #[default]
    Session,
    /// HTTP Basic on every request (services without a SessionService, e.g. sushy-emulator).
    Basic,
    /// A session where the service offers one, else Basic.
    SessionOrBasic,
}

/// Configuration of one Redfish system.
#[derive(Clone)]
pub struct RedfishConfig {
    /// `https://HOST[:PORT]` of the service (no path, no credentials).
    pub base_url: String,
    /// Account name.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// The system's id in the Systems collection (last segment of its URI); `None` takes the
    /// only member and refuses when there are several.
    pub system_id: Option<String>,
    /// How to authenticate.
    pub auth: AuthMode,
    /// How to verify the certificate.
    pub tls: TlsVerify,
    /// TCP and TLS connection setup limit per request.
    pub connect_timeout: Duration,
    /// Limit of one HTTP request, connection included.
    pub request_timeout: Duration,
    /// Limit of one device call (health, status, power with its task), all requests included.
    pub total_timeout: Duration,
    /// Interval between task-monitor polls after a 202.
    pub task_poll: Duration,
    /// Delete the session after this long without calls.
    pub idle_close: Duration,
}

impl fmt::Debug for RedfishConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishConfig")
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("system_id", &self.system_id)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("total_timeout", &self.total_timeout)
            .finish_non_exhaustive()
    }
}

impl RedfishConfig {
    /// Defaults: sessions, system roots, connect 3 s, request 10 s, total 30 s, task polls
    /// every 250 ms, session deleted after 20 s idle.
    pub fn new(base_url: impl Into<String>, username: impl Into<String>, password: Secret) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            username: username.into(),
            password,
            system_id: None,
            auth: AuthMode::Session,
            tls: TlsVerify::SystemRoots,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            task_poll: Duration::from_millis(250),
            idle_close: Duration::from_secs(20),
        }
    }
}

/// Maps a Redfish `PowerState` to ours: only `Off` is off; `null`, missing and anything
/// unknown (`Paused`, vendor values) are [`PowerState::Unknown`], never off.
pub fn power_state_of(value: Option<&str>) -> PowerState {
    match value {
        Some("On") => PowerState::On,
        Some("Off") => PowerState::Off,
        Some("PoweringOn") => PowerState::PoweringOn,
        Some("PoweringOff") => PowerState::PoweringOff,
        _ => PowerState::Unknown,
    }
}

enum Auth {
    Session { token: Secret },
    Basic,
}

#[derive(Clone)]
struct System {
    uri: String,
    reset_target: String,
    /// `None`: the service lists no allowed values (inline or ActionInfo).
    allowed: Option<Vec<String>>,
}

#[derive(Default)]
struct State {
    root: Option<ServiceRoot>,
    /// This device's copy of the authentication (for a session: the shared slot's, as of
    /// `generation`).
    auth: Option<Auth>,
    /// The slot generation the copied session belongs to.
    generation: u64,
    system: Option<System>,
}

/// The session a slot holds: its token, its URI, and the generation that names it.
struct SlotSession {
    token: Secret,
    uri: Option<String>,
    generation: u64,
}

/// One Redfish session shared by the devices of this process that reach the same service
/// with the same account, password and TLS settings.
struct SessionSlot {
    base_url: String,
    password: Secret,
    tls: String,
    client: reqwest::Client,
    session: std::sync::Mutex<Option<SlotSession>>,
    /// Held while logging in, so that devices of one BMC open one session, not one each.
    login: Mutex<()>,
    next_generation: AtomicU64,
    last_used: std::sync::Mutex<Option<Instant>>,
    idle_closer: AtomicBool,
}

/// Slots by (service, account); a slot lives as long as a device uses it.
type SlotMap = HashMap<(String, String), Weak<SessionSlot>>;

/// Every live slot of this process.
static SLOTS: LazyLock<std::sync::Mutex<SlotMap>> =
    LazyLock::new(|| std::sync::Mutex::new(HashMap::new()));

impl SessionSlot {
    fn lock_session(&self) -> std::sync::MutexGuard<'_, Option<SlotSession>> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    fn idle_for(&self) -> Option<Duration> {
        self.last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|t| t.elapsed())
    }

    /// The slot for this configuration: an existing one when every setting that decides
    /// whether a token may be used matches, else a new one (registered when the key is free).
    fn for_config(cfg: &RedfishConfig, client: &reqwest::Client) -> Arc<SessionSlot> {
        let key = (cfg.base_url.clone(), cfg.username.clone());
        let tls = format!("{:?}", cfg.tls);
        let mut slots = SLOTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.retain(|_, w| w.strong_count() > 0);
        if let Some(existing) = slots.get(&key).and_then(Weak::upgrade) {
            // A device with another password or TLS setting must not ride on a session it
            // could not have opened itself: its own configuration error has to show.
            if existing.password.expose() == cfg.password.expose() && existing.tls == tls {
                return existing;
            }
            return Arc::new(SessionSlot::new(cfg, client, tls));
        }
        let slot = Arc::new(SessionSlot::new(cfg, client, tls));
        slots.insert(key, Arc::downgrade(&slot));
        slot
    }

    fn new(cfg: &RedfishConfig, client: &reqwest::Client, tls: String) -> SessionSlot {
        SessionSlot {
            base_url: cfg.base_url.clone(),
            password: cfg.password.clone(),
            tls,
            client: client.clone(),
            session: std::sync::Mutex::new(None),
            login: Mutex::new(()),
            next_generation: AtomicU64::new(1),
            last_used: std::sync::Mutex::new(None),
            idle_closer: AtomicBool::new(false),
        }
    }

    /// Forgets the session of `generation` (the service rejected it); a newer one stays.
    fn invalidate(&self, generation: u64) {
        let mut s = self.lock_session();
        if s.as_ref().is_some_and(|x| x.generation == generation) {
            *s = None;
        }
    }

    /// Takes the session out, for deletion.
    fn take(&self) -> Option<SlotSession> {
        self.lock_session().take()
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some(SlotSession {
            token,
            uri: Some(uri),
            ..
        }) = self.take()
        {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                if let Ok(url) = join(&self.base_url, &uri) {
                    rt.spawn(delete_session(self.client.clone(), url, token));
                }
            }
        }
    }
}

struct Inner {
    cfg: RedfishConfig,
    client: reqwest::Client,
    state: Mutex<State>,
    slot: Arc<SessionSlot>,
}

/// A ComputerSystem behind a Redfish service, as a [`PowerDevice`].
#[derive(Clone)]
pub struct RedfishDevice {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedfishDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishDevice")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// One HTTP response, read in full (up to [`MAX_BODY`]).
struct Response {
    status: StatusCode,
    location: Option<String>,
    token: Option<String>,
    body: Vec<u8>,
}

fn join(base: &str, path: &str) -> Result<String, RedfishError> {
    if path.starts_with('/') {
        return Ok(format!("{base}{path}"));
    }
    // An absolute URI is followed only on the same origin: credentials go nowhere else.
    if let Some(rest) = path.strip_prefix(base) {
        if rest.is_empty() || rest.starts_with('/') {
            return Ok(path.to_string());
        }
    }
    Err(RedfishError::OffOrigin {
        service: base.to_string(),
        uri: path.to_string(),
    })
}

async fn delete_session(client: reqwest::Client, url: String, token: Secret) {
    let Ok(mut value) = HeaderValue::from_bytes(token.expose()) else {
        return;
    };
    value.set_sensitive(true);
    match client
        .delete(&url)
        .header("X-Auth-Token", value)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => tracing::debug!(%url, "Redfish session deleted"),
        Ok(r) => tracing::debug!(%url, status = %r.status(), "Redfish session delete refused"),
        Err(e) => tracing::debug!(%url, error = %e, "Redfish session delete failed"),
    }
}

/// A limit in milliseconds, for messages.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The error chain of a reqwest error in one line (rustls's reason is at the bottom).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl RedfishDevice {
    /// A device for this configuration; builds the HTTPS client (no request is sent yet).
    /// Fails when the configuration cannot work (not https, unreadable CA file).
    pub fn new(cfg: RedfishConfig) -> Result<Self, RedfishError> {
        if !cfg.base_url.starts_with("https://") {
            return Err(RedfishError::NotHttps {
                service: cfg.base_url.clone(),
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert("OData-Version", HeaderValue::from_static("4.0"));
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let mut b = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            // A redirect could carry Basic credentials or a token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .user_agent(concat!("palisade-fenced/", env!("CARGO_PKG_VERSION")))
            // One kept-alive connection per BMC is all the fencing path needs.
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy();
        b = match &cfg.tls {
            TlsVerify::SystemRoots => b,
            TlsVerify::CaFile(path) => {
                let mut b = b.tls_built_in_root_certs(false);
                for c in tls::read_ca_file(path)? {
                    b = b.add_root_certificate(c);
                }
                b
            }
            TlsVerify::Fingerprint(pin) => b.use_preconfigured_tls(tls::pinned_config(*pin)?),
            TlsVerify::Insecure => {
                tracing::warn!(
                    address = %cfg.base_url,
                    "Redfish device: TLS certificate verification is OFF (insecure = true); anyone on the network path can impersonate this BMC and read its credentials; configure ca_file or tls_fingerprint instead"
                );
                b.danger_accept_invalid_certs(true)
            }
        };
        let client = b.build().map_err(|e| RedfishError::Client {
            service: cfg.base_url.clone(),
            reason: chain(&e),
        })?;
        let slot = SessionSlot::for_config(&cfg, &client);
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                client,
                state: Mutex::new(State::default()),
                slot,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RedfishConfig {
        &self.inner.cfg
    }

    /// Forgets the discovered system and the session; deletes the session now (best effort)
    /// unless other devices of this process share it (the last one deletes it).
    pub async fn close(&self) {
        let mut st = self.inner.state.lock().await;
        st.system = None;
        st.auth = None;
        if Arc::strong_count(&self.inner.slot) > 1 {
            return;
        }
        if let Some(SlotSession {
            token,
            uri: Some(uri),
            ..
        }) = self.inner.slot.take()
        {
            if let Ok(url) = join(&self.inner.cfg.base_url, &uri) {
                delete_session(self.inner.client.clone(), url, token).await;
            }
        }
    }

    fn addr(&self) -> String {
        self.inner.cfg.base_url.clone()
    }

    fn map_send_error(&self, e: reqwest::Error, what: &str) -> RedfishError {
        let cfg = &self.inner.cfg;
        let reason = chain(&e);
        if e.is_timeout() {
            RedfishError::Timeout {
                service: self.addr(),
                what: what.to_string(),
                timeout_ms: millis(cfg.request_timeout),
            }
        } else if reason.contains("certificate") || reason.contains("UnknownIssuer") {
            RedfishError::Certificate {
                service: self.addr(),
                reason,
            }
        } else {
            RedfishError::Unreachable {
                service: self.addr(),
                what: what.to_string(),
                reason,
            }
        }
    }

    fn reply(&self, detail: impl Into<String>) -> RedfishError {
        RedfishError::Reply {
            service: self.addr(),
            detail: detail.into(),
        }
    }

    /// Sends one request with the current authentication and reads the whole reply.
    async fn raw(
        &self,
        st: &State,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        what: &str,
        authenticate: bool,
    ) -> Result<Response, RedfishError> {
        let cfg = &self.inner.cfg;
        let url = join(&cfg.base_url, path)?;
        let mut req = self.inner.client.request(method, &url);
        if authenticate {
            match &st.auth {
                Some(Auth::Session { token, .. }) => {
                    let mut v = HeaderValue::from_bytes(token.expose()).map_err(|_| {
                        self.reply("the session token it issued is not a valid header value")
                    })?;
                    v.set_sensitive(true);
                    req = req.header("X-Auth-Token", v);
                }
                Some(Auth::Basic) => {
                    // reqwest marks the Authorization header sensitive (never logged); our
                    // copy of the password text is zeroized when dropped.
                    let pw =
                        Zeroizing::new(String::from_utf8_lossy(cfg.password.expose()).into_owned());
                    req = req.basic_auth(&cfg.username, Some(pw.as_str()));
                }
                None => {}
            }
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(b.to_vec());
        }
        let mut resp = req.send().await.map_err(|e| self.map_send_error(e, what))?;
        let status = resp.status();
        let header = |h: &HeaderMap, n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.to_string())
        };
        let location = header(resp.headers(), LOCATION.as_str());
        let token = header(resp.headers(), "X-Auth-Token");
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.map_send_error(e, what))?
        {
            if out.len() + chunk.len() > MAX_BODY {
                return Err(self.reply(format!("{what}: reply body larger than {MAX_BODY} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            location,
            token,
            body: out,
        })
    }

    fn parse<T: DeserializeOwned>(&self, r: &Response, what: &str) -> Result<T, RedfishError> {
        serde_json::from_slice(&r.body)
            .map_err(|e| self.reply(format!("{what}: the reply is not the expected JSON ({e})")))
    }

    fn refused(&self, r: &Response, command: &str) -> RedfishError {
        let message = serde_json::from_slice::<ErrorBody>(&r.body)
            .ok()
            .and_then(|b| b.describe())
            .unwrap_or_else(|| "no Redfish error message".into());
        let (service, command, status) = (self.addr(), command.to_string(), r.status.to_string());
        if r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::FORBIDDEN {
            return RedfishError::AuthRefused {
                service,
                command,
                status,
                message,
            };
        }
        RedfishError::Status {
            service,
            command,
            status,
            message,
        }
    }

    /// Sends an authenticated request; on 401 with a session, logs in again once and
    /// retries (the BMC may have expired the session between calls or mid-operation).
    async fn call(
        &self,
        st: &mut State,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        what: &str,
    ) -> Result<Response, RedfishError> {
        self.login(st).await?;
        let r = self
            .raw(st, method.clone(), path, body.clone(), what, true)
            .await?;
        if r.status != StatusCode::UNAUTHORIZED || !matches!(st.auth, Some(Auth::Session { .. })) {
            return Ok(r);
        }
        tracing::info!(address = %self.addr(), "Redfish session rejected (expired?); logging in again once");
        st.auth = None;
        self.inner.slot.invalidate(st.generation);
        self.login(st).await?;
        self.raw(st, method, path, body, what, true).await
    }

    async fn root(&self, st: &mut State) -> Result<ServiceRoot, RedfishError> {
        if let Some(r) = &st.root {
            return Ok(r.clone());
        }
        // The service root needs no authentication (DSP0266 §"Service root request").
        let r = self
            .raw(
                st,
                Method::GET,
                "/redfish/v1/",
                None,
                "reading the service root",
                false,
            )
            .await?;
        if !r.status.is_success() {
            return Err(self.refused(&r, "GET /redfish/v1/"));
        }
        let root: ServiceRoot = self.parse(&r, "service root")?;
        st.root = Some(root.clone());
        Ok(root)
    }

    async fn login(&self, st: &mut State) -> Result<(), RedfishError> {
        if st.auth.is_some() {
            return Ok(());
        }
        let cfg = &self.inner.cfg;
        if cfg.auth == AuthMode::Basic {
            st.auth = Some(Auth::Basic);
            return Ok(());
        }
        let root = self.root(st).await?;
        let sessions = root
            .links
            .as_ref()
            .and_then(|l| l.sessions.as_ref())
            .map(|l| l.odata_id.clone());
        let Some(sessions) = sessions else {
            if cfg.auth == AuthMode::SessionOrBasic {
                tracing::info!(address = %self.addr(), "Redfish service has no sessions collection; using Basic auth");
                st.auth = Some(Auth::Basic);
                return Ok(());
            }
            return Err(self.reply(
                "the service root has no Links.Sessions (no SessionService); set auth = \"basic\" or \"session_or_basic\" for this device",
            ));
        };
        // One login at a time per slot; a device that waited finds the session another
        // device opened meanwhile.
        let slot = self.inner.slot.clone();
        let _login = slot.login.lock().await;
        if let Some(s) = slot.lock_session().as_ref() {
            st.auth = Some(Auth::Session {
                token: s.token.clone(),
            });
            st.generation = s.generation;
            return Ok(());
        }
        let pw = Zeroizing::new(String::from_utf8_lossy(cfg.password.expose()).into_owned());
        let body = Zeroizing::new(
            serde_json::to_vec(&SessionRequest {
                user_name: &cfg.username,
                password: &pw,
            })
            .map_err(|e| self.reply(format!("cannot encode the session request: {e}")))?,
        );
        let r = self
            .raw(
                st,
                Method::POST,
                &sessions,
                Some(body),
                "opening a session",
                false,
            )
            .await?;
        if r.status.is_success() {
            let Some(token) = r.token else {
                return Err(self.reply(
                    "the session was created but the reply has no X-Auth-Token header; set auth = \"basic\" for this device if its sessions cannot be used",
                ));
            };
            // The session's URI: the Location header, else the body's @odata.id.
            let uri = r.location.clone().or_else(|| {
                serde_json::from_slice::<Link>(&r.body)
                    .ok()
                    .map(|l| l.odata_id)
            });
            tracing::debug!(address = %self.addr(), "Redfish session opened");
            let token = Secret::new(token.into_bytes());
            let generation = slot.next_generation.fetch_add(1, Ordering::Relaxed);
            *slot.lock_session() = Some(SlotSession {
                token: token.clone(),
                uri,
                generation,
            });
            st.auth = Some(Auth::Session { token });
            st.generation = generation;
            return Ok(());
        }
        let no_sessions = matches!(
            r.status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        );
        if no_sessions && cfg.auth == AuthMode::SessionOrBasic {
            tracing::info!(address = %self.addr(), status = %r.status, "Redfish sessions unavailable; using Basic auth");
            st.auth = Some(Auth::Basic);
            return Ok(());
        }
        if r.status == StatusCode::BAD_REQUEST
            || r.status == StatusCode::UNAUTHORIZED
            || r.status == StatusCode::FORBIDDEN
        {
            let message = serde_json::from_slice::<ErrorBody>(&r.body)
                .ok()
                .and_then(|b| b.describe())
                .unwrap_or_else(|| "no Redfish error message".into());
            return Err(RedfishError::AuthRefused {
                service: self.addr(),
                command: "opening a session".into(),
                status: r.status.to_string(),
                message,
            });
        }
        Err(self.refused(&r, "POST SessionService/Sessions"))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        st: &mut State,
        path: &str,
        what: &str,
    ) -> Result<T, RedfishError> {
        let r = self.call(st, Method::GET, path, None, what).await?;
        if !r.status.is_success() {
            return Err(self.refused(&r, &format!("GET {path}")));
        }
        self.parse(&r, what)
    }

    async fn system(&self, st: &mut State) -> Result<(System, ComputerSystem), RedfishError> {
        if let Some(sys) = st.system.clone() {
            let cs: ComputerSystem = self.get(st, &sys.uri, "reading the system").await?;
            return Ok((sys, cs));
        }
        let root = self.root(st).await?;
        let systems = root.systems.ok_or_else(|| {
            self.reply("the service root lists no Systems collection; this service manages no computer system")
        })?;
        let coll: Collection = self
            .get(st, &systems.odata_id, "reading the Systems collection")
            .await?;
        let ids: Vec<String> = coll.members.iter().map(|m| m.odata_id.clone()).collect();
        let last = |uri: &str| {
            uri.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let uri =
            match &self.inner.cfg.system_id {
                Some(want) => ids
                    .iter()
                    .find(|u| last(u) == *want)
                    .cloned()
                    .ok_or_else(|| RedfishError::NoSuchSystem {
                        want: want.clone(),
                        available: ids.iter().map(|u| last(u)).collect::<Vec<_>>().join(", "),
                    })?,
                None => match ids.as_slice() {
                    [one] => one.clone(),
                    [] => return Err(self.reply(
                        "the Systems collection is empty; this service manages no computer system",
                    )),
                    many => {
                        return Err(RedfishError::SeveralSystems {
                            service: self.addr(),
                            count: many.len(),
                            systems: many.iter().map(|u| last(u)).collect::<Vec<_>>().join(", "),
                        })
                    }
                },
            };
        let cs: ComputerSystem = self.get(st, &uri, "reading the system").await?;
        let reset = cs
            .actions
            .as_ref()
            .and_then(|a| a.reset.clone())
            .ok_or_else(|| RedfishError::Unsupported {
                service: self.addr(),
                operation: format!(
                    "power control: system {uri} has no #ComputerSystem.Reset action"
                ),
            })?;
        let allowed = match (reset.allowable_values.clone(), &reset.action_info) {
            (Some(v), _) => Some(v),
            (None, Some(ai)) => {
                let info: ActionInfo = self.get(st, ai, "reading the Reset ActionInfo").await?;
                info.parameters
                    .into_iter()
                    .find(|p| p.name == "ResetType")
                    .and_then(|p| p.allowable_values)
            }
            (None, None) => None,
        };
        let sys = System {
            uri,
            reset_target: reset.target,
            allowed,
        };
        st.system = Some(sys.clone());
        Ok((sys, cs))
    }

    fn reset_type(
        &self,
        sys: &System,
        command: PowerCommand,
    ) -> Result<&'static str, RedfishError> {
        // Off is ForceOff only: GracefulShutdown can be ignored by the OS, and a cycle or
        // restart cannot be confirmed. On prefers On, then ForceOn.
        let wanted: &[&'static str] = match command {
            PowerCommand::Off => &["ForceOff"],
            PowerCommand::On => &["On", "ForceOn"],
        };
        let Some(allowed) = &sys.allowed else {
            // Nothing advertised: send the standard value and let the HTTP status decide.
            return Ok(wanted[0]);
        };
        wanted
            .iter()
            .find(|w| allowed.iter().any(|a| a == *w))
            .copied()
            .ok_or_else(|| RedfishError::Unsupported {
                service: self.addr(),
                operation: format!(
                    "power {command} through Redfish: the system allows ResetType {allowed:?} but none of {wanted:?} (ForceRestart and PowerCycle are never used: they cannot be confirmed)"
                ),
            })
    }

    async fn follow_task(
        &self,
        st: &mut State,
        accepted: &Response,
        deadline: Instant,
        what: &str,
    ) -> Result<(), RedfishError> {
        let monitor = accepted.location.clone().or_else(|| {
            serde_json::from_slice::<Task>(&accepted.body)
                .ok()
                .and_then(|t| t.odata_id)
        });
        let Some(monitor) = monitor else {
            return Err(self.reply(format!("{what}: 202 Accepted without a Location header or task; cannot follow it, so cannot tell whether it was done")));
        };
        loop {
            let pause = self.inner.cfg.task_poll;
            if Instant::now() + pause >= deadline {
                return Err(RedfishError::TaskRunning {
                    service: self.addr(),
                    command: what.to_string(),
                    monitor,
                    timeout_ms: millis(self.inner.cfg.total_timeout),
                });
            }
            tokio::time::sleep(pause).await;
            let r = self
                .call(st, Method::GET, &monitor, None, "polling the reset task")
                .await?;
            match r.status {
                StatusCode::ACCEPTED => continue,
                StatusCode::NO_CONTENT => return Ok(()),
                // Some services delete a finished task at once; the power state read back
                // decides in any case.
                StatusCode::NOT_FOUND => return Ok(()),
                s if s.is_success() => {
                    let Ok(task) = serde_json::from_slice::<Task>(&r.body) else {
                        return Ok(()); // the action's own response: done
                    };
                    if task.task_state.is_none() || (task.finished() && task.succeeded()) {
                        return Ok(());
                    }
                    if !task.finished() {
                        continue;
                    }
                    let message = task
                        .messages
                        .iter()
                        .find_map(|m| m.message.clone())
                        .unwrap_or_default();
                    return Err(RedfishError::TaskFailed {
                        service: self.addr(),
                        command: what.to_string(),
                        state: task.task_state.unwrap_or_default(),
                        status: task.task_status.unwrap_or_default(),
                        message,
                    });
                }
                _ => return Err(self.refused(&r, what)),
            }
        }
    }

    /// Runs `f` under the state lock and the total timeout, then arms the idle closer.
    async fn with_state<'a, T, F>(&'a self, what: &str, f: F) -> Result<T, RedfishError>
    where
        F: for<'s> FnOnce(
            &'s Self,
            &'s mut State,
            Instant,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, RedfishError>> + Send + 's>,
        >,
        T: Send,
    {
        let total = self.inner.cfg.total_timeout;
        let deadline = Instant::now() + total;
        let mut guard = self.inner.state.lock().await;
        let st = &mut *guard;
        self.inner.slot.touch();
        let res = match tokio::time::timeout_at(deadline, f(self, st, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(RedfishError::Timeout {
                service: self.addr(),
                what: what.to_string(),
                timeout_ms: millis(total),
            }),
        };
        self.inner.slot.touch();
        match &res {
            Ok(_) => self.spawn_idle_closer(st),
            Err(e) if e.is_refusal() => self.spawn_idle_closer(st),
            // After a failure the service may have restarted: rediscover next time.
            Err(_) => {
                st.root = None;
                st.system = None;
            }
        }
        res
    }

    /// Deletes the shared session once no device of the slot used it for `idle_close`.
    fn spawn_idle_closer(&self, st: &mut State) {
        let slot = &self.inner.slot;
        if !matches!(st.auth, Some(Auth::Session { .. }))
            || slot.idle_closer.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            slot.idle_closer.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<SessionSlot> = Arc::downgrade(slot);
        let idle = self.inner.cfg.idle_close;
        rt.spawn(async move {
            loop {
                tokio::time::sleep(idle).await;
                let Some(slot) = weak.upgrade() else { return };
                if slot.idle_for().is_some_and(|t| t < idle) {
                    continue;
                }
                // No login runs while the session is taken out; devices holding a copy get
                // 401 on their next call and log in again.
                let _login = slot.login.lock().await;
                slot.idle_closer.store(false, Ordering::Release);
                if let Some(SlotSession {
                    token,
                    uri: Some(uri),
                    ..
                }) = slot.take()
                {
                    if let Ok(url) = join(&slot.base_url, &uri) {
                        delete_session(slot.client.clone(), url, token).await;
                    }
                }
                return;
            }
        });
    }

    fn no_ports(port: Option<&str>) -> Result<(), RedfishError> {
        match port {
            None => Ok(()),
            Some(p) => Err(RedfishError::PortGiven { port: p.into() }),
        }
    }
}

#[async_trait]
impl PowerDevice for RedfishDevice {
    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError> {
        Self::no_ports(port)?;
        self.with_state("reading the power state", |d, st, _| {
            Box::pin(async move {
                let (_, cs) = d.system(st).await?;
                Ok(power_state_of(cs.power_state.as_deref()))
            })
        })
        .await
        .map_err(DeviceError::from)
    }

    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        Self::no_ports(port)?;
        let what = format!("power {command}");
        self.with_state(&what.clone(), move |d, st, deadline| {
            Box::pin(async move {
                let (sys, _) = d.system(st).await?;
                let reset_type = d.reset_type(&sys, command)?;
                let body = Zeroizing::new(
                    serde_json::to_vec(&ResetRequest { reset_type })
                        .map_err(|e| d.reply(format!("cannot encode the reset: {e}")))?,
                );
                let command_text = format!("Reset {reset_type}");
                let r = d
                    .call(
                        st,
                        Method::POST,
                        &sys.reset_target,
                        Some(body),
                        &command_text,
                    )
                    .await?;
                match r.status {
                    StatusCode::OK | StatusCode::NO_CONTENT => Ok(()),
                    StatusCode::ACCEPTED => d.follow_task(st, &r, deadline, &command_text).await,
                    // iDRAC answers 409 ("Server is already powered OFF/ON",
                    // dell/dellemc-openmanage-ansible-modules#132) and iLO 400
                    // (InvalidOperationForSystemState, goldyfruit/ansible-ilo#1) to a reset
                    // into the state the system is in or moving to. Read the state: if it is
                    // there or on its way, the command is moot, and the engine's read-back
                    // still decides; anything else stays the refusal it is.
                    StatusCode::CONFLICT | StatusCode::BAD_REQUEST => {
                        let cs: ComputerSystem = d
                            .get(st, &sys.uri, "reading the system after a refused reset")
                            .await?;
                        let state = power_state_of(cs.power_state.as_deref());
                        let moot = match command {
                            PowerCommand::Off => {
                                matches!(state, PowerState::Off | PowerState::PoweringOff)
                            }
                            PowerCommand::On => {
                                matches!(state, PowerState::On | PowerState::PoweringOn)
                            }
                        };
                        if moot {
                            tracing::info!(address = %d.addr(), status = %r.status, %state, "Redfish {command_text} refused because the system is already {state}; the read-back decides");
                            Ok(())
                        } else {
                            Err(d.refused(&r, &command_text))
                        }
                    }
                    _ => Err(d.refused(&r, &command_text)),
                }
            })
        })
        .await
        .map_err(DeviceError::from)
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        self.with_state("reading the system identity", |d, st, _| {
            Box::pin(async move {
                let (sys, cs) = d.system(st).await?;
                let uuid = cs.uuid.clone().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
                    d.reply(format!("system {} reports no UUID, so it cannot be matched to a node; check the BMC firmware", sys.uri))
                })?;
                let root = st.root.clone();
                let service = root
                    .as_ref()
                    .map(|r| {
                        format!(
                            "{} {} Redfish {}",
                            r.vendor.as_deref().unwrap_or(""),
                            r.product.as_deref().unwrap_or(""),
                            r.redfish_version.as_deref().unwrap_or("?")
                        )
                    })
                    .unwrap_or_default();
                Ok(Identity {
                    kind: "uuid".into(),
                    value: uuid.trim().to_ascii_lowercase(),
                    description: format!(
                        "{} {} system {} ({}) via{}",
                        cs.manufacturer.as_deref().unwrap_or(""),
                        cs.model.as_deref().unwrap_or(""),
                        cs.id.as_deref().unwrap_or("?"),
                        cs.name.as_deref().unwrap_or(""),
                        if service.trim().is_empty() { String::new() } else { format!(" {}", service.trim()) }
                    )
                    .trim()
                    .to_string(),
                })
            })
        })
        .await
        .map_err(DeviceError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_off_is_off() {
        assert_eq!(power_state_of(Some("Off")), PowerState::Off);
        assert_eq!(power_state_of(Some("PoweringOff")), PowerState::PoweringOff);
        assert_eq!(power_state_of(Some("PoweringOn")), PowerState::PoweringOn);
        assert_eq!(power_state_of(Some("On")), PowerState::On);
        for v in [None, Some("Paused"), Some("off"), Some("")] {
            assert_eq!(power_state_of(v), PowerState::Unknown, "{v:?}");
        }
    }

    #[test]
    fn paths_stay_on_the_configured_origin() {
        let b = "https://10.0.0.5:443";
        assert_eq!(
            join(b, "/redfish/v1/").unwrap(),
            "https://10.0.0.5:443/redfish/v1/"
        );
        assert_eq!(
            join(b, "https://10.0.0.5:443/redfish/v1/Systems").unwrap(),
            "https://10.0.0.5:443/redfish/v1/Systems"
        );
        assert!(join(b, "https://evil.example/redfish/v1/").is_err());
        assert!(join(b, "https://10.0.0.5:4430/x").is_err());
    }

    #[test]
    fn plain_http_is_refused_and_secrets_never_print() {
        let cfg = RedfishConfig::new("http://127.0.0.1", "u", Secret::new(b"hunter2".to_vec()));
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let e = RedfishDevice::new(cfg).unwrap_err();
        assert!(matches!(e, RedfishError::NotHttps { .. }), "{e}");
        assert_eq!(DeviceError::from(e).code(), "policy");
    }
}
