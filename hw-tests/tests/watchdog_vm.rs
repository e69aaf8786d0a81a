//! The real kernel watchdog path, in a qemu VM with an emulated i6300esb
//! (`-watchdog-action reset`): the shipped `palisade-sbd watch` binary (its real reboot sink)
//! runs inside the VM on a host loop device given as a virtio disk with `cache=none`.
//! Asserted from the host through QMP events and the serial console:
//! (a) a `reset` pill written on the host resets the VM; (b) SIGSTOP of the watcher lets the
//! watchdog reset it; (c) a frozen shared disk resets it; (d) a healthy watcher keeps it up
//! for several watchdog timeouts, and `exit` disarms cleanly. Also `query-watchdog` (sysfs,
//! nothing armed) and `test-watchdog` (armed, never fed: the VM resets), which must never run
//! on the test machine itself.
//!
//! Durations are printed (the figures), never asserted: the machine is shared and noisy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::sbd::Message;
use hw_tests::loopdev::{self, LoopDevice};
use hw_tests::throttle::Throttle;
use hw_tests::vm::{self, Initramfs, Kernel, Vm, VmConfig};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Watchdog timeout on the disk header (i6300esb accepts 1..2046 s); msgwait 2 x that.
const WD: u64 = 2;
const BOOT: Duration = Duration::from_secs(60);

const MODULES: [&str; 8] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "drivers/watchdog/watchdog.ko",
    "drivers/watchdog/i6300esb.ko",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk watchdog i6300esb; do
  insmod /lib/modules/$m.ko
