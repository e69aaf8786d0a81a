//! Our watcher on disks that fail on command (`hw_tests::faultydisk`: FUSE under a loop device,
//! direct I/O end to end): one hanging disk of three is survived (still fed); I/O errors on a
//! second lose the majority and self-fence; a hanging majority self-fences too; slow disks
//! within the freshness window are fine. In-process with a recording sink (`watch_common`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod watch_common;

use hw_tests::faultydisk::{self, Fault, FaultyDisk};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use watch_common::start;
use watchdog::Outcome;

const LONG: Duration = Duration::from_secs(30);

fn disks(n: usize) -> Option<Vec<FaultyDisk>> {
    if !faultydisk::require() {
        return None;
    }
    let v: Vec<FaultyDisk> = (0..n).map(|_| FaultyDisk::new(4).unwrap()).collect();
    let mut cmd = Command::new(hw_tests::bins::palisade_sbd());
    cmd.env_remove("SBD_DEVICE").env("PALISADE_SBD_CONFIG", "");
    for d in &v {
        cmd.arg("-d").arg(d.path());
    }
    let o = cmd
        .args(["-1", "1", "-2", "0", "-4", "2", "create"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(v)
}

fn paths(
    v: &[FaultyDisk],
) -> Vec<(
    PathBuf,
    Option<std::sync::Arc<hw_tests::throttle::Throttle>>,
)> {
    v.iter().map(|d| (d.path().to_path_buf(), None)).collect()
}

#[test]
fn one_hanging_disk_is_survived_and_errors_on_a_second_self_fence() {
    let Some(v) = disks(3) else { return };
    let w = start(&paths(&v), "n1");
    assert!(w.dog.fed_more(3, LONG));
    v[0].set(Fault::Hang);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        w.dog.fed_more(20, LONG),
        "two of three disks answer: still fed"
    );
    // Two reads a loop at 50 ms each: well inside the 500 ms window (watchdog 1 s).
    v[1].set(Fault::Delay(Duration::from_millis(50)));
    assert!(
        w.dog.fed_more(20, LONG),
        "slow but within the window: still fed"
    );
    assert!(w.rec.0.lock().unwrap().is_empty());
    v[1].set(Fault::Error);
    let out = w.join(LONG).unwrap();
    let Outcome::SelfFenced { reason, .. } = out else {
        panic!("{out:?}")
    };
    assert!(reason.contains("only 1 of 3"), "{reason}");
}

#[test]
fn a_hanging_majority_self_fences() {
    let Some(v) = disks(3) else { return };
    let w = start(&paths(&v), "n1");
    assert!(w.dog.fed_more(3, LONG));
    v[1].set(Fault::Hang);
    v[2].set(Fault::Hang);
    let rec = w.rec.clone();
    let out = w.join(LONG).unwrap();
    assert!(matches!(out, Outcome::SelfFenced { .. }), "{out:?}");
    assert_eq!(rec.0.lock().unwrap().len(), 1);
    // Dropping the disks aborts the FUSE connections: the held reads fail, nothing stays stuck.
}
