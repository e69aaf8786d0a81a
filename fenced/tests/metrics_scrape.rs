//! The alert rules shipped in the package (packaging/prometheus/palisade.rules.yml) against the
//! real thing: `promtool check rules` and `promtool test rules` (Debian `prometheus`), and a
//! real `fenced run` fencing lab BMCs (one fence confirmed, one failed on a stuck BMC, one
//! device refusing logins) whose `/metrics` must hold every series the rules select. The
//! rules file is parsed for its selectors, so a rule naming a metric fenced does not export
//! fails here, whoever adds it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{text, Fenced};
use drivers::Secret;
use hw_tests::lab::{BackgroundLab, Fault, LabSpec};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PASSWORD: &str = "lab-pw-metrics";

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

fn rules_file() -> PathBuf {
    prometheus_dir().join("palisade.rules.yml")
}

/// One series selector of a rule expression: the metric name and its equality matchers.
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    name: String,
    labels: Vec<(String, String)>,
}

/// The `expr` of every rule, joined into one line each (plain or folded YAML scalars).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        i += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if matches!(rest, ">" | ">-" | "|" | "|-") {
            let mut e = String::new();
            while i < lines.len()
                && (lines[i].trim().is_empty()
                    || lines[i].len() - lines[i].trim_start().len() > indent)
            {
                e.push_str(lines[i].trim());
                e.push(' ');
                i += 1;
            }
            out.push(e);
        } else {
            out.push(rest.trim_matches('\'').to_string());
        }
    }
    out
}

/// Reads a double- or single-quoted PromQL string starting at `chars[*i]`; returns its text.
fn quoted(chars: &[char], i: &mut usize) -> String {
    let q = chars[*i];
    *i += 1;
    let mut s = String::new();
    while *i < chars.len() && chars[*i] != q {
        if chars[*i] == '\\' {
            *i += 1;
        }
        if let Some(c) = chars.get(*i) {
            s.push(*c);
        }
        *i += 1;
    }
    *i += 1;
    s
}

/// The series selectors of a PromQL expression: identifiers that are neither functions (a
/// `(` follows), keywords, label names (inside `{}` or a `by (...)` list) nor durations.
fn selectors(expr: &str) -> Vec<Selector> {
    // Aggregations may put `by (...)` between their name and their `(`.
    const KEYWORDS: [&str; 17] = [
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out: Vec<Selector> = Vec::new();
    let mut i = 0;
    // Whether the last token was a selector's name (its `{...}` follows).
    let mut after_name = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            quoted(&chars, &mut i);
            after_name = false;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            after_name = false;
        } else if c == '{' {
            i += 1;
            let mut labels = Vec::new();
            loop {
                while i < chars.len() && (chars[i] == ',' || chars[i].is_whitespace()) {
                    i += 1;
                }
                if i >= chars.len() || chars[i] == '}' {
                    i += 1;
                    break;
                }
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let key: String = chars[start..i].iter().collect();
                let op_start = i;
                while i < chars.len() && matches!(chars[i], '=' | '!' | '~' | ' ') {
                    i += 1;
                }
                let op: String = chars[op_start..i].iter().collect();
                let value = quoted(&chars, &mut i);
                if op.trim() == "=" {
                    labels.push((key, value));
                }
            }
            if after_name {
                out.last_mut().unwrap().labels = labels;
            }
            after_name = false;
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`10m`).
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            after_name = false;
        } else if c.is_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = chars.get(j) == Some(&'(');
            after_name = false;
            if GROUPING.contains(&word.as_str()) {
                // Its label list.
                if call {
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                }
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                out.push(Selector {
                    name: word,
                    labels: Vec::new(),
                });
                after_name = true;
            }
        } else {
            i += 1;
            if !c.is_whitespace() {
                after_name = false;
            }
        }
    }
    out
}

/// One sample line of the exposition format: its name and labels.
fn parse_sample(line: &str) -> Option<Selector> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_string();
    let mut labels = Vec::new();
    if line[end..].starts_with('{') {
        let chars: Vec<char> = line[end + 1..].chars().collect();
        let mut i = 0;
        while i < chars.len() && chars[i] != '}' {
            let start = i;
            while chars[i] != '=' {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            i += 1;
            let value = quoted(&chars, &mut i);
            labels.push((key, value));
            if chars.get(i) == Some(&',') {
                i += 1;
            }
        }
    }
    Some(Selector { name, labels })
}

/// The sample whose name and labels match `s` (every equality matcher of `s` present).
fn find<'a>(page: &'a [(Selector, f64)], s: &Selector) -> Option<&'a (Selector, f64)> {
    page.iter()
        .find(|(p, _)| p.name == s.name && s.labels.iter().all(|l| p.labels.contains(l)))
}

