//! The agreement core: every member's view of the cluster, derived only from the sequence CPG
//! delivers (the same sequence, in the same order, on every member: Corosync's total order and
//! virtual synchrony). No I/O and no clock: [`ClusterState::apply`] takes one delivered item and
//! answers with the [`Effect`]s it implies; the Corosync binding does the sending, the device
//! work and the answering. Because every decision is a function of the delivered sequence, two
//! members never disagree about which operation owns a target or who executes it.
//!
//! Rules (DESIGN.md "fence daemon on each node", issue 16):
//! - one operation per target cluster-wide: a claim for the same action joins it, another
//!   action is refused, wherever each arrives; request ids are cluster-wide;
//! - the executor is the originator when it reaches a device of the level, else the lowest
//!   member that does, never the target itself; when no member does, the claim is refused;
//! - an executor that leaves mid-operation hands over to the next such member, which must
//!   deliver a read-back of its own before a success counts; with none left, the operation is
//!   recorded failed;
//! - a claim from a member without quorum is refused (unless that member's config explicitly
//!   allows it); a manual confirmation is not gated;
//! - members must agree on a target's definition (its digest) or the target is refused.

use crate::model::Action;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A CPG member: Corosync node id and the fenced process id (a restarted fenced is a new member).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub struct MemberId {
    /// Corosync node id.
    pub node: u32,
    /// Process id of the member's fenced.
    pub pid: u32,
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.pid)
    }
}

/// A cluster operation's key: the member whose claim started it and that member's claim number.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub struct OpKey {
    /// The member that sent the claim.
    pub origin: MemberId,
    /// The origin's own number for the claim.
    pub origin_op: u64,
}

impl fmt::Display for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.origin, self.origin_op)
    }
}

/// What a member announces about itself when it joins (and again when others join).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The member's node name as Corosync knows it (and as targets are named).
    pub name: String,
    /// Devices this member can reach.
    pub reaches: BTreeSet<String>,
    /// Digest of each target's definition in this member's config.
    pub digests: BTreeMap<String, String>,
    /// This member's config allows new operations without quorum (dangerous).
    pub allow_without_quorum: bool,
    /// The sender held a cluster state when it sent this (it was in a partition that kept
    /// the group): the others wait for its side's snapshot and merge it. `false` from a
    /// fenced that just started (it holds nothing to merge) and from one that never says.
    #[serde(default)]
    pub holds_state: bool,
}

/// A request to own a target for an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The origin's number for this claim (unique per origin).
    pub origin_op: u64,
    /// The target.
    pub target: String,
    /// The action.
    pub action: Action,
    /// The caller's idempotency key, cluster-wide.
    pub request_id: Option<String>,
    /// The devices of each level of the target, in order (from the origin's config, whose
    /// digest every member checks).
    pub levels: Vec<Vec<String>>,
    /// Why (recorded with the operation).
    pub reason: String,
}

/// How an executor confirmed the target's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Proof {
    /// A device read the power state back.
    PowerReadBack {
        /// Which devices, as the executor's engine reported.
        detail: String,
    },
    /// A poison pill was written, read back, and msgwait elapsed.
    PoisonPill {
        /// Which disks and how long.
        detail: String,
    },
    /// For `on` through SBD: the slot was cleared and read back.
    SlotCleared {
        /// Which disks.
        detail: String,
    },
}

/// What an executor reports at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ExecResult {
    /// Done; only counted after a [`Message::Confirmed`] from the same executor.
    Succeeded {
        /// The executor's summary.
        summary: String,
    },
    /// Not done.
    Failed {
        /// Stable code.
        code: String,
        /// What happened and what to do.
        message: String,
    },
}

/// One message multicast in the CPG group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The sender's description of itself.
    Hello(Hello),
    /// The sender's node gained or lost quorum.
    Quorum {
        /// Whether it is quorate.
        quorate: bool,
    },
    /// The sender asks to own a target.
    Claim(Claim),
    /// The executor started the operation on its engine (its local operation id).
    Started {
        /// The cluster operation.
        op: OpKey,
        /// The executor's engine operation id.
        local_id: u64,
    },
    /// The executor read the target back in the wanted state.
    Confirmed {
        /// The cluster operation.
        op: OpKey,
        /// How.
        proof: Proof,
    },
    /// The executor's result.
    Outcome {
        /// The cluster operation.
        op: OpKey,
        /// What happened.
        result: ExecResult,
        /// The executor's engine record of it (attempts, outcome), shown by other members.
        record: Option<Box<crate::model::Operation>>,
    },
    /// An operator confirmed by hand that a target is off (not gated by quorum).
    ManualConfirm {
        /// The target.
        target: String,
        /// The operator.
        by: String,
        /// What they checked.
        reason: String,
        /// The sender's own number for it (unique per sender): with the sender, the key each
        /// member's copy is deduplicated by (0 from a fenced that sent none).
        #[serde(default)]
        confirm: u64,
    },
    /// A snapshot for members that just joined, sent by the lowest synced member.
    Sync {
        /// The members it is for.
        for_members: Vec<MemberId>,
        /// The state as of the membership change that brought them in.
        snapshot: Box<ClusterState>,
    },
}

/// One item in CPG's delivered sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivered {
    /// A message, with its sender as CPG reports it.
    Message {
        /// The sender.
        from: MemberId,
        /// The message.
        msg: Message,
    },
    /// A configuration change of the group.
    Membership {
        /// The members now.
        members: Vec<MemberId>,
        /// Of them, those that just joined.
        joined: Vec<MemberId>,
    },
}

