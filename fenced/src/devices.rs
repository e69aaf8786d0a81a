//! Builds the configured devices' drivers for the engine.

use crate::config::{Config, DeviceConfig, DeviceKind};
use crate::engine::DeviceSlot;
use std::collections::BTreeMap;

/// One [`DeviceSlot`] per configured device, or a message naming the device that cannot be
/// built and what to do.
pub fn build(config: &Config) -> Result<BTreeMap<String, DeviceSlot>, String> {
    let mut out = BTreeMap::new();
    for (name, dev) in &config.devices {
        out.insert(name.clone(), slot(name, dev)?);
    }
    Ok(out)
}

fn slot(name: &str, dev: &DeviceConfig) -> Result<DeviceSlot, String> {
    match &dev.kind {
        // The IPMI driver lands from its own branch and replaces this arm.
        DeviceKind::Ipmi(_) => Err(format!(
            "device `{name}` (kind ipmi, {}): the IPMI driver is not linked into this build of fenced yet; use a build that includes drivers::ipmi",
            dev.address()
        )),
    }
}
