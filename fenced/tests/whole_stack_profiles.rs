//! Our Redfish driver through the whole stack (`fence_node` -> the `fenced` daemon -> the
//! Redfish driver over HTTPS -> the lab BMC) against every vendor profile of
//! `hw_tests::lab::profile::REDFISH_PROFILES`: iDRAC's 409 and iLO's/XCC's 400 for a reset
//! into the state the system is moving to, OpenBMC's seconds of `PoweringOff`, Supermicro's
//! task that says `Completed` before the power changes, and small session limits.
//!
//! Each profile gets the same four tests (one module per profile, so nextest runs them in
//! parallel), and `every_profile_is_tested` fails when a profile is added to the table
//! without being added here:
//! - `off_then_on_confirmed_by_read_back`: FENCED only once the BMC really is off;
//! - `reset_while_moving_is_read_back_not_failed`: a second reset during the transition gets
//!   the vendor's refusal, which is followed by a read-back and keeps polling;
//! - `lies_with_the_quirk_are_not_fenced`: the quirk combined with a lying BMC (acknowledges
//!   and stays on; `PoweringOff` forever; "already off" while on) is NOT FENCED;
//! - `session_limit_holds_under_load`: twelve targets behind one BMC limited to two sessions
//!   are all fenced, with no session refused and the lab's peak never above the limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{median, secret_file, text, Fenced};
use drivers::redfish::{RedfishConfig, RedfishDevice, TlsVerify};
use drivers::{PowerCommand, PowerDevice, Secret};
use hw_tests::lab::profile::{redfish_profile, RedfishProfile, REDFISH_PROFILES};
use hw_tests::lab::redfish::{system_id, RedfishBmcHandle, RedfishLab, RedfishLabSpec};
use hw_tests::lab::{EventKind, Fault};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "lab-password";

/// The lab on its own runtime and a fenced daemon configured for every system in it.
struct Bench {
    lab: RedfishLab,
    rt: tokio::runtime::Runtime,
    profile: &'static RedfishProfile,
    _tmp: tempfile::TempDir,
    fenced: Fenced,
}

struct Opts {
    profile: &'static str,
    nodes: usize,
    /// Systems behind each BMC; each is a target of its own (`node1s2` …) when above 1.
    systems: usize,
    /// Overrides the profile's session limit.
    max_sessions: Option<usize>,
    /// Power changes take at least this long (the lab's own profile has no transition).
    min_transition: Duration,
    total_timeout_s: u64,
}

impl Opts {
    fn new(profile: &'static str) -> Self {
        Opts {
            profile,
            nodes: 1,
            systems: 1,
            max_sessions: None,
            min_transition: Duration::ZERO,
            total_timeout_s: 12,
        }
    }
}

/// The target name of system `k` (1-based) of `bmc`.
fn target(bmc: &str, systems: usize, k: usize) -> String {
    if systems == 1 {
        bmc.to_string()
    } else {
        format!("{bmc}s{k}")
    }
}

fn bench(opts: Opts) -> Bench {
    let profile = redfish_profile(opts.profile).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut spec = RedfishLabSpec::new(opts.nodes, "admin", Secret::new(PASSWORD.into()))
        .with_profile(profile);
    spec.systems = opts.systems;
    spec.power_delay = spec.power_delay.max(opts.min_transition);
    spec.max_sessions = opts.max_sessions;
    let lab = rt.block_on(RedfishLab::start(spec)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pw = secret_file(dir, "pw", PASSWORD);
    // The attempt outlasts the longest transition (OpenBMC's 3 s) with room for the polls.
    let mut cfg = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 6\ntotal_timeout_s = {}\n\n[limits]\nmax_operations = 200\nmax_operations_per_target = 50\n\n",
        dir.join("fenced.sock"),
        dir.join("history.redb"),
        opts.total_timeout_s,
    );
    for b in lab.bmcs() {
        for k in 1..=opts.systems {
            cfg.push_str(&format!(
                "[devices.rf-{t}]\nkind = \"redfish\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = {pw:?}\nca_file = {ca:?}\nsystem_id = \"{sid}\"\ntimeout_ms = 1500\nconnect_timeout_ms = 1000\ntotal_timeout_ms = 3000\n\n[targets.{t}]\nlevels = [[\"rf-{t}\"]]\nidentities = {{ rf-{t} = \"{uuid}\" }}\n\n",
                t = target(b.name(), opts.systems, k),
                a = b.url(),
                ca = lab.ca_path(),
                sid = system_id(profile, k),
                uuid = b.uuid(k).unwrap(),
            ));
        }
    }
    let config = dir.join("fenced.toml");
    std::fs::write(&config, cfg).unwrap();
    let fenced = Fenced::start(dir, &config);
    Bench {
        lab,
        rt,
        profile,
        _tmp: tmp,
        fenced,
    }
}

