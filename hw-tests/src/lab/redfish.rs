//! A Redfish BMC over HTTPS: ServiceRoot, SessionService, Systems with one or several
//! members, the Reset action with AllowableValues and an ActionInfo, task monitors, and the
//! lab's fault knobs (see [`super::FAULT_KNOBS_HELP`]).
//!
//! Every BMC of a [`RedfishLab`] listens on its own TCP port on 127.0.0.1 and serves each
//! connection as a tokio task (hyper HTTP/1.1 over tokio-rustls): no thread per BMC, per
//! connection or per request. One certificate authority is generated per lab with `rcgen`; each
//! BMC presents a certificate it signed for `127.0.0.1` and `localhost`, and the CA is written to
//! a PEM file that clients trust (`ca_file`, `curl --cacert`, `fence_redfish` via
//! `REQUESTS_CA_BUNDLE`).
//!
//! The responses are written here by hand from DSP0266 and the DSP8010 schemas, not with the
//! driver's serde types, so the simulator cannot agree with a driver mistake; both are checked
//! against real peers (sushy-emulator for the driver, fence_redfish and the DMTF
//! Redfish-Protocol-Validator for the simulator).

use super::node::{Node, PowerAction, PowerEvent, PowerHook};
use super::profile::{RedfishProfile, PALISADE};
use super::{lock, EventKind, EventLog, Fault, FaultKnob, Faults, LabError, LabTasks};
use drivers::Secret;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The reset types a system of the lab's own profile advertises (DSP8010 `ResetType`).
pub const RESET_TYPES: &[&str] = PALISADE.reset_types;

/// What to start.
#[derive(Clone)]
pub struct RedfishLabSpec {
    /// Number of BMCs, named `node1` … `nodeN` (with `--systems 1`; see [`RedfishLabSpec::systems`]).
    pub count: usize,
    /// TCP port of `node1` (the others follow); 0 = any free port for each.
    pub base_port: u16,
    /// The account every BMC knows.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// Systems per BMC (`System1` … `SystemK`); the first one is the BMC's node.
    pub systems: usize,
    /// Delay between a reset and the power change.
    pub power_delay: Duration,
    /// Whether systems start powered on.
    pub power_on: bool,
    /// Faults every BMC starts with.
    pub faults: Faults,
    /// Idle time after which a session expires (401 on its next use).
    pub session_timeout: Duration,
    /// Hex prefix of the system UUIDs (see [`super::lab_guid`]).
    pub guid_prefix: String,
    /// Where the CA certificate is written; `None`: a temporary directory the lab owns.
    pub cert_dir: Option<PathBuf>,
    /// Seed of the per-BMC RNG (drop decisions, garbage).
    pub seed: u64,
    /// Hook called on every power change of every system.
    pub power_hook: Option<PowerHook>,
    /// The vendor profile (ids, reset types, refusals, session limit, task behaviour).
    pub profile: &'static RedfishProfile,
    /// Overrides the profile's session limit (0: none).
    pub max_sessions: Option<usize>,
    /// Overrides the profile's AllowableValues (a firmware that lacks ForceOff).
    pub reset_types: Option<Vec<String>>,
}

impl fmt::Debug for RedfishLabSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishLabSpec")
            .field("count", &self.count)
            .field("base_port", &self.base_port)
            .field("user", &self.user)
            .field("systems", &self.systems)
            .field("power_delay", &self.power_delay)
            .field("faults", &self.faults)
            .field("profile", &self.profile.name)
            .finish_non_exhaustive()
    }
}

impl RedfishLabSpec {
    /// `count` BMCs with one system each on free ports, power on, no delay, no faults.
    pub fn new(count: usize, user: impl Into<String>, password: Secret) -> Self {
        Self {
            count,
            base_port: 0,
            user: user.into(),
            password,
            systems: 1,
            power_delay: Duration::ZERO,
            power_on: true,
            faults: Faults::default(),
            session_timeout: Duration::from_secs(60),
            guid_prefix: super::DEFAULT_GUID_PREFIX.into(),
            cert_dir: None,
            seed: 0x5a1e_1ab0,
            power_hook: None,
            profile: &PALISADE,
            max_sessions: None,
            reset_types: None,
        }
    }

    /// Takes a vendor profile, its transition time as the power delay included.
    pub fn with_profile(mut self, profile: &'static RedfishProfile) -> Self {
        self.profile = profile;
        self.power_delay = profile.transition;
        self
    }
}

/// The id of system `k` (1-based) under `profile`: the lab's own `System1…`, a vendor's own
/// id for the first system and `ID-K` for the others.
pub fn system_id(profile: &RedfishProfile, k: usize) -> String {
    if profile.name == PALISADE.name {
        format!("System{k}")
    } else if k <= 1 {
        profile.system_id.to_string()
    } else {
        format!("{}-{k}", profile.system_id)
    }
}

/// The UUID of system `k` (1-based) of BMC `index`: the BMC's lab GUID for system 1 (so a
/// node keeps one identity across IPMI and Redfish labs), the system number in the third
/// group for the others.
pub fn system_uuid(prefix: &str, index: usize, k: usize) -> Result<String, String> {
    let base = super::lab_guid(prefix, index)?;
    if k <= 1 {
        return Ok(base);
    }
    Ok(format!(
        "{}{:04x}{}",
        base.get(..14).unwrap_or_default(),
        0x4000 + (k & 0x0fff),
        base.get(18..).unwrap_or_default()
    ))
}

struct System {
    id: String,
    uuid: String,
    node: Node,
    /// The state a reset asked for that has not taken effect (for `PoweringOff`/`PoweringOn`).
    target: Option<bool>,
    /// The transition never ends: `target` stays set and the power never changes (a lying
    /// BMC stuck in `PoweringOff`, see [`RedfishBmcHandle::set_endless_transition`]).
    pinned: bool,
    /// Under the `lies` fault: the power state last asked for, which `PowerState` reports
    /// instead of the node's.
    claimed: Option<bool>,
}

struct Session {
    id: u64,
    last_used: Instant,
}

struct TaskEntry {
    system: usize,
    endless: bool,
    /// Reports Completed whatever the power does.
    early: bool,
}

/// What one BMC shares between its connections and its handles.
struct Shared {
    name: String,
    addr: SocketAddr,
    user: String,
    password: Secret,
    started: Instant,
    session_timeout: Duration,
    systems: Mutex<Vec<System>>,
    faults: Mutex<Faults>,
    events: Mutex<EventLog>,
    hook: Mutex<Option<PowerHook>>,
    sessions: Mutex<HashMap<String, Session>>,
    tasks: Mutex<HashMap<u64, TaskEntry>>,
    next_id: AtomicU64,
    rng: Mutex<rand::rngs::StdRng>,
    wake: Notify,
    profile: &'static RedfishProfile,
    reset_types: Vec<String>,
    max_sessions: usize,
    /// Boot override per system (BootSourceOverrideEnabled, BootSourceOverrideTarget).
    boot: Mutex<Vec<(String, String)>>,
    /// Resets start a transition that never ends ([`RedfishBmcHandle::set_endless_transition`]).
    endless_transition: AtomicBool,
    /// Every reset is refused as "already there" ([`RedfishBmcHandle::set_false_same_state`]).
    false_same_state: AtomicBool,
    /// The most sessions ever open at once (what a session-limit test checks).
    sessions_peak: AtomicUsize,
}

