//! Writing to standard output and standard error from the workspace's commands without ever
//! panicking: `println!` panics when the reader has gone (`fenced check-config big.toml |
//! head -1` closes the pipe early, EPIPE), and with the release profile's `panic = "abort"`
//! that is an abort (exit 134) with a panic message.
//!
//! [`outln!`](crate::outln), [`out!`](crate::out), [`errln!`](crate::errln) and
//! [`err!`](crate::err) write through here. Once a stream fails (EPIPE, or any other error:
//! there is nowhere left to report it), later writes to it are dropped and the program goes on
//! to exit with the status it would have had. That status is the part that matters:
//! `fence_node`'s exit status says whether a node is fenced, so a reader that stopped early
//! must not change it, and a daemon must not die because its log reader did.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// Which standard stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

impl Stream {
    fn gone(self) -> &'static AtomicBool {
        match self {
            Stream::Out => &STDOUT_GONE,
            Stream::Err => &STDERR_GONE,
        }
    }
}

/// Writes `args` (and a newline with `line`) to `stream`; returns whether it was written.
/// Never panics: a failed write marks the stream gone and later writes are dropped.
pub fn write(stream: Stream, line: bool, args: fmt::Arguments<'_>) -> bool {
    let gone = stream.gone();
    if gone.load(Ordering::Relaxed) {
        return false;
    }
    let r = match stream {
        Stream::Out => write_to(&mut std::io::stdout().lock(), line, args),
        Stream::Err => write_to(&mut std::io::stderr().lock(), line, args),
    };
    if r.is_err() {
        gone.store(true, Ordering::Relaxed);
    }
    r.is_ok()
}

fn write_to(w: &mut impl Write, line: bool, args: fmt::Arguments<'_>) -> std::io::Result<()> {
    w.write_fmt(args)?;
    if line {
        w.write_all(b"\n")?;
    }
    // Standard output is line-buffered: flushing here makes a gone reader show up at this
    // write (not in the exit-time flush) and keeps partial lines (`out!`) in order with stderr.
    w.flush()
}

/// Whether standard output failed (its reader went away); a command that only prints may stop.
pub fn stdout_gone() -> bool {
    STDOUT_GONE.load(Ordering::Relaxed)
}

/// `println!` that never panics (see [`crate::stdio`]).
#[macro_export]
macro_rules! outln {
    () => {
        {
            let _ = $crate::stdio::write($crate::stdio::Stream::Out, true, format_args!(""));
        }
    };
    ($($arg:tt)*) => {
        {
            let _ = $crate::stdio::write($crate::stdio::Stream::Out, true, format_args!($($arg)*));
        }
    };
}

/// `print!` that never panics (see [`crate::stdio`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        {
            let _ = $crate::stdio::write($crate::stdio::Stream::Out, false, format_args!($($arg)*));
        }
    };
}

/// `eprintln!` that never panics (see [`crate::stdio`]).
#[macro_export]
macro_rules! errln {
    () => {
        {
            let _ = $crate::stdio::write($crate::stdio::Stream::Err, true, format_args!(""));
        }
    };
    ($($arg:tt)*) => {
        {
            let _ = $crate::stdio::write($crate::stdio::Stream::Err, true, format_args!($($arg)*));
        }
    };
}

/// `eprint!` that never panics (see [`crate::stdio`]).
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {
        {
            let _ = $crate::stdio::write($crate::stdio::Stream::Err, false, format_args!($($arg)*));
        }
    };
}
