//! Interop: our IPMI client against OpenIPMI's `ipmi_sim` (a third-party BMC implementation).

// Tests may panic on failure; the workspace lints are for production code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::ipmi::{CipherSuite, CipherSuiteChoice, IpmiConfig, IpmiDevice, Privilege};
use drivers::{DeviceError, PowerCommand, PowerDevice, PowerState, Secret};
use hw_tests::peers::{free_udp_port, IpmiSim, IPMI_SIM_GUID, IPMI_SIM_PASSWORD, IPMI_SIM_USER};
use std::time::{Duration, Instant};

fn config(port: u16, suite: CipherSuiteChoice, password: &str) -> IpmiConfig {
    let mut cfg = IpmiConfig::new("127.0.0.1", IPMI_SIM_USER, Secret::new(password.into()));
    cfg.port = port;
    cfg.cipher_suite = suite;
    cfg
}

fn device(sim: &IpmiSim, suite: CipherSuiteChoice) -> IpmiDevice {
    IpmiDevice::new(config(sim.port(), suite, IPMI_SIM_PASSWORD))
}

#[tokio::test]
async fn suite_3_reads_guid_and_status_turns_off_and_on() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    let dev = device(&sim, CipherSuiteChoice::Id(3));
    let id = dev.health().await.expect("health");
    assert_eq!(id.kind, "system-guid");
    // From Get Device ID; bmc.emu declares manufacturer 0x1291 (4753), product 0x0f02.
    assert!(
        id.description.contains("manufacturer 4753"),
        "{}",
        id.description
    );
    eprintln!("ipmi_sim identity: {id:?}");
    assert_eq!(
        id.value, IPMI_SIM_GUID,
        "GUID as `ipmitool mc guid` prints it"
    );
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);

    dev.power(None, PowerCommand::Off).await.expect("off");
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
    assert!(!sim.power_on().unwrap());

    dev.power(None, PowerCommand::On).await.expect("on");
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert!(sim.power_on().unwrap());
    dev.close().await;
}

#[tokio::test]
async fn auto_falls_back_to_suite_3_quickly_and_remembers() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    let dev = device(&sim, CipherSuiteChoice::Auto);
    let t = Instant::now();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    let first = t.elapsed();
    // ipmi_sim never answers Get Channel Cipher Suites: one ~300 ms probe, then suite 3.
    assert!(
        first < Duration::from_millis(900),
        "first call took {first:?}"
    );
    assert_eq!(dev.negotiated_suite().await, Some(CipherSuite::SUITE_3));
    dev.close().await;
    let t = Instant::now();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "the answer is remembered"
    );
}

#[tokio::test]
async fn a_stuck_bmc_acknowledges_off_but_status_stays_on() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    sim.set_stuck(true).unwrap();
    let dev = device(&sim, CipherSuiteChoice::Id(3));
    // The device reports what the BMC said; refusing to call this fenced is the engine's job.
    dev.power(None, PowerCommand::Off)
        .await
        .expect("acknowledged");
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    assert!(sim.power_on().unwrap());
}

#[tokio::test]
async fn wrong_password_is_auth_failed() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    let dev = IpmiDevice::new(config(sim.port(), CipherSuiteChoice::Id(3), "wrong"));
    match dev.status(None).await {
        Err(e @ DeviceError::AuthFailed { .. }) => {
            assert!(e.to_string().contains("check user and password"), "{e}")
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    let dev = IpmiDevice::new({
        let mut c = config(sim.port(), CipherSuiteChoice::Id(3), IPMI_SIM_PASSWORD);
        c.username = "nobody".into();
        c
    });
    assert!(matches!(
        dev.status(None).await,
        Err(DeviceError::AuthFailed { .. })
    ));
}

#[tokio::test]
async fn suite_17_is_rejected_with_a_clear_error() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    let dev = device(&sim, CipherSuiteChoice::Id(17));
    let err = dev
        .status(None)
        .await
        .expect_err("ipmi_sim has no suite 17");
    let text = err.to_string();
    assert!(
        matches!(err, DeviceError::Refused { .. }) && text.contains("cipher suite 17"),
        "{err:?}: {text}"
    );
}

#[tokio::test]
async fn nothing_listening_times_out_within_the_deadline() {
    let port = free_udp_port().unwrap();
    let mut cfg = config(port, CipherSuiteChoice::Id(3), IPMI_SIM_PASSWORD);
    cfg.timeout = Duration::from_millis(200);
    cfg.retries = 2;
    let deadline = cfg.exchange_deadline();
    let dev = IpmiDevice::new(cfg);
    let t = Instant::now();
    let err = dev.status(None).await.expect_err("nothing listens");
    let took = t.elapsed();
    assert!(matches!(err, DeviceError::Timeout { .. }), "{err:?}");
    assert!(took >= deadline, "{took:?} < {deadline:?}");
    assert!(took < deadline + Duration::from_millis(300), "{took:?}");
}

