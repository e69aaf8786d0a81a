//! [`RedfishError`]: why a Redfish call, or setting up a Redfish device, failed; and how each
//! reason becomes the [`DeviceError`] the engine records (its kind decides retries and the
//! code in history).

use crate::DeviceError;
use std::path::PathBuf;

/// Why a Redfish device could not be set up or did not do what it was asked. `service` is the
/// configured `https://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedfishError {
    /// The address is not `https://`.
    #[error("Redfish device `{service}`: the address must start with https:// (the password must not cross the network in clear)")]
    NotHttps {
        /// The configured address.
        service: String,
    },
    /// The HTTPS client could not be built from the configuration.
    #[error("Redfish device `{service}`: cannot build the HTTPS client: {reason}")]
    Client {
        /// The configured address.
        service: String,
        /// reqwest's reason, with its causes.
        reason: String,
    },
    /// rustls refused the protocol versions for a pinned-fingerprint configuration.
    #[error("cannot set up TLS: {reason}")]
    TlsSetup {
        /// rustls's reason.
        reason: String,
    },
    /// The CA file cannot be read.
    #[error("cannot read the Redfish CA file {}: {reason}; point ca_file at a readable PEM file holding the BMC's CA (or its self-signed certificate)", .path.display())]
    CaFileUnreadable {
        /// The CA file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The CA file is not PEM.
    #[error("the Redfish CA file {} is not valid PEM: {reason}; put the BMC's CA certificate in it, PEM-encoded", .path.display())]
    CaFileNotPem {
        /// The CA file.
        path: PathBuf,
        /// The PEM parser's reason.
        reason: String,
    },
    /// A certificate in the CA file cannot be used.
    #[error("the Redfish CA file {} holds a certificate that cannot be used: {reason}", .path.display())]
    CaFileBadCertificate {
        /// The CA file.
        path: PathBuf,
        /// reqwest's reason.
        reason: String,
    },
    /// The CA file holds no certificate.
    #[error("the Redfish CA file {} holds no `BEGIN CERTIFICATE` block; put the BMC's CA certificate in it, PEM-encoded", .path.display())]
    CaFileEmpty {
        /// The CA file.
        path: PathBuf,
    },
    /// A `tls_fingerprint` of the wrong length.
    #[error("a SHA-256 fingerprint has 64 hex digits, `{text}` has {digits}; get it with `openssl x509 -noout -fingerprint -sha256 -in CERT`")]
    FingerprintLength {
        /// What was configured.
        text: String,
        /// How many hex digits it has.
        digits: usize,
    },
    /// A `tls_fingerprint` that is not hex.
    #[error("`{text}` is not a hex SHA-256 fingerprint; get it with `openssl x509 -noout -fingerprint -sha256 -in CERT`")]
    FingerprintNotHex {
        /// What was configured.
        text: String,
    },
    /// Nothing answered, or not in time (one request, a whole call, or a reset task).
    #[error("Redfish service {service} did not answer within {timeout_ms} ms ({what}); check that the BMC is powered and reachable")]
    Timeout {
        /// The configured address.
        service: String,
        /// What was being done.
        what: String,
        /// The limit that passed.
        timeout_ms: u64,
    },
    /// The BMC's certificate is not the configured one.
    #[error("Redfish service {service}: TLS certificate check failed ({reason}); the BMC's certificate is not the one configured: set ca_file to its CA (or its self-signed certificate) or tls_fingerprint to its SHA-256 fingerprint, after checking it is really that BMC")]
    Certificate {
        /// The configured address.
        service: String,
        /// rustls's reason (with the fingerprint seen, for a pin).
        reason: String,
    },
    /// The connection failed (refused, no route, reset).
    #[error("Redfish service {service} is unreachable ({what}): {reason}; check the address, port and network path")]
    Unreachable {
        /// The configured address.
        service: String,
        /// What was being done.
        what: String,
        /// reqwest's reason, with its causes.
        reason: String,
    },
    /// The service pointed at a URI on another origin.
    #[error("Redfish service {service} points at `{uri}`, outside it; credentials are only sent to the configured service")]
    OffOrigin {
        /// The configured address.
        service: String,
        /// Where it pointed.
        uri: String,
    },
    /// The service refused our credentials (401/403, or a refused login).
    #[error("Redfish service {service} refused authentication for {command}: HTTP {status} ({message}); check the user name, password (file) and the account's role")]
    AuthRefused {
        /// The configured address.
        service: String,
        /// The request (`GET /redfish/v1/Systems`, `opening a session`).
        command: String,
        /// The HTTP status line.
        status: String,
        /// The service's error message.
        message: String,
    },
    /// The service answered a request with an error status.
    #[error("Redfish service {service} refused {command}: HTTP {status} ({message})")]
    Status {
        /// The configured address.
        service: String,
        /// The request (`Reset ForceOff`, `GET /redfish/v1/`).
        command: String,
        /// The HTTP status line.
        status: String,
        /// The service's error message.
        message: String,
    },
    /// A reset task finished without success.
    #[error("Redfish service {service}: {command}: task ended {state} {status} {message}")]
    TaskFailed {
        /// The configured address.
        service: String,
        /// The reset (`Reset ForceOff`).
        command: String,
        /// The task's `TaskState`.
        state: String,
        /// The task's `TaskStatus`.
        status: String,
        /// The task's first message.
        message: String,
    },
    /// A reset task still ran when the call's time was up.
    #[error("Redfish service {service}: {command}: task {monitor} still running after {timeout_ms} ms; the BMC may still act on it, so the power state read back decides")]
    TaskRunning {
        /// The configured address.
        service: String,
        /// The reset.
        command: String,
        /// The task monitor's URI.
        monitor: String,
        /// The call's limit.
        timeout_ms: u64,
    },
    /// The reply breaks the protocol (not JSON, too large, a required field or header
    /// missing); `detail` says which, and what to set if a setting can fix it.
    #[error("Redfish service {service} sent an unexpected reply: {detail}")]
    Reply {
        /// The configured address.
        service: String,
        /// What was wrong.
        detail: String,
    },
    /// `system_id` names no member of the Systems collection.
    #[error("Redfish service has no system `{want}` (system_id; the service has: {available}); set system_id to one of those")]
    NoSuchSystem {
        /// The configured system id.
        want: String,
        /// The ids the service lists.
        available: String,
    },
    /// Several systems and no `system_id`.
    #[error("Redfish service {service} manages {count} systems ({systems}); set system_id to the one this device fences (never picked silently: a wrong pick fences the wrong node)")]
    SeveralSystems {
        /// The configured address.
        service: String,
        /// How many.
        count: usize,
        /// Their ids.
        systems: String,
    },
    /// The system cannot be switched, or not the way fencing needs.
    #[error("Redfish service {service} does not support {operation}")]
    Unsupported {
        /// The configured address.
        service: String,
        /// What it cannot do, and why.
        operation: String,
    },
    /// A level entry gave this device a port.
    #[error(
        "a Redfish device fences one system, so it has no port `{port}`: set system_id instead"
    )]
    PortGiven {
        /// The port given.
        port: String,
    },
}

