//! The daemon's one TOML configuration file: devices, targets and their levels, limits, API.
//!
//! Every error names the file, the line and the field, and says what was expected. Secrets are
//! read from files or environment variables named in the config, never written in it, and are
//! held as [`drivers::Secret`] so they are never printed.

use drivers::Secret;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
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

/// Raw file layout, as serde reads it; checked and resolved into [`Config`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    defaults: RawTiming,
    #[serde(default)]
    devices: BTreeMap<String, Spanned<RawDevice>>,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<RawTarget>>,
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
struct RawApi {
    tcp: Option<Spanned<String>>,
    tcp_role: Option<Role>,
    socket_mode: Option<Spanned<String>>,
    #[serde(default)]
    admin_uids: Vec<u32>,
    #[serde(default)]
    fence_uids: Vec<u32>,
    #[serde(default)]
    read_uids: Vec<u32>,
    #[serde(default)]
    admin_gids: Vec<u32>,
    #[serde(default)]
    fence_gids: Vec<u32>,
    #[serde(default)]
    read_gids: Vec<u32>,
    // Security (issue 5): see `resolve_security`.
    tls: Option<Spanned<RawTls>>,
    tokens_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    client_certs: Vec<Spanned<RawClientCert>>,
    auth_failures_per_minute: Option<u32>,
    max_connections: Option<usize>,
    header_timeout_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    window_s: Option<u64>,
    max_operations: Option<u32>,
    max_operations_per_target: Option<u32>,
    request_id_window_s: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    attempt_timeout_s: Option<f64>,
    total_timeout_s: Option<f64>,
    delay_s: Option<f64>,
    random_delay_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    kind: Spanned<String>,
    address: Option<Spanned<String>>,
    username: Option<String>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    cipher_suite: Option<Spanned<toml::Value>>,
    privilege: Option<Spanned<String>>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    allow_cipher_suite_0: Option<bool>,
    disks: Option<Spanned<Vec<PathBuf>>>,
    uuids: Option<Spanned<Vec<String>>>,
    system_id: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    ca_file: Option<Spanned<PathBuf>>,
    tls_fingerprint: Option<Spanned<String>>,
    insecure: Option<Spanned<bool>>,
    connect_timeout_ms: Option<u64>,
    total_timeout_ms: Option<u64>,
    // Kind `agent` (issue 10): see `agent_settings`.
    agent: Option<Spanned<PathBuf>>,
    options: Option<Spanned<BTreeMap<String, toml::Value>>>,
    environment: Option<BTreeMap<String, String>>,
    password_option: Option<Spanned<String>>,
    port_option: Option<Spanned<String>>,
    // Pacemaker-parity device selection (issue 10 part 3), for every kind: see
    // `selection_settings`.
    host_list: Option<Spanned<Vec<String>>>,
    host_map: Option<Spanned<BTreeMap<String, String>>>,
    host_check: Option<Spanned<String>>,
    max_concurrent: Option<Spanned<u32>>,
    monitor_interval_s: Option<Spanned<f64>>,
    on_fail: Option<Spanned<String>>,
    // snmp-pdu (issue 9): see `snmp_pdu_settings`.
    version: Option<Spanned<toml::Value>>,
    community_file: Option<Spanned<PathBuf>>,
    community_env: Option<Spanned<String>>,
    auth_protocol: Option<Spanned<String>>,
    auth_password_file: Option<Spanned<PathBuf>>,
    auth_password_env: Option<Spanned<String>>,
    priv_protocol: Option<Spanned<String>>,
    priv_password_file: Option<Spanned<PathBuf>>,
    priv_password_env: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    levels: Spanned<Vec<Vec<Spanned<String>>>>,
    #[serde(default)]
    identities: BTreeMap<String, Spanned<String>>,
    attempt_timeout_s: Option<f64>,
    total_timeout_s: Option<f64>,
    delay_s: Option<f64>,
    random_delay_s: Option<f64>,
}

/// Who may do what through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Status and history.
    Read,
    /// Read, plus fence and power on.
    Fence,
    /// Fence, plus manual confirmation and pause/resume.
    Admin,
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
    /// Targets by name.
    pub targets: BTreeMap<String, TargetConfig>,
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

/// API listeners and who gets which role.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Optional TCP listener (loopback only until TLS is configured).
    pub tcp: Option<SocketAddr>,
    /// Role of plain loopback TCP callers that present no token (TLS callers without a token
    /// or a mapped client certificate get no role).
    pub tcp_role: Role,
    /// Unix socket file mode.
    pub socket_mode: u32,
    /// uids with the admin role (root always has it).
    pub admin_uids: Vec<u32>,
    /// uids with the fence role.
    pub fence_uids: Vec<u32>,
    /// uids with the read role.
    pub read_uids: Vec<u32>,
    /// gids with the admin role.
    pub admin_gids: Vec<u32>,
    /// gids with the fence role.
    pub fence_gids: Vec<u32>,
    /// gids with the read role.
    pub read_gids: Vec<u32>,
    /// TLS, tokens, client certificates and connection bounds.
    pub security: ApiSecurity,
}

impl ApiConfig {
    /// The role of a local caller with these credentials, if any. Root is always admin: it can
    /// reach the devices directly anyway.
    pub fn role_for_peer(&self, uid: u32, gid: u32) -> Option<Role> {
        if uid == 0 || self.admin_uids.contains(&uid) || self.admin_gids.contains(&gid) {
            Some(Role::Admin)
        } else if self.fence_uids.contains(&uid) || self.fence_gids.contains(&gid) {
            Some(Role::Fence)
        } else if self.read_uids.contains(&uid) || self.read_gids.contains(&gid) {
            Some(Role::Read)
        } else {
            None
        }
    }
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

/// What kind of device, with its settings.
#[derive(Debug, Clone)]
pub enum DeviceKind {
    /// An IPMI v2.0 BMC over RMCP+.
    Ipmi(IpmiSettings),
    /// SBD shared disks: fences by poison pill and msgwait.
    Sbd(SbdSettings),
    /// A Redfish service over HTTPS (one ComputerSystem of it).
    Redfish(RedfishSettings),
    /// A switched PDU over SNMP; level entries name its outlets.
    SnmpPdu(SnmpPduSettings),
    /// A ClusterLabs fence agent run as a child process.
    Agent(AgentSettings),
}

/// Settings of a device of kind `agent`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The agent executable.
    pub program: PathBuf,
    /// Options passed on the agent's stdin (never secrets).
    pub options: Vec<(String, String)>,
    /// The password and the option name it is passed as (`password` by default).
    pub password: Option<(String, Secret)>,
    /// The option that names the plug for level entries `device:plug`.
    pub port_option: String,
    /// Extra environment variables for the agent.
    pub environment: Vec<(String, String)>,
    /// Deadline of each agent call.
    pub timeout: Duration,
}

/// SBD device settings.
#[derive(Debug, Clone)]
pub struct SbdSettings {
    /// The shared block devices (1 to 3).
    pub disks: Vec<PathBuf>,
    /// The UUID each disk must carry (parallel to `disks`), if pinned.
    pub uuids: Vec<Option<[u8; 16]>>,
    /// Deadline of each disk I/O.
    pub io_timeout: Duration,
}

