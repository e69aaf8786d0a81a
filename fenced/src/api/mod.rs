//! The fencer API v1 (DESIGN.md §4): HTTP/JSON on a Unix socket (peer-uid auth) and optionally
//! on TCP: plain on loopback, or TLS with tokens and client certificates (see [`auth`]).
//!
//! [`routes::ROUTES`] is the one table of routes: the router is built from it here and the
//! OpenAPI document is generated from it in [`openapi`], so the two cannot drift apart.

pub mod auth;
mod body;
pub mod ledger_check;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod status;
pub mod step_times;
pub mod tls;
pub mod tokens;
pub mod transport;

use crate::config::Role;
use crate::engine::Engine;
use crate::error::EngineError;
use auth::{AuthFailures, Authenticated, Bearer, Credentials, RoleDisplay};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

pub use body::{
    ErrorBody, ErrorDetail, FenceBatchAnswer, FenceBatchRequest, FenceBatchResult,
    LedgerVerification, ReasonBody, MAX_BATCH, MAX_BATCH_BODY_BYTES,
};

/// Largest request body accepted; every body the API takes is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answer: status plus [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub detail: ErrorDetail,
    /// Who refused: the engine counts its own refusals, the API counts the rest.
    by: RefusedBy,
}

/// Which layer refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefusedBy {
    /// The API itself (authentication, role, malformed request, unknown route).
    Api,
    /// The engine, which has counted the refusal already.
    Engine,
}

/// Marks an error response with its code, for the request log and the refusal counter.
#[derive(Debug, Clone)]
struct ErrorMark {
    code: String,
    by: RefusedBy,
}

impl ApiError {
    /// An error with the given status, code, message and hint.
    pub fn new(
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            detail: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
                hint: hint.into(),
            },
            by: RefusedBy::Api,
        }
    }

    /// A 400 with the given message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            message,
            "fix the request; see /v1/openapi.json",
        )
    }
}

/// The fencer cluster's error codes (issue 16) with the status each is answered with and
/// when it happens: the OpenAPI document lists them on the routes that go through the
/// cluster, and a test checks each against [`status_of`].
pub const CLUSTER_ERRORS: &[(&str, u16, &str)] = &[
    ("no_quorum", 503, "this member's partition has no quorum: new operations are refused (Pacemaker's rule) unless `[cluster] allow_without_quorum` is set"),
    ("no_executor", 503, "no cluster member other than the target reaches a device of any of its levels"),
    ("config_mismatch", 409, "members define the target differently (levels, identities, delays); the message names the members"),
    ("cluster_joining", 503, "this member is still joining the cluster (waiting for a member's snapshot); retry in a moment"),
    ("cluster_timeout", 503, "the request was not delivered back through Corosync in time"),
    ("cluster_lost", 503, "this member is not in the cluster (corosync stopped or the member left the group)"),
    ("cluster_state", 503, "the cluster operation left this member's state before it could be answered"),
    ("conflict", 409, "another cluster operation with another action owns the target, wherever it was asked"),
    ("request_id_mismatch", 409, "the request_id names another request, on any member"),
];

/// The HTTP status the API answers an engine error with.
pub fn status_of(e: &EngineError) -> StatusCode {
    match e {
        EngineError::UnknownTarget { .. }
        | EngineError::UnknownDevice { .. }
        | EngineError::UnknownOperation { .. } => StatusCode::NOT_FOUND,
        EngineError::Conflict { .. }
        | EngineError::RequestIdMismatch { .. }
        | EngineError::Paused { .. } => StatusCode::CONFLICT,
        EngineError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        EngineError::BadRequest { .. } => StatusCode::BAD_REQUEST,
        EngineError::Cluster { code, .. } => match *code {
            "conflict" | "request_id_mismatch" | "config_mismatch" => StatusCode::CONFLICT,
            "unknown_target" => StatusCode::NOT_FOUND,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        EngineError::History { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError {
            status: status_of(&e),
            detail: ErrorDetail {
                code: e.code().to_string(),
                message: e.to_string(),
                hint: e.hint(),
            },
            by: RefusedBy::Engine,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mark = ErrorMark {
            code: self.detail.code.clone(),
            by: self.by,
        };
        let mut r = (self.status, axum::Json(ErrorBody { error: self.detail })).into_response();
        r.extensions_mut().insert(mark);
        r
    }
}

/// `limit` is the body limit of the route that rejected the request, so a 413 quotes the limit
/// that was really applied (the batch route allows more than the others).
fn rejection(status: StatusCode, text: String, what: &str, limit: usize) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "body_too_large",
            format!("request body is larger than this route's limit of {limit} bytes"),
            if limit == MAX_BATCH_BODY_BYTES {
                "send the targets in smaller batches; see /v1/openapi.json"
            } else {
                "request bodies are small JSON objects; see /v1/openapi.json"
            },
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            text,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        s if s.is_server_error() => ApiError::new(
            s,
            "internal",
            text,
            "retry; if it persists, check the daemon's log",
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid {what}: {text}"),
            "fix the request; see /v1/openapi.json",
        ),
    }
}

/// A JSON body whose rejections are [`ApiError`]s. `LIMIT` is the body limit its route's
/// `DefaultBodyLimit` layer applies (quoted by a 413): [`MAX_BODY_BYTES`] unless the route
/// raises it.
pub struct ApiJson<T, const LIMIT: usize = MAX_BODY_BYTES>(pub T);

impl<T: DeserializeOwned, S: Send + Sync, const LIMIT: usize> FromRequest<S> for ApiJson<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(rejection(r.status(), r.body_text(), "JSON body", LIMIT)),
        }
    }
}

