//! The watcher on virtual time ([`TestClock`]) with simulated disks ([`SimDisk`]): every
//! instant below is exact, because virtual time moves only when the inquisitor, every servant
//! and the test are all waiting on the clock.
//!
//! Times are milliseconds after the clock's zero. With the headers used here (watchdog 2 s)
//! `W` = 2000, `F = W / 2` = 1000, the servants read every 100 ms (0, 100, 200, ...) and the
//! inquisitor looks every 100 ms on the same grid, before the servants that are due then.

use super::*;
use crate::test_support::{Io, SimDisk, SoftWatchdog, TestClock};
use drivers::sbd::heartbeat;
use std::thread::JoinHandle;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One self-fence call: action, reason, virtual ms.
type Call = (SelfFenceAction, String, u64);

/// How a run ended: the result, the self-fence calls, and when `watch` returned (virtual ms).
type Ended = (Result<Outcome, WatchError>, Vec<Call>, u64);

/// The recording sink: exists only in test builds.
struct Recorder {
    clock: TestClock,
    calls: Vec<Call>,
}

impl SelfFence for Recorder {
    fn self_fence(&mut self, action: SelfFenceAction, reason: &str) {
        let at = self.clock.elapsed().as_millis() as u64;
        self.calls.push((action, reason.into(), at));
    }
}

/// An SBD disk with watchdog 2 s, allocate 0 s, the given msgwait and nodes in slots 0, 1, ...
fn sbd_disk(clock: &TestClock, msgwait: u32, nodes: &[&str]) -> SimDisk {
    sbd_disk_sized(clock, 600, msgwait, nodes)
}

/// The header every simulated disk here has, with this msgwait.
fn test_header(msgwait: u32) -> Header {
    Header {
        slots: 255,
        sector_size: format::SectorSize::S512,
        timeout_watchdog: 2,
        timeout_allocate: 0,
        timeout_loop: 1,
        timeout_msgwait: msgwait,
        minor_version: 1,
        uuid: [7; 16],
    }
}

fn sbd_disk_sized(clock: &TestClock, sectors: u64, msgwait: u32, nodes: &[&str]) -> SimDisk {
    let d = SimDisk::new("sim", sectors, clock.shared());
    let h = Header {
        slots: 255,
        sector_size: format::SectorSize::S512,
        timeout_watchdog: 2,
        timeout_allocate: 0,
        timeout_loop: 1,
        timeout_msgwait: msgwait,
        minor_version: 1,
        uuid: [7; 16],
    };
    let far = clock.at(FAR);
    let m = d.mem();
    m.write(0, &sbd::sector_with(m, |b| h.encode(b)).unwrap(), far)
        .unwrap();
    for (i, n) in nodes.iter().enumerate() {
        let e = format::NodeEntry::allocated(format::node_name(n).unwrap());
        m.write(
            format::node_sector(i as u8),
            &sbd::sector_with(m, |b| e.encode(b)).unwrap(),
            far,
        )
        .unwrap();
    }
    d
}

fn config(clock: &TestClock, disks: &[SimDisk]) -> WatchConfig {
    WatchConfig {
        disks: disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let d = d.clone();
                WatchDisk {
                    name: format!("disk{i}"),
                    open: Box::new(move || Ok(Box::new(d.clone()) as Box<dyn BlockDevice>)),
                }
            })
            .collect(),
        local_name: format::node_name("me").unwrap(),
        poll: DEFAULT_POLL,
        watchdog_timeout: None,
        startup_timeout: Duration::from_secs(5),
        rules: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
        clock: clock.shared(),
        heartbeat: true,
    }
}

type Run = JoinHandle<Ended>;

/// Starts the inquisitor as a participant of `clock`.
fn run(clock: &TestClock, cfg: WatchConfig, dog: SoftWatchdog) -> Run {
    let c = clock.clone();
    clock
        .spawn("inquisitor", move || {
            let mut rec = Recorder {
                clock: c,
                calls: Vec::new(),
            };
            let r = watch(cfg, || Ok(dog), &mut rec, &mut |_: &str| {});
            let ended = rec.clock.elapsed().as_millis() as u64;
            (r, rec.calls, ended)
        })
        .unwrap()
}

/// Joins the inquisitor (bounded in real time: a hang here is a bug in the test or the code).
fn finish(h: Run) -> (Result<Outcome, WatchError>, Vec<Call>) {
    let (r, calls, _) = finish_at(h);
    (r, calls)
}

