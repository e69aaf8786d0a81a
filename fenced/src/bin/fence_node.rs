//! `fence_node`: the operator command for the Palisade fencer daemon.

use clap::{Args, Parser, Subcommand};
use fenced::client::{encode, Client, ClientError, Endpoint};
use fenced::config::DEFAULT_SOCKET;
use fenced::model::*;
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Success; for fencing verbs: the target is confirmed fenced (or powered on, for `on`).
const EXIT_OK: u8 = 0;
/// The operation finished without confirmation: the target is NOT fenced.
const EXIT_FAILED: u8 = 1;
// 2 is clap's exit status for usage errors; it is also used for usage refused at run time.
const EXIT_USAGE: u8 = 2;
/// The daemon refused the request (conflict, paused, rate-limited, unknown name, forbidden).
const EXIT_REFUSED: u8 = 3;
/// The daemon could not be reached, did not answer in time, or answered with an internal error.
const EXIT_UNREACHABLE: u8 = 4;

const EXIT_HELP: &str = "\
Exit status:
  0  success; for off/reboot: the node is confirmed fenced (a reboot that fenced but did not
     power back on still exits 0 and says so); for on: confirmed powered on
  1  the operation finished WITHOUT confirmation: treat the node as NOT fenced
     (also: devices --check found an unhealthy device, confirm declined at the prompt)
  2  bad usage (unknown option, missing argument, confirm without a terminal and without --yes)
  3  refused by the daemon: conflict, paused, rate-limited, unknown target/device, forbidden,
     invalid request
  4  the daemon is unreachable, did not answer in time, or failed internally

Environment:
  PALISADE_SOCKET      the daemon's Unix socket when --socket is not given
  PALISADE_TOKEN_FILE  a file holding the bearer token when --token-file is not given";

#[derive(Parser)]
#[command(
    name = "fence_node",
    version,
    about = "Fence (power off, reboot, power on) cluster nodes through the Palisade fencer daemon, and inspect its targets, devices and history.",
    after_help = EXIT_HELP
)]
struct Cli {
    /// The daemon's Unix socket [default: $PALISADE_SOCKET, else /run/palisade/fenced.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Talk to the daemon's TCP listener instead: https://HOST:PORT (with --ca), or
    /// http://127.0.0.1:7420 on loopback.
    #[arg(long, global = true, value_name = "URL", conflicts_with = "socket")]
    url: Option<String>,
    /// PEM file of the CA that signed the daemon's certificate (for https URLs).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// File holding a bearer token from `fenced token create` (mode 0600)
    /// [default: $PALISADE_TOKEN_FILE]. Tokens are never taken on the command line, where
    /// other users could read them.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON answer on stdout instead of text (errors too).
    #[arg(long, global = true)]
    json: bool,
    /// Timeout for each API request, seconds.
    #[arg(long, global = true, value_name = "S", default_value_t = 30)]
    api_timeout: u64,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Args)]
