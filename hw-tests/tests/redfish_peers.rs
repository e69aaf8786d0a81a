//! The Redfish driver and the Redfish lab BMC against real third-party peers, on 127.0.0.1:
//! - our driver fences a `sushy-emulator --fake` system (PyPI sushy-tools 2.2.0);
//! - ClusterLabs `fence_redfish` fences a system of our lab, and is timed beside our driver;
//! - the DMTF Redfish-Protocol-Validator runs against our lab and reports no FAIL.
//!
//! `scripts/install-test-deps.sh` installs the peers; a test whose peer is missing fails, unless
//! a developer's local run allows the skip (`PALISADE_ALLOW_SKIP`, see `hw_tests::require`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::redfish::{AuthMode, RedfishConfig, RedfishDevice, TlsVerify};
use drivers::{PowerCommand, PowerDevice, PowerState, Secret};
use hw_tests::lab::redfish::{RedfishLab, RedfishLabSpec};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "admin";
const PASSWORD: &str = "lab-pw-1";

fn have(program: &str) -> bool {
    let provided_by = match program {
        "sushy-emulator" => "PyPI sushy-tools 2.2.0",
        "rf_protocol_validator" => "PyPI redfish-protocol-validator",
        "fence_redfish" => "Debian package fence-agents",
        _ => "Debian package openssl",
    };
    hw_tests::require::needs_command(program, provided_by)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A child process killed on drop, also when the test panics.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// sushy-emulator's fake driver applies a power change after a random 1–11 s, so the deadline
/// is long; what we measure is our overhead: the gap between two of our status reads, which
/// bounds the time from its change to our confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_driver_fences_a_sushy_emulator_fake_system() {
    if !have("sushy-emulator") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let port = free_port();
    let _sushy = Child(
        Command::new("sushy-emulator")
            .args(["--fake", "-i", "127.0.0.1", "-p", &port.to_string()])
            .arg("--ssl-certificate")
            .arg(&cert)
            .arg("--ssl-key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut cfg = RedfishConfig::new(
        format!("https://127.0.0.1:{port}"),
        USER,
        Secret::new(PASSWORD.into()),
    );
    // sushy-emulator has no SessionService and checks no credentials: Basic fallback.
    cfg.auth = AuthMode::SessionOrBasic;
    // `openssl req -x509` marks its certificate CA:TRUE, as many BMC self-signed certificates
    // are; webpki refuses such a certificate as a server's own (CaUsedAsEndEntity), so
    // `ca_file` cannot trust it and the pinned fingerprint is the way (as openssl prints it).
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fp = fp.trim().rsplit('=').next().unwrap();
    cfg.tls = TlsVerify::Fingerprint(TlsVerify::parse_fingerprint(fp).unwrap());
    let mut with_ca = cfg.clone();
    with_ca.tls = TlsVerify::CaFile(cert.clone());
    cfg.request_timeout = Duration::from_secs(5);
    let dev = RedfishDevice::new(cfg).unwrap();
    let start = Instant::now();
    let id = loop {
        match dev.health().await {
            Ok(id) => break id,
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("sushy never came up: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(id.kind, "uuid");
    let e = RedfishDevice::new(with_ca)
        .unwrap()
        .status(None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("CaUsedAsEndEntity"), "{e}");
    assert_eq!(id.value.len(), 36, "{id:?}");

    async fn wait_for(dev: &RedfishDevice, want: PowerState) -> (Duration, Duration) {
        // Returns (time to confirmation, largest gap between two status reads).
        let t0 = Instant::now();
        let mut last = Instant::now();
        let mut worst_gap = Duration::ZERO;
        loop {
            let s = dev.status(None).await.unwrap();
            let now = Instant::now();
            worst_gap = worst_gap.max(now - last);
            last = now;
            if s == want {
                return (t0.elapsed(), worst_gap);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "still {s} after 20 s"
            );
            assert_ne!(s, PowerState::Unknown);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if dev.status(None).await.unwrap() != PowerState::On {
        dev.power(None, PowerCommand::On).await.unwrap();
        wait_for(&dev, PowerState::On).await;
    }
    let t = Instant::now();
    dev.power(None, PowerCommand::Off).await.unwrap();
    let post = t.elapsed();
    let (confirmed, gap) = wait_for(&dev, PowerState::Off).await;
    eprintln!(
        "FIGURE sushy-emulator --fake: ForceOff POST {post:?}, confirmed off after {confirmed:?} (its random 1-11 s delay); our overhead from its change to our confirmation <= {gap:?} (largest gap between status reads)"
    );
    assert!(gap < Duration::from_millis(500), "{gap:?}");
    dev.close().await;
}

fn fence_redfish(
    port: u16,
    ca: Option<&std::path::Path>,
    action: &str,
) -> (bool, Duration, String) {
    // Options on stdin, as Pacemaker passes them: the password stays out of argv.
    let mut cmd = Command::new("fence_redfish");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ca) = ca {
        cmd.env("REQUESTS_CA_BUNDLE", ca);
    }
    let t = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let insecure = if ca.is_none() { "ssl_insecure=1\n" } else { "" };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!("ip=127.0.0.1\nipport={port}\nusername={USER}\npassword={PASSWORD}\n{insecure}action={action}\n")
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        t.elapsed(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_redfish_fences_our_lab_and_is_timed_beside_our_driver() {
    if !have("fence_redfish") {
        return;
    }
    let lab = RedfishLab::start(RedfishLabSpec::new(1, USER, Secret::new(PASSWORD.into())))
        .await
        .unwrap();
    let bmc = lab.bmcs()[0].clone();
    let port = bmc.addr().port();
    let ca = lab.ca_path().to_path_buf();

    // Verified TLS (the lab's CA) and --ssl-insecure both work.
    let (ok, _, out) = tokio::task::spawn_blocking({
        let ca = ca.clone();
        move || fence_redfish(port, Some(&ca), "off")
    })
    .await
    .unwrap();
    assert!(ok && !bmc.power(), "{out}");
    bmc.set_power(true);
    let (ok, _, out) = tokio::task::spawn_blocking(move || fence_redfish(port, None, "off"))
        .await
        .unwrap();
    assert!(ok && !bmc.power(), "{out}");

    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..7 {
        bmc.set_power(true);
        let ca2 = ca.clone();
        let (ok, took, out) =
            tokio::task::spawn_blocking(move || fence_redfish(port, Some(&ca2), "off"))
                .await
                .unwrap();
        assert!(ok && !bmc.power(), "{out}");
        theirs.push(took);

        bmc.set_power(true);
        let mut cfg = RedfishConfig::new(bmc.url(), USER, Secret::new(PASSWORD.into()));
        cfg.tls = TlsVerify::CaFile(ca.clone());
        // A fresh device per run: discovery, session, reset, read-back, as a cold fence.
        let t = Instant::now();
        let dev = RedfishDevice::new(cfg).unwrap();
        dev.power(None, PowerCommand::Off).await.unwrap();
        while dev.status(None).await.unwrap() != PowerState::Off {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ours.push(t.elapsed());
        dev.close().await;
    }
    let (t, o) = (median(theirs), median(ours));
    eprintln!("FIGURE time to confirmed off against the lab (median of 7): fence_redfish -o off {t:?}, our driver (cold: discovery + session + reset + read-back) {o:?}");
    assert!(o < t, "ours {o:?} vs fence_redfish {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmtf_protocol_validator_reports_no_fail_against_our_lab() {
    if !have("rf_protocol_validator") {
        return;
    }
    let lab = RedfishLab::start(RedfishLabSpec::new(1, USER, Secret::new(PASSWORD.into())))
        .await
        .unwrap();
    let url = lab.bmcs()[0].url();
    let ca = lab.ca_path().to_path_buf();
    let reports = tempfile::tempdir().unwrap();
    let rdir = reports.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("rf_protocol_validator")
            .args([
                "-r",
                &url,
                "-u",
                USER,
                "-p",
                PASSWORD,
                "--report-type",
                "tsv",
            ])
            .arg("--ca-bundle")
            .arg(&ca)
            // The validator passes --ca-bundle only to its main session; the extra sessions it
            // opens (no-auth, TLS-version probes) verify against requests' default bundle, so
            // point that at the lab CA too (with --no-cert-check they fail the same way).
            .env("REQUESTS_CA_BUNDLE", &ca)
            .arg("--report-dir")
            .arg(&rdir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .find(|l| l.starts_with("Summary - PASS"))
        .unwrap_or_else(|| panic!("no summary in: {text}"));
    eprintln!("FIGURE Redfish-Protocol-Validator against the lab: {summary}");
    assert!(summary.contains("FAIL: 0,"), "{summary}\n{text}");
}