fn finish_at(h: Run) -> Ended {
    let t = Instant::now();
    while !h.is_finished() {
        assert!(t.elapsed() < Duration::from_secs(30), "watcher never ended");
        std::thread::sleep(ms(1));
    }
    h.join().unwrap()
}

/// Writes `m` from `fencer` into `slot`, as a fencer on another node does (no faults, no time).
fn put(d: &SimDisk, slot: u8, m: Message) {
    let mb = Mailbox {
        cmd: m,
        from: format::node_name("fencer").unwrap(),
    };
    let mem = d.mem();
    mem.write(
        format::mailbox_sector(slot),
        &sbd::sector_with(mem, |b| mb.encode(b)).unwrap(),
        Instant::now() + FAR,
    )
    .unwrap();
}

fn feeds_ms(clock: &TestClock, dog: &SoftWatchdog) -> Vec<u64> {
    dog.feed_times()
        .iter()
        .map(|t| clock.since_zero(*t).as_millis() as u64)
        .collect()
}

fn self_fenced(r: Result<Outcome, WatchError>) -> (SelfFenceAction, String) {
    match r {
        Ok(Outcome::SelfFenced { action, reason }) => (action, reason),
        other => panic!("expected a self-fence, got {other:?}"),
    }
}

#[test]
fn a_read_counts_while_younger_than_half_the_watchdog_timeout() {
    let t0 = Instant::now();
    let f = ms(1000);
    let at = |d: Duration| t0 + d;
    assert!(is_fresh(t0, at(Duration::ZERO), f));
    assert!(is_fresh(t0, at(f - Duration::from_nanos(1)), f));
    assert!(!is_fresh(t0, at(f), f), "exactly W/2 old no longer counts");
    assert!(!is_fresh(t0, at(f + Duration::from_nanos(1)), f));
    assert!(
        is_fresh(at(ms(5)), t0, f),
        "a start after now (clock skew) counts"
    );
}

#[test]
fn the_majority_rule_stops_feeding_exactly_w_over_2_after_the_last_majority_read() {
    let clock = TestClock::new();
    let disks: Vec<_> = (0..3).map(|_| sbd_disk(&clock, 4, &["me"])).collect();
    // disk0's last good read starts at 1000, disk1's at 1300; disk2 never fails.
    disks[0].from(clock.at(ms(1050)), Io::Hang);
    disks[1].from(clock.at(ms(1350)), Io::Hang);
    let dog = SoftWatchdog::new(clock.shared());
    let (r, calls) = finish(run(&clock, config(&clock, &disks), dog.clone()));
    let (action, reason) = self_fenced(r);
    assert_eq!(action, SelfFenceAction::Reboot);
    assert!(
        reason.starts_with("only 1 of 3 SBD disks read within 1000 ms"),
        "{reason}"
    );
    // Two of three fresh until 1300 + 1000: fed at 2200 (disk1's read 900 ms old), not at
    // 2300 (exactly 1000 ms old), and the self-fence comes right then.
    let feeds = feeds_ms(&clock, &dog);
    assert_eq!(feeds.last(), Some(&2200), "{feeds:?}");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, 2300);
    // Between 2000 and 2300 disk0 is stale already and the majority is disks 1 and 2.
    assert!(feeds.contains(&2100));
    for d in &disks {
        d.release();
    }
}

#[test]
fn reads_that_leave_the_freshest_start_w_over_2_old_stop_the_feeding() {
    // A poll makes two reads (header, then node entry + mailbox). If every read takes d, a
    // poll takes 2d, and just before a poll's report the freshest start is the previous
    // poll's, 4d old. So d = 240 keeps the node fed and d = 250 does not: polls start at 100
    // (slow from here on), 600 and report at 600, 1100, and at 1100 the start at 100 is
    // exactly 1000 old.
    for (slow, feeds_on) in [(240, true), (250, false)] {
        let clock = TestClock::new();
        let d = sbd_disk(&clock, 4, &["me"]);
        d.from(clock.at(ms(1)), Io::Slow(ms(slow)));
        let cfg = config(&clock, std::slice::from_ref(&d));
        let stop = Arc::clone(&cfg.stop);
        let dog = SoftWatchdog::new(clock.shared());
        let me = clock.enter();
        let h = run(&clock, cfg, dog.clone());
        clock.sleep_until(ms(10_050));
        stop.store(true, Ordering::SeqCst);
        drop(me);
        let (r, calls) = finish(h);
        if feeds_on {
            assert_eq!(r.unwrap(), Outcome::Stopped, "{calls:?}");
            let feeds = feeds_ms(&clock, &dog);
            assert!(feeds.last() >= Some(&10_000), "{feeds:?}");
        } else {
            let (_, reason) = self_fenced(r);
            assert!(reason.contains("only 0 of 1"), "{reason}");
            assert_eq!(calls[0].2, 1100, "{calls:?}");
            assert_eq!(feeds_ms(&clock, &dog).last(), Some(&1000));
        }
    }
}

