//! Group commit: the engine's history writes, queued and committed together.
//!
//! Every durable write costs an fsync (about 3 ms on a VM disk), and a fence needs two (the
//! accepted operation with its first steps, and its outcome). Committed one by one on the
//! runtime's only thread, a thousand fences at once would wait ~6 s for the disk alone. Here a
//! write is queued and its caller waits for its own result; one committer takes everything
//! queued so far and commits it in one transaction on a blocking thread, while the runtime
//! keeps accepting requests (which queue for the next commit). Nothing is lost: a caller is
//! told `Ok` only once its write is stored, and the engine still sends no command before the
//! record that announces it is committed.

use crate::history::{History, HistoryError, Write};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), HistoryError>>;

#[derive(Default)]
struct Queue {
    pending: Vec<(Write, Waiter)>,
    /// A committer task is running (it takes `pending` until it finds it empty).
    committing: bool,
}

/// The queue in front of the history file.
pub(super) struct Journal {
    history: Arc<History>,
    queue: Mutex<Queue>,
}

impl Journal {
    /// A journal writing into `history`.
    pub(super) fn new(history: Arc<History>) -> Arc<Journal> {
        Arc::new(Journal {
            history,
            queue: Mutex::new(Queue::default()),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing under this lock can panic half-way through an update that matters.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `w` and waits until it is committed (or failed).
    pub(super) async fn write(self: &Arc<Self>, w: Write) -> Result<(), HistoryError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue();
            q.pending.push((w, tx));
            !std::mem::replace(&mut q.committing, true)
        };
        if start {
            tokio::spawn(self.clone().commit_loop());
        }
        rx.await.unwrap_or_else(|_| {
            Err(self
                .history
                .store_err("the history writer stopped before committing this record (fenced is stopping); the request was NOT recorded"))
        })
    }

    async fn commit_loop(self: Arc<Self>) {
        loop {
            // Let every task that is ready queue its write first: they share this commit.
            tokio::task::yield_now().await;
            let batch = {
                let mut q = self.queue();
                if q.pending.is_empty() {
                    q.committing = false;
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            let (writes, waiters): (Vec<Write>, Vec<Waiter>) = batch.into_iter().unzip();
            let history = self.history.clone();
            let n = writes.len();
            let results =
                match tokio::task::spawn_blocking(move || history.commit_batch(&writes)).await {
                    Ok(r) => r,
                    Err(e) => (0..n)
                        .map(|_| {
                            Err(self
                                .history
                                .store_err(format!("the history writer thread failed: {e}")))
                        })
                        .collect(),
                };
            for (waiter, r) in waiters.into_iter().zip(results) {
                let _ = waiter.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests;