/// A query string whose rejections are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(rejection(
                r.status(),
                r.body_text(),
                "query string",
                MAX_BODY_BYTES,
            )),
        }
    }
}

/// Path parameters whose rejections are [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(rejection(r.status(), r.body_text(), "path", MAX_BODY_BYTES)),
        }
    }
}

/// Shared by every handler.
pub(crate) struct ApiState {
    pub(crate) engine: Engine,
    /// The fencer cluster this daemon is a member of (`[cluster]`): fence requests and
    /// confirmations go through it; `None` runs alone.
    pub(crate) cluster: Option<crate::cluster::Cluster>,
    shutdown: watch::Sender<bool>,
    /// Requests refused by the API layer itself (forbidden, malformed, ...), by code.
    refused: Mutex<BTreeMap<String, u64>>,
    /// Bearer tokens, when `api.tokens_file` is configured.
    tokens: Option<tokens::TokenStore>,
    /// Failed authentications per source.
    pub(crate) auth_failures: AuthFailures,
    /// Connections refused by the listeners' bounds.
    pub(crate) conns: Arc<transport::ConnCounters>,
    /// Step durations per device, watched from the engine's events.
    pub(crate) step_times: step_times::StepTimes,
    /// The scheduled ledger check's last result.
    pub(crate) ledger_watch: ledger_check::LedgerWatch,
    /// The events the step-duration watcher will read, subscribed when the API was made (so
    /// none is missed) and taken by the first listener that starts serving.
    watcher_events: Mutex<Option<tokio::sync::broadcast::Receiver<crate::model::Event>>>,
}

impl ApiState {
    /// A future that completes when the API is shutting down.
    pub(crate) fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    pub(crate) fn api_refused(&self) -> BTreeMap<String, u64> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

type AppState = Arc<ApiState>;

/// The API service over one engine. Cheap to clone; clones share the shutdown switch.
#[derive(Clone)]
pub struct Api {
    state: AppState,
}

impl Api {
    /// The API for `engine`, with access rules from the engine's configuration.
    pub fn new(engine: Engine) -> Api {
        Api::in_cluster(engine, None)
    }

    /// The API for `engine` as a member of `cluster` (when given): requests are agreed
    /// cluster-wide before any engine acts.
    pub fn in_cluster(engine: Engine, cluster: Option<crate::cluster::Cluster>) -> Api {
        let (shutdown, _) = watch::channel(false);
        let sec = &engine.config().api.security;
        let tokens = sec.tokens_file.clone().map(tokens::TokenStore::new);
        let auth_failures = AuthFailures::new(sec.auth_failures_per_minute);
        let watcher_events = Mutex::new(Some(engine.subscribe()));
        Api {
            state: Arc::new(ApiState {
                engine,
                cluster,
                shutdown,
                refused: Mutex::new(BTreeMap::new()),
                tokens,
                auth_failures,
                conns: Default::default(),
                step_times: Default::default(),
                ledger_watch: Default::default(),
                watcher_events,
            }),
        }
    }

    /// Starts the watchers behind `/metrics` (step durations, the scheduled ledger check) the
    /// first time a listener serves; they end with [`Api::shutdown`].
    fn start_watchers(&self) {
        let rx = self
            .state
            .watcher_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(rx) = rx else { return };
        let s = self.state.clone();
        tokio::spawn(async move {
            let stop = s.shutdown_signal();
            s.step_times.run(s.engine.clone(), rx, stop).await;
        });
        let s = self.state.clone();
        tokio::spawn(async move {
            let stop = s.shutdown_signal();
            s.ledger_watch.run(s.engine.clone(), stop).await;
        });
    }

