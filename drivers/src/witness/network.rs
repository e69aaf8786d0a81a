//! The `network` witness: the node's configured addresses must stop answering TCP connects for
//! a settle time after the device reported off.
//!
//! What a probe can say:
//! - a connection accepted, or refused with a TCP RST: a kernel on that address answered, so
//!   the node (or whatever holds its address) is running: `Alive`, a veto;
//! - no answer within the probe's timeout, or "host unreachable" (no ARP reply on the local
//!   segment, or a router's ICMP host-unreachable): silence from that address;
//! - anything else ("network unreachable": this machine has no route; no file descriptors;
//!   a local address that cannot be bound): this side could not look, which is no evidence.
//!
//! `Silent` needs every address silent in every round from the start until a round that
//! started after `settle`. ICMP echo is not used: unprivileged ICMP sockets (`SOCK_DGRAM`,
//! `IPPROTO_ICMP`) need the daemon's group inside `net.ipv4.ping_group_range`, which Debian
//! leaves at `1 0` (nobody), and a raw socket needs CAP_NET_RAW; a TCP connect needs neither,
//! and a running node's kernel answers it on any port (accepted or refused). ARP is not used
//! either: "host unreachable" from a connect already carries the kernel's ARP failure.
//!
//! Addresses are IP:port, never host names: a DNS failure would turn every probe into no
//! evidence at the moment it matters.

use super::{Evidence, Observation, Verdict, Witness};
use async_trait::async_trait;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long every address must stay silent by default.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(3);
/// How long one TCP connect may take by default before it counts as unanswered.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Time from the start of one round of probes to the start of the next, by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

/// What the witness watches and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The node's addresses and ports (one service each that the node runs, e.g. corosync's
    /// 5405 or sshd's 22; any port works: a closed one is refused, which is an answer too).
    pub addresses: Vec<SocketAddr>,
    /// How long every address must stay silent for `Silent`.
    pub settle: Duration,
    /// Deadline of each TCP connect.
    pub probe_timeout: Duration,
    /// Start-to-start time between rounds of probes.
    pub interval: Duration,
}

impl NetworkConfig {
    /// Watches `addresses` with the default settle, probe timeout and interval.
    pub fn new(addresses: Vec<SocketAddr>) -> Self {
        NetworkConfig {
            addresses,
            settle: DEFAULT_SETTLE,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// Why a network witness cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkWitnessError {
    /// No address to watch.
    #[error(
        "network witness: no addresses; give the node's IP:port pairs, e.g. [\"10.0.0.12:5405\"]"
    )]
    NoAddresses,
    /// A duration is zero.
    #[error("network witness: {0} is zero; give it a positive duration")]
    ZeroDuration(&'static str),
}

/// The `network` witness over one node's addresses.
#[derive(Debug, Clone)]
pub struct NetworkWitness {
    cfg: NetworkConfig,
}

impl NetworkWitness {
    /// Checks the configuration.
    pub fn new(cfg: NetworkConfig) -> Result<Self, NetworkWitnessError> {
        if cfg.addresses.is_empty() {
            return Err(NetworkWitnessError::NoAddresses);
        }
        for (what, d) in [
            ("settle", cfg.settle),
            ("probe timeout", cfg.probe_timeout),
            ("interval", cfg.interval),
        ] {
            if d.is_zero() {
                return Err(NetworkWitnessError::ZeroDuration(what));
            }
        }
        Ok(NetworkWitness { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }
}

/// What one TCP connect found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The connection was accepted.
    Accepted,
    /// A TCP RST came back: a kernel answered.
    Refused,
    /// No answer before the probe's timeout.
    TimedOut,
    /// The kernel reported the host unreachable (no ARP reply, or an ICMP host unreachable).
    HostUnreachable,
    /// This side could not probe (the reason).
    CannotProbe(String),
}

/// One TCP connect to `addr`, bounded by `timeout`.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Probe::TimedOut,
        Ok(Ok(_stream)) => Probe::Accepted,
        Ok(Err(e)) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Probe::Refused,
            std::io::ErrorKind::HostUnreachable => Probe::HostUnreachable,
            // A timeout the kernel reports itself (SYN retries ran out) is silence too.
            std::io::ErrorKind::TimedOut => Probe::TimedOut,
            _ => Probe::CannotProbe(e.to_string()),
        },
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Per address, what its probes found during the observation (for the evidence).
#[derive(Default, Clone, Copy)]
struct Tally {
    timed_out: u32,
    unreachable: u32,
}

#[async_trait]
impl Witness for NetworkWitness {
    fn kind(&self) -> &'static str {
        "network"
    }

