//! The `power-path` witness: an outlet (a PDU port, a relay's sense line: any configured power
//! device and port, read through [`PowerDevice::status`]) that feeds the node must read off.
//!
//! - `On`: the node still has power on that path: `Alive`, a veto. A node fed by two supplies
//!   is off only when both paths are.
//! - `Off` on a read: `Silent`.
//! - An error, an `Unknown` state, a read that overruns its timeout, or a transition
//!   (powering on/off) still reported after `settle`: `NoEvidence`.
//!
//! It does not prove the node is off either (the wrong outlet mapped to the node reads off
//! too), so, like every witness, it only vetoes.

use super::{Evidence, Observation, Verdict, Witness};
use crate::{PowerDevice, PowerState};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long an outlet may report a transition before it counts as no evidence, by default.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
/// The deadline of each status read by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between reads while the outlet reports a transition.
const POLL: Duration = Duration::from_millis(100);

/// The `power-path` witness over one outlet.
#[derive(Clone)]
pub struct PowerPathWitness {
    /// The device the outlet belongs to (its configured name, for the evidence).
    pub device_name: String,
    /// The device.
    pub device: Arc<dyn PowerDevice>,
    /// The outlet or line (`None`: the device's only one).
    pub port: Option<String>,
    /// How long a transition may last.
    pub settle: Duration,
    /// Deadline of each read.
    pub read_timeout: Duration,
}

impl std::fmt::Debug for PowerPathWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerPathWitness")
            .field("device", &self.device_name)
            .field("port", &self.port)
            .finish()
    }
}

impl PowerPathWitness {
    fn outlet(&self) -> String {
        match &self.port {
            Some(p) => format!("{}:{p}", self.device_name),
            None => self.device_name.clone(),
        }
    }
}

fn one(verdict: Verdict, detail: String) -> Observation {
    Observation {
        verdict,
        evidence: vec![Evidence {
            at: SystemTime::now(),
            detail,
        }],
    }
}

