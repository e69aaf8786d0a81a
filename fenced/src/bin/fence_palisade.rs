//! `fence_palisade`: a ClusterLabs fence agent (the API Pacemaker's fencer runs) that forwards
//! every action to the Palisade fencer daemon and reports success only for an operation the
//! daemon finished with confirmation.
//!
//! Options come as `name=value` lines on stdin (how Pacemaker runs agents) or, when there are
//! arguments, as `--name=value` / `--name value` flags (`-o` action, `-n` plug). The options'
//! table, the actions and the usage text are in [`fenced::cli::fence_palisade`].

use drivers::agent::format::{parse_options, FormatError};
use drivers::PowerState;
use fenced::cli::fence_palisade::{ACTIONS, LONGDESC, SHORTDESC, USAGE, VALUE_OPTIONS};
use fenced::client::{
    encode, Client, ClientError, Endpoint, TlsConfigError, TokenFileError, UrlError,
};
use fenced::config::DEFAULT_SOCKET;
use fenced::model::{Action, FenceAccepted, FenceRequest, Operation, Outcome, TargetSummary};
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

// Exit codes of the fence agent API (as fence-agents' library uses them).
const EC_OK: u8 = 0;
const EC_GENERIC_ERROR: u8 = 1;
/// `status`: the plug is off.
const EC_STATUS_OFF: u8 = 2;

/// The parsed options.
#[derive(Debug, Default)]
struct Opts {
    action: Option<String>,
    plug: Option<String>,
    nodename: Option<String>,
    socket: Option<PathBuf>,
    url: Option<String>,
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    fence_timeout: Option<u64>,
    api_timeout: Option<u64>,
    help: bool,
    version: bool,
}