/// Every value of `key` anywhere in `v` (the step results sit inside attempts and levels).
fn values_of<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                values_of(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| values_of(x, key, out)),
        _ => {}
    }
}

/// How many times the lab saw `what` (repeats included).
fn faults_applied(bmc: &RedfishBmcHandle, what: &str) -> u32 {
    bmc.events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::FaultApplied(f) if f == what))
        .map(|e| e.count)
        .sum()
}

/// How many session POSTs the lab refused for the limit.
fn sessions_refused(bmc: &RedfishBmcHandle) -> u32 {
    faults_applied(bmc, "session-limit")
}

/// Runs `fence_node ACTION node`, expecting success, and checks the history says read-back.
fn fenced_ok(b: &Bench, action: &str, node: &str) -> Value {
    let out = b
        .fenced
        .fence_node(&[action, node, "--reason", "profile test"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{}: {t}", b.profile.name);
    let said = if action == "on" {
        "POWERED ON"
    } else {
        "FENCED"
    };
    assert!(t.contains(said) && !t.contains("NOT "), "{t}");
    let op = b.fenced.last_op(node);
    assert_eq!(
        op["outcome"]["confirmation"]["method"], "power_read_back",
        "{}: {op}",
        b.profile.name
    );
    op
}

fn off_then_on_confirmed_by_read_back(name: &'static str) {
    let b = bench(Opts::new(name));
    let bmc = b.lab.bmc("node1").unwrap();
    let op = fenced_ok(&b, "off", "node1");
    // Confirmed means read back: the BMC is off at the moment FENCED is printed, even on
    // Supermicro, whose task said Completed while the power was still on.
    assert!(
        !bmc.power(),
        "{name}: FENCED while the lab is still on: {op}"
    );
    let mut polls = Vec::new();
    values_of(&op, "polls", &mut polls);
    let polls: u64 = polls.iter().filter_map(|p| p.as_u64()).sum();
    if b.profile.transition >= Duration::from_millis(500) {
        // The engine read PoweringOff and kept polling instead of taking it as off.
        assert!(polls >= 2, "{name}: {polls} polls over a transition: {op}");
    }
    let op = fenced_ok(&b, "on", "node1");
    assert!(
        bmc.power(),
        "{name}: on confirmed while the lab is off: {op}"
    );
    assert_eq!(sessions_refused(bmc), 0, "{name}");
}

fn reset_while_moving_is_read_back_not_failed(name: &'static str) {
    let b = bench(Opts {
        min_transition: Duration::from_millis(2000),
        ..Opts::new(name)
    });
    let bmc = b.lab.bmc("node1").unwrap();
    // Another client starts the power-off; fenced arrives while it is PoweringOff.
    let mut cfg = RedfishConfig::new(bmc.url(), "admin", Secret::new(PASSWORD.into()));
    cfg.tls = TlsVerify::CaFile(b.lab.ca_path().to_path_buf());
    cfg.total_timeout = Duration::from_secs(5);
    b.rt.block_on(async {
        let other = RedfishDevice::new(cfg).unwrap();
        other.power(None, PowerCommand::Off).await.unwrap();
        other.close().await;
    });
    assert!(bmc.power(), "{name}: the transition has not ended yet");
    let op = fenced_ok(&b, "off", "node1");
    assert!(!bmc.power(), "{name}: {op}");
    let refused = faults_applied(bmc, "same-state-refused");
    match b.profile.same_state_status {
        // The vendor's 409/400 came, and was read back instead of failing the attempt.
        Some(_) => assert!(refused >= 1, "{name}: no same-state refusal: {op}"),
        None => assert_eq!(refused, 0, "{name}"),
    }
    assert!(
        op["outcome"].to_string().contains("off"),
        "{name}: confirmed off: {op}"
    );
}

fn lies_with_the_quirk_are_not_fenced(name: &'static str) {
    let b = bench(Opts {
        nodes: 3,
        total_timeout_s: 8,
        ..Opts::new(name)
    });
    // node1 acknowledges and stays on (Supermicro's task still says Completed); node2 reads
    // PoweringOff forever; node3 answers "already off" (the profile's 409/400) while on.
    b.lab.bmc("node1").unwrap().set_fault(Fault::Stuck(true));
    b.lab.bmc("node2").unwrap().set_endless_transition(true);
    b.lab.bmc("node3").unwrap().set_false_same_state(true);
    let t = Instant::now();
    let runs: Vec<(&str, Child)> = ["node1", "node2", "node3"]
        .into_iter()
        .map(|n| {
            let c = Command::new(env!("CARGO_BIN_EXE_fence_node"))
                .args(["off", n, "--reason", "lie test"])
                .env("PALISADE_SOCKET", b.fenced.socket())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (n, c)
        })
        .collect();
    let mut said = Vec::new();
    for (n, c) in runs {
        let out = c.wait_with_output().unwrap();
        let s = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name} {n}: {s}");
        assert!(s.contains("NOT FENCED"), "{name} {n}: {s}");
        assert_eq!(b.fenced.last_op(n)["state"], "failed", "{name} {n}");
        assert!(b.lab.bmc(n).unwrap().power(), "{name} {n} is still on");
        said.push(s);
    }
    // Each ends within the target's total timeout (8 s) plus start-up on a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(said[1].contains("powering off"), "{name}: {}", said[1]);
    let status = b.profile.same_state_status.unwrap_or(409).to_string();
    assert!(said[2].contains(&status), "{name}: {}", said[2]);
    assert!(
        faults_applied(b.lab.bmc("node2").unwrap(), "endless-transition") >= 1,
        "{name}"
    );
    assert!(said[0].contains("still reports on"), "{name}: {}", said[0]);
}

fn session_limit_holds_under_load(name: &'static str) {
    const SYSTEMS: usize = 12;
    const LIMIT: usize = 2;
    let b = bench(Opts {
        systems: SYSTEMS,
        max_sessions: Some(LIMIT),
        total_timeout_s: 30,
        ..Opts::new(name)
    });
    let bmc = b.lab.bmc("node1").unwrap();
    let t = Instant::now();
    let children: Vec<(String, Child)> = (1..=SYSTEMS)
        .map(|k| {
            let n = target("node1", SYSTEMS, k);
            let c = Command::new(env!("CARGO_BIN_EXE_fence_node"))
                .args(["off", &n, "--reason", "load"])
                .env("PALISADE_SOCKET", b.fenced.socket())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (n, c)
        })
        .collect();
    for (n, c) in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name} {n}: {}", text(&out));
    }
    let took = t.elapsed();
    for k in 1..=SYSTEMS {
        assert_eq!(bmc.system_power(k), Some(false), "{name} system {k}");
    }
    assert_eq!(sessions_refused(bmc), 0, "{name}: a session was refused");
    assert!(
        bmc.sessions_peak() <= LIMIT,
        "{name}: {} sessions open at once, limit {LIMIT}",
        bmc.sessions_peak()
    );
    eprintln!(
        "FIGURE {name}: {SYSTEMS} targets behind one BMC limited to {LIMIT} sessions: all confirmed off after {took:?}, session peak {}",
        bmc.sessions_peak()
    );
}

