//! The `fenced` binary: check-config, and run (serve, sd_notify READY, stop on SIGTERM).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FENCED: &str = env!("CARGO_BIN_EXE_fenced");
const FENCE_NODE: &str = env!("CARGO_BIN_EXE_fence_node");

#[test]
fn check_config_prints_a_summary_or_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[devices.bmc1]\nkind = \"ipmi\"\naddress = \"192.0.2.10\"\nusername = \"admin\"\npassword_file = \"{}\"\n\n[targets.node1]\nlevels = [[\"bmc1\"]]\n",
            pw.display()
        ),
    )
    .unwrap();
    let o = Command::new(FENCED)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("valid"), "{out}");
    assert!(out.contains("bmc1: ipmi at 192.0.2.10:623"), "{out}");
    assert!(out.contains("level 1: bmc1"), "{out}");
    assert!(!out.contains("secret"), "a password was printed: {out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[targets.node1]\nlevels = [[\"nosuch\"]]\n").unwrap();
    let o = Command::new(FENCED)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml") && err.contains("nosuch"), "{err}");
}

#[test]
fn run_serves_notifies_systemd_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/fenced.sock");
    let config = dir.path().join("fenced.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nsocket = \"{}\"\nhistory = \"{}\"\n",
            sock.display(),
            dir.path().join("history.redb").display()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(FENCED)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");

    let o = Command::new(FENCE_NODE)
        .arg("--socket")
        .arg(&sock)
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fenced did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists(), "socket left behind");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains("fenced ready") && logs.contains("SIGTERM"),
        "{logs}"
    );
}

#[test]
fn run_records_operations_interrupted_by_a_crash() {
    use fenced::model::*;
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.redb");
    {
        // A daemon that died while fencing node1 left this behind.
        let (h, _) = fenced::history::History::open(&history, 1_000).unwrap();
        h.record(&Operation {
            id: 7,
            target: "node1".into(),
            action: Action::Off,
            reason: "lost heartbeat".into(),
            requested_by: Caller {
                identity: "uid:0".into(),
            },
            request_id: None,
            state: OpState::Running,
            created_ms: 1_000,
            started_ms: Some(1_000),
            finished_ms: None,
            delay_ms: 0,
            attempts: vec![],
            pending: vec![],
            witnesses: Vec::new(),
            outcome: None,
            cluster: None,
        })
        .unwrap();
    }
    let sock = dir.path().join("fenced.sock");
    let config = dir.path().join("fenced.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nsocket = \"{}\"\nhistory = \"{}\"\n",
            sock.display(),
            history.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(FENCED)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !sock.exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&sock)
        .arg("http://localhost/metrics")
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    let op = Command::new(FENCE_NODE)
        .arg("--socket")
        .arg(&sock)
        .args(["--json", "history"])
        .output()
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut logs).unwrap();
    assert!(status.success());
    assert!(
        metrics.contains("\npalisade_operations_interrupted_at_startup 1\n"),
        "{metrics}"
    );
    assert!(
        logs.contains("operation 7 on node1 was in flight"),
        "{logs}"
    );
    let ops: serde_json::Value = serde_json::from_slice(&op.stdout).unwrap();
    assert_eq!(ops[0]["id"], 7);
    assert_eq!(ops[0]["state"], "failed");
    assert_eq!(ops[0]["outcome"]["code"], "interrupted");
}
