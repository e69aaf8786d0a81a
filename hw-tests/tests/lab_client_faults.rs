//! Our IPMI client (`drivers::ipmi::IpmiDevice`) against the lab BMC with each fault knob.
//! The lab BMC itself is checked against ipmitool and fence_ipmilan in `lab_ipmitool.rs`, so
//! agreement here is not two copies of one mistake.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::ipmi::message::{Body, Command, Empty, PRIV_OPERATOR};
use drivers::ipmi::{
    CipherSuite, CipherSuiteChoice, ClientConfig, IpmiConfig, IpmiDevice, Privilege, Session,
};
use drivers::{DeviceError, PowerCommand, PowerDevice, PowerState, Secret};
use hw_tests::lab::node::PowerEvent;
use hw_tests::lab::{BmcHandle, EventKind, Fault, Lab, LabSpec, LabUser};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USER: &str = "u";
const PASSWORD: &str = "p";

fn spec() -> LabSpec {
    LabSpec::new(1, USER, Secret::new(PASSWORD.into()))
}

fn device(bmc: &BmcHandle, suite: CipherSuiteChoice) -> IpmiDevice {
    let mut cfg = IpmiConfig::new("127.0.0.1", USER, Secret::new(PASSWORD.into()));
    cfg.port = bmc.port();
    cfg.cipher_suite = suite;
    cfg.timeout = Duration::from_millis(200);
    cfg.retries = 2;
    IpmiDevice::new(cfg)
}

#[tokio::test]
async fn healthy_bmc_auto_picks_suite_17_and_fences() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(bmc, CipherSuiteChoice::Auto);
    let id = dev.health().await.unwrap();
    assert_eq!(id.value, bmc.guid_text());
    assert_eq!(dev.negotiated_suite().await, Some(CipherSuite::SUITE_17));
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
    assert!(!bmc.power());
    dev.power(None, PowerCommand::On).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    dev.close().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(bmc.session_count(), 0);
}

#[tokio::test]
async fn stuck_acknowledges_off_but_status_stays_on() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(bmc, CipherSuiteChoice::Id(3));
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    // Flipped mid-operation, on a kept session.
    bmc.set_fault(Fault::Stuck(true));
    dev.power(None, PowerCommand::Off)
        .await
        .expect("acknowledged");
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert!(bmc.power());
    assert!(bmc
        .events()
        .iter()
        .any(|e| e.kind == EventKind::FaultApplied("stuck")));
    bmc.set_fault(Fault::Stuck(false));
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn power_on_fails_acknowledges_on_and_stays_off() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    bmc.set_fault(Fault::PowerOnFails(true));
    let dev = device(bmc, CipherSuiteChoice::Id(17));
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
    dev.power(None, PowerCommand::On)
        .await
        .expect("acknowledged");
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
    assert!(!bmc.power());
}

#[tokio::test]
async fn refuse_auth_is_auth_failed() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    bmc.set_fault(Fault::RefuseAuth(true));
    for suite in [3, 17] {
        let dev = device(bmc, CipherSuiteChoice::Id(suite));
        match dev.status(None).await {
            Err(DeviceError::AuthFailed { detail, .. }) => {
                assert!(detail.contains("invalid integrity check"), "{detail}")
            }
            other => panic!("suite {suite}: expected AuthFailed, got {other:?}"),
        }
    }
    assert_eq!(bmc.session_count(), 0, "refused sessions are freed at once");
}

#[tokio::test]
async fn wrong_password_and_wrong_user_are_auth_failed() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let mut cfg = IpmiConfig::new("127.0.0.1", USER, Secret::new(b"wrong".to_vec()));
    cfg.port = bmc.port();
    cfg.cipher_suite = CipherSuiteChoice::Id(17);
    let err = IpmiDevice::new(cfg.clone()).status(None).await.unwrap_err();
    assert!(matches!(err, DeviceError::AuthFailed { .. }), "{err:?}");
    cfg.username = "nobody".into();
    cfg.password = Secret::new(PASSWORD.into());
    let err = IpmiDevice::new(cfg).status(None).await.unwrap_err();
    assert!(
        matches!(&err, DeviceError::AuthFailed { detail, .. } if detail.contains("unauthorized name")),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(bmc.session_count(), 0, "{:#?}", bmc.events());
}

