//! The disk-heartbeat witness and the heartbeat area on real loop devices: our watcher
//! (in-process, recording sink, software watchdog: `watch_common`) writes heartbeats, the
//! witness sees them advance, stop, be absent or become unreadable; ClusterLabs sbd's
//! `dump`, `list`, `message` and watcher keep working on a disk with heartbeats, and a disk
//! made by `sbd create` stays valid for sbd after `palisade-sbd create-heartbeat`.
//!
//! Safety: `palisade-sbd watch` is never run here; Debian sbd's watcher only as
//! shared/PEERS.md says (`-w /dev/null -Z -Z`, SBD_PACEMAKER=no).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod watch_common;

use drivers::sbd::{BlockDevice, Disk};
use drivers::witness::disk::{DiskHeartbeatConfig, DiskHeartbeatWitness};
use drivers::witness::{Verdict, Witness};
use hw_tests::faultydisk::{self, Fault, FaultyDisk};
use hw_tests::loopdev::{self, LoopDevice};
use hw_tests::require;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use watch_common::{pill, sbd_disks, start, wait_slot, SbdWatcher};
use watchdog::Outcome;

const SBD: &str = "/usr/sbin/sbd";
const LONG: Duration = Duration::from_secs(30);

fn witness(path: &Path, node: &str, settle_ms: u64) -> DiskHeartbeatWitness {
    let mut c = DiskHeartbeatConfig::new(path, node);
    c.settle = Duration::from_millis(settle_ms);
    c.poll = Duration::from_millis(100);
    DiskHeartbeatWitness::new(c).unwrap()
}

fn observe(w: &DiskHeartbeatWitness, within: Duration) -> drivers::witness::Observation {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(w.observe(tokio::time::Instant::now() + within))
}

