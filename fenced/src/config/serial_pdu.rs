//! Kind `serial-pdu` (issue 18): a PDU driven at its text console, on a local serial port or
//! a console server's TCP port, straight into [`SerialPduConfig`]. Level entries name its
//! outlets (`pdu-a:3`, `pdu-a:db1`).
//!
//! ```toml
//! [devices.pdu-a]
//! kind = "serial-pdu"
//! model = "wti"                 # wti, apc, baytech (or wti-nps, apc-ap79xx, baytech-rpc)
//! port = "/dev/ttyUSB0"         # a local port ...
//! baud = 9600
//! parity = "none"
//! # address = "192.0.2.30:2001" # ... or a console server's TCP port
//! username = "admin"
//! password_file = "/etc/palisade/pdu-a.pw"
//! ```
//!
//! Instead of `model`, a console none of the built-in models speaks is described in
//! `[devices.NAME.dialogue]` (serial_dialogue.rs).

use super::device::{DeviceCx, KindSettings, KindTable};
use super::ConfigError;
use drivers::serial_pdu::{
    Endpoint, Parity, SerialLine, SerialPduConfig, SerialPduDevice, Timeouts,
};
use drivers::{DeviceError, PowerDevice};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::path::PathBuf;
use std::sync::Arc;

/// TCP connect: 50 ms to 60 s.
const CONNECT_MS: (u32, u32) = (50, 60_000);
/// One read: a console answers a key within milliseconds; 60 s covers a modem link.
const READ_MS: (u32, u32) = (50, 60_000);
/// One reply: a 9600-baud status screen of 48 outlets takes about 5 s.
const REPLY_MS: (u32, u32) = (100, 300_000);
/// Rates a PDU console offers (1200 on old BayTech units to 115200 on WTI VMR).
const BAUDS: &[i64] = &[1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200];

/// `[devices.NAME]` with `kind = "serial-pdu"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SerialPduTable {
    model: Option<Spanned<String>>,
    port: Option<Spanned<PathBuf>>,
    baud: Option<Spanned<i64>>,
    parity: Option<Spanned<String>>,
    data_bits: Option<Spanned<i64>>,
    stop_bits: Option<Spanned<i64>>,
    lock_dir: Option<Spanned<PathBuf>>,
    address: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    connect_timeout_ms: Option<Spanned<i64>>,
    read_timeout_ms: Option<Spanned<i64>>,
    reply_timeout_ms: Option<Spanned<i64>>,
    // A plain table: toml gives no span for a table written under its own header.
    dialogue: Option<Box<super::serial_dialogue::DialogueTable>>,
}

/// `HOST:PORT` with an explicit port (console servers put each line on its own port);
/// IPv6 as `[IP]:PORT`.
fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok()?.to_string(),
        None if host.contains(':') => return None,
        None => host.to_string(),
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    ok.then_some((host, port))
}

