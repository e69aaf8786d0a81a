//! `palisade-lab`: serves simulated devices on loopback for manual tests, demos and
//! third-party tools (ipmitool, fence agents).
//!
//! `palisade-lab ipmi --count 3 --base-port 6230 --user admin --password-file pw` serves BMCs
//! node1..node3 and prints one ready line per BMC, `ipmi NAME 127.0.0.1:PORT guid=GUID`, once
//! it listens; then it runs until SIGINT or SIGTERM.
//!
//! `palisade-lab redfish --count 2 --base-port 8443 --user admin --password-file pw
//! [--systems K] [--fault KNOB]...` serves Redfish BMCs over HTTPS and prints
//! `redfish NAME https://127.0.0.1:PORT CERT_PATH` per BMC once it listens, where CERT_PATH is
//! the PEM CA certificate that signed every BMC's certificate (trust it, or use `-k`).
//!
//! `palisade-lab demo [--nodes N] [--power-delay-ms MS] [--dir DIR] [--no-fence]` starts IPMI
//! BMCs, a Redfish BMC and a PDU, runs the real `fenced` (built beside this binary) on a config
//! written for them, fences node1 through the API and prints the `fence_node` commands to try.
//!
//! `palisade-lab snmp-pdu --count N --base-port P --outlets K --model M [--community C]
//! [--v3-user U --auth-password-file F --priv-password-file F] [--fault KNOB]...` serves
//! switched PDUs over SNMP and prints `snmp-pdu NAME 127.0.0.1:PORT` per PDU once it listens.
//!
//! `palisade-lab serial-pdu --count N --outlets K --model M [--user U] [--password-file F]
//! [--no-pty | --no-tcp] [--fault KNOB]...` serves serial-console PDUs on pseudo-terminals and
//! telnet-style TCP ports and prints `serial-pdu NAME MODEL pty=/dev/pts/N tcp=127.0.0.1:PORT`
//! per PDU once it serves.

use clap::{Args, Parser, Subcommand};
use drivers::Secret;
use hw_tests::lab::redfish::{RedfishLab, RedfishLabSpec};
use hw_tests::lab::serial::{SerialLab, SerialLabSpec};
use hw_tests::lab::snmp::{PduLab, PduLabSpec, PduUser};
use hw_tests::lab::{FaultKnob, Lab, LabSpec, DEFAULT_GUID_PREFIX, FAULT_KNOBS_HELP};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Simulated power devices for the Palisade test bench.
#[derive(Debug, Parser)]
#[command(name = "palisade-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One subcommand per device kind, and the demo.
#[derive(Debug, Subcommand)]
enum Command {
    /// Palisade end to end, no hardware: simulated IPMI and Redfish BMCs and an SNMP PDU on
    /// loopback, the real `fenced` daemon (from this binary's directory) running on them,
    /// node1 fenced through the API, then serving until Ctrl-C.
    Demo(DemoArgs),
    /// Serve simulated IPMI v2.0 (RMCP+) BMCs on 127.0.0.1, one UDP port each.
    #[command(after_help = after_help_ipmi())]
    Ipmi(IpmiArgs),
    /// Serve simulated Redfish BMCs over HTTPS on 127.0.0.1, one TCP port each.
    #[command(after_help = after_help_redfish())]
    Redfish(RedfishArgs),
    /// Serve simulated switched PDUs over SNMP v1/v2c/v3 on 127.0.0.1, one UDP port each.
    #[command(name = "snmp-pdu", visible_alias = "snmp", after_help = after_help_snmp())]
    SnmpPdu(SnmpPduArgs),
    /// Serve simulated serial-console PDUs on pseudo-terminals and telnet-style TCP ports.
    #[command(name = "serial-pdu", after_help = after_help_serial())]
    SerialPdu(SerialPduArgs),
}

