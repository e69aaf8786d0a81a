//! Test doubles for the watcher, shared by this crate's tests and `hw-tests`' (feature
//! `test-support`; never enabled by a product build): virtual time ([`TestClock`]), the one
//! software watchdog ([`SoftWatchdog`]) and a simulated disk whose I/O takes virtual time or
//! hangs ([`SimDisk`]).
//!
//! There is deliberately no self-fence sink here: a recording sink stays in test files (see
//! [`crate::self_fence`]), so no library build can hand one to the watcher.

use crate::clock::{self, Clock};
use crate::device::{WatchdogDevice, WatchdogError, WatchdogInfo};
use drivers::sbd::{BlockDevice, DiskError, MemDisk, SectorSize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Virtual time for deterministic tests of threaded code.
///
/// Every thread that sleeps or waits on it is a *participant* (started with
/// [`TestClock::spawn`] or [`Clock::spawn`], or joined with [`TestClock::enter`]; any other
/// thread that waits takes part for the length of its wait). Exactly one
/// participant runs at a time: it holds the clock's token until it blocks on the clock, then
/// the next runnable participant (in the order they became runnable) gets it. When none is
/// runnable, time jumps to the earliest deadline and the participants due then run, lowest
/// id first. So the same test makes the same interleaving every time, and a test of minutes
/// of watcher time takes milliseconds.
///
/// A participant blocked with no deadline (a read stuck in the kernel) stays blocked until a
/// [`Clock::notify`] wakes it; if every participant is blocked like that, time stops
/// ([`TestClock::stalled`]).
#[derive(Clone)]
pub struct TestClock(Arc<Inner>);

struct Inner {
    epoch: Instant,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Default)]
struct State {
    now: Duration,
    next_id: u64,
    threads: HashMap<ThreadId, u64>,
    participants: usize,
    running: Option<u64>,
    runnable: VecDeque<u64>,
    /// Blocked participants: deadline (none: until notified) and whether a notify wakes them.
    blocked: BTreeMap<u64, (Option<Duration>, bool)>,
    stalled: bool,
}

impl State {
    /// Hands the token on: to the next runnable participant, else to those due at the
    /// earliest deadline after moving time there.
    fn dispatch(&mut self) {
        if self.running.is_some() {
            return;
        }
        if self.runnable.is_empty() {
            let Some(next) = self.blocked.values().filter_map(|(d, _)| *d).min() else {
                self.stalled = self.participants > 0;
                return;
            };
            self.now = self.now.max(next);
            let mut due: Vec<(Duration, u64)> = self
                .blocked
                .iter()
                .filter_map(|(id, (d, _))| d.filter(|d| *d <= self.now).map(|d| (d, *id)))
                .collect();
            due.sort();
            for (_, id) in due {
                self.blocked.remove(&id);
                self.runnable.push_back(id);
            }
        }
        self.stalled = false;
        self.running = self.runnable.pop_front();
    }

    fn leave(&mut self, id: u64) {
        self.participants = self.participants.saturating_sub(1);
        self.blocked.remove(&id);
        self.runnable.retain(|r| *r != id);
        self.threads.retain(|_, v| *v != id);
        if self.running == Some(id) {
            self.running = None;
        }
        self.dispatch();
    }
}

/// A thread's membership of a [`TestClock`]; dropping it leaves (the thread may then block
/// outside the clock, e.g. in `JoinHandle::join`, without stopping time).
pub struct Participant {
    clock: TestClock,
    id: u64,
}

impl Drop for Participant {
    fn drop(&mut self) {
        let mut s = self.clock.state();
        s.leave(self.id);
        drop(s);
        self.clock.0.turn.notify_all();
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClock {
    /// A clock at virtual time zero ([`TestClock::at`]`(0)`).
    pub fn new() -> Self {
        TestClock(Arc::new(Inner {
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            turn: Condvar::new(),
        }))
    }

    /// This clock as the watcher takes it.
    pub fn shared(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.0.state)
    }

    /// The instant `offset` after this clock's zero.
    pub fn at(&self, offset: Duration) -> Instant {
        self.0.epoch + offset
    }

    /// Virtual time elapsed since zero.
    pub fn elapsed(&self) -> Duration {
        self.state().now
    }

    /// How long after zero `t` is (zero for an earlier instant).
    pub fn since_zero(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.0.epoch)
    }

