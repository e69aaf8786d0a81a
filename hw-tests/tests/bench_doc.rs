//! docs/bench.md runs: every ```sh bench-example block is run with bash against the real
//! `palisade-lab`, must exit 0, and must print the lines of the ```text bench-output block
//! after it, in order (`...` matches any text within a line). So the page cannot drift.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_palisade-lab");
/// One example: start a lab, run a few clients, stop. fence agents take about a second each.
const EXAMPLE_DEADLINE: Duration = Duration::from_secs(60);

/// An example block and the output it must print.
struct Example {
    line: usize,
    script: String,
    expected: Vec<String>,
}

fn examples(doc: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        let tag = l.trim();
        if tag != "```sh bench-example" && tag != "```text bench-output" {
            continue;
        }
        let body: Vec<String> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| l.trim() != "```")
            .map(str::to_string)
            .collect();
        if tag == "```sh bench-example" {
            out.push(Example {
                line: i + 1,
                script: body.join("\n"),
                expected: Vec::new(),
            });
        } else {
            let ex = out.last_mut().unwrap_or_else(|| {
                panic!("docs/bench.md:{}: output block before any example", i + 1)
            });
            assert!(
                ex.expected.is_empty(),
                "docs/bench.md:{}: two output blocks for one example",
                i + 1
            );
            ex.expected = body;
        }
    }
    out
}

/// `pattern` with `...` as a wildcard, matched against a whole line.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    true
}

fn run_example(ex: &Example, bin_dir: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .args(["-eu", "-o", "pipefail", "-c", &ex.script])
        .current_dir(dir.path())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    // Kills the whole group (the lab the script started included) if we leave early.
    struct Group(u32);
    impl Drop for Group {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0)])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _group = Group(pid);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > EXAMPLE_DEADLINE {
            let _ = child.kill();
            panic!(
                "docs/bench.md:{}: the example did not finish within {EXAMPLE_DEADLINE:?}",
                ex.line
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(_group);
    let out = out_t.join().unwrap();
    let err = err_t.join().unwrap();
    assert!(
        status.success(),
        "docs/bench.md:{}: the example exited {status}\n--- stdout\n{out}\n--- stderr\n{err}",
        ex.line
    );
    let mut got = out.lines().map(str::trim_end);
    for want in &ex.expected {
        assert!(
            got.any(|l| line_matches(want, l)),
            "docs/bench.md:{}: expected the line `{want}` (in this order) in\n--- stdout\n{out}\n--- stderr\n{err}",
            ex.line
        );
    }
}

#[test]
fn every_example_of_the_bench_doc_runs_and_prints_what_the_doc_shows() {
    for tool in [
        "bash",
        "ipmitool",
        "fence_ipmilan",
        "fence_redfish",
        "fence_apc_snmp",
        "fence_wti",
        "snmpget",
        "snmpset",
        "redfishtool",
        "curl",
        "telnet",
    ] {
        if !hw_tests::require::needs_command(tool, "scripts/install-test-deps.sh") {
            return;
        }
    }
    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/bench.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let all = examples(&doc);
    assert!(all.len() >= 5, "docs/bench.md lost its examples");
    let bin_dir = Path::new(LAB).parent().unwrap().to_path_buf();
    // The examples are independent (free ports, their own directories): run them side by
    // side so the whole page takes about as long as its slowest example.
    std::thread::scope(|s| {
        let handles: Vec<_> = all
            .iter()
            .map(|ex| s.spawn(|| run_example(ex, &bin_dir)))
            .collect();
        let mut failed = Vec::new();
        for (ex, h) in all.iter().zip(handles) {
            if let Err(e) = h.join() {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("example at line {}: {msg}", ex.line));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    });
}

#[test]
fn wildcard_lines_match_as_the_doc_says() {
    assert!(line_matches("a...c", "abbbc"));
    assert!(line_matches(
        "\"PowerState\":...\"On\"",
        "\"PowerState\": \"On\""
    ));
    assert!(!line_matches("a...c", "abbbd"));
    assert!(line_matches("exact", "exact"));
    assert!(!line_matches("exact", "exactly"));
}
