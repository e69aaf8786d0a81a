//! `[api]`: the Unix socket's access, the optional TCP listener, and (issue 5) TLS, tokens,
//! client certificates and connection bounds.

use super::secret::check_secret_file_mode;
use super::{ConfigError, Ctx};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
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
    tls: Option<Spanned<RawTls>>,
    tokens_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    client_certs: Vec<Spanned<RawClientCert>>,
    auth_failures_per_minute: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    header_timeout_s: Option<Spanned<f64>>,
}

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

    /// The TCP listener as a caller meets it, for `fenced check-config`: plain TCP gives
    /// `tcp_role` to callers without a token; with TLS, callers without a token or a mapped
    /// client certificate get no role at all.
    pub fn describe_tcp(&self) -> String {
        let Some(addr) = self.tcp else {
            return "no TCP listener".into();
        };
        let sec = &self.security;
        if sec.tls.is_none() {
            return format!(
                "TCP {addr} (plain; callers without a token get role {})",
                self.tcp_role.as_str()
            );
        }
        let certs =
            !sec.client_certs.is_empty() && sec.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let need = match (sec.tokens_file.is_some(), certs) {
            (true, true) => "callers need a token or a client certificate",
            (true, false) => "callers need a token",
            (false, true) => "callers need a client certificate",
            (false, false) => {
                "no tokens_file or client_certs is configured, so no caller gets a role"
            }
        };
        format!("TLS {addr} ({need})")
    }
}

impl Role {
    /// The role's name as the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Fence => "fence",
            Role::Admin => "admin",
        }
    }
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

/// Checks `[api]`.
pub(super) fn resolve(ctx: &Ctx, raw: RawApi) -> Result<ApiConfig, ConfigError> {
    let security = resolve_security(ctx, &raw)?;
    let tcp = match &raw.tcp {
        None => None,
        Some(s) => {
            let addr: SocketAddr = s.get_ref().parse().map_err(|_| {
                ctx.at(
                    s,
                    "api.tcp",
                    format!(
                        "expected an address like 127.0.0.1:7420, found `{}`",
                        s.get_ref()
                    ),
                )
            })?;
            if !addr.ip().is_loopback() && (security.tls.is_none() || !security.authenticates()) {
                return Err(ctx.at(s, "api.tcp", format!(
                    "{addr} is not a loopback address, and {}; anyone on the network could fence nodes. Either bind to 127.0.0.1 or ::1, or configure both `[api.tls] cert = \"PATH\"` + `key = \"PATH\"` and `api.tokens_file = \"PATH\"` (create tokens with `fenced token create`) or `[[api.client_certs]]` with `[api.tls] client_ca`",
                    if security.tls.is_none() { "TLS is not configured" } else { "no authentication (tokens_file or client_certs) is configured" }
                )));
            }
            Some(addr)
        }
    };
    let socket_mode = match &raw.socket_mode {
        None => 0o660,
        Some(s) => u32::from_str_radix(s.get_ref().trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ctx.at(
                    s,
                    "api.socket_mode",
                    format!(
                        "expected an octal file mode like \"0660\", found `{}`",
                        s.get_ref()
                    ),
                )
            })?,
    };
    Ok(ApiConfig {
        tcp,
        tcp_role: raw.tcp_role.unwrap_or(Role::Read),
        socket_mode,
        admin_uids: raw.admin_uids,
        fence_uids: raw.fence_uids,
        read_uids: raw.read_uids,
        admin_gids: raw.admin_gids,
        fence_gids: raw.fence_gids,
        read_gids: raw.read_gids,
        security,
    })
}

fn resolve_security(ctx: &Ctx, raw: &RawApi) -> Result<ApiSecurity, ConfigError> {
    let defaults = ApiSecurity::default();
    let mut sec = ApiSecurity {
        auth_failures_per_minute: ctx.count(
            &raw.auth_failures_per_minute,
            "api.auth_failures_per_minute",
            defaults.auth_failures_per_minute,
            (1, 100_000),
            " failures",
        )?,
        max_connections: ctx
            .count(
                &raw.max_connections,
                "api.max_connections",
                256,
                (1, 65_536),
                " connections",
            )?
            .try_into()
            .unwrap_or(defaults.max_connections),
        header_timeout: match &raw.header_timeout_s {
            None => defaults.header_timeout,
            Some(t) => ctx.seconds(t, "api.header_timeout_s", (0.1, 86_400.0), false)?,
        },
        ..defaults
    };
    if let Some(t) = &raw.tls {
        let key = ctx.path(&t.get_ref().key);
        check_secret_file_mode(&key).map_err(|e| ctx.at(t, "api.tls.key", e.to_string()))?;
        sec.tls = Some(TlsConfig {
            cert: ctx.path(&t.get_ref().cert),
            key,
            client_ca: t.get_ref().client_ca.as_deref().map(|p| ctx.path(p)),
        });
    }
    if let Some(f) = &raw.tokens_file {
        let p = ctx.path(f.get_ref());
        // A missing file is an empty one: `fenced token create` creates it.
        if p.exists() {
            check_secret_file_mode(&p).map_err(|e| ctx.at(f, "api.tokens_file", e.to_string()))?;
        }
        sec.tokens_file = Some(p);
    }
    for c in &raw.client_certs {
        let rule = c.get_ref();
        let matches = match (&rule.cn, &rule.sha256) {
            (Some(cn), None) => CertMatch::CommonName(cn.clone()),
            (None, Some(fp)) => {
                let fp = fp.replace(':', "").to_ascii_lowercase();
                if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ctx.at(c, "api.client_certs.sha256", format!(
                        "expected the certificate's SHA-256 fingerprint as 64 hex digits (`openssl x509 -noout -fingerprint -sha256 -in CERT`), found `{fp}`"
                    )));
                }
                CertMatch::Sha256(fp)
            }
            _ => {
                return Err(ctx.at(
                    c,
                    "api.client_certs",
                    "give exactly one of `cn = \"NAME\"` or `sha256 = \"FINGERPRINT\"`",
                ))
            }
        };
        if sec
            .tls
            .as_ref()
            .and_then(|t| t.client_ca.as_ref())
            .is_none()
        {
            return Err(ctx.at(
                c,
                "api.client_certs",
                "client certificates need `[api.tls] client_ca = \"PATH\"` (the CA that signs them)",
            ));
        }
        sec.client_certs.push(ClientCertRule {
            matches,
            identity: rule.identity.clone(),
            role: rule.role,
        });
    }
    Ok(sec)
}