/// Redfish device settings.
#[derive(Debug, Clone)]
pub struct RedfishSettings {
    /// `https://HOST[:PORT]`.
    pub base_url: String,
    /// Account name.
    pub username: String,
    /// Password (from a file or an environment variable).
    pub password: Secret,
    /// The system's id in the Systems collection, when the service has several.
    pub system_id: Option<String>,
    /// `session` (default), `basic` or `session_or_basic`.
    pub auth: drivers::redfish::AuthMode,
    /// How the certificate is verified.
    pub tls: drivers::redfish::TlsVerify,
    /// Connection setup limit per request.
    pub connect_timeout: Duration,
    /// Limit per HTTP request.
    pub request_timeout: Duration,
    /// Limit per device call.
    pub total_timeout: Duration,
}

/// IPMI device settings.
#[derive(Debug, Clone)]
pub struct IpmiSettings {
    /// BMC address.
    pub address: SocketAddr,
    /// User name.
    pub username: String,
    /// Password (from a file or an environment variable).
    pub password: Secret,
    /// `auto`, or a cipher suite number.
    pub cipher_suite: Option<u8>,
    /// `administrator` (default) or `operator`.
    pub privilege: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries per request.
    pub retries: u32,
    /// Whether the unauthenticated cipher suite 0 may be used.
    pub allow_cipher_suite_0: bool,
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

impl DeviceConfig {
    /// The kind's name as written in the config.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            DeviceKind::Ipmi(_) => "ipmi",
            DeviceKind::Sbd(_) => "sbd",
            DeviceKind::Redfish(_) => "redfish",
            DeviceKind::Agent(_) => "agent",
            DeviceKind::SnmpPdu(_) => "snmp-pdu",
        }
    }

    /// Where the device is, for display (never credentials).
    pub fn address(&self) -> String {
        match &self.kind {
            DeviceKind::Ipmi(s) => s.address.to_string(),
            DeviceKind::Sbd(s) => s
                .disks
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            DeviceKind::Redfish(s) => match &s.system_id {
                Some(id) => format!("{} system {id}", s.base_url),
                None => s.base_url.clone(),
            },
            DeviceKind::Agent(s) => {
                let addr = s
                    .options
                    .iter()
                    .find(|(k, _)| matches!(k.as_str(), "ip" | "ipaddr" | "ssl_host" | "hostname"))
                    .map(|(_, v)| format!(" {v}"))
                    .unwrap_or_default();
                format!("{}{addr}", s.program.display())
            }
            DeviceKind::SnmpPdu(s) => format!(
                "{} snmp v{} {}",
                s.address,
                drivers::pdu::device::version_of(&s.security),
                s.model.name
            ),
        }
    }
}

/// One entry of a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelEntry {
    /// Device name.
    pub device: String,
    /// Port or outlet.
    pub port: Option<String>,
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
}

/// Default Unix socket path.
pub const DEFAULT_SOCKET: &str = "/run/palisade/fenced.sock";
/// Default history path.
pub const DEFAULT_HISTORY: &str = "/var/lib/palisade/history.redb";

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text
            .get(..offset.min(self.text.len()))
            .map(|s| s.bytes().filter(|b| *b == b'\n').count() + 1)
            .unwrap_or(1)
    }

    fn err(&self, span: Option<std::ops::Range<usize>>, field: &str, msg: String) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)),
            field: Some(field.to_string()),
            message: msg,
        }
    }
}

