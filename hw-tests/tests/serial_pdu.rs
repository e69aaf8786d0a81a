//! The serial-PDU driver against the lab's serial consoles, over a pseudo-terminal (the port
//! opened, locked and configured as a real `/dev/ttyUSB0` would be) and over a console
//! server's TCP port: each model switches and reads back, and the faults a serial line has
//! (noise in a reply, a stuck outlet, silence, no echo, a slow line, a call cancelled half
//! way, a port another program holds) end in the right state or in a failure that says why,
//! never in a wrong state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::serial_pdu::model::{self, APC_AP79XX, BAYTECH_RPC, WTI_NPS};
use drivers::serial_pdu::{
    Endpoint, Model, Parity, SerialLine, SerialPduConfig, SerialPduDevice, Timeouts,
};
use drivers::{DeviceError, PowerCommand, PowerDevice, PowerState, Secret};
use hw_tests::lab::serial::{SerialLab, SerialLabSpec, SerialPduHandle};
use hw_tests::lab::Fault;
use std::path::Path;
use std::time::Duration;

const PASSWORD: &str = "lab-console-pw";

/// The credentials each model's console asks for here: WTI a password only (as the NPS
/// default), APC and BayTech a user and a password.
fn user_of(m: &Model) -> Option<&'static str> {
    (m.name != "wti-nps").then_some("fence")
}

async fn lab(m: &'static Model, outlets: usize) -> SerialLab {
    let mut spec = SerialLabSpec::new(1, outlets, m);
    spec.names = vec!["db1".into(), "db2".into()];
    spec.username = user_of(m).map(str::to_string);
    spec.password = Some(Secret::new(PASSWORD.into()));
    SerialLab::start(spec).await.unwrap()
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_millis(600),
        reply: Duration::from_secs(4),
    }
}

fn serial_endpoint(pdu: &SerialPduHandle, lock_dir: &Path) -> Endpoint {
    Endpoint::Serial(SerialLine {
        path: pdu.pty().unwrap().to_path_buf(),
        baud: 9600,
        parity: Parity::None,
        data_bits: 8,
        stop_bits: 1,
        lock_dir: lock_dir.to_path_buf(),
    })
}

fn tcp_endpoint(pdu: &SerialPduHandle) -> Endpoint {
    let a = pdu.tcp().unwrap();
    Endpoint::Tcp {
        host: a.ip().to_string(),
        port: a.port(),
    }
}

fn device(m: &'static Model, endpoint: Endpoint) -> SerialPduDevice {
    SerialPduDevice::new(SerialPduConfig {
        endpoint,
        model: m,
        username: user_of(m).map(str::to_string),
        password: Some(Secret::new(PASSWORD.into())),
        timeouts: timeouts(),
    })
}

/// Both forms of the one PDU of `lab`: (name, device) over the pty and over TCP.
fn both(
    m: &'static Model,
    lab: &SerialLab,
    lock_dir: &Path,
) -> Vec<(&'static str, SerialPduDevice)> {
    let pdu = &lab.pdus()[0];
    vec![
        ("pty", device(m, serial_endpoint(pdu, lock_dir))),
        ("tcp", device(m, tcp_endpoint(pdu))),
    ]
}

