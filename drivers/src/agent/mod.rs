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

pub mod error;
pub mod format;

pub use error::AgentError;

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

    /// Runs the agent once with `action`, bounded by the configured deadline.
    async fn run(&self, action: &str, port: Option<&str>) -> Result<RunOutput, AgentError> {
        let mut input = zeroize::Zeroizing::new(Vec::new());
        let policy = |source: format::FormatError| AgentError::Encode {
            agent: self.label.clone(),
            source,
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
        let mut child = cmd.spawn().map_err(|e| AgentError::Spawn {
            agent: self.label.clone(),
            program: self.config.program.clone(),
            reason: e.to_string(),
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
            Ok(Err(e)) => Err(AgentError::Wait {
                agent: self.label.clone(),
                action: action.to_string(),
                reason: e.to_string(),
            }),
            Err(_) => {
                drop(guard);
                // Reaps the killed agent; its exit status says nothing more than the timeout.
                let _ = child.wait().await;
                Err(AgentError::Timeout {
                    agent: self.label.clone(),
                    action: action.to_string(),
                    timeout_ms: u64::try_from(self.config.timeout.as_millis()).unwrap_or(u64::MAX),
                    stderr: scrubbed,
                })
            }
        }
    }

    /// The error for a run of `action` that did not exit with success.
    fn failure(&self, action: &str, out: &RunOutput) -> AgentError {
        let (agent, action, stderr) = (self.label.clone(), action.to_string(), out.stderr.clone());
        match out.code {
            Some(code) => AgentError::Exit {
                agent,
                action,
                code,
                stderr,
            },
            None => AgentError::Signal {
                agent,
                action,
                signal: out.signal.unwrap_or(0),
                stderr,
            },
        }
    }

    /// Runs `metadata` and checks that every configured option is a parameter the agent knows,
    /// and that it can do `off`, `on` and `status`. Run at daemon start.
    pub async fn check_metadata(&self) -> Result<Metadata, AgentError> {
        let program = &self.config.program;
        let out = self
            .run("metadata", None)
            .await
            .map_err(|e| AgentError::Metadata {
                program: program.clone(),
                source: Box::new(e),
            })?;
        if out.code != Some(0) {
            return Err(AgentError::Metadata {
                program: program.clone(),
                source: Box::new(self.failure("metadata", &out)),
            });
        }
        let meta =
            format::parse_metadata(&out.stdout).map_err(|source| AgentError::BadMetadata {
                program: program.clone(),
                source,
            })?;
        check_options(&meta, &self.config)?;
        Ok(meta)
    }
}

/// Checks configured options against the agent's metadata (pure, for tests).
pub fn check_options(meta: &Metadata, config: &AgentConfig) -> Result<(), AgentError> {
    let names = config
        .options
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(config.secrets.iter().map(|(k, _)| k.as_str()));
    for n in names {
        if !meta.has_parameter(n) {
            return Err(AgentError::UnknownOption {
                agent: meta.name.clone(),
                option: n.to_string(),
                known: meta
                    .parameters
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    for a in ["off", "on", "status"] {
        if !meta.has_action(a) {
            return Err(AgentError::MissingAction {
                agent: meta.name.clone(),
                action: a.to_string(),
            });
        }
    }
    Ok(())
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

impl AgentDevice {
    async fn status_of(&self, port: Option<&str>) -> Result<PowerState, AgentError> {
        let out = self.run("status", port).await?;
        match out.code {
            Some(0) => Ok(PowerState::On),
            Some(2) => Ok(PowerState::Off),
            _ => Err(self.failure("status", &out)),
        }
    }

    async fn switch(&self, port: Option<&str>, command: PowerCommand) -> Result<(), AgentError> {
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
            Some(0) => Err(AgentError::OffNotConfirmed {
                agent: self.label.clone(),
                off_stderr: (!out.stderr.is_empty()).then(|| out.stderr.clone()),
            }),
            _ => Err(self.failure("status (after off)", &check)),
        }
    }

    async fn plugs(&self) -> Result<Vec<Outlet>, AgentError> {
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
            Ok(None) => Err(AgentError::NoPlugs {
                agent: self.label.clone(),
            }),
            Err(source) => Err(AgentError::BadList {
                agent: self.label.clone(),
                source,
            }),
        }
    }

    async fn monitor(&self) -> Result<Identity, AgentError> {
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
}

#[async_trait]
impl PowerDevice for AgentDevice {
    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError> {
        Ok(self.status_of(port).await?)
    }

    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        Ok(self.switch(port, command).await?)
    }

    async fn list(&self) -> Result<Vec<Outlet>, DeviceError> {
        Ok(self.plugs().await?)
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        Ok(self.monitor().await?)
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}
