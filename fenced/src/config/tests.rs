//! The config's unit tests: every error at its line, with what was expected.
use super::*;
use drivers::ipmi::CipherSuiteChoice;

fn env(name: &str) -> Option<Vec<u8>> {
    (name == "PW").then(|| b"secret-pw".to_vec())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/palisade/fenced.toml"), text, &env)
}

const GOOD: &str = r#"
[daemon]
socket = "/tmp/x.sock"

[limits]
max_operations = 4

[devices.bmc1]
kind = "ipmi"
address = "127.0.0.1:6230"
username = "admin"
password_env = "PW"
cipher_suite = 17

[targets.node1]
levels = [["bmc1"]]
identities = { bmc1 = "A1B2" }
delay_s = 2.5
"#;

#[test]
fn good_config_resolves() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.limits.max_operations, 4);
    let t = &c.targets["node1"];
    assert_eq!(
        t.levels[0][0],
        LevelEntry {
            device: "bmc1".into(),
            port: None
        }
    );
    assert_eq!(t.identities["bmc1"], "a1b2");
    assert_eq!(t.timing.delay, Duration::from_millis(2500));
    let DeviceKind::Ipmi(s) = &c.devices["bmc1"].kind else {
        panic!("bmc1 is ipmi")
    };
    assert_eq!(s.password.expose(), b"secret-pw");
    assert_eq!(s.cipher_suite, CipherSuiteChoice::Id(17));
    assert!(
        !format!("{c:?}").contains("secret-pw"),
        "secrets must never be printed"
    );
}

#[test]
fn errors_name_file_line_field_and_expectation() {
    let e = parse(&GOOD.replace("levels = [[\"bmc1\"]]", "levels = [[\"bmc9\"]]")).unwrap_err();
    assert_eq!(e.line, Some(16));
    assert_eq!(e.field.as_deref(), Some("targets.node1.levels"));
    let s = e.to_string();
    assert!(
        s.starts_with("/etc/palisade/fenced.toml:16: targets.node1.levels:"),
        "{s}"
    );
    assert!(
        s.contains("bmc9") && s.contains("expected one of: bmc1"),
        "{s}"
    );

    let e = parse(&GOOD.replace("cipher_suite = 17", "cipher_suite = 2")).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(13), Some("devices.bmc1.cipher_suite"))
    );

    let e = parse(&GOOD.replace("password_env = \"PW\"", "password_env = \"NOPE\"")).unwrap_err();
    assert!(e.to_string().contains("NOPE is not set"));

    let e = parse(&GOOD.replace("max_operations = 4", "max_operatons = 4")).unwrap_err();
    assert_eq!(e.line, Some(6));
    assert!(e.message.contains("unknown field"), "{}", e.message);

    let e = parse(&format!("{GOOD}\n[api]\ntcp = \"0.0.0.0:7420\"\n")).unwrap_err();
    assert!(e.message.contains("not a loopback address"));

    let e = parse(&GOOD.replace("cipher_suite = 17", "cipher_suite = 0")).unwrap_err();
    assert!(e.message.contains("allow_cipher_suite_0"));

    let e = parse(&GOOD.replace("kind = \"ipmi\"", "kind = \"telepathy\"")).unwrap_err();
    assert!(e.message.contains("unknown device kind `telepathy`"));
}

const REDFISH: &str = r#"
[devices.rf1]
kind = "redfish"
address = "10.0.0.5:8443"
username = "admin"
password_env = "PW"
system_id = "System.Embedded.1"
tls_fingerprint = "AB:CD"
"#;

