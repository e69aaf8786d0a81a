//! `palisade-lab demo` as a newcomer meets it: the README's first command (in its debug-build
//! form: the same line without `--release`, so the test does not wait for a release build),
//! the demo's first fence, then every command the demo suggests, run exactly as printed from
//! the repository root, each of which must succeed. Also: the daemon the demo runs is the real
//! `fenced` binary, it stops with the demo, and a missing binary is named with its build
//! command.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap()
}

/// The README's first shell command: the first line of its first ```sh block.
fn readme_first_command() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a ```sh block");
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "the README's first command is one copy-pasteable line: {block:?}"
    );
    lines[0].to_string()
}

/// The demo as a child of `bash -c LINE` in its own process group (a terminal's foreground
/// job), its stdout read line by line on a thread.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(line: &str) -> Running {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(line)
            .current_dir(repo_root())
            .env_remove("PALISADE_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Lines up to and including the first blank line after the suggestions' header.
    fn until_suggestions(&mut self, limit: Duration) -> Vec<String> {
        let until = Instant::now() + limit;
        let mut in_block = false;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    println!("demo| {line}");
                    let done = in_block && line.trim().is_empty();
                    in_block |= line.contains("From another terminal");
                    self.seen.push(line);
                    if done {
                        return self.seen.clone();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the demo printed no suggestions within {limit:?}: {:#?}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the demo exited ({:?}) before its suggestions: {:#?}",
                    self.child.wait(),
                    self.seen
                ),
            }
        }
    }

    /// Ctrl-C: SIGINT to the whole foreground group, as a terminal sends it; then the exit.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe { libc::kill(-pgid, libc::SIGINT) };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                for line in self.lines.try_iter() {
                    println!("demo| {line}");
                }
                return status;
            }
            assert!(Instant::now() < until, "the demo did not stop after SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pgid = self.child.id() as libc::pid_t;
            // SAFETY: as above; the group is still ours since the child is not reaped.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

#[test]
fn readme_first_command_then_every_suggested_command_works_as_printed() {
    let readme = readme_first_command();
    assert!(
        readme.contains("--workspace --bins")
            && readme.contains("target/release/palisade-lab demo"),
        "the README's first command builds every binary and starts the demo: {readme}"
    );
    // The debug build of the same line (the suite builds debug binaries first), in the target
    // directory this test was built into (CARGO_TARGET_DIR may move it).
    let target = hw_tests::bins::target_dir().canonicalize().unwrap();
    let debug = match target.strip_prefix(repo_root()) {
        Ok(rel) => rel.join("debug"),
        Err(_) => target.join("debug"),
    };
    let line = readme
        .replace(" --release", "")
        .replace("target/release/", &format!("{}/", debug.display()));
    println!("running: {line}");
    let mut demo = Running::start(&line);
    // cargo may rebuild part of the workspace here (the suite's own builds select other feature
    // sets), slowly on a loaded machine: under the 480 s nextest gives this binary.
    let out = demo.until_suggestions(Duration::from_secs(480));

    assert!(
        out.iter()
            .any(|l| l.contains("=> SUCCEEDED") && l.contains("reading the power state back")),
        "node1 fenced and confirmed at start: {out:#?}"
    );
    // The daemon is the real binary from the same build, running as its own process.
    let pid: u32 = out
        .iter()
        .find_map(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
        .expect("the demo names fenced's pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, target.join("debug/fenced"));

    let header = out
        .iter()
        .position(|l| l.contains("From another terminal"))
        .unwrap();
    let suggested: Vec<String> = out[header + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    let export = suggested[0].clone();
    assert!(export.starts_with("export PALISADE_SOCKET="), "{export}");
    let socket = PathBuf::from(export.trim_start_matches("export PALISADE_SOCKET="));
    let commands = &suggested[1..];
    assert!(
        commands.len() >= 4
            && commands
                .iter()
                .all(|c| c.starts_with(&format!("{}/fence_node ", debug.display()))),
        "fence_node commands with the path a newcomer types: {commands:#?}"
    );
    // In another terminal at the repository root: the export, then each command as printed.
    for cmd in commands {
        let run = Command::new("bash")
            .arg("-c")
            .arg(format!("{export}\n{cmd}"))
            .current_dir(repo_root())
            .env_remove("PALISADE_SOCKET")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        println!("$ {cmd}\n{stdout}{}", String::from_utf8_lossy(&run.stderr));
        assert!(run.status.success(), "`{cmd}` failed with {}", run.status);
        if cmd.contains(" off node2 ") {
            assert!(stdout.to_lowercase().contains("node2"), "{stdout}");
        }
    }

    // Ctrl-C stops the demo cleanly: exit 0, the daemon gone, the temporary directory removed.
    let status = demo.interrupt();
    assert!(status.success(), "the demo exits 0 on Ctrl-C: {status}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "fenced (pid {pid}) stopped with the demo"
    );
    let dir = socket.parent().unwrap();
    assert!(!dir.exists(), "{} removed", dir.display());
}

#[test]
fn demo_without_the_daemon_names_the_command_that_builds_it() {
    let tmp = tempfile::tempdir().unwrap();
    for (dir, build) in [
        (
            tmp.path().join("release"),
            "`cargo build --release --workspace --bins`",
        ),
        (tmp.path().join("debug"), "`cargo build --workspace --bins`"),
    ] {
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_palisade-lab"))
            .args(["demo", "--bin-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{} does not exist", dir.join("fenced").display()))
                && err.contains(build),
            "{err}"
        );
    }
}

/// The daemon contains no simulator: `fenced`'s normal and build dependencies do not include
/// the bench (a dev-dependency, for fenced's own tests, is allowed).
#[test]
fn fenced_does_not_depend_on_the_bench() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "fenced",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.lines().any(|l| l.starts_with("drivers ")), "{tree}");
    assert!(!tree.lines().any(|l| l.starts_with("hw-tests ")), "{tree}");
}