    /// Whether every participant is blocked with no deadline, so time cannot move.
    pub fn stalled(&self) -> bool {
        self.state().stalled
    }

    fn register(&self) -> u64 {
        let mut s = self.state();
        let id = s.next_id;
        s.next_id += 1;
        s.participants += 1;
        s.runnable.push_back(id);
        s.dispatch();
        id
    }

    /// Waits for the token; the caller is participant `id`.
    fn take_turn<'a>(&'a self, mut s: MutexGuard<'a, State>, id: u64) -> MutexGuard<'a, State> {
        while s.running != Some(id) {
            s = self.0.turn.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s
    }

    /// Makes the calling thread a participant and waits for its turn.
    pub fn enter(&self) -> Participant {
        let id = self.register();
        let mut s = self.state();
        s.threads.insert(std::thread::current().id(), id);
        drop(self.take_turn(s, id));
        Participant {
            clock: self.clone(),
            id,
        }
    }

    /// Starts a participant thread; it runs when it gets its turn.
    pub fn spawn<T: Send + 'static>(
        &self,
        name: &str,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<JoinHandle<T>> {
        self.spawn_sized(name.into(), 256 * 1024, body)
    }

    fn spawn_sized<T: Send + 'static>(
        &self,
        name: String,
        stack: usize,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<JoinHandle<T>> {
        // Registered here, before the thread exists, so that time cannot move past the
        // moment it was started while the OS is still creating it.
        let id = self.register();
        let me = self.clone();
        let r = std::thread::Builder::new()
            .name(name)
            .stack_size(stack)
            .spawn(move || {
                let mut s = me.state();
                s.threads.insert(std::thread::current().id(), id);
                drop(me.take_turn(s, id));
                let _p = Participant { clock: me, id };
                body()
            });
        if r.is_err() {
            self.state().leave(id);
            self.0.turn.notify_all();
        }
        r
    }

    /// Sleeps (as a participant) until `offset` after zero.
    pub fn sleep_until(&self, offset: Duration) {
        let now = self.elapsed();
        self.sleep(offset.saturating_sub(now));
    }

    fn block(
        &self,
        deadline: Option<Instant>,
        woken_by_notify: bool,
        ready: &mut dyn FnMut() -> bool,
    ) -> bool {
        let deadline = deadline.map(|d| self.since_zero(d));
        let me = std::thread::current().id();
        let known = self.state().threads.get(&me).copied();
        // A thread that is not a participant takes part for the length of this wait (its
        // turn then depends on when it came, so a deterministic test enters beforehand).
        let transient = known.is_none().then(|| self.enter());
        let mut s = self.state();
        let Some(id) = known.or_else(|| transient.as_ref().map(|p| p.id)) else {
            return ready();
        };
        loop {
            if ready() {
                drop(s);
                drop(transient);
                return true;
            }
            if deadline.is_some_and(|d| s.now >= d) {
                drop(s);
                drop(transient);
                return false;
            }
            s.blocked.insert(id, (deadline, woken_by_notify));
            s.running = None;
            s.dispatch();
            self.0.turn.notify_all();
            s = self.take_turn(s, id);
        }
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        self.0.epoch + self.state().now
    }

    fn sleep(&self, d: Duration) {
        let until = self.now() + d;
        self.block(Some(until), false, &mut || false);
    }

    fn wait_until(&self, deadline: Option<Instant>, ready: &mut dyn FnMut() -> bool) -> bool {
        self.block(deadline, true, ready)
    }

    fn notify(&self) {
        let mut s = self.state();
        let woken: Vec<u64> = s
            .blocked
            .iter()
            .filter(|(_, (_, by_notify))| *by_notify)
            .map(|(id, _)| *id)
            .collect();
        for id in woken {
            s.blocked.remove(&id);
            s.runnable.push_back(id);
        }
        s.dispatch();
        drop(s);
        self.0.turn.notify_all();
    }

    fn spawn(
        &self,
        name: String,
        stack: usize,
        body: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<()> {
        // Room for the clock's own bookkeeping on top of what the watcher asks for.
        self.spawn_sized(name, stack.max(128 * 1024), body)
            .map(drop)
    }
}

/// What the software watchdog saw.
#[derive(Debug, Default)]
struct SoftState {
    timeout: u32,
    feeds: Vec<Instant>,
    disarmed: bool,
}

/// A software stand-in for `/dev/watchdog`: records the timeout it granted, every feed (on
/// its clock) and a disarm, and says when the hardware would have reset the node.
#[derive(Clone)]
pub struct SoftWatchdog {
    clock: Arc<dyn Clock>,
    grant: Option<u32>,
    state: Arc<Mutex<SoftState>>,
}

impl Default for SoftWatchdog {
    /// On real time (for tests on real disks).
    fn default() -> Self {
        Self::new(clock::system())
    }
}

impl SoftWatchdog {
    /// A watchdog that grants whatever timeout is asked, timing feeds on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        SoftWatchdog {
            clock,
            grant: None,
            state: Arc::default(),
        }
    }

