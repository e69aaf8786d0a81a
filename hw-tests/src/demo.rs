//! `palisade-lab demo`: Palisade end to end with no hardware. The bench starts its simulated
//! devices on loopback — IPMI v2.0 BMCs (RMCP+), one node behind a Redfish BMC (HTTPS, its
//! CA written next to the config) and a switched PDU (SNMP v2c) feeding node1's two power
//! supplies as its second level — writes a config for them, and runs the real daemon on it:
//! the `fenced` binary built beside `palisade-lab`, started as `fenced run --config FILE`
//! exactly as an operator starts it. It then fences node1 through the API and prints the
//! `fence_node` commands to try next, each runnable as printed.
//!
//! The daemon is a child process rather than the library in-process so that the demo shows
//! the product as installed (its own start-up checks, log, memory and exit) and so that the
//! daemon carries none of the simulators: they live in this process.

use crate::daemon::{FencedError, FencedProcess};
use crate::lab::redfish::{RedfishLab, RedfishLabSpec};
use crate::lab::snmp::{PduLab, PduLabSpec};
use crate::lab::{Lab, LabError, LabSpec};
use drivers::Secret;
use fenced::client::{Client, ClientError, Endpoint};
use fenced::model::{Confirmation, FenceAccepted, Operation, Outcome, Phase, StepResult};
use rand::Rng;
use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the demo starts.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of simulated IPMI nodes (each with its own BMC).
    pub nodes: usize,
    /// How long a simulated node takes to change power after its device accepts the command.
    pub power_delay: Duration,
    /// Where the demo's socket, config, log and history go (a fresh temporary directory,
    /// removed at exit, if None).
    pub dir: Option<PathBuf>,
    /// Skip the first fence (only start the lab and the daemon).
    pub no_fence: bool,
    /// Where `fenced` and `fence_node` are (the directory of the running executable if None:
    /// cargo builds every binary of the workspace into one directory).
    pub bin_dir: Option<PathBuf>,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `--nodes` is out of range.
    #[error("--nodes must be 1 to 64, found {0}")]
    Nodes(usize),
    /// A file or directory of the demo could not be created.
    #[error("cannot create {path}: {source}; choose another --dir")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The directory of the running executable is unknown.
    #[error("cannot find the directory of palisade-lab ({0}); pass --bin-dir DIR, the directory holding fenced and fence_node")]
    ExeDir(std::io::Error),
    /// A binary the demo runs or suggests is missing.
    #[error("{path} does not exist; build it with `{build}` (or pass --bin-dir DIR, the directory holding fenced and fence_node)")]
    MissingBinary {
        /// The missing binary.
        path: PathBuf,
        /// The command that builds it.
        build: String,
    },
    /// A simulator could not start.
    #[error("cannot start the simulated {what}: {source}")]
    Lab {
        /// Which simulator.
        what: &'static str,
        /// Why.
        source: LabError,
    },
    /// The daemon did not start or stopped.
    #[error(transparent)]
    Fenced(#[from] FencedError),
    /// The daemon exited while the demo was running.
    #[error("fenced exited with {status} while the demo was running; its log ({log}) says why")]
    FencedExited {
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its log file.
        log: PathBuf,
    },
    /// The first fence could not be requested or read back.
    #[error("the first fence through the API failed: {0}")]
    Api(#[from] ClientError),
    /// Signal handlers could not be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signal(std::io::Error),
}

const USER: &str = "palisade";
/// How long the daemon may take to accept connections (its start-up reads history and
/// builds devices; on a loaded CI machine that can take seconds).
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long the daemon may take to drain and stop after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Runs the demo until SIGINT or SIGTERM (or until the daemon exits on its own, an error).
pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    if !(1..=64).contains(&opts.nodes) {
        return Err(DemoError::Nodes(opts.nodes));
    }
    let bins = Binaries::find(opts.bin_dir.as_deref())?;
    let (dir, remove_dir) = match &opts.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id())),
            true,
        ),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| DemoError::Write {
            path: dir.clone(),
            source,
        })?;
    let result = run_in(&opts, &bins, &dir).await;
    if remove_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The workspace binaries the demo runs (`fenced`) and suggests (`fence_node`).
struct Binaries {
    fenced: PathBuf,
    fence_node: PathBuf,
}