#[test]
fn redfish_devices_resolve_and_errors_point_at_the_field() {
    let good = REDFISH.replace(
        "tls_fingerprint = \"AB:CD\"",
        "ca_file = \"bmc.pem\"\nauth = \"session_or_basic\"",
    );
    let c = parse(&format!("{GOOD}{good}")).unwrap();
    let DeviceKind::Redfish(s) = &c.devices["rf1"].kind else {
        panic!("rf1 is redfish")
    };
    assert_eq!(s.base_url, "https://10.0.0.5:8443");
    assert_eq!(s.system_id.as_deref(), Some("System.Embedded.1"));
    assert_eq!(
        s.tls,
        drivers::redfish::TlsVerify::CaFile("/etc/palisade/bmc.pem".into())
    );
    assert_eq!(s.auth, drivers::redfish::AuthMode::SessionOrBasic);
    assert_eq!(c.devices["rf1"].kind_name(), "redfish");

    let e = parse(&format!("{GOOD}{REDFISH}")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("devices.rf1.tls_fingerprint"));
    assert_eq!(e.line, Some(26));
    assert!(e.message.contains("64 hex digits"), "{}", e.message);

    let e = parse(&format!(
        "{GOOD}{}",
        REDFISH.replace("10.0.0.5:8443", "http://10.0.0.5")
    ))
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("devices.rf1.address"));
    assert!(e.message.contains("in clear"), "{}", e.message);

    let both = REDFISH.replace(
        "tls_fingerprint = \"AB:CD\"",
        "ca_file = \"x.pem\"\ninsecure = true",
    );
    let e = parse(&format!("{GOOD}{both}")).unwrap_err();
    assert!(e.message.contains("at most one"), "{}", e.message);

    let e = parse(&format!(
        "{GOOD}{}",
        REDFISH.replace("tls_fingerprint = \"AB:CD\"", "auth = \"kerberos\"")
    ))
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("devices.rf1.auth"));
}

#[test]
fn root_is_always_admin_and_others_need_a_grant() {
    let c = parse(&format!(
        "{GOOD}\n[api]\nfence_uids = [1000]\nread_gids = [50]\n"
    ))
    .unwrap();
    assert_eq!(c.api.role_for_peer(0, 0), Some(Role::Admin));
    assert_eq!(c.api.role_for_peer(1000, 1000), Some(Role::Fence));
    assert_eq!(c.api.role_for_peer(1001, 50), Some(Role::Read));
    assert_eq!(c.api.role_for_peer(1001, 1001), None);
}

#[test]
fn agent_devices_and_selection_settings() {
    let base = r#"
[devices.apc]
kind = "agent"
agent = "/usr/sbin/fence_apc_snmp"
password_env = "PW"
options = { ip = "192.0.2.30", power_wait = 0, lanplus = true }
host_map = { node1 = "3" }
host_check = "dynamic-list"
max_concurrent = 2
monitor_interval_s = 30

[targets.node1]
levels = [["apc"]]

[targets.node2]
levels = [["apc"]]
"#;
    let c = parse(base).unwrap();
    let d = &c.devices["apc"];
    let DeviceKind::Agent(a) = &d.kind else {
        panic!("{d:?}")
    };
    assert_eq!(
        a.options,
        vec![
            ("ip".to_string(), "192.0.2.30".to_string()),
            ("lanplus".into(), "1".into()),
            ("power_wait".into(), "0".into())
        ]
    );
    assert_eq!(
        a.secrets.first().map(|(o, p)| (o.as_str(), p.expose())),
        Some(("password", &b"secret-pw"[..]))
    );
    assert_eq!(d.address(), "/usr/sbin/fence_apc_snmp 192.0.2.30");
    assert_eq!(d.selection.max_concurrent, Some(2));
    assert_eq!(d.selection.monitor_interval, Some(Duration::from_secs(30)));
    // The map wins; a target it does not name is looked up by name in the device's list.
    assert_eq!(c.targets["node1"].levels[0][0].port.as_deref(), Some("3"));
    assert_eq!(
        c.targets["node2"].levels[0][0].port.as_deref(),
        Some("node2")
    );

    for (bad, says) in [
        (
            "host_check = \"dynamic-list\"",
            "host_check = \"sometimes\"",
        ),
        ("max_concurrent = 2", "max_concurrent = 0"),
        ("monitor_interval_s = 30", "monitor_interval_s = 0.1"),
        ("power_wait = 0", "password = \"x\""),
        ("power_wait = 0", "action = \"off\""),
    ] {
        let text = base.replace(bad, says);
        let e = parse(&text).unwrap_err();
        assert!(
            e.field.as_deref().unwrap_or("").starts_with("devices.apc"),
            "{says}: {e}"
        );
    }
    let c = parse(&base.replace("max_concurrent = 2", "on_fail = \"skip\"")).unwrap();
    assert!(c.devices["apc"].selection.skip_when_unhealthy);
    assert!(!d.selection.skip_when_unhealthy, "try is the default");
    let e = parse(&base.replace("max_concurrent = 2", "on_fail = \"fence\"")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("devices.apc.on_fail"), "{e}");
    assert!(e.to_string().contains("\"skip\""), "{e}");
    assert!(e.line.is_some(), "{e}");
    let e = parse(&base.replace("host_check = \"dynamic-list\"", "host_list = [\"node1\"]"))
        .unwrap_err();
    assert!(e.to_string().contains("may not fence `node2`"), "{e}");
}

