//! The fencer API end to end: a real engine and history, served on a Unix socket, driven by
//! curl and by the `fence_node` binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn fence_body(target: &str, action: &str) -> String {
    format!(r#"{{"target":"{target}","action":"{action}","reason":"test"}}"#)
}

#[test]
fn fence_is_accepted_then_long_poll_sees_it_succeed() {
    let h = Harness::start();
    let (code, v) = h.json("POST", "/v1/fence", Some(&fence_body("node1", "off")));
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["joined"], false);
    let id = v["id"].as_u64().unwrap();
    let (code, op) = h.json("GET", &format!("/v1/operations/{id}?wait=10"), None);
    assert_eq!(code, 200, "{op}");
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["outcome"]["confirmation"]["method"], "power_read_back");
    assert_eq!(op["requested_by"]["identity"], format!("uid:{}", h.me));
    // The operation is in history and on the target.
    let (code, hist) = h.json("GET", "/v1/history?target=node1&limit=5", None);
    assert_eq!(code, 200);
    assert_eq!(hist[0]["id"], id);
    let (_, t) = h.json("GET", "/v1/targets/node1?live=true", None);
    assert_eq!(t["last_operation"]["id"], id);
    assert_eq!(t["live"][0]["state"], "off", "{t}");
    let (code, ts) = h.json("GET", "/v1/targets", None);
    assert_eq!(code, 200);
    assert_eq!(ts.as_array().unwrap().len(), NODES.len());
}

