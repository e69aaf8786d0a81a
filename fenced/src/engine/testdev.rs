//! An in-process power device with scriptable faults, for the engine's own tests.

use async_trait::async_trait;
use drivers::{
    DeviceError, FenceProof, Identity, PillKind, PillReport, PowerCommand, PowerDevice, PowerState,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the device does on one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Behave.
    None,
    /// Answer with an error.
    Error,
    /// Answer with garbage (a protocol error).
    Garbage,
    /// Never answer.
    Hang,
    /// Answer after a delay.
    Slow(Duration),
    /// Answer within 1 ms, while fenced's only runtime thread is busy elsewhere for this long
    /// (see [`starve_runtime`]): the answer waits unread, as under an overloaded daemon.
    Starve(Duration),
}

/// Blocks the runtime's thread for `d` of paused time, as a burst of other work would: the
/// clock moves on while no timer fires and no other task runs.
pub async fn starve_runtime(d: Duration) {
    let mut advance = std::pin::pin!(tokio::time::advance(d));
    // One poll of `advance` moves the clock at once; its trailing yield is not awaited, so
    // this task never lets another run meanwhile.
    std::future::poll_fn(|cx| {
        let _ = std::future::Future::poll(advance.as_mut(), cx);
        std::task::Poll::Ready(())
    })
    .await
}

#[derive(Debug)]
pub struct State {
    /// The real power state of the node behind the device.
    pub power: PowerState,
    /// Commands are acknowledged and ignored (a lying BMC).
    pub stuck: bool,
    /// Status always answers `off`, whatever the power is (a BMC reporting a cached state).
    pub lies: bool,
    /// `on` is acknowledged and ignored.
    pub on_fails: bool,
    /// Time a power change takes.
    pub switch_delay: Duration,
    /// When the pending switch completes, and to what.
    pending: Option<(tokio::time::Instant, PowerState)>,
    /// Per-call faults, consumed in order; empty means behave.
    pub faults: VecDeque<Fault>,
    /// Every command received, in order.
    pub commands: Vec<PowerCommand>,
    /// Status reads answered.
    pub status_reads: u32,
    /// Health checks (identity reads) begun.
    pub health_checks: u32,
    /// Status reads that answered `off`.
    pub off_reads: u32,
    /// What the device says it is.
    pub identity: String,
    /// Poison-pill mode: (disks the pill lands on, disks, msgwait).
    pub pill: Option<(u32, u32, Duration)>,
    /// Pills written, in order.
    pub pills: Vec<PillKind>,
    /// What the device says its read-back proves ([`PowerDevice::read_back_basis`]).
    pub basis: Option<String>,
}

#[derive(Clone)]
pub struct TestDevice(pub Arc<Mutex<State>>);

impl TestDevice {
    pub fn new(power: PowerState) -> Self {
        TestDevice(Arc::new(Mutex::new(State {
            power,
            stuck: false,
            lies: false,
            on_fails: false,
            switch_delay: Duration::ZERO,
            pending: None,
            faults: VecDeque::new(),
            commands: Vec::new(),
            status_reads: 0,
            health_checks: 0,
            off_reads: 0,
            identity: "guid-a".into(),
            pill: None,
            pills: Vec::new(),
            basis: None,
        })))
    }