    fn describe(&self) -> String {
        let list: Vec<String> = self.cfg.addresses.iter().map(|a| a.to_string()).collect();
        format!(
            "TCP connects to {} silent for {}",
            list.join(", "),
            secs(self.cfg.settle)
        )
    }

    async fn observe(&self, deadline: Instant) -> Observation {
        let start = Instant::now();
        let settled_at = start + self.cfg.settle;
        let mut tallies = vec![Tally::default(); self.cfg.addresses.len()];
        let mut rounds = 0u32;
        loop {
            let round_start = Instant::now();
            let left = deadline.saturating_duration_since(round_start);
            if left.is_zero() {
                return Observation {
                    verdict: Verdict::NoEvidence,
                    evidence: vec![Evidence {
                        at: SystemTime::now(),
                        detail: format!(
                            "the deadline came {} into the settle time of {} ({rounds} rounds of probes, all silent): silence was not established; give the attempt more time (attempt_timeout_s) or the witness a shorter settle",
                            secs(start.elapsed()),
                            secs(self.cfg.settle)
                        ),
                    }],
                };
            }
            let timeout = self.cfg.probe_timeout.min(left);
            let results = futures_join(&self.cfg.addresses, timeout).await;
            rounds += 1;
            for (i, (addr, result)) in self.cfg.addresses.iter().zip(results).enumerate() {
                let after = secs(start.elapsed());
                let alive = |what: &str| Observation {
                    verdict: Verdict::Alive,
                    evidence: vec![Evidence {
                        at: SystemTime::now(),
                        detail: format!(
                            "{addr} still answers {after} after the device reported off ({what})"
                        ),
                    }],
                };
                match result {
                    Probe::Accepted => return alive("a TCP connection was accepted"),
                    Probe::Refused => {
                        return alive("the connection was refused with a TCP RST: a kernel answered")
                    }
                    Probe::TimedOut => tallies[i].timed_out += 1,
                    Probe::HostUnreachable => tallies[i].unreachable += 1,
                    Probe::CannotProbe(why) => {
                        return Observation {
                            verdict: Verdict::NoEvidence,
                            evidence: vec![Evidence {
                                at: SystemTime::now(),
                                detail: format!(
                                    "cannot probe {addr} from here ({why}) {after} into the observation; check this machine's route to the node"
                                ),
                            }],
                        }
                    }
                }
            }
            if round_start >= settled_at {
                let now = SystemTime::now();
                let evidence = self
                    .cfg
                    .addresses
                    .iter()
                    .zip(&tallies)
                    .map(|(addr, t)| Evidence {
                        at: now,
                        detail: format!(
                            "{addr}: no answer to {rounds} TCP connects over {} ({} timed out after {} ms, {} host unreachable)",
                            secs(start.elapsed()),
                            t.timed_out,
                            timeout.as_millis(),
                            t.unreachable
                        ),
                    })
                    .collect();
                return Observation {
                    verdict: Verdict::Silent,
                    evidence,
                };
            }
            // The next round starts one interval after this one did, and at the latest when the
            // settle time is over, so the silence is shown past it.
            let next = (round_start + self.cfg.interval).min(settled_at.max(Instant::now()));
            tokio::time::sleep_until(next.min(deadline)).await;
        }
    }
}

