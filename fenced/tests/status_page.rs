//! The status page in a real browser: headless Chromium (Debian `chromium`, driven through
//! `chromium-driver`'s WebDriver API) against a real `fenced run` on TLS with tokens, fencing
//! lab BMCs (real RMCP+ over loopback). The page must refuse to show anything to a caller
//! without the `read` role, show an operation while it runs and then its confirmed outcome,
//! show a stuck BMC's fence as failed with its reason, and show device health and identity.
//! Screenshots go to `target/status-page.png` (a fence in flight), `status-page-failed.png`
//! (the stuck BMC's failure), `status-page-phone.png` and `status-page-refused.png`; the page's
//! weight and the time from a fence's acceptance to the page showing it (median of 5) are
//! printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::process::{text, Fenced};
use drivers::Secret;
use hw_tests::browser::{Browser, CHROMEDRIVER, CHROMIUM};
use hw_tests::lab::{BackgroundLab, Fault, LabSpec};
use rcgen::{CertificateParams, KeyPair};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "lab-pw-page";
const WAIT: Duration = Duration::from_secs(20);

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

struct Bench {
    lab: BackgroundLab,
    fenced: Fenced,
    url: String,
    read_token: String,
    _tmp: tempfile::TempDir,
}

/// A lab of two BMCs (each power change takes `power_delay`), and fenced with a TLS listener
/// that knows callers only by token, plus its Unix socket (the test's own fence requests).
fn bench(power_delay: Duration) -> Bench {
    let mut spec = LabSpec::new(2, "admin", Secret::new(PASSWORD.as_bytes().to_vec()));
    spec.power_delay = power_delay;
    let lab = BackgroundLab::start(spec).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(d.join("server.pem"), cert.pem()).unwrap();
    write_secret(&d.join("server.key"), &key.serialize_pem());
    write_secret(&d.join("pw"), &format!("{PASSWORD}\n"));
    let port = free_port();
    let mut cfg = format!(
        "[daemon]\nsocket = \"{d}/fenced.sock\"\nhistory = \"{d}/history.redb\"\nledger_key = \"{d}/ledger.key\"\n\n\
         [api]\ntcp = \"127.0.0.1:{port}\"\ntokens_file = \"{d}/tokens\"\n\
         tls = {{ cert = \"{d}/server.pem\", key = \"{d}/server.key\" }}\n\n\
         [defaults]\nattempt_timeout_s = 4\ntotal_timeout_s = 10\n\n\
         [limits]\nmax_operations = 50\nmax_operations_per_target = 20\n\n",
        d = d.display()
    );
    for b in lab.bmcs() {
        cfg.push_str(&format!(
            "[devices.bmc-{n}]\nkind = \"ipmi\"\naddress = \"{a}\"\nusername = \"admin\"\npassword_file = \"{d}/pw\"\ncipher_suite = 17\ntimeout_ms = 300\nretries = 1\n\n[targets.{n}]\nlevels = [[\"bmc-{n}\"]]\nidentities = {{ bmc-{n} = \"{g}\" }}\n\n",
            n = b.name(),
            a = b.addr(),
            g = b.guid_text(),
            d = d.display(),
        ));
    }
    let config = d.join("fenced.toml");
    std::fs::write(&config, cfg).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fenced"))
        .args(["token", "create", "--config"])
        .arg(&config)
        .args(["--role", "read", "--name", "status-page"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let read_token = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let fenced = Fenced::start(d, &config);
    Bench {
        lab,
        fenced,
        url: format!("https://127.0.0.1:{port}/status"),
        read_token,
        _tmp: tmp,
    }
}

fn needs_browser() -> bool {
    hw_tests::require::needs_command(CHROMIUM, "Debian package chromium")
        && hw_tests::require::needs_command(CHROMEDRIVER, "Debian package chromium-driver")
}

/// Starts a fence over the Unix socket without waiting; returns the operation id.
fn fence(b: &Bench, action: &str, node: &str) -> u64 {
    let v = b
        .fenced
        .json(&[action, node, "--reason", "status page test", "--no-wait"]);
    v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
}

fn operation(b: &Bench, node: &str, id: u64) -> Value {
    let h = b.fenced.json(&["history", node]);
    h.as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("operation {id} not in {node}'s history: {h}"))
}

fn attr(v: &Value, name: &str) -> String {
    v["attrs"][name].as_str().unwrap_or_default().to_string()
}

fn row(id: u64) -> String {
    format!("#history tr[data-op-id=\"{id}\"]")
}

/// Waits for operation `id`'s history row to reach a final state; returns it.
fn finished_row(browser: &Browser, id: u64) -> Value {
    browser
        .wait_for(&row(id), WAIT, |v| {
            matches!(attr(v, "data-state").as_str(), "succeeded" | "failed")
        })
        .unwrap()
}

fn signed_in(b: &Bench) -> Browser {
    let browser = Browser::start(1280, 1100, &["--ignore-certificate-errors"]).unwrap();
    browser.goto(&b.url).unwrap();
    browser
        .wait_for("#auth", WAIT, |v| v["hidden"] == false)
        .unwrap();
    browser.type_into("#token", &b.read_token).unwrap();
    browser.click("#token-save").unwrap();
    browser
        .wait_for("#conn", WAIT, |v| v["text"] == "live")
        .unwrap();
    browser
}

#[test]
fn a_caller_without_the_read_role_sees_only_the_refusal() {
    if !needs_browser() {
        return;
    }
    let b = bench(Duration::from_millis(50));
    let browser = Browser::start(1024, 800, &["--ignore-certificate-errors"]).unwrap();
    browser.goto(&b.url).unwrap();
    // No credentials on a TLS listener: the API answers 401 and the page asks for a token.
    let auth = browser
        .wait_for("#auth-error", WAIT, |v| {
            v["text"].as_str().is_some_and(|t| !t.is_empty())
        })
        .unwrap();
    let msg = auth["text"].as_str().unwrap().to_string();
    assert!(msg.contains("401 unauthenticated"), "{msg}");
    assert!(msg.contains("needs the `read` role"), "{msg}");
    assert_eq!(browser.inspect("#conn").unwrap()["text"], "refused");
    // A wrong token is refused the same way, and nothing about the targets is shown.
    browser.type_into("#token", "pal_not-a-real-token").unwrap();
    browser.click("#token-save").unwrap();
    browser
        .wait_for("#auth-error", WAIT, |v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains("not accepted"))
        })
        .unwrap();
    assert_eq!(browser.inspect("[data-target]").unwrap(), Value::Null);
    assert_eq!(browser.inspect("[data-device]").unwrap(), Value::Null);
    let shot = target_dir().join("status-page-refused.png");
    browser.screenshot(&shot).unwrap();
    println!("screenshot: {}", shot.display());
}

