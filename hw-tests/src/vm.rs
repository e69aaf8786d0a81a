//! Small qemu VMs for tests that need a real kernel device the test machine must not use
//! itself (a hardware watchdog that resets, later relays and GPIO): Debian's kernel unpacked
//! without installing it, a busybox initramfs built per test, the serial console in a file
//! and QMP events read from a socket. The VM is killed on drop.
//!
//! `scripts/install-test-deps.sh` installs qemu, busybox-static and cpio and unpacks the
//! kernel under [`KERNEL_ROOT`]; a test fails when something is missing ([`require`]).
//!
//! The same harness boots an arm64 guest ([`Arch::Aarch64`]: qemu's `virt` machine, Debian's
//! arm64 kernel and busybox under [`KERNEL_ROOT_ARM64`]) for the arm64 figures; the `_arch`
//! variants take the architecture, the plain ones are the amd64 guest.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where install-test-deps.sh unpacks Debian's kernel package (`boot/`, `lib/modules/`).
pub const KERNEL_ROOT: &str = "/var/cache/palisade/vm-kernel";
const QEMU: &str = "qemu-system-x86_64";
const BUSYBOX: &str = "/bin/busybox";
/// Where install-test-deps.sh unpacks Debian's arm64 kernel package and arm64 busybox-static
/// (`boot/`, `lib/modules/`, `busybox/bin/busybox`).
pub const KERNEL_ROOT_ARM64: &str = "/var/cache/palisade/vm-kernel-arm64";
/// The arm64 glibc (Debian `libc6-arm64-cross`): where an arm64 program's libraries are found.
const ARM64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

/// The guest's architecture: which qemu, machine, kernel, busybox and console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// amd64: `qemu-system-x86_64 -machine q35`, console on the 16550 (`ttyS0`).
    X86_64,
    /// arm64: `qemu-system-aarch64 -machine virt` with a Cortex-A72 (the Raspberry Pi 4's
    /// core), console on the PL011 (`ttyAMA0`).
    Aarch64,
}

impl Arch {
    fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => QEMU,
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "Debian package qemu-system-x86",
            Arch::Aarch64 => "Debian package qemu-system-arm",
        }
    }

    fn machine(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-machine", "q35"],
            // The `virt` machine has no default CPU of its own (qemu's is a Cortex-A15, 32-bit).
            Arch::Aarch64 => &["-machine", "virt", "-cpu", "cortex-a72"],
        }
    }

    fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    fn kernel_root(self) -> &'static str {
        match self {
            Arch::X86_64 => KERNEL_ROOT,
            Arch::Aarch64 => KERNEL_ROOT_ARM64,
        }
    }

    fn busybox(self) -> PathBuf {
        match self {
            Arch::X86_64 => PathBuf::from(BUSYBOX),
            Arch::Aarch64 => Path::new(KERNEL_ROOT_ARM64).join("busybox/bin/busybox"),
        }
    }

    /// The kernel modules the guest shell's virtio port needs (relative to the module tree's
    /// `kernel/`), for [`Initramfs::add_modules`]: Debian's arm64 kernel has the virtio core
    /// built in, the amd64 one has it as modules.
    pub fn shell_modules(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &SHELL_MODULES,
            Arch::Aarch64 => &SHELL_MODULES[2..],
        }
    }

    /// Rust's name for the target (`x86_64`, `aarch64`), as in target triples.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Why a VM could not be prepared or started.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Something the harness needs is not installed.
    #[error("{0}; run scripts/install-test-deps.sh")]
    Missing(String),
    /// The guest did not get somewhere in time (boot, its shell, a command's answer).
    #[error("{what}: no answer within {within:?}; {console}")]
    GuestTimeout {
        /// What was waited for.
        what: String,
        /// How long.
        within: Duration,
        /// The end of the guest's serial console ([`console_tail`]), which says how far it got.
        console: String,
    },
    /// A step failed.
    #[error("{what}: {detail}")]
    Step {
        /// What was being done.
        what: String,
        /// Why it failed.
        detail: String,
    },
}

