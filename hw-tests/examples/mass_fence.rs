//! Mass fencing bench (issue 15): one `palisade-lab ipmi --count N` process and one real
//! `fenced run` with N targets (one IPMI BMC each, identity pinned, limits raised), every fence
//! request sent at once over the Unix socket and each long-polled.
//!
//! For each `fenced` binary given and each BMC power delay it prints, in one line per phase:
//! - `cold`: requests sent as soon as `/healthz` answers (start-up device checks still running);
//! - `warm`: the same, once every device's start-up check has finished;
//! - `refused`: N more requests that the per-target limit refuses (429);
//! - `accept`: N requests on targets with a 30 s fence-race delay, so no device step runs: the
//!   CPU of accepting a request up to its first device step; and fenced's idle RSS (VmRSS of
//!   that fresh daemon once its start-up checks are done, before the first request);
//! - `devices`: `GET /v1/devices` latency and CPU with every device listed, and on-demand
//!   health checks (`POST /v1/devices/{d}/monitor`), one at a time and on every device at once.
//!
//! Each line: how many succeeded / failed, the time to all confirmed (first request sent to
//! last outcome read), fenced's CPU (utime+stime from /proc) over the phase divided by the
//! requests, and fenced's peak RSS (VmHWM) so far. Failures' messages are summarised.
//!
//! Build everything in release first (`cargo build --release -p fenced -p hw-tests --bins
//! --examples`), then run:
//!
//! `target/release/examples/mass_fence --count 1000 --delays 0,200 [--fenced LABEL=PATH]...`
//!
//! Several `--fenced` give several binaries in the same run (before/after figures). `--batch`
//! sends each round as one `POST /v1/fence/batch` (chunks of at most 1000 entries) instead of
//! a request per target; CPU per request is then per entry.

use fenced::client::{Client, Endpoint};
use hw_tests::daemon::FencedProcess;
use hw_tests::mass::{self, Fleet, Outcome, Round, Send};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: mass_fence [--count N] [--delays MS,MS...] [--fenced LABEL=PATH]... [--lab PATH] [--batch]";

struct Opts {
    count: usize,
    delays: Vec<u64>,
    fenced: Vec<(String, PathBuf)>,
    lab: PathBuf,
    /// One `POST /v1/fence/batch` per round instead of a request per target.
    send: Send,
}

fn main() -> ExitCode {
    let mut opts = Opts {
        count: 1000,
        delays: vec![0, 200],
        fenced: Vec::new(),
        lab: hw_tests::bins::target_dir().join("release/palisade-lab"),
        send: Send::Each,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--batch" {
            opts.send = Send::Batch;
            continue;
        }
        let v = args.next();
        match (a.as_str(), v) {
            ("--count", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                opts.count = n.parse().unwrap_or(1000)
            }
            ("--delays", Some(d)) => {
                match d
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<u64>, _>>()
                {
                    Ok(v) => opts.delays = v,
                    Err(e) => {
                        eprintln!("mass_fence: --delays {d}: {e}\n{USAGE}");
                        return ExitCode::from(2);
                    }
                }
            }
            ("--fenced", Some(f)) => {
                let (label, path) = f.split_once('=').unwrap_or(("fenced", f.as_str()));
                opts.fenced.push((label.to_string(), PathBuf::from(path)));
            }
            ("--lab", Some(p)) => opts.lab = PathBuf::from(p),
            _ => {
                eprintln!("mass_fence: bad argument `{a}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if opts.fenced.is_empty() {
        opts.fenced.push((
            "fenced".into(),
            hw_tests::bins::target_dir().join("release/fenced"),
        ));
    }
    // One thread: the children get SIGTERM when the thread that started them dies.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mass_fence: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for (label, bin) in &opts.fenced {
        for &delay in &opts.delays {
            match rt.block_on(run(&opts, label, bin, delay)) {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                }
                Err(e) => {
                    ok = false;
                    eprintln!("mass_fence: {label} at {delay} ms: {e}");
                }
            }
            let _ = std::io::stdout().flush();
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// fenced's utime+stime in seconds, and its VmHWM in KiB.
fn cpu_and_hwm(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks as f64 / hz, hwm)
}

/// fenced's resident set now (VmRSS), in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One line for a phase.
fn line(label: &str, delay: u64, phase: &str, r: &Round, cpu_s: f64, hwm_kib: u64) -> String {
    let n = r.outcomes.len().max(1);
    let mut ok = 0;
    let mut accepted = 0;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    let mut refused = 0;
    for o in &r.outcomes {
        match o {
            Outcome::Succeeded { .. } => ok += 1,
            Outcome::Accepted => accepted += 1,
            Outcome::Failed(m) => {
                failed += 1;
                // Without the target, level and device: counts per reason.
                let short: String = mass::reason_of(m).chars().take(110).collect();
                *reasons.entry(short).or_default() += 1;
            }
            Outcome::Refused(c) => {
                refused += 1;
                *reasons.entry(format!("refused {c}")).or_default() += 1;
            }
        }
    }
    let mut s = format!(
        "{label:>8} delay={delay:>3}ms {phase:<8} ok={ok} accepted={accepted} failed={failed} refused={refused} answered={:.2}s all_ended={:.2}s cpu/req={:.3}ms peak_rss={}KiB",
        r.answered.as_secs_f64(),
        r.ended.as_secs_f64(),
        cpu_s * 1000.0 / n as f64,
        hwm_kib
    );
    let times: Vec<mass::OpTimes> = r
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Succeeded { times, .. } => *times,
            _ => None,
        })
        .collect();
    if let Some(t) = breakdown(&times) {
        let _ = write!(s, "\n           {t}");
    }
    let mut top: Vec<_> = reasons.into_iter().collect();
    top.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (reason, c) in top.into_iter().take(5) {
        let _ = write!(s, "\n           {c} x {reason}");
    }
    s
}