#[test]
fn a_msgwait_under_1_5_w_of_the_granted_timeout_is_refused() {
    // (msgwait on the disks, timeout the driver grants, refused?)
    for (msgwait, granted, refused) in [(2, 2, true), (3, 2, false), (4, 4, true), (6, 4, false)] {
        let clock = TestClock::new();
        let d = sbd_disk(&clock, msgwait, &["me"]);
        let cfg = config(&clock, &[d]);
        let stop = Arc::clone(&cfg.stop);
        let dog = SoftWatchdog::new(clock.shared()).granting(granted);
        let me = clock.enter();
        let h = run(&clock, cfg, dog.clone());
        clock.sleep_until(ms(550));
        stop.store(true, Ordering::SeqCst);
        drop(me);
        let (r, calls) = finish(h);
        assert!(calls.is_empty());
        assert!(dog.is_disarmed(), "disarmed either way");
        if refused {
            let e = r.unwrap_err();
            assert!(matches!(e, WatchError::MsgwaitTooShort { .. }), "{e}");
            let needed = u64::from(granted) * 1500;
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("msgwait {msgwait} s"))
                    && msg.contains(&format!("{needed} ms"))
                    && msg.contains(&format!("watchdog {granted} s")),
                "{msg}"
            );
            assert!(dog.feed_times().is_empty(), "never fed before refusing");
        } else {
            assert_eq!(r.unwrap(), Outcome::Stopped);
            assert!(dog.feeds() > 5);
        }
    }
}

/// The bound a fencer relies on: having written a pill at `t_p` on a majority and waited
/// msgwait, the target's watchdog has fired (it was last fed within `W / 2` of `t_p`).
fn assert_dead_by_msgwait(clock: &TestClock, dog: &SoftWatchdog, t_p: u64, msgwait_ms: u64) {
    let fires = clock
        .since_zero(dog.fires_at().expect("left armed"))
        .as_millis() as u64;
    let feeds = feeds_ms(clock, dog);
    let last = feeds.last().copied().unwrap_or_default();
    assert!(
        last < t_p + 1000,
        "fed at {last}, W/2 or more after the pill at {t_p}"
    );
    assert!(
        fires < t_p + 3000,
        "fires at {fires}, not before t_p + 1.5 W"
    );
    assert!(
        fires <= t_p + msgwait_ms,
        "the watchdog fires at {fires}, after the fencer's msgwait ended at {}",
        t_p + msgwait_ms
    );
}

#[test]
fn servants_stuck_in_the_kernel_let_the_watchdog_fire_before_msgwait_ends() {
    let clock = TestClock::new();
    let disks: Vec<_> = (0..3).map(|_| sbd_disk(&clock, 4, &["me"])).collect();
    let t_p = 1234;
    // The fencer reaches disks 0 and 1 (a majority) and writes the pill at t_p; this node's
    // reads of both stick in the kernel from then on, so it never sees the pill. Its last
    // polls of them started at 1200, and their mailbox reads took 700 ms (finished after
    // the pill, with the old mailbox): a poll is timed by its start, or this would feed
    // until 2800 and the watchdog fire after t_p + 1.5 W.
    for d in &disks[..2] {
        d.from_on_sector(
            clock.at(ms(1150)),
            format::mailbox_sector(0),
            Io::Slow(ms(700)),
        );
        d.from(clock.at(ms(1250)), Io::Hang);
    }
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let h = run(&clock, config(&clock, &disks), dog.clone());
    clock.sleep_until(ms(t_p));
    put(&disks[0], 0, Message::Reset);
    put(&disks[1], 0, Message::Reset);
    drop(me);
    let (r, calls) = finish(h);
    let (action, reason) = self_fenced(r);
    assert_eq!(action, SelfFenceAction::Reboot, "{reason}");
    assert!(reason.contains("only 1 of 3"), "{reason}");
    assert_dead_by_msgwait(&clock, &dog, t_p, 4000);
    // The slow reads report at 1900 (started 1200): fresh until 2200.
    assert_eq!(calls[0].2, 2200);
    assert_eq!(feeds_ms(&clock, &dog).last(), Some(&2100));
    assert_eq!(
        disks[0].reads().last().map(|(s, e)| (
            clock.since_zero(*s).as_millis(),
            clock.since_zero(*e).as_millis()
        )),
        Some((1200, 1900))
    );
    // The same holds if the sink's reboot fails: the watcher never feeds again.
    assert!(!dog.is_disarmed());
    for d in &disks {
        d.release();
    }
}

