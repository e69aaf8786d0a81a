//! The Debian packages (scripts/build-debs.sh) in a clean Debian bookworm root made with
//! mmdebstrap from the Debian registry: install, the example config checks, the user and
//! directories exist, the fencer's unit is enabled and the watcher's is not, the installed
//! fencer writes a real ledger, an upgrade from an older build keeps a modified conffile and
//! that ledger, purge removes what the packages made; lintian reports no errors or warnings
//! (each one kept is overridden with its reason) on every package of both architectures, and
//! the arm64 packages carry arm64 binaries.
//!
//! No systemd runs in the root (a chroot in private mount and PID namespaces): the maintainer
//! scripts must work without one, as they must in an image build. The bookworm root is cached
//! as a tarball under target/debian-package/, keyed on suite and ISO week (a fresh clone, or a
//! new week, makes it again: about 3 minutes of download; then seconds to unpack).
//!
//! scripts/test.sh builds the packages before the tests run; this test runs the same script,
//! which finds the binaries built and only repackages them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const PACKAGES: [&str; 4] = ["fenced", "fence-node", "fence-palisade", "palisade-sbd"];
const SUITE: &str = "bookworm";
/// Packages the root needs beyond the apt variant: the packages' dependencies (systemd for
/// sysusers, tmpfiles and analyze; procps for fenced's `/bin/kill`), so dpkg installs offline.
const INCLUDE: &str = "systemd,procps";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// The unpacked root; removed on drop, even when the test fails.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        // Every mount was made in the chroot command's own mount namespace, gone with it.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Root {
    /// Runs a shell command inside the root: private mount and PID namespaces (every process
    /// it started dies with it), /proc of its own.
    fn sh(&self, script: &str) -> Output {
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc=",
        ])
        .arg(self.0.join("proc"))
        .arg("chroot")
        .arg(&self.0)
        .args(["/bin/sh", "-ec", script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C.UTF-8");
        run(&mut c)
    }

    fn out(&self, script: &str) -> String {
        String::from_utf8_lossy(&self.sh(script).stdout).into_owned()
    }
}

/// The bookworm root tarball (variant apt, plus [`INCLUDE`]), made once per ISO week so the root stays close to the archive while
/// repeated runs download nothing; older weeks' tarballs are removed.
fn bookworm_tarball() -> PathBuf {
    let dir = target_dir().join("debian-package");
    std::fs::create_dir_all(&dir).unwrap();
    let week = stdout(Command::new("date").args(["-u", "+%G-W%V"]));
    let stem = format!("{SUITE}-apt-{}-", INCLUDE.replace(',', "+"));
    let tar = dir.join(format!("{stem}{}.tar", week.trim()));
    if !tar.exists() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&stem))
            {
                let _ = std::fs::remove_file(&p);
            }
        }
        let t = Instant::now();
        let part = tar.with_extension("tar.part");
        // --format: the name's extension would otherwise decide (".part" means a directory).
        run(Command::new("mmdebstrap")
            .args(["--quiet", "--format=tar", "--variant=apt"])
            .arg(format!("--include={INCLUDE}"))
            .arg(SUITE)
            .arg(&part)
            .arg("http://deb.debian.org/debian"));
        std::fs::rename(&part, &tar).unwrap();
        eprintln!("mmdebstrap: {SUITE} root made in {:.0?}", t.elapsed());
    }
    tar
}

/// Builds the packages with `version` into `out`; returns them by architecture.
fn build_debs(out: &Path, version: Option<&str>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut c = Command::new("bash");
    c.arg(workspace().join("scripts/build-debs.sh")).arg(out);
    if let Some(v) = version {
        c.env("PALISADE_DEB_VERSION", v);
    }
    run(&mut c);
    let mut debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    let (amd64, arm64): (Vec<PathBuf>, Vec<PathBuf>) = debs
        .into_iter()
        .partition(|p| p.to_string_lossy().ends_with("_amd64.deb"));
    assert_eq!(amd64.len(), PACKAGES.len(), "{amd64:?}");
    assert_eq!(arm64.len(), PACKAGES.len(), "{arm64:?}");
    assert!(arm64
        .iter()
        .all(|p| p.to_string_lossy().ends_with("_arm64.deb")));
    (amd64, arm64)
}

/// `dpkg-deb --field`.
fn field(deb: &Path, name: &str) -> String {
    stdout(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .trim()
        .to_string()
}

/// The ELF machine of every file in the package's /usr/sbin (e_machine, little-endian).
fn sbin_machines(deb: &Path, scratch: &Path) -> Vec<(String, u16)> {
    let x = scratch.join(deb.file_stem().unwrap());
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x));
    let mut out = Vec::new();
    for e in std::fs::read_dir(x.join("usr/sbin")).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", p.display());
        out.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            u16::from_le_bytes([b[18], b[19]]),
        ));
    }
    out
}

