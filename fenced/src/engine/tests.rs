//! Engine tests that try to make it lie: every path that can say "fenced" is attacked with a
//! device that lies, hangs, errors or answers garbage, and must end in the honest outcome.

use super::testdev::{Fault, TestDevice};
use super::*;
use crate::config::{ApiConfig, DaemonConfig, LevelEntry, Limits, Role, Timing};
use drivers::{PowerCommand, PowerState};
use std::time::Duration;

pub(crate) struct Rig {
    pub engine: Engine,
    pub _dir: tempfile::TempDir,
}

pub(crate) fn target(name: &str, levels: &[&[&str]]) -> TargetConfig {
    TargetConfig {
        name: name.into(),
        levels: levels
            .iter()
            .map(|l| {
                l.iter()
                    .map(|d| match d.split_once(':') {
                        Some((d, p)) => LevelEntry {
                            device: d.into(),
                            port: Some(p.into()),
                        },
                        None => LevelEntry {
                            device: (*d).into(),
                            port: None,
                        },
                    })
                    .collect()
            })
            .collect(),
        identities: Default::default(),
        timing: Timing {
            attempt_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            delay: Duration::ZERO,
            random_delay: Duration::ZERO,
        },
        confirm: Default::default(),
        witnesses: Vec::new(),
    }
}

pub(crate) fn config(targets: Vec<TargetConfig>, dir: &std::path::Path) -> Config {
    Config {
        source: dir.join("test.toml"),
        daemon: DaemonConfig {
            socket: dir.join("s"),
            history: dir.join("h.redb"),
            node_name: "test".into(),
            ledger_key: "/nonexistent/ledger.key".into(),
        },
        api: ApiConfig {
            tcp: None,
            tcp_role: Role::Read,
            socket_mode: 0o660,
            admin_uids: vec![],
            fence_uids: vec![],
            read_uids: vec![],
            admin_gids: vec![],
            fence_gids: vec![],
            read_gids: vec![],
            security: Default::default(),
        },
        limits: Limits {
            window: Duration::from_secs(600),
            max_operations: 100,
            max_operations_per_target: 100,
            request_id_window: Duration::from_secs(300),
        },
        devices: Default::default(),
        witnesses: Default::default(),
        targets: targets.into_iter().map(|t| (t.name.clone(), t)).collect(),
        board: None,
        cluster: None,
    }
}

pub(crate) fn rig_in(dir: tempfile::TempDir, cfg: Config, devs: &[(&str, &TestDevice)]) -> Rig {
    let (history, interrupted) = History::open(&cfg.daemon.history, 0).unwrap();
    let devices = devs
        .iter()
        .map(|(n, d)| {
            (
                n.to_string(),
                DeviceSlot {
                    device: Arc::new((*d).clone()),
                    kind: "test".into(),
                    address: "in-process".into(),
                },
            )
        })
        .collect();
    let engine = Engine::new(
        Arc::new(cfg),
        devices,
        history,
        interrupted.len() as u32,
        Clock::system(),
    )
    .unwrap();
    Rig { engine, _dir: dir }
}

pub(crate) fn rig(targets: Vec<TargetConfig>, devs: &[(&str, &TestDevice)]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(targets, dir.path());
    rig_in(dir, cfg, devs)
}

fn caller() -> Caller {
    Caller {
        identity: "uid:0".into(),
    }
}

fn by() -> Requester {
    Requester {
        caller: caller(),
        source: "test".into(),
    }
}

pub(crate) fn req(target: &str, action: Action) -> FenceRequest {
    FenceRequest {
        target: target.into(),
        action,
        reason: "test".into(),
        request_id: None,
        timeout_s: None,
    }
}

pub(crate) async fn run(e: &Engine, r: FenceRequest) -> Operation {
    let a = e.fence(r, &by()).await.unwrap();
    e.wait_operation(a.id, Duration::from_secs(3600))
        .await
        .unwrap()
}