    fn bounds(&self) -> transport::Bounds {
        let sec = &self.state.engine.config().api.security;
        transport::Bounds {
            max_connections: sec.max_connections,
            header_timeout: sec.header_timeout,
        }
    }

    fn stopper(
        &self,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let state = self.state.clone();
        move || Box::pin(state.shutdown_signal())
    }

    /// The router: every route of [`routes::ROUTES`], JSON errors for unknown routes and
    /// methods, a body limit, and caller identification with a request log.
    pub fn router(&self) -> Router {
        let mut router: Router<AppState> = Router::new();
        for spec in routes::ROUTES {
            let mut mr = routes::method_router(spec);
            if let Some(role) = spec.role {
                mr = mr.route_layer(axum::middleware::from_fn_with_state(
                    (role, self.state.clone()),
                    require_role,
                ));
            }
            router = router.route(spec.path, mr);
        }
        router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                identify,
            ))
            .with_state(self.state.clone())
    }

    /// Ends event streams and long polls and makes the serve functions return once open
    /// requests are answered.
    pub fn shutdown(&self) {
        self.state.shutdown.send_replace(true);
    }

    /// Serves on a Unix socket (see [`bind_unix`]) until [`Api::shutdown`].
    pub async fn serve_unix(&self, listener: UnixListener) -> io::Result<()> {
        self.start_watchers();
        transport::serve_unix(
            listener,
            self.router(),
            self.bounds(),
            self.state.conns.clone(),
            self.stopper(),
        )
        .await
    }

    /// Serves on a TCP listener until [`Api::shutdown`]: over TLS when `tls` is given (the
    /// config allows plain TCP on loopback only).
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        tls: Option<Arc<tls::TlsReloader>>,
    ) -> io::Result<()> {
        self.start_watchers();
        transport::serve_tcp(
            listener,
            self.router(),
            tls,
            self.bounds(),
            self.state.conns.clone(),
            self.stopper(),
        )
        .await
    }
}

/// Binds the API's Unix socket: creates the parent directory, replaces a stale socket file
/// (one nobody is listening on; a live one means another daemon runs, which is an error, and
/// a non-socket file is never removed), and sets the file mode.
pub fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create socket directory {}: {e}", dir.display()),
            )
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another process is serving on {}; stop it first (is fenced already running?)",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot remove stale socket {}: {e}", path.display()),
                )
            })?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it (fix daemon.socket in the config)",
                    path.display()
                ),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot set mode {mode:o} on {}: {e}", path.display()),
        )
    })?;
    Ok(listener)
}

/// Establishes who is calling, then logs the request with its outcome.
async fn identify(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let creds = req
        .extensions()
        .get::<ConnectInfo<Credentials>>()
        .map(|c| c.0.clone())
        .unwrap_or(Credentials::UnixUnknown);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let rate_key = creds.rate_key();
    if state.auth_failures.is_limited(&rate_key, started) {
        tracing::warn!(source = %creds.source(), %method, %path, "api request refused: too many failed authentications from this source");
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth_rate_limited",
            format!("too many failed authentications from {rate_key} in the last minute"),
            "check the token or client certificate this client uses, then retry after a minute",
        )
        .into_response();
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("60"),
        );
        return r;
    }
    let bearer = bearer_of(&state, &req);
    let auth = auth::resolve(&state.engine.config().api, &creds, &bearer);
    let identity = auth.caller.identity.clone();
    if auth.failed {
        if let Some(unaudited) = state.auth_failures.record(&rate_key, started) {
            state
                .engine
                .audit_auth_failure(&identity, &auth.source, &method, &path, unaudited);
        }
        tracing::warn!(caller = %identity, source = %auth.source, %method, %path, "api request refused: authentication failed");
        return unauthenticated(
            "the bearer token or client certificate was not accepted".into(),
            "use a token from `fenced token create` (Authorization: Bearer TOKEN, or fence_node --token-file) or a client certificate mapped in api.client_certs".into(),
            true,
        );
    }
    req.extensions_mut().insert(auth);
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(mark) = resp.extensions().get::<ErrorMark>() {
        if mark.by == RefusedBy::Api {
            *state
                .refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(mark.code.clone())
                .or_default() += 1;
        }
        tracing::info!(caller = %identity, %method, %path, status, code = %mark.code, ms = format_args!("{ms:.1}"), "api request refused");
    } else {
        tracing::info!(caller = %identity, %method, %path, status, ms = format_args!("{ms:.1}"), "api request");
    }
    resp
}