done
while [ ! -b /dev/vda ] || [ ! -c /dev/watchdog0 ]; do sleep 0.1; done
scenario=$(sed -n 's/.*palisade.scenario=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "PALISADE-BOOTED scenario=$scenario"
/bin/palisade-sbd query-watchdog
if [ "$scenario" = testwd ]; then
  echo "PALISADE-TESTWD"
  PALISADE_SBD_TEST_WATCHDOG=reset-this-node /bin/palisade-sbd -w /dev/watchdog0 -1 2 test-watchdog
  echo "PALISADE-TESTWD-RETURNED $?"
  while true; do sleep 1; done
fi
/bin/palisade-sbd -d /dev/vda -n vm -w /dev/watchdog0 watch &
pid=$!
# The watcher says "watching N disk(s)" once it has armed and fed the watchdog.
sleep 3
grep -E '^(VmRSS|VmLck|VmHWM|Threads)' /proc/$pid/status | sed 's/^/PALISADE-MEM /'
echo "PALISADE-WATCHING pid=$pid"
if [ "$scenario" = stop ]; then kill -STOP $pid; echo "PALISADE-STOPPED"; fi
while true; do
  sleep 1
  if kill -0 $pid 2>/dev/null; then echo "PALISADE-ALIVE"; else echo "PALISADE-WATCHER-GONE"; fi
done
"#;

fn binary() -> PathBuf {
    // PALISADE_SBD_BIN=target/release/palisade-sbd measures the release build.
    std::env::var_os("PALISADE_SBD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(hw_tests::bins::palisade_sbd)
}

fn ready() -> bool {
    loopdev::require() && vm::require()
}

struct Lab {
    disk: LoopDevice,
    initrd: PathBuf,
    kernel: Kernel,
    _dir: tempfile::TempDir,
}

fn lab() -> Lab {
    let disk = LoopDevice::new(16, None).unwrap();
    let o = Command::new(hw_tests::bins::palisade_sbd())
        .env_remove("SBD_DEVICE")
        .env("PALISADE_SBD_CONFIG", "")
        .arg("-d")
        .arg(disk.path())
        .args([
            "-1",
            &WD.to_string(),
            "-2",
            "0",
            "-4",
            &(2 * WD).to_string(),
            "create",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kernel = Kernel::find().unwrap();
    let fs = Initramfs::new().unwrap();
    fs.add_text("init", INIT, 0o755).unwrap();
    fs.add_program(&binary(), "bin/palisade-sbd").unwrap();
    fs.add_modules(&kernel, &MODULES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.cpio");
    fs.build(&initrd).unwrap();
    Lab {
        disk,
        initrd,
        kernel,
        _dir: dir,
    }
}

fn boot(lab: &Lab, scenario: &str, prefix: String) -> Vm {
    let vm = Vm::start(&VmConfig {
        kernel: lab.kernel.image.clone(),
        initrd: lab.initrd.clone(),
        append: format!("quiet palisade.scenario={scenario}"),
        disks: vec![lab.disk.path().to_path_buf()],
        watchdog_action: Some("reset".into()),
        shell_prefix: prefix,
    })
    .unwrap();
    let watching = vm.wait_console("PALISADE-WATCHING", BOOT);
    assert!(
        watching.is_some(),
        "VM never started the watcher:\n{}",
        vm.console()
    );
    let c = vm.console();
    assert!(c.contains("watching 1 disk(s), watchdog 2 s"), "{c}");
    for l in c.lines().filter(|l| l.contains("PALISADE-MEM")) {
        eprintln!("figure ({scenario}): {l}");
    }
    vm
}

fn pill(lab: &Lab, m: Message) -> Instant {
    let cfg = [drivers::sbd::DiskConfig {
        path: lab.disk.path().into(),
        uuid: None,
    }];
    drivers::sbd::open_and_deliver(&cfg, "vm", m, "host", Duration::from_secs(3)).unwrap();
    Instant::now()
}

/// A reset the VM caused: the guest's own (sysrq/reboot) or the watchdog's.
fn wait_reset(vm: &mut Vm, within: Duration) -> hw_tests::vm::Event {
    let t = Instant::now();
    while t.elapsed() < within {
        let evs = vm.events();
        if let Some(e) = evs
            .iter()
            .find(|e| e.name == "WATCHDOG" || e.name == "RESET" || e.name == "SHUTDOWN")
        {
            return e.clone();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "VM was not reset within {within:?}; events {:?}\n{}",
        vm.events(),
        vm.console()
    );
}

#[test]
fn a_reset_pill_from_the_host_resets_the_vm() {
    if !ready() {
        return;
    }
    let lab = lab();
    let mut vm = boot(&lab, "pill", String::new());
    let t0 = pill(&lab, Message::Reset);
    let e = wait_reset(&mut vm, Duration::from_secs(10 * WD));
    eprintln!(
        "figure: reset pill -> VM {} after {:?}",
        e.name,
        e.at.saturating_duration_since(t0)
    );
    assert_ne!(
        e.name,
        "WATCHDOG",
        "the watcher itself acted: {:?}",
        vm.events()
    );
    assert!(vm
        .console()
        .contains("SELF-FENCING (Reboot): poison pill `reset` from `host`"));
}

#[test]
fn a_stopped_watcher_is_reset_by_the_watchdog() {
    if !ready() {
        return;
    }
    let lab = lab();
    let mut vm = boot(&lab, "stop", String::new());
    let stopped = vm.wait_console("PALISADE-STOPPED", BOOT).unwrap();
    let e = vm.wait_event("WATCHDOG", Duration::from_secs(10 * WD));
    let e = e.unwrap_or_else(|| panic!("no watchdog reset: {:?}\n{}", vm.events(), vm.console()));
    assert_eq!(e.data["action"], "reset", "{:?}", e.data);
    eprintln!(
        "figure: SIGSTOP -> watchdog reset after {:?} (timeout {WD} s)",
        e.at.saturating_duration_since(stopped)
    );
}

#[test]
fn a_frozen_shared_disk_resets_the_vm() {
    if !ready() || !Throttle::require() {
        return;
    }
    let lab = lab();
    let thr = Throttle::new(&lab.disk.maj_min().unwrap(), 0).unwrap();
    let mut vm = boot(&lab, "freeze", thr.shell_prefix());
    // qemu's I/O threads now wait in the kernel for every read of the disk.
    thr.limit(1).unwrap();
    let t0 = Instant::now();
    let e = wait_reset(&mut vm, Duration::from_secs(10 * WD));
    eprintln!(
        "figure: disk frozen -> VM {} after {:?} (watchdog {WD} s)",
        e.name,
        e.at.saturating_duration_since(t0)
    );
    // Lift the limit before qemu is killed, so its stuck reads complete and it can exit.
    thr.limit(0).unwrap();
    drop(vm);
}

#[test]
fn a_healthy_watcher_keeps_the_vm_up_and_exit_disarms() {
    if !ready() {
        return;
    }
    let lab = lab();
    let mut vm = boot(&lab, "healthy", String::new());
    // query-watchdog read sysfs before the watcher armed the device.
    let c = vm.console();
    assert!(
        c.contains("Identity: i6300ESB timer") && c.contains("State: inactive"),
        "{c}"
    );
    std::thread::sleep(Duration::from_secs(4 * WD));
    assert!(vm.running(), "{}", vm.console());
    assert!(
        !vm.events()
            .iter()
            .any(|e| e.name == "WATCHDOG" || e.name == "RESET"),
        "{:?}",
        vm.events()
    );
    assert!(!vm.console().contains("PALISADE-WATCHER-GONE"));
    pill(&lab, Message::Exit);
    assert!(
        vm.wait_console("PALISADE-WATCHER-GONE", Duration::from_secs(10))
            .is_some(),
        "{}",
        vm.console()
    );
    assert!(vm.console().contains("watchdog disarmed"));
    // Disarmed: no reset for several more timeouts.
    std::thread::sleep(Duration::from_secs(3 * WD));
    assert!(
        !vm.events()
            .iter()
            .any(|e| e.name == "WATCHDOG" || e.name == "RESET"),
        "{:?}\n{}",
        vm.events(),
        vm.console()
    );
}

#[test]
fn test_watchdog_resets_the_vm_through_the_i6300esb() {
    if !ready() {
        return;
    }
    let lab = lab();
    let mut vm = Vm::start(&VmConfig {
        kernel: lab.kernel.image.clone(),
        initrd: lab.initrd.clone(),
        append: "quiet palisade.scenario=testwd".into(),
        disks: vec![lab.disk.path().to_path_buf()],
        watchdog_action: Some("reset".into()),
        shell_prefix: String::new(),
    })
    .unwrap();
    let armed = vm.wait_console("PALISADE-TESTWD", BOOT);
    assert!(armed.is_some(), "{}", vm.console());
    let e = vm.wait_event("WATCHDOG", Duration::from_secs(10 * WD));
    let e = e.unwrap_or_else(|| panic!("no watchdog reset: {:?}\n{}", vm.events(), vm.console()));
    assert_eq!(e.data["action"], "reset");
    let c = vm.console();
    assert!(c.contains("armed with a 2 s timeout and not fed"), "{c}");
    assert!(!c.contains("PALISADE-TESTWD-RETURNED"), "{c}");
}