fn step(what: &str) -> impl Fn(std::io::Error) -> VmError + '_ {
    move |e| VmError::Step {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// How many console lines an error carries: enough for a panic's first lines or the last
/// driver that probed, short enough to read in a test failure.
const CONSOLE_TAIL_LINES: usize = 25;

/// The last lines of the serial console in the file `console`, said as the end of an error:
/// "the guest's console ends with: ..." or, if it is empty, that the guest printed nothing
/// (no kernel line at all: wrong image format, machine or console device).
pub fn console_tail(console: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return format!(
            "the guest printed nothing on its console ({}): check the kernel image's format, the machine and `console=` (drop `quiet`, add `earlycon`)",
            console.display()
        );
    }
    let from = lines.len().saturating_sub(CONSOLE_TAIL_LINES);
    format!(
        "the guest's console ends with ({} of {} lines):\n{}",
        lines.len() - from,
        lines.len(),
        lines[from..].join("\n")
    )
}

/// The unpacked kernel: its image and its module tree.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `vmlinuz-*`.
    pub image: PathBuf,
    /// `lib/modules/VERSION`.
    pub modules: PathBuf,
}

impl Kernel {
    /// Finds the amd64 kernel under [`KERNEL_ROOT`].
    pub fn find() -> Result<Kernel, VmError> {
        Kernel::find_arch(Arch::X86_64)
    }

    /// Finds the kernel for `arch` ([`KERNEL_ROOT`] or [`KERNEL_ROOT_ARM64`]).
    pub fn find_arch(arch: Arch) -> Result<Kernel, VmError> {
        let root = Path::new(arch.kernel_root());
        let root_name = arch.kernel_root();
        let image = std::fs::read_dir(root.join("boot"))
            .ok()
            .and_then(|rd| {
                rd.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })
            })
            .ok_or_else(|| VmError::Missing(format!("no kernel under {root_name}/boot")))?;
        let version = image
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("vmlinuz-")
                    .to_string()
            })
            .unwrap_or_default();
        Ok(Kernel {
            image,
            modules: root.join("lib/modules").join(version),
        })
    }
}

/// The test's requirements for VMs (qemu, cpio, busybox, the unpacked kernel): each missing
/// one fails the test unless skips are allowed ([`crate::require`]); `false` means skip.
pub fn require() -> bool {
    use crate::require::{needs, needs_command};
    needs_command(QEMU, "Debian package qemu-system-x86")
        && needs_command("cpio", "Debian package cpio")
        && needs(
            "busybox",
            "Debian package busybox-static",
            crate::require::command(BUSYBOX),
        )
        && needs(
            "vm-kernel",
            "Debian's linux-image-6.1 package, unpacked by scripts/install-test-deps.sh",
            Kernel::find().map(drop).map_err(|e| e.to_string()),
        )
}

/// [`require`] for a guest of `arch`: for arm64 also qemu-system-aarch64, the unpacked arm64
/// kernel and busybox, and the arm64 glibc the cross-built programs load.
pub fn require_arch(arch: Arch) -> bool {
    use crate::require::{needs, needs_command};
    if arch == Arch::X86_64 {
        return require();
    }
    needs_command(arch.qemu(), arch.qemu_package())
        && needs_command("cpio", "Debian package cpio")
        && needs(
            "busybox-arm64",
            "Debian's arm64 busybox-static, unpacked by scripts/install-test-deps.sh",
            if arch.busybox().is_file() {
                Ok(())
            } else {
                Err(format!("{} is missing", arch.busybox().display()))
            },
        )
        && needs(
            "vm-kernel-arm64",
            "Debian's arm64 linux-image-6.1 package, unpacked by scripts/install-test-deps.sh",
            Kernel::find_arch(arch).map(drop).map_err(|e| e.to_string()),
        )
        && needs(
            "arm64-libc",
            "Debian package libc6-arm64-cross",
            if Path::new(ARM64_SYSROOT).join("lib/libc.so.6").is_file() {
                Ok(())
            } else {
                Err(format!("{ARM64_SYSROOT}/lib/libc.so.6 is missing"))
            },
        )
}

