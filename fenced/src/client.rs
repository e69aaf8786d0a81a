//! A small client of the fencer API, used by `fence_node`: one HTTP/1.1 request per
//! connection, over the Unix socket or loopback TCP, each with a timeout.

use crate::api::ErrorDetail;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The Unix socket at this path.
    Unix(PathBuf),
    /// `host:port` on loopback TCP.
    Tcp(String),
}

impl Endpoint {
    /// Parses `http://HOST:PORT` (a trailing `/` is allowed); https is not supported yet.
    pub fn from_url(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("expected a URL like http://127.0.0.1:7420, found `{url}` (only plain http on loopback is supported)")
        })?;
        let hostport = rest.trim_end_matches('/');
        if hostport.is_empty() || hostport.contains('/') {
            return Err(format!(
                "expected a URL like http://127.0.0.1:7420 with no path, found `{url}`"
            ));
        }
        Ok(Endpoint::Tcp(hostport.to_string()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
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
    #[error("fenced at {endpoint} did not answer within {secs} s")]
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
    #[error("unexpected answer from fenced: {detail}")]
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
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Client {
    /// A client of the daemon at `endpoint`; `timeout` bounds each request that does not say
    /// otherwise.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        Client { endpoint, timeout }
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
            Endpoint::Tcp(a) => a.clone(),
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT, "application/json");
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
        assert!(Endpoint::from_url("https://x:1").is_err());
        assert!(Endpoint::from_url("http://x:1/v1").is_err());
        assert_eq!(encode("node 1/a"), "node%201%2Fa");
    }
}