impl KindTable for SerialPduTable {
    type Settings = SerialPduConfig;
    const SECRETS: &'static [&'static str] = &["password"];

    fn resolve(self, cx: &DeviceCx<'_>) -> Result<SerialPduConfig, ConfigError> {
        // A built-in model or the site's own dialogue, never both: which one speaks would
        // otherwise depend on a precedence rule the reader has to know.
        let model = match (&self.dialogue, &self.model) {
            (Some(_), Some(m)) => {
                return Err(cx.at(m, "model", "this device also has a `[dialogue]`; give either `model` (a built-in dialogue) or the dialogue, not both"))
            }
            (Some(d), None) => d.resolve(cx)?,
            (None, _) => cx.model(
                &self.model,
                "a serial-pdu",
                &format!(
                    "{}; or describe the console's own in `[devices.NAME.dialogue]`",
                    drivers::serial_pdu::model::names()
                ),
                drivers::serial_pdu::model::by_name,
            )?,
        };
        let endpoint = match (&self.port, &self.address) {
            (Some(_), Some(a)) => {
                return Err(cx.at(
                    a,
                    "address",
                    "give either `port` (a local serial port) or `address` (a console server's HOST:PORT), not both",
                ))
            }
            (None, None) => {
                return Err(cx.missing(
                    "port",
                    "a serial-pdu device needs `port = \"/dev/ttyUSB0\"` (a local serial port) or `address = \"HOST:PORT\"` (a console server)",
                ))
            }
            (Some(p), None) => Endpoint::Serial(self.line(cx, p)?),
            (None, Some(a)) => {
                for (v, field) in [
                    (self.baud.as_ref().map(Spanned::span), "baud"),
                    (self.data_bits.as_ref().map(Spanned::span), "data_bits"),
                    (self.stop_bits.as_ref().map(Spanned::span), "stop_bits"),
                    (self.parity.as_ref().map(Spanned::span), "parity"),
                    (self.lock_dir.as_ref().map(Spanned::span), "lock_dir"),
                ] {
                    if let Some(span) = v {
                        return Err(cx.ctx.err(Some(span), &cx.field(field), "line settings belong to a local `port`; for a console server, set them on the console server"));
                    }
                }
                let (host, port) = parse_host_port(a.get_ref()).ok_or_else(|| {
                    cx.at(
                        a,
                        "address",
                        format!(
                            "expected HOST:PORT with the console server's TCP port for this line, like 192.0.2.30:2001, found `{}`",
                            a.get_ref()
                        ),
                    )
                })?;
                Endpoint::Tcp { host, port }
            }
        };
        let username = match &self.username {
            Some(u) if u.get_ref().is_empty() || u.get_ref().chars().any(char::is_control) => {
                return Err(cx.at(
                    u,
                    "username",
                    "expected a user name without control characters (leave `username` out if the console asks for none)",
                ))
            }
            Some(u) => Some(u.get_ref().clone()),
            None => None,
        };
        let password = cx.secret(
            "password",
            &self.password_file,
            &self.password_env,
            "put the console password in it, or leave password_file/password_env out if the console asks for none",
        )?;
        if let Some(p) = &password {
            if p.expose().iter().any(|b| *b == b'\r' || *b == b'\n') {
                let msg = "the password holds a line end inside it, which the console would take as the end of the password";
                return Err(match (&self.password_file, &self.password_env) {
                    (Some(f), _) => cx.at(f, "password_file", msg),
                    (_, Some(v)) => cx.at(v, "password_env", msg),
                    _ => cx.missing("password_file", msg),
                });
            }
        }
        let timeouts = Timeouts {
            connect: cx.millis(
                &self.connect_timeout_ms,
                "connect_timeout_ms",
                3_000,
                CONNECT_MS,
            )?,
            read: cx.millis(&self.read_timeout_ms, "read_timeout_ms", 2_000, READ_MS)?,
            reply: cx.millis(&self.reply_timeout_ms, "reply_timeout_ms", 10_000, REPLY_MS)?,
        };
        if timeouts.reply < timeouts.read {
            let msg = format!(
                "a reply may not end sooner than one read may wait ({} ms); raise reply_timeout_ms or lower read_timeout_ms",
                timeouts.read.as_millis()
            );
            return Err(match &self.reply_timeout_ms {
                Some(v) => cx.at(v, "reply_timeout_ms", msg),
                None => cx.missing("reply_timeout_ms", msg),
            });
        }
        Ok(SerialPduConfig {
            endpoint,
            model,
            username,
            password,
            timeouts,
        })
    }
}

impl SerialPduTable {
    fn line(&self, cx: &DeviceCx<'_>, p: &Spanned<PathBuf>) -> Result<SerialLine, ConfigError> {
        let path = p.get_ref();
        if !path.is_absolute() {
            return Err(cx.at(
                p,
                "port",
                format!(
                    "expected the port's absolute path, like /dev/ttyUSB0 or /dev/serial/by-id/..., found `{}`",
                    path.display()
                ),
            ));
        }
        // A port the configured board does not have is refused here, at its line, rather
        // than at the first fence (when the open fails and the node is not fenced).
        cx.serial_port_on_board("serial-pdu", p, "port")?;
        let baud = match &self.baud {
            None => 9600,
            Some(b) if BAUDS.contains(b.get_ref()) => u32::try_from(*b.get_ref()).unwrap_or(9600),
            Some(b) => {
                return Err(cx.at(
                    b,
                    "baud",
                    format!(
                        "expected one of {:?} bits per second, found {}",
                        BAUDS,
                        b.get_ref()
                    ),
                ))
            }
        };
        let parity = match &self.parity {
            None => Parity::None,
            Some(v) => match v.get_ref().as_str() {
                "none" => Parity::None,
                "even" => Parity::Even,
                "odd" => Parity::Odd,
                other => {
                    return Err(cx.at(
                        v,
                        "parity",
                        format!("expected \"none\", \"even\" or \"odd\", found `{other}`"),
                    ))
                }
            },
        };
        let data_bits = cx.count(&self.data_bits, "data_bits", 8, (7, 8), " data bits")?;
        let stop_bits = cx.count(&self.stop_bits, "stop_bits", 1, (1, 2), " stop bits")?;
        let lock_dir = match &self.lock_dir {
            None => PathBuf::from("/run/lock"),
            Some(d) => cx.path(d.get_ref()),
        };
        Ok(SerialLine {
            path: path.clone(),
            baud,
            parity,
            data_bits: u8::try_from(data_bits).unwrap_or(8),
            stop_bits: u8::try_from(stop_bits).unwrap_or(1),
            lock_dir,
        })
    }
}