    /// Grants `seconds` whatever is asked, as a driver that rounds to its hardware does.
    pub fn granting(mut self, seconds: u32) -> Self {
        self.grant = Some(seconds);
        self
    }

    fn state(&self) -> MutexGuard<'_, SoftState> {
        locked(&self.state)
    }

    /// The timeout in force (0 before any was set).
    pub fn granted_timeout(&self) -> u32 {
        self.state().timeout
    }

    /// How many times it was fed.
    pub fn feeds(&self) -> u64 {
        self.state().feeds.len() as u64
    }

    /// When it was fed.
    pub fn feed_times(&self) -> Vec<Instant> {
        self.state().feeds.clone()
    }

    /// Whether it was disarmed (magic close).
    pub fn is_disarmed(&self) -> bool {
        self.state().disarmed
    }

    /// When real hardware would have reset the node: `timeout` after the first feed not
    /// followed by another within `timeout` (a feed exactly at the timeout counts as in time,
    /// the latest the hardware could fire). `None` if never armed or disarmed.
    pub fn fires_at(&self) -> Option<Instant> {
        let s = self.state();
        if s.disarmed {
            return None;
        }
        let w = Duration::from_secs(u64::from(s.timeout));
        let mut prev = *s.feeds.first()?;
        for f in s.feeds.iter().skip(1) {
            if f.saturating_duration_since(prev) > w {
                break;
            }
            prev = *f;
        }
        Some(prev + w)
    }

    /// Waits in real time (bounded) until fed `n` more times than now; false if it never is.
    pub fn fed_more(&self, n: u64, within: Duration) -> bool {
        let start = self.feeds();
        let t = Instant::now();
        while t.elapsed() < within {
            if self.feeds() >= start + n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl WatchdogDevice for SoftWatchdog {
    fn info(&self) -> Result<WatchdogInfo, WatchdogError> {
        Ok(WatchdogInfo {
            identity: "software stand-in".into(),
            options: crate::device::WDIOF_SETTIMEOUT | crate::device::WDIOF_KEEPALIVEPING,
            firmware_version: 0,
        })
    }
    fn set_timeout(&mut self, seconds: u32) -> Result<u32, WatchdogError> {
        let granted = self.grant.unwrap_or(seconds);
        self.state().timeout = granted;
        Ok(granted)
    }
    fn timeout(&self) -> Result<u32, WatchdogError> {
        Ok(self.granted_timeout())
    }
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        let now = self.clock.now();
        self.state().feeds.push(now);
        Ok(())
    }
    fn disarm(self) -> Result<(), WatchdogError> {
        self.state().disarmed = true;
        Ok(())
    }
}

/// How a [`SimDisk`] treats an I/O, by the virtual time it starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Done at once.
    Normal,
    /// Takes this long; a read returns what the disk held when it *started*.
    Slow(Duration),
    /// Never returns until [`SimDisk::release`] (stuck in the kernel).
    Hang,
    /// Fails at once with an I/O error.
    Fail,
}