fn detail(o: &drivers::witness::Observation) -> String {
    o.evidence
        .iter()
        .map(|e| e.detail.clone())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn paths(
    v: &[PathBuf],
) -> Vec<(
    PathBuf,
    Option<std::sync::Arc<hw_tests::throttle::Throttle>>,
)> {
    v.iter().map(|p| (p.clone(), None)).collect()
}

fn run(cmd: &str, args: &[&str], devs: &[&Path]) -> Output {
    let mut c = Command::new(cmd);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("SBD_PACEMAKER", "no")
        .env("PALISADE_SBD_CONFIG", "");
    for d in devs {
        c.arg("-d").arg(d);
    }
    c.args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn raw(dev: &Path, first: u64, count: u64) -> Vec<u8> {
    let d = Disk::open(dev, Instant::now() + Duration::from_secs(3)).unwrap();
    d.read(first, count, Instant::now() + Duration::from_secs(3))
        .unwrap()
}

#[test]
fn a_running_watcher_is_alive_and_a_stopped_or_self_fenced_one_silent() {
    if !loopdev::require() {
        return;
    }
    let v = sbd_disks(1);
    let p = vec![v[0].path().to_path_buf()];
    let w = start(&paths(&p), "n1");
    assert!(w.dog.fed_more(3, LONG));
    wait_slot(&v, "n1", LONG);
    let wit = witness(&p[0], "n1", 1_000);
    let o = observe(&wit, Duration::from_secs(5));
    assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
    assert!(detail(&o).contains("advanced from"), "{o:?}");
    // Stopped (as a killed watcher: nothing writes any more).
    drop(w);
    let o = observe(&wit, Duration::from_secs(5));
    assert_eq!(o.verdict, Verdict::Silent, "{o:?}");
    // Self-fenced on a pill: its heartbeat stops with it.
    let w = start(&paths(&p), "n1");
    assert!(w.dog.fed_more(3, LONG));
    assert_eq!(
        observe(&wit, Duration::from_secs(5)).verdict,
        Verdict::Alive
    );
    pill(&v, "n1", drivers::sbd::Message::Off);
    assert!(matches!(w.join(LONG).unwrap(), Outcome::SelfFenced { .. }));
    let o = observe(&wit, Duration::from_secs(5));
    assert_eq!(o.verdict, Verdict::Silent, "{o:?}");
}

#[test]
fn a_disk_made_by_sbd_gives_no_evidence_until_create_heartbeat() {
    if !(require::needs_command(SBD, "Debian package sbd") && loopdev::require()) {
        return;
    }
    let d = LoopDevice::new(16, None).unwrap();
    let dev = d.path();
    ok(&run(SBD, &["-1", "1", "-4", "2", "create"], &[dev]));
    let w = start(&paths(&[dev.to_path_buf()]), "ours");
    assert!(w.dog.fed_more(3, LONG));
    let wit = witness(dev, "ours", 500);
    let o = observe(&wit, Duration::from_secs(5));
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    assert!(detail(&o).contains("create-heartbeat"), "{o:?}");
    assert!(
        raw(dev, 511, 256).iter().all(|b| *b == 0),
        "nothing written past sbd's sectors"
    );
    drop(w);
    let sbd_made = raw(dev, 0, 511);
    let out = ok(&run(
        &hw_tests::bins::palisade_sbd().display().to_string(),
        &["create-heartbeat"],
        &[dev],
    ));
    assert!(out.contains("Heartbeat area for 255 slots"), "{out}");
    // sbd's slot table (with our watcher's slot in it) is byte-identical; sbd still reads it.
    assert!(
        raw(dev, 0, 511) == sbd_made,
        "create-heartbeat changed sbd's sectors"
    );
    let dump = ok(&run(SBD, &["dump"], &[dev]));
    assert!(dump.contains("Timeout (msgwait)  : 2"), "{dump}");
    assert!(ok(&run(SBD, &["list"], &[dev])).contains("ours\tclear"));
    let w = start(&paths(&[dev.to_path_buf()]), "ours");
    assert!(w.dog.fed_more(3, LONG));
    assert_eq!(
        observe(&wit, Duration::from_secs(5)).verdict,
        Verdict::Alive
    );
    drop(w);
    // `sbd create` again: a new UUID, our area is stale and says so.
    ok(&run(SBD, &["-1", "1", "-4", "2", "create"], &[dev]));
    let o = observe(&wit, Duration::from_secs(5));
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
}

#[test]
fn sbd_dump_list_message_and_its_watcher_work_beside_our_heartbeats() {
    if !(require::needs_command(SBD, "Debian package sbd") && loopdev::require()) {
        return;
    }
    let v = sbd_disks(1);
    let dev = v[0].path();
    let w = start(&paths(&[dev.to_path_buf()]), "ours");
    assert!(w.dog.fed_more(3, LONG));
    wait_slot(&v, "ours", LONG);
    // sbd's own watcher on the same disk, in the next slot.
    let theirs = SbdWatcher::start(&[dev], "theirs");
    wait_slot(&v, "theirs", LONG);
    let dump = ok(&run(SBD, &["dump"], &[dev]));
    assert!(dump.contains("Number of slots    : 255"), "{dump}");
    let list = ok(&run(SBD, &["list"], &[dev]));
    assert!(
        list.contains("ours\tclear") && list.contains("theirs\t"),
        "{list}"
    );
    // Our tools read the slot sbd wrote.
    let ours_list = ok(&run(
        &hw_tests::bins::palisade_sbd().display().to_string(),
        &["list"],
        &[dev],
    ));
    assert!(ours_list.contains("theirs\t"), "{ours_list}");
    let hb = ok(&run(
        &hw_tests::bins::palisade_sbd().display().to_string(),
        &["heartbeats"],
        &[dev],
    ));
    assert!(hb.contains("\tours\t"), "{hb}");
    // sbd's `message test` to our watcher is acknowledged (cleared), heartbeats go on.
    ok(&run(
        SBD,
        &["-n", "debian", "message", "ours", "test"],
        &[dev],
    ));
    // Our watcher clears it at its next read of the slot (sbd's own watcher does the same),
    // so wait for that rather than racing it.
    let t = Instant::now();
    loop {
        let list = ok(&run(SBD, &["list"], &[dev]));
        if list.contains("ours\tclear") {
            break;
        }
        assert!(
            t.elapsed() < LONG,
            "our watcher never cleared sbd's test: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        observe(&witness(dev, "ours", 1_000), Duration::from_secs(5)).verdict,
        Verdict::Alive
    );
    assert!(
        theirs.alive(),
        "sbd's watcher reads its slot beside our heartbeats"
    );
    // sbd's pill to our watcher is obeyed; ours to sbd's watcher is obeyed (-Z -Z: it exits).
    ok(&run(
        SBD,
        &["-n", "debian", "message", "ours", "off"],
        &[dev],
    ));
    assert!(matches!(w.join(LONG).unwrap(), Outcome::SelfFenced { .. }));
    pill(&v, "theirs", drivers::sbd::Message::Reset);
    let t = Instant::now();
    while theirs.alive() {
        assert!(t.elapsed() < LONG, "sbd's watcher ignored the pill");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_disk_failing_or_hanging_mid_observation_gives_no_evidence() {
    if !faultydisk::require() {
        return;
    }
    let d = FaultyDisk::new(4).unwrap();
    let dev = d.path().to_path_buf();
    ok(&run(
        &hw_tests::bins::palisade_sbd().display().to_string(),
        &["-1", "1", "-2", "0", "-4", "2", "create"],
        &[&dev],
    ));
    // A record that no longer advances (written by a watcher that then stopped).
    let w = start(&paths(std::slice::from_ref(&dev)), "n1");
    assert!(w.dog.fed_more(3, LONG));
    drop(w);
    for fault in [Fault::Error, Fault::Hang] {
        d.set(Fault::Healthy);
        let wit = witness(&dev, "n1", 3_000);
        let dd = &d;
        let o = std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(800));
                dd.set(fault);
            });
            observe(&wit, Duration::from_secs(6))
        });
        assert_eq!(o.verdict, Verdict::NoEvidence, "{fault:?}: {o:?}");
        assert!(detail(&o).contains("failed after"), "{fault:?}: {o:?}");
    }
    d.set(Fault::Healthy);
}

