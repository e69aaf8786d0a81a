//! Our IPMI driver and ipmitool against every IPMI vendor profile of
//! `hw_tests::lab::profile::IPMI_PROFILES`: the cipher suites each offers (iLO and XCC only
//! 17), its session limit, and Get Chassis Status that trails a power command.
//!
//! One module per profile (nextest runs them in parallel); `every_ipmi_profile_is_tested`
//! fails when the table gains a profile this file does not list.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ipmitool, password_file, IPMITOOL};
use drivers::ipmi::{CipherSuiteChoice, IpmiConfig, IpmiDevice};
use drivers::{PowerCommand, PowerDevice, PowerState, Secret};
use hw_tests::lab::profile::{ipmi_profile, IpmiProfile, IPMI_PROFILES};
use hw_tests::lab::{BackgroundLab, BmcHandle, EventKind, LabSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USER: &str = "admin";
const PASSWORD: &str = "lab-pw";

fn lab(profile: &'static IpmiProfile, max_sessions: Option<usize>) -> BackgroundLab {
    let mut spec = LabSpec::new(1, USER, Secret::new(PASSWORD.into())).with_profile(profile);
    spec.max_sessions = max_sessions;
    BackgroundLab::start(spec).unwrap()
}

fn device(port: u16, suite: CipherSuiteChoice) -> IpmiDevice {
    let mut cfg = IpmiConfig::new("127.0.0.1", USER, Secret::new(PASSWORD.into()));
    cfg.port = port;
    cfg.cipher_suite = suite;
    cfg.timeout = Duration::from_millis(300);
    IpmiDevice::new(cfg)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn faults_applied(bmc: &BmcHandle, what: &str) -> u32 {
    bmc.events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::FaultApplied(f) if f == what))
        .map(|e| e.count)
        .sum()
}

/// How long a power change may take to show in Get Chassis Status, with room for a loaded
/// machine.
fn settle_time(p: &IpmiProfile) -> Duration {
    p.transition + p.status_lag + Duration::from_secs(3)
}

/// Polls our driver's status until it reads `want`; returns the number of reads. Fails if it
/// ever reads `want` while the lab's node is not there (a read-back that runs ahead of the
/// power would let a fencer confirm too early).
async fn poll_until(dev: &IpmiDevice, bmc: &BmcHandle, want: PowerState, within: Duration) -> u32 {
    let until = Instant::now() + within;
    let mut reads = 0;
    loop {
        let s = dev.status(None).await.unwrap();
        reads += 1;
        if s == want {
            assert_eq!(
                bmc.power(),
                want == PowerState::On,
                "the driver read {want} before the node got there"
            );
            return reads;
        }
        assert!(Instant::now() < until, "still {s} after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn driver_off_and_on_by_read_back(name: &'static str) {
    let p = ipmi_profile(name).unwrap();
    let lab = lab(p, None);
    let bmc = lab.bmcs()[0].clone();
    let (reads, opened) = rt().block_on(async {
        let dev = device(bmc.port(), CipherSuiteChoice::Auto);
        dev.power(None, PowerCommand::Off).await.unwrap();
        // Read now: the lab's event ring keeps the last entries only, and the polls below
        // push the session's opening out of it.
        let opened = bmc.events();
        let off = poll_until(&dev, &bmc, PowerState::Off, settle_time(p)).await;
        dev.power(None, PowerCommand::On).await.unwrap();
        let on = poll_until(&dev, &bmc, PowerState::On, settle_time(p)).await;
        dev.close().await;
        ((off, on), opened)
    });
    // "auto" picked a suite the profile offers (17 where it is the only one).
    let suites: Vec<u8> = opened
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::SessionOpened { suite, .. } => Some(suite),
            _ => None,
        })
        .collect();
    assert!(!suites.is_empty(), "{name}: no session opened");
    assert!(
        suites.iter().all(|s| p.suites.contains(s)),
        "{name}: sessions with suites {suites:?}, offered {:?}",
        p.suites
    );
    if !p.status_lag.is_zero() {
        // The lag was really served: status said "on" after the node was off.
        assert!(
            faults_applied(&bmc, "status-lag") >= 1,
            "{name}: no lagging status read"
        );
    }
    if !(p.transition + p.status_lag).is_zero() {
        assert!(reads.0 >= 2 && reads.1 >= 2, "{name}: reads {reads:?}");
    }
    eprintln!(
        "FIGURE ipmi {name}: status reads until off {}, until on {}",
        reads.0, reads.1
    );
}