#[test]
fn snmp_pdu_devices_parse_and_bad_ones_explain() {
    let text = |dev: &str| {
        format!("[devices.pdu]\nkind = \"snmp-pdu\"\naddress = \"127.0.0.1:1610\"\n{dev}\n[targets.n1]\nlevels = [[\"pdu:db1-psu1\", \"pdu:3=db1-psu2\"]]\n")
    };
    let c = parse(&text("model = \"apc-rpdu\"\ncommunity_env = \"PW\"")).unwrap();
    let DeviceKind::SnmpPdu(s) = &c.devices["pdu"].kind else {
        panic!()
    };
    assert!(
        matches!(&s.client.security, drivers::pdu::Security::Community { version: drivers::pdu::Version::V2c, community } if community.expose() == b"secret-pw")
    );
    assert_eq!(s.model.name, "apc-rpdu");
    assert_eq!(
        c.targets["n1"].levels[0][1].port.as_deref(),
        Some("3=db1-psu2")
    );
    assert_eq!(
        c.devices["pdu"].address(),
        "127.0.0.1:1610 snmp v2c apc-rpdu"
    );
    let c = parse(&text("model = \"apc-rpdu2\"\nusername = \"fence\"\nauth_password_env = \"PW\"\npriv_password_env = \"PW\"")).unwrap();
    let DeviceKind::SnmpPdu(s) = &c.devices["pdu"].kind else {
        panic!()
    };
    assert!(
        matches!(&s.client.security, drivers::pdu::Security::Usm(u) if u.auth.is_some() && u.privacy.is_some())
    );
    for (dev, want) in [
        ("community_env = \"PW\"", "needs `model`"),
        ("model = \"nope\"\ncommunity_env = \"PW\"", "apc-masterswitch"),
        ("model = \"apc-rpdu\"", "community_file"),
        ("model = \"apc-rpdu\"\ncommunity = \"public\"", "community_file"),
        ("model = \"apc-rpdu\"\nversion = \"3\"\nauth_password_env = \"PW\"", "username"),
        ("model = \"apc-rpdu\"\nversion = \"2c\"\nusername = \"u\"\ncommunity_env = \"PW\"", "not a user"),
        ("model = \"apc-rpdu\"\nusername = \"u\"\npriv_password_env = \"PW\"", "needs an auth_password"),
        ("model = \"apc-rpdu\"\nusername = \"u\"\nauth_password_env = \"PW\"\nauth_protocol = \"md5\"", "MD5"),
        ("model = \"apc-rpdu\"\nversion = \"4\"\ncommunity_env = \"PW\"", "expected version"),
    ] {
        let e = parse(&text(dev)).unwrap_err();
        assert!(e.to_string().contains(want), "{dev}: {e}");
        assert!(e.line.is_some(), "{dev}: {e}");
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in {text}"))
}

/// One device of each kind, each with its numbers at their defaults.
const KINDS: &str = r#"
[devices.bmc]
kind = "ipmi"
address = "127.0.0.1"
username = "admin"
password_env = "PW"

[devices.rf]
kind = "redfish"
address = "127.0.0.1:8443"
username = "admin"
password_env = "PW"

[devices.pdu]
kind = "snmp-pdu"
address = "127.0.0.1"
model = "apc-rpdu"
community_env = "PW"

[devices.disks]
kind = "sbd"
disks = ["/dev/null"]

[devices.fa]
kind = "agent"
agent = "/usr/sbin/fence_true"

[targets.node1]
levels = [["bmc"], ["rf"], ["pdu:1"], ["disks"], ["fa:1"]]
"#;

/// `KINDS` with `line` added after the line holding `after`.
fn with(after: &str, line: &str) -> String {
    KINDS.replacen(after, &format!("{after}\n{line}"), 1)
}

#[test]
fn every_number_out_of_range_is_refused_at_its_own_line_saying_the_range() {
    assert!(parse(KINDS).is_ok(), "{:?}", parse(KINDS).err());
    let cases: &[(&str, &str, &str, &str)] = &[
        // (after this line, add this one, field, expected range)
        (
            "[\"fa:1\"]]",
            "attempt_timeout_s = -5",
            "targets.node1.attempt_timeout_s",
            "more than 0 and at most 86400 seconds",
        ),
        (
            "[\"fa:1\"]]",
            "attempt_timeout_s = 0",
            "targets.node1.attempt_timeout_s",
            "more than 0",
        ),
        (
            "[\"fa:1\"]]",
            "total_timeout_s = 1e9",
            "targets.node1.total_timeout_s",
            "86400 seconds",
        ),
        (
            "[\"fa:1\"]]",
            "delay_s = -1",
            "targets.node1.delay_s",
            "0 to 86400 seconds",
        ),
        (
            "[\"fa:1\"]]",
            "random_delay_s = nan",
            "targets.node1.random_delay_s",
            "0 to 86400 seconds",
        ),
        (
            "kind = \"ipmi\"",
            "timeout_ms = 999999999999",
            "devices.bmc.timeout_ms",
            "50 to 60000 ms",
        ),
        (
            "kind = \"ipmi\"",
            "timeout_ms = 0",
            "devices.bmc.timeout_ms",
            "50 to 60000 ms",
        ),
        (
            "kind = \"ipmi\"",
            "retries = 1000",
            "devices.bmc.retries",
            "0 to 10 retries",
        ),
        (
            "kind = \"ipmi\"",
            "retries = -1",
            "devices.bmc.retries",
            "0 to 10 retries",
        ),
        (
            "kind = \"redfish\"",
            "timeout_ms = 10",
            "devices.rf.timeout_ms",
            "50 to 600000 ms",
        ),
        (
            "kind = \"redfish\"",
            "connect_timeout_ms = 0",
            "devices.rf.connect_timeout_ms",
            "50 to 600000 ms",
        ),
        (
            "kind = \"redfish\"",
            "total_timeout_ms = 600001",
            "devices.rf.total_timeout_ms",
            "50 to 600000 ms",
        ),
        (
            "kind = \"snmp-pdu\"",
            "timeout_ms = 0",
            "devices.pdu.timeout_ms",
            "50 to 60000 ms",
        ),
        (
            "kind = \"snmp-pdu\"",
            "retries = 11",
            "devices.pdu.retries",
            "0 to 10 retries",
        ),
        (
            "kind = \"sbd\"",
            "timeout_ms = 99",
            "devices.disks.timeout_ms",
            "100 to 60000 ms",
        ),
        (
            "kind = \"agent\"",
            "timeout_ms = 0",
            "devices.fa.timeout_ms",
            "100 to 600000 ms",
        ),
        (
            "kind = \"agent\"",
            "max_concurrent = 0",
            "devices.fa.max_concurrent",
            "1 to 1024 calls",
        ),
        (
            "kind = \"agent\"",
            "monitor_interval_s = 0",
            "devices.fa.monitor_interval_s",
            "1 to 86400 seconds",
        ),
    ];
    for (after, add, field, range) in cases {
        let text = with(after, add);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, add)), "{add}: {e}");
        assert_eq!(e.field.as_deref(), Some(*field), "{add}: {e}");
        assert!(e.message.contains(range), "{add}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("/etc/palisade/fenced.toml:{}:", line(&text, add))),
            "{e}"
        );
    }
    // Sections of their own.
    for (section, add, field, range) in [
        (
            "[defaults]",
            "attempt_timeout_s = -5",
            "defaults.attempt_timeout_s",
            "more than 0",
        ),
        (
            "[defaults]",
            "total_timeout_s = 0",
            "defaults.total_timeout_s",
            "more than 0",
        ),
        (
            "[api]",
            "header_timeout_s = -1",
            "api.header_timeout_s",
            "0.1 to 86400 seconds",
        ),
        (
            "[api]",
            "max_connections = 0",
            "api.max_connections",
            "1 to 65536 connections",
        ),
        (
            "[api]",
            "auth_failures_per_minute = 0",
            "api.auth_failures_per_minute",
            "1 to 100000",
        ),
        (
            "[limits]",
            "window_s = 0",
            "limits.window_s",
            "1 to 604800 seconds",
        ),
        (
            "[limits]",
            "request_id_window_s = -1",
            "limits.request_id_window_s",
            "0 to 604800 seconds",
        ),
        (
            "[limits]",
            "max_operations = -1",
            "limits.max_operations",
            "0 to 4294967295",
        ),
        (
            "[limits]",
            "max_operations_per_target = 5000000000",
            "limits.max_operations_per_target",
            "0 to 4294967295",
        ),
    ] {
        // A target that does not set the value: the error must not be reported under it.
        let text = format!("{KINDS}\n{section}\n{add}\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, add)), "{add}: {e}");
        assert_eq!(e.field.as_deref(), Some(field), "{add}: {e}");
        assert!(e.message.contains(range), "{add}: {e}");
    }
}