/// Why the options (flags or stdin lines) were not accepted.
#[derive(Debug, thiserror::Error)]
enum OptionsError {
    /// stdin could not be read.
    #[error("cannot read options on stdin: {0}; pass name=value lines on stdin, or flags")]
    Stdin(#[source] std::io::Error),
    /// A stdin line is not `name=value`.
    #[error("stdin: {0}")]
    Lines(#[from] FormatError),
    /// A number of seconds that is not one.
    #[error("{name}: expected a whole number of seconds, found `{value}`")]
    Seconds {
        /// The option.
        name: String,
        /// What was given.
        value: String,
    },
    /// A flag this agent does not have.
    #[error("unknown option --{}; see the usage below", .0.replace('_', "-"))]
    Unknown(String),
    /// A short flag this agent does not have.
    #[error("unknown option -{0}; see the usage below")]
    UnknownShort(char),
    /// `-` alone.
    #[error("a lone `-` is not an option; options are --name=value")]
    LoneDash,
    /// An argument that is not an option.
    #[error("unexpected argument `{0}`; options are --name=value")]
    Unexpected(String),
    /// An option given last without its value.
    #[error("--{} needs a value", .0.replace('_', "-"))]
    NeedsValue(String),
}

/// Why no client could be set up for the daemon.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    /// `url` does not parse.
    #[error("url: {0}")]
    Url(#[from] UrlError),
    /// `ca_file` cannot be used.
    #[error("ca_file: {0}")]
    Ca(#[from] TlsConfigError),
    /// An `https://` url without `ca_file`.
    #[error("an https url needs ca_file (the CA that signed fenced's certificate)")]
    HttpsWithoutCa,
    /// `token_file` cannot be used.
    #[error("token_file: {0}")]
    TokenFile(#[from] TokenFileError),
}

/// Why an action that talks to the daemon did not reach an outcome.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// A target is needed and none was given.
    #[error("no target: give plug=NODE (or nodename=NODE)")]
    NoTarget,
    /// An action that reached the fencing path without being one (a bug in this agent).
    #[error("`{0}` is not a fencing action; use off, on or reboot")]
    NotFencing(String),
    /// The request failed or was refused.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Why a target's power cannot be given as on or off.
#[derive(Debug, thiserror::Error)]
enum PowerUnknown {
    /// None of its devices can read power (e.g. SBD only).
    #[error("{0} has no device that can read its power")]
    NoReader(String),
    /// Some device did not answer, or answered neither on nor off.
    #[error("{0}")]
    Unread(String),
}

fn set(o: &mut Opts, name: &str, value: String, strict: bool) -> Result<(), OptionsError> {
    let num = |v: &str| {
        v.parse::<u64>().map_err(|_| OptionsError::Seconds {
            name: name.to_string(),
            value: v.to_string(),
        })
    };
    match name {
        "action" | "option" => o.action = Some(value),
        "plug" | "port" => o.plug = Some(value),
        "nodename" => o.nodename = Some(value),
        "socket" => o.socket = Some(value.into()),
        "url" => o.url = Some(value),
        "ca_file" => o.ca_file = Some(value.into()),
        "token_file" => o.token_file = Some(value.into()),
        "fence_timeout" => o.fence_timeout = Some(num(&value)?),
        "api_timeout" => o.api_timeout = Some(num(&value)?),
        "help" => o.help = true,
        "version" => o.version = true,
        // Verbosity and debug files change nothing here; accepted so generic callers work.
        "verbose" | "debug" | "debug_file" | "delay" => {}
        other if strict => return Err(OptionsError::Unknown(other.to_string())),
        other => drivers::errln!("fence_palisade: ignoring unknown option `{other}`"),
    }
    Ok(())
}

/// Parses command-line flags.
fn parse_args(args: &[String]) -> Result<Opts, OptionsError> {
    let mut o = Opts::default();
    let mut i = 0;
    let takes_value = |n: &str| {
        VALUE_OPTIONS.iter().any(|(v, _, _, _)| *v == n)
            || matches!(n, "port" | "nodename" | "option" | "debug_file" | "delay")
    };
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let (name, inline) = if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n.replace('-', "_"), Some(v.to_string())),
                None => (long.replace('-', "_"), None),
            }
        } else if let Some(short) = a.strip_prefix('-') {
            let mut cs = short.chars();
            let c = cs.next().ok_or(OptionsError::LoneDash)?;
            let rest: String = cs.collect();
            let name = match c {
                'h' => "help".to_string(),
                'V' => "version".to_string(),
                'v' => "verbose".to_string(),
                _ => VALUE_OPTIONS
                    .iter()
                    .find(|(_, s, _, _)| *s == Some(c))
                    .map(|(n, _, _, _)| (*n).to_string())
                    .ok_or(OptionsError::UnknownShort(c))?,
            };
            (name, (!rest.is_empty()).then_some(rest))
        } else {
            return Err(OptionsError::Unexpected(a.clone()));
        };
        let value = if takes_value(&name) {
            match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| OptionsError::NeedsValue(name.clone()))?;
                    i += 1;
                    v.clone()
                }
            }
        } else {
            inline.unwrap_or_else(|| "1".into())
        };
        set(&mut o, &name, value, true)?;
    }
    Ok(o)
}

