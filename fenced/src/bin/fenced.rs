//! `fenced`: the Palisade fencer daemon.

use clap::{Parser, Subcommand};
use fenced::config::{Config, DeviceKind, Role};
use fenced::daemon::{notify, wait_for_signal, Daemon};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
    /// Start a lab of simulated IPMI BMCs on loopback (no hardware needed), run fenced on it,
    /// fence node1 end to end through the API, then keep serving until Ctrl-C.
    #[cfg(feature = "demo")]
    Demo {
        /// Number of simulated nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How long a simulated node takes to change power, in milliseconds.
        #[arg(long, default_value_t = 200)]
        power_delay_ms: u64,
        /// Directory for the socket, config and history (default: a fresh temporary one,
        /// removed at exit).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Do not fence node1 at start; only start the lab and the daemon.
        #[arg(long)]
        no_fence: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => {
            init_logging("info");
            block_on(run(&config))
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            nodes,
            power_delay_ms,
            dir,
            no_fence,
        } => {
            // The demo prints its own story; the daemon's log shows only problems unless
            // RUST_LOG asks for more.
            init_logging("warn");
            block_on(fenced::demo::run(fenced::demo::DemoOptions {
                nodes,
                power_delay: Duration::from_millis(power_delay_ms),
                dir,
                no_fence,
            }))
        }
    }
}

/// Runs the daemon on one thread: fencing is I/O-bound, and one thread keeps `fenced` small.
fn block_on(f: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
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

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
            DeviceKind::Redfish(s) => format!(
                "user {}, auth {:?}, TLS {}",
                s.username,
                s.auth,
                match &s.tls {
                    drivers::redfish::TlsVerify::SystemRoots =>
                        "verified (system roots)".to_string(),
                    drivers::redfish::TlsVerify::CaFile(p) =>
                        format!("verified (CA {})", p.display()),
                    drivers::redfish::TlsVerify::Fingerprint(_) => "pinned fingerprint".to_string(),
                    drivers::redfish::TlsVerify::Insecure =>
                        "NOT VERIFIED (insecure = true)".to_string(),
                }
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
    let daemon = Daemon::start(config).await?;
    notify("READY=1\nSTATUS=serving the fencer API");
    tracing::info!("fenced ready");
    wait_for_signal().await?;
    daemon
        .drain(DRAIN_LIMIT, async {
            let _ = wait_for_signal().await;
        })
        .await;
    notify("STOPPING=1");
    daemon.stop().await
}
