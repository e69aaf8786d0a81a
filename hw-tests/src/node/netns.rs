//! Named network namespaces (`ip netns`), deleted on drop, and running things inside them:
//! `ip`, `nft` and sockets created on a thread that entered the namespace.

use super::NodeError;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    /// Held open so the namespace can be entered without a path lookup after fork.
    file: File,
}

impl NetNs {
    /// Creates the namespace `name` with its loopback up.
    pub fn create(name: &str) -> Result<NetNs, NodeError> {
        super::run(
            Command::new("ip").args(["netns", "add", name]),
            "create a network namespace (needs root and iproute2)",
        )?;
        let file = match File::open(format!("/run/netns/{name}")) {
            Ok(f) => f,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
                return Err(NodeError::io(format!("open /run/netns/{name}"), e));
            }
        };
        let ns = NetNs {
            name: name.to_string(),
            file,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A file descriptor of the namespace, for `setns(2)`.
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Runs `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<(), NodeError> {
        super::run(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            "configure a lab namespace",
        )
    }

    /// Loads an nftables script (`nft -f -`) inside the namespace only: the host's ruleset is
    /// never touched.
    pub fn nft(&self, script: &str) -> Result<(), NodeError> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                NodeError::io(
                    "run nft (install nftables: scripts/install-test-deps.sh)",
                    e,
                )
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| NodeError::io("write the nft script", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| NodeError::io("wait for nft", e))?;
        if !out.status.success() {
            return Err(NodeError::Command {
                what: format!("nft in namespace {}", self.name),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Runs `f` on a new thread that has entered the namespace, and returns its result:
    /// sockets created there stay in the namespace for their whole life, whichever thread
    /// later uses them.
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, NodeError> {
        let fd = self
            .file
            .try_clone()
            .map_err(|e| NodeError::io("dup namespace fd", e))?;
        let name = self.name.clone();
        std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd affects only this new thread (a thread
            // may change its own network namespace), which ends after `f`.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| NodeError::Command {
            what: format!("a task in namespace {name}"),
            detail: "it panicked".into(),
        })?
        .map_err(|e| NodeError::io(format!("inside namespace {}", self.name), e))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it (and their peers).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
