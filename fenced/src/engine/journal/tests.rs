//! Lie tests of the group commit: a failed shared commit, a failed first record and a health
//! check that failed while fencing ran must never end in a claim that is not true. And
//! fencing before monitoring: a scheduled check waits while fencing is in flight, and only
//! as many run at once as the semaphore allows.

use super::super::testdev::{Fault, TestDevice};
use super::super::tests::{config, rig_in, target, Rig};
use super::super::*;
use crate::history::{LedgerEntry, Write};
use drivers::PowerState;
use std::time::Duration;

fn by() -> Requester {
    Requester {
        caller: Caller {
            identity: "uid:0".into(),
        },
        source: "test".into(),
    }
}

fn off(t: &str) -> FenceRequest {
    FenceRequest {
        target: t.into(),
        action: Action::Off,
        reason: "batch".into(),
        request_id: None,
        timeout_s: None,
    }
}

/// `n` targets `n0..`, each behind its own device `d0..`, with history in a kept directory.
fn fleet(n: usize) -> (Rig, Vec<TestDevice>) {
    let devs: Vec<TestDevice> = (0..n)
        .map(|_| {
            TestDevice::new(PowerState::On).with(|s| s.switch_delay = Duration::from_millis(300))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let targets = (0..n)
        .map(|i| target(&format!("n{i}"), &[&[&format!("d{i}")]]))
        .collect();
    let cfg = config(targets, dir.path());
    let names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    let pairs: Vec<(&str, &TestDevice)> =
        names.iter().map(|n| n.as_str()).zip(devs.iter()).collect();
    (rig_in(dir, cfg, &pairs), devs)
}

/// Stops the engine (every task holding it has ended) and opens its history file again, as
/// a restarted fenced would.
async fn reopen(r: Rig) -> (tempfile::TempDir, History, Vec<Operation>) {
    let Rig { engine, _dir: dir } = r;
    // The operations' tasks hold the engine, a running committer the journal.
    while Arc::strong_count(&engine.inner) > 1 || Arc::strong_count(&engine.inner.journal) > 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(engine);
    let (h, interrupted) = History::open(&dir.path().join("h.redb"), 0).unwrap();
    (dir, h, interrupted)
}

/// How many ledger records hold a snapshot of operation `id`.
fn snapshots(h: &History, id: u64) -> usize {
    h.ledger(1, 100_000)
        .unwrap()
        .iter()
        .filter(|r| matches!(&r.entry, LedgerEntry::Operation { operation } if operation.id == id))
        .count()
}

fn audit_outcomes(h: &History, what: &str) -> Vec<String> {
    h.ledger(1, 100_000)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.entry {
            LedgerEntry::Audit {
                what: w, outcome, ..
            } if w == what => Some(outcome),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_failed_shared_commit_falls_back_to_single_writes_and_loses_nothing() {
    let (r, devs) = fleet(6);
    // Every shared commit fails: each write must then be stored on its own, exactly once.
    r.engine.inner.history.faults.lock().unwrap().batches = u32::MAX;
    let answers = r
        .engine
        .fence_batch((0..6).map(|i| off(&format!("n{i}"))).collect(), &by())
        .await;
    let ids: Vec<u64> = answers
        .into_iter()
        .map(|a| {
            let a = a.unwrap();
            assert!(!a.joined);
            a.id
        })
        .collect();
    for (id, d) in ids.iter().zip(&devs) {
        let op = r
            .engine
            .wait_operation(*id, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(op.fenced(), "{op:?}");
        assert_eq!(d.true_power(), PowerState::Off);
    }
    assert!(r.engine.inner.history.faults.lock().unwrap().batches_failed >= 1);
    let (_dir, h, interrupted) = reopen(r).await;
    assert!(interrupted.is_empty(), "{interrupted:?}");
    for (i, id) in ids.iter().enumerate() {
        let op = h.get(*id).unwrap().unwrap();
        assert!(op.fenced() && op.state == OpState::Succeeded, "{op:?}");
        // The accepted record and the outcome, each once: the failed shared transaction left
        // nothing behind, and its retry did not write twice.
        assert_eq!(snapshots(&h, *id), 2);
        assert_eq!(
            audit_outcomes(&h, &format!("fence n{i} off")),
            [format!("accepted as operation {id}")]
        );
    }
    assert!(h.verify_chain().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_first_record_that_fails_is_refused_touches_nothing_and_fails_its_joiner() {
    let (r, devs) = fleet(4);
    // The first record of n2's operation cannot be stored (whether shared or on its own).
    r.engine.inner.history.faults.lock().unwrap().write = Some(Box::new(|w| {
        matches!(w, Write::Operation { operation, .. }
            if operation.target == "n2" && !operation.state.is_terminal())
    }));
    let mut reqs: Vec<FenceRequest> = (0..4).map(|i| off(&format!("n{i}"))).collect();
    // n2 named twice: the second entry joins the first, which history refuses.
    reqs.push(off("n2"));
    let answers = r.engine.fence_batch(reqs, &by()).await;
    for i in [2, 4] {
        let e = answers[i].as_ref().unwrap_err();
        assert_eq!(e.code(), "history_failed");
        assert!(
            e.to_string().contains("n2 NOT fenced")
                && e.to_string().contains("no device was touched"),
            "{e}"
        );
        assert!(e.hint().contains("no device was touched"));
        assert_eq!(crate::api::status_of(e).as_u16(), 500);
    }
    let mut ids = Vec::new();
    for i in [0, 1, 3] {
        let id = answers[i].as_ref().unwrap().id;
        let op = r
            .engine
            .wait_operation(id, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(op.fenced(), "{op:?}");
        ids.push(id);
    }
    // Long after: n2's device never heard a thing, and n2 is free again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(devs[2].state().commands.is_empty());
    assert_eq!(devs[2].state().status_reads, 0);
    assert_eq!(devs[2].true_power(), PowerState::On);
    assert_eq!(r.engine.in_flight(), 0);
    assert!(r.engine.inner.history.faults.lock().unwrap().writes_failed >= 1);
    let (_dir, h, interrupted) = reopen(r).await;
    assert!(interrupted.is_empty());
    // History holds nothing for n2 that could read as fenced: no operation at all, and the
    // two refusals with their reason.
    let n2 = h
        .query(&HistoryQuery {
            target: Some("n2".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(n2.is_empty(), "{n2:?}");
    let refusals = audit_outcomes(&h, "fence n2 off");
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals
        .iter()
        .all(|o| o.starts_with("refused: history_failed") && o.contains("NOT fenced")));
    for id in ids {
        assert!(h.get(id).unwrap().unwrap().fenced());
    }
    assert!(h.verify_chain().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_health_check_that_failed_while_fencing_ran_is_not_stored() {
    let (r, devs) = fleet(2);
    let permits = tokio::sync::Semaphore::new(4);
    // d1 hangs its health check (a 10 s timeout) while n0 is fenced.
    devs[1].state().faults.push_back(Fault::Hang);
    let engine = r.engine.clone();
    let check = tokio::spawn(async move {
        let permits = tokio::sync::Semaphore::new(4);
        engine.scheduled_check("d1", &permits).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = r.engine.fence(off("n0"), &by()).await.unwrap();
    assert!(r
        .engine
        .wait_operation(a.id, Duration::from_secs(60))
        .await
        .unwrap()
        .fenced());
    assert_eq!(
        check.await.unwrap(),
        None,
        "the failed check must not be stored"
    );
    let health = |name: &str| {
        r.engine
            .devices()
            .into_iter()
            .find(|d| d.name == name)
            .unwrap()
            .health
    };
    assert_eq!(health("d1"), HealthState::Unknown);
    // The same failure with no fencing during it is the device's own: stored.
    devs[1].state().faults.push_back(Fault::Hang);
    assert_eq!(
        r.engine.scheduled_check("d1", &permits).await,
        Some(HealthState::Unhealthy)
    );
    // A check that succeeds while fencing runs is stored (an answer is an answer).
    let engine = r.engine.clone();
    let check = tokio::spawn(async move {
        let permits = tokio::sync::Semaphore::new(4);
        engine.scheduled_check("d1", &permits).await
    });
    devs[1]
        .state()
        .faults
        .push_back(Fault::Slow(Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = r.engine.fence(off("n0"), &by()).await.unwrap();
    r.engine
        .wait_operation(a.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(check.await.unwrap(), Some(HealthState::Healthy));
    assert_eq!(health("d1"), HealthState::Healthy);
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_check_waits_while_fencing_is_in_flight() {
    let (r, devs) = fleet(2);
    let permits = Arc::new(tokio::sync::Semaphore::new(4));
    // n0's device takes 300 ms to switch off: fencing is in flight that long.
    let a = r.engine.fence(off("n0"), &by()).await.unwrap();
    assert_eq!(r.engine.in_flight(), 1);
    let engine = r.engine.clone();
    let p = permits.clone();
    let check = tokio::spawn(async move {
        let state = engine.scheduled_check("d1", &p).await;
        (state, tokio::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        devs[1].state().health_checks,
        0,
        "a check must not start while fencing is in flight"
    );
    assert!(!check.is_finished());
    let op = r
        .engine
        .wait_operation(a.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(op.fenced(), "{op:?}");
    let ended = tokio::time::Instant::now();
    let (state, checked) = check.await.unwrap();
    assert_eq!(state, Some(HealthState::Healthy));
    assert_eq!(devs[1].state().health_checks, 1);
    assert!(checked >= ended, "the check ended before the fence did");
    // With nothing in flight a check runs at once.
    let before = tokio::time::Instant::now();
    assert_eq!(
        r.engine.scheduled_check("d1", &permits).await,
        Some(HealthState::Healthy)
    );
    assert_eq!(tokio::time::Instant::now(), before);
}

#[tokio::test(start_paused = true)]
async fn no_more_scheduled_checks_run_at_once_than_the_permits() {
    const PERMITS: usize = 4;
    let (r, devs) = fleet(10);
    for d in &devs {
        d.state()
            .faults
            .push_back(Fault::Slow(Duration::from_secs(1)));
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(PERMITS));
    let checks: Vec<_> = (0..devs.len())
        .map(|i| {
            let engine = r.engine.clone();
            let p = permits.clone();
            tokio::spawn(async move { engine.scheduled_check(&format!("d{i}"), &p).await })
        })
        .collect();
    let begun = || -> u32 { devs.iter().map(|d| d.state().health_checks).sum() };
    // Each check takes 1 s: within each second only PERMITS more begin.
    let start = tokio::time::Instant::now();
    for (at_ms, want) in [(500, 4), (1500, 8), (2500, 10)] {
        tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
        assert_eq!(begun(), want, "checks begun by {at_ms} ms");
        assert!(permits.available_permits() <= PERMITS);
    }
    for c in checks {
        assert_eq!(c.await.unwrap(), Some(HealthState::Healthy));
    }
    assert_eq!(permits.available_permits(), PERMITS);
}
