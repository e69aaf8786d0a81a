//! What a caller may ask of the engine that changes something: fence, confirm by hand, pause
//! or resume. Each is one call that validates the request, records it in history, writes the
//! audit record (who, from where, what, why, outcome) and counts a refusal; the API maps the
//! typed result to HTTP and does nothing else with it.

use super::Requester;
use super::{operation, Engine, InFlight};
use crate::error::EngineError;
use crate::history::{LedgerEntry, Write};
use crate::model::*;
use std::time::Duration;
use tokio::sync::watch;

impl Engine {
    /// Accepts a fence request: joins the operation in flight for the same target and action
    /// (or the same recent `request_id`), refuses a conflicting one, otherwise records a new
    /// operation in history and starts it. Returns before any device is touched. Audited, and
    /// a refusal is counted.
    pub async fn fence(
        &self,
        req: FenceRequest,
        by: &Requester,
    ) -> Result<FenceAccepted, EngineError> {
        self.fence_as(req, by, None).await
    }

    /// [`Engine::fence`] for an operation the fencer cluster agreed on and gave this member to
    /// execute: a new operation is recorded with `cluster` (which cluster operation it is), so
    /// this member's history holds it once (see [`Engine::record_cluster_copies`]).
    pub async fn fence_as(
        &self,
        req: FenceRequest,
        by: &Requester,
        cluster: Option<Box<ClusterOrigin>>,
    ) -> Result<FenceAccepted, EngineError> {
        let what = format!("fence {} {}", req.target, req.action);
        let why = req.reason.clone();
        let (target, action) = (req.target.clone(), req.action);
        let result = self.accept(req, by, &what, cluster).await;
        match &result {
            // A new operation's audit record was written with the operation's first record.
            Ok(a) if !a.joined => {}
            Ok(a) => {
                self.audit_batched(by, &what, &why, &format!("joined operation {}", a.id), None)
                    .await
            }
            Err(e) => {
                // A limit's refusal is a safety decision: its own record, in the same commit.
                let also = match e {
                    EngineError::RateLimited { limit } => Some(LedgerEntry::Refused {
                        at_ms: self.inner.clock.now_ms(),
                        by: by.caller.identity.clone(),
                        target,
                        action,
                        code: "rate_limited".into(),
                        detail: limit.to_string(),
                    }),
                    _ => None,
                };
                self.audit_batched(by, &what, &why, &refused(e), also).await
            }
        }
        self.tally(result)
    }

    /// Accepts many fence requests at once: each entry is exactly one [`Engine::fence`] call
    /// (its own operation or join, its own refusal, audit record and limit count), and the
    /// answers come back in the order asked.
    ///
    /// Every entry takes (or joins, or is refused) its target before any entry awaits its
    /// durable write: `join_all` polls the calls in order and each one reserves its target
    /// without waiting. So a target named twice in one batch starts one operation, and the
    /// later entry joins it (same action) or is refused as a conflict (other action), never
    /// a second operation racing the first. All the entries' writes go to history in one
    /// group commit.
    pub async fn fence_batch(
        &self,
        reqs: Vec<FenceRequest>,
        by: &Requester,
    ) -> Vec<Result<FenceAccepted, EngineError>> {
        futures_util::future::join_all(reqs.into_iter().map(|r| self.fence(r, by))).await
    }

    /// Records an operator's manual confirmation that `target` is off. It is a succeeded `off`
    /// operation whose confirmation names the operator and the reason. Refused while an
    /// operation on the target is in flight (its outcome must not be overwritten). Audited,
    /// and a refusal is counted.
    pub fn confirm(
        &self,
        target: &str,
        reason: &str,
        by: &Requester,
    ) -> Result<Operation, EngineError> {
        self.confirm_as(target, reason, by, None)
    }

    /// [`Engine::confirm`] for a confirmation the fencer cluster agreed on: recorded with
    /// `cluster` (its cluster key), so this member's history holds it once while every other
    /// member copies it (see [`Engine::record_cluster_copies`]).
    pub fn confirm_as(
        &self,
        target: &str,
        reason: &str,
        by: &Requester,
        cluster: Option<Box<ClusterOrigin>>,
    ) -> Result<Operation, EngineError> {
        let what = format!("confirm {target} off");
        let result = self.record_confirmation(target, reason, by, &what, cluster);
        if let Err(e) = &result {
            self.audit(by, &what, reason, &refused(e));
        }
        self.tally(result)
    }

