//! Mass fencing (issue 15), shared by the bench (`examples/mass_fence.rs`) and the suite's
//! test (`tests/mass_fence.rs`): one `palisade-lab ipmi --count N` child with N BMCs, a
//! `fenced` configuration with one target per BMC (identity pinned), and a round that sends
//! one request per target at once over the Unix socket (or one batch) and long-polls each
//! operation to its end.

use fenced::client::{Client, ClientError};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a mass-fencing setup could not start.
#[derive(Debug, thiserror::Error)]
pub enum MassError {
    /// `palisade-lab` could not be started.
    #[error("cannot start {bin}: {source}; build it first (`cargo build -p hw-tests --bin palisade-lab`)")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `palisade-lab` stopped before every BMC listened.
    #[error("palisade-lab printed {ready} of {count} ready lines and stopped{detail}; run it by hand to see why")]
    NotReady {
        /// Ready lines seen.
        ready: usize,
        /// BMCs asked for.
        count: usize,
        /// A read error, if that is what stopped it.
        detail: String,
    },
}

/// One simulated BMC of the fleet.
#[derive(Debug, Clone)]
pub struct Bmc {
    /// Its node's name (`node1`...), also the target's name.
    pub name: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The system GUID it reports, pinned as the target's identity.
    pub guid: String,
}

/// A `palisade-lab ipmi --count N` child, killed on drop (and on the death of the thread
/// that started it, so a killed bench or test leaves no lab behind).
pub struct Fleet {
    child: Child,
    /// The BMCs, in the order the lab printed them.
    pub bmcs: Vec<Bmc>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fleet {
    /// Starts `lab ipmi --count count` with user `admin` and the password in `pw`, each power
    /// change taking `delay_ms`, and waits until every BMC listens.
    pub fn start(lab: &Path, count: usize, delay_ms: u64, pw: &Path) -> Result<Fleet, MassError> {
        let mut cmd = Command::new(lab);
        cmd.args(["ipmi", "--count", &count.to_string(), "--user", "admin"])
            .arg("--password-file")
            .arg(pw)
            .args(["--power-delay-ms", &delay_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no parent memory.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| MassError::Spawn {
            bin: lab.display().to_string(),
            source,
        })?;
        let out = child.stdout.take();
        let mut fleet = Fleet {
            child,
            bmcs: Vec::new(),
        };
        let Some(out) = out else {
            return Err(MassError::NotReady {
                ready: 0,
                count,
                detail: " (no stdout)".into(),
            });
        };
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| MassError::NotReady {
                ready: fleet.bmcs.len(),
                count,
                detail: format!(" (reading its stdout: {e})"),
            })?;
            if let ["ipmi", name, addr, guid] = line.split_whitespace().collect::<Vec<_>>()[..] {
                fleet.bmcs.push(Bmc {
                    name: name.to_string(),
                    addr: addr.to_string(),
                    guid: guid.trim_start_matches("guid=").to_string(),
                });
            }
            if fleet.bmcs.len() == count {
                return Ok(fleet);
            }
        }
        Err(MassError::NotReady {
            ready: fleet.bmcs.len(),
            count,
            detail: String::new(),
        })
    }

    /// The targets' names.
    pub fn names(&self) -> Vec<String> {
        self.bmcs.iter().map(|b| b.name.clone()).collect()
    }
}

/// A `fenced` configuration for the fleet: socket and history in `dir`, one target per BMC
/// with its GUID pinned, limits raised (per target: `per_target` fencing operations per hour),
/// and a fence-race delay of `delay_s` on every target.
pub fn config(dir: &Path, fleet: &Fleet, pw: &Path, delay_s: f64, per_target: u32) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "[daemon]\nsocket = {:?}\nhistory = {:?}\nnode_name = \"mass\"\n",
        dir.join("fenced.sock"),
        dir.join("history.redb")
    );
    let _ = writeln!(s, "[api]\nmax_connections = 8192\n");
    let _ = writeln!(
        s,
        "[limits]\nwindow_s = 3600\nmax_operations = 100000\nmax_operations_per_target = {per_target}\n"
    );
    let _ = writeln!(
        s,
        "[defaults]\nattempt_timeout_s = 10\ntotal_timeout_s = 30\ndelay_s = {delay_s}\n"
    );
    for b in &fleet.bmcs {
        let _ = writeln!(
            s,
            "[devices.bmc-{name}]\nkind = \"ipmi\"\naddress = \"{addr}\"\nusername = \"admin\"\npassword_file = {pw:?}\ncipher_suite = \"auto\"\ntimeout_ms = 500\n\n[targets.{name}]\nlevels = [[\"bmc-{name}\"]]\nidentities = {{ bmc-{name} = \"{guid}\" }}\n",
            name = b.name,
            addr = b.addr,
            guid = b.guid,
        );
    }
    s
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The operation succeeded (the daemon read the power state back).
    Succeeded {
        /// The operation's id.
        id: u64,
        /// How it was confirmed (`power_read_back`, ...).
        method: String,
        /// Where its time went, by fenced's own clock (from the operation's record).
        times: Option<OpTimes>,
    },
    /// The operation failed, with its message.
    Failed(String),
    /// The request was refused, with the error code.
    Refused(String),
    /// Accepted and not waited for.
    Accepted,
}