/// An initramfs being assembled in a temporary directory.
#[derive(Debug)]
pub struct Initramfs {
    dir: tempfile::TempDir,
    arch: Arch,
}

impl Initramfs {
    /// An amd64 initramfs with busybox (`/bin/busybox`, applets installed by `/init`).
    pub fn new() -> Result<Initramfs, VmError> {
        Initramfs::new_arch(Arch::X86_64)
    }

    /// An initramfs for `arch` with that architecture's busybox at `/bin/busybox`.
    pub fn new_arch(arch: Arch) -> Result<Initramfs, VmError> {
        let dir = tempfile::tempdir().map_err(step("temporary directory"))?;
        let me = Initramfs { dir, arch };
        me.add_file(&arch.busybox(), "bin/busybox", 0o755)?;
        for d in ["dev", "proc", "sys", "tmp", "lib/modules"] {
            std::fs::create_dir_all(me.root().join(d)).map_err(step("mkdir"))?;
        }
        Ok(me)
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `src` to `dst` (relative to the root) with `mode`.
    pub fn add_file(&self, src: &Path, dst: &str, mode: u32) -> Result<(), VmError> {
        use std::os::unix::fs::PermissionsExt;
        let to = self.root().join(dst);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).map_err(step("mkdir"))?;
        }
        std::fs::copy(src, &to).map_err(|e| VmError::Step {
            what: format!("copying {}", src.display()),
            detail: e.to_string(),
        })?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).map_err(step("chmod"))
    }

    /// Writes `text` to `dst` with `mode`.
    pub fn add_text(&self, dst: &str, text: &str, mode: u32) -> Result<(), VmError> {
        use std::os::unix::fs::PermissionsExt;
        let to = self.root().join(dst);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).map_err(step("mkdir"))?;
        }
        std::fs::write(&to, text).map_err(step("write"))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).map_err(step("chmod"))
    }

    /// Copies a dynamically linked program and the shared libraries `ldd` names, at the
    /// same paths, so it runs in the VM as on the host. For an arm64 initramfs the program is
    /// a cross-built one: see [`Initramfs::add_arm64_program`].
    pub fn add_program(&self, src: &Path, dst: &str) -> Result<(), VmError> {
        if self.arch == Arch::Aarch64 {
            return self.add_arm64_program(src, dst);
        }
        self.add_file(src, dst, 0o755)?;
        // A debug build carries tens of MiB of debug info the initramfs has no room for.
        let _ = Command::new("strip")
            .arg("--strip-debug")
            .arg(self.root().join(dst))
            .status();
        let out = Command::new("ldd").arg(src).output().map_err(step("ldd"))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let lib = line
                .split("=>")
                .last()
                .and_then(|s| s.split_whitespace().next())
                .filter(|s| s.starts_with('/'));
            if let Some(lib) = lib {
                self.add_file(Path::new(lib), lib.trim_start_matches('/'), 0o755)?;
            }
        }
        Ok(())
    }

    /// Copies a cross-built arm64 program and the libraries it needs from the arm64 glibc
    /// (`/usr/aarch64-linux-gnu/lib`, Debian `libc6-arm64-cross`) to `/lib`, where the
    /// program's interpreter (`/lib/ld-linux-aarch64.so.1`) and its default search path find
    /// them. The host's `ldd` cannot run an arm64 program, so the libraries are the ELF's
    /// `DT_NEEDED` entries (read with `aarch64-linux-gnu-readelf`), followed transitively.
    pub fn add_arm64_program(&self, src: &Path, dst: &str) -> Result<(), VmError> {
        self.add_file(src, dst, 0o755)?;
        let _ = Command::new("aarch64-linux-gnu-strip")
            .arg("--strip-debug")
            .arg(self.root().join(dst))
            .status();
        let lib = Path::new(ARM64_SYSROOT).join("lib");
        let mut todo: Vec<PathBuf> = vec![src.to_path_buf(), lib.join("ld-linux-aarch64.so.1")];
        let mut done: Vec<String> = Vec::new();
        while let Some(elf) = todo.pop() {
            let out = Command::new("aarch64-linux-gnu-readelf")
                .arg("-d")
                .arg(&elf)
                .output()
                .map_err(|e| {
                    VmError::Missing(format!(
                        "aarch64-linux-gnu-readelf ({e}): Debian package binutils-aarch64-linux-gnu"
                    ))
                })?;
            // " 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]"
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            for name in text
                .lines()
                .filter(|l| l.contains("(NEEDED)"))
                .filter_map(|l| l.split('[').nth(1)?.split(']').next())
                .map(str::to_string)
                .chain(
                    (elf == lib.join("ld-linux-aarch64.so.1"))
                        .then(|| "ld-linux-aarch64.so.1".to_string()),
                )
            {
                if done.contains(&name) {
                    continue;
                }
                let from = lib.join(&name);
                if !from.exists() {
                    return Err(VmError::Missing(format!(
                        "{} needs {name}, not in {}: install the Debian arm64 cross package that has it",
                        elf.display(),
                        lib.display()
                    )));
                }
                self.add_file(&from, &format!("lib/{name}"), 0o755)?;
                todo.push(from);
                done.push(name);
            }
        }
        Ok(())
    }

    /// Copies kernel modules (paths relative to the module tree's `kernel/`) to
    /// `/lib/modules/NAME.ko`, for `insmod` in `/init` in the order given.
    pub fn add_modules(&self, kernel: &Kernel, modules: &[&str]) -> Result<(), VmError> {
        for m in modules {
            let src = kernel.modules.join("kernel").join(m);
            let name = Path::new(m)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.add_file(&src, &format!("lib/modules/{name}"), 0o644)?;
        }
        Ok(())
    }

    /// Packs the tree into a newc cpio archive at `out`.
    pub fn build(&self, out: &Path) -> Result<(), VmError> {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find . | cpio -o -H newc --quiet > '{}'",
                out.display()
            ))
            .current_dir(self.root())
            .status()
            .map_err(step("cpio"))?;
        if !st.success() {
            return Err(VmError::Step {
                what: "cpio".into(),
                detail: format!("exit {st}"),
            });
        }
        Ok(())
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Extra kernel command line (after `console=ttyS0`).
    pub append: String,
    /// Host block devices given as virtio disks (`/dev/vda`, ...), O_DIRECT (`cache=none`).
    pub disks: Vec<PathBuf>,
    /// Add an emulated i6300esb watchdog with this `-watchdog-action`.
    pub watchdog_action: Option<String>,
    /// Run qemu through this shell prefix (e.g. entering a blkio cgroup).
    pub shell_prefix: String,
}