fn driver_only_uses_offered_suites(name: &'static str) {
    let p = ipmi_profile(name).unwrap();
    let lab = lab(p, None);
    let bmc = lab.bmcs()[0].clone();
    rt().block_on(async {
        for suite in [3u8, 17] {
            let dev = device(bmc.port(), CipherSuiteChoice::Id(suite));
            let r = dev.health().await;
            dev.close().await;
            if p.suites.contains(&suite) {
                r.unwrap_or_else(|e| panic!("{name}: suite {suite} offered, yet {e}"));
            } else {
                let e = r.expect_err("a suite the BMC does not offer").to_string();
                assert!(e.contains("cipher suite"), "{name} suite {suite}: {e}");
            }
        }
    });
}

fn driver_session_limit(name: &'static str) {
    let p = ipmi_profile(name).unwrap();
    let lab = lab(p, None);
    let bmc = lab.bmcs()[0].clone();
    let limit = p.max_sessions;
    rt().block_on(async {
        // Each device keeps its session open (idle close 20 s): two more than the BMC has slots.
        let devs: Vec<Arc<IpmiDevice>> = (0..limit + 2)
            .map(|_| Arc::new(device(bmc.port(), CipherSuiteChoice::Id(p.suites[0]))))
            .collect();
        let results = health_of_all(&devs).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, limit, "{name}: {results:?}");
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                e.contains("insufficient resources"),
                "{name}: a refusal that says why: {e}"
            );
        }
        for d in &devs {
            d.close().await;
        }
        // Closed sessions free their slots.
        let again = device(bmc.port(), CipherSuiteChoice::Id(p.suites[0]));
        again.health().await.unwrap();
        again.close().await;
    });
    assert!(
        bmc.sessions_peak() <= limit,
        "{name}: {} sessions at once, limit {limit}",
        bmc.sessions_peak()
    );
}

/// Health of every device at once (sessions opened concurrently: each is a UDP exchange, so
/// spawning them all before awaiting any is what makes the BMC see them together).
async fn health_of_all(devs: &[Arc<IpmiDevice>]) -> Vec<Result<(), String>> {
    let handles: Vec<_> = devs
        .iter()
        .cloned()
        .map(|d| {
            tokio::spawn(async move { d.health().await.map(|_| ()).map_err(|e| e.to_string()) })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn ipmitool_against_the_profile(name: &'static str) {
    if !hw_tests::require::needs_command(IPMITOOL, "Debian package ipmitool") {
        return;
    }
    let p = ipmi_profile(name).unwrap();
    let lab = lab(p, None);
    let bmc = lab.bmcs()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), PASSWORD);
    for suite in [3u8, 17] {
        let r = ipmitool(
            bmc.port(),
            USER,
            &pw,
            suite,
            &["chassis", "power", "status"],
        );
        assert_eq!(
            r.ok(),
            p.suites.contains(&suite),
            "{name} -C {suite}: {r:?}"
        );
    }
    let suite = p.suites[0];
    let r = ipmitool(bmc.port(), USER, &pw, suite, &["chassis", "power", "off"]);
    assert!(r.ok(), "{name}: {r:?}");
    let until = Instant::now() + settle_time(p);
    loop {
        let r = ipmitool(
            bmc.port(),
            USER,
            &pw,
            suite,
            &["chassis", "power", "status"],
        );
        assert!(r.ok(), "{name}: {r:?}");
        if r.stdout.trim() == "Chassis Power is off" {
            assert!(
                !bmc.power(),
                "{name}: ipmitool read off before the node was"
            );
            break;
        }
        assert_eq!(r.stdout.trim(), "Chassis Power is on", "{name}: {r:?}");
        assert!(Instant::now() < until, "{name}: never read off");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One module per profile; the list must name every profile of the table.
macro_rules! per_profile {
    ($($p:ident),* $(,)?) => {
        const TESTED: &[&str] = &[$(stringify!($p)),*];
        $(
            mod $p {
                #[test]
                fn driver_off_and_on_by_read_back() {
                    super::driver_off_and_on_by_read_back(stringify!($p));
                }
                #[test]
                fn driver_only_uses_offered_suites() {
                    super::driver_only_uses_offered_suites(stringify!($p));
                }
                #[test]
                fn driver_session_limit() {
                    super::driver_session_limit(stringify!($p));
                }
                #[test]
                fn ipmitool_against_the_profile() {
                    super::ipmitool_against_the_profile(stringify!($p));
                }
            }
        )*
    };
}

per_profile!(palisade, idrac, ilo, openbmc, supermicro, xcc);

#[test]
fn every_ipmi_profile_is_tested() {
    let table: Vec<&str> = IPMI_PROFILES.iter().map(|p| p.name).collect();
    assert_eq!(table, TESTED, "add the new profile to per_profile!");
}