impl Binaries {
    fn find(bin_dir: Option<&Path>) -> Result<Binaries, DemoError> {
        let dir = match bin_dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()
                .map_err(DemoError::ExeDir)?
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| {
                    DemoError::ExeDir(std::io::Error::other("the executable has no directory"))
                })?,
        };
        // Say the build command that fills this directory: cargo's release profile builds
        // into target/release, the dev profile into target/debug.
        let build = if dir.file_name().is_some_and(|n| n == "release") {
            "cargo build --release --workspace --bins"
        } else {
            "cargo build --workspace --bins"
        };
        let bins = Binaries {
            fenced: dir.join("fenced"),
            fence_node: dir.join("fence_node"),
        };
        for path in [&bins.fenced, &bins.fence_node] {
            if !path.is_file() {
                return Err(DemoError::MissingBinary {
                    path: path.clone(),
                    build: build.into(),
                });
            }
        }
        Ok(bins)
    }
}

fn random_text(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

async fn run_in(opts: &DemoOptions, bins: &Binaries, dir: &Path) -> Result<(), DemoError> {
    // A fresh random password per run, kept in a 0600 file the config names, as in production.
    let password = random_text(20);
    let pw_file = dir.join("bmc.password");
    write_private(&pw_file, password.as_bytes())?;

    let mut spec = LabSpec::new(opts.nodes, USER, Secret::new(password.clone().into_bytes()));
    spec.power_delay = opts.power_delay;
    let lab = Lab::start(spec).await.map_err(|source| DemoError::Lab {
        what: "IPMI BMCs",
        source,
    })?;
    // One Redfish node beside the IPMI ones; its UUIDs get another prefix so no identity is
    // shared with an IPMI node.
    let mut rspec = RedfishLabSpec::new(1, USER, Secret::new(password.into_bytes()));
    rspec.power_delay = opts.power_delay;
    rspec.cert_dir = Some(dir.to_path_buf());
    rspec.guid_prefix = "5a1ef150".into();
    let rlab = RedfishLab::start(rspec)
        .await
        .map_err(|source| DemoError::Lab {
            what: "Redfish BMC",
            source,
        })?;

    // A switched PDU whose outlets 1 and 2 feed node1's two power supplies: node1's second
    // level, used when its BMC fails.
    let community = random_text(16);
    let community_file = dir.join("pdu.community");
    write_private(&community_file, community.as_bytes())?;
    let model = drivers::pdu::model::by_name("apc-rpdu").ok_or_else(|| DemoError::Lab {
        what: "PDU",
        source: LabError::Spec("the apc-rpdu model is not in drivers::pdu::model".into()),
    })?;
    let mut pspec = PduLabSpec::new(1, 4, model);
    pspec.community = Some(Secret::new(community.into_bytes()));
    pspec.names = vec!["node1-psu1".into(), "node1-psu2".into()];
    pspec.power_delay = opts.power_delay;
    let plab = PduLab::start(pspec)
        .await
        .map_err(|source| DemoError::Lab {
            what: "PDU",
            source,
        })?;

    let config_path = dir.join("fenced.toml");
    let socket = dir.join("fenced.sock");
    let history = dir.join("history.redb");
    let log = dir.join("fenced.log");
    let text = demo_config(
        &socket,
        &history,
        &pw_file,
        &lab,
        &rlab,
        &plab,
        &community_file,
    );
    write_private(&config_path, text.as_bytes())?;

    drivers::outln!(
        "Palisade demo: {} simulated nodes whose BMCs speak IPMI v2.0 RMCP+ and one whose BMC speaks Redfish over HTTPS, on loopback\n",
        opts.nodes
    );
    for b in lab.bmcs() {
        drivers::outln!(
            "  {:<7} BMC {:<21} system GUID {}",
            b.name(),
            b.addr().to_string(),
            b.guid_text()
        );
    }
    for b in rlab.bmcs() {
        drivers::outln!(
            "  {:<7} BMC {:<21} system UUID {} (Redfish, CA {})",
            redfish_target(opts.nodes),
            b.url(),
            b.uuid(1).unwrap_or_default(),
            rlab.ca_path().display()
        );
    }
    for p in plab.pdus() {
        drivers::outln!(
            "  {:<7} PDU {:<21} serial {} (SNMP v2c, outlets 1-2 feed node1's power supplies: node1's second level)",
            "pdu",
            p.addr().to_string(),
            p.serial()
        );
    }

    // The real daemon on the generated config, started from this (the runtime's) thread so
    // that it gets SIGTERM if the demo dies.
    let mut daemon = FencedProcess::spawn(&bins.fenced, &config_path, &socket, &log)?;
    drivers::outln!(
        "\n{} run --config {}   (pid {})",
        shown(&bins.fenced),
        shown(&config_path),
        daemon.id()
    );
    let outcome = serve(opts, bins, &mut daemon, &socket, &history).await;
    let stopped = daemon.stop(STOP_LIMIT).await;
    lab.shutdown().await;
    rlab.shutdown().await;
    plab.shutdown().await;
    outcome?;
    if let Some(status) = stopped.filter(|s| !s.success()) {
        drivers::outln!("fenced stopped with {status}; its log: {}", log.display());
    }
    Ok(())
}

/// From the daemon's start to the signal that ends the demo.
async fn serve(
    opts: &DemoOptions,
    bins: &Binaries,
    daemon: &mut FencedProcess,
    socket: &Path,
    history: &Path,
) -> Result<(), DemoError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a Ctrl-C during start-up still stops the daemon and the simulators.
    let mut term = signal(SignalKind::terminate()).map_err(DemoError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DemoError::Signal)?;
    daemon.wait_ready_async(START_LIMIT).await?;
    drivers::outln!("fenced serves the API on {}", socket.display());
    drivers::outln!(
        "  log     {}\n  history {}\n",
        daemon.log_path().display(),
        history.display()
    );

    if !opts.no_fence {
        first_fence(socket).await?;
    }

    let fence_node = shown(&bins.fence_node);
    drivers::outln!(
        "\nfenced keeps running until Ctrl-C. From another terminal, in this directory:"
    );
    drivers::outln!(
        "  export PALISADE_SOCKET={}",
        shell_word(&socket.display().to_string())
    );
    drivers::outln!("  {fence_node} status");
    drivers::outln!("  {fence_node} off node2 --reason \"trying Palisade\"");
    drivers::outln!("  {fence_node} on node1 --reason \"unfence\"");
    drivers::outln!("  {fence_node} history");
    drivers::outln!("  {fence_node} devices --check");
    drivers::outln!();

    // Until a signal, or until the daemon exits on its own (which the demo reports).
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = check.tick() => {
                if let Some(status) = daemon.try_exited() {
                    return Err(DemoError::FencedExited {
                        status,
                        log: daemon.log_path().to_path_buf(),
                    });
                }
            }
        }
    }
    drivers::outln!("stopping fenced and the simulators");
    Ok(())
}