/// A QMP event: its name, its data, and when we read it.
#[derive(Debug, Clone)]
pub struct Event {
    /// `WATCHDOG`, `RESET`, `SHUTDOWN`, ...
    pub name: String,
    /// The event's `data`.
    pub data: serde_json::Value,
    /// When it was read.
    pub at: Instant,
}

/// A running VM; killed on drop.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    console: PathBuf,
    events: mpsc::Receiver<Event>,
    seen: Vec<Event>,
    dir: tempfile::TempDir,
}

impl Vm {
    /// Boots the VM (`-no-reboot`: a reset, by the guest or the watchdog, stops qemu after
    /// its events were sent, so nothing runs twice).
    pub fn start(cfg: &VmConfig) -> Result<Vm, VmError> {
        Vm::launch(cfg, false, Arch::X86_64)
    }

    /// [`Vm::start_with_shell`] for a guest of `arch` (its kernel and initramfs must be of
    /// that architecture: [`Kernel::find_arch`], [`Initramfs::new_arch`]). On arm64 the
    /// watchdog, if any, is the same PCI i6300esb on the `virt` machine's PCIe bus (Debian's
    /// arm64 kernel builds `i6300esb.ko` too).
    pub fn start_with_shell_arch(cfg: &VmConfig, arch: Arch) -> Result<Vm, VmError> {
        Vm::launch(cfg, true, arch)
    }

