//! Device kind `agent`: any ClusterLabs fence agent (`fence_ipmilan`, `fence_apc`, ...) run as
//! a child process per call.
//!
//! Agents are the one place Palisade runs a process per device call: that is how the agent API
//! works. Everything else is bounded here: options (and the password) go on the agent's stdin,
//! never on argv or in its environment; every call has its own deadline, after which the whole
//! process group is killed (agents run with `PCMK_service` set disable their own timeouts and
//! poll forever); stdout and stderr are bounded, and stderr is scrubbed of secrets before it
//! reaches an error and so the history. An agent's `off` is never trusted on its exit code: it
//! succeeds only when a following `status` answers off (exit 2).

pub mod format;

use crate::power::{DeviceError, Identity, Outlet, PowerCommand, PowerDevice, PowerState};
use crate::Secret;
use async_trait::async_trait;
use format::Metadata;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Most bytes of stdout and of stderr kept from one call (the rest is read and dropped, so the
/// agent never blocks on a full pipe).
const OUTPUT_LIMIT: usize = 64 * 1024;
/// Most bytes of (scrubbed) stderr put into an error.
const STDERR_IN_ERROR: usize = 600;

/// Agents known to hand their password to another program on its command line, where every
/// local user can read it (`/proc/PID/cmdline`) while the agent runs.
const ARGV_LEAKERS: &[(&str, &str)] = &[
    ("fence_ipmilan", "ipmitool -P"),
    ("fence_ipmilanplus", "ipmitool -P"),
    ("fence_ilo3", "ipmitool -P"),
    ("fence_ilo4", "ipmitool -P"),
    ("fence_ilo5", "ipmitool -P"),
    ("fence_imm", "ipmitool -P"),
    ("fence_idrac", "ipmitool -P"),
    ("fence_amt", "amttool (AMT_PASSWORD)"),
];

/// How to run one agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent executable.
    pub program: PathBuf,
    /// Options given on stdin with every call (not secret).
    pub options: Vec<(String, String)>,
    /// Secret options (e.g. `password`), written to stdin only and scrubbed from stderr.
    pub secrets: Vec<(String, Secret)>,
    /// The option that names the plug, for level entries with a port (`plug` by default).
    pub port_option: String,
    /// Extra environment for the agent (e.g. `PCMK_service`); the rest is cleared except a
    /// fixed `PATH` and `LANG=C`.
    pub environment: Vec<(String, String)>,
    /// Deadline of one agent call; the process group is killed when it passes.
    pub timeout: Duration,
}

impl AgentConfig {
    /// An agent run with no options and a 20 s deadline per call.
    pub fn new(program: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            program: program.into(),
            options: Vec::new(),
            secrets: Vec::new(),
            port_option: "plug".into(),
            environment: Vec::new(),
            timeout: Duration::from_secs(20),
        }
    }
}

