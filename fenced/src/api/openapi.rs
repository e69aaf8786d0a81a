//! The OpenAPI 3.0 document, generated from [`ROUTES`] and the model's JSON schemas.
//!
//! The document is checked in at `fenced/openapi.json` and served from there; a test
//! regenerates it and fails with a diff when the two differ (`UPDATE_OPENAPI=1` rewrites it).

use super::routes::{error_schema, Body, Handler, Method, RouteSpec, ROUTES};
use super::CLUSTER_ERRORS;
use crate::config::Role;
use schemars::gen::SchemaSettings;
use serde_json::{json, Map, Value};

/// The checked-in document, as served at `/v1/openapi.json`.
pub const CHECKED_IN: &str = include_str!("../../openapi.json");

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = if name == "id" {
                json!({"type": "integer", "format": "uint64", "minimum": 0})
            } else {
                json!({"type": "string"})
            };
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": schema,
            })
        })
        .collect()
}

fn to_value(s: schemars::schema::Schema) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

fn operation(spec: &RouteSpec, g: &mut schemars::gen::SchemaGenerator) -> Value {
    let mut params = path_params(spec.path);
    for q in spec.query {
        params.push(json!({
            "name": q.name,
            "in": "query",
            "required": false,
            "description": q.description,
            "schema": {"type": q.kind},
        }));
    }
    let ok_content = match spec.response {
        Body::Json(f) => json!({"application/json": {"schema": to_value(f(g))}}),
        Body::PrometheusText => {
            json!({"text/plain; version=0.0.4": {"schema": {"type": "string"}}})
        }
        Body::EventStream(f) => json!({"text/event-stream": {
            "schema": {"type": "string", "description": "Server-sent events; each `data:` line is one JSON value of the referenced schema (`lagged` events: {\"type\": \"lagged\", \"missed\": N})."},
            "x-event-data": to_value(f(g)),
        }}),
        Body::OpenApi => json!({"application/json": {"schema": {"type": "object"}}}),
        Body::Html => json!({"text/html": {"schema": {"type": "string"}}}),
    };
    let access = match spec.role {
        Some(r) => format!("Requires the `{}` role.", r.as_str()),
        None => "Open to anyone who can reach the socket.".to_string(),
    };
    let mut op = Map::new();
    op.insert("operationId".into(), json!(spec.operation_id));
    op.insert("summary".into(), json!(spec.summary));
    op.insert("description".into(), json!(access));
    op.insert(
        "x-palisade-role".into(),
        json!(spec.role.map(Role::as_str).unwrap_or("none")),
    );
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(f) = spec.request {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": to_value(f(g))}}}),
        );
    }
    let mut error = || json!({"application/json": {"schema": to_value(error_schema(g))}});
    let mut responses = Map::new();
    responses.insert(
        spec.status.to_string(),
        json!({"description": "Success.", "content": ok_content}),
    );
    if spec.role.is_some() {
        responses.insert(
            "401".into(),
            json!({
                "description": "Not authenticated: a TLS caller that presented no credentials, or a bearer token or client certificate that was not accepted (code `unauthenticated`).",
                "headers": {"WWW-Authenticate": {
                    "description": "`Bearer realm=\"palisade\"`, with `error=\"invalid_token\"` when a credential was refused (RFC 6750 §3).",
                    "schema": {"type": "string"},
                }},
                "content": error(),
            }),
        );
        responses.insert(
            "403".into(),
            json!({
                "description": "Authenticated, but without the role this route needs (code `forbidden`); the hint says how to get it.",
                "content": error(),
            }),
        );
    }
    // A fence or a manual confirmation is agreed through the fencer cluster when the daemon
    // has `[cluster]`: its refusals have codes and statuses of their own.
    if matches!(spec.handler, Handler::Fence | Handler::Confirm) {
        for status in [409u16, 503] {
            let codes: Vec<String> = CLUSTER_ERRORS
                .iter()
                .filter(|(_, s, _)| *s == status)
                .map(|(code, _, when)| format!("`{code}`: {when}"))
                .collect();
            let lead = if status == 409 {
                "Conflict: `conflict` (another operation on the target is in flight; for a fence also `request_id_mismatch`, `paused`). In a fencer cluster (`[cluster]`) these come from the whole cluster"
            } else {
                "The fencer cluster (`[cluster]`) cannot agree on the request now"
            };
            responses.insert(
                status.to_string(),
                json!({
                    "description": format!("{lead}: {}.", codes.join("; ")),
                    "content": error(),
                }),
            );
        }
    }
    responses.insert(
        "default".into(),
        json!({
            "description": "An error, with a stable code and a hint saying what to do.",
            "content": error(),
        }),
    );
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// Builds the document from [`ROUTES`].
pub fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    for spec in ROUTES {
        let op = operation(spec, &mut g);
        let method = match spec.method {
            Method::Get => "get",
            Method::Post => "post",
        };
        if let Value::Object(entry) = paths
            .entry(spec.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            entry.insert(method.into(), op);
        }
    }
    let schemas: Map<String, Value> = g
        .take_definitions()
        .into_iter()
        .map(|(k, v)| (k, to_value(v)))
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Palisade fencer API",
            "version": "1",
            "description": "Fence (power off, reboot, power on) cluster nodes through their BMCs and PDUs, with confirmation by read-back. Served on a Unix socket (callers identified by uid/gid) and optionally on loopback TCP. Every error is {\"error\": {\"code\", \"message\", \"hint\"}}.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The document as checked in: pretty JSON with a trailing newline.
pub fn render() -> String {
    let mut s = serde_json::to_string_pretty(&document()).unwrap_or_default();
    s.push('\n');
    s
}