struct SimInner {
    mem: MemDisk,
    clock: Arc<dyn Clock>,
    /// (from, only I/O covering this sector, behaviour), in the order set; the last one that
    /// has begun by an I/O's start and covers its sectors applies.
    script: Mutex<Vec<(Instant, Option<u64>, Io)>>,
    released: AtomicBool,
    /// Start and end of every read that returned data.
    reads: Mutex<Vec<(Instant, Instant)>>,
}

/// A simulated shared disk on a [`Clock`]: an in-memory SBD disk whose reads and writes are
/// normal, slow, hanging or failing from given instants on.
#[derive(Clone)]
pub struct SimDisk(Arc<SimInner>);

impl SimDisk {
    /// A zeroed disk of `sectors` 512-byte sectors named `name`.
    pub fn new(name: &str, sectors: u64, clock: Arc<dyn Clock>) -> Self {
        SimDisk(Arc::new(SimInner {
            mem: MemDisk::new(name, SectorSize::S512, sectors),
            clock,
            script: Mutex::new(Vec::new()),
            released: AtomicBool::new(false),
            reads: Mutex::new(Vec::new()),
        }))
    }

    /// The disk itself, as another node (a fencer) reaches it: no faults, no time.
    pub fn mem(&self) -> &MemDisk {
        &self.0.mem
    }

    /// From `at` on, I/O that starts behaves as `io`.
    pub fn from(&self, at: Instant, io: Io) {
        locked(&self.0.script).push((at, None, io));
    }

    /// From `at` on, I/O that starts and covers `sector` behaves as `io` (a slow region:
    /// e.g. the mailbox read of a servant's poll slow while its header read is not).
    pub fn from_on_sector(&self, at: Instant, sector: u64, io: Io) {
        locked(&self.0.script).push((at, Some(sector), io));
    }

    /// Lets every hanging I/O return, and later ones not hang.
    pub fn release(&self) {
        self.0.released.store(true, Ordering::SeqCst);
        self.0.clock.notify();
    }

    /// Start and end of every read that returned data, in order.
    pub fn reads(&self) -> Vec<(Instant, Instant)> {
        locked(&self.0.reads).clone()
    }

    fn behaviour(&self, at: Instant, first: u64, count: u64) -> Io {
        let covers = |s: &Option<u64>| s.is_none_or(|s| (first..first + count).contains(&s));
        locked(&self.0.script)
            .iter()
            .rev()
            .find(|(from, sector, _)| *from <= at && covers(sector))
            .map_or(Io::Normal, |(_, _, io)| *io)
    }

    /// Applies the behaviour of an I/O starting now; `Err` for a failure.
    fn gate(&self, what: &str, first: u64, count: u64) -> Result<(), DiskError> {
        let started = self.0.clock.now();
        match self.behaviour(started, first, count) {
            Io::Normal => {}
            Io::Slow(d) => self.0.clock.sleep(d),
            Io::Hang => {
                let released = &self.0.released;
                self.0
                    .clock
                    .wait_until(None, &mut || released.load(Ordering::SeqCst));
            }
            Io::Fail => {
                return Err(DiskError::Io {
                    path: self.0.mem.path().into(),
                    what: what.into(),
                    reason: "injected I/O error".into(),
                })
            }
        }
        Ok(())
    }
}