fn seconds(
    ctx: &Ctx,
    span: Option<std::ops::Range<usize>>,
    field: &str,
    v: f64,
) -> Result<Duration, ConfigError> {
    if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
        return Err(ctx.err(
            span,
            field,
            format!("expected a number of seconds from 0 to 86400, found {v}"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
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
        let ctx = Ctx { file: path, text };
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| ctx.line_of(s.start));
            ConfigError {
                file: path.to_path_buf(),
                line,
                field: None,
                message: e.message().to_string(),
            }
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));

        let security = resolve_security(&ctx, base_dir, &mut raw.api)?;
        let daemon = DaemonConfig {
            socket: raw.daemon.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            history: raw
                .daemon
                .history
                .clone()
                .unwrap_or_else(|| DEFAULT_HISTORY.into()),
            node_name: raw
                .daemon
                .node_name
                .unwrap_or_else(|| hostname().unwrap_or_else(|| "fenced".into())),
            ledger_key: raw.daemon.ledger_key.unwrap_or_else(|| {
                raw.daemon
                    .history
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_HISTORY))
                    .with_extension("key")
            }),
        };

        let tcp = match raw.api.tcp {
            None => None,
            Some(s) => {
                let addr: SocketAddr = s.get_ref().parse().map_err(|_| {
                    ctx.err(
                        Some(s.span()),
                        "api.tcp",
                        format!(
                            "expected an address like 127.0.0.1:7420, found `{}`",
                            s.get_ref()
                        ),
                    )
                })?;
                if !addr.ip().is_loopback() && (security.tls.is_none() || !security.authenticates())
                {
                    return Err(ctx.err(Some(s.span()), "api.tcp", format!(
                        "{addr} is not a loopback address, and {}; anyone on the network could fence nodes. Either bind to 127.0.0.1 or ::1, or configure both `[api.tls] cert = \"PATH\"` + `key = \"PATH\"` and `api.tokens_file = \"PATH\"` (create tokens with `fenced token create`) or `[[api.client_certs]]` with `[api.tls] client_ca`",
                        if security.tls.is_none() { "TLS is not configured" } else { "no authentication (tokens_file or client_certs) is configured" }
                    )));
                }
                Some(addr)
            }
        };
        let socket_mode = match raw.api.socket_mode {
            None => 0o660,
            Some(s) => u32::from_str_radix(s.get_ref().trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    ctx.err(
                        Some(s.span()),
                        "api.socket_mode",
                        format!(
                            "expected an octal file mode like \"0660\", found `{}`",
                            s.get_ref()
                        ),
                    )
                })?,
        };
        let api = ApiConfig {
            tcp,
            tcp_role: raw.api.tcp_role.unwrap_or(Role::Read),
            socket_mode,
            admin_uids: raw.api.admin_uids,
            fence_uids: raw.api.fence_uids,
            read_uids: raw.api.read_uids,
            admin_gids: raw.api.admin_gids,
            fence_gids: raw.api.fence_gids,
            read_gids: raw.api.read_gids,
            security,
        };

        let limits = Limits {
            window: Duration::from_secs(raw.limits.window_s.unwrap_or(600).max(1)),
            max_operations: raw.limits.max_operations.unwrap_or(10),
            max_operations_per_target: raw.limits.max_operations_per_target.unwrap_or(3),
            request_id_window: Duration::from_secs(raw.limits.request_id_window_s.unwrap_or(300)),
        };

        let mut devices = BTreeMap::new();
        for (name, dev) in raw.devices {
            let span = dev.span();
            let dev = dev.into_inner();
            let field = |f: &str| format!("devices.{name}.{f}");
            let kind = match dev.kind.get_ref().as_str() {
                "ipmi" => {
                    let address = dev.address.as_ref().ok_or_else(|| {
                        ctx.err(
                            Some(span.clone()),
                            &field("address"),
                            "an ipmi device needs `address = \"HOST:PORT\"` (port 623 if omitted)"
                                .into(),
                        )
                    })?;
                    let addr = parse_addr(address.get_ref(), 623).ok_or_else(|| {
                        ctx.err(Some(address.span()), &field("address"), format!("expected an IP address with optional port, like 192.0.2.10:623, found `{}`", address.get_ref()))
                    })?;
                    let username = dev.username.clone().ok_or_else(|| {
                        ctx.err(
                            Some(span.clone()),
                            &field("username"),
                            "an ipmi device needs `username`".into(),
                        )
                    })?;
                    let password = load_secret(&ctx, base_dir, &name, &dev, env)?;
                    let cipher_suite = match &dev.cipher_suite {
                        None => None,
                        Some(v) => match v.get_ref() {
                            toml::Value::String(s) if s == "auto" => None,
                            toml::Value::Integer(n) if *n == 3 || *n == 17 || *n == 0 => {
                                Some(*n as u8)
                            }
                            other => {
                                return Err(ctx.err(
                                    Some(v.span()),
                                    &field("cipher_suite"),
                                    format!("expected \"auto\", 3 or 17, found {other}"),
                                ))
                            }
                        },
                    };
                    let allow0 = dev.allow_cipher_suite_0.unwrap_or(false);
                    if cipher_suite == Some(0) && !allow0 {
                        return Err(ctx.err(dev.cipher_suite.as_ref().map(|v| v.span()), &field("cipher_suite"), "cipher suite 0 sends commands without authentication; set `allow_cipher_suite_0 = true` if you really must".into()));
                    }
                    let privilege = match &dev.privilege {
                        None => "administrator".to_string(),
                        Some(p) => match p.get_ref().as_str() {
                            "administrator" | "operator" => p.get_ref().clone(),
                            other => {
                                return Err(ctx.err(
                                    Some(p.span()),
                                    &field("privilege"),
                                    format!(
                                    "expected \"administrator\" or \"operator\", found `{other}`"
                                ),
                                ))
                            }
                        },
                    };
                    DeviceKind::Ipmi(IpmiSettings {
                        address: addr,
                        username,
                        password,
                        cipher_suite,
                        privilege,
                        timeout: Duration::from_millis(
                            dev.timeout_ms.unwrap_or(1000).clamp(50, 60_000),
                        ),
                        retries: dev.retries.unwrap_or(2).min(10),
                        allow_cipher_suite_0: allow0,
                    })
                }
                "sbd" => {
                    let disks = dev.disks.as_ref().filter(|d| (1..=3).contains(&d.get_ref().len())).ok_or_else(|| {
                        ctx.err(dev.disks.as_ref().map(|d| d.span()).or(Some(span.clone())), &field("disks"), "an sbd device needs `disks = [\"/dev/disk/by-id/...\"]` with 1 to 3 shared block devices".into())
                    })?;
                    let uuids = match &dev.uuids {
                        None => vec![None; disks.get_ref().len()],
                        Some(u) if u.get_ref().len() == disks.get_ref().len() => u
                            .get_ref()
                            .iter()
                            .map(|s| drivers::sbd::format::parse_uuid(s).map(Some))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| ctx.err(Some(u.span()), &field("uuids"), "expected UUIDs like 3f2c9d1e-...-..., as `palisade-sbd dump` prints them".into()))?,
                        Some(u) => return Err(ctx.err(Some(u.span()), &field("uuids"), format!("expected one UUID per disk ({}), found {}", disks.get_ref().len(), u.get_ref().len()))),
                    };
                    DeviceKind::Sbd(SbdSettings {
                        disks: disks.get_ref().clone(),
                        uuids,
                        io_timeout: Duration::from_millis(
                            dev.timeout_ms.unwrap_or(2000).clamp(100, 60_000),
                        ),
                    })
                }
                "snmp-pdu" => DeviceKind::SnmpPdu(snmp_pdu_settings(
                    &ctx,
                    base_dir,
                    &name,
                    &dev,
                    span.clone(),
                    env,
                )?),
                "redfish" => DeviceKind::Redfish(redfish_settings(
                    &ctx,
                    base_dir,
                    &name,
                    &dev,
                    span.clone(),
                    env,
                )?),
                "agent" => DeviceKind::Agent(agent_settings(
                    &ctx,
                    base_dir,
                    &name,
                    &dev,
                    span.clone(),
                    env,
                )?),
                other => {
                    return Err(ctx.err(
                        Some(dev.kind.span()),
                        &field("kind"),
                        format!(
                            "unknown device kind `{other}`; expected one of: agent, ipmi, redfish, sbd, snmp-pdu"
                        ),
                    ))
                }
            };
            let selection = selection_settings(&ctx, &name, &dev)?;
            devices.insert(
                name.clone(),
                DeviceConfig {
                    name,
                    kind,
                    selection,
                },
            );
        }

        let mut targets = BTreeMap::new();
        for (name, t) in raw.targets {
            let span = t.span();
            let t = t.into_inner();
            let field = |f: &str| format!("targets.{name}.{f}");
            if t.levels.get_ref().is_empty() {
                return Err(ctx.err(
                    Some(t.levels.span()),
                    &field("levels"),
                    "expected at least one level, e.g. levels = [[\"bmc-node1\"]]".into(),
                ));
            }
            let mut levels = Vec::new();
            for (i, level) in t.levels.get_ref().iter().enumerate() {
                if level.is_empty() {
                    return Err(ctx.err(
                        Some(t.levels.span()),
                        &field("levels"),
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
                    if !devices.contains_key(&dev) {
                        return Err(ctx.err(Some(entry.span()), &field("levels"), format!(
                            "level {} names device `{dev}`, which is not defined; expected one of: {}",
                            i + 1,
                            devices.keys().cloned().collect::<Vec<_>>().join(", ")
                        )));
                    }
                    // An SBD level entry's port is the slot name: the target's own by default.
                    let port = match devices.get(&dev).map(|d| &d.kind) {
                        Some(DeviceKind::Sbd(_)) => port.or_else(|| Some(name.clone())),
                        _ => port,
                    };
                    let port = match devices.get(&dev) {
                        Some(d) => select_port(&ctx, d, &name, port, entry.span())?,
                        None => port,
                    };
                    entries.push(LevelEntry { device: dev, port });
                }
                levels.push(entries);
            }
            let mut identities = BTreeMap::new();
            for (dev, id) in &t.identities {
                if !levels.iter().flatten().any(|e| &e.device == dev) {
                    return Err(ctx.err(
                        Some(id.span()),
                        &field("identities"),
                        format!(
                            "identity given for device `{dev}`, which no level of this target uses"
                        ),
                    ));
                }
                identities.insert(dev.clone(), id.get_ref().trim().to_ascii_lowercase());
            }
            let own = RawTiming {
                attempt_timeout_s: t.attempt_timeout_s,
                total_timeout_s: t.total_timeout_s,
                delay_s: t.delay_s,
                random_delay_s: t.random_delay_s,
            };
            let timing = resolve_timing(&ctx, &name, &own, &raw.defaults, span)?;
            targets.insert(
                name.clone(),
                TargetConfig {
                    name,
                    levels,
                    identities,
                    timing,
                },
            );
        }

        Ok(Config {
            source: path.to_path_buf(),
            daemon,
            api,
            limits,
            devices,
            targets,
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

fn resolve_timing(
    ctx: &Ctx,
    target: &str,
    t: &RawTiming,
    d: &RawTiming,
    span: std::ops::Range<usize>,
) -> Result<Timing, ConfigError> {
    let f = |n: &str| format!("targets.{target}.{n}");
    let get = |a: Option<f64>, b: Option<f64>, default: f64| a.or(b).unwrap_or(default);
    let attempt = seconds(
        ctx,
        Some(span.clone()),
        &f("attempt_timeout_s"),
        get(t.attempt_timeout_s, d.attempt_timeout_s, 20.0),
    )?;
    let total = seconds(
        ctx,
        Some(span.clone()),
        &f("total_timeout_s"),
        get(t.total_timeout_s, d.total_timeout_s, 120.0),
    )?;
    if attempt.is_zero() || total < attempt {
        return Err(ctx.err(Some(span), &f("total_timeout_s"), format!(
            "expected attempt_timeout_s > 0 and total_timeout_s >= attempt_timeout_s, found {} and {}",
            attempt.as_secs_f64(), total.as_secs_f64()
        )));
    }
    Ok(Timing {
        attempt_timeout: attempt,
        total_timeout: total,
        delay: seconds(
            ctx,
            Some(span.clone()),
            &f("delay_s"),
            get(t.delay_s, d.delay_s, 0.0),
        )?,
        random_delay: seconds(
            ctx,
            Some(span),
            &f("random_delay_s"),
            get(t.random_delay_s, d.random_delay_s, 0.0),
        )?,
    })
}

fn redfish_settings(
    ctx: &Ctx,
    base_dir: &Path,
    name: &str,
    dev: &RawDevice,
    span: std::ops::Range<usize>,
    env: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<RedfishSettings, ConfigError> {
    use drivers::redfish::{AuthMode, TlsVerify};
    let field = |f: &str| format!("devices.{name}.{f}");
    let address = dev.address.as_ref().ok_or_else(|| {
        ctx.err(
            Some(span.clone()),
            &field("address"),
            "a redfish device needs `address = \"https://HOST[:PORT]\"` (or HOST[:PORT]; https is implied)".into(),
        )
    })?;
    let a = address.get_ref().trim().trim_end_matches('/');
    let base_url = if let Some(rest) = a.strip_prefix("https://") {
        format!("https://{rest}")
    } else if a.contains("://") {
        return Err(ctx.err(Some(address.span()), &field("address"), format!("expected https://HOST[:PORT], found `{a}`: Redfish credentials must not cross the network in clear")));
    } else {
        format!("https://{a}")
    };
    let host = base_url.trim_start_matches("https://");
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(ctx.err(Some(address.span()), &field("address"), format!("expected https://HOST[:PORT] with no path or user, found `{a}`; credentials go in username and password_file")));
    }
    let username = dev.username.clone().ok_or_else(|| {
        ctx.err(
            Some(span.clone()),
            &field("username"),
            "a redfish device needs `username`".into(),
        )
    })?;
    let password = load_secret(ctx, base_dir, name, dev, env)?;
    let auth = match &dev.auth {
        None => AuthMode::Session,
        Some(a) => match a.get_ref().as_str() {
            "session" => AuthMode::Session,
            "basic" => AuthMode::Basic,
            "session_or_basic" => AuthMode::SessionOrBasic,
            other => {
                return Err(ctx.err(
                    Some(a.span()),
                    &field("auth"),
                    format!(
                        "expected \"session\", \"basic\" or \"session_or_basic\", found `{other}`"
                    ),
                ))
            }
        },
    };
    let insecure = dev.insecure.as_ref().is_some_and(|b| *b.get_ref());
    let tls = match (&dev.ca_file, &dev.tls_fingerprint, insecure) {
        (None, None, false) => TlsVerify::SystemRoots,
        (Some(f), None, false) => {
            let p = if f.get_ref().is_absolute() {
                f.get_ref().clone()
            } else {
                base_dir.join(f.get_ref())
            };
            TlsVerify::CaFile(p)
        }
        (None, Some(fp), false) => TlsVerify::Fingerprint(
            TlsVerify::parse_fingerprint(fp.get_ref())
                .map_err(|m| ctx.err(Some(fp.span()), &field("tls_fingerprint"), m.to_string()))?,
        ),
        (None, None, true) => TlsVerify::Insecure,
        _ => {
            let at = dev
                .insecure
                .as_ref()
                .map(|b| b.span())
                .or(dev.tls_fingerprint.as_ref().map(|f| f.span()));
            return Err(ctx.err(
                at,
                &field("tls"),
                "give at most one of ca_file, tls_fingerprint and insecure = true".into(),
            ));
        }
    };
    if dev.cipher_suite.is_some()
        || dev.privilege.is_some()
        || dev.allow_cipher_suite_0.is_some()
        || dev.retries.is_some()
    {
        return Err(ctx.err(Some(span), &field("kind"), "cipher_suite, privilege, allow_cipher_suite_0 and retries are IPMI settings; remove them from this redfish device".into()));
    }
    let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d).clamp(50, 600_000));
    Ok(RedfishSettings {
        base_url,
        username,
        password,
        system_id: dev.system_id.as_ref().map(|s| s.get_ref().clone()),
        auth,
        tls,
        connect_timeout: ms(dev.connect_timeout_ms, 3000),
        request_timeout: ms(dev.timeout_ms, 10_000),
        total_timeout: ms(dev.total_timeout_ms, 30_000),
    })
}

/// Reads a device's selection settings (every kind).
fn selection_settings(
    ctx: &Ctx,
    name: &str,
    dev: &RawDevice,
) -> Result<DeviceSelection, ConfigError> {
    let field = |f: &str| format!("devices.{name}.{f}");
    let dynamic_list = match &dev.host_check {
        None => false,
        Some(h) => match h.get_ref().as_str() {
            "static-list" => false,
            "dynamic-list" => true,
            "status" => false,
            other => {
                return Err(ctx.err(
                    Some(h.span()),
                    &field("host_check"),
                    format!("expected \"static-list\" (host_list, host_map and level ports), \"dynamic-list\" (ports found in the device's `list` by target name) or \"status\" (the target's name is the port; the device's status answer decides), found `{other}`"),
                ))
            }
        },
    };
    let max_concurrent = match &dev.max_concurrent {
        None => None,
        Some(m) if *m.get_ref() >= 1 => Some(*m.get_ref()),
        Some(m) => {
            return Err(ctx.err(
                Some(m.span()),
                &field("max_concurrent"),
                "expected at least 1 call at a time".into(),
            ))
        }
    };
    let monitor_interval = match &dev.monitor_interval_s {
        None => None,
        Some(v) if v.get_ref().is_finite() && (1.0..=86_400.0).contains(v.get_ref()) => {
            Some(Duration::from_secs_f64(*v.get_ref()))
        }
        Some(v) => {
            return Err(ctx.err(
                Some(v.span()),
                &field("monitor_interval_s"),
                format!("expected 1 to 86400 seconds, found {}", v.get_ref()),
            ))
        }
    };
    let skip_when_unhealthy = match &dev.on_fail {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "try" => false,
            "skip" => true,
            other => {
                return Err(ctx.err(
                    Some(v.span()),
                    &field("on_fail"),
                    format!("expected \"try\" (a level holding this device is tried even after a failed health check) or \"skip\" (such a level is skipped, and the next one tried, until a health check passes), found `{other}`"),
                ))
            }
        },
    };
    let status_check = dev
        .host_check
        .as_ref()
        .is_some_and(|h| h.get_ref() == "status");
    Ok(DeviceSelection {
        status_check,
        host_list: dev.host_list.as_ref().map(|l| l.get_ref().clone()),
        host_map: dev
            .host_map
            .as_ref()
            .map(|m| m.get_ref().clone())
            .unwrap_or_default(),
        dynamic_list,
        max_concurrent,
        monitor_interval,
        skip_when_unhealthy,
    })
}

/// The port a target's level entry uses on a device: the entry's own, else the device's host
/// map, else (dynamic list) the target's name, resolved through `list` at fence time. A device
/// with a host list (or map) may fence only the targets it names.
fn select_port(
    ctx: &Ctx,
    d: &DeviceConfig,
    target: &str,
    port: Option<String>,
    span: std::ops::Range<usize>,
) -> Result<Option<String>, ConfigError> {
    let sel = &d.selection;
    if let Some(list) = &sel.host_list {
        if !list.iter().any(|h| h == target) && !sel.host_map.contains_key(target) {
            return Err(ctx.err(Some(span), &format!("targets.{target}.levels"), format!(
                "device `{}` may not fence `{target}`: its host_list is [{}]; add the target there (or to its host_map) or use another device",
                d.name,
                list.join(", ")
            )));
        }
    }
    Ok(port
        .or_else(|| sel.host_map.get(target).cloned())
        .or_else(|| (sel.dynamic_list || sel.status_check).then(|| target.to_string())))
}

/// Options an agent device must not set in `options`: Palisade sets them per call, or they are
/// secrets that belong in `password_file`.
const AGENT_RESERVED: &[&str] = &[
    "action",
    "option",
    "port",
    "plug",
    "nodename",
    "password",
    "passwd",
    "password_script",
    "passwd_script",
];

fn agent_settings(
    ctx: &Ctx,
    base_dir: &Path,
    name: &str,
    dev: &RawDevice,
    span: std::ops::Range<usize>,
    env: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<AgentSettings, ConfigError> {
    let field = |f: &str| format!("devices.{name}.{f}");
    let program = dev.agent.as_ref().ok_or_else(|| {
        ctx.err(
            Some(span.clone()),
            &field("agent"),
            "an agent device needs `agent = \"/usr/sbin/fence_NAME\"`".into(),
        )
    })?;
    let p = program.get_ref();
    let program_path = if p.is_absolute() {
        p.clone()
    } else {
        base_dir.join(p)
    };
    if dev.address.is_some()
        || dev.cipher_suite.is_some()
        || dev.privilege.is_some()
        || dev.disks.is_some()
        || dev.system_id.is_some()
    {
        return Err(ctx.err(Some(span.clone()), &field("kind"), "address, cipher_suite, privilege, disks and system_id are settings of other kinds; an agent's own options go in `options = { ip = \"...\", ... }`".into()));
    }
    let mut options = Vec::new();
    if let Some(o) = &dev.options {
        for (k, v) in o.get_ref() {
            let key = k.replace('-', "_");
            if AGENT_RESERVED.contains(&key.as_str()) {
                return Err(ctx.err(Some(o.span()), &field("options"), format!(
                    "`{k}` cannot be set in options: {}",
                    if key.starts_with("pass") { "passwords go in password_file (mode 0600) or password_env, never in the config" } else { "Palisade sets it on every call (the plug comes from the target's level entry `device:plug`)" }
                )));
            }
            let value = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => {
                    if *b {
                        "1".into()
                    } else {
                        "0".into()
                    }
                }
                other => {
                    return Err(ctx.err(
                        Some(o.span()),
                        &field("options"),
                        format!(
                            "option `{k}`: expected a string, number or boolean, found {other}"
                        ),
                    ))
                }
            };
            if value.contains(['\n', '\r', '\0'])
                || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(ctx.err(Some(o.span()), &field("options"), format!("option `{k}`: names are letters, digits, `-` and `_`, and values hold no line breaks")));
            }
            options.push((key, value));
        }
    }
    let password = if dev.password_file.is_some() || dev.password_env.is_some() {
        let opt = dev
            .password_option
            .as_ref()
            .map_or_else(|| "password".to_string(), |o| o.get_ref().clone());
        Some((opt, load_secret(ctx, base_dir, name, dev, env)?))
    } else {
        None
    };
    Ok(AgentSettings {
        program: program_path,
        options,
        password,
        port_option: dev
            .port_option
            .as_ref()
            .map_or_else(|| "plug".to_string(), |o| o.get_ref().clone()),
        environment: dev
            .environment
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        timeout: Duration::from_millis(dev.timeout_ms.unwrap_or(20_000).clamp(100, 600_000)),
    })
}

