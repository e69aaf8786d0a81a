//! Footprint figures of the release daemons in a VM, for the arm64 fence controller and the
//! amd64 comparison (issue 18): stripped binary sizes, the idle RSS of `fenced run` after 30 s
//! (the shipped default configuration: no devices, no simulator), and the locked and resident
//! memory of `palisade-sbd watch` on a virtio disk whose SBD header the VM's own
//! `palisade-sbd create` wrote, fed to the emulated i6300esb watchdog.
//!
//! Entry point: `scripts/arm64-figures.sh`, which builds the release binaries once per
//! architecture and runs this test with them (`PALISADE_FIGURES_ARCH`, `PALISADE_FENCED_BIN`,
//! `PALISADE_SBD_BIN`). Ignored in the suite: a release cross-build costs many minutes, and
//! the figures are printed, never asserted (the machine is shared and noisy). What it asserts
//! is that both daemons started and were still running when measured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::vm::{self, Arch, Initramfs, Kernel, Shell, Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long fenced idles before its RSS is read (the figure's definition).
const IDLE: Duration = Duration::from_secs(30);
/// Budgets from the issue, printed beside the figures.
const FENCED_RSS_BUDGET_KIB: u64 = 6 * 1024;
const WATCHER_LOCKED_BUDGET_KIB: u64 = 8 * 1024;
/// Generous: TCG emulation of an arm64 guest on 2 shared cores is slow.
const BOOT: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(60);

/// The shipped configuration (no devices, no targets), as the Debian package installs it.
const FENCED_TOML: &str = include_str!("../../packaging/debian/fenced.toml");

fn arch() -> Arch {
    match std::env::var("PALISADE_FIGURES_ARCH").as_deref() {
        Ok("aarch64") | Ok("arm64") => Arch::Aarch64,
        Ok("x86_64") | Ok("amd64") | Err(_) => Arch::X86_64,
        Ok(other) => panic!("PALISADE_FIGURES_ARCH={other}: expected aarch64 or x86_64"),
    }
}

fn bin(var: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run scripts/arm64-figures.sh, which builds the release binaries")
    })
}

/// The guest's `/init`. The disk and watchdog modules load after [`vm::SHELL_INIT`], which
/// loads the virtio core first (Debian's amd64 kernel has it as modules: `virtio_blk` before
/// it fails with unknown symbols).
fn init(arch: Arch) -> String {
    format!(
        "#!/bin/busybox sh\n\
/bin/busybox --install -s /bin\n\
mount -t proc proc /proc\n\
mount -t sysfs sys /sys\n\
mount -t devtmpfs dev /dev\n\
mkdir -p /run/palisade /var/lib/palisade /tmp\n\
{}\
for m in watchdog virtio_blk i6300esb; do insmod /lib/modules/$m.ko 2>/dev/null; done\n\
echo PALISADE-BOOTED {}\n\
while true; do sleep 60; done\n",
        vm::SHELL_INIT,
        arch.name()
    )
}

/// `Key: N kB` from a `/proc/PID/status` text, in KiB.
fn kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/PID/status:\n{status}"))
}

fn mib(k: u64) -> String {
    format!("{:.2} MiB", k as f64 / 1024.0)
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .len()
}

fn status_of(sh: &mut Shell, pid: &str) -> String {
    sh.ok(&format!("cat /proc/{pid}/status"), CMD)
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"))
}

