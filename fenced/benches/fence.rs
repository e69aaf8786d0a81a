//! Figures for the fencing path, printed as a table (medians of N runs). Run with
//! `cargo bench -p fenced --bench fence` (release build). Not a pass/fail test: shared
//! machines are noisy, so targets are read off these numbers, never asserted.
//!
//! 1. Engine overhead: API request (Unix socket, HTTP) to confirmed result, with an instant
//!    in-process device.
//! 2. Request to confirmed off through a `fenced` process against the lab's simulated IPMI BMC
//!    (RMCP+ over loopback), at 0 ms and 500 ms power delay: measured at the API (client in
//!    this process) and as a whole `fence_node off` process.
//! 3. ClusterLabs `fence_ipmilan -o off` against the same simulated BMC, default `power_wait`
//!    and `--power-wait=0`.
//! 4. Idle RSS of `fenced run` with 3 targets; binary sizes (every workspace binary found
//!    beside `fenced`: `cargo build --release --workspace --bins` puts them there).
//!
//! CPU time per fence (fenced's and one `fence_node` process's) is printed beside the wall
//! times: unlike those, it barely moves when other work shares the machine.
//! `PALISADE_BENCH_FENCED=PATH` and `PALISADE_BENCH_FENCE_NODE=PATH` measure other builds of
//! the two binaries against this bench's lab (to tell the daemon's share from the lab's).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use async_trait::async_trait;
use drivers::{DeviceError, Identity, PowerCommand, PowerDevice, PowerState, Secret};
use fenced::api::{bind_unix, Api};
use fenced::client::{Client, Endpoint};
use fenced::config::Config;
use fenced::history::History;
use fenced::model::{FenceAccepted, Operation};
use fenced::{Clock, DeviceSlot, Engine};
use hw_tests::lab::{BackgroundLab, LabSpec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUNS: usize = 7;
const PASSWORD: &str = "bench-password";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Instant0(Mutex<PowerState>);

#[async_trait]
impl PowerDevice for Instant0 {
    async fn status(&self, _: Option<&str>) -> Result<PowerState, DeviceError> {
        Ok(*self.0.lock().unwrap())
    }
    async fn power(&self, _: Option<&str>, c: PowerCommand) -> Result<(), DeviceError> {
        *self.0.lock().unwrap() = c.expected_state();
        Ok(())
    }
    async fn health(&self) -> Result<Identity, DeviceError> {
        Ok(Identity {
            kind: "serial".into(),
            value: "bench".into(),
            description: "instant".into(),
        })
    }
}

fn config_text(dir: &Path, devices: &str, targets: &str) -> String {
    format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\n[limits]\nmax_operations = 100000\nmax_operations_per_target = 100000\n\n{devices}\n{targets}",
        dir.join("fenced.sock"),
        dir.join("history.redb")
    )
}

async fn fence_once(client: &Client, target: &str, action: &str) -> Operation {
    let body = serde_json::json!({"target": target, "action": action, "reason": "bench"});
    let (a, _) = client
        .call_as::<FenceAccepted>("POST", "/v1/fence", Some(&body), None)
        .await
        .unwrap();
    let (op, _) = client
        .call_as::<Operation>(
            "GET",
            &format!("/v1/operations/{}?wait=60", a.id),
            None,
            None,
        )
        .await
        .unwrap();
    op
}