fn load_secret(
    ctx: &Ctx,
    base_dir: &Path,
    name: &str,
    dev: &RawDevice,
    env: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Secret, ConfigError> {
    match (&dev.password_file, &dev.password_env) {
        (Some(file), None) => {
            let p = if file.get_ref().is_absolute() { file.get_ref().clone() } else { base_dir.join(file.get_ref()) };
            check_secret_file_mode(&p).map_err(|m| ctx.err(Some(file.span()), &format!("devices.{name}.password_file"), m))?;
            std::fs::read(&p).map(Secret::from_file_contents).map_err(|e| {
                ctx.err(Some(file.span()), &format!("devices.{name}.password_file"), format!("cannot read password file {}: {e}", p.display()))
            })
        }
        (None, Some(var)) => {
            // The kernel keeps the initial environment readable in /proc/PID/environ (to root
            // and the same user) for the life of the process, whatever we do with it.
            tracing::warn!("devices.{name}.password_env: the password stays readable in fenced's /proc/PID/environ; prefer password_file (mode 0600)");
            env(var.get_ref()).map(Secret::from_file_contents).ok_or_else(|| {
            ctx.err(Some(var.span()), &format!("devices.{name}.password_env"), format!("environment variable {} is not set", var.get_ref()))
        })
        }
        (Some(f), Some(_)) => Err(ctx.err(Some(f.span()), &format!("devices.{name}"), "give either password_file or password_env, not both".into())),
        (None, None) => Err(ctx.err(Some(dev.kind.span()), &format!("devices.{name}.password_file"), "expected password_file = \"PATH\" or password_env = \"VAR\" (passwords are never written in the config itself)".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// SNMP PDUs (issue 9). Kept in its own section so other branches' config changes merge cleanly.

/// snmp-pdu device settings.
#[derive(Debug, Clone)]
pub struct SnmpPduSettings {
    /// The agent's UDP address (port 161 if omitted).
    pub address: SocketAddr,
    /// Version and credentials (community from a file or environment variable; v3 passwords
    /// likewise).
    pub security: drivers::pdu::Security,
    /// The vendor model.
    pub model: &'static drivers::pdu::Model,
    /// Wait per try.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
}

/// Reads one optional secret given as `FIELD_file` or `FIELD_env`.
#[allow(clippy::too_many_arguments)]
fn optional_secret(
    ctx: &Ctx,
    base_dir: &Path,
    name: &str,
    field: &str,
    file: &Option<Spanned<PathBuf>>,
    var: &Option<Spanned<String>>,
    env: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Option<Secret>, ConfigError> {
    let f = |suffix: &str| format!("devices.{name}.{field}_{suffix}");
    match (file, var) {
        (Some(file), None) => {
            let p = if file.get_ref().is_absolute() {
                file.get_ref().clone()
            } else {
                base_dir.join(file.get_ref())
            };
            check_secret_file_mode(&p).map_err(|m| ctx.err(Some(file.span()), &f("file"), m))?;
            let s = std::fs::read(&p)
                .map(Secret::from_file_contents)
                .map_err(|e| {
                    ctx.err(
                        Some(file.span()),
                        &f("file"),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
            if s.is_empty() {
                return Err(ctx.err(
                    Some(file.span()),
                    &f("file"),
                    format!("{} is empty", p.display()),
                ));
            }
            Ok(Some(s))
        }
        (None, Some(v)) => {
            tracing::warn!(
                "{}: the secret stays readable in fenced's /proc/PID/environ; prefer {}",
                f("env"),
                f("file")
            );
            env(v.get_ref())
                .map(Secret::from_file_contents)
                .map(Some)
                .ok_or_else(|| {
                    ctx.err(
                        Some(v.span()),
                        &f("env"),
                        format!("environment variable {} is not set", v.get_ref()),
                    )
                })
        }
        (Some(file), Some(_)) => Err(ctx.err(
            Some(file.span()),
            &format!("devices.{name}"),
            format!("give either {field}_file or {field}_env, not both"),
        )),
        (None, None) => Ok(None),
    }
}

fn snmp_pdu_settings(
    ctx: &Ctx,
    base_dir: &Path,
    name: &str,
    dev: &RawDevice,
    span: std::ops::Range<usize>,
    env: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<SnmpPduSettings, ConfigError> {
    use drivers::pdu::{AuthProtocol, PrivProtocol, Security, UsmUser, Version};
    let field = |f: &str| format!("devices.{name}.{f}");
    let address = dev.address.as_ref().ok_or_else(|| {
        ctx.err(
            Some(span.clone()),
            &field("address"),
            "an snmp-pdu device needs `address = \"HOST:PORT\"` (port 161 if omitted)".into(),
        )
    })?;
    let addr = parse_addr(address.get_ref(), 161).ok_or_else(|| {
        ctx.err(
            Some(address.span()),
            &field("address"),
            format!(
                "expected an IP address with optional port, like 192.0.2.20:161, found `{}`",
                address.get_ref()
            ),
        )
    })?;
    let model = match &dev.model {
        None => {
            return Err(ctx.err(
                Some(span.clone()),
                &field("model"),
                format!(
                    "an snmp-pdu device needs `model`, one of: {}",
                    drivers::pdu::model::names()
                ),
            ))
        }
        Some(m) => drivers::pdu::model::by_name(m.get_ref()).ok_or_else(|| {
            ctx.err(
                Some(m.span()),
                &field("model"),
                format!(
                    "unknown model `{}`; expected one of: {}",
                    m.get_ref(),
                    drivers::pdu::model::names()
                ),
            )
        })?,
    };
    let version = match &dev.version {
        None if dev.username.is_some() => "3".to_string(),
        None => "2c".to_string(),
        Some(v) => match v.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            other => other.to_string(),
        },
    };
    let version_span = dev
        .version
        .as_ref()
        .map(|v| v.span())
        .or(Some(span.clone()));
    let community = optional_secret(
        ctx,
        base_dir,
        name,
        "community",
        &dev.community_file,
        &dev.community_env,
        env,
    )?;
    let security = match version.as_str() {
        "1" | "2c" => {
            if dev.username.is_some()
                || dev.auth_password_file.is_some()
                || dev.auth_password_env.is_some()
            {
                return Err(ctx.err(version_span, &field("version"), format!("SNMP v{version} uses a community, not a user; remove username/auth_password_* or set version = \"3\"")));
            }
            let community = community.ok_or_else(|| {
                ctx.err(Some(span.clone()), &field("community_file"), format!("SNMP v{version} needs community_file = \"PATH\" or community_env = \"VAR\" (a community is a password: never written in the config)"))
            })?;
            Security::Community {
                version: if version == "1" {
                    Version::V1
                } else {
                    Version::V2c
                },
                community,
            }
        }
        "3" => {
            if community.is_some() {
                return Err(ctx.err(
                    version_span,
                    &field("community_file"),
                    "SNMP v3 uses a user, not a community; remove community_*".into(),
                ));
            }
            let user = dev
                .username
                .clone()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    ctx.err(
                        Some(span.clone()),
                        &field("username"),
                        "SNMP v3 needs `username` (the USM user)".into(),
                    )
                })?;
            let auth = optional_secret(
                ctx,
                base_dir,
                name,
                "auth_password",
                &dev.auth_password_file,
                &dev.auth_password_env,
                env,
            )?;
            let privacy = optional_secret(
                ctx,
                base_dir,
                name,
                "priv_password",
                &dev.priv_password_file,
                &dev.priv_password_env,
                env,
            )?;
            let auth_protocol = match dev.auth_protocol.as_ref().map(|p| (p.get_ref().to_ascii_lowercase(), p.span())) {
                None => AuthProtocol::Sha1,
                Some((p, _)) if p == "sha" || p == "sha1" => AuthProtocol::Sha1,
                Some((p, _)) if p == "sha256" || p == "sha-256" => AuthProtocol::Sha256,
                Some((p, sp)) => return Err(ctx.err(Some(sp), &field("auth_protocol"), format!("expected \"sha\" or \"sha256\", found `{p}` (MD5 is not supported: it is broken)"))),
            };
            if let Some(p) = &dev.priv_protocol {
                if !matches!(p.get_ref().to_ascii_lowercase().as_str(), "aes" | "aes128") {
                    return Err(ctx.err(
                        Some(p.span()),
                        &field("priv_protocol"),
                        format!(
                            "expected \"aes\", found `{}` (DES is not supported: it is broken)",
                            p.get_ref()
                        ),
                    ));
                }
            }
            for s in [&auth, &privacy].into_iter().flatten() {
                if s.expose().len() < 8 {
                    return Err(ctx.err(
                        Some(span.clone()),
                        &field("auth_password_file"),
                        "SNMPv3 passwords must be at least 8 characters (RFC 3414 §11.2)".into(),
                    ));
                }
            }
            if privacy.is_some() && auth.is_none() {
                return Err(ctx.err(
                    Some(span.clone()),
                    &field("auth_password_file"),
                    "a priv_password needs an auth_password too (authPriv)".into(),
                ));
            }
            if auth.is_none() {
                tracing::warn!("devices.{name}: SNMPv3 without authentication (noAuthNoPriv): anyone on the network can switch this PDU's outlets");
            }
            Security::Usm(UsmUser {
                name: user,
                auth: auth.map(|a| (auth_protocol, a)),
                privacy: privacy.map(|p| (PrivProtocol::Aes128, p)),
            })
        }
        other => {
            return Err(ctx.err(
                version_span,
                &field("version"),
                format!("expected version \"1\", \"2c\" or \"3\", found `{other}`"),
            ))
        }
    };
    Ok(SnmpPduSettings {
        address: addr,
        security,
        model,
        timeout: Duration::from_millis(dev.timeout_ms.unwrap_or(1000).clamp(50, 60_000)),
        retries: dev.retries.unwrap_or(2).min(10),
    })
}

// ---------------------------------------------------------------------------------------------
// Security (issue 5): TLS, tokens, client certificates, connection bounds, secret file modes.
// Kept in its own section so other branches' config changes merge cleanly.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientCert {
    cn: Option<String>,
    sha256: Option<String>,
    identity: String,
    role: Role,
}

/// TLS settings of the TCP listener (TLS 1.2 and 1.3 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (must not be readable by group or others).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates, if client certificates are used.
    pub client_ca: Option<PathBuf>,
}

/// How a client certificate is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertMatch {
    /// The subject's common name (the certificate must also chain to `client_ca`).
    CommonName(String),
    /// The SHA-256 fingerprint of the certificate (DER), lowercase hex.
    Sha256(String),
}

/// A client certificate mapped to an identity and a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertRule {
    /// Which certificates.
    pub matches: CertMatch,
    /// The identity recorded in history (`cert:IDENTITY`).
    pub identity: String,
    /// Their role.
    pub role: Role,
}

/// TLS, authentication and connection bounds of the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSecurity {
    /// TLS on the TCP listener.
    pub tls: Option<TlsConfig>,
    /// The file of hashed bearer tokens (`fenced token create|list|revoke`).
    pub tokens_file: Option<PathBuf>,
    /// Client certificates mapped to identities.
    pub client_certs: Vec<ClientCertRule>,
    /// Failed authentications allowed per source per minute before it is refused (429).
    pub auth_failures_per_minute: u32,
    /// Open TCP connections at most; more are closed at once.
    pub max_connections: usize,
    /// A client must send a request's headers within this time.
    pub header_timeout: Duration,
}

impl Default for ApiSecurity {
    fn default() -> Self {
        ApiSecurity {
            tls: None,
            tokens_file: None,
            client_certs: Vec::new(),
            auth_failures_per_minute: 10,
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
        }
    }
}

impl ApiSecurity {
    /// Whether remote callers can authenticate (tokens or client certificates).
    pub fn authenticates(&self) -> bool {
        self.tokens_file.is_some()
            || (!self.client_certs.is_empty()
                && self.tls.as_ref().is_some_and(|t| t.client_ca.is_some()))
    }
}

/// Refuses a file holding a secret that group or others can read or write, as ssh refuses
/// such private keys; the message says how to fix it.
pub fn check_secret_file_mode(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} holds a secret but its mode is {mode:04o} (group or others can access it); run `chmod 600 {}` (and make it owned by the user fenced runs as)",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

fn resolve_security(
    ctx: &Ctx,
    base_dir: &Path,
    raw: &mut RawApi,
) -> Result<ApiSecurity, ConfigError> {
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    let mut sec = ApiSecurity::default();
    if let Some(t) = raw.tls.take() {
        let span = t.span();
        let t = t.into_inner();
        let key = abs(&t.key);
        check_secret_file_mode(&key).map_err(|m| ctx.err(Some(span), "api.tls.key", m))?;
        sec.tls = Some(TlsConfig {
            cert: abs(&t.cert),
            key,
            client_ca: t.client_ca.as_deref().map(abs),
        });
    }
    if let Some(f) = raw.tokens_file.take() {
        let p = abs(f.get_ref());
        // A missing file is an empty one: `fenced token create` creates it.
        if p.exists() {
            check_secret_file_mode(&p)
                .map_err(|m| ctx.err(Some(f.span()), "api.tokens_file", m))?;
        }
        sec.tokens_file = Some(p);
    }
    for c in std::mem::take(&mut raw.client_certs) {
        let span = c.span();
        let c = c.into_inner();
        let matches = match (c.cn, c.sha256) {
            (Some(cn), None) => CertMatch::CommonName(cn),
            (None, Some(fp)) => {
                let fp = fp.replace(':', "").to_ascii_lowercase();
                if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ctx.err(Some(span), "api.client_certs.sha256", format!(
                        "expected the certificate's SHA-256 fingerprint as 64 hex digits (`openssl x509 -noout -fingerprint -sha256 -in CERT`), found `{fp}`"
                    )));
                }
                CertMatch::Sha256(fp)
            }
            _ => {
                return Err(ctx.err(
                    Some(span),
                    "api.client_certs",
                    "give exactly one of `cn = \"NAME\"` or `sha256 = \"FINGERPRINT\"`".into(),
                ))
            }
        };
        if sec
            .tls
            .as_ref()
            .and_then(|t| t.client_ca.as_ref())
            .is_none()
        {
            return Err(ctx.err(Some(span), "api.client_certs", "client certificates need `[api.tls] client_ca = \"PATH\"` (the CA that signs them)".into()));
        }
        sec.client_certs.push(ClientCertRule {
            matches,
            identity: c.identity,
            role: c.role,
        });
    }
    if let Some(n) = raw.auth_failures_per_minute {
        sec.auth_failures_per_minute = n.max(1);
    }
    if let Some(n) = raw.max_connections {
        sec.max_connections = n.clamp(1, 65_536);
    }
    if let Some(t) = raw.header_timeout_s {
        sec.header_timeout =
            seconds(ctx, None, "api.header_timeout_s", t)?.max(Duration::from_millis(100));
    }
    Ok(sec)
}