/// Why a claim was refused.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
pub enum Refusal {
    /// Another operation with another action owns the target.
    #[error("target `{target}` already has cluster operation {running} ({action}) in flight, executed by {executor}; wait for it to finish, then retry")]
    Conflict {
        /// The target.
        target: String,
        /// The operation in flight.
        running: OpKey,
        /// Its action.
        action: Action,
        /// Its executor's name.
        executor: String,
    },
    /// The request id names another request.
    #[error("request_id `{request_id}` was used for cluster operation {op} on {target} ({action}); use a fresh request_id for a new request")]
    RequestIdMismatch {
        /// The id.
        request_id: String,
        /// Its operation.
        op: OpKey,
        /// That operation's target.
        target: String,
        /// That operation's action.
        action: Action,
    },
    /// The origin had no quorum when its claim was delivered.
    #[error("{member} has no quorum: new operations are refused in a partition without quorum (Pacemaker's rule); heal the partition, or confirm by hand with `fence_node confirm` after checking the node is off")]
    NoQuorum {
        /// The origin's name.
        member: String,
    },
    /// No member other than the target reaches a device of any level.
    #[error("no cluster member other than `{target}` reaches a device of any of its levels ({devices}); add `reaches` for those devices on a member, or bring such a member back")]
    NoExecutor {
        /// The target.
        target: String,
        /// The devices of its levels.
        devices: String,
    },
    /// Members define the target differently.
    #[error("members define target `{target}` differently ({groups}); make their configs agree (same levels, identities, delays) and restart the members that differ")]
    ConfigMismatch {
        /// The target.
        target: String,
        /// `digest-prefix: members` groups.
        groups: String,
    },
    /// The origin has not finished joining (no snapshot yet).
    #[error("{member} is still joining the cluster (waiting for a member's snapshot); retry in a moment")]
    NotSynced {
        /// The origin.
        member: MemberId,
    },
    /// The target is not defined on the origin.
    #[error("unknown target `{target}` on {member}; list targets with `fence_node status`")]
    UnknownTarget {
        /// The target.
        target: String,
        /// The origin's name.
        member: String,
    },
}

impl Refusal {
    /// A short stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Conflict { .. } => "conflict",
            Refusal::RequestIdMismatch { .. } => "request_id_mismatch",
            Refusal::NoQuorum { .. } => "no_quorum",
            Refusal::NoExecutor { .. } => "no_executor",
            Refusal::ConfigMismatch { .. } => "config_mismatch",
            Refusal::NotSynced { .. } => "cluster_joining",
            Refusal::UnknownTarget { .. } => "unknown_target",
        }
    }
}

/// A member as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its announcement, once delivered.
    pub hello: Option<Hello>,
    /// Its last delivered quorum state.
    pub quorate: bool,
    /// It said its quorum since the last change that reset it.
    #[serde(default)]
    pub quorum_known: bool,
    /// It holds the cluster's state (founder, or received a snapshot).
    pub synced: bool,
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum OpPhase {
    /// An executor is working on it.
    Running,
    /// Confirmed by the executor's read-back.
    Succeeded,
    /// Not done.
    Failed,
}

/// One cluster operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterOp {
    /// Its key.
    pub key: OpKey,
    /// The target.
    pub target: String,
    /// The action.
    pub action: Action,
    /// The request id of the claim that started it.
    pub request_id: Option<String>,
    /// The devices of each level.
    pub levels: Vec<Vec<String>>,
    /// Why.
    pub reason: String,
    /// The originating member's node name (absent in snapshots from before it was kept).
    #[serde(default)]
    pub origin_name: String,
    /// Who executes it now.
    pub executor: MemberId,
    /// The executor's name.
    pub executor_name: String,
    /// How many times another member took over.
    pub takeovers: u32,
    /// The current executor's engine operation id, once it said.
    pub local_id: Option<u64>,
    /// The current executor's confirmation, once delivered.
    pub proof: Option<Proof>,
    /// Where it stands.
    pub phase: OpPhase,
    /// The final word (summary or failure message).
    pub result: Option<ExecResult>,
    /// Claims that joined it (their origins answer from its outcome).
    pub joined: Vec<OpKey>,
    /// The final executor's engine record.
    pub record: Option<Box<crate::model::Operation>>,
}

/// One line of the shared history, appended in delivery order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Record {
    /// An operation was accepted.
    Accepted {
        /// Its key.
        op: OpKey,
        /// The target.
        target: String,
        /// The action.
        action: Action,
        /// The executor chosen.
        executor: String,
    },
    /// An executor left and another took over.
    TookOver {
        /// The operation.
        op: OpKey,
        /// The member that left.
        from: String,
        /// The new executor.
        to: String,
    },
    /// An operation finished.
    Finished {
        /// The operation.
        op: OpKey,
        /// Its phase (succeeded or failed).
        phase: OpPhase,
        /// Its proof, for a success.
        proof: Option<Proof>,
        /// The final word.
        result: ExecResult,
    },
    /// A claim was refused.
    Refused {
        /// The claim.
        claim: OpKey,
        /// The target.
        target: String,
        /// Why.
        refusal: Refusal,
    },
    /// An operator confirmed a target off by hand.
    ManualConfirm {
        /// The target.
        target: String,
        /// The operator.
        by: String,
        /// What they checked.
        reason: String,
        /// The member it was entered on.
        on: String,
        /// The cluster key of the confirmation (`node/pid#confirmN`), which each member's
        /// copy in its own history carries.
        #[serde(default)]
        key: Option<String>,
    },
    /// Two partitions that both kept the group healed and their states disagreed about a
    /// target: how the merge settled it (the same on every member).
    MergeConflict {
        /// The target.
        target: String,
        /// The operations involved.
        ops: Vec<OpKey>,
        /// What the merge kept and what still needs a read-back.
        resolution: String,
    },
}

