//! A `fenced run` daemon as a child process, driven with the `fence_node` binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `fenced run` child process, killed on drop (also when the test panics).
pub struct Fenced {
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
}

impl Fenced {
    pub fn start(dir: &Path, config: &Path) -> Fenced {
        Fenced::start_with_env(dir, config, &[])
    }

    /// Starts `fenced` with extra environment variables (e.g. libfaketime's).
    pub fn start_with_env(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Fenced {
        let socket = dir.join("fenced.sock");
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(dir.join("fenced.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fenced"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut f = Fenced {
            child: Some(child),
            dir: dir.into(),
            config: config.into(),
        };
        let until = Instant::now() + Duration::from_secs(20);
        // The socket file appears at bind(), before listen(): wait until a connection is taken.
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = f.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("fenced exited with {status}: {}", f.log());
            }
            assert!(
                Instant::now() < until,
                "fenced did not accept on its socket: {}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        f
    }

    /// The daemon's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("fenced.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fenced.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL: no drain, no clean-up
            c.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        let again = Fenced::start(&self.dir, &self.config);
        *self = again;
    }

    pub fn fence_node(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fence_node"))
            .args(args)
            .env("PALISADE_SOCKET", self.dir.join("fenced.sock"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The newest operation in `node`'s history (`fence_node history NODE --json`).
    pub fn last_op(&self, node: &str) -> Value {
        let h = self.json(&["history", node]);
        h.as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("no history for {node}: {h}"))
    }

    /// Runs `fence_node ACTION NODE --reason REASON`, asserts it exits 0 and says FENCED
    /// (not NOT FENCED), and returns its output.
    pub fn fenced_ok(&self, action: &str, node: &str, reason: &str) -> String {
        let out = self.fence_node(&[action, node, "--reason", reason]);
        let s = text(&out);
        assert_eq!(out.status.code(), Some(0), "{s}\n{}", self.log());
        s
    }

    /// Runs `fence_node off NODE`, asserts it exits 1 saying NOT FENCED and that the newest
    /// operation in history failed, and returns its output.
    pub fn not_fenced(&self, node: &str) -> String {
        let out = self.fence_node(&["off", node, "--reason", "lie test"]);
        let s = text(&out);
        assert_eq!(out.status.code(), Some(1), "{s}\n{}", self.log());
        assert!(s.contains("NOT FENCED"), "{s}");
        assert_eq!(self.last_op(node)["state"], "failed");
        s
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.fence_node(&a);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }
}

/// `fenced` is killed, never left running, whatever the test did.
impl Drop for Fenced {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Both output streams of a command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes `value` and a newline to `dir/name` with mode 0600 (fenced refuses secret files that
/// group or others can read) and returns its path.
pub fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

/// The median of figures (the upper one of an even count).
pub fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}