#[test]
fn timeouts_that_disagree_are_reported_where_they_are_set() {
    // The target's own attempt timeout above the built-in total: at the target's line.
    let text = with("[\"fa:1\"]]", "attempt_timeout_s = 200");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(line(&text, "attempt_timeout_s = 200")), "{e}");
    assert!(e.message.contains("the built-in total_timeout_s"), "{e}");
    // A default attempt timeout above the target's own total: at the target's total.
    let text = format!(
        "{}\n[defaults]\nattempt_timeout_s = 50\n",
        with("[\"fa:1\"]]", "total_timeout_s = 30")
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(line(&text, "total_timeout_s = 30")), "{e}");
    assert!(e.message.contains("[defaults]' attempt_timeout_s"), "{e}");
    // Defaults that disagree with each other: at the defaults line, with no target involved.
    let text = "[defaults]\nattempt_timeout_s = 50\ntotal_timeout_s = 30\n";
    let e = parse(text).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(3), Some("defaults.total_timeout_s")),
        "{e}"
    );
    // A default used by the target: resolved from [defaults].
    let c = parse(&format!("{KINDS}\n[defaults]\nattempt_timeout_s = 7\n")).unwrap();
    assert_eq!(
        c.targets["node1"].timing.attempt_timeout,
        Duration::from_secs(7)
    );
}

