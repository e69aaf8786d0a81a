//! Timeouts that name who spent the time (issue 15): a device that never answers is blamed,
//! while a step fenced itself never ran, or an answer it never got to read because its only
//! thread was busy, says "fenced fell behind" and never "a stuck or lying device". Either
//! way the target is NOT fenced.

use super::step::{step, StepPlan};
use super::testdev::{starve_runtime, Fault, TestDevice};
use super::tests::{req, rig, run, target};
use super::*;
use drivers::{PillKind, PowerCommand, PowerState};
use std::time::Duration;
use tokio::time::Instant;

/// The message of the only attempt of a failed, unfenced operation.
fn only_failure(op: &Operation) -> String {
    assert_eq!(op.state, OpState::Failed, "{op:?}");
    assert!(!op.fenced(), "{op:?}");
    assert_eq!(op.attempts.len(), 1, "{op:?}");
    match &op.attempts[0].result {
        StepResult::Failed { code, message } => {
            assert_eq!(code, "timeout", "{message}");
            message.clone()
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// Fences `n1` (one device, 5 s attempts) with the device's calls faulted in order.
async fn fence_with(faults: Vec<Fault>) -> (String, TestDevice) {
    let d = TestDevice::new(PowerState::On).with(|s| s.faults = faults.into());
    let r = rig(vec![target("n1", &[&["bmc"]])], &[("bmc", &d)]);
    let op = run(&r.engine, req("n1", Action::Off)).await;
    (only_failure(&op), d)
}

fn blames_fenced(m: &str) -> bool {
    m.contains("fenced fell behind, not the device") && m.contains("fenced overloaded")
}

#[tokio::test(start_paused = true)]
async fn status_reads_that_never_answer_blame_the_device() {
    // Status before the command, the command, then a read that hangs to the deadline.
    let (m, _) = fence_with(vec![Fault::None, Fault::None, Fault::Hang]).await;
    assert!(
        m.contains("none of the 1 power reads answered before the attempt deadline (5000 ms)")
            && m.contains("check the device's network")
            && m.contains("NOT confirmed off"),
        "{m}"
    );
    assert!(!blames_fenced(&m), "{m}");
}

#[tokio::test(start_paused = true)]
async fn reads_fenced_never_got_to_say_so_and_blame_no_device() {
    // The device accepts power off within 1 ms, but fenced's thread is busy for 6 s: the
    // deadline passes before fenced can send the first read.
    let (m, d) = fence_with(vec![Fault::None, Fault::Starve(Duration::from_secs(6))]).await;
    assert!(
        m.contains("the power state was never read")
            && m.contains("noticed the deadline 1000 ms late")
            && m.contains("NOT confirmed off"),
        "{m}"
    );
    assert!(blames_fenced(&m), "{m}");
    assert!(!m.contains("stuck or lying"), "{m}");
    // The device did switch: only fenced did not look.
    assert_eq!(d.true_power(), PowerState::Off);
    assert_eq!(d.state().off_reads, 0);
}

#[tokio::test(start_paused = true)]
async fn a_device_slow_to_accept_power_off_is_blamed() {
    let (m, d) = fence_with(vec![Fault::None, Fault::Slow(Duration::from_secs(6))]).await;
    assert!(
        m.starts_with("power off did not finish within the attempt deadline (5000 ms): the device did not answer this call in 5000 ms"),
        "{m}"
    );
    assert!(!blames_fenced(&m), "{m}");
    assert!(d.state().commands.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_power_off_fenced_reached_after_the_deadline_never_ran() {
    // The status read answers within 1 ms but is seen 6 s later; the command then starts
    // after the deadline and the device (which would answer in 1 ms) gets no time.
    let (m, d) = fence_with(vec![
        Fault::Starve(Duration::from_secs(6)),
        Fault::Slow(Duration::from_millis(1)),
    ])
    .await;
    assert!(
        m.starts_with("power off never ran: fenced got to it 1000 ms after the attempt deadline (5000 ms), so the device was given no time to answer"),
        "{m}"
    );
    assert!(blames_fenced(&m), "{m}");
    assert!(d.state().commands.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_identity_check_the_device_never_answers_blames_the_device() {
    let d = TestDevice::new(PowerState::On).with(|s| s.faults = [Fault::Hang].into());
    let mut t = target("n1", &[&["bmc"]]);
    t.identities.insert("bmc".into(), "guid-a".into());
    let r = rig(vec![t], &[("bmc", &d)]);
    let m = only_failure(&run(&r.engine, req("n1", Action::Off)).await);
    assert!(
        m.starts_with("identity check did not finish within the attempt deadline (5000 ms): the device did not answer this call in 5000 ms"),
        "{m}"
    );
    assert!(!blames_fenced(&m), "{m}");
    assert!(d.state().commands.is_empty());
}

/// One step of `n1` with identity checking, run directly so that the test decides when
/// fenced's thread is busy.
async fn identity_step(d: &TestDevice, plan: StepPlan) -> String {
    let mut t = target("n1", &[&["bmc"]]);
    t.identities.insert("bmc".into(), "guid-a".into());
    let r = rig(vec![t.clone()], &[("bmc", d)]);
    let entry = t.levels[0][0].clone();
    match step(&r.engine.inner, &t, &entry, plan).await {
        StepResult::Failed { code, message } => {
            assert_eq!(code, "timeout", "{message}");
            message
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

fn plan_from_now() -> StepPlan {
    let begun = Instant::now();
    StepPlan {
        command: PowerCommand::Off,
        pill: PillKind::Off,
        begun,
        deadline: begun + Duration::from_secs(5),
    }
}

#[tokio::test(start_paused = true)]
async fn an_identity_check_fenced_reached_after_the_deadline_never_ran() {
    // A device that would answer in 1 ms; fenced gets to the step 1 s after its deadline.
    let d = TestDevice::new(PowerState::On)
        .with(|s| s.faults = [Fault::Slow(Duration::from_millis(1))].into());
    let plan = plan_from_now();
    starve_runtime(Duration::from_secs(6)).await;
    let m = identity_step(&d, plan).await;
    assert!(
        m.starts_with("identity check never ran: fenced got to it 1000 ms after the attempt deadline (5000 ms)"),
        "{m}"
    );
    assert!(blames_fenced(&m), "{m}");
    assert!(d.state().commands.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_identity_check_fenced_was_too_busy_to_read_says_so() {
    // The check is under way when fenced's thread is busy from 1 s to 6 s: the deadline is
    // seen 1 s late, and whatever the device sent meanwhile was not read.
    let d = TestDevice::new(PowerState::On).with(|s| s.faults = [Fault::Hang].into());
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        starve_runtime(Duration::from_secs(5)).await;
    });
    let m = identity_step(&d, plan_from_now()).await;
    assert!(
        m.starts_with("identity check did not finish within the attempt deadline (5000 ms), and any answer may not have been read")
            && m.contains("noticed the deadline 1000 ms late"),
        "{m}"
    );
    assert!(blames_fenced(&m), "{m}");
}