impl BlockDevice for SimDisk {
    fn path(&self) -> &Path {
        self.0.mem.path()
    }
    fn sector_size(&self) -> SectorSize {
        self.0.mem.sector_size()
    }
    fn read(&self, first: u64, count: u64, deadline: Instant) -> Result<Vec<u8>, DiskError> {
        let started = self.0.clock.now();
        // Sampled at the start: a slow read returns the disk as it was then, the case that
        // makes the watcher time a read by its start.
        let data = self.0.mem.read(first, count, deadline);
        self.gate("read", first, count)?;
        if data.is_ok() {
            locked(&self.0.reads).push((started, self.0.clock.now()));
        }
        data
    }
    fn write(&self, first: u64, data: &[u8], deadline: Instant) -> Result<(), DiskError> {
        let sectors = (data.len() / self.sector_size().bytes().max(1)) as u64;
        self.gate("write", first, sectors.max(1))?;
        self.0.mem.write(first, data, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn virtual_time_moves_only_when_every_participant_waits() {
        let clock = TestClock::new();
        let me = clock.enter();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (c, l) = (clock.clone(), Arc::clone(&log));
        let h = clock
            .spawn("sleeper", move || {
                for _ in 0..3 {
                    c.sleep(Duration::from_millis(300));
                    locked(&l).push(("sleeper", c.elapsed()));
                }
            })
            .unwrap();
        clock.sleep(Duration::from_millis(500));
        locked(&log).push(("test", clock.elapsed()));
        clock.sleep_until(Duration::from_secs(1));
        drop(me);
        h.join().unwrap();
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            *locked(&log),
            vec![
                ("sleeper", ms(300)),
                ("test", ms(500)),
                ("sleeper", ms(600)),
                ("sleeper", ms(900)),
            ]
        );
        assert_eq!(clock.elapsed(), ms(1000));
    }

    #[test]
    fn a_channel_on_virtual_time_times_out_and_delivers_in_order() {
        let clock = TestClock::new();
        let me = clock.enter();
        let (tx, rx) = clock::channel::<u64>(clock.shared());
        let sent = Arc::new(AtomicU64::new(0));
        let (c, s) = (clock.clone(), Arc::clone(&sent));
        clock
            .spawn("sender", move || {
                c.sleep(Duration::from_secs(5));
                tx.send(c.elapsed().as_millis() as u64).ok();
                s.store(1, Ordering::SeqCst);
            })
            .unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(2)),
            Err(clock::RecvError::Timeout)
        );
        assert_eq!(clock.elapsed(), Duration::from_secs(2));
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(5000));
        assert_eq!(clock.elapsed(), Duration::from_secs(5), "woken by the send");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Err(clock::RecvError::Disconnected)
        );
        drop(me);
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_hung_read_stalls_until_released_and_returns_what_it_started_with() {
        let clock = TestClock::new();
        let disk = SimDisk::new("sim", 8, clock.shared());
        disk.mem()
            .write(0, &[1; 512], clock.at(Duration::ZERO))
            .unwrap();
        disk.from(clock.at(Duration::from_secs(1)), Io::Hang);
        let d = disk.clone();
        let c = clock.clone();
        let h = clock
            .spawn("reader", move || {
                c.sleep(Duration::from_secs(2));
                d.read(0, 1, c.now()).unwrap()
            })
            .unwrap();
        let t = Instant::now();
        while !clock.stalled() {
            assert!(t.elapsed() < Duration::from_secs(10), "never stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
        disk.mem()
            .write(0, &[2; 512], clock.at(Duration::ZERO))
            .unwrap();
        disk.release();
        assert_eq!(h.join().unwrap(), vec![1; 512]);
        assert_eq!(clock.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn a_thread_that_is_not_a_participant_takes_part_while_it_waits() {
        let clock = TestClock::new();
        clock.sleep(Duration::from_secs(3));
        assert_eq!(clock.elapsed(), Duration::from_secs(3));
        // It left again: a participant's sleep does not wait for it.
        let c = clock.clone();
        let h = clock
            .spawn("sleeper", move || c.sleep(Duration::from_secs(1)))
            .unwrap();
        h.join().unwrap();
        assert_eq!(clock.elapsed(), Duration::from_secs(4));
        assert!(!clock.stalled());
    }

    #[test]
    fn the_soft_watchdog_says_when_it_would_fire() {
        let clock = TestClock::new();
        let _me = clock.enter();
        let mut dog = SoftWatchdog::new(clock.shared()).granting(2);
        assert_eq!(dog.set_timeout(5).unwrap(), 2);
        assert_eq!(dog.fires_at(), None, "not fed yet");
        for gap in [0, 1000, 2000, 2001, 100] {
            clock.sleep(Duration::from_millis(gap));
            dog.keepalive().unwrap();
        }
        // Fed at 0, 1.0, 3.0 (exactly 2 s later: in time), then 5.001 (too late).
        assert_eq!(dog.fires_at(), Some(clock.at(Duration::from_secs(5))));
        assert_eq!(dog.feeds(), 5);
        dog.clone().disarm().unwrap();
        assert_eq!(dog.fires_at(), None);
    }
}