#[test]
fn another_kinds_field_is_an_unknown_field_at_its_line() {
    let text = with("kind = \"ipmi\"", "disks = [\"/dev/sdb\"]");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(line(&text, "disks = ")), "{e}");
    assert!(e.message.contains("unknown field `disks`"), "{e}");
    assert!(
        e.message.contains("`address`") && e.message.contains("`timeout_ms`"),
        "{e}"
    );
    assert!(
        e.message.contains("`host_list`"),
        "the shared settings are listed too: {e}"
    );
    assert!(
        !e.message.contains("`community_file`"),
        "only ipmi's own fields: {e}"
    );
    // The same from an sbd device, and with the kind written after the other settings.
    let text = "[devices.d]\ndisks = [\"/dev/sdb\"]\naddress = \"10.0.0.1\"\nkind = \"sbd\"\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("unknown field `address`"), "{e}");
    // An inline table keeps its positions too.
    let text = "[devices]\nd = { kind = \"sbd\", disks = [\"/dev/sdb\"], timeout_ms = 5 }\n";
    let e = parse(text).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(2), Some("devices.d.timeout_ms")),
        "{e}"
    );
    // The shared settings are taken by every kind.
    let text = with("kind = \"ipmi\"", "host_list = [\"node1\"]\nmax_concurrent = 1\non_fail = \"skip\"\nhost_check = \"static-list\"\nmonitor_interval_s = 5\nhost_map = { node1 = \"x\" }");
    let c = parse(&text).unwrap();
    let sel = &c.devices["bmc"].selection;
    assert_eq!(
        (sel.max_concurrent, sel.skip_when_unhealthy),
        (Some(1), true)
    );
    assert_eq!(sel.monitor_interval, Some(Duration::from_secs(5)));
    // A wrong type is reported at the value.
    let text = with("kind = \"sbd\"", "timeout_ms = \"fast\"");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(line(&text, "timeout_ms = \"fast\"")), "{e}");
}

