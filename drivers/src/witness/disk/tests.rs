//! The witness against an in-memory SBD disk (real time, short settles): every verdict and
//! every way it must refuse to say `Silent`. The same witness on real loop devices with a
//! running watcher is in `hw-tests/tests/disk_heartbeat.rs`.

use super::*;
use crate::sbd::{Header, MemDisk, NodeEntry, SectorSize};
use std::sync::atomic::{AtomicBool, Ordering};

const UUID: [u8; 16] = [7; 16];

fn header() -> Header {
    Header::for_tests(UUID)
}

fn far() -> std::time::Instant {
    std::time::Instant::now() + Duration::from_secs(5)
}

/// An SBD disk with `node1` in slot 2, with or without a heartbeat area.
fn disk(area: bool) -> Arc<MemDisk> {
    let d = Arc::new(MemDisk::new(
        "/dev/mem-sbd",
        SectorSize::S512,
        heartbeat::sectors_needed(255),
    ));
    let h = header();
    d.write(
        0,
        &sbd::sector_with(d.as_ref(), |b| h.encode(b)).unwrap(),
        far(),
    )
    .unwrap();
    let e = NodeEntry::allocated(format::node_name("node1").unwrap());
    d.write(
        format::node_sector(2),
        &sbd::sector_with(d.as_ref(), |b| e.encode(b)).unwrap(),
        far(),
    )
    .unwrap();
    if area {
        heartbeat::write_area(d.as_ref(), &h, Duration::from_secs(5)).unwrap();
    }
    d
}

fn record(counter: u64) -> Record {
    Record {
        slot: 2,
        name: format::node_name("node1").unwrap(),
        disk_uuid: UUID,
        boot_id: [1; 16],
        started_ms: 1_000,
        counter,
        written_ms: 2_000 + counter,
    }
}

fn put(d: &MemDisk, r: &Record) {
    let mut b = vec![0u8; 512];
    r.encode(&mut b).unwrap();
    d.write(heartbeat::record_sector(255, 2), &b, far())
        .unwrap();
}

fn put_raw(d: &MemDisk, bytes: &[u8]) {
    let mut b = vec![0u8; 512];
    b[..bytes.len()].copy_from_slice(bytes);
    d.write(heartbeat::record_sector(255, 2), &b, far())
        .unwrap();
}

fn witness(d: &Arc<MemDisk>, node: &str, settle_ms: u64) -> DiskHeartbeatWitness {
    let d = Arc::clone(d);
    let mut cfg = DiskHeartbeatConfig::new("/dev/mem-sbd", node);
    cfg.settle = Duration::from_millis(settle_ms);
    cfg.poll = Duration::from_millis(50);
    cfg.read_timeout = Duration::from_millis(300);
    DiskHeartbeatWitness::with_opener(
        cfg,
        Arc::new(move |_| Ok(Arc::clone(&d) as Arc<dyn BlockDevice>)),
    )
    .unwrap()
}

