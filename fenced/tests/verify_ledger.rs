//! `fenced verify-ledger` on a ledger written by shared commits (issue 15): one signature per
//! durable commit, on its newest record, vouches for the commit's other records. The offline
//! verifier must accept such a ledger and must still catch a change to a record inside a
//! commit, one no signature of its own covers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fenced::history::{load_or_create_key, History, LedgerEntry, Write};
use std::path::Path;
use std::process::{Command, Output};

const FENCED: &str = env!("CARGO_BIN_EXE_fenced");

fn audit(n: u64) -> LedgerEntry {
    LedgerEntry::Audit {
        at_ms: n,
        who: "uid:0".into(),
        from: "unix:uid=0".into(),
        what: format!("fence n{n} off"),
        why: "rack lost its network".into(),
        outcome: format!("accepted as operation {n}"),
    }
}

fn verify(db: &Path, key: &Path) -> Output {
    Command::new(FENCED)
        .arg("verify-ledger")
        .arg(db)
        .arg("--public-key")
        .arg(key)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verify_ledger_accepts_batched_commits_and_names_a_changed_inner_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.redb");
    let key_path = dir.path().join("ledger.key");
    let key = load_or_create_key(&key_path).unwrap();
    {
        let (h, _) = History::open_signed(&db, 0, key).unwrap();
        // Two shared commits, as a mass fence makes: records 1..=4, then 5..=7.
        for batch in [[1, 2, 3, 4].as_slice(), [5, 6, 7].as_slice()] {
            let writes: Vec<Write> = batch
                .iter()
                .map(|&n| Write::Events(vec![audit(n)]))
                .collect();
            assert!(h.commit_batch(&writes).iter().all(Result::is_ok));
        }
        let sigs: Vec<bool> = h
            .ledger(1, 100)
            .unwrap()
            .iter()
            .map(|r| r.sig.is_some())
            .collect();
        // One signature per commit, on its newest record.
        assert_eq!(sigs, [false, false, false, true, false, false, true]);
    }
    let pubkey = dir.path().join("ledger.key.pub");
    assert!(pubkey.exists(), "{} was not written", pubkey.display());

    let o = verify(&db, &pubkey);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("ledger intact: 7 records (7 signed, 0 unsigned"),
        "{}",
        text(&o)
    );

    // Record 2, inside the first commit and unsigned itself, changed after the fact.
    {
        let h = History::open_readonly_copy(&db).unwrap();
        let mut rec = h.ledger(2, 1).unwrap().remove(0);
        assert!(rec.sig.is_none());
        if let LedgerEntry::Audit { outcome, .. } = &mut rec.entry {
            *outcome = "refused".into();
        }
        h.overwrite_ledger_record(&rec).unwrap();
    }
    let o = verify(&db, &pubkey);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("ledger NOT intact") && text(&o).contains("record 2 "),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("changed"), "{}", text(&o));
}
