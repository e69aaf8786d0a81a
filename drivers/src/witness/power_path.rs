//! The `power-path` witness: an outlet (a PDU port, a relay's sense line: any configured power
//! device and port, read through [`PowerDevice::status`]) that feeds the node must read off.
//!
//! - `On`: the node still has power on that path: `Alive`, a veto. A node fed by two supplies
//!   is off only when both paths are.
//! - `Off` on a read: `Silent`.
//! - An error, an `Unknown` state, a read that overruns its timeout, or a transition
//!   (powering on/off) still reported after `settle`: `NoEvidence`.
//! - With `max_watts` (outlets a PDU meters): an outlet that reads on is read again for its
//!   draw. At most `max_watts` is `Silent` (a host that is off, BMC and all, on a switched-on
//!   outlet draws next to nothing); above it for the whole settle, `Alive`; a draw that cannot
//!   be read (an error, a timeout, a device that does not meter), `NoEvidence`. This is what
//!   lets the witness see a node whose BMC lies behind an outlet nobody switched.
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
    /// With a metering device: the most an outlet that reads on may draw for a node that is
    /// off (standby supplies, fans spinning down). `None`: an outlet that reads on is a veto.
    pub max_watts: Option<u32>,
}

impl std::fmt::Debug for PowerPathWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerPathWitness")
            .field("device", &self.device_name)
            .field("port", &self.port)
            .field("max_watts", &self.max_watts)
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

