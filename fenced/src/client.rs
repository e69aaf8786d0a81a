//! A small client of the fencer API, used by `fence_node`: one HTTP/1.1 request per
//! connection, over the Unix socket, loopback TCP, or TCP with TLS (server verified against a
//! CA file; bearer token sent in the `Authorization` header and never printed), each with a
//! timeout.

use crate::api::ErrorDetail;
use drivers::Secret;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The Unix socket at this path.
    Unix(PathBuf),
    /// `host:port` on loopback TCP.
    Tcp(String),
    /// `host:port` over TLS.
    Https(String),
}

impl Endpoint {
    /// Parses `http://HOST:PORT` or `https://HOST:PORT` (a trailing `/` is allowed).
    pub fn from_url(url: &str) -> Result<Endpoint, UrlError> {
        let (rest, tls) = if let Some(r) = url.strip_prefix("https://") {
            (r, true)
        } else if let Some(r) = url.strip_prefix("http://") {
            (r, false)
        } else {
            return Err(UrlError::Scheme { url: url.into() });
        };
        let hostport = rest.trim_end_matches('/');
        if hostport.is_empty() || hostport.contains('/') {
            return Err(UrlError::Path { url: url.into() });
        }
        Ok(if tls {
            Endpoint::Https(hostport.to_string())
        } else {
            Endpoint::Tcp(hostport.to_string())
        })
    }

    /// The host part of a TCP endpoint (brackets of an IPv6 address removed).
    fn host(&self) -> Option<&str> {
        match self {
            Endpoint::Unix(_) => None,
            Endpoint::Tcp(a) | Endpoint::Https(a) => {
                let h = match a.rsplit_once(':') {
                    Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
                    _ => a.as_str(),
                };
                Some(h.trim_start_matches('[').trim_end_matches(']'))
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
            Endpoint::Https(a) => write!(f, "https://{a}"),
        }
    }
}

/// Why a request did not produce a successful answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached.
    #[error("cannot reach fenced at {endpoint}: {detail}; is fenced running, and is this the right socket (--socket, PALISADE_SOCKET)?")]
    Unreachable {
        /// Where we tried.
        endpoint: String,
        /// The operating system's reason.
        detail: String,
    },
    /// The daemon did not answer in time.
    #[error("fenced at {endpoint} did not answer within {secs} s; check that it is not stuck (its log, `systemctl status fenced`), or allow longer with --api-timeout (api_timeout for fence_palisade)")]
    Timeout {
        /// Where we asked.
        endpoint: String,
        /// How long we waited.
        secs: u64,
    },
    /// The daemon answered with an error.
    #[error("{} ({}; hint: {})", .error.message, .error.code, .error.hint)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body.
        error: ErrorDetail,
        /// The raw JSON answer.
        json: Value,
    },
    /// The answer could not be understood.
    #[error("unexpected answer from fenced: {detail}; check that --socket or --url points at fenced, and that fence_node and fenced are the same version")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
}

/// The fencer API client.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<Secret>,
}

/// Why a `--url` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Neither `http://` nor `https://`.
    #[error(
        "expected a URL like https://fencer.example:7420 or http://127.0.0.1:7420, found `{url}`"
    )]
    Scheme {
        /// What was given.
        url: String,
    },
    /// A path after the address, or no address at all.
    #[error("expected a URL like https://fencer.example:7420 with no path, found `{url}`")]
    Path {
        /// What was given.
        url: String,
    },
}

/// Why the CA file for an `https://` daemon cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    /// The file cannot be read or holds no PEM certificate.
    #[error("{detail}")]
    Load {
        /// What is wrong with the file, and what to give instead.
        detail: String,
    },
    /// A certificate in the file is not a usable CA certificate.
    #[error("CA file {}: {reason}; give the PEM certificate of the CA that signed the daemon's certificate", .path.display())]
    BadCertificate {
        /// The CA file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// rustls refused the protocol versions (a build without TLS 1.2 or 1.3).
    #[error("TLS setup: {reason}; this build of fence_node cannot speak TLS 1.2 or 1.3")]
    Setup {
        /// rustls's reason.
        reason: String,
    },
}

/// Why a bearer token file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// The file is missing, or others can read it.
    #[error("{detail}")]
    Mode {
        /// What is wrong (with the `chmod` to run).
        detail: String,
    },
    /// The file exists but cannot be read.
    #[error("cannot read token file {}: {reason}; check that this user may read it", .path.display())]
    Read {
        /// The token file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The file holds something other than one token.
    #[error("token file {} must hold just the token printed by `fenced token create`", .path.display())]
    Malformed {
        /// The token file.
        path: PathBuf,
    },
}

