//! Durable fencing history: an embedded redb database file.
//!
//! Why redb: it is an embedded, pure-Rust, ACID store whose commits are durable (fsync) by
//! default, so "written before the first device is touched" holds across power loss; it needs
//! no C library or server (SQLite would add a C build and ~1 MiB of resident code on a
//! Raspberry Pi-class controller), and its page cache can be capped to keep `fenced` small.
//!
//! Two views are kept in the same transaction: the latest snapshot of every operation (indexed
//! by target and by creation time, for queries) and an append-only ledger in which every record
//! holds the SHA-256 of the previous one, so removing or changing a record breaks the chain.
//! Signatures can later be added over the same chain without a migration.

use crate::model::{Action, HistoryQuery, Millis, OpState, Operation, Outcome, PauseStatus};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

const OPS: TableDefinition<u64, &[u8]> = TableDefinition::new("operations");
const BY_TARGET: TableDefinition<(&str, u64, u64), ()> =
    TableDefinition::new("operations_by_target");
const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("operations_by_time");
const IN_FLIGHT: TableDefinition<u64, ()> = TableDefinition::new("operations_in_flight");
const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// redb's page cache; the default (1 GiB cap) is far above what a fence controller needs.
const CACHE_BYTES: usize = 512 * 1024;

/// A history store error.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database could not be opened, read or written.
    #[error("history database {path}: {detail}")]
    Store {
        /// The file.
        path: String,
        /// The store's error.
        detail: String,
    },
    /// A stored record does not decode.
    #[error("history record {key} is corrupt: {detail}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Why it does not decode.
        detail: String,
    },
    /// The ledger's hash chain is broken at `seq`: a record was removed or changed.
    #[error("ledger record {seq} does not chain to its predecessor: {detail}")]
    ChainBroken {
        /// First bad record.
        seq: u64,
        /// What does not match.
        detail: String,
    },
}

/// What a ledger record says happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LedgerEntry {
    /// An operation was created or changed (the full snapshot).
    Operation {
        /// The operation as it is now.
        operation: Operation,
    },
    /// The pause switch changed.
    Pause {
        /// The new status.
        status: PauseStatus,
    },
    /// A request was refused by a safety rule.
    Refused {
        /// When.
        at_ms: Millis,
        /// Who asked.
        by: String,
        /// For which target.
        target: String,
        /// What they asked.
        action: Action,
        /// Error code.
        code: String,
        /// Details.
        detail: String,
    },
}

/// A ledger record: the entry, its sequence number and the chain hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// 1-based position.
    pub seq: u64,
    /// Hash of the previous record (all zeros for the first).
    pub prev_hash: String,
    /// What happened.
    pub entry: LedgerEntry,
    /// SHA-256 over `seq`, `prev_hash` and the entry's JSON.
    pub hash: String,
}

