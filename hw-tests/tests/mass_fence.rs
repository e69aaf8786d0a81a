//! Mass fencing at suite scale (issue 15): one `palisade-lab ipmi --count 200`, one real
//! `fenced run` with 200 targets, and every request sent at once over the Unix socket. Every
//! operation must succeed by read-back, and every BMC must then say it is off when asked by a
//! third-party console (ipmitool), not only by our own client. The bench
//! (`examples/mass_fence.rs`) measures the same at 1000 targets; no timing is asserted here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ipmitool, password_file, IPMITOOL};
use fenced::client::{Client, Endpoint};
use hw_tests::daemon::FencedProcess;
use hw_tests::mass::{self, Fleet, Outcome, Send};
use std::path::Path;
use std::time::Duration;

const COUNT: usize = 200;

/// The power state every BMC reports to ipmitool (`on`/`off`), eight consoles at a time.
fn power_states(fleet: &Fleet, pw: &str) -> Vec<(String, String)> {
    let jobs: Vec<(String, u16)> = fleet
        .bmcs
        .iter()
        .map(|b| {
            let port = b.addr.rsplit_once(':').unwrap().1.parse().unwrap();
            (b.name.clone(), port)
        })
        .collect();
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(name, port)| {
                let pw = pw.to_string();
                std::thread::spawn(move || {
                    let r = ipmitool(port, "admin", &pw, 17, &["chassis", "power", "status"]);
                    let state = if r.stdout.contains("Chassis Power is off") {
                        "off"
                    } else if r.stdout.contains("Chassis Power is on") {
                        "on"
                    } else {
                        "unreadable"
                    };
                    (
                        name,
                        format!("{state} ({}{})", r.stdout.trim(), r.stderr.trim()),
                    )
                })
            })
            .collect();
        out.extend(handles.into_iter().map(|h| h.join().unwrap()));
    }
    out
}

fn assert_all(fleet: &Fleet, pw: &str, want: &str) {
    let wrong: Vec<_> = power_states(fleet, pw)
        .into_iter()
        .filter(|(_, s)| !s.starts_with(&format!("{want} ")))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {COUNT} BMCs are not {want}: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

fn assert_succeeded(what: &str, r: &mass::Round) {
    let bad: Vec<_> = r
        .outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Succeeded { method, .. } if method == "power_read_back"))
        .collect();
    assert_eq!(r.outcomes.len(), COUNT, "{what}: one outcome per target");
    assert!(
        bad.is_empty(),
        "{what}: {} of {COUNT} did not succeed by read-back: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let mut ids: Vec<u64> = r
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Succeeded { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), COUNT, "{what}: one operation per target");
}

#[test]
fn two_hundred_targets_fenced_at_once_all_read_back_off() {
    if !hw_tests::require::needs_command(IPMITOOL, "ipmitool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), "mass-secret");
    let fleet = Fleet::start(
        Path::new(env!("CARGO_BIN_EXE_palisade-lab")),
        COUNT,
        0,
        Path::new(&pw),
    )
    .unwrap();
    assert_all(&fleet, &pw, "on");
    let config = dir.path().join("fenced.toml");
    std::fs::write(
        &config,
        mass::config(dir.path(), &fleet, Path::new(&pw), 0.0, 10),
    )
    .unwrap();
    let socket = dir.path().join("fenced.sock");
    // A current-thread runtime: fenced gets SIGTERM if this thread dies.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut fenced = FencedProcess::spawn(
        &hw_tests::bins::fenced(),
        &config,
        &socket,
        &dir.path().join("fenced.log"),
    )
    .unwrap();
    fenced.wait_ready(Duration::from_secs(60)).unwrap();
    let client = Client::new(Endpoint::Unix(socket), Duration::from_secs(60));
    let names = fleet.names();

    // A request per target, all at once, as soon as the daemon listens.
    let off = rt.block_on(mass::round(&client, &names, "off", true, Send::Each));
    assert_succeeded("off", &off);
    assert_all(&fleet, &pw, "off");

    // The same fleet back on through one batch request.
    let on = rt.block_on(mass::round(&client, &names, "on", true, Send::Batch));
    assert_succeeded("on (batch)", &on);
    assert_all(&fleet, &pw, "on");
    rt.block_on(fenced.stop(Duration::from_secs(10)));
}