/// The package checks on the host: fields, contents, binaries' architecture, lintian.
fn check_packages(amd64: &[PathBuf], arm64: &[PathBuf], version: &str, scratch: &Path) {
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    for (debs, arch, machine) in [(amd64, "amd64", EM_X86_64), (arm64, "arm64", EM_AARCH64)] {
        for deb in debs {
            assert_eq!(field(deb, "Architecture"), arch, "{}", deb.display());
            assert_eq!(field(deb, "Version"), version, "{}", deb.display());
            let depends = field(deb, "Depends");
            // dpkg-shlibdeps' answer, with versions: a bare "libc6" means it failed.
            assert!(
                depends.contains("libc6 (>= "),
                "{}: {depends}",
                deb.display()
            );
            let sbin = sbin_machines(deb, scratch);
            assert!(!sbin.is_empty(), "{}", deb.display());
            for (bin, m) in sbin {
                assert_eq!(m, machine, "{}: {bin} is not {arch}", deb.display());
            }
        }
        let fenced = debs
            .iter()
            .find(|d| field(d, "Package") == "fenced")
            .unwrap();
        let contents = stdout(Command::new("dpkg-deb").arg("--contents").arg(fenced));
        for f in [
            "./usr/sbin/fenced",
            "./lib/systemd/system/fenced.service",
            "./usr/lib/sysusers.d/palisade.conf",
            "./usr/lib/tmpfiles.d/palisade.conf",
            "./etc/palisade/fenced.toml",
            "./usr/share/man/man8/fenced.8.gz",
            "./usr/share/bash-completion/completions/fenced",
            "./usr/share/palisade/prometheus/palisade.rules.yml",
        ] {
            assert!(contents.contains(f), "{arch} fenced lacks {f}:\n{contents}");
        }
    }

    // lintian: no errors and no warnings; each tag kept is overridden in the package's
    // lintian-overrides with its reason. Both architectures (lintian reads foreign ELF files).
    let t = Instant::now();
    let o = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .args(amd64)
        .args(arm64)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "lintian:\n{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "lintian: {} packages clean in {:.0?} ({} lines of info/pedantic tags)",
        amd64.len() + arm64.len(),
        t.elapsed(),
        report.lines().count()
    );
}