impl RedfishError {
    /// The service answered and refused (as opposed to not answering or answering nonsense):
    /// the session and the discovered system are still good.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            RedfishError::Status { .. } | RedfishError::TaskFailed { .. }
        )
    }
}

impl From<RedfishError> for DeviceError {
    fn from(e: RedfishError) -> DeviceError {
        let policy = |e: &RedfishError| DeviceError::Policy {
            detail: e.to_string(),
        };
        match e {
            RedfishError::NotHttps { .. }
            | RedfishError::Client { .. }
            | RedfishError::TlsSetup { .. }
            | RedfishError::CaFileUnreadable { .. }
            | RedfishError::CaFileNotPem { .. }
            | RedfishError::CaFileBadCertificate { .. }
            | RedfishError::CaFileEmpty { .. }
            | RedfishError::FingerprintLength { .. }
            | RedfishError::FingerprintNotHex { .. }
            | RedfishError::SeveralSystems { .. } => policy(&e),
            RedfishError::Timeout {
                service,
                what,
                timeout_ms,
            } => DeviceError::Timeout {
                address: service,
                what,
                timeout_ms,
            },
            RedfishError::TaskRunning {
                service,
                command,
                monitor,
                timeout_ms,
            } => DeviceError::Timeout {
                address: service,
                what: format!("{command}: task {monitor} still running"),
                timeout_ms,
            },
            RedfishError::Certificate { service, reason } => DeviceError::Unreachable {
                address: service,
                reason: format!(
                    "TLS certificate check failed ({reason}); the BMC's certificate is not the one configured: set ca_file to its CA (or its self-signed certificate) or tls_fingerprint to its SHA-256 fingerprint, after checking it is really that BMC"
                ),
            },
            RedfishError::Unreachable {
                service,
                what,
                reason,
            } => DeviceError::Unreachable {
                address: service,
                reason: format!("{what}: {reason}"),
            },
            RedfishError::OffOrigin { service, uri } => DeviceError::Protocol {
                detail: format!(
                    "the service points at `{uri}`, outside {service}; credentials are only sent to the configured service"
                ),
                address: service,
            },
            RedfishError::AuthRefused {
                service,
                command,
                status,
                message,
            } => DeviceError::AuthFailed {
                address: service,
                detail: format!("{command}: HTTP {status} ({message})"),
            },
            RedfishError::Status {
                service,
                command,
                status,
                message,
            } => DeviceError::Refused {
                address: service,
                command,
                detail: format!("HTTP {status} ({message})"),
            },
            RedfishError::TaskFailed {
                service,
                command,
                state,
                status,
                message,
            } => DeviceError::Refused {
                address: service,
                command,
                detail: format!("task ended {state} {status} {message}"),
            },
            RedfishError::Reply { service, detail } => DeviceError::Protocol {
                address: service,
                detail,
            },
            RedfishError::NoSuchSystem { want, available } => DeviceError::NoSuchPort {
                port: format!("{want} (system_id; the service has: {available})"),
            },
            RedfishError::Unsupported { operation, .. } => DeviceError::Unsupported { operation },
            RedfishError::PortGiven { port } => DeviceError::NoSuchPort {
                port: format!(
                    "{port} (a Redfish device fences one system: set system_id instead)"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> String {
        "https://10.0.0.5".into()
    }

    #[test]
    fn each_reason_keeps_its_kind_and_context() {
        let status = |code: &str| RedfishError::Status {
            service: service(),
            command: "Reset ForceOff".into(),
            status: code.into(),
            message: "Base.1.8.InternalError: inside the BMC".into(),
        };
        let d = DeviceError::from(status("500 Internal Server Error"));
        assert_eq!(d.code(), "refused");
        let t = d.to_string();
        assert!(
            t.contains("10.0.0.5") && t.contains("Reset ForceOff") && t.contains("500"),
            "{t}"
        );
        assert!(t.contains("inside the BMC"), "{t}");

        let auth = DeviceError::from(RedfishError::AuthRefused {
            service: service(),
            command: "opening a session".into(),
            status: "401 Unauthorized".into(),
            message: "wrong password".into(),
        });
        assert_eq!(auth.code(), "auth_failed");
        assert!(auth.to_string().contains("password (file)"), "{auth}");

        let task = DeviceError::from(RedfishError::TaskRunning {
            service: service(),
            command: "Reset ForceOff".into(),
            monitor: "/redfish/v1/TaskService/Tasks/7".into(),
            timeout_ms: 30_000,
        });
        assert_eq!(task.code(), "timeout");
        assert!(task.to_string().contains("Tasks/7 still running"), "{task}");

        let cert = DeviceError::from(RedfishError::Certificate {
            service: service(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        });
        assert_eq!(cert.code(), "unreachable");
        assert!(
            cert.to_string().contains("UnknownIssuer") && cert.to_string().contains("ca_file"),
            "{cert}"
        );

        let pick = DeviceError::from(RedfishError::SeveralSystems {
            service: service(),
            count: 2,
            systems: "System1, System2".into(),
        });
        assert_eq!(pick.code(), "policy");
        assert!(pick.to_string().contains("set system_id"), "{pick}");

        let missing = DeviceError::from(RedfishError::NoSuchSystem {
            want: "System9".into(),
            available: "System1".into(),
        });
        assert_eq!(missing.code(), "no_such_port");
        assert!(missing.to_string().contains("System9"), "{missing}");
    }

    #[test]
    fn only_answers_that_refuse_keep_the_session() {
        assert!(RedfishError::Status {
            service: service(),
            command: "GET /redfish/v1/".into(),
            status: "404 Not Found".into(),
            message: String::new(),
        }
        .is_refusal());
        assert!(!RedfishError::Timeout {
            service: service(),
            what: "reading the power state".into(),
            timeout_ms: 1,
        }
        .is_refusal());
        assert!(!RedfishError::Reply {
            service: service(),
            detail: "not JSON".into(),
        }
        .is_refusal());
    }
}