async fn off_on_status(m: &'static Model) {
    let lab = lab(m, 4).await;
    let pdu = &lab.pdus()[0];
    let locks = tempfile::tempdir().unwrap();
    for (how, dev) in both(m, &lab, locks.path()) {
        let ctx = format!("{} over {how}", m.name);
        assert_eq!(
            dev.status(Some("2")).await.unwrap(),
            PowerState::On,
            "{ctx}"
        );
        dev.power(Some("2"), PowerCommand::Off).await.unwrap();
        assert_eq!(pdu.outlet_on(2), Some(false), "{ctx}");
        assert_eq!(
            dev.status(Some("2")).await.unwrap(),
            PowerState::Off,
            "{ctx}"
        );
        // By name too, and the neighbours untouched.
        assert_eq!(
            dev.status(Some("db2")).await.unwrap(),
            PowerState::Off,
            "{ctx}"
        );
        for n in [1, 3, 4] {
            assert_eq!(pdu.outlet_on(n), Some(true), "{ctx}: outlet {n}");
        }
        dev.power(Some("db2"), PowerCommand::On).await.unwrap();
        assert_eq!(
            dev.status(Some("2")).await.unwrap(),
            PowerState::On,
            "{ctx}"
        );
        let outlets = dev.list().await.unwrap();
        assert_eq!(outlets.len(), 4, "{ctx}: {outlets:?}");
        assert_eq!(outlets[0].name.as_deref(), Some("db1"), "{ctx}");
        let id = dev.health().await.unwrap();
        assert_eq!(id.kind, "console", "{ctx}");
        assert!(id.description.contains("4 outlets"), "{ctx}: {id:?}");
        // An outlet the PDU does not have is named, not guessed.
        let e = dev.status(Some("9")).await.unwrap_err();
        assert!(
            matches!(e, DeviceError::NoSuchPort { ref port } if port == "9"),
            "{ctx}: {e}"
        );
    }
    // The commands the console saw are the model's own.
    let seen = pdu.received();
    let off = model::by_name(m.name).unwrap().off.replace("{}", "2");
    assert!(seen.contains(&off), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wti_switches_and_reads_back_over_pty_and_tcp() {
    off_on_status(&WTI_NPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apc_switches_and_reads_back_over_pty_and_tcp() {
    off_on_status(&APC_AP79XX).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baytech_switches_and_reads_back_over_pty_and_tcp() {
    off_on_status(&BAYTECH_RPC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_middle_of_a_status_reply_is_resynchronised_never_misread() {
    for m in model::MODELS {
        let lab = lab(m, 2).await;
        let pdu = &lab.pdus()[0];
        let locks = tempfile::tempdir().unwrap();
        for (how, dev) in both(m, &lab, locks.path()) {
            let ctx = format!("{} over {how}", m.name);
            pdu.set_outlet(1, false);
            pdu.set_outlet(2, true);
            // One noisy reply (noise inside every state word): the driver reads once more.
            pdu.garbage_replies(1);
            assert_eq!(
                dev.status(Some("1")).await.unwrap(),
                PowerState::Off,
                "{ctx}"
            );
            pdu.garbage_replies(1);
            assert_eq!(
                dev.status(Some("2")).await.unwrap(),
                PowerState::On,
                "{ctx}"
            );
            // A line that stays noisy: a failure that says so, never a state.
            pdu.set_fault(Fault::Garbage(true));
            for outlet in ["1", "2"] {
                match dev.status(Some(outlet)).await {
                    Err(e) => {
                        let s = e.to_string();
                        assert!(
                            s.contains("discarded") || s.contains("noise") || s.contains("reply"),
                            "{ctx}: {s}"
                        );
                    }
                    Ok(s) => panic!("{ctx}: a noisy reply read as {s:?}"),
                }
            }
            pdu.set_fault(Fault::Garbage(false));
            assert_eq!(
                dev.status(Some("1")).await.unwrap(),
                PowerState::Off,
                "{ctx}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_outlet_acknowledges_off_and_reads_back_on() {
    for m in model::MODELS {
        let lab = lab(m, 2).await;
        let pdu = &lab.pdus()[0];
        pdu.set_outlet_stuck(1, true);
        let locks = tempfile::tempdir().unwrap();
        for (how, dev) in both(m, &lab, locks.path()) {
            let ctx = format!("{} over {how}", m.name);
            // The PDU says yes; only the read-back tells the truth.
            dev.power(Some("1"), PowerCommand::Off).await.unwrap();
            assert_eq!(
                dev.status(Some("1")).await.unwrap(),
                PowerState::On,
                "{ctx}"
            );
            assert_eq!(pdu.outlet_on(1), Some(true), "{ctx}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_console_is_a_timeout_not_a_state() {
    let lab = lab(&WTI_NPS, 2).await;
    let pdu = &lab.pdus()[0];
    let locks = tempfile::tempdir().unwrap();
    let devs = both(&WTI_NPS, &lab, locks.path());
    // Logged in on the serial line first, so the silence hits a command, not the login.
    assert_eq!(devs[0].1.status(Some("1")).await.unwrap(), PowerState::On);
    pdu.set_fault(Fault::Silent(true));
    for (how, dev) in &devs {
        for e in [
            dev.status(Some("1")).await.unwrap_err(),
            dev.power(Some("1"), PowerCommand::Off).await.unwrap_err(),
        ] {
            assert!(
                matches!(e, DeviceError::Timeout { .. }),
                "{how}: {e} ({e:?})"
            );
        }
    }
    assert_eq!(pdu.outlet_on(1), Some(true));
    // Back: the next call resynchronises and reads the truth.
    pdu.set_fault(Fault::Silent(false));
    for (how, dev) in &devs {
        assert_eq!(
            dev.status(Some("1")).await.unwrap(),
            PowerState::On,
            "{how}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_off_and_a_slow_line_still_switch_and_read_back() {
    for m in model::MODELS {
        let lab = lab(m, 2).await;
        let pdu = &lab.pdus()[0];
        let locks = tempfile::tempdir().unwrap();
        for (how, dev) in both(m, &lab, locks.path()) {
            let ctx = format!("{} over {how}", m.name);
            pdu.set_fault(Fault::EchoOff(true));
            dev.power(Some("1"), PowerCommand::Off).await.unwrap();
            assert_eq!(
                dev.status(Some("1")).await.unwrap(),
                PowerState::Off,
                "{ctx}"
            );
            pdu.set_fault(Fault::EchoOff(false));
            // 1 ms a byte: a status screen trickles for most of a second.
            pdu.set_fault(Fault::SlowLine(1));
            dev.power(Some("1"), PowerCommand::On).await.unwrap();
            assert_eq!(
                dev.status(Some("1")).await.unwrap(),
                PowerState::On,
                "{ctx}"
            );
            pdu.set_fault(Fault::SlowLine(0));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_half_way_is_resynchronised_before_the_next_read() {
    let lab = lab(&WTI_NPS, 2).await;
    let pdu = &lab.pdus()[0];
    let locks = tempfile::tempdir().unwrap();
    let dev = device(&WTI_NPS, serial_endpoint(pdu, locks.path()));
    assert_eq!(dev.status(Some("1")).await.unwrap(), PowerState::On);
    // The engine's deadline drops a status call while the screen still trickles in.
    pdu.set_fault(Fault::SlowLine(3));
    let cut = tokio::time::timeout(Duration::from_millis(150), dev.status(Some("1"))).await;
    assert!(cut.is_err(), "the slow status should not finish in 150 ms");
    pdu.set_fault(Fault::SlowLine(0));
    pdu.set_outlet(1, false);
    // The rest of the old screen (outlet 1 ON) is still on the line: it must not be read.
    assert_eq!(dev.status(Some("1")).await.unwrap(), PowerState::Off);
}

/// A child process killed and reaped on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_process_is_refused_naming_the_holder() {
    let lab = lab(&WTI_NPS, 2).await;
    let pdu = &lab.pdus()[0];
    let tty = pdu.pty().unwrap().to_path_buf();
    let locks = tempfile::tempdir().unwrap();
    let dev = device(&WTI_NPS, serial_endpoint(pdu, locks.path()));

    // A program that honours UUCP lock files (minicom, cu, screen) holds the port.
    let holder = Child(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap(),
    );
    let pid = holder.0.id();
    let lock_file = locks
        .path()
        .join(drivers::serial_pdu::transport::lock_name(&tty));
    std::fs::write(&lock_file, format!("{pid:>10}\n")).unwrap();
    let e = dev.status(Some("1")).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("process {pid}")) && e.contains(&tty.display().to_string()),
        "{e}"
    );
    assert_eq!(
        pdu.received(),
        Vec::<String>::new(),
        "nothing sent to a held port"
    );
    // The holder dies without removing its lock file: the stale file is replaced.
    drop(holder);
    assert_eq!(dev.status(Some("1")).await.unwrap(), PowerState::On);
    // While this device holds the port, a second one (the same fenced) is refused by name.
    let second = device(&WTI_NPS, serial_endpoint(pdu, locks.path()));
    let e = second.status(Some("1")).await.unwrap_err().to_string();
    assert!(e.contains("this fenced itself"), "{e}");
    drop(dev);
    drop(second);

    // A program that ignores lock files but holds an exclusive flock (util-linux flock).
    if !hw_tests::require::needs_command("flock", "util-linux") {
        return;
    }
    let holder = Child(
        std::process::Command::new("flock")
            // --no-fork: flock execs sleep itself, so killing the child leaves nothing behind.
            .args(["--exclusive", "--no-fork"])
            .arg(&tty)
            .args(["sleep", "60"])
            .spawn()
            .unwrap(),
    );
    // Wait until flock really holds the lock: a device opened before that would take the
    // lock itself and keep it (the race a loaded CI machine showed).
    for _ in 0..250 {
        let free = std::process::Command::new("flock")
            .args(["--nonblock", "--exclusive"])
            .arg(&tty)
            .arg("true")
            .status()
            .unwrap()
            .success();
        if !free {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let dev = device(&WTI_NPS, serial_endpoint(pdu, locks.path()));
    let mut last = String::new();
    for _ in 0..50 {
        match dev.status(Some("1")).await {
            Err(e) if e.to_string().contains("flock") => {
                last = e.to_string();
                break;
            }
            other => last = format!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last.contains("flock") && last.contains("fuser"), "{last}");
    assert!(
        !lock_file.exists(),
        "the lock file is removed when the port cannot be opened"
    );
    drop(holder);
}
