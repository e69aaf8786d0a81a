//! No command of the workspace panics when its reader goes away (`fenced check-config big.toml
//! | head -1`): each binary runs with a standard output whose read end is already closed
//! (every write fails with EPIPE), and must exit with a status of its own, not abort (134) or
//! die of a signal, and print no panic on stderr. Then again with stderr closed too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The write end of a pipe whose read end is closed.
fn closed_pipe() -> Stdio {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created by pipe(2) and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

fn big_config(dir: &Path) -> PathBuf {
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut s = format!(
        "[daemon]\nsocket = {:?}\nhistory = {:?}\nnode_name = \"x\"\n\n",
        dir.join("s.sock"),
        dir.join("h.redb")
    );
    // ~300 KB of summary: far more than a pipe buffer.
    for i in 1..=1000 {
        let _ = write!(
            s,
            "[devices.bmc-node{i}]\nkind = \"ipmi\"\naddress = \"127.0.0.1:{}\"\nusername = \"admin\"\npassword_file = {pw:?}\n\n[targets.node{i}]\nlevels = [[\"bmc-node{i}\"]]\n\n",
            6000 + i
        );
    }
    let p = dir.join("big.toml");
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn every_binary_survives_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let config = big_config(dir.path());
    let cfg = config.to_str().unwrap();
    let docs_out = dir.path().join("docs");
    let fenced = hw_tests::bins::fenced();
    let fence_node = hw_tests::bins::workspace_bin("fenced", "fence_node");
    let fence_palisade = hw_tests::bins::workspace_bin("fenced", "fence_palisade");
    let sbd = hw_tests::bins::palisade_sbd();
    let docs = hw_tests::bins::workspace_bin("packaging", "palisade-docs");
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_palisade-lab"));
    let workload = PathBuf::from(env!("CARGO_BIN_EXE_palisade-workload"));
    let cases: Vec<(&Path, Vec<&str>)> = vec![
        (&fenced, vec!["check-config", cfg]),
        (&fenced, vec!["--help"]),
        (
            &fence_node,
            vec!["--socket", "/nonexistent/s", "--json", "status"],
        ),
        (&fence_node, vec!["--help"]),
        (&fence_palisade, vec!["-o", "metadata"]),
        (&fence_palisade, vec!["--help"]),
        (&sbd, vec!["--help"]),
        (&docs, vec![docs_out.to_str().unwrap()]),
        (&lab, vec!["--help"]),
        (&workload, vec!["nonsense"]),
    ];
    for (bin, args) in &cases {
        assert!(bin.exists(), "{} is not built", bin.display());
        let what = format!("{} {}", bin.display(), args.join(" "));
        let o = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code().is_some_and(|c| c != 134 && c != 141),
            "{what}: {:?}\n{err}",
            o.status
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
        let o = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(closed_pipe())
            .status()
            .unwrap();
        assert!(
            o.code().is_some_and(|c| c != 134 && c != 141),
            "{what} with stderr closed too: {o:?}"
        );
    }
}
