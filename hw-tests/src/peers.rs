//! Real third-party peers, started for one test each.
//!
//! [`IpmiSim`] runs OpenIPMI's `ipmi_sim` with our lab configuration (`peers/ipmi_sim/` in
//! this crate): one BMC on a free 127.0.0.1 UDP port, user `u` / password `p` (administrator),
//! GUID `a1 23 45 67 89 ab cd ef a1 23 45 67 89 ab cd ef` (wire order), power kept in a state
//! file by `chassis_control.sh`.
//!
//! [`Snmpd`] runs net-snmp's `snmpd` with its own configuration on a free loopback port, with
//! an APC rPDU outlet table served by `peers/snmpd/apc_rpdu_pass_persist.py`.

use drivers::ipmi::message::{Body, GetChannelAuthCapabilities, IpmiRequest, PRIV_ADMINISTRATOR};
use drivers::ipmi::session::{encode_packet, Packet, SessionHeader, V15Header, AUTH_TYPE_NONE};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `ipmi_sim` is installed (Debian package `openipmi`).
pub const IPMI_SIM: &str = "/usr/bin/ipmi_sim";
/// The user name the lab configuration defines, with administrator privilege.
pub const IPMI_SIM_USER: &str = "u";
/// That user's password.
pub const IPMI_SIM_PASSWORD: &str = "p";
/// The system GUID as `ipmitool mc guid` prints it for the lab configuration.
pub const IPMI_SIM_GUID: &str = "efcdab89-6745-23a1-efcd-ab89674523a1";

