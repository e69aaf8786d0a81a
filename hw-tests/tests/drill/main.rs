//! The failover drill, each variant once: the safe controller fails over only after fenced
//! confirmed node A off (the volume shows one writer at a time); a controller that skips
//! fencing corrupts the volume (and the checker sees it); a stuck BMC keeps the workload down.
//! Timelines are printed, never asserted (the machine is noisy); `examples/drill.rs` gives
//! medians.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::drill::controller::{Decision, FenceOutcome};
use hw_tests::drill::failover::{self, Bins, DrillResult, Knobs, Variant};

fn drill(variant: Variant) -> DrillResult {
    let bins = Bins {
        fenced: hw_tests::bins::fenced(),
        workload: env!("CARGO_BIN_EXE_palisade-workload").into(),
    };
    let r = failover::run(variant, &Knobs::default(), &bins).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "drill {variant:?}: {:?}\n{}  volume: {}",
        r.decision,
        r.timeline.report(),
        r.verdict.summary()
    );
    r
}

#[test]
fn fenced_failover_never_lets_two_copies_write() {
    let r = drill(Variant::Fenced);
    assert_eq!(r.decision, Decision::FailedOver, "{}", r.fenced_log);
    assert!(
        matches!(&r.timeline.fence_outcome, Some(FenceOutcome::Fenced { confirmation }) if confirmation == "power_read_back"),
        "{:?}",
        r.timeline.fence_outcome
    );
    assert!(r.verdict.is_clean(), "{:?}", r.verdict);
    assert!(r.verdict.count("node2") > 0, "B wrote: {:?}", r.verdict);
    assert!(r.a_records_after_cut > 0, "A kept writing while cut off");
    assert_eq!(
        r.a_powered,
        (false, false),
        "A is off, by its BMC and for real"
    );
    // The order the controller promises: A's last write, then the confirmation, then B.
    let t = &r.timeline;
    assert!(t.primary_last_record < t.fence_answered, "{}", t.report());
    assert!(t.fence_answered < t.standby_started, "{}", t.report());
    assert!(t.standby_started < t.standby_first_record, "{}", t.report());
}

#[test]
fn skipping_fencing_corrupts_the_volume_and_the_checker_sees_it() {
    let r = drill(Variant::SkipFencing);
    assert_eq!(r.decision, Decision::FailedOver);
    assert_eq!(r.timeline.fence_requests, 0);
    assert_eq!(r.a_powered, (true, true), "nobody stopped A");
    assert!(r.verdict.count("node2") > 0);
    assert!(
        !r.verdict.first_after_second.is_empty(),
        "A's records after B's first must be found: {:?}",
        r.verdict
    );
    assert!(!r.verdict.is_clean());
}

#[test]
fn stuck_bmc_keeps_the_workload_down() {
    let r = drill(Variant::StuckBmc);
    assert!(
        matches!(&r.decision, Decision::KeptDown { reason } if reason.contains("not confirmed off")),
        "{:?}\n{}",
        r.decision,
        r.fenced_log
    );
    assert!(
        matches!(&r.timeline.fence_outcome, Some(FenceOutcome::Failed { .. })),
        "{:?}",
        r.timeline.fence_outcome
    );
    assert_eq!(r.timeline.fence_requests, 2, "retried once, then gave up");
    assert!(r.timeline.standby_started.is_none(), "B never started");
    assert_eq!(
        r.verdict.count("node2"),
        0,
        "only A's records: {:?}",
        r.verdict
    );
    assert!(r.verdict.is_clean(), "{:?}", r.verdict);
    assert_eq!(r.a_powered, (true, true), "the stuck BMC left A running");
    assert!(r.a_records_after_cut > 0);
}

