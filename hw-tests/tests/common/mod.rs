//! Helpers shared by the lab's interop tests: running third-party tools with a deadline (and
//! killing them on drop, also when a test panics), password files, medians.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process killed and reaped on drop.
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    /// Exit status (`None`: killed at the deadline).
    pub status: Option<ExitStatus>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
    /// Its exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs `program args` with no stdin and kills it after `deadline`.
pub fn run(program: &str, args: &[&str], deadline: Duration) -> Run {
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut guard = ChildGuard(Some(child));
    let child = guard.0.as_mut().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut status = None;
    while start.elapsed() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    drop(guard);
    Run {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        elapsed,
    }
}

/// Writes a password file (mode 0600) in `dir` and returns its path as a string.
pub fn password_file(dir: &Path, password: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("password");
    std::fs::write(&p, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Where ipmitool is (Debian package `ipmitool`).
pub const IPMITOOL: &str = "/usr/bin/ipmitool";
/// Where fence_ipmilan is (Debian package `fence-agents`).
pub const FENCE_IPMILAN: &str = "/usr/sbin/fence_ipmilan";

/// Runs ipmitool over lanplus against 127.0.0.1:`port` (always with `-H`: without it ipmitool
/// would talk to this machine's own BMC) with a password file.
pub fn ipmitool(port: u16, user: &str, passfile: &str, suite: u8, cmd: &[&str]) -> Run {
    let port = port.to_string();
    let suite = suite.to_string();
    let mut args = vec![
        "-I",
        "lanplus",
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        user,
        "-f",
        passfile,
        "-C",
        &suite,
        // 1 s per try and 2 retries (ipmitool defaults: 1 s, 4 retries) keep failing cases quick.
        "-N",
        "1",
        "-R",
        "2",
    ];
    args.extend_from_slice(cmd);
    run(IPMITOOL, &args, Duration::from_secs(30))
}
