//! A fencer API served in-process over a tempdir Unix socket, with test devices whose
//! behaviour each test picks, and helpers that drive it with real HTTP clients (curl and the
//! `fence_node` binary).

#![allow(dead_code)]

pub mod cluster;
pub mod pacemaker;
pub mod process;

use async_trait::async_trait;
use drivers::{DeviceError, Identity, PowerCommand, PowerDevice, PowerState};
use fenced::api::{bind_unix, Api};
use fenced::config::Config;
use fenced::history::History;
use fenced::{Clock, DeviceSlot, Engine};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a test device behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Switches at once and reads back truthfully.
    Honest,
    /// Accepts every command and keeps reporting on (a stuck or lying device).
    NeverOff,
    /// Switches off; refuses to power on.
    RefusesOn,
    /// Honest, but each power command takes this many milliseconds.
    Slow(u64),
}

/// A power device for one node, in memory.
pub struct TestDevice {
    pub name: String,
    pub behaviour: Behaviour,
    pub state: Mutex<PowerState>,
}

impl TestDevice {
    fn addr(&self) -> String {
        format!("test:{}", self.name)
    }
}

#[async_trait]
impl PowerDevice for TestDevice {
    async fn status(&self, _port: Option<&str>) -> Result<PowerState, DeviceError> {
        Ok(*self.state.lock().unwrap())
    }

    async fn power(&self, _port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        match (self.behaviour, command) {
            (Behaviour::NeverOff, _) => Ok(()),
            (Behaviour::RefusesOn, PowerCommand::On) => Err(DeviceError::Refused {
                address: self.addr(),
                command: "on".into(),
                detail: "power supply fault".into(),
            }),
            (b, c) => {
                if let Behaviour::Slow(ms) = b {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                *self.state.lock().unwrap() = c.expected_state();
                Ok(())
            }
        }
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        Ok(Identity {
            kind: "serial".into(),
            value: format!("sn-{}", self.name),
            description: "palisade test device".into(),
        })
    }
}

/// Nodes of the test cluster: (target, device, behaviour).
pub const NODES: &[(&str, &str, Behaviour)] = &[
    ("node1", "bmc-node1", Behaviour::Honest),
    ("node2", "bmc-node2", Behaviour::NeverOff),
    ("node3", "bmc-node3", Behaviour::Slow(1000)),
    ("node4", "bmc-node4", Behaviour::RefusesOn),
];

/// Unprivileged uids the config grants roles to (tests run requests as them when root).
pub const READ_UID: u32 = 65532;
pub const FENCE_UID: u32 = 65533;
/// A uid with no role at all.
pub const NOBODY: u32 = 65534;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub engine: Engine,
    pub api: Api,
    pub me: u32,
    rt: tokio::runtime::Runtime,
}

fn config_text(dir: &Path, me: u32) -> String {
    let mut s = format!(
        r#"
[daemon]
socket = "{dir}/run/fenced.sock"
history = "{dir}/history.redb"
node_name = "test-controller"

[api]
socket_mode = "0666"
admin_uids = [{me}]
fence_uids = [{FENCE_UID}]
read_uids = [{READ_UID}]

[limits]
max_operations = 1000
max_operations_per_target = 1000
"#,
        dir = dir.display()
    );
    for (target, device, _) in NODES {
        s.push_str(&format!(
            "\n[devices.{device}]\nkind = \"ipmi\"\naddress = \"127.0.0.1:623\"\nusername = \"admin\"\npassword_env = \"PW\"\n"
        ));
        // The device that never confirms fails fast; the others have room on a loaded machine.
        let (attempt, total) = if *target == "node2" { (1, 2) } else { (5, 10) };
        s.push_str(&format!(
            "\n[targets.{target}]\nlevels = [[\"{device}\"]]\nattempt_timeout_s = {attempt}\ntotal_timeout_s = {total}\n"
        ));
    }
    s
}

impl Harness {
    pub fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        // Unprivileged test callers must be able to reach the socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        let me = std::fs::metadata(&probe).unwrap().uid();
        let text = config_text(dir.path(), me);
        let path = dir.path().join("fenced.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Arc::new(
            Config::parse(&path, &text, &|_| Some(b"secret".to_vec()))
                .unwrap_or_else(|e| panic!("test config: {e}")),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (engine, api, socket) = rt.block_on(async {
            let clock = Clock::system();
            let (history, interrupted) =
                History::open(&config.daemon.history, clock.now_ms()).unwrap();
            let mut devices = BTreeMap::new();
            for (_, device, behaviour) in NODES {
                let d: Arc<dyn PowerDevice> = Arc::new(TestDevice {
                    name: device.to_string(),
                    behaviour: *behaviour,
                    state: Mutex::new(PowerState::On),
                });
                devices.insert(
                    device.to_string(),
                    DeviceSlot {
                        device: d,
                        kind: "test".into(),
                        address: format!("test:{device}"),
                    },
                );
            }
            let engine = Engine::new(
                config.clone(),
                devices,
                history,
                interrupted.len() as u32,
                clock,
            )
            .unwrap();
            let api = Api::new(engine.clone());
            let socket = config.daemon.socket.clone();
            let listener = bind_unix(&socket, config.api.socket_mode).unwrap();
            let serving = api.clone();
            tokio::spawn(async move { serving.serve_unix(listener).await });
            (engine, api, socket)
        });
        Harness {
            dir,
            socket,
            engine,
            api,
            me,
            rt,
        }
    }

    /// Also serves the API on a loopback TCP port; returns its address.
    pub fn serve_tcp(&self) -> std::net::SocketAddr {
        let api = self.api.clone();
        self.rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { api.serve_tcp(l, None).await });
            addr
        })
    }

    pub fn root(&self) -> bool {
        self.me == 0
    }

    /// Runs curl against the socket, optionally as another uid; returns (status, body).
    pub fn curl_as(
        &self,
        uid: Option<u32>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "--unix-socket"])
            .arg(&self.socket)
            .args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(b) = body {
            c.args(["-H", "content-type: application/json", "--data-binary", b]);
        }
        c.arg(format!("http://localhost{path}"));
        if let Some(u) = uid {
            c.uid(u).gid(u);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl gave no status: {text:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, body.to_string())
    }

    pub fn curl(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.curl_as(None, method, path, body)
    }

    /// curl returning parsed JSON.
    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (code, text) = self.curl(method, path, body);
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (code, v)
    }

    /// Runs `fence_node --socket SOCKET ARGS...` with stdin closed.
    pub fn fence_node(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fence_node"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.api.shutdown();
    }
}

/// Asserts an error answer has the API's error shape and the code; returns the detail.
pub fn assert_error(code: u16, body: &str, want_status: u16, want_code: &str) -> Value {
    assert_eq!(code, want_status, "status; body: {body}");
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("error body not JSON ({e}): {body}"));
    let err = &v["error"];
    assert_eq!(err["code"], want_code, "error code; body: {body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        err["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "{body}"
    );
    err.clone()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
