//! One logged-in console session over a [`Link`]: walks the model's dialogue with a timeout
//! on every read and a cap on every reply, and resynchronises after garbage, a half line or
//! a call that was cancelled half way (a line end is sent, and everything up to the next
//! prompt is discarded, up to a bound).
//!
//! The decisions come from [`super::dialogue`] and the reading from [`super::parse`]; this
//! file only moves bytes and keeps time.

use super::dialogue::{command_step, login_step, CommandAction, LoginAction, LoginProgress};
use super::model::Model;
use super::parse::{asks, split_lines};
use super::transport::Link;
use crate::Secret;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Most bytes one reply (or one resynchronisation) may carry: the widest status screen of a
/// 48-outlet PDU is under 8 KiB; more is a console that never stops talking.
pub const MAX_REPLY: usize = 64 * 1024;

/// Wake-up line ends sent while nothing recognisable comes back, before giving up.
const WAKES: u32 = 3;

/// The times a session keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Each read: the longest silence tolerated while a reply is due.
    pub read: Duration,
    /// One whole reply (or the whole login): a slow line may trickle, but not forever.
    pub reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(2),
            reply: Duration::from_secs(10),
        }
    }
}

/// Why a dialogue step failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The PDU said nothing for the read timeout, or its reply did not end in time.
    #[error("no complete reply to {what} within {} ms", waited.as_millis())]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// The other end closed the stream.
    #[error("the console closed the connection during {what}")]
    Closed {
        /// What was going on.
        what: String,
    },
    /// Reading or writing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was going on.
        what: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The console kept talking without a prompt.
    #[error("the console sent more than {MAX_REPLY} bytes during {what} without a prompt; it may be stuck in a menu or a paging screen")]
    TooLong {
        /// What was going on.
        what: String,
    },
    /// The console asked for a login in answer to a command: it logged the session out.
    #[error("the console asked for a login instead of answering: the session was logged out")]
    LoggedOut,
    /// The login failed.
    #[error(transparent)]
    Login(#[from] super::dialogue::LoginError),
}

/// A console session.
pub struct Session {
    link: Box<dyn Link>,
    model: &'static Model,
    timeouts: Timeouts,
    /// Set while a command is outstanding: if the call is dropped (the engine's deadline),
    /// the next call finds it set and resynchronises before trusting anything it reads.
    dirty: bool,
    /// Whether the console talks first on a fresh link (a TCP console prints its banner
    /// unasked) and nothing was heard yet.
    talks_first: bool,
    /// When the last command ended: a console idle for longer than [`IDLE_RESYNC`] may have
    /// logged us out, so the next call checks for the prompt first.
    last_used: Instant,
}

