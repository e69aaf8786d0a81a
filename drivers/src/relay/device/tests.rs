//! Every claim path and every "must not confirm" path of the relay driver, over mock pins
//! with paused time.

use super::*;
use crate::relay::line::{test_cfg, Polarity, Unreadable};
use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
use embedded_hal_mock::eh1::MockError;
use std::time::Duration;

const BUTTON: Mode = Mode::PowerButton {
    press: Duration::from_millis(200),
    long_press: Duration::from_secs(5),
};
const SETTLE: Duration = Duration::from_millis(500);
/// Reads of a sense line that never agrees: at settle, then every 100 ms up to settle + 2 s.
const STUCK_READS: usize = 21;

fn io_err() -> MockError {
    MockError::Io(std::io::ErrorKind::Other)
}

/// One line, its output mock and (if any) its sense mock, whose expectations are checked
/// by `done`.
struct Bench {
    dev: RelayDevice<Mock, Mock>,
    out: Mock,
    sense: Option<Mock>,
}

impl Bench {
    fn new(cfg: LineConfig, out: &[T], sense: Option<&[T]>) -> Bench {
        let out = Mock::new(out);
        let sense = sense.map(Mock::new);
        let pins = LinePins {
            output: out.clone(),
            sense: sense.clone(),
        };
        let dev = RelayDevice::new("bench", vec![(cfg, pins)]).unwrap();
        Bench { dev, out, sense }
    }

    fn done(mut self) {
        self.out.done();
        if let Some(s) = self.sense.as_mut() {
            s.done();
        }
    }
}

fn err_text(e: &DeviceError) -> String {
    e.to_string()
}

// ---- claim paths ----

#[tokio::test(start_paused = true)]
async fn cut_with_sense_confirms_off_only_after_settle() {
    let cfg = test_cfg(Mode::PowerCut, true, false, Polarity::ActiveHigh);
    let b = Bench::new(
        cfg,
        &[T::set(State::High), T::get_state(State::High)],
        Some(&[T::get(State::Low), T::get(State::Low)]),
    );
    let t0 = Instant::now();
    b.dev.power(None, PowerCommand::Off).await.unwrap();
    assert!(
        t0.elapsed() >= SETTLE,
        "sense believed inside the settle time"
    );
    let (state, basis) = b.dev.read_back(None).await.unwrap();
    assert_eq!((state, basis), (PowerState::Off, Basis::SenseLine));
    assert!(b.dev.warnings().is_empty());
    b.done();
}

#[tokio::test(start_paused = true)]
async fn status_waits_out_the_settle_time_after_a_switch() {
    // The sense line is read once by `status` only: a cut line with sense but where the switch
    // already agreed at the first read; then a second status immediately after must not wait.
    let cfg = test_cfg(Mode::PowerCut, true, false, Polarity::ActiveHigh);
    let b = Bench::new(
        cfg,
        &[T::set(State::Low), T::get_state(State::Low)],
        Some(&[T::get(State::High), T::get(State::High)]),
    );
    let t0 = Instant::now();
    b.dev.power(None, PowerCommand::On).await.unwrap();
    let after_power = t0.elapsed();
    assert_eq!(b.dev.status(None).await.unwrap(), PowerState::On);
    assert_eq!(t0.elapsed(), after_power, "status waited although settled");
    assert!(after_power >= SETTLE);
    b.done();
}

#[tokio::test(start_paused = true)]
async fn cut_without_sense_with_flag_confirms_from_output_and_says_so() {
    let cfg = test_cfg(Mode::PowerCut, false, true, Polarity::ActiveLow);
    let b = Bench::new(
        cfg,
        &[
            T::set(State::Low),
            T::get_state(State::Low),
            T::get_state(State::Low),
            T::get_state(State::Low),
        ],
        None,
    );
    b.dev.power(None, PowerCommand::Off).await.unwrap();
    let (state, basis) = b.dev.read_back(None).await.unwrap();
    assert_eq!(state, PowerState::Off);
    assert_eq!(basis.to_string(), "relay output read back, no sense line");
    // What the engine records with the confirmed step.
    assert_eq!(
        b.dev.read_back_basis(None).as_deref(),
        Some("relay output read back, no sense line")
    );
    assert_eq!(b.dev.read_back_basis(Some("no-such-line")), None);
    let w = b.dev.warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("relay output read back, no sense line"),
        "{w:?}"
    );
    let id = b.dev.health().await.unwrap();
    assert!(
        id.description
            .contains("off, relay output read back, no sense line"),
        "{}",
        id.description
    );
    b.done();
}

