//! The failover drill, each variant once: the safe controller fails over only after fenced
//! confirmed node A off (the volume shows one writer at a time); a controller that skips
//! fencing corrupts the volume (and the checker sees it); a stuck BMC keeps the workload down.
//! Timelines are printed, never asserted (the machine is noisy); `examples/drill.rs` gives
//! medians.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{Bins, DrillResult, Knobs, Variant};
use hw_tests::drill::controller::{Decision, FenceOutcome};

fn drill(variant: Variant) -> DrillResult {
    let bins = Bins {
        fenced: hw_tests::bins::fenced(),
        workload: env!("CARGO_BIN_EXE_palisade-workload").into(),
    };
    let r = harness::run(variant, &Knobs::default(), &bins).unwrap_or_else(|e| panic!("{e}"));
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