/// POSTs the body in a file (a 2 MiB body does not fit in one argv string) and returns the
/// status and the answer.
fn post_file(h: &Harness, path: &str, body: &str) -> (u16, String) {
    let file = h.dir.path().join("big-body.json");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--unix-socket"])
        .arg(&h.socket)
        .args([
            "-H",
            "content-type: application/json",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[test]
fn a_body_too_large_quotes_the_limit_of_its_own_route() {
    let h = Harness::start();
    let small = fenced::api::MAX_BODY_BYTES;
    let batch = fenced::api::MAX_BATCH_BODY_BYTES;
    assert!(batch > small, "the batch route allows more than the others");

    let big = format!(
        r#"{{"target":"node1","action":"off","reason":"{}"}}"#,
        "x".repeat(small + 1)
    );
    let (code, body) = post_file(&h, "/v1/fence", &big);
    let err = assert_error(code, &body, 413, "body_too_large");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains(&format!("limit of {small} bytes")), "{err}");
    assert!(!msg.contains(&batch.to_string()), "{err}");

    // Over the default limit but under the batch route's: taken and judged entry by entry
    // (unknown targets, so nothing is fenced).
    let entry = |i: usize| {
        format!(
            r#"{{"target":"nosuch{i}","action":"off","reason":"{}"}}"#,
            "r".repeat(1000)
        )
    };
    let entries: Vec<String> = (0..100).map(entry).collect();
    let mid = format!(r#"{{"requests":[{}]}}"#, entries.join(","));
    assert!(mid.len() > small && mid.len() < batch);
    let (code, body) = post_file(&h, "/v1/fence/batch", &mid);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    assert!(
        results
            .iter()
            .all(|r| r["error"]["code"] == "unknown_target"),
        "{v}"
    );

    // Over the batch route's own limit: its message quotes that limit, not the default one.
    let over = format!(
        r#"{{"requests":[{{"target":"node1","action":"off","reason":"{}"}}]}}"#,
        "x".repeat(batch + 1)
    );
    let (code, body) = post_file(&h, "/v1/fence/batch", &over);
    let err = assert_error(code, &body, 413, "body_too_large");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains(&format!("limit of {batch} bytes")), "{err}");
    assert!(!msg.contains(&format!("{small} bytes")), "{err}");
    assert!(
        err["hint"].as_str().unwrap().contains("smaller batches"),
        "{err}"
    );
    // Nothing was started by either refused body.
    let (_, hist) = h.json("GET", "/v1/history?target=node1&limit=5", None);
    assert_eq!(hist.as_array().unwrap().len(), 0, "{hist}");
}

#[test]
fn same_action_joins_and_conflicting_action_is_refused_with_a_hint() {
    let h = Harness::start();
    let (code, a) = h.json("POST", "/v1/fence", Some(&fence_body("node3", "off")));
    assert_eq!(code, 202, "{a}");
    let (code, b) = h.json("POST", "/v1/fence", Some(&fence_body("node3", "off")));
    assert_eq!(code, 202, "{b}");
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["joined"], true);
    let (code, body) = h.curl("POST", "/v1/fence", Some(&fence_body("node3", "on")));
    let err = assert_error(code, &body, 409, "conflict");
    assert!(
        err["hint"].as_str().unwrap().contains("wait for operation"),
        "{err}"
    );
    let (_, op) = h.json("GET", &format!("/v1/operations/{}?wait=10", a["id"]), None);
    assert_eq!(op["state"], "succeeded", "{op}");

    // The same request id returns the same operation, also once it has finished.
    let with_id = r#"{"target":"node1","action":"off","reason":"t","request_id":"ctl-42"}"#;
    let (code, first) = h.json("POST", "/v1/fence", Some(with_id));
    assert_eq!(code, 202, "{first}");
    h.json(
        "GET",
        &format!("/v1/operations/{}?wait=10", first["id"]),
        None,
    );
    let (code, again) = h.json("POST", "/v1/fence", Some(with_id));
    assert_eq!(code, 202, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["joined"], true);
    assert_eq!(again["state"], "succeeded");
}

#[test]
fn errors_are_json_with_the_right_status() {
    let h = Harness::start();
    let (code, body) = h.curl("POST", "/v1/fence", Some(&fence_body("nosuch", "off")));
    assert_error(code, &body, 404, "unknown_target");
    let (code, body) = h.curl("GET", "/v1/operations/999", None);
    assert_error(code, &body, 404, "unknown_operation");
    let (code, body) = h.curl("GET", "/v1/targets/nosuch", None);
    assert_error(code, &body, 404, "unknown_target");
    let (code, body) = h.curl("POST", "/v1/devices/nosuch/monitor", None);
    assert_error(code, &body, 404, "unknown_device");
    let (code, body) = h.curl("GET", "/v1/history?limit=many", None);
    assert_error(code, &body, 400, "bad_request");

    let (code, body) = h.curl(
        "POST",
        "/v1/fence",
        Some(r#"{"target":"node1","action":"explode"}"#),
    );
    let err = assert_error(code, &body, 400, "bad_request");
    assert!(
        err["message"].as_str().unwrap().contains("unknown variant"),
        "serde's message is passed on: {err}"
    );
    let (code, body) = h.curl("POST", "/v1/fence", Some("{not json"));
    assert_error(code, &body, 400, "bad_request");
    let (code, body) = h.curl("GET", "/v1/operations/abc", None);
    assert_error(code, &body, 400, "bad_request");
    let (code, body) = h.curl("GET", "/v1/operations/1?wait=-3", None);
    assert_error(code, &body, 400, "bad_request");

    let big = format!(
        r#"{{"target":"node1","action":"off","reason":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (code, body) = h.curl("POST", "/v1/fence", Some(&big));
    assert_error(code, &body, 413, "body_too_large");

    let (code, body) = h.curl("GET", "/v1/nothing-here", None);
    assert_error(code, &body, 404, "not_found");
    let (code, body) = h.curl("DELETE", "/v1/fence", None);
    assert_error(code, &body, 405, "method_not_allowed");

    // A body without a JSON content type.
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&h.socket)
        .args(["-d", "target=node1", "-w", "\n%{http_code}"])
        .arg("http://localhost/v1/fence")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_error(code.parse().unwrap(), body, 415, "unsupported_media_type");
}

#[test]
fn roles_are_enforced_by_peer_uid() {
    let h = Harness::start();
    let root = if h.root() {
        Ok(())
    } else {
        Err("running requests as other uids needs root".to_string())
    };
    if !hw_tests::require::needs("root", "running the tests as root", root) {
        return;
    }
    // No role at all: even reading is refused, and the message says what was needed.
    let (code, body) = h.curl_as(Some(NOBODY), "GET", "/v1/targets", None);
    let err = assert_error(code, &body, 403, "forbidden");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("`read` role")
            && msg.contains(&format!("uid:{NOBODY}"))
            && msg.contains("no role"),
        "{msg}"
    );
    // /healthz needs only socket access.
    let (code, body) = h.curl_as(Some(NOBODY), "GET", "/healthz", None);
    assert_eq!(code, 200, "{body}");

    // Read role: reads, but cannot fence.
    let (code, _) = h.curl_as(Some(READ_UID), "GET", "/v1/targets", None);
    assert_eq!(code, 200);
    let (code, body) = h.curl_as(
        Some(READ_UID),
        "POST",
        "/v1/fence",
        Some(&fence_body("node1", "off")),
    );
    let err = assert_error(code, &body, 403, "forbidden");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("`fence` role") && msg.contains("`read` role"),
        "{msg}"
    );
    // Refused before the engine: nothing was started.
    assert_eq!(h.engine.in_flight(), 0);

    // Fence role: fences, but cannot confirm by hand or pause.
    let (code, body) = h.curl_as(
        Some(FENCE_UID),
        "POST",
        "/v1/fence",
        Some(&fence_body("node1", "off")),
    );
    assert_eq!(code, 202, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let (_, op) = h.json("GET", &format!("/v1/operations/{}?wait=10", v["id"]), None);
    assert_eq!(op["requested_by"]["identity"], format!("uid:{FENCE_UID}"));
    let (code, body) = h.curl_as(
        Some(FENCE_UID),
        "POST",
        "/v1/targets/node1/confirm",
        Some(r#"{"reason":"checked"}"#),
    );
    let err = assert_error(code, &body, 403, "forbidden");
    assert!(
        err["message"].as_str().unwrap().contains("`admin` role"),
        "{err}"
    );
    let (code, body) = h.curl_as(
        Some(FENCE_UID),
        "POST",
        "/v1/pause",
        Some(r#"{"reason":"x"}"#),
    );
    assert_error(code, &body, 403, "forbidden");
}

#[test]
fn pause_refuses_new_operations_until_resume() {
    let h = Harness::start();
    let (code, body) = h.curl("POST", "/v1/pause", Some(r#"{"reason":""}"#));
    assert_error(code, &body, 400, "bad_request");
    let (code, v) = h.json("POST", "/v1/pause", Some(r#"{"reason":"maintenance"}"#));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["paused"], true);
    let (_, v) = h.json("GET", "/v1/pause", None);
    assert_eq!(v["paused"], true);
    assert_eq!(v["reason"], "maintenance");
    let (code, body) = h.curl("POST", "/v1/fence", Some(&fence_body("node1", "off")));
    let err = assert_error(code, &body, 409, "paused");
    assert!(err["hint"].as_str().unwrap().contains("resume"), "{err}");
    let (code, v) = h.json("POST", "/v1/resume", Some(r#"{"reason":"done"}"#));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["paused"], false);
    let (code, _) = h.json("POST", "/v1/fence", Some(&fence_body("node1", "off")));
    assert_eq!(code, 202);
}

#[test]
fn manual_confirmation_needs_a_reason_and_is_recorded() {
    let h = Harness::start();
    let (code, body) = h.curl(
        "POST",
        "/v1/targets/node2/confirm",
        Some(r#"{"reason":"  "}"#),
    );
    assert_error(code, &body, 400, "bad_request");
    let (code, body) = h.curl("POST", "/v1/targets/node2/confirm", Some("{}"));
    assert_error(code, &body, 400, "bad_request");
    let (code, body) = h.curl(
        "POST",
        "/v1/targets/nosuch/confirm",
        Some(r#"{"reason":"x"}"#),
    );
    assert_error(code, &body, 404, "unknown_target");
    let (code, op) = h.json(
        "POST",
        "/v1/targets/node2/confirm",
        Some(r#"{"reason":"power cords pulled, checked in the rack"}"#),
    );
    assert_eq!(code, 200, "{op}");
    assert_eq!(op["state"], "succeeded");
    assert_eq!(op["outcome"]["confirmation"]["method"], "manual");
    assert_eq!(op["outcome"]["confirmation"]["by"], format!("uid:{}", h.me));
}

#[test]
fn events_stream_delivers_operation_events() {
    let h = Harness::start();
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "15", "--unix-socket"])
        .arg(&h.socket)
        .arg("http://localhost/v1/events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until subscribed, so the event cannot be published before the stream exists.
    loop {
        let l = lines
            .next()
            .expect("stream ended before subscribing")
            .unwrap();
        if l.starts_with(": subscribed") {
            break;
        }
    }
    let (code, v) = h.json("POST", "/v1/fence", Some(&fence_body("node1", "off")));
    assert_eq!(code, 202);
    let mut seen_event_line = false;
    let mut found = None;
    for l in lines.by_ref() {
        let l = l.unwrap();
        if l == "event: operation" {
            seen_event_line = true;
        } else if let Some(data) = l.strip_prefix("data: ") {
            let ev: Value = serde_json::from_str(data).unwrap();
            assert_eq!(ev["type"], "operation");
            if ev["operation"]["id"] == v["id"] {
                found = Some(ev);
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen_event_line);
    let ev = found.expect("no operation event for the fence");
    assert_eq!(ev["operation"]["target"], "node1");
}

#[test]
fn metrics_are_prometheus_text() {
    let h = Harness::start();
    let (_, v) = h.json("POST", "/v1/fence", Some(&fence_body("node1", "off")));
    h.json("GET", &format!("/v1/operations/{}?wait=10", v["id"]), None);
    h.curl("POST", "/v1/fence", Some(&fence_body("nosuch", "off")));
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "--unix-socket"])
        .arg(&h.socket)
        .arg("http://localhost/metrics")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut help = std::collections::BTreeSet::new();
    let mut typed = std::collections::BTreeMap::new();
    let mut samples = std::collections::BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap();
            assert!(!text.is_empty());
            assert!(help.insert(name.to_string()), "HELP twice for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(help.contains(name), "TYPE before HELP for {name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string(), kind.to_string()).is_none());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            // A histogram's samples are its family name plus _bucket, _sum or _count.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "sample before its TYPE: {line}");
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
            }
            samples.insert(series.to_string(), value.to_string());
        }
    }
    for family in [
        "palisade_operations_total",
        "palisade_device_steps_total",
        "palisade_requests_refused_total",
        "palisade_operations_in_flight",
        "palisade_paused",
        "palisade_device_health",
        "palisade_operations_interrupted_at_startup",
    ] {
        assert!(typed.contains_key(family), "missing {family}");
    }
    assert_eq!(typed["palisade_operations_total"], "counter");
    assert_eq!(typed["palisade_paused"], "gauge");
    assert_eq!(
        samples[r#"palisade_operations_total{action="off",outcome="succeeded"}"#],
        "1"
    );
    assert_eq!(
        samples[r#"palisade_device_steps_total{device="bmc-node1",result="confirmed"}"#],
        "1"
    );
    assert_eq!(
        samples[r#"palisade_requests_refused_total{code="unknown_target"}"#],
        "1"
    );
    assert_eq!(samples["palisade_paused"], "0");
}

#[test]
fn openapi_document_matches_the_code() {
    let generated = fenced::api::openapi::render();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap();
    if generated != checked_in {
        let (g, c): (Vec<&str>, Vec<&str>) =
            (generated.lines().collect(), checked_in.lines().collect());
        let first = g
            .iter()
            .zip(&c)
            .position(|(a, b)| a != b)
            .unwrap_or(g.len().min(c.len()));
        let from = first.saturating_sub(3);
        let mut diff = String::new();
        for i in from..(first + 4) {
            if let Some(l) = c.get(i) {
                diff.push_str(&format!("- {:>5} {l}\n", i + 1));
            }
        }
        for i in from..(first + 4) {
            if let Some(l) = g.get(i) {
                diff.push_str(&format!("+ {:>5} {l}\n", i + 1));
            }
        }
        panic!(
            "fenced/openapi.json differs from the document the code generates (first difference at line {}; checked in {} lines, generated {}):\n{diff}\nIf the API change is intended, run: UPDATE_OPENAPI=1 cargo test -p fenced --test api openapi",
            first + 1,
            c.len(),
            g.len()
        );
    }
    let doc: Value = serde_json::from_str(&checked_in).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    for spec in fenced::api::routes::ROUTES {
        let method = match spec.method {
            fenced::api::routes::Method::Get => "get",
            fenced::api::routes::Method::Post => "post",
        };
        assert!(
            doc["paths"][spec.path][method].is_object(),
            "{method} {} missing",
            spec.path
        );
    }
    // Every reference resolves.
    let text = checked_in.as_str();
    for part in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
}

#[test]
fn openapi_is_served_and_valid() {
    let h = Harness::start();
    let (code, served) = h.curl("GET", "/v1/openapi.json", None);
    assert_eq!(code, 200);
    assert_eq!(served, fenced::api::openapi::CHECKED_IN);
    // Validate with a real OpenAPI validator when it is installed
    // (scripts/install-test-deps.sh installs it).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if !hw_tests::require::needs(
        "openapi-spec-validator",
        "PyPI openapi-spec-validator",
        hw_tests::require::python_module("openapi_spec_validator"),
    ) {
        return;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; from openapi_spec_validator import validate; from openapi_spec_validator.readers import read_from_filename; d, _ = read_from_filename(sys.argv[1]); validate(d); print('valid')",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects fenced/openapi.json:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn fence_node_success_and_failure() {
    let h = Harness::start();
    let o = h.fence_node(&["off", "node1", "--reason", "test"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("node1 FENCED: power read back"),
        "{}",
        stdout(&o)
    );

    let o = h.fence_node(&["off", "node2", "--reason", "test"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("node2 NOT FENCED"), "{}", stdout(&o));

    // A reboot that fenced but could not power on: fenced (exit 0), said plainly.
    let o = h.fence_node(&["reboot", "node4"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("did NOT come back on"),
        "{}",
        stdout(&o)
    );

    let o = h.fence_node(&["off", "node3", "--no-wait"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("accepted"), "{}", stdout(&o));
}

#[test]
fn fence_node_refused_unreachable_and_usage() {
    let h = Harness::start();
    let o = h.fence_node(&["off", "nosuch"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("unknown target"), "{}", stderr(&o));
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));

    let o = h.fence_node(&["pause", "--reason", "test"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = h.fence_node(&["off", "node1"]);
    assert_eq!(o.status.code(), Some(3), "paused: {}", stderr(&o));
    let o = h.fence_node(&["resume", "--reason", "test"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let o = Command::new(env!("CARGO_BIN_EXE_fence_node"))
        .args(["--socket", "/nonexistent/fenced.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot reach fenced"), "{}", stderr(&o));

    let o = h.fence_node(&["off"]);
    assert_eq!(o.status.code(), Some(2), "missing NODE: {}", stderr(&o));
    let o = h.fence_node(&["--bogus", "status"]);
    assert_eq!(o.status.code(), Some(2));
    let o = h.fence_node(&["status", "--live"]);
    assert_eq!(o.status.code(), Some(2), "--live needs NODE");
    // Manual confirmation without a terminal and without --yes is refused as usage.
    let o = h.fence_node(&["confirm", "node1", "--reason", "checked"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = h.fence_node(&["confirm", "node1", "--reason", "checked", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let o = Command::new(env!("CARGO_BIN_EXE_fence_node"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Exit status:"));
}

#[test]
fn fence_node_json_outputs_parse() {
    let h = Harness::start();
    let parse = |args: &[&str], want: i32| -> Value {
        let o = h.fence_node(args);
        assert_eq!(
            o.status.code(),
            Some(want),
            "{args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&o)))
    };
    let op = parse(&["--json", "off", "node1"], 0);
    assert_eq!(op["state"], "succeeded");
    let op = parse(&["off", "node2", "--json"], 1);
    assert_eq!(op["state"], "failed");
    assert!(parse(&["--json", "status"], 0).is_array());
    assert_eq!(
        parse(&["--json", "status", "node1", "--live"], 0)["name"],
        "node1"
    );
    assert!(parse(&["--json", "history", "--since", "1h", "--limit", "5"], 0).is_array());
    assert!(parse(&["--json", "history", "node1"], 0).is_array());
    let devs = parse(&["--json", "devices", "--check"], 0);
    assert_eq!(devs[0]["health"], "healthy", "{devs}");
    let err = parse(&["--json", "off", "nosuch"], 3);
    assert_eq!(err["error"]["code"], "unknown_target");
    let o = Command::new(env!("CARGO_BIN_EXE_fence_node"))
        .args(["--json", "--socket", "/nonexistent/fenced.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    let err: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(err["error"]["code"], "unreachable");
}

#[test]
fn stale_socket_is_replaced_and_live_one_is_not() {
    let h = Harness::start();
    // A live socket: another daemon is serving.
    let e = fenced::api::bind_unix(&h.socket, 0o600).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    // A stale socket file is replaced, in a directory that does not exist yet.
    let path = h.dir.path().join("new/dir/s.sock");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = fenced::api::bind_unix(&path, 0o640).unwrap();
        drop(l);
    });
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // A regular file is never removed.
    let file = h.dir.path().join("not-a-socket");
    std::fs::write(&file, b"x").unwrap();
    rt.block_on(async {
        assert!(fenced::api::bind_unix(&file, 0o600).is_err());
    });
    assert!(file.exists());
}

#[test]
fn loopback_tcp_callers_get_the_tcp_role() {
    let h = Harness::start();
    let addr = h.serve_tcp();
    let url = format!("http://{addr}");
    // The test config leaves api.tcp_role at its default, read.
    let o = Command::new(env!("CARGO_BIN_EXE_fence_node"))
        .args(["--url", &url, "--json", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(serde_json::from_str::<Value>(&stdout(&o))
        .unwrap()
        .is_array());
    let o = Command::new(env!("CARGO_BIN_EXE_fence_node"))
        .args(["--url", &url, "off", "node1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("`fence` role")
            && err.contains("tcp:127.0.0.1:")
            && err.contains("api.tcp_role"),
        "{err}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_fence_node"))
        .args(["--url", "ftp://x", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn fence_node_shows_progress_on_a_terminal() {
    let h = Harness::start();
    if !hw_tests::require::needs_command("script", "Debian package bsdutils (util-linux)") {
        return;
    }
    let cmd = format!(
        "{} --socket {} off node3 --reason tty",
        env!("CARGO_BIN_EXE_fence_node"),
        h.socket.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    // The live line: state, level and device, elapsed time; then cleared for the final line.
    // Its first sample may already see the operation finished on a loaded machine.
    assert!(
        out.contains("node3 off: running, level 1  ")
            || out.contains("node3 off: succeeded, last step: level 1 bmc-node3 off confirmed"),
        "{out:?}"
    );
    assert!(out.contains("\r\x1b[K"), "{out:?}");
    assert!(
        out.contains("node3 FENCED: power read back from bmc-node3 (level 1)"),
        "{out:?}"
    );
}

#[test]
fn fence_node_confirm_asks_on_a_terminal() {
    let h = Harness::start();
    if !hw_tests::require::needs_command("script", "Debian package bsdutils (util-linux)") {
        return;
    }
    let run = |answer: &str| {
        let cmd = format!(
            "{} --socket {} confirm node2 --reason 'cords pulled'",
            env!("CARGO_BIN_EXE_fence_node"),
            h.socket.display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), answer.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let o = run("n\n");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("[y/N]"), "{}", stdout(&o));
    let (_, hist) = h.json("GET", "/v1/history?target=node2", None);
    assert_eq!(
        hist.as_array().unwrap().len(),
        0,
        "declined, yet recorded: {hist}"
    );
    let o = run("y\n");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("node2 recorded as FENCED by manual confirmation"),
        "{}",
        stdout(&o)
    );
    let (_, hist) = h.json("GET", "/v1/history?target=node2", None);
    assert_eq!(hist[0]["outcome"]["confirmation"]["reason"], "cords pulled");
}

/// Sends one GET whose request head (request line, headers, blank line) is exactly `head_bytes`
/// long, in small writes (as a slow client would), and returns the answer's status code.
fn status_for_head_of(h: &Harness, head_bytes: usize) -> u16 {
    use std::io::{Read, Write};
    let start = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = head_bytes - start.len() - end.len();
    let req = format!("{start}{}{end}", "a".repeat(pad));
    assert_eq!(req.len(), head_bytes);
    let mut s = std::os::unix::net::UnixStream::connect(&h.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // 4 KiB writes: the server reads the head in many pieces, where a buffer check between
    // reads can let a larger head through.
    for chunk in req.as_bytes().chunks(4096) {
        if s.write_all(chunk).is_err() {
            break; // refused and closed before the whole head was sent
        }
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .unwrap_or_else(|| panic!("no HTTP answer for a {head_bytes}-byte head: {text:?}"));
    status.parse().unwrap()
}

#[test]
fn request_heads_up_to_64_kib_are_accepted_and_larger_ones_get_431() {
    let h = Harness::start();
    assert_eq!(status_for_head_of(&h, 63 * 1024), 200);
    assert_eq!(status_for_head_of(&h, 64 * 1024), 200, "the limit itself");
    assert_eq!(status_for_head_of(&h, 65 * 1024), 431);
    // Well under twice the limit: what a buffer-size check between reads let through.
    assert_eq!(status_for_head_of(&h, 100 * 1024), 431);
}

#[test]
fn a_batch_judges_each_entry_as_a_single_request_would() {
    let h = Harness::start();
    // node1: ok; nosuch: unknown; node3 off then on: the second conflicts with the first;
    // node1 again with the same action: joins the first entry's operation.
    let body = r#"{"requests":[
        {"target":"node1","action":"off","reason":"batch","request_id":"b-1"},
        {"target":"nosuch","action":"off","reason":"batch","request_id":"b-2"},
        {"target":"node3","action":"off","reason":"batch"},
        {"target":"node3","action":"on","reason":"batch"},
        {"target":"node1","action":"off","reason":"batch again","request_id":"b-5"}
    ]}"#;
    let (code, v) = h.json("POST", "/v1/fence/batch", Some(body));
    assert_eq!(code, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 5, "{v}");
    let targets: Vec<&str> = r.iter().map(|e| e["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["node1", "nosuch", "node3", "node3", "node1"]);

    assert_eq!(r[0]["status"], 202, "{v}");
    assert_eq!(r[0]["accepted"]["joined"], false, "{v}");
    assert_eq!(r[0]["request_id"], "b-1");
    assert!(r[0]["error"].is_null(), "{v}");

    assert_eq!(r[1]["status"], 404, "{v}");
    assert_eq!(r[1]["error"]["code"], "unknown_target", "{v}");
    assert!(r[1]["accepted"].is_null(), "{v}");

    assert_eq!(r[2]["status"], 202, "{v}");
    assert_eq!(r[2]["accepted"]["joined"], false, "{v}");
    assert_eq!(r[3]["status"], 409, "{v}");
    assert_eq!(r[3]["error"]["code"], "conflict", "{v}");
    assert!(
        r[3]["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("wait for operation"),
        "{v}"
    );

    assert_eq!(r[4]["status"], 202, "{v}");
    assert_eq!(r[4]["accepted"]["joined"], true, "{v}");
    assert_eq!(r[4]["accepted"]["id"], r[0]["accepted"]["id"], "{v}");

    // Each accepted entry is an operation of its own, followed like a single request's.
    let n1 = r[0]["accepted"]["id"].as_u64().unwrap();
    let n3 = r[2]["accepted"]["id"].as_u64().unwrap();
    assert_ne!(n1, n3);
    for id in [n1, n3] {
        let (_, op) = h.json("GET", &format!("/v1/operations/{id}?wait=20"), None);
        assert_eq!(op["state"], "succeeded", "{op}");
        assert_eq!(op["outcome"]["confirmation"]["method"], "power_read_back");
    }
    let (_, op) = h.json("GET", &format!("/v1/operations/{n1}"), None);
    assert_eq!(op["request_id"], "b-1", "{op}");
    // Nothing ran on node3 but the off: the conflicting `on` started nothing.
    let (_, hist) = h.json("GET", "/v1/history?target=node3", None);
    assert_eq!(hist.as_array().unwrap().len(), 1, "{hist}");
    let (_, t) = h.json("GET", "/v1/targets/node3?live=true", None);
    assert_eq!(t["live"][0]["state"], "off", "{t}");

    // Request ids are per entry: the join's id now names node1's operation too.
    let (code, again) = h.json(
        "POST",
        "/v1/fence",
        Some(r#"{"target":"node1","action":"off","reason":"t","request_id":"b-5"}"#),
    );
    assert_eq!(code, 202, "{again}");
    assert_eq!(again["id"], n1, "{again}");
    assert_eq!(again["joined"], true);

    // Every entry was audited as a request of its own, refusals included.
    let (_, ledger) = h.json("GET", "/v1/ledger?limit=1000", None);
    let audits: Vec<&Value> = ledger
        .as_array()
        .unwrap()
        .iter()
        .filter(|rec| rec["entry"]["kind"] == "audit")
        .collect();
    let outcomes = |what: &str| -> Vec<String> {
        audits
            .iter()
            .filter(|a| a["entry"]["what"] == what)
            .map(|a| a["entry"]["outcome"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(outcomes("fence nosuch off").len(), 1, "{ledger}");
    assert!(outcomes("fence node3 on")[0].starts_with("refused: conflict"));
    assert_eq!(outcomes("fence node1 off").len(), 3, "{ledger}");

    // The batch itself must be 1..=MAX_BATCH entries and well-formed.
    let (code, body) = h.curl("POST", "/v1/fence/batch", Some(r#"{"requests":[]}"#));
    assert_error(code, &body, 400, "bad_request");
    let many = format!(
        r#"{{"requests":[{}]}}"#,
        vec![r#"{"target":"node1","action":"off"}"#; fenced::api::MAX_BATCH + 1].join(",")
    );
    let (code, body) = h.curl("POST", "/v1/fence/batch", Some(&many));
    let err = assert_error(code, &body, 400, "bad_request");
    assert!(
        err["message"].as_str().unwrap().contains("1 to 1000"),
        "{err}"
    );
    let (code, body) = h.curl(
        "POST",
        "/v1/fence/batch",
        Some(r#"{"requests":[{"target":"node1","action":"explode"}]}"#),
    );
    assert_error(code, &body, 400, "bad_request");
}

#[test]
fn fence_node_fences_many_targets_in_one_batch() {
    let h = Harness::start();
    let list = h.dir.path().join("rack.txt");
    std::fs::write(&list, "# rack 7\nnode3\n\n  node4  \n").unwrap();
    let o = h.fence_node(&[
        "off",
        "node1",
        "--targets-from",
        list.to_str().unwrap(),
        "--reason",
        "rack 7 lost its network",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for node in ["node1", "node3", "node4"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no line for {node}: {out}"));
        assert!(
            line.contains("FENCED") && line.contains("power read back"),
            "{line}"
        );
    }
    assert!(out.contains("all 3 targets confirmed fenced"), "{out}");

    // One that never confirms and one unknown: exit 1, and the table says which.
    let o = h.fence_node(&["off", "node1", "node2", "nosuch"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    let line = |node: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .unwrap_or_else(|| panic!("no line for {node}: {out}"))
            .to_string()
    };
    assert!(line("node1").contains(" FENCED "), "{out}");
    assert!(line("node2").contains("NOT FENCED"), "{out}");
    assert!(line("nosuch").contains("REFUSED"), "{out}");
    assert!(line("nosuch").contains("unknown_target"), "{out}");
    assert!(out.contains("2 of 3 targets NOT confirmed fenced"), "{out}");

    // --json: one result per target with its operation.
    let o = h.fence_node(&["--json", "off", "node1", "nosuch"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["results"][0]["confirmed"], true, "{v}");
    assert_eq!(v["results"][0]["operation"]["state"], "succeeded", "{v}");
    assert_eq!(v["results"][1]["status"], 404, "{v}");
    assert_eq!(v["results"][1]["confirmed"], false, "{v}");

    // A bad line in the file is a usage error that names the file and line.
    std::fs::write(&list, "node1\nnode3 node4\n").unwrap();
    let o = h.fence_node(&["off", "--targets-from", list.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{}:2: expected one target name", list.display())),
        "{}",
        stderr(&o)
    );
    std::fs::write(&list, "# nothing\n").unwrap();
    let o = h.fence_node(&["off", "--targets-from", list.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no target to fence"), "{}", stderr(&o));
}