/// A TLS client configuration that trusts the CA certificates in `ca_file` (PEM) only, and
/// speaks TLS 1.2 or 1.3.
pub fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = crate::api::tls::load_certs(ca_file, "CA").map_err(|e| TlsConfigError::Load {
        detail: e.to_string(),
    })?;
    for c in certs {
        roots.add(c).map_err(|e| TlsConfigError::BadCertificate {
            path: ca_file.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(crate::api::tls::provider())
        .with_protocol_versions(crate::api::tls::VERSIONS)
        .map_err(|e| TlsConfigError::Setup {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Reads a bearer token from a file (one trailing newline removed); refuses a file others can
/// read.
pub fn read_token_file(path: &Path) -> Result<Secret, TokenFileError> {
    crate::config::check_secret_file_mode(path).map_err(|e| TokenFileError::Mode {
        detail: e.to_string(),
    })?;
    let bytes = std::fs::read(path).map_err(|e| TokenFileError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let s = Secret::from_file_contents(bytes);
    if s.is_empty()
        || s.expose()
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(TokenFileError::Malformed {
            path: path.to_path_buf(),
        });
    }
    Ok(s)
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Client {
    /// A client of the daemon at `endpoint`; `timeout` bounds each request that does not say
    /// otherwise.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        Client {
            endpoint,
            timeout,
            tls: None,
            token: None,
        }
    }

    /// Verifies an `https://` endpoint's certificate with this configuration (see
    /// [`tls_config`]).
    pub fn with_tls(mut self, cfg: Arc<rustls::ClientConfig>) -> Client {
        self.tls = Some(cfg);
        self
    }

    /// Sends this bearer token with every request.
    pub fn with_token(mut self, token: Secret) -> Client {
        self.token = Some(token);
        self
    }

    /// Where the client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            endpoint: self.endpoint.to_string(),
            detail: e.to_string(),
        };
        Ok(match &self.endpoint {
            Endpoint::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(unreachable)?,
            ),
            Endpoint::Tcp(a) => Box::new(
                tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(unreachable)?,
            ),
            Endpoint::Https(a) => {
                let cfg = self.tls.clone().ok_or_else(|| ClientError::Unreachable {
                    endpoint: self.endpoint.to_string(),
                    detail: "no CA file to verify the daemon's certificate with; give --ca FILE"
                        .into(),
                })?;
                let host = self.endpoint.host().unwrap_or_default().to_string();
                let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                    ClientError::Unreachable {
                        endpoint: self.endpoint.to_string(),
                        detail: format!("`{host}` is not a valid server name: {e}"),
                    }
                })?;
                let tcp = tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(unreachable)?;
                let s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ClientError::Unreachable {
                        endpoint: self.endpoint.to_string(),
                        detail: format!("TLS handshake failed: {e} (is --ca the CA that signed the daemon's certificate, and does the URL's host match it?)"),
                    })?;
                Box::new(s)
            }
        })
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes), ClientError> {
        let proto = |e: &dyn fmt::Display| ClientError::Protocol {
            detail: e.to_string(),
        };
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| proto(&e))?;
        let driver = tokio::spawn(conn);
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp(a) | Endpoint::Https(a) => a.clone(),
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            let mut v = zeroize::Zeroizing::new(b"Bearer ".to_vec());
            v.extend_from_slice(t.expose());
            let mut hv = hyper::header::HeaderValue::from_bytes(&v).map_err(|_| ClientError::Protocol {
                detail: "the token holds characters a header cannot carry; use the token printed by `fenced token create`".into(),
            })?;
            hv.set_sensitive(true);
            req = req.header(hyper::header::AUTHORIZATION, hv);
        }
        let payload = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| proto(&e))?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| proto(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| proto(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| proto(&e))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    /// Sends one request and returns the raw answer, within `timeout` (or the client's).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Bytes), ClientError> {
        let t = timeout.unwrap_or(self.timeout);
        tokio::time::timeout(t, self.exchange(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout {
                endpoint: self.endpoint.to_string(),
                secs: t.as_secs(),
            })?
    }

    /// Sends one request and returns its JSON answer; error answers become
    /// [`ClientError::Api`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, ClientError> {
        let (status, bytes) = self.raw(method, path, body, timeout).await?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            detail: format!(
                "HTTP {status} with a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        })?;
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let error = json
            .get("error")
            .cloned()
            .and_then(|e| serde_json::from_value::<ErrorDetail>(e).ok())
            .ok_or_else(|| ClientError::Protocol {
                detail: format!("HTTP {status} without an error body: {json}"),
            })?;
        Err(ClientError::Api {
            status,
            error,
            json,
        })
    }

    /// Like [`Client::call`], and also decodes the answer as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(T, Value), ClientError> {
        let json = self.call(method, path, body, timeout).await?;
        let t = serde_json::from_value(json.clone()).map_err(|e| ClientError::Protocol {
            detail: format!("answer to {method} {path} does not match the API: {e}"),
        })?;
        Ok((t, json))
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters pass).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_encoding() {
        assert_eq!(
            Endpoint::from_url("http://127.0.0.1:7420/"),
            Ok(Endpoint::Tcp("127.0.0.1:7420".into()))
        );
        assert_eq!(
            Endpoint::from_url("https://x:1"),
            Ok(Endpoint::Https("x:1".into()))
        );
        assert_eq!(
            Endpoint::from_url("https://[::1]:7").unwrap().host(),
            Some("::1")
        );
        assert!(Endpoint::from_url("ftp://x:1").is_err());
        assert!(Endpoint::from_url("http://x:1/v1").is_err());
        assert_eq!(encode("node 1/a"), "node%201%2Fa");
    }
}