fn chain_hash(seq: u64, prev_hash: &str, entry_json: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(seq.to_be_bytes());
    h.update(prev_hash.as_bytes());
    h.update(entry_json);
    hex::encode(h.finalize())
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The history store.
pub struct History {
    db: Database,
    path: String,
}

impl History {
    /// Opens (or creates) the history file. Operations found in flight (the daemon died during
    /// them) are recorded as failed with code `interrupted` and returned: a crash is never a
    /// success.
    pub fn open(path: &Path, now_ms: Millis) -> Result<(History, Vec<Operation>), HistoryError> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| HistoryError::Store {
                path: p.clone(),
                detail: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| HistoryError::Store {
                path: p.clone(),
                detail: e.to_string(),
            })?;
        let h = History { db, path: p };
        h.init_tables()?;
        let interrupted = h.recover(now_ms)?;
        Ok((h, interrupted))
    }

    fn store_err(&self, e: impl std::fmt::Display) -> HistoryError {
        HistoryError::Store {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn init_tables(&self) -> Result<(), HistoryError> {
        let tx = self.db.begin_write().map_err(|e| self.store_err(e))?;
        {
            tx.open_table(OPS).map_err(|e| self.store_err(e))?;
            tx.open_table(BY_TARGET).map_err(|e| self.store_err(e))?;
            tx.open_table(BY_TIME).map_err(|e| self.store_err(e))?;
            tx.open_table(IN_FLIGHT).map_err(|e| self.store_err(e))?;
            tx.open_table(LEDGER).map_err(|e| self.store_err(e))?;
            tx.open_table(META).map_err(|e| self.store_err(e))?;
        }
        tx.commit().map_err(|e| self.store_err(e))
    }

    fn recover(&self, now_ms: Millis) -> Result<Vec<Operation>, HistoryError> {
        let ids: Vec<u64> = {
            let rx = self.db.begin_read().map_err(|e| self.store_err(e))?;
            let t = rx.open_table(IN_FLIGHT).map_err(|e| self.store_err(e))?;
            let mut v = Vec::new();
            for r in t.iter().map_err(|e| self.store_err(e))? {
                v.push(r.map_err(|e| self.store_err(e))?.0.value());
            }
            v
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(mut op) = self.get(id)? {
                op.state = OpState::Failed;
                op.finished_ms = Some(now_ms);
                op.outcome = Some(Outcome::Failed {
                    code: "interrupted".into(),
                    message: format!(
                        "{} NOT confirmed: fenced stopped during this operation (crash or restart); devices may have been left in any state — check the target and fence again",
                        op.target
                    ),
                });
                self.record(&op)?;
                out.push(op);
            }
        }
        Ok(out)
    }

    /// Writes an operation's current snapshot and appends it to the ledger, in one durable
    /// transaction.
    pub fn record(&self, op: &Operation) -> Result<(), HistoryError> {
        let json = serde_json::to_vec(op).map_err(|e| self.store_err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.store_err(e))?;
        {
            let mut ops = tx.open_table(OPS).map_err(|e| self.store_err(e))?;
            let is_new = ops.get(op.id).map_err(|e| self.store_err(e))?.is_none();
            ops.insert(op.id, json.as_slice())
                .map_err(|e| self.store_err(e))?;
            if is_new {
                tx.open_table(BY_TARGET)
                    .map_err(|e| self.store_err(e))?
                    .insert((op.target.as_str(), op.created_ms, op.id), ())
                    .map_err(|e| self.store_err(e))?;
                tx.open_table(BY_TIME)
                    .map_err(|e| self.store_err(e))?
                    .insert((op.created_ms, op.id), ())
                    .map_err(|e| self.store_err(e))?;
            }
            let mut inflight = tx.open_table(IN_FLIGHT).map_err(|e| self.store_err(e))?;
            if op.state.is_terminal() {
                inflight.remove(op.id).map_err(|e| self.store_err(e))?;
            } else {
                inflight.insert(op.id, ()).map_err(|e| self.store_err(e))?;
            }
        }
        self.append_in(
            &tx,
            &LedgerEntry::Operation {
                operation: op.clone(),
            },
        )?;
        tx.commit().map_err(|e| self.store_err(e))
    }

    /// Appends a non-operation entry (pause switch, refusal) to the ledger.
    pub fn append_event(&self, entry: LedgerEntry) -> Result<(), HistoryError> {
        let tx = self.db.begin_write().map_err(|e| self.store_err(e))?;
        if let LedgerEntry::Pause { status } = &entry {
            let json = serde_json::to_vec(status).map_err(|e| self.store_err(e))?;
            tx.open_table(META)
                .map_err(|e| self.store_err(e))?
                .insert("pause", json.as_slice())
                .map_err(|e| self.store_err(e))?;
        }
        self.append_in(&tx, &entry)?;
        tx.commit().map_err(|e| self.store_err(e))
    }

    fn append_in(
        &self,
        tx: &redb::WriteTransaction,
        entry: &LedgerEntry,
    ) -> Result<(), HistoryError> {
        let mut ledger = tx.open_table(LEDGER).map_err(|e| self.store_err(e))?;
        let (seq, prev_hash) = match ledger.last().map_err(|e| self.store_err(e))? {
            None => (1, GENESIS.to_string()),
            Some((k, v)) => {
                let rec: LedgerRecord =
                    serde_json::from_slice(v.value()).map_err(|e| HistoryError::Corrupt {
                        key: format!("ledger/{}", k.value()),
                        detail: e.to_string(),
                    })?;
                (k.value() + 1, rec.hash)
            }
        };
        let entry_json = serde_json::to_vec(entry).map_err(|e| self.store_err(e))?;
        let hash = chain_hash(seq, &prev_hash, &entry_json);
        let rec = LedgerRecord {
            seq,
            prev_hash,
            entry: entry.clone(),
            hash,
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| self.store_err(e))?;
        ledger
            .insert(seq, bytes.as_slice())
            .map_err(|e| self.store_err(e))?;
        Ok(())
    }

    /// One operation by id.
    pub fn get(&self, id: u64) -> Result<Option<Operation>, HistoryError> {
        let rx = self.db.begin_read().map_err(|e| self.store_err(e))?;
        let t = rx.open_table(OPS).map_err(|e| self.store_err(e))?;
        match t.get(id).map_err(|e| self.store_err(e))? {
            None => Ok(None),
            Some(v) => {
                serde_json::from_slice(v.value())
                    .map(Some)
                    .map_err(|e| HistoryError::Corrupt {
                        key: format!("operations/{id}"),
                        detail: e.to_string(),
                    })
            }
        }
    }

    /// Operations matching the query, newest first.
    pub fn query(&self, q: &HistoryQuery) -> Result<Vec<Operation>, HistoryError> {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
        let since = q.since_ms.unwrap_or(0);
        let until = q.until_ms.unwrap_or(u64::MAX);
        if since >= until {
            return Ok(Vec::new());
        }
        let rx = self.db.begin_read().map_err(|e| self.store_err(e))?;
        let mut ids = Vec::new();
        match &q.target {
            Some(target) => {
                let t = rx.open_table(BY_TARGET).map_err(|e| self.store_err(e))?;
                let range = t
                    .range((target.as_str(), since, 0)..(target.as_str(), until, 0))
                    .map_err(|e| self.store_err(e))?;
                for r in range.rev() {
                    ids.push(r.map_err(|e| self.store_err(e))?.0.value().2);
                    if ids.len() >= limit {
                        break;
                    }
                }
            }
            None => {
                let t = rx.open_table(BY_TIME).map_err(|e| self.store_err(e))?;
                for r in t
                    .range((since, 0)..(until, 0))
                    .map_err(|e| self.store_err(e))?
                    .rev()
                {
                    ids.push(r.map_err(|e| self.store_err(e))?.0.value().1);
                    if ids.len() >= limit {
                        break;
                    }
                }
            }
        }
        drop(rx);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(op) = self.get(id)? {
                out.push(op);
            }
        }
        Ok(out)
    }

    /// The highest operation id ever recorded (0 if none).
    pub fn last_operation_id(&self) -> Result<u64, HistoryError> {
        let rx = self.db.begin_read().map_err(|e| self.store_err(e))?;
        let t = rx.open_table(OPS).map_err(|e| self.store_err(e))?;
        let last = t
            .last()
            .map_err(|e| self.store_err(e))?
            .map_or(0, |(k, _)| k.value());
        Ok(last)
    }

    /// The pause switch as last recorded.
    pub fn pause_status(&self) -> Result<PauseStatus, HistoryError> {
        let rx = self.db.begin_read().map_err(|e| self.store_err(e))?;
        let t = rx.open_table(META).map_err(|e| self.store_err(e))?;
        match t.get("pause").map_err(|e| self.store_err(e))? {
            None => Ok(PauseStatus {
                paused: false,
                by: None,
                reason: None,
                since_ms: None,
            }),
            Some(v) => serde_json::from_slice(v.value()).map_err(|e| HistoryError::Corrupt {
                key: "meta/pause".into(),
                detail: e.to_string(),
            }),
        }
    }

    /// Ledger records from `from_seq` on (at most `limit`).
    pub fn ledger(&self, from_seq: u64, limit: usize) -> Result<Vec<LedgerRecord>, HistoryError> {
        let rx = self.db.begin_read().map_err(|e| self.store_err(e))?;
        let t = rx.open_table(LEDGER).map_err(|e| self.store_err(e))?;
        let mut out = Vec::new();
        for r in t
            .range(from_seq..)
            .map_err(|e| self.store_err(e))?
            .take(limit)
        {
            let (k, v) = r.map_err(|e| self.store_err(e))?;
            out.push(
                serde_json::from_slice(v.value()).map_err(|e| HistoryError::Corrupt {
                    key: format!("ledger/{}", k.value()),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// Walks the whole ledger and checks every link; returns the number of records.
    pub fn verify_chain(&self) -> Result<u64, HistoryError> {
        let rx = self.db.begin_read().map_err(|e| self.store_err(e))?;
        let t = rx.open_table(LEDGER).map_err(|e| self.store_err(e))?;
        let mut prev = GENESIS.to_string();
        let mut expected_seq = 1u64;
        for r in t.iter().map_err(|e| self.store_err(e))? {
            let (k, v) = r.map_err(|e| self.store_err(e))?;
            let seq = k.value();
            let rec: LedgerRecord =
                serde_json::from_slice(v.value()).map_err(|e| HistoryError::ChainBroken {
                    seq,
                    detail: format!("does not decode: {e}"),
                })?;
            if seq != expected_seq || rec.seq != seq {
                return Err(HistoryError::ChainBroken {
                    seq,
                    detail: format!("expected record {expected_seq}: a record was removed"),
                });
            }
            if rec.prev_hash != prev {
                return Err(HistoryError::ChainBroken {
                    seq,
                    detail: "prev_hash does not match the previous record's hash".into(),
                });
            }
            let entry_json = serde_json::to_vec(&rec.entry).map_err(|e| self.store_err(e))?;
            if chain_hash(seq, &rec.prev_hash, &entry_json) != rec.hash {
                return Err(HistoryError::ChainBroken {
                    seq,
                    detail: "hash does not match the record's content: it was changed".into(),
                });
            }
            prev = rec.hash;
            expected_seq += 1;
        }
        Ok(expected_seq - 1)
    }

    #[cfg(test)]
    pub(crate) fn tamper_ledger(&self, seq: u64, f: impl FnOnce(&mut LedgerRecord)) {
        let mut rec = self.ledger(seq, 1).unwrap().remove(0);
        f(&mut rec);
        let tx = self.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(LEDGER).unwrap();
            let bytes = serde_json::to_vec(&rec).unwrap();
            t.insert(seq, bytes.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }

    #[cfg(test)]
    pub(crate) fn remove_ledger(&self, seq: u64) {
        let tx = self.db.begin_write().unwrap();
        tx.open_table(LEDGER).unwrap().remove(seq).unwrap();
        tx.commit().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Caller;

    fn op(id: u64, target: &str, created_ms: u64) -> Operation {
        Operation {
            id,
            target: target.into(),
            action: Action::Off,
            reason: String::new(),
            requested_by: Caller {
                identity: "uid:0".into(),
            },
            request_id: None,
            state: OpState::Succeeded,
            created_ms,
            started_ms: Some(created_ms),
            finished_ms: Some(created_ms + 1),
            delay_ms: 0,
            attempts: vec![],
            outcome: None,
        }
    }

    fn filled() -> (tempfile::TempDir, History) {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("h.redb"), 0).unwrap();
        for i in 1..=6 {
            h.record(&op(i, if i % 2 == 0 { "a" } else { "b" }, i * 100))
                .unwrap();
        }
        (dir, h)
    }

    #[test]
    fn queries_by_target_and_time_newest_first() {
        let (_d, h) = filled();
        let ids = |q: HistoryQuery| {
            h.query(&q)
                .unwrap()
                .iter()
                .map(|o| o.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(HistoryQuery::default()), vec![6, 5, 4, 3, 2, 1]);
        assert_eq!(
            ids(HistoryQuery {
                target: Some("a".into()),
                ..Default::default()
            }),
            vec![6, 4, 2]
        );
        assert_eq!(
            ids(HistoryQuery {
                target: Some("a".into()),
                since_ms: Some(200),
                until_ms: Some(600),
                limit: None
            }),
            vec![4, 2]
        );
        assert_eq!(
            ids(HistoryQuery {
                limit: Some(2),
                ..Default::default()
            }),
            vec![6, 5]
        );
        assert_eq!(h.last_operation_id().unwrap(), 6);
    }

    #[test]
    fn intact_chain_verifies() {
        let (_d, h) = filled();
        h.append_event(LedgerEntry::Pause {
            status: PauseStatus {
                paused: true,
                by: Some("uid:0".into()),
                reason: Some("x".into()),
                since_ms: Some(1),
            },
        })
        .unwrap();
        assert_eq!(h.verify_chain().unwrap(), 7);
        assert!(h.pause_status().unwrap().paused);
    }

    #[test]
    fn changed_record_breaks_the_chain_at_that_record() {
        let (_d, h) = filled();
        h.tamper_ledger(3, |r| {
            if let LedgerEntry::Operation { operation } = &mut r.entry {
                operation.state = OpState::Failed;
            }
        });
        match h.verify_chain() {
            Err(HistoryError::ChainBroken { seq, detail }) => {
                assert_eq!(seq, 3);
                assert!(detail.contains("changed"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn changed_record_with_recomputed_hash_breaks_the_next_link() {
        let (_d, h) = filled();
        h.tamper_ledger(2, |r| {
            r.entry = LedgerEntry::Operation {
                operation: op(2, "a", 1),
            };
            let json = serde_json::to_vec(&r.entry).unwrap();
            r.hash = chain_hash(r.seq, &r.prev_hash, &json);
        });
        assert!(matches!(
            h.verify_chain(),
            Err(HistoryError::ChainBroken { seq: 3, .. })
        ));
    }

    #[test]
    fn removed_record_is_detected() {
        let (_d, h) = filled();
        h.remove_ledger(4);
        assert!(matches!(
            h.verify_chain(),
            Err(HistoryError::ChainBroken { seq: 5, .. })
        ));
        let (_d, h) = filled();
        h.remove_ledger(1);
        assert!(matches!(
            h.verify_chain(),
            Err(HistoryError::ChainBroken { seq: 2, .. })
        ));
    }
}

#[cfg(test)]
mod figures {
    use super::*;

    /// Prints what one durable commit costs on this disk (`cargo nextest run -p fenced
    /// figure_history_commit --run-ignored only --no-capture`). A figure, not an assertion.
    #[test]
    #[ignore]
    fn figure_history_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("h.redb"), 0).unwrap();
        let mut op = tests_op(1);
        let mut times = Vec::new();
        for i in 0..50 {
            op.id = i + 1;
            let t = std::time::Instant::now();
            h.record(&op).unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "history record (durable commit): median {:?}, p90 {:?}",
            times[25], times[45]
        );
    }

    fn tests_op(id: u64) -> Operation {
        Operation {
            id,
            target: "n".into(),
            action: Action::Off,
            reason: String::new(),
            requested_by: crate::model::Caller {
                identity: "uid:0".into(),
            },
            request_id: None,
            state: OpState::Running,
            created_ms: 1,
            started_ms: None,
            finished_ms: None,
            delay_ms: 0,
            attempts: vec![],
            outcome: None,
        }
    }
}
