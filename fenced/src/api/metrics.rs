//! `/metrics` in the Prometheus text exposition format 0.0.4.

use crate::engine::{Engine, Histogram, Metrics, WitnessInfo, CONFIRM_BUCKETS_MS};
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

    let devices: Vec<String> = engine.device_health().into_iter().map(|(d, _)| d).collect();
    render_confirmation(&mut p, &m, &devices, &engine.witnesses());

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

/// One histogram of [`CONFIRM_BUCKETS_MS`] with its labels, cumulative as the format wants.
fn histogram(p: &mut Page, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let mut cumulative = 0;
    for (i, bound) in CONFIRM_BUCKETS_MS.iter().enumerate() {
        cumulative += h.buckets[i];
        let le = (*bound as f64 / 1000.0).to_string();
        let mut l = labels.to_vec();
        l.push(("le", &le));
        p.sample(&format!("{name}_bucket"), &l, cumulative);
    }
    let mut l = labels.to_vec();
    l.push(("le", "+Inf"));
    p.sample(&format!("{name}_bucket"), &l, h.count);
    p.sample(&format!("{name}_sum"), labels, h.sum_ms as f64 / 1000.0);
    p.sample(&format!("{name}_count"), labels, h.count);
}

/// The confirmation series: time to confirmed off per device and per witness, witness
/// verdicts, lying devices and witnesses that cannot observe. Counters start at 0 for every
/// configured device and witness, so an alert on their `increase` sees the first event too.
fn render_confirmation(p: &mut Page, m: &Metrics, devices: &[String], witnesses: &[WitnessInfo]) {
    let name = "palisade_device_confirm_seconds";
    p.family(
        name,
        "histogram",
        "Time from a device's off step start to its level's off standing (read back and, under confirm = \"device+witness\", every witness silent), by device, seconds. An off a witness refused is not counted.",
    );
    for (device, h) in &m.device_confirm_ms {
        histogram(p, name, &[("device", device)], h);
    }

    let name = "palisade_witness_seconds";
    p.family(
        name,
        "histogram",
        "Time from a witness's start to its silent verdict (the node seen off), by witness and kind, seconds.",
    );
    for ((witness, kind), h) in &m.witness_confirm_ms {
        histogram(p, name, &[("witness", witness), ("kind", kind)], h);
    }

    let mut verdicts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for w in witnesses {
        for v in ["silent", "alive", "no_evidence"] {
            verdicts.insert((w.name.clone(), w.kind.clone(), v.to_string()), 0);
        }
    }
    for (k, n) in &m.witness_verdicts {
        *verdicts.entry(k.clone()).or_default() += n;
    }
    p.family(
        "palisade_witness_verdicts_total",
        "counter",
        "Witness observations by witness, kind and verdict (silent, alive: a veto, no_evidence: could not observe).",
    );
    for ((witness, kind, verdict), n) in &verdicts {
        p.sample(
            "palisade_witness_verdicts_total",
            &[("witness", witness), ("kind", kind), ("verdict", verdict)],
            n,
        );
    }

    let mut lies: BTreeMap<&str, u64> = devices.iter().map(|d| (d.as_str(), 0)).collect();
    for (d, n) in &m.lying_devices {
        *lies.entry(d.as_str()).or_default() += n;
    }
    p.family(
        "palisade_device_lies_total",
        "counter",
        "Times a device read back off while a witness saw its node alive (a lying device or the wrong outlet/BMC for the node), by device.",
    );
    for (device, n) in lies {
        p.sample("palisade_device_lies_total", &[("device", device)], n);
    }

    p.family(
        "palisade_witness_unavailable",
        "gauge",
        "1 for a configured witness that could not be built and can never observe (its target cannot be confirmed off), else 0; by target, witness and kind.",
    );
    for w in witnesses {
        p.sample(
            "palisade_witness_unavailable",
            &[
                ("target", &w.target),
                ("witness", &w.name),
                ("kind", &w.kind),
            ],
            u8::from(w.unavailable.is_some()),
        );
    }
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
    use super::*;

    #[test]
    fn confirmation_series_are_rendered_with_zeroes_for_every_device_and_witness() {
        let mut m = Metrics::default();
        let mut h = Histogram::default();
        h.push(40);
        h.push(3_200);
        m.device_confirm_ms.insert("pdu".into(), h.clone());
        m.witness_confirm_ms
            .insert(("n1-net".into(), "network".into()), h);
        m.witness_verdicts
            .insert(("n1-net".into(), "network".into(), "alive".into()), 2);
        m.lying_devices.insert("bmc".into(), 2);
        let witnesses = [
            WitnessInfo {
                target: "n1".into(),
                name: "n1-net".into(),
                kind: "network".into(),
                unavailable: None,
            },
            WitnessInfo {
                target: "n1".into(),
                name: "n1-hb".into(),
                kind: "disk-heartbeat".into(),
                unavailable: Some("cannot open /dev/sdz".into()),
            },
        ];
        let mut p = Page(String::new());
        render_confirmation(&mut p, &m, &["bmc".into(), "pdu".into()], &witnesses);
        let text = p.0;
        for line in [
            // 40 ms falls in the 50 ms bucket, 3.2 s in the 3.5 s one; buckets are cumulative.
            "palisade_device_confirm_seconds_bucket{device=\"pdu\",le=\"0.01\"} 0\n",
            "palisade_device_confirm_seconds_bucket{device=\"pdu\",le=\"0.05\"} 1\n",
            "palisade_device_confirm_seconds_bucket{device=\"pdu\",le=\"2.5\"} 1\n",
            "palisade_device_confirm_seconds_bucket{device=\"pdu\",le=\"3.5\"} 2\n",
            "palisade_device_confirm_seconds_bucket{device=\"pdu\",le=\"+Inf\"} 2\n",
            "palisade_device_confirm_seconds_sum{device=\"pdu\"} 3.24\n",
            "palisade_device_confirm_seconds_count{device=\"pdu\"} 2\n",
            "palisade_witness_seconds_count{witness=\"n1-net\",kind=\"network\"} 2\n",
            "palisade_witness_verdicts_total{witness=\"n1-net\",kind=\"network\",verdict=\"alive\"} 2\n",
            "palisade_witness_verdicts_total{witness=\"n1-net\",kind=\"network\",verdict=\"silent\"} 0\n",
            "palisade_witness_verdicts_total{witness=\"n1-hb\",kind=\"disk-heartbeat\",verdict=\"no_evidence\"} 0\n",
            "palisade_device_lies_total{device=\"bmc\"} 2\n",
            "palisade_device_lies_total{device=\"pdu\"} 0\n",
            "palisade_witness_unavailable{target=\"n1\",witness=\"n1-net\",kind=\"network\"} 0\n",
            "palisade_witness_unavailable{target=\"n1\",witness=\"n1-hb\",kind=\"disk-heartbeat\"} 1\n",
            "# TYPE palisade_device_confirm_seconds histogram\n",
            "# TYPE palisade_device_lies_total counter\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // No device without a confirmed off gets a histogram.
        assert!(!text.contains("palisade_device_confirm_seconds_count{device=\"bmc\"}"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