#[test]
fn a_pill_during_a_slow_read_self_fences_on_the_next_read() {
    let clock = TestClock::new();
    let d = sbd_disk(&clock, 4, &["me"]);
    // From 1050 every mailbox read takes 400 ms: polls start at 1100 and 1500.
    d.from_on_sector(
        clock.at(ms(1050)),
        format::mailbox_sector(0),
        Io::Slow(ms(400)),
    );
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let h = run(
        &clock,
        config(&clock, std::slice::from_ref(&d)),
        dog.clone(),
    );
    let t_p = 1234;
    clock.sleep_until(ms(t_p));
    put(&d, 0, Message::Off);
    drop(me);
    let (r, calls) = finish(h);
    let (action, reason) = self_fenced(r);
    assert_eq!(action, SelfFenceAction::Off);
    assert!(
        reason.contains("poison pill `off` from `fencer` on disk0"),
        "{reason}"
    );
    // The read in flight at t_p (1100..1500) returned the old mailbox; the next one
    // (1500..1900) brought the pill: within one poll and two reads of t_p.
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, 1900);
    assert!(calls[0].2 <= t_p + 400 + 400);
    assert!(
        feeds_ms(&clock, &dog)
            .iter()
            .any(|t| (1100..1900).contains(t)),
        "slow reads within W/2 kept the node fed"
    );
    assert_dead_by_msgwait(&clock, &dog, t_p, 4000);
}

#[test]
fn allocates_its_slot_and_obeys_a_pill() {
    let clock = TestClock::new();
    let d = sbd_disk(&clock, 4, &["other"]);
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let h = run(
        &clock,
        config(&clock, std::slice::from_ref(&d)),
        dog.clone(),
    );
    clock.sleep_until(ms(450));
    assert_eq!(dog.granted_timeout(), 2, "the header's watchdog timeout");
    put(&d, 1, Message::Off);
    drop(me);
    let (r, calls) = finish(h);
    assert_eq!(self_fenced(r).0, SelfFenceAction::Off);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, 500, "seen on the next read");
    assert!(calls[0].1.contains("from `fencer`"), "{calls:?}");
    assert!(!dog.is_disarmed(), "left armed");
}

#[test]
fn test_is_cleared_and_exit_disarms() {
    let clock = TestClock::new();
    let d = sbd_disk(&clock, 4, &["me"]);
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let h = run(
        &clock,
        config(&clock, std::slice::from_ref(&d)),
        dog.clone(),
    );
    clock.sleep_until(ms(350));
    put(&d, 0, Message::Test);
    assert_ne!(d.mem().snapshot()[1024], 0);
    clock.sleep_until(ms(450));
    assert_eq!(
        d.mem().snapshot()[1024],
        0,
        "test cleared by the read at 400"
    );
    put(&d, 0, Message::Exit);
    drop(me);
    let (r, calls) = finish(h);
    assert!(matches!(r.unwrap(), Outcome::Exited { .. }));
    assert!(calls.is_empty());
    assert!(dog.is_disarmed());
}

#[test]
fn a_hanging_and_a_failing_disk_of_three_self_fence_w_over_2_after_their_last_read() {
    let clock = TestClock::new();
    let disks: Vec<_> = (0..3).map(|_| sbd_disk(&clock, 4, &["me"])).collect();
    disks[0].from(clock.at(ms(550)), Io::Hang);
    // An I/O error does not make a disk stale at once; only its age does.
    disks[1].from(clock.at(ms(550)), Io::Fail);
    let dog = SoftWatchdog::new(clock.shared());
    let (r, calls) = finish(run(&clock, config(&clock, &disks), dog.clone()));
    let (action, reason) = self_fenced(r);
    assert_eq!(action, SelfFenceAction::Reboot);
    assert!(reason.contains("only 1 of 3"), "{reason}");
    assert!(reason.contains("injected I/O error"), "{reason}");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, 1500);
    disks[0].release();
}