fn failed_code(op: &Operation) -> &str {
    match &op.outcome {
        Some(Outcome::Failed { code, .. }) => code,
        other => panic!("expected failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn off_confirmed_by_read_back() {
    let d = TestDevice::new(PowerState::On).with(|s| s.switch_delay = Duration::from_millis(300));
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(op.state, OpState::Succeeded);
    assert!(op.fenced());
    match op.outcome.unwrap() {
        Outcome::Succeeded {
            confirmation: Confirmation::PowerReadBack { level, already, .. },
            ..
        } => {
            assert_eq!(level, 1);
            assert!(!already);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(d.true_power(), PowerState::Off);
    assert_eq!(d.state().commands, vec![PowerCommand::Off]);
    // History holds the same final record, and the chain verifies.
    let h = r.engine.history(&HistoryQuery::default()).unwrap();
    assert_eq!(h[0].state, OpState::Succeeded);
    // Two durable commits: the operation before any device was touched (with the command it
    // may send, and the request's audit record), and the outcome holding the attempt. All
    // three ledger records chain.
    assert_eq!(r.engine.inner.history.verify_chain().unwrap(), 3);
    let ledger = r.engine.inner.history.ledger(1, 10).unwrap();
    let crate::history::LedgerEntry::Operation { operation: first } = &ledger[0].entry else {
        panic!()
    };
    assert!(first.attempts.is_empty() && first.state == OpState::Running);
    assert_eq!(first.pending.len(), 1);
    assert!(matches!(
        &ledger[1].entry,
        crate::history::LedgerEntry::Audit { outcome, .. } if outcome == "accepted as operation 1"
    ));
}

#[tokio::test(start_paused = true)]
async fn already_off_is_a_success_that_says_so_and_sends_nothing() {
    let d = TestDevice::new(PowerState::Off);
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(op.state, OpState::Succeeded);
    let Some(Outcome::Succeeded {
        confirmation: Confirmation::PowerReadBack { already, .. },
        summary,
        ..
    }) = &op.outcome
    else {
        panic!("{op:?}")
    };
    assert!(already);
    assert!(summary.contains("already off"), "{summary}");
    assert!(d.state().commands.is_empty());
}

#[tokio::test(start_paused = true)]
async fn stuck_device_is_never_reported_fenced() {
    let d = TestDevice::new(PowerState::On).with(|s| s.stuck = true);
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(op.state, OpState::Failed);
    assert!(!op.fenced());
    assert_eq!(failed_code(&op), "all_levels_failed");
    let Some(Outcome::Failed { message, .. }) = &op.outcome else {
        unreachable!()
    };
    assert!(
        message.contains("NOT fenced") && message.contains("still reports on"),
        "{message}"
    );
    assert!(
        matches!(&op.attempts[0].result, StepResult::Failed { code, .. } if code == "not_confirmed")
    );
}

#[tokio::test(start_paused = true)]
async fn stuck_first_level_falls_back_to_second() {
    let bmc = TestDevice::new(PowerState::On).with(|s| s.stuck = true);
    let pdu = TestDevice::new(PowerState::On);
    let r = rig(
        vec![target("n1", &[&["bmc"], &["pdu:4"]])],
        &[("bmc", &bmc), ("pdu", &pdu)],
    );
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(op.state, OpState::Succeeded);
    let Some(Outcome::Succeeded {
        confirmation: Confirmation::PowerReadBack { level, devices, .. },
        ..
    }) = &op.outcome
    else {
        panic!()
    };
    assert_eq!(
        (*level, devices.as_slice()),
        (2, &["pdu:4".to_string()][..])
    );
    assert_eq!(op.attempts.len(), 2);
    assert!(!op.attempts[0].result.is_confirmed());
    assert_eq!(op.attempts[1].port.as_deref(), Some("4"));
}

#[tokio::test(start_paused = true)]
async fn device_that_stops_answering_mid_operation_times_out() {
    // health is not asked (no identity pinned): status answers, the command answers, then
    // every status read hangs.
    let d = TestDevice::new(PowerState::On).with(|s| {
        s.stuck = true;
        s.faults = vec![Fault::None, Fault::None]
            .into_iter()
            .chain(std::iter::repeat_n(Fault::Hang, 100))
            .collect();
    });
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let start = tokio::time::Instant::now();
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(op.state, OpState::Failed);
    assert!(
        start.elapsed() <= Duration::from_secs(6),
        "attempt deadline must bound a hung device"
    );
    assert!(matches!(&op.attempts[0].result, StepResult::Failed { .. }));
}

#[tokio::test(start_paused = true)]
async fn errors_and_garbage_fail_the_attempt() {
    for f in [Fault::Error, Fault::Garbage] {
        let d = TestDevice::new(PowerState::On)
            .with(|s| s.faults = std::iter::repeat_n(f.clone(), 1000).collect());
        let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert_eq!(op.state, OpState::Failed, "{f:?}");
        let StepResult::Failed { code, .. } = &op.attempts[0].result else {
            panic!()
        };
        assert!(code == "unreachable" || code == "protocol", "{code}");
        assert!(d.state().commands.is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn transient_error_while_polling_is_retried_until_confirmed() {
    let d = TestDevice::new(PowerState::On).with(|s| {
        s.switch_delay = Duration::from_millis(100);
        s.faults = vec![Fault::None, Fault::None, Fault::Garbage, Fault::Error].into();
    });
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(op.state, OpState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn reboot_is_off_confirm_on_never_a_cycle() {
    let d = TestDevice::new(PowerState::On).with(|s| s.switch_delay = Duration::from_millis(50));
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let op = run(&r.engine, req("n1", Action::Reboot)).await;
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(
        d.state().commands,
        vec![PowerCommand::Off, PowerCommand::On]
    );
    assert!(
        d.state().off_reads >= 1,
        "off must be read back before on is sent"
    );
    let Some(Outcome::Succeeded {
        powered_on,
        summary,
        ..
    }) = &op.outcome
    else {
        panic!()
    };
    assert_eq!(*powered_on, Some(true));
    assert!(summary.contains("rebooted"));
}

#[tokio::test(start_paused = true)]
async fn reboot_whose_power_on_fails_is_fenced_but_says_it_did_not_come_back() {
    let d = TestDevice::new(PowerState::On).with(|s| s.on_fails = true);
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let op = run(&r.engine, req("n1", Action::Reboot)).await;
    assert_eq!(op.state, OpState::Succeeded);
    assert!(op.fenced());
    let Some(Outcome::Succeeded {
        powered_on,
        summary,
        ..
    }) = &op.outcome
    else {
        panic!()
    };
    assert_eq!(*powered_on, Some(false));
    assert!(summary.contains("did NOT come back"), "{summary}");
    assert!(!summary.contains("rebooted"));
}

#[tokio::test(start_paused = true)]
async fn multi_device_level_needs_every_device_and_turns_all_off_before_any_on() {
    let a = TestDevice::new(PowerState::On).with(|s| s.switch_delay = Duration::from_millis(200));
    let b = TestDevice::new(PowerState::On).with(|s| s.switch_delay = Duration::from_millis(900));
    let r = rig(
        vec![target("n1", &[&["a:1", "b:1"]])],
        &[("a", &a), ("b", &b)],
    );
    let op = run(&r.engine, req("n1", Action::Reboot)).await;
    assert_eq!(op.state, OpState::Succeeded);
    let phases: Vec<Phase> = op.attempts.iter().map(|a| a.phase).collect();
    assert_eq!(phases, vec![Phase::Off, Phase::Off, Phase::On, Phase::On]);
    let last_off = op.attempts[..2]
        .iter()
        .map(|a| a.finished_ms)
        .max()
        .unwrap();
    let first_on = op.attempts[2..].iter().map(|a| a.started_ms).min().unwrap();
    assert!(first_on >= last_off);

    // One supply stuck: the node still has power, so the level fails.
    let a = TestDevice::new(PowerState::On);
    let b = TestDevice::new(PowerState::On).with(|s| s.stuck = true);
    let r = rig(
        vec![target("n1", &[&["a:1", "b:1"]])],
        &[("a", &a), ("b", &b)],
    );
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(op.state, OpState::Failed);
}

#[tokio::test(start_paused = true)]
async fn wrong_identity_is_never_used_to_fence() {
    let d = TestDevice::new(PowerState::On).with(|s| s.identity = "guid-of-another-node".into());
    let mut t = target("n1", &[&["bmc"]]);
    t.identities.insert("bmc".into(), "guid-a".into());
    let r = rig(vec![t], &[("bmc", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(op.state, OpState::Failed);
    assert!(
        matches!(&op.attempts[0].result, StepResult::Failed { code, .. } if code == "identity_mismatch")
    );
    assert!(
        d.state().commands.is_empty(),
        "nothing may be sent to a device that is not the target's"
    );
    let dev = r.engine.devices().into_iter().next().unwrap();
    assert_eq!(dev.health, HealthState::Unhealthy);
}

#[tokio::test(start_paused = true)]
async fn same_request_joins_and_conflicting_one_is_refused() {
    let d = TestDevice::new(PowerState::On).with(|s| s.switch_delay = Duration::from_secs(2));
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let a = r.engine.fence(req("n1", Action::Off), &by()).await.unwrap();
    let b = r.engine.fence(req("n1", Action::Off), &by()).await.unwrap();
    assert_eq!(a.id, b.id);
    assert!(b.joined && !a.joined);
    let c = r
        .engine
        .fence(req("n1", Action::On), &by())
        .await
        .unwrap_err();
    assert_eq!(c.code(), "conflict");
    assert_eq!(crate::api::status_of(&c).as_u16(), 409);
    let op = r
        .engine
        .wait_operation(a.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(
        d.state().commands,
        vec![PowerCommand::Off],
        "a joined request sends nothing more"
    );
}

#[tokio::test(start_paused = true)]
async fn reused_request_id_never_returns_old_success_after_power_on() {
    let d = TestDevice::new(PowerState::On);
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let mut off = req("n1", Action::Off);
    off.request_id = Some("ctrl-42".into());
    let first = run(&r.engine, off.clone()).await;
    assert!(first.fenced());
    // Retrying the same request id returns the same operation: nothing is sent again.
    let again = r.engine.fence(off.clone(), &by()).await.unwrap();
    assert_eq!((again.id, again.joined), (first.id, true));
    assert_eq!(d.state().commands.len(), 1);
    // The node is powered back on; the same request id must now start a new fence.
    let on = run(&r.engine, req("n1", Action::On)).await;
    assert_eq!(on.state, OpState::Succeeded);
    assert_eq!(d.true_power(), PowerState::On);
    let third = r.engine.fence(off.clone(), &by()).await.unwrap();
    assert_ne!(third.id, first.id);
    assert!(!third.joined);
    let op = r
        .engine
        .wait_operation(third.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(op.fenced());
    assert_eq!(d.true_power(), PowerState::Off);
    // Request id used for another target is refused.
    let mut other = off.clone();
    other.action = Action::On;
    assert_eq!(
        r.engine.fence(other, &by()).await.unwrap_err().code(),
        "request_id_mismatch"
    );
}

#[tokio::test(start_paused = true)]
async fn request_id_expires_after_the_window() {
    let d = TestDevice::new(PowerState::On);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(vec![target("n1", &[&["bmc"]])], dir.path());
    cfg.limits.request_id_window = Duration::from_secs(10);
    let r = rig_in(dir, cfg, &[("bmc", &d)]);
    let mut off = req("n1", Action::Off);
    off.request_id = Some("k".into());
    let first = run(&r.engine, off.clone()).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let second = r.engine.fence(off, &by()).await.unwrap();
    assert_ne!(second.id, first.id);
}

#[tokio::test(start_paused = true)]
async fn blast_radius_limits_and_pause_refuse_with_clear_errors() {
    let devs: Vec<TestDevice> = (0..4).map(|_| TestDevice::new(PowerState::On)).collect();
    let dir = tempfile::tempdir().unwrap();
    let targets = (0..4)
        .map(|i| target(&format!("n{i}"), &[&[&format!("d{i}")]]))
        .collect();
    let mut cfg = config(targets, dir.path());
    cfg.limits.max_operations = 2;
    cfg.limits.max_operations_per_target = 1;
    let names: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
    let pairs: Vec<(&str, &TestDevice)> =
        names.iter().map(|n| n.as_str()).zip(devs.iter()).collect();
    let r = rig_in(dir, cfg, &pairs);
    run(&r.engine, req("n0", Action::Off)).await;
    let e = r
        .engine
        .fence(req("n0", Action::Reboot), &by())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "rate_limited");
    assert!(
        e.to_string().contains("max_operations_per_target = 1"),
        "{e}"
    );
    run(&r.engine, req("n1", Action::Off)).await;
    let e = r
        .engine
        .fence(req("n2", Action::Off), &by())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("max_operations = 2"), "{e}");
    assert!(devs[2].state().commands.is_empty());
    // Unfencing is not fencing: it is not counted against the limits.
    assert_eq!(
        run(&r.engine, req("n0", Action::On)).await.state,
        OpState::Succeeded
    );
    // The window slides.
    tokio::time::sleep(Duration::from_secs(601)).await;
    assert!(run(&r.engine, req("n2", Action::Off)).await.fenced());

    r.engine.set_paused(true, "maintenance", &by()).unwrap();
    let e = r
        .engine
        .fence(req("n3", Action::Off), &by())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), crate::api::status_of(&e).as_u16()),
        ("paused", 409)
    );
    assert!(e.to_string().contains("maintenance"));
    r.engine.set_paused(false, "done", &by()).unwrap();
    assert!(run(&r.engine, req("n3", Action::Off)).await.fenced());
    assert!(
        r.engine
            .metrics()
            .refused
            .get("rate_limited")
            .copied()
            .unwrap_or(0)
            >= 2
    );
}

#[tokio::test(start_paused = true)]
async fn pause_survives_a_restart() {
    let d = TestDevice::new(PowerState::On);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let r = rig_in(
        dir,
        config(vec![target("n1", &[&["bmc"]])], &path),
        &[("bmc", &d)],
    );
    r.engine.set_paused(true, "storm", &by()).unwrap();
    let Rig { engine, _dir } = r;
    drop(engine);
    let r = rig_in(
        _dir,
        config(vec![target("n1", &[&["bmc"]])], &path),
        &[("bmc", &d)],
    );
    assert!(r.engine.pause_status().paused);
    assert_eq!(
        r.engine
            .fence(req("n1", Action::Off), &by())
            .await
            .unwrap_err()
            .code(),
        "paused"
    );
}

#[tokio::test(start_paused = true)]
async fn fence_race_delay_is_applied_before_any_device_is_touched() {
    let d = TestDevice::new(PowerState::On);
    let mut t = target("n1", &[&["bmc"]]);
    t.timing.delay = Duration::from_secs(5);
    t.timing.random_delay = Duration::from_secs(3);
    let r = rig(vec![t], &[("bmc", &d)]);
    let a = r.engine.fence(req("n1", Action::Off), &by()).await.unwrap();
    assert_eq!(a.state, OpState::Delayed);
    tokio::time::sleep(Duration::from_millis(4900)).await;
    assert!(d.state().commands.is_empty() && d.state().status_reads == 0);
    let op = r
        .engine
        .wait_operation(a.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(op.fenced());
    assert!((5000..=8000).contains(&op.delay_ms), "{}", op.delay_ms);
    assert!(op.started_ms.unwrap() - op.created_ms >= 5000);
}

#[tokio::test(start_paused = true)]
async fn total_timeout_stops_the_fallback() {
    let slow: Vec<TestDevice> = (0..3)
        .map(|_| TestDevice::new(PowerState::On).with(|s| s.stuck = true))
        .collect();
    let mut t = target("n1", &[&["a"], &["b"], &["c"]]);
    t.timing.attempt_timeout = Duration::from_secs(4);
    t.timing.total_timeout = Duration::from_secs(6);
    let r = rig(
        vec![t],
        &[("a", &slow[0]), ("b", &slow[1]), ("c", &slow[2])],
    );
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert_eq!(failed_code(&op), "timeout");
    assert!(slow[2].state().commands.is_empty());
}

#[tokio::test(start_paused = true)]
async fn manual_confirmation_is_recorded_with_who_and_why() {
    let d = TestDevice::new(PowerState::On).with(|s| s.stuck = true);
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    assert_eq!(
        r.engine.confirm("n1", " ", &by()).unwrap_err().code(),
        "bad_request"
    );
    let op = r
        .engine
        .confirm("n1", "pulled both power cords", &by())
        .unwrap();
    assert!(op.fenced());
    let Some(Outcome::Succeeded {
        confirmation: Confirmation::Manual { by, reason },
        ..
    }) = &op.outcome
    else {
        panic!()
    };
    assert_eq!(
        (by.as_str(), reason.as_str()),
        ("uid:0", "pulled both power cords")
    );
    assert!(d.state().commands.is_empty());
}

#[tokio::test]
async fn crash_mid_operation_is_recorded_as_interrupted_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.redb");
    {
        let (h, _) = History::open(&path, 0).unwrap();
        let op = Operation {
            id: 7,
            target: "n1".into(),
            action: Action::Off,
            reason: "r".into(),
            requested_by: caller(),
            request_id: None,
            state: OpState::Running,
            created_ms: 1,
            started_ms: Some(1),
            finished_ms: None,
            delay_ms: 0,
            attempts: vec![],
            pending: vec![],
            witnesses: Vec::new(),
            outcome: None,
            cluster: None,
        };
        h.record(&op).unwrap();
        // Dropped without finishing: what a SIGKILL leaves behind.
    }
    let (h, interrupted) = History::open(&path, 99).unwrap();
    assert_eq!(interrupted.len(), 1);
    let op = h.get(7).unwrap().unwrap();
    assert_eq!(op.state, OpState::Failed);
    assert!(!op.fenced());
    assert_eq!(failed_code(&op), "interrupted");
    // Reopening again finds nothing more in flight.
    drop(h);
    let (_, again) = History::open(&path, 100).unwrap();
    assert!(again.is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_command_is_in_history_before_it_is_sent() {
    // Level 1 is a stuck BMC, level 2 a slow PDU outlet: each level's command must be durable
    // (as pending) before the device receives it.
    let bmc = TestDevice::new(PowerState::On).with(|s| s.stuck = true);
    let pdu = TestDevice::new(PowerState::On).with(|s| s.switch_delay = Duration::from_secs(2));
    let mut t = target("n1", &[&["bmc"], &["pdu:4"]]);
    t.timing.attempt_timeout = Duration::from_secs(5);
    let r = rig(vec![t], &[("bmc", &bmc), ("pdu", &pdu)]);
    let a = r.engine.fence(req("n1", Action::Off), &by()).await.unwrap();
    let stored = |id| r.engine.inner.history.get(id).unwrap().unwrap();
    // Recorded with the operation itself, before any device was touched: no extra write.
    let first = stored(a.id);
    assert!(bmc.state().commands.is_empty());
    assert_eq!(first.pending.len(), 1);
    assert_eq!(
        (
            first.pending[0].device.as_str(),
            first.pending[0].command.as_str()
        ),
        ("bmc", "power off")
    );
    // Into level 2: the PDU has its command, which history already holds, with level 1's
    // finished attempt.
    while pdu.state().commands.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mid = stored(a.id);
    assert_eq!(mid.attempts.len(), 1);
    assert_eq!(mid.pending.len(), 1, "{mid:?}");
    let p = &mid.pending[0];
    assert_eq!(
        (
            p.level,
            p.device.as_str(),
            p.port.as_deref(),
            p.command.as_str()
        ),
        (2, "pdu", Some("4"), "power off")
    );
    // Finished: nothing pending, both attempts kept, and the chain verifies.
    let op = r
        .engine
        .wait_operation(a.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(op.fenced());
    assert!(op.pending.is_empty() && stored(a.id).pending.is_empty());
    assert_eq!(op.attempts.len(), 2);
    assert!(r.engine.inner.history.verify_chain().is_ok());
}

#[tokio::test]
async fn crash_after_a_command_was_recorded_says_it_may_have_been_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.redb");
    {
        let (h, _) = History::open(&path, 0).unwrap();
        let op = Operation {
            id: 3,
            target: "n1".into(),
            action: Action::Off,
            reason: "r".into(),
            requested_by: caller(),
            request_id: None,
            state: OpState::Running,
            created_ms: 1_765_000_000_000,
            started_ms: Some(1_765_000_000_000),
            finished_ms: None,
            delay_ms: 0,
            attempts: vec![],
            pending: vec![PendingStep {
                level: 1,
                device: "bmc-node1".into(),
                port: None,
                phase: Phase::Off,
                command: "power off".into(),
                since_ms: 1_765_000_000_123,
            }],
            witnesses: Vec::new(),
            outcome: None,
            cluster: None,
        };
        h.record(&op).unwrap();
    }
    let (h, interrupted) = History::open(&path, 1_765_000_009_000).unwrap();
    assert_eq!(interrupted.len(), 1);
    let op = h.get(3).unwrap().unwrap();
    assert_eq!(op.state, OpState::Failed);
    assert!(!op.fenced());
    assert!(op.pending.is_empty());
    let Some(Attempt {
        device,
        started_ms,
        result: StepResult::Failed { code, message },
        ..
    }) = op.attempts.first()
    else {
        panic!("{op:?}")
    };
    assert_eq!(
        (device.as_str(), code.as_str()),
        ("bmc-node1", "interrupted")
    );
    assert_eq!(*started_ms, 1_765_000_000_123);
    assert!(
        message.contains("power off may have been sent to bmc-node1 at 2025-12-06T05:46:40.123Z"),
        "{message}"
    );
    let Some(Outcome::Failed { message, .. }) = &op.outcome else {
        panic!()
    };
    assert!(
        message.contains("may have been sent to bmc-node1"),
        "{message}"
    );
    assert!(h.verify_chain().is_ok());
}

/// An on-demand check answers with its own device's summary, the same one `devices()` lists,
/// among several devices (it no longer lists the whole fleet to find it).
#[tokio::test(start_paused = true)]
async fn a_device_check_answers_the_summary_the_device_list_shows() {
    let a = TestDevice::new(PowerState::On);
    let b = TestDevice::new(PowerState::On);
    let r = rig(
        vec![target("n1", &[&["bmc-a"]]), target("n2", &[&["bmc-b"]])],
        &[("bmc-a", &a), ("bmc-b", &b)],
    );
    let checked = r.engine.monitor_device("bmc-b").await.unwrap();
    assert_eq!(
        checked.name, "bmc-b",
        "fenced/src/engine/monitor.rs: the checked device"
    );
    assert_eq!(checked.health, HealthState::Healthy);
    assert_eq!(checked.targets, vec!["n2".to_string()]);
    let listed = r.engine.devices();
    let same = listed.iter().find(|d| d.name == "bmc-b").unwrap();
    assert_eq!(
        &checked, same,
        "the check's answer and the list's entry for bmc-b differ"
    );
    let other = listed.iter().find(|d| d.name == "bmc-a").unwrap();
    assert_eq!(other.health, HealthState::Unknown, "bmc-a was not checked");
}

#[tokio::test(start_paused = true)]
async fn live_status_and_device_monitor() {
    let d = TestDevice::new(PowerState::On);
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let t = r.engine.target_detail("n1", true).await.unwrap();
    assert_eq!(t.live.unwrap()[0].state, Some(PowerState::On));
    let dev = r.engine.monitor_device("bmc").await.unwrap();
    assert_eq!(dev.health, HealthState::Healthy);
    assert_eq!(dev.identity.unwrap().value, "guid-a");
    assert_eq!(
        r.engine.monitor_device("nope").await.unwrap_err().code(),
        "unknown_device"
    );
}

#[tokio::test(start_paused = true)]
async fn poison_pill_is_confirmed_only_after_msgwait() {
    let d =
        TestDevice::new(PowerState::On).with(|s| s.pill = Some((3, 3, Duration::from_secs(10))));
    let mut t = target("n1", &[&["sbd"]]);
    t.timing.attempt_timeout = Duration::from_secs(15);
    let r = rig(vec![t], &[("sbd", &d)]);
    let a = r.engine.fence(req("n1", Action::Off), &by()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(9_990)).await;
    let op = r.engine.operation(a.id).unwrap();
    assert_eq!(
        op.state,
        OpState::Running,
        "not fenced before msgwait has elapsed"
    );
    assert_eq!(d.state().pills, vec![drivers::PillKind::Off]);
    let op = r
        .engine
        .wait_operation(a.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(op.fenced());
    let Some(Outcome::Succeeded {
        confirmation: Confirmation::PoisonPill { msgwait_ms, .. },
        ..
    }) = &op.outcome
    else {
        panic!("{op:?}")
    };
    assert_eq!(*msgwait_ms, 10_000);
    assert!(op.finished_ms.unwrap() - op.started_ms.unwrap() >= 10_000);
    assert!(
        d.state().commands.is_empty() && d.state().status_reads == 0,
        "no power command or read on a disk"
    );
}

#[tokio::test(start_paused = true)]
async fn poison_pill_on_a_minority_of_disks_is_not_fenced() {
    let d = TestDevice::new(PowerState::On).with(|s| s.pill = Some((1, 3, Duration::from_secs(1))));
    let r = rig(vec![target("n1", &[&["sbd"]])], &[("sbd", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert!(!op.fenced());
    assert!(
        matches!(&op.attempts[0].result, StepResult::Failed { code, .. } if code == "no_majority")
    );
}

#[tokio::test(start_paused = true)]
async fn poison_pill_whose_msgwait_exceeds_the_deadline_is_not_fenced() {
    let d =
        TestDevice::new(PowerState::On).with(|s| s.pill = Some((2, 3, Duration::from_secs(10))));
    let r = rig(vec![target("n1", &[&["sbd"]])], &[("sbd", &d)]); // attempt timeout 5 s
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert!(!op.fenced());
    let StepResult::Failed { code, message } = &op.attempts[0].result else {
        panic!()
    };
    assert_eq!(code, "timeout");
    assert!(
        message.contains("raise attempt_timeout_s above msgwait"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn poison_pill_reboot_writes_a_reset_pill_and_claims_nothing_about_power_on() {
    let d = TestDevice::new(PowerState::On).with(|s| s.pill = Some((2, 3, Duration::from_secs(2))));
    let r = rig(vec![target("n1", &[&["sbd"]])], &[("sbd", &d)]);
    let op = run(&r.engine, req("n1", Action::Reboot)).await;
    assert!(op.fenced());
    assert_eq!(d.state().pills, vec![drivers::PillKind::Reset]);
    let Some(Outcome::Succeeded { powered_on, .. }) = &op.outcome else {
        panic!()
    };
    assert_eq!(*powered_on, None);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            6 => Just(Fault::None),
            1 => Just(Fault::Error),
            1 => Just(Fault::Garbage),
            1 => Just(Fault::Hang),
            1 => (1u64..3000).prop_map(|ms| Fault::Slow(Duration::from_millis(ms))),
        ]
    }

    #[derive(Debug, Clone)]
    struct DevPlan {
        on: bool,
        stuck: bool,
        on_fails: bool,
        switch_ms: u64,
        faults: Vec<Fault>,
    }

    fn dev_plan() -> impl Strategy<Value = DevPlan> {
        (
            any::<bool>(),
            prop::bool::weighted(0.3),
            any::<bool>(),
            0u64..4000,
            prop::collection::vec(fault(), 0..12),
        )
            .prop_map(|(on, stuck, on_fails, switch_ms, faults)| DevPlan {
                on,
                stuck,
                on_fails,
                switch_ms,
                faults,
            })
    }

    fn build(p: &DevPlan) -> TestDevice {
        TestDevice::new(if p.on {
            PowerState::On
        } else {
            PowerState::Off
        })
        .with(|s| {
            s.stuck = p.stuck;
            s.on_fails = p.on_fails;
            s.switch_delay = Duration::from_millis(p.switch_ms);
            s.faults = p.faults.clone().into();
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Whatever the devices do (within "they do not report off while on", which no
        /// software can detect), a success means every device of the confirming level really
        /// is off, and a device that was never read back as off is never counted.
        #[test]
        fn no_success_without_confirmation(
            plans in prop::collection::vec(dev_plan(), 3),
            two_in_level_one in any::<bool>(),
            reboot in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            rt.block_on(async {
                let devs: Vec<TestDevice> = plans.iter().map(build).collect();
                let levels: Vec<Vec<&str>> = if two_in_level_one {
                    vec![vec!["d0", "d1"], vec!["d2"]]
                } else {
                    vec![vec!["d0"], vec!["d1"], vec!["d2"]]
                };
                let lv: Vec<&[&str]> = levels.iter().map(|l| l.as_slice()).collect();
                let mut t = target("n", &lv);
                t.timing.attempt_timeout = Duration::from_secs(5);
                t.timing.total_timeout = Duration::from_secs(20);
                let r = rig(vec![t], &[("d0", &devs[0]), ("d1", &devs[1]), ("d2", &devs[2])]);
                let action = if reboot { Action::Reboot } else { Action::Off };
                let op = run(&r.engine, req("n", action)).await;
                prop_assert!(op.state.is_terminal());
                match &op.outcome {
                    Some(Outcome::Succeeded { confirmation: Confirmation::PowerReadBack { level, .. }, powered_on, .. }) => {
                        let idx: Vec<usize> = levels[*level as usize - 1].iter().map(|n| n[1..].parse().unwrap()).collect();
                        for i in &idx {
                            prop_assert!(devs[*i].state().off_reads >= 1, "device d{} never read back off", i);
                            if !reboot {
                                prop_assert_eq!(devs[*i].true_power(), PowerState::Off);
                            }
                        }
                        let off_steps: Vec<_> = op.attempts.iter().filter(|a| a.level == *level && a.phase == Phase::Off).collect();
                        prop_assert_eq!(off_steps.len(), idx.len());
                        prop_assert!(off_steps.iter().all(|a| a.result.is_confirmed()));
                        if reboot {
                            prop_assert!(powered_on.is_some());
                        }
                    }
                    Some(Outcome::Succeeded { .. }) => prop_assert!(false, "unexpected confirmation kind"),
                    Some(Outcome::Failed { message, .. }) => {
                        prop_assert!(message.contains("NOT fenced"));
                        prop_assert!(!op.fenced());
                    }
                    None => prop_assert!(false, "terminal without outcome"),
                }
                // History agrees with what the caller was told.
                let stored = r.engine.inner.history.get(op.id).unwrap().unwrap();
                prop_assert_eq!(&stored, &op);
                Ok(())
            })?;
        }
    }
}

/// Config entries for devices named `names` with the given `on_fail`, parsed from text (the
/// engine only reads their selection settings; the drivers behind them are test devices).
fn with_on_fail(cfg: &mut Config, names: &[&str], on_fail: &str) {
    let mut text = String::new();
    for n in names {
        text.push_str(&format!(
            "[devices.{n}]\nkind = \"ipmi\"\naddress = \"192.0.2.1\"\nusername = \"u\"\npassword_env = \"PW\"\non_fail = \"{on_fail}\"\n"
        ));
    }
    let parsed = Config::parse(std::path::Path::new("t.toml"), &text, &|_| {
        Some(b"pw".to_vec())
    })
    .unwrap();
    cfg.devices.extend(parsed.devices);
}

#[tokio::test(start_paused = true)]
async fn on_fail_skip_passes_over_an_unhealthy_device_and_try_still_uses_it() {
    for (on_fail, first_level_used) in [("skip", false), ("try", true)] {
        let bmc = TestDevice::new(PowerState::On);
        let pdu = TestDevice::new(PowerState::On);
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(vec![target("n1", &[&["bmc"], &["pdu"]])], dir.path());
        with_on_fail(&mut cfg, &["bmc", "pdu"], on_fail);
        let r = rig_in(dir, cfg, &[("bmc", &bmc), ("pdu", &pdu)]);
        // The health check fails once (the BMC's network blipped); fencing itself would work.
        bmc.state().faults = vec![Fault::Error].into();
        let dev = r.engine.monitor_device("bmc").await.unwrap();
        assert_eq!(dev.health, HealthState::Unhealthy);
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert!(op.fenced(), "{on_fail}: {op:?}");
        let Some(Outcome::Succeeded {
            confirmation: Confirmation::PowerReadBack { level, .. },
            ..
        }) = &op.outcome
        else {
            panic!("{op:?}")
        };
        if first_level_used {
            assert_eq!(*level, 1, "on_fail = try still tries the device");
            assert!(pdu.state().commands.is_empty());
        } else {
            assert_eq!(*level, 2, "on_fail = skip moves on to the next level");
            assert!(
                bmc.state().commands.is_empty(),
                "nothing sent to a skipped device"
            );
            assert!(op.attempts.iter().all(|a| a.device == "pdu"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn on_fail_skip_of_the_only_level_fails_and_says_why_never_fenced() {
    let bmc = TestDevice::new(PowerState::On);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(vec![target("n1", &[&["bmc"]])], dir.path());
    with_on_fail(&mut cfg, &["bmc"], "skip");
    let r = rig_in(dir, cfg, &[("bmc", &bmc)]);
    bmc.state().faults = vec![Fault::Garbage].into();
    r.engine.monitor_device("bmc").await.unwrap();
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert!(!op.fenced());
    let Some(Outcome::Failed {
        message: reason, ..
    }) = &op.outcome
    else {
        panic!("{op:?}")
    };
    assert!(
        reason.contains("not tried") && reason.contains("on_fail = \"skip\""),
        "{reason}"
    );
    assert!(bmc.state().commands.is_empty());
    // A passing health check puts the device back in use.
    r.engine.monitor_device("bmc").await.unwrap();
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert!(op.fenced(), "{op:?}");
}

/// A driver that says how it read back (a relay line without a sense line) has that named in
/// the confirmed attempt and in the outcome's summary, which history keeps.
#[tokio::test(start_paused = true)]
async fn a_device_that_says_how_it_read_back_is_named_in_the_outcome() {
    let note = "relay output read back, no sense line";
    let d = TestDevice::new(PowerState::On).with(|s| s.basis = Some(note.into()));
    let r = rig(vec![target("n1", &[&["relays:n1"]])], &[("relays", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert!(op.fenced(), "{op:?}");
    let Some(Outcome::Succeeded { summary, .. }) = &op.outcome else {
        panic!("{op:?}")
    };
    assert!(
        summary.contains(&format!("(level 1; relays:n1: {note})")),
        "{summary}"
    );
    assert!(
        matches!(&op.attempts[0].result, StepResult::Confirmed { basis: Some(b), .. } if b == note),
        "{:?}",
        op.attempts
    );
    let h = r.engine.history(&HistoryQuery::default()).unwrap();
    assert_eq!(h[0].outcome, op.outcome);
    // Devices that say nothing keep the plain summary.
    let plain = TestDevice::new(PowerState::On);
    let r = rig(vec![target("n2", &[&["bmc"]])], &[("bmc", &plain)]);
    let op = run(&r.engine, req("n2", Action::Off)).await;
    let Some(Outcome::Succeeded { summary, .. }) = &op.outcome else {
        panic!("{op:?}")
    };
    assert!(summary.ends_with("(level 1)"), "{summary}");
}

/// A device that can never read its state back (a relay button without a sense line) is NOT
/// fenced, and the failure gives its reason rather than calling it stuck or lying.
#[tokio::test(start_paused = true)]
async fn a_device_that_cannot_read_back_is_not_fenced_and_says_why() {
    let why = "power button without a sense line: a press cannot be read back";
    let d = TestDevice::new(PowerState::Unknown).with(|s| {
        s.stuck = true;
        s.basis = Some(why.into());
    });
    let r = rig(vec![target("n1", &[&["relays:n1"]])], &[("relays", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    assert!(!op.fenced(), "{op:?}");
    let StepResult::Failed { code, message } = &op.attempts[0].result else {
        panic!("{:?}", op.attempts)
    };
    assert_eq!(code, "not_confirmed");
    assert!(message.contains(why), "{message}");
    assert!(!message.contains("lying"), "{message}");
    assert_eq!(d.state().commands, vec![PowerCommand::Off]);
}

// ---- Corroboration (confirm = "device+witness") ----

mod witnesses {
    use super::super::testdev::{TestWitness, Watch};
    use super::*;
    use crate::config::Confirm;

    fn witnessed(mut t: TargetConfig, names: &[&str]) -> TargetConfig {
        t.confirm = Confirm::DeviceAndWitness;
        t.witnesses = names.iter().map(|n| n.to_string()).collect();
        t
    }

    fn rig_w(
        targets: Vec<TargetConfig>,
        devs: &[(&str, &TestDevice)],
        witnesses: &[(&str, &str, Arc<TestWitness>)],
    ) -> Rig {
        let mut slots = WitnessSlots::new();
        for (t, name, w) in witnesses {
            slots.entry(t.to_string()).or_default().push(WitnessSlot {
                name: name.to_string(),
                witness: w.clone(),
            });
        }
        rig_slots(targets, devs, slots)
    }

    /// [`rig_w`] with the witness slots given as they are (any witness kind).
    fn rig_slots(
        targets: Vec<TargetConfig>,
        devs: &[(&str, &TestDevice)],
        slots: WitnessSlots,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(targets, dir.path());
        let (history, _) = History::open(&cfg.daemon.history, 0).unwrap();
        let devices = devs
            .iter()
            .map(|(n, d)| {
                (
                    n.to_string(),
                    DeviceSlot {
                        device: Arc::new((*d).clone()),
                        kind: "test".into(),
                        address: "in-process".into(),
                    },
                )
            })
            .collect();
        let engine =
            Engine::with_witnesses(Arc::new(cfg), devices, slots, history, 0, Clock::system())
                .unwrap();
        Rig { engine, _dir: dir }
    }

    fn summary(op: &Operation) -> &str {
        match &op.outcome {
            Some(Outcome::Succeeded { summary, .. }) => summary,
            other => panic!("expected success, got {other:?}"),
        }
    }

    fn message(op: &Operation) -> &str {
        match &op.outcome {
            Some(Outcome::Failed { message, .. }) => message,
            other => panic!("expected failure, got {other:?}"),
        }
    }

    const SETTLE: Duration = Duration::from_secs(3);

    #[tokio::test(start_paused = true)]
    async fn all_witnesses_silent_confirms_off_and_records_their_observations() {
        let bmc = TestDevice::new(PowerState::On);
        let net = TestWitness::new(Watch::Node(vec![bmc.clone()], SETTLE));
        let disk = TestWitness::new(Watch::Node(vec![bmc.clone()], Duration::from_secs(1)));
        let r = rig_w(
            vec![witnessed(target("n1", &[&["bmc"]]), &["net", "disk"])],
            &[("bmc", &bmc)],
            &[("n1", "net", net.clone()), ("n1", "disk", disk.clone())],
        );
        let t0 = tokio::time::Instant::now();
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert!(op.fenced(), "{op:?}");
        assert!(
            summary(&op).contains("witnesses silent: net (test), disk (test)"),
            "{}",
            summary(&op)
        );
        // Both watched at once: the longer settle, not the sum.
        let took = t0.elapsed();
        assert!(
            took >= SETTLE && took < SETTLE + Duration::from_secs(1),
            "{took:?}"
        );
        assert_eq!(op.witnesses.len(), 2);
        for w in &op.witnesses {
            assert_eq!(w.verdict, WitnessVerdict::Silent, "{w:?}");
            assert_eq!(w.level, 1);
            assert!(
                w.finished_ms >= w.started_ms && !w.evidence.is_empty(),
                "{w:?}"
            );
        }
        // The record in history holds them too.
        let h = r.engine.history(&HistoryQuery::default()).unwrap();
        assert_eq!(h[0].witnesses, op.witnesses);
    }

    #[tokio::test(start_paused = true)]
    async fn a_witness_that_sees_the_node_alive_fails_the_level_with_the_evidence_and_the_next_level_fences(
    ) {
        // The BMC lies: it acknowledges off and reports off while the node keeps running.
        let bmc = TestDevice::new(PowerState::On).with(|s| s.lies = true);
        let pdu = TestDevice::new(PowerState::On);
        let net = TestWitness::new(Watch::Node(vec![bmc.clone(), pdu.clone()], SETTLE));
        let r = rig_w(
            vec![witnessed(target("n1", &[&["bmc"], &["pdu"]]), &["net"])],
            &[("bmc", &bmc), ("pdu", &pdu)],
            &[("n1", "net", net.clone())],
        );
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert!(op.fenced(), "{op:?}");
        assert!(matches!(
            op.outcome,
            Some(Outcome::Succeeded {
                confirmation: Confirmation::PowerReadBack { level: 2, .. },
                ..
            })
        ));
        assert_eq!(pdu.true_power(), PowerState::Off);
        assert_eq!(bmc.true_power(), PowerState::On, "the BMC never switched");
        let s = summary(&op);
        assert!(
            s.contains("after level 1: bmc read back off, but n1 is still alive: witness net (test): 10.0.0.12:5405 still answers"),
            "{s}"
        );
        // Level 1's attempt is no confirmation in the record: it failed with the evidence.
        let a1 = op.attempts.iter().find(|a| a.level == 1).unwrap();
        match &a1.result {
            StepResult::Failed { code, message } => {
                assert_eq!(code, "witness_alive");
                assert!(
                    message.contains("10.0.0.12:5405 still answers"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        // ... and keeps the device's side as a record: its read-back, then the verdicts.
        let over = a1.overruled.as_ref().expect("level 1's read-back is kept");
        assert!(
            matches!(
                over.read_back,
                StepResult::Confirmed {
                    state: PowerState::Off,
                    ..
                }
            ),
            "{over:?}"
        );
        assert_eq!(
            over.witnesses,
            vec![OverrulingVerdict {
                witness: "net".into(),
                kind: "test".into(),
                verdict: WitnessVerdict::Alive,
            }]
        );
        let a2 = op.attempts.iter().find(|a| a.level == 2).unwrap();
        assert!(a2.overruled.is_none(), "{a2:?}");
        let verdicts: Vec<_> = op.witnesses.iter().map(|w| (w.level, w.verdict)).collect();
        assert_eq!(
            verdicts,
            vec![(1, WitnessVerdict::Alive), (2, WitnessVerdict::Silent)]
        );
        let m = r.engine.metrics();
        assert_eq!(m.lying_devices.get("bmc"), Some(&1));
        // The vetoed "off" is no confirmation; the PDU's counts, witness watch included.
        assert!(
            !m.device_confirm_ms.contains_key("bmc"),
            "{:?}",
            m.device_confirm_ms
        );
        let pdu_ms = &m.device_confirm_ms["pdu"];
        assert_eq!(pdu_ms.count, 1);
        assert!(pdu_ms.sum_ms >= SETTLE.as_millis() as u64, "{pdu_ms:?}");
        assert_eq!(
            m.witness_verdicts
                .get(&("net".into(), "test".into(), "alive".into())),
            Some(&1)
        );
        assert_eq!(
            m.witness_confirm_ms[&("net".into(), "test".into())].count,
            1
        );
    }

    /// A metered PDU outlet feeding the node: it reads on while the node really has power
    /// (every one of `feeds` really on), whatever those devices report.
    struct Feed(Vec<TestDevice>);

    #[async_trait::async_trait]
    impl drivers::PowerDevice for Feed {
        async fn status(&self, _port: Option<&str>) -> Result<PowerState, drivers::DeviceError> {
            Ok(if self.0.iter().all(|d| d.true_power() == PowerState::On) {
                PowerState::On
            } else {
                PowerState::Off
            })
        }

        async fn power(
            &self,
            _port: Option<&str>,
            _command: PowerCommand,
        ) -> Result<(), drivers::DeviceError> {
            panic!("a witness never switches the outlet it reads")
        }

        async fn health(&self) -> Result<drivers::Identity, drivers::DeviceError> {
            Ok(drivers::Identity {
                kind: "test".into(),
                value: "feed".into(),
                description: "metered outlet".into(),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_power_path_witness_vetoes_a_lying_bmc_and_the_next_level_fences() {
        let bmc = TestDevice::new(PowerState::On).with(|s| s.lies = true);
        let relay = TestDevice::new(PowerState::On);
        let outlet = Arc::new(drivers::witness::power_path::PowerPathWitness {
            device_name: "pdu-a".into(),
            device: Arc::new(Feed(vec![bmc.clone(), relay.clone()])),
            port: Some("7".into()),
            settle: Duration::from_secs(2),
            read_timeout: Duration::from_secs(1),
            max_watts: None,
        });
        let mut slots = WitnessSlots::new();
        slots.entry("n1".into()).or_default().push(WitnessSlot {
            name: "feed".into(),
            witness: outlet,
        });
        let r = rig_slots(
            vec![witnessed(target("n1", &[&["bmc"], &["relay"]]), &["feed"])],
            &[("bmc", &bmc), ("relay", &relay)],
            slots,
        );
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert!(op.fenced(), "{op:?}");
        assert!(matches!(
            op.outcome,
            Some(Outcome::Succeeded {
                confirmation: Confirmation::PowerReadBack { level: 2, .. },
                ..
            })
        ));
        assert_eq!(relay.true_power(), PowerState::Off);
        let s = summary(&op);
        assert!(
            s.contains("after level 1: bmc read back off, but n1 is still alive: witness feed (power-path): outlet pdu-a:7 still reads on"),
            "{s}"
        );
        let verdicts: Vec<_> = op.witnesses.iter().map(|w| (w.level, w.verdict)).collect();
        assert_eq!(
            verdicts,
            vec![(1, WitnessVerdict::Alive), (2, WitnessVerdict::Silent)]
        );
        assert_eq!(r.engine.metrics().lying_devices.get("bmc"), Some(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_veto_with_no_further_level_is_not_fenced() {
        let bmc = TestDevice::new(PowerState::On).with(|s| s.lies = true);
        let net = TestWitness::new(Watch::Node(vec![bmc.clone()], SETTLE));
        let r = rig_w(
            vec![witnessed(target("n1", &[&["bmc"]]), &["net"])],
            &[("bmc", &bmc)],
            &[("n1", "net", net)],
        );
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert!(!op.fenced(), "{op:?}");
        assert_eq!(failed_code(&op), "all_levels_failed");
        assert!(
            message(&op)
                .contains("n1 NOT fenced: level 1: bmc read back off, but n1 is still alive"),
            "{}",
            message(&op)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_witness_without_evidence_is_never_off() {
        let bmc = TestDevice::new(PowerState::On);
        let net = TestWitness::new(Watch::Node(vec![bmc.clone()], SETTLE));
        let blind = TestWitness::new(Watch::Blind(
            "cannot read /dev/sdb: I/O error".into(),
            Duration::from_millis(50),
        ));
        let r = rig_w(
            vec![witnessed(target("n1", &[&["bmc"]]), &["net", "disk"])],
            &[("bmc", &bmc)],
            &[("n1", "net", net), ("n1", "disk", blind)],
        );
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert!(!op.fenced(), "{op:?}");
        assert_eq!(
            bmc.true_power(),
            PowerState::Off,
            "the device did switch off"
        );
        let m = message(&op);
        assert!(
            m.contains("witness disk (test) gave no evidence: cannot read /dev/sdb: I/O error"),
            "{m}"
        );
        let a = &op.attempts[0];
        assert!(
            matches!(&a.result, StepResult::Failed { code, .. } if code == "witness_no_evidence"),
            "{a:?}"
        );
        let v: Vec<_> = op.witnesses.iter().map(|w| w.verdict).collect();
        assert_eq!(v, vec![WitnessVerdict::Silent, WitnessVerdict::NoEvidence]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_witness_that_hangs_past_the_attempt_deadline_is_not_off() {
        let bmc = TestDevice::new(PowerState::On);
        let hang = TestWitness::new(Watch::Hang);
        let r = rig_w(
            vec![witnessed(target("n1", &[&["bmc"]]), &["stuck"])],
            &[("bmc", &bmc)],
            &[("n1", "stuck", hang)],
        );
        let t0 = tokio::time::Instant::now();
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert!(!op.fenced(), "{op:?}");
        // Bounded by the attempt deadline (5 s in these targets), not the total timeout.
        assert!(t0.elapsed() <= Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(
            message(&op).contains(
                "witness stuck (test) gave no evidence: did not answer within the attempt deadline"
            ),
            "{}",
            message(&op)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn policy_device_is_unchanged_and_believes_a_lying_device() {
        // The demonstration of why the policy exists: with `device` the lying BMC is believed.
        let bmc = TestDevice::new(PowerState::On).with(|s| s.lies = true);
        let net = TestWitness::new(Watch::Node(vec![bmc.clone()], SETTLE));
        let mut t = target("n1", &[&["bmc"]]);
        t.witnesses = vec![];
        let r = rig_w(vec![t], &[("bmc", &bmc)], &[("n1", "net", net.clone())]);
        let op = run(&r.engine, req("n1", Action::Off)).await;
        assert!(op.fenced(), "policy device trusts the read-back: {op:?}");
        assert_eq!(bmc.true_power(), PowerState::On, "yet the node still runs");
        assert_eq!(net.calls(), 0, "no witness is asked under policy device");
        assert!(op.witnesses.is_empty());
        // It even answered "off" before any command: "already off", nothing sent.
        assert_eq!(
            summary(&op),
            "n1 was already off: power read back as off from bmc (level 1); no command sent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reboot_is_corroborated_before_power_comes_back() {
        let bmc = TestDevice::new(PowerState::On);
        let net = TestWitness::new(Watch::Node(vec![bmc.clone()], SETTLE));
        let r = rig_w(
            vec![witnessed(target("n1", &[&["bmc"]]), &["net"])],
            &[("bmc", &bmc)],
            &[("n1", "net", net.clone())],
        );
        let op = run(&r.engine, req("n1", Action::Reboot)).await;
        assert!(op.fenced(), "{op:?}");
        assert_eq!(
            bmc.state().commands,
            vec![PowerCommand::Off, PowerCommand::On]
        );
        assert_eq!(net.calls(), 1);
        assert_eq!(op.witnesses[0].verdict, WitnessVerdict::Silent);
    }

    #[tokio::test(start_paused = true)]
    async fn unfencing_asks_no_witness() {
        let bmc = TestDevice::new(PowerState::Off);
        let net = TestWitness::new(Watch::Node(vec![bmc.clone()], SETTLE));
        let r = rig_w(
            vec![witnessed(target("n1", &[&["bmc"]]), &["net"])],
            &[("bmc", &bmc)],
            &[("n1", "net", net.clone())],
        );
        let op = run(&r.engine, req("n1", Action::On)).await;
        assert_eq!(op.state, OpState::Succeeded, "{op:?}");
        assert_eq!(net.calls(), 0);
    }
}

/// A finished cluster operation as another member's copy carries it.
fn cluster_copy(key: &str, outcome: Outcome) -> Operation {
    Operation {
        id: 0,
        target: "n1".into(),
        action: Action::Off,
        reason: "cluster operation".into(),
        requested_by: Caller {
            identity: format!("cluster:{key}"),
        },
        request_id: None,
        state: if matches!(outcome, Outcome::Succeeded { .. }) {
            OpState::Succeeded
        } else {
            OpState::Failed
        },
        created_ms: 5,
        started_ms: Some(5),
        finished_ms: Some(9),
        delay_ms: 0,
        attempts: vec![Attempt {
            level: 1,
            device: "bmc".into(),
            port: None,
            phase: Phase::Off,
            started_ms: 6,
            finished_ms: 8,
            result: StepResult::Confirmed {
                state: PowerState::Off,
                already: false,
                polls: 1,
                identity: None,
                pill: None,
                basis: None,
            },
            overruled: None,
        }],
        pending: vec![],
        witnesses: Vec::new(),
        outcome: Some(outcome),
        cluster: Some(Box::new(ClusterOrigin {
            op: key.into(),
            origin: "node2".into(),
            executor: "node3".into(),
        })),
    }
}

fn read_back_off() -> Outcome {
    Outcome::Succeeded {
        confirmation: Confirmation::PowerReadBack {
            level: 1,
            devices: vec!["bmc".into()],
            already: false,
        },
        powered_on: None,
        summary: "n1 off, read back by node3".into(),
    }
}

#[tokio::test]
async fn cluster_copies_are_durable_once_and_an_interrupted_record_gives_way_to_the_cluster_outcome(
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.redb");
    // This member executed cluster operation 2/200#1 and was SIGKILLed before its outcome.
    {
        let (h, _) = History::open(&path, 0).unwrap();
        let mut op = cluster_copy("2/200#1", read_back_off());
        op.id = 7;
        op.state = OpState::Running;
        op.finished_ms = None;
        op.outcome = None;
        op.attempts.clear();
        op.pending = vec![PendingStep {
            level: 1,
            device: "bmc".into(),
            port: None,
            phase: Phase::Off,
            command: "power off".into(),
            since_ms: 6,
        }];
        h.record(&op).unwrap();
    }
    let cfg = config(vec![target("n1", &[&["bmc"]])], dir.path());
    let d = TestDevice::new(PowerState::On);
    let r = rig_in(dir, cfg, &[("bmc", &d)]);
    let local = r.engine.operation(7).unwrap();
    assert_eq!(
        failed_code(&local),
        "interrupted",
        "the restart ended it: {local:?}"
    );
    let ledger_before = r.engine.inner.history.verify_chain().unwrap();

    // On rejoin the snapshot says another member finished it (twice in one batch, as a
    // snapshot and a delivery can both carry it), and holds an operation this member missed.
    let done = cluster_copy("2/200#1", read_back_off());
    let missed = cluster_copy("3/300#4", read_back_off());
    let ids = r
        .engine
        .record_cluster_copies(vec![done.clone(), done.clone(), missed])
        .await
        .unwrap();
    assert_eq!(
        ids,
        vec![7, 8],
        "the superseded record keeps its id; the missed one is new"
    );
    let op = r.engine.operation(7).unwrap();
    assert_eq!(op.state, OpState::Succeeded, "{op:?}");
    assert!(op.fenced());
    // The interrupted attempt stays in the record, followed by the finishing executor's.
    assert_eq!(op.attempts.len(), 2, "{:?}", op.attempts);
    assert!(
        matches!(&op.attempts[0].result, StepResult::Failed { code, .. } if code == "interrupted")
    );
    assert!(matches!(
        op.attempts[1].result,
        StepResult::Confirmed { .. }
    ));
    // Append-only: the interrupted record is still in the ledger, the outcome after it.
    assert_eq!(
        r.engine.inner.history.verify_chain().unwrap(),
        ledger_before + 2
    );
    let ledger = r.engine.inner.history.ledger(1, 100).unwrap();
    let states: Vec<(u64, OpState)> = ledger
        .iter()
        .filter_map(|rec| match &rec.entry {
            crate::history::LedgerEntry::Operation { operation } if operation.id == 7 => {
                Some((operation.id, operation.state))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (7, OpState::Running),
            (7, OpState::Failed),
            (7, OpState::Succeeded)
        ],
        "the ledger keeps every record of operation 7 in order"
    );

    // Heard of again: nothing more is written (the record is no longer interrupted).
    let again = r
        .engine
        .record_cluster_copies(vec![done, cluster_copy("3/300#4", read_back_off())])
        .await
        .unwrap();
    assert!(again.is_empty(), "copied twice: {again:?}");
    assert_eq!(
        r.engine.inner.history.verify_chain().unwrap(),
        ledger_before + 2
    );

    // Durable when the call returned: a read transaction sees only committed (fsynced)
    // transactions, and it finds both.
    let h = &r.engine.inner.history;
    assert_eq!(h.get(7).unwrap().unwrap().state, OpState::Succeeded);
    assert_eq!(h.cluster_operation("3/300#4").unwrap(), Some(8));
}

#[tokio::test]
async fn a_stored_cluster_outcome_is_never_replaced_by_a_later_word() {
    let r = rig(vec![target("n1", &[&["bmc"]])], &[]);
    // A copy recorded before, with a real outcome, is never replaced by a later word.
    let ids = r
        .engine
        .record_cluster_copies(vec![cluster_copy("2/200#1", read_back_off())])
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    let failed = Outcome::Failed {
        code: "executor_left".into(),
        message: "n1 NOT confirmed fenced".into(),
    };
    let later = r
        .engine
        .record_cluster_copies(vec![cluster_copy("2/200#1", failed)])
        .await
        .unwrap();
    assert!(
        later.is_empty(),
        "a stored success was overwritten: {later:?}"
    );
    assert_eq!(
        r.engine.operation(ids[0]).unwrap().state,
        OpState::Succeeded
    );
}
