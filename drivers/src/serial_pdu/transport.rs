//! The byte stream a serial PDU's dialogue runs over: a local serial port (`tokio-serial`,
//! locked exclusively) or a console server's TCP port. Both are a [`Link`]; the session above
//! neither knows nor cares which.
//!
//! A local port is locked twice, because each lock alone leaves a gap:
//! - the UUCP lock file `LCK..NAME` in `/run/lock` (FHS 3.0 §5.9: the holder's PID as ten
//!   ASCII digits and a newline), which minicom, screen, cu and ModemManager honour and which
//!   names the holder;
//! - `TIOCEXCL` and an exclusive `flock(2)` on the open port (both set by `serialport` when it
//!   opens the port), which stop a program that ignores lock files; `TIOCEXCL` alone does not
//!   stop root, `flock` does.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A full-duplex byte stream to a PDU's console.
pub trait Link: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Link for T {}

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit (8N1, what PDU consoles default to).
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// A local serial port and its line settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    /// The device, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    /// Bits per second (PDU consoles: 9600 by default).
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits: 7 or 8.
    pub data_bits: u8,
    /// Stop bits: 1 or 2.
    pub stop_bits: u8,
    /// Where the `LCK..NAME` file goes (`/run/lock`).
    pub lock_dir: PathBuf,
}

/// Where a PDU's console is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A local serial port.
    Serial(SerialLine),
    /// A console server's (or the PDU's own) TCP port, raw bytes.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Serial(s) => write!(f, "{}", s.path.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the port.
    #[error("serial port {port} is in use by {holder}; stop that program (or the other fenced device configured on this port) and retry")]
    Locked {
        /// The port.
        port: String,
        /// Who: `process 1234 (lock file /run/lock/LCK..ttyS0)` or `another process (flock)`.
        holder: String,
    },
    /// The lock file cannot be written.
    #[error("cannot create the lock file {}: {source}; fenced needs write access to {} (Debian: group `dialout` for the port and root or group `lock` for the directory), or set lock_dir", path.display(), path.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The port cannot be opened or configured.
    #[error("cannot open serial port {port}: {reason}; check the path, that fenced's user may open it (group `dialout`), and the line settings")]
    Serial {
        /// The port.
        port: String,
        /// What `serialport` or the system said.
        reason: String,
    },
    /// Nothing accepted the TCP connection in time.
    #[error("console server {addr} did not accept a connection within {} ms; check the address, port and network path", timeout.as_millis())]
    ConnectTimeout {
        /// `host:port`.
        addr: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The TCP connection was refused or failed.
    #[error("cannot connect to console server {addr}: {source}; check the address and port, and that no other client holds the console")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The system's error.
        source: io::Error,
    },
}

/// An open link and, for a local port, the lock file it holds (removed on drop, after the
/// port is closed).
pub struct Opened {
    /// The stream. Declared first: it is dropped (the port closed) before the lock file goes.
    pub link: Box<dyn Link>,
    /// The lock file held while the port is open.
    pub lock: Option<PortLock>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Opens the link: locks and opens the port, or connects within `connect_timeout`.
    pub async fn open(&self, connect_timeout: Duration) -> Result<Opened, OpenError> {
        match self {
            Endpoint::Serial(line) => open_serial(line),
            Endpoint::Tcp { host, port } => {
                let addr = self.to_string();
                let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
                let stream = match tokio::time::timeout(connect_timeout, connect).await {
                    Err(_) => {
                        return Err(OpenError::ConnectTimeout {
                            addr,
                            timeout: connect_timeout,
                        })
                    }
                    Ok(Err(source)) => return Err(OpenError::Connect { addr, source }),
                    Ok(Ok(s)) => s,
                };
                // A console dialogue is many small writes that each wait for an answer.
                let _ = stream.set_nodelay(true);
                Ok(Opened {
                    link: Box::new(stream),
                    lock: None,
                })
            }
        }
    }
}

