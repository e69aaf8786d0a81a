//! The ledger checked on a schedule, for `/metrics`: a ledger that stops verifying (a record
//! changed or removed on disk) should page someone the hour it happens, not the day an auditor
//! asks. Each check is [`Engine::verify_ledger`], the same as `GET /v1/ledger/verify`, off the
//! event loop (one signature per record).

use super::metrics::Page;
use crate::engine::audit::LedgerCheck;
use crate::engine::Engine;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time between checks. A check costs one signature verification per record (tens of
/// microseconds each): a ledger of a hundred thousand records takes seconds of one core, so
/// every few minutes would be waste and every day too late for an alert.
pub const INTERVAL: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Last {
    /// The last completed check's verdict: `Some(true)` intact, `Some(false)` broken.
    intact: Option<bool>,
    /// When it completed, seconds since the Unix epoch.
    at_s: f64,
    /// The first bad record, when broken.
    first_bad_seq: Option<u64>,
    /// Checks by result.
    intact_n: u64,
    broken_n: u64,
    error_n: u64,
}

/// The scheduled ledger check's last result.
#[derive(Default)]
pub struct LedgerWatch {
    last: Mutex<Last>,
}

impl LedgerWatch {
    fn last(&self) -> std::sync::MutexGuard<'_, Last> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the whole ledger once and records the result.
    pub async fn check(&self, engine: &Engine) {
        let e = engine.clone();
        let r = tokio::task::spawn_blocking(move || e.verify_ledger()).await;
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut l = self.last();
        match r {
            Ok(Ok(LedgerCheck::Intact(_))) => {
                l.intact = Some(true);
                l.at_s = now_s;
                l.first_bad_seq = None;
                l.intact_n += 1;
            }
            Ok(Ok(LedgerCheck::Broken { seq, detail })) => {
                if l.intact != Some(false) {
                    tracing::error!(first_bad_seq = seq, "the ledger fails verification: {detail}; run `fenced verify-ledger` on a copy of the history file and compare with a saved head hash");
                }
                l.intact = Some(false);
                l.at_s = now_s;
                l.first_bad_seq = Some(seq);
                l.broken_n += 1;
            }
            Ok(Err(e)) => {
                tracing::warn!("scheduled ledger check could not read the ledger: {e}");
                l.error_n += 1;
            }
            Err(e) => {
                tracing::warn!("scheduled ledger check stopped: {e}");
                l.error_n += 1;
            }
        }
    }

    /// Checks now, then every [`INTERVAL`], until `stop` completes.
    pub async fn run(&self, engine: Engine, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            self.check(&engine).await;
            tokio::select! {
                () = tokio::time::sleep(INTERVAL) => {}
                () = &mut stop => return,
            }
        }
    }

    /// Appends the check's gauges and counters to a metrics page. `palisade_ledger_intact` is
    /// absent until the first check completes: neither 1 nor 0 would be true before it.
    pub(super) fn render(&self, p: &mut Page) {
        let l = self.last();
        p.family(
            "palisade_ledger_intact",
            "gauge",
            "1 if the last scheduled check found every link and signature of the ledger intact, 0 if a record fails verification.",
        );
        if let Some(ok) = l.intact {
            p.sample("palisade_ledger_intact", &[], u8::from(ok));
        }
        p.family(
            "palisade_ledger_last_check_timestamp_seconds",
            "gauge",
            "When the last scheduled ledger check completed (intact or broken), seconds since the Unix epoch; 0 before the first.",
        );
        p.sample("palisade_ledger_last_check_timestamp_seconds", &[], l.at_s);
        p.family(
            "palisade_ledger_first_bad_seq",
            "gauge",
            "The first record that fails verification (present only while the ledger is broken).",
        );
        if let Some(seq) = l.first_bad_seq {
            p.sample("palisade_ledger_first_bad_seq", &[], seq);
        }
        p.family(
            "palisade_ledger_checks_total",
            "counter",
            "Scheduled ledger checks by result (intact, broken, error: the ledger could not be read).",
        );
        for (result, n) in [
            ("intact", l.intact_n),
            ("broken", l.broken_n),
            ("error", l.error_n),
        ] {
            p.sample("palisade_ledger_checks_total", &[("result", result)], n);
        }
    }
}
