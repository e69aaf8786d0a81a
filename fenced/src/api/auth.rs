//! Who is calling, and with which role.
//!
//! A connection's credentials are established once, when it is accepted: the Unix socket's
//! peer credentials (`SO_PEERCRED`, which the kernel fills in and the peer cannot forge), the
//! TCP peer address (plain TCP is loopback only, with the role configured for all TCP callers),
//! or the TLS peer with the client certificate it proved it holds. A request may add a bearer
//! token. [`resolve`] is the one place where these become an identity and a role:
//!
//! 1. a client certificate mapped in `api.client_certs` → `cert:IDENTITY` with its role;
//! 2. else a bearer token that matches `api.tokens_file` → `token:NAME` with its role;
//! 3. else a presented token that matches nothing, or a client certificate mapped to nothing,
//!    is a failed authentication: no role, counted, rate-limited per source, and audited;
//! 4. else the transport: Unix peers by uid/gid, plain loopback TCP gets `api.tcp_role`, and a
//!    TLS caller without credentials gets no role.

use crate::config::{ApiConfig, Role};
use crate::model::Caller;
use std::fmt;
use std::net::SocketAddr;

/// What the transport tells us about the peer of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A local process on the Unix socket, as the kernel reports it.
    UnixPeer {
        /// Effective user id.
        uid: u32,
        /// Effective group id.
        gid: u32,
        /// Process id, when the kernel reports one.
        pid: Option<i32>,
    },
    /// The Unix socket peer's credentials could not be read; such a caller gets no role.
    UnixUnknown,
    /// A client on the loopback TCP listener.
    Tcp {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// A client on the TLS listener.
    Tls {
        /// The peer's address.
        peer: SocketAddr,
        /// SHA-256 of the client certificate it presented (and proved it holds), if any.
        cert_sha256: Option<String>,
        /// That certificate's subject common name, if any.
        cert_cn: Option<String>,
    },
}

impl Credentials {
    /// The identity recorded in history and logs (`uid:1000`, `tcp:127.0.0.1:40112`).
    pub fn identity(&self) -> String {
        match self {
            Credentials::UnixPeer { uid, .. } => format!("uid:{uid}"),
            Credentials::UnixUnknown => "unix:unknown".into(),
            Credentials::Tcp { peer } => format!("tcp:{peer}"),
            Credentials::Tls { peer, .. } => format!("tls:{peer}"),
        }
    }

    /// Where the call comes from, for the audit record (`unix:pid=42`, `127.0.0.1:40112`).
    pub fn source(&self) -> String {
        match self {
            Credentials::UnixPeer { uid, pid, .. } => match pid {
                Some(p) => format!("unix:uid={uid},pid={p}"),
                None => format!("unix:uid={uid}"),
            },
            Credentials::UnixUnknown => "unix:unknown".into(),
            Credentials::Tcp { peer } | Credentials::Tls { peer, .. } => peer.to_string(),
        }
    }

    /// The key failed authentications are counted under: the peer's IP address, or the uid.
    pub fn rate_key(&self) -> String {
        match self {
            Credentials::UnixPeer { uid, .. } => format!("uid:{uid}"),
            Credentials::UnixUnknown => "unix:unknown".into(),
            Credentials::Tcp { peer } | Credentials::Tls { peer, .. } => peer.ip().to_string(),
        }
    }
}

/// What the request's `Authorization: Bearer` header proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer {
    /// No token was presented.
    Absent,
    /// A stored token matched.
    Valid {
        /// The token's name.
        name: String,
        /// Its role.
        role: Role,
    },
    /// A token was presented and matched nothing (or tokens are not configured).
    Invalid,
}

