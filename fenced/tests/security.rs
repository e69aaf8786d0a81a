//! Security through the real binaries: `fenced run` with TLS, tokens and client certificates,
//! driven by `fence_node` and curl; the signed ledger checked online and offline; and a full
//! fencing scenario against a lab BMC whose password and token must appear nowhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::Secret;
use hw_tests::lab::{BackgroundLab, LabSpec};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FENCED: &str = env!("CARGO_BIN_EXE_fenced");
const FENCE_NODE: &str = env!("CARGO_BIN_EXE_fence_node");
const PASSWORD: &str = "lab-pw-7c1e9a0b";

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let ca = p.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// Writes the CA certificate, and a leaf certificate + key signed by it.
    fn issue(&self, dir: &Path, stem: &str, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let sans = if server {
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        } else {
            vec![]
        };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        write_secret(&k, &key.serialize_pem());
        (c, k)
    }

    fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.ca.pem()).unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    url: String,
}

impl Daemon {
    fn start(dir: &Path, config: &Path, port: u16) -> Daemon {
        let log = std::fs::File::create(dir.join("fenced.log")).unwrap();
        let child = Command::new(FENCED)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            dir: dir.into(),
            url: format!("https://127.0.0.1:{port}"),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || !dir.join("fenced.sock").exists()
        {
            if let Some(s) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("fenced exited with {s}: {}", d.log());
            }
            assert!(Instant::now() < until, "fenced did not start: {}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fenced.log")).unwrap_or_default()
    }

    /// fence_node over https with `ca`, and the token in `token_file` if given.
    fn https(&self, ca: &Path, token_file: Option<&Path>, args: &[&str]) -> Output {
        let mut c = Command::new(FENCE_NODE);
        c.args(["--url", &self.url, "--ca"]).arg(ca);
        if let Some(t) = token_file {
            c.arg("--token-file").arg(t);
        }
        c.args(args)
            .env_remove("PALISADE_TOKEN_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn unix(&self, args: &[&str]) -> Output {
        Command::new(FENCE_NODE)
            .args(args)
            .env("PALISADE_SOCKET", self.dir.join("fenced.sock"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_free_kill(c.id(), "TERM");
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a signal with kill(1), so the test needs no unsafe code.
fn unsafe_free_kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&o.stderr)),
    )
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    ca: PathBuf,
    pki: Pki,
}

/// A config with TLS, a tokens file, a client certificate rule, and one lab-style target whose
/// device is at `bmc` (a lab BMC, or nothing).
fn setup(bmc: &str, extra_api: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::new("palisade test CA");
    let ca = dir.join("ca.pem");
    pki.write_ca(&ca);
    pki.issue(&dir, "server", "fencer", true);
    pki.issue(&dir, "client", "ctrl-2", false);
    write_secret(&dir.join("pw"), &format!("{PASSWORD}\n"));
    let port = free_port();
    let config = dir.join("fenced.toml");
    std::fs::write(
        &config,
        format!(
            r#"[daemon]
socket = "{d}/fenced.sock"
history = "{d}/history.redb"
ledger_key = "{d}/ledger.key"

[api]
tcp = "127.0.0.1:{port}"
tokens_file = "{d}/tokens"
{extra_api}
tls = {{ cert = "{d}/server.pem", key = "{d}/server.key", client_ca = "{d}/ca.pem" }}

[[api.client_certs]]
cn = "ctrl-2"
identity = "ctrl-2"
role = "admin"

[devices.bmc1]
kind = "ipmi"
address = "{bmc}"
username = "admin"
password_file = "{d}/pw"
cipher_suite = 17
timeout_ms = 200
retries = 1

[targets.node1]
levels = [["bmc1"]]
attempt_timeout_s = 3
total_timeout_s = 8
"#,
            d = dir.display()
        ),
    )
    .unwrap();
    Setup {
        _tmp: tmp,
        dir,
        config,
        port,
        ca,
        pki,
    }
}

