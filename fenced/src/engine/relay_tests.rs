//! The engine with the real relay driver (`drivers::relay::RelayDevice`) over mock pins: a
//! line that can never be read back fails its attempt once, with the reason, and is never
//! switched a second time. A second press of a power button would turn an off node back on,
//! so "pressed exactly once" is checked by the pin mock, which fails on any extra call.

use super::tests::{config, target};
use super::*;
use drivers::relay::{LineConfig, LinePins, Mode, Polarity, RelayDevice};
use drivers::PowerState;
use embedded_hal_mock::eh1::digital::{Mock, State as Pin, Transaction as T};
use std::time::Duration;

/// A power button without a sense line: a press can never be read back.
fn button(name: &str) -> LineConfig {
    LineConfig {
        name: name.into(),
        output_label: "mock line 1".into(),
        sense_label: None,
        polarity: Polarity::ActiveHigh,
        mode: Mode::PowerButton {
            press: Duration::from_millis(200),
            long_press: Duration::from_secs(5),
        },
        sense: None,
        confirm_off_by_relay_output_without_sense: false,
    }
}

/// A power-cut relay without a sense line and without the opt-in.
fn blind_cut(name: &str) -> LineConfig {
    LineConfig {
        mode: Mode::PowerCut,
        ..button(name)
    }
}

/// One long press: down, read back at the pin, up. Nothing else may touch the line.
fn one_long_press() -> Vec<T> {
    vec![T::set(Pin::High), T::get_state(Pin::High), T::set(Pin::Low)]
}

struct RelayRig {
    engine: Engine,
    out: Mock,
    _dir: tempfile::TempDir,
}

impl RelayRig {
    /// An engine whose device `relays` is one relay line over a mock pin expecting `pin`,
    /// plus any in-process test devices.
    fn new(
        line: LineConfig,
        pin: &[T],
        targets: Vec<TargetConfig>,
        others: &[(&str, &super::testdev::TestDevice)],
    ) -> RelayRig {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(targets, dir.path());
        // Long enough that a retry inside the operation would have time to happen.
        for t in cfg.targets.values_mut() {
            t.timing.attempt_timeout = Duration::from_secs(10);
            t.timing.total_timeout = Duration::from_secs(120);
        }
        let (history, interrupted) = History::open(&cfg.daemon.history, 0).unwrap();
        let out = Mock::new(pin);
        let dev = RelayDevice::<Mock, Mock>::new(
            "mock board",
            vec![(
                line,
                LinePins {
                    output: out.clone(),
                    sense: None,
                },
            )],
        )
        .unwrap();
        let mut devices = BTreeMap::new();
        devices.insert(
            "relays".to_string(),
            DeviceSlot {
                device: Arc::new(dev),
                kind: "relay".into(),
                address: "mock chip".into(),
            },
        );
        for (n, d) in others {
            devices.insert(
                n.to_string(),
                DeviceSlot {
                    device: Arc::new((*d).clone()),
                    kind: "test".into(),
                    address: "in-process".into(),
                },
            );
        }
        let engine = Engine::new(
            Arc::new(cfg),
            devices,
            history,
            interrupted.len() as u32,
            Clock::system(),
        )
        .unwrap();
        RelayRig {
            engine,
            out,
            _dir: dir,
        }
    }

    async fn run(&self, t: &str, action: Action) -> Operation {
        let by = Requester {
            caller: Caller {
                identity: "uid:0".into(),
            },
            source: "test".into(),
        };
        let r = FenceRequest {
            target: t.into(),
            action,
            reason: "test".into(),
            request_id: None,
            timeout_s: None,
        };
        let a = self.engine.fence(r, &by).await.unwrap();
        self.engine
            .wait_operation(a.id, Duration::from_secs(3600))
            .await
            .unwrap()
    }

    /// The pin saw exactly the expected calls, and no more (the mock panics on an extra one).
    fn done(mut self) {
        self.out.done();
    }
}

fn relay_attempts(op: &Operation) -> Vec<&Attempt> {
    op.attempts
        .iter()
        .filter(|a| a.device == "relays")
        .collect()
}

/// Off and reboot through a power button without a sense line: one long press, then NOT
/// fenced, naming the reason; the attempt is not repeated and a reboot sends no power-on press.
#[tokio::test(start_paused = true)]
async fn a_button_without_sense_is_pressed_once_and_not_fenced_with_the_reason() {
    for action in [Action::Off, Action::Reboot] {
        let r = RelayRig::new(
            button("n1"),
            &one_long_press(),
            vec![target("n1", &[&["relays:n1"]])],
            &[],
        );
        let op = r.run("n1", action).await;
        assert!(!op.fenced(), "{action:?}: {op:?}");
        let Some(Outcome::Failed { message, .. }) = &op.outcome else {
            panic!("{action:?}: {op:?}")
        };
        assert!(
            message.contains("n1 NOT fenced")
                && message.contains("power button without a sense line")
                && message.contains("NOT confirmed off"),
            "{message}"
        );
        assert!(!message.contains("lying"), "{message}");
        let attempts = relay_attempts(&op);
        assert_eq!(attempts.len(), 1, "attempt repeated: {:?}", op.attempts);
        let StepResult::Failed { code, message } = &attempts[0].result else {
            panic!("{:?}", op.attempts)
        };
        assert_eq!(code, "policy");
        assert!(message.contains("relay line n1"), "{message}");
        // It failed at once: no read-back loop ran to the attempt deadline (10 s).
        let took = attempts[0].finished_ms - attempts[0].started_ms;
        assert!(took < 6_000, "attempt took {took} ms (long press is 5 s)");
        r.done();
    }
}

/// A power-cut relay without sense and without the opt-in: cut once, NOT fenced by it; with a
/// second level that can read back, that level fences, and the relay is not switched again.
#[tokio::test(start_paused = true)]
async fn a_blind_cut_is_switched_once_and_the_next_level_decides() {
    let bmc = super::testdev::TestDevice::new(PowerState::On);
    let r = RelayRig::new(
        blind_cut("n1"),
        &[T::set(Pin::High), T::get_state(Pin::High)],
        vec![target("n1", &[&["relays:n1"], &["bmc"]])],
        &[("bmc", &bmc)],
    );
    let op = r.run("n1", Action::Off).await;
    assert!(op.fenced(), "{op:?}");
    let Some(Outcome::Succeeded {
        confirmation: Confirmation::PowerReadBack { level, .. },
        ..
    }) = &op.outcome
    else {
        panic!("{op:?}")
    };
    assert_eq!(*level, 2, "fenced by the relay, which cannot prove it");
    let attempts = relay_attempts(&op);
    assert_eq!(attempts.len(), 1, "{:?}", op.attempts);
    let StepResult::Failed { code, message } = &attempts[0].result else {
        panic!("{:?}", op.attempts)
    };
    assert_eq!(code, "policy");
    assert!(
        message.contains("confirm_off_by_relay_output_without_sense` is not set"),
        "{message}"
    );
    assert_eq!(bmc.state().commands, vec![drivers::PowerCommand::Off]);
    r.done();
}