/// An authenticated caller: who, and what they may do (`None`: nothing beyond `/healthz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Identity for history and logs.
    pub caller: Caller,
    /// The granted role, if any.
    pub role: Option<Role>,
    /// Where the call came from (for the audit record).
    pub source: String,
    /// Credentials were presented and refused (a failed authentication).
    pub failed: bool,
    /// No credentials were presented on a listener that only knows callers by their
    /// credentials (TLS): the caller is unauthenticated, not merely without a role.
    pub anonymous: bool,
}

fn cert_rule<'a>(
    api: &'a ApiConfig,
    sha: Option<&str>,
    cn: Option<&str>,
) -> Option<&'a crate::config::ClientCertRule> {
    use crate::config::CertMatch;
    api.security.client_certs.iter().find(|r| match &r.matches {
        CertMatch::Sha256(f) => sha == Some(f.as_str()),
        CertMatch::CommonName(n) => cn == Some(n.as_str()),
    })
}

/// Resolves a connection's credentials and the request's bearer token to a caller and role
/// under the API configuration (the order is in the module documentation).
pub fn resolve(api: &ApiConfig, creds: &Credentials, bearer: &Bearer) -> Authenticated {
    let make = |identity: String, role: Option<Role>, failed: bool| Authenticated {
        caller: Caller { identity },
        role,
        source: creds.source(),
        failed,
        anonymous: false,
    };
    let mut cert_refused = false;
    if let Credentials::Tls {
        cert_sha256: Some(sha),
        cert_cn,
        ..
    } = creds
    {
        match cert_rule(api, Some(sha), cert_cn.as_deref()) {
            Some(rule) => return make(format!("cert:{}", rule.identity), Some(rule.role), false),
            None => cert_refused = true,
        }
    }
    match bearer {
        Bearer::Valid { name, role } => return make(format!("token:{name}"), Some(*role), false),
        Bearer::Invalid => return make(creds.identity(), None, true),
        Bearer::Absent => {}
    }
    if cert_refused {
        return make(creds.identity(), None, true);
    }
    let role = match creds {
        Credentials::UnixPeer { uid, gid, .. } => api.role_for_peer(*uid, *gid),
        Credentials::UnixUnknown => None,
        Credentials::Tls { .. } => {
            return Authenticated {
                anonymous: true,
                ..make(creds.identity(), None, false)
            }
        }
        Credentials::Tcp { .. } => Some(api.tcp_role),
    };
    make(creds.identity(), role, false)
}

/// Failed authentications per source in the current minute, and their totals for `/metrics`.
pub struct AuthFailures {
    per_minute: u32,
    window: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32)>>,
    /// Failed authentications since start.
    pub failed_total: std::sync::atomic::AtomicU64,
    /// Requests refused because their source failed too often.
    pub limited_total: std::sync::atomic::AtomicU64,
    /// Failures counted but not written to the ledger one by one (over the audit budget).
    pub unaudited_total: std::sync::atomic::AtomicU64,
    audit: std::sync::Mutex<AuditBudget>,
}

/// Failed authentications written to the ledger one by one, per minute, from all sources
/// together. Each record is a durable (fsynced) append: without a global cap, a flood from many
/// addresses (each under its per-source limit) would grow the ledger and the disk work without
/// bound. Beyond the cap failures are still refused and counted in `/metrics`, and the next
/// audited failure says how many were not recorded individually.
pub const AUDITED_FAILURES_PER_MINUTE: u32 = 60;

#[derive(Default)]
struct AuditBudget {
    window_start: Option<std::time::Instant>,
    audited: u32,
    suppressed: u64,
}

/// Sources remembered at most; older windows are forgotten first (bounds memory under a flood
/// from many addresses).
const MAX_SOURCES: usize = 4096;

impl AuthFailures {
    /// A limiter allowing `per_minute` failures per source per minute.
    pub fn new(per_minute: u32) -> AuthFailures {
        AuthFailures {
            per_minute,
            window: Default::default(),
            failed_total: Default::default(),
            limited_total: Default::default(),
            unaudited_total: Default::default(),
            audit: Default::default(),
        }
    }

