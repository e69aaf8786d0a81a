//! Our Redfish driver (`drivers::redfish::RedfishDevice`) against the lab's Redfish BMC, with
//! each lie the issue lists. Each test fences the way the engine does (reset, then poll the
//! state until `Off` or the deadline) and checks the honest outcome within its deadline. The
//! lab BMC is itself checked against fence_redfish and the DMTF validator in
//! `redfish_peers.rs`, and the driver against sushy-emulator, so agreement here is not two
//! copies of one mistake.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::redfish::{AuthMode, RedfishConfig, RedfishDevice, TlsVerify};
use drivers::{DeviceError, PowerCommand, PowerDevice, PowerState, Secret};
use hw_tests::lab::redfish::{RedfishBmcHandle, RedfishLab, RedfishLabSpec};
use hw_tests::lab::{EventKind, Fault};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const USER: &str = "admin";
const PASSWORD: &str = "s3cret-pw";

fn spec() -> RedfishLabSpec {
    RedfishLabSpec::new(1, USER, Secret::new(PASSWORD.into()))
}

fn config(lab: &RedfishLab, bmc: &RedfishBmcHandle) -> RedfishConfig {
    let mut c = RedfishConfig::new(bmc.url(), USER, Secret::new(PASSWORD.into()));
    c.tls = TlsVerify::CaFile(lab.ca_path().to_path_buf());
    c.connect_timeout = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(1);
    c.total_timeout = Duration::from_secs(3);
    c.task_poll = Duration::from_millis(20);
    c
}

fn device(lab: &RedfishLab) -> RedfishDevice {
    RedfishDevice::new(config(lab, &lab.bmcs()[0])).unwrap()
}

/// What the engine does: power off, then poll until `Off` (confirmed) or the deadline.
/// Returns the states seen, or the error of the power call.
async fn fence(dev: &RedfishDevice, deadline: Duration) -> Result<Vec<PowerState>, DeviceError> {
    let start = Instant::now();
    dev.power(None, PowerCommand::Off).await?;
    let mut seen = Vec::new();
    while start.elapsed() < deadline {
        let s = dev.status(None).await?;
        if seen.last() != Some(&s) {
            seen.push(s);
        }
        if s == PowerState::Off {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(seen)
}

#[tokio::test]
async fn healthy_bmc_fences_through_a_session_and_deletes_it() {
    let mut s = spec();
    s.power_delay = Duration::from_millis(200);
    let lab = RedfishLab::start(s).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(&lab);
    let id = dev.health().await.unwrap();
    assert_eq!((id.kind.as_str(), Some(id.value)), ("uuid", bmc.uuid(1)));
    assert_eq!(bmc.session_count(), 1);
    let seen = fence(&dev, Duration::from_secs(3)).await.unwrap();
    // The driver reports PoweringOff while the change is pending and Off only once it is.
    assert_eq!(
        seen,
        vec![PowerState::PoweringOff, PowerState::Off],
        "{seen:?}"
    );
    assert!(!bmc.power());
    dev.power(None, PowerCommand::On).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    dev.close().await;
    assert_eq!(bmc.session_count(), 0, "the session is deleted at the end");
    let events = bmc.events();
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::Http { method, path, status: 204 } if method == "POST" && path.ends_with("ComputerSystem.Reset"))), "{events:?}");
}

#[tokio::test]
async fn basic_auth_and_session_or_basic_work_without_sessions() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let mut c = config(&lab, bmc);
    c.auth = AuthMode::Basic;
    let dev = RedfishDevice::new(c).unwrap();
    assert!(fence(&dev, Duration::from_secs(2))
        .await
        .unwrap()
        .ends_with(&[PowerState::Off]));
    assert_eq!(bmc.session_count(), 0, "Basic auth opens no session");
}

#[tokio::test]
async fn a_202_task_is_followed_to_its_end() {
    let mut s = spec();
    s.power_delay = Duration::from_millis(150);
    let lab = RedfishLab::start(s).await.unwrap();
    lab.bmcs()[0].set_fault(Fault::AsyncReset(true));
    let dev = device(&lab);
    let t = Instant::now();
    dev.power(None, PowerCommand::Off).await.unwrap();
    // The task ends with the power change, so power() returned after it.
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn a_task_that_never_ends_times_out_within_the_total_deadline() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    lab.bmcs()[0].set_fault(Fault::EndlessTask(true));
    let dev = device(&lab);
    let t = Instant::now();
    let e = dev.power(None, PowerCommand::Off).await.unwrap_err();
    assert!(matches!(e, DeviceError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("still running"), "{e}");
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn stuck_bmc_is_never_confirmed() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    lab.bmcs()[0].set_fault(Fault::Stuck(true));
    let dev = device(&lab);
    let t = Instant::now();
    let seen = fence(&dev, Duration::from_secs(1)).await.unwrap();
    assert_eq!(seen, vec![PowerState::On]);
    assert!(t.elapsed() < Duration::from_millis(1500));
    assert!(lab.bmcs()[0].power());
}

#[tokio::test]
async fn a_500_on_reset_is_a_refusal_with_the_bmc_message() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    lab.bmcs()[0].set_fault(Fault::ServerError(true));
    let dev = device(&lab);
    let e = dev.power(None, PowerCommand::Off).await.unwrap_err();
    assert!(matches!(e, DeviceError::Refused { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("500") && text.contains("inside the BMC"),
        "{text}"
    );
}

#[tokio::test]
async fn power_state_null_or_missing_is_unknown_never_off() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(&lab);
    for f in [Fault::PowerStateNull(true), Fault::PowerStateMissing(true)] {
        bmc.set_power(false);
        bmc.set_fault(f);
        assert_eq!(
            dev.status(None).await.unwrap(),
            PowerState::Unknown,
            "{f:?}"
        );
        let seen = fence(&dev, Duration::from_millis(300)).await.unwrap();
        assert_eq!(seen, vec![PowerState::Unknown], "{f:?}");
        bmc.set_fault(Fault::PowerStateNull(false));
        bmc.set_fault(Fault::PowerStateMissing(false));
    }
}

#[tokio::test]
async fn several_systems_need_a_system_id_and_it_picks_the_right_uuid() {
    let mut s = spec();
    s.systems = 3;
    let lab = RedfishLab::start(s).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(&lab);
    let e = dev.health().await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DeviceError::Policy { .. }), "{text}");
    assert!(
        text.contains("System1, System2, System3") && text.contains("system_id"),
        "{text}"
    );
    assert!(dev.power(None, PowerCommand::Off).await.is_err());
    assert_eq!(bmc.system_power(1), Some(true), "nothing was switched");

    let mut c = config(&lab, bmc);
    c.system_id = Some("System2".into());
    let dev = RedfishDevice::new(c).unwrap();
    assert_eq!(dev.health().await.unwrap().value, bmc.uuid(2).unwrap());
    fence(&dev, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        (
            bmc.system_power(1),
            bmc.system_power(2),
            bmc.system_power(3)
        ),
        (Some(true), Some(false), Some(true))
    );
    let mut c = config(&lab, bmc);
    c.system_id = Some("System9".into());
    let e = RedfishDevice::new(c).unwrap().health().await.unwrap_err();
    assert!(e.to_string().contains("System9"), "{e}");
}

