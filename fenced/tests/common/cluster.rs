//! The fencer cluster's lab bed (issue 16): a [`ClusterLab`] with lab BMCs on its switch
//! (a BMC named after a cluster node powers that node: its power off kills the node) and a
//! real `fenced run` with `[cluster]` on every node. Shared by `fenced --test cluster` and
//! `fenced --test cluster_chaos`; moved here from cluster.rs unchanged.

use super::process::{secret_file, text};
use drivers::Secret;
use hw_tests::cluster::{ClusterLab, ClusterSpec};
use hw_tests::lab::ipmi::{serve, BmcConfig, BmcState};
use hw_tests::lab::node::PowerEvent;
use hw_tests::lab::{BmcHandle, EventKind};
use hw_tests::require;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "lab-password";
/// The first BMC's UDP port on the lab switch.
pub const BMC_PORT: u16 = 6230;
pub const WAIT: Duration = Duration::from_secs(30);

/// Whether the machine has what the cluster lab needs (else the test fails, or skips when
/// allowed).
pub fn have_corosync() -> bool {
    require::needs_command("corosync", "Debian package corosync")
        && require::needs_command("corosync-quorumtool", "Debian package corosync")
        && require::needs_command("nft", "Debian package nftables")
        && require::needs(
            "root",
            "running the tests as root (namespaces, cgroups, mounts)",
            if unsafe { libc::geteuid() } == 0 {
                Ok(())
            } else {
                Err("not root".into())
            },
        )
}

