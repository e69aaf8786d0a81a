//! `[cluster]`: this fenced joins a fencer cluster on Corosync (issue 16). Absent, fenced runs
//! alone exactly as before.
//!
//! ```toml
//! [cluster]
//! group = "palisade"              # the CPG group every member joins
//! node_name = "node1"             # this node's name as Corosync knows it (= its target name)
//! reaches = ["bmc-node2", "pdu"]  # the devices this node can reach
//! allow_without_quorum = false    # DANGEROUS when true: a partition without quorum fences
//! ```

use super::{ConfigError, Ctx, DeviceConfig};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::{BTreeMap, BTreeSet};

/// The longest CPG group name libcpg accepts (`CPG_MAX_NAME_LENGTH` is 128, with its NUL).
const MAX_GROUP: usize = 127;

/// `[cluster]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    group: Option<Spanned<String>>,
    node_name: Option<Spanned<String>>,
    #[serde(default)]
    reaches: Vec<Spanned<String>>,
    #[serde(default)]
    allow_without_quorum: bool,
}

/// The checked `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The CPG group name.
    pub group: String,
    /// This node's name as Corosync knows it (targets are named the same way).
    pub node_name: String,
    /// Devices this node can reach.
    pub reaches: BTreeSet<String>,
    /// New operations are accepted without quorum (dangerous: both sides of a partition fence).
    pub allow_without_quorum: bool,
}

/// Checks `[cluster]`: the group name fits CPG, and every device in `reaches` is configured.
pub(super) fn resolve(
    ctx: &Ctx,
    raw: Option<RawCluster>,
    node_name: &str,
    devices: &BTreeMap<String, DeviceConfig>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let group = match raw.group {
        Some(g) => {
            let s = g.get_ref();
            if s.is_empty() || s.len() > MAX_GROUP || !s.is_ascii() {
                return Err(ctx.at(
                    &g,
                    "cluster.group",
                    format!("expected 1 to {MAX_GROUP} ASCII characters (a CPG group name), found {s:?}"),
                ));
            }
            s.clone()
        }
        None => "palisade".into(),
    };
    let node_name = match raw.node_name {
        Some(n) if n.get_ref().trim().is_empty() => {
            return Err(ctx.at(
                &n,
                "cluster.node_name",
                "expected this node's name as Corosync knows it (its nodelist `name`), found an empty string",
            ))
        }
        Some(n) => n.into_inner(),
        None => node_name.to_string(),
    };
    let mut reaches = BTreeSet::new();
    for d in raw.reaches {
        if !devices.contains_key(d.get_ref()) {
            return Err(ctx.at(
                &d,
                "cluster.reaches",
                format!(
                    "no device `{}` is configured; `reaches` lists [devices.*] names this node can reach",
                    d.get_ref()
                ),
            ));
        }
        reaches.insert(d.into_inner());
    }
    Ok(Some(ClusterConfig {
        group,
        node_name,
        reaches,
        allow_without_quorum: raw.allow_without_quorum,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    const BASE: &str = r#"
[daemon]
node_name = "node1"

[devices.bmc2]
kind = "ipmi"
address = "127.0.0.1:6230"
username = "admin"
password_env = "PW"
cipher_suite = 17

[targets.node2]
levels = [["bmc2"]]
"#;

    fn parse(extra: &str) -> Result<Config, super::ConfigError> {
        let text = format!("{BASE}{extra}");
        Config::parse(Path::new("/etc/palisade/fenced.toml"), &text, &|n: &str| {
            (n == "PW").then(|| b"pw".to_vec())
        })
    }

    #[test]
    fn absent_means_alone_and_defaults_come_from_the_daemon() {
        assert_eq!(parse("").unwrap().cluster, None);
        let c = parse("[cluster]\nreaches = [\"bmc2\"]\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.group, "palisade");
        assert_eq!(c.node_name, "node1");
        assert!(c.reaches.contains("bmc2") && !c.allow_without_quorum);
    }

    #[test]
    fn bad_values_name_the_line_and_what_was_expected() {
        let e = parse("[cluster]\nreaches = [\"bmc9\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster.reaches") && e.contains("bmc9") && e.contains("fenced.toml:15:"),
            "{e}"
        );
        let e = parse("[cluster]\nnode_name = \" \"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster.node_name") && e.contains("nodelist"),
            "{e}"
        );
        let long = "g".repeat(128);
        let e = parse(&format!("[cluster]\ngroup = \"{long}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.group") && e.contains("127"), "{e}");
        let e = parse("[cluster]\nquorum = false\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("quorum"), "{e}");
    }
}