/// Runs `f` on a thread every 20 ms until the returned flag is set (a node's watcher).
fn every_20ms(f: impl Fn(u64) + Send + 'static) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut n = 0;
        while !s.load(Ordering::SeqCst) {
            f(n);
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    stop
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn all_detail(o: &Observation) -> String {
    o.evidence
        .iter()
        .map(|e| e.detail.as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[tokio::test]
async fn an_advancing_heartbeat_is_alive_at_once() {
    let d = disk(true);
    put(&d, &record(10));
    let w = Arc::clone(&d);
    let stop = every_20ms(move |n| put(&w, &record(11 + n)));
    let t = Instant::now();
    let o = witness(&d, "node1", 2_000).observe(soon(5_000)).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1_000),
        "not the whole settle"
    );
    assert!(all_detail(&o).contains("advanced from"), "{o:?}");
    assert_eq!(o.evidence.len(), 2, "the start and the sign of life: {o:?}");
    assert!(o.evidence[0].at <= o.evidence[1].at);
}

#[tokio::test]
async fn a_restarted_watcher_and_a_record_appearing_are_alive() {
    let d = disk(true);
    put(&d, &record(10));
    let w = Arc::clone(&d);
    let stop = every_20ms(move |n| {
        if n == 3 {
            let mut r = record(0);
            r.started_ms += 5_000;
            put(&w, &r);
        }
    });
    let o = witness(&d, "node1", 1_000).observe(soon(5_000)).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
    assert!(all_detail(&o).contains("newly started watcher"), "{o:?}");

    // Blank at the start, a record later: written during the observation.
    let d = disk(true);
    let w = Arc::clone(&d);
    let stop = every_20ms(move |n| {
        if n == 3 {
            put(&w, &record(0));
        }
    });
    let o = witness(&d, "node1", 1_000).observe(soon(5_000)).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
    assert!(all_detail(&o).contains("appeared"), "{o:?}");
}

#[tokio::test]
async fn an_unchanged_heartbeat_is_silent_after_the_whole_settle() {
    let d = disk(true);
    put(&d, &record(41));
    let t = Instant::now();
    let o = witness(&d, "NODE1", 400).observe(soon(5_000)).await;
    assert_eq!(o.verdict, Verdict::Silent, "{o:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "not before the settle"
    );
    assert!(t.elapsed() < Duration::from_millis(1_500));
    let d = all_detail(&o);
    assert!(d.contains("stayed at counter 41"), "{d}");
    assert!(d.contains("boot 01010101-"), "{d}");
}

#[tokio::test]
async fn no_area_no_slot_no_record_and_another_disk_give_no_evidence() {
    let o = witness(&disk(false), "node1", 200)
        .observe(soon(5_000))
        .await;
    assert_eq!(o.verdict, Verdict::NoEvidence);
    assert!(all_detail(&o).contains("create-heartbeat"), "{o:?}");

    let o = witness(&disk(true), "node9", 200)
        .observe(soon(5_000))
        .await;
    assert_eq!(o.verdict, Verdict::NoEvidence);
    assert!(all_detail(&o).contains("node9 has no slot"), "{o:?}");

    // The area is there but the node never wrote (a watcher without heartbeats).
    let o = witness(&disk(true), "node1", 200)
        .observe(soon(5_000))
        .await;
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    assert!(
        all_detail(&o).contains("does not write heartbeats"),
        "{o:?}"
    );

    // A record left by an earlier owner of the slot, or from an earlier create.
    let d = disk(true);
    let mut r = record(3);
    r.name = format::node_name("old").unwrap();
    put(&d, &r);
    let o = witness(&d, "node1", 200).observe(soon(5_000)).await;
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    assert!(all_detail(&o).contains("earlier owner"), "{o:?}");
    let mut r = record(3);
    r.disk_uuid = [8; 16];
    put(&d, &r);
    let o = witness(&d, "node1", 200).observe(soon(5_000)).await;
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");

    // A configured UUID that is not the disk's.
    let mut w = witness(&d, "node1", 200);
    w.cfg.uuid = Some([9; 16]);
    let o = w.observe(soon(5_000)).await;
    assert_eq!(o.verdict, Verdict::NoEvidence);
    assert!(all_detail(&o).contains("UUID"), "{o:?}");
}

#[tokio::test]
async fn garbage_torn_future_and_backwards_records_are_never_silence() {
    for (what, bytes) in [
        ("garbage", vec![0x5a; 512]),
        ("future version", {
            let mut b = vec![0u8; 512];
            record(5).encode(&mut b).unwrap();
            b[8] = 9;
            b
        }),
        ("torn", {
            let mut b = vec![0u8; 512];
            record(5).encode(&mut b).unwrap();
            b[120] ^= 0xff;
            b
        }),
    ] {
        // At the start: nothing to watch.
        let d = disk(true);
        put_raw(&d, &bytes);
        let o = witness(&d, "node1", 200).observe(soon(5_000)).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{what}: {o:?}");
        // Mid-way through: the record became unreadable.
        let d = disk(true);
        put(&d, &record(5));
        let w = Arc::clone(&d);
        let stop = every_20ms(move |n| {
            if n == 3 {
                put_raw(&w, &bytes);
            }
        });
        let o = witness(&d, "node1", 1_000).observe(soon(5_000)).await;
        stop.store(true, Ordering::SeqCst);
        assert_eq!(o.verdict, Verdict::NoEvidence, "{what}: {o:?}");
        assert!(
            all_detail(&o).contains("became unreadable"),
            "{what}: {o:?}"
        );
    }
    let d = disk(true);
    put(&d, &record(5));
    let w = Arc::clone(&d);
    let stop = every_20ms(move |n| {
        if n == 3 {
            put(&w, &record(4));
        }
    });
    let o = witness(&d, "node1", 1_000).observe(soon(5_000)).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    assert!(all_detail(&o).contains("went backwards"), "{o:?}");
}

#[tokio::test]
async fn a_failing_or_hanging_disk_gives_no_evidence_by_the_deadline() {
    // Fails mid-observation.
    let d = disk(true);
    put(&d, &record(5));
    let w = Arc::clone(&d);
    let stop = every_20ms(move |n| {
        if n == 5 {
            w.set_failing(true);
        }
    });
    let o = witness(&d, "node1", 1_000).observe(soon(5_000)).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    assert!(all_detail(&o).contains("injected I/O error"), "{o:?}");

    // Hangs: each read is given up at the read timeout (300 ms here).
    let d = disk(true);
    put(&d, &record(5));
    d.set_hanging(true);
    let t = Instant::now();
    let o = witness(&d, "node1", 1_000).observe(soon(5_000)).await;
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        t.elapsed()
    );

    // Hangs with a deadline before the read timeout: back by the deadline.
    let t = Instant::now();
    let o = witness(&d, "node1", 1_000).observe(soon(100)).await;
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_deadline_inside_the_settle_is_no_evidence_not_silence() {
    let d = disk(true);
    put(&d, &record(5));
    let t = Instant::now();
    let o = witness(&d, "node1", 2_000).observe(soon(300)).await;
    assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    // The deadline ends it between reads (silence not yet established) or during one (the
    // read did not answer in time): which one is up to the machine's speed (qemu-user is
    // slow), both are no evidence, never silence.
    let detail = all_detail(&o);
    assert!(
        detail.contains("before silence could be established")
            || detail.contains("before the observation's deadline"),
        "{o:?}"
    );
    // It kept the observation's deadline instead of waiting out the 2 s settle.
    assert!(
        t.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn bad_configurations_say_what_to_fix() {
    let mut c = DiskHeartbeatConfig::new("/dev/x", "node1");
    c.poll = Duration::ZERO;
    let e = DiskHeartbeatWitness::new(c).unwrap_err().to_string();
    assert!(e.contains("poll is zero"), "{e}");
    let mut c = DiskHeartbeatConfig::new("/dev/x", "node1");
    c.poll = c.settle * 2;
    let e = DiskHeartbeatWitness::new(c).unwrap_err().to_string();
    assert!(e.contains("make poll at most settle"), "{e}");
    let e = DiskHeartbeatWitness::new(DiskHeartbeatConfig::new("/dev/x", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("-n"), "{e}");
    let w = DiskHeartbeatWitness::new(DiskHeartbeatConfig::new("/dev/x", "node1")).unwrap();
    assert_eq!(w.kind(), "disk-heartbeat");
    assert!(w.describe().contains("node1") && w.describe().contains("/dev/x"));
}