/// One module per profile; the list must name every profile of the table.
macro_rules! per_profile {
    ($($p:ident),* $(,)?) => {
        const TESTED: &[&str] = &[$(stringify!($p)),*];
        $(
            mod $p {
                #[test]
                fn off_then_on_confirmed_by_read_back() {
                    super::off_then_on_confirmed_by_read_back(stringify!($p));
                }
                #[test]
                fn reset_while_moving_is_read_back_not_failed() {
                    super::reset_while_moving_is_read_back_not_failed(stringify!($p));
                }
                #[test]
                fn lies_with_the_quirk_are_not_fenced() {
                    super::lies_with_the_quirk_are_not_fenced(stringify!($p));
                }
                #[test]
                fn session_limit_holds_under_load() {
                    super::session_limit_holds_under_load(stringify!($p));
                }
            }
        )*
    };
}

per_profile!(palisade, idrac, ilo, openbmc, supermicro, xcc);

#[test]
fn every_profile_is_tested() {
    let table: Vec<&str> = REDFISH_PROFILES.iter().map(|p| p.name).collect();
    assert_eq!(table, TESTED, "add the new profile to per_profile!");
}

/// The status reads the engine made after the command (the step results' `polls`).
fn polls_of(op: &Value) -> u64 {
    let mut polls = Vec::new();
    values_of(op, "polls", &mut polls);
    polls.iter().filter_map(|p| p.as_u64()).sum()
}

