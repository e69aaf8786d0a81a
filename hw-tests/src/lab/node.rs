//! The simulated node behind a BMC: its power state, power changes that take effect after a
//! delay (as a real chassis needs a moment to drop or raise its rails), and a hook called on
//! every change so a lab node can act on it (kill its cgroup on off, start it again on on).
//!
//! The model is driven by explicit instants (`now`), never by a clock of its own, so the BMC's
//! request handler stays a pure-ish function of its inputs.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The off time of a power cycle: "at least 1 second" between power off and power on
/// (IPMI v2.0 §28.3, Chassis Control, power cycle).
pub const POWER_CYCLE_INTERVAL: Duration = Duration::from_secs(1);

/// What happened to a node's power; passed to the [`PowerHook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerEvent {
    /// Power went off: everything running on the node must stop now.
    Off,
    /// Power came back on: the node boots.
    On,
}

/// Called with the node's name and the change, after the change is applied (never with a lock
/// of the lab held). A lab node uses it to kill or restart what runs "on" the node.
pub type PowerHook = Arc<dyn Fn(&str, PowerEvent) + Send + Sync>;

/// A power change requested through Chassis Control (IPMI v2.0 §28.3, Table 28-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power down (hard off).
    Down,
    /// Power up.
    Up,
    /// Power cycle: off, then on again after [`POWER_CYCLE_INTERVAL`].
    Cycle,
    /// Hard reset: the node restarts (everything on it dies) while power stays on.
    HardReset,
    /// Soft shutdown (ACPI): the simulated OS always honours it, so it ends as an off.
    SoftShutdown,
}

/// Why the node cannot carry out an action in its present state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRefusal {
    /// Power cycle or hard reset of a node that is off (§28.3: the BMC answers D5h, "command
    /// not supported in present state", as the action needs power to be on).
    PowerIsOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Off,
    On,
    Reset,
}

/// Power state and scheduled changes of one simulated node.
#[derive(Clone)]
pub struct Node {
    on: bool,
    delay: Duration,
    pending: VecDeque<(Instant, Step)>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("on", &self.on)
            .field("delay", &self.delay)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Node {
    /// A node with power `on`, whose changes take effect `delay` after they are requested.
    pub fn new(on: bool, delay: Duration) -> Self {
        Self {
            on,
            delay,
            pending: VecDeque::new(),
        }
    }

    /// Whether power is on now (pending changes not yet applied do not count).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// The delay between a request and its effect.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Changes the delay for later requests.
    pub fn set_delay(&mut self, delay: Duration) {
        self.delay = delay;
    }

    /// Whether a requested change has not taken effect yet.
    pub fn is_changing(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When the next scheduled change is due.
    pub fn next_change(&self) -> Option<Instant> {
        self.pending.front().map(|(at, _)| *at)
    }

    fn schedule(&mut self, at: Instant, step: Step) {
        // Changes happen in the order they were asked for, never earlier than a previous one.
        let at = self.pending.back().map_or(at, |(last, _)| at.max(*last));
        self.pending.push_back((at, step));
    }

    /// Schedules `action` to take effect after the delay. With a zero delay it still only
    /// takes effect at the next [`Node::settle`] (which the BMC calls right away).
    pub fn request(&mut self, action: PowerAction, now: Instant) -> Result<(), NodeRefusal> {
        let at = now + self.delay;
        match action {
            PowerAction::Down | PowerAction::SoftShutdown => self.schedule(at, Step::Off),
            PowerAction::Up => self.schedule(at, Step::On),
            PowerAction::Cycle => {
                if !self.on {
                    return Err(NodeRefusal::PowerIsOff);
                }
                self.schedule(at, Step::Off);
                self.schedule(at + POWER_CYCLE_INTERVAL, Step::On);
            }
            PowerAction::HardReset => {
                if !self.on {
                    return Err(NodeRefusal::PowerIsOff);
                }
                self.schedule(at, Step::Reset);
            }
        }
        Ok(())
    }

    /// Like [`Node::request`] for a power cycle whose power-on never happens (the
    /// power-on-fails fault): only the off is scheduled.
    pub fn request_off_only(&mut self, now: Instant) {
        let at = now + self.delay;
        self.schedule(at, Step::Off);
    }

    /// Applies every change due at `now` and returns the power events, in order, for the hook.
    /// A change that leaves the state as it was (off when already off) produces no event.
    pub fn settle(&mut self, now: Instant) -> Vec<PowerEvent> {
        let mut events = Vec::new();
        while let Some(&(at, step)) = self.pending.front() {
            if at > now {
                break;
            }
            self.pending.pop_front();
            match step {
                Step::Off if self.on => {
                    self.on = false;
                    events.push(PowerEvent::Off);
                }
                Step::On if !self.on => {
                    self.on = true;
                    events.push(PowerEvent::On);
                }
                Step::Reset if self.on => {
                    events.extend([PowerEvent::Off, PowerEvent::On]);
                }
                _ => {}
            }
        }
        events
    }

    /// Sets power immediately (the lab operator's hand on the switch), cancelling anything
    /// scheduled; returns the event if the state changed.
    pub fn force(&mut self, on: bool) -> Option<PowerEvent> {
        self.pending.clear();
        if self.on == on {
            return None;
        }
        self.on = on;
        Some(if on { PowerEvent::On } else { PowerEvent::Off })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_after_the_delay_in_order() {
        let t0 = Instant::now();
        let mut n = Node::new(true, Duration::from_millis(100));
        n.request(PowerAction::Down, t0).unwrap();
        assert!(n.settle(t0 + Duration::from_millis(99)).is_empty());
        assert!(n.is_on());
        assert_eq!(n.settle(t0 + Duration::from_millis(100)), [PowerEvent::Off]);
        assert!(!n.is_on());
        // Off when off: acknowledged, no event.
        n.request(PowerAction::Down, t0).unwrap();
        assert!(n.settle(t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn cycle_and_reset_need_power_and_report_off_then_on() {
        let t0 = Instant::now();
        let mut n = Node::new(true, Duration::ZERO);
        n.request(PowerAction::Cycle, t0).unwrap();
        assert_eq!(n.settle(t0), [PowerEvent::Off]);
        assert_eq!(n.next_change(), Some(t0 + POWER_CYCLE_INTERVAL));
        assert_eq!(n.settle(t0 + POWER_CYCLE_INTERVAL), [PowerEvent::On]);
        n.request(PowerAction::HardReset, t0).unwrap();
        assert_eq!(n.settle(t0), [PowerEvent::Off, PowerEvent::On]);
        assert!(n.is_on());
        n.force(false);
        assert_eq!(
            n.request(PowerAction::Cycle, t0),
            Err(NodeRefusal::PowerIsOff)
        );
        assert_eq!(
            n.request(PowerAction::HardReset, t0),
            Err(NodeRefusal::PowerIsOff)
        );
    }
}