#[tokio::test]
async fn a_bmc_reset_is_survived_by_reopening_the_session() {
    let mut sim = IpmiSim::start().expect("start ipmi_sim");
    let dev = device(&sim, CipherSuiteChoice::Id(3));
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    sim.restart().expect("restart ipmi_sim");
    // The kept session is gone on the BMC: one try times out, then a new session answers.
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
}

/// Figures for the report: medians of 5 (run with `--no-capture` to see them).
#[tokio::test]
async fn figures() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut fresh_status = Vec::new();
    let mut kept_status = Vec::new();
    let mut off_confirm = Vec::new();
    let mut fresh_off_confirm = Vec::new();
    let mut health = Vec::new();
    for _ in 0..5 {
        // As a fence agent runs it: a new device (new session), off, then read back.
        let dev = device(&sim, CipherSuiteChoice::Id(3));
        let t = Instant::now();
        dev.power(None, PowerCommand::Off).await.unwrap();
        assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
        fresh_off_confirm.push(t.elapsed());
        dev.power(None, PowerCommand::On).await.unwrap();
        let t = Instant::now();
        let id = dev.health().await.unwrap();
        health.push(t.elapsed());
        assert_eq!(id.value, IPMI_SIM_GUID, "{}", id.description);
        dev.close().await;
    }
    for _ in 0..5 {
        let dev = device(&sim, CipherSuiteChoice::Id(3));
        let t = Instant::now();
        dev.status(None).await.unwrap();
        fresh_status.push(t.elapsed());
        let t = Instant::now();
        dev.status(None).await.unwrap();
        kept_status.push(t.elapsed());
        let t = Instant::now();
        dev.power(None, PowerCommand::Off).await.unwrap();
        assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
        off_confirm.push(t.elapsed());
        dev.power(None, PowerCommand::On).await.unwrap();
        dev.close().await;
    }
    eprintln!(
        "ipmi_sim suite 3, median of 5: status with a new session {:?}, status on a kept session {:?}, off + confirm on a kept session {:?}, off + confirm with a new session {:?}, health (GUID + device id) on a kept session {:?}",
        median(fresh_status),
        median(kept_status),
        median(off_confirm),
        median(fresh_off_confirm),
        median(health)
    );
}

#[tokio::test]
async fn operator_privilege_is_enough_for_power_control() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    let mut cfg = config(sim.port(), CipherSuiteChoice::Id(3), IPMI_SIM_PASSWORD);
    cfg.privilege = Privilege::Operator;
    let dev = IpmiDevice::new(cfg);
    dev.power(None, PowerCommand::Off)
        .await
        .expect("off as operator");
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
}

/// Pins an ipmi_sim quirk rather than our behaviour: its user 1 (the null user, password
/// "test") is limited to USER, yet Set Session Privilege Level ADMINISTRATOR succeeds and
/// Chassis Control works (ipmitool shows the same). Our "raise the user's privilege" error
/// path is therefore tested against the codec-built BMC in drivers/tests, not here. If this
/// test starts failing, ipmi_sim began enforcing the limit: turn it into that check.
#[tokio::test]
async fn ipmi_sim_quirk_grants_administrator_beyond_a_users_limit() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    let mut cfg = config(sim.port(), CipherSuiteChoice::Id(3), "test");
    cfg.username = String::new();
    let dev = IpmiDevice::new(cfg);
    assert_eq!(dev.status(None).await.unwrap(), PowerState::On);
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn suite_0_is_refused_by_default_and_works_only_when_allowed() {
    let sim = IpmiSim::start().expect("start ipmi_sim");
    let mut cfg = config(sim.port(), CipherSuiteChoice::Id(0), IPMI_SIM_PASSWORD);
    let err = IpmiDevice::new(cfg.clone()).status(None).await.unwrap_err();
    assert!(matches!(err, DeviceError::Policy { .. }), "{err:?}");
    cfg.allow_cipher_suite_0 = true;
    assert_eq!(
        IpmiDevice::new(cfg.clone()).status(None).await.unwrap(),
        PowerState::On
    );
    // Why it is refused by default: with suite 0 the password is never checked.
    cfg.password = Secret::new(b"anything".to_vec());
    let dev = IpmiDevice::new(cfg);
    dev.power(None, PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(None).await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn sessions_are_really_closed() {
    // ipmi_sim has 63 session slots (it ignores the lab user's max-sess 10): with sessions
    // leaked instead of closed, the 64th Open Session is refused with "insufficient resources
    // to create a session". 100 in a row therefore only work if every Close Session lands.
    let sim = IpmiSim::start().expect("start ipmi_sim");
    for i in 0..100 {
        let dev = device(&sim, CipherSuiteChoice::Id(3));
        let state = dev.status(None).await;
        assert_eq!(state, Ok(PowerState::On), "session {i}");
        dev.close().await;
    }
}