    /// Boots the VM with a virtio serial port (the guest's `/dev/vport0p1`) on a Unix socket,
    /// for a guest shell the test drives with [`Vm::shell`]: the initramfs carries
    /// [`SHELL_MODULES`] and its `/init` runs [`SHELL_INIT`].
    pub fn start_with_shell(cfg: &VmConfig) -> Result<Vm, VmError> {
        Vm::launch(cfg, true, Arch::X86_64)
    }

    fn launch(cfg: &VmConfig, shell: bool, arch: Arch) -> Result<Vm, VmError> {
        let dir = tempfile::tempdir().map_err(step("temporary directory"))?;
        let console = dir.path().join("console.log");
        let qmp = dir.path().join("qmp.sock");
        let mut args: Vec<String> = vec![arch.qemu().into()];
        args.extend(arch.machine().iter().map(|a| a.to_string()));
        args.extend::<Vec<String>>(vec![
            "-m".into(),
            "256".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-no-reboot".into(),
            "-serial".into(),
            format!("file:{}", console.display()),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
            "-kernel".into(),
            cfg.kernel.display().to_string(),
            "-initrd".into(),
            cfg.initrd.display().to_string(),
            "-append".into(),
            format!("console={} panic=-1 {}", arch.console(), cfg.append),
        ]);
        // Software emulation only: /dev/kvm exists on these machines but a guest started
        // with -enable-kvm never printed a line (nested virtualisation); TCG boots in ~3 s.
        for d in &cfg.disks {
            args.push("-drive".into());
            args.push(format!(
                "file={},format=raw,if=virtio,cache=none,aio=threads",
                d.display()
            ));
        }
        if shell {
            // virtio, not a second 16550: under TCG a ttyS1 answer often stayed in the UART
            // until the next input arrived, which a request/answer shell cannot live with.
            args.extend([
                "-device".into(),
                "virtio-serial-pci".into(),
                "-chardev".into(),
                format!(
                    "socket,id=shell,path={},server=on,wait=off",
                    dir.path().join("shell.sock").display()
                ),
                "-device".into(),
                "virtserialport,chardev=shell,name=palisade.shell".into(),
            ]);
        }
        if let Some(action) = &cfg.watchdog_action {
            args.extend([
                "-device".into(),
                "i6300esb".into(),
                "-watchdog-action".into(),
                action.clone(),
            ]);
        }
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{} exec {}", cfg.shell_prefix, quoted.join(" ")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(step("starting qemu"))?;
        let (tx, rx) = mpsc::channel();
        let t = Instant::now();
        let stream = loop {
            match UnixStream::connect(&qmp) {
                Ok(s) => break s,
                Err(e) if t.elapsed() > Duration::from_secs(20) => {
                    return Err(VmError::Step {
                        what: "connecting to QMP".into(),
                        detail: e.to_string(),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut w = stream.try_clone().map_err(step("QMP socket"))?;
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .map_err(step("QMP handshake"))?;
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(name) = v.get("event").and_then(|e| e.as_str()) {
                    let ev = Event {
                        name: name.into(),
                        data: v.get("data").cloned().unwrap_or_default(),
                        at: Instant::now(),
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Vm {
            child,
            console,
            events: rx,
            seen: Vec::new(),
            dir,
        })
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// The end of the console, as [`console_tail`] says it (for failure messages).
    pub fn console_tail(&self) -> String {
        console_tail(&self.console)
    }

    /// [`Vm::wait_console`] as a result: the error says what the guest printed last.
    pub fn expect_console(&self, needle: &str, within: Duration) -> Result<Instant, VmError> {
        self.wait_console(needle, within)
            .ok_or_else(|| VmError::GuestTimeout {
                what: format!("waiting for `{needle}` on the guest console"),
                within,
                console: self.console_tail(),
            })
    }

    /// Waits until the console contains `needle`; the time it was first seen, or `None`.
    pub fn wait_console(&self, needle: &str, within: Duration) -> Option<Instant> {
        let t = Instant::now();
        while t.elapsed() < within {
            if self.console().contains(needle) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits for a QMP event named `name` (events seen earlier count).
    pub fn wait_event(&mut self, name: &str, within: Duration) -> Option<Event> {
        let t = Instant::now();
        loop {
            if let Some(e) = self.seen.iter().find(|e| e.name == name) {
                return Some(e.clone());
            }
            let left = within.saturating_sub(t.elapsed());
            if left.is_zero() {
                return None;
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(e) => self.seen.push(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Every event read so far.
    pub fn events(&mut self) -> Vec<Event> {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        self.seen.clone()
    }

    /// Whether qemu is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The VM's scratch directory (console log, QMP socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connects to the guest shell of a VM started with [`Vm::start_with_shell`], waiting up
    /// to `within` for the guest to answer. Every wait is bounded by `within`: a guest that
    /// never starts its shell (or prints nothing at all) fails with the end of its console.
    pub fn shell(&self, within: Duration) -> Result<Shell, VmError> {
        let deadline = Instant::now() + within;
        let sock = self.dir.path().join("shell.sock");
        let timed_out = || VmError::GuestTimeout {
            what: "waiting for the guest shell".into(),
            within,
            console: self.console_tail(),
        };
        // qemu creates the socket as it starts; it may not be there for the first few ms.
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(VmError::Step {
                        what: format!("connecting to the guest shell socket {}", sock.display()),
                        detail: format!("{e}; {}", self.console_tail()),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(step("shell socket"))?;
        let mut sh = Shell {
            stream,
            buf: Vec::new(),
            seq: 0,
            console: self.console.clone(),
        };
        // The guest may not have started its shell yet: what is sent before is lost, so ask
        // until one answer comes back. Each probe is bounded by what is left of `within`,
        // its write too: while the guest has not opened its port, qemu stops reading the
        // socket, and an unbounded write would block once the socket buffer is full (a
        // silent guest once held a test for 40 minutes that way).
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            match sh.run("true", left.min(Duration::from_millis(500))) {
                Ok(_) => return Ok(sh),
                // qemu is gone (the guest panicked, -no-reboot): waiting longer is pointless.
                Err(e @ VmError::Step { .. }) => return Err(e),
                Err(_) => {}
            }
        }
    }
}

/// The kernel modules (relative to the module tree's `kernel/`) the guest shell's virtio
/// port needs, for [`Initramfs::add_modules`].
pub const SHELL_MODULES: [&str; 6] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/char/virtio_console.ko",
];

/// `/init` lines that start the shell [`Vm::shell`] talks to (`/sys` and `/dev` mounted
/// first): they load [`SHELL_MODULES`] (a module already loaded only prints an error), find
/// the port by its name and feed it to busybox's `sh` through a pipe, so it is not
/// interactive (no prompt, no echo). The port is found by name, not as `/dev/vport0p1`: its
/// number is the virtio device's index, and qemu's arm64 `virt` machine has a virtio NIC
/// first (the port is `vport1p1` there; waiting for `vport0p1` hung the arm64 guest
/// silently). After 30 s without the port it says so on the console and keeps looking. The
/// port is opened once: the kernel lets a port be open only once, and a read while the host
/// is not connected is an end of file, hence `cat` in a loop.
pub const SHELL_INIT: &str = "for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console; do insmod /lib/modules/$m.ko 2>/dev/null; done\n\
port=; i=0\n\
while [ -z \"$port\" ]; do\n\
  for p in /sys/class/virtio-ports/*; do [ \"$(cat $p/name 2>/dev/null)\" = palisade.shell ] && [ -c /dev/${p##*/} ] && port=/dev/${p##*/}; done\n\
  i=$((i+1)); [ $i -eq 600 ] && echo \"PALISADE-NO-SHELL-PORT: no virtio port named palisade.shell after 30 s; ports: $(ls /sys/class/virtio-ports 2>&1)\"\n\
  [ -z \"$port\" ] && sleep 0.05\n\
done\n\
echo \"PALISADE-SHELL-PORT $port\"\n\
exec 3<>$port\n\
(while :; do cat <&3; sleep 0.1; done | sh >&3 2>&3) &\n";

/// A shell in the guest over a virtio serial port: commands in, output and status out.
#[derive(Debug)]
pub struct Shell {
    stream: UnixStream,
    buf: Vec<u8>,
    seq: u64,
    /// The VM's console log, whose end every error carries.
    console: PathBuf,
}

impl Shell {
    /// Runs `cmd` (one or more lines of `sh`) in the guest; its exit status and its output
    /// (stdout and stderr) once it finishes, or an error after `within`.
    pub fn run(&mut self, cmd: &str, within: Duration) -> Result<(i32, String), VmError> {
        use std::io::Read;
        self.seq += 1;
        let marker = format!("@@palisade-done {} rc=", self.seq);
        // The status is printed on a line of its own, after a newline, whatever cmd printed.
        let line = format!("{cmd}\nprintf '\\n{marker}%d@@\\n' $?\n");
        let t = Instant::now();
        let timed_out = |so_far: &[u8]| VmError::GuestTimeout {
            what: format!(
                "guest shell: `{cmd}` (output so far: {:?})",
                String::from_utf8_lossy(so_far)
            ),
            within,
            console: console_tail(&self.console),
        };
        // Bounded like the read: a guest that stopped reading its port leaves qemu not
        // reading the socket, and a write into a full socket would otherwise block forever.
        self.stream
            .set_write_timeout(Some(within.max(Duration::from_millis(1))))
            .map_err(step("shell socket"))?;
        match self.stream.write_all(line.as_bytes()) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out(&self.buf))
            }
            Err(e) => {
                return Err(VmError::Step {
                    what: format!("writing `{cmd}` to the guest shell"),
                    detail: format!("{e}; {}", console_tail(&self.console)),
                })
            }
        }
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(at) = text.find(&marker) {
                if let Some(end) = text[at..].find("@@\n") {
                    let rc = text[at + marker.len()..at + end].parse().unwrap_or(-1);
                    let out = text[..at].strip_suffix('\n').unwrap_or(&text[..at]);
                    let out = out.replace('\r', "");
                    self.buf.drain(..(at + end + 3).min(self.buf.len()));
                    return Ok((rc, out));
                }
            }
            if t.elapsed() > within {
                return Err(timed_out(&self.buf));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(VmError::Step {
                        what: format!("guest shell: `{cmd}`"),
                        detail: format!(
                            "qemu closed the shell socket (it exited?); {}",
                            console_tail(&self.console)
                        ),
                    })
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    return Err(VmError::Step {
                        what: format!("guest shell: `{cmd}`"),
                        detail: format!("{e}; {}", console_tail(&self.console)),
                    })
                }
            }
        }
    }

    /// Runs `cmd` and returns its output; a non-zero status is an error with the output.
    pub fn ok(&mut self, cmd: &str, within: Duration) -> Result<String, VmError> {
        let (rc, out) = self.run(cmd, within)?;
        if rc != 0 {
            return Err(VmError::Step {
                what: format!("guest shell: `{cmd}`"),
                detail: format!("exit {rc}: {out}"),
            });
        }
        Ok(out)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The hang that held the arm64 figure test for 40 minutes: a guest that stops reading
    /// its port leaves the socket unread, and a write into it blocked with no deadline. Here
    /// the far end of a socket pair is never read; the command is larger than any socket
    /// buffer, so the write must give up at `within`, not block.
    #[test]
    fn a_write_nobody_reads_fails_at_its_deadline_with_the_console() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(
            &console,
            "[    0.0] Booting Linux\nlast line the guest printed\n",
        )
        .unwrap();
        let mut sh = Shell {
            stream: ours,
            buf: Vec::new(),
            seq: 0,
            console,
        };
        let t = Instant::now();
        let big = format!("echo {}", "x".repeat(16 << 20));
        let e = sh.run(&big, Duration::from_millis(500)).unwrap_err();
        let took = t.elapsed();
        assert!(took < Duration::from_secs(5), "write blocked for {took:?}");
        let text = e.to_string();
        assert!(matches!(e, VmError::GuestTimeout { .. }), "{text:.300}");
        assert!(text.contains("last line the guest printed"), "{text:.300}");
    }

    /// A console with nothing on it says so, and what to check.
    #[test]
    fn an_empty_console_is_named_as_printing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(&console, "\n\n").unwrap();
        let t = console_tail(&console);
        assert!(
            t.contains("printed nothing") && t.contains("earlycon"),
            "{t}"
        );
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&console, long).unwrap();
        let t = console_tail(&console);
        assert!(
            t.contains("25 of 100 lines") && t.ends_with("line 99"),
            "{t}"
        );
        assert!(!t.contains("line 74\n"), "{t}");
    }

    /// A real guest that boots but never starts its shell: `shell` fails at its deadline,
    /// and the error carries what the guest printed last. About 10 s under TCG.
    #[test]
    fn a_guest_without_a_shell_fails_at_the_deadline_naming_its_last_line() {
        if !require() {
            return;
        }
        let kernel = Kernel::find().unwrap();
        let fs = Initramfs::new().unwrap();
        fs.add_text(
            "init",
            "#!/bin/busybox sh\n/bin/busybox echo PALISADE-NO-SHELL-ON-PURPOSE\nwhile :; do /bin/busybox sleep 60; done\n",
            0o755,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let initrd = dir.path().join("initrd.cpio");
        fs.build(&initrd).unwrap();
        let vm = Vm::start_with_shell(&VmConfig {
            kernel: kernel.image,
            initrd,
            append: "quiet".into(),
            disks: vec![],
            watchdog_action: None,
            shell_prefix: String::new(),
        })
        .unwrap();
        vm.expect_console("PALISADE-NO-SHELL-ON-PURPOSE", Duration::from_secs(60))
            .unwrap();
        let within = Duration::from_secs(3);
        let t = Instant::now();
        let e = vm.shell(within).unwrap_err();
        let took = t.elapsed();
        assert!(
            took < within + Duration::from_secs(3),
            "shell() took {took:?}"
        );
        let text = e.to_string();
        assert!(matches!(e, VmError::GuestTimeout { .. }), "{text}");
        assert!(
            text.contains("waiting for the guest shell")
                && text.contains("PALISADE-NO-SHELL-ON-PURPOSE"),
            "{text}"
        );
        // A needle that never comes fails the same way.
        let e = vm
            .expect_console("NEVER-PRINTED", Duration::from_millis(200))
            .unwrap_err();
        assert!(
            e.to_string().contains("PALISADE-NO-SHELL-ON-PURPOSE"),
            "{e}"
        );
    }
}
