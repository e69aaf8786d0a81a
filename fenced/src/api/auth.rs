//! Who is calling, and with which role.
//!
//! A connection's credentials are established once, when it is accepted: the Unix socket's
//! peer credentials (`SO_PEERCRED`, which the kernel fills in and the peer cannot forge), or the
//! TCP peer address (loopback only, with the role configured for all TCP callers). TLS client
//! certificates and bearer tokens are further [`Credentials`] variants that will resolve to a
//! role the same way, in [`resolve`].

use crate::config::{ApiConfig, Role};
use crate::model::Caller;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use std::fmt;
use std::net::SocketAddr;
use tokio::net::{TcpListener, UnixListener};

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
}

impl Credentials {
    /// The identity recorded in history and logs (`uid:1000`, `tcp:127.0.0.1:40112`).
    pub fn identity(&self) -> String {
        match self {
            Credentials::UnixPeer { uid, .. } => format!("uid:{uid}"),
            Credentials::UnixUnknown => "unix:unknown".into(),
            Credentials::Tcp { peer } => format!("tcp:{peer}"),
        }
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Credentials {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Credentials::UnixPeer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Unix socket peer's credentials; the caller gets no role");
                Credentials::UnixUnknown
            }
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Credentials {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Credentials::Tcp {
            peer: *stream.remote_addr(),
        }
    }
}

/// An authenticated caller: who, and what they may do (`None`: nothing beyond `/healthz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Identity for history and logs.
    pub caller: Caller,
    /// The granted role, if any.
    pub role: Option<Role>,
}

/// Resolves a connection's credentials to a caller and role under the API configuration.
pub fn resolve(api: &ApiConfig, creds: &Credentials) -> Authenticated {
    let role = match creds {
        Credentials::UnixPeer { uid, gid, .. } => api.role_for_peer(*uid, *gid),
        Credentials::UnixUnknown => None,
        Credentials::Tcp { .. } => Some(api.tcp_role),
    };
    Authenticated {
        caller: Caller {
            identity: creds.identity(),
        },
        role,
    }
}

/// A role's name as the API and the config spell it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Read => "read",
        Role::Fence => "fence",
        Role::Admin => "admin",
    }
}

/// Displays an optional role for error messages.
pub struct RoleDisplay(pub Option<Role>);

impl fmt::Display for RoleDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(r) => write!(f, "the `{}` role", role_name(r)),
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
        assert_eq!(resolve(&a, &peer(0, 0)).role, Some(Role::Admin));
        assert_eq!(resolve(&a, &peer(1000, 1000)).role, Some(Role::Fence));
        assert_eq!(resolve(&a, &peer(2000, 50)).role, Some(Role::Read));
        assert_eq!(resolve(&a, &peer(2000, 2000)).role, None);
        assert_eq!(resolve(&a, &peer(1000, 1)).caller.identity, "uid:1000");
        assert_eq!(resolve(&a, &Credentials::UnixUnknown).role, None);
    }

    #[test]
    fn tcp_callers_get_the_tcp_role() {
        let a = api("[api]\ntcp = \"127.0.0.1:7420\"\ntcp_role = \"fence\"\n");
        let c = Credentials::Tcp {
            peer: SocketAddr::from(([127, 0, 0, 1], 4000)),
        };
        let auth = resolve(&a, &c);
        assert_eq!(auth.role, Some(Role::Fence));
        assert_eq!(auth.caller.identity, "tcp:127.0.0.1:4000");
    }
}