fn parse_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, default_port))
    })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<Vec<u8>> {
        (name == "PW").then(|| b"secret-pw".to_vec())
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/palisade/fenced.toml"), text, &env)
    }

    const GOOD: &str = r#"
[daemon]
socket = "/tmp/x.sock"

[limits]
max_operations = 4

[devices.bmc1]
kind = "ipmi"
address = "127.0.0.1:6230"
username = "admin"
password_env = "PW"
cipher_suite = 17

[targets.node1]
levels = [["bmc1"]]
identities = { bmc1 = "A1B2" }
delay_s = 2.5
"#;

    #[test]
    fn good_config_resolves() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.limits.max_operations, 4);
        let t = &c.targets["node1"];
        assert_eq!(
            t.levels[0][0],
            LevelEntry {
                device: "bmc1".into(),
                port: None
            }
        );
        assert_eq!(t.identities["bmc1"], "a1b2");
        assert_eq!(t.timing.delay, Duration::from_millis(2500));
        let DeviceKind::Ipmi(s) = &c.devices["bmc1"].kind else {
            panic!("bmc1 is ipmi")
        };
        assert_eq!(s.password.expose(), b"secret-pw");
        assert_eq!(s.cipher_suite, Some(17));
        assert!(
            !format!("{c:?}").contains("secret-pw"),
            "secrets must never be printed"
        );
    }

    #[test]
    fn errors_name_file_line_field_and_expectation() {
        let e = parse(&GOOD.replace("levels = [[\"bmc1\"]]", "levels = [[\"bmc9\"]]")).unwrap_err();
        assert_eq!(e.line, Some(16));
        assert_eq!(e.field.as_deref(), Some("targets.node1.levels"));
        let s = e.to_string();
        assert!(
            s.starts_with("/etc/palisade/fenced.toml:16: targets.node1.levels:"),
            "{s}"
        );
        assert!(
            s.contains("bmc9") && s.contains("expected one of: bmc1"),
            "{s}"
        );

        let e = parse(&GOOD.replace("cipher_suite = 17", "cipher_suite = 2")).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(13), Some("devices.bmc1.cipher_suite"))
        );

        let e =
            parse(&GOOD.replace("password_env = \"PW\"", "password_env = \"NOPE\"")).unwrap_err();
        assert!(e.to_string().contains("NOPE is not set"));

        let e = parse(&GOOD.replace("max_operations = 4", "max_operatons = 4")).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("unknown field"), "{}", e.message);

        let e = parse(&format!("{GOOD}\n[api]\ntcp = \"0.0.0.0:7420\"\n")).unwrap_err();
        assert!(e.message.contains("not a loopback address"));

        let e = parse(&GOOD.replace("cipher_suite = 17", "cipher_suite = 0")).unwrap_err();
        assert!(e.message.contains("allow_cipher_suite_0"));

        let e = parse(&GOOD.replace("kind = \"ipmi\"", "kind = \"telepathy\"")).unwrap_err();
        assert!(e.message.contains("unknown device kind `telepathy`"));
    }

    const REDFISH: &str = r#"