#[test]
fn an_inline_secret_says_to_use_a_file_or_the_environment() {
    for (after, add, want) in [
        (
            "kind = \"ipmi\"",
            "password = \"hunter2\"",
            "`password_file = \"PATH\"`",
        ),
        (
            "kind = \"redfish\"",
            "password = \"hunter2\"",
            "`password_env = \"VAR\"`",
        ),
        (
            "kind = \"agent\"",
            "password = \"hunter2\"",
            "`password_file = \"PATH\"`",
        ),
        (
            "kind = \"snmp-pdu\"",
            "community = \"public\"",
            "`community_file = \"PATH\"`",
        ),
        (
            "kind = \"snmp-pdu\"",
            "auth_password = \"hunter22\"",
            "`auth_password_env = \"VAR\"`",
        ),
        (
            "kind = \"snmp-pdu\"",
            "priv_password = \"hunter22\"",
            "`priv_password_file = \"PATH\"`",
        ),
    ] {
        let text = with(after, add);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, add)), "{add}: {e}");
        assert!(e.message.contains(want), "{add}: {e}");
        assert!(
            e.message.contains("never written in the config"),
            "{add}: {e}"
        );
        assert!(
            !e.message.contains("hunter"),
            "the secret is not repeated: {e}"
        );
        assert!(!e.message.contains("expected one of"), "{add}: {e}");
    }
}

/// A file of mode 0600 holding `contents`, in `dir`.
fn secret_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn empty_secrets_are_refused_everywhere_unless_the_bmc_user_has_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let empty = secret_file(dir.path(), "empty", "\n");
    let full = secret_file(dir.path(), "full", "secret-pw\n");
    let cfg = dir.path().join("fenced.toml");
    let env = |n: &str| match n {
        "EMPTY" => Some(Vec::new()),
        _ => Some(b"secret-pw".to_vec()),
    };
    let parse = |text: &str| Config::parse(&cfg, text, &env);
    let file = |f: &Path| format!("_file = {:?}", f.display().to_string());
    // Each kind with an empty secret file and an empty environment variable.
    let cases = [
        ("[devices.bmc]", "password_env = \"PW\"", "password"),
        ("[devices.rf]", "password_env = \"PW\"", "password"),
        ("[devices.pdu]", "community_env = \"PW\"", "community"),
    ];
    for (header, field, base) in cases {
        let at = KINDS.find(header).unwrap();
        let (head, tail) = KINDS.split_at(at);
        let with_file = format!(
            "{head}{}",
            tail.replacen(field, &format!("{base}{}", file(&empty)), 1)
        );
        let e = parse(&with_file).unwrap_err();
        assert!(e.message.contains("is empty"), "{header}: {e}");
        assert_eq!(
            e.line,
            Some(line(&with_file, &empty.display().to_string())),
            "{e}"
        );
        let with_env = format!("{head}{}", tail.replacen("\"PW\"", "\"EMPTY\"", 1));
        let e = parse(&with_env).unwrap_err();
        assert!(e.message.contains("EMPTY is empty"), "{header}: {e}");
        if base == "password" {
            assert!(e.message.contains("empty_password = true"), "{e}");
        }
    }
    // An agent's password too.
    let text = KINDS.replacen(
        "agent = \"/usr/sbin/fence_true\"",
        &format!("agent = \"/usr/sbin/fence_true\"\npassword{}", file(&empty)),
        1,
    );
    assert!(parse(&text).unwrap_err().message.contains("is empty"));
    // SNMPv3 passwords.
    let text = KINDS.replacen(
        "community_env = \"PW\"",
        &format!("username = \"fence\"\nauth_password{}", file(&empty)),
        1,
    );
    assert!(parse(&text).unwrap_err().message.contains("is empty"));

    // A BMC user without a password says so, and then needs no password file.
    let text = KINDS.replacen("password_env = \"PW\"", "empty_password = true", 1);
    let c = parse(&text).unwrap();
    let DeviceKind::Ipmi(s) = &c.devices["bmc"].kind else {
        panic!("bmc is ipmi")
    };
    assert!(s.password.is_empty());
    let text = KINDS.replacen(
        "password_env = \"PW\"",
        &format!("empty_password = true\npassword{}", file(&full)),
        1,
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(line(&text, "empty_password")), "{e}");
    assert!(e.message.contains("not both"), "{e}");
    // Without any of them the error names all three.
    let text = KINDS.replacen("password_env = \"PW\"\n", "", 1);
    let e = parse(&text).unwrap_err();
    assert!(
        e.message.contains("password_file") && e.message.contains("empty_password"),
        "{e}"
    );
    assert_eq!(e.line, Some(line(&text, "[devices.bmc]")), "{e}");
}