/// What a delivered item implies; every member computes the same effects, and each acts on the
/// ones that concern it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A claim was decided: its origin answers its caller.
    Decided {
        /// The claim.
        claim: OpKey,
        /// The operation it started or joined (and whether it joined), or why not.
        result: Result<(OpKey, bool), Refusal>,
    },
    /// `executor` must run the operation (a takeover starts with a read-back).
    Execute {
        /// The operation.
        op: OpKey,
        /// Who.
        executor: MemberId,
        /// The previous executor left.
        takeover: bool,
    },
    /// The operation finished: the origins of its claims answer.
    Finished {
        /// The operation.
        op: OpKey,
    },
    /// `sender` must multicast this snapshot for the members that just joined.
    SendSync {
        /// Who sends it.
        sender: MemberId,
        /// For whom.
        for_members: Vec<MemberId>,
        /// The state at this point of the sequence.
        snapshot: Box<ClusterState>,
    },
    /// This member merged the states of partitions that healed (it now holds operations and
    /// confirmations it may lack in its own history); the effects of what was delivered
    /// meanwhile follow.
    Merged {
        /// How many partitions' states were merged.
        sides: usize,
    },
    /// A manual confirmation was recorded, or refused (`Err`) because an operation is in flight.
    ManualConfirmed {
        /// Who sent it.
        from: MemberId,
        /// The target.
        target: String,
        /// Recorded (with its cluster key: every member copies it into its own history), or
        /// the operation in flight.
        result: Result<String, OpKey>,
    },
}

/// Everything a member knows about the cluster. Equal on every synced member after the same
/// delivered sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The group's members now.
    #[serde(with = "pairs")]
    pub members: BTreeMap<MemberId, MemberInfo>,
    /// Operations by key (in flight and finished; finished ones stay for joins by request id).
    #[serde(with = "pairs")]
    pub ops: BTreeMap<OpKey, ClusterOp>,
    /// The operation in flight per target.
    pub active: BTreeMap<String, OpKey>,
    /// Request id -> operation.
    pub request_ids: BTreeMap<String, OpKey>,
    /// The newest operation per target.
    pub latest: BTreeMap<String, OpKey>,
    /// The shared history, in delivery order: the newest [`LOG_KEEP`] records.
    pub log: DeliveryLog,
}

/// How many records of the shared history a member keeps (and sends in each snapshot): the
/// log is in memory and travels whole in every `Sync` over CPG, so it is a ring. Each
/// member's own ledger (`GET /v1/history`) keeps every operation durably.
pub const LOG_KEEP: usize = 1024;

/// The shared history as a ring of its newest [`LOG_KEEP`] records, with the count of older
/// records that fell out. Both follow from the delivered sequence alone, so every synced
/// member (and every snapshot) holds the same ring and the same count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryLog {
    records: std::collections::VecDeque<Record>,
    dropped: u64,
}

impl DeliveryLog {
    /// Appends a record, dropping the oldest beyond [`LOG_KEEP`].
    pub fn push(&mut self, r: Record) {
        self.records.push_back(r);
        while self.records.len() > LOG_KEEP {
            self.records.pop_front();
            self.dropped += 1;
        }
    }

    /// The records kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Record> {
        self.records.iter()
    }

    /// How many records are kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No record is kept.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many older records fell out of the ring since the cluster was founded.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The cluster key of `from`'s manual confirmation number `n`: like an operation's
/// (`node/pid#…`), so one history index deduplicates both.
pub fn confirm_key(from: MemberId, n: u64) -> String {
    format!("{from}#confirm{n}")
}

/// Maps keyed by a struct ([`MemberId`], [`OpKey`]) as a list of pairs: JSON object keys
/// must be strings.
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// How many finished operations the state keeps (for request-id joins); older ones leave the
/// state (the shared log keeps their records) so a long-running cluster stays small.
const KEEP_FINISHED: usize = 1024;

impl ClusterState {
    /// Applies one delivered item.
    pub fn apply(&mut self, d: &Delivered) -> Vec<Effect> {
        match d {
            Delivered::Membership { members, joined } => self.membership(members, joined),
            Delivered::Message { from, msg } => self.message(*from, msg),
        }
    }

    fn name_of(&self, m: MemberId) -> String {
        self.members
            .get(&m)
            .and_then(|i| i.hello.as_ref())
            .map_or_else(|| m.to_string(), |h| h.name.clone())
    }