#[tokio::test]
async fn wrong_uuid_is_visible_in_the_identity() {
    // Two labs, the device configured for the second: the engine's mapping check compares
    // this value with the target's configured identity (see fenced's whole-stack test).
    let mut s = spec();
    s.guid_prefix = "deadbeef".into();
    let lab = RedfishLab::start(s).await.unwrap();
    let id = device(&lab).health().await.unwrap();
    assert!(id.value.starts_with("deadbeef-"), "{id:?}");
}

#[tokio::test]
async fn an_expired_session_mid_operation_logs_in_again_once() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(&lab);
    dev.health().await.unwrap();
    bmc.expire_sessions();
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
    let opened = bmc
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SessionOpened { .. }))
        .count();
    assert_eq!(opened, 2);
    // Sessions refused for good: one re-login, then an auth failure, not a loop.
    bmc.expire_sessions();
    bmc.set_fault(Fault::RefuseAuth(true));
    let e = dev.status(None).await.unwrap_err();
    assert!(matches!(e, DeviceError::AuthFailed { .. }), "{e}");
}

#[tokio::test]
async fn tls_certificate_mismatch_is_refused_and_pins_work() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    let other = RedfishLab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    // Another lab's CA: the certificate is not ours.
    let mut c = config(&lab, bmc);
    c.tls = TlsVerify::CaFile(other.ca_path().to_path_buf());
    let t = Instant::now();
    let e = RedfishDevice::new(c)
        .unwrap()
        .status(None)
        .await
        .unwrap_err();
    assert!(matches!(e, DeviceError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // System roots do not know the lab CA.
    let mut c = config(&lab, bmc);
    c.tls = TlsVerify::SystemRoots;
    assert!(RedfishDevice::new(c).unwrap().status(None).await.is_err());
    // A wrong pin fails, the right one works, and so does insecure.
    let mut c = config(&lab, bmc);
    c.tls = TlsVerify::Fingerprint(Sha256::digest(other.cert_der()).into());
    assert!(RedfishDevice::new(c.clone())
        .unwrap()
        .status(None)
        .await
        .is_err());
    c.tls = TlsVerify::Fingerprint(Sha256::digest(lab.cert_der()).into());
    assert_eq!(
        RedfishDevice::new(c.clone())
            .unwrap()
            .status(None)
            .await
            .unwrap(),
        PowerState::On
    );
    c.tls = TlsVerify::Insecure;
    assert_eq!(
        RedfishDevice::new(c).unwrap().status(None).await.unwrap(),
        PowerState::On
    );
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_times_out() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    let dev = device(&lab);
    // Flipped after a first call, so the hang also hits the kept-alive connection.
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    lab.bmcs()[0].set_fault(Fault::Silent(true));
    let t = Instant::now();
    let e = fence(&dev, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(e, DeviceError::Timeout { .. }), "{e}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn reset_connections_refused_auth_and_garbage_fail_honestly() {
    let lab = RedfishLab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    bmc.set_fault(Fault::ResetConnection(true));
    let e = device(&lab).status(None).await.unwrap_err();
    assert!(matches!(e, DeviceError::Unreachable { .. }), "{e}");
    bmc.set_fault(Fault::ResetConnection(false));
    bmc.set_fault(Fault::RefuseAuth(true));
    let e = device(&lab).status(None).await.unwrap_err();
    assert!(matches!(e, DeviceError::AuthFailed { .. }), "{e}");
    bmc.set_fault(Fault::RefuseAuth(false));
    bmc.set_fault(Fault::Garbage(true));
    let e = device(&lab).status(None).await.unwrap_err();
    assert!(matches!(e, DeviceError::Protocol { .. }), "{e}");
    bmc.set_fault(Fault::Garbage(false));
    bmc.set_fault(Fault::Latency(100));
    assert_eq!(device(&lab).status(None).await.unwrap(), PowerState::On);
}