/// Waits until every system of `bmc` reads `on` in the lab.
fn settle(bmc: &RedfishBmcHandle, on: bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while bmc.power() != on {
        assert!(Instant::now() < until, "power never {on}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// fence_redfish -o off with its options on stdin and the lab's CA trusted; its wall time.
fn fence_redfish_off(b: &Bench) -> Duration {
    use std::io::Write;
    let bmc = b.lab.bmc("node1").unwrap();
    let t = Instant::now();
    let mut child = Command::new("fence_redfish")
        .env("REQUESTS_CA_BUNDLE", b.lab.ca_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                "ip=127.0.0.1\nipport={}\nusername=admin\npassword={PASSWORD}\naction=off\n",
                bmc.addr().port()
            )
            .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!bmc.power(), "fence_redfish said off while on");
    took
}

/// The figures per Redfish profile (scripts/profile-figures.sh prints them; medians of 5):
/// time to confirmed off through fenced and through fence_redfish, the status reads the
/// engine made during the transition, and the cost of arriving mid-transition (the vendor's
/// 409/400, read back).
#[test]
#[ignore = "figures: run by scripts/profile-figures.sh"]
fn figures_redfish_per_profile() {
    if !hw_tests::require::needs_command("fence_redfish", "Debian package fence-agents") {
        return;
    }
    const RUNS: usize = 5;
    for p in REDFISH_PROFILES {
        let b = bench(Opts {
            total_timeout_s: 20,
            ..Opts::new(p.name)
        });
        let bmc = b.lab.bmc("node1").unwrap();
        let (mut ours, mut polls, mut mid, mut mid_polls, mut refusals, mut agent) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            bmc.set_power(true);
            let t = Instant::now();
            let op = fenced_ok(&b, "off", "node1");
            ours.push(t.elapsed());
            polls.push(polls_of(&op));

            // Arriving while another client's power-off is under way.
            bmc.set_power(true);
            let mut cfg = RedfishConfig::new(bmc.url(), "admin", Secret::new(PASSWORD.into()));
            cfg.tls = TlsVerify::CaFile(b.lab.ca_path().to_path_buf());
            b.rt.block_on(async {
                let other = RedfishDevice::new(cfg).unwrap();
                other.power(None, PowerCommand::Off).await.unwrap();
                other.close().await;
            });
            let before = faults_applied(bmc, "same-state-refused");
            let t = Instant::now();
            let op = fenced_ok(&b, "off", "node1");
            mid.push(t.elapsed());
            mid_polls.push(polls_of(&op));
            refusals.push(faults_applied(bmc, "same-state-refused") - before);
            settle(bmc, false);

            bmc.set_power(true);
            agent.push(fence_redfish_off(&b));
        }
        eprintln!(
            "FIGURE redfish {}: transition {:?}; to confirmed off: fenced {:?} ({} status reads), fence_redfish {:?}; arriving mid-transition: fenced {:?} ({} reads, {} refusal(s) {} read back)",
            p.name,
            p.transition,
            median(ours),
            median(polls),
            median(agent),
            median(mid),
            median(mid_polls),
            median(refusals),
            p.same_state_status.map_or("none".to_string(), |s| s.to_string()),
        );
    }
}

/// The figures per IPMI profile: time to confirmed off through fenced (our IPMI driver) and
/// through fence_ipmilan (defaults, as Pacemaker runs it: power_wait 2 s), and the status
/// reads the engine made while the chassis status lagged.
#[test]
#[ignore = "figures: run by scripts/profile-figures.sh"]
fn figures_ipmi_per_profile() {
    use hw_tests::lab::profile::IPMI_PROFILES;
    use hw_tests::lab::{BackgroundLab, LabSpec};
    if !hw_tests::require::needs_command("/usr/sbin/fence_ipmilan", "Debian package fence-agents") {
        return;
    }
    const RUNS: usize = 5;
    for p in IPMI_PROFILES {
        let lab = BackgroundLab::start(
            LabSpec::new(1, "admin", Secret::new(PASSWORD.into())).with_profile(p),
        )
        .unwrap();
        let bmc = lab.bmcs()[0].clone();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let pw = secret_file(dir, "pw", PASSWORD);
        let cfg = format!(
            "[daemon]\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 10\ntotal_timeout_s = 20\n\n[limits]\nmax_operations = 200\nmax_operations_per_target = 50\n\n[devices.bmc-node1]\nkind = \"ipmi\"\naddress = \"{}\"\nusername = \"admin\"\npassword_file = {pw:?}\ncipher_suite = {}\n\n[targets.node1]\nlevels = [[\"bmc-node1\"]]\nidentities = {{ bmc-node1 = \"{}\" }}\n",
            dir.join("fenced.sock"),
            dir.join("history.redb"),
            bmc.addr(),
            p.suites[0],
            bmc.guid_text(),
        );
        let config = dir.join("fenced.toml");
        std::fs::write(&config, cfg).unwrap();
        let fenced = Fenced::start(dir, &config);
        let (mut ours, mut polls, mut agent) = (vec![], vec![], vec![]);
        let port = bmc.port().to_string();
        let suite = p.suites[0].to_string();
        for _ in 0..RUNS {
            bmc.set_power(true);
            let t = Instant::now();
            let out = fenced.fence_node(&["off", "node1", "--reason", "figure"]);
            ours.push(t.elapsed());
            assert_eq!(out.status.code(), Some(0), "{}: {}", p.name, text(&out));
            assert!(!bmc.power());
            let h = fenced.json(&["history", "node1"]);
            polls.push(polls_of(&h[0]));

            bmc.set_power(true);
            let t = Instant::now();
            let out = Command::new("/usr/sbin/fence_ipmilan")
                .args(["--lanplus", "-a", "127.0.0.1", "-u", &port, "-l", "admin"])
                .args(["-p", PASSWORD, "-C", &suite, "-o", "off"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            agent.push(t.elapsed());
            assert!(out.status.success(), "{}: {}", p.name, text(&out));
            assert!(!bmc.power());
        }
        eprintln!(
            "FIGURE ipmi {}: transition {:?}, status lag {:?}, suites {:?}, {} sessions; to confirmed off: fenced {:?} ({} status reads), fence_ipmilan {:?}",
            p.name,
            p.transition,
            p.status_lag,
            p.suites,
            p.max_sessions,
            median(ours),
            median(polls),
            median(agent),
        );
    }
}