/// Probes every address at once.
async fn futures_join(addrs: &[SocketAddr], timeout: Duration) -> Vec<Probe> {
    let mut set = tokio::task::JoinSet::new();
    for (i, a) in addrs.iter().enumerate() {
        let a = *a;
        set.spawn(async move { (i, probe(a, timeout).await) });
    }
    let mut out = vec![Probe::CannotProbe("the probe task did not finish".into()); addrs.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, p)) = r {
            out[i] = p;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn fast(addrs: Vec<SocketAddr>) -> NetworkWitness {
        NetworkWitness::new(NetworkConfig {
            addresses: addrs,
            settle: Duration::from_millis(300),
            probe_timeout: Duration::from_millis(100),
            interval: Duration::from_millis(100),
        })
        .unwrap()
    }

    /// A port on loopback that nothing listens on (bound, then closed): connects are refused.
    fn closed_port() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_listener_is_alive_and_named_in_the_evidence() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let w = fast(vec![addr]);
        let o = w.observe(Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
        assert!(o.evidence[0].detail.contains(&addr.to_string()), "{o:?}");
        assert!(o.evidence[0].detail.contains("accepted"), "{o:?}");
        drop(l);
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_kernel_answering_so_alive() {
        let addr = closed_port();
        let o = fast(vec![addr])
            .observe(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
        assert!(o.evidence[0].detail.contains("RST"), "{o:?}");
    }

    /// A loopback listener that never answers: its accept queue (backlog 0, so one
    /// connection) is filled and never accepted, and Linux drops further SYNs while the queue is
    /// full (`tcp_abort_on_overflow` 0, the default): a connect gets no reply at all, as from
    /// a node that is off. The returned streams keep the queue full.
    async fn silent_port() -> (
        tokio::net::TcpListener,
        Vec<tokio::net::TcpStream>,
        SocketAddr,
    ) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let l = sock.listen(0).unwrap();
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => held.push(s),
                Err(_) => return (l, held, addr),
                Ok(Err(e)) => panic!("connect to {addr}: {e}"),
            }
        }
        panic!("the accept queue of {addr} never filled");
    }

    #[tokio::test]
    async fn an_address_that_never_answers_is_silent_after_settle() {
        let (_l, _held, addr) = silent_port().await;
        let w = fast(vec![addr]);
        let t = Instant::now();
        let o = w.observe(Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(o.verdict, Verdict::Silent, "{o:?}");
        assert!(t.elapsed() >= Duration::from_millis(300), "{o:?}");
        assert!(o.evidence[0].detail.contains("no answer"), "{o:?}");
        assert!(o.evidence[0].detail.contains(&addr.to_string()), "{o:?}");
    }

    #[tokio::test]
    async fn a_deadline_inside_the_settle_time_is_no_evidence_never_silent() {
        let (_l, _held, addr) = silent_port().await;
        let w = NetworkWitness::new(NetworkConfig {
            settle: Duration::from_secs(30),
            ..NetworkConfig::new(vec![addr])
        })
        .unwrap();
        let o = w.observe(Instant::now() + Duration::from_millis(400)).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    }

    #[tokio::test]
    async fn one_alive_address_among_silent_ones_is_a_veto() {
        let (_l, _held, silent) = silent_port().await;
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let o = fast(vec![silent, l.local_addr().unwrap()])
            .observe(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
    }

    #[test]
    fn bad_configs_are_refused() {
        assert_eq!(
            NetworkWitness::new(NetworkConfig::new(vec![])).unwrap_err(),
            NetworkWitnessError::NoAddresses
        );
        let mut c = NetworkConfig::new(vec!["127.0.0.1:1".parse().unwrap()]);
        c.settle = Duration::ZERO;
        assert_eq!(
            NetworkWitness::new(c).unwrap_err(),
            NetworkWitnessError::ZeroDuration("settle")
        );
    }
}
