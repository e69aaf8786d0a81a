//! Kind `snmp-pdu` (issue 9): a switched PDU over SNMP v1, v2c or v3, straight into
//! [`PduConfig`]. Level entries name its outlets.

use super::device::{DeviceCx, KindSettings, KindTable};
use super::ipmi::parse_addr;
use super::ConfigError;
use drivers::pdu::{
    AuthProtocol, ClientConfig, PduConfig, PduDevice, PrivProtocol, Security, UsmUser, Version,
};
use drivers::{DeviceError, PowerDevice};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::path::PathBuf;
use std::sync::Arc;

/// The wait of one try: 50 ms to 60 s.
const TIMEOUT_MS: (u32, u32) = (50, 60_000);
/// Tries after the first.
const RETRIES: (u32, u32) = (0, 10);

/// `[devices.NAME]` with `kind = "snmp-pdu"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnmpPduTable {
    address: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    version: Option<Spanned<toml::Value>>,
    community_file: Option<Spanned<PathBuf>>,
    community_env: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    auth_protocol: Option<Spanned<String>>,
    auth_password_file: Option<Spanned<PathBuf>>,
    auth_password_env: Option<Spanned<String>>,
    priv_protocol: Option<Spanned<String>>,
    priv_password_file: Option<Spanned<PathBuf>>,
    priv_password_env: Option<Spanned<String>>,
    timeout_ms: Option<Spanned<i64>>,
    retries: Option<Spanned<i64>>,
}

impl KindTable for SnmpPduTable {
    type Settings = PduConfig;
    const SECRETS: &'static [&'static str] = &["community", "auth_password", "priv_password"];

    fn resolve(self, cx: &DeviceCx<'_>) -> Result<PduConfig, ConfigError> {
        let address = cx.required(
            &self.address,
            "address",
            "an snmp-pdu device needs `address = \"HOST:PORT\"` (port 161 if omitted)",
        )?;
        let addr = parse_addr(address.get_ref(), 161).ok_or_else(|| {
            cx.at(
                address,
                "address",
                format!(
                    "expected an IP address with optional port, like 192.0.2.20:161, found `{}`",
                    address.get_ref()
                ),
            )
        })?;
        let model = cx.model(
            &self.model,
            "an snmp-pdu",
            &drivers::pdu::model::names(),
            drivers::pdu::model::by_name,
        )?;
        let security = self.security(cx)?;
        Ok(PduConfig {
            client: ClientConfig {
                addr,
                security,
                timeout: cx.millis(&self.timeout_ms, "timeout_ms", 1000, TIMEOUT_MS)?,
                retries: cx.count(&self.retries, "retries", 2, RETRIES, " retries")?,
            },
            model,
        })
    }
}