/// A running `ipmi_sim`, killed (and reaped) on drop.
#[derive(Debug)]
pub struct IpmiSim {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/ipmi_sim")
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl IpmiSim {
    /// Starts `ipmi_sim` on a free port with power on, and waits until it answers.
    pub fn start() -> io::Result<IpmiSim> {
        let mut dir = tempfile::tempdir()?;
        let src = config_dir();
        fs::copy(src.join("bmc.emu"), dir.path().join("bmc.emu"))?;
        let script = dir.path().join("chassis_control.sh");
        fs::copy(src.join("chassis_control.sh"), &script)?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
        fs::create_dir(dir.path().join("state"))?;
        fs::write(dir.path().join("power"), "1\n")?;
        let mut last_err = io::Error::other("ipmi_sim did not start");
        // The free port can be taken between probing and binding; try a few.
        for _ in 0..3 {
            let port = free_udp_port()?;
            let mut sim = IpmiSim {
                child: None,
                dir,
                port,
            };
            match sim.spawn() {
                Ok(()) => return Ok(sim),
                Err(e) => {
                    last_err = e;
                    dir = std::mem::replace(&mut sim.dir, tempfile::tempdir()?);
                }
            }
        }
        Err(last_err)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let d = self.dir.path();
        let conf = fs::read_to_string(config_dir().join("lan.conf.in"))?
            .replace("@PORT@", &self.port.to_string())
            .replace("@DIR@", &d.display().to_string())
            .replace("@STATE@", &d.join("power").display().to_string());
        fs::write(d.join("lan.conf"), conf)?;
        let log = fs::File::create(d.join("ipmi_sim.log"))?;
        let child = Command::new(IPMI_SIM)
            .arg("-n")
            .arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("bmc.emu"))
            .arg("-s")
            .arg(d.join("state"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {IPMI_SIM} ({e}); install the Debian package `openipmi`"),
                )
            })?;
        self.child = Some(child);
        self.wait_until_answering(Duration::from_secs(5))
    }

    /// Kills the simulator and starts it again on the same port (a BMC reset: its sessions
    /// are gone). Power state survives (it lives in the state file).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends Get Channel Authentication Capabilities until an answer comes back.
    fn wait_until_answering(&mut self, limit: Duration) -> io::Result<()> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let msg = IpmiRequest::to_bmc(
            drivers::ipmi::message::NETFN_APP,
            0x38,
            0,
            GetChannelAuthCapabilities {
                channel: 0x0E,
                extended: true,
                privilege: PRIV_ADMINISTRATOR,
            }
            .encode(),
        );
        let packet = Packet {
            header: SessionHeader::V15(V15Header {
                auth_type: AUTH_TYPE_NONE,
                sequence: 0,
                session_id: 0,
                auth_code: None,
            }),
            payload: msg.encode(),
        };
        let datagram = encode_packet(&packet, None, [0; 16]).map_err(io::Error::other)?;
        let start = Instant::now();
        let mut buf = [0u8; 512];
        while start.elapsed() < limit {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    return Err(io::Error::other(format!(
                        "ipmi_sim exited with {status}: {}",
                        self.log()
                    )));
                }
            }
            sock.send_to(&datagram, self.addr())?;
            if sock.recv_from(&mut buf).is_ok() {
                return Ok(());
            }
        }
        self.kill();
        Err(io::Error::other(format!(
            "ipmi_sim did not answer on port {} within {limit:?}: {}",
            self.port,
            self.log()
        )))
    }

    /// The simulator's address.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// The UDP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the simulated node's power is on, as the state file says.
    pub fn power_on(&self) -> io::Result<bool> {
        Ok(fs::read_to_string(self.dir.path().join("power"))?.trim() == "1")
    }

    /// Makes the BMC lie: it acknowledges power changes and ignores them (`STATE.stuck`).
    pub fn set_stuck(&self, stuck: bool) -> io::Result<()> {
        let f = self.dir.path().join("power.stuck");
        if stuck {
            fs::write(f, "")
        } else {
            match fs::remove_file(f) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }

    /// The simulator's output so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("ipmi_sim.log")).unwrap_or_default()
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where net-snmp's agent is installed (Debian package `snmpd`).
pub const SNMPD: &str = "/usr/sbin/snmpd";
/// The community the [`Snmpd`] peer serves (read-write).
pub const SNMPD_COMMUNITY: &str = "private";
/// Its v3 user (SHA authentication, AES privacy).
pub const SNMPD_USER: &str = "fence";
/// That user's authentication password.
pub const SNMPD_AUTH: &str = "authpass123";
/// That user's privacy password.
pub const SNMPD_PRIV: &str = "privpass123";
/// The serial number its rPDU table reports.
pub const SNMPD_SERIAL: &str = "ZA1234567890";

/// net-snmp's `snmpd` on a free loopback port with its own configuration (no system config,
/// persistent state in a temporary directory), serving an APC rPDU outlet table through
/// `peers/snmpd/apc_rpdu_pass_persist.py`, whose outlet state lives in a JSON file. Killed
/// (and reaped) on drop.
#[derive(Debug)]
pub struct Snmpd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Snmpd {
    /// Starts `snmpd` with `outlets` outlets (named, all on) and waits until it answers.
    pub fn start(outlets: &[&str]) -> io::Result<Snmpd> {
        let dir = tempfile::tempdir()?;
        let table: Vec<String> = outlets
            .iter()
            .enumerate()
            .map(|(i, n)| format!("\"{}\": {{\"name\": \"{n}\", \"on\": true}}", i + 1))
            .collect();
        fs::write(
            dir.path().join("state.json"),
            format!(
                "{{\"serial\": \"{SNMPD_SERIAL}\", \"outlets\": {{{}}}}}",
                table.join(", ")
            ),
        )?;
        let mut last_err = io::Error::other("snmpd did not start");
        let mut peer = Snmpd {
            child: None,
            dir,
            port: 0,
        };
        for _ in 0..3 {
            peer.port = free_udp_port()?;
            match peer.spawn() {
                Ok(()) => return Ok(peer),
                Err(e) => {
                    last_err = e;
                    peer.kill();
                }
            }
        }
        Err(last_err)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let d = self.dir.path();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/snmpd/apc_rpdu_pass_persist.py");
        let conf = format!(
            "agentAddress udp:127.0.0.1:{port}\nrwcommunity {SNMPD_COMMUNITY} 127.0.0.1\ncreateUser {SNMPD_USER} SHA \"{SNMPD_AUTH}\" AES \"{SNMPD_PRIV}\"\nrwuser {SNMPD_USER} priv\nsysName snmpd-pdu\npass_persist .1.3.6.1.4.1.318.1.1.12 /usr/bin/python3 {} {}\n",
            script.display(),
            d.join("state.json").display(),
            port = self.port,
        );
        fs::write(d.join("snmpd.conf"), conf)?;
        let log = fs::File::create(d.join("snmpd.log"))?;
        // -C: no system configuration files; -f: stay in the foreground (our child);
        // -Lo: log to stdout; persistent state (the localised user keys) in our directory.
        let child = Command::new(SNMPD)
            .args(["-f", "-Lo", "-C", "-c"])
            .arg(d.join("snmpd.conf"))
            .arg("-p")
            .arg(d.join("snmpd.pid"))
            .env("SNMP_PERSISTENT_DIR", d.join("persist"))
            .env("MIBS", "")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {SNMPD} ({e}); install the Debian package `snmpd`"),
                )
            })?;
        self.child = Some(child);
        self.wait_until_answering(Duration::from_secs(10))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a v2c GET of sysName.0 until an answer comes back.
    fn wait_until_answering(&mut self, limit: Duration) -> io::Result<()> {
        use drivers::pdu::message::{encode_community, Pdu, PduType, Version};
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let oid: drivers::pdu::Oid = "1.3.6.1.2.1.1.5.0".parse().map_err(io::Error::other)?;
        let msg = encode_community(
            Version::V2c,
            SNMPD_COMMUNITY.as_bytes(),
            &Pdu::request(PduType::Get, 1, &[oid]),
        );
        let until = Instant::now() + limit;
        let mut buf = [0u8; 1500];
        while Instant::now() < until {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    return Err(io::Error::other(format!(
                        "snmpd exited with {status}: {}",
                        self.log()
                    )));
                }
            }
            sock.send_to(&msg, self.addr())?;
            if sock.recv(&mut buf).is_ok() {
                return Ok(());
            }
        }
        Err(io::Error::other(format!(
            "snmpd did not answer: {}",
            self.log()
        )))
    }

    /// The agent's address.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// Whether outlet `n` is on, from the script's state file.
    pub fn outlet_on(&self, n: usize) -> io::Result<bool> {
        let s = fs::read_to_string(self.dir.path().join("state.json"))?;
        let v: serde_json::Value = serde_json::from_str(&s).map_err(io::Error::other)?;
        v["outlets"][n.to_string()]["on"]
            .as_bool()
            .ok_or_else(|| io::Error::other(format!("no outlet {n} in {s}")))
    }

    /// Makes the outlets acknowledge sets and not change (a lying PDU), or behave again.
    pub fn set_stuck(&self, stuck: bool) -> io::Result<()> {
        let p = self.dir.path().join("state.json");
        let s = fs::read_to_string(&p)?;
        let mut v: serde_json::Value = serde_json::from_str(&s).map_err(io::Error::other)?;
        v["stuck"] = serde_json::Value::Bool(stuck);
        fs::write(&p, v.to_string())
    }

    /// What the agent logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("snmpd.log")).unwrap_or_default()
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        self.kill();
    }
}
