//! The watcher's time: a monotonic clock, sleeps, waits with a timeout, and the threads that
//! take part in it, behind one trait.
//!
//! The watcher's safety argument is about time (a read counts for `W / 2` after it *started*,
//! msgwait >= 1.5 W), so its time is injected, as the engine's is with tokio's paused time:
//! [`SystemClock`] is `Instant` + `thread::sleep` + a condvar; the test clock
//! (`test_support::TestClock`) is virtual time that moves only when every thread taking part
//! is blocked on it, so the servant/inquisitor interplay runs the same way every time.
//!
//! Threads talk through [`channel`], whose receive waits on the clock: with virtual time a
//! receiver waiting for a report is "blocked", and time may move on past its timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A monotonic clock with sleeps, waits and threads that take part in it.
pub trait Clock: Send + Sync {
    /// The current monotonic time.
    fn now(&self) -> Instant;
    /// Blocks the calling thread for `d`.
    fn sleep(&self, d: Duration);
    /// Blocks until `ready()` holds or `deadline` (if any) has passed; returns whether
    /// `ready()` held. `ready` runs with the clock's lock held and is checked again after
    /// every [`Clock::notify`], so it must be quick and must not call the clock.
    fn wait_until(&self, deadline: Option<Instant>, ready: &mut dyn FnMut() -> bool) -> bool;
    /// Says that something a `ready` of [`Clock::wait_until`] looks at has changed.
    fn notify(&self);
    /// Starts a thread that takes part in this clock (a servant).
    fn spawn(
        &self,
        name: String,
        stack: usize,
        body: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<()>;
}

/// Real time: `Instant`, `thread::sleep`, and one condvar for the waits.
#[derive(Debug, Default)]
pub struct SystemClock {
    lock: Mutex<()>,
    changed: Condvar,
}

/// The real clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock::default())
}

impl SystemClock {
    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn wait_until(&self, deadline: Option<Instant>, ready: &mut dyn FnMut() -> bool) -> bool {
        let mut g = self.guard();
        loop {
            if ready() {
                return true;
            }
            // std's Condvar times out on CLOCK_MONOTONIC, like `Instant`.
            g = match deadline {
                None => self.changed.wait(g).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.changed
                        .wait_timeout(g, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    fn notify(&self) {
        // Taken so that a waiter between its `ready()` and its wait cannot miss this.
        let _g = self.guard();
        self.changed.notify_all();
    }

    fn spawn(
        &self,
        name: String,
        stack: usize,
        body: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(name)
            .stack_size(stack)
            .spawn(body)
            .map(drop)
    }
}

struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    senders: AtomicUsize,
    receiver: AtomicBool,
    clock: Arc<dyn Clock>,
}

impl<T> Shared<T> {
    fn queue(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A channel whose receive waits on a [`Clock`] (std's mpsc waits in real time only).
pub fn channel<T: Send>(clock: Arc<dyn Clock>) -> (Sender<T>, Receiver<T>) {
    let s = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        senders: AtomicUsize::new(1),
        receiver: AtomicBool::new(true),
        clock,
    });
    (Sender(Arc::clone(&s)), Receiver(s))
}

/// The sending half of [`channel`].
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `v`; gives it back if the receiver is gone.
    pub fn send(&self, v: T) -> Result<(), T> {
        if !self.0.receiver.load(Ordering::SeqCst) {
            return Err(v);
        }
        self.0.queue().push_back(v);
        self.0.clock.notify();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::SeqCst);
        Sender(Arc::clone(&self.0))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.senders.fetch_sub(1, Ordering::SeqCst);
        self.0.clock.notify();
    }
}

/// Why [`Receiver::recv_timeout`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing came within the timeout.
    Timeout,
    /// Every sender is gone and the queue is empty.
    Disconnected,
}

/// The receiving half of [`channel`].
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next value, if one is queued.
    pub fn try_recv(&self) -> Option<T> {
        self.0.queue().pop_front()
    }

    /// The next value, waiting up to `timeout` on the channel's clock.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        let s = &self.0;
        let deadline = s.clock.now() + timeout;
        s.clock.wait_until(Some(deadline), &mut || {
            !s.queue().is_empty() || s.senders.load(Ordering::SeqCst) == 0
        });
        match self.try_recv() {
            Some(v) => Ok(v),
            None if s.senders.load(Ordering::SeqCst) == 0 => Err(RecvError::Disconnected),
            None => Err(RecvError::Timeout),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.receiver.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_channel_delivers_times_out_and_sees_disconnection() {
        let (tx, rx) = channel::<u32>(system());
        let t = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(30)),
            Err(RecvError::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx2.send(7).ok();
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
        drop(tx);
        let t = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Err(RecvError::Disconnected)
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "disconnection wakes the receiver"
        );
        let (tx, rx) = channel::<u32>(system());
        drop(rx);
        assert_eq!(tx.send(1), Err(1), "a gone receiver gives the value back");
    }
}