/// A fake fencer API on a Unix socket: each connection gets `answer(method)` as the HTTP
/// response (status, JSON-ish body).
fn fake_fencer(
    dir: &std::path::Path,
    answer: impl Fn(&str) -> (u16, String) + Send + 'static,
) -> std::path::PathBuf {
    use std::io::{Read, Write};
    let path = dir.join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body its content-length announces.
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let method = String::from_utf8_lossy(&req)
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string();
            let (status, body) = answer(&method);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    path
}

fn operation(state: &str, outcome: Option<&str>) -> String {
    let mut op = serde_json::json!({
        "id": 5, "target": "node1", "action": "off", "reason": "r",
        "requested_by": {"identity": "uid:0"}, "state": state,
        "created_ms": 1, "delay_ms": 0, "attempts": [],
    });
    if let Some(o) = outcome {
        op["outcome"] = serde_json::from_str(o).unwrap();
    }
    op.to_string()
}

/// The controller's API side must never read "fenced" into anything but a confirmed success:
/// an unreachable daemon, garbage, a success without its confirmation, a malformed outcome
/// and an operation that never ends are all "not fenced".
#[test]
fn api_fencer_reads_nothing_but_a_confirmed_success_as_fenced() {
    use hw_tests::drill::controller::Fencer;
    use hw_tests::drill::fencer::ApiFencer;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let not_fenced = |o: &FenceOutcome| !matches!(o, FenceOutcome::Fenced { .. });

    let mut gone = ApiFencer::new(tmp.path().join("nobody.sock")).unwrap();
    assert!(gone.request_off("node1", "r", "k").is_err());
    let o = gone.wait(5, Duration::from_millis(500));
    assert!(matches!(o, FenceOutcome::Unknown { .. }), "{o:?}");

    let cases: Vec<(&str, String)> = vec![
        ("garbage", "<html>oops</html>".into()),
        ("success without confirmation", operation("succeeded", None)),
        (
            "outcome missing its confirmation",
            operation(
                "succeeded",
                Some(r#"{"outcome":"succeeded","summary":"trust me"}"#),
            ),
        ),
        (
            "succeeded state with a failed outcome",
            operation(
                "succeeded",
                Some(r#"{"outcome":"failed","code":"x","message":"y"}"#),
            ),
        ),
        ("never ends", operation("running", None)),
        (
            "failed",
            operation(
                "failed",
                Some(r#"{"outcome":"failed","code":"all_levels_failed","message":"stuck"}"#),
            ),
        ),
    ];
    for (i, (what, get_body)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        std::fs::create_dir(&dir).unwrap();
        let sock = fake_fencer(&dir, move |method| match method {
            "POST" => (202, r#"{"id":5,"state":"running","joined":false}"#.into()),
            _ => (200, get_body.clone()),
        });
        let mut f = ApiFencer::new(sock).unwrap();
        let id = f.request_off("node1", "r", "k").unwrap();
        let o = f.wait(id, Duration::from_millis(1500));
        assert!(not_fenced(&o), "{what}: {o:?}");
        if what == "failed" {
            assert!(
                matches!(&o, FenceOutcome::Failed { code, .. } if code == "all_levels_failed"),
                "{o:?}"
            );
        }
    }

    // And the honest answer is read as fenced (the fake is otherwise the same).
    let dir = tmp.path().join("honest");
    std::fs::create_dir(&dir).unwrap();
    let sock = fake_fencer(&dir, |method| match method {
        "POST" => (202, r#"{"id":5,"state":"running","joined":false}"#.into()),
        _ => (
            200,
            operation(
                "succeeded",
                Some(
                    r#"{"outcome":"succeeded","summary":"s","powered_on":null,"confirmation":{"method":"power_read_back","level":1,"devices":["bmc-node1"],"already":false}}"#,
                ),
            ),
        ),
    });
    let mut f = ApiFencer::new(sock).unwrap();
    let id = f.request_off("node1", "r", "k").unwrap();
    assert_eq!(
        f.wait(id, Duration::from_secs(5)),
        FenceOutcome::Fenced {
            confirmation: "power_read_back".into()
        }
    );
}
