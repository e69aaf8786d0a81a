//! The agreement core against random delivered sequences: a simulated CPG group (members
//! join, leave, lose quorum, claim, execute, lie) drives every member's [`Member`] with the
//! same total order, and the properties are checked on what they derive.

use super::*;
use proptest::prelude::*;

const TARGETS: [&str; 3] = ["n1", "n2", "n3"];

fn hello(name: &str, reaches: &[&str]) -> Hello {
    Hello {
        name: name.into(),
        reaches: reaches.iter().map(|s| s.to_string()).collect(),
        digests: TARGETS
            .iter()
            .map(|t| (t.to_string(), "d0".to_string()))
            .collect(),
        allow_without_quorum: false,
        holds_state: false,
    }
}

fn levels(target: &str) -> Vec<Vec<String>> {
    vec![vec![format!("bmc-{target}")], vec!["pdu".into()]]
}

fn m(node: u32, pid: u32) -> MemberId {
    MemberId { node, pid }
}

/// A simulated group: the delivered sequence so far, every member's side, and what the test
/// needs to check the properties.
struct Sim {
    members: Vec<Member>,
    delivered: Vec<Delivered>,
    next_pid: u32,
    next_op: u64,
    /// Every `Execute` any member derived, with the delivery index.
    executes: Vec<(usize, OpKey, MemberId, bool)>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            members: Vec::new(),
            delivered: Vec::new(),
            next_pid: 100,
            next_op: 1,
            executes: Vec::new(),
        }
    }

    fn ids(&self) -> Vec<MemberId> {
        self.members.iter().map(|m| m.me).collect()
    }

    /// The member holding the state with the lowest id (the test's reference view).
    fn reference(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.synced)
    }

    /// Delivers `d` to every member, then multicasts what the effects ask for (a snapshot).
    fn deliver(&mut self, d: Delivered) {
        let idx = self.delivered.len();
        self.delivered.push(d.clone());
        let mut sends = Vec::new();
        for mem in &mut self.members {
            for e in mem.apply(&d) {
                match e {
                    Effect::SendSync {
                        sender,
                        for_members,
                        snapshot,
                    } if sender == mem.me => {
                        // Through the wire encoding, as CPG carries it.
                        let msg = Message::Sync {
                            for_members,
                            snapshot,
                        };
                        let msg = crate::cluster::wire::decode(
                            &crate::cluster::wire::encode(&msg).unwrap(),
                        )
                        .unwrap();
                        sends.push(Delivered::Message { from: sender, msg })
                    }
                    Effect::Execute {
                        op,
                        executor,
                        takeover,
                    } if executor == mem.me => {
                        self.executes.push((idx, op, executor, takeover));
                    }
                    _ => {}
                }
            }
        }
        for s in sends {
            self.deliver(s);
        }
    }

    fn join(&mut self, node: u32) {
        let id = m(node, self.next_pid);
        self.next_pid += 1;
        self.members.push(Member::new(id));
        self.members.sort_by_key(|x| x.me);
        let ids = self.ids();
        self.deliver(Delivered::Membership {
            members: ids,
            joined: vec![id],
        });
        let name = format!("n{node}");
        let reaches: Vec<String> = TARGETS
            .iter()
            .filter(|t| **t != name)
            .map(|t| format!("bmc-{t}"))
            .collect();
        let r: Vec<&str> = reaches.iter().map(String::as_str).collect();
        self.deliver(Delivered::Message {
            from: id,
            msg: Message::Hello(hello(&name, &r)),
        });
        self.deliver(Delivered::Message {
            from: id,
            msg: Message::Quorum { quorate: true },
        });
    }

    fn leave(&mut self, i: usize) {
        if self.members.len() <= 1 {
            return;
        }
        self.members.remove(i % self.members.len());
        let ids = self.ids();
        self.deliver(Delivered::Membership {
            members: ids.clone(),
            joined: Vec::new(),
        });
        // As the runtime does: every member says its quorum again after a change.
        for from in ids {
            self.deliver(Delivered::Message {
                from,
                msg: Message::Quorum { quorate: true },
            });
        }
    }

    fn running(&self) -> Vec<ClusterOp> {
        self.reference()
            .map(|r| {
                r.state
                    .active
                    .values()
                    .filter_map(|k| r.state.ops.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One step chosen by `c`.
    fn step(&mut self, c: (u8, u8, u8)) {
        let (kind, a, b) = c;
        let n = self.members.len().max(1);
        match kind % 10 {
            0 => self.join(u32::from(a % 4) + 1),
            1 => self.leave(usize::from(a)),
            2 => {
                let from = self.members[usize::from(a) % n].me;
                self.deliver(Delivered::Message {
                    from,
                    msg: Message::Quorum {
                        quorate: b % 3 != 0,
                    },
                });
            }
            3..=5 => {
                let from = self.members[usize::from(a) % n].me;
                let target = TARGETS[usize::from(b) % 3];
                let action = if b % 2 == 0 { Action::Off } else { Action::On };
                let op = self.next_op;
                self.next_op += 1;
                self.deliver(Delivered::Message {
                    from,
                    msg: Message::Claim(Claim {
                        origin_op: op,
                        target: target.into(),
                        action,
                        request_id: (b % 5 == 0).then(|| format!("r{}", a % 3)),
                        levels: levels(target),
                        reason: "test".into(),
                    }),
                });
            }
            _ => {
                let ops = self.running();
                if ops.is_empty() {
                    return;
                }
                let op = &ops[usize::from(a) % ops.len()];
                // Mostly the executor speaks; sometimes another member (it must be ignored).
                let from = if b % 7 == 0 {
                    self.members[usize::from(b) % n].me
                } else {
                    op.executor
                };
                let msg = match kind % 10 {
                    6 => Message::Started {
                        op: op.key,
                        local_id: u64::from(b),
                    },
                    7 => Message::Confirmed {
                        op: op.key,
                        proof: Proof::PowerReadBack {
                            detail: "bmc read back".into(),
                        },
                    },
                    8 => Message::Outcome {
                        op: op.key,
                        result: ExecResult::Succeeded {
                            summary: "done".into(),
                        },
                        record: None,
                    },
                    _ => Message::Outcome {
                        op: op.key,
                        result: ExecResult::Failed {
                            code: "x".into(),
                            message: "device error".into(),
                        },
                        record: None,
                    },
                };
                self.deliver(Delivered::Message { from, msg });
            }
        }
    }
}

fn run(steps: &[(u8, u8, u8)]) -> Sim {
    let mut sim = Sim::new();
    sim.join(1);
    sim.join(2);
    for s in steps {
        sim.step(*s);
    }
    sim
}

fn steps() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..120)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every member holding the state (founders and members that joined later and adopted a
    /// snapshot) derives the same state from the same delivered sequence.
    #[test]
    fn members_agree(s in steps()) {
        let sim = run(&s);
        let synced: Vec<&Member> = sim.members.iter().filter(|m| m.synced).collect();
        prop_assert!(!synced.is_empty());
        for w in synced.windows(2) {
            prop_assert_eq!(&w[0].state, &w[1].state, "{} and {} differ", w[0].me, w[1].me);
        }
        // And the state replayed from the whole sequence by one that founded the group.
        let mut replay = ClusterState::default();
        for d in &sim.delivered {
            let _ = replay.apply(d);
        }
        prop_assert_eq!(&replay, &synced[0].state);
    }

    /// Conflicting claims in any interleaving: while an operation with one action owns a
    /// target (from its acceptance to its finish), no operation with another action on that
    /// target is ever executed, by any member.
    #[test]
    fn no_conflicting_execution(s in steps()) {
        let sim = run(&s);
        let mut replay = ClusterState::default();
        // op -> (target, action, accepted at, finished at)
        let mut spans: BTreeMap<OpKey, (String, Action, usize, usize)> = BTreeMap::new();
        for (i, d) in sim.delivered.iter().enumerate() {
            for e in replay.apply(d) {
                match e {
                    Effect::Execute { op, .. } => {
                        if let Some(o) = replay.ops.get(&op) {
                            spans.entry(op).or_insert((o.target.clone(), o.action, i, usize::MAX));
                        }
                    }
                    Effect::Finished { op } => {
                        if let Some(s) = spans.get_mut(&op) {
                            s.3 = i;
                        }
                    }
                    _ => {}
                }
            }
        }
        for (idx, op, _, _) in &sim.executes {
            let Some((t, a, _, _)) = spans.get(op) else { continue };
            for (other, (t2, a2, from, to)) in &spans {
                if other != op && t2 == t && a2 != a {
                    prop_assert!(!(from < idx && idx < to),
                        "{op} ({a}) executed at {idx} inside {other} ({a2}) on {t}, {from}..{to}");
                }
            }
        }
    }

    /// A success is recorded only after its final executor delivered a read-back of its own,
    /// after it took over; never the previous executor's, never none.
    #[test]
    fn success_needs_read_back_from_final_executor(s in steps()) {
        let sim = run(&s);
        let mut replay = ClusterState::default();
        // op -> (executor, has it delivered a Confirmed since it became executor)
        let mut conf: BTreeMap<OpKey, (MemberId, bool)> = BTreeMap::new();
        for d in &sim.delivered {
            if let Delivered::Message { from, msg: Message::Confirmed { op, .. } } = d {
                if let Some(c) = conf.get_mut(op) {
                    if c.0 == *from {
                        c.1 = true;
                    }
                }
            }
            for e in replay.apply(d) {
                if let Effect::Execute { op, executor, .. } = e {
                    conf.insert(op, (executor, false));
                }
            }
        }
        for r in replay.log.iter() {
            if let Record::Finished { op, phase: OpPhase::Succeeded, proof, .. } = r {
                prop_assert!(proof.is_some());
                prop_assert!(conf.get(op).is_some_and(|c| c.1), "{op} succeeded without a read-back from its executor");
            }
        }
    }
}

#[test]
fn executor_is_never_the_target_and_none_means_refusal() {
    let mut s = ClusterState::default();
    let (a, b) = (m(1, 1), m(2, 2));
    s.apply(&Delivered::Membership {
        members: vec![a, b],
        joined: vec![a, b],
    });
    s.apply(&Delivered::Message {
        from: a,
        msg: Message::Hello(hello("n1", &["bmc-n2"])),
    });
    s.apply(&Delivered::Message {
        from: b,
        msg: Message::Hello(hello("n2", &["bmc-n2"])),
    });
    for x in [a, b] {
        s.apply(&Delivered::Message {
            from: x,
            msg: Message::Quorum { quorate: true },
        });
    }
    // n2 asks to fence itself: n1 reaches n2's BMC and executes.
    let fx = s.apply(&Delivered::Message {
        from: b,
        msg: Message::Claim(Claim {
            origin_op: 1,
            target: "n2".into(),
            action: Action::Off,
            request_id: None,
            levels: levels("n2"),
            reason: "t".into(),
        }),
    });
    assert!(fx.contains(&Effect::Execute {
        op: OpKey {
            origin: b,
            origin_op: 1
        },
        executor: a,
        takeover: false
    }));
    // Nobody reaches n1's devices: refused, naming them.
    let fx = s.apply(&Delivered::Message {
        from: a,
        msg: Message::Claim(Claim {
            origin_op: 2,
            target: "n1".into(),
            action: Action::Off,
            request_id: None,
            levels: levels("n1"),
            reason: "t".into(),
        }),
    });
    match &fx[0] {
        Effect::Decided {
            result: Err(Refusal::NoExecutor { devices, .. }),
            ..
        } => assert_eq!(devices, "bmc-n1, pdu"),
        other => panic!("expected a no-executor refusal, got {other:?}"),
    }
}

#[test]
fn no_quorum_refuses_and_config_mismatch_names_members() {
    let mut s = ClusterState::default();
    let (a, b) = (m(1, 1), m(2, 2));
    s.apply(&Delivered::Membership {
        members: vec![a, b],
        joined: vec![a, b],
    });
    s.apply(&Delivered::Message {
        from: a,
        msg: Message::Hello(hello("n1", &["bmc-n3"])),
    });
    let claim = |n| {
        Message::Claim(Claim {
            origin_op: n,
            target: "n3".into(),
            action: Action::Off,
            request_id: None,
            levels: levels("n3"),
            reason: "t".into(),
        })
    };
    let fx = s.apply(&Delivered::Message {
        from: a,
        msg: claim(1),
    });
    assert!(
        matches!(&fx[0], Effect::Decided { result: Err(Refusal::NoQuorum { member }), .. } if member == "n1")
    );
    s.apply(&Delivered::Message {
        from: a,
        msg: Message::Quorum { quorate: true },
    });
    let mut other = hello("n2", &[]);
    other.digests.insert("n3".into(), "d1-different".into());
    s.apply(&Delivered::Message {
        from: b,
        msg: Message::Hello(other),
    });
    let fx = s.apply(&Delivered::Message {
        from: a,
        msg: claim(2),
    });
    match &fx[0] {
        Effect::Decided {
            result: Err(Refusal::ConfigMismatch { groups, .. }),
            ..
        } => assert_eq!(groups, "d0: n1; d1-different: n2"),
        other => panic!("expected a config mismatch, got {other:?}"),
    }
}

#[test]
fn executor_leaving_hands_over_and_the_last_one_fails_the_operation() {
    let mut s = ClusterState::default();
    let (a, b, c) = (m(1, 1), m(2, 2), m(3, 3));
    s.apply(&Delivered::Membership {
        members: vec![a, b, c],
        joined: vec![a, b, c],
    });
    for (x, n) in [(a, "n1"), (b, "n2"), (c, "n3")] {
        s.apply(&Delivered::Message {
            from: x,
            msg: Message::Hello(hello(n, &["bmc-n1"])),
        });
        s.apply(&Delivered::Message {
            from: x,
            msg: Message::Quorum { quorate: true },
        });
    }
    let key = OpKey {
        origin: c,
        origin_op: 1,
    };
    s.apply(&Delivered::Message {
        from: c,
        msg: Message::Claim(Claim {
            origin_op: 1,
            target: "n1".into(),
            action: Action::Off,
            request_id: None,
            levels: levels("n1"),
            reason: "t".into(),
        }),
    });
    assert_eq!(s.ops[&key].executor, c);
    s.apply(&Delivered::Message {
        from: c,
        msg: Message::Confirmed {
            op: key,
            proof: Proof::PowerReadBack { detail: "x".into() },
        },
    });
    // c leaves before its outcome: once b says it is quorate (quorum is forgotten at every
    // change that loses members), b takes over, and c's read-back no longer counts.
    let fx = s.apply(&Delivered::Membership {
        members: vec![a, b],
        joined: vec![],
    });
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(s.ops[&key].executor, c);
    let fx = s.apply(&Delivered::Message {
        from: a,
        msg: Message::Quorum { quorate: true },
    });
    assert!(fx.is_empty(), "a is the target, b has not said: {fx:?}");
    let fx = s.apply(&Delivered::Message {
        from: b,
        msg: Message::Quorum { quorate: true },
    });
    assert!(fx.contains(&Effect::Execute {
        op: key,
        executor: b,
        takeover: true
    }));
    assert_eq!(s.ops[&key].proof, None);
    // A success without b's own read-back is recorded as a failure.
    let fx = s.apply(&Delivered::Message {
        from: b,
        msg: Message::Outcome {
            op: key,
            result: ExecResult::Succeeded {
                summary: "ok".into(),
            },
            record: None,
        },
    });
    assert_eq!(fx, vec![Effect::Finished { op: key }]);
    assert_eq!(s.ops[&key].phase, OpPhase::Failed);
}

#[test]
fn a_member_cut_off_neither_claims_nor_takes_over_on_its_old_quorum() {
    let mut s = ClusterState::default();
    let (a, b, c) = (m(1, 1), m(2, 2), m(3, 3));
    s.apply(&Delivered::Membership {
        members: vec![a, b, c],
        joined: vec![a, b, c],
    });
    for (x, n) in [(a, "n1"), (b, "n2"), (c, "n3")] {
        s.apply(&Delivered::Message {
            from: x,
            msg: Message::Hello(hello(n, &["bmc-n3", "bmc-n2"])),
        });
        s.apply(&Delivered::Message {
            from: x,
            msg: Message::Quorum { quorate: true },
        });
    }
    // b executes a fence of n3; then a is cut off: its view is {a} alone.
    let key = OpKey {
        origin: b,
        origin_op: 1,
    };
    s.apply(&Delivered::Message {
        from: b,
        msg: Message::Claim(Claim {
            origin_op: 1,
            target: "n3".into(),
            action: Action::Off,
            request_id: None,
            levels: levels("n3"),
            reason: "t".into(),
        }),
    });
    assert_eq!(s.ops[&key].executor, b);
    let fx = s.apply(&Delivered::Membership {
        members: vec![a],
        joined: vec![],
    });
    assert!(
        fx.is_empty(),
        "nothing is taken over before a says its quorum: {fx:?}"
    );
    // A claim a sent before its quorum service spoke is refused, not judged on the old quorum.
    let fx = s.apply(&Delivered::Message {
        from: a,
        msg: Message::Claim(Claim {
            origin_op: 2,
            target: "n2".into(),
            action: Action::Off,
            request_id: None,
            levels: levels("n2"),
            reason: "t".into(),
        }),
    });
    assert!(
        matches!(
            &fx[0],
            Effect::Decided {
                result: Err(Refusal::NoQuorum { .. }),
                ..
            }
        ),
        "{fx:?}"
    );
    // a says it has no quorum: the orphaned operation fails on a's side, nobody executes.
    let fx = s.apply(&Delivered::Message {
        from: a,
        msg: Message::Quorum { quorate: false },
    });
    assert_eq!(fx, vec![Effect::Finished { op: key }]);
    assert_eq!(s.ops[&key].phase, OpPhase::Failed);
    match &s.ops[&key].result {
        Some(ExecResult::Failed { code, message }) => {
            assert_eq!(code, "executor_left");
            assert!(
                message.contains("have no quorum") && message.contains("n1"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_shared_log_is_a_ring_of_the_newest_records_with_a_count_of_the_dropped_ones() {
    let mut s = Sim::new();
    s.join(1);
    s.join(2);
    let a = s.members[0].me;
    // Each claim for an unknown target is refused: one record per delivery, no operation.
    let extra = 10u64;
    for n in 0..(LOG_KEEP as u64 + extra) {
        s.deliver(Delivered::Message {
            from: a,
            msg: Message::Claim(Claim {
                origin_op: 1000 + n,
                target: "nowhere".into(),
                action: Action::Off,
                request_id: None,
                levels: levels("nowhere"),
                reason: "t".into(),
            }),
        });
    }
    let log = &s.members[0].state.log;
    assert_eq!(
        log.len(),
        LOG_KEEP,
        "the ring keeps exactly LOG_KEEP records"
    );
    // Joins log nothing: exactly the refusals beyond the ring fell out.
    assert_eq!(log.dropped(), extra, "every record pushed out is counted");
    match log.iter().next() {
        Some(Record::Refused { claim, .. }) => assert_eq!(
            claim.origin_op,
            1000 + extra,
            "the oldest record kept is the first one not dropped"
        ),
        other => panic!("expected the oldest kept record to be a refusal, got {other:?}"),
    }
    match log.iter().last() {
        Some(Record::Refused { claim, .. }) => {
            assert_eq!(claim.origin_op, 1000 + LOG_KEEP as u64 + extra - 1)
        }
        other => panic!("expected the newest record to be the last refusal, got {other:?}"),
    }
    // A member joining now gets the same ring and the same count in its snapshot.
    s.join(3);
    let joiner = s.members.iter().find(|m| m.me.node == 3).unwrap();
    assert!(joiner.synced, "the joiner adopted a snapshot");
    assert_eq!(joiner.state.log, s.members[0].state.log);
    assert_eq!(joiner.state.log.dropped(), extra);
}

#[test]
fn a_manual_confirmation_is_agreed_with_a_key_every_member_copies_it_by() {
    let mut s = Sim::new();
    s.join(1);
    s.join(2);
    let b = s.members[1].me;
    let confirm = |n| Delivered::Message {
        from: b,
        msg: Message::ManualConfirm {
            target: "n1".into(),
            by: "uid:0".into(),
            reason: "checked".into(),
            confirm: n,
        },
    };
    // Every member derives the same effect with the same key, the key its copy carries.
    let fx: Vec<Vec<Effect>> = s.members.iter_mut().map(|m| m.apply(&confirm(3))).collect();
    let key = confirm_key(b, 3);
    for f in &fx {
        assert_eq!(
            f,
            &vec![Effect::ManualConfirmed {
                from: b,
                target: "n1".into(),
                result: Ok(key.clone())
            }]
        );
    }
    assert!(
        matches!(s.members[0].state.log.iter().last(),
            Some(Record::ManualConfirm { key: Some(k), on, .. }) if *k == key && on == "n2"),
        "{:?}",
        s.members[0].state.log
    );
    // Another confirmation of the same member has another key.
    assert_ne!(confirm_key(b, 4), key);
    // A message from a fenced that sent no number still decodes (number 0).
    let old = br#"{"ManualConfirm":{"target":"n1","by":"u","reason":"r"}}"#;
    let mut wire = vec![1u8];
    wire.extend_from_slice(old);
    assert!(matches!(
        crate::cluster::wire::decode(&wire),
        Ok(Message::ManualConfirm { confirm: 0, .. })
    ));
}

/// One side of a split: `members` with quorum, and one fence of `target` claimed by `by`
/// (claim `n`), executed by `by`, finished as `ok` (with its read-back) or failed.
fn side(
    base: &ClusterState,
    members: &[MemberId],
    by: MemberId,
    n: u64,
    target: &str,
    ok: bool,
) -> ClusterState {
    let mut s = base.clone();
    s.apply(&Delivered::Membership {
        members: members.to_vec(),
        joined: Vec::new(),
    });
    for x in members {
        s.apply(&Delivered::Message {
            from: *x,
            msg: Message::Quorum { quorate: true },
        });
    }
    let op = OpKey {
        origin: by,
        origin_op: n,
    };
    let fx = s.apply(&Delivered::Message {
        from: by,
        msg: Message::Claim(Claim {
            origin_op: n,
            target: target.into(),
            action: Action::Off,
            request_id: Some(format!("req-{by}-{n}")),
            levels: levels(target),
            reason: "split".into(),
        }),
    });
    assert!(
        fx.contains(&Effect::Execute {
            op,
            executor: by,
            takeover: false
        }),
        "{fx:?}"
    );
    if ok {
        s.apply(&Delivered::Message {
            from: by,
            msg: Message::Confirmed {
                op,
                proof: Proof::PowerReadBack {
                    detail: "bmc read back off".into(),
                },
            },
        });
    }
    let result = if ok {
        ExecResult::Succeeded {
            summary: "off".into(),
        }
    } else {
        ExecResult::Failed {
            code: "all_levels_failed".into(),
            message: "NOT fenced".into(),
        }
    };
    s.apply(&Delivered::Message {
        from: by,
        msg: Message::Outcome {
            op,
            result,
            record: None,
        },
    });
    s
}

#[test]
fn two_partitions_that_both_kept_the_group_merge_by_origin_and_claim_whichever_merges_first() {
    let (a, b, c) = (m(1, 1), m(2, 2), m(3, 3));
    let mut base = ClusterState::default();
    base.apply(&Delivered::Membership {
        members: vec![a, b, c],
        joined: vec![a, b, c],
    });
    for (x, name) in [(a, "n1"), (b, "n2"), (c, "n3")] {
        base.apply(&Delivered::Message {
            from: x,
            msg: Message::Hello(Hello {
                allow_without_quorum: true,
                ..hello(name, &["bmc-n1", "bmc-n2", "bmc-n3"])
            }),
        });
    }
    // Before the split, one operation everyone saw.
    let base = side(&base, &[a, b, c], a, 1, "n3", true);
    // {n1} and {n2, n3} both keep going (allowed without quorum): each fences a target.
    let left = side(&base, &[a], a, 2, "n2", true);
    let right = side(&base, &[b, c], b, 1, "n1", false);
    let mut l = left.clone();
    l.merge(&right);
    let mut r = right.clone();
    r.merge(&left);
    assert_eq!(l.ops, r.ops, "the operations depend on who merged");
    assert_eq!(l.log, r.log, "the log depends on who merged");
    assert_eq!(l.active, r.active);
    assert_eq!(l.latest, r.latest);
    assert_eq!(l.request_ids, r.request_ids);
    // Every operation of both sides, once, by (origin, claim), with its own outcome.
    let keys: Vec<(u32, u64, OpPhase)> = l
        .ops
        .values()
        .map(|o| (o.key.origin.node, o.key.origin_op, o.phase))
        .collect();
    assert_eq!(
        keys,
        vec![
            (1, 1, OpPhase::Succeeded),
            (1, 2, OpPhase::Succeeded),
            (2, 1, OpPhase::Failed)
        ]
    );
    // The log: the common prefix once, then both sides' records, none twice.
    let accepted = l
        .log
        .iter()
        .filter(|r| matches!(r, Record::Accepted { .. }))
        .count();
    assert_eq!(accepted, 3, "{:?}", l.log);
    assert_eq!(l.log.len(), 6, "{:?}", l.log);
    assert!(l.active.is_empty());
    // Merging again changes nothing.
    let mut again = l.clone();
    again.merge(&right);
    assert_eq!(again.ops, l.ops);
    assert_eq!(again.log, l.log);
}

#[test]
fn a_merge_prefers_a_finished_operation_and_drops_what_the_sides_disagree_on() {
    let (a, b) = (m(1, 1), m(2, 2));
    let mut base = ClusterState::default();
    base.apply(&Delivered::Membership {
        members: vec![a, b],
        joined: vec![a, b],
    });
    for (x, name) in [(a, "n1"), (b, "n2")] {
        base.apply(&Delivered::Message {
            from: x,
            msg: Message::Hello(Hello {
                allow_without_quorum: true,
                ..hello(name, &["bmc-n3"])
            }),
        });
    }
    // Both sides fence n3: each side's newest operation on n3 is its own.
    let left = side(&base, &[a], a, 1, "n3", true);
    let right = side(&base, &[b], b, 1, "n3", true);
    let mut l = left.clone();
    l.merge(&right);
    assert_eq!(l.ops.len(), 2);
    assert!(
        !l.latest.contains_key("n3"),
        "the sides disagree on n3's newest operation: no request id may be answered from either"
    );
    // One side saw an operation finish that the other still had running.
    let mut running = left.clone();
    let k = *running.ops.keys().next().unwrap();
    running.ops.get_mut(&k).unwrap().phase = OpPhase::Running;
    running.active.insert("n3".into(), k);
    let mut merged = running.clone();
    merged.merge(&left);
    assert_eq!(merged.ops[&k].phase, OpPhase::Succeeded);
    assert!(merged.active.is_empty(), "{:?}", merged.active);
}

/// Two groups of [`Member`]s that were one group, split, and each kept going; `heal`
/// delivers to each side the change CPG delivers it (the other side's members joined), then
/// one common sequence, as Corosync's total order does after the merge.
struct Split {
    left: Vec<Member>,
    right: Vec<Member>,
}

impl Split {
    /// n1 (left) and n2, n3 (right), each allowed without quorum, every one reaching every
    /// BMC; founded together, then split.
    fn new() -> Split {
        let ids = [m(1, 1), m(2, 2), m(3, 3)];
        let mut all: Vec<Member> = ids.iter().map(|i| Member::new(*i)).collect();
        let mut common = vec![Delivered::Membership {
            members: ids.to_vec(),
            joined: ids.to_vec(),
        }];
        for (i, x) in ids.iter().enumerate() {
            common.push(Delivered::Message {
                from: *x,
                msg: Message::Hello(Hello {
                    allow_without_quorum: true,
                    ..hello(
                        &format!("n{}", i + 1),
                        &["bmc-n1", "bmc-n2", "bmc-n3", "pdu"],
                    )
                }),
            });
        }
        for d in &common {
            for mem in &mut all {
                mem.apply(d);
            }
        }
        let right = all.split_off(1);
        let mut s = Split { left: all, right };
        s.side(
            true,
            &Delivered::Membership {
                members: vec![ids[0]],
                joined: vec![],
            },
        );
        s.side(
            false,
            &Delivered::Membership {
                members: vec![ids[1], ids[2]],
                joined: vec![],
            },
        );
        s
    }

    /// Delivers `d` to one side only; returns the effects of its members.
    fn side(&mut self, left: bool, d: &Delivered) -> Vec<(MemberId, Vec<Effect>)> {
        let ms = if left {
            &mut self.left
        } else {
            &mut self.right
        };
        ms.iter_mut().map(|x| (x.me, x.apply(d))).collect()
    }

    /// Delivers `d` to every member of both sides.
    fn all(&mut self, d: &Delivered) -> Vec<(MemberId, Vec<Effect>)> {
        let mut fx = self.side(true, d);
        fx.extend(self.side(false, d));
        fx
    }

    /// One fence of `target` claimed (`n`) and executed by `by` on one side, finished as
    /// confirmed off or left running.
    fn fence(&mut self, left: bool, by: MemberId, n: u64, target: &str, finish: bool) -> OpKey {
        self.side(
            left,
            &Delivered::Message {
                from: by,
                msg: Message::Quorum { quorate: true },
            },
        );
        let fx = self.side(
            left,
            &Delivered::Message {
                from: by,
                msg: Message::Claim(Claim {
                    origin_op: n,
                    target: target.into(),
                    action: Action::Off,
                    request_id: None,
                    levels: levels(target),
                    reason: "split".into(),
                }),
            },
        );
        let op = OpKey {
            origin: by,
            origin_op: n,
        };
        assert!(
            fx.iter().any(|(_, f)| f.contains(&Effect::Execute {
                op,
                executor: by,
                takeover: false
            })),
            "{fx:?}"
        );
        if finish {
            for msg in [
                Message::Confirmed {
                    op,
                    proof: Proof::PowerReadBack {
                        detail: "read back off".into(),
                    },
                },
                Message::Outcome {
                    op,
                    result: ExecResult::Succeeded {
                        summary: "off".into(),
                    },
                    record: None,
                },
            ] {
                self.side(left, &Delivered::Message { from: by, msg });
            }
        }
        op
    }

    /// The heal: each side's change, then the runtime's answers to it (Hello holding a state,
    /// each side's snapshot from its lowest member, in the order given), through the wire.
    fn heal(&mut self, right_sync_first: bool) -> Vec<(MemberId, Vec<Effect>)> {
        let (l, r): (Vec<MemberId>, Vec<MemberId>) = (
            self.left.iter().map(|x| x.me).collect(),
            self.right.iter().map(|x| x.me).collect(),
        );
        let mut members: Vec<MemberId> = l.iter().chain(&r).copied().collect();
        members.sort();
        let mut syncs = Vec::new();
        for (left, joined) in [(true, r.clone()), (false, l.clone())] {
            for (me, fx) in self.side(
                left,
                &Delivered::Membership {
                    members: members.clone(),
                    joined,
                },
            ) {
                for e in fx {
                    if let Effect::SendSync {
                        sender,
                        for_members,
                        snapshot,
                    } = e
                    {
                        if sender == me {
                            let msg = Message::Sync {
                                for_members,
                                snapshot,
                            };
                            let msg = crate::cluster::wire::decode(
                                &crate::cluster::wire::encode(&msg).unwrap(),
                            )
                            .unwrap();
                            syncs.push((left, Delivered::Message { from: sender, msg }));
                        }
                    }
                }
            }
        }
        assert_eq!(syncs.len(), 2, "each side sends one snapshot: {syncs:?}");
        if right_sync_first {
            syncs.reverse();
        }
        let mut fx = Vec::new();
        for x in &members {
            let h = Hello {
                holds_state: true,
                allow_without_quorum: true,
                ..hello(
                    &format!("n{}", x.node),
                    &["bmc-n1", "bmc-n2", "bmc-n3", "pdu"],
                )
            };
            fx.extend(self.all(&Delivered::Message {
                from: *x,
                msg: Message::Hello(h),
            }));
        }
        for (_, s) in syncs {
            fx.extend(self.all(&s));
        }
        fx
    }

    fn members(&self) -> impl Iterator<Item = &Member> {
        self.left.iter().chain(&self.right)
    }
}

#[test]
fn healed_partitions_that_both_kept_the_group_converge_on_every_member_in_either_order() {
    for right_first in [false, true] {
        let mut s = Split::new();
        let (a, b) = (m(1, 1), m(2, 2));
        // Each side fences a target the other does not: both succeed with a read-back.
        let ka = s.fence(true, a, 1, "n3", true);
        let kb = s.fence(false, b, 1, "n1", true);
        let fx = s.heal(right_first);
        let reference = s.left[0].state.clone();
        for x in s.members() {
            assert!(!x.merging(), "{} is still merging", x.me);
            assert!(x.synced);
            assert_eq!(
                x.state, reference,
                "{} differs (right first: {right_first})",
                x.me
            );
        }
        assert_eq!(reference.ops[&ka].phase, OpPhase::Succeeded);
        assert_eq!(reference.ops[&kb].phase, OpPhase::Succeeded);
        assert!(
            reference.members.values().all(|i| i.synced),
            "{:?}",
            reference.members
        );
        // Every member says it merged two sides (so the runtime copies what it lacked).
        for x in s.members() {
            assert!(
                fx.iter()
                    .any(|(me, f)| *me == x.me && f.contains(&Effect::Merged { sides: 2 })),
                "{} did not report the merge: {fx:?}",
                x.me
            );
        }
        // Both sides' records, the common ones once; no conflict (disjoint targets).
        let finished = reference
            .log
            .iter()
            .filter(|r| matches!(r, Record::Finished { .. }))
            .count();
        assert_eq!(finished, 2, "{:?}", reference.log);
        assert!(
            !reference
                .log
                .iter()
                .any(|r| matches!(r, Record::MergeConflict { .. })),
            "{:?}",
            reference.log
        );
        // After the heal the group agrees again: a claim is decided the same everywhere.
        s.all(&Delivered::Message {
            from: m(3, 3),
            msg: Message::Quorum { quorate: true },
        });
        let fx = s.all(&Delivered::Message {
            from: m(3, 3),
            msg: Message::Claim(Claim {
                origin_op: 9,
                target: "n2".into(),
                action: Action::Off,
                request_id: None,
                levels: levels("n2"),
                reason: "after".into(),
            }),
        });
        let decided: BTreeSet<String> =
            fx.iter().map(|(_, f)| format!("{:?}", f.first())).collect();
        assert_eq!(decided.len(), 1, "members decided differently: {decided:?}");
    }
}

#[test]
fn deliveries_during_a_heal_are_held_and_decided_once_on_the_merged_state() {
    let mut s = Split::new();
    let (a, b, c) = (m(1, 1), m(2, 2), m(3, 3));
    s.fence(true, a, 1, "n3", true);
    // The heal's change, then a claim from c before either snapshot is delivered.
    let members = vec![a, b, c];
    s.side(
        true,
        &Delivered::Membership {
            members: members.clone(),
            joined: vec![b, c],
        },
    );
    let fx = s.side(
        false,
        &Delivered::Membership {
            members: members.clone(),
            joined: vec![a],
        },
    );
    let sync_right = fx
        .iter()
        .flat_map(|(_, f)| f.iter())
        .find_map(|e| match e {
            Effect::SendSync {
                sender,
                for_members,
                snapshot,
            } => Some(Delivered::Message {
                from: *sender,
                msg: Message::Sync {
                    for_members: for_members.clone(),
                    snapshot: snapshot.clone(),
                },
            }),
            _ => None,
        })
        .unwrap();
    let sync_left = Delivered::Message {
        from: a,
        msg: Message::Sync {
            for_members: vec![b, c],
            snapshot: Box::new(s.left[0].state.clone()),
        },
    };
    s.all(&Delivered::Message {
        from: c,
        msg: Message::Quorum { quorate: true },
    });
    // c claims n3, which the left side already fenced: nobody decides it yet.
    let fx = s.all(&Delivered::Message {
        from: c,
        msg: Message::Claim(Claim {
            origin_op: 5,
            target: "n3".into(),
            action: Action::On,
            request_id: None,
            levels: levels("n3"),
            reason: "during the heal".into(),
        }),
    });
    assert!(fx.iter().all(|(_, f)| f.is_empty()), "{fx:?}");
    for x in members.iter() {
        let h = Hello {
            holds_state: true,
            allow_without_quorum: true,
            ..hello(
                &format!("n{}", x.node),
                &["bmc-n1", "bmc-n2", "bmc-n3", "pdu"],
            )
        };
        s.all(&Delivered::Message {
            from: *x,
            msg: Message::Hello(h),
        });
    }
    let mut decisions = Vec::new();
    for sync in [sync_left, sync_right] {
        for (me, f) in s.all(&sync) {
            for e in f {
                if let Effect::Decided { claim, result } = e {
                    decisions.push((me, claim, result));
                }
            }
        }
    }
    // Each member decided c's claim exactly once, and all the same way.
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    let results: BTreeSet<String> = decisions.iter().map(|d| format!("{:?}", d.2)).collect();
    assert_eq!(results.len(), 1, "{decisions:?}");
    let reference = s.left[0].state.clone();
    for x in s.members() {
        assert_eq!(x.state, reference, "{} differs", x.me);
    }
}

#[test]
fn a_conflict_found_at_the_merge_is_recorded_and_keeps_the_target_owned_until_both_finish() {
    let mut s = Split::new();
    let (a, b) = (m(1, 1), m(2, 2));
    // Both sides start an operation on n3 and neither has finished at the heal.
    let ka = s.fence(true, a, 1, "n3", false);
    let kb = s.fence(false, b, 1, "n3", false);
    s.heal(false);
    let st = s.left[0].state.clone();
    for x in s.members() {
        assert_eq!(x.state, st, "{} differs", x.me);
    }
    let low = ka.min(kb);
    let high = ka.max(kb);
    assert_eq!(st.active.get("n3"), Some(&low));
    let conflict = st
        .log
        .iter()
        .find_map(|r| match r {
            Record::MergeConflict { target, ops, .. } => Some((target.clone(), ops.clone())),
            _ => None,
        })
        .expect("the conflict is recorded");
    assert_eq!(conflict, ("n3".to_string(), vec![low, high]));
    // The owner finishes with its read-back: the target stays owned by the other one, so a
    // new claim on it is refused as a conflict.
    let owner = st.ops[&low].executor;
    for msg in [
        Message::Confirmed {
            op: low,
            proof: Proof::PowerReadBack {
                detail: "off".into(),
            },
        },
        Message::Outcome {
            op: low,
            result: ExecResult::Succeeded {
                summary: "off".into(),
            },
            record: None,
        },
    ] {
        s.all(&Delivered::Message { from: owner, msg });
    }
    let st = s.left[0].state.clone();
    assert_eq!(st.ops[&low].phase, OpPhase::Succeeded);
    assert_eq!(st.active.get("n3"), Some(&high));
    // The other executor's success without its own read-back is a failure.
    let other = st.ops[&high].executor;
    s.all(&Delivered::Message {
        from: other,
        msg: Message::Outcome {
            op: high,
            result: ExecResult::Succeeded {
                summary: "off".into(),
            },
            record: None,
        },
    });
    let st = s.left[0].state.clone();
    assert_eq!(st.ops[&high].phase, OpPhase::Failed);
    assert!(st.active.is_empty(), "{:?}", st.active);
    for x in s.members() {
        assert_eq!(x.state, st, "{} differs", x.me);
    }
}

#[test]
fn a_side_whose_snapshot_sender_leaves_before_its_sync_still_sends_it_and_the_heal_completes() {
    let mut s = Split::new();
    let (a, b, c) = (m(1, 1), m(2, 2), m(3, 3));
    let ka = s.fence(true, a, 1, "n3", true);
    let kb = s.fence(false, b, 1, "n1", true);
    let members = vec![a, b, c];
    let fx_left = s.side(
        true,
        &Delivered::Membership {
            members: members.clone(),
            joined: vec![b, c],
        },
    );
    s.side(
        false,
        &Delivered::Membership {
            members: members.clone(),
            joined: vec![a],
        },
    );
    // Only the left side's snapshot is delivered; b, the right side's sender, dies first.
    let sync_left = fx_left
        .iter()
        .flat_map(|(_, f)| f.iter())
        .find_map(|e| match e {
            Effect::SendSync {
                sender,
                for_members,
                snapshot,
            } => Some(Delivered::Message {
                from: *sender,
                msg: Message::Sync {
                    for_members: for_members.clone(),
                    snapshot: snapshot.clone(),
                },
            }),
            _ => None,
        })
        .unwrap();
    s.all(&sync_left);
    s.right.retain(|x| x.me != b);
    let fx = s.all(&Delivered::Membership {
        members: vec![a, c],
        joined: vec![],
    });
    assert!(
        s.left[0].merging(),
        "a still waits for the right side's state"
    );
    // c, now the right side's lowest, sends the right side's snapshot.
    let resent = fx
        .iter()
        .filter(|(me, _)| *me == c)
        .flat_map(|(_, f)| f.iter())
        .find_map(|e| match e {
            Effect::SendSync {
                sender,
                for_members,
                snapshot,
            } if *sender == c => Some(Delivered::Message {
                from: c,
                msg: Message::Sync {
                    for_members: for_members.clone(),
                    snapshot: snapshot.clone(),
                },
            }),
            _ => None,
        })
        .unwrap_or_else(|| panic!("c did not send the right side's snapshot: {fx:?}"));
    s.all(&resent);
    assert!(!s.left[0].merging());
    let st = s.left[0].state.clone();
    assert_eq!(s.right[0].state, st, "a and c differ");
    assert_eq!(st.ops[&ka].phase, OpPhase::Succeeded);
    assert_eq!(st.ops[&kb].phase, OpPhase::Succeeded);
}