#[test]
fn a_secret_path_that_is_a_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fenced.toml");
    let text = KINDS.replacen(
        "password_env = \"PW\"",
        &format!("password_file = {:?}", dir.path().display().to_string()),
        1,
    );
    let e = Config::parse(&cfg, &text, &env).unwrap_err();
    assert!(e.message.contains("is a directory"), "{e}");
    assert!(!e.message.contains("chmod"), "{e}");
    assert_eq!(e.line, Some(line(&text, "password_file")), "{e}");
    assert!(matches!(
        check_secret_file_mode(dir.path()),
        Err(SecretFileError::Directory { .. })
    ));
    assert!(matches!(
        check_secret_file_mode(Path::new("/dev/null")),
        Err(SecretFileError::NotAFile { .. })
    ));
}

#[test]
fn effective_timeouts_are_described_per_device() {
    let text = with("kind = \"ipmi\"", "timeout_ms = 1000\nretries = 2");
    let c = parse(&text).unwrap();
    let d = |n: &str| c.devices[n].kind.describe();
    assert!(
        d("bmc").contains("tries wait 1000, 1500, 2000 ms"),
        "{}",
        d("bmc")
    );
    assert!(d("bmc").contains("gives up after 4.5 s"), "{}", d("bmc"));
    assert!(d("rf").contains("connect_timeout_ms 3000, timeout_ms 10000 per request, total_timeout_ms 30000 per call"), "{}", d("rf"));
    assert!(
        d("pdu").contains("timeout_ms 1000 x 3 tries"),
        "{}",
        d("pdu")
    );
    assert!(
        d("disks").contains("timeout_ms 2000 per disk I/O"),
        "{}",
        d("disks")
    );
    assert!(d("fa").contains("timeout_ms 20000 per call"), "{}", d("fa"));
}

#[test]
fn the_tcp_listener_is_described_as_callers_meet_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fenced.toml");
    secret_file(dir.path(), "k.pem", "");
    let api = |extra: &str| {
        Config::parse(&cfg, &format!("[api]\n{extra}"), &env)
            .unwrap()
            .api
            .describe_tcp()
    };
    assert_eq!(api(""), "no TCP listener");
    assert_eq!(
        api("tcp = \"127.0.0.1:7420\"\ntcp_role = \"fence\"\n"),
        "TCP 127.0.0.1:7420 (plain; callers without a token get role fence)"
    );
    let tls = "tcp = \"0.0.0.0:7420\"\ntls = { cert = \"c.pem\", key = \"k.pem\", client_ca = \"ca.pem\" }\n";
    assert_eq!(
        api(&format!("{tls}tokens_file = \"tokens\"\n")),
        "TLS 0.0.0.0:7420 (callers need a token)"
    );
    let cert = "[[api.client_certs]]\ncn = \"c\"\nidentity = \"c\"\nrole = \"read\"\n";
    assert_eq!(
        api(&format!("{tls}tokens_file = \"tokens\"\n{cert}")),
        "TLS 0.0.0.0:7420 (callers need a token or a client certificate)"
    );
    assert_eq!(
        api(&format!("{tls}{cert}")),
        "TLS 0.0.0.0:7420 (callers need a client certificate)"
    );
}
