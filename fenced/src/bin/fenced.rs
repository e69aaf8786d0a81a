//! `fenced`: the Palisade fencer daemon.

use clap::Parser;
use fenced::cli::fenced::{Cli, Command, TokenVerb};
use fenced::config::{Config, Role};
use fenced::daemon::{notify, Daemon, SignalAction, Signals};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long a stop waits for operations in flight (systemd's default stop timeout is 90 s).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Why a `fenced` command failed; each message says what to do next.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    /// The configuration file is invalid (the message carries FILE:LINE).
    #[error(transparent)]
    Config(#[from] fenced::config::ConfigError),
    /// `fenced token` without a tokens file in the configuration.
    #[error("{config}: api.tokens_file is not set; add `tokens_file = \"/etc/palisade/tokens\"` to [api]")]
    NoTokensFile {
        /// The configuration file.
        config: String,
    },
    /// The tokens file could not be read or written.
    #[error(transparent)]
    Token(#[from] fenced::api::tokens::TokenError),
    /// `fenced token revoke` of a name that is not there.
    #[error("no token named `{name}` in {file}; see `fenced token list`")]
    NoSuchToken {
        /// The token's name.
        name: String,
        /// The tokens file.
        file: String,
    },
    /// `--public-key` could not be read or is not a key.
    #[error("{path}: {detail}")]
    PublicKey {
        /// The key file.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A file or directory the command needs could not be used.
    #[error("{what} {path}: {source}; check the path and its permissions")]
    Io {
        /// What the command was doing.
        what: &'static str,
        /// The path.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The history file could not be opened or verified.
    #[error(transparent)]
    History(#[from] fenced::history::HistoryError),
    /// The daemon failed to start or stopped on an error.
    #[error(transparent)]
    Daemon(#[from] fenced::daemon::DaemonError),
}

fn tokens_file(config: &Path) -> Result<PathBuf, CommandError> {
    let c = Config::load(config)?;
    c.api
        .security
        .tokens_file
        .ok_or_else(|| CommandError::NoTokensFile {
            config: config.display().to_string(),
        })
}

fn token(verb: TokenVerb) -> ExitCode {
    let r = match verb {
        TokenVerb::Create { config, role, name } => (|| -> Result<(), CommandError> {
            let role = match role.as_str() {
                "read" => Role::Read,
                "fence" => Role::Fence,
                _ => Role::Admin,
            };
            let file = tokens_file(&config)?;
            let t = fenced::api::tokens::create(&file, &name, role)?;
            drivers::errln!(
                "token `{name}` ({}) created in {}; it is shown once, store it in a file readable only by its user (mode 0600):",
                role.as_str(),
                file.display()
            );
            drivers::outln!("{}", t.as_str());
            Ok(())
        })(),
        TokenVerb::List { config } => (|| -> Result<(), CommandError> {
            let file = tokens_file(&config)?;
            let entries = fenced::api::tokens::read_file(&file)?;
            if entries.is_empty() {
                drivers::outln!("no tokens in {}", file.display());
            }
            for e in entries {
                drivers::outln!(
                    "{}\t{}\tcreated {} ms",
                    e.name,
                    e.role.as_str(),
                    e.created_ms
                );
            }
            Ok(())
        })(),
        TokenVerb::Revoke { config, name } => (|| -> Result<(), CommandError> {
            let file = tokens_file(&config)?;
            if fenced::api::tokens::revoke(&file, &name)? {
                drivers::outln!("token `{name}` revoked");
                Ok(())
            } else {
                Err(CommandError::NoSuchToken {
                    name,
                    file: file.display().to_string(),
                })
            }
        })(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            drivers::errln!("fenced token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verify_ledger(file: &Path, public_key: Option<&Path>) -> ExitCode {
    let r = (|| -> Result<fenced::history::LedgerReport, CommandError> {
        let key = match public_key {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| CommandError::Io {
                    what: "cannot read the public key",
                    path: p.display().to_string(),
                    source,
                })?;
                Some(fenced::history::parse_public_key(&text).map_err(|e| {
                    CommandError::PublicKey {
                        path: p.display().to_string(),
                        detail: e.to_string(),
                    }
                })?)
            }
        };
        // A copy: the daemon holds a lock on the file, and verification must not change it.
        let dir = tempfile_dir()?;
        let copy = dir.join("history.redb");
        if let Err(source) = std::fs::copy(file, &copy) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(CommandError::Io {
                what: "cannot read",
                path: file.display().to_string(),
                source,
            });
        }
        let result = fenced::history::History::open_readonly_copy(&copy)
            .and_then(|h| h.verify(key.as_ref()))
            .map_err(CommandError::from);
        let _ = std::fs::remove_dir_all(&dir);
        result
    })();
    match r {
        Ok(rep) => {
            drivers::outln!(
                "{}: ledger intact: {} records ({} signed, {} unsigned from before signing), head {} {}",
                file.display(),
                rep.records,
                rep.signed,
                rep.unsigned,
                rep.head_seq,
                rep.head_hash
            );
            match (&rep.public_key, public_key) {
                (Some(k), Some(_)) => drivers::outln!("signatures checked with the given public key {k}"),
                (Some(k), None) => drivers::outln!("signatures checked with the key recorded in the file ({k}); give --public-key with a copy kept off the node to rule out a rewritten file"),
                (None, _) => drivers::outln!("no signatures to check"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            drivers::errln!("{}: ledger NOT intact: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn tempfile_dir() -> Result<PathBuf, CommandError> {
    let base = std::env::temp_dir();
    let mut last = None;
    for n in 0..100u32 {
        let d = base.join(format!("fenced-verify-{}-{n}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) => last = Some(e),
        }
    }
    Err(CommandError::Io {
        what: "cannot create a scratch directory in (set TMPDIR to a writable one)",
        path: base.display().to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("no attempt made")),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Token { verb } => token(verb),
        Command::VerifyLedger { file, public_key } => verify_ledger(&file, public_key.as_deref()),
        Command::Run { config } => {
            init_logging("info");
            block_on(run(&config))
        }
    }
}

/// Runs the daemon on one thread: fencing is I/O-bound, and one thread keeps `fenced` small.
fn block_on(f: impl std::future::Future<Output = Result<(), CommandError>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// RUST_LOG takes a level (`debug`) and per-module levels (`warn,fenced=debug`): a
/// [`Targets`](tracing_subscriber::filter::Targets) filter, which needs no regex engine
/// (tracing-subscriber's `EnvFilter` compiles several at start and keeps them resident).
fn init_logging(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fallback = || {
        default
            .parse::<tracing_subscriber::filter::Targets>()
            .unwrap_or_default()
    };
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match v.parse() {
            Ok(f) => (f, None),
            Err(e) => (fallback(), Some((v, e))),
        },
        _ => (fallback(), None),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .with(filter)
        .init();
    if let Some((v, e)) = bad {
        tracing::warn!("RUST_LOG={v:?} is not understood ({e}); logging at {default}. Give a level (debug) or module=level pairs (warn,fenced=debug)");
    }
}

fn check_config(file: &Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            drivers::errln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The exit status says whether the file is valid; a reader that stops early (`| head -1`)
    // must not turn that into a panic, so output errors end the listing quietly.
    match describe_config(file, &config, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            drivers::errln!("fenced check-config: cannot write the summary: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints what a valid configuration configures.
fn describe_config(file: &Path, config: &Config, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}: valid", file.display())?;
    writeln!(
        out,
        "daemon: node {}, socket {}, history {}",
        config.daemon.node_name,
        config.daemon.socket.display(),
        config.daemon.history.display()
    )?;
    if let Some(board) = &config.board {
        writeln!(
            out,
            "board: {} (relay lines and serial ports checked against it)",
            board.describe()
        )?;
    }
    let tcp = config.api.describe_tcp();
    writeln!(
        out,
        "api: socket mode {:04o}, {tcp}",
        config.api.socket_mode
    )?;
    writeln!(
        out,
        "limits: {} fencing operations per {} s ({} per target), request ids kept {} s",
        config.limits.max_operations,
        config.limits.window.as_secs(),
        config.limits.max_operations_per_target,
        config.limits.request_id_window.as_secs()
    )?;
    writeln!(out, "devices ({}):", config.devices.len())?;
    for (name, d) in &config.devices {
        let extra = d.kind.describe();
        writeln!(
            out,
            "  {name}: {} at {} ({extra})",
            d.kind_name(),
            d.address()
        )?;
    }
    if !config.witnesses.is_empty() {
        writeln!(out, "witnesses ({}):", config.witnesses.len())?;
        for (name, w) in &config.witnesses {
            writeln!(out, "  {name}: {} ({})", w.kind.name(), w.kind.describe())?;
        }
    }
    writeln!(out, "targets ({}):", config.targets.len())?;
    for (name, t) in &config.targets {
        writeln!(
            out,
            "  {name}: attempt timeout {} s, total {} s, delay {} s + up to {} s random",
            t.timing.attempt_timeout.as_secs_f64(),
            t.timing.total_timeout.as_secs_f64(),
            t.timing.delay.as_secs_f64(),
            t.timing.random_delay.as_secs_f64()
        )?;
        for (i, level) in t.levels.iter().enumerate() {
            let devs: Vec<String> = level
                .iter()
                .map(|e| {
                    let mut s = e.device.clone();
                    if let Some(p) = &e.port {
                        s.push_str(&format!(" port {p}"));
                    }
                    if let Some(id) = t.identities.get(&e.device) {
                        s.push_str(&format!(" (identity {id})"));
                    }
                    s
                })
                .collect();
            writeln!(out, "    level {}: {}", i + 1, devs.join(" + "))?;
        }
        if !t.witnesses.is_empty() {
            writeln!(
                out,
                "    confirm {}: every level's off must be corroborated by {}",
                t.confirm,
                t.witnesses.join(" + ")
            )?;
        }
    }
    Ok(())
}

async fn run(path: &Path) -> Result<(), CommandError> {
    let config = Arc::new(Config::load(path)?);
    let mut signals = Signals::install()?;
    let daemon = Daemon::start(config).await?;
    notify("READY=1\nSTATUS=serving the fencer API");
    tracing::info!("fenced ready");
    while signals.next().await == SignalAction::Reload {
        match daemon.reload_tls() {
            Ok(true) => tracing::info!("TLS certificate and key reloaded"),
            Ok(false) => tracing::info!("SIGHUP: nothing to reload (TLS is not configured)"),
            Err(e) => {
                tracing::error!("TLS reload failed, still serving the previous certificate: {e}")
            }
        }
    }
    daemon
        .drain(DRAIN_LIMIT, async {
            while signals.next().await != SignalAction::Stop {}
        })
        .await;
    notify("STOPPING=1");
    Ok(daemon.stop().await?)
}