impl KindSettings for SerialPduConfig {
    fn address(&self) -> String {
        format!("{} {}", self.endpoint, self.model.name)
    }

    fn describe(&self) -> String {
        let t = &self.timeouts;
        let link = match &self.endpoint {
            Endpoint::Serial(l) => format!(
                "serial {} {}{}{} (locked: {}/{}, TIOCEXCL, flock)",
                l.baud,
                l.data_bits,
                match l.parity {
                    Parity::None => "N",
                    Parity::Even => "E",
                    Parity::Odd => "O",
                },
                l.stop_bits,
                l.lock_dir.display(),
                drivers::serial_pdu::transport::lock_name(&l.path)
            ),
            Endpoint::Tcp { .. } => {
                format!("tcp, connect timeout {} ms", t.connect.as_millis())
            }
        };
        format!(
            "{link}; {}; read timeout {} ms, reply timeout {} ms; confirms by reading the outlet's status back",
            match (&self.username, &self.password) {
                (Some(u), Some(_)) => format!("user {u}, password (secret)"),
                (Some(u), None) => format!("user {u}, no password"),
                (None, Some(_)) => "password (secret)".to_string(),
                (None, None) => "no login".to_string(),
            },
            t.read.as_millis(),
            t.reply.as_millis()
        )
    }

    fn build(&self, _node_name: &str) -> Result<Arc<dyn PowerDevice>, DeviceError> {
        Ok(Arc::new(SerialPduDevice::new(self.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, DeviceKind};
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn env(name: &str) -> Option<Vec<u8>> {
        (name == "PDU_PW").then(|| b"pdu-secret".to_vec())
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/palisade/fenced.toml"), text, &env)
    }

    const GOOD: &str = r#"
[devices.wti]
kind = "serial-pdu"
model = "wti"
port = "/dev/ttyUSB0"
baud = 19200
parity = "even"
data_bits = 7
username = "admin"
password_env = "PDU_PW"
read_timeout_ms = 500

[devices.bay]
kind = "serial-pdu"
model = "baytech-rpc"
address = "192.0.2.30:2001"
reply_timeout_ms = 4000

[targets.db1]
levels = [["wti:1", "bay:db1"]]
"#;

    fn settings<'c>(c: &'c Config, name: &str) -> &'c SerialPduConfig {
        let DeviceKind::SerialPdu(s) = &c.devices[name].kind else {
            panic!("{name} is a serial-pdu device")
        };
        s
    }

    fn line(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("`{needle}` not in {text}"))
    }