impl Shared {
    fn record(&self, kind: EventKind) {
        lock(&self.events).record(self.started.elapsed(), kind);
    }

    fn settle(&self) {
        let now = Instant::now();
        let mut fired: Vec<(String, PowerEvent)> = Vec::new();
        {
            let mut systems = lock(&self.systems);
            for (k, s) in systems.iter_mut().enumerate() {
                for e in s.node.settle(now) {
                    fired.push((node_name(&self.name, k), e));
                }
                if !s.node.is_changing() && !s.pinned {
                    s.target = None;
                }
            }
        }
        if fired.is_empty() {
            return;
        }
        let hook = lock(&self.hook).clone();
        for (name, e) in fired {
            self.record(EventKind::Power(e));
            if let Some(h) = &hook {
                h(&name, e);
            }
        }
    }

    fn next_change(&self) -> Option<Instant> {
        lock(&self.systems)
            .iter()
            .filter_map(|s| s.node.next_change())
            .min()
    }
}

/// The power hook name of system `k` (0-based): the BMC's name for the first system.
fn node_name(bmc: &str, k: usize) -> String {
    if k == 0 {
        bmc.to_string()
    } else {
        format!("{bmc}-system{}", k + 1)
    }
}

/// A handle on one running Redfish BMC (cheap to clone).
#[derive(Clone)]
pub struct RedfishBmcHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedfishBmcHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishBmcHandle")
            .field("name", &self.shared.name)
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl RedfishBmcHandle {
    /// The BMC's name (`node1` …).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The TCP address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// The UUID of system `k` (1-based).
    pub fn uuid(&self, k: usize) -> Option<String> {
        lock(&self.shared.systems)
            .get(k.checked_sub(1)?)
            .map(|s| s.uuid.clone())
    }

    /// Whether system 1 is powered on now (due changes applied first).
    pub fn power(&self) -> bool {
        self.system_power(1).unwrap_or(false)
    }

    /// Whether system `k` (1-based) is powered on now.
    pub fn system_power(&self, k: usize) -> Option<bool> {
        self.shared.settle();
        lock(&self.shared.systems)
            .get(k.checked_sub(1)?)
            .map(|s| s.node.is_on())
    }

    /// Sets every system's power at once, cancelling scheduled changes.
    pub fn set_power(&self, on: bool) {
        let mut fired = Vec::new();
        for (k, s) in lock(&self.shared.systems).iter_mut().enumerate() {
            s.target = None;
            s.pinned = false;
            if let Some(e) = s.node.force(on) {
                fired.push((node_name(&self.shared.name, k), e));
            }
        }
        let hook = lock(&self.shared.hook).clone();
        for (n, e) in fired {
            self.shared.record(EventKind::Power(e));
            if let Some(h) = &hook {
                h(&n, e);
            }
        }
        self.shared.wake.notify_one();
    }

    /// Changes the delay of later power changes.
    pub fn set_power_delay(&self, delay: Duration) {
        for s in lock(&self.shared.systems).iter_mut() {
            s.node.set_delay(delay);
        }
    }

    /// Installs (or removes) the power hook.
    pub fn set_power_hook(&self, hook: Option<PowerHook>) {
        *lock(&self.shared.hook) = hook;
    }

    /// The current fault knobs.
    pub fn faults(&self) -> Faults {
        *lock(&self.shared.faults)
    }

    /// Sets one fault knob; takes effect with the next request or connection.
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.shared.faults).apply(fault);
        self.shared
            .record(EventKind::FaultSet(format!("{fault:?}")));
    }

    /// Forgets every session, as a BMC whose sessions expired or that restarted: the next
    /// request with an old token gets 401.
    pub fn expire_sessions(&self) {
        lock(&self.shared.sessions).clear();
        self.shared
            .record(EventKind::FaultApplied("sessions-expired"));
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// The most sessions that were ever open at once on this BMC (a session-limit test
    /// checks that a client never went past the limit, not only that it saw no 503).
    pub fn sessions_peak(&self) -> usize {
        self.shared.sessions_peak.load(Ordering::Relaxed)
    }

    /// A lying BMC stuck in a transition: every later reset is acknowledged and `PowerState`
    /// then reads `PoweringOff` (or `PoweringOn`) forever while the power never changes, as
    /// tools that took OpenBMC's `PoweringOff` for off would be fooled by
    /// (xcat2/xcat-core#3808). `false` ends the lie; [`Self::set_power`] clears stuck systems.
    pub fn set_endless_transition(&self, on: bool) {
        self.shared.endless_transition.store(on, Ordering::Relaxed);
        if !on {
            for s in lock(&self.shared.systems).iter_mut() {
                if s.pinned {
                    s.pinned = false;
                    s.target = None;
                }
            }
        }
    }

    /// A lying BMC that refuses every reset with the profile's same-state answer (409 or
    /// 400; 409 on profiles that accept same-state resets) while the system is elsewhere:
    /// "already powered off" from a server that is on. Only the read-back can tell.
    pub fn set_false_same_state(&self, on: bool) {
        self.shared.false_same_state.store(on, Ordering::Relaxed);
    }

    /// The recent events, oldest first.
    pub fn events(&self) -> Vec<super::Event> {
        lock(&self.shared.events).entries()
    }
}

/// A running set of Redfish BMCs; dropping it stops them all (and removes its temporary CA
/// file, if it made one).
#[derive(Debug)]
pub struct RedfishLab {
    bmcs: Vec<RedfishBmcHandle>,
    tasks: LabTasks,
    ca_path: PathBuf,
    cert_der: Vec<u8>,
    _dir: Option<tempfile::TempDir>,
}

