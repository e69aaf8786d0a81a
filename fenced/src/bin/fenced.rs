//! `fenced`: the Palisade fencer daemon.

use clap::{Parser, Subcommand};
use fenced::api::{bind_unix, Api};
use fenced::config::{Config, DeviceKind, Role};
use fenced::history::History;
use fenced::{Clock, Engine};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How often every device is health-checked.
const MONITOR_INTERVAL: Duration = Duration::from_secs(60);
/// How long a stop waits for operations in flight (systemd's default stop timeout is 90 s).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(
    name = "fenced",
    version,
    about = "Palisade fencer daemon: fences (powers off, reboots, powers on) cluster nodes through their BMCs, confirming every action by reading the power state back.",
    after_help = "Operators talk to the daemon with `fence_node`. Logs go to stdout; set RUST_LOG (e.g. RUST_LOG=fenced=debug) to change the level.\n\nExit status: 0 clean stop or valid config, 1 error (the message says which)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: open history, check devices, serve the API until SIGTERM/SIGINT.
    Run {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file and print what it configures; exit 0 if valid, 1 if not.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => {
            init_logging();
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
            match rt.block_on(run(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

fn role(r: Role) -> &'static str {
    fenced::api::auth::role_name(r)
}

fn check_config(file: &Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}: valid", file.display());
    println!(
        "daemon: node {}, socket {}, history {}",
        config.daemon.node_name,
        config.daemon.socket.display(),
        config.daemon.history.display()
    );
    let tcp = config.api.tcp.map_or_else(
        || "no TCP listener".to_string(),
        |a| format!("TCP {a} (role {})", role(config.api.tcp_role)),
    );
    println!("api: socket mode {:04o}, {tcp}", config.api.socket_mode);
    println!(
        "limits: {} fencing operations per {} s ({} per target), request ids kept {} s",
        config.limits.max_operations,
        config.limits.window.as_secs(),
        config.limits.max_operations_per_target,
        config.limits.request_id_window.as_secs()
    );
    println!("devices ({}):", config.devices.len());
    for (name, d) in &config.devices {
        let extra = match &d.kind {
            DeviceKind::Ipmi(s) => format!(
                "user {}, privilege {}, cipher suite {}",
                s.username,
                s.privilege,
                s.cipher_suite
                    .map_or_else(|| "auto".to_string(), |c| c.to_string())
            ),
        };
        println!("  {name}: {} at {} ({extra})", d.kind_name(), d.address());
    }
    println!("targets ({}):", config.targets.len());
    for (name, t) in &config.targets {
        println!(
            "  {name}: attempt timeout {} s, total {} s, delay {} s + up to {} s random",
            t.timing.attempt_timeout.as_secs_f64(),
            t.timing.total_timeout.as_secs_f64(),
            t.timing.delay.as_secs_f64(),
            t.timing.random_delay.as_secs_f64()
        );
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
            println!("    level {}: {}", i + 1, devs.join(" + "));
        }
    }
    ExitCode::SUCCESS
}

async fn run(path: &Path) -> Result<(), String> {
    let config = Arc::new(Config::load(path).map_err(|e| e.to_string())?);
    tracing::info!(
        config = %path.display(),
        node = %config.daemon.node_name,
        targets = config.targets.len(),
        devices = config.devices.len(),
        "fenced {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let clock = Clock::system();
    let (history, interrupted) =
        History::open(&config.daemon.history, clock.now_ms()).map_err(|e| {
            format!(
                "cannot open history {}: {e}",
                config.daemon.history.display()
            )
        })?;
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
    let devices = fenced::devices::build(&config)?;
    let engine = Engine::new(
        config.clone(),
        devices,
        history,
        interrupted.len() as u32,
        clock,
    )
    .map_err(|e| e.to_string())?;

    let listener =
        bind_unix(&config.daemon.socket, config.api.socket_mode).map_err(|e| e.to_string())?;
    tracing::info!(socket = %config.daemon.socket.display(), mode = format_args!("{:04o}", config.api.socket_mode), "API listening on Unix socket");
    let tcp = match config.api.tcp {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (api.tcp): {e}"))?;
            tracing::info!(%addr, role = role(config.api.tcp_role), "API listening on loopback TCP");
            Some(l)
        }
        None => None,
    };

    let api = Api::new(engine.clone());
    let unix_task = tokio::spawn({
        let api = api.clone();
        async move { api.serve_unix(listener).await }
    });
    let tcp_task = tcp.map(|l| {
        let api = api.clone();
        tokio::spawn(async move { api.serve_tcp(l).await })
    });
    let monitor = tokio::spawn({
        let engine = engine.clone();
        async move {
            let mut tick = tokio::time::interval(MONITOR_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // The first tick is immediate: devices are checked at start-up.
                tick.tick().await;
                engine.monitor_all().await;
                for d in engine.devices() {
                    if d.health == fenced::model::HealthState::Unhealthy {
                        tracing::warn!(device = %d.name, "device unhealthy: {}", d.error.unwrap_or_default());
                    }
                }
            }
        }
    });

    notify_ready();
    tracing::info!("fenced ready");
    wait_for_signal().await?;
    drain(&engine).await;
    tracing::info!("stopping: answering open requests, accepting no new ones");
    notify("STOPPING=1");
    monitor.abort();
    api.shutdown();
    let mut result = Ok(());
    match unix_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => result = Err(format!("Unix socket server failed: {e}")),
        Err(e) => result = Err(format!("Unix socket server task failed: {e}")),
    }
    if let Some(t) = tcp_task {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(format!("TCP server failed: {e}")),
            Err(e) => result = Err(format!("TCP server task failed: {e}")),
        }
    }
    if engine.in_flight() > 0 {
        tracing::warn!(
            in_flight = engine.in_flight(),
            "stopping with operations in flight; they will be recorded as interrupted (NOT fenced) at the next start"
        );
    }
    let _ = std::fs::remove_file(&config.daemon.socket);
    tracing::info!("fenced stopped");
    result
}

/// Lets operations in flight finish (bounded), still serving so their callers see the
/// outcome: an operation cut short is recorded as interrupted, and its target is NOT known to
/// be fenced.
async fn drain(engine: &Engine) {
    let n = engine.in_flight();
    if n == 0 {
        return;
    }
    tracing::info!(
        in_flight = n,
        "waiting up to {} s for operations in flight to finish (signal again to stop now)",
        DRAIN_LIMIT.as_secs()
    );
    let wait = async {
        while engine.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(DRAIN_LIMIT, wait) => {}
        _ = wait_for_signal() => tracing::warn!("second signal: stopping now"),
    }
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

fn notify_ready() {
    notify("READY=1\nSTATUS=serving the fencer API");
}

/// Sends a systemd notification (sd_notify protocol: one datagram to `$NOTIFY_SOCKET`; a
/// leading `@` names an abstract socket).
fn notify(msg: &str) {
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
        sock.send_to(msg.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {}: {e}", path.to_string_lossy());
    }
}
