//! Kind `agent` (issue 10): a ClusterLabs fence agent run as a child process, straight into
//! [`AgentConfig`]. Its options are checked against the agent's own metadata when the daemon
//! starts ([`KindSettings::preflight`]).

use super::device::{DeviceCx, KindSettings, KindTable};
use super::ConfigError;
use drivers::agent::{AgentConfig, AgentDevice};
use drivers::{DeviceError, PowerDevice};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The deadline of one agent call: 100 ms to 10 minutes (some agents wait for a device's own
/// slow power sequencing).
const TIMEOUT_MS: (u32, u32) = (100, 600_000);

/// Options an agent device must not set in `options`: Palisade sets them per call, or they are
/// secrets that belong in `password_file`.
const RESERVED: &[&str] = &[
    "action",
    "option",
    "port",
    "plug",
    "nodename",
    "password",
    "passwd",
    "password_script",
    "passwd_script",
];

/// `[devices.NAME]` with `kind = "agent"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentTable {
    agent: Option<Spanned<PathBuf>>,
    options: Option<Spanned<BTreeMap<String, toml::Value>>>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    password_option: Option<Spanned<String>>,
    port_option: Option<Spanned<String>>,
    environment: Option<BTreeMap<String, String>>,
    timeout_ms: Option<Spanned<i64>>,
}

impl KindTable for AgentTable {
    type Settings = AgentConfig;
    const SECRETS: &'static [&'static str] = &["password"];

    fn resolve(self, cx: &DeviceCx<'_>) -> Result<AgentConfig, ConfigError> {
        let program = cx.required(
            &self.agent,
            "agent",
            "an agent device needs `agent = \"/usr/sbin/fence_NAME\"`",
        )?;
        let mut c = AgentConfig::new(cx.path(program.get_ref()));
        if let Some(o) = &self.options {
            for (k, v) in o.get_ref() {
                c.options.push(option(cx, o, k, v)?);
            }
        }
        let password = cx.secret(
            "password",
            &self.password_file,
            &self.password_env,
            "put the password in it, or remove password_file/password_env if the agent needs none",
        )?;
        if let Some(p) = password {
            let opt = self
                .password_option
                .map_or_else(|| "password".to_string(), Spanned::into_inner);
            c.secrets.push((opt, p));
        }
        if let Some(p) = self.port_option {
            c.port_option = p.into_inner();
        }
        c.environment = self.environment.unwrap_or_default().into_iter().collect();
        c.timeout = cx.millis(&self.timeout_ms, "timeout_ms", 20_000, TIMEOUT_MS)?;
        Ok(c)
    }
}

/// One `options` entry as the agent reads it on stdin: `name=value`.
fn option(
    cx: &DeviceCx<'_>,
    at: &Spanned<BTreeMap<String, toml::Value>>,
    k: &str,
    v: &toml::Value,
) -> Result<(String, String), ConfigError> {
    let key = k.replace('-', "_");
    if RESERVED.contains(&key.as_str()) {
        return Err(cx.at(at, "options", format!(
            "`{k}` cannot be set in options: {}",
            if key.starts_with("pass") { "passwords go in password_file (mode 0600) or password_env, never in the config" } else { "Palisade sets it on every call (the plug comes from the target's level entry `device:plug`)" }
        )));
    }
    let value = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
        other => {
            return Err(cx.at(
                at,
                "options",
                format!("option `{k}`: expected a string, number or boolean, found {other}"),
            ))
        }
    };
    if value.contains(['\n', '\r', '\0'])
        || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(cx.at(
            at,
            "options",
            format!("option `{k}`: names are letters, digits, `-` and `_`, and values hold no line breaks"),
        ));
    }
    Ok((key, value))
}

#[async_trait::async_trait]
impl KindSettings for AgentConfig {
    fn address(&self) -> String {
        let addr = self
            .options
            .iter()
            .find(|(k, _)| matches!(k.as_str(), "ip" | "ipaddr" | "ssl_host" | "hostname"))
            .map(|(_, v)| format!(" {v}"))
            .unwrap_or_default();
        format!("{}{addr}", self.program.display())
    }

    fn describe(&self) -> String {
        format!(
            "{} option(s){}; timeout_ms {} per call, then its process group is killed; options checked against its metadata at start",
            self.options.len(),
            self.secrets
                .iter()
                .map(|(o, _)| format!(" + {o} from a file/env"))
                .collect::<String>(),
            self.timeout.as_millis()
        )
    }

    fn build(&self, _node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        Ok(Arc::new(AgentDevice::new(self.clone())))
    }

    async fn preflight(&self) -> Result<(), DeviceError> {
        AgentDevice::new(self.clone())
            .check_metadata()
            .await
            .map(drop)
            .map_err(|e| DeviceError::Policy {
                detail: e.to_string(),
            })
    }
}
