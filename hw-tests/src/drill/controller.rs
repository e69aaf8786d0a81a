//! The reference controller of the drill: what a cluster controller must do to fail a
//! stateful workload over safely, in as little code as shows it.
//!
//! 1. Watch heartbeats (UDP datagrams `hb NODE SEQ` from each node's agent).
//! 2. When the node running the workload is silent for `lost_after`, it is *lost*: dead or
//!    only cut off — nobody can tell which, so it may still be writing.
//! 3. Ask the fencer to power it off, and wait for the outcome. Only `succeeded` (the power
//!    read back as off, a poison pill waited out, or an operator's confirmation) proves that
//!    the old copy has stopped.
//! 4. Then, and only then, start the workload on the standby. On `failed`, or when the fencer
//!    cannot be reached (outcome unknown), keep the workload down: retry, escalate, or wait for
//!    an operator — never start a second copy.
//!
//! [`Policy::SkipFencing`] is the unsafe controller the drill uses to show the corruption
//! that step 3 prevents.

use super::mono_ns;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Parses a heartbeat datagram `hb NODE SEQ` and returns the node's name (pure).
pub fn parse_heartbeat(datagram: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut parts = text.trim_end().split(' ');
    if parts.next()? != "hb" {
        return None;
    }
    let node = parts.next().filter(|n| !n.is_empty() && n.len() <= 64)?;
    parts.next()?.parse::<u64>().ok()?;
    parts.next().is_none().then_some(node)
}

/// The heartbeat datagram of `node` (what `palisade-workload heartbeat` sends).
pub fn heartbeat(node: &str, seq: u64) -> String {
    format!("hb {node} {seq}")
}

/// When each node was last heard from.
#[derive(Debug)]
pub struct Heartbeats {
    socket: UdpSocket,
    last: HashMap<String, u64>,
}

impl Heartbeats {
    /// Listens on `socket` (bound on the lab network, e.g. `LabNet::bind_udp`).
    pub fn new(socket: UdpSocket) -> Self {
        Heartbeats {
            socket,
            last: HashMap::new(),
        }
    }

    /// Receives heartbeats for `span`.
    pub fn pump(&mut self, span: Duration) {
        let until = Instant::now() + span;
        let mut buf = [0u8; 128];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if self
                .socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return;
            }
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                if let Some(node) = buf.get(..n).and_then(parse_heartbeat) {
                    self.last.insert(node.to_string(), mono_ns());
                }
            }
        }
    }

    /// When `node` was last heard from ([`mono_ns`]), if ever.
    pub fn last_seen(&self, node: &str) -> Option<u64> {
        self.last.get(node).copied()
    }

    /// Whether `node` was heard from within `lost_after`.
    pub fn alive(&self, node: &str, lost_after: Duration) -> bool {
        self.last_seen(node)
            .is_some_and(|t| mono_ns().saturating_sub(t) <= lost_after.as_nanos() as u64)
    }
}

/// How a fencing request ended, as the controller must read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceOutcome {
    /// `succeeded`: the node is off, confirmed (how: `power_read_back`, `poison_pill`,
    /// `manual`). Failover is allowed.
    Fenced {
        /// The confirmation method.
        confirmation: String,
    },
    /// `failed`: the node must be treated as still running.
    Failed {
        /// The API's stable code (`all_levels_failed`, `timeout`, …).
        code: String,
        /// The reason, per level.
        message: String,
    },
    /// No answer (fencer unreachable, request refused, wait expired): unknown, which is
    /// treated exactly as failed.
    Unknown {
        /// What went wrong.
        reason: String,
    },
}

impl FenceOutcome {
    /// A short line for the timeline.
    pub fn describe(&self) -> String {
        match self {
            FenceOutcome::Fenced { confirmation } => format!("succeeded ({confirmation})"),
            FenceOutcome::Failed { code, message } => format!("failed: {code}: {message}"),
            FenceOutcome::Unknown { reason } => format!("unknown: {reason}"),
        }
    }
}

/// What the controller needs from a fencer (the fencer API: `POST /v1/fence`, then
/// `GET /v1/operations/{id}?wait=`).
pub trait Fencer {
    /// Requests `off` for `target` with an idempotency key; returns the operation id, or why
    /// the request did not get through.
    fn request_off(&mut self, target: &str, reason: &str, request_id: &str) -> Result<u64, String>;
    /// Waits up to `within` for the operation to finish.
    fn wait(&mut self, operation: u64, within: Duration) -> FenceOutcome;
}

/// Whether the controller fences before failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The safe controller: fence, wait for `succeeded`, then fail over; up to `attempts`
    /// fencing requests (each with a new request id), then keep the workload down.
    FenceFirst {
        /// Requests before giving up.
        attempts: u32,
    },
    /// The unsafe controller: fail over as soon as the node is lost.
    SkipFencing,
}