/// Figures: the heartbeat's extra writes per second and the witness's time to Silent with the
/// default settle (`cargo nextest run -p hw-tests --test disk_heartbeat --run-ignored only
/// --no-capture`).
#[test]
#[ignore]
fn figures_heartbeat_cost_and_time_to_silent() {
    if !loopdev::require() {
        return;
    }
    let v = sbd_disks(1);
    let dev = v[0].path().to_path_buf();
    let rss = |k: &str| {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let w = start(&paths(std::slice::from_ref(&dev)), "n1");
    assert!(w.dog.fed_more(3, LONG));
    let wit = DiskHeartbeatWitness::new(DiskHeartbeatConfig::new(&dev, "n1")).unwrap();
    let count = |dev: &Path| {
        let out = ok(&run(
            &hw_tests::bins::palisade_sbd().display().to_string(),
            &["heartbeats"],
            &[dev],
        ));
        out.split('\t')
            .nth(2)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let c0 = count(&dev);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let c1 = count(&dev);
    println!(
        "heartbeat writes: {:.1} per second per disk (one 512-byte O_DIRECT write each); test process VmRSS {} with the watcher running",
        (c1 - c0) as f64 / t0.elapsed().as_secs_f64(),
        rss("VmRSS:")
    );
    let t = Instant::now();
    let o = observe(&wit, Duration::from_secs(10));
    println!(
        "witness, watcher running: {} after {} ms",
        o.verdict,
        t.elapsed().as_millis()
    );
    drop(w);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let o = observe(&wit, Duration::from_secs(10));
        assert_eq!(o.verdict, Verdict::Silent);
        times.push(t.elapsed().as_millis());
    }
    times.sort();
    println!(
        "witness, watcher stopped: silent after {} ms (median of 5, default settle {} ms)",
        times[2],
        drivers::witness::disk::DEFAULT_SETTLE.as_millis()
    );
}