/// What one run of the agent produced.
#[derive(Debug)]
struct RunOutput {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Kills the agent's whole process group unless disarmed (a finished call, or a dropped one:
/// the engine cancels calls that overrun the attempt's deadline).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: killpg only sends a signal; pgid is the group our child leads (it was
            // spawned with process_group(0) and has not been reaped yet).
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

async fn read_bounded<R: AsyncRead + Unpin>(r: Option<R>, keep: &mut Vec<u8>) {
    let Some(mut r) = r else { return };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(keep.len());
                keep.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// A ClusterLabs fence agent as a [`PowerDevice`].
#[derive(Debug)]
pub struct AgentDevice {
    config: AgentConfig,
    label: String,
    warnings: Vec<String>,
}

impl AgentDevice {
    /// An agent device; reads the agent's file to warn about agents that put the password on
    /// another program's command line.
    pub fn new(config: AgentConfig) -> AgentDevice {
        let name = config.program.file_name().map_or_else(
            || config.program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let addr = config
            .options
            .iter()
            .find(|(k, _)| matches!(k.as_str(), "ip" | "ipaddr" | "ssl_host" | "hostname"))
            .map(|(_, v)| format!(" {v}"))
            .unwrap_or_default();
        let label = format!("{name}{addr}");
        let warnings = argv_warning(&config.program, &name, !config.secrets.is_empty())
            .into_iter()
            .collect();
        AgentDevice {
            config,
            label,
            warnings,
        }
    }

    /// The agent's name and device address, for display.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn secrets(&self) -> Vec<&[u8]> {
        self.config
            .secrets
            .iter()
            .map(|(_, s)| s.expose())
            .collect()
    }

    fn refused(&self, action: &str, detail: String) -> DeviceError {
        DeviceError::Refused {
            address: self.label.clone(),
            command: format!("agent {action}"),
            detail,
        }
    }

    /// Runs the agent once with `action`, bounded by the configured deadline.
    async fn run(&self, action: &str, port: Option<&str>) -> Result<RunOutput, DeviceError> {
        let mut input = zeroize::Zeroizing::new(Vec::new());
        let policy = |e: format::FormatError| DeviceError::Policy {
            detail: format!("agent {}: {e}", self.label),
        };
        format::encode_option(&mut input, "action", action.as_bytes()).map_err(policy)?;
        if let Some(p) = port {
            format::encode_option(&mut input, &self.config.port_option, p.as_bytes())
                .map_err(policy)?;
        }
        for (k, v) in &self.config.options {
            format::encode_option(&mut input, k, v.as_bytes()).map_err(policy)?;
        }
        for (k, s) in &self.config.secrets {
            format::encode_option(&mut input, k, s.expose()).map_err(policy)?;
        }

        let mut cmd = tokio::process::Command::new(&self.config.program);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .envs(self.config.environment.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| DeviceError::Unreachable {
            address: self.label.clone(),
            reason: format!(
                "cannot run agent {}: {e}; check the `agent` path and that it is executable",
                self.config.program.display()
            ),
        })?;
        let mut guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let (mut sin, sout, serr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let outcome = tokio::time::timeout(self.config.timeout, async {
            let write = async {
                if let Some(s) = sin.as_mut() {
                    // An agent may exit without reading all of stdin: not an error by itself.
                    let _ = s.write_all(&input).await;
                    let _ = s.shutdown().await;
                }
                drop(sin.take());
            };
            tokio::join!(
                write,
                read_bounded(sout, &mut stdout),
                read_bounded(serr, &mut stderr)
            );
            child.wait().await
        })
        .await;
        let scrubbed = format::scrub(&stderr, &self.secrets(), STDERR_IN_ERROR);
        match outcome {
            Ok(Ok(status)) => {
                guard.0 = None;
                use std::os::unix::process::ExitStatusExt;
                Ok(RunOutput {
                    code: status.code(),
                    signal: status.signal(),
                    stdout,
                    stderr: scrubbed,
                })
            }
            Ok(Err(e)) => Err(self.refused(action, format!("waiting for the agent failed: {e}"))),
            Err(_) => {
                drop(guard);
                let _ = child.wait().await;
                Err(DeviceError::Timeout {
                    address: self.label.clone(),
                    what: format!(
                        "agent {action}; its process group was killed{}",
                        if scrubbed.is_empty() {
                            String::new()
                        } else {
                            format!("; its stderr: {scrubbed}")
                        }
                    ),
                    timeout_ms: self.config.timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Maps a non-zero exit of `action` to an error (fence-agents' exit codes).
    fn failure(&self, action: &str, out: &RunOutput) -> DeviceError {
        let stderr = if out.stderr.is_empty() {
            "no stderr".to_string()
        } else {
            format!("stderr: {}", out.stderr)
        };
        let Some(code) = out.code else {
            return self.refused(
                action,
                format!(
                    "the agent was killed by signal {}; {stderr}",
                    out.signal.unwrap_or(0)
                ),
            );
        };
        match code {
            3 | 10 | 11 => DeviceError::AuthFailed {
                address: self.label.clone(),
                detail: format!("agent {action} exit {code}; {stderr}"),
            },
            4 => DeviceError::Unreachable {
                address: self.label.clone(),
                reason: format!("agent {action} exit 4 (connection lost); {stderr}"),
            },
            _ => self.refused(
                action,
                format!("the agent exited with {code}{}; {stderr}", meaning(code)),
            ),
        }
    }

    /// Runs `metadata` and checks that every configured option is a parameter the agent knows,
    /// and that it can do `off`, `on` and `status`. Run at daemon start.
    pub async fn check_metadata(&self) -> Result<Metadata, String> {
        let out = self
            .run("metadata", None)
            .await
            .map_err(|e| format!("reading its metadata failed: {e}"))?;
        if out.code != Some(0) {
            return Err(format!(
                "`{} -o metadata` failed: {}",
                self.config.program.display(),
                self.failure("metadata", &out)
            ));
        }
        let meta = format::parse_metadata(&out.stdout).map_err(|e| {
            format!(
                "{} printed metadata that is not fence agent XML ({e}); is `agent` a ClusterLabs fence agent?",
                self.config.program.display()
            )
        })?;
        check_options(&meta, &self.config)?;
        Ok(meta)
    }
}

/// Checks configured options against the agent's metadata (pure, for tests).
pub fn check_options(meta: &Metadata, config: &AgentConfig) -> Result<(), String> {
    let names = config
        .options
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(config.secrets.iter().map(|(k, _)| k.as_str()));
    for n in names {
        if !meta.has_parameter(n) {
            return Err(format!(
                "option `{n}` is not a parameter of {} (its metadata lists: {}); remove it or fix its spelling",
                meta.name,
                meta.parameters
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for a in ["off", "on", "status"] {
        if !meta.has_action(a) {
            return Err(format!(
                "{} does not offer the `{a}` action; Palisade fences with off, confirms with status and unfences with on",
                meta.name
            ));
        }
    }
    Ok(())
}

fn meaning(code: i32) -> &'static str {
    match code {
        1 => " (generic error)",
        2 => " (bad arguments)",
        5 => " (timed out)",
        6 => " (timed out waiting for power on)",
        7 => " (timed out waiting for power off)",
        8 => " (could not read the plug's status, or no such plug)",
        9 => " (could not read the plug's status)",
        12 => " (no VM UUID for that plug)",
        _ => "",
    }
}

/// The warning for agents that put a password on another program's argv: by name, or by
/// finding `ipmitool` in the agent's own file (its symlinked and renamed copies).
fn argv_warning(program: &Path, name: &str, has_password: bool) -> Option<String> {
    if !has_password {
        return None;
    }
    let via = ARGV_LEAKERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, via)| (*via).to_string())
        .or_else(|| {
            let mut head = Vec::new();
            let f = std::fs::File::open(program).ok()?;
            std::io::Read::read_to_end(&mut std::io::Read::take(f, 256 * 1024), &mut head).ok()?;
            head.windows(8)
                .any(|w| w == b"ipmitool")
                .then(|| "ipmitool -P".to_string())
        })?;
    Some(format!(
        "{name} passes the password on the command line of {via}: any local user can read it in /proc/PID/cmdline while the agent runs; prefer kind = \"ipmi\" (native, no process, no argv)"
    ))
}

#[async_trait]
impl PowerDevice for AgentDevice {
    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError> {
        let out = self.run("status", port).await?;
        match out.code {
            Some(0) => Ok(PowerState::On),
            Some(2) => Ok(PowerState::Off),
            _ => Err(self.failure("status", &out)),
        }
    }

    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        let action = command.to_string();
        let out = self.run(&action, port).await?;
        if out.code != Some(0) {
            return Err(self.failure(&action, &out));
        }
        if command == PowerCommand::On {
            return Ok(());
        }
        // An agent's "Success: Powered OFF" is a claim, not proof (fence_ipmilan's cycle method
        // reports success against a BMC that ignored it): ask again with status.
        let check = self.run("status", port).await?;
        match check.code {
            Some(2) => Ok(()),
            Some(0) => Err(self.refused(
                "off",
                format!(
                    "the agent exited 0 for off, but its status then answered ON (exit 0): power was not switched off{}",
                    if out.stderr.is_empty() { String::new() } else { format!("; off's stderr: {}", out.stderr) }
                ),
            )),
            _ => Err(self.failure("status (after off)", &check)),
        }
    }

    async fn list(&self) -> Result<Vec<Outlet>, DeviceError> {
        let out = self.run("list", None).await?;
        if out.code != Some(0) {
            return Err(self.failure("list", &out));
        }
        match format::parse_list(&out.stdout) {
            Ok(Some(entries)) => Ok(entries
                .into_iter()
                .map(|e| Outlet {
                    id: e.plug,
                    name: e.alias,
                    state: None,
                })
                .collect()),
            Ok(None) => Err(DeviceError::Unsupported {
                operation: format!("listing plugs ({} has none)", self.label),
            }),
            Err(e) => Err(DeviceError::Protocol {
                address: self.label.clone(),
                detail: format!("agent list printed {e}"),
            }),
        }
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        let out = self.run("monitor", None).await?;
        if out.code != Some(0) {
            return Err(self.failure("monitor", &out));
        }
        Ok(Identity {
            kind: "agent".into(),
            value: self.label.clone(),
            description: format!(
                "ClusterLabs fence agent {} (monitor answered)",
                self.config.program.display()
            ),
        })
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}
