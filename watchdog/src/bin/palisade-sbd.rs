//! `palisade-sbd`: a drop-in for ClusterLabs sbd's disk commands (see `watchdog::sbd_admin`).
//!
//! Why the fork: a disk I/O stuck in the kernel keeps its thread in uninterruptible sleep, and
//! Linux does not let a process finish exiting (nor its parent's `waitpid` return) until every
//! thread has. Abandoning the thread is therefore not enough for a command-line tool: a script
//! or `fence_sbd` waiting for us would hang exactly like it hangs on sbd. So the work runs in
//! a child process; the child sends its exit status over a pipe, detaches from stdout/stderr
//! and exits, and the parent exits with that status at once, leaving a stuck child (if any)
//! to be reaped by init when its I/O finally completes.
//!
//! `watch`, `query-watchdog` and `test-watchdog` run in the process itself (see
//! `watchdog::daemon`).

use std::io::Write;
use watchdog::sbd_admin::{run, Settings};

fn work() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings::load();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let rc = run(&args, &settings, &mut out, &mut err);
    let _ = out.flush();
    let _ = err.flush();
    rc
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if watchdog::daemon::is_daemon_command(&args) {
        // The watcher is a long-running service: systemd must see its own PID (Type=notify),
        // and its stuck servants are detected, not waited for.
        let settings = Settings::load();
        std::process::exit(watchdog::daemon::run(
            &args,
            &settings,
            &mut std::io::stderr().lock(),
        ));
    }
    if std::env::var_os("PALISADE_SBD_NO_FORK").is_some() {
        std::process::exit(work());
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        std::process::exit(work());
    }
    let [rd, wr] = fds;
    // SAFETY: we are single-threaded here (no thread has been started yet), so the child may
    // run arbitrary Rust code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        std::process::exit(work());
    }
    if pid == 0 {
        // SAFETY: closing our copy of the read end, an fd we own.
        unsafe { libc::close(rd) };
        let rc = work();
        detach_stdio();
        let b = [rc.clamp(0, 255) as u8];
        // SAFETY: writing one byte from a live buffer to the pipe's write end, which we own.
        unsafe { libc::write(wr, b.as_ptr().cast(), 1) };
        std::process::exit(rc);
    }
    // SAFETY: closing the parent's copy of the write end, so EOF means the child is gone.
    unsafe { libc::close(wr) };
    let mut b = [0u8; 1];
    let n = loop {
        // SAFETY: reading at most one byte into a live one-byte buffer.
        let n = unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n == 1 {
        // Reap the child if it has already gone (the usual case); never wait for a stuck one.
        for _ in 0..50 {
            let mut st = 0;
            // SAFETY: waitpid on our own child with a valid status pointer; WNOHANG never blocks.
            let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
            if r != 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::process::exit(i32::from(b[0]));
    }
    // The child died without reporting (killed, crashed): report like a shell would.
    let mut st = 0;
    // SAFETY: blocking waitpid on our own child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    let code = if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        1
    };
    std::process::exit(code);
}

/// Points stdout and stderr at /dev/null so that a caller reading our output until EOF is not
/// held open by a child whose stuck I/O thread keeps its file table alive.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 of a valid fd onto the standard descriptors, which we own.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}
