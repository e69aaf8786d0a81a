//! The Debian packages (scripts/build-debs.sh) in a clean Debian bookworm root made with
//! mmdebstrap from the Debian registry: install, the example config checks, the user and
//! directories exist, the fencer's unit is enabled and the watcher's is not, an upgrade to a
//! newer build keeps a modified conffile and the history, purge removes what the packages
//! made; lintian reports no errors on any package.
//!
//! No systemd runs in the root (a chroot in private mount and PID namespaces): the maintainer
//! scripts must work without one, as they must in an image build. The bookworm root is cached
//! as a tarball under target/debian-package/ (first run: about 3 minutes to download; then
//! seconds to unpack).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const PACKAGES: [&str; 4] = ["fenced", "fence-node", "fence-palisade", "palisade-sbd"];

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

/// The unpacked root; removed on drop, even when the test fails.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        // Every mount was made in the chroot command's own mount namespace, gone with it.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Root {
    /// Runs a shell command inside the root: private mount and PID namespaces, /proc of its own.
    fn sh(&self, script: &str) -> Output {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--pid", "--fork", "--mount-proc="])
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

/// The bookworm root tarball, made once (variant apt, with systemd for its sysusers, tmpfiles
/// and analyze tools), then reused.
fn bookworm_tarball() -> PathBuf {
    let dir = target_dir().join("debian-package");
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("bookworm-apt-systemd.tar");
    if !tar.exists() {
        let t = Instant::now();
        let part = dir.join("bookworm-apt-systemd.tar.part");
        run(Command::new("mmdebstrap")
            .args(["--quiet", "--variant=apt", "--include=systemd", "bookworm"])
            .arg(&part)
            .arg("http://deb.debian.org/debian"));
        std::fs::rename(&part, &tar).unwrap();
        eprintln!("mmdebstrap: bookworm root made in {:.0?}", t.elapsed());
    }
    tar
}

/// Builds the packages with `version` into `out` (cargo reuses the release build).
fn build_debs(out: &Path, version: Option<&str>) -> Vec<PathBuf> {
    let mut c = Command::new("bash");
    c.arg(workspace().join("scripts/build-debs.sh")).arg(out);
    if let Some(v) = version {
        c.env("PALISADE_DEB_VERSION", v);
    }
    run(&mut c);
    let mut debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_amd64.deb"))
        .collect();
    debs.sort();
    assert_eq!(debs.len(), PACKAGES.len(), "{debs:?}");
    debs
}

#[test]
#[ignore = "not yet run once end to end (release build + mmdebstrap root): issue 19 is open; run with --ignored"]
fn packages_install_upgrade_and_purge_in_a_clean_bookworm() {
    for (c, by) in [
        ("mmdebstrap", "Debian package mmdebstrap"),
        ("lintian", "Debian package lintian"),
        ("dpkg-shlibdeps", "Debian package dpkg-dev"),
        ("unshare", "Debian package util-linux"),
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
    let v1 = build_debs(&work.path().join("v1"), None);
    let version2 = format!("{}+upgrade1", env!("CARGO_PKG_VERSION"));
    let v2 = build_debs(&work.path().join("v2"), Some(&version2));
    eprintln!("packages built in {:.0?}", start.elapsed());

    // lintian: no errors; each warning kept is explained in the package's lintian-overrides.
    let o = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .args(&v1)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "lintian:\n{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let tar = bookworm_tarball();
    let root = Root(work.path().join("root"));
    std::fs::create_dir_all(&root.0).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&root.0));
    for (dir, debs) in [("v1", &v1), ("v2", &v2)] {
        let d = root.0.join("tmp/debs").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for deb in debs.iter() {
            std::fs::copy(deb, d.join(deb.file_name().unwrap())).unwrap();
        }
    }

    // Install: dependencies from the root itself (no download).
    root.sh("apt-get install -y -q --no-download /tmp/debs/v1/*.deb");
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
        "/usr/share/bash-completion/completions/fence_node",
    ] {
        root.sh(&format!("test -x {f} || test -f {f}"));
    }
    let meta = root.out("/usr/sbin/fence_palisade -o metadata");
    assert!(
        meta.contains("<resource-agent name=\"fence_palisade\""),
        "{meta}"
    );
    // The units, as systemd reads them (no systemd runs: analyze reads the files).
    let verify = root.sh(
        "systemd-analyze verify /lib/systemd/system/fenced.service /lib/systemd/system/palisade-sbd.service 2>&1",
    );
    let verify = String::from_utf8_lossy(&verify.stdout);
    assert!(
        !verify.contains("fenced.service:") && !verify.contains("palisade-sbd.service:"),
        "systemd-analyze verify: {verify}"
    );

    // An operator's change to the conffile and the daemon's history.
    root.sh("echo '# changed by the operator' >> /etc/palisade/fenced.toml");
    root.sh("echo ledger > /var/lib/palisade/history.redb; chown palisade: /var/lib/palisade/history.redb");

    root.sh("apt-get install -y -q --no-download /tmp/debs/v2/*.deb");
    let versions = root.out(
        "dpkg-query -W -f '${Package} ${Version}\\n' fenced fence-node fence-palisade palisade-sbd",
    );
    for p in PACKAGES {
        assert!(versions.contains(&format!("{p} {version2}")), "{versions}");
    }
    let conf = root.out("cat /etc/palisade/fenced.toml");
    assert!(conf.contains("# changed by the operator"), "{conf}");
    root.sh("test ! -e /etc/palisade/fenced.toml.dpkg-new");
    assert_eq!(root.out("cat /var/lib/palisade/history.redb"), "ledger\n");
    root.sh("fenced check-config /etc/palisade/fenced.toml >/dev/null");

    root.sh("apt-get purge -y -q fenced fence-node fence-palisade palisade-sbd");
    let left = root.out(
        "for f in /etc/palisade /var/lib/palisade /run/palisade /usr/sbin/fenced /usr/sbin/fence_node \
         /usr/sbin/fence_palisade /usr/sbin/palisade-sbd /lib/systemd/system/fenced.service \
         /lib/systemd/system/palisade-sbd.service /usr/lib/sysusers.d/palisade.conf \
         /usr/lib/tmpfiles.d/palisade.conf /etc/systemd/system/multi-user.target.wants/fenced.service \
         /var/lib/systemd/deb-systemd-helper-enabled/fenced.service.dsh-also; do \
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
    eprintln!(
        "debian_package: {:.0?} in all (lintian: {} lines)",
        start.elapsed(),
        report.lines().count()
    );
}