/// What the controller watches and does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The node running the workload.
    pub primary: String,
    /// Where the workload may move.
    pub standby: String,
    /// Silence after which a node is lost.
    pub lost_after: Duration,
    /// How long to wait for one fencing outcome.
    pub fence_wait: Duration,
    /// How long to watch for the primary's loss before ending the run.
    pub watch_for: Duration,
    /// Fence first, or not.
    pub policy: Policy,
}

/// How the controller's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The workload was started on the standby.
    FailedOver,
    /// The workload was left down (fencing not confirmed, or the standby not available).
    KeptDown {
        /// Why.
        reason: String,
    },
    /// The primary never went silent while watched.
    PrimaryNeverLost,
}

/// When each step happened ([`mono_ns`] values).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The drill cut the primary off (set by the drill, not the controller).
    pub cut_off: Option<u64>,
    /// The controller declared the primary lost.
    pub lost: Option<u64>,
    /// The first fencing request was sent.
    pub fence_requested: Option<u64>,
    /// The last fencing outcome arrived.
    pub fence_answered: Option<u64>,
    /// That outcome.
    pub fence_outcome: Option<FenceOutcome>,
    /// Fencing requests sent.
    pub fence_requests: u32,
    /// The controller started the workload on the standby (stamped just before the start).
    pub standby_started: Option<u64>,
    /// The standby's first record reached the volume (set by the drill, from the volume).
    pub standby_first_record: Option<u64>,
    /// The primary's last record on the volume (set by the drill).
    pub primary_last_record: Option<u64>,
}

impl Timeline {
    /// Milliseconds from the cut-off to `t`.
    pub fn since_cut_ms(&self, t: Option<u64>) -> Option<f64> {
        Some(t?.checked_sub(self.cut_off?)? as f64 / 1e6)
    }

    /// A short report, one step a line in the order they happened, in milliseconds since
    /// the cut-off.
    pub fn report(&self) -> String {
        let requests = if self.fence_requests > 1 {
            format!(" ({} requests)", self.fence_requests)
        } else {
            String::new()
        };
        let outcome = self
            .fence_outcome
            .as_ref()
            .map(|o| format!(": {}", o.describe()))
            .unwrap_or_default();
        let mut steps = [
            (
                "A cut off from the lab network",
                self.cut_off,
                String::new(),
            ),
            ("controller: A lost", self.lost, String::new()),
            (
                "controller: fence requested",
                self.fence_requested,
                requests,
            ),
            ("fenced: outcome", self.fence_answered, outcome),
            (
                "A's last record on the volume",
                self.primary_last_record,
                String::new(),
            ),
            (
                "controller: workload started on B",
                self.standby_started,
                String::new(),
            ),
            (
                "B's first record on the volume",
                self.standby_first_record,
                String::new(),
            ),
        ];
        // Steps that never happened go last.
        steps.sort_by_key(|(_, t, _)| t.unwrap_or(u64::MAX));
        let mut out = String::new();
        for (what, t, note) in steps {
            let at = match self.since_cut_ms(t) {
                Some(ms) => format!("{ms:>9.1} ms"),
                None if t.is_some() => "   (before)".into(),
                None => "      never".into(),
            };
            let _ = writeln!(out, "  {at}  {what}{note}");
        }
        out
    }
}

