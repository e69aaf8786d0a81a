//! Builds the configured devices' drivers for the engine.

use crate::config::{
    AgentSettings, Config, DeviceConfig, DeviceKind, IpmiSettings, RedfishSettings,
};
use crate::engine::DeviceSlot;
use async_trait::async_trait;
use drivers::agent::{AgentConfig, AgentDevice};
use drivers::ipmi::{CipherSuiteChoice, IpmiConfig, IpmiDevice, Privilege};
use drivers::pdu::{PduConfig, PduDevice};
use drivers::redfish::{RedfishConfig, RedfishDevice};
use drivers::sbd::{DiskConfig, SbdDevice};
use drivers::{
    DeviceError, FenceProof, Identity, Outlet, PillKind, PillReport, PowerCommand, PowerDevice,
    PowerState,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One [`DeviceSlot`] per configured device, or a message naming the device that cannot be
/// built and what to do.
pub fn build(config: &Config) -> Result<BTreeMap<String, DeviceSlot>, String> {
    let mut out = BTreeMap::new();
    for (name, dev) in &config.devices {
        out.insert(name.clone(), slot(name, dev, &config.daemon.node_name)?);
    }
    Ok(out)
}

fn slot(name: &str, dev: &DeviceConfig, node_name: &str) -> Result<DeviceSlot, String> {
    let device: Arc<dyn PowerDevice> = match &dev.kind {
        DeviceKind::Sbd(s) => Arc::new(SbdDevice::new(
            s.disks
                .iter()
                .zip(&s.uuids)
                .map(|(path, uuid)| DiskConfig {
                    path: path.clone(),
                    uuid: *uuid,
                })
                .collect(),
            node_name,
            s.io_timeout,
        )),
        DeviceKind::Ipmi(s) => Arc::new(IpmiDevice::new(
            ipmi_config(s).map_err(|e| format!("device `{name}`: {e}"))?,
        )),
        DeviceKind::Redfish(s) => Arc::new(
            RedfishDevice::new(redfish_config(s)).map_err(|e| format!("device `{name}`: {e}"))?,
        ),
        DeviceKind::SnmpPdu(s) => Arc::new(PduDevice::new(PduConfig {
            client: drivers::pdu::ClientConfig {
                addr: s.address,
                security: s.security.clone(),
                timeout: s.timeout,
                retries: s.retries,
            },
            model: s.model,
        })),
        DeviceKind::Agent(s) => Arc::new(AgentDevice::new(agent_config(s))),
    };
    let sel = &dev.selection;
    let device: Arc<dyn PowerDevice> = if sel.dynamic_list || sel.max_concurrent.is_some() {
        Arc::new(Selected {
            inner: device,
            dynamic_list: sel.dynamic_list,
            permits: sel
                .max_concurrent
                .map(|n| tokio::sync::Semaphore::new(n as usize)),
        })
    } else {
        device
    };
    Ok(DeviceSlot {
        device,
        kind: dev.kind_name().to_string(),
        address: dev.address(),
    })
}

fn ipmi_config(s: &IpmiSettings) -> Result<IpmiConfig, String> {
    let mut c = IpmiConfig::new(
        s.address.ip().to_string(),
        s.username.clone(),
        s.password.clone(),
    );
    c.port = s.address.port();
    c.privilege = match s.privilege.as_str() {
        "operator" => Privilege::Operator,
        "administrator" => Privilege::Administrator,
        other => return Err(format!("unknown privilege `{other}`")),
    };
    c.cipher_suite = s
        .cipher_suite
        .map_or(CipherSuiteChoice::Auto, CipherSuiteChoice::Id);
    c.timeout = s.timeout;
    c.retries = s.retries;
    c.allow_cipher_suite_0 = s.allow_cipher_suite_0;
    Ok(c)
}

fn redfish_config(s: &RedfishSettings) -> RedfishConfig {
    let mut c = RedfishConfig::new(s.base_url.clone(), s.username.clone(), s.password.clone());
    c.system_id = s.system_id.clone();
    c.auth = s.auth;
    c.tls = s.tls.clone();
    c.connect_timeout = s.connect_timeout;
    c.request_timeout = s.request_timeout;
    c.total_timeout = s.total_timeout;
    c
}

fn agent_config(s: &AgentSettings) -> AgentConfig {
    let mut c = AgentConfig::new(s.program.clone());
    c.options = s.options.clone();
    c.secrets = s.password.iter().cloned().collect();
    c.port_option = s.port_option.clone();
    c.environment = s.environment.clone();
    c.timeout = s.timeout;
    c
}

/// Runs every `agent` device's `metadata` and checks its configured options against it, so a
/// misspelt option stops the daemon at start instead of failing the first fence.
pub async fn check_agents(config: &Config) -> Result<(), String> {
    for (name, dev) in &config.devices {
        if let DeviceKind::Agent(s) = &dev.kind {
            AgentDevice::new(agent_config(s))
                .check_metadata()
                .await
                .map_err(|e| format!("device `{name}` (kind agent): {e}"))?;
        }
    }
    Ok(())
}

/// A device with Pacemaker-style selection around it: a limit on concurrent calls
/// (`max_concurrent`, like `pcmk_action_limit`) and ports found by name in the device's
/// `list` (`host_check = "dynamic-list"`).
struct Selected {
    inner: Arc<dyn PowerDevice>,
    dynamic_list: bool,
    permits: Option<tokio::sync::Semaphore>,
}

impl Selected {
    async fn permit(&self) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, DeviceError> {
        match &self.permits {
            None => Ok(None),
            Some(s) => s
                .acquire()
                .await
                .map(Some)
                .map_err(|_| DeviceError::Policy {
                    detail: "the device's call limit was closed".into(),
                }),
        }
    }

    /// The plug for `port`: itself if the device lists it as a plug id, else the plug whose
    /// alias it is. Listed afresh for every call: an outlet renamed on the device must not
    /// leave a stale mapping that powers off the wrong node.
    async fn resolve(&self, port: Option<&str>) -> Result<Option<String>, DeviceError> {
        let Some(p) = port else { return Ok(None) };
        if !self.dynamic_list {
            return Ok(Some(p.to_string()));
        }
        let outlets = self.inner.list().await?;
        if outlets.iter().any(|o| o.id == p) {
            return Ok(Some(p.to_string()));
        }
        let mut by_alias = outlets.iter().filter(|o| o.name.as_deref() == Some(p));
        match (by_alias.next(), by_alias.next()) {
            (Some(o), None) => Ok(Some(o.id.clone())),
            (Some(_), Some(_)) => Err(DeviceError::Policy {
                detail: format!("the device lists several plugs named `{p}`; name the plug in the target's level (`device:PLUG`) or in the device's host_map"),
            }),
            (None, _) => Err(DeviceError::NoSuchPort { port: p.to_string() }),
        }
    }
}

#[async_trait]
impl PowerDevice for Selected {
    async fn status(&self, port: Option<&str>) -> Result<PowerState, DeviceError> {
        let _p = self.permit().await?;
        let plug = self.resolve(port).await?;
        self.inner.status(plug.as_deref()).await
    }

    async fn power(&self, port: Option<&str>, command: PowerCommand) -> Result<(), DeviceError> {
        let _p = self.permit().await?;
        let plug = self.resolve(port).await?;
        self.inner.power(plug.as_deref(), command).await
    }

    async fn list(&self) -> Result<Vec<Outlet>, DeviceError> {
        let _p = self.permit().await?;
        self.inner.list().await
    }

    async fn health(&self) -> Result<Identity, DeviceError> {
        let _p = self.permit().await?;
        self.inner.health().await
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }

    fn proof(&self) -> FenceProof {
        self.inner.proof()
    }

    async fn write_pill(
        &self,
        port: Option<&str>,
        kind: PillKind,
    ) -> Result<PillReport, DeviceError> {
        let _p = self.permit().await?;
        self.inner.write_pill(port, kind).await
    }
}
