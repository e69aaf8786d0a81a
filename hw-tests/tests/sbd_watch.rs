//! Our SBD watcher on real loop devices: it obeys pills (ours and Debian sbd's), clears `test`,
//! exits on `exit`, stops feeding and self-fences when it loses its disks or their headers, and
//! Debian sbd's watcher obeys our `message`.
//!
//! Safety: our watcher runs in-process with a recording sink and a software watchdog
//! (`watch_common`); `palisade-sbd watch` itself is never run on this machine. Debian sbd's
//! watcher runs only as shared/PEERS.md says: `-w /dev/null -Z -Z`, SBD_PACEMAKER=no.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod watch_common;

use drivers::sbd::Message;
use hw_tests::loopdev::{self, LoopDevice};
use hw_tests::require;
use hw_tests::throttle::Throttle;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use watch_common::{mailbox, pill, sbd_disks, start, wait_slot, SbdWatcher};
use watchdog::{Outcome, SelfFenceAction};

const SBD: &str = "/usr/sbin/sbd";
const LONG: Duration = Duration::from_secs(30);

fn paths(v: &[LoopDevice]) -> Vec<(PathBuf, Option<Arc<Throttle>>)> {
    v.iter().map(|d| (d.path().to_path_buf(), None)).collect()
}

#[test]
fn reset_off_and_crashdump_pills_are_obeyed_and_the_watchdog_left_armed() {
    if !loopdev::require() {
        return;
    }
    let v = sbd_disks(3);
    for (msg, action) in [
        (Message::Reset, SelfFenceAction::Reboot),
        (Message::Off, SelfFenceAction::Off),
        (Message::Crashdump, SelfFenceAction::Crashdump),
    ] {
        let w = start(&paths(&v), "n1");
        assert!(w.dog.fed_more(3, LONG), "healthy watcher feeds");
        assert_eq!(w.dog.granted_timeout(), 1, "header's watchdog timeout");
        pill(&v, "n1", msg);
        let (dog, rec) = (w.dog.clone(), w.rec.clone());
        let out = w.join(LONG).unwrap();
        assert!(
            matches!(&out, Outcome::SelfFenced { action: a, reason } if *a == action && reason.contains("from `fencer`")),
            "{out:?}"
        );
        assert_eq!(rec.0.lock().unwrap().len(), 1, "sink called once");
        assert!(!dog.is_disarmed(), "never magic-closed after a pill");
        // The next round starts from a clean slot (as an operator would clear it).
        pill(&v, "n1", Message::Clear);
    }
}

#[test]
fn a_pill_at_start_is_refused_not_erased() {
    if !loopdev::require() {
        return;
    }
    let v = sbd_disks(1);
    let w = start(&paths(&v), "n1");
    assert!(w.dog.fed_more(1, LONG));
    drop(w);
    pill(&v, "n1", Message::Reset);
    let w = start(&paths(&v), "n1");
    let e = w.join(LONG).unwrap_err().to_string();
    assert!(e.contains("this node was fenced"), "{e}");
    assert_eq!(mailbox(&v[0], 0), Message::Reset, "pill kept");
}

