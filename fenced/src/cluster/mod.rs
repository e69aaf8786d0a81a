//! The fencer cluster (issue 16): every member's fenced joins one Corosync CPG group; requests
//! become claims delivered in CPG's total order, and [`state`] derives from that order who owns
//! each target and who executes. This file is the member's runtime over any transport that
//! delivers that order: it sends this member's claims, answers its callers from what was
//! delivered, and runs on its own engine the operations the cluster gives it.
//!
//! Files: [`state`] (the agreement core, no I/O), [`wire`] (message encoding), `corosync`
//! (the CPG and quorum binding, feature `corosync`).

#[cfg(feature = "corosync")]
pub mod corosync;
pub mod libs;
pub mod state;
pub mod wire;

use crate::config::{ClusterConfig, Config, TargetConfig};
use crate::engine::{Engine, Requester};
use crate::error::EngineError;
use crate::model::*;
use sha2::{Digest, Sha256};
use state::{
    Claim, ClusterOp, Delivered, Effect, ExecResult, Hello, Member, MemberId, Message, OpKey,
    OpPhase, Proof,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Ids this member gives callers for operations another member executes: above any engine id
/// (those count up from 1), below 2^53 so JSON readers keep them exact.
pub const REMOTE_ID_BASE: u64 = 1 << 52;

/// How long a claim may take to come back through CPG before the caller is told.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The digest members compare for a target: its levels, identities and timing (a target
/// defined differently on two members is refused).
pub fn target_digest(t: &TargetConfig) -> String {
    let mut h = Sha256::new();
    h.update(t.name.as_bytes());
    for (i, level) in t.levels.iter().enumerate() {
        h.update(format!("\nlevel {i}:").as_bytes());
        for e in level {
            h.update(format!(" {}:{}", e.device, e.port.as_deref().unwrap_or("")).as_bytes());
        }
    }
    for (d, id) in &t.identities {
        h.update(format!("\nidentity {d}={id}").as_bytes());
    }
    let tm = &t.timing;
    h.update(
        format!(
            "\ntiming {} {} {} {}",
            tm.attempt_timeout.as_millis(),
            tm.total_timeout.as_millis(),
            tm.delay.as_millis(),
            tm.random_delay.as_millis()
        )
        .as_bytes(),
    );
    hex::encode(h.finalize())
}

/// This member's announcement from its config.
pub fn hello_of(config: &Config, cluster: &ClusterConfig) -> Hello {
    Hello {
        name: cluster.node_name.clone(),
        reaches: cluster.reaches.clone(),
        digests: config
            .targets
            .values()
            .map(|t| (t.name.clone(), target_digest(t)))
            .collect(),
        allow_without_quorum: cluster.allow_without_quorum,
        holds_state: false,
    }
}

/// What the transport hands the runtime.
#[derive(Debug)]
pub enum Incoming {
    /// The transport joined the group as this member.
    Joined(MemberId),
    /// An item of the delivered sequence.
    Delivered(Delivered),
    /// This node's quorum changed (from the quorum service).
    Quorum(bool),
    /// The transport lost the group (corosync stopped): the member can no longer agree.
    Lost(String),
}

/// A member's view for `fence_node status` and `/metrics`.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ClusterStatus {
    /// The CPG group.
    pub group: String,
    /// This member's node name.
    pub node_name: String,
    /// Joined and holding the cluster's state.
    pub joined: bool,
    /// This node's quorum (from votequorum).
    pub quorate: bool,
    /// New operations are accepted without quorum (dangerous).
    pub allow_without_quorum: bool,
    /// The members, by name (`node/pid` until they announce themselves).
    pub members: Vec<String>,
    /// Operations in flight: target, action, executor.
    pub in_flight: Vec<ClusterInFlight>,
    /// Why the member cannot agree now, if it cannot.
    pub lost: Option<String>,
}

/// One operation in flight cluster-wide.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ClusterInFlight {
    /// The cluster operation (`node/pid#n`).
    pub op: String,
    /// The target.
    pub target: String,
    /// The action.
    pub action: Action,
    /// Who executes it.
    pub executor: String,
    /// How many times another member took it over.
    pub takeovers: u32,
}

/// `GET /v1/cluster`: this member's view and the shared history as delivered to it.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ClusterView {
    /// The member's view; `None` when this fenced runs alone (no `[cluster]`).
    pub status: Option<ClusterStatus>,
    /// The shared history in delivery order (the same on every member that saw it all): the
    /// newest records only, at most [`state::LOG_KEEP`].
    pub history: Vec<state::Record>,
    /// How many older records of the shared history fell out of `history` (each member's
    /// own ledger, `GET /v1/history`, keeps every operation).
    #[serde(default)]
    pub history_dropped: u64,
}

