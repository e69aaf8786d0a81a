//! Blast-radius limits: a broken controller must not be able to power off the fleet.

use crate::config::Limits;
use crate::error::LimitReached;
use std::collections::{HashMap, VecDeque};
use tokio::time::Instant;

/// Sliding-window counts of fencing operations started, overall and per target.
pub(super) struct Limiter {
    limits: Limits,
    all: VecDeque<Instant>,
    per_target: HashMap<String, VecDeque<Instant>>,
    /// When every target's count was last tidied (see [`Limiter::expire`]).
    swept: Option<Instant>,
}

impl Limiter {
    pub(super) fn new(limits: Limits) -> Self {
        Limiter {
            limits,
            all: VecDeque::new(),
            per_target: HashMap::new(),
            swept: None,
        }
    }

    /// Drops the starts older than the window from the overall count and from `target`'s.
    ///
    /// Only the asked target's count is expired on each check: sweeping every target's on
    /// each check cost O(targets) per request, 20% of a refusal's CPU at 1000 targets (perf,
    /// issue 15). The others' stale starts are harmless meanwhile (a count is only read after
    /// its own expiry) and bounded (a target's count never exceeds its limit), so they are
    /// tidied once per window, to free the entries of targets no longer fenced.
    fn expire(&mut self, target: &str, now: Instant) {
        let window = self.limits.window;
        let old = |t: &Instant| now.saturating_duration_since(*t) >= window;
        while self.all.front().is_some_and(old) {
            self.all.pop_front();
        }
        if let Some(q) = self.per_target.get_mut(target) {
            while q.front().is_some_and(old) {
                q.pop_front();
            }
        }
        if self.swept.is_none_or(|s| old(&s)) {
            self.swept = Some(now);
            self.per_target.retain(|_, q| {
                while q.front().is_some_and(old) {
                    q.pop_front();
                }
                !q.is_empty()
            });
        }
    }

    /// Whether one more fencing operation on `target` may start now; the error says which
    /// limit was hit, with its numbers.
    pub(super) fn check(&mut self, target: &str, now: Instant) -> Result<(), LimitReached> {
        self.expire(target, now);
        let window_s = self.limits.window.as_secs();
        let started = self.all.len() as u32;
        if started >= self.limits.max_operations {
            return Err(LimitReached::Overall {
                started,
                window_s,
                max: self.limits.max_operations,
            });
        }
        let started = self.per_target.get(target).map_or(0, |q| q.len()) as u32;
        if started >= self.limits.max_operations_per_target {
            return Err(LimitReached::PerTarget {
                target: target.to_string(),
                started,
                window_s,
                max: self.limits.max_operations_per_target,
            });
        }
        Ok(())
    }

    /// Counts an operation that started.
    pub(super) fn record(&mut self, target: &str, now: Instant) {
        self.all.push_back(now);
        self.per_target
            .entry(target.to_string())
            .or_default()
            .push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let mut l = Limiter::new(Limits {
            window: Duration::from_secs(60),
            max_operations: 2,
            max_operations_per_target: 1,
            request_id_window: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        assert!(l.check("a", t0).is_ok());
        l.record("a", t0);
        assert!(l.check("a", t0).unwrap_err().to_string().contains("on a"));
        assert!(l.check("b", t0).is_ok());
        l.record("b", t0);
        assert!(l
            .check("c", t0)
            .unwrap_err()
            .to_string()
            .contains("max_operations = 2"));
        let later = t0 + Duration::from_secs(60);
        assert!(l.check("a", later).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_count_expires_on_its_own_check_and_the_others_once_per_window() {
        let mut l = Limiter::new(Limits {
            window: Duration::from_secs(60),
            max_operations: 100,
            max_operations_per_target: 1,
            request_id_window: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        assert!(l.check("a", t0).is_ok());
        l.record("a", t0);
        let t30 = t0 + Duration::from_secs(30);
        assert!(l.check("b", t30).is_ok());
        l.record("b", t30);
        // Still inside a's window: refused, whatever other targets' checks did meanwhile.
        assert!(l.check("a", t30).unwrap_err().to_string().contains("on a"));
        // a's own check expires a's start, though no sweep is due yet (last one at t0)...
        let t60 = t0 + Duration::from_secs(60);
        assert!(l.check("a", t60).is_ok());
        assert!(l.check("b", t60).unwrap_err().to_string().contains("on b"));
        // ... and the sweep a window later frees every target whose starts all expired.
        l.record("a", t60);
        let t120 = t0 + Duration::from_secs(120);
        assert!(l.check("c", t120).is_ok());
        assert!(
            l.per_target.is_empty(),
            "limits.rs: expected the once-per-window sweep to drop a's and b's expired counts, found {:?}",
            l.per_target.keys().collect::<Vec<_>>()
        );
    }
}
