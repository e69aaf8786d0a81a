//! Pacemaker's real fencer (`pacemaker-fenced -s`, stand-alone, as its own cts-fencing runs it)
//! in private namespaces, with `fence_palisade` visible to it as `/usr/sbin/fence_palisade`.
//!
//! Each instance gets its own mount, IPC, network and PID namespace: standalone fencers use
//! one fixed IPC name (libqb abstract sockets live in the network namespace, shared memory in
//! /dev/shm), so parallel tests would otherwise talk to each other's fencer. The agent reaches
//! fenced through fenced's Unix socket path, which every mount namespace still sees. Pacemaker
//! looks for agents only in /usr/sbin: a read-only overlay puts ours there inside the
//! namespace, leaving the machine's /usr/sbin untouched. Killing `unshare` (on drop) kills the
//! namespace's init and with it every process inside.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the fencer daemon (package `pacemaker`).
pub const PACEMAKER_FENCED: &str = "/usr/lib/pacemaker/pacemaker-fenced";

/// A stand-alone Pacemaker fencer in its own namespaces.
pub struct PacemakerFencer {
    unshare: Option<Child>,
    init_pid: u32,
    dir: PathBuf,
}

impl PacemakerFencer {
    /// Starts the fencer with `agent` installed as `/usr/sbin/<agent file name>` inside.
    pub fn start(dir: &Path, agent: &Path) -> PacemakerFencer {
        let agents = dir.join("agents");
        std::fs::create_dir_all(&agents).unwrap();
        let name = agent.file_name().unwrap();
        let _ = std::fs::remove_file(agents.join(name));
        std::os::unix::fs::symlink(agent, agents.join(name)).unwrap();
        let ready = dir.join("pcmk.ready");
        let _ = std::fs::remove_file(&ready);
        let script = format!(
            r#"set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mkdir -p /run/crm /run/pacemaker
mount -t tmpfs tmpfs /var/lib/pacemaker
mkdir -p /var/lib/pacemaker/cib /var/lib/pacemaker/blackbox /var/lib/pacemaker/cores
mkdir -p /var/log/pacemaker && mount -t tmpfs tmpfs /var/log/pacemaker
mount -t overlay overlay -o lowerdir={agents}:/usr/sbin /usr/sbin
ip link set lo up 2>/dev/null || true
{fenced} -s > {log} 2>&1 &
i=0
until stonith_admin --list-registered >/dev/null 2>&1; do
  i=$((i+1)); [ $i -lt 1800 ] || {{ echo "pacemaker-fenced did not start within 90 s; its log:" >&2; tail -50 /var/log/pacemaker/pacemaker.log >&2; exit 1; }}
  sleep 0.05
done
touch {ready}
exec sleep 1000000
"#,
            agents = agents.display(),
            fenced = PACEMAKER_FENCED,
            log = dir.join("pacemaker-fenced.log").display(),
            ready = ready.display(),
        );
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--ipc",
                "--net",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("unshare.err")).unwrap())
            .spawn()
            .unwrap();
        let mut f = PacemakerFencer {
            unshare: Some(child),
            init_pid: 0,
            dir: dir.into(),
        };
        // Generous: on a loaded 2-core machine the fencer has taken more than 20 s to start.
        let until = Instant::now() + Duration::from_secs(120);
        while !ready.exists() {
            if let Some(s) = f.unshare.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the Pacemaker namespace exited with {s}: {}\n{}",
                    std::fs::read_to_string(dir.join("unshare.err")).unwrap_or_default(),
                    f.log()
                );
            }
            assert!(
                Instant::now() < until,
                "pacemaker-fenced did not start: {}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = f.unshare.as_ref().unwrap().id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        f.init_pid = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no namespace init under unshare {pid}"));
        f
    }

    /// pacemaker-fenced's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pacemaker-fenced.log")).unwrap_or_default()
    }

    /// Runs `stonith_admin ARGS` inside the namespaces.
    pub fn stonith_admin(&self, args: &[&str]) -> Output {
        let pid = self.init_pid.to_string();
        Command::new("nsenter")
            .args([
                "-t",
                &pid,
                "-m",
                "-i",
                "-n",
                "-p",
                "--",
                "timeout",
                "120",
                "stonith_admin",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for PacemakerFencer {
    fn drop(&mut self) {
        if let Some(mut c) = self.unshare.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