fn metadata() -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" ?>\n<resource-agent name=\"fence_palisade\" shortdesc=\"{SHORTDESC}\" >\n<longdesc>{LONGDESC}</longdesc>\n<vendor-url>https://github.com/palisade</vendor-url>\n<parameters>\n"
    );
    let mut param = |name: &str, flag: &str, ty: &str, desc: &str, extra: &str, default: &str| {
        x.push_str(&format!(
            "\t<parameter name=\"{name}\" unique=\"0\" required=\"0\"{extra}>\n\t\t<getopt mixed=\"{flag}\" />\n\t\t<content type=\"{ty}\"{default} />\n\t\t<shortdesc lang=\"en\">{}</shortdesc>\n\t</parameter>\n",
            desc.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
        ));
    };
    for (name, short, ty, desc) in VALUE_OPTIONS {
        let flag = match short {
            Some(c) => format!("-{c}, --{}=[{name}]", name.replace('_', "-")),
            None => format!("--{}=[{name}]", name.replace('_', "-")),
        };
        let default = if *name == "action" {
            " default=\"reboot\""
        } else {
            ""
        };
        param(name, &flag, ty, desc, "", default);
        if *name == "plug" {
            // `port` is the old name of `plug`; Pacemaker passes the target as `port` by default.
            param(
                "port",
                "-n, --plug=[plug]",
                ty,
                desc,
                " deprecated=\"1\"",
                "",
            );
        }
    }
    x.push_str("</parameters>\n<actions>\n");
    for a in ACTIONS {
        if *a == "on" {
            x.push_str("\t<action name=\"on\" automatic=\"0\"/>\n");
        } else {
            x.push_str(&format!("\t<action name=\"{a}\" />\n"));
        }
    }
    x.push_str("</actions>\n</resource-agent>\n");
    x
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = if args.is_empty() {
        match options_from_stdin() {
            Ok(o) => o,
            Err(e) => {
                drivers::errln!("fence_palisade: {e}");
                return ExitCode::from(EC_GENERIC_ERROR);
            }
        }
    } else {
        match parse_args(&args) {
            Ok(o) => o,
            Err(e) => {
                drivers::errln!("fence_palisade: {e}\n{USAGE}");
                return ExitCode::from(EC_GENERIC_ERROR);
            }
        }
    };
    if opts.help {
        drivers::outln!("{USAGE}");
        return ExitCode::from(EC_OK);
    }
    if opts.version {
        drivers::outln!("fence_palisade {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::from(EC_OK);
    }
    let action = opts.action.clone().unwrap_or_else(|| "reboot".into());
    if !ACTIONS.contains(&action.as_str()) {
        drivers::errln!(
            "fence_palisade: unknown action `{action}`; expected one of: {}",
            ACTIONS.join(", ")
        );
        return ExitCode::from(EC_GENERIC_ERROR);
    }
    if action == "metadata" {
        drivers::out!("{}", metadata());
        return ExitCode::from(EC_OK);
    }
    let client = match client(&opts) {
        Ok(c) => c,
        Err(e) => {
            drivers::errln!("fence_palisade: {e}");
            return ExitCode::from(EC_GENERIC_ERROR);
        }
    };
    if action == "validate-all" {
        return ExitCode::from(EC_OK);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            drivers::errln!("fence_palisade: cannot start the async runtime: {e}");
            return ExitCode::from(EC_GENERIC_ERROR);
        }
    };
    let code = rt
        .block_on(run(&client, &action, &opts))
        .unwrap_or_else(|e| {
            drivers::errln!("Failed: {e}");
            EC_GENERIC_ERROR
        });
    ExitCode::from(code)
}

/// Reads `name=value` lines from stdin (at most 1 MiB), as Pacemaker passes them.
fn options_from_stdin() -> Result<Opts, OptionsError> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_end(&mut input)
        .map_err(OptionsError::Stdin)?;
    let mut o = Opts::default();
    for (k, v) in parse_options(&input)? {
        set(&mut o, &k, v, false)?;
    }
    Ok(o)
}

fn client(o: &Opts) -> Result<Client, SetupError> {
    let endpoint = match &o.url {
        Some(u) => Endpoint::from_url(u)?,
        None => Endpoint::Unix(
            o.socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        ),
    };
    let https = matches!(endpoint, Endpoint::Https(_));
    let mut c = Client::new(
        endpoint,
        Duration::from_secs(o.api_timeout.unwrap_or(30).max(1)),
    );
    match (&o.ca_file, https) {
        (Some(ca), _) => c = c.with_tls(fenced::client::tls_config(ca)?),
        (None, true) => return Err(SetupError::HttpsWithoutCa),
        (None, false) => {}
    }
    if let Some(f) = &o.token_file {
        c = c.with_token(fenced::client::read_token_file(f)?);
    }
    Ok(c)
}