impl SnmpPduTable {
    fn security(&self, cx: &DeviceCx<'_>) -> Result<Security, ConfigError> {
        let version = match &self.version {
            None if self.username.is_some() => "3".to_string(),
            None => "2c".to_string(),
            Some(v) => match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                other => other.to_string(),
            },
        };
        // Errors about the version's consequences point at it, or at the header without one.
        let version_err = |field: &str, msg: String| match &self.version {
            Some(v) => cx.at(v, field, msg),
            None => cx.missing(field, msg),
        };
        let community = cx.secret(
            "community",
            &self.community_file,
            &self.community_env,
            "put the community in it",
        )?;
        match version.as_str() {
            "1" | "2c" => {
                if self.username.is_some()
                    || self.auth_password_file.is_some()
                    || self.auth_password_env.is_some()
                {
                    return Err(version_err("version", format!("SNMP v{version} uses a community, not a user; remove username/auth_password_* or set version = \"3\"")));
                }
                let community = community.ok_or_else(|| {
                    cx.missing("community_file", format!("SNMP v{version} needs community_file = \"PATH\" or community_env = \"VAR\" (a community is a password: never written in the config)"))
                })?;
                Ok(Security::Community {
                    version: if version == "1" {
                        Version::V1
                    } else {
                        Version::V2c
                    },
                    community,
                })
            }
            "3" => self.usm(cx, community.is_some(), version_err),
            other => Err(version_err(
                "version",
                format!("expected version \"1\", \"2c\" or \"3\", found `{other}`"),
            )),
        }
    }

    fn usm(
        &self,
        cx: &DeviceCx<'_>,
        has_community: bool,
        version_err: impl Fn(&str, String) -> ConfigError,
    ) -> Result<Security, ConfigError> {
        if has_community {
            return Err(version_err(
                "community_file",
                "SNMP v3 uses a user, not a community; remove community_*".into(),
            ));
        }
        let user = self
            .username
            .as_ref()
            .map(|u| u.get_ref().clone())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| cx.missing("username", "SNMP v3 needs `username` (the USM user)"))?;
        let hint = "put the password in it (SNMPv3 passwords are at least 8 characters)";
        let auth = cx.secret(
            "auth_password",
            &self.auth_password_file,
            &self.auth_password_env,
            hint,
        )?;
        let privacy = cx.secret(
            "priv_password",
            &self.priv_password_file,
            &self.priv_password_env,
            hint,
        )?;
        let auth_protocol = match &self.auth_protocol {
            None => AuthProtocol::Sha1,
            Some(p) => match p.get_ref().to_ascii_lowercase().as_str() {
                "sha" | "sha1" => AuthProtocol::Sha1,
                "sha256" | "sha-256" => AuthProtocol::Sha256,
                other => {
                    return Err(cx.at(
                        p,
                        "auth_protocol",
                        format!("expected \"sha\" or \"sha256\", found `{other}` (MD5 is not supported: it is broken)"),
                    ))
                }
            },
        };
        if let Some(p) = &self.priv_protocol {
            if !matches!(p.get_ref().to_ascii_lowercase().as_str(), "aes" | "aes128") {
                return Err(cx.at(
                    p,
                    "priv_protocol",
                    format!(
                        "expected \"aes\", found `{}` (DES is not supported: it is broken)",
                        p.get_ref()
                    ),
                ));
            }
        }
        for (s, file, var, field) in [
            (
                &auth,
                &self.auth_password_file,
                &self.auth_password_env,
                "auth_password",
            ),
            (
                &privacy,
                &self.priv_password_file,
                &self.priv_password_env,
                "priv_password",
            ),
        ] {
            if s.as_ref().is_some_and(|s| s.expose().len() < 8) {
                let msg = "SNMPv3 passwords must be at least 8 characters (RFC 3414 §11.2)";
                return Err(match (file, var) {
                    (Some(f), _) => cx.at(f, &format!("{field}_file"), msg),
                    (_, Some(v)) => cx.at(v, &format!("{field}_env"), msg),
                    _ => cx.missing(field, msg),
                });
            }
        }
        if privacy.is_some() && auth.is_none() {
            return Err(cx.missing(
                "auth_password_file",
                "a priv_password needs an auth_password too (authPriv)",
            ));
        }
        if auth.is_none() {
            tracing::warn!(
                "{}: SNMPv3 without authentication (noAuthNoPriv): anyone on the network can switch this PDU's outlets",
                cx.field("username")
            );
        }
        Ok(Security::Usm(UsmUser {
            name: user,
            auth: auth.map(|a| (auth_protocol, a)),
            privacy: privacy.map(|p| (PrivProtocol::Aes128, p)),
        }))
    }
}

impl KindSettings for PduConfig {
    fn address(&self) -> String {
        format!(
            "{} snmp v{} {}",
            self.client.addr,
            drivers::pdu::device::version_of(&self.client.security),
            self.model.name
        )
    }

    fn describe(&self) -> String {
        let c = &self.client;
        let tries = c.retries + 1;
        format!(
            "{}; timeout_ms {} x {tries} tries: a request gives up after {} s",
            match &c.security {
                Security::Community { .. } => "community (secret)".to_string(),
                Security::Usm(u) => format!(
                    "v3 user {}, {}",
                    u.name,
                    match (&u.auth, &u.privacy) {
                        (Some(_), Some(_)) => "authPriv",
                        (Some(_), None) => "authNoPriv",
                        _ => "noAuthNoPriv",
                    }
                ),
            },
            c.timeout.as_millis(),
            (c.timeout * tries).as_secs_f64()
        )
    }

    fn build(&self, _node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        Ok(Arc::new(PduDevice::new(self.clone())))
    }
}