/// A cluster lab with lab BMCs on its switch and a `fenced` on every node.
pub struct Bed {
    // Field order is drop order: the lab (its nodes and their daemons), then the BMCs.
    /// The Corosync nodes (and their fenceds, registered as lab daemons).
    pub lab: ClusterLab,
    /// The lab BMCs, `node1` first.
    pub bmcs: Vec<BmcHandle>,
    /// The runtime serving the BMCs.
    pub rt: Option<tokio::runtime::Runtime>,
    /// Each fenced's directory (config, socket, ledger, log) lives here.
    pub tmp: tempfile::TempDir,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Bed {
    /// `nodes` cluster nodes and BMCs for `targets` (`node1`..): a BMC whose name is a
    /// cluster node powers that node.
    pub fn new(nodes: usize, targets: usize) -> Bed {
        Bed::with_spec(ClusterSpec::new(nodes), targets)
    }

    /// A cluster as `spec` says, with BMCs for `targets` targets.
    pub fn with_spec(spec: ClusterSpec, targets: usize) -> Bed {
        let lab = ClusterLab::with_spec(spec).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // The node dies beside the BMC, not inside its answer: the lab's hook waits until
        // every process of the node is gone, and a real BMC keeps answering meanwhile.
        let lab_hook = lab.power_hook();
        let hook: hw_tests::lab::node::PowerHook = std::sync::Arc::new(move |name: &str, e| {
            let (h, name) = (lab_hook.clone(), name.to_string());
            std::thread::spawn(move || h(&name, e));
        });
        let mut bmcs = Vec::new();
        for i in 1..=targets {
            let sock = lab.net().bind_udp(BMC_PORT + i as u16).unwrap();
            sock.set_nonblocking(true).unwrap();
            let mut cfg = BmcConfig::new(
                &format!("node{i}"),
                "admin",
                Secret::new(PASSWORD.as_bytes().to_vec()),
            );
            cfg.addr = sock.local_addr().unwrap();
            cfg.guid[0] = i as u8;
            cfg.power_hook = Some(hook.clone());
            let st = BmcState::new(cfg);
            bmcs.push(st.handle());
            rt.block_on(async {
                let s = tokio::net::UdpSocket::from_std(sock).unwrap();
                tokio::spawn(serve(s, st));
            });
        }
        let tmp = tempfile::tempdir().unwrap();
        Bed {
            lab,
            bmcs,
            rt: Some(rt),
            tmp,
        }
    }

    /// The directory of fenced instance `node`.
    pub fn dir(&self, node: &str) -> PathBuf {
        self.tmp.path().join(node)
    }

    /// The API socket of fenced instance `node`.
    pub fn socket(&self, node: &str) -> PathBuf {
        self.dir(node).join("fenced.sock")
    }

    /// The lab BMC called `name`.
    pub fn bmc(&self, name: &str) -> &BmcHandle {
        self.bmcs.iter().find(|b| b.name() == name).unwrap()
    }

    /// Writes `node`'s config (every BMC a target, all reachable) and starts its fenced
    /// inside the node; returns once it answers on its socket.
    pub fn start_fenced(&self, node: &str, extra_cluster: &str) {
        self.start_instance(
            node,
            node,
            Some(extra_cluster),
            env!("CARGO_BIN_EXE_fenced"),
            &[],
        );
    }

    /// A fenced called `instance` (its directory, socket and lab daemon name) on `node`,
    /// with `[cluster]` (plus `cluster` lines) or, for `None`, alone as without a cluster;
    /// `target_lines` are `(target, lines)`: lines for that target's table.
    pub fn start_instance(
        &self,
        node: &str,
        instance: &str,
        cluster: Option<&str>,
        bin: &str,
        target_lines: &[(&str, &str)],
    ) {
        let dir = self.dir(instance);
        std::fs::create_dir_all(&dir).unwrap();
        let pw = secret_file(&dir, "pw", PASSWORD);
        let mut cfg = format!(
            "[daemon]\nnode_name = \"{node}\"\nsocket = {:?}\nhistory = {:?}\n\n[defaults]\nattempt_timeout_s = 3\ntotal_timeout_s = 8\n\n# The figures fence one target 20 times.\n[limits]\nmax_operations = 100\nmax_operations_per_target = 100\n\n",
            self.socket(instance),
            dir.join("history.redb")
        );
        let mut reaches = Vec::new();
        for b in &self.bmcs {
            let target_lines: String = target_lines
                .iter()
                .filter(|(t, _)| *t == b.name())
                .map(|(_, l)| *l)
                .collect();
            cfg.push_str(&format!(
                "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = {pw:?}\ncipher_suite = 17\ntimeout_ms = 300\nretries = 2\n\n[targets.{n}]\nlevels = [[\"bmc-{n}\"]]\nidentities = {{ bmc-{n} = \"{guid}\" }}\n{target_lines}\n",
                n = b.name(),
                a = b.addr(),
                guid = b.guid_text(),
            ));
            reaches.push(format!("\"bmc-{}\"", b.name()));
        }
        if let Some(extra) = cluster {
            // Every BMC is reachable unless the caller says which.
            let reaches = if extra.contains("reaches") {
                String::new()
            } else {
                format!("reaches = [{}]\n", reaches.join(", "))
            };
            cfg.push_str(&format!(
                "[cluster]\ngroup = \"palisade-test\"\nnode_name = \"{node}\"\n{reaches}{extra}"
            ));
        }
        let bin = bin.to_string();
        let config = dir.join("fenced.toml");
        std::fs::write(&config, cfg).unwrap();
        let log_path = dir.join("fenced.log");
        // Registered with the lab, so a node powered back on starts its fenced again.
        self.lab
            .add_daemon(
                node,
                instance,
                Box::new(move |n| {
                    let log = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log_path)
                        .map_err(|e| hw_tests::node::NodeError::Spec(e.to_string()))?;
                    let err = log
                        .try_clone()
                        .map_err(|e| hw_tests::node::NodeError::Spec(e.to_string()))?;
                    n.spawn(
                        Command::new(&bin)
                            .args(["run", "--config"])
                            .arg(&config)
                            .env("RUST_LOG", "info")
                            .stdin(Stdio::null())
                            .stdout(log)
                            .stderr(err),
                    )
                }),
            )
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(self.socket(instance)).is_err() {
            assert!(
                Instant::now() < until,
                "{instance}'s fenced did not accept on its socket: {}",
                self.log(instance)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What fenced instance `node` logged.
    pub fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir(node).join("fenced.log")).unwrap_or_default()
    }

    /// Runs `fence_node ARGS` against instance `node`'s socket.
    pub fn fence_node(&self, node: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fence_node"))
            .args(args)
            .env("PALISADE_SOCKET", self.socket(node))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `GET path` on `node`'s API (curl over its Unix socket).
    pub fn get(&self, node: &str, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--unix-socket"])
            .arg(self.socket(node))
            .arg(format!("http://fenced{path}"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    /// Waits until `node`'s fenced holds the cluster's state with `members` members.
    pub fn wait_joined(&self, node: &str, members: usize) -> Value {
        let until = Instant::now() + WAIT;
        loop {
            let v = self.get(node, "/v1/cluster");
            let st = &v["status"];
            if st["joined"] == true
                && st["quorate"] == true
                && st["members"].as_array().map(Vec::len) == Some(members)
                // Every member announced itself (names, not `node/pid`).
                && st["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| !m.as_str().unwrap_or("/").contains('/'))
            {
                return v;
            }
            assert!(
                Instant::now() < until,
                "{node} did not join with {members} members: {v}\n{}",
                self.log(node)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How many times the BMC powered its node off, from its own event log.
pub fn power_offs(b: &BmcHandle) -> u32 {
    b.events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Power(PowerEvent::Off)))
        .map(|e| e.count)
        .sum()
}

/// An agreed operation as one member's own history records it (ids differ per member).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AgreedOp {
    /// The cluster operation (`origin#n`).
    pub op: String,
    /// The member it was asked on.
    pub origin: String,
    /// The member that executed it.
    pub executor: String,
    /// The target.
    pub target: String,
    /// `off`, `on`, `reboot`.
    pub action: String,
    /// Its final state in this member's history.
    pub state: String,
    /// The outcome's confirmation is a device read-back.
    pub read_back: bool,
}

impl Bed {
    /// `node`'s own history (`GET /v1/history`) of cluster-agreed operations, by cluster op.
    pub fn agreed_history(&self, node: &str) -> Vec<AgreedOp> {
        let h = self.get(node, "/v1/history?limit=1000");
        let mut ops: Vec<AgreedOp> = h
            .as_array()
            .unwrap_or_else(|| panic!("{node}: /v1/history is not a list: {h}"))
            .iter()
            .filter(|o| o["cluster"].is_object())
            .map(|o| AgreedOp {
                op: o["cluster"]["op"].as_str().unwrap_or_default().into(),
                origin: o["cluster"]["origin"].as_str().unwrap_or_default().into(),
                executor: o["cluster"]["executor"].as_str().unwrap_or_default().into(),
                target: o["target"].as_str().unwrap_or_default().into(),
                action: o["action"].as_str().unwrap_or_default().into(),
                state: o["state"].as_str().unwrap_or_default().into(),
                read_back: o["outcome"]["outcome"] == "succeeded"
                    && o["outcome"]["confirmation"]["method"] == "power_read_back",
            })
            .collect();
        ops.sort();
        ops
    }
}