/// Where one operation's time went, in ms of fenced's clock, from the operation's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpTimes {
    /// When fenced accepted the request (`created_ms`).
    pub created_ms: u64,
    /// Accepted to its first device step starting (the durable write of the operation, and
    /// waiting for the runtime).
    pub to_step: u64,
    /// The first step's start to the last step's end (identity check, command, read-back).
    pub steps: u64,
    /// The last step's end to the outcome being stored (`finished_ms`).
    pub to_outcome: u64,
    /// Status reads after the command, summed over the confirmed steps.
    pub polls: u64,
    /// When the outcome was stored (`finished_ms`).
    pub finished_ms: u64,
}

impl OpTimes {
    /// The times of an operation's JSON record; `None` if a field is missing.
    pub fn of(op: &Value) -> Option<OpTimes> {
        let created = op.get("created_ms")?.as_u64()?;
        let finished = op.get("finished_ms")?.as_u64()?;
        let attempts = op.get("attempts")?.as_array()?;
        let first = attempts.first()?.get("started_ms")?.as_u64()?;
        let last = attempts.last()?.get("finished_ms")?.as_u64()?;
        let polls = attempts
            .iter()
            .filter_map(|a| a.get("polls").and_then(Value::as_u64))
            .sum();
        Some(OpTimes {
            created_ms: created,
            to_step: first.saturating_sub(created),
            steps: last.saturating_sub(first),
            to_outcome: finished.saturating_sub(last),
            polls,
            finished_ms: finished,
        })
    }
}

/// One round's results.
pub struct Round {
    /// One outcome per target, in the order asked.
    pub outcomes: Vec<Outcome>,
    /// From the first request sent until every request was answered.
    pub answered: Duration,
    /// From the first request sent until the last outcome was read.
    pub ended: Duration,
}

/// How a round sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// One `POST /v1/fence` per target, all at once.
    Each,
    /// One `POST /v1/fence/batch` (in chunks of at most `MAX_BATCH` entries).
    Batch,
}

/// Sends `action` for every target in `names` at once and (with `wait`) long-polls each
/// operation until it ends.
pub async fn round(
    client: &Client,
    names: &[String],
    action: &str,
    wait: bool,
    send: Send,
) -> Round {
    let t0 = Instant::now();
    let ids: Vec<(Result<u64, String>, Duration)> = match send {
        Send::Each => {
            let posts = names.iter().map(|name| {
                let client = client.clone();
                let body = json!({"target": name, "action": action, "reason": "mass fence"});
                async move {
                    let r = client
                        .call(
                            "POST",
                            "/v1/fence",
                            Some(&body),
                            Some(Duration::from_secs(120)),
                        )
                        .await;
                    (accepted_id(r), t0.elapsed())
                }
            });
            join_local(posts.collect()).await
        }
        Send::Batch => {
            let mut out = Vec::with_capacity(names.len());
            for chunk in names.chunks(fenced::api::MAX_BATCH) {
                let requests: Vec<Value> = chunk
                    .iter()
                    .map(|n| json!({"target": n, "action": action, "reason": "mass fence"}))
                    .collect();
                let r = client
                    .call(
                        "POST",
                        "/v1/fence/batch",
                        Some(&json!({ "requests": requests })),
                        Some(Duration::from_secs(120)),
                    )
                    .await;
                let at = t0.elapsed();
                match r {
                    Ok(v) => {
                        let results = v["results"].as_array().cloned().unwrap_or_default();
                        for k in 0..chunk.len() {
                            let e = results.get(k).cloned().unwrap_or(Value::Null);
                            let id = match e.pointer("/accepted/id").and_then(Value::as_u64) {
                                Some(id) => Ok(id),
                                None => Err(e
                                    .pointer("/error/code")
                                    .and_then(Value::as_str)
                                    .unwrap_or("no result for this entry")
                                    .to_string()),
                            };
                            out.push((id, at));
                        }
                    }
                    Err(e) => out.extend(chunk.iter().map(|_| (Err(e.to_string()), at))),
                }
            }
            out
        }
    };
    let answered = ids.iter().map(|r| r.1).max().unwrap_or_default();
    let polls = ids.into_iter().map(|(id, at)| {
        let client = client.clone();
        async move {
            match id {
                Err(code) => (Outcome::Refused(code), at),
                Ok(_) if !wait => (Outcome::Accepted, at),
                Ok(id) => (follow(&client, id).await, t0.elapsed()),
            }
        }
    });
    let results = join_local(polls.collect()).await;
    let ended = results.iter().map(|r| r.1).max().unwrap_or_default();
    Round {
        outcomes: results.into_iter().map(|r| r.0).collect(),
        answered,
        ended,
    }
}