    fn membership(&mut self, members: &[MemberId], joined: &[MemberId]) -> Vec<Effect> {
        let mut fx = Vec::new();
        let now: BTreeSet<MemberId> = members.iter().copied().collect();
        let left: Vec<MemberId> = self
            .members
            .keys()
            .filter(|m| !now.contains(m))
            .copied()
            .collect();
        self.members.retain(|m, _| now.contains(m));
        for m in members {
            self.members.entry(*m).or_insert(MemberInfo {
                hello: None,
                quorate: false,
                quorum_known: false,
                synced: false,
            });
        }
        // After members left, nobody's quorum is known until it says it again (every member
        // re-announces after each change): a member cut off with the leavers must not have
        // its claims judged on the quorum it had before the split.
        if !left.is_empty() {
            for i in self.members.values_mut() {
                i.quorate = false;
                i.quorum_known = false;
            }
        }
        // A member listed as joining is new to the group, whatever it was before (a member
        // that restarts comes back with another pid; a node that returns after a partition
        // carries a state this side never saw, so it is not taken as synced).
        for j in joined {
            if let Some(i) = self.members.get_mut(j) {
                i.synced = false;
                i.hello = None;
                i.quorate = false;
                i.quorum_known = false;
            }
        }
        let synced: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, i)| i.synced)
            .map(|(m, _)| *m)
            .collect();
        if synced.is_empty() {
            // Nobody holds a state (the group was just formed, or every holder left before
            // sending its snapshot): everyone present founds the cluster from here.
            for i in self.members.values_mut() {
                i.synced = true;
            }
        } else {
            let fresh: Vec<MemberId> = self
                .members
                .iter()
                .filter(|(_, i)| !i.synced)
                .map(|(m, _)| *m)
                .collect();
            if !fresh.is_empty() {
                fx.push(Effect::SendSync {
                    sender: synced[0],
                    for_members: fresh,
                    snapshot: Box::new(self.clone()),
                });
            }
        }
        fx.extend(self.reassign_orphans());
        fx
    }

    /// Operations whose executor left: handed to the next member that reaches a device of
    /// a level and is quorate (or allowed without quorum), or recorded failed when no member
    /// can take them; never lost. A candidate whose quorum is not known yet (members just
    /// left, it has not said) is waited for: it says so right after every change.
    fn reassign_orphans(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        let orphaned: Vec<OpKey> = self
            .active
            .values()
            .filter(|k| {
                self.ops
                    .get(k)
                    .is_some_and(|o| !self.members.contains_key(&o.executor))
            })
            .copied()
            .collect();
        for key in orphaned {
            let Some(op) = self.ops.get(&key) else {
                continue;
            };
            let gone = op.executor_name.clone();
            let candidates: Vec<MemberId> = op
                .levels
                .iter()
                .flat_map(|l| {
                    self.members
                        .keys()
                        .filter(|m| self.can_execute(**m, &op.target, l))
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect();
            let next = op.levels.iter().find_map(|l| {
                self.members
                    .keys()
                    .find(|m| self.can_execute(**m, &op.target, l) && self.quorate_or_allowed(**m))
                    .copied()
            });
            let why = match next {
                Some(next) => {
                    let to = self.name_of(next);
                    if let Some(op) = self.ops.get_mut(&key) {
                        op.executor = next;
                        op.executor_name = to.clone();
                        op.takeovers += 1;
                        // The previous executor's read-back does not count for the new one:
                        // it must read the target back itself.
                        op.proof = None;
                        op.local_id = None;
                    }
                    self.log.push(Record::TookOver {
                        op: key,
                        from: gone,
                        to,
                    });
                    fx.push(Effect::Execute {
                        op: key,
                        executor: next,
                        takeover: true,
                    });
                    continue;
                }
                None if candidates.is_empty() => {
                    "no remaining member reaches a device of its levels".to_string()
                }
                None if candidates
                    .iter()
                    .all(|c| self.members.get(c).is_some_and(|i| i.quorum_known)) =>
                {
                    let names: BTreeSet<String> =
                        candidates.iter().map(|c| self.name_of(*c)).collect();
                    format!(
                        "the members that could take over ({}) have no quorum",
                        names.into_iter().collect::<Vec<_>>().join(", ")
                    )
                }
                // Some candidate has not said its quorum since the change: wait for it.
                None => continue,
            };
            let result = ExecResult::Failed {
                code: "executor_left".into(),
                message: format!(
                    "{} NOT confirmed fenced: its executor {gone} left the cluster mid-operation and {why}; check the node's power by hand, then fence again or confirm with `fence_node confirm`",
                    op.target
                ),
            };
            fx.extend(self.finish(key, OpPhase::Failed, result));
        }
        fx
    }

    fn message(&mut self, from: MemberId, msg: &Message) -> Vec<Effect> {
        // A member that left is not in this configuration; CPG does not deliver its later
        // messages, but a snapshot may lag: ignore anyone not a member.
        if !self.members.contains_key(&from) {
            return Vec::new();
        }
        match msg {
            Message::Hello(h) => {
                if let Some(i) = self.members.get_mut(&from) {
                    i.hello = Some(h.clone());
                }
                Vec::new()
            }
            Message::Quorum { quorate } => {
                if let Some(i) = self.members.get_mut(&from) {
                    i.quorate = *quorate;
                    i.quorum_known = true;
                }
                self.reassign_orphans()
            }
            Message::Claim(c) => self.claim(from, c),
            Message::Started { op, local_id } => {
                if let Some(o) = self.ops.get_mut(op) {
                    if o.executor == from && o.phase == OpPhase::Running {
                        o.local_id = Some(*local_id);
                    }
                }
                Vec::new()
            }
            Message::Confirmed { op, proof } => {
                if let Some(o) = self.ops.get_mut(op) {
                    if o.executor == from && o.phase == OpPhase::Running {
                        o.proof = Some(proof.clone());
                    }
                }
                Vec::new()
            }
            Message::Outcome { op, result, record } => {
                let Some(o) = self.ops.get(op) else {
                    return Vec::new();
                };
                if o.executor == from && o.phase == OpPhase::Running {
                    if let Some(o) = self.ops.get_mut(op) {
                        o.record = record.clone();
                    }
                }
                let Some(o) = self.ops.get(op) else {
                    return Vec::new();
                };
                // Only the current executor speaks for the operation: a former executor's
                // late word (it was cut off, then came back) is not this operation's outcome.
                if o.executor != from || o.phase != OpPhase::Running {
                    return Vec::new();
                }
                match result {
                    ExecResult::Succeeded { .. } if o.proof.is_some() => {
                        self.finish(*op, OpPhase::Succeeded, result.clone())
                    }
                    ExecResult::Succeeded { summary } => {
                        let result = ExecResult::Failed {
                            code: "no_read_back".into(),
                            message: format!(
                                "{} NOT confirmed fenced: executor {} reported success ({summary}) without delivering a read-back first; check the node's power by hand",
                                o.target, o.executor_name
                            ),
                        };
                        self.finish(*op, OpPhase::Failed, result)
                    }
                    ExecResult::Failed { .. } => self.finish(*op, OpPhase::Failed, result.clone()),
                }
            }
            Message::ManualConfirm {
                target,
                by,
                reason,
                confirm,
            } => {
                if let Some(k) = self.active.get(target) {
                    return vec![Effect::ManualConfirmed {
                        from,
                        target: target.clone(),
                        result: Err(*k),
                    }];
                }
                self.latest.remove(target);
                let key = confirm_key(from, *confirm);
                self.log.push(Record::ManualConfirm {
                    target: target.clone(),
                    by: by.clone(),
                    reason: reason.clone(),
                    on: self.name_of(from),
                    key: Some(key.clone()),
                });
                vec![Effect::ManualConfirmed {
                    from,
                    target: target.clone(),
                    result: Ok(key),
                }]
            }
            Message::Sync { for_members, .. } => {
                // The receivers adopt the snapshot (see `Member`); everyone else learns that
                // they now hold the state and may execute.
                for m in for_members {
                    if let Some(i) = self.members.get_mut(m) {
                        i.synced = true;
                    }
                }
                Vec::new()
            }
        }
    }

    fn quorate_or_allowed(&self, m: MemberId) -> bool {
        self.members
            .get(&m)
            .is_some_and(|i| i.quorate || i.hello.as_ref().is_some_and(|h| h.allow_without_quorum))
    }

    /// Members that may execute for `target` at `level`: announced, synced, not the target.
    fn can_execute(&self, m: MemberId, target: &str, level: &[String]) -> bool {
        self.members.get(&m).is_some_and(|i| {
            i.synced
                && i.hello.as_ref().is_some_and(|h| {
                    h.name != target && level.iter().any(|d| h.reaches.contains(d))
                })
        })
    }

    /// The first level some member can act on; of its members, `prefer` if it can, else the
    /// lowest.
    fn choose_executor(
        &self,
        target: &str,
        levels: &[Vec<String>],
        prefer: Option<MemberId>,
    ) -> Option<MemberId> {
        for level in levels {
            if let Some(p) = prefer {
                if self.can_execute(p, target, level) {
                    return Some(p);
                }
            }
            if let Some(m) = self
                .members
                .keys()
                .find(|m| self.can_execute(**m, target, level))
            {
                return Some(*m);
            }
        }
        None
    }

    fn claim(&mut self, from: MemberId, c: &Claim) -> Vec<Effect> {
        let key = OpKey {
            origin: from,
            origin_op: c.origin_op,
        };
        let result = self.decide(key, c);
        let mut fx = Vec::new();
        match &result {
            Ok((op, false)) => {
                if let Some(o) = self.ops.get(op) {
                    self.log.push(Record::Accepted {
                        op: *op,
                        target: o.target.clone(),
                        action: o.action,
                        executor: o.executor_name.clone(),
                    });
                    fx.push(Effect::Execute {
                        op: *op,
                        executor: o.executor,
                        takeover: false,
                    });
                }
            }
            Ok((_, true)) => {}
            Err(r) => self.log.push(Record::Refused {
                claim: key,
                target: c.target.clone(),
                refusal: r.clone(),
            }),
        }
        fx.insert(0, Effect::Decided { claim: key, result });
        fx
    }

    fn decide(&mut self, key: OpKey, c: &Claim) -> Result<(OpKey, bool), Refusal> {
        let origin = self.members.get(&key.origin).cloned();
        let Some(hello) = origin
            .as_ref()
            .filter(|i| i.synced)
            .and_then(|i| i.hello.clone())
        else {
            return Err(Refusal::NotSynced { member: key.origin });
        };
        if !hello.digests.contains_key(&c.target) {
            return Err(Refusal::UnknownTarget {
                target: c.target.clone(),
                member: hello.name,
            });
        }
        if let Some(rid) = &c.request_id {
            if let Some(k) = self.request_ids.get(rid).copied() {
                if let Some(o) = self.ops.get(&k) {
                    if o.target != c.target || o.action != c.action {
                        return Err(Refusal::RequestIdMismatch {
                            request_id: rid.clone(),
                            op: k,
                            target: o.target.clone(),
                            action: o.action,
                        });
                    }
                    // The same request again: its operation, if it is still the newest on the
                    // target (an old "fenced" after a later power-on would be a lie).
                    if self.latest.get(&c.target) == Some(&k) {
                        let o = self.ops.get_mut(&k);
                        if let Some(o) = o {
                            o.joined.push(key);
                        }
                        return Ok((k, true));
                    }
                }
            }
        }
        if let Some(k) = self.active.get(&c.target).copied() {
            if let Some(o) = self.ops.get_mut(&k) {
                if o.action == c.action {
                    o.joined.push(key);
                    if let Some(rid) = &c.request_id {
                        self.request_ids.insert(rid.clone(), k);
                    }
                    return Ok((k, true));
                }
                return Err(Refusal::Conflict {
                    target: c.target.clone(),
                    running: k,
                    action: o.action,
                    executor: o.executor_name.clone(),
                });
            }
        }
        if !(origin.as_ref().is_some_and(|i| i.quorate) || hello.allow_without_quorum) {
            return Err(Refusal::NoQuorum { member: hello.name });
        }
        // Every announced member that defines the target must define it the same way.
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for i in self.members.values() {
            if let Some(h) = &i.hello {
                if let Some(d) = h.digests.get(&c.target) {
                    groups.entry(d.as_str()).or_default().push(h.name.as_str());
                }
            }
        }
        if groups.len() > 1 {
            let groups = groups
                .iter()
                .map(|(d, ms)| format!("{}: {}", &d[..d.len().min(12)], ms.join(", ")))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Refusal::ConfigMismatch {
                target: c.target.clone(),
                groups,
            });
        }
        let Some(executor) = self.choose_executor(&c.target, &c.levels, Some(key.origin)) else {
            let devices: BTreeSet<&str> = c.levels.iter().flatten().map(String::as_str).collect();
            return Err(Refusal::NoExecutor {
                target: c.target.clone(),
                devices: devices.into_iter().collect::<Vec<_>>().join(", "),
            });
        };
        let op = ClusterOp {
            key,
            target: c.target.clone(),
            action: c.action,
            request_id: c.request_id.clone(),
            levels: c.levels.clone(),
            reason: c.reason.clone(),
            origin_name: hello.name.clone(),
            executor,
            executor_name: self.name_of(executor),
            takeovers: 0,
            local_id: None,
            proof: None,
            phase: OpPhase::Running,
            result: None,
            joined: Vec::new(),
            record: None,
        };
        self.ops.insert(key, op);
        self.active.insert(c.target.clone(), key);
        self.latest.insert(c.target.clone(), key);
        if let Some(rid) = &c.request_id {
            self.request_ids.insert(rid.clone(), key);
        }
        Ok((key, false))
    }

    fn finish(&mut self, key: OpKey, phase: OpPhase, result: ExecResult) -> Vec<Effect> {
        let Some(o) = self.ops.get_mut(&key) else {
            return Vec::new();
        };
        o.phase = phase;
        o.result = Some(result.clone());
        let proof = o.proof.clone().filter(|_| phase == OpPhase::Succeeded);
        let target = o.target.clone();
        if self.active.get(&target) == Some(&key) {
            self.active.remove(&target);
            // After a merge two operations may still run on one target (one per side): the
            // target stays owned until the last finishes, so no third one starts beside it.
            if let Some(next) = self
                .ops
                .values()
                .find(|x| x.target == target && x.phase == OpPhase::Running)
            {
                self.active.insert(target, next.key);
            }
        }
        self.log.push(Record::Finished {
            op: key,
            phase,
            proof,
            result,
        });
        self.prune();
        vec![Effect::Finished { op: key }]
    }

    /// Drops the oldest finished operations beyond [`KEEP_FINISHED`] (deterministic: by key).
    fn prune(&mut self) {
        let finished: Vec<OpKey> = self
            .ops
            .values()
            .filter(|o| o.phase != OpPhase::Running)
            .map(|o| o.key)
            .collect();
        if finished.len() <= KEEP_FINISHED {
            return;
        }
        for k in &finished[..finished.len() - KEEP_FINISHED] {
            self.ops.remove(k);
            self.request_ids.retain(|_, v| v != k);
            self.latest.retain(|_, v| v != k);
        }
    }
}