#[test]
fn one_failing_disk_of_three_keeps_feeding() {
    let clock = TestClock::new();
    let disks: Vec<_> = (0..3).map(|_| sbd_disk(&clock, 4, &["me"])).collect();
    disks[2].from(clock.at(ms(50)), Io::Fail);
    let cfg = config(&clock, &disks);
    let stop = Arc::clone(&cfg.stop);
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let h = run(&clock, cfg, dog.clone());
    clock.sleep_until(ms(60_050));
    stop.store(true, Ordering::SeqCst);
    drop(me);
    let (r, calls) = finish(h);
    assert_eq!(r.unwrap(), Outcome::Stopped);
    assert!(calls.is_empty());
    // Fed on every look, a minute long: never a gap the hardware would fire on.
    let feeds = feeds_ms(&clock, &dog);
    assert!(feeds.windows(2).all(|w| w[1] - w[0] <= 100), "{feeds:?}");
    assert!(feeds.last() >= Some(&60_000));
    assert!(dog.is_disarmed());
}

#[test]
fn pill_at_start_is_refused() {
    let clock = TestClock::new();
    let d = sbd_disk(&clock, 4, &["me"]);
    put(&d, 0, Message::Reset);
    let dog = SoftWatchdog::new(clock.shared());
    let (r, calls) = finish(run(&clock, config(&clock, &[d]), dog.clone()));
    assert!(matches!(r, Err(WatchError::PillAtStart { .. })), "{r:?}");
    assert!(calls.is_empty());
    assert!(dog.feed_times().is_empty(), "never armed");
}

#[test]
fn no_majority_at_start_is_refused_after_the_startup_timeout() {
    let clock = TestClock::new();
    let disks: Vec<_> = (0..3).map(|_| sbd_disk(&clock, 4, &["me"])).collect();
    disks[0].from(clock.at(Duration::ZERO), Io::Hang);
    disks[1].from(clock.at(Duration::ZERO), Io::Fail);
    let dog = SoftWatchdog::new(clock.shared());
    let (r, _, ended) = finish_at(run(&clock, config(&clock, &disks), dog.clone()));
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            WatchError::NoMajorityAtStart {
                ok: 1,
                total: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("disk0: no answer"), "{e}");
    assert!(e.to_string().contains("injected I/O error"), "{e}");
    assert_eq!(ended, 5000, "gave up at the startup timeout");
    assert!(dog.feed_times().is_empty(), "never armed");
    disks[0].release();
}

struct Failing;
impl HealthRule for Failing {
    fn name(&self) -> &str {
        "quorum"
    }
    fn check(&mut self) -> Result<(), Unhealthy> {
        Err(Unhealthy("not quorate".into()))
    }
}

#[test]
fn a_failing_rule_stops_feeding_then_self_fences_after_w_over_2() {
    let clock = TestClock::new();
    let d = sbd_disk(&clock, 4, &["me"]);
    let dog = SoftWatchdog::new(clock.shared());
    let mut cfg = config(&clock, &[d]);
    cfg.rules.push(Box::new(Failing));
    let (r, calls) = finish(run(&clock, cfg, dog.clone()));
    let (_, reason) = self_fenced(r);
    assert!(
        reason.contains("health rule quorum: not quorate"),
        "{reason}"
    );
    assert_eq!(calls.len(), 1);
    // First checked at 100 (the first look after arming at 0), then W/2 of grace.
    assert_eq!(calls[0].2, 1100);
    // One feed at arming; none while unhealthy.
    assert_eq!(feeds_ms(&clock, &dog), vec![0]);
}

#[test]
fn corrupted_header_stops_counting_at_once() {
    let clock = TestClock::new();
    let d = sbd_disk(&clock, 4, &["me"]);
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let h = run(
        &clock,
        config(&clock, std::slice::from_ref(&d)),
        dog.clone(),
    );
    clock.sleep_until(ms(250));
    d.mem().write(0, &[0xAB; 512], clock.at(FAR)).unwrap();
    drop(me);
    let (r, calls) = finish(h);
    let (_, reason) = self_fenced(r);
    assert!(reason.contains("no SBD header"), "{reason}");
    assert_eq!(calls[0].2, 300, "not aged out: at the read that saw it");
}

