//! A real `fenced run` child process, as an operator starts it: the installed binary, a config
//! file, its log in a file. The demo and the failover drill run the daemon this way, so what
//! they show is the product itself (its start-up checks, its process, its memory), not a
//! library linked into the bench.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Why a `fenced` child could not be started or did not come up.
#[derive(Debug, thiserror::Error)]
pub enum FencedError {
    /// The log file could not be created.
    #[error(
        "cannot create fenced's log file {path}: {source}; check that the directory is writable"
    )]
    Log {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The binary could not be executed.
    #[error("cannot start {bin}: {source}; build it with `cargo build --workspace --bins` (add --release for target/release)")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The daemon exited before it accepted connections.
    #[error("fenced exited with {status} before serving its API; its log says:\n{log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// The daemon did not accept connections in time.
    #[error("fenced did not accept connections on {socket} within {secs} s; its log says:\n{log}")]
    NotReady {
        /// The socket it should listen on.
        socket: PathBuf,
        /// How long we waited.
        secs: u64,
        /// Its log.
        log: String,
    },
}

/// A `fenced run --config FILE` child, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct FencedProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl FencedProcess {
    /// Starts `bin run --config config`, writing its stdout and stderr to `log`. `socket` is
    /// the config's `daemon.socket`, which [`FencedProcess::ready`] probes. `RUST_LOG` is
    /// passed on when set, `info` otherwise. The child gets SIGTERM if the calling thread
    /// dies, so a killed bench leaves no daemon behind: call this from a thread that lives
    /// as long as the daemon should (the main thread, or a current-thread runtime's).
    pub fn spawn(
        bin: &Path,
        config: &Path,
        socket: &Path,
        log: &Path,
    ) -> Result<FencedProcess, FencedError> {
        let out = File::create(log).map_err(|source| FencedError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| FencedError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
        // parent; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| FencedError::Spawn {
            bin: bin.to_path_buf(),
            source,
        })?;
        Ok(FencedProcess {
            child,
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// One probe: `Ok(true)` once the daemon accepts on its socket (the file appears at
    /// bind(), before listen(), so its existence proves nothing), an error if it exited.
    pub fn ready(&mut self) -> Result<bool, FencedError> {
        if let Some(status) = self.try_exited() {
            return Err(FencedError::Exited {
                status,
                log: self.log(),
            });
        }
        Ok(UnixStream::connect(&self.socket).is_ok())
    }

    /// Waits (blocking) until the daemon accepts connections, for at most `limit`.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), FencedError> {
        let until = Instant::now() + limit;
        while !self.ready()? {
            if Instant::now() > until {
                return Err(self.not_ready(limit));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits (without blocking the runtime, so in-process simulators keep answering the
    /// daemon's start-up checks) until the daemon accepts connections, for at most `limit`.
    pub async fn wait_ready_async(&mut self, limit: Duration) -> Result<(), FencedError> {
        let until = Instant::now() + limit;
        while !self.ready()? {
            if Instant::now() > until {
                return Err(self.not_ready(limit));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn not_ready(&self, limit: Duration) -> FencedError {
        FencedError::NotReady {
            socket: self.socket.clone(),
            secs: limit.as_secs(),
            log: self.log(),
        }
    }

    /// The exit status, if the daemon has exited.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The daemon's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks the daemon to stop (SIGTERM: it drains operations in flight) and waits up to
    /// `limit` without blocking the runtime; kills it after that. Returns how it exited.
    pub async fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.try_exited().is_none() {
            self.terminate();
            let until = Instant::now() + limit;
            while self.try_exited().is_none() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if self.try_exited().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.exited
    }

    fn terminate(&self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet, so the
            // pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

impl Drop for FencedProcess {
    fn drop(&mut self) {
        if self.try_exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