#[test]
#[ignore = "needs release binaries of one architecture: run scripts/arm64-figures.sh"]
fn release_daemons_footprint_in_a_vm() {
    let arch = arch();
    if !vm::require_arch(arch) {
        return;
    }
    let fenced = bin("PALISADE_FENCED_BIN");
    let sbd = bin("PALISADE_SBD_BIN");
    let kernel = Kernel::find_arch(arch).unwrap();

    let fs = Initramfs::new_arch(arch).unwrap();
    fs.add_text("init", &init(arch), 0o755).unwrap();
    fs.add_text("etc/palisade/fenced.toml", FENCED_TOML, 0o644)
        .unwrap();
    fs.add_program(&fenced, "bin/fenced").unwrap();
    fs.add_program(&sbd, "bin/palisade-sbd").unwrap();
    fs.add_modules(&kernel, arch.shell_modules()).unwrap();
    // Debian's amd64 kernel has the watchdog core as a module, the arm64 one builds it in.
    let mut modules = vec![
        "drivers/block/virtio_blk.ko",
        "drivers/watchdog/i6300esb.ko",
    ];
    if kernel
        .modules
        .join("kernel/drivers/watchdog/watchdog.ko")
        .exists()
    {
        modules.push("drivers/watchdog/watchdog.ko");
    }
    fs.add_modules(&kernel, &modules).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.cpio");
    fs.build(&initrd).unwrap();
    // The shared disk: a plain file (qemu opens it O_DIRECT), its header written in the VM.
    let disk = dir.path().join("sbd.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();

    let cfg = VmConfig {
        kernel: kernel.image.clone(),
        initrd,
        // Not `quiet`: a guest that stops early must say where on the console, which every
        // failure quotes. arm64: the PL011 from the first instruction (`earlycon`).
        append: match arch {
            Arch::Aarch64 => "earlycon=pl011,0x9000000".into(),
            Arch::X86_64 => String::new(),
        },
        disks: vec![disk],
        // Never fires while the watcher feeds it; the VM is killed on drop either way.
        watchdog_action: Some("poweroff".into()),
        shell_prefix: String::new(),
    };
    let t = std::time::Instant::now();
    let vm = Vm::start_with_shell_arch(&cfg, arch).unwrap();
    let mut sh = vm
        .shell(BOOT)
        .unwrap_or_else(|e| panic!("no guest shell: {e}\n{}", vm.console()));
    let boot = t.elapsed();
    sh.ok(
        "i=0; while [ ! -b /dev/vda ] || [ ! -c /dev/watchdog0 ]; do i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.1; done",
        CMD,
    )
    .unwrap_or_else(|e| panic!("no /dev/vda or /dev/watchdog0: {e}\n{}", vm.console()));
    let uname = sh.ok("uname -m", CMD).unwrap();
    assert_eq!(uname.trim(), arch.name(), "the guest is not {arch:?}");

    // Our own tool writes the header: watchdog 5 s, msgwait 10 s (sbd's defaults).
    sh.ok("palisade-sbd -d /dev/vda -1 5 -4 10 create", CMD)
        .unwrap();
    let fenced_pid = sh
        .ok(
            "fenced run -c /etc/palisade/fenced.toml </dev/null >/tmp/fenced.log 2>&1 & echo $!",
            CMD,
        )
        .unwrap()
        .trim()
        .to_string();
    let sbd_pid = sh
        .ok(
            "palisade-sbd -d /dev/vda -n vm -w /dev/watchdog0 watch </dev/null >/tmp/sbd.log 2>&1 & echo $!",
            CMD,
        )
        .unwrap()
        .trim()
        .to_string();
    // Ready: fenced's socket exists, and the watcher says it armed and fed the watchdog.
    sh.ok(
        "i=0; until [ -S /run/palisade/fenced.sock ] && grep -q 'watching 1 disk' /tmp/sbd.log; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done",
        CMD,
    )
    .unwrap_or_else(|e| {
        let logs = sh.run("cat /tmp/fenced.log /tmp/sbd.log", CMD);
        panic!("daemons not ready: {e}\nlogs: {logs:?}")
    });
    std::thread::sleep(IDLE);
    let f = status_of(&mut sh, &fenced_pid);
    let w = status_of(&mut sh, &sbd_pid);
    let logs = sh.ok("cat /tmp/fenced.log /tmp/sbd.log", CMD).unwrap();
    assert!(
        f.contains("fenced") && w.contains("palisade-sbd"),
        "the measured processes are not the daemons:\n{f}\n{w}\n{logs}"
    );

    let name = match arch {
        Arch::Aarch64 => "arm64",
        Arch::X86_64 => "amd64",
    };
    let (f_rss, f_hwm) = (kib(&f, "VmRSS"), kib(&f, "VmHWM"));
    let (w_rss, w_lck) = (kib(&w, "VmRSS"), kib(&w, "VmLck"));
    let verdict = |v: u64, budget: u64| if v < budget { "within" } else { "OVER" };
    println!("figures {name} (release, in a {arch:?} VM, guest booted in {boot:.1?}):");
    println!(
        "  fenced          size {} ({} bytes, stripped)",
        mib(size(&fenced) / 1024),
        size(&fenced)
    );
    println!(
        "  palisade-sbd    size {} ({} bytes, stripped)",
        mib(size(&sbd) / 1024),
        size(&sbd)
    );
    println!(
        "  fenced run      idle {}s: VmRSS {} (peak {}), threads {}; budget < {}: {}",
        IDLE.as_secs(),
        mib(f_rss),
        mib(f_hwm),
        kib(&f, "Threads"),
        mib(FENCED_RSS_BUDGET_KIB),
        verdict(f_rss, FENCED_RSS_BUDGET_KIB)
    );
    println!(
        "  sbd watch       VmLck {} VmRSS {}, threads {}; budget locked < {}: {}",
        mib(w_lck),
        mib(w_rss),
        kib(&w, "Threads"),
        mib(WATCHER_LOCKED_BUDGET_KIB),
        verdict(w_lck, WATCHER_LOCKED_BUDGET_KIB)
    );
    println!("  watchdog        i6300esb (PCI) in the VM, fed by the watcher");
}