/// Options of `palisade-lab demo`.
#[derive(Debug, Args)]
struct DemoArgs {
    /// Number of simulated IPMI nodes (a Redfish node comes after them).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long a simulated node takes to change power, in milliseconds.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    power_delay_ms: u64,
    /// Directory for the config, socket, log and history (default: a fresh temporary one,
    /// removed at exit).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Do not fence node1 at start; only start the lab and the daemon.
    #[arg(long)]
    no_fence: bool,
    /// Directory holding `fenced` and `fence_node` (default: this binary's directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

fn run_demo(args: DemoArgs) -> ExitCode {
    // One thread: the daemon child gets SIGTERM when the thread that started it dies.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the async runtime: {e}")),
    };
    let opts = hw_tests::demo::DemoOptions {
        nodes: args.nodes,
        power_delay: Duration::from_millis(args.power_delay_ms),
        dir: args.dir,
        no_fence: args.no_fence,
        bin_dir: args.bin_dir,
    };
    match rt.block_on(hw_tests::demo::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

fn after_help_snmp() -> String {
    format!(
        "{FAULT_KNOBS_HELP}\n\nEach PDU prints one line on stdout once it listens:\n  snmp-pdu pdu1 127.0.0.1:1610\n\nProfiles:\n{}\n\nModels: {}\n\nExample:\n  palisade-lab snmp-pdu --count 2 --base-port 1610 --outlets 8 --model apc-rpdu --names db1-psu1,db1-psu2 --fault pdu2:stuck\n  snmpget -v2c -c private 127.0.0.1:1610 1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.1\n  fence_apc_snmp --ip 127.0.0.1 --ipport 1610 --community private -d 2c --plug 1 -o status",
        hw_tests::lab::snmp::pdu_profiles_help(),
        drivers::pdu::model::names()
    )
}

/// Options of `palisade-lab snmp-pdu`.
#[derive(Debug, Args)]
struct SnmpPduArgs {
    /// Number of PDUs, named pdu1..pduN.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// UDP port of pdu1; pduK listens on PORT+K-1. 0 picks free ports.
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    base_port: u16,
    /// Outlets per PDU.
    #[arg(long, default_value_t = 8, value_name = "K")]
    outlets: usize,
    /// Vendor profile: model, switch delay, delayed commands, factory communities (see the
    /// list below).
    #[arg(long, default_value = "palisade", value_name = "NAME")]
    profile: String,
    /// Vendor model (OID table), e.g. apc-rpdu, eaton-epdu, sentry3 (default: the profile's).
    #[arg(long, value_name = "M")]
    model: Option<String>,
    /// Read-write community for v1 and v2c (default: the profile's, private for palisade).
    #[arg(long, value_name = "C")]
    community: Option<String>,
    /// Read-only community: gets work, sets are refused with noAccess (default: the
    /// profile's; none for palisade).
    #[arg(long, value_name = "C")]
    read_community: Option<String>,
    /// Outlet names, comma-separated, outlet 1 first (others are outletK).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    names: Vec<String>,
    /// Serve SNMPv3 for this user (SHA authentication).
    #[arg(long, value_name = "U")]
    v3_user: Option<String>,
    /// File holding the v3 user's authentication password (authNoPriv, or authPriv with
    /// --priv-password-file).
    #[arg(long, value_name = "F", requires = "v3_user")]
    auth_password_file: Option<PathBuf>,
    /// File holding the v3 user's privacy (AES-128) password.
    #[arg(long, value_name = "F", requires = "auth_password_file")]
    priv_password_file: Option<PathBuf>,
    /// Delay between a set and the outlet's change, in milliseconds (default: the
    /// profile's switch delay, 0 for palisade).
    #[arg(long, value_name = "MS")]
    power_delay_ms: Option<u64>,
    /// Start with every outlet off.
    #[arg(long)]
    power_off: bool,
    /// A fault knob, `[PDU:]KNOB[=VALUE]` (repeatable; see the list below).
    #[arg(long = "fault", value_name = "KNOB")]
    faults: Vec<FaultKnob>,
}

fn after_help_redfish() -> String {
    format!(
        "{}\n{FAULT_KNOBS_HELP}\n\nEach BMC prints one line on stdout once it listens:\n  redfish node1 https://127.0.0.1:8443 /tmp/palisade-lab-redfish.XXXX/redfish-lab-ca.pem\n\nExample:\n  palisade-lab redfish --count 2 --base-port 8443 --user admin --password-file pw --fault node2:endless-task\n  curl --cacert CERT_PATH -u admin:PASSWORD https://127.0.0.1:8443/redfish/v1/Systems/System1\n  palisade-lab redfish --profile idrac --user admin --password-file pw --max-sessions 4",
        hw_tests::lab::profile::profiles_help(true)
    )
}

/// Options of `palisade-lab redfish`.
#[derive(Debug, Args)]
struct RedfishArgs {
    /// Number of BMCs, named node1..nodeN.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// TCP port of node1; nodeK listens on PORT+K-1. 0 picks free ports.
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    base_port: u16,
    /// Redfish account name.
    #[arg(long, value_name = "NAME")]
    user: String,
    /// File holding the account's password (one line; a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    /// Systems per BMC (System1..SystemK); more than one makes clients choose a system id.
    #[arg(long, default_value_t = 1, value_name = "K")]
    systems: usize,
    /// Vendor profile (see the list below).
    #[arg(long, default_value = "palisade", value_name = "NAME")]
    profile: String,
    /// Delay between a reset and the power change, in milliseconds (default: the profile's
    /// transition time, 0 for palisade).
    #[arg(long, value_name = "MS")]
    power_delay_ms: Option<u64>,
    /// Most sessions open at once per BMC, 0 = no limit (default: the profile's).
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// The ResetType AllowableValues, comma-separated (default: the profile's), e.g. a
    /// firmware without ForceOff: On,GracefulShutdown.
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    reset_types: Option<Vec<String>>,
    /// A fault knob, `[NODE:]KNOB[=VALUE]` (repeatable; see the list below).
    #[arg(long = "fault", value_name = "KNOB")]
    faults: Vec<FaultKnob>,
    /// Hex prefix of the systems' UUIDs (up to 8 digits).
    #[arg(long, default_value = DEFAULT_GUID_PREFIX, value_name = "HEX")]
    guid_prefix: String,
    /// Start with every system powered off.
    #[arg(long)]
    power_off: bool,
    /// Idle seconds after which a session expires.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    session_timeout: u64,
    /// Directory for the CA certificate file (default: a new temporary directory, removed at exit).
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
}

fn after_help_ipmi() -> String {
    format!(
        "{}\n{FAULT_KNOBS_HELP}\n\nEach BMC prints one line on stdout once it listens:\n  ipmi node1 127.0.0.1:6230 guid=5a1e1ab0-0000-4000-8000-000000000001\n\nExample:\n  palisade-lab ipmi --count 2 --base-port 6230 --user admin --password-file pw --fault node2:stuck\n  ipmitool -I lanplus -H 127.0.0.1 -p 6230 -U admin -f pw -C 17 chassis power status\n  palisade-lab ipmi --profile ilo --user admin --password-file pw --max-sessions 2",
        hw_tests::lab::profile::profiles_help(false)
    )
}

/// Options of `palisade-lab ipmi`.
#[derive(Debug, Args)]
struct IpmiArgs {
    /// Number of BMCs, named node1..nodeN.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// UDP port of node1; nodeK listens on PORT+K-1. 0 picks free ports.
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    base_port: u16,
    /// IPMI user name (administrator privilege).
    #[arg(long, value_name = "NAME")]
    user: String,
    /// File holding the user's password (one line; a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    /// Delay between a chassis control command and the power change, in milliseconds
    /// (default: the profile's transition time, 0 for palisade).
    #[arg(long, value_name = "MS")]
    power_delay_ms: Option<u64>,
    /// A fault knob, `[NODE:]KNOB[=VALUE]` (repeatable; see the list below).
    #[arg(long = "fault", value_name = "KNOB")]
    faults: Vec<FaultKnob>,
    /// Hex prefix of the BMCs' system GUIDs (up to 8 digits); the node number ends the GUID.
    #[arg(long, default_value = DEFAULT_GUID_PREFIX, value_name = "HEX")]
    guid_prefix: String,
    /// Start with every node powered off.
    #[arg(long)]
    power_off: bool,
    /// Idle seconds after which a BMC forgets a session.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    session_timeout: u64,
    /// Seed of the BMCs' random number generators (drop decisions, garbage).
    #[arg(long, default_value_t = 0x5a1e_1ab0)]
    seed: u64,
    /// Vendor profile: session limit, cipher suites, status lag (see the list below).
    #[arg(long, default_value = "palisade", value_name = "NAME")]
    profile: String,
    /// Most sessions at once per BMC (default: the profile's).
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => run_demo(args),
        Command::Ipmi(args) => run_ipmi(args),
        Command::Redfish(args) => run_redfish(args),
        Command::SnmpPdu(args) => run_snmp_pdu(args),
        Command::SerialPdu(args) => run_serial_pdu(args),
    }
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    drivers::errln!("palisade-lab: {msg}");
    ExitCode::from(code)
}

/// Checks that every `--fault NODE:` names one of the PDUs pdu1..pduCOUNT (SNMP and serial labs
/// name their PDUs the same way).
fn pdu_fault_nodes_known(faults: &[FaultKnob], count: usize) -> Result<(), String> {
    for node in faults.iter().filter_map(|k| k.node.as_ref()) {
        let known = node
            .strip_prefix("pdu")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| (1..=count).contains(&n));
        if !known {
            return Err(format!(
                "--fault names `{node}`, but the PDUs are pdu1..pdu{count}; use one of those or leave the PDU out to apply the knob to all"
            ));
        }
    }
    Ok(())
}