#[tokio::test(start_paused = true)]
async fn button_with_sense_long_press_then_confirms() {
    let cfg = test_cfg(BUTTON, true, false, Polarity::ActiveHigh);
    let b = Bench::new(
        cfg,
        &[
            T::set(State::High),
            T::get_state(State::High),
            T::set(State::Low),
        ],
        Some(&[T::get(State::High), T::get(State::Low), T::get(State::Low)]),
    );
    let t0 = Instant::now();
    b.dev.power(None, PowerCommand::Off).await.unwrap();
    // Long press (5 s), settle, one poll interval until the LED went out.
    assert_eq!(t0.elapsed(), Duration::from_millis(5000 + 500 + 100));
    assert_eq!(b.dev.status(None).await.unwrap(), PowerState::Off);
    b.done();
}

#[tokio::test(start_paused = true)]
async fn button_with_sense_powers_on_with_a_short_press() {
    let cfg = test_cfg(BUTTON, true, false, Polarity::ActiveLow);
    let b = Bench::new(
        cfg,
        &[
            T::set(State::Low),
            T::get_state(State::Low),
            T::set(State::High),
        ],
        Some(&[T::get(State::High)]),
    );
    let t0 = Instant::now();
    b.dev.power(None, PowerCommand::On).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(200 + 500));
    b.done();
}

// ---- must-not-confirm paths ----

#[tokio::test(start_paused = true)]
async fn button_without_sense_never_confirms() {
    // Even with the flag: a press leaves nothing to read.
    for flag in [false, true] {
        let cfg = test_cfg(BUTTON, false, flag, Polarity::ActiveHigh);
        let b = Bench::new(
            cfg,
            &[
                T::set(State::High),
                T::get_state(State::High),
                T::set(State::Low),
            ],
            None,
        );
        // The long press happens (the mock checks it), then the call fails at once with
        // the reason: nothing could ever confirm it, so no read-back loop is started.
        let e = b.dev.power(None, PowerCommand::Off).await.unwrap_err();
        assert_eq!(e.code(), "policy", "{e}");
        let text = err_text(&e);
        assert!(
            text.contains("power button without a sense line")
                && text.contains("NOT confirmed off"),
            "{text}"
        );
        let (state, basis) = b.dev.read_back(None).await.unwrap();
        assert_eq!(state, PowerState::Unknown);
        assert_eq!(basis, Basis::NotReadable(Unreadable::ButtonWithoutSense));
        assert!(b.dev.warnings()[0].contains("never confirms"));
        // Power on is refused outright: a press on a running node would shut it down.
        let e = b.dev.power(None, PowerCommand::On).await.unwrap_err();
        assert_eq!(e.code(), "policy");
        assert!(err_text(&e).contains("refused without a sense line"));
        b.done();
    }
}

#[tokio::test(start_paused = true)]
async fn cut_without_sense_and_without_flag_never_confirms() {
    let cfg = test_cfg(Mode::PowerCut, false, false, Polarity::ActiveHigh);
    // No read of the output at status time: the mock would fail on one.
    let b = Bench::new(cfg, &[T::set(State::High), T::get_state(State::High)], None);
    // The relay cuts (the mock checks the write), and the call says at once why that proves
    // nothing, rather than leaving the engine to read `unknown` until its deadline.
    let e = b.dev.power(None, PowerCommand::Off).await.unwrap_err();
    assert_eq!(e.code(), "policy", "{e}");
    let text = err_text(&e);
    assert!(
        text.contains("can never be confirmed")
            && text.contains("confirm_off_by_relay_output_without_sense` is not set")
            && text.contains("NOT confirmed off"),
        "{text}"
    );
    assert_eq!(b.dev.status(None).await.unwrap(), PowerState::Unknown);
    assert!(b.dev.warnings()[0].contains("confirm_off_by_relay_output_without_sense"));
    b.done();
}

