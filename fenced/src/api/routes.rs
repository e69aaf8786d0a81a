//! The route table and its handlers.

use super::{
    status_of, ApiError, ApiJson, ApiPath, ApiQuery, AppState, ErrorBody, ErrorDetail,
    FenceBatchAnswer, FenceBatchRequest, FenceBatchResult, LedgerVerification, ReasonBody,
    MAX_BATCH,
};
use crate::api::auth::Authenticated;
use crate::config::Role;
use crate::engine::Requester;
use crate::model::*;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json};
use futures_util::StreamExt;
use schemars::gen::SchemaGenerator;
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// Longest `?wait=` a long poll may ask for, seconds.
pub const MAX_WAIT_S: f64 = 300.0;

/// HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// What a route answers with on success.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// A JSON value of the given schema.
    Json(fn(&mut SchemaGenerator) -> Schema),
    /// Prometheus text exposition format 0.0.4.
    PrometheusText,
    /// Server-sent events whose data are JSON values of the given schema.
    EventStream(fn(&mut SchemaGenerator) -> Schema),
    /// The OpenAPI document itself.
    OpenApi,
    /// An HTML document (the status page).
    Html,
}

/// A query parameter of a route, for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    /// Name.
    pub name: &'static str,
    /// OpenAPI primitive type (`string`, `integer`, `boolean`, `number`).
    pub kind: &'static str,
    /// What it does.
    pub description: &'static str,
}