fn tls_config(dir: &Path) -> Result<(Arc<rustls::ServerConfig>, PathBuf, Vec<u8>), LabError> {
    let spec = |e: String| LabError::Spec(e);
    let ca_key = rcgen::KeyPair::generate().map_err(|e| spec(format!("CA key: {e}")))?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| spec(format!("CA params: {e}")))?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palisade-lab Redfish CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)
        .map_err(|e| spec(format!("CA certificate: {e}")))?;
    let key = rcgen::KeyPair::generate().map_err(|e| spec(format!("key: {e}")))?;
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(|e| spec(format!("params: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palisade-lab Redfish BMC");
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|e| spec(format!("certificate: {e}")))?;
    let ca_path = dir.join("redfish-lab-ca.pem");
    std::fs::write(&ca_path, ca.pem()).map_err(|e| {
        spec(format!(
            "cannot write the CA certificate {}: {e}; choose a writable --cert-dir",
            ca_path.display()
        ))
    })?;
    let der = cert.der().to_vec();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| spec(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone(), ca.der().clone()], key_der)
        .map_err(|e| spec(format!("TLS config: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), ca_path, der))
}

impl RedfishLab {
    /// Generates the certificates, binds and starts `spec.count` BMCs on 127.0.0.1 and
    /// returns once all listen. Must be called inside a tokio runtime.
    pub async fn start(spec: RedfishLabSpec) -> Result<RedfishLab, LabError> {
        if spec.systems == 0 {
            return Err(LabError::Spec(
                "a Redfish BMC needs at least one system".into(),
            ));
        }
        let (dir, tmp) = match &spec.cert_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::tempdir().map_err(|e| {
                    LabError::Spec(format!(
                        "cannot create a directory for the certificate: {e}"
                    ))
                })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let (tls, ca_path, cert_der) = tls_config(&dir)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let mut lab = RedfishLab {
            bmcs: Vec::with_capacity(spec.count),
            tasks: LabTasks::with_capacity(spec.count),
            ca_path,
            cert_der,
            _dir: tmp,
        };
        for i in 1..=spec.count {
            let port = if spec.base_port == 0 {
                0
            } else {
                u16::try_from(usize::from(spec.base_port) + i - 1).map_err(|_| {
                    LabError::Spec(format!(
                        "base port {} + {} BMCs runs past port 65535",
                        spec.base_port, spec.count
                    ))
                })?
            };
            let want: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
            let listener = TcpListener::bind(want)
                .await
                .map_err(|source| LabError::Bind { addr: want, source })?;
            let addr = listener
                .local_addr()
                .map_err(|source| LabError::Bind { addr: want, source })?;
            let mut systems = Vec::with_capacity(spec.systems);
            for k in 1..=spec.systems {
                systems.push(System {
                    id: system_id(spec.profile, k),
                    uuid: system_uuid(&spec.guid_prefix, i, k).map_err(LabError::Spec)?,
                    node: Node::new(spec.power_on, spec.power_delay),
                    target: None,
                    pinned: false,
                    claimed: None,
                });
            }
            let shared = Arc::new(Shared {
                name: format!("node{i}"),
                addr,
                user: spec.user.clone(),
                password: spec.password.clone(),
                started: Instant::now(),
                session_timeout: spec.session_timeout,
                systems: Mutex::new(systems),
                faults: Mutex::new(spec.faults),
                events: Mutex::new(EventLog::default()),
                hook: Mutex::new(spec.power_hook.clone()),
                sessions: Mutex::new(HashMap::new()),
                tasks: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(
                    spec.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                )),
                wake: Notify::new(),
                profile: spec.profile,
                reset_types: spec.reset_types.clone().unwrap_or_else(|| {
                    spec.profile
                        .reset_types
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
                max_sessions: spec.max_sessions.unwrap_or(spec.profile.max_sessions),
                boot: Mutex::new(vec![("Disabled".into(), "None".into()); spec.systems]),
                endless_transition: AtomicBool::new(false),
                false_same_state: AtomicBool::new(false),
                sessions_peak: AtomicUsize::new(0),
            });
            lab.bmcs.push(RedfishBmcHandle {
                shared: shared.clone(),
            });
            lab.tasks
                .push(tokio::spawn(serve(listener, acceptor.clone(), shared)));
        }
        Ok(lab)
    }

    /// The BMCs, `node1` first.
    pub fn bmcs(&self) -> &[RedfishBmcHandle] {
        &self.bmcs
    }

    /// The BMC with this name.
    pub fn bmc(&self, name: &str) -> Option<&RedfishBmcHandle> {
        self.bmcs.iter().find(|b| b.name() == name)
    }

    /// The PEM file of the CA that signed every BMC's certificate (trust it to verify them).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The DER encoding of the BMCs' certificate (for fingerprint pinning).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Applies a knob to the BMC it names, or to all; `false` if it names no BMC here.
    pub fn apply(&self, knob: &FaultKnob) -> bool {
        super::apply_knob(&self.bmcs, |b| b.name(), |b, f| b.set_fault(f), knob)
    }

    /// Stops every BMC and waits until their listeners and connections are closed.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Accepts connections and serves each as a task of a [`JoinSet`], so that stopping the BMC
/// (aborting this task) also drops every connection, including the ones held open silently.
async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let next_change = shared.next_change();
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let faults = *lock(&shared.faults);
                if faults.crashed || faults.silent {
                    // Accept and never answer: hold the socket until the lab stops.
                    shared.record(EventKind::FaultApplied("silent"));
                    conns.spawn(async move {
                        let _held = tcp;
                        std::future::pending::<()>().await;
                    });
                    continue;
                }
                let dropped = faults.drop > 0.0 && lock(&shared.rng).gen_bool(faults.drop);
                if faults.reset_connection || dropped {
                    shared.record(EventKind::FaultApplied(if dropped { "dropped" } else { "reset-connection" }));
                    // Linger 0: closing sends a TCP RST, as a BMC web server that crashed.
                    #[allow(deprecated)]
                    let _ = tcp.set_linger(Some(Duration::ZERO));
                    drop(tcp);
                    continue;
                }
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            // Knobs flipped while a kept-alive connection is open act on it
                            // too: a hung or crashed web server hangs or drops those as well.
                            let f = *lock(&shared.faults);
                            if f.silent || f.crashed {
                                shared.record(EventKind::FaultApplied("silent"));
                                std::future::pending::<()>().await;
                            }
                            if f.reset_connection {
                                shared.record(EventKind::FaultApplied("reset-connection"));
                                return Err("connection reset by the reset-connection knob");
                            }
                            Ok(handle(&shared, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
            _ = async {
                match next_change {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => shared.settle(),
            _ = shared.wake.notified() => {}
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Option<Value>) -> Reply {
    let mut b = Response::builder()
        .status(status)
        .header("OData-Version", "4.0")
        .header("Cache-Control", "no-cache");
    let bytes = match body {
        Some(v) => {
            b = b.header("Content-Type", "application/json;charset=utf-8");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(bytes))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error(status: StatusCode, id: &str, message: &str) -> Reply {
    let mut r = reply(
        status,
        Some(json!({
            "error": {
                "code": format!("Base.1.8.{id}"),
                "message": message,
                "@Message.ExtendedInfo": [{
                    "@odata.type": "#Message.v1_1_1.Message",
                    "MessageId": format!("Base.1.8.{id}"),
                    "Message": message,
                    "Severity": "Critical",
                    "Resolution": "See the message."
                }]
            }
        })),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            "WWW-Authenticate",
            hyper::header::HeaderValue::from_static("Basic realm=\"palisade-lab\""),
        );
    }
    r
}

/// An error with a vendor MessageId (the profile's), shaped as DSP0266 error responses are.
fn vendor_error(status: StatusCode, message_id: &str, message: &str) -> Reply {
    reply(
        status,
        Some(json!({
            "error": {
                "code": "Base.1.8.GeneralError",
                "message": "A general error has occurred. See ExtendedInfo for more information.",
                "@Message.ExtendedInfo": [{
                    "@odata.type": "#Message.v1_1_1.Message",
                    "MessageId": message_id,
                    "Message": message,
                    "Severity": "Warning",
                    "Resolution": "No response action is required."
                }]
            }
        })),
    )
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Whether the request carries a valid session token or Basic credentials.
fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    if lock(&shared.faults).refuse_auth {
        shared.record(EventKind::FaultApplied("refuse-auth"));
        return false;
    }
    if let Some(tok) = req
        .headers()
        .get("X-Auth-Token")
        .and_then(|v| v.to_str().ok())
    {
        let mut sessions = lock(&shared.sessions);
        let timeout = shared.session_timeout;
        sessions.retain(|_, s| s.last_used.elapsed() < timeout);
        return match sessions.get_mut(tok) {
            Some(s) => {
                s.last_used = Instant::now();
                true
            }
            None => false,
        };
    }
    let Some(basic) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(base64_decode)
    else {
        return false;
    };
    let expected: Vec<u8> = [shared.user.as_bytes(), b":", shared.password.expose()].concat();
    basic == expected
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    let faults = *lock(&shared.faults);
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    shared.settle();
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let mut resp = match precheck(&req) {
        Some(refused) => refused,
        // HEAD is GET without the body (DSP0266 §"HEAD").
        None => {
            if method == Method::HEAD {
                let mut get = req.map(|b| b);
                *get.method_mut() = Method::GET;
                let mut r = route(shared, get, &Method::GET, &path, faults).await;
                *r.body_mut() = Full::new(Bytes::new());
                r
            } else {
                route(shared, req, &method, &path, faults).await
            }
        }
    };
    decorate(&mut resp, &method, &path);
    if faults.garbage && resp.headers().contains_key("Content-Type") {
        shared.record(EventKind::FaultApplied("garbage"));
        let junk: Vec<u8> = {
            let mut rng = lock(&shared.rng);
            (0..rng.gen_range(1..200)).map(|_| rng.gen()).collect()
        };
        *resp.body_mut() = Full::new(Bytes::from(junk));
    }
    shared.record(EventKind::Http {
        method: method.to_string(),
        path,
        status: resp.status().as_u16(),
    });
    resp
}

/// Refuses what no resource here supports: an OData version other than 4.0 (412) and `$`
/// query parameters (501; DSP0266 §"Query parameters": unsupported ones shall be refused).
/// `None` lets the request through.
fn precheck(req: &Request<Incoming>) -> Option<Reply> {
    if let Some(v) = req.headers().get("OData-Version") {
        if v.as_bytes() != b"4.0" {
            return Some(error(
                StatusCode::PRECONDITION_FAILED,
                "HeaderInvalid",
                "only OData-Version 4.0 is supported",
            ));
        }
    }
    if let Some(q) = req.uri().query() {
        if q.split('&').any(|p| p.starts_with('$')) {
            return Some(error(
                StatusCode::NOT_IMPLEMENTED,
                "QueryNotSupported",
                "query parameters are not supported",
            ));
        }
    }
    None
}

/// The methods a URI supports, for the Allow header.
fn allowed(path: &str) -> &'static str {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["redfish", "v1", "SessionService", "Sessions"] => "GET, HEAD, POST",
        ["redfish", "v1", "SessionService", "Sessions", _] => "GET, HEAD, DELETE",
        ["redfish", "v1", "Systems", _] => "GET, HEAD, PATCH",
        [.., "Actions", _] => "POST",
        _ => "GET, HEAD",
    }
}

/// Adds the headers every response carries: Allow on GET, HEAD and 405 responses, and
/// `Link: <schema>; rel=describedby` on resources (DSP0266 §"Link header").
fn decorate(resp: &mut Reply, method: &Method, path: &str) {
    use hyper::header::HeaderValue;
    let status = resp.status();
    if status == StatusCode::METHOD_NOT_ALLOWED
        || (status.is_success() && (*method == Method::GET || *method == Method::HEAD))
    {
        resp.headers_mut()
            .insert("Allow", HeaderValue::from_static(allowed(path)));
    }
    if status == StatusCode::OK && (*method == Method::GET || *method == Method::HEAD) {
        let ty = schema_of(path);
        if let Some(ty) = ty {
            if let Ok(v) = HeaderValue::from_str(&format!(
                "<https://redfish.dmtf.org/schemas/v1/{ty}.json>; rel=describedby"
            )) {
                resp.headers_mut().insert("Link", v);
            }
        }
    }
}

/// The schema that describes the resource at `path`.
fn schema_of(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    Some(match segs.as_slice() {
        ["redfish", "v1"] => "ServiceRoot.v1_11_0",
        ["redfish", "v1", "SessionService"] => "SessionService.v1_1_8",
        ["redfish", "v1", "SessionService", "Sessions"] => "SessionCollection",
        ["redfish", "v1", "SessionService", "Sessions", _] => "Session.v1_6_0",
        ["redfish", "v1", "Systems"] => "ComputerSystemCollection",
        ["redfish", "v1", "Systems", _] => "ComputerSystem.v1_20_0",
        ["redfish", "v1", "Systems", _, "ResetActionInfo"] => "ActionInfo.v1_3_0",
        ["redfish", "v1", "AccountService"] => "AccountService.v1_13_0",
        ["redfish", "v1", "AccountService", "Accounts"] => "ManagerAccountCollection",
        ["redfish", "v1", "AccountService", "Accounts", _] => "ManagerAccount.v1_10_0",
        ["redfish", "v1", "AccountService", "Roles"] => "RoleCollection",
        ["redfish", "v1", "AccountService", "Roles", _] => "Role.v1_3_1",
        ["redfish", "v1", "TaskService", "Tasks", _] => "Task.v1_7_0",
        ["redfish", "v1", "Chassis"] => "ChassisCollection",
        ["redfish", "v1", "Chassis", _] => "Chassis.v1_21_0",
        ["redfish", "v1", "Managers"] => "ManagerCollection",
        ["redfish", "v1", "Managers", _] => "Manager.v1_15_0",
        ["redfish", "v1", "UpdateService"] => "UpdateService.v1_11_0",
        _ => return None,
    })
}

async fn route(
    shared: &Shared,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
    faults: Faults,
) -> Reply {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Public resources (DSP0266: the service root, /redfish and the OData documents need no
    // authentication, and a session is opened without one).
    match (method, segs.as_slice()) {
        (&Method::GET, ["redfish"]) => {
            return reply(StatusCode::OK, Some(json!({"v1": "/redfish/v1/"})))
        }
        (&Method::GET, ["redfish", "v1"]) => {
            return reply(StatusCode::OK, Some(service_root(shared)))
        }
        (&Method::GET, ["redfish", "v1", "odata"]) => {
            return reply(StatusCode::OK, Some(odata_doc()))
        }
        (&Method::GET, ["redfish", "v1", "$metadata"]) => return metadata(),
        // POST to a collection's Members property is a POST to the collection (DSP0266).
        (&Method::POST, ["redfish", "v1", "SessionService", "Sessions"])
        | (&Method::POST, ["redfish", "v1", "SessionService", "Sessions", "Members"]) => {
            return create_session(shared, req).await
        }
        _ => {}
    }
    if !authorized(shared, &req) {
        return error(StatusCode::UNAUTHORIZED, "NoValidSession", "no valid session or credentials; log in through SessionService/Sessions or send Basic credentials");
    }
    match (method, segs.as_slice()) {
        (&Method::GET, ["redfish", "v1", "SessionService"]) => reply(
            StatusCode::OK,
            Some(json!({
                "@odata.id": "/redfish/v1/SessionService",
                "@odata.type": "#SessionService.v1_1_8.SessionService",
                "Id": "SessionService", "Name": "Session Service",
                "ServiceEnabled": true,
                "SessionTimeout": shared.session_timeout.as_secs().max(30),
                "Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}
            })),
        ),
        (&Method::GET, ["redfish", "v1", "SessionService", "Sessions"]) => {
            let members: Vec<Value> = lock(&shared.sessions)
                .values()
                .map(|s| json!({"@odata.id": format!("/redfish/v1/SessionService/Sessions/{}", s.id)}))
                .collect();
            reply(
                StatusCode::OK,
                Some(collection(
                    "/redfish/v1/SessionService/Sessions",
                    "#SessionCollection.SessionCollection",
                    "Session Collection",
                    members,
                )),
            )
        }
        (&Method::GET, ["redfish", "v1", "SessionService", "Sessions", id]) => {
            let found = lock(&shared.sessions)
                .values()
                .any(|s| s.id.to_string() == *id);
            if found {
                reply(StatusCode::OK, Some(session_json(id, &shared.user)))
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "ResourceMissingAtURI",
                    "no such session",
                )
            }
        }
        (&Method::DELETE, ["redfish", "v1", "SessionService", "Sessions", id]) => {
            let mut sessions = lock(&shared.sessions);
            let before = sessions.len();
            sessions.retain(|_, s| s.id.to_string() != *id);
            if sessions.len() < before {
                shared.record(EventKind::SessionClosed {
                    session_id: id.parse().unwrap_or(0),
                    reason: "DELETE",
                });
                reply(StatusCode::NO_CONTENT, None)
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "ResourceMissingAtURI",
                    "no such session",
                )
            }
        }
        (&Method::GET, ["redfish", "v1", "AccountService"]) => reply(StatusCode::OK, Some(json!({
            "@odata.id": "/redfish/v1/AccountService",
            "@odata.type": "#AccountService.v1_13_0.AccountService",
            "Id": "AccountService", "Name": "Account Service",
            "ServiceEnabled": true,
            "Accounts": {"@odata.id": "/redfish/v1/AccountService/Accounts"},
            "Roles": {"@odata.id": "/redfish/v1/AccountService/Roles"}
        }))),
        (&Method::GET, ["redfish", "v1", "AccountService", "Accounts"]) => reply(StatusCode::OK, Some(collection(
            "/redfish/v1/AccountService/Accounts", "#ManagerAccountCollection.ManagerAccountCollection", "Accounts",
            vec![json!({"@odata.id": "/redfish/v1/AccountService/Accounts/1"})]))),
        (&Method::GET, ["redfish", "v1", "AccountService", "Accounts", "1"]) => with_etag(reply(StatusCode::OK, Some(json!({
            "@odata.id": "/redfish/v1/AccountService/Accounts/1",
            "@odata.type": "#ManagerAccount.v1_10_0.ManagerAccount",
            "Id": "1", "Name": "Account", "UserName": shared.user, "RoleId": "Administrator", "Enabled": true,
            "Password": null,
            "Links": {"Role": {"@odata.id": "/redfish/v1/AccountService/Roles/Administrator"}}
        })))),
        (&Method::GET, ["redfish", "v1", "AccountService", "Roles"]) => reply(StatusCode::OK, Some(collection(
            "/redfish/v1/AccountService/Roles", "#RoleCollection.RoleCollection", "Roles",
            ROLES.iter().map(|(r, _)| json!({"@odata.id": format!("/redfish/v1/AccountService/Roles/{r}")})).collect()))),
        (&Method::GET, ["redfish", "v1", "AccountService", "Roles", role]) => match ROLES.iter().find(|(r, _)| r == role) {
            Some((r, privs)) => reply(StatusCode::OK, Some(json!({
                "@odata.id": format!("/redfish/v1/AccountService/Roles/{r}"),
                "@odata.type": "#Role.v1_3_1.Role",
                "Id": r, "Name": r, "RoleId": r, "IsPredefined": true,
                "AssignedPrivileges": privs
            }))),
            None => error(StatusCode::NOT_FOUND, "ResourceMissingAtURI", "no such role"),
        },
        (&Method::GET, ["redfish", "v1", "Systems"]) => {
            let members: Vec<Value> = lock(&shared.systems)
                .iter()
                .map(|s| json!({"@odata.id": format!("/redfish/v1/Systems/{}", s.id)}))
                .collect();
            reply(
                StatusCode::OK,
                Some(collection(
                    "/redfish/v1/Systems",
                    "#ComputerSystemCollection.ComputerSystemCollection",
                    "Computer System Collection",
                    members,
                )),
            )
        }
        (&Method::GET, ["redfish", "v1", "Systems", id]) => match system_json(shared, id, faults) {
            Some(v) => with_body_etag(v),
            None => error(
                StatusCode::NOT_FOUND,
                "ResourceMissingAtURI",
                "no such system",
            ),
        },
        (&Method::GET, ["redfish", "v1", "Systems", id, "ResetActionInfo"]) => {
            if system_index(shared, id).is_none() {
                return error(
                    StatusCode::NOT_FOUND,
                    "ResourceMissingAtURI",
                    "no such system",
                );
            }
            reply(
                StatusCode::OK,
                Some(json!({
                    "@odata.id": format!("/redfish/v1/Systems/{id}/ResetActionInfo"),
                    "@odata.type": "#ActionInfo.v1_3_0.ActionInfo",
                    "Id": "ResetActionInfo", "Name": "Reset Action Info",
                    "Parameters": [{"Name": "ResetType", "Required": true, "DataType": "String", "AllowableValues": shared.reset_types}]
                })),
            )
        }
        (&Method::PATCH, ["redfish", "v1", "Systems", id]) => patch_system(shared, id, req, faults).await,
        (&Method::GET, ["redfish", "v1", "Chassis"]) => reply(StatusCode::OK, Some(collection(
            "/redfish/v1/Chassis", "#ChassisCollection.ChassisCollection", "Chassis Collection",
            vec![json!({"@odata.id": format!("/redfish/v1/Chassis/{}", shared.profile.chassis_id)})]))),
        (&Method::GET, ["redfish", "v1", "Chassis", id]) if *id == shared.profile.chassis_id => {
            with_body_etag(chassis_json(shared))
        }
        (&Method::GET, ["redfish", "v1", "Managers"]) => reply(StatusCode::OK, Some(collection(
            "/redfish/v1/Managers", "#ManagerCollection.ManagerCollection", "Manager Collection",
            vec![json!({"@odata.id": format!("/redfish/v1/Managers/{}", shared.profile.manager_id)})]))),
        (&Method::GET, ["redfish", "v1", "Managers", id]) if *id == shared.profile.manager_id => {
            with_body_etag(manager_json(shared))
        }
        (&Method::GET, ["redfish", "v1", "UpdateService"]) => reply(StatusCode::OK, Some(json!({
            "@odata.id": "/redfish/v1/UpdateService",
            "@odata.type": "#UpdateService.v1_11_0.UpdateService",
            "Id": "UpdateService", "Name": "Update Service",
            "ServiceEnabled": false,
            "Status": {"State": "Disabled", "Health": "OK"}
        }))),
        (&Method::POST, ["redfish", "v1", "Systems", id, "Actions", "ComputerSystem.Reset"]) => {
            reset(shared, id, req, faults).await
        }
        (&Method::GET, ["redfish", "v1", "TaskService", "Tasks", n, rest @ ..]) => {
            task(shared, n, rest)
        }
        (_, ["redfish", "v1", "Systems", _, "Actions", "ComputerSystem.Reset"])
        | (_, ["redfish", "v1", "SessionService", "Sessions"])
        | (_, ["redfish", "v1", "Systems", _]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "OperationNotAllowed",
            "method not allowed here",
        ),
        (m, _) if *m != Method::GET => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "OperationNotAllowed",
            "method not allowed here",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            "no resource at this URI",
        ),
    }
}

/// Adds a weak ETag (DSP0266 requires one on ManagerAccount GETs; the account never
/// changes here, so a constant tag is exact).
fn with_etag(mut r: Reply) -> Reply {
    r.headers_mut().insert(
        "ETag",
        hyper::header::HeaderValue::from_static("W/\"palisade-lab-1\""),
    );
    r
}

/// The predefined roles (DSP0266 §"Roles") and their privileges.
const ROLES: [(&str, &[&str]); 3] = [
    (
        "Administrator",
        &[
            "Login",
            "ConfigureManager",
            "ConfigureUsers",
            "ConfigureSelf",
            "ConfigureComponents",
        ],
    ),
    (
        "Operator",
        &["Login", "ConfigureSelf", "ConfigureComponents"],
    ),
    ("ReadOnly", &["Login", "ConfigureSelf"]),
];

fn collection(id: &str, ty: &str, name: &str, members: Vec<Value>) -> Value {
    json!({
        "@odata.id": id, "@odata.type": ty, "Name": name,
        "Members@odata.count": members.len(), "Members": members
    })
}

fn service_root(shared: &Shared) -> Value {
    let uuid = lock(&shared.systems)
        .first()
        .map(|s| s.uuid.clone())
        .unwrap_or_default();
    json!({
        "@odata.id": "/redfish/v1/",
        "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
        "Id": "RootService", "Name": "Root Service",
        "RedfishVersion": "1.15.0",
        "UUID": uuid,
        "Vendor": shared.profile.vendor, "Product": shared.profile.product,
        "ProtocolFeaturesSupported": {"ExpandQuery": {"ExpandAll": false, "Levels": false, "Links": false, "NoLinks": false}, "FilterQuery": false, "SelectQuery": false, "OnlyMemberQuery": false, "ExcerptQuery": false},
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
        "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
        "Managers": {"@odata.id": "/redfish/v1/Managers"},
        "UpdateService": {"@odata.id": "/redfish/v1/UpdateService"},
        "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
        "AccountService": {"@odata.id": "/redfish/v1/AccountService"},
        "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
    })
}

fn odata_doc() -> Value {
    json!({
        "@odata.context": "/redfish/v1/$metadata",
        "value": [
            {"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"},
            {"name": "Systems", "kind": "Singleton", "url": "/redfish/v1/Systems"},
            {"name": "Chassis", "kind": "Singleton", "url": "/redfish/v1/Chassis"},
            {"name": "Managers", "kind": "Singleton", "url": "/redfish/v1/Managers"},
            {"name": "UpdateService", "kind": "Singleton", "url": "/redfish/v1/UpdateService"},
            {"name": "SessionService", "kind": "Singleton", "url": "/redfish/v1/SessionService"},
            {"name": "AccountService", "kind": "Singleton", "url": "/redfish/v1/AccountService"}
        ]
    })
}

fn metadata() -> Reply {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ServiceRoot_v1.xml"><edmx:Include Namespace="ServiceRoot"/><edmx:Include Namespace="ServiceRoot.v1_11_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ComputerSystemCollection_v1.xml"><edmx:Include Namespace="ComputerSystemCollection"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ComputerSystem_v1.xml"><edmx:Include Namespace="ComputerSystem"/><edmx:Include Namespace="ComputerSystem.v1_20_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/SessionService_v1.xml"><edmx:Include Namespace="SessionService"/><edmx:Include Namespace="SessionService.v1_1_8"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/SessionCollection_v1.xml"><edmx:Include Namespace="SessionCollection"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/Session_v1.xml"><edmx:Include Namespace="Session"/><edmx:Include Namespace="Session.v1_6_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ActionInfo_v1.xml"><edmx:Include Namespace="ActionInfo"/><edmx:Include Namespace="ActionInfo.v1_3_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/AccountService_v1.xml"><edmx:Include Namespace="AccountService"/><edmx:Include Namespace="AccountService.v1_13_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ManagerAccountCollection_v1.xml"><edmx:Include Namespace="ManagerAccountCollection"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ManagerAccount_v1.xml"><edmx:Include Namespace="ManagerAccount"/><edmx:Include Namespace="ManagerAccount.v1_10_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/RoleCollection_v1.xml"><edmx:Include Namespace="RoleCollection"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/Role_v1.xml"><edmx:Include Namespace="Role"/><edmx:Include Namespace="Role.v1_3_1"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/Task_v1.xml"><edmx:Include Namespace="Task"/><edmx:Include Namespace="Task.v1_7_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ChassisCollection_v1.xml"><edmx:Include Namespace="ChassisCollection"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/Chassis_v1.xml"><edmx:Include Namespace="Chassis"/><edmx:Include Namespace="Chassis.v1_21_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ManagerCollection_v1.xml"><edmx:Include Namespace="ManagerCollection"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/Manager_v1.xml"><edmx:Include Namespace="Manager"/><edmx:Include Namespace="Manager.v1_15_0"/></edmx:Reference>
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/UpdateService_v1.xml"><edmx:Include Namespace="UpdateService"/><edmx:Include Namespace="UpdateService.v1_11_0"/></edmx:Reference>
  <edmx:DataServices><Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service"><EntityContainer Name="Service" Extends="ServiceRoot.v1_11_0.ServiceContainer"/></Schema></edmx:DataServices>
</edmx:Edmx>
"#;
    Response::builder()
        .status(StatusCode::OK)
        .header("OData-Version", "4.0")
        .header("Content-Type", "application/xml")
        .body(Full::new(Bytes::from_static(xml.as_bytes())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn session_json(id: &str, user: &str) -> Value {
    json!({
        "@odata.id": format!("/redfish/v1/SessionService/Sessions/{id}"),
        "@odata.type": "#Session.v1_6_0.Session",
        "Id": id, "Name": "User Session", "UserName": user
    })
}

async fn read_json(req: Request<Incoming>) -> Option<Value> {
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()?;
    serde_json::from_slice(&body.to_bytes()).ok()
}

async fn create_session(shared: &Shared, req: Request<Incoming>) -> Reply {
    let Some(body) = read_json(req).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "the body is not JSON",
        );
    };
    let (Some(user), Some(pw)) = (
        body.get("UserName").and_then(Value::as_str),
        body.get("Password").and_then(Value::as_str),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PropertyMissing",
            "UserName and Password are required",
        );
    };
    let refuse = lock(&shared.faults).refuse_auth;
    if refuse || user != shared.user || pw.as_bytes() != shared.password.expose() {
        shared.record(EventKind::FaultApplied("session-refused"));
        return error(
            StatusCode::UNAUTHORIZED,
            "InsufficientPrivilege",
            "invalid user name or password",
        );
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let token: String = {
        let mut rng = lock(&shared.rng);
        (0..32)
            .map(|_| format!("{:02x}", rng.gen::<u8>()))
            .collect()
    };
    {
        // Checked and taken under one lock: concurrent logins cannot pass the limit.
        let mut sessions = lock(&shared.sessions);
        if shared.max_sessions > 0 {
            let timeout = shared.session_timeout;
            sessions.retain(|_, s| s.last_used.elapsed() < timeout);
            if sessions.len() >= shared.max_sessions {
                drop(sessions);
                shared.record(EventKind::FaultApplied("session-limit"));
                let code = StatusCode::from_u16(shared.profile.session_limit_status)
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return vendor_error(
                    code,
                    "Base.1.8.SessionLimitExceeded",
                    &format!(
                        "The maximum number of user sessions ({}) is reached; close one before opening another",
                        shared.max_sessions
                    ),
                );
            }
        }
        sessions.insert(
            token.clone(),
            Session {
                id,
                last_used: Instant::now(),
            },
        );
        shared
            .sessions_peak
            .fetch_max(sessions.len(), Ordering::Relaxed);
    }
    shared.record(EventKind::SessionOpened {
        session_id: id as u32,
        user: user.to_string(),
        suite: 0,
    });
    let uri = format!("/redfish/v1/SessionService/Sessions/{id}");
    let mut r = reply(
        StatusCode::CREATED,
        Some(session_json(&id.to_string(), user)),
    );
    if let (Ok(t), Ok(l)) = (
        hyper::header::HeaderValue::from_str(&token),
        hyper::header::HeaderValue::from_str(&uri),
    ) {
        r.headers_mut().insert("X-Auth-Token", t);
        r.headers_mut().insert("Location", l);
    }
    r
}

fn system_index(shared: &Shared, id: &str) -> Option<usize> {
    lock(&shared.systems).iter().position(|s| s.id == id)
}

/// `PowerState` of a system: `PoweringOff`/`PoweringOn` while a change it was asked for is
/// pending (DSP8010 Resource.PowerState: "a temporary state between On and Off").
fn power_state(s: &System) -> &'static str {
    match (s.node.is_on(), s.target) {
        (true, Some(false)) => "PoweringOff",
        (false, Some(true)) => "PoweringOn",
        (true, _) => "On",
        (false, _) => "Off",
    }
}

/// A 200 with the body and a weak ETag computed from it, so the tag changes exactly when the
/// representation does (DSP0266 §"ETags"; clients send it back in If-Match).
fn with_body_etag(v: Value) -> Reply {
    let tag = body_etag(&v);
    let mut r = reply(StatusCode::OK, Some(v));
    if let Ok(h) = hyper::header::HeaderValue::from_str(&tag) {
        r.headers_mut().insert("ETag", h);
    }
    r
}

fn body_etag(v: &Value) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(v.to_string().as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// Boot override targets offered (DSP8010 ComputerSystem.BootSource, the usual subset).
const BOOT_TARGETS: [&str; 5] = ["None", "Pxe", "Hdd", "Cd", "BiosSetup"];

fn system_json(shared: &Shared, id: &str, faults: Faults) -> Option<Value> {
    let systems = lock(&shared.systems);
    let k = systems.iter().position(|s| s.id == id)?;
    let s = systems.get(k)?;
    let state = match (faults.lies, s.claimed) {
        (true, Some(claimed)) => {
            if claimed != s.node.is_on() {
                shared.record(EventKind::FaultApplied("lies"));
            }
            if claimed {
                "On"
            } else {
                "Off"
            }
        }
        _ => power_state(s),
    };
    let (enabled, target) = lock(&shared.boot).get(k).cloned().unwrap_or_default();
    let p = shared.profile;
    let mut v = json!({
        "@odata.id": format!("/redfish/v1/Systems/{id}"),
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": id, "Name": format!("{} {}", shared.name, id),
        "SystemType": "Physical",
        "Manufacturer": p.manufacturer, "Model": p.model,
        "UUID": s.uuid,
        "PowerState": state,
        "Status": {"State": "Enabled", "Health": "OK"},
        "Boot": {
            "BootSourceOverrideEnabled": enabled,
            "BootSourceOverrideTarget": target,
            "BootSourceOverrideMode": "UEFI",
            "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS
        },
        "Links": {
            "Chassis": [{"@odata.id": format!("/redfish/v1/Chassis/{}", p.chassis_id)}],
            "ManagedBy": [{"@odata.id": format!("/redfish/v1/Managers/{}", p.manager_id)}]
        },
        "Actions": {"#ComputerSystem.Reset": {
            "target": format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
            "ResetType@Redfish.AllowableValues": shared.reset_types,
            "@Redfish.ActionInfo": format!("/redfish/v1/Systems/{id}/ResetActionInfo")
        }}
    });
    if let Some(obj) = v.as_object_mut() {
        if faults.power_state_null {
            obj.insert("PowerState".into(), Value::Null);
        }
        if faults.power_state_missing {
            obj.remove("PowerState");
        }
    }
    Some(v)
}

fn system_links(shared: &Shared) -> Vec<Value> {
    lock(&shared.systems)
        .iter()
        .map(|s| json!({"@odata.id": format!("/redfish/v1/Systems/{}", s.id)}))
        .collect()
}

/// The one chassis: its PowerState follows the first system's (a one-node chassis).
fn chassis_json(shared: &Shared) -> Value {
    let p = shared.profile;
    let state = lock(&shared.systems)
        .first()
        .map(power_state)
        .unwrap_or("Off");
    json!({
        "@odata.id": format!("/redfish/v1/Chassis/{}", p.chassis_id),
        "@odata.type": "#Chassis.v1_21_0.Chassis",
        "Id": p.chassis_id, "Name": format!("{} chassis", shared.name),
        "ChassisType": "RackMount",
        "Manufacturer": p.manufacturer, "Model": p.model,
        "PowerState": state,
        "Status": {"State": "Enabled", "Health": "OK"},
        "Links": {
            "ComputerSystems": system_links(shared),
            "ManagedBy": [{"@odata.id": format!("/redfish/v1/Managers/{}", p.manager_id)}]
        }
    })
}

fn manager_json(shared: &Shared) -> Value {
    let p = shared.profile;
    json!({
        "@odata.id": format!("/redfish/v1/Managers/{}", p.manager_id),
        "@odata.type": "#Manager.v1_15_0.Manager",
        "Id": p.manager_id, "Name": format!("{} BMC", shared.name),
        "ManagerType": "BMC",
        "Manufacturer": p.vendor, "Model": p.product,
        "FirmwareVersion": p.firmware,
        "PowerState": "On",
        "Status": {"State": "Enabled", "Health": "OK"},
        "Links": {
            "ManagerForServers": system_links(shared),
            "ManagerForChassis": [{"@odata.id": format!("/redfish/v1/Chassis/{}", p.chassis_id)}]
        }
    })
}

/// PATCH of a system: only the boot override is writable. A stale If-Match is refused with
/// 412 (DSP0266 §"Conditional requests"), so two clients cannot overwrite each other.
async fn patch_system(shared: &Shared, id: &str, req: Request<Incoming>, faults: Faults) -> Reply {
    let Some(k) = system_index(shared, id) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            "no such system",
        );
    };
    let if_match = req
        .headers()
        .get(hyper::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(want) = if_match {
        let now = system_json(shared, id, faults).map(|v| body_etag(&v));
        let matches =
            want.trim() == "*" || want.split(',').any(|t| Some(t.trim()) == now.as_deref());
        if !matches {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "the ETag in If-Match is not the system's current one; GET it again and retry",
            );
        }
    }
    let Some(body) = read_json(req).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "the body is not JSON",
        );
    };
    let Some(boot) = body.get("Boot").and_then(Value::as_object) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PropertyNotWritable",
            "only Boot (BootSourceOverrideEnabled, BootSourceOverrideTarget) can be changed here",
        );
    };
    let mut all = lock(&shared.boot);
    let Some(entry) = all.get_mut(k) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            "no such system",
        );
    };
    let mut next = entry.clone();
    for (key, value) in boot {
        let Some(v) = value.as_str() else {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyValueTypeError",
                &format!("Boot.{key} must be a string"),
            );
        };
        match key.as_str() {
            "BootSourceOverrideEnabled" if ["Disabled", "Once", "Continuous"].contains(&v) => {
                next.0 = v.to_string()
            }
            "BootSourceOverrideTarget" if BOOT_TARGETS.contains(&v) => next.1 = v.to_string(),
            // The mode is fixed (UEFI); sending the value it has is no change.
            "BootSourceOverrideMode" if v == "UEFI" => {}
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PropertyValueNotInList",
                    &format!("Boot.{key} = {v} is not accepted here"),
                )
            }
        }
    }
    *entry = next;
    drop(all);
    reply(StatusCode::NO_CONTENT, None)
}

