//! SBD poison-pill fencing through the whole stack: `fence_node` -> `fenced` process ->
//! `SbdDevice` -> real loop block devices prepared by `palisade-sbd`. Success only after the
//! pill was read back on a majority and msgwait elapsed; every shortfall is "NOT FENCED".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{text, Fenced};
use hw_tests::loopdev::LoopDevice;
use std::process::Command;
use std::time::{Duration, Instant};

/// msgwait of the test disks (watchdog 1 s; palisade-sbd refuses msgwait < 2 x watchdog).
const MSGWAIT_S: u64 = 2;

fn sbd(disks: &[&LoopDevice], args: &[&str]) -> String {
    let mut c = Command::new(hw_tests::bins::palisade_sbd());
    for d in disks {
        c.arg("-d").arg(d.path());
    }
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "palisade-sbd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Bench {
    disks: Vec<LoopDevice>,
    fenced: Fenced,
    _tmp: tempfile::TempDir,
}

/// Three disks with node1 allocated; the config lists `extra` as more (missing) disks.
fn bench(extra_missing_disks: usize) -> Bench {
    bench_with_env(extra_missing_disks, &[])
}

fn bench_with_env(extra_missing_disks: usize, env: &[(&str, &str)]) -> Bench {
    let disks: Vec<LoopDevice> = (0..3 - extra_missing_disks.min(2))
        .map(|_| LoopDevice::new(16, None).unwrap())
        .collect();
    let refs: Vec<&LoopDevice> = disks.iter().collect();
    sbd(&refs, &["-1", "1", "-4", &MSGWAIT_S.to_string(), "create"]);
    sbd(&refs, &["allocate", "node1"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut paths: Vec<String> = disks.iter().map(|d| format!("{:?}", d.path())).collect();
    for i in 0..extra_missing_disks {
        paths.push(format!("{:?}", dir.join(format!("missing-disk-{i}"))));
    }
    let cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\nnode_name = \"fencer\"\n\n[defaults]\nattempt_timeout_s = 6\ntotal_timeout_s = 10\n\n[devices.shared]\nkind = \"sbd\"\ndisks = [{}]\ntimeout_ms = 1000\n\n[targets.node1]\nlevels = [[\"shared\"]]\n\n[targets.node2]\nlevels = [[\"shared\"]]\n",
        dir.join("fenced.sock"),
        dir.join("history.redb"),
        paths.join(", ")
    );
    let config = dir.join("fenced.toml");
    std::fs::write(&config, cfg).unwrap();
    let fenced = Fenced::start_with_env(dir, &config, env);
    Bench {
        disks,
        fenced,
        _tmp: tmp,
    }
}

#[test]
fn pill_on_every_disk_and_msgwait_elapsed_is_fenced() {
    let b = bench(0);
    let t = Instant::now();
    let out = b
        .fenced
        .fence_node(&["off", "node1", "--reason", "sbd e2e"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("poison pill"), "{}", text(&out));
    assert!(
        took >= Duration::from_secs(MSGWAIT_S),
        "confirmed before msgwait: {took:?}"
    );
    // ClusterLabs' listing format: the slot now holds an `off` pill from us.
    let refs: Vec<&LoopDevice> = b.disks.iter().collect();
    let list = sbd(&refs, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("node1") && l.contains("off") && l.contains("fencer")),
        "{list}"
    );
    let op = &b.fenced.json(&["history", "node1"])[0];
    assert_eq!(
        op["outcome"]["confirmation"]["method"], "poison_pill",
        "{op}"
    );
    assert_eq!(op["attempts"][0]["pill"]["written"], 3, "{op}");
    // Unfencing clears the slot.
    let out = b.fenced.fence_node(&["on", "node1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(sbd(&refs, &["list"])
        .lines()
        .any(|l| l.contains("node1") && l.contains("clear")));
}

#[test]
fn target_without_a_slot_is_refused() {
    let b = bench(0);
    let out = b.fenced.fence_node(&["off", "node2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("NOT FENCED") && t.contains("no slot"), "{t}");
}

#[test]
fn pill_on_one_of_three_disks_is_not_fenced() {
    let b = bench(2); // one real disk, two that do not open
    let out = b.fenced.fence_node(&["off", "node1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("NOT FENCED") && t.contains("1 of 3"), "{t}");
}

#[test]
fn fenced_killed_during_msgwait_is_interrupted_not_fenced() {
    let mut b = bench(0);
    let out = b.fenced.fence_node(&["off", "node1", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Wait until the pill is on the disks, then die inside msgwait.
    let refs: Vec<&LoopDevice> = b.disks.iter().collect();
    let until = Instant::now() + Duration::from_secs(5);
    while !sbd(&refs, &["list"])
        .lines()
        .any(|l| l.contains("node1") && l.contains("off"))
    {
        assert!(Instant::now() < until, "the pill never reached the disks");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.fenced.restart();
    let op = &b.fenced.json(&["history", "node1"])[0];
    assert_eq!(op["state"], "failed", "{op}");
    assert_eq!(op["outcome"]["code"], "interrupted", "{op}");
    // The pill was recorded as about to be written before it was: history says it may be out.
    let step = &op["attempts"][0];
    assert_eq!(step["code"], "interrupted", "{op}");
    assert!(
        step["message"]
            .as_str()
            .unwrap()
            .contains("a poison pill (off) may have been sent to"),
        "{op}"
    );
}

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn wall_clock_racing_ahead_during_msgwait_does_not_shorten_it() {
    // fenced runs under libfaketime with its wall clock running 50x fast (msgwait 2 s would
    // be over after 40 ms of real time if it were measured on the wall clock); the monotonic
    // clock is left alone, as the kernel keeps it across settimeofday and NTP steps.
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "libfaketime missing: scripts/install-test-deps.sh installs the `faketime` package"
    );
    let b = bench_with_env(
        0,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "+0 x50"),
            ("DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let t = Instant::now();
    let out = b.fenced.fence_node(&["off", "node1"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        took >= Duration::from_secs(MSGWAIT_S),
        "msgwait was cut short by the wall clock: {took:?}"
    );
    // History's timestamps follow the monotonic clock too: the operation took about msgwait,
    // not 50 times that.
    let op = &b.fenced.json(&["history", "node1"])[0];
    let ms = op["finished_ms"].as_u64().unwrap() - op["started_ms"].as_u64().unwrap();
    assert!(
        (MSGWAIT_S * 1000..MSGWAIT_S * 1000 * 10).contains(&ms),
        "recorded duration {ms} ms"
    );
}
