//! A real peer against the serial-console simulator: ClusterLabs `fence_wti` (Debian
//! fence-agents), which was written against real WTI switches, logs in over telnet to the
//! simulated WTI console's TCP form (as behind a console server), reads the plug table,
//! switches an outlet off and on, and lists the plugs. So the simulator's WTI screens are
//! checked by a program that is not ours, and the driver (tests/serial_pdu.rs) is checked
//! against the same screens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::serial_pdu::model;
use drivers::Secret;
use hw_tests::lab::serial::{SerialLab, SerialLabSpec, SerialPduHandle};
use std::process::{Command, Output};

const PASSWORD: &str = "lab-console-pw";

fn have_peers() -> bool {
    hw_tests::require::needs_command("/usr/sbin/fence_wti", "Debian package fence-agents")
        && hw_tests::require::needs_command("telnet", "Debian package telnet")
}

struct Bench {
    lab: SerialLab,
    _rt: tokio::runtime::Runtime,
    tmp: tempfile::TempDir,
    user: Option<&'static str>,
}

fn bench(user: Option<&'static str>) -> Bench {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut spec = SerialLabSpec::new(1, 4, model::by_name("wti").unwrap());
    spec.names = ["db1", "db2"].map(String::from).to_vec();
    spec.username = user.map(str::to_string);
    spec.password = Some(Secret::new(PASSWORD.into()));
    spec.pty = false;
    let lab = rt.block_on(SerialLab::start(spec)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    Bench {
        lab,
        _rt: rt,
        tmp,
        user,
    }
}

impl Bench {
    fn pdu(&self) -> &SerialPduHandle {
        &self.lab.pdus()[0]
    }

    /// Runs fence_wti with `args` against the PDU's TCP port; the password comes from a
    /// script, never argv.
    fn fence_wti(&self, args: &[&str]) -> Output {
        let addr = self.pdu().tcp().unwrap();
        let mut cmd = Command::new("/usr/sbin/fence_wti");
        cmd.args(["--ip", "127.0.0.1", "--ipport", &addr.port().to_string()])
            .arg("--password-script")
            .arg(format!("cat {}", self.tmp.path().join("pw").display()))
            .args(["--shell-timeout", "5", "--login-timeout", "5"]);
        if let Some(u) = self.user {
            cmd.args(["--username", u]);
        }
        cmd.args(args).output().unwrap()
    }
}

fn out(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn fence_wti_fences_an_outlet_of_the_simulators_tcp_form_and_reads_it_back() {
    if !have_peers() {
        return;
    }
    let b = bench(None);
    let o = b.fence_wti(&["--plug", "2", "-o", "status"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Status: ON"),
        "{}",
        out(&o)
    );

    let o = b.fence_wti(&["--plug", "2", "-o", "off"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Powered OFF"),
        "{}",
        out(&o)
    );
    assert_eq!(b.pdu().outlet_on(2), Some(false));
    for n in [1, 3, 4] {
        assert_eq!(b.pdu().outlet_on(n), Some(true), "outlet {n} untouched");
    }
    // fence_wti's own lowercase form, confirmed with `,y`.
    assert!(
        b.pdu().received().iter().any(|l| l == "/off 2,y"),
        "{:?}",
        b.pdu().received()
    );

    // Status of an outlet that is off: the fence-agents convention is exit 2.
    let o = b.fence_wti(&["--plug", "2", "-o", "status"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Status: OFF"),
        "{}",
        out(&o)
    );

    let o = b.fence_wti(&["--plug", "2", "-o", "on"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(b.pdu().outlet_on(2), Some(true));

    let o = b.fence_wti(&["-o", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let list = String::from_utf8_lossy(&o.stdout).to_string();
    for line in ["1,db1", "2,db2", "3,outlet3", "4,outlet4"] {
        assert!(list.lines().any(|l| l == line), "{line} missing: {list}");
    }
}

#[test]
fn fence_wti_logs_in_with_a_user_and_is_refused_a_wrong_password() {
    if !have_peers() {
        return;
    }
    let b = bench(Some("fence"));
    let o = b.fence_wti(&["--plug", "1", "-o", "off"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(b.pdu().outlet_on(1), Some(false));
    // A wrong password: the console asks again, fence_wti gives up without switching.
    std::fs::write(b.tmp.path().join("pw"), "wrong\n").unwrap();
    let o = b.fence_wti(&["--plug", "1", "-o", "on"]);
    assert_ne!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(b.pdu().outlet_on(1), Some(false));
}

#[test]
fn fence_wti_does_not_report_a_stuck_outlet_off() {
    if !have_peers() {
        return;
    }
    let b = bench(None);
    b.pdu().set_outlet_stuck(3, true);
    // fence-agents poll the status after the switch for --power-timeout seconds.
    let o = b.fence_wti(&["--plug", "3", "-o", "off", "--power-timeout", "2"]);
    assert_ne!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(b.pdu().outlet_on(3), Some(true));
    assert!(
        b.pdu().received().iter().any(|l| l == "/off 3,y"),
        "{:?}",
        b.pdu().received()
    );
}
