//! Our SNMP driver against the lab PDU where the protocol's state machines matter: an agent
//! restart (v3 engine boots and time reset) is resynchronised through the authenticated
//! notInTimeWindow report, and a v3 user without privacy (authNoPriv) works when the agent
//! expects it. A metered-by-outlet model (apc-rpdu2) reports each outlet's draw, which falls
//! to 0 W when the outlet or what is plugged into it goes off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::pdu::client::usm_stats;
use drivers::pdu::{
    model, AuthProtocol, ClientConfig, PduConfig, PduDevice, PrivProtocol, Security, UsmUser,
    Version,
};
use drivers::{PowerCommand, PowerDevice, PowerState, Secret};
use hw_tests::lab::snmp::{PduLab, PduLabSpec, PduUser};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn lab(privacy: bool) -> PduLab {
    let mut spec = PduLabSpec::new(1, 2, model::by_name("apc-masterswitch").unwrap());
    spec.user = Some(PduUser {
        name: "fence".into(),
        auth: Some(Secret::new(b"auth-pass-1".to_vec())),
        privacy: privacy.then(|| Secret::new(b"priv-pass-1".to_vec())),
        auth_protocol: AuthProtocol::Sha1,
    });
    PduLab::start(spec).await.unwrap()
}

fn device(lab: &PduLab, privacy: bool) -> PduDevice {
    PduDevice::new(PduConfig {
        client: ClientConfig {
            addr: lab.pdus()[0].addr(),
            security: Security::Usm(UsmUser {
                name: "fence".into(),
                auth: Some((AuthProtocol::Sha1, Secret::new(b"auth-pass-1".to_vec()))),
                privacy: privacy
                    .then(|| (PrivProtocol::Aes128, Secret::new(b"priv-pass-1".to_vec()))),
            }),
            timeout: Duration::from_millis(500),
            retries: 1,
        },
        model: model::by_name("apc-masterswitch").unwrap(),
    })
}

#[tokio::test]
async fn an_agent_restart_is_resynchronised_through_not_in_time_window() {
    let lab = lab(true).await;
    let pdu = &lab.pdus()[0];
    let dev = device(&lab, true);
    assert_eq!(dev.status(Some("1")).await.unwrap(), PowerState::On);
    pdu.restart_engine();
    dev.power(Some("1"), PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(Some("1")).await.unwrap(), PowerState::Off);
    assert_eq!(pdu.outlet_on(1), Some(false));
    assert!(pdu.counter(&usm_stats::oid(usm_stats::NOT_IN_TIME_WINDOWS).to_string()) >= 1);
}

#[tokio::test]
async fn auth_no_priv_works_and_a_level_mismatch_is_refused() {
    let lab = lab(false).await;
    let dev = device(&lab, false);
    assert_eq!(dev.health().await.unwrap().kind, "serial");
    dev.power(Some("2"), PowerCommand::Off).await.unwrap();
    assert_eq!(dev.status(Some("2")).await.unwrap(), PowerState::Off);
    // The same user asking for privacy the agent does not have for it.
    let e = device(&lab, true).status(Some("2")).await.unwrap_err();
    assert!(
        e.to_string().contains("usmStatsUnsupportedSecLevels"),
        "{e}"
    );
}

#[tokio::test]
async fn a_metered_outlet_reports_its_draw_and_zero_once_it_is_off() {
    let rpdu2 = model::by_name("apc-rpdu2").unwrap();
    let lab = PduLab::start(PduLabSpec::new(1, 2, rpdu2)).await.unwrap();
    let pdu = &lab.pdus()[0];
    let dev = PduDevice::new(PduConfig {
        client: ClientConfig {
            addr: pdu.addr(),
            security: Security::Community {
                version: Version::V2c,
                community: Secret::new(b"private".to_vec()),
            },
            timeout: Duration::from_millis(500),
            retries: 1,
        },
        model: rpdu2,
    });
    // The node on outlet 1 draws 118 W while it runs, 0 W once its power went elsewhere.
    let draw = Arc::new(AtomicU32::new(118));
    let d = draw.clone();
    pdu.set_outlet_load(1, Some(Arc::new(move || d.load(Ordering::SeqCst))));
    assert_eq!(dev.power_draw(Some("1")).await.unwrap(), Some(118));
    // Nothing plugged into outlet 2.
    assert_eq!(dev.power_draw(Some("2")).await.unwrap(), Some(0));
    draw.store(1, Ordering::SeqCst);
    assert_eq!(dev.power_draw(Some("1")).await.unwrap(), Some(1));
    // An outlet that is off draws nothing, whatever is plugged in.
    draw.store(118, Ordering::SeqCst);
    dev.power(Some("1"), PowerCommand::Off).await.unwrap();
    assert_eq!(dev.power_draw(Some("1")).await.unwrap(), Some(0));
    // A model without a metered column reports no draw (and sends no request for one).
    let plain = PduDevice::new(PduConfig {
        client: ClientConfig {
            addr: pdu.addr(),
            security: Security::Community {
                version: Version::V2c,
                community: Secret::new(b"private".to_vec()),
            },
            timeout: Duration::from_millis(500),
            retries: 1,
        },
        model: model::by_name("apc-rpdu").unwrap(),
    });
    assert_eq!(plain.power_draw(Some("1")).await.unwrap(), None);
}