/// Whether a reset asks for the state the system is already in or moving to (what some
/// firmware refuses; see the profiles).
fn same_state(s: &System, a: PowerAction) -> bool {
    let on_or_going = s.target.unwrap_or_else(|| s.node.is_on());
    match a {
        PowerAction::Up => on_or_going,
        PowerAction::Down | PowerAction::SoftShutdown => !on_or_going,
        _ => false,
    }
}

async fn reset(shared: &Shared, id: &str, req: Request<Incoming>, faults: Faults) -> Reply {
    let Some(k) = system_index(shared, id) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            "no such system",
        );
    };
    let Some(body) = read_json(req).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "the body is not JSON",
        );
    };
    let Some(rt) = body
        .get("ResetType")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "ActionParameterMissing",
            "ResetType is required",
        );
    };
    if !shared.reset_types.contains(&rt) {
        return error(
            StatusCode::BAD_REQUEST,
            "ActionParameterValueNotInList",
            &format!("ResetType {rt} is not one of the AllowableValues"),
        );
    }
    if faults.server_error {
        shared.record(EventKind::FaultApplied("server-error"));
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the reset failed inside the BMC",
        );
    }
    let now = Instant::now();
    let action = match rt.as_str() {
        "On" | "ForceOn" => Some(PowerAction::Up),
        "ForceOff" => Some(PowerAction::Down),
        "GracefulShutdown" => Some(PowerAction::SoftShutdown),
        "ForceRestart" => Some(PowerAction::HardReset),
        "PowerCycle" => Some(PowerAction::Cycle),
        _ => None,
    };
    if action.is_some() && shared.false_same_state.load(Ordering::Relaxed) {
        shared.record(EventKind::FaultApplied("false-same-state"));
        let status = shared.profile.same_state_status.unwrap_or(409);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
        let message = match shared.profile.same_state_message {
            "" => "Base.1.8.ActionNotSupported",
            m => m,
        };
        return vendor_error(
            code,
            message,
            &format!("ResetType {rt}: the system is already in or moving to that power state"),
        );
    }
    if let (Some(status), Some(a)) = (shared.profile.same_state_status, action) {
        let refuse = lock(&shared.systems)
            .get(k)
            .is_some_and(|s| same_state(s, a));
        if refuse {
            shared.record(EventKind::FaultApplied("same-state-refused"));
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
            return vendor_error(
                code,
                shared.profile.same_state_message,
                &format!("ResetType {rt}: the system is already in or moving to that power state"),
            );
        }
    }
    if faults.stuck {
        shared.record(EventKind::FaultApplied("stuck"));
    } else if let (true, Some(a)) = (faults.lies, action) {
        // Acknowledged, not carried out; `PowerState` reports what was asked for from now on.
        shared.record(EventKind::FaultApplied("lies"));
        if let Some(s) = lock(&shared.systems).get_mut(k) {
            s.claimed = Some(!matches!(a, PowerAction::Down | PowerAction::SoftShutdown));
        }
    } else if let (Some(a), true) = (action, shared.endless_transition.load(Ordering::Relaxed)) {
        let to = match a {
            PowerAction::Up => Some(true),
            PowerAction::Down | PowerAction::SoftShutdown => Some(false),
            _ => None,
        };
        if let (Some(to), Some(s)) = (to, lock(&shared.systems).get_mut(k)) {
            shared.record(EventKind::FaultApplied("endless-transition"));
            s.target = Some(to);
            s.pinned = true;
        }
    } else if faults.power_on_fails && action == Some(PowerAction::Up) {
        shared.record(EventKind::FaultApplied("power-on-fails"));
    } else if let Some(a) = action {
        let mut systems = lock(&shared.systems);
        if let Some(s) = systems.get_mut(k) {
            match s.node.request(a, now) {
                Ok(()) => {
                    s.target = match a {
                        PowerAction::Up => Some(true),
                        PowerAction::Down | PowerAction::SoftShutdown => Some(false),
                        _ => None,
                    }
                }
                Err(_) => {
                    drop(systems);
                    return error(
                        StatusCode::CONFLICT,
                        "ActionNotSupported",
                        "the system is off; this reset needs power on",
                    );
                }
            }
        }
    }
    shared.settle();
    shared.wake.notify_one();
    if shared.profile.early_completed_task && !faults.endless_task && !faults.async_reset {
        // A task that says Completed while the power has not changed yet: only the power
        // state read back can tell the fencer anything.
        let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&shared.tasks).insert(
            n,
            TaskEntry {
                system: k,
                endless: false,
                early: true,
            },
        );
        let monitor = format!("/redfish/v1/TaskService/Tasks/{n}/Monitor");
        let mut r = reply(StatusCode::ACCEPTED, Some(task_json(n, "Completed")));
        if let Ok(l) = hyper::header::HeaderValue::from_str(&monitor) {
            r.headers_mut().insert("Location", l);
        }
        return r;
    }
    if faults.endless_task || faults.async_reset {
        let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&shared.tasks).insert(
            n,
            TaskEntry {
                system: k,
                endless: faults.endless_task,
                early: false,
            },
        );
        let monitor = format!("/redfish/v1/TaskService/Tasks/{n}/Monitor");
        let mut r = reply(StatusCode::ACCEPTED, Some(task_json(n, "Running")));
        if let Ok(l) = hyper::header::HeaderValue::from_str(&monitor) {
            r.headers_mut().insert("Location", l);
        }
        return r;
    }
    reply(StatusCode::NO_CONTENT, None)
}

