//! The daemon's life: open history, build devices, start the engine, serve the API, check
//! devices periodically, and stop cleanly. `fenced run` uses it; the bench runs it as a process.

use crate::api::tls::TlsReloader;
use crate::api::{bind_unix, Api};
use crate::config::Config;
use crate::history::History;
use crate::{Clock, Engine};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Why the daemon could not start, serve or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The ledger signing key could not be loaded or created.
    #[error("ledger signing key (daemon.ledger_key): {0}")]
    LedgerKey(#[from] crate::history::KeyError),
    /// The history file could not be opened.
    #[error("cannot open history {path}: {source}")]
    History {
        /// daemon.history.
        path: String,
        /// The store's error.
        #[source]
        source: crate::history::HistoryError,
    },
    /// A device (or its agent) could not be set up from the configuration.
    #[error("{detail}")]
    Devices {
        /// What is wrong, with the device and the fix.
        detail: String,
    },
    /// The engine could not start over the history.
    #[error("{0}; {hint}", hint = .0.hint())]
    Engine(#[from] crate::error::EngineError),
    /// The Unix socket could not be bound.
    #[error("{0}")]
    Socket(#[source] std::io::Error),
    /// The TLS certificate or key could not be loaded.
    #[error("api.tls: {0}")]
    Tls(#[from] crate::api::tls::TlsError),
    /// The TCP listener could not be bound.
    #[error("cannot listen on {addr} (api.tcp): {source}; is another process on that port?")]
    Listen {
        /// api.tcp.
        addr: std::net::SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A listener's server ended with an error.
    #[error("{listener} server failed: {detail}; see the log above for the cause")]
    Serve {
        /// `Unix socket` or `TCP`.
        listener: &'static str,
        /// Its error.
        detail: String,
    },
    /// `[cluster]` could not be started.
    #[error("[cluster]: {0}")]
    Cluster(String),
    /// A signal handler could not be installed.
    #[error("cannot handle {signal}: {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Hands freed heap pages back to the kernel after a round of device checks: glibc keeps
/// freed memory below the heap's top resident, and start-up (configuration, history, the first
/// checks of every device) leaves about 300 KiB of it behind while the daemon then idles.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns whole free pages inside
    // glibc's own heap to the kernel (MADV_DONTNEED), which no live allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often every device is health-checked.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(60);
/// Scheduled health checks running at once (each is a session set-up and a few packets).
pub const MONITOR_CONCURRENCY: usize = 4;

/// A running daemon.
pub struct Daemon {
    config: Arc<Config>,
    engine: Engine,
    api: Api,
    unix_task: JoinHandle<std::io::Result<()>>,
    tcp_task: Option<JoinHandle<std::io::Result<()>>>,
    monitor: JoinHandle<()>,
    tls: Option<Arc<TlsReloader>>,
    /// The fencer cluster member's tasks (`[cluster]`).
    cluster: Option<crate::cluster::ClusterTasks>,
}

impl Daemon {
    /// Opens history (recording operations a crash left in flight as failed), builds the
    /// devices, binds the API listeners and starts serving. Must run inside a tokio runtime.
    pub async fn start(config: Arc<Config>) -> Result<Daemon, DaemonError> {
        tracing::info!(
            config = %config.source.display(),
            node = %config.daemon.node_name,
            targets = config.targets.len(),
            devices = config.devices.len(),
            "fenced {} starting",
            env!("CARGO_PKG_VERSION")
        );
        let clock = Clock::system();
        let key = crate::history::load_or_create_key(&config.daemon.ledger_key)?;
        let (history, interrupted) =
            History::open_signed(&config.daemon.history, clock.now_ms(), key).map_err(
                |source| DaemonError::History {
                    path: config.daemon.history.display().to_string(),
                    source,
                },
            )?;
        for op in &interrupted {
            tracing::warn!(
                op = op.id,
                target = %op.target,
                action = %op.action,
                "operation {} on {} was in flight when fenced stopped; recorded as failed (interrupted): the target is NOT known to be fenced",
                op.id,
                op.target
            );
        }
        let devices_err = |e: &dyn std::fmt::Display| DaemonError::Devices {
            detail: e.to_string(),
        };
        crate::devices::check_agents(&config)
            .await
            .map_err(|e| devices_err(&e))?;
        let devices = crate::devices::build(&config).map_err(|e| devices_err(&e))?;
        let engine = Engine::new(
            config.clone(),
            devices,
            history,
            interrupted.len() as u32,
            clock,
        )?;

        let listener = bind_unix(&config.daemon.socket, config.api.socket_mode)
            .map_err(DaemonError::Socket)?;
        tracing::info!(socket = %config.daemon.socket.display(), mode = format_args!("{:04o}", config.api.socket_mode), "API listening on Unix socket");
        let tls = match &config.api.security.tls {
            Some(files) if config.api.tcp.is_some() => {
                Some(Arc::new(TlsReloader::new(files.clone())?))
            }
            _ => None,
        };
        let tcp = match config.api.tcp {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Listen { addr, source })?;
                if tls.is_some() {
                    tracing::info!(%addr, tokens = config.api.security.tokens_file.is_some(), client_certs = config.api.security.client_certs.len(), "API listening on TCP with TLS");
                } else {
                    tracing::info!(%addr, role = config.api.tcp_role.as_str(), "API listening on loopback TCP");
                }
                Some(l)
            }
            None => None,
        };

        let (member, cluster) = match &config.cluster {
            Some(c) => {
                tracing::info!(group = %c.group, node = %c.node_name, reaches = c.reaches.len(), allow_without_quorum = c.allow_without_quorum, "joining the fencer cluster on Corosync");
                let (m, t) = crate::cluster::start(engine.clone(), c.clone())
                    .map_err(DaemonError::Cluster)?;
                (Some(m), Some(t))
            }
            None => (None, None),
        };
        let api = Api::in_cluster(engine.clone(), member);
        let unix_task = tokio::spawn({
            let api = api.clone();
            async move { api.serve_unix(listener).await }
        });
        let tcp_task = tcp.map(|l| {
            let api = api.clone();
            let tls = tls.clone();
            tokio::spawn(async move { api.serve_tcp(l, tls).await })
        });
        let monitor = tokio::spawn({
            let engine = engine.clone();
            // Each device on its own interval (`monitor_interval_s`, default 60 s); all are
            // checked at start-up.
            let intervals: Vec<(String, Duration)> = config
                .devices
                .iter()
                .map(|(n, d)| {
                    (
                        n.clone(),
                        d.selection.monitor_interval.unwrap_or(MONITOR_INTERVAL),
                    )
                })
                .collect();
            // A few checks at a time: a fleet's checks are spread out, and fencing (which
            // waits for no permit) always finds the runtime free.
            let permits = tokio::sync::Semaphore::new(MONITOR_CONCURRENCY);
            async move {
                let start = tokio::time::Instant::now();
                let mut due: Vec<tokio::time::Instant> = vec![start; intervals.len()];
                loop {
                    let now = tokio::time::Instant::now();
                    let checks = intervals
                        .iter()
                        .zip(due.iter_mut())
                        .filter(|(_, d)| **d <= now)
                        .map(|((name, every), d)| {
                            *d = now + *every;
                            let engine = engine.clone();
                            let permits = &permits;
                            async move {
                                engine.scheduled_check(name, permits).await;
                            }
                        });
                    futures_util::future::join_all(checks.collect::<Vec<_>>()).await;
                    release_free_heap();
                    let next = due.iter().min().copied().unwrap_or(now + MONITOR_INTERVAL);
                    tokio::time::sleep_until(next).await;
                }
            }
        });
        Ok(Daemon {
            config,
            engine,
            api,
            unix_task,
            tcp_task,
            monitor,
            tls,
            cluster,
        })
    }

    /// Re-reads the TLS certificate and key (SIGHUP). The Unix socket and open connections
    /// are untouched; on error the old certificate stays in use. False if TLS is off.
    pub fn reload_tls(&self) -> Result<bool, DaemonError> {
        match &self.tls {
            None => Ok(false),
            Some(t) => Ok(t.reload().map(|()| true)?),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Lets operations in flight finish, still serving so their callers see the outcome,
    /// for at most `limit` or until `interrupt` completes. An operation cut short is recorded
    /// as interrupted at the next start, and its target is NOT known to be fenced.
    pub async fn drain(&self, limit: Duration, interrupt: impl Future<Output = ()>) {
        let n = self.engine.in_flight();
        if n == 0 {
            return;
        }
        tracing::info!(
            in_flight = n,
            "waiting up to {} s for operations in flight to finish (signal again to stop now)",
            limit.as_secs()
        );
        let wait = async {
            while self.engine.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(limit, wait) => {}
            _ = interrupt => tracing::warn!("second signal: stopping now"),
        }
    }

    /// Stops serving and removes the socket.
    pub async fn stop(self) -> Result<(), DaemonError> {
        tracing::info!("stopping: answering open requests, accepting no new ones");
        self.monitor.abort();
        self.api.shutdown();
        if let Some(c) = &self.cluster {
            // Leaves the CPG group: the others hand over what this member executed.
            c.abort();
        }
        let mut result = Ok(());
        match self.unix_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(serve_err("Unix socket", &e)),
            Err(e) => result = Err(serve_err("Unix socket", &e)),
        }
        if let Some(t) = self.tcp_task {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(serve_err("TCP", &e)),
                Err(e) => result = Err(serve_err("TCP", &e)),
            }
        }
        if self.engine.in_flight() > 0 {
            tracing::warn!(
                in_flight = self.engine.in_flight(),
                "stopping with operations in flight; they will be recorded as interrupted (NOT fenced) at the next start"
            );
        }
        let _ = std::fs::remove_file(&self.config.daemon.socket);
        tracing::info!("fenced stopped");
        result
    }
}

fn serve_err(listener: &'static str, e: &dyn std::fmt::Display) -> DaemonError {
    DaemonError::Serve {
        listener,
        detail: e.to_string(),
    }
}

fn handler(
    kind: tokio::signal::unix::SignalKind,
    signal: &'static str,
) -> Result<tokio::signal::unix::Signal, DaemonError> {
    tokio::signal::unix::signal(kind).map_err(|source| DaemonError::Signal { signal, source })
}

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// SIGTERM or SIGINT: stop.
    Stop,
    /// SIGHUP: reload the TLS certificate and key.
    Reload,
}

/// The daemon's signal handlers, installed once.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs handlers for SIGTERM, SIGINT and SIGHUP.
    pub fn install() -> Result<Signals, DaemonError> {
        use tokio::signal::unix::SignalKind;
        Ok(Signals {
            term: handler(SignalKind::terminate(), "SIGTERM")?,
            int: handler(SignalKind::interrupt(), "SIGINT")?,
            hup: handler(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> SignalAction {
        tokio::select! {
            _ = self.term.recv() => { tracing::info!("SIGTERM received"); SignalAction::Stop }
            _ = self.int.recv() => { tracing::info!("SIGINT received"); SignalAction::Stop }
            _ = self.hup.recv() => { tracing::info!("SIGHUP received"); SignalAction::Reload }
        }
    }
}

/// Sends a systemd notification (sd_notify protocol: one datagram to `$NOTIFY_SOCKET`; a
/// leading `@` names an abstract socket).
pub fn notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot notify systemd: {e}");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(msg.as_bytes(), &addr))
    } else {
        sock.send_to(msg.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {}: {e}", path.to_string_lossy());
    }
}