/// Runs the controller until it has failed over, decided to keep the workload down, or
/// `plan.watch_for` passed without the primary being lost. `start_standby` starts the
/// workload on the standby.
pub fn run(
    hb: &mut Heartbeats,
    fencer: &mut dyn Fencer,
    plan: &Plan,
    start_standby: &mut dyn FnMut() -> Result<(), String>,
    timeline: &mut Timeline,
) -> Decision {
    let tick = Duration::from_millis(10);
    let until = Instant::now() + plan.watch_for;
    loop {
        hb.pump(tick);
        // A node never heard from has not started yet; it is not "lost".
        if hb.last_seen(&plan.primary).is_some() && !hb.alive(&plan.primary, plan.lost_after) {
            break;
        }
        if Instant::now() > until {
            return Decision::PrimaryNeverLost;
        }
    }
    let lost = mono_ns();
    timeline.lost = Some(lost);
    if let Policy::FenceFirst { attempts } = plan.policy {
        let mut fenced = false;
        for attempt in 1..=attempts.max(1) {
            // A new key per attempt: the same key would return the failed operation again.
            let request_id = format!("drill-{}-{lost}-{attempt}", plan.primary);
            let reason = format!("heartbeat lost for {} ms", plan.lost_after.as_millis());
            if timeline.fence_requested.is_none() {
                timeline.fence_requested = Some(mono_ns());
            }
            timeline.fence_requests = attempt;
            let outcome = match fencer.request_off(&plan.primary, &reason, &request_id) {
                Ok(id) => fencer.wait(id, plan.fence_wait),
                Err(reason) => FenceOutcome::Unknown { reason },
            };
            timeline.fence_answered = Some(mono_ns());
            fenced = matches!(outcome, FenceOutcome::Fenced { .. });
            timeline.fence_outcome = Some(outcome);
            if fenced {
                break;
            }
        }
        if !fenced {
            let why = timeline
                .fence_outcome
                .as_ref()
                .map(FenceOutcome::describe)
                .unwrap_or_default();
            return Decision::KeptDown {
                reason: format!(
                    "{} is not confirmed off ({why}); the workload stays down until fencing succeeds or an operator confirms by hand",
                    plan.primary
                ),
            };
        }
    }
    if !hb.alive(&plan.standby, plan.lost_after) {
        return Decision::KeptDown {
            reason: format!("standby {} is not alive", plan.standby),
        };
    }
    // Stamped before the start: the new copy may write before this thread runs again.
    let starting = mono_ns();
    match start_standby() {
        Ok(()) => {
            timeline.standby_started = Some(starting);
            Decision::FailedOver
        }
        Err(e) => Decision::KeptDown {
            reason: format!("starting the workload on {} failed: {e}", plan.standby),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_parse_strictly() {
        assert_eq!(
            parse_heartbeat(heartbeat("node1", 3).as_bytes()),
            Some("node1")
        );
        assert_eq!(parse_heartbeat(b"hb node1 3\n"), Some("node1"));
        for bad in [
            &b"hb node1"[..],
            b"hb  1",
            b"xx node1 1",
            b"hb node1 x",
            b"hb a 1 2",
            b"\xff",
        ] {
            assert_eq!(parse_heartbeat(bad), None, "{bad:?}");
        }
    }

    /// A fencer whose answers are scripted.
    struct Scripted(Vec<FenceOutcome>, u32);
    impl Fencer for Scripted {
        fn request_off(&mut self, _: &str, _: &str, _: &str) -> Result<u64, String> {
            self.1 += 1;
            Ok(u64::from(self.1))
        }
        fn wait(&mut self, _: u64, _: Duration) -> FenceOutcome {
            self.0.remove(0)
        }
    }

    fn lab() -> (Heartbeats, UdpSocket, std::net::SocketAddr) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        (Heartbeats::new(s), tx, addr)
    }

    fn plan(policy: Policy) -> Plan {
        Plan {
            primary: "a".into(),
            standby: "b".into(),
            lost_after: Duration::from_millis(100),
            fence_wait: Duration::from_secs(1),
            watch_for: Duration::from_secs(10),
            policy,
        }
    }

    /// `b` keeps beating; `a` beats once and goes silent.
    fn run_with(policy: Policy, answers: Vec<FenceOutcome>) -> (Decision, Timeline, u32) {
        let (mut hb, tx, addr) = lab();
        tx.send_to(heartbeat("a", 0).as_bytes(), addr).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let beater = std::thread::spawn(move || {
            let mut i = 0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                tx.send_to(heartbeat("b", i).as_bytes(), addr).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let mut f = Scripted(answers, 0);
        let mut started = 0;
        let mut tl = Timeline::default();
        let d = run(
            &mut hb,
            &mut f,
            &plan(policy),
            &mut || {
                started += 1;
                Ok(())
            },
            &mut tl,
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        beater.join().unwrap();
        (d, tl, started)
    }

    #[test]
    fn fails_over_only_after_a_confirmed_fence() {
        let fenced = FenceOutcome::Fenced {
            confirmation: "power_read_back".into(),
        };
        let failed = FenceOutcome::Failed {
            code: "all_levels_failed".into(),
            message: "stuck".into(),
        };
        let unknown = FenceOutcome::Unknown {
            reason: "unreachable".into(),
        };
        let (d, tl, started) = run_with(
            Policy::FenceFirst { attempts: 2 },
            vec![failed.clone(), fenced],
        );
        assert_eq!(
            (d, started, tl.fence_requests),
            (Decision::FailedOver, 1, 2)
        );

        let (d, _, started) = run_with(Policy::FenceFirst { attempts: 2 }, vec![failed, unknown]);
        assert!(
            matches!(d, Decision::KeptDown { ref reason } if reason.contains("unreachable")),
            "{d:?}"
        );
        assert_eq!(started, 0, "never a second copy without a confirmed fence");

        let (d, tl, started) = run_with(Policy::SkipFencing, vec![]);
        assert_eq!(
            (d, started, tl.fence_requests),
            (Decision::FailedOver, 1, 0)
        );
    }
}