fn task_json(n: u64, state: &str) -> Value {
    json!({
        "@odata.id": format!("/redfish/v1/TaskService/Tasks/{n}"),
        "@odata.type": "#Task.v1_7_0.Task",
        "Id": n.to_string(), "Name": "Reset task",
        "TaskState": state,
        "TaskStatus": "OK",
        "TaskMonitor": format!("/redfish/v1/TaskService/Tasks/{n}/Monitor"),
        "Messages": []
    })
}

fn task(shared: &Shared, n: &str, rest: &[&str]) -> Reply {
    let Some((n, entry)) = n.parse::<u64>().ok().and_then(|n| {
        lock(&shared.tasks)
            .get(&n)
            .map(|e| (n, (e.system, e.endless, e.early)))
    }) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            "no such task",
        );
    };
    let (system, endless, early) = entry;
    let running = endless
        || !early
            && lock(&shared.systems)
                .get(system)
                .is_some_and(|s| s.node.is_changing());
    let state = if running { "Running" } else { "Completed" };
    match rest {
        ["Monitor"] if running => reply(StatusCode::ACCEPTED, Some(task_json(n, state))),
        ["Monitor"] | [] => reply(StatusCode::OK, Some(task_json(n, state))),
        _ => error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            "no resource at this URI",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_uuids_keep_the_lab_guid_for_system_1() {
        assert_eq!(
            system_uuid("5a1e1ab0", 2, 1).unwrap(),
            "5a1e1ab0-0000-4000-8000-000000000002"
        );
        assert_eq!(
            system_uuid("5a1e1ab0", 2, 3).unwrap(),
            "5a1e1ab0-0000-4003-8000-000000000002"
        );
    }
}