#[test]
fn the_page_follows_fences_live_with_outcomes_reasons_and_device_health() {
    if !needs_browser() {
        return;
    }
    let b = bench(Duration::from_millis(800));
    let browser = signed_in(&b);

    // Devices: healthy, with the identity the BMC reported (the pinned GUID).
    let guid = b.lab.bmc("node1").unwrap().guid_text();
    let dev = browser
        .wait_for("[data-device=\"bmc-node1\"]", WAIT, |v| {
            attr(v, "data-health") == "healthy"
        })
        .unwrap();
    assert!(dev["text"].as_str().unwrap().contains(&guid), "{dev}");
    let t = browser.inspect("[data-target=\"node1\"]").unwrap();
    assert!(
        t["text"].as_str().unwrap().contains("bmc-node1"),
        "the target shows its level's device: {t}"
    );
    let ledger = browser
        .wait_for("#ledger", WAIT, |v| {
            v["text"].as_str().is_some_and(|t| t.starts_with("intact"))
        })
        .unwrap();
    assert!(ledger["text"].as_str().unwrap().contains("records"));

    // An honest fence: shown in flight while the BMC takes its time, then confirmed.
    let id = fence(&b, "off", "node1");
    let running = browser
        .wait_for(&format!("#inflight [data-op-id=\"{id}\"]"), WAIT, |v| {
            attr(v, "data-state") == "running"
        })
        .unwrap();
    assert!(
        running["text"].as_str().unwrap().contains("in progress"),
        "{running}"
    );
    // The screenshot of a fence in flight (the BMC takes 800 ms to switch).
    let shot = target_dir().join("status-page.png");
    browser.screenshot(&shot).unwrap();
    println!("screenshot (running): {}", shot.display());
    let done = finished_row(&browser, id);
    assert_eq!(attr(&done, "data-state"), "succeeded", "{done}");
    assert!(
        attr(&done, "data-states").contains("running"),
        "the page showed the operation running before its outcome: {done}"
    );
    let outcome = done["text"].as_str().unwrap();
    assert!(
        outcome.contains("confirmed by power read back"),
        "{outcome}"
    );
    assert!(
        outcome.contains("status page test"),
        "the reason: {outcome}"
    );
    assert_eq!(operation(&b, "node1", id)["state"], "succeeded");
    assert!(!b.lab.bmc("node1").unwrap().power());
    assert_eq!(
        browser.inspect("#inflight [data-op-id]").unwrap(),
        Value::Null,
        "nothing left in flight"
    );

    // A stuck BMC (acknowledges, never changes power): failed, with the reason.
    b.lab.bmc("node2").unwrap().set_fault(Fault::Stuck(true));
    let id2 = fence(&b, "off", "node2");
    let failed = finished_row(&browser, id2);
    assert_eq!(attr(&failed, "data-state"), "failed", "{failed}");
    let ftext = failed["text"].as_str().unwrap();
    assert!(ftext.contains("NOT FENCED"), "{ftext}");
    assert!(
        ftext.contains("not_confirmed"),
        "the step's reason: {ftext}"
    );
    let op2 = operation(&b, "node2", id2);
    assert_eq!(op2["state"], "failed");
    assert!(
        ftext.contains(op2["outcome"]["message"].as_str().unwrap()),
        "the page shows the daemon's own reason: {ftext} vs {op2}"
    );
    let target2 = browser.inspect("[data-target=\"node2\"]").unwrap();
    assert!(
        target2["text"].as_str().unwrap().contains("failed"),
        "{target2}"
    );
    assert!(b.lab.bmc("node2").unwrap().power(), "still running");

    let shot = target_dir().join("status-page-failed.png");
    browser.screenshot(&shot).unwrap();
    println!("screenshot (failed): {}", shot.display());
    // A phone's width: one column, tables as stacked rows.
    browser.resize(390, 1600).unwrap();
    let shot = target_dir().join("status-page-phone.png");
    std::thread::sleep(Duration::from_millis(200));
    browser.screenshot(&shot).unwrap();
    println!("screenshot: {}", shot.display());
    browser.resize(1280, 1100).unwrap();

    // The page's weight as the browser received it (one document: style and script inline),
    // against the page as built.
    let nav = browser
        .run(
            "const n = performance.getEntriesByType('navigation')[0]; \
             return { body: n.decodedBodySize, transfer: n.transferSize };",
            Value::Array(Vec::new()),
        )
        .unwrap();
    let page = fenced::api::status::build();
    assert_eq!(
        nav["body"].as_u64(),
        Some(page.html.len() as u64),
        "the browser received the page as built: {nav}"
    );
    println!(
        "status page weight: {} bytes in one document ({} of style, {} of script), {} bytes \
         transferred with headers; budget {}",
        page.html.len(),
        fenced::api::status::CSS.len(),
        fenced::api::status::JS.len(),
        nav["transfer"],
        fenced::api::status::SIZE_BUDGET
    );

    // The figure: from a fence's acceptance (the operation's created_ms) to the page first
    // showing it (the page stamps each operation with Date.now() when it first renders it).
    b.lab.bmc("node2").unwrap().set_fault(Fault::Stuck(false));
    let mut ms = Vec::new();
    for _ in 0..5 {
        let on = fence(&b, "on", "node1");
        finished_row(&browser, on);
        let id = fence(&b, "off", "node1");
        let seen = browser
            .wait_for(&row(id), WAIT, |v| !attr(v, "data-seen-ms").is_empty())
            .unwrap();
        let seen_ms: i64 = attr(&seen, "data-seen-ms").parse().unwrap();
        let done = finished_row(&browser, id);
        assert_eq!(attr(&done, "data-state"), "succeeded", "{done}");
        let created = operation(&b, "node1", id)["created_ms"].as_i64().unwrap();
        ms.push(seen_ms - created);
    }
    let mut sorted = ms.clone();
    sorted.sort_unstable();
    println!(
        "status page: fence accepted -> shown on the page: median {} ms of 5 ({ms:?})",
        sorted[2]
    );
    assert!(
        sorted.iter().all(|m| *m >= -50),
        "the page cannot show an operation before it exists: {ms:?}"
    );

    // Pause state, live from the event stream: the banner appears with who and why, and goes.
    let out = b
        .fenced
        .fence_node(&["pause", "--reason", "page test maintenance"]);
    assert!(out.status.success(), "{}", text(&out));
    let banner = browser
        .wait_for("#pause", WAIT, |v| v["hidden"] == false)
        .unwrap();
    let btext = banner["text"].as_str().unwrap();
    assert!(btext.contains("PAUSED"), "{btext}");
    assert!(btext.contains("page test maintenance"), "{btext}");
    let out = b
        .fenced
        .fence_node(&["resume", "--reason", "page test maintenance"]);
    assert!(out.status.success(), "{}", text(&out));
    browser
        .wait_for("#pause", WAIT, |v| v["hidden"] == true)
        .unwrap();
}