fn engine_overhead(rt: &tokio::runtime::Runtime) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), "", "");
    let mut cfg = Config::parse(&dir.path().join("bench.toml"), &text, &|_| None).unwrap();
    cfg.targets.insert(
        "n1".into(),
        fenced::config::TargetConfig {
            name: "n1".into(),
            levels: vec![vec![fenced::config::LevelEntry {
                device: "d".into(),
                port: None,
            }]],
            identities: Default::default(),
            timing: fenced::config::Timing {
                attempt_timeout: Duration::from_secs(5),
                total_timeout: Duration::from_secs(10),
                delay: Duration::ZERO,
                random_delay: Duration::ZERO,
            },
            confirm: Default::default(),
            witnesses: Vec::new(),
        },
    );
    rt.block_on(async {
        let (history, _) = History::open(&cfg.daemon.history, 0).unwrap();
        let mut devices = std::collections::BTreeMap::new();
        devices.insert(
            "d".to_string(),
            DeviceSlot {
                device: Arc::new(Instant0(Mutex::new(PowerState::On))),
                kind: "instant".into(),
                address: "-".into(),
            },
        );
        let socket = cfg.daemon.socket.clone();
        let engine = Engine::new(Arc::new(cfg), devices, history, 0, Clock::system()).unwrap();
        let api = Api::new(engine);
        let listener = bind_unix(&socket, 0o600).unwrap();
        let server = {
            let api = api.clone();
            tokio::spawn(async move { api.serve_unix(listener).await })
        };
        let client = Client::new(Endpoint::Unix(socket), Duration::from_secs(30));
        let mut times = Vec::new();
        for i in 0..201 {
            let action = if i % 2 == 0 { "off" } else { "on" };
            let t = Instant::now();
            let op = fence_once(&client, "n1", action).await;
            times.push(t.elapsed());
            assert_eq!(op.state, fenced::model::OpState::Succeeded);
        }
        api.shutdown();
        let _ = server.await;
        times.sort();
        (times[times.len() / 2], times[times.len() * 9 / 10])
    })
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fenced(dir: &Path, config: &Path) -> Daemon {
    let bin = std::env::var_os("PALISADE_BENCH_FENCED")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_fenced").into());
    let socket = dir.join("fenced.sock");
    let child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < until, "fenced did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the start-up device check finish so it does not overlap the first measurement.
    std::thread::sleep(Duration::from_millis(500));
    Daemon { child }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct LabBench {
    lab: BackgroundLab,
    dir: tempfile::TempDir,
    pw: PathBuf,
}

fn lab_bench(nodes: usize, delay_ms: u64) -> LabBench {
    let mut spec = LabSpec::new(nodes, "admin", Secret::new(PASSWORD.as_bytes().to_vec()));
    spec.power_delay = Duration::from_millis(delay_ms);
    let lab = BackgroundLab::start(spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::File::create(&pw)
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    // fenced refuses password files that group or others can read.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    LabBench { lab, dir, pw }
}

fn lab_config(b: &LabBench, suite: u8) -> PathBuf {
    let mut devices = String::new();
    let mut targets = String::new();
    for m in b.lab.bmcs() {
        devices.push_str(&format!(
            "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = {pw:?}\ncipher_suite = {suite}\n\n",
            n = m.name(),
            a = m.addr(),
            pw = b.pw
        ));
        targets.push_str(&format!(
            "[targets.{n}]\nlevels = [[\"bmc-{n}\"]]\nidentities = {{ bmc-{n} = \"{g}\" }}\n\n",
            n = m.name(),
            g = m.guid_text()
        ));
    }
    let path = b.dir.path().join("fenced.toml");
    std::fs::write(&path, config_text(b.dir.path(), &devices, &targets)).unwrap();
    path
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3; utime and
    // stime are fields 14 and 15, in clock ticks.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// CPU time (user + system) of this process's reaped children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Figures of one run of fences through a `fenced` process.
struct Through {
    /// Median request -> confirmed off at the API.
    api: Duration,
    /// Median of a whole `fence_node off` process.
    whole: Duration,
    /// fenced's CPU time per fence (both kinds of fence above, averaged).
    fenced_cpu: Duration,
    /// One `fence_node off` process's CPU time (mean).
    fence_node_cpu: Duration,
}

fn through_fenced(rt: &tokio::runtime::Runtime, delay_ms: u64) -> Through {
    let b = lab_bench(1, delay_ms);
    let config = lab_config(&b, 17);
    let d = start_fenced(b.dir.path(), &config);
    let fence_node = std::env::var_os("PALISADE_BENCH_FENCE_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_fence_node").into());
    let cpu_before = cpu_of(d.child.id());
    let mut fence_node_cpu = Duration::ZERO;
    let socket = b.dir.path().join("fenced.sock");
    let client = Client::new(Endpoint::Unix(socket.clone()), Duration::from_secs(30));
    let bmc = b.lab.bmc("node1").unwrap().clone();
    let mut api = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..RUNS {
        bmc.set_power(true);
        let t = Instant::now();
        let op = rt.block_on(fence_once(&client, "node1", "off"));
        api.push(t.elapsed());
        assert!(op.fenced(), "{op:?}");

        bmc.set_power(true);
        let c = children_cpu();
        let t = Instant::now();
        let out = Command::new(&fence_node)
            .args(["off", "node1", "--reason", "bench"])
            .env("PALISADE_SOCKET", &socket)
            .output()
            .unwrap();
        whole.push(t.elapsed());
        fence_node_cpu += children_cpu().saturating_sub(c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fenced_cpu = cpu_of(d.child.id()).saturating_sub(cpu_before) / (2 * RUNS as u32);
    Through {
        api: median(api),
        whole: median(whole),
        fenced_cpu,
        fence_node_cpu: fence_node_cpu / RUNS as u32,
    }
}

fn fence_ipmilan(power_wait: Option<&str>) -> Option<Duration> {
    if Command::new("fence_ipmilan")
        .arg("--version")
        .output()
        .is_err()
    {
        return None;
    }
    let b = lab_bench(1, 0);
    let bmc = b.lab.bmc("node1").unwrap().clone();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        bmc.set_power(true);
        let mut cmd = Command::new("fence_ipmilan");
        // fence_ipmilan takes the password on its command line (and passes it to ipmitool's
        // argv); that is the agent's own leak, measured here as it is used in the field.
        cmd.args([
            "--lanplus",
            "-a",
            "127.0.0.1",
            "-u",
            &bmc.port().to_string(),
            "-l",
            "admin",
            "-p",
            PASSWORD,
            "-C",
            "3",
            "-o",
            "off",
        ]);
        if let Some(w) = power_wait {
            cmd.arg(format!("--power-wait={w}"));
        }
        let t = Instant::now();
        let out = cmd.output().unwrap();
        times.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!bmc.power());
    }
    Some(median(times))
}

fn idle_rss_run() -> u64 {
    let b = lab_bench(3, 0);
    let config = lab_config(&b, 17);
    let d = start_fenced(b.dir.path(), &config);
    std::thread::sleep(Duration::from_secs(2));
    rss_kib(d.child.id())
}

fn history_commit() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = History::open(&dir.path().join("h.redb"), 0).unwrap();
    let mut times = Vec::new();
    for id in 1..=31 {
        let op = Operation {
            id,
            target: "n".into(),
            action: fenced::model::Action::Off,
            reason: String::new(),
            requested_by: fenced::model::Caller {
                identity: "bench".into(),
            },
            request_id: None,
            state: fenced::model::OpState::Running,
            created_ms: id,
            started_ms: Some(id),
            finished_ms: None,
            delay_ms: 0,
            attempts: vec![],
            pending: vec![],
            witnesses: Vec::new(),
            outcome: None,
            cluster: None,
        };
        let t = Instant::now();
        h.record(&op).unwrap();
        times.push(t.elapsed());
    }
    median(times)
}

fn size_kib(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len() / 1024)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("Palisade fencing figures (medians; {RUNS} runs unless noted)\n");
    println!(
        "durable history write (one redb commit = one fsync here): median {}",
        ms(history_commit())
    );
    let (p50, p90) = engine_overhead(&rt);
    println!(
        "engine overhead, API request -> confirmed, instant device (200 ops): p50 {} p90 {}",
        ms(p50),
        ms(p90)
    );
    for delay in [0, 500] {
        let t = through_fenced(&rt, delay);
        println!(
            "fenced -> lab IPMI BMC (suite 17), power delay {delay} ms: request -> confirmed off {} at the API, {} as a whole `fence_node off` process; CPU per fence: fenced {}, one fence_node process {}",
            ms(t.api),
            ms(t.whole),
            ms(t.fenced_cpu),
            ms(t.fence_node_cpu)
        );
    }
    match fence_ipmilan(None) {
        Some(d) => println!(
            "fence_ipmilan -C 3 -o off vs the same lab BMC, default power_wait: {}",
            ms(d)
        ),
        None => println!("fence_ipmilan not installed: skipped"),
    }
    if let Some(d) = fence_ipmilan(Some("0")) {
        println!(
            "fence_ipmilan -C 3 -o off --power-wait=0 vs the same lab BMC: {}",
            ms(d)
        );
    }
    println!(
        "idle RSS, `fenced run` with 3 IPMI targets: {} KiB",
        idle_rss_run()
    );
    let dir = Path::new(env!("CARGO_BIN_EXE_fenced"))
        .parent()
        .unwrap()
        .to_path_buf();
    let sizes: Vec<String> = [
        "fenced",
        "fence_node",
        "fence_palisade",
        "palisade-sbd",
        "palisade-lab",
    ]
    .iter()
    .map(|name| match size_kib(&dir.join(name)) {
        Some(kib) => format!("{name} {kib} KiB"),
        None => format!("{name} not built"),
    })
    .collect();
    println!("binary sizes ({}): {}", dir.display(), sizes.join(", "));
}
