//! `palisade-sbd watch`, `query-watchdog` and `test-watchdog`: the process around the watcher
//! (memory locking, real-time priority, signals, systemd notification) and the watchdog
//! commands.
//!
//! `watch` always self-fences through [`RebootSink`]: nothing on the command line, in the
//! environment or in the build selects another sink.

use crate::device::{LinuxWatchdog, WatchdogDevice, WDIOF_SETTIMEOUT};
use crate::sbd_admin::{parse_args, parse_device_line, Options, Settings};
use crate::self_fence::RebootSink;
use crate::watcher::{self, Outcome, WatchConfig, WatchDisk};
use drivers::sbd::format;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The watchdog device when neither `-w` nor SBD_WATCHDOG_DEV names one (sbd's default).
pub const DEFAULT_WATCHDOG: &str = "/dev/watchdog";

/// Why the process around the watcher could not be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `mlockall` failed: pages may be swapped out or read back from a dead disk.
    #[error("mlockall: {0}; run as root or grant CAP_IPC_LOCK")]
    LockMemory(#[source] std::io::Error),
    /// Real-time scheduling was refused: a busy node may starve the watcher.
    #[error("SCHED_RR: {0}; run as root or grant CAP_SYS_NICE")]
    Realtime(#[source] std::io::Error),
    /// `--board` or PALISADE_BOARD names no usable profile.
    #[error(transparent)]
    Board(#[from] boards::BoardError),
}

/// The commands this module runs.
pub const COMMANDS: [&str; 3] = ["watch", "query-watchdog", "test-watchdog"];

/// Whether `args` ask for one of [`COMMANDS`] (the binary runs those without forking).
pub fn is_daemon_command(args: &[String]) -> bool {
    parse_args(args)
        .ok()
        .and_then(|o| o.command.first().cloned())
        .is_some_and(|c| COMMANDS.contains(&c.as_str()))
}

/// `sd_notify(3)` without libsystemd: one datagram per line to `$NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct SystemdNotify {
    sock: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl SystemdNotify {
    /// Connects to `$NOTIFY_SOCKET` if systemd set it (a path, or `@name` for an abstract one).
    pub fn from_env() -> Self {
        let sock = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = if let Some(abs) = p.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&p).ok()?
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        SystemdNotify { sock }
    }
}

impl watcher::Notify for SystemdNotify {
    fn notify(&mut self, line: &str) {
        if let Some(status) = line.strip_prefix("STATUS=") {
            drivers::errln!("palisade-sbd: {status}");
        }
        if let Some((s, a)) = &self.sock {
            let _ = s.send_to_addr(line.as_bytes(), a);
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic; the
        // struct lives for the duration of the call.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_term as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Locks every page now and later (so the watcher does not wait on swap or a page-in from a
/// dead disk), with one malloc arena (glibc otherwise reserves one per thread, which locking
/// would make resident). Returns what failed, if anything.
pub fn lock_memory() -> Result<(), DaemonError> {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX = -8 in <malloc.h>.
    unsafe {
        libc::mallopt(-8, 1);
    }
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return Err(DaemonError::LockMemory(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs this process (and threads started after) under SCHED_RR at the highest priority, as
/// sbd does, so a busy node cannot starve the watcher past its watchdog timeout.
pub fn make_realtime() -> Result<(), DaemonError> {
    // SAFETY: plain syscalls with a valid sched_param.
    unsafe {
        let p = libc::sched_param {
            sched_priority: libc::sched_get_priority_max(libc::SCHED_RR),
        };
        if libc::sched_setscheduler(0, libc::SCHED_RR, &p) != 0 {
            return Err(DaemonError::Realtime(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn local_name(o: &Options) -> String {
    o.local_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    })
}

/// Runs `watch`, `query-watchdog` or `test-watchdog`; returns the exit status.
pub fn run(args: &[String], settings: &Settings, err: &mut dyn Write) -> i32 {
    let mut o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    if o.devices.is_empty() {
        if let Some(line) = settings.get("SBD_DEVICE") {
            o.devices = parse_device_line(line);
        }
    }
    let dev = match resolve_watchdog(&mut o, settings) {
        Ok(dev) => dev,
        Err(e) => {
            let _ = writeln!(err, "palisade-sbd: {e}");
            return 1;
        }
    };
    match o.command.first().map(String::as_str) {
        Some("watch") => run_watch(&o, settings, &dev, err),
        Some("query-watchdog") => query_watchdog(Path::new("/sys/class/watchdog"), err),
        Some("test-watchdog") => test_watchdog(&dev, o.timeout_watchdog, err),
        _ => 1,
    }
}

/// The watchdog device: `-w`, else SBD_WATCHDOG_DEV, else the board profile's (`--board` or
/// PALISADE_BOARD), else [`DEFAULT_WATCHDOG`]. With a board, an asked-for timeout (`-1`) is
/// clamped into the hardware's range, so the watcher never assumes a timeout the board cannot
/// give (the driver's granted value is what the watcher uses either way).
pub fn resolve_watchdog(o: &mut Options, settings: &Settings) -> Result<PathBuf, DaemonError> {
    let board = match o
        .board
        .clone()
        .or_else(|| settings.get("PALISADE_BOARD").map(String::from))
    {
        None => None,
        Some(name) => Some(boards::Board::named(&name)?),
    };
    if let (Some(b), Some(t)) = (&board, o.timeout_watchdog) {
        o.timeout_watchdog = Some(b.watchdog_timeout(t));
    }
    Ok(o.watchdog_device
        .clone()
        .or_else(|| settings.get("SBD_WATCHDOG_DEV").map(PathBuf::from))
        .or_else(|| board.map(|b| PathBuf::from(b.watchdog.device)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WATCHDOG)))
}

/// Whether `watch` writes heartbeats: yes unless `--no-heartbeat` or
/// `PALISADE_SBD_HEARTBEAT=no` (environment or sbd config file). Writing needs a heartbeat area
/// on the disk as well, which only `palisade-sbd create` / `create-heartbeat` make, so a disk
/// made by sbd is never written past sbd's sectors whatever this says.
pub fn heartbeat_wanted(o: &Options, settings: &Settings) -> bool {
    let off = settings.get("PALISADE_SBD_HEARTBEAT").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "no" | "0" | "false" | "off"
        )
    });
    !(o.no_heartbeat || off)
}

fn run_watch(o: &Options, settings: &Settings, dev: &Path, err: &mut dyn Write) -> i32 {
    let Some(name) = format::node_name(&local_name(o)) else {
        let _ = writeln!(
            err,
            "palisade-sbd: the node name must be 1 to 63 bytes; pass -n NAME"
        );
        return 1;
    };
    install_signal_handlers();
    for r in [lock_memory(), make_realtime()] {
        if let Err(e) = r {
            // sbd carries on too; the watchdog still covers a watcher that is too slow.
            let _ = writeln!(err, "palisade-sbd: warning: {e}");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = WatchConfig {
        disks: o
            .devices
            .iter()
            .map(|p| WatchDisk {
                name: p.display().to_string(),
                open: watcher::real_disk(p.clone()),
            })
            .collect(),
        local_name: name,
        poll: watcher::DEFAULT_POLL,
        watchdog_timeout: o.timeout_watchdog,
        startup_timeout: Duration::from_secs(u64::from(o.io_timeout.unwrap_or(10).max(1))),
        rules: Vec::new(),
        stop: Arc::clone(&stop),
        clock: crate::clock::system(),
        heartbeat: heartbeat_wanted(o, settings),
    };
    // The signal handler sets STOP; forward it to the watcher's flag.
    let fwd = Arc::clone(&stop);
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .stack_size(watcher::SERVANT_STACK)
        .spawn(move || loop {
            if STOP.load(Ordering::SeqCst) {
                fwd.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        });
    let mut sink = RebootSink;
    let mut notify = SystemdNotify::from_env();
    let dev = dev.to_path_buf();
    match watcher::watch(cfg, || LinuxWatchdog::open(&dev), &mut sink, &mut notify) {
        Ok(Outcome::Exited { disk, from }) => {
            let _ = writeln!(
                err,
                "palisade-sbd: exit message from `{from}` on {disk}; watchdog disarmed"
            );
            0
        }
        Ok(Outcome::Stopped) => {
            let _ = writeln!(err, "palisade-sbd: stopped by signal; watchdog disarmed");
            0
        }
        Ok(Outcome::SelfFenced { .. }) => {
            // reboot(2) returned: never feed again and never exit (exiting could let a
            // service manager restart us); the hardware watchdog resets the node.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Err(e) => {
            let _ = writeln!(err, "palisade-sbd: {e}");
            1
        }
    }
}

/// One watchdog as sysfs describes it (no need to open, and so arm, the device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsWatchdog {
    /// `watchdogN`.
    pub name: String,
    /// The driver's identity.
    pub identity: String,
    /// `active` or `inactive`.
    pub state: String,
    /// Current timeout, seconds.
    pub timeout: String,
}

/// Reads every watchdog under `class` (`/sys/class/watchdog`).
pub fn list_watchdogs(class: &Path) -> Vec<SysfsWatchdog> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(class) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let rd = |f: &str| {
            std::fs::read_to_string(p.join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into())
        };
        out.push(SysfsWatchdog {
            name: e.file_name().to_string_lossy().into_owned(),
            identity: rd("identity"),
            state: rd("state"),
            timeout: rd("timeout"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn query_watchdog(class: &Path, err: &mut dyn Write) -> i32 {
    let all = list_watchdogs(class);
    let mut out = std::io::stdout().lock();
    if all.is_empty() {
        let _ = writeln!(err, "palisade-sbd: no watchdog device found under {}; load the driver module (e.g. i6300esb, iTCO_wdt, softdog)", class.display());
        return 1;
    }
    let _ = writeln!(out, "Discovered {} watchdog devices:", all.len());
    for (i, w) in all.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n[{}] /dev/{}\nIdentity: {}\nState: {}\nTimeout: {} s",
            i + 1,
            w.name,
            w.identity,
            w.state,
            w.timeout
        );
    }
    0
}

/// Arms the watchdog, feeds it never, and waits for the hardware to reset the node. Only ever
/// run this where a reset is wanted (a VM in the tests).
fn test_watchdog(dev: &Path, timeout: Option<u32>, err: &mut dyn Write) -> i32 {
    if std::env::var("PALISADE_SBD_TEST_WATCHDOG").as_deref() != Ok("reset-this-node") {
        let _ = writeln!(err, "palisade-sbd: test-watchdog resets this node within the watchdog timeout. To go on, set PALISADE_SBD_TEST_WATCHDOG=reset-this-node");
        return 1;
    }
    let mut wd = match LinuxWatchdog::open(dev) {
        Ok(w) => w,
        Err(e) => {
            let _ = writeln!(err, "palisade-sbd: {e}");
            return 1;
        }
    };
    let info = wd.info().ok();
    if let (Some(t), Some(i)) = (timeout, &info) {
        if i.options & WDIOF_SETTIMEOUT != 0 {
            let _ = wd.set_timeout(t);
        }
    }
    let t = wd.timeout().unwrap_or(0);
    let _ = writeln!(
        err,
        "palisade-sbd: {} ({}) armed with a {t} s timeout and not fed; the node should reset now",
        dev.display(),
        info.map(|i| i.identity).unwrap_or_default(),
    );
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let _ = writeln!(
            err,
            "palisade-sbd: still up {} s after arming",
            started.elapsed().as_secs()
        );
        if started.elapsed() > Duration::from_secs(u64::from(t) * 2 + 10) {
            // The watchdog did not fire: say so (and keep the device open and armed).
            let _ = writeln!(err, "palisade-sbd: the watchdog did NOT reset the node within 2 x its timeout: it does not work");
            return 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(
        args: &[&str],
        settings: &[(&str, &str)],
    ) -> Result<(PathBuf, Option<u32>), String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut o = parse_args(&args).map_err(|e| e.to_string())?;
        let dev =
            resolve_watchdog(&mut o, &Settings::from_pairs(settings)).map_err(|e| e.to_string())?;
        Ok((dev, o.timeout_watchdog))
    }

    #[test]
    fn the_board_profile_gives_the_watchdog_and_clamps_the_timeout() {
        let pi = "/dev/watchdog0";
        assert_eq!(
            resolved(&["--board", "raspberry-pi-4", "-1", "60", "watch"], &[]).unwrap(),
            (PathBuf::from(pi), Some(15)),
            "the BCM2835 watchdog counts to 15 s at most"
        );
        assert_eq!(
            resolved(&["watch"], &[("PALISADE_BOARD", "raspberry-pi-4")]).unwrap(),
            (PathBuf::from(pi), None)
        );
        // -w and SBD_WATCHDOG_DEV name the device explicitly and win over the board.
        assert_eq!(
            resolved(
                &["--board=raspberry-pi-4", "-w", "/dev/watchdog1", "watch"],
                &[]
            )
            .unwrap()
            .0,
            PathBuf::from("/dev/watchdog1")
        );
        assert_eq!(
            resolved(
                &["--board", "raspberry-pi-4", "watch"],
                &[("SBD_WATCHDOG_DEV", "/dev/wd9")]
            )
            .unwrap()
            .0,
            PathBuf::from("/dev/wd9")
        );
        assert_eq!(
            resolved(&["watch"], &[]).unwrap(),
            (PathBuf::from(DEFAULT_WATCHDOG), None)
        );
        let e = resolved(&["--board", "toaster", "watch"], &[]).unwrap_err();
        assert!(e.contains("toaster") && e.contains("raspberry-pi-4"), "{e}");
        assert!(resolved(&["--board"], &[]).unwrap_err().contains("--board"));
    }

    #[test]
    fn heartbeats_are_on_unless_the_flag_or_the_setting_says_no() {
        let o = |a: &str| {
            parse_args(&a.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
        };
        let none = Settings::from_pairs(&[]);
        assert!(heartbeat_wanted(&o("watch"), &none));
        assert!(!heartbeat_wanted(&o("--no-heartbeat watch"), &none));
        for off in ["no", "NO", " 0", "false", "off"] {
            let s = Settings::from_pairs(&[("PALISADE_SBD_HEARTBEAT", off)]);
            assert!(!heartbeat_wanted(&o("watch"), &s), "{off}");
        }
        let s = Settings::from_pairs(&[("PALISADE_SBD_HEARTBEAT", "yes")]);
        assert!(heartbeat_wanted(&o("watch"), &s));
    }

    #[test]
    fn watchdogs_are_listed_from_sysfs_without_opening_them() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("watchdog0");
        std::fs::create_dir(&w).unwrap();
        std::fs::write(w.join("identity"), "i6300ESB timer\n").unwrap();
        std::fs::write(w.join("state"), "inactive\n").unwrap();
        std::fs::write(w.join("timeout"), "30\n").unwrap();
        std::fs::create_dir(dir.path().join("watchdog1")).unwrap();
        let l = list_watchdogs(dir.path());
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].identity, "i6300ESB timer");
        assert_eq!(l[0].timeout, "30");
        assert_eq!(l[1].state, "?", "unreadable attributes say so");
        assert!(list_watchdogs(&dir.path().join("none")).is_empty());
    }

    #[test]
    fn watch_and_watchdog_commands_skip_the_admin_fork() {
        let a = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(is_daemon_command(&a("-d /dev/x -n me watch")));
        assert!(is_daemon_command(&a("query-watchdog")));
        assert!(!is_daemon_command(&a("-d /dev/x list")));
        assert!(
            !is_daemon_command(&a("-q watch")),
            "bad options go the admin way and fail"
        );
    }

    #[test]
    fn test_watchdog_needs_an_explicit_confirmation() {
        // Never arms anything here: without the variable it refuses before opening the device.
        let mut err = Vec::new();
        assert_eq!(
            test_watchdog(Path::new("/nonexistent/watchdog"), None, &mut err),
            1
        );
        assert!(
            String::from_utf8_lossy(&err).contains("PALISADE_SBD_TEST_WATCHDOG=reset-this-node")
        );
    }
}
