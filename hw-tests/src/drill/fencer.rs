//! The controller's fencer: the fencer API over `fenced`'s Unix socket, through
//! `fenced::client`. This is the whole protocol a controller needs.

use super::controller::{FenceOutcome, Fencer};
use fenced::client::{Client, ClientError, Endpoint};
use fenced::model::{FenceAccepted, OpState, Operation, Outcome};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A [`Fencer`] that asks a real `fenced` (or anything speaking its API) on a Unix socket.
pub struct ApiFencer {
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl ApiFencer {
    /// A fencer talking to the daemon at `socket`; fails only if the runtime that drives the
    /// client cannot start (thread or file limits).
    pub fn new(socket: PathBuf) -> std::io::Result<ApiFencer> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(ApiFencer {
            // Every request has a deadline; the long poll sets its own below.
            client: Client::new(Endpoint::Unix(socket), Duration::from_secs(5)),
            rt,
        })
    }
}

impl Fencer for ApiFencer {
    fn request_off(&mut self, target: &str, reason: &str, request_id: &str) -> Result<u64, String> {
        let body = serde_json::json!({
            "target": target,
            "action": "off",
            "reason": reason,
            "request_id": request_id,
        });
        self.rt
            .block_on(
                self.client
                    .call_as::<FenceAccepted>("POST", "/v1/fence", Some(&body), None),
            )
            .map(|(accepted, _)| accepted.id)
            .map_err(|e| e.to_string())
    }

    fn wait(&mut self, operation: u64, within: Duration) -> FenceOutcome {
        let started = Instant::now();
        loop {
            let left = within.saturating_sub(started.elapsed());
            if left.is_zero() {
                return FenceOutcome::Unknown {
                    reason: format!("no outcome for operation {operation} within {within:?}"),
                };
            }
            // Long poll: the daemon answers as soon as the operation ends, or after `wait`
            // seconds with its current state.
            let wait = left.as_secs().clamp(1, 300);
            let path = format!("/v1/operations/{operation}?wait={wait}");
            let answer = self.rt.block_on(self.client.call_as::<Operation>(
                "GET",
                &path,
                None,
                Some(Duration::from_secs(wait + 5)),
            ));
            match answer {
                Ok((op, _)) => match (op.state, op.outcome) {
                    (OpState::Succeeded, Some(Outcome::Succeeded { confirmation, .. })) => {
                        let method = serde_json::to_value(&confirmation)
                            .ok()
                            .and_then(|v| v["method"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        return FenceOutcome::Fenced {
                            confirmation: method,
                        };
                    }
                    (OpState::Failed, Some(Outcome::Failed { code, message })) => {
                        return FenceOutcome::Failed { code, message }
                    }
                    (s, o) if s.is_terminal() => {
                        return FenceOutcome::Unknown {
                            reason: format!("operation {operation} ended {s} with outcome {o:?}"),
                        }
                    }
                    // Delayed or running: poll again (not in a hot loop if something between
                    // us and the daemon answers long polls at once).
                    _ => std::thread::sleep(Duration::from_millis(50)),
                },
                // The daemon may be restarting: the outcome is unknown until it answers.
                Err(ClientError::Unreachable { .. } | ClientError::Timeout { .. }) => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    return FenceOutcome::Unknown {
                        reason: e.to_string(),
                    }
                }
            }
        }
    }
}