fn open_serial(line: &SerialLine) -> Result<Opened, OpenError> {
    let port = line.path.display().to_string();
    // The lock file first: if another program holds it, the port is not even opened (opening
    // a tty can toggle DTR, which resets some consoles).
    let lock = PortLock::take(&line.lock_dir, &line.path)?;
    let builder = tokio_serial::new(port.clone(), line.baud)
        .parity(match line.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(if line.data_bits == 7 {
            tokio_serial::DataBits::Seven
        } else {
            tokio_serial::DataBits::Eight
        })
        .stop_bits(if line.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(tokio_serial::FlowControl::None);
    match tokio_serial::SerialStream::open(&builder) {
        Ok(stream) => Ok(Opened {
            link: Box::new(stream),
            lock: Some(lock),
        }),
        // serialport reports a held flock(2) as NoDevice "Unable to acquire exclusive lock".
        Err(e) if e.kind == tokio_serial::ErrorKind::NoDevice && e.description.contains("lock") => {
            Err(OpenError::Locked {
                port,
                holder: "another process that ignores lock files (it holds an exclusive flock on the port; `fuser -v` names it)".into(),
            })
        }
        Err(e) => Err(OpenError::Serial {
            port,
            reason: e.description,
        }),
    }
}

/// A UUCP-style lock file `LCK..NAME` held for an open port; removed on drop.
#[derive(Debug)]
pub struct PortLock {
    path: PathBuf,
}

/// The lock file's name for a device: its path below `/dev` with `/` as `_`
/// (`/dev/ttyUSB0` -> `LCK..ttyUSB0`, `/dev/pts/3` -> `LCK..pts_3`).
pub fn lock_name(device: &Path) -> String {
    let rel = device.strip_prefix("/dev").unwrap_or(device);
    let name = rel
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "_");
    format!("LCK..{name}")
}

/// Whether process `pid` exists (signal 0 probes without sending anything; EPERM means it
/// exists but belongs to another user).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl PortLock {
    /// Takes the lock for `device` in `dir`: creates the file with our PID, or finds it held
    /// by a live process (an error naming it), or stale (its process is gone: replaced).
    pub fn take(dir: &Path, device: &Path) -> Result<PortLock, OpenError> {
        let path = dir.join(lock_name(device));
        let me = std::process::id();
        // Twice at most: once more after removing a stale file.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(mut f) => {
                    let written = f
                        .write_all(format!("{me:>10}\n").as_bytes())
                        .and_then(|()| f.sync_all());
                    if let Err(source) = written {
                        let _ = std::fs::remove_file(&path);
                        return Err(OpenError::LockFile { path, source });
                    }
                    return Ok(PortLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let mut text = String::new();
                    let read = std::fs::File::open(&path)
                        .and_then(|mut f| Read::by_ref(&mut f).take(64).read_to_string(&mut text));
                    let pid = text.trim().parse::<i32>().ok();
                    match (read, pid) {
                        (Ok(_), Some(pid)) if alive(pid) => {
                            let who = if u32::try_from(pid) == Ok(me) {
                                "this fenced itself (another device configured on the same port)"
                                    .to_string()
                            } else {
                                format!("process {pid}")
                            };
                            return Err(OpenError::Locked {
                                port: device.display().to_string(),
                                holder: format!("{who} (lock file {})", path.display()),
                            });
                        }
                        // A file just created by another opener may still be empty: treat it
                        // as held rather than steal it.
                        (Ok(_), None) if text.is_empty() => {
                            return Err(OpenError::Locked {
                                port: device.display().to_string(),
                                holder: format!("a process that is creating {}", path.display()),
                            });
                        }
                        // Stale (dead PID) or unreadable content: the holder is gone.
                        _ => {
                            tracing::warn!(
                                "removing stale lock file {} (holder {} is gone)",
                                path.display(),
                                text.trim()
                            );
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(source) => return Err(OpenError::LockFile { path, source }),
            }
        }
        Err(OpenError::LockFile {
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another process keeps re-creating it",
            ),
            path,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PortLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_follow_the_uucp_convention() {
        assert_eq!(lock_name(Path::new("/dev/ttyUSB0")), "LCK..ttyUSB0");
        assert_eq!(lock_name(Path::new("/dev/pts/3")), "LCK..pts_3");
    }

    #[test]
    fn a_live_holder_is_named_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Path::new("/dev/ttyS9");
        let lock = PortLock::take(dir.path(), dev).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert_eq!(text, format!("{:>10}\n", std::process::id()));
        let e = PortLock::take(dir.path(), dev).unwrap_err().to_string();
        assert!(
            e.contains("/dev/ttyS9") && e.contains("this fenced itself"),
            "{e}"
        );
        drop(lock);
        assert!(!dir.path().join("LCK..ttyS9").exists());
        // A PID that cannot exist (above pid_max): stale, replaced.
        std::fs::write(dir.path().join("LCK..ttyS9"), "  99999999\n").unwrap();
        let lock = PortLock::take(dir.path(), dev).unwrap();
        assert!(std::fs::read_to_string(lock.path())
            .unwrap()
            .contains(&std::process::id().to_string()));
    }
}