/// What the request's `Authorization` header proves. The token is never logged or stored.
fn bearer_of(state: &ApiState, req: &Request) -> Bearer {
    let Some(v) = req.headers().get(axum::http::header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    let token = v
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .map(<[u8]>::trim_ascii);
    match (token, &state.tokens) {
        (Some(t), Some(store)) if !t.is_empty() => match store.lookup(t) {
            Some((name, role)) => Bearer::Valid { name, role },
            None => Bearer::Invalid,
        },
        _ => Bearer::Invalid,
    }
}

/// `WWW-Authenticate` for a 401 (RFC 6750 §3): the API takes bearer tokens.
fn bearer_challenge(invalid: bool) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_static(if invalid {
        "Bearer realm=\"palisade\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"palisade\""
    })
}

/// A 401 answer with its challenge.
fn unauthenticated(message: String, hint: String, invalid: bool) -> Response {
    let mut r =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message, hint).into_response();
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        bearer_challenge(invalid),
    );
    r
}

/// Refuses callers below the route's role: 401 for a caller that presented no credentials
/// where only credentials give a role (TLS), 403 for one that is known and lacks the role.
async fn require_role(
    State((needed, state)): State<(Role, AppState)>,
    req: Request,
    next: Next,
) -> Response {
    let auth = req.extensions().get::<Authenticated>().cloned();
    let have = auth.as_ref().and_then(|a| a.role);
    if have.is_some_and(|h| h >= needed) {
        return next.run(req).await;
    }
    let anonymous = auth.as_ref().is_some_and(|a| a.anonymous);
    let who = auth
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |a| a.caller.identity.clone());
    let role = needed.as_str();
    // Refused actions (fence, confirm, pause, ...) are audited; refused reads are only logged.
    if req.method() != axum::http::Method::GET {
        if let Some(a) = &auth {
            let outcome = if anonymous {
                format!("refused: unauthenticated (needs the `{role}` role)")
            } else {
                format!("refused: forbidden (needs the `{role}` role)")
            };
            let by = crate::engine::Requester {
                caller: a.caller.clone(),
                source: a.source.clone(),
            };
            state
                .engine
                .audit_access_refused(&by, req.method(), req.uri().path(), &outcome);
        }
    }
    let tls_hint = || {
        format!(
            "authenticate with a token that has the `{role}` role (`fenced token create --role {role} --name NAME`; fence_node --token-file) or a client certificate mapped in api.client_certs"
        )
    };
    if anonymous {
        return unauthenticated(
            format!(
                "{} {} needs {}; you ({who}) presented no credentials",
                req.method(),
                req.uri().path(),
                RoleDisplay(Some(needed)),
            ),
            tls_hint(),
            false,
        );
    }
    let hint = if who.starts_with("tls:") {
        tls_hint()
    } else if who.starts_with("token:") || who.starts_with("cert:") {
        format!(
            "this credential has a lower role; ask an administrator for one with the `{role}` role"
        )
    } else if who.starts_with("tcp:") {
        format!(
            "every TCP caller gets api.tcp_role; use the Unix socket as a user with the `{role}` role, or have an administrator raise api.tcp_role"
        )
    } else {
        format!(
            "ask an administrator to add your uid or group to api.{role}_uids / api.{role}_gids in the fenced config"
        )
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "{} {} needs {}; you ({who}) have {}",
            req.method(),
            req.uri().path(),
            RoleDisplay(Some(needed)),
            RoleDisplay(have)
        ),
        hint,
    )
    .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {} {}", req.method(), req.uri().path()),
        "the routes are listed in /v1/openapi.json",
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
        "the routes and their methods are listed in /v1/openapi.json",
    )
}

#[cfg(test)]
mod cluster_error_tests {
    use super::*;

    #[test]
    fn every_documented_cluster_error_has_the_documented_status() {
        for (code, status, _) in CLUSTER_ERRORS {
            let e = EngineError::Cluster {
                code,
                detail: String::new(),
            };
            assert_eq!(
                status_of(&e).as_u16(),
                *status,
                "api/mod.rs CLUSTER_ERRORS: `{code}` is documented as {status}, answered as {}",
                status_of(&e)
            );
            assert_eq!(e.code(), *code, "api/mod.rs CLUSTER_ERRORS: `{code}`");
        }
    }
}