    /// Whether `key` is refused now, having failed too often in the last minute.
    pub fn is_limited(&self, key: &str, now: std::time::Instant) -> bool {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let limited = w.get(key).is_some_and(|(start, n)| {
            now.duration_since(*start) < std::time::Duration::from_secs(60) && *n >= self.per_minute
        });
        if limited {
            self.limited_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        limited
    }

    /// Records one failed authentication from `key`. Returns whether to write it to the ledger
    /// and, if so, how many earlier failures went unwritten since the last one that was
    /// (see [`AUDITED_FAILURES_PER_MINUTE`]).
    pub fn record(&self, key: &str, now: std::time::Instant) -> Option<u64> {
        self.failed_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.count_source(key, now);
        let mut b = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = b
            .window_start
            .is_none_or(|start| now.duration_since(start) >= std::time::Duration::from_secs(60));
        if fresh {
            b.window_start = Some(now);
            b.audited = 0;
        }
        if b.audited >= AUDITED_FAILURES_PER_MINUTE {
            b.suppressed = b.suppressed.saturating_add(1);
            self.unaudited_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        b.audited += 1;
        Some(std::mem::take(&mut b.suppressed))
    }

    fn count_source(&self, key: &str, now: std::time::Instant) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() >= MAX_SOURCES && !w.contains_key(key) {
            w.retain(|_, (start, _)| {
                now.duration_since(*start) < std::time::Duration::from_secs(60)
            });
            if w.len() >= MAX_SOURCES {
                return;
            }
        }
        let e = w.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= std::time::Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

/// Displays an optional role for error messages.
pub struct RoleDisplay(pub Option<Role>);

impl fmt::Display for RoleDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(r) => write!(f, "the `{}` role", r.as_str()),
            None => f.write_str("no role"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn api(text: &str) -> ApiConfig {
        match Config::parse(Path::new("t.toml"), text, &|_| None) {
            Ok(c) => c.api,
            Err(e) => unreachable!("config: {e}"),
        }
    }

    #[test]
    fn unix_peers_get_configured_roles_and_root_is_admin() {
        let a = api("[api]\nfence_uids = [1000]\nread_gids = [50]\n");
        let peer = |uid, gid| Credentials::UnixPeer {
            uid,
            gid,
            pid: None,
        };
        let r = |c: &Credentials| resolve(&a, c, &Bearer::Absent);
        assert_eq!(r(&peer(0, 0)).role, Some(Role::Admin));
        assert_eq!(r(&peer(1000, 1000)).role, Some(Role::Fence));
        assert_eq!(r(&peer(2000, 50)).role, Some(Role::Read));
        assert_eq!(r(&peer(2000, 2000)).role, None);
        assert_eq!(r(&peer(1000, 1)).caller.identity, "uid:1000");
        assert_eq!(r(&Credentials::UnixUnknown).role, None);
    }

    #[test]
    fn tcp_callers_get_the_tcp_role() {
        let a = api("[api]\ntcp = \"127.0.0.1:7420\"\ntcp_role = \"fence\"\n");
        let c = Credentials::Tcp {
            peer: SocketAddr::from(([127, 0, 0, 1], 4000)),
        };
        let auth = resolve(&a, &c, &Bearer::Absent);
        assert_eq!(auth.role, Some(Role::Fence));
        assert_eq!(auth.caller.identity, "tcp:127.0.0.1:4000");
        let bad = resolve(&a, &c, &Bearer::Invalid);
        assert_eq!((bad.role, bad.failed), (None, true));
        let good = resolve(
            &a,
            &c,
            &Bearer::Valid {
                name: "ctrl-1".into(),
                role: Role::Admin,
            },
        );
        assert_eq!(good.caller.identity, "token:ctrl-1");
        assert_eq!(good.role, Some(Role::Admin));
    }

    #[test]
    fn tls_callers_need_a_mapped_certificate_or_a_token() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["c.pem", "k.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("k.pem"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let a = match Config::parse(
            &dir.path().join("t.toml"),
            "[api]\ntcp = \"0.0.0.0:7420\"\ntls = { cert = \"c.pem\", key = \"k.pem\", client_ca = \"ca.pem\" }\n[[api.client_certs]]\ncn = \"ctrl-1\"\nidentity = \"ctrl-1\"\nrole = \"fence\"\n[[api.client_certs]]\nsha256 = \"AA:BB\"\nidentity = \"x\"\nrole = \"read\"\n",
            &|_| None,
        ) {
            Err(e) => e,
            Ok(_) => unreachable!("a short fingerprint must be refused"),
        };
        assert!(a.message.contains("64 hex digits"), "{a}");
        let a = Config::parse(
            &dir.path().join("t.toml"),
            "[api]\ntcp = \"0.0.0.0:7420\"\ntls = { cert = \"c.pem\", key = \"k.pem\", client_ca = \"ca.pem\" }\n[[api.client_certs]]\ncn = \"ctrl-1\"\nidentity = \"ctrl-1\"\nrole = \"fence\"\n",
            &|_| None,
        )
        .unwrap()
        .api;
        let tls = |cn: Option<&str>| Credentials::Tls {
            peer: SocketAddr::from(([192, 0, 2, 1], 4000)),
            cert_sha256: cn.map(|_| "00".repeat(32)),
            cert_cn: cn.map(str::to_string),
        };
        let ok = resolve(&a, &tls(Some("ctrl-1")), &Bearer::Absent);
        assert_eq!(
            (ok.caller.identity.as_str(), ok.role),
            ("cert:ctrl-1", Some(Role::Fence))
        );
        let unmapped = resolve(&a, &tls(Some("mallory")), &Bearer::Absent);
        assert_eq!((unmapped.role, unmapped.failed), (None, true));
        let none = resolve(&a, &tls(None), &Bearer::Absent);
        assert_eq!((none.role, none.failed), (None, false));
        assert_eq!(none.source, "192.0.2.1:4000");
    }

    #[test]
    fn failures_are_limited_per_source_for_a_minute() {
        let f = AuthFailures::new(3);
        let t0 = std::time::Instant::now();
        for _ in 0..3 {
            assert!(!f.is_limited("192.0.2.1", t0));
            f.record("192.0.2.1", t0);
        }
        assert!(f.is_limited("192.0.2.1", t0));
        assert!(
            !f.is_limited("192.0.2.2", t0),
            "other sources are not affected"
        );
        assert!(!f.is_limited("192.0.2.1", t0 + std::time::Duration::from_secs(61)));
        assert_eq!(f.failed_total.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[test]
    fn ledger_records_of_failures_are_capped_across_sources_and_the_gap_is_reported() {
        let f = AuthFailures::new(1);
        let t0 = std::time::Instant::now();
        let cap = AUDITED_FAILURES_PER_MINUTE as usize;
        // One failure from each of many sources: none is over its own limit.
        let audited: Vec<Option<u64>> = (0..cap + 25)
            .map(|i| f.record(&format!("192.0.2.{i}"), t0))
            .collect();
        assert!(audited[..cap].iter().all(|a| *a == Some(0)));
        assert!(
            audited[cap..].iter().all(Option::is_none),
            "over the cap: not audited"
        );
        assert_eq!(
            f.unaudited_total.load(std::sync::atomic::Ordering::Relaxed),
            25
        );
        assert_eq!(
            f.failed_total.load(std::sync::atomic::Ordering::Relaxed),
            cap as u64 + 25,
            "every failure is still counted"
        );
        // A minute later the next failure is audited and carries the number left out.
        let later = t0 + std::time::Duration::from_secs(60);
        assert_eq!(f.record("192.0.2.1", later), Some(25));
        assert_eq!(f.record("192.0.2.2", later), Some(0));
    }
}