fn target(o: &Opts) -> Result<String, RunError> {
    o.plug
        .clone()
        .or_else(|| o.nodename.clone())
        .filter(|t| !t.is_empty())
        .ok_or(RunError::NoTarget)
}

/// A target's power as the agent API reports it: on if any device reads on, off only if every
/// device answered and all read off.
fn power_of(t: &TargetSummary) -> Result<bool, PowerUnknown> {
    let live = t.live.as_deref().unwrap_or_default();
    if live.is_empty() {
        return Err(PowerUnknown::NoReader(t.name.clone()));
    }
    if live.iter().any(|p| p.state == Some(PowerState::On)) {
        return Ok(true);
    }
    if live.iter().all(|p| p.state == Some(PowerState::Off)) {
        return Ok(false);
    }
    Err(PowerUnknown::Unread(
        live.iter()
            .filter_map(|p| {
                p.error
                    .clone()
                    .or_else(|| p.state.map(|s| format!("{}: {s}", p.device)))
            })
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

async fn run(c: &Client, action: &str, o: &Opts) -> Result<u8, RunError> {
    match action {
        "monitor" => {
            c.call("GET", "/v1/targets", None, None).await?;
            Ok(EC_OK)
        }
        "list" | "list-status" => {
            let (targets, _): (Vec<TargetSummary>, Value) =
                c.call_as("GET", "/v1/targets", None, None).await?;
            for t in targets {
                if action == "list" {
                    drivers::outln!("{},{}", t.name, t.name);
                } else {
                    let path = format!("/v1/targets/{}?live=true", encode(&t.name));
                    let (d, _): (TargetSummary, Value) =
                        c.call_as("GET", &path, None, None).await?;
                    let s = match power_of(&d) {
                        Ok(true) => "ON",
                        Ok(false) => "OFF",
                        Err(_) => "UNKNOWN",
                    };
                    drivers::outln!("{},{},{s}", t.name, t.name);
                }
            }
            Ok(EC_OK)
        }
        "status" => {
            let t = target(o)?;
            let path = format!("/v1/targets/{}?live=true", encode(&t));
            let (d, _): (TargetSummary, Value) = c.call_as("GET", &path, None, None).await?;
            match power_of(&d) {
                Ok(true) => {
                    drivers::outln!("Status: ON");
                    Ok(EC_OK)
                }
                Ok(false) => {
                    drivers::outln!("Status: OFF");
                    Ok(EC_STATUS_OFF)
                }
                Err(e) => {
                    drivers::errln!("Failed: Unable to obtain correct plug status: {e}");
                    Ok(EC_GENERIC_ERROR)
                }
            }
        }
        _ => match Action::parse(action) {
            Some(act) => fence(c, action, o, act).await,
            None => Err(RunError::NotFencing(action.to_string())),
        },
    }
}

async fn fence(c: &Client, action: &str, o: &Opts, act: Action) -> Result<u8, RunError> {
    let target = target(o)?;
    let req = FenceRequest {
        target: target.clone(),
        action: act,
        reason: format!(
            "fence_palisade {action} (cluster fence agent API{})",
            o.nodename
                .as_ref()
                .map_or(String::new(), |n| format!(", nodename={n}"))
        ),
        request_id: None,
        timeout_s: o.fence_timeout,
    };
    let body = serde_json::to_value(&req).map_err(|e| ClientError::Protocol {
        detail: format!("cannot encode the fence request: {e}"),
    })?;
    let (accepted, _): (FenceAccepted, Value) =
        c.call_as("POST", "/v1/fence", Some(&body), None).await?;
    let started = Instant::now();
    // fenced enforces the operation's deadline; the caller (Pacemaker) enforces its own and
    // kills us. This bound only stops an endless wait on a daemon that stopped progressing.
    let limit = Duration::from_secs(o.fence_timeout.map_or(24 * 3600, |t| t + 30));
    loop {
        let path = format!("/v1/operations/{}?wait=30", accepted.id);
        let (op, _): (Operation, Value) = c
            .call_as("GET", &path, None, Some(Duration::from_secs(60)))
            .await?;
        if op.state.is_terminal() {
            return Ok(report(action, &target, &op));
        }
        if started.elapsed() >= limit {
            drivers::errln!(
                "Failed: operation {} for {target} is still {} after {} s: NOT confirmed",
                op.id,
                op.state,
                started.elapsed().as_secs()
            );
            return Ok(EC_GENERIC_ERROR);
        }
    }
}

/// Prints the outcome as agents do and returns the exit code: 0 only for a confirmed success.
fn report(action: &str, target: &str, op: &Operation) -> u8 {
    match &op.outcome {
        Some(Outcome::Succeeded {
            summary,
            powered_on,
            ..
        }) => {
            match action {
                "off" => drivers::outln!("Success: Powered OFF"),
                "on" => drivers::outln!("Success: Powered ON"),
                _ => {
                    if *powered_on == Some(false) {
                        // Fenced (off was confirmed) but did not come back: still a successful
                        // fence, as the agent API counts a reboot.
                        drivers::errln!("fence_palisade: {target} was fenced but did not power back on: {summary}");
                    }
                    drivers::outln!("Success: Rebooted");
                }
            }
            drivers::errln!("fence_palisade: {target}: {summary} (operation {})", op.id);
            EC_OK
        }
        Some(Outcome::Failed { code, message }) => {
            drivers::errln!(
                "Failed: {target} {action} NOT confirmed ({code}): {message} (operation {})",
                op.id
            );
            EC_GENERIC_ERROR
        }
        None => {
            drivers::errln!("Failed: operation {} ended without an outcome", op.id);
            EC_GENERIC_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Opts, OptionsError> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_in_every_spelling() {
        let o = args(&[
            "-o",
            "off",
            "-n",
            "node1",
            "--socket=/s",
            "--token-file",
            "/t",
        ])
        .unwrap();
        assert_eq!(o.action.as_deref(), Some("off"));
        assert_eq!(o.plug.as_deref(), Some("node1"));
        assert_eq!(o.socket, Some(PathBuf::from("/s")));
        assert_eq!(o.token_file, Some(PathBuf::from("/t")));
        let o = args(&["--action=status", "--plug=n2", "--fence-timeout=30", "-v"]).unwrap();
        assert_eq!(o.fence_timeout, Some(30));
        assert_eq!(o.plug.as_deref(), Some("n2"));
        let o = args(&["-ooff", "--port", "n3"]).unwrap();
        assert_eq!(
            (o.action.as_deref(), o.plug.as_deref()),
            (Some("off"), Some("n3"))
        );
        let e = args(&["--bogus-opt=1"]).unwrap_err();
        assert!(
            matches!(&e, OptionsError::Unknown(n) if n == "bogus_opt"),
            "{e}"
        );
        assert!(e.to_string().contains("unknown option --bogus-opt"), "{e}");
        let e = args(&["-o"]).unwrap_err();
        assert_eq!(e.to_string(), "--action needs a value");
        let e = args(&["--fence-timeout=soon"]).unwrap_err();
        assert!(
            matches!(&e, OptionsError::Seconds { name, value } if name == "fence_timeout" && value == "soon"),
            "{e}"
        );
        assert!(matches!(args(&["-"]), Err(OptionsError::LoneDash)));
        assert!(matches!(
            args(&["-q"]),
            Err(OptionsError::UnknownShort('q'))
        ));
        assert!(matches!(args(&["node1"]), Err(OptionsError::Unexpected(a)) if a == "node1"));
    }

    #[test]
    fn metadata_lists_every_action_and_parses_back() {
        let m = drivers::agent::format::parse_metadata(metadata().as_bytes()).unwrap();
        assert_eq!(m.name, "fence_palisade");
        for a in ACTIONS {
            assert!(m.has_action(a), "{a}");
        }
        for p in ["action", "plug", "port", "socket", "url", "token_file"] {
            assert!(m.has_parameter(p), "{p}");
        }
    }
}