#[tokio::test(start_paused = true)]
async fn sense_still_on_after_the_cut_fails_by_name() {
    let cfg = test_cfg(Mode::PowerCut, true, false, Polarity::ActiveHigh);
    let mut sense = vec![T::get(State::High); STUCK_READS];
    sense.push(T::get(State::High));
    let b = Bench::new(
        cfg,
        &[T::set(State::High), T::get_state(State::High)],
        Some(&sense),
    );
    let e = b.dev.power(None, PowerCommand::Off).await.unwrap_err();
    assert_eq!(e.code(), "refused");
    let text = err_text(&e);
    assert!(text.contains("still reads on after 2500 ms"), "{text}");
    assert!(text.contains("NOT confirmed off"), "{text}");
    // A later status still reads the truth: on.
    assert_eq!(b.dev.status(None).await.unwrap(), PowerState::On);
    b.done();
}

#[tokio::test(start_paused = true)]
async fn sense_read_error_claims_nothing() {
    let cfg = test_cfg(Mode::PowerCut, true, false, Polarity::ActiveHigh);
    let b = Bench::new(
        cfg,
        &[T::set(State::High), T::get_state(State::High)],
        Some(&[
            T::get(State::Low).with_error(io_err()),
            T::get(State::Low).with_error(io_err()),
        ]),
    );
    let e = b.dev.power(None, PowerCommand::Off).await.unwrap_err();
    assert_eq!(e.code(), "hardware");
    assert!(err_text(&e).contains("nothing is claimed"), "{e}");
    assert_eq!(b.dev.status(None).await.unwrap_err().code(), "hardware");
    b.done();
}

#[tokio::test(start_paused = true)]
async fn output_read_error_with_flag_claims_nothing() {
    let cfg = test_cfg(Mode::PowerCut, false, true, Polarity::ActiveHigh);
    let b = Bench::new(cfg, &[T::get_state(State::High).with_error(io_err())], None);
    assert_eq!(b.dev.status(None).await.unwrap_err().code(), "hardware");
    b.done();
}