fn scrape(fenced: &Fenced) -> Vec<(Selector, f64)> {
    let o = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--unix-socket"])
        .arg(fenced.socket())
        .arg("http://localhost/metrics")
        .output()
        .unwrap();
    assert!(o.status.success(), "/metrics: {}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let s = parse_sample(l)?;
            let v = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((s, v))
        })
        .collect()
}

fn sel(name: &str, labels: &[(&str, &str)]) -> Selector {
    Selector {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn the_rule_parser_finds_selectors_not_functions_keywords_or_labels() {
    let e = rule_exprs(
        "      - alert: A\n        expr: >-\n          increase(m_a{x=\"1\", y!=\"2\"}[10m]) > 0\n          or (m_b > 0 unless m_b offset 10m)\n        for: 5m\n      - alert: B\n        expr: time() - m_c > 3600\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(
        selectors(&e[0]),
        vec![sel("m_a", &[("x", "1")]), sel("m_b", &[]), sel("m_b", &[])]
    );
    assert_eq!(selectors(&e[1]), vec![sel("m_c", &[])]);
    assert_eq!(
        selectors("sum by (device) (rate(m_d{a='b'}[5m])) / 2"),
        vec![sel("m_d", &[("a", "b")])]
    );
    assert_eq!(
        parse_sample("m_e{device=\"b,1\",le=\"+Inf\"} 3"),
        Some(sel("m_e", &[("device", "b,1"), ("le", "+Inf")]))
    );
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    if !hw_tests::require::needs_command("promtool", "Debian package prometheus") {
        return;
    }
    for args in [
        vec!["check", "rules", "palisade.rules.yml"],
        vec!["test", "rules", "palisade.rules.test.yml"],
    ] {
        let o = Command::new("promtool")
            .args(&args)
            .current_dir(prometheus_dir())
            .output()
            .unwrap();
        assert!(o.status.success(), "promtool {args:?}: {}", text(&o));
        print!("{}", String::from_utf8_lossy(&o.stdout));
    }
}

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn fenced_exports_every_series_the_alert_rules_select() {
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    let wanted: Vec<Selector> = rule_exprs(&rules)
        .iter()
        .flat_map(|e| selectors(e))
        .collect();
    // 10 rules selecting 16 series (as of the witness alerts): fewer means one went missing.
    assert!(
        rule_exprs(&rules).len() >= 10 && wanted.len() >= 16,
        "the rules select {wanted:?}"
    );
    for s in &wanted {
        assert!(
            s.name.starts_with("palisade_"),
            "the rules select only fenced's own metrics: {s:?}"
        );
    }

    // node1 fences honestly; node2's BMC acknowledges and never changes power (a failed
    // fence); node3's stops answering (its device turns unhealthy at the next check); node4's
    // lies (reports off, changes nothing), and its network witness, a closed port on this
    // machine that answers with RSTs, sees it alive: a veto, a lie counted.
    let lab = BackgroundLab::start(LabSpec::new(
        4,
        "admin",
        Secret::new(PASSWORD.as_bytes().to_vec()),
    ))
    .unwrap();
    lab.bmc("node2").unwrap().set_fault(Fault::Stuck(true));
    lab.bmc("node4").unwrap().set_fault(Fault::Lies(true));
    // A port nobody listens on: the kernel refuses connects to it, which a witness reads as a
    // running node.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_secret(&d.join("pw"), &format!("{PASSWORD}\n"));
    let mut cfg = format!(
        "[daemon]\nsocket = \"{d}/fenced.sock\"\nhistory = \"{d}/history.redb\"\nledger_key = \"{d}/ledger.key\"\n\n\
         [defaults]\nattempt_timeout_s = 3\ntotal_timeout_s = 6\n\n",
        d = d.display()
    );
    for b in lab.bmcs() {
        cfg.push_str(&format!(
            "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = \"{d}/pw\"\ncipher_suite = 17\ntimeout_ms = 300\nretries = 1\nmonitor_interval_s = 1\n\n[targets.{n}]\nlevels = [[\"bmc-{n}\"]]\nidentities = {{ bmc-{n} = \"{g}\" }}\n\n",
            n = b.name(),
            a = b.addr(),
            g = b.guid_text(),
            d = d.display(),
        ));
    }
    cfg.push_str(&format!(
        "[witnesses.node4-net]\nkind = \"network\"\naddresses = [\"{closed}\"]\nsettle_s = 1\nprobe_timeout_ms = 200\ninterval_ms = 200\n\n"
    ));
    cfg = cfg.replace(
        "[targets.node4]\n",
        "[targets.node4]\nconfirm = \"device+witness\"\nwitnesses = [\"node4-net\"]\n",
    );
    let config = d.join("fenced.toml");
    std::fs::write(&config, cfg).unwrap();
    let fenced = Fenced::start(d, &config);
    lab.bmc("node3").unwrap().set_fault(Fault::Crash(true));

    let ok = fenced.json(&["off", "node1", "--reason", "metrics scrape test"]);
    assert_eq!(ok["state"], "succeeded", "{ok}");
    let failed = fenced.json(&["off", "node2", "--reason", "metrics scrape test"]);
    assert_eq!(failed["state"], "failed", "{failed}");
    let vetoed = fenced.json(&["off", "node4", "--reason", "metrics scrape test"]);
    assert_eq!(vetoed["state"], "failed", "{vetoed}");
    let paused = fenced.fence_node(&["pause", "--reason", "metrics scrape test"]);
    assert!(paused.status.success(), "{}", text(&paused));

    // The ledger check runs at start; the health monitor every second.
    let until = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = scrape(&fenced);
        let ready = [
            sel("palisade_ledger_intact", &[]),
            sel(
                "palisade_device_health",
                &[("device", "bmc-node3"), ("state", "unhealthy")],
            ),
        ]
        .iter()
        .all(|s| find(&page, s).is_some_and(|(_, v)| *v == 1.0));
        if ready {
            break page;
        }
        assert!(
            Instant::now() < until,
            "no ledger check or no unhealthy bmc-node3 after 20 s: {page:?}\n{}",
            fenced.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    for s in &wanted {
        assert!(
            find(&page, s).is_some(),
            "the rules select {s:?}, which fenced does not export: {page:?}"
        );
    }
    // And the values say what happened.
    for (s, want) in [
        (
            sel(
                "palisade_operations_total",
                &[("action", "off"), ("outcome", "failed")],
            ),
            2.0,
        ),
        (
            sel(
                "palisade_operations_total",
                &[("action", "off"), ("outcome", "succeeded")],
            ),
            1.0,
        ),
        (
            sel(
                "palisade_device_step_duration_seconds_count",
                &[("device", "bmc-node1"), ("phase", "off")],
            ),
            1.0,
        ),
        (sel("palisade_paused", &[]), 1.0),
        // Time to confirmed off: the honest BMC once; the liar's vetoed off is not counted.
        (
            sel(
                "palisade_device_confirm_seconds_count",
                &[("device", "bmc-node1")],
            ),
            1.0,
        ),
        (
            sel("palisade_device_lies_total", &[("device", "bmc-node4")]),
            1.0,
        ),
        (
            sel("palisade_device_lies_total", &[("device", "bmc-node1")]),
            0.0,
        ),
        (
            sel(
                "palisade_witness_verdicts_total",
                &[
                    ("witness", "node4-net"),
                    ("kind", "network"),
                    ("verdict", "alive"),
                ],
            ),
            1.0,
        ),
        (
            sel(
                "palisade_witness_verdicts_total",
                &[("witness", "node4-net"), ("verdict", "no_evidence")],
            ),
            0.0,
        ),
        (
            sel(
                "palisade_witness_unavailable",
                &[("target", "node4"), ("witness", "node4-net")],
            ),
            0.0,
        ),
        (sel("palisade_ledger_intact", &[]), 1.0),
        (
            sel(
                "palisade_device_health",
                &[("device", "bmc-node1"), ("state", "healthy")],
            ),
            1.0,
        ),
    ] {
        let got = find(&page, &s).map(|(_, v)| *v);
        assert_eq!(got, Some(want), "{s:?}");
    }
    // Neither the liar's off (vetoed) nor the stuck BMC's counts as a confirmation.
    assert!(find(
        &page,
        &sel(
            "palisade_device_confirm_seconds_count",
            &[("device", "bmc-node4")]
        )
    )
    .is_none());
    // The stuck BMC's step was not confirmed: no duration recorded for it.
    assert!(find(
        &page,
        &sel(
            "palisade_device_step_duration_seconds_count",
            &[("device", "bmc-node2")]
        )
    )
    .is_none());
    let ts = find(
        &page,
        &sel("palisade_ledger_last_check_timestamp_seconds", &[]),
    )
    .unwrap()
    .1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - ts).abs() < 60.0,
        "last check at {ts}, now {now}: the rule compares it with time()"
    );
    println!(
        "metrics scrape: {} selectors of {} rules found among {} samples",
        wanted.len(),
        rule_exprs(&rules).len(),
        page.len()
    );
}
