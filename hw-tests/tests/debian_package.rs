//! The Debian packages (scripts/build-debs.sh) in a clean Debian bookworm root made with
//! mmdebstrap from the Debian registry: install, the example config checks, the user and
//! directories exist, the fencer's unit is enabled and the watcher's is not, the installed
//! fencer writes a real ledger, an upgrade from an older build keeps a modified conffile and
//! that ledger, purge removes what the packages made; scripts/check-debs.sh's host checks
//! (fields, contents, binaries' architecture, lintian with no errors or warnings, each one kept
//! overridden with its reason).
//!
//! The packages come from `PALISADE_DEB_DIR` (scripts/test.sh builds them there with the
//! shipped profile before the tests; by hand: `scripts/build-debs.sh`, then this test reads
//! target/debian). No packages there fails the test, saying so. The test builds nothing: the
//! "previous" version for the upgrade is the same packages with a lower version in their
//! control files. amd64 only: the arm64 packages are a cross build too long for CI's budget,
//! checked by scripts/check-debs.sh by hand (its header says how).
//!
//! No systemd runs in the root (a chroot in private mount and PID namespaces): the maintainer
//! scripts must work without one, as they must in an image build. The bookworm root is cached
//! as a tarball under target/debian-package/, keyed on suite and ISO week (a fresh clone, or a
//! new week, makes it again from the registry; then seconds to unpack).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const PACKAGES: [&str; 4] = ["fenced", "fence-node", "fence-palisade", "palisade-sbd"];
const SUITE: &str = "bookworm";
/// Packages the root needs beyond the apt variant: the packages' dependencies (systemd for
/// sysusers, tmpfiles and analyze; procps for fenced's `/bin/kill`), so dpkg installs offline.
/// A dependency missing here makes `dpkg -i` fail naming it, so a new one cannot go unnoticed.
/// Corosync's client libraries are not here on purpose: fenced opens them at run time for
/// `[cluster]` only, so the packages must install and fenced start without them.
const INCLUDE: &str = "systemd,procps";
/// The folder holding the packages to test (scripts/test.sh sets it after building them).
const DEB_DIR_ENV: &str = "PALISADE_DEB_DIR";

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
        c.args(["--mount", "--pid", "--fork", "--kill-child"])
            .arg(format!("--mount-proc={}", self.0.join("proc").display()))
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

/// Where the packages are: `PALISADE_DEB_DIR` (scripts/test.sh sets it), else
/// `<target>/debian` (scripts/build-debs.sh's default).
fn deb_dir() -> PathBuf {
    std::env::var_os(DEB_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debian"))
}

/// The amd64 packages in `dir`, one per [`PACKAGES`] entry in that order. None there is a
/// failure (never a skip): the packages are what this test is about.
fn amd64_debs(dir: &Path, version: &str) -> Vec<PathBuf> {
    PACKAGES
        .iter()
        .map(|p| {
            let deb = dir.join(format!("{p}_{version}_amd64.deb"));
            assert!(
                deb.is_file(),
                "{} does not exist: run scripts/build-debs.sh {} first \
                 (scripts/test.sh does, and sets {DEB_DIR_ENV})",
                deb.display(),
                dir.display()
            );
            deb
        })
        .collect()
}

/// `dpkg-deb --field`.
fn field(deb: &Path, name: &str) -> String {
    stdout(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .trim()
        .to_string()
}

/// The "previous" build of `deb`: the same files with `version` in its control file, so the
/// upgrade runs dpkg's real upgrade path (old prerm, new postinst, conffile merge) without
/// building the binaries again. Uncompressed: it never leaves the test.
fn repackage(deb: &Path, version: &str, scratch: &Path, out: &Path) -> PathBuf {
    let name = field(deb, "Package");
    let x = scratch.join(&name);
    std::fs::create_dir_all(scratch).unwrap();
    run(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(deb)
        .arg(&x));
    let control = x.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let old = format!("\nVersion: {}\n", field(deb, "Version"));
    assert!(text.contains(&old), "{}: {text}", control.display());
    std::fs::write(
        &control,
        text.replace(&old, &format!("\nVersion: {version}\n")),
    )
    .unwrap();
    std::fs::create_dir_all(out).unwrap();
    let prev = out.join(format!("{name}_{version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Znone", "--build"])
        .arg(&x)
        .arg(&prev));
    std::fs::remove_dir_all(&x).unwrap();
    prev
}

#[test]
fn packages_install_upgrade_and_purge_in_a_clean_bookworm() {
    for (c, by) in [
        ("mmdebstrap", "Debian package mmdebstrap"),
        ("lintian", "Debian package lintian"),
        ("dpkg-deb", "Debian package dpkg"),
        ("unshare", "Debian package util-linux"),
    ] {
        if !hw_tests::require::needs_command(c, by) {
            return;
        }
    }
    let start = Instant::now();
    let current = env!("CARGO_PKG_VERSION");
    let dir = deb_dir();
    let cur = amd64_debs(&dir, current);
    for deb in &cur {
        eprintln!(
            "{}: {} bytes, Installed-Size {} KiB",
            deb.file_name().unwrap().to_string_lossy(),
            std::fs::metadata(deb).unwrap().len(),
            field(deb, "Installed-Size")
        );
    }
    // Fields, contents, binaries' architecture and lintian: the same checks a developer runs
    // on the arm64 packages by hand.
    let t = Instant::now();
    run(Command::new("bash")
        .arg(workspace().join("scripts/check-debs.sh"))
        .arg(&dir)
        .arg("amd64"));
    eprintln!("check-debs (amd64, lintian): {:.1?}", t.elapsed());

    let work = tempfile::Builder::new()
        .prefix("debian-package-")
        .tempdir_in(target_dir())
        .unwrap();
    // "Previous" packages: the same binaries with a lower version (`~` sorts before anything).
    let previous = format!("{current}~prev");
    let prev: Vec<PathBuf> = cur
        .iter()
        .map(|d| {
            repackage(
                d,
                &previous,
                &work.path().join("x"),
                &work.path().join("prev"),
            )
        })
        .collect();

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