/// Idle time after which the prompt is checked again before a command (APC logs a serial
/// session off after 3 minutes; others after their own idle time).
pub const IDLE_RESYNC: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.model.name)
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session on a freshly opened link; nothing is sent yet. `talks_first`: the console
    /// prints a banner or login question by itself on a new link (a TCP console server or a
    /// telnet PDU), so no line end is sent until it had the read timeout to do so.
    pub fn new(
        link: Box<dyn Link>,
        model: &'static Model,
        timeouts: Timeouts,
        talks_first: bool,
    ) -> Self {
        Self {
            link,
            model,
            timeouts,
            dirty: true,
            talks_first,
            last_used: Instant::now(),
        }
    }

    async fn send(&mut self, text: &[u8], what: &str) -> Result<(), SessionError> {
        let write = async {
            self.link.write_all(text).await?;
            self.link.flush().await
        };
        match tokio::time::timeout(self.timeouts.read, write).await {
            Err(_) => Err(SessionError::Timeout {
                what: format!("sending {what} (the line does not take bytes: flow control?)"),
                waited: self.timeouts.read,
            }),
            Ok(Err(source)) => Err(SessionError::Io {
                what: format!("sending {what}"),
                source,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn send_line(&mut self, text: &str, what: &str) -> Result<(), SessionError> {
        let mut line = Vec::with_capacity(text.len() + 2);
        line.extend_from_slice(text.as_bytes());
        line.extend_from_slice(self.model.line_ending.as_bytes());
        self.send(&line, what).await
    }

    /// Reads what arrives within the read timeout (and before `until`) onto `buf`.
    async fn read_more(
        &mut self,
        buf: &mut Vec<u8>,
        until: Instant,
        what: &str,
    ) -> Result<(), SessionError> {
        let left = until.saturating_duration_since(Instant::now());
        let wait = self.timeouts.read.min(left);
        let mut chunk = [0u8; 512];
        match tokio::time::timeout(wait, self.link.read(&mut chunk)).await {
            Err(_) => Err(SessionError::Timeout {
                what: what.to_string(),
                waited: if left <= self.timeouts.read {
                    self.timeouts.reply
                } else {
                    wait
                },
            }),
            Ok(Err(source)) => Err(SessionError::Io {
                what: format!("reading {what}"),
                source,
            }),
            Ok(Ok(0)) => Err(SessionError::Closed {
                what: what.to_string(),
            }),
            Ok(Ok(n)) => {
                self.talks_first = false;
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_REPLY {
                    return Err(SessionError::TooLong {
                        what: what.to_string(),
                    });
                }
                Ok(())
            }
        }
    }

    /// Discards whatever has already arrived unasked (a late echo, the rest of a prompt), so
    /// it cannot be read as the answer to the next command. Never waits.
    async fn drain(&mut self) -> Result<(), SessionError> {
        let mut chunk = [0u8; 512];
        let mut total = 0;
        while total <= MAX_REPLY {
            // A zero timeout still polls the read once: data already buffered is returned.
            match tokio::time::timeout(Duration::ZERO, self.link.read(&mut chunk)).await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => {
                    return Err(SessionError::Closed {
                        what: "waiting for a command".into(),
                    })
                }
                Ok(Ok(n)) => total += n,
                Ok(Err(source)) => {
                    return Err(SessionError::Io {
                        what: "reading".into(),
                        source,
                    })
                }
            }
        }
        Err(SessionError::TooLong {
            what: "waiting for a command".into(),
        })
    }

    /// Brings the console to its command prompt: resynchronises if needed and logs in when
    /// asked. Everything read on the way is discarded.
    pub async fn ready(
        &mut self,
        user: Option<&str>,
        password: Option<&Secret>,
    ) -> Result<(), SessionError> {
        if !self.dirty && self.last_used.elapsed() < IDLE_RESYNC {
            return Ok(());
        }
        // A fresh link that talks first has nothing stale on it: what has arrived is the
        // login question, which draining would throw away (then the wake line end below
        // would be taken as an empty user name).
        if !self.talks_first {
            self.drain().await?;
        }
        let until = Instant::now() + self.timeouts.reply;
        let mut progress = LoginProgress::default();
        let mut buf = Vec::new();
        let mut wakes = 0;
        // A fresh TCP console prints its banner or login question unasked: a line end sent
        // into it could be taken as an empty user name. Anything else (a serial console, a
        // session we left mid-command) gets a line end at once: its answer is the prompt.
        if !self.talks_first {
            self.send(
                self.model.line_ending.as_bytes(),
                "a line end (resynchronise)",
            )
            .await?;
            wakes += 1;
        }
        loop {
            match self.read_more(&mut buf, until, "the prompt or login").await {
                Ok(()) => {}
                Err(SessionError::Timeout { .. }) if wakes < WAKES && Instant::now() < until => {
                    self.send(self.model.line_ending.as_bytes(), "a line end (wake)")
                        .await?;
                    wakes += 1;
                    continue;
                }
                Err(SessionError::Timeout { what, waited }) => {
                    return Err(SessionError::Timeout {
                        what: format!("{what} ({wakes} line ends sent)"),
                        waited,
                    })
                }
                Err(e) => return Err(e),
            }
            let (_, tail) = split_lines(&buf);
            match login_step(
                self.model,
                tail,
                user.is_some(),
                password.is_some(),
                progress,
            )? {
                LoginAction::Ready => {
                    self.dirty = false;
                    self.last_used = Instant::now();
                    return Ok(());
                }
                LoginAction::SendUser => {
                    let u = user.unwrap_or_default().to_string();
                    self.send_line(&u, "the user name").await?;
                    progress.user_sent = true;
                    buf.clear();
                }
                LoginAction::SendPassword => {
                    let mut line = Vec::new();
                    if let Some(p) = password {
                        line.extend_from_slice(p.expose());
                    }
                    line.extend_from_slice(self.model.line_ending.as_bytes());
                    let sent = self.send(&line, "the password").await;
                    zeroize::Zeroize::zeroize(&mut line);
                    sent?;
                    progress.password_sent = true;
                    buf.clear();
                }
                LoginAction::Wait => {}
            }
        }
    }

    /// Sends one command line and returns everything up to (and including) the prompt that
    /// ends its reply, answering the model's confirmation question once if asked.
    pub async fn command(&mut self, line: &str, what: &str) -> Result<Vec<u8>, SessionError> {
        self.drain().await?;
        self.dirty = true;
        let line = line.trim_end_matches(['\r', '\n']);
        self.send_line(line, what).await?;
        let until = Instant::now() + self.timeouts.reply;
        let mut buf = Vec::new();
        let mut answered = false;
        loop {
            self.read_more(&mut buf, until, &format!("`{line}`"))
                .await?;
            let (_, tail) = split_lines(&buf);
            // A login question instead of a reply: the console logged us out while idle.
            if asks(self.model.password_prompts, tail) || asks(self.model.user_prompts, tail) {
                return Err(SessionError::LoggedOut);
            }
            match command_step(self.model, tail, answered) {
                CommandAction::Done => {
                    self.dirty = false;
                    self.last_used = Instant::now();
                    return Ok(buf);
                }
                CommandAction::Answer(a) => {
                    self.send_line(a, "the confirmation").await?;
                    answered = true;
                }
                CommandAction::Wait => {}
            }
        }
    }

    /// Logs out (best effort: the link is closed right after).
    pub async fn logout(&mut self) {
        let logout = self.model.logout;
        let _ = self.send_line(logout, "logout").await;
    }
}