/// An SBD disk (msgwait 4 s) with a heartbeat area, `nodes` in slots 0, 1, ...
fn sbd_disk_with_area(clock: &TestClock, nodes: &[&str]) -> SimDisk {
    let d = sbd_disk_sized(clock, heartbeat::sectors_needed(255), 4, nodes);
    heartbeat::write_area(d.mem(), &test_header(4), FAR).unwrap();
    d
}

/// The heartbeat record of `slot`, as a reader on another node sees it.
fn record_of(d: &SimDisk, slot: u8) -> Result<Record, heartbeat::HeartbeatError> {
    let area = heartbeat::read_area(d.mem(), &test_header(4), Instant::now() + FAR).unwrap();
    heartbeat::read_record(d.mem(), &area, slot, Instant::now() + FAR).unwrap()
}

/// Like [`run`], keeping the status lines the watcher sends.
fn run_noting(
    clock: &TestClock,
    cfg: WatchConfig,
    dog: SoftWatchdog,
) -> (Run, Arc<std::sync::Mutex<Vec<String>>>) {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, l) = (clock.clone(), Arc::clone(&lines));
    let h = clock
        .spawn("inquisitor", move || {
            let mut rec = Recorder {
                clock: c,
                calls: Vec::new(),
            };
            let mut note = |line: &str| l.lock().unwrap().push(line.to_string());
            let r = watch(cfg, || Ok(dog), &mut rec, &mut note);
            let ended = rec.clock.elapsed().as_millis() as u64;
            (r, rec.calls, ended)
        })
        .unwrap();
    (h, lines)
}

#[test]
fn the_heartbeat_advances_once_per_good_read_and_stops_with_the_watcher() {
    let clock = TestClock::new();
    let d = sbd_disk_with_area(&clock, &["me"]);
    let sbd_before = d.mem().snapshot()[..511 * 512].to_vec();
    let cfg = config(&clock, std::slice::from_ref(&d));
    let stop = Arc::clone(&cfg.stop);
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let (h, lines) = run_noting(&clock, cfg, dog.clone());
    clock.sleep_until(ms(1050));
    // Reads at 0 (setup), 100, ..., 1000: eleven heartbeats, counters 0 to 10.
    let r = record_of(&d, 0).unwrap();
    assert_eq!(r.counter, 10);
    assert_eq!((r.slot, &r.name[..], r.disk_uuid), (0, &b"me"[..], [7; 16]));
    assert_eq!(r.boot_id, WriterIdentity::now().boot_id);
    assert!(r.written_ms >= r.started_ms && r.started_ms > 0, "{r:?}");
    stop.store(true, Ordering::SeqCst);
    drop(me);
    let (r2, calls) = finish(h);
    assert_eq!(r2.unwrap(), Outcome::Stopped);
    assert!(calls.is_empty());
    let last = record_of(&d, 0).unwrap().counter;
    assert!(last <= 11, "at most the read in flight at the stop: {last}");
    let me = clock.enter();
    clock.sleep_until(ms(3000));
    drop(me);
    assert_eq!(
        record_of(&d, 0).unwrap().counter,
        last,
        "nothing after the stop"
    );
    assert_eq!(
        &d.mem().snapshot()[..511 * 512],
        &sbd_before[..],
        "sbd's sectors untouched"
    );
    let lines = lines.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("heartbeat on disk0: writing")),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("heartbeat")).count(),
        1,
        "said once, not every poll: {lines:?}"
    );
}

#[test]
fn no_heartbeat_once_a_pill_is_read_or_the_reads_fail() {
    // A pill read at 500: the beats of the reads at 0..400 only.
    let clock = TestClock::new();
    let d = sbd_disk_with_area(&clock, &["me"]);
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let h = run(
        &clock,
        config(&clock, std::slice::from_ref(&d)),
        dog.clone(),
    );
    clock.sleep_until(ms(450));
    put(&d, 0, Message::Off);
    drop(me);
    let (r, _) = finish(h);
    assert_eq!(self_fenced(r).0, SelfFenceAction::Off);
    assert_eq!(record_of(&d, 0).unwrap().counter, 4);

    // Reads failing from 550: the last beat is the read at 500's; the node self-fences at
    // 1500 and nothing was written in between.
    let clock = TestClock::new();
    let d = sbd_disk_with_area(&clock, &["me"]);
    d.from(clock.at(ms(550)), Io::Fail);
    let dog = SoftWatchdog::new(clock.shared());
    let (r, calls) = finish(run(&clock, config(&clock, std::slice::from_ref(&d)), dog));
    self_fenced(r);
    assert_eq!(calls[0].2, 1500);
    assert_eq!(record_of(&d, 0).unwrap().counter, 5);
}

