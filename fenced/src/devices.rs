//! Builds the configured devices' drivers for the engine. Each kind's file in
//! [`crate::config`] converts its settings into its driver; what is left here is the same for
//! every kind: the Pacemaker-style selection around a device (a concurrency limit and ports
//! found by name in its `list`).

use crate::config::{Config, DeviceConfig};
use crate::engine::DeviceSlot;
use async_trait::async_trait;
use drivers::{
    DeviceError, FenceProof, Identity, Outlet, PillKind, PillReport, PowerCommand, PowerDevice,
    PowerState,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A configured device that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceSetupError {
    /// Its driver refused its configuration.
    #[error("device `{device}` (kind {kind}): {source}")]
    Build {
        /// The device's name.
        device: String,
        /// Its kind.
        kind: &'static str,
        /// The driver's reason.
        source: DeviceError,
    },
    /// Its check at start failed (an agent's metadata).
    #[error("device `{device}` (kind {kind}): {source}")]
    Preflight {
        /// The device's name.
        device: String,
        /// Its kind.
        kind: &'static str,
        /// What the check found.
        source: DeviceError,
    },
}

/// One [`DeviceSlot`] per configured device, or the error naming the device that cannot be
/// built and why.
pub fn build(config: &Config) -> Result<BTreeMap<String, DeviceSlot>, DeviceSetupError> {
    let mut out = BTreeMap::new();
    for (name, dev) in &config.devices {
        out.insert(name.clone(), slot(dev, &config.daemon.node_name)?);
    }
    Ok(out)
}

fn slot(dev: &DeviceConfig, node_name: &str) -> Result<DeviceSlot, DeviceSetupError> {
    let device = dev
        .kind
        .build(node_name)
        .map_err(|source| DeviceSetupError::Build {
            device: dev.name.clone(),
            kind: dev.kind_name(),
            source,
        })?;
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

/// Runs every device's check at start (an agent's `metadata` against its configured options),
/// so a misspelt option stops the daemon at start instead of failing the first fence.
pub async fn check_agents(config: &Config) -> Result<(), DeviceSetupError> {
    for dev in config.devices.values() {
        dev.kind
            .preflight()
            .await
            .map_err(|source| DeviceSetupError::Preflight {
                device: dev.name.clone(),
                kind: dev.kind_name(),
                source,
            })?;
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

    async fn power_draw(&self, port: Option<&str>) -> Result<Option<u32>, DeviceError> {
        let _p = self.permit().await?;
        let plug = self.resolve(port).await?;
        self.inner.power_draw(plug.as_deref()).await
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

    fn read_back_basis(&self, port: Option<&str>) -> Option<String> {
        self.inner.read_back_basis(port)
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
