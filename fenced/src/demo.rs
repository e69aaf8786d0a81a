//! `fenced demo`: the daemon on an embedded default that needs no hardware — a lab of
//! simulated IPMI v2.0 BMCs (real RMCP+ endpoints on loopback, started in-process) plus one
//! node behind a simulated Redfish BMC (HTTPS on loopback, its CA written next to the config),
//! a simulated switched PDU (SNMP v2c) feeding node1's two power supplies as its second level,
//! a config written for them, and one node fenced end to end through the API.

use crate::client::{Client, Endpoint};
use crate::config::Config;
use crate::daemon::{wait_for_signal, Daemon};
use crate::model::{Confirmation, FenceAccepted, Operation, Outcome, Phase, StepResult};
use drivers::Secret;
use hw_tests::lab::redfish::{RedfishLab, RedfishLabSpec};
use hw_tests::lab::snmp::{PduLab, PduLabSpec};
use hw_tests::lab::{Lab, LabSpec};
use rand::Rng;
use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What the demo starts.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of simulated nodes (each with its own BMC).
    pub nodes: usize,
    /// How long a simulated node takes to change power after the BMC accepts the command.
    pub power_delay: Duration,
    /// Where the demo's socket, config and history go (a fresh temporary directory if None).
    pub dir: Option<PathBuf>,
    /// Skip the first fence (only start the lab and the daemon).
    pub no_fence: bool,
}

const USER: &str = "palisade";

/// Runs the demo until SIGINT/SIGTERM.
pub async fn run(opts: DemoOptions) -> Result<(), String> {
    if !(1..=64).contains(&opts.nodes) {
        return Err(format!("--nodes must be 1 to 64, found {}", opts.nodes));
    }
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
        .map_err(|e| format!("cannot create the demo directory {}: {e}", dir.display()))?;
    let result = run_in(&opts, &dir).await;
    if remove_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(opts: &DemoOptions, dir: &Path) -> Result<(), String> {
    // A fresh random password per run, kept in a 0600 file the config names, as in production.
    let password: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    let pw_file = dir.join("bmc.password");
    write_private(&pw_file, password.as_bytes())?;

    let mut spec = LabSpec::new(opts.nodes, USER, Secret::new(password.clone().into_bytes()));
    spec.power_delay = opts.power_delay;
    let lab = Lab::start(spec)
        .await
        .map_err(|e| format!("cannot start the simulated BMCs: {e}"))?;
    // One Redfish node beside the IPMI ones; its UUIDs get another prefix so no identity is
    // shared with an IPMI node.
    let mut rspec = RedfishLabSpec::new(1, USER, Secret::new(password.into_bytes()));
    rspec.power_delay = opts.power_delay;
    rspec.cert_dir = Some(dir.to_path_buf());
    rspec.guid_prefix = "5a1ef150".into();
    let rlab = RedfishLab::start(rspec)
        .await
        .map_err(|e| format!("cannot start the simulated Redfish BMC: {e}"))?;

    // A switched PDU whose outlets 1 and 2 feed node1's two power supplies: node1's second
    // level, used when its BMC fails.
    let community: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    let community_file = dir.join("pdu.community");
    write_private(&community_file, community.as_bytes())?;
    let mut pspec = PduLabSpec::new(
        1,
        4,
        drivers::pdu::model::by_name("apc-rpdu").ok_or("no apc-rpdu model")?,
    );
    pspec.community = Some(Secret::new(community.into_bytes()));
    pspec.names = vec!["node1-psu1".into(), "node1-psu2".into()];
    pspec.power_delay = opts.power_delay;
    let plab = PduLab::start(pspec)
        .await
        .map_err(|e| format!("cannot start the simulated PDU: {e}"))?;

    let config_path = dir.join("fenced.toml");
    write_private(
        &config_path,
        demo_config(
            dir,
            &pw_file,
            &lab,
            &rlab,
            opts.nodes,
            &plab,
            &community_file,
        )
        .as_bytes(),
    )?;
    // The daemon reads the demo's config exactly as it reads an operator's.
    let config = Arc::new(Config::load(&config_path).map_err(|e| e.to_string())?);
    let socket = config.daemon.socket.clone();

    println!(
        "Palisade demo: {} simulated nodes whose BMCs speak IPMI v2.0 RMCP+ and one whose BMC speaks Redfish over HTTPS, on loopback\n",
        opts.nodes
    );
    for b in lab.bmcs() {
        println!(
            "  {:<7} BMC {:<21} system GUID {}",
            b.name(),
            b.addr().to_string(),
            b.guid_text()
        );
    }
    for b in rlab.bmcs() {
        println!(
            "  {:<7} BMC {:<21} system UUID {} (Redfish, CA {})",
            redfish_target(opts.nodes),
            b.url(),
            b.uuid(1).unwrap_or_default(),
            rlab.ca_path().display()
        );
    }
    for p in plab.pdus() {
        println!(
            "  {:<7} PDU {:<21} serial {} (SNMP v2c, outlets 1-2 feed node1's power supplies: node1's second level)",
            "pdu",
            p.addr().to_string(),
            p.serial()
        );
    }
    let daemon = Daemon::start(config).await?;
    println!("\nfenced serves the API on {}", socket.display());
    println!(
        "  config  {}\n  history {}\n",
        config_path.display(),
        dir.join("history.redb").display()
    );

    if !opts.no_fence {
        first_fence(&socket).await?;
    }

    println!("\nfenced keeps running until Ctrl-C. From another terminal:");
    println!("  export PALISADE_SOCKET={}", socket.display());
    println!("  fence_node status");
    println!("  fence_node off node2 --reason \"trying Palisade\"");
    println!("  fence_node on node1 --reason \"unfence\"");
    println!("  fence_node history");
    println!("  fence_node devices --check");
    println!("(fence_node is built next to fenced: target/release/fence_node)");

    wait_for_signal().await?;
    daemon.drain(Duration::from_secs(10), async {}).await;
    daemon.stop().await?;
    lab.shutdown().await;
    rlab.shutdown().await;
    plab.shutdown().await;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The demo's Redfish node comes after the IPMI ones.
fn redfish_target(ipmi_nodes: usize) -> String {
    format!("node{}", ipmi_nodes + 1)
}

fn demo_config(
    dir: &Path,
    pw_file: &Path,
    lab: &Lab,
    rlab: &RedfishLab,
    ipmi_nodes: usize,
    plab: &PduLab,
    community_file: &Path,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `fenced demo` for its lab of simulated BMCs."
    );
    let _ = writeln!(
        s,
        "[daemon]\nsocket = {:?}\nhistory = {:?}\nnode_name = \"demo\"\n",
        dir.join("fenced.sock"),
        dir.join("history.redb")
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
        let n = redfish_target(ipmi_nodes);
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

async fn first_fence(socket: &Path) -> Result<(), String> {
    let client = Client::new(
        Endpoint::Unix(socket.to_path_buf()),
        Duration::from_secs(60),
    );
    let body = serde_json::json!({"target": "node1", "action": "off", "reason": "fenced demo: first fence"});
    println!("Fencing node1 through the API: POST /v1/fence {body}");
    let (accepted, _) = client
        .call_as::<FenceAccepted>("POST", "/v1/fence", Some(&body), None)
        .await
        .map_err(|e| e.to_string())?;
    let (op, _) = client
        .call_as::<Operation>(
            "GET",
            &format!("/v1/operations/{}?wait=60", accepted.id),
            None,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    print!("{}", describe(&op));
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