#[test]
fn a_stuck_heartbeat_write_never_holds_up_the_reads() {
    let clock = TestClock::new();
    let d = sbd_disk_with_area(&clock, &["me"]);
    // Writes to this node's record hang from 250 on; every other I/O is normal.
    d.from_on_sector(
        clock.at(ms(250)),
        heartbeat::record_sector(255, 0),
        Io::Hang,
    );
    let cfg = config(&clock, std::slice::from_ref(&d));
    let stop = Arc::clone(&cfg.stop);
    let dog = SoftWatchdog::new(clock.shared());
    let me = clock.enter();
    let h = run(&clock, cfg, dog.clone());
    clock.sleep_until(ms(10_050));
    stop.store(true, Ordering::SeqCst);
    drop(me);
    let (r, calls) = finish(h);
    assert_eq!(r.unwrap(), Outcome::Stopped);
    assert!(calls.is_empty(), "{calls:?}");
    let feeds = feeds_ms(&clock, &dog);
    assert!(feeds.windows(2).all(|w| w[1] - w[0] <= 100), "{feeds:?}");
    assert!(feeds.last() >= Some(&10_000));
    // Beats 0, 1, 2 (reads at 0, 100, 200) landed; the one handed over at 300 is stuck.
    assert_eq!(record_of(&d, 0).unwrap().counter, 2);
    d.release();
}

#[test]
fn without_heartbeats_or_without_an_area_nothing_is_written_past_sbds_sectors() {
    // Asked not to: the area stays as `create` left it.
    let clock = TestClock::new();
    let d = sbd_disk_with_area(&clock, &["me"]);
    let mut cfg = config(&clock, std::slice::from_ref(&d));
    cfg.heartbeat = false;
    let stop = Arc::clone(&cfg.stop);
    let me = clock.enter();
    let h = run(&clock, cfg, SoftWatchdog::new(clock.shared()));
    clock.sleep_until(ms(1050));
    stop.store(true, Ordering::SeqCst);
    drop(me);
    assert_eq!(finish(h).0.unwrap(), Outcome::Stopped);
    assert_eq!(record_of(&d, 0), Err(heartbeat::HeartbeatError::Blank));

    // A disk made by sbd (no area, room for one): the watcher says why and writes nothing.
    let clock = TestClock::new();
    let d = sbd_disk_sized(&clock, heartbeat::sectors_needed(255), 4, &["me"]);
    let cfg = config(&clock, std::slice::from_ref(&d));
    let stop = Arc::clone(&cfg.stop);
    let me = clock.enter();
    let (h, lines) = run_noting(&clock, cfg, SoftWatchdog::new(clock.shared()));
    clock.sleep_until(ms(1050));
    stop.store(true, Ordering::SeqCst);
    drop(me);
    assert_eq!(finish(h).0.unwrap(), Outcome::Stopped);
    assert!(d.mem().snapshot()[511 * 512..].iter().all(|b| *b == 0));
    let lines = lines.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("not written") && l.contains("create-heartbeat")),
        "{lines:?}"
    );
}

#[test]
fn the_counter_goes_on_from_the_record_after_a_restart() {
    let clock = TestClock::new();
    let d = sbd_disk_with_area(&clock, &["me"]);
    for round in 0..2 {
        let cfg = config(&clock, std::slice::from_ref(&d));
        let stop = Arc::clone(&cfg.stop);
        let me = clock.enter();
        let h = run(&clock, cfg, SoftWatchdog::new(clock.shared()));
        let before = clock.elapsed();
        clock.sleep_until(before + ms(450));
        stop.store(true, Ordering::SeqCst);
        drop(me);
        assert_eq!(finish(h).0.unwrap(), Outcome::Stopped);
        let c = record_of(&d, 0).unwrap().counter;
        // Five beats per round (reads at +0..+400), the second round going on from the first.
        assert!(
            (5 * round + 4..=5 * round + 5).contains(&c),
            "round {round}: {c}"
        );
    }
}