#[test]
#[ignore = "builds 2 x 8 packages and runs lintian: over the 300 s slow-timeout on 2 cores; run with --run-ignored only"]
fn packages_install_upgrade_and_purge_in_a_clean_bookworm() {
    for (c, by) in [
        ("mmdebstrap", "Debian package mmdebstrap"),
        ("lintian", "Debian package lintian"),
        ("dpkg-shlibdeps", "Debian package dpkg-dev"),
        ("unshare", "Debian package util-linux"),
        (
            "aarch64-linux-gnu-gcc",
            "Debian package gcc-aarch64-linux-gnu",
        ),
    ] {
        if !hw_tests::require::needs_command(c, by) {
            return;
        }
    }
    let start = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("debian-package-")
        .tempdir_in(target_dir())
        .unwrap();
    // "Previous" packages: the same binaries with a lower version (`~` sorts before anything),
    // so the upgrade runs dpkg's real upgrade path (old prerm, new preinst/postinst, conffile
    // merge, old files removed).
    let current = env!("CARGO_PKG_VERSION");
    let previous = format!("{current}~prev");
    let (prev, _) = build_debs(&work.path().join("prev"), Some(&previous));
    let (cur, cur_arm64) = build_debs(&work.path().join("cur"), None);
    eprintln!("packages built in {:.0?}", start.elapsed());
    for deb in cur.iter().chain(&cur_arm64) {
        let size = std::fs::metadata(deb).unwrap().len();
        eprintln!(
            "{}: {size} bytes, Installed-Size {} KiB",
            deb.file_name().unwrap().to_string_lossy(),
            field(deb, "Installed-Size")
        );
    }
    let scratch = work.path().join("x");
    check_packages(&cur, &cur_arm64, current, &scratch);

    let tar = bookworm_tarball();
    let root = Root(work.path().join("root"));
    std::fs::create_dir_all(&root.0).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&root.0));
    for (dir, debs) in [("prev", &prev), ("cur", &cur)] {
        let d = root.0.join("tmp/debs").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for deb in debs.iter() {
            std::fs::copy(deb, d.join(deb.file_name().unwrap())).unwrap();
        }
    }

    // Install with dpkg itself: it never downloads, so every dependency must already be in
    // the root (apt's `--no-download` with local .deb files fails on bookworm's apt 2.6:
    // "Pathname to install is not absolute").
    root.sh("dpkg -i /tmp/debs/prev/*.deb");
    let check = root.out("fenced check-config /etc/palisade/fenced.toml");
    assert!(check.contains(": valid"), "{check}");
    let user = root.out("getent passwd palisade; getent group palisade");
    assert!(
        user.contains("/var/lib/palisade:/usr/sbin/nologin"),
        "{user}"
    );
    let dirs = root.out("stat -c '%n %a %U %G' /var/lib/palisade /run/palisade");
    assert!(
        dirs.contains("/var/lib/palisade 700 palisade palisade"),
        "{dirs}"
    );
    assert!(
        dirs.contains("/run/palisade 750 palisade palisade"),
        "{dirs}"
    );
    // Enabled (starts at boot, inert until targets are configured); the watcher is not.
    root.sh("test -L /etc/systemd/system/multi-user.target.wants/fenced.service");
    root.sh("test ! -e /etc/systemd/system/multi-user.target.wants/palisade-sbd.service");
    for f in [
        "/usr/sbin/fenced",
        "/usr/sbin/fence_node",
        "/usr/sbin/fence_palisade",
        "/usr/sbin/palisade-sbd",
        "/usr/share/man/man8/fence_node-off.8.gz",
        "/usr/share/man/man8/fenced.8.gz",
        "/usr/share/man/man8/palisade-sbd.8.gz",
        "/usr/share/bash-completion/completions/fence_node",
    ] {
        root.sh(&format!("test -x {f} || test -f {f}"));
    }
    let meta = root.out("/usr/sbin/fence_palisade -o metadata");
    assert!(
        meta.contains("<resource-agent name=\"fence_palisade\""),
        "{meta}"
    );
    // The units, as systemd reads them (no systemd runs: analyze reads the files). Every
    // command they run must exist in the root (fenced's ExecReload needs /bin/kill: the
    // package depends on procps). No man-db in the root: man pages are checked as files.
    let verify = root.sh(
        "systemd-analyze verify --man=no /lib/systemd/system/fenced.service /lib/systemd/system/palisade-sbd.service 2>&1",
    );
    let verify = String::from_utf8_lossy(&verify.stdout);
    assert!(
        !verify.contains("fenced.service:") && !verify.contains("palisade-sbd.service:"),
        "systemd-analyze verify: {verify}"
    );

    // The installed fencer, as its unit runs it (user palisade, the shipped config), makes its
    // ledger: started, a pause and a resume recorded (signed ledger records), stopped with
    // SIGTERM as systemd stops it.
    let ledger_check = "fenced verify-ledger /var/lib/palisade/history.redb \
         --public-key /var/lib/palisade/history.key.pub; \
         sha256sum /var/lib/palisade/history.redb /var/lib/palisade/history.key";
    root.sh(
        "setpriv --reuid=palisade --regid=palisade --init-groups fenced run --config /etc/palisade/fenced.toml \
           >/tmp/fenced.log 2>&1 & pid=$!; \
         i=0; while [ ! -S /run/palisade/fenced.sock ]; do i=$((i+1)); \
           if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then cat /tmp/fenced.log; exit 1; fi; sleep 0.1; done; \
         fence_node pause --reason 'before the upgrade'; \
         fence_node resume --reason 'before the upgrade'; \
         kill -TERM $pid; wait $pid",
    );
    let ledger = root.out(ledger_check);
    assert!(
        ledger.contains("ledger intact: 4 records (4 signed"),
        "{ledger}"
    );
    // An operator's change to the conffile.
    root.sh("echo '# changed by the operator' >> /etc/palisade/fenced.toml");

    root.sh("dpkg -i /tmp/debs/cur/*.deb");
    let versions = root.out(
        "dpkg-query -W -f '${Package} ${Version}\\n' fenced fence-node fence-palisade palisade-sbd",
    );
    for p in PACKAGES {
        assert!(versions.contains(&format!("{p} {current}\n")), "{versions}");
    }
    let conf = root.out("cat /etc/palisade/fenced.toml");
    assert!(conf.contains("# changed by the operator"), "{conf}");
    root.sh("test ! -e /etc/palisade/fenced.toml.dpkg-new");
    assert_eq!(
        root.out(ledger_check),
        ledger,
        "the upgrade changed the history or its key"
    );
    root.sh("fenced check-config /etc/palisade/fenced.toml >/dev/null");

    root.sh("dpkg --purge fenced fence-node fence-palisade palisade-sbd");
    let left = root.out(
        "for f in /etc/palisade /var/lib/palisade /run/palisade /usr/sbin/fenced /usr/sbin/fence_node \
         /usr/sbin/fence_palisade /usr/sbin/palisade-sbd /lib/systemd/system/fenced.service \
         /lib/systemd/system/palisade-sbd.service /usr/lib/sysusers.d/palisade.conf \
         /usr/lib/tmpfiles.d/palisade.conf /etc/systemd/system/multi-user.target.wants/fenced.service \
         /var/lib/systemd/deb-systemd-helper-enabled/fenced.service.dsh-also \
         /var/lib/systemd/deb-systemd-helper-masked/fenced.service \
         /usr/share/doc/fenced /usr/share/palisade; do \
         if [ -e \"$f\" ] || [ -L \"$f\" ]; then echo \"$f\"; fi; done; \
         dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n' fenced fence-node fence-palisade palisade-sbd 2>/dev/null || true",
    );
    for line in left.lines() {
        // dpkg forgets a purged package ("un", or not listed at all).
        assert!(
            line.split_whitespace()
                .nth(1)
                .is_some_and(|s| s.starts_with("un")),
            "left after purge: {left}"
        );
    }
    // The system user stays, by decision (packaging/debian/fenced/postrm says why).
    root.sh("getent passwd palisade >/dev/null");
    eprintln!("debian_package: {:.0?} in all", start.elapsed());
}