#[tokio::test(start_paused = true)]
async fn pin_write_error_fails_without_waiting() {
    for mode in [Mode::PowerCut, BUTTON] {
        let cfg = test_cfg(mode, true, true, Polarity::ActiveHigh);
        let b = Bench::new(cfg, &[T::set(State::High).with_error(io_err())], Some(&[]));
        let t0 = Instant::now();
        let e = b.dev.power(None, PowerCommand::Off).await.unwrap_err();
        assert_eq!(e.code(), "hardware");
        assert!(
            err_text(&e).contains("writing output test line 1 failed"),
            "{e}"
        );
        assert_eq!(t0.elapsed(), Duration::ZERO);
        b.done();
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_that_does_not_take_is_caught() {
    let cfg = test_cfg(Mode::PowerCut, false, true, Polarity::ActiveHigh);
    let b = Bench::new(cfg, &[T::set(State::High), T::get_state(State::Low)], None);
    let e = b.dev.power(None, PowerCommand::Off).await.unwrap_err();
    assert!(
        err_text(&e).contains("reads back low right after being set high"),
        "{e}"
    );
    b.done();
}

#[tokio::test(start_paused = true)]
async fn button_release_failure_is_reported() {
    let cfg = test_cfg(BUTTON, false, false, Polarity::ActiveHigh);
    let b = Bench::new(
        cfg,
        &[
            T::set(State::High),
            T::get_state(State::High),
            T::set(State::Low).with_error(io_err()),
        ],
        None,
    );
    let e = b.dev.power(None, PowerCommand::Off).await.unwrap_err();
    assert!(err_text(&e).contains("releasing the button"), "{e}");
    b.done();
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_press_releases_the_button() {
    let cfg = test_cfg(BUTTON, false, false, Polarity::ActiveLow);
    let b = Bench::new(
        cfg,
        &[
            T::set(State::Low),
            T::get_state(State::Low),
            T::set(State::High),
        ],
        None,
    );
    let r =
        tokio::time::timeout(Duration::from_secs(1), b.dev.power(None, PowerCommand::Off)).await;
    assert!(
        r.is_err(),
        "the press should still be running at the deadline"
    );
    b.done();
}

// ---- ports and configuration ----

#[tokio::test(start_paused = true)]
async fn ports_name_lines() {
    let mut a = test_cfg(Mode::PowerCut, false, false, Polarity::ActiveHigh);
    let mut c = a.clone();
    a.name = "a".into();
    c.name = "c".into();
    let mocks = [Mock::new(&[]), Mock::new(&[])];
    let pins = |m: &Mock| LinePins::<Mock, Mock> {
        output: m.clone(),
        sense: None,
    };
    let dev = RelayDevice::new("bench", vec![(a, pins(&mocks[0])), (c, pins(&mocks[1]))]).unwrap();
    assert_eq!(dev.status(None).await.unwrap_err().code(), "no_such_port");
    assert_eq!(
        dev.status(Some("b")).await.unwrap_err().code(),
        "no_such_port"
    );
    assert_eq!(dev.status(Some("c")).await.unwrap(), PowerState::Unknown);
    let listed = dev.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].id, "c");
    let id = dev.health().await.unwrap();
    assert_eq!(id.kind, "relay-board");
    assert!(
        id.description
            .contains("a (power cut, test line 1): unknown"),
        "{}",
        id.description
    );
    for mut m in mocks {
        m.done();
    }
}

#[test]
fn inconsistent_configs_are_refused() {
    // Never touched: a refused configuration drives no pin. One shared mock checks that.
    let mut idle = Mock::new(&[]);
    let pins = |sense: bool| LinePins::<Mock, Mock> {
        output: idle.clone(),
        sense: sense.then(|| idle.clone()),
    };
    let cut = test_cfg(Mode::PowerCut, false, false, Polarity::ActiveHigh);
    let twice = RelayDevice::new(
        "b",
        vec![(cut.clone(), pins(false)), (cut.clone(), pins(false))],
    );
    assert!(twice
        .unwrap_err()
        .to_string()
        .contains("two lines have this name"));
    let missing = RelayDevice::new("b", vec![(cut.clone(), pins(true))]);
    assert!(missing.unwrap_err().to_string().contains("given together"));
    let short = Mode::PowerButton {
        press: Duration::from_secs(5),
        long_press: Duration::from_secs(5),
    };
    let button = test_cfg(short, false, false, Polarity::ActiveHigh);
    let e = RelayDevice::new("b", vec![(button, pins(false))]).unwrap_err();
    assert!(e.to_string().contains("cannot force the node off"));
    assert!(RelayDevice::<Mock, Mock>::new("b", vec![]).is_err());
    idle.done();
}

#[test]
fn relay_errors_map_to_device_errors() {
    let busy = RelayError::LineBusy {
        chip: "/dev/gpiochip0".into(),
        line: 17,
        consumer: "gpioset".into(),
    };
    let d = DeviceError::from(busy);
    assert_eq!(d.code(), "hardware");
    let t = d.to_string();
    assert!(
        t.contains("/dev/gpiochip0 line 17") && t.contains("`gpioset`"),
        "{t}"
    );
    // Local hardware: no hint about networks.
    assert!(!t.contains("network"), "{t}");
    let read = DeviceError::from(RelayError::PinRead {
        line: "n1".into(),
        pin: "/dev/gpiochip0 line 3".into(),
        detail: "EIO".into(),
    });
    assert_eq!(read.code(), "hardware");
    assert!(!read.to_string().contains("malformed"), "{read}");
}