[devices.rf1]
kind = "redfish"
address = "10.0.0.5:8443"
username = "admin"
password_env = "PW"
system_id = "System.Embedded.1"
tls_fingerprint = "AB:CD"
"#;

    #[test]
    fn redfish_devices_resolve_and_errors_point_at_the_field() {
        let good = REDFISH.replace(
            "tls_fingerprint = \"AB:CD\"",
            "ca_file = \"bmc.pem\"\nauth = \"session_or_basic\"",
        );
        let c = parse(&format!("{GOOD}{good}")).unwrap();
        let DeviceKind::Redfish(s) = &c.devices["rf1"].kind else {
            panic!("rf1 is redfish")
        };
        assert_eq!(s.base_url, "https://10.0.0.5:8443");
        assert_eq!(s.system_id.as_deref(), Some("System.Embedded.1"));
        assert_eq!(
            s.tls,
            drivers::redfish::TlsVerify::CaFile("/etc/palisade/bmc.pem".into())
        );
        assert_eq!(s.auth, drivers::redfish::AuthMode::SessionOrBasic);
        assert_eq!(c.devices["rf1"].kind_name(), "redfish");

        let e = parse(&format!("{GOOD}{REDFISH}")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("devices.rf1.tls_fingerprint"));
        assert_eq!(e.line, Some(26));
        assert!(e.message.contains("64 hex digits"), "{}", e.message);

        let e = parse(&format!(
            "{GOOD}{}",
            REDFISH.replace("10.0.0.5:8443", "http://10.0.0.5")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("devices.rf1.address"));
        assert!(e.message.contains("in clear"), "{}", e.message);

        let both = REDFISH.replace(
            "tls_fingerprint = \"AB:CD\"",
            "ca_file = \"x.pem\"\ninsecure = true",
        );
        let e = parse(&format!("{GOOD}{both}")).unwrap_err();
        assert!(e.message.contains("at most one"), "{}", e.message);

        let e = parse(&format!(
            "{GOOD}{}",
            REDFISH.replace("tls_fingerprint = \"AB:CD\"", "auth = \"kerberos\"")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("devices.rf1.auth"));
    }

    #[test]
    fn root_is_always_admin_and_others_need_a_grant() {
        let c = parse(&format!(
            "{GOOD}\n[api]\nfence_uids = [1000]\nread_gids = [50]\n"
        ))
        .unwrap();
        assert_eq!(c.api.role_for_peer(0, 0), Some(Role::Admin));
        assert_eq!(c.api.role_for_peer(1000, 1000), Some(Role::Fence));
        assert_eq!(c.api.role_for_peer(1001, 50), Some(Role::Read));
        assert_eq!(c.api.role_for_peer(1001, 1001), None);
    }

    #[test]
    fn agent_devices_and_selection_settings() {
        let base = r#"
[devices.apc]
kind = "agent"
agent = "/usr/sbin/fence_apc_snmp"
password_env = "PW"
options = { ip = "192.0.2.30", power_wait = 0, lanplus = true }
host_map = { node1 = "3" }
host_check = "dynamic-list"
max_concurrent = 2
monitor_interval_s = 30

[targets.node1]
levels = [["apc"]]

[targets.node2]
levels = [["apc"]]
"#;
        let c = parse(base).unwrap();
        let d = &c.devices["apc"];
        let DeviceKind::Agent(a) = &d.kind else {
            panic!("{d:?}")
        };
        assert_eq!(
            a.options,
            vec![
                ("ip".to_string(), "192.0.2.30".to_string()),
                ("lanplus".into(), "1".into()),
                ("power_wait".into(), "0".into())
            ]
        );
        assert_eq!(
            a.password.as_ref().map(|(o, p)| (o.as_str(), p.expose())),
            Some(("password", &b"secret-pw"[..]))
        );
        assert_eq!(d.address(), "/usr/sbin/fence_apc_snmp 192.0.2.30");
        assert_eq!(d.selection.max_concurrent, Some(2));
        assert_eq!(d.selection.monitor_interval, Some(Duration::from_secs(30)));
        // The map wins; a target it does not name is looked up by name in the device's list.
        assert_eq!(c.targets["node1"].levels[0][0].port.as_deref(), Some("3"));
        assert_eq!(
            c.targets["node2"].levels[0][0].port.as_deref(),
            Some("node2")
        );

        for (bad, says) in [
            (
                "host_check = \"dynamic-list\"",
                "host_check = \"sometimes\"",
            ),
            ("max_concurrent = 2", "max_concurrent = 0"),
            ("monitor_interval_s = 30", "monitor_interval_s = 0.1"),
            ("power_wait = 0", "password = \"x\""),
            ("power_wait = 0", "action = \"off\""),
        ] {
            let text = base.replace(bad, says);
            let e = parse(&text).unwrap_err();
            assert!(
                e.field.as_deref().unwrap_or("").starts_with("devices.apc"),
                "{says}: {e}"
            );
        }
        let c = parse(&base.replace("max_concurrent = 2", "on_fail = \"skip\"")).unwrap();
        assert!(c.devices["apc"].selection.skip_when_unhealthy);
        assert!(!d.selection.skip_when_unhealthy, "try is the default");
        let e = parse(&base.replace("max_concurrent = 2", "on_fail = \"fence\"")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("devices.apc.on_fail"), "{e}");
        assert!(e.to_string().contains("\"skip\""), "{e}");
        assert!(e.line.is_some(), "{e}");
        let e = parse(&base.replace("host_check = \"dynamic-list\"", "host_list = [\"node1\"]"))
            .unwrap_err();
        assert!(e.to_string().contains("may not fence `node2`"), "{e}");
    }

    #[test]
    fn snmp_pdu_devices_parse_and_bad_ones_explain() {
        let text = |dev: &str| {
            format!("[devices.pdu]\nkind = \"snmp-pdu\"\naddress = \"127.0.0.1:1610\"\n{dev}\n[targets.n1]\nlevels = [[\"pdu:db1-psu1\", \"pdu:3=db1-psu2\"]]\n")
        };
        let c = parse(&text("model = \"apc-rpdu\"\ncommunity_env = \"PW\"")).unwrap();
        let DeviceKind::SnmpPdu(s) = &c.devices["pdu"].kind else {
            panic!()
        };
        assert!(
            matches!(&s.security, drivers::pdu::Security::Community { version: drivers::pdu::Version::V2c, community } if community.expose() == b"secret-pw")
        );
        assert_eq!(s.model.name, "apc-rpdu");
        assert_eq!(
            c.targets["n1"].levels[0][1].port.as_deref(),
            Some("3=db1-psu2")
        );
        assert_eq!(
            c.devices["pdu"].address(),
            "127.0.0.1:1610 snmp v2c apc-rpdu"
        );
        let c = parse(&text("model = \"apc-rpdu2\"\nusername = \"fence\"\nauth_password_env = \"PW\"\npriv_password_env = \"PW\"")).unwrap();
        let DeviceKind::SnmpPdu(s) = &c.devices["pdu"].kind else {
            panic!()
        };
        assert!(
            matches!(&s.security, drivers::pdu::Security::Usm(u) if u.auth.is_some() && u.privacy.is_some())
        );
        for (dev, want) in [
            ("community_env = \"PW\"", "needs `model`"),
            ("model = \"nope\"\ncommunity_env = \"PW\"", "apc-masterswitch"),
            ("model = \"apc-rpdu\"", "community_file"),
            ("model = \"apc-rpdu\"\ncommunity = \"public\"", "unknown field"),
            ("model = \"apc-rpdu\"\nversion = \"3\"\nauth_password_env = \"PW\"", "username"),
            ("model = \"apc-rpdu\"\nversion = \"2c\"\nusername = \"u\"\ncommunity_env = \"PW\"", "not a user"),
            ("model = \"apc-rpdu\"\nusername = \"u\"\npriv_password_env = \"PW\"", "needs an auth_password"),
            ("model = \"apc-rpdu\"\nusername = \"u\"\nauth_password_env = \"PW\"\nauth_protocol = \"md5\"", "MD5"),
            ("model = \"apc-rpdu\"\nversion = \"4\"\ncommunity_env = \"PW\"", "expected version"),
        ] {
            let e = parse(&text(dev)).unwrap_err();
            assert!(e.to_string().contains(want), "{dev}: {e}");
            assert!(e.line.is_some(), "{dev}: {e}");
        }
    }
}
