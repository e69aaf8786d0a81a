//! Pill-to-reaction latency and memory of our SBD watcher and of Debian sbd's, side by side on
//! the same loop devices. Prints figures; asserts nothing about speed.
//!
//! Run: `scripts/bench-watch.sh` (root; loop devices; Debian sbd for the comparison).
//!
//! Ours runs in this process with a recording sink and a software watchdog (the shipped
//! binary would reboot this machine). Latency is measured from just before the pill is
//! written (our `open_and_deliver`: write + read-back on every disk) to the sink call for
//! ours, and to the moment sbd's watcher (`-w /dev/null -Z -Z`: a pill makes it exit) is gone
//! for sbd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/watch_common/mod.rs"]
mod watch_common;

use drivers::sbd::Message;
use std::process::Command;
use std::time::{Duration, Instant};
use watch_common::{pill, sbd_disks, start, wait_slot};

const SBD: &str = "/usr/sbin/sbd";

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} median {:.1} ms, min {:.1} ms, max {:.1} ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1])
    );
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only probes the pid.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let disks = sbd_disks(3);
    let paths: Vec<_> = disks
        .iter()
        .map(|d| (d.path().to_path_buf(), None))
        .collect();

    // Ours. Locked and real-time like `palisade-sbd watch`, to measure the same conditions.
    if let Err(e) = watchdog::daemon::lock_memory() {
        eprintln!("warning: {e}");
    }
    if let Err(e) = watchdog::daemon::make_realtime() {
        eprintln!("warning: {e}");
    }
    let mut ours = Vec::new();
    for i in 0..n {
        let w = start(&paths, "ours");
        assert!(w.dog.fed_more(2, Duration::from_secs(30)));
        // Spread the pills over the servants' 100 ms loop.
        std::thread::sleep(Duration::from_millis(300 + (i as u64 * 37) % 100));
        if i == 0 {
            let me = std::process::id();
            println!(
                "ours (this bench process, debug build incl. test deps, watching 3 disks): VmRSS {} KiB, VmLck {} KiB, threads {}",
                status_kib(me, "VmRSS:"),
                status_kib(me, "VmLck:"),
                status_kib(me, "Threads:")
            );
        }
        let t0 = Instant::now();
        pill(&disks, "ours", Message::Reset);
        let rec = w.rec.clone();
        w.join(Duration::from_secs(30)).unwrap();
        let at = rec.0.lock().unwrap()[0].2;
        ours.push(at.saturating_duration_since(t0));
        pill(&disks, "ours", Message::Clear);
    }
    stats("ours: pill to self-fence call", ours);

    if !std::path::Path::new(SBD).exists() {
        println!("sbd: {SBD} missing, run scripts/install-test-deps.sh");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sbd.pid");
    let mut theirs = Vec::new();
    for i in 0..n {
        // A fresh slot per round: nothing left over from the previous sbd instance.
        let node = format!("theirs{i}");
        let _ = std::fs::remove_file(&pidfile);
        // sbd's start fails now and then right after the previous instance was killed
        // ("sbd failed; please check the logs"): retry a few times.
        let mut started = false;
        for _ in 0..5 {
            let mut cmd = Command::new(SBD);
            cmd.env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("SBD_PACEMAKER", "no")
                .env("SBD_SYNC_RESOURCE_STARTUP", "no");
            for d in &disks {
                cmd.arg("-d").arg(d.path());
            }
            // Only as shared/PEERS.md allows: no watchdog, a pill makes it exit.
            let st = cmd
                .args(["-n", &node, "-w", "/dev/null", "-Z", "-Z", "-p"])
                .arg(&pidfile)
                .arg("watch")
                .status()
                .unwrap();
            if st.success() {
                started = true;
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        assert!(started, "sbd watch did not start (round {i})");
        let t = Instant::now();
        let pid = loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break p;
            }
            assert!(t.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(10));
        };
        wait_slot(&disks, &node, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1500 + (i as u64 * 137) % 1000));
        if i == 0 {
            let mut all = vec![pid as u32];
            all.extend(children(pid as u32));
            let rss: u64 = all.iter().map(|p| status_kib(*p, "VmRSS:")).sum();
            let lck: u64 = all.iter().map(|p| status_kib(*p, "VmLck:")).sum();
            println!(
                "sbd ({} processes, watching 3 disks): VmRSS {rss} KiB, VmLck {lck} KiB",
                all.len()
            );
        }
        let t0 = Instant::now();
        pill(&disks, &node, Message::Reset);
        while alive(pid) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "sbd ignored the pill"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        theirs.push(t0.elapsed());
        // SAFETY: killing the process group of the sbd we started, in case servants linger.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(500));
    }
    stats("sbd: pill to watcher exit", theirs);
}
