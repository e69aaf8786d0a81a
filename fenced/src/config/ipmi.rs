//! Kind `ipmi`: a BMC over IPMI v2.0 LAN (RMCP+), straight into [`IpmiConfig`].

use super::device::{DeviceCx, KindSettings, KindTable};
use super::ConfigError;
use drivers::ipmi::client::Timing;
use drivers::ipmi::{CipherSuiteChoice, IpmiConfig, IpmiDevice, Privilege};
use drivers::{DeviceError, PowerDevice};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The wait of one try may be 50 ms to 60 s: below 50 ms even a healthy BMC on a busy network
/// misses it, and the driver never waits longer than 60 s for one try
/// ([`Timing::MAX_TRY`]).
const TIMEOUT_MS: (u32, u32) = (50, 60_000);
/// Retries per exchange: each costs up to a try's wait, and the attempt deadline bounds them.
const RETRIES: (u32, u32) = (0, 10);

/// `[devices.NAME]` with `kind = "ipmi"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpmiTable {
    address: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    empty_password: Option<Spanned<bool>>,
    cipher_suite: Option<Spanned<toml::Value>>,
    allow_cipher_suite_0: Option<bool>,
    privilege: Option<Spanned<Privilege>>,
    timeout_ms: Option<Spanned<i64>>,
    retries: Option<Spanned<i64>>,
}

impl KindTable for IpmiTable {
    type Settings = IpmiConfig;
    const SECRETS: &'static [&'static str] = &["password"];

    fn resolve(self, cx: &DeviceCx<'_>) -> Result<IpmiConfig, ConfigError> {
        let address = cx.required(
            &self.address,
            "address",
            "an ipmi device needs `address = \"HOST:PORT\"` (port 623 if omitted)",
        )?;
        let addr = parse_addr(address.get_ref(), 623).ok_or_else(|| {
            cx.at(
                address,
                "address",
                format!(
                    "expected an IP address with optional port, like 192.0.2.10:623, found `{}`",
                    address.get_ref()
                ),
            )
        })?;
        let username = cx.required(
            &self.username,
            "username",
            "an ipmi device needs `username`",
        )?;
        let password = cx.bmc_password(
            &self.password_file,
            &self.password_env,
            &self.empty_password,
        )?;
        let cipher_suite = match &self.cipher_suite {
            None => CipherSuiteChoice::Auto,
            Some(v) => match v.get_ref() {
                toml::Value::String(s) if s == "auto" => CipherSuiteChoice::Auto,
                toml::Value::Integer(n @ (0 | 3 | 17)) => {
                    CipherSuiteChoice::Id(u8::try_from(*n).unwrap_or(17))
                }
                other => {
                    return Err(cx.at(
                        v,
                        "cipher_suite",
                        format!("expected \"auto\", 3 or 17, found {other}"),
                    ))
                }
            },
        };
        let allow_cipher_suite_0 = self.allow_cipher_suite_0.unwrap_or(false);
        if let (Some(v), CipherSuiteChoice::Id(0), false) =
            (&self.cipher_suite, cipher_suite, allow_cipher_suite_0)
        {
            return Err(cx.at(v, "cipher_suite", "cipher suite 0 sends commands without authentication; set `allow_cipher_suite_0 = true` if you really must"));
        }
        let mut c = IpmiConfig::new(addr.ip().to_string(), username.get_ref().clone(), password);
        c.port = addr.port();
        c.privilege = self
            .privilege
            .map_or(Privilege::Administrator, |p| p.into_inner());
        c.cipher_suite = cipher_suite;
        c.allow_cipher_suite_0 = allow_cipher_suite_0;
        c.timeout = cx.millis(&self.timeout_ms, "timeout_ms", 1000, TIMEOUT_MS)?;
        c.retries = cx.count(&self.retries, "retries", 2, RETRIES, " retries")?;
        Ok(c)
    }
}

impl KindSettings for IpmiConfig {
    fn address(&self) -> String {
        match self.host.parse() {
            Ok(ip) => SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!("{}:{}", self.host, self.port),
        }
    }

    fn describe(&self) -> String {
        let timing = Timing {
            timeout: self.timeout,
            retries: self.retries,
        };
        let waits: Vec<String> = (0..=self.retries)
            .map(|n| timing.try_timeout(n).as_millis().to_string())
            .collect();
        format!(
            "user {}, privilege {}, cipher suite {}; timeout_ms {} with {} retries: tries wait {} ms, an exchange gives up after {} s",
            self.username,
            match self.privilege {
                Privilege::Operator => "operator",
                Privilege::Administrator => "administrator",
            },
            match self.cipher_suite {
                CipherSuiteChoice::Auto => "auto".to_string(),
                CipherSuiteChoice::Id(n) => n.to_string(),
            },
            self.timeout.as_millis(),
            self.retries,
            waits.join(", "),
            self.exchange_deadline().as_secs_f64()
        )
    }

    fn build(&self, _node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        Ok(Arc::new(IpmiDevice::new(self.clone())))
    }
}

/// `IP` or `IP:PORT` (IPv6 as `[IP]:PORT`).
pub(super) fn parse_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, default_port))
    })
}