/// The operation id of a `POST /v1/fence` answer, or the refusal's code.
fn accepted_id(r: Result<Value, ClientError>) -> Result<u64, String> {
    match r {
        Ok(v) => v
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| "no id in the answer".to_string()),
        Err(ClientError::Api { error, .. }) => Err(error.code),
        Err(e) => Err(e.to_string()),
    }
}

/// Long-polls operation `id` until it ends.
async fn follow(client: &Client, id: u64) -> Outcome {
    loop {
        let r = client
            .call(
                "GET",
                &format!("/v1/operations/{id}?wait=60"),
                None,
                Some(Duration::from_secs(90)),
            )
            .await;
        match r {
            Ok(op) => match op.get("state").and_then(Value::as_str) {
                Some("succeeded") => {
                    return Outcome::Succeeded {
                        id,
                        method: op
                            .pointer("/outcome/confirmation/method")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        times: OpTimes::of(&op),
                    }
                }
                Some("failed") => {
                    return Outcome::Failed(
                        op.pointer("/outcome/message")
                            .and_then(Value::as_str)
                            .unwrap_or("no message")
                            .to_string(),
                    )
                }
                _ => continue,
            },
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    }
}

/// Runs every future to completion concurrently on this thread, results in order.
pub async fn join_local<F: std::future::Future + 'static>(futs: Vec<F>) -> Vec<F::Output>
where
    F::Output: 'static,
{
    let local = tokio::task::LocalSet::new();
    let handles: Vec<_> = futs.into_iter().map(|f| local.spawn_local(f)).collect();
    local
        .run_until(async move {
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                if let Ok(v) = h.await {
                    out.push(v);
                }
            }
            out
        })
        .await
}

/// A failure message without its target and step prefix (`node7 NOT fenced: level 1: bmc-node7:
/// ...`), so that the same reason on many targets counts as one.
pub fn reason_of(message: &str) -> String {
    let mut rest = message;
    // "<target> NOT fenced: " / "<target> ...: ".
    if let Some((_, r)) = rest.split_once(": ") {
        rest = r;
    }
    // "level N: DEVICE: ".
    if let Some(r) = rest.strip_prefix("level ") {
        if let Some((n, after)) = r.split_once(": ") {
            if n.chars().all(|c| c.is_ascii_digit()) {
                rest = match after.split_once(": ") {
                    // "level N: not tried: why" names no device.
                    Some((_, r)) if !after.starts_with("not tried") => r,
                    _ => after,
                };
            }
        }
    }
    rest.to_string()
}

#[cfg(test)]
mod tests {
    use super::reason_of;

    #[test]
    fn reasons_lose_their_target_level_and_device() {
        assert_eq!(
            reason_of("node7 NOT fenced: level 1: bmc-node7: power off did not finish"),
            "power off did not finish"
        );
        assert_eq!(
            reason_of("node8 NOT fenced: level 1: bmc-node8: power off did not finish"),
            reason_of("node7 NOT fenced: level 1: bmc-node7: power off did not finish"),
        );
        assert_eq!(reason_of("node1 NOT fenced: timeout"), "timeout");
        assert_eq!(
            reason_of("cannot reach fenced: refused"),
            "refused",
            "no level prefix: only the first part goes"
        );
    }
}