struct FenceArgs {
    /// The target node, as named in the daemon's configuration.
    node: String,
    /// Why (recorded in history).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Idempotency key: repeating a request with the same id returns the same operation.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Give up after this many seconds (also the operation's deadline on the daemon).
    #[arg(long, value_name = "S")]
    timeout: Option<u64>,
    /// Return once the daemon accepted the request; do not wait for the outcome.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand)]
enum Verb {
    /// Power the node off and confirm it is off.
    Off(FenceArgs),
    /// Power off, confirm off, then power on (never a power cycle).
    Reboot(FenceArgs),
    /// Power the node on (unfence).
    On(FenceArgs),
    /// Show all targets, or one target (with --live: read its power state now).
    Status {
        /// One target.
        node: Option<String>,
        /// Read every level device's power state now (needs NODE).
        #[arg(long, requires = "node")]
        live: bool,
    },
    /// Show operations, newest first.
    History {
        /// Only this target.
        node: Option<String>,
        /// Only since: a duration back from now (90s, 30m, 2h, 7d) or a UTC time
        /// (2026-11-23T15:04:05Z, 2026-11-23) or milliseconds since the epoch.
        #[arg(long, value_name = "DURATION|TIMESTAMP")]
        since: Option<String>,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Show the ledger's audit records (who, from where, what, why, outcome) instead.
        #[arg(long)]
        audit: bool,
        /// Verify the ledger's hash chain and signatures; exit 1 and name the first bad record
        /// if anything was removed or changed.
        #[arg(long)]
        verify: bool,
    },
    /// Show devices and their last health check (with --check: check them now).
    Devices {
        /// Check every device now; exit 1 if any is unhealthy.
        #[arg(long)]
        check: bool,
    },
    /// Record by hand that NODE is powered off (audited; only when you checked it yourself).
    Confirm {
        /// The target node.
        node: String,
        /// What you checked (recorded with your identity).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Do not ask; required when there is no terminal.
        #[arg(long)]
        yes: bool,
    },
    /// Pause fencing: new operations are refused until resumed.
    Pause {
        /// Why (recorded).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Resume fencing.
    Resume {
        /// Why (recorded).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let endpoint = match &cli.url {
        Some(u) => match Endpoint::from_url(u) {
            Ok(e) => e,
            Err(msg) => {
                eprintln!("fence_node: --url: {msg}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => Endpoint::Unix(cli.socket.clone().unwrap_or_else(|| {
            std::env::var_os("PALISADE_SOCKET")
                .filter(|s| !s.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
        })),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fence_node: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let mut client = Client::new(endpoint, Duration::from_secs(cli.api_timeout.max(1)));
    if let Some(ca) = &cli.ca {
        match fenced::client::tls_config(ca) {
            Ok(cfg) => client = client.with_tls(cfg),
            Err(msg) => {
                eprintln!("fence_node: --ca: {msg}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let token_file = cli.token_file.clone().or_else(|| {
        std::env::var_os("PALISADE_TOKEN_FILE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    });
    if let Some(f) = &token_file {
        match fenced::client::read_token_file(f) {
            Ok(t) => client = client.with_token(t),
            Err(msg) => {
                eprintln!("fence_node: token file: {msg}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let ui = Ui {
        client,
        json: cli.json,
    };
    ExitCode::from(rt.block_on(ui.run(cli.verb)))
}

struct Ui {
    client: Client,
    json: bool,
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

impl Ui {
    async fn run(&self, verb: Verb) -> u8 {
        let r = match verb {
            Verb::Off(a) => self.fence(Action::Off, a).await,
            Verb::Reboot(a) => self.fence(Action::Reboot, a).await,
            Verb::On(a) => self.fence(Action::On, a).await,
            Verb::Status { node, live } => self.status(node, live).await,
            Verb::History {
                node,
                since,
                limit,
                audit,
                verify,
            } => {
                if verify {
                    self.verify_ledger().await
                } else if audit {
                    self.audit(limit).await
                } else {
                    self.history(node, since, limit).await
                }
            }
            Verb::Devices { check } => self.devices(check).await,
            Verb::Confirm { node, reason, yes } => self.confirm(&node, &reason, yes).await,
            Verb::Pause { reason } => self.pause(true, &reason).await,
            Verb::Resume { reason } => self.pause(false, &reason).await,
        };
        r.unwrap_or_else(|e| self.report(e))
    }

    /// Prints a client error and returns its exit status.
    fn report(&self, e: ClientError) -> u8 {
        let (code, json) = match &e {
            ClientError::Api {
                status,
                error,
                json,
            } => {
                let refused = *status < 500 || error.code == "paused";
                (
                    if refused {
                        EXIT_REFUSED
                    } else {
                        EXIT_UNREACHABLE
                    },
                    json.clone(),
                )
            }
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } => (
                EXIT_UNREACHABLE,
                json!({"error": {"code": "unreachable", "message": e.to_string(), "hint": "start fenced, or point fence_node at it with --socket or --url"}}),
            ),
            ClientError::Protocol { .. } => (
                EXIT_UNREACHABLE,
                json!({"error": {"code": "protocol", "message": e.to_string(), "hint": "check that --socket/--url points at fenced"}}),
            ),
        };
        if self.json {
            print_json(&json);
        }
        match &e {
            ClientError::Api { error, .. } => {
                eprintln!("fence_node: refused: {}", error.message);
                eprintln!("  hint: {}", error.hint);
            }
            _ => eprintln!("fence_node: {e}"),
        }
        code
    }

    async fn fence(&self, action: Action, a: FenceArgs) -> Result<u8, ClientError> {
        let reason = a.reason.clone().unwrap_or_else(|| {
            format!(
                "fence_node {action} by {}",
                std::env::var("USER").unwrap_or_else(|_| "unknown user".into())
            )
        });
        let req = FenceRequest {
            target: a.node.clone(),
            action,
            reason,
            request_id: a.request_id.clone(),
            timeout_s: a.timeout,
        };
        let body = serde_json::to_value(&req).map_err(|e| ClientError::Protocol {
            detail: e.to_string(),
        })?;
        let (accepted, raw): (FenceAccepted, Value) = self
            .client
            .call_as("POST", "/v1/fence", Some(&body), None)
            .await?;
        if a.no_wait {
            if self.json {
                print_json(&raw);
            } else {
                println!(
                    "{} {action}: operation {} {} ({}); follow it with `fence_node status {}`",
                    a.node,
                    accepted.id,
                    if accepted.joined {
                        "joined (already in flight)"
                    } else {
                        "accepted"
                    },
                    accepted.state,
                    a.node
                );
            }
            return Ok(EXIT_OK);
        }
        if accepted.joined && !self.json {
            eprintln!(
                "{}: joined operation {} already in flight for {action}",
                a.node, accepted.id
            );
        }
        self.wait(&a.node, action, accepted.id, a.timeout).await
    }

    async fn wait(
        &self,
        node: &str,
        action: Action,
        id: u64,
        timeout: Option<u64>,
    ) -> Result<u8, ClientError> {
        let started = Instant::now();
        // The daemon enforces the operation's own deadline; ours only guards against waiting
        // forever on a daemon that stopped making progress.
        let limit = Duration::from_secs(timeout.map_or(24 * 3600, |t| t + 5));
        let progress = !self.json && std::io::stderr().is_terminal();
        let mut shown = false;
        loop {
            let left = limit.saturating_sub(started.elapsed());
            let wait = if progress {
                1.0
            } else {
                left.as_secs_f64().clamp(0.0, 300.0)
            };
            let path = format!("/v1/operations/{id}?wait={wait:.0}");
            let (op, raw): (Operation, Value) = self
                .client
                .call_as(
                    "GET",
                    &path,
                    None,
                    Some(Duration::from_secs_f64(wait) + Duration::from_secs(30)),
                )
                .await?;
            if progress {
                shown = true;
                let mut err = std::io::stderr();
                let _ = write!(
                    err,
                    "\r\x1b[K{node} {action}: {}  {:.1} s",
                    progress_line(&op),
                    started.elapsed().as_secs_f64()
                );
                let _ = err.flush();
            }
            if op.state.is_terminal() || started.elapsed() >= limit {
                if shown {
                    eprint!("\r\x1b[K");
                }
                if self.json {
                    print_json(&raw);
                }
                return Ok(final_line(node, action, &op, self.json));
            }
        }
    }

    async fn status(&self, node: Option<String>, live: bool) -> Result<u8, ClientError> {
        match node {
            Some(n) => {
                let path = format!("/v1/targets/{}?live={live}", encode(&n));
                let (t, raw): (TargetSummary, Value) =
                    self.client.call_as("GET", &path, None, None).await?;
                if self.json {
                    print_json(&raw);
                    return Ok(EXIT_OK);
                }
                println!("{}", t.name);
                for (i, level) in t.levels.iter().enumerate() {
                    println!("  level {}: {}", i + 1, level_names(level));
                }
                if t.delay_s > 0.0 || t.random_delay_s > 0.0 {
                    println!(
                        "  fence-race delay: {} s + up to {} s random",
                        t.delay_s, t.random_delay_s
                    );
                }
                if let Some(id) = t.in_flight {
                    println!("  in flight: operation {id}");
                }
                match &t.last_operation {
                    Some(op) => println!("  last: {}", op_line(op)),
                    None => println!("  last: never fenced"),
                }
                for p in t.live.iter().flatten() {
                    let port = p.port.as_ref().map_or(String::new(), |p| format!(":{p}"));
                    match (&p.state, &p.error) {
                        (Some(s), _) => {
                            println!("  power now: {s} (level {}, {}{port})", p.level, p.device)
                        }
                        (None, e) => println!(
                            "  power now: UNKNOWN (level {}, {}{port}): {}",
                            p.level,
                            p.device,
                            e.clone().unwrap_or_default()
                        ),
                    }
                }
            }
            None => {
                let (targets, raw): (Vec<TargetSummary>, Value) = self
                    .client
                    .call_as("GET", "/v1/targets", None, None)
                    .await?;
                let (pause, _): (PauseStatus, Value) =
                    self.client.call_as("GET", "/v1/pause", None, None).await?;
                if self.json {
                    print_json(&raw);
                    return Ok(EXIT_OK);
                }
                if pause.paused {
                    println!(
                        "fencing is PAUSED (by {}: {})",
                        pause.by.unwrap_or_default(),
                        pause.reason.unwrap_or_default()
                    );
                }
                let rows: Vec<[String; 3]> = targets
                    .iter()
                    .map(|t| {
                        let levels: Vec<String> = t.levels.iter().map(|l| level_names(l)).collect();
                        let last = match (t.in_flight, &t.last_operation) {
                            (Some(id), _) => format!("operation {id} in flight"),
                            (None, Some(op)) => op_line(op),
                            (None, None) => "never fenced".into(),
                        };
                        [t.name.clone(), levels.join(" | "), last]
                    })
                    .collect();
                table(&["TARGET", "LEVELS", "LAST OPERATION"], &rows);
            }
        }
        Ok(EXIT_OK)
    }

    async fn verify_ledger(&self) -> Result<u8, ClientError> {
        let (v, raw): (fenced::api::LedgerVerification, Value) = self
            .client
            .call_as("GET", "/v1/ledger/verify", None, None)
            .await?;
        if self.json {
            print_json(&raw);
        }
        match (&v.report, v.ok) {
            (Some(r), true) => {
                if !self.json {
                    println!(
                        "ledger intact: {} records ({} signed, {} unsigned from before signing), head {} {}",
                        r.records, r.signed, r.unsigned, r.head_seq, r.head_hash
                    );
                    if let Some(k) = &r.public_key {
                        println!("signed by {k}");
                    }
                }
                Ok(EXIT_OK)
            }
            _ => {
                eprintln!(
                    "fence_node: ledger NOT intact: first bad record {}: {}",
                    v.first_bad_seq.unwrap_or(0),
                    v.detail.unwrap_or_default()
                );
                Ok(EXIT_FAILED)
            }
        }
    }

    async fn audit(&self, limit: Option<u32>) -> Result<u8, ClientError> {
        let mut rows: Vec<[String; 7]> = Vec::new();
        let mut raws = Vec::new();
        let mut from = 1u64;
        loop {
            let (recs, raw): (Vec<fenced::history::LedgerRecord>, Value) = self
                .client
                .call_as(
                    "GET",
                    &format!("/v1/ledger?from_seq={from}&limit=1000"),
                    None,
                    None,
                )
                .await?;
            let n = recs.len();
            raws.push(raw);
            for r in recs {
                from = r.seq + 1;
                if let fenced::history::LedgerEntry::Audit {
                    at_ms,
                    who,
                    from: src,
                    what,
                    why,
                    outcome,
                } = r.entry
                {
                    rows.push([
                        r.seq.to_string(),
                        format_ms(at_ms),
                        who,
                        src,
                        what,
                        why,
                        outcome,
                    ]);
                }
            }
            if n < 1000 {
                break;
            }
        }
        if let Some(l) = limit {
            let skip = rows.len().saturating_sub(l as usize);
            rows.drain(..skip);
        }
        if self.json {
            print_json(&Value::Array(raws));
            return Ok(EXIT_OK);
        }
        table(
            &["SEQ", "AT (UTC)", "WHO", "FROM", "WHAT", "WHY", "OUTCOME"],
            &rows,
        );
        Ok(EXIT_OK)
    }

    async fn history(
        &self,
        node: Option<String>,
        since: Option<String>,
        limit: Option<u32>,
    ) -> Result<u8, ClientError> {
        let mut q = Vec::new();
        if let Some(n) = &node {
            q.push(format!("target={}", encode(n)));
        }
        if let Some(s) = &since {
            match parse_since(s, now_ms()) {
                Ok(ms) => q.push(format!("since_ms={ms}")),
                Err(msg) => {
                    eprintln!("fence_node: --since: {msg}");
                    return Ok(EXIT_USAGE);
                }
            }
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let path = if q.is_empty() {
            "/v1/history".to_string()
        } else {
            format!("/v1/history?{}", q.join("&"))
        };
        let (ops, raw): (Vec<Operation>, Value) =
            self.client.call_as("GET", &path, None, None).await?;
        if self.json {
            print_json(&raw);
            return Ok(EXIT_OK);
        }
        let rows: Vec<[String; 7]> = ops
            .iter()
            .map(|op| {
                [
                    op.id.to_string(),
                    format_ms(op.created_ms),
                    op.target.clone(),
                    op.action.to_string(),
                    op.state.to_string(),
                    op.requested_by.identity.clone(),
                    op_detail(op),
                ]
            })
            .collect();
        table(
            &[
                "ID",
                "CREATED (UTC)",
                "TARGET",
                "ACTION",
                "STATE",
                "BY",
                "DETAIL",
            ],
            &rows,
        );
        Ok(EXIT_OK)
    }

    async fn devices(&self, check: bool) -> Result<u8, ClientError> {
        let (mut devices, mut raw): (Vec<DeviceSummary>, Value) = self
            .client
            .call_as("GET", "/v1/devices", None, None)
            .await?;
        if check {
            let mut checked = Vec::new();
            let mut checked_raw = Vec::new();
            for d in &devices {
                let path = format!("/v1/devices/{}/monitor", encode(&d.name));
                let (c, r): (DeviceSummary, Value) =
                    self.client.call_as("POST", &path, None, None).await?;
                checked.push(c);
                checked_raw.push(r);
            }
            devices = checked;
            raw = Value::Array(checked_raw);
        }
        if self.json {
            print_json(&raw);
        } else {
            let rows: Vec<[String; 6]> = devices
                .iter()
                .map(|d| {
                    let health = match d.health {
                        HealthState::Healthy => "healthy",
                        HealthState::Unhealthy => "UNHEALTHY",
                        HealthState::Unknown => "unknown",
                    };
                    let what = match (&d.error, &d.identity) {
                        (Some(e), _) => e.clone(),
                        (None, Some(i)) => format!("{} {} ({})", i.kind, i.value, i.description),
                        (None, None) => String::new(),
                    };
                    [
                        d.name.clone(),
                        d.kind.clone(),
                        d.address.clone(),
                        health.to_string(),
                        d.targets.join(","),
                        what,
                    ]
                })
                .collect();
            table(
                &[
                    "DEVICE",
                    "KIND",
                    "ADDRESS",
                    "HEALTH",
                    "TARGETS",
                    "IDENTITY / ERROR",
                ],
                &rows,
            );
            for d in &devices {
                for w in &d.warnings {
                    println!("WARNING: device {}: {w}", d.name);
                }
            }
            for d in devices.iter().filter(|d| !d.outlets.is_empty()) {
                println!("\n{} outlets:", d.name);
                let rows: Vec<[String; 3]> = d
                    .outlets
                    .iter()
                    .map(|o| {
                        [
                            o.id.clone(),
                            o.name.clone().unwrap_or_default(),
                            o.state.clone().unwrap_or_else(|| "?".into()),
                        ]
                    })
                    .collect();
                table(&["OUTLET", "NAME", "STATE"], &rows);
            }
        }
        let unhealthy = devices.iter().any(|d| d.health == HealthState::Unhealthy);
        Ok(if check && unhealthy {
            EXIT_FAILED
        } else {
            EXIT_OK
        })
    }

    async fn confirm(&self, node: &str, reason: &str, yes: bool) -> Result<u8, ClientError> {
        if !yes {
            if !std::io::stdin().is_terminal() {
                eprintln!("fence_node: confirm: refusing to record a manual confirmation without asking; there is no terminal to ask on, so pass --yes if you are sure");
                return Ok(EXIT_USAGE);
            }
            eprint!("Record that {node} is powered OFF, confirmed by you by hand?\nIf it is in fact running, its workloads may run twice and corrupt data. [y/N] ");
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            if std::io::stdin().read_line(&mut answer).is_err()
                || !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
            {
                eprintln!("not confirmed");
                return Ok(EXIT_FAILED);
            }
        }
        let path = format!("/v1/targets/{}/confirm", encode(node));
        let body = json!({ "reason": reason });
        let (op, raw): (Operation, Value) = self
            .client
            .call_as("POST", &path, Some(&body), None)
            .await?;
        if self.json {
            print_json(&raw);
        } else {
            println!(
                "{node} recorded as FENCED by manual confirmation (operation {}, by {})",
                op.id, op.requested_by.identity
            );
        }
        Ok(EXIT_OK)
    }

    async fn pause(&self, paused: bool, reason: &str) -> Result<u8, ClientError> {
        let path = if paused { "/v1/pause" } else { "/v1/resume" };
        let body = json!({ "reason": reason });
        let (st, raw): (PauseStatus, Value) =
            self.client.call_as("POST", path, Some(&body), None).await?;
        if self.json {
            print_json(&raw);
        } else if st.paused {
            println!("fencing PAUSED: new operations are refused until `fence_node resume`");
        } else {
            println!("fencing resumed");
        }
        Ok(EXIT_OK)
    }
}

fn level_names(level: &[LevelDevice]) -> String {
    level
        .iter()
        .map(|d| match &d.port {
            Some(p) => format!("{}:{p}", d.device),
            None => d.device.clone(),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn progress_line(op: &Operation) -> String {
    match (op.state, op.attempts.last()) {
        (OpState::Delayed, _) => format!(
            "delayed (fence-race delay {:.1} s)",
            op.delay_ms as f64 / 1000.0
        ),
        // Steps are recorded when they finish: none yet means level 1 is being driven.
        (OpState::Running, None) => "running, level 1".to_string(),
        (s, Some(a)) => {
            let phase = match a.phase {
                Phase::Off => "off",
                Phase::On => "on",
            };
            let result = match &a.result {
                StepResult::Confirmed { .. } => "confirmed".to_string(),
                StepResult::Failed { code, .. } => format!("failed ({code})"),
            };
            format!(
                "{s}, last step: level {} {} {phase} {result}",
                a.level, a.device
            )
        }
        (s, None) => s.to_string(),
    }
}

fn secs(op: &Operation) -> String {
    op.elapsed_ms()
        .map_or_else(String::new, |ms| format!(" in {:.2} s", ms as f64 / 1000.0))
}

fn how(c: &Confirmation) -> String {
    match c {
        Confirmation::PowerReadBack {
            level,
            devices,
            already,
        } => format!(
            "power read back from {} (level {level}){}",
            devices.join(", "),
            if *already {
                ", already in that state before any command"
            } else {
                ""
            }
        ),
        Confirmation::PoisonPill {
            level,
            devices,
            msgwait_ms,
        } => format!(
            "poison pill written via {} (level {level}), read back, and msgwait ({:.1} s) elapsed",
            devices.join(", "),
            *msgwait_ms as f64 / 1000.0
        ),
        Confirmation::SlotCleared { level, devices } => format!(
            "SBD slot cleared and read back via {} (level {level})",
            devices.join(", ")
        ),
        Confirmation::Manual { by, reason } => format!("confirmed by hand by {by}: {reason}"),
    }
}

/// Prints the outcome line and returns the exit status.
fn final_line(node: &str, action: Action, op: &Operation, json: bool) -> u8 {
    let (line, code) = match &op.outcome {
        Some(Outcome::Succeeded {
            confirmation,
            powered_on,
            ..
        }) => {
            let how = how(confirmation);
            let line = match (action, powered_on) {
                (Action::On, _) => format!("{node} POWERED ON: {how}{}", secs(op)),
                (Action::Reboot, Some(false)) => format!(
                    "{node} FENCED, but did NOT come back on: {}{}",
                    outcome_summary(op),
                    secs(op)
                ),
                (Action::Reboot, _) => {
                    format!("{node} FENCED and powered back on: {how}{}", secs(op))
                }
                (Action::Off, _) => format!("{node} FENCED: {how}{}", secs(op)),
            };
            (line, EXIT_OK)
        }
        Some(Outcome::Failed { code, message }) => {
            let what = if action == Action::On {
                "NOT POWERED ON"
            } else {
                "NOT FENCED"
            };
            (
                format!("{node} {what} ({code}): {message}{}", secs(op)),
                EXIT_FAILED,
            )
        }
        None => (
            format!(
                "{node} NOT FENCED (yet): operation {} is still {} after the client's timeout; follow it with `fence_node status {node}`",
                op.id, op.state
            ),
            EXIT_FAILED,
        ),
    };
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    code
}

fn outcome_summary(op: &Operation) -> String {
    match &op.outcome {
        Some(Outcome::Succeeded { summary, .. }) => summary.clone(),
        Some(Outcome::Failed { message, .. }) => message.clone(),
        None => String::new(),
    }
}

fn op_detail(op: &Operation) -> String {
    match &op.outcome {
        Some(Outcome::Succeeded { summary, .. }) => summary.clone(),
        Some(Outcome::Failed { code, message }) => format!("{code}: {message}"),
        None => op.reason.clone(),
    }
}

fn op_line(op: &Operation) -> String {
    format!(
        "#{} {} {} at {} by {}",
        op.id,
        op.action,
        op.state,
        format_ms(op.created_ms),
        op.requested_by.identity
    )
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut width = [0usize; N];
    for (i, h) in header.iter().enumerate() {
        width[i] = h.len();
    }
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `--since`: `90s`/`30m`/`2h`/`7d` back from `now`, a UTC date or date-time, or epoch ms.
fn parse_since(s: &str, now: u64) -> Result<u64, String> {
    let bad = || {
        format!("expected a duration like 30m, 2h, 7d, a UTC time like 2026-11-23T15:04:05Z or 2026-11-23, or epoch milliseconds; found `{s}`")
    };
    if let Some(unit) = s.chars().last().filter(|c| "smhd".contains(*c)) {
        if let Ok(n) = s[..s.len() - 1].parse::<u64>() {
            let mult = match unit {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                _ => 86_400_000,
            };
            return Ok(now.saturating_sub(n.saturating_mul(mult)));
        }
    }
    if s.len() >= 11 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let s2 = s.trim_end_matches('Z');
    let (date, time) = match s2.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s2, None),
    };
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let dp: Vec<&str> = date.split('-').collect();
    let [y, mo, d] = dp.as_slice() else {
        return Err(bad());
    };
    let (y, mo, d) = (num(y)?, num(mo)?, num(d)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    if let Some(t) = time {
        let tp: Vec<&str> = t.split(':').collect();
        let (h, mi, se) = match tp.as_slice() {
            [h, m] => (num(h)?, num(m)?, 0),
            [h, m, s] => (num(h)?, num(m)?, num(s.split('.').next().unwrap_or("0"))?),
            _ => return Err(bad()),
        };
        if h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + se;
    }
    u64::try_from(secs).map(|s| s * 1000).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_durations_and_times() {
        assert_eq!(parse_since("90s", 100_000), Ok(10_000));
        assert_eq!(parse_since("2h", 10_000_000), Ok(2_800_000));
        assert_eq!(parse_since("1970-01-02", 0), Ok(86_400_000));
        assert_eq!(
            parse_since("2026-11-23T15:04:05Z", 0),
            Ok(1_795_446_245_000)
        );
        assert!(parse_since("yesterday", 0).is_err());
        assert_eq!(format_ms(1_795_446_245_000), "2026-11-23 15:04:05");
    }
}