impl ClusterState {
    /// Merges the state of another partition that kept the group (two sides each with
    /// quorum, or allowed without it) into this one, by operation key (origin, claim): the
    /// result is the same whichever side merges into which (`a.merge(b)` equals `b.merge(a)`
    /// in its operations and log), so the members of both sides converge. [`Member::apply`]
    /// calls it (through [`ClusterState::merge_sides`]) once every side's snapshot after a
    /// heal was delivered.
    ///
    /// - an operation known to one side only is taken; known to both, a finished one beats
    ///   one still running there (its executor was on the other side), of two finished ones
    ///   a success (it carries its executor's read-back) beats a failure, and of two equal
    ///   in rank the one whose record encodes higher (a deterministic choice: its executor's
    ///   word is the one that counts, and it must still deliver its own read-back);
    /// - a member is taken from the side that holds it (synced there);
    /// - where the sides disagree on a target's newest operation or on a request id, the
    ///   entry is dropped: a repeated request then starts a new operation instead of being
    ///   answered with a result that may be stale;
    /// - the log keeps the common prefix, then each side's records since, the side whose
    ///   records encode lower first, without records the first side already holds.
    pub fn merge(&mut self, other: &ClusterState) {
        for (m, theirs) in &other.members {
            let take = match self.members.get(m) {
                None => true,
                Some(mine) => member_rank(theirs) > member_rank(mine),
            };
            if take {
                self.members.insert(*m, theirs.clone());
            }
        }
        for (k, theirs) in &other.ops {
            let take = match self.ops.get(k) {
                None => true,
                Some(mine) => (rank(theirs), encoded(theirs)) > (rank(mine), encoded(mine)),
            };
            if take {
                self.ops.insert(*k, theirs.clone());
            }
        }
        // In flight per target: the operation still running, the lower key if both are.
        let mut active: BTreeMap<String, OpKey> = BTreeMap::new();
        for o in self.ops.values() {
            if o.phase == OpPhase::Running {
                active.entry(o.target.clone()).or_insert(o.key);
            }
        }
        self.active = active;
        self.latest = agreed(&self.latest, &other.latest, &self.ops);
        self.request_ids = agreed(&self.request_ids, &other.request_ids, &self.ops);
        let mine: Vec<&Record> = self.log.iter().collect();
        let theirs: Vec<&Record> = other.log.iter().collect();
        let common = mine.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
        let (x, y) = (&mine[common..], &theirs[common..]);
        let enc = |r: &[&Record]| serde_json::to_string(r).unwrap_or_default();
        let (first, second) = if enc(x) <= enc(y) { (x, y) } else { (y, x) };
        let mut log = DeliveryLog {
            records: mine[..common].iter().map(|r| (*r).clone()).collect(),
            dropped: self.log.dropped.max(other.log.dropped),
        };
        for r in first {
            log.push((*r).clone());
        }
        for r in second.iter().filter(|r| !first.contains(r)) {
            log.push((*r).clone());
        }
        self.log = log;
    }