/// The tasks of a running member: the transport and the runtime loop.
pub struct ClusterTasks(Vec<tokio::task::JoinHandle<()>>);

impl ClusterTasks {
    /// Stops both (leaving the CPG group: the others see this member go).
    pub fn abort(&self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Drop for ClusterTasks {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Starts this member on Corosync: joins the `[cluster]` group and follows quorum. Must run
/// inside a tokio runtime.
#[cfg(feature = "corosync")]
pub fn start(engine: Engine, cluster: ClusterConfig) -> Result<(Cluster, ClusterTasks), String> {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let group = cluster.group.clone();
    let follow_quorum = !cluster.allow_without_quorum;
    let member = Cluster::new(engine, cluster, out_tx);
    let transport = tokio::spawn(corosync::run(group, follow_quorum, out_rx, in_tx));
    let runtime = tokio::spawn(member.clone().run(in_rx));
    Ok((member, ClusterTasks(vec![transport, runtime])))
}

/// Without the `corosync` feature a `[cluster]` section cannot be honoured.
#[cfg(not(feature = "corosync"))]
pub fn start(_engine: Engine, _cluster: ClusterConfig) -> Result<(Cluster, ClusterTasks), String> {
    Err("this fenced was built without the `corosync` feature, so it cannot join a fencer cluster; remove [cluster] from the config, or install a build with the feature (and Debian's libcpg/libquorum)".into())
}

/// A claim's delivered decision: the operation it started or joined (and whether it joined).
type Decision = Result<(OpKey, bool), state::Refusal>;

struct Runtime {
    member: Option<Member>,
    quorate: bool,
    lost: Option<String>,
    next_claim: u64,
    decisions: HashMap<OpKey, oneshot::Sender<Decision>>,
    /// Engine ids of operations this member executes, by cluster operation.
    local_ids: HashMap<OpKey, u64>,
    /// Ids given to callers for operations executed elsewhere.
    remote_ids: BTreeMap<u64, (OpKey, Caller, Millis)>,
    next_remote: u64,
    confirms: HashMap<String, oneshot::Sender<Result<String, OpKey>>>,
    /// This member's next manual confirmation number.
    next_confirm: u64,
}

struct Shared {
    engine: Engine,
    cluster: ClusterConfig,
    hello: Hello,
    out: mpsc::UnboundedSender<Message>,
    rt: Mutex<Runtime>,
    /// Bumped after every delivered item, so waiters re-read the state.
    version: watch::Sender<u64>,
    /// Copies of agreed operations for this member's history, in delivery order, to the
    /// history writer ([`Cluster::write_copies`]).
    copies: mpsc::UnboundedSender<Vec<Operation>>,
    /// The writer's end, taken when [`Cluster::run`] starts.
    copies_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Operation>>>>,
}

impl Shared {
    fn rt(&self) -> MutexGuard<'_, Runtime> {
        self.rt.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// This member's face to the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

fn cluster_err(code: &'static str, detail: String) -> EngineError {
    EngineError::Cluster { code, detail }
}

impl Cluster {
    /// A member over `engine`; `out` carries its messages to the transport, and the returned
    /// sender takes what the transport delivers (spawn nothing else: [`Cluster::run`] is the
    /// loop).
    pub fn new(
        engine: Engine,
        cluster: ClusterConfig,
        out: mpsc::UnboundedSender<Message>,
    ) -> Cluster {
        let hello = hello_of(engine.config(), &cluster);
        let (version, _) = watch::channel(0);
        let (copies, copies_rx) = mpsc::unbounded_channel();
        Cluster {
            shared: Arc::new(Shared {
                engine,
                cluster,
                hello,
                out,
                rt: Mutex::new(Runtime {
                    member: None,
                    quorate: false,
                    lost: None,
                    next_claim: first_number(std::time::SystemTime::now()),
                    decisions: HashMap::new(),
                    local_ids: HashMap::new(),
                    remote_ids: BTreeMap::new(),
                    next_remote: REMOTE_ID_BASE,
                    confirms: HashMap::new(),
                    next_confirm: first_number(std::time::SystemTime::now()),
                }),
                version,
                copies,
                copies_rx: Mutex::new(Some(copies_rx)),
            }),
        }
    }

    fn send(&self, m: Message) {
        // The transport's loop ends only when the daemon stops; a send then is moot.
        let _ = self.shared.out.send(m);
    }

    /// Applies what the transport delivers until it closes.
    pub async fn run(self, mut incoming: mpsc::UnboundedReceiver<Incoming>) {
        let rx = self
            .shared
            .copies_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let writer = rx.map(|rx| tokio::spawn(self.clone().write_copies(rx)));
        // The writer ends with this loop (its sender lives in `Shared`, which outlives it).
        let _writer = writer.map(AbortOnDrop);
        while let Some(i) = incoming.recv().await {
            self.handle(i);
        }
        self.shared.rt().lost = Some("the cluster transport stopped".into());
        self.shared.version.send_modify(|v| *v += 1);
    }

    /// The history writer: persists copies in delivery order (one at a time, so one
    /// operation is never copied twice), each batch with whatever else is queued by then, and
    /// wakes waiters once they are durable.
    async fn write_copies(self, mut rx: mpsc::UnboundedReceiver<Vec<Operation>>) {
        while let Some(mut copies) = rx.recv().await {
            while let Ok(more) = rx.try_recv() {
                copies.extend(more);
            }
            match self.shared.engine.record_cluster_copies(copies).await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(ids = ?ids, "cluster: recorded operations agreed in the cluster in this member's history")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(
                    "cluster: could not record agreed operations in this member's history: {e}; its `fence_node history` lacks them, and this member reports them still running, until they are delivered again (at the next rejoin)"
                ),
            }
            self.shared.version.send_modify(|v| *v += 1);
        }
    }

    fn handle(&self, i: Incoming) {
        match i {
            Incoming::Joined(me) => {
                let mut rt = self.shared.rt();
                rt.member = Some(Member::new(me));
                rt.lost = None;
            }
            Incoming::Quorum(q) => {
                self.shared.rt().quorate = q;
                self.send(Message::Quorum { quorate: q });
            }
            Incoming::Lost(why) => {
                tracing::error!("cluster: {why}");
                let mut rt = self.shared.rt();
                rt.lost = Some(why);
                rt.member = None;
                // Callers waiting for a decision learn it will not come.
                rt.decisions.clear();
            }
            Incoming::Delivered(d) => self.deliver(&d),
        }
        self.shared.version.send_modify(|v| *v += 1);
    }

    fn deliver(&self, d: &Delivered) {
        let (me, fx, quorate, copies, holds_state) = {
            let mut rt = self.shared.rt();
            let quorate = rt.quorate;
            let Some(member) = rt.member.as_mut() else {
                return;
            };
            let me = member.me;
            let was_synced = member.synced;
            let fx = member.apply(d);
            // A heal merged another partition's state: like a rejoiner, this member copies
            // what it lacks (the engine skips what its history already holds).
            let merged = fx.iter().any(|e| matches!(e, Effect::Merged { .. }));
            if let Some(Effect::Merged { sides }) =
                fx.iter().find(|e| matches!(e, Effect::Merged { .. }))
            {
                tracing::info!(sides, ops = member.state.ops.len(), "cluster: merged the states of partitions that healed; copying what this member lacks into its history");
            }
            let caught_up = (member.synced && !was_synced) || merged;
            // What this member must hold in its own history: every operation that finished
            // now, and, when it just adopted a snapshot (it rejoined) or merged a healed
            // partition's, every finished one the state holds (those it missed).
            let finished: Vec<OpKey> = if caught_up {
                member
                    .state
                    .ops
                    .values()
                    .filter(|o| o.phase != OpPhase::Running)
                    .map(|o| o.key)
                    .collect()
            } else {
                fx.iter()
                    .filter_map(|e| match e {
                        Effect::Finished { op } => Some(*op),
                        _ => None,
                    })
                    .collect()
            };
            let mut copies: Vec<Operation> = finished
                .iter()
                .filter_map(|k| member.state.ops.get(k))
                .map(history_copy)
                .collect();
            // Manual confirmations agreed now (or, for a rejoiner, those its snapshot's log
            // still holds) are copied too; this member's own are recorded by `confirm`.
            let confirmed: Vec<String> = if caught_up {
                member
                    .state
                    .log
                    .iter()
                    .filter_map(|r| match r {
                        state::Record::ManualConfirm { key: Some(k), .. } => Some(k.clone()),
                        _ => None,
                    })
                    .collect()
            } else {
                fx.iter()
                    .filter_map(|e| match e {
                        Effect::ManualConfirmed {
                            from,
                            result: Ok(k),
                            ..
                        } if *from != me => Some(k.clone()),
                        _ => None,
                    })
                    .collect()
            };
            let mine = format!("{me}#");
            for k in confirmed.iter().filter(|k| !k.starts_with(&mine)) {
                let record = member.state.log.iter().rev().find(
                    |r| matches!(r, state::Record::ManualConfirm { key: Some(x), .. } if x.as_str() == k.as_str()),
                );
                if let Some(r) = record {
                    copies.extend(confirmation_copy(r));
                }
            }
            (me, fx, quorate, copies, member.synced)
        };
        if !copies.is_empty() {
            // Off this thread and off every lock: the history writer commits them (fsync) while
            // deliveries go on. A member's copy is durable once the writer has committed it;
            // until then this member reports the operation as still running (see `view`).
            let _ = self.shared.copies.send(copies);
        }
        // Whenever anyone joins, everyone announces itself again (a joiner's view of the
        // others is reset on every member); after any change everyone says its quorum again
        // (the state forgets every member's quorum when members leave).
        if let Delivered::Membership { joined, .. } = d {
            if !joined.is_empty() {
                // Whether the others must wait for this member's side's snapshot to merge.
                self.send(Message::Hello(Hello {
                    holds_state,
                    ..self.shared.hello.clone()
                }));
            }
            self.send(Message::Quorum { quorate });
        }
        for e in fx {
            match e {
                Effect::Decided { claim, result } if claim.origin == me => {
                    if let Some(tx) = self.shared.rt().decisions.remove(&claim) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Execute {
                    op,
                    executor,
                    takeover,
                } if executor == me => {
                    let c = self.clone();
                    tokio::spawn(async move { c.execute(op, takeover).await });
                }
                Effect::SendSync {
                    sender,
                    for_members,
                    snapshot,
                } if sender == me => self.send(Message::Sync {
                    for_members,
                    snapshot,
                }),
                Effect::ManualConfirmed {
                    from,
                    target,
                    result,
                } if from == me => {
                    if let Some(tx) = self.shared.rt().confirms.remove(&target) {
                        let _ = tx.send(result);
                    }
                }
                _ => {}
            }
        }
    }

    fn op(&self, key: &OpKey) -> Option<ClusterOp> {
        self.shared
            .rt()
            .member
            .as_ref()
            .and_then(|m| m.state.ops.get(key).cloned())
    }

    /// Runs an operation the cluster gave this member, on its engine, and reports back. A
    /// takeover reads the target back first: if it already is as wanted, that read-back is
    /// the confirmation and no command is sent.
    async fn execute(&self, key: OpKey, takeover: bool) {
        let Some(op) = self.op(&key) else { return };
        let engine = &self.shared.engine;
        if takeover && op.action == Action::Off {
            if let Ok(s) = engine.target_detail(&op.target, true).await {
                if let Some(proof) = live_proof(&s) {
                    tracing::info!(op = %key, target = %op.target, "cluster takeover: read back off before any command");
                    self.send(Message::Confirmed { op: key, proof });
                    self.send(Message::Outcome {
                        op: key,
                        result: ExecResult::Succeeded {
                            summary: format!(
                                "{} read back off by {} after it took the operation over",
                                op.target, self.shared.cluster.node_name
                            ),
                        },
                        record: None,
                    });
                    return;
                }
            }
        }
        let by = Requester {
            caller: Caller {
                identity: format!("cluster:{}", key.origin),
            },
            source: format!("cpg:{}", self.shared.cluster.group),
        };
        let req = FenceRequest {
            target: op.target.clone(),
            action: op.action,
            reason: format!("cluster operation {key}: {}", op.reason),
            request_id: None,
            timeout_s: None,
        };
        let origin = ClusterOrigin {
            op: key.to_string(),
            origin: op.origin_name.clone(),
            executor: self.shared.cluster.node_name.clone(),
        };
        let accepted = match engine.fence_as(req, &by, Some(Box::new(origin))).await {
            Ok(a) => a,
            Err(e) => {
                self.send(Message::Outcome {
                    op: key,
                    result: ExecResult::Failed {
                        code: e.code().into(),
                        message: format!(
                            "{} NOT fenced: executor {} refused it: {e} ({})",
                            op.target,
                            self.shared.cluster.node_name,
                            e.hint()
                        ),
                    },
                    record: None,
                });
                return;
            }
        };
        self.shared.rt().local_ids.insert(key, accepted.id);
        self.shared.version.send_modify(|v| *v += 1);
        self.send(Message::Started {
            op: key,
            local_id: accepted.id,
        });
        let done = loop {
            match engine
                .wait_operation(accepted.id, Duration::from_secs(30))
                .await
            {
                Ok(o) if o.state.is_terminal() => break Ok(o),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        let (result, record) = match done {
            Ok(o) => match &o.outcome {
                Some(Outcome::Succeeded {
                    confirmation,
                    summary,
                    ..
                }) => match proof_of(confirmation) {
                    Some(proof) => {
                        self.send(Message::Confirmed { op: key, proof });
                        (
                            ExecResult::Succeeded {
                                summary: summary.clone(),
                            },
                            Some(Box::new(o.clone())),
                        )
                    }
                    None => (
                        ExecResult::Failed {
                            code: "no_read_back".into(),
                            message: format!(
                                "{} NOT confirmed fenced by the cluster: the executor's success was not a device read-back ({summary})",
                                op.target
                            ),
                        },
                        Some(Box::new(o.clone())),
                    ),
                },
                Some(Outcome::Failed { code, message }) => (
                    ExecResult::Failed {
                        code: code.clone(),
                        message: message.clone(),
                    },
                    Some(Box::new(o.clone())),
                ),
                None => (
                    ExecResult::Failed {
                        code: "no_outcome".into(),
                        message: format!("{} NOT fenced: the executor's operation ended without an outcome", op.target),
                    },
                    Some(Box::new(o.clone())),
                ),
            },
            Err(e) => (
                ExecResult::Failed {
                    code: e.code().into(),
                    message: format!("{} NOT confirmed fenced: {e}", op.target),
                },
                None,
            ),
        };
        self.send(Message::Outcome {
            op: key,
            result,
            record,
        });
    }

    /// A fence request arriving at this member: claimed through CPG, answered from what was
    /// delivered. An operation this member executes answers with its engine id; one executed
    /// elsewhere with an id above [`REMOTE_ID_BASE`] that [`Cluster::operation`] follows.
    pub async fn fence(
        &self,
        req: FenceRequest,
        by: &Requester,
    ) -> Result<FenceAccepted, EngineError> {
        let engine = &self.shared.engine;
        let Some(target) = engine.config().targets.get(&req.target) else {
            return Err(EngineError::UnknownTarget {
                target: req.target.clone(),
            });
        };
        let levels: Vec<Vec<String>> = target
            .levels
            .iter()
            .map(|l| l.iter().map(|e| e.device.clone()).collect())
            .collect();
        let (key, rx) = {
            let mut rt = self.shared.rt();
            if let Some(why) = &rt.lost {
                return Err(cluster_err(
                    "cluster_lost",
                    format!("this member is not in the cluster ({why}); check corosync on this node (`corosync-cfgtool -s`)"),
                ));
            }
            let Some(me) = rt.member.as_ref().filter(|m| m.synced).map(|m| m.me) else {
                return Err(cluster_err(
                    "cluster_joining",
                    "this member is still joining the cluster; retry in a moment".into(),
                ));
            };
            // The state would refuse it too; refusing here spares a round through CPG.
            if !rt.quorate && !self.shared.cluster.allow_without_quorum {
                return Err(cluster_err(
                    "no_quorum",
                    format!("{} has no quorum: new operations are refused in a partition without quorum; heal the partition, or after checking the node is off confirm by hand (`fence_node confirm`)", self.shared.cluster.node_name),
                ));
            }
            let n = rt.next_claim;
            rt.next_claim += 1;
            let key = OpKey {
                origin: me,
                origin_op: n,
            };
            let (tx, rx) = oneshot::channel();
            rt.decisions.insert(key, tx);
            (key, rx)
        };
        self.send(Message::Claim(Claim {
            origin_op: key.origin_op,
            target: req.target.clone(),
            action: req.action,
            request_id: req.request_id.clone(),
            levels,
            reason: req.reason.clone(),
        }));
        let decided = tokio::time::timeout(DELIVERY_TIMEOUT, rx).await;
        let (op_key, joined) = match decided {
            Ok(Ok(Ok(d))) => d,
            Ok(Ok(Err(r))) => return Err(cluster_err(r.code(), r.to_string())),
            Ok(Err(_)) | Err(_) => {
                self.shared.rt().decisions.remove(&key);
                return Err(cluster_err(
                    "cluster_timeout",
                    format!("the claim was not delivered back through Corosync within {} s; check `corosync-cfgtool -s` and `corosync-quorumtool`", DELIVERY_TIMEOUT.as_secs()),
                ));
            }
        };
        let Some(op) = self.op(&op_key) else {
            return Err(cluster_err(
                "cluster_state",
                format!("cluster operation {op_key} left this member's state before it could be answered; see `fence_node history`"),
            ));
        };
        if op.executor == key.origin && op.phase == OpPhase::Running {
            // This member executes: answer with its engine's id once the engine accepted it.
            let mut v = self.shared.version.subscribe();
            let found = tokio::time::timeout(DELIVERY_TIMEOUT, async {
                loop {
                    if let Some(id) = self.shared.rt().local_ids.get(&op_key).copied() {
                        return Some(id);
                    }
                    if self.op(&op_key).is_none_or(|o| o.phase != OpPhase::Running) {
                        return None;
                    }
                    if v.changed().await.is_err() {
                        return None;
                    }
                }
            })
            .await;
            if let Ok(Some(id)) = found {
                let state = engine.operation(id).map(|o| o.state)?;
                return Ok(FenceAccepted { id, state, joined });
            }
        }
        let id = {
            let mut rt = self.shared.rt();
            let id = rt.next_remote;
            rt.next_remote += 1;
            let now = now_ms();
            rt.remote_ids.insert(id, (op_key, by.caller.clone(), now));
            // Bounded: the oldest answers are forgotten first.
            while rt.remote_ids.len() > 4096 {
                rt.remote_ids.pop_first();
            }
            id
        };
        let state = self.view(id).map_or(OpState::Running, |o| o.state);
        Ok(FenceAccepted { id, state, joined })
    }

    /// An operation this member answered with a remote id, as the cluster knows it.
    fn view(&self, id: u64) -> Option<Operation> {
        let (key, caller, created) = self.shared.rt().remote_ids.get(&id).cloned()?;
        let op = self.op(&key)?;
        let mut view = remote_operation(id, &op, caller, created);
        // An outcome is told only once this member's copy is in its ledger: a caller told
        // "fenced" (or "failed") here finds the same in `fence_node history` after a crash.
        if view.state.is_terminal()
            && !self
                .shared
                .engine
                .has_cluster_record(&key.to_string())
                .unwrap_or(false)
        {
            view.state = OpState::Running;
            view.outcome = None;
            view.finished_ms = None;
        }
        Some(view)
    }

    /// `GET /v1/operations/{id}` for ids this member gave out for remote execution: `None`
    /// for any other id (the engine answers those). Waits up to `wait` for the outcome.
    pub async fn operation(
        &self,
        id: u64,
        wait: Duration,
    ) -> Option<Result<Operation, EngineError>> {
        if id < REMOTE_ID_BASE {
            return None;
        }
        let mut v = self.shared.version.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(op) = self.view(id) else {
                return Some(Err(EngineError::UnknownOperation { id }));
            };
            if op.state.is_terminal() {
                return Some(Ok(op));
            }
            match tokio::time::timeout_at(deadline, v.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Some(Ok(op)),
            }
        }
    }

    /// This member's view for `fence_node status` and `/metrics`.
    pub fn status(&self) -> ClusterStatus {
        let rt = self.shared.rt();
        let (joined, members, in_flight) = match &rt.member {
            Some(m) => (
                m.synced,
                m.state
                    .members
                    .iter()
                    .map(|(id, i)| {
                        i.hello
                            .as_ref()
                            .map_or_else(|| id.to_string(), |h| h.name.clone())
                    })
                    .collect(),
                m.state
                    .active
                    .values()
                    .filter_map(|k| m.state.ops.get(k))
                    .map(|o| ClusterInFlight {
                        op: o.key.to_string(),
                        target: o.target.clone(),
                        action: o.action,
                        executor: o.executor_name.clone(),
                        takeovers: o.takeovers,
                    })
                    .collect(),
            ),
            None => (false, Vec::new(), Vec::new()),
        };
        ClusterStatus {
            group: self.shared.cluster.group.clone(),
            node_name: self.shared.cluster.node_name.clone(),
            joined,
            quorate: rt.quorate,
            allow_without_quorum: self.shared.cluster.allow_without_quorum,
            members,
            in_flight,
            lost: rt.lost.clone(),
        }
    }

    /// An operator's manual confirmation that `target` is off, agreed cluster-wide (refused
    /// while a cluster operation on it is in flight; not gated by quorum), then recorded in
    /// this member's own signed history as the engine records any confirmation.
    pub async fn confirm(
        &self,
        target: &str,
        reason: &str,
        by: &Requester,
    ) -> Result<Operation, EngineError> {
        {
            let rx = {
                let mut rt = self.shared.rt();
                if rt.lost.is_some() && !rt.quorate {
                    // Out of the group for want of quorum: an operator's confirmation stays
                    // possible (audited in this member's signed history), as Pacemaker allows.
                    drop(rt);
                    tracing::warn!(%target, "manual confirmation without quorum: recorded on this member only; the other members learn of it only from this node's history");
                    return self.shared.engine.confirm(target, reason, by);
                }
                if rt.member.as_ref().is_none_or(|m| !m.synced) {
                    return Err(cluster_err(
                        "cluster_joining",
                        format!("this member is not in the cluster yet ({}); retry in a moment, or check corosync on this node", rt.lost.clone().unwrap_or_else(|| "joining".into())),
                    ));
                }
                let (tx, rx) = oneshot::channel();
                rt.confirms.insert(target.to_string(), tx);
                let n = rt.next_confirm;
                rt.next_confirm += 1;
                (rx, n)
            };
            let (rx, confirm) = rx;
            self.send(Message::ManualConfirm {
                target: target.to_string(),
                by: by.caller.identity.clone(),
                reason: reason.to_string(),
                confirm,
            });
            match tokio::time::timeout(DELIVERY_TIMEOUT, rx).await {
                // Agreed: recorded here with its cluster key; every other member copies it.
                Ok(Ok(Ok(key))) => self.shared.engine.confirm_as(
                    target,
                    reason,
                    by,
                    Some(Box::new(ClusterOrigin {
                        op: key,
                        origin: self.shared.cluster.node_name.clone(),
                        executor: self.shared.cluster.node_name.clone(),
                    })),
                ),
                Ok(Ok(Err(op))) => Err(cluster_err(
                    "conflict",
                    format!("cluster operation {op} on {target} is in flight; wait for it to finish before confirming by hand"),
                )),
                Ok(Err(_)) | Err(_) => {
                    self.shared.rt().confirms.remove(target);
                    Err(cluster_err(
                        "cluster_timeout",
                        format!("the confirmation was not delivered back through Corosync within {} s; check `corosync-cfgtool -s`", DELIVERY_TIMEOUT.as_secs()),
                    ))
                }
            }
        }
    }

    /// `GET /v1/cluster`.
    pub fn cluster_view(&self) -> ClusterView {
        let (history, history_dropped) = self.log();
        ClusterView {
            status: Some(self.status()),
            history,
            history_dropped,
        }
    }

    /// The shared history as delivered to this member (its newest records), and how many
    /// older records fell out of it.
    pub fn log(&self) -> (Vec<state::Record>, u64) {
        self.shared
            .rt()
            .member
            .as_ref()
            .map(|m| (m.state.log.iter().cloned().collect(), m.state.log.dropped()))
            .unwrap_or_default()
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The cluster's proof from an engine confirmation; a manual one is not a device read-back.
fn proof_of(c: &Confirmation) -> Option<Proof> {
    match c {
        Confirmation::PowerReadBack { level, devices, .. } => Some(Proof::PowerReadBack {
            detail: format!("level {level}: {}", devices.join(", ")),
        }),
        Confirmation::PoisonPill {
            level,
            devices,
            msgwait_ms,
        } => Some(Proof::PoisonPill {
            detail: format!(
                "level {level}: {} (msgwait {msgwait_ms} ms)",
                devices.join(", ")
            ),
        }),
        Confirmation::SlotCleared { level, devices, .. } => Some(Proof::SlotCleared {
            detail: format!("level {level}: {}", devices.join(", ")),
        }),
        Confirmation::Manual { .. } => None,
    }
}

/// A takeover's read-back: every device of some level read the target off just now.
fn live_proof(s: &TargetSummary) -> Option<Proof> {
    let live = s.live.as_ref()?;
    let mut levels: BTreeMap<u32, Vec<&LivePower>> = BTreeMap::new();
    for p in live {
        levels.entry(p.level).or_default().push(p);
    }
    levels.into_iter().find_map(|(n, devs)| {
        devs.iter()
            .all(|d| d.state == Some(drivers::PowerState::Off))
            .then(|| Proof::PowerReadBack {
                detail: format!(
                    "level {n}: {} read back off",
                    devs.iter()
                        .map(|d| d.device.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    })
}

/// This member's history record of a manual confirmation another member took: a succeeded
/// `off` confirmed by the operator, tagged with the confirmation's cluster key and the member
/// it was entered on (as origin and executor).
fn confirmation_copy(r: &state::Record) -> Option<Operation> {
    let state::Record::ManualConfirm {
        target,
        by,
        reason,
        on,
        key: Some(key),
    } = r
    else {
        return None;
    };
    let now = now_ms();
    Some(Operation {
        id: 0,
        target: target.clone(),
        action: Action::Off,
        reason: reason.clone(),
        requested_by: Caller {
            identity: by.clone(),
        },
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
                by: by.clone(),
                reason: reason.clone(),
            },
            powered_on: None,
            summary: format!("{target} confirmed off by hand by {by} on {on}: {reason}"),
        }),
        cluster: Some(Box::new(ClusterOrigin {
            op: key.clone(),
            origin: on.clone(),
            executor: on.clone(),
        })),
    })
}

/// The first claim (and confirmation) number of this fenced process: the wall clock in
/// microseconds, so that every life of a member numbers its operations above its earlier lives.
///
/// Why not 1: an operation's key is (Corosync node id, pid, number), and a restarted fenced can
/// get its old pid back (PID 1 of a container; a fresh PID namespace, as the lab's power-on makes;
/// pid wrap). Numbers that restarted at 1 gave new operations the keys of the last life's, and
/// every member that already held a record under such a key took the new operation for a copy it
/// had (the five-node chaos test found a rejoined member missing six succeeded operations). The
/// clock holds as long as it does not step back across a restart by more than the time between
/// them (a board without a real-time clock keeps its time across reboots with fake-hwclock or
/// systemd-timesyncd's saved clock, both in Debian); at one claim per microsecond a life would
/// have to claim for longer than it lived to reach the next life's numbers.
fn first_number(now: std::time::SystemTime) -> u64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .max(1)
}

/// This member's history record of a finished cluster operation: the cluster's view of it
/// (the executor's attempts and outcome, the cluster's phase), tagged with the cluster
/// operation, its origin and its executor; the id is given when it is stored.
fn history_copy(op: &ClusterOp) -> Operation {
    let created = op.record.as_ref().map_or_else(now_ms, |r| r.created_ms);
    let caller = Caller {
        identity: format!("cluster:{}", op.key.origin),
    };
    let mut copy = remote_operation(0, op, caller, created);
    copy.cluster = Some(Box::new(ClusterOrigin {
        op: op.key.to_string(),
        origin: op.origin_name.clone(),
        executor: op.executor_name.clone(),
    }));
    copy
}

/// A remote operation as this member shows it: the executor's record when it sent one, with
/// the state and outcome always the cluster's (a success only after the executor's read-back).
fn remote_operation(id: u64, op: &ClusterOp, caller: Caller, created: Millis) -> Operation {
    let base = op.record.as_deref().cloned();
    let state = match op.phase {
        OpPhase::Running => OpState::Running,
        OpPhase::Succeeded => OpState::Succeeded,
        OpPhase::Failed => OpState::Failed,
    };
    let outcome = match (
        &op.phase,
        &op.result,
        base.as_ref().and_then(|b| b.outcome.clone()),
    ) {
        (OpPhase::Running, _, _) => None,
        (OpPhase::Succeeded, _, Some(o @ Outcome::Succeeded { .. })) => Some(o),
        // The executor sent no record (a takeover confirmed by its read-back alone): the
        // confirmation is the kind its proof says, with the proof's words as the device.
        (OpPhase::Succeeded, Some(ExecResult::Succeeded { summary }), _) => {
            let confirmation = match &op.proof {
                Some(Proof::PowerReadBack { detail }) => Some(Confirmation::PowerReadBack {
                    level: 0,
                    devices: vec![detail.clone()],
                    already: false,
                }),
                Some(Proof::PoisonPill { detail }) => Some(Confirmation::PoisonPill {
                    level: 0,
                    devices: vec![detail.clone()],
                    msgwait_ms: 0,
                }),
                Some(Proof::SlotCleared { detail }) => Some(Confirmation::SlotCleared {
                    level: 0,
                    devices: vec![detail.clone()],
                }),
                None => None,
            };
            Some(match confirmation {
                Some(confirmation) => Outcome::Succeeded {
                    confirmation,
                    powered_on: None,
                    summary: summary.clone(),
                },
                // The state never lets this happen (no proof, no success); say so if it did.
                None => Outcome::Failed {
                    code: "no_read_back".into(),
                    message: format!("{} NOT confirmed fenced: the cluster recorded a success without a read-back; check the node's power by hand", op.target),
                },
            })
        }
        (_, Some(ExecResult::Failed { code, message }), _) => Some(Outcome::Failed {
            code: code.clone(),
            message: message.clone(),
        }),
        _ => Some(Outcome::Failed {
            code: "cluster_state".into(),
            message: format!(
                "{} NOT confirmed fenced: no outcome was delivered",
                op.target
            ),
        }),
    };
    let (attempts, witnesses) = base
        .as_ref()
        .map(|b| (b.attempts.clone(), b.witnesses.clone()))
        .unwrap_or_default();
    Operation {
        id,
        target: op.target.clone(),
        action: op.action,
        reason: op.reason.clone(),
        requested_by: caller,
        request_id: op.request_id.clone(),
        state,
        created_ms: created,
        started_ms: base.as_ref().and_then(|b| b.started_ms).or(Some(created)),
        finished_ms: if state.is_terminal() {
            base.as_ref().and_then(|b| b.finished_ms).or(Some(now_ms()))
        } else {
            None
        },
        delay_ms: base.as_ref().map_or(0, |b| b.delay_ms),
        // The executor's witness reports travel with its attempts: the proof it read back.
        attempts,
        witnesses,
        pending: Vec::new(),
        outcome,
        // The executor's record names the cluster operation; a copy is tagged by its caller.
        cluster: base.and_then(|b| b.cluster),
    }
}

#[cfg(test)]
mod tests {
    use super::first_number;
    use std::time::{Duration, UNIX_EPOCH};

    /// A fenced restarted with its old pid must not reuse the last life's operation keys: a
    /// later life starts above every number the earlier one could have claimed at up to one
    /// claim per microsecond, and never at 0 (the keys start at 1 before 1970 too).
    #[test]
    fn a_later_life_numbers_its_operations_above_an_earlier_lifes() {
        let first_life = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let lived = Duration::from_secs(3600);
        let claimed = u64::try_from(lived.as_micros()).unwrap();
        for gap in [
            Duration::from_micros(1),
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        ] {
            let start = first_number(first_life);
            let next_life = first_number(first_life + lived + gap);
            assert!(
                next_life > start + claimed - 1,
                "a life {gap:?} after the last ended starts at {next_life}, inside the last life's numbers {start}..{}",
                start + claimed
            );
        }
        assert_eq!(first_number(UNIX_EPOCH), 1);
        assert_eq!(first_number(UNIX_EPOCH - Duration::from_secs(5)), 1);
    }
}
