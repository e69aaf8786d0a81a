//! Witness kind `network`: `addresses = ["IP:port", ...]` of the node must stop answering TCP
//! connects for `settle_s` after the device read back off.

use super::witness::{DeviceLookup, WitnessCx, WitnessKindSettings};
use super::ConfigError;
use drivers::witness::network::{self, NetworkConfig, NetworkWitness};
use drivers::witness::Witness;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Checked `network` witness settings: the driver's configuration.
#[derive(Debug, Clone)]
pub struct NetworkSettings(pub NetworkConfig);

impl WitnessKindSettings for NetworkSettings {
    const KEYS: &'static [&'static str] =
        &["addresses", "settle_s", "probe_timeout_ms", "interval_ms"];

    fn resolve(cx: &mut WitnessCx<'_>) -> Result<Self, ConfigError> {
        let want = "a network witness needs `addresses = [\"10.0.0.12:5405\", ...]`: IP:port pairs of the node (IP addresses, not names: a DNS failure would leave the witness without evidence)";
        let Some(list) = cx.strings("addresses")? else {
            return Err(cx.missing("addresses", want));
        };
        if list.get_ref().is_empty() {
            return Err(cx.at(&list, "addresses", want));
        }
        let mut addresses = Vec::new();
        for a in list.get_ref() {
            match a.parse::<SocketAddr>() {
                Ok(sa) => addresses.push(sa),
                Err(_) => {
                    return Err(cx.at(
                        &list,
                        "addresses",
                        format!(
                            "`{a}` is not IP:port (e.g. 10.0.0.12:5405 or [fd00::12]:22); {want}"
                        ),
                    ))
                }
            }
        }
        let settle = cx.seconds("settle_s", network::DEFAULT_SETTLE, (0.0, 600.0))?;
        let probe_timeout = cx.millis(
            "probe_timeout_ms",
            network::DEFAULT_PROBE_TIMEOUT,
            (10, 60_000),
        )?;
        let interval = cx.millis("interval_ms", network::DEFAULT_INTERVAL, (10, 60_000))?;
        Ok(NetworkSettings(NetworkConfig {
            addresses,
            settle,
            probe_timeout,
            interval,
        }))
    }

    fn describe(&self) -> String {
        let c = &self.0;
        let list: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
        format!(
            "TCP connects to {} silent for settle_s {}, probe_timeout_ms {}, interval_ms {}",
            list.join(", "),
            c.settle.as_secs_f64(),
            c.probe_timeout.as_millis(),
            c.interval.as_millis()
        )
    }

    fn settle(&self) -> Duration {
        self.0.settle
    }

    fn check(&self, target: &str, _levels: &[Vec<super::LevelEntry>]) -> Result<(), String> {
        self.build(target, &|_| None).map(|_| ())
    }

    fn build(&self, _target: &str, _device: &DeviceLookup<'_>) -> Result<Arc<dyn Witness>, String> {
        NetworkWitness::new(self.0.clone())
            .map(|w| Arc::new(w) as Arc<dyn Witness>)
            .map_err(|e| e.to_string())
    }
}