    pub fn with(self, f: impl FnOnce(&mut State)) -> Self {
        f(&mut self.0.lock().unwrap());
        self
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// The real power state now (after any pending switch).
    pub fn true_power(&self) -> PowerState {
        let mut s = self.state();
        settle(&mut s);
        s.power
    }

    async fn fault(&self) -> Result<(), DeviceError> {
        let f = self.state().faults.pop_front().unwrap_or(Fault::None);
        match f {
            Fault::None => Ok(()),
            Fault::Error => Err(DeviceError::Unreachable {
                address: "test".into(),
                reason: "injected error".into(),
            }),
            Fault::Garbage => Err(DeviceError::Protocol {
                address: "test".into(),
                detail: "injected garbage".into(),
            }),
            Fault::Hang => std::future::pending().await,
            Fault::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Fault::Starve(d) => {
                tokio::spawn(starve_runtime(d));
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        }
    }
}

fn settle(s: &mut State) {
    if let Some((at, to)) = s.pending {
        if tokio::time::Instant::now() >= at {
            s.power = to;
            s.pending = None;
        }
    }
}

#[async_trait]
impl PowerDevice for TestDevice {
    async fn status(&self, _port: Option<&str>) -> Result<PowerState, DeviceError> {
        self.fault().await?;
        let mut s = self.state();
        settle(&mut s);
        s.status_reads += 1;
        let shown = match s.pending {
            _ if s.lies => PowerState::Off,
            Some((_, PowerState::Off)) => PowerState::PoweringOff,
            Some((_, _)) => PowerState::PoweringOn,
            None => s.power,
        };
        if shown == PowerState::Off {
            s.off_reads += 1;
        }
        Ok(shown)
    }

    async fn power(&self, _port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        self.fault().await?;
        let mut s = self.state();
        settle(&mut s);
        s.commands.push(command);
        let ignore = s.stuck || s.lies || (command == PowerCommand::On && s.on_fails);
        if !ignore {
            let to = command.expected_state();
            if s.switch_delay.is_zero() {
                s.power = to;
            } else {
                s.pending = Some((tokio::time::Instant::now() + s.switch_delay, to));
            }
        }
        Ok(())
    }

    fn read_back_basis(&self, _port: Option<&str>) -> Option<String> {
        self.state().basis.clone()
    }

    fn proof(&self) -> FenceProof {
        if self.state().pill.is_some() {
            FenceProof::PoisonPill
        } else {
            FenceProof::PowerReadBack
        }
    }

    async fn write_pill(
        &self,
        _port: Option<&str>,
        kind: PillKind,
    ) -> Result<PillReport, DeviceError> {
        self.fault().await?;
        let mut s = self.state();
        let Some((written, disks, msgwait)) = s.pill else {
            return Err(DeviceError::Unsupported {
                operation: "poison pills".into(),
            });
        };
        s.pills.push(kind);
        Ok(PillReport {
            written,
            disks,
            msgwait,
        })
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        self.state().health_checks += 1;
        self.fault().await?;
        Ok(Identity {
            kind: "system-guid".into(),
            value: self.state().identity.clone(),
            description: "test device".into(),
        })
    }
}

/// What a [`TestWitness`] does when asked.
#[derive(Clone)]
pub enum Watch {
    /// Watches the node behind these devices: it runs while every one of them really has
    /// power (a BMC's host power and the PDU outlet feeding it); alive at once if it runs,
    /// silent after `settle` otherwise.
    Node(Vec<TestDevice>, Duration),
    /// Cannot observe (the reason), after a delay.
    Blind(String, Duration),
    /// Never returns (a witness that breaks its deadline).
    Hang,
}

/// An in-process witness for the engine's tests.
pub struct TestWitness {
    /// Its behaviour.
    pub watch: Watch,
    /// Observations started.
    pub calls: std::sync::atomic::AtomicU32,
}

impl TestWitness {
    pub fn new(watch: Watch) -> Arc<Self> {
        Arc::new(TestWitness {
            watch,
            calls: Default::default(),
        })
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn seen(detail: String) -> drivers::witness::Evidence {
    drivers::witness::Evidence {
        at: std::time::SystemTime::now(),
        detail,
    }
}

#[async_trait]
impl drivers::witness::Witness for TestWitness {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn describe(&self) -> String {
        "the simulated node".into()
    }

    async fn observe(&self, deadline: tokio::time::Instant) -> drivers::witness::Observation {
        use drivers::witness::{Observation, Verdict};
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match &self.watch {
            Watch::Node(devs, settle) => {
                let runs = || devs.iter().all(|d| d.true_power() == PowerState::On);
                if runs() {
                    return Observation {
                        verdict: Verdict::Alive,
                        evidence: vec![seen("10.0.0.12:5405 still answers".into())],
                    };
                }
                let until = tokio::time::Instant::now() + *settle;
                if until > deadline {
                    tokio::time::sleep_until(deadline).await;
                    return Observation {
                        verdict: Verdict::NoEvidence,
                        evidence: vec![seen("deadline before settle".into())],
                    };
                }
                tokio::time::sleep_until(until).await;
                Observation {
                    verdict: if runs() {
                        Verdict::Alive
                    } else {
                        Verdict::Silent
                    },
                    evidence: vec![seen(format!("node checked over {} ms", settle.as_millis()))],
                }
            }
            Watch::Blind(why, after) => {
                tokio::time::sleep(*after).await;
                Observation {
                    verdict: Verdict::NoEvidence,
                    evidence: vec![seen(why.clone())],
                }
            }
            Watch::Hang => std::future::pending().await,
        }
    }
}