    /// The state of a healed group from every side's state as of the change that healed it:
    /// folded in the order of their encodings (so every member, whichever side it was on and
    /// in whichever order the snapshots came, computes the same), then each disagreement
    /// about a target recorded as a [`Record::MergeConflict`]:
    /// - one operation run by two executors (each side handed it to one of its own): the
    ///   merged record names one, and only that one's read-back and outcome count;
    /// - two operations still running on one target (each side started one): the lower key
    ///   owns the target, the other's executor still finishes it with its own read-back, and
    ///   the target takes no new operation until both have finished.
    ///
    /// Returns `None` for no states.
    pub fn merge_sides(mut sides: Vec<ClusterState>) -> Option<ClusterState> {
        sides.sort_by_cached_key(|s| serde_json::to_string(s).unwrap_or_default());
        sides.dedup();
        let mut it = sides.iter();
        let mut merged = it.next()?.clone();
        for s in it {
            merged.merge(s);
        }
        let mut records = Vec::new();
        for (k, o) in &merged.ops {
            let executors: BTreeSet<&str> = sides
                .iter()
                .filter_map(|s| s.ops.get(k))
                .map(|x| x.executor_name.as_str())
                .collect();
            if executors.len() > 1 {
                let names: Vec<&str> = executors.into_iter().collect();
                records.push(Record::MergeConflict {
                    target: o.target.clone(),
                    ops: vec![*k],
                    resolution: format!(
                        "{k} was executed by {} in different partitions; the merged record keeps {}'s ({:?}), and only its own read-back counts",
                        names.join(" and "),
                        o.executor_name,
                        o.phase
                    ),
                });
            }
        }
        let mut running: BTreeMap<&str, Vec<OpKey>> = BTreeMap::new();
        for o in merged.ops.values().filter(|o| o.phase == OpPhase::Running) {
            running.entry(o.target.as_str()).or_default().push(o.key);
        }
        for (target, ops) in running.into_iter().filter(|(_, v)| v.len() > 1) {
            let rest: Vec<String> = ops[1..].iter().map(OpKey::to_string).collect();
            records.push(Record::MergeConflict {
                target: target.to_string(),
                ops: ops.clone(),
                resolution: format!(
                    "partitions started operations on {target} that still run: {} owns the target; {} still finish with their own executors' read-backs, and {target} takes no new operation until all have finished",
                    ops[0],
                    rest.join(", ")
                ),
            });
        }
        for r in records {
            merged.log.push(r);
        }
        Some(merged)
    }
}