fn create_token(s: &Setup, name: &str, role: &str) -> (String, PathBuf) {
    let o = Command::new(FENCED)
        .args(["token", "create", "--config"])
        .arg(&s.config)
        .args(["--role", role, "--name", name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("pal_"), "{token}");
    let file = s.dir.join(format!("{name}.token"));
    write_secret(&file, &format!("{token}\n"));
    (token, file)
}

#[test]
fn tls_tokens_certificates_roles_audit_and_reload() {
    let s = setup("127.0.0.1:9", "auth_failures_per_minute = 4");
    let (_fence_token, fence_tok) = create_token(&s, "ctrl-1", "fence");
    let mut d = Daemon::start(&s.dir, &s.config, s.port);

    // A token with the fence role reads and is refused admin verbs with the role it needs.
    let o = d.https(&s.ca, Some(&fence_tok), &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("node1"), "{}", text(&o));
    let o = d.https(&s.ca, Some(&fence_tok), &["pause", "--reason", "test"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("needs the `admin` role"), "{}", text(&o));
    assert!(text(&o).contains("token:ctrl-1"), "{}", text(&o));

    // The token file may also come from the environment (its path; never the token).
    let o = Command::new(FENCE_NODE)
        .args(["--url", &d.url, "--ca"])
        .arg(&s.ca)
        .arg("status")
        .env("PALISADE_TOKEN_FILE", &fence_tok)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A token file others can read is refused before anything is sent.
    std::fs::set_permissions(&fence_tok, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = d.https(&s.ca, Some(&fence_tok), &["status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    std::fs::set_permissions(&fence_tok, std::fs::Permissions::from_mode(0o600)).unwrap();

    // No credentials over TLS: no role, and the hint says how to get one.
    let o = d.https(&s.ca, None, &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("needs the `read` role"), "{}", text(&o));
    assert!(text(&o).contains("fenced token create"), "{}", text(&o));

    // A token created while the daemon runs works at once, without a restart or a signal.
    let (_, admin_tok) = create_token(&s, "ops", "admin");
    let o = d.https(
        &s.ca,
        Some(&admin_tok),
        &["pause", "--reason", "maintenance window"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = d.https(&s.ca, Some(&admin_tok), &["resume", "--reason", "done"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A client certificate mapped by CN gets its identity and role.
    let dirs = s.dir.display().to_string();
    let (code, body) = curl(&[
        "--cacert",
        &format!("{dirs}/ca.pem"),
        "--cert",
        &format!("{dirs}/client.pem"),
        "--key",
        &format!("{dirs}/client.key"),
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"reason":"cert check"}"#,
        &format!("{}/v1/pause", d.url),
    ]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("cert:ctrl-2"), "{body}");

    // TLS 1.2 is spoken; TLS 1.1 and older are refused.
    let (code, body) = curl(&[
        "--cacert",
        &format!("{dirs}/ca.pem"),
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        &format!("{}/healthz", d.url),
    ]);
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl(&[
        "--cacert",
        &format!("{dirs}/ca.pem"),
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        &format!("{}/healthz", d.url),
    ]);
    assert_eq!(code, 0, "TLS 1.1 must not be accepted: {body}");

    // The wrong CA is refused by the client.
    let other = Pki::new("someone else");
    let other_ca = s.dir.join("other-ca.pem");
    other.write_ca(&other_ca);
    let o = d.https(&other_ca, Some(&fence_tok), &["status"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("TLS handshake failed"), "{}", text(&o));

    // SIGHUP: a certificate from another CA is served to new connections; the Unix socket
    // stays up throughout.
    other.issue(&s.dir, "server", "fencer-2", true);
    unsafe_free_kill(d.pid(), "HUP");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let o = d.https(&other_ca, Some(&fence_tok), &["status"]);
        if o.status.code() == Some(0) {
            break;
        }
        assert!(Instant::now() < until, "reload not seen: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = d.https(&s.ca, Some(&fence_tok), &["status"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "the old certificate is gone: {}",
        text(&o)
    );
    let o = d.unix(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        d.log().contains("TLS certificate and key reloaded"),
        "{}",
        d.log()
    );
    let ca = other_ca;

    // Revocation takes effect at the next request; a revoked token is a failed authentication.
    let o = Command::new(FENCED)
        .args(["token", "revoke", "--config"])
        .arg(&s.config)
        .arg("ops")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = d.https(&ca, Some(&admin_tok), &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("not accepted"), "{}", text(&o));

    // Failed authentications from one source are limited (4 per minute here): the 5th is 429.
    let bad = s.dir.join("bad.token");
    write_secret(
        &bad,
        "pal_0000000000000000000000000000000000000000000000000000000000000000",
    );
    for _ in 0..3 {
        let o = d.https(&ca, Some(&bad), &["status"]);
        assert!(text(&o).contains("not accepted"), "{}", text(&o));
    }
    let o = d.https(&ca, Some(&bad), &["status"]);
    assert!(
        text(&o).contains("too many failed authentications"),
        "{}",
        text(&o)
    );
    // ...and so is that source's valid token, for the rest of the minute.
    let o = d.https(&ca, Some(&fence_tok), &["status"]);
    assert!(
        text(&o).contains("too many failed authentications"),
        "{}",
        text(&o)
    );

    // The Unix socket (a different source) still works: counters and the audit trail.
    let o = d.unix(&["history", "--audit"]);
    let audit = text(&o);
    assert_eq!(o.status.code(), Some(0), "{audit}");
    for want in [
        "token:ctrl-1",
        "token:ops",
        "maintenance window",
        "cert:ctrl-2",
        "authentication failed",
        "127.0.0.1",
    ] {
        assert!(audit.contains(want), "audit lacks {want}: {audit}");
    }
    let (code, metrics) = curl(&[
        "--unix-socket",
        &format!("{dirs}/fenced.sock"),
        "http://localhost/metrics",
    ]);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("palisade_api_auth_failures_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_api_auth_rate_limited_total 2"),
        "{metrics}"
    );

    // The ledger verifies through the API, and offline with the public key.
    let o = d.unix(&["history", "--audit", "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ledger intact"), "{}", text(&o));
    d.stop();
    let o = Command::new(FENCED)
        .arg("verify-ledger")
        .arg(s.dir.join("history.redb"))
        .arg("--public-key")
        .arg(s.dir.join("ledger.key.pub"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ledger intact"), "{}", text(&o));
    let key_mode = std::fs::metadata(s.dir.join("ledger.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let _ = s.pki;
}

/// Status, headers and body of one curl request (`-i`), for checks on response headers.
fn curl_with_headers(args: &[&str]) -> (u16, String) {
    let mut a = vec!["-i"];
    a.extend_from_slice(args);
    curl(&a)
}

#[test]
fn tls_caller_without_credentials_gets_401_with_a_bearer_challenge_and_a_known_one_403() {
    let s = setup("127.0.0.1:9", "");
    let (_, fence_tok) = create_token(&s, "ctrl-1", "fence");
    let token = std::fs::read_to_string(&fence_tok).unwrap();
    let d = Daemon::start(&s.dir, &s.config, s.port);
    let ca = s.ca.to_str().unwrap();
    let url = |p: &str| format!("{}{p}", d.url);
    let challenge = |head: &str| {
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("www-authenticate:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default()
    };

    // No credentials at all: not authenticated (401, with the scheme to use), not "no role".
    let (code, out) = curl_with_headers(&["--cacert", ca, &url("/v1/targets")]);
    assert_eq!(code, 401, "{out}");
    assert!(challenge(&out).starts_with("bearer"), "{out}");
    assert!(out.contains("\"unauthenticated\""), "{out}");
    assert!(out.contains("presented no credentials"), "{out}");
    assert!(out.contains("fenced token create"), "{out}");
    // The same for an action.
    let (code, out) = curl_with_headers(&[
        "--cacert",
        ca,
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"reason":"x"}"#,
        &url("/v1/pause"),
    ]);
    assert_eq!(code, 401, "{out}");
    assert!(challenge(&out).starts_with("bearer"), "{out}");
    // /healthz needs no credentials.
    let (code, out) = curl(&["--cacert", ca, &url("/healthz")]);
    assert_eq!(code, 200, "{out}");

    // A wrong token: 401 with the challenge, saying the token is invalid (RFC 6750 §3.1).
    let (code, out) = curl_with_headers(&[
        "--cacert",
        ca,
        "-H",
        "Authorization: Bearer pal_not-a-real-token",
        &url("/v1/targets"),
    ]);
    assert_eq!(code, 401, "{out}");
    let c = challenge(&out);
    assert!(
        c.starts_with("bearer") && c.contains("invalid_token"),
        "{out}"
    );

    // Authenticated, but below the route's role: 403, and no challenge (another token would
    // not be "authenticating", it would be a different caller).
    let auth = format!("Authorization: Bearer {}", token.trim());
    let (code, out) = curl_with_headers(&[
        "--cacert",
        ca,
        "-H",
        &auth,
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"reason":"x"}"#,
        &url("/v1/pause"),
    ]);
    assert_eq!(code, 403, "{out}");
    assert!(out.contains("\"forbidden\""), "{out}");
    assert_eq!(challenge(&out), "", "{out}");
    let (code, out) = curl(&["--cacert", ca, "-H", &auth, &url("/v1/targets")]);
    assert_eq!(code, 200, "{out}");
}

#[test]
fn offline_verify_names_the_first_tampered_record() {
    use fenced::history::{History, LedgerEntry};
    let s = setup("127.0.0.1:9", "");
    let mut d = Daemon::start(&s.dir, &s.config, s.port);
    for r in ["one", "two", "three"] {
        let o = d.unix(&["pause", "--reason", r]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    d.stop();
    let db = s.dir.join("history.redb");
    let pubkey = s.dir.join("ledger.key.pub");
    let verify = |key: Option<&Path>| {
        let mut c = Command::new(FENCED);
        c.arg("verify-ledger").arg(&db);
        if let Some(k) = key {
            c.arg("--public-key").arg(k);
        }
        c.output().unwrap()
    };
    assert_eq!(verify(Some(&pubkey)).status.code(), Some(0));
    let seq = {
        let h = History::open_readonly_copy(&db).unwrap();
        let mut rec = h
            .ledger(1, 100)
            .unwrap()
            .into_iter()
            .find(|r| matches!(&r.entry, LedgerEntry::Audit { why, .. } if why == "two"))
            .unwrap();
        if let LedgerEntry::Audit { why, .. } = &mut rec.entry {
            *why = "nothing to see".into();
        }
        h.overwrite_ledger_record(&rec).unwrap();
        rec.seq
    };
    let o = verify(Some(&pubkey));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&format!("record {seq} ")), "{}", text(&o));
    assert!(text(&o).contains("changed"), "{}", text(&o));
}

/// A flood of failed authentications from many source addresses (each under its own per-source
/// limit) is refused and counted in full, but writes at most the audit budget to the ledger, and
/// the ledger still verifies.
#[test]
fn failed_authentication_flood_from_many_sources_is_audited_within_a_budget() {
    let s = setup("127.0.0.1:9", "");
    let mut d = Daemon::start(&s.dir, &s.config, s.port);
    let bad = s.dir.join("bad.token");
    write_secret(&bad, "pal_not-a-real-token\n");
    let budget = fenced::api::auth::AUDITED_FAILURES_PER_MINUTE as usize;
    let sources = budget + 20;
    let url = format!("{}/v1/targets", d.url);
    let header = format!("Authorization: Bearer {}", "pal_not-a-real-token");
    // Every 127.0.0.0/8 address is local: curl binds each request to its own source address.
    for i in 0..sources {
        let from = format!("127.0.{}.{}", 1 + i / 250, 2 + i % 250);
        let (code, body) = curl(&[
            "--interface",
            &from,
            "--cacert",
            s.ca.to_str().unwrap(),
            "-H",
            &header,
            &url,
        ]);
        assert_eq!(code, 401, "from {from}: {body}");
    }
    let (code, metrics) = curl(&[
        "--unix-socket",
        &format!("{}/fenced.sock", s.dir.display()),
        "http://localhost/metrics",
    ]);
    assert_eq!(code, 200);
    for want in [
        format!("palisade_api_auth_failures_total {sources}"),
        format!(
            "palisade_api_auth_failures_unaudited_total {}",
            sources - budget
        ),
        "palisade_api_auth_rate_limited_total 0".to_string(),
    ] {
        assert!(metrics.contains(&want), "metrics lack {want}: {metrics}");
    }
    let o = d.unix(&["history", "--audit", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let audited = String::from_utf8_lossy(&o.stdout)
        .matches("authentication failed")
        .count();
    assert_eq!(audited, budget, "{}", text(&o));
    let o = d.unix(&["history", "--audit", "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ledger intact"), "{}", text(&o));
    d.stop();
}

/// A full fencing scenario over TLS with a token, against a lab BMC: then the password and the
/// token are searched for in every place Palisade writes or exposes.
#[test]
fn no_secret_in_argv_env_logs_history_metrics_or_errors() {
    let lab = BackgroundLab::start(LabSpec::new(
        1,
        "admin",
        Secret::new(PASSWORD.as_bytes().to_vec()),
    ))
    .unwrap();
    let bmc = lab.bmcs()[0].addr().to_string();
    let s = setup(&bmc, "");
    let (token, tok) = create_token(&s, "ctrl-1", "admin");
    let d = Daemon::start(&s.dir, &s.config, s.port);
    let o = d.https(
        &s.ca,
        Some(&tok),
        &["off", "node1", "--reason", "secrets scenario"],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", text(&o), d.log());
    let mut seen = text(&o);
    let o = d.https(&s.ca, Some(&tok), &["on", "node1", "--reason", "back"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    seen.push_str(&text(&o));
    // Error paths: a bad token, a bad reason, an unknown target.
    let bad = s.dir.join("bad.token");
    write_secret(&bad, &format!("{token}x"));
    for args in [
        &["status"][..],
        &["confirm", "nosuch", "--reason", "x", "--yes"],
    ] {
        seen.push_str(&text(&d.https(&s.ca, Some(&bad), args)));
        seen.push_str(&text(&d.https(&s.ca, Some(&tok), args)));
    }
    seen.push_str(&text(&d.https(&s.ca, Some(&tok), &["history", "--json"])));
    seen.push_str(&text(&d.https(
        &s.ca,
        Some(&tok),
        &["history", "--audit", "--json"],
    )));
    seen.push_str(&text(&d.https(
        &s.ca,
        Some(&tok),
        &["devices", "--check", "--json"],
    )));
    let dirs = s.dir.display().to_string();
    for path in [
        "/metrics",
        "/v1/ledger?limit=1000",
        "/v1/targets",
        "/v1/devices",
    ] {
        seen.push_str(
            &curl(&[
                "--unix-socket",
                &format!("{dirs}/fenced.sock"),
                &format!("http://localhost{path}"),
            ])
            .1,
        );
    }
    let pid = d.pid();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let history = std::fs::read(s.dir.join("history.redb")).unwrap();
    let log = d.log();
    let check = |what: &str, hay: &[u8]| {
        for secret in [PASSWORD, token.as_str()] {
            assert!(
                !hay.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{what} holds a secret"
            );
        }
    };
    check("fenced's argv", &cmdline);
    check("fenced's environment", &environ);
    check("the history file", &history);
    check("the log", log.as_bytes());
    check(
        "API answers, metrics, ledger and error messages",
        seen.as_bytes(),
    );
    assert!(log.contains("fence request accepted"), "{log}");
    assert!(seen.contains("authentication failed") || seen.contains("not accepted"));
}

#[test]
fn insecure_configurations_are_refused_with_the_fix() {
    let s = setup("127.0.0.1:9", "");
    let check = |cfg: &Path| {
        Command::new(FENCED)
            .arg("check-config")
            .arg(cfg)
            .output()
            .unwrap()
    };
    assert_eq!(
        check(&s.config).status.code(),
        Some(0),
        "{}",
        text(&check(&s.config))
    );
    // A non-loopback address without TLS.
    let text0 = std::fs::read_to_string(&s.config).unwrap();
    let no_tls: String = text0
        .lines()
        .filter(|l| !l.starts_with("tls ="))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("127.0.0.1:", "0.0.0.0:")
        .replace(
            "[[api.client_certs]]\ncn = \"ctrl-2\"\nidentity = \"ctrl-2\"\nrole = \"admin\"\n",
            "",
        );
    let p = s.dir.join("no-tls.toml");
    std::fs::write(&p, no_tls).unwrap();
    let o = check(&p);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not a loopback address"), "{}", text(&o));
    assert!(text(&o).contains("[api.tls]"), "{}", text(&o));
    // Secret files readable by others: the password file and the TLS key.
    for f in ["pw", "server.key"] {
        let path = s.dir.join(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = check(&s.config);
        assert_eq!(o.status.code(), Some(1), "{f}: {}", text(&o));
        assert!(text(&o).contains("chmod 600"), "{}", text(&o));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Slow clients and idle connections are bounded: a client that sends no request, or sends its
/// headers too slowly, is disconnected after `header_timeout_s`; past `max_connections` open
/// connections, new ones are closed at once; afterwards the daemon serves normally.
#[test]
fn slow_and_idle_connections_are_bounded() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let config = dir.join("fenced.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nsocket = \"{d}/fenced.sock\"\nhistory = \"{d}/history.redb\"\n\n[api]\ntcp = \"127.0.0.1:{port}\"\nheader_timeout_s = 1\nmax_connections = 3\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut d = Daemon::start(dir, &config, port);
    // The readiness probe's connection may still be counted for a moment.
    std::thread::sleep(Duration::from_millis(1500));
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let closed_within = |s: &mut TcpStream, limit: Duration| {
        let t = Instant::now();
        let mut b = [0u8; 64];
        let closed = matches!(s.read(&mut b), Ok(0) | Err(_));
        closed && t.elapsed() <= limit
    };
    let mut idle: Vec<TcpStream> = (0..2).map(|_| connect()).collect();
    // Slowloris: a header line, then a byte every 300 ms.
    let mut slow = connect();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Over the limit: closed at once.
    let mut extra = connect();
    assert!(
        closed_within(&mut extra, Duration::from_millis(500)),
        "a 4th connection must be refused"
    );
    let t = Instant::now();
    let mut slow_closed = false;
    while t.elapsed() < Duration::from_secs(4) {
        if slow.write_all(b"X").is_err() {
            slow_closed = true;
            break;
        }
        let mut b = [0u8; 64];
        slow.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if matches!(slow.read(&mut b), Ok(0)) {
            slow_closed = true;
            break;
        }
    }
    assert!(
        slow_closed,
        "a client dribbling its headers must be cut off"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "an idle connection must be closed"
        );
    }
    // Serving normally afterwards.
    let mut ok = connect();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    let _ = ok.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let o = d.unix(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, metrics) = curl(&[
        "--unix-socket",
        &format!("{}/fenced.sock", dir.display()),
        "http://localhost/metrics",
    ]);
    assert!(
        metrics.contains("palisade_api_connections_refused_total{reason=\"over_limit\"} 1"),
        "{metrics}"
    );
    d.stop();
}

/// schemathesis (PyPI) fuzzes a live fenced over TLS with an admin token, through the OpenAPI
/// document fenced serves: no 5xx, no response that breaks the schema, the status codes and
/// content types the document declares. `/v1/events` (an endless stream) is left out.
#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    if !hw_tests::require::needs_command("schemathesis", "PyPI schemathesis") {
        return;
    }
    let s = setup("127.0.0.1:9", "");
    let (_, tok) = create_token(&s, "schemathesis", "admin");
    let d = Daemon::start(&s.dir, &s.config, s.port);
    // The token goes in a header file argument... schemathesis takes headers on its command
    // line only; this is the test's own throwaway token, not a Palisade process's argv.
    let token = std::fs::read_to_string(&tok).unwrap();
    let o = Command::new("schemathesis")
        .arg("run")
        .arg(format!("{}/v1/openapi.json", d.url))
        .arg("--tls-verify")
        .arg(&s.ca)
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
            "--exclude-path",
            "/v1/events",
            "--max-time",
            "40",
            "--request-timeout",
            "10",
            "--phases",
            "coverage,fuzzing",
            // One worker: hypothesis' source inspection is not thread-safe (it raised
            // "AST constructor recursion depth mismatch" with two).
            "--workers",
            "1",
        ])
        .env("NO_COLOR", "1")
        // It keeps a cache of failing cases in its working directory: not in the repository.
        .current_dir(&s.dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o);
    // Findings (5xx, schema violations, ...) are listed under FAILURES; an ERRORS section with
    // only schemathesis' own runtime errors is a tool problem, reported but not fatal.
    assert!(
        !out.contains("= FAILURES ="),
        "schemathesis found problems:\n{out}\n{}",
        d.log()
    );
    if o.status.code() != Some(0) {
        assert!(out.contains("Runtime Error"), "schemathesis failed:\n{out}");
        eprintln!("note: schemathesis hit an internal error (not a finding):\n{out}");
    }
    assert!(out.contains("passed"), "{out}");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