    /// Turns the pause switch on or off (a reason is required); recorded in history and kept
    /// across restarts. Audited, and a refusal is counted.
    pub fn set_paused(
        &self,
        paused: bool,
        reason: &str,
        by: &Requester,
    ) -> Result<PauseStatus, EngineError> {
        let what = if paused { "pause" } else { "resume" };
        let result = self.switch_pause(paused, reason, by, what);
        if let Err(e) = &result {
            self.audit(by, what, reason, &refused(e));
        }
        self.tally(result)
    }

    async fn accept(
        &self,
        req: FenceRequest,
        by: &Requester,
        what: &str,
        cluster: Option<Box<ClusterOrigin>>,
    ) -> Result<FenceAccepted, EngineError> {
        let caller = &by.caller;
        let target = self.target(&req.target)?.clone();
        if req.reason.len() > 1024
            || req
                .request_id
                .as_ref()
                .is_some_and(|r| r.len() > 128 || r.is_empty())
        {
            return Err(EngineError::BadRequest {
                detail: "reason is limited to 1024 bytes and request_id to 1..=128 bytes".into(),
            });
        }
        if req.timeout_s == Some(0) {
            return Err(EngineError::BadRequest {
                detail: "timeout_s must be at least 1".into(),
            });
        }
        let inner = &self.inner;
        // Read before the state lock is taken: the skip rule reads device health under it.
        let first_level = operation::first_level(inner, &target);
        let now = inner.clock.now_ms();
        // The state lock is held in this block only: nothing in it waits.
        let taken = 'take: {
            let mut st = inner.state();

            if let Some(rid) = &req.request_id {
                if let Some(&id) = st.request_ids.get(rid) {
                    let op = match st.in_flight.get(&req.target) {
                        Some(f) if f.id == id => Some(f.tx.borrow().clone()),
                        _ => inner.history.get(id)?,
                    };
                    if let Some(op) = op {
                        if op.target != req.target || op.action != req.action {
                            return Err(EngineError::RequestIdMismatch {
                                request_id: rid.clone(),
                                id,
                                target: op.target,
                                action: op.action,
                            });
                        }
                        let newest = st.latest.get(&req.target).copied() == Some(id);
                        let recent = op.finished_ms.is_none_or(|f| {
                            now.saturating_sub(f)
                                <= inner.config.limits.request_id_window.as_millis() as u64
                        });
                        // Only the newest operation on the target may be returned: if the node was
                        // powered on (or anything else ran) since, an old "fenced" would be a lie.
                        if newest && recent {
                            let recorded = st
                                .in_flight
                                .get(&req.target)
                                .filter(|f| f.id == id)
                                .map(|f| f.recorded.clone());
                            break 'take Taken::Joined(
                                FenceAccepted {
                                    id,
                                    state: op.state,
                                    joined: true,
                                },
                                recorded,
                            );
                        }
                    }
                }
            }