/// Where the succeeded operations' time went (fenced's clock): median / 90th percentile / max
/// of each part, and fenced's own span from the first acceptance to the last outcome.
fn breakdown(times: &[mass::OpTimes]) -> Option<String> {
    let first = times.iter().map(|t| t.created_ms).min()?;
    let last = times.iter().map(|t| t.finished_ms).max()?;
    let q = |f: fn(&mass::OpTimes) -> u64| {
        let mut v: Vec<u64> = times.iter().map(f).collect();
        v.sort_unstable();
        let at = |p: usize| v[(v.len() - 1) * p / 100];
        format!("{}/{}/{}", at(50), at(90), at(100))
    };
    Some(format!(
        "fenced's clock, ms median/p90/max: accepted->first step {}, steps {}, last step->outcome {}, polls {}; first accepted -> last outcome {} ms",
        q(|t| t.to_step),
        q(|t| t.steps),
        q(|t| t.to_outcome),
        q(|t| t.polls),
        last.saturating_sub(first)
    ))
}

async fn wait_healthz(client: &Client, fenced: &mut FencedProcess) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Err(e) = fenced.ready() {
            return Err(e.to_string());
        }
        if let Ok((200, _)) = client
            .raw("GET", "/healthz", None, Some(Duration::from_secs(5)))
            .await
        {
            return Ok(());
        }
        if Instant::now() > until {
            return Err("fenced did not answer /healthz within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until no device's health is `unknown` any more (every start-up check finished).
async fn wait_checked(client: &Client) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        if let Ok(v) = client
            .call("GET", "/v1/devices", None, Some(Duration::from_secs(30)))
            .await
        {
            let unknown = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|d| d.get("health").and_then(Value::as_str) == Some("unknown"))
                        .count()
                })
                .unwrap_or(1);
            if unknown == 0 {
                return t0.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t0.elapsed()
}

/// The median and the largest of `v` (sorted here), in ms.
fn median_max_ms(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    match v {
        [] => (0.0, 0.0),
        _ => (ms(v[v.len() / 2]), ms(v[v.len() - 1])),
    }
}

/// Latency and CPU of reads at the fleet's size, once every device has been checked:
/// `GET /v1/devices` 20 times one after another, `POST /v1/devices/{d}/monitor` on 20 devices
/// one after another, then on every device at once (wall time to the last answer, CPU per
/// check). A failed call is counted, not timed.
async fn devices_line(
    label: &str,
    delay: u64,
    client: &Client,
    names: &[String],
    pid: u32,
) -> String {
    const N: usize = 20;
    let mut failed = 0usize;
    let mut size = 0usize;
    let mut gets = Vec::with_capacity(N);
    let (c0, _) = cpu_and_hwm(pid);
    for _ in 0..N {
        let t = Instant::now();
        match client
            .call("GET", "/v1/devices", None, Some(Duration::from_secs(30)))
            .await
        {
            Ok(v) => {
                gets.push(t.elapsed());
                size = v.as_array().map_or(0, Vec::len);
            }
            Err(_) => failed += 1,
        }
    }
    let (c1, _) = cpu_and_hwm(pid);
    let get_cpu = (c1 - c0) * 1000.0 / N as f64;
    let check = |name: String| {
        let client = client.clone();
        async move {
            let t = Instant::now();
            let r = client
                .call(
                    "POST",
                    &format!("/v1/devices/bmc-{name}/monitor"),
                    None,
                    Some(Duration::from_secs(60)),
                )
                .await;
            let healthy = r
                .as_ref()
                .is_ok_and(|v| v.get("health").and_then(Value::as_str) == Some("healthy"));
            (healthy, t.elapsed())
        }
    };
    let mut one = Vec::with_capacity(N);
    for name in names.iter().take(N) {
        match check(name.clone()).await {
            (true, d) => one.push(d),
            (false, _) => failed += 1,
        }
    }
    let (c0, _) = cpu_and_hwm(pid);
    let t = Instant::now();
    let all = mass::join_local(names.iter().cloned().map(check).collect()).await;
    let all_wall = t.elapsed();
    let (c1, _) = cpu_and_hwm(pid);
    let unhealthy = all.iter().filter(|(ok, _)| !ok).count();
    let mut all_lat: Vec<Duration> = all.into_iter().map(|(_, d)| d).collect();
    let (g_med, g_max) = median_max_ms(&mut gets);
    let (o_med, o_max) = median_max_ms(&mut one);
    let (a_med, a_max) = median_max_ms(&mut all_lat);
    format!(
        "{label:>8} delay={delay:>3}ms devices  GET /v1/devices ({size} devices) median={g_med:.1}ms max={g_max:.1}ms cpu/req={get_cpu:.3}ms; one check median={o_med:.1}ms max={o_max:.1}ms; {n} checks at once all_ended={:.2}s median={a_med:.1}ms max={a_max:.1}ms cpu/check={:.3}ms unhealthy={unhealthy} failed_calls={failed}",
        all_wall.as_secs_f64(),
        (c1 - c0) * 1000.0 / names.len().max(1) as f64,
        n = names.len(),
    )
}