/// Which side's record of a member wins a merge: the side it is synced in (it holds that
/// side's state), then the one that heard more from it; then the encoding, so the choice is
/// the same on every member.
fn member_rank(i: &MemberInfo) -> (bool, bool, bool, String) {
    (
        i.synced,
        i.hello.is_some(),
        i.quorum_known,
        serde_json::to_string(i).unwrap_or_default(),
    )
}

/// An operation's encoding, the last tie-break of a merge.
fn encoded(o: &ClusterOp) -> String {
    serde_json::to_string(o).unwrap_or_default()
}

/// How much an operation's record says: running, failed, succeeded.
fn rank(o: &ClusterOp) -> u8 {
    match o.phase {
        OpPhase::Running => 0,
        OpPhase::Failed => 1,
        OpPhase::Succeeded => 2,
    }
}

/// The entries both maps agree on or only one holds, for operations that exist.
fn agreed(
    a: &BTreeMap<String, OpKey>,
    b: &BTreeMap<String, OpKey>,
    ops: &BTreeMap<OpKey, ClusterOp>,
) -> BTreeMap<String, OpKey> {
    let mut out = BTreeMap::new();
    for (k, v) in a.iter().chain(b) {
        let same = a.get(k).is_none_or(|x| x == v) && b.get(k).is_none_or(|x| x == v);
        if same && ops.contains_key(v) {
            out.insert(k.clone(), *v);
        }
    }
    out
}

/// One member's side: the shared state plus what only this member knows (who it is, and,
/// while it joins or its partition heals, the deliveries it holds back until every other
/// side's snapshot arrives).
#[derive(Debug, Clone)]
pub struct Member {
    /// This member.
    pub me: MemberId,
    /// The shared state (meaningful once `synced`).
    pub state: ClusterState,
    /// This member holds the cluster's state.
    pub synced: bool,
    /// A join or a heal in progress.
    merging: Option<Merging>,
    /// After a heal, this side's snapshot until its `Sync` is delivered: if its sender
    /// leaves first, the next member of the side sends it, or the other sides would wait
    /// for it forever.
    side_sync: Option<SideSync>,
}

/// This side's snapshot as of a heal, and who is to send it.
#[derive(Debug, Clone)]
struct SideSync {
    /// The member of this side that sends it (the lowest still present).
    sender: MemberId,
    /// This side's members (synced in the snapshot).
    side: BTreeSet<MemberId>,
    /// The members it is for.
    for_members: Vec<MemberId>,
    /// The state right after the heal's change on this side.
    snapshot: ClusterState,
}

/// What a member gathers between a change that brought in members it did not hold and the
/// moment it knows every member's state: each side's state as of that change, and what was
/// delivered since (held, then replayed on the merged state).
///
/// Every side's members see the same sequence after the change, so every member merges
/// the same states and replays the same items, whichever side it was on: the sides
/// converge. A side's snapshot is the state right after the change on that side, sent by
/// its lowest member; a member that just started holds no state and says so in its
/// `Hello`, so nobody waits for a snapshot of it.
#[derive(Debug, Clone)]
struct Merging {
    /// The change (replayed on an empty state if no member turns out to hold one).
    change: Delivered,
    /// This member's own state right after the change (`None` for a member that held none).
    base: Option<ClusterState>,
    /// Members whose state is not known yet: neither covered by a snapshot nor fresh.
    pending: BTreeSet<MemberId>,
    /// Other sides' snapshots.
    snapshots: Vec<ClusterState>,
    /// Deliveries since the change.
    held: Vec<Delivered>,
}

impl Member {
    /// A member that has not yet seen its first membership change.
    pub fn new(me: MemberId) -> Member {
        Member {
            me,
            state: ClusterState::default(),
            synced: false,
            merging: None,
            side_sync: None,
        }
    }

    /// This member is holding deliveries back until the other sides' snapshots arrive.
    pub fn merging(&self) -> bool {
        self.merging.is_some()
    }