impl PowerPathWitness {
    /// An outlet that reads on, under `max_watts`: its draw decides. Polled until it falls to
    /// `max` or the settle ends (a PDU's meter averages over a second or more, so a node that
    /// just went off may still read its last load).
    async fn watch_draw(&self, max: u32, start: Instant, deadline: Instant) -> Observation {
        let outlet = self.outlet();
        let mut last;
        loop {
            let until = deadline.min(Instant::now() + self.read_timeout);
            let read =
                tokio::time::timeout_at(until, self.device.power_draw(self.port.as_deref())).await;
            match read {
                Err(_) => {
                    return one(
                        Verdict::NoEvidence,
                        format!(
                            "outlet {outlet} reads on; its power draw read did not answer within {} ms",
                            until.saturating_duration_since(start).as_millis()
                        ),
                    )
                }
                Ok(Err(e)) => {
                    return one(
                        Verdict::NoEvidence,
                        format!("outlet {outlet} reads on; cannot read its power draw: {e}"),
                    )
                }
                Ok(Ok(None)) => {
                    return one(
                        Verdict::NoEvidence,
                        format!("outlet {outlet} reads on, and the device does not meter it: max_watts = {max} cannot be checked; remove max_watts or name a metered outlet"),
                    )
                }
                Ok(Ok(Some(w))) if w <= max => {
                    return one(
                        Verdict::Silent,
                        format!("outlet {outlet} reads on but draws {w} W, at most max_watts = {max}: no load on this path"),
                    )
                }
                Ok(Ok(Some(w))) => last = w,
            }
            let next = Instant::now() + POLL;
            if next >= deadline || start.elapsed() >= self.settle {
                break;
            }
            tokio::time::sleep_until(next).await;
        }
        one(
            Verdict::Alive,
            format!(
                "outlet {outlet} still draws {last} W (above max_watts = {max}) {:.1} s after the device reported off: the node still takes power on this path",
                start.elapsed().as_secs_f64()
            ),
        )
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
        match self.max_watts {
            Some(w) => format!(
                "outlet {} feeding the node reads off or draws at most {w} W",
                self.outlet()
            ),
            None => format!("outlet {} feeding the node reads off", self.outlet()),
        }
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
                Ok(Ok(PowerState::On)) if self.max_watts.is_some() => {
                    let max = self.max_watts.unwrap_or_default();
                    return self.watch_draw(max, start, deadline).await;
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

    /// What one power-draw read of the scripted outlet does.
    #[derive(Clone)]
    enum Draw {
        Watts(u32),
        NotMetered,
        Error,
        Hang,
    }

    /// An outlet that answers status and draw reads from scripts (the last answer repeats).
    struct Outlet {
        script: Mutex<VecDeque<Read>>,
        draws: Mutex<VecDeque<Draw>>,
        reads: Mutex<Vec<Option<String>>>,
    }

    impl Outlet {
        fn new(script: &[Read]) -> Arc<Self> {
            Self::metered(script, &[Draw::NotMetered])
        }

        fn metered(script: &[Read], draws: &[Draw]) -> Arc<Self> {
            Arc::new(Outlet {
                script: Mutex::new(script.iter().cloned().collect()),
                draws: Mutex::new(draws.iter().cloned().collect()),
                reads: Mutex::new(Vec::new()),
            })
        }
    }

    fn next_of<T: Clone>(q: &Mutex<VecDeque<T>>) -> T {
        let mut s = q.lock().unwrap();
        if s.len() > 1 {
            s.pop_front().unwrap()
        } else {
            s.front().cloned().unwrap()
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

        async fn power_draw(&self, port: Option<&str>) -> Result<Option<u32>, DeviceError> {
            assert_eq!(port, Some("7"), "the draw of the witness's own outlet");
            match next_of(&self.draws) {
                Draw::Watts(w) => Ok(Some(w)),
                Draw::NotMetered => Ok(None),
                Draw::Error => Err(DeviceError::Protocol {
                    address: "pdu-a".into(),
                    detail: "outlet 7 has no active-power reading".into(),
                }),
                Draw::Hang => std::future::pending().await,
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
            max_watts: None,
        }
    }

    /// The witness over a metered outlet that reads on, with `max_watts = 10`.
    async fn observe_draw(draws: &[Draw]) -> Observation {
        let o = Outlet::metered(&[Read::State(PowerState::On)], draws);
        let w = PowerPathWitness {
            max_watts: Some(10),
            ..witness(&o)
        };
        w.observe(Instant::now() + Duration::from_secs(10)).await
    }

    #[tokio::test(start_paused = true)]
    async fn with_max_watts_a_draw_at_or_below_it_is_silent_even_when_the_outlet_reads_on() {
        let o = observe_draw(&[Draw::Watts(10)]).await;
        assert_eq!(o.verdict, Verdict::Silent, "{o:?}");
        assert_eq!(
            detail(&o),
            "outlet pdu-a:7 reads on but draws 10 W, at most max_watts = 10: no load on this path"
        );
        // A meter that still shows the last load for a moment, then falls.
        let t0 = Instant::now();
        let o = observe_draw(&[Draw::Watts(140), Draw::Watts(140), Draw::Watts(2)]).await;
        assert_eq!(o.verdict, Verdict::Silent, "{o:?}");
        assert_eq!(t0.elapsed(), POLL * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn with_max_watts_a_draw_above_it_for_the_whole_settle_is_alive() {
        let t0 = Instant::now();
        let o = observe_draw(&[Draw::Watts(140)]).await;
        assert_eq!(o.verdict, Verdict::Alive, "{o:?}");
        assert!(
            detail(&o).contains("outlet pdu-a:7 still draws 140 W (above max_watts = 10)"),
            "{o:?}"
        );
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took <= Duration::from_secs(2) + POLL,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_max_watts_an_unreadable_draw_is_no_evidence() {
        let o = observe_draw(&[Draw::Error]).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
        assert!(
            detail(&o).contains("cannot read its power draw")
                && detail(&o).contains("active-power"),
            "{o:?}"
        );
        let o = observe_draw(&[Draw::NotMetered]).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
        assert!(detail(&o).contains("does not meter it"), "{o:?}");
        let t0 = Instant::now();
        let o = observe_draw(&[Draw::Hang]).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
        assert!(detail(&o).contains("draw read did not answer"), "{o:?}");
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
        // A draw read error is never taken as zero, even after readings above the limit.
        let o = observe_draw(&[Draw::Watts(140), Draw::Error]).await;
        assert_eq!(o.verdict, Verdict::NoEvidence, "{o:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn with_max_watts_an_outlet_that_reads_off_is_silent_without_a_draw_read() {
        let o = Outlet::metered(&[Read::State(PowerState::Off)], &[Draw::Error]);
        let w = PowerPathWitness {
            max_watts: Some(10),
            ..witness(&o)
        };
        let obs = w.observe(Instant::now() + Duration::from_secs(10)).await;
        assert_eq!(obs.verdict, Verdict::Silent, "{obs:?}");
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
