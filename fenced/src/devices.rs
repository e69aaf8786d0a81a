//! Builds the configured devices' drivers for the engine.

use crate::config::{Config, DeviceConfig, DeviceKind, IpmiSettings, RedfishSettings};
use crate::engine::DeviceSlot;
use drivers::ipmi::{CipherSuiteChoice, IpmiConfig, IpmiDevice, Privilege};
use drivers::pdu::{PduConfig, PduDevice};
use drivers::redfish::{RedfishConfig, RedfishDevice};
use drivers::sbd::{DiskConfig, SbdDevice};
use drivers::PowerDevice;
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