    /// Applies one delivered item; returns the effects (empty while this member is joining
    /// or merging, then those of everything it held).
    pub fn apply(&mut self, d: &Delivered) -> Vec<Effect> {
        let mut resend = Vec::new();
        match (d, self.side_sync.as_mut()) {
            (
                Delivered::Message {
                    from,
                    msg: Message::Sync { .. },
                },
                Some(ss),
            ) if *from == ss.sender => self.side_sync = None,
            (Delivered::Membership { members, .. }, Some(ss)) if !members.contains(&ss.sender) => {
                match ss.side.iter().find(|m| members.contains(m)) {
                    None => self.side_sync = None,
                    Some(next) => {
                        ss.sender = *next;
                        if *next == self.me {
                            resend.push(Effect::SendSync {
                                sender: self.me,
                                for_members: ss
                                    .for_members
                                    .iter()
                                    .filter(|m| members.contains(m))
                                    .copied()
                                    .collect(),
                                snapshot: Box::new(ss.snapshot.clone()),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        let mut fx = self.step(d);
        fx.extend(resend);
        fx
    }

    /// [`Member::apply`] without the care for this side's snapshot (a replay of held items
    /// must not send it again).
    fn step(&mut self, d: &Delivered) -> Vec<Effect> {
        if self.merging.is_some() {
            return self.hold(d);
        }
        if self.synced {
            let fx = self.state.apply(d);
            if let Delivered::Membership { members, joined } = d {
                // Members this side did not hold: fresh fenceds, or another partition that
                // kept the group. Wait until each is known (see `Merging`).
                let pending: BTreeSet<MemberId> = joined
                    .iter()
                    .filter(|j| **j != self.me && members.contains(j))
                    .copied()
                    .collect();
                if !pending.is_empty() {
                    // The base is this side's snapshot exactly as its sender sends it (every
                    // member of the side derives the same `SendSync`), so every side folds
                    // the same states.
                    let base = fx
                        .iter()
                        .find_map(|e| match e {
                            Effect::SendSync { snapshot, .. } => Some((**snapshot).clone()),
                            _ => None,
                        })
                        .unwrap_or_else(|| self.state.clone());
                    let side: BTreeSet<MemberId> = base
                        .members
                        .iter()
                        .filter(|(_, i)| i.synced)
                        .map(|(m, _)| *m)
                        .collect();
                    if let Some(sender) = side.first().copied() {
                        self.side_sync = Some(SideSync {
                            sender,
                            side,
                            for_members: pending.iter().copied().collect(),
                            snapshot: base.clone(),
                        });
                    }
                    self.merging = Some(Merging {
                        change: d.clone(),
                        base: Some(base),
                        pending,
                        snapshots: Vec::new(),
                        held: Vec::new(),
                    });
                }
            }
            return fx;
        }
        match d {
            Delivered::Membership { members, joined } if joined.contains(&self.me) => {
                if joined.len() == members.len() {
                    // Everyone in the group just arrived: the cluster is founded here.
                    self.synced = true;
                    return self.state.apply(d);
                }
                self.merging = Some(Merging {
                    change: d.clone(),
                    base: None,
                    pending: members.iter().filter(|m| **m != self.me).copied().collect(),
                    snapshots: Vec::new(),
                    held: Vec::new(),
                });
                Vec::new()
            }
            // Nothing is delivered to a member before the change that brings it in.
            _ => Vec::new(),
        }
    }

    /// Holds `d` while merging; once every member's state is known, merges and replays.
    fn hold(&mut self, d: &Delivered) -> Vec<Effect> {
        let me = self.me;
        let Some(mg) = self.merging.as_mut() else {
            return Vec::new();
        };
        mg.held.push(d.clone());
        match d {
            Delivered::Message {
                from,
                msg: Message::Hello(h),
            } if !h.holds_state => {
                mg.pending.remove(from);
            }
            Delivered::Message {
                from,
                msg: Message::Sync { snapshot, .. },
            } => {
                // This side's own snapshot is this member's base; another side's covers the
                // members synced in it.
                let own_side = mg
                    .base
                    .as_ref()
                    .is_some_and(|b| b.members.get(from).is_some_and(|i| i.synced));
                let covered: Vec<MemberId> = snapshot
                    .members
                    .iter()
                    .filter(|(_, i)| i.synced)
                    .map(|(m, _)| *m)
                    .collect();
                if !own_side && covered.iter().any(|m| mg.pending.contains(m)) {
                    for m in &covered {
                        mg.pending.remove(m);
                    }
                    mg.snapshots.push((**snapshot).clone());
                }
            }
            Delivered::Membership { members, joined } => {
                // Whoever left will send nothing; whoever joined must be known too.
                mg.pending.retain(|m| members.contains(m));
                mg.pending
                    .extend(joined.iter().filter(|j| **j != me).copied());
            }
            _ => {}
        }
        if !mg.pending.is_empty() {
            return Vec::new();
        }
        let Some(mg) = self.merging.take() else {
            return Vec::new();
        };
        let mut fx = Vec::new();
        let sides = mg.snapshots.len() + usize::from(mg.base.is_some());
        let mut states = mg.snapshots;
        states.extend(mg.base);
        let real_merge = sides > 1;
        self.state = match ClusterState::merge_sides(states) {
            Some(s) => s,
            None => {
                // Nobody held a state (every holder left before its snapshot): the members
                // present found the cluster from the change on.
                let mut s = ClusterState::default();
                fx.extend(s.apply(&mg.change));
                s
            }
        };
        self.synced = true;
        if real_merge {
            fx.push(Effect::Merged { sides });
            // An executor lost on one side may be held on none: hand it over or fail it.
            fx.extend(self.state.reassign_orphans());
        }
        for h in &mg.held {
            fx.extend(self.step(h));
        }
        fx
    }
}

#[cfg(test)]
mod tests;