/// Checks that every knob names one of node1..node`count`.
fn check_knobs(faults: &[FaultKnob], count: usize) -> Result<(), String> {
    for knob in faults {
        if let Some(node) = &knob.node {
            let known = node
                .strip_prefix("node")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| (1..=count).contains(&n));
            if !known {
                return Err(format!(
                    "--fault names `{node}`, but the BMCs are node1..node{count}; use one of those or leave the node out to apply the knob to all"
                ));
            }
        }
    }
    Ok(())
}

fn read_password(path: &std::path::Path) -> Result<Secret, String> {
    std::fs::read(path).map(Secret::from_file_contents).map_err(|e| {
        format!(
            "cannot read the password file {}: {e}; write the password on one line into a file this user can read (mode 0600) and pass it with --password-file",
            path.display()
        )
    })
}

fn run_redfish(args: RedfishArgs) -> ExitCode {
    if args.count == 0 || args.systems == 0 {
        return fail(2, "--count and --systems must be at least 1");
    }
    if let Err(e) = check_knobs(&args.faults, args.count) {
        return fail(2, e);
    }
    let password = match read_password(&args.password_file) {
        Ok(p) => p,
        Err(e) => return fail(1, e),
    };
    if args.user.is_empty() {
        return fail(2, "--user must not be empty");
    }
    let Some(profile) = hw_tests::lab::profile::redfish_profile(&args.profile) else {
        return fail(
            2,
            format!(
                "unknown --profile `{}`; expected one of: {}",
                args.profile,
                hw_tests::lab::profile::REDFISH_PROFILES
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    let mut spec =
        RedfishLabSpec::new(args.count, args.user.clone(), password).with_profile(profile);
    spec.base_port = args.base_port;
    spec.systems = args.systems;
    if let Some(ms) = args.power_delay_ms {
        spec.power_delay = Duration::from_millis(ms);
    }
    spec.max_sessions = args.max_sessions;
    if let Some(types) = &args.reset_types {
        if types.iter().any(|t| t.is_empty()) {
            return fail(
                2,
                "--reset-types has an empty entry; give names such as On,ForceOff",
            );
        }
        spec.reset_types = Some(types.clone());
    }
    spec.power_on = !args.power_off;
    spec.guid_prefix = args.guid_prefix.clone();
    spec.session_timeout = Duration::from_secs(args.session_timeout);
    spec.cert_dir = args.cert_dir.clone();
    serve(&args.faults, RedfishLab::start(spec))
}

fn run_ipmi(args: IpmiArgs) -> ExitCode {
    if args.count == 0 {
        return fail(2, "--count must be at least 1");
    }
    for knob in &args.faults {
        if let Some(node) = &knob.node {
            let known = node
                .strip_prefix("node")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| (1..=args.count).contains(&n));
            if !known {
                return fail(
                    2,
                    format!(
                        "--fault names `{node}`, but the BMCs are node1..node{}; use one of those or leave the node out to apply the knob to all",
                        args.count
                    ),
                );
            }
        }
    }
    let password = match std::fs::read(&args.password_file) {
        Ok(bytes) => Secret::from_file_contents(bytes),
        Err(e) => {
            return fail(
                1,
                format!(
                    "cannot read the password file {}: {e}; write the password on one line into a file this user can read (mode 0600) and pass it with --password-file",
                    args.password_file.display()
                ),
            )
        }
    };
    if args.user.is_empty() || args.user.len() > 16 {
        return fail(2, "--user must be 1 to 16 bytes long (IPMI user names)");
    }
    if password.expose().len() > 20 {
        return fail(
            2,
            "the password is longer than the 20 bytes IPMI 2.0 allows; use a shorter one",
        );
    }
    let Some(profile) = hw_tests::lab::profile::ipmi_profile(&args.profile) else {
        return fail(
            2,
            format!(
                "unknown --profile `{}`; expected one of: {}",
                args.profile,
                hw_tests::lab::profile::IPMI_PROFILES
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    if args.max_sessions == Some(0) {
        return fail(
            2,
            "--max-sessions must be at least 1 (an IPMI BMC with no session slot cannot be used)",
        );
    }
    let mut spec = LabSpec::new(args.count, args.user.clone(), password).with_profile(profile);
    spec.max_sessions = args.max_sessions;
    spec.base_port = args.base_port;
    if let Some(ms) = args.power_delay_ms {
        spec.power_delay = Duration::from_millis(ms);
    }
    spec.power_on = !args.power_off;
    spec.guid_prefix = args.guid_prefix.clone();
    spec.session_timeout = Duration::from_secs(args.session_timeout);
    spec.seed = args.seed;

    serve(&args.faults, Lab::start(spec))
}

fn run_snmp_pdu(args: SnmpPduArgs) -> ExitCode {
    if args.count == 0 || args.outlets == 0 {
        return fail(2, "--count and --outlets must be at least 1");
    }
    let Some(profile) = hw_tests::lab::snmp::pdu_profile(&args.profile) else {
        return fail(
            2,
            format!(
                "unknown --profile `{}`; expected one of: {}",
                args.profile,
                hw_tests::lab::snmp::PDU_PROFILES
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    let model_name = args.model.as_deref().unwrap_or(profile.model);
    let Some(model) = drivers::pdu::model::by_name(model_name) else {
        return fail(
            2,
            format!(
                "unknown --model `{model_name}`; expected one of: {}",
                drivers::pdu::model::names()
            ),
        );
    };
    if let Err(msg) = pdu_fault_nodes_known(&args.faults, args.count) {
        return fail(2, msg);
    }
    let mut spec = PduLabSpec::with_profile(args.count, args.outlets, profile);
    spec.model = model;
    spec.base_port = args.base_port;
    spec.names = args.names.clone();
    if let Some(c) = &args.community {
        spec.community = Some(Secret::new(c.clone().into_bytes()));
    }
    if profile.name == "palisade" {
        // The lab's own profile keeps its historical single read-write community.
        spec.read_community = None;
    }
    if let Some(c) = &args.read_community {
        spec.read_community = Some(Secret::new(c.clone().into_bytes()));
    }
    if let Some(ms) = args.power_delay_ms {
        spec.power_delay = Duration::from_millis(ms);
    }
    spec.power_on = !args.power_off;
    if let Some(name) = &args.v3_user {
        let auth = match args
            .auth_password_file
            .as_deref()
            .map(read_password)
            .transpose()
        {
            Ok(p) => p,
            Err(e) => return fail(1, e),
        };
        let privacy = match args
            .priv_password_file
            .as_deref()
            .map(read_password)
            .transpose()
        {
            Ok(p) => p,
            Err(e) => return fail(1, e),
        };
        spec.user = Some(PduUser {
            name: name.clone(),
            auth,
            privacy,
            auth_protocol: drivers::pdu::AuthProtocol::Sha1,
        });
    }
    serve(&args.faults, PduLab::start(spec))
}

/// What `serve` needs of a started lab: its fault knobs, its ready lines, its shutdown.
trait Served {
    fn apply(&self, knob: &FaultKnob) -> bool;
    /// One line per device, printed once every device listens.
    fn ready_lines(&self) -> Vec<String>;
    fn stop(self) -> impl std::future::Future<Output = ()>;
}

impl Served for Lab {
    fn apply(&self, knob: &FaultKnob) -> bool {
        Lab::apply(self, knob)
    }
    fn ready_lines(&self) -> Vec<String> {
        self.bmcs()
            .iter()
            .map(|b| format!("ipmi {} {} guid={}", b.name(), b.addr(), b.guid_text()))
            .collect()
    }
    fn stop(self) -> impl std::future::Future<Output = ()> {
        self.shutdown()
    }
}

impl Served for RedfishLab {
    fn apply(&self, knob: &FaultKnob) -> bool {
        RedfishLab::apply(self, knob)
    }
    fn ready_lines(&self) -> Vec<String> {
        self.bmcs()
            .iter()
            .map(|b| {
                format!(
                    "redfish {} {} {}",
                    b.name(),
                    b.url(),
                    self.ca_path().display()
                )
            })
            .collect()
    }
    fn stop(self) -> impl std::future::Future<Output = ()> {
        self.shutdown()
    }
}

impl Served for PduLab {
    fn apply(&self, knob: &FaultKnob) -> bool {
        PduLab::apply(self, knob)
    }
    fn ready_lines(&self) -> Vec<String> {
        self.pdus()
            .iter()
            .map(|p| format!("snmp-pdu {} {}", p.name(), p.addr()))
            .collect()
    }
    fn stop(self) -> impl std::future::Future<Output = ()> {
        self.shutdown()
    }
}

/// Starts a lab on a single-threaded runtime, applies the fault knobs, prints the ready lines,
/// and serves until SIGINT or SIGTERM.
fn serve<L: Served, E: std::fmt::Display>(
    faults: &[FaultKnob],
    start: impl std::future::Future<Output = Result<L, E>>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async move {
        let lab = match start.await {
            Ok(lab) => lab,
            Err(e) => return fail(1, e),
        };
        for knob in faults {
            lab.apply(knob);
        }
        {
            let mut out = std::io::stdout().lock();
            for line in lab.ready_lines() {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        }
        let mut control = control_lines();
        let mut control_open = true;
        // One signal future for the whole run: a handler installed once sees every signal.
        let signal = wait_for_signal();
        tokio::pin!(signal);
        let reason = loop {
            tokio::select! {
                signal = &mut signal => break signal,
                line = control.recv(), if control_open => match line.as_deref().map(control_command) {
                    // End of stdin (a CI job started us with </dev/null): keep serving.
                    None => control_open = false,
                    Some(Control::Quit) => break "quit on stdin",
                    Some(Control::Fault(knob, text)) => {
                        let reply = if lab.apply(&knob) {
                            format!("applied {text}")
                        } else {
                            format!("error: no device named in `{text}`; use a name from the ready lines")
                        };
                        say(&reply);
                    }
                    Some(Control::Bad(msg)) => say(&format!("error: {msg}")),
                    Some(Control::Nothing) => {}
                },
            }
        };
        drivers::errln!("palisade-lab: {reason}, stopping");
        lab.stop().await;
        ExitCode::SUCCESS
    })
}

/// One line on stdout, flushed at once: the control channel's answers are what a test waits
/// for before it drives a client into the fault it just set.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A command read on the control channel (stdin), one per line.
enum Control {
    /// `fault [NODE:]KNOB[=VALUE]`: set a knob while serving; the text as given.
    Fault(FaultKnob, String),
    /// `quit`: stop as on SIGTERM.
    Quit,
    /// A line that is not a command, and why.
    Bad(String),
    /// An empty line or a `#` comment.
    Nothing,
}

fn control_command(line: &str) -> Control {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Control::Nothing;
    }
    match line.split_once(char::is_whitespace) {
        Some(("fault", knob)) => match knob.trim().parse::<FaultKnob>() {
            Ok(k) => Control::Fault(k, knob.trim().to_string()),
            // The parse error lists every knob; one line is what a script can read back.
            Err(e) => Control::Bad(format!(
                "bad fault knob `{}`: {}; see --help for the knobs",
                e.given, e.reason
            )),
        },
        None if line == "quit" => Control::Quit,
        _ => Control::Bad(format!(
            "unknown command `{line}`; expected `fault [NODE:]KNOB[=VALUE]` or `quit`"
        )),
    }
}

/// Lines of stdin, read on a thread of their own (a blocking read must not stall the
/// devices); the channel closes at end of input.
fn control_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        drivers::errln!(
            "palisade-lab: no control channel on stdin ({e}); faults only from --fault"
        );
    }
    rx
}

/// Waits for SIGINT or SIGTERM and says which came.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (terminate) still stops us.
        std::future::pending::<()>().await;
        return "no signal handler";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn after_help_serial() -> String {
    format!(
        "{FAULT_KNOBS_HELP}\n\nEach PDU prints one line on stdout once it serves:\n  serial-pdu pdu1 wti-nps pty=/dev/pts/5 tcp=127.0.0.1:2301\n\nModels: {}\n\nExample:\n  palisade-lab serial-pdu --model wti --outlets 8 --base-port 2301 --password-file pw --fault pdu1:slow-line=2\n  fence_wti --ip 127.0.0.1 --ipport 2301 --password-file pw --plug 1 -o status\n  picocom -b 9600 /dev/pts/5",
        drivers::serial_pdu::model::names()
    )
}

/// Options of `palisade-lab serial-pdu`.
#[derive(Debug, Args)]
struct SerialPduArgs {
    /// Number of PDUs, named pdu1..pduN.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Outlets per PDU (1 to 48).
    #[arg(long, default_value_t = 8, value_name = "K")]
    outlets: usize,
    /// Console model: wti (wti-nps), apc (apc-ap79xx), baytech (baytech-rpc).
    #[arg(long, default_value = "wti-nps", value_name = "M")]
    model: String,
    /// Outlet names, comma-separated, outlet 1 first (others are outletK).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    names: Vec<String>,
    /// The user name the console asks for (needs --password-file).
    #[arg(long, value_name = "U", requires = "password_file")]
    user: Option<String>,
    /// File holding the console's password; without it the console asks none.
    #[arg(long, value_name = "F")]
    password_file: Option<PathBuf>,
    /// TCP port of pdu1; pduK listens on PORT+K-1. 0 picks free ports.
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    base_port: u16,
    /// Serve no pseudo-terminals (TCP only).
    #[arg(long, conflicts_with = "no_tcp")]
    no_pty: bool,
    /// Serve no TCP ports (pseudo-terminals only).
    #[arg(long)]
    no_tcp: bool,
    /// Delay between a switching command and the outlet's change, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    power_delay_ms: u64,
    /// Start with every outlet off.
    #[arg(long)]
    power_off: bool,
    /// A fault knob, `[PDU:]KNOB[=VALUE]` (repeatable; see the list below).
    #[arg(long = "fault", value_name = "KNOB")]
    faults: Vec<FaultKnob>,
}

fn run_serial_pdu(args: SerialPduArgs) -> ExitCode {
    if args.count == 0 || args.outlets == 0 {
        return fail(2, "--count and --outlets must be at least 1");
    }
    let Some(model) = drivers::serial_pdu::model::by_name(&args.model) else {
        return fail(
            2,
            format!(
                "unknown --model `{}`; expected one of: {}",
                args.model,
                drivers::serial_pdu::model::names()
            ),
        );
    };
    if let Err(msg) = pdu_fault_nodes_known(&args.faults, args.count) {
        return fail(2, msg);
    }
    let mut spec = SerialLabSpec::new(args.count, args.outlets, model);
    spec.names = args.names.clone();
    spec.username = args.user.clone();
    spec.password = match args.password_file.as_deref().map(read_password).transpose() {
        Ok(p) => p,
        Err(e) => return fail(1, e),
    };
    spec.base_port = args.base_port;
    spec.pty = !args.no_pty;
    spec.tcp = !args.no_tcp;
    spec.power_delay = Duration::from_millis(args.power_delay_ms);
    spec.power_on = !args.power_off;
    serve(&args.faults, SerialLab::start(spec))
}

impl Served for SerialLab {
    fn apply(&self, knob: &FaultKnob) -> bool {
        SerialLab::apply(self, knob)
    }
    fn ready_lines(&self) -> Vec<String> {
        self.pdus().iter().map(|p| p.ready_line()).collect()
    }
    fn stop(self) -> impl std::future::Future<Output = ()> {
        self.shutdown()
    }
}