/// A path as a shell word to type: relative to the current directory when it is below it
/// (`target/release/fence_node` from the repository root), absolute otherwise.
fn shown(path: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    shell_word(&typed_path(path, cwd.as_deref()))
}

/// `path` as typed in `cwd`: relative below it, with `./` when it names a file right there
/// (a bare name would be looked up on PATH instead), absolute otherwise.
fn typed_path(path: &Path, cwd: Option<&Path>) -> String {
    match cwd.and_then(|c| path.strip_prefix(c).ok()) {
        Some(rel) if rel.parent().is_some_and(|p| p.as_os_str().is_empty()) => {
            format!("./{}", rel.display())
        }
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// `text` quoted for a POSIX shell when it holds anything but safe characters.
fn shell_word(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| DemoError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// The demo's Redfish node comes after the IPMI ones.
fn redfish_target(ipmi_nodes: usize) -> String {
    format!("node{}", ipmi_nodes + 1)
}

fn demo_config(
    socket: &Path,
    history: &Path,
    pw_file: &Path,
    lab: &Lab,
    rlab: &RedfishLab,
    plab: &PduLab,
    community_file: &Path,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `palisade-lab demo` for its lab of simulated devices."
    );
    let _ = writeln!(
        s,
        "[daemon]\nsocket = {socket:?}\nhistory = {history:?}\nnode_name = \"demo\"\n"
    );
    let _ = writeln!(
        s,
        "[defaults]\nattempt_timeout_s = 10\ntotal_timeout_s = 30\n"
    );
    for b in lab.bmcs() {
        let _ = writeln!(
            s,
            "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"{USER}\"\npassword_file = {pw:?}\ncipher_suite = \"auto\"\ntimeout_ms = 500\n",
            n = b.name(),
            a = b.addr(),
            pw = pw_file,
        );
        let pdu = plab.pdus().first().filter(|_| b.name() == "node1");
        let _ = match pdu {
            Some(p) => writeln!(
                s,
                "[targets.{n}]\nlevels = [[\"bmc-{n}\"], [\"pdu:node1-psu1\", \"pdu:node1-psu2\"]]\nidentities = {{ bmc-{n} = \"{g}\", pdu = \"{serial}\" }}\n",
                n = b.name(),
                g = b.guid_text(),
                serial = p.serial().to_ascii_lowercase()
            ),
            None => writeln!(
                s,
                "[targets.{n}]\nlevels = [[\"bmc-{n}\"]]\nidentities = {{ bmc-{n} = \"{g}\" }}\n",
                n = b.name(),
                g = b.guid_text()
            ),
        };
    }
    for p in plab.pdus() {
        let _ = writeln!(
            s,
            "[devices.pdu]\nkind = \"snmp-pdu\"\naddress = \"{a}\"\nmodel = \"apc-rpdu\"\nversion = \"2c\"\ncommunity_file = {c:?}\ntimeout_ms = 500\n",
            a = p.addr(),
            c = community_file,
        );
    }
    for b in rlab.bmcs() {
        let n = redfish_target(lab.bmcs().len());
        let _ = writeln!(
            s,
            "[devices.redfish-{n}]\nkind = \"redfish\"\naddress = \"{a}\"\nusername = \"{USER}\"\npassword_file = {pw:?}\nca_file = {ca:?}\ntimeout_ms = 2000\ntotal_timeout_ms = 8000\n",
            a = b.url(),
            pw = pw_file,
            ca = rlab.ca_path(),
        );
        let _ = writeln!(
            s,
            "[targets.{n}]\nlevels = [[\"redfish-{n}\"]]\nidentities = {{ redfish-{n} = \"{u}\" }}\n",
            u = b.uuid(1).unwrap_or_default()
        );
    }
    s
}

async fn first_fence(socket: &Path) -> Result<(), DemoError> {
    let client = Client::new(
        Endpoint::Unix(socket.to_path_buf()),
        Duration::from_secs(60),
    );
    let body = serde_json::json!({"target": "node1", "action": "off", "reason": "palisade-lab demo: first fence"});
    drivers::outln!("Fencing node1 through the API: POST /v1/fence {body}");
    let (accepted, _) = client
        .call_as::<FenceAccepted>("POST", "/v1/fence", Some(&body), None)
        .await?;
    let (op, _) = client
        .call_as::<Operation>(
            "GET",
            &format!("/v1/operations/{}?wait=60", accepted.id),
            None,
            None,
        )
        .await?;
    drivers::out!("{}", describe(&op));
    Ok(())
}

/// What an operation did, step by step, for people.
pub fn describe(op: &Operation) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  operation {} ({} {}), {} attempt(s):",
        op.id,
        op.action,
        op.target,
        op.attempts.len()
    );
    for a in &op.attempts {
        let took = a.finished_ms.saturating_sub(a.started_ms);
        let what = match &a.result {
            StepResult::Confirmed {
                state,
                already: true,
                identity,
                ..
            } => {
                format!("{}was already {state}; nothing sent", checked(identity))
            }
            StepResult::Confirmed {
                state,
                polls,
                identity,
                ..
            } => {
                let phase = match a.phase {
                    Phase::Off => "off",
                    Phase::On => "on",
                };
                format!(
                    "{}power {phase} sent, state read back as {state} after {polls} status read(s)",
                    checked(identity)
                )
            }
            StepResult::Failed { code, message } => format!("FAILED ({code}): {message}"),
        };
        let _ = writeln!(s, "    level {} {}: {what} [{took} ms]", a.level, a.device);
    }
    let ms = op.elapsed_ms().unwrap_or(0);
    match &op.outcome {
        Some(Outcome::Succeeded {
            confirmation,
            summary,
            ..
        }) => {
            let how = match confirmation {
                Confirmation::PowerReadBack { .. } => "confirmed by reading the power state back",
                Confirmation::Manual { .. } => "confirmed by hand",
                Confirmation::PoisonPill { .. } => "confirmed by poison pill and msgwait elapsed",
                Confirmation::SlotCleared { .. } => "SBD slot cleared and read back",
            };
            let _ = writeln!(s, "  => SUCCEEDED in {ms} ms, {how}: {summary}");
        }
        Some(Outcome::Failed { code, message }) => {
            let _ = writeln!(s, "  => FAILED ({code}) after {ms} ms: {message}");
        }
        None => {
            let _ = writeln!(s, "  => still {} after the wait", op.state);
        }
    }
    s
}

fn checked(identity: &Option<String>) -> String {
    identity
        .as_ref()
        .map(|i| format!("identity checked ({i}), "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{shell_word, typed_path};
    use std::path::Path;

    #[test]
    fn paths_are_typed_so_the_shell_runs_that_file() {
        let bin = Path::new("/repo/target/release/fence_node");
        assert_eq!(
            typed_path(bin, Some(Path::new("/repo"))),
            "target/release/fence_node"
        );
        assert_eq!(
            typed_path(bin, Some(Path::new("/repo/target/release"))),
            "./fence_node"
        );
        assert_eq!(
            typed_path(bin, Some(Path::new("/elsewhere"))),
            bin.display().to_string()
        );
        assert_eq!(typed_path(bin, None), bin.display().to_string());
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_word("target/release/fence_node"),
            "target/release/fence_node"
        );
        assert_eq!(shell_word("/tmp/a b/fenced.sock"), "'/tmp/a b/fenced.sock'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
