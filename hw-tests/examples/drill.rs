//! The failover drill as a bench: runs it several times and prints the median timeline, from
//! node A cut off, to A confirmed fenced, to the workload running on node B.
//!
//! ```sh
//! cargo build -p fenced --bin fenced && cargo build -p hw-tests --bin palisade-workload
//! cargo run -p hw-tests --example drill -- --runs 5            # root: namespaces, cgroups, loop devices
//! cargo run -p hw-tests --example drill -- --variant skip      # the controller that skips fencing
//! cargo run -p hw-tests --example drill -- --variant stuck     # a stuck BMC: the workload stays down
//! cargo run -p hw-tests --example drill -- --fenced target/release/fenced   # another fenced build
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::drill::controller::Decision;
use hw_tests::drill::failover::{self as harness, Bins, Knobs, Variant};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: drill [--runs N] [--variant fenced|skip|stuck] [--heartbeat-ms MS] [--lost-after-ms MS] [--fenced PATH]";

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn main() -> ExitCode {
    let mut runs = 5usize;
    let mut variant = Variant::Fenced;
    let mut knobs = Knobs::default();
    let mut fenced = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        let ms = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
        match (a.as_str(), v.as_deref()) {
            ("--runs", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                runs = n.parse().unwrap_or(5)
            }
            ("--variant", Some("fenced")) => variant = Variant::Fenced,
            ("--variant", Some("skip")) => variant = Variant::SkipFencing,
            ("--variant", Some("stuck")) => variant = Variant::StuckBmc,
            ("--heartbeat-ms", Some(_)) if ms(&v).is_some() => {
                knobs.heartbeat = Duration::from_millis(ms(&v).unwrap_or(50))
            }
            ("--lost-after-ms", Some(_)) if ms(&v).is_some() => {
                knobs.lost_after = Duration::from_millis(ms(&v).unwrap_or(500))
            }
            ("--fenced", Some(p)) => fenced = Some(std::path::PathBuf::from(p)),
            _ => {
                eprintln!("drill: bad argument `{a}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let bins = Bins {
        fenced: fenced.unwrap_or_else(hw_tests::bins::fenced),
        workload: hw_tests::bins::workspace_bin("hw-tests", "palisade-workload"),
    };
    println!(
        "drill {variant:?}: {runs} runs, {}, heartbeat every {} ms, lost after {} ms, a record every {} ms",
        bins.fenced.display(),
        knobs.heartbeat.as_millis(),
        knobs.lost_after.as_millis(),
        knobs.write_interval.as_millis()
    );
    let mut cols: [Vec<f64>; 6] = Default::default();
    let mut unsafe_runs = 0;
    for i in 1..=runs {
        let r = match harness::run(variant, &knobs, &bins) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("drill: run {i} failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "run {i}: {:?}\n{}  volume: {}\n  A wrote {} records after the cut; at the end A was {} by its BMC and {} for real",
            r.decision,
            r.timeline.report(),
            r.verdict.summary(),
            r.a_records_after_cut,
            if r.a_powered.0 { "on" } else { "off" },
            if r.a_powered.1 { "running" } else { "off" },
        );
        if variant == Variant::Fenced && r.decision != Decision::FailedOver {
            eprintln!("fenced's log:\n{}", r.fenced_log);
        }
        if !r.verdict.is_clean() {
            unsafe_runs += 1;
        }
        let t = &r.timeline;
        let fenced_ok = r.decision == Decision::FailedOver && t.fence_requests > 0;
        let span = |from: Option<u64>, to: Option<u64>| Some(to?.checked_sub(from?)? as f64 / 1e6);
        let vals = [
            t.since_cut_ms(t.lost),
            if fenced_ok {
                t.since_cut_ms(t.fence_answered)
            } else {
                None
            },
            t.since_cut_ms(t.standby_started),
            t.since_cut_ms(t.standby_first_record),
            span(t.fence_requested, t.fence_answered),
            t.since_cut_ms(t.primary_last_record),
        ];
        for (c, v) in cols.iter_mut().zip(vals) {
            c.extend(v);
        }
    }
    let names = [
        "cut off -> A lost (heartbeats)",
        "cut off -> A confirmed fenced",
        "cut off -> workload started on B",
        "cut off -> B's first record on disk",
        "fence requested -> outcome (fenced)",
        "cut off -> A's last record on disk",
    ];
    println!("\nmedians over {runs} runs ({variant:?}):");
    for (name, c) in names.iter().zip(cols) {
        let n = c.len();
        match median(c) {
            Some(m) => println!("  {name:<40} {m:>9.1} ms  ({n} runs)"),
            None => println!("  {name:<40}         -     (never)"),
        }
    }
    println!("  volume corrupted in {unsafe_runs} of {runs} runs");
    if variant != Variant::SkipFencing && unsafe_runs > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