async fn run(opts: &Opts, label: &str, bin: &Path, delay: u64) -> Result<Vec<String>, String> {
    let dir = tempfile::Builder::new()
        .prefix("mass-fence.")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "bench-secret\n").map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
    }
    let lab = Fleet::start(&opts.lab, opts.count, delay, &pw).map_err(|e| e.to_string())?;
    let names = lab.names();
    let send = opts.send;
    let socket = dir.path().join("fenced.sock");
    let client = Client::new(Endpoint::Unix(socket.clone()), Duration::from_secs(60));
    let mut lines = Vec::new();

    let config = dir.path().join("fenced.toml");
    std::fs::write(&config, mass::config(dir.path(), &lab, &pw, 0.0, 2))
        .map_err(|e| e.to_string())?;
    let mut fenced = FencedProcess::spawn(bin, &config, &socket, &dir.path().join("fenced.log"))
        .map_err(|e| e.to_string())?;
    wait_healthz(&client, &mut fenced).await?;
    let pid = fenced.id();

    // Cold: at once after /healthz, start-up checks still under way.
    let (c0, _) = cpu_and_hwm(pid);
    let r = mass::round(&client, &names, "off", true, send).await;
    let (c1, hwm) = cpu_and_hwm(pid);
    lines.push(line(label, delay, "cold", &r, c1 - c0, hwm));

    // Power back on (not measured), then let the start-up checks finish.
    let on = mass::round(&client, &names, "on", true, send).await;
    let on_ok = on
        .outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Succeeded { .. }))
        .count();
    let checked = wait_checked(&client).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = writeln!(
        lines.last_mut().unwrap_or(&mut String::new()),
        "\n           (then {on_ok} powered on in {:.2}s; start-up checks done {:.2}s later)",
        on.ended.as_secs_f64(),
        checked.as_secs_f64()
    );

    // Warm.
    let (c0, _) = cpu_and_hwm(pid);
    let r = mass::round(&client, &names, "off", true, send).await;
    let (c1, hwm) = cpu_and_hwm(pid);
    lines.push(line(label, delay, "warm", &r, c1 - c0, hwm));

    // Refused by the per-target limit.
    let (c0, _) = cpu_and_hwm(pid);
    let r = mass::round(&client, &names, "off", false, send).await;
    let (c1, hwm) = cpu_and_hwm(pid);
    lines.push(line(label, delay, "refused", &r, c1 - c0, hwm));

    // Reads at the fleet's size: `GET /v1/devices` (every device) and on-demand health checks.
    lines.push(devices_line(label, delay, &client, &names, pid).await);
    fenced.stop(Duration::from_secs(10)).await;

    // Accepted, up to the first device step: a fresh history, every target behind a 30 s
    // fence-race delay.
    let _ = std::fs::remove_file(dir.path().join("history.redb"));
    std::fs::write(&config, mass::config(dir.path(), &lab, &pw, 30.0, 2))
        .map_err(|e| e.to_string())?;
    let mut fenced = FencedProcess::spawn(bin, &config, &socket, &dir.path().join("fenced2.log"))
        .map_err(|e| e.to_string())?;
    wait_healthz(&client, &mut fenced).await?;
    wait_checked(&client).await;
    let pid = fenced.id();
    // Idle: started, every device checked once, nothing requested yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);
    let (c0, _) = cpu_and_hwm(pid);
    let r = mass::round(&client, &names, "off", false, send).await;
    let (c1, hwm) = cpu_and_hwm(pid);
    lines.push(line(label, delay, "accept", &r, c1 - c0, hwm));
    let _ = write!(
        lines.last_mut().unwrap_or(&mut String::new()),
        "\n           (idle_rss={idle}KiB: a fresh daemon with {} targets, start-up checks done, before any request)",
        names.len()
    );
    fenced.stop(Duration::from_secs(1)).await;
    drop(lab);
    Ok(lines)
}
