//! Kind `redfish`: one ComputerSystem of a Redfish service over HTTPS, straight into
//! [`RedfishConfig`].

use super::device::{DeviceCx, KindSettings, KindTable};
use super::ConfigError;
use drivers::redfish::{AuthMode, RedfishConfig, RedfishDevice, TlsVerify};
use drivers::{DeviceError, PowerDevice};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::path::PathBuf;
use std::sync::Arc;

/// Each of the three limits may be 50 ms to 10 minutes.
const TIMEOUT_MS: (u32, u32) = (50, 600_000);

/// `[devices.NAME]` with `kind = "redfish"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedfishTable {
    address: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    empty_password: Option<Spanned<bool>>,
    system_id: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    ca_file: Option<Spanned<PathBuf>>,
    tls_fingerprint: Option<Spanned<String>>,
    insecure: Option<Spanned<bool>>,
    connect_timeout_ms: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    total_timeout_ms: Option<Spanned<i64>>,
}

impl KindTable for RedfishTable {
    type Settings = RedfishConfig;
    const SECRETS: &'static [&'static str] = &["password"];

    fn resolve(self, cx: &DeviceCx<'_>) -> Result<RedfishConfig, ConfigError> {
        let address = cx.required(
            &self.address,
            "address",
            "a redfish device needs `address = \"https://HOST[:PORT]\"` (or HOST[:PORT]; https is implied)",
        )?;
        let a = address.get_ref().trim().trim_end_matches('/');
        let base_url = if let Some(rest) = a.strip_prefix("https://") {
            format!("https://{rest}")
        } else if a.contains("://") {
            return Err(cx.at(address, "address", format!("expected https://HOST[:PORT], found `{a}`: Redfish credentials must not cross the network in clear")));
        } else {
            format!("https://{a}")
        };
        let host = base_url.trim_start_matches("https://");
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(cx.at(address, "address", format!("expected https://HOST[:PORT] with no path or user, found `{a}`; credentials go in username and password_file")));
        }
        let username = cx.required(
            &self.username,
            "username",
            "a redfish device needs `username`",
        )?;
        let password = cx.bmc_password(
            &self.password_file,
            &self.password_env,
            &self.empty_password,
        )?;
        let auth = match &self.auth {
            None => AuthMode::Session,
            Some(a) => match a.get_ref().as_str() {
                "session" => AuthMode::Session,
                "basic" => AuthMode::Basic,
                "session_or_basic" => AuthMode::SessionOrBasic,
                other => {
                    return Err(cx.at(
                        a,
                        "auth",
                        format!(
                        "expected \"session\", \"basic\" or \"session_or_basic\", found `{other}`"
                    ),
                    ))
                }
            },
        };
        let insecure = self.insecure.as_ref().filter(|b| *b.get_ref());
        let tls = match (&self.ca_file, &self.tls_fingerprint, insecure) {
            (None, None, None) => TlsVerify::SystemRoots,
            (Some(f), None, None) => TlsVerify::CaFile(cx.path(f.get_ref())),
            (None, Some(fp), None) => TlsVerify::Fingerprint(
                TlsVerify::parse_fingerprint(fp.get_ref())
                    .map_err(|m| cx.at(fp, "tls_fingerprint", m.to_string()))?,
            ),
            (None, None, Some(_)) => TlsVerify::Insecure,
            (ca, fp, insecure) => {
                let at = insecure
                    .map(|b| b.span())
                    .or(fp.as_ref().map(|f| f.span()))
                    .or(ca.as_ref().map(|f| f.span()));
                return Err(cx.ctx.err(
                    at,
                    &cx.field("tls"),
                    "give at most one of ca_file, tls_fingerprint and insecure = true",
                ));
            }
        };
        let mut c = RedfishConfig::new(base_url, username.get_ref().clone(), password);
        c.system_id = self.system_id.map(Spanned::into_inner);
        c.auth = auth;
        c.tls = tls;
        c.connect_timeout = cx.millis(
            &self.connect_timeout_ms,
            "connect_timeout_ms",
            3000,
            TIMEOUT_MS,
        )?;
        c.request_timeout = cx.millis(&self.timeout_ms, "timeout_ms", 10_000, TIMEOUT_MS)?;
        c.total_timeout = cx.millis(
            &self.total_timeout_ms,
            "total_timeout_ms",
            30_000,
            TIMEOUT_MS,
        )?;
        Ok(c)
    }
}

impl KindSettings for RedfishConfig {
    fn address(&self) -> String {
        match &self.system_id {
            Some(id) => format!("{} system {id}", self.base_url),
            None => self.base_url.clone(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "user {}, auth {:?}, TLS {}; connect_timeout_ms {}, timeout_ms {} per request, total_timeout_ms {} per call",
            self.username,
            self.auth,
            match &self.tls {
                TlsVerify::SystemRoots => "verified (system roots)".to_string(),
                TlsVerify::CaFile(p) => format!("verified (CA {})", p.display()),
                TlsVerify::Fingerprint(_) => "pinned fingerprint".to_string(),
                TlsVerify::Insecure => "NOT VERIFIED (insecure = true)".to_string(),
            },
            self.connect_timeout.as_millis(),
            self.request_timeout.as_millis(),
            self.total_timeout.as_millis()
        )
    }

    fn build(&self, _node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        Ok(Arc::new(RedfishDevice::new(self.clone())?))
    }
}