#[tokio::test]
async fn garbage_is_an_error_never_a_state() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    bmc.set_fault(Fault::Garbage(true));
    for _ in 0..3 {
        let mut cfg = device(bmc, CipherSuiteChoice::Id(3)).config().clone();
        cfg.timeout = Duration::from_millis(100);
        cfg.retries = 1;
        let dev = IpmiDevice::new(cfg);
        let r = dev.status(None).await;
        eprintln!("garbage: status -> {r:?}");
        match r {
            Err(DeviceError::Timeout { .. } | DeviceError::Protocol { .. }) => {}
            // A flipped bit inside RAKP 2's code reads as a wrong password; still no state.
            Err(DeviceError::AuthFailed { .. } | DeviceError::Refused { .. }) => {}
            other => panic!("garbage produced {other:?}"),
        }
        assert!(dev.power(None, PowerCommand::Off).await.is_err());
    }
    assert!(bmc.power(), "no command got through");
    // Garbage mid-session: a kept session sees only errors, then recovers.
    bmc.set_fault(Fault::Garbage(false));
    let dev = device(bmc, CipherSuiteChoice::Id(17));
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    bmc.set_fault(Fault::Garbage(true));
    assert!(dev.status(None).await.is_err());
    bmc.set_fault(Fault::Garbage(false));
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn drop_30_percent_still_works_through_retries() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    bmc.set_fault(Fault::Drop(0.3));
    let mut cfg = IpmiConfig::new("127.0.0.1", USER, Secret::new(PASSWORD.into()));
    cfg.port = bmc.port();
    cfg.cipher_suite = CipherSuiteChoice::Id(17);
    cfg.timeout = Duration::from_millis(100);
    cfg.retries = 5;
    let dev = IpmiDevice::new(cfg);
    for _ in 0..3 {
        assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    }
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
    assert!(bmc
        .events()
        .iter()
        .any(|e| e.kind == EventKind::FaultApplied("dropped")));
}

#[tokio::test]
async fn crash_mid_session_is_a_timeout_and_revival_needs_a_new_session() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(bmc, CipherSuiteChoice::Id(3));
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert_eq!(bmc.session_count(), 1);
    bmc.set_fault(Fault::Crash(true));
    let t = Instant::now();
    let err = dev.status(None).await.unwrap_err();
    assert!(matches!(err, DeviceError::Timeout { .. }), "{err:?}");
    eprintln!("crashed BMC: timeout after {:?}", t.elapsed());
    bmc.set_fault(Fault::Crash(false));
    // The BMC forgot the session; the device opens a new one.
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert!(bmc.events().iter().any(|e| e.kind
        == EventKind::SessionClosed {
            session_id: e_session(bmc),
            reason: "crash"
        }));
}

