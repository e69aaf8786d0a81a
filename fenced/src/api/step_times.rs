//! How long each device takes to do its part, for `/metrics`: a histogram per device and phase
//! of confirmed steps (command sent to power read back as expected), so an alert can say "this
//! fence is slower than this device usually is" before a slow device becomes a timeout.
//!
//! Fed from the engine's event stream (every operation event carries the whole operation, so
//! each attempt is seen once it is appended, and later events of the same operation repeat it):
//! the engine stays the one place that runs operations, and this file only watches. A subscriber
//! that falls behind re-reads the operations it was following from history; attempts of an
//! operation that started and finished entirely within such a gap are counted as missed.

use super::metrics::Page;
use crate::engine::Engine;
use crate::model::{Event, Operation, Phase, StepResult};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Upper bounds of the histogram's buckets, seconds: from a relay's tens of milliseconds to a
/// slow BMC's or a poison pill's minutes.
pub const BUCKETS_S: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot counts values above every bound.
    counts: [u64; BUCKETS_S.len() + 1],
    sum_ms: u64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, ms: u64) {
        let s = ms as f64 / 1000.0;
        let i = BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS_S.len());
        self.counts[i] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    by_device: BTreeMap<(String, &'static str), Histogram>,
    /// Operations followed: id -> attempts already observed.
    following: HashMap<u64, usize>,
    /// Events this watcher lost for falling behind.
    missed: u64,
}

/// The step-duration histograms.
#[derive(Default)]
pub struct StepTimes {
    inner: Mutex<Inner>,
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Off => "off",
        Phase::On => "on",
    }
}

impl StepTimes {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in the attempts of `op` not seen before.
    pub fn observe(&self, op: &Operation) {
        let mut g = self.inner();
        let inner = &mut *g;
        let seen = inner.following.entry(op.id).or_insert(0);
        for a in op.attempts.iter().skip(*seen) {
            if matches!(a.result, StepResult::Confirmed { .. }) {
                inner
                    .by_device
                    .entry((a.device.clone(), phase_name(a.phase)))
                    .or_default()
                    .observe(a.finished_ms.saturating_sub(a.started_ms));
            }
        }
        *seen = (*seen).max(op.attempts.len());
        if op.state.is_terminal() {
            inner.following.remove(&op.id);
        }
    }

    /// After falling behind: re-reads the operations being followed (their end may have been
    /// among the lost events) and counts the loss.
    fn caught_up(&self, engine: &Engine, missed: u64) {
        let ids: Vec<u64> = {
            let mut g = self.inner();
            g.missed += missed;
            g.following.keys().copied().collect()
        };
        for id in ids {
            match engine.operation(id) {
                Ok(op) => self.observe(&op),
                Err(_) => {
                    self.inner().following.remove(&id);
                }
            }
        }
    }

    /// Follows the engine's events until `stop` completes.
    pub async fn run(
        &self,
        engine: Engine,
        mut rx: broadcast::Receiver<Event>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                () = &mut stop => return,
            };
            match ev {
                Ok(Event::Operation { operation }) => self.observe(&operation),
                Ok(Event::Pause { .. }) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => self.caught_up(&engine, n),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Appends the histograms to a metrics page.
    pub(super) fn render(&self, p: &mut Page) {
        let g = self.inner();
        let name = "palisade_device_step_duration_seconds";
        p.family(
            name,
            "histogram",
            "Confirmed device steps (command sent to power read back as expected), by device and phase, seconds.",
        );
        for ((device, phase), h) in &g.by_device {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS_S.iter().enumerate() {
                cumulative += h.counts[i];
                let le = bound.to_string();
                p.sample(
                    &format!("{name}_bucket"),
                    &[("device", device), ("phase", phase), ("le", &le)],
                    cumulative,
                );
            }
            p.sample(
                &format!("{name}_bucket"),
                &[("device", device), ("phase", phase), ("le", "+Inf")],
                h.count,
            );
            p.sample(
                &format!("{name}_sum"),
                &[("device", device), ("phase", phase)],
                h.sum_ms as f64 / 1000.0,
            );
            p.sample(
                &format!("{name}_count"),
                &[("device", device), ("phase", phase)],
                h.count,
            );
        }
        p.family(
            "palisade_step_times_events_missed_total",
            "counter",
            "Operation events the step-duration histograms lost for falling behind (their steps may be missing from it).",
        );
        p.sample("palisade_step_times_events_missed_total", &[], g.missed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Attempt, Caller, OpState};
    use drivers::PowerState;

    fn op(id: u64, state: OpState, steps: &[(u64, bool)]) -> Operation {
        Operation {
            id,
            target: "node1".into(),
            action: Action::Off,
            reason: String::new(),
            requested_by: Caller::internal("test"),
            request_id: None,
            state,
            created_ms: 0,
            started_ms: Some(0),
            finished_ms: None,
            delay_ms: 0,
            attempts: steps
                .iter()
                .map(|(ms, ok)| Attempt {
                    level: 1,
                    device: "bmc1".into(),
                    port: None,
                    phase: Phase::Off,
                    started_ms: 1000,
                    finished_ms: 1000 + ms,
                    result: if *ok {
                        StepResult::Confirmed {
                            state: PowerState::Off,
                            already: false,
                            polls: 1,
                            identity: None,
                            pill: None,
                            basis: None,
                        }
                    } else {
                        StepResult::Failed {
                            code: "timeout".into(),
                            message: "no answer".into(),
                        }
                    },
                    overruled: None,
                })
                .collect(),
            pending: vec![],
            witnesses: Vec::new(),
            outcome: None,
            cluster: None,
        }
    }

    #[test]
    fn each_confirmed_step_is_counted_once_however_often_its_operation_is_seen() {
        let t = StepTimes::default();
        t.observe(&op(1, OpState::Running, &[(3000, false)]));
        t.observe(&op(1, OpState::Running, &[(3000, false), (700, true)]));
        t.observe(&op(1, OpState::Succeeded, &[(3000, false), (700, true)]));
        let mut p = Page(String::new());
        t.render(&mut p);
        let text = p.0;
        assert!(
            text.contains(
                "palisade_device_step_duration_seconds_count{device=\"bmc1\",phase=\"off\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "palisade_device_step_duration_seconds_sum{device=\"bmc1\",phase=\"off\"} 0.7\n"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"0.5\"} 0\n") && text.contains("le=\"1\"} 1\n"));
        assert!(text.contains("le=\"+Inf\"} 1\n"), "{text}");
        assert!(
            t.inner().following.is_empty(),
            "finished operations are forgotten"
        );
    }
}
