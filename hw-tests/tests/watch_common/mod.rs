//! Runs our watcher in-process on real loop devices with a recording self-fence sink and a
//! software stand-in for the hardware watchdog. Test code only: the recording sink must never
//! be compiled into a shipped binary (see `watchdog::self_fence`).
//!
//! Never run `palisade-sbd watch` on the test host: its sink reboots the machine.
#![allow(dead_code)]

use hw_tests::loopdev::LoopDevice;
use hw_tests::throttle::Throttle;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use watchdog::test_support::SoftWatchdog;
use watchdog::{watch, Outcome, SelfFence, SelfFenceAction, WatchConfig, WatchDisk, WatchError};

/// Every self-fence call, with when it happened.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<(SelfFenceAction, String, Instant)>>>);

impl SelfFence for Recorder {
    fn self_fence(&mut self, action: SelfFenceAction, reason: &str) {
        self.0
            .lock()
            .unwrap()
            .push((action, reason.into(), Instant::now()));
    }
}

/// A watcher running on its own thread.
pub struct Running {
    pub handle: Option<JoinHandle<Result<Outcome, WatchError>>>,
    pub stop: Arc<AtomicBool>,
    pub dog: SoftWatchdog,
    pub rec: Recorder,
}

impl Running {
    /// Waits for the watcher to end (bounded); panics if it does not.
    pub fn join(mut self, within: Duration) -> Result<Outcome, WatchError> {
        let h = self.handle.take().unwrap();
        let t = Instant::now();
        while !h.is_finished() {
            assert!(
                t.elapsed() < within,
                "watcher still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        h.join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts the watcher for `name` on `disks`; a disk with a throttle reads from inside it.
pub fn start(disks: &[(PathBuf, Option<Arc<Throttle>>)], name: &str) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let dog = SoftWatchdog::default();
    let rec = Recorder::default();
    let cfg = WatchConfig {
        disks: disks
            .iter()
            .map(|(p, thr)| {
                let (p, thr) = (p.clone(), thr.clone());
                let mut open = watchdog::watcher::real_disk(p.clone());
                WatchDisk {
                    name: p.display().to_string(),
                    open: Box::new(move || {
                        if let Some(t) = &thr {
                            t.enter_this_thread()
                                .map_err(|e| drivers::sbd::DiskError::Open {
                                    path: p.clone(),
                                    reason: e.to_string(),
                                })?;
                        }
                        open()
                    }),
                }
            })
            .collect(),
        local_name: drivers::sbd::format::node_name(name).unwrap(),
        poll: watchdog::watcher::DEFAULT_POLL,
        watchdog_timeout: None,
        startup_timeout: Duration::from_secs(10),
        rules: Vec::new(),
        stop: Arc::clone(&stop),
        clock: watchdog::clock::system(),
        heartbeat: true,
    };
    let (d2, mut r2) = (dog.clone(), rec.clone());
    let handle = std::thread::spawn(move || watch(cfg, || Ok(d2), &mut r2, &mut |_: &str| {}));
    Running {
        handle: Some(handle),
        stop,
        dog,
        rec,
    }
}

/// `n` loop devices formatted by our `create` with watchdog 1 s, allocate 0 s, msgwait 2 s.
pub fn sbd_disks(n: usize) -> Vec<LoopDevice> {
    let v: Vec<LoopDevice> = (0..n).map(|_| LoopDevice::new(16, None).unwrap()).collect();
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
    v
}

/// Writes `msg` to `target`'s slot on every disk now (no msgwait), from node `fencer`.
pub fn pill(disks: &[LoopDevice], target: &str, msg: drivers::sbd::Message) -> Instant {
    let cfg: Vec<drivers::sbd::DiskConfig> = disks
        .iter()
        .map(|d| drivers::sbd::DiskConfig {
            path: d.path().into(),
            uuid: None,
        })
        .collect();
    drivers::sbd::open_and_deliver(&cfg, target, msg, "fencer", Duration::from_secs(3)).unwrap();
    Instant::now()
}

/// The mailbox command of `slot` on a disk, read with O_DIRECT.
pub fn mailbox(d: &LoopDevice, slot: u8) -> drivers::sbd::Message {
    let disk = drivers::sbd::Disk::open(d.path(), Instant::now() + Duration::from_secs(3)).unwrap();
    watchdog::sbd_admin::read_mailbox(&disk, slot, Duration::from_secs(3))
        .unwrap()
        .cmd
}

/// Waits (bounded) until `node` has a slot on every disk; returns the slot on the first.
pub fn wait_slot(disks: &[LoopDevice], node: &str, within: Duration) -> u8 {
    let t = Instant::now();
    loop {
        let mut slot = None;
        let mut all = true;
        for d in disks {
            let disk = drivers::sbd::Disk::open(d.path(), Instant::now() + Duration::from_secs(3))
                .unwrap();
            let h = drivers::sbd::read_header(&disk, Duration::from_secs(3)).unwrap();
            match drivers::sbd::lookup_slot(&disk, &h, node.as_bytes(), Duration::from_secs(3))
                .unwrap()
            {
                Some(s) => {
                    slot.get_or_insert(s);
                }
                None => all = false,
            }
        }
        if all {
            if let Some(s) = slot {
                return s;
            }
        }
        assert!(t.elapsed() < within, "{node} never got a slot");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's sbd watcher, started only the safe way (shared/PEERS.md), killed on drop.
pub struct SbdWatcher {
    pid: i32,
    _dir: tempfile::TempDir,
}

impl SbdWatcher {
    /// Starts `sbd -d DEV... -n NODE -w /dev/null -Z -Z -p PIDFILE watch` and waits for its pidfile.
    pub fn start(devices: &[&Path], node: &str) -> SbdWatcher {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("sbd.pid");
        let mut cmd = Command::new("/usr/sbin/sbd");
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SBD_PACEMAKER", "no")
            // sbd 1.5 refuses to start without Pacemaker unless told this explicitly.
            .env("SBD_SYNC_RESOURCE_STARTUP", "no");
        for d in devices {
            cmd.arg("-d").arg(d);
        }
        let st = cmd
            .args(["-n", node, "-w", "/dev/null", "-Z", "-Z", "-p"])
            .arg(&pidfile)
            .arg("watch")
            .status()
            .unwrap();
        assert!(st.success(), "sbd watch failed to start");
        let t = Instant::now();
        let pid = loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break p;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "sbd wrote no pidfile"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        SbdWatcher { pid, _dir: dir }
    }

    /// Whether the watcher still runs (and is not a zombie).
    pub fn alive(&self) -> bool {
        // The daemon is not our child (it forked away): probe with signal 0.
        // SAFETY: kill with signal 0 only checks the pid.
        let exists = unsafe { libc::kill(self.pid, 0) == 0 };
        exists
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    }
}

impl Drop for SbdWatcher {
    fn drop(&mut self) {
        // sbd's inquisitor leads its own session (it daemonised): take the whole group.
        // SAFETY: signalling a process group we started.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::kill(self.pid, libc::SIGKILL);
        }
    }
}