#[test]
fn test_is_cleared_and_exit_disarms_cleanly() {
    if !loopdev::require() {
        return;
    }
    let v = sbd_disks(3);
    let w = start(&paths(&v), "n1");
    assert!(w.dog.fed_more(1, LONG));
    let slot = wait_slot(&v, "n1", LONG);
    pill(&v, "n1", Message::Test);
    let t = Instant::now();
    while v.iter().any(|d| mailbox(d, slot) != Message::Clear) {
        assert!(t.elapsed() < LONG, "test never cleared");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(w.dog.fed_more(2, LONG), "still fed after test");
    pill(&v, "n1", Message::Exit);
    let (dog, rec) = (w.dog.clone(), w.rec.clone());
    let out = w.join(LONG).unwrap();
    assert!(matches!(out, Outcome::Exited { .. }), "{out:?}");
    assert!(dog.is_disarmed(), "magic close on exit");
    assert!(rec.0.lock().unwrap().is_empty());
}

#[test]
fn corrupted_headers_on_a_majority_stop_feeding_and_self_fence() {
    if !loopdev::require() {
        return;
    }
    let v = sbd_disks(3);
    let w = start(&paths(&v), "n1");
    assert!(w.dog.fed_more(3, LONG));
    for d in &v[..2] {
        let disk =
            drivers::sbd::Disk::open(d.path(), Instant::now() + Duration::from_secs(3)).unwrap();
        use drivers::sbd::BlockDevice;
        disk.write(0, &[0x5a; 512], Instant::now() + Duration::from_secs(3))
            .unwrap();
    }
    let out = w.join(LONG).unwrap();
    let Outcome::SelfFenced { action, reason } = out else {
        panic!("{out:?}")
    };
    assert_eq!(action, SelfFenceAction::Reboot);
    assert!(
        reason.contains("only 1 of 3") && reason.contains("no SBD header"),
        "{reason}"
    );
}

#[test]
fn frozen_majority_self_fences_and_one_frozen_disk_of_three_is_survived() {
    if !loopdev::require() || !Throttle::require() {
        return;
    }
    let v = sbd_disks(3);
    let thr: Vec<Arc<Throttle>> = v
        .iter()
        .map(|d| Arc::new(Throttle::new(&d.maj_min().unwrap(), 0).unwrap()))
        .collect();
    // The servants hold the throttles (a stuck one forever): lift the limits explicitly, also
    // when an assertion fails, so the stuck reads complete and the test process can exit.
    let _lift = Lift(thr.clone());
    let disks: Vec<_> = v
        .iter()
        .zip(&thr)
        .map(|(d, t)| (d.path().to_path_buf(), Some(Arc::clone(t))))
        .collect();
    let w = start(&disks, "n1");
    assert!(w.dog.fed_more(3, LONG));
    // One disk stops answering: reads sleep in the kernel; the servant is stuck, not awaited.
    thr[0].limit(1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        w.dog.fed_more(20, LONG),
        "two of three disks still fresh: fed"
    );
    assert!(w.rec.0.lock().unwrap().is_empty());
    thr[1].limit(1).unwrap();
    let rec = w.rec.clone();
    let out = w.join(LONG).unwrap();
    let Outcome::SelfFenced { reason, .. } = out else {
        panic!("{out:?}")
    };
    assert!(reason.contains("only 1 of 3"), "{reason}");
    assert_eq!(rec.0.lock().unwrap().len(), 1);
    // Dropping the throttles lifts the limits: the stuck reads complete and the threads go.
}

struct Lift(Vec<Arc<Throttle>>);

impl Drop for Lift {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = t.limit(0);
        }
    }
}

fn sbd_ready() -> bool {
    require::needs_command(SBD, "Debian package sbd") && loopdev::require()
}

#[test]
fn a_pill_from_debian_sbd_message_is_obeyed_by_our_watcher() {
    if !sbd_ready() {
        return;
    }
    let v = sbd_disks(3);
    let w = start(&paths(&v), "ours");
    assert!(w.dog.fed_more(3, LONG));
    wait_slot(&v, "ours", LONG);
    let mut cmd = Command::new(SBD);
    cmd.env_clear().env("SBD_PACEMAKER", "no");
    for d in &v {
        cmd.arg("-d").arg(d.path());
    }
    // sbd waits msgwait (2 s) before returning; our watcher has acted long before.
    let st = cmd
        .args(["-n", "debian", "message", "ours", "off"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = w.join(LONG).unwrap();
    assert!(
        matches!(&out, Outcome::SelfFenced { action: SelfFenceAction::Off, reason } if reason.contains("from `debian`")),
        "{out:?}"
    );
}

#[test]
fn our_message_is_obeyed_by_debian_sbds_watcher() {
    if !sbd_ready() {
        return;
    }
    let v = sbd_disks(3);
    let s = SbdWatcher::start(&v.iter().map(|d| d.path()).collect::<Vec<_>>(), "theirs");
    let slot = wait_slot(&v, "theirs", LONG);
    std::thread::sleep(Duration::from_secs(1));
    assert!(s.alive(), "sbd watcher runs");
    // `test` is acknowledged (cleared) by sbd's watcher, which keeps running.
    pill(&v, "theirs", Message::Test);
    let t = Instant::now();
    while v.iter().any(|d| mailbox(d, slot) != Message::Clear) {
        assert!(t.elapsed() < LONG, "sbd never cleared test");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.alive());
    let mut cmd = Command::new(hw_tests::bins::palisade_sbd());
    cmd.env_remove("SBD_DEVICE").env("PALISADE_SBD_CONFIG", "");
    for d in &v {
        cmd.arg("-d").arg(d.path());
    }
    let o = cmd
        .args(["-n", "fencer", "message", "theirs", "reset"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // With -Z -Z a pill makes sbd's watcher exit instead of resetting; msgwait (2 s) has
    // passed when our message returns, and sbd polls every second.
    let t = Instant::now();
    while s.alive() {
        assert!(t.elapsed() < LONG, "sbd's watcher ignored our pill");
        std::thread::sleep(Duration::from_millis(50));
    }
}