#[async_trait]
impl Witness for PowerPathWitness {
    fn kind(&self) -> &'static str {
        "power-path"
    }

    fn describe(&self) -> String {
        format!("outlet {} feeding the node reads off", self.outlet())
    }

    async fn observe(&self, deadline: Instant) -> Observation {
        let start = Instant::now();
        let outlet = self.outlet();
        // The transition last reported (every other answer returns at once).
        let mut last: PowerState;
        loop {
            let until = deadline.min(Instant::now() + self.read_timeout);
            let read =
                tokio::time::timeout_at(until, self.device.status(self.port.as_deref())).await;
            let after = start.elapsed().as_secs_f64();
            match read {
                Err(_) => {
                    return one(
                        Verdict::NoEvidence,
                        format!(
                            "outlet {outlet}: the status read did not answer within {} ms",
                            until.saturating_duration_since(start).as_millis()
                        ),
                    )
                }
                Ok(Err(e)) => {
                    return one(
                        Verdict::NoEvidence,
                        format!("outlet {outlet}: cannot read its state: {e}"),
                    )
                }
                Ok(Ok(PowerState::Off)) => {
                    return one(Verdict::Silent, format!("outlet {outlet} reads off"))
                }
                Ok(Ok(PowerState::On)) => {
                    return one(
                        Verdict::Alive,
                        format!("outlet {outlet} still reads on {after:.1} s after the device reported off: the node still has power on this path"),
                    )
                }
                Ok(Ok(PowerState::Unknown)) => {
                    return one(
                        Verdict::NoEvidence,
                        format!("outlet {outlet} reports a state that is neither on nor off"),
                    )
                }
                Ok(Ok(s)) => last = s,
            }
            let next = Instant::now() + POLL;
            if next >= deadline || start.elapsed() >= self.settle {
                break;
            }
            tokio::time::sleep_until(next).await;
        }
        let s = last;
        one(
            Verdict::NoEvidence,
            format!(
                "outlet {outlet} still reports {s} after {:.1} s: not known to be off on this path",
                start.elapsed().as_secs_f64()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{DeviceError, Identity, PowerCommand};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// What one status read of the scripted outlet does.
    #[derive(Clone)]
    enum Read {
        State(PowerState),
        Error,
        Hang,
    }

    /// An outlet that answers status reads from a script (the last answer repeats).
    struct Outlet {
        script: Mutex<VecDeque<Read>>,
        reads: Mutex<Vec<Option<String>>>,
    }

    impl Outlet {
        fn new(script: &[Read]) -> Arc<Self> {
            Arc::new(Outlet {
                script: Mutex::new(script.iter().cloned().collect()),
                reads: Mutex::new(Vec::new()),
            })
        }
    }

    #[async_trait]
    impl PowerDevice for Outlet {
        async fn status(&self, port: Option<&str>) -> Result<PowerState, crate::DeviceError> {
            self.reads.lock().unwrap().push(port.map(str::to_string));
            let next = {
                let mut s = self.script.lock().unwrap();
                if s.len() > 1 {
                    s.pop_front().unwrap()
                } else {
                    s.front().cloned().unwrap()
                }
            };
            match next {
                Read::State(p) => Ok(p),
                Read::Error => Err(DeviceError::Unreachable {
                    address: "pdu-a".into(),
                    reason: "connection refused".into(),
                }),
                Read::Hang => std::future::pending().await,
            }
        }

        async fn power(&self, _: Option<&str>, _: PowerCommand) -> Result<(), DeviceError> {
            panic!("a witness never switches its outlet")
        }

        async fn health(&self) -> Result<Identity, DeviceError> {
            Ok(Identity {
                kind: "test".into(),
                value: "pdu-a".into(),
                description: "scripted outlet".into(),
            })
        }
    }

    fn witness(outlet: &Arc<Outlet>) -> PowerPathWitness {
        PowerPathWitness {
            device_name: "pdu-a".into(),
            device: outlet.clone(),
            port: Some("7".into()),
            settle: Duration::from_secs(2),
            read_timeout: Duration::from_millis(500),
        }
    }

    async fn observe(script: &[Read]) -> (Observation, Arc<Outlet>) {
        let o = Outlet::new(script);
        let obs = witness(&o)
            .observe(Instant::now() + Duration::from_secs(10))
            .await;
        (obs, o)
    }

    fn detail(o: &Observation) -> &str {
        &o.evidence[0].detail
    }

    #[tokio::test(start_paused = true)]
    async fn an_outlet_that_reads_on_is_alive_and_reads_its_own_port() {
        let (o, outlet) = observe(&[Read::State(PowerState::On)]).await;
        assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
        assert!(
            detail(&o).contains("outlet pdu-a:7 still reads on"),
            "{o:?}"
        );
        assert_eq!(*outlet.reads.lock().unwrap(), vec![Some("7".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outlet_that_reads_off_is_silent() {
        let (o, _) = observe(&[Read::State(PowerState::Off)]).await;
        assert_eq!(o.verdict, Verdict::Silent, "{o:?}");
        assert_eq!(detail(&o), "outlet pdu-a:7 reads off");
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_a_timeout_or_an_unknown_state_is_no_evidence() {
        let (o, _) = observe(&[Read::Error]).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
        assert!(
            detail(&o).contains("cannot read its state")
                && detail(&o).contains("connection refused"),
            "{o:?}"
        );
        let t0 = Instant::now();
        let (o, _) = observe(&[Read::Hang]).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
        assert!(detail(&o).contains("did not answer within 500 ms"), "{o:?}");
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(500),
            "bounded by the read timeout"
        );
        let (o, _) = observe(&[Read::State(PowerState::Unknown)]).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
        assert!(detail(&o).contains("neither on nor off"), "{o:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transition_within_settle_is_followed_to_its_end() {
        let mut script = vec![Read::State(PowerState::PoweringOff); 5];
        script.push(Read::State(PowerState::Off));
        let t0 = Instant::now();
        let (o, outlet) = observe(&script).await;
        assert_eq!(o.verdict, Verdict::Silent, "{o:?}");
        assert_eq!(outlet.reads.lock().unwrap().len(), 6);
        assert_eq!(t0.elapsed(), POLL * 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transition_still_reported_past_settle_is_no_evidence() {
        let t0 = Instant::now();
        let (o, _) = observe(&[Read::State(PowerState::PoweringOff)]).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
        assert!(
            detail(&o).contains("outlet pdu-a:7 still reports")
                && detail(&o).contains("not known to be off"),
            "{o:?}"
        );
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took <= Duration::from_secs(2) + POLL,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_shorter_than_settle_ends_the_watch_in_time() {
        let o = Outlet::new(&[Read::State(PowerState::PoweringOff)]);
        let t0 = Instant::now();
        let obs = witness(&o)
            .observe(Instant::now() + Duration::from_millis(350))
            .await;
        assert_eq!(obs.verdict, Verdict::NoEvidence, "{obs:?}");
        assert!(
            t0.elapsed() <= Duration::from_millis(350),
            "{:?}",
            t0.elapsed()
        );
    }
}