    #[test]
    fn a_local_port_and_a_console_server_convert() {
        let c = parse(GOOD).unwrap();
        let w = settings(&c, "wti");
        assert_eq!(w.model.name, "wti-nps");
        assert_eq!(
            w.endpoint,
            Endpoint::Serial(SerialLine {
                path: "/dev/ttyUSB0".into(),
                baud: 19_200,
                parity: Parity::Even,
                data_bits: 7,
                stop_bits: 1,
                lock_dir: "/run/lock".into(),
            })
        );
        assert_eq!(w.username.as_deref(), Some("admin"));
        assert_eq!(
            w.password.as_ref().map(|p| p.expose()),
            Some(&b"pdu-secret"[..])
        );
        assert_eq!(w.timeouts.read, Duration::from_millis(500));
        assert_eq!(w.timeouts.reply, Duration::from_secs(10));
        let b = settings(&c, "bay");
        assert_eq!(
            b.endpoint,
            Endpoint::Tcp {
                host: "192.0.2.30".into(),
                port: 2001
            }
        );
        assert!(b.password.is_none() && b.username.is_none());
        assert_eq!(c.devices["bay"].address(), "192.0.2.30:2001 baytech-rpc");
        let d = c.devices["wti"].kind.describe();
        assert!(
            d.contains("serial 19200 7E1 (locked: /run/lock/LCK..ttyUSB0, TIOCEXCL, flock)")
                && d.contains("user admin, password (secret)")
                && !d.contains("pdu-secret"),
            "{d}"
        );
        assert!(!format!("{c:?}").contains("pdu-secret"));
    }

    #[test]
    fn bad_values_are_refused_at_their_line() {
        for (from, to, want) in [
            (
                "model = \"wti\"",
                "model = \"nps\"",
                "unknown model `nps`; expected one of: wti (wti-nps)",
            ),
            ("baud = 19200", "baud = 19201", "expected one of [1200,"),
            (
                "parity = \"even\"",
                "parity = \"mark\"",
                "expected \"none\", \"even\" or \"odd\", found `mark`",
            ),
            (
                "data_bits = 7",
                "data_bits = 5",
                "expected 7 to 8 data bits, found 5",
            ),
            (
                "port = \"/dev/ttyUSB0\"",
                "port = \"ttyUSB0\"",
                "absolute path",
            ),
            (
                "address = \"192.0.2.30:2001\"",
                "address = \"192.0.2.30\"",
                "expected HOST:PORT",
            ),
            (
                "read_timeout_ms = 500",
                "read_timeout_ms = 5",
                "expected 50 to 60000 ms, found 5",
            ),
            (
                "reply_timeout_ms = 4000",
                "reply_timeout_ms = 1000\nread_timeout_ms = 3000",
                "may not end sooner than one read",
            ),
            (
                "address = \"192.0.2.30:2001\"",
                "address = \"192.0.2.30:2001\"\nbaud = 9600",
                "line settings belong to a local `port`",
            ),
            (
                "port = \"/dev/ttyUSB0\"",
                "port = \"/dev/ttyUSB0\"\naddress = \"h:1\"",
                "not both",
            ),
            (
                "username = \"admin\"",
                "username = \"\"",
                "without control characters",
            ),
        ] {
            let text = GOOD.replacen(from, to, 1);
            let e = parse(&text).unwrap_err();
            let last = to.lines().last().unwrap_or(to);
            let want_line = if want.contains("may not end sooner") {
                line(&text, "reply_timeout_ms")
            } else if want.contains("line settings") {
                line(&text, "baud = 9600")
            } else {
                line(&text, last)
            };
            assert_eq!(e.line, Some(want_line), "{to}: {e}");
            assert!(e.to_string().contains(want), "{to}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("/etc/palisade/fenced.toml:{want_line}: devices.")),
                "{e}"
            );
        }
    }

    #[test]
    fn missing_settings_and_inline_secrets_are_refused() {
        let text = GOOD.replacen("model = \"baytech-rpc\"\n", "", 1);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "[devices.bay]")), "{e}");
        assert!(e.message.contains("needs `model`"), "{e}");
        let text = GOOD.replacen("address = \"192.0.2.30:2001\"\n", "", 1);
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("needs `port = "), "{e}");
        let text = GOOD.replacen("password_env = \"PDU_PW\"", "password = \"x\"", 1);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "password = ")), "{e}");
        assert!(e.to_string().contains("password_file"), "{e}");
        let text = GOOD.replacen("reply_timeout_ms = 4000", "community = \"x\"", 1);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(line(&text, "community = ")), "{e}");
    }

    #[test]
    fn host_ports_parse() {
        assert_eq!(
            parse_host_port("cs1.example:7001"),
            Some(("cs1.example".into(), 7001))
        );
        assert_eq!(parse_host_port("[::1]:23"), Some(("::1".into(), 23)));
        for bad in ["::1:23", "host", "host:0", "host:x", ":23", "a b:23"] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }
}