            if let Some(f) = st.in_flight.get(&req.target) {
                if f.action == req.action {
                    let state = f.tx.borrow().state;
                    let id = f.id;
                    let recorded = f.recorded.clone();
                    if let Some(rid) = &req.request_id {
                        st.request_ids.insert(rid.clone(), id);
                    }
                    break 'take Taken::Joined(
                        FenceAccepted {
                            id,
                            state,
                            joined: true,
                        },
                        Some(recorded),
                    );
                }
                return Err(EngineError::Conflict {
                    target: req.target.clone(),
                    running_id: f.id,
                    running_action: f.action,
                    requested: req.action,
                });
            }

            if st.pause.paused {
                return Err(EngineError::Paused {
                    by: st.pause.by.clone().unwrap_or_default(),
                    reason: st.pause.reason.clone().unwrap_or_default(),
                });
            }
            if req.action.fences() {
                if let Err(limit) = st.limiter.check(&req.target, tokio::time::Instant::now()) {
                    return Err(EngineError::RateLimited { limit });
                }
            }

            let delay = operation::fence_race_delay(&target.timing);
            let id = st.next_id;
            let mut op = Operation {
                id,
                target: req.target.clone(),
                action: req.action,
                reason: req.reason.clone(),
                requested_by: caller.clone(),
                request_id: req.request_id.clone(),
                state: if delay.is_zero() {
                    OpState::Running
                } else {
                    OpState::Delayed
                },
                created_ms: now,
                // Without a delay the operation starts now: one durable write less (each costs
                // an fsync, ~4 ms on a VM disk).
                started_ms: delay.is_zero().then_some(now),
                finished_ms: None,
                delay_ms: delay.as_millis() as u64,
                attempts: Vec::new(),
                pending: Vec::new(),
                witnesses: Vec::new(),
                outcome: None,
                cluster,
            };
            // Without a delay the first level's commands follow at once: they are recorded with
            // the operation itself (one durable write, not two).
            if delay.is_zero() {
                if let Some((n, level)) = first_level {
                    op.pending = operation::pending_steps(
                        inner,
                        &op,
                        n,
                        level,
                        operation::first_phase(op.action),
                        now,
                    );
                }
            }
            // The target is taken (and the id and the limit's count spent) before the write, so
            // requests arriving while it commits join this operation or are refused as usual.
            st.next_id += 1;
            if req.action.fences() {
                st.limiter.record(&req.target, tokio::time::Instant::now());
            }
            let (tx, _rx) = watch::channel(op.clone());
            let (recorded_tx, recorded) = watch::channel(None);
            st.in_flight.insert(
                req.target.clone(),
                InFlight {
                    id,
                    action: req.action,
                    tx: tx.clone(),
                    recorded,
                },
            );
            let previous = st.latest.insert(req.target.clone(), id);
            if let Some(rid) = &req.request_id {
                st.request_ids.insert(rid.clone(), id);
            }
            Taken::New {
                op: Box::new(op),
                tx,
                recorded: recorded_tx,
                previous,
                delay,
                id,
            }
        };
        let (mut op, tx, recorded, previous, delay, id) = match taken {
            Taken::Joined(accepted, None) => return Ok(accepted),
            Taken::Joined(accepted, Some(mut first_write)) => {
                // Decided (a join), but only true once the joined operation is in history.
                return match first_write.wait_for(Option::is_some).await.map(|v| *v) {
                    Ok(Some(true)) => Ok(accepted),
                    _ => Err(EngineError::History {
                        detail: format!(
                            "{} NOT fenced: operation {}, which this request joined, could not be recorded in history, so it never ran; no device was touched",
                            req.target, accepted.id
                        ),
                    }),
                };
            }
            Taken::New {
                op,
                tx,
                recorded,
                previous,
                delay,
                id,
            } => (*op, tx, recorded, previous, delay, id),
        };
        // Durability first: the operation exists in history before anything else happens.
        let audit = self.audit_entry(
            by,
            what,
            &req.reason,
            &format!("accepted as operation {id}"),
        );
        let written = inner
            .journal
            .write(Write::Operation {
                operation: Box::new(op.clone()),
                also: vec![audit],
            })
            .await;
        if let Err(e) = written {
            let mut st = inner.state();
            if st.in_flight.get(&req.target).is_some_and(|f| f.id == id) {
                st.in_flight.remove(&req.target);
            }
            if st.latest.get(&req.target) == Some(&id) {
                match previous {
                    Some(p) => st.latest.insert(req.target.clone(), p),
                    None => st.latest.remove(&req.target),
                };
            }
            if let Some(rid) = &req.request_id {
                if st.request_ids.get(rid) == Some(&id) {
                    st.request_ids.remove(rid);
                }
            }
            drop(st);
            // Told after the rollback, so a joiner never finds the target still taken by an
            // operation that will not run.
            recorded.send_replace(Some(false));
            // Whoever watches it learns it failed; nothing was sent.
            op.state = OpState::Failed;
            op.finished_ms = Some(inner.clock.now_ms());
            op.pending.clear();
            let message = format!(
                "{} NOT fenced: the operation could not be recorded in history ({e}); no device was touched",
                op.target
            );
            op.outcome = Some(Outcome::Failed {
                code: "history_failed".into(),
                message: message.clone(),
            });
            tx.send_replace(op);
            return Err(EngineError::History { detail: message });
        }
        recorded.send_replace(Some(true));
        let _ = inner.events.send(Event::Operation {
            operation: Box::new(op.clone()),
        });
        let total = req
            .timeout_s
            .map(Duration::from_secs)
            .map_or(target.timing.total_timeout, |t| {
                t.min(target.timing.total_timeout)
            });
        let state = op.state;
        tokio::spawn(operation::run_operation(
            self.inner.clone(),
            target,
            op,
            tx,
            delay,
            total,
        ));
        Ok(FenceAccepted {
            id,
            state,
            joined: false,
        })
    }

    /// Persists this member's copies of finished cluster operations that another member
    /// executed (or that it learnt of from a snapshot when it rejoined): each gets an id of
    /// this engine and goes into this member's own history and ledger, signed with its key,
    /// through the group commit. A cluster operation already in this history (by its
    /// [`ClusterOrigin::op`]: executed here, or copied before) is skipped, so a member keeps
    /// one record per cluster operation however often it hears of it; except that a record
    /// this member's restart ended as `interrupted` is superseded by the cluster's outcome
    /// (another member finished it): the outcome is appended as a new ledger record of the
    /// same operation, after the interrupted one, which stays. Returns the ids written.
    ///
    /// The state lock is held only to give ids (no I/O under it); the writes are queued to
    /// the history writer and each copy is durable when this returns `Ok`.
    pub async fn record_cluster_copies(
        &self,
        ops: Vec<Operation>,
    ) -> Result<Vec<u64>, EngineError> {
        let inner = &self.inner;
        // What is already stored, read before the lock (redb reads do not block writers).
        let mut plans = Vec::new();
        for op in ops {
            let Some(key) = op.cluster.as_ref().map(|c| c.op.clone()) else {
                continue;
            };
            if !op.state.is_terminal() {
                continue;
            }
            let stored = match inner.history.cluster_operation(&key)? {
                Some(id) => inner.history.get(id)?,
                None => None,
            };
            plans.push((key, op, stored));
        }
        let mut writes = Vec::new();
        let mut keys = Vec::new();
        {
            let mut st = inner.state();
            for (key, mut op, stored) in plans {
                if st.cluster_pending.contains(&key) {
                    continue;
                }
                match stored {
                    None => {
                        op.id = st.next_id;
                        st.next_id += 1;
                    }
                    Some(local) if supersedes(&local, &op) => op = superseded(local, op),
                    Some(_) => continue,
                }
                st.cluster_pending.insert(key.clone());
                keys.push(key);
                writes.push(op);
            }
        }
        let results = futures_util::future::join_all(writes.iter().map(|op| {
            inner.journal.write(Write::Operation {
                operation: Box::new(op.clone()),
                also: Vec::new(),
            })
        }))
        .await;
        {
            let mut st = inner.state();
            for k in &keys {
                st.cluster_pending.remove(k);
            }
        }
        let mut stored = Vec::new();
        let mut first_err = None;
        for (op, r) in writes.into_iter().zip(results) {
            match r {
                Ok(()) => {
                    stored.push(op.id);
                    let _ = inner.events.send(Event::Operation {
                        operation: Box::new(op),
                    });
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(stored),
        }
    }

    /// Whether this member's history holds its record of cluster operation `op` (`node/pid#n`)
    /// durably: what the cluster waits for before it reports the operation finished.
    pub fn has_cluster_record(&self, op: &str) -> Result<bool, EngineError> {
        Ok(self.inner.history.cluster_operation(op)?.is_some())
    }

    fn record_confirmation(
        &self,
        target: &str,
        reason: &str,
        by: &Requester,
        what: &str,
        cluster: Option<Box<ClusterOrigin>>,
    ) -> Result<Operation, EngineError> {
        let caller = &by.caller;
        self.target(target)?;
        if reason.trim().is_empty() {
            return Err(EngineError::BadRequest { detail: "a manual confirmation needs a reason (what you checked, e.g. \"power cords pulled, checked in the rack\")".into() });
        }
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let mut st = inner.state();
        if let Some(f) = st.in_flight.get(target) {
            return Err(EngineError::Conflict {
                target: target.to_string(),
                running_id: f.id,
                running_action: f.action,
                requested: Action::Off,
            });
        }
        let id = st.next_id;
        let op = Operation {
            id,
            target: target.to_string(),
            action: Action::Off,
            reason: reason.to_string(),
            requested_by: caller.clone(),
            request_id: None,
            state: OpState::Succeeded,
            created_ms: now,
            started_ms: Some(now),
            finished_ms: Some(now),
            delay_ms: 0,
            attempts: Vec::new(),
            pending: Vec::new(),
            witnesses: Vec::new(),
            outcome: Some(Outcome::Succeeded {
                confirmation: Confirmation::Manual {
                    by: caller.identity.clone(),
                    reason: reason.to_string(),
                },
                powered_on: None,
                summary: format!(
                    "{target} confirmed off by hand by {}: {reason}",
                    caller.identity
                ),
            }),
            cluster,
        };
        let audit = self.audit_entry(by, what, reason, &format!("recorded as operation {id}"));
        inner.history.record_with(&op, &[audit])?;
        st.next_id += 1;
        st.latest.insert(target.to_string(), id);
        drop(st);
        let _ = inner.events.send(Event::Operation {
            operation: Box::new(op.clone()),
        });
        Ok(op)
    }

    fn switch_pause(
        &self,
        paused: bool,
        reason: &str,
        by: &Requester,
        what: &str,
    ) -> Result<PauseStatus, EngineError> {
        let caller = &by.caller;
        if reason.trim().is_empty() {
            return Err(EngineError::BadRequest {
                detail: format!(
                    "{} needs a reason (it is recorded in history with your identity)",
                    if paused { "pausing" } else { "resuming" }
                ),
            });
        }
        let inner = &self.inner;
        let status = PauseStatus {
            paused,
            by: Some(caller.identity.clone()),
            reason: Some(reason.to_string()),
            since_ms: Some(inner.clock.now_ms()),
        };
        inner.history.append_events(&[
            LedgerEntry::Pause {
                status: status.clone(),
            },
            self.audit_entry(by, what, reason, "done"),
        ])?;
        inner.state().pause = status.clone();
        let _ = inner.events.send(Event::Pause {
            paused,
            by: caller.identity.clone(),
            reason: reason.to_string(),
        });
        Ok(status)
    }
}

/// An audit record's outcome for a refused request.
fn refused(e: &EngineError) -> String {
    format!("refused: {} ({e})", e.code())
}

/// What the state-locked part of [`Engine::accept`] decided.
enum Taken {
    /// The request joins this operation; if it is still in flight, the receiver says when its
    /// first record is in history (`None`: it already is).
    Joined(FenceAccepted, Option<watch::Receiver<Option<bool>>>),
    /// A new operation, its target taken; its first record is still to be written.
    New {
        op: Box<Operation>,
        tx: watch::Sender<Operation>,
        recorded: watch::Sender<Option<bool>>,
        previous: Option<u64>,
        delay: Duration,
        id: u64,
    },
}

/// A local record this member's restart ended as `interrupted` gives way to the cluster's
/// outcome of the same cluster operation, when the cluster's word is another one.
fn supersedes(local: &Operation, cluster: &Operation) -> bool {
    let code = |o: &Operation| match &o.outcome {
        Some(Outcome::Failed { code, .. }) => Some(code.clone()),
        _ => None,
    };
    match code(local).as_deref() {
        Some("interrupted") => code(cluster).as_deref() != Some("interrupted"),
        // This member's partition lost the executor and recorded the operation failed; the
        // healed cluster holds the executor's own read-back: the success is appended.
        Some("executor_left") => cluster.state == OpState::Succeeded,
        _ => false,
    }
}

/// The local record with the cluster's outcome appended: same id and creation, the local
/// (interrupted) attempts first, then the finishing executor's, and the cluster's state,
/// outcome and tag.
fn superseded(local: Operation, cluster: Operation) -> Operation {
    let mut attempts = local.attempts;
    attempts.extend(cluster.attempts);
    let mut witnesses = local.witnesses;
    witnesses.extend(cluster.witnesses);
    Operation {
        id: local.id,
        created_ms: local.created_ms,
        requested_by: local.requested_by,
        attempts,
        witnesses,
        pending: Vec::new(),
        cluster: cluster.cluster.or(local.cluster),
        ..cluster
    }
}