/// The id of the first session the BMC opened.
fn e_session(bmc: &BmcHandle) -> u32 {
    bmc.events()
        .iter()
        .find_map(|e| match e.kind {
            EventKind::SessionOpened { session_id, .. } => Some(session_id),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn latency_above_the_timeout_is_a_timeout_below_it_works() {
    let lab = Lab::start(spec()).await.unwrap();
    let bmc = &lab.bmcs()[0];
    bmc.set_fault(Fault::Latency(50));
    let dev = device(bmc, CipherSuiteChoice::Id(3));
    let t = Instant::now();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    // Five exchanges (caps, open, RAKP 1, RAKP 3, privilege) and the status, 50 ms each.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    bmc.set_fault(Fault::Latency(1000));
    let mut cfg = dev.config().clone();
    cfg.retries = 1;
    let err = IpmiDevice::new(cfg.clone()).status(None).await.unwrap_err();
    assert!(matches!(err, DeviceError::Timeout { .. }), "{err:?}");
    eprintln!("latency 1000 ms vs timeout 200 ms, 1 retry: {err}");
}

#[tokio::test]
async fn power_delay_and_hook_model_a_real_chassis() {
    let seen: Arc<Mutex<Vec<(String, PowerEvent)>>> = Arc::default();
    let hook_seen = seen.clone();
    let mut s = spec();
    s.power_delay = Duration::from_millis(300);
    s.power_hook = Some(Arc::new(move |name: &str, e| {
        hook_seen.lock().unwrap().push((name.to_string(), e))
    }));
    let lab = Lab::start(s).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(bmc, CipherSuiteChoice::Id(17));
    dev.power(None, PowerCommand::Off).await.unwrap();
    // Acknowledged, not yet done: the engine must poll, as with a real chassis.
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert!(bmc.power_changing());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Applied by the BMC's own timer, before anyone asked.
    assert_eq!(
        *seen.lock().unwrap(),
        [("node1".to_string(), PowerEvent::Off)]
    );
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
    // A power cycle of an off node is refused (§28.3), a hard reset of an on node kills
    // what runs on it but leaves power on.
    bmc.set_power(true);
    bmc.set_power_delay(Duration::ZERO);
    seen.lock().unwrap().clear();
    let cfg = ClientConfig {
        address: bmc.addr(),
        username: USER.into(),
        password: Secret::new(PASSWORD.into()),
        kg: None,
        privilege: 4,
        suite: CipherSuite::SUITE_3,
        timeout: Duration::from_millis(200),
        retries: 1,
    };
    let mut session = Session::open(&cfg).await.unwrap();
    use drivers::ipmi::message::{chassis_control, ChassisControl};
    session
        .call(&ChassisControl {
            control: chassis_control::HARD_RESET,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("node1".to_string(), PowerEvent::Off),
            ("node1".to_string(), PowerEvent::On)
        ]
    );
    assert!(bmc.power());
    bmc.set_power(false);
    let err = session
        .call(&ChassisControl {
            control: chassis_control::POWER_CYCLE,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("0xd5"), "{err}");
    session.close().await;
}

/// Get Self Test Results (App 04h, §20.4): a command the lab BMC does not implement.
struct GetSelfTest;
impl Body for GetSelfTest {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<Self, drivers::ipmi::WireError> {
        Ok(GetSelfTest)
    }
}
impl Command for GetSelfTest {
    const NET_FN: u8 = 0x06;
    const CMD: u8 = 0x04;
    const NAME: &'static str = "Get Self Test Results";
    type Response = Empty;
}

#[tokio::test]
async fn privilege_limits_unknown_commands_and_concurrent_sessions() {
    let mut s = spec();
    s.users.push(LabUser {
        name: "op".into(),
        password: Secret::new(b"oppw".to_vec()),
        max_privilege: PRIV_OPERATOR,
    });
    let lab = Lab::start(s).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let mut cfg = IpmiConfig::new("127.0.0.1", "op", Secret::new(b"oppw".to_vec()));
    cfg.port = bmc.port();
    cfg.cipher_suite = CipherSuiteChoice::Id(17);
    // Administrator is above the user's maximum: Set Session Privilege Level refuses (81h).
    let err = IpmiDevice::new(cfg.clone()).status(None).await.unwrap_err();
    assert!(
        matches!(&err, DeviceError::AuthFailed { detail, .. } if detail.contains("0x81")),
        "{err:?}"
    );
    cfg.privilege = Privilege::Operator;
    let op = IpmiDevice::new(cfg);
    op.power(None, PowerCommand::Off).await.unwrap();
    assert!(!bmc.power());

    let ccfg = ClientConfig {
        address: bmc.addr(),
        username: USER.into(),
        password: Secret::new(PASSWORD.into()),
        kg: None,
        privilege: 4,
        suite: CipherSuite::SUITE_17,
        timeout: Duration::from_millis(200),
        retries: 1,
    };
    let mut session = Session::open(&ccfg).await.unwrap();
    let err = session.call(&GetSelfTest).await.unwrap_err();
    assert!(err.to_string().contains("0xc1"), "{err}");

    // Several consoles at once, each with its own session, served by one task.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let d = device(bmc, CipherSuiteChoice::Id(3));
        set.spawn(async move { d.status(None).await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), Ok(PowerState::Off));
    }
    // 4 devices, `op` and this session. The session whose privilege was refused was closed
    // by our client (Close Session), so it does not hold a BMC slot until the idle timeout.
    assert_eq!(bmc.session_count(), 6, "{:#?}", bmc.events());
    session.close().await;
}

#[tokio::test]
async fn idle_sessions_time_out_and_the_client_reopens() {
    let mut s = spec();
    s.session_timeout = Duration::from_millis(200);
    let lab = Lab::start(s).await.unwrap();
    let bmc = &lab.bmcs()[0];
    let dev = device(bmc, CipherSuiteChoice::Id(3));
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert!(bmc.events().iter().any(|e| matches!(
        e.kind,
        EventKind::SessionClosed {
            reason: "idle timeout",
            ..
        }
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_bmcs_fence_concurrently() {
    let mut s = spec();
    s.count = 100;
    let lab = Lab::start(s).await.unwrap();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for bmc in lab.bmcs() {
        let d = device(bmc, CipherSuiteChoice::Id(17));
        set.spawn(async move {
            d.power(None, PowerCommand::Off).await?;
            let s = d.status(None).await;
            d.close().await;
            s
        });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), Ok(PowerState::Off));
    }
    eprintln!(
        "100 lab BMCs: off + status (new session each) concurrently in {:?}",
        t.elapsed()
    );
    assert!(lab.bmcs().iter().all(|b| !b.power()));
}
