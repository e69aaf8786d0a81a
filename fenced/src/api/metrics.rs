//! `/metrics` in the Prometheus text exposition format 0.0.4.

use crate::engine::Engine;
use crate::model::HealthState;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value (backslash, double quote, newline), as the format requires.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A metrics page being written.
pub(super) struct Page(pub(super) String);

impl Page {
    /// Starts a metric family: its help and type lines.
    pub(super) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample of a family.
    pub(super) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Renders every metric. `api_refused` counts requests the API layer refused before they
/// reached the engine (forbidden, malformed); the engine counts every request it refused.
pub fn render(engine: &Engine, api_refused: &BTreeMap<String, u64>) -> String {
    let m = engine.metrics();
    let mut p = Page(String::new());

    p.family(
        "palisade_operations_total",
        "counter",
        "Finished operations by action and outcome.",
    );
    for ((action, outcome), n) in &m.operations {
        p.sample(
            "palisade_operations_total",
            &[("action", action), ("outcome", outcome)],
            n,
        );
    }

    p.family(
        "palisade_operation_duration_seconds_total",
        "counter",
        "Sum of finished operations' durations (request to outcome) by action, seconds.",
    );
    for (action, ms) in &m.duration_ms_sum {
        p.sample(
            "palisade_operation_duration_seconds_total",
            &[("action", action)],
            *ms as f64 / 1000.0,
        );
    }

    p.family(
        "palisade_device_steps_total",
        "counter",
        "Device steps (command plus read-back) by device and result (`confirmed` or an error code).",
    );
    for ((device, result), n) in &m.steps {
        p.sample(
            "palisade_device_steps_total",
            &[("device", device), ("result", result)],
            n,
        );
    }

    p.family(
        "palisade_requests_refused_total",
        "counter",
        "API requests refused, by error code (conflict, paused, rate_limited, forbidden, bad_request, ...).",
    );
    let mut refused = m.refused.clone();
    for (code, n) in api_refused {
        *refused.entry(code.clone()).or_default() += n;
    }
    for (code, n) in &refused {
        p.sample("palisade_requests_refused_total", &[("code", code)], n);
    }

    p.family(
        "palisade_operations_in_flight",
        "gauge",
        "Operations in flight now.",
    );
    p.sample("palisade_operations_in_flight", &[], engine.in_flight());

    p.family(
        "palisade_paused",
        "gauge",
        "1 while fencing is paused by an operator, else 0.",
    );
    p.sample(
        "palisade_paused",
        &[],
        u8::from(engine.pause_status().paused),
    );

    p.family(
        "palisade_device_health",
        "gauge",
        "Last health check of each device: 1 on the line of its current state (healthy, unhealthy, unknown).",
    );
    for (device, health) in engine.device_health() {
        for (state, name) in [
            (HealthState::Healthy, "healthy"),
            (HealthState::Unhealthy, "unhealthy"),
            (HealthState::Unknown, "unknown"),
        ] {
            p.sample(
                "palisade_device_health",
                &[("device", &device), ("state", name)],
                u8::from(health == state),
            );
        }
    }

    p.family(
        "palisade_operations_interrupted_at_startup",
        "gauge",
        "Operations found in flight at start-up (the daemon had stopped during them) and recorded as failed.",
    );
    p.sample(
        "palisade_operations_interrupted_at_startup",
        &[],
        m.interrupted_at_startup,
    );
    p.0
}

/// Appends the API's security counters: failed authentications, sources refused for failing
/// too often, and connections refused by the listeners' bounds.
/// The fencer cluster's gauges (`[cluster]` only): members, quorum, operations in flight.
pub(crate) fn render_cluster(out: &mut String, st: &crate::cluster::ClusterStatus) {
    let mut p = Page(std::mem::take(out));
    p.family(
        "palisade_cluster_members",
        "gauge",
        "Members of the fencer cluster's CPG group as this member sees them.",
    );
    p.sample("palisade_cluster_members", &[], st.members.len());
    p.family(
        "palisade_cluster_quorate",
        "gauge",
        "1 when this node is quorate (votequorum), else 0: new operations are refused without quorum.",
    );
    p.sample("palisade_cluster_quorate", &[], u8::from(st.quorate));
    p.family(
        "palisade_cluster_joined",
        "gauge",
        "1 when this member holds the cluster's state and can take requests.",
    );
    p.sample("palisade_cluster_joined", &[], u8::from(st.joined));
    p.family(
        "palisade_cluster_in_flight",
        "gauge",
        "Cluster operations in flight, by executor.",
    );
    let mut by: BTreeMap<&str, u32> = BTreeMap::new();
    for op in &st.in_flight {
        *by.entry(op.executor.as_str()).or_default() += 1;
    }
    for (executor, n) in by {
        p.sample("palisade_cluster_in_flight", &[("executor", executor)], n);
    }
    *out = p.0;
}

pub(crate) fn render_security(out: &mut String, s: &super::ApiState) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut p = Page(std::mem::take(out));
    p.family(
        "palisade_api_auth_failures_total",
        "counter",
        "Requests whose bearer token or client certificate was not accepted.",
    );
    p.sample(
        "palisade_api_auth_failures_total",
        &[],
        s.auth_failures.failed_total.load(Relaxed),
    );
    p.family(
        "palisade_api_auth_failures_unaudited_total",
        "counter",
        "Failed authentications over the ledger's audit budget, counted here but not recorded one by one.",
    );
    p.sample(
        "palisade_api_auth_failures_unaudited_total",
        &[],
        s.auth_failures.unaudited_total.load(Relaxed),
    );
    p.family(
        "palisade_api_auth_rate_limited_total",
        "counter",
        "Requests refused because their source failed to authenticate too often in the last minute.",
    );
    p.sample(
        "palisade_api_auth_rate_limited_total",
        &[],
        s.auth_failures.limited_total.load(Relaxed),
    );
    p.family(
        "palisade_api_connections_refused_total",
        "counter",
        "Connections closed by the listeners' bounds, by reason.",
    );
    p.sample(
        "palisade_api_connections_refused_total",
        &[("reason", "over_limit")],
        s.conns.over_limit.load(Relaxed),
    );
    p.sample(
        "palisade_api_connections_refused_total",
        &[("reason", "tls_handshake")],
        s.conns.handshake_failed.load(Relaxed),
    );
    s.step_times.render(&mut p);
    s.ledger_watch.render(&mut p);
    *out = p.0;
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
