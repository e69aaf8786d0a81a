//! Accept loops for the API listeners, with bounds a hostile client cannot lift: at most
//! `api.max_connections` open connections per listener (more are closed at once), the TLS
//! handshake and every request's headers within `api.header_timeout_s`, and the body limit of
//! the router. Each connection's [`Credentials`] are established at accept time and handed to
//! the router with every request.

use super::auth::Credentials;
use super::tls::{fingerprint, subject_cn, TlsReloader};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

/// Largest request head (request line and headers) accepted; a larger one is answered
/// `431 Request Header Fields Too Large`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Connection bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Open connections at most.
    pub max_connections: usize,
    /// Deadline for the TLS handshake and for each request's headers.
    pub header_timeout: Duration,
}

/// Counters of connections refused by the bounds, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections closed because the listener was at its limit.
    pub over_limit: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub handshake_failed: AtomicU64,
}

async fn serve_conn<S>(
    io: S,
    creds: Credentials,
    router: Router,
    bounds: Bounds,
    stop: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(creds.clone()));
        let mut r = router.clone();
        async move { tower_service::Service::call(&mut r, req).await }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    // hyper's `max_buf_size` alone is not a header limit: it is checked only between reads
    // of an incomplete head, and one read may add up to another buffer's worth, so a head of
    // nearly twice the size parsed (about 128 KiB in effect for 64 KiB). `max_header_size`
    // is checked against the parsed head's exact length as well.
    b.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES);
    let conn = b.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("API connection ended: {e}");
            }
        }
        () = stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Waits until every connection has ended (all permits are back).
async fn drain(limit: &Semaphore, max: usize) {
    let n = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = limit.acquire_many(n).await;
}

/// Serves `router` on a TCP listener, over TLS when `tls` is given, until `stop` completes,
/// then waits for open connections to finish their requests.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<TlsReloader>>,
    bounds: Bounds,
    counters: Arc<ConnCounters>,
    stop: impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(bounds.max_connections));
    let mut stopped = stop();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            counters.over_limit.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, limit = bounds.max_connections, "API connection refused: too many open connections (api.max_connections)");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop();
        let config = tls.as_ref().map(|t| t.current());
        let counters = counters.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match config {
                None => serve_conn(stream, Credentials::Tcp { peer }, router, bounds, stop).await,
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    let s =
                        match tokio::time::timeout(bounds.header_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                counters.handshake_failed.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                counters.handshake_failed.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let cert = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.as_ref().to_vec());
                    let creds = Credentials::Tls {
                        peer,
                        cert_sha256: cert.as_deref().map(fingerprint),
                        cert_cn: cert.as_deref().and_then(subject_cn),
                    };
                    serve_conn(s, creds, router, bounds, stop).await;
                }
            }
        });
    }
    drain(&limit, bounds.max_connections).await;
    Ok(())
}

/// Serves `router` on a Unix socket until `stop` completes, then waits for open connections.
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    bounds: Bounds,
    counters: Arc<ConnCounters>,
    stop: impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(bounds.max_connections));
    let mut stopped = stop();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            counters.over_limit.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                limit = bounds.max_connections,
                "API connection refused on the Unix socket: too many open connections"
            );
            continue;
        };
        let creds = match stream.peer_cred() {
            Ok(c) => Credentials::UnixPeer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Unix socket peer's credentials; the caller gets no role");
                Credentials::UnixUnknown
            }
        };
        let router = router.clone();
        let stop = stop();
        tokio::spawn(async move {
            let _permit = permit;
            serve_conn(stream, creds, router, bounds, stop).await;
        });
    }
    drain(&limit, bounds.max_connections).await;
    Ok(())
}
