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
//!   that fresh daemon once its start-up checks are done, before the first request).
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
    let mut top: Vec<_> = reasons.into_iter().collect();
    top.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (reason, c) in top.into_iter().take(5) {
        let _ = write!(s, "\n           {c} x {reason}");
    }
    s
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