/// Which handler serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `POST /v1/fence`.
    Fence,
    /// `POST /v1/fence/batch`.
    FenceBatch,
    /// `GET /v1/operations/{id}`.
    Operation,
    /// `GET /v1/history`.
    History,
    /// `GET /v1/events`.
    Events,
    /// `GET /v1/targets`.
    Targets,
    /// `GET /v1/targets/{target}`.
    Target,
    /// `POST /v1/targets/{target}/confirm`.
    Confirm,
    /// `GET /v1/devices`.
    Devices,
    /// `POST /v1/devices/{device}/monitor`.
    Monitor,
    /// `GET /v1/pause`.
    PauseStatus,
    /// `POST /v1/pause`.
    Pause,
    /// `POST /v1/resume`.
    Resume,
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/openapi.json`.
    OpenApi,
    /// `GET /v1/ledger`.
    Ledger,
    /// `GET /v1/ledger/verify`.
    LedgerVerify,
    /// `GET /status`.
    Status,
    /// `GET /v1/cluster`.
    Cluster,
}

/// One route: the router and the OpenAPI generator both read these.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// Method.
    pub method: Method,
    /// Path in axum/OpenAPI syntax (`/v1/targets/{target}`).
    pub path: &'static str,
    /// Role needed; `None` means anyone who can reach the socket.
    pub role: Option<Role>,
    /// One line for the document.
    pub summary: &'static str,
    /// OpenAPI operationId.
    pub operation_id: &'static str,
    /// The handler.
    pub handler: Handler,
    /// Request body schema, if the route takes a body.
    pub request: Option<fn(&mut SchemaGenerator) -> Schema>,
    /// Success status.
    pub status: u16,
    /// Success body.
    pub response: Body,
    /// Query parameters.
    pub query: &'static [QueryParam],
}

/// A schema for `T`, registered in the generator's definitions.
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The error body's schema (every route can answer with it).
pub fn error_schema(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<ErrorBody>()
}

const HISTORY_QUERY: &[QueryParam] = &[
    QueryParam {
        name: "target",
        kind: "string",
        description: "Only this target.",
    },
    QueryParam {
        name: "since_ms",
        kind: "integer",
        description: "Only operations created at or after this time (ms since the Unix epoch).",
    },
    QueryParam {
        name: "until_ms",
        kind: "integer",
        description: "Only operations created before this time (ms since the Unix epoch).",
    },
    QueryParam {
        name: "limit",
        kind: "integer",
        description: "At most this many, newest first (default 100, at most 1000).",
    },
];

/// Every route of the API.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: Method::Post,
        path: "/v1/fence",
        role: Some(Role::Fence),
        summary: "Request an action (off, reboot, on) on a target; answers before any device is touched.",
        operation_id: "fence",
        handler: Handler::Fence,
        request: Some(schema::<FenceRequest>),
        status: 202,
        response: Body::Json(schema::<FenceAccepted>),
        query: &[],
    },
    RouteSpec {
        method: Method::Post,
        path: "/v1/fence/batch",
        role: Some(Role::Fence),
        summary: "Request many actions at once (1 to 1000 entries): one operation per entry, each judged as `POST /v1/fence` would (joins, conflicts, limits, request ids) and answered with its own status, in order; answers before any device is touched.",
        operation_id: "fenceBatch",
        handler: Handler::FenceBatch,
        request: Some(schema::<FenceBatchRequest>),
        status: 200,
        response: Body::Json(schema::<FenceBatchAnswer>),
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/operations/{id}",
        role: Some(Role::Read),
        summary: "An operation; with ?wait=SECONDS, waits (at most 300 s) for it to finish first.",
        operation_id: "getOperation",
        handler: Handler::Operation,
        request: None,
        status: 200,
        response: Body::Json(schema::<Operation>),
        query: &[QueryParam {
            name: "wait",
            kind: "number",
            description: "Seconds to wait for the operation to finish (0 to 300).",
        }],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/history",
        role: Some(Role::Read),
        summary: "Operations, newest first.",
        operation_id: "history",
        handler: Handler::History,
        request: None,
        status: 200,
        response: Body::Json(schema::<Vec<Operation>>),
        query: HISTORY_QUERY,
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/events",
        role: Some(Role::Read),
        summary: "Server-sent events: `operation` and `pause` events as they happen; `lagged` when events were dropped for a slow reader.",
        operation_id: "events",
        handler: Handler::Events,
        request: None,
        status: 200,
        response: Body::EventStream(schema::<Event>),
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/targets",
        role: Some(Role::Read),
        summary: "All targets with their levels and last operation.",
        operation_id: "targets",
        handler: Handler::Targets,
        request: None,
        status: 200,
        response: Body::Json(schema::<Vec<TargetSummary>>),
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/targets/{target}",
        role: Some(Role::Read),
        summary: "One target; with ?live=true, also reads every level device's power state now.",
        operation_id: "getTarget",
        handler: Handler::Target,
        request: None,
        status: 200,
        response: Body::Json(schema::<TargetSummary>),
        query: &[QueryParam {
            name: "live",
            kind: "boolean",
            description: "Read the power state from every level device now.",
        }],
    },
    RouteSpec {
        method: Method::Post,
        path: "/v1/targets/{target}/confirm",
        role: Some(Role::Admin),
        summary: "Record an operator's manual confirmation that the target is off (audited; reason required).",
        operation_id: "confirm",
        handler: Handler::Confirm,
        request: Some(schema::<ReasonBody>),
        status: 200,
        response: Body::Json(schema::<Operation>),
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/devices",
        role: Some(Role::Read),
        summary: "All devices with their last health check.",
        operation_id: "devices",
        handler: Handler::Devices,
        request: None,
        status: 200,
        response: Body::Json(schema::<Vec<DeviceSummary>>),
        query: &[],
    },
    RouteSpec {
        method: Method::Post,
        path: "/v1/devices/{device}/monitor",
        role: Some(Role::Fence),
        summary: "Check one device now (answers, identity as pinned) and return it.",
        operation_id: "monitorDevice",
        handler: Handler::Monitor,
        request: None,
        status: 200,
        response: Body::Json(schema::<DeviceSummary>),
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/pause",
        role: Some(Role::Read),
        summary: "The pause switch.",
        operation_id: "getPause",
        handler: Handler::PauseStatus,
        request: None,
        status: 200,
        response: Body::Json(schema::<PauseStatus>),
        query: &[],
    },
    RouteSpec {
        method: Method::Post,
        path: "/v1/pause",
        role: Some(Role::Admin),
        summary: "Pause fencing: new operations are refused until resumed (reason required).",
        operation_id: "pause",
        handler: Handler::Pause,
        request: Some(schema::<ReasonBody>),
        status: 200,
        response: Body::Json(schema::<PauseStatus>),
        query: &[],
    },
    RouteSpec {
        method: Method::Post,
        path: "/v1/resume",
        role: Some(Role::Admin),
        summary: "Resume fencing (reason required).",
        operation_id: "resume",
        handler: Handler::Resume,
        request: Some(schema::<ReasonBody>),
        status: 200,
        response: Body::Json(schema::<PauseStatus>),
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/healthz",
        role: None,
        summary: "Liveness: serving, history readable.",
        operation_id: "health",
        handler: Handler::Health,
        request: None,
        status: 200,
        response: Body::Json(schema::<HealthReport>),
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/metrics",
        role: Some(Role::Read),
        summary: "Prometheus metrics (text format 0.0.4).",
        operation_id: "metrics",
        handler: Handler::Metrics,
        request: None,
        status: 200,
        response: Body::PrometheusText,
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/ledger",
        role: Some(Role::Read),
        summary: "The signed, hash-chained ledger: operations, pause switch, refusals and audit records (who, from where, what, why, outcome), oldest first.",
        operation_id: "ledger",
        handler: Handler::Ledger,
        request: None,
        status: 200,
        response: Body::Json(schema::<Vec<crate::history::LedgerRecord>>),
        query: &[
            QueryParam {
                name: "from_seq",
                kind: "integer",
                description: "First record (default 1).",
            },
            QueryParam {
                name: "limit",
                kind: "integer",
                description: "At most this many (default 100, at most 1000).",
            },
        ],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/ledger/verify",
        role: Some(Role::Read),
        summary: "Checks every link and signature of the ledger with the daemon's key; names the first bad record.",
        operation_id: "verifyLedger",
        handler: Handler::LedgerVerify,
        request: None,
        status: 200,
        response: Body::Json(schema::<LedgerVerification>),
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/openapi.json",
        role: Some(Role::Read),
        summary: "This document.",
        operation_id: "openapi",
        handler: Handler::OpenApi,
        request: None,
        status: 200,
        response: Body::OpenApi,
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/status",
        role: None,
        summary: "The status page for people (HTML, self-contained); it carries no data and reads everything it shows from this API with the viewer's own credentials, so it shows a viewer without the `read` role only the refusal.",
        operation_id: "statusPage",
        handler: Handler::Status,
        request: None,
        status: 200,
        response: Body::Html,
        query: &[],
    },
    RouteSpec {
        method: Method::Get,
        path: "/v1/cluster",
        role: Some(Role::Read),
        summary: "The fencer cluster as this member sees it (`[cluster]`): members, quorum, operations in flight with their executors, and the shared history in delivery order; `status` is null when fenced runs alone.",
        operation_id: "cluster",
        handler: Handler::Cluster,
        request: None,
        status: 200,
        response: Body::Json(schema::<crate::cluster::ClusterView>),
        query: &[],
    },
];

/// The axum method router for one route.
pub(super) fn method_router(spec: &RouteSpec) -> MethodRouter<AppState> {
    macro_rules! m {
        ($h:expr) => {
            match spec.method {
                Method::Get => get($h),
                Method::Post => post($h),
            }
        };
    }
    match spec.handler {
        Handler::Fence => m!(fence),
        // Its body holds up to MAX_BATCH entries: more than the default body limit.
        Handler::FenceBatch => m!(fence_batch).layer(axum::extract::DefaultBodyLimit::max(
            super::MAX_BATCH_BODY_BYTES,
        )),
        Handler::Operation => m!(operation),
        Handler::History => m!(history),
        Handler::Events => m!(events),
        Handler::Targets => m!(targets),
        Handler::Target => m!(target),
        Handler::Confirm => m!(confirm),
        Handler::Devices => m!(devices),
        Handler::Monitor => m!(monitor),
        Handler::PauseStatus => m!(pause_status),
        Handler::Pause => m!(pause),
        Handler::Resume => m!(resume),
        Handler::Health => m!(health),
        Handler::Metrics => m!(metrics),
        Handler::OpenApi => m!(openapi),
        Handler::Ledger => m!(ledger),
        Handler::LedgerVerify => m!(ledger_verify),
        Handler::Status => m!(super::status::page),
        Handler::Cluster => m!(cluster),
    }
}

/// The caller, as the identify middleware established it.
type Auth = Extension<Authenticated>;

/// The engine's view of the caller: who, and from where.
fn requester(auth: &Authenticated) -> Requester {
    Requester {
        caller: auth.caller.clone(),
        source: auth.source.clone(),
    }
}

async fn fence(
    State(s): State<AppState>,
    Extension(auth): Auth,
    ApiJson(req): ApiJson<FenceRequest>,
) -> Result<(StatusCode, Json<FenceAccepted>), ApiError> {
    let (target, action) = (req.target.clone(), req.action);
    let accepted = match &s.cluster {
        Some(c) => c.fence(req, &requester(&auth)).await?,
        None => s.engine.fence(req, &requester(&auth)).await?,
    };
    tracing::info!(caller = %auth.caller.identity, %target, %action, op = accepted.id, joined = accepted.joined, "fence request accepted");
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

async fn fence_batch(
    State(s): State<AppState>,
    Extension(auth): Auth,
    ApiJson(batch): ApiJson<FenceBatchRequest, { super::MAX_BATCH_BODY_BYTES }>,
) -> Result<Json<FenceBatchAnswer>, ApiError> {
    let n = batch.requests.len();
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "a batch carries 1 to {MAX_BATCH} requests, found {n}; split it into several batches"
        )));
    }
    let heads: Vec<(String, Action, Option<String>)> = batch
        .requests
        .iter()
        .map(|r| (r.target.clone(), r.action, r.request_id.clone()))
        .collect();
    let by = requester(&auth);
    let answers = match &s.cluster {
        // Each entry agreed cluster-wide, as `POST /v1/fence` would be.
        Some(c) => {
            futures_util::future::join_all(batch.requests.into_iter().map(|r| c.fence(r, &by)))
                .await
        }
        None => s.engine.fence_batch(batch.requests, &by).await,
    };
    let results: Vec<FenceBatchResult> = heads
        .into_iter()
        .zip(answers)
        .map(|((target, action, request_id), r)| match r {
            Ok(accepted) => FenceBatchResult {
                target,
                action,
                request_id,
                status: StatusCode::ACCEPTED.as_u16(),
                accepted: Some(accepted),
                error: None,
            },
            Err(e) => FenceBatchResult {
                target,
                action,
                request_id,
                status: status_of(&e).as_u16(),
                accepted: None,
                error: Some(ErrorDetail {
                    code: e.code().to_string(),
                    message: e.to_string(),
                    hint: e.hint(),
                }),
            },
        })
        .collect();
    let accepted = results.iter().filter(|r| r.accepted.is_some()).count();
    tracing::info!(caller = %auth.caller.identity, requests = n, accepted, refused = n - accepted, "fence batch answered");
    Ok(Json(FenceBatchAnswer { results }))
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<f64>,
}

async fn operation(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<Operation>, ApiError> {
    let wait = match q.wait {
        None => 0.0,
        Some(w) if w.is_finite() && w >= 0.0 => w.min(MAX_WAIT_S),
        Some(w) => {
            return Err(ApiError::bad_request(format!(
                "wait must be a number of seconds from 0 to {MAX_WAIT_S}, found {w}"
            )))
        }
    };
    // Ids this member gave out for operations another member executes.
    if let Some(c) = &s.cluster {
        if let Some(r) = c.operation(id, Duration::from_secs_f64(wait)).await {
            return Ok(Json(r?));
        }
    }
    if wait == 0.0 {
        return Ok(Json(s.engine.operation(id)?));
    }
    let stop = s.shutdown_signal();
    tokio::select! {
        r = s.engine.wait_operation(id, Duration::from_secs_f64(wait)) => Ok(Json(r?)),
        // Shutting down: answer with the operation as it is rather than hold the shutdown.
        () = stop => Ok(Json(s.engine.operation(id)?)),
    }
}

async fn history(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Vec<Operation>>, ApiError> {
    Ok(Json(s.engine.history(&q)?))
}

/// One item of the event stream, before it is encoded as a server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// An engine event.
    Event(Box<Event>),
    /// This subscriber fell behind and `missed` events were dropped for it; it should re-read
    /// the state it cares about (`GET /v1/targets`, `GET /v1/operations/{id}`).
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

/// A `lagged` event's data.
#[derive(Serialize)]
struct Lagged {
    r#type: &'static str,
    missed: u64,
}

/// The events a subscriber receives: engine events in order, and a [`StreamItem::Lagged`]
/// marker where a slow reader lost some (instead of ending the stream).
pub fn event_items(
    rx: tokio::sync::broadcast::Receiver<Event>,
) -> impl futures_util::Stream<Item = StreamItem> {
    BroadcastStream::new(rx).map(|item| match item {
        Ok(ev) => StreamItem::Event(Box::new(ev)),
        Err(BroadcastStreamRecvError::Lagged(missed)) => StreamItem::Lagged { missed },
    })
}

fn sse_event(item: StreamItem) -> SseEvent {
    match item {
        StreamItem::Event(ev) => {
            let name = match *ev {
                Event::Operation { .. } => "operation",
                Event::Pause { .. } => "pause",
            };
            SseEvent::default()
                .event(name)
                .json_data(&ev)
                .unwrap_or_else(|e| SseEvent::default().comment(format!("unencodable event: {e}")))
        }
        StreamItem::Lagged { missed } => SseEvent::default()
            .event("lagged")
            .json_data(Lagged {
                r#type: "lagged",
                missed,
            })
            .unwrap_or_else(|_| SseEvent::default().event("lagged").data("{}")),
    }
}

async fn events(State(s): State<AppState>) -> Response {
    let rx = s.engine.subscribe();
    let first = futures_util::stream::once(async {
        Ok::<_, Infallible>(SseEvent::default().comment("subscribed"))
    });
    let stream = event_items(rx).map(|i| Ok::<_, Infallible>(sse_event(i)));
    // Ends with the server, so a graceful stop is not held open by subscribers.
    let stream = first.chain(stream).take_until(s.shutdown_signal());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn targets(State(s): State<AppState>) -> Result<Json<Vec<TargetSummary>>, ApiError> {
    Ok(Json(s.engine.targets()?))
}

#[derive(Deserialize)]
struct LiveQuery {
    live: Option<bool>,
}

async fn target(
    State(s): State<AppState>,
    ApiPath(t): ApiPath<String>,
    ApiQuery(q): ApiQuery<LiveQuery>,
) -> Result<Json<TargetSummary>, ApiError> {
    Ok(Json(
        s.engine.target_detail(&t, q.live.unwrap_or(false)).await?,
    ))
}

async fn confirm(
    State(s): State<AppState>,
    Extension(auth): Auth,
    ApiPath(t): ApiPath<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Json<Operation>, ApiError> {
    let op = match &s.cluster {
        Some(c) => c.confirm(&t, &body.reason, &requester(&auth)).await?,
        None => s.engine.confirm(&t, &body.reason, &requester(&auth))?,
    };
    tracing::warn!(caller = %auth.caller.identity, target = %t, op = op.id, reason = %body.reason, "manual confirmation recorded");
    Ok(Json(op))
}

async fn devices(State(s): State<AppState>) -> Json<Vec<DeviceSummary>> {
    Json(s.engine.devices())
}

async fn monitor(
    State(s): State<AppState>,
    ApiPath(d): ApiPath<String>,
) -> Result<Json<DeviceSummary>, ApiError> {
    Ok(Json(s.engine.monitor_device(&d).await?))
}

async fn pause_status(State(s): State<AppState>) -> Json<PauseStatus> {
    Json(s.engine.pause_status())
}

async fn set_paused(
    s: AppState,
    auth: Authenticated,
    body: ReasonBody,
    paused: bool,
) -> Result<Json<PauseStatus>, ApiError> {
    let st = s
        .engine
        .set_paused(paused, &body.reason, &requester(&auth))?;
    tracing::warn!(caller = %auth.caller.identity, paused, reason = %body.reason, "pause switch changed");
    Ok(Json(st))
}

async fn pause(
    State(s): State<AppState>,
    Extension(auth): Auth,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Json<PauseStatus>, ApiError> {
    set_paused(s, auth, body, true).await
}

async fn resume(
    State(s): State<AppState>,
    Extension(auth): Auth,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Json<PauseStatus>, ApiError> {
    set_paused(s, auth, body, false).await
}

async fn health(State(s): State<AppState>) -> Response {
    let h = s.engine.health();
    let status = if h.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = super::metrics::render(&s.engine, &s.api_refused());
    super::metrics::render_security(&mut text, &s);
    if let Some(c) = &s.cluster {
        super::metrics::render_cluster(&mut text, &c.status());
    }
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}

#[derive(Deserialize)]
struct LedgerQuery {
    from_seq: Option<u64>,
    limit: Option<u32>,
}

async fn ledger(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<LedgerQuery>,
) -> Result<Json<Vec<crate::history::LedgerRecord>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
    Ok(Json(
        s.engine.ledger(q.from_seq.unwrap_or(1).max(1), limit)?,
    ))
}

async fn ledger_verify(State(s): State<AppState>) -> Result<Json<LedgerVerification>, ApiError> {
    // A long ledger takes a while to check (one signature per record): off the event loop.
    let engine = s.engine.clone();
    let r = tokio::task::spawn_blocking(move || engine.verify_ledger())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("ledger verification stopped: {e}"),
                "retry; if it persists, run `fenced verify-ledger` on a copy of the history file",
            )
        })?;
    Ok(Json(r?.into()))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::CHECKED_IN,
    )
        .into_response()
}

async fn cluster(State(s): State<AppState>) -> Json<crate::cluster::ClusterView> {
    Json(match &s.cluster {
        Some(c) => c.cluster_view(),
        None => crate::cluster::ClusterView {
            status: None,
            history: Vec::new(),
            history_dropped: 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_slow_subscriber_gets_a_lagged_marker_then_the_newest_events() {
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        let pause = |n: u32| Event::Pause {
            paused: true,
            by: "uid:0".into(),
            reason: format!("r{n}"),
        };
        for n in 0..5 {
            let _ = tx.send(pause(n));
        }
        drop(tx);
        let items: Vec<StreamItem> = event_items(rx).collect().await;
        assert_eq!(
            items,
            vec![
                StreamItem::Lagged { missed: 3 },
                StreamItem::Event(Box::new(pause(3))),
                StreamItem::Event(Box::new(pause(4))),
            ]
        );
    }
}
